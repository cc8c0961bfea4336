//! Health poller: one Coolify list call per interval for all services. Coolify's status is cached and
//! sometimes wrong, so a running instance turns `error` only after several consecutive bad readings.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use tracing::{info, warn};

use super::context::{ActionLog, Context};
use super::outcome;
use crate::coolify::ServiceStatus;
use crate::events::{Action as EventAction, Collection, EventSink, NewEvent, Source};
use crate::journal::OutboxEntry;
use crate::pocketbase::BatchRequest;
use crate::pocketbase::records::{
    BotInstance, DeployAction, DeployStatus, InstancePatch, InstanceStatus, format_pb_date,
};

/// Marks an `error_message` the poller wrote, so it only clears its own errors.
pub const HEALTH_PREFIX: &str = "health check: ";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// Bad, but not yet for long enough.
    Suspect,
    /// Bad for `threshold` consecutive readings.
    Unhealthy,
    /// Not in Coolify's list at all.
    Missing,
}

/// Pure step: the new streak of bad readings and the verdict for one reading.
pub fn judge(status: Option<&ServiceStatus>, bad_streak: u32, threshold: u32) -> (u32, Verdict) {
    match status {
        None => (0, Verdict::Missing),
        Some(s) if s.is_running() && !s.is_bad() => (0, Verdict::Healthy),
        Some(_) => {
            let streak = bad_streak + 1;
            if streak >= threshold {
                (streak, Verdict::Unhealthy)
            } else {
                (streak, Verdict::Suspect)
            }
        }
    }
}

pub struct HealthPoller {
    ctx: Context,
    interval: Duration,
    threshold: u32,
    streaks: HashMap<String, u32>,
    last_healthy_write: HashMap<String, Instant>,
}

impl super::Periodic for HealthPoller {
    const NAME: &'static str = "health poll";

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn tick(&mut self) -> Result<(), String> {
        self.poll_once().await
    }
}

impl HealthPoller {
    pub fn new(ctx: Context, interval: Duration, threshold: u32) -> Self {
        HealthPoller {
            ctx,
            interval,
            threshold: threshold.max(1),
            streaks: HashMap::new(),
            last_healthy_write: HashMap::new(),
        }
    }

    pub async fn poll_once(&mut self) -> Result<(), String> {
        let services = self
            .ctx
            .coolify
            .list_service_states()
            .await
            .map_err(|e| e.to_string())?;
        let by_uuid: HashMap<String, ServiceStatus> = services.into_iter().map(|s| (s.uuid, s.status)).collect();
        let instances = self
            .ctx
            .pb
            .list_instances(Some(
                "coolify_service_id != '' && (status = 'running' || status = 'error')",
            ))
            .await
            .map_err(|e| e.to_string())?;
        for inst in instances {
            // Only instances the bridge brought up, or that the poller itself marked, are judged here.
            let health_error = inst.status == Some(InstanceStatus::Error)
                && inst
                    .error_message
                    .as_deref()
                    .is_some_and(|m| m.starts_with(HEALTH_PREFIX));
            if inst.status != Some(InstanceStatus::Running) && !health_error {
                continue;
            }
            let Some(service) = inst.coolify_service_id.as_deref() else {
                continue;
            };
            let streak = self.streaks.get(&inst.id).copied().unwrap_or(0);
            let status = by_uuid.get(service);
            let (streak, verdict) = judge(status, streak, self.threshold);
            self.streaks.insert(inst.id.clone(), streak);
            if let Err(e) = self.act(&inst, status, verdict, health_error).await {
                warn!(record_id = %inst.id, error = %e, "health update failed");
            }
        }
        Ok(())
    }

    /// A judgement's patch and row, together. A failed send leaves the row pending: the next look at the
    /// same record version makes the same row (same id), so it is stored once whatever happens.
    async fn commit(&self, inst: &BotInstance, patch: &InstancePatch, row: OutboxEntry) -> Result<(), String> {
        let patch = BatchRequest::patch_instance(&inst.id, patch).map_err(|e| e.to_string())?;
        outcome::commit_own(&self.ctx, &inst.id, patch, row)
            .await
            .map_err(|e| e.to_string())
    }

