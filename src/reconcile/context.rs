//! What the executors share: clients, journal, templates, secrets and settings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use super::judgement::HealthBoard;
use crate::config::Settings;
use crate::coolify::{CoolifyClient, CoolifyError, ServiceStatus};
use crate::intake::Intake;
use crate::journal::Journal;
use crate::pocketbase::PbClient;
use crate::pocketbase::records::{DeployAction, DeployStatus, NewDeployLog};
use crate::secrets::SecretStore;
use crate::templates::TemplateSet;

/// Service statuses for every waiting reconcile from one `GET /services` per round, rather than one call
/// per waiting service: Coolify's rate limit is shared by everything the bridge does. Rounds are at least
/// `interval` apart, and further apart when the list is slow (a large fleet answers in megabytes), so
/// that polling never takes more than a tenth of Coolify's time.
pub struct StatusBoard {
    coolify: CoolifyClient,
    interval: Duration,
    seen: tokio::sync::Mutex<Option<Reading>>,
}

struct Reading {
    /// When the list was asked for: the statuses are at least this new.
    asked: Instant,
    took: Duration,
    statuses: HashMap<String, ServiceStatus>,
}

/// Rounds are spaced by at least this many times the last list's duration.
const LIST_DUTY_FACTOR: u32 = 10;
/// The shortest gap between status lists for reconciles waiting on `running:*` (one list serves all).
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The most of the Coolify budget that status lists may take while reconciles wait.
const BUDGET_SHARE: f64 = 0.15;

impl StatusBoard {
    /// The gap between lists: at least `MIN_INTERVAL`, and wide enough that lists take no more than
    /// `BUDGET_SHARE` of the budget (2.2 s at the default 180/min). A start takes Coolify a minute or two,
    /// so a few seconds more per wait costs little; the calls saved go to work.
    pub fn interval_for(requests_per_minute: u32) -> Duration {
        let share = 60.0 / (f64::from(requests_per_minute.max(1)) * BUDGET_SHARE);
        MIN_INTERVAL.max(Duration::from_secs_f64(share))
    }

    pub fn new(coolify: CoolifyClient, interval: Duration) -> Self {
        StatusBoard {
            coolify,
            interval,
            seen: tokio::sync::Mutex::new(None),
        }
    }

    /// The service's status from a list asked for at or after `after`, and when that list was asked
    /// for; `None` when Coolify does not list the service. Waits for the next round when the latest
    /// reading is older than `after`.
    pub async fn status_after(
        &self,
        uuid: &str,
        after: Instant,
    ) -> Result<(Instant, Option<ServiceStatus>), CoolifyError> {
        // Holding the lock across the wait and the fetch makes concurrent waiters share one list call.
        let mut seen = self.seen.lock().await;
        let stale = match seen.as_ref() {
            Some(r) if r.asked >= after => None,
            Some(r) => Some(r.asked + self.interval.max(r.took * LIST_DUTY_FACTOR)),
            None => Some(Instant::now()),
        };
        if let Some(next_round) = stale {
            tokio::time::sleep_until(next_round.max(after).into()).await;
            let asked = Instant::now();
            let services = self.coolify.list_service_states().await?;
            *seen = Some(Reading {
                asked,
                took: asked.elapsed(),
                statuses: services.into_iter().map(|s| (s.uuid, s.status)).collect(),
            });
        }
        Ok(seen
            .as_ref()
            .map(|r| (r.asked, r.statuses.get(uuid).cloned()))
            .unwrap_or((after, None)))
    }
}

/// Everything a reconcile needs; cheap to clone.
#[derive(Clone)]
pub struct Context {
    pub pb: PbClient,
    pub coolify: CoolifyClient,
    pub journal: Journal,
    pub templates: Arc<TemplateSet>,
    pub secrets: Arc<SecretStore>,
    pub settings: Arc<Settings>,
    /// The Coolify server new services go to (`coolify.server_uuid`, or the one found at start).
    pub server_uuid: Arc<str>,
    pub statuses: Arc<StatusBoard>,
    /// Where the executors' own events go (a tenant waking its instances).
    pub intake: Intake,
    /// The health poller's judgements, which each instance's job applies to its record.
    pub health: Arc<HealthBoard>,
}

/// The deterministic Coolify name of a tenant's project.
pub fn project_name(slug: &str) -> String {
    format!("cf-{slug}")
}

/// The deterministic Coolify name of an instance's service.
pub fn service_name(instance_id: &str) -> String {
    format!("cf-{instance_id}")
}

pub fn project_intent_key(tenant_id: &str) -> String {
    format!("project:{tenant_id}")
}

pub fn service_intent_key(instance_id: &str) -> String {
    format!("service:{instance_id}")
}

/// Times one action and writes its `deploy_logs` row.
pub struct ActionLog<'a> {
    ctx: &'a Context,
    record_id: String,
    collection: &'static str,
    instance: Option<String>,
    tenant: Option<String>,
    action: DeployAction,
    started: Instant,
}

impl<'a> ActionLog<'a> {
    pub fn instance(
        ctx: &'a Context,
        instance_id: &str,
        tenant_id: Option<&str>,
        live: bool,
        action: DeployAction,
    ) -> Self {
        ActionLog {
            ctx,
            record_id: instance_id.to_string(),
            collection: "bot_instances",
            instance: live.then(|| instance_id.to_string()),
            tenant: tenant_id.map(str::to_string),
            action,
            started: Instant::now(),
        }
    }

    pub fn tenant(ctx: &'a Context, tenant_id: &str, live: bool, action: DeployAction) -> Self {
        ActionLog {
            ctx,
            record_id: tenant_id.to_string(),
            collection: "tenants",
            instance: None,
            tenant: live.then(|| tenant_id.to_string()),
            action,
            started: Instant::now(),
        }
    }

    pub async fn finish(self, status: DeployStatus, message: impl Into<String>) {
        let message = message.into();
        let row = NewDeployLog {
            instance: self.instance,
            record_id: self.record_id.clone(),
            collection: self.collection.to_string(),
            tenant: self.tenant,
            action: self.action,
            status,
            message: message.clone(),
            triggered_by: "cf-bridge".to_string(),
            duration_ms: self.started.elapsed().as_millis() as u64,
        };
        if let Err(e) = self.ctx.pb.create_deploy_log(&row).await {
            // The action itself happened; a lost log row must not fail or repeat it.
            tracing::warn!(record_id = %self.record_id, action = ?row.action, error = %e, "could not write deploy_logs row");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_take_a_bounded_share_of_the_budget() {
        let gap = StatusBoard::interval_for(180);
        assert!((gap.as_secs_f64() - 60.0 / 27.0).abs() < 0.01, "{gap:?}");
        assert_eq!(StatusBoard::interval_for(100_000), MIN_INTERVAL);
        assert!(StatusBoard::interval_for(1) > Duration::from_secs(60));
    }
}
