//! Canary secrets appear only in the simulator (moved from secrets_e2e): not in the bridge process's
//! output, its files, the admin API's answers, /metrics or anything PocketBase holds.

use std::path::Path;
use std::time::Duration;

use cf_testkit::world::{SIM_QUICK, World};
use rand::RngCore;
use reqwest::Method;
use serde_json::json;

use crate::bridge_bin;

const WAIT: Duration = Duration::from_secs(40);

fn canary(i: usize) -> String {
    let mut b = [0u8; 12];
    rand::rng().fill_bytes(&mut b);
    format!("CNRY{i}q{}", hex::encode(b))
}

/// Every file under `dir` (recursively), as bytes, with its path.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p.display().to_string(), bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_secrets_appear_only_in_the_simulator() {
    let stack = World::start_process(bridge_bin(), SIM_QUICK, &[]).await;
    let tenant = stack.create_tenant("canary", "business").await;
    let bot = stack
        .create_instance_with(&tenant, "telegram-bot", "canary-bot", json!({}))
        .await;
    let agent = stack
        .create_instance_with(&tenant, "openclaw-agent", "canary-agent", json!({}))
        .await;

    // Values that reach Coolify, and values that only ever appear in refused requests.
    let delivered: Vec<String> = (0..4).map(canary).collect();
    let refused: Vec<String> = (4..9).map(canary).collect();
    let with_dollar = format!("{}$suffix", delivered[1]);

    stack.wait_status(&bot, "pending", WAIT).await;
    let mut answers = String::new();
    let (s, a) = stack
        .bridge
        .admin()
        .put_secrets(
            &bot,
            json!({"TELEGRAM_BOT_TOKEN": delivered[0], "EXTRA_DOLLAR": with_dollar}),
        )
        .await;
    assert_eq!(s, 202, "{a}");
    answers.push_str(&a.to_string());
    let (s, a) = stack
        .bridge
        .admin()
        .put_secrets(&agent, json!({"OPENCLAW_GATEWAY_TOKEN": delivered[2]}))
        .await;
    assert_eq!(s, 202, "{a}");
    answers.push_str(&a.to_string());
    stack.wait_status(&bot, "running", WAIT).await;
    stack.wait_status(&agent, "running", WAIT).await;

    // Rotation on a running service.
    let (s, a) = stack
        .bridge
        .admin()
        .put_secrets(
            &bot,
            json!({"TELEGRAM_BOT_TOKEN": delivered[0], "EXTRA_DOLLAR": with_dollar, "NEW_SECRET": delivered[3]}),
        )
        .await;
    assert_eq!(s, 202, "{a}");
    let hash = a["secrets_hash"].as_str().expect("hash").to_string();
    answers.push_str(&a.to_string());
    stack
        .wait_record("bot_instances", &bot, "rotated and running", WAIT, |r| {
            r["secrets_hash"] == hash.as_str() && r["status"] == "running"
        })
        .await;

    // Refused bodies carrying canaries.
    let bad = [
        json!({"bad-key": refused[0]}),
        json!({"TOKEN": {"inner": refused[1]}}),
        json!({"TOKEN": format!("{}{}", refused[2], "y".repeat(17 * 1024))}),
        json!({"TOKEN": format!("\t{}", refused[3])}),
    ];
    for body in bad {
        let (s, a) = stack.bridge.admin().put_secrets(&bot, body).await;
        assert_eq!(s, 400, "{a}");
        answers.push_str(&a.to_string());
    }
    let (s, t) = stack
        .bridge
        .admin()
        .send_raw(
            Method::PUT,
            &format!("/admin/instances/{bot}/secrets"),
            format!("\"{}\"", refused[4]),
        )
        .await;
    assert_eq!(s, 400, "{t}");
    answers.push_str(&t);

    // Everything the bridge exposes about the instances.
    let admin = stack.bridge.admin();
    for path in [
        format!("/admin/instances/{bot}"),
        format!("/admin/instances/{agent}"),
        "/admin/events?limit=500".to_string(),
        "/admin/jobs?state=done,failed,waiting,dead,queued".to_string(),
    ] {
        let (s, v) = admin.get(&path).await;
        assert!(s == 200 || s == 400, "{path}: {s} {v}");
        answers.push_str(&v.to_string());
    }
    let metrics = reqwest::get(format!("{}/metrics", stack.bridge.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("# TYPE"), "metrics look empty: {metrics:.200}");

    // The simulator holds every delivered value (that is where they belong).
    let sim_state = stack.sim.state().await.to_string();
    for c in &delivered {
        assert!(sim_state.contains(c.as_str()), "the simulator lacks canary {c}");
    }
    let bot_envs = stack.sim_envs(&bot).await;
    assert_eq!(bot_envs.get("EXTRA_DOLLAR"), Some(&(with_dollar.clone(), true)));

    // Let the last write-backs and deploy_logs rows land: two equal dumps 300 ms apart.
    let mut previous = stack.dump_collections().await;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = stack.dump_collections().await;
        if now == previous {
            break;
        }
        previous = now;
    }

    let mut places: Vec<(String, Vec<u8>)> = vec![
        ("bridge log".into(), stack.bridge.log().into_bytes()),
        ("admin API answers".into(), answers.into_bytes()),
        ("/metrics".into(), metrics.into_bytes()),
        (
            "PocketBase records (all four collections)".into(),
            stack.dump_collections().await.into_bytes(),
        ),
        ("PocketBase log".into(), stack.pb.log().into_bytes()),
    ];
    let pb_logs = stack.pb.superuser_request("GET", "/api/logs?perPage=500", None).await;
    places.push(("PocketBase request logs".into(), pb_logs.to_string().into_bytes()));
    // The bridge's directory: journal.db with its -wal and -shm, the (encrypted) secret store, the log.
    let bridge_files = files_under(&stack.bridge.dir);
    assert!(
        bridge_files.iter().any(|(p, _)| p.ends_with("journal.db")),
        "journal not found in {:?}",
        stack.bridge.dir
    );
    places.extend(bridge_files);
    places.extend(files_under(&stack.pb.data_dir));

    let mut leaks = Vec::new();
    for c in delivered.iter().chain(refused.iter()) {
        for (place, bytes) in &places {
            if contains(bytes, c) {
                leaks.push(format!("{c} in {place}"));
            }
        }
    }
    assert!(leaks.is_empty(), "canaries leaked:\n{}", leaks.join("\n"));
}
