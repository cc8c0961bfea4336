//! The Coolify budget shared by every replica: one token bucket in a PostgreSQL row. Each take is one
//! `UPDATE ... RETURNING` that refills by the time elapsed since the last take and takes a token if one is
//! there, so replicas together stay within `coolify.requests_per_minute` (plus the burst) however many
//! there are. The same calls as [`crate::coolify::budget::Budget`], async because the bucket is remote.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;

pub use crate::coolify::budget::Priority;

use super::PgError;

/// `tokens` refilled by the seconds since `updated_at`, never beyond the capacity. One clock per statement
/// (`statement_timestamp()`, read before any wait for the row lock), so `updated_at` only moves forward
/// and no interval is refilled twice: a statement that waited sees no time elapsed (conservative).
const AVAILABLE: &str = "LEAST($2::float8, tokens + GREATEST(0, EXTRACT(EPOCH FROM statement_timestamp() - updated_at))::float8 * $3::float8)";

#[derive(Debug)]
pub struct SharedBudget {
    pool: Pool,
    name: String,
    capacity: f64,
    per_sec: f64,
    take_sql: String,
    urgent_waiting: AtomicUsize,
    /// Shows the tokens left for every replica as of this replica's last take.
    gauge: Option<prometheus::Gauge>,
}

impl SharedBudget {
    /// `per_minute` refill rate and `burst` bucket size (at least 1), as the in-process budget.
    pub async fn new(pool: Pool, per_minute: u32, burst: u32) -> Result<Self, PgError> {
        Self::with_window(pool, "coolify", per_minute, burst, Duration::from_secs(60)).await
    }

    /// `limit` tokens per `window` (tests scale the minute down); `name` keeps separate buckets apart.
    pub async fn with_window(
        pool: Pool,
        name: &str,
        limit: u32,
        burst: u32,
        window: Duration,
    ) -> Result<Self, PgError> {
        let budget = SharedBudget {
            pool,
            name: name.to_string(),
            capacity: f64::from(burst.max(1)),
            per_sec: f64::from(limit.max(1)) / window.as_secs_f64().max(0.001),
            take_sql: format!(
                "UPDATE token_buckets SET
                     tokens = {AVAILABLE} - CASE WHEN {AVAILABLE} >= 1 THEN 1 ELSE 0 END,
                     last_taken = {AVAILABLE} >= 1,
                     updated_at = GREATEST(updated_at, statement_timestamp())
                 WHERE name = $1
                 RETURNING last_taken, tokens"
            ),
            urgent_waiting: AtomicUsize::new(0),
            gauge: None,
        };
        // The first replica fills the bucket; the others join it as it is.
        budget
            .pool
            .get()
            .await?
            .execute(
                "INSERT INTO token_buckets (name, tokens, updated_at) VALUES ($1, $2, statement_timestamp())
                 ON CONFLICT (name) DO NOTHING",
                &[&budget.name, &budget.capacity],
            )
            .await?;
        Ok(budget)
    }

    /// Shows the tokens left on `gauge` (`coolify_budget_remaining`) after each take.
    pub fn with_gauge(mut self, gauge: prometheus::Gauge) -> Self {
        self.gauge = Some(gauge);
        self
    }

    /// Takes one token if available, otherwise says how long until one will be.
    pub async fn try_take(&self) -> Result<Result<(), Duration>, PgError> {
        let row = self
            .pool
            .get()
            .await?
            .query_one(&self.take_sql, &[&self.name, &self.capacity, &self.per_sec])
            .await?;
        let (taken, tokens): (bool, f64) = (row.get(0), row.get(1));
        if let Some(g) = &self.gauge {
            g.set(tokens);
        }
        Ok(if taken {
            Ok(())
        } else {
            Err(Duration::from_secs_f64(((1.0 - tokens) / self.per_sec).max(0.0)))
        })
    }

    /// Waits until a token is available and takes it. Urgent calls go first among this replica's callers.
    pub async fn acquire(&self, priority: Priority) -> Result<(), PgError> {
        let urgent = priority == Priority::Urgent;
        // Counted down on drop too: a cancelled urgent wait must not hold normal calls back forever.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _waiting = urgent.then(|| {
            self.urgent_waiting.fetch_add(1, Ordering::SeqCst);
            Waiting(&self.urgent_waiting)
        });
        loop {
            let wait = if !urgent && self.urgent_waiting.load(Ordering::SeqCst) > 0 {
                Duration::from_millis(5)
            } else {
                match self.try_take().await? {
                    Ok(()) => return Ok(()),
                    Err(wait) => wait,
                }
            };
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }

    /// Empties the bucket for every replica (Coolify answered 429: its own count is ahead of ours).
    pub async fn drain(&self) -> Result<(), PgError> {
        self.pool
            .get()
            .await?
            .execute(
                "UPDATE token_buckets SET tokens = 0, updated_at = GREATEST(updated_at, statement_timestamp())
                 WHERE name = $1",
                &[&self.name],
            )
            .await?;
        Ok(())
    }

    /// The bucket's size: the most tokens it holds.
    pub fn capacity(&self) -> f64 {
        self.capacity
    }

    /// The tokens left now, all replicas together.
    pub async fn remaining(&self) -> Result<f64, PgError> {
        let row = self
            .pool
            .get()
            .await?
            .query_one(
                &format!("SELECT {AVAILABLE} FROM token_buckets WHERE name = $1"),
                &[&self.name, &self.capacity, &self.per_sec],
            )
            .await?;
        Ok(row.get(0))
    }
}
