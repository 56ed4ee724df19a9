//! `report`: renders a self-contained HTML report (inline CSS and SVG
//! charts, no script, nothing loaded from the network) from the results of
//! upstream tasks, and writes it to S3.
//!
//! ```toml
//! [tasks.report]
//! type = "report"
//! depends_on = ["kpis", "revenue_by_city", "daily", "clean"]
//! title = "Rental pipeline"                              # optional; the task id by default
//! output = "s3://${params.bucket}/reports/rental.html"   # required
//! quarantine_threshold = 0.05                            # optional, for row_counts
//! tiles = [
//!   { label = "Revenue", from = "kpis", column = "total_revenue", format = "money" },
//!   { label = "Rentals", from = "kpis", column = "total_transactions" },
//! ]
//!
//! [[tasks.report.sections]]
//! title = "Revenue by city"
//! from = "revenue_by_city"
//! chart = "bar"
//! label = "city"
//! value = "total_revenue"
//! format = "money"
//! limit = 10
//!
//! [[tasks.report.sections]]
//! title = "Data quality"
//! from = "clean"
//! chart = "row_counts"
//! ```
//!
//! * `title` — the report's heading (default: the task id).
//! * `output` — where the HTML goes: an `s3://` URI ending in `.html`.
//! * `tiles` — key figures at the top, each `{label, from, column, format,
//!   row}`: the value of `column` in row `row` (0-based, default 0) of the
//!   result of task `from`, written as `format`: `"number"` (default;
//!   `1,234` or `1,234.57`), `"money"` (`1,234.50`), `"hours"` (`1,234.5 h`)
//!   or `"text"` (as is). A NULL shows as `—`.
//! * `sections` — in order, each `{title, from, chart, label, value,
//!   format, limit}`. `chart` is
//!   * `"bar"`: horizontal bars, one per row in the query's order, `label`
//!     naming the column of the bar labels and `value` the column of their
//!     lengths (negative values point left);
//!   * `"line"`: a line through the rows in the query's order, `label`
//!     naming the x column (dates, months) and `value` the y column; a NULL
//!     value breaks the line;
//!   * `"table"`: every column of the result;
//!   * `"row_counts"`: the cleaning job's rows read, clean and quarantined
//!     per raw file, with the quarantine reasons; a file whose quarantined /
//!     read ratio is above `quarantine_threshold` (default 0.05, the job's
//!     own default gate) is highlighted.
//!
//!   `format` (`"number"`, `"money"` or `"hours"`, bar and line only)
//!   writes the values; `limit` keeps the first rows only. Without `limit`
//!   a bar chart shows at most [`DEFAULT_MAX_BARS`] bars and a table
//!   [`DEFAULT_MAX_TABLE_ROWS`] rows (more would not be readable), a line
//!   chart every row; the note under the section says what was left out.
//!
//! Every `from` must be a task this one depends on (`depends_on`): its
//! output is the data. For `bar`, `line`, `table` and tiles it is an
//! `athena_query` output, whose `output_location` CSV (Athena's format: a
//! header of column names, every value double-quoted) is read in full
//! through the local S3 store; `columns` gives the types, so a table writes
//! integers with thousands separators (except identifiers and years:
//! `*_id`, `id`, `*year*`, `*zip*`, `*_number` columns stay as they are) and
//! fractions with two decimals. An empty field is a NULL: Athena writes
//! NULL unquoted and an empty string quoted, but the CSV reader does not
//! tell the two apart, so both read as NULL. For `row_counts` it is the
//! counts JSON of `pyspark/rental_clean.py` (an `emr_spark` task's
//! `output_json`): `{"files": {"locations.csv": {"read", "clean",
//! "quarantined"}, ...}, "quarantine_reasons": {...},
//! "quarantine_reasons_by_file": {...}}`.
//!
//! The output:
//!
//! ```json
//! {"report": "s3://bucket/reports/rental.html",
//!  "local_path": "/abs/state/s3/bucket/reports/rental.html",
//!  "run_copy": "/abs/state/runs/RUN/report/1/rental.html",
//!  "bytes": 48213}
//! ```
//!
//! The file is replaced atomically, so a rerun (the engine runs a task at
//! least once) rewrites the same object, and the next run replaces it:
//! `run_copy`, beside the attempt's logs, is this run's report for good.
//!
//! # On AWS
//!
//! `export --sfn` makes the task a `lambda:invoke` of `[aws]
//! report_function`, and `export --cfn` creates that function from the
//! image `docker/report-lambda.Dockerfile` builds (`flux-engine lambda
//! report`). The function ([`aws`]) runs this module's code: the same
//! field checks ([`ReportSpec`]), the same CSV and counts parsing
//! and the same report, from a [`ReportSource`] that reads S3 instead of
//! the run's inputs: for an `athena_query` input the one `.csv` object
//! directly under this execution's results prefix (the newest if a retry
//! left several), for an `emr_spark` input its `output_json`. Athena's
//! `.csv.metadata` is not read, so on AWS a table's column types are
//! judged by the values (whole numbers get thousands separators, other
//! numbers two decimals), where locally the query's declared types decide;
//! the charts and tiles do not depend on them. The HTML goes to `output`
//! with `s3:PutObject`, content type `text/html`, and the function returns
//! `{"report": "s3://…html", "bytes": N}`.

