//! The rental pipeline (`dags/rental.toml`) end to end, through the real
//! binary: Spark, the crawler, DataFusion queries and the report.
//!
//! Every expected value is computed here from the input CSV files with
//! plain Rust (the `csv` crate and integer arithmetic), never copied from
//! the pipeline's output. The run on the reference data is shared by the
//! tests that read it (one Spark run); the dirty-data, missing-column and
//! crash tests each run the pipeline on a copy of the shipped sample.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use common::{flux, show, spawn, tasks_by_id, wait_until};

const BUCKET: &str = "flux-rental";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dag() -> String {
    repo().join("dags/rental.toml").display().to_string()
}

fn sample_dir() -> PathBuf {
    repo().join("dags/data/rental-sample")
}

/// `../shared/data/rental`, or `$FLUX_RENTAL_DATA`.
fn reference_dir() -> PathBuf {
    std::env::var_os("FLUX_RENTAL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/data/rental"))
}

fn text(output: &Output) -> String {
    format!(
        "exit {}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

// ---------------------------------------------------------------------
// The independent computation
// ---------------------------------------------------------------------

/// Reads a CSV file with a header into maps of column -> value.
fn read_csv(path: &Path) -> Vec<HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            header
                .iter()
                .cloned()
                .zip(r.iter().map(str::to_string))
                .collect()
        })
        .collect()
}

/// Amounts in the data have at most two decimals: summing cents keeps the
/// expected totals exact.
fn cents(amount: &str) -> i64 {
    let value: f64 = amount
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("amount {amount:?}: {e}"));
    (value * 100.0).round() as i64
}

fn seconds_of(ts: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%S")
        .unwrap_or_else(|e| panic!("timestamp {ts:?}: {e}"))
        .and_utc()
        .timestamp()
}

/// The KPIs of a clean set of four files.
#[derive(Debug)]
struct Kpis {
    revenue_cents: i64,
    rentals: usize,
    active_users: usize,
    rental_seconds: i64,
    /// (vehicle_id, revenue cents), best first, ties by id.
    vehicles: Vec<(String, i64)>,
    /// (location_id, location_name, revenue cents), best first, ties by id.
    locations: Vec<(i64, String, i64)>,
    /// vehicle_type -> revenue cents.
    by_type: BTreeMap<String, i64>,
    /// rental date (YYYY-MM-DD of the start) -> (revenue cents, rentals).
    daily: BTreeMap<String, (i64, usize)>,
    months: BTreeSet<String>,
    lines: BTreeMap<&'static str, usize>,
}

impl Kpis {
    fn of(dir: &Path) -> Kpis {
        let rentals = read_csv(&dir.join("rental_transactions.csv"));
        let vehicles = read_csv(&dir.join("vehicles.csv"));
        let locations = read_csv(&dir.join("locations.csv"));
        let users = read_csv(&dir.join("users.csv"));
        let vehicle_type: HashMap<&str, &str> = vehicles
            .iter()
            .map(|v| (v["vehicle_id"].as_str(), v["vehicle_type"].as_str()))
            .collect();
        let location_name: HashMap<i64, &str> = locations
            .iter()
            .map(|l| {
                (
                    l["location_id"].parse().unwrap(),
                    l["location_name"].as_str(),
                )
            })
            .collect();
        let mut per_vehicle: HashMap<String, i64> = HashMap::new();
        let mut per_location: HashMap<i64, i64> = HashMap::new();
        let mut by_type = BTreeMap::new();
        let mut daily: BTreeMap<String, (i64, usize)> = BTreeMap::new();
        let mut months = BTreeSet::new();
        let mut users_seen = BTreeSet::new();
        let (mut revenue_cents, mut rental_seconds) = (0, 0);
        for r in &rentals {
            let amount = cents(&r["total_amount"]);
            revenue_cents += amount;
            rental_seconds +=
                seconds_of(&r["rental_end_time"]) - seconds_of(&r["rental_start_time"]);
            users_seen.insert(r["user_id"].clone());
            *per_vehicle.entry(r["vehicle_id"].clone()).or_default() += amount;
            *per_location
                .entry(r["pickup_location"].parse().unwrap())
                .or_default() += amount;
            *by_type
                .entry(vehicle_type[r["vehicle_id"].as_str()].to_string())
                .or_default() += amount;
            let day = daily
                .entry(r["rental_start_time"][..10].to_string())
                .or_default();
            day.0 += amount;
            day.1 += 1;
            months.insert(r["rental_start_time"][..7].to_string());
        }
        let mut vehicles_ranked: Vec<(String, i64)> = per_vehicle.into_iter().collect();
        vehicles_ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut locations_ranked: Vec<(i64, String, i64)> = per_location
            .into_iter()
            .map(|(id, c)| (id, location_name[&id].to_string(), c))
            .collect();
        locations_ranked.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        let line_count = |name: &str| read_csv(&dir.join(name)).len();
        Kpis {
            revenue_cents,
            rentals: rentals.len(),
            active_users: users_seen.len(),
            rental_seconds,
            vehicles: vehicles_ranked,
            locations: locations_ranked,
            by_type,
            daily,
            months,
            lines: BTreeMap::from([
                ("locations.csv", locations.len()),
                ("users.csv", users.len()),
                ("vehicles.csv", vehicles.len()),
                (
                    "rental_transactions.csv",
                    line_count("rental_transactions.csv"),
                ),
            ]),
        }
    }
}

