//! Admin API under `/admin`: journal events, jobs, replay, resync, instance view and secrets.
//! Every route requires the admin credential ([`Admin`]); errors are RFC 9457 problem documents
//! (`problem`).

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, delete, get, post, put, web};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use super::auth::Admin;
use super::operator::{
    AdminState, ApiError, RecordId, ReplayRequest, journal_down, parse_record_ref, parse_time_ms, pocketbase_down,
    replay, secret_store_down,
};
use super::problem;
use crate::events::{Collection, Replay, Source, valid_record_id};
use crate::journal::{EventFilter, EventRow, EventStatus, JobState};
use crate::reconcile::error::ReconcileError;
use crate::reconcile::instance::life_of;
use crate::reconcile::judgement::LiveHealth;
use crate::reconcile::plan::Spec;
use crate::reconcile::router_keys;
use crate::secrets;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    status: Option<String>,
    source: Option<String>,
    collection: Option<String>,
    record: Option<String>,
    since: Option<String>,
    cursor: Option<i64>,
    limit: Option<usize>,
}

#[get("/admin/events")]
async fn list_events(
    _: Admin,
    state: web::Data<AdminState>,
    q: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let mut filter = EventFilter::default();
    if let Some(s) = &q.status {
        filter.status = Some(
            s.parse::<EventStatus>()
                .map_err(|e| ApiError::bad_request(format!("unknown status {e}")))?,
        );
    }
    if let Some(s) = &q.source {
        filter.source = Some(
            s.parse::<Source>()
                .map_err(|e| ApiError::bad_request(format!("unknown source {e}")))?,
        );
    }
    if let Some(c) = &q.collection {
        filter.collection = Some(
            c.parse::<Collection>()
                .map_err(|e| ApiError::bad_request(format!("unknown collection {e}")))?,
        );
    }
    if let Some(r) = &q.record {
        if r.contains('/') {
            let (c, id) = parse_record_ref(r)?;
            filter.collection = Some(c);
            filter.record_id = Some(id);
        } else if valid_record_id(r) {
            filter.record_id = Some(r.clone());
        } else {
            return Err(ApiError::bad_request(format!("record {r:?} is not a record id")));
        }
    }
    if let Some(s) = &q.since {
        filter.since_ms = Some(parse_time_ms(s)?);
    }
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 500 {
        return Err(ApiError::bad_request("limit must be between 1 and 500"));
    }
    let (events, next) = state
        .ctx
        .journal
        .list_events(filter, q.cursor, limit)
        .await
        .map_err(journal_down)?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .streaming(events_page(events, next)))
}

/// Bytes of the page serialized before they are handed to actix.
const PAGE_CHUNK: usize = 16 * 1024;

