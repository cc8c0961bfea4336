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

impl Session<'_> {
    async fn script(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": args}))
            .await
    }

    async fn sign_in(&self, page: &str) {
        self.goto(page).await;
        let token = self.find("#token").await;
        self.post(&format!("/element/{token}/value"), json!({"text": ADMIN_TOKEN}))
            .await;
        let login = self.find("#login").await;
        self.post(&format!("/element/{login}/click"), json!({})).await;
        self.wait_text("h1", |t| t == "cf-bridge").await;
    }

    /// A screenshot as PNG bytes, saved under test-artifacts/.
    async fn screenshot(&self, name: &str) -> Vec<u8> {
        let png = self.get("/screenshot").await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        assert!(bytes.starts_with(b"\x89PNG"), "screenshot is a PNG");
        let dir = repo_root().join("test-artifacts");
        std::fs::create_dir_all(&dir).expect("test-artifacts dir");
        std::fs::write(dir.join(name), &bytes).expect("write screenshot");
        bytes
    }

    /// Decodes a PNG with the browser's own decoder on a blank page (no CSP there): its size, how many
    /// colours it has and the share of the commonest one.
    async fn picture(&self, png: &[u8]) -> (u64, u64, u64, f64) {
        self.goto("about:blank").await;
        let script = "const [b64, done] = arguments; const img = new Image();\
            img.onload = () => { const c = document.createElement('canvas'); c.width = img.width; c.height = img.height;\
              const x = c.getContext('2d'); x.drawImage(img, 0, 0); const d = x.getImageData(0, 0, c.width, c.height).data;\
              const counts = new Map(); for (let i = 0; i < d.length; i += 4) { const k = (d[i] << 16) | (d[i+1] << 8) | d[i+2];\
              counts.set(k, (counts.get(k) || 0) + 1); } let top = 0; for (const v of counts.values()) top = Math.max(top, v);\
              done({w: c.width, h: c.height, colours: counts.size, top: top / (c.width * c.height)}); };\
            img.onerror = () => done({error: 'not a decodable PNG'}); img.src = 'data:image/png;base64,' + b64;";
        let b64 = base64::engine::general_purpose::STANDARD.encode(png);
        let v = self
            .post("/execute/async", json!({"script": script, "args": [b64]}))
            .await;
        assert!(v["error"].is_null(), "{v}");
        (
            v["w"].as_u64().unwrap_or(0),
            v["h"].as_u64().unwrap_or(0),
            v["colours"].as_u64().unwrap_or(0),
            v["top"].as_f64().unwrap_or(1.0),
        )
    }
}