    async fn act(
        &mut self,
        inst: &BotInstance,
        status: Option<&ServiceStatus>,
        verdict: Verdict,
        health_error: bool,
    ) -> Result<(), String> {
        let pb = &self.ctx.pb;
        match verdict {
            Verdict::Healthy => {
                if health_error {
                    let patch = InstancePatch {
                        status: Some(InstanceStatus::Running),
                        error_message: Some(String::new()),
                        last_healthy_at: Some(chrono::Utc::now()),
                        ..Default::default()
                    };
                    let row = ActionLog::instance(&inst.id, Some(&inst.tenant), true, DeployAction::Start)
                        .keyed(&["health: recovered", &version(inst)])
                        .row(DeployStatus::Success, "health check: service is running again");
                    self.commit(inst, &patch, row).await?;
                    info!(record_id = %inst.id, "instance recovered");
                    self.last_healthy_write.insert(inst.id.clone(), Instant::now());
                } else {
                    // Keep write traffic low: refresh last_healthy_at at most once a minute per instance.
                    let due = self
                        .last_healthy_write
                        .get(&inst.id)
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
                    if due {
                        let patch = InstancePatch {
                            last_healthy_at: Some(chrono::Utc::now()),
                            ..Default::default()
                        };
                        pb.patch_instance(&inst.id, &patch).await.map_err(|e| e.to_string())?;
                        self.last_healthy_write.insert(inst.id.clone(), Instant::now());
                    }
                }
            }
            Verdict::Suspect => {}
            Verdict::Unhealthy => {
                if !health_error {
                    let shown = status.map(ToString::to_string).unwrap_or_default();
                    let service = inst.coolify_service_id.clone().unwrap_or_default();
                    let message = format!(
                        "{HEALTH_PREFIX}service {service} reads {shown} for {} consecutive checks",
                        self.threshold
                    );
                    let patch = InstancePatch {
                        status: Some(InstanceStatus::Error),
                        error_message: Some(message.clone()),
                        ..Default::default()
                    };
                    let row = ActionLog::instance(&inst.id, Some(&inst.tenant), true, DeployAction::Error)
                        .keyed(&["health: unhealthy", &version(inst)])
                        .row(DeployStatus::Failed, message);
                    self.commit(inst, &patch, row).await?;
                    warn!(record_id = %inst.id, coolify_uuid = %service, status = %shown, "instance unhealthy");
                }
            }
            Verdict::Missing => {
                // The service vanished from Coolify: let the reconciler recreate it.
                let service = inst.coolify_service_id.clone().unwrap_or_default();
                let updated = inst.updated.as_ref().map(format_pb_date).unwrap_or_default();
                let event = NewEvent {
                    source: Source::Resync,
                    collection: Collection::BotInstances,
                    record_id: inst.id.clone(),
                    action: EventAction::Update,
                    record_updated: Some(updated.clone()),
                    dedupe_key: format!("health-missing:{}:{service}:{updated}", inst.id),
                    delivery_id: None,
                    payload: json!({"reason": "service missing from Coolify"}),
                    fingerprint: None,
                };
                let patch = InstancePatch {
                    applied_hash: Some(String::new()),
                    ..Default::default()
                };
                pb.patch_instance(&inst.id, &patch).await.map_err(|e| e.to_string())?;
                self.ctx.journal.ingest(event).await.map_err(|e| e.to_string())?;
                warn!(record_id = %inst.id, coolify_uuid = %service, "service missing from Coolify; scheduled a redeploy");
            }
        }
        Ok(())
    }
}

/// The record version a judgement was made on.
fn version(inst: &BotInstance) -> String {
    inst.updated.as_ref().map(format_pb_date).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_only_after_consecutive_bad_readings() {
        let bad = ServiceStatus::parse("exited");
        let good = ServiceStatus::parse("running:healthy");
        let degraded = ServiceStatus::parse("degraded:unhealthy");
        let (s, v) = judge(Some(&bad), 0, 3);
        assert_eq!((s, v), (1, Verdict::Suspect));
        let (s, v) = judge(Some(&degraded), s, 3);
        assert_eq!((s, v), (2, Verdict::Suspect));
        let (s, v) = judge(Some(&good), s, 3);
        assert_eq!((s, v), (0, Verdict::Healthy), "one good reading resets the streak");
        let mut streak = 0;
        let mut verdict = Verdict::Healthy;
        for _ in 0..3 {
            (streak, verdict) = judge(Some(&bad), streak, 3);
        }
        assert_eq!(verdict, Verdict::Unhealthy);
        assert_eq!(judge(None, 5, 3), (0, Verdict::Missing));
        let unhealthy = ServiceStatus::parse("running:unhealthy");
        assert_eq!(judge(Some(&unhealthy), 0, 1).1, Verdict::Unhealthy);
        let unknown = ServiceStatus::parse("running:unknown");
        assert_eq!(
            judge(Some(&unknown), 0, 1).1,
            Verdict::Healthy,
            "no healthcheck is normal for bots"
        );
    }
}
