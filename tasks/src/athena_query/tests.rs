use std::collections::BTreeMap;
use std::path::Path;

use engine::{FieldError, TaskKind};

use super::*;
use crate::sql::tests::{Lake, rentals_lake};

fn parse(text: &str) -> Result<Arc<dyn TaskAction>, FieldError> {
    AthenaQuery.parse(&toml::from_str(text).unwrap())
}

fn parse_err(text: &str) -> FieldError {
    match parse(text) {
        Err(e) => e,
        Ok(_) => panic!("{text:?} must be refused"),
    }
}

fn attempt(lake: &Lake, dag_dir: &Path) -> Attempt {
    let run = lake.root().join("runs/r1/q/1");
    Attempt {
        run_id: "r1".into(),
        task_id: "q".into(),
        number: 1,
        attempt_id: "r1.q.1".into(),
        dag_dir: dag_dir.to_path_buf(),
        log_dir: run.clone(),
        scratch_dir: run.join("scratch"),
        state_root: lake.root().to_path_buf(),
        inputs: BTreeMap::new(),
        traceparent: None,
        journal: engine::WorkJournal::in_memory("r1", "t"),
        progress: engine::scheduler::TaskProgress::none(),
    }
}

/// Runs a task given by its TOML fields against `lake`.
async fn run(lake: &Lake, toml: &str) -> Result<serde_json::Value, TaskFailure> {
    let action = parse(toml).unwrap_or_else(|e| panic!("{toml}: {e}"));
    let out = action.run(&attempt(lake, lake.root())).await?;
    Ok(out.expect("athena_query always has an output"))
}

fn object(lake: &Lake, uri: &str) -> String {
    let bytes = LocalS3::new(lake.root())
        .get(&S3Uri::parse(uri).unwrap())
        .unwrap_or_else(|e| panic!("{uri}: {e}"));
    String::from_utf8(bytes).unwrap()
}

const OUTPUT: &str = "s3://results/athena/";

fn task(sql: &str, expect: &str) -> String {
    let mut text = format!("database = \"rental\"\noutput = \"{OUTPUT}\"\nsql = '''{sql}'''\n");
    if !expect.is_empty() {
        text.push_str(&format!("expect = {expect}\n"));
    }
    text
}

#[test]
fn fields_are_checked_and_all_of_them_are_asked_for() {
    let both = "sql = 'SELECT 1'\nsql_file = 'q.sql'\ndatabase = 'rental'\noutput = 's3://b/o/'\nexpect = { rows = 1 }";
    let fields: toml::Table = toml::from_str(both).unwrap();
    let err = match AthenaQuery.parse(&fields) {
        Err(e) => e,
        Ok(_) => panic!("sql and sql_file together must be refused"),
    };
    assert!(err.message.contains("both"), "{err}");
    assert!(engine::kind::unknown_fields(&AthenaQuery, &fields).is_empty());

    let err = parse_err("database = 'rental'\noutput = 's3://b/o/'");
    assert!(err.message.contains("`sql` or `sql_file`"), "{err}");
    let err = parse_err("sql = 'SELECT 1'\noutput = 's3://b/o/'");
    assert!(err.message.contains("missing field `database`"), "{err}");
    let err = parse_err("sql = 'SELECT 1'\ndatabase = 'Rental'\noutput = 's3://b/o/'");
    assert_eq!(err.field.as_deref(), Some("database"));
    let err = parse_err("sql = 'SELECT 1'\ndatabase = 'rental'\noutput = 'b/o/'");
    assert_eq!(err.field.as_deref(), Some("output"));
    let err = parse_err("sql = 'SELECT 1'\ndatabase = 'rental'");
    assert!(err.message.contains("missing field `output`"), "{err}");
}

#[test]
fn expect_is_checked_when_the_dag_is_loaded() {
    let err = parse_err(&task("SELECT 1", "{ rowz = 1 }"));
    assert_eq!(err.field.as_deref(), Some("expect"));
    assert!(err.message.contains("rowz"), "{err}");
    let err = parse_err(&task("SELECT 1", "{ min_rows = 5, max_rows = 2 }"));
    assert!(err.message.contains("min_rows"), "{err}");
    let err = parse_err(&task("SELECT 1", "{ columns = { n = {} } }"));
    assert!(err.message.contains("expect.columns.n"), "{err}");
    let err = parse_err(&task("SELECT 1", "{ columns = { n = { mn = 1 } } }"));
    assert!(err.message.contains("mn"), "{err}");
    let err = parse_err(&task("SELECT 1", "{ columns = { n = { in = [] } } }"));
    assert!(err.message.contains("empty"), "{err}");
    let err = parse_err(&task("SELECT 1", "{ columns = { n = { min = [1] } } }"));
    assert!(err.message.contains("expect.columns.n.min"), "{err}");
    assert!(parse(&task(
        "SELECT 1",
        "{ rows = 1, columns = { n = { min = 0, max = 2.5, not_null = true, in = [1, 2] }, d = { min = 2024-01-01 } } }"
    ))
    .is_ok());
}

