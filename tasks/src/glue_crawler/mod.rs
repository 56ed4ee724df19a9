//! `glue_crawler`: scans S3 prefixes and writes what it finds (tables,
//! columns, partitions) to the data catalog, like an AWS Glue crawler.
//!
//! ```toml
//! [tasks.crawl]
//! type = "glue_crawler"
//! database = "rental"                                   # catalog database
//! targets = ["s3://${params.bucket}/processed/"]        # prefixes to scan
//! table_prefix = "proc_"                                # optional
//! exclusions = ["**/_tmp/**", "**.json"]                # optional
//! ```
//!
//! * `database` — the catalog database the tables go to (lowercase letters,
//!   digits and `_`, Glue's and Athena's rule).
//! * `targets` — a list of `s3://` prefixes (a single string is accepted
//!   too), Glue's S3 targets. Under each target, every immediate sub-folder
//!   is one table, named after the folder (lowercased, any character other
//!   than `a-z`, `0-9` and `_` becomes `_`), as for a Glue crawler whose
//!   include path holds one folder per table. A target that holds data
//!   files directly, or only Hive partition folders (`key=value/`), is
//!   itself one table, named after its last segment (the bucket's name for
//!   a whole bucket). Targets may not overlap.
//! * `table_prefix` — prepended to every table name (Glue's
//!   `TablePrefix`); lowercase letters, digits and `_`.
//! * `exclusions` — patterns for keys relative to the target (Glue's
//!   exclude patterns, a subset): `*` matches within one path segment,
//!   `**` across segments, `?` one character. A pattern excludes the
//!   objects it matches and everything under a folder it matches, so
//!   `users` excludes the `users/` table, `*.csv` CSV files directly in
//!   the target and `**.csv` every CSV file.
//!
//! Names starting with `.` or `_` (`_SUCCESS`, `_temporary/`, `.crc`
//! files, flux-engine's own `.flux-*` entries) are skipped everywhere, and
//! so are empty files. Published prefixes (symlinks to version folders)
//! are read through one pinned [`Snapshot`](crate::s3::Snapshot) per
//! target, so a table is never inferred from half of one output and half
//! of the next.
//!
//! # What a table is made of
//!
//! * Format: files ending in `.parquet` (Spark's `part-*.snappy.parquet`)
//!   or `.csv`. A table with both is catalogued in the format most of its
//!   files have; the others, and files of any other type, are ignored with
//!   a warning.
//! * Parquet columns come from the files' footers (every file is read;
//!   columns are the union, in order of first appearance). Arrow types map
//!   to Glue types: `Utf8`/`LargeUtf8` → `string`, `Int64` → `bigint`,
//!   `Int32` → `int`, `Int16` → `smallint`, `Int8` → `tinyint`, `Float64`
//!   → `double`, `Float32` → `float`, `Boolean` → `boolean`, `Date32` →
//!   `date`, `Timestamp` → `timestamp`, `Decimal128(p,s)` → `decimal(p,s)`,
//!   lists → `array<T>`, structs → `struct<a:T,...>`, maps → `map<K,V>`,
//!   binaries → `binary`; unsigned integers widen to the next signed type.
//!   Anything else (times of day, durations, intervals) becomes `string`
//!   with a warning. When two files disagree on a column's type, the
//!   conflict is reported as a warning and the wider type is kept (`int`
//!   and `bigint` give `bigint`, integers and floating point `double`,
//!   `date` and `timestamp` `timestamp`), otherwise `string`.
//! * CSV columns come from the header line (`csv_header = true` in the
//!   catalog); their types are inferred from the first
//!   [`MAX_CSV_SAMPLE_ROWS`] rows of each file: `bigint`, `double`,
//!   `boolean` (`true`/`false`), `date` (`YYYY-MM-DD`), `timestamp`
//!   (`YYYY-MM-DD HH:MM:SS[.fff]`), else `string`. Empty cells (and `\N`)
//!   do not decide a type; a column with no value at all is a `string`.
//! * Column names are lowercased, as Glue does (Athena's identifiers are
//!   case-insensitive).
//! * Partitions: the folders between a table's root and its files are
//!   partition keys: `key=value/` gives the key `key` (lowercased) and the
//!   value `value` (Hive's `%XX` escapes decoded); a folder without `=`
//!   gives the key `partition_N` (N = its depth, from 0), as Glue names
//!   them. Each distinct folder is one partition with its location. A key
//!   is `bigint` if every value is an integer and `string` otherwise (Glue
//!   types most partition keys as `string`; `rental_month=2024-01` stays a
//!   `string`). A column of the files with a key's name is dropped from the
//!   data columns. Files at another depth or under other keys than most of
//!   the table's files are ignored with a warning.
//!
//! # What the crawl writes
//!
//! A new table is created with `schema_version` 1. An existing one is
//! compared with what was found: if its columns, partition keys, format or
//! location changed, its `schema_version` goes up by one and the change is
//! reported column by column; its partitions are replaced by the ones
//! found either way. Tables whose location lies under a target but that
//! were not found again are reported in `tables_missing` and left in the
//! catalog (Glue's `DeleteBehavior: LOG`). An empty target, or one that
//! does not exist, is a warning, not a failure, as in Glue.
//!
//! The output, like the metrics of a Glue crawl:
//!
//! ```json
//! {"database": "rental",
//!  "tables_added": ["users"],
//!  "tables_changed": [{"table": "rentals", "added": ["fee"], "removed": [],
//!                      "type_changed": [{"column": "amount", "from": "int", "to": "bigint"}]}],
//!  "tables_unchanged": ["vehicles"],
//!  "tables_missing": ["old_table"],
//!  "partitions": {"rentals": 12, "users": 0, "vehicles": 0},
//!  "warnings": ["..."]}
//! ```
//!
//! At most [`MAX_WARNINGS`] warnings are listed (then one line saying how
//! many more); the attempt's `stdout.log` holds all of them and one line
//! per table.
//!
//! A crawl's catalog changes are one transaction
//! ([`Catalog::begin`](crate::catalog::Catalog::begin)): readers see all of
//! them or none, and a crawl that fails, is cancelled or is killed before
//! its commit changes nothing (the rerun on resume starts from the catalog
//! as it was). A rerun after a crash between the catalog's commit and the
//! engine's finds the tables as written and reports them unchanged: the
//! catalog is the same either way.
//!
//! # On AWS
//!
//! [`sfn`]: in Step Functions the task starts the crawler `DAG-TASK` and
//! polls it until it is ready, failing unless its last crawl succeeded;
//! `export --cfn` creates the crawler (one S3 target per `targets` entry,
//! `DatabaseName`) and the database. `table_prefix` and `exclusions` are
//! not carried to the created crawler yet. With `run --target aws` the
//! crawler runs in Glue through the SDK ([`aws`]).

