//! An HTTP/1.1-aware TCP proxy between the bridge and PocketBase that injects one precise fault at a time:
//! drop a matching request before PocketBase sees it, lose the answer to one PocketBase carried out, delay
//! one on its way to PocketBase, stall
//! the realtime streams open now (the socket stays up, nothing arrives: a half-open stream), hold back
//! matching realtime frames while later ones pass (PocketBase sends each frame from its own goroutine, so
//! a frame may come after later ones), refuse new streams, or cut every connection. Each fault hits exactly the requests its rule names, so a test can
//! reproduce one interleaving deterministically instead of cutting at random and hoping.
//!
//! Requests are parsed only as far as needed (request line, `Content-Length` body); answers are copied
//! through as bytes. The bridge's client neither pipelines nor sends chunked bodies.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::settings::PbAccess;
use crate::{TestBridge, TestPb, TestSim, eventually};

/// What happens to a request that matches a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The connection is closed before the request reaches PocketBase: nothing happens there.
    Drop,
    /// PocketBase carries the request out; the connection is closed before its answer reaches the bridge.
    LoseResponse,
    /// The request reaches PocketBase this much later (a slow write, without failing it).
    Delay(Duration),
}

/// Matches requests by method and by substrings of the request target or body (all must occur).
#[derive(Debug, Clone)]
pub struct Rule {
    /// `None` matches any method.
    pub method: Option<&'static str>,
    pub contains: Vec<String>,
    /// Substrings that must not occur in the target or body.
    pub excludes: Vec<String>,
    pub fault: Fault,
    /// How many matching requests get the fault; later ones pass.
    pub times: u32,
}

impl Rule {
    pub fn new(fault: Fault, method: Option<&'static str>, contains: &[&str]) -> Rule {
        Rule {
            method,
            contains: contains.iter().map(|s| s.to_string()).collect(),
            excludes: Vec::new(),
            fault,
            times: 1,
        }
    }

    pub fn excluding(mut self, excludes: &[&str]) -> Rule {
        self.excludes = excludes.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn times(mut self, n: u32) -> Rule {
        self.times = n;
        self
    }

    fn matches(&self, method: &str, target: &str, body: &str) -> bool {
        self.method.is_none_or(|m| m == method)
            && self
                .contains
                .iter()
                .all(|s| target.contains(s.as_str()) || body.contains(s.as_str()))
            && !self
                .excludes
                .iter()
                .any(|s| target.contains(s.as_str()) || body.contains(s.as_str()))
    }
}

struct ActiveRule {
    rule: Rule,
    hits: Arc<AtomicU32>,
}

/// Realtime frames held back: those whose text contains every `contains` and no `excludes`.
struct Hold {
    contains: Vec<String>,
    excludes: Vec<String>,
}

impl Hold {
    fn matches(&self, frame: &str) -> bool {
        self.contains.iter().all(|s| frame.contains(s.as_str()))
            && !self.excludes.iter().any(|s| frame.contains(s.as_str()))
    }
}

#[derive(Default)]
struct Shared {
    rules: Mutex<Vec<ActiveRule>>,
    hold: Mutex<Option<Hold>>,
    /// Frames held back so far, over every stream.
    held: AtomicU32,
    block_streams: AtomicBool,
    /// "METHOD target" of every request forwarded to PocketBase.
    forwarded: Mutex<Vec<String>>,
    /// Requests in a [`Fault::Delay`] now, and the most there were at once: a request is held there
    /// while its sender waits for the answer, so this is how many the sender had in flight.
    delayed_now: AtomicU32,
    delayed_most: AtomicU32,
}

impl Shared {
    /// The fault for this request, if a rule with hits left matches it.
    fn fault_for(&self, method: &str, target: &str, body: &str) -> Option<Fault> {
        let rules = self.rules.lock().expect("rules lock");
        rules.iter().find_map(|r| {
            if !r.rule.matches(method, target, body) {
                return None;
            }
            let taken = r.hits.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < r.rule.times).then_some(n + 1)
            });
            taken.is_ok().then_some(r.rule.fault)
        })
    }
}

