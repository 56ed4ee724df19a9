//! `athena_query` in Step Functions: `startQueryExecution.sync`, and for
//! `expect` a check query whose counts a `Choice` reads.
//!
//! The result goes to `output` + the execution's name + `/` (Athena then
//! writes `QUERY_ID.csv` there), so that each execution's results sit
//! apart and the report finds them without passing query ids along.
//!
//! # `expect` in production
//!
//! Every check is translated, by SQL: after the query itself, the task
//! runs a *check query* over it (`SELECT ... FROM (SQL) AS flux_expect`)
//! that counts, per check, what violates it, so that 0 means passed:
//!
//! | check | counted |
//! |---|---|
//! | `rows = N` | `CASE WHEN count(*) = N THEN 0 ELSE 1 END` (likewise `min_rows`, `max_rows`) |
//! | `min = X` | `count_if(col < X)` |
//! | `max = X` | `count_if(col > X)` |
//! | `not_null` | `count_if(col IS NULL)` |
//! | `in = [..]` | `count_if(col NOT IN (..))` |
//!
//! NULL passes `min`, `max` and `in` (a comparison with NULL is not true),
//! as in the engine. Numbers are SQL numbers, strings SQL strings
//! (compared in Athena's way: a string bound on a `date` column needs a
//! TOML date, `min = 2024-01-01`, which becomes `DATE '2024-01-01'`),
//! booleans `TRUE`/`FALSE`; the checks of a column come in the order
//! written. `getQueryResults` reads the one row of counts and a `Choice`
//! fails the task with the error `TASK.ExpectFailed` when any count is
//! not `0`. The check query runs the task's SQL a second time: Athena
//! bills both.
//!
//! # `[aws]`, IAM and the template
//!
//! `athena_workgroup` (needed with an `athena_query` task) is the
//! workgroup; the template creates it unless it is `primary` (which every
//! account has), its results defaulting to the queries' common output
//! folder, and it creates each Glue database a query names (not
//! `default`). The bucket of the first query's output is the DAG's results
//! bucket.
//!
//! | integration | actions | resources |
//! |---|---|---|
//! | `athena:startQueryExecution.sync`, `getQueryResults` | `StartQueryExecution`, `GetQueryExecution`, `StopQueryExecution`, `GetQueryResults` (with `expect`) | the workgroup |
//! | the catalog | `glue:GetDatabase`, `GetTable`, `GetTables`, `GetPartition`, `GetPartitions` | the catalog, each database queried and its tables |
//! | results | `s3:PutObject`, `AbortMultipartUpload`, `GetObject`; `GetBucketLocation`; `ListBucket` with `s3:prefix` | each query's output prefix (`_expect` ones included) |
//! | data | `s3:GetObject`; `ListBucket` with `s3:prefix` | what the queried tables may hold: every data location of the DAG (crawler targets, Spark `reads` and `writes`) |
//!
//! Queries that name tables of another database, or tables whose data
//! lie elsewhere, need a statement of their own.

use std::fmt::Write;

use exporters::sfn::cfn::{BucketUse, Deployment, LogicalId, Resource};
use exporters::sfn::iam::{Grant, s3_places};
use exporters::sfn::json::{Json, Obj};
use exporters::sfn::settings::{AwsSettings, KindSettings};
use exporters::sfn::states::{fail, per_execution};
use exporters::sfn::{ProductionOutput, StepFunctions, TaskContext, TaskExport};

use super::{AthenaQuery, AthenaQueryConfig, Expect};
use crate::glue_crawler::sfn::database_resource;
use crate::s3::S3Uri;

/// The `[aws]` setting of `athena_query` tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct AthenaSettings {
    pub workgroup: Option<String>,
}

impl KindSettings for AthenaSettings {
    const KEYS: &'static [&'static str] = &["athena_workgroup"];

    fn read(aws: &mut AwsSettings, first: Option<&str>) -> Option<AthenaSettings> {
        let workgroup = aws.string(
            "athena_workgroup",
            first
                .map(|task| format!("task `{task}` is an athena_query task; add for example athena_workgroup = \"primary\""))
                .as_deref(),
        );
        Some(AthenaSettings { workgroup })
    }
}

