//! PbClient against a real PocketBase: typed helpers, errors, pagination, concurrency and auth.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cf_bridge::config::PocketBaseSettings;
use cf_bridge::pocketbase::records::{BOT_INSTANCES, DEPLOY_LOGS, TENANTS, parse_pb_date};
use cf_bridge::pocketbase::{
    BotInstance, DeployAction, DeployLog, DeployStatus, DesiredState, InstancePatch, InstanceStatus, NewDeployLog,
    PbClient, PbError, Tenant, TenantPatch,
};
use cf_testkit::TestPb;
use secrecy::SecretString;
use serde_json::{Value, json};

fn url(pb: &TestPb) -> url::Url {
    url::Url::parse(&pb.url).unwrap()
}

async fn seed(pb: &TestPb) -> (String, String) {
    let tenant = pb
        .create_tenant(json!({"name":"Acme","slug":"acme","status":"active","plan_tier":"team"}))
        .await;
    let template = pb
        .create_template(json!({"name":"telegram-bot","cpu_default":0.25,"mem_default":256}))
        .await;
    (
        tenant["id"].as_str().unwrap().into(),
        template["id"].as_str().unwrap().into(),
    )
}

#[tokio::test]
async fn typed_helpers_round_trip_and_duplicates_are_validation_errors() {
    let pb = TestPb::start().await;
    let (tenant, template) = seed(&pb).await;
    let client = pb.client();
    client.authenticate().await.expect("login");

    let body = json!({"tenant": tenant, "template": template, "name": "bot", "subdomain": "dup",
        "desired_state": "running", "config": {"k": "v"}});
    let created: BotInstance = client.create(BOT_INSTANCES, &body).await.expect("create instance");
    assert_eq!(created.desired_state, Some(DesiredState::Running));
    // hooks/pb_hooks/actor.js: a new instance that is to run starts deploying.
    assert_eq!(created.status, Some(InstanceStatus::Deploying));

    let err = client
        .create::<BotInstance>(BOT_INSTANCES, &body)
        .await
        .expect_err("duplicate subdomain");
    match &err {
        PbError::Validation { fields, .. } => assert_eq!(fields.0["subdomain"].code, "validation_not_unique"),
        other => panic!("expected a validation error, got {other:?}"),
    }
    assert!(err.to_string().contains("subdomain: validation_not_unique"), "{err}");

    let healthy = parse_pb_date("2026-03-04 05:06:07.089Z").unwrap();
    let patched = client
        .patch_instance(
            &created.id,
            &InstancePatch {
                status: Some(InstanceStatus::Running),
                coolify_service_id: Some("svc-1".into()),
                last_healthy_at: healthy,
                error_message: Some("x".repeat(3000)),
                ..Default::default()
            },
        )
        .await
        .expect("patch instance");
    assert_eq!(patched.status, Some(InstanceStatus::Running));
    assert_eq!(patched.last_healthy_at, healthy);
    assert_eq!(
        patched.error_message.as_deref().map(str::len),
        Some(2000),
        "cut to the schema limit"
    );
    assert_eq!(
        patched.config,
        json!({"k": "v"}),
        "fields outside the patch are untouched"
    );

    let t: Tenant = client
        .patch_tenant(
            &tenant,
            &TenantPatch {
                coolify_project_uuid: Some("prj-uuid".into()),
                bridge_error: None,
            },
        )
        .await
        .expect("patch tenant");
    assert_eq!(t.coolify_project_uuid.as_deref(), Some("prj-uuid"));
    assert_eq!(client.list_tenants().await.expect("tenants").len(), 1);

    assert_eq!(
        client.get_instance(&created.id).await.expect("get").map(|i| i.id),
        Some(created.id.clone())
    );
    assert!(
        client
            .get_instance("aaaaaaaaaaaaaaa")
            .await
            .expect("get missing")
            .is_none()
    );
    assert!(matches!(
        client.delete(TENANTS, "aaaaaaaaaaaaaaa").await,
        Err(PbError::NotFound)
    ));

    pb.create_template(json!({"name": "it's \"quoted\""})).await;
    let found = client
        .find_template_by_name("it's \"quoted\"")
        .await
        .expect("find by name");
    assert_eq!(found.map(|t| t.name), Some("it's \"quoted\"".to_string()));
    assert_eq!(
        client
            .find_template_by_name("telegram-bot")
            .await
            .unwrap()
            .map(|t| t.mem_default),
        Some(256)
    );
    assert!(client.find_template_by_name("nope").await.unwrap().is_none());
    pb.create_template(json!({"name": r"back\slash\"})).await;
    let found = client
        .find_template_by_name(r"back\slash\")
        .await
        .expect("find by name with backslashes");
    assert_eq!(found.map(|t| t.name), Some(r"back\slash\".to_string()));

    let log = client
        .create_deploy_log(&NewDeployLog {
            instance: Some(created.id.clone()),
            record_id: created.id.clone(),
            collection: BOT_INSTANCES.into(),
            tenant: Some(tenant.clone()),
            action: DeployAction::Deploy,
            status: DeployStatus::Success,
            message: "deployed".into(),
            triggered_by: "test".into(),
            triggered_by_user: None,
            duration_ms: 42,
        })
        .await
        .expect("deploy log");
    assert_eq!((log.action, log.duration_ms), (Some(DeployAction::Deploy), 42));

    client
        .delete(BOT_INSTANCES, &created.id)
        .await
        .expect("delete instance");
    assert!(client.get_instance(&created.id).await.unwrap().is_none());
    let orphan_log: DeployLog = client
        .get(DEPLOY_LOGS, &log.id)
        .await
        .unwrap()
        .expect("log outlives instance");
    assert_eq!(orphan_log.record_id, created.id);
    let destroy = client
        .create_deploy_log(&NewDeployLog {
            instance: None,
            record_id: created.id.clone(),
            collection: BOT_INSTANCES.into(),
            tenant: Some(tenant),
            action: DeployAction::Destroy,
            status: DeployStatus::Success,
            message: "gone".into(),
            triggered_by: "test".into(),
            triggered_by_user: None,
            duration_ms: 1,
        })
        .await
        .expect("log after destroy");
    assert_eq!(destroy.instance, None);
}

#[tokio::test]
async fn keyset_pagination_sees_every_record_once_while_records_change() {
    const N: usize = 2500;
    let pb = TestPb::start().await;
    let (tenant, template) = seed(&pb).await;
    let records: Vec<Value> = (0..N)
        .map(|i| {
            json!({"tenant": tenant, "template": template, "name": format!("bot {i}"),
            "subdomain": format!("k{i:05}"), "desired_state": "running"})
        })
        .collect();
    let created: HashSet<String> = pb.batch_create(BOT_INSTANCES, &records).await.into_iter().collect();
    assert_eq!(created.len(), N);

    let client = pb.client();
    let ids: Arc<Vec<String>> = Arc::new(created.iter().cloned().collect());
    let stop = Arc::new(AtomicBool::new(false));
    let updates = Arc::new(AtomicU64::new(0));
    let updater = {
        let (client, ids, stop, updates) = (client.clone(), ids.clone(), stop.clone(), updates.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let id = &ids[(i * 7919) % ids.len()];
                let state = if i.is_multiple_of(2) { "stopped" } else { "running" };
                client
                    .patch::<Value>(
                        BOT_INSTANCES,
                        id,
                        &json!({"desired_state": state, "mem_limit": i % 1000}),
                    )
                    .await
                    .expect("concurrent update");
                updates.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    while updates.load(Ordering::Relaxed) < 10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let before = updates.load(Ordering::Relaxed);
    let mut seen = Vec::with_capacity(N);
    let mut after: Option<String> = None;
    loop {
        let page: Vec<BotInstance> = client
            .list_page(BOT_INSTANCES, after.as_deref(), Some("desired_state != ''"), 100)
            .await
            .expect("page");
        seen.extend(page.iter().map(|r| r.id.clone()));
        match page.last() {
            Some(last) if page.len() == 100 => after = Some(last.id.clone()),
            _ => break,
        }
    }
    let during = updates.load(Ordering::Relaxed) - before;
    let all = client.list_instances(None).await.expect("list_all");
    stop.store(true, Ordering::Relaxed);
    updater.await.expect("updater task");

    assert!(during > 0, "the updater must run while pages are read");
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        seen.len(),
        N,
        "each record once (got {} rows, {} unique)",
        seen.len(),
        unique.len()
    );
    assert_eq!(unique.len(), N);
    assert!(seen.iter().all(|id| created.contains(id)));
    let all_ids: HashSet<String> = all.into_iter().map(|r| r.id).collect();
    assert_eq!(all_ids, created, "list_all returns exactly the created records");
}

/// Fields written by the bridge (through PbClient as superuser) and by the tenant's user (raw REST).
const BRIDGE_FIELDS: [&str; 4] = ["applied_hash", "secrets_hash", "error_message", "domain"];
const ADMIN_FIELDS: [&str; 4] = ["name", "mem_limit", "cpu_limit", "config"];
const WRITES_PER_FIELD: u64 = 50;

/// The counter each writer last wrote into its field, as seen in a full record.
fn counters(record: &Value) -> [u64; 8] {
    let mut out = [0u64; 8];
    for (i, f) in BRIDGE_FIELDS.iter().chain(ADMIN_FIELDS.iter()).enumerate() {
        let v = &record[*f];
        out[i] = match *f {
            "name" => v
                .as_str()
                .and_then(|s| s.strip_prefix('n'))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            "config" => v["n"].as_u64().unwrap_or(0),
            "mem_limit" | "cpu_limit" => v.as_f64().unwrap_or(0.0) as u64,
            _ => v.as_str().and_then(|s| s.parse().ok()).unwrap_or(0),
        };
    }
    out
}

fn admin_body(field: &str, n: u64) -> Value {
    match field {
        "name" => json!({"name": format!("n{n}")}),
        "config" => json!({"config": {"n": n}}),
        _ => json!({ field: n }),
    }
}

#[tokio::test]
async fn concurrent_patches_of_disjoint_fields_lose_no_write() {
    let pb = TestPb::start().await;
    let user = pb.create_user("owner@test.local", "user-password-1").await;
    let tenant = pb
        .create_tenant(json!({"name":"Acme","slug":"acme","user":user,"status":"active","plan_tier":"team"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let template = pb.create_template(json!({"name":"t"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let id = pb
        .create_instance(
            json!({"tenant": tenant, "template": template, "name": "n0", "subdomain": "race",
            "desired_state": "running"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let user_token = Arc::new(pb.user_token("owner@test.local", "user-password-1").await);
    let client = pb.client();
    client.authenticate().await.expect("login");
    let pb = Arc::new(pb);

    // committed[i] = the last value writer i saw acknowledged. A response whose record shows another
    // writer's field below what that writer had committed before the request was sent is a lost update.
    let committed: Arc<[AtomicU64; 8]> = Arc::new(std::array::from_fn(|_| AtomicU64::new(0)));
    let lost = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..8usize {
        let (client, pb, token, committed, lost, id) = (
            client.clone(),
            pb.clone(),
            user_token.clone(),
            committed.clone(),
            lost.clone(),
            id.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for n in 1..=WRITES_PER_FIELD {
                let floor: Vec<u64> = committed.iter().map(|c| c.load(Ordering::SeqCst)).collect();
                let record = if w < 4 {
                    let mut patch = InstancePatch::default();
                    let v = Some(n.to_string());
                    match BRIDGE_FIELDS[w] {
                        "applied_hash" => patch.applied_hash = v,
                        "secrets_hash" => patch.secrets_hash = v,
                        "error_message" => patch.error_message = v,
                        _ => patch.domain = v,
                    }
                    let rec = client.patch_instance(&id, &patch).await.expect("bridge patch");
                    serde_json::to_value(rec).unwrap()
                } else {
                    let path = format!("/api/collections/bot_instances/records/{id}");
                    let (s, v) = pb
                        .request_as(&token, "PATCH", &path, Some(&admin_body(ADMIN_FIELDS[w - 4], n)))
                        .await;
                    assert_eq!(s, 200, "user patch: {v}");
                    v
                };
                let seen = counters(&record);
                assert_eq!(seen[w], n, "own write not visible in the response");
                for (other, (&s, &f)) in seen.iter().zip(floor.iter()).enumerate() {
                    if other != w && s < f {
                        lost.fetch_add(1, Ordering::SeqCst);
                    }
                }
                committed[w].store(n, Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    let last = pb
        .superuser_request("GET", &format!("/api/collections/bot_instances/records/{id}"), None)
        .await;
    assert_eq!(
        counters(&last),
        [WRITES_PER_FIELD; 8],
        "every field keeps its last write: {last}"
    );
    assert_eq!(lost.load(Ordering::SeqCst), 0, "responses showed overwritten fields");
}

#[tokio::test]
async fn bad_credentials_are_auth_errors_never_empty_lists() {
    let pb = TestPb::start().await;
    seed(&pb).await;

    let wrong_pw = PbClient::new(&PocketBaseSettings::with_password(
        url(&pb),
        &pb.email,
        SecretString::from("not-the-password".to_string()),
    ))
    .unwrap();
    let err = wrong_pw.authenticate().await.expect_err("wrong password");
    assert!(matches!(err, PbError::Auth { .. }), "{err:?}");
    assert!(!err.to_string().contains("not-the-password"));
    assert!(matches!(wrong_pw.list_tenants().await, Err(PbError::Auth { .. })));

    // A well-formed JWT with a bad signature, and plain garbage.
    let good = pb.superuser_token().await;
    // Change a character inside the signature (the last one may only carry padding bits).
    let at = good.rfind('.').expect("a JWT") + 3;
    let swapped = if good.as_bytes()[at] == b'A' { "B" } else { "A" };
    let forged = format!("{}{swapped}{}", &good[..at], &good[at + 1..]);
    for bad in [forged, "garbage".to_string()] {
        let c = PbClient::new(&PocketBaseSettings::with_token(
            url(&pb),
            SecretString::from(bad.clone()),
        ))
        .unwrap();
        assert!(matches!(c.authenticate().await, Err(PbError::Auth { .. })));
        assert!(matches!(c.list_templates().await, Err(PbError::Auth { .. })));
        let shown = format!("{:?}", c.list_tenants().await);
        assert!(!shown.contains(&bad), "the token leaked into an error: {shown}");
    }

    // A static token that works, then is revoked by changing its superuser's password.
    let ops = pb
        .superuser_request(
            "POST",
            "/api/collections/_superusers/records",
            Some(&json!({
            "email": "ops@test.local", "password": "ops-password-1", "passwordConfirm": "ops-password-1"})),
        )
        .await;
    let ops_id = ops["id"].as_str().unwrap();
    let static_token = pb
        .superuser_request(
            "POST",
            &format!("/api/collections/_superusers/impersonate/{ops_id}"),
            Some(&json!({"duration": 3600})),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let c = PbClient::new(&PocketBaseSettings::with_token(
        url(&pb),
        SecretString::from(static_token),
    ))
    .unwrap();
    c.authenticate().await.expect("valid static token");
    let tenant_id = c.list_tenants().await.expect("tenants")[0].id.clone();
    assert!(c.list_instances(None).await.expect("empty but valid").is_empty());

    pb.superuser_request(
        "PATCH",
        &format!("/api/collections/_superusers/records/{ops_id}"),
        Some(&json!({
        "password": "ops-password-2", "passwordConfirm": "ops-password-2"})),
    )
    .await;
    assert!(
        matches!(c.list_instances(None).await, Err(PbError::Auth { .. })),
        "empty list with a revoked token"
    );
    assert!(matches!(c.list_tenants().await, Err(PbError::Auth { .. })));
    assert!(
        matches!(c.get_tenant(&tenant_id).await, Err(PbError::Auth { .. })),
        "a 404 with a revoked token"
    );
    assert!(matches!(
        c.patch_tenant(&tenant_id, &TenantPatch::default()).await,
        Err(PbError::Auth { .. })
    ));
}

#[tokio::test]
async fn token_is_refreshed_at_half_life_and_renewed_after_revocation() {
    let pb = TestPb::start().await;
    seed(&pb).await;
    pb.superuser_request(
        "PATCH",
        "/api/collections/_superusers",
        Some(&json!({"authToken": {"duration": 10}})),
    )
    .await;
    let client = pb.client();
    client.authenticate().await.expect("login");
    let first = client.token().await.unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&client.token().await.unwrap()),
        secrecy::ExposeSecret::expose_secret(&first)
    );

    tokio::time::sleep(Duration::from_millis(5200)).await;
    let second = client.token().await.unwrap();
    assert_ne!(
        secrecy::ExposeSecret::expose_secret(&second),
        secrecy::ExposeSecret::expose_secret(&first),
        "not refreshed at half life"
    );
    assert_eq!(
        client
            .list_tenants()
            .await
            .expect("list with the refreshed token")
            .len(),
        1
    );

    // Changing the password and back invalidates every issued token; the client logs in again by itself.
    let me = pb
        .superuser_request("GET", "/api/collections/_superusers/records", None)
        .await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    pb.superuser_request(
        "POST",
        "/api/collections/_superusers/records",
        Some(&json!({
        "email": "ops@test.local", "password": "ops-password-1", "passwordConfirm": "ops-password-1"})),
    )
    .await;
    let (_, ops) = pb
        .request_as(
            "",
            "POST",
            "/api/collections/_superusers/auth-with-password",
            Some(&json!({"identity": "ops@test.local", "password": "ops-password-1"})),
        )
        .await;
    let ops_token = ops["token"].as_str().expect("ops token");
    for pw in ["temporary-password-9", pb.password.as_str()] {
        let (s, v) = pb
            .request_as(
                ops_token,
                "PATCH",
                &format!("/api/collections/_superusers/records/{me}"),
                Some(&json!({"password": pw, "passwordConfirm": pw})),
            )
            .await;
        assert_eq!(s, 200, "password change: {v}");
    }
    pb.forget_token();
    assert_eq!(client.list_tenants().await.expect("re-login after revocation").len(), 1);
    let third = client.token().await.unwrap();
    assert_ne!(
        secrecy::ExposeSecret::expose_secret(&third),
        secrecy::ExposeSecret::expose_secret(&second)
    );
}