/// `{"events": [...], "next_cursor": N}`, serialized a chunk at a time as the client takes it. Whole, a
/// page of 500 realtime events (about 560 KB) was held three times: in its buffer grown by doubling and in
/// actix's write buffer, which copies a body it is given whole (docs/BENCHMARKS.md, "Thirty-seventh
/// session").
fn events_page(
    events: Vec<EventRow>,
    next_cursor: Option<i64>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, serde_json::Error>> {
    let mut rows = events.into_iter().peekable();
    let mut head = Some(b"{\"events\":[".to_vec());
    futures_util::stream::iter(std::iter::from_fn(move || {
        let mut chunk = head.take()?;
        while chunk.len() < PAGE_CHUNK {
            let Some(row) = rows.next() else {
                chunk.extend_from_slice(b"],\"next_cursor\":");
                if let Err(e) = serde_json::to_writer(&mut chunk, &next_cursor) {
                    return Some(Err(e));
                }
                chunk.push(b'}');
                return Some(Ok(bytes::Bytes::from(chunk)));
            };
            if let Err(e) = serde_json::to_writer(&mut chunk, &row) {
                return Some(Err(e));
            }
            if rows.peek().is_some() {
                chunk.push(b',');
            }
        }
        head = Some(Vec::with_capacity(PAGE_CHUNK + 1024));
        Some(Ok(bytes::Bytes::from(chunk)))
    }))
}

#[get("/admin/events/{id}")]
async fn get_event(_: Admin, state: web::Data<AdminState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("event id {:?} is not a number", id.as_str())))?;
    match state.ctx.journal.get_event(id).await.map_err(journal_down)? {
        Some((event, job, attempts)) => {
            Ok(HttpResponse::Ok().json(json!({"event": event, "job": job, "attempts": attempts})))
        }
        None => Err(ApiError::not_found(format!("no event {id}")).at(format!("/admin/events/{id}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobsQuery {
    state: Option<String>,
    limit: Option<usize>,
}

#[get("/admin/jobs")]
async fn list_jobs(_: Admin, state: web::Data<AdminState>, q: web::Query<JobsQuery>) -> Result<HttpResponse, ApiError> {
    let states: Vec<JobState> = match &q.state {
        None => vec![JobState::Failed, JobState::Waiting, JobState::Dead],
        Some(s) => s
            .split(',')
            .map(|p| {
                p.trim()
                    .parse::<JobState>()
                    .map_err(|e| ApiError::bad_request(format!("unknown job state {e}")))
            })
            .collect::<Result<_, _>>()?,
    };
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let jobs = state
        .ctx
        .journal
        .list_jobs(&states, limit)
        .await
        .map_err(journal_down)?;
    let counts = state.ctx.journal.job_counts().await.map_err(journal_down)?;
    Ok(HttpResponse::Ok().json(json!({"jobs": jobs, "counts": counts})))
}

#[post("/admin/replay")]
async fn replay_route(
    _: Admin,
    state: web::Data<AdminState>,
    body: web::Json<ReplayRequest>,
) -> Result<HttpResponse, ApiError> {
    let n = replay(&state, body.into_inner()).await?;
    Ok(HttpResponse::Ok().json(json!({"enqueued": n})))
}

#[post("/admin/resync")]
async fn resync_route(_: Admin, state: web::Data<AdminState>) -> HttpResponse {
    state.resync.fire();
    HttpResponse::Accepted().json(json!({"status": "resync requested"}))
}

#[get("/admin/instances/{id}")]
async fn instance_view(
    _: Admin,
    state: web::Data<AdminState>,
    RecordId(id): RecordId,
) -> Result<HttpResponse, ApiError> {
    let ctx = &state.ctx;
    let inst = ctx
        .pb
        .get_instance(&id)
        .await
        .map_err(pocketbase_down)?
        .ok_or_else(|| ApiError::not_found(format!("no bot instance {id}")).at(format!("/admin/instances/{id}")))?;
    let coolify = match &inst.coolify_service_id {
        None => json!(null),
        Some(uuid) => match ctx.coolify.get_service(uuid).await {
            Ok(svc) => json!({"uuid": svc.uuid, "name": svc.name, "status": svc.status.to_string()}),
            Err(e) => json!({"error": e.to_string()}),
        },
    };
    let applied = inst
        .applied_hash
        .as_deref()
        .and_then(Spec::parse)
        .map(|s| json!({"state": s.state.as_str(), "compose": s.compose, "env": s.env, "restart": s.restart}));
    let logs = ctx.pb.recent_deploy_logs(&id, 20).await.map_err(pocketbase_down)?;
    let secret_keys: Vec<String> = ctx
        .secrets
        .get(&id, &life_of(&inst))
        .await
        .map_err(secret_store_down)?
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let (events, _) = state
        .ctx
        .journal
        .list_events(
            EventFilter {
                record_id: Some(id.clone()),
                ..Default::default()
            },
            None,
            20,
        )
        .await
        .map_err(journal_down)?;
    // Its deletion in progress (retention, purge), if any: only this record's, not an earlier one's.
    let deletion = ctx
        .journal
        .deletion(&id)
        .await
        .map_err(journal_down)?
        .filter(|d| d.incarnation == life_of(&inst));
    Ok(HttpResponse::Ok().json(json!({
        "id": inst.id,
        "desired": {
            "desired_state": inst.desired_state,
            "config": inst.config,
            "cpu_limit": inst.cpu_limit,
            "mem_limit": inst.mem_limit,
            "restart_requested_at": inst.restart_requested_at,
            "subdomain": inst.subdomain,
            "template": inst.template,
        },
        "applied": applied,
        "applied_hash": inst.applied_hash,
        "status": inst.status,
        "error_message": inst.error_message,
        "pending_reason": inst.pending_reason,
        "changed_by": inst.changed_by,
        "domain": inst.domain,
        "router_key_id": inst.router_key_id,
        "last_healthy_at": inst.last_healthy_at,
        "live_health": ctx.health.live(&inst.id).map(|l| live_health_json(&inst.id, &l)),
        "secrets": {"keys": secret_keys, "hash": inst.secrets_hash},
        "coolify": coolify,
        "recent_actions": logs,
        "recent_events": events,
        "deletion": deletion,
        "coolify_calls": ctx.coolify.calls_for(&inst.id),
    })))
}

/// Live health of every instance the poller judges, from memory (no PocketBase or Coolify call).
#[get("/admin/health")]
async fn health_view(_: Admin, state: web::Data<AdminState>) -> HttpResponse {
    let instances: Vec<serde_json::Value> = state
        .ctx
        .health
        .all()
        .iter()
        .map(|(id, l)| live_health_json(id, l))
        .collect();
    HttpResponse::Ok().json(json!({ "instances": instances }))
}

fn live_health_json(id: &str, l: &LiveHealth) -> serde_json::Value {
    json!({
        "id": id,
        "verdict": l.judgement.verdict.as_str(),
        "checked_at": l.checked_at,
        "last_seen_healthy": l.last_seen_healthy,
    })
}

/// Most keys one secrets body may set.
const MAX_SECRET_KEYS: usize = 100;
/// Largest secrets body accepted; single values are further limited to 16 KiB.
const MAX_SECRETS_BODY: usize = 64 * 1024;

/// Parses a `PUT .../secrets` body into a validated map. Errors name the key and what is wrong, never a
/// value: serde's typed errors quote the offending value, so the body is read as untyped JSON (whose
/// syntax errors carry only a position) and every check is done here.
fn parse_secrets_body(body: &[u8]) -> Result<BTreeMap<String, SecretString>, ApiError> {
    if body.len() > MAX_SECRETS_BODY {
        return Err(ApiError::bad_request("secrets body is larger than 64 KiB"));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "secrets body is not valid JSON (error at line {} column {})",
            e.line(),
            e.column()
        ))
    })?;
    let serde_json::Value::Object(entries) = value else {
        return Err(ApiError::bad_request(
            r#"secrets body must be a JSON object such as {"KEY": "value"}"#,
        ));
    };
    if entries.len() > MAX_SECRET_KEYS {
        return Err(ApiError::bad_request(format!(
            "secrets body has more than {MAX_SECRET_KEYS} keys"
        )));
    }
    let mut map: BTreeMap<String, SecretString> = BTreeMap::new();
    for (k, v) in entries {
        let serde_json::Value::String(s) = v else {
            // Check the key first so a bad key is reported as such; the value is never shown.
            secrets::validate_secret(&k, &SecretString::from(String::new()))
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            return Err(ApiError::bad_request(format!("secret {k}: value must be a string")));
        };
        let value = SecretString::from(s);
        secrets::validate_secret(&k, &value).map_err(|e| ApiError::bad_request(e.to_string()))?;
        map.insert(k, value);
    }
    Ok(map)
}

