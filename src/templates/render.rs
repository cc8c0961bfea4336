//! Filling a template from an instance record.
//!
//! The liquid context holds record-derived text only as finished double-quoted YAML scalars (see
//! [`super::escape`]); bridge variables and secrets appear only as `${NAME}` references so Coolify holds
//! their values as env vars. The rendered text is then parsed and validated.

use std::collections::BTreeMap;
use std::sync::Arc;

use liquid::Object;
use liquid::model::{KString, Value};
use serde_json::Value as Json;

use super::escape::{check_value, is_config_key, quote, shown};
use super::validate::check_compose;
use super::{Template, TemplateError};
use crate::quota::Ceiling;
use crate::secrets::RESERVED_KEYS;

/// Most config entries an instance may carry.
pub const MAX_CONFIG_ENTRIES: usize = 128;
/// Docker refuses memory limits below 6 MB.
const MIN_MEM_MB: u32 = 6;

/// What the reconciler knows about one instance when it renders its stack.
#[derive(Debug, Clone)]
pub struct RenderInput {
    pub instance_id: String,
    pub instance_name: String,
    pub subdomain: String,
    /// Full public host, `<subdomain>.<base_domain>`.
    pub domain: String,
    pub tenant_slug: String,
    /// The record's `config`: anything; only an object (or null) is accepted.
    pub config: Json,
    /// Granted CPU cores for the whole stack (0 = template default).
    pub cpu: f64,
    /// Granted memory in MB for the whole stack (0 = template default).
    pub mem_mb: u32,
    pub router_base_url: String,
}

impl RenderInput {
    /// A fixed, valid input with the template's defaults: used to prove templates at load and by
    /// `templates render`.
    pub fn sample(t: &Template) -> Self {
        RenderInput {
            instance_id: "sampleinstance1".into(),
            instance_name: format!("Sample {}", t.name),
            subdomain: "sample".into(),
            domain: "sample.bots.example.com".into(),
            tenant_slug: "sample-tenant".into(),
            config: Json::Object(serde_json::Map::new()),
            cpu: t.cpu_default,
            mem_mb: t.mem_default_mb,
            router_base_url: "https://router.example.com/v1".into(),
        }
    }
}

/// A validated compose document and what the reconciler needs to create the Coolify service.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub compose_yaml: String,
    pub public_service: String,
    pub public_port: u16,
    /// Names of the `${VAR}` references in the compose, sorted: Coolify creates an env var for each.
    pub env_refs: Vec<String>,
    /// What the compose means ([`super::compose_meaning`]), taken from the validation's parse.
    pub meaning: String,
}

/// `t`'s compose source as liquid, parsed once (see [`super::ParsedCompose`]).
pub(crate) fn parse_liquid(t: &Template) -> Result<Arc<liquid::Template>, TemplateError> {
    if let Some(parsed) = t.parsed.0.get() {
        return Ok(parsed.clone());
    }
    let syntax = |e: liquid::Error| TemplateError::Syntax {
        template: t.name.clone(),
        detail: e.to_string(),
    };
    let parsed = liquid::ParserBuilder::with_stdlib()
        .build()
        .map_err(syntax)?
        .parse(&t.compose_source)
        .map_err(syntax)?;
    Ok(t.parsed.0.get_or_init(|| Arc::new(parsed)).clone())
}

/// Renders `t` for one instance and validates the result against `limits`.
pub fn render(t: &Template, input: &RenderInput, limits: &Ceiling) -> Result<Rendered, TemplateError> {
    let globals = context(t, input)?;
    let mut compose_yaml = parse_liquid(t)?.render(&globals).map_err(|e| TemplateError::Render {
        template: t.name.clone(),
        detail: e.to_string(),
    })?;
    // liquid renders into a 10 KB buffer; a job keeps its compose until it ends, and a backlog holds
    // hundreds of jobs.
    compose_yaml.shrink_to_fit();
    let checked = check_compose(t, &compose_yaml, limits)?;
    Ok(Rendered {
        compose_yaml,
        public_service: t.public_service.clone(),
        public_port: t.public_port,
        env_refs: checked.env_refs,
        meaning: checked.meaning,
    })
}

