//! Resync: a REST pass that closes the gaps events leave (SSE drops changes while disconnected).
//!
//! Every listed record whose `updated` differs from what the journal last applied is enqueued, and
//! every known record that is gone gets a Delete. The dedupe key is the same change key the live
//! sources use, so a change already journaled comes back as a Duplicate and costs nothing; a version the
//! journal settled as an echo counts only when that echo asks for what is applied (see `journal::ingest`).
//!
//! A lister must never answer an empty list for a token it cannot verify: PocketBase answers a bad
//! token with an empty list, which would read as "everything was deleted".

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use compact_str::CompactString;
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::events::{Action, BoxError, Collection, Ingested, NewEvent, SinkError, Source, valid_record_id};
use crate::intake::Intake;
use crate::turns::FleetTurns;

pub const COLLECTIONS: [Collection; 2] = [Collection::Tenants, Collection::BotInstances];

/// What the lister reports for one live record. Ids, dates and service uuids fit inside a `CompactString`
/// (24 bytes): no allocation of their own, for every record of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordStamp {
    pub id: CompactString,
    pub updated: CompactString,
    /// The record's applied spec, for the drift check (instances only).
    pub applied_hash: Option<String>,
    /// The record's Coolify service, for the drift check (instances only).
    pub service: Option<CompactString>,
}

pub type ListFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send + 'a>>;

/// Lists every live record of a collection (the PocketBase client implements it).
pub trait RecordLister: Send + Sync {
    fn list(&self, c: Collection) -> ListFuture<'_, Vec<RecordStamp>>;
}

/// Finds the instances whose service drifted inside Coolify (one Coolify list call); returns each one's
/// id and what drifted, already marked for its job. Instances without a service are passed over, and so
/// are those a job worked on since `listed_from` (unix ms, when the listing began): their stamps may
/// predate what the job did in Coolify.
pub trait DriftCheck: Send + Sync {
    fn drifted<'a>(
        &'a self,
        instances: &'a [RecordStamp],
        listed_from: i64,
    ) -> ListFuture<'a, Vec<(String, &'static str)>>;
}

