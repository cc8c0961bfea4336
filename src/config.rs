//! Settings: the one configuration type, used by every module.
//!
//! Each key of `cf-bridge.toml` is a field below, with its default (the `defaults` module is the only
//! place defaults are written). Loading layers the TOML file and the `CF_BRIDGE__SECTION__KEY`
//! environment with the `config` crate, deserializes each section on its own (so that a bad key in one
//! section does not hide the problems of another) and then validates once; every problem names its key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, de};
use url::Url;

use crate::quota::Ceiling;
use crate::text::text_enum;

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

impl Problem {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    /// A `*_FILE` variable that cannot be used; names the variable (and the file), never its content.
    #[error("{var}: {reason}")]
    SecretFile { var: String, reason: String },
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

/// The stream check's period by default (`pocketbase.realtime_ping_interval_secs`). One ping every 5 s
/// costs PocketBase about 0.01 % of a core (docs/RELIABILITY.md, measured by `cf-bench --ping-only`); with a
/// timeout as long, a silent stream is noticed within 10 s.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(5);

/// The default of every key that has one.
mod defaults {
    use super::*;

    pub fn realtime_idle_timeout() -> Duration {
        Duration::from_secs(90)
    }
    pub fn realtime_ping_interval() -> Option<Duration> {
        Some(super::DEFAULT_PING_INTERVAL)
    }
    pub fn resync_interval() -> Duration {
        Duration::from_secs(300)
    }
    pub fn max_writes_in_flight() -> usize {
        1
    }
    pub fn environment() -> String {
        "production".into()
    }
    /// Coolify allows 200 a minute per user; leave room for people.
    pub fn requests_per_minute() -> u32 {
        180
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn bind() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8088))
    }
    pub fn session_ttl() -> Duration {
        Duration::from_secs(8 * 3600)
    }
    pub fn journal_path() -> PathBuf {
        PathBuf::from("cf-bridge.db")
    }
    pub fn journal_retention() -> Duration {
        Duration::from_secs(7 * 86_400)
    }
    pub fn journal_payload_retention() -> Duration {
        Duration::from_secs(86_400)
    }
    /// `src/pg/leader.rs`: a successor leads within this long of the leader dying.
    pub fn leader_lease() -> Duration {
        Duration::from_secs(15)
    }
    /// `src/journal/pg/jobs.rs`: a dead replica's jobs are claimed again this long after its last heartbeat.
    pub fn claim_lease() -> Duration {
        Duration::from_secs(15)
    }
    pub fn log_level() -> String {
        "info".into()
    }
    pub fn service_name() -> String {
        "cf-bridge".into()
    }
    pub fn export_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub fn store_path() -> PathBuf {
        PathBuf::from("cf-bridge-secrets.bin")
    }
    pub fn concurrency() -> usize {
        32
    }
    pub fn max_waiting() -> usize {
        256
    }
    pub fn max_attempts() -> u32 {
        12
    }
    /// `src/priority.rs`: as started; 10 puts PocketBase's writes first where the two share cores.
    pub fn nice() -> i32 {
        0
    }
    pub fn base_backoff() -> Duration {
        Duration::from_millis(500)
    }
    pub fn max_backoff() -> Duration {
        Duration::from_secs(300)
    }
    pub fn templates_dir() -> PathBuf {
        PathBuf::from("templates")
    }
    pub fn deletion_retention() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
    pub fn retention_sweep() -> Duration {
        Duration::from_secs(60)
    }
    pub fn running_timeout() -> Duration {
        Duration::from_secs(300)
    }
    pub fn health_poll_interval() -> Duration {
        Duration::from_secs(30)
    }
    pub fn bad_readings_before_error() -> u32 {
        3
    }
    pub fn sovereign_cpu() -> f64 {
        4.0
    }
    pub fn sovereign_mem_mb() -> u32 {
        8192
    }
}

/// `[pocketbase]`: where PocketBase is and how the bridge proves it is a superuser (a password login,
/// whose token is refreshed before it expires, or a long-lived static token).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PocketBaseSettings {
    #[serde(deserialize_with = "http_url")]
    pub url: Url,
    #[serde(default)]
    pub superuser_email: Option<String>,
    #[serde(default)]
    pub superuser_password: Option<SecretString>,
    #[serde(default)]
    pub token: Option<SecretString>,
    /// Reconnect the realtime stream when nothing (not even the keepalive) arrived for this long.
    #[serde(
        rename = "realtime_idle_timeout_secs",
        deserialize_with = "secs",
        default = "defaults::realtime_idle_timeout"
    )]
    pub realtime_idle_timeout: Duration,
    /// How often the bridge pings its own realtime stream (each ping must come back within the same
    /// time); 0 in the file, `None` here, leaves only the idle watchdog.
    #[serde(
        rename = "realtime_ping_interval_secs",
        deserialize_with = "secs_or_off",
        default = "defaults::realtime_ping_interval"
    )]
    pub realtime_ping_interval: Option<Duration>,
    /// Full REST resync period (also after every realtime reconnect).
    #[serde(
        rename = "resync_interval_secs",
        deserialize_with = "secs",
        default = "defaults::resync_interval"
    )]
    pub resync_interval: Duration,
    /// Record writes (write-backs, `deploy_logs` batches) the bridge has in flight at most. PocketBase
    /// carries out one write at a time; more in flight only queue inside it, where a person's write waits
    /// behind all of them and each takes one of PocketBase's JS hook runtimes meanwhile. One by default: a
    /// person's write then waits for at most one of the bridge's (docs/BENCHMARKS.md, "Twenty-third session").
    #[serde(default = "defaults::max_writes_in_flight")]
    pub max_writes_in_flight: usize,
}

/// How the bridge authenticates to PocketBase, as `[pocketbase]` gives it.
#[derive(Clone, Copy)]
pub enum PocketBaseAuth<'a> {
    Password { email: &'a str, password: &'a SecretString },
    Token(&'a SecretString),
}

impl PocketBaseSettings {
    /// `[pocketbase]` with a password login; the other keys at their defaults.
    pub fn with_password(url: Url, email: &str, password: SecretString) -> Self {
        PocketBaseSettings {
            superuser_email: Some(email.to_string()),
            superuser_password: Some(password),
            ..Self::bare(url)
        }
    }

    /// `[pocketbase]` with a static superuser token; the other keys at their defaults.
    pub fn with_token(url: Url, token: SecretString) -> Self {
        PocketBaseSettings {
            token: Some(token),
            ..Self::bare(url)
        }
    }

    fn bare(url: Url) -> Self {
        PocketBaseSettings {
            url,
            superuser_email: None,
            superuser_password: None,
            token: None,
            realtime_idle_timeout: defaults::realtime_idle_timeout(),
            realtime_ping_interval: defaults::realtime_ping_interval(),
            resync_interval: defaults::resync_interval(),
            max_writes_in_flight: defaults::max_writes_in_flight(),
        }
    }

    /// A token wins over a password; a password needs its email and the other way round.
    pub fn auth(&self) -> Result<PocketBaseAuth<'_>, Problem> {
        match (&self.superuser_email, &self.superuser_password, &self.token) {
            (_, _, Some(token)) => Ok(PocketBaseAuth::Token(token)),
            (Some(email), Some(password), None) => Ok(PocketBaseAuth::Password { email, password }),
            (Some(_), None, None) => Err(Problem::new(
                "pocketbase.superuser_password",
                "is required with pocketbase.superuser_email",
            )),
            (None, Some(_), None) => Err(Problem::new(
                "pocketbase.superuser_email",
                "is required with pocketbase.superuser_password",
            )),
            (None, None, None) => Err(Problem::new(
                "pocketbase",
                "set either superuser_email and superuser_password, or token",
            )),
        }
    }
}

/// `[coolify]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoolifySettings {
    #[serde(deserialize_with = "http_url")]
    pub url: Url,
    pub token: SecretString,
    /// Default: the first usable, reachable server.
    #[serde(default, deserialize_with = "non_empty")]
    pub server_uuid: Option<String>,
    #[serde(default = "defaults::environment")]
    pub environment: String,
    #[serde(default = "defaults::requests_per_minute")]
    pub requests_per_minute: u32,
    #[serde(
        rename = "request_timeout_secs",
        deserialize_with = "secs",
        default = "defaults::request_timeout"
    )]
    pub request_timeout: Duration,
}

impl CoolifySettings {
    /// `[coolify]` for `url` and `token`; the other keys at their defaults.
    pub fn new(url: Url, token: SecretString) -> Self {
        CoolifySettings {
            url,
            token,
            server_uuid: None,
            environment: defaults::environment(),
            requests_per_minute: defaults::requests_per_minute(),
            request_timeout: defaults::request_timeout(),
        }
    }
}

