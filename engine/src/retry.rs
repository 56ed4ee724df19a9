//! When a failed task is tried again, and how long the engine waits first.
//!
//! The rules are Amazon States Language's `Retry` rules, field for field, so
//! that a DAG exported to Step Functions retries exactly as it does here:
//! `max_attempts` counts every attempt including the first (Step Functions'
//! `MaxAttempts` is `max_attempts - 1`), and the delay before retry `n`
//! (n = 1 for the first retry) is `min(interval × backoff_rate^(n-1), max_delay)`,
//! with `jitter = "full"` drawing uniformly from `[0, delay]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Step Functions' own defaults for a `Retry` field that is left out.
pub const DEFAULT_INTERVAL_SECONDS: u64 = 1;
pub const DEFAULT_BACKOFF_RATE: f64 = 2.0;
/// Step Functions caps `IntervalSeconds`, `MaxAttempts` and `MaxDelaySeconds` here.
pub const STEP_FUNCTIONS_LIMIT: u64 = 99_999_999;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// The computed delay, exactly.
    None,
    /// A uniform draw from zero to the computed delay (AWS "full jitter").
    Full,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub interval_seconds: u64,
    pub backoff_rate: f64,
    pub max_delay_seconds: Option<u64>,
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    /// No retry: one attempt.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            interval_seconds: DEFAULT_INTERVAL_SECONDS,
            backoff_rate: DEFAULT_BACKOFF_RATE,
            max_delay_seconds: None,
            jitter: Jitter::None,
        }
    }
}

impl RetryPolicy {
    /// Whether attempt number `attempt` (1-based) may be followed by another.
    pub fn allows_another(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The delay before retry `retry` (1 for the first retry), before jitter.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(i32::MAX as u32) as i32;
        let seconds = self.interval_seconds as f64 * self.backoff_rate.powi(exponent);
        let capped = match self.max_delay_seconds {
            Some(max) => seconds.min(max as f64),
            None => seconds,
        };
        // An uncapped exponential can exceed what a Duration holds; clamp to
        // Step Functions' own ceiling rather than overflow.
        Duration::from_secs_f64(capped.clamp(0.0, STEP_FUNCTIONS_LIMIT as f64))
    }

    /// The delay before retry `retry`, with jitter applied using `unit`, a
    /// number drawn uniformly from [0, 1].
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let base = self.base_delay(retry);
        match self.jitter {
            Jitter::None => base,
            Jitter::Full => base.mul_f64(unit.clamp(0.0, 1.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(interval: u64, rate: f64, max_delay: Option<u64>) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            interval_seconds: interval,
            backoff_rate: rate,
            max_delay_seconds: max_delay,
            jitter: Jitter::None,
        }
    }

    #[test]
    fn delays_grow_geometrically_and_stop_at_the_cap() {
        let p = policy(2, 2.0, Some(60));
        let seconds: Vec<u64> = (1..=7).map(|n| p.base_delay(n).as_secs()).collect();
        // 2·2^(n-1): 2, 4, 8, 16, 32, then capped at 60.
        assert_eq!(seconds, vec![2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn fractional_backoff_rates_are_exact() {
        let p = policy(3, 1.5, None);
        assert_eq!(p.base_delay(1), Duration::from_secs(3));
        assert_eq!(p.base_delay(2), Duration::from_millis(4500));
        assert_eq!(p.base_delay(3), Duration::from_millis(6750));
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_delay() {
        let mut p = policy(10, 2.0, None);
        p.jitter = Jitter::Full;
        assert_eq!(p.delay(2, 0.0), Duration::ZERO);
        assert_eq!(p.delay(2, 1.0), Duration::from_secs(20));
        assert_eq!(p.delay(2, 0.25), Duration::from_secs(5));
    }

    #[test]
    fn huge_exponents_do_not_overflow() {
        let p = policy(1, 10.0, None);
        assert_eq!(
            p.base_delay(u32::MAX),
            Duration::from_secs(STEP_FUNCTIONS_LIMIT)
        );
    }

    #[test]
    fn max_attempts_counts_the_first_attempt() {
        let p = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(p.allows_another(1));
        assert!(p.allows_another(2));
        assert!(!p.allows_another(3));
        assert!(!RetryPolicy::default().allows_another(1));
    }
}
