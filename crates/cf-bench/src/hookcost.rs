//! Where the project hook's cost to PocketBase writes goes: the same write flood against PocketBase with
//! the project's hooks delivering to a sink that answers 204 at once (hook and HTTP cost, no bridge), and
//! with delivery switched off (the hooks' JavaScript alone).

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use super::client::{Pb, http};
use cf_testkit::TestPb;

use super::procs::{self, Paths};
use super::stack::create_fleet;

/// An HTTP server in this process that answers every request with 204.
pub struct Sink {
    pub url: String,
    handle: actix_web::dev::ServerHandle,
}

impl Sink {
    pub fn start() -> Result<Sink> {
        let server = actix_web::HttpServer::new(|| {
            actix_web::App::new().default_service(actix_web::web::to(|| async {
                actix_web::HttpResponse::NoContent().finish()
            }))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .context("bind the webhook sink")?;
        let addr = *server.addrs().first().context("the webhook sink has no address")?;
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Sink {
            url: format!("http://{addr}/hooks/pocketbase"),
            handle,
        })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// PocketBase with the project's hooks; `webhook_url` None leaves delivery unconfigured (the hook returns
/// before signing).
pub struct HookPb {
    pub pb: Pb,
    pub instances: Vec<String>,
    _proc: TestPb,
}

impl HookPb {
    pub fn pid(&self) -> Option<u32> {
        self._proc.pid()
    }

    pub async fn start(paths: &Paths, dir: &Path, webhook_url: Option<&str>) -> Result<HookPb> {
        let env: Vec<(&str, String)> = match webhook_url {
            Some(url) => vec![
                ("CF_BRIDGE_WEBHOOK_URL", url.to_string()),
                ("CF_BRIDGE_WEBHOOK_SECRET", cf_bridge::webhook::generate_secret()),
            ],
            None => Vec::new(),
        };
        let (pb, instances, proc) = pb_with_fleet(
            paths,
            &dir.join("pb_data"),
            &paths.root.join("hooks/pb_hooks"),
            &env,
            "h",
        )
        .await?;
        Ok(HookPb {
            pb,
            instances,
            _proc: proc,
        })
    }
}

/// A PocketBase with `hooks_dir`, the base-llm template and 64 stopped instances named after `tag`.
pub async fn pb_with_fleet(
    paths: &Paths,
    data_dir: &Path,
    hooks_dir: &Path,
    env: &[(&str, String)],
    tag: &str,
) -> Result<(Pb, Vec<String>, TestPb)> {
    pb_with_fleet_of(paths, data_dir, hooks_dir, env, tag, 64).await
}

/// Like [`pb_with_fleet`], with `n` instances.
pub async fn pb_with_fleet_of(
    paths: &Paths,
    data_dir: &Path,
    hooks_dir: &Path,
    env: &[(&str, String)],
    tag: &str,
    n: usize,
) -> Result<(Pb, Vec<String>, TestPb)> {
    let proc = procs::start_pocketbase(paths, data_dir, hooks_dir, env).await?;
    let pb = Pb::login(&proc.url, http()?).await?;
    pb.batch_create("bot_templates", &[json!({"name": "base-llm", "active": true})])
        .await?;
    let instances = create_fleet(&pb, tag, n, "stopped").await?;
    Ok((pb, instances, proc))
}

/// The latency baseline: a PocketBase with the same schema and no hooks, a record per pool instance, and
/// a realtime subscriber. The latency phase makes each write there too, at the same moment.
pub struct BareFrames {
    pub pb: Pb,
    /// By pool position.
    pub ids: Vec<String>,
    pub rx: tokio::sync::mpsc::UnboundedReceiver<super::sse::Seen>,
    _proc: TestPb,
}

impl BareFrames {
    pub fn pid(&self) -> Option<u32> {
        self._proc.pid()
    }

    pub async fn start(paths: &Paths, dir: &Path, pool: usize) -> Result<BareFrames> {
        let hooks = dir.join("no-hooks");
        std::fs::create_dir_all(&hooks)?;
        let (pb, ids, proc) = pb_with_fleet_of(paths, &dir.join("pb_data"), &hooks, &[], "f", pool).await?;
        let rx = super::sse::subscribe(&pb).await?;
        Ok(BareFrames {
            pb,
            ids,
            rx,
            _proc: proc,
        })
    }
}
