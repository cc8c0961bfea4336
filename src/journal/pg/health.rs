//! The health row `/readyz` writes to prove the journal takes writes.

use super::PgJournal;
use crate::journal::JournalError;

impl PgJournal {
    /// Proves the journal accepts writes right now (for `/readyz`).
    pub(crate) async fn check_writable(&self) -> Result<(), JournalError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(
                "INSERT INTO health (id, checked_at) VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
            )
            .await?;
        conn.execute(&stmt, &[&crate::journal::now_ms()]).await?;
        Ok(())
    }
}
