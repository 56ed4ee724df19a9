//! `s3_ingest`: uploads local files or folders to `s3://bucket/prefix/`.
//!
//! ```toml
//! [tasks.upload_raw]
//! type = "s3_ingest"
//! source = "data/raw"                    # a file or a folder, or a list of them
//! destination = "s3://my-bucket/raw/"    # a prefix: ends with `/`
//! include = "*.csv"                      # optional; or a list, e.g. ["*.csv", "*.json"]
//! ```
//!
//! * `source` — a path or a list of paths; relative paths start at the DAG
//!   file's folder. A folder uploads its files recursively, each under its
//!   path relative to the folder (`data/raw/2024/a.csv` becomes
//!   `raw/2024/a.csv`), like `aws s3 cp --recursive`; a file uploads under
//!   its own name. Two sources yielding the same key are an error.
//! * `destination` — where the objects go; `s3://bucket` (the bucket
//!   itself) is allowed too.
//! * `include` — file-name patterns for the files found in folders (`*`
//!   matches any run of characters, `?` one); files named directly in
//!   `source` are always uploaded. Without it, every file is uploaded.
//!
//! Each object is written atomically. An object already at the destination
//! with the same size and SHA-256 is left alone and reported as skipped, so
//! re-running the task (or a resume after a crash) uploads only what
//! changed. Nothing at the destination is ever deleted. The task fails if
//! the sources hold no file to upload, naming the sources and patterns.
//!
//! The output, for downstream tasks (`${...}` or `FLUX_INPUTS`):
//!
//! ```json
//! {"destination": "s3://my-bucket/raw/",
//!  "objects": [{"key": "raw/2024/a.csv", "size": 12, "md5": "…", "sha256": "…", "skipped": false}],
//!  "objects_total": 1, "objects_omitted": 0,
//!  "uploaded": 1, "skipped": 0, "bytes": 12, "total_bytes": 12}
//! ```
//!
//! `md5` is the hex ETag S3 gives a single-part upload, `sha256` the
//! identity compared for skips; `bytes` counts the bytes uploaded by this
//! attempt and `total_bytes` the size of every object. The list is sorted
//! by key and holds at most [`MAX_LISTED_OBJECTS`] objects (fewer if their
//! keys are long), so that the output stays far below the engine's 256 KiB
//! limit; `objects_omitted` says how many more there were, and the
//! attempt's `stdout.log` lists them all.
//!
//! # On AWS
//!
//! [`sfn`]: in the Step Functions export the local files are not
//! reachable from AWS; they are uploaded when the state machine is
//! deployed, and the task becomes a check that each object is there
//! (`headObject`), listed by the same code as here ([`files`]). With
//! `run --target aws` the files go to the real bucket through the SDK
//! ([`aws`]: an SHA-256 checksum S3 verifies, multipart for large files,
//! skips decided by `HeadObject`).

pub(crate) mod aws;
mod config;

pub(crate) use aws::upload_file;
mod files;
mod sfn;

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use engine::{Attempt, Kind, TaskAction, TaskFailure};
use serde_json::json;

use crate::cancel::CancelOnDrop;
use crate::s3::{Checksums, LocalS3, S3Uri, checksum_file};
pub use config::S3IngestConfig;
#[cfg(test)]
use files::glob;
use files::{Absent, SourceFile};

/// At most this many objects are listed in the output.
pub const MAX_LISTED_OBJECTS: usize = 500;

/// The listed objects take at most this many bytes of JSON.
const MAX_LISTED_BYTES: usize = 128 * 1024;

pub struct S3Ingest;

impl Kind for S3Ingest {
    const NAME: &'static str = "s3_ingest";
    const SUMMARY: &'static str = "uploads local files or folders (`source`) to an S3 prefix (`destination`), skipping unchanged objects";
    type Config = S3IngestConfig;

    fn action(&self, config: S3IngestConfig) -> Arc<dyn TaskAction> {
        Arc::new(S3IngestAction(config))
    }
}

struct S3IngestAction(S3IngestConfig);

#[async_trait]
impl TaskAction for S3IngestAction {
    async fn run(&self, attempt: &Attempt) -> Result<Option<serde_json::Value>, TaskFailure> {
        let job = Job {
            sources: self.0.source.0.clone(),
            destination: self.0.destination.clone(),
            include: self.0.include.0.clone(),
            dag_dir: attempt.dag_dir.clone(),
            log_path: attempt.log_dir.join("stdout.log"),
            s3: LocalS3::new(&attempt.state_root),
            span: tracing::Span::current(),
        };
        // Stops the blocking upload (between files) on a timeout or a cancel.
        let guard = CancelOnDrop::default();
        let cancel = guard.flag();
        tokio::task::spawn_blocking(move || job.run(&cancel))
            .await
            .map_err(|e| TaskFailure::new(format!("the upload stopped unexpectedly: {e}")))?
            .map(Some)
    }
}

struct Job {
    sources: Vec<String>,
    destination: S3Uri,
    include: Vec<String>,
    dag_dir: PathBuf,
    log_path: PathBuf,
    s3: LocalS3,
    /// The attempt's span: the uploads run on a blocking thread.
    span: tracing::Span,
}

