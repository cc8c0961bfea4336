//! Strict Coolify v4 simulator, faithful to the behaviour in docs/SIMULATOR.md and the reference
//! notes: auth, rate limits, validation quirks, asynchronous deletes, lifecycle statuses, and
//! injectable faults. Used by the integration tests, the demo and benchmarks.

pub mod api;
pub mod compose;
pub mod faults;
pub mod model;
pub mod ratelimit;
pub mod routes;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use actix_web::{App, HttpRequest, HttpResponse, HttpResponseBuilder, HttpServer, web};
use serde::Serialize;
use serde_json::{Value, json};
use tracing::warn;

use api::{Body, Ctx, Reply};
use faults::Fault;
use model::SimState;
use ratelimit::RateLimiter;
use routes::Route;

pub use model::LOCALHOST_SERVER_UUID;

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub tokens: Vec<String>,
    pub state_file: Option<PathBuf>,
    /// Time a started service reads `starting:unknown`.
    pub start_delay: Duration,
    /// Extra time in `starting` before `running:*`.
    pub running_delay: Duration,
    /// Time a deleted service still answers 200 before 404.
    pub delete_delay: Duration,
    /// Requests per minute per token.
    pub rate_limit: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            state_file: None,
            start_delay: Duration::from_millis(500),
            running_delay: Duration::ZERO,
            delete_delay: Duration::from_millis(500),
            rate_limit: 200,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    pub method: String,
    /// Endpoint template, e.g. "POST /services"; "*" for the catch-all.
    pub path: String,
    /// The request's actual path (with uuids) and query, so benchmarks can attribute a call to a record
    /// (a batch deploy names its services in the query).
    pub uri: String,
    pub status: u16,
    /// Milliseconds since the simulator started.
    pub at_ms: u64,
    pub lost: bool,
    /// JSON request body, when there was one.
    pub request: Option<Value>,
    /// Response body (JSON, or a JSON string for text bodies); `None` for a list too long to keep.
    pub response: Option<Value>,
    /// The item count of a list answer whose body was not kept (see `LOG_LIST_MAX`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_items: Option<usize>,
}

/// List answers longer than this are logged by their length only: a 10,000-service `GET /services` is
/// tens of megabytes, and copying it into the log on every poll made the simulator the bottleneck.
pub const LOG_LIST_MAX: usize = 500;

pub struct Sim {
    cfg: SimConfig,
    started: Instant,
    state: Mutex<SimState>,
    faults: Mutex<Vec<Fault>>,
    log: Mutex<Vec<LogEntry>>,
    limiter: Mutex<RateLimiter>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A handler that panicked mid-update leaves plain data; keep serving it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Sim {
    pub fn new(cfg: SimConfig) -> io::Result<Self> {
        let mut state: SimState = match &cfg.state_file {
            Some(path) if path.exists() => {
                let text = std::fs::read_to_string(path)?;
                serde_json::from_str(&text).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("state file {} is not valid: {e}", path.display()),
                    )
                })?
            }
            _ => SimState::default(),
        };
        state.reindex();
        Ok(Self {
            cfg,
            started: Instant::now(),
            state: Mutex::new(state),
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            limiter: Mutex::new(RateLimiter::default()),
        })
    }

    fn save(&self, st: &SimState) {
        let Some(path) = &self.cfg.state_file else { return };
        let tmp = path.with_extension("tmp");
        let result = serde_json::to_vec_pretty(st)
            .map_err(io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            warn!(path = %path.display(), error = %e, "coolify-sim could not save its state");
        }
    }

    fn record(&self, method: &str, template: &str, uri: &str, reply: &Reply, lost: bool, request: Option<Value>) {
        let at_ms = ms(self.started.elapsed());
        let (response, response_items) = match &reply.body {
            Body::Json(Value::Array(items)) if items.len() > LOG_LIST_MAX => (None, Some(items.len())),
            Body::Json(v) => (Some(v.clone()), None),
            Body::Text { text, .. } => (Some(Value::String(text.clone())), None),
        };
        lock(&self.log).push(LogEntry {
            method: method.into(),
            path: template.into(),
            uri: uri.into(),
            status: reply.status,
            at_ms,
            lost,
            request,
            response,
            response_items,
        });
    }

    /// Everything, with computed statuses, for tests and operators.
    pub fn state_json(&self) -> Value {
        let mut st = lock(&self.state);
        let now = now_ms();
        st.purge(now);
        let services: Vec<Value> = st
            .services
            .values()
            .map(|s| {
                let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
                v["status"] = json!(s.status(now));
                v["pending_deletion"] = json!(s.delete_at_ms.is_some());
                v
            })
            .collect();
        json!({
            "servers": st.servers,
            "projects": st.projects.values().collect::<Vec<_>>(),
            "services": services,
            "faults": *lock(&self.faults),
        })
    }
}

