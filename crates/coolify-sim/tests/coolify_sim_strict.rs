//! The simulator rejects what Coolify rejects (raw HTTP, no client in between).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use coolify_sim::LOCALHOST_SERVER_UUID;
use serde_json::{Value, json};

/// The `coolify-sim` binary, started on a free port with one token.
struct SimProcess {
    url: String,
    token: String,
    child: Child,
}

impl SimProcess {
    fn start(args: &[&str]) -> SimProcess {
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
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reqwest_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

const COMPOSE: &str = "services:\n  bot:\n    image: ghcr.io/cf/bot:1\n";

struct Api<'a> {
    sim: &'a SimProcess,
    http: reqwest::Client,
}

impl Api<'_> {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, reqwest::header::HeaderMap, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = self
            .http
            .request(m, format!("{}/api/v1{path}", self.sim.url))
            .bearer_auth(&self.sim.token)
            .header("Accept", "application/json");
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("send");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn project(&self) -> String {
        let (s, _, b) = self.call("POST", "/projects", Some(json!({"name": "cf-strict"}))).await;
        assert_eq!(s, 201);
        b["uuid"].as_str().expect("uuid").to_string()
    }

    fn service(&self, project: &str, compose_raw: &str) -> Value {
        json!({"project_uuid": project, "environment_name": "production", "server_uuid": LOCALHOST_SERVER_UUID,
               "name": "cf-s", "docker_compose_raw": compose_raw})
    }
}

#[tokio::test]
async fn rejects_what_coolify_rejects() {
    let sim = SimProcess::start(&["--rate-limit", "100000"]);
    let api = Api {
        sim: &sim,
        http: reqwest_client(),
    };
    let p = api.project().await;
    let b64_err = json!({"docker_compose_raw": "The docker_compose_raw should be base64 encoded."});

    // Compose as plain YAML.
    let (s, _, b) = api.call("POST", "/services", Some(api.service(&p, COMPOSE))).await;
    assert_eq!((s, &b["errors"]), (422, &b64_err));
    // Base64 with line breaks (what the `base64` CLI produces).
    let good = STANDARD.encode(COMPOSE);
    let wrapped = format!("{}\n{}", &good[..20], &good[20..]);
    let (s, _, b) = api.call("POST", "/services", Some(api.service(&p, &wrapped))).await;
    assert_eq!((s, &b["errors"]), (422, &b64_err));
    // Unknown field (connect_to_docker_network is not on the create allowlist) and a stray uuid.
    let mut body = api.service(&p, &good);
    body["connect_to_docker_network"] = json!(true);
    body["uuid"] = json!("x");
    let (s, _, b) = api.call("POST", "/services", Some(body)).await;
    assert_eq!(s, 422);
    assert_eq!(
        b["errors"]["connect_to_docker_network"],
        json!(["This field is not allowed."])
    );
    assert_eq!(b["errors"]["uuid"], json!(["This field is not allowed."]));
    // A domain already in use.
    let mut first = api.service(&p, &good);
    first["urls"] = json!([{"name": "bot", "url": "https://used.example.com"}]);
    let (s, _, _) = api.call("POST", "/services", Some(first.clone())).await;
    assert_eq!(s, 201);
    let (s, _, b) = api.call("POST", "/services", Some(first.clone())).await;
    assert_eq!(s, 409);
    assert_eq!(b["conflicts"][0]["domain"], "used.example.com");
    assert_eq!(b["conflicts"][0]["resource_type"], "service");
    first["force_domain_override"] = json!(true);
    let (s, _, _) = api.call("POST", "/services", Some(first)).await;
    assert_eq!(s, 201, "force_domain_override bypasses the check");
    // A blank url clears the container's domain (Coolify's applyServiceUrls), which frees it.
    let mut freed = api.service(&p, &good);
    freed["urls"] = json!([{"name": "bot", "url": "https://freed.example.com"}]);
    let (s, _, b) = api.call("POST", "/services", Some(freed.clone())).await;
    assert_eq!(s, 201, "{b}");
    let uuid = b["uuid"].as_str().expect("uuid").to_string();
    let clear = json!({"urls": [{"name": "bot", "url": ""}]});
    let (s, _, b) = api.call("PATCH", &format!("/services/{uuid}"), Some(clear)).await;
    assert_eq!(s, 200, "{b}");
    let (s, _, b) = api.call("POST", "/services", Some(freed)).await;
    assert_eq!(s, 201, "the cleared domain is free again: {b}");

    // Invalid YAML is a 500 in Coolify; no services map is a 422.
    let (s, _, _) = api
        .call(
            "POST",
            "/services",
            Some(api.service(&p, &STANDARD.encode("services: ["))),
        )
        .await;
    assert_eq!(s, 500);
    let (s, _, _) = api
        .call(
            "POST",
            "/services",
            Some(api.service(&p, &STANDARD.encode("version: '3'\n"))),
        )
        .await;
    assert_eq!(s, 422);
    // Both type and compose; neither environment.
    let mut both = api.service(&p, &good);
    both["type"] = json!("gitea");
    assert_eq!(api.call("POST", "/services", Some(both)).await.0, 422);
    let mut no_env = api.service(&p, &good);
    no_env.as_object_mut().expect("obj").remove("environment_name");
    let (s, _, b) = api.call("POST", "/services", Some(no_env)).await;
    assert_eq!(s, 422);
    assert!(b["message"].as_str().expect("message").contains("environment_name"));
}

