//! The shipped migration and API rules, against a real PocketBase.

use cf_testkit::TestPb;
use serde_json::{Value, json};

const OURS: [&str; 4] = ["tenants", "bot_templates", "bot_instances", "deploy_logs"];
const BRIDGE_OWNED: [(&str, &str); 13] = [
    ("status", "running"),
    ("coolify_service_id", "svc"),
    ("coolify_project_id", "prj"),
    ("error_message", "boom"),
    ("last_healthy_at", "2026-01-01 00:00:00.000Z"),
    ("secrets_hash", "h"),
    ("applied_hash", "h"),
    ("domain", "x.example.com"),
    ("pending_reason", "waiting for nothing"),
    ("changed_by", "users:someoneelse1234"),
    ("router_key_id", "k1"),
    ("retained_until", "2026-01-01 00:00:00.000Z"),
    ("template_version", "9.9.9"),
];

/// The string literals of the first JS array that follows `opening` in a hook file.
fn js_list(file: &str, opening: &str) -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(cf_testkit::repo_root().join("hooks/pb_hooks").join(file)).expect("hook file");
    let start = text.find(opening).unwrap_or_else(|| panic!("{opening} not in {file}")) + opening.len();
    let end = start + text[start..].find(']').expect("end of the list");
    text[start..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The bridge-owned fields of a bot instance are written down in the Rust fingerprint, in both hooks and in
/// the API rules (checked below with `BRIDGE_OWNED`): a field added to one and not the others makes an
/// echo look like a change, a write-back look like a person's, or lets a user write it.
#[test]
fn every_list_of_bridge_owned_instance_fields_agrees() {
    let meta = ["updated", "created", "collectionId", "collectionName", "expand"];
    let rust: std::collections::BTreeSet<String> = cf_bridge::events::INSTANCE_BRIDGE_FIELDS
        .iter()
        .filter(|f| !meta.contains(f))
        .map(|f| f.to_string())
        .collect();
    let mut webhook = js_list("webhook_sign.js", "bot_instances: [");
    webhook.retain(|f| !meta.contains(&f.as_str()));
    let mut actor = js_list("actor.js", "const BRIDGE_OWNED = [");
    // actor.js serves both collections: the tenant's bridge-owned fields are in it too.
    for tenant_field in ["coolify_project_uuid", "bridge_error"] {
        assert!(actor.remove(tenant_field), "actor.js lacks the tenant's {tenant_field}");
    }
    let rules: std::collections::BTreeSet<String> = BRIDGE_OWNED.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(webhook, rust, "webhook_sign.js vs src/events.rs");
    assert_eq!(actor, rust, "actor.js vs src/events.rs");
    assert_eq!(
        rules, rust,
        "the fields this test proves users cannot write vs src/events.rs"
    );
}

fn collections_in_db(pb: &TestPb) -> Vec<String> {
    let db = rusqlite::Connection::open(pb.data_dir.join("data.db")).expect("open data.db");
    let mut stmt = db
        .prepare("SELECT name FROM _collections ORDER BY name")
        .expect("prepare");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect()
}

fn field_names(collection: &Value) -> Vec<String> {
    collection["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| f["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn migration_applies_reverts_and_reapplies() {
    let mut pb = TestPb::start().await;

    let instances = pb
        .superuser_request("GET", "/api/collections/bot_instances", None)
        .await;
    let fields = field_names(&instances);
    for f in [
        "tenant",
        "template",
        "subdomain",
        "desired_state",
        "status",
        "applied_hash",
        "created",
        "updated",
    ] {
        assert!(fields.contains(&f.to_string()), "bot_instances lacks {f}: {fields:?}");
    }
    let tenants = pb.superuser_request("GET", "/api/collections/tenants", None).await;
    for f in [
        "slug",
        "user",
        "plan_tier",
        "max_stacks",
        "coolify_project_uuid",
        "bridge_error",
    ] {
        assert!(field_names(&tenants).contains(&f.to_string()), "tenants lacks {f}");
    }
    let logs = pb.superuser_request("GET", "/api/collections/deploy_logs", None).await;
    let instance_rel = logs["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "instance")
        .unwrap()
        .clone();
    assert_eq!(instance_rel["required"], false);
    assert_eq!(instance_rel["cascadeDelete"], false);
    assert!(logs["indexes"].to_string().contains("record_id"), "{}", logs["indexes"]);
    let settings = pb.superuser_request("GET", "/api/settings", None).await;
    assert_eq!(settings["batch"]["enabled"], true);

    pb.kill().await;
    // Every migration the project ships was applied last, so reverting that many removes them all.
    let shipped = std::fs::read_dir(cf_testkit::repo_root().join("hooks/pb_migrations"))
        .expect("migrations dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "js"))
        })
        .count()
        .to_string();
    let down = pb.cli(&["migrate", "down", &shipped]).await;
    assert!(
        down.status.success(),
        "migrate down: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    let after_down = collections_in_db(&pb);
    for c in OURS {
        assert!(
            !after_down.contains(&c.to_string()),
            "{c} survived migrate down: {after_down:?}"
        );
    }
    assert!(
        after_down.contains(&"users".to_string()),
        "users must be kept: {after_down:?}"
    );

    let up = pb.cli(&["migrate", "up"]).await;
    assert!(
        up.status.success(),
        "migrate up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let after_up = collections_in_db(&pb);
    for c in OURS {
        assert!(
            after_up.contains(&c.to_string()),
            "{c} missing after migrate up: {after_up:?}"
        );
    }

    pb.restart().await;
    let t = pb
        .create_tenant(json!({"name":"Acme","slug":"acme","status":"active","plan_tier":"team"}))
        .await;
    assert_eq!(t["slug"], "acme");
    let (status, _) = pb
        .request_as(
            &pb.superuser_token().await,
            "POST",
            "/api/collections/tenants/records",
            Some(&json!({"name":"Bad","slug":"-bad-","status":"active","plan_tier":"team"})),
        )
        .await;
    assert_eq!(status, 400, "a non-DNS slug must be refused");
}

struct Side {
    token: String,
    tenant: String,
    instance: String,
    log: String,
}

async fn side(pb: &TestPb, who: &str, template: &str) -> Side {
    let email = format!("{who}@test.local");
    let user = pb.create_user(&email, "user-password-1").await;
    let tenant = pb
        .create_tenant(json!({"name": who, "slug": who, "user": user, "status":"active", "plan_tier":"starter"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let token = pb.user_token(&email, "user-password-1").await;
    // The user creates their own instance: exercises the create rule's happy path.
    let (status, inst) = pb
        .request_as(
            &token,
            "POST",
            "/api/collections/bot_instances/records",
            Some(&json!({
            "tenant": tenant, "template": template, "name": "bot", "subdomain": format!("{who}-bot"),
            "desired_state": "running"})),
        )
        .await;
    assert_eq!(status, 200, "{who} creating an instance in their tenant: {inst}");
    let log = pb
        .superuser_request(
            "POST",
            "/api/collections/deploy_logs/records",
            Some(&json!({
            "instance": inst["id"], "record_id": inst["id"], "collection": "bot_instances", "tenant": tenant,
            "action": "deploy", "status": "success", "message": "ok", "triggered_by": "test", "duration_ms": 5})),
        )
        .await;
    Side {
        token,
        tenant,
        instance: inst["id"].as_str().unwrap().into(),
        log: log["id"].as_str().unwrap().into(),
    }
}

fn ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn users_see_and_write_only_their_own_rows() {
    let pb = TestPb::start().await;
    let template = pb
        .create_template(json!({"name": "telegram-bot", "active": true}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let a = side(&pb, "alpha", &template).await;
    let b = side(&pb, "beta", &template).await;

    for (me, other) in [(&a, &b), (&b, &a)] {
        let (_, l) = pb
            .request_as(&me.token, "GET", "/api/collections/bot_instances/records", None)
            .await;
        assert_eq!(ids(&l), vec![me.instance.clone()]);
        let (_, l) = pb
            .request_as(&me.token, "GET", "/api/collections/tenants/records", None)
            .await;
        assert_eq!(ids(&l), vec![me.tenant.clone()]);
        let (_, l) = pb
            .request_as(&me.token, "GET", "/api/collections/deploy_logs/records", None)
            .await;
        assert_eq!(ids(&l), vec![me.log.clone()]);
        let (s, _) = pb
            .request_as(
                &me.token,
                "GET",
                &format!("/api/collections/bot_instances/records/{}", other.instance),
                None,
            )
            .await;
        assert_eq!(s, 404, "another tenant's instance must be invisible");
        let (_, l) = pb
            .request_as(&me.token, "GET", "/api/collections/bot_templates/records", None)
            .await;
        assert_eq!(ids(&l), vec![template.clone()], "templates are readable by any user");
    }
    let (_, l) = pb
        .request_as("", "GET", "/api/collections/bot_templates/records", None)
        .await;
    assert!(ids(&l).is_empty(), "guests see no templates");

    // No instance in someone else's tenant.
    let (s, _) = pb
        .request_as(
            &a.token,
            "POST",
            "/api/collections/bot_instances/records",
            Some(&json!({
            "tenant": b.tenant, "template": template, "name": "intruder", "subdomain": "intruder",
            "desired_state": "running"})),
        )
        .await;
    assert_eq!(s, 400, "creating in another tenant must be refused");

    let inst_path = format!("/api/collections/bot_instances/records/{}", a.instance);
    for (i, (field, value)) in BRIDGE_OWNED.iter().enumerate() {
        let mut body = json!({"tenant": a.tenant, "template": template, "name": "x",
            "subdomain": format!("sneaky-{i}"), "desired_state": "running"});
        body[*field] = json!(value);
        let (s, _) = pb
            .request_as(&a.token, "POST", "/api/collections/bot_instances/records", Some(&body))
            .await;
        assert_eq!(s, 400, "a user created an instance with bridge-owned {field}");

        let (s, _) = pb
            .request_as(&a.token, "PATCH", &inst_path, Some(&json!({ *field: value })))
            .await;
        assert_ne!(s, 200, "a user updated bridge-owned {field}");
    }
    let fresh = pb.superuser_request("GET", &inst_path, None).await;
    for (field, value) in BRIDGE_OWNED {
        if *field == *"changed_by" {
            // Stamped by hooks/pb_hooks/actor.pb.js with the user who created it, never the forged value.
            let stamp = fresh[field].as_str().unwrap_or_default();
            assert!(stamp.starts_with("users:") && stamp != value, "{field}: {stamp}");
            continue;
        }
        // The instance was created running, so its status starts as deploying (hooks/pb_hooks/actor.js); the
        // others start empty.
        let initial = if *field == *"status" { "deploying" } else { "" };
        assert_eq!(fresh[field], initial, "{field} changed despite the refusal");
    }

    let (s, v) = pb
        .request_as(
            &a.token,
            "PATCH",
            &inst_path,
            Some(&json!({"desired_state": "stopped"})),
        )
        .await;
    assert_eq!((s, v["desired_state"].as_str()), (200, Some("stopped")), "{v}");

    let (s, _) = pb
        .request_as(&a.token, "PATCH", &inst_path, Some(&json!({"tenant": b.tenant})))
        .await;
    assert_ne!(s, 200, "moving an instance to another tenant must be refused");
    assert_eq!(
        pb.superuser_request("GET", &inst_path, None).await["tenant"],
        a.tenant.as_str()
    );

    let b_path = format!("/api/collections/bot_instances/records/{}", b.instance);
    let (s, _) = pb
        .request_as(&a.token, "PATCH", &b_path, Some(&json!({"desired_state": "stopped"})))
        .await;
    assert_eq!(s, 404);
    let (s, _) = pb.request_as(&a.token, "DELETE", &b_path, None).await;
    assert_eq!(s, 404);

    let (s, _) = pb
        .request_as(
            &a.token,
            "PATCH",
            &format!("/api/collections/tenants/records/{}", a.tenant),
            Some(&json!({"plan_tier": "sovereign"})),
        )
        .await;
    // A user may only ask for their tenant's deletion (hooks/pb_migrations/1767571200_cf_bridge_deletion.js);
    // any other write is refused as if the record were not theirs.
    assert_eq!(s, 404, "a tenant's other fields are superuser-only for writes");
    assert_eq!(
        pb.superuser_request("GET", &format!("/api/collections/tenants/records/{}", a.tenant), None)
            .await["plan_tier"],
        "starter"
    );
    let (s, _) = pb
        .request_as(
            &a.token,
            "POST",
            "/api/collections/deploy_logs/records",
            Some(&json!({
            "record_id": a.instance, "tenant": a.tenant, "action": "deploy", "status": "success"})),
        )
        .await;
    assert_eq!(s, 403, "deploy_logs are superuser-only for writes");

    let (s, _) = pb.request_as(&a.token, "DELETE", &inst_path, None).await;
    assert_eq!(s, 204, "a user may delete their own instance");
    let log = pb
        .superuser_request("GET", &format!("/api/collections/deploy_logs/records/{}", a.log), None)
        .await;
    assert_eq!(log["record_id"], a.instance.as_str(), "logs outlive their instance");
}

/// A start or a restart shows `deploying` in the write that asks for it (hooks/pb_hooks/actor.js), so the
/// bridge need not write it; no other write touches the bridge's status.
#[tokio::test]
async fn a_start_or_a_restart_shows_deploying_in_its_own_write() {
    let pb = TestPb::start().await;
    let (tenant, template) = pb.seed_tenant("marks").await;
    let running = pb.create_instance_for(&tenant, &template, "marks-run", "running").await;
    assert_eq!(running["status"], "deploying", "a create that runs: {running}");
    let stopped = pb
        .create_instance_for(&tenant, &template, "marks-stop", "stopped")
        .await;
    assert_eq!(stopped["status"], "pending", "a create that does not run: {stopped}");
    let id = cf_testkit::id(&stopped);
    let patch = |body: Value| pb.patch("bot_instances", &id, body);

    // The bridge's own write-back (bridge-owned fields only) is left as it is.
    let failed = patch(json!({"status": "error", "error_message": "boom", "pending_reason": "x"})).await;
    assert_eq!(failed["status"], "error");
    let started = patch(json!({"desired_state": "running"})).await;
    assert_eq!(
        (
            &started["status"],
            &started["error_message"],
            &started["pending_reason"]
        ),
        (&json!("deploying"), &json!(""), &json!("")),
        "a start: {started}"
    );
    let shown = patch(json!({"status": "running"})).await;
    assert_eq!(shown["status"], "running");
    let edited = patch(json!({"name": "renamed", "config": {"MODEL": "x"}})).await;
    assert_eq!(edited["status"], "running", "an edit of a running instance: {edited}");
    let again = patch(json!({"desired_state": "running"})).await;
    assert_eq!(again["status"], "running", "asking for the state it has: {again}");
    let restarted = patch(json!({"restart_requested_at": "2026-12-05 10:00:00.000Z"})).await;
    assert_eq!(restarted["status"], "deploying", "a restart: {restarted}");
    patch(json!({"status": "running"})).await;
    let stopping = patch(json!({"desired_state": "stopped"})).await;
    assert_eq!(
        stopping["status"], "running",
        "a stop is the bridge's to show: {stopping}"
    );
    let restart_stopped = patch(json!({"restart_requested_at": "2026-12-05 11:00:00.000Z"})).await;
    assert_eq!(
        restart_stopped["status"], "running",
        "a restart of a stopped instance: {restart_stopped}"
    );
    let leaving = patch(json!({"desired_state": "running", "deletion_requested_at": "2026-12-05 12:00:00.000Z"})).await;
    assert_eq!(leaving["status"], "running", "a start with a deletion: {leaving}");
}
