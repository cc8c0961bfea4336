//! Strict Coolify v4 simulator (see docs/SIMULATOR.md).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use coolify_sim::{self as sim, SimConfig};

#[derive(Parser, Debug)]
#[command(name = "coolify-sim", about = "Strict Coolify v4 API simulator for tests and demos")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: String,
    /// Accepted bearer token (repeatable).
    #[arg(long = "token", required = true)]
    tokens: Vec<String>,
    /// Save state here after every change and reload it at start.
    #[arg(long)]
    state_file: Option<PathBuf>,
    #[arg(long, default_value_t = 500)]
    start_delay_ms: u64,
    #[arg(long, default_value_t = 0)]
    running_delay_ms: u64,
    #[arg(long, default_value_t = 500)]
    delete_delay_ms: u64,
    /// Requests per minute per token.
    #[arg(long, default_value_t = 200)]
    rate_limit: u32,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let cfg = SimConfig {
        tokens: args.tokens,
        state_file: args.state_file,
        start_delay: Duration::from_millis(args.start_delay_ms),
        running_delay: Duration::from_millis(args.running_delay_ms),
        delete_delay: Duration::from_millis(args.delete_delay_ms),
        rate_limit: args.rate_limit,
    };
    let (addr, server) = sim::bind(cfg, &args.bind, true)?;
    let mut out = std::io::stdout();
    writeln!(out, "coolify-sim listening on http://{addr}")?;
    out.flush()?;
    server.await
}
