//! `flux-engine doctor`: checks everything a local run needs and says how
//! to fix what is missing. It changes nothing unless asked to (`--fix`).

use engine::state_dir::StateDir;
use tasks::emr_spark::runtime;

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
    let backend = tasks::emr_spark::connect::Backend::from_env();
    let sail = backend == Ok(tasks::emr_spark::connect::Backend::Sail);
    checks.push(match runtime::check_java() {
        Ok(version) => Check {
            name: "java",
            ok: true,
            detail: format!("{version} (the JVM Spark needs 17 or newer)"),
        },
        // Sail is no JVM: without Java only `--spark spark` is out of reach.
        Err(e) if sail => Check {
            name: "java",
            ok: true,
            detail: format!(
                "not needed by the sail backend; the JVM Spark (`--spark spark`) would need it: {e}"
            ),
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
            detail: format!(
                "{version} at {} (builds the virtualenv flux-engine provisions when no Python here has pyspark)",
                path.display()
            ),
        },
        Err(e) => Check {
            name: "python",
            ok: false,
            detail: e.to_string(),
        },
    });
    // The environment a run would resolve: the same function, so what
    // doctor says is what `run` does. Without --fix nothing is installed.
    let say = |line: &str| eprintln!("flux-engine: {line}");
    checks.push(match runtime::resolve(fix, &say) {
        Ok(found) => {
            let mut detail = found.summary();
            if let Some(note) = &found.note {
                detail.push_str(&format!("\n{:18} note: {note}", ""));
            }
            Check {
                name: "spark",
                ok: true,
                detail,
            }
        }
        Err(e) => Check {
            name: "spark",
            ok: false,
            detail: e.to_string(),
        },
    });
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
