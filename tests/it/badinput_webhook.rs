//! Hostile webhook deliveries against the ingest service backed by a real SQLite journal (the
//! MemorySink cases live in tests/webhook_ingest.rs): signature and timestamp formats, header
//! encodings, body encodings and sizes, replays and other secrets' signatures. Every refusal is a JSON
//! error with a reason, and the journal stays empty.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{App, test as atest, web};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use cf_bridge::events::EventSink;
use cf_bridge::http::ingest::{self, IngestState};
use cf_bridge::intake::Intake;
use cf_bridge::journal::{EventFilter, Journal};
use cf_bridge::metrics::Metrics;
use cf_bridge::webhook::{WebhookSecret, generate_secret};
use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::sync::Notify;

struct Harness {
    journal: Journal,
    secret: WebhookSecret,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let journal = Journal::open(&dir.path().join("journal.db")).expect("journal");
        Harness {
            journal,
            secret: generate_secret().parse().expect("secret"),
            _dir: dir,
        }
    }

    async fn call(&self, req: atest::TestRequest) -> (StatusCode, Value) {
        let sink: Arc<dyn EventSink> = Arc::new(self.journal.clone());
        let state = IngestState {
            intake: Intake::new(sink, Arc::new(Notify::new()), Arc::new(Metrics::new())),
            secret: Some(self.secret.clone()),
        };
        let app = atest::init_service(App::new().app_data(web::Data::new(state)).configure(ingest::configure)).await;
        let resp = atest::call_service(&app, req.to_request()).await;
        let status = resp.status();
        let body = atest::read_body(resp).await;
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn journaled(&self) -> usize {
        self.journal
            .list_events(EventFilter::default(), None, 500)
            .await
            .expect("list events")
            .0
            .len()
    }

    fn sign(&self, id: &str, ts: &str, body: &[u8]) -> String {
        self.secret.sign(id, ts, body)
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn body(id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"event": "update", "collection": "bot_instances",
        "record": {"id": id, "updated": "2026-01-02 03:04:05.678Z", "name": "x"}}))
    .expect("json")
}

fn request(body: &[u8], headers: &[(&str, &[u8])]) -> atest::TestRequest {
    let mut req = atest::TestRequest::post()
        .uri("/hooks/pocketbase")
        .set_payload(body.to_vec());
    for (name, value) in headers {
        let v = actix_web::http::header::HeaderValue::from_bytes(value).expect("header bytes");
        req = req.insert_header((*name, v));
    }
    req
}

/// Refused with `status`, a JSON `error` naming the reason, and nothing journaled.
async fn refused(h: &Harness, req: atest::TestRequest, status: StatusCode, reason: &str) {
    let (got, resp) = h.call(req).await;
    let msg = resp["error"].as_str().unwrap_or_default().to_string();
    assert_eq!(got, status, "expected {status} for {reason:?}; answer {resp}");
    assert!(msg.contains(reason), "error {msg:?} does not say {reason:?}");
    assert_eq!(h.journaled().await, 0, "a refused delivery was journaled ({reason})");
}

#[actix_web::test]
async fn replayed_delivery_with_an_old_timestamp_is_401_and_not_journaled() {
    let h = Harness::new();
    let b = body("rec1");
    // Correctly signed, but captured ten minutes ago and sent again.
    for age in [301, 600, 86_400, now()] {
        let ts = (now() - age).to_string();
        let sig = h.sign("msg_replay", &ts, &b);
        let req = request(
            &b,
            &[
                ("webhook-id", b"msg_replay"),
                ("webhook-timestamp", ts.as_bytes()),
                ("webhook-signature", sig.as_bytes()),
            ],
        );
        refused(&h, req, StatusCode::UNAUTHORIZED, "timestamp outside tolerance").await;
    }
    // The same capture with its timestamp bumped no longer matches its signature.
    let old = (now() - 600).to_string();
    let sig = h.sign("msg_replay", &old, &b);
    let fresh = now().to_string();
    let req = request(
        &b,
        &[
            ("webhook-id", b"msg_replay"),
            ("webhook-timestamp", fresh.as_bytes()),
            ("webhook-signature", sig.as_bytes()),
        ],
    );
    refused(&h, req, StatusCode::UNAUTHORIZED, "invalid signature").await;
}