#[tokio::test]
async fn request_hygiene_auth_and_routing() {
    let sim = SimProcess::start(&["--rate-limit", "100000"]);
    let http = reqwest_client();
    let url = |p: &str| format!("{}{p}", sim.url);

    let r = http
        .post(url("/api/v1/projects"))
        .bearer_auth(&sim.token)
        .body("{\"name\":\"abc\"}")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "Content-Type must be application/json."
    );
    let r = http
        .post(url("/api/v1/projects"))
        .bearer_auth(&sim.token)
        .header("Content-Type", "application/json")
        .body("{nope")
        .send()
        .await
        .expect("send");
    assert_eq!(r.json::<Value>().await.expect("json")["error"], "Invalid JSON.");
    let r = http
        .post(url("/api/v1/projects"))
        .bearer_auth(&sim.token)
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.json::<Value>().await.expect("json")["error"], "Empty JSON.");

    let r = http
        .get(url("/api/v1/projects"))
        .bearer_auth("1|other")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"message": "Unauthenticated."})
    );

    let r = http.put(url("/api/v1/projects")).send().await.expect("send");
    assert_eq!(r.status(), 404, "wrong method hits the catch-all");
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"message": "Not found.", "docs": "https://coolify.io/docs"})
    );

    let r = http
        .get(url("/api/v1/services/abc/start"))
        .bearer_auth(&sim.token)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");

    let r = http
        .get(url("/api/v1/version"))
        .bearer_auth(&sim.token)
        .send()
        .await
        .expect("send");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/html")
    );
    assert!(r.headers().contains_key("x-ratelimit-remaining"));
    assert_eq!(r.text().await.expect("text"), "4.3.11");
    let r = http.get(url("/api/health")).send().await.expect("send");
    assert_eq!(r.text().await.expect("text"), "OK");

    // Env rules: POST on an existing key is 409, PATCH matches by key, values must be strings.
    let p: Value = http
        .post(url("/api/v1/projects"))
        .bearer_auth(&sim.token)
        .json(&json!({"name": "cf-env"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let svc: Value = http
        .post(url("/api/v1/services"))
        .bearer_auth(&sim.token)
        .json(&json!({"project_uuid": p["uuid"], "environment_name": "production", "server_uuid": LOCALHOST_SERVER_UUID,
                      "docker_compose_raw": STANDARD.encode("services:\n  bot:\n    image: x\n    environment:\n      A: ${A}\n")}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let envs = url(&format!(
        "/api/v1/services/{}/envs",
        svc["uuid"].as_str().expect("uuid")
    ));
    let r = http
        .post(&envs)
        .bearer_auth(&sim.token)
        .json(&json!({"key": "A", "value": "1"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 409, "compose-referenced keys already exist");
    let r = http
        .patch(&envs)
        .bearer_auth(&sim.token)
        .json(&json!({"key": "A", "value": "2"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 201);
    let r = http
        .patch(&envs)
        .bearer_auth(&sim.token)
        .json(&json!({"key": "B", "value": "2"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    let r = http
        .post(&envs)
        .bearer_auth(&sim.token)
        .json(&json!({"key": "N", "value": 5}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 422, "numbers are not strings");
    let r = http
        .patch(format!("{envs}/bulk"))
        .bearer_auth(&sim.token)
        .json(&json!({"data": []}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let got: Value = http
        .get(url(&format!(
            "/api/v1/services/{}",
            svc["uuid"].as_str().expect("uuid")
        )))
        .bearer_auth(&sim.token)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(
        got["name"].as_str().expect("name").starts_with("service-"),
        "default name"
    );
}

#[tokio::test]
async fn runs_in_process() {
    let cfg = coolify_sim::SimConfig {
        tokens: vec!["t".into()],
        ..Default::default()
    };
    let sim = coolify_sim::RunningSim::start(cfg).await.expect("start in-process sim");
    let r = reqwest_client()
        .get(format!("{}/api/v1/servers", sim.url))
        .bearer_auth("t")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let servers: Value = r.json().await.expect("json");
    assert_eq!(servers[0]["uuid"], LOCALHOST_SERVER_UUID);
    sim.stop().await;
}

/// `POST /deploy?uuid=a,b`: one call starts several services, with no "already running" check; uuids of no
/// service are passed over, none known is a 404, and a GET answers 405.
#[tokio::test]
async fn batch_deploy_starts_every_service_named() {
    let sim = SimProcess::start(&[
        "--rate-limit",
        "100000",
        "--start-delay-ms",
        "0",
        "--running-delay-ms",
        "0",
    ]);
    let api = Api {
        sim: &sim,
        http: reqwest_client(),
    };
    let project = api.project().await;
    let raw = STANDARD.encode(COMPOSE);
    let mut uuids = Vec::new();
    for _ in 0..2 {
        let (s, _, b) = api.call("POST", "/services", Some(api.service(&project, &raw))).await;
        assert_eq!(s, 201, "{b}");
        uuids.push(b["uuid"].as_str().expect("uuid").to_string());
    }
    let (s, _, b) = api
        .call(
            "POST",
            &format!("/deploy?uuid={},{},nosuchservice", uuids[0], uuids[1]),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let started: Vec<&str> = b["deployments"]
        .as_array()
        .expect("deployments")
        .iter()
        .map(|d| d["resource_uuid"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(started, [uuids[0].as_str(), uuids[1].as_str()]);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    for u in &uuids {
        let (_, _, svc) = api.call("GET", &format!("/services/{u}"), None).await;
        assert!(
            svc["status"].as_str().unwrap_or_default().starts_with("running"),
            "{svc}"
        );
    }
    let (s, _, b) = api.call("POST", &format!("/services/{}/start", uuids[0]), None).await;
    assert_eq!(s, 400, "a start refuses a running service: {b}");
    let (s, _, b) = api.call("POST", &format!("/deploy?uuid={}", uuids[0]), None).await;
    assert_eq!(s, 200, "a deploy does not: {b}");
    let (s, _, b) = api.call("POST", "/deploy?uuid=nosuchservice", None).await;
    assert_eq!((s, b), (404, json!({"message": "No resources found."})));
    let (s, _, _) = api.call("GET", &format!("/deploy?uuid={}", uuids[0]), None).await;
    assert_eq!(s, 405);
}
