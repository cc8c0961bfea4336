//! Row types and states, serializable for the admin API.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::JournalError;
use crate::events::{Action, Collection, Source};
use crate::text::text_enum;

text_enum!(
    /// Processing status of one event.
    pub enum EventStatus {
        Queued => "queued",
        Done => "done",
        Failed => "failed",
    }
);

text_enum!(
    /// Life of a record's job. `Waiting` is a permanent failure parked until the record changes.
    pub enum JobState {
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
    pub enum AttemptOutcome {
        Succeeded => "succeeded",
        Failed => "failed",
        Retry => "retry",
        Dead => "dead",
        Interrupted => "interrupted",
    }
);

/// Reads a text column into its enum; a value no build ever wrote is reported as corruption.
pub(crate) fn column<T: FromStr>(name: &'static str, value: String) -> Result<T, JournalError> {
    match value.parse() {
        Ok(v) => Ok(v),
        Err(_) => Err(JournalError::Corrupt { column: name, value }),
    }
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
    /// The job's previous attempt did not succeed (it failed, was parked or interrupted): what it did
    /// outside the bridge before it ended is not known.
    pub after_failure: bool,
}

#[derive(Debug, Clone, Serialize)]
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
    /// The JSON text as journaled, served as it is: parsed into a tree, a 500-event page of the admin
    /// API held about four times its text (a page raised the bridge's peak memory by 3-5 MiB at 10,000
    /// instances, docs/BENCHMARKS.md, "Thirty-seventh session").
    pub payload: Box<serde_json::value::RawValue>,
    pub status: EventStatus,
    pub job_id: Option<i64>,
}

impl EventRow {
    /// The payload parsed, for a caller that reads its fields.
    pub fn payload_value(&self) -> Result<serde_json::Value, JournalError> {
        Ok(serde_json::from_str(self.payload.get())?)
    }
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

/// Where a successful run left its record: recorded with the run's completion, in its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunRecord {
    /// Applied as of this version (the record's `updated` value the run read).
    Applied(String),
    /// Gone, and its runtime resources removed.
    Deleted,
}

/// The version of a record the journal records as applied, or its removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedVersion {
    /// The record's `updated` value last applied (none recorded, e.g. only its removal).
    pub updated: Option<String>,
    pub deleted: bool,
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

/// Notes under one prefix, by the rest of their names: sorted, so that one is found without a hash table
/// beside them (the drift check holds one per service of the fleet).
#[derive(Debug, Default)]
pub struct Notes(Vec<(String, String)>);

impl Notes {
    pub fn new(mut notes: Vec<(String, String)>) -> Self {
        notes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        notes.shrink_to_fit();
        Notes(notes)
    }

    pub fn get(&self, rest: &str) -> Option<&str> {
        let at = self.0.binary_search_by(|(name, _)| name.as_str().cmp(rest)).ok()?;
        self.0.get(at).map(|(_, value)| value.as_str())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::Notes;

    #[test]
    fn notes_are_found_by_name_in_any_order_given() {
        let notes = Notes::new(["m", "b", "z", "a"].map(|n| (n.to_string(), format!("v{n}"))).to_vec());
        for name in ["a", "b", "m", "z"] {
            assert_eq!(notes.get(name), Some(format!("v{name}").as_str()));
        }
        assert_eq!(notes.get("c"), None);
        assert_eq!(notes.len(), 4);
    }
}
