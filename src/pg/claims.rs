//! Jobs that survive replicas dying: one job per record, claimed with `FOR UPDATE SKIP LOCKED` (replicas
//! never wait on each other's rows), stamped with a claim id and a lease. The holder renews the lease by
//! heartbeat, also while a job waits for Coolify without a worker; a lease that runs out (its replica died
//! or lost the database) makes the job claimable again, and every write of an outcome names the claim id,
//! so the late outcome of a replica that lost its claim changes nothing. NOTIFY wakes idle replicas.
//!
//! The row lock is held only for the claim statement, not for the job: jobs wait minutes for Coolify.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{PgConfig, PgError, TlsMode, rustls_connector};

/// The NOTIFY channel for "a job became due".
pub const CHANNEL: &str = "cf_bridge_jobs";

/// A job this replica holds until `complete`, `retry_at` or its lease runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub job_id: i64,
    /// The fencing token: outcome writes count only with it.
    pub claim_id: String,
    pub collection: String,
    pub record_id: String,
    pub payload: String,
    /// Including this one.
    pub attempts: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The lease ran out and another replica claimed the job (or it was finished): nothing was written.
    #[error("job {job_id}: claim {claim_id} is no longer held")]
    Lost { job_id: i64, claim_id: String },
    #[error(transparent)]
    Db(#[from] PgError),
}

impl From<tokio_postgres::Error> for ClaimError {
    fn from(e: tokio_postgres::Error) -> Self {
        ClaimError::Db(PgError::Query(e))
    }
}

impl From<deadpool_postgres::PoolError> for ClaimError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        ClaimError::Db(e.into())
    }
}

/// The job queue of one replica.
#[derive(Clone)]
pub struct Claims {
    pool: Pool,
    /// Who claims (shown in `claimed_by`: a replica id).
    owner: String,
    lease: Duration,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Claims {
    pub fn new(pool: Pool, owner: &str, lease: Duration) -> Self {
        Claims {
            pool,
            owner: owner.to_string(),
            lease,
        }
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Queues work for a record: a new job, or the record's existing one (a running job is marked dirty
    /// and runs again when its holder finishes, so a change made meanwhile is never lost). Wakes replicas.
    pub async fn enqueue(&self, collection: &str, record_id: &str, payload: &str) -> Result<i64, ClaimError> {
        let row = self
            .pool
            .get()
            .await?
            .query_one(
                "WITH j AS (
                     INSERT INTO jobs (collection, record_id, state, payload)
                     VALUES ($1, $2, 'queued', $3)
                     ON CONFLICT (collection, record_id) DO UPDATE SET
                         payload = EXCLUDED.payload,
                         dirty = jobs.state = 'running',
                         state = CASE WHEN jobs.state = 'running' THEN 'running' ELSE 'queued' END,
                         next_attempt_at = CASE WHEN jobs.state = 'running' THEN jobs.next_attempt_at ELSE now() END,
                         attempts = CASE WHEN jobs.state IN ('succeeded', 'failed') THEN 0 ELSE jobs.attempts END,
                         updated_at = now()
                     RETURNING id
                 )
                 SELECT id, pg_notify($4, '') IS NULL FROM j",
                &[&collection, &record_id, &payload, &CHANNEL],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Claims up to `max` due jobs: queued ones whose time has come and running ones whose lease ran out.
    pub async fn claim(&self, max: i64) -> Result<Vec<Claim>, ClaimError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(
                "WITH due AS (
                     SELECT id FROM jobs
                     WHERE (state = 'queued' AND next_attempt_at <= now())
                        OR (state = 'running' AND lease_until < clock_timestamp())
                     ORDER BY next_attempt_at, id
                     LIMIT $1
                     FOR UPDATE SKIP LOCKED
                 )
                 UPDATE jobs SET
                     state = 'running',
                     claim_id = gen_random_uuid(),
                     claimed_by = $2,
                     lease_until = clock_timestamp() + make_interval(secs => $3),
                     attempts = jobs.attempts + 1,
                     updated_at = now()
                 FROM due WHERE jobs.id = due.id
                 RETURNING jobs.id, jobs.claim_id::text, jobs.collection, jobs.record_id, jobs.payload, jobs.attempts",
                &[&max, &self.owner, &secs(self.lease)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Claim {
                job_id: r.get(0),
                claim_id: r.get(1),
                collection: r.get(2),
                record_id: r.get(3),
                payload: r.get(4),
                attempts: r.get(5),
            })
            .collect())
    }

    /// Renews the lease; `Lost` when the claim is no longer held (stop working on the job).
    pub async fn heartbeat(&self, claim: &Claim) -> Result<(), ClaimError> {
        let n = self
            .pool
            .get()
            .await?
            .execute(
                "UPDATE jobs SET lease_until = clock_timestamp() + make_interval(secs => $3)
                 WHERE id = $1 AND claim_id = $2::text::uuid AND state = 'running'",
                &[&claim.job_id, &claim.claim_id, &secs(self.lease)],
            )
            .await?;
        held(n, claim)
    }

    /// Writes the outcome of a held claim. A job made dirty while it ran is queued again (its latest
    /// change still has to be applied) instead of finishing.
    pub async fn complete(&self, claim: &Claim, succeeded: bool, error: Option<&str>) -> Result<(), ClaimError> {
        let state = if succeeded { "succeeded" } else { "failed" };
        let client = self.pool.get().await?;
        let n = client
            .execute(
                "WITH done AS (
                     UPDATE jobs SET
                         state = CASE WHEN dirty THEN 'queued' ELSE $3 END,
                         next_attempt_at = now(),
                         dirty = FALSE,
                         last_error = $4,
                         claim_id = NULL, claimed_by = NULL, lease_until = NULL,
                         updated_at = now()
                     WHERE id = $1 AND claim_id = $2::text::uuid AND state = 'running'
                     RETURNING state
                 )
                 SELECT pg_notify($5, '') FROM done WHERE state = 'queued'
                 UNION ALL SELECT NULL FROM done WHERE state <> 'queued'",
                &[&claim.job_id, &claim.claim_id, &state, &error, &CHANNEL],
            )
            .await?;
        held(n, claim)
    }

