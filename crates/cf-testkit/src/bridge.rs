//! The bridge under test: in the test process ([`TestBridge`], through `App::build_on` and `App::run`,
//! with a log of its own) or as a process ([`BridgeProcess`], where `kill -9`, SIGTERM or the exit of
//! `cf-bridge serve` is what is tested).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cf_bridge::app::{App, RunError};
use cf_bridge::config::LogFormat;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::instrument::WithSubscriber;
use tracing_subscriber::fmt::MakeWriter;

use crate::admin::AdminClient;
use crate::settings::{PbAccess, TestSettings};
use crate::sim::TestSim;
use crate::{bind_local, free_port, tail};

/// A bridge running in the test process; it stops (without waiting) when dropped.
pub struct TestBridge {
    pub url: String,
    pub port: u16,
    pub dir: PathBuf,
    pub log_path: PathBuf,
    settings: TestSettings,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), RunError>>>,
    _tmp: Option<tempfile::TempDir>,
}

/// A file the bridge's log lines go to (one per bridge, appended across restarts).
struct LogFile(Mutex<std::fs::File>);

impl std::io::Write for &LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = &'a LogFile;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl TestBridge {
    /// Builds and runs a bridge with `settings` on `listener` (bound to `settings.port`). Panics with the
    /// start-up error and the log when the bridge does not start.
    pub async fn start(settings: TestSettings, listener: TcpListener) -> TestBridge {
        let log_path = settings.dir.join("bridge.log");
        let mut bridge = TestBridge {
            url: format!("http://127.0.0.1:{}", settings.port),
            port: settings.port,
            dir: settings.dir.clone(),
            log_path,
            settings,
            shutdown: None,
            task: None,
            _tmp: None,
        };
        bridge.launch(listener).await;
        bridge
    }

    /// A bridge with the test settings and a temporary directory of its own, for `pb` (its URL may be a
    /// proxy's) and `sim`; `env` overrides settings.
    pub async fn for_stack(pb: PbAccess<'_>, sim: &TestSim, env: &[(&str, &str)]) -> TestBridge {
        Self::for_stack_on(bind_local(), pb, sim, env).await
    }

    /// Like [`TestBridge::for_stack`], on a socket bound beforehand (PocketBase's hooks must know the
    /// bridge's address before the bridge, which needs PocketBase, exists).
    pub async fn for_stack_on(
        listener: TcpListener,
        pb: PbAccess<'_>,
        sim: &TestSim,
        env: &[(&str, &str)],
    ) -> TestBridge {
        let tmp = tempfile::tempdir().expect("bridge dir");
        let port = listener.local_addr().expect("bridge address").port();
        let settings = TestSettings::new(pb, &sim.url, &sim.token, tmp.path(), port).with(env);
        let mut bridge = TestBridge::start(settings, listener).await;
        bridge._tmp = Some(tmp);
        bridge
    }

    async fn launch(&mut self, listener: TcpListener) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("bridge log file");
        let s = self.settings.settings();
        let exporter = cf_bridge::otel::Exporter::new(&s.telemetry).expect("OTLP exporter");
        let logs = cf_bridge::telemetry::dispatch_exporting(
            LogFormat::Json,
            &s.log.level,
            LogFile(Mutex::new(file)),
            exporter.as_ref(),
        );
        let app = match App::build_on(s, listener).with_subscriber(logs.clone()).await {
            Ok(app) => app,
            Err(e) => panic!("the bridge did not start: {}\n{}", chain(&e), tail(&self.log(), 40)),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let run = async move {
            let ran = app
                .run(async {
                    let _ = rx.await;
                })
                .await;
            if let Some(exporter) = exporter {
                exporter.shutdown().await;
            }
            ran
        };
        self.shutdown = Some(tx);
        self.task = Some(tokio::spawn(run.with_subscriber(logs)));
    }

    /// Asks the bridge to shut down and waits until it has (as SIGTERM does for the process); true
    /// when it stopped cleanly.
    pub async fn stop(&mut self) -> bool {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => matches!(
                tokio::time::timeout(Duration::from_secs(40), task).await,
                Ok(Ok(Ok(())))
            ),
            None => false,
        }
    }

    /// Stops and starts again on the same port, journal and secret store.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Starts again after [`TestBridge::stop`], on the same port, journal and secret store.
    pub async fn start_again(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("bind the bridge's port again");
        self.launch(listener).await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn admin(&self) -> AdminClient {
        AdminClient::new(&self.url)
    }

    /// The settings it runs with (also the CLI's, through [`TestSettings::toml`]).
    pub fn settings(&self) -> &TestSettings {
        &self.settings
    }
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(tmp) = self._tmp.take() {
            keep_if_failed(tmp);
        }
    }
}