#[actix_web::test]
async fn valid_body_signed_with_another_secret_is_401_and_not_journaled() {
    let h = Harness::new();
    let other: WebhookSecret = generate_secret().parse().expect("secret");
    let b = body("rec2");
    let ts = now().to_string();
    let sig = other.sign("msg_other", &ts, &b);
    let req = request(
        &b,
        &[
            ("webhook-id", b"msg_other"),
            ("webhook-timestamp", ts.as_bytes()),
            ("webhook-signature", sig.as_bytes()),
        ],
    );
    refused(&h, req, StatusCode::UNAUTHORIZED, "invalid signature").await;
    // And then the genuine delivery of the same id is still accepted: the refusal consumed nothing.
    let sig = h.sign("msg_other", &ts, &b);
    let req = request(
        &b,
        &[
            ("webhook-id", b"msg_other"),
            ("webhook-timestamp", ts.as_bytes()),
            ("webhook-signature", sig.as_bytes()),
        ],
    );
    assert_eq!(h.call(req).await.0, StatusCode::ACCEPTED);
    assert_eq!(h.journaled().await, 1);
}

#[actix_web::test]
async fn signature_and_timestamp_formats() {
    let h = Harness::new();
    let b = body("rec3");
    let ts = now().to_string();
    let mac = h.sign("m", &ts, &b);
    let raw = STANDARD.decode(&mac[3..]).expect("base64 mac");
    let cases: Vec<(String, String, &str)> = vec![
        (ts.clone(), format!("v1={}", &mac[3..]), "invalid signature"),
        (ts.clone(), format!("V1,{}", &mac[3..]), "invalid signature"),
        (
            ts.clone(),
            format!("v1,{}", URL_SAFE_NO_PAD.encode(&raw)),
            "invalid signature",
        ),
        (ts.clone(), format!("v1,{}", hex::encode(&raw)), "invalid signature"),
        (
            ts.clone(),
            format!("v1,{}", &mac[3..mac.len() - 4]),
            "invalid signature",
        ),
        (
            ts.clone(),
            format!("v1a,{}", STANDARD.encode(&raw)),
            "invalid signature",
        ),
        (ts.clone(), "v1,".to_string(), "invalid signature"),
        (ts.clone(), "".to_string(), "invalid signature"),
        (format!("{ts}.0"), mac.clone(), "invalid header webhook-timestamp"),
        (format!("+{ts}"), mac.clone(), "invalid header webhook-timestamp"),
        (format!(" {ts}"), mac.clone(), "invalid header webhook-timestamp"),
        (format!("{}000", ts), mac.clone(), "invalid header webhook-timestamp"),
        (
            (now() + 100_000).to_string(),
            mac.clone(),
            "timestamp outside tolerance",
        ),
        ("0".to_string(), mac.clone(), "timestamp outside tolerance"),
        (
            "99999999999999999999".to_string(),
            mac.clone(),
            "invalid header webhook-timestamp",
        ),
        (
            chrono::Utc::now().to_rfc3339(),
            mac.clone(),
            "invalid header webhook-timestamp",
        ),
    ];
    for (ts, sig, reason) in cases {
        let req = request(
            &b,
            &[
                ("webhook-id", b"m"),
                ("webhook-timestamp", ts.as_bytes()),
                ("webhook-signature", sig.as_bytes()),
            ],
        );
        refused(&h, req, StatusCode::UNAUTHORIZED, reason).await;
    }
    // Leading zeros change the signed text, so the MAC computed over the plain number fails.
    let padded = format!("0{ts}");
    let req = request(
        &b,
        &[
            ("webhook-id", b"m"),
            ("webhook-timestamp", padded.as_bytes()),
            ("webhook-signature", mac.as_bytes()),
        ],
    );
    refused(&h, req, StatusCode::UNAUTHORIZED, "invalid signature").await;
}