impl StepFunctions for AthenaQuery {
    /// The query in its workgroup, the catalog, the result location
    /// (Athena writes the result as the caller) and the DAG's data, as for
    /// the state machine; reading the result back too.
    fn run_grants(
        &self,
        task: &TaskContext,
        config: &AthenaQueryConfig,
        settings: &AthenaSettings,
    ) -> Vec<Grant> {
        let workgroup = settings.workgroup.as_deref().unwrap_or("primary");
        let output = config.output.as_written_uri().to_string();
        grants(task, workgroup, config.database.as_str(), &[output], true).unwrap_or_default()
    }

    type Settings = AthenaSettings;

    fn translate(
        &self,
        task: &TaskContext,
        config: &AthenaQueryConfig,
        settings: &AthenaSettings,
    ) -> Result<TaskExport, String> {
        let sql = match (&config.sql, &config.sql_file) {
            (Some(sql), _) => sql.clone(),
            (None, Some(file)) => {
                // As the engine does, the file's text is not substituted.
                let path = task.dag.dir.join(task.local(file));
                super::read_sql_file(&path).map_err(|e| task.error(e))?
            }
            (None, None) => {
                return Err(task.error("exactly one of `sql` and `sql_file` must be given"));
            }
        };
        let database = config.database.as_str();
        let output = config.output.as_written();
        let workgroup = settings
            .workgroup
            .as_deref()
            .ok_or_else(|| task.error("[aws] athena_workgroup is missing"))?;
        let query = Query {
            database,
            workgroup,
        };
        let checks = checks(task, &config.expect)?;
        let expect_output = format!("{output}_expect/");
        let mut locations = vec![output.to_string()];
        if !checks.is_empty() {
            locations.push(expect_output.clone());
        }
        let grants = grants(task, workgroup, database, &locations, !checks.is_empty())?;
        let state = if checks.is_empty() {
            task.task_state(
                task.comment(),
                START_QUERY,
                query.parameters(&sql, per_execution(output)),
            )
        } else {
            gated(task, &query, &sql, output, &expect_output, &checks)
        };
        Ok(TaskExport::task(state).with_grants(grants))
    }

    fn production_output(&self, config: &AthenaQueryConfig) -> Option<ProductionOutput> {
        Some(ProductionOutput::QueryResults {
            prefix: config.output.as_written().to_string(),
        })
    }

    fn deployment(
        &self,
        settings: &AthenaSettings,
        tasks: &[(&TaskContext, AthenaQueryConfig)],
    ) -> Result<Deployment, String> {
        let mut deployment = Deployment::default();
        let outputs: Vec<&str> = tasks.iter().map(|(_, c)| c.output.as_written()).collect();
        for (task, config) in tasks {
            deployment
                .resources
                .extend(database_resource(&task.dag.name, config.database.as_str()));
            if let Ok(uri) = S3Uri::parse(config.output.as_written()) {
                deployment
                    .buckets
                    .push((BucketUse::Results, uri.bucket().to_string()));
            }
        }
        if let (Some(workgroup), Some((task, _))) = (&settings.workgroup, tasks.first())
            && workgroup != "primary"
        {
            deployment.resources.push(Resource {
                key: "AthenaWorkGroup".into(),
                logical_id: LogicalId::Fixed("AthenaWorkGroup"),
                body: Obj::new().with("Type", "AWS::Athena::WorkGroup").with(
                    "Properties",
                    Obj::new()
                        .with("Name", workgroup.as_str())
                        .with(
                            "Description",
                            format!("Athena queries of the flux-engine DAG {}", task.dag.name),
                        )
                        .with("State", "ENABLED")
                        .with(
                            "WorkGroupConfiguration",
                            Obj::new()
                                // Each query sets its own output location.
                                .with("EnforceWorkGroupConfiguration", false)
                                .with(
                                    "ResultConfiguration",
                                    Obj::new().with("OutputLocation", results_prefix(&outputs)),
                                ),
                        ),
                ),
                sort_name: None,
                role: None,
            });
        }
        Ok(deployment)
    }
}

