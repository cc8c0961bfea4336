//! Which Coolify reads serve one round of status polling (DESIGN.md principle 8): a pure decision, the
//! [`StatusBoard`](super::context::StatusBoard) does the reads.
//!
//! Three ways to learn the statuses of the services waited on, from fewest bytes to fewest calls: each
//! service's own `GET /services/{uuid}` (a few KB, one call per service), each waited project's environment
//! `GET /projects/{uuid}/{environment}` (that tenant's services, one call per project), or the whole list
//! `GET /services` (one call, about 3.7 KB per service of the fleet: 37 MB at 10,000). Each way reads a
//! subset of what the next one reads, so their sizes are in that order whatever the fleet looks like. A
//! round takes the first whose calls fit the status share of the budget, and the list when none fits.

use std::collections::BTreeSet;
use std::time::Duration;

/// The most of the Coolify budget that status reads may take while reconciles wait.
pub const BUDGET_SHARE: f64 = 0.15;
/// Rounds of the list are spaced by at least this many times the last list's duration, so that a slow
/// list (a large fleet) never keeps Coolify busy more than a tenth of the time.
pub const LIST_DUTY_FACTOR: u32 = 10;

/// A service waited on, and the project it was created in (`None` when not known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waited<'a> {
    pub service: &'a str,
    pub project: Option<&'a str>,
}

/// One Coolify call of a round.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Read {
    /// `GET /services/{uuid}`.
    Service(String),
    /// `GET /projects/{uuid}/{environment}`: every service of the project's environment.
    Project(String),
    /// `GET /services`: every service of the team.
    List,
}

impl Read {
    /// Whether this read's answer has `waited`'s status.
    pub fn serves(&self, waited: &Waited<'_>) -> bool {
        match self {
            Read::Service(s) => s == waited.service,
            Read::Project(p) => waited.project == Some(p.as_str()),
            Read::List => true,
        }
    }
}

/// What the round is paced by.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub requests_per_minute: u32,
    /// The shortest gap between rounds.
    pub interval: Duration,
    /// How long the last `GET /services` took, if one was made.
    pub last_list: Option<Duration>,
}

impl Pace {
    /// Calls a round may make with rounds `interval` apart, within `BUDGET_SHARE` of the budget.
    fn calls_per_round(&self) -> usize {
        let per_minute = f64::from(self.requests_per_minute) * BUDGET_SHARE;
        // A hair of slack: at the default budget the interval is chosen to fit exactly one call.
        (per_minute * self.interval.as_secs_f64() / 60.0 + 1e-9).floor() as usize
    }
}

/// The reads of one round, and how long after it was asked for the next round may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    pub reads: Vec<Read>,
    pub gap: Duration,
}

