//! Upstream answers are read with a size cap (issue 14, item 4). A hostile server plays PocketBase and
//! Coolify and answers with hundreds of megabytes (no Content-Length, so only streaming with a cap can stop
//! it); the PocketBase client, the Coolify client and the realtime consumer each refuse with an error that
//! names the endpoint, and the process's peak memory grows by no more than the endpoint's cap. Peak
//! memory is a process's: the measurement runs in a process of its own (this test binary, asked for that
//! one test), so that no other test's allocations count.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cf_bridge::config::{CoolifySettings, PocketBaseSettings};
use cf_bridge::coolify::{CoolifyClient, CoolifyError};
use cf_bridge::events::{EventSink, Ingested, NewEvent, Replay, ReplayFuture, SinkFuture};
use cf_bridge::intake::Intake;
use cf_bridge::metrics::Metrics;
use cf_bridge::pocketbase::realtime::{Consumer, RealtimeError, TokenFuture, TokenSource};
use cf_bridge::pocketbase::{PbClient, PbError};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// What the hostile server sends at most per answer.
const HOSTILE_BYTES: usize = 400 << 20;
const MIB: u64 = 1 << 20;

fn jwt() -> String {
    let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let exp = chrono::Utc::now().timestamp() + 3600;
    format!(
        "{}.{}.c2ln",
        part(serde_json::json!({"alg": "HS256", "typ": "JWT"})),
        part(serde_json::json!({"exp": exp, "id": "su", "type": "auth", "collectionId": "pbc_3142635823"}))
    )
}

/// Reads one request head (and ignores any body, which our clients keep small).
async fn request_line(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&byte[..n]);
    }
    String::from_utf8_lossy(&head).lines().next().map(str::to_string)
}

async fn small(stream: &mut TcpStream, content_type: &str, body: &str) {
    let reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
}

/// A 200 with no length that goes on until the client hangs up (or `HOSTILE_BYTES`).
async fn endless(stream: &mut TcpStream, content_type: &str, chunk: &[u8]) {
    let head = format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n");
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut sent = 0;
    while sent < HOSTILE_BYTES {
        if stream.write_all(chunk).await.is_err() {
            return;
        }
        sent += chunk.len();
    }
}

async fn serve(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let Some(line) = request_line(&mut stream).await else {
                return;
            };
            let path = line.split(' ').nth(1).unwrap_or_default().to_string();
            if path.ends_with("/auth-with-password") || path.ends_with("/auth-refresh") {
                small(
                    &mut stream,
                    "application/json",
                    &serde_json::json!({"token": jwt()}).to_string(),
                )
                .await;
            } else if path.starts_with("/api/collections?") {
                small(&mut stream, "application/json", r#"{"items":[]}"#).await;
            } else if path == "/api/realtime" && line.starts_with("GET") {
                // One event whose data lines never end.
                let mut chunk = b"data: ".to_vec();
                chunk.extend(std::iter::repeat_n(b'x', 64 << 10));
                chunk.push(b'\n');
                endless(&mut stream, "text/event-stream", &chunk).await;
            } else {
                endless(&mut stream, "application/json", &[b' '; 64 << 10]).await;
            }
        });
    }
}

/// Plays Coolify answering `GET /services` with a valid list of about `bytes` bytes (no Content-Length):
/// services of 64 KiB each, most of it their compose, as a large fleet's list is mostly composes.
async fn serve_list(listener: TcpListener, bytes: usize) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            if request_line(&mut stream).await.is_none() {
                return;
            }
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n[";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let compose = "x".repeat(64 << 10);
            let mut sent = 0;
            for i in 0.. {
                let sep = if i == 0 { "" } else { "," };
                let service = format!(
                    r#"{sep}{{"uuid":"u{i}","name":"cf-{i}","status":"running:healthy","docker_compose_raw":"{compose}"}}"#
                );
                if stream.write_all(service.as_bytes()).await.is_err() {
                    return;
                }
                sent += service.len();
                if sent >= bytes {
                    break;
                }
            }
            let _ = stream.write_all(b"]").await;
        });
    }
}

/// Peak resident memory of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

/// Runs `f` and returns how much the peak resident memory grew meanwhile (the peak is reset first where
/// the kernel allows, so each measurement stands alone).
async fn peak_growth<T>(f: impl Future<Output = T>) -> (T, u64) {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = peak_rss();
    let out = f.await;
    (out, peak_rss().saturating_sub(before))
}

struct Token;

impl TokenSource for Token {
    fn token(&self) -> TokenFuture<'_> {
        Box::pin(async { Ok(SecretString::from(jwt())) })
    }
}

struct NoSink;

impl EventSink for NoSink {
    fn ingest(&self, _: NewEvent) -> SinkFuture<'_> {
        Box::pin(async { Ok(Ingested::Duplicate) })
    }

    fn replay(&self, _: Replay) -> ReplayFuture<'_> {
        Box::pin(async { Ok(0) })
    }
}

/// Runs [`measure_in_a_process_of_its_own`] alone in a new process of this test binary.
#[test]
fn huge_answers_are_refused_with_bounded_memory() {
    let out = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "security_bodies::measure_in_a_process_of_its_own",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("run the measurement");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "the measurement failed:\n{text}");
    assert!(text.contains("1 passed"), "the measurement did not run:\n{text}");
}