mod aws;
mod config;
mod infer;
mod scan;
pub mod sfn;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use engine::{Attempt, Kind, TaskAction, TaskFailure};
use serde::Serialize;

use crate::cancel::CancelOnDrop;
use crate::catalog::{self, Catalog, Column, Table};
use crate::s3::{LocalS3, S3Prefix, S3Uri};

pub use config::GlueCrawlerConfig;
pub use infer::MAX_CSV_SAMPLE_ROWS;
use scan::{FoundTable, Pattern};

/// At most this many warnings are listed in the output.
pub const MAX_WARNINGS: usize = 100;

pub struct GlueCrawler;

impl Kind for GlueCrawler {
    const NAME: &'static str = "glue_crawler";
    const SUMMARY: &'static str = "crawls S3 prefixes (`targets`) and writes the tables, columns and partitions it finds to the catalog (`database`)";
    type Config = GlueCrawlerConfig;

    fn action(&self, config: GlueCrawlerConfig) -> Arc<dyn TaskAction> {
        Arc::new(LocalCrawler {
            crawl: Crawl::from(config),
        })
    }
}

/// What a crawl is asked to do.
#[derive(Debug, Clone)]
pub(crate) struct Crawl {
    pub database: String,
    pub targets: Vec<S3Uri>,
    pub table_prefix: String,
    pub exclusions: Vec<Pattern>,
}

impl From<GlueCrawlerConfig> for Crawl {
    fn from(config: GlueCrawlerConfig) -> Crawl {
        Crawl {
            database: config.database.to_string(),
            targets: config
                .targets
                .0
                .into_iter()
                .map(S3Prefix::into_uri)
                .collect(),
            table_prefix: config.table_prefix,
            exclusions: config.exclusions.0,
        }
    }
}

