//! Prometheus metrics. Each bridge (an `App`) has its own registry, handed to the parts that count, so
//! that several bridges in one process (the in-process tests) never share a counter. The process's own
//! figures (memory, CPU, fds, start time) come from the prometheus crate's process collector under their
//! conventional unprefixed names (`process_*`), in a registry of their own beside the `cf_bridge_` one.

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Why a webhook delivery was refused: every value `webhook_rejected_total` can carry, shown from zero.
pub const WEBHOOK_REJECTIONS: &[&str] = &[
    "too_large",
    "body",
    "headers",
    "timestamp",
    "signature",
    "record",
    "unavailable",
    "intake_off",
];

pub struct Metrics {
    pub registry: Registry,
    /// `process_*` (unprefixed names, so the usual dashboards find them).
    process: Registry,
    /// Webhook deliveries refused, by reason (one of [`WEBHOOK_REJECTIONS`]).
    pub webhook_rejected: IntCounterVec,
    /// Events received, by source (realtime, webhook, resync, replay).
    pub events_received: IntCounterVec,
    /// Events dropped as duplicates, by source.
    pub events_deduplicated: IntCounterVec,
    /// Jobs by state, refreshed from the journal.
    pub jobs: prometheus::IntGaugeVec,
    /// Jobs that gave their worker slot back while waiting on Coolify (a start, an async delete).
    pub jobs_waiting: IntGauge,
    /// Reconcile duration in seconds, by collection and outcome.
    pub reconcile_seconds: HistogramVec,
    /// Time from an event's arrival to the first Coolify call made for it.
    pub event_to_first_action_seconds: HistogramVec,
    /// Coolify requests by endpoint template and HTTP status ("error" for transport errors).
    pub coolify_requests: IntCounterVec,
    /// Tokens left in the Coolify request budget.
    pub coolify_budget_remaining: Gauge,
    pub realtime_reconnects: IntCounter,
    pub realtime_connected: IntGauge,
    /// Unix time of the last completed resync.
    pub last_resync_timestamp: Gauge,
    /// Coolify resources named cf-* with no live record, by kind.
    pub orphans: GaugeVec,
    /// Instances the health poller judged in its latest poll, by verdict (live health, kept in memory).
    pub instances_health: prometheus::IntGaugeVec,
    /// Journal rows pruned by retention: `events`, `attempts` deleted, `payloads` dropped.
    pub journal_pruned: IntCounterVec,
    /// Duration of the longest batch of the last prune pass (ingests wait at most this long behind it).
    pub journal_prune_longest_batch: Gauge,
    /// Writes of the journal's health row (one per readiness evaluation, not per `/readyz` request).
    pub journal_health_writes: IntCounter,
    /// 1 while a dependency (pocketbase, coolify) answers, 0 while the bridge waits for it.
    pub dependency_up: prometheus::IntGaugeVec,
    /// Instance records a job worked from, by where it took them: `frame` (the realtime frame, no request)
    /// or `pocketbase` (read).
    pub instance_records: IntCounterVec,
    /// 1 while this replica runs the fleet-wide tasks (always, on SQLite; the elected one on PostgreSQL).
    pub leader: IntGauge,
    /// Floods of PocketBase writes the realtime stream showed: the flood sign raised after being down.
    pub pocketbase_floods: IntCounter,
    /// The bridge's PocketBase writes after which the next one was held back because of a flood.
    pub pocketbase_writes_spaced: IntCounter,
}