/// The reads for the services `waited` on now: the fewest bytes whose calls fit the status share of the
/// budget, else the fewest calls (the list, or one service's own read when only one is waited on).
pub fn plan(waited: &[Waited<'_>], pace: &Pace) -> Round {
    let per_service: BTreeSet<Read> = waited.iter().map(|w| Read::Service(w.service.to_string())).collect();
    let per_project: BTreeSet<Read> = waited
        .iter()
        .map(|w| match w.project {
            Some(p) => Read::Project(p.to_string()),
            None => Read::Service(w.service.to_string()),
        })
        .collect();
    let list = BTreeSet::from([Read::List]);
    // Fewest bytes first.
    let ways = [per_service, per_project, list];
    let fit = pace.calls_per_round();
    let reads = match ways.iter().find(|w| w.len() <= fit) {
        Some(w) => w.clone(),
        None => {
            let fewest = ways.iter().map(BTreeSet::len).min().unwrap_or(1);
            ways.into_iter().find(|w| w.len() == fewest).unwrap_or_default()
        }
    };
    let gap = if reads.contains(&Read::List) {
        pace.interval.max(pace.last_list.unwrap_or_default() * LIST_DUTY_FACTOR)
    } else {
        pace.interval
    };
    Round {
        reads: reads.into_iter().collect(),
        gap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_GAP: Duration = Duration::from_millis(2223);

    fn pace(rpm: u32, interval: Duration) -> Pace {
        Pace {
            requests_per_minute: rpm,
            interval,
            last_list: None,
        }
    }

    fn waiting(n: usize, projects: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("s{i}"), format!("p{}", i % projects)))
            .collect()
    }

    fn waited(pairs: &[(String, String)]) -> Vec<Waited<'_>> {
        pairs
            .iter()
            .map(|(s, p)| Waited {
                service: s,
                project: Some(p),
            })
            .collect()
    }

    fn kinds(round: &Round) -> (usize, usize, usize) {
        let n = |f: fn(&Read) -> bool| round.reads.iter().filter(|r| f(r)).count();
        (
            n(|r| matches!(r, Read::Service(_))),
            n(|r| matches!(r, Read::Project(_))),
            n(|r| matches!(r, Read::List)),
        )
    }

    #[test]
    fn at_the_default_budget_one_call_a_round() {
        let p = pace(180, DEFAULT_GAP);
        // A lone waiter reads its own service.
        let one = waiting(1, 1);
        assert_eq!(plan(&waited(&one), &p).reads, vec![Read::Service("s0".into())]);
        // Many of one tenant: that tenant's environment.
        let same = waiting(40, 1);
        assert_eq!(plan(&waited(&same), &p).reads, vec![Read::Project("p0".into())]);
        // Two tenants: the list.
        let two = waiting(2, 2);
        assert_eq!(plan(&waited(&two), &p).reads, vec![Read::List]);
    }

    #[test]
    fn a_raised_budget_reads_each_service() {
        // Stack A of the bench: 100,000 a minute, rounds a second apart: 250 calls a round fit.
        let p = pace(100_000, Duration::from_secs(1));
        let many = waiting(250, 250);
        assert_eq!(kinds(&plan(&waited(&many), &p)), (250, 0, 0));
        // More waiters than fit, in fewer projects: one read per project.
        let more = waiting(400, 100);
        assert_eq!(kinds(&plan(&waited(&more), &p)), (0, 100, 0));
        // Neither fits: the list.
        let most = waiting(400, 300);
        assert_eq!(kinds(&plan(&waited(&most), &p)), (0, 0, 1));
    }

    #[test]
    fn a_waiter_without_a_project_is_read_by_itself_beside_the_projects() {
        let p = pace(180 * 3, DEFAULT_GAP);
        let pairs = waiting(10, 1);
        let mut w = waited(&pairs);
        w.push(Waited {
            service: "lone",
            project: None,
        });
        assert_eq!(
            plan(&w, &p).reads,
            vec![Read::Service("lone".into()), Read::Project("p0".into())]
        );
    }

    #[test]
    fn when_nothing_fits_the_fewest_calls_with_the_fewest_bytes() {
        // Rounds closer than the budget allows even one call for.
        let p = pace(180, Duration::from_millis(300));
        assert_eq!(kinds(&plan(&waited(&waiting(1, 1)), &p)), (1, 0, 0));
        assert_eq!(kinds(&plan(&waited(&waiting(5, 1)), &p)), (0, 1, 0));
        assert_eq!(kinds(&plan(&waited(&waiting(5, 5)), &p)), (0, 0, 1));
    }

    #[test]
    fn the_same_service_or_project_is_read_once() {
        let p = pace(100_000, Duration::from_secs(1));
        let pairs = vec![("s".to_string(), "p".to_string()); 3];
        assert_eq!(plan(&waited(&pairs), &p).reads, vec![Read::Service("s".into())]);
    }

    #[test]
    fn a_slow_list_spaces_its_rounds() {
        let mut p = pace(180, DEFAULT_GAP);
        p.last_list = Some(Duration::from_millis(400));
        let two = waiting(2, 2);
        assert_eq!(plan(&waited(&two), &p).gap, Duration::from_secs(4));
        let one = waiting(1, 1);
        assert_eq!(
            plan(&waited(&one), &p).gap,
            DEFAULT_GAP,
            "a single read is not slowed by the list"
        );
    }

    #[test]
    fn reads_serve_their_waiters() {
        let w = Waited {
            service: "s",
            project: Some("p"),
        };
        assert!(Read::Service("s".into()).serves(&w));
        assert!(!Read::Service("t".into()).serves(&w));
        assert!(Read::Project("p".into()).serves(&w));
        assert!(!Read::Project("q".into()).serves(&w));
        assert!(Read::List.serves(&w));
        let loose = Waited {
            service: "s",
            project: None,
        };
        assert!(!Read::Project("p".into()).serves(&loose));
    }
}
