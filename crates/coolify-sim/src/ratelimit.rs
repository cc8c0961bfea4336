//! Laravel's `throttle:api`: a fixed one-minute window per authenticated user (here: per token).

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window resets, when the request was refused.
    pub retry_after: Option<u64>,
    /// Unix time (seconds) of the reset.
    pub reset_at: u64,
}

#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: HashMap<String, (u64, u32)>,
}

impl RateLimiter {
    pub fn check(&mut self, key: &str, limit: u32, now_ms: u64) -> Verdict {
        let (start, count) = self.windows.entry(key.to_string()).or_insert((now_ms, 0));
        if now_ms >= *start + 60_000 {
            *start = now_ms;
            *count = 0;
        }
        let reset_ms = *start + 60_000;
        let reset_at = reset_ms.div_ceil(1000);
        if *count >= limit {
            let retry = (reset_ms - now_ms).div_ceil(1000).max(1);
            return Verdict {
                limit,
                remaining: 0,
                retry_after: Some(retry),
                reset_at,
            };
        }
        *count += 1;
        Verdict {
            limit,
            remaining: limit - *count,
            retry_after: None,
            reset_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_fills_and_resets() {
        let mut rl = RateLimiter::default();
        assert_eq!(rl.check("t", 2, 1000).remaining, 1);
        assert_eq!(rl.check("t", 2, 1000).remaining, 0);
        let v = rl.check("t", 2, 31_000);
        assert_eq!(v.retry_after, Some(30));
        assert_eq!(rl.check("other", 2, 31_000).remaining, 1);
        assert_eq!(rl.check("t", 2, 61_000).retry_after, None);
    }
}
