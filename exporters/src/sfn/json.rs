//! A JSON tree that keeps object keys in the order they were added.
//!
//! `serde_json::Value` sorts keys (the workspace does not enable
//! `preserve_order`, and turning it on would change every crate's build),
//! and a state machine reads best as `Type`, `Comment`, `Resource`, ...,
//! `Next`, with states in flow order. serde_json's serializer writes a
//! map's entries in the order it is given them, so serializing this tree
//! gives ordered, deterministic output.

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Obj),
}

/// A JSON object, keys in insertion order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Obj(pub Vec<(String, Json)>);

impl Obj {
    pub fn new() -> Self {
        Obj(Vec::new())
    }

    /// Adds `key` (replacing an earlier value of the same key in place).
    pub fn with(mut self, key: &str, value: impl Into<Json>) -> Self {
        self.set(key, value);
        self
    }

    /// Adds `key` only when there is a value.
    pub fn with_opt(self, key: &str, value: Option<impl Into<Json>>) -> Self {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }

    pub fn set(&mut self, key: &str, value: impl Into<Json>) {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    /// Adds every key of `other`, in its order.
    pub fn merged(mut self, other: Obj) -> Self {
        for (k, v) in other.0 {
            self.set(&k, v);
        }
        self
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl From<Obj> for Json {
    fn from(o: Obj) -> Self {
        Json::Object(o)
    }
}
impl From<&str> for Json {
    fn from(s: &str) -> Self {
        Json::Str(s.to_string())
    }
}
impl From<String> for Json {
    fn from(s: String) -> Self {
        Json::Str(s)
    }
}
impl From<&String> for Json {
    fn from(s: &String) -> Self {
        Json::Str(s.clone())
    }
}
impl From<bool> for Json {
    fn from(b: bool) -> Self {
        Json::Bool(b)
    }
}
impl From<i64> for Json {
    fn from(n: i64) -> Self {
        Json::Int(n)
    }
}
impl From<u64> for Json {
    fn from(n: u64) -> Self {
        // Every count the exporter writes is far below i64::MAX (Step
        // Functions caps its numbers at 99,999,999).
        Json::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}
impl From<u32> for Json {
    fn from(n: u32) -> Self {
        Json::Int(n.into())
    }
}
impl From<f64> for Json {
    fn from(f: f64) -> Self {
        Json::Float(f)
    }
}
impl From<Vec<Json>> for Json {
    fn from(items: Vec<Json>) -> Self {
        Json::Array(items)
    }
}
impl From<Vec<String>> for Json {
    fn from(items: Vec<String>) -> Self {
        Json::Array(items.into_iter().map(Json::Str).collect())
    }
}

/// A TOML value as JSON: tables keep their order (the workspace's `toml`
/// preserves it), dates and times become their RFC 3339 text.
pub fn from_toml(value: &toml::Value) -> Json {
    match value {
        toml::Value::String(s) => Json::Str(s.clone()),
        toml::Value::Integer(i) => Json::Int(*i),
        toml::Value::Float(f) => Json::Float(*f),
        toml::Value::Boolean(b) => Json::Bool(*b),
        toml::Value::Datetime(d) => Json::Str(d.to_string()),
        toml::Value::Array(items) => Json::Array(items.iter().map(from_toml).collect()),
        toml::Value::Table(table) => Json::Object(Obj(table
            .iter()
            .map(|(k, v)| (k.clone(), from_toml(v)))
            .collect())),
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Int(i) => serializer.serialize_i64(*i),
            Json::Float(f) => serializer.serialize_f64(*f),
            Json::Str(s) => serializer.serialize_str(s),
            Json::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(obj) => obj.serialize(serializer),
        }
    }
}

impl Serialize for Obj {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_insertion_order_and_replace_in_place() {
        let o = Obj::new()
            .with("b", 1u64)
            .with("a", "x")
            .with("b", 2u64)
            .with_opt("c", None::<&str>);
        let text = serde_json::to_string(&Json::from(o)).unwrap();
        assert_eq!(text, r#"{"b":2,"a":"x"}"#);
    }

    #[test]
    fn toml_tables_keep_their_order() {
        let t: toml::Table = toml::from_str("z = 1\na = [true, 2.5]\n").unwrap();
        let text = serde_json::to_string(&from_toml(&toml::Value::Table(t))).unwrap();
        assert_eq!(text, r#"{"z":1,"a":[true,2.5]}"#);
    }
}