/// Replaces an instance's secrets. They are kept in the bridge's encrypted store; the reconciler pushes
/// them to the service's env vars in one bulk call, restarts a running service and writes `secrets_hash`
/// back. The answer lists the keys and the hash, never a value.
#[put("/admin/instances/{id}/secrets")]
async fn put_secrets(
    _: Admin,
    state: web::Data<AdminState>,
    RecordId(id): RecordId,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let map = parse_secrets_body(&body)?;
    let ctx = &state.ctx;
    let inst = ctx
        .pb
        .get_instance(&id)
        .await
        .map_err(pocketbase_down)?
        .ok_or_else(|| ApiError::not_found(format!("no bot instance {id}")).at(format!("/admin/instances/{id}")))?;
    ctx.secrets
        .put(&inst.id, &life_of(&inst), &map)
        .await
        .map_err(secret_store_down)?;
    let hash = if map.is_empty() {
        String::new()
    } else {
        secrets::secrets_hash(&ctx.settings.secrets.key_bytes(), &map)
    };
    // A replay event wakes the reconciler for this record.
    let n = ctx
        .intake
        .replay(Replay::Record(Collection::BotInstances, inst.id.clone()))
        .await
        .map_err(journal_down)?;
    info!(record_id = %inst.id, keys = map.len(), "secrets updated");
    Ok(HttpResponse::Accepted().json(json!({
        "status": "accepted",
        "keys": map.keys().collect::<Vec<_>>(),
        "secrets_hash": hash,
        "enqueued": n,
    })))
}

