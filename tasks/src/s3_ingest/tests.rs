use std::collections::BTreeMap;
use std::fs;

use engine::{FieldError, TaskKind};

use super::*;

fn fields(text: &str) -> toml::Table {
    toml::from_str(text).unwrap()
}

fn unknown(fields: &toml::Table) -> Vec<String> {
    engine::kind::unknown_fields(&S3Ingest, fields)
        .into_iter()
        .cloned()
        .collect()
}

fn parse(text: &str) -> Result<Arc<dyn TaskAction>, FieldError> {
    S3Ingest.parse(&fields(text))
}

fn parse_err(text: &str) -> FieldError {
    match parse(text) {
        Err(e) => e,
        Ok(_) => panic!("{text:?} must be refused"),
    }
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let setup = Setup {
            dir: tempfile::tempdir().unwrap(),
        };
        for sub in ["dag", "state", "logs", "scratch"] {
            fs::create_dir_all(setup.dir.path().join(sub)).unwrap();
        }
        setup
    }

    fn dag_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("dag")
    }

    fn write(&self, rel: &str, content: &str) {
        let path = self.dag_dir().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn attempt(&self) -> Attempt {
        let root = self.dir.path();
        Attempt {
            run_id: "run1".into(),
            task_id: "upload".into(),
            number: 1,
            attempt_id: "run1.upload.1".into(),
            dag_dir: self.dag_dir(),
            log_dir: root.join("logs"),
            scratch_dir: root.join("scratch"),
            state_root: root.join("state"),
            inputs: BTreeMap::new(),
            traceparent: None,
            journal: engine::WorkJournal::in_memory("r1", "t"),
            progress: engine::scheduler::TaskProgress::none(),
        }
    }

    async fn run(&self, toml: &str) -> Result<serde_json::Value, TaskFailure> {
        let action = parse(toml).unwrap();
        action.run(&self.attempt()).await.map(|o| o.unwrap())
    }

    fn object(&self, key: &str) -> std::path::PathBuf {
        self.dir.path().join("state/s3").join(key)
    }
}

