//! Admin authentication: a bearer token (API, CLI) or the session cookie set by the operator page's login.
//! Both compare in constant time and fail with a bare 401.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const SESSION_COOKIE: &str = "cf_bridge_session";

/// The admin token and the session value derived from it.
#[derive(Clone)]
pub struct AdminToken {
    token: SecretString,
    session: SecretString,
}

impl AdminToken {
    pub fn new(token: SecretString) -> Self {
        // The cookie carries a digest of the token, not the token itself.
        let mut h = Sha256::new();
        h.update(b"cf-bridge-session-v1:");
        h.update(token.expose_secret().as_bytes());
        let session = SecretString::from(hex::encode(h.finalize()));
        AdminToken { token, session }
    }

    pub fn matches_token(&self, candidate: &str) -> bool {
        ct_eq(self.token.expose_secret(), candidate)
    }

    pub fn matches_session(&self, candidate: &str) -> bool {
        ct_eq(self.session.expose_secret(), candidate)
    }

    pub fn session_value(&self) -> &SecretString {
        &self.session
    }
}

fn ct_eq(expected: &str, candidate: &str) -> bool {
    // Hash both sides so the comparison time does not depend on the candidate's length either.
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(candidate.as_bytes());
    bool::from(a.ct_eq(&b))
}

/// Proof that the request carried a valid admin credential.
pub struct Admin;

#[derive(Debug)]
pub struct Unauthorized;

impl std::fmt::Display for Unauthorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("unauthorized")
    }
}

impl ResponseError for Unauthorized {
    fn error_response(&self) -> HttpResponse {
        HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
            .json(serde_json::json!({"error": "unauthorized"}))
    }
}

pub fn is_admin(req: &HttpRequest) -> bool {
    let Some(token) = req.app_data::<web::Data<AdminToken>>() else {
        return false;
    };
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        if let Some(bearer) = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
            return token.matches_token(bearer.trim());
        }
        return false;
    }
    req.cookie(SESSION_COOKIE)
        .is_some_and(|c| token.matches_session(c.value()))
}

impl FromRequest for Admin {
    type Error = Unauthorized;
    type Future = Ready<Result<Admin, Unauthorized>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(if is_admin(req) { Ok(Admin) } else { Err(Unauthorized) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_and_session_compare() {
        let t = AdminToken::new(SecretString::from("s3cret-admin-token"));
        assert!(t.matches_token("s3cret-admin-token"));
        assert!(!t.matches_token("s3cret-admin-toke"));
        assert!(!t.matches_token(""));
        let session = t.session_value().expose_secret().to_string();
        assert!(t.matches_session(&session));
        assert!(!t.matches_token(&session));
        assert!(!session.contains("s3cret"));
    }
}
