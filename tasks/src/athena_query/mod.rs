//! `athena_query`: runs SQL on the catalog's tables, writes the result
//! where Athena would, and checks it: DataFusion here, Athena in
//! production.
//!
//! ```toml
//! [tasks.kpis]
//! type = "athena_query"
//! database = "rental"                                # the default database
//! sql = "SELECT rental_month, count(*) AS n FROM rentals GROUP BY 1"
//! # or: sql_file = "sql/kpis.sql"                    # relative to the DAG file
//! output = "s3://${params.bucket}/athena-results/"   # Athena's OutputLocation
//! expect = { min_rows = 1, columns = { n = { min = 1, not_null = true } } }
//! ```
//!
//! * `sql` or `sql_file` — exactly one: the query inline, or a file read
//!   when the attempt runs (its text is not substituted: `${...}` works
//!   only in `sql`). Tables are `table` (in `database`),
//!   `database.table` or `awsdatacatalog.database.table`; see
//!   [`crate::sql`] for what the local engine reads and the Trino
//!   functions it understands.
//! * `database` — the default database, Athena's `QueryExecutionContext`.
//! * `output` — an `s3://` prefix, Athena's `ResultConfiguration.
//!   OutputLocation`.
//! * `expect` — optional checks on the result; any failing check fails the
//!   task:
//!   * `rows` (exactly), `min_rows`, `max_rows` — the row count;
//!   * `columns = { NAME = { min = X, max = Y, not_null = true, in = [..] } }`
//!     — every value of the column is at least `min`, at most `max`, not
//!     NULL, one of `in`. Numbers compare as numbers; strings, dates and
//!     timestamps in the column's type (`min = "2024-01-01"` or a TOML date
//!     on a `date` column). NULL passes `min`, `max` and `in`: forbid it
//!     with `not_null`.
//!
//! # What it writes
//!
//! Like Athena, `OUTPUT/QUERY_EXECUTION_ID.csv`: a header line of column
//! names, then one line per row, every value double-quoted (quotes
//! doubled), NULL an empty unquoted field; and
//! `OUTPUT/QUERY_EXECUTION_ID.csv.metadata`, here JSON:
//! `{"query_execution_id", "columns": [{"name", "type"}], "rows"}` with
//! Athena's type names (`varchar`, `bigint`, `double`, ...). Both are
//! written atomically, the CSV first; they are written before the checks
//! run, so a failed check leaves the result to look at.
//!
//! The query execution id is UUID-shaped and derived from the attempt id
//! (`RUN_ID.TASK_ID.N`): each attempt writes its own files, as each Athena
//! query execution does, and the same attempt always names the same ones.
//!
//! The output:
//!
//! ```json
//! {"query_execution_id": "8c5e…",
//!  "output_location": "s3://bucket/athena-results/8c5e….csv",
//!  "metadata_location": "s3://bucket/athena-results/8c5e….csv.metadata",
//!  "rows": 12,
//!  "columns": [{"name": "rental_month", "type": "varchar"}, {"name": "n", "type": "bigint"}],
//!  "sample": [["2024-01", "7"], ["2024-02", null]]}
//! ```
//!
//! `sample` holds the first [`SAMPLE_ROWS`] rows as text (Athena's
//! `GetQueryResults` gives text too), each value cut to
//! [`MAX_SAMPLE_CHARS`] characters, and fewer rows if they would make the
//! output larger than [`MAX_OUTPUT_BYTES`], so that it stays below the
//! engine's 256 KiB limit. The attempt's `stdout.log` holds the SQL and
//! the sample as a table.
//!
//! # On AWS
//!
//! [`sfn`]: in Step Functions the task is
//! `athena:startQueryExecution.sync`, its results under the execution's
//! name, and with `expect` a check query whose counts a `Choice` reads.
//! With `run --target aws` the query runs in Athena through the SDK
//! ([`aws`]), its result read back and checked by the same `expect`.

mod aws;
mod config;

pub(crate) use aws::client_token;
mod expect;
pub mod sfn;

#[cfg(test)]
mod tests;

use std::fs;
use std::sync::Arc;

use async_trait::async_trait;
use engine::{Attempt, Kind, TaskAction, TaskFailure};
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::s3::{LocalS3, S3Uri};
use crate::sql::{QueryResult, QuerySession};

