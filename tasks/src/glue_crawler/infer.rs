//! Columns and Glue types from data files: Parquet footers, CSV headers
//! and a sample of CSV rows.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::catalog::{Column, Format};

use super::scan::DataFile;

/// CSV types are inferred from at most this many rows of each file.
pub const MAX_CSV_SAMPLE_ROWS: usize = 1000;

/// The largest precision of a Glue (Hive) decimal.
const MAX_DECIMAL_PRECISION: u32 = 38;

/// The columns of a table's files, merged (see the module docs of
/// [`super`]); problems go to `warnings`.
pub(crate) fn columns(
    format: Format,
    table: &str,
    files: &[&DataFile],
    warnings: &mut Vec<String>,
) -> Vec<Column> {
    match format {
        Format::Parquet => parquet_columns(table, files, warnings),
        Format::Csv => csv_columns(table, files, warnings),
    }
}

fn warn_once(warnings: &mut Vec<String>, warning: String) {
    if !warnings.contains(&warning) {
        warnings.push(warning);
    }
}

/// The Arrow schema in a Parquet file's footer.
fn parquet_fields(path: &Path) -> Result<Vec<Field>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string())?;
    Ok(builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect())
}

/// A column found so far, and the file it was first seen in.
struct Found {
    column: Column,
    first: String,
}

fn parquet_columns(table: &str, files: &[&DataFile], warnings: &mut Vec<String>) -> Vec<Column> {
    let mut found: Vec<Found> = Vec::new();
    for file in files {
        let fields = match parquet_fields(&file.path) {
            Ok(fields) => fields,
            Err(e) => {
                warnings.push(format!(
                    "table `{table}`: cannot read the Parquet footer of {}: {e}; file skipped",
                    file.uri
                ));
                continue;
            }
        };
        let mut in_file = HashSet::new();
        for field in fields {
            let name = field.name().to_lowercase();
            if !in_file.insert(name.clone()) {
                warn_once(
                    warnings,
                    format!(
                        "table `{table}`: {} has two columns named `{name}` (ignoring case); the second is ignored",
                        file.uri
                    ),
                );
                continue;
            }
            let mut unknown = Vec::new();
            let data_type = glue_type(field.data_type(), &mut unknown);
            for what in unknown {
                warn_once(
                    warnings,
                    format!(
                        "table `{table}`: column `{name}` holds the Arrow type {what}, which has no Glue type; catalogued as string"
                    ),
                );
            }
            match found.iter_mut().find(|f| f.column.name == name) {
                None => found.push(Found {
                    column: Column { name, data_type },
                    first: file.uri.to_string(),
                }),
                Some(f) if f.column.data_type == data_type => {}
                Some(f) => {
                    let wider = widen(&f.column.data_type, &data_type);
                    warnings.push(format!(
                        "table `{table}`: type conflict in column `{name}`: {} in {} but {data_type} in {}; catalogued as {wider}",
                        f.column.data_type, f.first, file.uri
                    ));
                    f.column.data_type = wider;
                }
            }
        }
    }
    found.into_iter().map(|f| f.column).collect()
}

/// The Glue type of an Arrow type; types Glue cannot hold become `string`
/// and are described in `unknown`.
pub(crate) fn glue_type(data_type: &DataType, unknown: &mut Vec<String>) -> String {
    let decimal = |p: u8, s: i8, unknown: &mut Vec<String>| {
        if u32::from(p) <= MAX_DECIMAL_PRECISION && s >= 0 {
            format!("decimal({p},{s})")
        } else {
            unknown.push(format!("{data_type}"));
            "string".to_string()
        }
    };
    match data_type {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "int".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::UInt64 => "decimal(20,0)".into(),
        DataType::Float16 | DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "binary".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, _) => "timestamp".into(),
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => decimal(*p, *s, unknown),
        DataType::List(item)
        | DataType::LargeList(item)
        | DataType::ListView(item)
        | DataType::LargeListView(item)
        | DataType::FixedSizeList(item, _) => {
            format!("array<{}>", glue_type(item.data_type(), unknown))
        }
        DataType::Struct(fields) => {
            let members: Vec<String> = fields
                .iter()
                .map(|f| {
                    format!(
                        "{}:{}",
                        f.name().to_lowercase(),
                        glue_type(f.data_type(), unknown)
                    )
                })
                .collect();
            format!("struct<{}>", members.join(","))
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!(
                "map<{},{}>",
                glue_type(kv[0].data_type(), unknown),
                glue_type(kv[1].data_type(), unknown)
            ),
            _ => {
                unknown.push(format!("{data_type}"));
                "string".into()
            }
        },
        DataType::Dictionary(_, value) => glue_type(value, unknown),
        DataType::RunEndEncoded(_, value) => glue_type(value.data_type(), unknown),
        other => {
            unknown.push(format!("{other}"));
            "string".into()
        }
    }
}

