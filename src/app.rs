//! Wiring: start the sources, the workers and the HTTP server; one cancellation token for shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use secrecy::ExposeSecret;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{PocketBaseAuth, Settings};
use crate::coolify::{CoolifyClient, CoolifyConfig};
use crate::events::EventSink;
use crate::http;
use crate::http::auth::{AdminToken, PageOrigin, Sessions};
use crate::http::health::Readiness;
use crate::journal::Journal;
use crate::pocketbase::realtime::{self, RealtimeConfig};
use crate::pocketbase::{PbAuth, PbClient};
use crate::queue::{Dispatcher, QueueConfig};
use crate::quota::Ceiling;
use crate::reconcile::Reconciler;
use crate::reconcile::context::{Context, ReconcileSettings, StatusBoard};
use crate::reconcile::health::HealthPoller;
use crate::reconcile::orphans::OrphanScanner;
use crate::reconcile::outcome::OutboxSweeper;
use crate::reconcile::run_every;
use crate::resync;
use crate::secrets::{SecretBytes, SecretStore};
use crate::templates::TemplateSet;
use crate::webhook::WebhookSecret;

/// The shortest gap between status lists for reconciles waiting on `running:*` (one list serves all).
const STATUS_BOARD_INTERVAL: Duration = Duration::from_secs(1);
/// The most of the Coolify budget that status lists may take while reconciles wait.
const STATUS_BOARD_BUDGET_SHARE: f64 = 0.15;

/// The status board's gap between lists: at least `STATUS_BOARD_INTERVAL`, and wide enough that lists
/// take no more than `STATUS_BOARD_BUDGET_SHARE` of the budget (2.2 s at the default 180/min). A start
/// takes Coolify a minute or two, so a few seconds more per wait costs little; the calls saved go to work.
fn status_board_interval(requests_per_minute: u32) -> Duration {
    let share = 60.0 / (f64::from(requests_per_minute.max(1)) * STATUS_BOARD_BUDGET_SHARE);
    STATUS_BOARD_INTERVAL.max(Duration::from_secs_f64(share))
}

/// How often deploy_logs rows left pending by a finished job are sent again (a journal read when none).
const OUTBOX_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// How long in-flight jobs get to finish after SIGTERM before the process exits anyway.
const DRAIN_DEADLINE: Duration = Duration::from_secs(20);
/// Longest gap between readiness checks of PocketBase and Coolify.
const READINESS_MAX_INTERVAL: Duration = Duration::from_secs(15);

pub fn pb_client(settings: &Settings) -> anyhow::Result<PbClient> {
    let auth = match &settings.pocketbase.auth {
        PocketBaseAuth::Password { email, password } => PbAuth::Password {
            email: email.clone(),
            password: password.clone(),
        },
        PocketBaseAuth::Token(t) => PbAuth::Token(t.clone()),
    };
    Ok(PbClient::new(settings.pocketbase.url.clone(), auth)?)
}

pub fn coolify_client(settings: &Settings) -> anyhow::Result<CoolifyClient> {
    Ok(CoolifyClient::new(CoolifyConfig {
        base_url: settings.coolify.url.clone(),
        token: settings.coolify.token.clone(),
        requests_per_minute: settings.coolify.requests_per_minute,
        // Any 60 s window then carries at most burst + rate calls, under Coolify's 200.
        burst: 10,
        request_timeout: settings.coolify.request_timeout,
        connect_timeout: Duration::from_secs(5),
        max_retries: 4,
    })?)
}

/// Picks the configured server, or the first usable and reachable one.
async fn server_uuid(coolify: &CoolifyClient, configured: Option<&str>) -> anyhow::Result<String> {
    let servers = coolify.servers().await.context("listing Coolify servers")?;
    if let Some(uuid) = configured {
        anyhow::ensure!(
            servers.iter().any(|s| s.uuid == uuid),
            "coolify.server_uuid {uuid} is not a server this token can see"
        );
        return Ok(uuid.to_string());
    }
    servers
        .into_iter()
        .find(|s| s.is_usable && s.is_reachable)
        .map(|s| s.uuid)
        .context("Coolify has no usable, reachable server; set coolify.server_uuid")
}

/// Opens the secret store with the current key, re-encrypting entries written under a previous one.
pub fn open_secret_store(settings: &Settings) -> anyhow::Result<SecretStore> {
    let key = |s: &secrecy::SecretString| SecretBytes::from(s.expose_secret().as_bytes().to_vec());
    let previous: Vec<SecretBytes> = settings.secrets.previous_keys.iter().map(key).collect();
    let store = SecretStore::open_with(&settings.secrets.store_path, &key(&settings.secrets.key), &previous)
        .with_context(|| format!("opening the secret store {}", settings.secrets.store_path.display()))?;
    if store.rekeyed() > 0 {
        info!(
            entries = store.rekeyed(),
            "secret store entries re-encrypted with the current secrets.key"
        );
    }
    Ok(store)
}

