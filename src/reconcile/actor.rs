//! Who caused a job's actions: the `triggered_by` (and `triggered_by_user`) of their `deploy_logs` rows.
//!
//! `hooks/pb_hooks/actor.pb.js` stamps the acting auth record on every tenant or instance a request changes
//! (`changed_by` = `<auth collection>:<id>`, in the same write); realtime frames and webhooks carry the
//! record, and so the stamp, into the journal. A run is the user's when the newest change it covers came
//! from them, and an operator's replay is the operator's ([`Actor::of_run`]). A run no event names (a
//! resync, a tenant waking its instances, a health judgement) acts for whoever last changed the record when
//! it carries out what the record asks for and was not applied yet (the user's create, unblocked by the
//! tenant's new project), and for the bridge itself when it repairs what was applied ([`Actor::of_action`]).
//! A destroy names whoever deleted the record ([`Actor::of_deletion`]), read when the destroy is done.

use crate::events::{Action, Source, valid_record_id};
use crate::journal::{ClaimedJob, Journal, JournalError};

/// One covered event: its source, its action and the stamp its record carried.
pub type Change = (Source, Action, Option<String>);

/// Covered events read to find who caused a run: the newest stamped change is among the last few.
const CHANGES_READ: usize = 20;

/// What a run knows of who caused it.
pub struct RunActor {
    journal: Journal,
    job_id: i64,
    named: Option<Actor>,
    /// Who changed the tenant, when the run covers the tenant's wake-up of its instances.
    tenant: Option<Actor>,
}

impl RunActor {
    /// Reads the events the job's run covers (a local journal read).
    pub async fn read(journal: &Journal, job: &ClaimedJob) -> Result<RunActor, JournalError> {
        let changes = journal
            .run_changes(job.job_id, Some(job.last_event_id), CHANGES_READ)
            .await?;
        Ok(RunActor {
            journal: journal.clone(),
            job_id: job.job_id,
            named: Actor::of_run(&changes),
            tenant: Actor::of_tenant_wake(&changes),
        })
    }

    /// Who the run's events name, if anyone.
    pub fn named(&self) -> Option<&Actor> {
        self.named.as_ref()
    }

    /// Who an instance action of the run is for (see [`Actor::of_instance_action`]).
    pub fn for_instance(&self, record_stamp: Option<&str>, applied_before: bool, carries_out_record: bool) -> Actor {
        Actor::of_instance_action(
            self.named.as_ref(),
            self.tenant.as_ref(),
            record_stamp,
            applied_before,
            carries_out_record,
        )
    }

    /// Who deleted the record. Read again when a destroy is done: a run for an earlier change may find the
    /// record gone before the delete's own event reached the journal.
    pub async fn deleter(&self) -> Result<Actor, JournalError> {
        let changes = self.journal.run_changes(self.job_id, None, CHANGES_READ).await?;
        Ok(Actor::of_deletion(&changes))
    }
}

/// What `triggered_by` says for the bridge's own actions.
pub const BRIDGE: &str = "cf-bridge";
/// What `triggered_by` says for an operator's replay (admin API, page, CLI).
pub const OPERATOR: &str = "operator";
/// The auth collection of the platform's users (a `triggered_by_user` relation points there).
const USERS: &str = "users";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Bridge,
    Operator,
    /// A PocketBase auth record: a user, or a superuser (the Admin UI, the Admin Portal's server).
    Auth {
        collection: String,
        id: String,
    },
}

impl Actor {
    /// Reads a `changed_by` stamp; anything not shaped as the hook writes it is ignored.
    pub fn from_stamp(stamp: &str) -> Option<Actor> {
        let (collection, id) = stamp.split_once(':')?;
        let name_ok = !collection.is_empty()
            && collection.len() <= 64
            && collection.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        (name_ok && valid_record_id(id)).then(|| Actor::Auth {
            collection: collection.to_string(),
            id: id.to_string(),
        })
    }

