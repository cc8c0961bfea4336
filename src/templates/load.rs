//! Reading `templates/<name>/template.toml` and `compose.yml.liquid`, and proving each template renders.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::escape::{check_value, is_config_key, shown};
use super::render::{RenderInput, own_environment, parse_liquid, render};
use super::validate::is_service_name;
use super::{Template, TemplateError};
use crate::quota::Ceiling;
use crate::secrets::RESERVED_KEYS;

const MANIFEST: &str = "template.toml";
const COMPOSE: &str = "compose.yml.liquid";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    description: String,
    version: String,
    #[serde(default)]
    icon: String,
    #[serde(default)]
    required_secrets: Vec<String>,
    #[serde(default)]
    default_config: serde_json::Map<String, serde_json::Value>,
    cpu_default: f64,
    mem_default: u32,
    public_service: String,
    public_port: u16,
    #[serde(default = "default_healthcheck_path")]
    healthcheck_path: String,
    services: BTreeMap<String, ServiceDecl>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceDecl {
    /// Fraction of the stack's CPU and memory this service gets.
    share: f64,
}

fn default_healthcheck_path() -> String {
    "/healthz".to_string()
}

/// All templates of a directory, keyed by name.
#[derive(Debug, Clone, Default)]
pub struct TemplateSet {
    templates: BTreeMap<String, Template>,
    /// Versions the bridge loaded before and no longer on disk, keyed by (name, version): instances keep
    /// rendering from their version until a rollout moves them.
    earlier: BTreeMap<(String, String), Template>,
    /// Each template's first version the bridge loaded (see [`TemplateSet::version_of_unrecorded`]).
    first: BTreeMap<String, String>,
}

impl TemplateSet {
    /// Loads every `<path>/<name>/` that holds a `template.toml`. Each template must render, with its own
    /// defaults, into a compose that passes [`super::validate_compose`], so a broken template stops the
    /// bridge at start rather than at a tenant's deploy.
    pub fn load_dir(path: &Path) -> Result<Self, TemplateError> {
        let io = |p: &Path, source| TemplateError::Io {
            path: p.to_path_buf(),
            source,
        };
        let mut dirs: Vec<PathBuf> = Vec::new();
        for entry in fs::read_dir(path).map_err(|e| io(path, e))? {
            let entry = entry.map_err(|e| io(path, e))?;
            let dir = entry.path();
            if dir.join(MANIFEST).is_file() {
                dirs.push(dir);
            }
        }
        dirs.sort();
        let mut templates = BTreeMap::new();
        for dir in dirs {
            let t = load_one(&dir)?;
            templates.insert(t.name.clone(), t);
        }
        Ok(TemplateSet {
            templates,
            earlier: BTreeMap::new(),
            first: BTreeMap::new(),
        })
    }

    /// Adds the versions kept from earlier runs (manifest and compose), each checked as one on disk is;
    /// the version on disk wins over a kept copy of the same version.
    pub fn with_earlier(mut self, kept: impl IntoIterator<Item = (String, String)>) -> Result<Self, TemplateError> {
        let kept_path = Path::new("(kept template version)");
        for (manifest, compose) in kept {
            let table = toml::from_str::<toml::Table>(&manifest).unwrap_or_default();
            let field = |k: &str| table.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            let (name, version) = (field("name"), field("version"));
            if self.templates.get(&name).is_some_and(|now| now.version == version) {
                continue;
            }
            let t = parse_template(kept_path, &name, &manifest, compose)?;
            self.earlier.insert((t.name.clone(), t.version.clone()), t);
        }
        Ok(self)
    }

    /// Notes each template's first version the bridge loaded.
    pub fn with_first(mut self, first: impl IntoIterator<Item = (String, String)>) -> Self {
        self.first.extend(first);
        self
    }

    /// The version a stack applied before versions were recorded runs: the first one the bridge loaded
    /// (the templates directory's when it was upgraded), if the bridge still knows it.
    pub fn version_of_unrecorded(&self, name: &str) -> Option<&str> {
        let v = self.first.get(name)?;
        self.version(name, v).map(|t| t.version.as_str())
    }

    /// Template `name` at `version`, from disk or kept from an earlier run.
    pub fn version(&self, name: &str, version: &str) -> Option<&Template> {
        match self.templates.get(name) {
            Some(t) if t.version == version => Some(t),
            _ => self.earlier.get(&(name.to_string(), version.to_string())),
        }
    }

    /// Every version of `name` the bridge knows.
    pub fn versions_of(&self, name: &str) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .earlier
            .keys()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        v.extend(self.templates.get(name).map(|t| t.version.as_str()));
        v
    }

    pub fn get(&self, name: &str) -> Option<&Template> {
        self.templates.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Template> {
        self.templates.values()
    }

    pub fn len(&self) -> usize {
        self.templates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }
}

