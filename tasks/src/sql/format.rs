//! Result values as text: Athena's CSV result files and aligned tables for
//! people.

use datafusion::arrow::array::Array;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// How values look in results: as Athena (Trino) prints them, so that a
/// local result file reads like a production one (`2024-01-03
/// 10:00:00.000`, not Arrow's `2024-01-03T10:00:00`).
fn options() -> FormatOptions<'static> {
    FormatOptions::new()
        .with_display_error(false)
        .with_date_format(Some("%Y-%m-%d"))
        .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.3f"))
        .with_timestamp_tz_format(Some("%Y-%m-%d %H:%M:%S%.3f %Z"))
}

/// The values of rows `rows` (indices into `batch`), as text; `None` for
/// NULL.
pub fn cells(
    batch: &RecordBatch,
    rows: impl IntoIterator<Item = usize>,
) -> Result<Vec<Vec<Option<String>>>, ArrowError> {
    let options = options();
    let formatters = batch
        .columns()
        .iter()
        .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|row| {
            batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(column, formatter)| {
                    // Logical nulls: a NullArray (`SELECT NULL`) has no
                    // validity buffer, yet every value is NULL.
                    if column.logical_nulls().is_some_and(|n| n.is_null(row)) {
                        Ok(None)
                    } else {
                        formatter.value(row).try_to_string().map(Some)
                    }
                })
                .collect()
        })
        .collect()
}

/// The column names of a result.
pub fn headers(batch: &RecordBatch) -> Vec<String> {
    batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

/// A result as Athena writes it to its output location: a header line of
/// column names, then one line per row, every value in double quotes
/// (quotes inside doubled), NULL as an empty unquoted field, `\n` after
/// every line.
pub fn athena_csv(batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let mut out = String::new();
    let headers: Vec<Option<String>> = headers(batch).into_iter().map(Some).collect();
    write_csv_line(&mut out, &headers);
    // Formatted in chunks, so that a large result is not held as text twice.
    const CHUNK: usize = 8192;
    let mut start = 0;
    while start < batch.num_rows() {
        let end = (start + CHUNK).min(batch.num_rows());
        for row in cells(batch, start..end)? {
            write_csv_line(&mut out, &row);
        }
        start = end;
    }
    Ok(out.into_bytes())
}

fn write_csv_line(out: &mut String, values: &[Option<String>]) {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if let Some(value) = value {
            out.push('"');
            out.push_str(&value.replace('"', "\"\""));
            out.push('"');
        }
    }
    out.push('\n');
}

/// An aligned text table, NULL shown as `NULL`:
///
/// ```text
/// +----+------+
/// | id | name |
/// +----+------+
/// | 1  | NULL |
/// +----+------+
/// ```
pub fn text_table(headers: &[String], rows: &[Vec<Option<String>>]) -> String {
    // Line breaks and tabs inside values would break the alignment.
    let clean = |s: &str| {
        s.replace('\n', "\\n")
            .replace('\r', "\\r")
            .replace('\t', " ")
    };
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|v| v.as_deref().map_or_else(|| "NULL".to_string(), clean))
                .collect()
        })
        .collect();
    let header: Vec<String> = headers.iter().map(|h| clean(h)).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &body {
        for (i, value) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(value.chars().count());
            }
        }
    }
    let rule = {
        let mut line = String::from("+");
        for width in &widths {
            line.push_str(&"-".repeat(width + 2));
            line.push('+');
        }
        line.push('\n');
        line
    };
    let line = |values: &[String]| {
        let mut line = String::from("|");
        for (value, width) in values.iter().zip(&widths) {
            let pad = width - value.chars().count();
            line.push(' ');
            line.push_str(value);
            line.push_str(&" ".repeat(pad + 1));
            line.push('|');
        }
        line.push('\n');
        line
    };
    let mut out = rule.clone();
    out.push_str(&line(&header));
    out.push_str(&rule);
    for row in &body {
        out.push_str(&line(row));
    }
    if !body.is_empty() {
        out.push_str(&rule);
    }
    out
}
