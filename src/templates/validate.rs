//! Checks a rendered compose against the platform's rules before Coolify sees it.
//!
//! The document is parsed (Coolify answers invalid YAML with a 500) and its structure is compared with
//! what the template declares, so nothing a record value could smuggle in (extra keys, services, tags,
//! references) survives. Service keys outside an allowlist are refused; the dangerous ones get their own
//! message.

use std::collections::BTreeSet;

use serde_norway::{Mapping, Value};

use super::{Template, TemplateError};
use crate::quota::Ceiling;
use crate::secrets::RESERVED_KEYS;

/// Largest rendered compose accepted.
const MAX_COMPOSE_BYTES: usize = 256 * 1024;

/// Service keys with no security impact beyond what is checked separately.
const ALLOWED_SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "healthcheck",
    "restart",
    "deploy",
    "cpus",
    "mem_limit",
    "expose",
    "networks",
    "volumes",
    "depends_on",
    "working_dir",
    "user",
    "tmpfs",
    "read_only",
    "init",
    "stop_grace_period",
    "stop_signal",
    "labels",
    "hostname",
    "cap_drop",
    "pull_policy",
    "tty",
    "stdin_open",
    "privileged",
];

/// Image names Coolify turns into a ServiceDatabase, which cannot carry a URL.
const DATABASE_IMAGES: &[&str] = &[
    "postgres",
    "postgis",
    "mysql",
    "mariadb",
    "mongo",
    "redis",
    "keydb",
    "dragonfly",
    "clickhouse",
    "memcached",
    "couchdb",
    "neo4j",
    "influxdb",
    "timescale",
    "cassandra",
    "elasticsearch",
];

/// Validates a compose document for template `t` against `ceiling`.
pub fn validate_compose(t: &Template, yaml: &str, ceiling: &Ceiling) -> Result<(), TemplateError> {
    check_compose(t, yaml, ceiling).map(|_| ())
}

/// Compose service keys Coolify accepts without shell metacharacters.
pub(crate) fn is_service_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

/// What [`check_compose`] learns from a valid compose.
pub(crate) struct Checked {
    /// The sorted names of the `${VAR}` references in the document.
    pub env_refs: Vec<String>,
    /// [`compose_meaning`] of the document.
    pub meaning: String,
}

