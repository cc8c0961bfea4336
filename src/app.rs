//! Wiring: start the sources, the workers and the HTTP server; one cancellation token for shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use secrecy::ExposeSecret;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Settings;
use crate::coolify::CoolifyClient;
use crate::http;
use crate::http::auth::AdminToken;
use crate::http::health::{self, Readiness};
use crate::intake::Intake;
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::pocketbase::PbClient;
use crate::pocketbase::realtime::Consumer;
use crate::queue::{self, Dispatcher};
use crate::reconcile::Reconciler;
use crate::reconcile::context::{Context, StatusBoard};
use crate::reconcile::health::HealthPoller;
use crate::reconcile::orphans::OrphanScanner;
use crate::reconcile::run_every;
use crate::resync;
use crate::secrets::SecretStore;
use crate::templates::TemplateSet;
use crate::webhook::WebhookSecret;

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

/// Runs the bridge until SIGTERM or SIGINT.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cancel = CancellationToken::new();

    let journal = Journal::open(&settings.journal.path)
        .with_context(|| format!("opening the journal at {}", settings.journal.path.display()))?;
    let resumed = journal.resume_on_start().await.context("resuming unfinished jobs")?;
    if resumed > 0 {
        info!(jobs = resumed, "resumed jobs left unfinished by the last run");
    }

    let pb = PbClient::new(&settings.pocketbase)?;
    pb.authenticate()
        .await
        .context("checking the PocketBase superuser credentials")?;
    let metrics = Arc::new(Metrics::new());
    let coolify = CoolifyClient::new(&settings.coolify, metrics.clone())?;
    coolify.team().await.context("Coolify token check (GET /team) failed")?;
    let server = server_uuid(&coolify, settings.coolify.server_uuid.as_deref()).await?;

    let templates = Arc::new(
        TemplateSet::load_dir(&settings.reconcile.templates_dir)
            .with_context(|| format!("loading templates from {}", settings.reconcile.templates_dir.display()))?,
    );
    let secrets = Arc::new(
        SecretStore::open(&settings.secrets.store_path, &settings.secrets.key_bytes())
            .with_context(|| format!("opening the secret store {}", settings.secrets.store_path.display()))?,
    );
    let webhook_secret: WebhookSecret = settings
        .webhook
        .secret
        .expose_secret()
        .parse()
        .context("webhook.secret")?;

    let statuses = Arc::new(StatusBoard::new(
        coolify.clone(),
        StatusBoard::interval_for(settings.coolify.requests_per_minute),
    ));
    let wake = Arc::new(Notify::new());
    let intake = Intake::new(Arc::new(journal.clone()), wake.clone(), metrics.clone());
    let ctx = Context {
        pb: pb.clone(),
        coolify: coolify.clone(),
        journal: journal.clone(),
        templates,
        secrets,
        settings: Arc::new(settings.clone()),
        server_uuid: Arc::from(server),
        statuses,
        intake: intake.clone(),
    };

    let readiness = Readiness::new(
        settings.pocketbase.resync_interval * 2,
        journal.clone(),
        metrics.clone(),
    );
    readiness.pocketbase_auth.store(true, Ordering::Relaxed);
    readiness.coolify_reachable.store(true, Ordering::Relaxed);

    let dispatcher = Dispatcher::new(
        journal.clone(),
        Arc::new(Reconciler::new(ctx.clone())),
        &settings.queue,
        wake,
        metrics,
    );

    let mut tasks = tokio::task::JoinSet::new();
    let (connected_tx, connected_rx) = watch::channel(0u64);
    tasks.spawn(
        Consumer::new(&settings.pocketbase, Arc::new(pb.clone()), intake.clone(), connected_tx).run(cancel.clone()),
    );
    let resync_trigger = resync::Trigger::new();
    tasks.spawn(resync::run_periodic(
        settings.pocketbase.resync_interval,
        connected_rx,
        resync_trigger.clone(),
        resync::Resyncer {
            lister: Arc::new(pb.clone()),
            known: Arc::new(journal.clone()),
            intake: intake.clone(),
        },
        cancel.clone(),
    ));
    tasks.spawn(dispatcher.run(cancel.clone(), queue::DRAIN_DEADLINE));
    tasks.spawn(run_every(
        HealthPoller::new(
            ctx.clone(),
            settings.reconcile.health_poll_interval,
            settings.reconcile.bad_readings_before_error,
        ),
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
    let readiness_interval = settings
        .reconcile
        .health_poll_interval
        .min(health::READINESS_MAX_INTERVAL);
    tasks.spawn(watch_readiness(
        ctx.clone(),
        readiness.clone(),
        readiness_interval,
        cancel.clone(),
    ));

    let ingest_state = web::Data::new(http::ingest::IngestState {
        intake,
        secret: webhook_secret,
    });
    let admin_state = web::Data::new(http::operator::AdminState {
        ctx: ctx.clone(),
        resync: resync_trigger,
    });
    let admin_token = web::Data::new(AdminToken::new(settings.admin.token.clone()));
    let readiness_data = web::Data::new(readiness.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(ingest_state.clone())
            .app_data(admin_state.clone())
            .app_data(admin_token.clone())
            .app_data(readiness_data.clone())
            .configure(http::health::configure)
            .configure(http::ingest::configure)
            .configure(http::admin::configure)
            .configure(http::ui::configure)
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
    if tokio::time::timeout(queue::DRAIN_DEADLINE + Duration::from_secs(5), drain)
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
