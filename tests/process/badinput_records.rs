//! Hostile record fields through a real PocketBase (project schema and hooks) and a running bridge:
//! what PocketBase's schema refuses is shown refused; what it lets through must end `error` with a
//! clear message and nothing in Coolify. Also hostile admin API bodies (400 JSON, no panic).

use std::time::Duration;

use cf_testkit::{ADMIN_TOKEN, eventually};

use crate::harness::{World, WorldOptions, label};
use serde_json::{Value, json};

async fn service_exists(w: &World, id: &str) -> bool {
    let state = w.sim.state().await;
    state["services"]
        .as_array()
        .is_some_and(|a| a.iter().any(|s| s["name"] == format!("cf-{id}")))
}

/// Creates an instance with `fields` on top of valid ones; returns PocketBase's status and answer.
async fn try_create(w: &World, tenant: &str, n: usize, fields: Value) -> (u16, Value) {
    let mut body = json!({"tenant": tenant, "template": w.template_id, "name": format!("bad {n}"),
                          "subdomain": label("bad", n), "desired_state": "running"});
    for (k, v) in fields.as_object().expect("fields object") {
        body[k] = v.clone();
    }
    let token = w.pb.superuser_token().await;
    w.pb.request_as(&token, "POST", "/api/collections/bot_instances/records", Some(&body))
        .await
}

