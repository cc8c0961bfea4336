//! Keys (issue 14, item 1): one stack's router key rotates without touching any other; a change of the
//! bridge key (`secrets.key`) keeps the secret store readable and pushes every stack's new hash and router
//! key; store entries are bound to their record's incarnation.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cf_bridge::incarnation;
use cf_bridge::secrets::{SecretBytes, SecretStore, SecretsError, router_verify_key, verify_router_key};
use common::bridge::{BridgeProcess, SECRETS_KEY, repo_root};
use common::secrets_stack::{self, cli_env, run_cli};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);
const NEW_KEY: &str = "rotated-secrets-key-0123456789abcdef0123";
const CANARY: &str = "333:CANARY-kept-across-key-change";

fn bytes(key: &str) -> SecretBytes {
    SecretBytes::from(key.as_bytes().to_vec())
}

fn map(entries: &[(&str, &str)]) -> BTreeMap<String, SecretString> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), SecretString::from(v.to_string())))
        .collect()
}

fn env_value(svc: &Value, key: &str) -> Option<String> {
    svc["envs"]
        .as_array()?
        .iter()
        .find(|e| e["key"] == key)
        .and_then(|e| e["value"].as_str())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stack_router_key_rotates_without_touching_the_others() {
    let stack = common::admin::Stack::start(&[]).await;
    let a = stack.create_instance("rotate-a").await;
    let b = stack.create_instance("rotate-b").await;
    let ra = stack.wait_status(&a, "running", WAIT).await;
    let rb = stack.wait_status(&b, "running", WAIT).await;
    let service = async |id: &str| stack.services_for(id).await.into_iter().next().expect("service");
    let key_a = env_value(&service(&a).await, "CLOUDFREEDOM_API_KEY").expect("key a");
    let key_b = env_value(&service(&b).await, "CLOUDFREEDOM_API_KEY").expect("key b");
    let uuid_b = rb["coolify_service_id"].as_str().expect("uuid b").to_string();
    stack.sim().clear_requests().await;

    let out = stack.cli(&["rotate-router-key", &a]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !stdout.contains("cfk_"),
        "the CLI shows the key id, never the key: {stdout}"
    );
    let verify = router_verify_key(&bytes(SECRETS_KEY));
    let rotated = common::bridge::eventually(WAIT, "a's new key in Coolify and PocketBase", || async {
        let r = stack.instance(&a).await;
        let key = env_value(&service(&a).await, "CLOUDFREEDOM_API_KEY")?;
        let claims = verify_router_key(verify.expose_secret(), &key)?;
        (key != key_a && r["status"] == "running" && r["router_key_id"] == claims.key_id.as_str()).then_some(claims)
    })
    .await;
    assert_eq!(
        (rotated.tenant_id.as_str(), rotated.instance_id.as_str()),
        (stack.tenant.as_str(), a.as_str())
    );
    assert_ne!(ra["router_key_id"], rotated.key_id.as_str());
    let old = verify_router_key(verify.expose_secret(), &key_a).expect("the old key is genuine");
    assert_ne!(
        old.key_id, rotated.key_id,
        "so a router that compares key ids refuses it"
    );

    // b was not touched: same key, same key id, no call about its service.
    assert_eq!(
        env_value(&service(&b).await, "CLOUDFREEDOM_API_KEY").as_deref(),
        Some(key_b.as_str())
    );
    assert_eq!(stack.instance(&b).await["router_key_id"], rb["router_key_id"]);
    let touched: Vec<Value> = stack
        .sim()
        .requests()
        .await
        .into_iter()
        .filter(|r| r["method"] != "GET" && r["uri"].as_str().is_some_and(|u| u.contains(&uuid_b)))
        .collect();
    assert!(touched.is_empty(), "b's service was changed: {touched:?}");

    // The admin API does the same for b, answering the key id only.
    let admin = stack.bridge.admin();
    let (status, body) = admin
        .send(
            Method::POST,
            &format!("/admin/instances/{b}/rotate-router-key"),
            json!(null),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let key_id = body["router_key_id"].as_str().expect("key id").to_string();
    assert!(
        key_id.len() == 32 && key_id.bytes().all(|c| c.is_ascii_hexdigit()),
        "{body}"
    );
    assert!(!body.to_string().contains("cfk_"), "{body}");
    common::bridge::eventually(WAIT, "b's new key", || async {
        (stack.instance(&b).await["router_key_id"] == key_id.as_str()
            && env_value(&service(&b).await, "CLOUDFREEDOM_API_KEY").is_some_and(|k| k != key_b))
        .then_some(())
    })
    .await;
    let (status, _) = admin
        .send(
            Method::POST,
            "/admin/instances/nosuchinstance1/rotate-router-key",
            json!(null),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = admin
        .send(Method::POST, "/admin/instances/BAD!/rotate-router-key", json!(null))
        .await;
    assert_eq!(status, 400);
}

async fn replay_events(stack: &secrets_stack::Stack, id: &str) -> usize {
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
    let mut stack = secrets_stack::Stack::start().await;
    let tenant = stack.tenant("rekey", "team").await;
    let id = stack.instance(&tenant, "telegram-bot", "rekey", json!({})).await;
    let (status, body) = stack
        .bridge
        .admin()
        .send(
            Method::PUT,
            &format!("/admin/instances/{id}/secrets"),
            json!({"TELEGRAM_BOT_TOKEN": CANARY}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let before = stack.wait_status(&id, "running", WAIT).await;
    let key_before = stack.sim_envs(&id).await["CLOUDFREEDOM_API_KEY"].0.clone();
    let replays_before = replay_events(&stack, &id).await;
    assert!(stack.bridge.terminate(), "the bridge stops cleanly");

    let dir = stack.bridge.dir.clone();
    let store = dir.join("secrets.bin").display().to_string();
    let pb = (
        stack.pb.url.as_str(),
        stack.pb.email.as_str(),
        stack.pb.password.as_str(),
    );
    let templates = repo_root().join("templates");
    // The new key alone cannot open the store: refused, naming the fix, and nothing is changed.
    let file_before = std::fs::read(dir.join("secrets.bin")).expect("store file");
    let only_new = cli_env(
        pb,
        &templates,
        &[
            ("CF_BRIDGE__SECRETS__KEY", NEW_KEY),
            ("CF_BRIDGE__SECRETS__STORE_PATH", &store),
        ],
    );
    let (ok, out, err) = run_cli(&["secrets", "rekey"], &only_new);
    assert!(!ok, "{out}");
    assert!(err.contains("secrets.previous_keys"), "{err}");
    assert_eq!(std::fs::read(dir.join("secrets.bin")).expect("store"), file_before);

    // With the old key listed as previous, the bridge starts, re-encrypts the store and pushes the new
    // hash and router key to the stack by itself; the secret's value is unchanged.
    let journal = dir.join("journal.db").display().to_string();
    let bridge = BridgeProcess::start(
        &stack.pb.url,
        &stack.pb.email,
        &stack.pb.password,
        &stack.sim.url,
        &stack.sim.token,
        &[
            ("CF_BRIDGE__JOURNAL__PATH", &journal),
            ("CF_BRIDGE__SECRETS__STORE_PATH", &store),
            ("CF_BRIDGE__SECRETS__KEY", NEW_KEY),
            ("CF_BRIDGE__SECRETS__PREVIOUS_KEYS", SECRETS_KEY),
        ],
    )
    .await;
    let first_bridge = std::mem::replace(&mut stack.bridge, bridge);
    // The bridge queued the instance itself because the key changed (not waiting for a change of the record).
    assert_eq!(replay_events(&stack, &id).await, replays_before + 1);
    let after = stack
        .wait_instance(&id, "the new secrets hash", WAIT, |r| {
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
    let (ok, out, err) = run_cli(&["secrets", "rekey"], &only_new);
    assert!(ok, "{out}{err}");
    assert!(out.contains("1 entries, 0 re-encrypted"), "{out}");
    assert!(!format!("{out}{err}{}", stack.bridge.log()).contains("CANARY"));
    drop(first_bridge);
}

#[test]
fn previous_keys_reencrypt_the_store_and_other_keys_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.json");
    let life = incarnation::tag("inst1", "t1", "2026-01-01 00:00:00.000Z");
    let old = SecretStore::open(&path, &bytes(SECRETS_KEY)).expect("open");
    old.put("inst1", &life, &map(&[("TOKEN", "v1")])).expect("put");
    drop(old);

    let err = SecretStore::open(&path, &bytes(NEW_KEY)).expect_err("old entries, new key");
    assert!(matches!(err, SecretsError::Unreadable { count: 1, .. }), "{err}");
    assert!(err.to_string().contains("inst1") && err.to_string().contains("secrets.previous_keys"));

    let store = SecretStore::open_with(
        &path,
        &bytes(NEW_KEY),
        &[bytes("unrelated-key-xxxxxxxxxxxxxxxxxxxxx"), bytes(SECRETS_KEY)],
    )
    .expect("open with the previous key");
    assert_eq!(store.rekeyed(), 1);
    assert_eq!(
        store.get("inst1", &life).expect("get").expect("present")["TOKEN"].expose_secret(),
        "v1"
    );
    drop(store);
    let again = SecretStore::open(&path, &bytes(NEW_KEY)).expect("the new key alone now");
    assert_eq!(again.rekeyed(), 0);
    assert!(
        SecretStore::open(&path, &bytes(SECRETS_KEY)).is_err(),
        "the old key no longer opens it"
    );
}

#[test]
fn store_entries_belong_to_one_incarnation_of_their_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.json");
    let first = incarnation::tag("inst1", "t1", "2026-01-01 00:00:00.000Z");
    let later = incarnation::tag("inst1", "t2", "2026-02-01 00:00:00.000Z");
    let store = SecretStore::open(&path, &bytes(SECRETS_KEY)).expect("open");
    store
        .put("inst1", &first, &map(&[("TOKEN", "first-owner")]))
        .expect("put");
    assert!(
        store.get("inst1", &later).expect("get").is_none(),
        "another life gets nothing"
    );
    assert!(
        store.instance_ids().is_empty(),
        "and the earlier life's secrets are deleted"
    );
    assert!(store.get("inst1", &first).expect("get").is_none());

    // An entry moved by hand to another incarnation's label does not decrypt.
    store.put("inst1", &first, &map(&[("TOKEN", "v")])).expect("put");
    let mut file: Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    file["entries"]["inst1"]["incarnation"] = json!(later);
    std::fs::write(&path, serde_json::to_vec(&file).expect("ser")).expect("write");
    assert!(matches!(
        SecretStore::open(&path, &bytes(SECRETS_KEY)),
        Err(SecretsError::Unreadable { .. })
    ));
}

/// Writes a store file as versions before incarnations did: entries bound to the instance id only.
fn write_v1_store(path: &std::path::Path, key: &str, id: &str, plaintext: &[u8]) {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    use hmac::Mac as _;
    let mut m = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(key.as_bytes()).expect("hmac");
    m.update(b"cf-bridge/v1/secret-store-key\0");
    let cipher = chacha20poly1305::ChaCha20Poly1305::new_from_slice(&m.finalize().into_bytes()).expect("key");
    let nonce = [7u8; 12];
    let aad = [b"cf-bridge/v1/secret-store-entry\0".as_slice(), id.as_bytes()].concat();
    let ciphertext = cipher
        .encrypt(
            chacha20poly1305::Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("encrypt");
    let file = json!({"version": 1, "entries": {id: {"nonce": STANDARD.encode(nonce), "ciphertext": STANDARD.encode(ciphertext)}}});
    std::fs::write(path, serde_json::to_vec(&file).expect("ser")).expect("write");
}

#[test]
fn entries_from_before_incarnations_are_adopted_by_the_live_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.json");
    write_v1_store(&path, SECRETS_KEY, "inst1", br#"{"TOKEN":"legacy"}"#);
    let life = incarnation::tag("inst1", "t1", "2026-01-01 00:00:00.000Z");
    let store = SecretStore::open(&path, &bytes(SECRETS_KEY)).expect("a version 1 store opens");
    assert_eq!(
        store.get("inst1", &life).expect("get").expect("adopted")["TOKEN"].expose_secret(),
        "legacy"
    );
    let file: Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    assert_eq!(file["version"], 2);
    assert_eq!(
        file["entries"]["inst1"]["incarnation"],
        life.as_str(),
        "bound from now on"
    );
    let later = incarnation::tag("inst1", "t2", "2026-02-01 00:00:00.000Z");
    assert!(store.get("inst1", &later).expect("get").is_none());
}
