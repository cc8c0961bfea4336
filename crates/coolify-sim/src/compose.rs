//! What Coolify does with `docker_compose_raw`: strict base64, UTF-8, YAML, a `services` map, one
//! container per compose service (database images become databases), `${VAR}` references.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_norway::Value as Yaml;

/// Images Coolify classifies as a ServiceDatabase (they cannot take a URL).
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
    "valkey",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub healthcheck: bool,
    pub is_database: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EnvRef {
    pub key: String,
    pub default: Option<String>,
    pub required: bool,
}

#[derive(Debug, Clone)]
pub struct Compose {
    pub yaml: String,
    pub containers: Vec<Container>,
    pub env_refs: Vec<EnvRef>,
}

#[derive(Debug, PartialEq)]
pub enum ComposeError {
    NotBase64,
    NotUtf8,
    /// Coolify lets this escape as an HTTP 500.
    InvalidYaml(String),
    NoServices,
    UnsafeServiceName(String),
}

/// PHP's `base64_encode(base64_decode($s, true)) === $s`.
pub fn strict_base64(raw: &str) -> Result<Vec<u8>, ComposeError> {
    let bytes = STANDARD.decode(raw).map_err(|_| ComposeError::NotBase64)?;
    if STANDARD.encode(&bytes) != raw {
        return Err(ComposeError::NotBase64);
    }
    Ok(bytes)
}

pub fn is_database_image(image: &str) -> bool {
    let without_tag = image.split('@').next().unwrap_or(image);
    let last = without_tag.rsplit('/').next().unwrap_or(without_tag);
    let name = last.split(':').next().unwrap_or(last);
    DATABASE_IMAGES
        .iter()
        .any(|db| name == *db || name.starts_with(&format!("{db}-")))
}

pub fn decode(raw: &str) -> Result<Compose, ComposeError> {
    let bytes = strict_base64(raw)?;
    let yaml = String::from_utf8(bytes).map_err(|_| ComposeError::NotUtf8)?;
    parse(&yaml)
}

pub fn parse(yaml: &str) -> Result<Compose, ComposeError> {
    let doc: Yaml = serde_norway::from_str(yaml).map_err(|e| ComposeError::InvalidYaml(e.to_string()))?;
    let Some(services) = doc.get("services").and_then(Yaml::as_mapping) else {
        return Err(ComposeError::NoServices);
    };
    let mut containers = Vec::new();
    for (key, def) in services {
        let name = match key {
            Yaml::String(s) => s.clone(),
            other => serde_norway::to_string(other).unwrap_or_default().trim().to_string(),
        };
        if name.is_empty()
            || name
                .chars()
                .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(ComposeError::UnsafeServiceName(name));
        }
        let image = def.get("image").and_then(Yaml::as_str).unwrap_or_default().to_string();
        containers.push(Container {
            healthcheck: def.get("healthcheck").is_some_and(|h| !h.is_null()),
            is_database: is_database_image(&image),
            name,
            image,
        });
    }
    Ok(Compose {
        yaml: yaml.to_string(),
        containers,
        env_refs: env_refs(yaml),
    })
}

/// `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`, `${VAR?err}`; `$${X}` is an escape.
pub fn env_refs(text: &str) -> Vec<EnvRef> {
    let mut out: Vec<EnvRef> = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'$' && b[i + 1] == b'$' {
            i += 2;
            continue;
        }
        if b[i] == b'$' && b[i + 1] == b'{' {
            let start = i + 2;
            let Some(len) = text[start..].find('}') else { break };
            let inner = &text[start..start + len];
            i = start + len + 1;
            let key_len = inner
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(inner.len());
            let key = &inner[..key_len];
            if key.is_empty() || key.starts_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            let rest = &inner[key_len..];
            let (default, required) = if let Some(d) = rest.strip_prefix(":-").or_else(|| rest.strip_prefix('-')) {
                (Some(d.to_string()), false)
            } else {
                (None, rest.starts_with(":?") || rest.starts_with('?'))
            };
            if !out.iter().any(|e| e.key == key) {
                out.push(EnvRef {
                    key: key.to_string(),
                    default,
                    required,
                });
            }
            continue;
        }
        i += 1;
    }
    out
}

/// A URL as Coolify accepts it: `http(s)://host[:port][/path]`. Returns the host.
pub fn url_host(u: &str) -> Option<String> {
    let parsed = url::Url::parse(u.trim()).ok()?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return None;
    }
    parsed.host_str().filter(|h| !h.is_empty()).map(str::to_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_must_be_strict() {
        let yaml = "services:\n  bot:\n    image: ghcr.io/x/bot:1\n";
        let good = STANDARD.encode(yaml);
        assert!(decode(&good).is_ok());
        let wrapped = format!("{}\n{}", &good[..10], &good[10..]);
        assert_eq!(decode(&wrapped).unwrap_err(), ComposeError::NotBase64);
        assert_eq!(decode(yaml).unwrap_err(), ComposeError::NotBase64);
        assert_eq!(decode(good.trim_end_matches('=')).unwrap_err(), ComposeError::NotBase64);
    }

    #[test]
    fn containers_and_env_refs() {
        let yaml = "services:\n  bot:\n    image: ghcr.io/x/bot:1\n    environment:\n      A: ${TOKEN}\n      B: ${MODE:-fast}\n      C: ${KEY:?needed}\n      D: $${LITERAL}\n    healthcheck:\n      test: [CMD, true]\n  db:\n    image: postgres:16\n";
        let c = parse(yaml).unwrap();
        assert_eq!(c.containers.len(), 2);
        assert!(c.containers[0].healthcheck && !c.containers[0].is_database);
        assert!(c.containers[1].is_database);
        let keys: Vec<_> = c.env_refs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["TOKEN", "MODE", "KEY"]);
        assert_eq!(c.env_refs[1].default.as_deref(), Some("fast"));
        assert!(c.env_refs[2].required);
    }

    #[test]
    fn yaml_errors() {
        assert!(matches!(
            parse("services: [unclosed"),
            Err(ComposeError::InvalidYaml(_))
        ));
        assert_eq!(parse("version: '3'").unwrap_err(), ComposeError::NoServices);
        assert!(matches!(
            parse("services:\n  'a;rm':\n    image: x\n"),
            Err(ComposeError::UnsafeServiceName(_))
        ));
    }

    #[test]
    fn urls() {
        assert_eq!(
            url_host("https://Bot.example.com:8080/x").as_deref(),
            Some("bot.example.com")
        );
        assert_eq!(url_host("ftp://x"), None);
        assert_eq!(url_host("not a url"), None);
    }
}
