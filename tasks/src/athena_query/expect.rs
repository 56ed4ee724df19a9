//! `expect`: checks on a query's result, the data-quality gate of a
//! pipeline. Parsed with the task's fields; evaluated on the whole result.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, StringArray, UInt32Array,
};
use datafusion::arrow::compute::kernels::cmp;
use datafusion::arrow::compute::{
    CastOptions, SortOptions, cast, cast_with_options, sort_to_indices, take,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::FormatOptions;
use engine::FieldError;
use serde::Deserialize;

use crate::sql::{athena_type_name, cells, headers, text_table};

/// At most this many offending rows are shown per failed check.
pub const MAX_OFFENDING_ROWS: usize = 10;

/// Values in the offending rows' tables are cut to this many characters.
const MAX_CELL_CHARS: usize = 60;

/// The `expect` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectSpec {
    rows: Option<u64>,
    min_rows: Option<u64>,
    max_rows: Option<u64>,
    #[serde(default)]
    columns: toml::Table,
}

/// One column's checks as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnSpec {
    min: Option<toml::Value>,
    max: Option<toml::Value>,
    #[serde(default)]
    not_null: bool,
    #[serde(rename = "in")]
    one_of: Option<Vec<toml::Value>>,
}

/// The checks, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expect {
    pub rows: Option<u64>,
    pub min_rows: Option<u64>,
    pub max_rows: Option<u64>,
    /// In the order written.
    pub columns: Vec<ColumnExpect>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnExpect {
    pub name: String,
    pub min: Option<Expected>,
    pub max: Option<Expected>,
    pub not_null: bool,
    pub one_of: Option<Vec<Expected>>,
    /// The checks as written, in their order and with their TOML values:
    /// what the Step Functions export writes as SQL literals.
    pub written: toml::Table,
}

/// A value from the DAG file to compare result values with.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    Number(f64),
    Text(String),
    Bool(bool),
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::Number(n) => write!(f, "{n}"),
            Expected::Text(s) => write!(f, "{s:?}"),
            Expected::Bool(b) => write!(f, "{b}"),
        }
    }
}

fn field_error(message: impl Into<String>) -> FieldError {
    FieldError::field("expect", message)
}

/// The `expect` field of a task's config.
impl<'de> serde::Deserialize<'de> for Expect {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Expect::from_toml(toml::Value::deserialize(deserializer)?)
            .map_err(|e| engine::config::invalid(&e.message, e.help.as_deref()))
    }
}

