//! The journal's retention, run periodically (rules and batches in `journal::retention`).

use std::time::Duration;

use tracing::info;

use super::context::Context;
use super::error::ReconcileError;
use crate::journal::{Retention, dedupe_floor, now_ms};
use crate::webhook::TOLERANCE_SECS;

/// How often the journal is pruned. A pass with nothing to prune costs a few index lookups.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(600);

pub struct JournalPruner {
    ctx: Context,
    retention: Retention,
    /// Where the last pass's payload dropping ended.
    payloads_from: i64,
}

impl JournalPruner {
    pub fn new(ctx: Context) -> Self {
        let retention = retention_of(&ctx.settings);
        JournalPruner {
            ctx,
            retention,
            payloads_from: 0,
        }
    }
}

/// The retention the settings ask for, with the dedupe floor their webhook tolerance and resync interval need.
pub fn retention_of(settings: &crate::config::Settings) -> Retention {
    let tolerance = Duration::from_secs(TOLERANCE_SECS.unsigned_abs());
    Retention {
        events: settings.journal.retention,
        payloads: settings.journal.payload_retention,
        floor: dedupe_floor(tolerance, settings.pocketbase.resync_interval),
    }
}

impl super::Periodic for JournalPruner {
    const NAME: &'static str = "journal prune";

    fn interval(&self) -> Duration {
        PRUNE_INTERVAL
    }

    async fn tick(&mut self) -> Result<(), ReconcileError> {
        let (report, next) = self
            .ctx
            .journal
            .prune(self.retention, now_ms(), self.payloads_from)
            .await?;
        self.payloads_from = next;
        let metrics = self.ctx.intake.metrics();
        for (what, n) in [
            ("events", report.events_deleted),
            ("attempts", report.attempts_deleted),
            ("payloads", report.payloads_dropped),
        ] {
            metrics.journal_pruned.with_label_values(&[what]).inc_by(n as u64);
        }
        metrics
            .journal_prune_longest_batch
            .set(report.longest_batch.as_secs_f64());
        if report.events_deleted + report.attempts_deleted + report.payloads_dropped > 0 {
            info!(
                events = report.events_deleted,
                attempts = report.attempts_deleted,
                payloads = report.payloads_dropped,
                batches = report.batches,
                longest_batch_ms = report.longest_batch.as_millis() as u64,
                "journal pruned"
            );
        }
        Ok(())
    }
}
