//! coolify-sim for tests: in the test process on a free port (or on a fixed port with a state file, so
//! that it can be stopped and started again as "the same Coolify"), or as a process (the benchmark
//! measures it); plus a typed client for its `/_sim` API.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cf_bridge::config::CoolifySettings;
use cf_bridge::coolify::CoolifyClient;
use cf_bridge::metrics::Metrics;
use coolify_sim::SimConfig;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::{free_port, http};

pub const SIM_TOKEN: &str = "1|sim-test-token";

/// The simulator's settings from `coolify-sim`'s flags (`--start-delay-ms 300`, ...).
pub fn sim_config(token: &str, args: &[&str]) -> SimConfig {
    let mut cfg = SimConfig {
        tokens: vec![token.to_string()],
        ..SimConfig::default()
    };
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            panic!("coolify-sim flag without a value: {pair:?}")
        };
        let ms = || Duration::from_millis(value.parse().expect("milliseconds"));
        match *flag {
            "--start-delay-ms" => cfg.start_delay = ms(),
            "--running-delay-ms" => cfg.running_delay = ms(),
            "--delete-delay-ms" => cfg.delete_delay = ms(),
            "--rate-limit" => cfg.rate_limit = value.parse().expect("requests per minute"),
            "--state-file" => cfg.state_file = Some(PathBuf::from(value)),
            other => panic!("unknown coolify-sim flag {other}"),
        }
    }
    cfg
}

/// A simulator running in the test process.
pub struct TestSim {
    pub url: String,
    pub port: u16,
    pub token: String,
    args: Vec<String>,
    state_file: Option<PathBuf>,
    handle: Option<actix_web::dev::ServerHandle>,
    _tmp: Option<tempfile::TempDir>,
}

impl TestSim {
    /// Starts the simulator with a fixed token plus `args` (coolify-sim's flags) on a free port.
    pub fn start(args: &[&str]) -> TestSim {
        Self::launch(args, None)
    }

    /// Like [`TestSim::start`], keeping its state in a file so that [`TestSim::start_again`] after
    /// [`TestSim::stop`] brings back the same Coolify on the same port.
    pub fn start_restartable(args: &[&str]) -> TestSim {
        let tmp = tempfile::tempdir().expect("sim temp dir");
        let state = tmp.path().join("sim-state.json");
        let mut sim = Self::launch(args, Some(state));
        sim._tmp = Some(tmp);
        sim
    }

    /// A simulator whose port is chosen but not listened on yet (a Coolify that is down):
    /// [`TestSim::start_again`] brings it up there.
    pub fn reserved(args: &[&str]) -> TestSim {
        Self::unstarted(args, None)
    }

    fn launch(args: &[&str], state_file: Option<PathBuf>) -> TestSim {
        let mut sim = Self::unstarted(args, state_file);
        sim.start_again();
        sim
    }

    fn unstarted(args: &[&str], state_file: Option<PathBuf>) -> TestSim {
        let port = free_port();
        TestSim {
            url: format!("http://127.0.0.1:{port}"),
            port,
            token: SIM_TOKEN.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            state_file,
            handle: None,
            _tmp: None,
        }
    }

    /// Starts on the same port (and state file) after [`TestSim::stop`] or [`TestSim::reserved`].
    pub fn start_again(&mut self) {
        let state = self.state_file.as_ref().map(|p| p.display().to_string());
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        if let Some(state) = &state {
            args.extend(["--state-file", state]);
        }
        let (_, server) = coolify_sim::bind(
            sim_config(&self.token, &args),
            &format!("127.0.0.1:{}", self.port),
            false,
        )
        .expect("start coolify-sim");
        self.handle = Some(server.handle());
        tokio::spawn(server);
    }

