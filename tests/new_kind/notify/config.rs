//! A `notify` task's fields.

use engine::{FieldError, TaskConfig};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct NotifyConfig {
    /// The topic's name.
    pub topic: String,
    pub message: String,
}

impl TaskConfig for NotifyConfig {
    fn check(&self) -> Result<(), FieldError> {
        if !self
            .topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(FieldError::field(
                "topic",
                format!("`topic` `{}` is not an SNS topic name", self.topic),
            ));
        }
        Ok(())
    }
}
