//! Exponential backoff: the one formula behind every wait between tries (job retries, Coolify call
//! retries, realtime reconnects, polls for an asynchronous delete).

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first try.
    pub base: Duration,
    /// No ceiling exceeds this.
    pub cap: Duration,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap }
    }

    /// The ceiling of try `n` (0-based): `base * 2^n`, at most `cap`.
    pub fn ceiling(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Full jitter: uniform in `[0, ceiling(n)]`, so that the retries of many callers spread out.
    pub fn full_jitter(&self, n: u32) -> Duration {
        let ms = u64::try_from(self.ceiling(n).as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=ms))
    }

    /// Equal jitter: uniform in `[ceiling(n) / 2, ceiling(n)]` and never below `base`, for a single caller
    /// that must not retry at once (a reconnect).
    pub fn equal_jitter(&self, n: u32) -> Duration {
        self.ceiling(n)
            .mul_f64(rand::rng().random_range(0.5..=1.0))
            .max(self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap_and_jitter_stays_below_them() {
        let b = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        assert_eq!(b.ceiling(0), Duration::from_millis(200));
        assert_eq!(b.ceiling(3), Duration::from_millis(1600));
        assert_eq!(b.ceiling(5), Duration::from_secs(5));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(5));
        for n in 0..40 {
            assert!(b.full_jitter(n) <= b.ceiling(n));
            let e = b.equal_jitter(n);
            assert!(e >= b.base && e >= b.ceiling(n) / 2 && e <= b.ceiling(n), "{n}: {e:?}");
        }
    }
}
