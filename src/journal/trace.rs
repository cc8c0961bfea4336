//! The trace context journaled with each event (src/otel.rs), read back when a job runs.

use rusqlite::{OptionalExtension, params};

use super::{Journal, JournalError};

impl Journal {
    /// The W3C `traceparent` a run of `job_id` covering events up to `upto` continues: the newest of its
    /// queued events, a webhook's first (a delivery may carry its sender's trace; realtime and resync
    /// events, among them the echoes of the bridge's own write-backs, start traces of their own).
    pub async fn run_trace_context(&self, job_id: i64, upto: i64) -> Result<Option<String>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.run_trace_context(job_id, upto)).await;
        }
        self.look_up(move |conn| {
            let found: Option<String> = conn
                .prepare_cached(
                    "SELECT trace_context FROM events
                     WHERE job_id = ?1 AND status = 'queued' AND id <= ?2 AND trace_context IS NOT NULL
                     ORDER BY source = 'webhook' DESC, id DESC LIMIT 1",
                )?
                .query_row(params![job_id, upto], |r| r.get(0))
                .optional()?;
            Ok(found)
        })
        .await
    }
}
