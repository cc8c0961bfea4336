//! Health poller: one Coolify list call per interval for all services. Coolify's status is cached and
//! sometimes wrong, so a running instance turns `error` only after several consecutive bad readings.
//! The poller keeps its judgements in memory ([`HealthBoard`]) and journals a `health` event when one
//! asks for a change the record does not show; the instance's job writes `status`, `error_message` and
//! `last_healthy_at` (only a record's job writes its observed state).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;
use tracing::{info, warn};

use super::context::Context;
use super::error::ReconcileError;
use crate::coolify::ServiceStatus;
use crate::events::{Action as EventAction, Collection, NewEvent, SinkError, Source};
use crate::pocketbase::records::{BotInstance, InstanceStatus, format_pb_date};

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

/// What the poller thinks of one instance's service, kept in memory for the instance's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    /// For `Unhealthy`: the `error_message` the record should show.
    pub message: String,
}

/// What a record's job writes for the health judgement of its service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthWrite {
    /// Running again: `running`, the health error cleared, `last_healthy_at` now.
    Recovered,
    /// Bad for long enough: `error` with this message.
    Unhealthy(String),
}

/// Pure step: what the record must show for `judgement`, given what it shows now. Only the poller's own
/// error is ever cleared; an instance that is not running is left to its job's other work.
pub fn health_write(
    status: Option<InstanceStatus>,
    error_message: Option<&str>,
    judgement: Option<&Judgement>,
) -> Option<HealthWrite> {
    let health_error =
        status == Some(InstanceStatus::Error) && error_message.is_some_and(|m| m.starts_with(HEALTH_PREFIX));
    match judgement.map(|j| (j.verdict, &j.message)) {
        Some((Verdict::Healthy, _)) if health_error => Some(HealthWrite::Recovered),
        Some((Verdict::Unhealthy, message)) if status == Some(InstanceStatus::Running) => {
            Some(HealthWrite::Unhealthy(message.clone()))
        }
        _ => None,
    }
}

/// The poller's latest judgements, by instance id. Only the instance's job acts on them.
#[derive(Debug, Default)]
pub struct HealthBoard(Mutex<HashMap<String, Judgement>>);

impl HealthBoard {
    pub fn get(&self, instance_id: &str) -> Option<Judgement> {
        self.lock().get(instance_id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Judgement>> {
        // Plain data: a panic elsewhere cannot leave it half-written in a way that matters.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Reads Coolify's statuses, judges them, and hands a changed judgement to the instance's job through
/// the intake. It writes nothing to PocketBase itself.
pub struct HealthPoller {
    ctx: Context,
    interval: Duration,
    threshold: u32,
    streaks: HashMap<String, u32>,
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
            streaks: HashMap::new(),
        }
    }

    pub async fn poll_once(&mut self) -> Result<(), ReconcileError> {
        let services = self.ctx.coolify.list_service_states().await?;
        let by_uuid: HashMap<String, ServiceStatus> = services.into_iter().map(|s| (s.uuid, s.status)).collect();
        let instances = self
            .ctx
            .pb
            .list_instances(Some(
                "coolify_service_id != '' && (status = 'running' || status = 'error')",
            ))
            .await?;
        let mut judged = HashMap::new();
        for inst in instances {
            // Only instances the bridge brought up, or that it marked unhealthy, are judged here.
            let health_error = inst.status == Some(InstanceStatus::Error)
                && inst
                    .error_message
                    .as_deref()
                    .is_some_and(|m| m.starts_with(HEALTH_PREFIX));
            if inst.status != Some(InstanceStatus::Running) && !health_error {
                continue;
            }
            let Some(service) = inst.coolify_service_id.clone() else {
                continue;
            };
            let status = by_uuid.get(&service);
            let (streak, verdict) = judge(status, self.streaks.get(&inst.id).copied().unwrap_or(0), self.threshold);
            self.streaks.insert(inst.id.clone(), streak);
            let shown = status.map(ToString::to_string).unwrap_or_default();
            let judgement = Judgement {
                verdict,
                message: format!(
                    "{HEALTH_PREFIX}service {service} reads {shown} for {} consecutive checks",
                    self.threshold
                ),
            };
            let asks = health_write(inst.status, inst.error_message.as_deref(), Some(&judgement));
            if (asks.is_some() || verdict == Verdict::Missing)
                && let Err(e) = self.wake(&inst, &service, &judgement).await
            {
                warn!(record_id = %inst.id, error = %e, "health judgement not handed to the instance's job");
            }
            judged.insert(inst.id, judgement);
        }
        self.streaks.retain(|id, _| judged.contains_key(id));
        *self.ctx.health.lock() = judged;
        Ok(())
    }

    /// Journals a health event for the instance, once per judgement and record version.
    async fn wake(&self, inst: &BotInstance, service: &str, judgement: &Judgement) -> Result<(), SinkError> {
        let updated = inst.updated.as_ref().map(format_pb_date).unwrap_or_default();
        let verdict = format!("{:?}", judgement.verdict).to_ascii_lowercase();
        let event = NewEvent {
            source: Source::Health,
            collection: Collection::BotInstances,
            record_id: inst.id.clone(),
            action: EventAction::Update,
            record_updated: Some(updated.clone()),
            dedupe_key: format!("health:{}:{service}:{verdict}:{updated}", inst.id),
            delivery_id: None,
            payload: json!({"reason": format!("service {verdict}"), "coolify_uuid": service}),
            fingerprint: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_writes_only_what_the_judgement_changes() {
        let j = |verdict| Judgement {
            verdict,
            message: "health check: service s reads exited for 3 consecutive checks".into(),
        };
        let running = Some(InstanceStatus::Running);
        let error = Some(InstanceStatus::Error);
        let ours = Some("health check: service s reads exited for 3 consecutive checks");
        assert_eq!(
            health_write(running, None, Some(&j(Verdict::Unhealthy))),
            Some(HealthWrite::Unhealthy(j(Verdict::Unhealthy).message))
        );
        assert_eq!(
            health_write(error, ours, Some(&j(Verdict::Unhealthy))),
            None,
            "already shown"
        );
        assert_eq!(
            health_write(error, ours, Some(&j(Verdict::Healthy))),
            Some(HealthWrite::Recovered)
        );
        assert_eq!(
            health_write(error, Some("quota exceeded"), Some(&j(Verdict::Healthy))),
            None,
            "another error is not the poller's to clear"
        );
        assert_eq!(health_write(running, None, Some(&j(Verdict::Healthy))), None);
        assert_eq!(health_write(running, None, Some(&j(Verdict::Suspect))), None);
        assert_eq!(health_write(running, None, Some(&j(Verdict::Missing))), None);
        assert_eq!(
            health_write(Some(InstanceStatus::Stopped), None, Some(&j(Verdict::Unhealthy))),
            None
        );
        assert_eq!(health_write(running, None, None), None, "no judgement yet");
    }

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
