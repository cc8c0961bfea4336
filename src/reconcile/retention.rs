//! Deletion with retention (DESIGN.md section 3): a deleted instance is stopped and its door closed at once
//! (service stopped, domain removed from Coolify and from the record, router key withdrawn), its service
//! and volumes are kept until the retention ends (`lifecycle.retention_secs`, per plan), then destroyed with
//! a final `deploy_logs` row; the record, when it was only marked, is deleted then.
//!
//! Two doors ask for it: `deletion_requested_at` on the instance or its tenant (the tenant's user, the Admin
//! Portal), and a PocketBase delete. Only the first can be restored (the admin API and CLI clear the field;
//! the Admin Portal may clear it too): a deleted record cannot come back as itself (a new record is a new
//! incarnation, `crate::incarnation`, and inherits nothing by design), so a hard-deleted instance's service
//! is only kept for the period, for an operator to recover data by hand or purge. The journal's
//! `deletions` row carries what this needs once the record is gone.

use std::time::Duration;

use serde_json::json;
use tracing::{info, warn};

use super::Periodic;
use super::actor::{Actor, RunActor};
use super::context::{ActionLog, Context, service_intent_key, service_name};
use super::error::ReconcileError;
use super::outcome;
use crate::coolify::{CoolifyError, ServicePatch, ServiceUrl};
use crate::events::{Action as EventAction, Collection, NewEvent, Source};
use crate::incarnation;
use crate::journal::{Deletion, DeletionState, now_ms};
use crate::pocketbase::records::{
    BotInstance, DeployAction, DeployStatus, InstancePatch, InstanceStatus, Tenant, format_pb_date,
};
use crate::pocketbase::{BatchRequest, PbError};

/// How long a destroy waits for Coolify's asynchronous delete to finish.
const DESTROY_PATIENCE: Duration = Duration::from_secs(120);

/// Whether a live instance is asked to be deleted, by its own field or its tenant's.
pub fn asked(inst: &BotInstance, tenant: Option<&Tenant>) -> bool {
    inst.deletion_requested_at.is_some() || tenant.is_some_and(|t| t.deletion_requested_at.is_some())
}

/// What to do with a deleted instance now: pure, from its row and the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Stop it and close its door.
    Close,
    /// Nothing until the retention ends.
    Wait,
    /// Destroy its service and volumes; `purge`: an operator asked for it before the end.
    Destroy { purge: bool },
    /// Destroyed already: only a lingering record is left to delete.
    Done,
}

pub fn step(row: &Deletion, now: i64) -> Step {
    match row.state {
        DeletionState::Destroyed => Step::Done,
        DeletionState::Purging => Step::Destroy { purge: true },
        DeletionState::Retained if row.expires_at <= now => Step::Destroy { purge: false },
        DeletionState::Retained if !row.closed => Step::Close,
        DeletionState::Retained => Step::Wait,
    }
}

fn expiry(now: i64, retention: Duration) -> i64 {
    now.saturating_add(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX))
}

pub(super) fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| format_pb_date(&d))
        .unwrap_or_default()
}

