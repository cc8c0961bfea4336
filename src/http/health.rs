//! Liveness, readiness and Prometheus metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, get, web};
use serde_json::json;

use tokio_util::sync::CancellationToken;

use crate::coolify::CoolifyClient;
use crate::metrics::Metrics;
use crate::pocketbase::PbClient;

/// Longest gap between readiness checks of PocketBase and Coolify.
pub const READINESS_MAX_INTERVAL: Duration = Duration::from_secs(15);

/// How long one readiness evaluation answers `/readyz`: a flood of probes must not write the journal (or
/// queue behind its writer) once per request.
pub const READINESS_CACHE: Duration = Duration::from_secs(1);

type Problems = Vec<(&'static str, String)>;

/// What `/readyz` reports; each part is updated by the component that owns it.
pub struct Readiness {
    pocketbase_auth: AtomicBool,
    coolify_reachable: AtomicBool,
    /// How recent a resync must be to stand in for a connected realtime stream.
    pub resync_freshness: Duration,
    pub journal: crate::journal::Journal,
    /// The bridge's metrics, read live for the realtime part (and served at `/metrics`).
    pub metrics: Arc<Metrics>,
    /// The last evaluation and when it was made. Held across an evaluation, so concurrent probes share it.
    last: tokio::sync::Mutex<Option<(Instant, Problems)>>,
}

impl Readiness {
    pub fn new(resync_freshness: Duration, journal: crate::journal::Journal, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Readiness {
            pocketbase_auth: AtomicBool::new(false),
            coolify_reachable: AtomicBool::new(false),
            resync_freshness,
            journal,
            metrics,
            last: tokio::sync::Mutex::new(None),
        })
    }

    pub fn set_pocketbase(&self, auth_valid: bool) {
        self.pocketbase_auth.store(auth_valid, Ordering::Relaxed);
    }

    pub fn set_coolify(&self, reachable: bool) {
        self.coolify_reachable.store(reachable, Ordering::Relaxed);
    }

    /// The parts that are not ready, as evaluated at most [`READINESS_CACHE`] ago.
    pub async fn problems(&self) -> Problems {
        let mut last = self.last.lock().await;
        if let Some((at, problems)) = last.as_ref()
            && at.elapsed() < READINESS_CACHE
        {
            return problems.clone();
        }
        let problems = self.evaluate().await;
        *last = Some((Instant::now(), problems.clone()));
        problems
    }

    /// The parts that are not ready, with the reason for each.
    async fn evaluate(&self) -> Problems {
        let mut out = Vec::new();
        self.metrics.journal_health_writes.inc();
        if let Err(e) = self.journal.check_writable().await {
            out.push(("journal", format!("not writable: {e}")));
        }
        if !self.pocketbase_auth.load(Ordering::Relaxed) {
            out.push(("pocketbase", "superuser authentication not valid".to_string()));
        }
        // Read live from the realtime task's gauge: a cached copy would lag a reconnect by a whole tick.
        let m = &self.metrics;
        let connected = m.realtime_connected.get() == 1;
        let last = m.last_resync_timestamp.get();
        let now = chrono::Utc::now().timestamp() as f64;
        let fresh = last > 0.0 && now - last <= self.resync_freshness.as_secs_f64();
        if !connected && !fresh {
            out.push(("realtime", "stream not connected and no recent resync".to_string()));
        }
        if !self.coolify_reachable.load(Ordering::Relaxed) {
            out.push(("coolify", "not reachable".to_string()));
        }
        out
    }
}

/// Keeps the PocketBase and Coolify parts of `/readyz` current until `cancel`.
pub async fn watch(
    readiness: Arc<Readiness>,
    pb: PbClient,
    coolify: CoolifyClient,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        readiness.set_pocketbase(pb.token().await.is_ok());
        readiness.set_coolify(coolify.health().await.is_ok());
    }
}

#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

#[get("/readyz")]
async fn readyz(readiness: web::Data<Arc<Readiness>>) -> HttpResponse {
    let problems = readiness.problems().await;
    if problems.is_empty() {
        HttpResponse::Ok().json(json!({"status": "ready"}))
    } else {
        let parts: serde_json::Map<String, serde_json::Value> = problems
            .into_iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
            .collect();
        HttpResponse::ServiceUnavailable().json(json!({"status": "not ready", "not_ready": parts}))
    }
}

#[get("/metrics")]
async fn metrics_text(readiness: web::Data<Arc<Readiness>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(readiness.metrics.render())
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(healthz).service(readyz).service(metrics_text);
}
