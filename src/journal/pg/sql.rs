//! Statements inside a transaction, prepared once per connection (deadpool caches them), and the
//! database's clock, which leases are measured by so that replicas' clocks need not agree.

use deadpool_postgres::Transaction;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::journal::JournalError;

/// The database's clock in milliseconds since the epoch, as SQL.
macro_rules! db_now_ms {
    () => {
        "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
    };
}
pub(crate) use db_now_ms;

pub(crate) async fn rows(
    tx: &Transaction<'_>,
    sql: &str,
    args: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, JournalError> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.query(&stmt, args).await?)
}

pub(crate) async fn row(
    tx: &Transaction<'_>,
    sql: &str,
    args: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, JournalError> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.query_opt(&stmt, args).await?)
}

pub(crate) async fn exec(tx: &Transaction<'_>, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<u64, JournalError> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&stmt, args).await?)
}

/// Serialises every decision about one record (dedupe, echo, its job) across replicas until the
/// transaction ends. The two-key form keeps these locks apart from the single-key session locks.
pub(crate) async fn lock_record(tx: &Transaction<'_>, collection: &str, record_id: &str) -> Result<(), JournalError> {
    exec(
        tx,
        "SELECT pg_advisory_xact_lock($1, hashtext($2 || '/' || $3))",
        &[&crate::pg::lock_keys::RECORD, &collection, &record_id],
    )
    .await?;
    Ok(())
}

/// Wakes idle replicas when the transaction commits (see `wake`).
pub(crate) async fn notify_jobs(tx: &Transaction<'_>) -> Result<(), JournalError> {
    exec(tx, "SELECT pg_notify($1, '')", &[&super::wake::CHANNEL]).await?;
    Ok(())
}
