//! `flux-engine sample-data --dirty RATIO`: bad lines mixed into the
//! generated files, one of every kind the cleaning job
//! (pyspark/rental_clean.py) quarantines, so that the quarantine, its
//! counts in `show` and the report's quality table can be seen and tested
//! without crafting files by hand.
//!
//! The mix is deterministic (no randomness at all): a file of `n` data
//! lines gets `k = floor(RATIO * n / (1 - RATIO))` bad lines, so that
//! `k / (n + k) <= RATIO` (the cleaning job's gate compares that share
//! with `--max-quarantine-ratio`, 0.05 by default). They are spread evenly
//! between the clean lines, each made from the clean line just before it
//! with one thing wrong; the reasons take turns in the order of
//! [`reasons`]. The clean lines are untouched, so every clean table and
//! KPI is the one the same seed gives without `--dirty`.
//!
//! Every added line is listed in `OUT/dirty_rows.csv` (`file`,
//! `line_number` with the header as line 1, `reason`): what the cleaning
//! job should quarantine, line for line.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use crate::sample_data::Error;

/// The manifest of added lines, written beside the four files.
pub const MANIFEST: &str = "dirty_rows.csv";

/// One added line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyRow {
    pub file: &'static str,
    pub line_number: u64,
    pub reason: &'static str,
}

/// The quarantine reasons a file can be given bad lines for, in the order
/// they take turns. (`bad_key` exists for locations only; the missing,
/// unknown and timestamp reasons for transactions only; see the cleaning
/// rules in pyspark/README.md.)
pub fn reasons(file: &str) -> &'static [&'static str] {
    match file {
        "locations.csv" => &[
            "control_character",
            "unparseable_line",
            "ragged_line",
            "missing_key",
            "bad_key",
            "bad_value",
            "duplicate_key",
        ],
        "users.csv" | "vehicles.csv" => &[
            "control_character",
            "unparseable_line",
            "ragged_line",
            "missing_key",
            "bad_value",
            "duplicate_key",
        ],
        "rental_transactions.csv" => &[
            "control_character",
            "unparseable_line",
            "ragged_line",
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
            "duplicate_key",
        ],
        _ => &[],
    }
}

/// How many bad lines a file of `clean` data lines gets at `ratio`.
pub fn bad_lines(clean: u64, ratio: f64) -> u64 {
    if !(ratio > 0.0 && ratio < 1.0) {
        return 0;
    }
    // The share must not pass `ratio` through rounding: k is rounded down
    // and checked.
    let mut k = (ratio * clean as f64 / (1.0 - ratio)).floor() as u64;
    while k > 0 && k as f64 / (clean + k) as f64 > ratio {
        k -= 1;
    }
    k
}

/// Adds bad lines to the four files in `dir` (as [`crate::sample_data::generate`]
/// wrote them) and writes the manifest; returns the added lines.
pub fn add(dir: &Path, ratio: f64) -> Result<Vec<DirtyRow>, Error> {
    let mut added = Vec::new();
    for file in [
        "locations.csv",
        "users.csv",
        "vehicles.csv",
        "rental_transactions.csv",
    ] {
        added.extend(add_to_file(dir, file, ratio)?);
    }
    let manifest = dir.join(MANIFEST);
    let write_err = |source| Error::Write {
        path: manifest.clone(),
        source,
    };
    let mut out = BufWriter::new(File::create(&manifest).map_err(|source| Error::Create {
        path: manifest.clone(),
        source,
    })?);
    writeln!(out, "file,line_number,reason").map_err(write_err)?;
    for row in &added {
        writeln!(out, "{},{},{}", row.file, row.line_number, row.reason).map_err(write_err)?;
    }
    out.flush().map_err(write_err)?;
    Ok(added)
}

fn add_to_file(dir: &Path, file: &'static str, ratio: f64) -> Result<Vec<DirtyRow>, Error> {
    let path = dir.join(file);
    let read_err = |source| Error::Write {
        path: path.clone(),
        source,
    };
    // Counted first: the positions depend on the number of lines.
    let clean = BufReader::new(File::open(&path).map_err(read_err)?)
        .lines()
        .count()
        .saturating_sub(1) as u64;
    let k = bad_lines(clean, ratio);
    if k == 0 || clean == 0 {
        return Ok(Vec::new());
    }
    let tmp = dir.join(format!("{file}.dirty.tmp"));
    let write_err = |source| Error::Write {
        path: tmp.clone(),
        source,
    };
    let mut out = BufWriter::new(File::create(&tmp).map_err(|source| Error::Create {
        path: tmp.clone(),
        source,
    })?);
    let mut lines = BufReader::new(File::open(&path).map_err(read_err)?).lines();
    let header_line = lines
        .next()
        .transpose()
        .map_err(read_err)?
        .unwrap_or_default();
    let header: Vec<String> = fields(&header_line);
    writeln!(out, "{header_line}").map_err(write_err)?;
    let kinds = reasons(file);
    let mut added = Vec::new();
    let mut first_data: Option<String> = None;
    let mut line_number = 1u64;
    let mut next_bad = 0u64;
    for (i, line) in lines.enumerate() {
        let line = line.map_err(read_err)?;
        writeln!(out, "{line}").map_err(write_err)?;
        line_number += 1;
        let first = first_data.get_or_insert_with(|| line.clone()).clone();
        // Bad line j goes after clean line (j + 1) * clean / (k + 1): spread
        // evenly, never before the first clean line (a duplicate copies it).
        let written = i as u64 + 1;
        while next_bad < k && (next_bad + 1) * clean / (k + 1) <= written {
            let reason = kinds[(next_bad % kinds.len() as u64) as usize];
            let bad = bad_line(file, &header, &line, &first, reason);
            writeln!(out, "{bad}").map_err(write_err)?;
            line_number += 1;
            added.push(DirtyRow {
                file,
                line_number,
                reason,
            });
            next_bad += 1;
        }
    }
    out.flush().map_err(write_err)?;
    drop(out);
    fs::rename(&tmp, &path).map_err(|source| Error::Write {
        path: path.clone(),
        source,
    })?;
    Ok(added)
}

