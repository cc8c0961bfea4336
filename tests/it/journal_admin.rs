//! The journal's admin queries, outbox, template versions and rollouts, and tenant domains, on SQLite and on
//! PostgreSQL (issue 20): the same rows give the same answers on both. Rows are seeded with plain SQL that
//! both databases run, so every filter, order and paging rule is checked on known data. The `replicas`
//! tests open two journals on one PostgreSQL database, as two replicas do.

use std::collections::BTreeMap;

use cf_bridge::events::{Action, Collection, EventSink, Ingested, Source};
use cf_bridge::journal::{EventFilter, EventStatus, JobState, Journal, OutboxEntry, StoredTemplate, now_ms};
use cf_testkit::journal::TestJournal;

use crate::journal_basic::event;
use serde_json::json;

/// Runs `sql` (statements both SQLite and PostgreSQL accept) on the journal's database, beside the journal.
pub(crate) async fn seed(t: &TestJournal, sql: &str) {
    match t.journal.pg() {
        Some(pg) => pg
            .pool()
            .get()
            .await
            .expect("a pooled connection")
            .batch_execute(sql)
            .await
            .expect("seed PostgreSQL"),
        None => {
            let path = t.journal.path().expect("the SQLite file");
            let conn = rusqlite::Connection::open(path).expect("open the journal file");
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .expect("busy timeout");
            conn.execute_batch(sql).expect("seed SQLite");
        }
    }
}

/// Three jobs, six events, three attempts (ids fixed, times in ms).
const ADMIN_ROWS: &str = "
INSERT INTO jobs (id, collection, record_id, state, attempts, next_attempt_at, last_error, coalesced, dirty,
                  created_at, updated_at, last_event_id)
VALUES (1, 'bot_instances', 'r1', 'succeeded', 1, 0, NULL, 1, 0, 1000, 100, 2),
       (2, 'bot_instances', 'r2', 'dead', 3, 0, 'gave up', 0, 1, 3000, 300, 3),
       (3, 'tenants', 't1', 'queued', 0, 5000, NULL, 0, 0, 4000, 200, 5);
INSERT INTO events (id, source, collection, record_id, action, record_updated, received_at, dedupe_key,
                    delivery_id, payload, status, job_id)
VALUES (1, 'realtime', 'bot_instances', 'r1', 'update', 'u1', 1000, 'k1', NULL, '{\"a\":1}', 'done', 1),
       (2, 'webhook', 'bot_instances', 'r1', 'update', 'u2', 2000, 'k2', 'msg_2', '{\"a\":2}', 'done', 1),
       (3, 'webhook', 'bot_instances', 'r2', 'update', 'u3', 3000, 'k3', 'msg_3', '{}', 'failed', 2),
       (4, 'resync', 'tenants', 't1', 'create', NULL, 4000, 'k4', NULL, '{}', 'queued', 3),
       (5, 'webhook', 'tenants', 't1', 'update', NULL, 5000, 'k5', 'msg_5', '{}', 'queued', 3),
       (6, 'realtime', 'bot_instances', 'r1', 'update', 'u6', 6000, 'k6', NULL, 'null', 'done', NULL);
INSERT INTO job_attempts (id, job_id, started_at, finished_at, outcome, error, duration_ms)
VALUES (1, 2, 3100, 3200, 'failed', 'boom', 100),
       (2, 2, 3300, 3400, 'dead', 'gave up', 100),
       (3, 1, 2100, 2200, 'succeeded', NULL, 100);
";

async fn event_ids(j: &Journal, filter: EventFilter, cursor: Option<i64>, limit: usize) -> (Vec<i64>, Option<i64>) {
    let (rows, next) = j.list_events(filter, cursor, limit).await.expect("list events");
    (rows.into_iter().map(|e| e.id).collect(), next)
}

fn is_new(outcome: Ingested) {
    assert!(
        matches!(outcome, Ingested::New { .. }),
        "expected a new event, got {outcome:?}"
    );
}

fn template(n: u32) -> StoredTemplate {
    StoredTemplate {
        manifest: format!("manifest {n}"),
        compose: format!("compose {n}"),
    }
}

