//! Template rollouts: moving a template's instances to another version in batches, and rolling back.
//!
//! A rollout pins each instance of a batch to the target version in the journal (see
//! `crate::journal::versions`), requeues it as an operator's replay (so its `deploy_logs` rows name the
//! operator, as any admin action does) and waits until every instance of the batch is `running` at that
//! version before the next batch starts; the first instance that fails (its record in `error` after the
//! batch began, or not running within the deadline) stops the rollout, which reports it. The state is
//! journaled after each step, so a restarted bridge resumes a rollout where it stood.
//!
//! The journal keeps every template version the bridge loaded, rather than versioned subdirectories of the
//! templates directory: the operator's workflow stays "edit the template, bump `version`, deploy", and the
//! versions that instances still run cannot be lost by tidying the directory.

mod run;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::journal::{Change, JournalError};
use crate::pocketbase::PbError;
use crate::pocketbase::records::{BOT_INSTANCES, TENANTS, Tenant, filter_quote};
use crate::reconcile::context::Context;
use crate::reconcile::instance::{life_of, recorded_version};

pub use run::resume_all;

/// Instances per batch when the request names none.
pub const DEFAULT_BATCH: usize = 5;
/// The largest batch: an upgrade costs a stack some 5 Coolify calls plus its share of the status lists, so
/// 20 at once stay well inside Coolify's 200 requests a minute beside the bridge's other work.
pub const MAX_BATCH: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("no template of that name is installed in the bridge's templates directory")]
    UnknownTemplate,
    #[error("template {template} has no version of that name (known: {known})")]
    UnknownVersion { template: String, known: String },
    #[error("template {0} is not published in PocketBase (run `cf-bridge templates sync`)")]
    NotPublished(String),
    #[error("no tenant with that slug")]
    UnknownTenant,
    #[error("batch must be between 1 and {MAX_BATCH}")]
    BadBatch,
    #[error("rollout {running} of template {template} is still running")]
    Running { template: String, running: i64 },
    #[error("template {0} has no rollout to roll back")]
    NothingToRollBack(String),
    #[error("the latest rollout of template {template} (rollout {id}) is a rollback already")]
    AlreadyRolledBack { template: String, id: i64 },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    PocketBase(#[from] PbError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Rollout,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Succeeded,
    Failed,
}

/// One instance a rollout moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub instance: String,
    /// The record's incarnation: a pin for it is ignored by a later record reusing the id.
    pub life: String,
    /// The version it ran before (empty when unknown: applied before versions were recorded).
    pub from: String,
    pub to: String,
}

/// Why a rollout stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// 1-based.
    pub batch: usize,
    pub instance: String,
    pub reason: String,
}

/// A rollout as journaled and as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: i64,
    pub template: String,
    pub kind: Kind,
    /// The version a rollout moves to; a rollback's items each name their own.
    pub to_version: Option<String>,
    pub tenant: Option<String>,
    pub batch_size: usize,
    pub items: Vec<Item>,
    /// Batches whose instances were pinned and requeued.
    pub batches_started: usize,
    /// Batches whose instances all reached `running` at their version.
    pub batches_done: usize,
    pub state: State,
    pub failure: Option<Failure>,
    /// Instances a rollback leaves as they are: their version before the rollout is unknown.
    #[serde(default)]
    pub skipped: Vec<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
}

impl Rollout {
    pub fn batches_total(&self) -> usize {
        self.items.len().div_ceil(self.batch_size.max(1))
    }

    /// The items of batch `index` (0-based).
    pub fn batch(&self, index: usize) -> &[Item] {
        let size = self.batch_size.max(1);
        let start = (index * size).min(self.items.len());
        &self.items[start..(start + size).min(self.items.len())]
    }
}

/// What an operator asks for.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub to: Option<String>,
    pub batch: Option<usize>,
    pub tenant: Option<String>,
}

