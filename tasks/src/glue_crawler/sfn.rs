//! `glue_crawler` in Step Functions: start the crawler, then poll it,
//! since Glue crawlers have no `.sync` integration.
//!
//! The crawler is named `DAG-TASK`; `export --cfn` creates it from the
//! task's fields (one S3 target per `targets` entry, `DatabaseName`), and
//! the Glue database it fills unless that is `default`. The states, inside
//! one `Parallel` named after the task so that the task's `Retry` restarts
//! the whole crawl:
//!
//! ```text
//! crawl.Start (startCrawler; CrawlerRunningException is retried: a crawl
//!   │          of an earlier execution is still running)
//! crawl.Wait ─→ crawl.Poll (getCrawler) ─→ crawl.Check ─ State READY ─→ crawl.Result
//!   ↑                                          │ polls ≥ timeout / interval ─→ crawl.TimedOut (Fail)
//!   └──────── crawl.Count ←── otherwise ───────┘
//! crawl.Result ─ LastCrawl.Status SUCCEEDED ─→ crawl.Done; otherwise ─→ crawl.CrawlFailed (Fail)
//! ```
//!
//! `timeout_seconds` bounds the number of polls (a Glue crawl has no
//! timeout of its own, and a `Parallel` takes no `TimeoutSeconds`).
//!
//! IAM: `glue:StartCrawler` and `glue:GetCrawler` on each crawler
//! (statement `GlueCrawlers`); the crawler runs as the role the template
//! parameter `GlueCrawlerRoleArn` names. Its `targets` are data the DAG's
//! queries may read, and their bucket the DAG's data bucket.

use exporters::sfn::cfn::{BucketUse, Deployment, LogicalId, Parameter, Resource, reference};
use exporters::sfn::iam::Grant;
use exporters::sfn::json::{Json, Obj};
use exporters::sfn::settings::{AwsSettings, KindSettings};
use exporters::sfn::states::fail;
use exporters::sfn::{StepFunctions, TaskContext, TaskExport};

use super::{GlueCrawler, GlueCrawlerConfig};
use crate::s3::s3_location;

/// Seconds between polls.
pub const POLL_SECONDS: u64 = 30;

pub fn crawler_name(dag_name: &str, task_id: &str) -> String {
    format!("{dag_name}-{task_id}")
}

/// The `[aws]` settings of `glue_crawler` tasks: only a run with
/// `--target aws` reads them (the export's crawler gets its role from the
/// template's `GlueCrawlerRoleArn` parameter).
#[derive(Debug, Clone, Default)]
pub struct GlueSettings {
    /// The role a crawler the run creates assumes.
    pub crawler_role: Option<String>,
}

impl KindSettings for GlueSettings {
    const KEYS: &'static [&'static str] = &["glue_crawler_role"];

    fn read(aws: &mut AwsSettings, _first: Option<&str>) -> Option<GlueSettings> {
        Some(GlueSettings {
            crawler_role: aws.string("glue_crawler_role", None),
        })
    }
}

impl StepFunctions for GlueCrawler {
    type Settings = GlueSettings;

    /// The database and the crawler, created or updated, the crawl, the
    /// tables before and after; passing the crawler's role when the run
    /// may create it.
    fn run_grants(
        &self,
        task: &TaskContext,
        config: &GlueCrawlerConfig,
        settings: &GlueSettings,
    ) -> Vec<Grant> {
        let arns = task.arns();
        let crawler = crawler_name(&task.dag.name, task.id());
        let database = config.database.as_str();
        let mut grants = vec![
            Grant::statement(
                "RunGlueCatalog",
                &["glue:GetDatabase", "glue:CreateDatabase", "glue:GetTables"],
                [
                    arns.arn("glue", "catalog"),
                    arns.arn("glue", &format!("database/{database}")),
                    arns.arn("glue", &format!("table/{database}/*")),
                ],
            ),
            Grant::statement(
                "RunGlueCrawlers",
                &[
                    "glue:GetCrawler",
                    "glue:UpdateCrawler",
                    "glue:StartCrawler",
                    "glue:StopCrawler",
                    "glue:TagResource",
                ],
                [arns.arn("glue", &format!("crawler/{crawler}"))],
            ),
            // CreateCrawler takes no resource but `*`: only with the DAG's tag.
            Grant::statement(
                "RunGlueCreateCrawlerOfThisDag",
                &["glue:CreateCrawler"],
                ["*".to_string()],
            )
            .when(
                "StringEquals",
                "aws:RequestTag/flux-engine:dag",
                task.dag.name.as_str(),
            ),
        ];
        if let Some(role) = &settings.crawler_role {
            grants.push(
                Grant::statement(
                    "RunPassGlueCrawlerRole",
                    &["iam:PassRole"],
                    [arns.role(role)],
                )
                .when("StringEquals", "iam:PassedToService", "glue.amazonaws.com"),
            );
        }
        grants
    }