/// What happened to one object.
pub(crate) struct Record {
    key: String,
    checksums: Checksums,
    skipped: bool,
}

impl Record {
    /// Whether the object was there already with the same content.
    pub(crate) fn skipped(&self) -> bool {
        self.skipped
    }
}

impl Job {
    fn run(&self, cancel: &AtomicBool) -> Result<serde_json::Value, TaskFailure> {
        let items = files::list(
            &self.sources,
            &self.dag_dir,
            &self.include,
            &self.destination,
            Absent::Fails,
        )?;
        if items.is_empty() {
            return Err(nothing_to_upload(&self.sources, &self.include));
        }
        if let Some(dir) = self.log_path.parent() {
            fs::create_dir_all(dir)
                .map_err(|e| TaskFailure::new(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut log = fs::File::create(&self.log_path).map_err(|e| {
            TaskFailure::new(format!("cannot create {}: {e}", self.log_path.display()))
        })?;
        let mut records = Vec::with_capacity(items.len());
        for item in &items {
            if cancel.load(Ordering::Relaxed) {
                return Err(TaskFailure::new("cancelled"));
            }
            let target = self
                .destination
                .join(&item.relative)
                .map(|uri| uri.to_string())
                .unwrap_or_else(|_| item.relative.clone());
            let span = crate::steps::step(&self.span, "s3.put", &target);
            let record = span.in_scope(|| self.upload(item));
            crate::steps::finish(&span, &record);
            let record = record?;
            let bucket = format!("s3://{}", self.destination.bucket());
            let line = log_line(&record, &bucket, &item.path);
            log.write_all(line.as_bytes()).map_err(|e| {
                TaskFailure::new(format!("cannot write {}: {e}", self.log_path.display()))
            })?;
            records.push(record);
        }
        Ok(output(&self.destination, &records))
    }

    /// Uploads one file unless the destination already holds its bytes.
    fn upload(&self, item: &SourceFile) -> Result<Record, TaskFailure> {
        let path = &item.path;
        let uri = self
            .destination
            .join(&item.relative)
            .map_err(|e| TaskFailure::new(format!("cannot upload {}: {e}", path.display())))?;
        let local = checksum_file(path).map_err(|e| {
            TaskFailure::new(format!(
                "cannot read {}: {e}; check that the file exists and is readable",
                path.display()
            ))
        })?;
        let failed = |e: crate::s3::S3Error| {
            TaskFailure::new(format!("cannot upload {} to {uri}: {e}", path.display()))
        };
        if self.s3.size(&uri).map_err(failed)? == Some(local.size)
            && let Some(existing) = self.s3.head(&uri).map_err(failed)?
            && existing.checksums.sha256 == local.sha256
        {
            return Ok(Record {
                key: uri.key().to_string(),
                checksums: local,
                skipped: true,
            });
        }
        let written = self.s3.put_file(path, &uri).map_err(failed)?;
        if written.checksums != local {
            return Err(TaskFailure::new(format!(
                "{} changed while it was being uploaded to {uri}; re-run the task once the file is complete",
                path.display()
            )));
        }
        Ok(Record {
            key: uri.key().to_string(),
            checksums: local,
            skipped: false,
        })
    }
}

/// The failure of a task whose sources hold no file to upload.
fn nothing_to_upload(sources: &[String], include: &[String]) -> TaskFailure {
    let patterns = if include.is_empty() {
        String::new()
    } else {
        format!(" matching include {include:?}")
    };
    TaskFailure::new(format!(
        "nothing to upload: {} hold(s) no files{patterns}",
        sources
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// One object's line in the attempt's `stdout.log`; `bucket` is
/// `s3://BUCKET`.
fn log_line(record: &Record, bucket: &str, path: &std::path::Path) -> String {
    format!(
        "{} {bucket}/{} ({} bytes, sha256 {}) from {}\n",
        if record.skipped {
            "unchanged"
        } else {
            "uploaded "
        },
        record.key,
        record.checksums.size,
        record.checksums.sha256,
        path.display()
    )
}

/// The task's output: totals, and the first objects (see the module docs).
fn output(destination: &S3Uri, records: &[Record]) -> serde_json::Value {
    let mut objects = Vec::new();
    let mut listed_bytes = 0;
    for record in records {
        let object = json!({
            "key": record.key,
            "size": record.checksums.size,
            "md5": record.checksums.md5,
            "sha256": record.checksums.sha256,
            "skipped": record.skipped,
        });
        listed_bytes += object.to_string().len() + 1;
        if objects.len() >= MAX_LISTED_OBJECTS || listed_bytes > MAX_LISTED_BYTES {
            break;
        }
        objects.push(object);
    }
    let uploaded: Vec<&Record> = records.iter().filter(|r| !r.skipped).collect();
    json!({
        "destination": destination.to_string(),
        "objects_total": records.len(),
        "objects_omitted": records.len() - objects.len(),
        "objects": objects,
        "uploaded": uploaded.len(),
        "skipped": records.len() - uploaded.len(),
        "bytes": uploaded.iter().map(|r| r.checksums.size).sum::<u64>(),
        "total_bytes": records.iter().map(|r| r.checksums.size).sum::<u64>(),
    })
}

#[cfg(test)]
mod tests;