/// A failed test keeps its bridge's directory (log, journal, secret store) for a look afterwards.
pub(crate) fn keep_if_failed(dir: tempfile::TempDir) {
    if std::thread::panicking() {
        eprintln!("the bridge's files are kept in {}", dir.keep().display());
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `cf-bridge serve` as a process, with its settings in its environment and its log in `dir`.
pub struct BridgeProcess {
    pub url: String,
    pub port: u16,
    pub dir: PathBuf,
    pub log_path: PathBuf,
    bin: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

impl BridgeProcess {
    /// Starts `bin` (the cf-bridge binary) with `settings` and waits until `/healthz` answers.
    pub async fn start(bin: &Path, settings: &TestSettings) -> BridgeProcess {
        match Self::try_start(bin, settings).await {
            Ok(b) => b,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// Like [`BridgeProcess::start`], with the failure as an error (for the benchmark).
    pub async fn try_start(bin: &Path, settings: &TestSettings) -> anyhow::Result<BridgeProcess> {
        let mut b = BridgeProcess {
            url: format!("http://127.0.0.1:{}", settings.port),
            port: settings.port,
            dir: settings.dir.clone(),
            log_path: settings.dir.join("bridge.log"),
            bin: bin.to_path_buf(),
            env: settings.env().to_vec(),
            child: None,
            _tmp: None,
        };
        b.spawn().await?;
        Ok(b)
    }

    /// A bridge process with the test settings and a temporary directory of its own, for `pb` (its URL
    /// may be a proxy's) and `sim`; `env` overrides settings.
    pub async fn for_stack(bin: &Path, pb: PbAccess<'_>, sim: &TestSim, env: &[(&str, &str)]) -> BridgeProcess {
        let tmp = tempfile::tempdir().expect("bridge dir");
        let settings = TestSettings::new(pb, &sim.url, &sim.token, tmp.path(), free_port()).with(env);
        let mut bridge = BridgeProcess::start(bin, &settings).await;
        bridge._tmp = Some(tmp);
        bridge
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let config = self.dir.join("cf-bridge.toml");
        std::fs::write(&config, "# tests: settings come from CF_BRIDGE__* variables\n")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()?;
        self.child = Some(child);
        self.wait_healthy().await
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                anyhow::bail!("cf-bridge exited with {status} during start-up; log:\n{}", self.log());
            }
            if let Ok(r) = client.get(format!("{}/healthz", self.url)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("cf-bridge did not become healthy; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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

    /// kill -9 and start again on the same port, journal and secret store.
    pub async fn restart(&mut self) {
        self.kill9();
        self.start_again().await;
    }

    /// Starts again after `terminate` or `kill9`.
    pub async fn start_again(&mut self) {
        if let Err(e) = self.spawn().await {
            panic!("{e:#}");
        }
    }

    pub fn admin(&self) -> AdminClient {
        AdminClient::new(&self.url)
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        self.kill9();
        if let Some(tmp) = self._tmp.take() {
            keep_if_failed(tmp);
        }
    }
}