// ---------------------------------------------------------------------
// Reading what a run produced
// ---------------------------------------------------------------------

struct Run {
    state: PathBuf,
    run_id: String,
    output: Output,
    tasks: BTreeMap<String, serde_json::Value>,
}

impl Run {
    fn start(state: &Path, input_dir: &Path) -> Run {
        let output = flux(
            state,
            &[
                "run",
                &dag(),
                "--param",
                &format!("input_dir={}", input_dir.display()),
            ],
        );
        Run::read(state, output)
    }

    fn read(state: &Path, output: Output) -> Run {
        let runs = common::runs(state);
        let run_id = runs
            .first()
            .and_then(|r| r["run_id"].as_str())
            .unwrap_or_else(|| panic!("no run recorded\n{}", text(&output)))
            .to_string();
        let tasks = tasks_by_id(&show(state, &run_id));
        Run {
            state: state.to_path_buf(),
            run_id,
            output,
            tasks,
        }
    }

    fn assert_succeeded(&self) {
        assert!(
            self.output.status.success(),
            "the rental pipeline failed\n{}",
            text(&self.output)
        );
    }

    fn local(&self, uri: &str) -> PathBuf {
        let key = uri.strip_prefix("s3://").expect("an s3:// URI");
        self.state.join("s3").join(key)
    }

    /// The rows of a query task's result CSV, by column name.
    fn query_rows(&self, task: &str) -> Vec<HashMap<String, String>> {
        let uri = self.tasks[task]["output"]["output_location"]
            .as_str()
            .unwrap_or_else(|| panic!("task {task} has no output_location: {}", self.tasks[task]));
        read_csv(&self.local(uri))
    }

    fn cli(&self, args: &[&str]) -> String {
        let output = flux(&self.state, args);
        assert!(output.status.success(), "{args:?}\n{}", text(&output));
        String::from_utf8_lossy(&output.stdout).to_string()
    }
}

fn number(row: &HashMap<String, String>, column: &str) -> f64 {
    row.get(column)
        .unwrap_or_else(|| panic!("no column {column} in {row:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{column} = {:?}: {e}", row[column]))
}

fn assert_money(actual: f64, expected_cents: i64, what: &str) {
    assert!(
        (actual * 100.0 - expected_cents as f64).abs() < 0.5,
        "{what}: got {actual}, expected {}",
        expected_cents as f64 / 100.0
    );
}

/// Checks every query result against KPIs computed from the inputs.
fn assert_kpis(run: &Run, kpis: &Kpis) {
    let summary = &run.query_rows("summary")[0];
    assert_money(
        number(summary, "total_revenue"),
        kpis.revenue_cents,
        "total revenue",
    );
    assert_eq!(number(summary, "total_rentals") as usize, kpis.rentals);
    assert_eq!(number(summary, "active_users") as usize, kpis.active_users);
    let avg_hours = kpis.rental_seconds as f64 / 3600.0 / kpis.rentals as f64;
    assert!((number(summary, "avg_rental_hours") - avg_hours).abs() < 1e-9);

    let top: Vec<(String, f64)> = run
        .query_rows("top_vehicles")
        .iter()
        .map(|r| (r["vehicle_id"].clone(), number(r, "total_revenue")))
        .collect();
    assert_eq!(top.len(), 10.min(kpis.vehicles.len()));
    for ((id, revenue), (want_id, want_cents)) in top.iter().zip(&kpis.vehicles) {
        assert_eq!(id, want_id, "top vehicles: got {top:?}");
        assert_money(*revenue, *want_cents, &format!("revenue of vehicle {id}"));
    }

    let top: Vec<(i64, String, f64)> = run
        .query_rows("top_locations")
        .iter()
        .map(|r| {
            (
                number(r, "location_id") as i64,
                r["location_name"].clone(),
                number(r, "total_revenue"),
            )
        })
        .collect();
    assert_eq!(top.len(), 10.min(kpis.locations.len()));
    for ((id, name, revenue), (want_id, want_name, want_cents)) in top.iter().zip(&kpis.locations) {
        assert_eq!(
            (id, name),
            (want_id, want_name),
            "top locations: got {top:?}"
        );
        assert_money(*revenue, *want_cents, &format!("revenue of location {id}"));
    }

    let by_type: BTreeMap<String, f64> = run
        .query_rows("revenue_by_vehicle_type")
        .iter()
        .map(|r| (r["vehicle_type"].clone(), number(r, "total_revenue")))
        .collect();
    assert_eq!(
        by_type.keys().collect::<Vec<_>>(),
        kpis.by_type.keys().collect::<Vec<_>>()
    );
    for (t, cents) in &kpis.by_type {
        assert_money(by_type[t], *cents, &format!("revenue of type {t}"));
    }

    let daily = run.query_rows("daily_trend");
    assert_eq!(daily.len(), kpis.daily.len(), "days in the trend");
    for row in &daily {
        let (cents, n) = kpis.daily[&row["rental_date"]];
        assert_money(number(row, "total_revenue"), cents, &row["rental_date"]);
        assert_eq!(number(row, "total_transactions") as usize, n);
    }
}

