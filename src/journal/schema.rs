//! Versioned schema, tracked in `PRAGMA user_version` and applied in order at open.

use rusqlite::Connection;

use super::JournalError;

/// Migration `i` brings the schema from version `i` to `i + 1`. Append only; never edit a shipped one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    id             INTEGER PRIMARY KEY,
    source         TEXT    NOT NULL,
    collection     TEXT    NOT NULL,
    record_id      TEXT    NOT NULL,
    action         TEXT    NOT NULL,
    record_updated TEXT,
    received_at    INTEGER NOT NULL,
    dedupe_key     TEXT    NOT NULL UNIQUE,
    delivery_id    TEXT    UNIQUE,
    payload        TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN ('queued', 'done', 'failed')),
    job_id         INTEGER REFERENCES jobs(id)
);
CREATE INDEX events_job ON events(job_id, id);
CREATE INDEX events_record ON events(collection, record_id, id);
CREATE INDEX events_status ON events(status, id);
CREATE INDEX events_received ON events(received_at);

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    collection       TEXT    NOT NULL,
    record_id        TEXT    NOT NULL,
    state            TEXT    NOT NULL
                     CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'waiting', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT,
    coalesced        INTEGER NOT NULL DEFAULT 0,
    first_pending_at INTEGER,
    dirty            INTEGER NOT NULL DEFAULT 0,
    dirty_since      INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    last_event_id    INTEGER,
    claimed_event_id INTEGER,
    attempt_id       INTEGER,
    UNIQUE (collection, record_id)
);
CREATE INDEX jobs_due ON jobs(state, next_attempt_at);

CREATE TABLE job_attempts (
    id          INTEGER PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs(id),
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    outcome     TEXT CHECK (outcome IN ('succeeded', 'failed', 'retry', 'dead', 'interrupted')),
    error       TEXT,
    duration_ms INTEGER
);
CREATE INDEX job_attempts_job ON job_attempts(job_id, id);

