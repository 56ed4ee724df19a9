//! `s3_ingest` on AWS (`run --target aws`): the same files, listed by the
//! same code as locally, uploaded to the real bucket with the SDK.
//!
//! * Every object carries the SHA-256 of its bytes twice: as the
//!   checksum S3 verifies on arrival (`x-amz-checksum-sha256`, per part
//!   for a multipart upload), so a corrupted upload is refused rather than
//!   stored; and as the metadata `sha256` (hex, of the whole file), which
//!   is what a later run compares: an object whose size and recorded
//!   SHA-256 match the file is skipped without a byte sent.
//! * Files of [`MULTIPART_THRESHOLD`] bytes or more go up in parts of
//!   [`PART_SIZE`], [`PARTS_AT_ONCE`] at a time; an upload that fails or
//!   is cancelled is aborted, so no parts are left behind to pay for.
//!   (`FLUX_S3_MULTIPART_THRESHOLD` and `FLUX_S3_PART_SIZE` override both,
//!   in bytes; S3 refuses parts under 5 MiB but the last.)
//!
//! The output and `stdout.log` are the local backend's.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart};
use engine::scheduler::TaskProgress;
use engine::{Attempt, TaskAction, TaskFailure};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::files::{self, Absent, SourceFile};
use super::{Record, S3IngestConfig, log_line, nothing_to_upload, output};
use crate::aws::{AwsRun, OnAws, error_text};
use crate::s3::{Checksums, S3Uri, checksum_file};

/// Files this large or larger are uploaded in parts.
pub const MULTIPART_THRESHOLD: u64 = 64 * 1024 * 1024;
/// The size of each part but the last.
pub const PART_SIZE: u64 = 16 * 1024 * 1024;
/// Parts in flight at once, per file.
pub const PARTS_AT_ONCE: usize = 4;
/// The metadata key holding the file's SHA-256 (hex).
pub const SHA256_METADATA: &str = "sha256";

impl OnAws for super::S3Ingest {
    fn aws_action(&self, config: S3IngestConfig, aws: &Arc<AwsRun>) -> Arc<dyn TaskAction> {
        Arc::new(Upload {
            config,
            aws: aws.clone(),
        })
    }
}

struct Upload {
    config: S3IngestConfig,
    aws: Arc<AwsRun>,
}

fn bytes_from_env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

#[async_trait]
impl TaskAction for Upload {
    async fn run(&self, attempt: &Attempt) -> Result<Option<serde_json::Value>, TaskFailure> {
        let config = &self.config;
        let items = files::list(
            &config.source.0,
            &attempt.dag_dir,
            &config.include.0,
            &config.destination,
            Absent::Fails,
        )?;
        if items.is_empty() {
            return Err(nothing_to_upload(&config.source.0, &config.include.0));
        }
        let log_path = attempt.log_dir.join("stdout.log");
        let mut log = String::new();
        let mut records = Vec::with_capacity(items.len());
        for item in &items {
            let uri = config.destination.join(&item.relative).map_err(|e| {
                TaskFailure::new(format!("cannot upload {}: {e}", item.path.display()))
            })?;
            let span = crate::steps::step(&tracing::Span::current(), "s3.put", &uri.to_string());
            attempt.progress.update(&format!(
                "{}/{}: {}",
                records.len() + 1,
                items.len(),
                item.relative
            ));
            let record = upload_file(&self.aws, &item.path, &uri, &attempt.progress)
                .instrument(span.clone())
                .await;
            crate::steps::finish(&span, &record);
            let record = record?;
            log += &log_line(&record, &format!("s3://{}", uri.bucket()), &item.path);
            records.push(record);
        }
        if let Some(dir) = log_path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(&log_path, log)
            .map_err(|e| TaskFailure::new(format!("cannot write {}: {e}", log_path.display())))?;
        Ok(Some(output(&config.destination, &records)))
    }
}

/// Uploads the file at `path` to `uri` unless the object already holds
/// its bytes (its size and recorded SHA-256 match); a multipart upload's
/// parts are counted on `progress`.
pub(crate) async fn upload_file(
    aws: &AwsRun,
    path: &Path,
    uri: &S3Uri,
    progress: &TaskProgress,
) -> Result<Record, TaskFailure> {
    let item = SourceFile {
        path: path.to_path_buf(),
        relative: String::new(),
    };
    Uploader { aws, progress }.upload(&item, uri).await
}

struct Uploader<'a> {
    aws: &'a AwsRun,
    progress: &'a TaskProgress,
}

