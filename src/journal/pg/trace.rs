//! The trace context journaled with each event, read back when a job runs (see `journal/trace.rs`).

use super::PgJournal;
use crate::journal::JournalError;

impl PgJournal {
    pub(crate) async fn run_trace_context(&self, job_id: i64, upto: i64) -> Result<Option<String>, JournalError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT trace_context FROM events
                 WHERE job_id = $1 AND status = 'queued' AND id <= $2 AND trace_context IS NOT NULL
                 ORDER BY source = 'webhook' DESC, id DESC LIMIT 1",
            )
            .await?;
        Ok(conn.query_opt(&stmt, &[&job_id, &upto]).await?.map(|r| r.get(0)))
    }
}
