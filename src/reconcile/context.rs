//! What the executors share: clients, journal, templates, secrets and settings.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use sha2::{Digest, Sha256};
use tracing::debug;

use super::actor::Actor;
use super::judgement::HealthBoard;
use super::status_reads::{self, BUDGET_SHARE, Pace, Read, Waited};
use crate::config::Settings;
use crate::coolify::{CoolifyClient, CoolifyError, ServiceState, ServiceStatus};
use crate::events::Collection;
use crate::intake::Intake;
use crate::journal::{Journal, JournalError, OutboxEntry};
use crate::pocketbase::PbClient;
use crate::pocketbase::records::{DeployAction, DeployStatus, LOG_MESSAGE_MAX, NewDeployLog, truncate_chars};
use crate::secrets::SecretStore;
use crate::templates::TemplateSet;
use crate::turns::FleetTurns;

/// Service statuses for the waiting reconciles, read in rounds, each as cheaply as the moment allows
/// (DESIGN.md principle 8): the waiters whose next reading is due are read together, by their own
/// services, by their projects' environments, or by the whole list, whichever has the fewest bytes
/// among the ways whose calls fit the status share of the budget (see [`status_reads::plan`]). At the
/// default 180 calls a minute one call a round fits: a lone waiter reads its own service, waiters of one
/// tenant read its environment, waiters of several share the list; a raised budget (a self-hosted Coolify)
/// reads hundreds of services one by one instead of the fleet's list. Concurrent waiters share a round's
/// calls (one per service or project, not one each). Rounds are at least `interval` apart, and further
/// apart after a slow list.
pub struct StatusBoard {
    coolify: CoolifyClient,
    interval: Duration,
    requests_per_minute: u32,
    /// The environment the bridge's services live in (`settings.coolify.environment`).
    environment: String,
    rounds: tokio::sync::Mutex<Rounds>,
    /// The services waited on now (see [`StatusBoard::waiter`]).
    waiting: Mutex<HashMap<String, Waiting>>,
}

struct Waiting {
    project: Option<String>,
    /// When the waiter wants its next reading; `None` until it asks.
    due: Option<Instant>,
    /// Reconciles waiting on this service (one, unless a job overlaps).
    count: usize,
}

/// Counts one waiting reconcile while it lives.
pub struct Waiter<'a> {
    board: &'a StatusBoard,
    service: String,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut waiting = self.board.waiting();
        if let Some(w) = waiting.get_mut(&self.service) {
            w.count -= 1;
            if w.count == 0 {
                waiting.remove(&self.service);
            }
        }
    }
}

#[derive(Default)]
struct Rounds {
    last: Option<Reading>,
    /// How long the last `GET /services` took.
    last_list: Option<Duration>,
}

struct Reading {
    /// When the round was asked for: the statuses are at least this new.
    asked: Instant,
    /// The earliest the next round may start.
    next: Instant,
    /// The services the round read: its waiters whose read answered, and every service an environment's
    /// read listed. A later waiter not among them waits for the next round.
    covered: HashSet<String>,
    statuses: HashMap<String, ServiceStatus>,
}

impl Reading {
    fn status(&self, service: &str) -> Option<Option<ServiceStatus>> {
        self.covered
            .contains(service)
            .then(|| self.statuses.get(service).cloned())
    }
}

/// The shortest gap between status rounds for reconciles waiting on `running:*`.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// A round's per-service or per-project reads in flight at once.
const READS_AT_ONCE: usize = 8;

impl StatusBoard {
    /// The gap between rounds: at least `MIN_INTERVAL`, and wide enough that one call a round takes no
    /// more than `BUDGET_SHARE` of the budget (2.2 s at the default 180/min). A start takes Coolify a minute
    /// or two, so a few seconds more per wait costs little; the calls saved go to work.
    pub fn interval_for(requests_per_minute: u32) -> Duration {
        let share = 60.0 / (f64::from(requests_per_minute.max(1)) * BUDGET_SHARE);
        MIN_INTERVAL.max(Duration::from_secs_f64(share))
    }

    /// A board for a budget of `requests_per_minute`, its services in `environment` of their projects.
    pub fn new(coolify: CoolifyClient, requests_per_minute: u32, environment: &str) -> Self {
        StatusBoard {
            coolify,
            interval: Self::interval_for(requests_per_minute),
            requests_per_minute,
            environment: environment.to_string(),
            rounds: tokio::sync::Mutex::default(),
            waiting: Mutex::default(),
        }
    }

