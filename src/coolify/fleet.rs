//! The fleet as the last full `GET /services` pass saw it: each service's uuid, name, description and
//! status. The health poller, the drift check and the orphan scan each need a fleet-wide view; the list
//! runs to tens of megabytes at scale and counts against Coolify's rate limit, so one pass within a poll
//! interval serves them all (the drift check's own pass, which also reads composes, included).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use compact_str::CompactString;
use serde::Deserialize;
use tokio::sync::watch;

use super::status::ServiceStatus;
use super::types::ServiceLook;

/// One service as the fleet-wide tasks see it (no containers, no compose).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServiceBrief {
    /// A uuid fits inside a `CompactString`: no allocation of its own, for each service of the fleet.
    pub uuid: CompactString,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub status: ServiceStatus,
}

/// A brief and the compose, read together by the drift check's pass.
#[derive(Debug, Deserialize)]
pub(super) struct BriefAndCompose {
    uuid: CompactString,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    status: ServiceStatus,
    #[serde(default)]
    docker_compose_raw: Option<String>,
}

impl BriefAndCompose {
    pub(super) fn split(self) -> (ServiceBrief, ServiceLook) {
        let look = ServiceLook {
            uuid: self.uuid.to_string(),
            status: self.status.clone(),
            docker_compose_raw: self.docker_compose_raw,
        };
        let brief = ServiceBrief {
            uuid: self.uuid,
            name: self.name,
            description: self.description,
            status: self.status,
        };
        (brief, look)
    }
}

/// One full pass over `GET /services`.
#[derive(Debug)]
pub struct FleetList {
    /// Numbers the passes, so a reader can tell a pass it has judged already.
    pub pass: u64,
    /// When the request was sent: every service created before this is in the list.
    pub read_at: DateTime<Utc>,
    taken: Instant,
    /// By uuid, so that a service is found without an index of the fleet beside it.
    pub services: Vec<ServiceBrief>,
}

impl FleetList {
    pub fn service(&self, uuid: &str) -> Option<&ServiceBrief> {
        let at = self.services.binary_search_by(|s| s.uuid.as_str().cmp(uuid)).ok()?;
        self.services.get(at)
    }
}

/// The last pass, shared by the client's clones.
#[derive(Debug)]
pub(super) struct LastPass {
    last: Mutex<Option<Arc<FleetList>>>,
    passes: Mutex<u64>,
    /// How many services the last kept pass listed: the next pass's room, so that its list does not
    /// grow by doubling to half again the fleet's size (and then copy itself to shed the spare room).
    last_size: AtomicUsize,
    /// How many passes are under way. A reader that comes while one is waits for it: on a loaded machine
    /// a pass takes long enough that a poll tick landing in it would otherwise list the fleet a second time.
    under_way: watch::Sender<usize>,
}

impl Default for LastPass {
    fn default() -> Self {
        LastPass {
            last: Mutex::default(),
            passes: Mutex::default(),
            last_size: AtomicUsize::default(),
            under_way: watch::Sender::new(0),
        }
    }
}

/// A pass under way, until dropped (finished, failed or cancelled).
pub(super) struct UnderWay<'a>(&'a LastPass);

