//! Plan quotas: how many stacks a tenant may run and how much CPU and memory each may get.
//!
//! Pure functions over the plan table of DESIGN.md §1. Policy for CPU and memory above the ceiling:
//! - an **explicit** request (the instance's `cpu_limit` / `mem_limit` set above zero) that exceeds the
//!   plan's ceiling is **refused**: the tenant asked for something the plan does not include, and silently
//!   handing out less would surface later as an unexplained OOM kill or throttling;
//! - a **template default** (no explicit request) above the ceiling is **clamped** to the ceiling: the tenant
//!   asked for nothing specific, so the most the plan allows is the best answer.
//!
//! The stack count is a hard limit. Which instances count toward it is the reconciler's decision: the
//! first N by creation order.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A tenant's plan, as PocketBase's `plan_tier` select spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanTier {
    Starter,
    Team,
    Business,
    Sovereign,
}

impl PlanTier {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanTier::Starter => "starter",
            PlanTier::Team => "team",
            PlanTier::Business => "business",
            PlanTier::Sovereign => "sovereign",
        }
    }
}

impl fmt::Display for PlanTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PlanTier {
    type Err = QuotaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "starter" => Ok(PlanTier::Starter),
            "team" => Ok(PlanTier::Team),
            "business" => Ok(PlanTier::Business),
            "sovereign" => Ok(PlanTier::Sovereign),
            _ => Err(QuotaError::UnknownPlan(s.chars().take(64).collect())),
        }
    }
}

/// What one stack of a tenant may use. `max_stacks: None` means unlimited.
#[derive(Debug, Clone, PartialEq)]
pub struct Ceiling {
    pub max_stacks: Option<u32>,
    pub cpu: f64,
    pub mem_mb: u32,
}

/// A template's own CPU and memory defaults, used when the instance requests nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TemplateDefaults {
    pub cpu: f64,
    pub mem_mb: u32,
}

/// What a stack is actually given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Granted {
    pub cpu: f64,
    pub mem_mb: u32,
}

#[derive(Debug, Clone, PartialEq, Error)]
pub enum QuotaError {
    #[error("unknown plan tier {0:?} (expected starter, team, business or sovereign)")]
    UnknownPlan(String),
    #[error(
        "quota exceeded: plan {plan} allows {limit} {}{}",
        if *.limit == 1 { "stack" } else { "stacks" },
        if *.overridden { " (tenant max_stacks override)" } else { "" }
    )]
    Stacks {
        plan: PlanTier,
        limit: u32,
        overridden: bool,
    },
    #[error(
        "quota exceeded: requested {requested} CPU but plan {plan} allows at most {allowed} CPU per stack \
         (requests above the plan are refused, not clamped; lower cpu_limit or upgrade the plan)"
    )]
    Cpu {
        plan: PlanTier,
        requested: f64,
        allowed: f64,
    },
    #[error(
        "quota exceeded: requested {requested} MB memory but plan {plan} allows at most {allowed} MB per stack \
         (requests above the plan are refused, not clamped; lower mem_limit or upgrade the plan)"
    )]
    Memory {
        plan: PlanTier,
        requested: u32,
        allowed: u32,
    },
    #[error("invalid cpu_limit {0}: must be a finite number >= 0")]
    InvalidCpu(f64),
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

/// The ceiling for a plan. `max_stacks_override` > 0 (the tenant's `max_stacks`) replaces the plan's stack
/// count; `sovereign` carries the operator-configured ceilings for the sovereign plan.
pub fn ceiling(plan: PlanTier, max_stacks_override: u32, sovereign: &Ceiling) -> Ceiling {
    let base = match plan {
        PlanTier::Starter => Ceiling {
            max_stacks: Some(2),
            cpu: 0.25,
            mem_mb: 256,
        },
        PlanTier::Team => Ceiling {
            max_stacks: Some(10),
            cpu: 0.5,
            mem_mb: 512,
        },
        PlanTier::Business => Ceiling {
            max_stacks: Some(25),
            cpu: 1.0,
            mem_mb: 1024,
        },
        PlanTier::Sovereign => sovereign.clone(),
    };
    if max_stacks_override > 0 {
        Ceiling {
            max_stacks: Some(max_stacks_override),
            ..base
        }
    } else {
        base
    }
}

/// Admit one stack: refuses when the tenant's other stacks already fill the plan, refuses explicit
/// requests above the ceiling, clamps template defaults to it.
pub fn check(
    plan: PlanTier,
    ceiling: &Ceiling,
    requested_cpu: f64,
    requested_mem_mb: u32,
    defaults: TemplateDefaults,
    stacks_in_use_by_others: u32,
) -> Result<Granted, QuotaError> {
    if let Some(limit) = ceiling.max_stacks
        && stacks_in_use_by_others >= limit
    {
        // Sovereign limits are configured per deployment, so there is no plan figure to differ from.
        let overridden = plan_stack_count(plan).is_some_and(|n| n != limit);
        return Err(QuotaError::Stacks {
            plan,
            limit,
            overridden,
        });
    }
    if !requested_cpu.is_finite() || requested_cpu < 0.0 {
        return Err(QuotaError::InvalidCpu(requested_cpu));
    }
    if !defaults.cpu.is_finite() || defaults.cpu <= 0.0 || defaults.mem_mb == 0 {
        return Err(QuotaError::Invalid {
            what: "template defaults",
            detail: format!(
                "cpu {} and memory {} MB must both be above zero",
                defaults.cpu, defaults.mem_mb
            ),
        });
    }
    let cpu = if requested_cpu > 0.0 {
        if requested_cpu > ceiling.cpu + 1e-9 {
            return Err(QuotaError::Cpu {
                plan,
                requested: requested_cpu,
                allowed: ceiling.cpu,
            });
        }
        requested_cpu
    } else {
        defaults.cpu.min(ceiling.cpu)
    };
    let mem_mb = if requested_mem_mb > 0 {
        if requested_mem_mb > ceiling.mem_mb {
            return Err(QuotaError::Memory {
                plan,
                requested: requested_mem_mb,
                allowed: ceiling.mem_mb,
            });
        }
        requested_mem_mb
    } else {
        defaults.mem_mb.min(ceiling.mem_mb)
    };
    Ok(Granted { cpu, mem_mb })
}

fn plan_stack_count(plan: PlanTier) -> Option<u32> {
    match plan {
        PlanTier::Starter => Some(2),
        PlanTier::Team => Some(10),
        PlanTier::Business => Some(25),
        PlanTier::Sovereign => None,
    }
}