/// A live record asks for its deletion: begins its retention, closes it, and destroys it (deleting the
/// record) once the retention ends. Returns the record's `updated` while it stays, `None` once deleted.
pub async fn retain_live(
    ctx: &Context,
    inst: &BotInstance,
    tenant: Option<&Tenant>,
    life: &str,
    actor: &Actor,
) -> Result<Option<String>, ReconcileError> {
    let now = now_ms();
    let retention = ctx.settings.lifecycle.retention_for(tenant.and_then(|t| t.plan_tier));
    let intent = ctx.journal.get_intent(&service_intent_key(&inst.id)).await?;
    let uuid = intent
        .filter(|i| i.incarnation.as_deref().is_none_or(|t| t == life))
        .and_then(|i| i.coolify_uuid)
        .or_else(|| inst.coolify_service_id.clone());
    let row = ctx
        .journal
        .begin_deletion(Deletion {
            record_id: inst.id.clone(),
            tenant_id: Some(inst.tenant.clone()),
            incarnation: life.to_string(),
            coolify_uuid: uuid,
            requested_at: now,
            expires_at: expiry(now, retention),
            state: DeletionState::Retained,
            closed: false,
            record_gone: false,
        })
        .await?;
    let updated = inst.updated.as_ref().map(format_pb_date).unwrap_or_default();
    match step(&row, now) {
        Step::Close => {
            close(ctx, Some(inst), &row, actor).await?;
            Ok(Some(updated))
        }
        Step::Wait => Ok(Some(updated)),
        Step::Destroy { purge } => {
            destroy(ctx, &row, purge).await?;
            delete_record(ctx, &row).await?;
            Ok(None)
        }
        Step::Done => {
            delete_record(ctx, &row).await?;
            Ok(None)
        }
    }
}

/// A live record that asks for no deletion: a retention of this incarnation has ended (the Admin Portal or
/// an operator cleared the field), and the normal reconcile brings the stack back. Its closing blanked
/// `applied_hash`, so that reconcile pushes the domain and a fresh key and starts it as asked.
/// A row of an earlier record with this id is settled as destroyed: this record's run retires that
/// record's service (see `instance::intent_of_this_life`), and nothing of it may be restored into this one.
pub async fn end_if_restored(ctx: &Context, id: &str, life: &str) -> Result<(), ReconcileError> {
    let Some(row) = ctx.journal.deletion(id).await? else {
        return Ok(());
    };
    if row.incarnation == life {
        if ctx.journal.end_deletion(id, life).await? {
            info!(record_id = %id, "deletion withdrawn: instance restored");
        }
    } else if row.state != DeletionState::Destroyed {
        ctx.journal
            .update_deletion(id, &row.incarnation, Some(DeletionState::Destroyed), None, None)
            .await?;
        info!(record_id = %id, "a new record reuses the id of a retained one: the retained one is retired");
    }
    Ok(())
}

/// The record is gone: `true` when retention takes care of it (a row exists, or one was begun), `false`
/// when it is to be destroyed at once (no retention configured, or nothing of it in Coolify).
pub async fn retain_gone(ctx: &Context, id: &str, run: &RunActor) -> Result<bool, ReconcileError> {
    let now = now_ms();
    let row = match ctx.journal.deletion(id).await? {
        Some(row) => {
            if !row.record_gone {
                ctx.journal
                    .update_deletion(id, &row.incarnation, None, None, Some(true))
                    .await?;
            }
            row
        }
        None => {
            let Some(intent) = ctx.journal.get_intent(&service_intent_key(id)).await? else {
                return Ok(false);
            };
            let (Some(uuid), Some(life)) = (intent.coolify_uuid, intent.incarnation) else {
                return Ok(false);
            };
            let lifecycle = &ctx.settings.lifecycle;
            if lifecycle.retention.is_zero() && !lifecycle.has_plan_retentions() {
                return Ok(false);
            }
            let tenant = ctx.journal.last_known_tenant(id).await?;
            // The plan is read only when one has a retention of its own: one PocketBase read per delete.
            let plan = match &tenant {
                Some(t) if lifecycle.has_plan_retentions() => ctx.pb.get_tenant(t).await?.and_then(|t| t.plan_tier),
                _ => None,
            };
            let retention = lifecycle.retention_for(plan);
            if retention.is_zero() {
                return Ok(false);
            }
            ctx.journal
                .begin_deletion(Deletion {
                    record_id: id.to_string(),
                    tenant_id: tenant,
                    incarnation: life,
                    coolify_uuid: Some(uuid),
                    requested_at: now,
                    expires_at: expiry(now, retention),
                    state: DeletionState::Retained,
                    closed: false,
                    record_gone: true,
                })
                .await?
        }
    };
    match step(&row, now) {
        Step::Close => close(ctx, None, &row, &run.deleter().await?).await?,
        Step::Destroy { purge } => {
            destroy(ctx, &row, purge).await?;
            wake_tenant(ctx, &row).await?;
        }
        Step::Wait | Step::Done => {}
    }
    Ok(true)
}