impl Expect {
    /// Reads the `expect` field's value.
    pub fn from_toml(value: toml::Value) -> Result<Expect, FieldError> {
        let help = "write for example `expect = { min_rows = 1, columns = { amount = { min = 0, not_null = true } } }`";
        let spec: ExpectSpec = value.try_into().map_err(|e: toml::de::Error| {
            field_error(format!("`expect`: {}", e.message())).help(help)
        })?;
        if let (Some(min), Some(max)) = (spec.min_rows, spec.max_rows)
            && min > max
        {
            return Err(field_error(format!(
                "`expect`: min_rows ({min}) is more than max_rows ({max})"
            )));
        }
        let mut columns = Vec::new();
        for (name, value) in spec.columns {
            let at = format!("expect.columns.{name}");
            let written = value.as_table().cloned().unwrap_or_default();
            let spec: ColumnSpec = value.try_into().map_err(|e: toml::de::Error| {
                field_error(format!("`{at}`: {}", e.message()))
                    .help("a column's checks are `min`, `max`, `not_null` and `in`, as in `amount = { min = 0, not_null = true }`")
            })?;
            let scalar = |check: &str, value: toml::Value| {
                Expected::from_toml(value).map_err(|found| {
                    field_error(format!(
                        "`{at}.{check}` must be a number, a string, a date or a boolean, found {found}"
                    ))
                })
            };
            let min = spec.min.map(|v| scalar("min", v)).transpose()?;
            let max = spec.max.map(|v| scalar("max", v)).transpose()?;
            let one_of = spec
                .one_of
                .map(|values| {
                    values
                        .into_iter()
                        .map(|v| scalar("in", v))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?;
            if one_of.as_ref().is_some_and(Vec::is_empty) {
                return Err(field_error(format!("`{at}.in` is an empty list"))
                    .help("list the values the column may hold"));
            }
            if min.is_none() && max.is_none() && !spec.not_null && one_of.is_none() {
                return Err(field_error(format!("`{at}` checks nothing"))
                    .help("give it `min`, `max`, `not_null = true` or `in = [...]`"));
            }
            columns.push(ColumnExpect {
                name,
                min,
                max,
                not_null: spec.not_null,
                one_of,
                written,
            });
        }
        Ok(Expect {
            rows: spec.rows,
            min_rows: spec.min_rows,
            max_rows: spec.max_rows,
            columns,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_none()
            && self.min_rows.is_none()
            && self.max_rows.is_none()
            && self.columns.is_empty()
    }
}

impl Expected {
    /// The expected value, or the TOML type found instead.
    fn from_toml(value: toml::Value) -> Result<Expected, &'static str> {
        match value {
            toml::Value::Integer(i) => Ok(Expected::Number(i as f64)),
            toml::Value::Float(f) => Ok(Expected::Number(f)),
            toml::Value::String(s) => Ok(Expected::Text(s)),
            toml::Value::Boolean(b) => Ok(Expected::Bool(b)),
            // TOML dates and date-times compare like the same text
            // (`2024-01-01`, `2024-01-01T10:00:00`).
            toml::Value::Datetime(d) => Ok(Expected::Text(d.to_string())),
            toml::Value::Array(_) => Err("a list"),
            toml::Value::Table(_) => Err("a table"),
        }
    }
}

/// A failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `expect.rows`, `expect.columns.amount.min`, ...
    pub check: String,
    /// Expected against actual, in words.
    pub message: String,
    /// Up to [`MAX_OFFENDING_ROWS`] rows to show (indices into the result).
    pub rows: Vec<usize>,
}

/// Every failed check, in the order written.
pub fn evaluate(expect: &Expect, batch: &RecordBatch) -> Vec<Failure> {
    let n = batch.num_rows() as u64;
    let first_rows = || (0..batch.num_rows().min(MAX_OFFENDING_ROWS)).collect::<Vec<_>>();
    let mut failures = Vec::new();
    if let Some(rows) = expect.rows
        && rows != n
    {
        failures.push(Failure {
            check: "expect.rows".into(),
            message: format!("expected exactly {rows} rows, the query returned {n}"),
            rows: first_rows(),
        });
    }
    if let Some(min) = expect.min_rows
        && n < min
    {
        failures.push(Failure {
            check: "expect.min_rows".into(),
            message: format!("expected at least {min} rows, the query returned {n}"),
            rows: first_rows(),
        });
    }
    if let Some(max) = expect.max_rows
        && n > max
    {
        failures.push(Failure {
            check: "expect.max_rows".into(),
            message: format!("expected at most {max} rows, the query returned {n}"),
            rows: first_rows(),
        });
    }
    for column in &expect.columns {
        check_column(column, batch, &mut failures);
    }
    failures
}

/// The result's column for a check: exact name first, then ignoring case
/// (Athena's names are case-insensitive).
fn find_column(batch: &RecordBatch, name: &str) -> Option<usize> {
    let schema = batch.schema();
    schema.index_of(name).ok().or_else(|| {
        let matches: Vec<usize> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.name().eq_ignore_ascii_case(name))
            .map(|(i, _)| i)
            .collect();
        (matches.len() == 1).then(|| matches[0])
    })
}

fn check_column(expect: &ColumnExpect, batch: &RecordBatch, failures: &mut Vec<Failure>) {
    let at = format!("expect.columns.{}", expect.name);
    let Some(index) = find_column(batch, &expect.name) else {
        failures.push(Failure {
            check: at,
            message: format!(
                "the result has no column `{}`; its columns: {}",
                expect.name,
                headers(batch).join(", ")
            ),
            rows: Vec::new(),
        });
        return;
    };
    let mut column = batch.column(index).clone();
    if let DataType::Dictionary(_, values) = column.data_type()
        && let Ok(plain) = cast(&column, values)
    {
        column = plain;
    }
    let value_at = |row: usize| {
        cells(batch, [row])
            .ok()
            .and_then(|mut rows| rows.pop())
            .and_then(|mut row| row.swap_remove(index))
            .unwrap_or_else(|| "NULL".to_string())
    };
    let type_name = athena_type_name(column.data_type());

    // Logical nulls: a NullArray (`SELECT NULL`) has no validity buffer.
    let nulls = column.logical_nulls();
    let is_null = |row: usize| nulls.as_ref().is_some_and(|n| n.is_null(row));
    if expect.not_null {
        let offending: Vec<usize> = (0..column.len()).filter(|&i| is_null(i)).collect();
        if !offending.is_empty() {
            failures.push(Failure {
                check: format!("{at}.not_null"),
                message: format!(
                    "expected no NULL, found {} {} with NULL",
                    offending.len(),
                    rows_word(offending.len())
                ),
                rows: first(&offending),
            });
        }
    }

    for (check, bound, below) in [("min", &expect.min, true), ("max", &expect.max, false)] {
        let Some(bound) = bound else { continue };
        let check = format!("{at}.{check}");
        let outcome = comparable(&column, bound).and_then(|(lhs, rhs)| {
            let rhs = datafusion::arrow::array::Scalar::new(rhs);
            let mask = if below {
                cmp::lt(&lhs, &rhs)
            } else {
                cmp::gt(&lhs, &rhs)
            }
            .map_err(|e| e.to_string())?;
            let offending = true_rows(&mask);
            let extreme = extreme(&lhs, &offending, below)?;
            Ok((offending, extreme))
        });
        match outcome {
            Err(why) => failures.push(Failure {
                check: check.clone(),
                message: format!("cannot compare the {type_name} column with {bound}: {why}"),
                rows: Vec::new(),
            }),
            Ok((offending, Some(extreme))) => failures.push(Failure {
                check,
                message: format!(
                    "expected every value {} {bound}, found {} {} {}, the {} {}",
                    if below { ">=" } else { "<=" },
                    offending.len(),
                    rows_word(offending.len()),
                    if below { "below" } else { "above" },
                    if below { "smallest" } else { "largest" },
                    value_at(extreme),
                ),
                rows: first(&offending),
            }),
            Ok((_, None)) => {}
        }
    }

    if let Some(allowed) = &expect.one_of {
        let check = format!("{at}.in");
        let listed = allowed
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let outcome = allowed.iter().try_fold(
            BooleanArray::from(vec![false; column.len()]),
            |any, value| {
                let (lhs, rhs) = comparable(&column, value)?;
                let rhs = datafusion::arrow::array::Scalar::new(rhs);
                let equal = cmp::eq(&lhs, &rhs).map_err(|e| e.to_string())?;
                datafusion::arrow::compute::or_kleene(&any, &equal).map_err(|e| e.to_string())
            },
        );
        match outcome {
            Err(why) => failures.push(Failure {
                check,
                message: format!("cannot compare the {type_name} column with [{listed}]: {why}"),
                rows: Vec::new(),
            }),
            Ok(any) => {
                // NULL is checked by `not_null`, not here.
                let offending: Vec<usize> = (0..column.len())
                    .filter(|&i| {
                        let listed = any.is_valid(i) && any.value(i);
                        !is_null(i) && !listed
                    })
                    .collect();
                if !offending.is_empty() {
                    let mut others: Vec<String> = Vec::new();
                    for &row in &offending {
                        let value = value_at(row);
                        if !others.contains(&value) {
                            others.push(value);
                        }
                        if others.len() == 5 {
                            break;
                        }
                    }
                    failures.push(Failure {
                        check,
                        message: format!(
                            "expected every value in [{listed}], found {} {} with other values ({})",
                            offending.len(),
                            rows_word(offending.len()),
                            others.join(", ")
                        ),
                        rows: first(&offending),
                    });
                }
            }
        }
    }
}

fn rows_word(n: usize) -> &'static str {
    if n == 1 { "row" } else { "rows" }
}

