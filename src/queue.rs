//! The dispatcher: claims due jobs from the journal and runs them through the handler, one worker per
//! record (the journal's claim guarantees it), at most `concurrency` at once, with retries.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::instrument::WithSubscriber;

use crate::backoff::Backoff;
use crate::config::QueueSettings;
use crate::journal::{Change, ClaimedJob, Journal, JournalError, RunRecord, now_ms};
use crate::metrics::Metrics;
use prometheus::IntGauge;

/// What the dispatcher does with a failed job; the handler decides it from the error's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorPolicy {
    /// Worth retrying with backoff (network, Coolify busy, ...), until `queue.max_attempts`.
    Retry,
    /// Retrying cannot help until the record changes (invalid spec, over quota, ...): park the job.
    WaitForChange,
    /// Retrying cannot help at all: the job is dead at once (replay it once the cause is fixed).
    Dead,
    /// A dependency (PocketBase, Coolify) is unavailable: retry without using up an attempt, however
    /// long the outage (the dispatcher's gate holds claims meanwhile).
    WaitForDependency,
    /// The run gave way to a newer change of its record: run again at once, covering it too, without
    /// using up an attempt (its events stay queued).
    RunAgain,
}

/// A run's result: on success, where it left its record, recorded with the job's completion.
pub type JobFuture<'a, E> = Pin<Box<dyn Future<Output = Result<Option<RunRecord>, E>> + Send + 'a>>;

tokio::task_local! {
    static SLOT: Arc<WorkerSlot>;
    static JOB: JobTag;
}

/// The job a task runs for, so that work deep in the handler (a Coolify call) knows its record.
#[derive(Debug, Clone)]
pub struct JobTag {
    pub job_id: i64,
    pub record_id: String,
}

/// The job the current task runs for; `None` outside a queue job (poller, scanner, resync, admin API).
pub fn current_job() -> Option<JobTag> {
    JOB.try_with(Clone::clone).ok()
}

/// The worker slot a running job holds, so that a job waiting on something slow can give it back.
struct WorkerSlot {
    sem: Arc<Semaphore>,
    permit: std::sync::Mutex<Option<Held>>,
    /// Slots a job coming back from a wait may take (see [`reserved_for_claims`]).
    rejoin: Arc<Semaphore>,
    notify: Arc<Notify>,
    /// Places for jobs waiting without a slot (`queue.max_waiting`).
    waits: Arc<Semaphore>,
    /// Counts jobs waiting without a slot (`jobs_waiting`).
    waiting: IntGauge,
}

/// A worker slot held, with the right to hold it that a job coming back from a wait also needs.
struct Held {
    _slot: OwnedSemaphorePermit,
    _rejoined: Option<OwnedSemaphorePermit>,
}

/// Slots that jobs coming back from a wait never take, so that a change claimed from the journal starts
/// at once even when a status round wakes many waiting jobs together (they queue for the rest, fairly).
/// Measured: with every slot open to them, 50 starts woken by one round held all 32 slots while their
/// write-backs queued for PocketBase, and a new change waited up to 40 ms for a slot.
fn reserved_for_claims(concurrency: usize) -> usize {
    concurrency / 4
}

/// Runs `wait` without holding a worker slot, then takes a slot again before returning. For waits that
/// need no work from the bridge (a Coolify service starting, an async delete): a burst of such waits
/// must not hold up other records' jobs. The job still owns its record while it waits, so no second
/// worker runs it. With `queue.max_waiting` jobs already waiting so, or outside a queue job, it simply
/// runs `wait`: every waiting job is held in memory, a queued one only in the journal.
pub fn without_slot<F: Future>(wait: F) -> impl Future<Output = F::Output> {
    // Boxed before the call: an async fn's future holds its argument and, apart, the same value awaited.
    slotless(Box::pin(wait))
}

async fn slotless<F: Future>(wait: Pin<Box<F>>) -> F::Output {
    let released = SLOT
        .try_with(|slot| {
            let place = Arc::clone(&slot.waits).try_acquire_owned().ok()?;
            let permit = slot.permit.lock().unwrap_or_else(|p| p.into_inner()).take();
            permit.map(|p| {
                drop(p);
                slot.notify.notify_one();
                (
                    Arc::clone(&slot.sem),
                    Arc::clone(&slot.rejoin),
                    slot.waiting.clone(),
                    place,
                )
            })
        })
        .ok()
        .flatten();
    let Some((sem, rejoin, waiting, place)) = released else {
        return wait.await;
    };
    waiting.inc();
    let out = wait.await;
    waiting.dec();
    // The semaphores are never closed; without a permit the job would only run over the limit.
    let rejoined = rejoin.acquire_owned().await.ok();
    let permit = sem.acquire_owned().await.ok().map(|slot| Held {
        _slot: slot,
        _rejoined: rejoined,
    });
    let _ = SLOT.try_with(|slot| *slot.permit.lock().unwrap_or_else(|p| p.into_inner()) = permit);
    // Given up only now: a job waiting for a slot again is still in memory.
    drop(place);
    out
}