pub struct FaultProxy {
    pub url: String,
    shared: Arc<Shared>,
    cut: watch::Sender<u64>,
    stall: watch::Sender<u64>,
    release: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(target_port: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("fault proxy bind");
        let port = listener.local_addr().expect("fault proxy addr").port();
        let shared = Arc::new(Shared::default());
        let (cut, _) = watch::channel(0u64);
        let (stall, _) = watch::channel(0u64);
        let (release, _) = watch::channel(0u64);
        let task = {
            let (shared, cut, stall, release) = (shared.clone(), cut.clone(), stall.clone(), release.clone());
            tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let conn = Connection {
                        shared: shared.clone(),
                        // Subscribing marks the current value seen: only later cuts apply.
                        cut: cut.subscribe(),
                        stall: stall.subscribe(),
                        release: release.subscribe(),
                    };
                    tokio::spawn(conn.serve(inbound, target_port));
                }
            })
        };
        FaultProxy {
            url: format!("http://127.0.0.1:{port}"),
            shared,
            cut,
            stall,
            release,
            task,
        }
    }

    /// Adds a rule; returns its hit counter (how many requests got the fault so far).
    pub fn add_rule(&self, rule: Rule) -> Arc<AtomicU32> {
        let hits = Arc::new(AtomicU32::new(0));
        self.shared.rules.lock().expect("rules lock").push(ActiveRule {
            rule,
            hits: hits.clone(),
        });
        hits
    }

    /// Closes every open connection at once.
    pub fn cut(&self) {
        self.cut.send_modify(|v| *v += 1);
    }

    /// The realtime streams open now stop delivering: their sockets stay up, PocketBase's frames are
    /// swallowed. Streams opened later are not affected.
    pub fn stall_streams(&self) {
        self.stall.send_modify(|v| *v += 1);
    }

    /// From now on, realtime frames whose text (topic and record) contains every `contains` and none of
    /// `excludes` are held back; the frames after them pass.
    pub fn hold_frames(&self, contains: &[&str], excludes: &[&str]) {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        *self.shared.hold.lock().expect("hold lock") = Some(Hold {
            contains: owned(contains),
            excludes: owned(excludes),
        });
    }

    /// How many frames were held back so far.
    pub fn held_frames(&self) -> u32 {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// Stops holding frames back and delivers those held, in the order they came.
    pub fn release_frames(&self) {
        *self.shared.hold.lock().expect("hold lock") = None;
        self.release.send_modify(|v| *v += 1);
    }

    /// While on, new realtime streams (`GET /api/realtime`) are refused by closing their connection.
    pub fn block_streams(&self, on: bool) {
        self.shared.block_streams.store(on, Ordering::SeqCst);
    }

    /// The most requests that were held in a [`Fault::Delay`] at the same time.
    pub fn most_delayed_at_once(&self) -> u32 {
        self.shared.delayed_most.load(Ordering::SeqCst)
    }

    /// How many forwarded requests satisfy `pred` (given "METHOD target").
    pub fn forwarded(&self, pred: impl Fn(&str) -> bool) -> usize {
        let seen = self.shared.forwarded.lock().expect("forwarded lock");
        seen.iter().filter(|r| pred(r)).count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

struct Connection {
    shared: Arc<Shared>,
    cut: watch::Receiver<u64>,
    stall: watch::Receiver<u64>,
    release: watch::Receiver<u64>,
}

/// One request: its head as received, its body, and the parts the rules look at.
struct Request {
    head: Vec<u8>,
    body: Vec<u8>,
    method: String,
    target: String,
}

const MAX_HEAD: usize = 64 * 1024;

async fn read_request<R: AsyncBufReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<Request>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = r.read_until(b'\n', &mut head).await?;
        if n == 0 {
            return Ok(None);
        }
        if head.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too long"));
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.lines();
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default().to_string();
    let mut length = 0usize;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if name == "content-length" {
            length = value.trim().parse().map_err(std::io::Error::other)?;
        } else if name == "transfer-encoding" {
            return Err(std::io::Error::other("chunked request bodies are not supported"));
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).await?;
    Ok(Some(Request {
        head,
        body,
        method,
        target,
    }))
}

impl Connection {
    async fn serve(mut self, inbound: TcpStream, target_port: u16) {
        let Ok(outbound) = TcpStream::connect(("127.0.0.1", target_port)).await else {
            return;
        };
        let (client_read, mut client_write) = inbound.into_split();
        let (mut server_read, mut server_write) = outbound.into_split();
        let lose_answer = AtomicBool::new(false);
        // The stall count when this connection's realtime stream began (u64::MAX: not a stream).
        let stream_began = AtomicU64::new(u64::MAX);
        let stall = self.stall.clone();
        let shared = self.shared.clone();
        let upstream = async {
            let mut reader = BufReader::new(client_read);
            while let Ok(Some(req)) = read_request(&mut reader).await {
                if req.method == "GET" && req.target.starts_with("/api/realtime") {
                    if shared.block_streams.load(Ordering::SeqCst) {
                        return;
                    }
                    stream_began.store(*stall.borrow(), Ordering::SeqCst);
                }
                let body = String::from_utf8_lossy(&req.body);
                match shared.fault_for(&req.method, &req.target, &body) {
                    Some(Fault::Drop) => return,
                    Some(Fault::LoseResponse) => lose_answer.store(true, Ordering::SeqCst),
                    Some(Fault::Delay(by)) => {
                        let now = shared.delayed_now.fetch_add(1, Ordering::SeqCst) + 1;
                        shared.delayed_most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(by).await;
                        shared.delayed_now.fetch_sub(1, Ordering::SeqCst);
                    }
                    None => {}
                }
                shared
                    .forwarded
                    .lock()
                    .expect("forwarded lock")
                    .push(format!("{} {}", req.method, req.target));
                if server_write.write_all(&req.head).await.is_err() || server_write.write_all(&req.body).await.is_err()
                {
                    return;
                }
            }
        };
        let mut release = self.release.clone();
        let downstream = async {
            let mut buf = vec![0u8; 16 * 1024];
            let mut stream = StreamRelay::default();
            loop {
                let n = tokio::select! {
                    read = server_read.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    },
                    released = release.changed() => {
                        // An error: the proxy is gone.
                        if released.is_err() || client_write.write_all(&stream.released()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                if lose_answer.load(Ordering::SeqCst) {
                    return;
                }
                let began = stream_began.load(Ordering::SeqCst);
                if began == u64::MAX {
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    continue;
                }
                if *stall.borrow() != began {
                    continue;
                }
                let passed = stream.relay(&buf[..n], &shared);
                if client_write.write_all(&passed).await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = upstream => {}
            _ = downstream => {}
            _ = self.cut.changed() => {}
        }
    }
}

/// A realtime stream's answer as it passes: its head as is, then its chunked body decoded into frames,
/// each passed on as one chunk or held back (see [`FaultProxy::hold_frames`]).
#[derive(Default)]
struct StreamRelay {
    head_done: bool,
    /// Bytes received and not yet decoded: part of the head or of a chunk.
    raw: Vec<u8>,
    /// Decoded text not yet ending a frame.
    text: Vec<u8>,
    held: Vec<Vec<u8>>,
}

/// One HTTP/1.1 chunk.
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl StreamRelay {
    /// What of `bytes` goes on to the bridge now.
    fn relay(&mut self, bytes: &[u8], shared: &Shared) -> Vec<u8> {
        self.raw.extend_from_slice(bytes);
        let mut out = Vec::new();
        if !self.head_done {
            let Some(end) = find(&self.raw, b"\r\n\r\n") else {
                return out;
            };
            let head: Vec<u8> = self.raw.drain(..end + 4).collect();
            assert!(
                String::from_utf8_lossy(&head)
                    .to_ascii_lowercase()
                    .contains("transfer-encoding: chunked"),
                "the realtime stream is expected to be chunked"
            );
            out.extend_from_slice(&head);
            self.head_done = true;
        }
        // Each complete chunk: "<size hex>\r\n<data>\r\n".
        while let Some(line) = find(&self.raw, b"\r\n") {
            let size = std::str::from_utf8(&self.raw[..line])
                .ok()
                .and_then(|h| usize::from_str_radix(h.trim(), 16).ok())
                .expect("a chunk size");
            if self.raw.len() < line + 2 + size + 2 {
                break;
            }
            if size == 0 {
                out.append(&mut self.raw);
                return out;
            }
            let data: Vec<u8> = self.raw[line + 2..line + 2 + size].to_vec();
            self.raw.drain(..line + 2 + size + 2);
            self.text.extend_from_slice(&data);
        }
        while let Some(end) = find(&self.text, b"\n\n") {
            let frame: Vec<u8> = self.text.drain(..end + 2).collect();
            let hold = shared.hold.lock().expect("hold lock");
            if hold
                .as_ref()
                .is_some_and(|h| h.matches(&String::from_utf8_lossy(&frame)))
            {
                shared.held.fetch_add(1, Ordering::SeqCst);
                self.held.push(frame);
            } else {
                out.extend(chunk(&frame));
            }
        }
        out
    }

    /// The frames held back, as chunks.
    fn released(&mut self) -> Vec<u8> {
        self.held.drain(..).flat_map(|f| chunk(&f)).collect()
    }
}

/// A deployment whose bridge reaches PocketBase only through a [`FaultProxy`]: PocketBase with the
/// project's schema and hooks, the simulator and the bridge in the test process, and the `base-llm`
/// template.
pub struct ProxiedStack {
    pub pb: TestPb,
    pub sim: TestSim,
    pub proxy: FaultProxy,
    pub bridge: TestBridge,
    pub template_id: String,
}

impl ProxiedStack {
    pub async fn start(bridge_env: &[(&str, &str)]) -> ProxiedStack {
        let pb = TestPb::start().await;
        let template_id = pb.create_template(json!({"name": "base-llm", "active": true})).await["id"]
            .as_str()
            .expect("template id")
            .to_string();
        let sim = TestSim::start(crate::world::SIM_RUNNING_AT_ONCE);
        let proxy = FaultProxy::start(pb.port).await;
        let through_proxy = PbAccess {
            url: &proxy.url,
            email: &pb.email,
            password: &pb.password,
        };
        let bridge = TestBridge::for_stack(through_proxy, &sim, bridge_env).await;
        ProxiedStack {
            pb,
            sim,
            proxy,
            bridge,
            template_id,
        }
    }

    /// A tenant whose Coolify project is ready (so the instances created next go straight to work), with
    /// the bridge idle.
    pub async fn ready_tenant(&self, slug: &str) -> String {
        let t = self
            .pb
            .create_tenant(json!({"name": slug, "slug": slug, "status": "active",
                "plan_tier": "business", "max_stacks": 100}))
            .await;
        let id = t["id"].as_str().expect("tenant id").to_string();
        eventually(Duration::from_secs(30), "the tenant's Coolify project", || async {
            let t = self.record("tenants", &id).await;
            (!t["coolify_project_uuid"].as_str().unwrap_or_default().is_empty()).then_some(())
        })
        .await;
        // The tenant's job also wakes the tenant's instances; let it finish, so that only the mechanism a
        // test exercises can find an instance created next.
        self.wait_idle(Duration::from_secs(30)).await;
        id
    }

    pub async fn create_instance(&self, tenant: &str, subdomain: &str) -> String {
        let i = self
            .pb
            .create_instance(json!({"tenant": tenant, "template": self.template_id,
                "name": subdomain, "subdomain": subdomain, "desired_state": "running", "config": {}}))
            .await;
        i["id"].as_str().expect("instance id").to_string()
    }

    pub async fn record(&self, collection: &str, id: &str) -> Value {
        self.pb.record(collection, id).await
    }

    /// The record's deploy_logs rows, oldest first.
    pub async fn deploy_logs(&self, record_id: &str) -> Vec<Value> {
        let v = self
            .pb
            .superuser_request(
                "GET",
                &format!("/api/collections/deploy_logs/records?perPage=100&sort=created,id&filter=record_id%3D%27{record_id}%27"),
                None,
            )
            .await;
        v["items"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the bridge has no queued or running job (seen twice in a row, 200 ms apart).
    pub async fn wait_idle(&self, within: Duration) {
        self.bridge.admin().wait_idle(within).await;
    }
}
