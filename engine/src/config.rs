//! A task kind's own fields as a typed struct, deserialized from the
//! task's TOML table with the engine's wording of errors.
//!
//! A kind declares its fields once, as a `#[derive(Deserialize)]` struct
//! implementing [`TaskConfig`]; the same struct is what its local backend
//! runs from and what its other faces (the Step Functions export) read, so
//! a field means one thing everywhere. The struct must not use
//! `deny_unknown_fields` or `flatten`: the engine reports unknown fields
//! itself, at their place in the file and with the nearest known name,
//! from the field names [`field_names`] reads off the struct.
//!
//! Errors name the field: `missing field `command``, `` `command` must be
//! a string, found integer ``, `` `py_files`: invalid type: ... `` (a
//! deserializer's message after a colon; one phrased as the rest of a
//! sentence, starting with "must", follows the field's name directly; one
//! that names the field itself is kept as it is). A field type's
//! `Deserialize` may add a help line with [`invalid`].
//!
//! ```
//! use engine::config::{self, TaskConfig};
//! use engine::FieldError;
//!
//! #[derive(serde::Deserialize)]
//! struct Greeting {
//!     text: String,
//!     #[serde(default)]
//!     times: u32,
//! }
//!
//! impl TaskConfig for Greeting {
//!     fn check(&self) -> Result<(), FieldError> {
//!         if self.text.is_empty() {
//!             return Err(FieldError::field("text", "`text` is empty"));
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let table: toml::Table = toml::from_str("text = 'hi'").unwrap();
//! let greeting: Greeting = config::parse(&table).unwrap();
//! assert_eq!((greeting.text.as_str(), greeting.times), ("hi", 0));
//! assert_eq!(config::field_names::<Greeting>(), ["text", "times"]);
//!
//! let wrong: toml::Table = toml::from_str("text = 3").unwrap();
//! let err = config::parse::<Greeting>(&wrong).err().unwrap();
//! assert_eq!(err.message, "`text` must be a string, found integer");
//! ```

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};

use crate::kind::FieldError;

/// A kind's fields, deserialized from the task's table.
pub trait TaskConfig: DeserializeOwned + Send + Sync + 'static {
    /// Rules about which fields a task gives (exactly one of two, say),
    /// checked before any value is read.
    fn check_given(fields: &toml::Table) -> Result<(), FieldError> {
        let _ = fields;
        Ok(())
    }

    /// What the fields' types cannot say (an empty command, overlapping
    /// prefixes, two fields that exclude each other), checked once every
    /// field deserialized.
    fn check(&self) -> Result<(), FieldError> {
        Ok(())
    }

    /// Whether [`TaskConfig::references`] can name anything: validation
    /// parses a kind's fields a second time only for kinds that say so.
    const READS_TASKS: bool = false;

    /// The tasks the fields name as inputs, with the field that names each
    /// (`sections[2].from`); validation checks they are dependencies, so
    /// that a DAG that cannot work fails before anything runs.
    fn references(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Whether [`TaskConfig::files`] can name anything: validation parses
    /// a kind's fields a second time only for kinds that say so.
    const NAMES_FILES: bool = false;

    /// Files the fields name, relative to the DAG file's folder, with the
    /// field naming each, that the task reads when it runs (a query's
    /// `sql_file`): validation requires each to exist, so that a typo
    /// fails before anything runs instead of after the tasks before it.
    fn files(&self) -> Vec<(String, std::path::PathBuf)> {
        Vec::new()
    }

    /// Whether [`TaskConfig::locations`] can name anything: validation
    /// parses a kind's fields a second time only for kinds that say so.
    const NAMES_LOCATIONS: bool = false;

    /// The data locations (`s3://bucket/prefix/`) the task reads and
    /// writes, each with the field that names it: validation requires a
    /// task that reads where another writes to be ordered with it, so
    /// that a forgotten `depends_on` does not become a race.
    fn locations(&self) -> Vec<Location> {
        Vec::new()
    }

    /// Help for a field that is missing or whose value does not
    /// deserialize; `None` for the engine's own ("add `NAME = \"...\"` to
    /// the task", or the kind's section of the README).
    fn help(field: &str, problem: Problem) -> Option<String> {
        let _ = (field, problem);
        None
    }
}

/// What is wrong with a field, for [`TaskConfig::help`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A required field is not there.
    Missing,
    /// Its value is of the wrong type or does not parse.
    Invalid,
}

