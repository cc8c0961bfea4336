//! The baseline: a plain realtime subscriber (superuser) that timestamps every bot_instances frame.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::client::Pb;
use cf_bridge::pocketbase::realtime::SseParser;

/// One frame as seen by the subscriber: arrival time and the record.
pub struct Seen {
    pub at: Instant,
    pub record: Value,
}

/// A subscriber that reads and parses every frame and keeps none (the least any reader of the stream
/// costs PocketBase); it reads until PocketBase goes away.
pub async fn read_and_drop(pb: &Pb) -> Result<()> {
    let mut frames = subscribe(pb).await?;
    tokio::spawn(async move { while frames.recv().await.is_some() {} });
    Ok(())
}

/// Connects, subscribes to `bot_instances/*` and forwards frames until the stream ends or the receiver
/// is dropped. Returns once the subscription is active.
pub async fn subscribe(pb: &Pb) -> Result<mpsc::UnboundedReceiver<Seen>> {
    let resp = pb
        .http
        .get(format!("{}/api/realtime", pb.url))
        .timeout(std::time::Duration::from_secs(24 * 3600))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("realtime connect answered {}", resp.status());
    }
    let mut stream = resp.bytes_stream();
    let mut parser = SseParser::default();
    let mut pending = Vec::new();
    let client_id = loop {
        let chunk = stream
            .next()
            .await
            .context("realtime stream ended before PB_CONNECT")??;
        pending.extend(parser.push(&chunk)?);
        if let Some(f) = pending.iter().find(|f| f.event == "PB_CONNECT") {
            let v: Value = serde_json::from_str(&f.data)?;
            break v["clientId"]
                .as_str()
                .context("PB_CONNECT without clientId")?
                .to_string();
        }
    };
    pb.ok(
        reqwest::Method::POST,
        "/api/realtime",
        Some(&json!({"clientId": client_id, "subscriptions": ["bot_instances/*"]})),
    )
    .await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(chunk)) = stream.next().await {
            let at = Instant::now();
            let Ok(frames) = parser.push(&chunk) else { return };
            for f in frames.into_iter().filter(|f| f.event.starts_with("bot_instances")) {
                let Ok(v) = serde_json::from_str::<Value>(&f.data) else {
                    continue;
                };
                if tx
                    .send(Seen {
                        at,
                        record: v["record"].clone(),
                    })
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    Ok(rx)
}