/// Validates the document and returns what a job needs of it, from the one parse.
pub(crate) fn check_compose(t: &Template, yaml: &str, ceiling: &Ceiling) -> Result<Checked, TemplateError> {
    let bad = |reason: String| TemplateError::invalid(t, reason);
    if yaml.len() > MAX_COMPOSE_BYTES {
        return Err(bad(format!(
            "compose is {} bytes, more than {MAX_COMPOSE_BYTES}",
            yaml.len()
        )));
    }
    let doc: Value = serde_norway::from_str(yaml).map_err(|e| TemplateError::Yaml {
        template: t.name.clone(),
        detail: e.to_string(),
    })?;
    if let Some((line, c)) = find_node_property(yaml) {
        let what = match c {
            '!' => "tag",
            '&' => "anchor",
            _ => "alias",
        };
        return Err(bad(format!("line {line}: YAML {what} ('{c}') is not allowed")));
    }
    let mut refs = BTreeSet::new();
    walk_scalars(&doc, &mut |s| collect_refs(s, &mut refs)).map_err(|what| bad(what.into()))?;

    let top = doc
        .as_mapping()
        .ok_or_else(|| bad("compose must be a mapping".into()))?;
    for key in top.keys() {
        match key.as_str() {
            Some("services" | "networks" | "volumes") => {}
            _ => return Err(bad(format!("top-level key {} is not allowed", key_text(key)))),
        }
    }
    let services = match top.get("services") {
        Some(Value::Mapping(m)) if !m.is_empty() => m,
        Some(_) => return Err(bad("top-level services must be a non-empty mapping".into())),
        None => return Err(bad("compose has no top-level services map".into())),
    };
    let volumes = declared(t, top, "volumes", &[])?;
    let networks = declared(t, top, "networks", &["driver", "internal"])?;
    for (name, def) in top.get("networks").and_then(Value::as_mapping).into_iter().flatten() {
        if let Some(driver) = def.get("driver")
            && driver.as_str() != Some("bridge")
        {
            return Err(bad(format!(
                "network {}: only the bridge driver is allowed",
                key_text(name)
            )));
        }
    }

    let mut names = BTreeSet::new();
    for key in services.keys() {
        match key.as_str() {
            Some(k) if is_service_name(k) => {
                names.insert(k.to_string());
            }
            _ => return Err(bad(format!("service name {} is not allowed", key_text(key)))),
        }
    }
    let declared_names: BTreeSet<String> = t.services.keys().cloned().collect();
    if names != declared_names {
        return Err(bad(format!(
            "services {} differ from the declared {}",
            join(&names),
            join(&declared_names)
        )));
    }

    let mut total_cpu = 0.0;
    let mut total_mem: u64 = 0;
    for (key, svc) in services {
        let name = key.as_str().unwrap_or_default();
        let ctx = Service {
            t,
            name,
            volumes: &volumes,
            networks: &networks,
            services: &names,
        };
        let svc = svc
            .as_mapping()
            .ok_or_else(|| ctx.err("definition must be a mapping"))?;
        let (cpu, mem) = ctx.check(svc)?;
        total_cpu += cpu;
        total_mem += mem;
    }
    if total_cpu > ceiling.cpu + 1e-9 {
        return Err(bad(format!(
            "CPU limits add up to {total_cpu} cores, above the ceiling of {}",
            ceiling.cpu
        )));
    }
    let mem_ceiling = u64::from(ceiling.mem_mb) * 1024 * 1024;
    if total_mem > mem_ceiling {
        return Err(bad(format!(
            "memory limits add up to {} MB, above the ceiling of {} MB",
            total_mem.div_ceil(1024 * 1024),
            ceiling.mem_mb
        )));
    }
    check_public(t, services)?;
    check_refs(t, &refs)?;
    Ok(Checked {
        env_refs: refs.into_iter().collect(),
        meaning: compose_meaning(&doc),
    })
}

/// Names declared under a top-level `volumes`/`networks` map. Each definition may use only `allowed`
/// keys: anything else (external, name, driver_opts) could reach outside the stack.
fn declared(t: &Template, top: &Mapping, section: &str, allowed: &[&str]) -> Result<BTreeSet<String>, TemplateError> {
    let mut names = BTreeSet::new();
    let Some(v) = top.get(section) else {
        return Ok(names);
    };
    let map = v
        .as_mapping()
        .ok_or_else(|| TemplateError::invalid(t, format!("top-level {section} must be a mapping")))?;
    for (k, def) in map {
        let name = k
            .as_str()
            .filter(|n| is_service_name(n))
            .ok_or_else(|| TemplateError::invalid(t, format!("{section} name {} is not allowed", key_text(k))))?;
        match def {
            Value::Null => {}
            Value::Mapping(m) => {
                for opt in m.keys() {
                    if !opt.as_str().is_some_and(|o| allowed.contains(&o)) {
                        return Err(TemplateError::invalid(
                            t,
                            format!("{section} {name}: option {} is not allowed", key_text(opt)),
                        ));
                    }
                }
            }
            _ => {
                return Err(TemplateError::invalid(
                    t,
                    format!("{section} {name}: definition must be a mapping"),
                ));
            }
        }
        names.insert(name.to_string());
    }
    Ok(names)
}

struct Service<'a> {
    t: &'a Template,
    name: &'a str,
    volumes: &'a BTreeSet<String>,
    networks: &'a BTreeSet<String>,
    services: &'a BTreeSet<String>,
}

