//! An `emr_spark` task's fields (see the kind's module doc).

use engine::config::Location;
use engine::{FieldError, TaskConfig};
use indexmap::IndexMap;
use serde::Deserialize;

use crate::s3::{S3Prefix, S3Uri};

/// A job's definition, as every backend runs it.
#[derive(Debug, Clone, Deserialize)]
pub struct SparkJob {
    /// The PySpark script, relative to the DAG file's folder (or `s3://`).
    pub script: String,
    /// Shipped with `--py-files`.
    #[serde(default)]
    pub py_files: Vec<String>,
    /// The script's arguments; `s3://` URIs are what the job reads and
    /// writes.
    #[serde(default)]
    pub args: Vec<String>,
    /// Prefixes the job reads.
    #[serde(default)]
    pub reads: Vec<S3Prefix>,
    /// Prefixes the job writes, each published whole.
    #[serde(default)]
    pub writes: Vec<S3Prefix>,
    /// Spark settings, in the order written.
    #[serde(default)]
    pub spark_conf: IndexMap<String, String>,
    /// An object the job writes whose JSON becomes the task's output.
    pub output_json: Option<S3Uri>,
}

impl TaskConfig for SparkJob {
    const NAMES_LOCATIONS: bool = true;

    fn locations(&self) -> Vec<Location> {
        let reads = self.reads.iter().enumerate();
        let writes = self.writes.iter().enumerate();
        reads
            .map(|(i, p)| Location::reads(p, "reads", Some(i)))
            .chain(writes.map(|(i, p)| Location::writes(p, "writes", Some(i))))
            .collect()
    }

    fn check(&self) -> Result<(), FieldError> {
        if !self.script.ends_with(".py") {
            return Err(
                FieldError::field("script", "`script` must be a Python file (*.py)")
                    .help("write for example `script = \"../pyspark/rental_clean.py\"`"),
            );
        }
        let writes: Vec<S3Uri> = self.writes.iter().map(|w| w.uri().clone()).collect();
        if let Some((a, b)) = S3Uri::first_overlap(&writes) {
            return Err(FieldError::field(
                "writes",
                format!("`writes` prefixes {a} and {b} overlap"),
            )
            .help("declare each output prefix once; a prefix covers everything under it"));
        }
        Ok(())
    }
}
