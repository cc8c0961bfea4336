//! End to end: real PocketBase running hooks/pb_hooks signs and posts changes to the real ingest route.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::intake_support::{MemorySink, intake_pb};
use actix_web::{App, HttpServer, web};
use cf_bridge::config::DEFAULT_PING_INTERVAL;
use cf_bridge::events::{Action, Collection, NewEvent, Source};
use cf_bridge::http::ingest::{self, IngestState};
use cf_bridge::intake::Intake;
use cf_bridge::metrics::Metrics;
use cf_bridge::pocketbase::realtime::{Consumer, TokenFuture, TokenSource};
use cf_bridge::webhook::generate_secret;
use cf_testkit::TestPb;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// Starts the ingest route on a free port; returns its URL and a handle to stop it.
fn receiver(sink: Arc<MemorySink>, secret: &str) -> (String, actix_web::dev::ServerHandle) {
    let state = web::Data::new(IngestState {
        intake: Intake::new(sink, Arc::new(Notify::new()), Arc::new(Metrics::new())),
        secret: Some(secret.parse().expect("secret")),
    });
    let server = HttpServer::new(move || App::new().app_data(state.clone()).configure(ingest::configure))
        .workers(1)
        .bind(("127.0.0.1", 0))
        .expect("bind receiver");
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (format!("http://127.0.0.1:{port}{}", ingest::PATH), handle)
}

async fn pocketbase_posting_to(url: &str, secret: &str) -> TestPb {
    intake_pb(
        &[("CF_BRIDGE_WEBHOOK_URL", url), ("CF_BRIDGE_WEBHOOK_SECRET", secret)],
        false,
    )
    .await
}

struct Changes {
    /// (collection, record id, action, updated) in the order they were made.
    expected: Vec<(Collection, String, Action, String)>,
}

