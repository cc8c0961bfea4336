//! Typed Coolify errors, parsed from the many body shapes Coolify sends.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConflict {
    pub domain: String,
    pub resource_name: String,
    pub resource_uuid: Option<String>,
    pub resource_type: String,
    pub message: String,
}

impl fmt::Display for DomainConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "domain {} is already used by {} {}",
            self.domain, self.resource_type, self.resource_name
        )?;
        if let Some(uuid) = &self.resource_uuid {
            write!(f, " (uuid {uuid})")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CoolifyError {
    #[error("Coolify: not found: {message}")]
    NotFound { message: String },
    #[error(
        "Coolify rejected the API token (401): check that it is valid, not expired, and sent whole including its id| prefix"
    )]
    Unauthorized,
    #[error(
        "Coolify refused the request (403): {message}; check the token's abilities (read, write, deploy), the API toggle and the IP allowlist"
    )]
    Forbidden { message: String },
    #[error("Coolify rejected the request (400): {message}")]
    BadRequest { message: String },
    #[error("Coolify validation failed: {message}{}", format_errors(errors))]
    Validation {
        message: String,
        errors: BTreeMap<String, Vec<String>>,
    },
    #[error("Coolify conflict: {}", format_conflict(message, conflicts))]
    Conflict {
        message: String,
        conflicts: Vec<DomainConflict>,
    },
    #[error(
        "Coolify project still has resources, so it cannot be deleted yet (service deletions are asynchronous: retry later)"
    )]
    HasResources,
    #[error("Coolify rate limit hit (429){}", retry_after.map(|d| format!(", retry after {} s", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    #[error("Coolify server error {status}: {message}")]
    Server { status: u16, message: String },
    #[error("Coolify unreachable or response lost: {0}")]
    Transport(String),
    #[error("unexpected Coolify response: {0}")]
    BadResponse(String),
    /// An answer larger than the client accepts for that endpoint; nothing of it was kept.
    #[error("Coolify's answer to {endpoint} is larger than {limit}; refused")]
    TooLarge { endpoint: String, limit: String },
    #[error("invalid input for Coolify: {0}")]
    InvalidInput(String),
    #[error("timed out: {0}")]
    Timeout(String),
}

fn format_errors(errors: &BTreeMap<String, Vec<String>>) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = errors.iter().map(|(k, v)| format!("{k}: {}", v.join("; "))).collect();
    format!(" ({})", parts.join(", "))
}

fn format_conflict(message: &str, conflicts: &[DomainConflict]) -> String {
    if conflicts.is_empty() {
        return message.to_string();
    }
    conflicts.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

fn message_of(body: &Value, raw: &str) -> String {
    match body.get("message").and_then(Value::as_str) {
        Some(m) => m.to_string(),
        None => match body.get("error").and_then(Value::as_str) {
            Some(e) => e.to_string(),
            None => raw.chars().take(300).collect(),
        },
    }
}

/// `errors` is a map of string or list values, or a plain list (kept under "_").
pub fn parse_validation_errors(v: Option<&Value>) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let as_strings = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string).unwrap_or_else(|| i.to_string()))
                .collect(),
            Value::Null => Vec::new(),
            other => vec![other.to_string()],
        }
    };
    match v {
        Some(Value::Object(map)) => {
            for (k, val) in map {
                out.insert(k.clone(), as_strings(val));
            }
        }
        Some(other @ (Value::Array(_) | Value::String(_))) => {
            out.insert("_".to_string(), as_strings(other));
        }
        _ => {}
    }
    out
}

fn parse_conflicts(v: Option<&Value>) -> Vec<DomainConflict> {
    let s = |c: &Value, k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    v.and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|c| DomainConflict {
                    domain: s(c, "domain"),
                    resource_name: s(c, "resource_name"),
                    resource_uuid: c.get("resource_uuid").and_then(Value::as_str).map(str::to_string),
                    resource_type: s(c, "resource_type"),
                    message: s(c, "message"),
                })
                .collect()
        })
        .unwrap_or_default()
}

impl CoolifyError {
    /// Maps a non-2xx response to an error. `retry_after` comes from the header.
    pub fn from_response(status: u16, raw: &str, retry_after: Option<Duration>) -> Self {
        let body: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
        let message = message_of(&body, raw);
        match status {
            400 if message.contains("has resources") => Self::HasResources,
            400 => Self::BadRequest { message },
            401 => Self::Unauthorized,
            403 => Self::Forbidden { message },
            404 => Self::NotFound { message },
            409 => Self::Conflict {
                message,
                conflicts: parse_conflicts(body.get("conflicts")),
            },
            422 => Self::Validation {
                message,
                errors: parse_validation_errors(body.get("errors")),
            },
            429 => Self::RateLimited { retry_after },
            500..=599 => Self::Server { status, message },
            _ => Self::BadResponse(format!("status {status}: {message}")),
        }
    }

    /// True when the outcome of the call is unknown (the change may have been applied).
    pub fn is_ambiguous(&self) -> bool {
        // A create whose (successful) answer was too large to read may well have created something.
        matches!(self, Self::Transport(_) | Self::Server { .. } | Self::TooLarge { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors_in_every_shape() {
        let e = CoolifyError::from_response(
            422,
            r#"{"message":"Validation failed.","errors":{"docker_compose_raw":"The docker_compose_raw should be base64 encoded.","foo":["This field is not allowed."]}}"#,
            None,
        );
        let CoolifyError::Validation { errors, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(
            errors["docker_compose_raw"],
            vec!["The docker_compose_raw should be base64 encoded."]
        );
        assert_eq!(errors["foo"], vec!["This field is not allowed."]);
        assert!(e.to_string().contains("foo: This field is not allowed."));

        let e = CoolifyError::from_response(
            422,
            r#"{"message":"Validation failed.","errors":["Invalid URL: x"]}"#,
            None,
        );
        let CoolifyError::Validation { errors, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(errors["_"], vec!["Invalid URL: x"]);

        let e = CoolifyError::from_response(
            422,
            r#"{"message":"You need to provide at least one of environment_name or environment_uuid."}"#,
            None,
        );
        assert!(e.to_string().contains("environment_name"));
    }

    #[test]
    fn conflict_display_is_actionable() {
        let e = CoolifyError::from_response(
            409,
            r#"{"message":"Domain conflicts detected.","conflicts":[{"domain":"bot.example.com","resource_name":"cf-abc","resource_uuid":"u1","resource_type":"service","message":"m"}]}"#,
            None,
        );
        assert_eq!(
            e.to_string(),
            "Coolify conflict: domain bot.example.com is already used by service cf-abc (uuid u1)"
        );
    }

    #[test]
    fn statuses_map_to_variants() {
        assert!(matches!(
            CoolifyError::from_response(
                400,
                r#"{"message":"Project has resources, so it cannot be deleted."}"#,
                None
            ),
            CoolifyError::HasResources
        ));
        assert!(matches!(
            CoolifyError::from_response(401, "{}", None),
            CoolifyError::Unauthorized
        ));
        assert!(matches!(
            CoolifyError::from_response(404, r#"{"message":"Service not found."}"#, None),
            CoolifyError::NotFound { .. }
        ));
        assert!(matches!(
            CoolifyError::from_response(503, "<html>", None),
            CoolifyError::Server { status: 503, .. }
        ));
        assert!(matches!(
            CoolifyError::from_response(429, "", Some(Duration::from_secs(3))),
            CoolifyError::RateLimited { retry_after: Some(_) }
        ));
        assert!(matches!(
            CoolifyError::from_response(405, "{}", None),
            CoolifyError::BadResponse(_)
        ));
    }
}