/// Waits for the instance to read `error` and returns its message.
async fn ends_in_error(w: &World, id: &str) -> String {
    eventually(
        Duration::from_secs(30),
        &format!("instance {id} to end in error"),
        || async {
            let r =
                w.pb.superuser_request("GET", &format!("/api/collections/bot_instances/records/{id}"), None)
                    .await;
            (r["status"] == "error").then(|| r["error_message"].as_str().unwrap_or_default().to_string())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_record_fields() {
    let w = World::start(WorldOptions::default()).await;
    let tenant = w.ops(false).tenant(&label("bad", 0)).await["id"]
        .as_str()
        .expect("tenant id")
        .to_string();

    // PocketBase's schema refuses these outright: the bridge never sees them.
    let huge_config: serde_json::Map<String, Value> = (0..20)
        .map(|i| (format!("K{i}"), Value::from("x".repeat(4000))))
        .collect();
    let refused_by_schema: Vec<(&str, Value, &str)> = vec![
        (
            "subdomain with upper case",
            json!({"subdomain": "Bad-Label"}),
            "subdomain",
        ),
        (
            "subdomain with underscore",
            json!({"subdomain": "bad_label"}),
            "subdomain",
        ),
        ("subdomain with a dot", json!({"subdomain": "a.b"}), "subdomain"),
        ("subdomain starting with -", json!({"subdomain": "-ab"}), "subdomain"),
        (
            "subdomain of 64 chars",
            json!({"subdomain": "a".repeat(64)}),
            "subdomain",
        ),
        ("unicode subdomain", json!({"subdomain": "bücher"}), "subdomain"),
        ("empty subdomain", json!({"subdomain": ""}), "subdomain"),
        ("name of 101 chars", json!({"name": "n".repeat(101)}), "name"),
        ("config over 64 KiB", json!({"config": huge_config}), "config"),
        ("missing tenant", json!({"tenant": "zzzzzzzzzzzzzzz"}), "tenant"),
        ("missing template", json!({"template": "zzzzzzzzzzzzzzz"}), "template"),
        (
            "unknown desired_state",
            json!({"desired_state": "exploded"}),
            "desired_state",
        ),
    ];
    for (n, (what, fields, field)) in refused_by_schema.into_iter().enumerate() {
        let (status, answer) = try_create(&w, &tenant, n, fields).await;
        assert_eq!(status, 400, "{what}: PocketBase answered {status}: {answer}");
        assert!(
            answer["data"][field].is_object(),
            "{what}: PocketBase's error does not name {field}: {answer}"
        );
    }

    // These pass the schema; the bridge must refuse them with a message naming the problem.
    let ghost =
        w.pb.create_template(json!({"name": "ghost-template", "active": true}))
            .await["id"]
            .as_str()
            .expect("template id")
            .to_string();
    let many_keys: serde_json::Map<String, Value> = (0..300).map(|i| (format!("K{i}"), Value::from("v"))).collect();
    let refused_by_bridge: Vec<(&str, Value, &str)> = vec![
        (
            "config array",
            json!({"config": [1, 2, 3]}),
            "config must be a JSON object",
        ),
        (
            "config string",
            json!({"config": "MODEL=x"}),
            "config must be a JSON object",
        ),
        (
            "nested config",
            json!({"config": {"MODEL": {"name": "x"}}}),
            "nested arrays and objects are not supported",
        ),
        (
            "config list value",
            json!({"config": {"MODEL": ["a"]}}),
            "nested arrays and objects are not supported",
        ),
        (
            "config key with a space",
            json!({"config": {"bad key": "x"}}),
            "is invalid",
        ),
        (
            "config key in unicode",
            json!({"config": {"MODÈLE": "x"}}),
            "is invalid",
        ),
        ("300 config keys", json!({"config": many_keys}), "more than"),
        ("template not installed", json!({"template": ghost}), "is not installed"),
    ];
    let mut errored = Vec::new();
    for (n, (what, fields, reason)) in refused_by_bridge.into_iter().enumerate() {
        let (status, rec) = try_create(&w, &tenant, 100 + n, fields).await;
        assert_eq!(
            status, 200,
            "{what}: PocketBase refused it ({rec}); this case is meant to reach the bridge"
        );
        let id = rec["id"].as_str().expect("id").to_string();
        errored.push((what, id, reason));
    }
    for (what, id, reason) in &errored {
        let message = ends_in_error(&w, id).await;
        assert!(
            message.contains(reason),
            "{what}: error_message {message:?} does not say {reason:?}"
        );
        assert!(!service_exists(&w, id).await, "{what}: a Coolify service was created");
    }

    // Unicode and long-but-legal values are not errors: such an instance goes live.
    let (status, rec) = try_create(
        &w,
        &tenant,
        200,
        json!({"name": "Bötchen 🤖 测试 \u{202e}rtl", "config": {"MODEL": "模型-🤖"}}),
    )
    .await;
    assert_eq!(status, 200, "unicode instance refused: {rec}");
    let uni = rec["id"].as_str().expect("id").to_string();
    eventually(Duration::from_secs(40), "the unicode instance to run", || async {
        let r =
            w.pb.superuser_request("GET", &format!("/api/collections/bot_instances/records/{uni}"), None)
                .await;
        (r["status"] == "running").then_some(())
    })
    .await;

    // Fixing a refused record clears its error: the bridge was waiting, not stuck.
    let (_, fixable, _) = &errored[0];
    w.ops(false)
        .patch(
            cf_bridge::events::Collection::BotInstances,
            fixable,
            json!({"config": {}}),
        )
        .await;
    eventually(Duration::from_secs(40), "the fixed instance to run", || async {
        let r =
            w.pb.superuser_request(
                "GET",
                &format!("/api/collections/bot_instances/records/{fixable}"),
                None,
            )
            .await;
        (r["status"] == "running").then_some(())
    })
    .await;
    assert!(w.panics().is_empty(), "bridge panicked: {:?}", w.panics());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_admin_bodies_are_400_json() {
    let w = World::start(WorldOptions::default()).await;
    let http = reqwest::Client::new();
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let big = format!("{{\"record\":\"{}\"}}", "a".repeat(70 * 1024));
    let cases: Vec<(reqwest::Method, &str, String, &str)> = vec![
        (
            reqwest::Method::POST,
            "/admin/replay",
            "not json".into(),
            "invalid JSON body",
        ),
        (
            reqwest::Method::POST,
            "/admin/replay",
            "[1,2]".into(),
            "invalid JSON body",
        ),
        (reqwest::Method::POST, "/admin/replay", deep, "invalid JSON body"),
        (reqwest::Method::POST, "/admin/replay", big, "invalid JSON body"),
        (
            reqwest::Method::POST,
            "/admin/replay",
            r#"{"event_ids":"1"}"#.into(),
            "invalid JSON body",
        ),
        (
            reqwest::Method::POST,
            "/admin/replay",
            r#"{"event_ids":[1],"bogus":1}"#.into(),
            "invalid JSON body",
        ),
        (
            reqwest::Method::POST,
            "/admin/replay",
            r#"{"event_ids":[-1]}"#.into(),
            "positive event ids",
        ),
        (
            reqwest::Method::POST,
            "/admin/replay",
            r#"{"record":"bot_instances/../../x"}"#.into(),
            "not a PocketBase id",
        ),
        (
            reqwest::Method::POST,
            "/admin/replay",
            r#"{"since":"yesterday"}"#.into(),
            "RFC 3339",
        ),
        (
            reqwest::Method::PUT,
            "/admin/instances/abc/secrets",
            r#"{"KEY":1}"#.into(),
            "must be a string",
        ),
        (
            reqwest::Method::PUT,
            "/admin/instances/abc/secrets",
            r#"["KEY"]"#.into(),
            "must be a JSON object",
        ),
        (
            reqwest::Method::PUT,
            "/admin/instances/ABC/secrets",
            r#"{"KEY":"v"}"#.into(),
            "is not a record id",
        ),
    ];
    for (method, path, body, reason) in cases {
        let r = http
            .request(method.clone(), format!("{}{path}", w.bridge.url))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("admin request");
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        let shown = &body[..body.len().min(60)];
        assert_eq!(status, 400, "{method} {path} {shown:?}: {status} {v}");
        let msg = v["detail"].as_str().unwrap_or_default();
        assert!(
            msg.contains(reason),
            "{method} {path} {shown:?}: error {msg:?} does not say {reason:?}"
        );
        assert!(!msg.contains("\"v\""), "the error echoes a secret value: {msg}");
    }
    let (status, _) = w.bridge.admin().get("/admin/jobs").await;
    assert_eq!(status, 200, "the bridge still answers");
    assert!(w.panics().is_empty(), "bridge panicked: {:?}", w.panics());
}
