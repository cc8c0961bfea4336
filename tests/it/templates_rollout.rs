//! Template versions and rollouts (issue 19 item 4), end to end (real PocketBase, coolify-sim, the bridge in
//! the test process, a templates directory of the test's own): a newer version in the directory leaves
//! running stacks alone; new instances get it; a rollout upgrades in batches, each starting only once the
//! one before runs, and a rollback returns the old compose; a failing batch stops the rollout and names the
//! instance; bad requests change nothing; an inactive template takes no new instances.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use cf_testkit::world::{SIM_QUICK, World, text};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
pub(crate) const OLD_IMAGE: &str = "ghcr.io/berriai/litellm:v1.81.9-stable";
pub(crate) const NEW_IMAGE: &str = "ghcr.io/berriai/litellm:v1.82.0-stable";

/// A copy of the shipped templates in `dir`.
pub(crate) fn copy_templates(dir: &Path) {
    let src = cf_testkit::repo_root().join("templates");
    for entry in std::fs::read_dir(&src).expect("templates") {
        let entry = entry.expect("entry");
        let to = dir.join(entry.file_name());
        std::fs::create_dir_all(&to).expect("template dir");
        for f in std::fs::read_dir(entry.path()).expect("template files") {
            let f = f.expect("file");
            std::fs::copy(f.path(), to.join(f.file_name())).expect("copy");
        }
    }
}

/// base-llm 2.0.0: another litellm image.
pub(crate) fn publish_v2(dir: &Path) {
    let t = dir.join("base-llm");
    let manifest = std::fs::read_to_string(t.join("template.toml")).expect("manifest");
    std::fs::write(
        t.join("template.toml"),
        manifest.replace("version = \"1.0.0\"", "version = \"2.0.0\""),
    )
    .expect("write manifest");
    let compose = std::fs::read_to_string(t.join("compose.yml.liquid")).expect("compose");
    assert!(compose.contains(OLD_IMAGE));
    std::fs::write(t.join("compose.yml.liquid"), compose.replace(OLD_IMAGE, NEW_IMAGE)).expect("write compose");
}

pub(crate) async fn world(dir: &Path, sim: &[&str], extra: &[(&str, &str)]) -> World {
    let path = dir.to_str().expect("utf-8 path").to_string();
    let mut env = vec![("CF_BRIDGE__RECONCILE__TEMPLATES_DIR", path.as_str())];
    env.extend_from_slice(extra);
    World::start(sim, &env).await
}

pub(crate) async fn compose_of(w: &World, id: &str) -> String {
    text(&w.service_of(id).await.expect("service"), "compose").to_string()
}

async fn wait_rollout(w: &World, id: &Value) -> Value {
    let admin = w.bridge.admin();
    w.wait("the rollout to end", WAIT * 2, || async {
        let (s, r) = admin.get(&format!("/admin/rollouts/{id}")).await;
        assert_eq!(s, 200, "{r}");
        (r["state"] != "running").then_some(r)
    })
    .await
}

/// Every replay of the records is done (their jobs ran).
async fn replays_done(w: &World, ids: &[String]) {
    let admin = w.bridge.admin();
    for id in ids {
        w.wait("the replay to be done", WAIT, || async {
            let events = admin.events(id, Some("replay")).await;
            (!events.is_empty() && events.iter().all(|e| e["status"] == "done")).then_some(())
        })
        .await;
    }
}

