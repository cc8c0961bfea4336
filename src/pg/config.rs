//! `journal.url = "postgres://user:password@host:port/database?sslmode=..."`: parsed and checked once, at
//! start, with errors that name the part that is wrong and never the password.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use url::Url;

/// How the connection is protected. libpq's `require` (encrypt without checking who answers) is refused:
/// a bridge holding tenant secrets either verifies the server or says plainly that it does not need TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS (`sslmode=disable`): a private network or a Unix socket.
    Disable,
    /// TLS with the server's certificate and name checked (`sslmode=verify-full`, the default) against
    /// `sslrootcert` (a PEM file) or, without it, the system's roots.
    VerifyFull { root_cert: Option<PathBuf> },
}

/// A checked PostgreSQL connection setting. `Debug` shows no password (`secrecy`).
#[derive(Debug, Clone)]
pub struct PgConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Option<SecretString>,
    pub database: String,
    pub tls: TlsMode,
    pub connect_timeout: Duration,
    pub application_name: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PgConfigError {
    #[error("journal.url is not a URL ({0})")]
    NotAUrl(url::ParseError),
    #[error("journal.url must start with postgres:// or postgresql://, not {0}://")]
    Scheme(String),
    #[error("journal.url has no host")]
    MissingHost,
    #[error("journal.url has no user (postgres://USER:PASSWORD@host/database)")]
    MissingUser,
    #[error("journal.url has no database name (postgres://user@host/DATABASE)")]
    MissingDatabase,
    #[error("journal.url's database name {0:?} must be one path segment")]
    BadDatabase(String),
    #[error("journal.url's user or password is not valid percent-encoded UTF-8")]
    BadEncoding,
    #[error(
        "journal.url has an unknown parameter {0:?} (known: sslmode, sslrootcert, connect_timeout, application_name)"
    )]
    UnknownParameter(String),
    #[error("journal.url has {0:?} twice")]
    RepeatedParameter(String),
    #[error(
        "journal.url's sslmode={0:?} is not supported: use verify-full (the default; checks the server's certificate) \
         or disable"
    )]
    SslMode(String),
    #[error("journal.url's sslrootcert is set but sslmode=disable")]
    RootCertWithoutTls,
    #[error("journal.url's connect_timeout must be whole seconds between 1 and 300, not {0:?}")]
    ConnectTimeout(String),
    #[error("journal.url's application_name must be 1 to 63 printable ASCII characters")]
    ApplicationName,
}

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl PgConfig {
    pub fn parse(raw: &str) -> Result<Self, PgConfigError> {
        let url = Url::parse(raw).map_err(PgConfigError::NotAUrl)?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(PgConfigError::Scheme(url.scheme().to_string()));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(PgConfigError::MissingHost)?;
        // An IPv6 literal comes back bracketed; the driver wants it bare.
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let decode = |s: &str| percent_decode(s).ok_or(PgConfigError::BadEncoding);
        let user = decode(url.username())?;
        if user.is_empty() {
            return Err(PgConfigError::MissingUser);
        }
        let password = match url.password() {
            Some(p) => Some(SecretString::from(decode(p)?)),
            None => None,
        };
        let path = url.path().trim_start_matches('/');
        if path.is_empty() {
            return Err(PgConfigError::MissingDatabase);
        }
        let database = decode(path).map_err(|_| PgConfigError::BadDatabase(path.to_string()))?;
        if database.contains('/') || database.chars().any(char::is_control) {
            return Err(PgConfigError::BadDatabase(database));
        }

        let mut sslmode = None;
        let mut root_cert = None;
        let mut connect_timeout = None;
        let mut application_name = None;
        for (key, value) in url.query_pairs() {
            let slot = match key.as_ref() {
                "sslmode" => &mut sslmode,
                "sslrootcert" => &mut root_cert,
                "connect_timeout" => &mut connect_timeout,
                "application_name" => &mut application_name,
                other => return Err(PgConfigError::UnknownParameter(other.to_string())),
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(PgConfigError::RepeatedParameter(key.into_owned()));
            }
        }
        let tls = match sslmode.as_deref() {
            None | Some("verify-full") => TlsMode::VerifyFull {
                root_cert: root_cert.take().map(PathBuf::from),
            },
            Some("disable") => TlsMode::Disable,
            Some(other) => return Err(PgConfigError::SslMode(other.to_string())),
        };
        if root_cert.is_some() {
            return Err(PgConfigError::RootCertWithoutTls);
        }
        let connect_timeout = match connect_timeout {
            None => DEFAULT_CONNECT_TIMEOUT,
            Some(raw) => match raw.parse::<u64>() {
                Ok(secs @ 1..=300) => Duration::from_secs(secs),
                _ => return Err(PgConfigError::ConnectTimeout(raw)),
            },
        };
        let application_name = application_name.unwrap_or_else(|| "cf-bridge".into());
        if application_name.is_empty()
            || application_name.len() > 63
            || !application_name.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        {
            return Err(PgConfigError::ApplicationName);
        }
        Ok(PgConfig {
            host,
            port: url.port().unwrap_or(5432),
            user,
            password,
            database,
            tls,
            connect_timeout,
            application_name,
        })
    }

    /// The same setting with another `application_name` (a replica's id, shown in `pg_stat_activity`).
    /// Characters PostgreSQL would not show are dropped; an empty name keeps the current one.
    pub fn with_application_name(mut self, name: &str) -> Self {
        let name: String = name
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .take(63)
            .collect();
        if !name.is_empty() {
            self.application_name = name;
        }
        self
    }

    /// `postgres://user@host:port/database` without the password, for logs and errors.
    pub fn redacted(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("postgres://{}@{host}:{}/{}", self.user, self.port, self.database)
    }

    /// The driver's configuration (the only place the password is exposed).
    pub fn driver_config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.database)
            .connect_timeout(self.connect_timeout)
            .application_name(&self.application_name)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10));
        if let Some(p) = &self.password {
            c.password(p.expose_secret());
        }
        c.ssl_mode(match self.tls {
            TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
            TlsMode::VerifyFull { .. } => tokio_postgres::config::SslMode::Require,
        });
        c
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_url_is_parsed_and_its_password_is_never_shown() {
        let c = PgConfig::parse(
            "postgres://bridge:s%40cr3t-pw@db.internal:6543/cf?sslmode=verify-full&sslrootcert=/etc/ca.pem&connect_timeout=5&application_name=replica-1",
        )
        .unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.user.as_str(), c.database.as_str()),
            ("db.internal", 6543, "bridge", "cf")
        );
        assert_eq!(
            c.tls,
            TlsMode::VerifyFull {
                root_cert: Some("/etc/ca.pem".into())
            }
        );
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.application_name, "replica-1");
        assert_eq!(
            c.password.as_ref().map(|p| p.expose_secret().to_string()).as_deref(),
            Some("s@cr3t-pw")
        );
        let shown = format!("{c:?} {} {:?}", c.redacted(), c.driver_config());
        assert!(
            !shown.contains("s@cr3t-pw") && !shown.contains("s%40cr3t-pw"),
            "{shown}"
        );
        assert_eq!(c.redacted(), "postgres://bridge@db.internal:6543/cf");
        assert_eq!(
            c.clone().with_application_name("replica\n2").application_name,
            "replica2"
        );
        assert_eq!(c.clone().with_application_name("\n").application_name, "replica-1");
    }

    #[test]
    fn defaults_are_verified_tls_port_5432_and_ten_seconds() {
        let c = PgConfig::parse("postgresql://u@[::1]/db").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 5432));
        assert_eq!(c.tls, TlsMode::VerifyFull { root_cert: None });
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.redacted(), "postgres://u@[::1]:5432/db");
        assert!(c.password.is_none());
    }

    #[test]
    fn each_bad_part_gets_its_own_error_without_the_password() {
        use PgConfigError::*;
        let cases: &[(&str, PgConfigError)] = &[
            ("mysql://u:hunter2@h/db", Scheme("mysql".into())),
            ("postgres://:hunter2@h/db", MissingUser),
            ("postgres://u:hunter2@h", MissingDatabase),
            ("postgres://u:hunter2@h/", MissingDatabase),
            ("postgres://u:hunter2@h/a/b", BadDatabase("a/b".into())),
            ("postgres://u:hunter2%ff@h/db", BadEncoding),
            ("postgres://u:hunter2@h/db?sslmode=require", SslMode("require".into())),
            ("postgres://u:hunter2@h/db?sslmode=prefer", SslMode("prefer".into())),
            (
                "postgres://u:hunter2@h/db?sslmode=disable&sslrootcert=/ca",
                RootCertWithoutTls,
            ),
            (
                "postgres://u:hunter2@h/db?connect_timeout=0",
                ConnectTimeout("0".into()),
            ),
            (
                "postgres://u:hunter2@h/db?connect_timeout=5s",
                ConnectTimeout("5s".into()),
            ),
            ("postgres://u:hunter2@h/db?pool=3", UnknownParameter("pool".into())),
            (
                "postgres://u:hunter2@h/db?sslmode=disable&sslmode=disable",
                RepeatedParameter("sslmode".into()),
            ),
            ("postgres://u:hunter2@h/db?application_name=", ApplicationName),
        ];
        for (raw, want) in cases {
            let got = PgConfig::parse(raw).unwrap_err();
            assert_eq!(&got, want, "{raw}");
            assert!(!got.to_string().contains("hunter2"), "{got}");
        }
        assert!(matches!(PgConfig::parse("not a url"), Err(NotAUrl(_))));
        assert!(matches!(
            PgConfig::parse("postgres:///db"),
            Err(MissingHost | NotAUrl(_))
        ));
    }
}