fn load_one(dir: &Path) -> Result<Template, TemplateError> {
    let manifest_path = dir.join(MANIFEST);
    let text = fs::read_to_string(&manifest_path).map_err(|source| TemplateError::Io {
        path: manifest_path.clone(),
        source,
    })?;
    let compose_path = dir.join(COMPOSE);
    let compose_source = fs::read_to_string(&compose_path).map_err(|source| TemplateError::Io {
        path: compose_path.clone(),
        source,
    })?;
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_template(&manifest_path, &dir_name, &text, compose_source)
}

/// A template from its manifest text and compose source, checked as [`TemplateSet::load_dir`] checks one
/// on disk; `dir_name` is the name it must declare, `manifest_path` names it in errors.
fn parse_template(
    manifest_path: &Path,
    dir_name: &str,
    text: &str,
    compose_source: String,
) -> Result<Template, TemplateError> {
    let bad = |detail: String| TemplateError::Manifest {
        path: manifest_path.to_path_buf(),
        detail,
    };
    let m: Manifest = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    if m.name != dir_name {
        return Err(bad(format!(
            "name {:?} differs from its directory {dir_name:?}",
            m.name
        )));
    }
    if !is_service_name(&m.name) {
        return Err(bad(format!(
            "name {} must be lowercase letters, digits, '-' or '_'",
            shown(&m.name)
        )));
    }
    for s in &m.required_secrets {
        let ok = s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            && !RESERVED_KEYS.contains(&s.as_str())
            && !s.starts_with("SERVICE_");
        if !ok {
            return Err(bad(format!(
                "required secret {} is not a valid tenant secret name",
                shown(s)
            )));
        }
    }
    for (k, v) in &m.default_config {
        if !is_config_key(k) {
            return Err(bad(format!("default_config key {} is invalid", shown(k))));
        }
        match v {
            serde_json::Value::String(s) => {
                check_value(s).map_err(|d| bad(format!("default_config {k} {d}")))?;
            }
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {}
            _ => return Err(bad(format!("default_config {k} must be a string, number or boolean"))),
        }
    }
    if !m.cpu_default.is_finite() || m.cpu_default <= 0.0 {
        return Err(bad("cpu_default must be above zero".into()));
    }
    if m.mem_default < 6 {
        return Err(bad("mem_default must be at least 6 MB (Docker's minimum)".into()));
    }
    if m.services.is_empty() {
        return Err(bad("no [services] declared".into()));
    }
    let mut total_share = 0.0;
    for (name, decl) in &m.services {
        if !is_service_name(name) {
            return Err(bad(format!("service name {} is invalid", shown(name))));
        }
        if !decl.share.is_finite() || decl.share <= 0.0 || decl.share > 1.0 {
            return Err(bad(format!("service {name}: share must be in (0, 1]")));
        }
        total_share += decl.share;
    }
    if total_share > 1.0 + 1e-9 {
        return Err(bad(format!("service shares add up to {total_share}, more than 1")));
    }
    if !m.services.contains_key(&m.public_service) {
        return Err(bad(format!(
            "public_service {:?} is not among [services]",
            m.public_service
        )));
    }
    if m.public_port == 0 {
        return Err(bad("public_port must be 1-65535".into()));
    }
    if !m.healthcheck_path.starts_with('/') {
        return Err(bad("healthcheck_path must start with '/'".into()));
    }

    if m.version.is_empty() || m.version.len() > 100 || !m.version.chars().all(|c| c.is_ascii_graphic()) {
        return Err(bad("version must be 1-100 printable characters without spaces".into()));
    }
    let t = Template {
        name: m.name,
        description: m.description,
        version: m.version,
        manifest_source: text.to_string(),
        icon: m.icon,
        required_secrets: m.required_secrets,
        default_config: m.default_config,
        cpu_default: m.cpu_default,
        mem_default_mb: m.mem_default,
        public_service: m.public_service,
        public_port: m.public_port,
        healthcheck_path: m.healthcheck_path,
        services: m.services.into_iter().map(|(k, d)| (k, d.share)).collect(),
        compose_source,
        own_env: BTreeMap::new(),
        parsed: Default::default(),
    };
    parse_liquid(&t)?;
    let ceiling = Ceiling {
        max_stacks: None,
        cpu: t.cpu_default,
        mem_mb: t.mem_default_mb,
    };
    let sample = render(&t, &RenderInput::sample(&t), &ceiling)?;
    let own_env = own_environment(&t, &sample.compose_yaml);
    Ok(Template { own_env, ..t })
}
