//! PocketBase realtime (SSE) consumer: record changes as hints for the journal.
//!
//! The stream is read with eventsource-client (SSE parsing) over a small transport on our reqwest client,
//! so reqwest stays the one HTTP/TLS stack. What the crate would hide stays ours:
//! - the reconnect: each session is one connection (the crate's reconnect is off), because every
//!   `PB_CONNECT` needs a fresh subscribe POST and every reconnect a resync (PocketBase has no replay), and
//!   each connection first checks its token; our loop adds the backoff;
//! - the idle watchdog, tied to our `bridge_keepalive` topic (hooks/pb_hooks/keepalive.pb.js), and the
//!   stream check: the bridge's own pings (hooks/pb_hooks/ping.pb.js) must come back on it;
//! - the size bounds: the crate's parser buffers without limit, so the transport refuses a line or an
//!   event larger than a sane frame before the parser sees it.
//!
//! PocketBase accepts an invalid token silently (guest: subscribe succeeds, no events ever arrive),
//! so each connection first proves the token is a superuser's with a superuser-only request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eventsource_client::{Client as _, ClientBuilder, ReconnectOptions, SSE};
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use launchdarkly_sdk_transport::{ByteStream, HttpTransport, Request, ResponseFuture, TransportError};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::PbError;
use crate::backoff::Backoff;
use crate::config::PocketBaseSettings;
use crate::events::{Action, Collection, Ingested, NewEvent, SinkError, Source};
use crate::flow::{FloodSign, Flow};
use crate::intake::{Intake, RecordError, record_event, record_id};
use crate::latest::{self, Kind};
use crate::pocketbase::records::{BOT_TEMPLATES, BotInstance, BotTemplate, Tenant};
use crate::text::UnknownText;

/// Topics the bridge subscribes to; plain topics need no URL encoding (reference §0.7). Templates are
/// watched so that a job can take an instance's template from what the stream brought ([`crate::latest`]);
/// they make no event.
pub const TOPICS: [&str; 4] = ["tenants/*", "bot_instances/*", TEMPLATES_TOPIC, KEEPALIVE_TOPIC];
pub const TEMPLATES_TOPIC: &str = "bot_templates/*";
pub const KEEPALIVE_TOPIC: &str = "bridge_keepalive";

/// Record frames being journaled at once: the stream is read on while earlier frames commit, so that a
/// burst of frames shares the journal's commits instead of one commit (and its WAL pages) per frame.
const JOURNALING: usize = 64;
/// In a flow, how long the reader waits once the stream has nothing ready ([`Pace`]). In a flood the bridge
/// spent about a tenth less CPU per frame and journaled every frame as before (docs/BENCHMARKS.md,
/// "Thirty-eighth session"); a frame waits at most this long, and only in a flow.
const GATHER: Duration = Duration::from_millis(8);
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A connection that stayed up this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// Timeout for the short requests (auth check, subscribe); the stream itself has none.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// PocketBase sends one line per frame; anything longer than this is not a sane frame.
const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;
/// A frame's `data` lines together: a record of the watched collections is far smaller (its config is
/// capped at 64 KiB by the schema).
const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// Pings whose request failed in a row before the stream is presumed unreachable too.
const MAX_PING_FAILURES: u32 = 2;
/// TCP keepalive on the stream's socket: a peer that vanished without a FIN is noticed within about
/// 10 + 3 x 5 s even when pings are off.
const TCP_KEEPALIVE: Duration = Duration::from_secs(10);
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const TCP_KEEPALIVE_RETRIES: u32 = 3;

pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<SecretString, PbError>> + Send + 'a>>;

/// Supplies a current superuser token (refreshing it as needed).
pub trait TokenSource: Send + Sync {
    fn token(&self) -> TokenFuture<'_>;
}

#[derive(Debug, thiserror::Error)]
pub enum RealtimeError {
    #[error("PocketBase realtime auth failed: {0}")]
    Auth(String),
    #[error("PocketBase realtime auth failed: no token: {0}")]
    Token(#[source] PbError),
    #[error("PocketBase realtime request failed: {0}")]
    Transport(String),
    #[error("PocketBase realtime protocol error: {0}")]
    Protocol(String),
    #[error("no data from PocketBase realtime for {0:?}; connection presumed dead")]
    Idle(Duration),
    #[error("the bridge's ping did not come back on the realtime stream within {0:?}; stream presumed dead")]
    PingLost(Duration),
    #[error("PocketBase forgot the realtime client id before the subscription")]
    ClientGone,
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// How a session ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The server ended the stream (idle/max lifetime, restart, hooks reload).
    Closed,
    Cancelled,
}

/// One SSE frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// Why the stream was given up: it sent more than a frame may hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseTooLarge {
    #[error("an SSE line from GET /api/realtime is longer than {} MiB", MAX_LINE_BYTES >> 20)]
    Line,
    #[error("an SSE event from GET /api/realtime carries more than {} MiB of data", MAX_FRAME_BYTES >> 20)]
    Frame,
}

/// Bounds a raw SSE byte stream: a line, and an event's lines together, may not exceed what a frame may
/// hold. Counts only, so the stream's memory stays bounded whoever parses it.
#[derive(Debug, Default)]
pub struct FrameBound {
    line: usize,
    frame: usize,
}

impl FrameBound {
    pub fn check(&mut self, chunk: &[u8]) -> Result<(), SseTooLarge> {
        for &b in chunk {
            match b {
                b'\n' => {
                    if self.line == 0 {
                        self.frame = 0;
                    }
                    self.line = 0;
                }
                b'\r' => {}
                _ => {
                    self.line += 1;
                    self.frame += 1;
                }
            }
        }
        if self.line > MAX_LINE_BYTES {
            return Err(SseTooLarge::Line);
        }
        if self.frame > MAX_FRAME_BYTES {
            return Err(SseTooLarge::Frame);
        }
        Ok(())
    }
}

