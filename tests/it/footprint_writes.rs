//! Issue 17's cheap wins, each counted in PocketBase requests avoided (the requests the bridge sends
//! through a counting proxy): no `deploying` write for an action that finishes at once, no quota count for
//! an instance already admitted, no wake-up of a tenant's instances for a tenant edit they do not read;
//! and no more record writes in flight than `pocketbase.max_writes_in_flight`.

use std::time::Duration;

use cf_testkit::faultproxy::{Fault, ProxiedStack, Rule};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);

fn requests(stack: &ProxiedStack, method_and_prefix: &str, contains: &str) -> usize {
    stack
        .proxy
        .forwarded(|r| r.starts_with(method_and_prefix) && r.contains(contains))
}

async fn wait_record(stack: &ProxiedStack, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    cf_testkit::eventually(WAIT, what, || async {
        let r = stack.record("bot_instances", id).await;
        check(&r).then_some(r)
    })
    .await
}

async fn tenant_wakeups(stack: &ProxiedStack, id: &str) -> usize {
    stack.bridge.admin().events(id, Some("tenant")).await.len()
}

/// Waits until the tenant's job has handled the version `patched` of the record.
async fn tenant_job_done(stack: &ProxiedStack, tenant: &str, patched: &Value) {
    let version = patched["updated"].as_str().unwrap_or_default().to_string();
    cf_testkit::eventually(WAIT, "the tenant's job to handle the edit", || async {
        let events = stack.bridge.admin().events(tenant, None).await;
        events
            .iter()
            .any(|e| e["record_updated"] == version.as_str() && e["status"] == "done")
            .then_some(())
    })
    .await;
    stack.wait_idle(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_actions_admitted_stacks_and_tenant_renames_spare_pocketbase() {
    let stack = ProxiedStack::start(&[]).await;
    // The tenant's plan has a stack limit, so admission counts the tenant's earlier stacks.
    let tenant = stack.ready_tenant("spare").await;
    let body = |sub: &str| {
        json!({"tenant": tenant, "template": stack.template_id, "name": sub, "subdomain": sub,
               "desired_state": "stopped", "config": {}})
    };
    let id = stack.pb.create_instance(body("spare-a")).await["id"]
        .as_str()
        .expect("instance id")
        .to_string();
    let stopped = wait_record(&stack, &id, "the instance stopped", |r| r["status"] == "stopped").await;
    assert!(stopped["coolify_service_id"].as_str().is_some_and(|s| !s.is_empty()));
    stack.wait_idle(WAIT).await;

    // Created stopped: done at once, so no `deploying` PATCH went before the write-back (its batch); the
    // one PATCH is the service's uuid, recorded as soon as it exists (docs/RELIABILITY.md).
    let patches = |id: &str| {
        requests(
            &stack,
            &format!("PATCH /api/collections/bot_instances/records/{id}"),
            "",
        )
    };
    assert_eq!(patches(&id), 1, "a deploying write for an action that finished at once");

    // Admitted once, a stack is not counted again: starting it and editing it make no count query.
    let counts = || {
        requests(
            &stack,
            "GET /api/collections/bot_instances/records?",
            "perPage=1&fields=id",
        )
    };
    assert_eq!(counts(), 1, "the first admission counts the tenant's earlier stacks");
    let started = stack
        .pb
        .patch("bot_instances", &id, json!({"desired_state": "running"}))
        .await;
    // The start shows `deploying` in the person's own write (hooks/pb_hooks/actor.js), so the bridge
    // writes none: its one write for the start is the final batch.
    assert_eq!(started["status"], "deploying", "the start's own write: {started}");
    let running = wait_record(&stack, &id, "the instance running", |r| r["status"] == "running").await;
    assert_eq!(patches(&id), 1, "the bridge wrote `deploying` over the start's own");
    stack
        .pb
        .patch("bot_instances", &id, json!({"config": {"MODEL": "other"}}))
        .await;
    wait_record(&stack, &id, "the config applied", |r| {
        r["applied_hash"] != running["applied_hash"] && r["status"] == "running"
    })
    .await;
    stack.wait_idle(WAIT).await;
    assert_eq!(counts(), 1, "an admitted stack was counted again");
    let newcomer = stack.pb.create_instance(body("spare-b")).await["id"]
        .as_str()
        .expect("instance id")
        .to_string();
    wait_record(&stack, &newcomer, "the newcomer stopped", |r| r["status"] == "stopped").await;
    assert_eq!(counts(), 2, "a newcomer is counted");

    // Renaming the tenant wakes none of its instances (no list, no instance job); a plan change does.
    stack.wait_idle(WAIT).await;
    let lists = || requests(&stack, "GET /api/collections/bot_instances/records?", "tenant");
    let (woken, listed) = (tenant_wakeups(&stack, &id).await, lists());
    let renamed = stack
        .pb
        .patch("tenants", &tenant, json!({"name": "Spare Renamed"}))
        .await;
    tenant_job_done(&stack, &tenant, &renamed).await;
    assert_eq!(tenant_wakeups(&stack, &id).await, woken, "a rename woke the instance");
    assert_eq!(lists(), listed, "a rename listed the tenant's instances");
    let upgraded = stack
        .pb
        .patch("tenants", &tenant, json!({"plan_tier": "sovereign"}))
        .await;
    tenant_job_done(&stack, &tenant, &upgraded).await;
    assert_eq!(
        tenant_wakeups(&stack, &id).await,
        woken + 1,
        "an upgrade wakes the instance"
    );
}

/// Checks the bridge's reads of one instance with its relations (the job's read of the record): `expected`,
/// plus at most one for each wake-up by the health poller (a job it wakes reads, and the 1 s poll of the
/// tests may judge a service in between).
async fn assert_reads(stack: &ProxiedStack, id: &str, expected: usize, what: &str) {
    let reads = requests(
        stack,
        &format!("GET /api/collections/bot_instances/records/{id}?"),
        "expand=",
    );
    let health = stack.bridge.admin().events(id, Some("health")).await.len();
    assert!(
        (expected..=expected + health).contains(&reads),
        "{what}: {reads} reads, expected {expected} (and {health} health wake-ups)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_stream_brought_is_worked_from_its_frame_and_a_tenant_change_reads() {
    let stack = ProxiedStack::start(&[]).await;
    let tenant = stack.ready_tenant("frames").await;
    let id = stack.create_instance(&tenant, "frames-a").await;
    wait_record(&stack, &id, "the instance running", |r| r["status"] == "running").await;
    // The template was created before the bridge started: the stream never brought it, so the first job
    // reads the instance with it (and keeps the template for the next).
    assert_reads(&stack, &id, 1, "the first job reads its template").await;
    stack
        .pb
        .patch("bot_instances", &id, json!({"desired_state": "stopped"}))
        .await;
    wait_record(&stack, &id, "the instance stopped", |r| r["status"] == "stopped").await;
    stack
        .pb
        .patch("bot_instances", &id, json!({"config": {"MODEL": "other"}}))
        .await;
    stack.wait_idle(WAIT).await;
    let applied = stack.record("bot_instances", &id).await;
    assert_eq!(applied["status"], "stopped");
    assert_reads(
        &stack,
        &id,
        1,
        "a stop and a config edit by realtime each took the record from their frame",
    )
    .await;
    let admin = stack.bridge.admin();
    assert!(admin.metric("cf_bridge_instance_records_total{from=\"frame\"}").await >= 2.0);

    // A plan change wakes the instance through its tenant's job, which reads it.
    let upgraded = stack
        .pb
        .patch("tenants", &tenant, json!({"plan_tier": "sovereign"}))
        .await;
    tenant_job_done(&stack, &tenant, &upgraded).await;
    assert_reads(&stack, &id, 2, "the woken job read the instance").await;

    // A change after that is taken from its frame again, with the tenant as its own frame brought it: two
    // cores are above the business plan's ceiling and within the sovereign plan's.
    stack
        .pb
        .patch(
            "bot_instances",
            &id,
            json!({"desired_state": "running", "cpu_limit": 2}),
        )
        .await;
    let r = wait_record(&stack, &id, "the instance running again", |r| {
        r["status"] == "running" || r["status"] == "error"
    })
    .await;
    assert_eq!(
        r["status"], "running",
        "judged by the tenant as it was before the upgrade: {r}"
    );
    stack.wait_idle(WAIT).await;
    assert_reads(&stack, &id, 2, "the start took its frame").await;

    // An instance created next takes its template from what the first job kept, and a new tenant's
    // first instance its tenant from the tenant's own frames.
    let next = stack.create_instance(&tenant, "frames-b").await;
    wait_record(&stack, &next, "the next instance running", |r| r["status"] == "running").await;
    assert_reads(&stack, &next, 0, "the template was kept").await;
    let other = stack.ready_tenant("frames-other").await;
    let first = stack.create_instance(&other, "frames-c").await;
    wait_record(&stack, &first, "the new tenant's instance running", |r| {
        r["status"] == "running"
    })
    .await;
    assert_reads(&stack, &first, 0, "the tenant came by its frames").await;
}

/// A slow `deploying` write does not hold up the Coolify call it announces: a config change's redeploy
/// goes while the write is still on its way to PocketBase, and the final write-back comes after both. (A
/// start shows `deploying` in the person's own write, so the bridge writes it for a change like this.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeploy_reaches_coolify_while_its_deploying_write_is_on_its_way() {
    let stack = ProxiedStack::start(&[]).await;
    let tenant = stack.ready_tenant("beside").await;
    let id = stack
        .pb
        .create_instance(
            json!({"tenant": tenant, "template": stack.template_id, "name": "beside-a",
                                "subdomain": "beside-a", "desired_state": "running", "config": {}}),
        )
        .await["id"]
        .as_str()
        .expect("instance id")
        .to_string();
    let running = wait_record(&stack, &id, "the instance running", |r| r["status"] == "running").await;
    let uuid = running["coolify_service_id"]
        .as_str()
        .expect("service uuid")
        .to_string();
    stack.wait_idle(WAIT).await;

    let record_path = format!("/api/collections/bot_instances/records/{id}");
    let delay = Duration::from_secs(10);
    let delayed = stack.proxy.add_rule(cf_testkit::faultproxy::Rule::new(
        cf_testkit::faultproxy::Fault::Delay(delay),
        Some("PATCH"),
        &[&record_path, "deploying"],
    ));
    let record_patches = || {
        stack
            .proxy
            .forwarded(|r| r.starts_with(&format!("PATCH {record_path}")))
    };
    let patches_before = record_patches();
    let changes = |log: &[Value]| {
        log.iter()
            .filter(|r| r["method"] != "GET" && r["uri"].as_str().is_some_and(|u| u.contains(&uuid)))
            .count()
    };
    let changes_before = changes(&stack.sim.requests().await);
    let asked = std::time::Instant::now();
    stack
        .pb
        .patch("bot_instances", &id, json!({"config": {"MODEL": "other"}}))
        .await;
    cf_testkit::eventually(WAIT, "the redeploy in Coolify", || async {
        (changes(&stack.sim.requests().await) > changes_before).then_some(())
    })
    .await;
    assert_eq!(
        delayed.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the deploying write was sent"
    );
    assert_eq!(
        record_patches(),
        patches_before,
        "the redeploy waited for the deploying write ({:?} after the change)",
        asked.elapsed()
    );

    let redeployed = wait_record(&stack, &id, "the change applied", |r| {
        r["status"] == "running" && r["applied_hash"] != running["applied_hash"]
    })
    .await;
    assert!(
        asked.elapsed() >= delay,
        "the write-back came before the deploying write"
    );
    assert_eq!(redeployed["error_message"], "");
    stack.wait_idle(WAIT).await;
    assert_eq!(stack.record("bot_instances", &id).await["status"], "running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_write_backs_keeps_at_most_max_writes_in_flight() {
    let stack = ProxiedStack::start(&[("CF_BRIDGE__POCKETBASE__MAX_WRITES_IN_FLIGHT", "2")]).await;
    let tenant = stack.ready_tenant("gate").await;
    // Every record write is held 300 ms on its way: while one waits for its answer, the bridge's next
    // writes either wait for a permit or pile up here.
    let held = Fault::Delay(Duration::from_millis(300));
    stack
        .proxy
        .add_rule(Rule::new(held, Some("PATCH"), &["/api/collections/"]).times(1000));
    stack
        .proxy
        .add_rule(Rule::new(held, Some("POST"), &["/api/batch"]).times(1000));
    let mut ids = Vec::new();
    for n in 0..8 {
        let sub = format!("gate-{n}");
        let created = stack
            .pb
            .create_instance(json!({"tenant": tenant, "template": stack.template_id, "name": sub,
                "subdomain": sub, "desired_state": "stopped", "config": {}}))
            .await;
        ids.push(created["id"].as_str().expect("instance id").to_string());
    }
    for id in &ids {
        let stopped = wait_record(&stack, id, "the instance stopped", |r| r["status"] == "stopped").await;
        assert!(stopped["coolify_service_id"].as_str().is_some_and(|s| !s.is_empty()));
    }
    // Each of the 8 jobs wrote its service's uuid alone, then its write-back in a batch (some of those
    // queued behind writes in flight and went out together): at least 9 writes were held.
    let uuids = stack
        .proxy
        .forwarded(|r| r.starts_with("PATCH /api/collections/bot_instances/"));
    let batches = stack.proxy.forwarded(|r| r.starts_with("POST /api/batch"));
    assert!(
        uuids >= 8 && batches >= 1,
        "only {uuids} uuid writes and {batches} batches went out"
    );
    assert_eq!(
        stack.proxy.most_delayed_at_once(),
        2,
        "the bridge's record writes in flight at once (pocketbase.max_writes_in_flight = 2)"
    );
}
