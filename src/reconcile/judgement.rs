//! Health judgement, pure and kept in memory: what one reading of a service's status says (`judge`),
//! what the poller thinks of each instance (`HealthBoard`), and what the instance's job must write for it
//! (`health_write`). The poller (`health`) fills the board; the job (`instance`) reads it; the admin API
//! and metrics show it. Live health (when each instance was last seen healthy) stays here, not in
//! PocketBase: the record's `last_healthy_at` changes on transitions only (DESIGN.md principle 9).

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use compact_str::CompactString;

use super::plan::EffectiveState;
use crate::coolify::ServiceStatus;
use crate::pocketbase::records::InstanceStatus;

/// Marks an `error_message` the poller wrote, so it only clears its own errors.
pub const HEALTH_PREFIX: &str = "health check: ";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Healthy,
    /// Bad, but not yet for long enough.
    Suspect,
    /// Bad for `threshold` consecutive readings.
    Unhealthy,
    /// Not in Coolify's list at all.
    Missing,
}

impl Verdict {
    pub const ALL: [Verdict; 4] = [Verdict::Healthy, Verdict::Suspect, Verdict::Unhealthy, Verdict::Missing];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Suspect => "suspect",
            Verdict::Unhealthy => "unhealthy",
            Verdict::Missing => "missing",
        }
    }
}

/// Pure step: the new streak of bad readings and the verdict for one reading.
pub fn judge(status: Option<&ServiceStatus>, bad_streak: u32, threshold: u32) -> (u32, Verdict) {
    match status {
        None => (0, Verdict::Missing),
        Some(s) if s.is_running() && !s.is_bad() => (0, Verdict::Healthy),
        Some(_) => {
            let streak = bad_streak + 1;
            if streak >= threshold {
                (streak, Verdict::Unhealthy)
            } else {
                (streak, Verdict::Suspect)
            }
        }
    }
}

/// What the poller thinks of one instance's service, kept in memory for the instance's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    /// For `Unhealthy`: the `error_message` the record should show. Empty otherwise: the board holds a
    /// judgement for every instance of the fleet, nearly all of them healthy.
    pub message: String,
}

impl Judgement {
    /// The judgement of one reading of `service`, which showed `status` (none: not listed).
    pub fn of(verdict: Verdict, service: &str, status: Option<&ServiceStatus>, threshold: u32) -> Self {
        let message = if verdict == Verdict::Unhealthy {
            let shown = status.map(ToString::to_string).unwrap_or_default();
            format!("{HEALTH_PREFIX}service {service} reads {shown} for {threshold} consecutive checks")
        } else {
            String::new()
        };
        Judgement { verdict, message }
    }
}

/// What a record's job writes for the health judgement of its service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthWrite {
    /// Running again: `running`, the health error cleared, `last_healthy_at` now.
    Recovered,
    /// Bad for long enough: `error` with this message.
    Unhealthy(String),
}

/// Whether the record shows the poller's own error (the only `error` the poller ever clears).
pub fn is_health_error(status: Option<InstanceStatus>, error_message: Option<&str>) -> bool {
    status == Some(InstanceStatus::Error) && error_message.is_some_and(|m| m.starts_with(HEALTH_PREFIX))
}

/// Pure step: what the record must show for `judgement`, given what it shows now. Only the poller's own
/// error is ever cleared; an instance that is not running is left to its job's other work.
pub fn health_write(
    status: Option<InstanceStatus>,
    error_message: Option<&str>,
    judgement: Option<&Judgement>,
) -> Option<HealthWrite> {
    let health_error = is_health_error(status, error_message);
    match judgement.map(|j| (j.verdict, &j.message)) {
        Some((Verdict::Healthy, _)) if health_error => Some(HealthWrite::Recovered),
        Some((Verdict::Unhealthy, message)) if status == Some(InstanceStatus::Running) => {
            Some(HealthWrite::Unhealthy(message.clone()))
        }
        _ => None,
    }
}

/// Pure step: whether a record's status shows a settled outcome of a spec in `state`, so that a record
/// whose applied spec is the desired one needs no run. `deploying`, `pending` and an action's `error` are
/// not settled: a run killed after marking the record, a failed change taken back, a block lifted with
/// the spec as it was all leave them behind while Coolify already runs the spec; only a write-back clears
/// them. The poller's own `error` on a service that should run is settled: its judgement clears it.
pub fn shows_settled(status: Option<InstanceStatus>, error_message: Option<&str>, state: EffectiveState) -> bool {
    match status {
        Some(InstanceStatus::Running) => state == EffectiveState::Running,
        Some(InstanceStatus::Stopped) => state == EffectiveState::Stopped,
        Some(InstanceStatus::Error) => state == EffectiveState::Running && is_health_error(status, error_message),
        _ => false,
    }
}