/// eventsource-client's transport over our reqwest client; each chunk passes a [`FrameBound`].
#[derive(Clone)]
struct ReqwestTransport {
    client: reqwest::Client,
}

impl HttpTransport for ReqwestTransport {
    fn request(&self, request: Request<Option<Bytes>>) -> ResponseFuture {
        let (parts, body) = request.into_parts();
        let mut req = self
            .client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers);
        if let Some(body) = body {
            req = req.body(body);
        }
        Box::pin(sync_wrapper::SyncFuture::new(async move {
            let resp = req.send().await.map_err(TransportError::new)?;
            let mut head = launchdarkly_sdk_transport::Response::builder().status(resp.status());
            if let Some(headers) = head.headers_mut() {
                headers.clone_from(resp.headers());
            }
            let mut bound = FrameBound::default();
            let body = resp.bytes_stream().map(move |chunk| {
                let chunk = chunk.map_err(TransportError::new)?;
                bound.check(&chunk).map_err(TransportError::new)?;
                Ok(chunk)
            });
            let body: ByteStream = Box::pin(sync_wrapper::SyncStream::new(body));
            head.body(body).map_err(TransportError::new)
        }))
    }
}

/// Incremental SSE parser for the plain subscribers of the benchmarks (crates/cf-bench); the bridge's own
/// stream is parsed by eventsource-client.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    frame: Frame,
    started: bool,
    has_data: bool,
}

impl SseParser {
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Frame>, SseTooLarge> {
        self.buf.extend_from_slice(chunk);
        let mut frames = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            let line = self.buf[start..end]
                .strip_suffix(b"\r")
                .unwrap_or(&self.buf[start..end]);
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            if let Some(frame) = self.line(&line)? {
                frames.push(frame);
            }
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE_BYTES {
            return Err(SseTooLarge::Line);
        }
        Ok(frames)
    }

    fn line(&mut self, line: &str) -> Result<Option<Frame>, SseTooLarge> {
        if line.is_empty() {
            return Ok(self.started.then(|| {
                self.started = false;
                self.has_data = false;
                std::mem::take(&mut self.frame)
            }));
        }
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => self.frame.id = Some(value.to_owned()),
            "event" => self.frame.event = value.to_owned(),
            "data" => {
                if self.frame.data.len() + value.len() + 1 > MAX_FRAME_BYTES {
                    return Err(SseTooLarge::Frame);
                }
                if self.has_data {
                    self.frame.data.push('\n');
                }
                self.frame.data.push_str(value);
                self.has_data = true;
            }
            _ => return Ok(None),
        }
        self.started = true;
        Ok(None)
    }
}

#[derive(Deserialize)]
struct RecordMessage {
    action: String,
    record: Map<String, Value>,
}

/// Why a record frame was skipped.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("record frame is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unknown action {0}")]
    Action(#[from] UnknownText),
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// A record frame: its event, and the record as a job would read it (`None`: it did not decode).
pub struct RecordFrame {
    pub event: NewEvent,
    pub seen: latest::Frame,
}

/// Turns a record frame into an event; `Ok(None)` for frames that carry no record change.
pub fn frame_event(frame: &Frame) -> Result<Option<RecordFrame>, FrameError> {
    let Ok(collection) = frame_collection(frame).parse::<Collection>() else {
        return Ok(None);
    };
    let msg: RecordMessage = serde_json::from_str(&frame.data)?;
    let action: Action = msg.action.parse()?;
    let seen = match collection {
        Collection::BotInstances => latest::Frame::Instance(BotInstance::deserialize(&msg.record).ok().map(Box::new)),
        Collection::Tenants => latest::Frame::Tenant(Tenant::deserialize(&msg.record).ok()),
    };
    let event = record_event(Source::Realtime, collection, action, msg.record, None)?;
    Ok(Some(RecordFrame { event, seen }))
}

fn frame_collection(frame: &Frame) -> &str {
    frame.event.split(['/', '?']).next().unwrap_or_default()
}

/// A template frame: its record id, `updated` and action, and the record (`None`: it did not decode).
pub fn template_frame(frame: &Frame) -> Result<(String, Option<String>, Action, Option<BotTemplate>), FrameError> {
    let msg: RecordMessage = serde_json::from_str(&frame.data)?;
    let action: Action = msg.action.parse()?;
    let id = record_id(&msg.record)?;
    let updated = msg
        .record
        .get("updated")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    Ok((id, updated, action, BotTemplate::deserialize(&msg.record).ok()))
}

/// The reconnect delays: jittered, growing from [`MIN_BACKOFF`] to [`MAX_BACKOFF`].
struct Reconnects {
    tries: u32,
}

const RECONNECT_BACKOFF: Backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);

impl Reconnects {
    fn new() -> Self {
        Reconnects { tries: 0 }
    }

    fn reset(&mut self) {
        self.tries = 0;
    }

    fn saturate(&mut self) {
        self.tries = u32::MAX;
    }

    fn next_delay(&mut self) -> Duration {
        let delay = RECONNECT_BACKOFF.equal_jitter(self.tries);
        self.tries = self.tries.saturating_add(1);
        delay
    }
}

fn endpoint(base: &url::Url, path: &str) -> Result<url::Url, RealtimeError> {
    base.join(path)
        .map_err(|e| RealtimeError::Transport(format!("bad PocketBase URL {base}: {e}")))
}