    /// Rounds at least `interval` apart instead of the budget's (tests).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Counts the caller as waiting on `service` (of `project`, when known) until the guard is dropped.
    pub fn waiter(&self, service: &str, project: Option<&str>) -> Waiter<'_> {
        let mut waiting = self.waiting();
        let w = waiting.entry(service.to_string()).or_insert_with(|| Waiting {
            project: project.filter(|p| !p.is_empty()).map(str::to_string),
            due: None,
            count: 0,
        });
        w.count += 1;
        Waiter {
            board: self,
            service: service.to_string(),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The service's status from a reading asked for at or after `after`, and when that reading was asked
    /// for; `None` when Coolify does not have the service. Waits for the next round when the latest
    /// reading is older than `after` or did not read the service.
    pub async fn status_after(
        &self,
        service: &str,
        after: Instant,
    ) -> Result<(Instant, Option<ServiceStatus>), CoolifyError> {
        if let Some(w) = self.waiting().get_mut(service) {
            w.due = Some(after);
        }
        // Holding the lock across the wait and the reads makes concurrent waiters share one round.
        let mut rounds = self.rounds.lock().await;
        if let Some(r) = rounds.last.as_ref().filter(|r| r.asked >= after)
            && let Some(status) = r.status(service)
        {
            return Ok((r.asked, status));
        }
        let next_round = rounds.last.as_ref().map_or(after, |r| r.next.max(after));
        tokio::time::sleep_until(next_round.into()).await;
        let asked = Instant::now();
        let due = self.due_at(service, asked);
        let waited: Vec<Waited<'_>> = due
            .iter()
            .map(|(s, p)| Waited {
                service: s,
                project: p.as_deref(),
            })
            .collect();
        let pace = Pace {
            requests_per_minute: self.requests_per_minute,
            interval: self.interval,
            last_list: rounds.last_list,
        };
        let round = status_reads::plan(&waited, &pace);
        let mut reading = Reading {
            asked,
            next: asked + round.gap,
            covered: HashSet::new(),
            statuses: HashMap::new(),
        };
        let mut own_error = None;
        // The list keeps only these: it used to keep every service of the fleet, each uuid twice, until the
        // next round replaced it.
        let wanted: HashSet<&str> = waited.iter().map(|w| w.service).collect();
        // Made as they are sent: a round of a hundred reads would otherwise hold a hundred futures.
        let answers = futures_util::stream::iter(round.reads)
            .map(|read| self.read(read, &wanted))
            .buffer_unordered(READS_AT_ONCE)
            .collect::<Vec<_>>()
            .await;
        for (read, answer) in answers {
            match answer {
                Ok(states) => {
                    if read == Read::List {
                        rounds.last_list = Some(asked.elapsed());
                    }
                    let listed: HashSet<&str> = states.iter().map(|s| s.uuid.as_str()).collect();
                    for w in waited.iter().filter(|w| read.serves(w)) {
                        // Not in its project's environment: read it by itself from now on.
                        if matches!(read, Read::Project(_)) && !listed.contains(w.service) {
                            self.forget_project(w.service);
                        }
                        reading.covered.insert(w.service.to_string());
                    }
                    reading.covered.extend(states.iter().map(|s| s.uuid.clone()));
                    reading.statuses.extend(states.into_iter().map(|s| (s.uuid, s.status)));
                }
                Err(e) if waited.iter().any(|w| w.service == service && read.serves(w)) => own_error = Some(e),
                Err(e) => debug!(error = %e, "a status read failed; its waiters read again next round"),
            }
        }
        let answer = reading.status(service);
        rounds.last = Some(reading);
        match (own_error, answer) {
            (Some(e), _) => Err(e),
            (None, status) => Ok((asked, status.flatten())),
        }
    }

    /// The services whose reading is due at `now`, with their projects; `service` among them.
    fn due_at(&self, service: &str, now: Instant) -> Vec<(String, Option<String>)> {
        let waiting = self.waiting();
        let mut due: Vec<(String, Option<String>)> = waiting
            .iter()
            .filter(|(s, w)| *s == service || w.due.is_some_and(|d| d <= now))
            .map(|(s, w)| (s.clone(), w.project.clone()))
            .collect();
        if !waiting.contains_key(service) {
            due.push((service.to_string(), None));
        }
        due
    }

    fn forget_project(&self, service: &str) {
        if let Some(w) = self.waiting().get_mut(service) {
            w.project = None;
        }
    }

    /// One read of a round: the statuses it found (none for a service or project Coolify does not have);
    /// the list keeps only the `wanted` services.
    async fn read(&self, read: Read, wanted: &HashSet<&str>) -> (Read, Result<Vec<ServiceState>, CoolifyError>) {
        let answer = match &read {
            Read::Service(uuid) => self.coolify.get_service_state(uuid).await.map(|s| vec![s]),
            Read::Project(uuid) => self.coolify.get_environment_states(uuid, &self.environment).await,
            Read::List => self.coolify.list_service_states(|u| wanted.contains(u)).await,
        };
        let answer = match answer {
            Err(CoolifyError::NotFound { .. }) => Ok(Vec::new()),
            other => other,
        };
        (read, answer)
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
    /// The fleet-wide passes' turns (resync, health poll, orphan scan).
    pub turns: FleetTurns,
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