fn s(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

/// Creates a tenant and an instance, updates the instance, deletes the tenant (cascading).
async fn make_changes(pb: &TestPb) -> Changes {
    let tenant = pb
        .create_record("tenants", json!({"name": "Zürich ✓ \"quoted\"", "status": "active"}))
        .await;
    let tid = s(&tenant, "id");
    let inst = pb
        .create_record(
            "bot_instances",
            json!({"tenant": tid, "name": "bot", "api_token": "sk-live-123",
                                        "config": {"telegram_token": "t", "lang": "de"}}),
        )
        .await;
    let iid = s(&inst, "id");
    let updated = pb.patch("bot_instances", &iid, json!({"name": "bot 2"})).await;
    pb.delete("tenants", &tid).await;
    Changes {
        expected: vec![
            (Collection::Tenants, tid.clone(), Action::Create, s(&tenant, "updated")),
            (
                Collection::BotInstances,
                iid.clone(),
                Action::Create,
                s(&inst, "updated"),
            ),
            (
                Collection::BotInstances,
                iid.clone(),
                Action::Update,
                s(&updated, "updated"),
            ),
            // A delete carries the record's last state.
            (Collection::BotInstances, iid, Action::Delete, s(&updated, "updated")),
            (Collection::Tenants, tid, Action::Delete, s(&tenant, "updated")),
        ],
    }
}

fn keys(changes: &Changes) -> Vec<String> {
    changes
        .expected
        .iter()
        .map(|(c, id, a, u)| NewEvent::change_key(*c, id, *a, Some(u)))
        .collect()
}

#[actix_web::test]
async fn changes_arrive_signed_and_verified() {
    let sink = Arc::new(MemorySink::default());
    let secret = generate_secret();
    let (url, server) = receiver(sink.clone(), &secret);
    let pb = pocketbase_posting_to(&url, &secret).await;

    let changes = make_changes(&pb).await;
    // The hook posts synchronously before PocketBase answers, so everything is already here.
    let events = sink.events();
    let got: Vec<_> = events.iter().map(|e| e.dedupe_key.clone()).collect();
    assert_eq!(got, keys(&changes), "PocketBase log:\n{}", pb.log());
    for ev in &events {
        assert_eq!(ev.source, Source::Webhook);
        assert!(
            ev.delivery_id
                .as_deref()
                .is_some_and(|id| id.starts_with("msg_") && id.len() == 28),
            "{ev:?}"
        );
        assert!(ev.payload.get("api_token").is_none() && ev.payload["config"].get("telegram_token").is_none());
    }
    assert_eq!(events[0].payload["name"], json!("Zürich ✓ \"quoted\""));
    assert_eq!(events[1].payload["config"], json!({"lang": "de"}));
    server.stop(true).await;
}

#[actix_web::test]
async fn wrong_secret_is_refused_but_pocketbase_writes_still_succeed() {
    let sink = Arc::new(MemorySink::default());
    let (url, server) = receiver(sink.clone(), &generate_secret());
    let pb = pocketbase_posting_to(&url, &generate_secret()).await;
    let tenant = pb.create_record("tenants", json!({"name": "a"})).await;
    assert!(tenant["id"].is_string());
    assert!(sink.offered().is_empty());
    // The hook logs the refusal (status 401) to PocketBase's log store, which is written in batches.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let logs = pb.logs("message = 'cf-bridge webhook refused'").await;
        if let Some(entry) = logs.first() {
            assert_eq!(entry["data"]["status"], json!(401), "{entry}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no refusal logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop(true).await;
}

struct StaticToken(String);

impl TokenSource for StaticToken {
    fn token(&self) -> TokenFuture<'_> {
        let token = SecretString::from(self.0.clone());
        Box::pin(async move { Ok(token) })
    }
}

#[actix_web::test]
async fn a_change_seen_by_webhook_and_realtime_is_journaled_once() {
    let sink = Arc::new(MemorySink::default());
    let secret = generate_secret();
    let (url, server) = receiver(sink.clone(), &secret);
    let pb = pocketbase_posting_to(&url, &secret).await;

    let (on_connect, mut connected) = watch::channel(0u64);
    let cancel = CancellationToken::new();
    let consumer = tokio::spawn(
        Consumer {
            base_url: pb.url.parse().expect("url"),
            idle_timeout: Duration::from_secs(90),
            ping_interval: Some(DEFAULT_PING_INTERVAL),
            tokens: Arc::new(StaticToken(pb.cached_token().await)),
            intake: Intake::new(sink.clone(), Arc::new(Notify::new()), Arc::new(Metrics::new())),
            on_connect,
            in_doubt: watch::channel(0u64).0,
            flood: Default::default(),
        }
        .run(cancel.clone()),
    );
    tokio::time::timeout(Duration::from_secs(5), connected.changed())
        .await
        .expect("subscribed")
        .expect("sender alive");

    let changes = make_changes(&pb).await;
    let expected = keys(&changes);
    let offered_by_both = |key: &String| {
        let offered = sink.offered();
        let from = |src| offered.iter().any(|e| &e.dedupe_key == key && e.source == src);
        from(Source::Webhook) && from(Source::Realtime)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !expected.iter().all(offered_by_both) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every change came both ways: {:#?}",
            sink.offered()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut stored: HashMap<String, usize> = HashMap::new();
    for ev in sink.events() {
        *stored.entry(ev.dedupe_key).or_default() += 1;
    }
    assert_eq!(stored.len(), expected.len(), "{stored:?}");
    assert!(stored.values().all(|n| *n == 1));
    cancel.cancel();
    consumer.await.expect("consumer task");
    server.stop(true).await;
}

/// Issue 17: webhooks are optional. A PocketBase started without CF_BRIDGE_WEBHOOK_SECRET (the URL alone is
/// set here) posts nothing for a create, an update and a cascading delete, and its writes pay nothing for
/// the webhook hook: no handler runs, so no per-write "cf-bridge webhook ..." row lands in its log store.
#[actix_web::test]
async fn without_the_secret_pocketbase_posts_nothing_and_writes_pay_no_webhook_hook() {
    let posts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = posts.clone();
    let server = HttpServer::new(move || {
        let counted = counted.clone();
        App::new().default_service(web::to(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { actix_web::HttpResponse::NoContent().finish() }
        }))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .expect("bind the counting sink");
    let url = format!("http://127.0.0.1:{}{}", server.addrs()[0].port(), ingest::PATH);
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    let pb = intake_pb(&[("CF_BRIDGE_WEBHOOK_URL", url.as_str())], false).await;

    make_changes(&pb).await;
    // PocketBase writes its log store in batches: wait for the rows of these 4 requests first.
    cf_testkit::eventually(Duration::from_secs(15), "the requests in PocketBase's log", || {
        let pb = &pb;
        async move {
            let rows = pb
                .logs("data.url ~ '/api/collections/tenants' || data.url ~ '/api/collections/bot_instances'")
                .await;
            (rows.len() >= 4).then_some(())
        }
    })
    .await;
    assert_eq!(pb.logs("message ~ 'cf-bridge webhook'").await, Vec::<Value>::new());
    assert_eq!(posts.load(std::sync::atomic::Ordering::SeqCst), 0);
    handle.stop(true).await;
}
