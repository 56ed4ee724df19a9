//! The command line as a user meets it: `validate` reports every problem
//! with its file, line and column and exits 2 (never panicking, whatever the
//! input), and `run`, `show`, `runs` and `graph` do what the README promises.
//!
//! Expected places are computed from the DAG text the test wrote (the
//! position of the offending substring), never copied from the program.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Output;

use common::*;
use serde_json::{Value, json};

/// The 1-based line and column (in characters) of the `n`-th (0-based)
/// occurrence of `needle` in `text`.
fn place_nth(text: &str, needle: &str, n: usize) -> (usize, usize) {
    let offset = text
        .match_indices(needle)
        .nth(n)
        .unwrap_or_else(|| panic!("the test DAG has no occurrence {n} of {needle:?}"))
        .0;
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..offset].chars().count() + 1)
}

/// The place of `needle`, which must occur exactly once in `text`.
fn place(text: &str, needle: &str) -> (usize, usize) {
    assert_eq!(
        text.matches(needle).count(),
        1,
        "test bug: {needle:?} must occur once in the DAG text"
    );
    place_nth(text, needle, 0)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn no_panic(o: &Output) {
    let all = format!("{}{}", stdout(o), stderr(o));
    assert!(
        !all.contains("panicked") && !all.contains("overflow"),
        "the binary panicked:\n{all}"
    );
    assert!(
        o.status.signal().is_none(),
        "the binary was killed by signal {:?}:\n{all}",
        o.status.signal()
    );
}

fn validate(s: &Scratch, dag: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["validate", dag.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = flux(&s.path("state"), &args);
    no_panic(&out);
    out
}

/// Validates `text` (written to `name`) and expects exit code 2; returns
/// stderr and the DAG's path.
fn invalid(s: &Scratch, name: &str, text: &str, extra: &[&str]) -> (String, String) {
    let dag = s.write(name, text);
    let out = validate(s, &dag, extra);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "validate must exit 2 for {name}\n--- stdout\n{}--- stderr\n{err}",
        stdout(&out)
    );
    (err, dag.display().to_string())
}

/// The diagnostic at `file:line:col` in `stderr`: its `error:` line and the
/// `help:` line that follows, joined; fails if there is none.
fn diagnostic_at(stderr: &str, file: &str, (line, col): (usize, usize)) -> String {
    let head = format!("{file}:{line}:{col}: error: ");
    let lines: Vec<&str> = stderr.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.starts_with(&head))
        .unwrap_or_else(|| panic!("no error at {line}:{col} (`{head}`) in:\n{stderr}"));
    let mut text = lines[i].to_string();
    for l in &lines[i + 1..] {
        if l.contains(": error: ") {
            break;
        }
        text.push('\n');
        text.push_str(l);
    }
    assert!(
        text.contains("\n  help: "),
        "the error at {line}:{col} has no help line:\n{stderr}"
    );
    text
}

fn assert_has(text: &str, words: &[&str]) {
    for w in words {
        assert!(text.contains(w), "expected {w:?} in:\n{text}");
    }
}

// ---------------------------------------------------------------- validate

