//! The newest version of each bot instance seen on the realtime stream, with its tenant and template
//! (the stream's subscription asks PocketBase to expand them): a job for a change the stream brought takes
//! the record from here instead of reading it back from PocketBase, one request fewer per change
//! (issue 17). The journal never holds these records (they carry secrets), so this lives in memory only,
//! and whatever it does not hold with certainty is read from PocketBase as before.
//!
//! What keeps it from handing out a version older than PocketBase's:
//! - a frame older than the version held is ignored (the stream's frames may come out of order), and two
//!   frames of one `updated` make the version ambiguous;
//! - any other source's event for the record (webhook, resync, tenant fan-out, health) and a delete
//!   frame leave a mark instead: such a run reads, and no frame of that version or an older one is held
//!   after it;
//! - the stream's end drops everything (frames may be missed until the resync);
//! - the job takes a version only when it is newer than the one the journal records as applied
//!   ([`usable`]), which also covers most late frames that come after their record's entry was evicted.
//!   What remains (a frame later than [`CAPACITY`] others, of a version between the applied one and the
//!   newest) is acted on once and then corrected by the resync, which finds the record newer than applied.
//!
//! Hand-written rather than an LRU crate: the eviction needed is "oldest entry first" over a few hundred
//! entries, and the rules above are the substance.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use crate::journal::AppliedVersion;
use crate::pocketbase::records::{BotInstance, BotTemplate, Tenant};

/// Entries kept: enough for the changes whose jobs have not run yet at a few hundred changes a second;
/// a job that comes later reads. A few KB each (the template's compose is the largest part).
pub const CAPACITY: usize = 256;

/// An instance as a realtime frame carried it, with its relations.
#[derive(Debug, Clone)]
pub struct Seen {
    pub instance: BotInstance,
    /// `None`: the relation points at no record (the frame was expanded; see [`Latest::saw`]).
    pub tenant: Option<Tenant>,
    pub template: Option<BotTemplate>,
}

enum Held {
    Record(Arc<Seen>),
    /// A version exists that is not held (ambiguous, or its frame could not be used): nothing older may
    /// take its place.
    Mark,
}

struct Entry {
    updated: String,
    held: Held,
    /// Insertion order, for eviction.
    seq: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    order: BTreeMap<u64, String>,
    next_seq: u64,
}

impl Inner {
    fn remove(&mut self, id: &str) {
        if let Some(e) = self.entries.remove(id) {
            self.order.remove(&e.seq);
        }
    }

    fn insert(&mut self, id: &str, updated: &str, held: Held, capacity: usize) {
        self.remove(id);
        while self.entries.len() >= capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, id.to_owned());
        self.entries.insert(
            id.to_owned(),
            Entry {
                updated: updated.to_owned(),
                held,
                seq,
            },
        );
    }
}

