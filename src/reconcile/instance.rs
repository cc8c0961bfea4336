//! Instance executor: read the record, work out the desired spec, observe Coolify, carry out the plan,
//! write the outcome back.

use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tracing::{info, warn};

use super::actor::{Actor, RunActor};
use super::context::{ActionLog, Context, service_intent_key, service_name};
use super::drift::{Drift, compose_note, compose_note_value, drift_note};
use super::error::ReconcileError;
use super::judgement::{HealthWrite, Judgement, Verdict, health_write, shows_settled};
use super::outcome;
use super::plan::{
    self, Action, Blocked, DeletedInstanceAction, EffectiveState, InstanceInput, Observed, RunState, Spec,
};
use super::retention;
use crate::coolify::{CoolifyError, CreateService, EnvVarInput, Service, ServicePatch, ServiceStatus, ServiceUrl};

use crate::events::Collection;
use crate::incarnation;
use crate::journal::Intent;
use crate::pocketbase::BatchRequest;
use crate::pocketbase::records::{
    BotInstance, BotTemplate, DeployAction, DeployStatus, DesiredState, InstancePatch, InstanceStatus, Tenant,
    TenantStatus, format_pb_date,
};
use crate::quota;
use crate::secrets;
use crate::templates::{self, RenderInput, Rendered};

/// What the record asks for, fully worked out.
struct Desired {
    spec: Spec,
    rendered: Rendered,
    domain: String,
    project_uuid: String,
    env: Vec<EnvVarInput>,
    secrets_hash: String,
    router_key_id: String,
    /// The domain it was served at, kept routed beside the new one while a domain move is under way (the
    /// tenant's custom domain changed): the old one is removed by the next run, once the new one routes.
    also_served: Option<String>,
    template_version: String,
    /// The version the stack ran before this run, when known.
    template_before: Option<String>,
    /// The tenant is suspended: no domain, and the key was rotated when the suspension began.
    suspended: bool,
}

/// The incarnation of a live record (see [`crate::incarnation`]).
pub fn life_of(inst: &BotInstance) -> String {
    life_tag(&inst.id, &inst.tenant, inst.created.as_ref())
}

/// The incarnation tag of the instance `id` of `tenant` created at `created`.
pub fn life_tag(id: &str, tenant: &str, created: Option<&chrono::DateTime<chrono::Utc>>) -> String {
    incarnation::tag(id, tenant, &created.map(format_pb_date).unwrap_or_default())
}

/// What the job knows about its run beyond the record.
pub struct Trust {
    /// Arrival (ms UTC) of the oldest change the run covers.
    pub first_event_ms: Option<i64>,
    /// The job's previous attempt did not succeed: it may have changed the service without writing the
    /// outcome back, so the service is read rather than taken as the record's applied spec says.
    pub after_failure: bool,
}

/// Reconciles one instance; returns the record's `updated` when it is live, `None` once destroyed.
/// `run`: who caused the run (see [`Actor::of_action`] for whom its rows name).
pub async fn reconcile(
    ctx: &Context,
    id: &str,
    trust: Trust,
    run: &RunActor,
) -> Result<Option<String>, ReconcileError> {
    let Trust {
        first_event_ms,
        after_failure,
    } = trust;
    let Some((inst, tenant, template)) = instance_with_relations(ctx, id).await? else {
        // Boxed, as are the other rare large steps (a failure, a create): a job's future is as large as its
        // largest step, and a backlog holds hundreds of jobs waiting for Coolify.
        Box::pin(destroy(ctx, id, run)).await?;
        return Ok(None);
    };
    let applied_before = inst.applied_hash.is_some();
    let actor_if =
        |carries_out_record: bool| run.for_instance(inst.changed_by.as_deref(), applied_before, carries_out_record);
    let updated = inst.updated.as_ref().map(format_pb_date).unwrap_or_default();
    let life = life_of(&inst);
    if retention::asked(&inst, tenant.as_ref()) {
        return retention::retain_live(ctx, &inst, tenant.as_ref(), &life, &actor_if(true)).await;
    }
    retention::end_if_restored(ctx, &inst.id, &life).await?;
    // Before anything can block: an earlier record's service must not run on under this id.
    let intent = intent_of_this_life(ctx, &inst.id, &life).await?;
    let desired = match &tenant {
        None => Err(Blocked::Invalid(format!("tenant {} does not exist", inst.tenant))),
        Some(t) => desire(ctx, &inst, &life, t, template).await?,
    };
    let pending = pending_write_back(ctx, &inst).await?;
    // Our own write-back comes back as an update event: an unchanged spec needs no Coolify call, unless
    // the health poller saw the service vanish or the resync found it changed inside Coolify (then it
    // must be observed and repaired), the job's last attempt failed or was cut short (it may have changed
    // the service), or the record's status does not show the outcome (a run left it behind).
    let judgement = ctx.health.get(&inst.id);
    let drift = ctx.journal.note(&drift_note(&inst.id)).await?;
    let drift = drift.as_deref().map(Drift::parse);
    let unconfirmed = ctx.journal.note(&unconfirmed_note(&inst.id)).await?.is_some();
    if let Ok(d) = &desired
        && pending.is_none()
        && drift.is_none()
        && !unconfirmed
        && !after_failure
        && shows_settled(inst.status, inst.error_message.as_deref(), d.spec.state)
        && inst.applied_hash.as_deref() == Some(d.spec.fingerprint().as_str())
        && judgement.as_ref().is_none_or(|j| j.verdict != Verdict::Missing)
    {
        apply_health(ctx, &inst, judgement.as_ref()).await?;
        return Ok(Some(updated));
    }
    let desired = match desired {
        Ok(d) => d,
        Err(blocked) => {
            return block(ctx, &inst, blocked, &actor_if(true))
                .await
                .map(|()| Some(updated));
        }
    };
    mark_first_action(ctx, first_event_ms);
    // Act first: the service this incarnation made is taken as present, in the state last applied; only
    // an action that finds it gone makes the job observe Coolify (a read per change saved). Not after a
    // failed or interrupted attempt, nor while the record shows no settled outcome of the applied spec:
    // a call may have been carried out without its outcome written back.
    let missing = judgement.as_ref().is_some_and(|j| j.verdict == Verdict::Missing);
    let known = (pending.is_none() && !missing && drift.is_none() && !unconfirmed && !after_failure)
        .then(|| known_service(intent.as_ref(), &life, &inst))
        .flatten();
    let Some(observed) = known else {
        let observed = observe(ctx, &inst, &life, intent, &desired.project_uuid).await?;
        // A compose changed inside Coolify is not the applied one: the plan sends ours again.
        let seen = if unconfirmed {
            Seen::Unconfirmed
        } else if drift == Some(Some(Drift::Compose)) {
            Seen::ComposeDrifted
        } else {
            Seen::Observed
        };
        let acted = plan_and_execute(ctx, &inst, &desired, observed, pending, seen, run).await?;
        if unconfirmed {
            ctx.journal.forget_note(&unconfirmed_note(&inst.id)).await?;
        }
        if drift.is_some() {
            ctx.journal.forget_note(&drift_note(&inst.id)).await?;
            if acted {
                info!(record_id = %inst.id, "drift inside Coolify repaired");
            } else {
                // The listing's difference was gone when the job read the service (it came back up, say).
                info!(record_id = %inst.id, "drift inside Coolify gone by the time it was read; nothing to repair");
            }
        }
        return Ok(Some(updated));
    };
    match plan_and_execute(ctx, &inst, &desired, observed, None, Seen::Assumed, run).await {
        Err(ReconcileError::Coolify(CoolifyError::NotFound { .. })) => {
            warn!(record_id = %inst.id, "the instance's service is gone from Coolify; observing it");
            let intent = ctx.journal.get_intent(&service_intent_key(&inst.id)).await?;
            let observed = observe(ctx, &inst, &life, intent, &desired.project_uuid).await?;
            plan_and_execute(ctx, &inst, &desired, observed, None, Seen::Observed, run).await?;
        }
        other => {
            other?;
        }
    }
    Ok(Some(updated))
}

