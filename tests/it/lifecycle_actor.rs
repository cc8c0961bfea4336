//! Who did it (issue 19 item 6), end to end (real PocketBase with the project's hooks, coolify-sim, the
//! bridge in the test process): a user acting with their own token is stamped on the record by
//! `actor.pb.js` (not writable by them), the stamp travels through realtime/webhook into the journal, and
//! each `deploy_logs` row of the actions their change caused names them (`triggered_by`,
//! `triggered_by_user`), as the admin API shows; the bridge's own health actions name `cf-bridge`.

use std::time::Duration;

use cf_testkit::world::{SIM_QUICK, World, text};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);
const PASSWORD: &str = "user-password-123";

fn rows_of<'a>(rows: &'a [Value], action: &str) -> Vec<&'a Value> {
    rows.iter().filter(|r| r["action"] == action).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_logs_name_the_user_whose_change_they_carry_out() {
    let w = World::start(SIM_QUICK, &[("CF_BRIDGE__RECONCILE__BAD_READINGS_BEFORE_ERROR", "2")]).await;
    let user = w.pb.create_user("ada@test.local", PASSWORD).await;
    let token = w.pb.user_token("ada@test.local", PASSWORD).await;
    let tenant = w
        .pb
        .create_tenant(json!({"name": "Ada", "slug": "ada", "user": user, "status": "active", "plan_tier": "team"}))
        .await;
    let tenant_id = text(&tenant, "id").to_string();
    // The superuser who created the tenant is its actor.
    let admin_stamp = text(&tenant, "changed_by").to_string();
    assert!(admin_stamp.starts_with("_superusers:"), "{tenant}");

    // The user creates their instance with their own token.
    let mut body = w.instance_body(&tenant_id, "base-llm", "ada-bot", "running");
    body["changed_by"] = json!("users:someoneelse1234");
    let (code, _) =
        w.pb.request_as(&token, "POST", "/api/collections/bot_instances/records", Some(&body))
            .await;
    assert_eq!(code, 400, "changed_by is not the user's to write");
    body.as_object_mut().expect("body").remove("changed_by");
    let (code, inst) =
        w.pb.request_as(&token, "POST", "/api/collections/bot_instances/records", Some(&body))
            .await;
    assert_eq!(code, 200, "{inst}");
    let id = text(&inst, "id").to_string();
    let me = format!("users:{user}");
    assert_eq!(text(&inst, "changed_by"), me);

    let r = w.wait_status(&id, "running", WAIT).await;
    assert_eq!(
        text(&r, "changed_by"),
        me,
        "the bridge's write-backs keep the user's stamp"
    );
    let rows = w.deploy_logs(&id).await;
    let deploys = rows_of(&rows, "deploy");
    assert_eq!(deploys.len(), 1, "{rows:?}");
    assert_eq!(deploys[0]["triggered_by"], me.as_str());
    assert_eq!(deploys[0]["triggered_by_user"], user.as_str());
    let project = w.deploy_logs(&tenant_id).await;
    let created = rows_of(&project, "project_create");
    assert_eq!(created.len(), 1, "{project:?}");
    assert_eq!(created[0]["triggered_by"], admin_stamp.as_str());
    assert_eq!(created[0]["triggered_by_user"], "", "a superuser is not a user");

    // The user stops it: the stop is theirs; they cannot forge the stamp on an update either.
    let path = format!("/api/collections/bot_instances/records/{id}");
    let (code, _) =
        w.pb.request_as(
            &token,
            "PATCH",
            &path,
            Some(&json!({"changed_by": "users:someoneelse1234"})),
        )
        .await;
    assert_ne!(code, 200, "changed_by is not the user's to write");
    let (code, v) =
        w.pb.request_as(&token, "PATCH", &path, Some(&json!({"desired_state": "stopped"})))
            .await;
    assert_eq!(code, 200, "{v}");
    w.wait_status(&id, "stopped", WAIT).await;
    let rows = w.deploy_logs(&id).await;
    let stops = rows_of(&rows, "stop");
    assert_eq!(stops.len(), 1, "{rows:?}");
    assert_eq!(stops[0]["triggered_by"], me.as_str());

    // The admin API shows the stamp and the rows' actors.
    let (code, view) = w.bridge.admin().get(&format!("/admin/instances/{id}")).await;
    assert_eq!(code, 200, "{view}");
    assert_eq!(view["changed_by"], me.as_str());
    let actions = view["recent_actions"].as_array().expect("recent_actions");
    assert!(
        actions
            .iter()
            .any(|a| a["action"] == "stop" && a["triggered_by"] == me.as_str()),
        "{view}"
    );
    let (code, events) = w.bridge.admin().get(&format!("/admin/events?record={id}")).await;
    assert_eq!(code, 200, "{events}");
    assert!(
        events["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["payload"]["changed_by"] == me.as_str()),
        "the journal carries the stamp: {events}"
    );

    // An admin suspends and resumes the tenant: those rows name the admin, not the instance's last editor.
    let suspended = w.pb.patch("tenants", &tenant_id, json!({"status": "suspended"})).await;
    let admin = text(&suspended, "changed_by").to_string();
    assert!(admin.starts_with("_superusers:"), "{suspended}");
    w.wait_record("bot_instances", &id, "suspended", WAIT, |r| {
        text(r, "domain").is_empty()
    })
    .await;
    w.pb.patch("tenants", &tenant_id, json!({"status": "active"})).await;
    w.wait_record("bot_instances", &id, "resumed", WAIT, |r| !text(r, "domain").is_empty())
        .await;
    let rows = w.deploy_logs(&id).await;
    let door: Vec<&Value> = rows
        .iter()
        .filter(|r| text(r, "message").starts_with("tenant "))
        .collect();
    assert_eq!(door.len(), 2, "{rows:?}");
    assert!(door.iter().all(|r| r["triggered_by"] == admin.as_str()), "{door:?}");

    // Started again by the user, then the container dies: the health action is the bridge's own.
    let (code, _) =
        w.pb.request_as(&token, "PATCH", &path, Some(&json!({"desired_state": "running"})))
            .await;
    assert_eq!(code, 200);
    let r = w.wait_status(&id, "running", WAIT).await;
    let uuid = text(&r, "coolify_service_id").to_string();
    w.sim.force_status(&uuid, Some("exited")).await;
    w.wait_status(&id, "error", WAIT).await;
    let rows = w.deploy_logs(&id).await;
    let health = rows_of(&rows, "error");
    assert!(!health.is_empty(), "{rows:?}");
    assert!(health.iter().all(|r| r["triggered_by"] == "cf-bridge"), "{rows:?}");
    w.sim.force_status(&uuid, None).await;
    w.wait_status(&id, "running", WAIT).await;

    // A superuser renames it last; then the user deletes it: the destroy row names the deleter (stamped by
    // the delete hook on the record the webhook and realtime send), not the last editor.
    let renamed =
        w.pb.patch("bot_instances", &id, json!({"name": "renamed by an admin"}))
            .await;
    assert!(text(&renamed, "changed_by").starts_with("_superusers:"), "{renamed}");
    w.wait_status(&id, "running", WAIT).await;
    // The destroy row names the user though the record is gone.
    let (code, _) = w.pb.request_as(&token, "DELETE", &path, None).await;
    assert_eq!(code, 204);
    let destroyed = w
        .wait("the destroy row", WAIT, || async {
            let rows = w.deploy_logs(&id).await;
            rows.into_iter()
                .find(|r| r["action"] == "destroy" && r["status"] == "success")
        })
        .await;
    assert_eq!(destroyed["triggered_by"], me.as_str(), "{destroyed}");
}