/// See the module documentation. Shared by the realtime consumer (which fills it), the intake (which
/// marks what other sources make uncertain) and the instance executor (which takes from it).
pub struct Latest {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl Default for Latest {
    fn default() -> Self {
        Latest::with_capacity(CAPACITY)
    }
}

impl Latest {
    pub fn with_capacity(capacity: usize) -> Self {
        Latest {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stream brought version `updated` of instance `id`; `seen` is `None` when the frame could not
    /// be used (no expanded tenant, a field that did not decode): that version is then known to exist
    /// but is not held.
    pub fn saw(&self, id: &str, updated: &str, seen: Option<Seen>) {
        let mut inner = self.inner();
        let held = match inner.entries.get(id) {
            Some(e) if e.updated.as_str() > updated => return,
            // Two versions in one millisecond (or one version twice): which is newer is unknown.
            Some(e) if e.updated == updated => Held::Mark,
            _ => seen.map_or(Held::Mark, |s| Held::Record(Arc::new(s))),
        };
        inner.insert(id, updated, held, self.capacity);
    }

    /// Something other than a record frame of the stream announced version `updated` of the record (a
    /// webhook, the resync, a delete frame), or, with `None`, that something it depends on changed (its
    /// tenant, its health): its job reads it, and no frame of that version or an older one is held after.
    /// An announcement older than the version held leaves it held: that version is newer.
    pub fn announced(&self, id: &str, updated: Option<&str>) {
        let mut inner = self.inner();
        let held = inner.entries.get(id).map(|e| e.updated.as_str());
        let mark_at = match (held, updated) {
            (Some(held), Some(u)) if held > u => return,
            (_, Some(u)) => u.to_owned(),
            (Some(held), None) => held.to_owned(),
            (None, None) => return,
        };
        inner.insert(id, &mark_at, Held::Mark, self.capacity);
    }

    /// The stream ended: frames may be missed until the resync, so nothing held is known to be newest.
    pub fn clear(&self) {
        let mut inner = self.inner();
        inner.entries.clear();
        inner.order.clear();
    }

    /// The version held for `id` and its `updated`, if one is.
    pub fn get(&self, id: &str) -> Option<(String, Arc<Seen>)> {
        match self.inner().entries.get(id) {
            Some(Entry {
                updated,
                held: Held::Record(seen),
                ..
            }) => Some((updated.clone(), seen.clone())),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.inner().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a version held at `updated` may stand in for a read: the version the journal records as
/// applied (`applied`, see [`crate::journal::Journal::applied_version`]) must be older. A record the
/// journal saw deleted is read: a frame of its last life must not bring it back.
pub fn usable(updated: &str, applied: Option<&AppliedVersion>) -> bool {
    match applied {
        None => true,
        Some(a) if a.deleted => false,
        Some(a) => a.updated.as_deref().is_none_or(|last| updated > last),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seen(id: &str, updated: &str) -> Seen {
        let instance: BotInstance = serde_json::from_value(json!({
            "id": id, "tenant": "t1", "template": "tp1", "name": "n", "subdomain": "s",
            "desired_state": "running", "config": {}, "updated": updated,
        }))
        .unwrap();
        Seen {
            instance,
            tenant: None,
            template: None,
        }
    }

    fn held(l: &Latest, id: &str) -> Option<String> {
        l.get(id).map(|(u, _)| u)
    }

    const T1: &str = "2026-12-02 10:00:00.001Z";
    const T2: &str = "2026-12-02 10:00:00.002Z";
    const T3: &str = "2026-12-02 10:00:00.003Z";

    #[test]
    fn a_newer_frame_replaces_and_an_older_one_is_ignored() {
        let l = Latest::default();
        l.saw("a", T2, Some(seen("a", T2)));
        l.saw("a", T1, Some(seen("a", T1)));
        assert_eq!(held(&l, "a").as_deref(), Some(T2), "an older frame came late");
        l.saw("a", T3, Some(seen("a", T3)));
        assert_eq!(held(&l, "a").as_deref(), Some(T3));
        assert_eq!(l.get("a").unwrap().1.instance.id, "a");
    }

    #[test]
    fn two_frames_of_one_millisecond_hold_nothing_and_keep_older_ones_out() {
        let l = Latest::default();
        l.saw("a", T2, Some(seen("a", T2)));
        l.saw("a", T2, Some(seen("a", T2)));
        assert_eq!(held(&l, "a"), None);
        l.saw("a", T1, Some(seen("a", T1)));
        assert_eq!(held(&l, "a"), None, "the mark keeps an older frame out");
        l.saw("a", T3, Some(seen("a", T3)));
        assert_eq!(held(&l, "a").as_deref(), Some(T3));
    }

    #[test]
    fn an_unusable_frame_marks_its_version() {
        let l = Latest::default();
        l.saw("a", T1, Some(seen("a", T1)));
        l.saw("a", T2, None);
        assert_eq!(held(&l, "a"), None, "the held version is no longer the newest");
        l.saw("a", T1, Some(seen("a", T1)));
        assert_eq!(held(&l, "a"), None);
    }

    #[test]
    fn another_source_s_announcement_makes_the_job_read() {
        let l = Latest::default();
        l.saw("a", T2, Some(seen("a", T2)));
        l.announced("a", Some(T1));
        assert_eq!(
            held(&l, "a").as_deref(),
            Some(T2),
            "a webhook of an older version came late"
        );
        l.announced("a", Some(T3));
        assert_eq!(held(&l, "a"), None);
        l.saw("a", T2, Some(seen("a", T2)));
        assert_eq!(held(&l, "a"), None, "a frame older than the webhook's version");
        l.saw("a", T3, Some(seen("a", T3)));
        assert_eq!(held(&l, "a"), None, "the webhook's own version, by frame");

        l.saw("b", T1, Some(seen("b", T1)));
        l.announced("b", None);
        assert_eq!(held(&l, "b"), None, "its tenant changed");
        l.saw("b", T1, Some(seen("b", T1)));
        assert_eq!(held(&l, "b"), None);
        l.announced("c", None);
        assert!(l.get("c").is_none() && l.len() == 2, "nothing to mark");
    }

    #[test]
    fn the_stream_s_end_drops_everything() {
        let l = Latest::default();
        l.saw("a", T1, Some(seen("a", T1)));
        l.saw("b", T1, None);
        l.clear();
        assert!(l.is_empty());
        l.saw("b", T1, Some(seen("b", T1)));
        assert_eq!(held(&l, "b").as_deref(), Some(T1));
    }

    #[test]
    fn the_oldest_entry_goes_first_and_the_size_stays_bounded() {
        let l = Latest::with_capacity(2);
        l.saw("a", T1, Some(seen("a", T1)));
        l.saw("b", T1, Some(seen("b", T1)));
        l.saw("a", T2, Some(seen("a", T2)));
        l.saw("c", T1, Some(seen("c", T1)));
        assert_eq!(l.len(), 2);
        assert_eq!(held(&l, "b"), None, "b was the oldest entry");
        assert_eq!(held(&l, "a").as_deref(), Some(T2));
        for i in 0..100 {
            l.announced("a", None);
            l.saw("a", T3, Some(seen("a", T3)));
            l.saw(&format!("x{i}"), T1, None);
        }
        assert_eq!(l.len(), 2);
        assert_eq!(l.inner().order.len(), 2, "the order holds no ids that left");
    }

    #[test]
    fn only_a_version_newer_than_the_applied_one_stands_in_for_a_read() {
        let applied = |updated: Option<&str>, deleted| AppliedVersion {
            updated: updated.map(str::to_owned),
            deleted,
        };
        assert!(usable(T2, None), "never applied: a create");
        assert!(usable(T2, Some(&applied(None, false))));
        assert!(usable(T2, Some(&applied(Some(T1), false))));
        assert!(
            !usable(T2, Some(&applied(Some(T2), false))),
            "already applied: a rerun reads"
        );
        assert!(
            !usable(T1, Some(&applied(Some(T2), false))),
            "a late frame of an older version"
        );
        assert!(
            !usable(T3, Some(&applied(Some(T1), true))),
            "the record was seen deleted"
        );
        assert!(!usable(T3, Some(&applied(None, true))));
    }
}