/// A write of the instance outside `outcome::commit` (no row with it), told to `latest` as that one is.
async fn patch_instance(ctx: &Context, id: &str, patch: &InstancePatch) -> Result<(), ReconcileError> {
    let written = ctx.pb.patch_instance(id, patch).await;
    let latest = ctx.intake.latest();
    match &written {
        Ok(inst) => latest.learned(Some(inst), None, None),
        Err(_) => latest.wrote(Collection::BotInstances, id, None),
    }
    written?;
    Ok(())
}

/// The instance with its tenant and template: from what the realtime stream brought when that is known to
/// be the newest (see [`crate::latest`]), otherwise read from PocketBase.
async fn instance_with_relations(
    ctx: &Context,
    id: &str,
) -> Result<Option<(BotInstance, Option<Tenant>, Option<BotTemplate>)>, ReconcileError> {
    let counted = |from: &str| ctx.intake.metrics().instance_records.with_label_values(&[from]).inc();
    let latest = ctx.intake.latest();
    if let Some(seen) = latest.get(id) {
        let applied = ctx.journal.applied_version(Collection::BotInstances, id).await?;
        if crate::latest::usable(&seen.updated, applied.as_ref()) {
            counted("frame");
            return Ok(Some((seen.instance, seen.tenant, seen.template)));
        }
    }
    counted("pocketbase");
    let read = ctx.pb.get_instance_with_relations(id).await?;
    if let Some((instance, tenant, template)) = &read {
        latest.learned(Some(instance), tenant.as_ref(), template.as_ref());
    }
    Ok(read)
}

/// The service this incarnation created (its uuid journaled in the intent and on the record), as
/// present in the state of the record's applied spec, which the record's status shows as reached;
/// `None` when anything about it is uncertain.
fn known_service(intent: Option<&Intent>, life: &str, inst: &BotInstance) -> Option<Observed> {
    let intent = intent.filter(|i| i.incarnation.as_deref() == Some(life))?;
    let uuid = intent.coolify_uuid.as_deref()?;
    if inst.coolify_service_id.as_deref() != Some(uuid) {
        return None;
    }
    let applied = inst.applied_hash.as_deref().and_then(Spec::parse)?;
    let running = applied.state == EffectiveState::Running;
    let shown_running = match inst.status {
        Some(InstanceStatus::Running) => true,
        Some(InstanceStatus::Stopped) => false,
        _ => return None,
    };
    (shown_running == running).then(|| Observed::Present {
        uuid: uuid.to_string(),
        run: RunState::left(applied.state),
    })
}

/// How the job knows the service it plans for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Read from Coolify.
    Observed,
    /// Read from Coolify, and the resync found its compose changed: not the applied one.
    ComposeDrifted,
    /// Taken as known from the journal, not read: an action that finds it gone is not a failure.
    Assumed,
    /// Read from Coolify after a failed run that sent it a change: its compose and env are not known to
    /// be the applied ones, so the plan sends the desired ones again.
    Unconfirmed,
}

/// Plans against the service as `seen` and carries the plan out; `by`: who caused the run. Returns whether
/// the plan changed the service in Coolify.
async fn plan_and_execute(
    ctx: &Context,
    inst: &BotInstance,
    desired: &Desired,
    observed: Observed,
    pending: Option<PendingWriteBack>,
    seen: Seen,
    by: &RunActor,
) -> Result<bool, ReconcileError> {
    // What Coolify runs: a pending outcome's spec when it was applied to the service still there.
    let pending = pending.filter(|p| matches!(&observed, Observed::Present { uuid, .. } if p.uuid == *uuid));
    let applied = match &pending {
        Some(p) => Some(p.spec.clone()),
        None => inst.applied_hash.as_deref().and_then(Spec::parse),
    };
    // What Coolify runs already matches what was applied: the actions repair it (a drift too) rather than
    // carry out a change someone asked for.
    let carries_out_record = applied.as_ref() != Some(&desired.spec);
    let actor = by.for_instance(
        inst.changed_by.as_deref(),
        inst.applied_hash.is_some(),
        carries_out_record,
    );
    let input = InstanceInput {
        desired: desired.spec.clone(),
        applied: applied.filter(|_| seen != Seen::Unconfirmed).map(|mut a| {
            if seen == Seen::ComposeDrifted {
                a.compose.clear();
            }
            a
        }),
        observed: observed.clone(),
    };
    let settled = shows_settled(inst.status, inst.error_message.as_deref(), desired.spec.state);
    let actions = if pending.is_some() || !settled {
        plan::plan_instance_with_write_back(&input)
    } else {
        plan::plan_instance(&input)
    };
    info!(record_id = %inst.id, actions = ?actions, seen = ?seen, "reconciling instance");
    let run = Run {
        actions: &actions,
        completing_pending: pending.is_some(),
        assumed: seen == Seen::Assumed,
    };
    execute(ctx, inst, desired, observed, run, &actor).await?;
    Ok(actions.iter().any(Action::changes_coolify))
}

/// An action that succeeded in Coolify but whose write-back has not landed (its row is in the outbox).
struct PendingWriteBack {
    spec: Spec,
    uuid: String,
}

async fn pending_write_back(ctx: &Context, inst: &BotInstance) -> Result<Option<PendingWriteBack>, ReconcileError> {
    let rows = ctx.journal.outbox_for(Collection::BotInstances, &inst.id, 100).await?;
    let latest = rows
        .into_iter()
        .rev()
        .find_map(|e| Some((e.applied_hash?, e.service_uuid?)));
    // A write-back that landed (its answer lost) leaves only its row to send.
    Ok(latest
        .filter(|(hash, _)| inst.applied_hash.as_deref() != Some(hash.as_str()))
        .and_then(|(hash, uuid)| {
            Some(PendingWriteBack {
                spec: Spec::parse(&hash)?,
                uuid,
            })
        }))
}

fn mark_first_action(ctx: &Context, first_event_ms: Option<i64>) {
    if let Some(ms) = first_event_ms {
        let waited = (chrono::Utc::now().timestamp_millis() - ms).max(0) as f64 / 1000.0;
        ctx.intake
            .metrics()
            .event_to_first_action_seconds
            .with_label_values(&["bot_instances"])
            .observe(waited);
    }
}

