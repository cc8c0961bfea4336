//! The operator page's picture of the last hour, kept in memory: one sample per minute (Coolify requests
//! made in it, jobs by state and fleet health at its end) in a ring of 60. The same loop watches the
//! health poller's verdicts and announces each change on the journal's feed, so the page's rows follow
//! health without polling PocketBase.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::core::Collector;
use tokio_util::sync::CancellationToken;

use crate::journal::{Change, JobState, Journal, now_ms};
use crate::metrics::Metrics;
use crate::reconcile::judgement::{HealthBoard, Verdict};

/// Minutes kept.
pub const MINUTES: usize = 60;
/// How often verdicts are compared (they change at the health poll's pace, which is slower).
const TICK: Duration = Duration::from_secs(1);

/// One minute of the fleet.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// Minutes since the Unix epoch (UTC).
    pub minute: i64,
    /// Coolify requests made during the minute.
    pub coolify_requests: u64,
    pub jobs: BTreeMap<JobState, i64>,
    /// Instances by the health poller's verdict.
    pub health: BTreeMap<&'static str, usize>,
}

pub struct Glance {
    metrics: Arc<Metrics>,
    health: Arc<HealthBoard>,
    journal: Journal,
    /// Coolify's budget per minute (`coolify.requests_per_minute`), the charts' ceiling.
    pub budget: u32,
    state: Mutex<State>,
    /// Cancelled when the bridge stops, so open streams end instead of holding up the shutdown.
    streams_end: CancellationToken,
}

#[derive(Default)]
struct State {
    samples: VecDeque<Sample>,
    /// The minute under way and the Coolify request count when it began.
    minute: i64,
    requests_at_start: u64,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(60_000)
}

/// Every Coolify request counted so far, whatever its endpoint and status.
fn coolify_total(metrics: &Metrics) -> u64 {
    metrics
        .coolify_requests
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

impl Glance {
    pub fn new(metrics: Arc<Metrics>, health: Arc<HealthBoard>, journal: Journal, budget: u32) -> Self {
        let state = State {
            minute: minute_of(now_ms()),
            requests_at_start: coolify_total(&metrics),
            ..State::default()
        };
        Glance {
            metrics,
            health,
            journal,
            budget,
            state: Mutex::new(state),
            streams_end: CancellationToken::new(),
        }
    }

    /// Resolves when the bridge stops taking requests.
    pub fn streams_end(&self) -> CancellationToken {
        self.streams_end.clone()
    }

    pub fn close_streams(&self) {
        self.streams_end.cancel();
    }

    fn health_counts(&self) -> BTreeMap<&'static str, usize> {
        let counts = self.health.counts();
        Verdict::ALL
            .iter()
            .map(|v| (v.as_str(), counts.get(v).copied().unwrap_or(0)))
            .collect()
    }

    /// The finished minutes, oldest first, then the minute under way so far.
    pub async fn samples(&self) -> Vec<Sample> {
        let jobs = self.journal.job_counts().await.unwrap_or_default();
        let total = coolify_total(&self.metrics);
        let health = self.health_counts();
        let state = lock(&self.state);
        let mut out: Vec<Sample> = state.samples.iter().cloned().collect();
        out.push(Sample {
            minute: state.minute,
            coolify_requests: total.saturating_sub(state.requests_at_start),
            jobs,
            health,
        });
        out
    }

    /// Closes the minute if it has ended and announces verdicts that changed.
    async fn tick(&self) {
        let minute = minute_of(now_ms());
        if minute != lock(&self.state).minute {
            let jobs = self.journal.job_counts().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read job counts for the operator page");
                BTreeMap::new()
            });
            let total = coolify_total(&self.metrics);
            let health = self.health_counts();
            let mut state = lock(&self.state);
            let sample = Sample {
                minute: state.minute,
                coolify_requests: total.saturating_sub(state.requests_at_start),
                jobs,
                health,
            };
            state.samples.push_back(sample);
            while state.samples.len() >= MINUTES {
                state.samples.pop_front();
            }
            state.minute = minute;
            state.requests_at_start = total;
        }
        for (record_id, verdict) in self.health.take_unannounced() {
            self.journal.announce(Change::Health {
                record_id,
                verdict: verdict.as_str(),
            });
        }
    }

    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = every.tick() => self.tick().await,
            }
        }
    }
}