/// `[webhook]`: optional. Without a secret the bridge takes no webhooks (`POST /hooks/pocketbase` answers
/// 404) and sees changes by realtime and resync, the default; with one, PocketBase's hooks may also post
/// each change (they need the same secret as `CF_BRIDGE_WEBHOOK_SECRET`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// `whsec_<base64>`; checked for shape here, parsed by the webhook module.
    #[serde(default)]
    pub secret: Option<SecretString>,
}

/// `[admin]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    pub token: SecretString,
    /// Also serves `/hooks/pocketbase`, `/healthz`, `/readyz` and `/metrics`.
    #[serde(default = "defaults::bind", deserialize_with = "socket_addr")]
    pub bind: SocketAddr,
    /// How long an operator page session lasts.
    #[serde(
        rename = "session_ttl_secs",
        deserialize_with = "secs",
        default = "defaults::session_ttl"
    )]
    pub session_ttl: Duration,
    /// The address operators open the page at, when it is not `http://<bind>` (a TLS proxy): its origin is
    /// the only one allowed to post, and `https` makes the session cookie Secure.
    #[serde(default, deserialize_with = "optional_http_url")]
    pub public_url: Option<Url>,
}

/// `[journal]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSettings {
    #[serde(default = "defaults::journal_path")]
    pub path: PathBuf,
    /// Settled events and finished attempts older than this are pruned (never before the dedupe floor,
    /// `journal::dedupe_floor`).
    #[serde(
        rename = "retention_secs",
        deserialize_with = "secs",
        default = "defaults::journal_retention"
    )]
    pub retention: Duration,
    /// The payloads of done events older than this are dropped (their rows stay until `retention_secs`).
    #[serde(
        rename = "payload_retention_secs",
        deserialize_with = "secs",
        default = "defaults::journal_payload_retention"
    )]
    pub payload_retention: Duration,
    /// `postgres://user:password@host:port/database?sslmode=...`: the journal (and the secret store) on
    /// PostgreSQL, shared by several replicas (docs/SCALE-OUT.md); `path` is then unused. Unset: SQLite.
    #[serde(default)]
    pub url: Option<SecretString>,
    /// PostgreSQL only: how long a dead leader may still be believed; another replica leads within it.
    #[serde(
        rename = "leader_lease_secs",
        deserialize_with = "secs",
        default = "defaults::leader_lease"
    )]
    pub leader_lease: Duration,
    /// PostgreSQL only: how long a job's claim lasts without its replica's heartbeat (renewed every third);
    /// the jobs of a replica that died are taken over this long after it stopped.
    #[serde(
        rename = "claim_lease_secs",
        deserialize_with = "secs",
        default = "defaults::claim_lease"
    )]
    pub claim_lease: Duration,
}

impl JournalSettings {
    /// The PostgreSQL setting when `url` is set (checked at load, so an error here is not expected).
    pub fn postgres(&self) -> Option<Result<crate::pg::PgConfig, crate::pg::PgConfigError>> {
        self.url
            .as_ref()
            .filter(|u| !u.expose_secret().trim().is_empty())
            .map(|u| crate::pg::PgConfig::parse(u.expose_secret().trim()))
    }
}

impl Default for JournalSettings {
    fn default() -> Self {
        JournalSettings {
            path: defaults::journal_path(),
            retention: defaults::journal_retention(),
            payload_retention: defaults::journal_payload_retention(),
            url: None,
            leader_lease: defaults::leader_lease(),
            claim_lease: defaults::claim_lease(),
        }
    }
}

/// `[domains]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSettings {
    /// Instance domains are `<subdomain>.<base_domain>`.
    pub base_domain: String,
}

/// `[router]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterSettings {
    /// Given to every stack as `CLOUDFREEDOM_ROUTER_BASE_URL`.
    #[serde(deserialize_with = "http_url")]
    pub base_url: Url,
}

impl RouterSettings {
    /// The URL as stacks get it: without a trailing slash.
    pub fn base_url_text(&self) -> &str {
        self.base_url.as_str().trim_end_matches('/')
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(LogFormat::Json),
            "pretty" | "text" => Ok(LogFormat::Pretty),
            other => Err(format!("{other:?} is not one of json, pretty")),
        }
    }
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    #[serde(default = "LogSettings::default_format", deserialize_with = "parsed")]
    pub format: LogFormat,
    /// `RUST_LOG` overrides it.
    #[serde(default = "defaults::log_level")]
    pub level: String,
}

impl LogSettings {
    fn default_format() -> LogFormat {
        LogFormat::Pretty
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: Self::default_format(),
            level: defaults::log_level(),
        }
    }
}

/// `[telemetry]`: optional OpenTelemetry trace export (src/otel.rs).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// The collector's OTLP/HTTP traces URL, e.g. `http://otel-collector:4318/v1/traces`; none: no export.
    #[serde(default, deserialize_with = "optional_http_url")]
    pub otlp_endpoint: Option<Url>,
    /// The `service.name` the spans carry.
    #[serde(default = "defaults::service_name")]
    pub service_name: String,
    /// How long finished spans wait to be sent together.
    #[serde(
        rename = "export_interval_ms",
        deserialize_with = "millis",
        default = "defaults::export_interval"
    )]
    pub export_interval: Duration,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            otlp_endpoint: None,
            service_name: defaults::service_name(),
            export_interval: defaults::export_interval(),
        }
    }
}

/// `[metrics]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Serve `/metrics` on this address instead of `admin.bind` (a scraper then needs no way to the admin
    /// API); none: on `admin.bind`.
    #[serde(default, deserialize_with = "optional_socket_addr")]
    pub bind: Option<SocketAddr>,
}

/// `[process]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSettings {
    /// The bridge's CPU priority as a nice value (0 to 19): it runs at least this low. 10 puts
    /// PocketBase's writes first where the two share cores, for a few milliseconds more per change when
    /// the cores are busy (`src/priority.rs`). 0: as started.
    #[serde(default = "defaults::nice")]
    pub nice: i32,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        ProcessSettings { nice: defaults::nice() }
    }
}

/// `[secrets]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsSettings {
    /// Key for `secrets_hash`, the per-stack router key and the local secret store.
    pub key: SecretString,
    /// Earlier values of `key`: store entries written under one of them are re-encrypted under `key`.
    #[serde(default)]
    pub previous_keys: Vec<SecretString>,
    #[serde(default = "defaults::store_path")]
    pub store_path: PathBuf,
}

impl SecretsSettings {
    /// The bridge key as the bytes the derivations take.
    pub fn key_bytes(&self) -> SecretSlice<u8> {
        SecretSlice::from(self.key.expose_secret().as_bytes().to_vec())
    }
}

/// `[queue]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// Records reconciled at once; a job waiting for `running:*` gives its slot back.
    #[serde(default = "defaults::concurrency")]
    pub concurrency: usize,
    /// Jobs that may wait for `running:*` without a slot at once; past it a job waits holding its slot.
    /// Each waiting job is held in memory, so this bounds the bridge's memory under a backlog: the rest
    /// stays queued in the journal. 0: every wait holds its slot.
    #[serde(default = "defaults::max_waiting")]
    pub max_waiting: usize,
    /// Then the job is dead (replay it from the admin API).
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Backoff ceiling of the first retry; doubles with every attempt.
    #[serde(
        rename = "base_backoff_ms",
        deserialize_with = "millis",
        default = "defaults::base_backoff"
    )]
    pub base_backoff: Duration,
    #[serde(
        rename = "max_backoff_secs",
        deserialize_with = "secs",
        default = "defaults::max_backoff"
    )]
    pub max_backoff: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            concurrency: defaults::concurrency(),
            max_waiting: defaults::max_waiting(),
            max_attempts: defaults::max_attempts(),
            base_backoff: defaults::base_backoff(),
            max_backoff: defaults::max_backoff(),
        }
    }
}

text_enum!(
    pub enum OrphanPolicy {
        Report => "report",
        Remove => "remove",
    }
);

/// `[reconcile]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSettings {
    #[serde(default = "defaults::templates_dir")]
    pub templates_dir: PathBuf,
    /// Removal needs two confirmations.
    #[serde(default = "ReconcileSettings::default_orphans", deserialize_with = "parsed")]
    pub orphans: OrphanPolicy,
    /// How long to wait for `running:*` after a start.
    #[serde(
        rename = "running_timeout_secs",
        deserialize_with = "secs",
        default = "defaults::running_timeout"
    )]
    pub running_timeout: Duration,
    #[serde(
        rename = "health_poll_interval_secs",
        deserialize_with = "secs",
        default = "defaults::health_poll_interval"
    )]
    pub health_poll_interval: Duration,
    #[serde(default = "defaults::bad_readings_before_error")]
    pub bad_readings_before_error: u32,
    /// Ceiling per stack for the `sovereign` plan.
    #[serde(default = "defaults::sovereign_cpu")]
    pub sovereign_cpu: f64,
    #[serde(default = "defaults::sovereign_mem_mb")]
    pub sovereign_mem_mb: u32,
}

