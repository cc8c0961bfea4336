//! Admin API against a real bridge: authentication on every route, problem documents for bad input, replay of a
//! job failed by a simulator fault (API and CLI), metrics that parse and move, readiness.

use std::collections::BTreeSet;
use std::time::Duration;

use cf_bridge::http::admin::{PUBLIC_ROUTES, ROUTES};
use cf_testkit::promtext;
use cf_testkit::world::{SIM_QUICK, World};
use cf_testkit::{ADMIN_TOKEN, eventually, repo_root};
use reqwest::Method;
use serde_json::{Value, json};

/// `(METHOD, path pattern)` of every `#[get("/admin...")]`-style attribute in the HTTP sources.
pub fn declared_routes() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let dir = repo_root().join("src/http");
    for entry in std::fs::read_dir(&dir).expect("read src/http") {
        let file = entry.expect("dir entry").path();
        if file.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let src = std::fs::read_to_string(&file).expect("read route source");
        for line in src.lines().map(str::trim) {
            for method in ["get", "post", "put", "delete", "patch"] {
                if let Some(rest) = line.strip_prefix(&format!("#[{method}(\"")) {
                    let path = rest.split('"').next().unwrap_or_default();
                    if path.starts_with("/admin") {
                        out.insert((method.to_uppercase(), path.to_string()));
                    }
                }
            }
        }
    }
    out
}