const START_QUERY: &str = "arn:aws:states:::athena:startQueryExecution.sync";

/// Where a task's queries run.
struct Query<'a> {
    database: &'a str,
    workgroup: &'a str,
}

impl Query<'_> {
    /// A `startQueryExecution` of `sql`, its results under `location` (an
    /// intrinsic).
    fn parameters(&self, sql: &str, location: String) -> Obj {
        Obj::new()
            .with("QueryString", sql)
            .with(
                "QueryExecutionContext",
                Obj::new().with("Database", self.database),
            )
            .with("WorkGroup", self.workgroup)
            .with(
                "ResultConfiguration",
                Obj::new().with("OutputLocation.$", location),
            )
    }
}

/// The query, then its check query, the counts read back and a `Choice`
/// that fails the task unless every count is 0; one `Parallel`.
fn gated(
    task: &TaskContext,
    query: &Query,
    sql: &str,
    output: &str,
    expect_output: &str,
    checks: &[Check],
) -> Obj {
    let check_sql = check_query(sql, checks);
    let [run, expect, counts, check, failed, passed] = [
        "Query",
        "Expect",
        "ExpectCounts",
        "Check",
        "ExpectFailed",
        "Passed",
    ]
    .map(|s| task.helper(s));
    let choices: Vec<Json> = (0..checks.len())
        .map(|i| {
            Obj::new()
                .with(
                    "Not",
                    Obj::new()
                        .with("Variable", format!("$.expect.counts[{i}].VarCharValue"))
                        .with("StringEquals", "0"),
                )
                .with("Next", failed.as_str())
                .into()
        })
        .collect();
    let described: Vec<&str> = checks.iter().map(|c| c.description.as_str()).collect();
    let states = vec![
        (
            run,
            task.task_state(
                "The query itself: its result is the task's output",
                START_QUERY,
                query.parameters(sql, per_execution(output)),
            )
            .with("Next", expect.as_str()),
        ),
        (
            expect,
            task.task_state(
                format!(
                    "Counts what violates each check, in order: {}",
                    described.join("; ")
                ),
                START_QUERY,
                query.parameters(&check_sql, per_execution(expect_output)),
            )
            .with(
                "ResultSelector",
                Obj::new().with("QueryExecutionId.$", "$.QueryExecution.QueryExecutionId"),
            )
            .with("ResultPath", "$.expect")
            .with("Next", counts.as_str()),
        ),
        (
            counts,
            task.task_state(
                "Reads the counts: row 0 is the header, row 1 the counts",
                "arn:aws:states:::athena:getQueryResults",
                Obj::new().with("QueryExecutionId.$", "$.expect.QueryExecutionId"),
            )
            .with(
                "ResultSelector",
                Obj::new().with("counts.$", "$.ResultSet.Rows[1].Data"),
            )
            .with("ResultPath", "$.expect")
            .with("Next", check.as_str()),
        ),
        (
            check,
            Obj::new()
                .with("Type", "Choice")
                .with("Comment", "Every count must be 0")
                .with("Choices", choices)
                .with("Default", passed.as_str()),
        ),
        (
            failed.clone(),
            fail(
                &failed,
                &format!(
                    "an expect check of task `{}` failed; the counts are in the check query's result: {}",
                    task.id(),
                    described.join("; ")
                ),
            ),
        ),
        (passed, Obj::new().with("Type", "Succeed")),
    ];
    task.wrapper(format!("{}; with expect checks", task.comment()), states)
}

