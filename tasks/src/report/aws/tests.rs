use serde_json::json;

use super::*;

/// `1234567` as `1,234,567`, written independently of the crate's own
/// formatting.
fn commas(n: u64) -> String {
    let digits: Vec<char> = n.to_string().chars().collect();
    let mut groups: Vec<String> = digits
        .rchunks(3)
        .map(|chunk| chunk.iter().collect())
        .collect();
    groups.reverse();
    groups.join(",")
}

/// A client whose every request goes to `endpoint` once, without retry.
fn client_at(endpoint: &str) -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .http_client(https_client())
        .build();
    Client::from_conf(config)
}

/// An endpoint where nothing listens: a port bound and released.
fn closed_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// Athena's CSV: every value quoted, NULL an empty unquoted field.
fn athena_csv(header: &[&str], rows: &[Vec<Option<&str>>]) -> Vec<u8> {
    let quote = |v: &str| format!("\"{}\"", v.replace('"', "\"\""));
    let mut text = header
        .iter()
        .map(|h| quote(h))
        .collect::<Vec<_>>()
        .join(",");
    text.push('\n');
    for row in rows {
        let fields: Vec<String> = row
            .iter()
            .map(|v| v.map(quote).unwrap_or_default())
            .collect();
        text.push_str(&fields.join(","));
        text.push('\n');
    }
    text.into_bytes()
}

fn payload() -> serde_json::Value {
    json!({
        "dag": "rental",
        "task": "report",
        "execution": "exec-1",
        "fields": {
            "title": "Rentals",
            "output": "s3://lake/reports/rental.html",
            "quarantine_threshold": "0.05",
            "tiles": [
                {"label": "Revenue", "from": "kpis", "column": "total_revenue", "format": "money"},
                {"label": "Rentals", "from": "kpis", "column": "total_rentals"},
            ],
            "sections": [
                {"title": "Counts", "from": "counts", "chart": "table"},
                {"title": "Data quality", "from": "clean", "chart": "row_counts"},
            ],
        },
        "inputs": {
            "kpis": {"kind": "athena_query", "results_prefix": "s3://lake/q/kpis/exec-1/"},
            "counts": {"kind": "athena_query", "results_prefix": "s3://lake/q/counts/exec-1/"},
            "clean": {"kind": "emr_spark", "output_json": "s3://lake/processed/clean.json"},
        },
    })
}

async fn failure(payload: &serde_json::Value) -> String {
    match render(&client_at(&closed_endpoint()), payload).await {
        Err(e) => e.message,
        Ok(out) => panic!("{payload} must fail, gave {out}"),
    }
}

#[test]
fn the_payload_builds_the_report_with_the_local_tasks_code() {
    let payload = Payload::deserialize(&payload()).unwrap();
    let spec = parse_fields(&payload.fields).unwrap();
    // The order the function reads its inputs in, each named by the first
    // field that uses it.
    assert_eq!(
        spec.query_inputs(),
        vec![
            ("tiles[0].from".to_string(), "kpis".to_string()),
            ("sections[0].from".to_string(), "counts".to_string()),
        ]
    );
    assert_eq!(
        spec.counts_inputs(),
        vec![("sections[1].from".to_string(), "clean".to_string())]
    );

    let revenue_cents: u64 = 123_456_789 + 98_765_411;
    let rentals: u64 = 20_080;
    let read: u64 = 20_080;
    let quarantined: u64 = 2_008;
    let mut source = Prefetched::default();
    source.queries.insert(
        "kpis".into(),
        QueryData {
            location: "s3://lake/q/kpis/exec-1/a.csv".into(),
            bytes: athena_csv(
                &["total_revenue", "total_rentals"],
                &[vec![
                    Some(&format!(
                        "{}.{:02}",
                        revenue_cents / 100,
                        revenue_cents % 100
                    )),
                    Some(&rentals.to_string()),
                ]],
            ),
            types: BTreeMap::new(),
        },
    );
    source.queries.insert(
        "counts".into(),
        QueryData {
            location: "s3://lake/q/counts/exec-1/b.csv".into(),
            bytes: athena_csv(
                &["table_name", "location_id", "records"],
                &[
                    vec![Some("rentals_clean"), Some("8118"), Some("1110")],
                    vec![Some("users"), None, Some("250")],
                ],
            ),
            types: BTreeMap::new(),
        },
    );
    source.counts.insert(
        "clean".into(),
        json!({
            "files": {"rental_transactions.csv": {
                "read": read, "clean": read - quarantined, "quarantined": quarantined}},
            "quarantine_reasons": {"bad_amount": quarantined},
        }),
    );
    let report = spec
        .build(&source, &payload.execution, &payload.task)
        .unwrap();
    let html = reports::to_html(&report);

    let tile = |label: &str, value: &str| {
        format!("<div class=\"label\">{label}</div><div class=\"value\">{value}</div>")
    };
    let money = format!("{}.{:02}", commas(revenue_cents / 100), revenue_cents % 100);
    assert!(html.contains(&tile("Revenue", &money)), "{money}\n{html}");
    assert!(html.contains(&tile("Rentals", &commas(rentals))), "{html}");
    // Without `.csv.metadata` the types are judged by the values: whole
    // numbers get separators, identifier columns stay as they are.
    assert!(html.contains("<td class=\"num\">1,110</td>"), "{html}");
    assert!(html.contains("<td class=\"num\">8118</td>"), "{html}");
    assert!(html.contains("<td>rentals_clean</td>"), "{html}");
    // The counts: 2,008 of 20,080 is over the 5% threshold.
    assert!(html.contains("<tr class=\"over\"><td>rental_transactions.csv</td>"));
    assert!(html.contains(&commas(read - quarantined)));
    assert!(html.contains("bad_amount"));
    // The execution stands where a local run's id would.
    assert!(html.contains("by run exec-1, task report"), "{html}");
    assert!(html.contains("<h1>Rentals</h1>") || html.contains(">Rentals</h1>"));
}

