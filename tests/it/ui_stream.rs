//! The change stream (`/admin/stream`, `/admin/ui/stream`): it needs the admin credential, it carries what
//! the bridge does to a record as it happens, and nothing secret is ever in it.

use std::time::Duration;

use cf_testkit::ADMIN_TOKEN;
use cf_testkit::world::{SIM_QUICK, World};
use serde_json::{Value, json};

/// A client without a total timeout (streams stay open) that does not follow redirects.
fn client() -> reqwest::Client {
    let _ = cf_testkit::http();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// An open stream, read as text as it arrives.
pub(crate) struct Stream {
    resp: reqwest::Response,
    seen: String,
}

impl Stream {
    pub(crate) async fn open(url: &str) -> Stream {
        let resp = client()
            .get(format!("{url}/admin/stream"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("open the stream");
        assert_eq!(resp.status().as_u16(), 200);
        let ctype = resp.headers()["content-type"].to_str().unwrap_or_default().to_string();
        assert!(ctype.starts_with("text/event-stream"), "{ctype}");
        Stream {
            resp,
            seen: String::new(),
        }
    }

    /// The `change` messages seen so far.
    pub(crate) fn changes(&self) -> Vec<Value> {
        self.seen
            .split("\n\n")
            .filter_map(|frame| frame.strip_prefix("event: change\ndata: "))
            .filter_map(|data| serde_json::from_str(data).ok())
            .collect()
    }

    /// Reads until a change satisfies `ok`.
    pub(crate) async fn until(&mut self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(found) = self.changes().into_iter().find(|c| ok(c)) {
                return found;
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .unwrap_or_else(|_| panic!("no {what} on the stream; saw:\n{}", self.seen))
                .expect("stream read")
                .unwrap_or_else(|| panic!("the stream ended before {what}; saw:\n{}", self.seen));
            self.seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// Signs in on the page; returns the session cookie (`name=value`).
async fn sign_in(w: &World) -> String {
    cf_testkit::admin::ui_session(&client(), &w.bridge.url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_needs_the_admin_credential() {
    let w = World::start(SIM_QUICK, &[]).await;
    let http = client();
    for (path, auth) in [
        ("/admin/stream", None),
        ("/admin/stream", Some("Bearer wrong-token")),
        ("/admin/ui/stream", None),
        ("/admin/ui/stream", Some("Bearer wrong-token")),
    ] {
        let mut req = http.get(format!("{}{path}", w.bridge.url));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status().as_u16(), 401, "{path} with {auth:?}");
        let body = resp.text().await.unwrap_or_default();
        assert!(
            !body.contains("event:"),
            "{path} streamed without the credential: {body}"
        );
    }
    // A browser's session is a credential on /admin/ui only; its cookie does not open the API's stream.
    let session = sign_in(&w).await;
    let on_page = http
        .get(format!("{}/admin/ui/stream", w.bridge.url))
        .header("cookie", &session)
        .send()
        .await
        .expect("page stream");
    assert_eq!(on_page.status().as_u16(), 200);
    let on_api = http
        .get(format!("{}/admin/stream", w.bridge.url))
        .header("cookie", &session)
        .send()
        .await
        .expect("api stream");
    assert_eq!(on_api.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_bridge_does_arrives_on_the_stream_without_a_secret() {
    let w = World::start(SIM_QUICK, &[]).await;
    let mut stream = Stream::open(&w.bridge.url).await;
    let tenant = w.create_tenant("streamed", "team").await;
    let id = w.create_instance(&tenant, "telegram-bot", "streamed", "running").await;

    let event = stream
        .until("the instance's event", |c| c["kind"] == "event" && c["record_id"] == id)
        .await;
    assert_eq!(event["collection"], "bot_instances", "{event}");
    assert!(event["event_id"].as_i64().is_some_and(|e| e > 0), "{event}");
    assert!(event.get("payload").is_none(), "no payload on the stream: {event}");
    stream
        .until("the job's claim", |c| {
            c["kind"] == "job" && c["record_id"] == id && c["outcome"] == "claimed"
        })
        .await;

    let secret = "123456:stream-must-never-show-this";
    let (code, body) = w
        .bridge
        .admin()
        .put_secrets(&id, json!({"TELEGRAM_BOT_TOKEN": secret}))
        .await;
    assert_eq!(code, 202, "{body}");
    let done = stream
        .until("the job's success after the secrets", |c| {
            c["kind"] == "job" && c["record_id"] == id && c["outcome"] == "succeeded"
        })
        .await;
    assert_eq!(done["collection"], "bot_instances");
    w.wait_status(&id, "running", Duration::from_secs(60)).await;

    let router_key = w
        .sim_envs(&id)
        .await
        .get("CLOUDFREEDOM_API_KEY")
        .map(|(v, _)| v.clone())
        .unwrap_or_default();
    assert!(!router_key.is_empty(), "the stack has a router key");
    for hidden in [secret, "stream-must-never-show-this", ADMIN_TOKEN, router_key.as_str()] {
        assert!(
            !stream.seen.contains(hidden),
            "the stream carried a secret ({hidden:.8}...)"
        );
    }
}