async fn desire(
    ctx: &Context,
    inst: &BotInstance,
    life: &str,
    tenant: &Tenant,
    template_record: Option<BotTemplate>,
) -> Result<Result<Desired, Blocked>, ReconcileError> {
    let Some(project_uuid) = tenant.coolify_project_uuid.clone() else {
        return Ok(Err(Blocked::TenantNotReady));
    };
    let Some(template_record) = template_record else {
        return Ok(Err(Blocked::Invalid(format!(
            "template {} does not exist",
            inst.template
        ))));
    };
    let Some(newest) = ctx.templates.get(&template_record.name) else {
        return Ok(Err(Blocked::Invalid(format!(
            "template {:?} is not installed in the bridge's templates directory",
            template_record.name
        ))));
    };
    let applied = inst.applied_hash.as_deref().is_some_and(|h| !h.is_empty());
    // An inactive template keeps its running stacks but takes no new ones.
    if !template_record.active && !applied {
        return Ok(Err(Blocked::Invalid(format!(
            "template {} is inactive: it takes no new instances",
            template_record.name
        ))));
    }
    // A stack keeps its version until a rollout moves it (the pin); a new one gets the newest.
    let template_before = recorded_version(ctx, inst, applied, &newest.name).map(str::to_string);
    let version = match ctx.journal.template_pin(&inst.id, life).await? {
        Some(v) => v,
        None => template_before.clone().unwrap_or_else(|| newest.version.clone()),
    };
    let Some(template) = ctx.templates.version(&newest.name, &version) else {
        return Ok(Err(Blocked::Invalid(format!(
            "template {} version {version} is not known to the bridge",
            newest.name
        ))));
    };

    let Some(plan_tier) = tenant.plan_tier else {
        return Ok(Err(Blocked::Invalid("the tenant has no plan_tier".to_string())));
    };
    let ceiling = quota::ceiling(
        plan_tier,
        tenant.max_stacks,
        &ctx.settings.reconcile.sovereign_ceiling(),
    );
    // Stacks are admitted in creation order, so the same instances win every time. An instance whose
    // spec was applied was admitted then and stays admitted (quota stops nothing that already works), so
    // it needs no count: one PocketBase query less for every edit, restart and echo of a running stack.
    let position = if ceiling.max_stacks.is_some() && !applied {
        ctx.pb.count_instances_before(&tenant.id, inst).await?
    } else {
        0
    };
    let defaults = quota::TemplateDefaults {
        cpu: template.cpu_default,
        mem_mb: template.mem_default_mb,
    };
    let position = u32::try_from(position).unwrap_or(u32::MAX);
    let granted = match quota::check(plan_tier, &ceiling, inst.cpu_limit, inst.mem_limit, defaults, position) {
        Ok(g) => g,
        Err(e @ quota::QuotaError::Stacks { .. }) => return Ok(Err(Blocked::NoStackSlot(e.to_string()))),
        Err(e) => return Ok(Err(Blocked::Quota(e.to_string()))),
    };

    // Secrets stored for an earlier record with this id are deleted here, never used.
    let stored = ctx.secrets.get(&inst.id, life).await?.unwrap_or_default();
    let present: std::collections::BTreeSet<String> = stored.keys().cloned().collect();
    let missing = secrets::missing_secrets(&template.required_secrets, &present);
    if !missing.is_empty() {
        return Ok(Err(Blocked::MissingSecrets(missing)));
    }

    let base = &ctx.settings.domains.base_domain;
    // The tenant's job settles its custom domain (checked, verified, held by no other tenant).
    let under = ctx
        .journal
        .tenant_domain(&tenant.id)
        .await?
        .unwrap_or_else(|| base.clone());
    let domain = format!("{}.{under}", inst.subdomain);
    let suspended = tenant.status == Some(TenantStatus::Suspended);
    let input = RenderInput {
        instance_id: inst.id.clone(),
        instance_name: inst.name.clone(),
        subdomain: inst.subdomain.clone(),
        domain: domain.clone(),
        tenant_slug: tenant.slug.clone(),
        config: inst.config.clone(),
        cpu: granted.cpu,
        mem_mb: granted.mem_mb,
        router_base_url: ctx.settings.router.base_url_text().to_string(),
    };
    let rendered = match templates::render(template, &input, &ceiling) {
        Ok(r) => r,
        Err(e) => return Ok(Err(Blocked::Invalid(e.to_string()))),
    };

    let key = &ctx.settings.secrets.key_bytes();
    let secrets_hash = if stored.is_empty() {
        String::new()
    } else {
        secrets::secrets_hash(key, &stored)
    };
    let mut env = vec![EnvVarInput::plain(
        "CLOUDFREEDOM_ROUTER_BASE_URL",
        ctx.settings.router.base_url_text(),
    )];
    rotate_on_suspension_change(ctx, inst, life, suspended).await?;
    let router_key_id = ctx.journal.router_key_id(&inst.id, life).await?;
    env.push(EnvVarInput::new(
        "CLOUDFREEDOM_API_KEY",
        secrets::router_api_key(key, &inst.tenant, &inst.id, &router_key_id),
        false,
    ));
    for (k, v) in &stored {
        // Coolify single-quotes literal values in `.env`: `$` must not be interpolated, and a newline
        // must not split the value into several entries.
        let literal = v.expose_secret().contains(['$', '\n']);
        env.push(EnvVarInput::new(
            k.clone(),
            SecretString::from(v.expose_secret().to_string()),
            literal,
        ));
    }

    let state = plan::effective_state(
        inst.desired_state == Some(DesiredState::Running),
        tenant.status == Some(TenantStatus::Active),
    );
    // A suspended stack is served nowhere: its domain leaves Coolify (and the record) until it resumes.
    // A running stack whose domain moves is served at both until the new one is routed (no downtime).
    let also_served = inst
        .domain
        .clone()
        .filter(|old| !suspended && state == EffectiveState::Running && inst.applied_hash.is_some() && *old != domain);
    let served = match (&also_served, suspended) {
        (_, true) => String::new(),
        (Some(old), false) => format!("{domain},{old}"),
        (None, false) => domain.clone(),
    };
    let compose_key = format!(
        "{}\n#domain={}\n#template={}@{}",
        rendered.compose_yaml, served, template.name, template.version
    );
    let env_key = format!(
        "{}|{}|{}",
        secrets_hash,
        ctx.settings.router.base_url_text(),
        router_key_id
    );
    let restart = inst
        .restart_requested_at
        .as_ref()
        .map(format_pb_date)
        .unwrap_or_default();
    let spec = Spec::new(state, &compose_key, &env_key, &restart);
    Ok(Ok(Desired {
        spec,
        rendered,
        domain,
        project_uuid,
        env,
        secrets_hash,
        router_key_id,
        also_served,
        template_version: template.version.clone(),
        template_before,
        suspended,
    }))
}

/// The version the record says its stack runs: `template_version`, or for a stack applied before versions
/// were recorded, the first version the bridge loaded.
pub fn recorded_version<'a>(ctx: &'a Context, inst: &'a BotInstance, applied: bool, template: &str) -> Option<&'a str> {
    match inst.template_version.as_deref() {
        Some(v) => Some(v),
        None if applied => ctx.templates.version_of_unrecorded(template),
        None => None,
    }
}

/// A tenant's suspension, and its end, each rotate the stack's router key once, so that a key copied
/// before either stops working at the router. The journal notes which side of a suspension the stack's
/// key belongs to; rotating before noting means a crash between the two only rotates once more.
async fn rotate_on_suspension_change(
    ctx: &Context,
    inst: &BotInstance,
    life: &str,
    suspended: bool,
) -> Result<(), ReconcileError> {
    let name = format!("suspended:{}", inst.id);
    let was_suspended = ctx.journal.noted(&name).await?.as_deref() == Some("yes");
    if was_suspended != suspended {
        let key_id = ctx.journal.rotate_router_key(&inst.id, life).await?;
        ctx.journal
            .note_changed(&name, if suspended { "yes" } else { "no" })
            .await?;
        info!(record_id = %inst.id, router_key_id = %key_id, suspended, "router key rotated for the tenant's suspension");
    }
    Ok(())
}

