//! Wakes an idle replica's dispatcher when a job becomes due anywhere: transactions that queue a job
//! `NOTIFY` on [`CHANNEL`] at commit, and each replica `LISTEN`s on a connection of its own (reconnecting).
//! A wake-up is a hint: the dispatcher also polls, so one lost while reconnecting only delays.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::pg::{PgConfig, PgError, TlsMode, rustls_connector};

/// The NOTIFY channel for "a job became due".
pub const CHANNEL: &str = "cf_bridge_jobs";

/// Listens until dropped or cancelled.
pub struct Waker {
    task: JoinHandle<()>,
}

impl Waker {
    /// Pokes `notify` (one stored wake-up, as the intake does) at every notification and after every
    /// (re)connect, when whatever was notified meanwhile may be due.
    pub fn spawn(cfg: PgConfig, notify: Arc<Notify>, stop: CancellationToken) -> Waker {
        Waker {
            task: tokio::spawn(listen(cfg, notify, stop)),
        }
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn listen(cfg: PgConfig, notify: Arc<Notify>, stop: CancellationToken) {
    loop {
        tokio::select! {
            r = listen_once(&cfg, &notify) => if let Err(e) = r {
                tracing::warn!(error = %e, "job wake-ups: LISTEN connection failed; reconnecting");
            },
            () = stop.cancelled() => return,
        }
        notify.notify_one();
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return,
        }
    }
}

async fn listen_once(cfg: &PgConfig, notify: &Notify) -> Result<(), PgError> {
    let driver = cfg.driver_config();
    let failed = |error| PgError::Connect {
        target: cfg.redacted(),
        error,
    };
    // LISTEN needs the connection's messages, so this connection is driven here, not by `pg::connect`'s task.
    match &cfg.tls {
        TlsMode::Disable => {
            let (client, conn) = driver.connect(tokio_postgres::NoTls).await.map_err(failed)?;
            listen_on(client, conn, notify).await
        }
        TlsMode::VerifyFull { root_cert } => {
            let tls = rustls_connector(root_cert.as_deref())?;
            let (client, conn) = driver.connect(tls).await.map_err(failed)?;
            listen_on(client, conn, notify).await
        }
    }
}

async fn listen_on<S, T>(
    client: tokio_postgres::Client,
    mut conn: tokio_postgres::Connection<S, T>,
    notify: &Notify,
) -> Result<(), PgError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt as _;
    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    let sql = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&sql);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            r = &mut listen, if !listening => {
                r?;
                listening = true;
                // Jobs queued before LISTEN took effect: look now.
                notify.notify_one();
            }
            m = messages.next() => match m {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => notify.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(PgError::Query(e)),
                None => return Ok(()),
            }
        }
    }
}