fn transport(what: &str, e: reqwest::Error) -> RealtimeError {
    RealtimeError::Transport(format!("{what}: {e}"))
}

/// Fails with [`RealtimeError::Auth`] unless the token is a valid superuser token.
async fn check_superuser(client: &reqwest::Client, base: &url::Url, token: &SecretString) -> Result<(), RealtimeError> {
    let url = endpoint(base, "api/collections?perPage=1&skipTotal=1&fields=id")?;
    let resp = client
        .get(url)
        .header("Authorization", token.expose_secret())
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|e| transport("superuser check", e))?;
    match resp.status() {
        s if s.is_success() => Ok(()),
        s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => Err(RealtimeError::Auth(format!(
            "PocketBase answered {s} to a superuser-only request: the token is invalid, expired or not a superuser's"
        ))),
        s => Err(RealtimeError::Transport(format!("superuser check answered {s}"))),
    }
}

async fn subscribe(
    client: &reqwest::Client,
    base: &url::Url,
    token: &SecretString,
    client_id: &str,
) -> Result<(), RealtimeError> {
    let resp = client
        .post(endpoint(base, "api/realtime")?)
        .header("Authorization", token.expose_secret())
        .json(&json!({ "clientId": client_id, "subscriptions": TOPICS }))
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .map_err(|e| transport("subscribe", e))?;
    match resp.status() {
        s if s.is_success() => Ok(()),
        StatusCode::NOT_FOUND => Err(RealtimeError::ClientGone),
        s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
            Err(RealtimeError::Auth(format!("subscribe answered {s}")))
        }
        s => Err(RealtimeError::Transport(format!("subscribe answered {s}"))),
    }
}

/// PocketBase's answer to a ping request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PingAnswer {
    /// The ping is on its way down the stream.
    Sent,
    /// PocketBase no longer knows the stream's client: the stream is gone.
    ClientGone,
    /// No ping route (hooks/pb_hooks/ping.pb.js is not installed).
    NotInstalled,
    Failed(String),
}

/// The bridge's check of its own stream, as a pure state machine (times are passed in): once the stream
/// is subscribed, a ping every `interval`; each must come back on the stream before the next is due.
///
/// Unless the stream keeps delivering: PocketBase sends each frame on an unbuffered channel and drops
/// none, so a ping queued behind a backlog of frames is late, not lost. Under a 1,000 changes/s backlog
/// pings came back after more than 5 s, and each reconnect this caused began a full resync in the middle
/// of the load. A late ping is awaited while some frame arrived in the last interval, up to
/// [`MAX_PING_LATENESS`] intervals.
#[derive(Debug)]
pub struct StreamCheck {
    interval: Option<Duration>,
    client_id: Option<String>,
    seq: u64,
    next_send: Option<Instant>,
    /// The ping on its way: its nonce and when it was sent.
    awaiting: Option<(String, Instant)>,
    /// When the stream last delivered a frame.
    last_frame: Option<Instant>,
    failures: u32,
}

/// How many intervals a ping may take while the stream keeps delivering other frames.
pub const MAX_PING_LATENESS: u32 = 12;

impl StreamCheck {
    pub fn new(interval: Option<Duration>) -> Self {
        StreamCheck {
            interval,
            client_id: None,
            seq: 0,
            next_send: None,
            awaiting: None,
            last_frame: None,
            failures: 0,
        }
    }

    /// The stream is subscribed as `client_id`: pings start one interval later.
    pub fn subscribed(&mut self, client_id: &str, now: Instant) {
        self.client_id = Some(client_id.to_owned());
        self.next_send = self.interval.map(|i| now + i);
    }

    /// When the next ping is due (none while one is on its way).
    pub fn due(&self) -> Option<Instant> {
        self.awaiting.is_none().then_some(self.next_send).flatten()
    }

    /// When the ping on its way must have arrived: an interval after it was sent, or after the last frame
    /// the stream delivered, whichever is later, but not past [`MAX_PING_LATENESS`] intervals.
    pub fn deadline(&self) -> Option<Instant> {
        let (interval, (_, sent)) = (self.interval?, self.awaiting.as_ref()?);
        let after = self.last_frame.filter(|at| at > sent).unwrap_or(*sent);
        Some((after + interval).min(*sent + interval * MAX_PING_LATENESS))
    }

    /// How long the ping on its way has been awaited at `now`.
    pub fn awaited_for(&self, now: Instant) -> Duration {
        self.awaiting
            .as_ref()
            .map_or(Duration::ZERO, |(_, sent)| now.saturating_duration_since(*sent))
    }

    /// The stream delivered a frame (any topic) at `now`.
    pub fn delivered(&mut self, now: Instant) {
        self.last_frame = Some(now);
    }

    /// Starts a ping; returns the client id and nonce to post.
    pub fn send(&mut self, now: Instant) -> Option<(String, String)> {
        let (interval, client_id) = (self.interval?, self.client_id.clone()?);
        self.seq += 1;
        let nonce = self.seq.to_string();
        self.awaiting = Some((nonce.clone(), now));
        self.next_send = Some(now + interval);
        Some((client_id, nonce))
    }

    /// A `bridge_keepalive` frame: ours when it carries the awaited nonce.
    pub fn frame(&mut self, data: &str) {
        #[derive(Deserialize)]
        struct Ping {
            ping: String,
        }
        if let (Ok(p), Some((nonce, _))) = (serde_json::from_str::<Ping>(data), &self.awaiting)
            && p.ping == *nonce
        {
            self.awaiting = None;
        }
    }

