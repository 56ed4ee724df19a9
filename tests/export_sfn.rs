//! `flux-engine export --sfn` as a user meets it: the rental pipeline's
//! state machine against its reviewed golden file, byte-identical output,
//! export errors that name what is missing, and two independent checkers
//! of Amazon States Language (`asl-validator` and `@wmfs/statelint`, from
//! npm) on every exportable DAG under dags/.
//!
//! The checkers are looked for in `$FLUX_NPM_PREFIX/node_modules/.bin`
//! (default `$HOME/.cache/flux-engine/npm`). Without them the checker test
//! says SKIPPED loudly and passes, unless `FLUX_REQUIRE_CHECKERS=1` (CI).
//!
//! `UPDATE_GOLDEN=1 cargo test --workspace --test export_sfn` rewrites the
//! golden file; review the diff before committing it.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;

fn export(s: &Scratch, args: &[&str]) -> Output {
    export_with(s, "--sfn", args)
}

fn exported(s: &Scratch, dag: &str) -> String {
    let out = export(s, &[dag]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "export of {dag} failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn the_rental_export_matches_its_golden_file() {
    let s = Scratch::new();
    let got = exported(&s, "dags/rental.toml");
    let golden = root().join("exporters/tests/golden/rental.asl.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&golden, &got).unwrap();
        eprintln!("UPDATED {}: review the diff", golden.display());
        return;
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; create it with UPDATE_GOLDEN=1",
            golden.display()
        )
    });
    if got != want {
        let line = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(got.lines().count().min(want.lines().count()))
            + 1;
        panic!(
            "the export of dags/rental.toml differs from {} from line {line} on:\n  got:  {:?}\n  want: {:?}\nIf the change is intended, run with UPDATE_GOLDEN=1 and review the diff",
            golden.display(),
            got.lines().nth(line - 1).unwrap_or(""),
            want.lines().nth(line - 1).unwrap_or("")
        );
    }
}

#[test]
fn the_export_is_byte_identical_and_o_writes_the_same_bytes() {
    let s = Scratch::new();
    for dag in EXPORTABLE {
        let first = exported(&s, dag);
        let second = exported(&s, dag);
        assert_eq!(first, second, "two exports of {dag} differ");
        let file = s.path("out.json");
        let out = export(&s, &[dag, "-o", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(out.stdout.is_empty(), "-o must leave stdout empty");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), first);
    }
}

#[test]
fn params_given_on_the_command_line_are_the_defaults_or_inlined() {
    let s = Scratch::new();
    let export_text = |args: &[&str]| {
        let o = export(&s, args);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        text(&o.stdout)
    };
    // dags/rental.toml: bucket = "flux-rental", scripts_prefix = "s3://${params.bucket}/scripts/".
    let runtime = export_text(&["dags/rental.toml", "--param", "bucket=prod-data"]);
    let machine: serde_json::Value = serde_json::from_str(&runtime).unwrap();
    assert_eq!(
        machine["States"]["Collect parameters"]["Parameters"]["defaults"]["bucket"],
        "prod-data"
    );
    assert!(
        !runtime.contains("s3://flux-rental"),
        "the DAG's default is left"
    );
    assert!(runtime.contains("States.Format('s3://{}/scripts/rental_clean.py', $.params.bucket)"));

    let inline = export_text(&[
        "dags/rental.toml",
        "--inline-params",
        "--param",
        "bucket=prod-data",
    ]);
    assert!(
        !inline.contains("s3://flux-rental"),
        "the DAG's default is left"
    );
    assert!(
        !inline.contains("$.params"),
        "the inline export reads no parameters"
    );
    assert!(inline.contains("s3://prod-data/scripts/rental_clean.py"));
    let inline_default = export_text(&["dags/rental.toml", "--inline-params"]);
    assert!(inline_default.contains("s3://flux-rental/scripts/rental_clean.py"));
}