fn context(t: &Template, input: &RenderInput) -> Result<Object, TemplateError> {
    let field = |name: &str, value: &str| -> Result<Value, TemplateError> {
        check_value(value).map_err(|d| TemplateError::input(t, format!("{name} {d}")))?;
        Ok(Value::scalar(quote(value)))
    };
    if !is_instance_id(&input.instance_id) {
        return Err(TemplateError::input(
            t,
            format!("instance id {} is invalid", shown(&input.instance_id)),
        ));
    }
    for (what, label) in [("tenant slug", &input.tenant_slug), ("subdomain", &input.subdomain)] {
        if !is_dns_label(label) {
            return Err(TemplateError::input(
                t,
                format!("{what} {} is not a DNS label", shown(label)),
            ));
        }
    }
    if !is_hostname(&input.domain) {
        return Err(TemplateError::input(
            t,
            format!("domain {} is not a valid host name", shown(&input.domain)),
        ));
    }
    let router = router_default(&input.router_base_url).ok_or_else(|| {
        TemplateError::input(
            t,
            format!(
                "router base URL {} is not a plain http(s) URL",
                shown(&input.router_base_url)
            ),
        )
    })?;

    let mut instance = Object::new();
    instance.insert("id".into(), field("instance id", &input.instance_id)?);
    instance.insert("name".into(), field("instance name", &input.instance_name)?);
    instance.insert("subdomain".into(), field("subdomain", &input.subdomain)?);
    instance.insert("domain".into(), field("domain", &input.domain)?);
    instance.insert("url".into(), field("domain", &format!("https://{}", input.domain))?);
    let mut tenant = Object::new();
    tenant.insert("slug".into(), field("tenant slug", &input.tenant_slug)?);

    let merged = merged_config(t, &input.config)?;
    let mut config = Object::new();
    let mut env = Vec::new();
    for (k, v) in &merged {
        let q = quote(v);
        config.insert(KString::from_ref(k), Value::scalar(q.clone()));
        env.push(pair(quote(k), q));
    }
    env.push(pair(quote("CLOUDFREEDOM_INSTANCE_ID"), quote(&input.instance_id)));
    env.push(pair(quote(RESERVED_KEYS[0]), router));
    env.push(pair(quote(RESERVED_KEYS[1]), reference(RESERVED_KEYS[1])));
    let secrets: Vec<Value> = t
        .required_secrets
        .iter()
        .map(|s| pair(quote(s), reference(s)))
        .collect();

    let mut limits = Object::new();
    let cpu = if input.cpu == 0.0 { t.cpu_default } else { input.cpu };
    let mem = if input.mem_mb == 0 {
        t.mem_default_mb
    } else {
        input.mem_mb
    };
    if !cpu.is_finite() || cpu < 0.0 {
        return Err(TemplateError::input(t, format!("CPU {cpu} is not a positive number")));
    }
    for (svc, share) in &t.services {
        // Round down so the services never add up to more than the grant.
        let cpus = ((cpu * share * 100.0) + 1e-6).floor() / 100.0;
        let mem_mb = (f64::from(mem) * share).floor() as u32;
        if cpus < 0.01 || mem_mb < MIN_MEM_MB {
            return Err(TemplateError::input(
                t,
                format!("service {svc}: {cpu} CPU / {mem} MB is too little to give it a share of {share}"),
            ));
        }
        let mut l = Object::new();
        l.insert("cpus".into(), Value::scalar(format!("\"{cpus:.2}\"")));
        l.insert("memory".into(), Value::scalar(format!("\"{mem_mb}M\"")));
        limits.insert(KString::from_ref(svc), Value::Object(l));
    }

    let mut globals = Object::new();
    globals.insert("instance".into(), Value::Object(instance));
    globals.insert("tenant".into(), Value::Object(tenant));
    globals.insert("config".into(), Value::Object(config));
    globals.insert("env".into(), Value::Array(env));
    globals.insert("secrets".into(), Value::Array(secrets));
    globals.insert("limits".into(), Value::Object(limits));
    globals.insert("public_port".into(), Value::scalar(i64::from(t.public_port)));
    globals.insert("healthcheck_path".into(), Value::scalar(quote(&t.healthcheck_path)));
    Ok(globals)
}

