//! PocketBase: REST client with superuser auth, record types and typed errors; realtime SSE consumer.

pub mod batches;
pub mod client;
pub mod error;
pub mod realtime;
pub mod records;
mod sources;
mod token;
pub mod write_gate;

pub use client::{BatchRequest, EmptyTail, PbClient};
pub use error::{FieldError, FieldErrors, PbError};
pub use records::{
    BotInstance, BotTemplate, DeployAction, DeployLog, DeployStatus, DesiredState, InstancePatch, InstanceStatus,
    NewDeployLog, PlanTier, Tenant, TenantPatch, TenantStatus,
};
pub use sources::ResyncLister;
