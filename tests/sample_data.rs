//! `flux-engine sample-data` as a user meets it: the real binary writes the
//! four rental CSVs, and this test checks them with its own parsing (the
//! `csv` crate and chrono) against the reference dataset's headers and the
//! facts its README states, plus determinism and the shipped sample.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{NaiveDate, NaiveDateTime};

const FILES: [&str; 4] = [
    "locations.csv",
    "users.csv",
    "vehicles.csv",
    "rental_transactions.csv",
];

/// The sample shipped with the project and the command that makes it.
const SHIPPED: &str = "dags/data/rental-sample";
const SHIPPED_ARGS: [&str; 4] = ["--transactions", "2000", "--seed", "42"];

fn flux(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flux-engine"))
        .args(args)
        .output()
        .expect("the flux-engine binary runs")
}

/// Runs `sample-data --out dir --transactions n --seed seed`, which must succeed.
fn generate(dir: &Path, n: u64, seed: u64) -> String {
    let out = flux(&[
        "sample-data",
        "--out",
        dir.to_str().unwrap(),
        "--transactions",
        &n.to_string(),
        "--seed",
        &seed.to_string(),
    ]);
    assert!(
        out.status.success(),
        "sample-data failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Header and records; the csv reader rejects rows whose field count differs
/// from the header's, and bad quoting shows up as wrong field counts.
fn read(path: &Path) -> (Vec<String>, Vec<HashMap<String, String>>) {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader
        .records()
        .map(|record| {
            let record = record.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            header
                .iter()
                .cloned()
                .zip(record.iter().map(String::from))
                .collect()
        })
        .collect();
    (header, rows)
}

fn first_line(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    text.lines().next().unwrap_or("").to_string()
}

fn is_hex10(s: &str) -> bool {
    s.len() == 10 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn timestamp(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .unwrap_or_else(|e| panic!("{s:?} is not YYYY-MM-DD HH:MM:SS: {e}"))
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn datetime(y: i32, m: u32, d: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
}

/// Distinct values of `column`, which must all be distinct.
fn unique(rows: &[HashMap<String, String>], column: &str) -> HashSet<String> {
    let set: HashSet<String> = rows.iter().map(|r| r[column].clone()).collect();
    assert_eq!(set.len(), rows.len(), "{column} has duplicates");
    set
}

fn rate(vehicle_type: &str) -> u64 {
    match vehicle_type {
        "basic" => 10,
        "premium" => 20,
        "high_end" => 50,
        other => panic!("unknown vehicle_type {other:?}"),
    }
}

fn brands(vehicle_type: &str) -> &'static [&'static str] {
    match vehicle_type {
        "basic" => &[
            "Chevrolet",
            "Ford",
            "Honda",
            "Hyundai",
            "Kia",
            "Nissan",
            "Toyota",
            "Volkswagen",
        ],
        "premium" => &[
            "Acura",
            "Audi",
            "BMW",
            "Infiniti",
            "Lexus",
            "Mercedes-Benz",
            "Volvo",
        ],
        _ => &[
            "Bentley",
            "Jaguar",
            "Land Rover",
            "Maserati",
            "Porsche",
            "Tesla",
        ],
    }
}

/// The table sizes the generator documents for `n` transactions.
fn sizes(n: u64) -> [u64; 4] {
    [(n / 10).clamp(20, 300), (n / 2).max(50), n.max(50), n]
}

/// Checks every documented fact of the files in `dir` made with `n`.
fn check_facts(dir: &Path, n: u64) {
    let [locations, users, vehicles, rentals] = FILES.map(|f| read(&dir.join(f)).1);
    let counts = [&locations, &users, &vehicles, &rentals].map(|t| t.len() as u64);
    assert_eq!(counts, sizes(n), "row counts of {FILES:?} for N = {n}");

    // Locations: int ids, CA addresses, coordinates in range, names with
    // commas quoted.
    let location_ids = unique(&locations, "location_id");
    for l in &locations {
        l["location_id"].parse::<u32>().unwrap();
        assert_eq!(l["state"], "CA");
        assert!(l["zip_code"].len() == 5 && l["zip_code"].parse::<u32>().is_ok());
        let lat: f64 = l["latitude"].parse().unwrap();
        let lon: f64 = l["longitude"].parse().unwrap();
        assert!((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon));
        assert!(!l["location_name"].is_empty() && !l["address"].is_empty());
    }
    let raw = fs::read_to_string(dir.join("locations.csv")).unwrap();
    let with_comma: Vec<_> = locations
        .iter()
        .filter(|l| l["location_name"].contains(','))
        .collect();
    assert!(!with_comma.is_empty(), "no location name contains a comma");
    for l in with_comma {
        let quoted = format!("{},\"{}\",", l["location_id"], l["location_name"]);
        assert!(raw.contains(&quoted), "{quoted} is not in the file");
    }

    // Users.
    let user_ids = unique(&users, "user_id");
    for u in &users {
        assert!(is_hex10(&u["user_id"]), "user_id {:?}", u["user_id"]);
        let local = format!("{}.{}@", u["first_name"], u["last_name"]).to_lowercase();
        assert!(u["email"].starts_with(&local), "email {:?}", u["email"]);
        assert!(u["phone_number"].bytes().filter(u8::is_ascii_digit).count() >= 10);
        let license = u["driver_license_number"].as_bytes();
        assert!(license.len() == 8 && license[..2].iter().all(u8::is_ascii_uppercase));
        let created = date(&u["creation_date"]);
        assert!(created >= datetime(2024, 1, 1).date() && created < datetime(2024, 6, 1).date());
        assert!(date(&u["driver_license_expiry"]) > created);
        assert!(matches!(u["is_active"].as_str(), "0" | "1"));
    }

    // Vehicles: one type (so one rate) each, brands of that type.
    let mut vehicle_type = HashMap::new();
    for v in &vehicles {
        assert!(
            is_hex10(&v["vehicle_id"]),
            "vehicle_id {:?}",
            v["vehicle_id"]
        );
        let kind = v["vehicle_type"].as_str();
        rate(kind);
        assert!(brands(kind).contains(&v["brand"].as_str()), "{v:?}");
        assert!(
            vehicle_type
                .insert(v["vehicle_id"].clone(), kind.to_string())
                .is_none(),
            "vehicle_id {} twice",
            v["vehicle_id"]
        );
        assert!(matches!(v["active"].as_str(), "0" | "1"));
        assert_eq!(v["vehicle_license_number"].len(), 7);
        let year: u32 = v["vehicle_year"].parse().unwrap();
        assert!((2000..=2025).contains(&year));
        assert!(v["registration_name"].contains(','));
        date(&v["expiration_date"]);
        date(&v["certification_date"]);
        timestamp(&v["last_update_timestamp"]);
    }

    // Transactions: the README's facts.
    unique(&rentals, "rental_id");
    let (first, last) = (datetime(2024, 1, 1), datetime(2024, 6, 1));
    for t in &rentals {
        assert!(is_hex10(&t["rental_id"]), "rental_id {:?}", t["rental_id"]);
        assert!(user_ids.contains(&t["user_id"]), "unknown user in {t:?}");
        let kind = vehicle_type
            .get(&t["vehicle_id"])
            .unwrap_or_else(|| panic!("unknown vehicle in {t:?}"));
        for place in ["pickup_location", "dropoff_location"] {
            assert!(location_ids.contains(&t[place]), "unknown {place} in {t:?}");
        }
        let start = timestamp(&t["rental_start_time"]);
        let end = timestamp(&t["rental_end_time"]);
        assert!(start >= first && start < last, "start out of range: {t:?}");
        let seconds = (end - start).num_seconds();
        assert_eq!(seconds % 3600, 0, "not whole hours: {t:?}");
        let hours = (seconds / 3600) as u64;
        assert!((1..=72).contains(&hours), "{hours} hours: {t:?}");
        assert_eq!(
            t["total_amount"],
            format!("{}.0", hours * rate(kind)),
            "amount of {t:?} ({kind})"
        );
    }
}

#[test]
fn headers_equal_the_reference_files() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path(), 100, 1);
    let reference = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/rental");
    if !reference.join("locations.csv").exists() {
        println!(
            "note: {} is absent; header comparison skipped",
            reference.display()
        );
        return;
    }
    for file in FILES {
        assert_eq!(
            first_line(&dir.path().join(file)),
            first_line(&reference.join(file)),
            "header of {file}"
        );
    }
}

#[test]
fn facts_hold_and_tables_scale_with_n() {
    for (n, seed) in [(3000, 7), (1, 3), (120, 99)] {
        let dir = tempfile::tempdir().unwrap();
        let summary = generate(dir.path(), n, seed);
        check_facts(dir.path(), n);
        // One summary line with files, rows and the bytes written.
        assert_eq!(summary.lines().count(), 1, "{summary}");
        let bytes: u64 = FILES
            .iter()
            .map(|f| fs::metadata(dir.path().join(f)).unwrap().len())
            .sum();
        assert!(summary.contains(&format!("{bytes} bytes")), "{summary}");
        let rows = sizes(n);
        for (file, rows) in FILES.iter().zip(rows) {
            assert!(
                summary.contains(&format!("{file} {rows} rows")),
                "{summary}"
            );
        }
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 4);
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    generate(a.path(), 500, 42);
    generate(b.path(), 500, 42);
    generate(c.path(), 500, 43);
    for file in FILES {
        let bytes = |d: &tempfile::TempDir| fs::read(d.path().join(file)).unwrap();
        assert!(bytes(&a) == bytes(&b), "{file} differs between equal runs");
        assert!(
            bytes(&a) != bytes(&c),
            "{file} is the same for another seed"
        );
    }
    // Rewriting into a directory that already holds the files is the same.
    generate(a.path(), 500, 42);
    for file in FILES {
        assert!(fs::read(a.path().join(file)).unwrap() == fs::read(b.path().join(file)).unwrap());
    }
}

#[test]
fn shipped_sample_equals_a_fresh_generation() {
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(SHIPPED);
    let readme = fs::read_to_string(shipped.join("README.md")).unwrap();
    let command = format!(
        "flux-engine sample-data --out {SHIPPED} {}",
        SHIPPED_ARGS.join(" ")
    );
    assert!(readme.contains(&command), "README.md lacks `{command}`");
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["sample-data", "--out", dir.path().to_str().unwrap()];
    args.extend(SHIPPED_ARGS);
    assert!(flux(&args).status.success());
    let mut total = 0;
    for file in FILES {
        let fresh = fs::read(dir.path().join(file)).unwrap();
        let kept = fs::read(shipped.join(file)).unwrap();
        assert!(
            fresh == kept,
            "{SHIPPED}/{file} is stale: regenerate it with `{command}`"
        );
        total += kept.len();
    }
    assert!(total < 1_000_000, "the shipped sample is {total} bytes");
    check_facts(&shipped, 2000);
}

#[test]
fn bad_arguments_exit_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let zero = flux(&["sample-data", "--out", out, "--transactions", "0"]);
    assert_eq!(zero.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--transactions"));

    let file = dir.path().join("a-file");
    fs::write(&file, "x").unwrap();
    for target in [file.clone(), file.join("sub")] {
        let out = flux(&["sample-data", "--out", target.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "--out {}", target.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("error: cannot create") && stderr.contains("a-file"),
            "{stderr}"
        );
    }
}
