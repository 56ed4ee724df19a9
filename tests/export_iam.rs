//! `flux-engine export --iam` as a user meets it: one JSON document with
//! the role policy and the trust policy, byte-identical output, `-o`,
//! `--param`, export errors, and an independent checker of IAM policies
//! (`parliament`, from PyPI) on the role policy of every exportable DAG
//! under dags/.
//!
//! `parliament` is run as `python3 -c "...parliament.cli..."` (its own
//! entry point, whatever the state of pyenv's shims). Without it the
//! checker test says SKIPPED loudly and passes, unless
//! `FLUX_REQUIRE_CHECKERS=1` (CI).
//! parliament checks identity policies only: the trust policy (a resource
//! policy with a `Principal` and no `Resource`) is not given to it.

mod common;

use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::Value;

fn export(s: &Scratch, args: &[&str]) -> Output {
    export_with(s, "--iam", args)
}

fn exported(s: &Scratch, args: &[&str]) -> String {
    let out = export(s, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "export --iam {args:?} failed:\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn the_document_holds_the_role_and_trust_policies_and_is_byte_identical() {
    let s = Scratch::new();
    for dag in EXPORTABLE {
        let first = exported(&s, &[dag]);
        assert_eq!(first, exported(&s, &[dag]), "two exports of {dag} differ");
        let doc: Value = serde_json::from_str(&first).expect("the export is JSON");
        let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["RolePolicy", "TrustPolicy"]);
        assert_eq!(doc["RolePolicy"]["Version"], "2012-10-17");
        assert!(
            !doc["RolePolicy"]["Statement"]
                .as_array()
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            doc["TrustPolicy"]["Statement"][0]["Principal"]["Service"],
            "states.amazonaws.com"
        );
        let file = s.path("policy.json");
        let out = export(&s, &[dag, "-o", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(out.stdout.is_empty(), "-o must leave stdout empty");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), first);
    }
}

#[test]
fn params_given_on_the_command_line_are_substituted() {
    let s = Scratch::new();
    let default = exported(&s, &["dags/rental.toml"]);
    let other = exported(&s, &["dags/rental.toml", "--param", "bucket=prod-data"]);
    assert!(default.contains("arn:aws:s3:::flux-rental/raw/users.csv"));
    assert!(!other.contains("flux-rental"), "the default bucket is left");
    assert!(other.contains("arn:aws:s3:::prod-data/raw/users.csv"));
}

#[test]
fn a_dag_that_cannot_be_exported_fails_the_same_way() {
    let s = Scratch::new();
    let out = export(&s, &["dags/example.toml"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty());
    assert!(err.contains("task `extract` (shell)"), "{err}");
    let out = command(&s.path("state"))
        .current_dir(root())
        .args(["export", "--iam", "--sfn", "dags/rental.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--iam and --sfn are exclusive");
}

/// parliament's command-line entry point, run by the python3 on the PATH.
fn parliament() -> Command {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        "import sys; from parliament.cli import cli; sys.exit(cli())",
    ]);
    cmd
}

#[test]
fn parliament_finds_nothing_in_the_role_policy_of_every_exportable_dag() {
    let available = parliament()
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        let message = "SKIPPED: parliament is not installed; install with: python3 -m pip install parliament==1.6.4";
        if std::env::var_os("FLUX_REQUIRE_CHECKERS").is_some_and(|v| v == "1") {
            panic!("{message} (FLUX_REQUIRE_CHECKERS=1)");
        }
        eprintln!("\n!!!!!!!! {message}\n");
        return;
    }
    let s = Scratch::new();
    for dag in EXPORTABLE {
        let doc: Value = serde_json::from_str(&exported(&s, &[dag])).unwrap();
        let file = s.path("role_policy.json");
        std::fs::write(
            &file,
            serde_json::to_string_pretty(&doc["RolePolicy"]).unwrap(),
        )
        .unwrap();
        // The policy goes in on stdin: parliament refuses --file when its
        // stdin is not a terminal, as under `cargo test`.
        let out = parliament()
            .args(["--json", "--minimum_severity", "INFO"])
            .stdin(std::fs::File::open(&file).unwrap())
            .output()
            .expect("run parliament");
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success() && said.trim().is_empty(),
            "parliament reports findings on the role policy of {dag}:\n{said}"
        );
    }
    // And it does find what it should: the checker is really looking.
    let bad = s.write(
        "bad.json",
        r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}"#,
    );
    let out = parliament()
        .args(["--json", "--minimum_severity", "INFO"])
        .stdin(std::fs::File::open(&bad).unwrap())
        .output()
        .expect("run parliament");
    assert!(
        text(&out.stdout).contains("RESOURCE_STAR"),
        "parliament should flag s3:GetObject on *: {}",
        text(&out.stdout)
    );
}
