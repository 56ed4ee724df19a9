//! `flux-engine doctor`: checks everything a local run needs and says how
//! to fix what is missing. It changes nothing unless asked to (`--fix`).

use engine::state_dir::StateDir;
use tasks::emr_spark::runtime::{self, Origin};

struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

/// Prints one line per check; returns the exit code (0 all good, 1 not).
pub fn run(state_dir: &StateDir, fix: bool) -> u8 {
    let mut checks = Vec::new();
    let sh = std::process::Command::new("sh")
        .args(["-c", "exit 0"])
        .status();
    checks.push(Check {
        name: "sh",
        ok: matches!(sh, Ok(s) if s.success()),
        detail: "runs `shell` tasks".into(),
    });
    checks.push(match runtime::check_java() {
        Ok(version) => Check {
            name: "java",
            ok: true,
            detail: format!("{version} (Spark needs 17 or newer)"),
        },
        Err(e) => Check {
            name: "java",
            ok: false,
            detail: e.to_string(),
        },
    });
    checks.push(match runtime::check_python() {
        Ok((path, version)) => Check {
            name: "python",
            ok: true,
            detail: format!("{version} at {}", path.display()),
        },
        Err(e) => Check {
            name: "python",
            ok: false,
            detail: e.to_string(),
        },
    });
    let spark = if fix {
        runtime::ensure(&|line| eprintln!("flux-engine: {line}")).map(Some)
    } else {
        Ok(runtime::locate())
    };
    let warm = if let Ok(Some(found)) = &spark {
        let python = runtime::client_python(found);
        Some(match runtime::check_connect_client(&python) {
            Ok(()) => Check {
                name: "warm spark",
                ok: true,
                detail: format!(
                    "{} can run jobs on a warm Spark Connect server (the default; FLUX_SPARK_MODE=submit for a cold spark-submit per job)",
                    python.display()
                ),
            },
            Err(e) => Check {
                name: "warm spark",
                ok: false,
                detail: e,
            },
        })
    } else {
        None
    };
    checks.push(match spark {
        Ok(Some(found)) => Check {
            name: "spark",
            ok: true,
            detail: format!(
                "{} ({})",
                found.spark_submit.display(),
                match found.origin {
                    Origin::SparkHome => "from SPARK_HOME",
                    Origin::Path => "on PATH",
                    Origin::Provisioned => "provisioned by flux-engine",
                }
            ),
        },
        Ok(None) => Check {
            name: "spark",
            ok: false,
            detail: format!(
                "not found (SPARK_HOME, PATH); the first emr_spark task provisions {} into {}, or run `flux-engine doctor --fix` now",
                runtime::pinned(),
                runtime::provisioned_dir().display()
            ),
        },
        Err(e) => Check {
            name: "spark",
            ok: false,
            detail: e.to_string(),
        },
    });
    checks.extend(warm);
    let writable = std::fs::create_dir_all(state_dir.root()).and_then(|_| {
        let probe = state_dir.root().join(".doctor-probe");
        std::fs::write(&probe, b"ok")?;
        std::fs::remove_file(probe)
    });
    checks.push(Check {
        name: "state dir",
        ok: writable.is_ok(),
        detail: match writable {
            Ok(()) => format!("{} is writable", state_dir.root().display()),
            Err(e) => format!(
                "{}: {e}; choose another with --state-dir or FLUX_HOME",
                state_dir.root().display()
            ),
        },
    });
    for c in &checks {
        println!(
            "{:7} {:10} {}",
            if c.ok { "ok" } else { "MISSING" },
            c.name,
            c.detail
        );
    }
    u8::from(!checks.iter().all(|c| c.ok))
}
