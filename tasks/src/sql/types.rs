//! Glue (Hive) type names to Arrow types, and Arrow types to the type names
//! Athena reports for result columns.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, TimeUnit};

/// The Arrow type for a Glue type name (`string`, `bigint`, `int`,
/// `smallint`, `tinyint`, `double`, `float`, `boolean`, `date`,
/// `timestamp`, `decimal(p,s)`, `binary`, `char(n)`, `varchar(n)`,
/// `array<T>`, `map<K,V>`, `struct<a:T,...>`), case-insensitive.
pub fn glue_to_arrow(glue: &str) -> Result<DataType, String> {
    let mut parser = TypeParser {
        text: glue,
        rest: glue.trim(),
    };
    let data_type = parser.parse()?;
    if !parser.rest.trim().is_empty() {
        return Err(parser.unexpected());
    }
    Ok(data_type)
}

/// A small recursive-descent parser over Glue's type grammar.
struct TypeParser<'a> {
    text: &'a str,
    rest: &'a str,
}

impl TypeParser<'_> {
    fn unexpected(&self) -> String {
        format!(
            "`{}` is not a Glue type this engine can read (at `{}`)",
            self.text,
            self.rest.trim()
        )
    }

    /// A name made of letters, digits and `_`.
    fn word(&mut self) -> String {
        self.rest = self.rest.trim_start();
        let end = self
            .rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.rest.len());
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        word.to_ascii_lowercase()
    }

    fn eat(&mut self, c: char) -> bool {
        self.rest = self.rest.trim_start();
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn number(&mut self) -> Result<u32, String> {
        let word = self.word();
        word.parse().map_err(|_| self.unexpected())
    }

    fn parse(&mut self) -> Result<DataType, String> {
        let name = self.word();
        Ok(match name.as_str() {
            "string" => DataType::Utf8,
            // Athena reads char(n) and varchar(n) as strings.
            "char" | "varchar" => {
                if self.eat('(') {
                    self.number()?;
                    self.expect(')')?;
                }
                DataType::Utf8
            }
            "bigint" => DataType::Int64,
            "int" | "integer" => DataType::Int32,
            "smallint" => DataType::Int16,
            "tinyint" => DataType::Int8,
            "double" => DataType::Float64,
            "float" | "real" => DataType::Float32,
            "boolean" => DataType::Boolean,
            "date" => DataType::Date32,
            // Hive's timestamp has no time zone; Athena (Trino) reads it to
            // the microsecond at most.
            "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
            "binary" => DataType::Binary,
            "decimal" => {
                // Hive's bare `decimal` is decimal(10,0).
                let (precision, scale) = if self.eat('(') {
                    let precision = self.number()?;
                    let scale = if self.eat(',') { self.number()? } else { 0 };
                    self.expect(')')?;
                    (precision, scale)
                } else {
                    (10, 0)
                };
                if !(1..=38).contains(&precision) || scale > precision {
                    return Err(format!(
                        "`{}`: decimal precision must be 1 to 38 and the scale at most the precision",
                        self.text
                    ));
                }
                DataType::Decimal128(precision as u8, scale as i8)
            }
            "array" => {
                self.expect('<')?;
                let item = self.parse()?;
                self.expect('>')?;
                DataType::List(Arc::new(Field::new("item", item, true)))
            }
            "map" => {
                self.expect('<')?;
                let key = self.parse()?;
                self.expect(',')?;
                let value = self.parse()?;
                self.expect('>')?;
                let entries = Field::new(
                    "entries",
                    DataType::Struct(Fields::from(vec![
                        Field::new("key", key, false),
                        Field::new("value", value, true),
                    ])),
                    false,
                );
                DataType::Map(Arc::new(entries), false)
            }
            "struct" => {
                self.expect('<')?;
                let mut fields = Vec::new();
                loop {
                    let name = self.word();
                    if name.is_empty() {
                        return Err(self.unexpected());
                    }
                    self.expect(':')?;
                    fields.push(Field::new(name, self.parse()?, true));
                    if !self.eat(',') {
                        break;
                    }
                }
                self.expect('>')?;
                DataType::Struct(Fields::from(fields))
            }
            _ => return Err(self.unexpected()),
        })
    }
}

