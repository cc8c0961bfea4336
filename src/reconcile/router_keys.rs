//! Rotating one stack's router key, without touching any other: a new key id for the instance's
//! incarnation, pushed to Coolify by the record's next reconcile (env update and restart), after which
//! the record's `router_key_id` names the new key and routers refuse the old one.
//!
//! Reusable wherever keys must change: an operator's request today, a tenant's suspension later.

use tracing::info;

use super::context::Context;
use super::error::ReconcileError;
use super::instance::life_of;
use crate::events::{Collection, Replay};

/// The outcome of a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The new key id (not a secret: the key itself is never shown).
    pub key_id: String,
    /// Jobs queued to push it (the dispatcher is woken).
    pub enqueued: usize,
}

/// Rotates the router key of a live instance; `None` when there is no such instance.
pub async fn rotate(ctx: &Context, instance_id: &str) -> Result<Option<Rotated>, ReconcileError> {
    let Some(inst) = ctx.pb.get_instance(instance_id).await? else {
        return Ok(None);
    };
    let key_id = ctx.journal.rotate_router_key(&inst.id, &life_of(&inst)).await?;
    let enqueued = ctx
        .intake
        .replay(Replay::Record(Collection::BotInstances, inst.id.clone()))
        .await?;
    info!(record_id = %inst.id, router_key_id = %key_id, "router key rotated");
    Ok(Some(Rotated { key_id, enqueued }))
}
