//! Keys (issue 14, item 1), with the bridge in the test process: one stack's router key rotates without
//! touching any other (CLI and admin API); store entries are re-encrypted under a new key and bound to
//! their record's incarnation. A change of the bridge key across a restart is in
//! tests/process/security_keys.rs.

use std::collections::BTreeMap;
use std::time::Duration;

use cf_bridge::incarnation;
use cf_bridge::secrets::{SecretBytes, SecretStore, SecretsError, router_verify_key, verify_router_key};
use cf_testkit::world::{SIM_QUICK, World};
use cf_testkit::{SECRETS_KEY, eventually};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);
const NEW_KEY: &str = "rotated-secrets-key-0123456789abcdef0123";

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
    let stack = World::start(SIM_QUICK, &[]).await;
    let tenant = stack.user_tenant("ops@test.local", "ops-test", "business").await;
    let a = stack.create_instance(&tenant, "base-llm", "rotate-a", "running").await;
    let b = stack.create_instance(&tenant, "base-llm", "rotate-b", "running").await;
    let ra = stack.wait_status(&a, "running", WAIT).await;
    let rb = stack.wait_status(&b, "running", WAIT).await;
    let service = async |id: &str| stack.services_for(id).await.into_iter().next().expect("service");
    let key_a = env_value(&service(&a).await, "CLOUDFREEDOM_API_KEY").expect("key a");
    let key_b = env_value(&service(&b).await, "CLOUDFREEDOM_API_KEY").expect("key b");
    let uuid_b = rb["coolify_service_id"].as_str().expect("uuid b").to_string();
    stack.sim.clear_requests().await;

    let out = stack.cli(crate::bridge_bin(), &["rotate-router-key", &a]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !stdout.contains("cfk_"),
        "the CLI shows the key id, never the key: {stdout}"
    );
    let verify = router_verify_key(&bytes(SECRETS_KEY));
    let rotated = eventually(WAIT, "a's new key in Coolify and PocketBase", || async {
        let r = stack.instance(&a).await;
        let key = env_value(&service(&a).await, "CLOUDFREEDOM_API_KEY")?;
        let claims = verify_router_key(verify.expose_secret(), &key)?;
        (key != key_a && r["status"] == "running" && r["router_key_id"] == claims.key_id.as_str()).then_some(claims)
    })
    .await;
    assert_eq!(
        (rotated.tenant_id.as_str(), rotated.instance_id.as_str()),
        (tenant.as_str(), a.as_str())
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
        .sim
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
    eventually(WAIT, "b's new key", || async {
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

#[tokio::test]
async fn previous_keys_reencrypt_the_store_and_other_keys_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.json");
    let life = incarnation::tag("inst1", "t1", "2026-01-01 00:00:00.000Z");
    let old = SecretStore::open(&path, &bytes(SECRETS_KEY)).expect("open");
    old.put("inst1", &life, &map(&[("TOKEN", "v1")])).await.expect("put");
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
        store.get("inst1", &life).await.expect("get").expect("present")["TOKEN"].expose_secret(),
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

#[tokio::test]
async fn store_entries_belong_to_one_incarnation_of_their_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.json");
    let first = incarnation::tag("inst1", "t1", "2026-01-01 00:00:00.000Z");
    let later = incarnation::tag("inst1", "t2", "2026-02-01 00:00:00.000Z");
    let store = SecretStore::open(&path, &bytes(SECRETS_KEY)).expect("open");
    store
        .put("inst1", &first, &map(&[("TOKEN", "first-owner")]))
        .await
        .expect("put");
    assert!(
        store.get("inst1", &later).await.expect("get").is_none(),
        "another life gets nothing"
    );
    assert!(
        store.instance_ids().await.expect("ids").is_empty(),
        "and the earlier life's secrets are deleted"
    );
    assert!(store.get("inst1", &first).await.expect("get").is_none());

    // An entry moved by hand to another incarnation's label does not decrypt.
    store.put("inst1", &first, &map(&[("TOKEN", "v")])).await.expect("put");
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
    let mut m = <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(key.as_bytes()).expect("hmac");
    m.update(b"cf-bridge/v1/secret-store-key\0");
    let cipher = chacha20poly1305::ChaCha20Poly1305::new_from_slice(&m.finalize().into_bytes()).expect("key");
    let nonce = [7u8; 12];
    let aad = [b"cf-bridge/v1/secret-store-entry\0".as_slice(), id.as_bytes()].concat();
    let ciphertext = cipher
        .encrypt(
            &chacha20poly1305::Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("encrypt");
    let file = json!({"version": 1, "entries": {id: {"nonce": STANDARD.encode(nonce), "ciphertext": STANDARD.encode(ciphertext)}}});
    std::fs::write(path, serde_json::to_vec(&file).expect("ser")).expect("write");
}

#[tokio::test]
async fn entries_from_before_incarnations_are_adopted_by_the_live_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("s.json");
    write_v1_store(&path, SECRETS_KEY, "inst1", br#"{"TOKEN":"legacy"}"#);
    let life = incarnation::tag("inst1", "t1", "2026-01-01 00:00:00.000Z");
    let store = SecretStore::open(&path, &bytes(SECRETS_KEY)).expect("a version 1 store opens");
    assert_eq!(
        store.get("inst1", &life).await.expect("get").expect("adopted")["TOKEN"].expose_secret(),
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
    assert!(store.get("inst1", &later).await.expect("get").is_none());
}