#[test]
fn query_execution_ids_are_uuid_shaped_and_stable_per_attempt() {
    let id = query_execution_id("r1.q.1");
    assert_eq!(id, query_execution_id("r1.q.1"));
    assert_ne!(id, query_execution_id("r1.q.2"));
    let groups: Vec<usize> = id.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
    assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    assert_eq!(id.as_bytes()[14], b'8', "version 8: {id}");
}

#[tokio::test]
async fn the_result_is_written_as_athena_writes_it_and_described_in_the_output() {
    let lake = rentals_lake();
    let out = run(
        &lake,
        &task(
            "SELECT rental_id, user_id, amount, rental_month FROM rentals WHERE user_id = 7 ORDER BY rental_id",
            "",
        ),
    )
    .await
    .unwrap();
    let id = query_execution_id("r1.q.1");
    assert_eq!(out["query_execution_id"], id);
    let csv_uri = format!("{OUTPUT}{id}.csv");
    assert_eq!(out["output_location"], csv_uri);
    assert_eq!(out["metadata_location"], format!("{csv_uri}.metadata"));
    // The rentals of user 7, as the fixture lands them (see rentals_lake).
    let expected_rows = [
        ("r1", "7", "12.5", "2024-01"),
        ("r3", "7", "20.25", "2024-02"),
        ("r5", "7", "4.0", "2024-02"),
    ];
    let mut expected_csv = String::from("\"rental_id\",\"user_id\",\"amount\",\"rental_month\"\n");
    for (a, b, c, d) in expected_rows {
        expected_csv.push_str(&format!("\"{a}\",\"{b}\",\"{c}\",\"{d}\"\n"));
    }
    assert_eq!(object(&lake, &csv_uri), expected_csv);
    assert_eq!(out["rows"], 3);
    let columns = serde_json::json!([
        {"name": "rental_id", "type": "varchar"},
        {"name": "user_id", "type": "bigint"},
        {"name": "amount", "type": "double"},
        {"name": "rental_month", "type": "varchar"},
    ]);
    assert_eq!(out["columns"], columns);
    assert_eq!(
        out["sample"],
        serde_json::json!(
            expected_rows
                .iter()
                .map(|(a, b, c, d)| vec![a, b, c, d])
                .collect::<Vec<_>>()
        )
    );
    let metadata: serde_json::Value =
        serde_json::from_str(&object(&lake, &format!("{csv_uri}.metadata"))).unwrap();
    assert_eq!(metadata["query_execution_id"], id);
    assert_eq!(metadata["rows"], 3);
    assert_eq!(metadata["columns"], columns);
    let log = std::fs::read_to_string(lake.root().join("runs/r1/q/1/stdout.log")).unwrap();
    assert!(
        log.contains("WHERE user_id = 7") && log.contains("| r3"),
        "{log}"
    );
}

#[tokio::test]
async fn nulls_are_null_in_the_sample_and_empty_in_the_csv() {
    let lake = rentals_lake();
    let out = run(
        &lake,
        &task("SELECT 'a,\"b\"' AS s, CAST(NULL AS BIGINT) AS n", ""),
    )
    .await
    .unwrap();
    assert_eq!(out["sample"], serde_json::json!([["a,\"b\"", null]]));
    let csv = object(&lake, out["output_location"].as_str().unwrap());
    assert_eq!(csv, "\"s\",\"n\"\n\"a,\"\"b\"\"\",\n");
}

