//! Bridges built in the test process keep to themselves: each counts in its own metrics registry.

use cf_bridge::webhook::WebhookSecret;
use cf_testkit::world::SIM_QUICK;
use cf_testkit::{TestBridge, TestPb, TestSim, WEBHOOK_SECRET, http};
use serde_json::json;

const WEBHOOKS: &str = "cf_bridge_events_received_total{source=\"webhook\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bridges_in_one_process_count_apart() {
    let pb = TestPb::start().await;
    let sim = TestSim::start(SIM_QUICK);
    let a = TestBridge::for_stack((&pb).into(), &sim, &[]).await;
    let b = TestBridge::for_stack((&pb).into(), &sim, &[]).await;

    let secret: WebhookSecret = WEBHOOK_SECRET.parse().expect("test webhook secret");
    let body = json!({"event": "update", "collection": "tenants",
                      "record": {"id": "apart1", "updated": "2026-01-01 00:00:00.000Z"}})
    .to_string();
    let ts = chrono::Utc::now().timestamp().to_string();
    let resp = http()
        .post(format!("{}/hooks/pocketbase", a.url))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_apart_1")
        .header("webhook-timestamp", &ts)
        .header("webhook-signature", secret.sign("msg_apart_1", &ts, body.as_bytes()))
        .body(body)
        .send()
        .await
        .expect("webhook");
    assert_eq!(resp.status().as_u16(), 202);

    assert_eq!(
        a.admin().metric(WEBHOOKS).await,
        1.0,
        "the bridge that took it counts it"
    );
    assert_eq!(b.admin().metric(WEBHOOKS).await, 0.0, "the other bridge does not");
}