cf_testkit::on_both_journals! {
    async fn list_events_filters_and_pages(t: TestJournal) {
        let j = &t.journal;
        for i in 0..5 {
            is_new(j.ingest(event(Source::Realtime, "r1", &format!("t{i}"))).await.expect("ingest"));
            is_new(j.ingest(event(Source::Webhook, "r2", &format!("t{i}"))).await.expect("ingest"));
        }
        let filter = EventFilter {
            source: Some(Source::Webhook),
            ..Default::default()
        };
        let (page1, cursor) = j.list_events(filter.clone(), None, 3).await.expect("list");
        assert_eq!(page1.len(), 3);
        assert!(page1.windows(2).all(|w| w[0].id > w[1].id), "newest first");
        let (page2, cursor2) = j.list_events(filter, cursor, 3).await.expect("list");
        assert_eq!(page2.len(), 2);
        assert_eq!(cursor2, None);
        assert!(
            page1
                .iter()
                .chain(&page2)
                .all(|e| e.record_id == "r2" && e.source == Source::Webhook)
        );

        let by_record = EventFilter {
            record_id: Some("r1".into()),
            status: Some(EventStatus::Queued),
            ..Default::default()
        };
        assert_eq!(j.list_events(by_record, None, 100).await.expect("list").0.len(), 5);
        let future = EventFilter {
            since_ms: Some(now_ms() + 60_000),
            ..Default::default()
        };
        assert!(j.list_events(future, None, 100).await.expect("list").0.is_empty());
        let json = serde_json::to_value(&page1[0]).expect("serialize");
        assert_eq!(json["source"], "webhook");
        assert_eq!(json["collection"], "bot_instances");
    }

    async fn every_event_filter_narrows_and_pages_run_by_id(t: TestJournal) {
        seed(&t, ADMIN_ROWS).await;
        let j = &t.journal;
        let all = EventFilter::default;
        assert_eq!(event_ids(j, all(), None, 100).await, (vec![6, 5, 4, 3, 2, 1], None));
        let cases = [
            (EventFilter { status: Some(EventStatus::Done), ..all() }, vec![6, 2, 1]),
            (EventFilter { status: Some(EventStatus::Failed), ..all() }, vec![3]),
            (EventFilter { source: Some(Source::Webhook), ..all() }, vec![5, 3, 2]),
            (EventFilter { source: Some(Source::Replay), ..all() }, vec![]),
            (EventFilter { collection: Some(Collection::Tenants), ..all() }, vec![5, 4]),
            (EventFilter { record_id: Some("r1".into()), ..all() }, vec![6, 2, 1]),
            (EventFilter { since_ms: Some(3000), ..all() }, vec![6, 5, 4, 3]),
            (
                EventFilter {
                    source: Some(Source::Webhook),
                    collection: Some(Collection::BotInstances),
                    status: Some(EventStatus::Done),
                    record_id: Some("r1".into()),
                    since_ms: Some(2000),
                },
                vec![2],
            ),
        ];
        for (filter, want) in cases {
            assert_eq!(event_ids(j, filter.clone(), None, 100).await, (want, None), "{filter:?}");
        }
        // A full page always hands on a cursor, even when nothing follows: the next page is then empty.
        assert_eq!(event_ids(j, all(), None, 2).await, (vec![6, 5], Some(5)));
        assert_eq!(event_ids(j, all(), Some(5), 2).await, (vec![4, 3], Some(3)));
        assert_eq!(event_ids(j, all(), Some(3), 2).await, (vec![2, 1], Some(1)));
        assert_eq!(event_ids(j, all(), Some(1), 2).await, (vec![], None));
        let webhooks = EventFilter { source: Some(Source::Webhook), ..all() };
        assert_eq!(event_ids(j, webhooks.clone(), None, 2).await, (vec![5, 3], Some(3)));
        assert_eq!(event_ids(j, webhooks, Some(3), 2).await, (vec![2], None));
        assert_eq!(event_ids(j, all(), None, 0).await, (vec![6], Some(6)), "a page holds at least one");

        let r1 = EventFilter { record_id: Some("r1".into()), ..all() };
        let (rows, _) = j.list_events(r1, None, 100).await.expect("list");
        let e2 = rows.iter().find(|e| e.id == 2).expect("event 2");
        assert_eq!(
            (e2.source, e2.collection, e2.action, e2.record_updated.as_deref(), e2.received_at),
            (Source::Webhook, Collection::BotInstances, Action::Update, Some("u2"), 2000)
        );
        assert_eq!(
            (e2.dedupe_key.as_str(), e2.delivery_id.as_deref(), e2.payload_value().expect("payload"), e2.status, e2.job_id),
            ("k2", Some("msg_2"), json!({"a": 2}), EventStatus::Done, Some(1))
        );
        assert!(rows.iter().find(|e| e.id == 6).expect("event 6").payload.get() == "null");
    }

    async fn an_event_comes_with_its_job_and_attempts(t: TestJournal) {
        seed(&t, ADMIN_ROWS).await;
        let j = &t.journal;
        let (event, job, attempts) = j.get_event(3).await.expect("get").expect("event 3");
        assert_eq!((event.id, event.record_id.as_str()), (3, "r2"));
        let job = job.expect("its job");
        assert_eq!(
            (job.id, job.state, job.attempts, job.last_error.as_deref(), job.dirty, job.coalesced),
            (2, JobState::Dead, 3, Some("gave up"), true, 0)
        );
        assert_eq!((job.created_at, job.updated_at, job.last_event_id, job.next_attempt_at), (3000, 300, Some(3), 0));
        let ids: Vec<i64> = attempts.iter().map(|a| a.id).collect();
        assert_eq!(ids, vec![2, 1], "newest first");
        assert_eq!(
            (attempts[1].started_at, attempts[1].finished_at, attempts[1].error.as_deref(), attempts[1].duration_ms),
            (3100, Some(3200), Some("boom"), Some(100))
        );
        let (echo, no_job, none) = j.get_event(6).await.expect("get").expect("event 6");
        assert_eq!((echo.id, no_job, none.len()), (6, None, 0), "an echo has no job");
        assert!(j.get_event(99).await.expect("get").is_none());
    }

    async fn jobs_list_by_state_record_and_id_and_count(t: TestJournal) {
        seed(&t, ADMIN_ROWS).await;
        let j = &t.journal;
        let ids = |jobs: Vec<cf_bridge::journal::JobRow>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
        assert_eq!(ids(j.list_jobs(&[], 10).await.expect("jobs")), vec![2, 3, 1], "latest change first");
        assert_eq!(ids(j.list_jobs(&[JobState::Succeeded, JobState::Dead], 10).await.expect("jobs")), vec![2, 1]);
        assert_eq!(ids(j.list_jobs(&[JobState::Running], 10).await.expect("jobs")), Vec::<i64>::new());
        assert_eq!(ids(j.list_jobs(&[], 1).await.expect("jobs")), vec![2]);

        let (jobs, attempts) = j.record_jobs(Collection::BotInstances, "r2", 1).await.expect("record");
        assert_eq!((ids(jobs), attempts.iter().map(|a| a.id).collect::<Vec<_>>()), (vec![2], vec![2]));
        let (jobs, attempts) = j.record_jobs(Collection::BotInstances, "r1", 10).await.expect("record");
        assert_eq!((ids(jobs), attempts.len()), (vec![1], 1));
        let (jobs, attempts) = j.record_jobs(Collection::Tenants, "r1", 10).await.expect("record");
        assert!(jobs.is_empty() && attempts.is_empty(), "another collection's record");

        assert_eq!(ids(j.jobs_by_id(&[3, 1, 1, 99]).await.expect("by id")), vec![1, 3]);
        assert!(j.jobs_by_id(&[]).await.expect("by id").is_empty());

        let counts = j.job_counts().await.expect("counts");
        let want: BTreeMap<JobState, i64> = [
            (JobState::Queued, 1),
            (JobState::Running, 0),
            (JobState::Succeeded, 1),
            (JobState::Failed, 0),
            (JobState::Waiting, 0),
            (JobState::Dead, 1),
        ]
        .into_iter()
        .collect();
        assert_eq!(counts, want);
    }

    async fn outbox_rows_stay_until_dropped(t: TestJournal) {
        let j = &t.journal;
        let entry = |id: &str, record: &str, created_at: i64| OutboxEntry {
            created_at,
            ..OutboxEntry::new(Collection::BotInstances, record, id.into(), format!("{{\"n\":\"{id}\"}}"))
        };
        j.put_outbox(OutboxEntry {
            applied_hash: Some("h1".into()),
            service_uuid: Some("svc1".into()),
            ..entry("b", "r1", 10)
        })
        .await
        .expect("put");
        j.put_outbox(entry("a", "r1", 10)).await.expect("put");
        j.put_outbox(entry("c", "r1", 5)).await.expect("put");
        j.put_outbox(entry("Z", "r1", 10)).await.expect("put");
        j.put_outbox(entry("d", "r2", 1)).await.expect("put");
        // The same id again is kept as it was.
        j.put_outbox(entry("b", "r1", 1)).await.expect("put again");

        let rows = j.outbox_for(Collection::BotInstances, "r1", 10).await.expect("outbox");
        let ids: Vec<&str> = rows.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, vec!["c", "Z", "a", "b"], "oldest first, then by id bytewise");
        let b = &rows[3];
        assert_eq!(
            (b.created_at, b.applied_hash.as_deref(), b.service_uuid.as_deref(), b.row.as_str()),
            (10, Some("h1"), Some("svc1"), "{\"n\":\"b\"}")
        );
        assert_eq!(j.outbox_for(Collection::BotInstances, "r1", 2).await.expect("outbox").len(), 2);
        assert!(j.outbox_for(Collection::Tenants, "r1", 10).await.expect("outbox").is_empty());

        j.replace_outbox_row("a", "{\"n\":\"a2\"}".into()).await.expect("replace");
        j.replace_outbox_row("missing", "{}".into()).await.expect("replacing nothing");
        j.drop_outbox(vec!["c".into(), "Z".into(), "missing".into()]).await.expect("drop");
        j.drop_outbox(vec![]).await.expect("drop nothing");
        let rows = j.outbox_for(Collection::BotInstances, "r1", 10).await.expect("outbox");
        let left: Vec<(&str, &str)> = rows.iter().map(|e| (e.id.as_str(), e.row.as_str())).collect();
        assert_eq!(left, vec![("a", "{\"n\":\"a2\"}"), ("b", "{\"n\":\"b\"}")]);
    }

    async fn idle_outbox_records_are_those_no_job_will_run_for(t: TestJournal) {
        seed(
            &t,
            "INSERT INTO jobs (id, collection, record_id, state, next_attempt_at, created_at, updated_at)
             VALUES (1, 'bot_instances', 'queued1', 'queued', 0, 0, 0),
                    (2, 'bot_instances', 'running1', 'running', 0, 0, 0),
                    (3, 'bot_instances', 'failed1', 'failed', 0, 0, 0),
                    (4, 'bot_instances', 'done1', 'succeeded', 0, 0, 0),
                    (5, 'bot_instances', 'waiting1', 'waiting', 0, 0, 0),
                    (6, 'bot_instances', 'dead1', 'dead', 0, 0, 0);",
        )
        .await;
        let j = &t.journal;
        for (n, (collection, record, at)) in [
            (Collection::BotInstances, "queued1", 10),
            (Collection::BotInstances, "running1", 10),
            (Collection::BotInstances, "failed1", 10),
            (Collection::BotInstances, "done1", 10),
            (Collection::BotInstances, "done1", 11),
            (Collection::BotInstances, "waiting1", 10),
            (Collection::BotInstances, "dead1", 10),
            (Collection::BotInstances, "Nojob", 10),
            (Collection::Tenants, "t1", 10),
            (Collection::BotInstances, "young", 100),
        ]
        .into_iter()
        .enumerate()
        {
            let e = OutboxEntry {
                created_at: at,
                ..OutboxEntry::new(collection, record, format!("row{n}"), "{}".into())
            };
            j.put_outbox(e).await.expect("put");
        }
        let idle = j.idle_outbox_records(50, 100).await.expect("idle");
        let want: Vec<(Collection, String)> = [
            (Collection::BotInstances, "Nojob"),
            (Collection::BotInstances, "dead1"),
            (Collection::BotInstances, "done1"),
            (Collection::BotInstances, "waiting1"),
            (Collection::Tenants, "t1"),
        ]
        .into_iter()
        .map(|(c, r)| (c, r.to_string()))
        .collect();
        assert_eq!(idle, want, "once each, bytewise order");
        assert_eq!(j.idle_outbox_records(50, 2).await.expect("idle"), want[..2].to_vec());
        assert!(j.idle_outbox_records(10, 100).await.expect("idle").is_empty(), "only rows older than the mark");
    }

    async fn template_versions_and_pins_round_trip(t: TestJournal) {
        let j = &t.journal;
        assert!(j.store_template_version("openclaw", "1.0.0", &template(1)).await.expect("store"));
        assert!(!j.store_template_version("openclaw", "1.0.0", &template(1)).await.expect("same again"));
        assert!(j.store_template_version("openclaw", "1.0.0", &template(2)).await.expect("changed"));
        assert!(j.store_template_version("Hermes", "2.0.0", &template(3)).await.expect("store"));
        let kept: Vec<String> = j.template_versions().await.expect("versions").into_iter().map(|s| s.compose).collect();
        assert_eq!(kept, vec!["compose 3", "compose 2"], "by name, bytewise");

        j.note_first_template_version("openclaw", "1.0.0").await.expect("first");
        j.note_first_template_version("openclaw", "1.1.0").await.expect("a later one is not the first");
        j.note_first_template_version("Hermes", "2.0.0").await.expect("first");
        assert_eq!(
            j.first_template_versions().await.expect("firsts"),
            vec![("Hermes".to_string(), "2.0.0".to_string()), ("openclaw".to_string(), "1.0.0".to_string())]
        );

        assert_eq!(j.template_pin("i1", "life1").await.expect("pin"), None);
        j.pin_template("i1", "life1", "1.1.0").await.expect("pin");
        assert_eq!(j.template_pin("i1", "life1").await.expect("pin").as_deref(), Some("1.1.0"));
        assert_eq!(j.template_pin("i1", "life2").await.expect("pin"), None, "another incarnation ignores it");
        j.pin_template("i1", "life1", "1.0.0").await.expect("pin back");
        assert_eq!(j.template_pin("i1", "life1").await.expect("pin").as_deref(), Some("1.0.0"));
    }

    async fn one_rollout_runs_per_template(t: TestJournal) {
        let j = &t.journal;
        let mut changes = j.subscribe();
        assert_eq!(j.running_rollouts().await.expect("running"), Vec::<i64>::new());
        let first = j.begin_rollout("openclaw", |id| Ok(format!("state {id}"))).await.expect("begin");
        assert_eq!(first, Ok(1));
        let again = j.begin_rollout("openclaw", |id| Ok(format!("state {id}"))).await.expect("begin");
        assert_eq!(again, Err(1), "one runs already");
        assert_eq!(j.begin_rollout("hermes", |id| Ok(format!("state {id}"))).await.expect("begin"), Ok(2));
        let mut running = j.running_rollouts().await.expect("running");
        running.sort_unstable();
        assert_eq!(running, vec![1, 2]);
        assert_eq!(j.rollout(1).await.expect("rollout").as_deref(), Some("state 1"));
        assert_eq!(j.last_rollout("openclaw").await.expect("last"), Some(1));

        j.save_rollout("openclaw", 1, "state 1 done", true).await.expect("save");
        assert!(
            matches!(changes.recv().await, Ok(cf_bridge::journal::Change::Rollout { rollout_id: 1 })),
            "saving announces the rollout"
        );
        assert_eq!(j.rollout(1).await.expect("rollout").as_deref(), Some("state 1 done"));
        assert_eq!(j.running_rollouts().await.expect("running"), vec![2]);
        // Finishing a rollout that is not the running one leaves the running one alone.
        j.save_rollout("hermes", 1, "state 1 done", true).await.expect("save");
        assert_eq!(j.running_rollouts().await.expect("running"), vec![2]);
        assert_eq!(j.begin_rollout("openclaw", |id| Ok(format!("state {id}"))).await.expect("begin"), Ok(3));
        assert_eq!(j.last_rollout("openclaw").await.expect("last"), Some(3));
        assert_eq!(j.last_rollout("nothing").await.expect("last"), None);
        for id in 4..=11 {
            let begun = j.begin_rollout(&format!("t{id}"), |id| Ok(format!("state {id}"))).await;
            assert_eq!(begun.expect("begin"), Ok(id));
        }
        assert_eq!(
            j.recent_rollouts(3).await.expect("recent"),
            vec!["state 11", "state 10", "state 9"],
            "newest first, by number (10 after 9)"
        );
    }

    async fn a_tenant_domain_is_held_by_one_tenant(t: TestJournal) {
        let j = &t.journal;
        assert_eq!(j.tenant_domain("t1").await.expect("domain"), None);
        assert!(j.hold_tenant_domain("t1", None).await.expect("hold none"));
        assert!(j.hold_tenant_domain("t1", Some("acme.example")).await.expect("hold"));
        assert_eq!(j.tenant_domain("t1").await.expect("domain").as_deref(), Some("acme.example"));
        assert!(!j.hold_tenant_domain("t2", Some("acme.example")).await.expect("refused"));
        assert_eq!(j.tenant_domain("t2").await.expect("domain"), None, "a refusal changes nothing");
        assert!(j.hold_tenant_domain("t1", Some("acme.example")).await.expect("holds it already"));
        // Giving it up (another domain, or none) frees it.
        assert!(j.hold_tenant_domain("t1", Some("other.example")).await.expect("move"));
        assert!(j.hold_tenant_domain("t2", Some("acme.example")).await.expect("now free"));
        assert!(j.hold_tenant_domain("t1", None).await.expect("none"));
        assert_eq!(j.tenant_domain("t1").await.expect("domain"), None);
        assert!(j.hold_tenant_domain("t3", Some("other.example")).await.expect("free"));
        j.release_tenant_domain("t3").await.expect("release");
        assert_eq!(j.tenant_domain("t3").await.expect("domain"), None);
        assert!(j.hold_tenant_domain("t4", Some("other.example")).await.expect("released"));
    }
}

