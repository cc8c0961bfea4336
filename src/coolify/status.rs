//! Coolify's service status vocabulary (`Service::getStatusAttribute` + `ContainerStatusAggregator`).
//!
//! Status strings are cached by Coolify and may grow new values, so parsing never fails: anything
//! unrecognised is kept verbatim in `Unknown`.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy,
    /// Some container has no healthcheck (normal for bots).
    Unknown,
    /// A container in its healthcheck start period.
    Starting,
}

impl Health {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "healthy" => Some(Self::Healthy),
            "unhealthy" => Some(Self::Unhealthy),
            "unknown" => Some(Self::Unknown),
            "starting" => Some(Self::Starting),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Unknown => "unknown",
            Self::Starting => "starting",
        }
    }
}

/// A parsed service (or sub-resource) status. `excluded` marks the `:excluded` suffix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ServiceStatus {
    Running {
        health: Health,
        excluded: bool,
    },
    Starting {
        health: Health,
        excluded: bool,
    },
    Degraded {
        health: Health,
        excluded: bool,
    },
    Paused {
        health: Health,
        excluded: bool,
    },
    Restarting {
        health: Health,
        excluded: bool,
    },
    Exited {
        excluded: bool,
    },
    /// Anything not in the known vocabulary, kept as sent.
    Unknown(String),
}

impl ServiceStatus {
    pub fn parse(raw: &str) -> Self {
        let trimmed = raw.trim();
        let (body, excluded) = match trimmed.strip_suffix(":excluded") {
            Some(b) => (b, true),
            None => (trimmed, false),
        };
        let mut parts = body.splitn(2, ':');
        let state = parts.next().unwrap_or_default();
        let health = parts.next();
        if state == "exited" || state == "stopped" {
            return match health {
                None => Self::Exited { excluded },
                Some(_) => Self::Unknown(raw.to_string()),
            };
        }
        let health = match health.map(Health::parse) {
            Some(Some(h)) => h,
            None => Health::Unknown,
            Some(None) => return Self::Unknown(raw.to_string()),
        };
        match state {
            "running" => Self::Running { health, excluded },
            "starting" => Self::Starting { health, excluded },
            "degraded" => Self::Degraded { health, excluded },
            "paused" => Self::Paused { health, excluded },
            "restarting" => Self::Restarting { health, excluded },
            _ => Self::Unknown(raw.to_string()),
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self, Self::Running { .. })
    }

    pub fn is_stopped(&self) -> bool {
        matches!(self, Self::Exited { .. })
    }

    /// A reading that suggests the bot is broken (one reading is not proof: Coolify's cache lags).
    pub fn is_bad(&self) -> bool {
        matches!(
            self,
            Self::Degraded { .. }
                | Self::Restarting { .. }
                | Self::Running {
                    health: Health::Unhealthy,
                    ..
                }
        )
    }

    pub fn is_excluded(&self) -> bool {
        match self {
            Self::Running { excluded, .. }
            | Self::Starting { excluded, .. }
            | Self::Degraded { excluded, .. }
            | Self::Paused { excluded, .. }
            | Self::Restarting { excluded, .. }
            | Self::Exited { excluded } => *excluded,
            Self::Unknown(raw) => raw.ends_with(":excluded"),
        }
    }

    pub fn health(&self) -> Option<Health> {
        match self {
            Self::Running { health, .. }
            | Self::Starting { health, .. }
            | Self::Degraded { health, .. }
            | Self::Paused { health, .. }
            | Self::Restarting { health, .. } => Some(*health),
            Self::Exited { .. } | Self::Unknown(_) => None,
        }
    }
}

impl Default for ServiceStatus {
    fn default() -> Self {
        Self::Exited { excluded: false }
    }
}

impl From<String> for ServiceStatus {
    fn from(s: String) -> Self {
        Self::parse(&s)
    }
}

impl From<ServiceStatus> for String {
    fn from(s: ServiceStatus) -> Self {
        s.to_string()
    }
}