#[tokio::test]
async fn a_payload_of_the_wrong_shape_says_what_was_expected() {
    let mut bad = payload();
    bad.as_object_mut().unwrap().remove("execution");
    let message = failure(&bad).await;
    assert!(message.contains("`execution`"), "{message}");
    assert!(message.contains("export --sfn"), "{message}");
}

#[tokio::test]
async fn bad_fields_name_the_task_and_the_field() {
    let mut bad = payload();
    bad["fields"]["output"] = json!("s3://lake/reports/rental.txt");
    let message = failure(&bad).await;
    assert!(
        message.starts_with("report task `report` of DAG `rental`, execution `exec-1`: "),
        "{message}"
    );
    assert!(message.contains("field `output`"), "{message}");
    assert!(message.contains("rental.txt"), "{message}");

    let mut unknown = payload();
    unknown["fields"]["colour"] = json!("red");
    let message = failure(&unknown).await;
    assert!(message.contains("unknown field(s) `colour`"), "{message}");

    let mut null = payload();
    null["fields"]["title"] = serde_json::Value::Null;
    let message = failure(&null).await;
    assert!(message.contains("`fields`"), "{message}");
}

#[tokio::test]
async fn inputs_that_are_missing_or_of_the_wrong_kind_are_named() {
    let mut missing = payload();
    missing["inputs"].as_object_mut().unwrap().remove("kpis");
    let message = failure(&missing).await;
    assert!(
        message.contains("`tiles[0].from` = \"kpis\": task `report` has no input from `kpis`"),
        "{message}"
    );
    assert!(
        message.contains("its inputs are: clean, counts"),
        "{message}"
    );

    let mut wrong = payload();
    wrong["fields"]["tiles"][0]["from"] = json!("clean");
    let message = failure(&wrong).await;
    assert!(
        message.contains("`clean` is a `emr_spark` task without a `results_prefix`"),
        "{message}"
    );

    let mut no_json = payload();
    no_json["inputs"]["clean"] = json!({"kind": "emr_spark"});
    no_json["fields"]["tiles"] = json!([]);
    no_json["fields"]["sections"] = json!([{"title": "q", "from": "clean", "chart": "row_counts"}]);
    let message = failure(&no_json).await;
    assert!(message.contains("has no `output_json`"), "{message}");

    let mut bad_uri = payload();
    bad_uri["inputs"]["kpis"]["results_prefix"] = json!("https://lake/q/");
    let message = failure(&bad_uri).await;
    assert!(
        message.contains("`inputs.kpis.results_prefix` `https://lake/q/`"),
        "{message}"
    );
}

#[tokio::test]
async fn an_unreachable_s3_names_the_prefix() {
    let message = failure(&payload()).await;
    assert!(
        message.contains(
            "`tiles[0].from` = \"kpis\": cannot list the query results under s3://lake/q/kpis/exec-1/"
        ),
        "{message}"
    );
}
