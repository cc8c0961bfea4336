//! Measures what reading Coolify's `GET /services` costs in peak memory with a fleet of services: the
//! whole answer read and decoded at once (the old way) against the client's reads, which decode it one
//! service at a time as it streams in. A coolify-sim of its own runs in another process (its memory is
//! not counted), seeded through its API.
//!
//!     cargo build --bin coolify-sim && cargo run --example service_list_memory -- [services] [sim binary] [reads]
//!
//! `reads` picks one group (`new`, `old-states`, `old-full`; all by default): memory freed by one read stays
//! with the process and hides part of the next one's peak, so a fair figure takes a process per group.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use cf_bridge::config::CoolifySettings;
use cf_bridge::coolify::{CoolifyClient, CreateService, Service, ServiceState};
use cf_bridge::metrics::Metrics;
use futures_util::StreamExt;
use futures_util::stream;
use secrecy::SecretString;

/// A compose with labels like the ones Coolify adds (traefik, caddy): with it the simulator's list weighs
/// about what Coolify's does, 3.7 KB a service (the list is mostly composes).
const COMPOSE: &str = "services:\n  bot:\n    labels:\n      - traefik.enable=true\n      - traefik.http.middlewares.gzip.compress=true\n      - traefik.http.middlewares.redirect-to-https.redirectscheme.scheme=https\n      - traefik.http.routers.http-0-bot.entryPoints=http\n      - traefik.http.routers.http-0-bot.middlewares=redirect-to-https\n      - 'traefik.http.routers.http-0-bot.rule=Host(`bot.tenant.example.com`) && PathPrefix(`/`)'\n      - traefik.http.routers.http-0-bot.service=http-0-bot\n      - traefik.http.routers.https-0-bot.entryPoints=https\n      - traefik.http.routers.https-0-bot.middlewares=gzip\n      - 'traefik.http.routers.https-0-bot.rule=Host(`bot.tenant.example.com`) && PathPrefix(`/`)'\n      - traefik.http.routers.https-0-bot.service=https-0-bot\n      - traefik.http.routers.https-0-bot.tls.certresolver=letsencrypt\n      - traefik.http.routers.https-0-bot.tls=true\n      - traefik.http.services.http-0-bot.loadbalancer.server.port=8080\n      - traefik.http.services.https-0-bot.loadbalancer.server.port=8080\n      - 'caddy_0.encode=zstd gzip'\n      - 'caddy_0.handle_path.0_reverse_proxy={{upstreams 8080}}'\n      - 'caddy_0.handle_path=/*'\n      - caddy_0.header=-Server\n      - 'caddy_0.try_files={path} /index.html /index.php'\n      - 'caddy_0=https://bot.tenant.example.com'\n      - caddy_ingress_network=coolify\n    image: ghcr.io/cloudfreedom/bot-runtime:1.4.2\n    restart: unless-stopped\n    environment:\n      BOT_TOKEN: ${BOT_TOKEN}\n      TENANT: ${TENANT}\n      ROUTER_KEY: ${ROUTER_KEY}\n      MODE: ${MODE:-fast}\n      LOG_LEVEL: ${LOG_LEVEL:-info}\n    volumes:\n      - bot-data:/data\n    healthcheck:\n      test: [\"CMD\", \"wget\", \"-qO-\", \"http://127.0.0.1:8080/health\"]\n      interval: 30s\n      timeout: 5s\n      retries: 3\n    deploy:\n      resources:\n        limits:\n          memory: 256M\n  cache:\n    image: redis:7-alpine\n    command: [\"redis-server\", \"--save\", \"\", \"--appendonly\", \"no\"]\nvolumes:\n  bot-data: {}\n";

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `f` with the peak reset first (where the kernel allows) and prints VmHWM before and after.
async fn measure<T>(what: &str, f: impl Future<Output = T>) -> T {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kib("VmHWM:");
    let out = f.await;
    let after = status_kib("VmHWM:");
    println!(
        "{what:<58} VmHWM {:>7.1} MiB -> {:>7.1} MiB (+{:.1} MiB)",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        after.saturating_sub(before) as f64 / 1024.0
    );
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10_000);
    let sim_bin = args.next().unwrap_or_else(|| "target/debug/coolify-sim".into());
    let reads = args.next().unwrap_or_default();
    let runs = |group: &str| reads.is_empty() || reads == group;
    let token = "1|measure";
    let mut sim = Command::new(&sim_bin)
        .args(["--token", token, "--rate-limit", "100000000"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(sim.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?).read_line(&mut line)?;
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .ok_or_else(|| anyhow::anyhow!("sim said {line:?}"))?
        .to_string();
    let mut cfg = CoolifySettings::new(url.parse()?, SecretString::from(token.to_string()));
    cfg.requests_per_minute = 100_000_000;
    cfg.request_timeout = std::time::Duration::from_secs(120);
    let c = CoolifyClient::new(&cfg, Arc::new(Metrics::new()))?;

    let project = c.create_project("cf-measure", None).await?;
    let created = stream::iter(0..n)
        .map(|i| {
            let c = c.clone();
            let req = CreateService {
                project_uuid: project.clone(),
                environment_name: Some("production".into()),
                server_uuid: coolify_sim::LOCALHOST_SERVER_UUID.into(),
                name: format!("cf-i{i:05}"),
                description: Some(format!("cf-bridge instance i{i:05} incarnation 0123456789abcdef")),
                compose_yaml: COMPOSE.into(),
                ..Default::default()
            };
            async move { c.create_service(&req).await }
        })
        .buffer_unordered(8)
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await;
    let bytes = cf_testkit::http()
        .get(format!("{url}/api/v1/services"))
        .bearer_auth(token)
        .send()
        .await?
        .bytes()
        .await?
        .len();
    println!(
        "{created} services seeded; GET /services answers {:.1} MB; VmRSS now {:.1} MiB",
        bytes as f64 / 1e6,
        status_kib("VmRSS:") as f64 / 1024.0
    );

    let http = cf_testkit::http();
    let whole = |url: String| {
        let http = http.clone();
        async move {
            // As the client read it before: into one buffer, up to the endpoint's 128 MiB.
            let resp = http.get(url).bearer_auth(token).send().await?;
            anyhow::Ok(cf_bridge::bounded::read(resp, 128 << 20).await?)
        }
    };
    let list = format!("{url}/api/v1/services");
    let (mut states, mut judged, mut found, mut full) = (vec![], vec![], vec![], vec![]);
    if runs("new") {
        states = measure(
            "new: list_service_states, every service kept (a status round keeps its waiters only)",
            c.list_service_states(|_| true),
        )
        .await?;
        judged = measure("new: list_service_looks, a verdict per service (drift)", async {
            c.list_service_looks(|l| Some((l.uuid, l.docker_compose_raw.map(|t| t.len()))))
                .await
        })
        .await?;
        found = measure(
            "new: find_services_by_name (one match)",
            c.find_services_by_name("cf-i00042"),
        )
        .await?;
        full = measure("new: list_services (every service in full)", c.list_services()).await?;
    }
    let mut n_states = 0;
    if runs("old-states") {
        n_states = measure("old: whole body + decode to Vec<ServiceState>", async {
            let body = whole(list.clone()).await?;
            anyhow::Ok(serde_json::from_slice::<Vec<ServiceState>>(&body)?.len())
        })
        .await?;
    }
    let mut n_full = 0;
    if runs("old-full") {
        n_full = measure("old: whole body + decode to Vec<Service>", async {
            let body = whole(list.clone()).await?;
            anyhow::Ok(serde_json::from_slice::<Vec<Service>>(&body)?.len())
        })
        .await?;
    }
    println!(
        "decoded: old {n_full} full / {n_states} states; new {} states, {} looks, {} found, {} full",
        states.len(),
        judged.len(),
        found.len(),
        full.len()
    );
    let _ = sim.kill();
    let _ = sim.wait();
    Ok(())
}
