//! Pure planning: from what the record asks for, what was last applied and what Coolify shows, the list
//! of actions that makes Coolify match. No I/O here; the executor performs the actions.
//!
//! The applied state is carried by the record itself in `applied_hash`, a compact fingerprint of each
//! part of the spec (`s=<state>;c=<compose>;e=<env>;r=<restart>`), so the planner can tell *what*
//! changed without another store, and an unchanged record is recognised without any Coolify call.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::coolify::ServiceStatus;

/// What the instance should run as, once the tenant's status is taken into account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectiveState {
    Running,
    Stopped,
}

impl EffectiveState {
    pub fn as_str(self) -> &'static str {
        match self {
            EffectiveState::Running => "running",
            EffectiveState::Stopped => "stopped",
        }
    }
}

/// The desired spec of an instance, reduced to fingerprints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub state: EffectiveState,
    /// Fingerprint of the rendered compose and the domain.
    pub compose: String,
    /// Fingerprint of the env vars the bridge sets (secrets hash, router URL).
    pub env: String,
    /// Fingerprint of `restart_requested_at` (empty when never requested).
    pub restart: String,
}

fn short(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    hex::encode(&digest[..6])
}

impl Spec {
    pub fn new(state: EffectiveState, compose_and_domain: &str, env: &str, restart_requested_at: &str) -> Spec {
        Spec {
            state,
            compose: short(compose_and_domain),
            env: short(env),
            restart: if restart_requested_at.is_empty() {
                String::new()
            } else {
                short(restart_requested_at)
            },
        }
    }

    /// Parses an `applied_hash` written by [`Spec::fingerprint`]; anything else is treated as unknown.
    pub fn parse(applied: &str) -> Option<Spec> {
        let mut state = None;
        let mut compose = None;
        let mut env = None;
        let mut restart = None;
        for part in applied.split(';') {
            let (k, v) = part.split_once('=')?;
            match k {
                "s" => {
                    state = Some(match v {
                        "running" => EffectiveState::Running,
                        "stopped" => EffectiveState::Stopped,
                        _ => return None,
                    })
                }
                "c" => compose = Some(v.to_string()),
                "e" => env = Some(v.to_string()),
                "r" => restart = Some(v.to_string()),
                _ => return None,
            }
        }
        Some(Spec {
            state: state?,
            compose: compose?,
            env: env?,
            restart: restart?,
        })
    }

    /// The value written to the record's `applied_hash`.
    pub fn fingerprint(&self) -> String {
        format!(
            "s={};c={};e={};r={}",
            self.state.as_str(),
            self.compose,
            self.env,
            self.restart
        )
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

/// Why an instance may not be provisioned yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// Asks for more CPU or memory than the plan allows (or names no known plan); needs a person to
    /// lower the request or change the plan.
    Quota(String),
    /// Every stack slot of the plan is taken by earlier instances; waits in `pending` for a slot (a larger
    /// plan or `max_stacks`).
    NoStackSlot(String),
    /// Required secrets not set; waits in `pending` until they arrive.
    MissingSecrets(Vec<String>),
    /// The record or its template cannot be rendered; waits for the record to change.
    Invalid(String),
    /// The tenant has no Coolify project yet; the tenant's job will wake this one.
    TenantNotReady,
}

/// What Coolify shows for the instance's service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Absent,
    Present { uuid: String, run: RunState },
}

/// What a service's containers are doing, as far as a plan needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// `running:*`.
    Running,
    /// `exited`: the only status Coolify refuses a stop for.
    Stopped,
    /// `starting:*`: a start is queued or under way (reference 4.5). Another start would only force-recreate
    /// what it is bringing up, so a plan that wants it running waits for it instead.
    Starting,
    /// None of these: degraded (some containers down, or a crash loop), restarting, paused, or a status
    /// Coolify added since. Up in part at least, so a stop must still be sent, and not running.
    Between,
}

impl RunState {
    pub fn of(status: &ServiceStatus) -> RunState {
        if status.is_running() {
            RunState::Running
        } else if status.is_stopped() {
            RunState::Stopped
        } else if matches!(status, ServiceStatus::Starting { .. }) {
            RunState::Starting
        } else {
            RunState::Between
        }
    }

