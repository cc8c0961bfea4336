//! Spawns a real PocketBase (project migrations and hooks) on a free port with a fresh data dir.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cf_bridge::config::PocketBaseSettings;
use cf_bridge::pocketbase::PbClient;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

pub struct TestPb {
    pub url: String,
    pub port: u16,
    pub email: String,
    pub password: String,
    pub data_dir: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    http: reqwest::Client,
    /// Superuser token reused by the raw helpers (a bcrypt login per request would be slow).
    cached_token: std::sync::Mutex<Option<String>>,
    _tmp: tempfile::TempDir,
}

/// The PocketBase binary, installed once per test process.
pub fn pocketbase_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
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

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local addr")
        .port()
}

impl TestPb {
    pub async fn start() -> TestPb {
        Self::start_with_env(&[]).await
    }

    /// Starts with extra environment variables for the hooks (e.g. BRIDGE_WEBHOOK_URL / _SECRET).
    pub async fn start_with_env(env: &[(&str, &str)]) -> TestPb {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tmp = tempfile::Builder::new()
            .prefix("cf-bridge-pb-")
            .tempdir()
            .expect("temp dir");
        let data_dir = tmp.path().join("pb_data");
        let port = free_port();
        let mut pb = TestPb {
            url: format!("http://127.0.0.1:{port}"),
            port,
            email: "bridge@test.local".into(),
            password: "bridge-test-password-1".into(),
            data_dir,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            child: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            cached_token: std::sync::Mutex::new(None),
            _tmp: tmp,
        };
        let out = pb
            .cli(&["superuser", "upsert", &pb.email.clone(), &pb.password.clone()])
            .await;
        assert!(
            out.status.success(),
            "superuser upsert failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pb.spawn().await;
        pb
    }

    /// Runs a `pocketbase` CLI command against this data dir and the project's migrations, answering
    /// "y" to its confirmation prompt (e.g. `migrate down`).
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        use tokio::io::AsyncWriteExt;
        let migrations = repo_root().join("hooks/pb_migrations");
        let mut child = Command::new(pocketbase_bin())
            .args(args)
            .arg("--dir")
            .arg(&self.data_dir)
            .arg("--migrationsDir")
            .arg(&migrations)
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

    async fn spawn(&mut self) {
        let log_path = self.data_dir.join("pocketbase.log");
        std::fs::create_dir_all(&self.data_dir).expect("data dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let log_err = log.try_clone().expect("log file clone");
        let root = repo_root();
        let child = Command::new(pocketbase_bin())
            .arg("serve")
            .arg("--http")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--dir")
            .arg(&self.data_dir)
            .arg("--migrationsDir")
            .arg(root.join("hooks/pb_migrations"))
            .arg("--hooksDir")
            .arg(root.join("hooks/pb_hooks"))
            .arg("--hooksWatch=false")
            .arg("--automigrate=false")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn pocketbase serve");
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let health = format!("{}/api/health", self.url);
        loop {
            if let Ok(r) = self.http.get(&health).timeout(Duration::from_secs(1)).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("pocketbase exited with {status}; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "pocketbase not healthy after {STARTUP_TIMEOUT:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// PocketBase's stdout/stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("pocketbase.log")).unwrap_or_default()
    }

    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Kills and starts again on the same data dir and port.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// Drops the cached superuser token (after a test changed the superuser's password).
    pub fn forget_token(&self) {
        *self.cached_token.lock().expect("token cache") = None;
    }

    pub async fn superuser_token(&self) -> String {
        self.auth_token("_superusers", &self.email, &self.password).await
    }

    pub fn client(&self) -> PbClient {
        PbClient::new(&self.settings()).expect("pocketbase client")
    }

    /// `[pocketbase]` for this server with its superuser's password.
    pub fn settings(&self) -> PocketBaseSettings {
        PocketBaseSettings::with_password(
            url::Url::parse(&self.url).expect("pocketbase url"),
            &self.email,
            SecretString::from(self.password.clone()),
        )
    }

    pub async fn create_user(&self, email: &str, password: &str) -> String {
        let body = json!({"email": email, "password": password, "passwordConfirm": password});
        let user = self
            .superuser_request("POST", "/api/collections/users/records", Some(&body))
            .await;
        user["id"].as_str().expect("user id").to_string()
    }

    pub async fn user_token(&self, email: &str, password: &str) -> String {
        self.auth_token("users", email, password).await
    }

    pub async fn create_tenant(&self, json: Value) -> Value {
        self.superuser_request("POST", "/api/collections/tenants/records", Some(&json))
            .await
    }

    pub async fn create_template(&self, json: Value) -> Value {
        self.superuser_request("POST", "/api/collections/bot_templates/records", Some(&json))
            .await
    }

    pub async fn create_instance(&self, json: Value) -> Value {
        self.superuser_request("POST", "/api/collections/bot_instances/records", Some(&json))
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

    /// A raw request with the superuser token; panics with PocketBase's answer on a non-2xx status.
    pub async fn superuser_request(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let cached = self.cached_token.lock().expect("token cache").clone();
        let token = match cached {
            Some(t) => t,
            None => {
                let t = self.superuser_token().await;
                *self.cached_token.lock().expect("token cache") = Some(t.clone());
                t
            }
        };
        let (status, value) = self.request_as(&token, method, path, body).await;
        assert!((200..300).contains(&status), "{method} {path} -> {status}: {value}");
        value
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