    /// Pure: who a run's covered events name, newest first (see `Journal::run_changes`); `None` when no
    /// event names anyone.
    pub fn of_run(changes: &[Change]) -> Option<Actor> {
        for (source, _, stamp) in changes {
            match source {
                Source::Realtime | Source::Webhook => {
                    if let Some(actor) = stamp.as_deref().and_then(Actor::from_stamp) {
                        return Some(actor);
                    }
                }
                Source::Replay => return Some(Actor::Operator),
                Source::Resync | Source::Tenant | Source::Health => {}
            }
        }
        None
    }

    /// Pure: who changed the tenant whose wake-up the run covers (the tenant's job puts its own actor in the
    /// events it sends its instances), newest first.
    pub fn of_tenant_wake(changes: &[Change]) -> Option<Actor> {
        changes
            .iter()
            .filter(|(source, _, _)| *source == Source::Tenant)
            .find_map(|(_, _, stamp)| stamp.as_deref().and_then(Actor::from_stamp))
    }

    /// Pure: who an instance action is for. The run's own events first; otherwise an action that carries
    /// out what the record asks is the tenant changer's when the stack ran before and the tenant's change
    /// (suspension, plan) is what moved it, and the record's last changer otherwise (their create, which
    /// the tenant's new project unblocked; their change, found by a resync); a repair is the bridge's.
    pub fn of_instance_action(
        named: Option<&Actor>,
        tenant: Option<&Actor>,
        record_stamp: Option<&str>,
        applied_before: bool,
        carries_out_record: bool,
    ) -> Actor {
        match (named, tenant) {
            (Some(actor), _) => actor.clone(),
            (None, Some(actor)) if carries_out_record && applied_before => actor.clone(),
            (None, _) => Actor::of_action(None, record_stamp, carries_out_record),
        }
    }

    /// Pure: who deleted the record, from the job's events, newest first: the stamp the delete's event
    /// carried (`actor.pb.js` stamps the record it deletes), an operator's replay, or the bridge.
    pub fn of_deletion(changes: &[Change]) -> Actor {
        for (source, action, stamp) in changes {
            match (source, action) {
                (Source::Realtime | Source::Webhook, Action::Delete) => {
                    if let Some(actor) = stamp.as_deref().and_then(Actor::from_stamp) {
                        return actor;
                    }
                }
                (Source::Replay, _) => return Actor::Operator,
                _ => {}
            }
        }
        Actor::Bridge
    }

    /// Pure: who an action of a run is for. `carries_out_record`: the action does what the record asks
    /// and was not applied yet (rather than repair what was).
    pub fn of_action(run: Option<&Actor>, record_stamp: Option<&str>, carries_out_record: bool) -> Actor {
        if let Some(actor) = run {
            return actor.clone();
        }
        record_stamp
            .filter(|_| carries_out_record)
            .and_then(Actor::from_stamp)
            .unwrap_or(Actor::Bridge)
    }

    /// The row's `triggered_by` text.
    pub fn triggered_by(&self) -> String {
        match self {
            Actor::Bridge => BRIDGE.to_string(),
            Actor::Operator => OPERATOR.to_string(),
            Actor::Auth { collection, id } => format!("{collection}:{id}"),
        }
    }

