//! The Spark environment the `emr_spark` jobs run in: a Spark together
//! with a Python that can import the matching `pyspark` (and its Spark
//! Connect client, for the warm mode), chosen, checked and reported as
//! one unit. Taking `spark-submit` from one installation and `python3`
//! from another (a project virtualenv first on `PATH`) fails every job
//! with `No module named 'pyspark'`, after its retries; so a run resolves
//! the pair once, before its first task ([`resolve_for_run`]), and every
//! job, the warm server and `doctor` use that pair.
//!
//! How it is chosen:
//! 1. The Spark is `$SPARK_HOME` when set (it must hold
//!    `bin/spark-submit` and `jars/`; a folder without Spark is an error,
//!    not a reason to look elsewhere), else a Spark distribution whose
//!    `bin/spark-submit` is on `PATH`, else the Spark bundled in the
//!    chosen Python's `pyspark` (a pip-installed pyspark is a whole Spark).
//! 2. The Python is `$PYSPARK_PYTHON` when set (it must work: an error
//!    names the variable), else the first that can run the jobs of:
//!    `python3` on `PATH`, the Python beside `spark-submit` on `PATH`
//!    (the installation that `spark-submit` belongs to), and the
//!    virtualenv flux-engine provisions once from the
//!    `pyspark/requirements.txt` it was built with, cached under
//!    `$FLUX_CACHE_DIR` (default `$XDG_CACHE_HOME/flux-engine`, else
//!    `~/.cache/flux-engine`) in a folder named after the file's hash.
//!    A Python passed over is named in a one-line note.
//! 3. The Spark's version and the Python's `pyspark` must agree on
//!    major.minor: a `SPARK_HOME` that no Python here matches is
//!    reported, not half-used.
//!
//! This module only finds, checks and installs; it never runs a job.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use engine::file_lock::FileLock;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::connect::{Backend, Mode};

/// The PySpark version the jobs are written and tested for.
pub const REQUIREMENTS: &str = include_str!("../../../pyspark/requirements.txt");

#[derive(Debug, Error)]
pub enum SparkSetupError {
    #[error(
        "Java was not found (`java -version` failed: {0}); Spark needs Java 17 or newer: install it (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`; macOS: `brew install openjdk@17`) or set JAVA_HOME"
    )]
    NoJava(String),
    #[error(
        "Java {found} is too old; Spark 4 needs Java 17 or newer: install a newer JDK or point JAVA_HOME at one"
    )]
    OldJava { found: String },
    #[error(
        "Python 3 was not found (`{0}`); the Spark jobs are PySpark: install Python 3.9 or newer with venv support (Debian/Ubuntu: `apt-get install python3 python3-venv`)"
    )]
    NoPython(String),
    #[error(
        "provisioning PySpark into {dir} failed: {message}; fix the cause, or install Spark yourself and set SPARK_HOME"
    )]
    Provision { dir: String, message: String },
    #[error(
        "provisioning Sail into {dir} failed: {message}; fix the cause, install it yourself (`python3 -m pip install {}` puts `sail` on PATH), or run the jobs on the JVM Spark (`--spark spark`)",
        SAIL_PIN
    )]
    SailProvision { dir: String, message: String },
    #[error("{0}")]
    Mode(String),
    #[error(
        "the Spark backend is sail, but Sail was not found ({tried}): `flux-engine doctor --spark sail --fix` provisions {} into {dir} (a run does so on first use), or install it for the Python the jobs use (`{python} -m pip install {}`), or run the jobs on the JVM Spark (`--spark spark`)",
        SAIL_PIN,
        SAIL_PIN
    )]
    NoSail {
        python: String,
        tried: String,
        dir: String,
    },
    #[error(
        "SPARK_HOME={home} {problem}: point SPARK_HOME at a Spark installation (the folder holding bin/spark-submit and jars/), or unset it to let flux-engine use the pyspark of your Python or provision its own"
    )]
    SparkHome { home: String, problem: String },
    #[error(
        "PYSPARK_PYTHON={python} cannot run the Spark jobs: {problem}; install what they need into it (`{python} -m pip install '{pinned}'`), point PYSPARK_PYTHON at a Python that has it, or unset PYSPARK_PYTHON to let flux-engine choose one"
    )]
    PysparkPython {
        python: String,
        problem: String,
        pinned: String,
    },
    #[error(
        "{spark} is Spark {version}, but no Python here has a matching pyspark to run the jobs with ({tried}); install one (`python3 -m pip install 'pyspark[connect]=={version}'`), set PYSPARK_PYTHON to a Python that has it, or unset SPARK_HOME to let flux-engine use its own pyspark"
    )]
    Mismatch {
        spark: String,
        version: String,
        tried: String,
    },
    #[error(
        "no Python here can run the Spark jobs ({tried}); `flux-engine doctor --fix` provisions {pinned} into {dir} (a run does so on first use), or install it into your Python (`python3 -m pip install '{pinned}'`)"
    )]
    NotProvisioned {
        tried: String,
        pinned: String,
        dir: String,
    },
}

