//! The simulator's state and the JSON views Coolify returns for it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The seeded `localhost` server's fixed uuid.
pub const LOCALHOST_SERVER_UUID: &str = "s1mlocalhost0server0000a";
const LOCALHOST_DESTINATION_UUID: &str = "s1mlocalhost0dest000000a";

pub fn new_uuid() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

pub fn timestamp(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerRec {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub ip: String,
    pub destination_id: i64,
    pub destination_uuid: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvironmentRec {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub project_id: i64,
    pub created_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectRec {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub description: Option<String>,
    pub environments: Vec<EnvironmentRec>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRec {
    pub uuid: String,
    pub name: String,
    pub image: String,
    pub fqdn: Option<String>,
    pub healthcheck: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvVarRec {
    pub uuid: String,
    pub key: String,
    pub value: Option<String>,
    pub is_literal: bool,
    pub is_multiline: bool,
    pub is_shown_once: bool,
    pub is_required: bool,
    pub comment: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Lifecycle {
    Exited,
    /// Start activity running until `running_at_ms`.
    Starting {
        running_at_ms: u64,
    },
    Running,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRec {
    pub id: i64,
    pub uuid: String,
    pub name: String,
    pub description: Option<String>,
    pub project_uuid: String,
    pub environment_id: i64,
    pub server_id: i64,
    pub destination_id: i64,
    /// Decoded compose YAML.
    pub compose: String,
    pub applications: Vec<ContainerRec>,
    pub databases: Vec<ContainerRec>,
    pub tags: Vec<String>,
    pub connect_to_docker_network: bool,
    pub is_container_label_escape_enabled: bool,
    pub lifecycle: Lifecycle,
    /// Set by `POST /_sim/services/{uuid}/status`; wins over the lifecycle until the next action.
    pub forced_status: Option<String>,
    /// Set by the `crash_service` fault: containers died while running.
    pub crashed: bool,
    pub envs: Vec<EnvVarRec>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Set by DELETE: the row disappears (404) at this time.
    pub delete_at_ms: Option<u64>,
}

impl ServiceRec {
    pub fn status(&self, now_ms: u64) -> String {
        if let Some(forced) = &self.forced_status {
            return forced.clone();
        }
        let all_checked = self.applications.iter().chain(&self.databases).all(|c| c.healthcheck)
            && !(self.applications.is_empty() && self.databases.is_empty());
        let running = if all_checked {
            "running:healthy"
        } else {
            "running:unknown"
        };
        match self.lifecycle {
            Lifecycle::Exited => "exited".into(),
            Lifecycle::Running | Lifecycle::Starting { .. } if self.crashed => {
                if self.applications.len() + self.databases.len() > 1 {
                    "degraded:unhealthy".into()
                } else {
                    "exited".into()
                }
            }
            Lifecycle::Starting { running_at_ms } if now_ms < running_at_ms => "starting:unknown".into(),
            Lifecycle::Starting { .. } | Lifecycle::Running => running.into(),
        }
    }

    fn container_status(&self, c: &ContainerRec, now_ms: u64) -> String {
        let service = self.status(now_ms);
        if service.starts_with("running") {
            if c.healthcheck {
                "running:healthy".into()
            } else {
                "running:unknown".into()
            }
        } else if self.crashed || service == "exited" {
            "exited".into()
        } else {
            service
        }
    }

    /// The hosts its applications answer on, as the domain-conflict check compares them.
    fn hosts(&self) -> impl Iterator<Item = String> + '_ {
        self.applications
            .iter()
            .filter_map(|a| a.fqdn.as_deref())
            .flat_map(|f| f.split(','))
            .filter_map(crate::compose::url_host)
    }

    pub fn domains(&self) -> Vec<String> {
        let mut d: Vec<String> = self.applications.iter().filter_map(|a| a.fqdn.clone()).collect();
        d.sort();
        d
    }

    pub fn to_json(&self, now_ms: u64) -> Value {
        let container = |c: &ContainerRec| {
            json!({
                "uuid": c.uuid, "name": c.name, "human_name": null, "description": null,
                "fqdn": c.fqdn, "status": self.container_status(c, now_ms), "image": c.image,
                "exclude_from_status": false, "is_log_drain_enabled": false,
                "created_at": timestamp(self.created_ms), "updated_at": timestamp(self.updated_ms),
            })
        };
        json!({
            "uuid": self.uuid,
            "name": self.name,
            "description": self.description,
            "environment_id": self.environment_id,
            "server_id": self.server_id,
            "destination_id": self.destination_id,
            "destination_type": "App\\Models\\StandaloneDocker",
            "connect_to_docker_network": self.connect_to_docker_network,
            "is_container_label_escape_enabled": self.is_container_label_escape_enabled,
            "is_container_label_readonly_enabled": true,
            "config_hash": format!("{:x}", self.compose.len() as u64 * 2654435761),
            "service_type": null,
            "compose_parsing_version": "5",
            "server_status": true,
            "status": self.status(now_ms),
            "docker_compose_raw": self.compose,
            "tags": self.tags,
            "applications": self.applications.iter().map(container).collect::<Vec<_>>(),
            "databases": self.databases.iter().map(container).collect::<Vec<_>>(),
            "created_at": timestamp(self.created_ms),
            "updated_at": timestamp(self.updated_ms),
            "deleted_at": null,
        })
    }
}

impl EnvVarRec {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "uuid": self.uuid, "key": self.key,
            "is_literal": self.is_literal, "is_multiline": self.is_multiline, "is_preview": false,
            "is_runtime": true, "is_buildtime": true, "is_shared": false,
            "is_shown_once": self.is_shown_once, "is_required": self.is_required,
            "is_really_required": self.is_required && self.value.as_deref().unwrap_or("").is_empty(),
            "is_coolify": false, "comment": self.comment, "version": "4.0.0",
            "resourceable_type": "App\\Models\\Service",
            "created_at": timestamp(self.created_ms), "updated_at": timestamp(self.updated_ms),
        });
        if !self.is_shown_once {
            v["value"] = json!(self.value.clone().unwrap_or_default());
            v["real_value"] = json!(self.value.clone().unwrap_or_default());
        }
        v
    }
}

impl EnvironmentRec {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id, "uuid": self.uuid, "name": self.name, "project_id": self.project_id,
            "description": "", "created_at": timestamp(self.created_ms), "updated_at": timestamp(self.created_ms),
        })
    }
}