fn by_key(output: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    output["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["key"].as_str().unwrap().to_string(), o.clone()))
        .collect()
}

#[test]
fn parses_fields_and_places_errors() {
    parse("source = 'data'\ndestination = 's3://bkt/raw/'").unwrap();
    parse("source = ['a', 'b.csv']\ndestination = 's3://bkt'\ninclude = ['*.csv', '*.json']")
        .unwrap();

    let e = parse_err("destination = 's3://bkt/raw/'");
    assert_eq!(e.field, None);
    assert!(e.message.contains("missing field `source`"), "{e}");
    let e = parse_err("source = 3\ndestination = 's3://bkt/raw/'");
    assert_eq!(e.field.as_deref(), Some("source"));
    assert!(e.message.contains("string or a list of strings"), "{e}");
    let e = parse_err("source = ['a', 1]\ndestination = 's3://bkt/raw/'");
    assert_eq!(e.field.as_deref(), Some("source"));
    let e = parse_err("source = []\ndestination = 's3://bkt/raw/'");
    assert_eq!(e.field.as_deref(), Some("source"));
    let e = parse_err("source = ''\ndestination = 's3://bkt/raw/'");
    assert_eq!(e.field.as_deref(), Some("source"));

    let e = parse_err("source = 'a'");
    assert!(e.message.contains("missing field `destination`"), "{e}");
    let e = parse_err("source = 'a'\ndestination = 's3://Bad_Bucket/raw/'");
    assert_eq!(e.field.as_deref(), Some("destination"));
    assert!(e.message.contains("s3://Bad_Bucket/raw/"), "{e}");
    let e = parse_err("source = 'a'\ndestination = 's3://bkt/../raw/'");
    assert_eq!(e.field.as_deref(), Some("destination"));
    assert!(e.message.contains("`..`"), "{e}");
    let e = parse_err("source = 'a'\ndestination = '/tmp/raw'");
    assert_eq!(e.field.as_deref(), Some("destination"));
    let e = parse_err("source = 'a'\ndestination = 's3://bkt/raw'");
    assert_eq!(e.field.as_deref(), Some("destination"));
    assert!(e.help.unwrap().contains("s3://bkt/raw/"));

    let e = parse_err("source = 'a'\ndestination = 's3://bkt/raw/'\ninclude = 'x/*.csv'");
    assert_eq!(e.field.as_deref(), Some("include"));
    let e = parse_err("source = 'a'\ndestination = 's3://bkt/raw/'\ninclude = true");
    assert_eq!(e.field.as_deref(), Some("include"));

    // A bad field does not hide the others from the unknown-field check.
    let f = fields("source = 3\ndestination = 's3://bkt/raw'\ninclude = '*.csv'");
    assert!(S3Ingest.parse(&f).is_err());
    assert!(unknown(&f).is_empty(), "{:?}", unknown(&f));
    let f = fields("source = 'a'\ndestination = 's3://bkt/raw/'\nsorce = 'x'");
    S3Ingest.parse(&f).unwrap();
    assert_eq!(unknown(&f), vec!["sorce".to_string()]);
}

#[test]
fn globs_match_file_names() {
    assert!(glob("*.csv", "a.csv"));
    assert!(glob("*.csv", ".csv"));
    assert!(!glob("*.csv", "a.csv.gz"));
    assert!(glob("*.csv*", "a.csv.gz"));
    assert!(glob("part-??.txt", "part-01.txt"));
    assert!(!glob("part-??.txt", "part-1.txt"));
    assert!(glob("a*b*c", "axxbyyc"));
    assert!(!glob("a*b*c", "axxbyy"));
    assert!(glob("*", "anything"));
    assert!(glob("exact", "exact"));
    assert!(!glob("exact", "exact2"));
    assert!(glob("dätä*", "dätä.csv"));
}

#[tokio::test]
async fn uploads_then_skips_unchanged_objects() {
    let s = Setup::new();
    s.write("data/a.csv", "hello");
    s.write("data/sub/b.csv", "b,c\n");
    s.write("data/notes.txt", "not a csv");
    s.write("single.json", "{}");
    let toml = "source = ['data', 'single.json']\ndestination = 's3://bkt/raw/'\ninclude = '*.csv'";

    let out = s.run(toml).await.unwrap();
    assert_eq!(out["destination"], "s3://bkt/raw/");
    let objects = by_key(&out);
    assert_eq!(
        objects.keys().collect::<Vec<_>>(),
        vec!["raw/a.csv", "raw/single.json", "raw/sub/b.csv"],
        "notes.txt is not included; single.json is named directly"
    );
    let a = &objects["raw/a.csv"];
    assert_eq!(a["size"], 5);
    assert_eq!(a["md5"], "5d41402abc4b2a76b9719d911017c592");
    assert_eq!(
        a["sha256"],
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert_eq!(a["skipped"], false);
    assert_eq!(out["uploaded"], 3);
    assert_eq!(out["skipped"], 0);
    assert_eq!(out["bytes"], 5 + 4 + 2);
    assert_eq!(out["total_bytes"], 11);
    assert_eq!(out["objects_omitted"], 0);
    assert_eq!(
        fs::read_to_string(s.object("bkt/raw/sub/b.csv")).unwrap(),
        "b,c\n"
    );
    let log = fs::read_to_string(s.dir.path().join("logs/stdout.log")).unwrap();
    assert!(log.contains("uploaded  s3://bkt/raw/a.csv"), "{log}");

    let again = s.run(toml).await.unwrap();
    assert_eq!(again["uploaded"], 0);
    assert_eq!(again["skipped"], 3);
    assert_eq!(again["bytes"], 0);
    assert_eq!(by_key(&again)["raw/a.csv"]["skipped"], true);
    assert_eq!(by_key(&again)["raw/a.csv"]["md5"], a["md5"]);

    // Same size, other bytes: uploaded again.
    s.write("data/a.csv", "HELLO");
    let third = s.run(toml).await.unwrap();
    assert_eq!(third["uploaded"], 1);
    assert_eq!(third["skipped"], 2);
    assert_eq!(by_key(&third)["raw/a.csv"]["skipped"], false);
    assert_eq!(
        fs::read_to_string(s.object("bkt/raw/a.csv")).unwrap(),
        "HELLO"
    );
}

#[tokio::test]
async fn a_single_file_goes_under_its_name_and_absolute_paths_work() {
    let s = Setup::new();
    s.write("in/x.csv", "1");
    let abs = s.dag_dir().join("in/x.csv");
    let toml = format!("source = '{}'\ndestination = 's3://bkt'", abs.display());
    let out = s.run(&toml).await.unwrap();
    assert_eq!(out["destination"], "s3://bkt/");
    assert_eq!(out["objects"][0]["key"], "x.csv");
    assert_eq!(fs::read_to_string(s.object("bkt/x.csv")).unwrap(), "1");
}

async fn failure(s: &Setup, toml: &str) -> String {
    match s.run(toml).await {
        Err(e) => e.message,
        Ok(out) => panic!("expected a failure, got {out}"),
    }
}

#[tokio::test]
async fn errors_name_the_file_and_what_to_do() {
    let s = Setup::new();
    let e = failure(&s, "source = 'nope/data'\ndestination = 's3://bkt/raw/'").await;
    assert!(e.contains("`nope/data` does not exist"), "{e}");
    assert!(
        e.contains(&s.dag_dir().join("nope/data").display().to_string()),
        "{e}"
    );
    assert!(
        e.contains("relative paths start at the DAG file's folder"),
        "{e}"
    );

    s.write("empty/readme.md", "x");
    let e = failure(
        &s,
        "source = 'empty'\ndestination = 's3://bkt/raw/'\ninclude = '*.csv'",
    )
    .await;
    assert!(
        e.contains("nothing to upload") && e.contains("*.csv"),
        "{e}"
    );

    s.write("one/x.csv", "1");
    s.write("two/x.csv", "2");
    let e = failure(&s, "source = ['one', 'two']\ndestination = 's3://bkt/raw/'").await;
    assert!(e.contains("one/x.csv") && e.contains("two/x.csv"), "{e}");
    assert!(e.contains("s3://bkt/raw/x.csv"), "{e}");

    s.write("odd/.flux-tmp", "1");
    let e = failure(&s, "source = 'odd'\ndestination = 's3://bkt/raw/'").await;
    assert!(
        e.contains("odd/.flux-tmp") && e.contains("rename the file"),
        "{e}"
    );

    // A device has no end: it is refused before anything is read or
    // uploaded (before, /dev/zero was streamed into the bucket forever).
    let e = failure(&s, "source = '/dev/zero'\ndestination = 's3://bkt/dev/'").await;
    assert!(
        e.contains("`/dev/zero`") && e.contains("is a character device, not a file or a folder"),
        "{e}"
    );
    assert!(!s.object("bkt/dev").exists());

    // A key that is already a prefix at the destination.
    s.write("clash/x", "1");
    fs::create_dir_all(s.object("bkt/raw/x/inner")).unwrap();
    let e = failure(&s, "source = 'clash'\ndestination = 's3://bkt/raw/'").await;
    assert!(e.contains("clash/x") && e.contains("s3://bkt/raw/x"), "{e}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        s.write("locked/secret.csv", "1");
        let path = s.dag_dir().join("locked/secret.csv");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
        // Root reads anything; the check only means something otherwise.
        if fs::read(&path).is_err() {
            let e = failure(&s, "source = 'locked'\ndestination = 's3://bkt/raw/'").await;
            assert!(e.contains("secret.csv") && e.contains("readable"), "{e}");
        }
    }
}

#[test]
fn the_output_stays_small_with_many_objects() {
    let record = |i: usize, key_len: usize| Record {
        key: format!("{i:06}{}", "k".repeat(key_len)),
        checksums: Checksums {
            size: 10,
            md5: "0".repeat(32),
            sha256: "0".repeat(64),
        },
        skipped: i.is_multiple_of(2),
    };
    let destination = S3Uri::parse("s3://bkt/raw/").unwrap();
    let records: Vec<Record> = (0..5000).map(|i| record(i, 10)).collect();
    let out = output(&destination, &records);
    assert_eq!(out["objects"].as_array().unwrap().len(), MAX_LISTED_OBJECTS);
    assert_eq!(out["objects_total"], 5000);
    assert_eq!(out["objects_omitted"], 5000 - MAX_LISTED_OBJECTS);
    assert_eq!(out["uploaded"], 2500);
    assert_eq!(out["bytes"], 25000);
    assert_eq!(out["total_bytes"], 50000);
    assert!(out.to_string().len() < 200 * 1024);

    let long: Vec<Record> = (0..2000).map(|i| record(i, 1000)).collect();
    let out = output(&destination, &long);
    let listed = out["objects"].as_array().unwrap().len();
    assert!(listed < MAX_LISTED_OBJECTS && listed > 50, "{listed}");
    assert_eq!(out["objects_omitted"], 2000 - listed);
    assert!(out.to_string().len() < 200 * 1024);
}

#[test]
fn summary_and_name() {
    assert_eq!(S3Ingest.name(), "s3_ingest");
    assert!(!S3Ingest.summary().is_empty());
}