#[actix_web::test]
async fn non_text_headers_count_as_missing() {
    let h = Harness::new();
    let b = body("rec4");
    let ts = now().to_string();
    let sig = h.sign("m", &ts, &b);
    let latin1_id: &[u8] = b"msg_\xe9t\xe9";
    let req = request(
        &b,
        &[
            ("webhook-id", latin1_id),
            ("webhook-timestamp", ts.as_bytes()),
            ("webhook-signature", sig.as_bytes()),
        ],
    );
    refused(&h, req, StatusCode::UNAUTHORIZED, "missing header webhook-id").await;
    let req = request(
        &b,
        &[
            ("webhook-id", b"m"),
            ("webhook-timestamp", b"17\xff00"),
            ("webhook-signature", sig.as_bytes()),
        ],
    );
    refused(&h, req, StatusCode::UNAUTHORIZED, "missing header webhook-timestamp").await;
    let long_id = "m".repeat(129);
    let sig = h.sign(&long_id, &ts, &b);
    let req = request(
        &b,
        &[
            ("webhook-id", long_id.as_bytes()),
            ("webhook-timestamp", ts.as_bytes()),
            ("webhook-signature", sig.as_bytes()),
        ],
    );
    refused(&h, req, StatusCode::UNAUTHORIZED, "invalid header webhook-id").await;
}

#[actix_web::test]
async fn signed_bodies_in_other_encodings_are_400() {
    let h = Harness::new();
    let json_text = String::from_utf8(body("rec5")).expect("utf-8");
    let utf16: Vec<u8> = json_text.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    let mut bom = b"\xef\xbb\xbf".to_vec();
    bom.extend_from_slice(json_text.as_bytes());
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (utf16, "malformed body"),
        (bom, "malformed body"),
        (b"\x1f\x8b\x08\x00\x00\x00\x00\x00".to_vec(), "malformed body"),
        (deep.into_bytes(), "malformed body"),
        (
            br#"{"event":"update","collection":"bot_instances","record":{"id":"a","updated":5}}"#.to_vec(),
            "\"updated\" must be a string",
        ),
        (
            br#"{"event":"update","collection":"bot_instances","record":{"id":"ABC"}}"#.to_vec(),
            "record id must be",
        ),
        (
            br#"{"event":"update","collection":"bot_instances","record":{"id":"a\u0000b"}}"#.to_vec(),
            "record id must be",
        ),
        (
            br#"{"event":"update","collection":"bot_instances","record":[1,2]}"#.to_vec(),
            "malformed body",
        ),
        (
            br#"{"event":null,"collection":"bot_instances","record":{"id":"a"}}"#.to_vec(),
            "malformed body",
        ),
        (
            br#"{"event":"UPDATE","collection":"bot_instances","record":{"id":"a"}}"#.to_vec(),
            "unknown event",
        ),
        (
            br#"{"event":"update","collection":"bot_instances","record":{"id":"a"},"event":"delete"}"#.to_vec(),
            "malformed body",
        ),
    ];
    for (i, (b, reason)) in cases.into_iter().enumerate() {
        let ts = now().to_string();
        let id = format!("enc{i}");
        let sig = h.sign(&id, &ts, &b);
        let req = request(
            &b,
            &[
                ("webhook-id", id.as_bytes()),
                ("webhook-timestamp", ts.as_bytes()),
                ("webhook-signature", sig.as_bytes()),
            ],
        );
        refused(&h, req, StatusCode::BAD_REQUEST, reason).await;
    }
}

#[actix_web::test]
async fn a_lying_content_length_and_an_exact_limit_body() {
    let h = Harness::new();
    let ts = now().to_string();
    let huge = b"x".repeat(64);
    let sig = h.sign("cl", &ts, &huge);
    let req = request(
        &huge,
        &[
            ("webhook-id", b"cl"),
            ("webhook-timestamp", ts.as_bytes()),
            ("webhook-signature", sig.as_bytes()),
            ("content-length", b"999999999"),
        ],
    );
    refused(&h, req, StatusCode::PAYLOAD_TOO_LARGE, "larger than 256 KiB").await;
    // A valid change padded with whitespace to exactly the limit is accepted.
    let mut b = body("rec6");
    b.resize(ingest::MAX_BODY_BYTES, b' ');
    let sig = h.sign("exact", &ts, &b);
    let req = request(
        &b,
        &[
            ("webhook-id", b"exact"),
            ("webhook-timestamp", ts.as_bytes()),
            ("webhook-signature", sig.as_bytes()),
        ],
    );
    assert_eq!(h.call(req).await.0, StatusCode::ACCEPTED);
    assert_eq!(h.journaled().await, 1);
}

