//! Health poller: one Coolify list per interval for all services (shared with the drift check and the
//! orphan scan, see [`crate::coolify::fleet`]). Coolify's status is cached and
//! sometimes wrong, so a running instance turns `error` only after several consecutive bad readings.
//! The poller keeps its judgements in memory ([`super::judgement::HealthBoard`]) and journals a `health` event when one
//! asks for a change the record does not show; the instance's job writes `status`, `error_message` and
//! `last_healthy_at` (only a record's job writes its observed state). A healthy fleet therefore costs
//! PocketBase no write: live health (last seen healthy) is in memory, shown by the admin API and metrics.
//! Nor a read each round: the instances listed are kept until the intake has seen an instance change or a
//! resync pass ([`crate::intake::Intake::instance_changes`]), so an idle fleet is listed once per resync
//! interval instead of once per poll, by the pass, whose listing the poller takes (one slot in the
//! PocketBase client holds either).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use tracing::{info, warn};

use super::context::Context;
use super::error::ReconcileError;
use super::judgement::{
    Judgement, LiveHealth, Verdict, announced_already, health_write, is_health_error, judge, last_seen_healthy,
};
use crate::coolify::budget::Priority;
use crate::events::{Action as EventAction, Collection, NewEvent, SinkError, Source};
use crate::pocketbase::EmptyTail;
use crate::pocketbase::records::{InstanceStatus, WatchedInstance, format_pb_date};

/// Reads Coolify's statuses, judges them, and hands a changed judgement to the instance's job through
/// the intake. It writes nothing to PocketBase itself.
pub struct HealthPoller {
    ctx: Context,
    interval: Duration,
    threshold: u32,
    /// The fleet pass judged last.
    last_pass: Option<u64>,
}

impl super::Periodic for HealthPoller {
    const NAME: &'static str = "health poll";

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn tick(&mut self) -> Result<(), ReconcileError> {
        self.poll_once().await
    }
}

impl HealthPoller {
    pub fn new(ctx: Context, interval: Duration, threshold: u32) -> Self {
        HealthPoller {
            ctx,
            interval,
            threshold: threshold.max(1),
            last_pass: None,
        }
    }

    pub async fn poll_once(&mut self) -> Result<(), ReconcileError> {
        let _turn = self.ctx.turns.take().await;
        // Another task's pass read within the interval serves as this round's reading, never twice.
        let fleet = self
            .ctx
            .coolify
            .fleet(self.interval, self.last_pass, Priority::Urgent)
            .await?;
        self.last_pass = Some(fleet.pass);
        let changes = self.ctx.intake.instance_changes();
        // The last listing, this poller's or the resync pass's that moved the count, if it is current.
        let instances = match self.ctx.pb.take_watched(changes) {
            Some(instances) => instances,
            None => {
                self.ctx
                    .pb
                    .list_instances_with(Some(WatchedInstance::FILTER), EmptyTail::Trust)
                    .await?
            }
        };
        let now = chrono::Utc::now();
        // The board is judged in place, a second board of the fleet each poll being the poll's largest
        // allocation; the jobs are woken after, the lock released, and find the new judgement there.
        let mut wakes = Vec::new();
        self.ctx.health.update(|board| {
            let mut watched = HashSet::with_capacity(instances.len());
            for inst in &instances {
                // Only instances the bridge brought up, or that it marked unhealthy, are judged here.
                let health_error = is_health_error(inst.status, inst.error_message.as_deref());
                if inst.status != Some(InstanceStatus::Running) && !health_error {
                    continue;
                }
                let Some(service) = inst.coolify_service_id.as_deref() else {
                    continue;
                };
                watched.insert(inst.id.as_str());
                // A record changed since the reading (a service just created, say) is judged at the next one.
                if inst.updated.is_some_and(|u| u > fleet.read_at) {
                    continue;
                }
                let status = fleet.service(service).map(|s| &s.status);
                let previous = board.get(&inst.id);
                let bad_streak = previous.map_or(0, |l| l.bad_streak);
                let (bad_streak, verdict) = judge(status, bad_streak, self.threshold);
                let judgement = Judgement::of(verdict, service, status, self.threshold);
                let asks = health_write(inst.status, inst.error_message.as_deref(), Some(&judgement));
                if asks.is_some() || verdict == Verdict::Missing {
                    wakes.push((inst, service, judgement.clone()));
                }
                let seen_healthy = previous.and_then(|l| l.last_seen_healthy);
                let announced = announced_already(previous, verdict);
                let live = LiveHealth {
                    last_seen_healthy: last_seen_healthy(verdict, now, seen_healthy, inst.last_healthy_at),
                    judgement,
                    checked_at: now,
                    bad_streak,
                    announced,
                };
                match board.get_mut(&inst.id) {
                    Some(entry) => *entry = live,
                    None => {
                        board.insert(inst.id.clone(), live);
                    }
                }
            }
            board.retain(|id, _| watched.contains(id.as_str()));
        });
        for (inst, service, judgement) in wakes {
            if let Err(e) = self.wake(inst, service, &judgement).await {
                warn!(record_id = %inst.id, error = %e, "health judgement not handed to the instance's job");
            }
        }
        self.ctx.pb.keep_watched(changes, instances);
        let counts = self.ctx.health.counts();
        let gauge = &self.ctx.intake.metrics().instances_health;
        for verdict in Verdict::ALL {
            let n = counts.get(&verdict).copied().unwrap_or(0);
            gauge.with_label_values(&[verdict.as_str()]).set(n as i64);
        }
        Ok(())
    }

    /// Journals a health event for the instance, once per judgement and record version.
    async fn wake(&self, inst: &WatchedInstance, service: &str, judgement: &Judgement) -> Result<(), SinkError> {
        let updated = inst.updated.as_ref().map(format_pb_date).unwrap_or_default();
        let verdict = judgement.verdict.as_str();
        let event = NewEvent {
            source: Source::Health,
            collection: Collection::BotInstances,
            record_id: inst.id.to_string(),
            action: EventAction::Update,
            record_updated: Some(updated.clone()),
            dedupe_key: format!("health:{}:{service}:{verdict}:{updated}", inst.id),
            delivery_id: None,
            payload: json!({"reason": format!("service {verdict}"), "coolify_uuid": service}),
            fingerprint: None,
            trace_context: None,
        };
        self.ctx.intake.submit(event).await?;
        match judgement.verdict {
            Verdict::Missing => {
                warn!(record_id = %inst.id, coolify_uuid = %service, "service missing from Coolify; scheduled a redeploy")
            }
            Verdict::Unhealthy => warn!(record_id = %inst.id, coolify_uuid = %service, "instance unhealthy"),
            _ => info!(record_id = %inst.id, coolify_uuid = %service, "instance recovered"),
        }
        Ok(())
    }
}
