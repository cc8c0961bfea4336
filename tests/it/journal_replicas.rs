//! Two replicas on one PostgreSQL journal at once (issue 20): what one decides, the other cannot undo or
//! repeat. Each test opens a second journal on the first one's database and races the two.

mod postgres {
    use cf_bridge::journal::{EventFilter, Journal, Retention, dedupe_floor};
    use cf_bridge::pg::PgConfig;
    use cf_testkit::journal::{Backend, TestJournal};
    use std::time::Duration;

    use crate::journal_admin::seed;

    const DAY_MS: i64 = 86_400_000;

    /// The first journal and a second replica's journal on the same database.
    async fn two_replicas() -> (TestJournal, Journal) {
        let t = TestJournal::open(Backend::Postgres).await;
        let url = &t.db.as_ref().expect("a PostgreSQL database").url;
        let other = Journal::open_postgres(&PgConfig::parse(url).expect("the test database's URL"))
            .await
            .expect("open a second journal");
        (t, other)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_tenants_asking_for_one_domain_at_once_exactly_one_gets_it() {
        let (t, other) = two_replicas().await;
        let j = &t.journal;
        for round in 0..40 {
            let domain = format!("d{round}.example");
            let (a, b) = tokio::join!(
                j.hold_tenant_domain("tenant-a", Some(&domain)),
                other.hold_tenant_domain("tenant-b", Some(&domain))
            );
            let (a, b) = (a.expect("hold a"), b.expect("hold b"));
            assert!(a ^ b, "round {round}: exactly one tenant holds {domain} (a {a}, b {b})");
            let (holder, loser) = if a {
                ("tenant-a", "tenant-b")
            } else {
                ("tenant-b", "tenant-a")
            };
            assert_eq!(
                j.tenant_domain(holder).await.expect("domain").as_deref(),
                Some(domain.as_str())
            );
            assert_ne!(
                other.tenant_domain(loser).await.expect("domain").as_deref(),
                Some(domain.as_str())
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_starting_a_rollout_of_one_template_at_once_start_one() {
        let (t, other) = two_replicas().await;
        let j = &t.journal;
        for round in 1..=20 {
            let template = format!("template{round}");
            let (a, b) = tokio::join!(
                j.begin_rollout(&template, |id| Ok(format!("state {id}"))),
                other.begin_rollout(&template, |id| Ok(format!("state {id}")))
            );
            let (a, b) = (a.expect("begin a"), b.expect("begin b"));
            let started = match (a, b) {
                (Ok(id), Err(running)) | (Err(running), Ok(id)) if id == running => id,
                other => panic!("round {round}: one rollout starts, the other sees it running: {other:?}"),
            };
            assert_eq!(started, round, "ids are taken one after the other");
        }
        assert_eq!(j.running_rollouts().await.expect("running").len(), 20);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_pruning_at_once_prune_each_row_once() {
        let (t, other) = two_replicas().await;
        const OLD: i64 = 1000;
        const RECENT: i64 = 600;
        seed(
            &t,
            &format!(
                "INSERT INTO jobs (id, collection, record_id, state, next_attempt_at, created_at, updated_at)
                 VALUES (1, 'bot_instances', 'r1', 'succeeded', 0, 0, 0);
                 INSERT INTO events (id, source, collection, record_id, action, received_at, dedupe_key, payload,
                                     status, job_id)
                 SELECT i, 'realtime', 'bot_instances', 'r1', 'update', {DAY_MS} + i, 'old' || i, '{{}}', 'done', 1
                 FROM generate_series(1, {OLD}) i;
                 INSERT INTO events (id, source, collection, record_id, action, received_at, dedupe_key, payload,
                                     status, job_id)
                 SELECT {OLD} + i, 'realtime', 'bot_instances', 'r1', 'update', 15 * {DAY_MS} + i, 'recent' || i,
                        '{{}}', 'done', 1
                 FROM generate_series(1, {RECENT}) i;
                 INSERT INTO job_attempts (id, job_id, started_at, finished_at, outcome)
                 SELECT i, 1, {DAY_MS} + i, {DAY_MS} + i, 'succeeded' FROM generate_series(1, {OLD}) i;"
            ),
        )
        .await;
        let secs = Duration::from_secs;
        let week = Retention {
            events: secs(7 * 86_400),
            payloads: secs(86_400),
            floor: dedupe_floor(secs(300), secs(300)),
        };
        let now = 20 * DAY_MS;
        let (a, b) = tokio::join!(t.journal.prune(week, now, 0), other.prune(week, now, 0));
        let ((a, _), (b, _)) = (a.expect("prune a"), b.expect("prune b"));
        assert_eq!(
            (
                a.events_deleted + b.events_deleted,
                a.attempts_deleted + b.attempts_deleted,
                a.payloads_dropped + b.payloads_dropped
            ),
            (OLD as usize, OLD as usize, RECENT as usize),
            "together they did what one prune does, each row once: {a:?} {b:?}"
        );
        let (left, _) = t
            .journal
            .list_events(EventFilter::default(), None, 1000)
            .await
            .expect("list");
        assert_eq!(left.len(), RECENT as usize);
        assert!(left.iter().all(|e| e.id > OLD && e.payload.get() == "null"));

        // Both replicas start on the same payloads at once: each is dropped by one of them.
        const MORE: i64 = 1000;
        seed(
            &t,
            &format!(
                "INSERT INTO events (id, source, collection, record_id, action, received_at, dedupe_key, payload,
                                     status, job_id)
                 SELECT 10000 + i, 'realtime', 'bot_instances', 'r1', 'update', 16 * {DAY_MS} + i, 'more' || i,
                        '{{}}', 'done', 1
                 FROM generate_series(1, {MORE}) i;"
            ),
        )
        .await;
        let (a, b) = tokio::join!(t.journal.prune(week, now, 0), other.prune(week, now, 0));
        let ((a, _), (b, _)) = (a.expect("prune a"), b.expect("prune b"));
        assert_eq!(
            a.payloads_dropped + b.payloads_dropped,
            MORE as usize,
            "each payload dropped once: {a:?} {b:?}"
        );
    }
}
