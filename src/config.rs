//! Settings: defaults, then a TOML file, then `CF_BRIDGE__SECTION__KEY` environment overrides, then
//! validation that names the offending key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("invalid configuration:\n{}", format_problems(.0))]
    Invalid(Vec<Problem>),
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {}: {}", p.key, p.reason))
        .collect::<Vec<_>>()
        .join("\n")
}

/// How the bridge authenticates to PocketBase.
#[derive(Clone)]
pub enum PocketBaseAuth {
    Password { email: String, password: SecretString },
    Token(SecretString),
}

#[derive(Clone)]
pub struct PocketBaseSettings {
    pub url: Url,
    pub auth: PocketBaseAuth,
    pub realtime_idle_timeout: Duration,
    /// How often the bridge pings its own realtime stream (each ping must come back within the same
    /// time); `None` leaves only the idle watchdog.
    pub realtime_ping_interval: Option<Duration>,
    pub resync_interval: Duration,
}

#[derive(Clone)]
pub struct CoolifySettings {
    pub url: Url,
    pub token: SecretString,
    pub server_uuid: Option<String>,
    pub environment: String,
    pub requests_per_minute: u32,
    pub request_timeout: Duration,
}

#[derive(Clone)]
pub struct WebhookSettings {
    /// `whsec_<base64>`; checked for shape here, parsed by the webhook module.
    pub secret: SecretString,
}

#[derive(Clone)]
pub struct AdminSettings {
    pub token: SecretString,
    pub bind: SocketAddr,
    /// How long an operator page session lasts.
    pub session_ttl: Duration,
    /// The address operators open the page at, when it is not `http://<bind>` (a TLS proxy): its origin is
    /// the only one allowed to post, and `https` makes the session cookie Secure.
    pub public_url: Option<Url>,
}

