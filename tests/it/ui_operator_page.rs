//! The operator page in headless Chromium (Debian's chromium + chromium-driver, installed by
//! scripts/install-test-deps.sh): sign in with the token, replay a failed job, see it succeed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use cf_testkit::world::{SIM_QUICK, World};
use cf_testkit::{ADMIN_TOKEN, eventually, free_port, repo_root};
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver_path() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("chromedriver"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("chromedriver is not installed: run scripts/install-test-deps.sh (Debian chromium-driver)")
    })
}

impl Driver {
    async fn start() -> Driver {
        let port = free_port();
        let child = Command::new(chromedriver_path())
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: cf_testkit::http(),
        };
        eventually(Duration::from_secs(20), "chromedriver to be ready", || async {
            let r = driver.http.get(format!("{}/status", driver.url)).send().await.ok()?;
            let v: Value = r.json().await.ok()?;
            (v["value"]["ready"] == true).then_some(())
        })
        .await;
        driver
    }

    async fn try_call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.url))
            .timeout(Duration::from_secs(60));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("webdriver {method} {path}: {e}"))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!(
                "webdriver {method} {path} -> {status}: {}",
                v["value"]["message"]
            ));
        }
        Ok(v["value"].clone())
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Session<'_> {
    async fn new<'d>(driver: &'d Driver, profile: &std::path::Path) -> Session<'d> {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1280,1000",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let caps =
            json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {"args": args}}}});
        let v = driver.call(reqwest::Method::POST, "/session", Some(caps)).await;
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id: {v}"))
            .to_string();
        Session { driver, id }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.driver
            .call(
                reqwest::Method::POST,
                &format!("/session/{}{path}", self.id),
                Some(body),
            )
            .await
    }

    async fn get(&self, path: &str) -> Value {
        self.driver
            .call(reqwest::Method::GET, &format!("/session/{}{path}", self.id), None)
            .await
    }

    async fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url})).await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    async fn count(&self, css: &str) -> usize {
        let v = self
            .post("/elements", json!({"using": "css selector", "value": css}))
            .await;
        v.as_array().map(Vec::len).unwrap_or(0)
    }

    /// The text of `css` once it exists and satisfies `ok` (a click's navigation may still be under way).
    async fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let script = "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;";
        let path = format!("/session/{}/execute/sync", self.id);
        eventually(Duration::from_secs(15), &format!("{css} on the page"), || async {
            let body = json!({"script": script, "args": [css]});
            let v = self
                .driver
                .try_call(reqwest::Method::POST, &path, Some(body))
                .await
                .ok()?;
            v.as_str().filter(|t| ok(t)).map(str::to_string)
        })
        .await
    }

    async fn source(&self) -> String {
        self.get("/source").await.as_str().unwrap_or_default().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_signs_in_and_replays_a_failed_job() {
    let driver = Driver::start().await;
    let stack = World::start(SIM_QUICK, &[("CF_BRIDGE__QUEUE__MAX_ATTEMPTS", "2")]).await;
    let tenant = stack.user_tenant("ops@test.local", "ops-test", "business").await;
    stack
        .sim
        .set_fault(json!({"route": "POST /services", "error_rate": 1.0}))
        .await;
    let id = stack.create_instance(&tenant, "base-llm", "replay-ui", "running").await;
    stack.bridge.admin().wait_dead_job(&id, Duration::from_secs(40)).await;
    stack.sim.clear_faults().await;

    let profile = tempfile::tempdir().expect("profile dir");
    let s = Session::new(&driver, profile.path()).await;
    let page = format!("{}/admin/ui", stack.bridge.url);

    s.goto(&page).await;
    assert_eq!(s.count("#failed-jobs").await, 0, "the page shows data before sign-in");
    let token = s.find("#token").await;
    s.post(&format!("/element/{token}/value"), json!({"text": "wrong-token"}))
        .await;
    let login = s.find("#login").await;
    s.post(&format!("/element/{login}/click"), json!({})).await;
    s.wait_text("p.error", |t| t.contains("That token is not valid")).await;

    let token = s.find("#token").await;
    s.post(&format!("/element/{token}/value"), json!({"text": ADMIN_TOKEN}))
        .await;
    let login = s.find("#login").await;
    s.post(&format!("/element/{login}/click"), json!({})).await;
    s.wait_text("h1", |t| t == "cf-bridge").await;

    let cookies = s.get("/cookie").await;
    let session = cookies
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "cf_bridge_session"))
        .unwrap_or_else(|| panic!("no session cookie: {cookies}"))
        .clone();
    assert_eq!(session["httpOnly"], true, "{session}");
    assert_eq!(session["sameSite"], "Strict", "{session}");
    assert!(
        !session["value"].as_str().unwrap_or_default().contains(ADMIN_TOKEN),
        "the cookie must not hold the token"
    );

    let record = format!("bot_instances/{id}");
    let button = s
        .find(&format!("#failed-jobs button.replay[data-record=\"{record}\"]"))
        .await;
    s.post(&format!("/element/{button}/click"), json!({})).await;
    let flash = s.wait_text("#flash", |t| !t.is_empty()).await;
    assert!(
        flash.contains(&format!("replayed {record}")),
        "flash after replay: {flash:?}"
    );

    stack.wait_status(&id, "running", Duration::from_secs(40)).await;
    assert_eq!(
        stack.services_for(&id).await.len(),
        1,
        "exactly one service after the replay"
    );
    let shown = eventually(
        Duration::from_secs(20),
        "the page to show the instance running",
        || async {
            s.post("/refresh", json!({})).await;
            let html = s.source().await;
            let row_running =
                html.contains(&format!("<code>{id}</code>")) && html.contains("class=\"running\">running<");
            let still_failed = s
                .count(&format!("#failed-jobs button.replay[data-record=\"{record}\"]"))
                .await
                > 0;
            (row_running && !still_failed).then_some(html)
        },
    )
    .await;
    assert!(shown.contains("Recent events"));

    let png = s.get("/screenshot").await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap_or_default())
        .expect("screenshot is base64");
    assert!(bytes.starts_with(b"\x89PNG"), "screenshot is a PNG");
    let dir = repo_root().join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("test-artifacts dir");
    std::fs::write(dir.join("operator-page.png"), &bytes).expect("write screenshot");

    let logout = s.find("form[action=\"/admin/ui/logout\"] button").await;
    s.post(&format!("/element/{logout}/click"), json!({})).await;
    s.wait_text("#login", |t| t == "Sign in").await;
    assert_eq!(s.count("#failed-jobs").await, 0, "signed out, no data shows");
    driver
        .call(reqwest::Method::DELETE, &format!("/session/{}", s.id), None)
        .await;
}
