//! Typed Coolify v4 client: a shared request budget, a retry policy that never repeats creates,
//! and errors that say what to fix. See docs/coolify-openapi.yaml and the reference notes for the
//! API's real behaviour.

pub mod budget;
pub mod calls;
pub mod client;
pub mod deploys;
pub mod error;
pub mod fleet;
pub mod retry;
pub mod status;
pub mod types;

pub use calls::{CallLog, CoolifyCall};
pub use client::{CoolifyClient, MAX_RETRIES, compose_fingerprint, encode_compose};
pub use error::{CoolifyError, DomainConflict};
pub use fleet::{FleetList, ServiceBrief};
pub use status::{Health, ServiceStatus};
pub use types::*;