#[tokio::test]
async fn sql_files_are_read_from_the_dag_folder() {
    let lake = rentals_lake();
    let dag_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dag_dir.path().join("sql")).unwrap();
    std::fs::write(
        dag_dir.path().join("sql/count.sql"),
        "-- how many rentals\nSELECT count(*) AS n FROM rentals\n",
    )
    .unwrap();
    let action = parse(&format!(
        "database = 'rental'\noutput = '{OUTPUT}'\nsql_file = 'sql/count.sql'"
    ))
    .unwrap();
    let out = action
        .run(&attempt(&lake, dag_dir.path()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out["sample"], serde_json::json!([["5"]]));

    let missing = parse(&format!(
        "database = 'rental'\noutput = '{OUTPUT}'\nsql_file = 'sql/nope.sql'"
    ))
    .unwrap();
    let err = missing
        .run(&attempt(&lake, dag_dir.path()))
        .await
        .unwrap_err();
    assert!(err.message.contains("sql/nope.sql"), "{err}");
}

/// A `sql_file` is read up to Athena's query limit and no further: a device
/// that never ends, or a file past the limit, is an error naming it.
#[tokio::test]
async fn a_sql_file_is_read_up_to_athenas_limit_only() {
    let lake = rentals_lake();
    let dag_dir = tempfile::tempdir().unwrap();
    let run = |file: &str| {
        let action = parse(&format!(
            "database = 'rental'\noutput = '{OUTPUT}'\nsql_file = '{file}'"
        ))
        .unwrap();
        let attempt = attempt(&lake, dag_dir.path());
        async move { action.run(&attempt).await }
    };
    let err = run("/dev/zero").await.unwrap_err();
    assert!(
        err.message
            .contains("/dev/zero (a character device) gave more than 262144 bytes"),
        "{err}"
    );
    assert!(
        err.message.contains("Athena accepts queries of at most"),
        "{err}"
    );

    // One byte over, padded with a comment, is refused with its size ...
    let query = "SELECT count(*) AS n FROM rentals\n-- ";
    let mut text = query.to_string();
    text.push_str(&"x".repeat(262_145 - query.len()));
    std::fs::write(dag_dir.path().join("big.sql"), &text).unwrap();
    let err = run("big.sql").await.unwrap_err();
    assert!(err.message.contains("big.sql is 262145 bytes"), "{err}");
    // ... and exactly at the limit it runs.
    text.pop();
    std::fs::write(dag_dir.path().join("big.sql"), &text).unwrap();
    let out = run("big.sql").await.unwrap().unwrap();
    assert_eq!(out["sample"], serde_json::json!([["5"]]));
}

#[tokio::test]
async fn passing_checks_let_the_task_succeed() {
    let lake = rentals_lake();
    let out = run(
        &lake,
        &task(
            "SELECT rental_month, count(*) AS n, min(amount) AS low FROM rentals GROUP BY 1",
            "{ rows = 2, min_rows = 1, max_rows = 2, columns = { n = { min = 1, max = 3, not_null = true }, rental_month = { in = ['2024-01', '2024-02'], min = '2024-01' }, low = { min = 1.5 } } }",
        ),
    )
    .await
    .unwrap();
    assert_eq!(out["rows"], 2);
}

#[tokio::test]
async fn failing_checks_name_the_check_and_show_the_offending_rows() {
    let lake = rentals_lake();
    // Amounts below 4 in the fixture: r2 (3.0) and r4 (1.5).
    let sql = "SELECT rental_id, amount FROM rentals ORDER BY rental_id";
    let err = run(&lake, &task(sql, "{ columns = { amount = { min = 4 } } }"))
        .await
        .unwrap_err();
    let message = err.message;
    assert!(message.contains("expect.columns.amount.min"), "{message}");
    assert!(message.contains(">= 4"), "{message}");
    assert!(message.contains("2 rows below"), "{message}");
    assert!(message.contains("the smallest 1.5"), "{message}");
    assert!(message.contains("| r2"), "{message}");
    assert!(message.contains("| r4"), "{message}");
    assert!(!message.contains("| r1"), "{message}");
    // The result was written all the same.
    let id = query_execution_id("r1.q.1");
    let csv_uri = format!("{OUTPUT}{id}.csv");
    assert!(message.contains(&csv_uri), "{message}");
    assert_eq!(object(&lake, &csv_uri).lines().count(), 1 + 5);
}

