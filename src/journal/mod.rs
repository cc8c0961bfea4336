//! The durable journal: every event is written here before it is acknowledged or processed, and the
//! per-record jobs that the dispatcher works through live here too.
//!
//! One SQLite file in WAL mode with `synchronous=NORMAL`: a commit reaches the OS (the WAL file) before
//! `ingest` returns, so it survives the process being killed; only a power loss can drop the last
//! transactions, which is acceptable for hints that the periodic resync re-derives anyway. All writes go
//! through one connection owned by a dedicated thread (see `writer`): SQLite serialises writers anyway,
//! a single writer makes every read-modify-write (dedupe, job upsert, claim) atomic without retries, and
//! it lets concurrent ingests share one commit. Reads use a second connection behind a mutex, so they never
//! wait on the writer: a point read in place when the connection is free, anything else (and a point read
//! that finds it busy) on `spawn_blocking`. WAL checkpoints run on a third (see
//! `checkpoint`), so no commit waits for one.
//!
//! Each method hands PostgreSQL's work to `pg` boxed: a pooled PostgreSQL call is a future of about 2 KB,
//! and unboxed it would sit inside every caller's future on SQLite too. A job's future is as large as
//! its largest call, and a backlog holds hundreds of jobs waiting for Coolify.

mod admin;
mod changes;
mod checkpoint;
mod deletions;
mod domains;
mod error;
mod ingest;
mod jobs;
mod outbox;
pub mod pg;
mod retention;
mod sanitize;
mod schema;
mod state;
mod stats;
mod trace;
mod types;
mod versions;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::events::{EventSink, Ingested, NewEvent, Replay, ReplayFuture, SinkError, SinkFuture, request_fingerprint};

pub use changes::{CHANGES_CAPACITY, Change};
pub use deletions::{Deletion, DeletionState};
pub use error::JournalError;
pub use outbox::OutboxEntry;
pub use retention::{PRUNE_BATCH, PruneReport, Retention, dedupe_floor};
pub use sanitize::strip_secrets;
pub use schema::SCHEMA_VERSION;
pub use stats::JournalStats;
pub use types::{
    AppliedVersion, AttemptOutcome, AttemptRow, ClaimedJob, EventFilter, EventRow, EventStatus, Intent, JobRow,
    JobState, Notes, RecordState, RunRecord,
};
pub use versions::StoredTemplate;

/// Milliseconds since the Unix epoch, UTC: the journal's clock.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How the journal opens its file.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// How long a statement waits for a lock held by another process before failing.
    pub busy_timeout: Duration,
    /// Open without write access (inspection tools); every write then fails cleanly.
    pub read_only: bool,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            busy_timeout: Duration::from_secs(5),
            read_only: false,
        }
    }
}

/// Handle to the journal; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    changes: tokio::sync::broadcast::Sender<Change>,
}

enum Backend {
    Sqlite {
        path: PathBuf,
        writer: mpsc::Sender<writer::Request>,
        reader: Mutex<Connection>,
    },
    Postgres(pg::PgJournal),
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner.backend {
            Backend::Sqlite { path, .. } => f.debug_struct("Journal").field("path", path).finish(),
            Backend::Postgres(pg) => f.debug_struct("Journal").field("postgres", pg).finish(),
        }
    }
}

