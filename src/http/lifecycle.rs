//! Restore and purge of a deleted instance within its retention (`reconcile::restore`): admin routes
//! behind the admin credential. A refusal changes nothing and answers 404 (no such instance) or 409 (the
//! instance is in a state that does not allow it: destroyed, being purged, not deleted, its record gone).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, post, web};
use serde_json::json;

use super::auth::Admin;
use super::operator::{AdminState, ApiError, RecordId, journal_down, pocketbase_down};
use super::problem;
use crate::journal::Deletion;
use crate::reconcile::error::ReconcileError;
use crate::reconcile::restore::{self as ops, Answer, Refused};

fn failed(e: ReconcileError) -> ApiError {
    match e {
        ReconcileError::PocketBase(_) => pocketbase_down(e),
        _ => journal_down(e),
    }
}

fn answer(path: String, outcome: Answer<Deletion>, status: &str) -> HttpResponse {
    match outcome {
        Answer::Done(row) => HttpResponse::Accepted().json(json!({
            "status": status,
            "coolify_uuid": row.coolify_uuid,
        })),
        Answer::Refused(refused) => {
            let code = match refused {
                Refused::Unknown(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::CONFLICT,
            };
            problem::response(code, &refused.to_string(), Some(&path))
        }
    }
}

/// Brings a deleted instance back within its retention, with its service and data.
#[post("/admin/instances/{id}/restore")]
async fn restore(_: Admin, state: web::Data<AdminState>, RecordId(id): RecordId) -> Result<HttpResponse, ApiError> {
    let outcome = ops::restore(&state.ctx, &id).await.map_err(failed)?;
    Ok(answer(format!("/admin/instances/{id}/restore"), outcome, "restoring"))
}

/// Destroys a deleted instance's service and volumes at once.
#[post("/admin/instances/{id}/purge")]
async fn purge(_: Admin, state: web::Data<AdminState>, RecordId(id): RecordId) -> Result<HttpResponse, ApiError> {
    let outcome = ops::purge(&state.ctx, &id).await.map_err(failed)?;
    Ok(answer(format!("/admin/instances/{id}/purge"), outcome, "purging"))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(restore).service(purge);
}