/// The rental DAG with its [aws] section replaced by `aws`.
fn rental_with_aws(s: &Scratch, aws: &str) -> PathBuf {
    let original = std::fs::read_to_string(root().join("dags/rental.toml")).unwrap();
    let start = original.find("[aws]\n").expect("rental.toml has [aws]");
    let end = start
        + original[start..]
            .find("\n\n")
            .expect("a blank line ends [aws]");
    let text = format!("{}{aws}{}", &original[..start], &original[end..]);
    // In a scratch folder the relative paths (sample data, scripts) lead
    // nowhere, which only matters to a run: these exports fail earlier.
    s.write("rental.toml", &text)
}

#[test]
fn missing_settings_are_export_errors_that_name_them() {
    let s = Scratch::new();
    let dag = rental_with_aws(
        &s,
        "[aws]\nemr_mode = \"cluster\"\nrelease_label = \"emr-7.5.0\"\nathena_workgroup = \"primary\"",
    );
    let out = export(&s, &[dag.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty(), "nothing is written on an error");
    for setting in [
        "instance_type",
        "instance_count",
        "service_role",
        "job_flow_role",
        "scripts_prefix",
        "report_function",
    ] {
        assert!(
            err.contains(&format!("[aws] {setting} is missing")),
            "no error for {setting}:\n{err}"
        );
    }
    assert!(!err.contains("release_label is missing"), "{err}");
    assert!(!err.contains("athena_workgroup is missing"), "{err}");

    let dag = rental_with_aws(&s, "[aws]\nathena_workgroup = \"primary\"");
    let err = text(&export(&s, &[dag.to_str().unwrap()]).stderr);
    assert!(err.contains("[aws] emr_mode is missing"), "{err}");
    assert!(err.contains("task `clean` is an emr_spark task"), "{err}");
}

#[test]
fn run_time_references_in_aws_are_validation_errors() {
    let s = Scratch::new();
    let dag = rental_with_aws(&s, "[aws]\nlog_uri = \"s3://b/${run.id}/\"");
    let out = export(&s, &[dag.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("[aws] log_uri"), "{err}");
}

#[test]
fn shell_tasks_cannot_be_exported() {
    let s = Scratch::new();
    let out = export(&s, &["dags/example.toml"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    // example.toml's four tasks are all shell tasks; each is reported.
    for task in ["extract", "count_words", "count_letters", "report"] {
        assert!(err.contains(&format!("task `{task}` (shell)")), "{err}");
    }
    assert!(err.contains("no production equivalent"), "{err}");
}

/// Where the npm checkers are installed.
fn npm_prefix() -> PathBuf {
    match std::env::var_os("FLUX_NPM_PREFIX") {
        Some(p) => PathBuf::from(p),
        None => {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/flux-engine/npm")
        }
    }
}

#[test]
fn independent_checkers_accept_every_exportable_dag() {
    let prefix = npm_prefix();
    let bin = prefix.join("node_modules/.bin");
    let (validator, statelint) = (bin.join("asl-validator"), bin.join("statelint"));
    if !validator.exists() || !statelint.exists() {
        let message = format!(
            "SKIPPED: the ASL checkers are not installed in {}; install with: npm install --prefix {} asl-validator @wmfs/statelint",
            bin.display(),
            prefix.display()
        );
        if std::env::var_os("FLUX_REQUIRE_CHECKERS").is_some_and(|v| v == "1") {
            panic!("{message} (FLUX_REQUIRE_CHECKERS=1)");
        }
        eprintln!("\n!!!!!!!! {message}\n");
        return;
    }
    let s = Scratch::new();
    for dag in EXPORTABLE {
        let file = s.path("machine.asl.json");
        std::fs::write(&file, exported(&s, dag)).unwrap();
        let out = Command::new(&validator)
            .arg("--json-path")
            .arg(&file)
            .output()
            .expect("run asl-validator");
        assert!(
            out.status.success(),
            "asl-validator rejects the export of {dag}:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let out = Command::new(&statelint)
            .arg(&file)
            .output()
            .expect("run statelint");
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success() && !said.contains("ERROR"),
            "statelint finds problems in the export of {dag}:\n{said}"
        );
    }
}
