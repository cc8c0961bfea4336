//! The realtime consumer against a real PocketBase: delivery, reconnects, watchdog, auth errors.

use std::sync::Arc;
use std::time::Duration;

use crate::intake_support::{MemorySink, intake_pb};
use cf_bridge::config::DEFAULT_PING_INTERVAL;
use cf_bridge::events::{Action, Collection, Source};
use cf_bridge::flow::FloodSign;
use cf_bridge::intake::Intake;
use cf_bridge::metrics::Metrics;
use cf_bridge::pocketbase::realtime::{Consumer, RealtimeError, TokenFuture, TokenSource};
use cf_testkit::TestPb;
use secrecy::SecretString;
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SECOND: Duration = Duration::from_secs(1);

struct StaticToken(String);

impl TokenSource for StaticToken {
    fn token(&self) -> TokenFuture<'_> {
        let token = SecretString::from(self.0.clone());
        Box::pin(async move { Ok(token) })
    }
}

struct Running {
    sink: Arc<MemorySink>,
    notify: Arc<Notify>,
    connected: watch::Receiver<u64>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    fn start(pb: &TestPb, token: &str, idle_timeout: Duration) -> Running {
        Running::start_with(pb, token, idle_timeout, FloodSign::default())
    }

    fn start_with(pb: &TestPb, token: &str, idle_timeout: Duration, flood: FloodSign) -> Running {
        let sink = Arc::new(MemorySink::default());
        let notify = Arc::new(Notify::new());
        let (on_connect, connected) = watch::channel(0u64);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(
            Consumer {
                base_url: pb.url.parse().expect("url"),
                idle_timeout,
                ping_interval: Some(DEFAULT_PING_INTERVAL),
                tokens: Arc::new(StaticToken(token.to_owned())),
                intake: Intake::new(sink.clone(), notify.clone(), Arc::new(Metrics::new())),
                on_connect,
                in_doubt: watch::channel(0u64).0,
                flood,
            }
            .run(cancel.clone()),
        );
        Running {
            sink,
            notify,
            connected,
            cancel,
            task,
        }
    }

