//! Dispatcher behaviour against a real journal: one worker per record, parallelism across records,
//! retries with backoff, dead jobs, parked jobs, panics, and shutdown.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cf_bridge::config::QueueSettings;
use cf_bridge::events::{Action, Collection, EventSink, NewEvent, Source};
use cf_bridge::journal::{AttemptOutcome, ClaimedJob, EventFilter, EventStatus, JobState, Journal};
use cf_bridge::metrics::Metrics;
use cf_bridge::queue::{Dispatcher, ErrorPolicy, JobFuture, JobHandler, backoff_cap, backoff_delay};
use cf_testkit::journal::TestJournal;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

fn event(record_id: &str, n: usize) -> NewEvent {
    let updated = format!("u{n}");
    NewEvent {
        source: Source::Realtime,
        collection: Collection::BotInstances,
        record_id: record_id.into(),
        action: Action::Update,
        dedupe_key: NewEvent::change_key(Collection::BotInstances, record_id, Action::Update, Some(&updated)),
        record_updated: Some(updated),
        delivery_id: None,
        payload: serde_json::json!({}),
        fingerprint: None,
        trace_context: None,
    }
}

fn cfg(concurrency: usize) -> QueueSettings {
    QueueSettings {
        concurrency,
        max_waiting: 16,
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        max_attempts: 4,
    }
}

const POLL: Duration = Duration::from_millis(50);

struct Harness {
    _storage: TestJournal,
    journal: Journal,
    notify: Arc<Notify>,
    cancel: CancellationToken,
    run: tokio::task::JoinHandle<()>,
}

/// A handler's failure in these tests; the variant is its policy.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Retryable(String),
    #[error("{0}")]
    Permanent(String),
    #[error("{0}")]
    Fatal(String),
}

fn policy(failure: &Failure) -> ErrorPolicy {
    match failure {
        Failure::Retryable(_) => ErrorPolicy::Retry,
        Failure::Permanent(_) => ErrorPolicy::WaitForChange,
        Failure::Fatal(_) => ErrorPolicy::Dead,
    }
}

fn start<H: JobHandler>(t: TestJournal, handler: Arc<H>, cfg: QueueSettings, drain: Duration) -> Harness {
    start_polling(t, handler, cfg, POLL, drain)
}

fn start_polling<H: JobHandler>(
    t: TestJournal,
    handler: Arc<H>,
    cfg: QueueSettings,
    poll: Duration,
    drain: Duration,
) -> Harness {
    let journal = t.journal.clone();
    let dispatcher = Dispatcher::new(
        journal.clone(),
        handler,
        &cfg,
        Arc::new(Notify::new()),
        Arc::new(Metrics::new()),
    )
    .poll_interval(poll);
    let notify = dispatcher.notifier();
    let cancel = CancellationToken::new();
    let run = tokio::spawn(dispatcher.run(cancel.clone(), drain));
    Harness {
        _storage: t,
        journal,
        notify,
        cancel,
        run,
    }
}

impl Harness {
    async fn ingest(&self, record_id: &str, n: usize) {
        self.journal.ingest(event(record_id, n)).await.expect("ingest");
        self.notify.notify_one();
    }

    async fn stop(self) -> Journal {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.run)
            .await
            .expect("dispatcher stops")
            .expect("join");
        self.journal
    }
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn count(j: &Journal, state: JobState) -> i64 {
    j.job_counts().await.expect("counts")[&state]
}

/// Records concurrent handling, per record and overall. Handlers wait at `gate` until it opens, so the
/// test decides what is queued while the first runs are in flight (not the machine's speed).
struct Tracker {
    gate: tokio::sync::watch::Receiver<bool>,
    in_flight: Mutex<HashSet<String>>,
    overlap: AtomicBool,
    current: AtomicUsize,
    max_parallel: AtomicUsize,
    handled: Mutex<HashMap<String, usize>>,
}

impl JobHandler for Tracker {
    type Error = Failure;