/// Not blank: many colours, none covering (nearly) everything.
fn drawn(picture: (u64, u64, u64, f64)) -> bool {
    let (w, h, colours, top) = picture;
    w >= 800 && h >= 600 && colours >= 16 && top < 0.98
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_changes_live_and_shows_an_instance_timeline() {
    let driver = Driver::start().await;
    let stack = World::start(SIM_QUICK, &[]).await;
    let tenant = stack.user_tenant("live@test.local", "live-ops", "business").await;
    let profile = tempfile::tempdir().expect("profile dir");
    let s = Session::new(&driver, profile.path()).await;
    s.sign_in(&format!("{}/admin/ui", stack.bridge.url)).await;
    s.wait_text("#live", |t| t == "live").await;
    assert_eq!(s.count("#chart-budget").await, 1, "the Coolify budget picture");
    assert_eq!(s.count("#chart-jobs").await, 1, "the jobs picture");
    assert_eq!(s.count("#chart-health").await, 1, "the fleet health picture");
    // A mark that a reload would wipe out.
    s.script("window.cfMark = 'same page'; return null;", json!([])).await;

    // Tenant input that would be markup if it were not escaped.
    let hostile = "<img src=x id=xss onerror=\"document.title='pwned'\">";
    let id = stack
        .create_instance_with(&tenant, "base-llm", "live-one", json!({"name": hostile}))
        .await;
    let status = format!("#inst-{id} td[data-col=status]");
    s.wait_text(&status, |t| !t.is_empty()).await;
    stack.wait_status(&id, "running", Duration::from_secs(60)).await;
    eventually(Duration::from_secs(20), "the row to show running", || async {
        let t = s
            .script(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                json!([status]),
            )
            .await;
        (t == "running").then_some(())
    })
    .await;
    let mark = s.script("return window.cfMark || null;", json!([])).await;
    assert_eq!(mark, "same page", "the row changed without a reload");
    let row = s.wait_text(&format!("#inst-{id}"), |t| t.contains("live-ops")).await;
    assert!(row.contains(hostile), "the name shows as text: {row}");
    assert_eq!(s.count("#xss").await, 0, "a record's name became markup");
    assert_ne!(s.get("/title").await, "pwned");
    // The panels followed too: the deploy's Coolify calls are in this minute's budget.
    s.wait_text("#chart-budget", |t| {
        t.split("Coolify: ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n > 0)
    })
    .await;
    let dashboard = s.screenshot("operator-page-live.png").await;

    // The instance page, through its link.
    let link = s
        .find(&format!("#inst-{id} a[href=\"/admin/ui/instances/{id}\"]"))
        .await;
    s.post(&format!("/element/{link}/click"), json!({})).await;
    s.wait_text("#status", |t| t == "running").await;
    let timeline = eventually(Duration::from_secs(30), "the timeline to show the deploy", || async {
        let kinds: Vec<String> = [
            "t-event",
            "t-job",
            "t-attempt",
            "t-coolify",
            "t-coolify-call",
            "t-deploy_log",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let mut all = true;
        for k in &kinds {
            all &= s.count(&format!("#timeline tr.{k}")).await > 0;
        }
        if !all {
            s.post("/refresh", json!({})).await;
            return None;
        }
        Some(s.wait_text("#timeline", |_| true).await)
    })
    .await;
    assert!(
        timeline.contains("deploy") && timeline.contains("success"),
        "{timeline}"
    );
    assert!(timeline.contains("POST /deploy 200"), "the Coolify calls: {timeline}");
    assert!(!timeline.contains("<img"), "{timeline}");
    assert_eq!(s.count("#xss").await, 0);

    let restart = s.find("#restart").await;
    s.post(&format!("/element/{restart}/click"), json!({})).await;
    let flash = s.wait_text("#flash", |t| !t.is_empty()).await;
    assert!(
        flash.contains(&format!("replayed bot_instances/{id}")),
        "flash after restart: {flash:?}"
    );
    // A replay through the JSON API while the page is open reaches its timeline without a reload.
    s.wait_text("#live", |t| t == "live").await;
    s.script("window.cfMark = 'instance page'; return null;", json!([]))
        .await;
    let events = s.count("#timeline tr.t-event").await;
    let (code, body) = stack
        .bridge
        .admin()
        .send(
            reqwest::Method::POST,
            "/admin/replay",
            json!({"record": format!("bot_instances/{id}")}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    eventually(Duration::from_secs(30), "the replay on the open timeline", || async {
        (s.count("#timeline tr.t-event").await > events).then_some(())
    })
    .await;
    let mark = s.script("return window.cfMark || null;", json!([])).await;
    assert_eq!(mark, "instance page", "the timeline changed without a reload");
    let instance = s.screenshot("operator-instance-page.png").await;

    // The check tells a drawn page from a blank one.
    s.goto("about:blank").await;
    let blank = s.screenshot("blank-page.png").await;
    assert!(!drawn(s.picture(&blank).await), "a blank page passes as drawn");
    for (name, png) in [("dashboard", &dashboard), ("instance page", &instance)] {
        let picture = s.picture(png).await;
        assert!(drawn(picture), "the {name} screenshot looks blank: {picture:?}");
    }
    driver
        .call(reqwest::Method::DELETE, &format!("/session/{}", s.id), None)
        .await;
}
