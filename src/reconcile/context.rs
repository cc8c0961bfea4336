//! What the executors share: clients, journal, templates, secrets and settings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use crate::coolify::{CoolifyClient, CoolifyError, ServiceStatus};
use crate::journal::Journal;
use crate::pocketbase::PbClient;
use crate::pocketbase::records::{DeployAction, DeployStatus, NewDeployLog};
use crate::quota::Ceiling;
use crate::secrets::SecretStore;
use crate::templates::TemplateSet;

/// Settings the executors need, taken from the validated config.
pub struct ReconcileSettings {
    pub base_domain: String,
    pub router_base_url: String,
    pub environment: String,
    pub server_uuid: String,
    pub running_timeout: Duration,
    pub sovereign: Ceiling,
    /// Key for `secrets_hash` and the per-stack router key.
    pub secrets_key: crate::secrets::SecretBytes,
}

/// Service statuses for every waiting reconcile from one `GET /services` per interval, rather than one
/// call per waiting service: Coolify's rate limit is shared by everything the bridge does.
pub struct StatusBoard {
    coolify: CoolifyClient,
    interval: Duration,
    seen: tokio::sync::Mutex<Option<(Instant, HashMap<String, ServiceStatus>)>>,
}

impl StatusBoard {
    pub fn new(coolify: CoolifyClient, interval: Duration) -> Self {
        StatusBoard {
            coolify,
            interval,
            seen: tokio::sync::Mutex::new(None),
        }
    }

    /// The service's status, read after `since` (the moment its start was asked for) and no older than
    /// the interval; `None` when Coolify does not list it.
    pub async fn status(&self, uuid: &str, since: Instant) -> Result<Option<ServiceStatus>, CoolifyError> {
        // Holding the lock across the fetch makes concurrent waiters share one list call.
        let mut seen = self.seen.lock().await;
        let fresh = seen
            .as_ref()
            .is_some_and(|(at, _)| *at >= since && at.elapsed() < self.interval);
        if !fresh {
            let services = self.coolify.list_services().await?;
            *seen = Some((
                Instant::now(),
                services.into_iter().map(|s| (s.uuid, s.status)).collect(),
            ));
        }
        Ok(seen.as_ref().and_then(|(_, m)| m.get(uuid).cloned()))
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
    pub settings: Arc<ReconcileSettings>,
    pub statuses: Arc<StatusBoard>,
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