    fn error_policy(&self, failure: &Failure) -> ErrorPolicy {
        policy(failure)
    }

    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> JobFuture<'a, Failure> {
        Box::pin(async move {
            if !self.in_flight.lock().expect("lock").insert(job.record_id.clone()) {
                self.overlap.store(true, Ordering::SeqCst);
            }
            let now = self.current.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_parallel.fetch_max(now, Ordering::SeqCst);
            let mut gate = self.gate.clone();
            gate.wait_for(|open| *open).await.expect("gate kept by the test");
            tokio::time::sleep(Duration::from_millis(3)).await;
            self.current.fetch_sub(1, Ordering::SeqCst);
            self.in_flight.lock().expect("lock").remove(&job.record_id);
            *self
                .handled
                .lock()
                .expect("lock")
                .entry(job.record_id.clone())
                .or_default() += 1;
            Ok(None)
        })
    }
}

cf_testkit::on_both_journals! {
    async fn records_run_in_parallel_but_never_twice_at_once(t: TestJournal) {
        let (open, gate) = tokio::sync::watch::channel(false);
        let tracker = Arc::new(Tracker {
            gate,
            in_flight: Mutex::default(),
            overlap: AtomicBool::default(),
            current: AtomicUsize::default(),
            max_parallel: AtomicUsize::default(),
            handled: Mutex::default(),
        });
        let h = start(t, tracker.clone(), cfg(8), Duration::from_secs(5));
        for round in 0..5 {
            for r in 0..50 {
                h.ingest(&format!("rec{r}"), round).await;
            }
        }
        // Every event is journaled while at most 8 runs are held at the gate: the rest must coalesce.
        let t = tracker.clone();
        wait_for("the first runs to reach the gate", || {
            let t = t.clone();
            async move { t.current.load(Ordering::SeqCst) > 1 }
        })
        .await;
        open.send(true).expect("handlers hold the gate");
        let j = h.journal.clone();
        wait_for("every job to succeed", || {
            let j = j.clone();
            async move {
                count(&j, JobState::Succeeded).await == 50
                    && count(&j, JobState::Queued).await == 0
                    && count(&j, JobState::Running).await == 0
            }
        })
        .await;
        let journal = h.stop().await;

        assert!(
            !tracker.overlap.load(Ordering::SeqCst),
            "a record was handled by two workers at once"
        );
        let parallel = tracker.max_parallel.load(Ordering::SeqCst);
        assert!(parallel > 1 && parallel <= 8, "max parallel handlers {parallel}");
        let handled = tracker.handled.lock().expect("lock").clone();
        assert_eq!(handled.len(), 50);
        // Each record runs once for everything queued before its run, plus once more at most for a record
        // whose events arrived while it was held at the gate.
        let total: usize = handled.values().sum();
        assert!(
            total <= 50 + 8,
            "events for a queued record coalesce ({total} runs for 250 events)"
        );
        let queued = EventFilter {
            status: Some(EventStatus::Queued),
            ..Default::default()
        };
        assert!(journal.list_events(queued, None, 10).await.expect("list").0.is_empty());
    }

    async fn retryable_failures_back_off_then_die_and_an_event_revives(t: TestJournal) {
        let flaky = Arc::new(Flaky {
            failing: AtomicBool::new(true),
            permanent: false,
            calls: AtomicUsize::new(0),
        });
        let h = start(t, flaky.clone(), cfg(2), Duration::from_secs(5));
        h.ingest("r1", 0).await;
        let j = h.journal.clone();
        wait_for("the job to die", || {
            let j = j.clone();
            async move { count(&j, JobState::Dead).await == 1 }
        })
        .await;
        assert_eq!(
            flaky.calls.load(Ordering::SeqCst),
            4,
            "max_attempts attempts, then dead"
        );

        let first_event = j.list_events(EventFilter::default(), None, 1).await.expect("list").0[0].id;
        let (_, job, attempts) = j.get_event(first_event).await.expect("get").expect("exists");
        let job = job.expect("the event has a job");
        assert_eq!(job.last_error.as_deref(), Some("coolify unreachable"));
        let mut oldest_first = attempts.clone();
        oldest_first.reverse();
        let outcomes: Vec<_> = oldest_first.iter().filter_map(|a| a.outcome).collect();
        use AttemptOutcome::{Dead, Retry};
        assert_eq!(outcomes, vec![Retry, Retry, Retry, Dead]);
        assert!(
            oldest_first
                .windows(2)
                .all(|w| w[0].started_at <= w[1].started_at && w[0].finished_at <= Some(w[1].started_at))
        );

        flaky.failing.store(false, Ordering::SeqCst);
        h.ingest("r1", 1).await;
        wait_for("the revived job to succeed", || {
            let j = j.clone();
            async move { count(&j, JobState::Succeeded).await == 1 }
        })
        .await;
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 5);
        h.stop().await;
    }

    async fn an_error_whose_policy_is_dead_ends_the_job_at_the_first_attempt(t: TestJournal) {
        let h = start(t, Arc::new(Broken), cfg(2), Duration::from_secs(5));
        h.ingest("r1", 0).await;
        let j = h.journal.clone();
        wait_for("the job to die", || {
            let j = j.clone();
            async move { count(&j, JobState::Dead).await == 1 }
        })
        .await;
        let id = j.list_events(EventFilter::default(), None, 1).await.expect("list").0[0].id;
        let (_, job, attempts) = j.get_event(id).await.expect("get").expect("exists");
        assert_eq!(job.expect("a job").attempts, 1, "no retry");
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].outcome, Some(AttemptOutcome::Dead));
        h.stop().await;
    }

    async fn permanent_errors_wait_for_a_new_event(t: TestJournal) {
        let flaky = Arc::new(Flaky {
            failing: AtomicBool::new(true),
            permanent: true,
            calls: AtomicUsize::new(0),
        });
        let h = start(t, flaky.clone(), cfg(2), Duration::from_secs(5));
        h.ingest("r1", 0).await;
        let j = h.journal.clone();
        wait_for("the job to be parked", || {
            let j = j.clone();
            async move { count(&j, JobState::Waiting).await == 1 }
        })
        .await;
        // Several poll intervals pass: a parked job is not retried.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 1);

        flaky.failing.store(false, Ordering::SeqCst);
        h.ingest("r1", 1).await;
        wait_for("the job to succeed after the record changed", || {
            let j = j.clone();
            async move { count(&j, JobState::Succeeded).await == 1 }
        })
        .await;
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 2);
        h.stop().await;
    }

    async fn a_panicking_handler_is_a_retryable_failure(t: TestJournal) {
        let handler = Arc::new(PanicsOnce {
            calls: AtomicUsize::new(0),
        });
        let h = start(t, handler.clone(), cfg(2), Duration::from_secs(5));
        h.ingest("r1", 0).await;
        let j = h.journal.clone();
        wait_for("the job to succeed after the panic", || {
            let j = j.clone();
            async move { count(&j, JobState::Succeeded).await == 1 }
        })
        .await;
        let id = j.list_events(EventFilter::default(), None, 1).await.expect("list").0[0].id;
        let (_, _, attempts) = j.get_event(id).await.expect("get").expect("exists");
        let last = attempts.last().expect("first attempt");
        assert_eq!(last.outcome, Some(AttemptOutcome::Retry));
        assert!(
            last.error.as_deref().is_some_and(|e| e.contains("handler bug")),
            "{:?}",
            last.error
        );
        h.stop().await;
    }

    async fn an_event_during_a_run_triggers_another_run(t: TestJournal) {
        let g = gate(Duration::ZERO);
        // A long poll interval: only the notifier and finishing workers wake the dispatcher.
        let h = start_polling(t, g.clone(), cfg(2), Duration::from_secs(30), Duration::from_secs(5));
        h.ingest("r1", 0).await;
        tokio::time::timeout(Duration::from_secs(5), g.entered.notified())
            .await
            .expect("handler started promptly");
        h.ingest("r1", 1).await;
        g.release.notify_one();
        let j = h.journal.clone();
        wait_for("the second run", || {
            let j = j.clone();
            async move { count(&j, JobState::Succeeded).await == 1 }
        })
        .await;
        assert_eq!(g.calls.load(Ordering::SeqCst), 2);
        let queued = EventFilter {
            status: Some(EventStatus::Queued),
            ..Default::default()
        };
        assert!(j.list_events(queued, None, 10).await.expect("list").0.is_empty());
        h.stop().await;
    }

    async fn shutdown_drains_in_flight_jobs(t: TestJournal) {
        let g = gate(Duration::from_millis(100));
        let h = start(t, g.clone(), cfg(2), Duration::from_secs(5));
        h.ingest("r1", 0).await;
        tokio::time::timeout(Duration::from_secs(5), g.entered.notified())
            .await
            .expect("handler started");
        g.release.notify_one();
        let journal = h.stop().await;
        assert_eq!(
            count(&journal, JobState::Succeeded).await,
            1,
            "the in-flight job finished before run returned"
        );
    }

    async fn shutdown_abandons_jobs_past_the_deadline_and_they_resume(t: TestJournal) {
        let g = gate(Duration::ZERO);
        let h = start(t, g.clone(), cfg(2), Duration::from_millis(50));
        h.ingest("r1", 0).await;
        tokio::time::timeout(Duration::from_secs(5), g.entered.notified())
            .await
            .expect("handler started");
        let started = Instant::now();
        let journal = h.stop().await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "run returned soon after the deadline"
        );
        assert_eq!(count(&journal, JobState::Running).await, 1);
        assert_eq!(journal.resume_on_start().await.expect("resume"), 1);
        assert_eq!(count(&journal, JobState::Queued).await, 1);
    }

    async fn a_job_waiting_without_its_slot_lets_other_records_run_and_then_respects_the_limit(t: TestJournal) {
        let w = Arc::new(Waiter {
            entered: Notify::new(),
            release: Notify::new(),
            at_work: AtWork::default(),
            work: Duration::from_millis(30),
        });
        let h = start(t, w.clone(), cfg(1), Duration::from_secs(5));
        h.ingest("waits", 0).await;
        tokio::time::timeout(Duration::from_secs(5), w.entered.notified())
            .await
            .expect("the waiting job started");
        for r in ["a", "b", "c"] {
            h.ingest(r, 0).await;
        }
        let j = h.journal.clone();
        wait_for("three jobs done while one waits (concurrency 1)", || {
            let j = j.clone();
            async move { count(&j, JobState::Succeeded).await == 3 }
        })
        .await;
        assert_eq!(
            count(&j, JobState::Running).await,
            1,
            "the waiting job still owns its record"
        );
        // The waiter takes a slot again before it works: with more jobs queued, never two at work.
        for r in ["d", "e", "f", "g"] {
            h.ingest(r, 0).await;
        }
        w.release.notify_one();
        wait_for("every job done", || {
            let j = j.clone();
            async move { count(&j, JobState::Succeeded).await == 8 }
        })
        .await;
        assert_eq!(
            w.at_work.most.load(Ordering::SeqCst),
            1,
            "at most one job at work at a time"
        );
        h.stop().await;
    }

    async fn jobs_woken_together_leave_a_quarter_of_the_slots_to_new_changes(t: TestJournal) {
        let r = Arc::new(Returner {
            parked: AtomicUsize::new(0),
            release: tokio::sync::Semaphore::new(0),
            at_work: AtWork::default(),
            long: Duration::from_secs(3),
        });
        let h = start(t, r.clone(), cfg(4), Duration::from_secs(10));
        for w in ["w1", "w2", "w3", "w4"] {
            h.ingest(w, 0).await;
        }
        let parked = r.clone();
        wait_for("four jobs waiting without their slots", || {
            let r = parked.clone();
            async move { r.parked.load(Ordering::SeqCst) == 4 }
        })
        .await;
        r.release.add_permits(4);
        let working = r.clone();
        wait_for("the woken jobs at work", || {
            let r = working.clone();
            async move { r.at_work.now.load(Ordering::SeqCst) >= 3 }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(r.at_work.now.load(Ordering::SeqCst), 3, "one slot of four is kept for new changes");
        h.ingest("new", 0).await;
        let j = h.journal.clone();
        let started = Instant::now();
        wait_for("the new change done", || {
            let j = j.clone();
            async move { count(&j, JobState::Succeeded).await == 1 }
        })
        .await;
        // Had the woken jobs taken every slot, it would have waited for one of them (3 s).
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "the new change waited {:?} for a slot",
            started.elapsed()
        );
        wait_for("every job done", || {
            let j = j.clone();
            async move { count(&j, JobState::Succeeded).await == 5 }
        })
        .await;
        assert!(r.at_work.most.load(Ordering::SeqCst) <= 4, "never more than the limit at work");
        h.stop().await;
    }

    async fn past_max_waiting_a_job_waits_holding_its_slot(t: TestJournal) {
        let p = Arc::new(Parker {
            entered: AtomicUsize::new(0),
            release: tokio::sync::Semaphore::new(0),
        });
        // One slot and one place to wait without it: the first job waits without its slot, the second
        // waits holding the slot, and the third stays queued in the journal instead of in memory.
        let h = start(
            t,
            p.clone(),
            QueueSettings {
                max_waiting: 1,
                ..cfg(1)
            },
            Duration::from_secs(5),
        );
        for r in ["w1", "w2", "w3"] {
            h.ingest(r, 0).await;
        }
        let entered = p.clone();
        wait_for("two jobs waiting", || {
            let p = entered.clone();
            async move { p.entered.load(Ordering::SeqCst) >= 2 }
        })
        .await;
        // Without the bound the third job starts within milliseconds of the second's wait.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(p.entered.load(Ordering::SeqCst), 2, "a third job started");
        assert_eq!(count(&h.journal, JobState::Queued).await, 1, "the third job stays queued");
        p.release.add_permits(3);
        let j = h.journal.clone();
        wait_for("every job done", || {
            let j = j.clone();
            async move { count(&j, JobState::Succeeded).await == 3 }
        })
        .await;
        h.stop().await;
    }
}

