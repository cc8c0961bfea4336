//! The bridge as one value: [`App::build`] checks what must work before anything starts (the journal,
//! templates, the secret store, the listening socket, and the PocketBase and Coolify settings of those
//! that answer: one that does not is waited for in the background, see `dependencies`);
//! [`App::run`] starts the event sources, the dispatcher, the periodic tasks and the HTTP server, and
//! drains them when its shutdown future resolves.
//!
//! With `journal.url` several replicas share one PostgreSQL (docs/SCALE-OUT.md): every replica serves
//! webhooks and the admin API and runs the dispatcher (jobs are claimed in the journal, which wakes it on
//! NOTIFY); the fleet-wide tasks (realtime, resync, health poller, outbox sweeper, orphan scan, retention,
//! pruning, rollouts) run on the one replica that leads (`crate::pg::leader`), for as long as it leads.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Service as _;
use actix_web::{HttpServer, web};
use secrecy::ExposeSecret;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber;
use tracing::{info, warn};

use crate::config::Settings;
use crate::coolify::CoolifyClient;
use crate::dependencies::{self, CoolifyCheckError, Dependencies, Dependency};
use crate::events::{Collection, Replay, SinkError};
use crate::flow::FloodCounters;
use crate::http;
use crate::http::auth::{AdminToken, PageOrigin, Sessions};
use crate::http::glance::Glance;
use crate::http::health::Readiness;
use crate::intake::Intake;
use crate::journal::{Journal, JournalError};
use crate::metrics::Metrics;
use crate::pg::leader::{Candidate, LeaderSettings};
use crate::pg::{PgConfig, PgError};
use crate::pocketbase::realtime::Consumer;
use crate::pocketbase::{PbClient, PbError};
use crate::queue::{self, Dispatcher};
use crate::reconcile::context::{Context, StatusBoard};
use crate::reconcile::health::HealthPoller;
use crate::reconcile::orphans::OrphanScanner;
use crate::reconcile::outcome::{self, OutboxSweeper};
use crate::reconcile::prune::JournalPruner;
use crate::reconcile::retention::RetentionSweeper;
use crate::reconcile::{Reconciler, run_every};
use crate::resync;
use crate::secrets::{SecretBytes, SecretStore, SecretsError};
use crate::templates::{TemplateError, TemplateSet};
use crate::turns::FleetTurns;
use crate::webhook::{SecretError, WebhookSecret};