/// Deserializes and checks a kind's fields (already substituted).
///
/// One problem is reported, in this order: a rule about which fields are
/// given ([`TaskConfig::check_given`]); a required field that is missing;
/// the first field, in the file's order, whose value is wrong; a rule
/// across the fields' values ([`TaskConfig::check`]).
pub fn parse<C: TaskConfig>(fields: &toml::Table) -> Result<C, FieldError> {
    C::check_given(fields)?;
    // A wrong value stops deserializing before the missing fields are
    // seen: set the wrong ones aside until the rest deserialize, to
    // report a missing field first.
    let mut table = fields.clone();
    let mut first_wrong: Option<Error> = None;
    let config = loop {
        match C::deserialize(TableDeserializer(&table)) {
            Ok(config) => match first_wrong {
                Some(wrong) => return Err(wrong.into_field_error::<C>()),
                None => break config,
            },
            Err(e) => {
                let set_aside = match &e.field {
                    Some(field) if !e.missing => table.remove(field).is_some(),
                    _ => false,
                };
                let missing_set_aside = e.missing
                    && e.field
                        .as_ref()
                        .is_some_and(|f| fields.contains_key(f) && !table.contains_key(f));
                if set_aside {
                    first_wrong.get_or_insert(e);
                } else if missing_set_aside {
                    return Err(first_wrong.unwrap_or(e).into_field_error::<C>());
                } else {
                    return Err(e.into_field_error::<C>());
                }
            }
        }
    };
    config.check()?;
    Ok(config)
}

/// The names of a config struct's fields, in declaration order.
pub fn field_names<C: DeserializeOwned>() -> &'static [&'static str] {
    let mut names = None;
    let _ = C::deserialize(FieldNames(&mut names));
    names.unwrap_or(&[])
}

/// A config error on its way to a [`FieldError`].
#[derive(Debug)]
pub struct Error {
    field: Option<String>,
    message: String,
    missing: bool,
}

impl Error {
    fn in_field(mut self, field: &str) -> Self {
        if self.field.is_none() {
            self.field = Some(field.to_string());
        }
        self
    }

