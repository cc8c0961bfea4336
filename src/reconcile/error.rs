//! Reconcile failures, typed to the edge, and the policy the queue applies to each (as kube-rs's
//! `error_policy` decides a requeue from the error).
//!
//! The `Display` of an error is what the record's `error_message`, the deploy log and the job's
//! `last_error` show, so each variant's text stays what an operator can act on.

use crate::coolify::CoolifyError;
use crate::dependencies::{Dependency, coolify_unavailable, pocketbase_unavailable};
use crate::events::SinkError;
use crate::journal::JournalError;
use crate::pocketbase::PbError;
use crate::queue::ErrorPolicy;
use crate::secrets::SecretsError;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("PocketBase: {0}")]
    PocketBase(#[source] PbError),
    #[error("{0}")]
    Coolify(#[source] CoolifyError),
    #[error("journal: {0}")]
    Journal(#[source] JournalError),
    #[error("secret store: {0}")]
    Secrets(#[source] SecretsError),
    /// An event the executor produced (a tenant waking its instances) could not be journaled.
    #[error("{0}")]
    Intake(#[source] SinkError),
    /// The record (or its tenant, template or secrets) must change first; the message says how.
    #[error("{0}")]
    Blocked(String),
    #[error("service {uuid} did not reach running within {secs} s (last status: {last})")]
    NotRunning { uuid: String, secs: u64, last: String },
    /// A newer change to the record came while the run waited for its service to reach running: the run
    /// ends there, and the next one carries out the record as it is now.
    #[error("a newer change to the record came while service {uuid} was starting; the next run carries it out")]
    Superseded { uuid: String },
    /// PocketBase kept refusing the record's `deploy_logs` rows (they stay in the outbox).
    #[error("PocketBase: the deploy_logs rows of {record_id} were refused repeatedly")]
    LogsRefused { record_id: String },
    /// A plan asked for a service step before there was a service: a bug, not a condition to retry.
    #[error("internal: no service uuid for a service action")]
    NoService,
    /// Coolify has not answered since the bridge started, so the server for new services is not known.
    #[error("Coolify has not been reached since the bridge started; the server for new services is not chosen yet")]
    NoServerYet,
}

/// What a tenant reads when Coolify refuses a domain held elsewhere.
pub const DOMAIN_IN_USE: &str = "this domain is already in use: choose another subdomain";

impl ReconcileError {
    /// Retry what may pass by itself (networks, rate limits, timeouts), wait for the record to change
    /// when the request itself is wrong, and stop at once on an internal bug.
    pub fn policy(&self) -> ErrorPolicy {
        if self.unavailable().is_some() {
            return ErrorPolicy::WaitForDependency;
        }
        match self {
            ReconcileError::Coolify(
                CoolifyError::Validation { .. } | CoolifyError::Conflict { .. } | CoolifyError::InvalidInput(_),
            )
            | ReconcileError::Blocked(_) => ErrorPolicy::WaitForChange,
            ReconcileError::NoService => ErrorPolicy::Dead,
            ReconcileError::Superseded { .. } => ErrorPolicy::RunAgain,
            ReconcileError::PocketBase(_)
            | ReconcileError::Coolify(_)
            | ReconcileError::Journal(_)
            | ReconcileError::Secrets(_)
            | ReconcileError::Intake(_)
            | ReconcileError::NotRunning { .. }
            | ReconcileError::LogsRefused { .. } => ErrorPolicy::Retry,
            ReconcileError::NoServerYet => ErrorPolicy::WaitForDependency,
        }
    }

    /// The dependency this error says is unavailable (not reachable, or its gateway says so): waiting for
    /// it uses up no attempt.
    pub fn unavailable(&self) -> Option<Dependency> {
        match self {
            ReconcileError::PocketBase(e) if pocketbase_unavailable(e) => Some(Dependency::PocketBase),
            ReconcileError::Coolify(e) if coolify_unavailable(e) => Some(Dependency::Coolify),
            ReconcileError::NoServerYet => Some(Dependency::Coolify),
            _ => None,
        }
    }

    /// The message for the tenant's own record (`error_message`, `deploy_logs`): never names another
    /// tenant's resources. A Coolify conflict names the service holding the domain, so the tenant reads
    /// `DOMAIN_IN_USE` while operators see the detail (logs, the job's `last_error`).
    pub fn tenant_message(&self) -> String {
        match self {
            ReconcileError::Coolify(CoolifyError::Conflict { .. }) => DOMAIN_IN_USE.to_string(),
            other => other.to_string(),
        }
    }
}

impl From<PbError> for ReconcileError {
    fn from(e: PbError) -> Self {
        ReconcileError::PocketBase(e)
    }
}

impl From<JournalError> for ReconcileError {
    fn from(e: JournalError) -> Self {
        ReconcileError::Journal(e)
    }
}

impl From<CoolifyError> for ReconcileError {
    fn from(e: CoolifyError) -> Self {
        ReconcileError::Coolify(e)
    }
}

impl From<SecretsError> for ReconcileError {
    fn from(e: SecretsError) -> Self {
        ReconcileError::Secrets(e)
    }
}

impl From<SinkError> for ReconcileError {
    fn from(e: SinkError) -> Self {
        ReconcileError::Intake(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_follows_the_type_and_the_text_stays_actionable() {
        let conflict = ReconcileError::from(CoolifyError::Conflict {
            message: "Domain conflicts detected.".into(),
            conflicts: Vec::new(),
        });
        assert_eq!(conflict.policy(), ErrorPolicy::WaitForChange);
        assert_eq!(conflict.to_string(), "Coolify conflict: Domain conflicts detected.");
        assert_eq!(conflict.tenant_message(), DOMAIN_IN_USE);
        let down = ReconcileError::from(CoolifyError::Transport("connection refused".into()));
        assert_eq!(down.policy(), ErrorPolicy::WaitForDependency);
        assert_eq!(down.unavailable(), Some(Dependency::Coolify));
        let pb_down = ReconcileError::from(PbError::Transport("connection refused".into()));
        assert_eq!(pb_down.policy(), ErrorPolicy::WaitForDependency);
        assert_eq!(
            ReconcileError::from(CoolifyError::RateLimited { retry_after: None }).policy(),
            ErrorPolicy::Retry
        );
        assert_eq!(down.tenant_message(), down.to_string());
        assert_eq!(
            ReconcileError::from(PbError::NotFound).to_string(),
            "PocketBase: PocketBase record or collection not found"
        );
        assert_eq!(
            ReconcileError::Blocked("quota exceeded".into()).policy(),
            ErrorPolicy::WaitForChange
        );
        assert_eq!(ReconcileError::NoService.policy(), ErrorPolicy::Dead);
        assert_eq!(
            ReconcileError::Superseded { uuid: "svc1".into() }.policy(),
            ErrorPolicy::RunAgain
        );
        let source = std::error::Error::source(&down).map(ToString::to_string);
        assert_eq!(
            source.as_deref(),
            Some("Coolify unreachable or response lost: connection refused")
        );
    }
}
