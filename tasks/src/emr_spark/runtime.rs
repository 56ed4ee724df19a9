//! Finding Spark on this machine, or provisioning it.
//!
//! Order: `$SPARK_HOME/bin/spark-submit`, then `spark-submit` on `PATH`,
//! then a virtualenv that flux-engine provisions once from the
//! `pyspark/requirements.txt` it was built with, cached under
//! `$FLUX_CACHE_DIR` (default `$XDG_CACHE_HOME/flux-engine`, else
//! `~/.cache/flux-engine`) in a folder named after the file's hash, so a
//! change of the pinned version provisions anew. Java and Python are
//! checked first, with an error that says how to install them.
//!
//! This module only finds and installs; it never runs a job.

use std::path::{Path, PathBuf};
use std::process::Command;

use engine::file_lock::FileLock;
use sha2::{Digest, Sha256};
use thiserror::Error;

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
}

/// How `spark-submit` was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    SparkHome,
    Path,
    Provisioned,
}

#[derive(Debug, Clone)]
pub struct SparkRuntime {
    pub spark_submit: PathBuf,
    /// The Python the driver and executors must use (`PYSPARK_PYTHON`):
    /// the provisioned virtualenv's, so its packages are importable.
    pub python: Option<PathBuf>,
    pub origin: Origin,
}

/// The requirement lines without comments, for messages.
pub fn pinned() -> String {
    REQUIREMENTS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Python that runs warm-mode jobs: the provisioned virtualenv's, else
/// `PYSPARK_PYTHON`, else `python3`.
pub fn client_python(runtime: &SparkRuntime) -> PathBuf {
    runtime
        .python
        .clone()
        .or_else(|| std::env::var_os("PYSPARK_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// Checks that `python` can be a Spark Connect client (pyspark with its
/// `connect` extra: pandas, pyarrow, grpcio).
pub fn check_connect_client(python: &Path) -> Result<(), String> {
    let out = Command::new(python)
        .args([
            "-c",
            "import pyspark.sql.connect.session, pandas, pyarrow, grpc, google.protobuf",
        ])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(format!(
        "{} cannot run Spark Connect clients ({last}); install the client with `pip install '{}'`, or run each job with its own spark-submit: FLUX_SPARK_MODE=submit",
        python.display(),
        pinned()
    ))
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

/// The virtualenv for this build's requirements.
pub fn provisioned_dir() -> PathBuf {
    let hash = format!("{:x}", Sha256::digest(REQUIREMENTS.as_bytes()));
    cache_dir().join("spark").join(&hash[..12])
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Spark already on this machine, without installing anything.
pub fn locate() -> Option<SparkRuntime> {
    if let Some(home) = std::env::var_os("SPARK_HOME").filter(|v| !v.is_empty()) {
        let submit = PathBuf::from(home).join("bin").join("spark-submit");
        if submit.is_file() {
            return Some(SparkRuntime {
                spark_submit: submit,
                python: None,
                origin: Origin::SparkHome,
            });
        }
    }
    if let Some(submit) = on_path("spark-submit") {
        return Some(SparkRuntime {
            spark_submit: submit,
            python: None,
            origin: Origin::Path,
        });
    }
    let venv = provisioned_dir();
    let submit = venv.join("bin").join("spark-submit");
    (venv.join(".complete").is_file() && submit.is_file()).then(|| SparkRuntime {
        spark_submit: submit,
        python: Some(venv.join("bin").join("python")),
        origin: Origin::Provisioned,
    })
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

/// Finds Spark, or provisions it into the cache (once per requirements
/// file; concurrent callers wait on a lock). `say` receives progress lines.
pub fn ensure(say: &dyn Fn(&str)) -> Result<SparkRuntime, SparkSetupError> {
    check_java()?;
    if let Some(found) = locate() {
        return Ok(found);
    }
    let (python, _) = check_python()?;
    let dir = provisioned_dir();
    let fail = |message: String| SparkSetupError::Provision {
        dir: dir.display().to_string(),
        message,
    };
    std::fs::create_dir_all(&dir).map_err(|e| fail(e.to_string()))?;
    let _lock =
        FileLock::create_exclusive(&dir.with_extension("lock")).map_err(|e| fail(e.to_string()))?;
    // Another process may have finished while we waited for the lock.
    if let Some(found) = locate() {
        return Ok(found);
    }
    say(&format!(
        "provisioning PySpark into {} (first use only; this downloads about 400 MB)",
        dir.display()
    ));
    run(Command::new(&python)
        .args(["-m", "venv", "--clear"])
        .arg(&dir))
    .map_err(fail)?;
    let requirements = dir.join("requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS).map_err(|e| fail(e.to_string()))?;
    let pip = dir.join("bin").join("pip");
    run(Command::new(&pip)
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements))
    .map_err(fail)?;
    std::fs::write(dir.join(".complete"), REQUIREMENTS).map_err(|e| fail(e.to_string()))?;
    say("PySpark is ready");
    locate().ok_or_else(|| fail("spark-submit is missing after installing pyspark".into()))
}

fn run(command: &mut Command) -> Result<(), String> {
    let out = command
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last: Vec<&str> = stderr.lines().rev().take(5).collect();
        Err(format!(
            "{command:?} failed ({}): {}",
            out.status,
            last.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    }
}
