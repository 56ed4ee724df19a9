use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields as ArrowFields, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;

use super::infer::{Kind, classify, glue_type, widen};
use engine::{FieldError, TaskKind};

use super::*;
use crate::catalog::{Format, Partition};
use crate::sql::tests::parquet;

fn fields(text: &str) -> toml::Table {
    toml::from_str(text).unwrap()
}

fn parse(text: &str) -> Result<Arc<dyn TaskAction>, FieldError> {
    GlueCrawler.parse(&fields(text))
}

fn parse_err(text: &str) -> FieldError {
    match parse(text) {
        Err(e) => e,
        Ok(_) => panic!("{text:?} must be refused"),
    }
}

/// Columns to write (name, array), and their Arrow types (name, type).
type Written = (Vec<(&'static str, ArrayRef)>, Vec<(&'static str, DataType)>);

/// The rentals columns: one of each type the crawler must map.
fn rental_columns(ids: &[&str]) -> Written {
    let n = ids.len();
    let columns: Vec<(&'static str, ArrayRef)> = vec![
        (
            "rental_id",
            Arc::new(StringArray::from(ids.to_vec())) as ArrayRef,
        ),
        ("user_id", Arc::new(Int64Array::from(vec![7i64; n]))),
        ("amount", Arc::new(Float64Array::from(vec![12.5; n]))),
        (
            "start_time",
            Arc::new(TimestampMicrosecondArray::from(
                vec![1_700_000_000_000_000i64; n],
            )),
        ),
        ("rental_date", Arc::new(Date32Array::from(vec![19_700; n]))),
        ("returned", Arc::new(BooleanArray::from(vec![true; n]))),
    ];
    let types = columns
        .iter()
        .map(|(name, array)| (*name, array.data_type().clone()))
        .collect();
    (columns, types)
}

/// The Glue name the brief gives each Arrow type the tests write.
fn expected_glue(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Utf8 => "string",
        DataType::Int64 => "bigint",
        DataType::Int32 => "int",
        DataType::Float64 => "double",
        DataType::Timestamp(_, _) => "timestamp",
        DataType::Date32 => "date",
        DataType::Boolean => "boolean",
        other => panic!("the tests write no {other}"),
    }
}

fn expected_columns(types: &[(&str, DataType)]) -> Vec<Column> {
    types
        .iter()
        .map(|(name, t)| Column {
            name: name.to_string(),
            data_type: expected_glue(t).to_string(),
        })
        .collect()
}

fn col(name: &str, data_type: &str) -> Column {
    Column {
        name: name.into(),
        data_type: data_type.into(),
    }
}

struct Lake {
    dir: tempfile::TempDir,
}