    /// Waits until the connection counter reaches `n`.
    async fn connections(&mut self, n: u64, within: Duration) {
        let reached = tokio::time::timeout(within, self.connected.wait_for(|c| *c >= n)).await;
        assert!(
            matches!(reached, Ok(Ok(_))),
            "connection #{n} not seen within {within:?}"
        );
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(SECOND, self.task)
            .await
            .expect("consumer stops on cancel")
            .expect("consumer task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_the_sink_within_a_second() {
    // No webhook env: the hook skips delivery, and realtime must still fire.
    let pb = intake_pb(&[], false).await;
    let mut rt = Running::start(&pb, &pb.cached_token().await, Duration::from_secs(90));
    rt.connections(1, 5 * SECOND).await;

    let tenant = pb.create_record("tenants", json!({"name": "acme"})).await;
    let id = tenant["id"].as_str().expect("id").to_owned();
    let ev = rt.sink.wait_for(SECOND, |e| e.len() == 1).await.remove(0);
    assert_eq!(
        (ev.source, ev.collection, ev.action),
        (Source::Realtime, Collection::Tenants, Action::Create)
    );
    assert_eq!(ev.record_id, id);
    assert_eq!(ev.record_updated.as_deref(), tenant["updated"].as_str());
    tokio::time::timeout(SECOND, rt.notify.notified())
        .await
        .expect("journaled events notify");

    let updated = pb.patch("tenants", &id, json!({"name": "acme 2"})).await;
    let ev = rt.sink.wait_for(SECOND, |e| e.len() == 2).await.remove(1);
    assert_eq!(ev.action, Action::Update);
    assert_eq!(ev.record_updated.as_deref(), updated["updated"].as_str());
    assert_eq!(ev.payload["name"], json!("acme 2"));

    let inst = pb
        .create_record(
            "bot_instances",
            json!({"tenant": id, "name": "b", "api_token": "secret!"}),
        )
        .await;
    pb.delete("bot_instances", inst["id"].as_str().expect("id")).await;
    let events = rt.sink.wait_for(SECOND, |e| e.len() == 4).await;
    // PocketBase broadcasts each change from a goroutine of its own, so a create's frame can come after
    // the delete's (reference §1.8; it did in one CI run): both must arrive, in either order.
    let mut instance_events: Vec<_> = events[2..].iter().map(|e| (e.collection, e.action)).collect();
    instance_events.sort_by_key(|(_, action)| action.as_str());
    assert_eq!(
        instance_events,
        [
            (Collection::BotInstances, Action::Create),
            (Collection::BotInstances, Action::Delete)
        ]
    );
    let created = events[2..]
        .iter()
        .find(|e| e.action == Action::Create)
        .expect("the create's event");
    assert!(created.payload.get("api_token").is_none());
    assert_eq!(*rt.connected.borrow(), 1, "no reconnect while healthy");
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_read_on_while_earlier_frames_are_journaled_and_they_stay_in_order() {
    let pb = intake_pb(&[], false).await;
    let mut rt = Running::start(&pb, &pb.cached_token().await, Duration::from_secs(90));
    rt.connections(1, 5 * SECOND).await;

    // The journal is busy: no ingest is answered until the gate opens.
    let busy = rt.sink.gate.write().await;
    let tenant = pb.create_record("tenants", json!({"name": "v0"})).await;
    let id = tenant["id"].as_str().expect("id").to_owned();
    let mut versions = vec![tenant["updated"].as_str().expect("updated").to_owned()];
    for n in 1..=10 {
        // Versions a millisecond apart: PocketBase stamps `updated` to the millisecond.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let updated = pb.patch("tenants", &id, json!({"name": format!("v{n}")})).await;
        versions.push(updated["updated"].as_str().expect("updated").to_owned());
    }
    // Every frame reaches the sink while the first is still unanswered, so that one commit can take them all.
    let deadline = tokio::time::Instant::now() + 2 * SECOND;
    while rt.sink.offered().len() < versions.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the consumer waited for the journal: {} of {} frames offered",
            rt.sink.offered().len(),
            versions.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(rt.sink.events().is_empty(), "an ingest passed the closed gate");
    drop(busy);

    let events = rt.sink.wait_for(2 * SECOND, |e| e.len() == versions.len()).await;
    let names: Vec<_> = events.iter().map(|e| e.payload["name"].clone()).collect();
    let expected: Vec<_> = (0..=10).map(|n| json!(format!("v{n}"))).collect();
    assert_eq!(names, expected, "journaled out of the stream's order");
    let stamps: Vec<_> = events.iter().filter_map(|e| e.record_updated.clone()).collect();
    assert_eq!(stamps, versions);
    assert_eq!(events[0].action, Action::Create);
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_pocketbase_restarts() {
    let mut pb = intake_pb(&[], false).await;
    let mut rt = Running::start(&pb, &pb.cached_token().await, Duration::from_secs(90));
    rt.connections(1, 5 * SECOND).await;
    pb.restart().await;
    rt.connections(2, 10 * SECOND).await;
    // The new subscription delivers.
    pb.create_record("tenants", json!({"name": "after restart"})).await;
    rt.sink.wait_for(SECOND, |e| e.len() == 1).await;
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_a_hooks_reload() {
    let pb = intake_pb(&[], true).await;
    let mut rt = Running::start(&pb, &pb.cached_token().await, Duration::from_secs(90));
    rt.connections(1, 5 * SECOND).await;
    let hook = pb.hooks_dir.join("keepalive.pb.js");
    let text = std::fs::read_to_string(&hook).expect("read hook");
    std::fs::write(&hook, format!("{text}\n// touched by the test\n")).expect("touch hook");
    rt.connections(2, 10 * SECOND).await;
    pb.create_record("tenants", json!({"name": "after reload"})).await;
    rt.sink.wait_for(2 * SECOND, |e| e.len() == 1).await;
    rt.stop().await;
}

/// Whether `flood` is up at any moment within `within` (it stays up 100 ms after a flood's last frame).
async fn raised_within(flood: &FloodSign, within: Duration) -> bool {
    tokio::time::timeout(within, async {
        while !flood.up() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_counts_its_frames_on_the_flood_sign() {
    let pb = intake_pb(&[], false).await;
    // 50 frames within a second: the reader's frames are what is counted here; the default rule's pace is
    // checked in `flow`'s tests.
    let flood = FloodSign::with_rule(SECOND, 50);
    let mut rt = Running::start_with(&pb, &pb.cached_token().await, Duration::from_secs(90), flood.clone());
    rt.connections(1, 5 * SECOND).await;

    // Ten changes are not a flood by that rule.
    let watcher = {
        let flood = flood.clone();
        tokio::spawn(async move { raised_within(&flood, 2 * SECOND).await })
    };
    for i in 0..10 {
        pb.create_record("tenants", json!({"name": format!("one {i}")})).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rt.sink.wait_for(5 * SECOND, |e| e.len() == 10).await;
    assert!(
        !watcher.await.expect("watcher"),
        "the flood sign went up for ten changes"
    );

    // 100 creates at once are.
    let watcher = {
        let flood = flood.clone();
        tokio::spawn(async move { raised_within(&flood, 5 * SECOND).await })
    };
    let names: Vec<String> = (0..100).map(|i| format!("burst {i}")).collect();
    futures_util::future::join_all(
        names
            .iter()
            .map(|name| pb.create_record("tenants", json!({ "name": name }))),
    )
    .await;
    rt.sink.wait_for(5 * SECOND, |e| e.len() == 110).await;
    assert!(
        watcher.await.expect("watcher"),
        "100 frames within a second did not raise the flood sign"
    );
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_stream_trips_the_watchdog() {
    let pb = intake_pb(&[], false).await;
    let mut rt = Running::start(&pb, &pb.cached_token().await, Duration::from_millis(300));
    rt.connections(1, 5 * SECOND).await;
    // Nothing is sent after PB_CONNECT (keepalives come once a minute), so the watchdog reconnects.
    rt.connections(3, 5 * SECOND).await;
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_cron_feeds_the_watchdog() {
    let pb = intake_pb(&[], false).await;
    let mut rt = Running::start(&pb, &pb.cached_token().await, Duration::from_millis(1500));
    rt.connections(1, 5 * SECOND).await;
    // Run the once-a-minute keepalive job by hand, faster than the watchdog's limit.
    for _ in 0..8 {
        pb.run_cron("bridge_keepalive").await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(*rt.connected.borrow(), 1, "keepalives must keep the connection up");
    rt.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_a_clear_auth_error() {
    let pb = intake_pb(&[], false).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (on_connect, connected) = watch::channel(0u64);
    let consumer = Consumer {
        base_url: pb.url.parse().expect("url"),
        idle_timeout: Duration::from_secs(90),
        ping_interval: Some(DEFAULT_PING_INTERVAL),
        tokens: Arc::new(StaticToken("not-a-token".into())),
        intake: Intake::new(
            Arc::new(MemorySink::default()),
            Arc::new(Notify::new()),
            Arc::new(Metrics::new()),
        ),
        on_connect,
        in_doubt: watch::channel(0u64).0,
        flood: Default::default(),
    };
    let client = reqwest::Client::new();
    let mut connected_at = None;
    let err = consumer
        .session(&client, &CancellationToken::new(), &mut connected_at)
        .await
        .unwrap_err();
    assert!(matches!(err, RealtimeError::Auth(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("auth failed") && msg.contains("401") && msg.contains("token"),
        "{msg}"
    );
    assert!(
        !msg.contains("not-a-token"),
        "the token must not appear in errors: {msg}"
    );
    assert!(connected_at.is_none());
    assert_eq!(*connected.borrow(), 0);

    // The running consumer keeps retrying but never reports a connection.
    let mut rt = Running::start(&pb, "not-a-token", Duration::from_secs(90));
    tokio::time::sleep(SECOND).await;
    assert_eq!(*rt.connected.borrow_and_update(), 0);
    rt.stop().await;
}
