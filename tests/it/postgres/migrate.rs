use cf_bridge::pg::migrate::{MIGRATIONS, Migration, migrate, migrate_with};
use cf_bridge::pg::{self, PgConfig, PgError};
use cf_testkit::Postgres;

async fn empty_db() -> PgConfig {
    PgConfig::parse(&Postgres::shared().database().await.url).unwrap()
}

async fn versions(client: &tokio_postgres::Client) -> Vec<i64> {
    client
        .query("SELECT version FROM schema_migrations ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn migrations_apply_once_and_are_recorded() {
    let cfg = empty_db().await;
    let (mut client, _conn) = pg::connect(&cfg).await.unwrap();
    let all: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(migrate(&mut client).await.unwrap(), all);
    assert_eq!(migrate(&mut client).await.unwrap(), Vec::<i64>::new());
    assert_eq!(versions(&client).await, all);
}

#[tokio::test]
async fn replicas_starting_at_once_migrate_one_after_the_other() {
    let cfg = empty_db().await;
    let runs = (0..6).map(|_| {
        let cfg = cfg.clone();
        tokio::spawn(async move {
            let (mut client, _conn) = pg::connect(&cfg).await.unwrap();
            migrate(&mut client).await
        })
    });
    let mut applied = Vec::new();
    for run in runs.collect::<Vec<_>>() {
        match run.await.unwrap() {
            Ok(v) => applied.extend(v),
            Err(e) => panic!("a replica failed to migrate: {e}"),
        }
    }
    applied.sort();
    let all: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(applied, all, "each migration applied by exactly one replica");
}

#[tokio::test]
async fn a_failing_migration_is_rolled_back_named_and_releases_the_lock() {
    let cfg = empty_db().await;
    let good = Migration {
        version: 1,
        name: "a",
        sql: "CREATE TABLE a (x int)",
    };
    let bad = Migration {
        version: 2,
        name: "b",
        sql: "CREATE TABLE b (x int); SELECT no_such_function()",
    };
    let (mut client, _conn) = pg::connect(&cfg).await.unwrap();
    match migrate_with(&mut client, &[good, bad]).await {
        Err(
            e @ PgError::Migration {
                version: 2, name: "b", ..
            },
        ) => {
            assert!(e.to_string().contains("no_such_function() does not exist"), "{e}");
        }
        other => panic!("expected migration 2 to fail, got {other:?}"),
    }
    assert_eq!(versions(&client).await, vec![1]);
    let b: Option<String> = client
        .query_one("SELECT to_regclass('b')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(b, None, "migration 2's table was rolled back");
    // Another replica (its own session) is not kept waiting by a lock left behind.
    let (mut other, _conn2) = pg::connect(&cfg).await.unwrap();
    let fixed = Migration {
        sql: "CREATE TABLE b (x int)",
        ..bad
    };
    let applied = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        migrate_with(&mut other, &[good, fixed]),
    )
    .await
    .expect("the migration lock was released")
    .unwrap();
    assert_eq!(applied, vec![2]);
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused() {
    let cfg = empty_db().await;
    let (mut client, _conn) = pg::connect(&cfg).await.unwrap();
    migrate(&mut client).await.unwrap();
    client
        .execute(
            "INSERT INTO schema_migrations (version, name) VALUES (999, 'from the future')",
            &[],
        )
        .await
        .unwrap();
    match migrate(&mut client).await {
        Err(PgError::SchemaNewer { found: 999, .. }) => {}
        other => panic!("expected SchemaNewer, got {other:?}"),
    }
}