/// Records "w..." wait in `without_slot` until released, then work for `long` holding a slot (a status
/// round waking the starts it found running); every other record works for 10 ms.
struct Returner {
    parked: AtomicUsize,
    release: tokio::sync::Semaphore,
    at_work: AtWork,
    long: Duration,
}

/// Counts handlers doing work (not parked), so the concurrency limit can be checked.
#[derive(Default)]
struct AtWork {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl AtWork {
    async fn work(&self, how_long: Duration) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(how_long).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

impl JobHandler for Returner {
    type Error = Failure;

    fn error_policy(&self, failure: &Failure) -> ErrorPolicy {
        policy(failure)
    }

    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> JobFuture<'a, Failure> {
        Box::pin(async move {
            if !job.record_id.starts_with('w') {
                self.at_work.work(Duration::from_millis(10)).await;
                return Ok(None);
            }
            self.parked.fetch_add(1, Ordering::SeqCst);
            cf_bridge::queue::without_slot(async {
                self.release.acquire().await.map(|p| p.forget()).expect("never closed");
            })
            .await;
            self.at_work.work(self.long).await;
            Ok(None)
        })
    }
}

/// Every job waits in `without_slot` until the test releases it.
struct Parker {
    entered: AtomicUsize,
    release: tokio::sync::Semaphore,
}

impl JobHandler for Parker {
    type Error = Failure;

