//! Row types and states, serializable for the admin API.

use serde::{Deserialize, Serialize};

use super::JournalError;
use crate::events::{Action, Collection, Source};

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $column:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }

            pub(crate) fn from_column(s: String) -> Result<$name, JournalError> {
                $name::parse(&s).ok_or(JournalError::Corrupt { column: $column, value: s })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// Processing status of one event.
    EventStatus, "events.status" {
        Queued => "queued",
        Done => "done",
        Failed => "failed",
    }
);

text_enum!(
    /// Life of a record's job. `Waiting` is a permanent failure parked until the record changes.
    JobState, "jobs.state" {
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Waiting => "waiting",
        Dead => "dead",
    }
);

text_enum!(
    /// How one attempt ended; `Interrupted` marks attempts cut short by a crash or shutdown.
    AttemptOutcome, "job_attempts.outcome" {
        Succeeded => "succeeded",
        Failed => "failed",
        Retry => "retry",
        Dead => "dead",
        Interrupted => "interrupted",
    }
);

pub(crate) fn parse_source(s: String) -> Result<Source, JournalError> {
    match s.as_str() {
        "realtime" => Ok(Source::Realtime),
        "webhook" => Ok(Source::Webhook),
        "resync" => Ok(Source::Resync),
        "replay" => Ok(Source::Replay),
        _ => Err(JournalError::Corrupt {
            column: "events.source",
            value: s,
        }),
    }
}

pub(crate) fn parse_action(s: String) -> Result<Action, JournalError> {
    match s.as_str() {
        "create" => Ok(Action::Create),
        "update" => Ok(Action::Update),
        "delete" => Ok(Action::Delete),
        _ => Err(JournalError::Corrupt {
            column: "events.action",
            value: s,
        }),
    }
}

pub(crate) fn parse_collection(s: String) -> Result<Collection, JournalError> {
    Collection::parse(&s).ok_or(JournalError::Corrupt {
        column: "collection",
        value: s,
    })
}

/// A job handed to a worker; the job row stays `running` until its outcome is recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClaimedJob {
    pub job_id: i64,
    pub collection: Collection,
    pub record_id: String,
    /// Number of this attempt, starting at 1 (reset when a new event revives the job).
    pub attempts: u32,
    /// Arrival (ms UTC) of the oldest event this run covers that had not been processed.
    pub first_pending_at: Option<i64>,
    /// Events up to this id are covered by this run.
    pub last_event_id: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    pub id: i64,
    pub source: Source,
    pub collection: Collection,
    pub record_id: String,
    pub action: Action,
    pub record_updated: Option<String>,
    pub received_at: i64,
    pub dedupe_key: String,
    pub delivery_id: Option<String>,
    pub payload: serde_json::Value,
    pub status: EventStatus,
    pub job_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRow {
    pub id: i64,
    pub collection: Collection,
    pub record_id: String,
    pub state: JobState,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub coalesced: i64,
    pub first_pending_at: Option<i64>,
    pub dirty: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_event_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRow {
    pub id: i64,
    pub job_id: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// None while the attempt runs.
    pub outcome: Option<AttemptOutcome>,
    pub error: Option<String>,
    pub duration_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordState {
    pub collection: Collection,
    pub record_id: String,
    /// The record's `updated` value last applied.
    pub last_updated: Option<String>,
    pub applied_hash: Option<String>,
    pub deleted: bool,
    pub seen_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Intent {
    pub key: String,
    pub kind: String,
    pub name: String,
    pub coolify_uuid: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The record incarnation the intent was made for (service intents; `None` for tenant intents and
    /// for intents made before incarnations existed).
    pub incarnation: Option<String>,
}

/// Filter for [`super::Journal::list_events`]; every field narrows the result.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EventFilter {
    pub status: Option<EventStatus>,
    pub source: Option<Source>,
    pub collection: Option<Collection>,
    pub record_id: Option<String>,
    pub since_ms: Option<i64>,
}
