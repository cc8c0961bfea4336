//! The trace context journaled with each event (src/otel.rs), read back when its job runs.

use rusqlite::{OptionalExtension, params};

use super::{Journal, JournalError};

impl Journal {
    /// The W3C `traceparent` stored with event `event_id`, if any.
    pub async fn trace_context(&self, event_id: i64) -> Result<Option<String>, JournalError> {
        self.read(move |conn| {
            let found: Option<Option<String>> = conn
                .prepare_cached("SELECT trace_context FROM events WHERE id = ?1")?
                .query_row(params![event_id], |r| r.get(0))
                .optional()?;
            Ok(found.flatten())
        })
        .await
    }
}
