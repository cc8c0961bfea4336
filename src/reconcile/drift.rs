//! Drift inside Coolify: a service deleted, stopped, started or given another compose behind the
//! bridge's back. The resync finds it for every instance with a service with one `GET /services` and marks the
//! instance in the journal (`drift:<id>`); the instance's job then observes Coolify instead of trusting its
//! applied spec, repairs what differs, and clears the mark.

use std::collections::HashMap;

use super::context::Context;
use super::plan::{EffectiveState, Spec};
use crate::coolify::{ServiceLook, compose_fingerprint};
use crate::events::Collection;
use crate::resync::{DriftCheck, ListFuture, RecordStamp};

/// What differs between an instance's applied spec and its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    /// The service is not in Coolify's list.
    Missing,
    /// Stopped where it was left running, or not `exited` where it was left stopped.
    State,
    /// Its compose means something else than the one the bridge applied.
    Compose,
}

impl Drift {
    pub fn as_str(self) -> &'static str {
        match self {
            Drift::Missing => "missing",
            Drift::State => "state",
            Drift::Compose => "compose",
        }
    }

    pub fn parse(s: &str) -> Option<Drift> {
        match s {
            "missing" => Some(Drift::Missing),
            "state" => Some(Drift::State),
            "compose" => Some(Drift::Compose),
            _ => None,
        }
    }
}

/// The journal note that marks an instance as drifted.
pub fn drift_note(instance_id: &str) -> String {
    format!("{DRIFT_PREFIX}{instance_id}")
}

const DRIFT_PREFIX: &str = "drift:";
/// How much earlier than the listing a job's last change may be and still keep its record out of the check.
const WORKED_MARGIN_MS: i64 = 1_000;

/// The journal notes of the compose fingerprint last applied to each service, by service uuid.
pub const COMPOSE_PREFIX: &str = "compose:";

pub fn compose_note(service_uuid: &str) -> String {
    format!("{COMPOSE_PREFIX}{service_uuid}")
}

/// What the compose note holds: a hash of the text sent, then the fingerprint of what it means (the
/// render's, [`crate::templates::Rendered::meaning`]). Coolify showing the very text sent is recognised
/// without parsing it.
pub fn compose_note_value(yaml: &str, meaning: &str) -> String {
    format!("{} {meaning}", text_hash(yaml))
}

fn text_hash(text: &str) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(text.as_bytes());
    hex::encode(&digest[..12])
}

/// Whether the compose Coolify shows means the one noted (see [`compose_note_value`]).
fn same_compose(shown: &str, noted: &str) -> bool {
    let (sent, meaning) = noted.split_once(' ').unwrap_or(("", noted));
    text_hash(shown) == sent || compose_fingerprint(shown).is_none_or(|f| f == meaning)
}

/// Pure step: how a listed service differs from what was applied (`None`: it does not). A service left
/// running that is on its way (starting, restarting) or judged by the health poller (degraded, unhealthy)
/// is not drift; one left stopped is drift unless it shows `exited`, since any other status runs some of
/// its containers (or will) and the poller judges only services left running. A compose Coolify does not
/// show (a token without `read:sensitive`) cannot be compared, nor one that is not YAML.
pub fn drift_of(applied_running: bool, look: Option<&ServiceLook>, applied_compose: Option<&str>) -> Option<Drift> {
    let Some(look) = look else {
        return Some(Drift::Missing);
    };
    let wrong_state = if applied_running {
        look.status.is_stopped()
    } else {
        !look.status.is_stopped()
    };
    if wrong_state {
        return Some(Drift::State);
    }
    match (look.docker_compose_raw.as_deref(), applied_compose) {
        (Some(shown), Some(noted)) if !same_compose(shown, noted) => Some(Drift::Compose),
        _ => None,
    }
}

/// The drift check the resync runs, on the reconcilers' context.
pub struct Checker(pub Context);