    /// The state a service left in `state` by the bridge is in.
    pub fn left(state: EffectiveState) -> RunState {
        match state {
            EffectiveState::Running => RunState::Running,
            EffectiveState::Stopped => RunState::Stopped,
        }
    }
}

/// Everything the planner needs about one live instance whose spec could be worked out (a blocked one
/// is not planned: it only records why it waits).
#[derive(Debug, Clone)]
pub struct InstanceInput {
    pub desired: Spec,
    pub applied: Option<Spec>,
    pub observed: Observed,
}

/// One step for the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Mark the record `deploying` before side effects.
    MarkDeploying,
    /// Create the service (intent journaled first), `instant_deploy` false, with the domain.
    CreateService,
    /// Send the new compose and domain; with `deploy`, Coolify redeploys it in the same call
    /// (`instant_deploy`: a force-recreating start, so no separate start or restart is needed).
    UpdateService {
        deploy: bool,
    },
    /// Upsert the env vars in one bulk call.
    SetEnv,
    /// Start the service this run created (so known to be stopped), in one batch deploy with the other
    /// such starts of the moment: a fraction of a call each when many are created together.
    StartCreated,
    Start,
    Stop,
    Restart,
    /// Poll until Coolify reports `running:*` (or the timeout).
    WaitRunning,
    /// Write back `status`, ids, domain and `applied_hash`.
    WriteBack(EffectiveState),
}

impl Action {
    /// Whether the step changes the service in Coolify (rather than the record, or only waiting).
    pub fn changes_coolify(&self) -> bool {
        !matches!(self, Action::MarkDeploying | Action::WaitRunning | Action::WriteBack(_))
    }
}

/// Plans a live instance.
pub fn plan_instance(input: &InstanceInput) -> Vec<Action> {
    let desired = &input.desired;
    if input.applied.as_ref() == Some(desired)
        && let Observed::Present { run, .. } = input.observed
        && run == RunState::left(desired.state)
    {
        return Vec::new();
    }
    let mut actions = Vec::new();
    match &input.observed {
        Observed::Absent => {
            // `deploying` is shown only while the record waits for its service to run: a service
            // created stopped is done at once, so its record goes straight to `stopped` (one write less).
            if desired.state == EffectiveState::Running {
                actions.push(Action::MarkDeploying);
            }
            actions.push(Action::CreateService);
            actions.push(Action::SetEnv);
            if desired.state == EffectiveState::Running {
                actions.push(Action::StartCreated);
                actions.push(Action::WaitRunning);
            }
        }
        Observed::Present { run, .. } => {
            let running = *run == RunState::Running;
            let applied = input.applied.as_ref();
            let compose_changed = applied.is_none_or(|a| a.compose != desired.compose);
            let env_changed = applied.is_none_or(|a| a.env != desired.env);
            let restart_asked = !desired.restart.is_empty() && applied.is_some_and(|a| a.restart != desired.restart);
            let needs_redeploy = compose_changed || env_changed || restart_asked;
            if desired.state == EffectiveState::Running && (needs_redeploy || !running) {
                actions.push(Action::MarkDeploying);
            }
            // A stop closes the door first (a suspension's domain removal and key rotation follow). A service
            // that is not running is stopped too unless Coolify shows it `exited`: a degraded one still runs
            // some of its containers, a starting one will run them all.
            if desired.state == EffectiveState::Stopped && *run != RunState::Stopped {
                actions.push(Action::Stop);
            }
            // The env goes first: a compose change deploys in its own call, which must find the new env.
            if env_changed {
                actions.push(Action::SetEnv);
            }
            let deploy = compose_changed && desired.state == EffectiveState::Running;
            if compose_changed {
                actions.push(Action::UpdateService { deploy });
            }
            match desired.state {
                EffectiveState::Running => {
                    if deploy {
                        actions.push(Action::WaitRunning);
                    } else if running && needs_redeploy {
                        actions.push(Action::Restart);
                        actions.push(Action::WaitRunning);
                    } else if *run == RunState::Starting && !needs_redeploy {
                        actions.push(Action::WaitRunning);
                    } else if !running {
                        actions.push(Action::Start);
                        actions.push(Action::WaitRunning);
                    }
                }
                EffectiveState::Stopped => {}
            }
        }
    }
    actions.push(Action::WriteBack(desired.state));
    actions
}

