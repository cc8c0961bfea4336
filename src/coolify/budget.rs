//! One token bucket shared by every Coolify call, so the bridge stays under Coolify's per-user limit
//! (200/min by default) however many workers run.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prometheus::Gauge;
use tokio::sync::Notify;

tokio::task_local! {
    /// The age of the job a call is made for: when its oldest pending event arrived (ms UTC).
    static JOB_AGE: i64;
}

/// Runs `f` as the work of a job whose oldest pending event arrived at `age_ms`: when the budget is
/// short, its calls wait behind those of older jobs only, so a burst finishes in arrival order rather
/// than every job getting a share and all finishing late.
/// A plain function, not `async`: an async one would hold `f` twice, as its argument and in the scope.
pub fn for_job<F: Future>(age_ms: i64, f: F) -> impl Future<Output = F::Output> {
    JOB_AGE.scope(age_ms, f)
}

/// A waiting normal call's place: its job's age, then its arrival.
type Place = (i64, u64);

/// How long a call that is not first in line sleeps before it looks again if no wake-up reaches it.
const RECHECK: Duration = Duration::from_millis(50);

/// Which call goes first when the budget is short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Normal,
    /// Status reads that let started work finish: while one waits, normal calls hold back, so a burst of
    /// new work cannot starve the reads that complete what is in flight.
    Urgent,
}

#[derive(Debug)]
pub struct Budget {
    capacity: f64,
    per_sec: f64,
    state: Mutex<Bucket>,
    urgent_waiting: AtomicUsize,
    /// Normal calls waiting for a token, oldest job first; only the first takes one.
    line: Mutex<BTreeSet<Place>>,
    arrivals: AtomicU64,
    /// Wakes the waiting calls when the first in line changed.
    turn: Notify,
    /// Shows the tokens left (`coolify_budget_remaining`).
    gauge: Gauge,
}

