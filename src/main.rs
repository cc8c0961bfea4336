//! cf-bridge command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cf-bridge", version, about = "Keeps Coolify in step with PocketBase")]
struct Cli {
    /// Configuration file (TOML); CF_BRIDGE__SECTION__KEY environment variables override it.
    #[arg(long, global = true, default_value = "cf-bridge.toml", env = "CF_BRIDGE_CONFIG")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and print it with every secret redacted.
    CheckConfig,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let explicit = cli.config != PathBuf::from("cf-bridge.toml");
    match cli.command {
        Command::CheckConfig => match cf_bridge::config::load(&cli.config, explicit) {
            Ok(settings) => {
                println!("# configuration is valid\n{settings}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
    }
}
