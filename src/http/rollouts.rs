//! Admin API for template rollouts (see [`crate::rollout`]): start one, roll the latest back, read one.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, get, post, web};
use serde_json::json;

use super::auth::Admin;
use super::operator::AdminState;
use super::problem;
use crate::rollout::{self, Request, Rollout, RolloutError};

/// A rollout call's error, as a problem document; a dependency's cause goes to the log only.
#[derive(Debug)]
struct Problem(StatusCode, String);

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl actix_web::ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.0
    }
    fn error_response(&self) -> HttpResponse {
        problem::response(self.0, &self.1, None)
    }
}

impl From<RolloutError> for Problem {
    fn from(e: RolloutError) -> Self {
        let (status, detail) = refusal(e);
        Problem(status, detail)
    }
}

/// A refused or failed rollout call's status and what the operator is told; a dependency's cause goes to
/// the log only.
pub(super) fn refusal(e: RolloutError) -> (StatusCode, String) {
    let status = match &e {
        RolloutError::UnknownTemplate
        | RolloutError::UnknownVersion { .. }
        | RolloutError::UnknownTenant
        | RolloutError::NotPublished(_) => StatusCode::NOT_FOUND,
        RolloutError::BadBatch => StatusCode::BAD_REQUEST,
        RolloutError::Running { .. } | RolloutError::NothingToRollBack(_) | RolloutError::AlreadyRolledBack { .. } => {
            StatusCode::CONFLICT
        }
        RolloutError::Journal(_) | RolloutError::PocketBase(_) => {
            let dependency = if matches!(e, RolloutError::Journal(_)) {
                "the journal"
            } else {
                "PocketBase"
            };
            tracing::warn!(error = %e, dependency, "rollout call failed on a dependency");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{dependency} is unavailable; retry later (the bridge's log has the cause)"),
            );
        }
    };
    (status, e.to_string())
}

fn view(r: &Rollout) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    v["batches_total"] = json!(r.batches_total());
    v
}

#[post("/admin/templates/{name}/rollout")]
async fn start_rollout(
    _: Admin,
    state: web::Data<AdminState>,
    name: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    // An empty body asks for the defaults: the newest version, batches of the default size, every tenant.
    let req: Request = if body.iter().all(u8::is_ascii_whitespace) {
        Request::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Problem(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))?
    };
    let r = rollout::start(&state.ctx, &state.rollouts, &name, req).await?;
    Ok(HttpResponse::Accepted().json(view(&r)))
}

#[post("/admin/templates/{name}/rollback")]
async fn start_rollback(
    _: Admin,
    state: web::Data<AdminState>,
    name: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let r = rollout::rollback(&state.ctx, &state.rollouts, &name).await?;
    Ok(HttpResponse::Accepted().json(view(&r)))
}

#[get("/admin/rollouts/{id}")]
async fn get_rollout(_: Admin, state: web::Data<AdminState>, id: web::Path<String>) -> Result<HttpResponse, Problem> {
    let id: i64 = id
        .parse()
        .map_err(|_| Problem(StatusCode::BAD_REQUEST, "the rollout id is not a number".into()))?;
    match rollout::get(&state.ctx, id).await? {
        Some(r) => Ok(HttpResponse::Ok().json(view(&r))),
        None => Err(Problem(StatusCode::NOT_FOUND, format!("no rollout {id}"))),
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(start_rollout).service(start_rollback).service(get_rollout);
}
