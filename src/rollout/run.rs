//! Carrying a rollout out, batch by batch, and resuming the journaled ones at start.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Failure, Item, Rollout, RolloutError, State, get, now};
use crate::events::{Collection, Replay};
use crate::pocketbase::records::{BotInstance, InstanceStatus, filter_quote, format_pb_date};
use crate::reconcile::context::Context;

/// How often a batch's records are read while it upgrades: one PocketBase request a round for the batch.
const POLL: Duration = Duration::from_secs(1);
/// Beyond the reconcile's own wait for `running`: the queue's pickup and the write-back.
const SLACK: Duration = Duration::from_secs(60);

/// Resumes the rollouts a stopped bridge left running.
pub async fn resume_all(ctx: &Context, runner: &super::Runner) {
    match ctx.journal.running_rollouts().await {
        Ok(ids) => {
            for id in ids {
                info!(rollout_id = id, "resuming rollout");
                runner.spawn(ctx, id);
            }
        }
        Err(e) => warn!(error = %e, "could not read the running rollouts; they resume at the next start"),
    }
}

/// Runs rollout `id` to its end; a failure to read or save its state leaves it for the next start.
pub(super) async fn run(ctx: &Context, id: i64) {
    if let Err(e) = drive(ctx, id).await {
        warn!(rollout_id = id, error = %e, "rollout interrupted; it resumes at the next start");
    }
}

async fn drive(ctx: &Context, id: i64) -> Result<(), RolloutError> {
    let Some(mut r) = get(ctx, id).await? else {
        return Ok(());
    };
    while r.state == State::Running {
        let index = r.batches_done;
        if index >= r.batches_total() {
            r.state = State::Succeeded;
            break;
        }
        let batch: Vec<Item> = r.batch(index).to_vec();
        let began = chrono::Utc::now();
        for item in &batch {
            ctx.journal.pin_template(&item.instance, &item.life, &item.to).await?;
        }
        r.batches_started = r.batches_started.max(index + 1);
        save(ctx, &r, false).await?;
        for item in &batch {
            ctx.intake
                .replay(Replay::Record(Collection::BotInstances, item.instance.clone()))
                .await
                .map_err(|e| crate::journal::JournalError::Task(e.to_string()))?;
        }
        info!(
            rollout_id = id,
            batch = index + 1,
            instances = batch.len(),
            "rollout batch started"
        );
        match wait_batch(ctx, &batch, began).await? {
            None => r.batches_done = index + 1,
            Some((instance, reason)) => {
                warn!(rollout_id = id, batch = index + 1, record_id = %instance, reason = %reason, "rollout stopped");
                r.failure = Some(Failure {
                    batch: index + 1,
                    instance,
                    reason,
                });
                r.state = State::Failed;
            }
        }
        if r.state == State::Running {
            save(ctx, &r, false).await?;
        }
    }
    r.finished_at = Some(now());
    save(ctx, &r, true).await?;
    info!(rollout_id = id, state = ?r.state, "rollout finished");
    Ok(())
}

async fn save(ctx: &Context, r: &Rollout, finished: bool) -> Result<(), RolloutError> {
    let text = serde_json::to_string(r).map_err(crate::journal::JournalError::from)?;
    Ok(ctx.journal.save_rollout(&r.template, r.id, &text, finished).await?)
}

/// Waits until every instance of the batch runs at its version; `Some((instance, why))` for the first
/// that failed. A record gone meanwhile counts as done: there is nothing left to upgrade.
async fn wait_batch(
    ctx: &Context,
    batch: &[Item],
    began: chrono::DateTime<chrono::Utc>,
) -> Result<Option<(String, String)>, RolloutError> {
    let deadline = Instant::now() + ctx.settings.reconcile.running_timeout + SLACK;
    let filter = batch
        .iter()
        .map(|i| format!("id = {}", filter_quote(&i.instance)))
        .collect::<Vec<_>>()
        .join(" || ");
    loop {
        tokio::time::sleep(POLL).await;
        let records = ctx.pb.list_instances(Some(&filter)).await?;
        let mut waiting = false;
        for item in batch {
            let Some(rec) = records.iter().find(|r| r.id == item.instance) else {
                continue;
            };
            match judge(rec, item, began) {
                Progress::Done => {}
                Progress::Waiting => waiting = true,
                Progress::Failed(why) => return Ok(Some((item.instance.clone(), why))),
            }
        }
        if !waiting {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            let late = batch
                .iter()
                .find(|i| {
                    records
                        .iter()
                        .any(|r| r.id == i.instance && judge(r, i, began) == Progress::Waiting)
                })
                .map(|i| i.instance.clone())
                .unwrap_or_default();
            return Ok(Some((
                late,
                format!(
                    "not running at its new version within {} s",
                    (ctx.settings.reconcile.running_timeout + SLACK).as_secs()
                ),
            )));
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Progress {
    Done,
    Waiting,
    Failed(String),
}

/// Where one instance of a batch stands: its version is written only with a successful outcome, and an
/// `error` written after the batch began is this upgrade's.
fn judge(rec: &BotInstance, item: &Item, began: chrono::DateTime<chrono::Utc>) -> Progress {
    let at_version = rec.template_version.as_deref() == Some(item.to.as_str());
    match rec.status {
        Some(InstanceStatus::Running | InstanceStatus::Stopped) if at_version => Progress::Done,
        Some(InstanceStatus::Error) if rec.updated.is_some_and(|u| u >= began) => {
            Progress::Failed(rec.error_message.clone().unwrap_or_else(|| {
                format!(
                    "in error since {}",
                    rec.updated.as_ref().map(format_pb_date).unwrap_or_default()
                )
            }))
        }
        _ => Progress::Waiting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(status: InstanceStatus, version: Option<&str>, updated_secs: i64) -> BotInstance {
        serde_json::from_value(serde_json::json!({
            "id": "inst1",
            "status": status,
            "template_version": version.unwrap_or(""),
            "error_message": "service x not running",
            "updated": format_pb_date(&chrono::DateTime::from_timestamp(updated_secs, 0).expect("time")),
        }))
        .expect("record")
    }

    #[test]
    fn an_instance_is_done_only_at_its_new_version_and_fails_only_after_the_batch_began() {
        let item = Item {
            instance: "inst1".into(),
            life: String::new(),
            from: "1".into(),
            to: "2".into(),
        };
        let began = chrono::DateTime::from_timestamp(1000, 0).expect("time");
        assert_eq!(
            judge(&rec(InstanceStatus::Running, Some("2"), 1001), &item, began),
            Progress::Done
        );
        assert_eq!(
            judge(&rec(InstanceStatus::Running, Some("1"), 1001), &item, began),
            Progress::Waiting
        );
        assert_eq!(
            judge(&rec(InstanceStatus::Deploying, Some("1"), 1001), &item, began),
            Progress::Waiting
        );
        assert_eq!(
            judge(&rec(InstanceStatus::Error, Some("1"), 999), &item, began),
            Progress::Waiting
        );
        assert_eq!(
            judge(&rec(InstanceStatus::Error, Some("1"), 1001), &item, began),
            Progress::Failed("service x not running".into())
        );
    }
}
