//! `athena_query`, `query` and `catalog` on the real binary: a `shell` task
//! lands partitioned CSV in the local S3, a `glue_crawler` catalogues it,
//! an `athena_query` aggregates it (with checks) and writes Athena's result
//! files; then `flux-engine query` and `flux-engine catalog` read the same
//! state dir. Expected values are computed here from the rows written.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use serde_json::{Value, json};

/// The rentals landed: id, user, amount, month.
const RENTALS: &[(&str, i64, f64, &str)] = &[
    ("r1", 7, 12.5, "2024-01"),
    ("r2", 8, 3.25, "2024-01"),
    ("r3", 7, 20.0, "2024-02"),
    ("r4", 9, 1.5, "2024-02"),
    ("r5", 8, 4.75, "2024-02"),
];

/// Per month: (rentals, total amount), from `RENTALS`.
fn per_month() -> BTreeMap<&'static str, (usize, f64)> {
    let mut months = BTreeMap::new();
    for (_, _, amount, month) in RENTALS {
        let entry = months.entry(*month).or_insert((0, 0.0));
        entry.0 += 1;
        entry.1 += amount;
    }
    months
}

/// The shell command that lands `RENTALS` under `STATE/s3/test-lake/raw/rentals/`.
fn land_command(state: &Path) -> String {
    let root = state.join("s3/test-lake/raw/rentals");
    let mut command = String::from("set -e\n");
    for month in per_month().keys() {
        let dir = root.join(format!("rental_month={month}"));
        let mut csv = String::from("rental_id,user_id,amount\\n");
        for (id, user, amount, _) in RENTALS.iter().filter(|r| r.3 == *month) {
            csv.push_str(&format!("{id},{user},{amount:?}\\n"));
        }
        command.push_str(&format!(
            "mkdir -p '{dir}'\nprintf '{csv}' > '{dir}/part-00000.csv'\n",
            dir = dir.display()
        ));
    }
    command
}

const KPI_SQL: &str = "SELECT rental_month, count(*) AS rentals, sum(amount) AS total FROM rentals GROUP BY rental_month ORDER BY rental_month";

fn dag(state: &Path, expect: &str) -> String {
    format!(
        r#"[dag]
name = "kpis"

[tasks.land]
type = "shell"
command = '''
{land}'''

[tasks.crawl]
type = "glue_crawler"
depends_on = ["land"]
database = "rental"
targets = ["s3://test-lake/raw/"]

[tasks.kpis]
type = "athena_query"
depends_on = ["crawl"]
database = "rental"
sql = "{KPI_SQL}"
output = "s3://test-lake/athena-results/"
expect = {expect}
"#,
        land = land_command(state),
    )
}