impl Lake {
    fn new() -> Self {
        Lake {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn s3(&self) -> LocalS3 {
        LocalS3::new(self.root())
    }

    fn put(&self, uri: &str, bytes: &[u8]) {
        self.s3()
            .put_bytes(&S3Uri::parse(uri).unwrap(), bytes)
            .unwrap();
    }

    fn catalog(&self) -> Catalog {
        Catalog::new(self.root())
    }

    fn table(&self, name: &str) -> Table {
        self.catalog()
            .get("rental", name)
            .unwrap()
            .unwrap_or_else(|| panic!("no table {name}"))
    }

    fn crawl(&self, toml: &str) -> Output {
        let action = parse(toml).unwrap_or_else(|e| panic!("{toml}: {e}"));
        drop(action);
        let crawl = crawl_of(toml);
        crawl
            .run(self.root(), &AtomicBool::new(false))
            .unwrap()
            .output()
    }
}

/// The crawl a task's fields describe.
fn crawl_of(toml: &str) -> Crawl {
    Crawl::from(engine::config::parse::<GlueCrawlerConfig>(&fields(toml)).unwrap())
}

const PROCESSED: &str = r#"
database = "rental"
targets = ["s3://lake/processed/"]
"#;

/// rentals/ (partitioned by month, Spark markers next to the data) and
/// users/ under s3://lake/processed/.
fn write_processed(lake: &Lake) -> Vec<(&'static str, DataType)> {
    let (jan, types) = rental_columns(&["r1", "r2"]);
    let (feb, _) = rental_columns(&["r3"]);
    lake.put(
        "s3://lake/processed/rentals/rental_month=2024-01/part-00000.snappy.parquet",
        &parquet(jan),
    );
    lake.put(
        "s3://lake/processed/rentals/rental_month=2024-02/part-00000.snappy.parquet",
        &parquet(feb),
    );
    lake.put("s3://lake/processed/rentals/_SUCCESS", b"");
    lake.put(
        "s3://lake/processed/rentals/rental_month=2024-01/.part-00000.snappy.parquet.crc",
        b"crc",
    );
    lake.put(
        "s3://lake/processed/rentals/_temporary/0/junk.parquet",
        b"junk",
    );
    lake.put(
        "s3://lake/processed/Users-2024/part-00000.parquet",
        &parquet(vec![
            (
                "user_id",
                Arc::new(Int64Array::from(vec![1i64, 2])) as ArrayRef,
            ),
            ("Name", Arc::new(StringArray::from(vec!["a", "b"]))),
            ("age", Arc::new(Int32Array::from(vec![30, 40]))),
        ]),
    );
    types
}

#[test]
fn parquet_tables_get_columns_types_and_partitions() {
    let lake = Lake::new();
    let types = write_processed(&lake);
    let out = lake.crawl(PROCESSED);
    assert_eq!(out.database, "rental");
    assert_eq!(out.tables_added, vec!["rentals", "users_2024"], "{out:?}");
    assert!(out.tables_changed.is_empty() && out.tables_unchanged.is_empty());
    assert!(out.tables_missing.is_empty());
    assert_eq!(
        out.partitions,
        BTreeMap::from([("rentals".to_string(), 2), ("users_2024".to_string(), 0)])
    );
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);

    let rentals = lake.table("rentals");
    assert_eq!(rentals.format, Format::Parquet);
    assert_eq!(rentals.location, "s3://lake/processed/rentals/");
    assert_eq!(rentals.columns, expected_columns(&types));
    assert_eq!(rentals.partition_keys, vec![col("rental_month", "string")]);
    assert_eq!(
        rentals.partitions,
        vec![
            Partition {
                values: vec!["2024-01".into()],
                location: "s3://lake/processed/rentals/rental_month=2024-01/".into(),
            },
            Partition {
                values: vec!["2024-02".into()],
                location: "s3://lake/processed/rentals/rental_month=2024-02/".into(),
            },
        ]
    );
    assert_eq!(rentals.schema_version, 1);
    assert_eq!(rentals.csv_header, None);

    let users = lake.table("users_2024");
    assert_eq!(users.location, "s3://lake/processed/Users-2024/");
    assert_eq!(
        users.columns,
        vec![
            col("user_id", "bigint"),
            col("name", "string"),
            col("age", "int")
        ],
        "names lowercased"
    );
    assert!(users.partition_keys.is_empty() && users.partitions.is_empty());
}

#[test]
fn a_second_crawl_reports_unchanged_and_keeps_versions() {
    let lake = Lake::new();
    write_processed(&lake);
    lake.crawl(PROCESSED);
    let before = lake.table("rentals");
    let out = lake.crawl(PROCESSED);
    assert!(out.tables_added.is_empty(), "{out:?}");
    assert!(out.tables_changed.is_empty(), "{out:?}");
    assert_eq!(out.tables_unchanged, vec!["rentals", "users_2024"]);
    assert_eq!(out.partitions["rentals"], 2);
    // Nothing changed, so nothing was rewritten.
    assert_eq!(lake.table("rentals"), before);
}

#[test]
fn a_changed_schema_bumps_the_version_with_a_column_diff() {
    let lake = Lake::new();
    write_processed(&lake);
    lake.crawl(PROCESSED);

    // Spark rewrites users/ as a published prefix (a symlink to a version
    // folder): `name` dropped, `age` now a bigint, `email` added.
    let src = tempfile::tempdir().unwrap();
    std::fs::write(
        src.path().join("part-00000.parquet"),
        parquet(vec![
            (
                "user_id",
                Arc::new(Int64Array::from(vec![1i64])) as ArrayRef,
            ),
            ("age", Arc::new(Int64Array::from(vec![30i64]))),
            ("email", Arc::new(StringArray::from(vec!["a@x"]))),
        ]),
    )
    .unwrap();
    std::fs::write(src.path().join("_SUCCESS"), "").unwrap();
    lake.s3()
        .publish_dir(
            src.path(),
            &S3Uri::parse("s3://lake/processed/Users-2024/").unwrap(),
        )
        .unwrap();
    // And a new month of rentals: partitions change, the schema does not.
    let (mar, _) = rental_columns(&["r4"]);
    lake.put(
        "s3://lake/processed/rentals/rental_month=2024-03/part-00000.snappy.parquet",
        &parquet(mar),
    );

    let out = lake.crawl(PROCESSED);
    assert_eq!(out.tables_unchanged, vec!["rentals"], "{out:?}");
    assert_eq!(
        out.tables_changed,
        vec![TableChange {
            table: "users_2024".into(),
            added: vec!["email".into()],
            removed: vec!["name".into()],
            type_changed: vec![TypeChange {
                column: "age".into(),
                from: "int".into(),
                to: "bigint".into(),
            }],
        }]
    );
    let users = lake.table("users_2024");
    assert_eq!(users.schema_version, 2);
    assert_eq!(
        users.columns,
        vec![
            col("user_id", "bigint"),
            col("age", "bigint"),
            col("email", "string")
        ]
    );
    let rentals = lake.table("rentals");
    assert_eq!(rentals.schema_version, 1);
    assert_eq!(rentals.partitions.len(), 3);
    assert_eq!(out.partitions["rentals"], 3);

    // The JSON shape downstream tasks see.
    let json = serde_json::to_value(&out).unwrap();
    assert_eq!(json["tables_changed"][0]["type_changed"][0]["from"], "int");
    assert_eq!(json["tables_changed"][0]["added"][0], "email");
    assert_eq!(json["partitions"]["rentals"], 3);
    for key in [
        "database",
        "tables_added",
        "tables_changed",
        "tables_unchanged",
        "tables_missing",
        "partitions",
        "warnings",
    ] {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }

    // Crawled again: unchanged at version 2.
    let again = lake.crawl(PROCESSED);
    assert_eq!(again.tables_unchanged, vec!["rentals", "users_2024"]);
    assert_eq!(lake.table("users_2024").schema_version, 2);
}

#[test]
fn files_that_disagree_are_merged_and_the_conflict_reported() {
    let lake = Lake::new();
    lake.put(
        "s3://lake/events/part-0.parquet",
        &parquet(vec![
            ("id", Arc::new(Int32Array::from(vec![1])) as ArrayRef),
            ("label", Arc::new(StringArray::from(vec!["x"]))),
        ]),
    );
    lake.put(
        "s3://lake/events/part-1.parquet",
        &parquet(vec![
            ("id", Arc::new(Int64Array::from(vec![2i64])) as ArrayRef),
            ("label", Arc::new(Int64Array::from(vec![5i64]))),
            ("score", Arc::new(Float64Array::from(vec![0.5]))),
        ]),
    );
    let out = lake.crawl("database = 'rental'\ntargets = ['s3://lake/events']");
    // A target holding the files directly is one table named after it.
    assert_eq!(out.tables_added, vec!["events"]);
    let events = lake.table("events");
    assert_eq!(events.location, "s3://lake/events/");
    assert_eq!(
        events.columns,
        vec![
            col("id", "bigint"),
            col("label", "string"),
            col("score", "double")
        ]
    );
    let conflicts: Vec<&String> = out
        .warnings
        .iter()
        .filter(|w| w.contains("type conflict"))
        .collect();
    assert_eq!(conflicts.len(), 2, "{:?}", out.warnings);
    assert!(conflicts[0].contains("`id`") && conflicts[0].contains("bigint"));
    assert!(conflicts[1].contains("`label`") && conflicts[1].contains("string"));
}

#[test]
fn csv_tables_take_names_from_the_header_and_types_from_the_rows() {
    let lake = Lake::new();
    lake.put(
        "s3://lake/raw/locations/part-0.csv",
        b"location_id,Name,lat,active,opened,last_seen,note,empty\n\
          1,\"Berlin, Mitte\",52.52,true,2024-01-31,2024-01-31 10:00:00,x,\n\
          2,Paris,48.85,FALSE,2023-12-01,2024-02-01 08:30:00.250,,\n\
          3,\"He said \"\"hi\"\"\",-1e3,false,,,\"7\",\n",
    );
    lake.put(
        "s3://lake/raw/locations/part-1.csv",
        b"location_id,Name,lat,active,opened,last_seen,note,empty\n4,Rome,41,true,2024-01-01,2024-03-01,9,\n",
    );
    let out = lake.crawl("database = 'rental'\ntargets = ['s3://lake/raw/']");
    assert_eq!(out.tables_added, vec!["locations"], "{out:?}");
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let t = lake.table("locations");
    assert_eq!(t.format, Format::Csv);
    assert_eq!(t.csv_header, Some(true));
    assert_eq!(
        t.columns,
        vec![
            col("location_id", "bigint"),
            col("name", "string"),
            col("lat", "double"),
            col("active", "boolean"),
            col("opened", "date"),
            // A date among timestamps widens to timestamp.
            col("last_seen", "timestamp"),
            // "x" and "7": text.
            col("note", "string"),
            // Never a value: string.
            col("empty", "string"),
        ]
    );
}

#[test]
fn integer_partitions_are_bigint_and_unnamed_folders_are_numbered() {
    let lake = Lake::new();
    for (year, month) in [(2023, "12"), (2024, "01")] {
        lake.put(
            &format!("s3://lake/raw/trips/year={year}/month={month}/a.csv"),
            b"id,month\n1,ignored\n",
        );
        lake.put(
            &format!("s3://lake/raw/logs/{year}/{month}/a.csv"),
            b"id\n1\n",
        );
    }
    let out = lake.crawl("database = 'rental'\ntargets = ['s3://lake/raw/']");
    assert_eq!(out.tables_added, vec!["logs", "trips"], "{out:?}");
    let trips = lake.table("trips");
    assert_eq!(
        trips.partition_keys,
        vec![col("year", "bigint"), col("month", "bigint")]
    );
    // The file's own `month` column is a partition key, not a data column.
    assert_eq!(trips.columns, vec![col("id", "bigint")]);
    assert_eq!(trips.partitions[0].values, vec!["2023", "12"]);
    assert_eq!(
        trips.partitions[0].location,
        "s3://lake/raw/trips/year=2023/month=12/"
    );
    let logs = lake.table("logs");
    assert_eq!(
        logs.partition_keys,
        vec![col("partition_0", "bigint"), col("partition_1", "bigint")]
    );
    assert_eq!(logs.partitions.len(), 2);
}

#[test]
fn a_target_of_only_partition_folders_is_one_table() {
    let lake = Lake::new();
    lake.put(
        "s3://lake/processed/metrics/rental_month=2024-01/part-0.csv",
        b"n\n1\n",
    );
    lake.put(
        "s3://lake/processed/metrics/rental_month=2024%2F02/part-0.csv",
        b"n\n2\n",
    );
    let out = lake.crawl("database = 'rental'\ntargets = ['s3://lake/processed/metrics/']");
    assert_eq!(out.tables_added, vec!["metrics"]);
    let t = lake.table("metrics");
    let values: Vec<&str> = t.partitions.iter().map(|p| p.values[0].as_str()).collect();
    assert_eq!(values, vec!["2024-01", "2024/02"], "Hive escapes decoded");
    assert_eq!(
        t.partitions[1].location,
        "s3://lake/processed/metrics/rental_month=2024%2F02/"
    );
}

#[test]
fn empty_or_missing_targets_warn_but_succeed() {
    let lake = Lake::new();
    lake.put("s3://lake/empty/_SUCCESS", b"");
    let out = lake.crawl("database = 'rental'\ntargets = ['s3://lake/empty/', 's3://nobucket/x/']");
    assert!(out.tables_added.is_empty());
    assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
    assert!(out.warnings[0].contains("s3://lake/empty/"));
    assert!(out.warnings[1].contains("s3://nobucket/x/"));
}

#[test]
fn exclusions_and_table_prefix_apply() {
    let lake = Lake::new();
    lake.put("s3://lake/raw/users/a.csv", b"id\n1\n");
    lake.put("s3://lake/raw/users/notes.json", b"{}");
    lake.put("s3://lake/raw/users/tmp/b.csv", b"other\nx\n");
    lake.put("s3://lake/raw/scratch/c.csv", b"id\n1\n");
    let out = lake.crawl(
        "database = 'rental'\ntargets = ['s3://lake/raw/']\ntable_prefix = 'raw_'\nexclusions = ['scratch', '**/tmp/**', '**.json']",
    );
    assert_eq!(out.tables_added, vec!["raw_users"], "{out:?}");
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert_eq!(lake.table("raw_users").columns, vec![col("id", "bigint")]);
}

#[test]
fn tables_that_disappeared_are_reported_not_deleted() {
    let lake = Lake::new();
    lake.put("s3://lake/raw/users/a.csv", b"id\n1\n");
    lake.put("s3://lake/raw/cars/a.csv", b"id\n1\n");
    lake.crawl("database = 'rental'\ntargets = ['s3://lake/raw/']");
    lake.s3()
        .delete(&S3Uri::parse("s3://lake/raw/cars/a.csv").unwrap())
        .unwrap();
    // A table of another target is not this crawl's business.
    lake.put("s3://lake/other/t/a.csv", b"id\n1\n");
    lake.crawl("database = 'rental'\ntargets = ['s3://lake/other/']");
    let out = lake.crawl("database = 'rental'\ntargets = ['s3://lake/raw/']");
    assert_eq!(out.tables_missing, vec!["cars"], "{out:?}");
    assert_eq!(out.tables_unchanged, vec!["users"]);
    assert!(lake.catalog().get("rental", "cars").unwrap().is_some());
}

#[test]
fn fields_are_checked() {
    assert!(parse("database = 'rental'\ntargets = ['s3://lake/raw/']").is_ok());
    assert!(parse("database = 'rental'\ntargets = 's3://lake/raw/'").is_ok());

    let e = parse_err("database = 'rental'\ntargets = ['lake/raw/']");
    assert_eq!(e.field.as_deref(), Some("targets"));
    assert!(e.message.contains("s3://"), "{e}");
    let e = parse_err("database = 'rental'\ntargets = ['s3://Bad_Bucket/raw/']");
    assert_eq!(e.field.as_deref(), Some("targets"));
    let e = parse_err("database = 'rental'\ntargets = []");
    assert_eq!(e.field.as_deref(), Some("targets"));
    let e = parse_err("database = 'rental'\ntargets = ['s3://lake/a/', 's3://lake/a/b/']");
    assert!(e.message.contains("overlap"), "{e}");
    let e = parse_err("database = 'rental'");
    assert!(e.message.contains("missing field `targets`"), "{e}");
    let e = parse_err("database = 'Rental'\ntargets = ['s3://lake/raw/']");
    assert_eq!(e.field.as_deref(), Some("database"));
    let e = parse_err("database = 'r'\ntargets = ['s3://lake/raw/']\ntable_prefix = 'Raw-'");
    assert_eq!(e.field.as_deref(), Some("table_prefix"));
    let e = parse_err("database = 'r'\ntargets = ['s3://lake/raw/']\nexclusions = ['/abs']");
    assert_eq!(e.field.as_deref(), Some("exclusions"));

    // A bad field does not make the others look unknown.
    let f = fields(
        "database = 'r'\ntargets = ['nope']\ntable_prefix = 'p_'\nexclusions = ['x']\nextra = 1",
    );
    assert!(GlueCrawler.parse(&f).is_err());
    let unknown: Vec<&String> = engine::kind::unknown_fields(&GlueCrawler, &f);
    assert_eq!(unknown, ["extra"]);
}

#[test]
fn patterns_match_segments_and_folders() {
    let p = |s: &str| Pattern::parse(s).unwrap();
    assert!(p("*.csv").matches("a.csv"));
    assert!(!p("*.csv").matches("x/a.csv"));
    assert!(p("**.csv").matches("x/y/a.csv"));
    assert!(p("**/tmp/**").excludes("users/tmp/b.csv"));
    assert!(!p("**/tmp/**").excludes("users/tmpx/b.csv"));
    assert!(p("users").excludes("users/a.csv"));
    assert!(p("users/").excludes("users/a.csv"));
    assert!(!p("users").excludes("users2/a.csv"));
    assert!(p("part-?.csv").matches("part-1.csv"));
    assert!(!p("part-?.csv").matches("part-12.csv"));
    assert!(Pattern::parse("").is_err());
    assert!(Pattern::parse("s3://b/x").is_err());
}

#[test]
fn types_widen_and_map() {
    assert_eq!(widen("int", "bigint"), "bigint");
    assert_eq!(widen("tinyint", "smallint"), "smallint");
    assert_eq!(widen("int", "double"), "double");
    assert_eq!(widen("float", "double"), "double");
    assert_eq!(widen("decimal(10,2)", "decimal(5,4)"), "decimal(12,4)");
    assert_eq!(widen("bigint", "decimal(10,2)"), "decimal(21,2)");
    assert_eq!(widen("date", "timestamp"), "timestamp");
    assert_eq!(widen("boolean", "bigint"), "string");

    let mut unknown = Vec::new();
    assert_eq!(
        glue_type(&DataType::Decimal128(12, 3), &mut unknown),
        "decimal(12,3)"
    );
    assert_eq!(glue_type(&DataType::LargeUtf8, &mut unknown), "string");
    assert_eq!(glue_type(&DataType::Int16, &mut unknown), "smallint");
    assert_eq!(glue_type(&DataType::Int8, &mut unknown), "tinyint");
    assert_eq!(glue_type(&DataType::Float32, &mut unknown), "float");
    assert_eq!(
        glue_type(
            &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            &mut unknown
        ),
        "timestamp"
    );
    let list = DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
    assert_eq!(glue_type(&list, &mut unknown), "array<bigint>");
    let nested = DataType::Struct(ArrowFields::from(vec![
        Field::new("City", DataType::Utf8, true),
        Field::new("tags", list, true),
    ]));
    assert_eq!(
        glue_type(&nested, &mut unknown),
        "struct<city:string,tags:array<bigint>>"
    );
    assert!(unknown.is_empty());
    assert_eq!(
        glue_type(&DataType::Time64(TimeUnit::Microsecond), &mut unknown),
        "string"
    );
    assert_eq!(unknown.len(), 1);
}

#[test]
fn unknown_parquet_types_become_strings_with_a_warning() {
    let lake = Lake::new();
    let schema = Arc::new(Schema::new(vec![Field::new(
        "t",
        DataType::Time64(TimeUnit::Microsecond),
        false,
    )]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(
            datafusion::arrow::array::Time64MicrosecondArray::from(vec![1i64]),
        )],
    )
    .unwrap();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    lake.put("s3://lake/raw/times/a.parquet", &bytes);
    let out = lake.crawl("database = 'rental'\ntargets = ['s3://lake/raw/']");
    assert_eq!(lake.table("times").columns, vec![col("t", "string")]);
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(out.warnings[0].contains("no Glue type"));
}

#[test]
fn cells_are_classified() {
    assert_eq!(classify(""), Kind::Empty);
    assert_eq!(classify("\\N"), Kind::Empty);
    assert_eq!(classify("-42"), Kind::Bigint);
    assert_eq!(classify("99999999999999999999"), Kind::String);
    assert_eq!(classify("1.5e3"), Kind::Double);
    assert_eq!(classify("inf"), Kind::String);
    assert_eq!(classify("True"), Kind::Boolean);
    assert_eq!(classify("2024-02-29"), Kind::Date);
    assert_eq!(classify("2023-02-29"), Kind::String);
    assert_eq!(classify("2024-01-31 23:59:59"), Kind::Timestamp);
    assert_eq!(classify("2024-01-31T23:59:59"), Kind::String);
    assert_eq!(classify("2024-01"), Kind::String);
}

#[tokio::test]
async fn the_action_runs_the_crawl_and_returns_its_output() {
    let lake = Lake::new();
    lake.put("s3://lake/raw/users/a.csv", b"id\n1\n");
    let action = parse("database = 'rental'\ntargets = ['s3://lake/raw/']").unwrap();
    let root = lake.root();
    let attempt = Attempt {
        run_id: "run1".into(),
        task_id: "crawl".into(),
        number: 1,
        attempt_id: "run1.crawl.1".into(),
        dag_dir: root.to_path_buf(),
        log_dir: root.join("logs"),
        scratch_dir: root.join("scratch"),
        state_root: root.to_path_buf(),
        inputs: BTreeMap::new(),
        traceparent: None,
        journal: engine::WorkJournal::in_memory("r1", "t"),
        progress: engine::scheduler::TaskProgress::none(),
    };
    let out = action.run(&attempt).await.unwrap().unwrap();
    assert_eq!(out["database"], "rental");
    assert_eq!(out["tables_added"][0], "users");
    assert_eq!(out["partitions"]["users"], 0);
    let log = std::fs::read_to_string(root.join("logs/stdout.log")).unwrap();
    assert!(log.contains("added     rental.users"), "{log}");
}

#[test]
fn warnings_are_capped_in_the_output() {
    let mut report = Report::default();
    report.output.warnings = (0..MAX_WARNINGS + 5).map(|i| format!("w{i}")).collect();
    let out = report.output();
    assert_eq!(out.warnings.len(), MAX_WARNINGS + 1);
    assert!(out.warnings[MAX_WARNINGS].contains("5 more"));
}
