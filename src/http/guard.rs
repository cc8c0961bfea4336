//! Wrapped around every request: an unsafe request to `/admin` from another origin is refused (403), and
//! every `/admin` answer tells browsers not to frame, sniff or cache it, nor to name it to other sites,
//! and (the operator page) to load nothing but its own inline style.

use actix_web::HttpResponse;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::middleware::Next;
use serde_json::json;

use super::auth;

pub async fn admin_guard(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if !req.path().starts_with("/admin") {
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    }
    if auth::cross_origin(req.request()) {
        tracing::warn!(method = %req.method(), path = req.path(), "cross-origin admin request refused");
        let refused = HttpResponse::Forbidden().json(json!({"error": "cross-origin request refused"}));
        let mut res = req.into_response(refused).map_into_right_body();
        protect(res.headers_mut());
        return Ok(res);
    }
    let mut res = next.call(req).await?.map_into_left_body();
    protect(res.headers_mut());
    Ok(res)
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
