//! Custom domains (issue 19 item 3), end to end (real PocketBase, coolify-sim, the bridge in the test
//! process): a tenant's verified domain serves its instances at `<subdomain>.<domain>`; a change moves them
//! with the new domain routed before the old one is removed; clearing it moves them back; a domain held by
//! another tenant is refused without naming that tenant; a domain that is no hostname is shown on the
//! tenant and moves nothing; an unverified domain is not used.

use std::time::Duration;

use cf_testkit::world::{SIM_QUICK, World, service_domains, text};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);

/// The `urls` the bridge sent for a service, and its restarts, in order: ("urls", value) / ("restart", "").
/// A `PATCH` with `instant_deploy` restarts the stack too (Coolify force-recreates it): a restart after it.
async fn door_history(w: &World, uuid: &str) -> Vec<(String, String)> {
    let path = format!("/api/v1/services/{uuid}");
    let mut history = Vec::new();
    for r in w.sim.requests().await {
        if !r["uri"].as_str().is_some_and(|u| u.starts_with(&path)) {
            continue;
        }
        if r["path"] == "PATCH /services/{uuid}" {
            if let Some(url) = r["request"]["urls"][0]["url"].as_str() {
                history.push(("urls".to_string(), url.to_string()));
            }
            if r["request"]["instant_deploy"] == true {
                history.push(("restart".to_string(), String::new()));
            }
        } else if r["path"] == "POST /services/{uuid}/restart" {
            history.push(("restart".to_string(), String::new()));
        }
    }
    history
}

/// Waits until the service is routed at exactly `want` and the record shows it, running.
async fn wait_served(w: &World, id: &str, host: &str) -> Value {
    let want = vec![format!("https://{host}:8080")];
    let r = w
        .wait_record("bot_instances", id, host, WAIT, |r| {
            r["status"] == "running" && text(r, "domain") == host
        })
        .await;
    w.wait(&format!("{host} alone in Coolify"), WAIT, async || {
        let svc = w.service_of(id).await?;
        (service_domains(&svc) == want).then_some(())
    })
    .await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_domain_moves_instances_with_the_new_routed_before_the_old_goes() {
    let w = World::start(SIM_QUICK, &[]).await;
    let tenant = w.create_tenant("acme", "business").await;
    let id = w.create_instance(&tenant, "base-llm", "one", "running").await;
    wait_served(&w, &id, "one.bots.test.example").await;
    let uuid = text(&w.service_of(&id).await.expect("service"), "uuid").to_string();

    // Unverified: not used.
    w.pb.patch("tenants", &tenant, json!({"domain": "Acme.Example"})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(text(&w.instance(&id).await, "domain"), "one.bots.test.example");

    // Verified (written in mixed case, as an admin may): served at <subdomain>.acme.example.
    w.sim.clear_requests().await;
    w.pb.patch("tenants", &tenant, json!({"domain_verified": true})).await;
    wait_served(&w, &id, "one.acme.example").await;
    assert_eq!(text(&w.service_of(&id).await.expect("service"), "uuid"), uuid);
    let history = door_history(&w, &uuid).await;
    let both = "https://one.acme.example:8080,https://one.bots.test.example:8080".to_string();
    let new_only = "https://one.acme.example:8080".to_string();
    let at = |item: (&str, &String)| history.iter().position(|(k, v)| k == item.0 && v == item.1);
    let (Some(added), Some(removed)) = (at(("urls", &both)), at(("urls", &new_only))) else {
        panic!("the new domain is added beside the old one, then the old one removed: {history:?}");
    };
    assert!(added < removed, "{history:?}");
    assert!(
        history[added..removed].iter().any(|(k, _)| k == "restart"),
        "the old one goes only after the stack ran with the new one: {history:?}"
    );
    let rows = w.deploy_logs(&id).await;
    assert!(
        rows.iter().any(|r| text(r, "message").starts_with("domain moving:")),
        "{rows:?}"
    );

    // Cleared: back to the base domain, the same way.
    w.sim.clear_requests().await;
    w.pb.patch("tenants", &tenant, json!({"domain": ""})).await;
    wait_served(&w, &id, "one.bots.test.example").await;
    let history = door_history(&w, &uuid).await;
    assert_eq!(
        history
            .iter()
            .filter(|(k, _)| k == "urls")
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>(),
        [
            "https://one.bots.test.example:8080,https://one.acme.example:8080",
            "https://one.bots.test.example:8080"
        ],
        "{history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_of_another_tenant_is_refused_unnamed_and_a_bad_one_moves_nothing() {
    let w = World::start(SIM_QUICK, &[]).await;
    let holder = w.create_tenant("holder-corp", "business").await;
    w.pb.patch(
        "tenants",
        &holder,
        json!({"domain": "shared.example", "domain_verified": true}),
    )
    .await;
    let other = w.create_tenant("other", "business").await;

    // The Admin Portal's write is refused; the answer names neither the holder nor its records.
    let token = w.pb.cached_token().await;
    let (status, body) =
        w.pb.request_as(
            &token,
            "PATCH",
            &format!("/api/collections/tenants/records/{other}"),
            Some(&json!({"domain": "shared.example"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["data"]["domain"]["code"], "validation_not_unique", "{body}");
    let said = body.to_string();
    for secret in [holder.as_str(), "holder-corp", "Tenant holder-corp"] {
        assert!(!said.contains(secret), "{said}");
    }
    assert!(text(&w.record("tenants", &other).await, "domain").is_empty());

    // Not a hostname: shown on the tenant, the instance stays where it is served.
    let id = w.create_instance(&other, "base-llm", "two", "running").await;
    wait_served(&w, &id, "two.bots.test.example").await;
    for (bad, rule) in [
        ("*.wild.example", "is a wildcard"),
        ("localhost", "is a top-level domain"),
        ("bad_label.example", "is not a valid internationalized domain name"),
        ("x.bots.test.example", "is the platform's own domain or under it"),
        // PocketBase's unique index compares the text; the bridge compares the name.
        ("Shared.Example.", "is held by another tenant"),
    ] {
        w.pb.patch("tenants", &other, json!({"domain": bad, "domain_verified": true}))
            .await;
        let t = w
            .wait_record("tenants", &other, rule, WAIT, |t| {
                text(t, "bridge_error").starts_with("custom domain")
            })
            .await;
        let shown = text(&t, "bridge_error");
        assert!(
            shown.starts_with(&format!("custom domain {rule}"))
                && shown.ends_with("; its instances stay where they are served"),
            "{shown}"
        );
        assert_eq!(text(&w.instance(&id).await, "domain"), "two.bots.test.example");
        w.pb.patch("tenants", &other, json!({"domain": "", "domain_verified": false}))
            .await;
        w.wait_record("tenants", &other, "error cleared", WAIT, |t| {
            text(t, "bridge_error").is_empty()
        })
        .await;
    }
    let svc = w.service_of(&id).await.expect("service");
    assert_eq!(service_domains(&svc), ["https://two.bots.test.example:8080"]);

    // An internationalized domain is served in its ASCII form.
    w.pb.patch(
        "tenants",
        &other,
        json!({"domain": "bücher.example", "domain_verified": true}),
    )
    .await;
    wait_served(&w, &id, "two.xn--bcher-kva.example").await;
}
