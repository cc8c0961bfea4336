//! Reconciliation: pure planning (`plan`) and the executors that carry plans out.

pub mod context;
pub mod error;
pub mod health;
pub mod instance;
pub mod orphans;
pub mod plan;
pub mod tenant;

use crate::events::Collection;
use crate::journal::ClaimedJob;
use crate::queue::{JobError, JobFuture, JobHandler};
use context::Context;
use error::ReconcileError;

/// The queue's job handler: one reconcile of one record.
pub struct Reconciler {
    ctx: Context,
}

impl Reconciler {
    pub fn new(ctx: Context) -> Self {
        Reconciler { ctx }
    }

    async fn run(&self, job: &ClaimedJob) -> Result<(), ReconcileError> {
        let collection = job.collection;
        let id = job.record_id.as_str();
        let outcome = match collection {
            Collection::Tenants => tenant::reconcile(&self.ctx, id).await?,
            Collection::BotInstances => instance::reconcile(&self.ctx, id, job.first_pending_at).await?,
        };
        // Resync compares against this to find records that changed while no event reached us.
        match outcome {
            Some(updated) => self.ctx.journal.set_applied(collection, id, &updated).await?,
            None => self.ctx.journal.mark_deleted(collection, id).await?,
        }
        Ok(())
    }
}

impl JobHandler for Reconciler {
    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> JobFuture<'a> {
        Box::pin(async move {
            self.run(job).await.map_err(|e| {
                if e.is_permanent() {
                    JobError::Permanent(e.to_string())
                } else {
                    JobError::Retryable(e.to_string())
                }
            })
        })
    }
}