/// A database whose text columns sort by a language's rules (as most servers' default locale does) still
/// lists in SQLite's bytewise order: the test cluster runs in the C locale, so the columns get an ICU
/// collation here.
mod collation {
    mod postgres {
        use cf_bridge::events::Collection;
        use cf_bridge::journal::OutboxEntry;
        use cf_testkit::journal::{Backend, TestJournal};

        use super::super::{seed, template};

        #[tokio::test]
        async fn lists_follow_sqlites_bytewise_order_under_a_language_collation() {
            let t = TestJournal::open(Backend::Postgres).await;
            seed(
                &t,
                "ALTER TABLE meta ALTER COLUMN name TYPE TEXT COLLATE \"und-x-icu\";
                 ALTER TABLE outbox ALTER COLUMN id TYPE TEXT COLLATE \"und-x-icu\";
                 ALTER TABLE outbox ALTER COLUMN record_id TYPE TEXT COLLATE \"und-x-icu\";",
            )
            .await;
            let j = &t.journal;
            for name in ["alpha", "Zeta"] {
                j.store_template_version(name, "1.0.0", &template(1))
                    .await
                    .expect("store");
                j.note_first_template_version(name, "1.0.0").await.expect("first");
            }
            let plain: Vec<String> = t
                .journal
                .pg()
                .expect("PostgreSQL")
                .pool()
                .get()
                .await
                .expect("connection")
                .query(
                    "SELECT name FROM meta WHERE name LIKE 'template_first:%' ORDER BY name",
                    &[],
                )
                .await
                .expect("query")
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert_eq!(
                plain,
                vec!["template_first:alpha", "template_first:Zeta"],
                "the collation is in force"
            );
            let firsts: Vec<String> = j
                .first_template_versions()
                .await
                .expect("firsts")
                .into_iter()
                .map(|(name, _)| name)
                .collect();
            assert_eq!(firsts, vec!["Zeta", "alpha"]);

            for (id, record) in [("a", "alpha"), ("B", "alpha"), ("c", "Zeta")] {
                let e = OutboxEntry {
                    created_at: 1,
                    ..OutboxEntry::new(Collection::BotInstances, record, id.into(), "{}".into())
                };
                j.put_outbox(e).await.expect("put");
            }
            let ids: Vec<String> = j
                .outbox_for(Collection::BotInstances, "alpha", 10)
                .await
                .expect("outbox")
                .into_iter()
                .map(|e| e.id)
                .collect();
            assert_eq!(ids, vec!["B", "a"]);
            let idle: Vec<String> = j
                .idle_outbox_records(10, 10)
                .await
                .expect("idle")
                .into_iter()
                .map(|(_, r)| r)
                .collect();
            assert_eq!(idle, vec!["Zeta", "alpha"]);
        }
    }
}