fn respond(reply: Reply, extra: &[(&'static str, String)]) -> HttpResponse {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut b = HttpResponseBuilder::new(status);
    for (k, v) in reply.headers.iter().chain(extra) {
        if let (Ok(name), Ok(val)) = (HeaderName::try_from(*k), HeaderValue::from_str(v)) {
            b.insert_header((name, val));
        }
    }
    match reply.body {
        Body::Json(v) => b.content_type("application/json").body(v.to_string()),
        Body::Text { text, content_type } => b.content_type(content_type).body(text),
    }
}

/// The change is done; now send headers and half a body, then fail the stream so the connection
/// is cut and the client never gets a complete response.
fn lost(reply: Reply) -> HttpResponse {
    let bytes = match reply.body {
        Body::Json(v) => v.to_string().into_bytes(),
        Body::Text { text, .. } => text.into_bytes(),
    };
    let half = web::Bytes::from(bytes[..bytes.len() / 2].to_vec());
    let stream = futures_util::stream::iter(vec![
        Ok::<_, io::Error>(half),
        Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "coolify-sim: response lost on purpose",
        )),
    ]);
    HttpResponseBuilder::new(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK))
        .content_type("application/json")
        .streaming(stream)
}

async fn dispatch(req: HttpRequest, body: web::Bytes, sim: web::Data<Sim>) -> HttpResponse {
    let method = req.method().as_str().to_string();
    let path = req.path().to_string();
    if path == "/_sim" || path.starts_with("/_sim/") {
        return ops(&sim, &method, &path, &body);
    }
    if path == "/api/health" || path == "/api/v1/health" {
        return HttpResponse::Ok().content_type("text/plain; charset=UTF-8").body("OK");
    }
    let request: Option<Value> = serde_json::from_slice(&body).ok();
    let Some(route) = Route::parse(&method, &path).map(|r| r.with_query(req.query_string())) else {
        let reply = Reply::json(404, json!({"message": "Not found.", "docs": "https://coolify.io/docs"}));
        sim.record(&method, "*", &path, &reply, false, request);
        return respond(reply, &[]);
    };
    let template = route.template();
    // From here on the log keeps the query too (a batch deploy's uuids are in it).
    let path = match req.query_string() {
        "" => path,
        q => format!("{path}?{q}"),
    };
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| sim.cfg.tokens.iter().any(|x| x == t))
        .map(str::to_string);
    let Some(token) = token else {
        let reply = Reply::message(401, "Unauthenticated.");
        sim.record(&method, template, &path, &reply, false, request);
        return respond(reply, &[]);
    };
    let now = now_ms();
    let verdict = lock(&sim.limiter).check(&token, sim.cfg.rate_limit, now);
    let mut headers = vec![
        ("X-RateLimit-Limit", verdict.limit.to_string()),
        ("X-RateLimit-Remaining", verdict.remaining.to_string()),
    ];
    let throttled = |retry_after: u64, reset_at: u64, mut headers: Vec<(&'static str, String)>| {
        headers.push(("Retry-After", retry_after.to_string()));
        headers.push(("X-RateLimit-Reset", reset_at.to_string()));
        let reply = Reply::message(429, "Too Many Attempts.");
        sim.record(&method, template, &path, &reply, false, request.clone());
        respond(reply, &headers)
    };
    if let Some(retry_after) = verdict.retry_after {
        return throttled(retry_after, verdict.reset_at, headers);
    }
    let fx = faults::effects(&mut lock(&sim.faults), template);
    if fx.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(fx.latency_ms)).await;
    }
    if let Some(retry_after) = fx.throttle_retry_after {
        headers[1].1 = "0".into();
        return throttled(retry_after, now / 1000 + retry_after, headers);
    }
    if fx.server_error {
        let reply = Reply::message(500, "Server Error");
        sim.record(&method, template, &path, &reply, false, request);
        return respond(reply, &headers);
    }
    let parsed = if route.takes_json_body() {
        let ct = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        api::parse_body(ct, &body)
    } else {
        Ok(serde_json::Map::new())
    };
    let reply = match parsed {
        Err(r) => r,
        Ok(obj) => {
            let ctx = Ctx {
                now_ms: now_ms(),
                start_delay_ms: ms(sim.cfg.start_delay),
                running_delay_ms: ms(sim.cfg.running_delay),
                delete_delay_ms: ms(sim.cfg.delete_delay),
            };
            if route == Route::ListServices {
                // Coolify's reads do not hold up its writes: build the list, megabytes for a large fleet,
                // from a snapshot taken under the lock rather than under it.
                let services: Vec<model::ServiceRec> = {
                    let mut st = lock(&sim.state);
                    st.purge(ctx.now_ms);
                    st.services.values().cloned().collect()
                };
                api::service_list(services.iter(), ctx.now_ms)
            } else {
                let mut st = lock(&sim.state);
                let reply = api::handle(&mut st, ctx, route, obj);
                if reply.mutated {
                    sim.save(&st);
                }
                reply
            }
        }
    };
    if fx.lose_response {
        sim.record(&method, template, &path, &reply, true, request);
        return lost(reply);
    }
    sim.record(&method, template, &path, &reply, false, request);
    respond(reply, &headers)
}