/// Does the work for one claimed job (the reconciler).
pub trait JobHandler: Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;

    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> JobFuture<'a, Self::Error>;

    /// How a failure of `handle` is treated.
    fn error_policy(&self, error: &Self::Error) -> ErrorPolicy;
}

/// Longest sleep between looks at the journal when nothing pokes the notifier.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long in-flight jobs get to finish after a shutdown is asked for before they are abandoned.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(20);

/// How often the job-state gauges are refreshed from the journal.
const GAUGE_PERIOD: Duration = Duration::from_secs(5);
/// Tries to record a job's outcome before leaving it for `resume_on_start`.
const RECORD_TRIES: u32 = 3;

/// The exponential ceiling for the retry after attempt `attempt` (1-based): base * 2^(attempt-1),
/// capped at `max_backoff`.
pub fn backoff_cap(cfg: &QueueSettings, attempt: u32) -> Duration {
    retry_backoff(cfg).ceiling(attempt.saturating_sub(1))
}

/// Full jitter: a uniform delay in [0, cap], so retries of many records spread out.
pub fn backoff_delay(cfg: &QueueSettings, attempt: u32) -> Duration {
    retry_backoff(cfg).full_jitter(attempt.saturating_sub(1))
}

fn retry_backoff(cfg: &QueueSettings) -> Backoff {
    Backoff::new(cfg.base_backoff, cfg.max_backoff)
}

pub struct Dispatcher<H> {
    journal: Journal,
    metrics: Arc<Metrics>,
    handler: Arc<H>,
    cfg: QueueSettings,
    poll_interval: Duration,
    notify: Arc<Notify>,
    /// While it reads false (a dependency is down) no job is claimed.
    gate: Option<watch::Receiver<bool>>,
}

/// Aborts the handler task if the worker is dropped (shutdown past the drain deadline).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The job's fate once the handler returned.
enum Outcome {
    Succeeded(Option<RunRecord>),
    Retry { error: String, at: i64 },
    Dead { error: String },
    Deferred { error: String },
    Unavailable { error: String, at: i64 },
    Superseded { error: String },
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Succeeded(_) => "succeeded",
            Outcome::Retry { .. } => "retry",
            Outcome::Dead { .. } => "dead",
            Outcome::Deferred { .. } => "failed",
            Outcome::Unavailable { .. } => "unavailable",
            Outcome::Superseded { .. } => "superseded",
        }
    }

    fn error(&self) -> Option<&str> {
        match self {
            Outcome::Succeeded(_) => None,
            Outcome::Retry { error, .. }
            | Outcome::Dead { error }
            | Outcome::Deferred { error }
            | Outcome::Unavailable { error, .. }
            | Outcome::Superseded { error } => Some(error),
        }
    }

    async fn record(&self, journal: &Journal, job_id: i64) -> Result<(), JournalError> {
        match self {
            Outcome::Succeeded(record) => journal.complete(job_id, record.clone()).await,
            Outcome::Retry { error, at } => journal.fail(job_id, error, Some(*at)).await,
            Outcome::Dead { error } => journal.fail(job_id, error, None).await,
            Outcome::Deferred { error } => journal.defer(job_id, error).await,
            Outcome::Unavailable { error, at } => journal.wait_for_dependency(job_id, error, *at).await,
            Outcome::Superseded { error } => journal.supersede(job_id, error).await,
        }
    }
}

fn panic_message(e: JoinError) -> String {
    if !e.is_panic() {
        return "the handler task was cancelled".into();
    }
    let payload = e.into_panic();
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".into());
    format!("the handler panicked: {text}")
}