impl Service<'_> {
    fn err(&self, reason: impl std::fmt::Display) -> TemplateError {
        TemplateError::invalid(self.t, format!("service {}: {reason}", self.name))
    }

    /// Checks one service; returns its CPU cores and memory bytes.
    fn check(&self, svc: &Mapping) -> Result<(f64, u64), TemplateError> {
        for (key, value) in svc {
            let Some(k) = key.as_str() else {
                return Err(self.err(format!("key {} is not allowed", key_text(key))));
            };
            self.check_key(k, value)?;
        }
        match svc.get("image") {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            _ => return Err(self.err("image is missing")),
        }
        match svc.get("restart").and_then(Value::as_str) {
            Some("unless-stopped") => {}
            _ => return Err(self.err("restart must be unless-stopped")),
        }
        self.check_healthcheck(svc.get("healthcheck"))?;
        self.check_environment(svc.get("environment"))?;
        self.check_networks(svc.get("networks"))?;
        if let Some(v) = svc.get("volumes") {
            let list = v.as_sequence().ok_or_else(|| self.err("volumes must be a list"))?;
            list.iter().try_for_each(|m| self.check_mount(m))?;
        }
        if let Some(deps) = svc.get("depends_on") {
            let names: Vec<&Value> = match deps {
                Value::Sequence(s) => s.iter().collect(),
                Value::Mapping(m) => m.keys().collect(),
                _ => return Err(self.err("depends_on must be a list or mapping")),
            };
            for n in names {
                if !n.as_str().is_some_and(|n| self.services.contains(n)) {
                    return Err(self.err(format!("depends_on {} is not a service of this stack", key_text(n))));
                }
            }
        }
        self.check_labels(svc.get("labels"))?;
        self.limits(svc)
    }

    fn check_key(&self, k: &str, value: &Value) -> Result<(), TemplateError> {
        match k {
            "privileged" if value.as_bool() == Some(false) => Ok(()),
            "privileged" => Err(self.err("privileged mode is not allowed")),
            "network_mode" if value.as_str() == Some("host") => Err(self.err("host network mode is not allowed")),
            "network_mode" => Err(self.err("network_mode is not allowed; services use the stack's own network")),
            "pid" | "ipc" | "uts" | "userns_mode" | "cgroup" | "cgroup_parent" => Err(self.err(format!(
                "{k}: {} is not allowed; namespaces stay private to the container",
                scalar_text(value)
            ))),
            "cap_add" => Err(self.err("cap_add is not allowed")),
            "devices" | "device_cgroup_rules" | "gpus" => Err(self.err(format!("{k} is not allowed: no host devices"))),
            "security_opt" => Err(self.err("security_opt is not allowed")),
            "ports" => {
                Err(self.err("ports published on the host are not allowed; use expose (Coolify's proxy routes)"))
            }
            "env_file" | "build" | "extends" | "configs" | "secrets" => {
                Err(self.err(format!("{k} is not allowed: it reads files from the host")))
            }
            "container_name" => Err(self.err("container_name is not allowed: Coolify names containers")),
            _ if k.starts_with("x-") || ALLOWED_SERVICE_KEYS.contains(&k) => Ok(()),
            _ => Err(self.err(format!("key {k} is not allowed"))),
        }
    }

    fn check_healthcheck(&self, hc: Option<&Value>) -> Result<(), TemplateError> {
        let Some(Value::Mapping(hc)) = hc else {
            return Err(self.err("a healthcheck is required"));
        };
        if hc.get("disable").and_then(Value::as_bool) == Some(true) || hc.get("test").is_none() {
            return Err(self.err("a healthcheck with a test is required"));
        }
        Ok(())
    }

    fn check_environment(&self, env: Option<&Value>) -> Result<(), TemplateError> {
        let Some(env) = env else {
            return Err(self.err(format!("environment must set {}", RESERVED_KEYS.join(" and "))));
        };
        let env = env
            .as_mapping()
            .ok_or_else(|| self.err("environment must be a mapping"))?;
        for (k, v) in env {
            let key = k
                .as_str()
                .filter(|k| super::escape::is_config_key(k))
                .ok_or_else(|| self.err(format!("environment key {} is invalid", key_text(k))))?;
            if !v.is_string() {
                return Err(self.err(format!("environment {key}: value must be a string")));
            }
        }
        for reserved in RESERVED_KEYS {
            let expected = format!("${{{reserved}}}");
            let expected_default = format!("${{{reserved}:-");
            match env.get(reserved).and_then(Value::as_str) {
                Some(v) if v == expected || (v.starts_with(&expected_default) && v.ends_with('}')) => {}
                _ => return Err(self.err(format!("environment must set {reserved} to ${{{reserved}}}"))),
            }
        }
        Ok(())
    }

    fn check_networks(&self, nets: Option<&Value>) -> Result<(), TemplateError> {
        let names: Vec<&Value> = match nets {
            Some(Value::Sequence(s)) => s.iter().collect(),
            Some(Value::Mapping(m)) => m.keys().collect(),
            _ => return Err(self.err("must join the stack's own network (networks is missing)")),
        };
        if names.is_empty() {
            return Err(self.err("must join the stack's own network"));
        }
        for n in names {
            if !n.as_str().is_some_and(|n| self.networks.contains(n)) {
                return Err(self.err(format!("network {} is not declared by the stack", key_text(n))));
            }
        }
        Ok(())
    }

    fn check_mount(&self, m: &Value) -> Result<(), TemplateError> {
        let (kind, source) = match m {
            Value::String(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                if parts.len() == 1 {
                    ("volume", None)
                } else {
                    ("auto", Some(parts[0].to_string()))
                }
            }
            Value::Mapping(map) => {
                let kind = map.get("type").and_then(Value::as_str).unwrap_or("");
                let source = map.get("source").and_then(Value::as_str).map(str::to_string);
                match kind {
                    "volume" | "tmpfs" => (kind, source),
                    "bind" => ("bind", Some(source.unwrap_or_default())),
                    other => return Err(self.err(format!("volume type {other:?} is not allowed"))),
                }
            }
            _ => return Err(self.err("volume entries must be strings or mappings")),
        };
        let text = match m {
            Value::String(s) => s.clone(),
            _ => source.clone().unwrap_or_default(),
        };
        if text.contains("docker.sock") {
            return Err(self.err("mounting the Docker socket is not allowed"));
        }
        let Some(source) = source else { return Ok(()) };
        let host_path = kind == "bind"
            || source.is_empty()
            || source.starts_with(['/', '.', '~', '$'])
            || source.contains(['/', '\\']);
        if host_path {
            return Err(self.err(format!("host path mount {source:?} is not allowed; use a named volume")));
        }
        if !self.volumes.contains(&source) {
            return Err(self.err(format!("volume {source:?} is not declared in the top-level volumes")));
        }
        Ok(())
    }

    /// Routing labels would let a container claim a domain behind Coolify's back.
    fn check_labels(&self, labels: Option<&Value>) -> Result<(), TemplateError> {
        let keys: Vec<String> = match labels {
            None => return Ok(()),
            Some(Value::Mapping(m)) => m.keys().map(key_text).collect(),
            Some(Value::Sequence(s)) => s
                .iter()
                .map(|l| l.as_str().unwrap_or("").split('=').next().unwrap_or("").to_string())
                .collect(),
            Some(_) => return Err(self.err("labels must be a list or mapping")),
        };
        for k in keys {
            let lower = k.to_ascii_lowercase();
            if ["traefik", "caddy", "coolify"].iter().any(|p| lower.starts_with(p)) {
                return Err(self.err(format!("label {k} is not allowed: routing belongs to the bridge")));
            }
        }
        Ok(())
    }

    /// CPU cores and memory bytes from `deploy.resources.limits` and/or `cpus`/`mem_limit`; where both
    /// are set, the larger counts.
    fn limits(&self, svc: &Mapping) -> Result<(f64, u64), TemplateError> {
        let mut cpu: Option<f64> = None;
        let mut mem: Option<u64> = None;
        if let Some(deploy) = svc.get("deploy") {
            let deploy = deploy
                .as_mapping()
                .ok_or_else(|| self.err("deploy must be a mapping"))?;
            for k in deploy.keys() {
                if k.as_str() != Some("resources") {
                    return Err(self.err(format!("deploy.{} is not allowed", key_text(k))));
                }
            }
            if let Some(res) = deploy.get("resources") {
                let res = res
                    .as_mapping()
                    .ok_or_else(|| self.err("deploy.resources must be a mapping"))?;
                for k in res.keys() {
                    if k.as_str() != Some("limits") {
                        return Err(self.err(format!("deploy.resources.{} is not allowed", key_text(k))));
                    }
                }
                if let Some(lim) = res.get("limits") {
                    let lim = lim
                        .as_mapping()
                        .ok_or_else(|| self.err("deploy.resources.limits must be a mapping"))?;
                    for k in lim.keys() {
                        if !matches!(k.as_str(), Some("cpus" | "memory" | "pids")) {
                            return Err(self.err(format!("deploy.resources.limits.{} is not allowed", key_text(k))));
                        }
                    }
                    if let Some(v) = lim.get("cpus") {
                        cpu = Some(self.cpus(v)?);
                    }
                    if let Some(v) = lim.get("memory") {
                        mem = Some(self.bytes(v)?);
                    }
                }
            }
        }
        if let Some(v) = svc.get("cpus") {
            let c = self.cpus(v)?;
            cpu = Some(cpu.map_or(c, |x| x.max(c)));
        }
        if let Some(v) = svc.get("mem_limit") {
            let m = self.bytes(v)?;
            mem = Some(mem.map_or(m, |x| x.max(m)));
        }
        let cpu = cpu.ok_or_else(|| self.err("CPU limit is missing"))?;
        let mem = mem.ok_or_else(|| self.err("memory limit is missing"))?;
        Ok((cpu, mem))
    }

    fn cpus(&self, v: &Value) -> Result<f64, TemplateError> {
        let n = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n.is_finite() && n > 0.0 => Ok(n),
            _ => Err(self.err(format!("CPU limit {} is not a positive number", scalar_text(v)))),
        }
    }

    fn bytes(&self, v: &Value) -> Result<u64, TemplateError> {
        let parsed = match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => parse_bytes(s),
            _ => None,
        };
        match parsed {
            Some(b) if b > 0 => Ok(b),
            _ => Err(self.err(format!("memory limit {} is not a size", scalar_text(v)))),
        }
    }
}