/// Writes what the health judgement asks of an instance whose spec is applied.
async fn apply_health(ctx: &Context, inst: &BotInstance, judgement: Option<&Judgement>) -> Result<(), ReconcileError> {
    let Some(write) = health_write(inst.status, inst.error_message.as_deref(), judgement) else {
        return Ok(());
    };
    let (key, patch, action, status, message) = match write {
        HealthWrite::Recovered => (
            "health: recovered",
            InstancePatch {
                status: Some(InstanceStatus::Running),
                error_message: Some(String::new()),
                last_healthy_at: Some(chrono::Utc::now()),
                ..Default::default()
            },
            DeployAction::Start,
            DeployStatus::Success,
            "health check: service is running again".to_string(),
        ),
        HealthWrite::Unhealthy(message) => (
            "health: unhealthy",
            InstancePatch {
                status: Some(InstanceStatus::Error),
                error_message: Some(message.clone()),
                ..Default::default()
            },
            DeployAction::Error,
            DeployStatus::Failed,
            message,
        ),
    };
    // Keyed by the judgement and the record version: a retry of this job makes the same row.
    let version = inst.updated.as_ref().map(format_pb_date).unwrap_or_default();
    let row = ActionLog::instance(&inst.id, Some(&inst.tenant), true, action)
        .keyed(&[key, &version])
        .row(status, message);
    let patch = BatchRequest::patch_instance(&inst.id, &patch)?;
    outcome::commit(ctx, Collection::BotInstances, &inst.id, Some(patch), Some(row)).await
}

/// What a blocked instance shows: a waiting one stays `pending` with its reason in `pending_reason` (and
/// no `error_message`: waiting is not a failure); one that needs a person shows `error`.
#[derive(Debug, PartialEq, Eq)]
struct BlockedView {
    status: InstanceStatus,
    error_message: String,
    pending_reason: String,
}

/// Pure step: what a blocked instance shows. Missing secrets, a tenant without a project and a plan with
/// no free stack slot wait in `pending`; resource requests above the plan and invalid records are errors.
/// A blocked instance is not planned: quota and validation problems stop nothing that already works,
/// they only refuse new work.
fn blocked_status(blocked: &Blocked) -> BlockedView {
    let waiting = |reason: String| BlockedView {
        status: InstanceStatus::Pending,
        error_message: String::new(),
        pending_reason: reason,
    };
    match blocked {
        Blocked::MissingSecrets(keys) => waiting(format!("waiting for secrets: {}", keys.join(", "))),
        Blocked::TenantNotReady => waiting("waiting for the tenant's Coolify project".to_string()),
        Blocked::NoStackSlot(m) => waiting(format!("waiting for a stack slot: {m}")),
        Blocked::Quota(m) | Blocked::Invalid(m) => BlockedView {
            status: InstanceStatus::Error,
            error_message: m.clone(),
            pending_reason: String::new(),
        },
    }
}

async fn block(ctx: &Context, inst: &BotInstance, blocked: Blocked, actor: &Actor) -> Result<(), ReconcileError> {
    let view = blocked_status(&blocked);
    let shown = |field: &Option<String>, want: &str| field.as_deref().unwrap_or_default() == want;
    // Only a change is written, so the update event our own write causes ends here next time.
    if inst.status != Some(view.status)
        || !shown(&inst.error_message, &view.error_message)
        || !shown(&inst.pending_reason, &view.pending_reason)
    {
        let patch = InstancePatch {
            status: Some(view.status),
            error_message: Some(view.error_message.clone()),
            pending_reason: Some(view.pending_reason.clone()),
            ..Default::default()
        };
        let row = (view.status == InstanceStatus::Error).then(|| {
            ActionLog::instance(&inst.id, Some(&inst.tenant), true, DeployAction::Error)
                .by(actor)
                .row(DeployStatus::Failed, view.error_message.clone())
        });
        let patch = BatchRequest::patch_instance(&inst.id, &patch)?;
        outcome::commit(ctx, Collection::BotInstances, &inst.id, Some(patch), row).await?;
        if view.status == InstanceStatus::Pending {
            info!(record_id = %inst.id, reason = %view.pending_reason, "instance waiting");
        } else {
            warn!(record_id = %inst.id, reason = %view.error_message, "instance refused");
        }
    }
    let message = if view.status == InstanceStatus::Pending {
        view.pending_reason
    } else {
        view.error_message
    };
    Err(ReconcileError::Blocked(message))
}

/// The service intent of this incarnation (or of none: made before incarnations existed). An intent of an
/// earlier record with this id (its delete and this record's create made one job) has its service
/// destroyed and is dropped.
async fn intent_of_this_life(ctx: &Context, id: &str, life: &str) -> Result<Option<Intent>, ReconcileError> {
    let intent = ctx.journal.get_intent(&service_intent_key(id)).await?;
    match intent {
        Some(earlier) if earlier.incarnation.as_deref().is_some_and(|t| t != life) => {
            retire_earlier_life(ctx, id, &earlier).await?;
            Ok(None)
        }
        other => Ok(other),
    }
}

