//! `noop`: does nothing and succeeds, optionally passing a fixed `output`
//! downstream. Useful as a join point, a placeholder while a pipeline is
//! sketched, and for measuring the engine's own overhead. It is the
//! equivalent of a Step Functions `Pass` state.
//!
//! ```toml
//! [tasks.all_loaded]
//! type = "noop"
//! depends_on = ["load_a", "load_b"]
//! output = { ready = true }   # optional
//! ```

use std::sync::Arc;

use async_trait::async_trait;
use engine::{Attempt, Kind, TaskAction, TaskConfig, TaskFailure};
use exporters::sfn::json::{Json, Obj};
use exporters::sfn::{StepFunctions, TaskContext, TaskExport};
use serde::Deserialize;

pub struct Noop;

/// A `noop` task's one field.
#[derive(Debug, Clone, Deserialize)]
pub struct NoopConfig {
    /// Passed downstream as the task's output.
    pub output: Option<serde_json::Value>,
}

impl TaskConfig for NoopConfig {}

impl Kind for Noop {
    const NAME: &'static str = "noop";
    const SUMMARY: &'static str =
        "does nothing and succeeds; `output` (optional) is passed downstream";
    type Config = NoopConfig;

    fn action(&self, config: NoopConfig) -> Arc<dyn TaskAction> {
        Arc::new(NoopAction {
            output: config.output,
        })
    }
}

struct NoopAction {
    output: Option<serde_json::Value>,
}

#[async_trait]
impl TaskAction for NoopAction {
    async fn run(&self, _attempt: &Attempt) -> Result<Option<serde_json::Value>, TaskFailure> {
        Ok(self.output.clone())
    }

    /// Nothing happens inside a `noop` attempt that its span could show.
    fn traces_inside(&self) -> bool {
        false
    }
}

/// In Step Functions a `noop` is a `Pass`. Its `output` is not carried:
/// in production nothing downstream reads task outputs from the state
/// data.
impl StepFunctions for Noop {
    type Settings = ();

    fn translate(
        &self,
        task: &TaskContext,
        _config: &NoopConfig,
        _settings: &(),
    ) -> Result<TaskExport, String> {
        Ok(TaskExport::pass(
            Obj::new()
                .with("Type", "Pass")
                .with("Comment", task.comment())
                .with("ResultPath", Json::Null),
        ))
    }
}