fn connect(path: &Path, opts: &JournalOptions, read_only: bool) -> Result<Connection, JournalError> {
    let open_err = |source| JournalError::Open {
        path: path.to_path_buf(),
        source,
    };
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI
    } else {
        OpenFlags::default()
    };
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(opts.busy_timeout).map_err(open_err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = %path.display(), mode, "journal is not in WAL mode");
    }
    // Page caches of 1 MiB for the writer and 256 KiB for the reader instead of SQLite's 2 MiB each: the
    // journal's hot pages are few (the tails of its indexes, the trees' inner pages) and the rest is in the
    // OS's page cache anyway; the bridge's memory is not. The reader's big reads are fleet-sized scans
    // (the resync's versions, the drift check's notes), which read each page once: a cache as large as the
    // writer's only kept the last megabyte of them.
    let cache_kib = if read_only { 256 } else { 1024 };
    conn.execute_batch(&format!(
        "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA cache_size=-{cache_kib};"
    ))
    .map_err(open_err)?;
    // SQLite (3.54 here) re-prepares a statement whenever a new value is bound to a parameter its plan
    // looked at, such as `LIMIT ?`: the claim of due jobs and others were prepared again on almost every
    // call, about 5 % of the bridge's CPU per change (perf, 50 changes/s). The journal keeps no statistics
    // for values to improve a plan, so a plan that ignores them is the same plan, made once.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(open_err)?;
    // A change's bookkeeping runs more distinct statements on the writer than rusqlite's 16 cached ones,
    // so each cycle evicted and prepared some again (about 2 % of the CPU per change). The reader's few
    // per-change queries fit in the default.
    if !read_only {
        conn.set_prepared_statement_cache_capacity(64);
    }
    Ok(conn)
}

/// Runs `f` in an immediate (write-locked) transaction and commits; any error rolls everything back.
pub(crate) fn write_tx<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, JournalError>,
) -> Result<T, JournalError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

impl Journal {
    /// Opens (creating if needed) the journal at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        Journal::open_with(path, JournalOptions::default())
    }

    pub fn open_with(path: &Path, opts: JournalOptions) -> Result<Journal, JournalError> {
        let mut writer = connect(path, &opts, opts.read_only)?;
        schema::migrate(&mut writer)?;
        if !opts.read_only {
            checkpoint::spawn(path, &mut writer, &opts)?;
        }
        let reader = connect(path, &opts, true)?;
        let writer =
            writer::spawn(writer).map_err(|e| JournalError::Task(format!("cannot start the writer thread: {e}")))?;
        Ok(Journal {
            inner: Arc::new(Inner {
                backend: Backend::Sqlite {
                    path: path.to_path_buf(),
                    writer,
                    reader: Mutex::new(reader),
                },
                changes: changes::channel(),
            }),
        })
    }

    /// Connects to the journal on PostgreSQL and brings its schema up to date.
    pub async fn open_postgres(cfg: &crate::pg::PgConfig) -> Result<Journal, JournalError> {
        let pg = pg::PgJournal::open(cfg).await?;
        Ok(Journal {
            inner: Arc::new(Inner {
                backend: Backend::Postgres(pg),
                changes: changes::channel(),
            }),
        })
    }

    /// The SQLite file, or `None` on PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        match &self.inner.backend {
            Backend::Sqlite { path, .. } => Some(path),
            Backend::Postgres(_) => None,
        }
    }

    /// The PostgreSQL backend, when the journal lives there: each operation hands itself over to it first.
    pub fn pg(&self) -> Option<&pg::PgJournal> {
        match &self.inner.backend {
            Backend::Sqlite { .. } => None,
            Backend::Postgres(pg) => Some(pg),
        }
    }

    fn sqlite_writer(&self) -> Result<&mpsc::Sender<writer::Request>, JournalError> {
        match &self.inner.backend {
            Backend::Sqlite { writer, .. } => Ok(writer),
            Backend::Postgres(_) => Err(JournalError::SqliteOnly),
        }
    }

    /// Runs `f` on the writer thread, after every request sent before it.
    async fn write<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, JournalError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(move |conn: &mut Connection| {
            let _ = reply.send(f(conn));
        });
        // Boxed: a channel send's state would widen every future that writes to the journal.
        Box::pin(self.submit(writer::Request::Run(job))).await?;
        answer
            .await
            .map_err(|_| JournalError::Task("the journal writer dropped a request".into()))?
    }

    async fn submit(&self, request: writer::Request) -> Result<(), JournalError> {
        self.sqlite_writer()?
            .send(request)
            .await
            .map_err(|_| JournalError::WriterGone)
    }

    /// Runs a point read (a few rows found by key, microseconds from the page cache) on the reader
    /// connection in place. Sent to a blocking thread, each cost two thread wake-ups, and a reconcile makes
    /// about ten before its first Coolify call; on a busy machine those hand-offs, not the reads, were its
    /// wait. A reader busy with a long read (the admin API's, the resync's) sends it to [`Journal::read`]
    /// instead, so a runtime thread never waits for the connection.
    async fn look_up<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, JournalError> + Send + 'static,
    {
        let Backend::Sqlite { reader, .. } = &self.inner.backend else {
            return Err(JournalError::SqliteOnly);
        };
        let f = match reader.try_lock() {
            Ok(conn) => return f(&conn),
            Err(std::sync::TryLockError::Poisoned(p)) => return f(&p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => f,
        };
        self.read(f).await
    }

    /// Runs `f` on the reader connection off the async runtime.
    async fn read<T, F>(&self, f: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, JournalError> + Send + 'static,
    {
        if self.pg().is_some() {
            return Err(JournalError::SqliteOnly);
        }
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let Backend::Sqlite { reader, .. } = &inner.backend else {
                return Err(JournalError::SqliteOnly);
            };
            let conn = reader.lock().unwrap_or_else(PoisonError::into_inner);
            f(&conn)
        })
        .await
        .map_err(|e| JournalError::Task(e.to_string()))?
    }

    /// Folds the WAL into the database file; called once at shutdown, after the last write. Nothing to do
    /// on PostgreSQL.
    pub async fn close(&self) -> Result<(), JournalError> {
        if self.pg().is_some() {
            return Ok(());
        }
        self.write(|conn| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    /// Proves the journal accepts writes right now (for `/readyz`).
    pub async fn check_writable(&self) -> Result<(), JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.check_writable()).await;
        }
        self.write(|conn| {
            write_tx(conn, |tx| {
                tx.execute(
                    "INSERT INTO health (id, checked_at) VALUES (1, ?1)
                     ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                    [now_ms()],
                )?;
                Ok(())
            })
        })
        .await
    }
}

