//! What just changed, announced to whoever watches live (the operator page's stream). The journal carries
//! the feed because every writer of events and job outcomes already holds it. Announcements carry ids,
//! states and job errors (which the admin API shows anyway), never a payload: nothing in them is secret.
//! The channel is bounded: a slow watcher loses the oldest announcements (and is told so), a writer never
//! waits for it.

use serde::Serialize;
use tokio::sync::broadcast;

use super::Journal;
use crate::events::{Action, Collection, Source};

/// Announcements kept for the slowest watcher before it starts to lose them.
pub const CHANGES_CAPACITY: usize = 1024;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// An event was journaled (not a duplicate).
    Event {
        event_id: i64,
        source: Source,
        collection: Collection,
        record_id: String,
        action: Action,
    },
    /// A record's job was claimed (`outcome` = "claimed") or an attempt ended ("succeeded", "retry",
    /// "dead", "failed", "unavailable", "superseded").
    Job {
        collection: Collection,
        record_id: String,
        outcome: &'static str,
        error: Option<String>,
    },
    /// The health poller's verdict on an instance changed.
    Health { record_id: String, verdict: &'static str },
    /// A template rollout began or journaled a step (a batch started or done, or its end).
    Rollout { rollout_id: i64 },
}

pub(crate) fn channel() -> broadcast::Sender<Change> {
    broadcast::channel(CHANGES_CAPACITY).0
}

impl Journal {
    /// A new watcher of changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// Tells the watchers, if any; never waits.
    pub fn announce(&self, change: Change) {
        let _ = self.inner.changes.send(change);
    }
}
