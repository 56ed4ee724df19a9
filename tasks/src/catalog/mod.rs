//! The local data catalog: what a Glue crawler writes and Athena reads.
//!
//! One JSON file per table, `STATE_ROOT/catalog/DATABASE/TABLE.json`,
//! replaced atomically (temp file, then rename) so a reader sees a whole
//! table definition or the previous one. Types are Glue's (Hive's) type
//! names, so the same definitions describe the production catalog.
//!
//! This module only stores and reads definitions; inferring them is the
//! crawler's job and querying them the query engine's.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("catalog {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("catalog {path} is not a table definition: {source}")]
    Corrupt {
        path: String,
        source: serde_json::Error,
    },
    #[error(
        "`{0}` is not a valid database or table name: use lowercase letters, digits and `_` (Glue and Athena's rule), at most 255 characters"
    )]
    InvalidName(String),
}

/// A column and its Glue type (`string`, `bigint`, `int`, `double`,
/// `boolean`, `date`, `timestamp`, `decimal(p,s)`, `array<...>`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Parquet,
    Csv,
}

/// One Hive-style partition: `values` line up with the table's
/// `partition_keys`; `location` is the partition's folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub values: Vec<String>,
    pub location: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub database: String,
    pub name: String,
    /// The table's `s3://` prefix.
    pub location: String,
    pub format: Format,
    /// Data columns, partition keys excluded.
    pub columns: Vec<Column>,
    pub partition_keys: Vec<Column>,
    #[serde(default)]
    pub partitions: Vec<Partition>,
    /// Starts at 1; the crawler adds 1 whenever the columns or the
    /// partition keys change (Glue's table version).
    pub schema_version: u32,
    /// CSV only: whether the first line is a header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv_header: Option<bool>,
    pub updated_at: String,
}

/// Glue's naming rule, also Athena's for unquoted identifiers.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A database name as a task field gives it: lowercase letters, digits
/// and `_`, Glue's and Athena's rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DatabaseName(String);

impl DatabaseName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DatabaseName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for DatabaseName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        if valid_name(&name) {
            Ok(DatabaseName(name))
        } else {
            Err(engine::config::invalid(
                &format!("`database` `{name}` is not a valid database name"),
                Some("use lowercase letters, digits and `_` (Glue and Athena's rule)"),
            ))
        }
    }
}

/// The catalog under one state dir.
#[derive(Debug, Clone)]
pub struct Catalog {
    root: PathBuf,
}

impl Catalog {
    pub fn new(state_root: impl AsRef<Path>) -> Self {
        Catalog {
            root: state_root.as_ref().join("catalog"),
        }
    }

    fn table_path(&self, database: &str, table: &str) -> Result<PathBuf, CatalogError> {
        for name in [database, table] {
            if !valid_name(name) {
                return Err(CatalogError::InvalidName(name.to_string()));
            }
        }
        Ok(self.root.join(database).join(format!("{table}.json")))
    }

    pub fn get(&self, database: &str, table: &str) -> Result<Option<Table>, CatalogError> {
        let path = self.table_path(database, table)?;
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| CatalogError::Corrupt {
                        path: path.display().to_string(),
                        source,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CatalogError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Writes (creates or replaces) a table definition atomically.
    pub fn put(&self, table: &Table) -> Result<(), CatalogError> {
        let path = self.table_path(&table.database, &table.name)?;
        let io = |source| CatalogError::Io {
            path: path.display().to_string(),
            source,
        };
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(io)?;
        let bytes = serde_json::to_vec_pretty(table).map_err(|source| CatalogError::Corrupt {
            path: path.display().to_string(),
            source,
        })?;
        let temp = dir.join(format!(".{}.{}.tmp", table.name, std::process::id()));
        std::fs::write(&temp, bytes).map_err(io)?;
        std::fs::rename(&temp, &path).map_err(io)
    }

    /// Database names, sorted.
    pub fn databases(&self) -> Result<Vec<String>, CatalogError> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(source) => {
                return Err(CatalogError::Io {
                    path: self.root.display().to_string(),
                    source,
                });
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if entry.path().is_dir() && valid_name(&name) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// A database's tables, sorted by name.
    pub fn tables(&self, database: &str) -> Result<Vec<Table>, CatalogError> {
        if !valid_name(database) {
            return Err(CatalogError::InvalidName(database.to_string()));
        }
        let dir = self.root.join(database);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(CatalogError::Io {
                    path: dir.display().to_string(),
                    source,
                });
            }
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .filter(|n| valid_name(n))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        let mut tables = Vec::new();
        for name in names {
            if let Some(table) = self.get(database, &name)? {
                tables.push(table);
            }
        }
        Ok(tables)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> Table {
        Table {
            database: "rental".into(),
            name: name.into(),
            location: format!("s3://b/processed/{name}/"),
            format: Format::Parquet,
            columns: vec![Column {
                name: "id".into(),
                data_type: "string".into(),
            }],
            partition_keys: vec![],
            partitions: vec![],
            schema_version: 1,
            csv_header: None,
            updated_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn tables_round_trip_and_list_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::new(dir.path());
        assert!(catalog.get("rental", "users").unwrap().is_none());
        catalog.put(&table("users")).unwrap();
        catalog.put(&table("locations")).unwrap();
        assert_eq!(
            catalog.get("rental", "users").unwrap(),
            Some(table("users"))
        );
        let names: Vec<String> = catalog
            .tables("rental")
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, vec!["locations", "users"]);
        assert_eq!(catalog.databases().unwrap(), vec!["rental"]);
    }

    #[test]
    fn names_that_escape_or_break_sql_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::new(dir.path());
        assert!(matches!(
            catalog.get("../x", "t"),
            Err(CatalogError::InvalidName(_))
        ));
        assert!(matches!(
            catalog.get("rental", "Users"),
            Err(CatalogError::InvalidName(_))
        ));
        let mut bad = table("ok");
        bad.name = "a-b".into();
        assert!(catalog.put(&bad).is_err());
    }
}
