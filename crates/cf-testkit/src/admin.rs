//! A typed client for the bridge's admin API (bearer token of the test settings).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ADMIN_TOKEN;

pub struct AdminClient {
    pub url: String,
    pub http: reqwest::Client,
}

impl AdminClient {
    pub fn new(url: &str) -> Self {
        AdminClient {
            url: url.to_string(),
            http: crate::http(),
        }
    }

    /// Waits until the bridge has no queued or running job (seen twice in a row, 200 ms apart).
    pub async fn wait_idle(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut quiet = 0;
        while quiet < 2 && Instant::now() < deadline {
            let (_, v) = self.get("/admin/jobs?state=queued,running&limit=1").await;
            let busy = v["counts"]["queued"].as_i64().unwrap_or(0) + v["counts"]["running"].as_i64().unwrap_or(0);
            quiet = if busy == 0 { quiet + 1 } else { 0 };
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(quiet >= 2, "the bridge was still busy after {within:?}");
    }

    /// GET with the admin token; the status and the JSON body (Null if none).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{}", self.url, path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin GET");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Any method with a JSON body and the admin token.
    pub async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .request(method, format!("{}{}", self.url, path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("admin request");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Any method with a raw body (not necessarily JSON) sent as `application/json`; the status and the
    /// raw answer.
    pub async fn send_raw(&self, method: reqwest::Method, path: &str, body: String) -> (u16, String) {
        let r = self
            .http
            .request(method, format!("{}{}", self.url, path))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("admin request");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// `PUT /admin/instances/{id}/secrets` with `secrets` (a JSON map, or anything a test wants refused).
    pub async fn put_secrets(&self, id: &str, secrets: Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, &format!("/admin/instances/{id}/secrets"), secrets)
            .await
    }

    /// Waits until the bridge's realtime stream is subscribed (`cf_bridge_realtime_connected` is 1).
    pub async fn wait_subscribed(&self, timeout: Duration) {
        crate::eventually(timeout, "the bridge's realtime subscription", || async {
            (self.metric("cf_bridge_realtime_connected").await == 1.0).then_some(())
        })
        .await;
    }

    /// The bridge's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// A series' value from `/metrics` (0 when the series does not exist yet), e.g.
    /// `cf_bridge_events_deduplicated_total{source="realtime"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter_map(|l| l.strip_prefix(series))
            .filter_map(|rest| rest.strip_prefix(' '))
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .next()
            .unwrap_or(0.0)
    }

    /// Every journal event of a record (`collection/id` or an id), newest first (all pages), optionally
    /// of one source.
    pub async fn events(&self, record: &str, source: Option<&str>) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<i64> = None;
        for _ in 0..20 {
            let mut path = format!("/admin/events?record={record}&limit=500");
            if let Some(s) = source {
                path.push_str(&format!("&source={s}"));
            }
            if let Some(c) = cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, body) = self.get(&path).await;
            assert_eq!(status, 200, "GET {path}: {body}");
            out.extend(body["events"].as_array().cloned().unwrap_or_default());
            match body["next_cursor"].as_i64() {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
        out
    }

    /// Waits until the record's job is dead (out of attempts: no retry of its own will follow); returns
    /// the job.
    pub async fn wait_dead_job(&self, record_id: &str, timeout: Duration) -> Value {
        crate::eventually(timeout, &format!("a dead job for {record_id}"), || async {
            let (s, body) = self.get("/admin/jobs?state=dead").await;
            assert_eq!(s, 200, "{body}");
            body["jobs"]
                .as_array()?
                .iter()
                .find(|j| j["record_id"] == record_id)
                .cloned()
        })
        .await
    }

    /// Waits until the journal holds an event for `record` with `action` (and `version`) from any of
    /// `sources`; returns it with the time it took.
    pub async fn journaled(
        &self,
        record: &str,
        action: &str,
        version: Version<'_>,
        sources: &[&str],
        timeout: Duration,
    ) -> (Value, Duration) {
        let start = Instant::now();
        loop {
            let events = self.events(record, None).await;
            let wanted =
                |e: &&Value| e["action"] == action && version.matches(e) && sources.iter().any(|s| e["source"] == *s);
            if let Some(ev) = events.iter().find(wanted) {
                return (ev.clone(), start.elapsed());
            }
            if start.elapsed() > timeout {
                let seen: Vec<String> = events
                    .iter()
                    .map(|e| {
                        format!(
                            "{} {} (event {}, job {})",
                            e["source"], e["dedupe_key"], e["id"], e["job_id"]
                        )
                    })
                    .collect();
                panic!(
                    "no {action} of {record} ({version:?}) from {sources:?} within {timeout:?}; journal has {seen:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Which record version an expected event must carry.
#[derive(Debug, Clone, Copy)]
pub enum Version<'a> {
    Any,
    Exactly(&'a str),
    /// This version or a later one (PocketBase's `updated` strings sort by time).
    AtLeast(&'a str),
}

impl Version<'_> {
    pub fn matches(self, event: &Value) -> bool {
        let got = event["record_updated"].as_str().unwrap_or_default();
        match self {
            Version::Any => true,
            Version::Exactly(u) => got == u,
            Version::AtLeast(u) => got >= u,
        }
    }
}

/// Signs in on the operator page at `bridge_url` with the test admin token; the session cookie
/// (`name=value`). `http` must not follow redirects: the sign-in answers 303.
pub async fn ui_session(http: &reqwest::Client, bridge_url: &str) -> String {
    let resp = http
        .post(format!("{bridge_url}/admin/ui/login"))
        .header("sec-fetch-site", "same-origin")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await
        .expect("sign in");
    assert_eq!(resp.status().as_u16(), 303, "the sign-in answers a redirect");
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap_or_default();
    set_cookie.split(';').next().unwrap_or_default().to_string()
}
