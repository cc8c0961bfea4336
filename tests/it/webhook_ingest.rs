//! POST /hooks/pocketbase: signature checks, body checks and sink outcomes, through the actix service.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::intake_support::MemorySink;
use actix_web::http::StatusCode;
use actix_web::{App, test as atest, web};
use cf_bridge::events::{Action, Collection, Source};
use cf_bridge::http::ingest::{self, IngestState};
use cf_bridge::intake::Intake;
use cf_bridge::metrics::Metrics;
use cf_bridge::webhook::{WebhookSecret, generate_secret};
use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::sync::Notify;

struct Harness {
    sink: Arc<MemorySink>,
    secret: WebhookSecret,
    notify: Arc<Notify>,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            sink: Arc::new(MemorySink::default()),
            secret: generate_secret().parse().expect("generated secret parses"),
            notify: Arc::new(Notify::new()),
        }
    }

    async fn call(&self, req: atest::TestRequest) -> (StatusCode, Value) {
        let state = IngestState {
            intake: Intake::new(self.sink.clone(), self.notify.clone(), Arc::new(Metrics::new())),
            secret: Some(self.secret.clone()),
        };
        let app = atest::init_service(App::new().app_data(web::Data::new(state)).configure(ingest::configure)).await;
        let resp = atest::call_service(&app, req.to_request()).await;
        let status = resp.status();
        let body = atest::read_body(resp).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// A request signed with this harness's secret.
    fn signed(&self, id: &str, ts: i64, body: &[u8]) -> atest::TestRequest {
        let ts = ts.to_string();
        post(body)
            .insert_header(("webhook-id", id))
            .insert_header(("webhook-timestamp", ts.as_str()))
            .insert_header(("webhook-signature", self.secret.sign(id, &ts, body)))
    }
}

fn post(body: &[u8]) -> atest::TestRequest {
    atest::TestRequest::post()
        .uri("/hooks/pocketbase")
        .insert_header(("content-type", "application/json"))
        .set_payload(body.to_vec())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn change(event: &str, collection: &str, id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "event": event,
        "collection": collection,
        "record": {"id": id, "updated": "2026-01-02 03:04:05.678Z", "name": "n", "api_token": "tok",
                   "secrets_hash": "abc", "config": {"bot_password": "pw", "size": 2}},
        "sent_at": "2026-01-02T03:04:05.678Z"
    }))
    .expect("json")
}

#[actix_web::test]
async fn valid_delivery_is_journaled_without_secrets_and_notifies() {
    let h = Harness::new();
    let body = change("update", "bot_instances", "abc123def456ghi");
    let (status, resp) = h.call(h.signed("msg_one", now(), &body)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(resp, json!({"status": "accepted"}));
    let events = h.sink.events();
    assert_eq!(events.len(), 1);
    let ev = &events[0];
    assert_eq!(
        (ev.source, ev.collection, ev.action),
        (Source::Webhook, Collection::BotInstances, Action::Update)
    );
    assert_eq!(ev.record_id, "abc123def456ghi");
    assert_eq!(ev.delivery_id.as_deref(), Some("msg_one"));
    assert_eq!(
        ev.dedupe_key,
        "bot_instances:abc123def456ghi:update:2026-01-02 03:04:05.678Z"
    );
    assert_eq!(
        ev.payload,
        json!({"id": "abc123def456ghi", "updated": "2026-01-02 03:04:05.678Z", "name": "n", "secrets_hash": "abc",
               "config": {"size": 2}})
    );
    tokio::time::timeout(std::time::Duration::from_millis(100), h.notify.notified())
        .await
        .expect("notified");
}

#[actix_web::test]
async fn any_of_several_signatures_may_match() {
    let h = Harness::new();
    let body = change("create", "tenants", "t1");
    let ts = now().to_string();
    let other: WebhookSecret = generate_secret().parse().expect("secret");
    let sigs = format!(
        "v2,bogus {} v1,not-base64! {}",
        other.sign("m1", &ts, &body),
        h.secret.sign("m1", &ts, &body)
    );
    let req = post(&body)
        .insert_header(("webhook-id", "m1"))
        .insert_header(("webhook-timestamp", ts.as_str()))
        .insert_header(("webhook-signature", sigs));
    assert_eq!(h.call(req).await.0, StatusCode::ACCEPTED);
}

#[actix_web::test]
async fn bad_signatures_are_refused_and_write_nothing() {
    let h = Harness::new();
    let body = change("create", "tenants", "t1");
    let ts = now().to_string();

    let wrong: WebhookSecret = generate_secret().parse().expect("secret");
    let req = post(&body)
        .insert_header(("webhook-id", "m1"))
        .insert_header(("webhook-timestamp", ts.as_str()))
        .insert_header(("webhook-signature", wrong.sign("m1", &ts, &body)));
    assert_eq!(
        h.call(req).await,
        (StatusCode::UNAUTHORIZED, json!({"error": "invalid signature"}))
    );

    let mut tampered = body.clone();
    let last = tampered.len() - 2;
    tampered[last] = b' ';
    let req = post(&tampered)
        .insert_header(("webhook-id", "m1"))
        .insert_header(("webhook-timestamp", ts.as_str()))
        .insert_header(("webhook-signature", h.secret.sign("m1", &ts, &body)));
    assert_eq!(
        h.call(req).await,
        (StatusCode::UNAUTHORIZED, json!({"error": "invalid signature"}))
    );

    for ts in [now() - 301, now() + 301] {
        let (status, resp) = h.call(h.signed("m2", ts, &body)).await;
        assert_eq!(
            (status, resp),
            (
                StatusCode::UNAUTHORIZED,
                json!({"error": "timestamp outside tolerance"})
            )
        );
    }

    for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut req = post(&body);
        for (name, value) in [
            ("webhook-id", "m3".to_string()),
            ("webhook-timestamp", ts.clone()),
            ("webhook-signature", h.secret.sign("m3", &ts, &body)),
        ] {
            if name != missing {
                req = req.insert_header((name, value));
            }
        }
        let expected = json!({"error": format!("missing header {missing}")});
        assert_eq!(h.call(req).await, (StatusCode::UNAUTHORIZED, expected));
    }
    assert!(h.sink.offered().is_empty());
}

