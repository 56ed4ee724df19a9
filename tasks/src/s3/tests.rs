use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;

fn uri(text: &str) -> S3Uri {
    S3Uri::parse(text).unwrap()
}

fn store() -> (tempfile::TempDir, LocalS3) {
    let dir = tempfile::tempdir().unwrap();
    let s3 = LocalS3::new(dir.path());
    (dir, s3)
}

/// Every name in `dir` (not recursive), sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn hidden(dir: &Path, kind: &str) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with(&format!(".flux-{kind}.")))
        .collect()
}

fn keys(entries: &[ObjectEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.uri.key()).collect()
}

#[test]
fn objects_map_to_files_under_the_state_root() {
    let (dir, s3) = store();
    let u = uri("s3://raw-data/in/2024/hello.txt");
    assert_eq!(
        s3.path_of(&u),
        dir.path().join("s3/raw-data/in/2024/hello.txt")
    );
    assert_eq!(
        s3.path_of(&uri("s3://raw-data/in/")),
        dir.path().join("s3/raw-data/in")
    );
    let info = s3.put_bytes(&u, b"hello").unwrap();
    // Known digests of "hello".
    assert_eq!(info.checksums.size, 5);
    assert_eq!(info.checksums.md5, "5d41402abc4b2a76b9719d911017c592");
    assert_eq!(
        info.checksums.sha256,
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert_eq!(
        info.checksums.etag(),
        "\"5d41402abc4b2a76b9719d911017c592\""
    );
    assert_eq!(fs::read(s3.path_of(&u)).unwrap(), b"hello");
    assert_eq!(s3.get(&u).unwrap(), b"hello");
    assert_eq!(s3.head(&u).unwrap().unwrap(), info);
    assert_eq!(s3.size(&u).unwrap(), Some(5));

    let src = dir.path().join("local.csv");
    fs::write(&src, "a,b\n1,2\n").unwrap();
    let copied = s3.put_file(&src, &uri("s3://raw-data/in/x.csv")).unwrap();
    assert_eq!(copied.checksums, checksum_file(&src).unwrap());

    // Overwrite, then nothing is left behind in the folder.
    s3.put_bytes(&u, b"hello again").unwrap();
    assert_eq!(s3.get(&u).unwrap(), b"hello again");
    assert_eq!(
        names(&dir.path().join("s3/raw-data/in/2024")),
        vec!["hello.txt"]
    );

    let missing = uri("s3://raw-data/in/nope");
    assert!(s3.head(&missing).unwrap().is_none());
    assert!(s3.size(&missing).unwrap().is_none());
    let err = s3.get(&missing).unwrap_err();
    assert!(matches!(err, S3Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("s3://raw-data/in/nope"), "{err}");
    // A "folder" is not an object.
    assert!(s3.head(&uri("s3://raw-data/in/2024")).unwrap().is_none());

    assert!(s3.delete(&u).unwrap());
    assert!(!s3.delete(&u).unwrap());
    assert!(s3.head(&u).unwrap().is_none());
}

#[test]
fn objects_and_prefixes_do_not_mix() {
    let (dir, s3) = store();
    let err = s3.put_bytes(&uri("s3://bkt/dir/"), b"x").unwrap_err();
    assert!(err.to_string().contains("names a prefix"), "{err}");
    s3.put_bytes(&uri("s3://bkt/a"), b"x").unwrap();
    let err = s3.put_bytes(&uri("s3://bkt/a/b"), b"x").unwrap_err();
    assert!(matches!(err, S3Error::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("s3://bkt/a/b"), "{err}");
    let err = s3.begin_prefix_write(&uri("s3://bkt/a/")).unwrap_err();
    assert!(matches!(err, S3Error::Conflict { .. }), "{err}");
    s3.put_bytes(&uri("s3://bkt/d/x"), b"x").unwrap();
    let err = s3.put_bytes(&uri("s3://bkt/d"), b"x").unwrap_err();
    assert!(matches!(err, S3Error::Conflict { .. }), "{err}");
    let src = dir.path().join("missing.csv");
    let err = s3.put_file(&src, &uri("s3://bkt/m")).unwrap_err();
    assert!(err.to_string().contains("missing.csv"), "{err}");
}

#[test]
fn paths_never_leave_the_root() {
    let (_dir, s3) = store();
    // Odd but valid keys stay inside the bucket's folder.
    for key in [
        "...",
        "..a",
        "a..",
        ". a",
        "~",
        "a/.../b",
        "-",
        "a b/c",
        "..hidden/x",
    ] {
        let u = S3Uri::new("bkt", key).unwrap();
        let path = s3.path_of(&u);
        assert!(path.starts_with(s3.root().join("bkt")), "{key}");
        assert_eq!(
            path.components().count(),
            s3.root().join("bkt").components().count() + key.split('/').count(),
            "{key}"
        );
        s3.put_bytes(&u, key.as_bytes()).unwrap();
        assert_eq!(s3.get(&u).unwrap(), key.as_bytes());
    }
    // Escapes are refused when parsed, with the URI and the reason.
    for text in [
        "s3://bkt/../../etc/passwd",
        "s3://bkt//etc/passwd",
        "s3://bkt/a/../../../x",
        "s3://bkt/a\\..\\..\\x",
        "s3://bkt/a\0",
        "s3://../x",
        "s3://bkt/.flux-v.0.1/x",
    ] {
        let err = S3Uri::parse(text).unwrap_err().to_string();
        assert!(err.contains(text), "{err}");
        assert!(err.contains("invalid S3 URI"), "{err}");
    }
    // Joining a relative key cannot escape either.
    assert!(uri("s3://bkt/out/").join("../../x").is_err());
    assert!(s3.list(&uri("s3://bkt/")).unwrap().len() == 9);
}

/// Everything below `dir`, as relative paths, sorted (symlinks listed, not
/// followed).
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A symlink someone put inside the bucket is not followed by object writes
/// (before, `put_bytes` created the object, and its folders, wherever the
/// link pointed): the write fails naming the link, and nothing is created
/// outside the bucket.
#[test]
fn object_writes_refuse_a_symlink_inside_the_bucket() {
    let (dir, s3) = store();
    let elsewhere = tempfile::tempdir().unwrap();
    fs::write(elsewhere.path().join("keep.csv"), "precious").unwrap();
    let bucket = dir.path().join("s3/bkt");
    fs::create_dir_all(&bucket).unwrap();
    let link = bucket.join("a");
    std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();

    let src = dir.path().join("src.csv");
    fs::write(&src, "1").unwrap();
    type Write<'a> = Box<dyn Fn() -> Result<ObjectInfo, S3Error> + 'a>;
    let writes: [(&str, Write); 4] = [
        (
            "s3://bkt/a/x.csv",
            Box::new(|| s3.put_bytes(&uri("s3://bkt/a/x.csv"), b"1")),
        ),
        (
            "s3://bkt/a/deep/x.csv",
            Box::new(|| s3.put_bytes(&uri("s3://bkt/a/deep/x.csv"), b"1")),
        ),
        (
            "s3://bkt/a/keep.csv",
            Box::new(|| s3.put_file(&src, &uri("s3://bkt/a/keep.csv"))),
        ),
        (
            "s3://bkt/a/r.csv",
            Box::new(|| s3.put_reader(&uri("s3://bkt/a/r.csv"), &mut &b"1"[..])),
        ),
    ];
    for (target, write) in writes {
        let err = write().unwrap_err();
        assert!(matches!(err, S3Error::Conflict { .. }), "{target}: {err}");
        let text = err.to_string();
        for part in [
            target,
            &link.display().to_string(),
            &elsewhere.path().display().to_string(),
            "did not make",
            "remove the symlink",
        ] {
            assert!(text.contains(part), "{target}: `{part}` not in: {text}");
        }
    }
    // A delete through the link would remove a file outside the bucket.
    let err = s3.delete(&uri("s3://bkt/a/keep.csv")).unwrap_err();
    assert!(err.to_string().contains("did not make"), "{err}");
    assert_eq!(tree(elsewhere.path()), vec!["keep.csv"]);
    assert_eq!(
        fs::read_to_string(elsewhere.path().join("keep.csv")).unwrap(),
        "precious"
    );

    // The object itself a link to a folder outside: refused the same way.
    std::os::unix::fs::symlink(elsewhere.path(), bucket.join("obj")).unwrap();
    let err = s3.put_bytes(&uri("s3://bkt/obj"), b"1").unwrap_err();
    assert!(err.to_string().contains("did not make"), "{err}");

    // A link dressed as a published prefix whose "version" leads outside.
    let fake = bucket.join(".flux-v.0000.fake");
    std::os::unix::fs::symlink(elsewhere.path(), &fake).unwrap();
    std::os::unix::fs::symlink(".flux-v.0000.fake", bucket.join("b")).unwrap();
    let err = s3.put_bytes(&uri("s3://bkt/b/x.csv"), b"1").unwrap_err();
    assert!(err.to_string().contains("did not make"), "{err}");
    assert_eq!(tree(elsewhere.path()), vec!["keep.csv"]);

    // Removing the link, as the message says, lets the write through.
    fs::remove_file(&link).unwrap();
    s3.put_bytes(&uri("s3://bkt/a/x.csv"), b"1").unwrap();
    assert_eq!(s3.get(&uri("s3://bkt/a/x.csv")).unwrap(), b"1");
}

/// A published prefix is a symlink too, one flux-engine made to a version
/// folder beside it: writing and deleting single objects under it works as
/// before, into the current version, as S3 adds a key to a prefix.
#[test]
fn object_writes_under_a_published_prefix_still_work() {
    let (dir, s3) = store();
    let out = uri("s3://bkt/jobs/out/");
    publish(&s3, &out, &[("a.csv", "1".into())]);
    let link = dir.path().join("s3/bkt/jobs/out");
    let version = fs::read_link(&link).unwrap();
    s3.put_bytes(&uri("s3://bkt/jobs/out/b.csv"), b"2").unwrap();
    s3.put_bytes(&uri("s3://bkt/jobs/out/sub/c.csv"), b"3")
        .unwrap();
    assert_eq!(
        keys(&s3.list(&out).unwrap()),
        vec!["jobs/out/a.csv", "jobs/out/b.csv", "jobs/out/sub/c.csv"]
    );
    let real = dir.path().join("s3/bkt/jobs").join(&version);
    assert_eq!(fs::read_to_string(real.join("sub/c.csv")).unwrap(), "3");
    assert!(s3.delete(&uri("s3://bkt/jobs/out/b.csv")).unwrap());
    assert_eq!(
        keys(&s3.list(&out).unwrap()),
        vec!["jobs/out/a.csv", "jobs/out/sub/c.csv"]
    );
    // Nothing was written beside the bucket's folder.
    assert_eq!(names(&dir.path().join("s3")), vec!["bkt"]);
}

#[test]
fn list_is_recursive_sorted_and_uses_s3_prefix_semantics() {
    let (dir, s3) = store();
    for key in [
        "data/2024/b.csv",
        "data/2024/a.csv",
        "data/2024-01.csv",
        "data/2025/x.csv",
        "data/202/z",
        "other/y",
    ] {
        s3.put_bytes(&uri(&format!("s3://bkt/{key}")), key.as_bytes())
            .unwrap();
    }
    // Leftovers of crashed writers are never listed.
    let folder = dir.path().join("s3/bkt/data/2024");
    fs::write(folder.join(".flux-part.0011.1-2-3"), "partial").unwrap();
    fs::create_dir(folder.join(".flux-v.0011.1-2-3")).unwrap();
    fs::write(folder.join(".flux-v.0011.1-2-3/c.csv"), "partial").unwrap();

    let all = s3.list(&uri("s3://bkt")).unwrap();
    assert_eq!(
        keys(&all),
        vec![
            "data/202/z",
            "data/2024-01.csv",
            "data/2024/a.csv",
            "data/2024/b.csv",
            "data/2025/x.csv",
            "other/y"
        ]
    );
    assert_eq!(all[0].size, "data/202/z".len() as u64);
    assert_eq!(all[0].path, s3.path_of(&all[0].uri));
    assert_eq!(
        keys(&s3.list(&uri("s3://bkt/data/2024")).unwrap()),
        vec!["data/2024-01.csv", "data/2024/a.csv", "data/2024/b.csv"]
    );
    assert_eq!(
        keys(&s3.list(&uri("s3://bkt/data/2024/")).unwrap()),
        vec!["data/2024/a.csv", "data/2024/b.csv"]
    );
    assert_eq!(
        keys(&s3.list(&uri("s3://bkt/data/2024/a")).unwrap()),
        vec!["data/2024/a.csv"]
    );
    assert!(s3.list(&uri("s3://bkt/nothing/")).unwrap().is_empty());
    assert!(s3.list(&uri("s3://no-such-bucket/")).unwrap().is_empty());
    assert!(s3.list(&uri("s3://bkt/other/y/z")).unwrap().is_empty());
}

#[test]
fn a_put_removes_crashed_parts_but_not_ones_being_written() {
    let (dir, s3) = store();
    let u = uri("s3://bkt/f.csv");
    s3.put_bytes(&u, b"1").unwrap();
    let folder = dir.path().join("s3/bkt");
    let tag = fsutil::tag("f.csv");
    // A writer still at work: its temp file is locked.
    let (busy, busy_path) = fsutil::create_locked_file(&folder, fsutil::PART, &tag).unwrap();
    // A crashed writer: a temp file nobody locks.
    let crashed = folder.join(fsutil::unique_name(fsutil::PART, &tag));
    fs::write(&crashed, "partial").unwrap();
    s3.put_bytes(&u, b"2").unwrap();
    assert!(!crashed.exists(), "the crashed part is removed");
    assert!(busy_path.exists(), "the part being written is kept");
    drop(busy);
    s3.put_bytes(&u, b"3").unwrap();
    assert_eq!(hidden(&folder, "part"), Vec::<String>::new());
    assert_eq!(s3.get(&u).unwrap(), b"3");
}

/// Writes `files` (relative path, content) into a new version of `prefix`.
fn publish(s3: &LocalS3, prefix: &S3Uri, files: &[(&str, String)]) {
    let write = s3.begin_prefix_write(prefix).unwrap();
    for (rel, content) in files {
        let path = write.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    write.commit().unwrap();
}

#[test]
fn a_publish_replaces_the_whole_prefix_and_cleans_up() {
    let (dir, s3) = store();
    let out = uri("s3://bkt/jobs/out/");
    let parent = dir.path().join("s3/bkt/jobs");
    publish(
        &s3,
        &out,
        &[("a.csv", "1".into()), ("part/b.csv", "1".into())],
    );
    assert_eq!(
        keys(&s3.list(&out).unwrap()),
        vec!["jobs/out/a.csv", "jobs/out/part/b.csv"]
    );
    assert_eq!(
        fs::read_to_string(parent.join("out/part/b.csv")).unwrap(),
        "1"
    );
    assert!(
        fs::symlink_metadata(parent.join("out"))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    publish(&s3, &uri("s3://bkt/jobs/out"), &[("c.csv", "2".into())]);
    assert_eq!(keys(&s3.list(&out).unwrap()), vec!["jobs/out/c.csv"]);
    assert_eq!(s3.get(&uri("s3://bkt/jobs/out/c.csv")).unwrap(), b"2");
    assert_eq!(
        hidden(&parent, "v").len(),
        2,
        "only the current version and the one it replaced stay"
    );
    assert_eq!(hidden(&parent, "link"), Vec::<String>::new());

    // Dropped without a commit: the staging folder goes, the output stays.
    let write = s3.begin_prefix_write(&out).unwrap();
    fs::write(write.path().join("junk"), "x").unwrap();
    let staging = write.path().to_path_buf();
    drop(write);
    assert!(!staging.exists());
    assert_eq!(keys(&s3.list(&out).unwrap()), vec!["jobs/out/c.csv"]);
    assert_eq!(
        hidden(&parent, "v").len(),
        2,
        "the dropped write left nothing"
    );

    // An empty publish empties the prefix.
    publish(&s3, &out, &[]);
    assert!(s3.list(&out).unwrap().is_empty());
    // Objects may still be written one by one inside a published prefix.
    s3.put_bytes(&uri("s3://bkt/jobs/out/late.csv"), b"x")
        .unwrap();
    assert_eq!(keys(&s3.list(&out).unwrap()), vec!["jobs/out/late.csv"]);
}

#[test]
fn crashed_staging_folders_are_removed_by_the_next_publish_but_live_ones_are_kept() {
    let (dir, s3) = store();
    // Crashed writers' leftovers, not replaced versions (which path readers
    // get a grace for), are what this is about.
    let s3 = s3.keep_replaced_for(std::time::Duration::ZERO);
    let out = uri("s3://bkt/out/");
    let parent = dir.path().join("s3/bkt");
    publish(&s3, &out, &[("v1", "1".into())]);

    // A writer that crashed half-way: its folder is left, unlocked.
    let crashed = s3.begin_prefix_write(&out).unwrap();
    fs::write(crashed.path().join("half"), "x").unwrap();
    let crashed = crashed.abandon();
    assert!(crashed.exists());
    assert_eq!(
        keys(&s3.list(&out).unwrap()),
        vec!["out/v1"],
        "never listed"
    );

    // A crash in the middle of a commit: a symlink never renamed, and a
    // plain folder swapped out but not yet renamed to a version name.
    let tag = fsutil::tag("out");
    let stray_link = parent.join(fsutil::unique_name(fsutil::LINK, &tag));
    std::os::unix::fs::symlink("nowhere", &stray_link).unwrap();
    let swapped_out = parent.join(fsutil::unique_name(fsutil::LINK, &tag));
    fs::create_dir_all(swapped_out.join("sub")).unwrap();
    fs::write(swapped_out.join("sub/old.csv"), "old").unwrap();

    // A writer still at work when another one commits.
    let live = s3.begin_prefix_write(&out).unwrap();
    fs::write(live.path().join("v3"), "3").unwrap();

    publish(&s3, &out, &[("v2", "2".into())]);
    assert!(!crashed.exists(), "the crashed staging folder is removed");
    assert!(live.path().exists(), "the live staging folder is kept");
    assert!(fs::symlink_metadata(&stray_link).is_err());
    assert!(!swapped_out.exists());
    assert_eq!(keys(&s3.list(&out).unwrap()), vec!["out/v2"]);

    live.commit().unwrap();
    assert_eq!(keys(&s3.list(&out).unwrap()), vec!["out/v3"]);
    assert_eq!(
        hidden(&parent, "v").len(),
        2,
        "the current version and the one it replaced"
    );
}

#[test]
fn publishing_over_a_folder_of_single_objects_swaps_it_out() {
    let (dir, s3) = store();
    s3.put_bytes(&uri("s3://bkt/out/old.csv"), b"old").unwrap();
    publish(&s3, &uri("s3://bkt/out/"), &[("new.csv", "new".into())]);
    assert_eq!(
        keys(&s3.list(&uri("s3://bkt/out/")).unwrap()),
        vec!["out/new.csv"]
    );
    let parent = dir.path().join("s3/bkt");
    assert_eq!(hidden(&parent, "v").len(), 1, "the old folder is removed");
    // The whole bucket can be a published prefix, too.
    publish(&s3, &uri("s3://bkt"), &[("top.csv", "t".into())]);
    assert_eq!(keys(&s3.list(&uri("s3://bkt")).unwrap()), vec!["top.csv"]);
    publish(&s3, &uri("s3://bkt"), &[("top2.csv", "t".into())]);
    assert_eq!(keys(&s3.list(&uri("s3://bkt")).unwrap()), vec!["top2.csv"]);
    assert_eq!(s3.get(&uri("s3://bkt/top2.csv")).unwrap(), b"t");
}

#[test]
fn publish_dir_copies_a_folder_and_checks_its_names() {
    let (dir, s3) = store();
    let src = dir.path().join("local");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.csv"), "a").unwrap();
    fs::write(src.join("sub/b.csv"), "b").unwrap();
    let out = uri("s3://bkt/out/");
    assert_eq!(s3.publish_dir(&src, &out).unwrap(), 2);
    assert_eq!(
        keys(&s3.list(&out).unwrap()),
        vec!["out/a.csv", "out/sub/b.csv"]
    );

    fs::write(src.join(".flux-x"), "x").unwrap();
    let err = s3.publish_dir(&src, &out).unwrap_err().to_string();
    assert!(err.contains(".flux-x") && err.contains("reserves"), "{err}");
    assert_eq!(
        keys(&s3.list(&out).unwrap()),
        vec!["out/a.csv", "out/sub/b.csv"],
        "a failed publish leaves the previous output"
    );
    let err = s3
        .publish_dir(&dir.path().join("nope"), &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn a_snapshot_keeps_its_version_until_dropped() {
    // About snapshots: path readers' grace for replaced versions is not
    // what this counts.
    let (dir, s3) = store();
    let s3 = s3.keep_replaced_for(std::time::Duration::ZERO);
    let out = uri("s3://bkt/out/");
    publish(&s3, &out, &[("a", "1".into())]);
    let snapshot = s3.snapshot(&out).unwrap();
    publish(&s3, &out, &[("a", "2".into()), ("b", "2".into())]);
    publish(&s3, &out, &[("a", "3".into())]);
    let a = snapshot.get("out/a").unwrap();
    assert_eq!(fs::read_to_string(&a.path).unwrap(), "1");
    assert_eq!(snapshot.objects().len(), 1);
    assert_eq!(s3.get(&uri("s3://bkt/out/a")).unwrap(), b"3");
    let parent = dir.path().join("s3/bkt");
    assert_eq!(
        hidden(&parent, "v").len(),
        3,
        "current, the one it replaced, and pinned"
    );
    drop(snapshot);
    publish(&s3, &out, &[("a", "4".into())]);
    assert_eq!(
        hidden(&parent, "v").len(),
        2,
        "unpinned versions go, but for the one just replaced"
    );
}

/// The files of version `i`: a manifest naming the version and how many
/// files it has, and 1 to 5 data files (some nested), all saying `i`.
fn version_files(i: usize) -> Vec<(String, String)> {
    let n = 1 + i % 5;
    let mut files: Vec<(String, String)> = (0..n)
        .map(|j| (format!("part-{j}/data-{j}.txt"), format!("{i}")))
        .collect();
    files.push(("manifest.txt".to_string(), format!("{i} {n}")));
    files
}

fn publish_version(s3: &LocalS3, prefix: &S3Uri, i: usize) {
    let files = version_files(i);
    let borrowed: Vec<(&str, String)> =
        files.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    publish(s3, prefix, &borrowed);
}

/// Checks that a snapshot holds exactly one complete version; returns it.
fn check_snapshot(snapshot: &Snapshot) -> Result<usize, String> {
    let manifest = snapshot
        .get("out/manifest.txt")
        .ok_or_else(|| format!("no manifest in {:?}", keys(snapshot.objects())))?;
    let text = fs::read_to_string(&manifest.path).map_err(|e| e.to_string())?;
    let (version, count) = text.split_once(' ').ok_or("bad manifest")?;
    let count: usize = count.parse().map_err(|_| "bad count")?;
    if snapshot.objects().len() != count + 1 {
        return Err(format!(
            "version {version} has {count} data files, the snapshot {:?}",
            keys(snapshot.objects())
        ));
    }
    for object in snapshot.objects() {
        let content =
            fs::read_to_string(&object.path).map_err(|e| format!("{}: {e}", object.uri))?;
        if !content.starts_with(version)
            || (object.uri.key() != "out/manifest.txt" && content != version)
        {
            return Err(format!(
                "{} holds {content:?} in version {version}",
                object.uri
            ));
        }
    }
    version.parse().map_err(|_| "bad version".to_string())
}

#[test]
fn readers_never_see_a_partial_prefix_while_a_writer_publishes() {
    let (dir, s3) = store();
    let out = uri("s3://bkt/out/");
    publish_version(&s3, &out, 0);
    let done = Arc::new(AtomicBool::new(false));
    let snapshots_read = Arc::new(AtomicUsize::new(0));

    let mut readers = Vec::new();
    for _ in 0..2 {
        let (s3, out, done, read) = (
            s3.clone(),
            out.clone(),
            done.clone(),
            snapshots_read.clone(),
        );
        readers.push(std::thread::spawn(move || -> Result<(), String> {
            let mut last = 0;
            while !done.load(Ordering::Relaxed) {
                let snapshot = s3.snapshot(&out).map_err(|e| e.to_string())?;
                let version = check_snapshot(&snapshot)?;
                if version < last {
                    return Err(format!("went back from version {last} to {version}"));
                }
                last = version;
                read.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    // A reader going through the path, as DuckDB or Spark would: the
    // prefix never goes missing and its manifest is always whole.
    let manifest = s3.path_of(&out).join("manifest.txt");
    let path_reader = {
        let done = done.clone();
        std::thread::spawn(move || -> Result<usize, String> {
            let mut reads = 0;
            while !done.load(Ordering::Relaxed) {
                let text = fs::read_to_string(&manifest).map_err(|e| format!("manifest: {e}"))?;
                let (_, n) = text
                    .split_once(' ')
                    .ok_or(format!("partial manifest {text:?}"))?;
                n.parse::<usize>()
                    .map_err(|_| format!("partial manifest {text:?}"))?;
                reads += 1;
            }
            Ok(reads)
        })
    };

    for i in 1..=150 {
        publish_version(&s3, &out, i);
    }
    done.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap().unwrap();
    }
    let path_reads = path_reader.join().unwrap().unwrap();
    assert!(path_reads > 0);
    assert!(snapshots_read.load(Ordering::Relaxed) > 0);
    assert_eq!(check_snapshot(&s3.snapshot(&out).unwrap()).unwrap(), 150);
    // Versions the readers still held at the last publish go with the next
    // one, and versions replaced within the last minute stay for path
    // readers; without that grace, only the current version and the one it
    // replaced are left.
    let s3 = s3.keep_replaced_for(std::time::Duration::ZERO);
    publish_version(&s3, &out, 151);
    let parent = dir.path().join("s3/bkt");
    assert_eq!(hidden(&parent, "v").len(), 2);
    assert_eq!(hidden(&parent, "link").len(), 0);
}

#[test]
fn a_replaced_version_stays_a_while_for_readers_going_through_the_path() {
    let (_dir, s3) = store();
    let out = uri("s3://bkt/out/");
    publish_version(&s3, &out, 0);
    // A path reader (Spark, DuckDB) resolves the prefix now, takes no
    // lock, and opens its files after two more publishes.
    let resolved = fs::canonicalize(s3.path_of(&out)).unwrap();
    publish_version(&s3, &out, 1);
    publish_version(&s3, &out, 2);
    publish_version(&s3, &out, 3);
    let manifest = fs::read_to_string(resolved.join("manifest.txt"))
        .expect("a version replaced a moment ago is still there");
    assert!(manifest.starts_with("0 "), "{manifest}");
    // Without the grace it goes at the second publish after it, as the
    // prefix's previous version is kept until the next one.
    let strict = s3.keep_replaced_for(std::time::Duration::ZERO);
    publish_version(&strict, &out, 4);
    assert!(!resolved.exists(), "{} is still there", resolved.display());
}

#[cfg(target_os = "linux")]
#[test]
fn the_first_publish_over_a_plain_folder_never_hides_it() {
    let (_dir, s3) = store();
    let out = uri("s3://bkt/out/");
    for round in 0..20 {
        let prefix = out.join(&format!("r{round}/")).unwrap();
        s3.put_bytes(&prefix.join("manifest.txt").unwrap(), b"old 0")
            .unwrap();
        let manifest: PathBuf = s3.path_of(&prefix).join("manifest.txt");
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let done = done.clone();
            std::thread::spawn(move || -> Result<(), String> {
                while !done.load(Ordering::Relaxed) {
                    fs::read_to_string(&manifest).map_err(|e| format!("manifest: {e}"))?;
                }
                Ok(())
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(2));
        publish(&s3, &prefix, &[("manifest.txt", "new 0".into())]);
        done.store(true, Ordering::Relaxed);
        reader.join().unwrap().unwrap();
        assert_eq!(
            s3.get(&prefix.join("manifest.txt").unwrap()).unwrap(),
            b"new 0"
        );
    }
}