/// What the journal last applied: record id -> the `updated` it was applied at.
pub trait KnownRecords: Send + Sync {
    fn known(&self, c: Collection) -> ListFuture<'_, HashMap<String, String>>;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResyncReport {
    pub listed: usize,
    /// Events the sink stored as new (changed or created records, deletions).
    pub enqueued: usize,
    /// Known records no longer listed.
    pub disappeared: usize,
    /// Instances whose service drifted inside Coolify.
    pub drifted: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ResyncError {
    #[error("listing {collection} failed: {source}")]
    List {
        collection: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("reading applied state of {collection} failed: {source}")]
    Known {
        collection: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("checking Coolify for drift failed: {0}")]
    Drift(#[source] BoxError),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// The resync's event for a listed record whose version the journal has not applied (or that is gone).
fn event(collection: Collection, id: &str, action: Action, updated: &str) -> NewEvent {
    let updated = (!updated.is_empty()).then_some(updated);
    NewEvent {
        source: Source::Resync,
        collection,
        record_id: id.to_owned(),
        action,
        record_updated: updated.map(str::to_owned),
        dedupe_key: NewEvent::change_key(collection, id, action, updated),
        delivery_id: None,
        payload: json!({ "id": id, "updated": updated }),
        fingerprint: None,
        trace_context: None,
    }
}

async fn resync_collection(
    collection: Collection,
    lister: &dyn RecordLister,
    known: &dyn KnownRecords,
    drift: Option<&dyn DriftCheck>,
    intake: &Intake,
    report: &mut ResyncReport,
) -> Result<(), ResyncError> {
    let name = collection.as_str();
    let listed_from = chrono::Utc::now().timestamp_millis();
    let mut listed = lister.list(collection).await.map_err(|source| ResyncError::List {
        collection: name,
        source,
    })?;
    let mut known = known.known(collection).await.map_err(|source| ResyncError::Known {
        collection: name,
        source,
    })?;
    report.listed += listed.len();
    listed.retain(|stamp| {
        let valid = valid_record_id(&stamp.id);
        if !valid {
            tracing::warn!(collection = name, record_id = %stamp.id, "resync skipped a record with an invalid id");
        }
        valid
    });
    // Each event is submitted as it is judged. Gathered first, they held 10 MB until the pass's end when
    // most of a fleet's versions differed from the journal's: 9,131 of 10,000 at a restart whose records
    // were last written by the bridge's own write-backs, each echo settled while its job still ran.
    for stamp in &listed {
        let last = known.remove(stamp.id.as_str());
        if last.as_deref() != Some(stamp.updated.as_str()) {
            let action = if last.is_some() { Action::Update } else { Action::Create };
            submit(intake, event(collection, &stamp.id, action, &stamp.updated), report).await?;
        }
    }
    // What is left was applied and is no longer listed. Judged before the drift check, so that the
    // journal's versions are let go before Coolify's fleet is read beside the listing.
    for (id, updated) in known {
        report.disappeared += 1;
        submit(intake, event(collection, &id, Action::Delete, &updated), report).await?;
    }
    // Every instance with a service is checked for drift, changed or not: drift happens inside Coolify,
    // whatever the record does.
    if let Some(check) = drift.filter(|_| collection == Collection::BotInstances) {
        let drifted = check.drifted(&listed, listed_from).await.map_err(ResyncError::Drift)?;
        report.drifted += drifted.len();
        let at = chrono::Utc::now().timestamp_millis();
        for (id, what) in drifted {
            let updated = listed
                .iter()
                .find(|s| s.id == id)
                .map(|s| s.updated.as_str())
                .unwrap_or_default();
            let mut ev = event(collection, &id, Action::Update, updated);
            // Drift is found anew on each pass until repaired: each finding is its own event.
            ev.dedupe_key = format!("drift:{id}:{what}:{at}");
            ev.payload = json!({ "id": id, "updated": updated, "drift": what });
            submit(intake, ev, report).await?;
        }
    }
    Ok(())
}

async fn submit(intake: &Intake, ev: NewEvent, report: &mut ResyncReport) -> Result<(), ResyncError> {
    let (collection, record_id) = (ev.collection, ev.record_id.clone());
    if let Ingested::New { event_id, .. } = intake.submit(ev).await? {
        tracing::debug!(collection = collection.as_str(), record_id = %record_id, event_id, "resync enqueued");
        report.enqueued += 1;
    }
    Ok(())
}

/// One pass over both collections.
pub async fn resync_once(
    lister: &dyn RecordLister,
    known: &dyn KnownRecords,
    intake: &Intake,
) -> Result<ResyncReport, ResyncError> {
    resync_once_with(lister, known, None, intake).await
}

/// One pass over both collections, and over Coolify for drift when `drift` is given.
pub async fn resync_once_with(
    lister: &dyn RecordLister,
    known: &dyn KnownRecords,
    drift: Option<&dyn DriftCheck>,
    intake: &Intake,
) -> Result<ResyncReport, ResyncError> {
    let mut report = ResyncReport::default();
    for collection in COLLECTIONS {
        resync_collection(collection, lister, known, drift, intake, &mut report).await?;
    }
    intake
        .metrics()
        .last_resync_timestamp
        .set(chrono::Utc::now().timestamp() as f64);
    Ok(report)
}

/// What a periodic resync works with.
pub struct Resyncer {
    pub lister: Arc<dyn RecordLister>,
    pub known: Arc<dyn KnownRecords>,
    /// Looks for drift inside Coolify (none: PocketBase only).
    pub drift: Option<Arc<dyn DriftCheck>>,
    pub intake: Intake,
    pub turns: FleetTurns,
}

impl Resyncer {
    /// One pass; false when it failed (and must be retried).
    pub(crate) async fn pass(&self, reason: &'static str) -> bool {
        let _turn = self.turns.take().await;
        let drift = self.drift.as_deref();
        let outcome = resync_once_with(self.lister.as_ref(), self.known.as_ref(), drift, &self.intake).await;
        self.intake.resync_passed();
        match outcome {
            Ok(r) => {
                tracing::info!(
                    reason,
                    listed = r.listed,
                    enqueued = r.enqueued,
                    disappeared = r.disappeared,
                    drifted = r.drifted,
                    "resync done"
                );
                true
            }
            Err(e) => {
                tracing::warn!(reason, error = %e, "resync failed; will retry");
                false
            }
        }
    }
}

/// How long a stream in doubt waits for its reconnect, whose resync covers it, before a pass runs anyway.
const DOUBT_GRACE: Duration = Duration::from_secs(2);
/// A failed pass is retried after 1 s, doubling up to 30 s (or the interval, if shorter), until it succeeds.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Lets an operator ask for a resync now (admin API, `cf-bridge resync`).
#[derive(Clone, Default)]
pub struct Trigger(Arc<Notify>);

impl Trigger {
    pub fn new() -> Self {
        Trigger::default()
    }

    pub fn fire(&self) {
        self.0.notify_one();
    }

    /// Resolves at the next `fire` (or at once for one made while nobody waited).
    pub async fn fired(&self) {
        self.0.notified().await;
    }
}

/// Resyncs after every (re)connect reported on `on_connect`, soon after a stream ended (`in_doubt`) unless
/// a reconnect came first, every `interval` and on every `trigger`, until `cancel`. A failed pass is
/// retried with backoff until one succeeds: until then, changes missed by the stream are not covered.
pub async fn run_periodic(
    interval: Duration,
    mut on_connect: watch::Receiver<u64>,
    mut in_doubt: watch::Receiver<u64>,
    trigger: Trigger,
    resyncer: Resyncer,
    cancel: CancellationToken,
) {
    let (mut connections_open, mut doubts_open) = (true, true);
    // A pass owed before the next interval pass: when, and why.
    let mut owed: Option<(Instant, &'static str)> = None;
    let retries = Backoff::new(RETRY_MIN, RETRY_MAX.min(interval).max(RETRY_MIN));
    let mut failed = 0u32;
    let mut next_interval = Instant::now() + interval;
    loop {
        let (at, why) = owed.unwrap_or((next_interval, "interval"));
        let reason = tokio::select! {
            _ = cancel.cancelled() => return,
            changed = on_connect.changed(), if connections_open => match changed {
                Ok(()) => "connect",
                Err(_) => {
                    // The realtime consumer is gone; the interval still runs.
                    connections_open = false;
                    continue;
                }
            },
            changed = in_doubt.changed(), if doubts_open => {
                match changed {
                    Ok(()) => {
                        let grace = Instant::now() + DOUBT_GRACE;
                        if owed.is_none_or(|(t, _)| t > grace) {
                            owed = Some((grace, "stream in doubt"));
                        }
                    }
                    Err(_) => doubts_open = false,
                }
                continue;
            }
            _ = tokio::time::sleep_until(at) => why,
            _ = trigger.0.notified() => "operator",
        };
        // Connects and doubts reported before the pass starts are covered by it.
        on_connect.borrow_and_update();
        in_doubt.borrow_and_update();
        let ok = tokio::select! {
            _ = cancel.cancelled() => return,
            ok = resyncer.pass(reason) => ok,
        };
        next_interval = Instant::now() + interval;
        if ok {
            (owed, failed) = (None, 0);
        } else {
            owed = Some((Instant::now() + retries.ceiling(failed), "retry"));
            failed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventSink;
    use crate::metrics::Metrics;
    use std::sync::Mutex;
    use tokio::sync::Notify;

    struct Fixed(
        HashMap<Collection, Vec<RecordStamp>>,
        HashMap<Collection, HashMap<String, String>>,
    );

    impl RecordLister for Fixed {
        fn list(&self, c: Collection) -> ListFuture<'_, Vec<RecordStamp>> {
            let v = self.0.get(&c).cloned().unwrap_or_default();
            Box::pin(async move { Ok(v) })
        }
    }

    impl KnownRecords for Fixed {
        fn known(&self, c: Collection) -> ListFuture<'_, HashMap<String, String>> {
            let v = self.1.get(&c).cloned().unwrap_or_default();
            Box::pin(async move { Ok(v) })
        }
    }

    #[derive(Default)]
    struct Sink(Mutex<Vec<NewEvent>>);

    impl EventSink for Sink {
        fn ingest(&self, event: NewEvent) -> crate::events::SinkFuture<'_> {
            Box::pin(async move {
                let mut v = self.0.lock().map_err(|_| SinkError::Unavailable("poisoned".into()))?;
                if v.iter().any(|e| e.dedupe_key == event.dedupe_key) {
                    return Ok(Ingested::Duplicate);
                }
                v.push(event);
                Ok(Ingested::New {
                    event_id: v.len() as i64,
                    job_id: 1,
                    coalesced: false,
                })
            })
        }

        fn replay(&self, _: crate::events::Replay) -> crate::events::ReplayFuture<'_> {
            Box::pin(async { Err(SinkError::Unavailable("this test sink does not replay".into())) })
        }
    }

    fn intake(sink: &Arc<Sink>) -> (Intake, Arc<Notify>) {
        let wake = Arc::new(Notify::new());
        (Intake::new(sink.clone(), wake.clone(), Arc::new(Metrics::new())), wake)
    }

    fn stamp(id: &str, updated: &str) -> RecordStamp {
        RecordStamp {
            id: id.into(),
            updated: updated.into(),
            applied_hash: None,
            service: None,
        }
    }

    fn known(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[tokio::test]
    async fn enqueues_changed_new_and_gone_but_not_equal() {
        let fixed = Fixed(
            HashMap::from([
                (
                    Collection::Tenants,
                    vec![stamp("same", "u1"), stamp("changed", "u2"), stamp("fresh", "u1")],
                ),
                (
                    Collection::BotInstances,
                    vec![stamp("instsame", "u1"), stamp("instchanged", "u2")],
                ),
            ]),
            HashMap::from([
                (
                    Collection::Tenants,
                    known(&[("same", "u1"), ("changed", "u1"), ("gone", "u0")]),
                ),
                (
                    Collection::BotInstances,
                    known(&[("instsame", "u1"), ("instchanged", "u1")]),
                ),
            ]),
        );
        let sink = Arc::new(Sink::default());
        let (intake, _) = intake(&sink);
        let report = resync_once(&fixed, &fixed, &intake).await.unwrap();
        assert_eq!(
            report,
            ResyncReport {
                listed: 5,
                enqueued: 4,
                disappeared: 1,
                drifted: 0,
            }
        );
        let mut keys: Vec<_> = sink.0.lock().unwrap().iter().map(|e| e.dedupe_key.clone()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "bot_instances:instchanged:update:u2",
                "tenants:changed:update:u2",
                "tenants:fresh:create:u1",
                "tenants:gone:delete:u0",
            ]
        );
        assert!(sink.0.lock().unwrap().iter().all(|e| e.source == Source::Resync));
        // A second pass finds the same changes already journaled.
        let again = resync_once(&fixed, &fixed, &intake).await.unwrap();
        assert_eq!(
            again,
            ResyncReport {
                listed: 5,
                enqueued: 0,
                disappeared: 1,
                drifted: 0,
            }
        );
        assert!(intake.metrics().last_resync_timestamp.get() > 0.0);
    }

    /// Records which instances it was asked about; finds every one drifted.
    #[derive(Default)]
    struct AllDrifted(Mutex<Vec<String>>);

    impl DriftCheck for AllDrifted {
        fn drifted<'a>(&'a self, instances: &'a [RecordStamp], _: i64) -> ListFuture<'a, Vec<(String, &'static str)>> {
            Box::pin(async move {
                let asked: Vec<String> = instances.iter().map(|s| s.id.to_string()).collect();
                *self.0.lock().map_err(|_| "poisoned")? = asked.clone();
                Ok(asked.into_iter().map(|id| (id, "status")).collect())
            })
        }
    }

    #[tokio::test]
    async fn a_record_with_an_invalid_id_reaches_neither_the_drift_check_nor_the_journal() {
        let mut good = stamp("abcdefghijklmno", "u1");
        good.service = Some("svc1".into());
        let mut bad = stamp("bad id/../x", "u1");
        bad.service = Some("svc2".into());
        let fixed = Fixed(
            HashMap::from([(Collection::BotInstances, vec![good, bad])]),
            HashMap::from([(Collection::BotInstances, known(&[("abcdefghijklmno", "u1")]))]),
        );
        let sink = Arc::new(Sink::default());
        let (intake, _) = intake(&sink);
        let drift = AllDrifted::default();
        let report = resync_once_with(&fixed, &fixed, Some(&drift), &intake).await.unwrap();
        assert_eq!(*drift.0.lock().unwrap(), vec!["abcdefghijklmno".to_string()]);
        assert_eq!((report.listed, report.drifted), (2, 1));
        let ids: Vec<String> = sink.0.lock().unwrap().iter().map(|e| e.record_id.clone()).collect();
        assert_eq!(ids, vec!["abcdefghijklmno".to_string()]);
    }

    #[tokio::test]
    async fn a_changed_record_is_journaled_though_coolify_cannot_be_read_for_drift() {
        struct Unreadable;
        impl DriftCheck for Unreadable {
            fn drifted<'a>(&'a self, _: &'a [RecordStamp], _: i64) -> ListFuture<'a, Vec<(String, &'static str)>> {
                Box::pin(async { Err("Coolify down".into()) })
            }
        }
        let mut changed = stamp("abcdefghijklmno", "u2");
        changed.service = Some("svc1".into());
        let fixed = Fixed(
            HashMap::from([(Collection::BotInstances, vec![changed])]),
            HashMap::from([(Collection::BotInstances, known(&[("abcdefghijklmno", "u1")]))]),
        );
        let sink = Arc::new(Sink::default());
        let (intake, _) = intake(&sink);
        let err = resync_once_with(&fixed, &fixed, Some(&Unreadable), &intake)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("Coolify down"), "{err}");
        let journaled: Vec<(String, Option<String>)> = sink
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|e| (e.record_id.clone(), e.record_updated.clone()))
            .collect();
        assert_eq!(journaled, vec![("abcdefghijklmno".to_string(), Some("u2".to_string()))]);
    }