fn check_public(t: &Template, services: &Mapping) -> Result<(), TemplateError> {
    let svc = services
        .get(t.public_service.as_str())
        .and_then(Value::as_mapping)
        .ok_or_else(|| TemplateError::invalid(t, format!("public service {} is missing", t.public_service)))?;
    let image = svc.get("image").and_then(Value::as_str).unwrap_or_default();
    let repo = image.split('@').next().unwrap_or_default();
    let repo = match repo.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => repo,
    };
    let last = repo.rsplit('/').next().unwrap_or_default().to_ascii_lowercase();
    if DATABASE_IMAGES.iter().any(|db| last.starts_with(db)) {
        return Err(TemplateError::invalid(
            t,
            format!(
                "public service {}: image {image} is a database image, which Coolify cannot give a domain",
                t.public_service
            ),
        ));
    }
    let exposed = svc.get("expose").and_then(Value::as_sequence).is_some_and(|ports| {
        ports.iter().any(|p| match p {
            Value::Number(n) => n.as_u64() == Some(u64::from(t.public_port)),
            Value::String(s) => s.split('/').next() == Some(t.public_port.to_string().as_str()),
            _ => false,
        })
    });
    if !exposed {
        return Err(TemplateError::invalid(
            t,
            format!("public service {} must expose port {}", t.public_service, t.public_port),
        ));
    }
    Ok(())
}