#[delete("/admin/instances/{id}/secrets")]
async fn delete_secrets(
    _: Admin,
    state: web::Data<AdminState>,
    RecordId(id): RecordId,
) -> Result<HttpResponse, ApiError> {
    let existed = state.ctx.secrets.delete(&id).await.map_err(secret_store_down)?;
    let n = state
        .ctx
        .intake
        .replay(Replay::Record(Collection::BotInstances, id))
        .await
        .map_err(journal_down)?;
    let status = if existed { "deleted" } else { "no secrets were set" };
    Ok(HttpResponse::Ok().json(json!({"status": status, "enqueued": n})))
}

/// Gives one instance a new router key (`CLOUDFREEDOM_API_KEY`); the record's job pushes it to Coolify and
/// restarts the stack. Other stacks are not touched. The answer names the new key id, never the key.
#[post("/admin/instances/{id}/rotate-router-key")]
async fn rotate_router_key(
    _: Admin,
    state: web::Data<AdminState>,
    RecordId(id): RecordId,
) -> Result<HttpResponse, ApiError> {
    let rotated = router_keys::rotate(&state.ctx, &id)
        .await
        .map_err(rotation_failed)?
        .ok_or_else(|| ApiError::not_found(format!("no bot instance {id}")).at(format!("/admin/instances/{id}")))?;
    Ok(HttpResponse::Accepted().json(json!({
        "status": "rotated",
        "router_key_id": rotated.key_id,
        "enqueued": rotated.enqueued,
    })))
}

/// The admin API's OpenAPI 3.1 document, written by hand rather than generated (utoipa): the handlers
/// answer `json!` bodies, so generating it would need a schema type per answer, annotations on every
/// handler and a proc-macro crate more to build, for what a test already guarantees (tests/it/admin_openapi.rs
/// compares its paths and methods with `ROUTES`/`PUBLIC_ROUTES` and with the routes the bridge answers).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Behind the admin token like the API it describes: only holders of the token can use that API, so
/// nobody else needs its map.
#[get("/admin/openapi.json")]
async fn openapi(_: Admin) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(OPENAPI)
}

/// A rotation fails on PocketBase (reading the instance) or on the journal (the key id, the replay).
fn rotation_failed(e: ReconcileError) -> ApiError {
    match e {
        ReconcileError::PocketBase(_) => pocketbase_down(e),
        _ => journal_down(e),
    }
}

/// Unknown paths and methods answer a problem document too, so clients never have to parse HTML.
pub async fn no_route(req: actix_web::HttpRequest) -> HttpResponse {
    let detail = format!("no route for {} {}", req.method(), req.path());
    problem::response(StatusCode::NOT_FOUND, &detail, Some(req.path()))
}

/// The routes under `/admin` that need no credential: signing in, and signing out (which only clears
/// the cookie).
pub const PUBLIC_ROUTES: &[(&str, &str)] = &[("POST", "/admin/ui/login"), ("POST", "/admin/ui/logout")];

