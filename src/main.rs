//! cf-bridge command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use secrecy::ExposeSecret;

use cf_bridge::app::App;
use cf_bridge::config::{self, Settings};

#[derive(Parser)]
#[command(name = "cf-bridge", version, about = "Keeps Coolify in step with PocketBase")]
struct Cli {
    /// Configuration file (TOML); CF_BRIDGE__SECTION__KEY environment variables override it, and a secret
    /// key may come from the file named by CF_BRIDGE__SECTION__KEY_FILE.
    #[arg(long, global = true, default_value = "cf-bridge.toml", env = "CF_BRIDGE_CONFIG")]
    config: PathBuf,
    /// Base URL of the running bridge's admin API for events, replay, resync and rotate-router-key
    /// (e.g. https://bridge.internal:8088); default: http://<admin.bind>.
    // Checked when a command uses it (`admin_url`), so a bad value never stops `serve` and is not echoed.
    #[arg(long, global = true, env = "CF_BRIDGE_ADMIN_URL", value_name = "URL")]
    admin_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge: event sources, reconciler, webhook ingest, admin API.
    Serve,
    /// Validate the configuration and print it with every secret redacted, each key with where its
    /// value came from (default, the file, an environment variable, a *_FILE variable's file).
    CheckConfig,
    /// Print a new webhook secret (whsec_...) whose key bytes are printable ASCII.
    Secret,
    /// Check a live setup (PocketBase reachable, superuser, schema, hooks and their webhook secret;
    /// Coolify token and server; templates published) and say what to fix. Changes nothing. Exit 0 when
    /// every check passes, 1 otherwise.
    Doctor,
    /// Probe the bridge's /readyz on admin.bind (a wildcard address is probed on loopback): exit 0 when
    /// ready, 1 otherwise. The container's HEALTHCHECK (the image has no curl).
    Healthcheck {
        /// Probe this URL instead of the one admin.bind gives.
        #[arg(long)]
        url: Option<String>,
    },
    /// Render or publish the bot templates.
    #[command(subcommand)]
    Templates(TemplatesCommand),
    /// List journal events (through the admin API of a running bridge).
    #[command(subcommand)]
    Events(EventsCommand),
    /// Replay events or records (through the admin API of a running bridge).
    Replay(ReplayArgs),
    /// Ask a running bridge for a full resync.
    Resync,
    /// Give one instance a new CLOUDFREEDOM_API_KEY (through the admin API of a running bridge); the
    /// bridge pushes it to Coolify and restarts that stack only.
    RotateRouterKey {
        /// The bot_instances record id.
        id: String,
    },
    /// Restore or purge a deleted instance within its retention (through the admin API of a running bridge).
    #[command(subcommand)]
    Instances(InstancesCommand),
    /// Manage the bridge's secret store and keys.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Inspect the journal file (read-only; the bridge may be running).
    #[command(subcommand)]
    Journal(JournalCommand),
}

#[derive(Subcommand)]
enum JournalCommand {
    /// Rows per table and state, and the sizes of the journal file and its write-ahead log.
    Stats,
}

