//! Admin authentication. The JSON API and the CLI send `Authorization: Bearer <admin token>`; the operator
//! page signs in with the token once and then holds a random, server-side session: it expires, dies at
//! sign-out, and is accepted on `/admin/ui/*` only. A browser's ambient cookie therefore never authorizes
//! the JSON API, and every unsafe request to `/admin` must come from the bridge's own origin.
//! Comparisons are constant-time and failures a bare 401.

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::http::{Method, header};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const SESSION_COOKIE: &str = "cf_bridge_session";
/// The cookie's name when the page is served over HTTPS: the `__Host-` prefix makes browsers refuse it
/// unless it is Secure, host-only and for `/`, so a sibling subdomain (a tenant's bot) cannot plant one.
pub const SECURE_SESSION_COOKIE: &str = "__Host-cf_bridge_session";
/// Most live sessions kept; the oldest go first. Only holders of the admin token can make sessions.
const MAX_SESSIONS: usize = 1000;

/// The admin token.
#[derive(Clone)]
pub struct AdminToken {
    token: SecretString,
}

impl AdminToken {
    pub fn new(token: SecretString) -> Self {
        AdminToken { token }
    }

    pub fn matches_token(&self, candidate: &str) -> bool {
        ct_eq(self.token.expose_secret(), candidate)
    }
}

fn ct_eq(expected: &str, candidate: &str) -> bool {
    // Hash both sides so the comparison time does not depend on the candidate's length either.
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(candidate.as_bytes());
    bool::from(a.ct_eq(&b))
}

/// How the operator page reaches the bridge: decides the cookie's flags and which origin may post.
#[derive(Debug, Clone)]
pub struct PageOrigin {
    /// `scheme://host[:port]` operators use (`admin.public_url`); `None`: the request's own `Host`.
    pub public: Option<String>,
    pub https: bool,
}

impl PageOrigin {
    pub fn from_url(url: Option<&url::Url>) -> Self {
        PageOrigin {
            public: url.map(|u| u.origin().ascii_serialization()),
            https: url.is_some_and(|u| u.scheme() == "https"),
        }
    }

    pub fn cookie_name(&self) -> &'static str {
        if self.https {
            SECURE_SESSION_COOKIE
        } else {
            SESSION_COOKIE
        }
    }

    /// Whether `origin` (an `Origin` header) is the page's own.
    fn is_own(&self, origin: &str, req: &HttpRequest) -> bool {
        match &self.public {
            Some(public) => origin == public,
            None => {
                let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
                let authority = origin.split_once("://").map(|(_, a)| a);
                host.is_some() && authority == host
            }
        }
    }
}

struct Session {
    expires: Instant,
    created: Instant,
    /// A message for the next page view (set after an action, shown once).
    flash: Option<String>,
}

/// Live operator sessions, keyed by a digest of the cookie value (the value itself is never kept).
pub struct Sessions {
    ttl: Duration,
    origin: PageOrigin,
    live: Mutex<HashMap<[u8; 32], Session>>,
}

fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

impl Sessions {
    pub fn new(ttl: Duration, origin: PageOrigin) -> Self {
        Sessions {
            ttl,
            origin,
            live: Mutex::new(HashMap::new()),
        }
    }

