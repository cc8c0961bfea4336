//! Which failures are retried, and after how long.
//!
//! 429 is always retried (the throttle rejects before the controller runs). 5xx and transport errors
//! are retried only for calls that are safe to repeat: a create whose response was lost may have
//! succeeded, so it is returned to the caller, which adopts by name instead.

use std::time::Duration;

use crate::backoff::Backoff;

/// Whether repeating a call after an unknown outcome can do harm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// GET, PATCH, start/stop/restart, DELETE of a service, env bulk upsert.
    Safe,
    /// POST /projects, POST /services: never repeated after a 5xx or a transport error.
    NotRepeatable,
}

/// What came back from one attempt, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    RateLimited {
        retry_after: Option<Duration>,
    },
    ServerError,
    Transport,
    /// Any other response: final.
    Final,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Retry(Duration),
    GiveUp,
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_retries: u32,
    /// How many 429s in a row are waited out before giving up.
    pub max_rate_limited: u32,
    pub base: Duration,
    pub cap: Duration,
    /// Upper bound on an honoured Retry-After.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    pub fn new(max_retries: u32) -> Self {
        Self {
            max_retries,
            max_rate_limited: 10,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(60),
        }
    }

    /// Full-jitter exponential backoff for the given retry number (0-based).
    pub fn backoff(&self, retry: u32) -> Duration {
        Backoff::new(self.base, self.cap).full_jitter(retry)
    }

    /// `failures` counts earlier 5xx/transport retries, `throttled` earlier 429s of this call.
    pub fn decide(&self, idem: Idempotency, outcome: Outcome, failures: u32, throttled: u32) -> Decision {
        match outcome {
            Outcome::Final => Decision::GiveUp,
            Outcome::RateLimited { retry_after } => {
                if throttled >= self.max_rate_limited {
                    return Decision::GiveUp;
                }
                let wait = retry_after.unwrap_or_else(|| self.backoff(throttled).max(Duration::from_secs(1)));
                Decision::Retry(wait.min(self.max_retry_after))
            }
            Outcome::ServerError | Outcome::Transport => {
                if idem == Idempotency::NotRepeatable || failures >= self.max_retries {
                    Decision::GiveUp
                } else {
                    Decision::Retry(self.backoff(failures))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_are_never_repeated_after_unknown_outcome() {
        let p = RetryPolicy::new(5);
        for o in [Outcome::ServerError, Outcome::Transport] {
            assert_eq!(p.decide(Idempotency::NotRepeatable, o, 0, 0), Decision::GiveUp);
            assert!(matches!(p.decide(Idempotency::Safe, o, 0, 0), Decision::Retry(_)));
        }
    }

    #[test]
    fn rate_limit_is_retried_for_any_call_and_bounded() {
        let p = RetryPolicy::new(0);
        let ra = Some(Duration::from_secs(2));
        assert_eq!(
            p.decide(
                Idempotency::NotRepeatable,
                Outcome::RateLimited { retry_after: ra },
                0,
                0
            ),
            Decision::Retry(Duration::from_secs(2))
        );
        let huge = Some(Duration::from_secs(3600));
        assert_eq!(
            p.decide(Idempotency::Safe, Outcome::RateLimited { retry_after: huge }, 0, 0),
            Decision::Retry(Duration::from_secs(60))
        );
        assert_eq!(
            p.decide(Idempotency::Safe, Outcome::RateLimited { retry_after: ra }, 0, 10),
            Decision::GiveUp
        );
    }

    #[test]
    fn retries_stop_at_max_and_backoff_is_capped() {
        let p = RetryPolicy::new(3);
        assert_eq!(p.decide(Idempotency::Safe, Outcome::Transport, 3, 0), Decision::GiveUp);
        assert_eq!(p.decide(Idempotency::Safe, Outcome::Final, 0, 0), Decision::GiveUp);
        for n in 0..40 {
            assert!(p.backoff(n) <= p.cap);
        }
    }
}