#[derive(Subcommand)]
enum InstancesCommand {
    /// Bring a deleted instance back with its service and data (only one marked with
    /// deletion_requested_at, within its retention).
    Restore {
        /// The bot_instances record id.
        id: String,
    },
    /// Destroy a deleted instance's service and volumes at once.
    Purge {
        /// The bot_instances record id.
        id: String,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Re-encrypt every store entry under secrets.key (entries written under one of
    /// secrets.previous_keys); run it with the bridge stopped. A starting bridge does the same.
    Rekey,
    /// Print the key routers use to verify CLOUDFREEDOM_API_KEYs (hex), derived from secrets.key.
    RouterVerifyKey,
}

#[derive(Subcommand)]
enum TemplatesCommand {
    /// Print the compose a template renders for an instance record (JSON file).
    Render {
        name: String,
        #[arg(long)]
        instance: PathBuf,
        /// Plan tier whose ceiling applies.
        #[arg(long, default_value = "business")]
        plan: String,
    },
    /// Upsert bot_templates in PocketBase from the templates directory; mark removed ones inactive.
    Sync,
    /// Upgrade a template's instances in batches (through the admin API of a running bridge); waits for
    /// the end and reports, unless --detach.
    Rollout {
        name: String,
        /// The version to move to (default: the newest, the templates directory's).
        #[arg(long)]
        to: Option<String>,
        /// Instances per batch (1-20; default 5).
        #[arg(long)]
        batch: Option<usize>,
        /// Only this tenant's instances (its slug).
        #[arg(long)]
        tenant: Option<String>,
        /// Print the rollout's id and return at once.
        #[arg(long)]
        detach: bool,
    },
    /// Return the instances the template's latest rollout moved to their previous version.
    Rollback {
        name: String,
        #[arg(long)]
        detach: bool,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        record: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct ReplayArgs {
    /// A record, as bot_instances/ID or tenants/ID.
    #[arg(long)]
    record: Option<String>,
    /// Every failed or dead job.
    #[arg(long)]
    failed: bool,
    /// Every event received since this time (RFC 3339 or unix ms).
    #[arg(long)]
    since: Option<String>,
    /// Event ids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    event: Option<Vec<i64>>,
}

fn load(cli: &Cli) -> Result<Settings, config::ConfigError> {
    let explicit = cli.config.as_path() != std::path::Path::new("cf-bridge.toml");
    config::load(&cli.config, explicit)
}

fn main() -> ExitCode {
    cf_bridge::memory::limit_arenas();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Threads for blocking work: the journal's reads (one connection, so they run one at a time anyway) and
/// DNS lookups. Tokio's default of 512 let every job waiting for the reader hold a thread of its own (16
/// seen under load), each with its own malloc arena: memory, no throughput.
const BLOCKING_THREADS: usize = 4;

/// Async worker threads, unless `TOKIO_WORKER_THREADS` says otherwise. The bridge waits on PocketBase,
/// Coolify and its journal (whose writer, checkpointer and HTTP servers have threads of their own); its
/// async work per event is a fraction of a millisecond. A worker per core woke the idle one for each task
/// spawned or woken, to find nothing to steal: in a flood of realtime frames one worker spent 8 % less CPU
/// per frame, and PocketBase beside it took 5 % more writes (docs/BENCHMARKS.md, "Thirty-first session").
const WORKER_THREADS: usize = 1;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(WORKER_THREADS);
    }
    builder
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match &cli.command {
        Command::CheckConfig => match load(&cli) {
            Ok(settings) => {
                if let Err(e) = cf_bridge::cli::check_templates(&settings.reconcile.templates_dir) {
                    eprintln!("error: reconcile.templates_dir: {e:#}");
                    return Ok(ExitCode::from(2));
                }
                let env: Vec<(String, String)> = std::env::vars().collect();
                let origins = config::origins(&cli.config, &env);
                println!(
                    "# configuration is valid (each key says where its value came from)\n{}",
                    settings.with_origins(&origins)
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::from(2))
            }
        },
        Command::Doctor => {
            let settings = match load(&cli) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let report = runtime()?.block_on(cf_bridge::doctor::run(&settings));
            println!("{report}");
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Healthcheck { url } => {
            let url = match url {
                Some(u) => u.clone(),
                None => match load(&cli) {
                    Ok(settings) => cf_bridge::cli::readyz_url(settings.admin.bind),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return Ok(ExitCode::FAILURE);
                    }
                },
            };
            match runtime()?.block_on(cf_bridge::cli::healthcheck(&url)) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(reason) => {
                    eprintln!("not ready: {reason}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Secret => {
            println!("{}", cf_bridge::webhook::generate_secret());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => {
            let settings = match load(&cli) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            // Before the runtime starts its threads, which take the main thread's priority.
            let priority = cf_bridge::priority::lower_to(settings.process.nice);
            runtime()?.block_on(async {
                let exporter = cf_bridge::otel::Exporter::new(&settings.telemetry)?;
                cf_bridge::telemetry::init(settings.log.format, &settings.log.level, exporter.as_ref());
                match priority {
                    Ok(Some(nice)) => tracing::info!(nice, "CPU priority (nice value)"),
                    Ok(None) => tracing::info!("process.nice has no effect on this system"),
                    Err(e) => tracing::warn!(
                        error = %e,
                        nice = settings.process.nice,
                        "cannot lower the CPU priority; running as started"
                    ),
                }
                let app = App::build(settings).await?;
                let ran = app.run(cf_bridge::app::shutdown_signal()).await;
                if let Some(exporter) = exporter {
                    exporter.shutdown().await;
                }
                ran?;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Templates(TemplatesCommand::Render { name, instance, plan }) => {
            let settings = load(&cli).ok();
            let dir = settings
                .as_ref()
                .map(|s| s.reconcile.templates_dir.clone())
                .unwrap_or_else(|| PathBuf::from("templates"));
            print!(
                "{}",
                cf_bridge::cli::render_template(&dir, name, instance, plan, settings.as_ref())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Templates(TemplatesCommand::Sync) => {
            let settings = load(&cli)?;
            let report = runtime()?.block_on(cf_bridge::cli::sync_templates(&settings))?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Templates(TemplatesCommand::Rollout {
            name,
            to,
            batch,
            tenant,
            detach,
        }) => {
            let settings = load(&cli)?;
            let body = serde_json::json!({"to": to, "batch": batch, "tenant": tenant});
            let path = cf_bridge::cli::template_path(name, "rollout")?;
            rollout_command(&cli, &settings, &path, Some(body), *detach)
        }
        Command::Templates(TemplatesCommand::Rollback { name, detach }) => {
            let settings = load(&cli)?;
            let path = cf_bridge::cli::template_path(name, "rollback")?;
            rollout_command(&cli, &settings, &path, None, *detach)
        }
        Command::Events(EventsCommand::List {
            status,
            source,
            record,
            since,
            limit,
        }) => {
            let settings = load(&cli)?;
            let mut query = vec![("limit", limit.to_string())];
            for (k, v) in [
                ("status", status),
                ("source", source),
                ("record", record),
                ("since", since),
            ] {
                if let Some(v) = v {
                    query.push((k, v.clone()));
                }
            }
            let body = admin_request(&cli, &settings, reqwest::Method::GET, "/admin/events", &query, None)?;
            println!("{}", serde_json::to_string_pretty(&body)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay(args) => {
            let settings = load(&cli)?;
            let body = if let Some(r) = &args.record {
                serde_json::json!({"record": r})
            } else if let Some(s) = &args.since {
                serde_json::json!({"since": s})
            } else if let Some(ids) = &args.event {
                serde_json::json!({"event_ids": ids})
            } else {
                serde_json::json!({"failed": args.failed})
            };
            let out = admin_request(&cli, &settings, reqwest::Method::POST, "/admin/replay", &[], Some(body))?;
            println!("enqueued {} job(s)", out["enqueued"]);
            Ok(ExitCode::SUCCESS)
        }
        Command::RotateRouterKey { id } => {
            let settings = load(&cli)?;
            let path = format!("/admin/instances/{id}/rotate-router-key");
            let out = admin_request(&cli, &settings, reqwest::Method::POST, &path, &[], None)?;
            println!(
                "router key of {id} rotated: new key id {}; the stack gets it on its next reconcile",
                out["router_key_id"].as_str().unwrap_or("?")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Instances(command) => {
            let settings = load(&cli)?;
            let (id, verb, done) = match &command {
                InstancesCommand::Restore { id } => (id, "restore", "restoring: its job brings it back"),
                InstancesCommand::Purge { id } => (id, "purge", "purging: its job destroys it"),
            };
            let path = format!("/admin/instances/{id}/{verb}");
            admin_request(&cli, &settings, reqwest::Method::POST, &path, &[], None)?;
            println!("{id}: {done}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Secrets(SecretsCommand::Rekey) => {
            let settings = load(&cli)?;
            let (store, ids) = runtime()?.block_on(async {
                // With journal.url, the store every replica shares in the journal's database.
                let journal = match settings.journal.postgres() {
                    Some(cfg) => Some(cf_bridge::journal::Journal::open_postgres(&cfg?).await?),
                    None => None,
                };
                let pg = journal.as_ref().and_then(|j| j.pg());
                let store = cf_bridge::app::open_secret_store(&settings, pg).await?;
                let ids = store.instance_ids().await?;
                anyhow::Ok((store, ids))
            })?;
            println!(
                "{}: {} entries, {} re-encrypted with secrets.key",
                store.location(),
                ids.len(),
                store.rekeyed()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Secrets(SecretsCommand::RouterVerifyKey) => {
            let settings = load(&cli)?;
            let key = settings.secrets.key_bytes();
            println!(
                "{}",
                hex::encode(cf_bridge::secrets::router_verify_key(&key).expose_secret())
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Journal(JournalCommand::Stats) => {
            let settings = load(&cli)?;
            let path = &settings.journal.path;
            let (shown, stats) = runtime()?.block_on(async {
                // With journal.url, the journal several replicas share on PostgreSQL.
                if let Some(cfg) = settings.journal.postgres() {
                    let cfg = cfg?;
                    let journal = cf_bridge::journal::Journal::open_postgres(&cfg).await?;
                    return anyhow::Ok((cfg.redacted(), journal.stats().await?));
                }
                let opts = cf_bridge::journal::JournalOptions {
                    read_only: true,
                    ..Default::default()
                };
                let journal = cf_bridge::journal::Journal::open_with(path, opts)?;
                anyhow::Ok((path.display().to_string(), journal.stats().await?))
            })?;
            println!("{shown}\n{stats}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Resync => {
            let settings = load(&cli)?;
            let out = admin_request(&cli, &settings, reqwest::Method::POST, "/admin/resync", &[], None)?;
            println!("{}", out["status"].as_str().unwrap_or("requested"));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Starts a rollout or rollback at `path`; unless `detach`, follows it to its end. Fails when it failed.
fn rollout_command(
    cli: &Cli,
    settings: &Settings,
    path: &str,
    body: Option<serde_json::Value>,
    detach: bool,
) -> anyhow::Result<ExitCode> {
    let url = admin_url(cli)?;
    runtime()?.block_on(async {
        let mut r = admin_call(url.as_ref(), settings, reqwest::Method::POST, path, &[], body).await?;
        println!("rollout {} started", r["id"]);
        while !detach && r["state"] == "running" {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            let at = format!("/admin/rollouts/{}", r["id"]);
            r = admin_call(url.as_ref(), settings, reqwest::Method::GET, &at, &[], None).await?;
        }
        println!("{}", cf_bridge::cli::rollout_report(&r));
        Ok(if r["state"] == "failed" {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })
}

/// One admin API call from a command: the `--admin-url` given, or `admin.bind` of `settings`.
fn admin_request(
    cli: &Cli,
    settings: &Settings,
    method: reqwest::Method,
    path: &str,
    query: &[(&str, String)],
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let url = admin_url(cli)?;
    runtime()?.block_on(admin_call(url.as_ref(), settings, method, path, query, body))
}

/// The `--admin-url` given, checked.
fn admin_url(cli: &Cli) -> anyhow::Result<Option<url::Url>> {
    cli.admin_url
        .as_deref()
        .map(cf_bridge::cli::parse_admin_url)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--admin-url (or CF_BRIDGE_ADMIN_URL): {e}"))
}

/// Calls the admin API of the bridge at `admin_url` (default: `admin.bind` of `settings`) with the admin
/// token of `settings`.
async fn admin_call(
    admin_url: Option<&url::Url>,
    settings: &Settings,
    method: reqwest::Method,
    path: &str,
    query: &[(&str, String)],
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let url = match admin_url {
        Some(base) => format!("{}{path}", base.as_str().trim_end_matches('/')),
        None => format!("http://{}{path}", settings.admin.bind),
    };
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let mut req = client
        .request(method, &url)
        .bearer_auth(settings.admin.token.expose_secret())
        .query(query);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("calling {url}: is the bridge running?"))?;
    let status = resp.status();
    let value: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        // The admin API answers errors as RFC 9457 problem documents.
        let msg = value["detail"].as_str().unwrap_or("no detail");
        anyhow::bail!("{path} answered {status}: {msg}");
    }
    Ok(value)
}
