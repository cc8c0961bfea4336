//! Orphans: Coolify services and projects named `cf-*` with no live record, and services left by an
//! earlier record whose id a live record reuses (their description names another incarnation). Reported
//! every scan; removed only after two consecutive confirmations, and only when the policy says so.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use tracing::{info, warn};

use super::context::Context;
use super::error::ReconcileError;
use super::instance::life_tag;
use crate::config::OrphanPolicy;
use crate::coolify::budget::Priority;
use crate::coolify::{FleetList, ServiceBrief};
use crate::incarnation;
use crate::journal::DeletionState;
use crate::pocketbase::records::{BOT_INSTANCES, InstanceLife, TENANTS, TenantSlug};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum OrphanKind {
    Service,
    Project,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Orphan {
    pub kind: OrphanKind,
    pub uuid: String,
    pub name: String,
}

/// Pure step: which `cf-*` resources have no live record. `live_instances` maps each live instance id to
/// its incarnation tag.
pub fn find_orphans(
    services: &[ServiceBrief],
    projects: &[(String, String)],
    live_instances: &BTreeMap<String, String>,
    live_slugs: &BTreeSet<String>,
) -> Vec<Orphan> {
    let mut out = Vec::new();
    for s in services {
        if let Some(id) = s.name.strip_prefix("cf-")
            && live_instances
                .get(id)
                .is_none_or(|life| incarnation::is_other_life(s.description.as_deref(), life))
        {
            out.push(Orphan {
                kind: OrphanKind::Service,
                uuid: s.uuid.to_string(),
                name: s.name.clone(),
            });
        }
    }
    for (uuid, name) in projects {
        if let Some(slug) = name.strip_prefix("cf-")
            && !live_slugs.contains(slug)
        {
            out.push(Orphan {
                kind: OrphanKind::Project,
                uuid: uuid.clone(),
                name: name.clone(),
            });
        }
    }
    out
}

/// Pure step: counts consecutive sightings; returns the orphans confirmed at least twice.
pub fn confirm(seen: &mut HashMap<String, u32>, current: &[Orphan]) -> Vec<Orphan> {
    let now: BTreeSet<&str> = current.iter().map(|o| o.uuid.as_str()).collect();
    seen.retain(|uuid, _| now.contains(uuid.as_str()));
    let mut confirmed = Vec::new();
    for o in current {
        let n = seen.entry(o.uuid.clone()).or_insert(0);
        *n += 1;
        if *n >= 2 {
            confirmed.push(o.clone());
        }
    }
    confirmed
}

pub struct OrphanScanner {
    ctx: Context,
    policy: OrphanPolicy,
    interval: Duration,
    /// How old a shared fleet list may be (the health poll interval).
    list_age: Duration,
    seen: HashMap<String, u32>,
}

impl super::Periodic for OrphanScanner {
    const NAME: &'static str = "orphan scan";

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn tick(&mut self) -> Result<(), ReconcileError> {
        self.scan_once().await.map(drop)
    }
}

impl OrphanScanner {
    pub fn new(ctx: Context, policy: OrphanPolicy, interval: Duration, list_age: Duration) -> Self {
        OrphanScanner {
            ctx,
            policy,
            interval,
            list_age,
            seen: HashMap::new(),
        }
    }

    /// A deleted instance's service kept for its retention has no live record, and is no orphan.
    async fn retained(&self, o: &Orphan, fleet: &FleetList) -> Result<bool, ReconcileError> {
        let Some(id) = o.name.strip_prefix("cf-").filter(|_| o.kind == OrphanKind::Service) else {
            return Ok(false);
        };
        let Some(row) = self.ctx.journal.deletion(id).await? else {
            return Ok(false);
        };
        let marked = fleet
            .service(&o.uuid)
            .and_then(|s| incarnation::marked(s.description.as_deref()));
        Ok(row.state != DeletionState::Destroyed
            && (row.coolify_uuid.as_deref() == Some(o.uuid.as_str()) || marked == Some(row.incarnation.as_str())))
    }

    pub async fn scan_once(&mut self) -> Result<Vec<Orphan>, ReconcileError> {
        let turn = self.ctx.turns.take().await;
        // Live records first: if PocketBase cannot be read, nothing is judged an orphan.
        // Only what names each owner is kept of the records, a page at a time (a fleet's whole records
        // took tens of MB).
        let instances = self.ctx.pb.list_all::<InstanceLife>(BOT_INSTANCES, None).await?;
        let tenants = self.ctx.pb.list_all::<TenantSlug>(TENANTS, None).await?;
        // A pass of the health poller or the drift check serves if it is recent; one read before the records
        // is as safe as one after: a service in it was made before them, so a live owner is among them.
        let fleet = self.ctx.coolify.fleet(self.list_age, None, Priority::Normal).await?;
        let projects = self.ctx.coolify.list_projects().await?;
        let live_instances: BTreeMap<String, String> = instances
            .into_iter()
            .map(|i| {
                let life = life_tag(&i.id, &i.tenant, i.created.as_ref());
                (i.id, life)
            })
            .collect();
        let live_slugs: BTreeSet<String> = tenants.into_iter().map(|t| t.slug).collect();
        let projects: Vec<(String, String)> = projects.into_iter().map(|p| (p.uuid, p.name)).collect();
        // The shared pass is judged where it lies: a copy of the fleet's names took megabytes.
        let mut orphans = Vec::new();
        for o in find_orphans(&fleet.services, &projects, &live_instances, &live_slugs) {
            if !self.retained(&o, &fleet).await? {
                orphans.push(o);
            }
        }
        // A removal waits on Coolify's budget: the listings, and with them the turn, are let go first.
        drop((fleet, live_instances, live_slugs, projects, turn));

        let mut counts: BTreeMap<&str, i64> = BTreeMap::from([("service", 0), ("project", 0)]);
        for o in &orphans {
            let kind = match o.kind {
                OrphanKind::Service => "service",
                OrphanKind::Project => "project",
            };
            *counts.entry(kind).or_insert(0) += 1;
            warn!(coolify_uuid = %o.uuid, name = %o.name, kind, "orphan in Coolify: no live record");
        }
        for (kind, n) in counts {
            self.ctx
                .intake
                .metrics()
                .orphans
                .with_label_values(&[kind])
                .set(n as f64);
        }
        let confirmed = confirm(&mut self.seen, &orphans);
        if self.policy == OrphanPolicy::Remove {
            // Services first: Coolify refuses to delete a project that still has resources.
            let mut ordered = confirmed.clone();
            ordered.sort();
            for o in ordered {
                let result = match o.kind {
                    OrphanKind::Service => self.ctx.coolify.delete_service(&o.uuid).await,
                    OrphanKind::Project => self.ctx.coolify.delete_project(&o.uuid).await,
                };
                match result {
                    Ok(()) => info!(coolify_uuid = %o.uuid, name = %o.name, "orphan removed"),
                    Err(e) => warn!(coolify_uuid = %o.uuid, name = %o.name, error = %e, "orphan not removed yet"),
                }
            }
        }
        Ok(confirmed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn only_cf_resources_without_records_are_orphans() {
        let life = incarnation::tag("inst1", "t1", "c1");
        let earlier = incarnation::tag("inst2", "t1", "c0");
        let services: Vec<ServiceBrief> = [
            ("s1", "cf-inst1", Some(incarnation::marker(&life))),
            ("s2", "cf-gone", None),
            ("s3", "someone-elses", None),
            ("s4", "cf-inst2", Some(incarnation::marker(&earlier))),
            ("s5", "cf-inst3", Some("made before incarnations".to_string())),
        ]
        .into_iter()
        .map(|(u, n, description)| ServiceBrief {
            uuid: u.into(),
            name: n.to_string(),
            description,
            status: Default::default(),
        })
        .collect();
        let projects = pairs(&[("p1", "cf-acme"), ("p2", "cf-old"), ("p3", "manual")]);
        let live_i = BTreeMap::from([
            ("inst1".to_string(), life),
            ("inst2".to_string(), incarnation::tag("inst2", "t1", "c1")),
            ("inst3".to_string(), incarnation::tag("inst3", "t1", "c1")),
        ]);
        let live_t = BTreeSet::from(["acme".to_string()]);
        let o = find_orphans(&services, &projects, &live_i, &live_t);
        let names: Vec<&str> = o.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, vec!["cf-gone", "cf-inst2", "cf-old"]);
    }

    #[test]
    fn removal_needs_two_consecutive_sightings() {
        let a = Orphan {
            kind: OrphanKind::Service,
            uuid: "a".into(),
            name: "cf-a".into(),
        };
        let b = Orphan {
            kind: OrphanKind::Service,
            uuid: "b".into(),
            name: "cf-b".into(),
        };
        let mut seen = HashMap::new();
        assert!(confirm(&mut seen, &[a.clone(), b.clone()]).is_empty());
        // b came back to life (or was a transient listing gap): its count restarts.
        assert_eq!(confirm(&mut seen, std::slice::from_ref(&a)), vec![a.clone()]);
        assert!(confirm(&mut seen, std::slice::from_ref(&b)).is_empty());
        assert_eq!(confirm(&mut seen, std::slice::from_ref(&b)), vec![b]);
    }
}