/// Every other admin route, with sample path values, for tests that check each one refuses
/// unauthenticated calls. With `PUBLIC_ROUTES` it is the one list of admin routes: a test compares it with
/// the route attributes under src/http, another with the OpenAPI document and with what the bridge answers.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/admin/events"),
    ("GET", "/admin/events/1"),
    ("GET", "/admin/jobs"),
    ("POST", "/admin/replay"),
    ("POST", "/admin/resync"),
    ("GET", "/admin/instances/abc"),
    ("GET", "/admin/health"),
    ("PUT", "/admin/instances/abc/secrets"),
    ("DELETE", "/admin/instances/abc/secrets"),
    ("POST", "/admin/instances/abc/rotate-router-key"),
    ("POST", "/admin/instances/abc/restore"),
    ("POST", "/admin/instances/abc/purge"),
    ("GET", "/admin/openapi.json"),
    ("GET", "/admin/ui"),
    ("POST", "/admin/ui/replay"),
    ("POST", "/admin/ui/lifecycle"),
    ("POST", "/admin/ui/rollout"),
    ("GET", "/admin/stream"),
    ("GET", "/admin/ui/stream"),
    ("GET", "/admin/ui/panels"),
    ("GET", "/admin/ui/instances/abc"),
    ("GET", "/admin/ui/instances/abc/row"),
    ("POST", "/admin/templates/nope/rollout"),
    ("POST", "/admin/templates/nope/rollback"),
    ("GET", "/admin/rollouts/1"),
];

pub fn configure(cfg: &mut web::ServiceConfig) {
    let json_cfg = web::JsonConfig::default().limit(64 * 1024).error_handler(|err, _| {
        let answer = problem::response(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {err}"), None);
        actix_web::error::InternalError::from_response(err, answer).into()
    });
    let query_cfg = web::QueryConfig::default().error_handler(|err, _| {
        let answer = problem::response(StatusCode::BAD_REQUEST, &format!("invalid query: {err}"), None);
        actix_web::error::InternalError::from_response(err, answer).into()
    });
    cfg.app_data(json_cfg)
        .app_data(query_cfg)
        .service(list_events)
        .service(get_event)
        .service(list_jobs)
        .service(replay_route)
        .service(resync_route)
        .service(instance_view)
        .service(health_view)
        .service(put_secrets)
        .service(delete_secrets)
        .service(rotate_router_key)
        .service(openapi)
        .configure(super::lifecycle::configure);
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use serde_json::{Value, json};

    use super::*;
    use crate::events::Action;

    fn row(id: i64, payload: &str) -> EventRow {
        EventRow {
            id,
            source: Source::Realtime,
            collection: Collection::BotInstances,
            record_id: format!("r{id:014}"),
            action: Action::Update,
            record_updated: Some("2026-12-06 04:46:04.545Z".into()),
            received_at: 1_000 + id,
            dedupe_key: format!("k{id}"),
            delivery_id: None,
            payload: serde_json::value::RawValue::from_string(payload.to_string()).expect("json"),
            status: EventStatus::Done,
            job_id: Some(id),
        }
    }

    async fn page(events: Vec<EventRow>, next: Option<i64>) -> (usize, Value) {
        let chunks: Vec<_> = events_page(events, next).collect().await;
        let mut body = Vec::new();
        for c in &chunks {
            body.extend_from_slice(c.as_ref().expect("chunk"));
        }
        (
            chunks.len(),
            serde_json::from_slice(&body).expect("the page is one JSON document"),
        )
    }

    #[actix_web::test]
    async fn a_page_is_streamed_in_chunks_that_make_the_whole_page() {
        let payload = format!(r#"{{"id":"r1","name":"{}","config":{{"n":1}}}}"#, "x".repeat(700));
        let events: Vec<EventRow> = (1..=500).rev().map(|id| row(id, &payload)).collect();
        let whole = serde_json::to_value(&events).expect("rows");
        let (chunks, got) = page(events, Some(1)).await;
        assert!(chunks > 20, "a page of 500 events comes in chunks, not whole: {chunks}");
        assert_eq!(got, json!({"events": whole, "next_cursor": 1}));
        assert_eq!(got["events"][0]["payload"]["name"].as_str().map(str::len), Some(700));

        let (chunks, got) = page(Vec::new(), None).await;
        assert_eq!((chunks, got), (1, json!({"events": [], "next_cursor": null})));
        let (_, got) = page(vec![row(7, "null")], None).await;
        assert_eq!(got["events"][0]["payload"], Value::Null);
        assert_eq!(got["events"][0]["id"], json!(7));
    }
}