/// All in one test: the peak memory of the process is what is measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by huge_answers_are_refused_with_bounded_memory, in a process of its own"]
async fn measure_in_a_process_of_its_own() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(serve(listener));
    let mut report = Vec::new();

    // PocketBase: a list page (capped at 64 MiB) and a single record (4 MiB).
    let pb_settings = PocketBaseSettings::with_password(
        url.parse().expect("url"),
        "bridge@test.local",
        SecretString::from("pw".to_string()),
    );
    let pb = PbClient::new(&pb_settings).expect("client");
    pb.authenticate().await.expect("login answer is small");
    let (err, grew) = peak_growth(pb.list_instances(None)).await;
    match err {
        Err(PbError::TooLarge { endpoint, limit }) => {
            assert_eq!(endpoint, "GET /api/collections/bot_instances/records");
            assert_eq!(limit, "64 MiB");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    report.push(("PocketBase list", grew, 64));
    let (err, grew) = peak_growth(pb.get_instance("abc")).await;
    let msg = err.expect_err("a 400 MB record").to_string();
    assert!(
        msg.contains("GET /api/collections/bot_instances/records/abc") && msg.contains("4 MiB"),
        "{msg}"
    );
    report.push(("PocketBase record", grew, 4));

    // Coolify: the team-wide service list (128 MiB: 37 MB is a 10,000-service fleet) and a small endpoint.
    // An answer that is too large is final: it is not retried.
    let mut cfg = CoolifySettings::new(url.parse().expect("url"), SecretString::from("1|token".to_string()));
    cfg.request_timeout = Duration::from_secs(60);
    let coolify = CoolifyClient::new(&cfg, Arc::new(Metrics::new())).expect("client");
    let (err, grew) = peak_growth(coolify.list_service_states(|_| true)).await;
    match err {
        Err(e @ CoolifyError::TooLarge { .. }) => {
            assert_eq!(
                e.to_string(),
                "Coolify's answer to GET /services is larger than 128 MiB; refused"
            );
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    report.push(("Coolify GET /services", grew, 128));

    // A real list (services, not blanks) is read one service at a time: neither one under the cap nor one
    // over it is ever held whole (the cap bounds what is read, not what is held).
    let fleet = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let fleet_cfg = CoolifySettings::new(
        format!("http://{}", fleet.local_addr().expect("addr"))
            .parse()
            .expect("url"),
        SecretString::from("1|token".to_string()),
    );
    tokio::spawn(serve_list(fleet, 100 << 20));
    let fleet_client = CoolifyClient::new(&fleet_cfg, Arc::new(Metrics::new())).expect("client");
    let (states, grew) = peak_growth(fleet_client.list_service_states(|_| true)).await;
    let states = states.expect("a 100 MB list is under the cap");
    assert!(states.len() > 1500, "{} services", states.len());
    assert_eq!(
        states.last().map(|s| s.uuid.clone()),
        Some(format!("u{}", states.len() - 1))
    );
    report.push(("Coolify GET /services, a 100 MB list", grew, 0));
    let over = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut over_cfg = fleet_cfg.clone();
    over_cfg.url = format!("http://{}", over.local_addr().expect("addr"))
        .parse()
        .expect("url");
    tokio::spawn(serve_list(over, HOSTILE_BYTES));
    let over_client = CoolifyClient::new(&over_cfg, Arc::new(Metrics::new())).expect("client");
    let (err, grew) = peak_growth(over_client.list_service_states(|_| true)).await;
    match err {
        Err(e @ CoolifyError::TooLarge { .. }) => {
            assert_eq!(
                e.to_string(),
                "Coolify's answer to GET /services is larger than 128 MiB; refused"
            );
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    report.push(("Coolify GET /services, a 400 MB list", grew, 0));
    let (err, grew) = peak_growth(coolify.get_service("u1")).await;
    let msg = err.expect_err("a 400 MB service").to_string();
    assert!(msg.contains("GET /services/{uuid}") && msg.contains("4 MiB"), "{msg}");
    report.push(("Coolify GET /services/{uuid}", grew, 4));

    // Realtime: an event whose data lines never end.
    let (on_connect, _connected) = watch::channel(0u64);
    let intake = Intake::new(Arc::new(NoSink), Arc::new(Notify::new()), Arc::new(Metrics::new()));
    let (in_doubt, _doubts) = watch::channel(0u64);
    let consumer = Consumer::new(&pb_settings, Arc::new(Token), intake, on_connect, in_doubt);
    let client = reqwest::Client::new();
    let mut connected_at = None;
    let (err, grew) = peak_growth(consumer.session(&client, &CancellationToken::new(), &mut connected_at)).await;
    match err {
        Err(e @ RealtimeError::Protocol(_)) => {
            let msg = e.to_string();
            assert!(msg.contains("GET /api/realtime") && msg.contains("4 MiB"), "{msg}");
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    report.push(("realtime event", grew, 4));

    for (what, grew, cap_mib) in &report {
        println!("{what}: peak memory grew {} MiB (cap {cap_mib} MiB)", grew / MIB);
    }
    for (what, grew, cap_mib) in report {
        // The cap, plus room for the allocator and the test's own buffers (a list read as it streams has
        // no cap of its own: only the room is allowed).
        let room = if cap_mib == 0 { 16 } else { 48 };
        assert!(
            grew <= (cap_mib + room) * MIB,
            "{what}: peak memory grew {} MiB",
            grew / MIB
        );
    }
}