    /// What the ping request returned; an error ends the stream.
    pub fn answer(&mut self, answer: PingAnswer) -> Result<(), RealtimeError> {
        match answer {
            PingAnswer::Sent => {
                self.failures = 0;
                Ok(())
            }
            PingAnswer::ClientGone => Err(RealtimeError::ClientGone),
            PingAnswer::NotInstalled => {
                tracing::warn!(
                    "PocketBase has no /api/cf-bridge/ping (hooks/pb_hooks/ping.pb.js): a silent realtime \
                     stream is noticed only by the idle watchdog"
                );
                (self.interval, self.awaiting, self.next_send) = (None, None, None);
                Ok(())
            }
            PingAnswer::Failed(reason) => {
                self.awaiting = None;
                self.failures += 1;
                if self.failures >= MAX_PING_FAILURES {
                    return Err(RealtimeError::Transport(format!(
                        "{} pings in a row could not be sent: {reason}",
                        self.failures
                    )));
                }
                Ok(())
            }
        }
    }
}

async fn post_ping(
    client: &reqwest::Client,
    base: &url::Url,
    token: &SecretString,
    client_id: String,
    nonce: String,
    timeout: Duration,
) -> PingAnswer {
    #[derive(Deserialize)]
    struct Answer {
        sent: bool,
    }
    let url = match endpoint(base, "api/cf-bridge/ping") {
        Ok(url) => url,
        Err(e) => return PingAnswer::Failed(e.to_string()),
    };
    let resp = client
        .post(url)
        .header("Authorization", token.expose_secret())
        .json(&json!({ "clientId": client_id, "nonce": nonce }))
        .timeout(timeout)
        .send()
        .await;
    match resp {
        Err(e) => PingAnswer::Failed(e.to_string()),
        Ok(r) if r.status() == StatusCode::NOT_FOUND => PingAnswer::NotInstalled,
        Ok(r) if r.status().is_success() => match r.json::<Answer>().await {
            Ok(Answer { sent: true }) => PingAnswer::Sent,
            Ok(Answer { sent: false }) => PingAnswer::ClientGone,
            Err(e) => PingAnswer::Failed(format!("unexpected ping answer: {e}")),
        },
        Ok(r) => PingAnswer::Failed(format!("ping answered {}", r.status())),
    }
}

type PingFuture<'a> = Pin<Box<dyn Future<Output = PingAnswer> + Send + 'a>>;

/// Why eventsource-client gave up the stream.
fn stream_error(e: eventsource_client::Error) -> RealtimeError {
    use eventsource_client::Error;
    match e {
        Error::UnexpectedResponse(resp, _) => {
            RealtimeError::Transport(format!("GET /api/realtime answered {}", resp.status()))
        }
        Error::Transport(e) => match e.inner().downcast_ref::<SseTooLarge>() {
            Some(too_large) => RealtimeError::Protocol(too_large.to_string()),
            None => RealtimeError::Transport(format!("stream: {}", e.inner())),
        },
        e @ (Error::InvalidLine(_) | Error::InvalidEvent) => RealtimeError::Protocol(e.to_string()),
        e => RealtimeError::Transport(format!("stream: {e}")),
    }
}

/// Waits for `at`, or forever when there is nothing to wait for.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// How the stream is read: in a flow of frames, in bursts.
///
/// Read as it came, a flood's stream woke the bridge for every frame or two (a wake-up of this task and of
/// the connection's, a read from the socket, a hand-over to the journal's writer), on the cores PocketBase
/// needed for the flood's writes. In a flow, once the stream has nothing ready, the reader waits
/// [`GATHER`] and then takes at once the frames that came meanwhile, in larger reads. Outside a flow a
/// frame is read as it comes.
struct Pace {
    flow: Flow,
    wait: Duration,
    /// Until when the reader waits; set when the stream had nothing ready in a flow, kept when the
    /// read is dropped for another branch of the session's loop.
    resume_at: Option<Instant>,
}

impl Pace {
    fn new(flow: Flow, wait: Duration) -> Pace {
        Pace {
            flow,
            wait,
            resume_at: None,
        }
    }

    fn saw(&mut self) {
        self.flow.saw(1);
    }

    /// The stream's next item; in a flow, after a wait whenever nothing is ready.
    async fn next<S: futures_util::Stream + Unpin>(&mut self, stream: &mut S) -> Option<S::Item> {
        if self.resume_at.is_none() && self.flow.flowing() {
            if let Some(item) = stream.next().now_or_never() {
                return item;
            }
            // The connection's own task reads the socket for the stream: let it run before concluding
            // that nothing is ready.
            tokio::task::yield_now().await;
            if let Some(item) = stream.next().now_or_never() {
                return item;
            }
            self.resume_at = Some(Instant::now() + self.wait);
        }
        if let Some(at) = self.resume_at {
            tokio::time::sleep_until(at.into()).await;
            self.resume_at = None;
        }
        stream.next().await
    }
}

/// Everything a session needs besides the HTTP client.
pub struct Consumer {
    pub base_url: url::Url,
    /// Reconnect when no byte arrived for this long. The keepalive cron sends one frame a minute.
    pub idle_timeout: Duration,
    /// How often the bridge pings its own stream through PocketBase; each ping must come back on the
    /// stream within the same time, or the stream is presumed dead. `None`: the idle watchdog only.
    pub ping_interval: Option<Duration>,
    pub tokens: Arc<dyn TokenSource>,
    pub intake: Intake,
    pub on_connect: watch::Sender<u64>,
    /// Counts streams that ended after a subscription: changes may have been missed since (the resync
    /// task runs a pass when the reconnect does not come soon).
    pub in_doubt: watch::Sender<u64>,
    /// Counts every record frame: in a flood the PocketBase client spaces the bridge's writes.
    pub flood: FloodSign,
}

