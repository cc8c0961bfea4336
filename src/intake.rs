//! Turning a record change seen by any source into a [`NewEvent`], and handing it to the sink.
//!
//! Shared by the webhook ingest, the realtime consumer and the resync so the three agree on the
//! dedupe key, on which record ids are acceptable and on what never enters the journal (secrets).

use serde_json::{Map, Value};

use crate::events::{Action, Collection, EventSink, Ingested, NewEvent, SinkError, Source};

const MAX_RECORD_ID_LEN: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record has no string field \"id\"")]
    MissingId,
    #[error("record id must be 1 to 50 characters of a-z, 0-9, '_' or '-'")]
    BadId,
    #[error("record field \"updated\" must be a string")]
    BadUpdated,
}

/// PocketBase's default ids are 15 lowercase alphanumerics; we accept a little more, but nothing
/// that could not be used safely in names, paths and logs.
pub fn valid_record_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_RECORD_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Builds the event for one record change. `record` is the record as PocketBase exported it.
pub fn record_event(
    source: Source,
    collection: Collection,
    action: Action,
    record: Map<String, Value>,
    delivery_id: Option<String>,
) -> Result<NewEvent, RecordError> {
    let record_id = match record.get("id") {
        Some(Value::String(id)) => id.clone(),
        _ => return Err(RecordError::MissingId),
    };
    if !valid_record_id(&record_id) {
        return Err(RecordError::BadId);
    }
    let record_updated = match record.get("updated") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) if u.is_empty() => None,
        Some(Value::String(u)) => Some(u.clone()),
        Some(_) => return Err(RecordError::BadUpdated),
    };
    let mut payload = Value::Object(record);
    // Before stripping: a change to a secret-looking config key is a change all the same.
    let fingerprint = crate::events::request_fingerprint(source, collection, action, &payload);
    crate::journal::strip_secrets(&mut payload);
    Ok(NewEvent {
        source,
        collection,
        dedupe_key: NewEvent::change_key(collection, &record_id, action, record_updated.as_deref()),
        record_id,
        action,
        record_updated,
        delivery_id,
        payload,
        fingerprint,
    })
}

/// Hands an event to the sink (the journal counts it by source).
pub async fn deliver(sink: &dyn EventSink, event: NewEvent) -> Result<Ingested, SinkError> {
    sink.ingest(event).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test literal is an object"),
        }
    }

    #[test]
    fn builds_key_and_strips_secrets() {
        let record = obj(json!({
            "id": "abc123", "updated": "2026-01-01 00:00:00.000Z", "name": "n",
            "api_token": "t", "Password": "p", "secrets_hash": "h", "my_API_KEY": "k",
            "config": {"nested": {"client_secret": "s", "keep": 1}, "list": [{"token": "x", "ok": true}]}
        }));
        let ev = record_event(
            Source::Webhook,
            Collection::BotInstances,
            Action::Update,
            record,
            Some("msg_1".into()),
        )
        .unwrap();
        assert_eq!(ev.dedupe_key, "bot_instances:abc123:update:2026-01-01 00:00:00.000Z");
        assert_eq!(ev.record_updated.as_deref(), Some("2026-01-01 00:00:00.000Z"));
        assert_eq!(
            ev.payload,
            json!({"id": "abc123", "updated": "2026-01-01 00:00:00.000Z", "name": "n", "secrets_hash": "h",
                   "config": {"nested": {"keep": 1}, "list": [{"ok": true}]}})
        );
    }

    #[test]
    fn fingerprint_sees_secret_looking_keys_that_the_payload_drops() {
        let event = |token: &str| {
            let record = obj(json!({"id": "abc123", "updated": "u", "config": {"DISCORD_TOKEN": token}}));
            record_event(Source::Realtime, Collection::BotInstances, Action::Update, record, None).unwrap()
        };
        let (a, b) = (event("old"), event("new"));
        assert_eq!(a.payload, b.payload, "the secret-looking key is not stored");
        assert!(a.fingerprint.is_some());
        assert_ne!(a.fingerprint, b.fingerprint, "but its change is seen");
    }

    #[test]
    fn rejects_bad_ids() {
        for bad in [
            json!({}),
            json!({"id": 5}),
            json!({"id": ""}),
            json!({"id": "ABC"}),
            json!({"id": "a/b"}),
            json!({"id": "x".repeat(51)}),
        ] {
            assert!(
                record_event(
                    Source::Realtime,
                    Collection::Tenants,
                    Action::Create,
                    obj(bad.clone()),
                    None
                )
                .is_err(),
                "{bad}"
            );
        }
        let bad_updated = obj(json!({"id": "a", "updated": 5}));
        assert_eq!(
            record_event(Source::Realtime, Collection::Tenants, Action::Create, bad_updated, None).unwrap_err(),
            RecordError::BadUpdated
        );
    }
}
