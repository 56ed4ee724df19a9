use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use engine::{FieldError, TaskKind};

use super::*;

fn fields(text: &str) -> toml::Table {
    toml::from_str(text).unwrap()
}

fn parse(text: &str) -> Result<Arc<dyn TaskAction>, FieldError> {
    Report.parse(&fields(text))
}

fn parse_err(text: &str) -> FieldError {
    match parse(text) {
        Err(e) => e,
        Ok(_) => panic!("{text:?} must be refused"),
    }
}

/// One rental of the fixture: city, day, amount in cents, hours.
struct Rental {
    city: &'static str,
    day: &'static str,
    cents: i64,
    hours: u32,
}

/// The rentals the query results below are worked out from. One city name
/// holds every character HTML escapes, and one is long enough to be cut.
fn rentals() -> Vec<Rental> {
    let r = |city, day, cents, hours| Rental {
        city,
        day,
        cents,
        hours,
    };
    vec![
        r("Fresno", "2024-01-01", 123_456_789, 700),
        r("Fresno", "2024-01-02", 98_765_432, 410),
        r("<Smith & Sons> 'Main' \"St\"", "2024-01-02", 5_000_050, 96),
        r("Moreno Valley", "2024-01-03", 250_075, 9),
        r(
            "San Buenaventura (Ventura), a city with a very long official name",
            "2024-01-03",
            1_999_999,
            45,
        ),
        r("Moreno Valley", "2024-01-04", 10_000_000, 30),
    ]
}

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

fn money(cents: i64) -> String {
    format!("{}.{:02}", commas((cents / 100) as u64), cents % 100)
}

/// `12345` cents as Athena writes a double: `123.45`.
fn decimal(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// A result in Athena's CSV format: every value double-quoted (quotes
/// doubled), NULL an empty unquoted field.
fn athena_csv(header: &[&str], rows: &[Vec<Option<String>>]) -> String {
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
            .map(|v| v.as_deref().map(quote).unwrap_or_default())
            .collect();
        text.push_str(&fields.join(","));
        text.push('\n');
    }
    text
}

struct Lake {
    dir: tempfile::TempDir,
    inputs: BTreeMap<String, serde_json::Value>,
}

impl Lake {
    fn new() -> Self {
        Lake {
            dir: tempfile::tempdir().unwrap(),
            inputs: BTreeMap::new(),
        }
    }