impl Consumer {
    /// The consumer for `[pocketbase]`; `on_connect` counts successful subscriptions, `in_doubt`
    /// subscribed streams that ended.
    pub fn new(
        settings: &PocketBaseSettings,
        tokens: Arc<dyn TokenSource>,
        intake: Intake,
        on_connect: watch::Sender<u64>,
        in_doubt: watch::Sender<u64>,
    ) -> Self {
        Consumer {
            base_url: settings.url.clone(),
            idle_timeout: settings.realtime_idle_timeout,
            ping_interval: settings.realtime_ping_interval,
            tokens,
            intake,
            on_connect,
            in_doubt,
            flood: FloodSign::default(),
        }
    }

    /// One connection, from the auth check to the end of the stream. `connected_at` is set once the
    /// subscription is in place.
    pub async fn session(
        &self,
        client: &reqwest::Client,
        cancel: &CancellationToken,
        connected_at: &mut Option<Instant>,
    ) -> Result<SessionEnd, RealtimeError> {
        let base = &self.base_url;
        let token = self.tokens.token().await.map_err(RealtimeError::Token)?;
        check_superuser(client, base, &token).await?;
        // The token on the GET lets hooks/pb_hooks/rt_timeouts.pb.js lengthen our connection's timeouts.
        let url = endpoint(base, "api/realtime")?;
        let sse = ClientBuilder::for_url(url.as_str())
            .map_err(|e| RealtimeError::Transport(format!("bad PocketBase URL {url}: {e}")))?
            .header("Authorization", token.expose_secret())
            .map_err(|_| RealtimeError::Auth("the token is not a valid header value".into()))?
            .reconnect(ReconnectOptions::reconnect(false).build())
            .build_with_transport(ReqwestTransport { client: client.clone() });
        let mut stream = sse.stream();
        let mut check = StreamCheck::new(self.ping_interval);
        let mut ping: Option<PingFuture<'_>> = None;
        let mut idle_at = Instant::now() + self.idle_timeout;
        let mut journaling = FuturesOrdered::new();
        let mut pace = Pace::new(Flow::flood(), GATHER);
        let end = loop {
            tokio::select! {
                _ = cancel.cancelled() => break Ok(SessionEnd::Cancelled),
                _ = until(Some(idle_at)) => break Err(RealtimeError::Idle(self.idle_timeout)),
                Some(journaled) = journaling.next(), if !journaling.is_empty() => {
                    if let Err(e) = journaled {
                        break Err(e);
                    }
                }
                next = pace.next(&mut stream), if journaling.len() < JOURNALING => {
                    let frame = match next {
                        None | Some(Err(eventsource_client::Error::Eof | eventsource_client::Error::UnexpectedEof)) => {
                            break Ok(SessionEnd::Closed);
                        }
                        Some(Err(e)) => break Err(stream_error(e)),
                        Some(Ok(SSE::Event(event))) => Frame { id: event.id, event: event.event_type, data: event.data },
                        Some(Ok(SSE::Connected(_) | SSE::Comment(_))) => {
                            idle_at = Instant::now() + self.idle_timeout;
                            continue;
                        }
                    };
                    let now = Instant::now();
                    idle_at = now + self.idle_timeout;
                    check.delivered(now);
                    if frame.event == "PB_CONNECT" {
                        match self.connected(client, &token, &frame, connected_at).await {
                            Ok(client_id) => check.subscribed(&client_id, Instant::now()),
                            Err(e) => break Err(e),
                        }
                    } else if frame.event == KEEPALIVE_TOPIC {
                        check.frame(&frame.data);
                    } else {
                        // An ingest is sent to the journal at its first poll, and `FuturesOrdered` polls new
                        // futures in the order they were pushed: the journal gets them in the stream's order.
                        if let Some(event) = self.record_frame(&frame) {
                            pace.saw();
                            self.flood.saw();
                            journaling.push_back(self.journal(event));
                        }
                    }
                }
                answer = async { match ping.as_mut() { Some(p) => p.await, None => std::future::pending().await } } => {
                    ping = None;
                    if let Err(e) = check.answer(answer) {
                        break Err(e);
                    }
                }
                _ = until(check.due()), if ping.is_none() => {
                    let timeout = self.ping_interval.unwrap_or(REQUEST_TIMEOUT);
                    if let Some((client_id, nonce)) = check.send(Instant::now()) {
                        ping = Some(Box::pin(post_ping(client, base, &token, client_id, nonce, timeout)));
                    }
                }
                _ = until(check.deadline()) => {
                    break Err(RealtimeError::PingLost(check.awaited_for(Instant::now())));
                }
            }
        };
        // Frames already read are journaled whatever ended the session.
        let mut drained = Ok(());
        while let Some(journaled) = journaling.next().await {
            drained = drained.and(journaled);
        }
        end.and_then(|end| drained.map(|()| end))
    }

    async fn connected(
        &self,
        client: &reqwest::Client,
        token: &SecretString,
        frame: &Frame,
        connected_at: &mut Option<Instant>,
    ) -> Result<String, RealtimeError> {
        #[derive(Deserialize)]
        struct Connect {
            #[serde(rename = "clientId")]
            client_id: String,
        }
        let connect: Connect = serde_json::from_str(&frame.data)
            .map_err(|e| RealtimeError::Protocol(format!("PB_CONNECT without clientId: {e}")))?;
        subscribe(client, &self.base_url, token, &connect.client_id).await?;
        *connected_at = Some(Instant::now());
        let metrics = self.intake.metrics();
        metrics.realtime_connected.set(1);
        metrics.realtime_reconnects.inc();
        // Frames may have been missed since the last session.
        self.intake.latest().subscribed();
        self.on_connect.send_modify(|n| *n += 1);
        tracing::info!(topics = ?TOPICS, "PocketBase realtime subscribed");
        Ok(connect.client_id)
    }