    #[tokio::test]
    async fn list_failure_enqueues_nothing_for_that_collection() {
        struct Failing;
        impl RecordLister for Failing {
            fn list(&self, _: Collection) -> ListFuture<'_, Vec<RecordStamp>> {
                Box::pin(async { Err("PocketBase down".into()) })
            }
        }
        let fixed = Fixed(
            HashMap::new(),
            HashMap::from([(Collection::Tenants, known(&[("a", "u")]))]),
        );
        let sink = Arc::new(Sink::default());
        let (intake, _) = intake(&sink);
        let err = resync_once(&Failing, &fixed, &intake).await.unwrap_err();
        assert_eq!(err.to_string(), "listing tenants failed: PocketBase down");
        assert!(sink.0.lock().unwrap().is_empty());
    }

    /// Starts run_periodic over `lister`; returns what observes it.
    struct Periodic {
        sink: Arc<Sink>,
        notify: Arc<Notify>,
        connect: watch::Sender<u64>,
        doubt: watch::Sender<u64>,
        cancel: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    fn periodic_over(interval: Duration, lister: Arc<dyn RecordLister>) -> Periodic {
        let known = Arc::new(Fixed(HashMap::new(), HashMap::new()));
        let sink = Arc::new(Sink::default());
        let (intake, notify) = intake(&sink);
        let (connect, connect_rx) = watch::channel(0u64);
        let (doubt, doubt_rx) = watch::channel(0u64);
        let cancel = CancellationToken::new();
        let resyncer = Resyncer {
            lister,
            known,
            drift: None,
            intake,
            turns: FleetTurns::default(),
        };
        let task = tokio::spawn(run_periodic(
            interval,
            connect_rx,
            doubt_rx,
            Trigger::new(),
            resyncer,
            cancel.clone(),
        ));
        Periodic {
            sink,
            notify,
            connect,
            doubt,
            cancel,
            task,
        }
    }

    fn periodic(interval: Duration) -> Periodic {
        let fixed = Arc::new(Fixed(
            HashMap::from([(Collection::Tenants, vec![stamp("a", "u1")])]),
            HashMap::new(),
        ));
        periodic_over(interval, fixed)
    }

    impl Periodic {
        async fn stop(self) {
            self.cancel.cancel();
            tokio::time::timeout(Duration::from_secs(2), self.task)
                .await
                .expect("stops on cancel")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn periodic_runs_after_connect() {
        let p = periodic(Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            p.sink.0.lock().unwrap().is_empty(),
            "no pass before a connect or the interval"
        );
        p.connect.send_modify(|n| *n += 1);
        tokio::time::timeout(Duration::from_secs(2), p.notify.notified())
            .await
            .expect("resync after connect");
        assert_eq!(p.sink.0.lock().unwrap().len(), 1);
        p.stop().await;
    }

    #[tokio::test]
    async fn periodic_runs_every_interval_without_connects() {
        let p = periodic(Duration::from_millis(50));
        tokio::time::timeout(Duration::from_secs(2), p.notify.notified())
            .await
            .expect("resync after interval");
        assert_eq!(p.sink.0.lock().unwrap().len(), 1);
        p.stop().await;
    }

    /// Fails its first `failures` listings, then lists one tenant; counts every call.
    struct Flaky {
        failures: u32,
        calls: Mutex<Vec<tokio::time::Instant>>,
    }

    impl RecordLister for Flaky {
        fn list(&self, c: Collection) -> ListFuture<'_, Vec<RecordStamp>> {
            let mut calls = self.calls.lock().unwrap();
            if c == Collection::Tenants {
                calls.push(tokio::time::Instant::now());
            }
            let fail = calls.len() as u32 <= self.failures;
            Box::pin(async move {
                match (fail, c) {
                    (true, _) => Err("connection reset".into()),
                    (false, Collection::Tenants) => Ok(vec![stamp("a", "u1")]),
                    (false, Collection::BotInstances) => Ok(Vec::new()),
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_pass_is_retried_with_backoff_until_it_succeeds() {
        let lister = Arc::new(Flaky {
            failures: 3,
            calls: Mutex::new(Vec::new()),
        });
        let p = periodic_over(Duration::from_secs(300), lister.clone());
        let t0 = tokio::time::Instant::now();
        p.connect.send_modify(|n| *n += 1);
        tokio::time::timeout(Duration::from_secs(60), p.notify.notified())
            .await
            .expect("a pass succeeds without another connect");
        assert_eq!(p.sink.0.lock().unwrap().len(), 1);
        let gaps: Vec<u64> = lister
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.duration_since(t0).as_secs())
            .collect();
        assert_eq!(gaps, [0, 1, 3, 7], "retried after 1, 2 and 4 s");
        p.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_in_doubt_is_resynced_unless_a_reconnect_comes_first() {
        let lister = Arc::new(Flaky {
            failures: 0,
            calls: Mutex::new(Vec::new()),
        });
        let p = periodic_over(Duration::from_secs(300), lister.clone());
        let t0 = tokio::time::Instant::now();
        // A stream ends and no reconnect follows: a pass after the grace.
        p.doubt.send_modify(|n| *n += 1);
        tokio::time::timeout(Duration::from_secs(10), p.notify.notified())
            .await
            .expect("resync after a stream in doubt");
        // A stream ends and its reconnect follows at once: one pass, for the connect.
        tokio::time::sleep(Duration::from_secs(10)).await;
        p.doubt.send_modify(|n| *n += 1);
        p.connect.send_modify(|n| *n += 1);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let at: Vec<u64> = lister
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.duration_since(t0).as_secs())
            .collect();
        assert_eq!(at, [2, 12], "one pass per doubt: after the grace, or at the reconnect");
        p.stop().await;
    }
}
