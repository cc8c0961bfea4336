//! `POST /hooks/pocketbase`: signed change notifications from the PocketBase hooks.
//!
//! Nothing is acknowledged before the journal holds it: a sink failure answers 503 so the sender
//! (or the next resync) tries again. Rejected deliveries write nothing.

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_LENGTH, HeaderMap};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::events::{Action, Collection, Ingested, SinkError, Source};
use crate::intake::{Intake, record_event};
use crate::webhook::{Delivery, WebhookSecret};

pub const PATH: &str = "/hooks/pocketbase";
/// PocketBase records are small; anything bigger is not ours.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// How long a delivery waits for the journal before it is refused with 503. Below the PocketBase
/// hook's 3 s send timeout, so a busy or unwritable journal gives the sender an answer, not a hang
/// (the journal's own busy timeout is 5 s and writes queue behind each other).
pub const SINK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub struct IngestState {
    pub intake: Intake,
    /// None: webhook intake is off (no `webhook.secret`): every delivery answers 404 and changes nothing.
    pub secret: Option<WebhookSecret>,
}

/// The answer while webhook intake is off.
pub const INTAKE_OFF: &str = "webhook intake is off: set webhook.secret (and PocketBase's CF_BRIDGE_WEBHOOK_SECRET \
     and CF_BRIDGE_WEBHOOK_URL) to turn it on; changes arrive by realtime and resync";

/// Registers the route; the app provides `web::Data<IngestState>`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(PATH, web::post().to(receive));
}

/// The body the hook sends (hooks/pb_hooks/webhook_sign.js).
#[derive(Deserialize)]
struct Body {
    event: String,
    collection: String,
    record: Map<String, Value>,
}

fn error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message }))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> Result<Vec<u8>, HttpResponse> {
    let declared = header(req.headers(), CONTENT_LENGTH.as_str()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "body larger than 256 KiB"));
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| error(StatusCode::BAD_REQUEST, "could not read request body"))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(error(StatusCode::PAYLOAD_TOO_LARGE, "body larger than 256 KiB"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn parse_body(body: &[u8]) -> Result<(Action, Collection, Map<String, Value>), String> {
    let parsed: Body = serde_json::from_slice(body).map_err(|e| format!("malformed body: {e}"))?;
    let action: Action = parsed.event.parse().map_err(|e| format!("unknown event {e}"))?;
    let collection: Collection = parsed
        .collection
        .parse()
        .map_err(|e| format!("unknown collection {e}"))?;
    Ok((action, collection, parsed.record))
}

async fn receive(req: HttpRequest, payload: web::Payload, state: web::Data<IngestState>) -> HttpResponse {
    let rejected = |reason: &str| {
        state
            .intake
            .metrics()
            .webhook_rejected
            .with_label_values(&[reason])
            .inc();
    };
    let Some(secret) = state.secret.as_ref() else {
        rejected("intake_off");
        return error(StatusCode::NOT_FOUND, INTAKE_OFF);
    };
    let body = match read_body(&req, payload).await {
        Ok(body) => body,
        Err(response) => {
            rejected(if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "body"
            });
            return response;
        }
    };
    let headers = req.headers();
    let delivery = Delivery {
        id: header(headers, "webhook-id"),
        timestamp: header(headers, "webhook-timestamp"),
        signature: header(headers, "webhook-signature"),
    };
    if let Err(e) = secret.verify(&delivery, &body, chrono::Utc::now().timestamp()) {
        tracing::warn!(reason = %e, "webhook rejected");
        rejected(e.reason());
        return error(StatusCode::UNAUTHORIZED, &e.to_string());
    }
    // verify() succeeded, so the id is present.
    let delivery_id = delivery.id.unwrap_or_default().to_owned();
    let (action, collection, record) = match parse_body(&body) {
        Ok(parts) => parts,
        Err(message) => {
            tracing::warn!(delivery_id = %delivery_id, %message, "webhook body rejected");
            rejected("body");
            return error(StatusCode::BAD_REQUEST, &message);
        }
    };
    let mut event = match record_event(Source::Webhook, collection, action, record, Some(delivery_id.clone())) {
        Ok(event) => event,
        Err(e) => {
            tracing::warn!(delivery_id = %delivery_id, reason = %e, "webhook record rejected");
            rejected("record");
            return error(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    // The sender's trace, if it has one: the intake continues it (an invalid header starts a new trace).
    event.trace_context = header(headers, "traceparent").map(str::to_owned);
    let record_id = event.record_id.clone();
    let outcome = match tokio::time::timeout(SINK_TIMEOUT, state.intake.submit(event)).await {
        Ok(outcome) => outcome,
        // Not acknowledged: if the write lands later, the sender's retry is a harmless duplicate.
        Err(_) => Err(SinkError::Unavailable(
            format!("no journal answer within {} s", SINK_TIMEOUT.as_secs()).into(),
        )),
    };
    match outcome {
        Ok(Ingested::New {
            event_id,
            job_id,
            coalesced,
        }) => {
            tracing::info!(delivery_id = %delivery_id, record_id = %record_id, collection = collection.as_str(),
                           action = action.as_str(), event_id, job_id, coalesced, "webhook accepted");
            HttpResponse::Accepted().json(json!({ "status": "accepted" }))
        }
        Ok(Ingested::Settled { event_id }) => {
            tracing::debug!(delivery_id = %delivery_id, record_id = %record_id, event_id,
                            "webhook accepted; changes only bridge-owned fields, no job");
            HttpResponse::Accepted().json(json!({ "status": "accepted" }))
        }
        Ok(Ingested::Duplicate) => {
            tracing::debug!(delivery_id = %delivery_id, record_id = %record_id, "webhook duplicate");
            HttpResponse::Ok().json(json!({ "status": "duplicate" }))
        }
        Err(e) => {
            tracing::error!(delivery_id = %delivery_id, record_id = %record_id, error = %e, "webhook not journaled");
            rejected("unavailable");
            error(StatusCode::SERVICE_UNAVAILABLE, "journal unavailable, retry later")
        }
    }
}