    fn translate(
        &self,
        task: &TaskContext,
        config: &GlueCrawlerConfig,
        _settings: &GlueSettings,
    ) -> Result<TaskExport, String> {
        let crawler = crawler_name(&task.dag.name, task.id());
        let mut export =
            TaskExport::task(crawl_states(task, &crawler)).with_grants(vec![Grant::statement(
                "GlueCrawlers",
                &["glue:StartCrawler", "glue:GetCrawler"],
                [task.arns().arn("glue", &format!("crawler/{crawler}"))],
            )]);
        export.data = config
            .targets
            .0
            .iter()
            .map(|t| s3_location(&t.as_written_uri()))
            .collect();
        Ok(export)
    }

    fn deployment(
        &self,
        _settings: &GlueSettings,
        tasks: &[(&TaskContext, GlueCrawlerConfig)],
    ) -> Result<Deployment, String> {
        let mut deployment = Deployment::default();
        if tasks.is_empty() {
            return Ok(deployment);
        }
        deployment.parameters.push(Parameter {
            name: "GlueCrawlerRoleArn",
            description: "The ARN of the role the Glue crawlers run as (reads their S3 targets, writes the Glue catalog)",
            default: None,
            configures: "AWS::Glue::Crawler",
        });
        for (task, config) in tasks {
            let dag = &task.dag.name;
            deployment
                .resources
                .extend(database_resource(dag, config.database.as_str()));
            let targets: Vec<Json> = config
                .targets
                .0
                .iter()
                .map(|t| Obj::new().with("Path", t.as_written()).into())
                .collect();
            deployment.resources.push(Resource {
                key: format!("glue-crawler:{}", task.id()),
                logical_id: LogicalId::Derived {
                    prefix: "GlueCrawler",
                    name: task.id().to_string(),
                },
                body: Obj::new().with("Type", "AWS::Glue::Crawler").with(
                    "Properties",
                    Obj::new()
                        .with("Name", crawler_name(dag, task.id()))
                        .with(
                            "Description",
                            format!(
                                "The glue_crawler task {} of the flux-engine DAG {dag}",
                                task.id()
                            ),
                        )
                        .with("Role", reference("GlueCrawlerRoleArn"))
                        .with("DatabaseName", database_ref(config.database.as_str()))
                        .with("Targets", Obj::new().with("S3Targets", targets)),
                ),
                sort_name: None,
                role: None,
            });
            for target in &config.targets.0 {
                deployment.buckets.push((
                    BucketUse::Data,
                    target.as_written_uri().bucket().to_string(),
                ));
            }
        }
        Ok(deployment)
    }
}

/// The Glue database `name` as a template resource (`GlueDatabase` +
/// name), shared by every task that names it; none for `default`, which
/// every account has.
pub(crate) fn database_resource(dag: &str, name: &str) -> Option<Resource> {
    (name != "default").then(|| Resource {
        key: database_key(name),
        logical_id: LogicalId::Derived {
            prefix: "GlueDatabase",
            name: name.to_string(),
        },
        body: Obj::new().with("Type", "AWS::Glue::Database").with(
            "Properties",
            Obj::new()
                .with("CatalogId", reference("AWS::AccountId"))
                .with(
                    "DatabaseInput",
                    Obj::new().with("Name", name).with(
                        "Description",
                        format!("Tables of the flux-engine DAG {dag}"),
                    ),
                ),
        ),
        sort_name: Some(name.to_string()),
        role: None,
    })
}

fn database_key(name: &str) -> String {
    format!("glue-database:{name}")
}

/// The database as a crawler names it: the template's resource, or
/// `default` itself.
fn database_ref(name: &str) -> Json {
    if name == "default" {
        Json::from(name)
    } else {
        reference(&database_key(name))
    }
}