CREATE TABLE intents (
    key          TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    name         TEXT NOT NULL,
    coolify_uuid TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE record_state (
    collection   TEXT    NOT NULL,
    record_id    TEXT    NOT NULL,
    last_updated TEXT,
    applied_hash TEXT,
    deleted      INTEGER NOT NULL DEFAULT 0,
    seen_at      INTEGER NOT NULL,
    PRIMARY KEY (collection, record_id)
);

CREATE TABLE health (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at INTEGER NOT NULL
);
"#,
    // What a change asks for, hashed from the full record before its secrets were stripped from `payload`.
    // Events journaled before this column existed have none, so they are never taken for echoes.
    r#"
ALTER TABLE events ADD COLUMN fingerprint TEXT;
"#,
    // Per-instance material is bound to the record's incarnation (src/incarnation.rs): the service intent
    // names the incarnation that created the service, and each incarnation has its own router key id.
    r#"
ALTER TABLE intents ADD COLUMN incarnation TEXT;

CREATE TABLE router_keys (
    record_id   TEXT PRIMARY KEY,
    incarnation TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Facts about the bridge itself, such as a check value of the key it last ran with.
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    // deploy_logs rows kept until PocketBase confirms them (src/journal/outbox.rs).
    r#"
CREATE TABLE outbox (
    id           TEXT    PRIMARY KEY,
    collection   TEXT    NOT NULL,
    record_id    TEXT    NOT NULL,
    row          TEXT    NOT NULL,
    applied_hash TEXT,
    service_uuid TEXT,
    created_at   INTEGER NOT NULL
);
CREATE INDEX outbox_record ON outbox(collection, record_id, created_at, id);
"#,
    // The W3C traceparent each event's trace continues (src/otel.rs); NULL when traces are not exported.
    r#"
ALTER TABLE events ADD COLUMN trace_context TEXT;
"#,
    // Deleted instances kept for their retention period (src/journal/deletions.rs): what the bridge needs
    // to stop, restore, purge or finally destroy them, even once the PocketBase record is gone.
    r#"
CREATE TABLE deletions (
    record_id    TEXT    PRIMARY KEY,
    tenant_id    TEXT,
    incarnation  TEXT    NOT NULL,
    coolify_uuid TEXT,
    requested_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('retained', 'purging', 'destroyed')),
    closed       INTEGER NOT NULL DEFAULT 0,
    record_gone  INTEGER NOT NULL DEFAULT 0,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX deletions_due ON deletions(state, expires_at);
CREATE INDEX deletions_tenant ON deletions(tenant_id, state);
"#,
    // The events a job still owes. A job is its record's for good, so `events_job` holds the record's whole
    // history: settling a run, and listing the changes it covers, walked all of it to find the few queued.
    r#"
CREATE INDEX events_queued ON events(job_id, id) WHERE status = 'queued';
"#,
    // Every ingest and every settle wrote entries into `events_job` and `events_status` (about a fifth of
    // the journal's pages in a flood) for lookups the others answer: a job's queued events
    // (`events_queued`), a record's history (`events_record`: a job is its record's), and the failed
    // events an operator lists (`events_failed`, a few rows); queued ones are in `events_queued`.
    r#"
DROP INDEX events_job;
DROP INDEX events_status;
CREATE INDEX events_failed ON events(id) WHERE status = 'failed';
"#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the schema up to [`SCHEMA_VERSION`], refusing a journal written by a newer build.
pub fn migrate(conn: &mut Connection) -> Result<(), JournalError> {
    let version =
        |conn: &Connection| -> rusqlite::Result<i64> { conn.query_row("PRAGMA user_version", [], |r| r.get(0)) };
    let found = version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(JournalError::NewerSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        // Up to date: no write lock needed, so a read-only journal still opens.
        return Ok(());
    }
    loop {
        // Re-read under the write lock: another process may have migrated meanwhile.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let found = version(&tx)?;
        if found > SCHEMA_VERSION {
            return Err(JournalError::NewerSchema {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let Some(sql) = MIGRATIONS.get(found as usize) else {
            return Ok(());
        };
        let next = found + 1;
        let step = || -> rusqlite::Result<()> {
            tx.execute_batch(sql)?;
            // user_version lives in the database header, so it commits with the migration.
            tx.pragma_update(None, "user_version", next)?;
            tx.commit()
        };
        step().map_err(|source| JournalError::Migration { version: next, source })?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("plan");
        let params: Vec<i64> = (1..=stmt.parameter_count() as i64).collect();
        stmt.query_map(rusqlite::params_from_iter(params), |r| r.get(3))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("plan rows")
    }

    #[test]
    fn the_journal_s_lookups_each_take_an_index_and_no_table_scan() {
        let mut conn = Connection::open_in_memory().expect("db");
        migrate(&mut conn).expect("migrate");
        // An operator's lists of failed and of queued events, alone and for one record (admin.rs).
        let list = |status, record_id: Option<&str>| {
            let filter = super::super::EventFilter {
                status: Some(status),
                record_id: record_id.map(str::to_owned),
                ..Default::default()
            };
            super::super::admin::list_events_sql(filter, Some(10), 50).0
        };
        let lists = [
            (list(super::super::EventStatus::Failed, None), "events_failed"),
            (list(super::super::EventStatus::Failed, Some("r1")), "events_"),
            (list(super::super::EventStatus::Queued, None), "events_queued"),
            (list(super::super::EventStatus::Queued, Some("r1")), "events_queued"),
        ];
        // The shapes of `settle_events`, `run_changes`, the trace lookup and `changed_since_claim` (jobs.rs,
        // trace.rs), and of retention.
        let lookups = [
            (
                "UPDATE events SET status = 'done' WHERE job_id = ?1 AND id <= ?2 AND status = 'queued'",
                "events_queued",
            ),
            (
                "SELECT source, action, payload FROM events WHERE job_id = ?1 AND status = 'queued' AND id <= ?2
                 ORDER BY id",
                "events_queued",
            ),
            (
                "SELECT trace_context FROM events
                 WHERE job_id = ?1 AND status = 'queued' AND id <= ?2 AND trace_context IS NOT NULL",
                "events_queued",
            ),
            (super::super::jobs::CHANGED_SINCE_CLAIM, "events_queued"),
            (super::super::jobs::CHANGED_SINCE_CLAIM, "events_record"),
            (
                "SELECT id FROM events WHERE received_at < ?1 AND status <> 'queued' LIMIT ?2",
                "events_received",
            ),
        ];
        for (sql, index) in lookups
            .map(|(sql, index)| (sql.to_owned(), index))
            .into_iter()
            .chain(lists)
        {
            let plan = plan(&conn, &sql);
            assert!(plan.iter().any(|step| step.contains(index)), "{sql}: {plan:?}");
            // A scan of a partial index walks only its few rows; a scan of the table walks the journal.
            assert!(
                !plan
                    .iter()
                    .any(|step| step.starts_with("SCAN") && !step.contains("INDEX") && step != "SCAN CONSTANT ROW"),
                "{sql}: {plan:?}"
            );
        }
    }

    #[test]
    fn a_journal_of_the_previous_version_gains_the_trace_column_and_keeps_its_events() {
        let mut conn = Connection::open_in_memory().expect("db");
        let previous = MIGRATIONS.len() - 1;
        for sql in &MIGRATIONS[..previous] {
            conn.execute_batch(sql).expect("earlier migration");
        }
        conn.pragma_update(None, "user_version", previous as i64)
            .expect("version");
        conn.execute(
            "INSERT INTO events (source, collection, record_id, action, received_at, dedupe_key, payload, status)
             VALUES ('webhook', 'tenants', 't1', 'create', 1, 'k1', '{}', 'queued')",
            [],
        )
        .expect("event");
        migrate(&mut conn).expect("migrate");
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        let (record, trace): (String, Option<String>) = conn
            .query_row("SELECT record_id, trace_context FROM events", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("the event");
        assert_eq!((version, record.as_str(), trace), (SCHEMA_VERSION, "t1", None));
    }
}
