//! The operator page's session (issue 14, item 6), against a bridge in the test process: sessions are
//! random and server-side, expire, die at sign-out and count on `/admin/ui/*` only; unsafe requests from
//! another origin are refused (a cross-site form post to `/admin/ui/replay`, a text/plain post to
//! `/admin/resync`); the page carries CSP, frame, sniffing and caching headers and shows no text from its
//! query string; over HTTPS the cookie is Secure and host-only.

use std::time::Duration;

use cf_testkit::ADMIN_TOKEN;
use cf_testkit::world::{SIM_QUICK, World};
use reqwest::header::{HeaderMap, SET_COOKIE};

/// A client that follows no redirect and keeps no cookie: each request says exactly what it carries.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn origin_of(stack: &World) -> String {
    stack.bridge.url.clone()
}

/// Signs in as a browser on `origin` would; returns the Set-Cookie header.
async fn sign_in(stack: &World, origin: &str) -> String {
    let r = client()
        .post(format!("{}/admin/ui/login", stack.bridge.url))
        .header("origin", origin)
        .header("sec-fetch-site", "same-origin")
        .header("content-type", FORM)
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 303, "sign-in: {:?}", r.headers());
    r.headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_string()
}

/// `name=value` of a Set-Cookie header.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or_default().trim().to_string()
}

async fn get(stack: &World, path: &str, cookie: &str) -> (u16, HeaderMap, String) {
    let r = client()
        .get(format!("{}{path}", stack.bridge.url))
        .header("cookie", cookie)
        .send()
        .await
        .expect("GET");
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.text().await.unwrap_or_default())
}

