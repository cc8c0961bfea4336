//! The journal under test on either backend: the journal's test suite runs each test on SQLite (a
//! temporary file) and on PostgreSQL (a fresh database of the shared test cluster), through
//! [`on_both_journals!`](crate::on_both_journals).

use cf_bridge::journal::Journal;
use cf_bridge::pg::PgConfig;

use crate::postgres::{Postgres, TestDb};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// An open journal and what keeps its storage alive.
pub struct TestJournal {
    pub journal: Journal,
    pub backend: Backend,
    /// The SQLite file's directory; `None` on PostgreSQL.
    pub dir: Option<tempfile::TempDir>,
    /// The PostgreSQL database; `None` on SQLite.
    pub db: Option<TestDb>,
}

impl TestJournal {
    /// Opens a fresh, empty journal on `backend`.
    pub async fn open(backend: Backend) -> TestJournal {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let journal = Journal::open(&dir.path().join("journal.db")).expect("open the SQLite journal");
                TestJournal {
                    journal,
                    backend,
                    dir: Some(dir),
                    db: None,
                }
            }
            Backend::Postgres => {
                let db = Postgres::shared().database().await;
                let cfg = PgConfig::parse(&db.url).expect("the test database's URL");
                let journal = Journal::open_postgres(&cfg).await.expect("open the PostgreSQL journal");
                TestJournal {
                    journal,
                    backend,
                    dir: None,
                    db: Some(db),
                }
            }
        }
    }
}

/// Declares each test twice, in modules `sqlite` and `postgres`, each with a fresh journal of its own:
///
/// ```ignore
/// cf_testkit::on_both_journals! {
///     async fn dedupes_by_key(t: TestJournal) { let j = &t.journal; /* ... */ }
/// }
/// ```
/// Test names end `sqlite::NAME` and `postgres::NAME`: scripts/test.sh's `postgres::` filter covers the
/// second when PostgreSQL cannot be installed.
#[macro_export]
macro_rules! on_both_journals {
    ($(async fn $name:ident($t:ident : TestJournal) $body:block)*) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let $t = $crate::journal::TestJournal::open($crate::journal::Backend::Sqlite).await;
                    $body
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let $t = $crate::journal::TestJournal::open($crate::journal::Backend::Postgres).await;
                    $body
                }
            )*
        }
    };
}