async fn observe(
    ctx: &Context,
    inst: &BotInstance,
    life: &str,
    intent: Option<Intent>,
    project_uuid: &str,
) -> Result<Observed, ReconcileError> {
    let name = service_name(&inst.id);
    let mut candidates: Vec<String> = intent
        .as_ref()
        .and_then(|i| i.coolify_uuid.clone())
        .into_iter()
        .collect();
    if let Some(uuid) = &inst.coolify_service_id
        && !candidates.contains(uuid)
    {
        candidates.push(uuid.clone());
    }
    for uuid in candidates {
        match ctx.coolify.get_service(&uuid).await {
            // The record's field may have been copied from a deleted record: what the service says wins.
            Ok(svc) if incarnation::is_other_life(svc.description.as_deref(), life) => {
                destroy_earlier_service(ctx, &inst.id, &svc.uuid).await?;
            }
            Ok(svc) => {
                if intent.as_ref().is_none_or(|i| i.incarnation.is_none()) {
                    bind_intent(ctx, &inst.id, life, &svc.uuid).await?;
                }
                return Ok(Observed::Present {
                    uuid: svc.uuid,
                    run: RunState::of(&svc.status),
                });
            }
            Err(CoolifyError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    // A lost create response or a crash before the write-back: adopt by the deterministic name, but only
    // a service of this incarnation (or one made before incarnations existed). Only a create whose outcome
    // was never learned (an intent without a uuid) may have made one: without an intent no create was
    // tried, and a resolved intent's service was just read.
    if intent.as_ref().is_none_or(|i| i.coolify_uuid.is_some()) {
        return Ok(Observed::Absent);
    }
    let (earlier, mut found): (Vec<Service>, Vec<Service>) = find_in_project(ctx, project_uuid, &name)
        .await?
        .into_iter()
        .partition(|s| incarnation::is_other_life(s.description.as_deref(), life));
    for svc in &earlier {
        destroy_earlier_service(ctx, &inst.id, &svc.uuid).await?;
    }
    found.sort_by(|a, b| a.created_at.cmp(&b.created_at));
    let Some(first) = found.first().cloned() else {
        return Ok(Observed::Absent);
    };
    for extra in &found[1..] {
        warn!(record_id = %inst.id, coolify_uuid = %extra.uuid, "removing duplicate service");
        ctx.coolify.delete_service(&extra.uuid).await?;
    }
    bind_intent(ctx, &inst.id, life, &first.uuid).await?;
    info!(record_id = %inst.id, coolify_uuid = %first.uuid, "adopted existing service");
    Ok(Observed::Present {
        uuid: first.uuid,
        run: RunState::of(&first.status),
    })
}

/// Records that the service `uuid` belongs to this incarnation.
async fn bind_intent(ctx: &Context, id: &str, life: &str, uuid: &str) -> Result<(), ReconcileError> {
    let key = service_intent_key(id);
    ctx.journal
        .put_intent_of(&key, "service", &service_name(id), Some(life))
        .await?;
    ctx.journal.resolve_intent(&key, uuid).await?;
    Ok(())
}

/// The record's id came back after a delete the bridge never saw on its own (the delete and the new
/// create made one job): the earlier record's service is destroyed, never adopted.
async fn retire_earlier_life(ctx: &Context, id: &str, earlier: &Intent) -> Result<(), ReconcileError> {
    let uuids: Vec<String> = match &earlier.coolify_uuid {
        Some(uuid) => vec![uuid.clone()],
        // Its create outcome was never learned: find it by name and mark, in the project it was created in
        // (noted at its create), or across every project for an intent from before that note.
        None => match ctx.journal.note(&project_note(id)).await? {
            Some(project) => find_in_project(ctx, &project, &service_name(id)).await?,
            None => ctx.coolify.find_services_by_name(&service_name(id)).await?,
        }
        .into_iter()
        .filter(|s| incarnation::marked(s.description.as_deref()) == earlier.incarnation.as_deref())
        .map(|s| s.uuid)
        .collect(),
    };
    for uuid in &uuids {
        destroy_earlier_service(ctx, id, uuid).await?;
    }
    ctx.journal.clear_intent(&earlier.key).await?;
    Ok(())
}

async fn destroy_earlier_service(ctx: &Context, id: &str, uuid: &str) -> Result<(), ReconcileError> {
    warn!(record_id = %id, coolify_uuid = %uuid, "destroying the service of an earlier record with this id");
    // The earlier record's log: not shown to the tenant of the new one.
    let log = ActionLog::instance(id, None, false, DeployAction::Destroy);
    match ctx
        .coolify
        .delete_service_and_wait(uuid, Duration::from_secs(120))
        .await
    {
        Ok(()) | Err(CoolifyError::NotFound { .. }) => {
            log.keep(
                ctx,
                DeployStatus::Success,
                format!("service {uuid} of an earlier record with this id destroyed"),
            )
            .await?;
            ctx.journal.forget_note(&env_keys_note(uuid)).await?;
            ctx.journal.forget_note(&compose_note(uuid)).await?;
            Ok(())
        }
        Err(e) => {
            log.keep(
                ctx,
                DeployStatus::Failed,
                format!("could not destroy service {uuid}: {e}"),
            )
            .await?;
            Err(e.into())
        }
    }
}

/// The services named `name` in the tenant's project. Looking in the project rather than listing every
/// service keeps the lookup as small as the tenant, not the whole fleet (Coolify has no filter by name).
async fn find_in_project(ctx: &Context, project_uuid: &str, name: &str) -> Result<Vec<Service>, ReconcileError> {
    match ctx
        .coolify
        .get_environment(project_uuid, &ctx.settings.coolify.environment)
        .await
    {
        Ok(env) => Ok(env.services.into_iter().filter(|s| s.name == name).collect()),
        Err(CoolifyError::NotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// A plan to carry out, and what its outcome needs to know.
struct Run<'a> {
    actions: &'a [Action],
    /// An earlier action's write-back is pending.
    completing_pending: bool,
    /// The service was taken as known, not read.
    assumed: bool,
}

async fn execute(
    ctx: &Context,
    inst: &BotInstance,
    desired: &Desired,
    observed: Observed,
    run: Run<'_>,
    actor: &Actor,
) -> Result<(), ReconcileError> {
    let Run {
        actions,
        completing_pending,
        assumed,
    } = run;
    let mut uuid = match &observed {
        Observed::Present { uuid, .. } => Some(uuid.clone()),
        Observed::Absent => None,
    };
    let log_action = summary_action(actions);
    let log = ActionLog::instance(&inst.id, Some(&inst.tenant), true, log_action).by(actor);
    let write_back = match run_actions(ctx, inst, &life_of(inst), desired, &mut uuid, actions).await {
        Ok(write_back) => write_back,
        // A service taken as present is gone: not a failure, the caller observes and plans again.
        Err(e @ ReconcileError::Coolify(CoolifyError::NotFound { .. })) if assumed => return Err(e),
        Err(e @ ReconcileError::Superseded { .. }) => {
            return Err(Box::pin(gave_way(ctx, inst, desired, log, &uuid, e)).await);
        }
        Err(e) => {
            // The change may have landed (a compose PATCH whose service then exited): the record's applied
            // spec no longer tells what Coolify holds, so no later run may take it as applied.
            if actions
                .iter()
                .any(|a| matches!(a, Action::UpdateService { .. } | Action::SetEnv))
                && let Err(je) = ctx.journal.note_changed(&unconfirmed_note(&inst.id), "1").await
            {
                warn!(record_id = %inst.id, error = %je, "could not note the unconfirmed change");
            }
            Box::pin(record_failure(ctx, inst, log, &uuid, &e)).await;
            return Err(e);
        }
    };
    // Completing an earlier action whose write-back was lost: that action's pending row is the one.
    let write_back_only = actions.iter().all(|a| matches!(a, Action::WriteBack(_)));
    let completes_pending = completing_pending && write_back_only;
    let row = (!actions.is_empty() && !completes_pending).then(|| {
        let message = if write_back_only {
            format!(
                "service {} is {} as asked: the record shows it again",
                uuid.as_deref().unwrap_or("-"),
                desired.spec.state.as_str()
            )
        } else {
            with_door(
                door_change(inst, desired, actions),
                with_door(
                    version_change(desired).as_deref(),
                    success_message(log_action, desired, uuid.as_deref()),
                ),
            )
        };
        let mut row = log.row(DeployStatus::Success, message);
        // Until the row is confirmed, a retry knows what Coolify runs even if the write-back was lost.
        if write_back.is_some() {
            row.applied_hash = Some(desired.spec.fingerprint());
            row.service_uuid = uuid.clone();
        }
        row
    });
    let patch = match write_back {
        Some(state) => {
            let waited = actions.contains(&Action::WaitRunning);
            Some(BatchRequest::patch_instance(
                &inst.id,
                &write_back_patch(desired, state, &uuid, waited, inst.retained_until.is_some()),
            )?)
        }
        None => None,
    };
    // Failing to record the outcome is not a failure of the action: the job's retry records it.
    outcome::commit(ctx, Collection::BotInstances, &inst.id, patch, row).await?;
    // The new domain runs beside the old one: the next run removes the old one.
    if desired.also_served.is_some() {
        let version = inst.updated.as_ref().map(format_pb_date).unwrap_or_default();
        retention::wake(
            ctx,
            Collection::BotInstances,
            &inst.id,
            &format!("domain-moved:{}:{version}", desired.domain),
        )
        .await?;
    }
    Ok(())
}

/// A run that gave way to a newer change while its service started. Every call it made succeeded, so the
/// record takes the spec now in Coolify as applied (the next run plans from it: a start under way is waited
/// for, not sent again) and keeps `deploying`; the row keeps in the trail what was sent.
async fn gave_way(
    ctx: &Context,
    inst: &BotInstance,
    desired: &Desired,
    log: ActionLog,
    uuid: &Option<String>,
    e: ReconcileError,
) -> ReconcileError {
    let patch = InstancePatch {
        status: Some(InstanceStatus::Deploying),
        ..write_back_patch(desired, desired.spec.state, uuid, false, inst.retained_until.is_some())
    };
    let mut row = log.row(DeployStatus::Pending, e.tenant_message());
    // Until the row is confirmed, the next run knows from it what Coolify holds, as from a success row.
    row.applied_hash = patch.applied_hash.clone();
    row.service_uuid = uuid.clone();
    // A run that gave way before (to a replay, say) already wrote it: a write of the same would only come
    // back as a frame, which the next run, claimed on an event without a fingerprint, takes for a change.
    let shown = inst.status == Some(InstanceStatus::Deploying)
        && inst.applied_hash == patch.applied_hash
        && inst.coolify_service_id == *uuid;
    let written = match (!shown)
        .then(|| BatchRequest::patch_instance(&inst.id, &patch))
        .transpose()
    {
        Ok(patch) => outcome::commit(ctx, Collection::BotInstances, &inst.id, patch, Some(row)).await,
        Err(pe) => Err(pe.into()),
    };
    if let Err(ce) = written {
        warn!(record_id = %inst.id, error = %ce, "could not record what the run that gave way sent");
    }
    e
}

/// The failure on the record (`error`, only when it changed: writing the same failure again would only
/// wake this job early) and its failed row, together.
async fn record_failure(ctx: &Context, inst: &BotInstance, log: ActionLog, uuid: &Option<String>, e: &ReconcileError) {
    let message = e.tenant_message();
    let unchanged = inst.status == Some(InstanceStatus::Error)
        && inst.error_message.as_deref() == Some(message.as_str())
        && (uuid.is_none() || *uuid == inst.coolify_service_id);
    let patch = InstancePatch {
        status: Some(InstanceStatus::Error),
        error_message: Some(message.clone()),
        pending_reason: Some(String::new()),
        coolify_service_id: uuid.clone(),
        ..Default::default()
    };
    let patch = (!unchanged)
        .then(|| BatchRequest::patch_instance(&inst.id, &patch).ok())
        .flatten();
    let row = log.row(DeployStatus::Failed, message);
    if let Err(ce) = outcome::commit(ctx, Collection::BotInstances, &inst.id, patch, Some(row)).await {
        warn!(record_id = %inst.id, error = %ce, "could not record the failure on the instance yet");
    }
}

fn write_back_patch(
    desired: &Desired,
    state: EffectiveState,
    uuid: &Option<String>,
    waited_running: bool,
    inst_was_retained: bool,
) -> InstancePatch {
    let status = match state {
        EffectiveState::Running => InstanceStatus::Running,
        EffectiveState::Stopped => InstanceStatus::Stopped,
    };
    InstancePatch {
        status: Some(status),
        error_message: Some(String::new()),
        pending_reason: Some(String::new()),
        coolify_service_id: uuid.clone(),
        coolify_project_id: Some(desired.project_uuid.clone()),
        domain: Some(if desired.suspended {
            String::new()
        } else {
            desired.domain.clone()
        }),
        applied_hash: Some(desired.spec.fingerprint()),
        secrets_hash: Some(desired.secrets_hash.clone()),
        router_key_id: Some(desired.router_key_id.clone()),
        template_version: Some(desired.template_version.clone()),
        last_healthy_at: waited_running.then(chrono::Utc::now),
        // A restored instance is no longer kept for deletion.
        retained_until: inst_was_retained.then(String::new),
    }
}

fn summary_action(actions: &[Action]) -> DeployAction {
    if actions.contains(&Action::CreateService) {
        DeployAction::Deploy
    } else if actions
        .iter()
        .any(|a| matches!(a, Action::UpdateService { .. } | Action::SetEnv))
    {
        DeployAction::Update
    } else if actions.contains(&Action::Restart) {
        DeployAction::Restart
    } else if actions.contains(&Action::Start) {
        DeployAction::Start
    } else if actions.contains(&Action::Stop) {
        DeployAction::Stop
    } else {
        DeployAction::Update
    }
}

/// What a run does to the stack's door (its domain and router key) when the tenant's suspension begins
/// or ends, or its domain moves: said in the action's row.
fn door_change(inst: &BotInstance, desired: &Desired, actions: &[Action]) -> Option<&'static str> {
    if !actions.iter().any(|a| matches!(a, Action::UpdateService { .. })) {
        return None;
    }
    if desired.also_served.is_some() {
        return Some(
            "domain moving: served at the new and the old domain until the new one runs, then the old one goes",
        );
    }
    if desired.suspended {
        Some("tenant suspended: domain removed, router key rotated")
    } else if inst.domain.is_none() && inst.applied_hash.is_some() {
        Some("tenant active again: domain restored, fresh router key")
    } else {
        None
    }
}

/// The template version a run moves the stack to (a rollout or a rollback), said in its row.
fn version_change(desired: &Desired) -> Option<String> {
    let before = desired.template_before.as_deref()?;
    (before != desired.template_version).then(|| format!("template version {before} -> {}", desired.template_version))
}

fn with_door(door: Option<&str>, message: String) -> String {
    match door {
        Some(door) => format!("{door}; {message}"),
        None => message,
    }
}

fn success_message(action: DeployAction, desired: &Desired, uuid: Option<&str>) -> String {
    let uuid = uuid.unwrap_or("-");
    match action {
        DeployAction::Deploy => format!(
            "service {uuid} created for https://{} and {}",
            desired.domain,
            desired.spec.state.as_str()
        ),
        DeployAction::Stop => format!("service {uuid} stopped"),
        DeployAction::Start => format!("service {uuid} started"),
        DeployAction::Restart => format!("service {uuid} restarted"),
        _ => format!("service {uuid} updated and {}", desired.spec.state.as_str()),
    }
}

/// The env to push: the desired vars, plus an empty value for every var the service still has that is
/// no longer wanted (a removed secret must not stay live). Coolify's own `SERVICE_*` vars are left alone.
fn with_revoked<'a>(desired: &[EnvVarInput], existing: impl IntoIterator<Item = &'a str>) -> Vec<EnvVarInput> {
    let wanted: std::collections::BTreeSet<&str> = desired.iter().map(|e| e.key.as_str()).collect();
    let mut env = desired.to_vec();
    for key in existing {
        if !wanted.contains(key) && !key.starts_with("SERVICE_") && !key.is_empty() {
            env.push(EnvVarInput::plain(key.to_string(), ""));
        }
    }
    env
}

/// The journal note that a failed run sent the instance's service a change (see [`Seen::Unconfirmed`]).
fn unconfirmed_note(instance_id: &str) -> String {
    format!("unconfirmed:{instance_id}")
}

/// Notes what the compose sent to a service means, for the resync's drift check.
async fn note_compose(ctx: &Context, service: &str, desired: &Desired) -> Result<(), ReconcileError> {
    let rendered = &desired.rendered;
    let noted = compose_note_value(&rendered.compose_yaml, &rendered.meaning);
    ctx.journal.note_changed(&compose_note(service), &noted).await?;
    Ok(())
}

/// The journal note of the env keys the bridge last pushed to a service.
fn env_keys_note(service_uuid: &str) -> String {
    format!("env_keys:{service_uuid}")
}

/// The journal note of the project an instance's service was created in (for finding it by name there
/// when the create's outcome was never learned).
fn project_note(instance_id: &str) -> String {
    format!("service_project:{instance_id}")
}

/// The public service's domain; a blank url while suspended, which Coolify takes as "no domain".
fn urls(desired: &Desired) -> Vec<ServiceUrl> {
    let port = desired.rendered.public_port;
    let url = match (&desired.also_served, desired.suspended) {
        (_, true) => String::new(),
        (Some(old), false) => format!("https://{}:{port},https://{old}:{port}", desired.domain),
        (None, false) => format!("https://{}:{port}", desired.domain),
    };
    vec![ServiceUrl {
        name: desired.rendered.public_service.clone(),
        url,
    }]
}

fn need_uuid(uuid: &Option<String>) -> Result<&str, ReconcileError> {
    uuid.as_deref().ok_or(ReconcileError::NoService)
}

/// Carries out the plan's Coolify work; a plan ends with its write-back, whose state is returned for
/// [`execute`] to send with the action's row.
async fn run_actions(
    ctx: &Context,
    inst: &BotInstance,
    life: &str,
    desired: &Desired,
    uuid: &mut Option<String>,
    actions: &[Action],
) -> Result<Option<EffectiveState>, ReconcileError> {
    let mut rest = actions;
    while let Some((action, after)) = rest.split_first() {
        rest = after;
        // The `deploying` write goes out beside the Coolify call after it: on a busy PocketBase the write
        // takes longer than the call, and Coolify need not wait for what the record shows. The final
        // write-back still comes after both. A create goes after it alone: its record write (the new
        // uuid) must not race this one.
        let beside = after.first().filter(|next| {
            *action == Action::MarkDeploying && next.changes_coolify() && **next != Action::CreateService
        });
        let write_back = match beside {
            Some(next) => {
                rest = &after[1..];
                // Boxed: side by side, its state would otherwise widen every job's future while it waits.
                let (marked, acted) = tokio::join!(
                    Box::pin(mark_deploying(ctx, inst)),
                    run_action(ctx, inst, life, desired, uuid, next, actions)
                );
                let write_back = acted?;
                marked?;
                write_back
            }
            None => run_action(ctx, inst, life, desired, uuid, action, actions).await?,
        };
        if write_back.is_some() {
            return Ok(write_back);
        }
    }
    Ok(None)
}

/// Shows `deploying` on the record, unless a retry already shows it or the error it retries.
async fn mark_deploying(ctx: &Context, inst: &BotInstance) -> Result<(), ReconcileError> {
    if matches!(inst.status, Some(InstanceStatus::Deploying | InstanceStatus::Error)) {
        return Ok(());
    }
    let patch = InstancePatch {
        status: Some(InstanceStatus::Deploying),
        error_message: Some(String::new()),
        pending_reason: Some(String::new()),
        ..Default::default()
    };
    patch_instance(ctx, &inst.id, &patch).await
}

/// One step of the plan `actions`; the write-back's state for the last.
async fn run_action(
    ctx: &Context,
    inst: &BotInstance,
    life: &str,
    desired: &Desired,
    uuid: &mut Option<String>,
    action: &Action,
    actions: &[Action],
) -> Result<Option<EffectiveState>, ReconcileError> {
    match action {
        Action::MarkDeploying => mark_deploying(ctx, inst).await?,
        Action::CreateService => {
            let created = Box::pin(create_service(ctx, inst, life, desired)).await?;
            note_compose(ctx, &created, desired).await?;
            *uuid = Some(created);
        }
        Action::UpdateService { deploy } => {
            let patch = ServicePatch {
                compose_yaml: Some(desired.rendered.compose_yaml.clone()),
                urls: Some(urls(desired)),
                instant_deploy: deploy.then_some(true),
                ..Default::default()
            };
            ctx.coolify.patch_service(need_uuid(uuid)?, &patch).await?;
            note_compose(ctx, need_uuid(uuid)?, desired).await?;
        }
        Action::SetEnv => {
            let service = need_uuid(uuid)?;
            // A service created in this run has only the vars its compose references; for one the
            // bridge pushed to before, the keys it pushed are remembered (no list call).
            let env = if actions.contains(&Action::CreateService) {
                desired.env.clone()
            } else if let Some(pushed) = ctx.journal.note(&env_keys_note(service)).await? {
                with_revoked(&desired.env, pushed.lines())
            } else {
                let existing = ctx.coolify.list_envs(service).await?;
                with_revoked(&desired.env, existing.iter().map(|v| v.key.as_str()))
            };
            ctx.coolify.bulk_upsert_envs(service, &env).await?;
            let keys: Vec<&str> = desired.env.iter().map(|e| e.key.as_str()).collect();
            ctx.journal
                .note_changed(&env_keys_note(service), &keys.join("\n"))
                .await?;
        }
        Action::StartCreated => ctx.coolify.start_stopped_service(need_uuid(uuid)?).await?,
        Action::Start => ctx.coolify.start_service(need_uuid(uuid)?).await?,
        Action::Stop => ctx.coolify.stop_service(need_uuid(uuid)?).await?,
        Action::Restart => ctx.coolify.restart_service(need_uuid(uuid)?).await?,
        Action::WaitRunning => wait_running(ctx, need_uuid(uuid)?, &desired.project_uuid).await?,
        Action::WriteBack(state) => return Ok(Some(*state)),
    }
    Ok(None)
}

async fn create_service(
    ctx: &Context,
    inst: &BotInstance,
    life: &str,
    desired: &Desired,
) -> Result<String, ReconcileError> {
    let key = service_intent_key(&inst.id);
    let name = service_name(&inst.id);
    ctx.journal.put_intent_of(&key, "service", &name, Some(life)).await?;
    ctx.journal
        .note_changed(&project_note(&inst.id), &desired.project_uuid)
        .await?;
    let req = CreateService {
        project_uuid: desired.project_uuid.clone(),
        environment_name: Some(ctx.settings.coolify.environment.clone()),
        server_uuid: ctx.deps.server_uuid().ok_or(ReconcileError::NoServerYet)?.to_string(),
        name: name.clone(),
        description: Some(format!(
            "CloudFreedom instance {} ({}) {}",
            inst.id,
            inst.name,
            incarnation::marker(life)
        )),
        compose_yaml: desired.rendered.compose_yaml.clone(),
        urls: urls(desired),
        instant_deploy: false,
        ..Default::default()
    };
    let uuid = match ctx.coolify.create_service(&req).await {
        Ok(created) => created.uuid,
        Err(e) if e.is_ambiguous() => {
            // The response was lost: the service may exist. Adopt it by name; never POST blindly again.
            let found = find_in_project(ctx, &desired.project_uuid, &name).await?;
            match found
                .into_iter()
                .find(|s| !incarnation::is_other_life(s.description.as_deref(), life))
            {
                Some(svc) => svc.uuid,
                None => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    ctx.journal.resolve_intent(&key, &uuid).await?;
    // Record the uuid at once so a crash before the final write-back still finds it.
    let patch = InstancePatch {
        coolify_service_id: Some(uuid.clone()),
        coolify_project_id: Some(desired.project_uuid.clone()),
        ..Default::default()
    };
    patch_instance(ctx, &inst.id, &patch).await?;
    info!(record_id = %inst.id, coolify_uuid = %uuid, "service created");
    Ok(uuid)
}

/// Waits for `running:*` without holding a worker: starts take Coolify seconds to minutes (image pulls),
/// and a burst of them must not stall every other record's job. The project lets the status board read
/// the waiters of one tenant in one call.
async fn wait_running(ctx: &Context, uuid: &str, project_uuid: &str) -> Result<(), ReconcileError> {
    crate::queue::without_slot(async {
        let _waiting = ctx.statuses.waiter(uuid, Some(project_uuid));
        let deadline = Instant::now() + ctx.settings.reconcile.running_timeout;
        // A start takes Coolify seconds at least: a read at once would only find it starting.
        let mut after = Instant::now() + ctx.statuses.interval();
        loop {
            let (asked, status) = ctx.statuses.status_after(uuid, after).await?;
            if status.as_ref().is_some_and(ServiceStatus::is_running) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ReconcileError::NotRunning {
                    uuid: uuid.to_string(),
                    secs: ctx.settings.reconcile.running_timeout.as_secs(),
                    last: status.map(|s| s.to_string()).unwrap_or_else(|| "not listed".into()),
                });
            }
            // A record has one job at a time: a stop, a fix or a deletion made now would otherwise wait for
            // this start (up to the timeout, for a service that never runs).
            if let Some(job) = crate::queue::current_job() {
                match ctx.journal.changed_since_claim(job.job_id).await {
                    Ok(true) => return Err(ReconcileError::Superseded { uuid: uuid.to_string() }),
                    Ok(false) => {}
                    // The start is not at fault: it waits on, and a newer change waits for it as before.
                    Err(e) => warn!(coolify_uuid = %uuid, error = %e, "cannot tell whether the record changed"),
                }
            }
            // The next round's reading: the board paces rounds.
            after = asked + Duration::from_millis(1);
        }
    })
    .await
}

/// The record is gone: destroy its service(s) and verify they are gone.
async fn destroy(ctx: &Context, id: &str, run: &RunActor) -> Result<(), ReconcileError> {
    if retention::retain_gone(ctx, id, run).await? {
        return Ok(());
    }
    let key = service_intent_key(id);
    let name = service_name(id);
    let uuids: Vec<String> = match ctx.journal.get_intent(&key).await? {
        // No create was ever tried for this record: nothing to destroy (a stray `cf-` service is the
        // orphan scanner's).
        None => Vec::new(),
        Some(Intent {
            coolify_uuid: Some(uuid),
            ..
        }) => vec![uuid],
        // The create's outcome was never learned: look for it by name in the project it was made in,
        // or everywhere for an intent from before projects were noted.
        Some(_) => match ctx.journal.note(&project_note(id)).await? {
            Some(project) => find_in_project(ctx, &project, &name).await?,
            None => ctx.coolify.find_services_by_name(&name).await?,
        }
        .into_iter()
        .map(|s| s.uuid)
        .collect(),
    };
    let mut removed = 0;
    for DeletedInstanceAction::DeleteService(uuid) in plan::plan_deleted_instance(&uuids) {
        let log = ActionLog::instance(id, None, false, DeployAction::Destroy);
        let result = ctx
            .coolify
            .delete_service_and_wait(&uuid, Duration::from_secs(120))
            .await;
        let log = log.by(&run.deleter().await?);
        match result {
            Ok(()) | Err(CoolifyError::NotFound { .. }) => {
                log.keep(
                    ctx,
                    DeployStatus::Success,
                    format!("service {uuid} destroyed and verified gone"),
                )
                .await?;
                removed += 1;
            }
            Err(e) => {
                log.keep(
                    ctx,
                    DeployStatus::Failed,
                    format!("could not destroy service {uuid}: {e}"),
                )
                .await?;
                return Err(e.into());
            }
        }
    }
    ctx.journal.clear_intent(&key).await?;
    for uuid in &uuids {
        ctx.journal.forget_note(&env_keys_note(uuid)).await?;
        ctx.journal.forget_note(&compose_note(uuid)).await?;
    }
    ctx.journal.forget_note(&drift_note(id)).await?;
    ctx.journal.forget_note(&unconfirmed_note(id)).await?;
    ctx.journal.forget_note(&project_note(id)).await?;
    // Nothing of a deleted record outlives it: a later record with the same id starts from nothing.
    ctx.secrets.delete(id).await?;
    ctx.journal.forget_router_key(id).await?;
    if removed > 0 {
        info!(record_id = %id, services = removed, "instance destroyed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn act_first_only_on_a_settled_outcome_of_the_applied_spec() {
        let applied = |state| Spec::new(state, "compose", "env", "").fingerprint();
        let inst = |status: &str, state| -> BotInstance {
            serde_json::from_value(serde_json::json!({
                "id": "abcdefghijklmno", "coolify_service_id": "svc1", "status": status,
                "applied_hash": applied(state),
            }))
            .expect("record")
        };
        let intent = Intent {
            key: "service:abcdefghijklmno".into(),
            kind: "service".into(),
            name: "cf-abcdefghijklmno".into(),
            coolify_uuid: Some("svc1".into()),
            created_at: 0,
            updated_at: 0,
            incarnation: Some("life".into()),
        };
        let present = |run| {
            Some(Observed::Present {
                uuid: "svc1".into(),
                run,
            })
        };
        let known = |status, state| known_service(Some(&intent), "life", &inst(status, state));
        assert_eq!(known("running", EffectiveState::Running), present(RunState::Running));
        assert_eq!(known("stopped", EffectiveState::Stopped), present(RunState::Stopped));
        // A failure, an interrupted deploy, or a status that disagrees with the applied spec: read Coolify.
        for (status, state) in [
            ("error", EffectiveState::Running),
            ("deploying", EffectiveState::Running),
            ("pending", EffectiveState::Running),
            ("running", EffectiveState::Stopped),
            ("stopped", EffectiveState::Running),
        ] {
            assert_eq!(known(status, state), None, "{status} with {state:?} applied");
        }
        assert_eq!(
            known_service(Some(&intent), "other life", &inst("running", EffectiveState::Running)),
            None
        );
    }

    #[test]
    fn blocked_instances_wait_in_pending_or_show_the_error() {
        let waits = |reason: &str| BlockedView {
            status: InstanceStatus::Pending,
            error_message: String::new(),
            pending_reason: reason.to_string(),
        };
        let slot = "quota exceeded: plan starter allows 2 stacks".to_string();
        assert_eq!(
            blocked_status(&Blocked::NoStackSlot(slot)),
            waits("waiting for a stack slot: quota exceeded: plan starter allows 2 stacks")
        );
        assert_eq!(
            blocked_status(&Blocked::MissingSecrets(vec!["TELEGRAM_BOT_TOKEN".into()])),
            waits("waiting for secrets: TELEGRAM_BOT_TOKEN")
        );
        assert_eq!(
            blocked_status(&Blocked::TenantNotReady),
            waits("waiting for the tenant's Coolify project")
        );
        let cpu = "quota exceeded: requested 1 CPU but plan starter allows at most 0.25 CPU per stack".to_string();
        assert_eq!(
            blocked_status(&Blocked::Quota(cpu.clone())),
            BlockedView {
                status: InstanceStatus::Error,
                error_message: cpu,
                pending_reason: String::new(),
            }
        );
    }
}
