use std::os::unix::fs::MetadataExt as _;
use std::time::Duration;

use cf_bridge::pg::{self, PgConfig};
use cf_testkit::Postgres;

#[tokio::test]
async fn each_test_gets_an_empty_database_of_its_own_on_a_server_not_run_as_root() {
    let pg = Postgres::shared();
    let (a, b) = (pg.database().await, pg.database().await);
    assert_ne!(a.name, b.name);
    let pool_a = pg::pool(&PgConfig::parse(&a.url).unwrap(), 1).unwrap();
    let client = pool_a.get().await.unwrap();
    client.batch_execute("CREATE TABLE only_in_a (x int)").await.unwrap();
    let pool_b = pg::pool(&PgConfig::parse(&b.url).unwrap(), 1).unwrap();
    let tables: i64 = pool_b
        .get()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "b is a fresh database");
    let data_dir: String = client.query_one("SHOW data_directory", &[]).await.unwrap().get(0);
    let owner = std::fs::metadata(&data_dir).expect("the data directory").uid();
    assert_ne!(
        owner, 0,
        "PostgreSQL refuses root: the cluster belongs to an unprivileged user"
    );
}

#[tokio::test]
async fn a_dropped_cluster_is_stopped_and_its_directory_removed() {
    // With TLS: its certificates are made by this process, and must go too.
    let pg = Postgres::start_with_tls();
    let db = pg.database().await;
    let cfg = PgConfig::parse(&db.url).unwrap();
    let (client, _conn) = pg::connect(&cfg).await.expect("connects");
    let data_dir: String = client.query_one("SHOW data_directory", &[]).await.unwrap().get(0);
    drop(client);
    let port = pg.port;
    drop(pg);
    let root = std::path::Path::new(&data_dir)
        .parent()
        .expect("the cluster's directory");
    assert!(!root.exists(), "{} removed", root.display());
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await;
    assert!(matches!(refused, Ok(Err(_))), "nothing listens on {port} any more");
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_not_repeated() {
    let pg = Postgres::shared();
    let db = pg.database().await;
    let wrong = db.url.replace(&pg.password, "not-the-Password-42");
    let cfg = PgConfig::parse(&wrong).unwrap();
    let err = match pg::connect(&cfg).await {
        Ok(_) => panic!("connected with a wrong password"),
        Err(e) => e,
    };
    let shown = format!("{err} {err:?} {:?}", std::error::Error::source(&err));
    assert!(shown.contains("password authentication failed"), "{shown}");
    assert!(
        !shown.contains("not-the-Password-42") && !shown.contains(&pg.password),
        "{shown}"
    );
    let pool = pg::pool(&cfg, 1).unwrap();
    let pooled = pool.get().await.map(|_| ()).unwrap_err().to_string();
    assert!(!pooled.contains("not-the-Password-42"), "{pooled}");
}
