//! A state dir that cannot be written can still be inspected: `runs`,
//! `show`, `trace`, `catalog` and `query` print what they print on a
//! writable one, and `run` and `resume` refuse with a message that says
//! why. (Before, every command opened the checkpoint for writing and failed
//! with SQLite's "unable to open database file".)
//!
//! Two ways to make it read-only, each used where this machine allows it:
//! `chmod -R a-w` and the binary run as an unprivileged user (as that user
//! itself, or through `setpriv` when the tests run as root, whom file
//! permissions do not stop), and a read-only bind mount in a mount
//! namespace of its own (`unshare -m`, root only). The SQLite checkpoint is
//! read in both of its on-disk shapes: closed cleanly (`flux.db` alone) and
//! after the engine was killed mid-run (`flux.db-wal` and `flux.db-shm`
//! still there).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// How the binary is kept from writing the state dir.
#[derive(Debug, Clone)]
enum ReadOnly {
    /// `chmod -R a-w`, and the binary run by a user other than root:
    /// `setpriv` to `nobody` (the binary hard-linked or copied where that
    /// user can reach it) when the tests run as root.
    Permissions { as_nobody: Option<PathBuf> },
    /// A read-only bind mount of the state dir over itself, in a private
    /// mount namespace.
    Mount,
}

impl ReadOnly {
    /// Every way this machine allows; `scratch` is a folder that the
    /// unprivileged user may enter.
    fn available(scratch: &Path) -> Vec<ReadOnly> {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            return vec![ReadOnly::Permissions { as_nobody: None }];
        }
        let mut ways = Vec::new();
        let works = |cmd: &mut Command| {
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let binary = scratch.join("flux-engine");
        let reachable =
            std::fs::hard_link(bin(), &binary).is_ok() || std::fs::copy(bin(), &binary).is_ok();
        if reachable
            && works(Command::new("setpriv").args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "true",
            ]))
        {
            ways.push(ReadOnly::Permissions {
                as_nobody: Some(binary),
            });
        }
        if works(
            Command::new("unshare")
                .args(["-m", "sh", "-c", r#"mount --bind -o ro "$1" "$1""#, "sh"])
                .arg(scratch),
        ) {
            ways.push(ReadOnly::Mount);
        }
        ways
    }

    /// Makes `state` read-only (for [`ReadOnly::Permissions`]; a mount is
    /// made per command).
    fn apply(&self, state: &Path) {
        if matches!(self, ReadOnly::Permissions { .. }) {
            chmod_tree(state, false);
        }
    }

    /// Makes `state` writable again.
    fn undo(&self, state: &Path) {
        if matches!(self, ReadOnly::Permissions { .. }) {
            chmod_tree(state, true);
        }
    }

    /// `flux-engine --state-dir STATE ARGS`, unable to write `state`.
    fn flux(&self, state: &Path, args: &[&str]) -> Output {
        let mut cmd = match self {
            ReadOnly::Permissions { as_nobody: None } => command(state),
            ReadOnly::Permissions {
                as_nobody: Some(binary),
            } => {
                let mut cmd = Command::new("setpriv");
                cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
                    .arg(binary)
                    .arg("--state-dir")
                    .arg(state);
                cmd
            }
            ReadOnly::Mount => {
                let mut cmd = Command::new("unshare");
                cmd.args([
                    "-m",
                    "sh",
                    "-c",
                    r#"mount --bind -o ro "$1" "$1" && shift && exec "$@""#,
                    "sh",
                ])
                .arg(state)
                .arg(bin())
                .arg("--state-dir")
                .arg(state);
                cmd
            }
        };
        cmd.args(args)
            .env_remove("FLUX_HOME")
            .env_remove("RUST_LOG")
            .current_dir(state.parent().unwrap())
            .stdin(Stdio::null())
            .output()
            .expect("start flux-engine")
    }
}

