//! Deletion with retention (issue 19 item 2), end to end (real PocketBase, coolify-sim, the bridge in the
//! test process). A deleted instance stops and loses its door at once but keeps its service; restore brings
//! the same service back with a fresh key; purge and the end of the retention destroy it with a final
//! `deploy_logs` row; a hard-deleted record cannot be restored; a record reusing the id inherits nothing; a
//! tenant's deletion takes its instances through retention and then goes itself. The retention is shortened
//! by settings (`lifecycle.retention_secs`, `lifecycle.starter_retention_secs`), never by sleeping it out.

use std::time::Duration;

use cf_testkit::world::{SIM_QUICK, World, pb_now, service_domains, text};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);
/// Business tenants keep deleted instances for an hour (the test never waits it out); starter ones 3 s.
const RETENTION: &[(&str, &str)] = &[
    ("CF_BRIDGE__LIFECYCLE__RETENTION_SECS", "3600"),
    ("CF_BRIDGE__LIFECYCLE__STARTER_RETENTION_SECS", "3"),
    ("CF_BRIDGE__LIFECYCLE__RETENTION_SWEEP_SECS", "1"),
];

/// The instance's services in the simulator that are not being deleted.
async fn live_services(w: &World, id: &str) -> Vec<Value> {
    w.sim.services_named(&format!("cf-{id}")).await
}

async fn the_service(w: &World, id: &str) -> Value {
    let found = live_services(w, id).await;
    assert_eq!(found.len(), 1, "one service for {id}: {found:?}");
    found[0].clone()
}

async fn record_exists(w: &World, collection: &str, id: &str) -> bool {
    let token = w.pb.cached_token().await;
    let (status, _) =
        w.pb.request_as(
            &token,
            "GET",
            &format!("/api/collections/{collection}/records/{id}"),
            None,
        )
        .await;
    status == 200
}