// ---------------------------------------------------------------------
// The reference data: one run shared by several tests
// ---------------------------------------------------------------------

struct Reference {
    run: Run,
    kpis: Kpis,
    _state: tempfile::TempDir,
}

fn reference() -> Option<&'static Reference> {
    static RUN: OnceLock<Option<Reference>> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = reference_dir();
        if !dir.join("rental_transactions.csv").is_file() {
            eprintln!(
                "SKIPPED: the reference data is not at {} (set FLUX_RENTAL_DATA)",
                dir.display()
            );
            return None;
        }
        let state = tempfile::tempdir().unwrap();
        let run = Run::start(state.path(), &dir);
        Some(Reference {
            kpis: Kpis::of(&dir),
            run,
            _state: state,
        })
    })
    .as_ref()
}

#[test]
fn reference_data_kpis_match_an_independent_computation() {
    let Some(reference) = reference() else { return };
    reference.run.assert_succeeded();
    let kpis = &reference.kpis;
    // The README's facts, recomputed: a check of the computation itself.
    assert_eq!(kpis.rentals, 20_080);
    assert_eq!(kpis.revenue_cents, 1_620_062_000);
    assert_kpis(&reference.run, kpis);
}

#[test]
fn reference_data_rows_are_all_clean_and_shown() {
    let Some(reference) = reference() else { return };
    reference.run.assert_succeeded();
    let counts = &reference.run.tasks["clean"]["output"]["files"];
    for (file, lines) in &reference.kpis.lines {
        let c = &counts[*file];
        assert_eq!(c["read"].as_u64(), Some(*lines as u64), "{file}: {counts}");
        assert_eq!(c["clean"].as_u64(), Some(*lines as u64), "{file}");
        assert_eq!(c["quarantined"].as_u64(), Some(0), "{file}");
    }
    let shown = reference.run.cli(&["show", &reference.run.run_id]);
    for (file, lines) in &reference.kpis.lines {
        let row = shown
            .lines()
            .find(|l| l.starts_with(file))
            .unwrap_or_else(|| panic!("show lists no row for {file}:\n{shown}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells[1..4],
            [lines.to_string(), lines.to_string(), "0".to_string()],
            "{row}"
        );
    }
}

#[test]
fn reference_data_catalog_query_and_report() {
    let Some(reference) = reference() else { return };
    let run = &reference.run;
    run.assert_succeeded();

    let catalog: serde_json::Value =
        serde_json::from_str(&run.cli(&["catalog", "--database", "rental", "--format", "json"]))
            .expect("catalog --format json");
    let text = catalog.to_string();
    for table in [
        "location_performance",
        "vehicle_type_performance",
        "vehicle_performance",
        "daily_metrics",
        "user_metrics",
        "rentals_clean",
        "quarantine",
        "locations",
        "users",
        "vehicles",
    ] {
        assert!(
            text.contains(&format!("\"{table}\"")),
            "catalog lacks {table}: {text}"
        );
    }

    let csv = run.cli(&[
        "query",
        "--database",
        "rental",
        "--format",
        "csv",
        "SELECT rental_month, COUNT(*) AS n FROM rentals_clean GROUP BY rental_month ORDER BY rental_month",
    ]);
    let months: Vec<String> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().trim_matches('"').to_string())
        .collect();
    assert_eq!(
        months,
        reference.kpis.months.iter().cloned().collect::<Vec<_>>(),
        "{csv}"
    );

    // The run's last lines say where the report is, and it is self-contained.
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    let report_uri = run.tasks["report"]["output"]["report"].as_str().unwrap();
    let path = run.local(report_uri);
    assert!(
        stdout.contains(&path.display().to_string()),
        "the run does not print the report's path {}:\n{stdout}",
        path.display()
    );
    let html = std::fs::read_to_string(&path).unwrap();
    let without_ns = html.replace("http://www.w3.org/2000/svg", "");
    assert!(!without_ns.contains("http://") && !without_ns.contains("https://"));
    assert!(html.matches("<svg").count() >= 4, "charts missing");
    // Revenue 16,200,620 (computed above), as the tile prints money.
    let revenue = reference.kpis.revenue_cents / 100;
    let grouped = format!(
        "{},{:03},{:03}",
        revenue / 1_000_000,
        revenue / 1000 % 1000,
        revenue % 1000
    );
    assert!(
        html.contains(&grouped),
        "the report does not show revenue {grouped}"
    );
    for (name, _) in reference.kpis.by_type.iter() {
        assert!(
            html.contains(name.as_str()),
            "the report lacks vehicle type {name}"
        );
    }
}