impl Uploader<'_> {
    /// Uploads one file unless the object already holds its bytes.
    async fn upload(&self, item: &SourceFile, uri: &S3Uri) -> Result<Record, TaskFailure> {
        let path = item.path.clone();
        let local = tokio::task::spawn_blocking(move || checksum_file(&path))
            .await
            .map_err(|e| TaskFailure::new(format!("reading the file stopped: {e}")))?
            .map_err(|e| {
                TaskFailure::new(format!(
                    "cannot read {}: {e}; check that the file exists and is readable",
                    item.path.display()
                ))
            })?;
        let failed = |what: &str, e: String| {
            TaskFailure::new(format!(
                "cannot upload {} to {uri}: {what}: {e}",
                item.path.display()
            ))
        };
        let s3 = &self.aws.s3;
        let head = s3
            .head_object()
            .bucket(uri.bucket())
            .key(uri.key())
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await;
        match head {
            Ok(head) => {
                let recorded = head
                    .metadata()
                    .and_then(|m| m.get(SHA256_METADATA))
                    .map(String::as_str);
                if head.content_length() == Some(local.size as i64)
                    && recorded == Some(local.sha256.as_str())
                {
                    return Ok(Record {
                        key: uri.key().to_string(),
                        checksums: local,
                        skipped: true,
                    });
                }
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {}
            Err(e) => return Err(failed("HeadObject", error_text(&e))),
        }
        let threshold = bytes_from_env("FLUX_S3_MULTIPART_THRESHOLD", MULTIPART_THRESHOLD);
        if local.size >= threshold {
            let part_size = bytes_from_env("FLUX_S3_PART_SIZE", PART_SIZE);
            self.multipart(&item.path, uri, &local, part_size)
                .await
                .map_err(|e| failed("multipart upload", e))?;
        } else {
            let body = ByteStream::from_path(&item.path)
                .await
                .map_err(|e| failed("reading the file", e.to_string()))?;
            s3.put_object()
                .bucket(uri.bucket())
                .key(uri.key())
                .body(body)
                .checksum_sha256(base64_of_hex(&local.sha256))
                .metadata(SHA256_METADATA, &local.sha256)
                .send()
                .await
                .map_err(|e| failed("PutObject", error_text(&e)))?;
        }
        Ok(Record {
            key: uri.key().to_string(),
            checksums: local,
            skipped: false,
        })
    }

    async fn multipart(
        &self,
        path: &Path,
        uri: &S3Uri,
        local: &Checksums,
        part_size: u64,
    ) -> Result<(), String> {
        let s3 = &self.aws.s3;
        let created = s3
            .create_multipart_upload()
            .bucket(uri.bucket())
            .key(uri.key())
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .metadata(SHA256_METADATA, &local.sha256)
            .send()
            .await
            .map_err(|e| format!("CreateMultipartUpload: {}", error_text(&e)))?;
        let upload_id = created
            .upload_id()
            .ok_or("CreateMultipartUpload gave no upload id")?
            .to_string();
        // Aborts the upload unless it completes, also when this future is
        // dropped (a timeout or a cancel): parts are billed until aborted.
        let mut abort = AbortOnDrop {
            client: s3.clone(),
            bucket: uri.bucket().to_string(),
            key: uri.key().to_string(),
            upload_id: Some(upload_id.clone()),
        };
        let parts = self
            .parts(path, uri, &upload_id, local.size, part_size)
            .await?;
        s3.complete_multipart_upload()
            .bucket(uri.bucket())
            .key(uri.key())
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| format!("CompleteMultipartUpload: {}", error_text(&e)))?;
        abort.upload_id = None;
        Ok(())
    }

    /// Uploads the parts, [`PARTS_AT_ONCE`] at a time; in part order.
    async fn parts(
        &self,
        path: &Path,
        uri: &S3Uri,
        upload_id: &str,
        size: u64,
        part_size: u64,
    ) -> Result<Vec<CompletedPart>, String> {
        let count = size.div_ceil(part_size).max(1);
        let mut done = Vec::with_capacity(count as usize);
        let mut running = JoinSet::new();
        let mut next = 0u64;
        while next < count || !running.is_empty() {
            while next < count && running.len() < PARTS_AT_ONCE {
                let number = next as i32 + 1;
                let offset = next * part_size;
                let length = part_size.min(size - offset);
                let (s3, bucket, key) = (
                    self.aws.s3.clone(),
                    uri.bucket().to_string(),
                    uri.key().to_string(),
                );
                let (path, upload_id) = (path.to_path_buf(), upload_id.to_string());
                running.spawn(
                    async move {
                        let bytes =
                            tokio::task::spawn_blocking(move || read_range(&path, offset, length))
                                .await
                                .map_err(|e| format!("reading part {number} stopped: {e}"))?
                                .map_err(|e| format!("cannot read part {number}: {e}"))?;
                        let sha256 = {
                            use sha2::Digest;
                            aws_smithy_types::base64::encode(sha2::Sha256::digest(&bytes))
                        };
                        let answer = s3
                            .upload_part()
                            .bucket(bucket)
                            .key(key)
                            .upload_id(upload_id)
                            .part_number(number)
                            .checksum_sha256(&sha256)
                            .body(ByteStream::from(bytes))
                            .send()
                            .await
                            .map_err(|e| format!("UploadPart {number}: {}", error_text(&e)))?;
                        Ok::<_, String>(
                            CompletedPart::builder()
                                .part_number(number)
                                .set_e_tag(answer.e_tag().map(str::to_string))
                                .checksum_sha256(sha256)
                                .build(),
                        )
                    }
                    .in_current_span(),
                );
                next += 1;
            }
            if let Some(joined) = running.join_next().await {
                done.push(joined.map_err(|e| format!("a part's upload stopped: {e}"))??);
                const MIB: u64 = 1024 * 1024;
                self.progress.update(&format!(
                    "{}: {} of {} parts, {} MiB",
                    uri.key(),
                    done.len(),
                    count,
                    size.div_ceil(MIB)
                ));
            }
        }
        done.sort_by_key(|p| p.part_number());
        Ok(done)
    }
}

fn read_range(path: &Path, offset: u64, length: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::with_capacity(length as usize);
    file.take(length).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != length {
        return Err(std::io::Error::other(format!(
            "the file shrank while it was being uploaded (expected {length} bytes at {offset}, read {})",
            bytes.len()
        )));
    }
    Ok(bytes)
}

struct AbortOnDrop {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let request = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id);
        runtime.spawn(async move {
            let _ = request.send().await;
        });
    }
}

/// The base64 of the bytes a lowercase hex string spells (S3's checksum
/// headers are base64).
fn base64_of_hex(hex: &str) -> String {
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    aws_smithy_types::base64::encode(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_hex_digest_becomes_the_base64_s3_expects() {
        // SHA-256 of "abc", from FIPS 180-2, and its base64 as `openssl
        // dgst -sha256 -binary | base64` prints it.
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(
            super::base64_of_hex(hex),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }
}
