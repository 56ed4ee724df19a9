use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, StringArray};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;

use super::*;
use crate::catalog::{Column, Partition};

/// A state dir with a local S3 and a catalog.
pub(crate) struct Lake {
    dir: tempfile::TempDir,
}

impl Lake {
    pub(crate) fn new() -> Self {
        Lake {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn put(&self, uri: &str, bytes: &[u8]) {
        LocalS3::new(self.root())
            .put_bytes(&S3Uri::parse(uri).unwrap(), bytes)
            .unwrap();
    }

    pub(crate) fn table(&self, table: Table) {
        Catalog::new(self.root()).put(&table).unwrap();
    }

    pub(crate) fn session(&self, database: Option<&str>) -> QuerySession {
        QuerySession::open(self.root(), database).unwrap_or_else(|e| panic!("open: {e}"))
    }
}

/// A Parquet file holding `columns` (name, array), as bytes.
pub(crate) fn parquet(columns: Vec<(&str, ArrayRef)>) -> Vec<u8> {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    bytes
}

pub(crate) fn col(name: &str, data_type: &str) -> Column {
    Column {
        name: name.into(),
        data_type: data_type.into(),
    }
}

pub(crate) fn table_def(
    name: &str,
    location: &str,
    format: Format,
    columns: Vec<Column>,
    partition_keys: Vec<Column>,
) -> Table {
    Table {
        database: "rental".into(),
        name: name.into(),
        location: location.into(),
        format,
        columns,
        partition_keys,
        partitions: vec![],
        schema_version: 1,
        csv_header: matches!(format, Format::Csv).then_some(true),
        updated_at: "2026-01-01T00:00:00Z".into(),
    }
}

/// One rental: id, user, amount, month.
type Rental = (&'static str, i64, f64, &'static str);

const RENTALS: &[Rental] = &[
    ("r1", 7, 12.5, "2024-01"),
    ("r2", 8, 3.0, "2024-01"),
    ("r3", 7, 20.25, "2024-02"),
    ("r4", 9, 1.5, "2024-02"),
    ("r5", 7, 4.0, "2024-02"),
];

/// Lands `RENTALS` as Parquet, one file per `rental_month=` partition,
/// without the month column in the files (Spark's partitionBy), and
/// catalogues the table `rental.rentals`.
pub(crate) fn rentals_lake() -> Lake {
    let lake = Lake::new();
    let mut months: Vec<&str> = RENTALS.iter().map(|r| r.3).collect();
    months.dedup();
    let mut partitions = Vec::new();
    for month in &months {
        let rows: Vec<&Rental> = RENTALS.iter().filter(|r| r.3 == *month).collect();
        let bytes = parquet(vec![
            (
                "rental_id",
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )) as ArrayRef,
            ),
            (
                "user_id",
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
            ),
            (
                "amount",
                Arc::new(Float64Array::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
            ),
        ]);
        let folder = format!("s3://lake/processed/rentals/rental_month={month}/");
        lake.put(&format!("{folder}part-00000.snappy.parquet"), &bytes);
        partitions.push(Partition {
            values: vec![month.to_string()],
            location: folder,
        });
    }
    // What a Spark job leaves next to its output.
    lake.put("s3://lake/processed/rentals/_SUCCESS", b"");
    let mut table = table_def(
        "rentals",
        "s3://lake/processed/rentals/",
        Format::Parquet,
        vec![
            col("rental_id", "string"),
            col("user_id", "bigint"),
            col("amount", "double"),
        ],
        vec![col("rental_month", "string")],
    );
    table.partitions = partitions;
    lake.table(table);
    lake
}

async fn rows_of(session: &QuerySession, sql: &str) -> Vec<Vec<Option<String>>> {
    session
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .rows(None)
        .unwrap()
}

fn text(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some(v.to_string())).collect()
}

#[tokio::test]
async fn tables_resolve_by_database_catalog_and_default_names() {
    let lake = rentals_lake();
    let expected = vec![text(&[&RENTALS.len().to_string()])];
    let session = lake.session(None);
    for sql in [
        "SELECT count(*) FROM rental.rentals",
        "SELECT count(*) FROM awsdatacatalog.rental.rentals",
        "SELECT count(*) FROM AwsDataCatalog.Rental.RENTALS",
        "SELECT count(*) FROM \"rental\".\"rentals\"",
    ] {
        assert_eq!(rows_of(&session, sql).await, expected, "{sql}");
    }
    let session = lake.session(Some("rental"));
    assert_eq!(
        rows_of(&session, "SELECT count(*) FROM rentals").await,
        expected
    );
}