/// One instance's live health: the latest judgement, when it was made, when the service was last seen
/// healthy (by this process, or as the record last showed it), and how many bad readings in a row led to
/// it (kept here rather than in a second map of the fleet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveHealth {
    pub judgement: Judgement,
    pub checked_at: DateTime<Utc>,
    pub last_seen_healthy: Option<DateTime<Utc>>,
    pub bad_streak: u32,
    /// Whether the operator page's feed was told of this verdict ([`HealthBoard::take_unannounced`]).
    pub announced: bool,
}

/// Pure step: whether a reading's `verdict` is announced already, being the one the feed was last told of.
pub fn announced_already(previous: Option<&LiveHealth>, verdict: Verdict) -> bool {
    previous.is_some_and(|l| l.announced && l.judgement.verdict == verdict)
}

/// Pure step: when the service was last seen healthy after a reading at `now` with `verdict`.
pub fn last_seen_healthy(
    verdict: Verdict,
    now: DateTime<Utc>,
    previous: Option<DateTime<Utc>>,
    recorded: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    if verdict == Verdict::Healthy {
        Some(now)
    } else {
        previous.max(recorded)
    }
}

/// The poller's latest judgements, by instance id. Only the instance's job acts on them.
#[derive(Debug, Default)]
pub struct HealthBoard(Mutex<HashMap<CompactString, LiveHealth>>);

impl HealthBoard {
    pub fn get(&self, instance_id: &str) -> Option<Judgement> {
        self.lock().get(instance_id).map(|l| l.judgement.clone())
    }

    pub fn live(&self, instance_id: &str) -> Option<LiveHealth> {
        self.lock().get(instance_id).cloned()
    }