#[actix_web::test]
async fn oversize_body_is_413() {
    let h = Harness::new();
    let body = vec![b' '; ingest::MAX_BODY_BYTES + 1];
    let (status, resp) = h.call(h.signed("big", now(), &body)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(resp, json!({"error": "body larger than 256 KiB"}));
    assert!(h.sink.offered().is_empty());
}

#[actix_web::test]
async fn malformed_bodies_are_400_with_a_reason() {
    let h = Harness::new();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "malformed body"),
        (
            br#"{"event":"update","collection":"tenants"}"#.to_vec(),
            "missing field `record`",
        ),
        (
            br#"{"collection":"tenants","record":{"id":"a"}}"#.to_vec(),
            "missing field `event`",
        ),
        (change("upsert", "tenants", "a"), "unknown event \"upsert\""),
        (change("update", "users", "a"), "unknown collection \"users\""),
        (change("update", "tenants", "../etc"), "record id must be"),
        (
            br#"{"event":"update","collection":"tenants","record":{"name":"x"}}"#.to_vec(),
            "no string field \"id\"",
        ),
    ];
    for (i, (body, reason)) in cases.into_iter().enumerate() {
        let (status, resp) = h.call(h.signed(&format!("m{i}"), now(), &body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "case {i}");
        let msg = resp["error"].as_str().unwrap_or_default();
        assert!(msg.contains(reason), "case {i}: {msg:?} lacks {reason:?}");
    }
    assert!(h.sink.offered().is_empty());
}

#[actix_web::test]
async fn duplicate_delivery_id_is_200_duplicate() {
    let h = Harness::new();
    let body = change("update", "tenants", "t1");
    assert_eq!(h.call(h.signed("msg_same", now(), &body)).await.0, StatusCode::ACCEPTED);
    let other = change("update", "tenants", "t2");
    let (status, resp) = h.call(h.signed("msg_same", now(), &other)).await;
    assert_eq!((status, resp), (StatusCode::OK, json!({"status": "duplicate"})));
    assert_eq!(h.sink.events().len(), 1);
}

#[actix_web::test]
async fn sink_unavailable_is_503() {
    let h = Harness::new();
    h.sink.unavailable.store(true, Ordering::SeqCst);
    let body = change("delete", "tenants", "t1");
    let (status, resp) = h.call(h.signed("m1", now(), &body)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp, json!({"error": "journal unavailable, retry later"}));
    assert!(h.sink.events().is_empty());
    h.sink.unavailable.store(false, Ordering::SeqCst);
    assert_eq!(
        h.call(h.signed("m1", now(), &body)).await.0,
        StatusCode::ACCEPTED,
        "the retry is accepted"
    );
}

fn header_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[ -~]{0,60}")
}

fn timestamp() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        header_text(),
        (-400i64..400).prop_map(|d| Some((now() + d).to_string())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn unsigned_random_requests_never_reach_the_sink(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        id in header_text(),
        ts in timestamp(),
        sig in header_text(),
    ) {
        let h = Harness::new();
        let mut req = post(&body);
        for (name, value) in [("webhook-id", id), ("webhook-timestamp", ts), ("webhook-signature", sig)] {
            if let Some(v) = value {
                req = req.insert_header((name, v));
            }
        }
        let (status, _) = actix_web::rt::System::new().block_on(h.call(req));
        prop_assert_eq!(status, StatusCode::UNAUTHORIZED);
        prop_assert!(h.sink.offered().is_empty());
    }

    #[test]
    fn signed_random_bodies_never_panic_and_only_valid_ones_are_accepted(
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..600),
            (prop_oneof![Just("tenants".to_string()), Just("bot_instances".to_string()), "[a-z_]{0,14}"],
             "[a-z0-9/._-]{0,20}", any::<bool>()).prop_map(|(c, id, upd)| {
                let mut record = json!({"id": id});
                if upd { record["updated"] = json!("2026-01-01 00:00:00.000Z") }
                serde_json::to_vec(&json!({"event": "update", "collection": c, "record": record})).unwrap_or_default()
            }),
        ],
    ) {
        let h = Harness::new();
        let (status, _) = actix_web::rt::System::new().block_on(h.call(h.signed("msg_p", now(), &body)));
        let offered = h.sink.offered();
        if status == StatusCode::ACCEPTED {
            prop_assert_eq!(offered.len(), 1);
        } else {
            prop_assert_eq!(status, StatusCode::BAD_REQUEST);
            prop_assert!(offered.is_empty());
        }
    }
}