/// Why the bridge could not start. Each names what it was doing; the cause is the source.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the journal at {path}")]
    Journal {
        path: String,
        #[source]
        source: JournalError,
    },
    #[error("journal.url")]
    JournalUrl(#[source] crate::pg::PgConfigError),
    #[error("preparing the Coolify budget shared in PostgreSQL")]
    SharedBudget(#[source] PgError),
    #[error("checking the PocketBase superuser credentials")]
    PocketBase(#[source] PbError),
    #[error(transparent)]
    Coolify(CoolifyCheckError),
    #[error("loading templates from {path}")]
    Templates {
        path: String,
        #[source]
        source: TemplateError,
    },
    #[error("keeping the template versions in the journal")]
    TemplateVersions(#[source] JournalError),
    #[error("loading the template versions kept in the journal")]
    KeptTemplates(#[source] TemplateError),
    #[error("opening the secret store {path}")]
    Secrets {
        path: String,
        #[source]
        source: SecretsError,
    },
    #[error("recording the key check")]
    KeyCheck(#[source] JournalError),
    #[error("queueing instances for the new key")]
    Requeue(#[source] SinkError),
    #[error("webhook.secret")]
    WebhookSecret(#[source] SecretError),
    #[error("binding admin.bind {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("binding metrics.bind {addr}")]
    MetricsBind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a running bridge did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("starting the HTTP server")]
    Http(#[source] std::io::Error),
    #[error("closing the journal")]
    Close(#[source] JournalError),
}

/// A bridge that is ready to run: every check passed and its socket is bound.
pub struct App {
    settings: Arc<Settings>,
    listener: TcpListener,
    /// `/metrics` on a socket of its own (`metrics.bind`).
    metrics_listener: Option<TcpListener>,
    address: SocketAddr,
    ctx: Context,
    readiness: Arc<Readiness>,
    dispatcher: Dispatcher<Reconciler>,
    /// None: webhook intake is off (no `webhook.secret`); changes arrive by realtime and resync.
    webhook_secret: Option<WebhookSecret>,
    /// The operator page's last hour, and the end of its live streams.
    glance: Arc<Glance>,
    metrics: Arc<Metrics>,
    /// Several replicas on PostgreSQL: who leads is elected; `None` (SQLite): this one always leads.
    election: Option<(PgConfig, LeaderSettings)>,
}

impl App {
    /// Builds the bridge on `admin.bind`.
    pub async fn build(settings: Settings) -> Result<App, StartError> {
        let listener = TcpListener::bind(settings.admin.bind).map_err(|source| StartError::Bind {
            addr: settings.admin.bind.to_string(),
            source,
        })?;
        Self::build_on(settings, listener).await
    }

    /// Builds the bridge on a socket that is already bound (tests bind port 0 and read the address).
    pub async fn build_on(settings: Settings, listener: TcpListener) -> Result<App, StartError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Before any event is fingerprinted: fingerprints must be comparable across restarts.
        if !crate::events::set_fingerprint_key(crate::secrets::event_fingerprint_key(&settings.secrets.key_bytes())) {
            warn!("the event fingerprint key was already set; echoes of earlier runs may make one extra job each");
        }
        let address = listener.local_addr().map_err(|source| StartError::Bind {
            addr: settings.admin.bind.to_string(),
            source,
        })?;
        let metrics_listener = match settings.metrics.bind {
            Some(addr) => Some(TcpListener::bind(addr).map_err(|source| StartError::MetricsBind {
                addr: addr.to_string(),
                source,
            })?),
            None => None,
        };
        let (journal, pg) = open_journal(&settings).await?;
        let metrics = Arc::new(Metrics::new());
        let deps = Dependencies::new(metrics.dependency_up.clone());
        let (pb, coolify) = connect(&settings, &metrics, &deps, journal.pg()).await?;
        pb.flood_sign().count_on(FloodCounters {
            floods: metrics.pocketbase_floods.clone(),
            writes_spaced: metrics.pocketbase_writes_spaced.clone(),
        });
        let templates =
            TemplateSet::load_dir(&settings.reconcile.templates_dir).map_err(|source| StartError::Templates {
                path: settings.reconcile.templates_dir.display().to_string(),
                source,
            })?;
        let templates = keep_template_versions(&journal, templates).await?;
        let secrets = open_secret_store(&settings, journal.pg()).await?;
        let webhook_secret: Option<WebhookSecret> = settings
            .webhook
            .secret
            .as_ref()
            .map(|s| s.expose_secret().parse())
            .transpose()
            .map_err(StartError::WebhookSecret)?;

        let settings = Arc::new(settings);
        let wake = Arc::new(Notify::new());
        let ctx = Context {
            statuses: Arc::new(StatusBoard::new(
                coolify.clone(),
                settings.coolify.requests_per_minute,
                &settings.coolify.environment,
            )),
            pb,
            coolify,
            intake: Intake::new(Arc::new(journal.clone()), wake.clone(), metrics.clone()),
            journal: journal.clone(),
            templates: Arc::new(templates),
            secrets: Arc::new(secrets),
            settings: settings.clone(),
            deps: deps.clone(),
            health: Arc::default(),
            turns: FleetTurns::default(),
        };
        let readiness = Readiness::new(
            settings.pocketbase.resync_interval * 2,
            journal.clone(),
            metrics.clone(),
            deps.clone(),
            webhook_secret.is_some(),
        );
        requeue_on_key_change(&settings, &ctx.journal, &ctx.intake).await?;
        let glance = Arc::new(Glance::new(
            metrics.clone(),
            ctx.health.clone(),
            ctx.journal.clone(),
            settings.coolify.requests_per_minute,
        ));
        let dispatcher = Dispatcher::new(
            journal,
            Arc::new(Reconciler::new(ctx.clone())),
            &settings.queue,
            wake,
            metrics.clone(),
        )
        .gate(deps.subscribe());
        let election = pg.map(|cfg| {
            let lease = LeaderSettings {
                lease: settings.journal.leader_lease,
            };
            (cfg, lease)
        });
        Ok(App {
            settings,
            listener,
            metrics_listener,
            address,
            ctx,
            readiness,
            dispatcher,
            webhook_secret,
            glance,
            metrics,
            election,
        })
    }

    /// Where the webhook ingest, admin API, health and metrics are served.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Runs until `shutdown` resolves (or the HTTP server fails), then stops taking requests, lets the
    /// jobs in flight finish (up to the queue's drain deadline; the rest resume at the next start) and
    /// checkpoints the journal.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
        let App {
            settings,
            listener,
            metrics_listener,
            address,
            ctx,
            readiness,
            dispatcher,
            webhook_secret,
            glance,
            metrics,
            election,
        } = self;
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let resync = resync::Trigger::new();
        let rollouts = Arc::new(crate::rollout::Runner::default());
        let fleet = Fleet {
            ctx: ctx.clone(),
            rollouts: rollouts.clone(),
        };
        tasks.spawn(
            dispatcher
                .run(cancel.clone(), queue::DRAIN_DEADLINE)
                .with_current_subscriber(),
        );
        spawn_probes(&mut tasks, &ctx, &cancel);
        tasks.spawn(glance.clone().run(cancel.clone()).with_current_subscriber());
        match election {
            None => {
                metrics.leader.set(1);
                fleet.start(&mut tasks, resync.clone(), &cancel).await;
            }
            Some((cfg, lease)) => {
                tasks.spawn(
                    operator_resyncs(resyncer(&ctx, false), resync.clone(), cancel.clone()).with_current_subscriber(),
                );
                let candidate = Candidate::spawn(cfg, lease, &cancel);
                tasks.spawn(lead(fleet, candidate, metrics.clone(), cancel.clone()).with_current_subscriber());
            }
        }

        let metrics_server = match metrics_listener {
            Some(listener) => {
                let addr = listener.local_addr().ok();
                let server = metrics_server(listener, readiness.clone()).map_err(RunError::Http)?;
                let handle = server.handle();
                let task = tokio::spawn(server.with_current_subscriber());
                info!(address = ?addr, "serving /metrics on metrics.bind");
                Some((handle, task))
            }
            None => None,
        };
        let admin = http::operator::AdminState {
            ctx: ctx.clone(),
            resync,
            rollouts: rollouts.clone(),
        };
        let server = http_server(
            listener,
            &ctx,
            admin,
            readiness,
            webhook_secret,
            &settings,
            glance.clone(),
        )
        .map_err(RunError::Http)?;
        let handle = server.handle();
        let mut server_task = tokio::spawn(server.with_current_subscriber());
        info!(address = %address, "cf-bridge listening");

        tokio::select! {
            _ = shutdown => info!("shutting down: no new events; finishing in-flight jobs"),
            ended = &mut server_task => warn!(?ended, "the HTTP server stopped; shutting down"),
        }
        // Stop taking webhooks and admin calls first (letting answered ones finish), then the workers.
        // Live streams never finish by themselves: end them so they do not hold up the stop.
        glance.close_streams();
        handle.stop(true).await;
        let _ = server_task.await;
        if let Some((handle, task)) = metrics_server {
            handle.stop(true).await;
            let _ = task.await;
        }
        cancel.cancel();
        rollouts.stop();
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(queue::DRAIN_DEADLINE + Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            warn!("some tasks did not stop within the deadline");
        }
        ctx.journal.close().await.map_err(RunError::Close)?;
        info!("stopped cleanly");
        Ok(())
    }
}

/// The SQLite journal at `journal.path`, or with `journal.url` the one on PostgreSQL (and its setting).
async fn open_journal(settings: &Settings) -> Result<(Journal, Option<PgConfig>), StartError> {
    match settings.journal.postgres() {
        None => {
            let journal = Journal::open(&settings.journal.path).map_err(|source| StartError::Journal {
                path: settings.journal.path.display().to_string(),
                source,
            })?;
            Ok((journal, None))
        }
        Some(cfg) => {
            let cfg = cfg.map_err(StartError::JournalUrl)?;
            let journal = Journal::open_postgres(&cfg)
                .await
                .map_err(|source| StartError::Journal {
                    path: cfg.redacted(),
                    source,
                })?;
            if let Some(pg) = journal.pg() {
                pg.set_lease(settings.journal.claim_lease);
            }
            info!(journal = %cfg.redacted(), "journal on PostgreSQL: one of several replicas");
            Ok((journal, Some(cfg)))
        }
    }
}

/// Keeps each template version on disk in the journal, and adds the versions kept from earlier runs to
/// the set: an instance renders from its own version until a rollout moves it (see `crate::rollout`).
async fn keep_template_versions(journal: &Journal, set: TemplateSet) -> Result<TemplateSet, StartError> {
    for t in set.iter() {
        let kept = crate::journal::StoredTemplate {
            manifest: t.manifest_source.clone(),
            compose: t.compose_source.clone(),
        };
        if journal
            .store_template_version(&t.name, &t.version, &kept)
            .await
            .map_err(StartError::TemplateVersions)?
        {
            info!(template = %t.name, version = %t.version, "template version kept");
        }
        journal
            .note_first_template_version(&t.name, &t.version)
            .await
            .map_err(StartError::TemplateVersions)?;
    }
    let kept = journal
        .template_versions()
        .await
        .map_err(StartError::TemplateVersions)?;
    let first = journal
        .first_template_versions()
        .await
        .map_err(StartError::TemplateVersions)?;
    Ok(set
        .with_earlier(kept.into_iter().map(|k| (k.manifest, k.compose)))
        .map_err(StartError::KeptTemplates)?
        .with_first(first))
}

/// Opens the secret store with the current key, re-encrypting entries written under a previous one: in the
/// journal's database when the journal is on PostgreSQL (`pg`, from `Journal::pg()`: every replica shares
/// it), else in the file `secrets.store_path`.
pub async fn open_secret_store(
    settings: &Settings,
    pg: Option<&crate::journal::pg::PgJournal>,
) -> Result<SecretStore, StartError> {
    let previous: Vec<SecretBytes> = settings
        .secrets
        .previous_keys
        .iter()
        .map(|k| SecretBytes::from(k.expose_secret().as_bytes().to_vec()))
        .collect();
    let key = settings.secrets.key_bytes();
    let store = match pg {
        Some(pg) => SecretStore::open_postgres(pg.pool().clone(), &key, &previous)
            .await
            .map_err(|source| StartError::Secrets {
                path: format!("in PostgreSQL at {}", pg.config().redacted()),
                source,
            })?,
        None => SecretStore::open_with(&settings.secrets.store_path, &key, &previous).map_err(|source| {
            StartError::Secrets {
                path: settings.secrets.store_path.display().to_string(),
                source,
            }
        })?,
    };
    if store.rekeyed() > 0 {
        info!(
            entries = store.rekeyed(),
            "secret store entries re-encrypted with the current secrets.key"
        );
    }
    Ok(store)
}

/// Stack env depends on the key (secrets hash, router key): after a key change, or the first start of a
/// version with new router keys, every instance is reconciled once to push them.
async fn requeue_on_key_change(settings: &Settings, journal: &Journal, intake: &Intake) -> Result<(), StartError> {
    let check = crate::secrets::key_check(&settings.secrets.key_bytes());
    let changed = journal
        .note_changed("secrets_key_check", &check)
        .await
        .map_err(StartError::KeyCheck)?;
    if changed {
        let n = intake
            .replay(Replay::Live(Collection::BotInstances))
            .await
            .map_err(StartError::Requeue)?;
        if n > 0 {
            info!(
                instances = n,
                "secrets.key (or the router key format) changed: pushing every stack's env again"
            );
        }
    }
    Ok(())
}

/// Checks PocketBase and Coolify once. A wrong setting (credentials, server) stops the start; a
/// dependency that does not answer is recorded as down, and the bridge starts and waits for it.
async fn connect(
    settings: &Settings,
    metrics: &Arc<Metrics>,
    deps: &Dependencies,
    pg: Option<&crate::journal::pg::PgJournal>,
) -> Result<(PbClient, CoolifyClient), StartError> {
    let pb = PbClient::new(&settings.pocketbase).map_err(StartError::PocketBase)?;
    match dependencies::check_pocketbase(&pb).await {
        Ok(()) => deps.set(Dependency::PocketBase, Ok(())),
        Err(e) if dependencies::pocketbase_unavailable(&e) => {
            deps.set(Dependency::PocketBase, Err(dependencies::describe(&e)))
        }
        Err(e) => return Err(StartError::PocketBase(e)),
    }
    let coolify = match pg {
        None => CoolifyClient::new(&settings.coolify, metrics.clone()),
        Some(pg) => {
            let shared = crate::pg::budget::SharedBudget::new(
                pg.pool().clone(),
                settings.coolify.requests_per_minute,
                crate::coolify::client::burst(settings.coolify.requests_per_minute),
            )
            .await
            .map_err(StartError::SharedBudget)?;
            CoolifyClient::with_shared_budget(&settings.coolify, metrics.clone(), shared)
        }
    }
    .map_err(|e| StartError::Coolify(CoolifyCheckError::Coolify("building the Coolify client", e)))?;
    match dependencies::check_coolify(&coolify, deps, settings.coolify.server_uuid.as_deref()).await {
        Ok(()) => deps.set(Dependency::Coolify, Ok(())),
        Err(e) if e.is_unavailable() => deps.set(Dependency::Coolify, Err(dependencies::describe(&e))),
        Err(e) => return Err(StartError::Coolify(e)),
    }
    Ok((pb, coolify))
}

/// The tasks one replica runs for the whole fleet: on SQLite always, on PostgreSQL while it leads.
struct Fleet {
    ctx: Context,
    rollouts: Arc<crate::rollout::Runner>,
}

impl Fleet {
    /// Starts realtime (whose connect starts a full resync), the periodic resync, the periodic tasks and
    /// the rollouts left running, until `cancel`.
    async fn start(&self, tasks: &mut JoinSet<()>, trigger: resync::Trigger, cancel: &CancellationToken) {
        spawn_sources(tasks, &self.ctx, trigger, cancel);
        spawn_periodic(tasks, &self.ctx, cancel);
        crate::rollout::resume_all(&self.ctx, &self.rollouts).await;
    }
}

/// Runs the fleet's tasks for each term this replica leads: started when it takes the lead, cancelled
/// (a child token of `cancel`) and drained when it loses it. Steps down at `cancel`, releasing the lock.
async fn lead(fleet: Fleet, candidate: Candidate, metrics: Arc<Metrics>, cancel: CancellationToken) {
    let mut leading = candidate.is_leader();
    loop {
        let took = tokio::select! {
            led = leading.wait_for(|l| *l) => led.is_ok(),
            () = cancel.cancelled() => false,
        };
        if !took {
            break;
        }
        info!("this replica leads: starting realtime, resync and the periodic tasks");
        metrics.leader.set(1);
        let term = cancel.child_token();
        let mut tasks = JoinSet::new();
        // The admin API's resyncs are run by `operator_resyncs` on every replica: the leader's loop
        // resyncs on connect, on doubt and on its interval only.
        fleet.start(&mut tasks, resync::Trigger::new(), &term).await;
        tokio::select! {
            _ = leading.wait_for(|l| !*l) => warn!("this replica lost the lead: stopping the fleet-wide tasks"),
            () = cancel.cancelled() => {}
        }
        term.cancel();
        metrics.leader.set(0);
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(queue::DRAIN_DEADLINE, drain).await.is_err() {
            warn!("some fleet-wide tasks did not stop within the deadline");
            tasks.abort_all();
        }
        if cancel.is_cancelled() {
            break;
        }
    }
    candidate.stop().await;
}

/// `POST /admin/resync` on any replica: a pass here, whether or not this replica leads.
async fn operator_resyncs(resyncer: resync::Resyncer, trigger: resync::Trigger, cancel: CancellationToken) {
    loop {
        tokio::select! {
            () = trigger.fired() => {}
            () = cancel.cancelled() => return,
        }
        tokio::select! {
            _ = resyncer.pass("operator") => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// The realtime consumer and the resync it triggers on every (re)connect, periodically and on `trigger`.
fn spawn_sources(tasks: &mut JoinSet<()>, ctx: &Context, trigger: resync::Trigger, cancel: &CancellationToken) {
    let (connected_tx, connected_rx) = watch::channel(0u64);
    let (doubt_tx, doubt_rx) = watch::channel(0u64);
    let consumer = Consumer {
        flood: ctx.pb.flood_sign(),
        ..Consumer::new(
            &ctx.settings.pocketbase,
            Arc::new(ctx.pb.clone()),
            ctx.intake.clone(),
            connected_tx,
            doubt_tx,
        )
    };
    tasks.spawn(consumer.run(cancel.clone()).with_current_subscriber());
    tasks.spawn(
        resync::run_periodic(
            ctx.settings.pocketbase.resync_interval,
            connected_rx,
            doubt_rx,
            trigger,
            resyncer(ctx, true),
            cancel.clone(),
        )
        .with_current_subscriber(),
    );
}

/// What a resync pass lists, compares with and hands its findings to; `for_poller`: its listing of
/// instances is offered to this process's health poller (which runs only where the fleet tasks do).
fn resyncer(ctx: &Context, for_poller: bool) -> resync::Resyncer {
    resync::Resyncer {
        lister: Arc::new(crate::pocketbase::ResyncLister {
            pb: ctx.pb.clone(),
            offers_to_poller: for_poller.then(|| ctx.intake.clone()),
        }),
        known: Arc::new(ctx.journal.clone()),
        drift: Some(Arc::new(crate::reconcile::drift::Checker(ctx.clone()))),
        intake: ctx.intake.clone(),
        turns: ctx.turns.clone(),
    }
}

/// The health poller, the deploy_logs outbox sweeper, the orphan scanner and the retention sweeper (each
/// waiting while a dependency is down), the journal pruner and the memory trim (which need none).
fn spawn_periodic(tasks: &mut JoinSet<()>, ctx: &Context, cancel: &CancellationToken) {
    let r = &ctx.settings.reconcile;
    let gate = || ctx.deps.subscribe();
    let health = HealthPoller::new(ctx.clone(), r.health_poll_interval, r.bad_readings_before_error);
    tasks.spawn(run_every(health, gate(), cancel.clone()).with_current_subscriber());
    let sweeper = OutboxSweeper::new(ctx.clone(), outcome::SWEEP_INTERVAL);
    tasks.spawn(run_every(sweeper, gate(), cancel.clone()).with_current_subscriber());
    let orphans = OrphanScanner::new(
        ctx.clone(),
        r.orphans,
        ctx.settings.pocketbase.resync_interval,
        r.health_poll_interval,
    );
    tasks.spawn(run_every(orphans, gate(), cancel.clone()).with_current_subscriber());
    let retention = RetentionSweeper::new(ctx.clone());
    tasks.spawn(run_every(retention, gate(), cancel.clone()).with_current_subscriber());
    let pruner = JournalPruner::new(ctx.clone());
    let always_open = tokio::sync::watch::channel(true).1;
    tasks.spawn(run_every(pruner, always_open.clone(), cancel.clone()).with_current_subscriber());
    tasks.spawn(run_every(crate::memory::Trimmer, always_open, cancel.clone()).with_current_subscriber());
}

/// This replica's own probes of PocketBase and Coolify (they gate its dispatcher).
fn spawn_probes(tasks: &mut JoinSet<()>, ctx: &Context, cancel: &CancellationToken) {
    let r = &ctx.settings.reconcile;
    // Probes follow the health poll's pace so an outage shows within one poll interval.
    let every = r.health_poll_interval.min(http::health::READINESS_MAX_INTERVAL);
    tasks.spawn(
        dependencies::run(
            ctx.deps.clone(),
            ctx.pb.clone(),
            ctx.coolify.clone(),
            ctx.settings.coolify.server_uuid.clone(),
            every,
            cancel.clone(),
        )
        .with_current_subscriber(),
    );
}

/// Webhook ingest, admin API and page, health and metrics on `listener`. Requests are handled on
/// actix's worker threads; they log through the subscriber that is current here.
fn http_server(
    listener: TcpListener,
    ctx: &Context,
    admin: http::operator::AdminState,
    readiness: Arc<Readiness>,
    webhook_secret: Option<WebhookSecret>,
    settings: &Settings,
    glance: Arc<Glance>,
) -> std::io::Result<actix_web::dev::Server> {
    let ingest_state = web::Data::new(http::ingest::IngestState {
        intake: ctx.intake.clone(),
        secret: webhook_secret,
    });
    let admin_state = web::Data::new(admin);
    let admin_token = web::Data::new(AdminToken::new(settings.admin.token.clone()));
    let sessions = web::Data::new(Sessions::new(
        settings.admin.session_ttl,
        PageOrigin::from_url(settings.admin.public_url.as_ref()),
    ));
    let readiness = web::Data::new(readiness);
    let glance = web::Data::from(glance);
    let separate_metrics = settings.metrics.bind.is_some();
    let logs = tracing::dispatcher::get_default(Clone::clone);
    let server = HttpServer::new(move || {
        let logs = logs.clone();
        actix_web::App::new()
            .app_data(ingest_state.clone())
            .app_data(admin_state.clone())
            .app_data(admin_token.clone())
            .app_data(sessions.clone())
            .app_data(readiness.clone())
            .app_data(glance.clone())
            .configure(|cfg| {
                if separate_metrics {
                    http::health::configure_health(cfg)
                } else {
                    http::health::configure(cfg)
                }
            })
            .configure(http::ingest::configure)
            .configure(http::admin::configure)
            .configure(http::rollouts::configure)
            .configure(http::ui::configure)
            .configure(http::stream::configure)
            .default_service(web::to(http::admin::no_route))
            // Sessions and origins are checked before any admin handler runs.
            .wrap(actix_web::middleware::from_fn(http::guard::admin_guard))
            .wrap_fn(move |req, service| service.call(req).with_subscriber(logs.clone()))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(5)
    .listen(listener)?;
    Ok(server.run())
}

/// `/metrics` alone on `listener` (`metrics.bind`): nothing else answers there.
fn metrics_server(listener: TcpListener, readiness: Arc<Readiness>) -> std::io::Result<actix_web::dev::Server> {
    let readiness = web::Data::new(readiness);
    let server = HttpServer::new(move || {
        actix_web::App::new()
            .app_data(readiness.clone())
            .configure(http::health::configure_metrics)
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5)
    .listen(listener)?;
    Ok(server.run())
}

/// Resolves on SIGTERM or SIGINT (what `cf-bridge serve` runs until).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
        },
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
