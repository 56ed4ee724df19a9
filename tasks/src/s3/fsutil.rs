//! The file system pieces the local backend is built from: `flock`ed temp
//! files and staging folders, unique hidden names, fsync, atomic swaps.
//!
//! Every hidden entry the backend creates is named
//! `.flux-KIND.TAG.UNIQUE`, where TAG is a short hash of the file name it
//! stands for (so that long names still fit) and UNIQUE is the writer's
//! pid, a timestamp and a counter. A temp file or staging folder is held
//! under an exclusive `flock` by its writer for as long as it is being
//! written; the kernel drops the lock when the writer dies, which is how a
//! later writer tells a crashed leftover (lock free) from work in progress
//! (locked).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::file_lock::FileLock;
use sha2::{Digest, Sha256};

pub(crate) const PART: &str = "part";
pub(crate) const VERSION: &str = "v";
pub(crate) const LINK: &str = "link";
pub(crate) const LOCK: &str = "lock";

/// The short hash that stands for `name` in hidden entries next to it.
pub(crate) fn tag(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// `.flux-KIND.TAG.` — the start of every hidden entry of one kind for one
/// name.
pub(crate) fn hidden_prefix(kind: &str, tag: &str) -> String {
    format!("{}{kind}.{tag}.", super::uri::RESERVED_PREFIX)
}

/// A name no other writer (in this or another process) will pick.
pub(crate) fn unique_name(kind: &str, tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}{}-{nanos:x}-{n}",
        hidden_prefix(kind, tag),
        std::process::id()
    )
}

pub(crate) fn is_hidden(name: &str) -> bool {
    name.starts_with(super::uri::RESERVED_PREFIX)
}

/// Whether `path` still names the file or folder `file` has open (a
/// cleaner may have removed it between our open and our lock).
pub(crate) fn still_at(file: &File, path: &Path) -> io::Result<bool> {
    let open = file.metadata()?;
    match fs::symlink_metadata(path) {
        Ok(now) => Ok(now.dev() == open.dev() && now.ino() == open.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Opens a folder, for locking it or syncing it.
pub(crate) fn open_dir(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Creates a new hidden temp file in `dir` and locks it.
pub(crate) fn create_locked_file(
    dir: &Path,
    kind: &str,
    tag: &str,
) -> io::Result<(FileLock, PathBuf)> {
    loop {
        let path = dir.join(unique_name(kind, tag));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let lock = FileLock::exclusive(file)?;
        if still_at(lock.file(), &path)? {
            return Ok((lock, path));
        }
    }
}

/// Creates a new hidden folder in `dir` and locks it.
pub(crate) fn create_locked_dir(
    dir: &Path,
    kind: &str,
    tag: &str,
) -> io::Result<(FileLock, PathBuf)> {
    loop {
        let path = dir.join(unique_name(kind, tag));
        fs::create_dir(&path)?;
        let lock = FileLock::exclusive(open_dir(&path)?)?;
        if still_at(lock.file(), &path)? {
            return Ok((lock, path));
        }
    }
}

/// Makes a rename or a new entry in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    open_dir(dir)?.sync_all()
}

/// fsyncs every file and folder below `dir`, and `dir` itself, so that the
/// folder is complete on disk before it is published.
pub(crate) fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            sync_tree(&entry.path())?;
        } else if kind.is_file() {
            File::open(entry.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// The marker a prefix's version gets when a publish replaces it: its
/// time is the moment of the replacement.
pub(crate) const REPLACED: &str = ".flux-replaced";

/// Marks the version folder `version` as replaced now.
pub(crate) fn mark_replaced(version: &Path) -> io::Result<()> {
    File::create(version.join(REPLACED)).map(drop)
}

/// Removes the hidden entries of `kinds` for `tag` in `dir` that no live
/// writer or reader holds a lock on, except `keep` and, when
/// `keep_replaced` is given, versions replaced less than that long ago
/// ([`mark_replaced`]). Symlinks (`LINK`) have no lock: callers pass `LINK`
/// only while holding the prefix's commit lock.
pub(crate) fn remove_leftovers(
    dir: &Path,
    kinds: &[&str],
    tag: &str,
    keep: &[&Path],
    keep_replaced: Option<Duration>,
) -> io::Result<()> {
    let prefixes: Vec<(String, &str)> = kinds.iter().map(|k| (hidden_prefix(k, tag), *k)).collect();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((_, kind)) = prefixes.iter().find(|(p, _)| name.starts_with(p.as_str())) else {
            continue;
        };
        let path = entry.path();
        if keep.contains(&path.as_path()) {
            continue;
        }
        if *kind == LINK {
            // A symlink never renamed, or (after a crash in the middle of
            // swapping out a plain folder) the old folder itself.
            if entry.file_type()?.is_dir() {
                ignore_missing(fs::remove_dir_all(&path))?;
            } else {
                ignore_missing(fs::remove_file(&path))?;
            }
            continue;
        }
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if let Some(window) = keep_replaced
            && fs::metadata(path.join(REPLACED))
                .and_then(|m| m.modified())
                .is_ok_and(|at| at.elapsed().is_ok_and(|age| age < window))
        {
            continue;
        }
        let Some(lock) = FileLock::try_exclusive(file)? else {
            continue;
        };
        if !still_at(lock.file(), &path)? {
            continue;
        }
        if lock.file().metadata()?.is_dir() {
            ignore_missing(fs::remove_dir_all(&path))?;
        } else {
            ignore_missing(fs::remove_file(&path))?;
        }
    }
    Ok(())
}

pub(crate) fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Swaps `a` and `b` atomically (Linux `renameat2(RENAME_EXCHANGE)`).
/// `Ok(false)` if the system or file system cannot.
#[cfg(target_os = "linux")]
pub(crate) fn exchange(a: &Path, b: &Path) -> io::Result<bool> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: renameat2(2) only reads the two paths, which are
    // NUL-terminated `CString`s alive until after the call; AT_FDCWD
    // makes them relative to the working directory, no descriptor needed.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => Ok(false),
        _ => Err(err),
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn exchange(_a: &Path, _b: &Path) -> io::Result<bool> {
    Ok(false)
}

/// The version folder `link` stands for if it is a symlink flux-engine
/// made when publishing a prefix: its target is one name, a sibling
/// `.flux-v.*`. `None` for any other symlink (and for what is no symlink).
///
/// This is the rule `prefix::own_version` applies when publishing; object
/// writes use it to tell a published prefix (written into, as S3 would)
/// from someone else's link (which could lead anywhere).
pub(crate) fn managed_version(link: &Path) -> Option<PathBuf> {
    let target = fs::read_link(link).ok()?;
    let name = target.to_str()?;
    let ours = name.starts_with(&format!("{}{VERSION}.", super::uri::RESERVED_PREFIX))
        && !name.contains('/');
    ours.then(|| link.parent().map(|p| p.join(name)))?
}
