//! Thin HTTP helpers for the benchmark: PocketBase as superuser, coolify-sim's ops routes, the bridge's
//! admin API, metrics and webhook endpoint.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use cf_testkit::ADMIN_TOKEN;
use cf_testkit::sim::SIM_TOKEN;

use super::procs::{PB_EMAIL, PB_PASSWORD};
use cf_bridge::webhook::WebhookSecret;

pub fn http() -> Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build()?)
}

#[derive(Clone)]
pub struct Pb {
    pub url: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Pb {
    pub async fn login(url: &str, http: reqwest::Client) -> Result<Pb> {
        let r = http
            .post(format!("{url}/api/collections/_superusers/auth-with-password"))
            .json(&json!({"identity": PB_EMAIL, "password": PB_PASSWORD}))
            .send()
            .await?;
        let v: Value = r.json().await?;
        let token = v["token"]
            .as_str()
            .context("PocketBase login answered without a token")?
            .to_string();
        Ok(Pb {
            url: url.to_string(),
            token,
            http,
        })
    }

    /// Status and JSON body (Null when empty).
    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("Authorization", &self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        Ok((
            status,
            if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            },
        ))
    }

    pub async fn ok(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, v) = self.request(method.clone(), path, body).await?;
        if !(200..300).contains(&status) {
            bail!("PocketBase {method} {path} -> {status}: {v}");
        }
        Ok(v)
    }

    pub async fn patch(&self, collection: &str, id: &str, body: &Value) -> Result<u16> {
        Ok(self
            .request(
                reqwest::Method::PATCH,
                &format!("/api/collections/{collection}/records/{id}"),
                Some(body),
            )
            .await?
            .0)
    }

    /// Creates records through `/api/batch` (50 per transaction); returns their ids in order.
    pub async fn batch_create(&self, collection: &str, records: &[Value]) -> Result<Vec<String>> {
        let mut ids = Vec::with_capacity(records.len());
        for chunk in records.chunks(50) {
            let requests: Vec<Value> = chunk
                .iter()
                .map(|body| json!({"method": "POST", "url": format!("/api/collections/{collection}/records"), "body": body}))
                .collect();
            let answers = self
                .ok(
                    reqwest::Method::POST,
                    "/api/batch",
                    Some(&json!({ "requests": requests })),
                )
                .await?;
            for a in answers.as_array().context("batch answer is not a list")? {
                if a["status"] != 200 {
                    bail!("batch item failed: {a}");
                }
                ids.push(a["body"]["id"].as_str().context("batch record without id")?.to_string());
            }
        }
        Ok(ids)
    }

    /// How many records match `filter`.
    pub async fn count(&self, collection: &str, filter: &str) -> Result<u64> {
        let path = format!(
            "/api/collections/{collection}/records?perPage=1&filter={}",
            urlencode(filter)
        );
        let v = self.ok(reqwest::Method::GET, &path, None).await?;
        v["totalItems"].as_u64().context("list without totalItems")
    }

    /// `field` of every record matching `filter`, by id.
    pub async fn field_by_id(&self, collection: &str, filter: &str, field: &str) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        for page in 1.. {
            let path = format!(
                "/api/collections/{collection}/records?perPage=500&page={page}&skipTotal=1&fields=id,{field}&filter={}",
                urlencode(filter)
            );
            let v = self.ok(reqwest::Method::GET, &path, None).await?;
            let items = v["items"].as_array().context("list without items")?;
            for it in items {
                if let (Some(id), Some(f)) = (it["id"].as_str(), it[field].as_str()) {
                    out.insert(id.to_string(), f.to_string());
                }
            }
            if items.len() < 500 {
                break;
            }
        }
        Ok(out)
    }
}

/// A time as PocketBase writes and filters it.
pub fn pb_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string()
}

impl Pb {
    /// Requests in PocketBase's request log between `from` and `to` ([`pb_time`]) that match `filter`
    /// (e.g. `data.method != "GET"`). PocketBase writes its log in batches: wait a few seconds after `to`.
    pub async fn logged_requests(&self, filter: &str, from: &str, to: &str) -> Result<u64> {
        // Request rows only: a hook's log line has no `data.method`, which `data.method != "GET"` would match.
        let filter = format!("data.type = \"request\" && ({filter}) && created >= \"{from}\" && created <= \"{to}\"");
        let v = self
            .ok(
                reqwest::Method::GET,
                &format!("/api/logs?perPage=1&filter={}", urlencode(&filter)),
                None,
            )
            .await?;
        v["totalItems"].as_u64().context("PocketBase logs without totalItems")
    }
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// One entry of coolify-sim's request log.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct SimRequest {
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub uri: String,
    pub status: u16,
    pub at_ms: u64,
    /// The answer's body (None for a list too long for the simulator to keep).
    #[serde(default)]
    pub response: Option<Value>,
}

#[derive(Clone)]
pub struct Sim {
    pub url: String,
    pub http: reqwest::Client,
}

impl Sim {
    pub async fn requests(&self) -> Result<Vec<SimRequest>> {
        Ok(self
            .http
            .get(format!("{}/_sim/requests", self.url))
            .send()
            .await?
            .json()
            .await?)
    }

