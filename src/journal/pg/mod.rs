//! The journal on PostgreSQL, for several replicas on one database (DESIGN.md section 7).
//!
//! The same operations as the SQLite journal, with the same meaning, on the tables of migration 2 in
//! `src/pg/migrate.rs` (which mirror `src/journal/schema.rs`). Each `Journal` method asks `Journal::pg()`
//! first and hands the call to the method of the same name here. Transactions that read and then write
//! (dedupe, job upsert, claim) lock the rows they decide on, since replicas write concurrently.

mod admin;
mod domains;
mod outbox;
mod retention;
mod stats;
mod versions;

use deadpool_postgres::Pool;

use super::JournalError;
use crate::pg::{self, PgConfig};

/// Connections the journal keeps open; each replica holds at most this many.
pub const POOL_SIZE: usize = 8;

/// The PostgreSQL side of a [`super::Journal`]; cheap to clone.
#[derive(Clone)]
pub struct PgJournal {
    pool: Pool,
    cfg: PgConfig,
}

impl std::fmt::Debug for PgJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgJournal").field("url", &self.cfg.redacted()).finish()
    }
}

impl PgJournal {
    /// Connects and brings the schema up to date (under the migration lock, so replicas starting
    /// together migrate one after the other).
    pub async fn open(cfg: &PgConfig) -> Result<PgJournal, JournalError> {
        let (mut client, driver) = pg::connect(cfg).await?;
        let migrated = pg::migrate::migrate(&mut client).await;
        drop(client);
        driver.abort();
        migrated?;
        Ok(PgJournal {
            pool: pg::pool(cfg, POOL_SIZE)?,
            cfg: cfg.clone(),
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn config(&self) -> &PgConfig {
        &self.cfg
    }

    /// A pooled connection; the pool reconnects after the server restarts.
    pub(crate) async fn conn(&self) -> Result<deadpool_postgres::Object, JournalError> {
        Ok(self.pool.get().await.map_err(pg::PgError::from)?)
    }
}