impl Metrics {
    pub fn new() -> Metrics {
        // The definitions below are fixed and their names unique, so building them cannot fail.
        match build() {
            Ok(m) => m,
            Err(e) => unreachable!("static metric definitions are valid: {e}"),
        }
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        let mut buf = Vec::new();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new_custom(Some("cf_bridge".into()), None)?;
    let events_received = IntCounterVec::new(
        Opts::new("events_received_total", "Events received, by source"),
        &["source"],
    )?;
    let events_deduplicated = IntCounterVec::new(
        Opts::new("events_deduplicated_total", "Events dropped as duplicates, by source"),
        &["source"],
    )?;
    let jobs = prometheus::IntGaugeVec::new(Opts::new("jobs", "Jobs in the journal, by state"), &["state"])?;
    let jobs_waiting = IntGauge::new(
        "jobs_waiting",
        "Running jobs waiting on Coolify without holding a worker slot",
    )?;
    let reconcile_seconds = HistogramVec::new(
        HistogramOpts::new(
            "reconcile_duration_seconds",
            "Reconcile duration, by collection and outcome",
        )
        .buckets(vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ]),
        &["collection", "outcome"],
    )?;
    let event_to_first_action_seconds = HistogramVec::new(
        HistogramOpts::new(
            "event_to_first_action_seconds",
            "Time from an event's arrival to the first Coolify request for it",
        )
        .buckets(vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]),
        &["collection"],
    )?;
    let coolify_requests = IntCounterVec::new(
        Opts::new("coolify_requests_total", "Coolify API requests, by endpoint and status"),
        &["endpoint", "status"],
    )?;
    let coolify_budget_remaining = Gauge::new(
        "coolify_budget_remaining",
        "Requests left in the Coolify request budget",
    )?;
    let realtime_reconnects = IntCounter::new("realtime_reconnects_total", "PocketBase realtime (re)connections")?;
    let realtime_connected = IntGauge::new(
        "realtime_connected",
        "1 while the PocketBase realtime stream is subscribed",
    )?;
    let last_resync_timestamp = Gauge::new(
        "last_resync_timestamp_seconds",
        "Unix time of the last completed resync",
    )?;
    let orphans = GaugeVec::new(
        Opts::new("coolify_orphans", "Coolify resources named cf-* with no live record"),
        &["kind"],
    )?;
    let instances_health = prometheus::IntGaugeVec::new(
        Opts::new(
            "instances_health",
            "Instances judged by the latest health poll, by verdict",
        ),
        &["verdict"],
    )?;
    let journal_pruned = IntCounterVec::new(
        Opts::new("journal_pruned_total", "Journal rows pruned by retention, by kind"),
        &["kind"],
    )?;
    let journal_prune_longest_batch = Gauge::new(
        "journal_prune_longest_batch_seconds",
        "Longest batch of the last journal prune pass",
    )?;

    registry.register(Box::new(events_received.clone()))?;
    registry.register(Box::new(events_deduplicated.clone()))?;
    registry.register(Box::new(jobs.clone()))?;
    registry.register(Box::new(jobs_waiting.clone()))?;
    registry.register(Box::new(reconcile_seconds.clone()))?;
    registry.register(Box::new(event_to_first_action_seconds.clone()))?;
    registry.register(Box::new(coolify_requests.clone()))?;
    registry.register(Box::new(coolify_budget_remaining.clone()))?;
    registry.register(Box::new(realtime_reconnects.clone()))?;
    registry.register(Box::new(realtime_connected.clone()))?;
    registry.register(Box::new(last_resync_timestamp.clone()))?;
    let journal_health_writes = IntCounter::new(
        "journal_health_writes_total",
        "Writes of the journal's health row by readiness checks",
    )?;
    registry.register(Box::new(orphans.clone()))?;
    registry.register(Box::new(journal_health_writes.clone()))?;
    registry.register(Box::new(instances_health.clone()))?;
    registry.register(Box::new(journal_pruned.clone()))?;
    registry.register(Box::new(journal_prune_longest_batch.clone()))?;
    let dependency_up = prometheus::IntGaugeVec::new(
        Opts::new(
            "dependency_up",
            "1 while the dependency answers, 0 while the bridge waits for it",
        ),
        &["dependency"],
    )?;
    registry.register(Box::new(dependency_up.clone()))?;
    let leader = IntGauge::new(
        "leader",
        "1 while this replica leads: runs realtime, resync, the health poller, orphan scan and retention",
    )?;
    registry.register(Box::new(leader.clone()))?;
    let pocketbase_floods = IntCounter::new(
        "pocketbase_floods_total",
        "Floods of PocketBase writes seen on the realtime stream (640 record frames a second or more)",
    )?;
    registry.register(Box::new(pocketbase_floods.clone()))?;
    let pocketbase_writes_spaced = IntCounter::new(
        "pocketbase_writes_spaced_total",
        "The bridge's PocketBase writes after which the next one waited 100 ms because of a flood",
    )?;
    registry.register(Box::new(pocketbase_writes_spaced.clone()))?;
    let instance_records = IntCounterVec::new(
        Opts::new(
            "instance_records_total",
            "Instance records jobs worked from, by source: the realtime frame or a PocketBase read",
        ),
        &["from"],
    )?;
    for from in ["frame", "pocketbase"] {
        instance_records.with_label_values(&[from]);
    }
    registry.register(Box::new(instance_records.clone()))?;
    let webhook_rejected = IntCounterVec::new(
        Opts::new("webhook_rejected_total", "Webhook deliveries refused, by reason"),
        &["reason"],
    )?;
    for reason in WEBHOOK_REJECTIONS {
        webhook_rejected.with_label_values(&[reason]);
    }
    registry.register(Box::new(webhook_rejected.clone()))?;
    registry.register(Box::new(build_info()?))?;
    let process = Registry::new();
    // The collector reads /proc; the bridge runs on Linux (its image), elsewhere there are no process_*.
    #[cfg(target_os = "linux")]
    process.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;

    Ok(Metrics {
        registry,
        process,
        webhook_rejected,
        events_received,
        events_deduplicated,
        jobs,
        jobs_waiting,
        reconcile_seconds,
        event_to_first_action_seconds,
        coolify_requests,
        coolify_budget_remaining,
        realtime_reconnects,
        realtime_connected,
        last_resync_timestamp,
        orphans,
        instances_health,
        journal_pruned,
        journal_prune_longest_batch,
        journal_health_writes,
        dependency_up,
        instance_records,
        leader,
        pocketbase_floods,
        pocketbase_writes_spaced,
    })
}

/// `cf_bridge_build_info{version, git_sha}` 1: which build answers (`git_sha` when the build knew it).
fn build_info() -> Result<IntGauge, prometheus::Error> {
    let mut opts = Opts::new("build_info", "The running build: version and, when known, git commit")
        .const_label("version", env!("CARGO_PKG_VERSION"));
    if let Some(sha) = option_env!("CF_BRIDGE_GIT_SHA") {
        opts = opts.const_label("git_sha", sha);
    }
    let gauge = IntGauge::with_opts(opts)?;
    gauge.set(1);
    Ok(gauge)
}
