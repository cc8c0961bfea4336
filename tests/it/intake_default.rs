//! Issue 17: realtime and resync are the default path, webhooks optional. A bridge without `webhook.secret`
//! beside a PocketBase without the webhook variables provisions an instance end to end, says so in
//! `/readyz`, and refuses a signed webhook with 404 without journaling it.

use std::time::Duration;

use cf_bridge::webhook::WebhookSecret;
use cf_testkit::WEBHOOK_SECRET;
use cf_testkit::world::{SIM_QUICK, World};
use serde_json::{Value, json};

const WEBHOOK_EVENTS: &str = "cf_bridge_events_received_total{source=\"webhook\"}";
const REFUSED_OFF: &str = "cf_bridge_webhook_rejected_total{reason=\"intake_off\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_webhook_secret_realtime_provisions_and_webhooks_are_refused() {
    let stack = World::start_default(SIM_QUICK, &[]).await;
    stack.bridge.admin().wait_subscribed(Duration::from_secs(10)).await;
    let tenant = stack.create_tenant("plain", "business").await;
    let id = stack.create_instance(&tenant, "base-llm", "plain", "running").await;
    let running = stack.wait_status(&id, "running", Duration::from_secs(40)).await;
    assert!(running["coolify_service_id"].as_str().is_some_and(|s| !s.is_empty()));

    let http = cf_testkit::http();
    let ready: Value = http
        .get(format!("{}/readyz", stack.bridge.url))
        .send()
        .await
        .expect("GET /readyz")
        .json()
        .await
        .expect("readyz JSON");
    assert_eq!(ready["intake"], "realtime+resync", "{ready}");

    // A delivery signed with the secret PocketBase would use: refused, nothing journaled.
    let body = json!({"event": "update", "collection": "bot_instances",
        "record": {"id": id, "updated": "2030-01-01 00:00:00.000Z", "name": "forged"}})
    .to_string();
    let secret: WebhookSecret = WEBHOOK_SECRET.parse().expect("secret");
    let ts = chrono::Utc::now().timestamp().to_string();
    let response = http
        .post(format!("{}{}", stack.bridge.url, cf_bridge::http::ingest::PATH))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_default_path")
        .header("webhook-timestamp", &ts)
        .header(
            "webhook-signature",
            secret.sign("msg_default_path", &ts, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .expect("POST the webhook");
    assert_eq!(response.status().as_u16(), 404);
    let answer: Value = response.json().await.expect("JSON error");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("webhook intake is off")),
        "{answer}"
    );
    let admin = stack.bridge.admin();
    assert_eq!(admin.metric(WEBHOOK_EVENTS).await, 0.0);
    assert_eq!(admin.metric(REFUSED_OFF).await, 1.0);
    assert!(
        !admin.events(&id, None).await.is_empty(),
        "realtime journaled the instance"
    );
    assert_eq!(admin.events(&id, Some("webhook")).await, Vec::<Value>::new());
}
