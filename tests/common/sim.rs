//! Spawns coolify-sim for tests.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub struct SimProcess {
    pub url: String,
    pub token: String,
    child: Child,
}

impl SimProcess {
    /// Starts `coolify-sim` on a free port with a fixed token plus `args`.
    pub fn start(args: &[&str]) -> SimProcess {
        let token = "1|sim-test-token".to_string();
        let mut child = Command::new(env!("CARGO_BIN_EXE_coolify-sim"))
            .args(["--bind", "127.0.0.1:0", "--token", &token])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn coolify-sim");
        let stdout = child.stdout.take().expect("coolify-sim stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read coolify-sim banner");
        let url = line
            .trim()
            .strip_prefix("coolify-sim listening on ")
            .unwrap_or_else(|| panic!("unexpected coolify-sim banner: {line:?}"))
            .to_string();
        SimProcess { url, token, child }
    }

    pub fn client_url(&self) -> url::Url {
        url::Url::parse(&self.url).expect("sim url")
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

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn reqwest_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}