pub mod aws;
pub mod sfn;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use engine::{Attempt, FieldError, Kind, TaskAction, TaskConfig, TaskFailure};
use reports::{
    Bar, BarChart, FileCounts, LineChart, Point, RowCounts, Section, SectionBody, Table,
    TableColumn, Tile, ValueFormat,
};
use serde::Deserialize;

use crate::s3::{LocalS3, S3Uri};

/// Without `limit`, a bar chart shows at most this many bars.
pub const DEFAULT_MAX_BARS: usize = 50;
/// Without `limit`, a table shows at most this many rows.
pub const DEFAULT_MAX_TABLE_ROWS: usize = 1000;
/// The default `quarantine_threshold`: `rental_clean.py`'s own
/// `--max-quarantine-ratio`.
pub const DEFAULT_QUARANTINE_THRESHOLD: f64 = 0.05;

/// What a NULL (or a tile's missing value) shows as.
const NULL_TEXT: &str = "—";
/// A bar or x label whose value is NULL.
const NULL_LABEL: &str = "(null)";

pub struct Report;

/// How a tile writes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TileFormat {
    Number(ValueFormat),
    Text,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TileSpec {
    pub label: String,
    pub from: String,
    pub column: String,
    pub format: TileFormat,
    pub row: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Chart {
    Bar {
        label: String,
        value: String,
    },
    /// `weekly`: the values summed per week (Monday to Sunday) of the
    /// dates in `label`.
    Line {
        label: String,
        value: String,
        weekly: bool,
    },
    Table,
    RowCounts,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SectionSpec {
    pub title: String,
    pub from: String,
    pub chart: Chart,
    pub format: ValueFormat,
    pub limit: Option<usize>,
}

/// A `report` task's fields, checked: what the local task renders and
/// what the Lambda function reads from its payload.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ReportSpec {
    pub(crate) title: Option<String>,
    #[serde(deserialize_with = "html_output")]
    pub(crate) output: S3Uri,
    #[serde(default, deserialize_with = "tiles")]
    pub(crate) tiles: Vec<TileSpec>,
    #[serde(default, deserialize_with = "sections")]
    pub(crate) sections: Vec<SectionSpec>,
    #[serde(
        default = "default_quarantine_threshold",
        deserialize_with = "quarantine_threshold"
    )]
    pub(crate) quarantine_threshold: f64,
    /// Label and value pairs shown under the title: what the report was
    /// made from (`${params.input_dir}`, the currency, ...).
    #[serde(default)]
    pub(crate) about: Vec<AboutItem>,
}

/// One line of the report's `about` table.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AboutItem {
    pub label: String,
    pub value: String,
}

/// A tile as written in TOML; checked into a [`TileSpec`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TileToml {
    label: String,
    from: String,
    column: String,
    format: Option<String>,
    row: Option<i64>,
}

/// A section as written in TOML; checked into a [`SectionSpec`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SectionToml {
    title: String,
    from: String,
    chart: String,
    label: Option<String>,
    value: Option<String>,
    format: Option<String>,
    limit: Option<i64>,
    /// `"week"`: a line chart of the values summed per week.
    bucket: Option<String>,
}

const TILE_FORMATS: &str = "\"number\", \"money\", \"hours\" or \"text\"";
const CHART_KINDS: &str = "\"bar\", \"line\", \"table\" or \"row_counts\"";

fn value_format(name: &str) -> Option<ValueFormat> {
    match name {
        "number" => Some(ValueFormat::Number),
        "money" => Some(ValueFormat::Money),
        "hours" => Some(ValueFormat::Hours),
        _ => None,
    }
}

/// Deserializes each element of an array field on its own, so that an
/// error names the element (`tiles[2]`).
fn elements<T: serde::de::DeserializeOwned>(
    field: &'static str,
    items: Vec<toml::Value>,
    example: &str,
) -> Result<Vec<T>, FieldError> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            item.try_into().map_err(|e: toml::de::Error| {
                FieldError::field(field, format!("`{field}[{i}]`: {}", e.message().trim()))
                    .help(format!("write each entry as {example}"))
            })
        })
        .collect()
}

/// Checks a `from`: a task id, which the run checks is a dependency.
fn check_from(field: &'static str, at: &str, from: &str) -> Result<(), FieldError> {
    if engine::dag::valid_task_id(from) {
        Ok(())
    } else {
        Err(FieldError::field(
            field,
            format!("`{at}.from` `{from}` is not a task id"),
        )
        .help("`from` names the upstream task whose output holds the data, and the report must depend on it"))
    }
}

fn check_limit(at: &str, limit: Option<i64>) -> Result<Option<usize>, FieldError> {
    match limit {
        None => Ok(None),
        Some(n) if n >= 1 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        Some(n) => Err(FieldError::field(
            "sections",
            format!("`{at}.limit` is {n}; it must be at least 1"),
        )
        .help("`limit` keeps the first rows of the result; leave it out for the default")),
    }
}

