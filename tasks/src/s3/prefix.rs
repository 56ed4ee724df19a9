//! Whole-prefix writes (staging, then an atomic switch) and consistent
//! reads of a prefix (snapshots that pin the versions they read).

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use engine::file_lock::FileLock;

use super::fsutil::{self, LINK, LOCK, VERSION};
use super::{LocalS3, ObjectEntry, S3Error, S3Uri, is_missing, split};

/// How often a reader retries resolving a prefix that keeps being replaced
/// under it before giving up.
const MAX_PIN_ATTEMPTS: usize = 1000;

/// A prefix being written: write files below [`PrefixWrite::path`], then
/// [`PrefixWrite::commit`]. Dropped without a commit, the staging folder is
/// removed and the prefix keeps its previous content.
#[derive(Debug)]
pub struct PrefixWrite {
    prefix: S3Uri,
    dest: PathBuf,
    parent: PathBuf,
    tag: String,
    staging: PathBuf,
    /// The exclusive lock on the staging folder, held until the commit:
    /// it tells other writers that the folder is work in progress.
    lock: Option<FileLock>,
    /// How long replaced versions stay ([`LocalS3::keep_replaced_for`]).
    keep_replaced: Duration,
}

impl PrefixWrite {
    /// The folder to write the new content of the prefix into; the file
    /// `PATH/a/b.csv` becomes `PREFIX/a/b.csv`.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    pub fn prefix(&self) -> &S3Uri {
        &self.prefix
    }

    /// Publishes the staged folder as the prefix's whole content: fsyncs
    /// it, switches the prefix to it atomically, and removes the leftovers
    /// of earlier writes that nobody holds (see the module docs).
    pub fn commit(mut self) -> Result<(), S3Error> {
        let uri = self.prefix.clone();
        fsutil::sync_tree(&self.staging).map_err(S3Error::io(&uri, "sync", &self.staging))?;
        let lock_path = self
            .parent
            .join(format!("{}{LOCK}.{}", super::RESERVED_PREFIX, self.tag));
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(S3Error::io(&uri, "open the lock file", &lock_path))?;
        let commit_lock =
            FileLock::exclusive(lock_file).map_err(S3Error::io(&uri, "lock", &lock_path))?;

        // The version the prefix pointed at until now. A reader going
        // through the path may have resolved the symlink to it and not yet
        // opened its files (the kernel walks the path in steps; Spark lists
        // a folder, then opens its files), so it is kept until the next
        // commit, and replaced versions stay for a while after they were
        // replaced (a marker inside records the moment of the switch);
        // snapshot readers are protected by their locks either way.
        let previous = fs::read_link(&self.dest)
            .ok()
            .map(|target| self.parent.join(target));
        self.switch()?;
        if let Some(previous) = &previous {
            // Best effort: an unmarked version is still kept until the
            // next commit.
            let _ = fsutil::mark_replaced(previous);
        }
        // Published: from now on the staging folder is the current version,
        // which Drop must not remove and cleanups keep.
        self.lock = None;
        let staging = self.staging.clone();
        fsutil::sync_dir(&self.parent).map_err(S3Error::io(&uri, "sync", &self.parent))?;
        let mut keep: Vec<&Path> = vec![&staging];
        keep.extend(previous.as_deref());
        fsutil::remove_leftovers(
            &self.parent,
            &[VERSION, LINK],
            &self.tag,
            &keep,
            Some(self.keep_replaced),
        )
        .map_err(S3Error::io(&uri, "clean up old versions in", &self.parent))?;
        drop(commit_lock);
        Ok(())
    }

    /// Points the prefix at the staging folder. Runs under the commit lock.
    fn switch(&self) -> Result<(), S3Error> {
        let uri = &self.prefix;
        let target = self
            .staging
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_default();
        let link = self.parent.join(fsutil::unique_name(LINK, &self.tag));
        let make_link = || {
            std::os::unix::fs::symlink(&target, &link).map_err(S3Error::io(
                uri,
                "create the symlink",
                &link,
            ))
        };
        let rename = |from: &Path, to: &Path| {
            fs::rename(from, to).map_err(S3Error::io(uri, "rename to", to))
        };
        match fs::symlink_metadata(&self.dest) {
            Err(e) if is_missing(&e) => {
                make_link()?;
                rename(&link, &self.dest)
            }
            Err(e) => Err(S3Error::io(uri, "read", &self.dest)(e)),
            Ok(m) if m.file_type().is_symlink() => {
                if own_version(&self.dest).is_none() {
                    return Err(S3Error::Conflict {
                        uri: uri.to_string(),
                        reason: format!(
                            "{} is a symlink flux-engine did not make; remove it to publish here",
                            self.dest.display()
                        ),
                    });
                }
                make_link()?;
                rename(&link, &self.dest)
            }
            Ok(m) if m.is_dir() => {
                // A plain folder (objects written one by one): swap it for
                // the symlink, and keep it under a version name so that the
                // cleanup below removes it once no reader holds it.
                make_link()?;
                let old = self.parent.join(fsutil::unique_name(VERSION, &self.tag));
                let swapped = fsutil::exchange(&link, &self.dest)
                    .map_err(S3Error::io(uri, "swap in", &self.dest))?;
                if swapped {
                    rename(&link, &old)
                } else {
                    rename(&self.dest, &old)?;
                    rename(&link, &self.dest)
                }
            }
            Ok(_) => Err(S3Error::Conflict {
                uri: uri.to_string(),
                reason: format!(
                    "{} is an object; a prefix cannot have the same key",
                    self.dest.display()
                ),
            }),
        }
    }

    /// Test hook: forget the staging folder as a crashed writer would,
    /// leaving it on disk with no lock held.
    #[cfg(test)]
    pub(crate) fn abandon(mut self) -> PathBuf {
        self.lock = None;
        let staging = self.staging.clone();
        std::mem::forget(self);
        staging
    }
}