#[derive(Clone, Debug)]
pub struct QueueSettings {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrphanPolicy {
    Report,
    Remove,
}

#[derive(Clone, Debug)]
pub struct ReconcileSettings {
    pub templates_dir: PathBuf,
    pub orphans: OrphanPolicy,
    pub running_timeout: Duration,
    pub health_poll_interval: Duration,
    pub bad_readings_before_error: u32,
    /// Ceiling for the `sovereign` plan.
    pub sovereign_cpu: f64,
    pub sovereign_mem_mb: u32,
}

#[derive(Clone)]
pub struct SecretsSettings {
    /// Key for `secrets_hash`, the per-stack router key and the local secret store.
    pub key: SecretString,
    /// Earlier values of `key`: store entries written under one of them are re-encrypted under `key`.
    pub previous_keys: Vec<SecretString>,
    pub store_path: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Clone, Debug)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

/// The validated configuration.
#[derive(Clone)]
pub struct Settings {
    pub pocketbase: PocketBaseSettings,
    pub coolify: CoolifySettings,
    pub webhook: WebhookSettings,
    pub admin: AdminSettings,
    pub journal_path: PathBuf,
    pub base_domain: String,
    pub router_base_url: Url,
    pub log: LogSettings,
    pub secrets: SecretsSettings,
    pub queue: QueueSettings,
    pub reconcile: ReconcileSettings,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    pocketbase: RawPocketBase,
    #[serde(default)]
    coolify: RawCoolify,
    #[serde(default)]
    webhook: RawWebhook,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    journal: RawJournal,
    #[serde(default)]
    domains: RawDomains,
    #[serde(default)]
    router: RawRouter,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    secrets: RawSecrets,
    #[serde(default)]
    queue: RawQueue,
    #[serde(default)]
    reconcile: RawReconcile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPocketBase {
    url: Option<String>,
    superuser_email: Option<String>,
    superuser_password: Option<SecretString>,
    token: Option<SecretString>,
    realtime_idle_timeout_secs: Option<u64>,
    realtime_ping_interval_secs: Option<u64>,
    resync_interval_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCoolify {
    url: Option<String>,
    token: Option<SecretString>,
    server_uuid: Option<String>,
    environment: Option<String>,
    requests_per_minute: Option<u32>,
    request_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    secret: Option<SecretString>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    token: Option<SecretString>,
    bind: Option<String>,
    session_ttl_secs: Option<u64>,
    public_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJournal {
    path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomains {
    base_domain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouter {
    base_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecrets {
    key: Option<SecretString>,
    previous_keys: Option<Vec<SecretString>>,
    store_path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    concurrency: Option<usize>,
    max_attempts: Option<u32>,
    base_backoff_ms: Option<u64>,
    max_backoff_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReconcile {
    templates_dir: Option<PathBuf>,
    orphans: Option<String>,
    running_timeout_secs: Option<u64>,
    health_poll_interval_secs: Option<u64>,
    bad_readings_before_error: Option<u32>,
    sovereign_cpu: Option<f64>,
    sovereign_mem_mb: Option<u32>,
}

/// Loads the file (if it exists, or fails if `required`), applies environment overrides and validates.
pub fn load(path: &Path, required: bool) -> Result<Settings, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    load_from(path, required, &env)
}

/// Like [`load`], with an explicit environment (for tests).
pub fn load_from(path: &Path, required: bool, env: &[(String, String)]) -> Result<Settings, ConfigError> {
    let display = path.display().to_string();
    if required && !path.exists() {
        return Err(ConfigError::File {
            path: display,
            reason: "file not found".into(),
        });
    }
    let mut builder = config::Config::builder();
    if path.exists() {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: display.clone(),
            reason: format!("cannot be read: {e}"),
        })?;
        check_toml_syntax(&text).map_err(|reason| ConfigError::File {
            path: display.clone(),
            reason,
        })?;
        builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
    }
    let env_map: config::Map<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("CF_BRIDGE__"))
        .cloned()
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix("CF_BRIDGE")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            // Lists come comma-separated from the environment.
            .list_separator(",")
            .with_list_parse_key("secrets.previous_keys")
            .source(Some(env_map)),
    );
    let built = builder.build().map_err(|e| ConfigError::File {
        path: display.clone(),
        reason: without_values(&e.to_string()),
    })?;
    let raw: Raw = built.try_deserialize().map_err(|e| ConfigError::File {
        path: display,
        reason: without_values(&e.to_string()),
    })?;
    validate(raw)
}

/// Checks the file is TOML, reporting a syntax error by line and column only: the parser's own message
/// quotes the offending line, which may hold a secret (an unterminated `secret = "whsec_...`).
fn check_toml_syntax(text: &str) -> Result<(), String> {
    let Err(e) = text.parse::<toml::Table>() else {
        return Ok(());
    };
    let at = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
    let before = text.get(..at).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    Err(format!(
        "TOML syntax error at line {line}, column {column} (the line is not shown: it may hold a secret)"
    ))
}

/// A deserializer message with the offending value taken out (`invalid type: string "…", expected …`):
/// the value may be a secret given to the wrong key.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = ["invalid type: ", "invalid value: "]
        .iter()
        .filter_map(|m| rest.find(m).map(|i| i + m.len()))
        .min()
    {
        out.push_str(&rest[..i]);
        out.push_str("(value not shown)");
        rest = &rest[i..];
        rest = match rest.find(", expected") {
            Some(j) => &rest[j..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn fail(&mut self, key: &str, reason: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            reason: reason.into(),
        });
    }

    fn url(&mut self, key: &str, value: Option<&str>, default: Option<&str>) -> Option<Url> {
        let Some(s) = value.or(default) else {
            self.fail(key, "is required");
            return None;
        };
        match Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(_) => {
                self.fail(key, "must be an http(s) URL with a host");
                None
            }
            Err(e) => {
                self.fail(key, format!("is not a valid URL ({e})"));
                None
            }
        }
    }

    fn secret(&mut self, key: &str, value: Option<SecretString>, min_len: usize) -> Option<SecretString> {
        match value {
            None => {
                self.fail(key, "is required");
                None
            }
            Some(s) if s.expose_secret().trim().is_empty() => {
                self.fail(key, "must not be empty");
                None
            }
            Some(s) if s.expose_secret().len() < min_len => {
                self.fail(key, format!("is too short (at least {min_len} characters)"));
                None
            }
            Some(s) => Some(s),
        }
    }

    fn positive(&mut self, key: &str, value: Option<u64>, default: u64) -> u64 {
        let v = value.unwrap_or(default);
        if v == 0 {
            self.fail(key, "must be greater than 0");
        }
        v
    }
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn validate(raw: Raw) -> Result<Settings, ConfigError> {
    let mut c = Checker { problems: Vec::new() };

    let pb_url = c.url("pocketbase.url", raw.pocketbase.url.as_deref(), None);
    let pb_auth = match (
        raw.pocketbase.superuser_email,
        raw.pocketbase.superuser_password,
        raw.pocketbase.token,
    ) {
        (_, _, Some(token)) => c.secret("pocketbase.token", Some(token), 1).map(PocketBaseAuth::Token),
        (Some(email), Some(password), None) => {
            if !email.contains('@') {
                c.fail("pocketbase.superuser_email", "must be an email address");
            }
            c.secret("pocketbase.superuser_password", Some(password), 1)
                .map(|password| PocketBaseAuth::Password { email, password })
        }
        (Some(_), None, None) => {
            c.fail(
                "pocketbase.superuser_password",
                "is required with pocketbase.superuser_email",
            );
            None
        }
        (None, Some(_), None) => {
            c.fail(
                "pocketbase.superuser_email",
                "is required with pocketbase.superuser_password",
            );
            None
        }
        (None, None, None) => {
            c.fail(
                "pocketbase",
                "set either superuser_email and superuser_password, or token",
            );
            None
        }
    };
    let idle = c.positive(
        "pocketbase.realtime_idle_timeout_secs",
        raw.pocketbase.realtime_idle_timeout_secs,
        90,
    );
    let ping = raw
        .pocketbase
        .realtime_ping_interval_secs
        .unwrap_or(crate::pocketbase::realtime::DEFAULT_PING_INTERVAL.as_secs());
    let resync = c.positive(
        "pocketbase.resync_interval_secs",
        raw.pocketbase.resync_interval_secs,
        300,
    );

    let coolify_url = c.url("coolify.url", raw.coolify.url.as_deref(), None);
    let coolify_token = c.secret("coolify.token", raw.coolify.token, 1);
    let server_uuid = raw.coolify.server_uuid.filter(|s| !s.trim().is_empty());
    if let Some(uuid) = &server_uuid
        && !uuid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        c.fail("coolify.server_uuid", "must contain only letters, digits and '-'");
    }
    let environment = raw.coolify.environment.unwrap_or_else(|| "production".into());
    if environment.trim().is_empty() {
        c.fail("coolify.environment", "must not be empty");
    }
    let rpm = raw.coolify.requests_per_minute.unwrap_or(180);
    if rpm == 0 || rpm > 100_000 {
        c.fail("coolify.requests_per_minute", "must be between 1 and 100000");
    }
    let coolify_timeout = c.positive("coolify.request_timeout_secs", raw.coolify.request_timeout_secs, 30);

    let webhook_secret = c.secret("webhook.secret", raw.webhook.secret, 1);
    if let Some(s) = &webhook_secret
        && !s.expose_secret().starts_with("whsec_")
    {
        c.fail(
            "webhook.secret",
            "must start with whsec_ (generate one with `cf-bridge secret`)",
        );
    }

    let admin_token = c.secret("admin.token", raw.admin.token, 16);
    let bind_str = raw.admin.bind.unwrap_or_else(|| "127.0.0.1:8088".into());
    let bind = match bind_str.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            c.fail(
                "admin.bind",
                format!("{bind_str:?} is not an address like 127.0.0.1:8088"),
            );
            None
        }
    };