fn run_dag(state: &Path, dag: &Path) -> (Option<i32>, Value) {
    let out = flux(state, &["run", dag.to_str().unwrap()]);
    let run_id = str_of(&runs(state)[0], "run_id").to_string();
    (out.status.code(), show(state, &run_id))
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_crawled_table_is_queried_by_the_task_and_the_commands() {
    let s = Scratch::new();
    let state = s.path("state");
    let months = per_month();
    let expect = format!(
        "{{ rows = {}, columns = {{ rentals = {{ min = 1, not_null = true }}, rental_month = {{ in = [{}] }} }} }}",
        months.len(),
        months
            .keys()
            .map(|m| format!("'{m}'"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let dag_path = s.write("kpis.toml", &dag(&state, &expect));
    let (code, report) = run_dag(&state, &dag_path);
    assert_eq!(code, Some(0), "{report}");
    let output = tasks_by_id(&report)["kpis"]["output"].clone();

    // The task's output and the result files.
    let expected_rows: Vec<Vec<String>> = months
        .iter()
        .map(|(month, (n, total))| vec![month.to_string(), n.to_string(), format!("{total:?}")])
        .collect();
    assert_eq!(output["rows"], json!(expected_rows.len()));
    assert_eq!(
        output["columns"],
        json!([
            {"name": "rental_month", "type": "varchar"},
            {"name": "rentals", "type": "bigint"},
            {"name": "total", "type": "double"},
        ])
    );
    assert_eq!(output["sample"], json!(expected_rows));
    let id = str_of(&output, "query_execution_id");
    let csv_uri = format!("s3://test-lake/athena-results/{id}.csv");
    assert_eq!(output["output_location"], json!(csv_uri));
    assert_eq!(
        output["metadata_location"],
        json!(format!("{csv_uri}.metadata"))
    );
    let results = state.join("s3/test-lake/athena-results");
    let mut expected_csv = String::from("\"rental_month\",\"rentals\",\"total\"\n");
    for row in &expected_rows {
        let quoted: Vec<String> = row.iter().map(|v| format!("\"{v}\"")).collect();
        expected_csv.push_str(&format!("{}\n", quoted.join(",")));
    }
    assert_eq!(
        std::fs::read_to_string(results.join(format!("{id}.csv"))).unwrap(),
        expected_csv
    );
    let metadata: Value = serde_json::from_str(
        &std::fs::read_to_string(results.join(format!("{id}.csv.metadata"))).unwrap(),
    )
    .unwrap();
    assert_eq!(metadata["rows"], json!(expected_rows.len()));
    assert_eq!(metadata["columns"], output["columns"]);

    // `query`, in each format, against the same state dir.
    let users_sql = "SELECT user_id, count(*) AS n FROM rentals GROUP BY user_id ORDER BY user_id";
    let mut per_user: BTreeMap<i64, usize> = BTreeMap::new();
    for (_, user, _, _) in RENTALS {
        *per_user.entry(*user).or_default() += 1;
    }
    let out = flux(
        &state,
        &[
            "query",
            users_sql,
            "--database",
            "rental",
            "--format",
            "json",
        ],
    );
    let expected_json: Vec<Value> = per_user
        .iter()
        .map(|(user, n)| json!({"user_id": user, "n": n}))
        .collect();
    assert_eq!(json_of(&out, "query --format json"), json!(expected_json));

    let out = flux(
        &state,
        &["query", KPI_SQL, "--database", "rental", "--format", "csv"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), expected_csv);

    let qualified = "SELECT count(*) AS n FROM awsdatacatalog.rental.rentals";
    let out = flux(&state, &["query", qualified]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.contains("| n "), "{table}");
    assert!(table.contains(&format!("| {} ", RENTALS.len())), "{table}");
    assert!(table.trim_end().ends_with("(1 row)"), "{table}");

    // `catalog`: the crawled table, as JSON and as text.
    let out = flux(&state, &["catalog", "--format", "json"]);
    let catalog = json_of(&out, "catalog --format json");
    let rentals = &catalog[0];
    assert_eq!(rentals["database"], "rental");
    assert_eq!(rentals["name"], "rentals");
    assert_eq!(rentals["format"], "csv");
    assert_eq!(rentals["location"], "s3://test-lake/raw/rentals/");
    assert_eq!(rentals["partition_count"], json!(months.len()));
    assert_eq!(rentals["schema_version"], 1);
    assert_eq!(
        rentals["columns"],
        json!([
            {"name": "rental_id", "type": "string"},
            {"name": "user_id", "type": "bigint"},
            {"name": "amount", "type": "double"},
        ])
    );
    assert_eq!(
        rentals["partition_keys"],
        json!([{"name": "rental_month", "type": "string"}])
    );
    let out = flux(&state, &["catalog", "--database", "rental"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "rental.rentals",
        "s3://test-lake/raw/rentals/",
        "rental_month",
        "bigint",
    ] {
        assert!(text.contains(needle), "no {needle} in:\n{text}");
    }
}

#[test]
fn a_failed_check_fails_the_run_and_shows_the_offending_rows() {
    let s = Scratch::new();
    let state = s.path("state");
    // The busiest month has more rentals than this allows.
    let busiest = per_month().values().map(|(n, _)| *n).max().unwrap();
    let limit = busiest - 1;
    let dag_path = s.write(
        "kpis.toml",
        &dag(
            &state,
            &format!("{{ columns = {{ rentals = {{ max = {limit} }} }} }}"),
        ),
    );
    let (code, report) = run_dag(&state, &dag_path);
    assert_eq!(code, Some(1), "{report}");
    let task = &tasks_by_id(&report)["kpis"];
    assert_eq!(task["status"], "failed", "{report}");
    let error = str_of(task, "error");
    assert!(error.contains("expect.columns.rentals.max"), "{error}");
    assert!(
        error.contains(&format!("<= {limit}")) && error.contains(&format!("the largest {busiest}")),
        "{error}"
    );
    let (month, _) = per_month()
        .into_iter()
        .find(|(_, (n, _))| *n == busiest)
        .unwrap();
    assert!(error.contains(&format!("| {month}")), "{error}");
    // The result was written before the check failed.
    let results = state.join("s3/test-lake/athena-results");
    let written = std::fs::read_dir(&results)
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().ends_with(".csv"));
    assert!(written, "no result file in {}", results.display());
}

#[test]
fn query_and_catalog_explain_what_is_missing() {
    let s = Scratch::new();
    let state = s.path("state");
    for args in [vec!["query", "SELECT 1"], vec!["catalog"]] {
        let out = flux(&state, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stdout(&out));
        assert!(
            stderr(&out).contains("glue_crawler"),
            "{args:?}: {}",
            stderr(&out)
        );
    }

    // With a catalog: unknown tables and bad SQL are exit code 2.
    let dag_path = s.write("kpis.toml", &dag(&state, "{ min_rows = 1 }"));
    let (code, report) = run_dag(&state, &dag_path);
    assert_eq!(code, Some(0), "{report}");
    let out = flux(&state, &["query", "SELECT * FROM rental.rentalz"]);
    assert_eq!(out.status.code(), Some(2));
    let message = stderr(&out);
    assert!(
        message.contains("rental.rentalz") && message.contains("rentals"),
        "{message}"
    );
    let out = flux(&state, &["query", "SELEC 1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("SELEC"), "{}", stderr(&out));
    let out = flux(&state, &["catalog", "--database", "sales"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("rental"), "{}", stderr(&out));

    // One database in the catalog: bare table names are its own, as with
    // --database.
    let bare = flux(
        &state,
        &[
            "query",
            "SELECT count(*) AS n FROM rentals",
            "--format",
            "csv",
        ],
    );
    let qualified = flux(
        &state,
        &[
            "query",
            "SELECT count(*) AS n FROM rental.rentals",
            "--format",
            "csv",
        ],
    );
    assert_eq!(bare.status.code(), Some(0), "{}", stderr(&bare));
    assert_eq!(stdout(&bare), stdout(&qualified));
    // A task's SQL still needs its database: the message says how.
    let out = flux(&state, &["query", "SELECT count(*) FROM rentalz"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("rentalz"), "{}", stderr(&out));
}

/// A query that cannot work (SQL that does not parse) fails its task at
/// once, whatever its retry policy, saying why it was not retried; a
/// transient failure would have been retried.
#[test]
fn a_configuration_error_is_not_retried() {
    let s = Scratch::new();
    let state = s.path("state");
    let text = dag(&state, "{ min_rows = 1 }").replace(
        &format!("sql = \"{KPI_SQL}\""),
        "sql = \"SELEC count(*) FROM rentals\"\nretry = { max_attempts = 3, interval_seconds = 1, jitter = \"none\" }",
    );
    assert!(text.contains("SELEC count"), "{text}");
    let dag_path = s.write("broken.toml", &text);
    let (code, report) = run_dag(&state, &dag_path);
    assert_eq!(code, Some(1), "{report}");
    let kpis = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "kpis")
        .unwrap();
    assert_eq!(kpis["status"], "failed");
    assert_eq!(kpis["attempts"], 1, "{kpis}");
    let error = kpis["error"].as_str().unwrap();
    assert!(
        error.contains("SELEC") && error.contains("not retried"),
        "{error}"
    );
}