    /// Every instance's live health, by id.
    pub fn all(&self) -> Vec<(String, LiveHealth)> {
        let mut all: Vec<_> = self.lock().iter().map(|(id, l)| (id.to_string(), l.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// How many instances have each verdict.
    pub fn counts(&self) -> HashMap<Verdict, usize> {
        let mut counts = HashMap::new();
        for l in self.lock().values() {
            *counts.entry(l.judgement.verdict).or_insert(0) += 1;
        }
        counts
    }

    /// The verdicts not yet announced, by id (new instances included), marked announced. The board itself
    /// carries the mark: a copy of the fleet's verdicts to compare with, every second, cost megabytes.
    pub fn take_unannounced(&self) -> Vec<(String, Verdict)> {
        let mut taken: Vec<(String, Verdict)> = self
            .lock()
            .iter_mut()
            .filter(|(_, l)| !l.announced)
            .map(|(id, l)| {
                l.announced = true;
                (id.to_string(), l.judgement.verdict)
            })
            .collect();
        taken.sort_by(|a, b| a.0.cmp(&b.0));
        taken
    }

    /// Lets the poller judge the fleet in place, under the lock.
    pub fn update(&self, judge: impl FnOnce(&mut HashMap<CompactString, LiveHealth>)) {
        judge(&mut self.lock());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CompactString, LiveHealth>> {
        // Plain data: a panic elsewhere cannot leave it half-written in a way that matters.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_status_that_shows_the_outcome_is_settled() {
        use EffectiveState::{Running as R, Stopped as S};
        use InstanceStatus::{Deploying, Error, Pending, Running, Stopped};
        let health = Some("health check: service s reads exited for 3 consecutive checks");
        let failed = Some("coolify: 500 on start");
        for (status, message, state, settled) in [
            (Some(Running), None, R, true),
            (Some(Stopped), None, S, true),
            (Some(Running), None, S, false),
            (Some(Stopped), None, R, false),
            (Some(Deploying), None, R, false),
            (Some(Deploying), None, S, false),
            (Some(Pending), None, R, false),
            (None, None, R, false),
            (Some(Error), health, R, true),
            (Some(Error), health, S, false),
            (Some(Error), failed, R, false),
            (Some(Error), failed, S, false),
        ] {
            assert_eq!(
                shows_settled(status, message, state),
                settled,
                "{status:?} {message:?} {state:?}"
            );
        }
    }

    #[test]
    fn only_an_unhealthy_judgement_carries_a_message() {
        let exited = ServiceStatus::parse("exited");
        let running = ServiceStatus::parse("running:healthy");
        assert_eq!(
            Judgement::of(Verdict::Unhealthy, "s1", Some(&exited), 3).message,
            "health check: service s1 reads exited for 3 consecutive checks"
        );
        for (verdict, status) in [
            (Verdict::Healthy, Some(&running)),
            (Verdict::Suspect, Some(&exited)),
            (Verdict::Missing, None),
        ] {
            assert_eq!(Judgement::of(verdict, "s1", status, 3).message, "", "{verdict:?}");
        }
    }

    #[test]
    fn the_job_writes_only_what_the_judgement_changes() {
        let j = |verdict| Judgement {
            verdict,
            message: "health check: service s reads exited for 3 consecutive checks".into(),
        };
        let running = Some(InstanceStatus::Running);
        let error = Some(InstanceStatus::Error);
        let ours = Some("health check: service s reads exited for 3 consecutive checks");
        assert_eq!(
            health_write(running, None, Some(&j(Verdict::Unhealthy))),
            Some(HealthWrite::Unhealthy(j(Verdict::Unhealthy).message))
        );
        assert_eq!(
            health_write(error, ours, Some(&j(Verdict::Unhealthy))),
            None,
            "already shown"
        );
        assert_eq!(
            health_write(error, ours, Some(&j(Verdict::Healthy))),
            Some(HealthWrite::Recovered)
        );
        assert_eq!(
            health_write(error, Some("quota exceeded"), Some(&j(Verdict::Healthy))),
            None,
            "another error is not the poller's to clear"
        );
        assert_eq!(health_write(running, None, Some(&j(Verdict::Healthy))), None);
        assert_eq!(health_write(running, None, Some(&j(Verdict::Suspect))), None);
        assert_eq!(health_write(running, None, Some(&j(Verdict::Missing))), None);
        assert_eq!(
            health_write(Some(InstanceStatus::Stopped), None, Some(&j(Verdict::Unhealthy))),
            None
        );
        assert_eq!(health_write(running, None, None), None, "no judgement yet");
    }

    #[test]
    fn the_feed_is_told_of_new_and_changed_verdicts_once() {
        let board = HealthBoard::default();
        let poll = |board: &HealthBoard, readings: &[(&str, Verdict)]| {
            board.update(|b| {
                for (id, verdict) in readings {
                    let announced = announced_already(b.get(*id), *verdict);
                    let live = LiveHealth {
                        judgement: Judgement::of(*verdict, "svc", None, 3),
                        checked_at: Utc::now(),
                        last_seen_healthy: None,
                        bad_streak: 0,
                        announced,
                    };
                    b.insert((*id).into(), live);
                }
            })
        };
        poll(&board, &[("b", Verdict::Suspect), ("a", Verdict::Healthy)]);
        assert_eq!(
            board.take_unannounced(),
            vec![("a".into(), Verdict::Healthy), ("b".into(), Verdict::Suspect)]
        );
        assert!(board.take_unannounced().is_empty(), "told once");
        poll(
            &board,
            &[
                ("a", Verdict::Healthy),
                ("b", Verdict::Unhealthy),
                ("c", Verdict::Missing),
            ],
        );
        assert_eq!(
            board.take_unannounced(),
            vec![("b".into(), Verdict::Unhealthy), ("c".into(), Verdict::Missing)]
        );
    }

    #[test]
    fn live_health_remembers_the_last_healthy_reading() {
        let t = |s: i64| DateTime::<Utc>::from_timestamp(s, 0);
        assert_eq!(
            last_seen_healthy(Verdict::Healthy, t(100).unwrap(), t(50), t(10)),
            t(100)
        );
        assert_eq!(
            last_seen_healthy(Verdict::Suspect, t(100).unwrap(), t(50), t(10)),
            t(50)
        );
        assert_eq!(
            last_seen_healthy(Verdict::Unhealthy, t(100).unwrap(), None, t(10)),
            t(10),
            "a fresh process starts from what the record shows"
        );
        assert_eq!(last_seen_healthy(Verdict::Missing, t(100).unwrap(), None, None), None);
    }

    #[test]
    fn error_only_after_consecutive_bad_readings() {
        let bad = ServiceStatus::parse("exited");
        let good = ServiceStatus::parse("running:healthy");
        let degraded = ServiceStatus::parse("degraded:unhealthy");
        let (s, v) = judge(Some(&bad), 0, 3);
        assert_eq!((s, v), (1, Verdict::Suspect));
        let (s, v) = judge(Some(&degraded), s, 3);
        assert_eq!((s, v), (2, Verdict::Suspect));
        let (s, v) = judge(Some(&good), s, 3);
        assert_eq!((s, v), (0, Verdict::Healthy), "one good reading resets the streak");
        let mut streak = 0;
        let mut verdict = Verdict::Healthy;
        for _ in 0..3 {
            (streak, verdict) = judge(Some(&bad), streak, 3);
        }
        assert_eq!(verdict, Verdict::Unhealthy);
        assert_eq!(judge(None, 5, 3), (0, Verdict::Missing));
        let unhealthy = ServiceStatus::parse("running:unhealthy");
        assert_eq!(judge(Some(&unhealthy), 0, 1).1, Verdict::Unhealthy);
        let unknown = ServiceStatus::parse("running:unknown");
        assert_eq!(
            judge(Some(&unknown), 0, 1).1,
            Verdict::Healthy,
            "no healthcheck is normal for bots"
        );
    }
}
