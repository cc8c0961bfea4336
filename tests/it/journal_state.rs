//! The journal's record state, intents, router key ids and notes, on SQLite and on PostgreSQL; and on
//! PostgreSQL, replicas (two journals on one database) asking at once get one answer.

use std::collections::BTreeSet;

use cf_bridge::events::Collection;
use cf_bridge::journal::Journal;
use cf_bridge::pg::PgConfig;

cf_testkit::on_both_journals! {
    async fn record_state_and_intents_round_trip(t: TestJournal) {
        let j = &t.journal;
        j.set_applied(Collection::BotInstances, "r1", "2025-01-01 00:00:00.000Z")
            .await
            .expect("applied");
        // An older version never replaces a newer one.
        j.set_applied(Collection::BotInstances, "r1", "2024-12-31 00:00:00.000Z")
            .await
            .expect("applied");
        j.set_applied(Collection::BotInstances, "r2", "u")
            .await
            .expect("applied");
        j.mark_deleted(Collection::BotInstances, "r2").await.expect("deleted");
        j.mark_deleted(Collection::Tenants, "gone").await.expect("deleted");
        let known = j.known_records(Collection::BotInstances).await.expect("known");
        assert_eq!(known.len(), 2);
        assert_eq!(
            (known[0].last_updated.as_deref(), known[0].deleted),
            (Some("2025-01-01 00:00:00.000Z"), false)
        );
        assert!(known[1].deleted);
        assert_eq!(j.known_records(Collection::Tenants).await.expect("known").len(), 1);
        // What the resync compares a listing with: the live records' versions only.
        let versions = j.known_versions(Collection::BotInstances).await.expect("versions");
        assert_eq!(
            versions.into_iter().collect::<Vec<_>>(),
            [("r1".to_string(), "2025-01-01 00:00:00.000Z".to_string())]
        );
        assert!(j.known_versions(Collection::Tenants).await.expect("versions").is_empty());

        assert!(
            !j.resolve_intent("project:cf-acme", "u1").await.expect("resolve"),
            "no such intent yet"
        );
        j.put_intent("project:cf-acme", "project", "cf-acme")
            .await
            .expect("put");
        assert_eq!(
            j.get_intent("project:cf-acme")
                .await
                .expect("get")
                .and_then(|i| i.coolify_uuid),
            None
        );
        assert!(j.resolve_intent("project:cf-acme", "uuid-1").await.expect("resolve"));
        j.put_intent("project:cf-acme", "project", "cf-acme")
            .await
            .expect("put again");
        let intent = j.get_intent("project:cf-acme").await.expect("get").expect("exists");
        assert_eq!(
            (intent.name.as_str(), intent.coolify_uuid.as_deref()),
            ("cf-acme", Some("uuid-1"))
        );
        assert!(j.clear_intent("project:cf-acme").await.expect("clear"));
        assert!(j.get_intent("project:cf-acme").await.expect("get").is_none());
        assert!(!j.clear_intent("project:cf-acme").await.expect("clear twice"));
    }

    async fn a_deleted_record_applied_again_takes_any_version(t: TestJournal) {
        let j = &t.journal;
        j.set_applied(Collection::BotInstances, "r1", "2026-01-02 00:00:00.000Z").await.expect("applied");
        j.mark_deleted(Collection::BotInstances, "r1").await.expect("deleted");
        // A record whose id came back: its first version may sort before the deleted one's.
        j.set_applied(Collection::BotInstances, "r1", "2026-01-01 00:00:00.000Z").await.expect("applied");
        let known = j.known_records(Collection::BotInstances).await.expect("known");
        assert_eq!(
            (known[0].last_updated.as_deref(), known[0].deleted),
            (Some("2026-01-01 00:00:00.000Z"), false)
        );
    }

    async fn an_intent_keeps_its_uuid_for_its_incarnation_only(t: TestJournal) {
        let j = &t.journal;
        j.put_intent_of("service:i1", "service", "cf-i1", Some("life1")).await.expect("put");
        assert!(j.resolve_intent("service:i1", "svc-1").await.expect("resolve"));
        j.put_intent_of("service:i1", "service", "cf-i1", Some("life1")).await.expect("put again");
        let same = j.get_intent("service:i1").await.expect("get").expect("exists");
        assert_eq!((same.coolify_uuid.as_deref(), same.incarnation.as_deref()), (Some("svc-1"), Some("life1")));
        // Another incarnation of the id: the service is not its own.
        j.put_intent_of("service:i1", "service", "cf-i1", Some("life2")).await.expect("put other");
        let other = j.get_intent("service:i1").await.expect("get").expect("exists");
        assert_eq!((other.coolify_uuid, other.incarnation.as_deref()), (None, Some("life2")));
        assert!(other.updated_at >= other.created_at);
    }

    async fn router_key_ids_are_kept_per_incarnation_rotated_and_forgotten(t: TestJournal) {
        let j = &t.journal;
        let first = j.router_key_id("i1", "life1").await.expect("key id");
        assert_eq!(first.len(), 32);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(j.router_key_id("i1", "life1").await.expect("again"), first, "kept");
        let other = j.router_key_id("i2", "life1").await.expect("other record");
        assert_ne!(other, first);

        let rotated = j.rotate_router_key("i1", "life1").await.expect("rotate");
        assert_ne!(rotated, first);
        assert_eq!(j.router_key_id("i1", "life1").await.expect("after rotation"), rotated);

        // The id came back as another record: a key of its own.
        let next_life = j.router_key_id("i1", "life2").await.expect("next incarnation");
        assert!(![first.as_str(), rotated.as_str()].contains(&next_life.as_str()));
        assert_eq!(j.router_key_id("i1", "life2").await.expect("kept"), next_life);

        j.forget_router_key("i1").await.expect("forget");
        let fresh = j.router_key_id("i1", "life2").await.expect("fresh");
        assert_ne!(fresh, next_life, "a forgotten key id is never issued again");
        assert_eq!(j.router_key_id("i2", "life1").await.expect("untouched"), other);
    }

    async fn notes_say_whether_they_changed_and_list_by_prefix(t: TestJournal) {
        let j = &t.journal;
        assert_eq!(j.note("a:1").await.expect("note"), None);
        assert!(j.note_changed("a:1", "x").await.expect("first"), "none before");
        assert!(!j.note_changed("a:1", "x").await.expect("same"));
        assert!(j.note_changed("a:1", "y").await.expect("different"));
        assert_eq!(j.note("a:1").await.expect("note").as_deref(), Some("y"));
        assert_eq!(j.noted("a:1").await.expect("noted").as_deref(), Some("y"));
        assert!(j.note_changed("a:2", "").await.expect("empty value"));
        assert!(j.note_changed("ab", "not under a:").await.expect("sibling"));
        assert!(j.note_changed("b:1", "z").await.expect("other prefix"));

        let under_a = j.notes_with_prefix("a:").await.expect("prefix");
        assert_eq!(under_a.len(), 2);
        assert_eq!(under_a.get("1"), Some("y"));
        assert_eq!(under_a.get("2"), Some(""));
        assert_eq!(under_a.get("b"), None);
        assert!(j.notes_with_prefix("zz").await.expect("none").is_empty());

        j.forget_note("a:1").await.expect("forget");
        assert_eq!(j.note("a:1").await.expect("note"), None);
        assert!(j.note_changed("a:1", "y").await.expect("after forgetting"), "a forgotten note is new again");
        j.forget_note("never").await.expect("forgetting nothing");
    }
}

