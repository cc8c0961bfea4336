//! The admin API's errors are RFC 9457 problem documents (`application/problem+json`), one of each kind
//! against a real bridge: bad input, unauthenticated, cross-origin, not found, no route, a body too large
//! (refused by actix itself), the journal unavailable. The operator page keeps its HTML.

use std::time::Duration;

use cf_testkit::ADMIN_TOKEN;
use cf_testkit::world::{SIM_QUICK, World};
use serde_json::{Value, json};

/// Checks the answer is a problem document with `status` and returns it.
async fn problem(resp: reqwest::Response, status: u16) -> Value {
    let got = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(got, status, "{text}");
    assert_eq!(ctype, "application/problem+json", "{status}: {text}");
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert_eq!(doc["type"], "about:blank", "{doc}");
    assert_eq!(doc["status"], status, "{doc}");
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason());
    assert_eq!(
        doc["title"].as_str(),
        reason,
        "the title of about:blank is the reason phrase: {doc}"
    );
    assert!(doc["detail"].as_str().is_some_and(|d| !d.is_empty()), "{doc}");
    doc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_admin_error_is_a_problem_document() {
    let w = World::start(SIM_QUICK, &[]).await;
    let url = &w.bridge.url;
    let http = cf_testkit::http();
    let get = |path: &str| http.get(format!("{url}{path}")).bearer_auth(ADMIN_TOKEN);

    // Bad input: a query the route does not take, a path id that is not a record id.
    let doc = problem(get("/admin/events?limit=0").send().await.expect("GET"), 400).await;
    assert!(doc["detail"].as_str().is_some_and(|d| d.contains("limit")), "{doc}");
    let doc = problem(get("/admin/instances/NOT_AN_ID").send().await.expect("GET"), 400).await;
    assert!(
        doc["detail"].as_str().is_some_and(|d| d.contains("not a record id")),
        "{doc}"
    );

    // Unauthenticated: the challenge stays, the token is not echoed.
    let resp = http
        .get(format!("{url}/admin/jobs"))
        .bearer_auth("wrong-token")
        .send()
        .await
        .expect("GET");
    assert_eq!(
        resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let doc = problem(resp, 401).await;
    assert!(!doc.to_string().contains("wrong-token"), "{doc}");

    // Forbidden origin: the right token does not make a cross-origin browser request acceptable.
    let resp = http
        .post(format!("{url}/admin/replay"))
        .bearer_auth(ADMIN_TOKEN)
        .header("origin", "http://evil.example")
        .json(&json!({"failed": true}))
        .send()
        .await
        .expect("POST");
    let doc = problem(resp, 403).await;
    assert!(
        doc["detail"].as_str().is_some_and(|d| d.contains("cross-origin")),
        "{doc}"
    );

    // Not found, with the occurrence named; an unknown route likewise.
    let doc = problem(get("/admin/events/999999").send().await.expect("GET"), 404).await;
    assert_eq!(doc["instance"], "/admin/events/999999", "{doc}");
    let doc = problem(get("/admin/instances/abc").send().await.expect("GET"), 404).await;
    assert_eq!(doc["instance"], "/admin/instances/abc", "{doc}");
    let resp = http
        .patch(format!("{url}/admin/events"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("PATCH");
    let doc = problem(resp, 404).await;
    assert_eq!(doc["detail"], "no route for PATCH /admin/events", "{doc}");

    // A body over actix's own payload limit: refused before the handler, still a problem document,
    // and the value is not echoed.
    let marker = "zq7MARKERvalue93";
    let big = format!("{{\"K\": \"{marker}{}\"}}", "x".repeat(300 * 1024));
    let resp = http
        .put(format!("{url}/admin/instances/abc/secrets"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("PUT");
    let doc = problem(resp, 413).await;
    assert!(!doc.to_string().contains(marker), "{doc}");

    // The journal unavailable: another connection holds its write lock past the busy timeout. The
    // answer names the journal, not the cause (that is in the log).
    let journal = rusqlite::Connection::open(w.bridge.dir.join("journal.db")).expect("open journal");
    journal.execute_batch("BEGIN EXCLUSIVE").expect("lock the journal");
    let resp = http
        .post(format!("{url}/admin/replay"))
        .bearer_auth(ADMIN_TOKEN)
        .timeout(Duration::from_secs(30))
        .json(&json!({"record": "bot_instances/abc"}))
        .send()
        .await
        .expect("POST");
    journal.execute_batch("ROLLBACK").expect("unlock the journal");
    let doc = problem(resp, 503).await;
    assert_eq!(
        doc["detail"], "the journal is unavailable; retry later (the bridge's log has the cause)",
        "{doc}"
    );

    // The operator page keeps HTML.
    let resp = http.get(format!("{url}/admin/ui")).send().await.expect("GET page");
    assert_eq!(resp.status().as_u16(), 401);
    assert!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/html")),
        "{:?}",
        resp.headers()
    );
}
