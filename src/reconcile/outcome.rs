//! Writing what an action did to PocketBase: the record's write-back and its `deploy_logs` rows in one
//! batch request (one transaction), every row kept in the journal's outbox until PocketBase confirms it.
//!
//! A row is put in the outbox with its final id before it is first sent. Whatever happens to the request
//! (never arrived, rolled back, carried out with its answer lost), the row stays until a later send is
//! confirmed, and a re-send of a row PocketBase already holds answers "id not unique", which counts as
//! confirmed: every action gets its row, exactly once. The record's job sends its pending rows with its
//! next outcome and, at the latest, when it ends; rows of records no job will visit again are swept.
//! Only a record's job writes its record, so every write goes through [`commit`] with the record's rows.

use std::time::Duration;

use tracing::{error, warn};

use super::context::Context;
use super::error::ReconcileError;
use crate::events::Collection;
use crate::journal::{OutboxEntry, now_ms};
use crate::pocketbase::{BatchRequest, PbError};

/// Rows sent in one batch (the project's migration allows 50 requests per batch).
const ROWS_PER_BATCH: usize = 40;

/// What PocketBase's refusal of one pending row means for it.
enum Refusal {
    /// A row with its id exists: an earlier send was carried out.
    AlreadyStored,
    /// Only relations to records that are gone were refused: send it without them.
    GoneRelations(Vec<String>),
    /// Nothing the bridge can change makes PocketBase take it.
    Unfixable,
}

fn refusal(fields: &std::collections::BTreeMap<String, crate::pocketbase::FieldError>) -> Refusal {
    if fields.get("id").is_some_and(|f| f.code == "validation_not_unique") {
        return Refusal::AlreadyStored;
    }
    let relations = ["instance", "tenant", "triggered_by_user"];
    if !fields.is_empty()
        && fields
            .iter()
            .all(|(k, f)| relations.contains(&k.as_str()) && f.code == "validation_missing_rel_records")
    {
        return Refusal::GoneRelations(fields.keys().cloned().collect());
    }
    Refusal::Unfixable
}

fn body(entry: &OutboxEntry) -> serde_json::Value {
    serde_json::from_str(&entry.row).unwrap_or(serde_json::Value::Null)
}

/// Writes `patch` (the record's write-back, if any) and every pending row of the record, `row` included
/// (put in the outbox first), in one batch. An error leaves the rows pending; the caller's job fails
/// and its retry sends them again.
pub async fn commit(
    ctx: &Context,
    collection: Collection,
    record_id: &str,
    patch: Option<BatchRequest>,
    row: Option<OutboxEntry>,
) -> Result<(), ReconcileError> {
    if let Some(row) = row {
        ctx.journal.put_outbox(row).await?;
    }
    let rows = ctx.journal.outbox_for(collection, record_id, ROWS_PER_BATCH).await?;
    let wrote = patch.is_some();
    let sent = send(ctx, record_id, patch, rows).await;
    if wrote {
        // Jobs take records from `latest`, and this write's frame may come after later ones (and the
        // frames of the job's earlier writes after it): what PocketBase answered is the newest, and
        // after a failure, which may have been carried out, only a read tells.
        let answer = sent.as_ref().ok().and_then(Option::as_ref);
        ctx.intake.latest().wrote(collection, record_id, answer);
    }
    sent.map(drop)
}

