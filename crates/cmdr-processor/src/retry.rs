//! How failing handlers are retried: a bounded number of attempts, each
//! bounded in time, with exponential backoff between them.
//!
//! Key decision: retries are always bounded. After the last attempt the input
//! is settled (a command is rejected with `processing-failed`, a dead letter is
//! written), so one poisonous input can never stall its key forever; and an
//! attempt that hangs is cut at [`RetryPolicy::attempt_timeout`] and counts as
//! failed, so one stuck handler call cannot either.

use std::time::Duration;

/// Attempts a handler gets by default before its input is settled as failed.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Wait before the second attempt by default; doubled for each further attempt.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between two attempts by default.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest one attempt may run by default before it counts as failed.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// A bounded retry schedule: `max_attempts` tries, waiting `initial_backoff`,
/// then twice that, and so on, capped at `max_backoff`; an attempt running
/// longer than `attempt_timeout` is abandoned and counts as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries, the first included. At least 1. Default [`DEFAULT_MAX_ATTEMPTS`].
    pub max_attempts: u32,
    /// Wait after the first failure. Default [`DEFAULT_INITIAL_BACKOFF`].
    pub initial_backoff: Duration,
    /// Cap on any one wait. Default [`DEFAULT_MAX_BACKOFF`].
    pub max_backoff: Duration,
    /// Longest one attempt may run; a longer one is dropped (its future is
    /// no longer polled) and counts as a failed attempt. Default
    /// [`DEFAULT_ATTEMPT_TIMEOUT`].
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
        }
    }
}

impl RetryPolicy {
    /// A policy of `max_attempts` tries (at least 1) starting at `initial_backoff`.
    pub fn new(max_attempts: u32, initial_backoff: Duration) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            initial_backoff,
            ..Self::default()
        }
    }

    /// Sets [`RetryPolicy::max_backoff`].
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// Sets [`RetryPolicy::attempt_timeout`].
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// The wait after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(20);
        self.initial_backoff
            .saturating_mul(1u32 << shift)
            .min(self.max_backoff)
    }

    /// Whether another attempt follows failed attempt number `attempt`.
    pub fn retries_after(&self, attempt: u32) -> bool {
        attempt < self.max_attempts.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p =
            RetryPolicy::new(10, Duration::from_millis(10)).max_backoff(Duration::from_millis(50));
        assert_eq!(p.backoff(1), Duration::from_millis(10));
        assert_eq!(p.backoff(2), Duration::from_millis(20));
        assert_eq!(p.backoff(3), Duration::from_millis(40));
        assert_eq!(p.backoff(4), Duration::from_millis(50));
        assert_eq!(p.backoff(400), Duration::from_millis(50));
        assert!(p.retries_after(9));
        assert!(!p.retries_after(10));
    }
}
