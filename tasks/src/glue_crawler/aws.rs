//! `glue_crawler` on AWS (`run --target aws`): the task's crawler
//! (`DAG-TASK`, the name the export gives it) crawls the task's targets
//! into its database in the Glue Data Catalog.
//!
//! * The database is created if it is missing.
//! * The crawler is created if it is missing (with the role
//!   `[aws] glue_crawler_role`, tagged `flux-engine:dag`), or updated when
//!   its database or S3 target paths differ from the DAG's. Only those are
//!   the DAG's: the crawler's other settings, its other targets, the
//!   exclusions on a kept path and its tags are left as they are (a
//!   crawler managed by CloudFormation or Terraform keeps what they set).
//! * The crawl's start is recorded in the checkpoint before the engine
//!   waits on it: a resume after a crash waits for that crawl if it is
//!   still running instead of starting another. A crawl someone else
//!   started is waited for, then ours starts.
//! * Polled every [`POLL_SECONDS`] (`FLUX_AWS_POLL_SECONDS`), backing off
//!   while Glue throttles; each change of state is logged. A crawl whose
//!   attempt is dropped is stopped (`StopCrawler`).
//! * The output names the tables the crawl added, changed (a new
//!   `UpdateTime`) and left unchanged, from the catalog before and after.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_glue::types::{CrawlerState, DatabaseInput, S3Target};
use engine::{Attempt, TaskAction, TaskFailure};
use serde_json::json;
use tracing::Instrument;

use super::sfn::crawler_name;
use super::{GlueCrawler, GlueCrawlerConfig};
use crate::aws::{AwsRun, OnAws, Poll, StopOnDrop, error_text, say, throttled};

/// The default seconds between two polls of a crawler.
pub const POLL_SECONDS: f64 = 15.0;
/// The journal key of a task's crawl.
const CRAWL_KEY: &str = "glue.crawl";
/// The tag a crawler the run creates carries.
const DAG_TAG: &str = "flux-engine:dag";

impl OnAws for GlueCrawler {
    fn aws_action(&self, config: GlueCrawlerConfig, aws: &Arc<AwsRun>) -> Arc<dyn TaskAction> {
        Arc::new(Crawl {
            config,
            aws: aws.clone(),
        })
    }

    async fn end_of_aws_run(&self, aws: &Arc<AwsRun>) {
        aws.finish_cleanups().await;
    }
}

struct Crawl {
    config: GlueCrawlerConfig,
    aws: Arc<AwsRun>,
}

#[async_trait]
impl TaskAction for Crawl {
    async fn run(&self, attempt: &Attempt) -> Result<Option<serde_json::Value>, TaskFailure> {
        let crawler = crawler_name(&self.aws.dag, &attempt.task_id);
        let database = self.config.database.to_string();
        self.ensure_database(&database).await?;
        self.ensure_crawler(&crawler, &database).await?;
        let before = self.tables(&database).await?;
        let span = crate::steps::step(&tracing::Span::current(), "glue.crawl", &crawler);
        let crawled = self.crawl(attempt, &crawler).instrument(span.clone()).await;
        crate::steps::finish(&span, &crawled);
        crawled?;
        let after = self.tables(&database).await?;
        let mut added = Vec::new();
        let mut changed = Vec::new();
        let mut unchanged = Vec::new();
        for (name, updated) in &after {
            match before.get(name) {
                None => added.push(name.clone()),
                Some(earlier) if earlier != updated => changed.push(name.clone()),
                Some(_) => unchanged.push(name.clone()),
            }
        }
        let output = json!({
            "database": database,
            "crawler": crawler,
            "tables_added": added,
            "tables_changed": changed,
            "tables_unchanged": unchanged,
            "console": self.link(&crawler),
        });
        let log = format!(
            "crawler {crawler} into database {database}\nadded: {added:?}\nchanged: {changed:?}\nunchanged: {unchanged:?}\n"
        );
        let _ = std::fs::create_dir_all(&attempt.log_dir)
            .and_then(|()| std::fs::write(attempt.log_dir.join("stdout.log"), log));
        Ok(Some(output))
    }
}

impl Crawl {
    fn link(&self, crawler: &str) -> String {
        self.aws.console_link(&format!(
            "glue/home?region={}#/v2/data-catalog/crawlers/view/{crawler}",
            self.aws.region
        ))
    }