/// Whether a concrete path fits a pattern with `{param}` segments.
pub fn fits(pattern: &str, path: &str) -> bool {
    let (p, q): (Vec<_>, Vec<_>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == q.len()
        && p.iter()
            .zip(&q)
            .all(|(a, b)| (a.starts_with('{') && !b.is_empty()) || a == b)
}

#[test]
fn route_lists_match_the_route_attributes() {
    let declared = declared_routes();
    assert!(
        declared.len() >= 10,
        "found too few routes to be plausible: {declared:?}"
    );
    let listed: Vec<(&str, &str)> = ROUTES.iter().chain(PUBLIC_ROUTES).copied().collect();
    for (method, pattern) in &declared {
        let n = listed.iter().filter(|(m, p)| m == method && fits(pattern, p)).count();
        assert_eq!(
            n, 1,
            "route {method} {pattern} must be listed exactly once in ROUTES or PUBLIC_ROUTES"
        );
    }
    for (method, path) in &listed {
        assert!(
            declared.iter().any(|(m, p)| m == method && fits(p, path)),
            "{method} {path} is listed but no handler declares it"
        );
    }
}

#[test]
fn metrics_parser_is_strict() {
    assert!(promtext::parse("# TYPE a counter\na 1\n").is_ok());
    assert!(promtext::parse("a 1\n").is_err(), "sample without TYPE");
    assert!(
        promtext::parse("# TYPE a counter\na{x=\"1} 1\n").is_err(),
        "unterminated label"
    );
    assert!(promtext::parse("# TYPE a counter\na one\n").is_err(), "bad value");
    assert!(promtext::parse("# TYPE a counter\na -1\n").is_err(), "negative counter");
    assert!(
        promtext::parse("# TYPE h histogram\nh_bucket 1\n").is_err(),
        "bucket without le"
    );
    let ok = promtext::parse("# TYPE h histogram\nh_bucket{le=\"+Inf\",k=\"a\\\"b\"} 2\nh_sum 0.5\nh_count 2\n")
        .expect("valid exposition");
    assert_eq!(ok.get("h_bucket", &[("le", "+Inf"), ("k", "a\"b")]), Some(2.0));
    assert_eq!(ok.sum("h_count"), 2.0);
}

async fn raw(url: &str, method: &str, path: &str, auth: Option<(&str, &str)>) -> (u16, String, String) {
    let client = cf_testkit::http();
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client.request(method, format!("{url}{path}"));
    if let Some((k, v)) = auth {
        req = req.header(k, v);
    }
    if path.ends_with("/replay") && !path.contains("/ui/") {
        req = req.json(&json!({"failed": true}));
    } else if path.ends_with("/secrets") {
        req = req.json(&json!({"K": "v"}));
    } else if path == "/admin/ui/replay" {
        req = req
            .header("content-type", "application/x-www-form-urlencoded")
            .body("record=bot_instances%2Fabc");
    } else if path == "/admin/ui/lifecycle" {
        req = req
            .header("content-type", "application/x-www-form-urlencoded")
            .body("id=abc&op=restore");
    } else if path == "/admin/ui/rollout" {
        req = req
            .header("content-type", "application/x-www-form-urlencoded")
            .body("template=base-llm&op=rollback");
    }
    let resp = req.send().await.expect("admin request");
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    // A change stream never ends: its headers are the answer.
    if ctype == "text/event-stream" {
        return (status, ctype, String::new());
    }
    (status, ctype, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_the_token_and_bad_input_is_a_json_400() {
    let stack = World::start(SIM_QUICK, &[]).await;
    let url = &stack.bridge.url;
    let wrong_session = "cf_bridge_session=0000000000000000000000000000000000000000000000000000000000000000";
    let bad_credentials: [Option<(&str, &str)>; 5] = [
        None,
        Some(("authorization", "Bearer wrong-token")),
        Some(("authorization", "Bearer test-admin-token-012345678")),
        Some(("authorization", "Basic dGVzdDp0ZXN0")),
        Some(("cookie", wrong_session)),
    ];
    for (method, path) in ROUTES {
        for cred in &bad_credentials {
            let (status, ctype, body) = raw(url, method, path, *cred).await;
            assert_eq!(status, 401, "{method} {path} with {cred:?} answered {status}: {body}");
            assert!(!body.contains(ADMIN_TOKEN), "{method} {path} leaks the token");
            if path.starts_with("/admin/ui") {
                assert!(
                    body.contains("name=\"token\""),
                    "{method} {path}: 401 page must offer the login form"
                );
            } else {
                assert_eq!(ctype, "application/problem+json", "{method} {path}: 401 is {ctype}");
                let problem: Value = serde_json::from_str(&body).expect("a 401 is a problem document");
                assert_eq!(
                    (&problem["type"], &problem["title"], &problem["status"]),
                    (&json!("about:blank"), &json!("Unauthorized"), &json!(401)),
                    "{method} {path}: {problem}"
                );
                assert!(problem["detail"].as_str().is_some_and(|d| d.contains("admin token")));
            }
        }
        let bearer = format!("Bearer {ADMIN_TOKEN}");
        let (status, _, body) = raw(url, method, path, Some(("authorization", &bearer))).await;
        assert_ne!(status, 401, "{method} {path} refuses the right token: {body}");
    }

    let admin = stack.bridge.admin();
    let bad_gets = [
        ("/admin/events?status=bogus", "unknown status"),
        ("/admin/events?colour=red", "unknown field"),
        ("/admin/events?since=yesterday", "RFC 3339"),
        ("/admin/events?since=-5", "RFC 3339"),
        ("/admin/events?cursor=abc", "invalid query"),
        ("/admin/events?limit=0", "limit"),
        ("/admin/events?limit=100000", "limit"),
        ("/admin/events?record=BAD!id", "not a record id"),
        ("/admin/events?record=users/abc", "unknown collection"),
        ("/admin/events?source=carrier-pigeon", "unknown source"),
        ("/admin/events?collection=users", "unknown collection"),
        ("/admin/events/abc", "not a number"),
        ("/admin/jobs?state=nope", "unknown job state"),
        ("/admin/jobs?limit=0", "limit"),
        ("/admin/instances/NOT_AN_ID", "not a record id"),
    ];
    for (path, needle) in bad_gets {
        let (status, body) = admin.get(path).await;
        assert_eq!(status, 400, "GET {path}: {body}");
        assert_eq!(body["status"], 400, "GET {path}: {body}");
        let msg = body["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("GET {path}: error is not a problem document: {body}"));
        assert!(msg.contains(needle), "GET {path}: {msg:?} should mention {needle:?}");
    }
    let bad_replays = [
        (json!({}), "exactly one"),
        (json!({"failed": true, "record": "bot_instances/abc"}), "exactly one"),
        (
            json!({"event_ids": [1], "since": "2026-01-01T00:00:00Z"}),
            "exactly one",
        ),
        (json!({"record": "nope"}), "must look like"),
        (json!({"record": "users/abc"}), "unknown collection"),
        (json!({"record": "bot_instances/ABC"}), "not a PocketBase id"),
        (json!({"since": "last tuesday"}), "RFC 3339"),
        (json!({"event_ids": [-1]}), "positive"),
        (json!({"event_ids": []}), "positive"),
        (json!({"failed": true, "bogus": 1}), "unknown field"),
        (json!({"event_ids": "1,2"}), "invalid JSON body"),
    ];
    for (body, needle) in bad_replays {
        let (status, answer) = admin.send(Method::POST, "/admin/replay", body.clone()).await;
        assert_eq!(status, 400, "replay {body}: {answer}");
        assert_eq!(answer["status"], 400, "replay {body}: {answer}");
        let msg = answer["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("replay {body}: error is not a problem document: {answer}"));
        assert!(msg.contains(needle), "replay {body}: {msg:?} should mention {needle:?}");
    }
    let resp = admin
        .http
        .post(format!("{url}/admin/replay"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("replay with broken JSON");
    assert_eq!(resp.status().as_u16(), 400);
    let answer: Value = resp.json().await.expect("JSON error for a broken body");
    assert!(
        answer["detail"]
            .as_str()
            .is_some_and(|m| m.contains("invalid JSON body")),
        "{answer}"
    );

    for path in ["/admin/events/999999", "/admin/instances/abc", "/admin/no-such-route"] {
        let (status, body) = admin.get(path).await;
        assert_eq!(
            (status, &body["status"], &body["instance"]),
            (404, &json!(404), &json!(path)),
            "{body}"
        );
    }

    // The good forms of the same calls are accepted.
    for path in [
        "/admin/events?status=done&source=realtime&collection=tenants&since=2026-01-01T00:00:00Z&limit=5",
        "/admin/jobs?state=failed,dead&limit=5",
    ] {
        let (status, body) = admin.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
    }
}

fn scrape(text: &str) -> promtext::Exposition {
    promtext::parse(text).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_job_replays_through_api_and_cli_and_metrics_move() {
    let mut stack = World::start(SIM_QUICK, &[("CF_BRIDGE__QUEUE__MAX_ATTEMPTS", "2")]).await;
    let tenant = stack.user_tenant("ops@test.local", "ops-test", "business").await;
    let admin = stack.bridge.admin();
    let before = scrape(&stack.bridge.admin().metrics().await);
    let t = Duration::from_secs(40);

    // Through the API, by event id.
    stack
        .sim
        .set_fault(json!({"route": "POST /services", "error_rate": 1.0}))
        .await;
    let a = stack
        .create_instance(&tenant, "base-llm", "replay-api", "running")
        .await;
    let job = stack.bridge.admin().wait_dead_job(&a, t).await;
    assert!(
        job["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "a failed job says why: {job}"
    );
    assert!(
        stack.services_for(&a).await.is_empty(),
        "the fault let a service through"
    );
    stack.sim.clear_faults().await;
    let (_, events) = admin.get(&format!("/admin/events?record=bot_instances/{a}")).await;
    // The newest events may be echoes of the bridge's own writes, settled without a job: take the
    // newest one that belongs to the failed job.
    let event_id = events["events"]
        .as_array()
        .and_then(|all| all.iter().find(|e| e["job_id"].is_i64()))
        .and_then(|e| e["id"].as_i64())
        .unwrap_or_else(|| panic!("no event with a job for {a}: {events}"));
    let (status, detail) = admin.get(&format!("/admin/events/{event_id}")).await;
    assert_eq!(status, 200, "{detail}");
    assert!(
        detail["attempts"].as_array().is_some_and(|a| a.len() >= 2),
        "attempts of the failed job: {detail}"
    );
    let (status, answer) = admin
        .send(Method::POST, "/admin/replay", json!({"event_ids": [event_id]}))
        .await;
    assert_eq!((status, answer["enqueued"].as_u64()), (200, Some(1)), "{answer}");
    stack.wait_status(&a, "running", t).await;
    assert_eq!(stack.services_for(&a).await.len(), 1, "exactly one service for {a}");

    // Through the CLI, every failed job.
    stack
        .sim
        .set_fault(json!({"route": "POST /services", "error_rate": 1.0}))
        .await;
    let b = stack
        .create_instance(&tenant, "base-llm", "replay-cli", "running")
        .await;
    stack.bridge.admin().wait_dead_job(&b, t).await;
    stack.sim.clear_faults().await;
    let out = stack.cli(crate::bridge_bin(), &["replay", "--failed"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "replay --failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("enqueued"), "{stdout}");
    stack.wait_status(&b, "running", t).await;
    assert_eq!(stack.services_for(&b).await.len(), 1, "exactly one service for {b}");
    let (_, jobs) = admin.get("/admin/jobs?state=failed,dead,waiting").await;
    assert!(
        jobs["jobs"]
            .as_array()
            .is_some_and(|j| j.iter().all(|j| j["record_id"] != a && j["record_id"] != b)),
        "{jobs}"
    );

    // The CLI lists the record's events, the replay among them.
    let out = stack.cli(
        crate::bridge_bin(),
        &[
            "events",
            "list",
            "--record",
            &format!("bot_instances/{b}"),
            "--source",
            "replay",
        ],
    );
    assert!(
        out.status.success(),
        "events list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).expect("events list prints JSON");
    assert!(listed["events"].as_array().is_some_and(|e| !e.is_empty()), "{listed}");
    let bad = stack.cli(crate::bridge_bin(), &["events", "list", "--status", "bogus"]);
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("unknown status"));

    // The instance view joins PocketBase, Coolify and the journal.
    let (status, view) = admin.get(&format!("/admin/instances/{b}")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "running", "{view}");
    assert!(
        view["coolify"]["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("running")),
        "{view}"
    );
    assert!(
        view["recent_events"].as_array().is_some_and(|e| !e.is_empty()),
        "{view}"
    );

    // A resync through the CLI stamps the last-resync gauge.
    let out = stack.cli(crate::bridge_bin(), &["resync"]);
    assert!(out.status.success(), "resync: {}", String::from_utf8_lossy(&out.stderr));
    let after = eventually(Duration::from_secs(20), "metrics after the replays", || async {
        let m = scrape(&stack.bridge.admin().metrics().await);
        let settled = m
            .get("cf_bridge_last_resync_timestamp_seconds", &[])
            .is_some_and(|v| v > 0.0)
            && m.get("cf_bridge_jobs", &[("state", "succeeded")])
                .is_some_and(|v| v >= 3.0);
        settled.then_some(m)
    })
    .await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.get(name, labels).unwrap_or(0.0) - before.get(name, labels).unwrap_or(0.0)
    };
    assert!(
        delta("cf_bridge_events_received_total", &[("source", "realtime")]) >= 3.0,
        "tenant + 2 instances"
    );
    assert!(delta("cf_bridge_events_received_total", &[("source", "replay")]) >= 2.0);
    assert!(
        delta(
            "cf_bridge_coolify_requests_total",
            &[("endpoint", "POST /services"), ("status", "500")]
        ) >= 4.0,
        "{:?}",
        after
            .samples
            .iter()
            .filter(|((n, _), _)| n.contains("coolify_requests"))
            .collect::<Vec<_>>()
    );
    assert!(
        delta(
            "cf_bridge_coolify_requests_total",
            &[("endpoint", "POST /services"), ("status", "201")]
        ) >= 2.0
    );
    assert!(
        after.sum("cf_bridge_reconcile_duration_seconds_count")
            - before.sum("cf_bridge_reconcile_duration_seconds_count")
            >= 6.0
    );
    assert!(
        after
            .get(
                "cf_bridge_reconcile_duration_seconds_count",
                &[("collection", "bot_instances"), ("outcome", "retry")]
            )
            .is_some()
    );
    assert!(
        after
            .get("cf_bridge_realtime_reconnects_total", &[])
            .is_some_and(|v| v >= 1.0)
    );
    assert_eq!(after.get("cf_bridge_realtime_connected", &[]), Some(1.0));
    assert!(
        after
            .get("cf_bridge_coolify_budget_remaining", &[])
            .is_some_and(|v| v > 0.0)
    );
    assert!(after.sum("cf_bridge_event_to_first_action_seconds_count") >= 2.0);
    assert_eq!(
        after.types.get("cf_bridge_events_received_total").map(String::as_str),
        Some("counter")
    );
    assert_eq!(
        after
            .types
            .get("cf_bridge_reconcile_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );

    // Ready while everything is up; the simulator going away shows as "coolify" in the body, and the
    // replica stays ready (it still takes and keeps events).
    let client = cf_testkit::http();
    let readyz = |client: reqwest::Client, url: String| async move {
        let r = client.get(format!("{url}/readyz")).send().await.expect("GET /readyz");
        let s = r.status().as_u16();
        (s, r.json::<Value>().await.unwrap_or(Value::Null))
    };
    let url = stack.bridge.url.clone();
    let (status, body) = readyz(client.clone(), url.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["dependencies"]["coolify"]["up"], true, "{body}");
    stack.sim.stop();
    let body = eventually(Duration::from_secs(30), "/readyz to report coolify down", || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let (status, body) = readyz(client, url).await;
            (status == 200 && body["dependencies"]["coolify"]["up"] == false).then_some(body)
        }
    })
    .await;
    assert_eq!(body["dependencies"]["pocketbase"]["up"], true, "{body}");
    assert_eq!(
        scrape(&stack.bridge.admin().metrics().await).get("cf_bridge_dependency_up", &[("dependency", "coolify")]),
        Some(0.0)
    );
}