    fn error_policy(&self, failure: &Failure) -> ErrorPolicy {
        policy(failure)
    }

    fn handle<'a>(&'a self, _job: &'a ClaimedJob) -> JobFuture<'a, Failure> {
        Box::pin(async move {
            self.entered.fetch_add(1, Ordering::SeqCst);
            cf_bridge::queue::without_slot(async {
                self.release.acquire().await.map(|p| p.forget()).expect("never closed");
            })
            .await;
            Ok(None)
        })
    }
}

/// Fails while `failing` is set; counts calls.
struct Flaky {
    failing: AtomicBool,
    permanent: bool,
    calls: AtomicUsize,
}

impl JobHandler for Flaky {
    type Error = Failure;

    fn error_policy(&self, failure: &Failure) -> ErrorPolicy {
        policy(failure)
    }

    fn handle<'a>(&'a self, _job: &'a ClaimedJob) -> JobFuture<'a, Failure> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match (self.failing.load(Ordering::SeqCst), self.permanent) {
                (false, _) => Ok(None),
                (true, false) => Err(Failure::Retryable("coolify unreachable".into())),
                (true, true) => Err(Failure::Permanent("template missing".into())),
            }
        })
    }
}

#[test]
fn backoff_grows_exponentially_up_to_the_cap_with_full_jitter() {
    let cfg = QueueSettings {
        base_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        ..cfg(1)
    };
    let caps: Vec<u128> = (1..=6).map(|a| backoff_cap(&cfg, a).as_millis()).collect();
    assert_eq!(caps, vec![100, 200, 400, 800, 1000, 1000]);
    assert_eq!(backoff_cap(&cfg, u32::MAX), Duration::from_secs(1));
    let delays: Vec<Duration> = (0..200).map(|_| backoff_delay(&cfg, 3)).collect();
    assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)));
    let distinct: HashSet<_> = delays.iter().collect();
    assert!(distinct.len() > 10, "delays are jittered");
}

