//! What the event-source tests share: a PocketBase with the project's hooks and a test-only schema, and
//! an in-memory sink that deduplicates like the journal (and can be switched off).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cf_bridge::events::{EventSink, Ingested, NewEvent, Replay, ReplayFuture, SinkError, SinkFuture};
use cf_testkit::{PbOptions, TestPb};

pub const SUPERUSER: &str = "bridge@example.com";
pub const PASSWORD: &str = "intake-test-password";

/// Test-only schema; the project's real migration lives elsewhere and is not needed here.
const SCHEMA: &str = r#"migrate((app) => {
  const tenants = new Collection({
    type: "base", name: "tenants",
    fields: [
      { name: "name", type: "text", required: true },
      { name: "status", type: "text" },
      { name: "created", type: "autodate", onCreate: true, onUpdate: false },
      { name: "updated", type: "autodate", onCreate: true, onUpdate: true },
    ],
  });
  app.save(tenants);
  const instances = new Collection({
    type: "base", name: "bot_instances",
    fields: [
      { name: "tenant", type: "relation", required: true, maxSelect: 1, cascadeDelete: true, collectionId: tenants.id },
      { name: "name", type: "text", required: true },
      { name: "config", type: "json" },
      { name: "api_token", type: "text" },
      { name: "secrets_hash", type: "text" },
      { name: "created", type: "autodate", onCreate: true, onUpdate: false },
      { name: "updated", type: "autodate", onCreate: true, onUpdate: true },
    ],
  });
  app.save(instances);
}, (app) => {});
"#;

/// A PocketBase with the project's hooks and the test-only schema; `env` for the hooks, `copy_hooks` for a
/// private copy of the hooks that PocketBase watches and the test may change.
pub async fn intake_pb(env: &[(&str, &str)], copy_hooks: bool) -> TestPb {
    TestPb::start_with(PbOptions {
        schema: Some(SCHEMA.to_string()),
        copy_hooks,
        watch_hooks: copy_hooks,
        superuser: Some((SUPERUSER.to_string(), PASSWORD.to_string())),
        ..PbOptions::env(env)
    })
    .await
}

/// In-memory sink deduplicating like the journal: by change key and by webhook delivery id.
#[derive(Default)]
pub struct MemorySink {
    events: Mutex<Vec<NewEvent>>,
    /// Every event offered, duplicates included.
    offered: Mutex<Vec<NewEvent>>,
    pub unavailable: AtomicBool,
    /// Every ingest passes through a read guard: a test holding the write guard keeps each ingest
    /// offered but unanswered, as a journal busy committing would.
    pub gate: tokio::sync::RwLock<()>,
}

impl MemorySink {
    pub fn events(&self) -> Vec<NewEvent> {
        self.events.lock().expect("sink lock").clone()
    }

    pub fn offered(&self) -> Vec<NewEvent> {
        self.offered.lock().expect("sink lock").clone()
    }

    /// Polls until `done(events)` holds; panics with the events seen after `timeout`.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&[NewEvent]) -> bool) -> Vec<NewEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if done(&events) {
                return events;
            }
            assert!(Instant::now() < deadline, "timed out; sink holds {events:#?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl EventSink for MemorySink {
    fn ingest(&self, event: NewEvent) -> SinkFuture<'_> {
        Box::pin(async move {
            if self.unavailable.load(Ordering::SeqCst) {
                return Err(SinkError::Unavailable("test sink switched off".into()));
            }
            self.offered.lock().expect("sink lock").push(event.clone());
            let _pass = self.gate.read().await;
            let mut events = self.events.lock().expect("sink lock");
            let dup = events.iter().any(|e| {
                e.dedupe_key == event.dedupe_key || (e.delivery_id.is_some() && e.delivery_id == event.delivery_id)
            });
            if dup {
                return Ok(Ingested::Duplicate);
            }
            events.push(event);
            Ok(Ingested::New {
                event_id: events.len() as i64,
                job_id: 1,
                coalesced: false,
            })
        })
    }

    fn replay(&self, _: Replay) -> ReplayFuture<'_> {
        Box::pin(async { Err(SinkError::Unavailable("the test sink does not replay".into())) })
    }
}