/// References in a compose may only name bridge variables, the template's secrets or Coolify's generated
/// credentials. Generated domains (`SERVICE_FQDN_*`, `SERVICE_URL_*`) would bypass the bridge's `urls`.
fn check_refs(t: &Template, refs: &BTreeSet<String>) -> Result<(), TemplateError> {
    for r in refs {
        if RESERVED_KEYS.contains(&r.as_str()) || t.required_secrets.contains(r) {
            continue;
        }
        if ["SERVICE_PASSWORD_", "SERVICE_USER_", "SERVICE_BASE64_"]
            .iter()
            .any(|p| r.starts_with(p))
        {
            continue;
        }
        if r.starts_with("SERVICE_FQDN_") || r.starts_with("SERVICE_URL_") {
            return Err(TemplateError::invalid(
                t,
                format!("${{{r}}} would generate a domain; domains are assigned by the bridge"),
            ));
        }
        return Err(TemplateError::invalid(
            t,
            format!("references ${{{r}}}, which is neither a required secret nor a bridge variable"),
        ));
    }
    for s in &t.required_secrets {
        if !refs.contains(s) {
            return Err(TemplateError::invalid(
                t,
                format!("required secret {s} is never referenced"),
            ));
        }
    }
    Ok(())
}

/// Visits every string (keys included); refuses YAML tags anywhere.
fn walk_scalars(v: &Value, f: &mut impl FnMut(&str)) -> Result<(), &'static str> {
    match v {
        Value::String(s) => f(s),
        Value::Sequence(seq) => {
            for x in seq {
                walk_scalars(x, f)?;
            }
        }
        Value::Mapping(m) => {
            for (k, x) in m {
                walk_scalars(k, f)?;
                walk_scalars(x, f)?;
            }
        }
        Value::Tagged(_) => return Err("YAML tags are not allowed"),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// Finds a node property (tag `!`, anchor `&`) or alias (`*`) outside quoted scalars, comments and block
/// scalars; returns its line and character. The parser resolves `!!` tags and aliases silently, so they are
/// looked for in the text. Conservative: an unusual but legal plain scalar may be flagged too.
fn find_node_property(yaml: &str) -> Option<(usize, char)> {
    let mut quote: Option<char> = None;
    let mut block_indent: Option<usize> = None;
    let mut flow = 0usize;
    for (n, line) in yaml.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(bi) = block_indent {
            if line.trim().is_empty() || indent > bi {
                continue;
            }
            block_indent = None;
        }
        let chars: Vec<char> = line.chars().collect();
        let spaced = |i: usize| chars.get(i).is_none_or(|c| *c == ' ' || *c == '\t');
        let mut token_start = quote.is_none();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if let Some(q) = quote {
                if q == '"' && c == '\\' {
                    i += 2;
                    continue;
                }
                if c == q {
                    if q == '\'' && chars.get(i + 1) == Some(&'\'') {
                        i += 2;
                        continue;
                    }
                    quote = None;
                    token_start = false;
                }
                i += 1;
                continue;
            }
            match c {
                ' ' | '\t' => {}
                '#' if i == 0 || spaced(i - 1) => break,
                '!' | '&' | '*' if token_start => return Some((n + 1, c)),
                '"' | '\'' if token_start => quote = Some(c),
                '|' | '>' if token_start && flow == 0 => {
                    block_indent = Some(indent);
                    break;
                }
                '-' | '?' if token_start && spaced(i + 1) => {}
                '[' | '{' if token_start => flow += 1,
                ']' | '}' if flow > 0 => {
                    flow -= 1;
                    token_start = false;
                }
                ',' if flow > 0 => token_start = true,
                ':' if spaced(i + 1) || (flow > 0 && matches!(chars.get(i + 1), Some(',' | ']' | '}'))) => {
                    token_start = true
                }
                _ => token_start = false,
            }
            i += 1;
        }
    }
    None
}

