//! `cf-bench`: starts PocketBase, coolify-sim and cf-bridge, drives record changes and measures the bridge
//! beside its baselines (see docs/BENCHMARKS.md). A development tool: errors are `anyhow`.

pub mod client;
pub mod hookcost;
pub mod idle;
pub mod latency;
pub mod ping;
pub mod procs;
pub mod replicas;
pub mod report;
pub mod resources;
pub mod run;
pub mod sse;
pub mod stack;
pub mod stats;
pub mod writes;

/// How big a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Figures for docs/BENCHMARKS.md (several minutes, release build).
    Full,
    /// Same shape, smaller: about a few minutes.
    Quick,
    /// Seconds; proves the bench works (tests/bench_smoke.rs).
    Tiny,
}

/// Command-line changes to a mode's sizes, for profiling one figure without a whole run.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub instances: Option<usize>,
    pub pool: Option<usize>,
    pub rates: Option<Vec<u32>>,
    pub latency_only: bool,
    /// Only the fleet setup and the write flood beside a no-hook PocketBase's (section 2's bridge rows).
    pub throughput_only: bool,
    /// Only measure the stream check's ping.
    pub ping_only: bool,
    /// Only measure the project hooks' cost to PocketBase writes (against a PocketBase with no hooks).
    pub hook_cost_only: bool,
    /// Another hooks directory (e.g. an older version) that `hook_cost_only` measures beside the project's.
    pub compare_hooks: Option<std::path::PathBuf>,
    /// Only the Coolify budget run (section 3).
    pub budget_only: bool,
    /// Only the fleet setup and a full resync of it (section 5's resync rows).
    pub resync_only: bool,
    /// Only the fleet setup, the webhook acknowledgement phases and the memory figures (sections 4, 5).
    pub acks_only: bool,
    /// Only 1 replica on SQLite beside 1 and 3 on PostgreSQL (`crate::replicas`).
    pub replicas_only: bool,
    /// Only the idle fleet phase (section 7).
    pub idle_only: bool,
}

#[derive(Debug, Clone)]
pub struct Sizes {
    pub rates: Vec<u32>,
    pub phase_secs: f64,
    pub instances: usize,
    pub pool: usize,
    pub throughput_secs: f64,
    pub budget_secs: u64,
    pub budget_instances: usize,
    pub events_total: usize,
    pub acks: usize,
    /// Webhooks of the paced acknowledgement phase (at `ack_rate` per second).
    pub paced_acks: usize,
    pub ack_rate: u32,
    pub naive_writes: usize,
    pub pings: usize,
    /// Fewest samples of a latency phase (it runs longer than `phase_secs` at low rates to get them).
    pub min_samples: usize,
    /// Writes on each side of the hook cost (project hooks vs no hooks, same collection).
    pub hook_writes: usize,
    /// Rounds of the hook comparison (`--hook-cost-only`): each alternates every setup once.
    pub hook_rounds: usize,
    pub idle_instances: usize,
    pub idle_secs: u64,
}

impl Mode {
    pub fn sizes_with(self, o: &Overrides) -> Sizes {
        let mut s = self.sizes();
        if let Some(n) = o.instances {
            s.instances = n.max(1);
        }
        s.pool = o.pool.unwrap_or(s.pool).clamp(1, s.instances);
        if let Some(r) = o.rates.clone().filter(|r| !r.is_empty()) {
            s.rates = r;
        }
        s
    }

    pub fn sizes(self) -> Sizes {
        match self {
            Mode::Full => Sizes {
                rates: vec![50, 200, 1000],
                phase_secs: 10.0,
                instances: 10_000,
                pool: 2000,
                throughput_secs: 10.0,
                budget_secs: 120,
                budget_instances: 300,
                events_total: 100_000,
                acks: 2000,
                paced_acks: 4000,
                ack_rate: 200,
                naive_writes: 30,
                pings: 2000,
                min_samples: 500,
                hook_writes: 500,
                hook_rounds: 3,
                idle_instances: 10_000,
                idle_secs: 600,
            },
            Mode::Quick => Sizes {
                rates: vec![50, 200, 1000],
                phase_secs: 5.0,
                instances: 1000,
                pool: 1000,
                throughput_secs: 5.0,
                budget_secs: 60,
                budget_instances: 300,
                events_total: 10_000,
                acks: 500,
                paced_acks: 2000,
                ack_rate: 200,
                naive_writes: 10,
                pings: 1000,
                min_samples: 500,
                hook_writes: 500,
                hook_rounds: 2,
                idle_instances: 200,
                idle_secs: 60,
            },
            Mode::Tiny => Sizes {
                rates: vec![20, 50],
                phase_secs: 1.0,
                instances: 20,
                pool: 20,
                throughput_secs: 1.0,
                budget_secs: 4,
                budget_instances: 2,
                events_total: 100,
                acks: 20,
                paced_acks: 40,
                ack_rate: 200,
                naive_writes: 2,
                pings: 20,
                min_samples: 20,
                hook_writes: 20,
                hook_rounds: 1,
                idle_instances: 5,
                idle_secs: 3,
            },
        }
    }
}