#[tokio::test]
async fn partition_keys_are_columns_from_the_folder_names() {
    let lake = rentals_lake();
    let session = lake.session(Some("rental"));
    let rows = rows_of(
        &session,
        "SELECT rental_month, count(*) AS n, sum(amount) AS total FROM rentals GROUP BY rental_month ORDER BY rental_month",
    )
    .await;
    let mut expected = Vec::new();
    for month in ["2024-01", "2024-02"] {
        let of_month: Vec<&Rental> = RENTALS.iter().filter(|r| r.3 == month).collect();
        let total: f64 = of_month.iter().map(|r| r.2).sum();
        expected.push(vec![
            Some(month.to_string()),
            Some(of_month.len().to_string()),
            Some(format!("{total:?}")),
        ]);
    }
    assert_eq!(rows, expected);
    let result = session
        .query("SELECT * FROM rentals LIMIT 1")
        .await
        .unwrap();
    let names: Vec<String> = result.columns().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["rental_id", "user_id", "amount", "rental_month"]);
}

#[tokio::test]
async fn a_filter_on_the_partition_key_skips_the_other_partitions_files() {
    let lake = rentals_lake();
    // A partition whose only file is not Parquet at all: reading it fails,
    // so a query that succeeds never opened it.
    lake.put(
        "s3://lake/processed/rentals/rental_month=2023-12/part-00000.snappy.parquet",
        b"not parquet",
    );
    let session = lake.session(Some("rental"));
    let of_january = RENTALS.iter().filter(|r| r.3 == "2024-01").count();
    assert_eq!(
        rows_of(
            &session,
            "SELECT count(*) FROM rentals WHERE rental_month = '2024-01'"
        )
        .await,
        vec![text(&[&of_january.to_string()])]
    );
    let err = session
        .query("SELECT count(*), sum(amount) FROM rentals")
        .await
        .unwrap_err();
    assert!(matches!(err, SqlError::Execution(_)), "{err}");
    assert!(!err.is_user_error());
}

#[tokio::test]
async fn published_prefixes_are_followed_and_the_newest_version_is_read() {
    let lake = Lake::new();
    let s3 = LocalS3::new(lake.root());
    let prefix = S3Uri::parse("s3://lake/processed/users/").unwrap();
    let publish = |ids: &[i64]| {
        let staging = tempfile::tempdir().unwrap();
        std::fs::write(
            staging.path().join("part-00000.parquet"),
            parquet(vec![(
                "user_id",
                Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef,
            )]),
        )
        .unwrap();
        s3.publish_dir(staging.path(), &prefix).unwrap();
    };
    publish(&[1, 2, 3]);
    assert!(
        std::fs::symlink_metadata(s3.path_of(&prefix))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the test needs a published (symlinked) prefix"
    );
    lake.table(table_def(
        "users",
        "s3://lake/processed/users/",
        Format::Parquet,
        vec![col("user_id", "bigint")],
        vec![],
    ));
    let sql = "SELECT count(*), sum(user_id) FROM rental.users";
    let before = lake.session(None);
    assert_eq!(rows_of(&before, sql).await, vec![text(&["3", "6"])]);
    publish(&[10, 20]);
    // A session opened before the publish still reads its pinned version.
    assert_eq!(rows_of(&before, sql).await, vec![text(&["3", "6"])]);
    let after = lake.session(None);
    assert_eq!(rows_of(&after, sql).await, vec![text(&["2", "30"])]);
}

