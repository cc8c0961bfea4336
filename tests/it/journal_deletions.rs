//! The journal's deletion rows and custom-domain holds (issue 19 items 2 and 3): a retention begins once
//! per incarnation, survives a reopen, moves retained -> purging -> destroyed (on SQLite and PostgreSQL),
//! and a domain is held by one tenant at a time.

use cf_bridge::journal::{Deletion, DeletionState, Journal};
use cf_bridge::pg::PgConfig;
use cf_testkit::journal::TestJournal;

fn open(dir: &tempfile::TempDir) -> Journal {
    Journal::open(&dir.path().join("journal.db")).expect("open journal")
}

/// A second handle on the same journal: a restarted bridge, or another replica.
async fn reopen(t: &TestJournal) -> Journal {
    match (&t.dir, &t.db) {
        (Some(dir), _) => open(dir),
        (None, Some(db)) => Journal::open_postgres(&PgConfig::parse(&db.url).expect("url"))
            .await
            .expect("reopen"),
        (None, None) => panic!("a test journal lives somewhere"),
    }
}

fn row(life: &str, expires_at: i64) -> Deletion {
    Deletion {
        record_id: "inst1".into(),
        tenant_id: Some("t1".into()),
        incarnation: life.into(),
        coolify_uuid: Some("svc1".into()),
        requested_at: 1,
        expires_at,
        state: DeletionState::Retained,
        closed: false,
        record_gone: false,
    }
}

cf_testkit::on_both_journals! {
    async fn a_retention_begins_once_per_incarnation_and_moves_on_to_destroyed(t: TestJournal) {
        let j = &t.journal;
        assert_eq!(j.begin_deletion(row("life1", 100)).await.unwrap().expires_at, 100);
        // Asked again (every run of a marked record asks): the first expiry stands.
        assert_eq!(j.begin_deletion(row("life1", 999)).await.unwrap().expires_at, 100);
        assert!(
            j.update_deletion("inst1", "life1", None, Some(true), None)
                .await
                .unwrap()
        );
        assert!(
            !j.update_deletion("inst1", "other", None, Some(false), None)
                .await
                .unwrap()
        );
        assert_eq!(j.retained_of_tenant("t1").await.unwrap(), 1);
        assert!(j.due_deletions(99, 10).await.unwrap().is_empty());
        assert_eq!(j.due_deletions(100, 10).await.unwrap().len(), 1);

        // Durable: a restarted bridge finds it.
        let j = &reopen(&t).await;
        let kept = j.deletion("inst1").await.unwrap().expect("row");
        assert!(kept.closed && kept.state == DeletionState::Retained);
        // Purge: once; the second sees it under way and changes nothing.
        let before = j.purge_deletion("inst1").await.unwrap().expect("row");
        assert_eq!(before.state, DeletionState::Retained);
        let again = j.purge_deletion("inst1").await.unwrap().expect("row");
        assert_eq!(again.state, DeletionState::Purging);
        assert!(
            !j.end_deletion("inst1", "life1").await.unwrap(),
            "a purge is not undone"
        );
        j.update_deletion("inst1", "life1", Some(DeletionState::Destroyed), None, None)
            .await
            .unwrap();
        assert_eq!(j.retained_of_tenant("t1").await.unwrap(), 0);
        assert!(j.due_deletions(i64::MAX, 10).await.unwrap().is_empty());
        assert_eq!(
            j.purge_deletion("inst1").await.unwrap().unwrap().state,
            DeletionState::Destroyed
        );

        // A later record reusing the id and deleted in its turn starts a retention of its own.
        let next = j.begin_deletion(row("life2", 500)).await.unwrap();
        assert_eq!(
            (next.incarnation.as_str(), next.state),
            ("life2", DeletionState::Retained)
        );
        assert!(j.end_deletion("inst1", "life2").await.unwrap(), "restored");
        assert!(j.deletion("inst1").await.unwrap().is_none());
        assert!(j.purge_deletion("nobody").await.unwrap().is_none());
    }

    async fn replicas_beginning_and_purging_one_retention_at_once_agree(t: TestJournal) {
        let other = reopen(&t).await;
        let begins = (0..8i64).map(|n| {
            let j = if n % 2 == 0 { t.journal.clone() } else { other.clone() };
            tokio::spawn(async move { j.begin_deletion(row("life1", 100 + n)).await.expect("begin") })
        });
        let in_force: Vec<Deletion> = futures_util::future::join_all(begins)
            .await
            .into_iter()
            .map(|r| r.expect("task"))
            .collect();
        let kept = t.journal.deletion("inst1").await.unwrap().expect("row");
        assert!(in_force.iter().all(|d| *d == kept), "every caller got the row in force: {in_force:?}");

        let purges = (0..8).map(|n| {
            let j = if n % 2 == 0 { t.journal.clone() } else { other.clone() };
            tokio::spawn(async move { j.purge_deletion("inst1").await.expect("purge").expect("row").state })
        });
        let seen: Vec<DeletionState> = futures_util::future::join_all(purges)
            .await
            .into_iter()
            .map(|r| r.expect("task"))
            .collect();
        let first = seen.iter().filter(|s| **s == DeletionState::Retained).count();
        assert_eq!(first, 1, "one purge starts it, the others see it under way: {seen:?}");
        assert_eq!(other.deletion("inst1").await.unwrap().expect("row").state, DeletionState::Purging);
    }
}

#[tokio::test]
async fn on_postgres_the_last_known_tenant_is_the_newest_copy_naming_one() {
    let t = TestJournal::open(cf_testkit::journal::Backend::Postgres).await;
    let j = &t.journal;
    let client = j.pg().expect("pg").pool().get().await.expect("connection");
    for (n, (collection, record, payload)) in [
        ("bot_instances", "inst1", r#"{"tenant":"t-old"}"#),
        ("bot_instances", "inst1", r#"{"tenant":"t-new"}"#),
        ("tenants", "inst1", r#"{"tenant":"not-an-instance"}"#),
        ("bot_instances", "inst1", r#"{"tenant":""}"#),
        ("bot_instances", "inst1", "not json"),
        ("bot_instances", "inst2", r#"{"tenant":"t-other"}"#),
    ]
    .into_iter()
    .enumerate()
    {
        client
            .execute(
                "INSERT INTO events (source, collection, record_id, action, received_at, dedupe_key, payload, status)
                 VALUES ('realtime', $1, $2, 'delete', 0, $3, $4, 'done')",
                &[&collection, &record, &format!("k{n}"), &payload],
            )
            .await
            .expect("an event");
    }
    assert_eq!(j.last_known_tenant("inst1").await.unwrap().as_deref(), Some("t-new"));
    assert_eq!(j.last_known_tenant("nobody").await.unwrap(), None);
}