fn ops(sim: &Sim, method: &str, path: &str, body: &[u8]) -> HttpResponse {
    let ok = |v: Value| HttpResponse::Ok().content_type("application/json").body(v.to_string());
    let bad = |msg: String| {
        HttpResponse::BadRequest()
            .content_type("application/json")
            .body(json!({"message": msg}).to_string())
    };
    match (method, path) {
        ("GET", "/_sim/state") => ok(sim.state_json()),
        ("GET", "/_sim/requests") => ok(serde_json::to_value(&*lock(&sim.log)).unwrap_or(Value::Null)),
        ("DELETE", "/_sim/requests") => {
            lock(&sim.log).clear();
            ok(json!({"message": "Request log cleared."}))
        }
        ("DELETE", "/_sim/faults") => {
            lock(&sim.faults).clear();
            ok(json!({"message": "Faults cleared."}))
        }
        ("POST", "/_sim/faults") => {
            let parsed: Result<Vec<Fault>, _> = match serde_json::from_slice::<Value>(body) {
                Ok(Value::Array(items)) => items.into_iter().map(serde_json::from_value).collect(),
                Ok(v) => serde_json::from_value(v).map(|f| vec![f]),
                Err(e) => return bad(format!("fault body is not JSON: {e}")),
            };
            let new = match parsed {
                Ok(f) => f,
                Err(e) => return bad(format!("invalid fault: {e}")),
            };
            let mut st = lock(&sim.state);
            for uuid in new.iter().filter_map(|f| f.crash_service.as_ref()) {
                match st.services.get_mut(uuid) {
                    Some(s) => s.crashed = true,
                    None => return bad(format!("crash_service: no service {uuid}")),
                }
            }
            drop(st);
            let mut faults = lock(&sim.faults);
            faults.extend(new);
            ok(json!({"faults": faults.len()}))
        }
        ("POST", p) if p.starts_with("/_sim/services/") && p.ends_with("/status") => {
            let uuid = &p["/_sim/services/".len()..p.len() - "/status".len()];
            let forced = match serde_json::from_slice::<Value>(body) {
                Ok(v) => v.get("status").and_then(Value::as_str).map(str::to_string),
                Err(e) => return bad(format!("status body is not JSON: {e}")),
            };
            let mut st = lock(&sim.state);
            match st.services.get_mut(uuid) {
                Some(s) => {
                    s.forced_status = forced;
                    ok(json!({"uuid": uuid, "status": s.status(now_ms())}))
                }
                None => HttpResponse::NotFound()
                    .content_type("application/json")
                    .body(json!({"message": "Service not found."}).to_string()),
            }
        }
        _ => HttpResponse::NotFound()
            .content_type("application/json")
            .body(json!({"message": "Unknown /_sim route."}).to_string()),
    }
}

/// A bound, not yet running simulator.
pub fn bind(cfg: SimConfig, addr: &str, handle_signals: bool) -> io::Result<(SocketAddr, actix_web::dev::Server)> {
    let sim = web::Data::new(Sim::new(cfg)?);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(sim.clone())
            .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
            .default_service(web::to(dispatch))
    })
    .workers(2)
    .shutdown_timeout(1);
    if !handle_signals {
        server = server.disable_signals();
    }
    let server = server.bind(addr)?;
    let bound = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "coolify-sim bound no address"))?;
    Ok((bound, server.run()))
}

/// A simulator running in this process (for tests); stops when dropped.
pub struct RunningSim {
    pub url: String,
    handle: actix_web::dev::ServerHandle,
}

impl RunningSim {
    pub async fn start(cfg: SimConfig) -> io::Result<Self> {
        Self::start_at(cfg, "127.0.0.1:0").await
    }

    /// Starts on `addr` (e.g. the port of a simulator stopped earlier, to come back as the same Coolify).
    pub async fn start_at(cfg: SimConfig, addr: &str) -> io::Result<Self> {
        let (addr, server) = bind(cfg, addr, false)?;
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Self {
            url: format!("http://{addr}"),
            handle,
        })
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        // The stop command is sent at once; the server task carries it out.
        drop(self.handle.stop(false));
    }
}