fn pair(key: String, value: String) -> Value {
    let mut o = Object::new();
    o.insert("key".into(), Value::scalar(key));
    o.insert("value".into(), Value::scalar(value));
    Value::Object(o)
}

/// `"${NAME}"`; only for names already checked to be plain identifiers.
fn reference(name: &str) -> String {
    format!("\"${{{name}}}\"")
}

/// `"${CLOUDFREEDOM_ROUTER_BASE_URL:-<url>}"`: Coolify creates the env var with the URL as its value, and
/// an operator or the reconciler can still override it. Only URLs made of unreserved characters qualify,
/// so the default can neither close the reference nor the YAML string.
fn router_default(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let plain = url.len() <= 512
        && matches!(parsed.scheme(), "http" | "https")
        && parsed.host_str().is_some()
        && url
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~:/%".contains(&b));
    plain.then(|| format!("\"${{{}:-{url}}}\"", RESERVED_KEYS[0]))
}

/// The env vars a rendered compose sets that the template itself writes, each with the services that set
/// them: every environment key but those the bridge adds (config entries, `CLOUDFREEDOM_*`, secrets).
/// Coolify's `SERVICE_*` names are reserved anyway.
pub(crate) fn own_environment(t: &Template, yaml: &str) -> BTreeMap<String, Vec<String>> {
    let mut own: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Ok(doc) = serde_norway::from_str::<serde_norway::Value>(yaml) else {
        return own;
    };
    let services = doc.get("services").and_then(serde_norway::Value::as_mapping);
    for (name, svc) in services.into_iter().flatten() {
        let env = svc.get("environment").and_then(serde_norway::Value::as_mapping);
        for key in env.into_iter().flatten().filter_map(|(k, _)| k.as_str()) {
            let added_by_bridge = t.default_config.contains_key(key)
                || key.starts_with("CLOUDFREEDOM_")
                || key.starts_with("SERVICE_")
                || t.required_secrets.iter().any(|s| s == key);
            if !added_by_bridge && let Some(name) = name.as_str() {
                own.entry(key.to_string()).or_default().push(name.to_string());
            }
        }
    }
    own
}

/// `default_config` overlaid with the record's `config`, every value as text. A `null` in the record
/// falls back to the default.
fn merged_config(t: &Template, config: &Json) -> Result<BTreeMap<String, String>, TemplateError> {
    let overlay = match config {
        Json::Null => None,
        Json::Object(m) => Some(m),
        _ => return Err(TemplateError::input(t, "config must be a JSON object")),
    };
    if overlay.is_some_and(|m| m.len() > MAX_CONFIG_ENTRIES) {
        return Err(TemplateError::input(
            t,
            format!("config has more than {MAX_CONFIG_ENTRIES} keys"),
        ));
    }
    let mut merged = BTreeMap::new();
    for (k, v) in t.default_config.iter().chain(overlay.into_iter().flatten()) {
        if !is_config_key(k) {
            return Err(TemplateError::input(
                t,
                format!(
                    "config key {} is invalid: keys must match ^[A-Za-z_][A-Za-z0-9_]{{0,63}}$",
                    shown(k)
                ),
            ));
        }
        if k.starts_with("CLOUDFREEDOM_") || k.starts_with("SERVICE_") || t.required_secrets.contains(k) {
            return Err(TemplateError::input(
                t,
                format!("config key {k} is reserved (bridge variable, Coolify variable or secret)"),
            ));
        }
        // The template's own env is its wiring (the router key, internal URLs): config may not replace it.
        if let Some(services) = t.own_env.get(k) {
            return Err(TemplateError::input(
                t,
                format!(
                    "config key {k} is set by the template itself (service {}); choose another name",
                    services.join(", ")
                ),
            ));
        }
        let text = match v {
            Json::Null => continue,
            Json::String(s) => s.clone(),
            Json::Number(n) => n.to_string(),
            Json::Bool(b) => b.to_string(),
            Json::Array(_) | Json::Object(_) => {
                return Err(TemplateError::input(
                    t,
                    format!("config key {k}: nested arrays and objects are not supported; use a string"),
                ));
            }
        };
        check_value(&text).map_err(|d| TemplateError::input(t, format!("config key {k}: value {d}")))?;
        merged.insert(k.clone(), text);
    }
    Ok(merged)
}