impl Drop for PrefixWrite {
    fn drop(&mut self) {
        if self.lock.is_some() {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// A consistent view of the objects under a prefix: every published
/// version it read stays on disk, unchanged, until the snapshot is dropped
/// (a shared lock keeps cleanups away), so [`ObjectEntry::path`]s stay
/// valid and belong to one version of each prefix.
#[derive(Debug)]
pub struct Snapshot {
    prefix: S3Uri,
    objects: Vec<ObjectEntry>,
    _pins: Vec<FileLock>,
}

impl Snapshot {
    pub fn prefix(&self) -> &S3Uri {
        &self.prefix
    }

    /// The objects, sorted by key.
    pub fn objects(&self) -> &[ObjectEntry] {
        &self.objects
    }

    /// The object with this key, if the snapshot holds it.
    pub fn get(&self, key: &str) -> Option<&ObjectEntry> {
        self.objects
            .binary_search_by(|o| o.uri.key().cmp(key))
            .ok()
            .and_then(|i| self.objects.get(i))
    }
}

impl LocalS3 {
    /// Starts writing the whole content of `prefix` (`s3://b/out` and
    /// `s3://b/out/` are the same prefix).
    pub fn begin_prefix_write(&self, prefix: &S3Uri) -> Result<PrefixWrite, S3Error> {
        let prefix = prefix.as_prefix();
        let dest = self.path_of(&prefix);
        let (parent, name) = split(&dest, &prefix)?;
        fs::create_dir_all(parent)
            .map_err(|e| self.conflict_or(&prefix, parent, "create the folder", e))?;
        if fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file()) {
            return Err(S3Error::Conflict {
                uri: prefix.to_string(),
                reason: format!(
                    "{} is an object; a prefix cannot have the same key",
                    dest.display()
                ),
            });
        }
        let tag = fsutil::tag(name);
        let (lock, staging) = fsutil::create_locked_dir(parent, VERSION, &tag)
            .map_err(S3Error::io(&prefix, "create a staging folder in", parent))?;
        Ok(PrefixWrite {
            parent: parent.to_path_buf(),
            dest: dest.clone(),
            prefix,
            tag,
            staging,
            lock: Some(lock),
            keep_replaced: self.keep_replaced,
        })
    }

    /// Publishes a copy of the local folder `src` as the whole content of
    /// `prefix`; returns how many objects it holds.
    pub fn publish_dir(&self, src: &Path, prefix: &S3Uri) -> Result<usize, S3Error> {
        let write = self.begin_prefix_write(prefix)?;
        let count = copy_tree(src, write.path(), "", write.prefix())?;
        write.commit()?;
        Ok(count)
    }

    /// Every object whose key starts with `prefix`'s key (S3's prefix
    /// semantics: `s3://b/data/2024` matches `data/2024-01.csv` and
    /// `data/2024/x`), recursively, sorted by key, staging leftovers left
    /// out. Each published prefix is read from one version.
    pub fn list(&self, prefix: &S3Uri) -> Result<Vec<ObjectEntry>, S3Error> {
        Ok(self.snapshot(prefix)?.objects)
    }

    /// Like [`LocalS3::list`], and keeps what it read on disk until dropped.
    pub fn snapshot(&self, prefix: &S3Uri) -> Result<Snapshot, S3Error> {
        let key = prefix.key();
        let (folder_key, rest) = match key.rfind('/') {
            Some(i) => (&key[..=i], &key[i + 1..]),
            None => ("", key),
        };
        let mut pins = Vec::new();
        let mut objects = Vec::new();
        let mut dir = resolve(&self.root, prefix.bucket(), prefix, &mut pins)?;
        for segment in folder_key.split('/').filter(|s| !s.is_empty()) {
            dir = match dir {
                Some(d) => resolve(&d, segment, prefix, &mut pins)?,
                None => None,
            };
        }
        if let Some(dir) = dir {
            walk(
                &dir,
                folder_key,
                Some(rest),
                prefix,
                &mut pins,
                &mut objects,
            )?;
        }
        objects.sort_by(|a, b| a.uri.key().cmp(b.uri.key()));
        Ok(Snapshot {
            prefix: prefix.clone(),
            objects,
            _pins: pins,
        })
    }
}

/// The version folder a prefix symlink made by [`PrefixWrite::commit`]
/// points to (a sibling named `.flux-v.*`), or `None` for other symlinks.
fn own_version(link: &Path) -> Option<PathBuf> {
    let target = fs::read_link(link).ok()?;
    let name = target.to_str()?;
    let ours =
        name.starts_with(&format!("{}{VERSION}.", super::RESERVED_PREFIX)) && !name.contains('/');
    ours.then(|| link.parent().map(|p| p.join(name)))?
}

/// The real folder `parent/name` stands for, pinning it with a shared lock
/// if it is a published version; `None` if it is missing or not a folder.
fn resolve(
    parent: &Path,
    name: &str,
    uri: &S3Uri,
    pins: &mut Vec<FileLock>,
) -> Result<Option<PathBuf>, S3Error> {
    let path = parent.join(name);
    for _ in 0..MAX_PIN_ATTEMPTS {
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(S3Error::io(uri, "read", &path)(e)),
        };
        if meta.is_dir() {
            return Ok(Some(path));
        }
        if !meta.file_type().is_symlink() {
            return Ok(None);
        }
        let Some(version) = own_version(&path) else {
            // Someone else's symlink: follow it, but never walk into it.
            return Ok(fs::metadata(&path)
                .is_ok_and(|m| m.is_dir())
                .then_some(path));
        };
        let dir = match fsutil::open_dir(&version) {
            Ok(dir) => dir,
            // Replaced and removed since we read the link: read it again.
            Err(e) if is_missing(&e) => continue,
            Err(e) => return Err(S3Error::io(uri, "open", &version)(e)),
        };
        let pin = FileLock::shared(dir).map_err(S3Error::io(uri, "lock", &version))?;
        if fsutil::still_at(pin.file(), &version).map_err(S3Error::io(uri, "read", &version))? {
            pins.push(pin);
            return Ok(Some(version));
        }
    }
    Err(S3Error::Conflict {
        uri: uri.to_string(),
        reason: format!(
            "{} changed {MAX_PIN_ATTEMPTS} times while being read",
            path.display()
        ),
    })
}

/// Collects the objects below the real folder `dir`, whose key prefix is
/// `key_prefix`; at the top level only names starting with `first`.
fn walk(
    dir: &Path,
    key_prefix: &str,
    first: Option<&str>,
    uri: &S3Uri,
    pins: &mut Vec<FileLock>,
    out: &mut Vec<ObjectEntry>,
) -> Result<(), S3Error> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if is_missing(&e) => return Ok(()),
        Err(e) => return Err(S3Error::io(uri, "list", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(S3Error::io(uri, "list", dir))?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            tracing::warn!(path = %entry.path().display(), "skipping a file whose name is not UTF-8");
            continue;
        };
        if fsutil::is_hidden(name) || first.is_some_and(|f| !name.starts_with(f)) {
            continue;
        }
        let path = entry.path();
        let kind = match entry.file_type() {
            Ok(kind) => kind,
            Err(e) if is_missing(&e) => continue,
            Err(e) => return Err(S3Error::io(uri, "read", &path)(e)),
        };
        let key = format!("{key_prefix}{name}");
        if kind.is_dir() || (kind.is_symlink() && own_version(&path).is_some()) {
            if let Some(real) = resolve(dir, name, uri, pins)? {
                walk(&real, &format!("{key}/"), None, uri, pins, out)?;
            }
            continue;
        }
        // Files, and symlinks to files (followed).
        let meta = match fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => continue,
            Err(e) if is_missing(&e) => continue,
            Err(e) => return Err(S3Error::io(uri, "read", &path)(e)),
        };
        match S3Uri::new(uri.bucket(), &key) {
            Ok(object) => out.push(ObjectEntry {
                uri: object,
                size: meta.len(),
                path,
            }),
            Err(e) => {
                tracing::warn!(path = %path.display(), "skipping a file that is no valid object: {e}")
            }
        }
    }
    Ok(())
}

