//! Event intake across a stopped or killed bridge process (moved from intake_e2e): changes made while it
//! is down are found by the resync; a webhook burst across a kill -9 loses no acknowledged delivery; and
//! start-up refuses bad PocketBase credentials with a clear message that holds no secret.

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cf_bridge::webhook::WebhookSecret;
use cf_testkit::admin::Version;
use cf_testkit::settings::{PbAccess, TestSettings};
use cf_testkit::{BridgeProcess, TestPb, TestSim, WEBHOOK_SECRET, eventually, free_port, id, updated};
use serde_json::json;

use crate::bridge_bin;

const WAIT: Duration = Duration::from_secs(20);
const WAIT_STATUS: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------------------------------
// 3. Changes made while the bridge is stopped, or while its stream is cut, are found by the resync.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_while_the_bridge_is_stopped_are_found_by_resync() {
    let pb = TestPb::start().await;
    let sim = TestSim::start(cf_testkit::world::SIM_STEPWISE);
    let mut bridge = BridgeProcess::for_stack(bridge_bin(), (&pb).into(), &sim, &[]).await;
    bridge.admin().wait_subscribed(WAIT).await;
    let (tenant, template) = pb.seed_tenant("down").await;
    let a = id(&pb.create_instance_for(&tenant, &template, "down-a", "running").await);
    let c = id(&pb.create_instance_for(&tenant, &template, "down-c", "running").await);
    pb.wait_instance_status(&a, "running", WAIT_STATUS).await;
    pb.wait_instance_status(&c, "running", WAIT_STATUS).await;

    assert!(
        sim.state().await.to_string().contains(&format!("cf-{c}")),
        "instance {c} has a Coolify service"
    );
    bridge.kill9();
    let a_patched = pb.patch("bot_instances", &a, json!({"desired_state": "stopped"})).await;
    let b = pb.create_instance_for(&tenant, &template, "down-b", "running").await;
    pb.delete("bot_instances", &c).await;
    bridge.start_again().await;

    let admin = bridge.admin();
    admin
        .journaled(&a, "update", Version::AtLeast(&updated(&a_patched)), &["resync"], WAIT)
        .await;
    admin
        .journaled(&id(&b), "create", Version::Any, &["resync"], WAIT)
        .await;
    admin.journaled(&c, "delete", Version::Any, &["resync"], WAIT).await;
    pb.wait_instance_status(&a, "stopped", WAIT_STATUS).await;
    pb.wait_instance_status(&id(&b), "running", WAIT_STATUS).await;
    eventually(WAIT, "the deleted instance's Coolify service removed", || async {
        let state = sim.state().await.to_string();
        (!state.contains(&format!("cf-{c}"))).then_some(())
    })
    .await;

    // Once everything is applied, a resync finds nothing new: its change keys (built from the REST
    // listing) equal those realtime built for the same versions.
    let idle = || async {
        let (_, jobs) = admin.get("/admin/jobs?state=queued,running,failed").await;
        jobs["jobs"].as_array().is_some_and(|j| j.is_empty()).then_some(())
    };
    eventually(WAIT, "no pending jobs", idle).await;
    let resync_events = || async {
        let mut n = 0;
        for r in [&a, &id(&b)] {
            n += admin.events(r, Some("resync")).await.len();
        }
        n
    };
    let before = resync_events().await;
    // The resync timestamp has one-second resolution.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let last = bridge.admin().metric("cf_bridge_last_resync_timestamp_seconds").await;
    let (code, _) = admin.send(reqwest::Method::POST, "/admin/resync", json!({})).await;
    assert_eq!(code, 202);
    eventually(WAIT, "the operator's resync", || async {
        (bridge.admin().metric("cf_bridge_last_resync_timestamp_seconds").await > last).then_some(())
    })
    .await;
    assert_eq!(
        resync_events().await,
        before,
        "a resync of applied records enqueues nothing"
    );
}