/// Takes a call's place out of the line however its wait ends (a cancelled call must not block it).
struct InLine<'a> {
    budget: &'a Budget,
    place: Place,
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        let mut line = self.budget.line.lock().unwrap_or_else(|p| p.into_inner());
        line.remove(&self.place);
        drop(line);
        self.budget.turn.notify_waiters();
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Budget {
    /// `per_minute` refill rate; `burst` bucket size (at least 1); `gauge` shows what is left.
    pub fn new(per_minute: u32, burst: u32, gauge: Gauge) -> Self {
        let capacity = f64::from(burst.max(1));
        let budget = Self {
            capacity,
            per_sec: f64::from(per_minute.max(1)) / 60.0,
            state: Mutex::new(Bucket {
                tokens: capacity,
                last: Instant::now(),
            }),
            urgent_waiting: AtomicUsize::new(0),
            line: Mutex::new(BTreeSet::new()),
            arrivals: AtomicU64::new(0),
            turn: Notify::new(),
            gauge,
        };
        budget.gauge.set(capacity);
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
        self.gauge.set(b.tokens);
        result
    }

    /// Waits until a token is available and takes it.
    pub async fn acquire(&self, priority: Priority) {
        if priority == Priority::Urgent {
            // Counted down on drop too: a cancelled urgent wait must not hold normal calls back forever.
            struct Waiting<'a>(&'a AtomicUsize);
            impl Drop for Waiting<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            self.urgent_waiting.fetch_add(1, Ordering::SeqCst);
            let _waiting = Waiting(&self.urgent_waiting);
            while let Err(wait) = self.try_take() {
                tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
            }
            return;
        }
        let urgent_first = || self.urgent_waiting.load(Ordering::SeqCst) > 0;
        if self.line_lock().is_empty() && !urgent_first() && self.try_take().is_ok() {
            return;
        }
        // Calls made outside any job (start-up, the orphan scan) queue as a job that arrived now.
        let age = JOB_AGE
            .try_with(|age| *age)
            .unwrap_or_else(|_| chrono::Utc::now().timestamp_millis());
        let place = (age, self.arrivals.fetch_add(1, Ordering::SeqCst));
        self.line_lock().insert(place);
        let _in_line = InLine { budget: self, place };
        loop {
            let turn = self.turn.notified();
            tokio::pin!(turn);
            turn.as_mut().enable();
            let first = self.line_lock().first() == Some(&place);
            if !first {
                let _ = tokio::time::timeout(RECHECK, turn).await;
                continue;
            }
            let taken = if urgent_first() {
                Err(Duration::from_millis(5))
            } else {
                self.try_take()
            };
            match taken {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait.max(Duration::from_millis(1))).await,
            }
        }
    }

    fn line_lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<Place>> {
        self.line.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn drain(&self) {
        let mut b = self.lock();
        b.tokens = 0.0;
        b.last = Instant::now();
        self.gauge.set(0.0);
    }

    /// The bucket's size: the most tokens it holds.
    pub fn capacity(&self) -> f64 {
        self.capacity
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

    fn gauge() -> Gauge {
        crate::metrics::Metrics::new().coolify_budget_remaining
    }

    #[test]
    fn a_job_scope_holds_the_job_once() {
        let job = async {
            let held = [1u8; 4096];
            tokio::task::yield_now().await;
            held.len()
        };
        let size = std::mem::size_of_val(&job);
        let scoped = std::mem::size_of_val(&for_job(0, job));
        assert!(scoped < size + 256, "{scoped} bytes for a job of {size}");
    }

    #[tokio::test]
    async fn urgent_calls_go_first_and_a_cancelled_one_releases_its_claim() {
        use std::sync::Arc;
        let b = Arc::new(Budget::new(600, 1, gauge())); // one token every 100 ms
        b.acquire(Priority::Normal).await;
        // Many normal callers are already waiting when an urgent one arrives: it still gets the next token.
        let normals: Vec<_> = (0..5)
            .map(|_| {
                let b = Arc::clone(&b);
                tokio::spawn(async move { b.acquire(Priority::Normal).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let urgent = {
            let b = Arc::clone(&b);
            tokio::spawn(async move { b.acquire(Priority::Urgent).await })
        };
        tokio::time::sleep(Duration::from_millis(130)).await;
        assert!(urgent.is_finished(), "the urgent call took the first token");
        assert_eq!(normals.iter().filter(|h| h.is_finished()).count(), 0);
        // An urgent wait dropped half-way must not block normal calls.
        let cancelled = tokio::time::timeout(Duration::from_millis(10), b.acquire(Priority::Urgent)).await;
        assert!(cancelled.is_err());
        assert_eq!(b.urgent_waiting.load(Ordering::SeqCst), 0);
        for h in normals {
            tokio::time::timeout(Duration::from_secs(2), h)
                .await
                .expect("normal calls proceed")
                .expect("join");
        }
    }

    #[tokio::test]
    async fn the_oldest_job_gets_the_next_token() {
        use std::sync::Arc;
        let b = Arc::new(Budget::new(600, 1, gauge())); // one token every 100 ms
        b.acquire(Priority::Normal).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        // Jobs arrive youngest first; their calls must still go oldest first.
        let mut calls = Vec::new();
        for age in [50_i64, 40, 30, 20, 10] {
            let (b, order) = (Arc::clone(&b), Arc::clone(&order));
            calls.push(tokio::spawn(for_job(age, async move {
                b.acquire(Priority::Normal).await;
                order.lock().unwrap().push(age);
            })));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for c in calls {
            tokio::time::timeout(Duration::from_secs(3), c)
                .await
                .expect("every call gets its token")
                .expect("join");
        }
        assert_eq!(*order.lock().unwrap(), vec![10, 20, 30, 40, 50]);
        assert!(b.line_lock().is_empty());
    }

    #[test]
    fn burst_then_wait() {
        let b = Budget::new(60, 3, gauge());
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
        let b = Budget::new(600, 1, gauge()); // one token per 100 ms
        let start = Instant::now();
        for _ in 0..4 {
            b.acquire(Priority::Normal).await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(290), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn drain_empties() {
        let b = Budget::new(60, 10, gauge());
        b.drain();
        assert!(b.try_take().is_err());
    }
}
