//! Whether PocketBase and Coolify can be reached, kept current in the background.
//!
//! The bridge starts without them (webhooks are journaled meanwhile): the dispatcher and the periodic
//! tasks wait while a dependency is down, a job that finds one unavailable asks for a probe at once, and
//! [`run`] probes with backoff while one is down (at a steady pace while both are up) until they answer. One log line per change
//! of state, never one per probe.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus::IntGaugeVec;
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::coolify::{CoolifyClient, CoolifyError};
use crate::pocketbase::{PbClient, PbError};

/// A service the bridge needs to process events (but not to take them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    PocketBase,
    Coolify,
}

impl Dependency {
    pub const ALL: [Dependency; 2] = [Dependency::PocketBase, Dependency::Coolify];

    pub fn as_str(self) -> &'static str {
        match self {
            Dependency::PocketBase => "pocketbase",
            Dependency::Coolify => "coolify",
        }
    }

    fn index(self) -> usize {
        match self {
            Dependency::PocketBase => 0,
            Dependency::Coolify => 1,
        }
    }
}

/// First wait before probing a dependency that went down again; doubles up to the steady interval.
const DOWN_PROBE_MIN: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct State {
    /// `None` until first checked.
    up: Option<bool>,
    /// Why it is down (an error's text: no secret is ever part of one).
    reason: Option<String>,
    since: chrono::DateTime<chrono::Utc>,
}

/// The state of each dependency, the Coolify server new services go to, and who waits for them.
pub struct Dependencies {
    states: [Mutex<State>; 2],
    gauge: IntGaugeVec,
    all_up: watch::Sender<bool>,
    probe_now: Notify,
    /// `coolify.server_uuid`, or the usable server found once Coolify answered.
    server: OnceLock<String>,
}

impl Dependencies {
    /// Both dependencies unknown (down) until [`Dependencies::set`] says otherwise.
    pub fn new(gauge: IntGaugeVec) -> Arc<Self> {
        let state = || {
            Mutex::new(State {
                up: None,
                reason: Some("not checked yet".into()),
                since: chrono::Utc::now(),
            })
        };
        for d in Dependency::ALL {
            gauge.with_label_values(&[d.as_str()]).set(0);
        }
        Arc::new(Dependencies {
            states: [state(), state()],
            gauge,
            all_up: watch::channel(false).0,
            probe_now: Notify::new(),
            server: OnceLock::new(),
        })
    }

    fn state(&self, d: Dependency) -> std::sync::MutexGuard<'_, State> {
        self.states[d.index()].lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_up(&self, d: Dependency) -> bool {
        self.state(d).up == Some(true)
    }

    pub fn all_up(&self) -> bool {
        Dependency::ALL.iter().all(|d| self.is_up(*d))
    }

    /// Follows "every dependency is up" (the dispatcher waits on it).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.all_up.subscribe()
    }

    /// Records a probe's (or a job's) finding; logs and updates the gauge only when the state changes.
    pub fn set(&self, d: Dependency, result: Result<(), String>) {
        let up = result.is_ok();
        {
            let mut s = self.state(d);
            if s.up == Some(up) {
                if let Err(reason) = result {
                    s.reason = Some(reason);
                }
                return;
            }
            let again = s.up.is_some();
            s.up = Some(up);
            s.since = chrono::Utc::now();
            match result {
                Ok(()) if again => {
                    tracing::info!(
                        dependency = d.as_str(),
                        "{} is reachable again; processing resumes",
                        d.as_str()
                    )
                }
                Ok(()) => tracing::info!(dependency = d.as_str(), "{} is reachable", d.as_str()),
                Err(reason) => {
                    tracing::warn!(
                        dependency = d.as_str(),
                        reason = %reason,
                        "{} is unavailable; events are still journaled, processing waits, retrying in the background",
                        d.as_str()
                    );
                    s.reason = Some(reason);
                }
            }
            if up {
                s.reason = None;
            }
        }
        self.changed(d, up);
    }

    fn changed(&self, d: Dependency, up: bool) {
        self.gauge.with_label_values(&[d.as_str()]).set(i64::from(up));
        let all = self.all_up();
        self.all_up.send_if_modified(|v| std::mem::replace(v, all) != all);
    }

    /// A job found `d` unavailable: probe now rather than at the next tick. Only the probe marks it down
    /// (which closes the dispatcher's gate): one lost answer from a Coolify that is up stops no one.
    pub fn suspect(&self, d: Dependency) {
        tracing::debug!(dependency = d.as_str(), "a job found it unavailable; probing now");
        self.probe_now.notify_one();
    }

    /// The Coolify server new services go to, once known.
    pub fn server_uuid(&self) -> Option<&str> {
        self.server.get().map(String::as_str)
    }

    pub fn set_server_uuid(&self, uuid: String) {
        let _ = self.server.set(uuid);
    }

    /// Each dependency's state, for `/readyz`.
    pub fn snapshot(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for d in Dependency::ALL {
            let s = self.state(d).clone();
            out.insert(
                d.as_str().into(),
                json!({"up": s.up == Some(true), "since": s.since.to_rfc3339(), "reason": s.reason}),
            );
        }
        serde_json::Value::Object(out)
    }
}

/// Why a start-up check of Coolify failed: a state to wait out, or a setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum CoolifyCheckError {
    #[error("{0}")]
    Coolify(&'static str, #[source] CoolifyError),
    #[error("coolify.server_uuid {0} is not a server this token can see")]
    UnknownServer(String),
    #[error("Coolify has no usable, reachable server; set coolify.server_uuid")]
    NoServer,
}

