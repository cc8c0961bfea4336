//! Tenant executor: one Coolify project per tenant; status and plan changes wake the tenant's instances.

use std::time::Duration;

use serde_json::json;
use tracing::{info, warn};

use super::actor::{Actor, RunActor};
use super::context::{ActionLog, Context, project_intent_key, project_name};
use super::error::ReconcileError;
use super::outcome;
use super::plan::{self, DeletedTenantAction, TenantAction, TenantInput};
use super::retention;
use crate::backoff::Backoff;
use crate::coolify::{CoolifyError, Project};
use crate::events::{Action as EventAction, Collection, NewEvent, Source};
use crate::hostname::{self, HostnameError};
use crate::pocketbase::records::{DeployAction, DeployStatus, Tenant, TenantPatch, filter_quote, format_pb_date};
use crate::pocketbase::{BatchRequest, PbError};

/// How long a deleted tenant's project delete keeps retrying "has resources" within one attempt.
const PROJECT_DELETE_PATIENCE: Duration = Duration::from_secs(120);

/// Reconciles one tenant; returns the record's `updated` when it is live, `None` once destroyed.
/// `run`: who caused the run; a project is created for whoever last changed the tenant.
pub async fn reconcile(ctx: &Context, id: &str, run: &RunActor) -> Result<Option<String>, ReconcileError> {
    let Some(tenant) = ctx.pb.get_tenant(id).await? else {
        destroy(ctx, id, run).await?;
        return Ok(None);
    };
    // Before the instances are listed (`fan_out`): an instance created after that listing is not woken,
    // so its job must not take an older version of the tenant from `latest` than this one.
    ctx.intake.latest().learned(None, Some(&tenant), None);
    if tenant.deletion_requested_at.is_some() {
        return retire(ctx, &tenant, run).await;
    }
    // Before the instances are woken: they read the domain this settles.
    settle_domain(ctx, &tenant).await?;
    let observed = observe_project(ctx, &tenant).await?;
    let actions = plan::plan_tenant(&TenantInput {
        recorded_project: tenant.coolify_project_uuid.clone(),
        observed_project: observed.clone(),
    });
    let mut project = observed;
    for action in actions {
        match action {
            TenantAction::CreateProject => {
                let uuid = create_project(
                    ctx,
                    &tenant,
                    &Actor::of_action(run.named(), tenant.changed_by.as_deref(), true),
                )
                .await?;
                write_project(ctx, &tenant, uuid.clone()).await?;
                project = Some(uuid);
            }
            TenantAction::WriteProjectUuid(uuid) => {
                write_project(ctx, &tenant, uuid.clone()).await?;
                project = Some(uuid);
            }
            TenantAction::FanOutInstances => fan_out(ctx, &tenant, project.as_deref(), run.named()).await?,
        }
    }
    Ok(Some(tenant.updated.as_ref().map(format_pb_date).unwrap_or_default()))
}

/// The project's uuid on the record, with the rows of the actions that made it.
async fn write_project(ctx: &Context, tenant: &Tenant, uuid: String) -> Result<(), ReconcileError> {
    let patch = TenantPatch {
        coolify_project_uuid: Some(uuid),
        bridge_error: Some(String::new()),
    };
    let patch = BatchRequest::patch_tenant(&tenant.id, &patch)?;
    outcome::commit(ctx, Collection::Tenants, &tenant.id, Some(patch), None).await
}