    /// Gives a held claim back to run again at `after` from now (a retry with backoff).
    pub async fn retry_after(&self, claim: &Claim, after: Duration, error: &str) -> Result<(), ClaimError> {
        let n = self
            .pool
            .get()
            .await?
            .execute(
                "UPDATE jobs SET
                     state = 'queued',
                     next_attempt_at = CASE WHEN dirty THEN now() ELSE now() + make_interval(secs => $3) END,
                     dirty = FALSE,
                     last_error = $4,
                     claim_id = NULL, claimed_by = NULL, lease_until = NULL,
                     updated_at = now()
                 WHERE id = $1 AND claim_id = $2::text::uuid AND state = 'running'",
                &[&claim.job_id, &claim.claim_id, &secs(after), &error],
            )
            .await?;
        held(n, claim)
    }

    /// Renews `claim`'s lease every third of the lease until dropped; `lost` is cancelled when the claim is
    /// gone (or cannot be renewed before the lease would run out), so the work stops.
    pub fn keep_alive(&self, claim: &Claim) -> Heartbeat {
        let lost = CancellationToken::new();
        let claims = self.clone();
        let claim = claim.clone();
        let token = lost.clone();
        let task = tokio::spawn(async move {
            let every = claims.lease / 3;
            let mut renewed = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(every).await;
                match claims.heartbeat(&claim).await {
                    Ok(()) => renewed = tokio::time::Instant::now(),
                    Err(ClaimError::Lost { .. }) => break,
                    Err(ClaimError::Db(e)) => {
                        tracing::warn!(job_id = claim.job_id, error = %e, "heartbeat failed");
                        if renewed.elapsed() >= claims.lease {
                            break;
                        }
                    }
                }
            }
            tracing::warn!(job_id = claim.job_id, record_id = %claim.record_id, "claim lost");
            token.cancel();
        });
        Heartbeat { lost, task }
    }
}

fn held(rows: u64, claim: &Claim) -> Result<(), ClaimError> {
    if rows == 1 {
        Ok(())
    } else {
        Err(ClaimError::Lost {
            job_id: claim.job_id,
            claim_id: claim.claim_id.clone(),
        })
    }
}

/// A lease being renewed; stops renewing when dropped.
pub struct Heartbeat {
    pub lost: CancellationToken,
    task: JoinHandle<()>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Wakes idle workers when a job becomes due (LISTEN on its own connection, reconnecting). A wake-up is a
/// hint: workers also poll, so a notification lost while reconnecting only delays.
pub struct Waker {
    notify: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Waker {
    pub fn spawn(cfg: PgConfig, shutdown: &CancellationToken) -> Waker {
        let notify = Arc::new(Notify::new());
        let task = tokio::spawn(listen(cfg, Arc::clone(&notify), shutdown.child_token()));
        Waker { notify, task }
    }

    /// Resolves at the next notification (or reconnect) after this call, even if it is polled later: a
    /// worker takes it before looking for work, then waits on it if it found none.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn listen(cfg: PgConfig, notify: Arc<Notify>, stop: CancellationToken) {
    loop {
        tokio::select! {
            r = listen_once(&cfg, &notify) => if let Err(e) = r {
                tracing::warn!(error = %e, "job wake-ups: LISTEN connection failed; reconnecting");
            },
            () = stop.cancelled() => return,
        }
        // Whatever was notified while the connection was down: look now.
        notify.notify_waiters();
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return,
        }
    }
}

async fn listen_once(cfg: &PgConfig, notify: &Notify) -> Result<(), PgError> {
    let driver = cfg.driver_config();
    let failed = |error| PgError::Connect {
        target: cfg.redacted(),
        error,
    };
    // LISTEN needs the connection's messages, so this connection is driven here, not by `connect`'s task.
    match &cfg.tls {
        TlsMode::Disable => {
            let (client, conn) = driver.connect(tokio_postgres::NoTls).await.map_err(failed)?;
            listen_on(client, conn, notify).await
        }
        TlsMode::VerifyFull { root_cert } => {
            let tls = rustls_connector(root_cert.as_deref())?;
            let (client, conn) = driver.connect(tls).await.map_err(failed)?;
            listen_on(client, conn, notify).await
        }
    }
}

async fn listen_on<S, T>(
    client: tokio_postgres::Client,
    mut conn: tokio_postgres::Connection<S, T>,
    notify: &Notify,
) -> Result<(), PgError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt as _;
    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    let sql = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&sql);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            r = &mut listen, if !listening => {
                r?;
                listening = true;
                // Jobs queued before LISTEN took effect: look now.
                notify.notify_waiters();
            }
            m = messages.next() => match m {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => notify.notify_waiters(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(PgError::Query(e)),
                None => return Ok(()),
            }
        }
    }
}
