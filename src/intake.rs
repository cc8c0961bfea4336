//! The intake: the one door through which an event enters the bridge. Every producer (webhook ingest,
//! realtime consumer, resync, admin replay, the tenant's fan-out, the health poller) hands its events
//! to [`Intake::submit`], which journals them, counts them by source and wakes the dispatcher when a
//! job is due. [`record_event`] turns a record as PocketBase exports it into an event, so that every
//! source agrees on the dedupe key, on which record ids are acceptable and on what never enters the
//! journal (secrets).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};
use tokio::sync::Notify;
use tracing::Instrument;

use crate::events::{
    Action, Collection, EventSink, Ingested, NewEvent, RECORD_ID_RULE, Replay, SinkError, Source, valid_record_id,
};
use crate::latest::{Kind, Latest};
use crate::metrics::Metrics;

/// Journals events and wakes the dispatcher. Cheap to clone.
#[derive(Clone)]
pub struct Intake {
    sink: Arc<dyn EventSink>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// See [`Intake::instance_changes`].
    instance_changes: Arc<AtomicU64>,
    /// See [`Intake::latest`].
    latest: Arc<Latest>,
}

impl Intake {
    /// An intake into `sink` that pokes `wake` (the dispatcher's notifier) when a job is due and counts
    /// events in `metrics`.
    pub fn new(sink: Arc<dyn EventSink>, wake: Arc<Notify>, metrics: Arc<Metrics>) -> Self {
        Intake {
            sink,
            wake,
            metrics,
            instance_changes: Arc::new(AtomicU64::new(0)),
            latest: Arc::new(Latest::default()),
        }
    }

    /// The newest version of each instance, tenant and template the realtime stream brought, for a job to
    /// take instead of a read; every other source's event marks its record as to be read (see
    /// [`crate::latest`]).
    pub fn latest(&self) -> &Latest {
        &self.latest
    }

    /// Grows whenever an instance may have changed in PocketBase as far as this process can tell: with
    /// every instance event PocketBase's side sends (realtime, webhook, resync; the echoes of the bridge's
    /// own write-backs among them) and every resync pass, which also follows each realtime reconnect.
    /// While it stands still, a listing of instances taken before still holds.
    pub fn instance_changes(&self) -> u64 {
        self.instance_changes.load(Ordering::Acquire)
    }

    /// A resync pass ended: changes a cut stream missed may be in PocketBase without an event (the
    /// bridge's own write-backs, which the pass does not enqueue).
    pub fn resync_passed(&self) {
        self.instance_changes.fetch_add(1, Ordering::AcqRel);
    }

    /// The registry the intake counts in (shared by the producers that count too).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Journals `event`; the dispatcher starts its job at once. Only an event stored durably is
    /// answered with `Ok`.
    pub async fn submit(&self, mut event: NewEvent) -> Result<Ingested, SinkError> {
        let source = event.source.as_str();
        self.metrics.events_received.with_label_values(&[source]).inc();
        if event.collection == Collection::BotInstances
            && matches!(event.source, Source::Realtime | Source::Webhook | Source::Resync)
        {
            self.instance_changes.fetch_add(1, Ordering::AcqRel);
        }
        if event.source != Source::Realtime || event.action == Action::Delete {
            let kind = Kind::of(event.collection);
            self.latest
                .announced(kind, &event.record_id, event.record_updated.as_deref());
        }
        // The event's trace starts here (or continues the sender's); its job continues it from the journal.
        let span = tracing::info_span!(
            "intake",
            source,
            collection = event.collection.as_str(),
            record_id = %event.record_id,
            action = event.action.as_str()
        );
        if let Some(parent) = event.trace_context.take() {
            crate::otel::continue_trace(&span, &parent);
        }
        event.trace_context = crate::otel::traceparent(&span);
        // Only an exported trace shows the journal's share; untraced, the span cost about 1.5 % of the
        // bridge's CPU in a flood (docs/BENCHMARKS.md, "Fortieth session").
        let journal_span = if event.trace_context.is_some() {
            tracing::info_span!(parent: &span, "journal.ingest")
        } else {
            tracing::Span::none()
        };
        let ingested = self
            .sink
            .ingest(event)
            .instrument(journal_span)
            .instrument(span)
            .await?;
        match ingested {
            Ingested::New { .. } => self.wake.notify_one(),
            Ingested::Duplicate => self.metrics.events_deduplicated.with_label_values(&[source]).inc(),
            Ingested::Settled { .. } => {}
        }
        Ok(ingested)
    }

