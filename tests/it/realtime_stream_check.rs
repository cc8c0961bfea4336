//! Issue 15: a realtime stream that stops delivering is noticed in seconds, and the resync that follows
//! any doubt about the stream is retried until it succeeds. The bridge reaches PocketBase through a fault
//! proxy (cf_testkit::faultproxy); the periodic resync is pushed out of the way (10 minutes) so that
//! only these mechanisms can pick up the change each test makes.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cf_testkit::eventually;
use cf_testkit::faultproxy::{Fault, ProxiedStack, Rule};

const QUIET_RESYNC: (&str, &str) = ("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "600");

async fn running(s: &ProxiedStack, id: &str, within: Duration) -> Duration {
    let t0 = Instant::now();
    eventually(within, "the instance running", || async {
        (s.record("bot_instances", id).await["status"] == "running").then_some(())
    })
    .await;
    t0.elapsed()
}

fn subscriptions(s: &ProxiedStack) -> usize {
    s.bridge.log().matches("PocketBase realtime subscribed").count()
}

fn losses(s: &ProxiedStack) -> usize {
    s.bridge.log().matches("PocketBase realtime connection lost").count()
}

/// The stream goes silent without closing (a half-open connection, a stuck proxy): the bridge's own
/// ping does not come back, so it reconnects and resyncs well before the 90 s idle watchdog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_is_noticed_in_seconds() {
    let s = ProxiedStack::start(&[QUIET_RESYNC]).await;
    let tenant = s.ready_tenant("rt-silent").await;
    let before = subscriptions(&s);
    s.proxy.stall_streams();
    let stalled = Instant::now();
    let id = s.create_instance(&tenant, "rt-silent-a").await;
    // 30 s: well under the idle watchdog (90 s) and the periodic resync (600 s here).
    running(&s, &id, Duration::from_secs(30)).await;
    eprintln!(
        "the change made on a silent stream was applied {:.1} s later",
        stalled.elapsed().as_secs_f64()
    );
    assert!(
        s.bridge.log().contains("ping did not come back"),
        "the change was not found by the stream check"
    );
    eventually(Duration::from_secs(10), "the bridge to subscribe again", || async {
        (subscriptions(&s) > before).then_some(())
    })
    .await;
}

/// The stream is cut while a change is made, and the resync after the reconnect fails twice: it is
/// retried until it succeeds, instead of waiting for the next connect or the periodic resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_resync_is_retried_until_it_succeeds() {
    let s = ProxiedStack::start(&[QUIET_RESYNC]).await;
    let tenant = s.ready_tenant("rt-resync").await;
    let before = subscriptions(&s);
    s.proxy.block_streams(true);
    let lost = losses(&s);
    s.proxy.cut();
    // Only a change made once the bridge has seen its stream end is sure to miss the stream.
    eventually(Duration::from_secs(10), "the bridge to see its stream cut", || async {
        (losses(&s) > lost).then_some(())
    })
    .await;
    let id = s.create_instance(&tenant, "rt-resync-a").await;
    // The resync's listing of instances (the health poller's list carries a filter).
    let dropped = s.proxy.add_rule(
        Rule::new(
            Fault::Drop,
            Some("GET"),
            &["/api/collections/bot_instances/records?", "sort=id"],
        )
        .excluding(&["filter="])
        .times(2),
    );
    s.proxy.block_streams(false);
    let took = running(&s, &id, Duration::from_secs(30)).await;
    eprintln!(
        "the change made while the stream was down was applied {:.1} s after the stream came back",
        took.as_secs_f64()
    );
    assert!(subscriptions(&s) > before, "the bridge never reconnected");
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        2,
        "the resync listings were not both dropped"
    );
}
