//! The exports of every DAG in `dags/` and of every DAG the export tests
//! use, compared byte for byte with what `flux-engine export` printed for
//! them before each task kind took over its own Step Functions
//! translation (issue 10). `tests/exports/README.md` says how the
//! fixtures were captured.
//!
//! Each case of `tests/exports/cases.json` is exported four ways
//! (`--sfn`, `--sfn --inline-params`, `--iam`, `--cfn`); a success must
//! print `NAME.FORM.json`, a refusal exit and print `NAME.FORM.err`
//! (`exit N`, then stderr). Paths of this checkout read `<REPO>` and
//! `<FIXTURES>`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const FORMS: [(&str, &[&str]); 4] = [
    ("sfn", &["--sfn"]),
    ("sfn-inline", &["--sfn", "--inline-params"]),
    ("iam", &["--iam"]),
    ("cfn", &["--cfn"]),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    repo().join("tests").join("exports")
}

/// What a run printed, as the fixtures keep it.
fn outcome(cwd: &Path, dag: &str, flags: &[&str], params: &[(String, String)]) -> (bool, String) {
    let mut command = Command::new(common::bin());
    command
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .env_remove("FLUX_HOME")
        .arg("export")
        .args(flags)
        .arg(dag);
    for (k, v) in params {
        command.arg("--param").arg(format!("{k}={v}"));
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", common::bin()));
    let normalize = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .replace(&fixtures().display().to_string(), "<FIXTURES>")
            .replace(&repo().display().to_string(), "<REPO>")
    };
    if out.status.success() {
        (true, normalize(&out.stdout))
    } else {
        (
            false,
            format!(
                "exit {}\n{}",
                out.status.code().unwrap_or(-1),
                normalize(&out.stderr)
            ),
        )
    }
}

/// Where two texts first differ, as a short excerpt of each.
fn first_difference(expected: &str, actual: &str) -> String {
    let at = expected
        .bytes()
        .zip(actual.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    let line = expected[..at].matches('\n').count() + 1;
    let excerpt = |text: &str| {
        let start = text[..at.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
        text[start..].lines().take(3).collect::<Vec<_>>().join("\n")
    };
    format!(
        "first difference at line {line}:\n--- before\n{}\n--- now\n{}",
        excerpt(expected),
        excerpt(actual)
    )
}

#[test]
fn every_export_is_byte_for_byte_what_it_was() {
    let cases: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("cases.json")).expect("tests/exports/cases.json"),
    )
    .expect("cases.json is JSON");
    let cases = cases.as_array().expect("a list of cases");
    assert!(
        cases.len() > 20,
        "only {} cases: the fixtures are missing",
        cases.len()
    );
    let mut checked = 0;
    let mut differences = Vec::new();
    for case in cases {
        let name = case["name"].as_str().expect("a name");
        let dag = case["dag"].as_str().expect("a DAG");
        let cwd = match case["from"].as_str() {
            Some("repo") => repo(),
            _ => fixtures(),
        };
        let params: Vec<(String, String)> = case["params"]
            .as_array()
            .expect("params")
            .iter()
            .map(|kv| {
                (
                    kv[0].as_str().unwrap_or_default().to_string(),
                    kv[1].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        for (form, flags) in FORMS {
            let (ok, actual) = outcome(&cwd, dag, flags, &params);
            let (expected_ok, expected) =
                match std::fs::read_to_string(fixtures().join(format!("{name}.{form}.json"))) {
                    Ok(text) => (true, text),
                    Err(_) => (
                        false,
                        std::fs::read_to_string(fixtures().join(format!("{name}.{form}.err")))
                            .unwrap_or_else(|e| panic!("no fixture for {name}.{form}: {e}")),
                    ),
                };
            checked += 1;
            if ok != expected_ok || actual != expected {
                differences.push(format!(
                    "{name}.{form} ({dag}): {}\n{}",
                    match (expected_ok, ok) {
                        (true, false) => "exported before, refused now",
                        (false, true) => "refused before, exported now",
                        _ => "differs",
                    },
                    first_difference(&expected, &actual)
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {checked} exports changed:\n\n{}",
        differences.len(),
        differences.join("\n\n")
    );
}