/// Where the Spark came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `$SPARK_HOME`.
    SparkHome,
    /// A Spark distribution whose `bin/spark-submit` is on `PATH`.
    Path,
    /// The Spark a pip-installed `pyspark` bundles, in the chosen Python.
    Pyspark,
    /// The virtualenv flux-engine provisioned.
    Provisioned,
}

impl Origin {
    pub fn describe(self) -> &'static str {
        match self {
            Origin::SparkHome => "from SPARK_HOME",
            Origin::Path => "on PATH",
            Origin::Pyspark => "bundled with the Python's pyspark",
            Origin::Provisioned => "provisioned by flux-engine",
        }
    }
}

/// Why that Python.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PythonOrigin {
    /// `$PYSPARK_PYTHON`.
    PysparkPython,
    /// `python3` on `PATH`.
    Path,
    /// The Python in the folder of the `spark-submit` on `PATH`.
    BesideSparkSubmit,
    /// The virtualenv flux-engine provisioned.
    Provisioned,
}

impl PythonOrigin {
    pub fn describe(self) -> &'static str {
        match self {
            PythonOrigin::PysparkPython => "from PYSPARK_PYTHON",
            PythonOrigin::Path => "python3 on PATH",
            PythonOrigin::BesideSparkSubmit => "beside spark-submit on PATH",
            PythonOrigin::Provisioned => "provisioned by flux-engine",
        }
    }
}

/// The resolved Spark environment: what every job, the warm server and
/// `doctor` use.
#[derive(Debug, Clone)]
pub struct SparkRuntime {
    /// The Spark's folder: jobs get it as `SPARK_HOME`, so that a
    /// pip-installed `spark-submit` does not go looking for one with
    /// whatever `python3` comes first on `PATH`.
    pub spark_home: PathBuf,
    pub spark_submit: PathBuf,
    pub spark_version: String,
    pub origin: Origin,
    /// The Python the drivers, executors and warm-mode clients run
    /// (`PYSPARK_PYTHON`, `PYSPARK_DRIVER_PYTHON`): the interpreter
    /// itself (`sys.executable`), not a shim that may pick another later.
    pub python: PathBuf,
    pub pyspark_version: String,
    pub python_origin: PythonOrigin,
    pub mode: Mode,
    /// Sail, when the warm server is Sail's (`FLUX_SPARK_BACKEND=sail`).
    pub sail: Option<Sail>,
    /// One line for the person at the terminal when the Python they may
    /// expect (the first `python3` on `PATH`) was passed over, and why.
    pub note: Option<String>,
}

/// Sail's server program and its version (`sail --version`).
#[derive(Debug, Clone)]
pub struct Sail {
    pub program: PathBuf,
    /// Arguments before Sail's own: `-m pysail` when `program` is the
    /// Python of the virtualenv flux-engine provisioned.
    pub leading_args: Vec<String>,
    pub version: String,
}

/// The Sail release the jobs' parity with Spark is checked against.
pub const SAIL_PIN: &str = "pysail==0.7.2";

impl SparkRuntime {
    pub fn backend(&self) -> Backend {
        if self.sail.is_some() {
            Backend::Sail
        } else {
            Backend::Spark
        }
    }

    /// What the trace records on the run's span, and `show` reports.
    pub fn attributes(&self) -> Vec<(String, String)> {
        let sail = self.sail.iter().flat_map(|sail| {
            [
                (
                    "flux.spark.sail".to_string(),
                    sail.program.display().to_string(),
                ),
                ("flux.spark.sail_version".to_string(), sail.version.clone()),
            ]
        });
        let mut found = vec![
            (
                "flux.spark.home".into(),
                self.spark_home.display().to_string(),
            ),
            ("flux.spark.version".into(), self.spark_version.clone()),
            ("flux.spark.origin".into(), self.origin.describe().into()),
            (
                "flux.spark.python".into(),
                self.python.display().to_string(),
            ),
            (
                "flux.spark.pyspark_version".into(),
                self.pyspark_version.clone(),
            ),
            (
                "flux.spark.python_origin".into(),
                self.python_origin.describe().into(),
            ),
            ("flux.spark.mode".into(), self.mode.name().into()),
            ("flux.spark.backend".into(), self.backend().name().into()),
        ];
        found.extend(sail);
        found
    }

