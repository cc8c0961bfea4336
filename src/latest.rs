//! The newest version of each bot instance, tenant and template seen on the realtime stream: a job for a
//! change the stream brought takes the instance from its frame, and its tenant and template from theirs
//! (or from an earlier read), instead of reading them back from PocketBase: one request fewer per change
//! (issue 17). The journal never holds these records (they carry secrets), so this lives in memory only,
//! and whatever it does not hold with certainty is read from PocketBase as before.
//!
//! The frames are PocketBase's plain ones: asking the subscription to expand the relations instead made
//! PocketBase expand them for every frame, the bridge's own write-backs included, which cost it more CPU
//! than the read saved (docs/BENCHMARKS.md, ninth session).
//!
//! What keeps it from handing out a version older than PocketBase's:
//! - a frame older than the version held is ignored (the stream's frames may come out of order), and two
//!   different frames of one `updated` make the version ambiguous;
//! - any other source's event for the record (webhook, resync, tenant fan-out, health) and a delete frame
//!   leave a mark instead: such a run reads, and no frame of that version or an older one is held after;
//! - the stream's end, and each new subscription, drop everything (frames may be missed in between), and
//!   nothing is kept while this process holds no stream: a follower replica (only the leader subscribes)
//!   or one between two sessions would keep a read tenant that nothing tells it has changed since;
//! - the job takes an instance only when it is newer than the version the journal records as applied
//!   ([`usable`]), which also covers most late frames that come after their record's entry was evicted.
//!   What remains (a frame later than [`INSTANCES`] others, of a version between the applied one and the
//!   newest) is acted on once and then corrected by the resync, which finds the record newer than applied;
//!   if it is a frame of the bridge's own earlier write, that one run may send the service its spec again.
//! - each of the bridge's own writes keeps what PocketBase answered, the record at the version written
//!   ([`Latest::wrote`]): the frames of the job's earlier writes, and the write's own frame, may come after
//!   it. A write that failed (it may have been carried out) leaves the record unread: only a read settles it.
//!
//! A tenant or template read with an instance is kept too ([`Latest::learned`]), only while the stream is
//! up: any later change of it then comes as a frame, which replaces it. A tenant's job wakes only the instances it
//! lists, and one created after that listing is not woken again, so its job must not work from a tenant
//! older than the one the tenant's job acted on: the tenant's job keeps the tenant it read before it lists
//! (its own writes are kept as above).
//!
//! Hand-written rather than an LRU crate: the eviction needed is "oldest entry first" over a few hundred
//! entries, and the rules above are the substance.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};

use crate::events::Collection;
use crate::journal::AppliedVersion;
use crate::pocketbase::records::{BotInstance, BotTemplate, Tenant, format_pb_date};

/// Instances kept: enough for the changes whose jobs have not run yet at a few hundred changes a second;
/// a job that comes later reads. Each change is kept twice over (its frame, then the answer to the bridge's
/// write-back, which must outlive the write's late frames), so at 200 changes a second 1,024 hold a frame
/// for 2.5 s, and the full runs' jobs there start 1.5-4 s after their change: 0.16-0.20 of every change is
/// read back from PocketBase. 2,048 read none, but cost 2.3 MiB, which took the bridge's peak over a full
/// run to 32.1 MiB (docs/BENCHMARKS.md, "Thirty-second session", "Forty-first session").
pub const INSTANCES: usize = 1024;
/// Tenants kept: every one of a large platform's active tenants (a few hundred bytes each).
pub const TENANTS: usize = 4096;
/// Templates kept: far more than a platform publishes.
pub const TEMPLATES: usize = 256;

enum Held<T> {
    Record(Arc<T>),
    /// A version exists that is not held (ambiguous, announced by another source, or its frame could not
    /// be used): nothing older may take its place.
    Mark,
    /// A write of the bridge's own may have made a version that nothing seen shows (its answer was lost):
    /// no frame may take its place, only a read.
    Unread,
}

struct Entry<T> {
    updated: String,
    held: Held<T>,
    /// Insertion order, for eviction.
    seq: u64,
}