    /// The event a record frame brings, after keeping its record for the jobs (templates make no event).
    fn record_frame(&self, frame: &Frame) -> Option<NewEvent> {
        if frame_collection(frame) == BOT_TEMPLATES {
            self.template_frame(frame);
            return None;
        }
        let RecordFrame { event, seen } = match frame_event(frame) {
            Ok(Some(record)) => record,
            Ok(None) => {
                tracing::debug!(event = %frame.event, "realtime frame ignored");
                return None;
            }
            Err(reason) => {
                tracing::warn!(event = %frame.event, reason = %reason, "realtime frame skipped");
                return None;
            }
        };
        // Before the event, whose job may start as soon as it is journaled; a delete is marked by the intake.
        if event.action != Action::Delete {
            let latest = self.intake.latest();
            match &event.record_updated {
                Some(updated) => latest.saw(&event.record_id, updated, seen),
                None => latest.announced(Kind::of(event.collection), &event.record_id, None),
            }
        }
        Some(event)
    }

    async fn journal(&self, event: NewEvent) -> Result<(), RealtimeError> {
        let (record_id, action) = (event.record_id.clone(), event.action);
        // A sink failure ends the session: the reconnect triggers a resync, which recovers the change.
        if let Ingested::New { event_id, job_id, .. } = self.intake.submit(event).await? {
            tracing::debug!(record_id = %record_id, action = action.as_str(), event_id, job_id, "realtime event journaled");
        }
        Ok(())
    }

    /// A template changed: kept for the jobs of its instances (templates make no event of their own).
    fn template_frame(&self, frame: &Frame) {
        let latest = self.intake.latest();
        match template_frame(frame) {
            Ok((id, Some(updated), action, template)) if action != Action::Delete => {
                latest.saw(&id, &updated, latest::Frame::Template(template));
            }
            Ok((id, updated, _, _)) => latest.announced(Kind::Template, &id, updated.as_deref()),
            Err(reason) => {
                tracing::warn!(event = %frame.event, reason = %reason, "realtime template frame skipped");
            }
        }
    }

