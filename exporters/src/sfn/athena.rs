//! `athena_query`: `startQueryExecution.sync`, and for `expect` a check
//! query whose counts a `Choice` reads.
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
//! booleans `TRUE`/`FALSE`. `getQueryResults` reads the one row of counts
//! and a `Choice` fails the task with the error `TASK.ExpectFailed` when
//! any count is not `0`. The check query runs the task's SQL a second
//! time: Athena bills both.

use std::fmt::Write;

use super::json::{Json, Obj};
use super::states::{TaskCtx, Translated, fail, per_execution};

pub fn translate(ctx: &TaskCtx) -> Result<Translated, String> {
    let sql = match (ctx.opt_str("sql")?, ctx.opt_str("sql_file")?) {
        (Some(sql), None) => sql,
        (None, Some(file)) => {
            // As the engine does, the file's text is not substituted.
            let path = ctx.dag.dir.join(ctx.local(&file));
            std::fs::read_to_string(&path)
                .map_err(|e| ctx.error(format!("cannot read sql_file {}: {e}", path.display())))?
        }
        _ => return Err(ctx.error("exactly one of `sql` and `sql_file` must be given")),
    };
    let database = ctx.opt_str("database")?;
    let output = ctx.str("output")?;
    if !output.starts_with("s3://") {
        return Err(ctx.error(format!(
            "`output` must be an s3:// prefix, found {output:?}"
        )));
    }
    let workgroup = ctx
        .settings
        .athena_workgroup
        .as_deref()
        .ok_or_else(|| ctx.error("[aws] athena_workgroup is missing"))?;
    let query = |sql: &str, location: String| {
        Obj::new()
            .with("QueryString", sql)
            .with_opt(
                "QueryExecutionContext",
                database.as_ref().map(|d| Obj::new().with("Database", d)),
            )
            .with("WorkGroup", workgroup)
            .with(
                "ResultConfiguration",
                Obj::new().with("OutputLocation.$", location),
            )
    };
    let resource = "arn:aws:states:::athena:startQueryExecution.sync";
    let checks = match ctx.fields.get("expect") {
        None => Vec::new(),
        Some(toml::Value::Table(expect)) => checks(ctx, expect)?,
        Some(other) => return Err(ctx.error(format!("`expect` must be a table, found {other}"))),
    };
    if checks.is_empty() {
        return Ok(Translated {
            state: ctx.task_state(ctx.comment(), resource, query(&sql, per_execution(&output))),
            catches: true,
        });
    }
    let check_sql = check_query(&sql, &checks);
    let [run, expect, counts, check, failed, passed] = [
        "Query",
        "Expect",
        "ExpectCounts",
        "Check",
        "ExpectFailed",
        "Passed",
    ]
    .map(|s| ctx.helper(s));
    let choices: Vec<Json> = checks
        .iter()
        .enumerate()
        .map(|(i, _)| {
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
            ctx.task_state(
                "The query itself: its result is the task's output",
                resource,
                query(&sql, per_execution(&output)),
            )
            .with("Next", expect.as_str()),
        ),
        (
            expect,
            ctx.task_state(
                format!(
                    "Counts what violates each check, in order: {}",
                    described.join("; ")
                ),
                resource,
                query(&check_sql, per_execution(&format!("{output}_expect/"))),
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
            ctx.task_state(
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
                    ctx.id(),
                    described.join("; ")
                ),
            ),
        ),
        (passed, Obj::new().with("Type", "Succeed")),
    ];
    Ok(Translated {
        state: ctx.wrapper(format!("{}; with expect checks", ctx.comment()), states),
        catches: true,
    })
}

/// One `expect` check: the SQL that counts its violations.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub description: String,
    pub count_sql: String,
}

/// The checks of an `expect` table, in the order written (row checks
/// first, as the engine reports them).
pub fn checks(ctx: &TaskCtx, expect: &toml::Table) -> Result<Vec<Check>, String> {
    let mut out = Vec::new();
    for (key, op) in [("rows", "="), ("min_rows", ">="), ("max_rows", "<=")] {
        if let Some(v) = expect.get(key) {
            let n = v.as_integer().filter(|n| *n >= 0).ok_or_else(|| {
                ctx.error(format!("`expect.{key}` must be a whole number, found {v}"))
            })?;
            out.push(Check {
                description: format!("{key} = {n}"),
                count_sql: format!("CASE WHEN count(*) {op} {n} THEN 0 ELSE 1 END"),
            });
        }
    }
    for key in expect.keys() {
        if !["rows", "min_rows", "max_rows", "columns"].contains(&key.as_str()) {
            return Err(ctx.error(format!("unknown check `expect.{key}`")));
        }
    }
    let columns = match expect.get("columns") {
        None => return Ok(out),
        Some(toml::Value::Table(columns)) => columns,
        Some(other) => {
            return Err(ctx.error(format!("`expect.columns` must be a table, found {other}")));
        }
    };
    for (column, spec) in columns {
        let Some(spec) = spec.as_table() else {
            return Err(ctx.error(format!("`expect.columns.{column}` must be a table")));
        };
        let col = identifier(column);
        for (check, value) in spec {
            let literal = |v: &toml::Value| {
                sql_literal(v).ok_or_else(|| {
                    ctx.error(format!(
                        "`expect.columns.{column}.{check}`: {v} has no SQL literal form"
                    ))
                })
            };
            let (description, count_sql) = match check.as_str() {
                "min" => (
                    format!("{column} min {value}"),
                    format!("count_if({col} < {})", literal(value)?),
                ),
                "max" => (
                    format!("{column} max {value}"),
                    format!("count_if({col} > {})", literal(value)?),
                ),
                "not_null" => match value.as_bool() {
                    Some(true) => (
                        format!("{column} not_null"),
                        format!("count_if({col} IS NULL)"),
                    ),
                    Some(false) => continue,
                    None => {
                        return Err(ctx.error(format!(
                            "`expect.columns.{column}.not_null` must be true or false"
                        )));
                    }
                },
                "in" => {
                    let Some(items) = value.as_array().filter(|a| !a.is_empty()) else {
                        return Err(ctx.error(format!(
                            "`expect.columns.{column}.in` must be a non-empty list"
                        )));
                    };
                    let mut list = String::new();
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            list.push_str(", ");
                        }
                        list.push_str(&literal(item)?);
                    }
                    (
                        format!("{column} in {value}"),
                        format!("count_if({col} NOT IN ({list}))"),
                    )
                }
                other => {
                    return Err(
                        ctx.error(format!("unknown check `expect.columns.{column}.{other}`"))
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
}