/// Starts and stops the rollouts' tasks with the bridge. Held by the app and the admin routes, not by
/// the reconcile `Context`, so that rollouts depend on reconcile and not the other way round.
#[derive(Debug, Default)]
pub struct Runner {
    cancel: CancellationToken,
    /// The rollouts this process drives now: resuming one of them again (a replica that leads a second
    /// time, `crate::app`) starts no second driver.
    running: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<i64>>>,
}

impl Runner {
    /// Stops every rollout task (their state stays journaled; the next start resumes them).
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    fn spawn(&self, ctx: &Context, id: i64) {
        // A poisoned set only holds ids; keep using it.
        let newly = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id);
        if !newly {
            return;
        }
        let (ctx, cancel, running) = (ctx.clone(), self.cancel.clone(), self.running.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = run::run(&ctx, id) => {}
            }
            running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&id);
        });
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Checks `req` and starts a rollout of `template`; nothing changes when the request is refused.
pub async fn start(ctx: &Context, runner: &Runner, template: &str, req: Request) -> Result<Rollout, RolloutError> {
    let newest = ctx.templates.get(template).ok_or(RolloutError::UnknownTemplate)?;
    let to = req.to.clone().unwrap_or_else(|| newest.version.clone());
    if ctx.templates.version(template, &to).is_none() {
        return Err(RolloutError::UnknownVersion {
            template: template.to_string(),
            known: ctx.templates.versions_of(template).join(", "),
        });
    }
    let batch_size = req.batch.unwrap_or(DEFAULT_BATCH);
    if !(1..=MAX_BATCH).contains(&batch_size) {
        return Err(RolloutError::BadBatch);
    }
    let record = ctx
        .pb
        .find_template_by_name(template)
        .await?
        .ok_or_else(|| RolloutError::NotPublished(template.to_string()))?;
    let mut filter = format!("template = {}", filter_quote(&record.id));
    if let Some(slug) = &req.tenant {
        let tenants: Vec<Tenant> = ctx
            .pb
            .list_page(TENANTS, None, Some(&format!("slug = {}", filter_quote(slug))), 1)
            .await?;
        let tenant = tenants.first().ok_or(RolloutError::UnknownTenant)?;
        filter.push_str(&format!(" && tenant = {}", filter_quote(&tenant.id)));
    }
    let instances = ctx.pb.list_all(BOT_INSTANCES, Some(&filter)).await?;
    let mut items = Vec::new();
    for inst in instances {
        let life = life_of(&inst);
        let applied = inst.applied_hash.as_deref().is_some_and(|h| !h.is_empty());
        let from = match ctx.journal.template_pin(&inst.id, &life).await? {
            Some(v) => v,
            None => recorded_version(ctx, &inst, applied, template)
                .unwrap_or_default()
                .to_string(),
        };
        if from != to {
            items.push(Item {
                instance: inst.id.clone(),
                life,
                from,
                to: to.clone(),
            });
        }
    }
    begin(
        ctx,
        runner,
        Rollout {
            id: 0,
            template: template.to_string(),
            kind: Kind::Rollout,
            to_version: Some(to),
            tenant: req.tenant,
            batch_size,
            items,
            batches_started: 0,
            batches_done: 0,
            state: State::Running,
            failure: None,
            skipped: Vec::new(),
            started_at: now(),
            finished_at: None,
        },
    )
    .await
}

