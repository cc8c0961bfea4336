//! What the admin API and the operator page share: their state, the error (a problem document), replay,
//! and the parsing of record references and times.

use actix_web::HttpResponse;
use serde::Deserialize;
use tracing::info;

use crate::events::{Collection, RECORD_ID_RULE, Replay, valid_record_id};
use crate::reconcile::context::Context;
use crate::resync::Trigger;
use std::sync::Arc;

pub struct AdminState {
    pub ctx: Context,
    pub resync: Trigger,
    /// The template rollouts' tasks (see [`crate::rollout`]).
    pub rollouts: Arc<crate::rollout::Runner>,
}

/// An admin API error, answered as an RFC 9457 problem document (see `problem`); the only error shape the
/// admin API returns.
#[derive(Debug)]
pub struct ApiError {
    status: actix_web::http::StatusCode,
    message: String,
    instance: Option<String>,
}

impl ApiError {
    fn new(status: actix_web::http::StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            instance: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(actix_web::http::StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(actix_web::http::StatusCode::NOT_FOUND, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(actix_web::http::StatusCode::SERVICE_UNAVAILABLE, message)
    }
    /// Names the occurrence: the path of the resource the problem is about.
    pub fn at(mut self, path: impl Into<String>) -> Self {
        self.instance = Some(path.into());
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl actix_web::ResponseError for ApiError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        super::problem::response(self.status, &self.message, self.instance.as_deref())
    }
}

/// A dependency's failure answers 503 naming it; the cause goes to the log only (a dependency's error text
/// is not vetted for the caller).
fn down(dependency: &'static str, e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, dependency, "admin call failed on a dependency");
    ApiError::unavailable(format!(
        "{dependency} is unavailable; retry later (the bridge's log has the cause)"
    ))
}

pub fn journal_down(e: impl std::fmt::Display) -> ApiError {
    down("the journal", e)
}

pub fn pocketbase_down(e: impl std::fmt::Display) -> ApiError {
    down("PocketBase", e)
}

pub fn secret_store_down(e: impl std::fmt::Display) -> ApiError {
    down("the secret store", e)
}

/// The `{id}` of an instance route, refused with a 400 before the handler runs when it is not a record id.
pub struct RecordId(pub String);

impl actix_web::FromRequest for RecordId {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let id = req.match_info().get("id").unwrap_or_default();
        std::future::ready(if valid_record_id(id) {
            Ok(RecordId(id.to_string()))
        } else {
            Err(ApiError::bad_request(format!("{id:?} is not a record id")))
        })
    }
}

/// Parses `collection/id` as used by `--record` and the replay body.
pub fn parse_record_ref(s: &str) -> Result<(Collection, String), ApiError> {
    let (c, id) = s.split_once('/').ok_or_else(|| {
        ApiError::bad_request(format!(
            "record {s:?} must look like bot_instances/<id> or tenants/<id>"
        ))
    })?;
    let collection: Collection = c
        .parse()
        .map_err(|e| ApiError::bad_request(format!("unknown collection {e}")))?;
    if !valid_record_id(id) {
        return Err(ApiError::bad_request(format!(
            "record id {id:?} is not a PocketBase id ({RECORD_ID_RULE})"
        )));
    }
    Ok((collection, id.to_string()))
}

/// Accepts RFC 3339 (`2026-11-23T10:00:00Z`) or unix milliseconds.
pub fn parse_time_ms(s: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = s.parse::<i64>()
        && ms >= 0
    {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::bad_request(format!(
                "time {s:?} is not RFC 3339 (e.g. 2026-11-23T10:00:00Z) or unix milliseconds"
            ))
        })
}

/// Exactly one way of choosing what to replay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub event_ids: Option<Vec<i64>>,
    pub record: Option<String>,
    pub since: Option<String>,
    pub failed: Option<bool>,
}

pub async fn replay(state: &AdminState, req: ReplayRequest) -> Result<usize, ApiError> {
    let chosen = [
        req.event_ids.is_some(),
        req.record.is_some(),
        req.since.is_some(),
        req.failed == Some(true),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if chosen != 1 {
        return Err(ApiError::bad_request(
            "give exactly one of event_ids, record, since or failed: true",
        ));
    }
    let what = if let Some(ids) = req.event_ids {
        if ids.is_empty() || ids.len() > 1000 || ids.iter().any(|i| *i <= 0) {
            return Err(ApiError::bad_request(
                "event_ids must hold 1 to 1000 positive event ids",
            ));
        }
        Replay::Events(ids)
    } else if let Some(r) = req.record {
        let (c, id) = parse_record_ref(&r)?;
        Replay::Record(c, id)
    } else if let Some(s) = req.since {
        Replay::Since(parse_time_ms(&s)?)
    } else {
        Replay::Failed
    };
    let n = state.ctx.intake.replay(what).await.map_err(journal_down)?;
    info!(enqueued = n, "replay requested");
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_the_intake_accepts_can_be_replayed_by_id() {
        for id in ["abc123", "a_b", "x-y-z", "0"] {
            assert!(valid_record_id(id), "{id}");
            assert_eq!(parse_record_ref(&format!("bot_instances/{id}")).expect("valid").1, id);
        }
        for bad in [
            "bot_instances/ABC",
            "bot_instances/a/b",
            "bot_instances/",
            "users/abc",
            "abc",
        ] {
            assert!(parse_record_ref(bad).is_err(), "{bad}");
        }
    }
}