impl ProjectRec {
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "uuid": self.uuid, "name": self.name, "description": self.description})
    }
}

impl ServerRec {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id, "uuid": self.uuid, "name": self.name, "description": "Seeded by coolify-sim",
            "ip": self.ip, "user": "root", "port": 22, "proxy_type": "traefik",
            "is_reachable": true, "is_usable": true,
            "settings": {"id": self.id, "is_build_server": false, "concurrent_builds": 2,
                         "is_reachable": true, "is_usable": true, "server_id": self.id},
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimState {
    pub next_id: i64,
    pub servers: Vec<ServerRec>,
    pub projects: BTreeMap<String, ProjectRec>,
    /// Changed only through [`SimState::insert_service`], [`SimState::edit_service`] and
    /// [`SimState::purge`], which keep the two indexes below in step.
    pub services: BTreeMap<String, ServiceRec>,
    /// Host -> the services whose applications answer on it. Coolify checks a new domain against every
    /// resource; scanning 10,000 services for it on each create and patch made the simulator the busiest
    /// process of the benchmark, on the cores the bridge and PocketBase are measured on.
    #[serde(skip)]
    hosts: HashMap<String, BTreeSet<String>>,
    /// Queued deletions by due time, so that finishing them does not walk every service on each request.
    #[serde(skip)]
    deletions: BTreeSet<(u64, String)>,
}

impl Default for SimState {
    fn default() -> Self {
        Self {
            next_id: 10,
            servers: vec![ServerRec {
                id: 0,
                uuid: LOCALHOST_SERVER_UUID.into(),
                name: "localhost".into(),
                ip: "host.docker.internal".into(),
                destination_id: 0,
                destination_uuid: LOCALHOST_DESTINATION_UUID.into(),
            }],
            projects: BTreeMap::new(),
            services: BTreeMap::new(),
            hosts: HashMap::new(),
            deletions: BTreeSet::new(),
        }
    }
}

impl SimState {
    pub fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// Finishes asynchronous deletions whose time has come.
    pub fn purge(&mut self, now_ms: u64) {
        while let Some((at, uuid)) = self.deletions.first().cloned()
            && at <= now_ms
        {
            self.deletions.pop_first();
            self.unindex(&uuid);
            self.services.remove(&uuid);
        }
    }

    /// Queues the service's deletion for `at_ms`; a deletion already queued keeps its time.
    pub fn queue_deletion(&mut self, uuid: &str, at_ms: u64) -> bool {
        let Some(s) = self.services.get_mut(uuid) else {
            return false;
        };
        if s.delete_at_ms.is_none() {
            s.delete_at_ms = Some(at_ms);
            self.deletions.insert((at_ms, uuid.to_string()));
        }
        true
    }

    pub fn insert_service(&mut self, rec: ServiceRec) {
        let uuid = rec.uuid.clone();
        self.services.insert(uuid.clone(), rec);
        self.index(&uuid);
    }

    /// Applies `edit` to the service, keeping the host index in step with its applications' domains.
    pub fn edit_service<T>(&mut self, uuid: &str, edit: impl FnOnce(&mut ServiceRec) -> T) -> Option<T> {
        self.unindex(uuid);
        let out = self.services.get_mut(uuid).map(edit);
        self.index(uuid);
        out
    }

    /// The services other than `except` whose applications answer on `host` (lower case), in uuid order.
    pub fn users_of<'a>(&'a self, host: &str, except: Option<&'a str>) -> impl Iterator<Item = &'a ServiceRec> + 'a {
        self.hosts
            .get(host)
            .into_iter()
            .flatten()
            .filter(move |u| Some(u.as_str()) != except)
            .filter_map(|u| self.services.get(u))
    }

    /// Rebuilds the indexes, which are not saved, after loading a state file.
    pub fn reindex(&mut self) {
        self.hosts.clear();
        self.deletions = self
            .services
            .values()
            .filter_map(|s| s.delete_at_ms.map(|t| (t, s.uuid.clone())))
            .collect();
        let uuids: Vec<String> = self.services.keys().cloned().collect();
        for uuid in &uuids {
            self.index(uuid);
        }
    }

    fn index(&mut self, uuid: &str) {
        let Some(s) = self.services.get(uuid) else { return };
        for host in s.hosts() {
            self.hosts.entry(host).or_default().insert(uuid.to_string());
        }
    }

    fn unindex(&mut self, uuid: &str) {
        let Some(s) = self.services.get(uuid) else { return };
        for host in s.hosts() {
            if let Some(users) = self.hosts.get_mut(&host) {
                users.remove(uuid);
                if users.is_empty() {
                    self.hosts.remove(&host);
                }
            }
        }
    }

    pub fn environment(&self, project_uuid: &str, name_or_uuid: &str) -> Option<&EnvironmentRec> {
        let p = self.projects.get(project_uuid)?;
        p.environments
            .iter()
            .find(|e| e.name == name_or_uuid)
            .or_else(|| p.environments.iter().find(|e| e.uuid == name_or_uuid))
    }
}
