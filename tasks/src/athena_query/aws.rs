//! `athena_query` on AWS (`run --target aws`): the query runs in Athena,
//! in `[aws] athena_workgroup`, its result written by Athena under the
//! task's `output`; the task reads the result back with
//! `GetQueryResults` (paged) and applies `expect` with the same code as
//! locally, on the same Arrow types.
//!
//! * The query execution id is recorded in the checkpoint before the
//!   engine waits on it; a resume after a crash polls that query again
//!   (or reads its result, if it already succeeded) instead of starting
//!   another. The request carries a client token derived from the
//!   attempt id, so a start Athena received but whose answer was lost is
//!   not started twice either.
//! * Polled every [`POLL_SECONDS`] (`FLUX_AWS_POLL_SECONDS`), backing off
//!   while Athena throttles; each change of state is logged.
//! * A query whose attempt is dropped (its timeout, Ctrl-C) is stopped
//!   (`StopQueryExecution`) before the run ends.
//! * At most [`MAX_RESULT_ROWS`] rows are read back: enough for a report
//!   or a data-quality gate; a larger result fails the task with a hint,
//!   since `expect` must see every row to mean what it says.
//!
//! The output has the local backend's shape (`query_execution_id`,
//! `output_location`, `metadata_location`, `rows`, `columns`, `sample`).

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_athena::types::{QueryExecutionContext, QueryExecutionState, ResultConfiguration};
use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use engine::{Attempt, TaskAction, TaskFailure};
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::{
    AthenaQuery, AthenaQueryConfig, Expect, MAX_OUTPUT_BYTES, QuerySource, SAMPLE_ROWS, cut, expect,
};
use crate::aws::{AwsRun, OnAws, Poll, StopOnDrop, error_text, throttled};

/// The default seconds between two polls of a query.
pub const POLL_SECONDS: f64 = 2.0;
/// Rows read back at most.
pub const MAX_RESULT_ROWS: usize = 100_000;
/// The journal key of a task's query.
const QUERY_KEY: &str = "athena.query";

impl OnAws for AthenaQuery {
    fn aws_action(&self, config: AthenaQueryConfig, aws: &Arc<AwsRun>) -> Arc<dyn TaskAction> {
        Arc::new(Query {
            source: config.source(),
            database: config.database.to_string(),
            output: config.output.into_uri().to_string(),
            expect: config.expect,
            aws: aws.clone(),
        })
    }

    async fn end_of_aws_run(&self, aws: &Arc<AwsRun>) {
        aws.finish_cleanups().await;
    }
}

struct Query {
    source: QuerySource,
    database: String,
    output: String,
    expect: Expect,
    aws: Arc<AwsRun>,
}

/// What a query gave back.
struct Rows {
    columns: Vec<(String, String)>,
    rows: Vec<Vec<Option<String>>>,
}

#[async_trait]
impl TaskAction for Query {
    async fn run(&self, attempt: &Attempt) -> Result<Option<serde_json::Value>, TaskFailure> {
        let sql = super::query_text(&self.source, attempt).await?;
        let span = crate::steps::step(&tracing::Span::current(), "athena.query", &sql);
        let done = self.execute(attempt, &sql).instrument(span.clone()).await;
        crate::steps::finish(&span, &done);
        let (id, output_location) = done?;
        let rows = self.results(&id).await?;
        self.log(attempt, &sql, &rows, &output_location);
        let batch = to_batch(&rows)?;
        let failures = expect::evaluate(&self.expect, &batch);
        if !failures.is_empty() {
            return Err(TaskFailure::new(format!(
                "{}\nthe whole result is in {output_location}",
                expect::report(&failures, &batch)
            )));
        }
        let mut sample: Vec<Vec<Option<String>>> = rows
            .rows
            .iter()
            .take(SAMPLE_ROWS)
            .map(|row| row.iter().map(|v| v.clone().map(cut)).collect())
            .collect();
        let columns: Vec<serde_json::Value> = rows
            .columns
            .iter()
            .map(|(name, data_type)| json!({"name": name, "type": data_type}))
            .collect();
        loop {
            let output = json!({
                "query_execution_id": id,
                "output_location": output_location,
                "metadata_location": format!("{output_location}.metadata"),
                "rows": rows.rows.len(),
                "columns": columns,
                "sample": sample,
                "console": self.link(&id),
            });
            if sample.is_empty() || output.to_string().len() <= MAX_OUTPUT_BYTES {
                return Ok(Some(output));
            }
            sample.pop();
        }
    }
}

impl Query {
    fn link(&self, id: &str) -> String {
        self.aws.console_link(&format!(
            "athena/home?region={}#/query-editor/history/{id}",
            self.aws.region
        ))
    }