fn first(rows: &[usize]) -> Vec<usize> {
    rows.iter().take(MAX_OFFENDING_ROWS).copied().collect()
}

fn true_rows(mask: &BooleanArray) -> Vec<usize> {
    (0..mask.len())
        .filter(|&i| mask.is_valid(i) && mask.value(i))
        .collect()
}

/// Of the rows `rows`, the one with the smallest (`smallest`) or largest
/// value in `values`.
fn extreme(values: &ArrayRef, rows: &[usize], smallest: bool) -> Result<Option<usize>, String> {
    if rows.is_empty() {
        return Ok(None);
    }
    let indices = UInt32Array::from(rows.iter().map(|&r| r as u32).collect::<Vec<_>>());
    let taken = take(values.as_ref(), &indices, None).map_err(|e| e.to_string())?;
    let options = SortOptions {
        descending: !smallest,
        nulls_first: false,
    };
    let order = sort_to_indices(&taken, Some(options), Some(1)).map_err(|e| e.to_string())?;
    Ok(order.values().first().map(|&i| rows[i as usize]))
}

/// The column and the expected value as two arrays of one type that the
/// comparison kernels accept: numbers compare as doubles, everything else
/// in the column's own type (the expected text parsed as a date, a
/// timestamp, ...).
fn comparable(column: &ArrayRef, expected: &Expected) -> Result<(ArrayRef, ArrayRef), String> {
    let data_type = column.data_type();
    if data_type.is_numeric() {
        let number = match expected {
            Expected::Number(n) => *n,
            Expected::Text(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("{expected} is not a number"))?,
            Expected::Bool(_) => return Err("a boolean is no number".into()),
        };
        let lhs = cast(column, &DataType::Float64).map_err(|e| e.to_string())?;
        return Ok((lhs, Arc::new(Float64Array::from(vec![number]))));
    }
    if matches!(data_type, DataType::Boolean) {
        let value = match expected {
            Expected::Bool(b) => *b,
            Expected::Text(s) if s.eq_ignore_ascii_case("true") => true,
            Expected::Text(s) if s.eq_ignore_ascii_case("false") => false,
            _ => return Err(format!("{expected} is not a boolean")),
        };
        return Ok((column.clone(), Arc::new(BooleanArray::from(vec![value]))));
    }
    let comparable_type = matches!(
        data_type,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(_, _)
            | DataType::Time32(_)
            | DataType::Time64(_)
    );
    if !comparable_type {
        return Err(
            "only numbers, strings, booleans, dates, times and timestamps can be checked".into(),
        );
    }
    let Expected::Text(text) = expected else {
        return Err(format!(
            "write the value as a string{}",
            if data_type.is_temporal() {
                " or a TOML date"
            } else {
                ""
            }
        ));
    };
    let options = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    let rhs = cast_with_options(
        &(Arc::new(StringArray::from(vec![text.as_str()])) as ArrayRef),
        data_type,
        &options,
    )
    .map_err(|_| format!("{expected} is not a {}", athena_type_name(data_type)))?;
    Ok((column.clone(), rhs))
}