struct LocalCrawler {
    crawl: Crawl,
}

#[async_trait]
impl TaskAction for LocalCrawler {
    async fn run(&self, attempt: &Attempt) -> Result<Option<serde_json::Value>, TaskFailure> {
        let crawl = self.crawl.clone();
        let state_root = attempt.state_root.clone();
        let log_dir = attempt.log_dir.clone();
        // Stops the blocking crawl (between tables) on a timeout or a cancel.
        let guard = CancelOnDrop::default();
        let cancel = guard.flag();
        let span = crate::steps::step(&tracing::Span::current(), "glue.crawl", &attempt.task_id);
        let step = span.clone();
        let report = tokio::task::spawn_blocking(move || {
            let _inside = step.enter();
            let log_path = log_dir.join("stdout.log");
            fs::create_dir_all(&log_dir).map_err(|e| {
                TaskFailure::new(format!("cannot create {}: {e}", log_dir.display()))
            })?;
            let mut log = fs::File::create(&log_path).map_err(|e| {
                TaskFailure::new(format!("cannot create {}: {e}", log_path.display()))
            })?;
            let report = crawl.run(&state_root, &cancel)?;
            log.write_all(report.log.as_bytes()).map_err(|e| {
                TaskFailure::new(format!("cannot write {}: {e}", log_path.display()))
            })?;
            Ok::<_, TaskFailure>(report)
        })
        .await
        .map_err(|e| TaskFailure::new(format!("the crawl stopped unexpectedly: {e}")))
        .and_then(|r| r);
        crate::steps::finish(&span, &report);
        let report = report?;
        serde_json::to_value(report.output())
            .map(Some)
            .map_err(|e| TaskFailure::new(format!("cannot encode the crawl's report: {e}")))
    }
}

/// A column whose type changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct TypeChange {
    pub column: String,
    pub from: String,
    pub to: String,
}

/// How a table's definition changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct TableChange {
    pub table: String,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub type_changed: Vec<TypeChange>,
}

/// The task's output (see the module docs).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Output {
    pub database: String,
    pub tables_added: Vec<String>,
    pub tables_changed: Vec<TableChange>,
    pub tables_unchanged: Vec<String>,
    pub tables_missing: Vec<String>,
    pub partitions: BTreeMap<String, usize>,
    pub warnings: Vec<String>,
}

/// What a crawl did: the output with every warning, and the log text.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub output: Output,
    pub log: String,
}

impl Report {
    /// The output with the warnings cut to [`MAX_WARNINGS`].
    pub fn output(&self) -> Output {
        let mut output = self.output.clone();
        let total = output.warnings.len();
        if total > MAX_WARNINGS {
            output.warnings.truncate(MAX_WARNINGS);
            output.warnings.push(format!(
                "... and {} more warnings (see the attempt's stdout.log)",
                total - MAX_WARNINGS
            ));
        }
        output
    }
}