/// The newest version seen of each record of one collection.
struct Versions<T> {
    entries: HashMap<String, Entry<T>>,
    order: BTreeMap<u64, String>,
    next_seq: u64,
    capacity: usize,
}

impl<T: PartialEq> Versions<T> {
    fn new(capacity: usize) -> Self {
        Versions {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            capacity: capacity.max(1),
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some(e) = self.entries.remove(id) {
            self.order.remove(&e.seq);
        }
    }

    fn insert(&mut self, id: &str, updated: &str, held: Held<T>) {
        self.remove(id);
        while self.entries.len() >= self.capacity {
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

    /// A frame of version `updated`; `None` when it could not be used.
    fn saw(&mut self, id: &str, updated: &str, value: Option<T>) {
        let held = match self.entries.get(id) {
            Some(e) if e.updated.as_str() > updated || matches!(e.held, Held::Unread) => return,
            Some(e) if e.updated == updated => match (&e.held, value) {
                // The same version twice (a read and its frame): what is held stays.
                (Held::Record(h), Some(v)) if **h == v => return,
                // Two versions in one millisecond: which is newer is unknown.
                _ => Held::Mark,
            },
            _ => value.map_or(Held::Mark, |v| Held::Record(Arc::new(v))),
        };
        self.insert(id, updated, held);
    }

    /// A read of version `updated`: PocketBase's state when it answered, so it also settles a mark of
    /// its own version; never older than what is held. A record without `updated` is not kept.
    fn learned(&mut self, id: &str, updated: Option<&DateTime<Utc>>, value: &T)
    where
        T: Clone,
    {
        let Some(updated) = updated.map(format_pb_date) else {
            return;
        };
        let updated = updated.as_str();
        if self.entries.get(id).is_some_and(|e| {
            !matches!(e.held, Held::Unread)
                && (e.updated.as_str() > updated || (e.updated == updated && matches!(e.held, Held::Record(_))))
        }) {
            return;
        }
        self.insert(id, updated, Held::Record(Arc::new(value.clone())));
    }

    fn unread(&mut self, id: &str) {
        let updated = self.entries.get(id).map(|e| e.updated.clone()).unwrap_or_default();
        self.insert(id, &updated, Held::Unread);
    }

    fn announced(&mut self, id: &str, updated: Option<&str>) {
        if self.entries.get(id).is_some_and(|e| matches!(e.held, Held::Unread)) {
            return;
        }
        let held = self.entries.get(id).map(|e| e.updated.as_str());
        let mark_at = match (held, updated) {
            (Some(held), Some(u)) if held > u => return,
            (_, Some(u)) => u.to_owned(),
            (Some(held), None) => held.to_owned(),
            (None, None) => return,
        };
        self.insert(id, &mark_at, Held::Mark);
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    fn get(&self, id: &str) -> Option<(&str, &Arc<T>)> {
        match self.entries.get(id)? {
            Entry {
                updated,
                held: Held::Record(v),
                ..
            } => Some((updated, v)),
            _ => None,
        }
    }
}

/// The collections a frame can be of, as [`Latest`] keeps them.
pub enum Frame {
    Instance(Option<Box<BotInstance>>),
    Tenant(Option<Tenant>),
    Template(Option<BotTemplate>),
}

/// An instance as the stream brought it, with its tenant and template as last seen.
pub struct Seen {
    /// The instance's `updated`.
    pub updated: String,
    pub instance: BotInstance,
    pub tenant: Option<Tenant>,
    pub template: Option<BotTemplate>,
}

struct Inner {
    instances: Versions<BotInstance>,
    tenants: Versions<Tenant>,
    templates: Versions<BotTemplate>,
    /// This process's realtime stream is subscribed: only then is anything kept.
    live: bool,
}

/// See the module documentation. Shared by the realtime consumer (which fills it), the intake (which
/// marks what other sources make uncertain) and the instance executor (which takes from it).
pub struct Latest {
    inner: Mutex<Inner>,
}

impl Default for Latest {
    fn default() -> Self {
        Latest {
            inner: Mutex::new(Inner {
                instances: Versions::new(INSTANCES),
                tenants: Versions::new(TENANTS),
                templates: Versions::new(TEMPLATES),
                live: false,
            }),
        }
    }
}

/// Which collection an announcement is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Instance,
    Tenant,
    Template,
}

impl Kind {
    pub fn of(collection: Collection) -> Kind {
        match collection {
            Collection::BotInstances => Kind::Instance,
            Collection::Tenants => Kind::Tenant,
        }
    }
}

impl Latest {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stream brought version `updated` of record `id`; the frame's record is `None` when it could not
    /// be decoded: that version is then known to exist but is not held.
    pub fn saw(&self, id: &str, updated: &str, frame: Frame) {
        let Some(mut inner) = self.live() else { return };
        match frame {
            Frame::Instance(v) => inner.instances.saw(id, updated, v.map(|i| *i)),
            Frame::Tenant(v) => inner.tenants.saw(id, updated, v),
            Frame::Template(v) => inner.templates.saw(id, updated, v),
        }
    }

    /// Something other than a record frame of the stream announced version `updated` of the record (a
    /// webhook, the resync, a delete frame), or, with `None`, that something it depends on changed (its
    /// tenant, its health): its job reads it, and no frame of that version or an older one is held after.
    /// An announcement older than the version held leaves it held: that version is newer.
    pub fn announced(&self, kind: Kind, id: &str, updated: Option<&str>) {
        let Some(mut inner) = self.live() else { return };
        match kind {
            Kind::Instance => inner.instances.announced(id, updated),
            Kind::Tenant => inner.tenants.announced(id, updated),
            Kind::Template => inner.templates.announced(id, updated),
        }
    }

    /// A job read an instance, its tenant and its template (PocketBase's state when it answered): the
    /// tenant and template are kept for the next change of an instance of theirs; the instance settles
    /// what a write whose answer was lost left unknown.
    pub fn learned(&self, instance: Option<&BotInstance>, tenant: Option<&Tenant>, template: Option<&BotTemplate>) {
        let Some(mut inner) = self.live() else { return };
        if let Some(i) = instance {
            inner.instances.learned(&i.id, i.updated.as_ref(), i);
        }
        if let Some(t) = tenant {
            inner.tenants.learned(&t.id, t.updated.as_ref(), t);
        }
        if let Some(t) = template {
            inner.templates.learned(&t.id, t.updated.as_ref(), t);
        }
    }

    /// The bridge wrote the record: `answer` is the record as PocketBase answered the write (its state at
    /// that version), `None` when the outcome is unknown (a failure, which may have been carried out). The
    /// write's own frame may come after frames of later versions, and the bridge's earlier writes' frames
    /// after it: without this, a job could take one of those older records for the newest.
    pub fn wrote(&self, collection: Collection, id: &str, answer: Option<&serde_json::Value>) {
        let Some(mut inner) = self.live() else { return };
        match collection {
            Collection::BotInstances => match parse::<BotInstance>(answer) {
                Some(i) if i.id == id && i.updated.is_some() => inner.instances.learned(id, i.updated.as_ref(), &i),
                _ => inner.instances.unread(id),
            },
            Collection::Tenants => match parse::<Tenant>(answer) {
                Some(t) if t.id == id && t.updated.is_some() => inner.tenants.learned(id, t.updated.as_ref(), &t),
                _ => inner.tenants.unread(id),
            },
        }
    }

    /// The stream is subscribed anew: frames may have been missed before, so nothing held is known to be
    /// the newest; from now on frames replace what is kept.
    pub fn subscribed(&self) {
        self.reset(true);
    }

    /// The stream ended: frames may be missed until the next subscription, so nothing is kept meanwhile.
    pub fn stream_ended(&self) {
        self.reset(false);
    }

    fn reset(&self, live: bool) {
        let mut inner = self.inner();
        inner.instances.clear();
        inner.tenants.clear();
        inner.templates.clear();
        inner.live = live;
    }

    /// The store to change, unless no stream is subscribed (then nothing is kept).
    fn live(&self) -> Option<std::sync::MutexGuard<'_, Inner>> {
        Some(self.inner()).filter(|inner| inner.live)
    }

    /// The newest instance the stream brought, with the tenant and template it names; `None` unless all
    /// three are held.
    pub fn get(&self, id: &str) -> Option<Seen> {
        let inner = self.inner();
        let (updated, instance) = inner.instances.get(id)?;
        Some(Seen {
            updated: updated.to_owned(),
            tenant: related(&inner.tenants, &instance.tenant)?,
            template: related(&inner.templates, &instance.template)?,
            instance: instance.as_ref().clone(),
        })
    }
}

fn parse<T: serde::de::DeserializeOwned>(answer: Option<&serde_json::Value>) -> Option<T> {
    answer.and_then(|v| T::deserialize(v).ok())
}

/// The relation an instance names: `Some(None)` when it names none, `None` when it is not held.
fn related<T: PartialEq + Clone>(versions: &Versions<T>, id: &str) -> Option<Option<T>> {
    if id.is_empty() {
        return Some(None);
    }
    versions.get(id).map(|(_, v)| Some(v.as_ref().clone()))
}

/// Whether an instance held at `updated` may stand in for a read: the version the journal records as
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

    fn instance(id: &str, tenant: &str, template: &str, state: &str) -> BotInstance {
        serde_json::from_value(json!({
            "id": id, "tenant": tenant, "template": template, "name": "n", "subdomain": "s",
            "desired_state": state, "config": {},
        }))
        .unwrap()
    }

    fn tenant(id: &str, updated: &str, slug: &str) -> Tenant {
        serde_json::from_value(json!({"id": id, "slug": slug, "updated": updated})).unwrap()
    }

    fn template(id: &str, updated: &str) -> BotTemplate {
        serde_json::from_value(json!({"id": id, "name": "base", "updated": updated})).unwrap()
    }

    const T1: &str = "2026-12-02 10:00:00.001Z";
    const T2: &str = "2026-12-02 10:00:00.002Z";
    const T3: &str = "2026-12-02 10:00:00.003Z";

    fn versions() -> Versions<String> {
        Versions::new(16)
    }

    /// A read of record "a" at `updated`.
    fn learn(v: &mut Versions<String>, updated: &str, value: &str) {
        let at = chrono::NaiveDateTime::parse_from_str(updated, "%Y-%m-%d %H:%M:%S%.3fZ").unwrap();
        v.learned("a", Some(&at.and_utc()), &value.to_string());
    }

    fn held(v: &Versions<String>, id: &str) -> Option<String> {
        v.get(id).map(|(u, x)| format!("{u}={x}"))
    }

    #[test]
    fn a_newer_frame_replaces_and_an_older_one_is_ignored() {
        let mut v = versions();
        v.saw("a", T2, Some("two".into()));
        v.saw("a", T1, Some("one".into()));
        assert_eq!(held(&v, "a"), Some(format!("{T2}=two")), "an older frame came late");
        v.saw("a", T3, Some("three".into()));
        assert_eq!(held(&v, "a"), Some(format!("{T3}=three")));
    }

    #[test]
    fn two_different_frames_of_one_millisecond_hold_nothing_and_keep_older_ones_out() {
        let mut v = versions();
        v.saw("a", T2, Some("two".into()));
        v.saw("a", T2, Some("two".into()));
        assert_eq!(held(&v, "a"), Some(format!("{T2}=two")), "one version twice");
        v.saw("a", T2, Some("other".into()));
        assert_eq!(held(&v, "a"), None);
        v.saw("a", T1, Some("one".into()));
        assert_eq!(held(&v, "a"), None, "the mark keeps an older frame out");
        v.saw("a", T3, Some("three".into()));
        assert_eq!(held(&v, "a"), Some(format!("{T3}=three")));
    }

    #[test]
    fn an_unusable_frame_marks_its_version() {
        let mut v = versions();
        v.saw("a", T1, Some("one".into()));
        v.saw("a", T2, None);
        assert_eq!(held(&v, "a"), None, "the held version is no longer the newest");
        v.saw("a", T1, Some("one".into()));
        assert_eq!(held(&v, "a"), None);
    }

    #[test]
    fn another_source_s_announcement_makes_the_job_read() {
        let mut v = versions();
        v.saw("a", T2, Some("two".into()));
        v.announced("a", Some(T1));
        assert_eq!(
            held(&v, "a"),
            Some(format!("{T2}=two")),
            "a webhook of an older version came late"
        );
        v.announced("a", Some(T3));
        assert_eq!(held(&v, "a"), None);
        v.saw("a", T2, Some("two".into()));
        assert_eq!(held(&v, "a"), None, "a frame older than the webhook's version");
        v.saw("a", T3, Some("three".into()));
        assert_eq!(held(&v, "a"), None, "the webhook's own version, by frame");

        v.saw("b", T1, Some("one".into()));
        v.announced("b", None);
        assert_eq!(held(&v, "b"), None, "something it depends on changed");
        v.saw("b", T1, Some("one".into()));
        assert_eq!(held(&v, "b"), None);
        v.announced("c", None);
        assert!(v.get("c").is_none() && v.entries.len() == 2, "nothing to mark");
    }

    #[test]
    fn a_read_is_kept_unless_something_newer_is_known_and_settles_a_mark_of_its_version() {
        let mut v = versions();
        learn(&mut v, T2, "two");
        assert_eq!(held(&v, "a"), Some(format!("{T2}=two")));
        learn(&mut v, T1, "one");
        assert_eq!(held(&v, "a"), Some(format!("{T2}=two")), "a read older than a frame");
        v.saw("a", T2, Some("two".into()));
        assert_eq!(held(&v, "a"), Some(format!("{T2}=two")), "the read's own frame");
        v.announced("a", Some(T3));
        learn(&mut v, T2, "two");
        assert_eq!(held(&v, "a"), None, "announced newer than the read");
        learn(&mut v, T3, "three");
        assert_eq!(
            held(&v, "a"),
            Some(format!("{T3}=three")),
            "read at the announced version"
        );
    }

    #[test]
    fn the_oldest_entry_goes_first_and_the_size_stays_bounded() {
        let mut v = Versions::<String>::new(2);
        v.saw("a", T1, Some("a".into()));
        v.saw("b", T1, Some("b".into()));
        v.saw("a", T2, Some("a2".into()));
        v.saw("c", T1, Some("c".into()));
        assert_eq!(v.entries.len(), 2);
        assert_eq!(held(&v, "b"), None, "b was the oldest entry");
        assert_eq!(held(&v, "a"), Some(format!("{T2}=a2")));
        for i in 0..100 {
            v.announced("a", None);
            v.saw("a", T3, Some("a3".into()));
            v.saw(&format!("x{i}"), T1, None);
        }
        assert_eq!(v.entries.len(), 2);
        assert_eq!(v.order.len(), 2, "the order holds no ids that left");
    }

    #[test]
    fn an_instance_is_handed_out_only_with_the_relations_it_names() {
        let l = Latest::default();
        l.subscribed();
        l.saw(
            "i1",
            T2,
            Frame::Instance(Some(Box::new(instance("i1", "t1", "p1", "running")))),
        );
        assert!(l.get("i1").is_none(), "its tenant and template are not known");
        l.saw("t1", T1, Frame::Tenant(Some(tenant("t1", T1, "acme"))));
        assert!(l.get("i1").is_none(), "its template is not known");
        l.learned(None, None, Some(&template("p1", T1)));
        let seen = l.get("i1").expect("all three held");
        assert_eq!((seen.updated.as_str(), seen.instance.id.as_str()), (T2, "i1"));
        assert_eq!(seen.tenant.map(|t| t.slug).as_deref(), Some("acme"));
        assert_eq!(seen.template.map(|t| t.id).as_deref(), Some("p1"));

        l.saw(
            "i2",
            T2,
            Frame::Instance(Some(Box::new(instance("i2", "t1", "", "running")))),
        );
        assert!(l.get("i2").expect("no template named").template.is_none());

        // A tenant edit another source announced (the resync) makes its instances read.
        l.announced(Kind::Tenant, "t1", Some(T2));
        assert!(l.get("i1").is_none());
        l.learned(None, Some(&tenant("t1", T2, "acme")), None);
        assert!(l.get("i1").is_some());
        l.stream_ended();
        {
            let inner = l.inner();
            assert!(inner.instances.entries.is_empty() && inner.tenants.entries.is_empty());
            assert!(inner.templates.entries.is_empty());
        }
        l.subscribed();
        assert!(l.get("i1").is_none(), "a new session starts from nothing");
    }

    /// A follower replica (only the leader subscribes) once kept the tenant it read while the tenant had no
    /// project yet; the leader's tenant job then created the project and woke the instance, and the
    /// follower's next run took the kept tenant again and waited for good (a PostgreSQL replica test).
    #[test]
    fn nothing_is_kept_while_no_stream_is_subscribed() {
        let l = Latest::default();
        let mut read = instance("i1", "t1", "p1", "stopped");
        read.updated = Some(
            chrono::NaiveDateTime::parse_from_str(T1, "%Y-%m-%d %H:%M:%S%.3fZ")
                .unwrap()
                .and_utc(),
        );
        let everything = |l: &Latest| {
            l.learned(Some(&read), Some(&tenant("t1", T1, "acme")), Some(&template("p1", T1)));
            l.saw(
                "i2",
                T2,
                Frame::Instance(Some(Box::new(instance("i2", "t1", "p1", "running")))),
            );
            let answer = json!({"id": "i3", "tenant": "t1", "template": "p1", "name": "n", "subdomain": "s",
                                "desired_state": "running", "config": {}, "updated": T3});
            l.wrote(Collection::BotInstances, "i3", Some(&answer));
        };
        everything(&l);
        for id in ["i1", "i2", "i3"] {
            assert!(l.get(id).is_none(), "{id} is held though no stream was ever subscribed");
        }
        l.subscribed();
        everything(&l);
        for id in ["i1", "i2", "i3"] {
            assert!(l.get(id).is_some(), "{id} is not held while the stream is up");
        }
        l.stream_ended();
        everything(&l);
        for id in ["i1", "i2", "i3"] {
            assert!(l.get(id).is_none(), "{id} is held after the stream ended");
        }
    }

    #[test]
    fn the_bridges_own_write_is_the_newest_and_a_lost_one_only_a_read_settles() {
        let l = Latest::default();
        l.subscribed();
        l.learned(None, Some(&tenant("t1", T1, "acme")), Some(&template("p1", T1)));
        let frame = |status: &str| Frame::Instance(Some(Box::new(instance("i1", "t1", "p1", status))));
        l.saw("i1", T1, frame("stopped"));
        // The job writes T2 then T3; T2's frame comes after PocketBase answered the write of T3.
        let mut answer = json!({"id": "i1", "tenant": "t1", "template": "p1", "name": "n", "subdomain": "s",
                                "desired_state": "running", "config": {}, "updated": T3});
        l.wrote(Collection::BotInstances, "i1", Some(&answer));
        l.saw("i1", T2, frame("stopped"));
        let seen = l.get("i1").expect("the written record");
        assert_eq!((seen.updated.as_str(), seen.instance.updated.is_some()), (T3, true));

        // An answer that is not the record (or no answer: the write failed) leaves only a read to tell.
        answer["id"] = json!("other");
        l.wrote(Collection::BotInstances, "i1", Some(&answer));
        assert!(l.get("i1").is_none());
        l.saw("i1", "2026-12-02 10:00:00.009Z", frame("running"));
        l.announced(Kind::Instance, "i1", Some("2026-12-02 10:00:00.009Z"));
        assert!(l.get("i1").is_none(), "no frame settles a lost write");
        let mut read = instance("i1", "t1", "p1", "running");
        read.updated = Some(
            chrono::NaiveDateTime::parse_from_str(T2, "%Y-%m-%d %H:%M:%S%.3fZ")
                .unwrap()
                .and_utc(),
        );
        l.learned(Some(&read), None, None);
        assert_eq!(
            l.get("i1").expect("read").updated,
            T2,
            "a read does, whatever its version"
        );

        l.wrote(Collection::Tenants, "t1", None);
        assert!(l.get("i1").is_none(), "its tenant is unknown");
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