/// A deleted tenant's services, found in its project: each begins its retention (its instance record went
/// with the tenant's, and its own delete may not have been seen yet). Returns how many are still kept.
pub async fn retain_tenant_services(
    ctx: &Context,
    tenant_id: &str,
    services: &[crate::coolify::Service],
    run: &RunActor,
) -> Result<u64, ReconcileError> {
    let retention = ctx.settings.lifecycle.retention;
    if retention.is_zero() {
        return Ok(0);
    }
    let now = now_ms();
    for svc in services {
        let (Some(id), Some(life)) = (
            svc.name.strip_prefix("cf-"),
            incarnation::marked(svc.description.as_deref()),
        ) else {
            continue;
        };
        if ctx.journal.deletion(id).await?.is_some_and(|r| r.incarnation == life) {
            continue;
        }
        let row = ctx
            .journal
            .begin_deletion(Deletion {
                record_id: id.to_string(),
                tenant_id: Some(tenant_id.to_string()),
                incarnation: life.to_string(),
                coolify_uuid: Some(svc.uuid.clone()),
                requested_at: now,
                expires_at: expiry(now, retention),
                state: DeletionState::Retained,
                closed: false,
                record_gone: true,
            })
            .await?;
        if step(&row, now) == Step::Close {
            close(ctx, None, &row, &run.deleter().await?).await?;
        }
    }
    Ok(ctx.journal.retained_of_tenant(tenant_id).await?)
}

