//! cf-bridge's tests that need no process boundary: the library's parts against real PocketBase and
//! coolify-sim, and the whole bridge in the test process (cf-testkit's World). Tests where a process is
//! the point (kill -9, SIGTERM, the CLI, crashes) are in tests/process.

mod admin_api;
mod admin_openapi;
mod admin_problems;
mod badinput_webhook;
mod cli_admin_url;
mod coolify_client;
mod coolify_contract;
mod doctor;
mod e2e_reconcile;
mod footprint_coolify;
mod footprint_fleet;
mod footprint_idle;
mod footprint_status;
mod footprint_webhook;
mod footprint_writes;
mod frames_out_of_order;
mod health_poller;
mod in_process;
mod intake_default;
mod intake_e2e;
mod intake_hooks;
mod intake_realtime;
mod intake_support;
mod journal_admin;
mod journal_basic;
mod journal_bench;
mod journal_deletions;
mod journal_echo;
mod journal_replicas;
mod journal_retention;
mod journal_state;
mod lifecycle_actor;
mod lifecycle_domains;
mod lifecycle_midjob;
mod lifecycle_retention;
mod lifecycle_settled;
mod lifecycle_suspend;
mod lifecycle_waiting;
mod metrics_bind;
mod metrics_exposition;
mod otel_export;
mod pocketbase_batch;
mod pocketbase_client;
mod pocketbase_schema;
mod postgres;
mod queue_dispatch;
mod quota_e2e;
mod quota_plans;
mod realtime_stream_check;
mod reliability_deploy_logs;
mod secrets_e2e;
mod secrets_store;
mod security_errors;
mod security_fingerprint;
mod security_incarnation;
mod security_keys;
mod security_readyz;
mod security_session;
mod startup_without_dependencies;
mod status_board;
mod templates_config_collision;
mod templates_golden;
mod templates_hostile;
mod templates_load;
mod templates_rollout;
mod templates_sim;
mod templates_validate;
mod ui_operator_page;
mod ui_pages;
mod ui_stream;
mod webhook_ingest;

/// The cf-bridge binary, for the tests that run its CLI against an in-process bridge.
fn bridge_bin() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_cf-bridge"))
}
