//! `/metrics` of a real bridge: which build answers, the process's own figures, and webhook deliveries
//! refused by reason.

use std::time::Duration;

use cf_bridge::metrics::WEBHOOK_REJECTIONS;
use cf_bridge::webhook::WebhookSecret;
use cf_testkit::WEBHOOK_SECRET;
use cf_testkit::promtext::{self, Exposition};
use cf_testkit::world::{SIM_QUICK, World};
use serde_json::json;

async fn scrape(w: &World) -> Exposition {
    let text = w.bridge.admin().metrics().await;
    promtext::parse(&text).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_info_process_figures_and_webhook_rejections_by_reason() {
    let w = World::start(SIM_QUICK, &[]).await;
    let m = scrape(&w).await;

    // The build: version, and the commit when the build knew it (a checkout does).
    let mut labels = vec![("version", env!("CARGO_PKG_VERSION"))];
    labels.extend(option_env!("CF_BRIDGE_GIT_SHA").map(|sha| ("git_sha", sha)));
    assert_eq!(m.get("cf_bridge_build_info", &labels), Some(1.0), "{labels:?}");
    assert_eq!(m.types.get("cf_bridge_build_info").map(String::as_str), Some("gauge"));

    // The process, under the conventional names.
    let now = chrono::Utc::now().timestamp() as f64;
    let positive = |name: &str| m.get(name, &[]).is_some_and(|v| v > 0.0);
    assert!(positive("process_resident_memory_bytes"));
    assert!(positive("process_open_fds"), "the journal and the listener at least");
    assert!(m.get("process_cpu_seconds_total", &[]).is_some_and(|v| v >= 0.0));
    let started = m.get("process_start_time_seconds", &[]).unwrap_or_default();
    assert!(
        started > now - 86_400.0 && started <= now + 1.0,
        "start time {started}, now {now}"
    );

    // Every reason is shown from zero.
    for reason in WEBHOOK_REJECTIONS {
        assert_eq!(
            m.get("cf_bridge_webhook_rejected_total", &[("reason", reason)]),
            Some(0.0),
            "{reason}"
        );
    }

    let secret: WebhookSecret = WEBHOOK_SECRET.parse().expect("test webhook secret");
    let http = cf_testkit::http();
    let url = format!("{}/hooks/pocketbase", w.bridge.url);
    let post = |id: &str, ts: i64, body: Vec<u8>, sign: bool| {
        let ts = ts.to_string();
        let mut req = http
            .post(&url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", &ts);
        if sign {
            req = req.header("webhook-signature", secret.sign(id, &ts, &body));
        }
        req.body(body).send()
    };
    let now = chrono::Utc::now().timestamp();
    let good = |id: &str| {
        serde_json::to_vec(&json!({"event": "update", "collection": "bot_instances",
                                   "record": {"id": id, "updated": "2026-01-02 03:04:05.678Z"}}))
        .expect("json")
    };
    let cases: Vec<(&str, u16, reqwest::Response)> = vec![
        ("headers", 401, post("m1", now, good("abc"), false).await.expect("post")),
        ("signature", 401, {
            let ts = now.to_string();
            http.post(&url)
                .header("webhook-id", "m2")
                .header("webhook-timestamp", &ts)
                .header("webhook-signature", secret.sign("m2", &ts, b"other"))
                .body(good("abc"))
                .send()
                .await
                .expect("post")
        }),
        (
            "timestamp",
            401,
            post("m3", now - 3600, good("abc"), true).await.expect("post"),
        ),
        (
            "too_large",
            413,
            post("m4", now, vec![b' '; 300 * 1024], true).await.expect("post"),
        ),
        (
            "body",
            400,
            post("m5", now, b"{\"event\": 1}".to_vec(), true).await.expect("post"),
        ),
        (
            "record",
            400,
            post("m6", now, good("NOT AN ID"), true).await.expect("post"),
        ),
    ];
    for (reason, status, resp) in cases {
        assert_eq!(resp.status().as_u16(), status, "{reason}: {:?}", resp.text().await);
    }
    // The journal held by another writer: refused for now, the sender retries.
    let journal = rusqlite::Connection::open(w.bridge.dir.join("journal.db")).expect("open journal");
    journal.execute_batch("BEGIN EXCLUSIVE").expect("lock the journal");
    let resp = post("m7", now, good("abc"), true).await.expect("post");
    journal.execute_batch("ROLLBACK").expect("unlock the journal");
    assert_eq!(resp.status().as_u16(), 503);

    let m = cf_testkit::eventually(Duration::from_secs(10), "the rejections counted", || async {
        let m = scrape(&w).await;
        (m.sum("cf_bridge_webhook_rejected_total") >= 7.0).then_some(m)
    })
    .await;
    // This bridge takes webhooks: "intake_off" (no webhook.secret, tests/it/intake_default.rs) stays at zero.
    for reason in WEBHOOK_REJECTIONS {
        assert_eq!(
            m.get("cf_bridge_webhook_rejected_total", &[("reason", reason)]),
            Some(if *reason == "intake_off" { 0.0 } else { 1.0 }),
            "{reason}"
        );
    }
}
