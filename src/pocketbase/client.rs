//! REST client for PocketBase as a superuser.
//!
//! PocketBase answers a dead token as if the caller were a guest (an empty list, a 404 or a 403), so every
//! such answer is double-checked with `auth-refresh` before it is believed (reference §0.6).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::Mutex;
use tracing::Instrument;
use url::Url;

use super::batches::{self, Combiner, Waiting};
use super::error::PbError;
use super::records::{
    BOT_INSTANCES, BOT_TEMPLATES, BRIDGE_ERROR_MAX, BotInstance, BotTemplate, DEPLOY_LOGS, DeployLog,
    ERROR_MESSAGE_MAX, InstancePatch, LOG_MESSAGE_MAX, NewDeployLog, PENDING_REASON_MAX, TENANTS, Tenant, TenantPatch,
    WatchedInstance, WatchedListing, filter_quote, truncate_chars,
};
use super::token::CachedToken;
use super::write_gate::WriteGate;
use crate::bounded;
use crate::config::{PocketBaseAuth, PocketBaseSettings, Problem};
use crate::flow::FloodSign;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Page size of `list_all`; PocketBase caps `perPage` at 1000.
const LIST_ALL_PAGE: u32 = 500;
/// Largest answers read. A record with its expanded tenant and template stays well under a MiB (config is
/// capped at 64 KiB by the schema, a template's compose at 100 KB); a page of 500 records at the schema's
/// limits stays under 64 MiB; auth answers are a token and a record.
const RECORD_LIMIT: usize = 4 << 20;
const LIST_LIMIT: usize = 64 << 20;
const AUTH_LIMIT: usize = 256 << 10;
/// Of an error answer, only this much is read (it becomes part of a message).
const ERROR_LIMIT: usize = 64 << 10;
const MAX_PER_PAGE: u32 = 1000;

/// Whether a keyset listing double-checks an empty page that follows a full one with `auth-refresh`. An
/// empty first page is always checked. The token that read the full page was alive a moment earlier, so
/// only one revoked (or expired) between two pages makes a guest's empty page end the list early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyTail {
    /// Checked: for readers that take an absent record as deleted (the resync, the orphan scan).
    Confirm,
    /// Believed: for readers to whom a shortened list only delays judging the records left out (the
    /// health poller judges them at its next round).
    Trust,
}

/// Cheap to clone; clones share the HTTP pool and the token.
#[derive(Clone)]
pub struct PbClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    settings: PocketBaseSettings,
    /// Held across login/refresh so concurrent callers wait for one renewal instead of racing.
    token: Mutex<Option<CachedToken>>,
    /// The listing of the instances the health poller watches (see `records::WatchedListing`).
    watched: WatchedListing,
    /// One permit per record write in flight (`pocketbase.max_writes_in_flight`). PocketBase runs one
    /// write transaction at a time, and a batch runs its hooks inside it: a burst of write-backs waking
    /// together (a status round finds many services running) held up a person's write behind 30 of them
    /// (docs/BENCHMARKS.md, "Twenty-first session"). Waiting here instead keeps that queue in the bridge.
    /// In a flood the gate also spaces the writes (`write_gate`).
    writes: WriteGate,
    /// Batches queued behind the gate, sent together (`batches`).
    batches: Combiner<BatchRequest>,
}

impl fmt::Debug for PbClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match self.inner.settings.auth() {
            Ok(PocketBaseAuth::Password { email, .. }) => format!("password of {email}"),
            Ok(PocketBaseAuth::Token(_)) => "token".to_string(),
            Err(_) => "none".to_string(),
        };
        f.debug_struct("PbClient")
            .field("base_url", &self.inner.settings.url.as_str())
            .field("auth", &auth)
            .finish()
    }
}

/// A raw answer plus the token it was sent with (needed to double-check guest-looking answers).
struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    token: SecretString,
}

/// One request of a batch (see [`PbClient::batch`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BatchRequest {
    method: &'static str,
    url: String,
    body: serde_json::Value,
}

impl BatchRequest {
    /// Writes bridge-owned instance fields (over-long error messages cut to the schema's limit).
    pub fn patch_instance(id: &str, patch: &InstancePatch) -> Result<BatchRequest, PbError> {
        Ok(BatchRequest {
            method: "PATCH",
            url: format!("/api/collections/{BOT_INSTANCES}/records/{id}"),
            body: instance_body(patch)?,
        })
    }

    pub fn patch_tenant(id: &str, patch: &TenantPatch) -> Result<BatchRequest, PbError> {
        Ok(BatchRequest {
            method: "PATCH",
            url: format!("/api/collections/{TENANTS}/records/{id}"),
            body: tenant_body(patch)?,
        })
    }