    /// Stops answering at once (the state stays in the state file, if any).
    pub fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            drop(handle.stop(false));
        }
    }

    pub fn client_url(&self) -> url::Url {
        url::Url::parse(&self.url).expect("sim url")
    }

    /// `[coolify]` for this simulator: its token and a budget that never holds a test back.
    pub fn settings(&self) -> CoolifySettings {
        let mut s = CoolifySettings::new(self.client_url(), SecretString::from(self.token.clone()));
        s.requests_per_minute = 100_000;
        s.request_timeout = Duration::from_secs(5);
        s
    }

    /// A Coolify client for this simulator, counting in a registry of its own.
    pub fn client(&self) -> CoolifyClient {
        CoolifyClient::new(&self.settings(), Arc::new(Metrics::new())).expect("coolify client")
    }

    async fn get(&self, path: &str) -> Value {
        http()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("sim ops")
            .json()
            .await
            .expect("sim json")
    }

    /// Everything the simulator holds (projects, services with their envs).
    pub async fn state(&self) -> Value {
        self.get("/_sim/state").await
    }

    /// The state, or None while the simulator is down.
    pub async fn try_state(&self) -> Option<Value> {
        http()
            .get(format!("{}/_sim/state", self.url))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// The request log, oldest first.
    pub async fn requests(&self) -> Vec<Value> {
        match self.get("/_sim/requests").await {
            Value::Array(a) => a,
            other => panic!("requests log is not an array: {other}"),
        }
    }

    pub async fn clear_requests(&self) {
        http()
            .delete(format!("{}/_sim/requests", self.url))
            .send()
            .await
            .expect("clear requests");
    }

    pub async fn set_fault(&self, fault: Value) {
        let resp = http()
            .post(format!("{}/_sim/faults", self.url))
            .json(&fault)
            .send()
            .await
            .expect("set fault");
        assert!(
            resp.status().is_success(),
            "set_fault rejected: {}",
            resp.text().await.unwrap_or_default()
        );
    }

    pub async fn clear_faults(&self) {
        http()
            .delete(format!("{}/_sim/faults", self.url))
            .send()
            .await
            .expect("clear faults");
    }

    pub async fn force_status(&self, uuid: &str, status: Option<&str>) {
        let resp = http()
            .post(format!("{}/_sim/services/{uuid}/status", self.url))
            .json(&json!({ "status": status }))
            .send()
            .await
            .expect("force status");
        assert!(resp.status().is_success());
    }

    pub async fn services(&self) -> Vec<Value> {
        self.state().await["services"].as_array().cloned().unwrap_or_default()
    }

    pub async fn projects(&self) -> Vec<Value> {
        self.state().await["projects"].as_array().cloned().unwrap_or_default()
    }

    /// Services with this name that are not being deleted.
    pub async fn services_named(&self, name: &str) -> Vec<Value> {
        self.services()
            .await
            .into_iter()
            .filter(|s| s["name"] == name && s["pending_deletion"] != true)
            .collect()
    }

    pub async fn service(&self, uuid: &str) -> Option<Value> {
        self.services().await.into_iter().find(|s| s["uuid"] == uuid)
    }
}

impl Drop for TestSim {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Count of request log entries for an endpoint template (e.g. "POST /services/{uuid}/restart").
pub fn count(requests: &[Value], template: &str) -> usize {
    requests.iter().filter(|r| r["path"] == template).count()
}

/// The `coolify-sim` binary as a process (killed when dropped), for measurements per process.
pub struct SimProcess {
    pub url: String,
    child: Child,
}

impl SimProcess {
    /// Starts `bin` on a free port with `token` and `args`; its stderr goes to `log`.
    pub fn start(bin: &Path, token: &str, args: &[&str], log: &Path) -> anyhow::Result<SimProcess> {
        use anyhow::Context as _;
        let err = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let mut child = Command::new(bin)
            .args(["--bind", "127.0.0.1:0", "--token", token])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let stdout = child.stdout.take().context("coolify-sim stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let url = line
            .trim()
            .strip_prefix("coolify-sim listening on ")
            .with_context(|| format!("unexpected coolify-sim banner {line:?}"))?
            .to_string();
        Ok(SimProcess { url, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
