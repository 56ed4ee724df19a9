//! The files an `s3_ingest` task uploads, found one way for its local run
//! and its Step Functions export (which verifies, in production, the
//! objects the run would have uploaded).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use engine::TaskFailure;

use crate::s3::S3Uri;

/// One file to upload.
pub(crate) struct SourceFile {
    /// The key below the destination prefix.
    pub relative: String,
    pub path: PathBuf,
}

/// What a source that is not on this machine means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Absent {
    /// An error: the run uploads from here.
    Fails,
    /// A file of that name: an export names the objects, and the files
    /// may be uploaded from elsewhere when the state machine is deployed.
    IsAFile,
}

/// Every file `sources` name (relative to `dag_dir`), sorted by key: a
/// file under its own name, a folder's files that `include` admits under
/// their paths relative to it (symlinks followed, a folder reached twice
/// walked once). Each key must make an S3 key under `destination`, and no
/// two files may have the same key.
pub(crate) fn list(
    sources: &[String],
    dag_dir: &Path,
    include: &[String],
    destination: &S3Uri,
    absent: Absent,
) -> Result<Vec<SourceFile>, TaskFailure> {
    let mut by_key: BTreeMap<String, PathBuf> = BTreeMap::new();
    for source in sources {
        let path = dag_dir.join(source);
        let meta = match fs::metadata(&path) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && absent == Absent::IsAFile => None,
            Err(e) => {
                let why = if e.kind() == std::io::ErrorKind::NotFound {
                    "does not exist".to_string()
                } else {
                    format!("cannot be read: {e}")
                };
                return Err(TaskFailure::new(format!(
                    "source `{source}` {why} (looked for {}); relative paths start at the DAG file's folder, {}",
                    path.display(),
                    dag_dir.display()
                )));
            }
        };
        let mut found = Vec::new();
        if let Some(meta) = meta.as_ref().filter(|m| !m.is_dir() && !m.is_file()) {
            // A device or a pipe has no end to upload (`/dev/zero` would
            // fill the disk): only what has a size can be an object.
            return Err(TaskFailure::new(format!(
                "source `{source}` ({}) is {}, not a file or a folder; s3_ingest uploads files and folders",
                path.display(),
                engine::read_limit::describe(&meta.file_type())
            )));
        }
        if meta.is_some_and(|m| m.is_dir()) {
            let mut seen = HashSet::new();
            walk(&path, "", include, &mut seen, &mut found)?;
        } else {
            let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                TaskFailure::new(format!(
                    "source `{source}`: the file name is not UTF-8, so it cannot be an S3 key; rename the file"
                ))
            })?;
            found.push((name.to_string(), path.clone()));
        }
        for (relative, file) in found {
            destination.join(&relative).map_err(|e| {
                TaskFailure::new(format!(
                    "cannot upload {}: {e}; rename the file",
                    file.display()
                ))
            })?;
            if let Some(other) = by_key.get(&relative) {
                return Err(TaskFailure::new(format!(
                    "{} and {} would both be uploaded to s3://{}/{}{relative}; upload them to different destinations",
                    other.display(),
                    file.display(),
                    destination.bucket(),
                    destination.key(),
                )));
            }
            by_key.insert(relative, file);
        }
    }
    Ok(by_key
        .into_iter()
        .map(|(relative, path)| SourceFile { relative, path })
        .collect())
}

/// The files below `dir` that `include` admits, as (relative key, path).
fn walk(
    dir: &Path,
    relative: &str,
    include: &[String],
    seen: &mut HashSet<(u64, u64)>,
    found: &mut Vec<(String, PathBuf)>,
) -> Result<(), TaskFailure> {
    let unreadable = |path: &Path, e: std::io::Error| {
        TaskFailure::new(format!(
            "cannot read {}: {e}; check its permissions",
            path.display()
        ))
    };
    let meta = fs::metadata(dir).map_err(|e| unreadable(dir, e))?;
    if !seen.insert((meta.dev(), meta.ino())) {
        return Ok(());
    }
    let mut entries = fs::read_dir(dir)
        .map_err(|e| unreadable(dir, e))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(dir, e))?;
    entries.sort();
    for path in entries {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return Err(TaskFailure::new(format!(
                "the file name of {} is not UTF-8, so it cannot be an S3 key; rename the file",
                path.display()
            )));
        };
        let key = format!("{relative}{name}");
        let meta = fs::metadata(&path).map_err(|e| unreadable(&path, e))?;
        if meta.is_dir() {
            walk(&path, &format!("{key}/"), include, seen, found)?;
        } else if meta.is_file() && (include.is_empty() || include.iter().any(|p| glob(p, name))) {
            found.push((key, path));
        }
    }
    Ok(())
}

/// Whether `name` matches `pattern`, where `*` matches any run of
/// characters and `?` one character.
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and how much of the name it had taken.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}