/// What the query's states need: the workgroup, the catalog, the result
/// locations (`locations`, each execution's under it) and the DAG's data.
fn grants(
    task: &TaskContext,
    workgroup: &str,
    database: &str,
    locations: &[String],
    reads_results: bool,
) -> Result<Vec<Grant>, String> {
    let arns = task.arns();
    let mut actions = vec![
        "athena:StartQueryExecution",
        "athena:GetQueryExecution",
        "athena:StopQueryExecution",
    ];
    if reads_results {
        actions.push("athena:GetQueryResults");
    }
    let mut grants = vec![
        Grant::statement(
            "AthenaQueries",
            &actions,
            [arns.arn("athena", &format!("workgroup/{workgroup}"))],
        ),
        Grant::statement(
            "GlueCatalogForAthena",
            &[
                "glue:GetDatabase",
                "glue:GetTable",
                "glue:GetTables",
                "glue:GetPartition",
                "glue:GetPartitions",
            ],
            [
                arns.arn("glue", "catalog"),
                arns.arn("glue", &format!("database/{database}")),
                arns.arn("glue", &format!("table/{database}/*")),
            ],
        ),
    ];
    let mut objects = Vec::new();
    let mut buckets = Vec::new();
    let mut lists = Vec::new();
    for location in locations {
        let prefix = if location.ends_with('/') {
            location.clone()
        } else {
            format!("{location}/")
        };
        let uri = S3Uri::parse(&prefix).map_err(|e| task.error(e))?;
        let (places, prefixes) = s3_places(uri.bucket(), uri.key());
        objects.extend(places.iter().map(|p| arns.s3(p)));
        buckets.push(arns.s3(uri.bucket()));
        lists.push(Grant::list("S3ListBucket", uri.bucket(), prefixes));
    }
    grants.push(Grant::statement(
        "AthenaQueryResultsWrite",
        &["s3:PutObject", "s3:AbortMultipartUpload"],
        objects.clone(),
    ));
    grants.push(Grant::statement(
        "AthenaQueryResultsBucketLocation",
        &["s3:GetBucketLocation"],
        buckets,
    ));
    grants.push(Grant::statement(
        "S3ReadObjects",
        &["s3:GetObject"],
        objects,
    ));
    grants.extend(lists);
    grants.push(Grant::read_data("S3ReadObjects", "S3ListBucket"));
    Ok(grants)
}

/// One `expect` check: the SQL that counts its violations.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub description: String,
    pub count_sql: String,
}

/// The checks of an `expect`, in the order written (row checks first, as
/// the engine reports them).
pub fn checks(task: &TaskContext, expect: &Expect) -> Result<Vec<Check>, String> {
    let mut out = Vec::new();
    for (key, op, n) in [
        ("rows", "=", expect.rows),
        ("min_rows", ">=", expect.min_rows),
        ("max_rows", "<=", expect.max_rows),
    ] {
        if let Some(n) = n {
            out.push(Check {
                description: format!("{key} = {n}"),
                count_sql: format!("CASE WHEN count(*) {op} {n} THEN 0 ELSE 1 END"),
            });
        }
    }
    for column in &expect.columns {
        let name = &column.name;
        let col = identifier(name);
        for (check, value) in &column.written {
            let literal = |v: &toml::Value| {
                sql_literal(v).ok_or_else(|| {
                    task.error(format!(
                        "`expect.columns.{name}.{check}`: {v} has no SQL literal form"
                    ))
                })
            };
            let (description, count_sql) = match check.as_str() {
                "min" => (
                    format!("{name} min {value}"),
                    format!("count_if({col} < {})", literal(value)?),
                ),
                "max" => (
                    format!("{name} max {value}"),
                    format!("count_if({col} > {})", literal(value)?),
                ),
                "not_null" if value.as_bool() == Some(true) => (
                    format!("{name} not_null"),
                    format!("count_if({col} IS NULL)"),
                ),
                "not_null" => continue,
                "in" => {
                    let items = value.as_array().cloned().unwrap_or_default();
                    let list = items
                        .iter()
                        .map(literal)
                        .collect::<Result<Vec<_>, _>>()?
                        .join(", ");
                    (
                        format!("{name} in {value}"),
                        format!("count_if({col} NOT IN ({list}))"),
                    )
                }
                other => {
                    return Err(
                        task.error(format!("unknown check `expect.columns.{name}.{other}`"))
                    );
                }
            };
            out.push(Check {
                description,
                count_sql,
            });
        }
    }
    Ok(out)
}