#[test]
fn a_valid_dag_validates_with_exit_0() {
    let s = Scratch::new();
    let text = "[dag]\nname = \"ok\"\n\n[tasks.a]\ntype = \"noop\"\n\n[tasks.b]\ntype = \"shell\"\ncommand = \"true\"\ndepends_on = [\"a\"]\n";
    let dag = s.write("ok.toml", text);
    let out = validate(&s, &dag, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_has(&stdout(&out), &["ok", "2 task"]);
}

#[test]
fn a_cycle_prints_its_path_at_the_first_tasks_depends_on() {
    let s = Scratch::new();
    // Edges run from a dependency to its dependent: a -> b -> c -> a.
    let text = r#"[dag]
name = "cyclic"

[tasks.a]
type = "noop"
depends_on = ["c"]

[tasks.b]
type = "noop"
depends_on = ["a"]

[tasks.c]
type = "noop"
depends_on = ["b"]

[tasks.free]
type = "noop"
"#;
    let (err, file) = invalid(&s, "cycle.toml", text, &[]);
    let d = diagnostic_at(&err, &file, place(text, r#"["c"]"#));
    assert_has(&d, &["cycle", "a -> b -> c -> a", "help:", "remove"]);
    assert!(!err.contains("free"), "`free` is not in the cycle:\n{err}");
}

#[test]
fn a_self_dependency_is_a_cycle() {
    let s = Scratch::new();
    let text = "[dag]\nname = \"selfish\"\n\n[tasks.me]\ntype = \"noop\"\ndepends_on = [\"me\"]\n";
    let (err, file) = invalid(&s, "self.toml", text, &[]);
    let d = diagnostic_at(&err, &file, place(text, r#"["me"]"#));
    assert_has(&d, &["cycle", "me -> me"]);
}

#[test]
fn an_unknown_dependency_names_the_nearest_task() {
    let s = Scratch::new();
    let text = r#"[dag]
name = "deps"

[tasks.extract]
type = "noop"

[tasks.load]
type = "noop"
depends_on = ["extract", "extrat"]
"#;
    let (err, file) = invalid(&s, "deps.toml", text, &[]);
    let d = diagnostic_at(&err, &file, place(text, r#""extrat""#));
    assert_has(&d, &["`extrat`", "not a task", "did you mean `extract`?"]);
}

#[test]
fn a_duplicate_task_id_is_reported_at_the_second_definition() {
    let s = Scratch::new();
    let text = r#"[dag]
name = "dup"

[tasks.extract]
type = "noop"

[tasks.extract]
type = "shell"
command = "true"
"#;
    let (err, file) = invalid(&s, "dup.toml", text, &[]);
    // The id in the second header.
    let (line, col) = place_nth(text, "extract", 1);
    let d = diagnostic_at(&err, &file, (line, col));
    let first_line = place_nth(text, "[tasks.extract]", 0).0;
    assert_has(
        &d,
        &[
            "duplicate",
            "`extract`",
            &format!("line {first_line}"),
            "unique",
        ],
    );
}

#[test]
fn an_unknown_type_lists_the_known_ones() {
    let s = Scratch::new();
    let text = "[dag]\nname = \"types\"\n\n[tasks.a]\ntype = \"shel\"\ncommand = \"true\"\n";
    let (err, file) = invalid(&s, "types.toml", text, &[]);
    let d = diagnostic_at(&err, &file, place(text, r#""shel""#));
    assert_has(
        &d,
        &[
            "unknown task type `shel`",
            "did you mean `shell`?",
            "shell",
            "noop",
        ],
    );
    let known = d
        .split("known types:")
        .nth(1)
        .expect("a list of known types");
    assert_has(known, &["shell", "noop"]);
}

#[test]
fn a_misspelt_field_suggests_the_right_one() {
    let s = Scratch::new();
    let text = "[dag]\nname = \"typo\"\n\n[tasks.a]\ntype = \"shell\"\ncomand = \"echo hi\"\n";
    let (err, file) = invalid(&s, "typo.toml", text, &[]);
    let d = diagnostic_at(&err, &file, place(text, "comand"));
    assert_has(&d, &["unknown field `comand`", "did you mean `command`?"]);
}

#[test]
fn unknown_fields_are_errors_in_every_section() {
    let s = Scratch::new();
    let text = r#"[dag]
name = "fields"
descripton = "typo in [dag]"

[defaults]
timeout_second = 5
retry = { max_attempt = 2 }

[tasks.a]
type = "noop"
ouput = { x = 1 }
timout_seconds = 3
"#;
    let (err, file) = invalid(&s, "fields.toml", text, &[]);
    for (needle, near) in [
        ("descripton", "description"),
        ("timeout_second ", "timeout_seconds"),
        ("max_attempt ", "max_attempts"),
        ("ouput", "output"),
        ("timout_seconds", "timeout_seconds"),
    ] {
        let d = diagnostic_at(&err, &file, place(text, needle));
        assert_has(
            &d,
            &[
                &format!("unknown field `{}`", needle.trim()),
                &format!("did you mean `{near}`?"),
            ],
        );
    }
}

#[test]
fn retry_values_out_of_bounds_are_errors() {
    let s = Scratch::new();
    let text = r#"[dag]
name = "retries"

[defaults]
retry = { max_attempts = 0 }

[tasks.a]
type = "noop"
retry = { max_attempts = 2, backoff_rate = 0.5 }

[tasks.b]
type = "noop"
retry = { max_attempts = -3, jitter = "some" }
"#;
    let (err, file) = invalid(&s, "retry.toml", text, &[]);
    let d = diagnostic_at(&err, &file, place(text, "0 }"));
    assert_has(&d, &["max_attempts", "from 1", "found 0"]);
    let d = diagnostic_at(&err, &file, place(text, "0.5"));
    assert_has(&d, &["backoff_rate", "at least 1", "found 0.5"]);
    let d = diagnostic_at(&err, &file, place(text, "-3"));
    assert_has(&d, &["max_attempts", "found -3"]);
    let d = diagnostic_at(&err, &file, place(text, r#""some""#));
    assert_has(&d, &["jitter", "full", "none"]);
}

#[test]
fn an_unknown_parameter_reference_is_an_error_with_a_suggestion() {
    let s = Scratch::new();
    let text = r#"[dag]
name = "refs"

[params]
greeting = "hello"

[tasks.a]
type = "shell"
command = "echo ${params.greting} > out.txt"

[tasks.b]
type = "shell"
command = "echo ${params.x}"

[tasks.c]
type = "shell"
command = "echo ${nope.id}"
"#;
    let (err, file) = invalid(&s, "refs.toml", text, &[]);
    // Reported at the field's value.
    let d = diagnostic_at(&err, &file, place(text, r#""echo ${params.greting}"#));
    assert_has(
        &d,
        &["${params.greting}", "did you mean `${params.greeting}`?"],
    );
    let d = diagnostic_at(&err, &file, place(text, r#""echo ${params.x}""#));
    assert_has(
        &d,
        &["unknown parameter `${params.x}`", "[params]", "greeting"],
    );
    let d = diagnostic_at(&err, &file, place(text, r#""echo ${nope.id}""#));
    assert_has(&d, &["unknown reference `${nope.id}`", "${run.id}"]);
    assert!(
        !file_exists_near(&file, "out.txt"),
        "validate must not run anything"
    );
}

fn file_exists_near(dag: &str, name: &str) -> bool {
    Path::new(dag).parent().unwrap().join(name).exists()
}

#[test]
fn a_template_error_does_not_hide_other_errors_of_the_task() {
    let s = Scratch::new();
    let text = "[dag]\nname = \"both\"\n\n[tasks.a]\ntype = \"shell\"\ncommand = \"echo ${params.x}\"\ntimout_seconds = 3\n";
    let (err, file) = invalid(&s, "both.toml", text, &[]);
    diagnostic_at(&err, &file, place(text, "\"echo"));
    let d = diagnostic_at(&err, &file, place(text, "timout_seconds"));
    assert_has(&d, &["did you mean `timeout_seconds`?"]);
}

#[test]
fn an_unknown_param_on_the_command_line_is_an_error() {
    let s = Scratch::new();
    let text = "[dag]\nname = \"p\"\n\n[params]\ngreeting = \"hello\"\n\n[tasks.a]\ntype = \"shell\"\ncommand = \"echo ${params.greeting}\"\n";
    let (err, file) = invalid(&s, "params.toml", text, &["--param", "greting=hi"]);
    assert_has(
        &err,
        &[
            &file,
            "error:",
            "--param greting",
            "no parameter `greting`",
            "help:",
            "did you mean `greeting`?",
        ],
    );
    // `run` refuses it the same way, before running anything.
    let dag = s.path("params.toml");
    let out = flux(
        &s.path("state"),
        &["run", dag.to_str().unwrap(), "--param", "nope=1"],
    );
    no_panic(&out);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_has(
        &stderr(&out),
        &["no parameter `nope`", "declared: greeting"],
    );
    // And a known one validates.
    let out = validate(&s, &dag, &["--param", "greeting=hi"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn every_error_names_file_line_and_column_and_all_are_reported() {
    let s = Scratch::new();
    let text = r#"[dag]
name = "many"

[tasks.a]
type = "shell"
comand = "true"

[tasks.b]
type = "nop"
depends_on = ["a", "zzz"]

[tasks.c]
type = "noop"
retry = { backoff_rate = 0.1 }
"#;
    let (err, file) = invalid(&s, "many.toml", text, &[]);
    let heads: Vec<&str> = err.lines().filter(|l| l.contains("error:")).collect();
    assert!(heads.len() >= 4, "expected at least 4 errors:\n{err}");
    for head in &heads {
        let rest = head
            .strip_prefix(&format!("{file}:"))
            .unwrap_or_else(|| panic!("error without the file name: {head}"));
        let mut parts = rest.splitn(3, ':');
        let line: usize = parts.next().unwrap().parse().expect("a line number");
        let col: usize = parts.next().unwrap().parse().expect("a column number");
        assert!(line >= 1 && col >= 1, "{head}");
        assert!(parts.next().unwrap().starts_with(" error: "), "{head}");
    }
    let helps = err.lines().filter(|l| l.starts_with("  help: ")).count();
    assert_eq!(helps, heads.len(), "every error has a help line:\n{err}");
    // In file order.
    let lines: Vec<usize> = heads
        .iter()
        .map(|h| {
            h[file.len() + 1..]
                .split(':')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{err}");
}

#[test]
fn broken_toml_is_reported_at_its_place() {
    let s = Scratch::new();
    let text = "[dag]\nname = \"broken\n\n[tasks.a]\ntype = \"noop\"\n";
    let (err, file) = invalid(&s, "broken.toml", text, &[]);
    let (line, _) = place(text, "\"broken");
    assert!(
        err.starts_with(&format!("{file}:{line}:")),
        "expected an error on line {line}:\n{err}"
    );
    assert_has(&err, &["invalid TOML", "help:"]);
}

#[test]
fn an_empty_file_is_an_error() {
    let s = Scratch::new();
    let (err, file) = invalid(&s, "empty.toml", "", &[]);
    assert_has(
        &err,
        &[
            &format!("{file}:1:1: error: missing [dag] section"),
            // Where tasks would go: the end of the (empty) file.
            &format!("{file}:1:1: error: the DAG has no tasks"),
        ],
    );
}

#[test]
fn an_empty_tasks_section_is_an_error_at_its_header() {
    let s = Scratch::new();
    let text = "[dag]\nname = \"idle\"\n\n[tasks]\n";
    let (err, file) = invalid(&s, "idle.toml", text, &[]);
    let d = diagnostic_at(&err, &file, place(text, "tasks"));
    assert_has(&d, &["no tasks", "[tasks.hello]"]);
}

#[test]
fn a_missing_file_is_an_error() {
    let s = Scratch::new();
    let missing = s.path("nowhere.toml");
    let out = validate(&s, &missing, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_has(&stderr(&out), &["nowhere.toml", "cannot read"]);
}

/// Writes `bytes` as a DAG file, validates it (and graphs and runs it) and
/// expects exit 2 with an error naming the file, and no panic.
fn hostile(name: &str, bytes: &[u8]) -> String {
    let s = Scratch::new();
    let dag = s.path(name);
    std::fs::write(&dag, bytes).unwrap();
    let mut first = String::new();
    for command in ["validate", "graph", "run"] {
        let out = flux(&s.path("state"), &[command, dag.to_str().unwrap()]);
        no_panic(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{command} {name}: {}",
            stderr(&out)
        );
        let err = stderr(&out);
        assert_has(&err, &[name, "error:", "help:"]);
        if first.is_empty() {
            first = err;
        }
    }
    first
}

#[test]
fn binary_junk_is_an_error_not_a_panic() {
    // Deterministic pseudo-random bytes (xorshift), including NULs and
    // invalid UTF-8.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    hostile("junk.toml", &bytes);
    // Control characters that are valid UTF-8.
    hostile("control.toml", b"\x01\x02\x03\x00\x7f[\x1b]=\x08");
}

#[test]
fn a_non_utf8_file_is_reported_where_the_bad_byte_is() {
    let mut bytes = b"[dag]\nname = \"caf".to_vec();
    bytes.extend_from_slice(&[0xE9, b'"', b'\n']); // Latin-1 é
    let err = hostile("latin1.toml", &bytes);
    // Line 2, after `name = "caf` (11 characters).
    assert_has(&err, &["latin1.toml:2:12: error:", "UTF-8"]);
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    hostile("arrays.toml", "[".repeat(100_000).as_bytes());
    hostile(
        "value_arrays.toml",
        format!("a = {}", "[".repeat(100_000)).as_bytes(),
    );
    hostile(
        "closed_arrays.toml",
        format!("a = {}{}", "[".repeat(100_000), "]".repeat(100_000)).as_bytes(),
    );
    hostile(
        "tables.toml",
        format!("a = {}", "{b = ".repeat(100_000)).as_bytes(),
    );
}

#[test]
fn a_20_mb_file_is_refused_quickly() {
    let mut text = String::from("[dag]\nname = \"huge\"\n");
    while text.len() < 20 * 1024 * 1024 {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    let started = std::time::Instant::now();
    let err = hostile("huge.toml", text.as_bytes());
    assert_has(&err, &["bytes", "at most"]);
    assert!(
        started.elapsed().as_secs() < 20,
        "took {:?}",
        started.elapsed()
    );
}

/// A device reports a size of 0 and never ends: what is read is bounded,
/// not only what the size says. (Before the bound, `validate /dev/zero`
/// grew past 5 GB.)
#[test]
fn an_endless_device_is_refused_at_the_limit_with_bounded_memory() {
    let s = Scratch::new();
    for command in ["validate", "graph", "run"] {
        let out = run_capped(
            &s.path("state"),
            &[command, "/dev/zero"],
            std::time::Duration::from_secs(30),
        );
        assert_eq!(out.code, Some(2), "{command} /dev/zero: {}", out.stderr);
        let limit = (16 * 1024 * 1024).to_string();
        assert_has(
            &out.stderr,
            &[
                "/dev/zero: error:",
                "character device",
                &format!("more than {limit} bytes"),
                "help:",
            ],
        );
        // 16 MiB read, plus the program itself.
        assert!(
            out.peak_rss_mib < 200,
            "{command} /dev/zero peaked at {} MiB",
            out.peak_rss_mib
        );
    }
}

/// A named pipe that a writer keeps filling is cut off at the limit too,
/// with the same clear error as a large file; the writer sees the pipe
/// closed.
#[test]
fn an_endless_pipe_is_refused_at_the_limit() {
    let s = Scratch::new();
    let fifo = s.path("dag.toml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    // The writer is there before the engine opens the pipe (an engine
    // that finds no writer refuses at once, see the test below): a reader
    // of our own lets the writer's `open` return now, and is closed once
    // the engine is done, so that the writer then sees the pipe closed
    // (Rust ignores SIGPIPE, so the write fails with BrokenPipe).
    use std::os::unix::fs::OpenOptionsExt;
    let keeper = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let mut pipe = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        pipe.write_all(b"[dag]\nname = \"endless\"\n").unwrap();
        let chunk = vec![b'#'; 64 * 1024];
        let mut written = 0u64;
        while pipe.write_all(&chunk).is_ok() {
            written += chunk.len() as u64;
            assert!(written < 1 << 34, "the reader never stopped");
        }
        written
    });
    let out = run_capped(
        &s.path("state"),
        &["validate", fifo.to_str().unwrap()],
        std::time::Duration::from_secs(30),
    );
    drop(keeper);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_has(
        &out.stderr,
        &[
            "dag.toml: error:",
            "pipe (FIFO)",
            "more than 16777216 bytes",
            "at most 16777216 bytes",
        ],
    );
    let written = writer.join().expect("the writer thread");
    assert!(written >= 16 * 1024 * 1024 - 64 * 1024, "wrote {written}");
}

/// A named pipe nobody writes to: refused at once (before, `validate`
/// waited in `open` for a writer forever).
#[test]
fn a_pipe_nobody_writes_to_is_refused_at_once() {
    let s = Scratch::new();
    let fifo = s.path("dag.toml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    let out = run_capped(
        &s.path("state"),
        &["validate", fifo.to_str().unwrap()],
        std::time::Duration::from_secs(10),
    );
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_has(
        &out.stderr,
        &[
            "dag.toml: error: cannot read the DAG file:",
            "pipe (FIFO) that no process was writing to",
        ],
    );
}

#[test]
fn a_long_dependency_chain_validates_without_overflowing_the_stack() {
    // 20,000 tasks in one chain (~1 MB): recursive graph walks overflow here.
    let s = Scratch::new();
    let mut text = String::from("[dag]\nname = \"chain\"\n\n[tasks.t0]\ntype = \"noop\"\n");
    for i in 1..20_000 {
        text.push_str(&format!(
            "[tasks.t{i}]\ntype = \"noop\"\ndepends_on = [\"t{}\"]\n",
            i - 1
        ));
    }
    let dag = s.write("chain.toml", &text);
    let out = validate(&s, &dag, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Closing the chain into one long cycle is an error, reported promptly.
    let text = text.replacen(
        "[tasks.t0]\ntype = \"noop\"\n",
        "[tasks.t0]\ntype = \"noop\"\ndepends_on = [\"t19999\"]\n",
        1,
    );
    let (err, file) = invalid(&s, "ring.toml", &text, &[]);
    let d = diagnostic_at(&err, &file, place(&text, "[\"t19999\"]"));
    assert_has(&d, &["cycle", "t0 -> t1 -> t2 ->", "t19999 -> t0"]);
}

#[test]
fn a_huge_file_full_of_errors_fails_fast_with_a_bounded_report() {
    let s = Scratch::new();
    let mut text = String::from("[dag]\nname = \"errors\"\n");
    for i in 0..50_000 {
        text.push_str(&format!("[tasks.t{i}]\ntype = \"noop\"\nbad = 1\n"));
    }
    let started = std::time::Instant::now();
    let (err, file) = invalid(&s, "errors.toml", &text, &[]);
    assert!(
        started.elapsed().as_secs() < 20,
        "took {:?}",
        started.elapsed()
    );
    // The first error is exact; the rest are counted.
    diagnostic_at(&err, &file, place_nth(&text, "bad", 0));
    assert_has(&err, &["more error(s) not shown"]);
    assert!(err.lines().count() < 1_000, "{} lines", err.lines().count());
}

// --------------------------------------------------------------------- run

/// Runs `dag` with `args` and returns the output (no panic checked).
fn run(s: &Scratch, dag: &Path, args: &[&str]) -> Output {
    let mut all = vec!["run", dag.to_str().unwrap(), "--max-parallel", "2"];
    all.extend_from_slice(args);
    let out = flux(&s.path("state"), &all);
    no_panic(&out);
    out
}

fn expect_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}\n--- stdout\n{}--- stderr\n{}",
        stdout(out),
        stderr(out)
    );
}

/// The run id a task wrote to `file` (`echo ${run.id} > file`).
fn run_id_from(path: &Path) -> String {
    let id = lines(path).first().cloned().unwrap_or_default();
    assert!(!id.is_empty(), "{} holds no run id", path.display());
    id
}

#[test]
fn a_successful_run_exits_0_and_substitutes_params_and_run_id() {
    let s = Scratch::new();
    let text = r#"[dag]
name = "subst"

[params]
greeting = "hello"
count = 3

[tasks.write]
type = "shell"
command = "printf '%s %s %s' '${params.greeting}' '${params.count}' '${task.id}' > \"${dag.dir}/out-${params.greeting}.txt\"; echo ${run.id} > run_id.txt"
"#;
    let dag = s.write("subst.toml", text);
    let out = run(&s, &dag, &["--param", "greeting=hi there"]);
    expect_code(&out, 0, "run");
    let written = std::fs::read_to_string(s.path("out-hi there.txt")).expect("the task's file");
    assert_eq!(written, "hi there 3 write");
    assert!(!s.path("out-hello.txt").exists());
    let id = run_id_from(&s.path("run_id.txt"));
    let report = show(&s.path("state"), &id);
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["params"]["greeting"], "hi there");

    // Without the override, the default.
    let out = run(&s, &dag, &[]);
    expect_code(&out, 0, "run with defaults");
    let written = std::fs::read_to_string(s.path("out-hello.txt")).expect("the task's file");
    assert_eq!(written, "hello 3 write");
}

#[test]
fn a_failing_branch_does_not_stop_independent_ones() {
    let s = Scratch::new();
    // `bad` fails at once; `slow` is still running then, and `after_slow`
    // starts only after the failure: the run goes on.
    let text = r#"[dag]
name = "branches"

[tasks.root]
type = "noop"

[tasks.bad]
type = "shell"
depends_on = ["root"]
command = "echo 'no such table' >&2; exit 3"

[tasks.child]
type = "shell"
depends_on = ["bad"]
command = "touch child.ran"

[tasks.grandchild]
type = "noop"
depends_on = ["child", "slow"]

[tasks.slow]
type = "shell"
depends_on = ["root"]
command = "sleep 0.3"

[tasks.after_slow]
type = "shell"
depends_on = ["slow"]
command = "echo ${run.id} > after_slow.ran"
"#;
    let dag = s.write("branches.toml", text);
    let out = run(&s, &dag, &[]);
    expect_code(&out, 1, "a run with a failed task exits 1");
    assert!(!s.path("child.ran").exists(), "a descendant of `bad` ran");
    let id = run_id_from(&s.path("after_slow.ran"));
    let report = show(&s.path("state"), &id);
    assert_eq!(report["status"], "failed");
    let tasks = tasks_by_id(&report);
    let status = |t: &str| tasks[t]["status"].as_str().unwrap().to_string();
    assert_eq!(status("root"), "succeeded");
    assert_eq!(status("bad"), "failed");
    assert_eq!(status("slow"), "succeeded");
    assert_eq!(status("after_slow"), "succeeded");
    assert_eq!(status("child"), "upstream_failed");
    assert_eq!(status("grandchild"), "upstream_failed");
    assert_eq!(tasks["child"]["attempts"], 0);
    let error = tasks["bad"]["error"].as_str().unwrap();
    assert_has(error, &["exit code 3", "no such table"]);
    assert_has(tasks["child"]["error"].as_str().unwrap(), &["bad"]);
}

#[test]
fn show_json_reports_tasks_and_every_attempt_of_a_retried_task() {
    let s = Scratch::new();
    let marker = s.path("flaky.marker");
    let text = format!(
        r#"[dag]
name = "flaky"

[tasks.flaky]
type = "shell"
retry = {{ max_attempts = 3, interval_seconds = 1, jitter = "none" }}
command = "echo ${{run.id}} > run_id.txt; if [ -f '{m}' ]; then exit 0; fi; touch '{m}'; echo 'first try fails' >&2; exit 1"

[tasks.after]
type = "noop"
depends_on = ["flaky"]
output = {{ done = true }}
"#,
        m = marker.display()
    );
    let dag = s.write("flaky.toml", &text);
    let out = run(&s, &dag, &[]);
    expect_code(&out, 0, "a task that fails once, then succeeds on retry");
    let id = run_id_from(&s.path("run_id.txt"));
    let report = show(&s.path("state"), &id);
    for key in ["run_id", "dag", "status", "tasks", "attempts"] {
        assert!(report.get(key).is_some(), "show has no `{key}`: {report}");
    }
    assert_eq!(report["run_id"], id.as_str());
    assert_eq!(report["dag"], "flaky");
    assert_eq!(report["status"], "succeeded");
    let tasks = report["tasks"].as_array().unwrap();
    let ids: Vec<&str> = tasks.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["flaky", "after"], "tasks in file order");
    for t in tasks {
        for key in [
            "id",
            "type",
            "status",
            "attempts",
            "started_at",
            "ended_at",
            "error",
            "output",
        ] {
            assert!(t.get(key).is_some(), "task has no `{key}`: {t}");
        }
    }
    let by_id = tasks_by_id(&report);
    assert_eq!(by_id["flaky"]["type"], "shell");
    assert_eq!(by_id["flaky"]["status"], "succeeded");
    assert_eq!(by_id["flaky"]["attempts"], 2);
    assert_eq!(by_id["flaky"]["error"], Value::Null);
    assert_eq!(by_id["after"]["type"], "noop");
    assert_eq!(by_id["after"]["attempts"], 1);
    assert_eq!(by_id["after"]["output"], json!({ "done": true }));
    assert!(by_id["flaky"]["started_at"].is_string());
    assert!(by_id["flaky"]["ended_at"].is_string());

    let attempts: Vec<&Value> = report["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["task_id"] == "flaky")
        .collect();
    assert_eq!(attempts.len(), 2, "{report}");
    assert_eq!(attempts[0]["attempt"], 1);
    assert_eq!(attempts[0]["status"], "failed");
    assert_has(
        attempts[0]["error"].as_str().unwrap_or(""),
        &["exit code 1", "first try fails"],
    );
    assert_eq!(attempts[1]["attempt"], 2);
    assert_eq!(attempts[1]["status"], "succeeded");
    // The retry waited its interval (1 s, no jitter).
    let t = |v: &Value| {
        let text = v.as_str().unwrap();
        // RFC 3339 with milliseconds: seconds of the day are enough here.
        let time = &text[text.find('T').unwrap() + 1..text.len() - 1];
        let parts: Vec<f64> = time.split(':').map(|p| p.parse().unwrap()).collect();
        parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
    };
    let gap = t(&attempts[1]["started_at"]) - t(&attempts[0]["ended_at"]);
    assert!(
        (0.9..30.0).contains(&gap) || gap < -80_000.0,
        "retry after {gap} s"
    );

    // The table form names the tasks too.
    let out = flux(&s.path("state"), &["show", &id]);
    expect_code(&out, 0, "show");
    assert_has(&stdout(&out), &["flaky", "after", "succeeded"]);
    // An unknown run id is an input error.
    let out = flux(&s.path("state"), &["show", "nosuch", "--format", "json"]);
    expect_code(&out, 2, "show of an unknown run");
    assert_has(&stderr(&out), &["nosuch"]);
}

#[test]
fn runs_lists_newest_first_as_json_and_table() {
    let s = Scratch::new();
    let state = s.path("state");
    let out = flux(&state, &["runs", "--format", "json"]);
    expect_code(&out, 0, "runs with no runs");
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&out)).unwrap(),
        json!([])
    );

    let text = "[dag]\nname = \"listed\"\n\n[params]\nfail = \"0\"\n\n[tasks.t]\ntype = \"shell\"\ncommand = \"echo ${run.id} >> run_ids.txt; exit ${params.fail}\"\n";
    let dag = s.write("listed.toml", text);
    expect_code(&run(&s, &dag, &[]), 0, "first run");
    expect_code(&run(&s, &dag, &["--param", "fail=1"]), 1, "second run");
    expect_code(&run(&s, &dag, &[]), 0, "third run");
    let ids = lines(&s.path("run_ids.txt"));
    assert_eq!(ids.len(), 3);
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();

    let listed = runs(&state);
    let listed_ids: Vec<&str> = listed
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed_ids, newest_first);
    let statuses: Vec<&str> = listed
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["succeeded", "failed", "succeeded"]);
    assert!(listed.iter().all(|r| r["dag"] == "listed"));

    let out = flux(&state, &["runs", "--format", "table"]);
    expect_code(&out, 0, "runs table");
    let table = stdout(&out);
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows[0].contains("RUN ID"), "a header first:\n{table}");
    let positions: Vec<usize> = newest_first
        .iter()
        .map(|id| {
            rows.iter()
                .position(|r| r.starts_with(id))
                .unwrap_or_else(|| panic!("{id} not in:\n{table}"))
        })
        .collect();
    assert_eq!(positions, [1, 2, 3], "newest first:\n{table}");
    assert!(rows[2].contains("failed"), "{table}");
}

#[test]
fn graph_draws_every_edge_in_dot_and_mermaid() {
    let s = Scratch::new();
    let text = r#"[dag]
name = "drawn"

[tasks.extract]
type = "noop"

[tasks.clean]
type = "noop"
depends_on = ["extract"]

[tasks.stats]
type = "noop"
depends_on = ["extract"]

[tasks.report]
type = "shell"
command = "true"
depends_on = ["clean", "stats"]
"#;
    let dag = s.write("drawn.toml", text);
    let edges = [
        ("extract", "clean"),
        ("extract", "stats"),
        ("clean", "report"),
        ("stats", "report"),
    ];
    let out = flux(
        &s.path("state"),
        &["graph", dag.to_str().unwrap(), "--format", "dot"],
    );
    expect_code(&out, 0, "graph dot");
    let dot = stdout(&out);
    assert!(dot.trim_start().starts_with("digraph"), "{dot}");
    for (from, to) in edges {
        assert!(
            dot.contains(&format!("\"{from}\" -> \"{to}\"")),
            "no {from} -> {to} in:\n{dot}"
        );
    }
    assert_eq!(dot.matches("->").count(), edges.len(), "{dot}");

    let out = flux(
        &s.path("state"),
        &["graph", dag.to_str().unwrap(), "--format", "mermaid"],
    );
    expect_code(&out, 0, "graph mermaid");
    let mermaid = stdout(&out);
    assert!(
        mermaid.trim_start().starts_with("flowchart") || mermaid.trim_start().starts_with("graph"),
        "{mermaid}"
    );
    for (from, to) in edges {
        assert!(
            mermaid.contains(&format!("{from} --> {to}")),
            "no {from} --> {to} in:\n{mermaid}"
        );
    }
    assert_eq!(mermaid.matches("-->").count(), edges.len(), "{mermaid}");
    // Default format is DOT.
    let out = flux(&s.path("state"), &["graph", dag.to_str().unwrap()]);
    expect_code(&out, 0, "graph");
    assert_eq!(stdout(&out), dot);
}

#[test]
fn a_task_output_reaches_show_and_its_dependents_inputs() {
    let s = Scratch::new();
    let text = r#"[dag]
name = "outputs"

[tasks.produce]
type = "shell"
command = '''echo '{"rows": 42, "path": "s3://bucket/key"}' > "$FLUX_OUTPUT"; echo ${run.id} > run_id.txt'''

[tasks.fixed]
type = "noop"
output = { ready = true }

[tasks.consume]
type = "shell"
depends_on = ["produce", "fixed"]
command = '''cp "$FLUX_INPUTS" consumed.json'''
"#;
    let dag = s.write("outputs.toml", text);
    expect_code(&run(&s, &dag, &[]), 0, "run");
    let produced = json!({ "rows": 42, "path": "s3://bucket/key" });
    let inputs: Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("consumed.json")).unwrap()).unwrap();
    assert_eq!(
        inputs,
        json!({ "produce": produced, "fixed": { "ready": true } })
    );
    let id = run_id_from(&s.path("run_id.txt"));
    let tasks = tasks_by_id(&show(&s.path("state"), &id));
    assert_eq!(tasks["produce"]["output"], produced);
    assert_eq!(tasks["fixed"]["output"], json!({ "ready": true }));
    assert_eq!(tasks["consume"]["output"], Value::Null);
}

/// An output larger than Step Functions' 256 KiB payload fails the task
/// (and its dependents do not start); one just under it passes.
#[test]
fn an_output_over_256_kib_fails_the_task() {
    let s = Scratch::new();
    // A JSON string of N characters serializes to N + 2 bytes.
    let limit = 256 * 1024;
    let text = format!(
        r#"[dag]
name = "big"

[tasks.fits]
type = "shell"
command = '''printf '"%0{fits}d"' 0 > "$FLUX_OUTPUT"'''

[tasks.too_big]
type = "shell"
command = '''printf '"%0{over}d"' 0 > "$FLUX_OUTPUT"'''

[tasks.after]
type = "shell"
depends_on = ["too_big"]
command = "touch after.ran"
"#,
        fits = limit - 2,
        over = limit - 1,
    );
    let dag = s.write("big.toml", &text);
    let out = run(&s, &dag, &[]);
    expect_code(&out, 1, "run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("the task's output is {} bytes", limit + 1)),
        "{stderr}"
    );
    assert!(!s.path("after.ran").exists());
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary
            .lines()
            .any(|l| l.starts_with("fits ") && l.contains("succeeded")),
        "{summary}"
    );
}

/// `$FLUX_OUTPUT` is a path the command controls: a FIFO nobody writes to,
/// an endless device or an oversized file there fails the task with a
/// message instead of hanging the attempt or filling memory.
#[test]
fn an_output_path_that_is_no_plain_file_fails_the_task_promptly() {
    let s = Scratch::new();
    let text = r#"[dag]
name = "odd_outputs"

[tasks.fifo]
type = "shell"
command = 'mkfifo "$FLUX_OUTPUT"'

[tasks.device]
type = "shell"
command = 'ln -s /dev/zero "$FLUX_OUTPUT"'

[tasks.huge]
type = "shell"
command = 'head -c 17000000 /dev/zero | tr "\\0" " " > "$FLUX_OUTPUT"'

[tasks.fine]
type = "shell"
command = 'printf "  {\"ok\": true}\n" > "$FLUX_OUTPUT"'
"#;
    let dag = s.write("odd.toml", text);
    let out = run_capped(
        &s.path("state"),
        &["run", dag.to_str().unwrap(), "--max-parallel", "4"],
        std::time::Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.peak_rss_mib < 400, "peaked at {} MiB", out.peak_rss_mib);
    let runs = runs(&s.path("state"));
    let report = show(&s.path("state"), str_of(&runs[0], "run_id"));
    let tasks = tasks_by_id(&report);
    let error = |id: &str| tasks[id]["error"].as_str().unwrap_or_default().to_string();
    assert_has(
        &error("fifo"),
        &["output.json", "is a pipe (FIFO), not a regular file"],
    );
    assert_has(
        &error("device"),
        &["output.json", "is a character device, not a regular file"],
    );
    assert_has(
        &error("huge"),
        &["output.json", "holds more than 16777216 bytes"],
    );
    assert_eq!(str_of(&tasks["fine"], "status"), "succeeded");
    assert_eq!(tasks["fine"]["output"], json!({"ok": true}));
}

// ------------------------------------------------------------ path params

/// A `type = "path"` parameter: its default is relative to the DAG file's
/// folder, a `--param` value relative to the working directory; the run
/// records both absolute.
#[test]
fn path_parameters_resolve_against_the_dag_folder_or_the_working_directory() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("dags")).unwrap();
    std::fs::create_dir_all(s.path("elsewhere")).unwrap();
    let text = "[dag]\nname = \"paths\"\n\n[params]\ninput = { default = \"data/in\", type = \"path\" }\nlabel = { default = \"x\" }\n\n[tasks.a]\ntype = \"shell\"\ncommand = \"printf '{\\\"input\\\": \\\"%s\\\", \\\"label\\\": \\\"%s\\\"}' '${params.input}' '${params.label}' > \\\"$FLUX_OUTPUT\\\"\"\n";
    let dag = s.write("dags/paths.toml", text);
    let state = s.path("state");
    let run_in = |cwd: &Path, extra: &[&str]| {
        let mut args = vec!["run", dag.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = command(&state)
            .current_dir(cwd)
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let run_id = runs(&state)[0]["run_id"].as_str().unwrap().to_string();
        tasks_by_id(&show(&state, &run_id))["a"]["output"].clone()
    };
    let dags_dir = std::fs::canonicalize(s.path("dags")).unwrap();
    let elsewhere = std::fs::canonicalize(s.path("elsewhere")).unwrap();
    // Run from another folder: the default still means dags/data/in.
    let out = run_in(&elsewhere, &[]);
    assert_eq!(
        out["input"],
        json!(dags_dir.join("data/in").display().to_string())
    );
    assert_eq!(out["label"], json!("x"));
    let out = run_in(&elsewhere, &["--param", "input=../given/./files"]);
    assert_eq!(
        out["input"],
        json!(
            elsewhere
                .parent()
                .unwrap()
                .join("given/files")
                .display()
                .to_string()
        )
    );
    let out = run_in(&elsewhere, &["--param", "input=/abs/dir"]);
    assert_eq!(out["input"], json!("/abs/dir"));
}

#[test]
fn a_parameter_table_with_a_bad_type_or_no_default_is_an_error() {
    let s = Scratch::new();
    let text = "[dag]\nname = \"p\"\n\n[params]\na = { default = \"x\", type = \"file\" }\nb = { type = \"path\" }\nc = { default = \"y\", kind = \"path\" }\n\n[tasks.t]\ntype = \"shell\"\ncommand = \"echo ${params.a}\"\n";
    let (err, file) = invalid(&s, "p.toml", text, &[]);
    let d = diagnostic_at(&err, &file, place(text, "\"file\""));
    assert_has(&d, &["parameter `a`", "\"string\" and \"path\""]);
    let d = diagnostic_at(&err, &file, place(text, "{ type = \"path\" }"));
    assert_has(&d, &["parameter `b` needs a `default`"]);
    let d = diagnostic_at(&err, &file, place(text, "kind"));
    assert_has(&d, &["unknown field `kind`"]);
}

/// The commands that print what exists, with their output piped into a
/// reader that takes a few bytes and closes: they end quietly (SIGPIPE,
/// as `cat | head` does), never with a panic and exit 101; the output is
/// large enough (hundreds of kB) that the writes go on after the close.
#[test]
fn printing_commands_end_quietly_when_the_reader_closes_early() {
    use std::io::Read;
    use std::process::Stdio;
    let s = Scratch::new();
    let mut dag = String::from("[dag]\nname = \"wide\"\n\n[aws]\nregion = \"eu-west-1\"\n");
    for i in 0..800 {
        dag.push_str(&format!("\n[tasks.t{i:04}]\ntype = \"noop\"\n"));
        if i > 0 {
            dag.push_str(&format!("depends_on = [\"t{:04}\"]\n", i - 1));
        }
    }
    let path = s.write("wide.toml", &dag);
    let path = path.to_str().unwrap();
    let state = s.path("state");
    let out = flux(&state, &["run", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run_id = runs(&state)[0]["run_id"].as_str().unwrap().to_string();
    for args in [
        vec!["show", run_id.as_str(), "--format", "json"],
        vec!["show", run_id.as_str()],
        vec!["graph", path, "--format", "mermaid"],
        vec!["export", "--sfn", path],
        vec!["trace", run_id.as_str()],
    ] {
        let mut child = command(&state)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 16];
        child.stdout.take().unwrap().read_exact(&mut first).unwrap();
        // The reader is gone (its end of the pipe dropped).
        let out = child.wait_with_output().unwrap();
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?} {stderr}",
            out.status
        );
    }
}

/// Small things a person meets first: `export` without a document names
/// all three, `export -o` says what it wrote, `show` and `trace` word an
/// unknown run id the same way, `run --help` explains its argument, the
/// environment and gives examples.
#[test]
fn the_cli_says_what_it_needs_and_what_it_did() {
    let s = Scratch::new();
    let dag = s.write(
        "one.toml",
        "[dag]\nname = \"one\"\n\n[tasks.a]\ntype = \"noop\"\n",
    );
    let dag = dag.to_str().unwrap();
    let state = s.path("state");
    let out = flux(&state, &["export", dag]);
    assert_eq!(out.status.code(), Some(2));
    let message = text(&out.stderr);
    for flag in ["--sfn", "--iam", "--cfn"] {
        assert!(message.contains(flag), "{flag}: {message}");
    }
    let file = s.path("one.asl.json");
    let out = flux(
        &state,
        &["export", "--sfn", dag, "-o", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "stdout stays empty for scripts");
    assert!(
        text(&out.stderr).contains(&format!("wrote {}", file.display())),
        "{}",
        text(&out.stderr)
    );
    assert!(file.exists());

    let out = flux(&state, &["run", dag]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let show = flux(&state, &["show", "20990101T000000Z-abcdef"]);
    let trace = flux(&state, &["trace", "20990101T000000Z-abcdef"]);
    assert_eq!(show.status.code(), Some(2));
    assert_eq!(trace.status.code(), Some(2));
    assert_eq!(text(&show.stderr), text(&trace.stderr));
    assert!(
        text(&show.stderr).contains("flux-engine runs"),
        "{}",
        text(&show.stderr)
    );

    let help = text(&flux(&state, &["run", "--help"]).stdout);
    for needed in [
        "The DAG file",
        "Examples:",
        "FLUX_HOME",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        assert!(help.contains(needed), "{needed}: {help}");
    }
}

/// A report section reading a task the report does not depend on cannot
/// work (the report could run first): `validate` says so, at the field,
/// with the `depends_on` to write, before anything runs.
#[test]
fn a_report_reading_a_task_it_does_not_wait_for_fails_validation() {
    let s = Scratch::new();
    let dag = s.write(
        "report.toml",
        r#"
[dag]
name = "reporting"

[tasks.counts]
type = "noop"

[tasks.top]
type = "noop"

[tasks.report]
type = "report"
depends_on = ["counts"]
output = "s3://lake/report.html"
sections = [
  { title = "Counts", from = "counts", chart = "table" },
  { title = "Top", from = "top", chart = "table" },
]
"#,
    );
    let state = s.path("state");
    let out = flux(&state, &["validate", dag.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let message = text(&out.stderr);
    assert!(
        message.contains("`sections[1].from` reads task `top`"),
        "{message}"
    );
    assert!(
        message.contains(r#"depends_on = ["counts", "top"]"#),
        "{message}"
    );
    assert!(!message.contains("sections[0]"), "{message}");
    assert!(
        message.contains("report.toml:"),
        "names the file and place: {message}"
    );
    // Nothing ran: `run` refuses the same DAG.
    let out = flux(&state, &["run", dag.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

/// Two runs in one state dir write the same report object; each run keeps
/// its own copy beside its logs, and `show` of the first run names the
/// first run's copy (which says it was made by the first run), not the
/// shared file the second run replaced.
#[test]
fn each_run_keeps_its_own_report_and_show_names_it() {
    let s = Scratch::new();
    s.write("one.csv", "n\n1\n");
    let dag = s.write(
        "twice.toml",
        r#"[dag]
name = "twice"

[tasks.land]
type = "s3_ingest"
source = "one.csv"
destination = "s3://lake/raw/one/"

[tasks.crawl]
type = "glue_crawler"
depends_on = ["land"]
database = "db"
targets = ["s3://lake/raw/"]

[tasks.one]
type = "athena_query"
depends_on = ["crawl"]
database = "db"
output = "s3://lake/queries/one/"
sql = "SELECT count(*) AS n FROM one"

[tasks.report]
type = "report"
depends_on = ["one"]
title = "Twice"
output = "s3://lake/reports/twice.html"
tiles = [{ label = "N", from = "one", column = "n", format = "number" }]
"#,
    );
    let state = s.path("state");
    for _ in 0..2 {
        let out = flux(&state, &["run", dag.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let runs = runs(&state);
    assert_eq!(runs.len(), 2);
    // Newest first.
    let (second, first) = (str_of(&runs[0], "run_id"), str_of(&runs[1], "run_id"));
    let shown = flux(&state, &["show", first]);
    let text = stdout(&shown);
    let copy = text
        .lines()
        .find_map(|l| l.strip_prefix("report (report): "))
        .unwrap_or_else(|| panic!("show names no report:\n{text}"))
        .trim()
        .to_string();
    assert!(copy.contains(first), "{copy}");
    let html = std::fs::read_to_string(&copy).unwrap();
    assert!(html.contains(&format!("by run {first}")), "{html}");
    // The shared object is the second run's.
    let shared = std::fs::read_to_string(state.join("s3/lake/reports/twice.html")).unwrap();
    assert!(shared.contains(&format!("by run {second}")));
    assert!(text.contains("the latest run's is"), "{text}");
}

/// A query's `sql_file` that is not there fails validation at the field,
/// with the path it looked for and how to fix it, before anything runs;
/// once the file exists, the same DAG validates.
#[test]
fn a_missing_sql_file_fails_validation_at_the_field() {
    let s = Scratch::new();
    let text = r#"[dag]
name = "q"

[tasks.q]
type = "athena_query"
database = "db"
output = "s3://lake/q/"
sql_file = "queries/kpis.sql"
"#;
    let (err, dag) = invalid(&s, "q.toml", text, &[]);
    let at = place(text, "\"queries/kpis.sql\"");
    let line = diagnostic_at(&err, &dag, at);
    let wanted = s.path("queries/kpis.sql");
    assert!(
        line.contains(&format!(
            "`sql_file` names {}, which does not exist",
            wanted.display()
        )),
        "{line}"
    );
    assert!(line.contains("relative to the DAG file's folder"), "{line}");

    s.write("queries/kpis.sql", "SELECT 1");
    let ok = validate(&s, Path::new(&dag), &[]);
    assert!(ok.status.success(), "{}", stderr(&ok));
}

/// A task that reads where another writes must be ordered with it: left
/// unordered (a forgotten `depends_on`), validation fails at the `reads`
/// entry, naming the writer and the fix; ordered either way, or reading a
/// location no task writes (the DAG's input), it validates.
#[test]
fn a_reader_not_ordered_with_the_writer_of_its_prefix_fails_validation() {
    let s = Scratch::new();
    s.write("job.py", "print('job')\n");
    let dag = |reader_depends: &str| {
        format!(
            r#"[dag]
name = "order"

[tasks.land]
type = "s3_ingest"
source = "job.py"
destination = "s3://lake/raw/"

[tasks.clean]
type = "emr_spark"
script = "job.py"
reads = ["s3://lake/raw/"]
writes = ["s3://lake/clean/"]
depends_on = ["land"]

[tasks.kpis]
type = "emr_spark"
script = "job.py"
reads = ["s3://lake/reference/", "s3://lake/clean/2024/"]
writes = ["s3://lake/kpis/"]
{reader_depends}
"#
        )
    };
    let text = dag("");
    let (err, path) = invalid(&s, "order.toml", &text, &[]);
    let at = place(&text, "\"s3://lake/clean/2024/\"");
    let line = diagnostic_at(&err, &path, at);
    assert!(
        line.contains(
            "task `kpis` reads s3://lake/clean/2024/, where task `clean` writes (s3://lake/clean/ in its `writes[0]`), but neither waits for the other"
        ),
        "{line}"
    );
    assert!(
        line.contains("add \"clean\" to the `depends_on` of `kpis`"),
        "{line}"
    );
    // One error only: the input nobody writes (reference/) and the
    // ordered pair land -> clean are fine.
    assert_eq!(err.matches(": error: ").count(), 1, "{err}");

    for ordered in [
        r#"depends_on = ["clean"]"#,
        r#"depends_on = ["land", "clean"]"#,
    ] {
        let dag = s.write("order.toml", &dag(ordered));
        let out = validate(&s, &dag, &[]);
        assert!(out.status.success(), "{ordered}: {}", stderr(&out));
    }
}