impl Drop for UnderWay<'_> {
    fn drop(&mut self) {
        self.0.under_way.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl LastPass {
    /// Starts a pass and lets the last one go: a reader that comes while a pass is under way waits for it
    /// (see `CoolifyClient::fleet`), so the last one would only sit beside the new one in memory (a fleet's
    /// worth of names at each poll).
    pub(super) fn begin(&self) -> UnderWay<'_> {
        self.under_way.send_modify(|n| *n += 1);
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = None;
        UnderWay(self)
    }

    /// Room for the services of a new pass: the last pass's count and a little for the fleet's growth.
    pub(super) fn room(&self) -> usize {
        let last = self.last_size.load(Ordering::Relaxed);
        last + last / 32 + 16
    }

    /// Waits, at most `limit`, for the passes under way to end; false when there were none.
    pub(super) async fn await_under_way(&self, limit: Duration) -> bool {
        let mut under_way = self.under_way.subscribe();
        if *under_way.borrow_and_update() == 0 {
            return false;
        }
        // A pass that outlives the limit (or fails) is not waited for again: the reader lists itself.
        let _ = tokio::time::timeout(limit, under_way.wait_for(|n| *n == 0)).await;
        true
    }

    /// The last pass if it is younger than `max_age` and is not pass `judged`.
    pub(super) fn fresh(&self, max_age: Duration, judged: Option<u64>) -> Option<Arc<FleetList>> {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.as_ref()
            .filter(|l| l.taken.elapsed() < max_age && Some(l.pass) != judged)
            .cloned()
    }

    /// Keeps a finished pass (unless a later-started one was kept already) and returns it.
    pub(super) fn keep(
        &self,
        taken: Instant,
        read_at: DateTime<Utc>,
        mut services: Vec<ServiceBrief>,
    ) -> Arc<FleetList> {
        services.shrink_to_fit();
        services.sort_unstable_by(|a, b| a.uuid.cmp(&b.uuid));
        self.last_size.store(services.len(), Ordering::Relaxed);
        let pass = {
            let mut n = self.passes.lock().unwrap_or_else(PoisonError::into_inner);
            *n += 1;
            *n
        };
        let list = Arc::new(FleetList {
            pass,
            read_at,
            taken,
            services,
        });
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.as_ref().is_none_or(|l| l.taken <= taken) {
            *last = Some(list.clone());
        }
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brief(uuid: &str) -> ServiceBrief {
        ServiceBrief {
            uuid: uuid.into(),
            name: format!("cf-{uuid}"),
            description: None,
            status: ServiceStatus::default(),
        }
    }

    #[test]
    fn a_kept_pass_finds_each_service_by_uuid() {
        let kept = LastPass::default();
        let list = kept.keep(Instant::now(), Utc::now(), ["m", "b", "z", "a"].map(brief).to_vec());
        for uuid in ["a", "b", "m", "z"] {
            assert_eq!(
                list.service(uuid).map(|s| s.name.as_str()),
                Some(format!("cf-{uuid}").as_str())
            );
        }
        assert!(list.service("c").is_none());
        assert!(list.service("").is_none());
    }

    #[test]
    fn a_new_pass_has_room_for_the_last_ones_services() {
        let kept = LastPass::default();
        let services: Vec<ServiceBrief> = (0..1000).map(|i| brief(&format!("s{i:04}"))).collect();
        kept.keep(Instant::now(), Utc::now(), services);
        assert!((1000..1100).contains(&kept.room()), "room {}", kept.room());
    }

    #[test]
    fn a_pass_is_shared_while_young_and_never_twice_with_one_reader() {
        let kept = LastPass::default();
        assert!(kept.fresh(Duration::from_secs(30), None).is_none());
        let first = kept.keep(Instant::now(), Utc::now(), Vec::new());
        let again = kept.fresh(Duration::from_secs(30), None).expect("young");
        assert_eq!(again.pass, first.pass);
        assert!(
            kept.fresh(Duration::from_secs(30), Some(first.pass)).is_none(),
            "judged already"
        );
        assert!(kept.fresh(Duration::ZERO, None).is_none(), "too old");
        // A pass that started earlier but ended later does not replace the newer one.
        let earlier = Instant::now() - Duration::from_secs(5);
        let second = kept.keep(Instant::now(), Utc::now(), Vec::new());
        kept.keep(earlier, Utc::now(), Vec::new());
        assert_eq!(
            kept.fresh(Duration::from_secs(30), None).expect("young").pass,
            second.pass
        );
        // A new pass lets the last one go; readers wait for it instead.
        let under_way = kept.begin();
        assert!(kept.fresh(Duration::from_secs(30), None).is_none(), "let go");
        drop(under_way);
    }
}