    /// Creates a deploy_logs row with the given id, so that sending it again cannot make a second row.
    pub fn create_deploy_log(id: &str, row: &serde_json::Value) -> BatchRequest {
        let mut body = row.clone();
        if let Some(fields) = body.as_object_mut() {
            fields.insert("id".into(), json!(id));
        }
        BatchRequest {
            method: "POST",
            url: format!("/api/collections/{DEPLOY_LOGS}/records"),
            body,
        }
    }
}

#[derive(Deserialize)]
struct AuthAnswer {
    token: SecretString,
}

/// A list answer with each item left as its text, decoded one at a time into what the caller keeps.
#[derive(Deserialize)]
struct RawPage<'a> {
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
}

fn raw_page<'a>(body: &'a [u8], collection: &str) -> Result<RawPage<'a>, PbError> {
    serde_json::from_slice(body).map_err(|e| PbError::Decode(format!("{collection}: {e}")))
}

/// Whether a list answer has no items (without decoding any).
fn empty_list(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Items {
        items: Vec<IgnoredAny>,
    }
    serde_json::from_slice::<Items>(body).is_ok_and(|l| l.items.is_empty())
}

fn record_id(raw: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct Id {
        id: String,
    }
    serde_json::from_str::<Id>(raw.get()).ok().map(|r| r.id)
}

/// Every item of a list answer, each decoded as `T`.
fn decode_items<T: DeserializeOwned>(body: &[u8], collection: &str) -> Result<Vec<T>, PbError> {
    let page = raw_page(body, collection)?;
    page.items.into_iter().map(|raw| from_raw(raw, collection)).collect()
}

fn from_raw<T: DeserializeOwned>(raw: &RawValue, collection: &str) -> Result<T, PbError> {
    serde_json::from_str(raw.get()).map_err(|e| {
        let id = record_id(raw).unwrap_or_else(|| "?".into());
        PbError::Decode(format!("{collection} record {id}: {e}"))
    })
}

#[derive(Deserialize)]
struct CountAnswer {
    #[serde(rename = "totalItems")]
    total_items: u64,
}

impl PbClient {
    /// A client for `[pocketbase]`: its URL and credentials (checked here, used from the first call).
    pub fn new(settings: &PocketBaseSettings) -> Result<Self, PbError> {
        let base_url = &settings.url;
        if base_url.cannot_be_a_base() || !matches!(base_url.scheme(), "http" | "https") {
            return Err(PbError::Config(format!(
                "PocketBase URL {base_url} is not an http(s) base URL"
            )));
        }
        settings.auth().map_err(config_problem)?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| PbError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(PbClient {
            inner: Arc::new(Inner {
                http,
                settings: settings.clone(),
                token: Mutex::new(None),
                watched: Default::default(),
                writes: WriteGate::new(settings.max_writes_in_flight, FloodSign::default()),
                batches: Combiner::new(settings.max_writes_in_flight),
            }),
        })
    }

    pub fn base_url(&self) -> &Url {
        &self.inner.settings.url
    }

    /// The sign that spaces this client's writes while PocketBase takes a flood, for the realtime reader.
    pub fn flood_sign(&self) -> FloodSign {
        self.inner.writes.flood_sign()
    }

