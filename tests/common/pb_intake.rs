//! Test harness for the event sources: a real PocketBase with the project's hooks and a test-only
//! schema, plus an in-memory EventSink.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cf_bridge::events::{EventSink, Ingested, NewEvent, Replay, ReplayFuture, SinkError, SinkFuture};
use serde_json::{Value, json};

pub const SUPERUSER: &str = "bridge@example.com";
pub const PASSWORD: &str = "intake-test-password";

/// Test-only schema; the project's real migration lives elsewhere and is not needed here.
const SCHEMA: &str = r#"migrate((app) => {
  const tenants = new Collection({
    type: "base", name: "tenants",
    fields: [
      { name: "name", type: "text", required: true },
      { name: "status", type: "text" },
      { name: "created", type: "autodate", onCreate: true, onUpdate: false },
      { name: "updated", type: "autodate", onCreate: true, onUpdate: true },
    ],
  });
  app.save(tenants);
  const instances = new Collection({
    type: "base", name: "bot_instances",
    fields: [
      { name: "tenant", type: "relation", required: true, maxSelect: 1, cascadeDelete: true, collectionId: tenants.id },
      { name: "name", type: "text", required: true },
      { name: "config", type: "json" },
      { name: "api_token", type: "text" },
      { name: "secrets_hash", type: "text" },
      { name: "created", type: "autodate", onCreate: true, onUpdate: false },
      { name: "updated", type: "autodate", onCreate: true, onUpdate: true },
    ],
  });
  app.save(instances);
}, (app) => {});
"#;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn pocketbase_binary() -> PathBuf {
    let out = Command::new(repo_root().join("scripts/install-pocketbase.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/install-pocketbase.sh");
    assert!(out.status.success(), "install-pocketbase.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).expect("utf-8 path").trim())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .expect("local addr")
        .port()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create hooks copy");
    for entry in std::fs::read_dir(from).expect("read hooks dir") {
        let entry = entry.expect("dir entry");
        if entry.file_type().expect("file type").is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy hook file");
        }
    }
}

#[derive(Default)]
pub struct PbOptions {
    /// Extra environment for PocketBase (the webhook hook reads its target from it).
    pub env: Vec<(String, String)>,
    /// Run on a private copy of hooks/pb_hooks, which the test may modify.
    pub copy_hooks: bool,
}

pub struct Pb {
    pub port: u16,
    pub base: String,
    pub token: String,
    pub hooks_dir: PathBuf,
    binary: PathBuf,
    env: Vec<(String, String)>,
    tmp: tempfile::TempDir,
    child: Option<Child>,
    http: reqwest::Client,
}

impl Pb {
    pub async fn start(opts: PbOptions) -> Pb {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let binary = pocketbase_binary();
        let tmp = tempfile::tempdir().expect("temp dir");
        let migrations = tmp.path().join("migrations");
        std::fs::create_dir_all(&migrations).expect("migrations dir");
        std::fs::write(migrations.join("1700000000_intake_test_schema.js"), SCHEMA).expect("write schema");
        let hooks_dir = if opts.copy_hooks {
            let dir = tmp.path().join("pb_hooks");
            copy_dir(&repo_root().join("hooks/pb_hooks"), &dir);
            dir
        } else {
            repo_root().join("hooks/pb_hooks")
        };
        let port = free_port();
        let mut pb = Pb {
            port,
            base: format!("http://127.0.0.1:{port}"),
            token: String::new(),
            hooks_dir,
            binary,
            env: opts.env,
            tmp,
            child: None,
            http: reqwest::Client::new(),
        };
        let status = Command::new(&pb.binary)
            .args(["superuser", "upsert", SUPERUSER, PASSWORD])
            .args(pb.common_args())
            .stdout(Stdio::null())
            .status()
            .expect("run pocketbase superuser upsert");
        assert!(status.success(), "superuser upsert failed");
        pb.spawn().await;
        pb.token = pb.login().await;
        pb
    }

    fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("pb_data")
    }

    fn common_args(&self) -> Vec<String> {
        vec![
            format!("--dir={}", self.data_dir().display()),
            format!("--migrationsDir={}", self.tmp.path().join("migrations").display()),
            format!("--hooksDir={}", self.hooks_dir.display()),
            "--automigrate=false".into(),
            "--hooksPool=4".into(),
        ]
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tmp.path().join("pocketbase.log"))
            .expect("open pocketbase log");
        let child = Command::new(&self.binary)
            .arg("serve")
            .arg(format!("--http=127.0.0.1:{}", self.port))
            .args(self.common_args())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn pocketbase serve");
        self.child = Some(child);
        self.wait_healthy().await;
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(format!("{}/api/health", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("PocketBase did not become healthy; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("pocketbase.log")).unwrap_or_default()
    }

    async fn login(&self) -> String {
        let r: Value = self
            .http
            .post(format!("{}/api/collections/_superusers/auth-with-password", self.base))
            .json(&json!({ "identity": SUPERUSER, "password": PASSWORD }))
            .send()
            .await
            .expect("login request")
            .json()
            .await
            .expect("login json");
        r["token"].as_str().expect("token in login response").to_owned()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills and restarts PocketBase on the same port and data dir.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Value {
        let resp = req
            .header("Authorization", &self.token)
            .send()
            .await
            .expect("PocketBase request");
        let status = resp.status();
        let body = resp.text().await.expect("PocketBase response body");
        assert!(status.is_success(), "PocketBase answered {status}: {body}");
        if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&body).expect("PocketBase json")
        }
    }

    pub async fn create(&self, collection: &str, body: Value) -> Value {
        self.send(
            self.http
                .post(format!("{}/api/collections/{collection}/records", self.base))
                .json(&body),
        )
        .await
    }

    pub async fn update(&self, collection: &str, id: &str, body: Value) -> Value {
        self.send(
            self.http
                .patch(format!("{}/api/collections/{collection}/records/{id}", self.base))
                .json(&body),
        )
        .await
    }

    /// Runs a registered cron job now.
    pub async fn run_cron(&self, id: &str) {
        self.send(self.http.post(format!("{}/api/crons/{id}", self.base))).await;
    }

    /// Entries of PocketBase's log store matching a filter.
    pub async fn logs(&self, filter: &str) -> Vec<Value> {
        let mut url = url::Url::parse(&format!("{}/api/logs", self.base)).expect("logs url");
        url.query_pairs_mut().append_pair("filter", filter);
        let req = self.http.get(url);
        let page = self.send(req).await;
        page["items"].as_array().cloned().unwrap_or_default()
    }

    pub async fn delete(&self, collection: &str, id: &str) {
        self.send(
            self.http
                .delete(format!("{}/api/collections/{collection}/records/{id}", self.base)),
        )
        .await;
    }
}

impl Drop for Pb {
    fn drop(&mut self) {
        self.kill();
    }
}

/// In-memory sink deduplicating like the journal: by change key and by webhook delivery id.
#[derive(Default)]
pub struct MemorySink {
    events: Mutex<Vec<NewEvent>>,
    /// Every event offered, duplicates included.
    offered: Mutex<Vec<NewEvent>>,
    pub unavailable: AtomicBool,
}

impl MemorySink {
    pub fn events(&self) -> Vec<NewEvent> {
        self.events.lock().expect("sink lock").clone()
    }

    pub fn offered(&self) -> Vec<NewEvent> {
        self.offered.lock().expect("sink lock").clone()
    }

    /// Polls until `done(events)` holds; panics with the events seen after `timeout`.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&[NewEvent]) -> bool) -> Vec<NewEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if done(&events) {
                return events;
            }
            assert!(Instant::now() < deadline, "timed out; sink holds {events:#?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl EventSink for MemorySink {
    fn ingest(&self, event: NewEvent) -> SinkFuture<'_> {
        Box::pin(async move {
            if self.unavailable.load(Ordering::SeqCst) {
                return Err(SinkError::Unavailable("test sink switched off".into()));
            }
            self.offered.lock().expect("sink lock").push(event.clone());
            let mut events = self.events.lock().expect("sink lock");
            let dup = events.iter().any(|e| {
                e.dedupe_key == event.dedupe_key || (e.delivery_id.is_some() && e.delivery_id == event.delivery_id)
            });
            if dup {
                return Ok(Ingested::Duplicate);
            }
            events.push(event);
            Ok(Ingested::New {
                event_id: events.len() as i64,
                job_id: 1,
                coalesced: false,
            })
        })
    }

    fn replay(&self, _: Replay) -> ReplayFuture<'_> {
        Box::pin(async { Err(SinkError::Unavailable("the test sink does not replay".into())) })
    }
}
