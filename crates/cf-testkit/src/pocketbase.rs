//! The one PocketBase launcher: a real PocketBase 0.40.6 on a free port, with the project's migrations
//! and hooks (or a test's own), a fresh data directory and a superuser; plus the raw superuser requests
//! tests use to set records up and read them back.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cf_bridge::config::PocketBaseSettings;
use cf_bridge::pocketbase::PbClient;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::{free_port, repo_root};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How to run a PocketBase; the default is the project's schema and hooks in a temporary directory.
#[derive(Debug, Clone, Default)]
pub struct PbOptions {
    /// Environment for PocketBase (the webhook hook reads its target and secret from it).
    pub env: Vec<(String, String)>,
    /// A schema migration (JavaScript) to run instead of the project's migrations (a test-only schema).
    pub schema: Option<String>,
    /// Hooks instead of the project's.
    pub hooks: Option<PathBuf>,
    /// Run on a private copy of the hooks, which the test may change.
    pub copy_hooks: bool,
    /// Let PocketBase watch its hooks and reload when one changes (with `copy_hooks`).
    pub watch_hooks: bool,
    /// Keep the data here instead of in a temporary directory.
    pub data_dir: Option<PathBuf>,
    /// The superuser's email and password (default: a test one).
    pub superuser: Option<(String, String)>,
    /// The binary (default: [`pocketbase_bin`]).
    pub binary: Option<PathBuf>,
    /// `--hooksPool`: the JS runtimes PocketBase keeps for hook handlers (default: PocketBase's, 15).
    pub hooks_pool: Option<u32>,
}

impl PbOptions {
    pub fn env(pairs: &[(&str, &str)]) -> Self {
        PbOptions {
            env: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }
}

pub struct TestPb {
    pub url: String,
    pub port: u16,
    pub email: String,
    pub password: String,
    pub data_dir: PathBuf,
    pub hooks_dir: PathBuf,
    migrations_dir: PathBuf,
    binary: PathBuf,
    watch_hooks: bool,
    hooks_pool: Option<u32>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    http: reqwest::Client,
    /// Superuser token reused by the raw helpers (a bcrypt login per request would be slow).
    cached_token: std::sync::Mutex<Option<String>>,
    _tmp: tempfile::TempDir,
}

/// The PocketBase binary: `$PB_BIN` (scripts/test.sh exports it), else what the install script prints.
pub fn pocketbase_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("PB_BIN").filter(|b| !b.is_empty()) {
            return PathBuf::from(bin);
        }
        let out = std::process::Command::new(repo_root().join("scripts/install-pocketbase.sh"))
            .output()
            .expect("run scripts/install-pocketbase.sh");
        assert!(
            out.status.success(),
            "install-pocketbase.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string();
        PathBuf::from(path)
    })
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

impl TestPb {
    pub async fn start() -> TestPb {
        Self::start_with(PbOptions::default()).await
    }

    /// Starts with extra environment variables for the hooks (e.g. CF_BRIDGE_WEBHOOK_URL / _SECRET).
    pub async fn start_with_env(env: &[(&str, &str)]) -> TestPb {
        Self::start_with(PbOptions::env(env)).await
    }

    pub async fn start_with(opts: PbOptions) -> TestPb {
        match Self::try_start(opts).await {
            Ok(pb) => pb,
            Err(e) => panic!("PocketBase did not start: {e:#}"),
        }
    }

