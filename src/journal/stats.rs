//! What the journal holds and how much disk it takes (`cf-bridge journal stats`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use rusqlite::Connection;

use super::{Journal, JournalError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Rows per table; tables with a state column are split as `table.state`.
    pub rows: BTreeMap<String, i64>,
    /// Events whose payload was dropped by retention.
    pub payloads_dropped: i64,
    /// The SQLite file, or on PostgreSQL the journal's tables with their indexes and TOAST.
    pub db_bytes: u64,
    /// The SQLite write-ahead log; `None` on PostgreSQL, whose WAL belongs to the whole server.
    pub wal_bytes: Option<u64>,
}

/// (label, query) per count: one row of (group, count) each.
pub(super) const COUNTS: &[(&str, &str)] = &[
    ("events", "SELECT status, COUNT(*) FROM events GROUP BY status"),
    ("jobs", "SELECT state, COUNT(*) FROM jobs GROUP BY state"),
    (
        "job_attempts",
        "SELECT COALESCE(outcome, 'running'), COUNT(*) FROM job_attempts GROUP BY 1",
    ),
    ("intents", "SELECT NULL, COUNT(*) FROM intents"),
    ("record_state", "SELECT NULL, COUNT(*) FROM record_state"),
    ("router_keys", "SELECT NULL, COUNT(*) FROM router_keys"),
    ("outbox", "SELECT NULL, COUNT(*) FROM outbox"),
];

fn count(conn: &Connection) -> Result<(BTreeMap<String, i64>, i64), JournalError> {
    let mut rows = BTreeMap::new();
    for (table, sql) in COUNTS {
        let mut stmt = conn.prepare(sql)?;
        let groups = stmt.query_map([], |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?)))?;
        for g in groups {
            let (group, n) = g?;
            let key = match group {
                Some(g) => format!("{table}.{g}"),
                None => (*table).to_string(),
            };
            rows.insert(key, n);
        }
    }
    let dropped = conn.query_row("SELECT COUNT(*) FROM events WHERE payload = 'null'", [], |r| r.get(0))?;
    Ok((rows, dropped))
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

impl Journal {
    pub async fn stats(&self) -> Result<JournalStats, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.stats()).await;
        }
        let (rows, payloads_dropped) = self.read(count).await?;
        let path = self.path().ok_or(JournalError::SqliteOnly)?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Ok(JournalStats {
            rows,
            payloads_dropped,
            db_bytes: file_len(path),
            wal_bytes: Some(file_len(Path::new(&wal))),
        })
    }
}

impl fmt::Display for JournalStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (table, n) in &self.rows {
            writeln!(f, "{table:<28} {n:>12}")?;
        }
        writeln!(f, "{:<28} {:>12}", "events with payload dropped", self.payloads_dropped)?;
        match self.wal_bytes {
            Some(wal) => {
                writeln!(f, "{:<28} {:>12} bytes", "journal file", self.db_bytes)?;
                write!(f, "{:<28} {:>12} bytes", "write-ahead log", wal)
            }
            None => write!(f, "{:<28} {:>12} bytes", "journal tables", self.db_bytes),
        }
    }
}
