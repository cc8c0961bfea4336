//! A tenant's error message names nothing of another tenant (issue 14, item 3). When Coolify refuses a
//! domain that another service holds, the tenant reads a generic message in `error_message` and its
//! `deploy_logs`; the service holding the domain is named only to operators (the job's `last_error` in the
//! admin API, and the bridge's log). Real PocketBase, coolify-sim and the bridge in the test process.

use std::time::Duration;

use cf_testkit::world::{SIM_FAST, World, domain, text};

const WAIT: Duration = Duration::from_secs(30);
const GENERIC: &str = "this domain is already in use: choose another subdomain";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_held_by_another_tenant_is_refused_without_naming_it() {
    let w = World::start(SIM_FAST, &[]).await;
    // Another tenant's stack, as Coolify lists it: a bridge-named service holding the domain.
    let other_name = "cf-othertenant001";
    let (_, other_uuid) = w
        .sim_create_foreign(
            "cf-other-tenant",
            other_name,
            &format!("https://{}", domain("contested")),
        )
        .await;
    let tenant = w.create_tenant("victim", "business").await;
    w.wait_record("tenants", &tenant, "project", WAIT, |r| {
        !text(r, "coolify_project_uuid").is_empty()
    })
    .await;
    let id = w.create_instance(&tenant, "base-llm", "contested", "running").await;
    let r = w
        .wait_record("bot_instances", &id, "the refusal", WAIT, |r| r["status"] == "error")
        .await;
    assert_eq!(text(&r, "error_message"), GENERIC);

    let logs = w.deploy_logs(&id).await;
    assert!(!logs.is_empty(), "a failed deploy_logs row is written");
    let seen_by_tenant = format!("{r}{}", serde_json::Value::Array(logs));
    for secret in [other_name, other_uuid.as_str(), "cf-other-tenant"] {
        assert!(
            !seen_by_tenant.contains(secret),
            "{secret} shown to the tenant: {seen_by_tenant}"
        );
    }

    // Operators get the detail.
    let (status, jobs) = w.bridge.admin().get("/admin/jobs?state=waiting,failed,dead").await;
    assert_eq!(status, 200);
    let job = jobs["jobs"]
        .as_array()
        .and_then(|j| j.iter().find(|j| j["record_id"] == id.as_str()))
        .unwrap_or_else(|| panic!("no job for {id}: {jobs}"));
    let detail = job["last_error"].as_str().unwrap_or_default();
    assert!(detail.contains(other_name) && detail.contains(&other_uuid), "{detail}");
    assert!(
        w.bridge.log().contains(&other_uuid),
        "the bridge's log names the holder"
    );
}
