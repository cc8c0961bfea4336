//! What the executors share: clients, journal, templates, secrets and settings.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::actor::Actor;
use super::judgement::HealthBoard;
use crate::config::Settings;
use crate::coolify::{CoolifyClient, CoolifyError, ServiceStatus};
use crate::events::Collection;
use crate::intake::Intake;
use crate::journal::{Journal, JournalError, OutboxEntry};
use crate::pocketbase::PbClient;
use crate::pocketbase::records::{DeployAction, DeployStatus, LOG_MESSAGE_MAX, NewDeployLog, truncate_chars};
use crate::secrets::SecretStore;
use crate::templates::TemplateSet;

/// Service statuses for the waiting reconciles, read as cheaply as the moment allows (DESIGN.md
/// principle 8): a lone waiter reads its own service (`GET /services/{uuid}`, a few KB); when more wait,
/// one `GET /services` per round serves them all (megabytes for a large fleet, but one call): Coolify's
/// rate limit is shared by everything the bridge does, and the starts of a burst go in one batch deploy,
/// so their waiters would otherwise read one call each in the same moment. Rounds are at least `interval` apart, and further apart when the list is slow, so that polling
/// never takes more than a tenth of Coolify's time.
pub struct StatusBoard {
    coolify: CoolifyClient,
    interval: Duration,
    seen: tokio::sync::Mutex<Option<Reading>>,
    /// Reconciles waiting now (see [`StatusBoard::waiter`]).
    waiting: AtomicUsize,
    /// Up to this many waiters read their own service; more share the list.
    single_reads_up_to: usize,
}

/// Counts one waiting reconcile while it lives.
pub struct Waiter<'a>(&'a AtomicUsize);

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Reading {
    /// When the list was asked for: the statuses are at least this new.
    asked: Instant,
    took: Duration,
    statuses: HashMap<String, ServiceStatus>,
}

/// Rounds are spaced by at least this many times the last list's duration.
const LIST_DUTY_FACTOR: u32 = 10;
/// The shortest gap between status lists for reconciles waiting on `running:*` (one list serves all).
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The most of the Coolify budget that status lists may take while reconciles wait.
const BUDGET_SHARE: f64 = 0.15;
/// Up to this many waiters read their own service rather than the list: one (its read costs the same
/// call as the list, with far fewer bytes); two started together would read two calls where the list
/// is one.
const SINGLE_READS_UP_TO: usize = 1;

impl StatusBoard {
    /// The gap between lists: at least `MIN_INTERVAL`, and wide enough that lists take no more than
    /// `BUDGET_SHARE` of the budget (2.2 s at the default 180/min). A start takes Coolify a minute or two,
    /// so a few seconds more per wait costs little; the calls saved go to work.
    pub fn interval_for(requests_per_minute: u32) -> Duration {
        let share = 60.0 / (f64::from(requests_per_minute.max(1)) * BUDGET_SHARE);
        MIN_INTERVAL.max(Duration::from_secs_f64(share))
    }

    pub fn new(coolify: CoolifyClient, interval: Duration) -> Self {
        StatusBoard {
            coolify,
            interval,
            seen: tokio::sync::Mutex::new(None),
            waiting: AtomicUsize::new(0),
            single_reads_up_to: SINGLE_READS_UP_TO,
        }
    }

    /// Up to `n` waiters read their own service (0: every waiter shares the list).
    pub fn with_single_reads_up_to(mut self, n: usize) -> Self {
        self.single_reads_up_to = n;
        self
    }