    /// Like [`TestPb::start_with`], with the failure as an error (for the benchmark).
    pub async fn try_start(opts: PbOptions) -> anyhow::Result<TestPb> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tmp = tempfile::Builder::new().prefix("cf-bridge-pb-").tempdir()?;
        let data_dir = opts.data_dir.clone().unwrap_or_else(|| tmp.path().join("pb_data"));
        let hooks_dir = match (&opts.hooks, opts.copy_hooks) {
            (hooks, true) => {
                let copy = tmp.path().join("pb_hooks");
                let from = hooks.clone().unwrap_or_else(|| repo_root().join("hooks/pb_hooks"));
                copy_dir(&from, &copy).context("copying the hooks")?;
                copy
            }
            (Some(hooks), false) => hooks.clone(),
            (None, false) => repo_root().join("hooks/pb_hooks"),
        };
        let (email, password) = opts
            .superuser
            .clone()
            .unwrap_or_else(|| ("bridge@test.local".into(), "bridge-test-password-1".into()));
        let migrations_dir = match &opts.schema {
            Some(js) => {
                let dir = tmp.path().join("migrations");
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("1700000000_test_schema.js"), js)?;
                dir
            }
            None => repo_root().join("hooks/pb_migrations"),
        };
        let port = free_port();
        let mut pb = TestPb {
            url: format!("http://127.0.0.1:{port}"),
            port,
            email,
            password,
            data_dir,
            hooks_dir,
            migrations_dir,
            binary: opts.binary.clone().unwrap_or_else(|| pocketbase_bin().to_path_buf()),
            watch_hooks: opts.watch_hooks,
            hooks_pool: opts.hooks_pool,
            env: opts.env,
            child: None,
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?,
            cached_token: std::sync::Mutex::new(None),
            _tmp: tmp,
        };
        std::fs::create_dir_all(&pb.data_dir)?;
        let out = pb
            .cli(&["superuser", "upsert", &pb.email.clone(), &pb.password.clone()])
            .await;
        if !out.status.success() {
            bail!("superuser upsert failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        // The port was free when looked at, but another test or process may take it before PocketBase binds
        // it (see `free_port`). Another port then.
        for _ in 0..4 {
            match pb.spawn().await {
                Err(e) if format!("{e:#}").contains("address already in use") => {
                    pb.port = free_port();
                    pb.url = format!("http://127.0.0.1:{}", pb.port);
                }
                done => return done.map(|()| pb),
            }
        }
        pb.spawn().await?;
        Ok(pb)
    }

    /// Runs a `pocketbase` CLI command against this data dir and migrations, answering "y" to its
    /// confirmation prompt (e.g. `migrate down`).
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        use tokio::io::AsyncWriteExt;
        let mut child = Command::new(&self.binary)
            .args(args)
            .arg("--dir")
            .arg(&self.data_dir)
            .arg("--migrationsDir")
            .arg(&self.migrations_dir)
            .arg("--automigrate=false")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run pocketbase cli");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"y\n").await;
        }
        child.wait_with_output().await.expect("pocketbase cli output")
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.join("pocketbase.log")
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let logged_before = log.metadata()?.len();
        let log_err = log.try_clone()?;
        let child = Command::new(&self.binary)
            .arg("serve")
            .arg("--http")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--dir")
            .arg(&self.data_dir)
            .arg("--migrationsDir")
            .arg(&self.migrations_dir)
            .arg("--hooksDir")
            .arg(&self.hooks_dir)
            .arg(format!("--hooksWatch={}", self.watch_hooks))
            .args(self.hooks_pool.map(|n| format!("--hooksPool={n}")))
            .arg("--automigrate=false")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .context("spawn pocketbase serve")?;
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let health = format!("{}/api/health", self.url);
        // Only this process's word that it serves on the port: a health answer alone may come from whatever
        // took the port first.
        let serving = format!("Server started at {}", self.url);
        loop {
            if self.log_since(logged_before).contains(&serving)
                && let Ok(r) = self.http.get(&health).timeout(Duration::from_secs(1)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!("pocketbase exited with {status}; log:\n{}", self.log());
            }
            if Instant::now() > deadline {
                bail!("pocketbase not healthy after {STARTUP_TIMEOUT:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// PocketBase's stdout/stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// What PocketBase logged after the first `offset` bytes (those of its earlier runs).
    fn log_since(&self, offset: u64) -> String {
        let log = self.log();
        log.get(usize::try_from(offset).unwrap_or(usize::MAX)..)
            .unwrap_or_default()
            .to_owned()
    }

    /// Whether the process started last is still the one serving (a hooks reload re-execs in place).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The process id, for resource readings.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Kills and starts again on the same data dir and port.
    pub async fn restart(&mut self) {
        self.kill().await;
        if let Err(e) = self.spawn().await {
            panic!("PocketBase did not start again: {e:#}");
        }
    }

    /// Drops the cached superuser token (after a test changed the superuser's password).
    pub fn forget_token(&self) {
        *self.cached_token.lock().expect("token cache") = None;
    }

    /// A fresh superuser token (a login).
    pub async fn superuser_token(&self) -> String {
        self.auth_token("_superusers", &self.email, &self.password).await
    }

    /// `[pocketbase]` for this server with its superuser's password.
    pub fn settings(&self) -> PocketBaseSettings {
        PocketBaseSettings::with_password(
            url::Url::parse(&self.url).expect("pocketbase url"),
            &self.email,
            SecretString::from(self.password.clone()),
        )
    }

    pub fn client(&self) -> PbClient {
        PbClient::new(&self.settings()).expect("pocketbase client")
    }

    pub async fn create_user(&self, email: &str, password: &str) -> String {
        let body = json!({"email": email, "password": password, "passwordConfirm": password});
        let user = self.create_record("users", body).await;
        user["id"].as_str().expect("user id").to_string()
    }

    pub async fn user_token(&self, email: &str, password: &str) -> String {
        self.auth_token("users", email, password).await
    }

    pub async fn create_record(&self, collection: &str, json: Value) -> Value {
        self.superuser_request("POST", &format!("/api/collections/{collection}/records"), Some(&json))
            .await
    }

    pub async fn create_tenant(&self, json: Value) -> Value {
        self.create_record("tenants", json).await
    }

    pub async fn create_template(&self, json: Value) -> Value {
        self.create_record("bot_templates", json).await
    }

    pub async fn create_instance(&self, json: Value) -> Value {
        self.create_record("bot_instances", json).await
    }

    pub async fn record(&self, collection: &str, id: &str) -> Value {
        self.superuser_request("GET", &format!("/api/collections/{collection}/records/{id}"), None)
            .await
    }

    pub async fn patch(&self, collection: &str, id: &str, json: Value) -> Value {
        self.superuser_request(
            "PATCH",
            &format!("/api/collections/{collection}/records/{id}"),
            Some(&json),
        )
        .await
    }

    pub async fn delete(&self, collection: &str, id: &str) {
        self.superuser_request("DELETE", &format!("/api/collections/{collection}/records/{id}"), None)
            .await;
    }

    /// A tenant on the business plan and a `base-llm` template record (no required secrets), so that
    /// instances can run; returns (tenant id, template id).
    pub async fn seed_tenant(&self, slug: &str) -> (String, String) {
        let template = self
            .create_template(json!({"name": "base-llm", "cpu_default": 1.0, "mem_default": 1024, "active": true}))
            .await;
        let tenant = self
            .create_tenant(json!({"name": slug, "slug": slug, "status": "active", "plan_tier": "business"}))
            .await;
        (crate::id(&tenant), crate::id(&template))
    }

    /// An instance of `template` for `tenant`, named and served at `sub`.
    pub async fn create_instance_for(&self, tenant: &str, template: &str, sub: &str, desired: &str) -> Value {
        self.create_instance(
            json!({"tenant": tenant, "template": template, "name": sub, "subdomain": sub,
                                   "desired_state": desired, "config": {}}),
        )
        .await
    }

    /// Waits until the instance reads `status`.
    pub async fn wait_instance_status(&self, instance: &str, status: &str, timeout: Duration) {
        let what = format!("instance {instance} status {status}");
        crate::eventually(timeout, &what, || async {
            let (code, r) = self
                .request_as(
                    &self.cached_token().await,
                    "GET",
                    &format!("/api/collections/bot_instances/records/{instance}"),
                    None,
                )
                .await;
            (code == 200 && r["status"] == status).then_some(())
        })
        .await;
    }

    /// Every record of `collection` matching `filter` (PocketBase filter syntax), oldest first.
    pub async fn list(&self, collection: &str, filter: &str) -> Vec<Value> {
        let filter: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
        let path = format!("/api/collections/{collection}/records?perPage=500&sort=created&filter={filter}");
        let v = self.superuser_request("GET", &path, None).await;
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// Every page of a collection (at most 10 pages of 500), in `sort` order.
    pub async fn list_all(&self, collection: &str, sort: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for page in 1..=10 {
            let v = self
                .superuser_request(
                    "GET",
                    &format!("/api/collections/{collection}/records?perPage=500&page={page}&sort={sort}"),
                    None,
                )
                .await;
            let items = v["items"].as_array().cloned().unwrap_or_default();
            let n = items.len();
            out.extend(items);
            if n < 500 {
                break;
            }
        }
        out
    }

    /// Creates records through `/api/batch`, 50 per transaction; returns their ids in order.
    pub async fn batch_create(&self, collection: &str, records: &[Value]) -> Vec<String> {
        let mut ids = Vec::with_capacity(records.len());
        for chunk in records.chunks(50) {
            let requests: Vec<Value> = chunk
                .iter()
                .map(|body| json!({"method": "POST", "url": format!("/api/collections/{collection}/records"), "body": body}))
                .collect();
            let answers = self
                .superuser_request("POST", "/api/batch", Some(&json!({"requests": requests})))
                .await;
            for a in answers.as_array().expect("batch answer list") {
                assert_eq!(a["status"], 200, "batch item failed: {a}");
                ids.push(a["body"]["id"].as_str().expect("batch record id").to_string());
            }
        }
        ids
    }

    /// Runs a registered cron job now.
    pub async fn run_cron(&self, id: &str) {
        self.superuser_request("POST", &format!("/api/crons/{id}"), None).await;
    }

    /// Entries of PocketBase's log store matching a filter.
    pub async fn logs(&self, filter: &str) -> Vec<Value> {
        let filter: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
        let page = self
            .superuser_request("GET", &format!("/api/logs?filter={filter}"), None)
            .await;
        page["items"].as_array().cloned().unwrap_or_default()
    }

    /// A raw request with the superuser token; panics with PocketBase's answer on a non-2xx status.
    pub async fn superuser_request(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let token = self.cached_token().await;
        let (status, value) = self.request_as(&token, method, path, body).await;
        assert!((200..300).contains(&status), "{method} {path} -> {status}: {value}");
        value
    }

    /// The superuser token the raw helpers use, logged in once.
    pub async fn cached_token(&self) -> String {
        let cached = self.cached_token.lock().expect("token cache").clone();
        match cached {
            Some(t) => t,
            None => {
                let t = self.superuser_token().await;
                *self.cached_token.lock().expect("token cache") = Some(t.clone());
                t
            }
        }
    }

    /// A raw request with any token (or none); returns the status and the JSON body (Null if empty).
    pub async fn request_as(&self, token: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("http method");
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if !token.is_empty() {
            req = req.header("Authorization", token);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("pocketbase request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("pocketbase body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        (status, value)
    }

    async fn auth_token(&self, collection: &str, email: &str, password: &str) -> String {
        let body = json!({"identity": email, "password": password});
        let (status, v) = self
            .request_as(
                "",
                "POST",
                &format!("/api/collections/{collection}/auth-with-password"),
                Some(&body),
            )
            .await;
        assert_eq!(status, 200, "login as {email} failed: {v}");
        v["token"].as_str().expect("token").to_string()
    }
}

impl Drop for TestPb {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
