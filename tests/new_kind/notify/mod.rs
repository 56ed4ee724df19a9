//! `notify`: publishes `message` to the SNS topic `topic`; locally, the
//! message goes to `messages.log` in the attempt's folder. A kind written
//! the way the README says, outside the `tasks` crate: its config, its
//! local backend here, its Step Functions face in `sfn.rs`.

mod config;
mod sfn;

use std::sync::Arc;

use async_trait::async_trait;
use engine::{Attempt, Kind, TaskAction, TaskFailure};

pub use config::NotifyConfig;

pub struct Notify;

impl Kind for Notify {
    const NAME: &'static str = "notify";
    const SUMMARY: &'static str = "publishes a message to an SNS topic";
    type Config = NotifyConfig;

    fn action(&self, config: NotifyConfig) -> Arc<dyn TaskAction> {
        Arc::new(LocalNotify(config))
    }
}

struct LocalNotify(NotifyConfig);

#[async_trait]
impl TaskAction for LocalNotify {
    async fn run(&self, attempt: &Attempt) -> Result<Option<serde_json::Value>, TaskFailure> {
        std::fs::create_dir_all(&attempt.log_dir)
            .and_then(|()| {
                std::fs::write(
                    attempt.log_dir.join("messages.log"),
                    format!("{}: {}\n", self.0.topic, self.0.message),
                )
            })
            .map_err(|e| TaskFailure::new(format!("cannot write the message: {e}")))?;
        Ok(Some(serde_json::json!({ "topic": self.0.topic })))
    }
}