    /// Reconnects until cancelled.
    pub async fn run(self, cancel: CancellationToken) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = match reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(TCP_KEEPALIVE)
            .tcp_keepalive_interval(TCP_KEEPALIVE_INTERVAL)
            .tcp_keepalive_retries(TCP_KEEPALIVE_RETRIES)
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the HTTP client; realtime consumer not started");
                return;
            }
        };
        let mut backoff = Reconnects::new();
        loop {
            let mut connected_at = None;
            let outcome = self.session(&client, &cancel, &mut connected_at).await;
            self.intake.metrics().realtime_connected.set(0);
            // Frames may be missed until the next session's resync: none held is known to be the newest.
            self.intake.latest().stream_ended();
            if connected_at.is_some_and(|t| t.elapsed() >= HEALTHY_AFTER) {
                backoff.reset();
            }
            if connected_at.is_some() && !matches!(outcome, Ok(SessionEnd::Cancelled)) {
                self.in_doubt.send_modify(|n| *n += 1);
            }
            match outcome {
                Ok(SessionEnd::Cancelled) => return,
                Ok(SessionEnd::Closed) => tracing::info!("PocketBase realtime stream ended; reconnecting"),
                Err(e @ (RealtimeError::Auth(_) | RealtimeError::Token(_))) => {
                    tracing::error!(error = %e, "PocketBase realtime cannot authenticate; retrying");
                    backoff.saturate();
                }
                Err(e) => tracing::warn!(error = %e, "PocketBase realtime connection lost; reconnecting"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]]) -> Vec<Frame> {
        let mut p = SseParser::default();
        chunks.iter().flat_map(|c| p.push(c).unwrap()).collect()
    }

    #[test]
    fn parses_pocketbase_frames_split_anywhere() {
        let raw = b"id:abc\nevent:PB_CONNECT\ndata:{\"clientId\":\"abc\"}\n\nid:abc\nevent:tenants/*\ndata:{}\n\n";
        let whole = frames(&[raw]);
        assert_eq!(whole.len(), 2);
        assert_eq!(
            whole[0],
            Frame {
                id: Some("abc".into()),
                event: "PB_CONNECT".into(),
                data: "{\"clientId\":\"abc\"}".into()
            }
        );
        for split in 0..raw.len() {
            assert_eq!(frames(&[&raw[..split], &raw[split..]]), whole, "split at {split}");
        }
    }

    #[test]
    fn tolerates_spaces_crlf_comments_and_multiline_data() {
        let got = frames(&[b": hello\r\nevent: x\r\ndata: a\r\ndata:b\r\nretry: 5\r\n\r\n\n\ndata:\ndata:c\n\n"]);
        assert_eq!(
            got,
            vec![
                Frame {
                    id: None,
                    event: "x".into(),
                    data: "a\nb".into()
                },
                Frame {
                    id: None,
                    event: String::new(),
                    data: "\nc".into()
                },
            ]
        );
    }

    #[test]
    fn unterminated_line_is_bounded() {
        let mut p = SseParser::default();
        assert_eq!(p.push(&vec![b'x'; MAX_LINE_BYTES + 1]), Err(SseTooLarge::Line));
    }

    #[test]
    fn a_frame_of_many_data_lines_is_bounded() {
        let mut p = SseParser::default();
        let line = format!("data:{}\n", "x".repeat(1 << 16));
        let mut result = Ok(Vec::new());
        for _ in 0..(MAX_FRAME_BYTES >> 16) + 1 {
            result = p.push(line.as_bytes());
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(SseTooLarge::Frame));
        assert!(p.frame.data.len() <= MAX_FRAME_BYTES);
    }

    #[test]
    fn frame_bound_counts_lines_and_events_across_chunks() {
        let mut b = FrameBound::default();
        let line = vec![b'x'; MAX_LINE_BYTES / 2];
        b.check(b"data:").unwrap();
        b.check(&line).unwrap();
        assert_eq!(b.check(&line), Err(SseTooLarge::Line), "one line split over chunks");
        let mut b = FrameBound::default();
        for _ in 0..(MAX_FRAME_BYTES >> 16) {
            b.check(&vec![b'x'; 1 << 16]).unwrap();
            b.check(b"\r\n").unwrap();
        }
        assert_eq!(
            b.check(b"data:x\n"),
            Err(SseTooLarge::Frame),
            "many lines, no blank line"
        );
        let mut b = FrameBound::default();
        for _ in 0..(MAX_FRAME_BYTES >> 16) + 2 {
            b.check(&vec![b'x'; 1 << 16]).unwrap();
            b.check(b"\n\r\n").unwrap();
        }
    }

    #[test]
    fn record_frames_become_events() {
        let frame = Frame {
            id: None,
            event: "bot_instances/*".into(),
            data: r#"{"record":{"id":"r1","updated":"2026-01-01 00:00:00.000Z","api_token":"x"},"action":"delete"}"#
                .into(),
        };
        let ev = frame_event(&frame).unwrap().unwrap().event;
        assert_eq!(ev.source, Source::Realtime);
        assert_eq!(ev.dedupe_key, "bot_instances:r1:delete:2026-01-01 00:00:00.000Z");
        assert!(ev.payload.get("api_token").is_none());
        assert!(matches!(
            frame_event(&Frame {
                event: "other/*".into(),
                ..frame.clone()
            }),
            Ok(None)
        ));
        assert!(
            frame_event(&Frame {
                data: "{".into(),
                ..frame.clone()
            })
            .is_err()
        );
        assert!(
            frame_event(&Frame {
                data: r#"{"record":{"id":"r1"},"action":"x"}"#.into(),
                ..frame
            })
            .is_err()
        );
    }

    #[test]
    fn record_frames_carry_their_record_for_the_jobs_and_templates_make_no_event() {
        let frame = |event: &str, record: Value, action: &str| Frame {
            id: None,
            event: event.into(),
            data: json!({"record": record, "action": action}).to_string(),
        };
        let record = json!({"id": "r1", "tenant": "t1", "template": "tp1", "updated": "2026-01-01 00:00:00.000Z",
                            "config": {"api_token": "x"}});
        let RecordFrame { seen, .. } = frame_event(&frame("bot_instances/*", record.clone(), "update"))
            .unwrap()
            .unwrap();
        assert!(matches!(seen, latest::Frame::Instance(Some(i)) if i.tenant == "t1"));
        let mut bad = record.clone();
        bad["desired_state"] = json!(7);
        let RecordFrame { seen, event } = frame_event(&frame("bot_instances/*", bad, "update")).unwrap().unwrap();
        assert!(matches!(seen, latest::Frame::Instance(None)), "journaled, but not held");
        assert_eq!(event.record_id, "r1");
        let tenant = json!({"id": "t1", "slug": "acme", "updated": "2026-01-01 00:00:00.000Z"});
        let RecordFrame { seen, .. } = frame_event(&frame("tenants/*", tenant, "update")).unwrap().unwrap();
        assert!(matches!(seen, latest::Frame::Tenant(Some(t)) if t.slug == "acme"));

        let template = json!({"id": "tp1", "name": "bot", "updated": "2026-01-01 00:00:00.000Z"});
        let topic = frame(TEMPLATES_TOPIC, template.clone(), "update");
        assert!(matches!(frame_event(&topic), Ok(None)), "no event for a template");
        let (id, updated, action, t) = template_frame(&topic).unwrap();
        assert_eq!(
            (id.as_str(), updated.as_deref(), action),
            ("tp1", Some("2026-01-01 00:00:00.000Z"), Action::Update)
        );
        assert_eq!(t.map(|t| t.name).as_deref(), Some("bot"));
        assert!(template_frame(&frame(TEMPLATES_TOPIC, json!({"name": "x"}), "update")).is_err());
        assert!(template_frame(&frame(TEMPLATES_TOPIC, json!({"id": "../x"}), "update")).is_err());
    }

    #[test]
    fn stream_check_pings_once_subscribed_and_times_out() {
        let every = Duration::from_secs(5);
        let t0 = Instant::now();
        let mut check = StreamCheck::new(Some(every));
        assert_eq!(
            (check.due(), check.send(t0)),
            (None, None),
            "no ping before the subscription"
        );
        check.subscribed("client1", t0);
        assert_eq!(check.due(), Some(t0 + every));
        let (client, nonce) = check.send(t0 + every).unwrap();
        assert_eq!(client, "client1");
        assert_eq!(check.due(), None, "one ping at a time");
        assert_eq!(check.deadline(), Some(t0 + every * 2));
        check.answer(PingAnswer::Sent).unwrap();
        check.frame(r#"{"ts":"2026-01-01T00:00:00Z"}"#);
        check.frame(r#"{"ping":"someone else's"}"#);
        assert!(check.deadline().is_some(), "only our own nonce counts");
        check.frame(&format!(r#"{{"ping":"{nonce}"}}"#));
        assert_eq!((check.deadline(), check.due()), (None, Some(t0 + every * 2)));
    }

    #[test]
    fn a_ping_behind_a_backlog_of_frames_is_late_not_lost() {
        let every = Duration::from_secs(5);
        let t0 = Instant::now();
        let mut check = StreamCheck::new(Some(every));
        check.subscribed("c", t0);
        check.delivered(t0);
        check.send(t0);
        assert_eq!(
            check.deadline(),
            Some(t0 + every),
            "a frame from before the ping does not count"
        );
        check.delivered(t0 + Duration::from_secs(4));
        assert_eq!(check.deadline(), Some(t0 + every + Duration::from_secs(4)));
        check.delivered(t0 + Duration::from_secs(8));
        assert_eq!(
            check.deadline(),
            Some(t0 + Duration::from_secs(13)),
            "frames keep it waiting"
        );
        check.delivered(t0 + every * 20);
        assert_eq!(
            check.deadline(),
            Some(t0 + every * MAX_PING_LATENESS),
            "but not for ever"
        );
        check.frame(r#"{"ping":"1"}"#);
        assert_eq!(check.deadline(), None);

        // Silence after the ping: lost one interval after it was sent.
        let t1 = t0 + every * 30;
        check.send(t1);
        assert_eq!(check.deadline(), Some(t1 + every));
    }

    #[test]
    fn stream_check_answers() {
        let t0 = Instant::now();
        let mut check = StreamCheck::new(Some(Duration::from_secs(5)));
        check.subscribed("c", t0);
        check.send(t0);
        assert!(matches!(
            check.answer(PingAnswer::ClientGone),
            Err(RealtimeError::ClientGone)
        ));
        // One failed request is forgiven; two in a row end the stream.
        check.send(t0);
        check.answer(PingAnswer::Failed("reset".into())).unwrap();
        assert_eq!(check.deadline(), None, "a ping that was not sent is not awaited");
        check.send(t0);
        assert!(matches!(
            check.answer(PingAnswer::Failed("reset".into())),
            Err(RealtimeError::Transport(_))
        ));
        // Without the hook, pings stop and only the idle watchdog is left.
        let mut check = StreamCheck::new(Some(Duration::from_secs(5)));
        check.subscribed("c", t0);
        check.send(t0);
        check.answer(PingAnswer::NotInstalled).unwrap();
        assert_eq!((check.due(), check.deadline(), check.send(t0)), (None, None, None));
        let mut off = StreamCheck::new(None);
        off.subscribed("c", t0);
        assert_eq!(off.due(), None);
    }

    #[tokio::test]
    async fn in_a_flow_the_stream_is_read_in_bursts_and_outside_one_as_frames_come() {
        let wait = Duration::from_millis(300);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let mut stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let send_soon = |n: u32| {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                tx.send(n).expect("stream open");
            });
        };
        // A window no test machine's pause outlasts, so that the frames below stay a flow.
        let mut pace = Pace::new(Flow::new(Duration::from_secs(60), 3), wait);

        // Not a flow: a frame is read as soon as it comes.
        send_soon(1);
        let read = Instant::now();
        assert_eq!(pace.next(&mut stream).await, Some(1));
        assert!(
            read.elapsed() < wait,
            "outside a flow the reader waited {:?}",
            read.elapsed()
        );

        // A flow: frames that are ready are taken at once...
        (0..3).for_each(|_| pace.saw());
        tx.send(2).expect("stream open");
        tx.send(3).expect("stream open");
        let read = Instant::now();
        assert_eq!(pace.next(&mut stream).await, Some(2));
        assert_eq!(pace.next(&mut stream).await, Some(3));
        assert!(read.elapsed() < wait, "ready frames waited {:?}", read.elapsed());

        // ...and with none ready the reader waits, even when its read is dropped and made again meanwhile.
        send_soon(4);
        let read = Instant::now();
        let dropped = tokio::time::timeout(wait / 3, pace.next(&mut stream)).await;
        assert!(dropped.is_err(), "the frame was read before the wait ended");
        assert_eq!(pace.next(&mut stream).await, Some(4));
        let took = read.elapsed();
        assert!(
            took >= wait,
            "in a flow the reader took a frame after {took:?}, before its wait"
        );
        assert!(took < 2 * wait, "a dropped read started its wait again: {took:?}");

        // Frames that another task hands over one at a time, as the HTTP connection's task does, are
        // ready once it has run: a backlog is read through without a wait per frame.
        let (feed, mut fed) = tokio::sync::mpsc::channel::<u32>(1);
        let mut stream = futures_util::stream::poll_fn(move |cx| fed.poll_recv(cx));
        tokio::spawn(async move {
            for n in 0..20 {
                feed.send(n).await.expect("stream open");
            }
        });
        (0..3).for_each(|_| pace.saw());
        let read = Instant::now();
        for n in 0..20 {
            assert_eq!(pace.next(&mut stream).await, Some(n));
        }
        assert!(
            read.elapsed() < wait,
            "a backlog of 20 frames took {:?}",
            read.elapsed()
        );
    }

    #[test]
    fn backoff_stays_in_bounds_and_resets() {
        let mut b = Reconnects::new();
        let delays: Vec<_> = (0..10).map(|_| b.next_delay()).collect();
        assert!(
            delays.iter().all(|d| *d >= MIN_BACKOFF && *d <= MAX_BACKOFF),
            "{delays:?}"
        );
        assert!(delays[9] >= MAX_BACKOFF / 2);
        b.reset();
        assert!(b.next_delay() <= MIN_BACKOFF);
    }
}