/// Stops the service and withdraws its ingress: its domains leave Coolify (Traefik no longer routes to it),
/// and its router key is rotated in the journal and cleared from the record (a router refuses every key
/// of a record without `router_key_id`; a restore issues a fresh one).
async fn close(ctx: &Context, inst: Option<&BotInstance>, row: &Deletion, actor: &Actor) -> Result<(), ReconcileError> {
    let id = row.record_id.as_str();
    let mut closed_uuid = None;
    if let Some(uuid) = &row.coolify_uuid {
        match ctx.coolify.get_service(uuid).await {
            Ok(svc) if !incarnation::is_other_life(svc.description.as_deref(), &row.incarnation) => {
                // Anything but `exited` runs some containers or will (degraded, starting): see `plan::RunState`.
                if !svc.status.is_stopped() {
                    ctx.coolify.stop_service(uuid).await?;
                }
                let urls: Vec<ServiceUrl> = svc
                    .applications
                    .iter()
                    .filter(|a| a.fqdn.as_deref().is_some_and(|f| !f.is_empty()))
                    .map(|a| ServiceUrl {
                        name: a.name.clone(),
                        url: String::new(),
                    })
                    .collect();
                if !urls.is_empty() {
                    let patch = ServicePatch {
                        urls: Some(urls),
                        ..Default::default()
                    };
                    ctx.coolify.patch_service(uuid, &patch).await?;
                }
                closed_uuid = Some(uuid.clone());
            }
            Ok(_) | Err(CoolifyError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if inst.is_some() {
        ctx.journal.rotate_router_key(id, &row.incarnation).await?;
    } else {
        ctx.journal.forget_router_key(id).await?;
        ctx.secrets.delete(id).await?;
    }
    let message = format!(
        "deletion requested: {}, domain removed, router key withdrawn; kept with its volumes until {}, then destroyed",
        match &closed_uuid {
            Some(uuid) => format!("service {uuid} stopped"),
            None => "no service to stop".to_string(),
        },
        when(row.expires_at)
    );
    let log = ActionLog::instance(id, row.tenant_id.as_deref(), inst.is_some(), DeployAction::Stop)
        .by(actor)
        .keyed(&["retention: closed", &row.incarnation, &row.expires_at.to_string()]);
    match inst {
        Some(inst) => {
            let patch = InstancePatch {
                status: Some(InstanceStatus::Stopped),
                error_message: Some(String::new()),
                pending_reason: Some(String::new()),
                domain: Some(String::new()),
                applied_hash: Some(String::new()),
                router_key_id: Some(String::new()),
                retained_until: Some(when(row.expires_at)),
                ..Default::default()
            };
            let patch = BatchRequest::patch_instance(&inst.id, &patch)?;
            outcome::commit(
                ctx,
                Collection::BotInstances,
                id,
                Some(patch),
                Some(log.row(DeployStatus::Success, message)),
            )
            .await?;
        }
        None => log.keep(ctx, DeployStatus::Success, message).await?,
    }
    ctx.journal
        .update_deletion(id, &row.incarnation, None, Some(true), None)
        .await?;
    info!(record_id = %id, coolify_uuid = ?closed_uuid, expires_at = row.expires_at, "deleted instance closed and retained");
    Ok(())
}

/// Destroys the retained service and its volumes (Coolify's delete removes volumes unless told not to),
/// writes the final row (the bridge's at the end of the retention, the operator's for a purge), and
/// forgets everything of the incarnation.
async fn destroy(ctx: &Context, row: &Deletion, purge: bool) -> Result<(), ReconcileError> {
    let id = row.record_id.as_str();
    let mut uuids: Vec<String> = row.coolify_uuid.iter().cloned().collect();
    for svc in ctx.coolify.find_services_by_name(&service_name(id)).await? {
        if incarnation::marked(svc.description.as_deref()) == Some(row.incarnation.as_str())
            && !uuids.contains(&svc.uuid)
        {
            uuids.push(svc.uuid);
        }
    }
    let actor = if purge { Actor::Operator } else { Actor::Bridge };
    let why = if purge { "purged" } else { "retention ended" };
    let mut gone = Vec::new();
    for uuid in &uuids {
        let log = ActionLog::instance(id, row.tenant_id.as_deref(), false, DeployAction::Destroy).by(&actor);
        match ctx.coolify.delete_service_and_wait(uuid, DESTROY_PATIENCE).await {
            Ok(()) | Err(CoolifyError::NotFound { .. }) => gone.push(uuid.clone()),
            Err(e) => {
                log.keep(
                    ctx,
                    DeployStatus::Failed,
                    format!("{why}: could not destroy service {uuid}: {e}"),
                )
                .await?;
                return Err(e.into());
            }
        }
    }
    let message = match gone.as_slice() {
        [] => format!("{why}: no service was left to destroy; instance deleted"),
        uuids => format!(
            "{why}: service {} and its volumes destroyed and verified gone; instance deleted",
            uuids.join(", ")
        ),
    };
    // Keyed by the incarnation: a run repeated after a crash writes the same final row, once.
    ActionLog::instance(id, row.tenant_id.as_deref(), false, DeployAction::Destroy)
        .by(&actor)
        .keyed(&["retention: destroyed", &row.incarnation])
        .keep(ctx, DeployStatus::Success, message)
        .await?;
    ctx.journal
        .update_deletion(id, &row.incarnation, Some(DeletionState::Destroyed), None, None)
        .await?;
    let key = service_intent_key(id);
    if ctx
        .journal
        .get_intent(&key)
        .await?
        .is_some_and(|i| i.incarnation.as_deref().is_none_or(|t| t == row.incarnation))
    {
        ctx.journal.clear_intent(&key).await?;
    }
    ctx.secrets.delete(id).await?;
    ctx.journal.forget_router_key(id).await?;
    info!(record_id = %id, services = gone.len(), purge, "retained instance destroyed");
    Ok(())
}

/// Deletes a marked record whose service is destroyed (a missing record is fine: it is the goal), then
/// wakes its tenant.
async fn delete_record(ctx: &Context, row: &Deletion) -> Result<(), ReconcileError> {
    match ctx.pb.delete("bot_instances", &row.record_id).await {
        Ok(()) | Err(PbError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    wake_tenant(ctx, row).await
}

/// A tenant being deleted goes after its last instance: it is woken once the instance's service and record
/// are gone (woken earlier, it could still see the record and wait for a wake-up that never comes).
async fn wake_tenant(ctx: &Context, row: &Deletion) -> Result<(), ReconcileError> {
    match &row.tenant_id {
        Some(tenant) => {
            let why = format!("instance-destroyed:{}:{}", row.record_id, row.incarnation);
            wake(ctx, Collection::Tenants, tenant, &why).await
        }
        None => Ok(()),
    }
}

/// Journals a wake-up of a record's job (the bridge's own, so it names no user); `why` makes it unique.
pub(super) async fn wake(ctx: &Context, collection: Collection, id: &str, why: &str) -> Result<(), ReconcileError> {
    let event = NewEvent {
        source: Source::Resync,
        collection,
        record_id: id.to_string(),
        action: EventAction::Update,
        record_updated: None,
        dedupe_key: format!("bridge-wake:{}:{id}:{why}", collection.as_str()),
        delivery_id: None,
        payload: json!({"reason": "bridge", "detail": why}),
        fingerprint: None,
        trace_context: None,
    };
    ctx.intake.submit(event).await?;
    Ok(())
}

/// Wakes the job of every instance whose retention ended or whose purge was asked: the job destroys it.
/// Runs from the journal alone, so a bridge that was down across an expiry catches up at its first tick.
pub struct RetentionSweeper {
    ctx: Context,
}

impl RetentionSweeper {
    pub fn new(ctx: Context) -> Self {
        RetentionSweeper { ctx }
    }
}

/// Rows looked at per tick; the next tick takes the rest.
const SWEEP_BATCH: usize = 100;

impl Periodic for RetentionSweeper {
    const NAME: &'static str = "retention sweep";

    fn interval(&self) -> Duration {
        self.ctx.settings.lifecycle.retention_sweep
    }

    async fn tick(&mut self) -> Result<(), ReconcileError> {
        for row in self.ctx.journal.due_deletions(now_ms(), SWEEP_BATCH).await? {
            let why = format!("{}:{}:{}", row.state, row.incarnation, row.expires_at);
            if let Err(e) = wake(&self.ctx, Collection::BotInstances, &row.record_id, &why).await {
                warn!(record_id = %row.record_id, error = %e, "could not wake a deleted instance's job");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: DeletionState, expires_at: i64, closed: bool) -> Deletion {
        Deletion {
            record_id: "i1".into(),
            tenant_id: Some("t1".into()),
            incarnation: "life".into(),
            coolify_uuid: Some("svc".into()),
            requested_at: 0,
            expires_at,
            state,
            closed,
            record_gone: false,
        }
    }

    #[test]
    fn steps_follow_the_row_and_the_clock() {
        use DeletionState::*;
        assert_eq!(step(&row(Retained, 100, false), 50), Step::Close);
        assert_eq!(step(&row(Retained, 100, true), 50), Step::Wait);
        assert_eq!(step(&row(Retained, 100, true), 100), Step::Destroy { purge: false });
        assert_eq!(step(&row(Retained, 100, false), 200), Step::Destroy { purge: false });
        assert_eq!(step(&row(Purging, 100, true), 50), Step::Destroy { purge: true });
        assert_eq!(step(&row(Destroyed, 100, true), 500), Step::Done);
        assert_eq!(expiry(5, Duration::from_secs(2)), 2005);
        assert_eq!(expiry(i64::MAX - 1, Duration::from_secs(2)), i64::MAX);
    }
}