/// The report and the trace page of the reference run, as a person sees
/// them: in headless Chromium on a desktop (1280 px) and a phone (390 px),
/// nothing wider than the screen and no text drawn below 10 px (a chart
/// made for 720 px and scaled to a phone drew its labels at 6 px).
/// Screenshots: `target/tmp/pages/`.
#[test]
fn the_report_and_the_trace_page_read_on_a_phone_and_a_desktop() {
    let Some(reference) = reference() else { return };
    let run = &reference.run;
    run.assert_succeeded();
    let report = run.local(run.tasks["report"]["output"]["report"].as_str().unwrap());
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pages");
    std::fs::create_dir_all(&shots).unwrap();
    let trace_page = shots.join("trace.html");
    run.cli(&["trace", &run.run_id, "--html", trace_page.to_str().unwrap()]);
    let Some(results) = common::check_in_browser(&[&report, &trace_page], &shots) else {
        return;
    };
    let problems: Vec<String> = results.iter().flat_map(common::page_problems).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------
// Dirty data
// ---------------------------------------------------------------------

fn copy_sample(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for file in [
        "locations.csv",
        "users.csv",
        "vehicles.csv",
        "rental_transactions.csv",
    ] {
        std::fs::copy(sample_dir().join(file), to.join(file)).unwrap();
    }
}

fn append(path: &Path, lines: &[String]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    for line in lines {
        writeln!(f, "{line}").unwrap();
    }
}

#[test]
fn dirty_rows_are_quarantined_with_reasons_and_clean_kpis_hold() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("input");
    copy_sample(&input);
    let clean_kpis = Kpis::of(&input);

    let rentals = read_csv(&input.join("rental_transactions.csv"));
    let first = &rentals[0];
    let user = first["user_id"].clone();
    let vehicle = first["vehicle_id"].clone();
    let location = first["pickup_location"].clone();
    // Appended lines only, so the clean rows stay exactly the original ones
    // and every KPI must come out as computed from the untouched sample.
    let line =
        |id: &str, u: &str, v: &str, start: &str, end: &str, p: &str, d: &str, amount: &str| {
            format!("{id},{u},{v},{start},{end},{p},{d},{amount}")
        };
    let (s, e) = ("2024-03-01 10:00:00", "2024-03-01 12:00:00");
    let bad_transactions = [
        (
            line(
                "dirty00001",
                "",
                &vehicle,
                s,
                e,
                &location,
                &location,
                "20.0",
            ),
            "missing_field",
        ),
        (
            line(
                "dirty00002",
                &user,
                &vehicle,
                s,
                e,
                &location,
                &location,
                "-5.0",
            ),
            "negative_amount",
        ),
        (
            line(
                "dirty00003",
                &user,
                &vehicle,
                s,
                e,
                &location,
                &location,
                "twenty",
            ),
            "bad_amount",
        ),
        (
            line(
                "dirty00004",
                &user,
                &vehicle,
                "2024-13-45 99:00:00",
                e,
                &location,
                &location,
                "20.0",
            ),
            "bad_timestamp",
        ),
        (
            line(
                "dirty00005",
                &user,
                &vehicle,
                e,
                s,
                &location,
                &location,
                "20.0",
            ),
            "end_before_start",
        ),
        (
            line(
                "dirty00006",
                "nosuchuser",
                &vehicle,
                s,
                e,
                &location,
                &location,
                "20.0",
            ),
            "unknown_user",
        ),
        (
            line(
                "dirty00007",
                &user,
                "nosuchcar0",
                s,
                e,
                &location,
                &location,
                "20.0",
            ),
            "unknown_vehicle",
        ),
        (
            line(
                "dirty00008",
                &user,
                &vehicle,
                s,
                e,
                "999999",
                &location,
                "20.0",
            ),
            "unknown_pickup_location",
        ),
        (
            line(
                "dirty00009",
                &user,
                &vehicle,
                s,
                e,
                &location,
                "999999",
                "20.0",
            ),
            "unknown_dropoff_location",
        ),
        // A later copy of an existing rental: the first one stays.
        (
            line(
                &first["rental_id"],
                &user,
                &vehicle,
                s,
                e,
                &location,
                &location,
                "999.0",
            ),
            "duplicate_key",
        ),
        (format!("dirty00011,{user},{vehicle},{s}"), "ragged_line"),
        // A quote that never closes: the line cannot be parsed at all.
        (
            format!("dirty00012,\"{user},{vehicle},{s},{e},{location},{location},20.0"),
            "unparseable_line",
        ),
    ];
    append(
        &input.join("rental_transactions.csv"),
        &bad_transactions
            .iter()
            .map(|(l, _)| l.clone())
            .collect::<Vec<_>>(),
    );
    let users = read_csv(&input.join("users.csv"));
    append(
        &input.join("users.csv"),
        &[
            format!(
                "{},Dup,Later,d@example.com,555,DL0,2030-01-01,2024-01-01,1",
                users[0]["user_id"]
            ),
            ",No,Key,n@example.com,555,DL1,2030-01-01,2024-01-01,1".to_string(),
        ],
    );
    let locations = read_csv(&input.join("locations.csv"));
    append(
        &input.join("locations.csv"),
        &[
            format!(
                "{},\"Dup, Later\",1 Main St,Fresno,CA,93650,36.7,-119.7",
                locations[0]["location_id"]
            ),
            ",\"No Key\",1 Main St,Fresno,CA,93650,36.7,-119.7".to_string(),
        ],
    );
    // vehicles.csv: a later duplicate of the first vehicle, and one without
    // a vehicle_id; the other columns copied from the first vehicle.
    let vehicles_path = input.join("vehicles.csv");
    let mut reader = csv::Reader::from_path(&vehicles_path).unwrap();
    let header = reader.headers().unwrap().clone();
    let first_vehicle = reader.records().next().unwrap().unwrap();
    let id_column = header.iter().position(|h| h == "vehicle_id").unwrap();
    let vehicle_line = |id: &str| -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(
            first_vehicle
                .iter()
                .enumerate()
                .map(|(i, v)| if i == id_column { id } else { v }),
        )
        .unwrap();
        String::from_utf8(w.into_inner().unwrap())
            .unwrap()
            .trim_end()
            .to_string()
    };
    append(
        &vehicles_path,
        &[vehicle_line(&first_vehicle[id_column]), vehicle_line("")],
    );

    let state = work.path().join("state");
    let run = Run::start(&state, &input);
    run.assert_succeeded();

    let counts = &run.tasks["clean"]["output"];
    let expect_file = |file: &str, read: usize, quarantined: usize| {
        let c = &counts["files"][file];
        assert_eq!(
            (
                c["read"].as_u64(),
                c["clean"].as_u64(),
                c["quarantined"].as_u64()
            ),
            (
                Some(read as u64),
                Some((read - quarantined) as u64),
                Some(quarantined as u64)
            ),
            "{file}: {counts}"
        );
    };
    let lines = &clean_kpis.lines;
    expect_file(
        "rental_transactions.csv",
        lines["rental_transactions.csv"] + bad_transactions.len(),
        bad_transactions.len(),
    );
    expect_file("users.csv", lines["users.csv"] + 2, 2);
    expect_file("locations.csv", lines["locations.csv"] + 2, 2);
    expect_file("vehicles.csv", lines["vehicles.csv"] + 2, 2);

    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for (_, reason) in &bad_transactions {
        *expected.entry(reason.to_string()).or_default() += 1;
    }
    assert_eq!(
        serde_json::to_value(&expected).unwrap(),
        counts["quarantine_reasons_by_file"]["rental_transactions.csv"]
    );
    for file in ["users.csv", "vehicles.csv", "locations.csv"] {
        assert_eq!(
            counts["quarantine_reasons_by_file"][file],
            serde_json::json!({"duplicate_key": 1, "missing_key": 1}),
            "{file}"
        );
    }

    // The quarantine table holds the original lines with their reasons.
    let csv = run.cli(&[
        "query",
        "--database",
        "rental",
        "--format",
        "csv",
        "SELECT reason, record FROM quarantine WHERE dataset = 'rental_transactions.csv' ORDER BY record",
    ]);
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let mut got: Vec<(String, String)> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[1].to_string(), r[0].to_string())
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = bad_transactions
        .iter()
        .map(|(l, r)| (l.clone(), r.to_string()))
        .collect();
    want.sort();
    assert_eq!(got, want);

    assert_kpis(&run, &clean_kpis);
}