    fn into_field_error<C: TaskConfig>(self) -> FieldError {
        match self.field {
            Some(field) if self.missing => FieldError {
                field: None,
                help: Some(
                    C::help(&field, Problem::Missing)
                        .unwrap_or_else(|| format!("add `{field} = \"...\"` to the task")),
                ),
                message: self.message,
            },
            Some(field) => {
                let (message, help) = split_help(&self.message);
                let message = if message.starts_with(&format!("`{field}")) {
                    message.to_string()
                } else if message.starts_with("must ") {
                    format!("`{field}` {message}")
                } else {
                    format!("`{field}`: {message}")
                };
                FieldError {
                    help: help.or_else(|| C::help(&field, Problem::Invalid)),
                    field: Some(field),
                    message,
                }
            }
            None => {
                let (message, help) = split_help(&self.message);
                FieldError {
                    field: None,
                    message: message.to_string(),
                    help,
                }
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Error {
            field: None,
            message: message.to_string(),
            missing: false,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Error {
            field: Some(field.to_string()),
            message: format!("missing field `{field}`"),
            missing: true,
        }
    }
}

/// Between a message and its help in a deserializer's error text.
const HELP: char = '\u{1f}';

/// A deserializer's error with a help line, for a field type whose
/// `Deserialize` knows what to suggest (`expect`'s checks, a report's
/// sections). A message that starts with the field's name (`` `expect.rows`
/// ... ``) is kept as it is.
pub fn invalid<E: de::Error>(message: &str, help: Option<&str>) -> E {
    match help {
        Some(help) => E::custom(format!("{message}{HELP}{help}")),
        None => E::custom(message),
    }
}

/// The message and the help of [`invalid`]'s text.
fn split_help(text: &str) -> (&str, Option<String>) {
    match text.split_once(HELP) {
        Some((message, help)) => (message, Some(help.to_string())),
        None => (text, None),
    }
}

fn from_toml(e: toml::de::Error) -> Error {
    de::Error::custom(e.message().trim_end())
}

/// The task's table as a struct: only the struct's own fields are handed
/// to it; the rest are the engine's to report as unknown.
struct TableDeserializer<'a>(&'a toml::Table);

impl<'de> de::Deserializer<'de> for TableDeserializer<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(Fields {
            entries: self.0.iter().collect::<Vec<_>>().into_iter(),
            value: None,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let entries: Vec<_> = self
            .0
            .iter()
            .filter(|(k, _)| fields.contains(&k.as_str()))
            .collect();
        visitor.visit_map(Fields {
            entries: entries.into_iter(),
            value: None,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

struct Fields<'a> {
    entries: std::vec::IntoIter<(&'a String, &'a toml::Value)>,
    value: Option<(&'a String, &'a toml::Value)>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some((key, value));
        seed.deserialize(key.as_str().into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let (key, value) = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a value without a key"))?;
        seed.deserialize(FieldValue(value.clone()))
            .map_err(|e| e.in_field(key))
    }
}

/// One field's value. A string is asked for as a string (its error names
/// the TOML type found); everything else is deserialized as the `toml`
/// crate deserializes a value.
struct FieldValue(toml::Value);

macro_rules! by_toml {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                de::Deserializer::$method(self.0, visitor).map_err(from_toml)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for FieldValue {
    type Error = Error;

    by_toml! {
        deserialize_any deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32
        deserialize_i64 deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32
        deserialize_u64 deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char
        deserialize_bytes deserialize_byte_buf deserialize_unit deserialize_seq deserialize_map
        deserialize_identifier deserialize_ignored_any
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            toml::Value::String(s) => visitor.visit_string(s),
            other => Err(de::Error::custom(format!(
                "must be a string, found {}",
                other.type_str()
            ))),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_unit_struct(self.0, name, visitor).map_err(from_toml)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_tuple(self.0, len, visitor).map_err(from_toml)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_tuple_struct(self.0, name, len, visitor).map_err(from_toml)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_struct(self.0, name, fields, visitor).map_err(from_toml)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_enum(self.0, name, variants, visitor).map_err(from_toml)
    }
}

/// Reads a struct's field names off its `Deserialize` impl and stops.
struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> de::Deserializer<'de> for FieldNames<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("field names read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// One string or a list of strings (`source = "a"` or `source = ["a",
/// "b"]`), as several kinds' fields take; each string parsed as `T`
/// (`String`, or a type such as an `s3://` prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringOrList<T = String>(pub Vec<T>);

impl<T> Default for StringOrList<T> {
    fn default() -> Self {
        StringOrList(Vec::new())
    }
}

impl<'de, T> serde::Deserialize<'de> for StringOrList<T>
where
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wrong = |found: &str| {
            de::Error::custom(format!(
                "must be a string or a list of strings, found {found}"
            ))
        };
        let texts = match toml::Value::deserialize(deserializer)? {
            toml::Value::String(s) => vec![s],
            toml::Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s),
                    other => Err(wrong(&format!("a list holding {}", other.type_str()))),
                })
                .collect::<Result<Vec<_>, _>>()?,
            other => return Err(wrong(other.type_str())),
        };
        texts
            .iter()
            .map(|t| t.parse().map_err(de::Error::custom))
            .collect::<Result<Vec<T>, _>>()
            .map(StringOrList)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // read by the deserializer, the point of the test
    struct Sample {
        command: String,
        #[serde(default)]
        env: std::collections::BTreeMap<String, String>,
        sources: Option<StringOrList>,
        count: Option<u32>,
    }

    impl TaskConfig for Sample {
        fn help(field: &str, problem: Problem) -> Option<String> {
            (field == "sources" && problem == Problem::Invalid).then(|| "list the files".into())
        }
    }

    fn parse_text(text: &str) -> Result<Sample, FieldError> {
        parse(&toml::from_str(text).unwrap())
    }

    #[test]
    fn fields_deserialize_and_unknown_ones_are_left_to_the_engine() {
        let s = parse_text("command = 'x'\ncomand = 'y'\nsources = 'a'").unwrap();
        assert_eq!(s.command, "x");
        assert_eq!(s.sources, Some(StringOrList(vec!["a".into()])));
        assert_eq!(
            field_names::<Sample>(),
            ["command", "env", "sources", "count"]
        );
    }

    #[test]
    fn errors_name_the_field_in_the_engines_words() {
        let e = parse_text("command = 3").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("command"));
        assert_eq!(e.message, "`command` must be a string, found integer");
        let e = parse_text("sources = 'a'").unwrap_err();
        assert_eq!(e.field, None, "{e:?}: a missing field is the task's");
        assert_eq!(e.message, "missing field `command`");
        assert_eq!(
            e.help.as_deref(),
            Some("add `command = \"...\"` to the task")
        );
        let e = parse_text("command = 'x'\nenv = 1").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("env"));
        assert!(
            e.message.starts_with("`env`: invalid type: integer"),
            "{e:?}"
        );
        let e = parse_text("command = 'x'\nsources = [1]").unwrap_err();
        assert_eq!(
            e.message,
            "`sources` must be a string or a list of strings, found a list holding integer"
        );
        assert_eq!(e.help.as_deref(), Some("list the files"));
        // A missing field is reported before a wrong one.
        let e = parse_text("env = 1").unwrap_err();
        assert_eq!(e.message, "missing field `command`");
        let e = parse_text("command = 'x'\nenv = 1\ncount = 'x'").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("env"), "the first wrong one");
        let e = parse_text("command = 'x'\ncount = -1").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("count"));
    }
}

/// A data location a task's fields name ([`TaskConfig::locations`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// `s3://bucket/prefix/` (or an object's URI): two locations overlap
    /// when one starts with the other.
    pub uri: String,
    /// The field naming it, and its place in that field's list.
    pub field: &'static str,
    pub index: Option<usize>,
    /// Written (else read) by the task.
    pub writes: bool,
}

impl Location {
    pub fn reads(uri: impl ToString, field: &'static str, index: Option<usize>) -> Location {
        Location {
            uri: uri.to_string(),
            field,
            index,
            writes: false,
        }
    }

    pub fn writes(uri: impl ToString, field: &'static str, index: Option<usize>) -> Location {
        Location {
            uri: uri.to_string(),
            field,
            index,
            writes: true,
        }
    }

    /// Whether one location holds the other.
    pub fn overlaps(&self, other: &Location) -> bool {
        self.uri.starts_with(&other.uri) || other.uri.starts_with(&self.uri)
    }
}
