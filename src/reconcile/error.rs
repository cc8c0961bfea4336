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
}

impl ReconcileError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, ReconcileError::NeedsChange(_))
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
            // The request itself is wrong; repeating it cannot help.
            CoolifyError::Validation { .. } | CoolifyError::Conflict { .. } | CoolifyError::InvalidInput(_) => {
                ReconcileError::NeedsChange(e.to_string())
            }
            other => ReconcileError::Transient(other.to_string()),
        }
    }
}