/// `sample-data --dirty 0.05`: the clean lines are the ones the same seed
/// gives without `--dirty`, every kind of bad line is there, and the
/// cleaning job quarantines exactly the lines dirty_rows.csv lists, with
/// the reason it gives; `show`, the counts and the report agree, and the
/// KPIs are those of the clean files.
#[test]
fn sample_data_dirty_rows_are_quarantined_line_for_line() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let (input, plain) = (work.path().join("input"), work.path().join("plain"));
    for (dir, dirty) in [(&input, true), (&plain, false)] {
        let mut args = vec!["sample-data", "--out", dir.to_str().unwrap()];
        if dirty {
            args.extend(["--dirty", "0.05"]);
        }
        let made = flux(&work.path().join("gen"), &args);
        assert!(made.status.success(), "{}", text(&made));
    }
    let manifest = read_csv(&input.join("dirty_rows.csv"));
    let files = [
        "locations.csv",
        "users.csv",
        "vehicles.csv",
        "rental_transactions.csv",
    ];
    let mut listed: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    let mut bad_lines: BTreeSet<(String, u64)> = BTreeSet::new();
    for row in &manifest {
        let file = files
            .iter()
            .find(|f| **f == row["file"])
            .unwrap_or_else(|| panic!("{row:?}"));
        *listed
            .entry(file)
            .or_default()
            .entry(row["reason"].clone())
            .or_default() += 1;
        bad_lines.insert((row["file"].clone(), row["line_number"].parse().unwrap()));
    }
    // Every reason of the cleaning rules that applies to a file.
    let every = |extra: &[&str]| -> BTreeSet<String> {
        [
            "control_character",
            "unparseable_line",
            "ragged_line",
            "duplicate_key",
        ]
        .iter()
        .chain(extra)
        .map(|r| r.to_string())
        .collect()
    };
    let kinds = |file: &str| listed[file].keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(
        kinds("locations.csv"),
        every(&["missing_key", "bad_key", "bad_value"])
    );
    assert_eq!(kinds("users.csv"), every(&["missing_key", "bad_value"]));
    assert_eq!(kinds("vehicles.csv"), every(&["missing_key", "bad_value"]));
    assert_eq!(
        kinds("rental_transactions.csv"),
        every(&[
            "missing_field",
            "bad_timestamp",
            "bad_location_id",
            "bad_amount",
            "negative_amount",
            "end_before_start",
            "unknown_user",
            "unknown_vehicle",
            "unknown_pickup_location",
            "unknown_dropoff_location",
        ])
    );
    // Without the listed lines, each file is the plain one, byte for byte,
    // and the bad share stays within the clean job's default gate (0.05).
    let mut read: BTreeMap<&str, u64> = BTreeMap::new();
    for file in files {
        let dirty = std::fs::read(input.join(file)).unwrap();
        let kept: Vec<&[u8]> = dirty
            .split_inclusive(|b| *b == b'\n')
            .enumerate()
            .filter(|(i, _)| !bad_lines.contains(&(file.to_string(), *i as u64 + 1)))
            .map(|(_, line)| line)
            .collect();
        assert_eq!(
            kept.concat(),
            std::fs::read(plain.join(file)).unwrap(),
            "{file}"
        );
        let data_lines = dirty.split_inclusive(|b| *b == b'\n').count() as u64 - 1;
        let bad: u64 = listed[file].values().sum();
        assert!(
            bad as f64 / data_lines as f64 <= 0.05,
            "{file}: {bad} of {data_lines}"
        );
        read.insert(file, data_lines);
    }

    let run = Run::start(&state, &input);
    run.assert_succeeded();
    let counts = &run.tasks["clean"]["output"];
    for file in files {
        let bad: u64 = listed[file].values().sum();
        let c = &counts["files"][file];
        assert_eq!(
            (
                c["read"].as_u64(),
                c["quarantined"].as_u64(),
                c["clean"].as_u64()
            ),
            (Some(read[file]), Some(bad), Some(read[file] - bad)),
            "{file}: {counts}"
        );
        assert_eq!(
            counts["quarantine_reasons_by_file"][file],
            serde_json::to_value(&listed[file]).unwrap(),
            "{file}"
        );
    }
    // Line for line.
    let csv = run.cli(&[
        "query",
        "--format",
        "csv",
        "SELECT dataset, line_number, reason FROM quarantine",
    ]);
    let mut got: Vec<(String, u64, String)> = csv::Reader::from_reader(csv.as_bytes())
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_string(), r[1].parse().unwrap(), r[2].to_string())
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, u64, String)> = manifest
        .iter()
        .map(|r| {
            (
                r["file"].clone(),
                r["line_number"].parse().unwrap(),
                r["reason"].clone(),
            )
        })
        .collect();
    want.sort();
    assert_eq!(got, want);

    // `show` prints read, clean and quarantined per file.
    let shown = run.cli(&["show", &run.run_id]);
    for file in files {
        let bad: u64 = listed[file].values().sum();
        let row = shown
            .lines()
            .find(|l| l.trim_start().starts_with(file))
            .unwrap_or_else(|| panic!("show lists no row for {file}:\n{shown}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells[1..4],
            [
                read[file].to_string(),
                (read[file] - bad).to_string(),
                bad.to_string()
            ],
            "{row}"
        );
    }
    // The report's quality table names every reason with its count.
    let report = std::fs::read_to_string(
        run.local(run.tasks["report"]["output"]["report"].as_str().unwrap()),
    )
    .unwrap();
    for reasons in listed.values() {
        for (reason, n) in reasons {
            assert!(
                report.contains(&format!("{reason} {n}"))
                    || report.contains(&format!("{reason}: {n}")),
                "the report does not say {reason} {n}"
            );
        }
    }
    assert_kpis(&run, &Kpis::of(&plain));
}