    pub async fn clear_requests(&self) -> Result<()> {
        self.http.delete(format!("{}/_sim/requests", self.url)).send().await?;
        Ok(())
    }

    pub async fn set_fault(&self, fault: Value) -> Result<()> {
        let r = self
            .http
            .post(format!("{}/_sim/faults", self.url))
            .json(&fault)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("coolify-sim refused fault: {}", r.text().await.unwrap_or_default());
        }
        Ok(())
    }

    pub async fn clear_faults(&self) -> Result<()> {
        self.http.delete(format!("{}/_sim/faults", self.url)).send().await?;
        Ok(())
    }

    /// The local instant the simulator's `at_ms == 0` corresponds to: one timed, logged request.
    /// Our `Instant` for the simulator's time zero, from the quickest of several timed requests: one slow
    /// answer would shift every logged call by half its round trip.
    pub async fn clock_zero(&self) -> Result<Instant> {
        const PROBES: usize = 10;
        let mut sent = Vec::with_capacity(PROBES);
        for _ in 0..PROBES {
            let before = Instant::now();
            self.http
                .get(format!("{}/api/v1/version", self.url))
                .bearer_auth(SIM_TOKEN)
                .send()
                .await?;
            sent.push((before, Instant::now()));
        }
        let log = self.requests().await?;
        let logged: Vec<u64> = log
            .iter()
            .filter(|r| r.path == "GET /version")
            .map(|r| r.at_ms)
            .collect();
        let logged = logged
            .get(logged.len().saturating_sub(PROBES)..)
            .filter(|l| l.len() == PROBES)
            .context("calibration requests not logged")?;
        let (before, after, at) = sent
            .iter()
            .zip(logged)
            .map(|((b, a), at)| (*b, *a, *at))
            .min_by_key(|(b, a, _)| *a - *b)
            .context("no calibration request")?;
        let mid = before + (after - before) / 2;
        mid.checked_sub(Duration::from_millis(at))
            .context("simulator clock ahead of ours")
    }
}

#[derive(Clone)]
pub struct Bridge {
    pub url: String,
    pub http: reqwest::Client,
}

/// The bridge's flood counters at one moment ([`Bridge::floods`]).
#[derive(Debug, Clone, Copy)]
pub struct Floods {
    raised: f64,
    spaced: f64,
}

impl Floods {
    /// What the bridge counted between `self` and `later`, for a phase's note.
    pub fn until(self, later: Floods) -> String {
        format!(
            "the flood sign went up {:.0} times and held back {:.0} of the bridge's PocketBase writes",
            later.raised - self.raised,
            later.spaced - self.spaced
        )
    }
}

impl Bridge {
    pub async fn admin(&self, method: reqwest::Method, path: &str) -> Result<Value> {
        let r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("bridge {path} -> {status}: {v}");
        }
        Ok(v)
    }

    /// Jobs queued or running.
    pub async fn busy_jobs(&self) -> Result<i64> {
        let v = self
            .admin(reqwest::Method::GET, "/admin/jobs?state=queued&limit=1")
            .await?;
        Ok(v["counts"]["queued"].as_i64().unwrap_or(0) + v["counts"]["running"].as_i64().unwrap_or(0))
    }

    /// Waits until no job is queued or running (checked twice in a row), up to `limit`; returns the wait.
    pub async fn wait_idle(&self, limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        let mut quiet = 0;
        while start.elapsed() < limit {
            if self.busy_jobs().await? == 0 {
                quiet += 1;
                if quiet >= 2 {
                    return Ok(start.elapsed());
                }
            } else {
                quiet = 0;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("bridge still busy after {limit:?}")
    }

    /// Sum of a metric's samples (all label sets) from `/metrics`.
    pub async fn metric_sum(&self, name: &str) -> Result<f64> {
        self.metric_sum_where(name, "").await
    }

    /// Sum of a metric's samples whose line contains `label` (e.g. `source="webhook"`).
    pub async fn metric_sum_where(&self, name: &str, label: &str) -> Result<f64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' ')))
            .filter(|l| l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// The bridge's flood counters so far: the floods its realtime stream showed, and its PocketBase
    /// writes after which the next was held back because of one.
    pub async fn floods(&self) -> Result<Floods> {
        Ok(Floods {
            raised: self.metric_sum("cf_bridge_pocketbase_floods_total").await?,
            spaced: self.metric_sum("cf_bridge_pocketbase_writes_spaced_total").await?,
        })
    }

    /// Events the journal accepted as new (received minus duplicates).
    pub async fn journaled(&self) -> Result<f64> {
        Ok(self.metric_sum("cf_bridge_events_received_total").await?
            - self.metric_sum("cf_bridge_events_deduplicated_total").await?)
    }

    /// Posts one signed webhook as the PocketBase hook would; returns the status.
    pub async fn webhook(&self, secret: &WebhookSecret, id: &str, body: &[u8]) -> Result<u16> {
        let ts = chrono::Utc::now().timestamp().to_string();
        let r = self
            .http
            .post(format!("{}{}", self.url, cf_bridge::http::ingest::PATH))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", &ts)
            .header("webhook-signature", secret.sign(id, &ts, body))
            .body(body.to_vec())
            .send()
            .await?;
        Ok(r.status().as_u16())
    }
}
