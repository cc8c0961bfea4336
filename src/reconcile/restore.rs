//! An operator's restore and purge of a deleted instance (admin API, CLI): each checks the instance's
//! deletion row and record, refuses with a reason that changes nothing, or hands the work to the instance's
//! job (see [`super::retention`]).

use serde_json::json;
use tracing::info;

use super::actor::Actor;
use super::context::{ActionLog, Context};
use super::error::ReconcileError;
use super::instance;
use super::retention::{wake, when};
use crate::events::Collection;
use crate::journal::{Deletion, DeletionState, now_ms};
use crate::pocketbase::records::{DeployAction, DeployStatus};

/// Why an operator's restore or purge was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("no bot instance {0} exists or is kept for deletion")]
    Unknown(String),
    #[error("bot instance {0} is not deleted")]
    NotDeleted(String),
    #[error("bot instance {0} was destroyed (its retention ended or it was purged): its service and data are gone")]
    Destroyed(String),
    #[error("bot instance {0} is being purged")]
    Purging(String),
    #[error(
        "the record of bot instance {id} was deleted in PocketBase, so it cannot be restored (only an instance \
         marked with deletion_requested_at can); its stopped service is kept until {until}, or purge it now"
    )]
    RecordGone { id: String, until: String },
    #[error("bot instance {0}'s tenant is being deleted: clear the tenant's deletion_requested_at first")]
    TenantDeleting(String),
    #[error("the deletion of bot instance {0} was not taken up by the bridge yet; retry in a moment")]
    NotTakenUp(String),
}

/// An operator action's outcome.
#[derive(Debug)]
pub enum Answer<T> {
    Done(T),
    Refused(Refused),
}

/// Restores a marked instance within its retention: ends the row, clears the record's fields, and wakes its
/// job, which brings back its domain with a fresh router key and starts the same service if desired.
pub async fn restore(ctx: &Context, id: &str) -> Result<Answer<Deletion>, ReconcileError> {
    let inst = ctx.pb.get_instance(id).await?;
    let row = ctx.journal.deletion(id).await?;
    let refused = |r| Ok(Answer::Refused(r));
    let row = match (row, &inst) {
        (Some(row), _) if row.state == DeletionState::Destroyed => return refused(Refused::Destroyed(id.into())),
        (Some(row), _) if row.state == DeletionState::Purging => return refused(Refused::Purging(id.into())),
        (Some(row), Some(inst)) if row.incarnation == instance::life_of(inst) => row,
        (Some(row), _) if row.record_gone || inst.is_none() => {
            return refused(Refused::RecordGone {
                id: id.into(),
                until: when(row.expires_at),
            });
        }
        (_, None) => return refused(Refused::Unknown(id.into())),
        (_, Some(inst)) if inst.deletion_requested_at.is_none() => return refused(Refused::NotDeleted(id.into())),
        // Marked, not taken up yet (or a row of an earlier record with this id): clearing the mark is all.
        (_, Some(inst)) => Deletion {
            record_id: id.into(),
            tenant_id: Some(inst.tenant.clone()),
            incarnation: instance::life_of(inst),
            coolify_uuid: inst.coolify_service_id.clone(),
            requested_at: 0,
            expires_at: 0,
            state: DeletionState::Retained,
            closed: false,
            record_gone: false,
        },
    };
    if let Some(tenant) = &row.tenant_id
        && ctx
            .pb
            .get_tenant(tenant)
            .await?
            .is_some_and(|t| t.deletion_requested_at.is_some())
    {
        return refused(Refused::TenantDeleting(id.into()));
    }
    // The row goes first: were the record's write to fail, its job would only begin a new retention.
    ctx.journal.end_deletion(id, &row.incarnation).await?;
    ctx.pb
        .patch::<serde_json::Value>(
            "bot_instances",
            id,
            &json!({"deletion_requested_at": "", "retained_until": ""}),
        )
        .await?;
    ActionLog::instance(id, row.tenant_id.as_deref(), true, DeployAction::Start)
        .by(&Actor::Operator)
        .keep(
            ctx,
            DeployStatus::Success,
            "restored by an operator: deletion withdrawn; domain and a fresh router key come back with its service",
        )
        .await?;
    wake(ctx, Collection::BotInstances, id, &format!("restored:{}", now_ms())).await?;
    info!(record_id = %id, "instance restored by an operator");
    Ok(Answer::Done(row))
}

/// Destroys a deleted instance at once, within its retention: its job does it, as at the end of the
/// retention, but with the operator as actor.
pub async fn purge(ctx: &Context, id: &str) -> Result<Answer<Deletion>, ReconcileError> {
    match ctx.journal.purge_deletion(id).await? {
        Some(row) => match row.state {
            DeletionState::Retained => {
                wake(ctx, Collection::BotInstances, id, &format!("purge:{}", row.incarnation)).await?;
                info!(record_id = %id, "purge of a deleted instance asked by an operator");
                Ok(Answer::Done(Deletion {
                    state: DeletionState::Purging,
                    ..row
                }))
            }
            DeletionState::Purging => Ok(Answer::Refused(Refused::Purging(id.into()))),
            DeletionState::Destroyed => Ok(Answer::Refused(Refused::Destroyed(id.into()))),
        },
        None => Ok(Answer::Refused(match ctx.pb.get_instance(id).await? {
            None => Refused::Unknown(id.into()),
            Some(inst) if inst.deletion_requested_at.is_none() => Refused::NotDeleted(id.into()),
            Some(_) => Refused::NotTakenUp(id.into()),
        })),
    }
}