/// The check query: one row, one count per check, in order.
pub fn check_query(sql: &str, checks: &[Check]) -> String {
    // A trailing `;` would end the subquery; a trailing `--` comment is
    // closed by the newline before `)`.
    let inner = sql.trim().trim_end_matches(';').trim_end();
    let mut out = String::from("SELECT\n");
    for (i, check) in checks.iter().enumerate() {
        let comma = if i + 1 < checks.len() { "," } else { "" };
        let _ = writeln!(out, "  {} AS check_{i}{comma}", check.count_sql);
    }
    let _ = write!(out, "FROM (\n{inner}\n) AS flux_expect");
    out
}

/// A column name as a quoted Trino identifier.
fn identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A TOML value as a Trino literal; `None` for arrays and tables.
fn sql_literal(value: &toml::Value) -> Option<String> {
    Some(match value {
        toml::Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) if f.is_finite() => {
            let text = f.to_string();
            // Rust writes 1.0 as "1"; keep it a decimal, as written.
            if text.contains('.') {
                text
            } else {
                format!("{text}.0")
            }
        }
        toml::Value::Boolean(b) => (if *b { "TRUE" } else { "FALSE" }).to_string(),
        toml::Value::Datetime(d) => match (&d.date, &d.time) {
            (Some(date), None) => format!("DATE '{date}'"),
            (Some(date), Some(time)) if d.offset.is_none() => {
                format!("TIMESTAMP '{date} {time}'")
            }
            _ => return None,
        },
        _ => return None,
    })
}

/// The longest common folder of the query outputs (`s3://b/analytics/
/// queries/`), at least the first output's bucket.
fn results_prefix(outputs: &[&str]) -> String {
    let first = outputs[0];
    let mut common = first.len();
    for o in &outputs[1..] {
        common = common.min(
            first
                .bytes()
                .zip(o.bytes())
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    let mut prefix = &first[..common];
    if let Some(slash) = prefix.rfind('/') {
        prefix = &first[..=slash];
    }
    let bucket_root = S3Uri::parse(first)
        .ok()
        .map(|uri| format!("s3://{}/", uri.bucket()));
    match bucket_root {
        Some(root) if prefix.len() < root.len() => root,
        _ => prefix.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_follow_trino() {
        let v = |text: &str| -> toml::Value {
            let t: toml::Table = toml::from_str(&format!("v = {text}")).unwrap();
            t["v"].clone()
        };
        assert_eq!(sql_literal(&v("\"o'k\"")).as_deref(), Some("'o''k'"));
        assert_eq!(sql_literal(&v("-3")).as_deref(), Some("-3"));
        assert_eq!(sql_literal(&v("0.005")).as_deref(), Some("0.005"));
        assert_eq!(sql_literal(&v("2.0")).as_deref(), Some("2.0"));
        assert_eq!(sql_literal(&v("true")).as_deref(), Some("TRUE"));
        assert_eq!(
            sql_literal(&v("2024-01-31")).as_deref(),
            Some("DATE '2024-01-31'")
        );
        assert_eq!(
            sql_literal(&v("2024-01-31T10:00:00")).as_deref(),
            Some("TIMESTAMP '2024-01-31 10:00:00'")
        );
        assert_eq!(sql_literal(&v("[1]")), None);
    }

    #[test]
    fn the_check_query_wraps_the_sql() {
        let checks = [
            Check {
                description: "rows = 1".into(),
                count_sql: "CASE WHEN count(*) = 1 THEN 0 ELSE 1 END".into(),
            },
            Check {
                description: "n not_null".into(),
                count_sql: "count_if(\"n\" IS NULL)".into(),
            },
        ];
        assert_eq!(
            check_query("SELECT 1 AS n; \n", &checks),
            "SELECT\n  CASE WHEN count(*) = 1 THEN 0 ELSE 1 END AS check_0,\n  count_if(\"n\" IS NULL) AS check_1\nFROM (\nSELECT 1 AS n\n) AS flux_expect"
        );
    }

    #[test]
    fn the_results_prefix_is_the_common_folder() {
        assert_eq!(
            results_prefix(&["s3://b/a/q/x/", "s3://b/a/q/y/"]),
            "s3://b/a/q/"
        );
        assert_eq!(results_prefix(&["s3://b/x/", "s3://b/y/"]), "s3://b/");
        assert_eq!(results_prefix(&["s3://b/one/"]), "s3://b/one/");
    }
}