impl fmt::Display for ServiceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (state, health, excluded) = match self {
            Self::Running { health, excluded } => ("running", Some(health), excluded),
            Self::Starting { health, excluded } => ("starting", Some(health), excluded),
            Self::Degraded { health, excluded } => ("degraded", Some(health), excluded),
            Self::Paused { health, excluded } => ("paused", Some(health), excluded),
            Self::Restarting { health, excluded } => ("restarting", Some(health), excluded),
            Self::Exited { excluded } => ("exited", None, excluded),
            Self::Unknown(raw) => return f.write_str(raw),
        };
        f.write_str(state)?;
        if let Some(h) = health {
            write!(f, ":{}", h.as_str())?;
        }
        if *excluded {
            f.write_str(":excluded")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form() {
        use Health::*;
        let cases = [
            (
                "running:healthy",
                ServiceStatus::Running {
                    health: Healthy,
                    excluded: false,
                },
            ),
            (
                "running:unhealthy",
                ServiceStatus::Running {
                    health: Unhealthy,
                    excluded: false,
                },
            ),
            (
                "running:unknown",
                ServiceStatus::Running {
                    health: Unknown,
                    excluded: false,
                },
            ),
            (
                "running:starting",
                ServiceStatus::Running {
                    health: Starting,
                    excluded: false,
                },
            ),
            (
                "starting:unhealthy",
                ServiceStatus::Starting {
                    health: Unhealthy,
                    excluded: false,
                },
            ),
            (
                "starting:unknown",
                ServiceStatus::Starting {
                    health: Unknown,
                    excluded: false,
                },
            ),
            (
                "degraded:unhealthy",
                ServiceStatus::Degraded {
                    health: Unhealthy,
                    excluded: false,
                },
            ),
            (
                "paused:unknown",
                ServiceStatus::Paused {
                    health: Unknown,
                    excluded: false,
                },
            ),
            (
                "restarting:unknown",
                ServiceStatus::Restarting {
                    health: Unknown,
                    excluded: false,
                },
            ),
            ("exited", ServiceStatus::Exited { excluded: false }),
            (
                "running:healthy:excluded",
                ServiceStatus::Running {
                    health: Healthy,
                    excluded: true,
                },
            ),
            ("exited:excluded", ServiceStatus::Exited { excluded: true }),
            (
                "running",
                ServiceStatus::Running {
                    health: Unknown,
                    excluded: false,
                },
            ),
        ];
        for (raw, want) in cases {
            let got = ServiceStatus::parse(raw);
            assert_eq!(got, want, "{raw}");
            if raw != "running" {
                assert_eq!(got.to_string(), raw, "round trip of {raw}");
            }
        }
    }

    #[test]
    fn unknown_strings_are_kept_not_fatal() {
        for raw in [
            "unknown:unknown:excluded",
            "",
            "weird",
            "running:sideways",
            "exited:healthy",
        ] {
            let s = ServiceStatus::parse(raw);
            assert_eq!(s, ServiceStatus::Unknown(raw.to_string()));
            assert_eq!(s.to_string(), raw);
            assert!(!s.is_running() && !s.is_stopped() && !s.is_bad());
        }
        assert!(ServiceStatus::parse("unknown:unknown:excluded").is_excluded());
    }

    #[test]
    fn helpers_classify() {
        assert!(ServiceStatus::parse("running:unknown").is_running());
        assert!(!ServiceStatus::parse("running:unknown").is_bad());
        assert!(ServiceStatus::parse("running:unhealthy").is_bad());
        assert!(ServiceStatus::parse("degraded:unhealthy").is_bad());
        assert!(ServiceStatus::parse("restarting:unknown").is_bad());
        assert!(ServiceStatus::parse("exited").is_stopped());
        assert!(!ServiceStatus::parse("starting:unknown").is_running());
        assert_eq!(ServiceStatus::parse("paused:unknown").health(), Some(Health::Unknown));
    }

    #[test]
    fn serde_uses_the_string_form() {
        let s: ServiceStatus = serde_json::from_str("\"running:healthy\"").unwrap();
        assert!(s.is_running());
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"running:healthy\"");
    }
}
