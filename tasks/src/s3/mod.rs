//! The local S3 backend: buckets are folders under the state dir, and the
//! crawler, query and Spark tasks read and write objects through it.
//!
//! `s3://BUCKET/KEY` is the file `STATE_ROOT/s3/BUCKET/KEY`
//! ([`LocalS3::path_of`]), so local tools (DuckDB, Spark) can read objects
//! as plain files. URIs are validated by [`S3Uri::parse`]: S3's bucket
//! naming rules, and keys that would leave the bucket's folder (`..` or `.`
//! segments, a leading `/`, `//`, backslashes, NUL) are refused with an
//! error that names the URI and says why. Key segments starting with
//! `.flux-` are reserved for the backend's own hidden entries.
//!
//! # Writes are atomic
//!
//! * One object ([`LocalS3::put_file`], [`LocalS3::put_bytes`]) is written
//!   to a hidden temp file in the destination's folder, fsynced, and
//!   renamed over the destination: a reader sees the old object or the new
//!   one, never a part.
//! * A whole prefix (a job's output folder) is written into a staging
//!   folder next to the destination ([`LocalS3::begin_prefix_write`] gives
//!   its path, [`PrefixWrite::commit`] publishes it; [`LocalS3::publish_dir`]
//!   copies a finished local folder the same way). A published prefix is a
//!   symlink `NAME -> .flux-v.TAG.UNIQUE`, a complete version folder next
//!   to it; commit fsyncs the staged tree and atomically renames a new
//!   symlink over the old one. Readers that go through the path see the
//!   old complete output or the new one, at every moment and after a crash
//!   at any point; readers that need one version across many files take a
//!   [`Snapshot`] (or [`LocalS3::list`]), which pins the version with a
//!   shared lock until dropped. The first publish over a prefix that so far
//!   was a plain folder of single objects swaps the folder for the symlink
//!   with Linux's `renameat2(RENAME_EXCHANGE)`, also atomic (elsewhere, two
//!   renames with a moment in which the prefix is missing).
//!
//! # Leftovers
//!
//! A crash leaves hidden entries next to the destination: `.flux-part.*`
//! (an object being written), `.flux-v.*` (a staging folder never
//! committed, or an old version) and `.flux-link.*` (a symlink about to be
//! renamed). They are never listed. Each writer holds an exclusive `flock`
//! on its temp file or staging folder while it writes (the kernel releases
//! it when the writer dies), and each reader of a [`Snapshot`] a shared one
//! on the versions it reads, so the next write of the same key or prefix
//! removes exactly the leftovers nobody holds: crashed writers' parts and
//! staging folders, and old versions no reader still uses — except the
//! version the prefix pointed at until that commit, kept until the next
//! one, and every version replaced less than [`KEEP_REPLACED`] (a minute)
//! ago: a reader going through the path (Spark, DuckDB) may have resolved
//! the symlink to it just before the switch and open its files later, and
//! it takes no lock. A writer that is still running keeps its staging
//! folder. `.flux-lock.*` files (one
//! per published prefix) serialize commits and stay.
//!
//! Everything here is blocking file I/O: call it from
//! `tokio::task::spawn_blocking` in a task's `run`.
//!
//! Not modelled: a key cannot be both an object and a prefix of other keys
//! (`s3://b/a` and `s3://b/a/x`), because a path cannot be both a file and
//! a folder; such a write fails with [`S3Error::Conflict`].

// The catalog commits its files with the same pieces.
pub(crate) mod fsutil;
mod prefix;
mod uri;

#[cfg(test)]
mod tests;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::Md5;
use sha2::{Digest, Sha256};
use thiserror::Error;

pub use prefix::{PrefixWrite, Snapshot};
pub use uri::{MAX_KEY_BYTES, RESERVED_PREFIX, S3Prefix, S3Uri};

/// A URI as a place an IAM grant covers.
pub fn s3_location(uri: &S3Uri) -> exporters::sfn::iam::S3Location {
    exporters::sfn::iam::S3Location {
        bucket: uri.bucket().to_string(),
        key: uri.key().to_string(),
    }
}