    let session_ttl = c.positive("admin.session_ttl_secs", raw.admin.session_ttl_secs, 8 * 3600);
    if session_ttl > 7 * 24 * 3600 {
        c.fail("admin.session_ttl_secs", "must be at most 604800 (a week)");
    }
    let public_url = match raw.admin.public_url.as_deref().filter(|s| !s.trim().is_empty()) {
        None => None,
        Some(s) => c.url("admin.public_url", Some(s), None).filter(|u| {
            let bare = u.path() == "/" && u.query().is_none() && u.username().is_empty();
            if !bare {
                c.fail(
                    "admin.public_url",
                    "must be a bare origin such as https://ops.example.com",
                );
            }
            bare
        }),
    };

    let journal_path = raw.journal.path.unwrap_or_else(|| PathBuf::from("cf-bridge.db"));
    if journal_path.as_os_str().is_empty() {
        c.fail("journal.path", "must not be empty");
    }

    let base_domain = raw.domains.base_domain.unwrap_or_default();
    if base_domain.is_empty() {
        c.fail("domains.base_domain", "is required");
    } else if !is_dns_name(&base_domain) {
        c.fail(
            "domains.base_domain",
            format!("{base_domain:?} is not a lowercase DNS name"),
        );
    }

    let router = c.url("router.base_url", raw.router.base_url.as_deref(), None);