/// Compose interpolation: `$$` is a literal `$`; `${NAME...}` and `$NAME` are references.
fn collect_refs(s: &str, out: &mut BTreeSet<String>) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'$') => i += 2,
            Some(b'{') => {
                let start = i + 2;
                let end = start
                    + b[start..]
                        .iter()
                        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                        .count();
                out.insert(s[start..end].to_string());
                i = end;
            }
            Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {
                let start = i + 1;
                let end = start
                    + b[start..]
                        .iter()
                        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                        .count();
                out.insert(s[start..end].to_string());
                i = end;
            }
            _ => i += 1,
        }
    }
}

/// Compose sizes: a plain number of bytes, or a number with b/k/m/g (optionally followed by b).
pub(crate) fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: f64 = num.trim().parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some((n * mult as f64) as u64)
}

/// A key for an error message: bare when it is a plain name, quoted and bounded otherwise.
fn key_text(v: &Value) -> String {
    match v {
        Value::String(s)
            if !s.is_empty()
                && s.len() <= 64
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) =>
        {
            s.clone()
        }
        Value::String(s) => super::escape::shown(s),
        other => scalar_text(other),
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => super::escape::shown(s),
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => "a structure".to_string(),
    }
}

fn join(set: &BTreeSet<String>) -> String {
    format!("[{}]", set.iter().cloned().collect::<Vec<_>>().join(", "))
}