    /// Starts the query (or finds the one this task started before a
    /// crash) and waits for it; its id and result location.
    async fn execute(&self, attempt: &Attempt, sql: &str) -> Result<(String, String), TaskFailure> {
        let athena = &self.aws.athena;
        let recorded = attempt
            .journal
            .recorded(QUERY_KEY)?
            .and_then(|v| v["query_execution_id"].as_str().map(str::to_string));
        let mut id = None;
        if let Some(previous) = recorded
            && let Ok(state) = self.state(&previous).await
            && matches!(
                state.0,
                QueryExecutionState::Queued
                    | QueryExecutionState::Running
                    | QueryExecutionState::Succeeded
            )
        {
            attempt
                .progress
                .change(&format!("reconnected to Athena query {previous}"));
            id = Some(previous);
        }
        let id = match id {
            Some(id) => id,
            None => {
                let workgroup = self
                    .aws
                    .settings::<AthenaQuery>()
                    .and_then(|s| s.workgroup.clone());
                let started = athena
                    .start_query_execution()
                    .query_string(sql)
                    .query_execution_context(
                        QueryExecutionContext::builder()
                            .database(&self.database)
                            .build(),
                    )
                    .result_configuration(
                        ResultConfiguration::builder()
                            .output_location(&self.output)
                            .build(),
                    )
                    .set_work_group(workgroup)
                    .client_request_token(client_token(&attempt.attempt_id))
                    .send()
                    .await
                    .map_err(|e| {
                        TaskFailure::new(format!(
                            "cannot start the Athena query: {}",
                            error_text(&e)
                        ))
                    })?;
                let id = started
                    .query_execution_id()
                    .ok_or_else(|| TaskFailure::new("StartQueryExecution gave no id"))?
                    .to_string();
                attempt.journal.record(
                    QUERY_KEY,
                    &json!({"query_execution_id": id, "console": self.link(&id)}),
                )?;
                id
            }
        };
        let mut guard = StopOnDrop::new(
            &self.aws,
            format!("Athena query {id}"),
            "stopped",
            athena.stop_query_execution().query_execution_id(&id).send(),
        );
        let ended = self.wait(attempt, &id).await;
        // Ended one way or another in Athena, or Athena could not be
        // asked: only a dropped attempt stops the query.
        guard.armed = false;
        ended.map(|location| (id, location))
    }

