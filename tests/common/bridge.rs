//! Spawns the cf-bridge binary against a test PocketBase and coolify-sim, on a free port.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const WEBHOOK_SECRET: &str = "whsec_dGVzdC13ZWJob29rLWtleS1wcmludGFibGUtYXNjaWkhIQ==";
pub const SECRETS_KEY: &str = "test-secrets-key-0123456789abcdef0123456789";
pub const BASE_DOMAIN: &str = "bots.test.example";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub struct BridgeProcess {
    pub url: String,
    pub port: u16,
    pub dir: PathBuf,
    pub log_path: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

impl BridgeProcess {
    /// Starts a bridge with its own temp dir (journal, secret store, log).
    pub async fn start(
        pb_url: &str,
        pb_email: &str,
        pb_password: &str,
        sim_url: &str,
        sim_token: &str,
        extra: &[(&str, &str)],
    ) -> BridgeProcess {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut b = Self::prepare(&dir, pb_url, pb_email, pb_password, sim_url, sim_token, extra);
        b._tmp = Some(tmp);
        b.spawn().await;
        b
    }

    fn prepare(
        dir: &Path,
        pb_url: &str,
        pb_email: &str,
        pb_password: &str,
        sim_url: &str,
        sim_token: &str,
        extra: &[(&str, &str)],
    ) -> BridgeProcess {
        let port = free_port();
        let mut env: Vec<(String, String)> = vec![
            ("CF_BRIDGE__POCKETBASE__URL", pb_url.to_string()),
            ("CF_BRIDGE__POCKETBASE__SUPERUSER_EMAIL", pb_email.to_string()),
            ("CF_BRIDGE__POCKETBASE__SUPERUSER_PASSWORD", pb_password.to_string()),
            ("CF_BRIDGE__POCKETBASE__RESYNC_INTERVAL_SECS", "30".to_string()),
            ("CF_BRIDGE__COOLIFY__URL", sim_url.to_string()),
            ("CF_BRIDGE__COOLIFY__TOKEN", sim_token.to_string()),
            ("CF_BRIDGE__COOLIFY__REQUESTS_PER_MINUTE", "6000".to_string()),
            ("CF_BRIDGE__COOLIFY__REQUEST_TIMEOUT_SECS", "5".to_string()),
            ("CF_BRIDGE__WEBHOOK__SECRET", WEBHOOK_SECRET.to_string()),
            ("CF_BRIDGE__ADMIN__TOKEN", ADMIN_TOKEN.to_string()),
            ("CF_BRIDGE__ADMIN__BIND", format!("127.0.0.1:{port}")),
            ("CF_BRIDGE__JOURNAL__PATH", dir.join("journal.db").display().to_string()),
            ("CF_BRIDGE__DOMAINS__BASE_DOMAIN", BASE_DOMAIN.to_string()),
            ("CF_BRIDGE__ROUTER__BASE_URL", "https://router.test.example".to_string()),
            ("CF_BRIDGE__LOG__FORMAT", "json".to_string()),
            ("CF_BRIDGE__LOG__LEVEL", "info,cf_bridge=debug".to_string()),
            ("CF_BRIDGE__SECRETS__KEY", SECRETS_KEY.to_string()),
            (
                "CF_BRIDGE__SECRETS__STORE_PATH",
                dir.join("secrets.bin").display().to_string(),
            ),
            ("CF_BRIDGE__QUEUE__BASE_BACKOFF_MS", "200".to_string()),
            ("CF_BRIDGE__QUEUE__MAX_BACKOFF_SECS", "2".to_string()),
            (
                "CF_BRIDGE__RECONCILE__TEMPLATES_DIR",
                repo_root().join("templates").display().to_string(),
            ),
            ("CF_BRIDGE__RECONCILE__RUNNING_TIMEOUT_SECS", "20".to_string()),
            ("CF_BRIDGE__RECONCILE__HEALTH_POLL_INTERVAL_SECS", "1".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in extra {
            env.retain(|(ek, _)| ek != k);
            env.push((k.to_string(), v.to_string()));
        }
        BridgeProcess {
            url: format!("http://127.0.0.1:{port}"),
            port,
            dir: dir.to_path_buf(),
            log_path: dir.join("bridge.log"),
            env,
            child: None,
            _tmp: None,
        }
    }

    async fn spawn(&mut self) {
        let config = self.dir.join("cf-bridge.toml");
        std::fs::write(&config, "# tests: settings come from CF_BRIDGE__* variables\n").expect("config file");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_cf-bridge"))
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn cf-bridge");
        self.child = Some(child);
        self.wait_healthy().await;
    }

    async fn wait_healthy(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("cf-bridge exited with {status} during start-up; log:\n{}", self.log());
            }
            if let Ok(r) = client.get(format!("{}/healthz", self.url)).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cf-bridge did not become healthy; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL: no cleanup at all, as in a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else { return false };
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    /// Starts again after `terminate` or `kill9`.
    pub async fn start_again(&mut self) {
        self.spawn().await;
    }

    pub fn admin(&self) -> AdminClient {
        AdminClient {
            url: self.url.clone(),
            http: reqwest::Client::new(),
        }
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct AdminClient {
    pub url: String,
    pub http: reqwest::Client,
}

impl AdminClient {
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .get(format!("{}{}", self.url, path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin GET");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .http
            .request(method, format!("{}{}", self.url, path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("admin request");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(serde_json::Value::Null))
    }
}

/// Polls `check` until it returns Some, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