/// Runs the bridge until SIGTERM or SIGINT.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cancel = CancellationToken::new();
    let secrets_key = || SecretBytes::from(settings.secrets.key.expose_secret().as_bytes().to_vec());
    // Before any event is fingerprinted: fingerprints must be comparable across restarts.
    if !crate::events::set_fingerprint_key(crate::secrets::event_fingerprint_key(&secrets_key())) {
        warn!("the event fingerprint key was already set; echoes of earlier runs may make one extra job each");
    }

    let journal = Journal::open(&settings.journal_path)
        .with_context(|| format!("opening the journal at {}", settings.journal_path.display()))?;
    let resumed = journal.resume_on_start().await.context("resuming unfinished jobs")?;
    if resumed > 0 {
        info!(jobs = resumed, "resumed jobs left unfinished by the last run");
    }

    let pb = pb_client(&settings)?;
    pb.authenticate()
        .await
        .context("checking the PocketBase superuser credentials")?;
    let coolify = coolify_client(&settings)?;
    coolify.team().await.context("Coolify token check (GET /team) failed")?;
    let server = server_uuid(&coolify, settings.coolify.server_uuid.as_deref()).await?;

    let templates = Arc::new(
        TemplateSet::load_dir(&settings.reconcile.templates_dir)
            .with_context(|| format!("loading templates from {}", settings.reconcile.templates_dir.display()))?,
    );
    let secrets = Arc::new(open_secret_store(&settings)?);
    // Stack env depends on the key (secrets hash, router key): after a key change, or the first start of
    // a version with new router keys, every instance is reconciled once to push them.
    if journal
        .note_changed("secrets_key_check", &crate::secrets::key_check(&secrets_key()))
        .await
        .context("recording the key check")?
    {
        let n = journal
            .replay_live(crate::events::Collection::BotInstances)
            .await
            .context("queueing instances for the new key")?;
        if n > 0 {
            info!(
                instances = n,
                "secrets.key (or the router key format) changed: pushing every stack's env again"
            );
        }
    }
    let webhook_secret: WebhookSecret = settings
        .webhook
        .secret
        .expose_secret()
        .parse()
        .context("webhook.secret")?;

    let statuses = Arc::new(StatusBoard::new(
        coolify.clone(),
        status_board_interval(settings.coolify.requests_per_minute),
    ));
    let ctx = Context {
        pb: pb.clone(),
        coolify: coolify.clone(),
        journal: journal.clone(),
        templates,
        secrets,
        settings: Arc::new(ReconcileSettings {
            base_domain: settings.base_domain.clone(),
            router_base_url: settings.router_base_url.as_str().trim_end_matches('/').to_string(),
            environment: settings.coolify.environment.clone(),
            server_uuid: server,
            running_timeout: settings.reconcile.running_timeout,
            sovereign: Ceiling {
                max_stacks: None,
                cpu: settings.reconcile.sovereign_cpu,
                mem_mb: settings.reconcile.sovereign_mem_mb,
            },
            secrets_key: secrets_key(),
        }),
        statuses,
    };

    let readiness = Readiness::new(settings.pocketbase.resync_interval * 2, journal.clone());
    readiness.pocketbase_auth.store(true, Ordering::Relaxed);
    readiness.coolify_reachable.store(true, Ordering::Relaxed);

    let dispatcher = Dispatcher::new(
        journal.clone(),
        Arc::new(Reconciler::new(ctx.clone())),
        QueueConfig {
            concurrency: settings.queue.concurrency,
            base_backoff: settings.queue.base_backoff,
            max_backoff: settings.queue.max_backoff,
            max_attempts: settings.queue.max_attempts,
            poll_interval: Duration::from_millis(500),
        },
    );
    let notify = dispatcher.notifier();
    let sink: Arc<dyn EventSink> = Arc::new(journal.clone());

    let mut tasks = tokio::task::JoinSet::new();
    let (connected_tx, connected_rx) = watch::channel(0u64);
    let (doubt_tx, doubt_rx) = watch::channel(0u64);
    tasks.spawn(realtime::run(
        RealtimeConfig {
            base_url: settings.pocketbase.url.clone(),
            idle_timeout: settings.pocketbase.realtime_idle_timeout,
            connect_timeout: Duration::from_secs(5),
            ping_interval: settings.pocketbase.realtime_ping_interval,
        },
        Arc::new(pb.clone()),
        sink.clone(),
        notify.clone(),
        connected_tx,
        doubt_tx,
        cancel.clone(),
    ));
    let resync_trigger = resync::Trigger::new();
    tasks.spawn(resync::run_periodic(
        settings.pocketbase.resync_interval,
        connected_rx,
        doubt_rx,
        resync_trigger.clone(),
        resync::Resyncer {
            lister: Arc::new(pb.clone()),
            known: Arc::new(journal.clone()),
            sink: sink.clone(),
            notify: notify.clone(),
        },
        cancel.clone(),
    ));
    tasks.spawn(dispatcher.run(cancel.clone(), DRAIN_DEADLINE));
    tasks.spawn(run_every(
        HealthPoller::new(
            ctx.clone(),
            settings.reconcile.health_poll_interval,
            settings.reconcile.bad_readings_before_error,
        ),
        cancel.clone(),
    ));
    tasks.spawn(run_every(
        OutboxSweeper::new(ctx.clone(), OUTBOX_SWEEP_INTERVAL),
        cancel.clone(),
    ));
    tasks.spawn(run_every(
        OrphanScanner::new(
            ctx.clone(),
            settings.reconcile.orphans,
            settings.pocketbase.resync_interval,
        ),
        cancel.clone(),
    ));
    // Readiness follows the health poll's pace so an outage shows within one poll interval.
    let readiness_interval = settings.reconcile.health_poll_interval.min(READINESS_MAX_INTERVAL);
    tasks.spawn(watch_readiness(
        ctx.clone(),
        readiness.clone(),
        readiness_interval,
        cancel.clone(),
    ));

    let ingest_state = web::Data::new(http::ingest::IngestState {
        sink: sink.clone(),
        secret: webhook_secret,
        notify: notify.clone(),
    });
    let admin_state = web::Data::new(http::admin::AdminState {
        journal: journal.clone(),
        ctx: ctx.clone(),
        notify: notify.clone(),
        resync: resync_trigger,
    });
    let admin_token = web::Data::new(AdminToken::new(settings.admin.token.clone()));
    let sessions = web::Data::new(Sessions::new(
        settings.admin.session_ttl,
        PageOrigin::from_url(settings.admin.public_url.as_ref()),
    ));
    let readiness_data = web::Data::new(readiness.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(ingest_state.clone())
            .app_data(admin_state.clone())
            .app_data(admin_token.clone())
            .app_data(sessions.clone())
            .wrap(actix_web::middleware::from_fn(http::guard::admin_guard))
            .app_data(readiness_data.clone())
            .configure(http::health::configure)
            .configure(http::ingest::configure)
            .configure(http::admin::configure)
            .default_service(web::to(http::admin::no_route))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(5)
    .bind(settings.admin.bind)
    .with_context(|| format!("binding admin.bind {}", settings.admin.bind))?;
    let addrs = server.addrs();
    let server = server.run();
    let handle = server.handle();
    info!(addresses = ?addrs, "cf-bridge listening");
    let server_task = tokio::spawn(server);

    wait_for_signal(cancel.clone()).await;
    info!("shutting down: no new events; finishing in-flight jobs");
    // Stop taking webhooks and admin calls first (letting answered ones finish), then the workers.
    handle.stop(true).await;
    let _ = server_task.await;
    cancel.cancel();
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_DEADLINE + Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        warn!("some tasks did not stop within the deadline");
    }
    journal.close().await.context("closing the journal")?;
    info!("stopped cleanly");
    Ok(())
}

async fn wait_for_signal(cancel: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
        _ = cancel.cancelled() => {}
    }
}

/// Keeps the PocketBase and Coolify parts of `/readyz` current.
async fn watch_readiness(ctx: Context, readiness: Arc<Readiness>, every: Duration, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let pb_ok = ctx.pb.token().await.is_ok();
        readiness.pocketbase_auth.store(pb_ok, Ordering::Relaxed);
        let coolify_ok = ctx.coolify.health().await.is_ok();
        readiness.coolify_reachable.store(coolify_ok, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lists_take_a_bounded_share_of_the_budget() {
        let gap = status_board_interval(180);
        assert!((gap.as_secs_f64() - 60.0 / 27.0).abs() < 0.01, "{gap:?}");
        assert_eq!(status_board_interval(100_000), STATUS_BOARD_INTERVAL);
        assert!(status_board_interval(1) > Duration::from_secs(60));
    }
}