#[test]
fn a_missing_required_column_fails_before_anything_is_published() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("input");
    copy_sample(&input);
    // Drop the `brand` column from vehicles.csv (header and rows).
    let path = input.join("vehicles.csv");
    let mut reader = csv::Reader::from_path(&path).unwrap();
    let header = reader.headers().unwrap().clone();
    let brand = header.iter().position(|h| h == "brand").unwrap();
    let mut writer = csv::Writer::from_path(work.path().join("v.csv")).unwrap();
    let keep = |r: &csv::StringRecord| -> Vec<String> {
        r.iter()
            .enumerate()
            .filter(|(i, _)| *i != brand)
            .map(|(_, c)| c.to_string())
            .collect()
    };
    writer.write_record(keep(&header)).unwrap();
    for r in reader.records() {
        writer.write_record(keep(&r.unwrap())).unwrap();
    }
    writer.flush().unwrap();
    drop(writer);
    std::fs::rename(work.path().join("v.csv"), &path).unwrap();

    let state = work.path().join("state");
    let run = Run::start(&state, &input);
    assert_eq!(run.output.status.code(), Some(1), "{}", text(&run.output));
    let error = run.tasks["clean"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("vehicles.csv") && error.contains("brand"),
        "the error does not name the file and the column: {error}"
    );
    let processed = state.join("s3").join(BUCKET).join("processed");
    let published: Vec<String> = std::fs::read_dir(&processed)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    assert!(published.is_empty(), "processed/ holds {published:?}");
    assert_eq!(
        run.tasks["crawl"]["status"], "upstream_failed",
        "{}",
        run.tasks["crawl"]
    );
}

// ---------------------------------------------------------------------
// A failed run keeps the published tables
// ---------------------------------------------------------------------