    async fn ensure_database(&self, database: &str) -> Result<(), TaskFailure> {
        let glue = &self.aws.glue;
        match glue.get_database().name(database).send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_entity_not_found_exception()) =>
            {
                glue.create_database()
                    .database_input(
                        DatabaseInput::builder()
                            .name(database)
                            .description(format!("Tables of the flux-engine DAG {}", self.aws.dag))
                            .build()
                            .map_err(|e| TaskFailure::new(format!("the database: {e}")))?,
                    )
                    .send()
                    .await
                    .map(|_| ())
                    .or_else(|e| {
                        // Another task created it meanwhile: as good.
                        if e.as_service_error()
                            .is_some_and(|s| s.is_already_exists_exception())
                        {
                            Ok(())
                        } else {
                            Err(TaskFailure::new(format!(
                                "cannot create the Glue database {database}: {}",
                                error_text(&e)
                            )))
                        }
                    })
            }
            Err(e) => Err(TaskFailure::new(format!(
                "cannot read the Glue database {database}: {}",
                error_text(&e)
            ))),
        }
    }

    /// Creates the crawler, or updates what the DAG owns of it.
    async fn ensure_crawler(&self, crawler: &str, database: &str) -> Result<(), TaskFailure> {
        let glue = &self.aws.glue;
        let paths: Vec<String> = self
            .config
            .targets
            .0
            .iter()
            .map(|t| t.uri().as_prefix().to_string())
            .collect();
        match glue.get_crawler().name(crawler).send().await {
            Ok(found) => {
                let Some(existing) = found.crawler() else {
                    return Ok(());
                };
                let targets = existing
                    .targets()
                    .cloned()
                    .unwrap_or_else(|| aws_sdk_glue::types::CrawlerTargets::builder().build());
                let current: Vec<String> = targets
                    .s3_targets()
                    .iter()
                    .filter_map(|t| t.path().map(str::to_string))
                    .collect();
                if existing.database_name() == Some(database) && same_paths(&current, &paths) {
                    return Ok(());
                }
                // The DAG's paths, keeping what was set on a path it keeps.
                let s3_targets: Vec<S3Target> = paths
                    .iter()
                    .map(|path| {
                        targets
                            .s3_targets()
                            .iter()
                            .find(|t| t.path().is_some_and(|p| same_path(p, path)))
                            .cloned()
                            .unwrap_or_else(|| S3Target::builder().path(path).build())
                    })
                    .collect();
                let targets = aws_sdk_glue::types::CrawlerTargets::builder()
                    .set_s3_targets(Some(s3_targets))
                    .set_jdbc_targets(kept(targets.jdbc_targets()))
                    .set_mongo_db_targets(kept(targets.mongo_db_targets()))
                    .set_dynamo_db_targets(kept(targets.dynamo_db_targets()))
                    .set_catalog_targets(kept(targets.catalog_targets()))
                    .set_delta_targets(kept(targets.delta_targets()))
                    .set_iceberg_targets(kept(targets.iceberg_targets()))
                    .set_hudi_targets(kept(targets.hudi_targets()))
                    .build();
                glue.update_crawler()
                    .name(crawler)
                    .database_name(database)
                    .targets(targets)
                    .send()
                    .await
                    .map_err(|e| {
                        TaskFailure::new(format!(
                            "cannot update the Glue crawler {crawler} to the DAG's targets and database: {}",
                            error_text(&e)
                        ))
                    })?;
                say(&format!(
                    "Glue crawler {crawler} updated to the DAG's database and targets"
                ));
                Ok(())
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_entity_not_found_exception()) =>
            {
                let role = self
                    .aws
                    .settings::<GlueCrawler>()
                    .and_then(|s| s.crawler_role.clone())
                    .ok_or_else(|| {
                        TaskFailure::new(format!(
                            "the Glue crawler {crawler} does not exist, and the run can create it only with a role: set [aws] glue_crawler_role to the ARN or name of a role Glue can assume with read access to the targets (or deploy the DAG's stack, which creates the crawler)"
                        ))
                    })?;
                let targets = aws_sdk_glue::types::CrawlerTargets::builder()
                    .set_s3_targets(Some(
                        paths
                            .iter()
                            .map(|p| S3Target::builder().path(p).build())
                            .collect(),
                    ))
                    .build();
                glue.create_crawler()
                    .name(crawler)
                    .role(role)
                    .database_name(database)
                    .description(format!(
                        "The glue_crawler task of the flux-engine DAG {}",
                        self.aws.dag
                    ))
                    .targets(targets)
                    .tags(DAG_TAG, &self.aws.dag)
                    .send()
                    .await
                    .map_err(|e| {
                        TaskFailure::new(format!(
                            "cannot create the Glue crawler {crawler}: {}",
                            error_text(&e)
                        ))
                    })?;
                say(&format!("Glue crawler {crawler} created"));
                Ok(())
            }
            Err(e) => Err(TaskFailure::new(format!(
                "cannot read the Glue crawler {crawler}: {}",
                error_text(&e)
            ))),
        }
    }

    /// Each table of `database` with its last update time.
    async fn tables(&self, database: &str) -> Result<BTreeMap<String, String>, TaskFailure> {
        let mut tables = BTreeMap::new();
        let mut token = None;
        loop {
            let page = self
                .aws
                .glue
                .get_tables()
                .database_name(database)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| {
                    TaskFailure::new(format!(
                        "cannot list the tables of Glue database {database}: {}",
                        error_text(&e)
                    ))
                })?;
            for table in page.table_list() {
                let updated = table
                    .update_time()
                    .or(table.create_time())
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                tables.insert(table.name().to_string(), updated);
            }
            match page.next_token() {
                Some(next) => token = Some(next.to_string()),
                None => break,
            }
        }
        Ok(tables)
    }

    /// Starts the crawl (or finds the one this task started before a
    /// crash) and waits for it to end.
    async fn crawl(&self, attempt: &Attempt, crawler: &str) -> Result<(), TaskFailure> {
        let poll = Poll::from_env(POLL_SECONDS);
        let recorded = attempt.journal.recorded(CRAWL_KEY)?;
        let running = self.state(crawler).await?.0 != CrawlerState::Ready;
        let mut guard = StopOnDrop::new(
            &self.aws,
            format!("Glue crawler {crawler}"),
            "stopped",
            self.aws.glue.stop_crawler().name(crawler).send(),
        );
        if recorded.is_some() && running {
            attempt.progress.change(&format!(
                "reconnected to the crawl of Glue crawler {crawler}"
            ));
        } else {
            if running {
                attempt.progress.change(&format!(
                    "Glue crawler {crawler} is already crawling; waiting for it before starting ours"
                ));
                guard.armed = false;
                self.wait(attempt, crawler, &poll).await.ok();
                guard.armed = true;
            }
            self.aws
                .glue
                .start_crawler()
                .name(crawler)
                .send()
                .await
                .map_err(|e| {
                    TaskFailure::new(format!(
                        "cannot start the Glue crawler {crawler}: {}",
                        error_text(&e)
                    ))
                })?;
            attempt.journal.record(
                CRAWL_KEY,
                &json!({"crawler": crawler, "console": self.link(crawler)}),
            )?;
        }
        let ended = self.wait(attempt, crawler, &poll).await;
        guard.armed = false;
        ended
    }

    /// The crawler's state and its last crawl's status and error.
    async fn state(
        &self,
        crawler: &str,
    ) -> Result<(CrawlerState, Option<String>, Option<String>), TaskFailure> {
        self.aws
            .glue
            .get_crawler()
            .name(crawler)
            .send()
            .await
            .map(|found| state_of(&found))
            .map_err(|e| {
                TaskFailure::new(format!(
                    "cannot ask Glue about crawler {crawler}: {}",
                    error_text(&e)
                ))
            })
    }

    /// Polls until the crawler is ready again; fails unless its last crawl
    /// succeeded.
    async fn wait(&self, attempt: &Attempt, crawler: &str, poll: &Poll) -> Result<(), TaskFailure> {
        let mut last = None;
        let mut throttled_in_a_row = 0;
        loop {
            let (state, status, error) =
                match self.aws.glue.get_crawler().name(crawler).send().await {
                    Ok(found) => {
                        throttled_in_a_row = 0;
                        state_of(&found)
                    }
                    Err(e) if throttled(&e) => {
                        throttled_in_a_row += 1;
                        tokio::time::sleep(poll.delay(throttled_in_a_row)).await;
                        continue;
                    }
                    Err(e) => {
                        return Err(TaskFailure::new(format!(
                            "cannot ask Glue about crawler {crawler}: {}",
                            error_text(&e)
                        )));
                    }
                };
            if last.as_ref() != Some(&state) {
                tracing::info!(
                    target: "flux_engine::trace",
                    { flux.glue.crawler = crawler, flux.glue.state = state.as_str() },
                    "glue.crawler.state"
                );
                attempt
                    .progress
                    .change(&format!("Glue crawler {crawler}: {}", state.as_str()));
                last = Some(state.clone());
            }
            if state == CrawlerState::Ready {
                // Glue says SUCCEEDED, FAILED or CANCELLED (moto says
                // COMPLETED for a success): only the last two fail.
                return match status.as_deref() {
                    Some(other @ ("FAILED" | "CANCELLED")) => Err(TaskFailure::new(format!(
                        "the crawl of Glue crawler {crawler} ended {other}: {} ({})",
                        error.unwrap_or_else(|| "Glue gave no reason".into()),
                        self.link(crawler)
                    ))),
                    _ => Ok(()),
                };
            }
            tokio::time::sleep(poll.delay(0)).await;
        }
    }
}

/// A crawler's state, its last crawl's status and what went wrong.
fn state_of(
    found: &aws_sdk_glue::operation::get_crawler::GetCrawlerOutput,
) -> (CrawlerState, Option<String>, Option<String>) {
    let crawler = found.crawler();
    let state = crawler
        .and_then(|c| c.state())
        .cloned()
        .unwrap_or(CrawlerState::Ready);
    let last = crawler.and_then(|c| c.last_crawl());
    let status = last
        .and_then(|l| l.status())
        .map(|s| s.as_str().to_string());
    let error = last.map(|l| {
        [
            l.error_message().map(str::to_string),
            l.log_group()
                .map(|g| format!("its log: {g} {}", l.log_stream().unwrap_or_default())),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ")
    });
    (state, status, error.filter(|e| !e.is_empty()))
}

/// Targets of another type, kept as they are (`None` for none).
fn kept<T: Clone>(targets: &[T]) -> Option<Vec<T>> {
    (!targets.is_empty()).then(|| targets.to_vec())
}

/// `s3://b/p/` and `s3://b/p` are the same target.
fn same_path(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

fn same_paths(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && b.iter().all(|p| a.iter().any(|q| same_path(p, q)))
}
