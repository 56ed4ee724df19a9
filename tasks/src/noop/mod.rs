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
use engine::{Attempt, FieldError, Fields, TaskAction, TaskFailure, TaskKind};

pub struct Noop;

impl TaskKind for Noop {
    fn name(&self) -> &'static str {
        "noop"
    }

    fn summary(&self) -> &'static str {
        "does nothing and succeeds; `output` (optional) is passed downstream"
    }

    fn parse(&self, fields: &Fields) -> Result<Arc<dyn TaskAction>, FieldError> {
        let output: Option<serde_json::Value> = fields.optional("output")?;
        Ok(Arc::new(NoopAction { output }))
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
}