    let format = match raw.log.format.as_deref().unwrap_or("pretty") {
        "json" => LogFormat::Json,
        "pretty" | "text" => LogFormat::Pretty,
        other => {
            c.fail("log.format", format!("{other:?} is not one of json, pretty"));
            LogFormat::Pretty
        }
    };
    let level = raw.log.level.unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        c.fail(
            "log.level",
            format!("{level:?} is not a valid filter (e.g. info, cf_bridge=debug)"),
        );
    }

    let secrets_key = c.secret("secrets.key", raw.secrets.key, 32);
    let previous_keys = raw.secrets.previous_keys.unwrap_or_default();
    for (i, k) in previous_keys.iter().enumerate() {
        if k.expose_secret().is_empty() {
            c.fail(&format!("secrets.previous_keys[{i}]"), "must not be empty");
        } else if secrets_key
            .as_ref()
            .is_some_and(|current| current.expose_secret() == k.expose_secret())
        {
            c.fail(&format!("secrets.previous_keys[{i}]"), "is the same as secrets.key");
        }
    }
    let store_path = raw
        .secrets
        .store_path
        .unwrap_or_else(|| PathBuf::from("cf-bridge-secrets.bin"));

    let concurrency = raw.queue.concurrency.unwrap_or(32);
    if concurrency == 0 || concurrency > 256 {
        c.fail("queue.concurrency", "must be between 1 and 256");
    }
    let max_attempts = raw.queue.max_attempts.unwrap_or(12);
    if max_attempts == 0 {
        c.fail("queue.max_attempts", "must be greater than 0");
    }
    let base_backoff = c.positive("queue.base_backoff_ms", raw.queue.base_backoff_ms, 500);
    let max_backoff = c.positive("queue.max_backoff_secs", raw.queue.max_backoff_secs, 300);

    let orphans = match raw.reconcile.orphans.as_deref().unwrap_or("report") {
        "report" => OrphanPolicy::Report,
        "remove" => OrphanPolicy::Remove,
        other => {
            c.fail("reconcile.orphans", format!("{other:?} is not one of report, remove"));
            OrphanPolicy::Report
        }
    };
    let running_timeout = c.positive(
        "reconcile.running_timeout_secs",
        raw.reconcile.running_timeout_secs,
        300,
    );
    let health_poll = c.positive(
        "reconcile.health_poll_interval_secs",
        raw.reconcile.health_poll_interval_secs,
        30,
    );
    let bad_readings = raw.reconcile.bad_readings_before_error.unwrap_or(3);
    if bad_readings == 0 {
        c.fail("reconcile.bad_readings_before_error", "must be greater than 0");
    }
    let sovereign_cpu = raw.reconcile.sovereign_cpu.unwrap_or(4.0);
    if !(sovereign_cpu.is_finite() && sovereign_cpu > 0.0 && sovereign_cpu <= 256.0) {
        c.fail("reconcile.sovereign_cpu", "must be a number of cores between 0 and 256");
    }
    let sovereign_mem = raw.reconcile.sovereign_mem_mb.unwrap_or(8192);
    if sovereign_mem < 16 {
        c.fail("reconcile.sovereign_mem_mb", "must be at least 16");
    }

    if !c.problems.is_empty() {
        return Err(ConfigError::Invalid(c.problems));
    }
    // Every Option below is Some: each None pushed a problem above.
    match (
        pb_url,
        pb_auth,
        coolify_url,
        coolify_token,
        webhook_secret,
        admin_token,
        bind,
        router,
        secrets_key,
    ) {
        (
            Some(pb_url),
            Some(pb_auth),
            Some(coolify_url),
            Some(coolify_token),
            Some(webhook_secret),
            Some(admin_token),
            Some(bind),
            Some(router),
            Some(secrets_key),
        ) => Ok(Settings {
            pocketbase: PocketBaseSettings {
                url: pb_url,
                auth: pb_auth,
                realtime_idle_timeout: Duration::from_secs(idle),
                realtime_ping_interval: (ping > 0).then(|| Duration::from_secs(ping)),
                resync_interval: Duration::from_secs(resync),
            },
            coolify: CoolifySettings {
                url: coolify_url,
                token: coolify_token,
                server_uuid,
                environment,
                requests_per_minute: rpm,
                request_timeout: Duration::from_secs(coolify_timeout),
            },
            webhook: WebhookSettings { secret: webhook_secret },
            admin: AdminSettings {
                token: admin_token,
                bind,
                session_ttl: Duration::from_secs(session_ttl),
                public_url,
            },
            journal_path,
            base_domain,
            router_base_url: router,
            log: LogSettings { format, level },
            secrets: SecretsSettings {
                key: secrets_key,
                previous_keys,
                store_path,
            },
            queue: QueueSettings {
                concurrency,
                max_attempts,
                base_backoff: Duration::from_millis(base_backoff),
                max_backoff: Duration::from_secs(max_backoff),
            },
            reconcile: ReconcileSettings {
                templates_dir: raw
                    .reconcile
                    .templates_dir
                    .unwrap_or_else(|| PathBuf::from("templates")),
                orphans,
                running_timeout: Duration::from_secs(running_timeout),
                health_poll_interval: Duration::from_secs(health_poll),
                bad_readings_before_error: bad_readings,
                sovereign_cpu,
                sovereign_mem_mb: sovereign_mem,
            },
        }),
        _ => Err(ConfigError::Invalid(vec![Problem {
            key: "config".into(),
            reason: "incomplete configuration".into(),
        }])),
    }
}

