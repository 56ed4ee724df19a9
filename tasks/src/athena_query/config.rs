//! An `athena_query` task's fields (see the kind's module doc).

use std::path::PathBuf;

use engine::config::Problem;
use engine::{FieldError, TaskConfig};
use serde::Deserialize;

use super::expect::Expect;
use crate::catalog::DatabaseName;
use crate::s3::S3Prefix;

#[derive(Debug, Clone, Deserialize)]
pub struct AthenaQueryConfig {
    /// The query, inline (exactly one of `sql` and `sql_file`).
    pub sql: Option<String>,
    /// A file holding the query, relative to the DAG file's folder.
    pub sql_file: Option<String>,
    /// The default database (Athena's `QueryExecutionContext`).
    pub database: DatabaseName,
    /// Where the result goes (Athena's `OutputLocation`).
    pub output: S3Prefix,
    /// Checks on the result: the task fails unless all pass.
    #[serde(default)]
    pub expect: Expect,
}

/// Where a query's text is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuerySource {
    Inline(String),
    /// Relative to the DAG file's folder, read when the query runs; its
    /// text is not substituted.
    File(PathBuf),
}

impl AthenaQueryConfig {
    /// The query's text or file (exactly one is set once checked).
    pub fn source(&self) -> QuerySource {
        match (&self.sql, &self.sql_file) {
            (Some(sql), _) => QuerySource::Inline(sql.clone()),
            (None, file) => QuerySource::File(PathBuf::from(file.clone().unwrap_or_default())),
        }
    }
}

impl TaskConfig for AthenaQueryConfig {
    fn check_given(fields: &toml::Table) -> Result<(), FieldError> {
        match (fields.contains_key("sql"), fields.contains_key("sql_file")) {
            (true, true) => Err(FieldError {
                field: None,
                message: "`sql` and `sql_file` are both set".to_string(),
                help: Some("keep one: the query inline or the file holding it".to_string()),
            }),
            (false, false) => Err(FieldError {
                field: None,
                message: "missing field `sql` or `sql_file`".to_string(),
                help: Some(
                    "add `sql = \"SELECT ...\"` or `sql_file = \"queries/x.sql\"` to the task"
                        .to_string(),
                ),
            }),
            _ => Ok(()),
        }
    }

    fn check(&self) -> Result<(), FieldError> {
        match (&self.sql, &self.sql_file) {
            (Some(_), Some(_)) => {
                return Err(FieldError {
                    field: None,
                    message: "`sql` and `sql_file` are both set".to_string(),
                    help: Some("keep one: the query inline or the file holding it".to_string()),
                });
            }
            (None, None) => {
                return Err(FieldError {
                    field: None,
                    message: "missing field `sql` or `sql_file`".to_string(),
                    help: Some(
                        "add `sql = \"SELECT ...\"` or `sql_file = \"queries/x.sql\"` to the task"
                            .to_string(),
                    ),
                });
            }
            (Some(sql), None) if sql.trim().is_empty() => {
                return Err(FieldError::field("sql", "`sql` is empty"));
            }
            (None, Some(file)) if file.trim().is_empty() => {
                return Err(FieldError::field("sql_file", "`sql_file` is empty"));
            }
            _ => {}
        }
        Ok(())
    }

    const NAMES_FILES: bool = true;

    fn files(&self) -> Vec<(String, PathBuf)> {
        self.sql_file
            .iter()
            .map(|file| ("sql_file".to_string(), PathBuf::from(file)))
            .collect()
    }

    fn help(field: &str, problem: Problem) -> Option<String> {
        (field == "output" && problem == Problem::Invalid)
            .then(|| "write the output location as s3://bucket/prefix/".into())
    }
}
