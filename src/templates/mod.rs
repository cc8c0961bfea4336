//! Bot templates: loading `templates/<name>/`, injection-proof rendering, and compose validation.
//!
//! Flow: [`TemplateSet::load_dir`] reads each template and proves it renders into a valid compose with its
//! own defaults; [`render`] fills a template from an instance record (every record value pre-quoted, see
//! [`escape`]) and then [`validate_compose`] parses the result and checks it against the platform's rules
//! before Coolify ever sees it.

pub mod escape;
mod load;
mod render;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

pub use load::TemplateSet;
pub use render::{RenderInput, Rendered, render};
pub use validate::{compose_meaning, validate_compose};

/// One bot template, as declared by `template.toml` plus its compose source.
#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    pub description: String,
    pub version: String,
    /// The `template.toml` text, kept with the compose source so a version can be stored and loaded again.
    pub manifest_source: String,
    pub icon: String,
    /// Env var names the tenant must provide before the stack can deploy.
    pub required_secrets: Vec<String>,
    pub default_config: serde_json::Map<String, serde_json::Value>,
    pub cpu_default: f64,
    pub mem_default_mb: u32,
    /// The compose service that gets the domain (through Coolify `urls`).
    pub public_service: String,
    /// The container port the proxy routes to.
    pub public_port: u16,
    pub healthcheck_path: String,
    /// Compose service keys the template declares, each with its share of the stack's CPU and memory.
    pub services: BTreeMap<String, f64>,
    pub compose_source: String,
    /// Env vars the compose sets itself (platform wiring such as the router key), each with the services
    /// that set them: found at load, refused as config keys (see `render`).
    pub own_env: BTreeMap<String, Vec<String>>,
    /// `compose_source` parsed by its first render (at load, for every template the bridge loads).
    pub parsed: ParsedCompose,
}

/// A template's parsed liquid, kept for the template's life: every reconcile renders, and parsing the
/// source each time was about 12 % of the bridge's CPU per change (perf, 50 changes/s). Parsing depends on
/// the source alone, so it is filled once and shared by clones.
#[derive(Clone, Default)]
pub struct ParsedCompose(OnceLock<Arc<liquid::Template>>);

impl fmt::Debug for ParsedCompose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "ParsedCompose(parsed)"
        } else {
            "ParsedCompose(not yet)"
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The io error is the source, not part of the message: chains printed with `{:#}` showed it twice.
    #[error("reading {path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("template manifest {path}: {detail}")]
    Manifest { path: PathBuf, detail: String },
    #[error("template {template}: compose template does not parse: {detail}")]
    Syntax { template: String, detail: String },
    #[error("template {template}: {detail}")]
    Input { template: String, detail: String },
    #[error("template {template}: rendering failed: {detail}")]
    Render { template: String, detail: String },
    #[error("template {template}: rendered compose is not valid YAML: {detail}")]
    Yaml { template: String, detail: String },
    #[error("template {template}: {reason}")]
    Invalid { template: String, reason: String },
    #[error("unknown template {0:?}")]
    Unknown(String),
}

impl TemplateError {
    pub(crate) fn invalid(t: &Template, reason: impl Into<String>) -> Self {
        TemplateError::Invalid {
            template: t.name.clone(),
            reason: reason.into(),
        }
    }

    pub(crate) fn input(t: &Template, detail: impl Into<String>) -> Self {
        TemplateError::Input {
            template: t.name.clone(),
            detail: detail.into(),
        }
    }
}
