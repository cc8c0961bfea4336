//! Journal errors.

use std::path::PathBuf;

use crate::events::SinkError;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open journal {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "journal schema version {found} is newer than this build supports ({supported}); \
         run a newer cf-bridge or point it at another journal file"
    )]
    NewerSchema { found: i64, supported: i64 },
    #[error("journal migration to schema version {version} failed: {source}")]
    Migration {
        version: i64,
        #[source]
        source: rusqlite::Error,
    },
    #[error("journal database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("journal column {column} holds an unexpected value {value:?}")]
    Corrupt { column: &'static str, value: String },
    #[error("journal job {0} does not exist")]
    JobNotFound(i64),
    #[error("journal job {job_id} is {state}, not running: its outcome cannot be recorded")]
    NotRunning { job_id: i64, state: String },
    #[error("journal payload is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("journal commit failed: {0}")]
    Commit(String),
    #[error("journal writer thread is gone")]
    WriterGone,
    #[error("journal worker task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Pg(#[from] crate::pg::PgError),
    // Reaching it is a bug: every operation hands itself to the PostgreSQL backend before touching SQLite.
    #[error("journal operation reached the SQLite code on a PostgreSQL journal")]
    SqliteOnly,
}

impl From<tokio_postgres::Error> for JournalError {
    fn from(e: tokio_postgres::Error) -> Self {
        JournalError::Pg(crate::pg::PgError::Query(e))
    }
}

impl From<JournalError> for SinkError {
    fn from(e: JournalError) -> Self {
        SinkError::Unavailable(Box::new(e))
    }
}
