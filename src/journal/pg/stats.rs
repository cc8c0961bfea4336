//! `cf-bridge journal stats` on PostgreSQL: the same counts as on SQLite; the size is that of the journal's
//! tables (indexes and TOAST included). There is no WAL of the journal's own: the server's is shared by
//! every database on it, so none is reported.

use std::collections::BTreeMap;

use super::PgJournal;
use crate::journal::stats::COUNTS;
use crate::journal::{JournalError, JournalStats};

/// The journal's tables (migration 2 in `src/pg/migrate.rs`).
const TABLES: &[&str] = &[
    "events",
    "jobs",
    "job_attempts",
    "intents",
    "record_state",
    "health",
    "router_keys",
    "meta",
    "outbox",
    "deletions",
];

impl PgJournal {
    pub(crate) async fn stats(&self) -> Result<JournalStats, JournalError> {
        let conn = self.conn().await?;
        let mut rows = BTreeMap::new();
        for (table, sql) in COUNTS {
            for r in conn.query(*sql, &[]).await? {
                let (group, n): (Option<String>, i64) = (r.try_get(0)?, r.try_get(1)?);
                let key = match group {
                    Some(g) => format!("{table}.{g}"),
                    None => (*table).to_string(),
                };
                rows.insert(key, n);
            }
        }
        let payloads_dropped: i64 = conn
            .query_one("SELECT COUNT(*) FROM events WHERE payload = 'null'", &[])
            .await?
            .try_get(0)?;
        let bytes: i64 = conn
            .query_one(
                "SELECT COALESCE(SUM(pg_total_relation_size(to_regclass(t))), 0)::BIGINT FROM unnest($1::TEXT[]) t",
                &[&TABLES],
            )
            .await?
            .try_get(0)?;
        Ok(JournalStats {
            rows,
            payloads_dropped,
            db_bytes: u64::try_from(bytes).unwrap_or(0),
            wal_bytes: None,
        })
    }
}
