//! The journal on PostgreSQL, for several replicas on one database (DESIGN.md section 7).
//!
//! The same operations as the SQLite journal, with the same meaning, on the tables of migration 2 in
//! `src/pg/migrate.rs` (which mirror `src/journal/schema.rs`). Each `Journal` method asks `Journal::pg()`
//! first and hands the call to the method of the same name here. Transactions that read and then write
//! (dedupe, job upsert, claim) lock the rows they decide on, since replicas write concurrently.

mod admin;
mod deletions;
mod domains;
mod health;
mod ingest;
mod jobs;
mod outbox;
mod replay;
mod retention;
mod sql;
mod state;
mod stats;
mod trace;
mod versions;
pub mod wake;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::JournalError;
use crate::pg::{self, PgConfig};
use sql::db_now_ms;

/// Connections the journal keeps open; each replica holds at most this many.
pub const POOL_SIZE: usize = 8;

/// How long a claim stays valid without a heartbeat; heartbeats come every third of it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// The PostgreSQL side of a [`super::Journal`]; cheap to clone.
#[derive(Clone)]
pub struct PgJournal {
    pool: Pool,
    cfg: PgConfig,
    replica: Arc<Replica>,
}

/// What this replica holds: its claims and their lease. The heartbeat ends when the last handle is dropped.
struct Replica {
    id: String,
    lease_ms: AtomicU64,
    /// Job id -> claim id of the jobs this replica's workers run.
    claims: Mutex<HashMap<i64, String>>,
    /// Wakes the heartbeat when the lease changes.
    lease_changed: Arc<Notify>,
    _stop: DropGuard,
}

impl std::fmt::Debug for PgJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgJournal")
            .field("url", &self.cfg.redacted())
            .field("replica", &self.replica.id)
            .finish()
    }
}

impl PgJournal {
    /// Connects and brings the schema up to date (under the migration lock, so replicas starting
    /// together migrate one after the other). Each open is a replica of its own, with a random id.
    pub async fn open(cfg: &PgConfig) -> Result<PgJournal, JournalError> {
        let (mut client, driver) = pg::connect(cfg).await?;
        let migrated = pg::migrate::migrate(&mut client).await;
        drop(client);
        driver.abort();
        migrated?;
        let stop = CancellationToken::new();
        let lease_changed = Arc::new(Notify::new());
        let journal = PgJournal {
            pool: pg::pool(cfg, POOL_SIZE)?,
            cfg: cfg.clone(),
            replica: Arc::new(Replica {
                id: format!("{:016x}", rand::random::<u64>()),
                lease_ms: AtomicU64::new(DEFAULT_LEASE.as_millis() as u64),
                claims: Mutex::default(),
                lease_changed: Arc::clone(&lease_changed),
                _stop: stop.clone().drop_guard(),
            }),
        };
        tokio::spawn(heartbeat(
            journal.pool.clone(),
            Arc::downgrade(&journal.replica),
            lease_changed,
            stop,
        ));
        Ok(journal)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn config(&self) -> &PgConfig {
        &self.cfg
    }

    /// This replica's id, written as `claimed_by` on the jobs it claims.
    pub fn replica_id(&self) -> &str {
        &self.replica.id
    }

    /// Sets how long a claim stays valid without a heartbeat (claims made from now on; the next heartbeat
    /// renews the others to it).
    pub fn set_lease(&self, lease: Duration) {
        let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(3);
        self.replica.lease_ms.store(ms, Ordering::Relaxed);
        self.replica.lease_changed.notify_one();
    }

    /// Wakes `notify` whenever a job becomes due on any replica (LISTEN/NOTIFY), until `stop` or the
    /// returned waker is dropped.
    pub fn wake_on_jobs(&self, notify: Arc<Notify>, stop: &CancellationToken) -> wake::Waker {
        wake::Waker::spawn(self.cfg.clone(), notify, stop.child_token())
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.replica.lease_ms.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
    }

    /// A pooled connection; the pool reconnects after the server restarts.
    pub(crate) async fn conn(&self) -> Result<deadpool_postgres::Object, JournalError> {
        Ok(self.pool.get().await.map_err(pg::PgError::from)?)
    }

    fn claims(&self) -> std::sync::MutexGuard<'_, HashMap<i64, String>> {
        self.replica.claims.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn hold(&self, job_id: i64, claim_id: String) {
        self.claims().insert(job_id, claim_id);
    }

    fn held(&self, job_id: i64) -> Option<String> {
        self.claims().get(&job_id).cloned()
    }

    fn held_ids(&self) -> Vec<i64> {
        self.claims().keys().copied().collect()
    }

    fn release(&self, job_id: i64) {
        self.claims().remove(&job_id);
    }
}

/// Renews the leases of every claim this replica holds, in one statement every third of the lease, for
/// as long as the replica lives (its jobs may wait for Coolify for minutes, with or without a worker
/// slot). A claim found lost (its lease ran out and another replica took the job) is let go.
async fn heartbeat(pool: Pool, replica: Weak<Replica>, lease_changed: Arc<Notify>, stop: CancellationToken) {
    loop {
        // Not held while sleeping: dropping the last handle must end this task.
        let Some(lease_ms) = replica.upgrade().map(|me| me.lease_ms.load(Ordering::Relaxed)) else {
            return;
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = lease_changed.notified() => continue,
            () = tokio::time::sleep(Duration::from_millis(lease_ms / 3)) => {}
        }
        let Some(me) = replica.upgrade() else { return };
        let held: Vec<(i64, String)> = me
            .claims
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(job, claim)| (*job, claim.clone()))
            .collect();
        if held.is_empty() {
            continue;
        }
        let lease = i64::try_from(me.lease_ms.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        let claim_ids: Vec<&str> = held.iter().map(|(_, c)| c.as_str()).collect();
        let renewed = async {
            let conn = pool.get().await.map_err(pg::PgError::from)?;
            let stmt = conn
                .prepare_cached(concat!(
                    "UPDATE jobs SET lease_until = ",
                    db_now_ms!(),
                    " + $3
                     WHERE state = 'running' AND claimed_by = $1 AND claim_id = ANY($2)
                     RETURNING claim_id"
                ))
                .await?;
            let rows = conn.query(&stmt, &[&me.id, &claim_ids, &lease]).await?;
            Ok::<_, JournalError>(rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>())
        };
        match renewed.await {
            Ok(renewed) => {
                let mut claims = me.claims.lock().unwrap_or_else(PoisonError::into_inner);
                for (job_id, claim) in &held {
                    if !renewed.contains(claim) && claims.get(job_id) == Some(claim) {
                        tracing::warn!(job_id, "claim lost: its lease ran out and another replica took the job");
                        claims.remove(job_id);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, claims = held.len(), "cannot renew this replica's claims"),
        }
    }
}