/// Digits an integer type needs as a decimal.
fn integer_digits(t: &str) -> Option<u32> {
    match t {
        "tinyint" => Some(3),
        "smallint" => Some(5),
        "int" => Some(10),
        "bigint" => Some(19),
        _ => None,
    }
}

/// `decimal(p,s)` as (p, s); integers as the decimals that hold them.
fn as_decimal(t: &str) -> Option<(u32, u32)> {
    if let Some(digits) = integer_digits(t) {
        return Some((digits, 0));
    }
    let inner = t.strip_prefix("decimal(")?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',')?;
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

/// The type that holds values of both `a` and `b`: the wider integer,
/// `double` for integers and floating point, a decimal wide enough for
/// both decimals, `timestamp` for dates and timestamps, else `string`.
pub(crate) fn widen(a: &str, b: &str) -> String {
    if a == b {
        return a.to_string();
    }
    if let (Some(x), Some(y)) = (integer_digits(a), integer_digits(b)) {
        return if x >= y { a } else { b }.to_string();
    }
    let float = |t: &str| t == "float" || t == "double";
    let numeric = |t: &str| float(t) || as_decimal(t).is_some();
    if (float(a) && numeric(b)) || (float(b) && numeric(a)) {
        return "double".to_string();
    }
    if let (Some((p1, s1)), Some((p2, s2))) = (as_decimal(a), as_decimal(b)) {
        let scale = s1.max(s2);
        let integer = p1.saturating_sub(s1).max(p2.saturating_sub(s2));
        let precision = (integer + scale).min(MAX_DECIMAL_PRECISION);
        return format!("decimal({precision},{})", scale.min(precision));
    }
    match (a, b) {
        ("date", "timestamp") | ("timestamp", "date") => "timestamp".to_string(),
        _ => "string".to_string(),
    }
}

/// What one CSV cell (or a column so far) looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Only empty cells so far.
    Empty,
    Boolean,
    Bigint,
    Double,
    Date,
    Timestamp,
    String,
}

impl Kind {
    fn glue(self) -> &'static str {
        match self {
            Kind::Empty | Kind::String => "string",
            Kind::Boolean => "boolean",
            Kind::Bigint => "bigint",
            Kind::Double => "double",
            Kind::Date => "date",
            Kind::Timestamp => "timestamp",
        }
    }

    fn merge(self, other: Kind) -> Kind {
        match (self, other) {
            (a, b) if a == b => a,
            (Kind::Empty, k) | (k, Kind::Empty) => k,
            (Kind::Bigint, Kind::Double) | (Kind::Double, Kind::Bigint) => Kind::Double,
            (Kind::Date, Kind::Timestamp) | (Kind::Timestamp, Kind::Date) => Kind::Timestamp,
            _ => Kind::String,
        }
    }
}

