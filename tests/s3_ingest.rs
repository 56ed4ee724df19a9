//! `s3_ingest` on the real binary: files land under `STATE_DIR/s3/...`,
//! `show` reports their checksums (checked here with `md5sum` and
//! `sha256sum`, not with the program's own code), a second run skips what
//! did not change and uploads what did, and `validate` places field errors.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

/// The first word `tool` (`md5sum`, `sha256sum`) prints for `path`.
fn digest(tool: &str, path: &Path) -> String {
    let out = Command::new(tool)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    assert!(out.status.success(), "{tool} {} failed", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

const DAG: &str = r#"[dag]
name = "ingest"

[tasks.upload]
type = "s3_ingest"
source = ["data", "lookup.json"]
destination = "s3://test-bucket/raw/"
include = "*.csv"

[tasks.after]
type = "shell"
depends_on = ["upload"]
command = "true"
"#;

/// Runs the DAG, expects success, and returns the upload task's output.
fn run_upload(s: &Scratch, dag: &Path) -> Value {
    let state = s.path("state");
    let out = flux(&state, &["run", dag.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "run failed\n--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let newest = runs(&state);
    let run_id = str_of(&newest[0], "run_id").to_string();
    let report = show(&state, &run_id);
    assert_eq!(report["status"], "succeeded", "{report}");
    let tasks = tasks_by_id(&report);
    assert_eq!(tasks["after"]["status"], "succeeded");
    tasks["upload"]["output"].clone()
}

fn object<'a>(output: &'a Value, key: &str) -> &'a Value {
    output["objects"]
        .as_array()
        .unwrap_or_else(|| panic!("no objects in {output}"))
        .iter()
        .find(|o| o["key"] == key)
        .unwrap_or_else(|| panic!("no object {key} in {output}"))
}

#[test]
fn uploads_reports_checksums_and_skips_unchanged_files() {
    let s = Scratch::new();
    std::fs::create_dir_all(s.path("data/2024")).unwrap();
    s.write("data/a.csv", "id,name\n1,alpha\n");
    s.write("data/2024/b.csv", "id,value\n2,42\n");
    s.write("data/notes.txt", "not included");
    s.write("lookup.json", "{\"k\": 1}\n");
    let dag = s.write("ingest.toml", DAG);
    let bucket = s.path("state/s3/test-bucket");

    let first = run_upload(&s, &dag);
    assert_eq!(first["destination"], "s3://test-bucket/raw/");
    assert_eq!(first["uploaded"], 3, "{first}");
    assert_eq!(first["skipped"], 0);
    assert_eq!(first["objects_total"], 3);
    assert_eq!(first["objects_omitted"], 0);
    let mut total = 0;
    for (key, local) in [
        ("raw/a.csv", "data/a.csv"),
        ("raw/2024/b.csv", "data/2024/b.csv"),
        ("raw/lookup.json", "lookup.json"),
    ] {
        let stored = bucket.join(key);
        assert_eq!(
            std::fs::read(&stored).unwrap_or_else(|e| panic!("{}: {e}", stored.display())),
            std::fs::read(s.path(local)).unwrap(),
            "{key}"
        );
        let o = object(&first, key);
        let size = std::fs::metadata(s.path(local)).unwrap().len();
        total += size;
        assert_eq!(o["size"], size, "{key}");
        assert_eq!(o["md5"], digest("md5sum", &s.path(local)), "{key}");
        assert_eq!(o["sha256"], digest("sha256sum", &s.path(local)), "{key}");
        assert_eq!(o["skipped"], false, "{key}");
    }
    assert_eq!(first["bytes"], total);
    assert!(!bucket.join("raw/notes.txt").exists(), "include = *.csv");

    let second = run_upload(&s, &dag);
    assert_eq!(second["uploaded"], 0, "{second}");
    assert_eq!(second["skipped"], 3);
    assert_eq!(second["bytes"], 0);
    assert_eq!(object(&second, "raw/a.csv")["skipped"], true);
    assert_eq!(
        object(&second, "raw/a.csv")["sha256"],
        digest("sha256sum", &s.path("data/a.csv"))
    );

    // Same size, other content: only that file is uploaded again.
    s.write("data/a.csv", "id,name\n1,ALPHA\n");
    let third = run_upload(&s, &dag);
    assert_eq!(third["uploaded"], 1, "{third}");
    assert_eq!(third["skipped"], 2);
    let a = object(&third, "raw/a.csv");
    assert_eq!(a["skipped"], false);
    assert_eq!(a["md5"], digest("md5sum", &s.path("data/a.csv")));
    assert_eq!(a["sha256"], digest("sha256sum", &bucket.join("raw/a.csv")));
    assert_eq!(
        std::fs::read_to_string(bucket.join("raw/a.csv")).unwrap(),
        "id,name\n1,ALPHA\n"
    );
    assert_eq!(object(&third, "raw/2024/b.csv")["skipped"], true);

    // No staging leftovers next to the objects.
    let names: Vec<String> = std::fs::read_dir(bucket.join("raw"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with(".flux-")), "{names:?}");
}

#[test]
fn a_missing_source_fails_the_task_with_its_path() {
    let s = Scratch::new();
    let dag = s.write("ingest.toml", DAG);
    let state = s.path("state");
    let out = flux(&state, &["run", dag.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let run_id = str_of(&runs(&state)[0], "run_id").to_string();
    let tasks = tasks_by_id(&show(&state, &run_id));
    let error = str_of(&tasks["upload"], "error");
    assert!(
        error.contains("`data` does not exist")
            && error.contains(&s.path("data").display().to_string()),
        "{error}"
    );
}

#[test]
fn validate_places_a_bad_destination() {
    let s = Scratch::new();
    let text = DAG.replace("s3://test-bucket/raw/", "s3://Test_Bucket/raw/");
    let dag = s.write("bad.toml", &text);
    let out = flux(&s.path("state"), &["validate", dag.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = text
        .lines()
        .position(|l| l.starts_with("destination"))
        .unwrap()
        + 1;
    let head = format!("{}:{line}:", dag.display());
    let diagnostic = stderr
        .lines()
        .find(|l| l.starts_with(&head))
        .unwrap_or_else(|| panic!("no error at line {line}:\n{stderr}"));
    assert!(diagnostic.contains("s3://Test_Bucket/raw/"), "{stderr}");
}
