//! Echoes of the bridge's own write-backs (status, ids, health) are journaled but make no job, while every
//! change a user asks for still does: the journal compares what a change asks for with what was applied.

use cf_bridge::events::{Action, Collection, EventSink, Ingested, NewEvent, Source};
use cf_bridge::journal::{EventStatus, JobState, Journal, now_ms};
use serde_json::{Value, json};

fn change(source: Source, record: Value) -> NewEvent {
    let id = record["id"].as_str().expect("id").to_string();
    let updated = record["updated"].as_str().map(str::to_string);
    NewEvent {
        source,
        collection: Collection::BotInstances,
        dedupe_key: NewEvent::change_key(Collection::BotInstances, &id, Action::Update, updated.as_deref()),
        record_id: id,
        action: Action::Update,
        record_updated: updated,
        delivery_id: None,
        payload: record,
        fingerprint: None,
        trace_context: None,
    }
}

/// A version of record r1: `desired` is the user's field, `status`/`healthy` the bridge's.
fn version(updated: &str, desired: &str, status: &str, healthy: &str) -> Value {
    json!({"id": "r1", "collectionName": "bot_instances", "name": "bot", "tenant": "t1", "template": "tp",
           "subdomain": "bot1", "config": {"model": "m"}, "desired_state": desired, "status": status,
           "last_healthy_at": healthy, "updated": format!("2026-01-01 00:00:{updated}.000Z")})
}

async fn counts(j: &Journal) -> (i64, i64, i64) {
    let c = j.job_counts().await.expect("counts");
    (c[&JobState::Queued], c[&JobState::Running], c[&JobState::Succeeded])
}

/// Claims the record's job and finishes it as the reconciler would.
async fn run_job(j: &Journal, updated: &str) {
    let jobs = j.claim_due(now_ms(), 10).await.expect("claim");
    assert_eq!(jobs.len(), 1, "one job due");
    j.set_applied(Collection::BotInstances, "r1", updated)
        .await
        .expect("applied");
    j.complete(jobs[0].job_id, None).await.expect("complete");
}

fn is_new(i: &Ingested) -> bool {
    matches!(i, Ingested::New { .. })
}

