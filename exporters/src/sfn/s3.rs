//! `s3_ingest`: in production the data is already in S3 (the files are
//! uploaded when the state machine is deployed, to the keys the engine
//! would use), so the task *verifies* it: one `aws-sdk:s3:headObject` per
//! object, which succeeds when the object is there and fails the task
//! (after its retries) when it is not.
//!
//! The objects are the ones the engine would upload, found the same way
//! at export time: a file source is its own name under `destination`; a
//! folder source contributes every file below it that `include` admits,
//! under its path relative to the folder. A source that does not exist on
//! the exporting machine is taken as a file. One object is a single
//! `Task` state named after the task; several are the branches of a
//! `Parallel` named after the task, checked at once.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use super::json::{Json, Obj};
use super::states::{TaskCtx, Translated, split_s3};

/// More objects than this is an error: each is a state, and a state
/// machine definition is limited in size (1 MB).
pub const MAX_OBJECTS: usize = 200;

pub fn translate(ctx: &TaskCtx) -> Result<Translated, String> {
    let destination = ctx.str("destination")?;
    let Some((bucket, prefix)) = split_s3(&destination) else {
        return Err(ctx.error(format!(
            "`destination` must be an s3:// URI, found {destination:?}"
        )));
    };
    let prefix = if prefix.is_empty() || prefix.ends_with('/') {
        prefix
    } else {
        format!("{prefix}/")
    };
    let include = ctx.strings("include")?;
    let mut keys: BTreeSet<String> = BTreeSet::new();
    for source in ctx.strings("source")? {
        let path = ctx.dag.dir.join(ctx.local(&source));
        let found = if path.is_dir() {
            let mut found = Vec::new();
            walk(&path, "", &include, &mut found, 0)
                .map_err(|e| ctx.error(format!("cannot read {}: {e}", path.display())))?;
            found
        } else {
            let name = Path::new(&source)
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| ctx.error(format!("source `{source}` names no file")))?;
            vec![name.to_string()]
        };
        for relative in found {
            keys.insert(format!("{prefix}{relative}"));
        }
    }
    if keys.is_empty() {
        return Err(ctx.error(
            "its sources hold no file to upload, so there is nothing to verify in production",
        ));
    }
    if keys.len() > MAX_OBJECTS {
        return Err(ctx.error(format!(
            "{} objects to verify; the export checks at most {MAX_OBJECTS} per task: ingest fewer, larger files or split the task",
            keys.len()
        )));
    }
    let head = |key: &str| {
        ctx.task_state(
            format!("Checks that s3://{bucket}/{key} is there"),
            "arn:aws:states:::aws-sdk:s3:headObject",
            Obj::new().with("Bucket", bucket.as_str()).with("Key", key),
        )
    };
    let keys: Vec<&String> = keys.iter().collect();
    if let [key] = keys.as_slice() {
        let state = head(key.as_str()).with(
            "Comment",
            format!("{}; verifies s3://{bucket}/{key}", ctx.comment()),
        );
        return Ok(Translated {
            state,
            catches: true,
        });
    }
    let branches: Vec<Json> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let name = ctx.helper(&format!("Head{}", i + 1));
            Obj::new()
                .with("StartAt", name.as_str())
                .with(
                    "States",
                    Obj::new().with(&name, head(key.as_str()).with("End", true)),
                )
                .into()
        })
        .collect();
    let state = Obj::new()
        .with("Type", "Parallel")
        .with(
            "Comment",
            format!(
                "{}; verifies {} objects under s3://{bucket}/{prefix}",
                ctx.comment(),
                keys.len()
            ),
        )
        .with("Branches", branches)
        .with("ResultPath", Json::Null);
    Ok(Translated {
        state,
        catches: true,
    })
}

/// The files below `dir` that `include` admits, as keys relative to it,
/// as the engine's `s3_ingest` walks them (symlinks followed; a depth
/// limit instead of its loop detection).
fn walk(
    dir: &Path,
    relative: &str,
    include: &[String],
    found: &mut Vec<String>,
    depth: usize,
) -> std::io::Result<()> {
    if depth > 64 {
        return Ok(());
    }
    let mut entries = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    entries.sort();
    for path in entries {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let key = format!("{relative}{name}");
        let meta = fs::metadata(&path)?;
        if meta.is_dir() {
            walk(&path, &format!("{key}/"), include, found, depth + 1)?;
        } else if meta.is_file() && (include.is_empty() || include.iter().any(|p| glob(p, name))) {
            found.push(key);
        }
    }
    Ok(())
}

/// Whether `name` matches `pattern`: `*` any run of characters, `?` one
/// (the engine's `include` rule).
pub fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // matches[i][j]: p[i..] matches n[j..].
    let mut matches = vec![vec![false; n.len() + 1]; p.len() + 1];
    matches[p.len()][n.len()] = true;
    for i in (0..p.len()).rev() {
        for j in (0..=n.len()).rev() {
            matches[i][j] = match p[i] {
                '*' => matches[i + 1][j] || (j < n.len() && matches[i][j + 1]),
                '?' => j < n.len() && matches[i + 1][j + 1],
                c => j < n.len() && n[j] == c && matches[i + 1][j + 1],
            };
        }
    }
    matches[0][0]
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob("rental_*.py", "rental_clean.py"));
        assert!(!glob("rental_*.py", "rental_clean.pyc"));
        assert!(!glob("rental_*.py", "test_rental_clean.py"));
        assert!(glob("?.csv", "a.csv"));
        assert!(!glob("?.csv", "ab.csv"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXbYbc"));
    }
}