/// Plans an instance whose record does not show the outcome of what Coolify runs: an action's write-back
/// has not landed yet (its `applied` spec is known only to the journal), or the status was left behind by
/// a run that did not finish. When Coolify already matches, only the write-back is left.
pub fn plan_instance_with_write_back(input: &InstanceInput) -> Vec<Action> {
    match plan_instance(input) {
        actions if actions.is_empty() => vec![Action::WriteBack(input.desired.state)],
        actions => actions,
    }
}

/// The step for an instance whose record is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeletedInstanceAction {
    /// Destroy the service and verify it is gone.
    DeleteService(String),
}

/// Plans an instance whose record is gone: every service found for it (by the journaled intent and by
/// its deterministic name) is destroyed.
pub fn plan_deleted_instance(found: &[String]) -> Vec<DeletedInstanceAction> {
    found
        .iter()
        .cloned()
        .map(DeletedInstanceAction::DeleteService)
        .collect()
}

/// Steps for a live tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantAction {
    /// Create the project `cf-<slug>` (intent journaled first; an existing one is adopted).
    CreateProject,
    /// Write the project uuid back to the record.
    WriteProjectUuid(String),
    /// Wake every instance of the tenant (status or plan changes affect them all).
    FanOutInstances,
}

/// Steps for a tenant whose record is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeletedTenantAction {
    /// Destroy the tenant's remaining services, wait until they are gone.
    DeleteServices,
    /// Delete the project, retrying while Coolify still reports resources.
    DeleteProject(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantInput {
    /// The uuid stored on the record, if any.
    pub recorded_project: Option<String>,
    /// The project found in Coolify (by stored uuid, else by name), if any.
    pub observed_project: Option<String>,
}

/// Plans a live tenant: ensure the project, write its uuid, wake the instances.
pub fn plan_tenant(input: &TenantInput) -> Vec<TenantAction> {
    let mut actions = Vec::new();
    match &input.observed_project {
        None => actions.push(TenantAction::CreateProject),
        Some(uuid) if input.recorded_project.as_deref() != Some(uuid) => {
            actions.push(TenantAction::WriteProjectUuid(uuid.clone()))
        }
        Some(_) => {}
    }
    actions.push(TenantAction::FanOutInstances);
    actions
}

/// Plans a deleted tenant: services first, then the project.
pub fn plan_deleted_tenant(observed_project: Option<&str>, services_left: usize) -> Vec<DeletedTenantAction> {
    let Some(uuid) = observed_project else {
        return Vec::new();
    };
    let mut actions = Vec::new();
    if services_left > 0 {
        actions.push(DeletedTenantAction::DeleteServices);
    }
    actions.push(DeletedTenantAction::DeleteProject(uuid.to_string()));
    actions
}

/// The effective state: a suspended tenant runs nothing.
pub fn effective_state(desired_running: bool, tenant_active: bool) -> EffectiveState {
    if desired_running && tenant_active {
        EffectiveState::Running
    } else {
        EffectiveState::Stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    fn spec(state: EffectiveState, compose: &str, env: &str, restart: &str) -> Spec {
        Spec::new(state, compose, env, restart)
    }

    const R: EffectiveState = EffectiveState::Running;
    const S: EffectiveState = EffectiveState::Stopped;

    fn present(running: bool) -> Observed {
        Observed::Present {
            uuid: "svc1".into(),
            run: if running { RunState::Running } else { RunState::Stopped },
        }
    }

    #[test]
    fn fingerprint_round_trips_and_rejects_garbage() {
        let s = spec(R, "compose", "env", "2026-01-01 00:00:00.000Z");
        assert_eq!(Spec::parse(&s.fingerprint()), Some(s.clone()));
        let never = spec(S, "c", "e", "");
        assert_eq!(Spec::parse(&never.fingerprint()), Some(never));
        for bad in [
            "",
            "garbage",
            "s=flying;c=1;e=2;r=",
            "s=running;c=1",
            "s=running;c=1;e=2;r=;x=1",
        ] {
            assert_eq!(Spec::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_drift_that_righted_itself_changes_nothing_in_coolify() {
        let applied = spec(R, "c1", "e1", "");
        let righted = InstanceInput {
            desired: applied.clone(),
            applied: Some(applied.clone()),
            observed: present(true),
        };
        let with_write_back = plan_instance_with_write_back(&righted);
        assert_eq!(with_write_back, vec![WriteBack(R)]);
        assert!(!with_write_back.iter().any(Action::changes_coolify));
        let stopped_behind_our_back = InstanceInput {
            observed: present(false),
            ..righted
        };
        assert!(
            plan_instance_with_write_back(&stopped_behind_our_back)
                .iter()
                .any(Action::changes_coolify)
        );
        let changing = [
            CreateService,
            UpdateService { deploy: true },
            SetEnv,
            StartCreated,
            Start,
            Stop,
            Restart,
        ];
        assert!(changing.iter().all(Action::changes_coolify));
        assert!(
            ![MarkDeploying, WaitRunning, WriteBack(S)]
                .iter()
                .any(Action::changes_coolify)
        );
    }

    #[test]
    fn transitions() {
        let base = spec(R, "c1", "e1", "");
        let cases: Vec<(&str, InstanceInput, Vec<Action>)> = vec![
            (
                "pending -> deploying -> running: new instance",
                InstanceInput {
                    desired: base.clone(),
                    applied: None,
                    observed: Observed::Absent,
                },
                vec![
                    MarkDeploying,
                    CreateService,
                    SetEnv,
                    StartCreated,
                    WaitRunning,
                    WriteBack(R),
                ],
            ),
            (
                "new instance that should stay stopped is created but not started",
                InstanceInput {
                    desired: spec(S, "c1", "e1", ""),
                    applied: None,
                    observed: Observed::Absent,
                },
                vec![CreateService, SetEnv, WriteBack(S)],
            ),
            (
                "own write-back: nothing to do",
                InstanceInput {
                    desired: base.clone(),
                    applied: Some(base.clone()),
                    observed: present(true),
                },
                vec![],
            ),
            (
                "running -> stopped",
                InstanceInput {
                    desired: spec(S, "c1", "e1", ""),
                    applied: Some(base.clone()),
                    observed: present(true),
                },
                vec![Stop, WriteBack(S)],
            ),
            (
                "stopped -> running",
                InstanceInput {
                    desired: base.clone(),
                    applied: Some(spec(S, "c1", "e1", "")),
                    observed: present(false),
                },
                vec![MarkDeploying, Start, WaitRunning, WriteBack(R)],
            ),
            (
                "suspension: stop first, then the key (env) and domain (compose) change, no deploy",
                InstanceInput {
                    desired: spec(S, "c2", "e2", ""),
                    applied: Some(base.clone()),
                    observed: present(true),
                },
                vec![Stop, SetEnv, UpdateService { deploy: false }, WriteBack(S)],
            ),
            (
                "resume: key and domain back, deployed by the compose change (no separate start)",
                InstanceInput {
                    desired: base.clone(),
                    applied: Some(spec(S, "c2", "e2", "")),
                    observed: present(false),
                },
                vec![
                    MarkDeploying,
                    SetEnv,
                    UpdateService { deploy: true },
                    WaitRunning,
                    WriteBack(R),
                ],
            ),
            (
                "restart requested",
                InstanceInput {
                    desired: spec(R, "c1", "e1", "2026-11-23 10:00:00.000Z"),
                    applied: Some(base.clone()),
                    observed: present(true),
                },
                vec![MarkDeploying, Restart, WaitRunning, WriteBack(R)],
            ),
            (
                "config, limits or template change: update and redeploy in one call",
                InstanceInput {
                    desired: spec(R, "c2", "e1", ""),
                    applied: Some(base.clone()),
                    observed: present(true),
                },
                vec![MarkDeploying, UpdateService { deploy: true }, WaitRunning, WriteBack(R)],
            ),
            (
                "config and secrets change: env first, then update and redeploy in one call",
                InstanceInput {
                    desired: spec(R, "c2", "e2", ""),
                    applied: Some(base.clone()),
                    observed: present(true),
                },
                vec![
                    MarkDeploying,
                    SetEnv,
                    UpdateService { deploy: true },
                    WaitRunning,
                    WriteBack(R),
                ],
            ),
            (
                "config change of a stopped instance asked to run: the update starts it",
                InstanceInput {
                    desired: spec(R, "c2", "e1", ""),
                    applied: Some(spec(S, "c1", "e1", "")),
                    observed: present(false),
                },
                vec![MarkDeploying, UpdateService { deploy: true }, WaitRunning, WriteBack(R)],
            ),
            (
                "secrets change: env and restart",
                InstanceInput {
                    desired: spec(R, "c1", "e2", ""),
                    applied: Some(base.clone()),
                    observed: present(true),
                },
                vec![MarkDeploying, SetEnv, Restart, WaitRunning, WriteBack(R)],
            ),
            (
                "config change while stopped: update, stay stopped",
                InstanceInput {
                    desired: spec(S, "c2", "e1", ""),
                    applied: Some(spec(S, "c1", "e1", "")),
                    observed: present(false),
                },
                vec![UpdateService { deploy: false }, WriteBack(S)],
            ),
            (
                "applied matches but the service crashed: start it again",
                InstanceInput {
                    desired: base.clone(),
                    applied: Some(base.clone()),
                    observed: present(false),
                },
                vec![MarkDeploying, Start, WaitRunning, WriteBack(R)],
            ),
            (
                "service vanished from Coolify: create again",
                InstanceInput {
                    desired: base.clone(),
                    applied: Some(base.clone()),
                    observed: Observed::Absent,
                },
                vec![
                    MarkDeploying,
                    CreateService,
                    SetEnv,
                    StartCreated,
                    WaitRunning,
                    WriteBack(R),
                ],
            ),
            (
                "adopted service after a crash between create and write-back",
                InstanceInput {
                    desired: base.clone(),
                    applied: None,
                    observed: present(false),
                },
                vec![
                    MarkDeploying,
                    SetEnv,
                    UpdateService { deploy: true },
                    WaitRunning,
                    WriteBack(R),
                ],
            ),
        ];
        for (name, input, expected) in cases {
            assert_eq!(plan_instance(&input), expected, "{name}");
        }
    }

    #[test]
    fn suspension_stops_and_reactivation_starts() {
        let running = spec(R, "c", "e", "");
        let suspended = spec(effective_state(true, false), "c", "e", "");
        assert_eq!(
            plan_instance(&InstanceInput {
                desired: suspended.clone(),
                applied: Some(running.clone()),
                observed: present(true)
            }),
            vec![Stop, WriteBack(S)]
        );
        let active = spec(effective_state(true, true), "c", "e", "");
        assert_eq!(
            plan_instance(&InstanceInput {
                desired: active,
                applied: Some(suspended),
                observed: present(false)
            }),
            vec![MarkDeploying, Start, WaitRunning, WriteBack(R)]
        );
        assert_eq!(effective_state(false, true), S);
    }

    #[test]
    fn a_service_not_shown_exited_is_stopped_when_the_record_asks_for_stopped() {
        let up_in_part = Observed::Present {
            uuid: "svc1".into(),
            run: RunState::Between,
        };
        let input = |desired: EffectiveState, applied: EffectiveState, observed: &Observed| InstanceInput {
            desired: spec(desired, "c", "e", ""),
            applied: Some(spec(applied, "c", "e", "")),
            observed: observed.clone(),
        };
        // A degraded or starting service runs some of its containers (or will): stopping it is a stop.
        assert_eq!(plan_instance(&input(S, R, &up_in_part)), vec![Stop, WriteBack(S)]);
        let starting = Observed::Present {
            uuid: "svc1".into(),
            run: RunState::Starting,
        };
        assert_eq!(plan_instance(&input(S, R, &starting)), vec![Stop, WriteBack(S)]);
        // Left stopped and found up in part: not what was applied.
        assert_eq!(plan_instance(&input(S, S, &up_in_part)), vec![Stop, WriteBack(S)]);
        assert_eq!(plan_instance(&input(S, S, &present(false))), vec![]);
        // Asked to run: it is started again, as a stopped one is.
        assert_eq!(
            plan_instance(&input(R, R, &up_in_part)),
            vec![MarkDeploying, Start, WaitRunning, WriteBack(R)]
        );
        for (status, run) in [
            ("running:unknown", RunState::Running),
            ("running:healthy:excluded", RunState::Running),
            ("exited", RunState::Stopped),
            ("exited:excluded", RunState::Stopped),
            ("degraded:unhealthy", RunState::Between),
            ("starting:unknown", RunState::Starting),
            ("starting:unhealthy", RunState::Starting),
            ("restarting:unknown", RunState::Between),
            ("paused:unknown", RunState::Between),
            ("unknown:unknown:excluded", RunState::Between),
        ] {
            assert_eq!(RunState::of(&ServiceStatus::parse(status)), run, "{status}");
        }
    }

    #[test]
    fn a_starting_service_is_waited_for_not_started_again_unless_it_must_take_a_change() {
        let starting = Observed::Present {
            uuid: "svc1".into(),
            run: RunState::Starting,
        };
        let asked = |desired: Spec| InstanceInput {
            desired,
            applied: Some(spec(S, "c", "e", "")),
            observed: starting.clone(),
        };
        // The start an earlier run sent is under way: a second would force-recreate what it brings up.
        assert_eq!(
            plan_instance(&asked(spec(R, "c", "e", ""))),
            vec![MarkDeploying, WaitRunning, WriteBack(R)]
        );
        // New env reaches containers only through a start; a new compose deploys with its update.
        assert_eq!(
            plan_instance(&asked(spec(R, "c", "e2", ""))),
            vec![MarkDeploying, SetEnv, Start, WaitRunning, WriteBack(R)]
        );
        assert_eq!(
            plan_instance(&asked(spec(R, "c2", "e", ""))),
            vec![MarkDeploying, UpdateService { deploy: true }, WaitRunning, WriteBack(R)]
        );
    }

    #[test]
    fn a_pending_write_back_is_all_that_is_left_once_coolify_matches() {
        let deployed = spec(R, "c", "e", "");
        let pending = |desired: &Spec, running: bool| InstanceInput {
            desired: desired.clone(),
            applied: Some(deployed.clone()),
            observed: present(running),
        };
        assert_eq!(
            plan_instance_with_write_back(&pending(&deployed, true)),
            vec![WriteBack(R)]
        );
        // Coolify no longer matches, or the record asks for something else: a normal plan.
        assert_eq!(
            plan_instance_with_write_back(&pending(&deployed, false)),
            vec![MarkDeploying, Start, WaitRunning, WriteBack(R)]
        );
        assert_eq!(
            plan_instance_with_write_back(&pending(&spec(S, "c", "e", ""), true)),
            vec![Stop, WriteBack(S)]
        );
    }

    #[test]
    fn deleted_instance() {
        assert_eq!(plan_deleted_instance(&[]), vec![]);
        assert_eq!(
            plan_deleted_instance(&["svc1".to_string()]),
            vec![DeletedInstanceAction::DeleteService("svc1".into())]
        );
    }

    #[test]
    fn tenant_transitions() {
        use TenantAction::*;
        assert_eq!(
            plan_tenant(&TenantInput {
                recorded_project: None,
                observed_project: None
            }),
            vec![CreateProject, FanOutInstances]
        );
        assert_eq!(
            plan_tenant(&TenantInput {
                recorded_project: None,
                observed_project: Some("p1".into())
            }),
            vec![WriteProjectUuid("p1".into()), FanOutInstances]
        );
        assert_eq!(
            plan_tenant(&TenantInput {
                recorded_project: Some("p1".into()),
                observed_project: Some("p1".into())
            }),
            vec![FanOutInstances]
        );
        use DeletedTenantAction::*;
        assert_eq!(plan_deleted_tenant(None, 0), vec![]);
        assert_eq!(plan_deleted_tenant(Some("p1"), 0), vec![DeleteProject("p1".into())]);
        assert_eq!(
            plan_deleted_tenant(Some("p1"), 2),
            vec![DeleteServices, DeleteProject("p1".into())]
        );
    }
}
