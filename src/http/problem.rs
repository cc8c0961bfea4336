//! RFC 9457 problem documents: the one error shape of the admin API (`application/problem+json`).
//!
//! Every problem is `about:blank`: in this API each status has one meaning (400 a request that is not
//! valid, 401 no admin credential, 403 a cross-origin request, 404 nothing there, 409 a state of the record
//! that does not allow the action, 413 a body too large, 503 a dependency down), so the status is the type
//! and `title` is its reason phrase (RFC 9457 §4.2.1).
//! `detail` says what is wrong in words an operator can act on; it never holds a secret or a value that
//! was sent, and never the cause of a dependency failure (that goes to the log).

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde_json::{Map, Value, json};

pub const CONTENT_TYPE: &str = "application/problem+json";
/// The problem type of every admin error (RFC 9457 §4.2.1).
pub const BLANK: &str = "about:blank";

/// A problem document for `status`; `instance` names the occurrence (the request's path) where useful.
pub fn document(status: StatusCode, detail: &str, instance: Option<&str>) -> Value {
    let mut doc = Map::new();
    doc.insert("type".into(), json!(BLANK));
    doc.insert("title".into(), json!(status.canonical_reason().unwrap_or("Error")));
    doc.insert("status".into(), json!(status.as_u16()));
    doc.insert("detail".into(), json!(detail));
    if let Some(instance) = instance {
        doc.insert("instance".into(), json!(instance));
    }
    Value::Object(doc)
}

/// The answer carrying a problem document.
pub fn response(status: StatusCode, detail: &str, instance: Option<&str>) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(CONTENT_TYPE)
        .body(document(status, detail, instance).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_carry_the_rfc_9457_members() {
        let doc = document(StatusCode::NOT_FOUND, "no event 7", Some("/admin/events/7"));
        assert_eq!(
            doc,
            json!({"type": "about:blank", "title": "Not Found", "status": 404, "detail": "no event 7",
                   "instance": "/admin/events/7"})
        );
        let doc = document(StatusCode::SERVICE_UNAVAILABLE, "the journal is unavailable", None);
        assert_eq!(doc["title"], "Service Unavailable");
        assert!(doc.get("instance").is_none());
    }
}
