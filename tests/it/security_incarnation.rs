//! A record id that comes back inherits nothing (issue 14, item 1). Real PocketBase (schema and hooks),
//! coolify-sim and the bridge in the test process: an instance with a superuser-chosen id gets secrets, a service and
//! a router key; the record is deleted and a new one made with the same id for another tenant. The new
//! record must wait for its own secrets, get a new service and a router key of its own, whether the bridge
//! saw the delete on its own or only the new record (delete and create folded into one job). Users may not
//! choose ids at all.

use std::collections::BTreeSet;
use std::time::Duration;

use cf_bridge::secrets::{SecretBytes, router_verify_key, verify_router_key};
use cf_testkit::world::{SIM_QUICK, World};
use cf_testkit::{SECRETS_KEY, TestPb, tail};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);
const REUSED: &str = "reusedid0000001";
const CANARY_FIRST: &str = "111:CANARY-first-owner-token";
const CANARY_SECOND: &str = "222:CANARY-second-owner-token";

async fn put_secrets(stack: &World, id: &str, token: &str) {
    let (status, body) = stack
        .bridge
        .admin()
        .put_secrets(id, json!({"TELEGRAM_BOT_TOKEN": token}))
        .await;
    assert_eq!(status, 202, "{body}");
}

/// Instance ids with an entry in the bridge's secret store (entry keys are not encrypted).
fn stored_ids(stack: &World) -> BTreeSet<String> {
    let Ok(bytes) = std::fs::read(stack.bridge.dir.join("secrets.bin")) else {
        return BTreeSet::new();
    };
    let file: Value = serde_json::from_slice(&bytes).expect("secret store is JSON");
    file["entries"]
        .as_object()
        .map(|e| e.keys().cloned().collect())
        .unwrap_or_default()
}

