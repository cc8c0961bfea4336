//! The PocketBase client as the token source of the realtime consumer and the lister of the resync; the
//! resync's listing of instances also serves the health poller (`records::WatchedListing`).

use serde::Deserialize;

use super::client::{EmptyTail, PbClient};
use super::realtime::{TokenFuture, TokenSource};
use super::records::{BOT_INSTANCES, ListedInstance, TENANTS, format_pb_date, pb_date};
use crate::events::Collection;
use crate::intake::Intake;
use crate::resync::{ListFuture, RecordLister, RecordStamp};

impl TokenSource for PbClient {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(PbClient::token(self))
    }
}

/// A tenant as the resync compares it.
#[derive(Deserialize)]
struct TenantVersion {
    id: String,
    #[serde(default, with = "pb_date")]
    updated: Option<chrono::DateTime<chrono::Utc>>,
}

fn stamp(id: String, updated: Option<chrono::DateTime<chrono::Utc>>) -> RecordStamp {
    RecordStamp {
        id: id.into(),
        updated: updated.as_ref().map(format_pb_date).unwrap_or_default().into(),
        applied_hash: None,
        service: None,
    }
}

/// An instance's stamp, with what the drift check compares: its service and its applied spec.
fn instance_stamp(i: ListedInstance) -> RecordStamp {
    RecordStamp {
        service: i.coolify_service_id.map(Into::into),
        applied_hash: i.applied_hash,
        ..stamp(i.id, i.updated)
    }
}

/// The resync's lister: PocketBase's records, whose instances it also offers to the health poller.
pub struct ResyncLister {
    pub pb: PbClient,
    /// The intake whose count of instance changes stamps the offer; `None` where no health poller runs
    /// to take it (an operator's resync on a replica that does not lead), so that none is held there.
    pub offers_to_poller: Option<Intake>,
}

impl RecordLister for ResyncLister {
    // list_all verifies the token before it believes an empty page, so "empty" never hides a dead token.
    fn list(&self, c: Collection) -> ListFuture<'_, Vec<RecordStamp>> {
        Box::pin(async move {
            match c {
                Collection::Tenants => {
                    let keep = |t: TenantVersion| Some(stamp(t.id, t.updated));
                    Ok(self.pb.scan_keyset(TENANTS, None, EmptyTail::Confirm, keep).await?)
                }
                Collection::BotInstances => {
                    let listed_from = self.offers_to_poller.as_ref().map(Intake::instance_changes);
                    if listed_from.is_some() {
                        // The pass will move the count: the poller's listing is out of date from here.
                        self.pb.clear_watched();
                    }
                    let mut watched = Vec::new();
                    // Page by page: only the stamps and the watched instances are kept of the fleet.
                    let keep = |i: ListedInstance| {
                        if listed_from.is_some() {
                            watched.extend(i.watched());
                        }
                        Some(instance_stamp(i))
                    };
                    let stamps = self
                        .pb
                        .scan_keyset(BOT_INSTANCES, None, EmptyTail::Confirm, keep)
                        .await?;
                    if let Some(listed_from) = listed_from {
                        watched.shrink_to_fit();
                        // Current once the pass's end alone has moved the count.
                        self.pb.keep_watched(listed_from + 1, watched);
                    }
                    Ok(stamps)
                }
            }
        })
    }
}