/// The failure message: every failed check with its offending rows as a
/// small table.
pub fn report(failures: &[Failure], batch: &RecordBatch) -> String {
    let mut out = format!(
        "{} expect check{} failed:",
        failures.len(),
        if failures.len() == 1 { "" } else { "s" }
    );
    let headers = headers(batch);
    for failure in failures {
        out.push_str(&format!("\n{}: {}", failure.check, failure.message));
        if failure.rows.is_empty() {
            continue;
        }
        match cells(batch, failure.rows.iter().copied()) {
            Ok(mut rows) => {
                // Long values would make the table unreadable.
                for value in rows.iter_mut().flatten().flatten() {
                    if let Some((end, _)) = value.char_indices().nth(MAX_CELL_CHARS) {
                        value.truncate(end);
                        value.push('…');
                    }
                }
                out.push_str(&format!(
                    "\n{} ({}):\n",
                    if failure.check.contains("rows") {
                        "first rows"
                    } else {
                        "offending rows"
                    },
                    if failure.rows.len() < MAX_OFFENDING_ROWS {
                        format!("{}", failure.rows.len())
                    } else {
                        format!("the first {MAX_OFFENDING_ROWS}")
                    }
                ));
                out.push_str(text_table(&headers, &rows).trim_end());
            }
            Err(e) => out.push_str(&format!("\n(cannot show the rows: {e})")),
        }
    }
    out
}
