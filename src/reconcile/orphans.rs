//! Orphans: Coolify services and projects named `cf-*` with no live record. Reported every scan; removed
//! only after two consecutive confirmations, and only when the policy says so.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use tracing::{info, warn};

use super::context::Context;
use super::error::ReconcileError;
use crate::config::OrphanPolicy;

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

/// Pure step: which `cf-*` resources have no live record.
pub fn find_orphans(
    services: &[(String, String)],
    projects: &[(String, String)],
    live_instances: &BTreeSet<String>,
    live_slugs: &BTreeSet<String>,
) -> Vec<Orphan> {
    let mut out = Vec::new();
    for (uuid, name) in services {
        if let Some(id) = name.strip_prefix("cf-")
            && !live_instances.contains(id)
        {
            out.push(Orphan {
                kind: OrphanKind::Service,
                uuid: uuid.clone(),
                name: name.clone(),
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
    pub fn new(ctx: Context, policy: OrphanPolicy, interval: Duration) -> Self {
        OrphanScanner {
            ctx,
            policy,
            interval,
            seen: HashMap::new(),
        }
    }

    pub async fn scan_once(&mut self) -> Result<Vec<Orphan>, ReconcileError> {
        // Live records first: if PocketBase cannot be read, nothing is judged an orphan.
        let tenants = self.ctx.pb.list_tenants().await?;
        let instances = self.ctx.pb.list_instances(None).await?;
        let services = self.ctx.coolify.list_services().await?;
        let projects = self.ctx.coolify.list_projects().await?;
        let live_instances: BTreeSet<String> = instances.into_iter().map(|i| i.id).collect();
        let live_slugs: BTreeSet<String> = tenants.into_iter().map(|t| t.slug).collect();
        let services: Vec<(String, String)> = services.into_iter().map(|s| (s.uuid, s.name)).collect();
        let projects: Vec<(String, String)> = projects.into_iter().map(|p| (p.uuid, p.name)).collect();
        let orphans = find_orphans(&services, &projects, &live_instances, &live_slugs);

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
        let services = pairs(&[("s1", "cf-inst1"), ("s2", "cf-gone"), ("s3", "someone-elses")]);
        let projects = pairs(&[("p1", "cf-acme"), ("p2", "cf-old"), ("p3", "manual")]);
        let live_i = BTreeSet::from(["inst1".to_string()]);
        let live_t = BTreeSet::from(["acme".to_string()]);
        let o = find_orphans(&services, &projects, &live_i, &live_t);
        let names: Vec<&str> = o.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, vec!["cf-gone", "cf-old"]);
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