/// The type name Athena gives a result column of this Arrow type
/// (Trino's names: `varchar`, `bigint`, `integer`, `double`, `real`,
/// `boolean`, `date`, `timestamp`, `decimal(p,s)`, `array(T)`, ...).
pub fn athena_type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Null => "unknown".to_string(),
        DataType::Boolean => "boolean".to_string(),
        DataType::Int8 => "tinyint".to_string(),
        DataType::Int16 | DataType::UInt8 => "smallint".to_string(),
        DataType::Int32 | DataType::UInt16 => "integer".to_string(),
        DataType::Int64 | DataType::UInt32 => "bigint".to_string(),
        // Nothing in Trino holds every u64; decimal(20,0) does.
        DataType::UInt64 => "decimal(20,0)".to_string(),
        DataType::Float16 | DataType::Float32 => "real".to_string(),
        DataType::Float64 => "double".to_string(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "varchar".to_string(),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "varbinary".to_string(),
        DataType::Date32 | DataType::Date64 => "date".to_string(),
        DataType::Timestamp(_, None) => "timestamp".to_string(),
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone".to_string(),
        DataType::Time32(_) | DataType::Time64(_) => "time".to_string(),
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        DataType::Interval(_) | DataType::Duration(_) => "interval day to second".to_string(),
        DataType::List(item)
        | DataType::LargeList(item)
        | DataType::ListView(item)
        | DataType::LargeListView(item)
        | DataType::FixedSizeList(item, _) => {
            format!("array({})", athena_type_name(item.data_type()))
        }
        DataType::Struct(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|f| format!("{} {}", f.name(), athena_type_name(f.data_type())))
                .collect();
            format!("row({})", fields.join(", "))
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!(
                "map({}, {})",
                athena_type_name(kv[0].data_type()),
                athena_type_name(kv[1].data_type())
            ),
            other => format!("map({})", athena_type_name(other)),
        },
        DataType::Dictionary(_, value) => athena_type_name(value),
        DataType::RunEndEncoded(_, value) => athena_type_name(value.data_type()),
        other => other.to_string().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glue_scalars_map_to_arrow() {
        let cases = [
            ("string", DataType::Utf8),
            ("bigint", DataType::Int64),
            ("int", DataType::Int32),
            ("INT", DataType::Int32),
            ("smallint", DataType::Int16),
            ("tinyint", DataType::Int8),
            ("double", DataType::Float64),
            ("float", DataType::Float32),
            ("boolean", DataType::Boolean),
            ("date", DataType::Date32),
            (
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, None),
            ),
            ("decimal(12, 2)", DataType::Decimal128(12, 2)),
            ("decimal", DataType::Decimal128(10, 0)),
            ("varchar(20)", DataType::Utf8),
            ("binary", DataType::Binary),
        ];
        for (glue, arrow) in cases {
            assert_eq!(glue_to_arrow(glue).unwrap(), arrow, "{glue}");
        }
    }

    #[test]
    fn glue_nested_types_map_to_arrow() {
        let list = glue_to_arrow("array<bigint>").unwrap();
        assert_eq!(
            list,
            DataType::List(Arc::new(Field::new("item", DataType::Int64, true)))
        );
        let data_type = glue_to_arrow("struct<a:string,b:array<double>>").unwrap();
        let DataType::Struct(fields) = data_type else {
            panic!("not a struct: {data_type}");
        };
        assert_eq!(fields[0].name(), "a");
        assert_eq!(fields[1].name(), "b");
        assert!(matches!(fields[1].data_type(), DataType::List(_)));
        assert!(matches!(
            glue_to_arrow("map<string,int>").unwrap(),
            DataType::Map(_, false)
        ));
        assert_eq!(
            athena_type_name(&glue_to_arrow("map<string,array<int>>").unwrap()),
            "map(varchar, array(integer))"
        );
    }

    #[test]
    fn unknown_glue_types_are_refused_with_the_type() {
        for bad in [
            "uniontype<int>",
            "decimal(40,2)",
            "array<int",
            "bigint x",
            "",
        ] {
            let err = glue_to_arrow(bad).unwrap_err();
            assert!(err.contains(bad.trim()), "{bad}: {err}");
        }
    }

    #[test]
    fn athena_names_follow_trino() {
        assert_eq!(athena_type_name(&DataType::Utf8View), "varchar");
        assert_eq!(athena_type_name(&DataType::Int32), "integer");
        assert_eq!(athena_type_name(&DataType::Float32), "real");
        assert_eq!(
            athena_type_name(&DataType::Decimal128(10, 2)),
            "decimal(10,2)"
        );
        assert_eq!(
            athena_type_name(&DataType::Timestamp(TimeUnit::Microsecond, None)),
            "timestamp"
        );
    }
}
