//! Typed PocketBase errors, mapped from its `{status, message, data}` error bodies.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// One field's validation failure, e.g. `subdomain` -> `validation_not_unique`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FieldError {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// Field errors keyed by field name; displayed as `field: code, field: code`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(pub BTreeMap<String, FieldError>);

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (field, err) in &self.0 {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{field}: {}", err.code)?;
        }
        Ok(())
    }
}

/// Errors from the PocketBase client. None of them carries a token or password. Cloned when one combined
/// batch fails for every caller in it (`batches`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum PbError {
    /// Login refused, or the token is invalid, expired or revoked.
    #[error("PocketBase authentication failed: {message}")]
    Auth { message: String },
    #[error("PocketBase refused the request (403): {message}")]
    Forbidden { message: String },
    #[error("PocketBase record or collection not found")]
    NotFound,
    /// A 400: `fields` names each rejected field and its code (may be empty, e.g. for a refused API rule).
    #[error("PocketBase rejected the request: {message} [{fields}]")]
    Validation { message: String, fields: FieldErrors },
    #[error("PocketBase answered {status}: {message}")]
    Server { status: u16, message: String },
    #[error("cannot reach PocketBase: {0}")]
    Transport(String),
    #[error("unexpected PocketBase response: {0}")]
    Decode(String),
    /// An answer larger than the client accepts for that endpoint; nothing of it was kept.
    #[error("PocketBase's answer to {endpoint} is larger than {limit}; refused")]
    TooLarge { endpoint: String, limit: String },
    /// The client was given an unusable setting (e.g. a base URL that cannot hold a path).
    #[error("invalid PocketBase client setting: {0}")]
    Config(String),
    /// A batch was rolled back as a whole because its request `index` failed with `error`.
    #[error("PocketBase rolled back a batch: request {index} failed: {error}")]
    Batch { index: usize, error: Box<PbError> },
}

impl PbError {
    /// The field errors of a validation failure (empty for other errors).
    pub fn field_errors(&self) -> Option<&BTreeMap<String, FieldError>> {
        match self {
            PbError::Validation { fields, .. } => Some(&fields.0),
            _ => None,
        }
    }

    /// True for errors a later retry may cure (network trouble, 5xx, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            PbError::Transport(_) => true,
            PbError::Server { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// Maps a `POST /api/batch` failure to the request that failed and its own error (a batch answers
    /// 400 `{"data":{"requests":{"<index>":{"response":{...}}}}}`); other answers map as usual.
    pub(crate) fn from_batch_response(status: u16, body: &[u8]) -> PbError {
        let failed = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| {
            let requests = v.get("data")?.get("requests")?.as_object()?.clone();
            requests.into_iter().find_map(|(index, item)| {
                let index: usize = index.parse().ok()?;
                let response = item.get("response")?;
                let status = response.get("status")?.as_u64().and_then(|s| u16::try_from(s).ok())?;
                Some((index, status, serde_json::to_vec(response).ok()?))
            })
        });
        match failed {
            Some((index, inner, response)) if status == 400 => PbError::Batch {
                index,
                error: Box::new(PbError::from_response(inner, &response)),
            },
            _ => PbError::from_response(status, body),
        }
    }

    /// Maps a non-success HTTP answer to a typed error.
    pub(crate) fn from_response(status: u16, body: &[u8]) -> PbError {
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let message = match &parsed {
            Some(b) if !b.message.is_empty() => b.message.clone(),
            _ => snippet(body),
        };
        match status {
            400 => PbError::Validation {
                message,
                fields: FieldErrors(parsed.map(|b| b.field_errors()).unwrap_or_default()),
            },
            401 => PbError::Auth { message },
            403 => PbError::Forbidden { message },
            404 => PbError::NotFound,
            _ => PbError::Server { status, message },
        }
    }
}

impl From<reqwest::Error> for PbError {
    fn from(e: reqwest::Error) -> Self {
        PbError::Transport(e.to_string())
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    data: serde_json::Value,
}

impl ErrorBody {
    fn field_errors(self) -> BTreeMap<String, FieldError> {
        let serde_json::Value::Object(map) = self.data else {
            return BTreeMap::new();
        };
        map.into_iter()
            .filter_map(|(field, v)| serde_json::from_value::<FieldError>(v).ok().map(|e| (field, e)))
            .collect()
    }
}

/// A short, printable excerpt of a non-JSON body (e.g. a proxy's HTML error page).
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "empty response body".into();
    }
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_fields_and_codes() {
        let body = br#"{"status":400,"message":"Failed to create record.","data":{"subdomain":{"code":"validation_not_unique","message":"Value must be unique."},"slug":{"code":"validation_invalid_format","message":"x"}}}"#;
        let err = PbError::from_response(400, body);
        let fields = err.field_errors().expect("validation error");
        assert_eq!(fields["subdomain"].code, "validation_not_unique");
        let shown = err.to_string();
        assert!(shown.contains("subdomain: validation_not_unique"), "{shown}");
        assert!(shown.contains("slug: validation_invalid_format"), "{shown}");
    }

    #[test]
    fn batch_failures_name_the_failed_request() {
        let body = br#"{"data":{"requests":{"1":{"code":"batch_request_failed","message":"Batch request failed.","response":{"data":{"id":{"code":"validation_not_unique","message":"Value must be unique."}},"message":"Failed to create record.","status":400}}}},"message":"Batch transaction failed.","status":400}"#;
        match PbError::from_batch_response(400, body) {
            PbError::Batch { index, error } => {
                assert_eq!(index, 1);
                assert_eq!(
                    error.field_errors().expect("validation")["id"].code,
                    "validation_not_unique"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let missing = br#"{"data":{"requests":{"0":{"code":"batch_request_failed","response":{"data":{},"message":"The requested resource wasn't found.","status":404}}}},"message":"Batch transaction failed.","status":400}"#;
        assert!(matches!(
            PbError::from_batch_response(400, missing),
            PbError::Batch { index: 0, error } if matches!(*error, PbError::NotFound)
        ));
        assert!(matches!(
            PbError::from_batch_response(503, b"busy"),
            PbError::Server { status: 503, .. }
        ));
    }

    #[test]
    fn statuses_map_to_variants() {
        let body = br#"{"status":403,"message":"Only superusers can perform this action.","data":{}}"#;
        assert!(matches!(PbError::from_response(403, body), PbError::Forbidden { .. }));
        assert!(matches!(PbError::from_response(404, b"{}"), PbError::NotFound));
        assert!(matches!(PbError::from_response(401, b"{}"), PbError::Auth { .. }));
        match PbError::from_response(502, b"<html>Bad gateway</html>") {
            PbError::Server { status, message } => {
                assert_eq!(status, 502);
                assert!(message.contains("Bad gateway"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(PbError::from_response(503, b"").is_transient());
        assert!(!PbError::from_response(400, b"{}").is_transient());
    }
}
