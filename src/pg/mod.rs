//! PostgreSQL for several replicas on one database (DESIGN.md section 7, issue 20): the connection
//! setting, the pool, versioned migrations, leader election and the shared Coolify budget. The journal's
//! PostgreSQL backend, with job claims under leases, is `crate::journal::pg`.

pub mod budget;
pub mod config;
pub mod leader;
pub mod migrate;

use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

pub use config::{PgConfig, PgConfigError, TlsMode};

/// Session advisory lock keys: one namespace per job, so two jobs never wait on each other's lock.
pub mod lock_keys {
    /// Held while migrating: replicas starting together migrate one after the other.
    pub const MIGRATE: i64 = 0x6366_6272_0001;
    /// Held by the leader for as long as it leads.
    pub const LEADER: i64 = 0x6366_6272_0002;
    /// The namespace of the journal's transaction locks on one record (with a hash of the record as the
    /// second key).
    pub const RECORD: i32 = 0x6366_6272;
    /// Taken by each batch of a journal prune (a transaction lock): replicas pruning at once take turns.
    pub const PRUNE: i64 = 0x6366_6272_0101;
    /// Taken while starting a rollout (a transaction lock): one rollout per template, one id per rollout.
    pub const ROLLOUT: i64 = 0x6366_6272_0102;
    /// The namespace of the transaction locks on one custom domain (with a hash of the domain).
    pub const DOMAIN: i32 = 0x6366_6273;
}

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    // The driver's error is described in the message, not chained as a source: printed once.
    #[error("PostgreSQL at {target}: {}", describe(error))]
    Connect {
        target: String,
        error: tokio_postgres::Error,
    },
    #[error("PostgreSQL: {}", describe(.0))]
    Query(tokio_postgres::Error),
    #[error("PostgreSQL pool: {0}")]
    Pool(String),
    #[error("PostgreSQL TLS: {0}")]
    Tls(String),
    #[error("PostgreSQL migration {version} ({name}): {}", describe(error))]
    Migration {
        version: i64,
        name: &'static str,
        error: tokio_postgres::Error,
    },
    #[error(
        "the database's schema is at version {found}, newer than this binary knows ({known}): run the newer cf-bridge"
    )]
    SchemaNewer { found: i64, known: i64 },
}

/// The driver's own text for a server error is only "db error": say what the server said. Its message
/// only, not its detail, which can quote row values.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let text = e.to_string();
            match std::error::Error::source(e).map(|c| c.to_string()) {
                Some(cause) if !text.contains(&cause) => format!("{text}: {cause}"),
                _ => text,
            }
        }
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Query(e)
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => PgError::Query(e),
            other => PgError::Pool(other.to_string()),
        }
    }
}

/// rustls (on ring, as the rest of the bridge) with the roots the setting names.
pub(crate) fn rustls_connector(
    root_cert: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| PgError::Tls(format!("reading sslrootcert {}: {e}", path.display())))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| PgError::Tls(format!("sslrootcert {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| PgError::Tls(format!("sslrootcert {}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(PgError::Tls(format!(
                    "sslrootcert {} holds no certificate",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(PgError::Tls(
                    "no system root certificates (install ca-certificates or set sslrootcert)".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// A pool of at most `max_size` connections. Connections are made on demand: building it needs no server.
pub fn pool(cfg: &PgConfig, max_size: usize) -> Result<Pool, PgError> {
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let driver = cfg.driver_config();
    let manager = match &cfg.tls {
        TlsMode::Disable => Manager::from_config(driver, tokio_postgres::NoTls, manager_config),
        TlsMode::VerifyFull { root_cert } => {
            Manager::from_config(driver, rustls_connector(root_cert.as_deref())?, manager_config)
        }
    };
    Pool::builder(manager)
        .max_size(max_size.max(1))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(cfg.connect_timeout))
        .create_timeout(Some(cfg.connect_timeout))
        .build()
        .map_err(|e| PgError::Pool(e.to_string()))
}

/// One connection of its own, outside the pool (the leader's lock, LISTEN): the client and the task that
/// drives it, which ends when the connection does.
pub async fn connect(cfg: &PgConfig) -> Result<(Client, JoinHandle<()>), PgError> {
    let driver = cfg.driver_config();
    let err = |error| PgError::Connect {
        target: cfg.redacted(),
        error,
    };
    match &cfg.tls {
        TlsMode::Disable => {
            let (client, conn) = driver.connect(tokio_postgres::NoTls).await.map_err(err)?;
            Ok((client, tokio::spawn(drive(conn))))
        }
        TlsMode::VerifyFull { root_cert } => {
            let tls = rustls_connector(root_cert.as_deref())?;
            let (client, conn) = driver.connect(tls).await.map_err(err)?;
            Ok((client, tokio::spawn(drive(conn))))
        }
    }
}

async fn drive<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(conn: F) {
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "PostgreSQL connection ended");
    }
}