/// Fails with an error whose policy is "dead".
struct Broken;

impl JobHandler for Broken {
    type Error = Failure;

    fn error_policy(&self, failure: &Failure) -> ErrorPolicy {
        policy(failure)
    }

    fn handle<'a>(&'a self, _job: &'a ClaimedJob) -> JobFuture<'a, Failure> {
        Box::pin(async { Err(Failure::Fatal("internal: no service uuid".into())) })
    }
}

/// Panics on its first call.
struct PanicsOnce {
    calls: AtomicUsize,
}

impl JobHandler for PanicsOnce {
    type Error = Failure;

    fn error_policy(&self, failure: &Failure) -> ErrorPolicy {
        policy(failure)
    }

    fn handle<'a>(&'a self, _job: &'a ClaimedJob) -> JobFuture<'a, Failure> {
        Box::pin(async move {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("handler bug");
            }
            Ok(None)
        })
    }
}

/// Blocks its first run until released, so the test can change the record meanwhile.
struct Gate {
    entered: Notify,
    release: Notify,
    calls: AtomicUsize,
    slow: Duration,
}

impl JobHandler for Gate {
    type Error = Failure;

    fn error_policy(&self, failure: &Failure) -> ErrorPolicy {
        policy(failure)
    }

    fn handle<'a>(&'a self, _job: &'a ClaimedJob) -> JobFuture<'a, Failure> {
        Box::pin(async move {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                self.entered.notify_one();
                self.release.notified().await;
            }
            tokio::time::sleep(self.slow).await;
            Ok(None)
        })
    }
}

fn gate(slow: Duration) -> Arc<Gate> {
    Arc::new(Gate {
        entered: Notify::new(),
        release: Notify::new(),
        calls: AtomicUsize::new(0),
        slow,
    })
}

/// Record "waits" parks in `without_slot` until released; every other record works for `work`.
struct Waiter {
    entered: Notify,
    release: Notify,
    at_work: AtWork,
    work: Duration,
}

impl JobHandler for Waiter {
    type Error = Failure;

    fn error_policy(&self, failure: &Failure) -> ErrorPolicy {
        policy(failure)
    }

    fn handle<'a>(&'a self, job: &'a ClaimedJob) -> JobFuture<'a, Failure> {
        Box::pin(async move {
            if job.record_id == "waits" {
                self.at_work.work(self.work).await;
                self.entered.notify_one();
                cf_bridge::queue::without_slot(self.release.notified()).await;
            }
            self.at_work.work(self.work).await;
            Ok(None)
        })
    }
}