fn tile_spec(i: usize, tile: TileToml) -> Result<TileSpec, FieldError> {
    let at = format!("tiles[{i}]");
    check_from("tiles", &at, &tile.from)?;
    if tile.column.is_empty() {
        return Err(
            FieldError::field("tiles", format!("`{at}.column` is empty"))
                .help("name the result column that holds the tile's value"),
        );
    }
    let format = match tile.format.as_deref() {
        None => TileFormat::Number(ValueFormat::Number),
        Some("text") => TileFormat::Text,
        Some(name) => TileFormat::Number(value_format(name).ok_or_else(|| {
            FieldError::field(
                "tiles",
                format!("`{at}.format` `{name}` is not a tile format"),
            )
            .help(format!("use {TILE_FORMATS}"))
        })?),
    };
    let row = match tile.row {
        None => 0,
        Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
        Some(n) => {
            return Err(FieldError::field(
                "tiles",
                format!("`{at}.row` is {n}; rows count from 0"),
            )
            .help("leave `row` out for the first row"));
        }
    };
    Ok(TileSpec {
        label: tile.label,
        from: tile.from,
        column: tile.column,
        format,
        row,
    })
}

fn section_spec(i: usize, section: SectionToml) -> Result<SectionSpec, FieldError> {
    let at = format!("sections[{i}]");
    check_from("sections", &at, &section.from)?;
    let columns = |kind: &str| -> Result<(String, String), FieldError> {
        match (&section.label, &section.value) {
            (Some(label), Some(value)) if !label.is_empty() && !value.is_empty() => {
                Ok((label.clone(), value.clone()))
            }
            _ => Err(FieldError::field(
                "sections",
                format!("`{at}` (chart = \"{kind}\") needs `label` and `value`"),
            )
            .help("name the result columns: `label = \"city\"`, `value = \"total_revenue\"`")),
        }
    };
    let takes_no_columns = |kind: &str| -> Result<(), FieldError> {
        if section.label.is_some() || section.value.is_some() || section.format.is_some() {
            Err(FieldError::field(
                "sections",
                format!("`{at}`: `label`, `value` and `format` are for bar and line charts, not chart = \"{kind}\""),
            )
            .help("remove them, or use chart = \"bar\" or \"line\""))
        } else {
            Ok(())
        }
    };
    if section.bucket.is_some() && section.chart != "line" {
        return Err(FieldError::field(
            "sections",
            format!(
                "`{at}.bucket` is for line charts, not chart = \"{}\"",
                section.chart
            ),
        )
        .help("remove `bucket`, or use chart = \"line\""));
    }
    let chart = match section.chart.as_str() {
        "bar" => {
            let (label, value) = columns("bar")?;
            Chart::Bar { label, value }
        }
        "line" => {
            let (label, value) = columns("line")?;
            let weekly = match section.bucket.as_deref() {
                None => false,
                Some("week") => true,
                Some(other) => {
                    return Err(FieldError::field(
                        "sections",
                        format!("`{at}.bucket` `{other}` is not a bucket"),
                    )
                    .help("use bucket = \"week\" (values summed per week of the `label` dates), or leave it out"));
                }
            };
            Chart::Line {
                label,
                value,
                weekly,
            }
        }
        "table" => {
            takes_no_columns("table")?;
            Chart::Table
        }
        "row_counts" => {
            takes_no_columns("row_counts")?;
            if section.limit.is_some() {
                return Err(FieldError::field(
                    "sections",
                    format!("`{at}`: `limit` does not apply to chart = \"row_counts\""),
                )
                .help("row_counts always shows every file; remove `limit`"));
            }
            Chart::RowCounts
        }
        other => {
            return Err(FieldError::field(
                "sections",
                format!("`{at}.chart` `{other}` is not a chart kind"),
            )
            .help(format!("use {CHART_KINDS}")));
        }
    };
    let format = match section.format.as_deref() {
        None => ValueFormat::Number,
        Some(name) => value_format(name).ok_or_else(|| {
            FieldError::field(
                "sections",
                format!("`{at}.format` `{name}` is not a value format"),
            )
            .help("use \"number\", \"money\" or \"hours\"")
        })?,
    };
    Ok(SectionSpec {
        title: section.title,
        from: section.from,
        chart,
        format,
        limit: check_limit(&at, section.limit)?,
    })
}

/// `quarantine_threshold` as a number. A string holding one is accepted
/// too, because `${params.NAME}` substitutes text: the rental DAG shares
/// one `max_quarantine_ratio` parameter between the clean job and the
/// report.
fn ratio(value: &toml::Value) -> Result<f64, FieldError> {
    let number = match value {
        toml::Value::Float(x) => Some(*x),
        toml::Value::Integer(n) => Some(*n as f64),
        toml::Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    };
    number.filter(|x| x.is_finite()).ok_or_else(|| {
        FieldError::field(
            "quarantine_threshold",
            format!("`quarantine_threshold` must be a number between 0 and 1, found {value}"),
        )
        .help("for example `quarantine_threshold = 0.05` (or a parameter holding one)")
    })
}

impl Kind for Report {
    const NAME: &'static str = "report";
    const SUMMARY: &'static str = "renders a self-contained HTML report from query results";
    type Config = ReportSpec;

    fn action(&self, spec: ReportSpec) -> Arc<dyn TaskAction> {
        Arc::new(LocalReport { spec })
    }
}