    /// One line: Spark, Python, mode.
    pub fn summary(&self) -> String {
        let python = format!(
            "Python {} ({}) with pyspark {}",
            self.python.display(),
            self.python_origin.describe(),
            self.pyspark_version,
        );
        let jvm = format!(
            "Spark {} at {} ({}); mode {}",
            self.spark_version,
            self.spark_home.display(),
            self.origin.describe(),
            self.mode.name()
        );
        // The backend the jobs run on comes first: with Sail, the JVM
        // Spark is only what `--spark spark` would use.
        match &self.sail {
            Some(sail) => format!(
                "sail {} at {}; {python}; for `--spark spark`: {jvm}",
                sail.version,
                sail.program.display()
            ),
            None => format!("{jvm}; {python}"),
        }
    }

    /// Sets what a `spark-submit` of this environment needs to stay in it.
    pub fn apply_to(&self, command: &mut tokio::process::Command) {
        command
            .env("SPARK_HOME", &self.spark_home)
            .env("PYSPARK_PYTHON", &self.python)
            .env("PYSPARK_DRIVER_PYTHON", &self.python);
    }
}

/// The PySpark requirement lines without comments, for messages.
pub fn pinned() -> String {
    Venv::pyspark().pinned()
}

/// Where flux-engine keeps what it downloads.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLUX_CACHE_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("flux-engine");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("flux-engine")
}

/// A virtualenv flux-engine provisions into its cache: what goes into it
/// and where (a folder named after the requirements' hash, so a build
/// with other pins gets its own).
struct Venv {
    /// The product installed, for messages: `PySpark`, `Sail`.
    what: &'static str,
    /// The cache's subfolder: `spark`, `sail`.
    kind: &'static str,
    requirements: String,
    /// What a first provisioning costs, for the person waiting.
    size: &'static str,
    /// The program whose presence means the provisioning completed.
    program: &'static str,
    /// The error a failed provisioning is (dir, message): each names its
    /// own way out.
    failure: fn(String, String) -> SparkSetupError,
}

impl Venv {
    fn pyspark() -> Venv {
        Venv {
            what: "PySpark",
            kind: "spark",
            requirements: REQUIREMENTS.to_string(),
            size: "about 500 MB to download, 850 MB on disk",
            program: "python",
            failure: |dir, message| SparkSetupError::Provision { dir, message },
        }
    }

    fn sail() -> Venv {
        Venv {
            what: "Sail",
            kind: "sail",
            requirements: format!("{SAIL_PIN}\n"),
            size: "about 45 MB to download, 170 MB on disk",
            // Run as `python -m pysail`: a pip that finds pysail already
            // installed (a venv seeing site-packages) makes no `bin/sail`.
            program: "python",
            failure: |dir, message| SparkSetupError::SailProvision { dir, message },
        }
    }

    fn failure(&self, dir: &Path, message: String) -> SparkSetupError {
        (self.failure)(dir.display().to_string(), message)
    }

    fn dir(&self) -> PathBuf {
        let hash = format!("{:x}", Sha256::digest(self.requirements.as_bytes()));
        cache_dir().join(self.kind).join(&hash[..12])
    }

    /// The venv's program, if a provisioning completed.
    fn provisioned(&self) -> Option<PathBuf> {
        let venv = self.dir();
        let program = venv.join("bin").join(self.program);
        (venv.join(".complete").is_file() && program.is_file()).then_some(program)
    }