/// A fingerprint of what a compose means, not how it is written: Coolify stores the compose parsed and
/// dumped again (comments and anchors gone, quoting changed), so the text it shows differs from the text
/// sent.
pub fn compose_meaning(doc: &Value) -> String {
    fn canonical(v: &Value, out: &mut String) {
        match v {
            Value::Null => out.push('~'),
            Value::Bool(b) => out.push_str(if *b { "T" } else { "F" }),
            Value::Number(n) => out.push_str(&format!("n{n};")),
            Value::String(s) => out.push_str(&format!("s{}:{s}", s.len())),
            Value::Sequence(items) => {
                out.push('[');
                items.iter().for_each(|i| canonical(i, out));
                out.push(']');
            }
            Value::Mapping(map) => {
                let mut entries: Vec<(String, String)> = map
                    .iter()
                    .map(|(k, v)| {
                        let (mut key, mut value) = (String::new(), String::new());
                        canonical(k, &mut key);
                        canonical(v, &mut value);
                        (key, value)
                    })
                    .collect();
                entries.sort();
                out.push('{');
                for (k, v) in entries {
                    out.push_str(&k);
                    out.push('=');
                    out.push_str(&v);
                }
                out.push('}');
            }
            Value::Tagged(t) => {
                out.push_str(&format!("!{}", t.tag));
                canonical(&t.value, out);
            }
        }
    }
    let mut text = String::new();
    canonical(doc, &mut text);
    let digest = <sha2::Sha256 as sha2::Digest>::digest(text.as_bytes());
    hex::encode(&digest[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("256M"), Some(256 << 20));
        assert_eq!(parse_bytes("256mb"), Some(256 << 20));
        assert_eq!(parse_bytes("1g"), Some(1 << 30));
        assert_eq!(parse_bytes("1024"), Some(1024));
        assert_eq!(parse_bytes("12b"), Some(12));
        assert_eq!(parse_bytes("0.5g"), Some(1 << 29));
        assert_eq!(parse_bytes("lots"), None);
    }

    #[test]
    fn node_properties() {
        assert_eq!(find_node_property("a: !!python/object x\n"), Some((1, '!')));
        assert_eq!(find_node_property("a: &x 1\nb: *x\n"), Some((1, '&')));
        assert_eq!(find_node_property("a:\n  - *x\n"), Some((2, '*')));
        assert_eq!(find_node_property("a: [1, !t 2]\n"), Some((1, '!')));
        assert_eq!(find_node_property("a: {k: &z v}\n"), Some((1, '&')));
        assert_eq!(find_node_property("a: \"!x &y *z\"\nb: 'it''s !x'\n"), None);
        assert_eq!(find_node_property("a: echo hi! a&b *c\n# !comment\n"), None);
        assert_eq!(find_node_property("a: |\n  !not a tag\n  *nor alias\nb: x\n"), None);
        assert_eq!(find_node_property("a: |\n  text\nb: !t x\n"), Some((3, '!')));
        assert_eq!(find_node_property("a: \"multi\n  line !x\"\n"), None);
    }

    #[test]
    fn refs() {
        let mut out = BTreeSet::new();
        collect_refs("$${HOME} ${A} $B ${C:-x} $$D $", &mut out);
        assert_eq!(out.into_iter().collect::<Vec<_>>(), vec!["A", "B", "C"]);
    }
}