/// `output`: an `s3://` URI of an `.html` file.
fn html_output<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<S3Uri, D::Error> {
    let text = String::deserialize(deserializer)?;
    S3Uri::parse(&text)
        .ok()
        .filter(|uri| !uri.is_prefix() && uri.key().ends_with(".html"))
        .ok_or_else(|| {
            engine::config::invalid(
                &format!("`output` `{text}` is not an s3:// URI of an .html file"),
                Some("write for example `output = \"s3://bucket/reports/rental.html\"`"),
            )
        })
}

/// A [`FieldError`] on its way out of a field's `Deserialize`.
fn invalid<E: serde::de::Error>(e: FieldError) -> E {
    engine::config::invalid(&e.message, e.help.as_deref())
}

fn tiles<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<TileSpec>, D::Error> {
    let items = Vec::<toml::Value>::deserialize(deserializer)?;
    elements::<TileToml>(
        "tiles",
        items,
        "{ label = \"Revenue\", from = \"kpis\", column = \"total_revenue\", format = \"money\" }",
    )
    .and_then(|tiles| {
        tiles
            .into_iter()
            .enumerate()
            .map(|(i, t)| tile_spec(i, t))
            .collect()
    })
    .map_err(invalid)
}

fn sections<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<SectionSpec>, D::Error> {
    let items = Vec::<toml::Value>::deserialize(deserializer)?;
    elements::<SectionToml>(
        "sections",
        items,
        "{ title = \"Revenue by city\", from = \"by_city\", chart = \"bar\", label = \"city\", value = \"total_revenue\" }",
    )
    .and_then(|sections| {
        sections
            .into_iter()
            .enumerate()
            .map(|(i, s)| section_spec(i, s))
            .collect()
    })
    .map_err(invalid)
}

fn default_quarantine_threshold() -> f64 {
    DEFAULT_QUARANTINE_THRESHOLD
}

fn quarantine_threshold<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<f64, D::Error> {
    ratio(&toml::Value::deserialize(deserializer)?).map_err(invalid)
}

impl TaskConfig for ReportSpec {
    const READS_TASKS: bool = true;

    fn references(&self) -> Vec<(String, String)> {
        let tiles = self
            .tiles
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("tiles[{i}].from"), t.from.clone()));
        let sections = self
            .sections
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("sections[{i}].from"), s.from.clone()));
        tiles.chain(sections).collect()
    }

    fn check(&self) -> Result<(), FieldError> {
        if self.tiles.is_empty() && self.sections.is_empty() {
            return Err(FieldError::field(
                "sections",
                "a report needs at least one tile or section",
            )
            .help("add `tiles = [...]` or `[[tasks.ID.sections]]` tables"));
        }
        let quarantine_threshold = self.quarantine_threshold;
        if !(0.0..=1.0).contains(&quarantine_threshold) {
            return Err(FieldError::field(
                "quarantine_threshold",
                format!("`quarantine_threshold` is {quarantine_threshold}; it is a ratio between 0 and 1"),
            )
            .help("0.05 highlights a file with more than 5% of its rows quarantined"));
        }
        Ok(())
    }
}

struct LocalReport {
    spec: ReportSpec,
}

#[async_trait]
impl TaskAction for LocalReport {
    async fn run(&self, attempt: &Attempt) -> Result<Option<serde_json::Value>, TaskFailure> {
        let spec = self.spec.clone();
        let attempt = attempt.clone();
        tokio::task::spawn_blocking(move || spec.write(&attempt))
            .await
            .map_err(|e| TaskFailure::new(format!("the report stopped unexpectedly: {e}")))?
            .map(Some)
    }
}

/// An `athena_query` result, read from its CSV.
#[derive(Debug)]
pub(crate) struct QueryResult {
    /// The task it came from.
    pub from: String,
    pub columns: Vec<String>,
    /// Athena's type of each column (`bigint`, `double`, `varchar`), when
    /// the output lists it.
    pub types: Vec<Option<String>>,
    /// `None` is a NULL.
    pub rows: Vec<Vec<Option<String>>>,
}

impl QueryResult {
    /// The index of `column`; `field` is the field that named it, for the
    /// error.
    fn column(&self, field: &str, column: &str) -> Result<usize, TaskFailure> {
        // Athena lowercases column names; accept the name as written in the
        // query too.
        self.columns
            .iter()
            .position(|c| c == column)
            .or_else(|| {
                self.columns
                    .iter()
                    .position(|c| c.eq_ignore_ascii_case(column))
            })
            .ok_or_else(|| {
                TaskFailure::new(format!(
                    "`{field}`: column `{column}` is not in the result of `{}`; its columns are: {}",
                    self.from,
                    if self.columns.is_empty() {
                        "(none)".to_string()
                    } else {
                        self.columns.join(", ")
                    }
                ))
            })
    }
}

/// Where a report's data comes from. The local task reads its inputs'
/// outputs and the local S3 store ([`LocalSource`]); the Lambda function
/// reads S3 ([`aws`]). Everything after reading the bytes (the CSV and
/// counts parsing, the report, the HTML) is the same code for both.
pub(crate) trait ReportSource {
    /// The CSV result of the `athena_query` task `from`, which `field`
    /// names.
    fn query_result(&self, field: &str, from: &str) -> Result<QueryData, TaskFailure>;
    /// The cleaning job's counts JSON from the task `from`, which `field`
    /// names.
    fn row_counts(&self, field: &str, from: &str) -> Result<serde_json::Value, TaskFailure>;
}

