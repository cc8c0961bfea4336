//! Liveness, readiness and Prometheus metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, get, web};
use serde_json::json;

use crate::dependencies::Dependencies;
use crate::metrics::Metrics;

/// Longest gap between checks of PocketBase and Coolify while both answer.
pub const READINESS_MAX_INTERVAL: Duration = Duration::from_secs(15);

/// How long one readiness evaluation answers `/readyz`: a flood of probes must not write the journal (or
/// queue behind its writer) once per request.
pub const READINESS_CACHE: Duration = Duration::from_secs(1);

type Problems = Vec<(&'static str, String)>;

/// What `/readyz` reports: ready means this replica can take and keep events (its journal is writable
/// and it answers HTTP). PocketBase, Coolify and the realtime stream are reported beside it: while they
/// are away events are journaled and wait, so they do not make the replica unready.
pub struct Readiness {
    /// How recent a resync must be to stand in for a connected realtime stream.
    pub resync_freshness: Duration,
    pub journal: crate::journal::Journal,
    /// The bridge's metrics, read live for the realtime part (and served at `/metrics`).
    pub metrics: Arc<Metrics>,
    pub dependencies: Arc<Dependencies>,
    /// Whether signed webhooks are taken besides realtime and resync (`webhook.secret` set).
    webhook_intake: bool,
    /// The last evaluation and when it was made. Held across an evaluation, so concurrent probes share it.
    last: tokio::sync::Mutex<Option<(Instant, Problems)>>,
}

impl Readiness {
    pub fn new(
        resync_freshness: Duration,
        journal: crate::journal::Journal,
        metrics: Arc<Metrics>,
        dependencies: Arc<Dependencies>,
        webhook_intake: bool,
    ) -> Arc<Self> {
        Arc::new(Readiness {
            resync_freshness,
            journal,
            metrics,
            dependencies,
            webhook_intake,
            last: tokio::sync::Mutex::new(None),
        })
    }

    /// How changes reach this bridge, for `/readyz`: realtime and resync always, webhooks when configured.
    fn intake(&self) -> &'static str {
        if self.webhook_intake {
            "webhook+realtime+resync"
        } else {
            "realtime+resync"
        }
    }

    /// The parts that keep the replica from taking events, as evaluated at most [`READINESS_CACHE`] ago.
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

    async fn evaluate(&self) -> Problems {
        let mut out = Vec::new();
        self.metrics.journal_health_writes.inc();
        if let Err(e) = self.journal.check_writable().await {
            out.push(("journal", format!("not writable: {e}")));
        }
        out
    }

    /// Whether changes reach the bridge live: the stream is subscribed, or a resync ran recently.
    fn realtime(&self) -> serde_json::Value {
        // Read live from the realtime task's gauge: a cached copy would lag a reconnect by a whole tick.
        let m = &self.metrics;
        let connected = m.realtime_connected.get() == 1;
        let last = m.last_resync_timestamp.get();
        let now = chrono::Utc::now().timestamp() as f64;
        let fresh = last > 0.0 && now - last <= self.resync_freshness.as_secs_f64();
        json!({"connected": connected, "recent_resync": fresh})
    }
}

#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

#[get("/readyz")]
async fn readyz(readiness: web::Data<Arc<Readiness>>) -> HttpResponse {
    let problems = readiness.problems().await;
    let dependencies = readiness.dependencies.snapshot();
    let realtime = readiness.realtime();
    // Whether this replica runs the fleet-wide tasks (always on SQLite); a follower is as ready as a leader.
    let leader = readiness.metrics.leader.get() == 1;
    if problems.is_empty() {
        HttpResponse::Ok().json(json!({
            "status": "ready", "dependencies": dependencies, "realtime": realtime, "leader": leader,
            "intake": readiness.intake(),
        }))
    } else {
        let parts: serde_json::Map<String, serde_json::Value> = problems
            .into_iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
            .collect();
        HttpResponse::ServiceUnavailable().json(json!({
            "status": "not ready",
            "not_ready": parts,
            "dependencies": dependencies,
            "realtime": realtime,
            "leader": leader,
            "intake": readiness.intake(),
        }))
    }
}

#[get("/metrics")]
async fn metrics_text(readiness: web::Data<Arc<Readiness>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(readiness.metrics.render())
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    configure_health(cfg);
    configure_metrics(cfg);
}

/// `/healthz` and `/readyz` only: `/metrics` is served on `metrics.bind`.
pub fn configure_health(cfg: &mut web::ServiceConfig) {
    cfg.service(healthz).service(readyz);
}

pub fn configure_metrics(cfg: &mut web::ServiceConfig) {
    cfg.service(metrics_text);
}
