//! Secrets end to end (real PocketBase, coolify-sim, the bridge in the test process): an instance waits in
//! `pending` for its template's required secrets and deploys when they arrive; new secrets reach a running
//! service in one bulk env call followed by a restart; `secrets_hash` is written back; bad bodies are
//! refused without echoing values. That canary values never show up anywhere but the simulator's env vars
//! (the bridge's output included) is checked against the bridge process, in tests/process/secrets_canary.rs.

use std::time::Duration;

use cf_testkit::world::{SIM_QUICK, World};
use reqwest::Method;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn count(requests: &[Value], template: &str) -> usize {
    requests.iter().filter(|r| r["path"] == template).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_gate_the_deploy_then_rotate_in_one_bulk_call() {
    let stack = World::start(SIM_QUICK, &[]).await;
    let tenant = stack.create_tenant("acme", "team").await;
    let id = stack
        .create_instance_with(&tenant, "telegram-bot", "support", json!({}))
        .await;

    // No secrets yet: pending, naming the missing key, and nothing in Coolify.
    let r = stack
        .wait_record("bot_instances", &id, "pending naming the missing secret", WAIT, |r| {
            r["status"] == "pending"
                && r["pending_reason"]
                    .as_str()
                    .is_some_and(|m| m.contains("TELEGRAM_BOT_TOKEN"))
        })
        .await;
    assert_eq!(r["pending_reason"], "waiting for secrets: TELEGRAM_BOT_TOKEN");
    assert_eq!(r["error_message"], "");
    assert!(
        stack.service_of(&id).await.is_none(),
        "no service may exist before the secrets arrive"
    );

    // They arrive: it deploys, and the hash the API answered is the one written back.
    let (status, body) = stack
        .bridge
        .admin()
        .put_secrets(&id, json!({"TELEGRAM_BOT_TOKEN": "123456:first-token"}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["keys"], json!(["TELEGRAM_BOT_TOKEN"]));
    let first_hash = body["secrets_hash"].as_str().expect("hash").to_string();
    assert!(is_hex64(&first_hash), "{first_hash}");
    let r = stack.wait_status(&id, "running", WAIT).await;
    assert_eq!(r["secrets_hash"], first_hash.as_str());
    assert_eq!(r["error_message"], "");
    let envs = stack.sim_envs(&id).await;
    assert_eq!(
        envs.get("TELEGRAM_BOT_TOKEN"),
        Some(&("123456:first-token".to_string(), false))
    );
    let uuid = r["coolify_service_id"].as_str().expect("service id").to_string();

    // New secrets for the running service: one bulk env call, one restart, the new hash.
    stack.sim.clear_requests().await;
    let dollar = "pa$$word-${HOME}-$1";
    let pem = "-----BEGIN KEY-----\nabc\n-----END KEY-----";
    let (status, body) = stack
        .bridge
        .admin()
        .put_secrets(
            &id,
            json!({"TELEGRAM_BOT_TOKEN": "123456:second-token", "DB_PASSWORD": dollar, "TLS_KEY": pem}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let second_hash = body["secrets_hash"].as_str().expect("hash").to_string();
    assert!(is_hex64(&second_hash) && second_hash != first_hash);
    stack
        .wait_record("bot_instances", &id, "the new secrets_hash, running", WAIT, |r| {
            r["secrets_hash"] == second_hash.as_str() && r["status"] == "running"
        })
        .await;
    let requests = stack.sim.requests().await;
    let bulk: Vec<&Value> = requests
        .iter()
        .filter(|r| r["path"] == "PATCH /services/{uuid}/envs/bulk")
        .collect();
    assert_eq!(bulk.len(), 1, "exactly one bulk env call: {requests:#?}");
    let items = bulk[0]["request"]["data"].as_array().expect("bulk items");
    let item = |k: &str| {
        items
            .iter()
            .find(|i| i["key"] == k)
            .unwrap_or_else(|| panic!("{k} not in the bulk call"))
    };
    assert_eq!(item("TELEGRAM_BOT_TOKEN")["is_literal"], false);
    assert_eq!(
        item("DB_PASSWORD")["is_literal"],
        true,
        "values containing $ are sent literal"
    );
    assert_eq!(item("DB_PASSWORD")["value"], dollar);
    assert_eq!(
        item("TLS_KEY")["is_literal"],
        true,
        "multi-line values are quoted as one .env entry"
    );
    let restarts = count(&requests, "POST /services/{uuid}/restart") + count(&requests, "GET /services/{uuid}/restart");
    assert_eq!(restarts, 1, "the running service is restarted once: {requests:#?}");
    assert_eq!(count(&requests, "POST /services"), 0, "no new service");
    assert_eq!(
        count(&requests, "GET /services/{uuid}/envs"),
        0,
        "the keys pushed before are remembered: no env list"
    );
    let envs = stack.sim_envs(&id).await;
    assert_eq!(
        envs.get("TELEGRAM_BOT_TOKEN"),
        Some(&("123456:second-token".to_string(), false))
    );
    assert_eq!(envs.get("DB_PASSWORD"), Some(&(dollar.to_string(), true)));
    assert_eq!(
        stack.instance(&id).await["coolify_service_id"],
        uuid.as_str(),
        "same service"
    );

    // Secrets dropped from the map are blanked in Coolify, not left live.
    let (status, body) = stack
        .bridge
        .admin()
        .put_secrets(&id, json!({"TELEGRAM_BOT_TOKEN": "123456:third-token"}))
        .await;
    assert_eq!(status, 202, "{body}");
    let third_hash = body["secrets_hash"].as_str().expect("hash").to_string();
    stack
        .wait_record("bot_instances", &id, "the third secrets_hash, running", WAIT, |r| {
            r["secrets_hash"] == third_hash.as_str() && r["status"] == "running"
        })
        .await;
    let envs = stack.sim_envs(&id).await;
    assert_eq!(
        envs.get("TELEGRAM_BOT_TOKEN").map(|v| v.0.as_str()),
        Some("123456:third-token")
    );
    for revoked in ["DB_PASSWORD", "TLS_KEY"] {
        assert_eq!(
            envs.get(revoked).map(|v| v.0.as_str()),
            Some(""),
            "{revoked} must be blanked after removal"
        );
    }

    // Bad bodies: 400 naming the key, never echoing the value; the stored secrets stay as they were.
    let marker = "zq7MARKERvalue93";
    let big = format!("{marker}{}", "x".repeat(20 * 1024));
    let cases: Vec<(Value, &str)> = vec![
        (json!({"API_TOKEN": 918273645}), "API_TOKEN"),
        (json!({"API_TOKEN": {"nested": marker}}), "API_TOKEN"),
        (json!({"API_TOKEN": [marker]}), "API_TOKEN"),
        (json!({"lower-case": marker}), "lower-case"),
        (json!({"BIG_VALUE": big}), "BIG_VALUE"),
        (json!({"PADDED": format!(" {marker} ")}), "PADDED"),
        (json!({"NUL_INSIDE": format!("{marker}\u{0}")}), "NUL_INSIDE"),
        (json!({"CLOUDFREEDOM_API_KEY": marker}), "CLOUDFREEDOM_API_KEY"),
        (json!({"SERVICE_PASSWORD_X": marker}), "SERVICE_PASSWORD_X"),
        (json!({"GOOD": "fine", "BAD KEY": marker}), "BAD KEY"),
    ];
    for (body, key) in cases {
        let (status, answer) = stack.bridge.admin().put_secrets(&id, body.clone()).await;
        let text = answer.to_string();
        assert_eq!(status, 400, "{body:.200}: {text}");
        let msg = answer["detail"].as_str().unwrap_or_default();
        assert!(msg.contains(key), "error must name {key}: {msg}");
        assert!(
            !text.contains(marker) && !text.contains("918273645") && !text.contains("xxxxxxxx"),
            "value echoed: {text}"
        );
    }
    for raw in [
        format!("\"{marker}\""),
        format!("[\"{marker}\"]"),
        format!("{{\"A\": \"{marker}"),
        "12".to_string(),
    ] {
        let (status, text) = stack
            .bridge
            .admin()
            .send_raw(Method::PUT, &format!("/admin/instances/{id}/secrets"), raw.clone())
            .await;
        assert_eq!(status, 400, "{raw}: {text}");
        assert!(!text.contains(marker), "value echoed: {text}");
    }
    let (status, _) = stack
        .bridge
        .admin()
        .put_secrets("nosuchinstance1", json!({"A": "b"}))
        .await;
    assert_eq!(status, 404);
    let (_, view) = stack.bridge.admin().get(&format!("/admin/instances/{id}")).await;
    assert_eq!(view["secrets"]["keys"], json!(["TELEGRAM_BOT_TOKEN"]), "{view}");
    assert_eq!(view["secrets"]["hash"], third_hash.as_str());
}