// ---------------------------------------------------------------------------------------------------
// 5. 1,000 signed webhooks with the bridge killed in the middle: every acknowledged id is journaled.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_webhooks_survive_kill_9() {
    const TOTAL: usize = 1000;
    const SENDERS: usize = 4;
    const KILL_AFTER: usize = 300;
    let pb = TestPb::start().await;
    let sim = TestSim::start(cf_testkit::world::SIM_STEPWISE);
    let mut bridge = BridgeProcess::for_stack(bridge_bin(), (&pb).into(), &sim, &[]).await;
    let secret: WebhookSecret = WEBHOOK_SECRET.parse().expect("test webhook secret");
    let secret = Arc::new(secret);
    let url = format!("{}/hooks/pocketbase", bridge.url);
    let next = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));

    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let (secret, url, next, acked, refused) = (
            secret.clone(),
            url.clone(),
            next.clone(),
            acked.clone(),
            refused.clone(),
        );
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client");
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= TOTAL {
                    return;
                }
                // Distinct change keys: ten records, each with its own `updated` per delivery.
                let body = json!({"event": "update", "collection": "tenants", "record": {
                    "id": format!("burst{}", n % 10), "updated": format!("2026-01-01 00:00:00.{n:03}Z")}})
                .to_string();
                let delivery = format!("msg_burst_{n}");
                let ts = chrono::Utc::now().timestamp().to_string();
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &delivery)
                    .header("webhook-timestamp", &ts)
                    .header("webhook-signature", secret.sign(&delivery, &ts, body.as_bytes()))
                    .body(body)
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().is_success() => acked.lock().expect("acked").push(delivery),
                    _ => {
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    eventually(Duration::from_secs(60), "enough acknowledged webhooks", || async {
        (acked.lock().expect("acked").len() >= KILL_AFTER).then_some(())
    })
    .await;
    bridge.kill9();
    for s in senders {
        s.await.expect("sender");
    }
    let acked: Vec<String> = acked.lock().expect("acked").clone();
    let refused = refused.load(Ordering::SeqCst);
    eprintln!("burst: {} acknowledged, {refused} not", acked.len());
    assert_eq!(acked.len() + refused, TOTAL);
    assert!(refused > 0, "the kill did not land in the middle of the burst");

    let db = rusqlite::Connection::open_with_flags(
        bridge.dir.join("journal.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the journal read-only");
    let mut stmt = db
        .prepare("SELECT delivery_id FROM events WHERE source = 'webhook'")
        .expect("query");
    let stored: HashSet<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("delivery ids");
    drop(stmt);
    drop(db);
    let missing: Vec<&String> = acked.iter().filter(|d| !stored.contains(*d)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged webhooks lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );

    // The bridge starts again on that journal and serves what it holds.
    bridge.start_again().await;
    let admin = bridge.admin();
    let mut seen = HashSet::new();
    for r in 0..10 {
        for e in admin.events(&format!("burst{r}"), Some("webhook")).await {
            if let Some(d) = e["delivery_id"].as_str() {
                seen.insert(d.to_string());
            }
        }
    }
    assert!(
        acked.iter().all(|d| seen.contains(d)),
        "the restarted bridge lists every acknowledged webhook"
    );
}

// ---------------------------------------------------------------------------------------------------
// 6. Wrong superuser password or token: start-up stops with a clear message that holds no secret.

/// The settings of a bridge that never gets past PocketBase (nothing else is reachable).
fn bridge_env(dir: &Path, pb_url: &str) -> Vec<(String, String)> {
    let pb = PbAccess {
        url: pb_url,
        email: "unused@test.local",
        password: "unused",
    };
    TestSettings::new(pb, "http://127.0.0.1:9", "1|unused", dir, free_port())
        .without("CF_BRIDGE__POCKETBASE__SUPERUSER_EMAIL")
        .without("CF_BRIDGE__POCKETBASE__SUPERUSER_PASSWORD")
        .env()
        .to_vec()
}

/// Runs `cf-bridge serve` to its exit; returns (success, stderr).
async fn serve_until_exit(env: &[(String, String)], dir: &Path) -> (bool, String) {
    let config = dir.join("cf-bridge.toml");
    std::fs::write(&config, "# settings come from CF_BRIDGE__* variables\n").expect("config file");
    let child = tokio::process::Command::new(bridge_bin())
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn cf-bridge");
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("cf-bridge should stop on bad credentials, not keep running")
        .expect("cf-bridge output");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pocketbase_credentials_stop_start_up() {
    let pb = TestPb::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let base = bridge_env(dir.path(), &pb.url);

    let wrong_password = "not-the-password-7f3a9c";
    let mut env = base.clone();
    env.push(("CF_BRIDGE__POCKETBASE__SUPERUSER_EMAIL".into(), pb.email.clone()));
    env.push((
        "CF_BRIDGE__POCKETBASE__SUPERUSER_PASSWORD".into(),
        wrong_password.into(),
    ));
    let (ok, stderr) = serve_until_exit(&env, dir.path()).await;
    assert!(!ok, "start-up must fail; stderr:\n{stderr}");
    assert!(stderr.contains("PocketBase authentication failed"), "{stderr}");
    assert!(stderr.contains("wrong email or password"), "{stderr}");
    assert!(!stderr.contains(wrong_password), "the password leaked: {stderr}");

    // A token PocketBase did not sign (well-formed, unexpired) and one that is not a JWT at all.
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let forged = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"HS256","typ":"JWT"}"#),
        b64(
            r#"{"collectionId":"pbc_3142635823","exp":4102444800,"id":"abcdefghijklmno","refreshable":true,"type":"auth"}"#
        ),
        b64("forged-signature-bytes-0123456789")
    );
    for (token, why) in [
        (forged.as_str(), "rejected the superuser token"),
        ("garbage-token-5d1e8b", "not a well-formed JWT"),
    ] {
        let mut env = base.clone();
        env.push(("CF_BRIDGE__POCKETBASE__TOKEN".into(), token.into()));
        let (ok, stderr) = serve_until_exit(&env, dir.path()).await;
        assert!(!ok, "start-up must fail with token {token:.12}...; stderr:\n{stderr}");
        assert!(stderr.contains("PocketBase authentication failed"), "{stderr}");
        assert!(stderr.contains(why), "{stderr}");
        assert!(!stderr.contains(token), "the token leaked: {stderr}");
        // Not even a recognisable part of it.
        assert!(
            !stderr.contains(&token[token.len() - 12..]),
            "part of the token leaked: {stderr}"
        );
    }
}