/// `chmod -R a-w` (or `u+w` back), leaving read and search bits alone.
fn chmod_tree(path: &Path, writable: bool) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    if meta.file_type().is_symlink() {
        return;
    }
    let mode = meta.permissions().mode();
    let mode = if writable {
        mode | 0o200
    } else {
        mode & !0o222
    };
    // Folders first when making writable, last when making read-only, so
    // that the walk can always get in.
    if writable {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chmod_tree(&entry.unwrap().path(), writable);
        }
    }
    if !writable {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

fn out_text(out: &Output) -> String {
    format!(
        "--- stdout\n{}--- stderr\n{}",
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// The inspection commands and what they printed; each must succeed.
fn inspect(flux: &dyn Fn(&[&str]) -> Output, run_id: &str) -> Vec<(String, String)> {
    let commands: [&[&str]; 6] = [
        &["runs", "--format", "json"],
        &["show", run_id, "--format", "json"],
        &["show", run_id],
        &["trace", run_id],
        &["catalog", "--format", "json"],
        &[
            "query",
            "SELECT name FROM ro.items ORDER BY id",
            "--format",
            "csv",
        ],
    ];
    commands
        .iter()
        .map(|args| {
            let out = flux(args);
            assert_eq!(
                out.status.code(),
                Some(0),
                "`{}` failed\n{}",
                args.join(" "),
                out_text(&out)
            );
            (args.join(" "), text(&out.stdout))
        })
        .collect()
}

/// A scratch folder the unprivileged user can enter, with a state dir
/// that a run filled: a shell task lands a CSV table, a crawler
/// catalogues it. `slow` adds a task that sleeps until killed.
struct Fixture {
    scratch: Scratch,
    state: PathBuf,
    dag: PathBuf,
}

impl Fixture {
    fn new(slow: bool) -> Fixture {
        let scratch = Scratch::new();
        std::fs::set_permissions(scratch.dir.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let state = scratch.path("state");
        let items = state.join("s3/ro-lake/data/items");
        let mut text = format!(
            r#"[dag]
name = "inspect"

[tasks.land]
type = "shell"
command = '''
mkdir -p '{items}'
printf 'id,name\n1,alpha\n2,beta\n' > '{items}/part-00000.csv'
'''

[tasks.crawl]
type = "glue_crawler"
depends_on = ["land"]
database = "ro"
targets = ["s3://ro-lake/data/"]
"#,
            items = items.display()
        );
        if slow {
            text.push_str(&format!(
                r#"
[tasks.slow]
type = "shell"
depends_on = ["crawl"]
command = "echo $$ > '{pid}'; exec sleep 60"
"#,
                pid = scratch.path("slow.pid").display()
            ));
        }
        let dag = scratch.write("inspect.toml", &text);
        Fixture {
            scratch,
            state,
            dag,
        }
    }

    fn run_id(&self) -> String {
        str_of(&runs(&self.state)[0], "run_id").to_string()
    }

    /// Runs the DAG (made with `slow`) and SIGKILLs the engine while the
    /// slow task runs, leaving a WAL behind; then ends the task's group,
    /// which outlives a SIGKILLed engine until the reaper's pipe closes.
    fn kill_with_the_slow_task_running(&self) {
        let log = self.scratch.path("engine");
        let mut engine = spawn(&self.state, &["run", self.dag.to_str().unwrap()], &log);
        let pid_file = self.scratch.path("slow.pid");
        assert!(
            wait_until(Duration::from_secs(60), || read_pid(&pid_file).is_some()),
            "the slow task never started\n{}",
            logs(&log)
        );
        engine.kill().unwrap();
        engine.wait().unwrap();
        kill_group(read_pid(&pid_file).unwrap());
    }
}

/// A fresh fixture for every way this machine can make a state dir
/// read-only, each way set up for its own fixture (the binary must be
/// reachable from it); none, with a SKIPPED message, when there is no way.
fn each_way(slow: bool) -> Vec<(Fixture, ReadOnly)> {
    let probe = Fixture::new(slow);
    let ways = ReadOnly::available(probe.scratch.dir.path());
    if ways.is_empty() {
        checker_missing(
            "SKIPPED: this machine allows neither setpriv to another user nor unshare -m; cannot make a state dir read-only for the binary",
        );
    }
    ways.into_iter()
        .map(|way| {
            let f = Fixture::new(slow);
            let way = match way {
                ReadOnly::Permissions { as_nobody: Some(_) } => {
                    ReadOnly::available(f.scratch.dir.path())
                        .into_iter()
                        .find(|w| matches!(w, ReadOnly::Permissions { .. }))
                        .unwrap()
                }
                other => other,
            };
            (f, way)
        })
        .collect()
}

/// A finished run, its checkpoint closed cleanly (no `-wal`, no `-shm`):
/// every inspection command prints on the read-only state dir what it
/// prints on the writable one, and the writing commands refuse.
#[test]
fn a_read_only_state_dir_can_be_inspected_but_not_run_in() {
    for (f, way) in each_way(false) {
        let out = flux(&f.state, &["run", f.dag.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{way:?}: {}", out_text(&out));
        let run_id = f.run_id();
        assert!(
            !f.state.join("flux.db-shm").exists(),
            "the checkpoint was not closed cleanly"
        );

        way.apply(&f.state);
        let read_only = inspect(&|args| way.flux(&f.state, args), &run_id);
        // Writing needs the state dir: refused, saying so, and nothing
        // created in it.
        for args in [
            vec!["run", f.dag.to_str().unwrap()],
            vec!["resume", run_id.as_str()],
        ] {
            let out = way.flux(&f.state, &args);
            let all = out_text(&out);
            assert_eq!(out.status.code(), Some(1), "{way:?} {args:?}\n{all}");
            assert!(!all.contains("panicked"), "{all}");
            assert!(all.contains("flux.db"), "{way:?} {args:?}\n{all}");
            assert!(
                all.contains("read-only") && all.contains("write access"),
                "{way:?} {args:?}\n{all}"
            );
        }
        way.undo(&f.state);

        let writable = inspect(&|args| flux(&f.state, args), &run_id);
        assert_eq!(read_only, writable, "{way:?}");
        // And they are about this run, not empty answers.
        assert!(read_only[0].1.contains(&run_id), "{}", read_only[0].1);
        assert!(
            read_only[1].1.contains("\"succeeded\""),
            "{}",
            read_only[1].1
        );
        assert!(read_only[4].1.contains("\"items\""), "{}", read_only[4].1);
        // Athena's CSV: every value quoted.
        assert_eq!(read_only[5].1, "\"name\"\n\"alpha\"\n\"beta\"\n");
        assert_eq!(runs(&f.state).len(), 1, "a refused run left a record");
    }
}

/// The engine SIGKILLed mid-run leaves the WAL (`flux.db-wal`, with the
/// latest changes) and its index (`flux.db-shm`): read-only, SQLite reads
/// both, and the run shows as interrupted with the task that was running.
#[test]
fn a_read_only_state_dir_of_a_killed_run_shows_its_latest_changes() {
    for (f, way) in each_way(true) {
        f.kill_with_the_slow_task_running();
        let wal = std::fs::metadata(f.state.join("flux.db-wal")).map_or(0, |m| m.len());
        assert!(wal > 0, "no WAL left behind to read");
        assert!(f.state.join("flux.db-shm").exists());
        let run_id = {
            // Read-only, so that it changes nothing before the check.
            way.apply(&f.state);
            let out = way.flux(&f.state, &["runs", "--format", "json"]);
            way.undo(&f.state);
            let runs = json_of(&out, "runs");
            str_of(&runs[0], "run_id").to_string()
        };

        way.apply(&f.state);
        let read_only = inspect(&|args| way.flux(&f.state, args), &run_id);
        way.undo(&f.state);
        let runs: Value = serde_json::from_str(&read_only[0].1).unwrap();
        assert_eq!(str_of(&runs[0], "status"), "interrupted", "{runs}");
        let show: Value = serde_json::from_str(&read_only[1].1).unwrap();
        let tasks = tasks_by_id(&show);
        assert_eq!(str_of(&tasks["crawl"], "status"), "succeeded", "{show}");
        assert_eq!(str_of(&tasks["slow"], "status"), "running", "{show}");

        let mut writable = inspect(&|args| flux(&f.state, args), &run_id);
        // `show`'s table gives a running task's time so far, which moved on
        // between the two; everything else must be the same.
        let mut read_only = read_only;
        read_only.remove(2);
        writable.remove(2);
        assert_eq!(read_only, writable, "{way:?}");
    }
}

/// A killed run's WAL without its `-shm` file (copied or archived without
/// it): SQLite cannot read the WAL without write access, so the
/// inspection commands refuse with what to do instead of showing the run
/// as it was before its latest changes; the WAL is left as it was, and
/// with write access the same command folds it in and shows the run.
#[test]
fn a_read_only_state_dir_whose_wal_has_no_shm_file_is_refused_with_the_fix() {
    for (f, way) in each_way(true) {
        f.kill_with_the_slow_task_running();
        let wal_path = f.state.join("flux.db-wal");
        let wal = std::fs::read(&wal_path).unwrap();
        assert!(!wal.is_empty(), "no WAL left behind to read");
        std::fs::remove_file(f.state.join("flux.db-shm")).unwrap();

        way.apply(&f.state);
        let out = way.flux(&f.state, &["runs", "--format", "json"]);
        way.undo(&f.state);
        let stderr = text(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{way:?}\n{}", out_text(&out));
        assert!(
            stderr.contains("flux.db-wal")
                && stderr.contains("-shm file is missing")
                && stderr.contains("open it once with write access"),
            "{way:?}\n{}",
            out_text(&out)
        );
        assert_eq!(
            std::fs::read(&wal_path).unwrap(),
            wal,
            "the refused command changed the WAL ({way:?})"
        );

        // The fix the message gives: any command with write access.
        let runs = json_of(
            &flux(&f.state, &["runs", "--format", "json"]),
            "runs with write access",
        );
        assert_eq!(str_of(&runs[0], "status"), "interrupted", "{runs}");
        let show = json_of(
            &flux(
                &f.state,
                &["show", str_of(&runs[0], "run_id"), "--format", "json"],
            ),
            "show with write access",
        );
        assert_eq!(
            str_of(&tasks_by_id(&show)["slow"], "status"),
            "running",
            "{show}"
        );
    }
}
