//! `glue_crawler` on the real binary: a `shell` task lands partitioned CSV
//! output under `STATE_DIR/s3/...` and an `s3_ingest` uploads another
//! table; the crawler catalogues both (checked in `show` and in the
//! catalog's JSON files), reports them unchanged on a second run, and bumps
//! the schema version when a column appears.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// The DAG: land rentals with a shell command, upload users, crawl.
fn dag(state: &Path) -> String {
    let rentals = state.join("s3/test-lake/raw/rentals");
    format!(
        r#"[dag]
name = "crawl"

[tasks.land]
type = "shell"
command = '''
set -e
d='{rentals}'
mkdir -p "$d/rental_month=2024-01" "$d/rental_month=2024-02"
printf 'rental_id,user_id,amount,start_time\nr1,7,12.5,2024-01-03 10:00:00\nr2,,3,2024-01-04 11:00:00\n' > "$d/rental_month=2024-01/part-00000.csv"
printf 'rental_id,user_id,amount,start_time\nr3,8,"1,5",2024-02-01 09:15:00\n' > "$d/rental_month=2024-02/part-00000.csv"
: > "$d/_SUCCESS"
'''

[tasks.upload]
type = "s3_ingest"
source = "data/users"
destination = "s3://test-lake/raw/users/"

[tasks.crawl]
type = "glue_crawler"
depends_on = ["land", "upload"]
database = "rental"
targets = ["s3://test-lake/raw/"]
"#,
        rentals = rentals.display()
    )
}