    /// Counts the caller as waiting until the returned guard is dropped.
    pub fn waiter(&self) -> Waiter<'_> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        Waiter(&self.waiting)
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn single_reads(&self) -> Option<u32> {
        let n = self.waiting.load(Ordering::SeqCst).max(1);
        (n <= self.single_reads_up_to).then(|| u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// How long after a reading a waiter asks for the next: while each reads its own service, the
    /// interval times the waiters (one read per interval in all); with the list, the board paces rounds.
    pub fn gap(&self) -> Duration {
        match self.single_reads() {
            Some(n) => self.interval * n,
            None => Duration::from_millis(1),
        }
    }

    /// The service's status from a list asked for at or after `after`, and when that list was asked
    /// for; `None` when Coolify does not list the service. Waits for the next round when the latest
    /// reading is older than `after`.
    pub async fn status_after(
        &self,
        uuid: &str,
        after: Instant,
    ) -> Result<(Instant, Option<ServiceStatus>), CoolifyError> {
        if self.single_reads().is_some() {
            tokio::time::sleep_until(after.into()).await;
            let asked = Instant::now();
            return match self.coolify.get_service_state(uuid).await {
                Ok(s) => Ok((asked, Some(s.status))),
                Err(CoolifyError::NotFound { .. }) => Ok((asked, None)),
                Err(e) => Err(e),
            };
        }
        // Holding the lock across the wait and the fetch makes concurrent waiters share one list call.
        let mut seen = self.seen.lock().await;
        let stale = match seen.as_ref() {
            Some(r) if r.asked >= after => None,
            Some(r) => Some(r.asked + self.interval.max(r.took * LIST_DUTY_FACTOR)),
            None => Some(Instant::now()),
        };
        if let Some(next_round) = stale {
            tokio::time::sleep_until(next_round.max(after).into()).await;
            let asked = Instant::now();
            let services = self.coolify.list_service_states().await?;
            *seen = Some(Reading {
                asked,
                took: asked.elapsed(),
                statuses: services.into_iter().map(|s| (s.uuid, s.status)).collect(),
            });
        }
        Ok(seen
            .as_ref()
            .map(|r| (r.asked, r.statuses.get(uuid).cloned()))
            .unwrap_or((after, None)))
    }
}

/// Everything a reconcile needs; cheap to clone.
#[derive(Clone)]
pub struct Context {
    pub pb: PbClient,
    pub coolify: CoolifyClient,
    pub journal: Journal,
    pub templates: Arc<TemplateSet>,
    pub secrets: Arc<SecretStore>,
    pub settings: Arc<Settings>,
    /// Whether PocketBase and Coolify answer, and the Coolify server new services go to.
    pub deps: Arc<crate::dependencies::Dependencies>,
    pub statuses: Arc<StatusBoard>,
    /// Where the executors' own events go (a tenant waking its instances).
    pub intake: Intake,
    /// The health poller's judgements, which each instance's job applies to its record.
    pub health: Arc<HealthBoard>,
}

/// The deterministic Coolify name of a tenant's project.
pub fn project_name(slug: &str) -> String {
    format!("cf-{slug}")
}

/// The deterministic Coolify name of an instance's service.
pub fn service_name(instance_id: &str) -> String {
    format!("cf-{instance_id}")
}

pub fn project_intent_key(tenant_id: &str) -> String {
    format!("project:{tenant_id}")
}

pub fn service_intent_key(instance_id: &str) -> String {
    format!("service:{instance_id}")
}

/// Times one action and makes its `deploy_logs` row.
pub struct ActionLog {
    record_id: String,
    collection: Collection,
    instance: Option<String>,
    tenant: Option<String>,
    action: DeployAction,
    started: Instant,
    /// Derives the row's id from these parts; a fresh id when `None` (see [`fresh_row_id`]).
    key: Option<Vec<String>>,
    /// Who caused the action; the bridge unless [`ActionLog::by`] says otherwise.
    actor: Actor,
}

impl ActionLog {
    pub fn instance(instance_id: &str, tenant_id: Option<&str>, live: bool, action: DeployAction) -> Self {
        ActionLog {
            record_id: instance_id.to_string(),
            collection: Collection::BotInstances,
            instance: live.then(|| instance_id.to_string()),
            tenant: tenant_id.map(str::to_string),
            action,
            started: Instant::now(),
            key: None,
            actor: Actor::Bridge,
        }
    }

    pub fn tenant(tenant_id: &str, live: bool, action: DeployAction) -> Self {
        ActionLog {
            record_id: tenant_id.to_string(),
            collection: Collection::Tenants,
            instance: None,
            tenant: live.then(|| tenant_id.to_string()),
            action,
            started: Instant::now(),
            key: None,
            actor: Actor::Bridge,
        }
    }

    /// Names who caused the action in the row (`triggered_by`, and `triggered_by_user` for a user).
    pub fn by(mut self, actor: &Actor) -> Self {
        self.actor = actor.clone();
        self
    }

    /// Derives the row's id from `parts` instead of chance: whoever makes the same row again (the
    /// health poller judging the same record version twice) makes the same id, so it is stored once.
    pub fn keyed(mut self, parts: &[&str]) -> Self {
        self.key = Some(parts.iter().map(|p| p.to_string()).collect());
        self
    }

    /// The finished action's row, ready for the outbox.
    pub fn row(self, status: DeployStatus, message: impl Into<String>) -> OutboxEntry {
        let row = NewDeployLog {
            instance: self.instance,
            record_id: self.record_id.clone(),
            collection: self.collection.as_str().to_string(),
            tenant: self.tenant,
            action: self.action,
            status,
            message: truncate_chars(&message.into(), LOG_MESSAGE_MAX),
            triggered_by: self.actor.triggered_by(),
            triggered_by_user: self.actor.user_id(),
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        // The id is fixed here, before the first send, and every re-send from the outbox carries it.
        let id = match &self.key {
            Some(key) => {
                let mut parts = vec![self.collection.as_str(), self.record_id.as_str()];
                parts.extend(key.iter().map(String::as_str));
                digits(&parts, ROW_ID_LEN)
            }
            None => fresh_row_id(chrono::Utc::now().timestamp_millis(), &self.record_id),
        };
        let body = serde_json::to_string(&row).unwrap_or_else(|_| "{}".into());
        OutboxEntry::new(self.collection, &self.record_id, id, body)
    }

    /// Keeps the row in the outbox: it is written with the record's next outcome, at the latest when
    /// the job ends (see `outcome`).
    pub async fn keep(
        self,
        ctx: &Context,
        status: DeployStatus,
        message: impl Into<String>,
    ) -> Result<(), JournalError> {
        ctx.journal.put_outbox(self.row(status, message)).await
    }
}

/// PocketBase's default id pattern: 15 of `a-z0-9` (ids may be set on create).
const ROW_ID_LEN: usize = 15;
/// In id order: `0-9` sorts before `a-z`.
const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
/// Digits of the time part of a fresh id: 36^8 ms reach past the year 2059.
const TIME_DIGITS: usize = 8;

/// `n` base-36 digits derived from `parts`.
fn digits(parts: &[&str], n: usize) -> String {
    let digest = Sha256::digest(parts.join("\n").as_bytes());
    digest
        .iter()
        .take(n)
        .map(|b| BASE36[usize::from(*b) % 36] as char)
        .collect()
}

/// A new row's id: the time (ms) as 8 base-36 digits, so that ids sort as the rows were made (PocketBase's
/// `created` has millisecond precision, and one batch may write several rows of a record), then 7 digits
/// of a hash of the record and a random number.
pub fn fresh_row_id(now_ms: i64, record_id: &str) -> String {
    let mut time = u64::try_from(now_ms).unwrap_or(0);
    let mut id = vec![b'0'; TIME_DIGITS];
    for slot in id.iter_mut().rev() {
        *slot = BASE36[(time % 36) as usize];
        time /= 36;
    }
    let nonce = rand::random::<u64>().to_string();
    let mut id = String::from_utf8_lossy(&id).into_owned();
    id.push_str(&digits(&[record_id, &nonce], ROW_ID_LEN - TIME_DIGITS));
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_pocketbase_id(id: &str) -> bool {
        id.len() == ROW_ID_LEN && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    }

    #[test]
    fn fresh_ids_are_pocketbase_ids_that_sort_by_time() {
        let t = 1_767_225_600_000;
        let (a, b, c) = (fresh_row_id(t, "r1"), fresh_row_id(t, "r1"), fresh_row_id(t + 1, "r1"));
        assert!(is_pocketbase_id(&a) && is_pocketbase_id(&c), "{a} {c}");
        assert_ne!(a, b, "two rows of the same millisecond");
        assert!(a < c && b < c, "{a} {b} {c}");
        assert!(fresh_row_id(t + 36, "r1")[..TIME_DIGITS] > c[..TIME_DIGITS]);
    }

    #[test]
    fn keyed_ids_are_stable() {
        let row = |key: &str| {
            ActionLog::instance("inst1", Some("ten1"), true, DeployAction::Error)
                .keyed(&["health: unhealthy", key])
                .row(DeployStatus::Failed, "down")
        };
        let (a, b, c) = (row("v1"), row("v1"), row("v2"));
        assert!(is_pocketbase_id(&a.id));
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_eq!(a.record_id, "inst1");
        let body: serde_json::Value = serde_json::from_str(&a.row).unwrap();
        assert_eq!(body["action"], "error");
        assert_eq!(body["instance"], "inst1");
        assert!(body.get("id").is_none(), "the id travels beside the body");
    }

    #[test]
    fn status_lists_take_a_bounded_share_of_the_budget() {
        let gap = StatusBoard::interval_for(180);
        assert!((gap.as_secs_f64() - 60.0 / 27.0).abs() < 0.01, "{gap:?}");
        assert_eq!(StatusBoard::interval_for(100_000), MIN_INTERVAL);
        assert!(StatusBoard::interval_for(1) > Duration::from_secs(60));
    }
}