impl CoolifyCheckError {
    /// True when waiting may cure it (Coolify down, overloaded or slow), false for a setting to fix.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, CoolifyCheckError::Coolify(_, e) if coolify_unavailable(e))
    }
}

/// Errors that mean "PocketBase cannot be reached right now" rather than "the request is wrong".
pub fn pocketbase_unavailable(e: &PbError) -> bool {
    match e {
        PbError::Transport(_) => true,
        PbError::Server { status, .. } => matches!(status, 502..=504),
        _ => false,
    }
}

/// Errors that mean "Coolify cannot be reached right now" rather than "the request is wrong".
pub fn coolify_unavailable(e: &CoolifyError) -> bool {
    match e {
        CoolifyError::Transport(_) => true,
        CoolifyError::Server { status, .. } => matches!(status, 502..=504),
        _ => false,
    }
}

/// Checks the PocketBase credentials: answers and accepts them.
pub async fn check_pocketbase(pb: &PbClient) -> Result<(), PbError> {
    pb.health().await?;
    pb.token().await.map(drop)
}

/// Checks the Coolify token and picks the server (`configured`, or the first usable one); once a server
/// is known, only that Coolify answers.
pub async fn check_coolify(
    coolify: &CoolifyClient,
    deps: &Dependencies,
    configured: Option<&str>,
) -> Result<(), CoolifyCheckError> {
    if deps.server_uuid().is_some() {
        return coolify
            .health()
            .await
            .map_err(|e| CoolifyCheckError::Coolify("Coolify health check failed", e));
    }
    coolify
        .team()
        .await
        .map_err(|e| CoolifyCheckError::Coolify("Coolify token check (GET /team) failed", e))?;
    let servers = coolify
        .servers()
        .await
        .map_err(|e| CoolifyCheckError::Coolify("listing Coolify servers", e))?;
    let server = match configured {
        Some(uuid) if servers.iter().any(|s| s.uuid == uuid) => uuid.to_string(),
        Some(uuid) => return Err(CoolifyCheckError::UnknownServer(uuid.to_string())),
        None => servers
            .into_iter()
            .find(|s| s.is_usable && s.is_reachable)
            .map(|s| s.uuid)
            .ok_or(CoolifyCheckError::NoServer)?,
    };
    deps.set_server_uuid(server);
    Ok(())
}

/// An error with its sources, for a dependency's reason.
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Probes both dependencies until `cancel`: every `every` while all are up, with backoff (from one
/// second up to `every`) while one is down, and at once when a job reports one unavailable.
pub async fn run(
    deps: Arc<Dependencies>,
    pb: PbClient,
    coolify: CoolifyClient,
    configured_server: Option<String>,
    every: Duration,
    cancel: CancellationToken,
) {
    let backoff = Backoff::new(DOWN_PROBE_MIN, every.max(DOWN_PROBE_MIN));
    let mut down_rounds = 0u32;
    loop {
        let pb_result = check_pocketbase(&pb).await.map_err(|e| describe(&e));
        deps.set(Dependency::PocketBase, pb_result);
        let coolify_result = check_coolify(&coolify, &deps, configured_server.as_deref())
            .await
            .map_err(|e| describe(&e));
        deps.set(Dependency::Coolify, coolify_result);
        let wait = if deps.all_up() {
            down_rounds = 0;
            every
        } else {
            down_rounds = down_rounds.saturating_add(1);
            backoff.ceiling(down_rounds - 1)
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = deps.probe_now.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps() -> Arc<Dependencies> {
        let gauge = IntGaugeVec::new(prometheus::Opts::new("dependency_up", "test"), &["dependency"]).expect("gauge");
        Dependencies::new(gauge)
    }

    #[test]
    fn all_up_follows_each_change_and_the_gauge_with_it() {
        let d = deps();
        let mut rx = d.subscribe();
        assert!(!d.all_up());
        d.set(Dependency::PocketBase, Ok(()));
        assert!(!*rx.borrow_and_update());
        d.set(Dependency::Coolify, Ok(()));
        assert!(rx.has_changed().expect("open") && *rx.borrow_and_update());
        assert_eq!(d.gauge.with_label_values(&["coolify"]).get(), 1);
        d.set(Dependency::Coolify, Err("connection refused".into()));
        assert!(!*rx.borrow_and_update());
        assert_eq!(d.gauge.with_label_values(&["coolify"]).get(), 0);
        assert_eq!(d.snapshot()["coolify"]["reason"], "connection refused");
        assert_eq!(d.snapshot()["pocketbase"]["up"], true);
    }

    #[test]
    fn only_outages_wait_not_wrong_requests() {
        assert!(pocketbase_unavailable(&PbError::Transport("refused".into())));
        assert!(pocketbase_unavailable(&PbError::Server {
            status: 503,
            message: String::new()
        }));
        assert!(!pocketbase_unavailable(&PbError::NotFound));
        assert!(!pocketbase_unavailable(&PbError::Auth { message: String::new() }));
        assert!(coolify_unavailable(&CoolifyError::Transport("refused".into())));
        assert!(!coolify_unavailable(&CoolifyError::Unauthorized));
        assert!(!coolify_unavailable(&CoolifyError::Server {
            status: 500,
            message: String::new()
        }));
    }
}