impl ReconcileSettings {
    fn default_orphans() -> OrphanPolicy {
        OrphanPolicy::Report
    }

    /// The `sovereign` plan's ceiling (unlimited stacks).
    pub fn sovereign_ceiling(&self) -> Ceiling {
        Ceiling {
            max_stacks: None,
            cpu: self.sovereign_cpu,
            mem_mb: self.sovereign_mem_mb,
        }
    }
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        ReconcileSettings {
            templates_dir: defaults::templates_dir(),
            orphans: Self::default_orphans(),
            running_timeout: defaults::running_timeout(),
            health_poll_interval: defaults::health_poll_interval(),
            bad_readings_before_error: defaults::bad_readings_before_error(),
            sovereign_cpu: defaults::sovereign_cpu(),
            sovereign_mem_mb: defaults::sovereign_mem_mb(),
        }
    }
}

/// `[lifecycle]`: deletion with retention.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleSettings {
    /// How long a deleted instance's stopped service and volumes are kept before they are destroyed;
    /// 0 destroys at once (no retention, no restore).
    #[serde(
        rename = "retention_secs",
        deserialize_with = "secs",
        default = "defaults::deletion_retention"
    )]
    pub retention: Duration,
    /// A plan's own retention, over `retention_secs`.
    #[serde(default)]
    pub starter_retention_secs: Option<u64>,
    #[serde(default)]
    pub team_retention_secs: Option<u64>,
    #[serde(default)]
    pub business_retention_secs: Option<u64>,
    #[serde(default)]
    pub sovereign_retention_secs: Option<u64>,
    /// How often expired retentions are looked for.
    #[serde(
        rename = "retention_sweep_secs",
        deserialize_with = "secs",
        default = "defaults::retention_sweep"
    )]
    pub retention_sweep: Duration,
}

impl LifecycleSettings {
    /// Whether any plan has a retention of its own (else the plan need not be looked up).
    pub fn has_plan_retentions(&self) -> bool {
        [
            self.starter_retention_secs,
            self.team_retention_secs,
            self.business_retention_secs,
            self.sovereign_retention_secs,
        ]
        .iter()
        .any(Option::is_some)
    }

    /// The retention of an instance whose tenant is on `plan` (unknown: the default).
    pub fn retention_for(&self, plan: Option<crate::quota::PlanTier>) -> Duration {
        use crate::quota::PlanTier;
        let own = match plan {
            Some(PlanTier::Starter) => self.starter_retention_secs,
            Some(PlanTier::Team) => self.team_retention_secs,
            Some(PlanTier::Business) => self.business_retention_secs,
            Some(PlanTier::Sovereign) => self.sovereign_retention_secs,
            None => None,
        };
        own.map(Duration::from_secs).unwrap_or(self.retention)
    }
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        LifecycleSettings {
            retention: defaults::deletion_retention(),
            starter_retention_secs: None,
            team_retention_secs: None,
            business_retention_secs: None,
            sovereign_retention_secs: None,
            retention_sweep: defaults::retention_sweep(),
        }
    }
}

macro_rules! sections {
    ($($field:ident: $ty:ty),+ $(,)?) => {
        /// The validated configuration: one field per section of `cf-bridge.toml`.
        #[derive(Clone, Debug)]
        pub struct Settings {
            $(pub $field: $ty),+
        }

        /// The sections `cf-bridge.toml` may hold.
        pub const SECTIONS: &[&str] = &[$(stringify!($field)),+];

        /// Deserializes and checks every section on its own, so that one section's problems do not
        /// hide another's.
        fn read_sections(tree: &config::Config, problems: &mut Vec<Problem>) -> Option<Settings> {
            $(let $field = section::<$ty>(tree, stringify!($field), problems);)+
            Some(Settings { $($field: $field?),+ })
        }
    };
}

sections!(
    pocketbase: PocketBaseSettings,
    coolify: CoolifySettings,
    webhook: WebhookSettings,
    admin: AdminSettings,
    journal: JournalSettings,
    domains: DomainSettings,
    router: RouterSettings,
    log: LogSettings,
    secrets: SecretsSettings,
    queue: QueueSettings,
    reconcile: ReconcileSettings,
    telemetry: TelemetrySettings,
    metrics: MetricsSettings,
    lifecycle: LifecycleSettings,
    process: ProcessSettings,
);

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
    let file_error = |e: config::ConfigError| ConfigError::File {
        path: display.clone(),
        reason: without_values(&e.to_string()),
    };
    // An empty table per section, so that a missing section reads as one with every key unset.
    let mut builder = config::Config::builder();
    for name in SECTIONS {
        builder = builder
            .set_default(*name, config::Map::<String, config::Value>::new())
            .map_err(file_error)?;
    }
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
    let mut env_map: config::Map<String, String> = with_secret_files(env)?
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    // The one list key comes comma-separated from the environment.
    if let Some(list) = env_map.remove("CF_BRIDGE__SECRETS__PREVIOUS_KEYS") {
        let items: Vec<String> = list.split(',').map(str::to_string).collect();
        builder = builder
            .set_override("secrets.previous_keys", items)
            .map_err(file_error)?;
    }
    builder = builder.add_source(
        config::Environment::with_prefix("CF_BRIDGE")
            .prefix_separator("__")
            .separator("__")
            // No `try_parsing`: a value stays the text it was given (`0000000000001234`, `1e5` and `true` are
            // strings for a string key); numeric and boolean keys are parsed from the text by their type.
            .source(Some(env_map)),
    );
    let tree = builder.build().map_err(file_error)?;
    let mut problems = Vec::new();
    let top: config::Map<String, config::Value> = tree.clone().try_deserialize().map_err(file_error)?;
    for name in top.keys().filter(|k| !SECTIONS.contains(&k.as_str())) {
        problems.push(Problem::new(
            name.clone(),
            format!("is not a section (expected one of {})", SECTIONS.join(", ")),
        ));
    }
    match read_sections(&tree, &mut problems) {
        Some(mut s) if problems.is_empty() => {
            // A relative templates directory named in the file belongs with the file; a default or an
            // environment value stays relative to the working directory, where it was given.
            let from_file = matches!(origins(path, env).get("reconcile.templates_dir"), Some(Origin::File(_)));
            if from_file && s.reconcile.templates_dir.is_relative() {
                let dir = path.parent().unwrap_or(Path::new(""));
                s.reconcile.templates_dir = dir.join(&s.reconcile.templates_dir);
            }
            Ok(s)
        }
        _ => Err(ConfigError::Invalid(problems)),
    }
}

const ENV_PREFIX: &str = "CF_BRIDGE__";

/// The secret keys; each may also come from a file named by `CF_BRIDGE__SECTION__KEY_FILE` (mounted
/// secrets). `secrets.previous_keys` takes one key per line.
pub const SECRET_KEYS: &[&str] = &[
    "pocketbase.superuser_password",
    "pocketbase.token",
    "coolify.token",
    "webhook.secret",
    "admin.token",
    "secrets.key",
    "secrets.previous_keys",
    "journal.url",
];

/// `CF_BRIDGE__SECTION__KEY` -> `section.key` (as the `config` crate maps it).
fn env_key(var: &str) -> Option<String> {
    let rest = var.strip_prefix(ENV_PREFIX)?;
    Some(rest.to_ascii_lowercase().replace("__", "."))
}

/// The secret key a `*_FILE` variable stands for, with the variable it replaces.
fn secret_file_var(var: &str) -> Option<(&str, String)> {
    let base = var.strip_suffix("_FILE")?;
    let key = env_key(base)?;
    SECRET_KEYS.contains(&key.as_str()).then_some((base, key))
}

