//! The PostgreSQL groundwork for several replicas (src/pg) against a real PostgreSQL: cf-testkit's
//! cluster, shared by this test process, a fresh database per test.

mod budget;
mod fixture;
mod journal_claims;
mod leader;
mod migrate;
mod tls;

use cf_bridge::pg::{self, PgConfig};
use cf_testkit::Postgres;

/// A fresh, migrated database: its setting and a pool on it.
pub async fn fresh() -> (PgConfig, deadpool_postgres::Pool) {
    let db = Postgres::shared().database().await;
    let cfg = PgConfig::parse(&db.url).expect("the fixture's URL parses");
    let pool = pg::pool(&cfg, 8).expect("pool");
    pg::migrate::migrate(&mut pool.get().await.expect("a connection"))
        .await
        .expect("migrations");
    (cfg, pool)
}