/// Answers the record `patch` wrote, as PocketBase's answer shows it.
async fn send(
    ctx: &Context,
    record_id: &str,
    patch: Option<BatchRequest>,
    mut rows: Vec<OutboxEntry>,
) -> Result<Option<serde_json::Value>, ReconcileError> {
    let first_row = usize::from(patch.is_some());
    // Each refused row is settled (dropped, or sent without its gone relations) before the next try.
    for _ in 0..=2 * rows.len() {
        let mut requests: Vec<BatchRequest> = patch.iter().cloned().collect();
        requests.extend(rows.iter().map(|e| BatchRequest::create_deploy_log(&e.id, &body(e))));
        let (index, error) = match ctx.pb.batch(&requests).await {
            Ok(answers) => {
                ctx.journal
                    .drop_outbox(rows.into_iter().map(|e| e.id).collect())
                    .await?;
                let written = if first_row == 1 {
                    answers.into_iter().next()
                } else {
                    None
                };
                return Ok(written);
            }
            Err(PbError::Batch { index, error }) if index >= first_row && index - first_row < rows.len() => {
                (index - first_row, error)
            }
            Err(e) => return Err(e.into()),
        };
        let Some(fields) = error.field_errors() else {
            return Err(PbError::Batch {
                index: index + first_row,
                error,
            }
            .into());
        };
        let mut entry = rows.remove(index);
        match refusal(fields) {
            Refusal::AlreadyStored => ctx.journal.drop_outbox(vec![entry.id]).await?,
            Refusal::GoneRelations(gone) => {
                let mut row = body(&entry);
                if let Some(fields) = row.as_object_mut() {
                    fields.retain(|k, _| !gone.contains(k));
                }
                entry.row = row.to_string();
                ctx.journal.replace_outbox_row(&entry.id, entry.row.clone()).await?;
                rows.insert(index, entry);
            }
            Refusal::Unfixable => {
                error!(record_id, row_id = %entry.id, error = %error, "PocketBase refuses a deploy_logs row; dropped");
                ctx.journal.drop_outbox(vec![entry.id]).await?;
            }
        }
    }
    Err(ReconcileError::LogsRefused {
        record_id: record_id.to_string(),
    })
}

/// Sends the record's pending rows, if any (a journal read when there are none).
pub async fn flush(ctx: &Context, collection: Collection, record_id: &str) -> Result<(), ReconcileError> {
    commit(ctx, collection, record_id, None, None).await
}

/// Sends the rows of records whose job will not run again soon (their commit failed after the job's last
/// attempt, or the health poller's did), so that they do not wait for the record's next change.
pub struct OutboxSweeper {
    ctx: Context,
    interval: Duration,
}

/// How often rows left pending by a finished job are sent again (a journal read when there are none).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// Rows younger than this are left to their job.
const SWEEP_AFTER: Duration = Duration::from_secs(10);
/// Records swept per tick.
const SWEEP_RECORDS: usize = 50;

impl OutboxSweeper {
    pub fn new(ctx: Context, interval: Duration) -> Self {
        OutboxSweeper { ctx, interval }
    }
}

impl super::Periodic for OutboxSweeper {
    const NAME: &'static str = "deploy_logs outbox sweep";

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn tick(&mut self) -> Result<(), ReconcileError> {
        let older_than = now_ms() - i64::try_from(SWEEP_AFTER.as_millis()).unwrap_or(i64::MAX);
        let records = self.ctx.journal.idle_outbox_records(older_than, SWEEP_RECORDS).await?;
        for (collection, record_id) in records {
            if let Err(e) = flush(&self.ctx, collection, &record_id).await {
                warn!(record_id = %record_id, error = %e, "pending deploy_logs rows not sent yet");
                return Err(e);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pocketbase::FieldError;
    use std::collections::BTreeMap;

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, FieldError> {
        pairs
            .iter()
            .map(|(k, code)| {
                (
                    k.to_string(),
                    FieldError {
                        code: code.to_string(),
                        message: String::new(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn refusals_of_a_row() {
        assert!(matches!(
            refusal(&fields(&[("id", "validation_not_unique")])),
            Refusal::AlreadyStored
        ));
        match refusal(&fields(&[
            ("instance", "validation_missing_rel_records"),
            ("tenant", "validation_missing_rel_records"),
        ])) {
            Refusal::GoneRelations(gone) => assert_eq!(gone, ["instance", "tenant"]),
            _ => panic!("gone relations are sent without them"),
        }
        for unfixable in [
            fields(&[("message", "validation_length_out_of_range")]),
            fields(&[
                ("instance", "validation_missing_rel_records"),
                ("action", "validation_invalid_value"),
            ]),
            fields(&[]),
        ] {
            assert!(matches!(refusal(&unfixable), Refusal::Unfixable), "{unfixable:?}");
        }
    }
}