/// The environment with every `CF_BRIDGE__..._FILE` of a secret key replaced by the variable it stands
/// for, holding the file's content without its trailing newline. Errors name the variable and the file,
/// never the content.
fn with_secret_files(env: &[(String, String)]) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::with_capacity(env.len());
    for (var, value) in env {
        let Some((base, key)) = secret_file_var(var) else {
            out.push((var.clone(), value.clone()));
            continue;
        };
        if env.iter().any(|(k, _)| k == base) {
            return Err(ConfigError::SecretFile {
                var: var.clone(),
                reason: format!("set either {base} or {var}, not both"),
            });
        }
        let text = std::fs::read_to_string(value).map_err(|e| ConfigError::SecretFile {
            var: var.clone(),
            reason: format!("cannot read {value}: {}", io_reason(&e)),
        })?;
        let secret = if key == "secrets.previous_keys" {
            text.lines()
                .map(str::trim_end)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(",")
        } else {
            text.trim_end_matches(['\n', '\r']).to_string()
        };
        out.push((base.to_string(), secret));
    }
    Ok(out)
}

/// An I/O error's kind and OS message (e.g. "No such file or directory"): never data read from the file.
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::InvalidData => "not UTF-8 text".into(),
        _ => e.to_string(),
    }
}

/// Where a key's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    /// The configuration file.
    File(String),
    /// A `CF_BRIDGE__SECTION__KEY` variable.
    Env(String),
    /// A file named by a `CF_BRIDGE__SECTION__KEY_FILE` variable.
    EnvFile {
        var: String,
        path: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "file {path}"),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::EnvFile { var, path } => write!(f, "env file {var}={path}"),
        }
    }
}

/// Where each set key (`section.key`) came from, in the order [`load_from`] applies them: the file,
/// then the environment. A key not listed has its default.
pub fn origins(path: &Path, env: &[(String, String)]) -> BTreeMap<String, Origin> {
    let mut out = BTreeMap::new();
    if let Some(table) = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
    {
        for (section, keys) in &table {
            if let Some(keys) = keys.as_table() {
                for key in keys.keys() {
                    out.insert(format!("{section}.{key}"), Origin::File(path.display().to_string()));
                }
            }
        }
    }
    for (var, value) in env {
        if let Some((_, key)) = secret_file_var(var) {
            out.insert(
                key,
                Origin::EnvFile {
                    var: var.clone(),
                    path: value.clone(),
                },
            );
        } else if let Some(key) = env_key(var) {
            out.insert(key, Origin::Env(var.clone()));
        }
    }
    out
}

impl Settings {
    /// The effective configuration as [`fmt::Display`] shows it (secrets redacted), each key followed by
    /// where its value came from.
    pub fn with_origins(&self, origins: &BTreeMap<String, Origin>) -> String {
        let mut section = String::new();
        let mut out = String::new();
        for line in self.to_string().lines() {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
                out.push_str(line);
            } else if let Some((key, _)) = line.split_once(" = ") {
                let origin = origins.get(&format!("{section}.{key}")).unwrap_or(&Origin::Default);
                out.push_str(&format!("{line}  # {origin}"));
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        out
    }
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

/// Deserializes and checks section `name`, reporting every problem it has, not only the first one serde
/// meets: a key that does not deserialize is reported and taken out, a missing key is reported and
/// stood in for, and the section is read again, until it deserializes (then its checks run; a problem
/// of a key already reported is not repeated) or nothing more can be taken out.
fn section<T: Section>(tree: &config::Config, name: &'static str, problems: &mut Vec<Problem>) -> Option<T> {
    let mut table = match tree.get_table(name) {
        Ok(table) => table,
        Err(e) => {
            problems.push(problem_of(name, e));
            return None;
        }
    };
    let mut found: Vec<Problem> = Vec::new();
    // Each round takes out or stands in for one key, so the section's key count bounds the rounds.
    for _ in 0..=table.len() + 16 {
        match read_one::<T>(name, &table) {
            Ok(value) => {
                let mut checked = Vec::new();
                value.check(&mut Checks(&mut checked));
                let clean = found.is_empty();
                checked.retain(|p| !found.iter().any(|f| f.key == p.key));
                problems.extend(found);
                problems.extend(checked);
                return clean.then_some(value);
            }
            Err(e) => {
                let problem = problem_of(name, e);
                let key = problem
                    .key
                    .strip_prefix(name)
                    .and_then(|k| k.strip_prefix('.'))
                    .map(str::to_string);
                let progress = match key {
                    Some(k) if table.contains_key(&k) && problem.reason != REQUIRED => table.remove(&k).is_some(),
                    // Every required key is text (a URL, a token, a name): this stands in for any of them.
                    Some(k) if problem.reason == REQUIRED && !table.contains_key(&k) => {
                        table.insert(k, config::Value::from(STAND_IN));
                        true
                    }
                    _ => false,
                };
                if !found.iter().any(|f| f.key == problem.key) {
                    found.push(problem);
                }
                if !progress {
                    break;
                }
            }
        }
    }
    problems.extend(found);
    None
}

const REQUIRED: &str = "is required";
/// What a missing required key is read as while the rest of its section is checked.
const STAND_IN: &str = "http://stand-in.invalid";

/// Deserializes section `name` from `table` alone, under its name, so that the `config` crate's errors
/// carry the full key (`admin.bind`, not `bind`).
fn read_one<T: DeserializeOwned>(
    name: &'static str,
    table: &config::Map<String, config::Value>,
) -> Result<T, config::ConfigError> {
    let tree = config::Config::builder().set_default(name, table.clone())?.build()?;
    let value = OneSection::<T> {
        name,
        marker: std::marker::PhantomData,
    }
    .deserialize(tree)?;
    value.ok_or_else(|| config::ConfigError::NotFound(name.to_string()))
}

/// Turns a deserialization error into a problem: a missing key reads "is required"; otherwise the key the
/// error names (or the section) and the message without the key.
fn problem_of(section: &str, e: config::ConfigError) -> Problem {
    let text = without_values(&e.to_string());
    if let Some(key) = text
        .strip_prefix("missing configuration field \"")
        .and_then(|rest| rest.split('"').next())
    {
        let key = if key.contains('.') {
            key.to_string()
        } else {
            format!("{section}.{key}")
        };
        return Problem::new(key, REQUIRED);
    }
    // The config crate appends " for key `a.b`" and, for a file's values, " in <path>".
    let problem = match text.rsplit_once(" for key `") {
        Some((reason, rest)) => Problem::new(rest.split('`').next().unwrap_or(section), reason),
        None => Problem::new(section, text),
    };
    // serde names an unknown key in its message, at the level of the table that holds it.
    match problem
        .reason
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    {
        Some(field) => Problem::new(format!("{}.{field}", problem.key), problem.reason.clone()),
        None => problem,
    }
}

/// Picks one section out of the root table; the others are skipped.
struct OneSection<T> {
    name: &'static str,
    marker: std::marker::PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for OneSection<T> {
    type Value = Option<T>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for OneSection<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of sections")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == self.name {
                found = Some(map.next_value::<T>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<Url, D::Error> {
    parse_http_url(&String::deserialize(d)?).map_err(de::Error::custom)
}

/// An http(s) URL, or none when the text is empty.
fn optional_http_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
    match non_empty(d)? {
        None => Ok(None),
        Some(text) => parse_http_url(&text).map(Some).map_err(de::Error::custom),
    }
}

fn parse_http_url(text: &str) -> Result<Url, String> {
    match Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
        Ok(_) => Err("must be an http(s) URL with a host".to_string()),
        Err(e) => Err(format!("is not a valid URL ({e})")),
    }
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse()
        .map_err(|_| de::Error::custom(format!("{text:?} is not an address like 127.0.0.1:8088")))
}

/// An address, or none when the text is empty.
fn optional_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    match non_empty(d)? {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("{text:?} is not an address like 127.0.0.1:9100"))),
    }
}

/// A value read from its text, with the type's own message when it does not parse.
fn parsed<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: fmt::Display,
{
    String::deserialize(d)?.parse().map_err(de::Error::custom)
}

fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

/// Seconds, where 0 turns the feature off.
fn secs_or_off<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    u64::deserialize(d).map(|s| (s > 0).then(|| Duration::from_secs(s)))
}

fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

/// An empty text is the same as no value.
fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.trim().is_empty()))
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

/// Collects the problems of the values that deserialized.
struct Checks<'a>(&'a mut Vec<Problem>);

impl Checks<'_> {
    fn fail(&mut self, key: &str, reason: impl Into<String>) {
        self.0.push(Problem::new(key, reason));
    }

    fn secret(&mut self, key: &str, value: &SecretString, min_len: usize) {
        let v = value.expose_secret();
        if v.trim().is_empty() {
            self.fail(key, "must not be empty");
        } else if v.contains(PLACEHOLDER) {
            self.fail(
                key,
                format!("is the example's placeholder ({PLACEHOLDER}): set a real secret"),
            );
        } else if v.len() < min_len {
            self.fail(key, format!("is too short (at least {min_len} characters)"));
        }
    }

    fn positive(&mut self, key: &str, value: Duration) {
        if value.is_zero() {
            self.fail(key, "must be greater than 0");
        }
    }
}

