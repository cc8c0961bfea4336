//! cf-bridge: keeps Coolify in step with the PocketBase system of record.

pub mod app;
pub mod backoff;
pub mod bounded;
pub mod cli;
pub mod config;
pub mod coolify;
pub mod dependencies;
pub mod doctor;
pub mod events;
pub mod http;
pub mod incarnation;
pub mod intake;
pub mod journal;
pub mod metrics;
pub mod pocketbase;
pub mod queue;
pub mod quota;
pub mod reconcile;
pub mod resync;
pub mod rollout;
pub mod secrets;
pub mod telemetry;
pub mod templates;
pub mod text;
pub mod webhook;
