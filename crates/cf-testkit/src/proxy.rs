//! A TCP proxy on 127.0.0.1 that can cut its open connections and refuse new ones: a network between
//! the bridge and PocketBase that fails on demand.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct TcpProxy {
    pub port: u16,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// How many times [`TcpProxy::cut`] was called.
    pub cuts: AtomicU64,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Forwards every connection to `127.0.0.1:target`.
    pub async fn start(target: u16) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (o, c) = (open.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                // Refused while closed: the socket is dropped at once.
                if !o.load(Ordering::SeqCst) {
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut all = c.lock().unwrap_or_else(|p| p.into_inner());
                all.retain(|h| !h.is_finished());
                all.push(task);
            }
        });
        TcpProxy {
            port,
            open,
            conns,
            cuts: AtomicU64::new(0),
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Drops every open connection at once (new ones are still accepted unless closed).
    pub fn cut(&self) {
        self.cuts.fetch_add(1, Ordering::Relaxed);
        for h in self.conns.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            h.abort();
        }
    }

    /// Refuses new connections until [`TcpProxy::open`].
    pub fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
    }

    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.close();
        self.cut();
        self.accept.abort();
    }
}
