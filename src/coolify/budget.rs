//! One token bucket shared by every Coolify call, so the bridge stays under Coolify's per-user limit
//! (200/min by default) however many workers run.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::metrics;

#[derive(Debug)]
pub struct Budget {
    capacity: f64,
    per_sec: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Budget {
    /// `per_minute` refill rate; `burst` bucket size (at least 1).
    pub fn new(per_minute: u32, burst: u32) -> Self {
        let capacity = f64::from(burst.max(1));
        let budget = Self {
            capacity,
            per_sec: f64::from(per_minute.max(1)) / 60.0,
            state: Mutex::new(Bucket {
                tokens: capacity,
                last: Instant::now(),
            }),
        };
        metrics().coolify_budget_remaining.set(capacity);
        budget
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        // A poisoned bucket only holds two numbers; keep using them.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_sec).min(self.capacity);
        b.last = now;
    }

    /// Takes one token if available, otherwise says how long until one will be.
    pub fn try_take(&self) -> Result<(), Duration> {
        let mut b = self.lock();
        self.refill(&mut b, Instant::now());
        let result = if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_sec))
        };
        metrics().coolify_budget_remaining.set(b.tokens);
        result
    }

    /// Waits until a token is available and takes it.
    pub async fn acquire(&self) {
        while let Err(wait) = self.try_take() {
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }

    /// Empties the bucket: used after a 429, since the server's window is evidently spent.
    pub fn drain(&self) {
        let mut b = self.lock();
        b.tokens = 0.0;
        b.last = Instant::now();
        metrics().coolify_budget_remaining.set(0.0);
    }

    pub fn remaining(&self) -> f64 {
        let mut b = self.lock();
        self.refill(&mut b, Instant::now());
        b.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_wait() {
        let b = Budget::new(60, 3);
        for _ in 0..3 {
            assert!(b.try_take().is_ok());
        }
        let wait = b.try_take().unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(b.remaining() < 1.0);
    }

    #[tokio::test]
    async fn acquire_paces_requests() {
        let b = Budget::new(600, 1); // one token per 100 ms
        let start = Instant::now();
        for _ in 0..4 {
            b.acquire().await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(290), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn drain_empties() {
        let b = Budget::new(60, 10);
        b.drain();
        assert!(b.try_take().is_err());
    }
}