/// What went wrong, naming the URI (and the local path) concerned.
#[derive(Debug, Error)]
pub enum S3Error {
    #[error("invalid S3 URI `{uri}`: {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error("{uri} does not exist (no file {})", path.display())]
    NotFound { uri: String, path: PathBuf },
    #[error("{uri}: {reason}")]
    Conflict { uri: String, reason: String },
    #[error("{uri}: cannot {action} {}: {error}", path.display())]
    Io {
        uri: String,
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
}

impl S3Error {
    fn io(uri: &S3Uri, action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> S3Error {
        let uri = uri.to_string();
        let path = path.to_path_buf();
        move |error| S3Error::Io {
            uri,
            action,
            path,
            error,
        }
    }
}

/// Size and checksums of some bytes: `md5` is the ETag S3 gives a
/// single-part upload, `sha256` what flux-engine compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksums {
    pub size: u64,
    /// Lowercase hex.
    pub md5: String,
    /// Lowercase hex.
    pub sha256: String,
}

impl Checksums {
    /// The S3 ETag of a single-part upload of these bytes (with quotes, as
    /// S3 returns it).
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.md5)
    }
}

/// Reads `reader` to the end, hashing it, and writes it to `sink` if given.
pub fn checksum_copy(
    reader: &mut dyn Read,
    mut sink: Option<&mut dyn Write>,
) -> io::Result<Checksums> {
    let mut md5 = Md5::new();
    let mut sha256 = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        md5.update(&buf[..n]);
        sha256.update(&buf[..n]);
        size += n as u64;
        if let Some(sink) = sink.as_mut() {
            sink.write_all(&buf[..n])?;
        }
    }
    Ok(Checksums {
        size,
        md5: hex(&md5.finalize()),
        sha256: hex(&sha256.finalize()),
    })
}

/// Size and checksums of a local file.
pub fn checksum_file(path: &Path) -> io::Result<Checksums> {
    checksum_copy(&mut File::open(path)?, None)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An object and its checksums, as `HeadObject` would describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub uri: S3Uri,
    pub checksums: Checksums,
}

/// One object found by [`LocalS3::list`] or in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    pub uri: S3Uri,
    pub size: u64,
    /// The object's file, resolved into its published version: stable while
    /// the [`Snapshot`] that listed it lives, and until the prefix is next
    /// published for [`LocalS3::list`].
    pub path: PathBuf,
}

/// The local S3 backend, rooted at `STATE_ROOT/s3`.
#[derive(Debug, Clone)]
pub struct LocalS3 {
    root: PathBuf,
    /// How long a prefix's replaced version stays for readers that went
    /// through the path (see the module docs).
    keep_replaced: Duration,
}

/// How long a replaced version of a prefix stays by default: a reader that
/// resolved the prefix's path just before a publish has this long to open
/// its files.
pub const KEEP_REPLACED: Duration = Duration::from_secs(60);

impl LocalS3 {
    /// The backend of the state dir `state_root` (`Attempt::state_root`).
    pub fn new(state_root: impl AsRef<Path>) -> Self {
        LocalS3 {
            root: state_root.as_ref().join("s3"),
            keep_replaced: KEEP_REPLACED,
        }
    }

    /// The same store, keeping replaced versions of prefixes for `window`
    /// instead of [`KEEP_REPLACED`].
    pub fn keep_replaced_for(mut self, window: Duration) -> Self {
        self.keep_replaced = window;
        self
    }

    /// `STATE_ROOT/s3`, which holds one folder per bucket.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The local path of an object or prefix: `STATE_ROOT/s3/BUCKET/KEY`.
    /// (A trailing `/` is dropped; the path may not exist.)
    pub fn path_of(&self, uri: &S3Uri) -> PathBuf {
        let mut path = self.root.join(uri.bucket());
        path.extend(uri.segments());
        path
    }

    /// Uploads the local file `src` to `uri`, atomically; returns what was
    /// written (checksums of the bytes copied).
    pub fn put_file(&self, src: &Path, uri: &S3Uri) -> Result<ObjectInfo, S3Error> {
        let mut file = File::open(src).map_err(S3Error::io(uri, "read the source file", src))?;
        self.put_reader(uri, &mut file)
    }

    /// Writes `bytes` to `uri`, atomically.
    pub fn put_bytes(&self, uri: &S3Uri, bytes: &[u8]) -> Result<ObjectInfo, S3Error> {
        self.put_reader(uri, &mut &bytes[..])
    }