fn is_instance_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_hostname(s: &str) -> bool {
    s.len() <= 253 && s.contains('.') && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::TemplateSet;

    #[test]
    fn a_rendered_compose_holds_no_more_memory_than_its_text() {
        let set = TemplateSet::load_dir(std::path::Path::new("templates")).unwrap();
        let t = set.get("telegram-bot").unwrap();
        let ceiling = Ceiling {
            max_stacks: None,
            cpu: t.cpu_default,
            mem_mb: t.mem_default_mb,
        };
        let compose = render(t, &RenderInput::sample(t), &ceiling).unwrap().compose_yaml;
        assert_eq!(compose.capacity(), compose.len());
    }

    #[test]
    fn a_render_s_meaning_is_what_its_text_means() {
        let set = TemplateSet::load_dir(std::path::Path::new("templates")).unwrap();
        for name in ["telegram-bot", "base-llm", "openclaw-agent"] {
            let t = set.get(name).unwrap();
            let ceiling = Ceiling {
                max_stacks: None,
                cpu: t.cpu_default,
                mem_mb: t.mem_default_mb,
            };
            let mut input = RenderInput::sample(t);
            let first = render(t, &input, &ceiling).unwrap();
            // The drift check compares it with the fingerprint of the text Coolify shows.
            assert_eq!(
                Some(&first.meaning),
                crate::coolify::compose_fingerprint(&first.compose_yaml).as_ref(),
                "{name}"
            );
            let key = t.default_config.keys().next().unwrap();
            input.config = serde_json::json!({ key: "changed" });
            let changed = render(t, &input, &ceiling).unwrap();
            assert_ne!(
                first.meaning, changed.meaning,
                "{name}: a config change changes what the compose means"
            );
        }
    }

    #[test]
    fn a_template_is_parsed_once_and_its_clones_share_it() {
        let set = TemplateSet::load_dir(std::path::Path::new("templates")).unwrap();
        let t = set.get("telegram-bot").unwrap();
        assert!(t.parsed.0.get().is_some(), "loading renders a sample, which parses");
        let first = parse_liquid(t).unwrap();
        assert!(Arc::ptr_eq(&first, &parse_liquid(t).unwrap()));
        assert!(Arc::ptr_eq(&first, &parse_liquid(&t.clone()).unwrap()));

        let fresh = Template {
            parsed: Default::default(),
            ..t.clone()
        };
        let parsed = parse_liquid(&fresh).unwrap();
        assert!(
            !Arc::ptr_eq(&first, &parsed),
            "a template built by hand parses its own source"
        );
        assert!(Arc::ptr_eq(&parsed, &parse_liquid(&fresh).unwrap()));
        let input = RenderInput::sample(t);
        let ceiling = Ceiling {
            max_stacks: None,
            cpu: t.cpu_default,
            mem_mb: t.mem_default_mb,
        };
        assert_eq!(
            render(t, &input, &ceiling).unwrap(),
            render(&fresh, &input, &ceiling).unwrap()
        );
    }
}