#[tokio::test]
async fn csv_tables_read_the_catalog_types() {
    let lake = Lake::new();
    lake.put(
        "s3://lake/raw/users/users.csv",
        b"user_id,name,score,active,signup_date,last_seen,balance\n\
          1,Ann,1.5,true,2024-01-02,2024-01-03 10:00:00,10.25\n\
          2,\"Bo, Jr\",,false,,\\N,\n\
          3,\"Cy \"\"the\"\" 3rd\",2,true,2024-02-29,2024-03-01 00:00:01,-1.00\n\
          4,Di,n/a,maybe,2024-02-30,yesterday,abc\n",
    );
    lake.table(table_def(
        "users",
        "s3://lake/raw/users/",
        Format::Csv,
        vec![
            col("user_id", "bigint"),
            col("name", "string"),
            col("score", "double"),
            col("active", "boolean"),
            col("signup_date", "date"),
            col("last_seen", "timestamp"),
            col("balance", "decimal(10,2)"),
        ],
        vec![],
    ));
    let session = lake.session(Some("rental"));
    let result = session
        .query("SELECT * FROM users ORDER BY user_id")
        .await
        .unwrap();
    let types: Vec<String> = result.columns().into_iter().map(|c| c.data_type).collect();
    assert_eq!(
        types,
        [
            "bigint",
            "varchar",
            "double",
            "boolean",
            "date",
            "timestamp",
            "decimal(10,2)"
        ]
    );
    let rows = result.rows(None).unwrap();
    assert_eq!(
        rows[0],
        text(&[
            "1",
            "Ann",
            "1.5",
            "true",
            "2024-01-02",
            "2024-01-03 10:00:00.000",
            "10.25"
        ])
    );
    assert_eq!(
        rows[1],
        vec![
            Some("2".into()),
            Some("Bo, Jr".into()),
            None,
            Some("false".into()),
            None,
            None,
            None
        ]
    );
    assert_eq!(rows[2][1].as_deref(), Some("Cy \"the\" 3rd"));
    assert_eq!(rows[2][6].as_deref(), Some("-1.00"));
    // Values that are no value of their column's type read as NULL.
    assert_eq!(
        rows[3],
        vec![
            Some("4".into()),
            Some("Di".into()),
            None,
            None,
            None,
            None,
            None
        ]
    );
    // Typed columns filter and compute as their types.
    assert_eq!(
        rows_of(
            &session,
            "SELECT count(*) FROM users WHERE signup_date < DATE '2024-02-01' AND active"
        )
        .await,
        vec![text(&["1"])]
    );
}

#[tokio::test]
async fn csv_partitions_are_pruned_too() {
    let lake = Lake::new();
    lake.put(
        "s3://lake/raw/trips/day=2024-01-01/a.csv",
        b"id,km\nt1,3.5\nt2,\\N\n",
    );
    // Not UTF-8: reading this file fails, so it must not be read.
    lake.put(
        "s3://lake/raw/trips/day=2024-01-02/a.csv",
        b"id,km\n\xff\xfe,1\n",
    );
    lake.table(table_def(
        "trips",
        "s3://lake/raw/trips/",
        Format::Csv,
        vec![col("id", "string"), col("km", "double")],
        vec![col("day", "string")],
    ));
    let session = lake.session(Some("rental"));
    assert_eq!(
        rows_of(
            &session,
            "SELECT id, km, day FROM trips WHERE day = '2024-01-01' ORDER BY id"
        )
        .await,
        vec![
            text(&["t1", "3.5", "2024-01-01"]),
            vec![Some("t2".into()), None, Some("2024-01-01".into())]
        ]
    );
    let err = session.query("SELECT * FROM trips").await.unwrap_err();
    assert!(matches!(err, SqlError::Execution(_)), "{err}");
}

#[tokio::test]
async fn file_columns_are_cast_to_the_catalog_types_and_missing_ones_are_null() {
    let lake = Lake::new();
    // The file has `user_id` as int32 and no `city` column at all.
    lake.put(
        "s3://lake/processed/users/part-0.parquet",
        &parquet(vec![(
            "user_id",
            Arc::new(Int32Array::from(vec![4, 5])) as ArrayRef,
        )]),
    );
    lake.table(table_def(
        "users",
        "s3://lake/processed/users/",
        Format::Parquet,
        vec![col("user_id", "bigint"), col("city", "string")],
        vec![],
    ));
    let session = lake.session(None);
    let result = session
        .query("SELECT user_id, city FROM rental.users ORDER BY user_id")
        .await
        .unwrap();
    assert_eq!(result.columns()[0].data_type, "bigint");
    assert_eq!(
        result.rows(None).unwrap(),
        vec![vec![Some("4".into()), None], vec![Some("5".into()), None]]
    );
}

#[tokio::test]
async fn a_location_without_data_is_an_empty_table() {
    let lake = Lake::new();
    lake.table(table_def(
        "future",
        "s3://lake/processed/future/",
        Format::Parquet,
        vec![col("id", "bigint")],
        vec![col("day", "string")],
    ));
    let session = lake.session(Some("rental"));
    let result = session.query("SELECT id, day FROM future").await.unwrap();
    assert_eq!(result.num_rows(), 0);
    assert_eq!(result.columns().len(), 2);
}