    pub fn origin(&self) -> &PageOrigin {
        &self.origin
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session; returns the cookie that carries it.
    pub fn create(&self) -> Cookie<'static> {
        let value = hex::encode(rand::random::<[u8; 32]>());
        let now = Instant::now();
        let mut live = self.lock();
        live.retain(|_, s| s.expires > now);
        while live.len() >= MAX_SESSIONS {
            let Some(oldest) = live.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k) else {
                break;
            };
            live.remove(&oldest);
        }
        live.insert(
            digest(&value),
            Session {
                expires: now + self.ttl,
                created: now,
                flash: None,
            },
        );
        self.cookie(value, self.ttl)
    }

    fn cookie(&self, value: String, max_age: Duration) -> Cookie<'static> {
        let path = if self.origin.https { "/" } else { "/admin/ui" };
        Cookie::build(self.origin.cookie_name(), value)
            .path(path)
            .http_only(true)
            .secure(self.origin.https)
            .same_site(SameSite::Strict)
            .max_age(actix_web::cookie::time::Duration::seconds(
                i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
            ))
            .finish()
    }

    /// The request's live session key, if it carries one.
    fn key(&self, req: &HttpRequest) -> Option<[u8; 32]> {
        let cookie = req.cookie(self.origin.cookie_name())?;
        let key = digest(cookie.value());
        let mut live = self.lock();
        match live.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(key),
            Some(_) => {
                live.remove(&key);
                None
            }
            None => None,
        }
    }

    pub fn is_valid(&self, req: &HttpRequest) -> bool {
        self.key(req).is_some()
    }

    /// Ends the request's session; returns a cookie that clears it in the browser.
    pub fn end(&self, req: &HttpRequest) -> Cookie<'static> {
        if let Some(key) = self.key(req) {
            self.lock().remove(&key);
        }
        let mut cookie = self.cookie(String::new(), Duration::ZERO);
        cookie.make_removal();
        cookie
    }

    pub fn set_flash(&self, req: &HttpRequest, message: String) {
        if let Some(key) = self.key(req)
            && let Some(s) = self.lock().get_mut(&key)
        {
            s.flash = Some(message);
        }
    }

    pub fn take_flash(&self, req: &HttpRequest) -> Option<String> {
        let key = self.key(req)?;
        self.lock().get_mut(&key)?.flash.take()
    }
}

/// Proof that the request carried the admin bearer token (the JSON API: cookies do not count).
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
        let mut answer = super::problem::response(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "this route needs the admin token (Authorization: Bearer <admin.token>)",
            None,
        );
        answer
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        answer
    }
}

pub fn has_bearer(req: &HttpRequest) -> bool {
    let Some(token) = req.app_data::<web::Data<AdminToken>>() else {
        return false;
    };
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|bearer| token.matches_token(bearer.trim()))
}

/// The operator page: the bearer token, or a live session.
pub fn is_operator(req: &HttpRequest) -> bool {
    has_bearer(req) || req.app_data::<web::Data<Sessions>>().is_some_and(|s| s.is_valid(req))
}

impl FromRequest for Admin {
    type Error = Unauthorized;
    type Future = Ready<Result<Admin, Unauthorized>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(if has_bearer(req) { Ok(Admin) } else { Err(Unauthorized) })
    }
}

fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether an unsafe request to `/admin` must be refused as cross-origin: it names another origin
/// (`Origin`, or `Sec-Fetch-Site` other than same-origin), or it rides on the session cookie without
/// proving it comes from the page (`Origin` or `Sec-Fetch-Site: same-origin`). Clients with the bearer
/// token and no browser headers (the CLI, curl) pass.
pub fn cross_origin(req: &HttpRequest) -> bool {
    if !is_unsafe(req.method()) || !req.path().starts_with("/admin") {
        return false;
    }
    let Some(sessions) = req.app_data::<web::Data<Sessions>>() else {
        return true;
    };
    let header_text = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let origin = header_text("origin");
    let fetch_site = header_text("sec-fetch-site");
    if origin.is_some_and(|o| !sessions.origin().is_own(o, req)) {
        return true;
    }
    if fetch_site.is_some_and(|s| s != "same-origin" && s != "none") {
        return true;
    }
    let proven = origin.is_some() || fetch_site == Some("same-origin");
    let by_cookie = sessions.is_valid(req) && !has_bearer(req);
    by_cookie && !proven
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn token_compares() {
        let t = AdminToken::new(SecretString::from("s3cret-admin-token"));
        assert!(t.matches_token("s3cret-admin-token"));
        assert!(!t.matches_token("s3cret-admin-toke"));
        assert!(!t.matches_token(""));
    }

    #[test]
    fn origins_are_compared_with_the_host_or_the_public_url() {
        let req = TestRequest::post()
            .uri("/admin/ui/replay")
            .insert_header((header::HOST, "127.0.0.1:8088"))
            .to_http_request();
        let by_host = PageOrigin::from_url(None);
        assert!(by_host.is_own("http://127.0.0.1:8088", &req));
        assert!(!by_host.is_own("http://evil.example", &req));
        assert!(!by_host.is_own("null", &req));
        let public = url::Url::parse("https://ops.example.com/admin/ui").unwrap();
        let by_url = PageOrigin::from_url(Some(&public));
        assert!(by_url.https);
        assert!(by_url.is_own("https://ops.example.com", &req));
        assert!(!by_url.is_own("http://ops.example.com", &req));
        assert!(!by_url.is_own("https://bot.example.com", &req));
    }
}