/// A CSV line's fields (RFC 4180, as the generator's writer quotes them).
fn fields(line: &str) -> Vec<String> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(line.as_bytes())
        .records()
        .next()
        .and_then(Result::ok)
        .map(|r| r.iter().map(str::to_string).collect())
        .unwrap_or_default()
}

/// One field as CSV writes it: quoted when it holds a comma, a quote or a
/// line break.
fn quoted(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

fn join(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| quoted(f))
        .collect::<Vec<_>>()
        .join(",")
}

/// The key column of each file.
fn key(file: &str) -> &'static str {
    match file {
        "locations.csv" => "location_id",
        "users.csv" => "user_id",
        "vehicles.csv" => "vehicle_id",
        _ => "rental_id",
    }
}

/// `template` (a clean line) with the one fault that gives `reason`.
fn bad_line(file: &str, header: &[String], template: &str, first: &str, reason: &str) -> String {
    let mut row = fields(template);
    let at = |name: &str| header.iter().position(|h| h == name).unwrap_or(0);
    let key_at = at(key(file));
    let put = |row: &mut Vec<String>, name: &str, value: &str| {
        if let Some(field) = row.get_mut(at(name)) {
            *field = value.to_string();
        }
    };
    match reason {
        "control_character" => {
            // A NUL inside the key: an id that looks like another.
            let mut value = row[key_at].clone();
            value.insert(value.len() / 2, '\0');
            row[key_at] = value;
        }
        "unparseable_line" => {
            // A quote inside a field, written as is (not CSV-quoted).
            let mut parts: Vec<String> = row.iter().map(|f| quoted(f)).collect();
            parts[key_at] = format!("{}\"x", row[key_at]);
            return parts.join(",");
        }
        "ragged_line" => {
            row.pop();
        }
        "missing_key" => row[key_at] = String::new(),
        "missing_field" => put(&mut row, "user_id", ""),
        "bad_key" => row[key_at] = format!("L{}", row[key_at]),
        "bad_value" => match file {
            "locations.csv" => put(&mut row, "latitude", "north"),
            "users.csv" => put(&mut row, "driver_license_expiry", "2024-13-45"),
            _ => put(&mut row, "vehicle_year", "old"),
        },
        "bad_timestamp" => put(&mut row, "rental_start_time", "2024-02-30 10:00:00"),
        "bad_location_id" => put(&mut row, "pickup_location", "downtown"),
        "bad_amount" => put(&mut row, "total_amount", "abc"),
        "negative_amount" => put(&mut row, "total_amount", "-12.5"),
        "end_before_start" => {
            let (s, e) = (at("rental_start_time"), at("rental_end_time"));
            row.swap(s, e);
        }
        "unknown_user" => put(&mut row, "user_id", "nouser0000"),
        "unknown_vehicle" => put(&mut row, "vehicle_id", "novehicle0"),
        // Location ids are 1000..=9999.
        "unknown_pickup_location" => put(&mut row, "pickup_location", "1"),
        "unknown_dropoff_location" => put(&mut row, "dropoff_location", "2"),
        "duplicate_key" => return first.to_string(),
        _ => {}
    }
    join(&row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_never_passes_the_ratio() {
        for clean in [1, 19, 20, 99, 300, 2000, 20_080] {
            for ratio in [0.001, 0.01, 0.05, 0.2, 0.5] {
                let k = bad_lines(clean, ratio);
                assert!(
                    k as f64 / (clean + k) as f64 <= ratio,
                    "{clean} {ratio} {k}"
                );
                // And as many as fit.
                let more = k + 1;
                assert!(
                    more as f64 / (clean + more) as f64 > ratio,
                    "{clean} {ratio} {k}"
                );
            }
        }
        assert_eq!(bad_lines(100, 0.0), 0);
    }
}