cf_testkit::on_both_journals! {
    async fn a_run_of_a_millisecond_with_two_versions_takes_neither_as_applied(t: TestJournal) {
        let j = &t.journal;
        // PocketBase stamped two versions 00:00:01: which one the run read is unknown.
        for desired in ["running", "stopped"] {
            let change = j
                .ingest(change(Source::Realtime, version("01", desired, "pending", "")))
                .await
                .expect("ingest");
            assert!(is_new(&change), "{desired}: {change:?}");
        }
        run_job(j, "2026-01-01 00:00:01.000Z").await;
        let state = j.known_records(Collection::BotInstances).await.expect("records");
        assert_eq!(state.len(), 1);
        assert_eq!(state[0].last_updated.as_deref(), Some("2026-01-01 00:00:01.000Z"));
        assert_eq!(state[0].applied_hash, None, "neither request is known to be applied");
        // So a later version asking for either one is a change to carry out, not an echo.
        let later = j
            .ingest(change(Source::Realtime, version("02", "stopped", "running", "")))
            .await
            .expect("ingest");
        assert!(is_new(&later), "{later:?}");
        // Nor is a third version of that millisecond taken for what the run read.
        j.complete(j.claim_due(now_ms(), 10).await.expect("claim")[0].job_id, None)
            .await
            .expect("complete");
        let third = j
            .ingest(change(Source::Realtime, version("01", "paused", "pending", "")))
            .await
            .expect("ingest");
        assert!(is_new(&third), "{third:?}");
    }

    async fn echoes_settle_and_real_changes_queue(t: TestJournal) {
        let j = &t.journal;
        let first = j
            .ingest(change(Source::Webhook, version("01", "running", "pending", "")))
            .await
            .expect("ingest");
        assert!(is_new(&first), "a first change makes a job: {first:?}");

        // While the job runs, the echo of its own "deploying" write asks for the same thing: no job, no rerun.
        let jobs = j.claim_due(now_ms(), 10).await.expect("claim");
        let echo = j
            .ingest(change(Source::Webhook, version("02", "running", "deploying", "")))
            .await
            .expect("ingest");
        let Ingested::Settled { event_id } = echo else {
            panic!("echo during the run: {echo:?}");
        };
        let (row, job, attempts) = j.get_event(event_id).await.expect("get").expect("exists");
        assert_eq!(row.status, EventStatus::Done);
        assert!(job.is_none() && attempts.is_empty(), "a settled event has no job");
        j.set_applied(Collection::BotInstances, "r1", "2026-01-01 00:00:01.000Z")
            .await
            .expect("applied");
        j.complete(jobs[0].job_id, None).await.expect("complete");
        assert_eq!(counts(j).await, (0, 0, 1), "the echo did not make the job run again");

        // After success: the final write-back and the health poller's refreshes settle too, by either source.
        for (source, v) in [
            (Source::Realtime, version("03", "running", "running", "")),
            (
                Source::Webhook,
                version("04", "running", "running", "2026-01-01 00:00:04.000Z"),
            ),
        ] {
            let out = j.ingest(change(source, v)).await.expect("ingest");
            assert!(matches!(out, Ingested::Settled { .. }), "{source:?} echo: {out:?}");
        }
        assert_eq!(counts(j).await, (0, 0, 1));
        let known = j.known_records(Collection::BotInstances).await.expect("known");
        assert_eq!(
            known[0].last_updated.as_deref(),
            Some("2026-01-01 00:00:04.000Z"),
            "resync must see the settled version as applied"
        );

        // A user's change always makes a job, even one that only touches config deep inside.
        let mut deep = version("05", "running", "running", "2026-01-01 00:00:04.000Z");
        deep["config"]["model"] = json!("other");
        let out = j.ingest(change(Source::Webhook, deep)).await.expect("ingest");
        assert!(is_new(&out), "config change: {out:?}");
        run_job(j, "2026-01-01 00:00:05.000Z").await;

        // While a job for a change is pending, nothing settles: an echo of the old request could be a revert.
        let stop = j
            .ingest(change(Source::Webhook, version("06", "stopped", "running", "")))
            .await
            .expect("ingest");
        assert!(is_new(&stop));
        let mut back = version("07", "running", "running", "");
        back["config"]["model"] = json!("other");
        let out = j.ingest(change(Source::Realtime, back)).await.expect("ingest");
        assert!(
            is_new(&out),
            "same request as last applied, but a job is pending: {out:?}"
        );
        assert_eq!(counts(j).await, (1, 0, 0));
    }

    async fn resync_and_replay_hints_never_settle_and_leave_nothing_to_compare(t: TestJournal) {
        let j = &t.journal;
        j.ingest(change(Source::Webhook, version("01", "running", "pending", "")))
            .await
            .expect("ingest");
        run_job(j, "2026-01-01 00:00:01.000Z").await;
        // A resync hint carries no record: it always queues, and its run forgets what was applied.
        let hint = NewEvent {
            source: Source::Resync,
            payload: json!({"id": "r1", "updated": "2026-01-01 00:00:02.000Z"}),
            ..change(Source::Resync, version("02", "running", "running", ""))
        };
        assert!(is_new(&j.ingest(hint).await.expect("ingest")));
        run_job(j, "2026-01-01 00:00:02.000Z").await;
        let out = j
            .ingest(change(Source::Webhook, version("03", "running", "running", "x")))
            .await
            .expect("ingest");
        assert!(
            is_new(&out),
            "after a hint's run the applied request is unknown: {out:?}"
        );
    }

    async fn a_create_is_never_settled_but_its_run_makes_later_echoes_settle(t: TestJournal) {
        let j = &t.journal;
        let create = |v: Value| NewEvent {
            action: Action::Create,
            dedupe_key: format!("create:{}", v["updated"]),
            ..change(Source::Webhook, v)
        };
        let out = j
            .ingest(create(version("01", "running", "pending", "")))
            .await
            .expect("ingest");
        assert!(is_new(&out));
        run_job(j, "2026-01-01 00:00:01.000Z").await;
        let echo = j
            .ingest(change(Source::Realtime, version("02", "running", "running", "")))
            .await
            .expect("ingest");
        assert!(
            matches!(echo, Ingested::Settled { .. }),
            "the final write-back's echo: {echo:?}"
        );
        let again = j
            .ingest(create(version("03", "running", "running", "")))
            .await
            .expect("ingest");
        assert!(is_new(&again), "a create always makes a job: {again:?}");
    }

    async fn an_echo_during_a_run_that_then_fails_leaves_resync_its_chance(t: TestJournal) {
        let j = &t.journal;
        j.ingest(change(Source::Webhook, version("01", "running", "pending", "")))
            .await
            .expect("ingest");
        run_job(j, "2026-01-01 00:00:01.000Z").await;
        // A user's change; its run writes `deploying`, whose echo settles while the run goes on.
        j.ingest(change(Source::Webhook, version("02", "stopped", "running", "")))
            .await
            .expect("ingest");
        let jobs = j.claim_due(now_ms(), 10).await.expect("claim");
        let echo = j
            .ingest(change(Source::Realtime, version("03", "stopped", "deploying", "")))
            .await
            .expect("ingest");
        assert!(matches!(echo, Ingested::Settled { .. }), "{echo:?}");
        j.fail(jobs[0].job_id, "coolify unreachable", None).await.expect("fail");
        let known = j.known_records(Collection::BotInstances).await.expect("known");
        assert_eq!(
            known[0].last_updated.as_deref(),
            Some("2026-01-01 00:00:01.000Z"),
            "the failed run's versions are not recorded as applied, so resync still sees the change"
        );
    }

    // A change and its undoing both arrive while the job runs (stopped, then running again): the run that
    // follows reads the record asking for `running`, so `running` is what is applied. A later `stopped` is a
    // real change and must make a job, not settle as an echo of the first change's request.
    async fn a_change_undone_while_its_job_runs_is_not_taken_for_applied(t: TestJournal) {
        let j = &t.journal;
        let at = |s: &str| format!("2026-01-01 00:00:{s}.000Z");
        j.ingest(change(Source::Realtime, version("01", "running", "pending", "")))
            .await
            .expect("ingest");
        let first = j.claim_due(now_ms(), 10).await.expect("claim");
        // The run read version 01; meanwhile the user stops the instance and starts it again.
        let stop = j
            .ingest(change(Source::Realtime, version("02", "stopped", "deploying", "")))
            .await
            .expect("ingest");
        assert!(is_new(&stop), "{stop:?}");
        let back = j
            .ingest(change(Source::Webhook, version("03", "running", "deploying", "")))
            .await
            .expect("ingest");
        j.set_applied(Collection::BotInstances, "r1", &at("01"))
            .await
            .expect("applied");
        j.complete(first[0].job_id, None).await.expect("complete");
        // The run again reads version 03 (running): nothing to do.
        run_job(j, &at("03")).await;
        assert_eq!(counts(j).await, (0, 0, 1));

        let stop_again = j
            .ingest(change(Source::Realtime, version("04", "stopped", "running", "")))
            .await
            .expect("ingest");
        assert!(
            is_new(&stop_again),
            "stopped was never applied after the change back: {stop_again:?}"
        );
        assert!(
            is_new(&back),
            "the job was to run again anyway: its next claim covers the change back: {back:?}"
        );
    }

    // The run read a version whose own event had not arrived yet: when it arrives it is settled (that
    // version was applied), and echoes asking for the same thing settle after it.
    async fn the_event_of_the_version_a_run_read_settles_when_it_arrives_late(t: TestJournal) {
        let j = &t.journal;
        let at = |s: &str| format!("2026-01-01 00:00:{s}.000Z");
        j.ingest(change(Source::Realtime, version("01", "running", "pending", "")))
            .await
            .expect("ingest");
        // The run read version 02 (the user's stop), whose event is still on its way.
        run_job(j, &at("02")).await;
        let late = j
            .ingest(change(Source::Realtime, version("02", "stopped", "pending", "")))
            .await
            .expect("ingest");
        assert!(matches!(late, Ingested::Settled { .. }), "{late:?}");
        let echo = j
            .ingest(change(Source::Realtime, version("03", "stopped", "stopped", "")))
            .await
            .expect("ingest");
        assert!(
            matches!(echo, Ingested::Settled { .. }),
            "the write-back's echo: {echo:?}"
        );
        let start = j
            .ingest(change(Source::Realtime, version("04", "running", "stopped", "")))
            .await
            .expect("ingest");
        assert!(is_new(&start), "{start:?}");
    }

    // A resync hint for a version that was settled as an echo makes a job unless that echo asks for what is
    // applied; once found settled, the version counts as applied and the next pass has nothing to send.
    async fn resync_looks_behind_a_settled_echo_that_was_not_applied(t: TestJournal) {
        let j = &t.journal;
        let at = |s: &str| format!("2026-01-01 00:00:{s}.000Z");
        let hint = |s: &str| NewEvent {
            source: Source::Resync,
            payload: json!({"id": "r1", "updated": at(s)}),
            fingerprint: None,
            ..change(Source::Resync, version(s, "running", "running", ""))
        };
        j.ingest(change(Source::Realtime, version("01", "running", "pending", "")))
            .await
            .expect("ingest");
        let first = j.claim_due(now_ms(), 10).await.expect("claim");
        // The run's write-back echoes while it runs; the run succeeds.
        let echo = j
            .ingest(change(Source::Realtime, version("02", "running", "running", "")))
            .await
            .expect("ingest");
        assert!(matches!(echo, Ingested::Settled { .. }), "{echo:?}");
        j.set_applied(Collection::BotInstances, "r1", &at("01"))
            .await
            .expect("applied");
        j.complete(first[0].job_id, None).await.expect("complete");
        // The resync lists version 02 (newer than the journal's 01): its echo asks for what is applied.
        assert_eq!(j.ingest(hint("02")).await.expect("ingest"), Ingested::Duplicate);
        let known = j.known_records(Collection::BotInstances).await.expect("known");
        assert_eq!(known[0].last_updated.as_deref(), Some(at("02").as_str()));

        // A change whose run fails for good after its write-back echoed: that echo was never applied.
        j.ingest(change(Source::Realtime, version("03", "stopped", "running", "")))
            .await
            .expect("ingest");
        let second = j.claim_due(now_ms(), 10).await.expect("claim");
        let echo = j
            .ingest(change(Source::Realtime, version("04", "stopped", "deploying", "")))
            .await
            .expect("ingest");
        assert!(matches!(echo, Ingested::Settled { .. }), "{echo:?}");
        j.fail(second[0].job_id, "refused", None).await.expect("fail");
        let out = j.ingest(hint("04")).await.expect("ingest");
        assert!(is_new(&out), "the resync must look at the record again: {out:?}");
        assert_eq!(
            j.ingest(hint("04")).await.expect("ingest"),
            Ingested::Duplicate,
            "once per version"
        );
    }
}
