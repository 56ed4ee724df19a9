//! `glue_crawler`: start the crawler, then poll it, since Glue crawlers
//! have no `.sync` integration.
//!
//! The crawler is named `DAG-TASK` (created from the task's fields by the
//! deployment, not by the state machine). The states, inside one
//! `Parallel` named after the task so that the task's `Retry` restarts the
//! whole crawl:
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

use super::json::{Json, Obj};
use super::states::{TaskCtx, Translated, fail};

/// Seconds between polls.
pub const POLL_SECONDS: u64 = 30;

pub fn crawler_name(dag_name: &str, task_id: &str) -> String {
    format!("{dag_name}-{task_id}")
}

pub fn translate(ctx: &TaskCtx) -> Result<Translated, String> {
    let crawler = crawler_name(&ctx.dag.name, ctx.id());
    let interval = ctx
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
    .map(|s| ctx.helper(s));
    let name = Obj::new().with("Name", crawler.as_str());
    let mut choices = vec![Json::from(
        Obj::new()
            .with("Variable", "$.crawl.status.Crawler.State")
            .with("StringEquals", "READY")
            .with("Next", result.as_str()),
    )];
    if let Some(timeout) = ctx.timeout {
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
            ctx.task_state(
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
            ctx.task_state(
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
    if let Some(timeout) = ctx.timeout {
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
    Ok(Translated {
        state: ctx.wrapper(
            format!("{}; Glue crawler `{crawler}`", ctx.comment()),
            states,
        ),
        catches: true,
    })
}