const REDACTED: &str = "<redacted>";

/// The effective configuration as TOML with every secret redacted (for `check-config`).
impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[pocketbase]")?;
        writeln!(f, "url = {:?}", self.pocketbase.url.as_str())?;
        match &self.pocketbase.auth {
            PocketBaseAuth::Password { email, .. } => {
                writeln!(f, "superuser_email = {email:?}")?;
                writeln!(f, "superuser_password = {REDACTED:?}")?;
            }
            PocketBaseAuth::Token(_) => writeln!(f, "token = {REDACTED:?}")?,
        }
        writeln!(
            f,
            "realtime_idle_timeout_secs = {}",
            self.pocketbase.realtime_idle_timeout.as_secs()
        )?;
        writeln!(
            f,
            "realtime_ping_interval_secs = {}",
            self.pocketbase.realtime_ping_interval.map_or(0, |d| d.as_secs())
        )?;
        writeln!(
            f,
            "resync_interval_secs = {}",
            self.pocketbase.resync_interval.as_secs()
        )?;
        writeln!(f, "\n[coolify]")?;
        writeln!(f, "url = {:?}", self.coolify.url.as_str())?;
        writeln!(f, "token = {REDACTED:?}")?;
        if let Some(s) = &self.coolify.server_uuid {
            writeln!(f, "server_uuid = {s:?}")?;
        }
        writeln!(f, "environment = {:?}", self.coolify.environment)?;
        writeln!(f, "requests_per_minute = {}", self.coolify.requests_per_minute)?;
        writeln!(f, "request_timeout_secs = {}", self.coolify.request_timeout.as_secs())?;
        writeln!(f, "\n[webhook]\nsecret = {REDACTED:?}")?;
        writeln!(f, "\n[admin]\ntoken = {REDACTED:?}\nbind = \"{}\"", self.admin.bind)?;
        writeln!(f, "session_ttl_secs = {}", self.admin.session_ttl.as_secs())?;
        if let Some(u) = &self.admin.public_url {
            writeln!(f, "public_url = {:?}", u.as_str())?;
        }
        writeln!(f, "\n[journal]\npath = {:?}", self.journal_path.display().to_string())?;
        writeln!(f, "\n[domains]\nbase_domain = {:?}", self.base_domain)?;
        writeln!(f, "\n[router]\nbase_url = {:?}", self.router_base_url.as_str())?;
        let format = match self.log.format {
            LogFormat::Json => "json",
            LogFormat::Pretty => "pretty",
        };
        writeln!(f, "\n[log]\nformat = {format:?}\nlevel = {:?}", self.log.level)?;
        writeln!(f, "\n[secrets]\nkey = {REDACTED:?}")?;
        if !self.secrets.previous_keys.is_empty() {
            let redacted = vec![REDACTED; self.secrets.previous_keys.len()];
            writeln!(f, "previous_keys = {redacted:?}")?;
        }
        writeln!(f, "store_path = {:?}", self.secrets.store_path.display().to_string())?;
        writeln!(
            f,
            "\n[queue]\nconcurrency = {}\nmax_attempts = {}\nbase_backoff_ms = {}\nmax_backoff_secs = {}",
            self.queue.concurrency,
            self.queue.max_attempts,
            self.queue.base_backoff.as_millis(),
            self.queue.max_backoff.as_secs()
        )?;
        let orphans = match self.reconcile.orphans {
            OrphanPolicy::Report => "report",
            OrphanPolicy::Remove => "remove",
        };
        writeln!(
            f,
            "\n[reconcile]\ntemplates_dir = {:?}\norphans = {orphans:?}\nrunning_timeout_secs = {}\nhealth_poll_interval_secs = {}\nbad_readings_before_error = {}\nsovereign_cpu = {}\nsovereign_mem_mb = {}",
            self.reconcile.templates_dir.display().to_string(),
            self.reconcile.running_timeout.as_secs(),
            self.reconcile.health_poll_interval.as_secs(),
            self.reconcile.bad_readings_before_error,
            self.reconcile.sovereign_cpu,
            self.reconcile.sovereign_mem_mb
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn full_env() -> Vec<(String, String)> {
        env(&[
            ("CF_BRIDGE__POCKETBASE__URL", "http://127.0.0.1:8090"),
            ("CF_BRIDGE__POCKETBASE__SUPERUSER_EMAIL", "bridge@example.com"),
            ("CF_BRIDGE__POCKETBASE__SUPERUSER_PASSWORD", "pw-canary-1234"),
            ("CF_BRIDGE__COOLIFY__URL", "http://127.0.0.1:8000"),
            ("CF_BRIDGE__COOLIFY__TOKEN", "1|coolify-canary"),
            ("CF_BRIDGE__WEBHOOK__SECRET", "whsec_d2ViaG9vay1jYW5hcnk="),
            ("CF_BRIDGE__ADMIN__TOKEN", "admin-canary-0123456789"),
            ("CF_BRIDGE__DOMAINS__BASE_DOMAIN", "bots.example.com"),
            ("CF_BRIDGE__ROUTER__BASE_URL", "https://router.example.com"),
            ("CF_BRIDGE__SECRETS__KEY", "key-canary-0123456789abcdef0123456789"),
        ])
    }

    #[test]
    fn env_alone_is_enough_and_display_redacts_every_secret() {
        let s = load_from(Path::new("/nonexistent/cf-bridge.toml"), false, &full_env()).expect("valid");
        assert_eq!(s.base_domain, "bots.example.com");
        assert_eq!(s.coolify.requests_per_minute, 180);
        let shown = s.to_string();
        for canary in [
            "pw-canary",
            "coolify-canary",
            "d2ViaG9vay1jYW5hcnk",
            "admin-canary",
            "key-canary",
        ] {
            assert!(!shown.contains(canary), "{canary} leaked in:\n{shown}");
        }
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn env_overrides_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[domains]\nbase_domain = \"file.example.com\"\n[queue]\nconcurrency = 3\n",
        )
        .expect("write");
        let mut e = full_env();
        e.retain(|(k, _)| k != "CF_BRIDGE__DOMAINS__BASE_DOMAIN");
        let s = load_from(&path, true, &e).expect("valid");
        assert_eq!(s.base_domain, "file.example.com");
        assert_eq!(s.queue.concurrency, 3);
        e.push(("CF_BRIDGE__QUEUE__CONCURRENCY".into(), "5".into()));
        let s = load_from(&path, true, &e).expect("valid");
        assert_eq!(s.queue.concurrency, 5);
    }

    #[test]
    fn problems_name_the_key() {
        let mut e = full_env();
        e.retain(|(k, _)| k != "CF_BRIDGE__COOLIFY__TOKEN");
        e.push(("CF_BRIDGE__DOMAINS__BASE_DOMAIN".into(), "Not A Domain".into()));
        e.push(("CF_BRIDGE__LOG__FORMAT".into(), "xml".into()));
        e.push(("CF_BRIDGE__ADMIN__BIND".into(), "nowhere".into()));
        let err = load_from(Path::new("/nonexistent"), false, &e).err().expect("invalid");
        let text = err.to_string();
        for key in ["coolify.token", "domains.base_domain", "log.format", "admin.bind"] {
            assert!(text.contains(key), "{key} missing from:\n{text}");
        }
        assert!(!text.contains("admin-canary"));
    }

    #[test]
    fn unknown_keys_and_bad_types_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[coolify]\nurll = \"x\"\n").expect("write");
        let err = load_from(&path, true, &full_env()).err().expect("invalid");
        assert!(err.to_string().contains("urll"), "{err}");
        std::fs::write(&path, "[queue]\nconcurrency = \"many\"\n").expect("write");
        let err = load_from(&path, true, &full_env()).err().expect("invalid");
        assert!(err.to_string().contains("concurrency"), "{err}");
        std::fs::write(&path, "this is = = not toml").expect("write");
        assert!(load_from(&path, true, &full_env()).is_err());
    }

    #[test]
    fn a_required_missing_file_is_an_error() {
        let err = load_from(Path::new("/nonexistent/x.toml"), true, &full_env())
            .err()
            .expect("missing");
        assert!(err.to_string().contains("file not found"));
    }
}
