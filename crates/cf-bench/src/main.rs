//! cf-bench: latency, throughput, Coolify budget and resources of cf-bridge beside their baselines.
//! Prints a markdown table on stdout; progress on stderr. See docs/BENCHMARKS.md.

use std::path::PathBuf;

use cf_bench::{Mode, Overrides, run};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "cf-bench",
    about = "Benchmarks cf-bridge against PocketBase and coolify-sim on this machine"
)]
struct Args {
    /// full: the figures in docs/BENCHMARKS.md; quick: smaller; tiny: seconds (smoke test).
    #[arg(long, value_enum, default_value = "full")]
    mode: Mode,
    /// The PocketBase binary (default: scripts/install-pocketbase.sh).
    #[arg(long)]
    pocketbase: Option<PathBuf>,
    /// `--hooksPool` of every PocketBase the bench starts: the JS runtimes it keeps for hook handlers.
    /// Default: the deployment example's (docs/DEPLOY.md); PocketBase's own default is 15.
    #[arg(long, default_value_t = cf_bench::procs::DEPLOYED_HOOKS_POOL, value_parser = clap::value_parser!(u32).range(1..=1024))]
    hooks_pool: u32,
    /// Keep data and logs here instead of a temporary directory.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Fleet size instead of the mode's (for profiling one figure).
    #[arg(long)]
    instances: Option<usize>,
    /// Instances toggled by the latency phases instead of the mode's.
    #[arg(long)]
    pool: Option<usize>,
    /// Latency phase rates instead of the mode's, e.g. `--rates 50,200`.
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<u32>>,
    /// Run the fleet setup and the latency phases only.
    #[arg(long)]
    latency_only: bool,
    /// Run the fleet setup and the write flood (with the bridge, beside a no-hook PocketBase's) only.
    #[arg(long)]
    throughput_only: bool,
    /// Measure the stream check's ping only.
    #[arg(long)]
    ping_only: bool,
    /// Measure the project hooks' cost to PocketBase writes and the floor of its CPU per change only.
    #[arg(long)]
    hook_cost_only: bool,
    /// With --hook-cost-only: also measure this hooks directory (e.g. an older hooks/pb_hooks), alternated
    /// with the project's in the same run.
    #[arg(long)]
    compare_hooks: Option<PathBuf>,
    /// Run the Coolify budget scenario only (`--instances` sets its instance count).
    #[arg(long)]
    budget_only: bool,
    /// Run the fleet setup and a full resync of it only.
    #[arg(long)]
    resync_only: bool,
    /// Run the fleet setup, the webhook acknowledgement phases and the memory figures only.
    #[arg(long)]
    acks_only: bool,
    /// Run 1 replica on SQLite beside 1 and 3 on PostgreSQL only (`--instances` sets the fleet size).
    #[arg(long)]
    replicas_only: bool,
    /// Run the idle fleet phase only (`--instances` sets the fleet size).
    #[arg(long)]
    idle_only: bool,
    /// Also write every figure of the run as JSON to this file (e.g. docs/bench/full.json).
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let overrides = Overrides {
        instances: args.instances,
        pool: args.pool,
        rates: args.rates,
        latency_only: args.latency_only,
        throughput_only: args.throughput_only,
        ping_only: args.ping_only,
        hook_cost_only: args.hook_cost_only,
        compare_hooks: args.compare_hooks,
        budget_only: args.budget_only,
        resync_only: args.resync_only,
        acks_only: args.acks_only,
        replicas_only: args.replicas_only,
        idle_only: args.idle_only,
    };
    let started = chrono::Utc::now();
    match run::run(args.mode, overrides, (args.pocketbase, args.hooks_pool), args.work_dir).await {
        Ok(report) => {
            println!("{}", report.render());
            if let Some(path) = args.json {
                let context = serde_json::json!({
                    "command": std::env::args().collect::<Vec<_>>().join(" "),
                    "mode": format!("{:?}", args.mode).to_lowercase(),
                    "build": if cfg!(debug_assertions) { "debug" } else { "release" },
                    "machine": run::machine(),
                    "started_at": started.to_rfc3339(),
                    "finished_at": chrono::Utc::now().to_rfc3339(),
                });
                let text = serde_json::to_string_pretty(&report.json(context)).unwrap_or_default();
                if let Err(e) = std::fs::write(&path, text + "\n") {
                    eprintln!("cf-bench: cannot write {}: {e}", path.display());
                    return std::process::ExitCode::FAILURE;
                }
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cf-bench failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
