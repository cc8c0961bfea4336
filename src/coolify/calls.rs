//! The Coolify calls made for each record's jobs, for the operator's instance timeline.
//!
//! Kept in memory, bounded (the last `PER_RECORD` calls of the last `RECORDS` records touched), not in the
//! journal: a call costs a short mutex hold and no disk write, so the bridge stays a light guest on the
//! hot path; what is lost on a restart is diagnostics only (jobs, attempts and their errors are journaled).
//! Only calls made inside a queue job are kept (they know their record); the health poller's, orphan
//! scanner's, resync's and admin API's calls are not.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

/// Calls kept per record: a create with its retries and a few redeploys.
pub const PER_RECORD: usize = 50;
/// Records kept: the least recently called record is forgotten first.
pub const RECORDS: usize = 1000;

/// One HTTP request to Coolify (each retry is its own). Never a URL with values or a body.
#[derive(Debug, Clone, Serialize)]
pub struct CoolifyCall {
    /// When it was sent, in ms since the epoch.
    pub at: i64,
    pub job_id: i64,
    /// The route template with its method, e.g. `PATCH /services/{uuid}`.
    pub route: &'static str,
    /// The answer's status code; none when no answer came.
    pub status: Option<u16>,
    /// Why the exchange failed below HTTP (`timeout`, `connect`, `body`, `too_large`, `transport`).
    pub error: Option<&'static str>,
    pub duration_ms: u64,
}

#[derive(Default)]
pub struct CallLog {
    inner: Mutex<Records>,
}

#[derive(Default)]
struct Records {
    tick: u64,
    by_record: HashMap<String, (u64, VecDeque<CoolifyCall>)>,
}

impl CallLog {
    pub fn note(&self, record_id: &str, call: CoolifyCall) {
        let mut r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        r.tick += 1;
        let tick = r.tick;
        if !r.by_record.contains_key(record_id) && r.by_record.len() >= RECORDS {
            // O(RECORDS), only when a new record comes in while full.
            if let Some(oldest) = r.by_record.iter().min_by_key(|(_, (t, _))| *t).map(|(k, _)| k.clone()) {
                r.by_record.remove(&oldest);
            }
        }
        let (touched, calls) = r.by_record.entry(record_id.to_owned()).or_default();
        *touched = tick;
        if calls.len() >= PER_RECORD {
            calls.pop_front();
        }
        calls.push_back(call);
    }

    /// The record's kept calls, oldest first.
    pub fn for_record(&self, record_id: &str) -> Vec<CoolifyCall> {
        let r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        r.by_record
            .get(record_id)
            .map(|(_, c)| c.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(job_id: i64) -> CoolifyCall {
        CoolifyCall {
            at: 0,
            job_id,
            route: "POST /services",
            status: Some(201),
            error: None,
            duration_ms: 1,
        }
    }

    #[test]
    fn bounded_per_record_and_in_records() {
        let log = CallLog::default();
        for i in 0..(PER_RECORD as i64 + 5) {
            log.note("a", call(i));
        }
        let a = log.for_record("a");
        assert_eq!(a.len(), PER_RECORD);
        assert_eq!(a[0].job_id, 5, "the oldest calls go first");
        for i in 0..RECORDS {
            log.note(&format!("r{i}"), call(0));
        }
        assert!(
            log.for_record("a").is_empty(),
            "the least recently called record is forgotten"
        );
        assert_eq!(log.for_record("r0").len(), 1);
        assert!(log.for_record("b").is_empty());
    }
}