    fn state(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    fn s3(&self) -> LocalS3 {
        LocalS3::new(self.state())
    }

    /// Writes a query result as task `task`'s athena_query would, and
    /// records its output as an input of the report.
    fn query(&mut self, task: &str, columns: &[(&str, &str)], rows: Vec<Vec<Option<String>>>) {
        let id = format!("qid-{task}");
        let location = format!("s3://lake/analytics/results/{id}.csv");
        let header: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
        self.s3()
            .put_bytes(
                &S3Uri::parse(&location).unwrap(),
                athena_csv(&header, &rows).as_bytes(),
            )
            .unwrap();
        self.inputs.insert(
            task.to_string(),
            json!({
                "query_execution_id": id,
                "output_location": location,
                "metadata_location": format!("{location}.metadata"),
                "rows": rows.len(),
                "columns": columns
                    .iter()
                    .map(|(name, t)| json!({"name": name, "type": t}))
                    .collect::<Vec<_>>(),
                "sample": [],
            }),
        );
    }

    fn attempt(&self) -> Attempt {
        let root = self.dir.path();
        Attempt {
            run_id: "run1".into(),
            task_id: "report".into(),
            number: 1,
            attempt_id: "run1.report.1".into(),
            dag_dir: root.to_path_buf(),
            log_dir: root.join("logs"),
            scratch_dir: root.join("scratch"),
            state_root: self.state(),
            inputs: self.inputs.clone(),
            traceparent: None,
            journal: engine::WorkJournal::in_memory("r1", "t"),
            progress: engine::scheduler::TaskProgress::none(),
        }
    }

    async fn run(&self, toml: &str) -> Result<serde_json::Value, TaskFailure> {
        let action = parse(toml).unwrap_or_else(|e| panic!("{toml}: {e}"));
        action.run(&self.attempt()).await.map(|o| o.unwrap())
    }

    async fn failure(&self, toml: &str) -> String {
        match self.run(toml).await {
            Err(e) => e.message,
            Ok(out) => panic!("{toml} must fail, gave {out}"),
        }
    }
}

fn some(text: impl Into<String>) -> Option<String> {
    Some(text.into())
}

/// The rental pipeline's query results, worked out from [`rentals`].
fn rental_lake() -> Lake {
    let rentals = rentals();
    let mut lake = Lake::new();

    let revenue: i64 = rentals.iter().map(|r| r.cents).sum();
    let hours: u32 = rentals.iter().map(|r| r.hours).sum();
    lake.query(
        "kpis",
        &[
            ("total_revenue", "double"),
            ("total_transactions", "bigint"),
            ("total_rental_hours", "double"),
            ("top_city", "varchar"),
        ],
        vec![vec![
            some(decimal(revenue)),
            some(rentals.len().to_string()),
            some(hours.to_string()),
            some("Fresno"),
        ]],
    );

    // SELECT city, sum(total_amount) ... GROUP BY city ORDER BY 2 DESC
    let mut by_city: Vec<(&str, i64)> = Vec::new();
    for r in &rentals {
        match by_city.iter_mut().find(|(c, _)| *c == r.city) {
            Some((_, cents)) => *cents += r.cents,
            None => by_city.push((r.city, r.cents)),
        }
    }
    by_city.sort_by_key(|(_, cents)| std::cmp::Reverse(*cents));
    lake.query(
        "by_city",
        &[("city", "varchar"), ("total_revenue", "double")],
        by_city
            .iter()
            .map(|(city, cents)| vec![some(*city), some(decimal(*cents))])
            .collect(),
    );

    // SELECT rental_date, count(*), sum(total_amount) ... ORDER BY 1
    let mut daily: BTreeMap<&str, (u64, i64)> = BTreeMap::new();
    for r in &rentals {
        let day = daily.entry(r.day).or_default();
        day.0 += 1;
        day.1 += r.cents;
    }
    lake.query(
        "daily",
        &[
            ("rental_date", "date"),
            ("total_transactions", "bigint"),
            ("total_revenue", "double"),
        ],
        daily
            .iter()
            .map(|(day, (n, cents))| vec![some(*day), some(n.to_string()), some(decimal(*cents))])
            .collect(),
    );

    // SELECT location_id, city, total_rental_hours ... (a NULL city)
    lake.query(
        "locations",
        &[
            ("location_id", "int"),
            ("city", "varchar"),
            ("total_rental_hours", "bigint"),
        ],
        vec![
            vec![some("8118"), some("Fresno, \"CA\""), some("1110")],
            vec![some("2404"), None, some("39")],
        ],
    );

    lake.inputs.insert(
        "clean".into(),
        json!({
            "files": {
                "locations.csv": {"read": 300, "clean": 300, "quarantined": 0},
                "rental_transactions.csv": {"read": 20080, "clean": 18072, "quarantined": 2008},
            },
            "quarantine_reasons": {"bad_amount": 8, "missing_field": 2000},
            "quarantine_reasons_by_file": {
                "locations.csv": {},
                "rental_transactions.csv": {"bad_amount": 8, "missing_field": 2000},
            },
        }),
    );
    lake
}

const REPORT: &str = r#"
title = "Rental pipeline"
output = "s3://lake/reports/rental.html"
tiles = [
  { label = "Revenue", from = "kpis", column = "total_revenue", format = "money" },
  { label = "Rentals", from = "kpis", column = "total_transactions" },
  { label = "Rental hours", from = "kpis", column = "total_rental_hours", format = "hours" },
  { label = "Top city", from = "kpis", column = "top_city", format = "text" },
  { label = "Second day", from = "daily", column = "rental_date", format = "text", row = 1 },
]

[[sections]]
title = "Revenue by city"
from = "by_city"
chart = "bar"
label = "city"
value = "total_revenue"
format = "money"

[[sections]]
title = "Daily revenue"
from = "daily"
chart = "line"
label = "rental_date"
value = "total_revenue"
format = "money"

[[sections]]
title = "Locations"
from = "locations"
chart = "table"

[[sections]]
title = "Data quality"
from = "clean"
chart = "row_counts"
"#;

/// The HTML of one tile.
fn tile(label: &str, value: &str) -> String {
    format!("<div class=\"label\">{label}</div><div class=\"value\">{value}</div>")
}

#[tokio::test]
async fn renders_the_rental_report_to_s3() {
    let lake = rental_lake();
    let output = lake.run(REPORT).await.unwrap();

    let path = lake.state().join("s3/lake/reports/rental.html");
    let html = std::fs::read_to_string(&path).unwrap();
    assert_eq!(output["report"], "s3://lake/reports/rental.html");
    let local = Path::new(output["local_path"].as_str().unwrap());
    assert!(local.is_absolute(), "{output}");
    assert_eq!(local.canonicalize().unwrap(), path.canonicalize().unwrap());
    assert_eq!(output["bytes"], html.len());

    // Tiles, from the rentals themselves.
    let rentals = rentals();
    let revenue: i64 = rentals.iter().map(|r| r.cents).sum();
    let hours: u32 = rentals.iter().map(|r| r.hours).sum();
    assert!(
        html.contains(&tile("Revenue", &money(revenue))),
        "{}\n{html}",
        money(revenue)
    );
    assert!(html.contains(&tile("Rentals", &rentals.len().to_string())));
    assert!(html.contains(&tile(
        "Rental hours",
        &format!("{}.0 h", commas(hours.into()))
    )));
    assert!(html.contains(&tile("Top city", "Fresno")));
    // The second day in date order.
    let mut days: Vec<&str> = rentals.iter().map(|r| r.day).collect();
    days.sort();
    days.dedup();
    assert!(html.contains(&tile("Second day", days[1])));

    // One chart per bar or line section (drawn for a wide screen and for
    // a phone), none for tables.
    assert_eq!(html.matches("<svg").count(), 4, "{html}");
    assert_eq!(
        html.matches("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"wide\"")
            .count(),
        2,
        "{html}"
    );
    // Every city is a bar with its revenue, and the largest comes first.
    let fresno: i64 = rentals
        .iter()
        .filter(|r| r.city == "Fresno")
        .map(|r| r.cents)
        .sum();
    let bar_chart = &html[html.find("<svg").unwrap()..html.find("</svg>").unwrap()];
    assert!(bar_chart.contains(&format!(">{}</text>", money(fresno))));
    assert!(
        bar_chart.find(">Fresno</text>").unwrap()
            < bar_chart.find(">Moreno Valley</text>").unwrap()
    );
    // The city name with markup in it is escaped, never markup.
    assert!(
        bar_chart.contains("&lt;Smith &amp; Sons&gt; &#39;Main&#39; &quot;St&quot;"),
        "{bar_chart}"
    );
    assert!(!html.contains("<Smith"));
    // The long one is cut, and whole in its tooltip.
    assert!(bar_chart.contains(
        "<title>San Buenaventura (Ventura), a city with a very long official name</title>"
    ));

    // The line chart's days.
    for day in &days {
        assert!(html.contains(day), "{day}");
    }

    // The table: identifiers as they are, counts with separators, a NULL,
    // and Athena's doubled quotes read back.
    assert!(html.contains("<td class=\"num\">8118</td>"), "{html}");
    assert!(html.contains("<td class=\"num\">1,110</td>"), "{html}");
    assert!(html.contains("<td>Fresno, &quot;CA&quot;</td>"), "{html}");
    assert!(html.contains(&format!("<td>{NULL_TEXT}</td>")));

    // Data quality: 2008 of 20080 is 10%, over the default 5%.
    assert_eq!(html.matches("<tr class=\"over\">").count(), 1);
    assert!(html.contains("<tr class=\"over\"><td>rental_transactions.csv</td>"));
    assert!(html.contains("10.00%"));

    // Nothing from the network; the SVG namespace is a name, not a fetch.
    let rest = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(!rest.contains("http://") && !rest.contains("https://"));
    assert!(!html.contains("<script"));
}

#[tokio::test]
async fn a_rerun_replaces_the_report() {
    let lake = rental_lake();
    let first = lake.run(REPORT).await.unwrap();
    let second = lake.run(REPORT).await.unwrap();
    assert_eq!(first["local_path"], second["local_path"]);
    let html = std::fs::read_to_string(second["local_path"].as_str().unwrap()).unwrap();
    assert_eq!(second["bytes"], html.len());
}

#[tokio::test]
async fn a_from_that_is_not_an_input_names_the_field_and_the_inputs() {
    let mut lake = rental_lake();
    lake.inputs.remove("daily");
    let message = lake.failure(REPORT).await;
    assert!(message.contains("`tiles[4].from`"), "{message}");
    assert!(message.contains("daily"), "{message}");
    assert!(
        message.contains("by_city, clean, kpis, locations"),
        "lists the inputs: {message}"
    );
    assert!(message.contains("depends_on"), "{message}");

    let empty = Lake::new();
    let message = empty.failure(REPORT).await;
    assert!(message.contains("no inputs"), "{message}");
}

#[tokio::test]
async fn a_missing_column_names_it_the_task_and_the_columns() {
    let lake = rental_lake();
    let message = lake
        .failure(
            r#"
output = "s3://lake/reports/r.html"
sections = [{ title = "x", from = "by_city", chart = "bar", label = "city", value = "revenue" }]
"#,
        )
        .await;
    assert!(message.contains("`sections[0].value`"), "{message}");
    assert!(message.contains("`revenue`"), "{message}");
    assert!(message.contains("`by_city`"), "{message}");
    assert!(message.contains("city, total_revenue"), "{message}");

    let message = lake
        .failure(
            r#"
output = "s3://lake/reports/r.html"
tiles = [{ label = "x", from = "kpis", column = "revenue" }]
"#,
        )
        .await;
    assert!(message.contains("`tiles[0].column`"), "{message}");
    assert!(
        message.contains("total_revenue, total_transactions"),
        "{message}"
    );
}

#[tokio::test]
async fn wrong_kinds_of_input_and_values_say_what_was_expected() {
    let lake = rental_lake();
    let message = lake
        .failure(
            r#"
output = "s3://lake/reports/r.html"
sections = [{ title = "x", from = "clean", chart = "table" }]
"#,
        )
        .await;
    assert!(message.contains("output_location"), "{message}");

    let message = lake
        .failure(
            r#"
output = "s3://lake/reports/r.html"
sections = [{ title = "x", from = "kpis", chart = "row_counts" }]
"#,
        )
        .await;
    assert!(message.contains("no `files` object"), "{message}");

    let message = lake
        .failure(
            r#"
output = "s3://lake/reports/r.html"
tiles = [{ label = "x", from = "kpis", column = "top_city" }]
"#,
        )
        .await;
    assert!(
        message.contains("`Fresno`") && message.contains("not a number"),
        "{message}"
    );

    let message = lake
        .failure(
            r#"
output = "s3://lake/reports/r.html"
tiles = [{ label = "x", from = "kpis", column = "total_revenue", row = 1 }]
"#,
        )
        .await;
    assert!(message.contains("`tiles[0].row` is 1"), "{message}");
}

#[tokio::test]
async fn limits_nulls_and_empty_results() {
    let mut lake = rental_lake();
    lake.query(
        "empty",
        &[("city", "varchar"), ("total_revenue", "double")],
        Vec::new(),
    );
    lake.query(
        "gaps",
        &[("city", "varchar"), ("total_revenue", "double")],
        vec![
            vec![some("a"), some("1.5")],
            vec![None, None],
            vec![some("c"), some("-2")],
        ],
    );
    let output = lake
        .run(
            r#"
output = "s3://lake/reports/r.html"
[[sections]]
title = "Top 2"
from = "by_city"
chart = "bar"
label = "city"
value = "total_revenue"
limit = 2
[[sections]]
title = "Nothing"
from = "empty"
chart = "bar"
label = "city"
value = "total_revenue"
[[sections]]
title = "Gaps"
from = "gaps"
chart = "bar"
label = "city"
value = "total_revenue"
"#,
        )
        .await
        .unwrap();
    let html = std::fs::read_to_string(output["local_path"].as_str().unwrap()).unwrap();
    let cities = rentals()
        .iter()
        .map(|r| r.city)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert!(
        html.contains(&format!("first 2 of {cities} rows")),
        "{html}"
    );
    assert!(html.contains("no rows"));
    assert!(
        html.contains("1 row with a NULL `total_revenue` left out"),
        "{html}"
    );
    assert!(html.contains("class=\"bar neg\""));
    // Two charts, each for a wide screen and for a phone.
    assert_eq!(html.matches("<svg").count(), 4);
}

#[test]
fn parses_the_fields() {
    let fields = fields(REPORT);
    Report.parse(&fields).unwrap();
    assert!(engine::kind::unknown_fields(&Report, &fields).is_empty());
}

#[test]
fn refuses_bad_fields_at_parse_time() {
    let cases = [
        (
            "output = \"reports/r.html\"\ntiles = []\nsections = []",
            "output",
            "not an s3:// URI",
        ),
        ("output = \"s3://lake/reports/r.pdf\"", "output", ".html"),
        (
            "output = \"s3://lake/r.html\"\nsections = [{ title = \"x\", from = \"a\", chart = \"pie\" }]",
            "sections",
            "`sections[0].chart` `pie`",
        ),
        (
            "output = \"s3://lake/r.html\"\nsections = [{ title = \"x\", from = \"a\", chart = \"bar\", label = \"c\" }]",
            "sections",
            "needs `label` and `value`",
        ),
        (
            "output = \"s3://lake/r.html\"\nsections = [{ title = \"x\", from = \"a\", chart = \"table\", value = \"c\" }]",
            "sections",
            "for bar and line charts",
        ),
        (
            "output = \"s3://lake/r.html\"\nsections = [{ title = \"x\", from = \"a\", chart = \"table\", limit = 0 }]",
            "sections",
            "at least 1",
        ),
        (
            "output = \"s3://lake/r.html\"\nsections = [{ title = \"x\", from = \"a\", chart = \"row_counts\", limit = 3 }]",
            "sections",
            "`limit` does not apply",
        ),
        (
            "output = \"s3://lake/r.html\"\nsections = [{ title = \"x\", from = \"a\", chart = \"bar\", label = \"c\", value = \"v\", format = \"text\" }]",
            "sections",
            "`sections[0].format` `text`",
        ),
        (
            "output = \"s3://lake/r.html\"\ntiles = [{ label = \"x\", from = \"a\", column = \"c\", format = \"euros\" }]",
            "tiles",
            "`tiles[0].format` `euros`",
        ),
        (
            "output = \"s3://lake/r.html\"\ntiles = [{ label = \"x\", from = \"a\", column = \"c\", colour = \"red\" }]",
            "tiles",
            "unknown field `colour`",
        ),
        (
            "output = \"s3://lake/r.html\"\ntiles = [{ label = \"x\", from = \"a\" }]",
            "tiles",
            "missing field `column`",
        ),
        (
            "output = \"s3://lake/r.html\"\ntiles = [{ label = \"x\", from = \"a b\", column = \"c\" }]",
            "tiles",
            "not a task id",
        ),
        (
            "output = \"s3://lake/r.html\"\ntiles = [{ label = \"x\", from = \"a\", column = \"c\", row = -1 }]",
            "tiles",
            "rows count from 0",
        ),
        (
            "output = \"s3://lake/r.html\"\nquarantine_threshold = 5\ntiles = [{ label = \"x\", from = \"a\", column = \"c\" }]",
            "quarantine_threshold",
            "between 0 and 1",
        ),
        (
            "output = \"s3://lake/r.html\"\nquarantine_threshold = \"five percent\"\ntiles = [{ label = \"x\", from = \"a\", column = \"c\" }]",
            "quarantine_threshold",
            "must be a number",
        ),
        (
            "output = \"s3://lake/r.html\"",
            "sections",
            "at least one tile or section",
        ),
    ];
    for (toml, field, message) in cases {
        let error = parse_err(toml);
        assert_eq!(error.field.as_deref(), Some(field), "{toml}: {error:?}");
        assert!(error.message.contains(message), "{toml}: {error:?}");
        assert!(error.help.is_some(), "{toml}: {error:?}");
    }
    let missing = parse_err("tiles = []");
    assert!(missing.message.contains("missing field `output`"));
}

#[test]
fn the_threshold_may_come_from_a_parameter_as_text() {
    let spec = |threshold: &str| {
        let fields = fields(&format!(
            "output = 's3://lake/r.html'\nsections = [{{ title = 'q', from = 'clean', chart = 'row_counts' }}]\nquarantine_threshold = {threshold}"
        ));
        Report.parse(&fields).map(|_| ())
    };
    spec("0.1").unwrap();
    spec("\"0.1\"").unwrap();
    spec("0").unwrap();
    assert!(spec("\"1.5\"").is_err());
}

#[tokio::test]
async fn a_lower_threshold_highlights_more_files() {
    let lake = rental_lake();
    let output = lake
        .run(
            r#"
output = "s3://lake/reports/q.html"
quarantine_threshold = "0.2"
sections = [{ title = "q", from = "clean", chart = "row_counts" }]
"#,
        )
        .await
        .unwrap();
    let html = std::fs::read_to_string(output["local_path"].as_str().unwrap()).unwrap();
    // 10% is under a 20% threshold.
    assert_eq!(html.matches("<tr class=\"over\">").count(), 0, "{html}");
    assert!(html.contains("20.00%"));
}

#[test]
fn every_field_is_asked_for_before_an_error() {
    let fields = fields(
        "title = 't'\noutput = 'nope'\ntiles = []\nsections = []\nquarantine_threshold = 0.1",
    );
    assert!(Report.parse(&fields).is_err());
    assert!(engine::kind::unknown_fields(&Report, &fields).is_empty());
}

#[test]
fn the_kind_is_registered() {
    let registry = crate::registry();
    let kind = registry.get("report").expect("report is registered");
    assert_eq!(
        kind.summary(),
        "renders a self-contained HTML report from query results"
    );
}

/// `bucket = "week"`: daily values summed per Monday-to-Sunday week,
/// labelled by the Monday, partial weeks named; the `about` lines shown
/// under the title; a label that is not a date is an error naming the
/// section.
#[tokio::test]
async fn weekly_buckets_and_the_about_lines() {
    let mut lake = rental_lake();
    // 2024-01-01 is a Monday. Week 1: 7 days of 10; week 2: 7 days, one
    // of them NULL, the others 1; week 3: 2 days (5 + 6).
    let mut rows = Vec::new();
    for day in 1..=7 {
        rows.push(vec![some(format!("2024-01-{day:02}")), some("10")]);
    }
    for day in 8..=14 {
        let value = if day == 10 { None } else { some("1") };
        rows.push(vec![some(format!("2024-01-{day:02}")), value]);
    }
    rows.push(vec![some("2024-01-15"), some("5")]);
    rows.push(vec![some("2024-01-16"), some("6")]);
    lake.query(
        "days",
        &[("rental_date", "varchar"), ("total_revenue", "double")],
        rows,
    );
    lake.query(
        "not_dates",
        &[("rental_date", "varchar"), ("total_revenue", "double")],
        vec![vec![some("Fresno"), some("1")]],
    );
    let output = lake
        .run(
            r#"
output = "s3://lake/reports/r.html"
about = [{ label = "Amounts in", value = "USD" }]
[[sections]]
title = "Weekly"
from = "days"
chart = "line"
label = "rental_date"
value = "total_revenue"
bucket = "week"
"#,
        )
        .await
        .unwrap();
    let html = std::fs::read_to_string(output["local_path"].as_str().unwrap()).unwrap();
    assert!(
        html.contains("<tr><th scope=\"row\">Amounts in</th><td>USD</td></tr>"),
        "{html}"
    );
    // Three points: 70, 6 and 11, each week by its Monday.
    for (monday, sum) in [
        ("2024-01-01", "70"),
        ("2024-01-08", "6"),
        ("2024-01-15", "11"),
    ] {
        assert!(
            html.contains(&format!("<title>{monday}: {sum}</title>")),
            "{monday} {sum}: {html}"
        );
    }
    assert_eq!(
        html.matches("<circle").count(),
        3 * 2,
        "three points, two frames"
    );
    assert!(
        html.contains("a week with fewer than 7 days of data: 2024-01-15 (2 days)"),
        "{html}"
    );

    let message = lake
        .failure(
            r#"
output = "s3://lake/reports/r.html"
sections = [{ title = "W", from = "not_dates", chart = "line", label = "rental_date", value = "total_revenue", bucket = "week" }]
"#,
        )
        .await;
    assert!(
        message.contains("`sections[0].bucket = \"week\"`") && message.contains("`Fresno`"),
        "{message}"
    );
    let refused = parse_err(
        r#"
output = "s3://lake/reports/r.html"
sections = [{ title = "W", from = "days", chart = "bar", label = "rental_date", value = "total_revenue", bucket = "week" }]
"#,
    );
    assert!(refused.to_string().contains("for line charts"), "{refused}");
}