fn signature_header() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..120),
        "(v1,[A-Za-z0-9+/=]{0,60} ?){0,4}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 32).prop_map(|k| format!("v1,{}", STANDARD.encode(k)).into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random bytes in any header (non-text included) with a valid body: never accepted, never
    /// journaled, always a JSON error.
    #[test]
    fn random_header_bytes_never_reach_the_journal(
        id in proptest::collection::vec(any::<u8>(), 0..80),
        ts in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..24),
            (-100_000i64..100_000).prop_map(|d| (now() + d).to_string().into_bytes()),
        ],
        sig in signature_header(),
    ) {
        let h = Harness::new();
        let b = body("prop1");
        let mut headers: Vec<(&str, &[u8])> = Vec::new();
        // Header values may not contain control bytes on the wire; such headers are left out.
        let ok = |v: &[u8]| actix_web::http::header::HeaderValue::from_bytes(v).is_ok();
        if ok(&id) { headers.push(("webhook-id", &id)); }
        if ok(&ts) { headers.push(("webhook-timestamp", &ts)); }
        if ok(&sig) { headers.push(("webhook-signature", &sig)); }
        let (status, resp, n) = actix_web::rt::System::new().block_on(async {
            let (s, r) = h.call(request(&b, &headers)).await;
            (s, r, h.journaled().await)
        });
        prop_assert_eq!(status, StatusCode::UNAUTHORIZED);
        prop_assert!(resp["error"].is_string());
        prop_assert_eq!(n, 0);
    }

    /// Correctly signed JSON of random shape: 202 exactly when it is a well-formed change, else 400
    /// with a reason; only accepted ones are journaled.
    #[test]
    fn signed_random_json_is_journaled_only_when_well_formed(
        event in prop_oneof![Just(json!("create")), Just(json!("delete")), Just(json!(7)), "[a-z]{0,8}".prop_map(Value::from)],
        collection in prop_oneof![Just(json!("tenants")), Just(json!("bot_instances")), Just(json!(null)), "\\PC{0,10}".prop_map(Value::from)],
        rid in prop_oneof![Just(json!("abc123")), "\\PC{0,20}".prop_map(Value::from), Just(json!(123)), Just(json!({"$ne": 1}))],
        updated in prop_oneof![Just(json!("2026-01-01 00:00:00.000Z")), Just(json!(null)), Just(json!(1.5)), "\\PC{0,30}".prop_map(Value::from)],
        extra in "\\PC{0,200}",
    ) {
        let h = Harness::new();
        let b = serde_json::to_vec(&json!({"event": event, "collection": collection,
            "record": {"id": rid, "updated": updated, "config": {"note": extra}}})).expect("json");
        let ts = now().to_string();
        let sig = h.sign("msg_rand", &ts, &b);
        let req = request(&b, &[("webhook-id", b"msg_rand"), ("webhook-timestamp", ts.as_bytes()), ("webhook-signature", sig.as_bytes())]);
        let (status, resp, n) = actix_web::rt::System::new().block_on(async {
            let (s, r) = h.call(req).await;
            (s, r, h.journaled().await)
        });
        let well_formed = matches!(event.as_str(), Some("create" | "delete"))
            && matches!(collection.as_str(), Some("tenants" | "bot_instances"))
            && rid.as_str().is_some_and(cf_bridge::events::valid_record_id)
            && (updated.is_null() || updated.is_string());
        if well_formed {
            prop_assert_eq!(status, StatusCode::ACCEPTED);
            prop_assert_eq!(n, 1);
        } else {
            prop_assert_eq!(status, StatusCode::BAD_REQUEST);
            prop_assert!(resp["error"].as_str().is_some_and(|m| !m.is_empty()));
            prop_assert_eq!(n, 0);
        }
    }
}