/// Runs the DAG, expects success, and returns the crawler's output.
fn run_crawl(state: &Path, dag: &Path) -> Value {
    let out = flux(state, &["run", dag.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "run failed\n--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let run_id = str_of(&runs(state)[0], "run_id").to_string();
    let report = show(state, &run_id);
    assert_eq!(report["status"], "succeeded", "{report}");
    tasks_by_id(&report)["crawl"]["output"].clone()
}

fn catalog_table(state: &Path, name: &str) -> Value {
    let path = state.join(format!("catalog/rental/{name}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn columns(table: &Value, key: &str) -> Vec<(String, String)> {
    table[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {table}"))
        .iter()
        .map(|c| (str_of(c, "name").to_string(), str_of(c, "type").to_string()))
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn crawls_landed_and_uploaded_tables_and_tracks_schema_changes() {
    let s = Scratch::new();
    let state = s.path("state");
    std::fs::create_dir_all(s.path("data/users")).unwrap();
    s.write(
        "data/users/users.csv",
        "user_id,name,active,signup_date\n1,Ann,true,2024-01-02\n2,\"Bo, Jr\",false,\n",
    );
    let dag = s.write("crawl.toml", &dag(&state));

    let first = run_crawl(&state, &dag);
    assert_eq!(first["database"], "rental");
    assert_eq!(
        first["tables_added"],
        serde_json::json!(["rentals", "users"])
    );
    assert_eq!(first["tables_changed"], serde_json::json!([]));
    assert_eq!(first["tables_missing"], serde_json::json!([]));
    assert_eq!(first["partitions"]["rentals"], 2);
    assert_eq!(first["partitions"]["users"], 0);
    assert_eq!(first["warnings"], serde_json::json!([]), "{first}");

    let rentals = catalog_table(&state, "rentals");
    assert_eq!(rentals["format"], "csv");
    assert_eq!(rentals["csv_header"], true);
    assert_eq!(rentals["location"], "s3://test-lake/raw/rentals/");
    assert_eq!(rentals["schema_version"], 1);
    assert_eq!(
        columns(&rentals, "columns"),
        pairs(&[
            ("rental_id", "string"),
            ("user_id", "bigint"),
            // "1,5" is quoted text next to numbers.
            ("amount", "string"),
            ("start_time", "timestamp"),
        ])
    );
    assert_eq!(
        columns(&rentals, "partition_keys"),
        pairs(&[("rental_month", "string")])
    );
    let partitions = rentals["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 2);
    assert_eq!(partitions[0]["values"], serde_json::json!(["2024-01"]));
    assert_eq!(
        partitions[1]["location"],
        "s3://test-lake/raw/rentals/rental_month=2024-02/"
    );
    let users = catalog_table(&state, "users");
    assert_eq!(
        columns(&users, "columns"),
        pairs(&[
            ("user_id", "bigint"),
            ("name", "string"),
            ("active", "boolean"),
            ("signup_date", "date"),
        ])
    );

    let second = run_crawl(&state, &dag);
    assert_eq!(second["tables_added"], serde_json::json!([]));
    assert_eq!(
        second["tables_unchanged"],
        serde_json::json!(["rentals", "users"])
    );
    assert_eq!(catalog_table(&state, "users")["schema_version"], 1);

    s.write(
        "data/users/users.csv",
        "user_id,name,active,signup_date,email\n1,Ann,1,2024-01-02,a@x\n",
    );
    let third = run_crawl(&state, &dag);
    assert_eq!(
        third["tables_changed"],
        serde_json::json!([{
            "table": "users",
            "added": ["email"],
            "removed": [],
            "type_changed": [{"column": "active", "from": "boolean", "to": "bigint"}],
        }])
    );
    assert_eq!(third["tables_unchanged"], serde_json::json!(["rentals"]));
    let users = catalog_table(&state, "users");
    assert_eq!(users["schema_version"], 2);
    assert_eq!(columns(&users, "columns").len(), 5);
}

#[test]
fn validate_places_a_bad_target() {
    let s = Scratch::new();
    let text = dag(&s.path("state")).replace("s3://test-lake/raw/\"]", "test-lake/raw/\"]");
    let dag = s.write("bad.toml", &text);
    let out = flux(&s.path("state"), &["validate", dag.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = text.lines().position(|l| l.starts_with("targets")).unwrap() + 1;
    let head = format!("{}:{line}:", dag.display());
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&head) && l.contains("s3://")),
        "no error at line {line}:\n{stderr}"
    );
}

/// The tables `flux-engine catalog` lists for database `lake`.
fn listed_tables(state: &Path) -> Vec<Value> {
    let out = flux(
        state,
        &["catalog", "--database", "lake", "--format", "json"],
    );
    match json_of(&out, "catalog") {
        Value::Array(tables) => tables,
        other => panic!("catalog printed {other}, not a list"),
    }
}

/// A crawl SIGKILLed while it writes the catalog: readers see all of its
/// tables or none (before, the tables written so far, until resume), and
/// once the crawl has run again on resume, the catalog is complete and
/// holds no temp file of the killed one.
#[test]
fn a_crawl_killed_while_writing_the_catalog_changes_it_whole_or_not_at_all() {
    const TABLES: usize = 600;
    let s = Scratch::new();
    let state = s.path("state");
    let data = state.join("s3/lake/data");
    for i in 0..TABLES {
        let dir = data.join(format!("t{i:04}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("part-00000.csv"), format!("id,name\n{i},x\n")).unwrap();
    }
    let dag = s.write(
        "crawl.toml",
        "[dag]\nname = \"big_crawl\"\n\n[tasks.crawl]\ntype = \"glue_crawler\"\ndatabase = \"lake\"\ntargets = [\"s3://lake/data/\"]\n",
    );
    let log = s.path("killed");
    let mut engine = spawn(&state, &["run", dag.to_str().unwrap()], &log);
    // SIGKILL as soon as the first table's file is there: the crawl is
    // then between its first catalog write and its last.
    let db = state.join("catalog/lake");
    let table_file = |name: &str| name.starts_with('t') && name.ends_with(".json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let seen = std::fs::read_dir(&db).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| table_file(&e.file_name().to_string_lossy()))
        });
        if seen {
            break;
        }
        if let Some(status) = engine.try_wait().unwrap() {
            panic!(
                "the run ended ({status}) before the crawl wrote a table\n{}",
                logs(&log)
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no catalog file appeared\n{}",
            logs(&log)
        );
    }
    engine.kill().unwrap();
    engine.wait().unwrap();

    let listed = listed_tables(&state).len();
    assert!(
        listed == 0 || listed == TABLES,
        "after the kill the catalog shows {listed} of the crawl's {TABLES} tables"
    );

    let out = flux(&state, &["resume", "--latest"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "resume failed\n--- stdout\n{}--- stderr\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let tables = listed_tables(&state);
    assert_eq!(tables.len(), TABLES);
    assert!(
        tables.iter().all(|t| t["schema_version"] == 1),
        "{tables:?}"
    );
    let leftovers: Vec<String> = std::fs::read_dir(&db)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !table_file(name) && name != ".flux-lock")
        .collect();
    assert_eq!(leftovers, Vec::<String>::new(), "left in {}", db.display());
}
