//! An `s3_ingest` task's fields (see the kind's module doc).

use engine::config::{Location, Problem, StringOrList};
use engine::{FieldError, TaskConfig};
use serde::Deserialize;

use crate::s3::S3Uri;

#[derive(Debug, Clone, Deserialize)]
pub struct S3IngestConfig {
    /// Files or folders, relative to the DAG file's folder.
    pub source: StringOrList,
    /// The prefix the objects go under (ends with `/`).
    pub destination: S3Uri,
    /// File-name patterns for the files found in folders.
    #[serde(default)]
    pub include: StringOrList,
}

impl TaskConfig for S3IngestConfig {
    const NAMES_LOCATIONS: bool = true;

    fn locations(&self) -> Vec<Location> {
        vec![Location::writes(&self.destination, "destination", None)]
    }

    fn check(&self) -> Result<(), FieldError> {
        let sources = &self.source.0;
        if sources.is_empty() {
            return Err(FieldError::field("source", "`source` is an empty list")
                .help("name at least one file or folder to upload"));
        }
        if sources.iter().any(|s| s.trim().is_empty()) {
            return Err(FieldError::field("source", "`source` holds an empty path")
                .help("give the path of a file or folder, relative to the DAG file's folder"));
        }
        if !self.destination.is_prefix() {
            return Err(FieldError::field(
                "destination",
                format!(
                    "`destination` must be a prefix ending with `/`, found `{}`",
                    self.destination
                ),
            )
            .help(format!(
                "write `destination = \"{}\"`",
                self.destination.as_prefix()
            )));
        }
        for pattern in &self.include.0 {
            if pattern.is_empty() || pattern.contains('/') {
                return Err(FieldError::field(
                    "include",
                    format!("`include` pattern `{pattern}` must be a non-empty file name pattern without `/`"),
                )
                .help("patterns match file names, as in include = \"*.csv\""));
            }
        }
        Ok(())
    }

    fn help(field: &str, problem: Problem) -> Option<String> {
        match (field, problem) {
            ("source", Problem::Missing) => Some(
                "add `source = \"data/raw\"` (a file or folder, relative to the DAG file) to the task"
                    .into(),
            ),
            ("destination", Problem::Invalid) => {
                Some("write the destination as s3://bucket/prefix/".into())
            }
            _ => None,
        }
    }
}
