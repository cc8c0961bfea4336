//! Issue 18, item 5: OpenTelemetry export. A webhook that carries a W3C `traceparent` starts the trace its
//! event keeps: the intake's spans, and after a restart of the bridge the job, its Coolify call and its
//! PocketBase write-back, arrive at an in-process collector with that trace id.

use std::collections::HashSet;
use std::time::Duration;

use cf_bridge::webhook::WebhookSecret;
use cf_testkit::WEBHOOK_SECRET;
use cf_testkit::collector::{Collector, ReceivedSpan};
use cf_testkit::world::{SIM_FAST, World};
use serde_json::{Value, json};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SENDER_SPAN: &str = "00f067aa0ba902b7";

/// Posts a signed webhook for `record` as a change PocketBase has not sent yet, with `traceparent`.
async fn post_webhook(w: &World, record: &Value, traceparent: &str) -> u16 {
    let secret: WebhookSecret = WEBHOOK_SECRET.parse().expect("webhook secret");
    let mut record = record.clone();
    record["updated"] = json!("2099-01-01 00:00:00.000Z");
    // A field no version of the record has makes the delivery ask for something no run has claimed: a
    // delivery asking for what a running job applies is settled as that run's echo (journal::ingest), and
    // the failing job below runs about every second.
    record["traced_change"] = json!(1);
    let body =
        serde_json::to_vec(&json!({"event": "update", "collection": "bot_instances", "record": record})).expect("json");
    let ts = chrono::Utc::now().timestamp().to_string();
    cf_testkit::http()
        .post(format!("{}/hooks/pocketbase", w.bridge.url))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_otel")
        .header("webhook-timestamp", &ts)
        .header("webhook-signature", secret.sign("msg_otel", &ts, &body))
        .header("traceparent", traceparent)
        .body(body)
        .send()
        .await
        .expect("POST webhook")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhooks_trace_runs_through_journal_job_coolify_and_write_back_across_a_restart() {
    let collector = Collector::start();
    let mut w = World::start(
        SIM_FAST,
        &[
            ("CF_BRIDGE__TELEMETRY__OTLP_ENDPOINT", collector.endpoint.as_str()),
            ("CF_BRIDGE__TELEMETRY__EXPORT_INTERVAL_MS", "200"),
            ("CF_BRIDGE__TELEMETRY__SERVICE_NAME", "cf-bridge-test"),
            ("CF_BRIDGE__QUEUE__MAX_ATTEMPTS", "100"),
            ("CF_BRIDGE__QUEUE__BASE_BACKOFF_MS", "500"),
            ("CF_BRIDGE__QUEUE__MAX_BACKOFF_SECS", "1"),
        ],
    )
    .await;
    let tenant = w.create_tenant("traced", "business").await;
    w.wait_record("tenants", &tenant, "project", Duration::from_secs(30), |r| {
        r["coolify_project_uuid"].as_str().is_some_and(|u| !u.is_empty())
    })
    .await;

    // The instance's job fails until the fault is lifted; the webhook's event joins it meanwhile. The
    // failing call is slow, so the webhook most likely arrives while a run is in flight.
    w.sim
        .set_fault(json!({"route": "POST /services", "error_rate": 1.0, "latency_ms": 1500}))
        .await;
    let id = w.create_instance(&tenant, "base-llm", "traced", "running").await;
    w.wait_status(&id, "error", Duration::from_secs(30)).await;
    // Let the echo of the error write-back arrive first, so the webhook's event is the job's newest.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let record = w.record("bot_instances", &id).await;
    let traceparent = format!("00-{TRACE_ID}-{SENDER_SPAN}-01");
    assert_eq!(post_webhook(&w, &record, &traceparent).await, 202);

    // The job is resumed by a new bridge (same journal): its trace comes from the journal.
    w.bridge.restart().await;
    // Stopping flushed the first bridge's spans: what is new from here on comes from the second.
    let before: HashSet<String> = collector.spans().into_iter().map(|s| s.span_id).collect();
    w.sim.clear_faults().await;
    w.wait_status(&id, "running", Duration::from_secs(60)).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (spans, resumed) = loop {
        let traced: Vec<ReceivedSpan> = collector
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == TRACE_ID)
            .collect();
        let child =
            |job: &ReceivedSpan, name: &str| traced.iter().any(|s| s.name == name && s.parent_span_id == job.span_id);
        let resumed = traced
            .iter()
            .find(|j| {
                j.name == "job" && !before.contains(&j.span_id) && child(j, "coolify") && child(j, "pocketbase.write")
            })
            .cloned();
        if let Some(job) = resumed {
            break (traced, job);
        }
        if tokio::time::Instant::now() > deadline {
            let all: Vec<String> = traced
                .iter()
                .map(|s| format!("{} {} <- {}", s.span_id, s.name, s.parent_span_id))
                .collect();
            panic!(
                "no job of trace {TRACE_ID} after the restart with a Coolify call and a write-back; its spans:\n{}",
                all.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let intake = spans.iter().find(|s| s.name == "intake").expect("intake span");
    assert_eq!(
        intake.parent_span_id, SENDER_SPAN,
        "the intake continues the sender's span"
    );
    assert!(spans.iter().all(|s| s.service == "cf-bridge-test"), "{spans:?}");
    assert!(
        spans
            .iter()
            .any(|s| s.name == "journal.ingest" && s.parent_span_id == intake.span_id),
        "{spans:?}"
    );
    assert_eq!(
        resumed.parent_span_id, intake.span_id,
        "the resumed job continues the event's intake span"
    );
    // Other events have traces of their own.
    let others = collector.spans().into_iter().filter(|s| s.trace_id != TRACE_ID).count();
    assert!(others > 0, "the realtime events' traces");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_export_off_nothing_is_sent_and_nothing_is_journaled() {
    let collector = Collector::start();
    let w = World::start(SIM_FAST, &[]).await;
    let tenant = w.create_tenant("untraced", "business").await;
    let id = w.create_instance(&tenant, "base-llm", "untraced", "running").await;
    w.wait_status(&id, "running", Duration::from_secs(30)).await;
    let record = w.record("bot_instances", &id).await;
    assert_eq!(
        post_webhook(&w, &record, &format!("00-{TRACE_ID}-{SENDER_SPAN}-01")).await,
        202
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(collector.requests(), 0);
    let journal = rusqlite::Connection::open(w.bridge.dir.join("journal.db")).expect("journal");
    let traced: i64 = journal
        .query_row("SELECT count(*) FROM events WHERE trace_context IS NOT NULL", [], |r| {
            r.get(0)
        })
        .expect("count");
    assert_eq!(traced, 0, "no trace context journaled when export is off");
}