pub use config::{AthenaQueryConfig, QuerySource};
pub use expect::{Expect, MAX_OFFENDING_ROWS};

/// Rows in the output's `sample`.
pub const SAMPLE_ROWS: usize = 20;

/// Longer sample values are cut to this many characters (and `…`).
pub const MAX_SAMPLE_CHARS: usize = 1000;

/// The output takes at most this many bytes of JSON (the engine's limit is
/// 256 KiB): rows are dropped from the end of the sample until it fits.
pub const MAX_OUTPUT_BYTES: usize = 128 * 1024;

pub struct AthenaQuery;

impl Kind for AthenaQuery {
    const NAME: &'static str = "athena_query";
    const SUMMARY: &'static str = "runs SQL on the catalog: DataFusion here, Athena in production";
    type Config = AthenaQueryConfig;

    fn action(&self, config: AthenaQueryConfig) -> Arc<dyn TaskAction> {
        Arc::new(LocalAthenaQuery {
            source: config.source(),
            database: config.database.to_string(),
            output: config.output.into_uri(),
            expect: config.expect,
        })
    }
}

struct LocalAthenaQuery {
    source: QuerySource,
    database: String,
    output: S3Uri,
    expect: Expect,
}

/// Athena refuses a query string longer than this many bytes (a quota that
/// cannot be raised), so no `sql_file` needs more; reading stops there, so
/// a file that is a pipe or a device cannot fill memory.
pub const MAX_SQL_FILE_BYTES: u64 = 262_144;

