//! The `cf-bridge` command line as the operator runs it: a process with nothing from the test's
//! environment but what it is given.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `bin --config <config> ARGS` with `env` only.
pub fn run(bin: &Path, config: &Path, args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run cf-bridge")
}

/// Runs `bin --config <an empty file> ARGS` with `env` only; returns (success, stdout, stderr).
pub fn run_with_env(bin: &Path, args: &[&str], env: &[(String, String)]) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("cf-bridge.toml");
    std::fs::write(&config, "# tests: settings come from CF_BRIDGE__* variables\n").expect("config file");
    let out = run(bin, &config, args, env);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
