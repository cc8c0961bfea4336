//! cf-testkit: what cf-bridge's tests and its benchmark stand on. One PocketBase launcher (a free port,
//! the project's migrations and hooks), the simulator in the test process, the bridge in the test
//! process or as a process (where `kill -9`, SIGTERM or the CLI is the point), one settings builder,
//! and typed clients for PocketBase, the simulator's `/_sim` API and the admin API.
//!
//! Test code: a failed set-up panics with what went wrong (and the logs that show why).

pub mod admin;
pub mod bridge;
pub mod cli;
pub mod collector;
pub mod coolify;
pub mod faultproxy;
pub mod journal;
pub mod pocketbase;
pub mod postgres;
pub mod promtext;
pub mod proxy;
pub mod settings;
pub mod sim;
pub mod world;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use admin::AdminClient;
pub use bridge::{BridgeProcess, TestBridge};
pub use pocketbase::{PbOptions, TestPb};
pub use postgres::{Postgres, TestDb};
pub use settings::TestSettings;
pub use sim::TestSim;
pub use world::World;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const WEBHOOK_SECRET: &str = "whsec_dGVzdC13ZWJob29rLWtleS1wcmludGFibGUtYXNjaWkhIQ==";
pub const SECRETS_KEY: &str = "test-secrets-key-0123456789abcdef0123456789";
pub const BASE_DOMAIN: &str = "bots.test.example";
pub const ROUTER_URL: &str = "https://router.test.example";

/// The workspace root (this crate lives in crates/cf-testkit).
pub fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// A port nothing listens on right now, for a process to bind, taken below the kernel's ephemeral range
/// where it can: a port from that range (what binding port 0 gives) may be handed to an outgoing connection of
/// the machine's other tests before the process binds it. CI saw the demo's bridge exit at start-up once.
pub fn free_port() -> u16 {
    let low = ephemeral_low();
    if low > 11_000 {
        for _ in 0..64 {
            let port = rand::random_range(10_000..low);
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    bind_local().local_addr().expect("local addr").port()
}

/// The first port of the range the kernel picks outgoing connections' ports from (0 where it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A socket bound to a free port of 127.0.0.1, for a bridge that must be reachable before it is built.
pub fn bind_local() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port")
}

/// A plain HTTP client with a timeout (rustls on ring, as the bridge).
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

/// Polls `check` until it returns Some, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A record's id.
pub fn id(v: &serde_json::Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("record without id: {v}"))
        .to_string()
}

/// A record's `updated`.
pub fn updated(v: &serde_json::Value) -> String {
    v["updated"]
        .as_str()
        .unwrap_or_else(|| panic!("record without updated: {v}"))
        .to_string()
}

/// The last `lines` lines of a log, for failure messages.
pub fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
