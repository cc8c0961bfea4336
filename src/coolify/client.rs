//! The HTTP client: budgeted, retried per policy, typed.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tracing::{Instrument, debug, warn};

use super::budget::{Budget, Priority};
use super::calls::{CallLog, CoolifyCall};
use super::deploys::DeployBatches;
use super::error::CoolifyError;
use super::fleet::{BriefAndCompose, FleetList, LastPass, ServiceBrief};
use super::retry::{Decision, Idempotency, Outcome, RetryPolicy};
use super::types::*;
use crate::backoff::Backoff;
use crate::bounded::{self, ElementsError, ReadError};
use crate::config::CoolifySettings;
use crate::metrics::Metrics;

/// Smallest bucket of the request budget: any 60 s window then carries at most the per-minute rate plus
/// the bucket, under Coolify's 200 at the default 180.
pub const MIN_BURST: u32 = 10;

/// Bucket size of the request budget for `requests_per_minute`: a twentieth of it, at least
/// [`MIN_BURST`]. Measured: a fixed 10 at 100,000/min made a status round's 50 reads queue for tokens for
/// 24 ms, and the start calls behind them as long, with the minute's budget almost untouched.
pub fn burst(requests_per_minute: u32) -> u32 {
    MIN_BURST.max(requests_per_minute / 20)
}
/// Retries of a call that is safe to repeat, after a 5xx or a transport error.
pub const MAX_RETRIES: u32 = 4;
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct CoolifyClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    root: String,
    token: SecretString,
    budget: Limiter,
    policy: RetryPolicy,
    metrics: Arc<Metrics>,
    calls: CallLog,
    deploys: DeployBatches,
    fleet: LastPass,
}

struct Reply<B = Vec<u8>> {
    status: StatusCode,
    body: B,
}

/// How the body of a successful answer is read.
trait BodyReader: Send {
    type Out: Send;
    fn read(
        &mut self,
        resp: reqwest::Response,
        limit: usize,
    ) -> impl Future<Output = Result<Self::Out, ElementsError>> + Send;
}

/// The whole body, as bytes.
struct Whole;