    async fn state(
        &self,
        id: &str,
    ) -> Result<
        (QueryExecutionState, Option<String>, String),
        aws_sdk_athena::error::SdkError<
            aws_sdk_athena::operation::get_query_execution::GetQueryExecutionError,
        >,
    > {
        let answer = self
            .aws
            .athena
            .get_query_execution()
            .query_execution_id(id)
            .send()
            .await?;
        let execution = answer.query_execution();
        let status = execution.and_then(|e| e.status());
        let state = status
            .and_then(|s| s.state())
            .cloned()
            .unwrap_or(QueryExecutionState::Queued);
        let reason = status.map(|s| {
            [
                s.state_change_reason().map(str::to_string),
                s.athena_error()
                    .and_then(|e| e.error_message())
                    .map(str::to_string),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ")
        });
        let location = execution
            .and_then(|e| e.result_configuration())
            .and_then(|r| r.output_location())
            .unwrap_or_default()
            .to_string();
        Ok((state, reason.filter(|r| !r.is_empty()), location))
    }

    /// Polls until the query ends; its result location.
    async fn wait(&self, attempt: &Attempt, id: &str) -> Result<String, TaskFailure> {
        let poll = Poll::from_env(POLL_SECONDS);
        let mut last = None;
        let mut throttled_in_a_row = 0;
        loop {
            let (state, reason, location) = match self.state(id).await {
                Ok(answer) => {
                    throttled_in_a_row = 0;
                    answer
                }
                Err(e) if throttled(&e) => {
                    throttled_in_a_row += 1;
                    tokio::time::sleep(poll.delay(throttled_in_a_row)).await;
                    continue;
                }
                Err(e) => {
                    return Err(TaskFailure::new(format!(
                        "cannot ask Athena about query {id}: {}",
                        error_text(&e)
                    )));
                }
            };
            if last.as_ref() != Some(&state) {
                tracing::info!(
                    target: "flux_engine::trace",
                    { flux.athena.query_execution_id = id, flux.athena.state = state.as_str() },
                    "athena.query.state"
                );
                attempt
                    .progress
                    .change(&format!("Athena query {id}: {}", state.as_str()));
                last = Some(state.clone());
            }
            match state {
                QueryExecutionState::Succeeded => return Ok(location),
                QueryExecutionState::Failed | QueryExecutionState::Cancelled => {
                    return Err(TaskFailure::new(format!(
                        "Athena query {id} ended {}: {} ({})",
                        state.as_str(),
                        reason.unwrap_or_else(|| "Athena gave no reason".into()),
                        self.link(id)
                    )));
                }
                _ => tokio::time::sleep(poll.delay(0)).await,
            }
        }
    }

    /// The result's columns and rows, every page.
    async fn results(&self, id: &str) -> Result<Rows, TaskFailure> {
        let mut columns: Vec<(String, String)> = Vec::new();
        let mut rows: Vec<Vec<Option<String>>> = Vec::new();
        let mut token: Option<String> = None;
        let mut first_page = true;
        loop {
            let page = self
                .aws
                .athena
                .get_query_results()
                .query_execution_id(id)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| {
                    TaskFailure::new(format!(
                        "cannot read the result of Athena query {id}: {}",
                        error_text(&e)
                    ))
                })?;
            let set = page.result_set();
            if first_page {
                columns = set
                    .and_then(|s| s.result_set_metadata())
                    .map(|m| {
                        m.column_info()
                            .iter()
                            .map(|c| (c.name().to_string(), c.r#type().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
            }
            for (i, row) in set.map(|s| s.rows()).unwrap_or_default().iter().enumerate() {
                let values: Vec<Option<String>> = row
                    .data()
                    .iter()
                    .map(|d| d.var_char_value().map(str::to_string))
                    .collect();
                // A SELECT's first row is its header (Athena's CSV
                // convention carried into the API).
                let header = first_page
                    && i == 0
                    && values.len() == columns.len()
                    && values
                        .iter()
                        .zip(&columns)
                        .all(|(v, (name, _))| v.as_deref() == Some(name.as_str()));
                if !header {
                    rows.push(values);
                }
            }
            if rows.len() > MAX_RESULT_ROWS {
                return Err(TaskFailure::new(format!(
                    "the result of Athena query {id} has more than {MAX_RESULT_ROWS} rows, more than a check or a report reads; aggregate or add a LIMIT (the whole result is in S3)"
                )));
            }
            first_page = false;
            match page.next_token() {
                Some(next) => token = Some(next.to_string()),
                None => break,
            }
        }
        Ok(Rows { columns, rows })
    }

    fn log(&self, attempt: &Attempt, sql: &str, rows: &Rows, location: &str) {
        let headers: Vec<String> = rows.columns.iter().map(|(n, _)| n.clone()).collect();
        let sample: Vec<Vec<Option<String>>> =
            rows.rows.iter().take(SAMPLE_ROWS).cloned().collect();
        let text = format!(
            "database: {}\n{}\n\n{} rows, written to {location}\n{}",
            self.database,
            sql.trim_end(),
            rows.rows.len(),
            crate::sql::format::text_table(&headers, &sample),
        );
        let path = attempt.log_dir.join("stdout.log");
        let _ =
            std::fs::create_dir_all(&attempt.log_dir).and_then(|()| std::fs::write(&path, text));
    }
}

/// An idempotency token for an attempt: the same attempt sends the same
/// token. 64 characters, which both Athena (32 to 128) and EMR
/// Serverless (1 to 64) take.
pub(crate) fn client_token(attempt_id: &str) -> String {
    Sha256::digest(attempt_id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The Arrow type of an Athena result column type.
fn arrow_type(athena: &str) -> DataType {
    let glue = match athena.to_ascii_lowercase().as_str() {
        "varchar" | "char" | "json" | "uuid" | "ipaddress" => "string".to_string(),
        "integer" => "int".to_string(),
        "real" => "float".to_string(),
        other => other.to_string(),
    };
    crate::sql::types::glue_to_arrow(&glue).unwrap_or(DataType::Utf8)
}

/// The rows as one Arrow batch in the columns' types, for `expect`.
fn to_batch(rows: &Rows) -> Result<RecordBatch, TaskFailure> {
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (i, (name, athena)) in rows.columns.iter().enumerate() {
        let text: StringArray = rows
            .rows
            .iter()
            .map(|row| row.get(i).cloned().flatten())
            .collect();
        let data_type = arrow_type(athena);
        let array: ArrayRef = Arc::new(text);
        let array = datafusion::arrow::compute::cast(&array, &data_type).unwrap_or(array);
        fields.push(Field::new(name, array.data_type().clone(), true));
        arrays.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| TaskFailure::new(format!("cannot read the query result: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn athena_types_become_the_arrow_types_expect_compares_in() {
        assert_eq!(arrow_type("bigint"), DataType::Int64);
        assert_eq!(arrow_type("integer"), DataType::Int32);
        assert_eq!(arrow_type("double"), DataType::Float64);
        assert_eq!(arrow_type("varchar"), DataType::Utf8);
        assert_eq!(arrow_type("date"), DataType::Date32);
        assert_eq!(arrow_type("something new"), DataType::Utf8);
    }

    #[test]
    fn text_rows_are_cast_and_nulls_stay_null() {
        let rows = Rows {
            columns: vec![
                ("n".into(), "bigint".into()),
                ("name".into(), "varchar".into()),
            ],
            rows: vec![
                vec![Some("3".into()), Some("a".into())],
                vec![None, Some("b".into())],
            ],
        };
        let batch = to_batch(&rows).unwrap();
        assert_eq!(batch.schema().field(0).data_type(), &DataType::Int64);
        assert_eq!(batch.column(0).null_count(), 1);
        assert_eq!(batch.num_rows(), 2);
    }

    #[test]
    fn the_client_token_is_stable_per_attempt_and_long_enough() {
        let token = client_token("r.t.1");
        assert_eq!(token, client_token("r.t.1"));
        assert_ne!(token, client_token("r.t.2"));
        assert_eq!(token.len(), 64);
    }
}