/// Returns the instances the latest rollout of `template` moved (or began to move) to the version each ran
/// before it, in batches of the same size.
pub async fn rollback(ctx: &Context, runner: &Runner, template: &str) -> Result<Rollout, RolloutError> {
    if ctx.templates.get(template).is_none() {
        return Err(RolloutError::UnknownTemplate);
    }
    let last = match ctx.journal.last_rollout(template).await? {
        Some(id) => get(ctx, id).await?,
        None => None,
    }
    .ok_or_else(|| RolloutError::NothingToRollBack(template.to_string()))?;
    if last.state == State::Running {
        return Err(RolloutError::Running {
            template: template.to_string(),
            running: last.id,
        });
    }
    if last.kind == Kind::Rollback {
        return Err(RolloutError::AlreadyRolledBack {
            template: template.to_string(),
            id: last.id,
        });
    }
    let moved = (last.batches_started * last.batch_size).min(last.items.len());
    let (known, unknown): (Vec<&Item>, Vec<&Item>) = last.items[..moved].iter().partition(|i| !i.from.is_empty());
    for i in &known {
        if ctx.templates.version(template, &i.from).is_none() {
            return Err(RolloutError::UnknownVersion {
                template: template.to_string(),
                known: ctx.templates.versions_of(template).join(", "),
            });
        }
    }
    begin(
        ctx,
        runner,
        Rollout {
            id: 0,
            template: template.to_string(),
            kind: Kind::Rollback,
            to_version: None,
            tenant: last.tenant.clone(),
            batch_size: last.batch_size,
            items: known
                .into_iter()
                .map(|i| Item {
                    instance: i.instance.clone(),
                    life: i.life.clone(),
                    from: i.to.clone(),
                    to: i.from.clone(),
                })
                .collect(),
            batches_started: 0,
            batches_done: 0,
            state: State::Running,
            failure: None,
            skipped: unknown.into_iter().map(|i| i.instance.clone()).collect(),
            started_at: now(),
            finished_at: None,
        },
    )
    .await
}

async fn begin(ctx: &Context, runner: &Runner, rollout: Rollout) -> Result<Rollout, RolloutError> {
    let template = rollout.template.clone();
    let draft = rollout.clone();
    let begun = ctx
        .journal
        .begin_rollout(&template, move |id| serde_json::to_string(&Rollout { id, ..draft }))
        .await?;
    let id = begun.map_err(|running| RolloutError::Running {
        template: template.clone(),
        running,
    })?;
    tracing::info!(template = %template, rollout_id = id, instances = rollout.items.len(), "rollout started");
    ctx.journal.announce(Change::Rollout { rollout_id: id });
    runner.spawn(ctx, id);
    Ok(Rollout { id, ..rollout })
}

/// The journaled state of rollout `id`.
pub async fn get(ctx: &Context, id: i64) -> Result<Option<Rollout>, RolloutError> {
    Ok(match ctx.journal.rollout(id).await? {
        Some(text) => Some(serde_json::from_str::<Rollout>(&text).map_err(JournalError::from)?),
        None => None,
    })
}

/// The journaled states of the `limit` latest rollouts, newest first.
pub async fn recent(ctx: &Context, limit: usize) -> Result<Vec<Rollout>, RolloutError> {
    let rows = ctx.journal.recent_rollouts(limit).await?;
    Ok(rows
        .iter()
        .map(|text| serde_json::from_str::<Rollout>(text))
        .collect::<Result<_, _>>()
        .map_err(JournalError::from)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(n: usize, size: usize) -> Rollout {
        Rollout {
            id: 1,
            template: "t".into(),
            kind: Kind::Rollout,
            to_version: Some("2".into()),
            tenant: None,
            batch_size: size,
            items: (0..n)
                .map(|i| Item {
                    instance: format!("i{i}"),
                    life: String::new(),
                    from: "1".into(),
                    to: "2".into(),
                })
                .collect(),
            batches_started: 0,
            batches_done: 0,
            state: State::Running,
            failure: None,
            skipped: Vec::new(),
            started_at: String::new(),
            finished_at: None,
        }
    }

    #[test]
    fn batches_cover_every_item_once_in_order() {
        let r = rollout(5, 2);
        assert_eq!(r.batches_total(), 3);
        let ids: Vec<Vec<&str>> = (0..3)
            .map(|b| r.batch(b).iter().map(|i| i.instance.as_str()).collect())
            .collect();
        assert_eq!(ids, vec![vec!["i0", "i1"], vec!["i2", "i3"], vec!["i4"]]);
        assert!(r.batch(3).is_empty());
        assert_eq!(rollout(0, 2).batches_total(), 0);
    }
}