    /// The requirement lines without comments, for messages.
    fn pinned(&self) -> String {
        self.requirements
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The virtualenv for this build's PySpark requirements.
pub fn provisioned_dir() -> PathBuf {
    Venv::pyspark().dir()
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// `java -version`'s version string, checked to be 17 or newer.
pub fn check_java() -> Result<String, SparkSetupError> {
    let java = std::env::var_os("JAVA_HOME")
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join("bin").join("java"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("java"));
    let out = Command::new(&java)
        .arg("-version")
        .output()
        .map_err(|e| SparkSetupError::NoJava(e.to_string()))?;
    // `java -version` writes to stderr: `openjdk version "17.0.15" 2025-04-15`.
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(SparkSetupError::NoJava(text.trim().to_string()));
    }
    let version = text
        .split('"')
        .nth(1)
        .map(str::to_string)
        .unwrap_or_else(|| text.lines().next().unwrap_or_default().to_string());
    let major: u32 = version
        .strip_prefix("1.")
        .unwrap_or(&version)
        .split(['.', '-', '+'])
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 17 {
        return Err(SparkSetupError::OldJava { found: version });
    }
    Ok(version)
}

/// The `python3` that builds the virtualenv, and its version.
pub fn check_python() -> Result<(PathBuf, String), SparkSetupError> {
    let python = on_path("python3")
        .ok_or_else(|| SparkSetupError::NoPython("python3 is not on PATH".into()))?;
    let out = Command::new(&python)
        .arg("--version")
        .output()
        .map_err(|e| SparkSetupError::NoPython(e.to_string()))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        return Err(SparkSetupError::NoPython(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok((python, version))
}

/// The provisioned PySpark virtualenv's Python, if a provisioning completed.
fn provisioned_python() -> Option<PathBuf> {
    Venv::pyspark().provisioned()
}

/// Provisions the PySpark virtualenv and gives its Python ([`provision_venv`]).
fn provision(say: &dyn Fn(&str)) -> Result<PathBuf, SparkSetupError> {
    provision_venv(&Venv::pyspark(), say)
}

/// Provisions `venv` (once per requirements; concurrent callers wait on a
/// lock) and gives its program. `say` receives progress lines, each with
/// the time (a first PySpark provisioning downloads about 500 MB: the
/// person waiting sees what pip is doing and since when). The work is a
/// `spark.provision` span under the current one (the run's environment
/// check), so the trace explains the time it took.
fn provision_venv(venv: &Venv, say: &dyn Fn(&str)) -> Result<PathBuf, SparkSetupError> {
    if let Some(program) = venv.provisioned() {
        return Ok(program);
    }
    let what = venv.what;
    let (python, python_version) = check_python()?;
    let dir = venv.dir();
    let fail = |message: String| venv.failure(&dir, message);
    std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
    let began = std::time::Instant::now();
    let progress = |line: &str| {
        say(&format!(
            "{} provisioning: {line}",
            // As the run's own lines are stamped when piped.
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ")
        ))
    };
    let lock_file = dir.with_extension("lock");
    let _lock = match FileLock::try_create_exclusive(&lock_file).map_err(|e| fail(e.to_string()))? {
        Some(lock) => lock,
        None => {
            progress(&format!(
                "another flux-engine is provisioning {what}; waiting for it"
            ));
            FileLock::create_exclusive(&lock_file).map_err(|e| fail(e.to_string()))?
        }
    };
    // Another process may have finished while we waited for the lock.
    if let Some(program) = venv.provisioned() {
        return Ok(program);
    }
    let span = crate::steps::step(
        &tracing::Span::current(),
        "spark.provision",
        &dir.display().to_string(),
    );
    let _inside = span.enter();
    let made = (|| {
        progress(&format!(
            "installing {what} into {} (first use only; {})",
            dir.display(),
            venv.size
        ));
        progress(&format!(
            "creating a virtualenv with {} ({python_version})",
            python.display()
        ));
        run(Command::new(&python)
            .args(["-m", "venv", "--clear"])
            .arg(&dir))?;
        let requirements = dir.join("requirements.txt");
        std::fs::write(&requirements, &venv.requirements).map_err(|e| e.to_string())?;
        progress(&format!("pip install {}", venv.pinned()));
        let pip = dir.join("bin").join("pip");
        run_reporting(
            Command::new(&pip)
                .args([
                    "install",
                    "--disable-pip-version-check",
                    "--progress-bar",
                    "off",
                    "-r",
                ])
                .arg(&requirements),
            &|line| {
                // pip's own milestones; "Requirement already satisfied"
                // and the like would bury them.
                if [
                    "Collecting ",
                    "Downloading ",
                    "Installing collected",
                    "Successfully ",
                ]
                .iter()
                .any(|milestone| line.trim_start().starts_with(milestone))
                {
                    // Without pip's "(from pyspark[connect]==...->-r ...)"
                    // provenance, which doubles the line.
                    let line = line.trim();
                    progress(line.split(" (from ").next().unwrap_or(line));
                }
            },
        )?;
        std::fs::write(dir.join(".complete"), &venv.requirements).map_err(|e| e.to_string())?;
        venv.provisioned().ok_or_else(|| {
            format!(
                "the virtualenv has no bin/{} after installing {what}",
                venv.program
            )
        })
    })();
    let finished = made.map_err(engine::TaskFailure::new);
    crate::steps::finish(&span, &finished);
    let program = finished.map_err(|failure| fail(failure.message))?;
    progress(&format!(
        "{what} is ready ({:.1} s)",
        began.elapsed().as_secs_f64()
    ));
    Ok(program)
}

/// What a Python said about its pyspark ([`PROBE`]).
#[derive(Debug, Clone)]
struct Probe {
    /// `sys.executable`: the interpreter behind a shim or a symlink.
    executable: PathBuf,
    pyspark: String,
    /// The `pyspark` package's folder: a whole Spark when pip-installed.
    package: PathBuf,
}

/// Prints what the Python can do, as JSON; warm mode also needs the
/// Connect client (`pyspark[connect]`: pandas, pyarrow, grpcio).
const PROBE: &str = r#"
import json, os, re, sys
from importlib import util
out = {"executable": sys.executable}
# Found, not imported: importing the Connect client (pandas, pyarrow, grpc)
# took 0.7 s of every run's start; a package that is present but broken
# still fails the job with its ImportError.
try:
    spec = util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("No module named 'pyspark'")
    out["package"] = os.path.abspath(list(spec.submodule_search_locations)[0])
    # The version of the pyspark found (not of whichever pip metadata):
    # its version.py, read as text.
    try:
        with open(os.path.join(out["package"], "version.py")) as f:
            out["pyspark"] = re.search(r"__version__[^=]*=\s*[\"']([^\"']+)", f.read()).group(1)
    except Exception:
        import pyspark
        out["pyspark"] = pyspark.__version__
    if util.find_spec("py4j") is None:
        raise ImportError("No module named 'py4j'")
    if sys.argv[1] == "warm":
        missing = [m for m in ("pandas", "pyarrow", "grpc", "google.protobuf") if util.find_spec(m) is None]
        if missing:
            out["problem"] = "it has pyspark %s but not its Spark Connect client, which the warm mode needs (ModuleNotFoundError: No module named %r)" % (out["pyspark"], missing[0])
except Exception as e:
    out["problem"] = "it has no pyspark (%s: %s)" % (type(e).__name__, e)
print(json.dumps(out))
"#;

/// Asks `python` whether it can run the jobs in `mode`; the problem, in
/// words, if not.
fn probe(python: &Path, mode: Mode) -> Result<Probe, String> {
    let out = Command::new(python)
        .args(["-c", PROBE, mode.name()])
        // `python -c` imports from its working folder first, and the
        // repository's root holds the jobs' folder `pyspark/`: from
        // there, a Python without pyspark would seem to have one.
        .current_dir(std::env::temp_dir())
        .output()
        .map_err(|e| format!("it cannot be started ({e})"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let found: serde_json::Value = text
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            format!(
                "it does not run Python 3 code ({})",
                last.unwrap_or("no output").trim()
            )
        })?;
    if let Some(problem) = found["problem"].as_str() {
        return Err(problem.to_string());
    }
    let field = |key: &str| found[key].as_str().unwrap_or_default().to_string();
    Ok(Probe {
        executable: PathBuf::from(field("executable")),
        pyspark: field("pyspark"),
        package: PathBuf::from(field("package")),
    })
}

/// The version of the Spark in `home`, from its `jars/spark-core_*.jar`
/// (asking `spark-submit --version` would start a JVM).
pub fn spark_version(home: &Path) -> Option<String> {
    std::fs::read_dir(home.join("jars"))
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .find_map(|name| {
            // spark-core_2.13-4.0.5.jar
            let rest = name.strip_prefix("spark-core_")?.strip_suffix(".jar")?;
            Some(rest.split_once('-')?.1.to_string())
        })
}

/// Whether two versions agree on major.minor: a Spark Connect client
/// talks to a server of its own minor version, and a driver's pyspark
/// must be its Spark's.
fn same_minor(a: &str, b: &str) -> bool {
    let minor = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
    minor(a) == minor(b)
}

/// A Spark installation in `home`, with its version; the problem if not.
fn spark_at(home: &Path) -> Result<(PathBuf, String), String> {
    if !home.is_dir() {
        return Err("is not a folder".into());
    }
    let submit = home.join("bin").join("spark-submit");
    if !submit.is_file() {
        return Err(format!("holds no Spark ({} is missing)", submit.display()));
    }
    let version = spark_version(home).ok_or_else(|| {
        format!(
            "holds no Spark jars ({} has no spark-core_*.jar)",
            home.join("jars").display()
        )
    })?;
    Ok((submit, version))
}

/// A Spark distribution whose `spark-submit` is on `PATH` (its folder
/// holds `jars/`); a pip-installed `spark-submit` is found through its
/// Python instead.
fn distribution_on_path() -> Option<PathBuf> {
    let submit = std::fs::canonicalize(on_path("spark-submit")?).ok()?;
    let home = submit.parent()?.parent()?.to_path_buf();
    spark_version(&home).map(|_| home)
}

/// The Python in the folder of the `spark-submit` on `PATH`: the
/// installation it belongs to (a virtualenv's, a pyenv's).
fn python_beside_spark_submit() -> Option<PathBuf> {
    let bin = on_path("spark-submit")?.parent()?.to_path_buf();
    ["python3", "python"]
        .iter()
        .map(|name| bin.join(name))
        .find(|p| p.is_file())
}

/// The Spark a Python's pyspark bundles, when it is pip-installed whole.
fn bundled_spark(probe: &Probe) -> Result<(PathBuf, String), String> {
    spark_at(&probe.package).map_err(|problem| {
        format!(
            "its pyspark {} at {} {problem} (a client-only install?)",
            probe.pyspark,
            probe.package.display()
        )
    })
}

/// The process's resolved environment: [`resolve`]d once (a run's
/// preflight), then shared by every job of the process.
static RESOLVED: Mutex<Option<Arc<SparkRuntime>>> = Mutex::new(None);

/// The environment this process resolved, resolving it (and provisioning
/// if need be) if it has not yet.
pub fn current(say: &dyn Fn(&str)) -> Result<Arc<SparkRuntime>, SparkSetupError> {
    if let Some(found) = RESOLVED.lock().ok().and_then(|r| r.clone()) {
        return Ok(found);
    }
    let found = Arc::new(resolve(true, say)?);
    if let Ok(mut slot) = RESOLVED.lock() {
        *slot = Some(found.clone());
    }
    Ok(found)
}

/// Resolves the environment afresh and keeps it for the process's jobs.
pub fn resolve_for_run(say: &dyn Fn(&str)) -> Result<Arc<SparkRuntime>, SparkSetupError> {
    let found = Arc::new(resolve(true, say)?);
    if let Ok(mut slot) = RESOLVED.lock() {
        *slot = Some(found.clone());
    }
    Ok(found)
}

/// Chooses the Spark environment (see the module's doc), provisioning
/// the virtualenv when nothing else works and `provision` allows it; with
/// the `sail` backend, also Sail's server program ([`find_sail`]), whose
/// server then takes the JVM Spark's place.
pub fn resolve(
    provision_allowed: bool,
    say: &dyn Fn(&str),
) -> Result<SparkRuntime, SparkSetupError> {
    let backend = Backend::from_env().map_err(SparkSetupError::Mode)?;
    let mut found = resolve_spark(provision_allowed, say, backend)?;
    if backend == Backend::Sail {
        if found.mode == Mode::Submit {
            return Err(SparkSetupError::Mode(
                "the sail backend runs the jobs on Sail's Spark Connect server, and FLUX_SPARK_MODE=submit would spark-submit each one: choose one (`--spark spark` for spark-submit)".into(),
            ));
        }
        let sail = find_sail(&found.python, provision_allowed, say)?;
        let pinned = SAIL_PIN.trim_start_matches("pysail==");
        if sail.version != pinned {
            let note = format!(
                "Sail {} at {} is not the release the jobs' parity with Spark is checked against ({pinned})",
                sail.version,
                sail.program.display()
            );
            found.note = Some(match found.note.take() {
                Some(earlier) => format!("{earlier}; {note}"),
                None => note,
            });
        }
        found.sail = Some(sail);
    }
    Ok(found)
}

/// Sail's `sail` program: beside `python` (where `pip install pysail`
/// puts it), else on `PATH`, else the one flux-engine provisioned
/// (`Venv::sail`), provisioning it when `provision_allowed`; it must
/// answer `--version`. The server needs no particular Python: the jobs'
/// clients are the chosen Python's pyspark either way.
fn find_sail(
    python: &Path,
    provision_allowed: bool,
    say: &dyn Fn(&str),
) -> Result<Sail, SparkSetupError> {
    let venv = Venv::sail();
    let beside = python.parent().map(|dir| dir.join("sail"));
    let mut tried = Vec::new();
    let version_of = |program: &Path, leading_args: &[String]| -> Result<String, String> {
        match Command::new(program)
            .args(leading_args)
            .arg("--version")
            .output()
        {
            Ok(out) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout);
                Ok(text.split_whitespace().last().unwrap_or("").to_string())
            }
            Ok(out) => Err(format!("{} ({})", program.display(), out.status)),
            Err(e) => Err(format!("{} ({e})", program.display())),
        }
    };
    let module = vec!["-m".to_string(), "pysail".to_string()];
    let candidates = beside
        .into_iter()
        .chain(on_path("sail"))
        .map(|program| (program, Vec::new()))
        .chain(venv.provisioned().map(|python| (python, module.clone())));
    for (program, leading_args) in candidates {
        if !program.is_file() {
            tried.push(format!("{} (missing)", program.display()));
            continue;
        }
        match version_of(&program, &leading_args) {
            Ok(version) => {
                return Ok(Sail {
                    program,
                    leading_args,
                    version,
                });
            }
            Err(problem) => tried.push(problem),
        }
    }
    let missing = || SparkSetupError::NoSail {
        python: python.display().to_string(),
        tried: tried.join(", "),
        dir: venv.dir().display().to_string(),
    };
    if !provision_allowed {
        return Err(missing());
    }
    let program = provision_venv(&venv, say)?;
    let version = version_of(&program, &module).map_err(|problem| {
        venv.failure(
            &venv.dir(),
            format!("the provisioned Sail does not answer `python -m pysail --version`: {problem}"),
        )
    })?;
    Ok(Sail {
        program,
        leading_args: module,
        version,
    })
}

fn resolve_spark(
    provision_allowed: bool,
    say: &dyn Fn(&str),
    backend: Backend,
) -> Result<SparkRuntime, SparkSetupError> {
    let mode = Mode::from_env().map_err(SparkSetupError::Mode)?;
    // Sail is no JVM: only the JVM Spark needs Java.
    if backend == Backend::Spark {
        check_java()?;
    }
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());

    // A Spark named outright: SPARK_HOME, else a distribution on PATH.
    let distribution: Option<(PathBuf, PathBuf, String, Origin)> = match env("SPARK_HOME") {
        Some(home) => {
            let home = PathBuf::from(home);
            let (submit, version) =
                spark_at(&home).map_err(|problem| SparkSetupError::SparkHome {
                    home: home.display().to_string(),
                    problem,
                })?;
            Some((home, submit, version, Origin::SparkHome))
        }
        None => distribution_on_path().and_then(|home| {
            let (submit, version) = spark_at(&home).ok()?;
            Some((home, submit, version, Origin::Path))
        }),
    };
    // The environment `python` makes, or why it cannot run the jobs.
    let pair = |python: &Path, origin: PythonOrigin| -> Result<SparkRuntime, String> {
        let probe = probe(python, mode)?;
        let (spark_home, spark_submit, spark_version, spark_origin) = match &distribution {
            Some((home, submit, version, origin)) => {
                if !same_minor(version, &probe.pyspark) {
                    return Err(format!(
                        "its pyspark {} does not match Spark {version} at {}",
                        probe.pyspark,
                        home.display()
                    ));
                }
                (home.clone(), submit.clone(), version.clone(), *origin)
            }
            None => {
                let (submit, version) = bundled_spark(&probe)?;
                let origin = if origin == PythonOrigin::Provisioned {
                    Origin::Provisioned
                } else {
                    Origin::Pyspark
                };
                (probe.package.clone(), submit, version, origin)
            }
        };
        Ok(SparkRuntime {
            spark_home,
            spark_submit,
            spark_version,
            origin: spark_origin,
            python: probe.executable,
            pyspark_version: probe.pyspark,
            python_origin: origin,
            mode,
            sail: None,
            note: None,
        })
    };

    if let Some(python) = env("PYSPARK_PYTHON") {
        let python = PathBuf::from(python);
        return pair(&python, PythonOrigin::PysparkPython).map_err(|problem| {
            SparkSetupError::PysparkPython {
                python: python.display().to_string(),
                problem,
                pinned: pinned(),
            }
        });
    }

    let mut candidates: Vec<(PathBuf, PythonOrigin)> = Vec::new();
    candidates.extend(on_path("python3").map(|p| (p, PythonOrigin::Path)));
    candidates.extend(python_beside_spark_submit().map(|p| (p, PythonOrigin::BesideSparkSubmit)));
    candidates.extend(provisioned_python().map(|p| (p, PythonOrigin::Provisioned)));
    let mut passed_over: Vec<String> = Vec::new();
    let mut tried: Vec<&Path> = Vec::new();
    for (python, origin) in &candidates {
        if tried.contains(&python.as_path()) {
            continue;
        }
        tried.push(python);
        match pair(python, *origin) {
            Ok(found) => return Ok(with_note(found, &passed_over)),
            Err(problem) => passed_over.push(format!(
                "{} ({}): {problem}",
                python.display(),
                origin.describe()
            )),
        }
    }

    // Nothing here works: the provisioned virtualenv, if it can match.
    let tried_text = if passed_over.is_empty() {
        "no python3 on PATH".to_string()
    } else {
        passed_over.join("; ")
    };
    let pinned_version = pinned_version();
    if let Some((home, _, version, _)) = &distribution
        && !same_minor(version, &pinned_version)
    {
        return Err(SparkSetupError::Mismatch {
            spark: format!(
                "{} ({})",
                home.display(),
                distribution_origin(&distribution)
            ),
            version: version.clone(),
            tried: tried_text,
        });
    }
    if provisioned_python().is_some() {
        // It was tried above and did not work: a broken provisioning.
        return Err(SparkSetupError::Provision {
            dir: provisioned_dir().display().to_string(),
            message: format!(
                "the provisioned virtualenv cannot run the jobs ({tried_text}); delete the folder to provision it again"
            ),
        });
    }
    if !provision_allowed {
        return Err(SparkSetupError::NotProvisioned {
            tried: tried_text,
            pinned: pinned(),
            dir: provisioned_dir().display().to_string(),
        });
    }
    // Said with the failure: what was passed over may be the easier fix
    // (a Python with pyspark but without the Connect client runs the
    // jobs with FLUX_SPARK_MODE=submit).
    let python = provision(say).map_err(|e| match e {
        SparkSetupError::Provision { dir, message } => SparkSetupError::Provision {
            dir,
            message: format!(
                "{message} (it was needed because no Python here can run the jobs: {tried_text})"
            ),
        },
        other => other,
    })?;
    let found =
        pair(&python, PythonOrigin::Provisioned).map_err(|problem| SparkSetupError::Provision {
            dir: provisioned_dir().display().to_string(),
            message: format!("its Python cannot run the jobs: {problem}"),
        })?;
    Ok(with_note(found, &passed_over))
}

fn distribution_origin(distribution: &Option<(PathBuf, PathBuf, String, Origin)>) -> &'static str {
    distribution
        .as_ref()
        .map_or("", |(_, _, _, origin)| origin.describe())
}