/// A fault on one service: each time the bridge acts on it, its containers exit (the simulator clears a
/// forced status at every action, so it is forced again after each; containers take `SIM_SLOW_START` to
/// start, far longer than this takes to notice).
async fn keep_exited(sim_url: String, uuid: String) {
    let http = cf_testkit::http();
    let mut handled = 0;
    loop {
        let log: Vec<Value> = match http.get(format!("{sim_url}/_sim/requests")).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let writes = writes_to(&log, &uuid).len();
        if writes > handled {
            handled = writes;
            let _ = http
                .post(format!("{sim_url}/_sim/services/{uuid}/status"))
                .json(&json!({"status": "exited"}))
                .send()
                .await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Containers take a second to start: long enough for `keep_exited` to act before any status list.
const SIM_SLOW_START: &[&str] = &[
    "--start-delay-ms",
    "1000",
    "--running-delay-ms",
    "0",
    "--delete-delay-ms",
    "100",
    "--rate-limit",
    "100000",
];

/// When the simulator first answered with the service running after `after_ms`.
fn running_at(log: &[Value], uuid: &str, after_ms: u64) -> Option<u64> {
    fn shows_running(v: &Value, uuid: &str) -> bool {
        match v {
            Value::Array(a) => a.iter().any(|x| shows_running(x, uuid)),
            Value::Object(o) => {
                (o.get("uuid").and_then(Value::as_str) == Some(uuid)
                    && o.get("status")
                        .and_then(Value::as_str)
                        .is_some_and(|s| s.starts_with("running")))
                    || o.values()
                        .any(|x| matches!(x, Value::Array(_)) && shows_running(x, uuid))
            }
            _ => false,
        }
    }
    log.iter()
        .filter(|e| e["method"] == "GET" && e["at_ms"].as_u64().is_some_and(|t| t > after_ms))
        .find(|e| shows_running(&e["response"], uuid))
        .and_then(|e| e["at_ms"].as_u64())
}

/// The times of the writes to a service (its update, restart or start).
fn writes_to(log: &[Value], uuid: &str) -> Vec<u64> {
    log.iter()
        .filter(|e| e["method"] != "GET" && text(e, "uri").contains(uuid))
        .filter_map(|e| e["at_ms"].as_u64())
        .collect()
}

/// A tenant named `name` with `n` base-llm instances, all running: the tenant's id and theirs, in creation order.
async fn running_fleet(w: &mut World, name: &str, n: usize) -> (String, Vec<String>) {
    let tenant = w.create_tenant(name, "business").await;
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            w.create_instance(&tenant, "base-llm", &format!("{name}{i}"), "running")
                .await,
        );
    }
    for id in &ids {
        w.wait_status(id, "running", WAIT).await;
    }
    (tenant, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_waits_for_a_rollout_in_batches_and_a_rollback_returns_the_old_compose() {
    let dir = tempfile::tempdir().expect("templates dir");
    copy_templates(dir.path());
    let mut w = world(dir.path(), SIM_QUICK, &[]).await;
    let (tenant, ids) = running_fleet(&mut w, "versions", 5).await;
    for id in &ids {
        let r = w.instance(id).await;
        assert_eq!(text(&r, "template_version"), "1.0.0", "{r}");
        assert!(compose_of(&w, id).await.contains(OLD_IMAGE));
    }

    // A stack applied before versions were recorded has none: it runs the first version the bridge loaded.
    let unrecorded = ids[0].clone();
    w.pb.patch("bot_instances", &unrecorded, json!({"template_version": ""}))
        .await;

    // A newer version in the directory: every stack reconciled again keeps its compose.
    publish_v2(dir.path());
    w.bridge.restart().await;
    w.sim.clear_requests().await;
    let admin = w.bridge.admin();
    for id in &ids {
        let (s, body) = admin
            .send(
                reqwest::Method::POST,
                "/admin/replay",
                json!({"record": format!("bot_instances/{id}")}),
            )
            .await;
        assert_eq!(s, 200, "{body}");
    }
    replays_done(&w, &ids).await;
    let log = w.sim.requests().await;
    assert!(
        log.iter().all(|e| e["method"] == "GET"),
        "a new template version changed running stacks: {:?}",
        log.iter()
            .filter(|e| e["method"] != "GET")
            .map(|e| format!("{} {}", text(e, "method"), text(e, "uri")))
            .collect::<Vec<_>>()
    );
    for id in &ids {
        assert!(compose_of(&w, id).await.contains(OLD_IMAGE), "{id}");
        let recorded = if *id == unrecorded { "" } else { "1.0.0" };
        assert_eq!(text(&w.instance(id).await, "template_version"), recorded);
    }

    // A new instance gets the newest version.
    let fresh = w.create_instance(&tenant, "base-llm", "ver-new", "running").await;
    let r = w.wait_status(&fresh, "running", WAIT).await;
    assert_eq!(text(&r, "template_version"), "2.0.0", "{r}");
    assert!(compose_of(&w, &fresh).await.contains(NEW_IMAGE));

    // Bad requests change nothing.
    let (s, body) = admin
        .send(
            reqwest::Method::POST,
            "/admin/templates/base-llm/rollout",
            json!({"to": "9.9.9"}),
        )
        .await;
    assert_eq!(s, 404, "{body}");
    assert!(text(&body, "detail").contains("no version of that name"), "{body}");
    let (s, body) = admin
        .send(reqwest::Method::POST, "/admin/templates/no-such/rollout", json!({}))
        .await;
    assert_eq!(s, 404, "{body}");
    let (s, body) = admin
        .send(
            reqwest::Method::POST,
            "/admin/templates/base-llm/rollout",
            json!({"batch": 0}),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    let (s, body) = admin
        .send(reqwest::Method::POST, "/admin/templates/base-llm/rollback", json!({}))
        .await;
    assert_eq!(s, 409, "nothing to roll back yet: {body}");
    for (body, status) in [
        (json!({"tenant": "nobody-here"}), 404),
        (json!({"batch": 21}), 400),
        (json!({"to": 2}), 400),
        (json!({"surprise": true}), 400),
    ] {
        let (s, answer) = admin
            .send(reqwest::Method::POST, "/admin/templates/base-llm/rollout", body.clone())
            .await;
        assert_eq!(s, status, "{body}: {answer}");
        assert!(
            !answer.to_string().contains("nobody-here"),
            "the slug sent is not echoed: {answer}"
        );
    }
    let (s, _) = admin.get("/admin/rollouts/1").await;
    assert_eq!(s, 404, "a refused request starts no rollout");

    // The rollout, in batches of 2; a second one for the template meanwhile is refused.
    w.sim.clear_requests().await;
    let (s, started) = admin
        .send(
            reqwest::Method::POST,
            "/admin/templates/base-llm/rollout",
            json!({"batch": 2}),
        )
        .await;
    assert_eq!(s, 202, "{started}");
    assert_eq!(started["batches_total"], 3, "{started}");
    let (s, body) = admin
        .send(
            reqwest::Method::POST,
            "/admin/templates/base-llm/rollout",
            json!({"batch": 2}),
        )
        .await;
    assert_eq!(s, 409, "{body}");
    assert!(text(&body, "detail").contains("still running"), "{body}");
    let (s, body) = admin
        .send(reqwest::Method::POST, "/admin/templates/base-llm/rollback", json!({}))
        .await;
    assert_eq!(s, 409, "{body}");

    let done = wait_rollout(&w, &started["id"]).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["batches_done"], 3, "{done}");
    let order: Vec<String> = done["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| text(i, "instance").to_string())
        .collect();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(order, expected, "the new instance is at 2.0.0 already");
    let mut uuids = BTreeMap::new();
    for id in &ids {
        let r = w.instance(id).await;
        assert_eq!(text(&r, "template_version"), "2.0.0", "{r}");
        assert_eq!(r["status"], "running", "{r}");
        assert!(compose_of(&w, id).await.contains(NEW_IMAGE), "{id}");
        uuids.insert(id.clone(), text(&r, "coolify_service_id").to_string());
        let rows = w.deploy_logs(id).await;
        assert!(
            rows.iter().any(|r| r["triggered_by"] == "operator"
                && r["status"] == "success"
                && text(r, "message").starts_with("template version 1.0.0 -> 2.0.0")),
            "{rows:?}"
        );
    }
    // No batch starts before the one before it runs.
    let log = w.sim.requests().await;
    let batches: Vec<&[String]> = order.chunks(2).collect();
    for pair in batches.windows(2) {
        let ran = pair[0]
            .iter()
            .map(|id| {
                let uuid = &uuids[id];
                let last_write = writes_to(&log, uuid)
                    .into_iter()
                    .max()
                    .expect("the batch wrote to its services");
                running_at(&log, uuid, last_write).unwrap_or_else(|| panic!("{id} never seen running"))
            })
            .max()
            .expect("a batch");
        let next_start = pair[1]
            .iter()
            .flat_map(|id| writes_to(&log, &uuids[id]))
            .min()
            .expect("the next batch wrote to its services");
        assert!(
            next_start > ran,
            "batch {:?} started at {next_start} ms before the one before ran ({ran} ms)",
            pair[1]
        );
    }

    // The rollback returns the old compose.
    let (s, back) = admin
        .send(reqwest::Method::POST, "/admin/templates/base-llm/rollback", json!({}))
        .await;
    assert_eq!(s, 202, "{back}");
    assert_eq!(back["kind"], "rollback");
    let back = wait_rollout(&w, &back["id"]).await;
    assert_eq!(back["state"], "succeeded", "{back}");
    for id in &ids {
        let r = w.instance(id).await;
        assert_eq!(text(&r, "template_version"), "1.0.0", "{r}");
        assert!(compose_of(&w, id).await.contains(OLD_IMAGE), "{id}");
    }
    assert!(
        compose_of(&w, &fresh).await.contains(NEW_IMAGE),
        "the rollback moves only what the rollout moved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_batch_stops_the_rollout_and_an_inactive_template_takes_no_new_instances() {
    let dir = tempfile::tempdir().expect("templates dir");
    copy_templates(dir.path());
    let mut w = world(
        dir.path(),
        SIM_SLOW_START,
        &[("CF_BRIDGE__RECONCILE__RUNNING_TIMEOUT_SECS", "3")],
    )
    .await;
    let (tenant, mut ids) = running_fleet(&mut w, "failing", 5).await;
    ids.sort();
    publish_v2(dir.path());
    w.bridge.restart().await;

    // The first instance of the second batch cannot run: its containers exit after each action on it.
    let broken = ids[2].clone();
    let uuid = text(&w.instance(&broken).await, "coolify_service_id").to_string();
    let breaker = tokio::spawn(keep_exited(w.sim.url.clone(), uuid));
    let admin = w.bridge.admin();
    let (s, started) = admin
        .send(
            reqwest::Method::POST,
            "/admin/templates/base-llm/rollout",
            json!({"batch": 2}),
        )
        .await;
    assert_eq!(s, 202, "{started}");
    let r = wait_rollout(&w, &started["id"]).await;
    breaker.abort();
    assert_eq!(r["state"], "failed", "{r}");
    assert_eq!(r["batches_done"], 1, "{r}");
    assert_eq!(r["failure"]["batch"], 2, "{r}");
    assert_eq!(r["failure"]["instance"], broken.as_str(), "{r}");
    assert!(!text(&r["failure"], "reason").is_empty(), "{r}");
    for id in &ids[..2] {
        assert_eq!(text(&w.instance(id).await, "template_version"), "2.0.0");
    }
    assert_eq!(
        text(&w.instance(&ids[4]).await, "template_version"),
        "1.0.0",
        "no batch after the failed one"
    );
    assert_eq!(text(&w.instance(&broken).await, "template_version"), "1.0.0");

    // With the fault gone, the rollback returns every instance the rollout moved to the old compose, the
    // failed one too: Coolify holds the new compose it was sent before its containers exited.
    let (s, back) = admin
        .send(reqwest::Method::POST, "/admin/templates/base-llm/rollback", json!({}))
        .await;
    assert_eq!(s, 202, "{back}");
    let back = wait_rollout(&w, &back["id"]).await;
    assert_eq!(back["state"], "succeeded", "{back}");
    for id in &ids[..3] {
        let r = w.wait_status(id, "running", WAIT).await;
        assert_eq!(text(&r, "template_version"), "1.0.0", "{r}");
        assert!(compose_of(&w, id).await.contains(OLD_IMAGE), "{id}");
    }

    // An inactive template: no new instances, the running ones stay.
    let template = w.templates["base-llm"].clone();
    w.pb.patch("bot_templates", &template, json!({"active": false})).await;
    let refused = w.create_instance(&tenant, "base-llm", "fail-new", "running").await;
    let r = w.wait_status(&refused, "error", WAIT).await;
    assert_eq!(
        text(&r, "error_message"),
        "template base-llm is inactive: it takes no new instances",
        "{r}"
    );
    assert!(w.service_of(&refused).await.is_none());
    assert_eq!(w.instance(&ids[0]).await["status"], "running");
}

fn out_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_started_from_the_cli_resumes_after_a_restart_and_rolls_back() {
    let dir = tempfile::tempdir().expect("templates dir");
    copy_templates(dir.path());
    let mut w = world(dir.path(), SIM_SLOW_START, &[]).await;
    let (_, ids) = running_fleet(&mut w, "resume", 3).await;
    publish_v2(dir.path());
    w.bridge.restart().await;
    let url = w.bridge.url.clone();
    let config = w.cli_config();
    let cli = move |args: Vec<String>| {
        let config = config.clone();
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut all = vec!["--admin-url".to_string(), url];
            all.extend(args);
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            cf_testkit::cli::run(crate::bridge_bin(), &config, &all, &[])
        })
    };

    let out = cli(vec![
        "templates".into(),
        "rollout".into(),
        "base-llm".into(),
        "--to".into(),
        "9.9.9".into(),
    ])
    .await
    .expect("cli");
    assert!(!out.status.success());
    assert!(
        out_text(&out.stderr).contains("no version of that name"),
        "{}",
        out_text(&out.stderr)
    );

    let out = cli(vec![
        "templates".into(),
        "rollout".into(),
        "base-llm".into(),
        "--batch".into(),
        "1".into(),
        "--detach".into(),
    ])
    .await
    .expect("cli");
    assert!(out.status.success(), "{}", out_text(&out.stderr));
    assert!(
        out_text(&out.stdout).contains("rollout 1 started"),
        "{}",
        out_text(&out.stdout)
    );

    // Stopped after its first batch, the bridge picks the rollout up where it stood.
    let admin = w.bridge.admin();
    w.wait("the first batch", WAIT, || async {
        let (_, r) = admin.get("/admin/rollouts/1").await;
        (r["batches_done"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    w.bridge.restart().await;
    let r = wait_rollout(&w, &json!(1)).await;
    assert_eq!(r["state"], "succeeded", "{r}");
    for id in &ids {
        assert_eq!(text(&w.instance(id).await, "template_version"), "2.0.0");
    }
    assert!(w.bridge.log().contains("resuming rollout"));

    let out = cli(vec!["templates".into(), "rollback".into(), "base-llm".into()])
        .await
        .expect("cli");
    assert!(out.status.success(), "{}", out_text(&out.stderr));
    assert!(
        out_text(&out.stdout).contains("rollback): succeeded, 3/3 batches done"),
        "{}",
        out_text(&out.stdout)
    );
    for id in &ids {
        assert_eq!(text(&w.instance(id).await, "template_version"), "1.0.0");
        assert!(compose_of(&w, id).await.contains(OLD_IMAGE), "{id}");
    }
}