impl EventSink for Journal {
    fn ingest(&self, mut event: NewEvent) -> SinkFuture<'_> {
        Box::pin(async move {
            let source = event.source.as_str();
            let (kind, collection, record_id, action) =
                (event.source, event.collection, event.record_id.clone(), event.action);
            if event.fingerprint.is_none() {
                event.fingerprint = request_fingerprint(event.source, event.collection, event.action, &event.payload);
            }
            strip_secrets(&mut event.payload);
            let payload = serde_json::to_string(&event.payload).map_err(JournalError::from)?;
            let outcome = match self.pg() {
                Some(pg) => Box::pin(pg.ingest(&event, &payload)).await,
                None => {
                    // The writer stores `payload`; the record's value is freed here, on the thread that built
                    // it, not on the writer's (3.7 % of the bridge's CPU in a flood, "Fortieth session").
                    drop(std::mem::take(&mut event.payload));
                    let (reply, answer) = oneshot::channel();
                    match self.submit(writer::Request::Ingest { event, payload, reply }).await {
                        Ok(()) => answer
                            .await
                            .unwrap_or_else(|_| Err(JournalError::Task("the journal writer dropped an event".into()))),
                        Err(e) => Err(e),
                    }
                }
            };
            match outcome {
                Ok(ingested) => {
                    if let Ingested::New { event_id, .. } | Ingested::Settled { event_id } = ingested {
                        self.announce(Change::Event {
                            event_id,
                            source: kind,
                            collection,
                            record_id,
                            action,
                        });
                    }
                    Ok(ingested)
                }
                Err(e) => {
                    tracing::error!(error = %e, source, "journal refused an event");
                    Err(SinkError::from(e))
                }
            }
        })
    }

    fn replay(&self, what: Replay) -> ReplayFuture<'_> {
        Box::pin(async move {
            let replayed = match what {
                Replay::Events(ids) => self.replay_events(&ids).await,
                Replay::Record(collection, id) => self.replay_record(collection, &id).await,
                Replay::Since(ms) => self.replay_since(ms).await,
                Replay::Failed => self.replay_failed().await,
                Replay::Live(collection) => self.replay_live(collection).await,
            };
            replayed.map_err(SinkError::from)
        })
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::StatementStatus;

    use super::*;

    #[test]
    fn a_statement_is_not_prepared_again_for_each_new_limit() {
        let dir = tempfile::tempdir().unwrap();
        let conn = connect(&dir.path().join("j.db"), &JournalOptions::default(), false).unwrap();
        conn.execute_batch("CREATE TABLE t (a INTEGER); INSERT INTO t VALUES (1), (2), (3);")
            .unwrap();
        for limit in 1..=3 {
            let mut stmt = conn.prepare_cached("SELECT a FROM t ORDER BY a LIMIT ?1").unwrap();
            let rows: Vec<i64> = stmt
                .query_map([limit], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(rows.len(), usize::try_from(limit).unwrap());
            assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0, "limit {limit}");
        }
    }

    #[tokio::test]
    async fn a_point_read_runs_on_the_callers_thread_when_the_reader_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("j.db")).unwrap();
        let ran_on = journal.look_up(|_| Ok(std::thread::current().id())).await.unwrap();
        assert_eq!(ran_on, std::thread::current().id());
    }

    /// A connection kept busy by a long job until `release` is sent to.
    struct Held {
        release: std::sync::mpsc::Sender<()>,
        job: tokio::task::JoinHandle<Result<(), JournalError>>,
    }

    impl Held {
        async fn done(self) {
            let _ = self.release.send(());
            self.job.await.unwrap().unwrap();
        }
    }

    /// Keeps the reader (or with `writer`, the writer) busy until released.
    async fn hold(journal: &Journal, writer: bool) -> Held {
        let (held_tx, held_rx) = tokio::sync::oneshot::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let wait = move || {
            let _ = held_tx.send(());
            let _ = release_rx.recv();
            Ok(())
        };
        let journal = journal.clone();
        let job = tokio::spawn(async move {
            if writer {
                journal.write(move |_| wait()).await
            } else {
                journal.read(move |_| wait()).await
            }
        });
        held_rx.await.unwrap();
        Held { release, job }
    }

    #[tokio::test]
    async fn a_point_read_waits_off_the_runtime_while_the_reader_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("j.db")).unwrap();
        let held = hold(&journal, false).await;
        // Releases the reader anyway after a while, so that a point read blocking this (only) runtime
        // thread on the reader makes the test fail instead of hang.
        let watchdog = held.release.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            let _ = watchdog.send(());
        });
        let point = tokio::spawn({
            let journal = journal.clone();
            async move { journal.note("x").await }
        });
        tokio::task::yield_now().await;
        assert!(!point.is_finished(), "the point read ran while the reader was held");
        held.done().await;
        assert_eq!(point.await.unwrap().unwrap(), None);
    }

    #[tokio::test]
    async fn a_look_for_due_jobs_that_finds_none_does_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("j.db")).unwrap();
        let held = hold(&journal, true).await;
        let waited = tokio::time::timeout(Duration::from_secs(2), journal.claim_due(now_ms(), 8)).await;
        held.done().await;
        assert!(waited.expect("the look waited for the writer").unwrap().is_empty());
    }

    #[test]
    fn a_call_on_sqlite_does_not_carry_the_postgresql_one_in_its_future() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("j.db")).unwrap();
        // PostgreSQL's `note` alone is about 1.9 KB; a job's future holds its largest call's.
        let size = std::mem::size_of_val(&journal.note("x"));
        assert!(size < 256, "{size} bytes");
    }
}
