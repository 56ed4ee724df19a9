//! State shapes every task's translation may use: the `Retry` from a
//! retry policy, a `Catch` of every error, `Fail` states, and the
//! intrinsic that gives each execution a location of its own.

use engine::retry::{Jitter, RetryPolicy};

use super::json::{Json, Obj};

/// The `Retry` of a task's state: its retry policy, field for field (see
/// `engine::retry`); `None` when the policy allows one attempt only.
pub fn retriers(policy: &RetryPolicy) -> Option<Json> {
    if policy.max_attempts <= 1 {
        return None;
    }
    let retrier = Obj::new()
        .with("ErrorEquals", vec![Json::from("States.ALL")])
        .with("IntervalSeconds", policy.interval_seconds)
        .with("MaxAttempts", policy.max_attempts - 1)
        .with("BackoffRate", policy.backoff_rate)
        .with_opt("MaxDelaySeconds", policy.max_delay_seconds)
        .with(
            "JitterStrategy",
            match policy.jitter {
                Jitter::Full => "FULL",
                Jitter::None => "NONE",
            },
        );
    Some(vec![Json::from(retrier)].into())
}

/// A `Catch` of every error, keeping the state data (the EMR cluster id
/// is in it) and putting the error beside it.
pub fn catch_all(next: &str) -> Json {
    vec![Json::from(
        Obj::new()
            .with("ErrorEquals", vec![Json::from("States.ALL")])
            .with("ResultPath", "$.error")
            .with("Next", next),
    )]
    .into()
}

pub fn fail(error: &str, cause: &str) -> Obj {
    Obj::new()
        .with("Type", "Fail")
        .with("Error", error)
        .with("Cause", cause)
}

/// A `States.Format` string literal: `'`, `{`, `}` and `\` are escaped
/// with a backslash, as intrinsic functions require.
pub fn format_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '\'' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `PREFIX` + the execution's name + `/`, as an intrinsic: each execution
/// of the state machine writes its query results under a prefix of its
/// own, so the report finds them without passing ids around.
pub fn per_execution(prefix: &str) -> String {
    let prefix = if prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    };
    format!(
        "States.Format('{}{{}}/', $$.Execution.Name)",
        format_literal(&prefix)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_maps_field_for_field() {
        let policy = RetryPolicy {
            max_attempts: 3,
            interval_seconds: 2,
            backoff_rate: 1.5,
            max_delay_seconds: Some(60),
            jitter: Jitter::Full,
        };
        let text = serde_json::to_string(&retriers(&policy).unwrap()).unwrap();
        assert_eq!(
            text,
            r#"[{"ErrorEquals":["States.ALL"],"IntervalSeconds":2,"MaxAttempts":2,"BackoffRate":1.5,"MaxDelaySeconds":60,"JitterStrategy":"FULL"}]"#
        );
        assert!(retriers(&RetryPolicy::default()).is_none());
    }

    #[test]
    fn format_literals_are_escaped() {
        assert_eq!(
            per_execution("s3://b/it's{x}"),
            r"States.Format('s3://b/it\'s\{x\}/{}/', $$.Execution.Name)"
        );
    }
}