/// The type one CSV cell suggests.
pub(crate) fn classify(cell: &str) -> Kind {
    if cell.is_empty() || cell == "\\N" {
        return Kind::Empty;
    }
    if cell.eq_ignore_ascii_case("true") || cell.eq_ignore_ascii_case("false") {
        return Kind::Boolean;
    }
    let digits = cell.strip_prefix(['+', '-']).unwrap_or(cell);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        // Integers too large for a bigint are kept as text.
        return if cell.parse::<i64>().is_ok() {
            Kind::Bigint
        } else {
            Kind::String
        };
    }
    if cell.bytes().any(|b| b.is_ascii_digit())
        && cell
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
        && cell.parse::<f64>().is_ok()
    {
        return Kind::Double;
    }
    let b = cell.as_bytes();
    let date_shape = b.len() >= 10 && b[4] == b'-' && b[7] == b'-';
    if date_shape && b.len() == 10 && chrono::NaiveDate::parse_from_str(cell, "%Y-%m-%d").is_ok() {
        return Kind::Date;
    }
    if date_shape
        && b.len() >= 19
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && chrono::NaiveDateTime::parse_from_str(cell, "%Y-%m-%d %H:%M:%S%.f").is_ok()
    {
        return Kind::Timestamp;
    }
    Kind::String
}

/// A CSV header as column names: trimmed, lowercased, `colN` for empty
/// ones, `_2`, `_3`, ... appended to repeated ones.
fn header_names(
    table: &str,
    file: &DataFile,
    raw: &[String],
    warnings: &mut Vec<String>,
) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(raw.len());
    for (i, name) in raw.iter().enumerate() {
        let mut name = name.trim_start_matches('\u{feff}').trim().to_lowercase();
        if name.is_empty() {
            name = format!("col{i}");
        }
        if names.contains(&name) {
            let base = name.clone();
            let mut n = 2;
            while names.contains(&name) {
                name = format!("{base}_{n}");
                n += 1;
            }
            warn_once(
                warnings,
                format!(
                    "table `{table}`: {} repeats the column `{base}` in its header; the repeat is catalogued as `{name}`",
                    file.uri
                ),
            );
        }
        names.push(name);
    }
    names
}

fn csv_columns(table: &str, files: &[&DataFile], warnings: &mut Vec<String>) -> Vec<Column> {
    let mut columns: Vec<(String, Kind)> = Vec::new();
    let mut first_header: Option<(Vec<String>, String)> = None;
    for file in files {
        let mut reader = match csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_path(&file.path)
        {
            Ok(reader) => reader,
            Err(e) => {
                warnings.push(format!(
                    "table `{table}`: cannot read {}: {e}; file skipped",
                    file.uri
                ));
                continue;
            }
        };
        let raw: Vec<String> = match reader.byte_headers() {
            Ok(h) => h
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect(),
            Err(e) => {
                warnings.push(format!(
                    "table `{table}`: cannot read the header of {}: {e}; file skipped",
                    file.uri
                ));
                continue;
            }
        };
        if raw.iter().all(|h| h.trim().is_empty()) {
            continue;
        }
        let names = header_names(table, file, &raw, warnings);
        match &first_header {
            None => first_header = Some((names.clone(), file.uri.to_string())),
            Some((first, uri)) if *first != names => warn_once(
                warnings,
                format!(
                    "table `{table}`: CSV files have different headers ({uri} and {}); Athena reads CSV columns by position, so check the files",
                    file.uri
                ),
            ),
            Some(_) => {}
        }
        let index: Vec<usize> = names
            .into_iter()
            .map(|name| match columns.iter().position(|(n, _)| *n == name) {
                Some(i) => i,
                None => {
                    columns.push((name, Kind::Empty));
                    columns.len() - 1
                }
            })
            .collect();
        for record in reader.byte_records().take(MAX_CSV_SAMPLE_ROWS) {
            let record = match record {
                Ok(record) => record,
                Err(e) => {
                    warnings.push(format!(
                        "table `{table}`: stopped sampling {} at a bad row: {e}",
                        file.uri
                    ));
                    break;
                }
            };
            for (cell, &i) in record.iter().zip(&index) {
                let kind = classify(&String::from_utf8_lossy(cell));
                if let Some((_, k)) = columns.get_mut(i) {
                    *k = k.merge(kind);
                }
            }
        }
    }
    columns
        .into_iter()
        .map(|(name, kind)| Column {
            name,
            data_type: kind.glue().to_string(),
        })
        .collect()
}