/// The start, the poll loop and the checks, in one `Parallel`.
fn crawl_states(task: &TaskContext, crawler: &str) -> Obj {
    let interval = task
        .timeout
        .map_or(POLL_SECONDS, |t| t.clamp(1, POLL_SECONDS));
    let [
        start,
        wait,
        poll,
        check,
        count,
        result,
        timed_out,
        failed,
        done,
    ] = [
        "Start",
        "Wait",
        "Poll",
        "Check",
        "Count",
        "Result",
        "TimedOut",
        "CrawlFailed",
        "Done",
    ]
    .map(|s| task.helper(s));
    let name = Obj::new().with("Name", crawler);
    let mut choices = vec![Json::from(
        Obj::new()
            .with("Variable", "$.crawl.status.Crawler.State")
            .with("StringEquals", "READY")
            .with("Next", result.as_str()),
    )];
    if let Some(timeout) = task.timeout {
        choices.push(
            Obj::new()
                .with("Variable", "$.crawl.polls")
                .with("NumericGreaterThanEquals", timeout.div_ceil(interval))
                .with("Next", timed_out.as_str())
                .into(),
        );
    }
    let last_status = "$.crawl.status.Crawler.LastCrawl.Status";
    let mut states = vec![
        (
            start,
            task.task_state(
                format!("Starts the Glue crawler `{crawler}`"),
                "arn:aws:states:::aws-sdk:glue:startCrawler",
                name.clone(),
            )
            .with("ResultSelector", Obj::new().with("polls", 0u64))
            .with("ResultPath", "$.crawl")
            .with(
                "Retry",
                vec![Json::from(
                    Obj::new()
                        .with(
                            "ErrorEquals",
                            vec![Json::from("Glue.CrawlerRunningException")],
                        )
                        .with("IntervalSeconds", POLL_SECONDS)
                        .with("MaxAttempts", 20u64)
                        .with("BackoffRate", 1.0),
                )],
            )
            .with("Next", wait.as_str()),
        ),
        (
            wait.clone(),
            Obj::new()
                .with("Type", "Wait")
                .with("Seconds", interval)
                .with("Next", poll.as_str()),
        ),
        (
            poll,
            task.task_state(
                format!("Reads the state of `{crawler}`"),
                "arn:aws:states:::aws-sdk:glue:getCrawler",
                name,
            )
            .with("ResultPath", "$.crawl.status")
            .with("Next", check.as_str()),
        ),
        (
            check,
            Obj::new()
                .with("Type", "Choice")
                .with("Choices", choices)
                .with("Default", count.as_str()),
        ),
        (
            count,
            Obj::new()
                .with("Type", "Pass")
                .with(
                    "Parameters",
                    Obj::new().with("polls.$", "States.MathAdd($.crawl.polls, 1)"),
                )
                .with("ResultPath", "$.crawl")
                .with("Next", wait),
        ),
        (
            result,
            Obj::new()
                .with("Type", "Choice")
                .with(
                    "Choices",
                    vec![
                        // Checked first, so that a crawler that never
                        // crawled fails here rather than on a missing field.
                        Json::from(
                            Obj::new()
                                .with("Variable", last_status)
                                .with("IsPresent", false)
                                .with("Next", failed.as_str()),
                        ),
                        Json::from(
                            Obj::new()
                                .with("Variable", last_status)
                                .with("StringEquals", "SUCCEEDED")
                                .with("Next", done.as_str()),
                        ),
                    ],
                )
                .with("Default", failed.as_str()),
        ),
    ];
    if let Some(timeout) = task.timeout {
        states.push((
            timed_out.clone(),
            fail(
                &timed_out,
                &format!(
                    "the Glue crawler `{crawler}` ran longer than the task's timeout_seconds ({timeout} s)"
                ),
            ),
        ));
    }
    states.push((
        failed.clone(),
        fail(
            &failed,
            &format!("the last crawl of the Glue crawler `{crawler}` did not succeed (FAILED or CANCELLED)"),
        ),
    ));
    states.push((done, Obj::new().with("Type", "Succeed")));
    task.wrapper(
        format!("{}; Glue crawler `{crawler}`", task.comment()),
        states,
    )
}