#[tokio::test]
async fn unknown_names_are_reported_with_what_exists() {
    let lake = rentals_lake();
    lake.table(table_def(
        "users",
        "s3://lake/raw/users/",
        Format::Csv,
        vec![col("user_id", "bigint")],
        vec![],
    ));
    let session = lake.session(Some("rental"));
    let err = session
        .query("SELECT * FROM rental.rentels")
        .await
        .unwrap_err();
    assert!(matches!(err, SqlError::UnknownTable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("rental.rentels"), "{message}");
    assert!(message.contains("rentals, users"), "{message}");
    assert!(err.is_user_error());

    let err = session.query("SELECT * FROM rentels").await.unwrap_err();
    assert!(err.to_string().contains("rental.rentels"), "{err}");

    let err = session
        .query("SELECT * FROM sales.orders")
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("`sales`") && message.contains("rental"),
        "{message}"
    );

    // Without a default database, a bare name says how to qualify it.
    let session = lake.session(None);
    let err = session.query("SELECT * FROM rentals").await.unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, SqlError::NoDatabase { .. }) && message.contains("DATABASE.rentals"),
        "{message}"
    );

    // CTE names are no tables.
    let session = lake.session(Some("rental"));
    assert_eq!(
        rows_of(
            &session,
            "WITH big AS (SELECT * FROM rentals WHERE amount > 10) SELECT count(*) FROM big"
        )
        .await,
        vec![text(&[&RENTALS
            .iter()
            .filter(|r| r.2 > 10.0)
            .count()
            .to_string()])]
    );
}

#[tokio::test]
async fn sql_errors_pass_datafusions_message_through() {
    let lake = rentals_lake();
    let session = lake.session(Some("rental"));
    let err = session.query("SELEC 1").await.unwrap_err();
    assert!(matches!(err, SqlError::Sql(_)) && err.is_user_error());
    assert!(err.to_string().contains("SELEC"), "{err}");
    let err = session
        .query("SELECT no_such_column FROM rentals")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no_such_column"), "{err}");
}

#[tokio::test]
async fn statements_that_write_are_refused() {
    let lake = rentals_lake();
    let target = lake.root().join("copied");
    let session = lake.session(Some("rental"));
    let err = session
        .query(&format!(
            "COPY (SELECT * FROM rentals) TO '{}' STORED AS CSV",
            target.display()
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("only queries"), "{err}");
    assert!(!target.exists());
    let err = session
        .query("CREATE TABLE t AS SELECT 1")
        .await
        .unwrap_err();
    assert!(err.is_user_error(), "{err}");
}

#[test]
fn no_catalog_says_to_run_a_crawler() {
    let lake = Lake::new();
    let err = match QuerySession::open(lake.root(), None) {
        Err(e) => e,
        Ok(_) => panic!("an empty state dir has no catalog"),
    };
    assert!(matches!(err, SqlError::NoCatalog { .. }));
    assert!(err.to_string().contains("glue_crawler"), "{err}");
    let lake = rentals_lake();
    let err = match QuerySession::open(lake.root(), Some("sales")) {
        Err(e) => e,
        Ok(_) => panic!("there is no database sales"),
    };
    assert!(err.to_string().contains("rental"), "{err}");
}

#[tokio::test]
async fn a_table_with_an_unreadable_definition_fails_only_queries_that_use_it() {
    let lake = rentals_lake();
    lake.table(table_def(
        "odd",
        "s3://lake/processed/odd/",
        Format::Parquet,
        vec![col("u", "uniontype<int,string>")],
        vec![],
    ));
    let session = lake.session(Some("rental"));
    assert_eq!(
        rows_of(&session, "SELECT count(*) FROM rentals").await,
        vec![text(&[&RENTALS.len().to_string()])]
    );
    let err = session.query("SELECT * FROM odd").await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("rental.odd") && message.contains("uniontype"),
        "{message}"
    );
}

#[tokio::test]
async fn partitions_without_key_value_names_are_reported_not_read_as_empty() {
    let lake = Lake::new();
    lake.put("s3://lake/raw/logs/2024/a.csv", b"msg\nhello\n");
    let mut table = table_def(
        "logs",
        "s3://lake/raw/logs/",
        Format::Csv,
        vec![col("msg", "string")],
        vec![col("partition_0", "bigint")],
    );
    table.partitions = vec![Partition {
        values: vec!["2024".into()],
        location: "s3://lake/raw/logs/2024/".into(),
    }];
    lake.table(table);
    let session = lake.session(Some("rental"));
    let err = session.query("SELECT * FROM logs").await.unwrap_err();
    assert!(
        matches!(err, SqlError::BadTable { .. }) && err.to_string().contains("key=value"),
        "{err}"
    );
}

