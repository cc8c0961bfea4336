//! What the stream check costs PocketBase: the bridge's ping (hooks/pb_hooks/ping.pb.js) against a
//! PocketBase with the project's hooks, timed from the POST to the frame on the stream, and PocketBase's
//! CPU per ping, beside the same number of `GET /api/health` (its cheapest request).

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::client::{Pb, http};
use super::procs::{self, Paths};
use super::report::{Figure, Report};
use super::stats::summarize;
use cf_bridge::pocketbase::realtime::{Frame, KEEPALIVE_TOPIC, SseParser};

const SECTION: &str = "6 stream check";
const WARM_UP: usize = 50;
const FRAME_WAIT: Duration = Duration::from_secs(5);

/// A superuser's realtime stream subscribed to the keepalive topic.
struct Stream {
    chunks: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<Vec<u8>>> + Send>>,
    parser: SseParser,
    frames: VecDeque<Frame>,
}

impl Stream {
    async fn open(pb: &Pb) -> Result<(Stream, String)> {
        let resp = pb
            .http
            .get(format!("{}/api/realtime", pb.url))
            .header("Authorization", &pb.token)
            .timeout(Duration::from_secs(24 * 3600))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("realtime connect answered {}", resp.status());
        }
        let mut stream = Stream {
            chunks: Box::pin(resp.bytes_stream().map(|c| c.map(|b| b.to_vec()))),
            parser: SseParser::default(),
            frames: VecDeque::new(),
        };
        let connect = stream.next_frame().await?;
        let client_id = serde_json::from_str::<Value>(&connect.data)?["clientId"]
            .as_str()
            .context("PB_CONNECT without clientId")?
            .to_string();
        pb.ok(
            reqwest::Method::POST,
            "/api/realtime",
            Some(&json!({"clientId": client_id, "subscriptions": [KEEPALIVE_TOPIC]})),
        )
        .await?;
        Ok((stream, client_id))
    }

    async fn next_frame(&mut self) -> Result<Frame> {
        loop {
            if let Some(f) = self.frames.pop_front() {
                return Ok(f);
            }
            let chunk = tokio::time::timeout(FRAME_WAIT, self.chunks.next())
                .await
                .context("no realtime frame within 5 s")?
                .context("the realtime stream ended")??;
            self.frames.extend(self.parser.push(&chunk)?);
        }
    }
}

/// One ping, from the POST until its nonce arrives on the stream.
async fn ping(pb: &Pb, stream: &mut Stream, client_id: &str, nonce: &str) -> Result<Duration> {
    let t = Instant::now();
    let answer = pb
        .ok(
            reqwest::Method::POST,
            "/api/cf-bridge/ping",
            Some(&json!({"clientId": client_id, "nonce": nonce})),
        )
        .await?;
    if answer["sent"] != true {
        bail!("PocketBase did not send the ping: {answer}");
    }
    let want = json!({ "ping": nonce });
    loop {
        let f = stream.next_frame().await?;
        if f.event == KEEPALIVE_TOPIC && serde_json::from_str::<Value>(&f.data).ok() == Some(want.clone()) {
            return Ok(t.elapsed());
        }
    }
}

/// Measures `pings` pings and as many health requests on a PocketBase of its own; adds the rows.
pub async fn ping_cost(paths: &Paths, dir: &Path, pings: usize, interval_secs: f64, report: &mut Report) -> Result<()> {
    let proc = procs::start_pocketbase(paths, &dir.join("pb_data"), &paths.root.join("hooks/pb_hooks"), &[]).await?;
    let pid = proc.pid().context("PocketBase is not running")?;
    let pb = Pb::login(&proc.url, http()?).await?;
    let (mut stream, client_id) = Stream::open(&pb).await?;
    for n in 0..WARM_UP {
        ping(&pb, &mut stream, &client_id, &format!("w{n}")).await?;
    }
    let cpu = || procs::cpu_secs(pid).unwrap_or(f64::NAN);
    let before = cpu();
    let mut rtts = Vec::with_capacity(pings);
    for n in 0..pings {
        rtts.push(ping(&pb, &mut stream, &client_id, &format!("p{n}")).await?);
    }
    let ping_cpu = (cpu() - before) / pings as f64;
    let before = cpu();
    let mut health = Vec::with_capacity(pings);
    for _ in 0..pings {
        let t = Instant::now();
        pb.ok(reqwest::Method::GET, "/api/health", None).await?;
        health.push(t.elapsed());
    }
    let health_cpu = (cpu() - before) / pings as f64;
    let (rtt, base) = (summarize(&rtts), summarize(&health));
    for (q, v, b) in [("p50", rtt.p50_ms, base.p50_ms), ("p99", rtt.p99_ms, base.p99_ms)] {
        report.add(
            Figure::new(
                SECTION,
                format!("ping round trip, POST to its frame on the stream, {q} ({pings} pings)"),
                v,
                "ms",
            )
            .vs(b, "GET /api/health"),
        );
    }
    report.add(
        Figure::new(SECTION, "PocketBase CPU per ping", ping_cpu * 1e6, "µs").vs(health_cpu * 1e6, "GET /api/health"),
    );
    report.add(Figure::new(
        SECTION,
        format!("PocketBase CPU for one ping every {interval_secs} s, share of a core"),
        ping_cpu / interval_secs * 100.0,
        "%",
    ));
    Ok(())
}