async fn refresh_gauges(journal: &Journal, metrics: &Metrics) {
    match journal.job_counts().await {
        Ok(counts) => {
            for (state, n) in counts {
                metrics.jobs.with_label_values(&[state.as_str()]).set(n);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read job counts for the metrics"),
    }
}

async fn run_job<H: JobHandler>(
    journal: Journal,
    metrics: Arc<Metrics>,
    handler: Arc<H>,
    cfg: Arc<QueueSettings>,
    job: ClaimedJob,
    slot: WorkerSlot,
) {
    let started = Instant::now();
    // The slot is held until the outcome is recorded, so a freed slot means a finished job.
    let slot = Arc::new(slot);
    let mut task = AbortOnDrop(tokio::spawn(
        {
            let job = job.clone();
            let handler = Arc::clone(&handler);
            let tag = JobTag {
                job_id: job.job_id,
                record_id: job.record_id.clone(),
            };
            SLOT.scope(
                Arc::clone(&slot),
                JOB.scope(tag, async move { handler.handle(&job).await }),
            )
        }
        // The job's span goes along, so the handler's Coolify and PocketBase calls belong to its trace.
        .instrument(tracing::Span::current())
        .with_current_subscriber(),
    ));
    // The handler runs in its own task so that a panic ends only that task; a panic is retried.
    let result = match (&mut task.0).await {
        Ok(Ok(record)) => Ok(record),
        Ok(Err(e)) => Err((handler.error_policy(&e), e.to_string())),
        Err(e) => Err((ErrorPolicy::Retry, panic_message(e))),
    };
    let outcome = match result {
        Ok(record) => Outcome::Succeeded(record),
        Err((ErrorPolicy::WaitForChange, error)) => Outcome::Deferred { error },
        Err((ErrorPolicy::Dead, error)) => Outcome::Dead { error },
        Err((ErrorPolicy::RunAgain, error)) => Outcome::Superseded { error },
        Err((ErrorPolicy::WaitForDependency, error)) => {
            let delay = i64::try_from(backoff_delay(&cfg, job.attempts).as_millis()).unwrap_or(i64::MAX);
            Outcome::Unavailable {
                error,
                at: now_ms().saturating_add(delay),
            }
        }
        Err((ErrorPolicy::Retry, error)) if job.attempts >= cfg.max_attempts => Outcome::Dead { error },
        Err((ErrorPolicy::Retry, error)) => {
            let delay = i64::try_from(backoff_delay(&cfg, job.attempts).as_millis()).unwrap_or(i64::MAX);
            Outcome::Retry {
                error,
                at: now_ms().saturating_add(delay),
            }
        }
    };
    metrics
        .reconcile_seconds
        .with_label_values(&[job.collection.as_str(), outcome.label()])
        .observe(started.elapsed().as_secs_f64());
    match &outcome {
        Outcome::Succeeded(_) => tracing::debug!("job succeeded"),
        Outcome::Retry { error, at } => {
            tracing::warn!(retry_at = at, error = %error, "job failed; will retry")
        }
        Outcome::Dead { error } => tracing::error!(error = %error, "job failed for the last time"),
        Outcome::Deferred { error } => {
            tracing::warn!(error = %error, "job failed; waiting for the record to change")
        }
        Outcome::Unavailable { error, at } => {
            tracing::info!(retry_at = at, error = %error, "job waits for a dependency; no attempt used")
        }
        Outcome::Superseded { error } => tracing::info!(reason = %error, "job runs again at once for a newer change"),
    }
    for attempt in 1..=RECORD_TRIES {
        match outcome.record(&journal, job.job_id).await {
            Ok(()) => {
                journal.announce(Change::Job {
                    collection: job.collection,
                    record_id: job.record_id.clone(),
                    outcome: outcome.label(),
                    error: outcome.error().map(str::to_owned),
                });
                return;
            }
            Err(JournalError::NotRunning { state, .. }) => {
                // On PostgreSQL: the lease ran out (this replica lost the database for longer than it) and
                // another replica runs the job now; its run decides.
                tracing::warn!(state = %state, "job outcome dropped: the job's claim was lost");
                return;
            }
            Err(e) => {
                tracing::error!(try_no = attempt, error = %e, "cannot record a job's outcome");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
    }
    journal.abandon_claim(job.job_id);
    tracing::error!(
        "job outcome not recorded; it will run again after a restart, or on PostgreSQL once its lease runs out"
    );
}

/// Resolves when the gate changes; never without a gate (or once its sender is gone).
async fn gate_changed(gate: &mut Option<watch::Receiver<bool>>) {
    let changed = match gate {
        Some(g) => g.changed().await.is_ok(),
        None => false,
    };
    if !changed {
        std::future::pending::<()>().await;
    }
}

impl<H: JobHandler> Dispatcher<H> {
    /// A dispatcher of `journal`'s jobs to `handler`; `wake` (the intake's) starts a due job at once.
    pub fn new(
        journal: Journal,
        handler: Arc<H>,
        cfg: &QueueSettings,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Dispatcher {
            journal,
            metrics,
            handler,
            cfg: cfg.clone(),
            poll_interval: POLL_INTERVAL,
            notify: wake,
            gate: None,
        }
    }

    /// Claims jobs only while `gate` reads true (the dependencies are up); waits for it otherwise.
    pub fn gate(mut self, gate: watch::Receiver<bool>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Sleeps up to `every` between looks at the journal when nothing pokes the notifier (tests prove
    /// with a long one that the notifier alone starts jobs).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// What wakes the dispatcher (the intake pokes it after an ingest).
    pub fn notifier(&self) -> Arc<Notify> {
        Arc::clone(&self.notify)
    }

    /// How long to sleep when no worker is free to finish and nothing pokes the notifier.
    async fn idle_wait(&self) -> Duration {
        match self.journal.next_due_at().await {
            Ok(Some(due)) => {
                let ms = u64::try_from(due.saturating_sub(now_ms())).unwrap_or(0).max(1);
                Duration::from_millis(ms).min(self.poll_interval)
            }
            Ok(None) => self.poll_interval,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the next due job");
                self.poll_interval
            }
        }
    }

    /// Makes a job's span continue the trace of an event it covers (journaled with the event, so a job
    /// resumed after a restart continues it too).
    async fn continue_trace(&self, span: &tracing::Span, job: &ClaimedJob) {
        if !crate::otel::exporting() {
            return;
        }
        match self.journal.run_trace_context(job.job_id, job.last_event_id).await {
            Ok(Some(parent)) => crate::otel::continue_trace(span, &parent),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(error = %e, job_id = job.job_id, "trace context not read; the job starts a trace")
            }
        }
    }

    /// Runs until `cancel`; then claims nothing new and waits up to `drain_deadline` for the jobs in
    /// flight. Jobs still running after that are abandoned and resumed at the next start.
    pub async fn run(mut self, cancel: CancellationToken, drain_deadline: Duration) {
        match self.journal.resume_on_start().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "resumed jobs left running by the previous process"),
            Err(e) => tracing::error!(error = %e, "cannot resume unfinished jobs"),
        }
        // On PostgreSQL, a job queued by another replica wakes this one too.
        let _wake_ups = self.journal.pg().map(|pg| pg.wake_on_jobs(self.notifier(), &cancel));
        let concurrency = self.cfg.concurrency.max(1);
        let sem = Arc::new(Semaphore::new(concurrency));
        let rejoin = Arc::new(Semaphore::new(concurrency - reserved_for_claims(concurrency)));
        let waits = Arc::new(Semaphore::new(self.cfg.max_waiting));
        let cfg = Arc::new(self.cfg.clone());
        let mut workers = JoinSet::new();
        let mut gauges = tokio::time::interval(GAUGE_PERIOD);
        gauges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let mut gate = self.gate.take();
        while !cancel.is_cancelled() {
            let free = sem.available_permits();
            let mut wait = self.poll_interval;
            let open = gate.as_mut().is_none_or(|g| *g.borrow_and_update());
            if free > 0 && open {
                match self.journal.claim_due(now_ms(), free).await {
                    Ok(jobs) => {
                        let more = jobs.len() == free;
                        for job in jobs {
                            let span = tracing::info_span!(
                                "job",
                                job_id = job.job_id,
                                collection = job.collection.as_str(),
                                record_id = %job.record_id,
                                attempt = job.attempts,
                            );
                            self.continue_trace(&span, &job).await;
                            span.in_scope(|| tracing::debug!("job claimed"));
                            self.journal.announce(Change::Job {
                                collection: job.collection,
                                record_id: job.record_id.clone(),
                                outcome: "claimed",
                                error: None,
                            });
                            let slot = WorkerSlot {
                                permit: std::sync::Mutex::new(Arc::clone(&sem).acquire_owned().await.ok().map(
                                    |slot| Held {
                                        _slot: slot,
                                        _rejoined: None,
                                    },
                                )),
                                sem: Arc::clone(&sem),
                                rejoin: Arc::clone(&rejoin),
                                notify: Arc::clone(&self.notify),
                                waits: Arc::clone(&waits),
                                waiting: self.metrics.jobs_waiting.clone(),
                            };
                            let worker = run_job(
                                self.journal.clone(),
                                Arc::clone(&self.metrics),
                                Arc::clone(&self.handler),
                                Arc::clone(&cfg),
                                job,
                                slot,
                            );
                            workers.spawn(worker.instrument(span).with_current_subscriber());
                        }
                        // With every worker busy, only a finishing worker (or cancel) matters.
                        if !more {
                            wait = self.idle_wait().await;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot claim jobs from the journal"),
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.notify.notified() => {}
                Some(joined) = workers.join_next(), if !workers.is_empty() => {
                    if let Err(e) = joined {
                        tracing::error!(error = %e, "a job worker ended abnormally");
                    }
                }
                _ = tokio::time::sleep(wait), if sem.available_permits() > 0 => {}
                _ = gate_changed(&mut gate) => {}
                _ = gauges.tick() => refresh_gauges(&self.journal, &self.metrics).await,
            }
        }

        tracing::info!(in_flight = workers.len(), "dispatcher draining");
        let drain = async { while workers.join_next().await.is_some() {} };
        if tokio::time::timeout(drain_deadline, drain).await.is_err() {
            tracing::warn!(
                in_flight = workers.len(),
                "drain deadline passed; abandoning jobs still running, they resume at the next start"
            );
            workers.shutdown().await;
        }
        refresh_gauges(&self.journal, &self.metrics).await;
    }
}