/// Services named after the instance that are not being deleted.
async fn live_services(stack: &World, id: &str) -> Vec<Value> {
    stack.sim.state().await["services"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s["name"] == format!("cf-{id}") && s["pending_deletion"] != true)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_for(stack: &World, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            tail(&stack.bridge.log(), 60)
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// The first owner's instance, running with its secret; returns (service uuid, router key).
async fn first_owner(stack: &World, tenant: &str) -> (String, String) {
    let id = stack
        .create_instance_with(tenant, "telegram-bot", "first-owner", json!({"id": REUSED}))
        .await;
    assert_eq!(id, REUSED);
    put_secrets(stack, REUSED, CANARY_FIRST).await;
    let r = stack.wait_status(REUSED, "running", WAIT).await;
    let envs = stack.sim_envs(REUSED).await;
    assert_eq!(envs["TELEGRAM_BOT_TOKEN"].0, CANARY_FIRST);
    let key = envs["CLOUDFREEDOM_API_KEY"].0.clone();
    (r["coolify_service_id"].as_str().expect("uuid").to_string(), key)
}

/// The second owner's record under the reused id must start from nothing, then run on its own material.
async fn second_owner_starts_clean(stack: &World, tenant: &str, first_uuid: &str, first_key: &str) {
    let r = stack
        .wait_record("bot_instances", REUSED, "waiting for its own secret", WAIT, |r| {
            r["status"] == "pending" && r["pending_reason"] == "waiting for secrets: TELEGRAM_BOT_TOKEN"
        })
        .await;
    assert_eq!(r["tenant"], tenant);
    assert!(
        !stored_ids(stack).contains(REUSED),
        "the first owner's secrets are still stored"
    );
    // The first owner's service does not run on while the new record waits.
    wait_for(stack, "the first owner's service to be gone", async || {
        stack.sim.state().await["services"]
            .as_array()
            .is_some_and(|a| a.iter().all(|s| s["uuid"] != first_uuid))
    })
    .await;
    put_secrets(stack, REUSED, CANARY_SECOND).await;
    let r = stack.wait_status(REUSED, "running", WAIT).await;
    let uuid = r["coolify_service_id"].as_str().expect("uuid");
    assert_ne!(uuid, first_uuid, "the first owner's service was adopted");
    let envs = stack.sim_envs(REUSED).await;
    assert_eq!(envs["TELEGRAM_BOT_TOKEN"].0, CANARY_SECOND);
    let key = &envs["CLOUDFREEDOM_API_KEY"].0;
    assert_ne!(key, first_key, "the first owner's router key was reused");
    let verify = router_verify_key(&SecretBytes::from(SECRETS_KEY.as_bytes().to_vec()));
    let claims = verify_router_key(verify.expose_secret(), key).expect("a key the bridge issued");
    assert_eq!(
        (claims.tenant_id.as_str(), claims.instance_id.as_str()),
        (tenant, REUSED)
    );
    assert_eq!(
        r["router_key_id"],
        claims.key_id.as_str(),
        "the record names the current key"
    );
    let old = verify_router_key(verify.expose_secret(), first_key).expect("the old key was genuine");
    assert_ne!(
        old.key_id, claims.key_id,
        "a router comparing key ids refuses the old key"
    );
    let log = stack.bridge.log();
    assert!(!log.contains("CANARY"), "a secret reached the bridge's log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_instance_leaves_nothing_to_a_record_that_reuses_its_id() {
    let stack = World::start(SIM_QUICK, &[]).await;
    let first = stack.create_tenant("first-owner", "business").await;
    let second = stack.create_tenant("second-owner", "business").await;
    let (first_uuid, first_key) = first_owner(&stack, &first).await;

    stack.pb.delete("bot_instances", REUSED).await;
    wait_for(&stack, "the service to be destroyed", async || {
        live_services(&stack, REUSED).await.is_empty()
    })
    .await;
    wait_for(&stack, "the deleted instance's secrets to be deleted", async || {
        !stored_ids(&stack).contains(REUSED)
    })
    .await;

    stack
        .create_instance_with(&second, "telegram-bot", "second-owner", json!({"id": REUSED}))
        .await;
    second_owner_starts_clean(&stack, &second, &first_uuid, &first_key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_and_create_seen_as_one_change_destroys_the_old_service() {
    let mut stack = World::start(SIM_QUICK, &[]).await;
    let first = stack.create_tenant("first-owner", "business").await;
    let second = stack.create_tenant("second-owner", "business").await;
    let (first_uuid, first_key) = first_owner(&stack, &first).await;

    // While the bridge is down, the record is deleted and made again with the same id: on restart the
    // resync sees one changed record, and its one job sees only the new one.
    assert!(stack.bridge.stop().await, "the bridge stops cleanly");
    stack.pb.delete("bot_instances", REUSED).await;
    stack
        .create_instance_with(&second, "telegram-bot", "second-owner", json!({"id": REUSED}))
        .await;
    stack.bridge.start_again().await;
    second_owner_starts_clean(&stack, &second, &first_uuid, &first_key).await;
    assert_eq!(live_services(&stack, REUSED).await.len(), 1, "one service for the id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_cannot_choose_instance_ids_or_write_the_router_key_id() {
    let pb = TestPb::start().await;
    let user = pb.create_user("owner@test.local", "owner-password-1").await;
    let tenant = pb
        .create_tenant(json!({"name": "T", "slug": "rules", "user": user, "status": "active", "plan_tier": "team"}))
        .await;
    let template = pb.create_template(json!({"name": "tpl", "active": true})).await;
    let token = pb.user_token("owner@test.local", "owner-password-1").await;
    let body = |subdomain: &str| {
        json!({"tenant": tenant["id"], "template": template["id"], "name": "bot", "subdomain": subdomain,
               "desired_state": "running"})
    };
    let path = "/api/collections/bot_instances/records";

    let mut chosen = body("chosen");
    chosen["id"] = json!("chosenbyuser001");
    let (status, answer) = pb.request_as(&token, "POST", path, Some(&chosen)).await;
    assert_eq!(status, 400, "a user-chosen id was accepted: {answer}");
    let mut empty = body("empty");
    empty["id"] = json!("");
    let (status, answer) = pb.request_as(&token, "POST", path, Some(&empty)).await;
    assert_eq!(status, 400, "an empty id is an id too: {answer}");

    let (status, created) = pb.request_as(&token, "POST", path, Some(&body("plain"))).await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_str().expect("id");
    let mut forged = body("plain");
    forged["router_key_id"] = json!("00000000000000000000000000000000");
    let (status, _) = pb.request_as(&token, "POST", path, Some(&forged)).await;
    assert_eq!(status, 400, "router_key_id is the bridge's");
    let (status, _) = pb
        .request_as(
            &token,
            "PATCH",
            &format!("{path}/{id}"),
            Some(&json!({"router_key_id": "00000000000000000000000000000000"})),
        )
        .await;
    assert_ne!(status, 200, "router_key_id is the bridge's");
    let now = pb.superuser_request("GET", &format!("{path}/{id}"), None).await;
    assert_eq!(now["router_key_id"], "");
}