#[tokio::test]
async fn athena_csv_quotes_every_value_and_leaves_null_empty() {
    let lake = rentals_lake();
    let session = lake.session(Some("rental"));
    let result = session
        .query(
            "SELECT * FROM (VALUES (1, 'plain', 'a,b'), (2, 'say \"hi\"', NULL), (3, '', 'two\nlines')) AS t(n, s, \"odd, name\") ORDER BY n",
        )
        .await
        .unwrap();
    let csv = String::from_utf8(result.to_athena_csv().unwrap()).unwrap();
    assert_eq!(
        csv,
        "\"n\",\"s\",\"odd, name\"\n\
         \"1\",\"plain\",\"a,b\"\n\
         \"2\",\"say \"\"hi\"\"\",\n\
         \"3\",\"\",\"two\nlines\"\n"
    );
    // It reads back with a standard CSV reader.
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(&records[1][1], "say \"hi\"");
    assert_eq!(&records[2][2], "two\nlines");
}

#[tokio::test]
async fn trino_functions_run_as_in_athena() {
    let lake = rentals_lake();
    let session = lake.session(Some("rental"));
    let result = session
        .query(
            "SELECT year(d) , month(d), day_of_week(d) AS dow, \
                    date_add('day', 3, d) AS later, \
                    date_diff('hour', TIMESTAMP '2024-02-28 22:00:00', TIMESTAMP '2024-03-01 01:30:00') AS hours, \
                    date_format(TIMESTAMP '2024-02-29 13:05:09', '%Y/%m/%d %H:%i:%s') AS formatted, \
                    count_if(d > DATE '2024-01-01') AS later_days \
             FROM (VALUES (DATE '2024-02-29')) AS t(d) GROUP BY d",
        )
        .await
        .unwrap();
    let names: Vec<String> = result.columns().into_iter().map(|c| c.name).collect();
    assert_eq!(names[0], "year(d)");
    // Computed by hand: 2024-02-29 was a Thursday (ISO day 4); three days
    // later is 2024-03-03; 22:00 on the 28th to 01:30 on the 1st of March
    // (2024 is a leap year) is 27.5 hours, 27 whole hours.
    let expected_date = chrono::NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
    let later = expected_date + chrono::Days::new(3);
    let row = &result.rows(None).unwrap()[0];
    assert_eq!(row[0].as_deref(), Some("2024"));
    assert_eq!(row[1].as_deref(), Some("2"));
    assert_eq!(row[2].as_deref(), Some("4"));
    assert!(
        row[3]
            .as_deref()
            .is_some_and(|v| v.starts_with(&later.format("%Y-%m-%d").to_string())),
        "{row:?}"
    );
    assert_eq!(row[4].as_deref(), Some("27"));
    assert_eq!(row[5].as_deref(), Some("2024/02/29 13:05:09"));
    assert_eq!(row[6].as_deref(), Some("1"));
}

#[tokio::test]
async fn json_rows_are_typed() {
    let lake = rentals_lake();
    let session = lake.session(Some("rental"));
    let result = session
        .query("SELECT 1 AS n, 2.5 AS x, true AS b, 'a' AS s, NULL AS z")
        .await
        .unwrap();
    assert_eq!(
        result.json_rows().unwrap(),
        vec![serde_json::json!({"n": 1, "x": 2.5, "b": true, "s": "a", "z": null})]
    );
    // The text keeps the columns' order.
    assert_eq!(
        result.to_json_text().unwrap(),
        "[\n  {\"n\": 1, \"x\": 2.5, \"b\": true, \"s\": \"a\", \"z\": null}\n]\n"
    );
}

#[tokio::test]
async fn information_schema_lists_the_tables() {
    let lake = rentals_lake();
    let session = lake.session(Some("rental"));
    assert_eq!(
        rows_of(
            &session,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'rental'"
        )
        .await,
        vec![text(&["rentals"])]
    );
    let shown = session.query("SHOW TABLES").await.unwrap();
    let rows = shown.rows(None).unwrap();
    assert!(
        rows.iter()
            .any(|r| r.contains(&Some("rental".into())) && r.contains(&Some("rentals".into()))),
        "{rows:?}"
    );
}