async fn observe_project(ctx: &Context, tenant: &Tenant) -> Result<Option<String>, ReconcileError> {
    if let Some(uuid) = &tenant.coolify_project_uuid {
        match ctx.coolify.get_project(uuid).await {
            Ok(p) => return Ok(Some(p.project.uuid)),
            Err(CoolifyError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(intent) = ctx.journal.get_intent(&project_intent_key(&tenant.id)).await?
        && let Some(uuid) = intent.coolify_uuid
    {
        match ctx.coolify.get_project(&uuid).await {
            Ok(p) => return Ok(Some(p.project.uuid)),
            Err(CoolifyError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let found = ctx.coolify.find_projects_by_name(&project_name(&tenant.slug)).await?;
    match found
        .into_iter()
        .filter(|p| !of_other_tenant(p, &tenant.id))
        .min_by_key(|p| p.id)
    {
        Some(p) => {
            let key = project_intent_key(&tenant.id);
            ctx.journal
                .put_intent(&key, "project", &project_name(&tenant.slug))
                .await?;
            ctx.journal.resolve_intent(&key, &p.uuid).await?;
            info!(record_id = %tenant.id, coolify_uuid = %p.uuid, "adopted existing project");
            Ok(Some(p.uuid))
        }
        None => Ok(None),
    }
}

const PROJECT_DESCRIPTION: &str = "CloudFreedom tenant ";

/// Whether the project was made for another tenant: a deleted tenant's slug taken by a new tenant must
/// not hand the new one the old project (whose deletion may still be under way).
fn of_other_tenant(project: &Project, tenant_id: &str) -> bool {
    project
        .description
        .as_deref()
        .and_then(|d| d.strip_prefix(PROJECT_DESCRIPTION))
        .is_some_and(|owner| owner != tenant_id)
}

async fn create_project(ctx: &Context, tenant: &Tenant, actor: &Actor) -> Result<String, ReconcileError> {
    let key = project_intent_key(&tenant.id);
    let name = project_name(&tenant.slug);
    ctx.journal.put_intent(&key, "project", &name).await?;
    let log = ActionLog::tenant(&tenant.id, true, DeployAction::ProjectCreate).by(actor);
    let description = format!("{PROJECT_DESCRIPTION}{}", tenant.id);
    let result = match ctx.coolify.create_project(&name, Some(&description)).await {
        Ok(uuid) => Ok(uuid),
        Err(e) if e.is_ambiguous() => {
            // Never POST twice: the lost response may have created it.
            match ctx.coolify.find_projects_by_name(&name).await {
                Ok(found) => match found
                    .into_iter()
                    .filter(|p| !of_other_tenant(p, &tenant.id))
                    .min_by_key(|p| p.id)
                {
                    Some(p) => Ok(p.uuid),
                    None => Err(ReconcileError::from(e)),
                },
                Err(lookup) => Err(ReconcileError::from(lookup)),
            }
        }
        Err(e) => Err(ReconcileError::from(e)),
    };
    match result {
        Ok(uuid) => {
            ctx.journal.resolve_intent(&key, &uuid).await?;
            log.keep(ctx, DeployStatus::Success, format!("project {name} ({uuid}) ready"))
                .await?;
            info!(record_id = %tenant.id, coolify_uuid = %uuid, "project created");
            Ok(uuid)
        }
        Err(e) => {
            let message = format!("could not create Coolify project {name}: {}", e.tenant_message());
            warn!(record_id = %tenant.id, error = %e, "project create failed");
            let row = log.row(DeployStatus::Failed, message.clone());
            let patch = TenantPatch {
                coolify_project_uuid: None,
                bridge_error: Some(message),
            };
            let patch = BatchRequest::patch_tenant(&tenant.id, &patch)?;
            if let Err(pe) = outcome::commit(ctx, Collection::Tenants, &tenant.id, Some(patch), Some(row)).await {
                warn!(record_id = %tenant.id, error = %pe, "could not record the failure on the tenant yet");
            }
            Err(e)
        }
    }
}

/// The tenant's custom domain in ASCII form once verified (`None`: its instances are served under the base
/// domain); an error when the domain it holds is not a hostname a DNS admin would accept.
fn custom_domain(tenant: &Tenant, base_domain: &str) -> Result<Option<String>, HostnameError> {
    let Some(domain) = tenant.domain.as_deref().filter(|d| !d.trim().is_empty()) else {
        return Ok(None);
    };
    let ascii = hostname::tenant_domain(domain, base_domain)?;
    Ok(tenant.domain_verified.then_some(ascii))
}

/// Decides the domain the tenant's instances are served under (kept in the journal, where they read it): its
/// verified custom domain, unless it is no hostname or another tenant holds it (the same name spelled
/// otherwise); then the instances stay where they are served and the tenant shows why. The message names no
/// other tenant. `bridge_error` is written only when it changes; a project failure's message is left alone.
async fn settle_domain(ctx: &Context, tenant: &Tenant) -> Result<(), ReconcileError> {
    let refused = match custom_domain(tenant, &ctx.settings.domains.base_domain) {
        Err(e) => Some(e.to_string()),
        Ok(domain) => (!ctx.journal.hold_tenant_domain(&tenant.id, domain.as_deref()).await?)
            .then(|| "is held by another tenant".to_string()),
    };
    let problem = refused
        .map(|why| format!("custom domain {why}; its instances stay where they are served"))
        .unwrap_or_default();
    let shown = tenant.bridge_error.as_deref().unwrap_or_default();
    let ours = shown.starts_with("custom domain ");
    if shown == problem || (problem.is_empty() && !ours) {
        return Ok(());
    }
    let patch = TenantPatch {
        coolify_project_uuid: None,
        bridge_error: Some(problem),
    };
    let written = ctx.pb.patch_tenant(&tenant.id, &patch).await;
    // As for every write of the bridge's (see `outcome::commit`).
    let latest = ctx.intake.latest();
    match &written {
        Ok(t) => latest.learned(None, Some(t), None),
        Err(_) => latest.wrote(Collection::Tenants, &tenant.id, None),
    }
    written?;
    Ok(())
}

/// What the tenant's instances read of it (`instance::desire`: project, plan, stack count, slug, status).
/// A tenant edit that leaves this unchanged (its name, its user, the bridge's own write-back of what the
/// job already knew) wakes none of them.
fn instance_facing(tenant: &Tenant, project: Option<&str>) -> String {
    let facing = format!(
        "{:?}|{:?}|{}|{}|{}",
        tenant.status,
        tenant.plan_tier,
        tenant.max_stacks,
        tenant.slug,
        project.unwrap_or_default()
    );
    // Only a deleting tenant or one with a custom domain says so, so every other tenant's noted value stays
    // as it was.
    let facing = if tenant.deletion_requested_at.is_some() {
        facing + "|deleting"
    } else {
        facing
    };
    match (&tenant.domain, tenant.domain_verified) {
        (Some(domain), verified) => format!("{facing}|domain={domain}:{verified}"),
        (None, _) => facing,
    }
}

fn fan_out_note(tenant_id: &str) -> String {
    format!("tenant-fanout:{tenant_id}")
}

/// Status, plan and project changes affect every instance of the tenant: wake them all, once per change
/// of what they read of the tenant (noted in the journal after the wake-ups are journaled).
/// `actor`: who changed the tenant, carried to the instances' runs (see `actor::Actor::of_tenant_wake`).
async fn fan_out(
    ctx: &Context,
    tenant: &Tenant,
    project: Option<&str>,
    actor: Option<&Actor>,
) -> Result<(), ReconcileError> {
    let facing = instance_facing(tenant, project);
    let note = fan_out_note(&tenant.id);
    if ctx.journal.note(&note).await?.as_deref() == Some(facing.as_str()) {
        return Ok(());
    }
    let instances = ctx
        .pb
        .list_instances(Some(&format!("tenant = {}", filter_quote(&tenant.id))))
        .await?;
    let tenant_updated = tenant.updated.as_ref().map(format_pb_date).unwrap_or_default();
    for inst in instances {
        let inst_updated = inst.updated.as_ref().map(format_pb_date).unwrap_or_default();
        let event = NewEvent {
            source: Source::Tenant,
            collection: Collection::BotInstances,
            record_id: inst.id.clone(),
            action: EventAction::Update,
            record_updated: Some(inst_updated.clone()),
            // One wake-up per tenant version and instance version.
            dedupe_key: format!(
                "tenant-fanout:{}:{tenant_updated}:{}:{inst_updated}",
                tenant.id, inst.id
            ),
            delivery_id: None,
            payload: json!({"reason": "tenant changed", "tenant": tenant.id,
                             "changed_by": actor.map(Actor::triggered_by)}),
            fingerprint: None,
            trace_context: None,
        };
        ctx.intake.submit(event).await?;
    }
    ctx.journal.note_changed(&note, &facing).await?;
    Ok(())
}

/// The tenant asks for its deletion: its instances are woken to enter their retention (each is deleted when
/// its retention ends, which wakes this job again); once none is left, its project and its record go.
async fn retire(ctx: &Context, tenant: &Tenant, run: &RunActor) -> Result<Option<String>, ReconcileError> {
    let updated = tenant.updated.as_ref().map(format_pb_date).unwrap_or_default();
    fan_out(ctx, tenant, tenant.coolify_project_uuid.as_deref(), run.named()).await?;
    let left = ctx
        .pb
        .list_instances(Some(&format!("tenant = {}", filter_quote(&tenant.id))))
        .await?;
    if !left.is_empty() {
        info!(record_id = %tenant.id, instances = left.len(), "tenant deletion waits for its instances' retention");
        return Ok(Some(updated));
    }
    if !destroy(ctx, &tenant.id, run).await? {
        return Ok(Some(updated));
    }
    match ctx.pb.delete("tenants", &tenant.id).await {
        Ok(()) | Err(PbError::NotFound) => {
            info!(record_id = %tenant.id, "tenant deleted after its last instance");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The tenant is gone: destroy its remaining services, then its project. `false` while instances of it are
/// kept for their retention (the last one's destruction wakes this job again).
async fn destroy(ctx: &Context, id: &str, run: &RunActor) -> Result<bool, ReconcileError> {
    ctx.journal.forget_note(&fan_out_note(id)).await?;
    ctx.journal.release_tenant_domain(id).await?;
    let key = project_intent_key(id);
    let Some(intent) = ctx.journal.get_intent(&key).await? else {
        return Ok(true);
    };
    let Some(uuid) = intent.coolify_uuid else {
        ctx.journal.clear_intent(&key).await?;
        return Ok(true);
    };
    let env = match ctx
        .coolify
        .get_environment(&uuid, &ctx.settings.coolify.environment)
        .await
    {
        Ok(env) => env,
        Err(CoolifyError::NotFound { .. }) => {
            ctx.journal.clear_intent(&key).await?;
            return Ok(true);
        }
        Err(e) => return Err(e.into()),
    };
    let kept = retention::retain_tenant_services(ctx, id, &env.services, run).await?;
    if kept > 0 {
        info!(record_id = %id, kept, "tenant's project waits for its deleted instances' retention");
        return Ok(false);
    }
    let actions = plan::plan_deleted_tenant(Some(&uuid), env.services.len());
    for action in actions {
        match action {
            DeletedTenantAction::DeleteServices => {
                for svc in &env.services {
                    match ctx
                        .coolify
                        .delete_service_and_wait(&svc.uuid, Duration::from_secs(120))
                        .await
                    {
                        Ok(()) | Err(CoolifyError::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            DeletedTenantAction::DeleteProject(project) => {
                let log = ActionLog::tenant(id, false, DeployAction::ProjectDelete);
                let result = delete_project_patiently(ctx, &project).await;
                let log = log.by(&run.deleter().await?);
                match result {
                    Ok(()) => {
                        log.keep(ctx, DeployStatus::Success, format!("project {project} deleted"))
                            .await?
                    }
                    Err(e) => {
                        log.keep(
                            ctx,
                            DeployStatus::Failed,
                            format!("could not delete project {project}: {e}"),
                        )
                        .await?;
                        return Err(e);
                    }
                }
            }
        }
    }
    ctx.journal.clear_intent(&key).await?;
    info!(record_id = %id, coolify_uuid = %uuid, "tenant destroyed");
    Ok(true)
}

/// Coolify deletes services asynchronously and refuses to delete a project that still has any.
async fn delete_project_patiently(ctx: &Context, uuid: &str) -> Result<(), ReconcileError> {
    let deadline = tokio::time::Instant::now() + PROJECT_DELETE_PATIENCE;
    let polls = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    let mut tries = 0;
    loop {
        match ctx.coolify.delete_project(uuid).await {
            Ok(()) | Err(CoolifyError::NotFound { .. }) => return Ok(()),
            Err(CoolifyError::HasResources) if tokio::time::Instant::now() < deadline => {
                crate::queue::without_slot(tokio::time::sleep(polls.ceiling(tries))).await;
                tries += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pocketbase::records::{PlanTier, TenantStatus};

    #[test]
    fn only_what_instances_read_of_a_tenant_wakes_them() {
        let tenant = Tenant {
            id: "t1".into(),
            name: "Acme".into(),
            slug: "acme".into(),
            user: Some("u1".into()),
            status: Some(TenantStatus::Active),
            plan_tier: Some(PlanTier::Starter),
            max_stacks: 0,
            coolify_project_uuid: Some("p1".into()),
            bridge_error: None,
            domain: None,
            domain_verified: false,
            deletion_requested_at: None,
            changed_by: None,
            created: None,
            updated: None,
        };
        let key = instance_facing(&tenant, Some("p1"));
        let renamed = Tenant {
            name: "Acme Inc".into(),
            user: Some("u2".into()),
            bridge_error: Some("x".into()),
            changed_by: Some("users:u2".into()),
            ..tenant.clone()
        };
        assert_eq!(instance_facing(&renamed, Some("p1")), key);
        let upgraded = Tenant {
            plan_tier: Some(PlanTier::Team),
            ..tenant.clone()
        };
        let suspended = Tenant {
            status: Some(TenantStatus::Suspended),
            ..tenant.clone()
        };
        let more = Tenant {
            max_stacks: 5,
            ..tenant.clone()
        };
        let deleting = Tenant {
            deletion_requested_at: Some(chrono::Utc::now()),
            ..tenant.clone()
        };
        for other in [&upgraded, &suspended, &more, &deleting] {
            assert_ne!(instance_facing(other, Some("p1")), key);
        }
        assert_ne!(instance_facing(&tenant, None), key, "a project appearing wakes them");
    }
}