impl BodyReader for Whole {
    type Out = Vec<u8>;
    async fn read(&mut self, resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, ElementsError> {
        Ok(bounded::read(resp, limit).await?)
    }
}

/// A JSON array (the body, or the body's `field` of an object) decoded one element at a time as `T`, of
/// which only what `keep` makes is kept.
struct Elements<T, F> {
    field: Option<&'static str>,
    keep: F,
    element: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned, U: Send, F: FnMut(T) -> Option<U> + Send> BodyReader for Elements<T, F> {
    type Out = Vec<U>;
    async fn read(&mut self, resp: reqwest::Response, limit: usize) -> Result<Vec<U>, ElementsError> {
        // Fresh on every attempt: a retried read starts the list again.
        let mut kept = Vec::new();
        let each = |bytes: &[u8]| {
            let element = serde_json::from_slice::<T>(bytes).map_err(|e| e.to_string())?;
            kept.extend((self.keep)(element));
            Ok(())
        };
        match self.field {
            None => bounded::read_array_each(resp, limit, each).await?,
            Some(field) => bounded::read_field_each(resp, limit, field, each).await?,
        }
        Ok(kept)
    }
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn decode<T: DeserializeOwned>(endpoint: &str, reply: &Reply) -> Result<T, CoolifyError> {
    serde_json::from_slice(&reply.body)
        .map_err(|e| CoolifyError::BadResponse(format!("{endpoint} returned {}: {e}", reply.status.as_u16())))
}

/// The largest answer read from each endpoint. `GET /services` lists the whole team: about 3.7 KB per
/// service (37 MB for 10,000), so 128 MiB covers some 35,000 services; a tenant's environment lists that
/// tenant's services only; every other answer is one resource or a short list.
fn body_limit(endpoint: &str) -> usize {
    match endpoint {
        "GET /services" => 128 << 20,
        "GET /projects/{uuid}/{environment}" => 32 << 20,
        "GET /projects" => 16 << 20,
        _ => 4 << 20,
    }
}

/// Of an error answer, only this much is read (it becomes part of a message).
const ERROR_BODY_LIMIT: usize = 64 << 10;

/// Percent-encodes one path segment (uuids are plain, environment names may not be).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What went wrong below HTTP, in a word (a reqwest error's text carries the URL).
fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "transport"
    }
}

fn describe(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// Checks the compose parses and has a `services` map, then STANDARD-base64 encodes it (Coolify
/// answers invalid YAML with a 500 and line-broken base64 with a 422).
pub fn encode_compose(yaml: &str) -> Result<String, CoolifyError> {
    let doc: serde_norway::Value = serde_norway::from_str(yaml)
        .map_err(|e| CoolifyError::InvalidInput(format!("compose is not valid YAML: {e}")))?;
    let has_services = doc.get("services").is_some_and(serde_norway::Value::is_mapping);
    if !has_services {
        return Err(CoolifyError::InvalidInput(
            "compose must contain a \"services\" map".into(),
        ));
    }
    Ok(STANDARD.encode(yaml.as_bytes()))
}

/// [`crate::templates::compose_meaning`] of a compose's text; `None` for text that is not YAML.
pub fn compose_fingerprint(yaml: &str) -> Option<String> {
    let doc: serde_norway::Value = serde_norway::from_str(yaml).ok()?;
    Some(crate::templates::compose_meaning(&doc))
}

fn urls_json(urls: &[ServiceUrl]) -> Value {
    Value::Array(urls.iter().map(|u| json!({"name": u.name, "url": u.url})).collect())
}

/// How long a call waits before asking the shared budget again after PostgreSQL failed to answer.
const SHARED_BUDGET_RETRY: Duration = Duration::from_millis(500);

/// Where the client takes its request tokens: a bucket of its own, or (several replicas on PostgreSQL) the
/// one every replica takes from, so that together they stay within `coolify.requests_per_minute`.
enum Limiter {
    Local(Budget),
    Shared {
        budget: crate::pg::budget::SharedBudget,
        gauge: prometheus::Gauge,
    },
}

impl Limiter {
    async fn acquire(&self, priority: Priority) {
        match self {
            Limiter::Local(b) => b.acquire(priority).await,
            Limiter::Shared { budget, .. } => {
                // No call without a token: while PostgreSQL does not answer, Coolify calls wait (the journal
                // is away too, so no outcome could be recorded anyway). Boxed: PostgreSQL's future is
                // larger than the rest of a call's, and would otherwise be part of every call's.
                let mut failures = 0u32;
                while let Err(e) = Box::pin(budget.acquire(priority)).await {
                    if failures.is_multiple_of(20) {
                        warn!(error = %e, "the shared Coolify budget cannot be read; the call waits");
                    }
                    failures = failures.saturating_add(1);
                    tokio::time::sleep(SHARED_BUDGET_RETRY).await;
                }
            }
        }
    }

    async fn drain(&self) {
        match self {
            Limiter::Local(b) => b.drain(),
            Limiter::Shared { budget, gauge } => {
                gauge.set(0.0);
                if let Err(e) = Box::pin(budget.drain()).await {
                    warn!(error = %e, "cannot empty the shared Coolify budget after a 429");
                }
            }
        }
    }

    fn remaining(&self) -> f64 {
        match self {
            Limiter::Local(b) => b.remaining(),
            Limiter::Shared { gauge, .. } => gauge.get(),
        }
    }

    fn capacity(&self) -> f64 {
        match self {
            Limiter::Local(b) => b.capacity(),
            Limiter::Shared { budget, .. } => budget.capacity(),
        }
    }
}

impl CoolifyClient {
    /// A client for `[coolify]`: its URL, token, request budget and timeout.
    pub fn new(cfg: &CoolifySettings, metrics: Arc<Metrics>) -> Result<Self, CoolifyError> {
        let budget = Limiter::Local(Budget::new(
            cfg.requests_per_minute,
            burst(cfg.requests_per_minute),
            metrics.coolify_budget_remaining.clone(),
        ));
        Self::build(cfg, metrics, budget)
    }

    /// A client whose calls take their tokens from `shared`, the budget of every replica on one PostgreSQL.
    pub fn with_shared_budget(
        cfg: &CoolifySettings,
        metrics: Arc<Metrics>,
        shared: crate::pg::budget::SharedBudget,
    ) -> Result<Self, CoolifyError> {
        let gauge = metrics.coolify_budget_remaining.clone();
        let budget = Limiter::Shared {
            budget: shared.with_gauge(gauge.clone()),
            gauge,
        };
        Self::build(cfg, metrics, budget)
    }

    fn build(cfg: &CoolifySettings, metrics: Arc<Metrics>, budget: Limiter) -> Result<Self, CoolifyError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| CoolifyError::InvalidInput(format!("cannot build HTTP client: {}", describe(&e))))?;
        let scheme = cfg.url.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(CoolifyError::InvalidInput(format!(
                "coolify base_url must be http(s), got {scheme}"
            )));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                root: cfg.url.as_str().trim_end_matches('/').to_string(),
                token: cfg.token.clone(),
                budget,
                metrics,
                policy: RetryPolicy::new(MAX_RETRIES),
                calls: CallLog::default(),
                deploys: DeployBatches::default(),
                fleet: LastPass::default(),
            }),
        })
    }

    pub fn budget_remaining(&self) -> f64 {
        self.inner.budget.remaining()
    }

    /// The calls made for `record_id`'s jobs, oldest first, from memory.
    pub fn calls_for(&self, record_id: &str) -> Vec<CoolifyCall> {
        self.inner.calls.for_record(record_id)
    }

    async fn send(
        &self,
        method: Method,
        endpoint: &'static str,
        path: &str,
        body: Option<&Value>,
        idem: Idempotency,
    ) -> Result<Reply, CoolifyError> {
        self.send_as(Priority::Normal, method, endpoint, path, body, idem).await
    }

    /// One Coolify call (with its retries) as one span of the job's trace.
    async fn send_as(
        &self,
        priority: Priority,
        method: Method,
        endpoint: &'static str,
        path: &str,
        body: Option<&Value>,
        idem: Idempotency,
    ) -> Result<Reply, CoolifyError> {
        self.send_reading(priority, method, endpoint, path, body, idem, &mut Whole)
            .await
    }

    /// [`Self::send_as`] with the body of a successful answer read by `reader`.
    #[allow(clippy::too_many_arguments)]
    async fn send_reading<R: BodyReader>(
        &self,
        priority: Priority,
        method: Method,
        endpoint: &'static str,
        path: &str,
        body: Option<&Value>,
        idem: Idempotency,
        reader: &mut R,
    ) -> Result<Reply<R::Out>, CoolifyError> {
        let span = tracing::info_span!("coolify", endpoint, method = %method);
        // Boxed: a call's state (the request, its retries, the budget's wait) lives only while it runs, so
        // every future that makes a call stays small, and a job waiting for Coolify holds only its wait.
        Box::pin(self.send_unspanned(priority, method, endpoint, path, body, idem, reader))
            .instrument(span)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_unspanned<R: BodyReader>(
        &self,
        priority: Priority,
        method: Method,
        endpoint: &'static str,
        path: &str,
        body: Option<&Value>,
        idem: Idempotency,
        reader: &mut R,
    ) -> Result<Reply<R::Out>, CoolifyError> {
        let inner = &self.inner;
        let url = format!("{}{}", inner.root, path);
        let (mut failures, mut throttled) = (0u32, 0u32);
        let job = crate::queue::current_job();
        let note = |sent: Instant, at: i64, status: Option<u16>, error: Option<&'static str>| {
            if let Some(job) = &job {
                let call = CoolifyCall {
                    at,
                    job_id: job.job_id,
                    route: endpoint,
                    status,
                    error,
                    duration_ms: u64::try_from(sent.elapsed().as_millis()).unwrap_or(u64::MAX),
                };
                inner.calls.note(&job.record_id, call);
            }
        };
        loop {
            inner.budget.acquire(priority).await;
            let (sent, at) = (Instant::now(), crate::journal::now_ms());
            let mut rb = inner
                .http
                .request(method.clone(), &url)
                .header(header::ACCEPT, "application/json")
                .bearer_auth(inner.token.expose_secret());
            if let Some(b) = body {
                rb = rb.json(b);
            }
            let (outcome, err) = match rb.send().await {
                Err(e) => {
                    note(sent, at, None, Some(transport_kind(&e)));
                    inner
                        .metrics
                        .coolify_requests
                        .with_label_values(&[endpoint, "error"])
                        .inc();
                    (Outcome::Transport, CoolifyError::Transport(describe(&e)))
                }
                Ok(resp) => {
                    let status = resp.status();
                    inner
                        .metrics
                        .coolify_requests
                        .with_label_values(&[endpoint, status.as_str()])
                        .inc();
                    let retry_after = resp
                        .headers()
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    // Ok(Ok(..)): a success's body as read; Ok(Err(..)): the start of an error answer.
                    let body = if status.is_success() {
                        reader.read(resp, body_limit(endpoint)).await.map(Ok)
                    } else {
                        bounded::read_prefix(resp, ERROR_BODY_LIMIT)
                            .await
                            .map(Err)
                            .map_err(|e| ElementsError::Read(e.into()))
                    };
                    // An answer that does not decode was still a complete call, as when it was decoded
                    // after reading.
                    let failed = match &body {
                        Ok(_) | Err(ElementsError::Malformed(_)) => None,
                        Err(ElementsError::Read(ReadError::TooLarge { .. })) => Some("too_large"),
                        Err(ElementsError::Read(ReadError::Transport(e))) => Some(transport_kind(e)),
                    };
                    note(sent, at, Some(status.as_u16()), failed);
                    match body {
                        Err(ElementsError::Read(ReadError::TooLarge { limit })) => (
                            Outcome::Final,
                            CoolifyError::TooLarge {
                                endpoint: endpoint.to_string(),
                                limit: bounded::human(limit),
                            },
                        ),
                        Err(ElementsError::Read(ReadError::Transport(e))) => {
                            (Outcome::Transport, CoolifyError::Transport(describe(&e)))
                        }
                        Err(ElementsError::Malformed(e)) => {
                            return Err(CoolifyError::BadResponse(format!(
                                "{endpoint} returned {}: {e}",
                                status.as_u16()
                            )));
                        }
                        Ok(Ok(body)) => {
                            debug!(endpoint, status = status.as_u16(), "coolify call ok");
                            return Ok(Reply { status, body });
                        }
                        Ok(Err(body)) => {
                            let text = String::from_utf8_lossy(&body);
                            let err = CoolifyError::from_response(status.as_u16(), &text, retry_after);
                            let outcome = match status.as_u16() {
                                429 => {
                                    inner.budget.drain().await;
                                    Outcome::RateLimited { retry_after }
                                }
                                500..=599 => Outcome::ServerError,
                                _ => Outcome::Final,
                            };
                            (outcome, err)
                        }
                    }
                }
            };
            match inner.policy.decide(idem, outcome, failures, throttled) {
                Decision::GiveUp => return Err(err),
                Decision::Retry(wait) => {
                    warn!(endpoint, error = %err, wait_ms = wait.as_millis() as u64, "coolify call failed, retrying");
                    if matches!(outcome, Outcome::RateLimited { .. }) {
                        throttled += 1;
                    } else {
                        failures += 1;
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        endpoint: &'static str,
        path: &str,
        body: Option<&Value>,
        idem: Idempotency,
    ) -> Result<T, CoolifyError> {
        decode(endpoint, &self.send(method, endpoint, path, body, idem).await?)
    }

    async fn get<T: DeserializeOwned>(&self, endpoint: &'static str, path: &str) -> Result<T, CoolifyError> {
        self.json(Method::GET, endpoint, path, None, Idempotency::Safe).await
    }

    pub async fn health(&self) -> Result<(), CoolifyError> {
        let reply = self
            .send(Method::GET, "GET /health", "/api/health", None, Idempotency::Safe)
            .await?;
        let text = reply.text();
        if text.trim() == "OK" {
            Ok(())
        } else {
            Err(CoolifyError::BadResponse(format!(
                "health check answered {:?}",
                text.chars().take(80).collect::<String>()
            )))
        }
    }

    pub async fn version(&self) -> Result<String, CoolifyError> {
        let reply = self
            .send(Method::GET, "GET /version", "/api/v1/version", None, Idempotency::Safe)
            .await?;
        let v = reply.text().trim().trim_start_matches('v').to_string();
        if v.is_empty() || v.len() > 64 {
            return Err(CoolifyError::BadResponse("version endpoint returned no version".into()));
        }
        Ok(v)
    }

    pub async fn team(&self) -> Result<Team, CoolifyError> {
        self.get("GET /team", "/api/v1/team").await
    }

    pub async fn servers(&self) -> Result<Vec<Server>, CoolifyError> {
        self.get("GET /servers", "/api/v1/servers").await
    }

    pub async fn list_projects(&self) -> Result<Vec<Project>, CoolifyError> {
        self.get("GET /projects", "/api/v1/projects").await
    }

    pub async fn get_project(&self, uuid: &str) -> Result<ProjectDetail, CoolifyError> {
        self.get("GET /projects/{uuid}", &format!("/api/v1/projects/{}", seg(uuid)))
            .await
    }

    pub async fn find_projects_by_name(&self, name: &str) -> Result<Vec<Project>, CoolifyError> {
        Ok(self
            .list_projects()
            .await?
            .into_iter()
            .filter(|p| p.name == name)
            .collect())
    }

    /// Never retried after a 5xx or transport error: the project may exist; look it up with
    /// `find_projects_by_name` and adopt it.
    pub async fn create_project(&self, name: &str, description: Option<&str>) -> Result<String, CoolifyError> {
        let mut body = Map::new();
        body.insert("name".into(), Value::String(name.to_string()));
        if let Some(d) = description {
            body.insert("description".into(), Value::String(d.to_string()));
        }
        #[derive(serde::Deserialize)]
        struct Created {
            uuid: String,
        }
        let created: Created = self
            .json(
                Method::POST,
                "POST /projects",
                "/api/v1/projects",
                Some(&Value::Object(body)),
                Idempotency::NotRepeatable,
            )
            .await?;
        Ok(created.uuid)
    }

    pub async fn patch_project(&self, uuid: &str, patch: &ProjectPatch) -> Result<Project, CoolifyError> {
        let body = serde_json::to_value(patch).map_err(|e| CoolifyError::InvalidInput(e.to_string()))?;
        self.json(
            Method::PATCH,
            "PATCH /projects/{uuid}",
            &format!("/api/v1/projects/{}", seg(uuid)),
            Some(&body),
            Idempotency::Safe,
        )
        .await
    }

    /// 400 "has resources" becomes `HasResources` (services are deleted asynchronously: retry later).
    pub async fn delete_project(&self, uuid: &str) -> Result<(), CoolifyError> {
        self.send(
            Method::DELETE,
            "DELETE /projects/{uuid}",
            &format!("/api/v1/projects/{}", seg(uuid)),
            None,
            Idempotency::Safe,
        )
        .await
        .map(|_| ())
    }

    pub async fn list_environments(&self, project_uuid: &str) -> Result<Vec<Environment>, CoolifyError> {
        self.get(
            "GET /projects/{uuid}/environments",
            &format!("/api/v1/projects/{}/environments", seg(project_uuid)),
        )
        .await
    }

    pub async fn get_environment(&self, project_uuid: &str, env_name: &str) -> Result<EnvironmentDetail, CoolifyError> {
        self.get(
            "GET /projects/{uuid}/{environment}",
            &format!("/api/v1/projects/{}/{}", seg(project_uuid), seg(env_name)),
        )
        .await
    }

    /// Every service of the team, `GET /services`, decoded one service at a time as `T` and kept as what
    /// `keep` makes of it: the list (about 37 MB for 10,000 services) is never held whole.
    async fn scan_services<T: DeserializeOwned, U: Send>(
        &self,
        priority: Priority,
        keep: impl FnMut(T) -> Option<U> + Send,
    ) -> Result<Vec<U>, CoolifyError> {
        let mut reader = Elements {
            field: None,
            keep,
            element: PhantomData,
        };
        let reply = self
            .send_reading(
                priority,
                Method::GET,
                "GET /services",
                "/api/v1/services",
                None,
                Idempotency::Safe,
                &mut reader,
            )
            .await?;
        Ok(reply.body)
    }

    /// Every service in full (a large fleet's list is large in memory too: prefer the narrower reads).
    pub async fn list_services(&self) -> Result<Vec<Service>, CoolifyError> {
        self.scan_services(Priority::Normal, Some).await
    }

    /// The statuses of a project environment's services (`GET /projects/{uuid}/{environment}`), for status
    /// polling; urgent in the budget like the list. Read one service at a time: the answer has each
    /// service in full (a tenant of 50 runs to about 200 KB), and a round reads several at once.
    pub async fn get_environment_states(
        &self,
        project_uuid: &str,
        env_name: &str,
    ) -> Result<Vec<ServiceState>, CoolifyError> {
        let mut reader = Elements {
            field: Some("services"),
            keep: Some,
            element: PhantomData,
        };
        let reply = self
            .send_reading(
                Priority::Urgent,
                Method::GET,
                "GET /projects/{uuid}/{environment}",
                &format!("/api/v1/projects/{}/{}", seg(project_uuid), seg(env_name)),
                None,
                Idempotency::Safe,
                &mut reader,
            )
            .await?;
        Ok(reply.body)
    }

    /// `GET /services` parsed for status polling only, keeping the services `wanted` accepts: a round
    /// waits on a few hundred services at most, the list is the whole fleet. Urgent in the budget: these
    /// reads finish work already started (see [`Priority::Urgent`]).
    pub async fn list_service_states(
        &self,
        wanted: impl Fn(&str) -> bool + Send,
    ) -> Result<Vec<ServiceState>, CoolifyError> {
        self.scan_services(Priority::Urgent, move |s: ServiceState| wanted(&s.uuid).then_some(s))
            .await
    }

    /// `GET /services/{uuid}` parsed for status polling only; urgent in the budget like the list.
    pub async fn get_service_state(&self, uuid: &str) -> Result<ServiceState, CoolifyError> {
        let endpoint = "GET /services/{uuid}";
        let reply = self
            .send_as(
                Priority::Urgent,
                Method::GET,
                endpoint,
                &format!("/api/v1/services/{}", seg(uuid)),
                None,
                Idempotency::Safe,
            )
            .await?;
        decode(endpoint, &reply)
    }

    /// `GET /services` for the resync's drift check: each service's status and compose, one service at a
    /// time, kept as what `judge` makes of it (the composes of a fleet are most of the list). The pass is
    /// also kept as the fleet's latest (see [`Self::fleet`]).
    pub async fn list_service_looks<U: Send>(
        &self,
        mut judge: impl FnMut(ServiceLook) -> Option<U> + Send,
    ) -> Result<Vec<U>, CoolifyError> {
        let _under_way = self.inner.fleet.begin();
        let (taken, read_at) = (Instant::now(), chrono::Utc::now());
        let mut services = Vec::with_capacity(self.inner.fleet.room());
        let judged = self
            .scan_services(Priority::Normal, |service: BriefAndCompose| {
                let (brief, look) = service.split();
                services.push(brief);
                judge(look)
            })
            .await?;
        self.inner.fleet.keep(taken, read_at, services);
        Ok(judged)
    }

    /// The fleet's services from a pass younger than `max_age` other than pass `judged` (a reader's last),
    /// else from the pass under way once it ends, else from a new pass: the fleet-wide tasks then share one
    /// `GET /services` per poll interval.
    pub async fn fleet(
        &self,
        max_age: Duration,
        judged: Option<u64>,
        priority: Priority,
    ) -> Result<Arc<FleetList>, CoolifyError> {
        if let Some(list) = self.inner.fleet.fresh(max_age, judged) {
            return Ok(list);
        }
        // A pass under way (the drift check's, another reader's) serves once it ends.
        if self.inner.fleet.await_under_way(max_age).await
            && let Some(list) = self.inner.fleet.fresh(max_age, judged)
        {
            return Ok(list);
        }
        let _under_way = self.inner.fleet.begin();
        let (taken, read_at) = (Instant::now(), chrono::Utc::now());
        let mut services = Vec::with_capacity(self.inner.fleet.room());
        self.scan_services(priority, |brief: ServiceBrief| {
            services.push(brief);
            None::<()>
        })
        .await?;
        Ok(self.inner.fleet.keep(taken, read_at, services))
    }

    pub async fn get_service(&self, uuid: &str) -> Result<Service, CoolifyError> {
        self.get("GET /services/{uuid}", &format!("/api/v1/services/{}", seg(uuid)))
            .await
    }

    pub async fn find_services_by_name(&self, name: &str) -> Result<Vec<Service>, CoolifyError> {
        self.scan_services(Priority::Normal, |s: Service| (s.name == name).then_some(s))
            .await
    }

    fn create_body(req: &CreateService) -> Result<Value, CoolifyError> {
        if req.environment_name.is_none() && req.environment_uuid.is_none() {
            return Err(CoolifyError::InvalidInput(
                "service create needs environment_name or environment_uuid".into(),
            ));
        }
        let mut b = Map::new();
        let mut put = |k: &str, v: Value| {
            b.insert(k.to_string(), v);
        };
        put("project_uuid", json!(req.project_uuid));
        if let Some(v) = &req.environment_name {
            put("environment_name", json!(v));
        }
        if let Some(v) = &req.environment_uuid {
            put("environment_uuid", json!(v));
        }
        put("server_uuid", json!(req.server_uuid));
        if let Some(v) = &req.destination_uuid {
            put("destination_uuid", json!(v));
        }
        put("name", json!(req.name));
        if let Some(v) = &req.description {
            put("description", json!(v));
        }
        put("docker_compose_raw", json!(encode_compose(&req.compose_yaml)?));
        if !req.urls.is_empty() {
            put("urls", urls_json(&req.urls));
        }
        put("instant_deploy", json!(req.instant_deploy));
        if req.force_domain_override {
            put("force_domain_override", json!(true));
        }
        if !req.tags.is_empty() {
            put("tags", json!(req.tags));
        }
        Ok(Value::Object(b))
    }

    /// Never retried after a 5xx or transport error: the service may exist; look it up by name and adopt
    /// it.
    pub async fn create_service(&self, req: &CreateService) -> Result<CreatedService, CoolifyError> {
        let body = Self::create_body(req)?;
        self.json(
            Method::POST,
            "POST /services",
            "/api/v1/services",
            Some(&body),
            Idempotency::NotRepeatable,
        )
        .await
    }

    pub async fn patch_service(&self, uuid: &str, patch: &ServicePatch) -> Result<CreatedService, CoolifyError> {
        let mut b = Map::new();
        if let Some(v) = &patch.name {
            b.insert("name".into(), json!(v));
        }
        if let Some(v) = &patch.description {
            b.insert("description".into(), json!(v));
        }
        if let Some(v) = &patch.compose_yaml {
            b.insert("docker_compose_raw".into(), json!(encode_compose(v)?));
        }
        if let Some(v) = &patch.urls {
            b.insert("urls".into(), urls_json(v));
        }
        if let Some(v) = patch.instant_deploy {
            b.insert("instant_deploy".into(), json!(v));
        }
        if let Some(v) = patch.force_domain_override {
            b.insert("force_domain_override".into(), json!(v));
        }
        if let Some(v) = patch.connect_to_docker_network {
            b.insert("connect_to_docker_network".into(), json!(v));
        }
        if b.is_empty() {
            return Err(CoolifyError::InvalidInput("service patch is empty".into()));
        }
        self.json(
            Method::PATCH,
            "PATCH /services/{uuid}",
            &format!("/api/v1/services/{}", seg(uuid)),
            Some(&Value::Object(b)),
            Idempotency::Safe,
        )
        .await
    }

    /// Queues the deletion. A 404 means it is already gone, which is success.
    pub async fn delete_service(&self, uuid: &str) -> Result<(), CoolifyError> {
        match self
            .send(
                Method::DELETE,
                "DELETE /services/{uuid}",
                &format!("/api/v1/services/{}", seg(uuid)),
                None,
                Idempotency::Safe,
            )
            .await
        {
            Ok(_) | Err(CoolifyError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes and polls until the service reads 404 (Coolify deletes asynchronously).
    pub async fn delete_service_and_wait(&self, uuid: &str, timeout: Duration) -> Result<(), CoolifyError> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.delete_service(uuid).await?;
        let polls = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        let mut tries = 0;
        loop {
            // The deletion is a queued job: a read at once would only find the service still there.
            let now = tokio::time::Instant::now();
            tokio::time::sleep(polls.ceiling(tries).min(deadline.saturating_duration_since(now))).await;
            tries += 1;
            match self.get_service(uuid).await {
                Err(CoolifyError::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
                Ok(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CoolifyError::Timeout(format!(
                    "service {uuid} still present {} s after its deletion was queued",
                    timeout.as_secs()
                )));
            }
        }
    }

    async fn action(&self, uuid: &str, endpoint: &'static str, verb: &str, ok_if: &str) -> Result<(), CoolifyError> {
        let path = format!("/api/v1/services/{}/{verb}", seg(uuid));
        match self.send(Method::POST, endpoint, &path, None, Idempotency::Safe).await {
            Ok(_) => Ok(()),
            Err(CoolifyError::BadRequest { message }) if message.contains(ok_if) => {
                debug!(coolify_uuid = uuid, verb, "{message}");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// "Service is already running." counts as success.
    pub async fn start_service(&self, uuid: &str) -> Result<(), CoolifyError> {
        self.action(uuid, "POST /services/{uuid}/start", "start", "already running")
            .await
    }

    /// "Service is already stopped." counts as success.
    pub async fn stop_service(&self, uuid: &str) -> Result<(), CoolifyError> {
        self.action(uuid, "POST /services/{uuid}/stop", "stop", "already stopped")
            .await
    }

    pub async fn restart_service(&self, uuid: &str) -> Result<(), CoolifyError> {
        self.action(uuid, "POST /services/{uuid}/restart", "restart", "already running")
            .await
    }

    /// `POST /deploy?uuid=a,b,...`: one StartService per service named, in one call (no "already running"
    /// check: a running one is force-recreated, so only services known to be stopped belong here).
    /// Returns the uuids Coolify started; one it did not find is left out, none found at all is a 404.
    pub async fn deploy_services(&self, uuids: &[String]) -> Result<Vec<String>, CoolifyError> {
        if uuids.is_empty() {
            return Ok(Vec::new());
        }
        let list: Vec<String> = uuids.iter().map(|u| seg(u)).collect();
        let path = format!("/api/v1/deploy?uuid={}", list.join(","));
        let reply = self
            .send(Method::POST, "POST /deploy", &path, None, Idempotency::Safe)
            .await?;
        let started: Deployments = decode("POST /deploy", &reply)?;
        Ok(started
            .deployments
            .into_iter()
            .filter_map(|d| d.resource_uuid)
            .collect())
    }

    /// Starts a service known to be stopped (created stopped by this run), in one batch deploy with the
    /// other such starts asked for meanwhile (see [`DeployBatches`]); the budget is short when less than
    /// a burst's worth of tokens is left.
    pub async fn start_stopped_service(&self, uuid: &str) -> Result<(), CoolifyError> {
        let short = || self.inner.budget.remaining() < self.inner.budget.capacity() / 2.0;
        self.inner
            .deploys
            .start(uuid, short, |uuids| async move { self.deploy_services(&uuids).await })
            .await
    }

    pub async fn list_envs(&self, service_uuid: &str) -> Result<Vec<EnvVar>, CoolifyError> {
        self.get(
            "GET /services/{uuid}/envs",
            &format!("/api/v1/services/{}/envs", seg(service_uuid)),
        )
        .await
    }

    /// Upserts by key. Coolify applies items in order without a transaction, so on a validation
    /// error the earlier items are saved; repeating the whole call is safe.
    pub async fn bulk_upsert_envs(&self, service_uuid: &str, envs: &[EnvVarInput]) -> Result<(), CoolifyError> {
        if envs.is_empty() {
            return Ok(());
        }
        let body = json!({"data": envs.iter().map(EnvVarInput::to_json).collect::<Vec<_>>()});
        self.send(
            Method::PATCH,
            "PATCH /services/{uuid}/envs/bulk",
            &format!("/api/v1/services/{}/envs/bulk", seg(service_uuid)),
            Some(&body),
            Idempotency::Safe,
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_does_not_carry_the_shared_budget_in_its_future() {
        let settings = CoolifySettings::new(
            url::Url::parse("http://127.0.0.1:1/").unwrap(),
            SecretString::from("t".to_string()),
        );
        let client = CoolifyClient::new(&settings, Arc::new(Metrics::new())).unwrap();
        // With PostgreSQL's budget inline a call's future was 2.9 KB, and a job's future holds its
        // largest call's.
        let size = std::mem::size_of_val(&client.get_service("x"));
        assert!(size < 2048, "{size} bytes");
    }

    #[test]
    fn compose_is_checked_and_strictly_encoded() {
        let yaml = "services:\n  bot:\n    image: x\n";
        let enc = encode_compose(yaml).unwrap();
        assert!(!enc.contains('\n'));
        assert_eq!(STANDARD.decode(&enc).unwrap(), yaml.as_bytes());
        assert!(matches!(
            encode_compose("services: [unclosed"),
            Err(CoolifyError::InvalidInput(_))
        ));
        assert!(matches!(
            encode_compose("version: '3'\n"),
            Err(CoolifyError::InvalidInput(_))
        ));
    }

    #[test]
    fn compose_fingerprints_follow_meaning_not_spelling() {
        let sent = "# ours\nservices:\n  bot:\n    image: 'x:1'\n    environment:\n      A: \"1\"\n      B: 2\n";
        let redumped =
            "services:\n    bot:\n        environment:\n            B: 2\n            A: '1'\n        image: x:1\n";
        assert_eq!(compose_fingerprint(sent), compose_fingerprint(redumped));
        assert!(compose_fingerprint(sent).is_some());
        let changed = "services:\n  bot:\n    image: x:2\n    environment:\n      A: '1'\n      B: 2\n";
        assert_ne!(compose_fingerprint(sent), compose_fingerprint(changed));
        let typed = "services:\n  bot:\n    image: x:1\n    environment:\n      A: 1\n      B: 2\n";
        assert_ne!(
            compose_fingerprint(sent),
            compose_fingerprint(typed),
            "a string is not a number"
        );
        assert_eq!(compose_fingerprint("services: [unclosed"), None);
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("abc-1_2"), "abc-1_2");
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
    }
}
