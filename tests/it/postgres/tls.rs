use cf_bridge::pg::{self, PgConfig, PgError};
use cf_testkit::Postgres;

fn verify_full(url: &str, root_cert: Option<&std::path::Path>) -> PgConfig {
    let tls = match root_cert {
        Some(ca) => format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        None => "sslmode=verify-full".to_string(),
    };
    PgConfig::parse(&url.replace("sslmode=disable", &tls)).unwrap()
}

#[tokio::test]
async fn verified_tls_connects_with_the_named_root_and_refuses_a_server_it_cannot_verify() {
    let pg = Postgres::start_with_tls();
    let db = pg.database().await;
    let ca = pg.ca_cert.as_deref().unwrap();

    let cfg = verify_full(&db.url, Some(ca));
    let (client, _conn) = pg::connect(&cfg).await.expect("TLS with the server's CA");
    let ssl: bool = client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the session is encrypted");
    let pool = pg::pool(&cfg, 1).unwrap();
    let pooled = pool.get().await.expect("the pool uses TLS too");
    let ssl: bool = pooled
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the pooled session is encrypted");

    // The system's roots do not know the test CA: refused, not downgraded.
    let err = match pg::connect(&verify_full(&db.url, None)).await {
        Ok(_) => panic!("connected to a server whose certificate nobody vouches for"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("certificate"), "{err}");
}

#[tokio::test]
async fn verify_full_never_falls_back_to_plaintext() {
    let pg = Postgres::shared();
    let db = pg.database().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    // Any valid root will do: the server offers no TLS at all.
    let any = Postgres::start_with_tls();
    std::fs::copy(any.ca_cert.as_deref().unwrap(), &ca).unwrap();
    match pg::connect(&verify_full(&db.url, Some(&ca))).await {
        Ok(_) => panic!("a plaintext session despite sslmode=verify-full"),
        Err(e) => assert!(e.to_string().contains("TLS"), "{e}"),
    }
}

#[tokio::test]
async fn an_unreadable_or_empty_root_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let cfg = PgConfig::parse(&format!("postgres://u@127.0.0.1/db?sslrootcert={}", missing.display())).unwrap();
    match pg::pool(&cfg, 1) {
        Err(PgError::Tls(m)) => assert!(m.contains("missing.pem"), "{m}"),
        other => panic!("expected a TLS error, got {:?}", other.map(|_| ())),
    }
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate").unwrap();
    let cfg = PgConfig::parse(&format!("postgres://u@127.0.0.1/db?sslrootcert={}", empty.display())).unwrap();
    match pg::pool(&cfg, 1) {
        Err(PgError::Tls(m)) => assert!(m.contains("no certificate"), "{m}"),
        other => panic!("expected a TLS error, got {:?}", other.map(|_| ())),
    }
}