async fn wait_until(w: &World, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            w.log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn admin_post(w: &World, path: &str) -> (u16, Value) {
    w.bridge.admin().send(reqwest::Method::POST, path, json!({})).await
}

/// Waits for the deletion's effects on the record: stopped, no domain, no router key, a retention date.
async fn wait_closed(w: &World, id: &str) -> Value {
    w.wait_record("bot_instances", id, "closed for deletion", WAIT, |r| {
        r["status"] == "stopped"
            && text(r, "domain").is_empty()
            && text(r, "router_key_id").is_empty()
            && !text(r, "retained_until").is_empty()
    })
    .await
}

/// Asks for the instance's deletion and checks the close: the record closed, the same service kept, stopped
/// (`exited`) and routed at no domain.
async fn ask_deletion_and_see_it_closed(w: &World, id: &str, uuid: &str) {
    w.pb.patch("bot_instances", id, json!({"deletion_requested_at": pb_now()}))
        .await;
    wait_closed(w, id).await;
    let kept = the_service(w, id).await;
    assert_eq!(text(&kept, "uuid"), uuid, "the same service is kept");
    assert_eq!(text(&kept, "status"), "exited", "the kept service is stopped");
    let domains = service_domains(&kept);
    assert!(domains.is_empty(), "no domain routed: {domains:?}");
}

fn has_row(rows: &[Value], action: &str, by: &str, starts: &str) -> bool {
    rows.iter()
        .any(|r| r["action"] == action && r["triggered_by"] == by && text(r, "message").starts_with(starts))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_closes_at_once_restore_brings_the_same_service_back_and_purge_destroys() {
    let w = World::start(SIM_QUICK, RETENTION).await;
    let tenant = w.create_tenant("keeps", "business").await;
    let id = w.create_instance(&tenant, "base-llm", "keeps-one", "running").await;
    let before = w.wait_status(&id, "running", WAIT).await;
    let svc = the_service(&w, &id).await;
    let uuid = text(&svc, "uuid").to_string();
    let key_before = text(&before, "router_key_id").to_string();

    // Asked for deletion: stopped, door closed at once, the service and its data kept.
    ask_deletion_and_see_it_closed(&w, &id, &uuid).await;
    // The close is done for whoever asked (here the superuser who set the field).
    let rows = w.deploy_logs(&id).await;
    assert!(
        rows.iter().any(|r| r["action"] == "stop"
            && text(r, "triggered_by").starts_with("_superusers:")
            && text(r, "message").starts_with("deletion requested: service")),
        "{rows:?}"
    );

    // The admin API shows the retention.
    let (status, view) = w.bridge.admin().get(&format!("/admin/instances/{id}")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["deletion"]["state"], "retained", "{view}");
    assert_eq!(view["deletion"]["coolify_uuid"], uuid.as_str());
    assert_eq!(view["deletion"]["closed"], true);

    // Restore: the same service, its domain back, a fresh router key, running again.
    let (status, body) = admin_post(&w, &format!("/admin/instances/{id}/restore")).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["coolify_uuid"], uuid.as_str());
    let back = w
        .wait_record("bot_instances", &id, "restored", WAIT, |r| {
            r["status"] == "running" && !text(r, "domain").is_empty()
        })
        .await;
    assert!(text(&back, "deletion_requested_at").is_empty() && text(&back, "retained_until").is_empty());
    assert_eq!(text(&back, "coolify_service_id"), uuid);
    let key_after = text(&back, "router_key_id");
    assert!(!key_after.is_empty() && key_after != key_before, "a fresh router key");
    let svc = the_service(&w, &id).await;
    assert_eq!(text(&svc, "uuid"), uuid);
    assert_eq!(service_domains(&svc), ["https://keeps-one.bots.test.example:8080"]);
    assert!(has_row(
        &w.deploy_logs(&id).await,
        "start",
        "operator",
        "restored by an operator"
    ));

    // Restoring what is not deleted is refused and changes nothing.
    let (status, body) = admin_post(&w, &format!("/admin/instances/{id}/restore")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["detail"], format!("bot instance {id} is not deleted"));
    let (status, _) = admin_post(&w, &format!("/admin/instances/{id}/purge")).await;
    assert_eq!(status, 409);
    assert_eq!(w.instance(&id).await["status"], "running");

    // The Admin Portal (a superuser) restores by clearing the field: the same service, running again.
    w.pb.patch("bot_instances", &id, json!({"deletion_requested_at": pb_now()}))
        .await;
    wait_closed(&w, &id).await;
    w.pb.patch("bot_instances", &id, json!({"deletion_requested_at": ""}))
        .await;
    let back = w
        .wait_record("bot_instances", &id, "restored by the portal", WAIT, |r| {
            r["status"] == "running" && !text(r, "domain").is_empty() && text(r, "retained_until").is_empty()
        })
        .await;
    assert_eq!(text(&back, "coolify_service_id"), uuid);
    assert_eq!(text(&the_service(&w, &id).await, "uuid"), uuid);

    // Deleted again, then purged: destroyed at once, record gone, the operator named.
    w.pb.patch("bot_instances", &id, json!({"deletion_requested_at": pb_now()}))
        .await;
    wait_closed(&w, &id).await;
    // Through the CLI, as an operator would.
    let out = w.cli(crate::bridge_bin(), &["instances", "purge", &id]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), format!("{id}: purging: its job destroys it"));
    wait_until(&w, "purge", async || {
        live_services(&w, &id).await.is_empty() && !record_exists(&w, "bot_instances", &id).await
    })
    .await;
    w.wait("the purge's final row", WAIT, async || {
        has_row(&w.deploy_logs(&id).await, "destroy", "operator", "purged: service").then_some(())
    })
    .await;

    // After a purge: a second purge and a restore are refused, naming what happened.
    for verb in ["purge", "restore"] {
        let (status, body) = admin_post(&w, &format!("/admin/instances/{id}/{verb}")).await;
        assert_eq!(status, 409, "{verb}: {body}");
        assert_eq!(body["type"], "about:blank");
        assert!(text(&body, "detail").contains("was destroyed"), "{verb}: {body}");
    }
    let out = w.cli(crate::bridge_bin(), &["instances", "restore", &id]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("409") && stderr.contains("was destroyed"), "{stderr}");
    // An id nobody knows: 404.
    let (status, body) = admin_post(&w, "/admin/instances/nosuchinstance1/restore").await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = admin_post(&w, "/admin/instances/nosuchinstance1/purge").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_ends_with_the_destruction_and_a_final_row_and_a_tenant_goes_after_its_instances() {
    let w = World::start(SIM_QUICK, RETENTION).await;
    let tenant = w.create_tenant("brief", "starter").await;
    let id = w.create_instance(&tenant, "base-llm", "brief-one", "running").await;
    w.wait_status(&id, "running", WAIT).await;
    let project = text(&w.record("tenants", &tenant).await, "coolify_project_uuid").to_string();
    assert!(!project.is_empty());

    w.pb.patch("bot_instances", &id, json!({"deletion_requested_at": pb_now()}))
        .await;
    // The retention (3 s for starter) ends: service and record destroyed, the bridge's final row.
    wait_until(&w, "the end of the retention", async || {
        live_services(&w, &id).await.is_empty() && !record_exists(&w, "bot_instances", &id).await
    })
    .await;
    w.wait("the final row", WAIT, async || {
        has_row(
            &w.deploy_logs(&id).await,
            "destroy",
            "cf-bridge",
            "retention ended: service",
        )
        .then_some(())
    })
    .await;
    let (status, body) = admin_post(&w, &format!("/admin/instances/{id}/restore")).await;
    assert_eq!(status, 409, "{body}");

    // A tenant's deletion: its instances go through retention, then its project and record go.
    let a = w.create_instance(&tenant, "base-llm", "brief-two", "running").await;
    w.wait_status(&a, "running", WAIT).await;
    w.pb.patch("tenants", &tenant, json!({"deletion_requested_at": pb_now()}))
        .await;
    wait_until(&w, "the tenant's deletion", async || {
        !record_exists(&w, "tenants", &tenant).await
    })
    .await;
    assert!(live_services(&w, &a).await.is_empty());
    assert!(!record_exists(&w, "bot_instances", &a).await);
    let projects = w.sim.state().await["projects"].clone();
    assert!(
        !projects
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["uuid"] == project.as_str() && p["pending_deletion"] != true),
        "the tenant's project is gone: {projects}"
    );
    assert!(has_row(
        &w.deploy_logs(&a).await,
        "destroy",
        "cf-bridge",
        "retention ended: service"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_deleted_record_is_retained_not_restorable_and_its_id_inherits_nothing() {
    let w = World::start(SIM_QUICK, RETENTION).await;
    let tenant = w.create_tenant("gone", "business").await;
    const ID: &str = "retainedid00001";
    let mut body = w.instance_body(&tenant, "base-llm", "gone-one", "running");
    body["id"] = json!(ID);
    w.pb.create_instance(body).await;
    let first = w.wait_status(ID, "running", WAIT).await;
    let uuid = text(&the_service(&w, ID).await, "uuid").to_string();

    // A PocketBase delete: the service is stopped and unrouted, but kept.
    w.pb.delete("bot_instances", ID).await;
    wait_until(&w, "the retained service closed", async || {
        let found = live_services(&w, ID).await;
        found.len() == 1 && text(&found[0], "status") == "exited" && service_domains(&found[0]).is_empty()
    })
    .await;
    assert_eq!(text(&the_service(&w, ID).await, "uuid"), uuid);
    let (status, body) = admin_post(&w, &format!("/admin/instances/{ID}/restore")).await;
    assert_eq!(status, 409, "{body}");
    assert!(text(&body, "detail").contains("was deleted in PocketBase"), "{body}");
    assert_eq!(
        live_services(&w, ID).await.len(),
        1,
        "a refused restore changes nothing"
    );

    // A new record with the same id: a service and a key of its own; the retained one is retired.
    let mut body = w.instance_body(&tenant, "base-llm", "gone-two", "running");
    body["id"] = json!(ID);
    w.pb.create_instance(body).await;
    let second = w.wait_status(ID, "running", WAIT).await;
    let services = live_services(&w, ID).await;
    assert_eq!(services.len(), 1, "{services:?}");
    assert_ne!(text(&services[0], "uuid"), uuid, "the new record gets a new service");
    assert_ne!(text(&second, "router_key_id"), text(&first, "router_key_id"));
    assert_eq!(
        service_domains(&services[0]),
        ["https://gone-two.bots.test.example:8080"]
    );
    // The earlier record's deletion is settled: nothing of it can be restored into the new one.
    let (status, body) = admin_post(&w, &format!("/admin/instances/{ID}/restore")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(w.instance(ID).await["status"], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_may_ask_for_deletion_but_not_take_it_back_or_set_what_the_bridge_owns() {
    let w = World::start(SIM_QUICK, RETENTION).await;
    let tenant = w.user_tenant("owner@example.com", "owned", "business").await;
    let id = w.create_instance(&tenant, "base-llm", "owned-one", "stopped").await;
    w.wait_status(&id, "stopped", WAIT).await;
    let token = w.pb.user_token("owner@example.com", "user-password-123").await;
    let path = format!("/api/collections/bot_instances/records/{id}");
    let ask = |body: Value| {
        let (w, token, path) = (&w, &token, &path);
        async move { w.pb.request_as(token, "PATCH", path, Some(&body)).await.0 }
    };
    assert_eq!(ask(json!({"retained_until": pb_now()})).await, 404, "bridge-owned");
    assert_eq!(ask(json!({"deletion_requested_at": pb_now()})).await, 200);
    assert_eq!(
        ask(json!({"deletion_requested_at": ""})).await,
        404,
        "a user cannot restore"
    );
    wait_closed(&w, &id).await;

    let tpath = format!("/api/collections/tenants/records/{tenant}");
    let tenant_ask = |body: Value| {
        let (w, token, tpath) = (&w, &token, &tpath);
        async move { w.pb.request_as(token, "PATCH", tpath, Some(&body)).await.0 }
    };
    assert_eq!(
        tenant_ask(json!({"name": "renamed"})).await,
        404,
        "nothing else of the tenant"
    );
    assert_eq!(
        tenant_ask(json!({"deletion_requested_at": pb_now(), "plan_tier": "sovereign"})).await,
        404
    );
    assert_eq!(tenant_ask(json!({"deletion_requested_at": ""})).await, 404);
    assert_eq!(tenant_ask(json!({"deletion_requested_at": pb_now()})).await, 200);
    let t = w.record("tenants", &tenant).await;
    assert_eq!(t["plan_tier"], "business");
    assert!(!text(&t, "deletion_requested_at").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_deleted_tenant_keeps_its_instances_services_until_they_go_then_its_project_goes() {
    let w = World::start(SIM_QUICK, RETENTION).await;
    let tenant = w.create_tenant("dropped", "business").await;
    let id = w.create_instance(&tenant, "base-llm", "dropped-one", "running").await;
    w.wait_status(&id, "running", WAIT).await;
    let project = text(&w.record("tenants", &tenant).await, "coolify_project_uuid").to_string();
    let uuid = text(&the_service(&w, &id).await, "uuid").to_string();
    let project_there = async |w: &World| {
        w.sim
            .projects()
            .await
            .iter()
            .any(|p| p["uuid"] == project.as_str() && p["pending_deletion"] != true)
    };

    // The tenant record goes (its instances with it, by cascade): the service is closed and kept, and so
    // is the project that holds it.
    w.pb.delete("tenants", &tenant).await;
    wait_until(&w, "the kept service closed", async || {
        let found = live_services(&w, &id).await;
        found.len() == 1 && text(&found[0], "status") == "exited" && service_domains(&found[0]).is_empty()
    })
    .await;
    assert_eq!(text(&the_service(&w, &id).await, "uuid"), uuid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(project_there(&w).await, "the project waits for its kept service");

    // Purged: the service goes, then the project.
    let (status, body) = admin_post(&w, &format!("/admin/instances/{id}/purge")).await;
    assert_eq!(status, 202, "{body}");
    wait_until(&w, "the service and then the project gone", async || {
        live_services(&w, &id).await.is_empty() && !project_there(&w).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orphan_scanner_leaves_a_kept_service_alone() {
    let mut env = RETENTION.to_vec();
    env.extend([
        ("CF_BRIDGE__RECONCILE__ORPHANS", "remove"),
        ("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "1"),
    ]);
    let w = World::start(SIM_QUICK, &env).await;
    let tenant = w.create_tenant("scanned", "business").await;
    let id = w.create_instance(&tenant, "base-llm", "scanned-one", "running").await;
    w.wait_status(&id, "running", WAIT).await;
    w.pb.delete("bot_instances", &id).await;
    wait_until(&w, "the kept service closed", async || {
        let found = live_services(&w, &id).await;
        found.len() == 1 && text(&found[0], "status") == "exited"
    })
    .await;
    // A true orphan beside it: its removal shows the scanner ran (twice, as removal needs).
    let (_, ghost) = w
        .sim_create_foreign("cf-ghost", "cf-norecord0000001", "https://ghost.bots.test.example")
        .await;
    wait_until(&w, "the true orphan removed", async || {
        w.sim.service(&ghost).await.is_none()
    })
    .await;
    assert_eq!(live_services(&w, &id).await.len(), 1, "the kept service is no orphan");
}

/// A crash-looping bot (`degraded:unhealthy` in Coolify: neither running nor stopped) asked for deletion is
/// stopped in Coolify too, not only shown stopped: the close used to stop only a service shown `running:*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_up_in_part_is_stopped_when_its_deletion_is_asked_for() {
    let w = World::start(SIM_QUICK, RETENTION).await;
    let tenant = w.create_tenant("halfgone", "business").await;
    let id = w.create_instance(&tenant, "base-llm", "halfgone-one", "running").await;
    w.wait_status(&id, "running", WAIT).await;
    let uuid = text(&the_service(&w, &id).await, "uuid").to_string();
    w.sim.force_status(&uuid, Some("degraded:unhealthy")).await;

    ask_deletion_and_see_it_closed(&w, &id, &uuid).await;
}