/// What the example file's secrets say instead of a value (`1|change-me`, `whsec_change-me`, ...).
const PLACEHOLDER: &str = "change-me";
/// The example file's Coolify host.
const PLACEHOLDER_COOLIFY_HOST: &str = "coolify.example.com";

/// A section of the file: deserialized on its own, then checked for every rule its types do not express.
trait Section: DeserializeOwned {
    fn check(&self, c: &mut Checks<'_>);
}

impl Section for PocketBaseSettings {
    fn check(&self, c: &mut Checks<'_>) {
        match self.auth() {
            Ok(PocketBaseAuth::Token(token)) => c.secret("pocketbase.token", token, 1),
            Ok(PocketBaseAuth::Password { email, password }) => {
                if !email.contains('@') {
                    c.fail("pocketbase.superuser_email", "must be an email address");
                }
                c.secret("pocketbase.superuser_password", password, 1);
            }
            Err(p) => c.0.push(p),
        }
        c.positive("pocketbase.realtime_idle_timeout_secs", self.realtime_idle_timeout);
        c.positive("pocketbase.resync_interval_secs", self.resync_interval);
        if self.max_writes_in_flight == 0 || self.max_writes_in_flight > 64 {
            c.fail("pocketbase.max_writes_in_flight", "must be between 1 and 64");
        }
    }
}

impl Section for CoolifySettings {
    fn check(&self, c: &mut Checks<'_>) {
        c.secret("coolify.token", &self.token, 1);
        if self.url.host_str() == Some(PLACEHOLDER_COOLIFY_HOST) {
            c.fail(
                "coolify.url",
                format!("is the example's placeholder ({PLACEHOLDER_COOLIFY_HOST}): set your Coolify's URL"),
            );
        }
        if let Some(uuid) = &self.server_uuid
            && !uuid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            c.fail("coolify.server_uuid", "must contain only letters, digits and '-'");
        }
        if self.environment.trim().is_empty() {
            c.fail("coolify.environment", "must not be empty");
        }
        if self.requests_per_minute == 0 || self.requests_per_minute > 100_000 {
            c.fail("coolify.requests_per_minute", "must be between 1 and 100000");
        }
        c.positive("coolify.request_timeout_secs", self.request_timeout);
    }
}

impl Section for WebhookSettings {
    fn check(&self, c: &mut Checks<'_>) {
        let Some(secret) = &self.secret else { return };
        c.secret("webhook.secret", secret, 1);
        if !secret.expose_secret().starts_with("whsec_") {
            c.fail(
                "webhook.secret",
                "must start with whsec_ (generate one with `cf-bridge secret`)",
            );
        }
    }
}

impl Section for AdminSettings {
    fn check(&self, c: &mut Checks<'_>) {
        c.secret("admin.token", &self.token, 16);
        c.positive("admin.session_ttl_secs", self.session_ttl);
        if self.session_ttl > Duration::from_secs(7 * 24 * 3600) {
            c.fail("admin.session_ttl_secs", "must be at most 604800 (a week)");
        }
        if let Some(u) = &self.public_url
            && !(u.path() == "/" && u.query().is_none() && u.username().is_empty())
        {
            c.fail(
                "admin.public_url",
                "must be a bare origin such as https://ops.example.com",
            );
        }
    }
}

impl Section for JournalSettings {
    fn check(&self, c: &mut Checks<'_>) {
        if self.path.as_os_str().is_empty() {
            c.fail("journal.path", "must not be empty");
        }
        c.positive("journal.retention_secs", self.retention);
        if self.payload_retention > self.retention {
            c.fail(
                "journal.payload_retention_secs",
                "must not be longer than journal.retention_secs",
            );
        }
        if let Some(Err(e)) = self.postgres() {
            // PgConfigError never holds the password.
            c.fail("journal.url", e.to_string());
        }
        if !(3..=300).contains(&self.leader_lease.as_secs()) {
            c.fail("journal.leader_lease_secs", "must be between 3 and 300");
        }
        if !(3..=300).contains(&self.claim_lease.as_secs()) {
            c.fail("journal.claim_lease_secs", "must be between 3 and 300");
        }
    }
}

impl Section for DomainSettings {
    fn check(&self, c: &mut Checks<'_>) {
        let base_domain = &self.base_domain;
        if base_domain.is_empty() {
            c.fail("domains.base_domain", "is required");
        } else if !is_dns_name(base_domain) {
            c.fail(
                "domains.base_domain",
                format!("{base_domain:?} is not a lowercase DNS name"),
            );
        }
    }
}

impl Section for RouterSettings {
    fn check(&self, _: &mut Checks<'_>) {}
}

impl Section for LogSettings {
    fn check(&self, c: &mut Checks<'_>) {
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            c.fail(
                "log.level",
                format!("{:?} is not a valid filter (e.g. info, cf_bridge=debug)", self.level),
            );
        }
    }
}

impl Section for TelemetrySettings {
    fn check(&self, c: &mut Checks<'_>) {
        if let Some(url) = &self.otlp_endpoint
            && (!url.username().is_empty() || url.password().is_some())
        {
            c.fail(
                "telemetry.otlp_endpoint",
                "must not carry credentials (they would be logged with export errors)",
            );
        }
        if self.service_name.is_empty() || self.service_name.len() > 100 {
            c.fail("telemetry.service_name", "must be 1 to 100 characters");
        }
        if self.export_interval < Duration::from_millis(100) || self.export_interval > Duration::from_secs(60) {
            c.fail("telemetry.export_interval_ms", "must be between 100 and 60000");
        }
    }
}