    /// Requeues the records `what` names (a `replay` event each) and wakes the dispatcher.
    pub async fn replay(&self, what: Replay) -> Result<usize, SinkError> {
        let n = self.sink.replay(what).await?;
        self.metrics
            .events_received
            .with_label_values(&[Source::Replay.as_str()])
            .inc_by(n as u64);
        self.wake.notify_one();
        Ok(n)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record has no string field \"id\"")]
    MissingId,
    #[error("record id must be {RECORD_ID_RULE}")]
    BadId,
    #[error("record field \"updated\" must be a string")]
    BadUpdated,
}

/// The id of a record as PocketBase exported it, checked as every source checks it.
pub fn record_id(record: &Map<String, Value>) -> Result<String, RecordError> {
    match record.get("id") {
        Some(Value::String(id)) if valid_record_id(id) => Ok(id.clone()),
        Some(Value::String(_)) => Err(RecordError::BadId),
        _ => Err(RecordError::MissingId),
    }
}

/// Builds the event for one record change. `record` is the record as PocketBase exported it.
pub fn record_event(
    source: Source,
    collection: Collection,
    action: Action,
    record: Map<String, Value>,
    delivery_id: Option<String>,
) -> Result<NewEvent, RecordError> {
    let record_id = record_id(&record)?;
    let record_updated = match record.get("updated") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) if u.is_empty() => None,
        Some(Value::String(u)) => Some(u.clone()),
        Some(_) => return Err(RecordError::BadUpdated),
    };
    let mut payload = Value::Object(record);
    // Before stripping: a change to a secret-looking config key is a change all the same.
    let fingerprint = crate::events::request_fingerprint(source, collection, action, &payload);
    crate::journal::strip_secrets(&mut payload);
    Ok(NewEvent {
        source,
        collection,
        dedupe_key: NewEvent::change_key(collection, &record_id, action, record_updated.as_deref()),
        record_id,
        action,
        record_updated,
        delivery_id,
        payload,
        fingerprint,
        trace_context: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ReplayFuture, SinkFuture};
    use serde_json::json;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Answers each ingest with the next of its prepared answers.
    struct Scripted(Mutex<Vec<Ingested>>);

    impl EventSink for Scripted {
        fn ingest(&self, _: NewEvent) -> SinkFuture<'_> {
            let next = self.0.lock().unwrap().remove(0);
            Box::pin(async move { Ok(next) })
        }

        fn replay(&self, _: Replay) -> ReplayFuture<'_> {
            Box::pin(async { Ok(3) })
        }
    }

    async fn woken(wake: &Notify) -> bool {
        tokio::time::timeout(Duration::from_millis(50), wake.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_new_job_or_a_replay_wakes_the_dispatcher_and_nothing_else_does() {
        let sink = Arc::new(Scripted(Mutex::new(vec![
            Ingested::Duplicate,
            Ingested::Settled { event_id: 1 },
            Ingested::New {
                event_id: 2,
                job_id: 1,
                coalesced: false,
            },
        ])));
        let wake = Arc::new(Notify::new());
        let intake = Intake::new(sink, wake.clone(), Arc::new(Metrics::new()));
        let event = |source| {
            record_event(
                source,
                Collection::BotInstances,
                Action::Update,
                obj(json!({"id": "abc"})),
                None,
            )
            .unwrap()
        };
        assert_eq!(intake.submit(event(Source::Tenant)).await.unwrap(), Ingested::Duplicate);
        assert!(!woken(&wake).await, "a duplicate makes no job");
        intake.submit(event(Source::Health)).await.unwrap();
        assert!(!woken(&wake).await, "a settled echo makes no job");
        intake.submit(event(Source::Tenant)).await.unwrap();
        assert!(woken(&wake).await, "a new job starts at once");
        assert_eq!(intake.replay(Replay::Failed).await.unwrap(), 3);
        assert!(woken(&wake).await, "replayed jobs start at once");
    }

    #[tokio::test]
    async fn instance_changes_grow_with_pocketbase_s_instance_events_and_resync_passes_only() {
        let sink = Arc::new(Scripted(Mutex::new(vec![Ingested::Duplicate; 7])));
        let intake = Intake::new(sink, Arc::new(Notify::new()), Arc::new(Metrics::new()));
        let event = |source, collection| {
            record_event(source, collection, Action::Update, obj(json!({"id": "abc"})), None).unwrap()
        };
        for source in [Source::Health, Source::Tenant, Source::Replay] {
            intake.submit(event(source, Collection::BotInstances)).await.unwrap();
        }
        intake
            .submit(event(Source::Realtime, Collection::Tenants))
            .await
            .unwrap();
        assert_eq!(
            intake.instance_changes(),
            0,
            "none of these changes an instance in PocketBase"
        );
        for source in [Source::Realtime, Source::Webhook, Source::Resync] {
            intake.submit(event(source, Collection::BotInstances)).await.unwrap();
        }
        assert_eq!(
            intake.instance_changes(),
            3,
            "even a duplicate says the instance changed"
        );
        intake.clone().resync_passed();
        assert_eq!(intake.instance_changes(), 4, "clones share the count");
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test literal is an object"),
        }
    }

    #[test]
    fn builds_key_and_strips_secrets() {
        let record = obj(json!({
            "id": "abc123", "updated": "2026-01-01 00:00:00.000Z", "name": "n",
            "api_token": "t", "Password": "p", "secrets_hash": "h", "my_API_KEY": "k",
            "config": {"nested": {"client_secret": "s", "keep": 1}, "list": [{"token": "x", "ok": true}]}
        }));
        let ev = record_event(
            Source::Webhook,
            Collection::BotInstances,
            Action::Update,
            record,
            Some("msg_1".into()),
        )
        .unwrap();
        assert_eq!(ev.dedupe_key, "bot_instances:abc123:update:2026-01-01 00:00:00.000Z");
        assert_eq!(ev.record_updated.as_deref(), Some("2026-01-01 00:00:00.000Z"));
        assert_eq!(
            ev.payload,
            json!({"id": "abc123", "updated": "2026-01-01 00:00:00.000Z", "name": "n", "secrets_hash": "h",
                   "config": {"nested": {"keep": 1}, "list": [{"ok": true}]}})
        );
    }

    #[test]
    fn fingerprint_sees_secret_looking_keys_that_the_payload_drops() {
        let event = |token: &str| {
            let record = obj(json!({"id": "abc123", "updated": "u", "config": {"DISCORD_TOKEN": token}}));
            record_event(Source::Realtime, Collection::BotInstances, Action::Update, record, None).unwrap()
        };
        let (a, b) = (event("old"), event("new"));
        assert_eq!(a.payload, b.payload, "the secret-looking key is not stored");
        assert!(a.fingerprint.is_some());
        assert_ne!(a.fingerprint, b.fingerprint, "but its change is seen");
    }

    #[test]
    fn rejects_bad_ids() {
        for bad in [
            json!({}),
            json!({"id": 5}),
            json!({"id": ""}),
            json!({"id": "ABC"}),
            json!({"id": "a/b"}),
            json!({"id": "x".repeat(51)}),
        ] {
            assert!(
                record_event(
                    Source::Realtime,
                    Collection::Tenants,
                    Action::Create,
                    obj(bad.clone()),
                    None
                )
                .is_err(),
                "{bad}"
            );
        }
        let bad_updated = obj(json!({"id": "a", "updated": 5}));
        assert_eq!(
            record_event(Source::Realtime, Collection::Tenants, Action::Create, bad_updated, None).unwrap_err(),
            RecordError::BadUpdated
        );
    }
}
