//! Server-sent events of what changes (events journaled, job claims and outcomes, health verdicts), from
//! the journal's feed. `/admin/stream` is for API clients (the bearer token); `/admin/ui/stream` is the
//! same stream for the operator page (its session cookie, which only `/admin/ui` paths accept). A watcher
//! that falls more than the feed's capacity behind is told how much it missed (`event: lagged`) and goes
//! on; nothing upstream ever waits for it.

use std::time::Duration;

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, get, web};
use futures_util::{Stream, stream};
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

/// The stream's frames: `hello` first, then each change as it comes, `lagged` when this watcher lost
/// some, a keep-alive comment when idle; it ends when the bridge stops.
fn frames(rx: Receiver<Change>, end: CancellationToken) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    let watch = Watch { rx, end, opened: false };
    stream::unfold(watch, |mut w| async move {
        if !w.opened {
            w.opened = true;
            let hello = format!("retry: {RETRY_MS}\nevent: hello\ndata: {{}}\n\n");
            return Some((Ok(Bytes::from(hello)), w));
        }
        let next = tokio::select! {
            biased;
            _ = w.end.cancelled() => return None,
            got = w.rx.recv() => match got {
                Ok(change) => change_frame(&change),
                Err(RecvError::Lagged(skipped)) => frame("lagged", &serde_json::json!({ "skipped": skipped })),
                Err(RecvError::Closed) => return None,
            },
            _ = tokio::time::sleep(KEEPALIVE) => Bytes::from_static(b": keepalive\n\n"),
        };
        Some((Ok(next), w))
    })
}

fn sse(rx: Receiver<Change>, end: CancellationToken) -> HttpResponse {
    let body = frames(rx, end);
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

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::events::{Action, Collection, Source};
    use crate::journal::{CHANGES_CAPACITY, Journal};

    fn event(id: i64) -> Change {
        Change::Event {
            event_id: id,
            source: Source::Webhook,
            collection: Collection::BotInstances,
            record_id: "abc".into(),
            action: Action::Update,
        }
    }

    #[tokio::test]
    async fn a_watcher_that_falls_behind_skips_and_is_told_while_writers_never_wait() {
        let dir = tempfile::tempdir().expect("dir");
        let journal = Journal::open(&dir.path().join("j.db")).expect("journal");
        let end = CancellationToken::new();
        let body = frames(journal.subscribe(), end.clone());
        // Nobody reads while more than the feed holds is announced: each announce returns at once.
        let extra = 10;
        for id in 1..=(CHANGES_CAPACITY + extra) as i64 {
            journal.announce(event(id));
        }
        let frames: Vec<String> = body
            .take(3)
            .map(|f| String::from_utf8_lossy(&f.expect("frame")).into_owned())
            .collect()
            .await;
        assert!(frames[0].contains("event: hello"), "{frames:?}");
        assert_eq!(frames[1], format!("event: lagged\ndata: {{\"skipped\":{extra}}}\n\n"));
        // The watcher goes on with the oldest change it still has.
        assert!(frames[2].starts_with("event: change\ndata: {"), "{frames:?}");
        assert!(frames[2].contains(&format!("\"event_id\":{}", extra + 1)), "{frames:?}");
    }

    #[tokio::test]
    async fn the_stream_ends_when_the_bridge_stops() {
        let dir = tempfile::tempdir().expect("dir");
        let journal = Journal::open(&dir.path().join("j.db")).expect("journal");
        let end = CancellationToken::new();
        let mut body = Box::pin(frames(journal.subscribe(), end.clone()));
        assert!(body.next().await.is_some(), "hello");
        end.cancel();
        let rest = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("the stream ends at once");
        assert!(rest.is_none());
    }
}