/// An `athena_query` result as read, before parsing.
#[derive(Debug, Clone)]
pub(crate) struct QueryData {
    /// Where it was read, for messages (`s3://…/ID.csv`).
    pub location: String,
    /// The CSV in Athena's format.
    pub bytes: Vec<u8>,
    /// Athena's type of each column by name, when known (the local task's
    /// output lists them; on AWS they would be in `.csv.metadata`, which is
    /// not read, so it is empty there and formatting judges by the values).
    pub types: BTreeMap<String, String>,
}

/// The local task's source: the attempt's inputs, and the local S3 store
/// their `output_location`s point into.
pub(crate) struct LocalSource<'a> {
    pub attempt: &'a Attempt,
    pub s3: &'a LocalS3,
}

impl ReportSource for LocalSource<'_> {
    fn query_result(&self, field: &str, from: &str) -> Result<QueryData, TaskFailure> {
        let (uri, types) = query_result_of(input(self.attempt, field, from)?, field, from)?;
        let bytes = self.s3.get(&uri).map_err(|e| {
            TaskFailure::new(format!(
                "`{field}` = \"{from}\": cannot read the query result: {e}"
            ))
        })?;
        Ok(QueryData {
            location: uri.to_string(),
            bytes,
            types,
        })
    }

    fn row_counts(&self, field: &str, from: &str) -> Result<serde_json::Value, TaskFailure> {
        // Locally the cleaning job's `output_json` is the task's output.
        input(self.attempt, field, from).cloned()
    }
}

