//! A change to a config key whose name looks secret is a change (issue 14, item 2). Such keys are stripped
//! before an event is stored, but what the change asks for is fingerprinted from the whole record first,
//! so rotating `OPENAI_API_KEY` or `DISCORD_TOKEN` in `config` reaches Coolify instead of being settled as
//! an echo of the bridge's own write. Real PocketBase, coolify-sim and the bridge in the test process.

use std::time::Duration;

use cf_testkit::world::{SIM_FAST, World, text};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
/// Resync only when asked: the realtime stream is the path under test.
const NO_RESYNC: (&str, &str) = ("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "3600");

async fn compose(w: &World, id: &str) -> String {
    let r = w.record("bot_instances", id).await;
    match w.sim.service(text(&r, "coolify_service_id")).await {
        Some(svc) => svc["compose"].as_str().unwrap_or_default().to_string(),
        None => String::new(),
    }
}

async fn wait_compose(w: &World, id: &str, what: &str, wanted: &str) {
    w.wait(what, WAIT, || async {
        let c = compose(w, id).await;
        (c.contains(wanted) && w.record("bot_instances", id).await["status"] == "running").then_some(())
    })
    .await;
}

/// A running telegram-bot instance with `config`; its template needs a secret, which is given.
async fn bot(w: &World, tenant: &str, subdomain: &str, config: Value) -> String {
    let mut body = w.instance_body(tenant, "telegram-bot", subdomain, "running");
    body["config"] = config;
    let id = w.pb.create_instance(body).await["id"].as_str().expect("id").to_string();
    let (status, answer) = w
        .bridge
        .admin()
        .put_secrets(&id, json!({"TELEGRAM_BOT_TOKEN": "1:bot-token"}))
        .await;
    assert_eq!(status, 202, "{answer}");
    id
}

async fn set_config(w: &World, id: &str, config: Value) {
    w.pb.patch("bot_instances", id, json!({"config": config})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_only_a_secret_looking_config_key_reaches_coolify() {
    let w = World::start(SIM_FAST, &[NO_RESYNC]).await;
    let tenant = w.create_tenant("rotating", "business").await;
    w.wait_record("tenants", &tenant, "project", WAIT, |r| {
        !text(r, "coolify_project_uuid").is_empty()
    })
    .await;
    let config = json!({"OPENAI_API_KEY": "sk-first-1111", "DISCORD_TOKEN": "discord-first"});
    let id = bot(&w, &tenant, "rotating", config).await;
    wait_compose(&w, &id, "the first key in Coolify", "sk-first-1111").await;

    set_config(
        &w,
        &id,
        json!({"OPENAI_API_KEY": "sk-second-2222", "DISCORD_TOKEN": "discord-first"}),
    )
    .await;
    wait_compose(&w, &id, "the rotated OPENAI_API_KEY in Coolify", "sk-second-2222").await;
    set_config(
        &w,
        &id,
        json!({"OPENAI_API_KEY": "sk-second-2222", "DISCORD_TOKEN": "discord-second"}),
    )
    .await;
    wait_compose(&w, &id, "the rotated DISCORD_TOKEN in Coolify", "discord-second").await;
    assert!(
        !compose(&w, &id).await.contains("sk-first-1111"),
        "the old key is still live"
    );

    // The values never reached the journal; only a hash of what the change asks for did.
    let (status, events) = w
        .bridge
        .admin()
        .get(&format!("/admin/events?record={id}&limit=500"))
        .await;
    assert_eq!(status, 200);
    let shown = events.to_string();
    assert!(
        !shown.contains("sk-second") && !shown.contains("discord-second"),
        "a config secret reached the journal: {shown}"
    );
    let journal = std::fs::read(w.bridge.dir.join("journal.db")).expect("journal file");
    assert!(!String::from_utf8_lossy(&journal).contains("sk-second-2222"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_applies_a_secret_looking_config_change_made_while_the_bridge_was_away() {
    let mut w = World::start(SIM_FAST, &[NO_RESYNC]).await;
    let tenant = w.create_tenant("away", "business").await;
    w.wait_record("tenants", &tenant, "project", WAIT, |r| {
        !text(r, "coolify_project_uuid").is_empty()
    })
    .await;
    let id = bot(&w, &tenant, "away", json!({"MY_TOKEN": "token-before"})).await;
    wait_compose(&w, &id, "the first token in Coolify", "token-before").await;
    // Let the bridge's own write-backs (and their echoes) settle before it goes away.
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert!(w.bridge.stop().await, "the bridge stops cleanly");
    set_config(&w, &id, json!({"MY_TOKEN": "token-after"})).await;
    w.bridge.start_again().await;
    // The resync after the realtime connect finds the record changed.
    wait_compose(&w, &id, "the new token in Coolify after the resync", "token-after").await;

    // And an operator's resync after such a change leaves it applied.
    set_config(&w, &id, json!({"MY_TOKEN": "token-third"})).await;
    let (status, _) = w
        .bridge
        .admin()
        .send(reqwest::Method::POST, "/admin/resync", json!(null))
        .await;
    assert_eq!(status, 202);
    wait_compose(&w, &id, "the third token in Coolify", "token-third").await;
}
