//! Request and response types. Responses are read leniently (unknown fields ignored, most fields
//! defaulted) because Coolify adds fields freely; requests are built exactly, as Coolify rejects
//! unknown fields.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::status::ServiceStatus;

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Team {
    #[serde(default)]
    pub id: i64,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Server {
    pub uuid: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub is_reachable: bool,
    #[serde(default)]
    pub is_usable: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Project {
    #[serde(default)]
    pub id: i64,
    pub uuid: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Environment {
    #[serde(default)]
    pub id: i64,
    #[serde(default)]
    pub uuid: Option<String>,
    pub name: String,
    #[serde(default)]
    pub project_id: Option<i64>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct ProjectDetail {
    #[serde(flatten)]
    pub project: Project,
    #[serde(default)]
    pub environments: Vec<Environment>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct EnvironmentDetail {
    #[serde(flatten)]
    pub environment: Environment,
    #[serde(default)]
    pub services: Vec<Service>,
}

/// One container of a service (`applications[]` or `databases[]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct ServiceContainer {
    #[serde(default)]
    pub uuid: Option<String>,
    pub name: String,
    #[serde(default)]
    pub fqdn: Option<String>,
    #[serde(default)]
    pub status: ServiceStatus,
    #[serde(default)]
    pub image: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct Service {
    pub uuid: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub environment_id: Option<i64>,
    #[serde(default)]
    pub server_id: Option<i64>,
    #[serde(default)]
    pub status: ServiceStatus,
    #[serde(default)]
    pub applications: Vec<ServiceContainer>,
    #[serde(default)]
    pub databases: Vec<ServiceContainer>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// Just a service's uuid and status: what status polling needs from `GET /services`, whose full answer
/// runs to megabytes for a large fleet (every container, compose and more), all skipped while parsing.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceState {
    pub uuid: String,
    #[serde(default)]
    pub status: ServiceStatus,
}

/// What the resync compares of each service: its status and, when the token may read it (Coolify shows
/// `docker_compose_raw` only to `read:sensitive` or `root` tokens), its compose.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceLook {
    pub uuid: String,
    #[serde(default)]
    pub status: ServiceStatus,
    #[serde(default)]
    pub docker_compose_raw: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceUrl {
    /// Compose service key of the public container.
    pub name: String,
    /// `http(s)://host[:container_port][/path]`, comma-separated for several.
    pub url: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct CreatedService {
    pub uuid: String,
    #[serde(default)]
    pub domains: Vec<String>,
}

/// The answer of `POST /deploy`: one entry per resource started.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Deployments {
    #[serde(default)]
    pub deployments: Vec<Deployment>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Deployment {
    #[serde(default)]
    pub resource_uuid: Option<String>,
}

/// `POST /services` with a custom compose file. The compose is given as YAML; the client validates
/// and base64-encodes it.
#[derive(Debug, Clone, Default)]
pub struct CreateService {
    pub project_uuid: String,
    pub environment_name: Option<String>,
    pub environment_uuid: Option<String>,
    pub server_uuid: String,
    pub destination_uuid: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub compose_yaml: String,
    pub urls: Vec<ServiceUrl>,
    pub instant_deploy: bool,
    pub force_domain_override: bool,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ServicePatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub compose_yaml: Option<String>,
    pub urls: Option<Vec<ServiceUrl>>,
    pub instant_deploy: Option<bool>,
    pub force_domain_override: Option<bool>,
    pub connect_to_docker_network: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProjectPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// An env var as Coolify returns it. `value` is only present for tokens with `read:sensitive`.
#[derive(Clone, Default, Deserialize, PartialEq)]
pub struct EnvVar {
    #[serde(default)]
    pub uuid: Option<String>,
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub is_literal: bool,
    #[serde(default)]
    pub is_multiline: bool,
    #[serde(default)]
    pub is_shown_once: bool,
    #[serde(default)]
    pub is_required: bool,
}

impl fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvVar")
            .field("uuid", &self.uuid)
            .field("key", &self.key)
            .field("value", &self.value.as_ref().map(|_| "[redacted]"))
            .field("is_literal", &self.is_literal)
            .finish()
    }
}

/// An env var to write. Values are treated as secrets throughout.
#[derive(Clone)]
pub struct EnvVarInput {
    pub key: String,
    pub value: SecretString,
    /// Single-quote the value in `.env` (use for values containing `$`).
    pub is_literal: bool,
}

impl EnvVarInput {
    pub fn new(key: impl Into<String>, value: SecretString, is_literal: bool) -> Self {
        Self {
            key: key.into(),
            value,
            is_literal,
        }
    }

    pub fn plain(key: impl Into<String>, value: &str) -> Self {
        Self::new(key, SecretString::from(value.to_string()), false)
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("key".into(), Value::String(self.key.clone()));
        m.insert("value".into(), Value::String(self.value.expose_secret().to_string()));
        m.insert("is_literal".into(), Value::Bool(self.is_literal));
        Value::Object(m)
    }
}

impl fmt::Debug for EnvVarInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvVarInput")
            .field("key", &self.key)
            .field("value", &"[redacted]")
            .field("is_literal", &self.is_literal)
            .finish()
    }
}