/// The note for Pythons passed over (the first only: it is the one the
/// user expects, `python3` on `PATH`).
fn with_note(mut found: SparkRuntime, passed_over: &[String]) -> SparkRuntime {
    if let Some(first) = passed_over.first() {
        found.note = Some(format!(
            "Spark jobs run with {} ({}, pyspark {}), not {first}",
            found.python.display(),
            found.python_origin.describe(),
            found.pyspark_version
        ));
    }
    found
}

/// The pinned pyspark version (`pyspark[connect]==4.0.5` gives `4.0.5`).
fn pinned_version() -> String {
    pinned()
        .split("==")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}

/// Runs `command` to its end, its standard output unread; on failure, the
/// error ends with the last lines of its standard error.
fn run(command: &mut Command) -> Result<(), String> {
    run_reporting(command, &|_| {})
}

/// Runs `command`, handing each line of its standard output to `line` as
/// it comes; on failure, the error ends with the last lines of its
/// standard error.
fn run_reporting(command: &mut Command, line: &dyn Fn(&str)) -> Result<(), String> {
    use std::io::{BufRead, Read};
    let (mut child, _group) = crate::process::spawn_reaped(
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    )
    .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    let mut stderr = child.stderr.take();
    // Read beside stdout, so that neither pipe fills and stalls the child.
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(stderr) = stderr.as_mut() {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    });
    if let Some(stdout) = child.stdout.take() {
        for read in std::io::BufReader::new(stdout).lines() {
            match read {
                Ok(text) => line(&text),
                Err(_) => break,
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {command:?}: {e}"))?;
    let stderr = errors.join().unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        let last: Vec<&str> = stderr.lines().rev().take(5).collect();
        Err(format!(
            "{command:?} failed ({status}): {}",
            last.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spark_folder_is_told_by_its_jars_and_its_version_read_from_them() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        assert_eq!(spark_at(&home.join("nope")).unwrap_err(), "is not a folder");
        assert!(
            spark_at(home)
                .unwrap_err()
                .contains("bin/spark-submit is missing")
        );
        std::fs::create_dir_all(home.join("bin")).unwrap();
        std::fs::write(home.join("bin/spark-submit"), "#!/bin/sh\n").unwrap();
        assert!(spark_at(home).unwrap_err().contains("no spark-core_*.jar"));
        std::fs::create_dir_all(home.join("jars")).unwrap();
        std::fs::write(home.join("jars/spark-sql_2.13-3.5.1.jar"), "").unwrap();
        std::fs::write(home.join("jars/spark-core_2.13-3.5.1.jar"), "").unwrap();
        let (submit, version) = spark_at(home).unwrap();
        assert_eq!(submit, home.join("bin/spark-submit"));
        assert_eq!(version, "3.5.1");
    }

    #[test]
    fn versions_match_on_major_and_minor() {
        assert!(same_minor("4.0.5", "4.0.1"));
        assert!(same_minor("4.0.5", "4.0.5.dev0"));
        assert!(!same_minor("3.5.1", "4.0.5"));
        assert!(!same_minor("4.1.0", "4.0.5"));
    }

    #[test]
    fn the_pinned_version_comes_from_the_requirements_file() {
        let line = REQUIREMENTS
            .lines()
            .find(|l| l.trim_start().starts_with("pyspark"))
            .unwrap();
        let expected = line.rsplit("==").next().unwrap().trim();
        assert_eq!(pinned_version(), expected);
    }
}
