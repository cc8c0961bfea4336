//! coolify-sim for tests, running in the test process on a free port.

use std::path::PathBuf;
use std::time::Duration;

use coolify_sim::SimConfig;
use serde_json::Value;

pub struct TestSim {
    pub url: String,
    pub token: String,
    handle: actix_web::dev::ServerHandle,
}

/// The simulator's settings from `coolify-sim`'s command-line flags (`--start-delay-ms 300`, ...).
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

impl TestSim {
    /// Starts the simulator with a fixed token plus `args` (coolify-sim's flags).
    pub fn start(args: &[&str]) -> TestSim {
        let token = "1|sim-test-token".to_string();
        let (addr, server) =
            coolify_sim::bind(sim_config(&token, args), "127.0.0.1:0", false).expect("start coolify-sim");
        let handle = server.handle();
        tokio::spawn(server);
        TestSim {
            url: format!("http://{addr}"),
            token,
            handle,
        }
    }

    pub fn client_url(&self) -> url::Url {
        url::Url::parse(&self.url).expect("sim url")
    }

    /// `[coolify]` for this simulator: its own token, a budget that never holds a test back.
    pub fn settings(&self) -> cf_bridge::config::CoolifySettings {
        let mut s =
            cf_bridge::config::CoolifySettings::new(self.client_url(), secrecy::SecretString::from(self.token.clone()));
        s.requests_per_minute = 100_000;
        s.request_timeout = Duration::from_secs(5);
        s
    }

    async fn get(&self, path: &str) -> Value {
        reqwest_client()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("sim ops")
            .json()
            .await
            .expect("sim json")
    }

    pub async fn state(&self) -> Value {
        self.get("/_sim/state").await
    }

    pub async fn requests(&self) -> Vec<Value> {
        match self.get("/_sim/requests").await {
            Value::Array(a) => a,
            other => panic!("requests log is not an array: {other}"),
        }
    }

    pub async fn clear_requests(&self) {
        reqwest_client()
            .delete(format!("{}/_sim/requests", self.url))
            .send()
            .await
            .expect("clear requests");
    }

    pub async fn set_fault(&self, fault: Value) {
        let resp = reqwest_client()
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
        reqwest_client()
            .delete(format!("{}/_sim/faults", self.url))
            .send()
            .await
            .expect("clear faults");
    }

    pub async fn force_status(&self, uuid: &str, status: Option<&str>) {
        let resp = reqwest_client()
            .post(format!("{}/_sim/services/{uuid}/status", self.url))
            .json(&serde_json::json!({ "status": status }))
            .send()
            .await
            .expect("force status");
        assert!(resp.status().is_success());
    }
}

impl Drop for TestSim {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

pub fn reqwest_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}