/// Copies the local folder `src` into `dest`, checking that every file's
/// relative path is a valid key below `prefix`; returns the file count.
fn copy_tree(src: &Path, dest: &Path, rel: &str, prefix: &S3Uri) -> Result<usize, S3Error> {
    let mut count = 0;
    let entries = fs::read_dir(src).map_err(S3Error::io(prefix, "read the folder", src))?;
    for entry in entries {
        let entry = entry.map_err(S3Error::io(prefix, "read the folder", src))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            return Err(S3Error::InvalidUri {
                uri: prefix.to_string(),
                reason: format!("the file name of {} is not UTF-8", path.display()),
            });
        };
        let key = format!("{rel}{name}");
        prefix.join(&key).map_err(|e| match e {
            S3Error::InvalidUri { uri, reason } => S3Error::InvalidUri {
                uri,
                reason: format!("{reason} (from {})", path.display()),
            },
            other => other,
        })?;
        let meta = fs::metadata(&path).map_err(S3Error::io(prefix, "read", &path))?;
        let target = dest.join(&name);
        if meta.is_dir() {
            fs::create_dir(&target).map_err(S3Error::io(prefix, "create", &target))?;
            count += copy_tree(&path, &target, &format!("{key}/"), prefix)?;
        } else if meta.is_file() {
            fs::copy(&path, &target).map_err(S3Error::io(prefix, "copy to", &target))?;
            count += 1;
        }
    }
    Ok(count)
}
