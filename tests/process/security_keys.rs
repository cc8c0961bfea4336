//! Keys (issue 14, item 1): a change of the bridge key (`secrets.key`) keeps the secret store readable
//! and pushes every stack's new hash and router key. The bridge runs as a process: it is stopped, the
//! CLI works on its files, and it starts again under another key (the event fingerprint key is
//! process-wide, see src/events.rs). Router key rotation and the store's own rules are in
//! tests/it/security_keys.rs.

use std::time::Duration;

use cf_bridge::secrets::{SecretBytes, router_verify_key, verify_router_key};
use cf_testkit::world::{SIM_QUICK, World};
use cf_testkit::{BridgeProcess, SECRETS_KEY, cli};
use secrecy::ExposeSecret;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(40);
const NEW_KEY: &str = "rotated-secrets-key-0123456789abcdef0123";
const CANARY: &str = "333:CANARY-kept-across-key-change";

fn bytes(key: &str) -> SecretBytes {
    SecretBytes::from(key.as_bytes().to_vec())
}

async fn replay_events(stack: &World<BridgeProcess>, id: &str) -> usize {
    let (status, events) = stack
        .bridge
        .admin()
        .get(&format!("/admin/events?record={id}&source=replay"))
        .await;
    assert_eq!(status, 200, "{events}");
    events["events"].as_array().map(Vec::len).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_bridge_key_keeps_the_store_readable_and_pushes_new_hashes_and_router_keys() {
    let mut stack = World::start_process(crate::bridge_bin(), SIM_QUICK, &[]).await;
    let tenant = stack.create_tenant("rekey", "team").await;
    let id = stack
        .create_instance_with(&tenant, "telegram-bot", "rekey", json!({}))
        .await;
    let (status, body) = stack
        .bridge
        .admin()
        .put_secrets(&id, json!({"TELEGRAM_BOT_TOKEN": CANARY}))
        .await;
    assert_eq!(status, 202, "{body}");
    let before = stack.wait_status(&id, "running", WAIT).await;
    let key_before = stack.sim_envs(&id).await["CLOUDFREEDOM_API_KEY"].0.clone();
    let replays_before = replay_events(&stack, &id).await;
    assert!(stack.bridge.terminate(), "the bridge stops cleanly");

    let dir = stack.bridge.dir.clone();
    // The new key alone cannot open the store: refused, naming the fix, and nothing is changed.
    let file_before = std::fs::read(dir.join("secrets.bin")).expect("store file");
    let only_new = stack.settings().clone().with(&[("CF_BRIDGE__SECRETS__KEY", NEW_KEY)]);
    let (ok, out, err) = cli::run_with_env(crate::bridge_bin(), &["secrets", "rekey"], only_new.env());
    assert!(!ok, "{out}");
    assert!(err.contains("secrets.previous_keys"), "{err}");
    assert_eq!(std::fs::read(dir.join("secrets.bin")).expect("store"), file_before);

    // With the old key listed as previous, the bridge starts, re-encrypts the store and pushes the new
    // hash and router key to the stack by itself; the secret's value is unchanged.
    let with_previous = stack.settings().clone().with(&[
        ("CF_BRIDGE__SECRETS__KEY", NEW_KEY),
        ("CF_BRIDGE__SECRETS__PREVIOUS_KEYS", SECRETS_KEY),
    ]);
    let bridge = BridgeProcess::start(crate::bridge_bin(), &with_previous).await;
    let first_bridge = std::mem::replace(&mut stack.bridge, bridge);
    // The bridge queued the instance itself because the key changed (not waiting for a change of the record).
    assert_eq!(replay_events(&stack, &id).await, replays_before + 1);
    let after = stack
        .wait_record("bot_instances", &id, "the new secrets hash", WAIT, |r| {
            r["status"] == "running" && r["secrets_hash"] != before["secrets_hash"]
        })
        .await;
    let envs = stack.sim_envs(&id).await;
    assert_eq!(envs["TELEGRAM_BOT_TOKEN"].0, CANARY);
    let key_after = &envs["CLOUDFREEDOM_API_KEY"].0;
    assert_ne!(key_after, &key_before);
    let claims = verify_router_key(router_verify_key(&bytes(NEW_KEY)).expose_secret(), key_after).expect("new key");
    assert_eq!(after["router_key_id"], claims.key_id.as_str());
    assert!(
        verify_router_key(router_verify_key(&bytes(SECRETS_KEY)).expose_secret(), key_after).is_none(),
        "the old verify key does not accept the new stack key"
    );

    // The store is now under the new key alone.
    let (ok, out, err) = cli::run_with_env(crate::bridge_bin(), &["secrets", "rekey"], only_new.env());
    assert!(ok, "{out}{err}");
    assert!(out.contains("1 entries, 0 re-encrypted"), "{out}");
    assert!(!format!("{out}{err}{}", stack.bridge.log()).contains("CANARY"));
    drop(first_bridge);
}