impl DriftCheck for Checker {
    fn drifted<'a>(
        &'a self,
        instances: &'a [RecordStamp],
        listed_from: i64,
    ) -> ListFuture<'a, Vec<(String, &'static str)>> {
        Box::pin(async move {
            let ctx = &self.0;
            // A job that ran while the fleet was listed may have changed its service after its record was
            // listed: judged by the stale stamp, the service looked drifted (hundreds of times in a resync
            // during a backlog, each a Coolify read to repair nothing). Its own run settles it; the next
            // pass judges it. The margin covers the clocks of other replicas, which stamp jobs on PostgreSQL;
            // with one clock, a job settled before the listing wrote back before it.
            let worked = ctx
                .journal
                .records_worked_since(Collection::BotInstances, listed_from - WORKED_MARGIN_MS)
                .await?;
            let instances: Vec<&RecordStamp> = instances.iter().filter(|s| !worked.contains(s.id.as_str())).collect();
            let composes = ctx.journal.notes_with_prefix(COMPOSE_PREFIX).await?;
            // Which applied states (stopped, running) each service is judged against, and whether it was listed.
            let mut wanted: HashMap<&str, ([bool; 2], bool)> = HashMap::new();
            for stamp in &instances {
                if let (Some(service), Some(applied)) =
                    (&stamp.service, stamp.applied_hash.as_deref().and_then(Spec::parse))
                {
                    wanted.entry(service.as_str()).or_default().0
                        [usize::from(applied.state == EffectiveState::Running)] = true;
                }
            }
            // Judged as the list is read, one service at a time: only the drifted services' verdicts are kept,
            // no compose (a verdict for every service of the fleet took a megabyte).
            let judged: HashMap<String, [Option<Drift>; 2]> = ctx
                .coolify
                .list_service_looks(|look| {
                    let (asked, listed) = wanted.get_mut(look.uuid.as_str())?;
                    *listed = true;
                    let compose = composes.get(&look.uuid);
                    let verdict = |running: bool| {
                        asked[usize::from(running)]
                            .then(|| drift_of(running, Some(&look), compose))
                            .flatten()
                    };
                    let verdicts = [verdict(false), verdict(true)];
                    verdicts.iter().any(Option::is_some).then_some((look.uuid, verdicts))
                })
                .await?
                .into_iter()
                .collect();
            let mut found = Vec::new();
            for stamp in instances {
                let applied = stamp.applied_hash.as_deref().and_then(Spec::parse);
                let (Some(service), Some(applied)) = (&stamp.service, applied) else {
                    continue;
                };
                let applied_running = applied.state == EffectiveState::Running;
                let drift = match wanted.get(service.as_str()) {
                    Some((_, true)) => judged
                        .get(service.as_str())
                        .and_then(|v| v[usize::from(applied_running)]),
                    _ => drift_of(applied_running, None, None),
                };
                if let Some(drift) = drift {
                    ctx.journal.note_changed(&drift_note(&stamp.id), drift.as_str()).await?;
                    tracing::warn!(record_id = %stamp.id, coolify_uuid = %service, drift = drift.as_str(),
                        "service changed behind the bridge's back");
                    found.push((stamp.id.to_string(), drift.as_str()));
                }
            }
            Ok(found)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coolify::ServiceStatus;

    fn look(status: &str, compose: Option<&str>) -> ServiceLook {
        ServiceLook {
            uuid: "u1".into(),
            status: ServiceStatus::parse(status),
            docker_compose_raw: compose.map(str::to_string),
        }
    }

    #[test]
    fn drift_is_what_differs_from_the_applied_spec() {
        let yaml = "services:\n  bot:\n    image: x:1\n";
        let applied = compose_fingerprint(yaml).map(|meaning| compose_note_value(yaml, &meaning));
        let applied = applied.as_deref();
        let redumped = "services:\n    bot:\n        image: 'x:1'\n";
        assert_eq!(
            drift_of(true, Some(&look("running:unknown", Some(redumped))), applied),
            None,
            "the same compose, dumped again"
        );
        assert_eq!(drift_of(true, None, applied), Some(Drift::Missing));
        assert_eq!(
            drift_of(true, Some(&look("exited", Some(yaml))), applied),
            Some(Drift::State)
        );
        assert_eq!(
            drift_of(false, Some(&look("running:unknown", Some(yaml))), applied),
            Some(Drift::State)
        );
        assert_eq!(
            drift_of(
                true,
                Some(&look("running:unknown", Some("services:\n  bot:\n    image: x:2\n"))),
                applied
            ),
            Some(Drift::Compose)
        );
        assert_eq!(
            drift_of(true, Some(&look("running:unknown", Some(yaml))), applied),
            None
        );
        assert_eq!(
            drift_of(true, Some(&look("starting:unknown", Some(yaml))), applied),
            None,
            "on its way"
        );
        assert_eq!(
            drift_of(true, Some(&look("degraded:unhealthy", Some(yaml))), applied),
            None,
            "the poller's"
        );
        assert_eq!(
            drift_of(false, Some(&look("exited", None)), applied),
            None,
            "compose not shown"
        );
        for up in [
            "degraded:unhealthy",
            "starting:unknown",
            "restarting:unknown",
            "paused:unknown",
        ] {
            assert_eq!(
                drift_of(false, Some(&look(up, Some(yaml))), applied),
                Some(Drift::State),
                "left stopped, {up}"
            );
        }
        assert_eq!(
            drift_of(true, Some(&look("running:unknown", Some(yaml))), None),
            None,
            "none noted"
        );
        for d in [Drift::Missing, Drift::State, Drift::Compose] {
            assert_eq!(Drift::parse(d.as_str()), Some(d));
        }
    }
}