    /// The row's `triggered_by_user`: set when the actor is one of the platform's users.
    pub fn user_id(&self) -> Option<String> {
        match self {
            Actor::Auth { collection, id } if collection == USERS => Some(id.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(source: Source, stamp: Option<&str>) -> Change {
        (source, Action::Update, stamp.map(str::to_string))
    }

    #[test]
    fn the_newest_stamped_change_names_the_actor() {
        let user = Actor::from_stamp("users:abc123def456ghi").expect("stamp");
        assert_eq!(user.triggered_by(), "users:abc123def456ghi");
        assert_eq!(user.user_id().as_deref(), Some("abc123def456ghi"));
        let admin = Actor::from_stamp("_superusers:xyz987").expect("stamp");
        assert_eq!(admin.user_id(), None);

        assert_eq!(
            Actor::of_run(&[
                change(Source::Resync, None),
                change(Source::Webhook, Some("users:abc123def456ghi")),
                change(Source::Realtime, Some("_superusers:xyz987")),
            ]),
            Some(user.clone())
        );
        assert_eq!(Actor::of_run(&[change(Source::Replay, None)]), Some(Actor::Operator));
        assert_eq!(
            Actor::of_run(&[change(Source::Health, None), change(Source::Resync, None)]),
            None
        );
        // A realtime change without a stamp (made before the hook, or by the bridge) names nobody.
        assert_eq!(Actor::of_run(&[change(Source::Realtime, None)]), None);
        assert_eq!(Actor::Bridge.triggered_by(), "cf-bridge");
    }

    #[test]
    fn an_action_no_event_names_is_the_records_changer_only_when_it_carries_out_the_record() {
        let stamp = Some("users:abc123def456ghi");
        let user = Actor::from_stamp("users:abc123def456ghi").expect("stamp");
        assert_eq!(Actor::of_action(Some(&Actor::Operator), stamp, true), Actor::Operator);
        // The tenant's new project unblocks the user's create: the deploy is the user's.
        assert_eq!(Actor::of_action(None, stamp, true), user);
        // A repair of what was applied (the service vanished, a health judgement) is the bridge's.
        assert_eq!(Actor::of_action(None, stamp, false), Actor::Bridge);
        assert_eq!(Actor::of_action(None, None, true), Actor::Bridge);
        assert_eq!(Actor::of_action(None, Some("garbage"), true), Actor::Bridge);
    }

    #[test]
    fn a_tenant_change_is_the_tenant_changers_unless_it_only_unblocked_a_create() {
        let admin = Actor::from_stamp("_superusers:admin1").expect("stamp");
        let user = "users:abc123def456ghi";
        let wake = (Source::Tenant, Action::Update, Some("_superusers:admin1".to_string()));
        assert_eq!(
            Actor::of_tenant_wake(&[change(Source::Resync, None), wake]),
            Some(admin.clone())
        );
        // The admin suspends a running stack: the suspension is theirs.
        assert_eq!(
            Actor::of_instance_action(None, Some(&admin), Some(user), true, true),
            admin
        );
        // The tenant's new project unblocks the user's create: the deploy is the user's.
        assert_eq!(
            Actor::of_instance_action(None, Some(&admin), Some(user), false, true).triggered_by(),
            user
        );
        // The instance's own event wins; a repair is the bridge's.
        assert_eq!(
            Actor::of_instance_action(Some(&Actor::Operator), Some(&admin), Some(user), true, true),
            Actor::Operator
        );
        assert_eq!(
            Actor::of_instance_action(None, Some(&admin), Some(user), true, false),
            Actor::Bridge
        );
    }

    #[test]
    fn a_destroy_names_the_deleter_not_the_last_editor() {
        let deleter = Actor::from_stamp("users:deleter123").expect("stamp");
        let delete = (Source::Realtime, Action::Delete, Some("users:deleter123".to_string()));
        let edit = change(Source::Webhook, Some("_superusers:editor1"));
        assert_eq!(Actor::of_deletion(&[delete, edit.clone()]), deleter);
        assert_eq!(Actor::of_deletion(&[edit]), Actor::Bridge, "an edit is not a deletion");
        assert_eq!(Actor::of_deletion(&[]), Actor::Bridge);
    }

    #[test]
    fn malformed_stamps_are_ignored() {
        for bad in [
            "",
            "users",
            ":abc",
            "users:",
            "us ers:abc",
            "users:abc/../x",
            "users:a b",
        ] {
            assert_eq!(Actor::from_stamp(bad), None, "{bad:?}");
        }
    }
}