/// `SELECT COUNT(*)` of a table, through `flux-engine query`.
fn count_rows(state: &Path, table: &str) -> u64 {
    let output = flux(
        state,
        &[
            "query",
            "--database",
            "rental",
            "--format",
            "csv",
            &format!("SELECT COUNT(*) AS n FROM {table}"),
        ],
    );
    assert!(
        output.status.success(),
        "count of {table}\n{}",
        text(&output)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut reader = csv::Reader::from_reader(stdout.as_bytes());
    let row = reader
        .records()
        .next()
        .unwrap_or_else(|| panic!("no row in:\n{stdout}"))
        .unwrap();
    row[0]
        .parse()
        .unwrap_or_else(|e| panic!("{table}: `{}` is not a count ({e})", &row[0]))
}

/// What the prefix `processed/<name>/` points at: the published version.
fn published_version(state: &Path, name: &str) -> PathBuf {
    let link = state.join("s3").join(BUCKET).join("processed").join(name);
    std::fs::read_link(&link)
        .unwrap_or_else(|e| panic!("{} is not a published prefix: {e}", link.display()))
}

#[test]
fn a_header_only_input_fails_clean_and_the_published_tables_keep_their_rows() {
    let dir = reference_dir();
    if !dir.join("rental_transactions.csv").is_file() {
        eprintln!(
            "SKIPPED: the reference data is not at {} (set FLUX_RENTAL_DATA)",
            dir.display()
        );
        return;
    }
    let kpis = Kpis::of(&dir);
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");

    let good = Run::start(&state, &dir);
    good.assert_succeeded();
    let tables = [
        ("rentals_clean", kpis.rentals),
        ("users", kpis.lines["users.csv"]),
        ("vehicles", kpis.lines["vehicles.csv"]),
        ("locations", kpis.lines["locations.csv"]),
    ];
    for (table, rows) in tables {
        assert_eq!(
            count_rows(&state, table),
            rows as u64,
            "{table} after the good run"
        );
    }
    let versions: Vec<PathBuf> = ["clean", "quarantine", "job_counts"]
        .iter()
        .map(|p| published_version(&state, p))
        .collect();

    // The same data, but rental_transactions.csv is its header line only.
    // (The other files are links to the reference data, not copies.)
    let input = work.path().join("header-only");
    std::fs::create_dir_all(&input).unwrap();
    for file in ["locations.csv", "users.csv", "vehicles.csv"] {
        std::os::unix::fs::symlink(dir.join(file), input.join(file)).unwrap();
    }
    let reference = std::fs::read_to_string(dir.join("rental_transactions.csv")).unwrap();
    let header = reference.lines().next().unwrap();
    assert!(header.contains("rental_id"), "not a header: {header}");
    std::fs::write(input.join("rental_transactions.csv"), format!("{header}\n")).unwrap();

    let failed = Run::start(&state, &input);
    assert_eq!(
        failed.output.status.code(),
        Some(1),
        "{}",
        text(&failed.output)
    );
    // Nothing was published: the prefixes point at the good run's versions
    // and the tables answer as they did.
    let after: Vec<PathBuf> = ["clean", "quarantine", "job_counts"]
        .iter()
        .map(|p| published_version(&state, p))
        .collect();
    assert_eq!(after, versions, "a failed run published new versions");
    for (table, rows) in tables {
        assert_eq!(
            count_rows(&state, table),
            rows as u64,
            "{table} after the failed run"
        );
    }
    assert_ne!(failed.run_id, good.run_id);
    let clean = &failed.tasks["clean"];
    assert_eq!(clean["status"], "failed", "{clean}");
    let error = clean["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("rental_transactions.csv") && error.contains("no data lines"),
        "the error does not say which file is empty: {error}"
    );
    for task in [
        "vehicle_location_metrics",
        "user_transaction_metrics",
        "crawl",
    ] {
        assert_eq!(
            failed.tasks[task]["status"], "upstream_failed",
            "{task}: {}",
            failed.tasks[task]
        );
    }
}

// ---------------------------------------------------------------------
// A crash during the Spark stage
// ---------------------------------------------------------------------

#[test]
fn sigkill_during_jvm_spark_then_resume_gives_the_same_tables() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("input");
    copy_sample(&input);
    sigkill_during_spark_then_resume_gives_the_same_tables(&work, &input, "spark");
}

/// On Sail the shipped sample's clean job ends within the 3 s the test
/// waits before the kill: 300,000 generated rentals keep it busy longer
/// (if it ended anyway, the test fails: processed/clean/ would exist).
#[test]
fn sigkill_during_sail_then_resume_gives_the_same_tables() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("input");
    let generated = flux(
        &work.path().join("state-gen"),
        &[
            "sample-data",
            "--out",
            input.to_str().unwrap(),
            "--transactions",
            "300000",
        ],
    );
    assert!(generated.status.success(), "{}", text(&generated));
    sigkill_during_spark_then_resume_gives_the_same_tables(&work, &input, "sail");
}

