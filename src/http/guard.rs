//! Wrapped around every request: an unsafe request to `/admin` from another origin is refused (403), an
//! error of the JSON API that a handler did not shape (actix's own) becomes a problem document, and
//! every `/admin` answer tells browsers not to frame, sniff or cache it, nor to name it to other sites,
//! and (the operator page) to load nothing but its own inline style.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::middleware::Next;

use super::{auth, problem};

pub async fn admin_guard(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if !req.path().starts_with("/admin") {
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    }
    if auth::cross_origin(req.request()) {
        tracing::warn!(method = %req.method(), path = req.path(), "cross-origin admin request refused");
        let refused = problem::response(
            StatusCode::FORBIDDEN,
            "cross-origin request refused: unsafe admin requests must come from the bridge's own page or \
             carry the admin token without browser origin headers",
            None,
        );
        let mut res = req.into_response(refused).map_into_right_body();
        protect(res.headers_mut());
        return Ok(res);
    }
    let res = next.call(req).await?;
    let mut res = if needs_problem(&res) {
        let status = res.status();
        // actix's own refusals (a body over the payload limit, ...) carry their reason as the error.
        let detail = res
            .response()
            .error()
            .map(|e| e.to_string())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
        let answer = problem::response(status, &detail, None);
        res.into_response(answer).map_into_right_body()
    } else {
        res.map_into_left_body()
    };
    protect(res.headers_mut());
    Ok(res)
}

/// An error from the JSON API that is not a problem document yet (the operator page keeps its HTML).
fn needs_problem<B>(res: &ServiceResponse<B>) -> bool {
    let status = res.status();
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(problem::CONTENT_TYPE.as_bytes()));
    (status.is_client_error() || status.is_server_error())
        && !is_problem
        && !res.request().path().starts_with("/admin/ui")
}

fn protect(headers: &mut HeaderMap) {
    let set = |headers: &mut HeaderMap, name, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        &super::ui::content_security_policy(),
    );
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::CACHE_CONTROL, "no-store");
    // Not `no-referrer`: under it browsers send `Origin: null` with the page's own form posts.
    set(headers, header::REFERRER_POLICY, "same-origin");
}