impl Crawl {
    /// Scans the targets and updates the catalog under `state_root`.
    pub(crate) fn run(
        &self,
        state_root: &Path,
        cancel: &AtomicBool,
    ) -> Result<Report, TaskFailure> {
        let s3 = LocalS3::new(state_root);
        let catalog = Catalog::new(state_root);
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut warnings = Vec::new();
        let mut found: Vec<FoundTable> = Vec::new();
        for target in &self.targets {
            if cancel.load(Ordering::Relaxed) {
                return Err(TaskFailure::new("cancelled"));
            }
            let tables = scan::scan_target(
                &s3,
                target,
                &self.table_prefix,
                &self.exclusions,
                &mut warnings,
            )
            .map_err(|e| TaskFailure::new(format!("cannot crawl {target}: {e}")))?;
            for table in tables {
                if let Some(other) = found.iter().find(|t| t.name == table.name) {
                    warnings.push(format!(
                        "{} and {} both make table `{}`; only the first is catalogued (rename a folder or crawl them with different table prefixes)",
                        other.location, table.location, table.name
                    ));
                } else {
                    found.push(table);
                }
            }
        }

        found.sort_by(|a, b| a.name.cmp(&b.name));

        let mut report = Report::default();
        let out = &mut report.output;
        out.database = self.database.clone();
        let failed = |e: catalog::CatalogError| TaskFailure::new(format!("catalog: {e}"));
        // Every change of this crawl is one transaction: other readers see
        // the catalog as it was until the commit at the end, and a crawl
        // that fails, is cancelled or is killed before it changes nothing.
        let mut tx = catalog.begin(&self.database).map_err(failed)?;
        for table in &found {
            if cancel.load(Ordering::Relaxed) {
                return Err(TaskFailure::new("cancelled"));
            }
            let new = table.to_table(&self.database, &now);
            let existing = tx.get(&table.name).map_err(failed)?;
            let line = match existing {
                None => {
                    tx.put(new.clone()).map_err(failed)?;
                    out.tables_added.push(table.name.clone());
                    "added"
                }
                Some(old) => {
                    if same_definition(&old, &new) {
                        if old.partitions != new.partitions {
                            let mut updated = old.clone();
                            updated.partitions = new.partitions.clone();
                            updated.updated_at = now.clone();
                            tx.put(updated).map_err(failed)?;
                        }
                        out.tables_unchanged.push(table.name.clone());
                        "unchanged"
                    } else {
                        let mut updated = new.clone();
                        updated.schema_version = old.schema_version.saturating_add(1);
                        tx.put(updated).map_err(failed)?;
                        out.tables_changed.push(diff(&old, &new));
                        "changed"
                    }
                }
            };
            out.partitions
                .insert(table.name.clone(), new.partitions.len());
            report.log.push_str(&format!(
                "{line:9} {}.{} at {} ({:?}, {} columns, {} partition keys, {} partitions, {} files)\n",
                self.database,
                table.name,
                table.location,
                new.format,
                new.columns.len(),
                new.partition_keys.len(),
                new.partitions.len(),
                table.files,
            ));
        }

        let crawled: BTreeSet<&str> = found.iter().map(|t| t.name.as_str()).collect();
        for table in tx.tables().map_err(failed)? {
            let under_target = S3Uri::parse(&table.location)
                .is_ok_and(|loc| self.targets.iter().any(|t| loc.relative_to(t).is_some()));
            if under_target && !crawled.contains(table.name.as_str()) {
                report.log.push_str(&format!(
                    "missing   {}.{} at {} (kept in the catalog)\n",
                    self.database, table.name, table.location
                ));
                out.tables_missing.push(table.name);
            }
        }
        for warning in &warnings {
            report.log.push_str(&format!("warning   {warning}\n"));
        }
        out.warnings = warnings;
        tx.commit().map_err(failed)?;
        Ok(report)
    }
}

/// Whether the crawl found the same table as the catalog holds (partitions
/// and timestamps aside).
fn same_definition(old: &Table, new: &Table) -> bool {
    old.columns == new.columns
        && old.partition_keys == new.partition_keys
        && old.format == new.format
        && old.location == new.location
        && old.csv_header == new.csv_header
}

/// The columns (partition keys included) added, removed and retyped.
fn diff(old: &Table, new: &Table) -> TableChange {
    let all = |t: &Table| -> Vec<Column> {
        t.columns
            .iter()
            .chain(t.partition_keys.iter())
            .cloned()
            .collect()
    };
    let (old_cols, new_cols) = (all(old), all(new));
    let type_of = |cols: &[Column], name: &str| {
        cols.iter()
            .find(|c| c.name == name)
            .map(|c| c.data_type.clone())
    };
    let added = new_cols
        .iter()
        .filter(|c| type_of(&old_cols, &c.name).is_none())
        .map(|c| c.name.clone())
        .collect();
    let removed = old_cols
        .iter()
        .filter(|c| type_of(&new_cols, &c.name).is_none())
        .map(|c| c.name.clone())
        .collect();
    let type_changed = new_cols
        .iter()
        .filter_map(|c| {
            let from = type_of(&old_cols, &c.name)?;
            (from != c.data_type).then(|| TypeChange {
                column: c.name.clone(),
                from,
                to: c.data_type.clone(),
            })
        })
        .collect();
    TableChange {
        table: new.name.clone(),
        added,
        removed,
        type_changed,
    }
}