fn sigkill_during_spark_then_resume_gives_the_same_tables(
    work: &tempfile::TempDir,
    input: &Path,
    backend: &str,
) {
    let state = work.path().join("state");
    let mut child = spawn(
        &state,
        &[
            "--spark",
            backend,
            "run",
            &dag(),
            "--param",
            &format!("input_dir={}", input.display()),
        ],
        &work.path().join("first"),
    );
    // Kill once the cleaning job's Python process has started talking to
    // Spark (its log exists and the warm server is up), mid-job.
    let job_started = wait_until(Duration::from_secs(300), || {
        glob_logs(&state.join("runs"), "clean", "stdout.log")
            .iter()
            .any(|p| p.exists())
            || child.try_wait().ok().flatten().is_some()
    });
    assert!(
        job_started,
        "the clean job never started\n{}",
        common::logs(&work.path().join("first"))
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before it could be killed\n{}",
        common::logs(&work.path().join("first"))
    );
    std::thread::sleep(Duration::from_secs(3));
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = std::time::Instant::now();

    // The warm Spark server dies with the engine (its guard sees the pipe close).
    let ports: Vec<u16> = std::fs::read_dir(state.join("spark"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().to_string();
            name.strip_prefix("spark-connect-")?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(ports.len(), 1, "one warm server expected");
    let port = ports[0];
    assert!(
        wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        }),
        "the Spark Connect server on port {port} outlived the killed engine"
    );
    // Nothing of the run holds its state dir after a few seconds: not the
    // server, not the job, not the server's guard (which held the
    // server's log for 5 s after the kill).
    assert!(
        wait_until(
            Duration::from_secs(4).saturating_sub(killed.elapsed()),
            || common::processes_holding(&state).is_empty()
        ),
        "processes still hold files of the state dir {:.1} s after the kill: {:?}",
        killed.elapsed().as_secs_f64(),
        common::processes_holding(&state)
    );
    // Nothing half-written was published.
    assert!(
        !state
            .join("s3")
            .join(BUCKET)
            .join("processed/clean")
            .exists(),
        "processed/clean/ was published by a job that was killed"
    );

    let run_id = common::runs(&state)[0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    // And the job's own processes (its Python client) die with the engine
    // too: nothing of the run is left within seconds.
    let marker = format!("FLUX_RUN_ID={run_id}");
    assert!(
        wait_until(Duration::from_secs(10), || common::processes_with(&marker)
            .is_empty()),
        "processes of the killed run are still running: {:?}",
        common::processes_with(&marker)
    );
    let resumed = common::command(&state)
        .args(["--spark", backend, "resume", &run_id])
        .output()
        .unwrap();
    let run = Run::read(&state, resumed);
    run.assert_succeeded();
    assert!(run.tasks["clean"]["attempts"].as_u64().unwrap() >= 2);
    assert_kpis(&run, &Kpis::of(input));
    let counts = &run.tasks["clean"]["output"]["files"]["rental_transactions.csv"];
    assert_eq!(counts["quarantined"].as_u64(), Some(0));
}

fn glob_logs(runs: &Path, task: &str, file: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for run in std::fs::read_dir(runs).into_iter().flatten().flatten() {
        for attempt in std::fs::read_dir(run.path().join(task))
            .into_iter()
            .flatten()
            .flatten()
        {
            found.push(attempt.path().join(file));
        }
    }
    found
}

// ---------------------------------------------------------------------
// A warm Spark that outlives runs
// ---------------------------------------------------------------------

fn server_logs(state: &Path) -> Vec<String> {
    std::fs::read_dir(state.join("spark"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with("spark-connect-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn spark_start_keeps_one_sail_server_for_every_run_until_stop() {
    kept_server_serves_every_run_until_stop("sail");
}

#[test]
fn spark_start_keeps_one_jvm_spark_server_for_every_run_until_stop() {
    kept_server_serves_every_run_until_stop("spark");
}

/// `spark start` keeps a server of `backend`; runs of that backend use it
/// (no server of their own), a start of the other backend is refused while
/// it runs, and `spark stop` ends it.
fn kept_server_serves_every_run_until_stop(backend: &str) {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let cli = |args: &[&str]| {
        let args: Vec<&str> = ["--spark", backend].iter().chain(args).copied().collect();
        let output = flux(&state, &args);
        assert!(output.status.success(), "{args:?}\n{}", text(&output));
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    assert!(cli(&["spark", "status"]).contains("no warm Spark"));
    /// Stops the server however the test ends, so a failure leaks no server.
    struct StopOnDrop(PathBuf);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            let _ = flux(&self.0, &["spark", "stop"]);
        }
    }
    let _stop = StopOnDrop(state.clone());
    let started = cli(&["spark", "start"]);
    assert!(
        started.contains(&format!("a warm {backend} server runs")),
        "{started}"
    );
    let url = started
        .split_whitespace()
        .find(|w| w.starts_with("sc://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no server URL in: {started}"))
        .to_string();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    // A second start reports the same server instead of starting another.
    assert!(cli(&["spark", "start"]).contains(&url));
    assert!(cli(&["spark", "status"]).contains(&url));
    // One of the other backend is refused while this one is kept.
    let other = if backend == "sail" { "spark" } else { "sail" };
    let refused = flux(&state, &["--spark", other, "spark", "start"]);
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains(&format!(
                "a {backend} server is already kept for this state dir"
            )),
        "{}",
        text(&refused)
    );

    let output = flux(
        &state,
        &[
            "--spark",
            backend,
            "run",
            &dag(),
            "--param",
            &format!("input_dir={}", sample_dir().display()),
        ],
    );
    let run = Run::read(&state, output);
    run.assert_succeeded();
    assert_kpis(&run, &Kpis::of(&sample_dir()));
    // The run used the running server: no other server log appeared, and
    // the server still answers after the run ended.
    assert_eq!(
        server_logs(&state),
        vec![format!("spark-connect-{port}.log")]
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    assert!(cli(&["spark", "stop"]).contains("stopped"));
    assert!(
        wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        }),
        "the server on port {port} still answers after `spark stop`"
    );
    assert!(cli(&["spark", "status"]).contains("no warm Spark"));
}