    fn auth(&self) -> Result<PocketBaseAuth<'_>, PbError> {
        self.inner.settings.auth().map_err(config_problem)
    }

    /// Logs in (password) or checks the static token via `auth-refresh`. Called at start-up so a wrong
    /// credential stops the bridge with a clear message.
    pub async fn authenticate(&self) -> Result<(), PbError> {
        let mut guard = self.inner.token.lock().await;
        *guard = Some(self.acquire().await?);
        Ok(())
    }

    /// `GET /api/health` (no token): whether PocketBase answers at all. A cached token alone proves
    /// nothing about reachability.
    pub async fn health(&self) -> Result<(), PbError> {
        let url = self.url(&["api", "health"], &[])?;
        let resp = self.inner.http.get(url.clone()).send().await?;
        let status = resp.status();
        let bytes = read_body(resp, AUTH_LIMIT, &Method::GET, &url).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(PbError::from_response(status.as_u16(), &bytes))
        }
    }

    /// A superuser request to any API path (`segments` under the base URL), for checks such as
    /// `cf-bridge doctor`: the status and the JSON answer (`Null` when the body is not JSON).
    pub async fn api(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), PbError> {
        let url = self.url(segments, &[])?;
        let reply = self.send(method, &url, body, RECORD_LIMIT, |_| false).await?;
        let value = serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null);
        Ok((reply.status.as_u16(), value))
    }

    /// A valid superuser token; refreshed once half its lifetime has passed, re-acquired if that fails.
    /// The rare calls to PocketBase are boxed, so that every request's future does not carry them.
    pub async fn token(&self) -> Result<SecretString, PbError> {
        let now = now();
        let mut guard = self.inner.token.lock().await;
        let Some(current) = guard.clone() else {
            let fresh = Box::pin(self.acquire()).await?;
            let token = fresh.token.clone();
            *guard = Some(fresh);
            return Ok(token);
        };
        if !current.needs_refresh(now) {
            return Ok(current.token);
        }
        let renewed = match Box::pin(self.refresh(&current.token)).await {
            Ok(t) => t,
            Err(PbError::Auth { message }) => match self.auth()? {
                PocketBaseAuth::Password { .. } => {
                    tracing::info!(reason = %message, "PocketBase token refresh refused; logging in again");
                    Box::pin(self.login()).await?
                }
                PocketBaseAuth::Token(_) => {
                    *guard = None;
                    return Err(PbError::Auth { message });
                }
            },
            // Network trouble: keep using the current token while it lasts.
            Err(e) if !current.expired(now) => {
                tracing::warn!(error = %e, "PocketBase token refresh failed; using the current token");
                return Ok(current.token);
            }
            Err(e) => return Err(e),
        };
        let token = renewed.token.clone();
        *guard = Some(renewed);
        Ok(token)
    }

    /// One record; `None` when it does not exist (after making sure the token is alive).
    pub async fn get<T: DeserializeOwned>(&self, collection: &str, id: &str) -> Result<Option<T>, PbError> {
        let url = self.url(&["api", "collections", collection, "records", id], &[])?;
        let reply = self.send(Method::GET, &url, None, RECORD_LIMIT, |_| false).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        decode(reply, collection).map(Some)
    }

    /// One keyset page, sorted by id: the records with `id > after_id` that match `filter`.
    pub async fn list_page<T: DeserializeOwned>(
        &self,
        collection: &str,
        after_id: Option<&str>,
        filter: Option<&str>,
        per_page: u32,
    ) -> Result<Vec<T>, PbError> {
        let body = self
            .list_page_body(collection, after_id, filter, per_page, true)
            .await?;
        decode_items(&body, collection)
    }

    /// Every record matching `filter`, by keyset pagination (stable while records change).
    pub async fn list_all<T: DeserializeOwned>(
        &self,
        collection: &str,
        filter: Option<&str>,
    ) -> Result<Vec<T>, PbError> {
        self.scan_keyset(collection, filter, EmptyTail::Confirm, Some).await
    }

    /// Every record matching `filter` in id order, each decoded as `T` and kept as what `keep` makes of
    /// it, a page at a time: a fleet is never held whole (a resync that kept 10,000 whole instances
    /// until it had them all peaked at about 25 MB of heap, docs/BENCHMARKS.md, eleventh session).
    ///
    /// Whole records, never `fields=`: PocketBase picks fields by encoding the answer, decoding it and
    /// encoding it again, which cost it 1.6x the CPU of the whole records (10,000 instances: 1.18-1.26 s
    /// against 0.72-0.89 s, docs/BENCHMARKS.md); it is the shared resource, the bridge's parse is not.
    pub async fn scan_keyset<T: DeserializeOwned, U>(
        &self,
        collection: &str,
        filter: Option<&str>,
        tail: EmptyTail,
        mut keep: impl FnMut(T) -> Option<U>,
    ) -> Result<Vec<U>, PbError> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let confirm_empty = after.is_none() || tail == EmptyTail::Confirm;
            let body = self
                .list_page_body(collection, after.as_deref(), filter, LIST_ALL_PAGE, confirm_empty)
                .await?;
            let page = raw_page(&body, collection)?;
            let full = page.items.len() == LIST_ALL_PAGE as usize;
            if let Some(last) = page.items.last() {
                let id = record_id(last)
                    .ok_or_else(|| PbError::Decode(format!("a {collection} record in a list has no id")))?;
                if after.as_deref().is_some_and(|prev| id.as_str() <= prev) {
                    return Err(PbError::Decode(format!("{collection} list is not sorted by id")));
                }
                after = Some(id);
            }
            for raw in page.items {
                out.extend(keep(from_raw(raw, collection)?));
            }
            if !full {
                // Some listings are kept until the next (the health poller's): without their spare room.
                out.shrink_to_fit();
                return Ok(out);
            }
        }
    }

    pub async fn patch<T: DeserializeOwned>(
        &self,
        collection: &str,
        id: &str,
        body: &serde_json::Value,
    ) -> Result<T, PbError> {
        let url = self.url(&["api", "collections", collection, "records", id], &[])?;
        let reply = self
            .send(Method::PATCH, &url, Some(body), RECORD_LIMIT, |_| false)
            .await?;
        decode(reply, collection)
    }

    pub async fn create<T: DeserializeOwned>(&self, collection: &str, body: &serde_json::Value) -> Result<T, PbError> {
        let url = self.url(&["api", "collections", collection, "records"], &[])?;
        let reply = self
            .send(Method::POST, &url, Some(body), RECORD_LIMIT, |_| false)
            .await?;
        decode(reply, collection)
    }

    /// Deletes a record; a missing one is `PbError::NotFound`.
    pub async fn delete(&self, collection: &str, id: &str) -> Result<(), PbError> {
        let url = self.url(&["api", "collections", collection, "records", id], &[])?;
        let reply = self.send(Method::DELETE, &url, None, RECORD_LIMIT, |_| false).await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(PbError::from_response(reply.status.as_u16(), &reply.body))
        }
    }

    pub async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>, PbError> {
        self.get(TENANTS, id).await
    }

    pub async fn get_instance(&self, id: &str) -> Result<Option<BotInstance>, PbError> {
        self.get(BOT_INSTANCES, id).await
    }

    /// The instance with its tenant and template in one request (`expand`): a reconcile needs all three,
    /// and every request counts on a PocketBase that is also serving the users. A relation whose record
    /// is gone comes back as `None`.
    pub async fn get_instance_with_relations(
        &self,
        id: &str,
    ) -> Result<Option<(BotInstance, Option<Tenant>, Option<BotTemplate>)>, PbError> {
        let url = self.url(
            &["api", "collections", BOT_INSTANCES, "records", id],
            &[("expand", "tenant,template")],
        )?;
        let reply = self.send(Method::GET, &url, None, RECORD_LIMIT, |_| false).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let mut record: serde_json::Value = decode(reply, BOT_INSTANCES)?;
        let mut expand = record
            .as_object_mut()
            .and_then(|r| r.remove("expand"))
            .unwrap_or(serde_json::Value::Null);
        let mut related = |field: &str| expand.as_object_mut().and_then(|e| e.remove(field));
        let tenant = related("tenant").map(|t| from_value(t, TENANTS)).transpose()?;
        let template = related("template").map(|t| from_value(t, BOT_TEMPLATES)).transpose()?;
        Ok(Some((from_value(record, BOT_INSTANCES)?, tenant, template)))
    }

    pub async fn find_template_by_name(&self, name: &str) -> Result<Option<BotTemplate>, PbError> {
        let filter = format!("name = {}", filter_quote(name));
        let mut found: Vec<BotTemplate> = self.list_page(BOT_TEMPLATES, None, Some(&filter), 1).await?;
        Ok(found.pop())
    }

    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, PbError> {
        self.list_all(TENANTS, None).await
    }

    pub async fn list_templates(&self) -> Result<Vec<BotTemplate>, PbError> {
        self.list_all(BOT_TEMPLATES, None).await
    }

    pub async fn list_instances(&self, filter: Option<&str>) -> Result<Vec<BotInstance>, PbError> {
        self.list_all(BOT_INSTANCES, filter).await
    }

    /// Every instance matching `filter`, with an empty tail page checked or believed (see [`EmptyTail`]).
    /// The instances matching `filter`, each decoded as `T` (a type naming only the fields it keeps).
    pub async fn list_instances_with<T: DeserializeOwned>(
        &self,
        filter: Option<&str>,
        tail: EmptyTail,
    ) -> Result<Vec<T>, PbError> {
        self.scan_keyset(BOT_INSTANCES, filter, tail, Some).await
    }

    /// Writes bridge-owned instance fields; over-long error messages are cut to the schema's limit.
    pub async fn patch_instance(&self, id: &str, patch: &InstancePatch) -> Result<BotInstance, PbError> {
        self.patch(BOT_INSTANCES, id, &instance_body(patch)?).await
    }

    pub async fn patch_tenant(&self, id: &str, patch: &TenantPatch) -> Result<Tenant, PbError> {
        self.patch(TENANTS, id, &tenant_body(patch)?).await
    }

    pub async fn create_deploy_log(&self, log: &NewDeployLog) -> Result<DeployLog, PbError> {
        let mut log = log.clone();
        log.message = truncate_chars(&log.message, LOG_MESSAGE_MAX);
        self.create(DEPLOY_LOGS, &to_body(&log)?).await
    }

    /// Sends `requests` as one `POST /api/batch`: PocketBase carries them out in one transaction, all or
    /// none. A failed request rolls the whole batch back and comes back as [`PbError::Batch`]. Answers
    /// each request's answer body (the record it wrote), in request order.
    ///
    /// Behind a write in flight, the batch waits and may go out in one request with others (`batches`);
    /// what it is answered is the same.
    pub async fn batch(&self, requests: &[BatchRequest]) -> Result<Vec<serde_json::Value>, PbError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let mut waiter = self.inner.batches.wait(requests.to_vec());
        loop {
            let turn = tokio::select! {
                biased;
                answer = waiter.answer() => return answer,
                turn = self.inner.batches.turn() => turn?,
            };
            let alone = self.inner.writes.flood_sign().up();
            let Some(group) = self.inner.batches.take(waiter.id(), alone) else {
                drop(turn);
                return waiter.answer().await;
            };
            // Sent on its own task: the other callers' batches in it must not go with this caller if it
            // gives up waiting. The caller's span goes with it, so its trace shows the write.
            let client = self.clone();
            tokio::spawn(
                async move {
                    client.send_group(group).await;
                    drop(turn);
                }
                .instrument(tracing::Span::current()),
            );
        }
    }

    /// Sends the batches of `group` as one request, and again without one whose request failed.
    async fn send_group(&self, mut group: Vec<Waiting<BatchRequest>>) {
        while !group.is_empty() {
            let requests: Vec<&BatchRequest> = group.iter().flat_map(|w| w.requests.iter()).collect();
            let result = self.send_batch(&requests).await;
            group = batches::share(group, result);
        }
    }

    async fn send_batch(&self, requests: &[&BatchRequest]) -> Result<Vec<serde_json::Value>, PbError> {
        let url = self.url(&["api", "batch"], &[])?;
        let body = json!({ "requests": requests });
        // A dead token makes every request a guest's, which fails as a 401, 403 or 404 inside the batch.
        // The answer carries every written record: as large as a list page at most.
        let reply = self
            .send(Method::POST, &url, Some(&body), LIST_LIMIT, |r| {
                r.status == StatusCode::BAD_REQUEST
                    && matches!(
                        PbError::from_batch_response(400, &r.body),
                        PbError::Batch { ref error, .. }
                            if matches!(**error, PbError::Auth { .. } | PbError::Forbidden { .. } | PbError::NotFound)
                    )
            })
            .await?;
        if reply.status.is_success() {
            Ok(batch_answers(&reply.body))
        } else {
            Err(PbError::from_batch_response(reply.status.as_u16(), &reply.body))
        }
    }

    /// How many instances of `tenant_id` come before `instance` in creation order (ties broken by id):
    /// one counting request, however many instances the tenant has.
    pub async fn count_instances_before(&self, tenant_id: &str, instance: &BotInstance) -> Result<u64, PbError> {
        let created = instance
            .created
            .as_ref()
            .map(super::records::format_pb_date)
            .unwrap_or_default();
        let filter = format!(
            "tenant = {t} && (created < {c} || (created = {c} && id < {i}))",
            t = filter_quote(tenant_id),
            c = filter_quote(&created),
            i = filter_quote(&instance.id),
        );
        let query = [
            ("page", "1"),
            ("perPage", "1"),
            ("fields", "id"),
            ("filter", filter.as_str()),
        ];
        let url = self.url(&["api", "collections", BOT_INSTANCES, "records"], &query)?;
        let reply = self
            .send(Method::GET, &url, None, RECORD_LIMIT, |r| {
                r.status.is_success() && empty_list(&r.body)
            })
            .await?;
        let total: CountAnswer = decode(reply, BOT_INSTANCES)?;
        Ok(total.total_items)
    }

    /// The newest `limit` deploy log rows of a record, newest first.
    pub async fn recent_deploy_logs(&self, record_id: &str, limit: u32) -> Result<Vec<DeployLog>, PbError> {
        let per_page = limit.clamp(1, MAX_PER_PAGE).to_string();
        let filter = format!("record_id = {}", filter_quote(record_id));
        let query = [
            ("page", "1"),
            ("perPage", per_page.as_str()),
            ("sort", "-created,-id"),
            ("skipTotal", "1"),
            ("filter", filter.as_str()),
        ];
        let url = self.url(&["api", "collections", DEPLOY_LOGS, "records"], &query)?;
        let reply = self
            .send(Method::GET, &url, None, LIST_LIMIT, |r| {
                r.status.is_success() && empty_list(&r.body)
            })
            .await?;
        decode_items(&success_body(reply)?, DEPLOY_LOGS)
    }

    async fn list_page_body(
        &self,
        collection: &str,
        after_id: Option<&str>,
        filter: Option<&str>,
        per_page: u32,
        confirm_empty: bool,
    ) -> Result<Vec<u8>, PbError> {
        let per_page = per_page.clamp(1, MAX_PER_PAGE).to_string();
        let filter = match (after_id, filter) {
            (Some(after), Some(f)) => Some(format!("id > {} && ({f})", filter_quote(after))),
            (Some(after), None) => Some(format!("id > {}", filter_quote(after))),
            (None, Some(f)) => Some(f.to_string()),
            (None, None) => None,
        };
        let mut query = vec![
            ("page", "1"),
            ("perPage", per_page.as_str()),
            ("sort", "id"),
            ("skipTotal", "1"),
        ];
        if let Some(f) = &filter {
            query.push(("filter", f.as_str()));
        }
        let url = self.url(&["api", "collections", collection, "records"], &query)?;
        // An empty page is also what a guest sees, so it must be confirmed with a live token.
        let reply = self
            .send(Method::GET, &url, None, LIST_LIMIT, |r| {
                confirm_empty && r.status.is_success() && empty_list(&r.body)
            })
            .await?;
        success_body(reply)
    }

    /// Sends a request with the superuser token. Answers a live superuser token would not get (401, 403,
    /// 404, or whatever `suspicious` flags) are double-checked: a dead token becomes `PbError::Auth`; with
    /// password auth the request is retried once after logging in again.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<&serde_json::Value>,
        limit: usize,
        suspicious: impl Fn(&Reply) -> bool,
    ) -> Result<Reply, PbError> {
        // A span of the job's trace; a write is a write-back (or a deploy_logs row).
        let span = if method == Method::GET {
            tracing::info_span!("pocketbase.read", path = url.path())
        } else {
            tracing::info_span!("pocketbase.write", method = %method, path = url.path())
        };
        // Boxed, as Coolify calls are: a request's state lives only while it runs.
        Box::pin(self.send_unspanned(method, url, body, limit, suspicious))
            .instrument(span)
            .await
    }

    async fn send_unspanned(
        &self,
        method: Method,
        url: &Url,
        body: Option<&serde_json::Value>,
        limit: usize,
        suspicious: impl Fn(&Reply) -> bool,
    ) -> Result<Reply, PbError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let token = self.token().await?;
            let mut req = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .header(reqwest::header::AUTHORIZATION, token.expose_secret());
            if let Some(b) = body {
                req = req.json(b);
            }
            // Held by this call for the exchange only (in a flood the gate keeps it a while longer without the
            // call): a login or refresh after it must not wait for a pass.
            let pass = if method == Method::GET {
                None
            } else {
                // Never closed: an error here would be a bug, reported as the write not sent.
                let entered = self.inner.writes.enter().await;
                Some(entered.ok_or_else(|| PbError::Transport("the bridge's PocketBase write gate is closed".into()))?)
            };
            let resp = req.send().await?;
            let status = resp.status();
            let reply = Reply {
                status,
                body: read_body(resp, limit, &method, url).await?,
                token,
            };
            if let Some(pass) = pass {
                self.inner.writes.leave(pass);
            }
            let guest_like = matches!(
                status,
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
            ) || suspicious(&reply);
            if !guest_like || Box::pin(self.token_accepted(&reply.token)).await? {
                return Ok(reply);
            }
            let can_relogin = matches!(self.auth()?, PocketBaseAuth::Password { .. });
            if !can_relogin || attempt >= 2 {
                return Err(PbError::Auth {
                    message: format!(
                        "PocketBase no longer accepts the superuser token (answered {} to {} {})",
                        status.as_u16(),
                        method,
                        url.path()
                    ),
                });
            }
            tracing::warn!(
                path = url.path(),
                "PocketBase rejected the superuser token; logging in again"
            );
        }
    }

    /// Checks `used` with `auth-refresh`. A live token is replaced by the refreshed one; a dead one is
    /// dropped from the cache so the next `token()` acquires a new one.
    async fn token_accepted(&self, used: &SecretString) -> Result<bool, PbError> {
        let mut guard = self.inner.token.lock().await;
        match self.refresh(used).await {
            Ok(renewed) => {
                if guard.as_ref().is_some_and(|c| c.is(used)) {
                    *guard = Some(renewed);
                }
                Ok(true)
            }
            Err(PbError::Auth { .. }) => {
                if guard.as_ref().is_some_and(|c| c.is(used)) {
                    *guard = None;
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    async fn acquire(&self) -> Result<CachedToken, PbError> {
        match self.auth()? {
            PocketBaseAuth::Password { .. } => self.login().await,
            PocketBaseAuth::Token(token) => {
                let cached = CachedToken::new(token.clone(), now())?;
                if cached.expired(now()) {
                    return Err(PbError::Auth {
                        message: "the configured PocketBase token has expired".into(),
                    });
                }
                self.refresh(token).await
            }
        }
    }

    async fn login(&self) -> Result<CachedToken, PbError> {
        let PocketBaseAuth::Password { email, password } = self.auth()? else {
            return Err(PbError::Auth {
                message: "no superuser password configured to log in with".into(),
            });
        };
        let url = self.url(&["api", "collections", "_superusers", "auth-with-password"], &[])?;
        let body = json!({ "identity": email, "password": password.expose_secret() });
        let resp = self.inner.http.post(url.clone()).json(&body).send().await?;
        let status = resp.status();
        let bytes = read_body(resp, AUTH_LIMIT, &Method::POST, &url).await?;
        if matches!(status.as_u16(), 400 | 401 | 403) {
            return Err(PbError::Auth {
                message: format!("superuser login as {email} refused (wrong email or password?)"),
            });
        }
        let answer: AuthAnswer = decode_bytes(status, &bytes, "superuser login")?;
        tracing::debug!(email = %email, "logged in to PocketBase");
        CachedToken::new(answer.token, now())
    }

    /// `auth-refresh`: a new token for a refreshable one, the same token for a static one.
    async fn refresh(&self, token: &SecretString) -> Result<CachedToken, PbError> {
        let url = self.url(&["api", "collections", "_superusers", "auth-refresh"], &[])?;
        let resp = self
            .inner
            .http
            .post(url.clone())
            .header(reqwest::header::AUTHORIZATION, token.expose_secret())
            .send()
            .await?;
        let status = resp.status();
        let bytes = read_body(resp, AUTH_LIMIT, &Method::POST, &url).await?;
        if matches!(status.as_u16(), 401 | 403 | 404) {
            return Err(PbError::Auth {
                message: "PocketBase rejected the superuser token (invalid, expired, revoked, or not a superuser's)"
                    .into(),
            });
        }
        let answer: AuthAnswer = decode_bytes(status, &bytes, "token refresh")?;
        CachedToken::new(answer.token, now())
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Result<Url, PbError> {
        let mut url = self.inner.settings.url.clone();
        url.path_segments_mut()
            .map_err(|_| PbError::Config(format!("PocketBase URL {} cannot hold a path", self.inner.settings.url)))?
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }
}

fn config_problem(p: Problem) -> PbError {
    PbError::Config(format!("{}: {}", p.key, p.reason))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Reads an answer within `limit` (a success) or its first bytes (an error, which only feeds a message).
async fn read_body(resp: reqwest::Response, limit: usize, method: &Method, url: &Url) -> Result<Vec<u8>, PbError> {
    if !resp.status().is_success() {
        return Ok(bounded::read_prefix(resp, ERROR_LIMIT).await?);
    }
    bounded::read(resp, limit).await.map_err(|e| match e {
        bounded::ReadError::TooLarge { limit } => PbError::TooLarge {
            endpoint: format!("{method} {}", url.path()),
            limit: bounded::human(limit),
        },
        bounded::ReadError::Transport(e) => e.into(),
    })
}

/// An instance patch's body, error message cut to the schema's limit.
fn instance_body(patch: &InstancePatch) -> Result<serde_json::Value, PbError> {
    let mut patch = patch.clone();
    if let Some(msg) = &patch.error_message {
        patch.error_message = Some(truncate_chars(msg, ERROR_MESSAGE_MAX));
    }
    if let Some(reason) = &patch.pending_reason {
        patch.pending_reason = Some(truncate_chars(reason, PENDING_REASON_MAX));
    }
    to_body(&patch)
}

fn tenant_body(patch: &TenantPatch) -> Result<serde_json::Value, PbError> {
    let mut patch = patch.clone();
    if let Some(msg) = &patch.bridge_error {
        patch.bridge_error = Some(truncate_chars(msg, BRIDGE_ERROR_MAX));
    }
    to_body(&patch)
}

fn to_body<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, PbError> {
    serde_json::to_value(v).map_err(|e| PbError::Decode(format!("cannot encode request body: {e}")))
}

fn decode<T: DeserializeOwned>(reply: Reply, what: &str) -> Result<T, PbError> {
    decode_bytes(reply.status, &reply.body, what)
}

fn decode_bytes<T: DeserializeOwned>(status: StatusCode, body: &[u8], what: &str) -> Result<T, PbError> {
    if !status.is_success() {
        return Err(PbError::from_response(status.as_u16(), body));
    }
    serde_json::from_slice(body).map_err(|e| PbError::Decode(format!("{what}: {e}")))
}

/// The body of a successful answer; any other is its error.
fn success_body(reply: Reply) -> Result<Vec<u8>, PbError> {
    if !reply.status.is_success() {
        return Err(PbError::from_response(reply.status.as_u16(), &reply.body));
    }
    Ok(reply.body)
}

/// The answer body of each request of a successful batch (`[{"status":200,"body":{record}}, ...]`).
fn batch_answers(body: &[u8]) -> Vec<serde_json::Value> {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(default)]
        body: serde_json::Value,
    }
    serde_json::from_slice::<Vec<Answer>>(body)
        .unwrap_or_default()
        .into_iter()
        .map(|a| a.body)
        .collect()
}

fn from_value<T: DeserializeOwned>(v: serde_json::Value, collection: &str) -> Result<T, PbError> {
    let id = v.get("id").and_then(|i| i.as_str()).unwrap_or("?").to_string();
    serde_json::from_value(v).map_err(|e| PbError::Decode(format!("{collection} record {id}: {e}")))
}

impl PbClient {
    /// Keeps a listing of the watched instances, current at count `current_at` (see
    /// `records::WatchedListing`).
    pub fn keep_watched(&self, current_at: u64, instances: Vec<WatchedInstance>) {
        self.inner.watched.keep(current_at, instances);
    }

    pub(super) fn clear_watched(&self) {
        self.inner.watched.clear();
    }

    /// The listing of the instances the health poller watches if it is current at `changes`: the poller's
    /// own, or the last resync pass's when no instance event came between its start and `changes` but the
    /// pass's own end (see `records::WatchedListing`).
    pub fn take_watched(&self, changes: u64) -> Option<Vec<WatchedInstance>> {
        self.inner.watched.take(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_answer_gives_each_written_record() {
        let answer = br#"[{"status":200,"body":{"id":"t1","updated":"2026-12-02 10:00:00.123Z"}},{"status":204}]"#;
        assert_eq!(
            batch_answers(answer),
            vec![
                json!({"id": "t1", "updated": "2026-12-02 10:00:00.123Z"}),
                serde_json::Value::Null
            ]
        );
        assert!(batch_answers(b"not json").is_empty());
    }

    #[test]
    fn a_list_page_is_decoded_one_item_at_a_time_into_what_is_kept() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct Slug {
            slug: String,
        }
        let body = br#"{"page":1,"perPage":500,"items":[{"id":"a1","slug":"acme","config":{"big":[1,2,3]}},
            {"id":"b2","name":"no slug"}]}"#;
        let page = raw_page(body, "tenants").unwrap();
        assert_eq!(page.items.len(), 2);
        assert_eq!(record_id(page.items[1]).as_deref(), Some("b2"));
        assert_eq!(
            from_raw::<Slug>(page.items[0], "tenants").unwrap(),
            Slug { slug: "acme".into() }
        );
        let err = from_raw::<Slug>(page.items[1], "tenants").unwrap_err().to_string();
        assert!(err.contains("tenants record b2") && err.contains("slug"), "{err}");
        assert!(raw_page(b"{\"items\": 3}", "tenants").is_err());

        assert!(empty_list(br#"{"page":1,"items":[]}"#));
        assert!(!empty_list(body));
        assert!(
            !empty_list(b"not json"),
            "an answer that is no list is not an empty one"
        );
    }

    #[test]
    fn a_request_does_not_carry_a_login_in_its_future() {
        let c = PbClient::new(&PocketBaseSettings::with_token(
            Url::parse("http://127.0.0.1:8090/").unwrap(),
            SecretString::from("t".to_string()),
        ))
        .unwrap();
        // With the login and refresh inline, `token` was 1.2 KB, part of every request's future.
        let size = std::mem::size_of_val(&c.token());
        assert!(size < 512, "{size} bytes");
    }

    #[test]
    fn urls_keep_a_base_path_and_encode_segments() {
        let c = PbClient::new(&PocketBaseSettings::with_token(
            Url::parse("http://127.0.0.1:8090/pb/").unwrap(),
            SecretString::from("t".to_string()),
        ))
        .unwrap();
        let u = c
            .url(
                &["api", "collections", "tenants", "records", "a/b"],
                &[("filter", "id > 'x' && y")],
            )
            .unwrap();
        assert_eq!(u.path(), "/pb/api/collections/tenants/records/a%2Fb");
        assert_eq!(u.query(), Some("filter=id+%3E+%27x%27+%26%26+y"));
    }

    #[test]
    fn debug_hides_credentials() {
        let c = PbClient::new(&PocketBaseSettings::with_password(
            Url::parse("http://127.0.0.1:8090").unwrap(),
            "bridge@example.com",
            SecretString::from("hunter2".to_string()),
        ))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            shown.contains("bridge@example.com") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(
            PbClient::new(&PocketBaseSettings::with_token(
                Url::parse("mailto:x@y").unwrap(),
                SecretString::from("t".to_string())
            ))
            .is_err()
        );
    }
}