#[tokio::test]
async fn every_failing_check_is_reported() {
    let lake = rentals_lake();
    let err = run(
        &lake,
        &task(
            "SELECT rental_id, user_id, CASE WHEN rental_id = 'r4' THEN NULL ELSE rental_month END AS month FROM rentals",
            "{ rows = 4, max_rows = 3, columns = { user_id = { in = [7, 8], max = 8 }, month = { not_null = true }, nope = { not_null = true } } }",
        ),
    )
    .await
    .unwrap_err();
    let message = err.message;
    assert!(message.starts_with("6 expect checks failed"), "{message}");
    assert!(
        message.contains("expect.rows: expected exactly 4 rows, the query returned 5"),
        "{message}"
    );
    assert!(
        message.contains("expect.max_rows: expected at most 3 rows"),
        "{message}"
    );
    // User 9 (rental r4) is the only user outside [7, 8].
    assert!(
        message.contains("expect.columns.user_id.in: expected every value in [7, 8], found 1 row with other values (9)"),
        "{message}"
    );
    assert!(
        message.contains("expect.columns.user_id.max: expected every value <= 8, found 1 row above, the largest 9"),
        "{message}"
    );
    assert!(
        message.contains("expect.columns.month.not_null: expected no NULL, found 1 row with NULL"),
        "{message}"
    );
    assert!(
        message.contains("the result has no column `nope`"),
        "{message}"
    );
}

#[tokio::test]
async fn offending_rows_are_cut_to_ten() {
    let lake = rentals_lake();
    let err = run(
        &lake,
        &task(
            "SELECT n FROM (SELECT unnest(range(0, 25)) AS n) ORDER BY n",
            "{ columns = { n = { max = 2 } } }",
        ),
    )
    .await
    .unwrap_err();
    let message = err.message;
    assert!(message.contains("found 22 rows above"), "{message}");
    assert!(message.contains("the first 10"), "{message}");
    let shown = message.lines().filter(|l| l.starts_with("| ")).count();
    // The header line and ten rows.
    assert_eq!(shown, 1 + MAX_OFFENDING_ROWS, "{message}");
}

#[tokio::test]
async fn dates_compare_as_dates_and_bad_values_are_reported() {
    let lake = rentals_lake();
    let sql = "SELECT DATE '2024-01-15' AS d UNION ALL SELECT DATE '2023-12-31'";
    let err = run(
        &lake,
        &task(sql, "{ columns = { d = { min = 2024-01-01 } } }"),
    )
    .await
    .unwrap_err();
    assert!(
        err.message
            .contains("found 1 row below, the smallest 2023-12-31"),
        "{err}"
    );
    run(
        &lake,
        &task(sql, "{ columns = { d = { min = '2023-12-31' } } }"),
    )
    .await
    .unwrap();
    let err = run(&lake, &task(sql, "{ columns = { d = { max = 'soon' } } }"))
        .await
        .unwrap_err();
    assert!(
        err.message
            .contains("expect.columns.d.max: cannot compare the date column"),
        "{err}"
    );
}

#[tokio::test]
async fn query_errors_fail_the_task_with_the_reason() {
    let lake = rentals_lake();
    let err = run(&lake, &task("SELECT * FROM rentalz", ""))
        .await
        .unwrap_err();
    assert!(
        err.message.contains("rental.rentalz") && err.message.contains("rentals"),
        "{err}"
    );
    let empty = Lake::new();
    let err = run(&empty, &task("SELECT 1", "")).await.unwrap_err();
    assert!(err.message.contains("glue_crawler"), "{err}");
}

#[tokio::test]
async fn wide_results_keep_the_output_under_the_engines_limit() {
    let lake = rentals_lake();
    let columns: Vec<String> = (0..10)
        .map(|i| format!("repeat('x', 900) AS c{i}"))
        .collect();
    let sql = format!(
        "SELECT {}, repeat('y', 1500) AS long FROM (SELECT unnest(range(0, 30)) AS n)",
        columns.join(", ")
    );
    let out = run(&lake, &task(&sql, "")).await.unwrap();
    assert_eq!(out["rows"], 30);
    assert!(out.to_string().len() <= MAX_OUTPUT_BYTES);
    let sample = out["sample"].as_array().unwrap();
    // 20 rows of eleven values of ~1000 characters would not fit.
    assert!(
        !sample.is_empty() && sample.len() < SAMPLE_ROWS,
        "{}",
        sample.len()
    );
    let long = sample[0][10].as_str().unwrap();
    assert_eq!(long.chars().count(), MAX_SAMPLE_CHARS + 1);
    assert!(long.ends_with('…'));
    // The result file holds every value whole.
    let csv = object(&lake, out["output_location"].as_str().unwrap());
    assert!(csv.contains(&"y".repeat(1500)));
}
