//! Server-sent events of what changes (events journaled, job claims and outcomes, health verdicts), from
//! the journal's feed. `/admin/stream` is for API clients (the bearer token); `/admin/ui/stream` is the
//! same stream for the operator page (its session cookie, which only `/admin/ui` paths accept). A watcher
//! that falls more than the feed's capacity behind is told how much it missed (`event: lagged`) and goes
//! on; nothing upstream ever waits for it.

use std::time::Duration;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, get, web};
use futures_util::stream;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::auth::{Admin, is_operator};
use super::glance::Glance;
use super::operator::AdminState;
use crate::journal::Change;

/// A comment this often keeps proxies from closing an idle stream.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long browsers wait before reconnecting.
const RETRY_MS: u64 = 2000;

/// One message in the SSE wire format.
pub fn frame(event: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

fn change_frame(change: &Change) -> Bytes {
    match serde_json::to_value(change) {
        Ok(v) => frame("change", &v),
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode a change for the stream");
            Bytes::from_static(b": unencodable change\n\n")
        }
    }
}

struct Watch {
    rx: Receiver<Change>,
    end: CancellationToken,
    opened: bool,
}

fn sse(rx: Receiver<Change>, end: CancellationToken) -> HttpResponse {
    let watch = Watch { rx, end, opened: false };
    let body = stream::unfold(watch, |mut w| async move {
        if !w.opened {
            w.opened = true;
            let hello = format!("retry: {RETRY_MS}\nevent: hello\ndata: {{}}\n\n");
            return Some((Ok::<_, actix_web::Error>(Bytes::from(hello)), w));
        }
        let next = tokio::select! {
            _ = w.end.cancelled() => return None,
            _ = tokio::time::sleep(KEEPALIVE) => Bytes::from_static(b": keepalive\n\n"),
            got = w.rx.recv() => match got {
                Ok(change) => change_frame(&change),
                Err(RecvError::Lagged(skipped)) => frame("lagged", &serde_json::json!({ "skipped": skipped })),
                Err(RecvError::Closed) => return None,
            },
        };
        Some((Ok(next), w))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

#[get("/admin/stream")]
async fn api_stream(_: Admin, state: web::Data<AdminState>, glance: web::Data<Glance>) -> HttpResponse {
    sse(state.ctx.journal.subscribe(), glance.streams_end())
}

#[get("/admin/ui/stream")]
async fn page_stream(req: HttpRequest, state: web::Data<AdminState>, glance: web::Data<Glance>) -> HttpResponse {
    if !is_operator(&req) {
        return super::ui::unauthorized();
    }
    sse(state.ctx.journal.subscribe(), glance.streams_end())
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(api_stream).service(page_stream);
}
