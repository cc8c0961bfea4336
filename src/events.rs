//! What every event source hands to the journal: a normalized change hint.
//!
//! Events are hints, state is truth: a source only says "this record may have changed"; the reconciler
//! re-reads the record before acting.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::text::text_enum;

text_enum!(
    /// Where an event came from.
    pub enum Source {
        Realtime => "realtime",
        Webhook => "webhook",
        Resync => "resync",
        Replay => "replay",
        /// The record's tenant changed (status, plan, project): the tenant's job wakes its instances.
        Tenant => "tenant",
        /// The health poller's judgement of the record's service changed.
        Health => "health",
    }
);

text_enum!(
    /// The record change an event announces.
    pub enum Action {
        Create => "create",
        Update => "update",
        Delete => "delete",
    }
);

text_enum!(
    /// The collections the bridge watches.
    pub enum Collection {
        Tenants => "tenants",
        BotInstances => "bot_instances",
    }
);

const MAX_RECORD_ID_LEN: usize = 50;

/// What a record id may look like: PocketBase's default ids are 15 lowercase alphanumerics; a little more
/// is accepted, but nothing that could not be used safely in names, paths and logs. Every door (webhook,
/// realtime, resync, admin API, page) applies this one rule.
pub fn valid_record_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_RECORD_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// What [`valid_record_id`] accepts, for error messages.
pub const RECORD_ID_RULE: &str = "1 to 50 characters of a-z, 0-9, '_' or '-'";

/// A normalized event, ready to be journaled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewEvent {
    pub source: Source,
    pub collection: Collection,
    pub record_id: String,
    pub action: Action,
    /// The record's `updated` value as PocketBase sent it, if known.
    pub record_updated: Option<String>,
    /// Unique per change: the same change seen through two sources has the same key
    /// (`collection:record_id:action:updated`), so it is journaled once.
    pub dedupe_key: String,
    /// The webhook delivery id, for webhook events (deduplicated on its own as well).
    pub delivery_id: Option<String>,
    /// The record as received, with no secret in it.
    pub payload: serde_json::Value,
    /// What the change asks for ([`request_fingerprint`]), taken from the full record before its secrets
    /// were stripped, so a change to a secret-looking config key is never mistaken for an echo. `None`
    /// lets the journal compute it from `payload`.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// The W3C `traceparent` the event's trace continues: a webhook's header on the way in, the intake
    /// span's own once journaled (src/otel.rs); none when traces are not exported.
    #[serde(default)]
    pub trace_context: Option<String>,
}

impl NewEvent {
    /// The cross-source dedupe key for a change.
    pub fn change_key(collection: Collection, record_id: &str, action: Action, record_updated: Option<&str>) -> String {
        format!(
            "{}:{}:{}:{}",
            collection.as_str(),
            record_id,
            action.as_str(),
            record_updated.unwrap_or("")
        )
    }
}

/// Fields of a bot instance that only the bridge (or PocketBase itself) writes. The hooks and the
/// migrations' API rules list the same fields (a test keeps them equal).
pub const INSTANCE_BRIDGE_FIELDS: &[&str] = &[
    "status",
    "error_message",
    "pending_reason",
    "changed_by",
    "last_healthy_at",
    "coolify_service_id",
    "coolify_project_id",
    "domain",
    "applied_hash",
    "router_key_id",
    "secrets_hash",
    "updated",
    "created",
    "collectionId",
    "collectionName",
    "expand",
    "template_version",
    "retained_until",
];

/// Key of the request fingerprints. The fingerprint covers values that may be secrets (any config key),
/// so it is keyed: a copy of the journal does not let anyone test guesses of a config value offline.
static FINGERPRINT_KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();

/// Sets the fingerprint key (derived from the bridge key, so fingerprints survive restarts). Call once at
/// start-up, before any event is fingerprinted; returns false when another key was already in use (several
/// bridges in one process, as in tests, share the key: they must share the bridge key too). Without a
/// call, a random key lives for the process.
pub fn set_fingerprint_key(key: [u8; 32]) -> bool {
    FINGERPRINT_KEY.set(key).is_ok() || FINGERPRINT_KEY.get() == Some(&key)
}

fn fingerprint_key() -> &'static [u8; 32] {
    FINGERPRINT_KEY.get_or_init(rand::random)
}

/// Fingerprint of what a bot instance asks for: the whole record as a realtime frame or webhook carries it,
/// secrets included, without the fields the bridge writes. Two versions with the same fingerprint differ
/// only in status, ids, hashes or health, so once one is applied the other needs no reconcile: this is how
/// the echoes of the bridge's own write-backs (and of the health poller's) are told apart from real
/// changes. Compute it before stripping secrets (see [`NewEvent::fingerprint`]). `None` for anything else
/// (tenants, deletes, resync and replay hints, which carry no full record).
pub fn request_fingerprint(
    source: Source,
    collection: Collection,
    action: Action,
    payload: &serde_json::Value,
) -> Option<String> {
    use hmac::{Hmac, KeyInit, Mac};
    if !matches!(source, Source::Realtime | Source::Webhook)
        || collection != Collection::BotInstances
        || action == Action::Delete
    {
        return None;
    }
    let record = payload.as_object()?;
    record.get("id")?;
    // Sorted by key, so the same record serializes alike whichever source sent it.
    let asked: std::collections::BTreeMap<&String, &serde_json::Value> = record
        .iter()
        .filter(|(k, _)| !INSTANCE_BRIDGE_FIELDS.contains(&k.as_str()))
        .collect();
    let text = serde_json::to_string(&asked).ok()?;
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(fingerprint_key()).ok()?;
    mac.update(text.as_bytes());
    Some(hex::encode(&mac.finalize().into_bytes()[..12]))
}

/// An error from behind a trait object (a sink, a lister), kept with its type and sources.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The journal's answer to an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// Stored durably; `job_id` is the record's job, which may already have been queued (coalesced).
    New {
        event_id: i64,
        job_id: i64,
        coalesced: bool,
    },
    /// Stored as done without a job: it changes only fields the bridge writes, and what it asks for is
    /// already applied or being applied (see [`request_fingerprint`]).
    Settled { event_id: i64 },
    /// Already journaled (same change key or same webhook delivery id).
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The event could not be stored durably; the sender must not be told it was accepted.
    #[error("journal unavailable: {0}")]
    Unavailable(#[source] BoxError),
}

pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<Ingested, SinkError>> + Send + 'a>>;
pub type ReplayFuture<'a> = Pin<Box<dyn Future<Output = Result<usize, SinkError>> + Send + 'a>>;

/// What an operator asks to run again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// The records of these events.
    Events(Vec<i64>),
    /// One record, whether or not it was seen before.
    Record(Collection, String),
    /// Every record with an event received at or after this time (ms UTC).
    Since(i64),
    /// Every record whose job failed, is parked or is dead.
    Failed,
    /// Every live (not deleted) record of the collection the journal knows.
    Live(Collection),
}

/// Where the intake puts events. The journal implements it; tests may use a simple in-memory sink.
pub trait EventSink: Send + Sync {
    fn ingest(&self, event: NewEvent) -> SinkFuture<'_>;
    /// Requeues the records `what` names, with their attempts reset; returns how many.
    fn replay(&self, what: Replay) -> ReplayFuture<'_>;
}
