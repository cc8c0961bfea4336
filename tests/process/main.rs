//! cf-bridge's tests where a process is the point: the bridge killed with -9 or stopped with SIGTERM,
//! its exit on bad credentials, the CLI, a journal written by a killed process, the reliability suite
//! (crashes, restarts, outages), hostile input checked for panics in the bridge's own output, a bridge
//! started again under another key, and peak memory measured in a process of its own.

mod badinput_config;
mod badinput_records;
mod cli_templates;
mod container_runtime;
mod demo_script;
mod e2e_crash;
mod harness;
mod intake_crash;
mod journal_durability;
mod lifecycle_retention_crash;
mod lifecycle_suspend_crash;
mod memory_release;
mod ops_priority;
mod ops_shutdown;
mod postgres;
mod reliability;
mod secrets_canary;
mod security_bodies;
mod security_config;
mod security_keys;

/// The cf-bridge binary under test.
fn bridge_bin() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_cf-bridge"))
}
