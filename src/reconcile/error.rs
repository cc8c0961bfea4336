//! Reconcile failures and how the queue should treat them.

use crate::coolify::CoolifyError;
use crate::journal::JournalError;
use crate::pocketbase::PbError;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Worth retrying with backoff (Coolify or PocketBase down, rate limits, timeouts).
    #[error("{0}")]
    Transient(String),
    /// Will not succeed until the record (or its tenant, template or secrets) changes.
    #[error("{0}")]
    NeedsChange(String),
    /// Like `NeedsChange`, but the detail names resources outside the tenant (another service holding
    /// the domain): operators see `detail` (logs, the job's `last_error`), the tenant sees `public`.
    #[error("{detail}")]
    Confidential { public: String, detail: String },
}

/// What a tenant reads when Coolify refuses a domain held elsewhere.
pub const DOMAIN_IN_USE: &str = "this domain is already in use: choose another subdomain";

impl ReconcileError {
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            ReconcileError::NeedsChange(_) | ReconcileError::Confidential { .. }
        )
    }

    /// The message for the tenant's own record (`error_message`, `deploy_logs`): never names another
    /// tenant's resources.
    pub fn tenant_message(&self) -> String {
        match self {
            ReconcileError::Confidential { public, .. } => public.clone(),
            other => other.to_string(),
        }
    }
}

impl From<PbError> for ReconcileError {
    fn from(e: PbError) -> Self {
        ReconcileError::Transient(format!("PocketBase: {e}"))
    }
}

impl From<JournalError> for ReconcileError {
    fn from(e: JournalError) -> Self {
        ReconcileError::Transient(format!("journal: {e}"))
    }
}

impl From<CoolifyError> for ReconcileError {
    fn from(e: CoolifyError) -> Self {
        match e {
            CoolifyError::Conflict { .. } => ReconcileError::Confidential {
                public: DOMAIN_IN_USE.to_string(),
                detail: e.to_string(),
            },
            // The request itself is wrong; repeating it cannot help.
            CoolifyError::Validation { .. } | CoolifyError::InvalidInput(_) => {
                ReconcileError::NeedsChange(e.to_string())
            }
            other => ReconcileError::Transient(other.to_string()),
        }
    }
}