/// The text of a `sql_file` (at `path`, already joined to the DAG's folder),
/// or a message naming the file and what to do.
pub fn read_sql_file(path: &std::path::Path) -> Result<String, String> {
    use engine::read_limit::{ReadLimitError, read_limited};
    let bytes = read_limited(path, MAX_SQL_FILE_BYTES).map_err(|e| match e {
        ReadLimitError::TooLarge { size, kind, .. } => {
            let what = match size {
                Some(size) => format!("is {size} bytes"),
                None => format!("({kind}) gave more than {MAX_SQL_FILE_BYTES} bytes"),
            };
            format!(
                "sql_file {} {what}; Athena accepts queries of at most {MAX_SQL_FILE_BYTES} bytes: split the query, or use a view",
                path.display()
            )
        }
        ReadLimitError::Io(e) => format!("cannot read sql_file {}: {e}", path.display()),
    })?;
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "sql_file {} is not UTF-8 text (invalid byte at offset {}); save it as UTF-8",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// A query's error as the attempt's failure: the user's (bad SQL, an
/// unknown table or database) fails the same way on every try.
fn sql_failure(e: crate::sql::SqlError) -> TaskFailure {
    if e.is_user_error() {
        TaskFailure::permanent(e.to_string())
    } else {
        TaskFailure::new(e.to_string())
    }
}

/// The query's text: inline, or read from its `sql_file` now.
async fn query_text(source: &QuerySource, attempt: &Attempt) -> Result<String, TaskFailure> {
    match source {
        QuerySource::Inline(sql) => Ok(sql.clone()),
        QuerySource::File(file) => {
            let path = attempt.dag_dir.join(file);
            tokio::task::spawn_blocking(move || read_sql_file(&path))
                .await
                .map_err(|e| TaskFailure::new(format!("reading sql_file stopped: {e}")))?
                .map_err(TaskFailure::permanent)
        }
    }
}

/// A UUID-shaped id (version 8, "custom") made from the attempt id.
pub fn query_execution_id(attempt_id: &str) -> String {
    let digest = Sha256::digest(attempt_id.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn cut(value: String) -> String {
    match value.char_indices().nth(MAX_SAMPLE_CHARS) {
        Some((end, _)) => format!("{}…", &value[..end]),
        None => value,
    }
}

#[async_trait]
impl TaskAction for LocalAthenaQuery {
    async fn run(&self, attempt: &Attempt) -> Result<Option<serde_json::Value>, TaskFailure> {
        let sql = query_text(&self.source, attempt).await?;
        let state_root = attempt.state_root.clone();
        let database = self.database.clone();
        let session = tokio::task::spawn_blocking(move || {
            QuerySession::open(&state_root, Some(database.as_str()))
        })
        .await
        .map_err(|e| TaskFailure::new(format!("opening the catalog stopped: {e}")))?
        .map_err(sql_failure)?;
        let span = crate::steps::step(&tracing::Span::current(), "athena.query", &sql);
        let result = session
            .query(&sql)
            .instrument(span.clone())
            .await
            .map_err(sql_failure);
        crate::steps::finish(&span, &result);
        let result = result?;
        drop(session);

        let id = query_execution_id(&attempt.attempt_id);
        let written = self.write_result(attempt, &id, &result).await?;
        self.log(attempt, &sql, &result, &written);

        let failures = expect::evaluate(&self.expect, result.batch());
        if !failures.is_empty() {
            return Err(TaskFailure::new(format!(
                "{}\nthe whole result is in {}",
                expect::report(&failures, result.batch()),
                written.csv
            )));
        }
        let mut sample: Vec<Vec<Option<String>>> = result
            .rows(Some(SAMPLE_ROWS))
            .map_err(|e| TaskFailure::new(e.to_string()))?
            .into_iter()
            .map(|row| row.into_iter().map(|v| v.map(cut)).collect())
            .collect();
        loop {
            let output = json!({
                "query_execution_id": id,
                "output_location": written.csv.to_string(),
                "metadata_location": written.metadata.to_string(),
                "rows": result.num_rows(),
                "columns": result.columns(),
                "sample": sample,
            });
            // Very wide rows: fewer of them, rather than an output over
            // the engine's limit.
            if sample.is_empty() || output.to_string().len() <= MAX_OUTPUT_BYTES {
                return Ok(Some(output));
            }
            sample.pop();
        }
    }
}

/// Where the result went.
struct Written {
    csv: S3Uri,
    metadata: S3Uri,
}

impl LocalAthenaQuery {
    async fn write_result(
        &self,
        attempt: &Attempt,
        id: &str,
        result: &QueryResult,
    ) -> Result<Written, TaskFailure> {
        let at = |name: String| {
            self.output
                .join(&name)
                .map_err(|e| TaskFailure::new(format!("cannot name the result object {name}: {e}")))
        };
        let written = Written {
            csv: at(format!("{id}.csv"))?,
            metadata: at(format!("{id}.csv.metadata"))?,
        };
        let csv = result
            .to_athena_csv()
            .map_err(|e| TaskFailure::new(e.to_string()))?;
        let mut metadata = serde_json::to_vec_pretty(&json!({
            "query_execution_id": id,
            "columns": result.columns(),
            "rows": result.num_rows(),
        }))
        .map_err(|e| TaskFailure::new(format!("cannot encode the result metadata: {e}")))?;
        metadata.push(b'\n');
        let s3 = LocalS3::new(&attempt.state_root);
        let (csv_uri, metadata_uri) = (written.csv.clone(), written.metadata.clone());
        tokio::task::spawn_blocking(move || {
            s3.put_bytes(&csv_uri, &csv)?;
            s3.put_bytes(&metadata_uri, &metadata)
        })
        .await
        .map_err(|e| TaskFailure::new(format!("writing the result stopped: {e}")))?
        .map_err(|e| TaskFailure::new(format!("cannot write the result: {e}")))?;
        Ok(written)
    }

    /// The SQL and a sample of the result in the attempt's `stdout.log`;
    /// a log that cannot be written is no reason to fail the query.
    fn log(&self, attempt: &Attempt, sql: &str, result: &QueryResult, written: &Written) {
        let table = result
            .text_table(Some(SAMPLE_ROWS))
            .unwrap_or_else(|e| format!("(cannot show the rows: {e})\n"));
        let text = format!(
            "database: {}\n{}\n\n{} rows, written to {}\n{}{}",
            self.database,
            sql.trim_end(),
            result.num_rows(),
            written.csv,
            table,
            if result.num_rows() > SAMPLE_ROWS {
                format!("(first {SAMPLE_ROWS} rows)\n")
            } else {
                String::new()
            }
        );
        let path = attempt.log_dir.join("stdout.log");
        if let Err(e) = fs::create_dir_all(&attempt.log_dir).and_then(|()| fs::write(&path, text)) {
            tracing::warn!(path = %path.display(), "cannot write the query log: {e}");
        }
    }
}