impl Section for MetricsSettings {
    fn check(&self, _: &mut Checks<'_>) {}
}

impl Section for SecretsSettings {
    fn check(&self, c: &mut Checks<'_>) {
        c.secret("secrets.key", &self.key, 32);
        for (i, k) in self.previous_keys.iter().enumerate() {
            let key = format!("secrets.previous_keys[{i}]");
            if k.expose_secret().is_empty() {
                c.fail(&key, "must not be empty");
            } else if k.expose_secret() == self.key.expose_secret() {
                c.fail(&key, "is the same as secrets.key");
            }
        }
    }
}

impl Section for ProcessSettings {
    fn check(&self, c: &mut Checks<'_>) {
        if !(0..=19).contains(&self.nice) {
            c.fail("process.nice", "must be between 0 and 19");
        }
    }
}

impl Section for QueueSettings {
    fn check(&self, c: &mut Checks<'_>) {
        if self.concurrency == 0 || self.concurrency > 256 {
            c.fail("queue.concurrency", "must be between 1 and 256");
        }
        if self.max_waiting > 4096 {
            c.fail("queue.max_waiting", "must be at most 4096");
        }
        if self.max_attempts == 0 {
            c.fail("queue.max_attempts", "must be greater than 0");
        }
        c.positive("queue.base_backoff_ms", self.base_backoff);
        c.positive("queue.max_backoff_secs", self.max_backoff);
    }
}

impl Section for ReconcileSettings {
    fn check(&self, c: &mut Checks<'_>) {
        c.positive("reconcile.running_timeout_secs", self.running_timeout);
        c.positive("reconcile.health_poll_interval_secs", self.health_poll_interval);
        if self.bad_readings_before_error == 0 {
            c.fail("reconcile.bad_readings_before_error", "must be greater than 0");
        }
        if !(self.sovereign_cpu.is_finite() && self.sovereign_cpu > 0.0 && self.sovereign_cpu <= 256.0) {
            c.fail("reconcile.sovereign_cpu", "must be a number of cores between 0 and 256");
        }
        if self.sovereign_mem_mb < 16 {
            c.fail("reconcile.sovereign_mem_mb", "must be at least 16");
        }
    }
}

impl Section for LifecycleSettings {
    fn check(&self, c: &mut Checks<'_>) {
        c.positive("lifecycle.retention_sweep_secs", self.retention_sweep);
        // Ten years: beyond that a retention is a typo, and the journal's milliseconds stay far from overflow.
        const MAX: u64 = 10 * 366 * 24 * 3600;
        let plans = [
            ("lifecycle.retention_secs", Some(self.retention.as_secs())),
            ("lifecycle.starter_retention_secs", self.starter_retention_secs),
            ("lifecycle.team_retention_secs", self.team_retention_secs),
            ("lifecycle.business_retention_secs", self.business_retention_secs),
            ("lifecycle.sovereign_retention_secs", self.sovereign_retention_secs),
        ];
        for (key, secs) in plans {
            if secs.is_some_and(|s| s > MAX) {
                c.fail(key, format!("must be at most {MAX} (ten years)"));
            }
        }
    }
}

const REDACTED: &str = "<redacted>";

/// The effective configuration as TOML with every secret redacted (for `check-config`).
impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "[pocketbase]")?;
        writeln!(f, "url = {:?}", self.pocketbase.url.as_str())?;
        match self.pocketbase.auth() {
            Ok(PocketBaseAuth::Password { email, .. }) => {
                writeln!(f, "superuser_email = {email:?}")?;
                writeln!(f, "superuser_password = {REDACTED:?}")?;
            }
            Ok(PocketBaseAuth::Token(_)) => writeln!(f, "token = {REDACTED:?}")?,
            Err(_) => {}
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
        writeln!(f, "max_writes_in_flight = {}", self.pocketbase.max_writes_in_flight)?;
        writeln!(f, "\n[coolify]")?;
        writeln!(f, "url = {:?}", self.coolify.url.as_str())?;
        writeln!(f, "token = {REDACTED:?}")?;
        if let Some(s) = &self.coolify.server_uuid {
            writeln!(f, "server_uuid = {s:?}")?;
        }
        writeln!(f, "environment = {:?}", self.coolify.environment)?;
        writeln!(f, "requests_per_minute = {}", self.coolify.requests_per_minute)?;
        writeln!(f, "request_timeout_secs = {}", self.coolify.request_timeout.as_secs())?;
        match &self.webhook.secret {
            Some(_) => writeln!(f, "\n[webhook]\nsecret = {REDACTED:?}")?,
            None => writeln!(f, "\n[webhook]\n# no secret: webhook intake off (realtime and resync)")?,
        }
        writeln!(f, "\n[admin]\ntoken = {REDACTED:?}\nbind = \"{}\"", self.admin.bind)?;
        writeln!(f, "session_ttl_secs = {}", self.admin.session_ttl.as_secs())?;
        if let Some(u) = &self.admin.public_url {
            writeln!(f, "public_url = {:?}", u.as_str())?;
        }
        writeln!(f, "\n[journal]\npath = {:?}", self.journal.path.display().to_string())?;
        writeln!(f, "retention_secs = {}", self.journal.retention.as_secs())?;
        writeln!(
            f,
            "payload_retention_secs = {}",
            self.journal.payload_retention.as_secs()
        )?;
        match self.journal.postgres() {
            Some(Ok(pg)) => writeln!(f, "url = {:?}", pg.redacted())?,
            Some(Err(_)) => writeln!(f, "url = {REDACTED:?}")?,
            None => {}
        }
        writeln!(f, "leader_lease_secs = {}", self.journal.leader_lease.as_secs())?;
        writeln!(f, "claim_lease_secs = {}", self.journal.claim_lease.as_secs())?;
        writeln!(f, "\n[domains]\nbase_domain = {:?}", self.domains.base_domain)?;
        writeln!(f, "\n[router]\nbase_url = {:?}", self.router.base_url.as_str())?;
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
            "\n[queue]\nconcurrency = {}\nmax_waiting = {}\nmax_attempts = {}\nbase_backoff_ms = {}\nmax_backoff_secs = {}",
            self.queue.concurrency,
            self.queue.max_waiting,
            self.queue.max_attempts,
            self.queue.base_backoff.as_millis(),
            self.queue.max_backoff.as_secs()
        )?;
        let orphans = self.reconcile.orphans.as_str();
        writeln!(
            f,
            "\n[reconcile]\ntemplates_dir = {:?}\norphans = {orphans:?}\nrunning_timeout_secs = {}\nhealth_poll_interval_secs = {}\nbad_readings_before_error = {}\nsovereign_cpu = {}\nsovereign_mem_mb = {}",
            self.reconcile.templates_dir.display().to_string(),
            self.reconcile.running_timeout.as_secs(),
            self.reconcile.health_poll_interval.as_secs(),
            self.reconcile.bad_readings_before_error,
            self.reconcile.sovereign_cpu,
            self.reconcile.sovereign_mem_mb
        )?;
        writeln!(f, "\n[process]\nnice = {}", self.process.nice)?;
        let l = &self.lifecycle;
        writeln!(
            f,
            "\n[lifecycle]\nretention_secs = {}\nretention_sweep_secs = {}",
            l.retention.as_secs(),
            l.retention_sweep.as_secs()
        )?;
        for (plan, secs) in [
            ("starter", l.starter_retention_secs),
            ("team", l.team_retention_secs),
            ("business", l.business_retention_secs),
            ("sovereign", l.sovereign_retention_secs),
        ] {
            if let Some(secs) = secs {
                writeln!(f, "{plan}_retention_secs = {secs}")?;
            }
        }
        Ok(())
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

    fn with(base: Vec<(String, String)>, pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = base
            .into_iter()
            .filter(|(k, _)| !pairs.iter().any(|(p, _)| p == k))
            .collect();
        out.extend(env(pairs));
        out
    }

    #[test]
    fn environment_values_stay_the_text_they_were_given() {
        let e = with(
            full_env(),
            &[
                ("CF_BRIDGE__POCKETBASE__SUPERUSER_PASSWORD", "0000000000001234"),
                ("CF_BRIDGE__COOLIFY__TOKEN", "1e5"),
                ("CF_BRIDGE__COOLIFY__SERVER_UUID", "true"),
                ("CF_BRIDGE__COOLIFY__ENVIRONMENT", "0012"),
                ("CF_BRIDGE__ADMIN__TOKEN", "00000000000000001234"),
                ("CF_BRIDGE__QUEUE__MAX_ATTEMPTS", "7"),
                ("CF_BRIDGE__RECONCILE__SOVEREIGN_CPU", "2.5"),
                ("CF_BRIDGE__POCKETBASE__REALTIME_PING_INTERVAL_SECS", "0"),
            ],
        );
        let s = load_from(Path::new("/nonexistent/cf-bridge.toml"), false, &e).expect("valid");
        let password = s.pocketbase.superuser_password.as_ref().expect("password");
        assert_eq!(password.expose_secret(), "0000000000001234");
        assert_eq!(s.coolify.token.expose_secret(), "1e5");
        assert_eq!(s.coolify.server_uuid.as_deref(), Some("true"));
        assert_eq!(s.coolify.environment, "0012");
        assert_eq!(s.admin.token.expose_secret(), "00000000000000001234");
        // Numeric keys still parse from the text.
        assert_eq!(s.queue.max_attempts, 7);
        assert_eq!(s.reconcile.sovereign_cpu, 2.5);
        assert_eq!(s.pocketbase.realtime_ping_interval, None);
    }

    #[test]
    fn every_secret_can_come_from_a_file_without_its_trailing_newline() {
        let dir = tempfile::tempdir().expect("dir");
        let file = |name: &str, content: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, content).expect("write");
            p.display().to_string()
        };
        let mut e: Vec<(String, String)> = full_env()
            .into_iter()
            .filter(|(k, _)| env_key(k).is_none_or(|key| !SECRET_KEYS.contains(&key.as_str())))
            .collect();
        let files = [
            (
                "CF_BRIDGE__POCKETBASE__SUPERUSER_PASSWORD_FILE",
                file("pw", "0000000000001234\n"),
            ),
            ("CF_BRIDGE__COOLIFY__TOKEN_FILE", file("coolify", "1|file-token\r\n")),
            (
                "CF_BRIDGE__WEBHOOK__SECRET_FILE",
                file("webhook", "whsec_d2ViaG9vay1jYW5hcnk=\n"),
            ),
            (
                "CF_BRIDGE__ADMIN__TOKEN_FILE",
                file("admin", "admin token with spaces 0123\n\n"),
            ),
            (
                "CF_BRIDGE__SECRETS__KEY_FILE",
                file("key", "key-file-0123456789abcdef0123456789"),
            ),
            (
                "CF_BRIDGE__SECRETS__PREVIOUS_KEYS_FILE",
                file(
                    "prev",
                    "old-key-one-0123456789abcdef01\nold-key-two-0123456789abcdef01\n",
                ),
            ),
        ];
        e.extend(files.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let s = load_from(Path::new("/nonexistent/cf-bridge.toml"), false, &e).expect("valid");
        let password = s.pocketbase.superuser_password.as_ref().expect("password");
        assert_eq!(password.expose_secret(), "0000000000001234");
        assert_eq!(s.coolify.token.expose_secret(), "1|file-token");
        assert_eq!(
            s.webhook.secret.as_ref().expect("webhook").expose_secret(),
            "whsec_d2ViaG9vay1jYW5hcnk="
        );
        assert_eq!(s.admin.token.expose_secret(), "admin token with spaces 0123");
        assert_eq!(s.secrets.key.expose_secret(), "key-file-0123456789abcdef0123456789");
        let previous: Vec<&str> = s.secrets.previous_keys.iter().map(|k| k.expose_secret()).collect();
        assert_eq!(
            previous,
            ["old-key-one-0123456789abcdef01", "old-key-two-0123456789abcdef01"]
        );

        // Where each value came from, and no secret in it.
        let shown = s.with_origins(&origins(Path::new("/nonexistent/cf-bridge.toml"), &e));
        assert!(
            shown.contains(&format!(
                "token = \"<redacted>\"  # env file CF_BRIDGE__COOLIFY__TOKEN_FILE={}",
                files[1].1
            )),
            "{shown}"
        );
        assert!(
            shown.contains("url = \"http://127.0.0.1:8000/\"  # env CF_BRIDGE__COOLIFY__URL"),
            "{shown}"
        );
        assert!(shown.contains("concurrency = 32  # default"), "{shown}");
        for canary in ["0000000000001234", "file-token", "spaces", "key-file", "old-key"] {
            assert!(!shown.contains(canary), "{canary} leaked:\n{shown}");
        }

        // An unreadable file is named, with the variable; a variable and its _FILE together are refused.
        let missing = with(
            e.clone(),
            &[("CF_BRIDGE__ADMIN__TOKEN_FILE", "/nonexistent/admin-token")],
        );
        let err = load_from(Path::new("/nonexistent/cf-bridge.toml"), false, &missing).expect_err("unreadable");
        let text = err.to_string();
        assert!(
            text.starts_with("CF_BRIDGE__ADMIN__TOKEN_FILE: cannot read /nonexistent/admin-token"),
            "{text}"
        );
        let both = with(e, &[("CF_BRIDGE__ADMIN__TOKEN", "admin-canary-0123456789")]);
        let err = load_from(Path::new("/nonexistent/cf-bridge.toml"), false, &both).expect_err("both");
        assert!(err.to_string().contains("not both"), "{err}");
        assert!(!err.to_string().contains("admin-canary"), "{err}");
    }

    #[test]
    fn check_config_names_the_file_for_keys_it_set() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("cf-bridge.toml");
        std::fs::write(&path, "[queue]\nconcurrency = 4\n").expect("write");
        let s = load_from(&path, true, &full_env()).expect("valid");
        let shown = s.with_origins(&origins(&path, &full_env()));
        assert!(
            shown.contains(&format!("concurrency = 4  # file {}", path.display())),
            "{shown}"
        );
        assert!(shown.contains("max_attempts = 12  # default"), "{shown}");
    }

    #[test]
    fn the_examples_placeholders_are_refused_by_key() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("cf-bridge.example.toml");
        let err = load_from(&example, true, &[]).expect_err("the example as it is");
        let text = err.to_string();
        for key in [
            "pocketbase.superuser_password",
            "coolify.url",
            "coolify.token",
            "admin.token",
            "secrets.key",
        ] {
            assert!(
                text.lines().any(|l| l.contains(key) && l.contains("placeholder")),
                "{key} not refused as a placeholder:\n{text}"
            );
        }
    }

    #[test]
    fn webhook_section_is_optional_and_checked_when_present() {
        let without: Vec<(String, String)> = full_env()
            .into_iter()
            .filter(|(k, _)| k != "CF_BRIDGE__WEBHOOK__SECRET")
            .collect();
        let s = load_from(Path::new("/nonexistent/cf-bridge.toml"), false, &without).expect("valid without a webhook");
        assert!(s.webhook.secret.is_none());
        assert!(s.to_string().contains("webhook intake off"), "{s}");
        let mut bad = without.clone();
        bad.push(("CF_BRIDGE__WEBHOOK__SECRET".into(), "plain-secret".into()));
        let err = load_from(Path::new("/nonexistent/cf-bridge.toml"), false, &bad).expect_err("not whsec_");
        assert!(err.to_string().contains("webhook.secret"), "{err}");
        assert!(!err.to_string().contains("plain-secret"), "{err}");
    }

    #[test]
    fn telemetry_is_off_by_default_and_its_endpoint_is_checked() {
        let s = load_from(Path::new("/nonexistent/cf-bridge.toml"), false, &full_env()).expect("valid");
        assert!(s.telemetry.otlp_endpoint.is_none(), "export is off unless asked for");
        let url = "http://collector:4318/v1/traces";
        let e = with(full_env(), &[("CF_BRIDGE__TELEMETRY__OTLP_ENDPOINT", url)]);
        let s = load_from(Path::new("/nonexistent/cf-bridge.toml"), false, &e).expect("valid");
        assert_eq!(s.telemetry.otlp_endpoint.map(String::from).as_deref(), Some(url));
        for (key, value, says) in [
            (
                "CF_BRIDGE__TELEMETRY__OTLP_ENDPOINT",
                "collector:4318",
                "telemetry.otlp_endpoint",
            ),
            (
                "CF_BRIDGE__TELEMETRY__OTLP_ENDPOINT",
                "ftp://collector/v1/traces",
                "telemetry.otlp_endpoint",
            ),
            (
                "CF_BRIDGE__TELEMETRY__OTLP_ENDPOINT",
                "https://user:pw-canary@collector/v1/traces",
                "must not carry credentials",
            ),
            (
                "CF_BRIDGE__TELEMETRY__EXPORT_INTERVAL_MS",
                "10",
                "telemetry.export_interval_ms",
            ),
            ("CF_BRIDGE__TELEMETRY__SERVICE_NAME", "", "telemetry.service_name"),
        ] {
            let err = load_from(
                Path::new("/nonexistent/cf-bridge.toml"),
                false,
                &with(full_env(), &[(key, value)]),
            )
            .expect_err(value)
            .to_string();
            assert!(err.contains(says), "{key}={value}: {err}");
            assert!(!err.contains("pw-canary"), "{err}");
        }
    }

    #[test]
    fn a_relative_templates_dir_is_the_config_files_neighbour() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("cf-bridge.toml");
        std::fs::write(&path, "[reconcile]\ntemplates_dir = \"tpl\"\n").expect("write");
        let s = load_from(&path, true, &full_env()).expect("valid");
        assert_eq!(s.reconcile.templates_dir, dir.path().join("tpl"));
        std::fs::write(&path, "[reconcile]\ntemplates_dir = \"/opt/t\"\n").expect("write");
        let s = load_from(&path, true, &full_env()).expect("valid");
        assert_eq!(s.reconcile.templates_dir, Path::new("/opt/t"));
        let s = load_from(Path::new("/nonexistent/cf-bridge.toml"), false, &full_env()).expect("valid");
        assert_eq!(
            s.reconcile.templates_dir,
            Path::new("templates"),
            "no file: the working directory"
        );
        std::fs::write(&path, "[reconcile]\norphans = \"report\"\n").expect("write");
        let s = load_from(&path, true, &full_env()).expect("valid");
        assert_eq!(
            s.reconcile.templates_dir,
            Path::new("templates"),
            "the default is not the file's: the working directory"
        );
        let mut env = full_env();
        env.push(("CF_BRIDGE__RECONCILE__TEMPLATES_DIR".into(), "tpl-env".into()));
        let s = load_from(&path, true, &env).expect("valid");
        assert_eq!(
            s.reconcile.templates_dir,
            Path::new("tpl-env"),
            "an env value: the working directory"
        );
    }

    #[test]
    fn env_alone_is_enough_and_display_redacts_every_secret() {
        let s = load_from(Path::new("/nonexistent/cf-bridge.toml"), false, &full_env()).expect("valid");
        assert_eq!(s.domains.base_domain, "bots.example.com");
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
    fn debug_output_hides_every_secret() {
        let s = load_from(Path::new("/nonexistent/cf-bridge.toml"), false, &full_env()).expect("valid");
        let shown = format!("{s:?}");
        for canary in [
            "pw-canary",
            "coolify-canary",
            "d2ViaG9vay1jYW5hcnk",
            "admin-canary",
            "key-canary",
        ] {
            assert!(!shown.contains(canary), "{canary} leaked in:\n{shown}");
        }
    }

    #[test]
    fn every_default_is_the_documented_one() {
        let s = load_from(Path::new("/nonexistent/cf-bridge.toml"), false, &full_env()).expect("valid");
        let shown = s.to_string();
        for line in [
            "realtime_idle_timeout_secs = 90",
            "realtime_ping_interval_secs = 5",
            "resync_interval_secs = 300",
            "max_writes_in_flight = 1",
            "environment = \"production\"",
            "requests_per_minute = 180",
            "request_timeout_secs = 30",
            "bind = \"127.0.0.1:8088\"",
            "path = \"cf-bridge.db\"",
            "payload_retention_secs = 86400",
            "format = \"pretty\"",
            "level = \"info\"",
            "store_path = \"cf-bridge-secrets.bin\"",
            "concurrency = 32",
            "max_waiting = 256",
            "max_attempts = 12",
            "base_backoff_ms = 500",
            "max_backoff_secs = 300",
            "templates_dir = \"templates\"",
            "orphans = \"report\"",
            "running_timeout_secs = 300",
            "health_poll_interval_secs = 30",
            "bad_readings_before_error = 3",
            "sovereign_cpu = 4",
            "sovereign_mem_mb = 8192",
            "retention_sweep_secs = 60",
            "nice = 0",
        ] {
            let times = shown.lines().filter(|l| *l == line).count();
            assert_eq!(times, 1, "{line} shown {times} times in:\n{shown}");
        }
        // The journal's and a deleted instance's retention are both a week by default.
        let week = shown.lines().filter(|l| *l == "retention_secs = 604800").count();
        assert_eq!(week, 2, "{shown}");
        assert!(shown.contains("\n[lifecycle]\nretention_secs = 604800\n"), "{shown}");
        assert!(s.coolify.server_uuid.is_none());
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
        assert_eq!(s.domains.base_domain, "file.example.com");
        assert_eq!(s.queue.concurrency, 3);
        e.push(("CF_BRIDGE__QUEUE__CONCURRENCY".into(), "5".into()));
        let s = load_from(&path, true, &e).expect("valid");
        assert_eq!(s.queue.concurrency, 5);
    }

    #[test]
    fn a_nice_value_outside_0_to_19_is_refused_by_name() {
        for bad in ["-1", "20", "high"] {
            let mut e = full_env();
            e.push(("CF_BRIDGE__PROCESS__NICE".into(), bad.into()));
            let err = load_from(Path::new("/nonexistent"), false, &e).expect_err(bad);
            assert!(err.to_string().contains("process.nice"), "{bad}: {err}");
        }
        for good in ["0", "19"] {
            let mut e = full_env();
            e.push(("CF_BRIDGE__PROCESS__NICE".into(), good.into()));
            load_from(Path::new("/nonexistent"), false, &e).expect(good);
        }
    }

    #[test]
    fn problems_name_the_key() {
        let mut e = full_env();
        e.retain(|(k, _)| k != "CF_BRIDGE__COOLIFY__TOKEN");
        e.push(("CF_BRIDGE__DOMAINS__BASE_DOMAIN".into(), "Not A Domain".into()));
        e.push(("CF_BRIDGE__LOG__FORMAT".into(), "xml".into()));
        e.push(("CF_BRIDGE__ADMIN__BIND".into(), "nowhere".into()));
        e.push(("CF_BRIDGE__QUEUE__MAX_WAITING".into(), "100000".into()));
        e.push(("CF_BRIDGE__POCKETBASE__MAX_WRITES_IN_FLIGHT".into(), "0".into()));
        e.push(("CF_BRIDGE__PROCESS__NICE".into(), "20".into()));
        let err = load_from(Path::new("/nonexistent"), false, &e).expect_err("invalid");
        let text = err.to_string();
        for key in [
            "coolify.token",
            "domains.base_domain",
            "log.format",
            "admin.bind",
            "queue.max_waiting",
            "pocketbase.max_writes_in_flight: must be between 1 and 64",
            "process.nice: must be between 0 and 19",
        ] {
            assert!(text.contains(key), "{key} missing from:\n{text}");
        }
        assert!(!text.contains("admin-canary"));
    }

    #[test]
    fn unknown_keys_and_bad_types_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[coolify]\nurll = \"x\"\n").expect("write");
        let err = load_from(&path, true, &full_env()).expect_err("invalid");
        assert!(err.to_string().contains("urll"), "{err}");
        std::fs::write(&path, "[queue]\nconcurrency = \"many\"\n").expect("write");
        let err = load_from(&path, true, &full_env()).expect_err("invalid");
        assert!(err.to_string().contains("concurrency"), "{err}");
        std::fs::write(&path, "this is = = not toml").expect("write");
        assert!(load_from(&path, true, &full_env()).is_err());
        std::fs::write(&path, "[colour]\nred = 1\n").expect("write");
        let err = load_from(&path, true, &full_env()).expect_err("invalid");
        assert!(err.to_string().contains("colour: is not a section"), "{err}");
    }

    #[test]
    fn every_problem_of_a_section_is_reported_not_only_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[pocketbase]\nurl = \"not a url\"\nsuperuser_email = \"bridge\"\n[log]\nx = 1\nformat = \"xml\"\n",
        )
        .expect("write");
        let mut e = full_env();
        e.retain(|(k, _)| !k.starts_with("CF_BRIDGE__POCKETBASE__") && !k.starts_with("CF_BRIDGE__LOG__"));
        e.retain(|(k, _)| k != "CF_BRIDGE__COOLIFY__TOKEN");
        let text = load_from(&path, true, &e).expect_err("invalid").to_string();
        for line in [
            "pocketbase.url: is not a valid URL",
            "pocketbase.superuser_password: is required with pocketbase.superuser_email",
            "coolify.token: is required",
            "log.x: unknown field `x`",
            "log.format: \"xml\" is not one of json, pretty",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert_eq!(text.matches("pocketbase.url").count(), 1, "{text}");
    }

    #[test]
    fn a_missing_required_key_is_named() {
        let mut e = full_env();
        e.retain(|(k, _)| k != "CF_BRIDGE__POCKETBASE__URL" && k != "CF_BRIDGE__SECRETS__KEY");
        let text = load_from(Path::new("/nonexistent"), false, &e)
            .expect_err("invalid")
            .to_string();
        assert!(text.contains("pocketbase.url: is required"), "{text}");
        assert!(text.contains("secrets.key: is required"), "{text}");
    }

    #[test]
    fn a_required_missing_file_is_an_error() {
        let err = load_from(Path::new("/nonexistent/x.toml"), true, &full_env()).expect_err("missing");
        assert!(err.to_string().contains("file not found"));
    }

    #[test]
    fn journal_url_selects_postgres_is_checked_and_never_shown_with_its_password() {
        let nowhere = Path::new("/nonexistent/cf-bridge.toml");
        let sqlite = load_from(nowhere, false, &full_env()).expect("valid");
        assert!(sqlite.journal.postgres().is_none(), "SQLite stays the default");
        assert_eq!(sqlite.journal.leader_lease, Duration::from_secs(15));

        let e = with(
            full_env(),
            &[
                (
                    "CF_BRIDGE__JOURNAL__URL",
                    "postgres://bridge:pg-canary-pw@db.internal:5433/cf?sslmode=disable",
                ),
                ("CF_BRIDGE__JOURNAL__LEADER_LEASE_SECS", "6"),
                ("CF_BRIDGE__JOURNAL__CLAIM_LEASE_SECS", "9"),
            ],
        );
        let s = load_from(nowhere, false, &e).expect("valid");
        let pg = s.journal.postgres().expect("set").expect("parsed");
        assert_eq!(
            (pg.host.as_str(), pg.port, pg.database.as_str()),
            ("db.internal", 5433, "cf")
        );
        assert_eq!(s.journal.leader_lease, Duration::from_secs(6));
        assert_eq!(s.journal.claim_lease, Duration::from_secs(9));
        let shown = s.with_origins(&origins(nowhere, &e));
        assert!(
            shown.contains("url = \"postgres://bridge@db.internal:5433/cf\"  # env CF_BRIDGE__JOURNAL__URL"),
            "{shown}"
        );
        assert!(!shown.contains("pg-canary-pw"), "{shown}");

        let bad = with(
            full_env(),
            &[
                ("CF_BRIDGE__JOURNAL__URL", "mysql://bridge:pg-canary-pw@db/cf"),
                ("CF_BRIDGE__JOURNAL__LEADER_LEASE_SECS", "1"),
                ("CF_BRIDGE__JOURNAL__CLAIM_LEASE_SECS", "301"),
            ],
        );
        let text = load_from(nowhere, false, &bad).expect_err("invalid").to_string();
        assert!(
            text.contains("journal.url: journal.url must start with postgres:// or postgresql://"),
            "{text}"
        );
        assert!(
            text.contains("journal.leader_lease_secs: must be between 3 and 300"),
            "{text}"
        );
        assert!(
            text.contains("journal.claim_lease_secs: must be between 3 and 300"),
            "{text}"
        );
        assert!(!text.contains("pg-canary-pw"), "{text}");
    }
}