    /// Writes everything `reader` yields to `uri`, atomically: into a
    /// locked temp file next to the destination, fsynced, then renamed.
    pub fn put_reader(&self, uri: &S3Uri, reader: &mut dyn Read) -> Result<ObjectInfo, S3Error> {
        let dest = self.object_path(uri)?;
        let (dir, name) = split(&dest, uri)?;
        self.object_dir(uri, true)?;
        if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_symlink())
            && fsutil::managed_version(&dest).is_none()
            && fs::metadata(&dest).is_ok_and(|m| m.is_dir())
        {
            return Err(foreign_link(uri, &dest));
        }
        if fs::metadata(&dest).is_ok_and(|m| m.is_dir()) {
            return Err(S3Error::Conflict {
                uri: uri.to_string(),
                reason: format!(
                    "{} is a prefix holding other objects; an object cannot have the same key",
                    dest.display()
                ),
            });
        }
        let tag = fsutil::tag(name);
        fsutil::remove_leftovers(dir, &[fsutil::PART], &tag, &[], None).map_err(S3Error::io(
            uri,
            "clean up leftovers in",
            dir,
        ))?;
        let (lock, temp) = fsutil::create_locked_file(dir, fsutil::PART, &tag)
            .map_err(S3Error::io(uri, "create a temp file in", dir))?;
        let guard = RemoveOnDrop(Some(temp.clone()));
        let mut file = lock.file();
        let checksums =
            checksum_copy(reader, Some(&mut file)).map_err(S3Error::io(uri, "write", &temp))?;
        file.sync_all().map_err(S3Error::io(uri, "sync", &temp))?;
        fs::rename(&temp, &dest).map_err(S3Error::io(uri, "rename the temp file to", &dest))?;
        guard.disarm();
        fsutil::sync_dir(dir).map_err(S3Error::io(uri, "sync", dir))?;
        Ok(ObjectInfo {
            uri: uri.clone(),
            checksums,
        })
    }

    /// The object's bytes.
    pub fn get(&self, uri: &S3Uri) -> Result<Vec<u8>, S3Error> {
        let mut bytes = Vec::new();
        let path = self.object_path(uri)?;
        self.open(uri)?
            .read_to_end(&mut bytes)
            .map_err(S3Error::io(uri, "read", &path))?;
        Ok(bytes)
    }

    /// The object's file, open for reading.
    pub fn open(&self, uri: &S3Uri) -> Result<File, S3Error> {
        let path = self.object_path(uri)?;
        let not_found = || S3Error::NotFound {
            uri: uri.to_string(),
            path: path.clone(),
        };
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if is_missing(&e) => return Err(not_found()),
            Err(e) => return Err(S3Error::io(uri, "open", &path)(e)),
        };
        match file.metadata() {
            Ok(m) if m.is_file() => Ok(file),
            Ok(_) => Err(not_found()),
            Err(e) => Err(S3Error::io(uri, "read", &path)(e)),
        }
    }

    /// The object's size, without reading it; `None` if there is none.
    pub fn size(&self, uri: &S3Uri) -> Result<Option<u64>, S3Error> {
        let path = self.object_path(uri)?;
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(S3Error::io(uri, "read", &path)(e)),
        }
    }

    /// Size and checksums of the object (reads it); `None` if there is none.
    pub fn head(&self, uri: &S3Uri) -> Result<Option<ObjectInfo>, S3Error> {
        let mut file = match self.open(uri) {
            Ok(file) => file,
            Err(S3Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let path = self.path_of(uri);
        let checksums = checksum_copy(&mut file, None).map_err(S3Error::io(uri, "read", &path))?;
        Ok(Some(ObjectInfo {
            uri: uri.clone(),
            checksums,
        }))
    }

    /// Deletes the object; `false` if there was none.
    pub fn delete(&self, uri: &S3Uri) -> Result<bool, S3Error> {
        let path = self.object_path(uri)?;
        if self.object_dir(uri, false)?.is_none() {
            return Ok(false);
        }
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Ok(false),
            Err(e) if is_missing(&e) => return Ok(false),
            Err(e) => return Err(S3Error::io(uri, "read", &path)(e)),
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if is_missing(&e) => Ok(false),
            Err(e) => Err(S3Error::io(uri, "delete", &path)(e)),
        }
    }

    /// The path of an object (not a prefix).
    fn object_path(&self, uri: &S3Uri) -> Result<PathBuf, S3Error> {
        if uri.is_prefix() {
            return Err(S3Error::InvalidUri {
                uri: uri.to_string(),
                reason: "this names a prefix (a folder), not an object: give a key that does not end with `/`".to_string(),
            });
        }
        Ok(self.path_of(uri))
    }

    /// The folder the object `uri` goes in, walked from the bucket's folder
    /// one key segment at a time (and created where missing if `create`;
    /// else `None` when a segment is missing or is an object).
    ///
    /// A symlink on the way is followed only if it is a published prefix
    /// (a link flux-engine made to a version folder next to it, which is
    /// inside the bucket). Any other symlink is refused: the kernel would
    /// follow it wherever it leads, and an object written or deleted
    /// through it would land outside the bucket.
    fn object_dir(&self, uri: &S3Uri, create: bool) -> Result<Option<PathBuf>, S3Error> {
        let mut dir = self.root.join(uri.bucket());
        if create {
            fs::create_dir_all(&dir)
                .map_err(|e| self.conflict_or(uri, &dir, "create the folder", e))?;
        }
        let segments: Vec<&str> = uri.segments().collect();
        for segment in &segments[..segments.len().saturating_sub(1)] {
            let path = dir.join(segment);
            loop {
                let meta = match fs::symlink_metadata(&path) {
                    Ok(meta) => meta,
                    Err(e) if is_missing(&e) && create => match fs::create_dir(&path) {
                        Ok(()) => break,
                        // Made (or replaced) by another writer since we
                        // looked: look again.
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                        Err(e) => return Err(S3Error::io(uri, "create the folder", &path)(e)),
                    },
                    Err(e) if is_missing(&e) => return Ok(None),
                    Err(e) => return Err(S3Error::io(uri, "read", &path)(e)),
                };
                if meta.is_dir() {
                    break;
                }
                if !meta.is_symlink() {
                    if !create {
                        return Ok(None);
                    }
                    return Err(S3Error::Conflict {
                        uri: uri.to_string(),
                        reason: format!(
                            "{} is an object, so it cannot also be a prefix of other keys",
                            path.display()
                        ),
                    });
                }
                // A published prefix: its version folder must itself be a
                // real folder (not a link onward) for the write to stay in
                // the bucket.
                let version = fsutil::managed_version(&path)
                    .filter(|version| fs::symlink_metadata(version).is_ok_and(|m| m.is_dir()));
                if version.is_none() {
                    return Err(foreign_link(uri, &path));
                }
                break;
            }
            dir = path;
        }
        Ok(Some(dir))
    }

    /// A failed `create_dir_all` because some part of the path is an
    /// object (a file) is a conflict, not an I/O failure.
    fn conflict_or(&self, uri: &S3Uri, dir: &Path, action: &'static str, e: io::Error) -> S3Error {
        let blocked = dir
            .ancestors()
            .take_while(|p| p.starts_with(&self.root))
            .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file()));
        match blocked {
            Some(file) => S3Error::Conflict {
                uri: uri.to_string(),
                reason: format!(
                    "{} is an object, so it cannot also be a prefix of other keys",
                    file.display()
                ),
            },
            None => S3Error::io(uri, action, dir)(e),
        }
    }
}

/// The folder and the file name of a destination path.
fn split<'a>(path: &'a Path, uri: &S3Uri) -> Result<(&'a Path, &'a str), S3Error> {
    match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(dir), Some(name)) => Ok((dir, name)),
        _ => Err(S3Error::InvalidUri {
            uri: uri.to_string(),
            reason: "it has no key".to_string(),
        }),
    }
}

/// The refusal of a write through `link`, a symlink inside the bucket that
/// flux-engine did not make.
fn foreign_link(uri: &S3Uri, link: &Path) -> S3Error {
    let target = fs::read_link(link)
        .map(|t| format!(" (to {})", t.display()))
        .unwrap_or_default();
    S3Error::Conflict {
        uri: uri.to_string(),
        reason: format!(
            "{} is a symlink{target} that flux-engine did not make, and writing through it could put the object outside the bucket; remove the symlink (or replace it with a real folder) to write here",
            link.display()
        ),
    }
}

/// NotFound, or "Not a directory" (a path component is a file).
fn is_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// Removes a temp file unless disarmed (when the write succeeded).
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}