/// A POST as a browser page would send it: the form body, the cookie and the page's origin headers.
async fn post(stack: &World, path: &str, cookie: &str, headers: &[(&str, &str)], body: (&str, &str)) -> u16 {
    let mut req = client()
        .post(format!("{}{path}", stack.bridge.url))
        .header("cookie", cookie)
        .header("content-type", body.0)
        .body(body.1.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("POST").status().as_u16()
}

async fn replay_events(stack: &World) -> usize {
    let (status, v) = stack.bridge.admin().get("/admin/events?source=replay").await;
    assert_eq!(status, 200);
    v["events"].as_array().map(Vec::len).unwrap_or_default()
}

const FORM: &str = "application/x-www-form-urlencoded";

/// Collects failed checks so that one run reports every property that does not hold.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.0.push(what.into());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_page_only_origin_checked_and_end_at_sign_out() {
    let stack = World::start(SIM_QUICK, &[]).await;
    let mut c = Checks::default();
    let own = origin_of(&stack);
    let set_cookie = sign_in(&stack, &own).await;
    let cookie = pair(&set_cookie);
    let attrs = set_cookie.to_ascii_lowercase();
    for a in ["httponly", "samesite=strict", "path=/admin/ui", "max-age=28800"] {
        c.check(attrs.contains(a), format!("cookie attribute {a} missing: {set_cookie}"));
    }
    c.check(
        !attrs.contains("secure"),
        format!("Secure over plain HTTP: {set_cookie}"),
    );
    c.check(!cookie.contains(ADMIN_TOKEN), "the cookie holds the token");
    let again = pair(&sign_in(&stack, &own).await);
    c.check(cookie != again, "two sign-ins got the same session value");

    // The page works with the cookie and carries its protective headers.
    let (status, _, body) = get(&stack, "/admin/ui?flash=%3Cb%3ECANARY-query-text", &cookie).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<h1>cf-bridge</h1>"));
    c.check(!body.contains("CANARY"), "text from the query string is shown");
    let header = |h: &HeaderMap, k: &str| h.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    for (want, cookie) in [(200, cookie.as_str()), (401, "")] {
        let (status, h, _) = get(&stack, "/admin/ui", cookie).await;
        assert_eq!(status, want);
        let csp = header(&h, "content-security-policy");
        for d in [
            "default-src 'none'",
            "frame-ancestors 'none'",
            "form-action 'self'",
            "style-src 'sha256-",
        ] {
            c.check(csp.contains(d), format!("{want} page: CSP lacks {d}: {csp:?}"));
        }
        c.check(
            header(&h, "x-frame-options") == "DENY",
            format!("{want} page: X-Frame-Options"),
        );
        c.check(
            header(&h, "x-content-type-options") == "nosniff",
            format!("{want} page: nosniff"),
        );
        c.check(
            header(&h, "cache-control") == "no-store",
            format!("{want} page: Cache-Control"),
        );
    }

    // The cookie does not open the JSON API.
    let (status, _, _) = get(&stack, "/admin/events", &cookie).await;
    c.check(
        status == 401,
        format!("the session cookie read the JSON API ({status})"),
    );

    // Cross-origin posts are refused and change nothing.
    let replays = replay_events(&stack).await;
    let record = (FORM, "record=bot_instances%2Fabc123");
    let refused: [&[(&str, &str)]; 5] = [
        &[("origin", "http://evil.example"), ("sec-fetch-site", "cross-site")],
        &[
            ("origin", "https://bot.bots.test.example"),
            ("sec-fetch-site", "same-site"),
        ],
        &[("origin", "null")],
        &[("sec-fetch-site", "cross-site")],
        // The cookie alone, with no proof of where the post comes from.
        &[],
    ];
    for headers in refused {
        let status = post(&stack, "/admin/ui/replay", &cookie, headers, record).await;
        c.check(
            status == 403,
            format!("cross-origin replay with {headers:?} answered {status}"),
        );
    }
    let plain = ("text/plain", "{}");
    let evil = [("origin", "http://evil.example"), ("sec-fetch-site", "cross-site")];
    let status = post(&stack, "/admin/resync", &cookie, &evil, plain).await;
    c.check(
        status == 403,
        format!("text/plain resync from another site answered {status}"),
    );
    let status = post(&stack, "/admin/resync", &cookie, &[("origin", &own)], plain).await;
    c.check(
        status == 401,
        format!("the cookie resynced through the JSON API ({status})"),
    );
    let now = replay_events(&stack).await;
    c.check(
        now == replays,
        format!("refused posts replayed {} records", now - replays),
    );

    // The page's own post works; its message comes from the session, not the URL.
    let before = replay_events(&stack).await;
    let status = post(&stack, "/admin/ui/replay", &cookie, &[("origin", &own)], record).await;
    assert_eq!(status, 303);
    assert_eq!(replay_events(&stack).await, before + 1);
    let (_, _, body) = get(&stack, "/admin/ui", &cookie).await;
    c.check(
        body.contains("replayed bot_instances/abc123"),
        "no message after the replay",
    );
    let (_, _, body) = get(&stack, "/admin/ui", &cookie).await;
    c.check(!body.contains("id=\"flash\""), "the message shows more than once");

    // Signing out ends the session on the server: the copied cookie is dead.
    let status = post(&stack, "/admin/ui/logout", &cookie, &[("origin", &own)], (FORM, "")).await;
    assert_eq!(status, 303);
    let (status, _, body) = get(&stack, "/admin/ui", &cookie).await;
    c.check(
        status == 401 && body.contains("name=\"token\""),
        "the session outlived sign-out",
    );
    let (status, _, _) = get(&stack, "/admin/ui", &again).await;
    c.check(status == 200, "signing out one session ended another");
    assert!(c.0.is_empty(), "{} checks failed:\n{}", c.0.len(), c.0.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_and_are_secure_behind_https() {
    let public = "https://ops.test.example";
    let stack = World::start(
        SIM_QUICK,
        &[
            ("CF_BRIDGE__ADMIN__SESSION_TTL_SECS", "2"),
            ("CF_BRIDGE__ADMIN__PUBLIC_URL", public),
        ],
    )
    .await;
    // Only the configured origin may sign in or post.
    let status = post(
        &stack,
        "/admin/ui/login",
        "",
        &[("origin", &origin_of(&stack))],
        (FORM, &format!("token={ADMIN_TOKEN}")),
    )
    .await;
    assert_eq!(status, 403, "an origin other than admin.public_url");
    let set_cookie = sign_in(&stack, public).await;
    let attrs = set_cookie.to_ascii_lowercase();
    assert!(set_cookie.starts_with("__Host-cf_bridge_session="), "{set_cookie}");
    for a in ["secure", "httponly", "samesite=strict", "path=/", "max-age=2"] {
        assert!(attrs.contains(a), "{a} missing: {set_cookie}");
    }
    let cookie = pair(&set_cookie);
    let (status, _, _) = get(&stack, "/admin/ui", &cookie).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, _, _) = get(&stack, "/admin/ui", &cookie).await;
    assert_eq!(status, 401, "the session outlived its expiry");
}