/// Where an `athena_query` task's `output` says its result is, and the
/// Athena type of each column it lists.
pub(crate) fn query_result_of(
    output: &serde_json::Value,
    field: &str,
    from: &str,
) -> Result<(S3Uri, BTreeMap<String, String>), TaskFailure> {
    let location = output
        .get("output_location")
        .and_then(|v| v.as_str())
        .ok_or_else(|| {
            TaskFailure::new(format!(
                "`{field}` = \"{from}\": the output of `{from}` has no `output_location`, so it is not an athena_query result (a row_counts section reads the cleaning job's counts instead)"
            ))
        })?;
    let uri = S3Uri::parse(location)
        .map_err(|e| TaskFailure::new(format!("`{field}` = \"{from}\": `output_location`: {e}")))?;
    let types = output
        .get("columns")
        .and_then(|c| c.as_array())
        .map(|columns| {
            columns
                .iter()
                .filter_map(|c| {
                    Some((
                        c.get("name")?.as_str()?.to_string(),
                        c.get("type")?.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((uri, types))
}

/// The output of task `from`, which `field` names.
pub(crate) fn input<'a>(
    attempt: &'a Attempt,
    field: &str,
    from: &str,
) -> Result<&'a serde_json::Value, TaskFailure> {
    attempt.inputs.get(from).ok_or_else(|| {
        missing_input(
            field,
            from,
            &attempt.task_id,
            attempt.inputs.keys().map(String::as_str),
        )
    })
}

/// `field` names `from`, which is not one of `task`'s inputs.
pub(crate) fn missing_input<'a>(
    field: &str,
    from: &str,
    task: &str,
    inputs: impl Iterator<Item = &'a str>,
) -> TaskFailure {
    let inputs: Vec<&str> = inputs.collect();
    let available = if inputs.is_empty() {
        "it has no inputs".to_string()
    } else {
        format!("its inputs are: {}", inputs.join(", "))
    };
    TaskFailure::permanent(format!(
        "`{field}` = \"{from}\": task `{task}` has no input from `{from}` ({available}); add \"{from}\" to its `depends_on`"
    ))
}

/// Parses an `athena_query` result: a header of column names, then rows;
/// an empty field is a NULL.
pub(crate) fn parse_query_result(
    field: &str,
    from: &str,
    data: &QueryData,
) -> Result<QueryResult, TaskFailure> {
    let location = &data.location;
    let failed = |e: csv::Error| {
        TaskFailure::new(format!(
            "`{field}` = \"{from}\": {location} is not a valid CSV result: {e}"
        ))
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(data.bytes.as_slice());
    let columns: Vec<String> = reader
        .headers()
        .map_err(failed)?
        .iter()
        .map(str::to_string)
        .collect();
    let rows = reader
        .records()
        .map(|record| {
            record.map(|r| {
                r.iter()
                    .map(|v| (!v.is_empty()).then(|| v.to_string()))
                    .collect::<Vec<_>>()
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(failed)?;
    let types = columns
        .iter()
        .map(|c| data.types.get(c).map(|t| t.to_ascii_lowercase()))
        .collect();
    Ok(QueryResult {
        from: from.to_string(),
        columns,
        types,
        rows,
    })
}

/// The cleaning job's counts, as a report section.
fn read_row_counts(
    field: &str,
    from: &str,
    output: &serde_json::Value,
    threshold: f64,
) -> Result<RowCounts, TaskFailure> {
    let wrong = |why: String| {
        TaskFailure::new(format!(
            "`{field}` = \"{from}\": {why}; a row_counts section reads the counts JSON of pyspark/rental_clean.py ({{\"files\": {{\"locations.csv\": {{\"read\": N, \"clean\": N, \"quarantined\": N}}, ...}}, \"quarantine_reasons\": {{...}}}})"
        ))
    };
    let files = output
        .get("files")
        .and_then(|f| f.as_object())
        .ok_or_else(|| wrong(format!("the output of `{from}` has no `files` object")))?;
    let reasons_of = |value: Option<&serde_json::Value>, what: &str| {
        let Some(value) = value else {
            return Ok(Vec::new());
        };
        let object = value
            .as_object()
            .ok_or_else(|| wrong(format!("`{what}` is not an object")))?;
        object
            .iter()
            .map(|(reason, n)| {
                n.as_u64()
                    .map(|n| (reason.clone(), n))
                    .ok_or_else(|| wrong(format!("`{what}.{reason}` is not a count")))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let by_file = output.get("quarantine_reasons_by_file");
    let files = files
        .iter()
        .map(|(file, counts)| {
            let count = |name: &str| {
                counts.get(name).and_then(|n| n.as_u64()).ok_or_else(|| {
                    wrong(format!("`files.{file}.{name}` is missing or not a count"))
                })
            };
            Ok(FileCounts {
                file: file.clone(),
                read: count("read")?,
                clean: count("clean")?,
                quarantined: count("quarantined")?,
                reasons: reasons_of(
                    by_file.and_then(|b| b.get(file)),
                    &format!("quarantine_reasons_by_file.{file}"),
                )?,
            })
        })
        .collect::<Result<Vec<_>, TaskFailure>>()?;
    Ok(RowCounts {
        files,
        reasons: reasons_of(output.get("quarantine_reasons"), "quarantine_reasons")?,
        threshold,
    })
}

/// Whether an integer column holds identifiers or years, which read wrong
/// with thousands separators (`location 8,118`, `2,024`).
fn is_code_column(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "id"
        || name.ends_with("_id")
        || name.contains("year")
        || name.contains("zip")
        || name.ends_with("_number")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnKind {
    Integer,
    Fraction,
    Other,
}

fn column_kind(result: &QueryResult, i: usize) -> ColumnKind {
    match result.types[i].as_deref() {
        Some("bigint" | "integer" | "int" | "smallint" | "tinyint") => ColumnKind::Integer,
        Some(t) if t == "double" || t == "float" || t == "real" || t.starts_with("decimal") => {
            ColumnKind::Fraction
        }
        Some(_) => ColumnKind::Other,
        // No declared type: judge by the values.
        None => {
            let mut values = result.rows.iter().filter_map(|r| r.get(i)?.as_deref());
            let mut any = false;
            let mut integers = true;
            for v in values.by_ref() {
                any = true;
                if v.parse::<i64>().is_err() {
                    integers = false;
                    if v.parse::<f64>().is_err() {
                        return ColumnKind::Other;
                    }
                }
            }
            match (any, integers) {
                (false, _) => ColumnKind::Other,
                (true, true) => ColumnKind::Integer,
                (true, false) => ColumnKind::Fraction,
            }
        }
    }
}

/// A table cell as shown: numbers with separators, identifiers as they are.
fn table_cell(kind: ColumnKind, code: bool, value: Option<&str>) -> String {
    let Some(value) = value else {
        return NULL_TEXT.to_string();
    };
    match kind {
        ColumnKind::Integer if !code => match value.parse::<i64>() {
            Ok(n) if n < 0 => format!("-{}", reports::format_count(n.unsigned_abs())),
            Ok(n) => reports::format_count(n.unsigned_abs()),
            Err(_) => value.to_string(),
        },
        ColumnKind::Fraction => match value.parse::<f64>() {
            Ok(x) if x.is_finite() => reports::format_number(x),
            _ => value.to_string(),
        },
        _ => value.to_string(),
    }
}

/// A cell that must hold a number; `None` for a NULL.
fn number(
    result: &QueryResult,
    field: &str,
    column: usize,
    row: usize,
) -> Result<Option<f64>, TaskFailure> {
    let Some(text) = result.rows[row].get(column).and_then(|v| v.as_deref()) else {
        return Ok(None);
    };
    match text.trim().parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(Some(x)),
        _ => Err(TaskFailure::new(format!(
            "`{field}`: column `{}` of `{}` holds `{text}` in row {row} (0-based), which is not a number",
            result.columns[column], result.from
        ))),
    }
}

/// `first 10 of 300 rows` or `300 rows`.
fn rows_note(shown: usize, total: usize) -> String {
    let count = |n: usize| reports::format_count(n as u64);
    if shown < total {
        format!("first {} of {} rows", count(shown), count(total))
    } else if total == 1 {
        "1 row".to_string()
    } else {
        format!("{} rows", count(total))
    }
}

impl ReportSpec {
    /// Builds the report from the attempt's inputs, renders it and writes
    /// it to `output`.
    pub(crate) fn write(&self, attempt: &Attempt) -> Result<serde_json::Value, TaskFailure> {
        let s3 = LocalS3::new(&attempt.state_root);
        let source = LocalSource { attempt, s3: &s3 };
        let report = self.build(&source, &attempt.run_id, &attempt.task_id)?;
        let html = reports::to_html(&report);
        s3.put_bytes(&self.output, html.as_bytes())
            .map_err(|e| TaskFailure::new(format!("cannot write the report: {e}")))?;
        let path = s3.path_of(&self.output);
        let local_path = std::path::absolute(&path).unwrap_or(path);
        // `output` is the current report, which the next run replaces;
        // the run keeps its own copy beside its logs, which `show` names.
        let name = self
            .output
            .key()
            .rsplit('/')
            .next()
            .unwrap_or("report.html");
        let copy = attempt.log_dir.join(name);
        std::fs::create_dir_all(&attempt.log_dir)
            .and_then(|()| std::fs::write(&copy, html.as_bytes()))
            .map_err(|e| {
                TaskFailure::new(format!(
                    "cannot keep the run's copy of the report at {}: {e}",
                    copy.display()
                ))
            })?;
        let copy = std::path::absolute(&copy).unwrap_or(copy);
        Ok(serde_json::json!({
            "report": self.output.to_string(),
            "local_path": local_path.display().to_string(),
            "run_copy": copy.display().to_string(),
            "bytes": html.len(),
        }))
    }

    /// The tasks whose query results the report reads, each with the first
    /// field that names it, in field order.
    pub(crate) fn query_inputs(&self) -> Vec<(String, String)> {
        let mut seen: Vec<(String, String)> = Vec::new();
        let mut add = |field: String, from: &str| {
            if !seen.iter().any(|(_, f)| f == from) {
                seen.push((field, from.to_string()));
            }
        };
        for (i, tile) in self.tiles.iter().enumerate() {
            add(format!("tiles[{i}].from"), &tile.from);
        }
        for (i, section) in self.sections.iter().enumerate() {
            if section.chart != Chart::RowCounts {
                add(format!("sections[{i}].from"), &section.from);
            }
        }
        seen
    }

    /// The tasks whose counts JSON the report reads (`row_counts`
    /// sections), each with the field that names it.
    pub(crate) fn counts_inputs(&self) -> Vec<(String, String)> {
        self.sections
            .iter()
            .enumerate()
            .filter(|(_, section)| section.chart == Chart::RowCounts)
            .map(|(i, section)| (format!("sections[{i}].from"), section.from.clone()))
            .collect()
    }

    /// Builds the report from `source`; `run` and `task` name what made it
    /// (the run id locally, the execution name on AWS).
    pub(crate) fn build(
        &self,
        source: &dyn ReportSource,
        run: &str,
        task: &str,
    ) -> Result<reports::Report, TaskFailure> {
        // Several tiles and sections often read one query: read each once.
        let mut results: BTreeMap<String, QueryResult> = BTreeMap::new();
        for (field, from) in self.query_inputs() {
            let data = source.query_result(&field, &from)?;
            let read = parse_query_result(&field, &from, &data)?;
            results.insert(from, read);
        }

        let tiles = self
            .tiles
            .iter()
            .enumerate()
            .map(|(i, tile)| tile_value(&results[&tile.from], i, tile))
            .collect::<Result<Vec<_>, _>>()?;
        let sections = self
            .sections
            .iter()
            .enumerate()
            .map(|(i, section)| {
                let field = format!("sections[{i}]");
                if section.chart == Chart::RowCounts {
                    let output = source.row_counts(&format!("{field}.from"), &section.from)?;
                    let counts = read_row_counts(
                        &format!("{field}.from"),
                        &section.from,
                        &output,
                        self.quarantine_threshold,
                    )?;
                    return Ok(Section {
                        title: section.title.clone(),
                        note: Some(format!("Source: task `{}`.", section.from)),
                        body: SectionBody::RowCounts(counts),
                    });
                }
                query_section(&results[&section.from], &field, section)
            })
            .collect::<Result<Vec<_>, TaskFailure>>()?;

        let generated = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
        Ok(reports::Report {
            title: self.title.clone().unwrap_or_else(|| task.to_string()),
            subtitle: Some(format!("Generated {generated} by run {run}, task {task}")),
            about: self
                .about
                .iter()
                .map(|item| (item.label.clone(), item.value.clone()))
                .collect(),
            tiles,
            sections,
        })
    }
}

/// Daily points summed per week, Monday to Sunday, each week labelled by
/// its Monday (`YYYY-MM-DD`), in date order; a day without a value adds
/// nothing, a week without any value is a gap. Also the weeks with fewer
/// than 7 days present (`2024-05-27 (5 days)`). A label that is not a
/// date is an error naming the section.
fn weekly_sums(
    field: &str,
    label: &str,
    points: &[(String, Option<f64>)],
) -> Result<(Vec<Point>, Vec<String>), TaskFailure> {
    use chrono::{Datelike, NaiveDate};
    // Monday -> (sum, days present, days with a value)
    let mut weeks: BTreeMap<NaiveDate, (f64, u32, u32)> = BTreeMap::new();
    for (row, (x, y)) in points.iter().enumerate() {
        let day = x
            .get(..10)
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .ok_or_else(|| {
                TaskFailure::new(format!(
                    "`{field}.bucket = \"week\"` sums the values per week of the dates in `{label}`, but row {row} holds `{x}`, which is not a date (YYYY-MM-DD)"
                ))
            })?;
        let monday = day - chrono::Days::new(u64::from(day.weekday().num_days_from_monday()));
        let week = weeks.entry(monday).or_insert((0.0, 0, 0));
        week.1 += 1;
        if let Some(y) = y {
            week.0 += y;
            week.2 += 1;
        }
    }
    let partial = weeks
        .iter()
        .filter(|(_, (_, days, _))| *days < 7)
        .map(|(monday, (_, days, _))| {
            format!("{monday} ({days} day{})", if *days == 1 { "" } else { "s" })
        })
        .collect();
    let points = weeks
        .into_iter()
        .map(|(monday, (sum, _, valued))| Point {
            x: monday.to_string(),
            y: if valued == 0 { f64::NAN } else { sum },
        })
        .collect();
    Ok((points, partial))
}

fn tile_value(result: &QueryResult, i: usize, tile: &TileSpec) -> Result<Tile, TaskFailure> {
    let column = result.column(&format!("tiles[{i}].column"), &tile.column)?;
    if tile.row >= result.rows.len() {
        return Err(TaskFailure::new(format!(
            "`tiles[{i}].row` is {}, but `{}` returned {} (rows count from 0)",
            tile.row,
            tile.from,
            rows_note(result.rows.len(), result.rows.len())
        )));
    }
    let value = match tile.format {
        TileFormat::Text => result.rows[tile.row][column]
            .clone()
            .unwrap_or_else(|| NULL_TEXT.to_string()),
        TileFormat::Number(format) => {
            match number(result, &format!("tiles[{i}].column"), column, tile.row)? {
                Some(x) => format.format(x),
                None => NULL_TEXT.to_string(),
            }
        }
    };
    Ok(Tile {
        label: tile.label.clone(),
        value,
    })
}

fn query_section(
    result: &QueryResult,
    field: &str,
    section: &SectionSpec,
) -> Result<Section, TaskFailure> {
    let total = result.rows.len();
    let mut notes = vec![format!("Source: task `{}`", section.from)];
    let body = match &section.chart {
        Chart::Bar { label, value } | Chart::Line { label, value, .. } => {
            let is_bar = matches!(section.chart, Chart::Bar { .. });
            let label_at = result.column(&format!("{field}.label"), label)?;
            let value_at = result.column(&format!("{field}.value"), value)?;
            let shown = section
                .limit
                .unwrap_or(if is_bar { DEFAULT_MAX_BARS } else { total })
                .min(total);
            notes.push(rows_note(shown, total));
            let mut points = Vec::with_capacity(shown);
            let mut nulls = 0;
            for row in 0..shown {
                let x = result.rows[row][label_at]
                    .clone()
                    .unwrap_or_else(|| NULL_LABEL.to_string());
                let y = number(result, &format!("{field}.value"), value_at, row)?;
                if y.is_none() {
                    nulls += 1;
                }
                points.push((x, y));
            }
            if nulls > 0 {
                notes.push(format!(
                    "{} with a NULL `{value}` {}",
                    rows_note(nulls, nulls),
                    if is_bar { "left out" } else { "shown as gaps" }
                ));
            }
            if is_bar {
                SectionBody::Bar(BarChart {
                    bars: points
                        .into_iter()
                        .filter_map(|(label, value)| {
                            Some(Bar {
                                label,
                                value: value?,
                            })
                        })
                        .collect(),
                    format: section.format,
                })
            } else {
                let points = if matches!(section.chart, Chart::Line { weekly: true, .. }) {
                    let (weeks, partial) = weekly_sums(field, label, &points)?;
                    if !partial.is_empty() {
                        notes.push(format!(
                            "{} with fewer than 7 days of data: {}",
                            if partial.len() == 1 {
                                "a week"
                            } else {
                                "weeks"
                            },
                            partial.join(", ")
                        ));
                    }
                    weeks
                } else {
                    points
                        .into_iter()
                        .map(|(x, y)| Point {
                            x,
                            y: y.unwrap_or(f64::NAN),
                        })
                        .collect()
                };
                SectionBody::Line(LineChart {
                    points,
                    format: section.format,
                })
            }
        }
        Chart::Table => {
            let shown = section.limit.unwrap_or(DEFAULT_MAX_TABLE_ROWS).min(total);
            notes.push(rows_note(shown, total));
            let kinds: Vec<ColumnKind> = (0..result.columns.len())
                .map(|i| column_kind(result, i))
                .collect();
            let codes: Vec<bool> = result.columns.iter().map(|c| is_code_column(c)).collect();
            SectionBody::Table(Table {
                columns: result
                    .columns
                    .iter()
                    .zip(&kinds)
                    .map(|(name, kind)| TableColumn {
                        name: name.clone(),
                        numeric: *kind != ColumnKind::Other,
                    })
                    .collect(),
                rows: result.rows[..shown]
                    .iter()
                    .map(|row| {
                        row.iter()
                            .enumerate()
                            .map(|(i, v)| table_cell(kinds[i], codes[i], v.as_deref()))
                            .collect()
                    })
                    .collect(),
            })
        }
        Chart::RowCounts => unreachable!("row_counts sections are built from the counts JSON"),
    };
    Ok(Section {
        title: section.title.clone(),
        note: Some(format!("{}.", notes.join(" · "))),
        body,
    })
}
