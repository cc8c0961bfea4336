//! Reconciliation: pure planning (`plan`) and the executors that carry plans out.

pub mod actor;
pub mod context;
pub mod drift;
pub mod error;
pub mod health;
pub mod instance;
pub mod judgement;
pub mod orphans;
pub mod outcome;
pub mod plan;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod router_keys;
pub mod status_reads;
pub mod tenant;

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::events::Collection;
use crate::journal::{ClaimedJob, RunRecord};
use crate::queue::{ErrorPolicy, JobFuture, JobHandler};
use context::Context;
use error::ReconcileError;

/// A task that runs on a fixed interval beside the queue (the health poller, the orphan scanner).
pub trait Periodic: Send + 'static {
    /// What the task is called in its log lines.
    const NAME: &'static str;
    fn interval(&self) -> Duration;
    fn tick(&mut self) -> impl Future<Output = Result<(), ReconcileError>> + Send;
}

/// Runs `task` at once and then every interval until `cancel`, skipping ticks while `gate` reads false
/// (a dependency is down: its outage is logged once, there). A failed tick is logged; the next runs anyway.
pub async fn run_every<P: Periodic>(mut task: P, gate: watch::Receiver<bool>, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(task.interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if !*gate.borrow() {
            continue;
        }
        if let Err(e) = task.tick().await {
            tracing::warn!(task = P::NAME, error = %e, "{} failed", P::NAME);
        }
    }
}

/// The queue's job handler: one reconcile of one record.
pub struct Reconciler {
    ctx: Context,
}

impl Reconciler {
    pub fn new(ctx: Context) -> Self {
        Reconciler { ctx }
    }

    async fn run(&self, job: &ClaimedJob) -> Result<Option<RunRecord>, ReconcileError> {
        let collection = job.collection;
        let id = job.record_id.as_str();
        // Who asked for what this run carries out, read from the events it covers.
        let run = actor::RunActor::read(&self.ctx.journal, job).await?;
        let outcome = match collection {
            Collection::Tenants => tenant::reconcile(&self.ctx, id, &run).await?,
            Collection::BotInstances => {
                let trust = instance::Trust {
                    first_event_ms: job.first_pending_at,
                    after_failure: job.after_failure,
                };
                instance::reconcile(&self.ctx, id, trust, &run).await?
            }
        };
        // Rows the run kept, or an earlier run could not send: a job ends with its record's rows written.
        outcome::flush(&self.ctx, collection, id).await?;
        // Resync compares against this to find records that changed while no event reached us; the queue
        // records it with the job's completion.
        Ok(Some(match outcome {
            Some(updated) => RunRecord::Applied(updated),
            None => RunRecord::Deleted,
        }))
    }
}

impl JobHandler for Reconciler {
    type Error = ReconcileError;

    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> JobFuture<'a, ReconcileError> {
        // With the Coolify budget short, the job whose change waits longest goes first.
        let age = job
            .first_pending_at
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        // A job that starts late may send its write-back with others' (`pocketbase::batches`).
        let late = chrono::Utc::now().timestamp_millis() - age >= crate::pocketbase::batches::BEHIND.as_millis() as i64;
        Box::pin(crate::coolify::budget::for_job(age, async move {
            let result = crate::pocketbase::batches::behind(late, self.run(job)).await;
            if let Some(dependency) = result.as_ref().err().and_then(ReconcileError::unavailable) {
                self.ctx.deps.suspect(dependency);
            }
            result
        }))
    }

    fn error_policy(&self, error: &ReconcileError) -> ErrorPolicy {
        error.policy()
    }
}