/// Two replicas' journals on one fresh database.
async fn replicas() -> (cf_testkit::TestDb, Journal, Journal) {
    let db = cf_testkit::Postgres::shared().database().await;
    let cfg = PgConfig::parse(&db.url).expect("the test database's URL");
    let a = Journal::open_postgres(&cfg).await.expect("replica a");
    let b = Journal::open_postgres(&cfg).await.expect("replica b");
    (db, a, b)
}

/// Eight callers on each replica at once, per record.
const CALLERS: usize = 8;
const RECORDS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_asking_at_once_get_one_router_key_id_per_incarnation() {
    let (_db, a, b) = replicas().await;
    for record in 0..RECORDS {
        let id = format!("i{record}");
        let asks = (0..2 * CALLERS).map(|n| {
            let (j, id) = (if n % 2 == 0 { a.clone() } else { b.clone() }, id.clone());
            tokio::spawn(async move { j.router_key_id(&id, "life1").await.expect("key id") })
        });
        let ids: BTreeSet<String> = futures_util::future::join_all(asks)
            .await
            .into_iter()
            .map(|r| r.expect("task"))
            .collect();
        assert_eq!(ids.len(), 1, "{id}: every replica gets the same key id, got {ids:?}");
        let kept = ids.into_iter().next().expect("one id");
        assert_eq!(b.router_key_id(&id, "life1").await.expect("later"), kept);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_replicas_noting_one_value_at_once_exactly_one_hears_it_changed() {
    let (_db, a, b) = replicas().await;
    for record in 0..RECORDS {
        let name = format!("drift:i{record}");
        let notes = (0..2 * CALLERS).map(|n| {
            let (j, name) = (if n % 2 == 0 { a.clone() } else { b.clone() }, name.clone());
            tokio::spawn(async move { j.note_changed(&name, "v1").await.expect("note") })
        });
        let changed = futures_util::future::join_all(notes)
            .await
            .into_iter()
            .filter(|r| *r.as_ref().expect("task"))
            .count();
        assert_eq!(changed, 1, "{name}: exactly one caller hears the change");
        assert_eq!(a.note(&name).await.expect("note").as_deref(), Some("v1"));
    }
}

/// Events as the journal stores them, written straight into PostgreSQL: what `set_applied` looks up.
async fn insert_event(j: &Journal, record_id: &str, updated: &str, fingerprint: Option<&str>) {
    let client = j.pg().expect("pg").pool().get().await.expect("connection");
    client
        .execute(
            "INSERT INTO events (source, collection, record_id, action, record_updated, received_at, dedupe_key,
                payload, status, fingerprint)
             VALUES ('realtime', 'bot_instances', $1, 'update', $2, 0, $1 || '@' || $2 || '#' || random(), '{}',
                'done', $3)",
            &[&record_id, &updated, &fingerprint],
        )
        .await
        .expect("an event");
}

#[tokio::test]
async fn on_postgres_the_applied_version_keeps_the_fingerprint_of_its_newest_event() {
    let (_db, j, _) = replicas().await;
    insert_event(&j, "r1", "v1", Some("fp-old")).await;
    insert_event(&j, "r1", "v1", Some("fp-new")).await;
    insert_event(&j, "r1", "v1", None).await;
    insert_event(&j, "r1", "v2", Some("fp-v2")).await;
    insert_event(&j, "r2", "v1", Some("fp-other-record")).await;
    j.set_applied(Collection::BotInstances, "r1", "v1")
        .await
        .expect("applied");
    let hash = |known: Vec<cf_bridge::journal::RecordState>| known[0].applied_hash.clone();
    assert_eq!(
        hash(j.known_records(Collection::BotInstances).await.expect("known")).as_deref(),
        Some("fp-new")
    );
    // A version with no event yet: nothing known to compare echoes with.
    j.set_applied(Collection::BotInstances, "r1", "v3")
        .await
        .expect("applied");
    assert_eq!(
        hash(j.known_records(Collection::BotInstances).await.expect("known")),
        None
    );
    // An older version's run finishing late leaves the newer one in place.
    j.set_applied(Collection::BotInstances, "r1", "v2")
        .await
        .expect("applied");
    let known = j.known_records(Collection::BotInstances).await.expect("known");
    assert_eq!(
        (known[0].last_updated.as_deref(), known[0].applied_hash.as_deref()),
        (Some("v3"), None)
    );
}
