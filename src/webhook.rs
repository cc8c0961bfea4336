//! Standard Webhooks signatures: secret handling, signing and verification.
//!
//! Signed content is `"{webhook-id}.{webhook-timestamp}.{body}"`, MAC'd with HMAC-SHA256 under the
//! key encoded in the `whsec_` secret; `webhook-signature` carries one or more `v1,<base64>` entries.
//! Keys are restricted to printable ASCII because PocketBase's `$security.hs256(text, key)` takes the
//! key as a JS string: other bytes would be re-encoded as UTF-8 and every signature would mismatch.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit as _, Mac};
use rand::Rng;
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Maximum distance between a delivery's timestamp and our clock, both ways.
pub const TOLERANCE_SECS: i64 = 300;

const PREFIX: &str = "whsec_";
const MIN_KEY_LEN: usize = 24;
const MAX_KEY_LEN: usize = 64;
const GENERATED_KEY_LEN: usize = 32;
const MAX_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("webhook secret must start with \"whsec_\"")]
    MissingPrefix,
    #[error("webhook secret is not valid base64 after \"whsec_\"")]
    NotBase64,
    #[error("webhook secret key is {0} bytes; it must be {MIN_KEY_LEN} to {MAX_KEY_LEN} bytes")]
    BadLength(usize),
    #[error(
        "webhook secret key contains bytes outside printable ASCII, which PocketBase hooks cannot \
         sign with; generate one with `cf-bridge secret`"
    )]
    NotPrintable,
}

/// Why a delivery was refused. Messages are safe to return to the sender: they name no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("invalid header webhook-id")]
    BadId,
    #[error("invalid header webhook-timestamp")]
    BadTimestamp,
    #[error("timestamp outside tolerance")]
    OutsideTolerance,
    #[error("invalid signature")]
    BadSignature,
}

impl VerifyError {
    /// The `reason` label of `cf_bridge_webhook_rejected_total` (one of `metrics::WEBHOOK_REJECTIONS`).
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) | VerifyError::BadId => "headers",
            VerifyError::BadTimestamp | VerifyError::OutsideTolerance => "timestamp",
            VerifyError::BadSignature => "signature",
        }
    }
}

/// The three Standard Webhooks headers of one delivery, as received (None = absent or not text).
#[derive(Debug, Clone, Copy, Default)]
pub struct Delivery<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// A parsed `whsec_` secret. Its Debug output never shows the key.
pub struct WebhookSecret {
    key: SecretBox<Vec<u8>>,
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl Clone for WebhookSecret {
    fn clone(&self) -> Self {
        WebhookSecret {
            key: SecretBox::new(Box::new(self.key.expose_secret().clone())),
        }
    }
}

impl FromStr for WebhookSecret {
    type Err = SecretError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let encoded = s.trim().strip_prefix(PREFIX).ok_or(SecretError::MissingPrefix)?;
        let key = STANDARD.decode(encoded).map_err(|_| SecretError::NotBase64)?;
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len()) {
            return Err(SecretError::BadLength(key.len()));
        }
        if !key.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return Err(SecretError::NotPrintable);
        }
        Ok(WebhookSecret {
            key: SecretBox::new(Box::new(key)),
        })
    }
}

impl WebhookSecret {
    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length; the error branch cannot happen.
        let mut mac = match Hmac::<Sha256>::new_from_slice(self.key.expose_secret()) {
            Ok(mac) => mac,
            Err(_) => return Vec::new(),
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }

    /// The `webhook-signature` value for a delivery (`v1,<base64>`).
    pub fn sign(&self, id: &str, timestamp: &str, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body)))
    }

    /// Checks headers, timestamp tolerance and signature of a delivery against `now_unix` (seconds).
    pub fn verify(&self, delivery: &Delivery<'_>, body: &[u8], now_unix: i64) -> Result<(), VerifyError> {
        let id = delivery.id.ok_or(VerifyError::MissingHeader("webhook-id"))?;
        let timestamp = delivery
            .timestamp
            .ok_or(VerifyError::MissingHeader("webhook-timestamp"))?;
        let signatures = delivery
            .signature
            .ok_or(VerifyError::MissingHeader("webhook-signature"))?;
        if !valid_delivery_id(id) {
            return Err(VerifyError::BadId);
        }
        let ts = parse_timestamp(timestamp).ok_or(VerifyError::BadTimestamp)?;
        if (now_unix - ts).abs() > TOLERANCE_SECS {
            return Err(VerifyError::OutsideTolerance);
        }
        let expected = self.mac(id, timestamp, body);
        let mut matched = false;
        for candidate in signatures.split_ascii_whitespace() {
            let Some(encoded) = candidate.strip_prefix("v1,") else {
                continue;
            };
            let Ok(sig) = STANDARD.decode(encoded) else { continue };
            // Every candidate is compared, so timing does not reveal which one matched.
            matched |= bool::from(sig.ct_eq(&expected));
        }
        if matched {
            Ok(())
        } else {
            Err(VerifyError::BadSignature)
        }
    }
}

/// A fresh secret: `whsec_` + base64 of 32 random printable-ASCII bytes (see the module comment).
pub fn generate_secret() -> String {
    let mut rng = rand::rng();
    let key: Vec<u8> = (0..GENERATED_KEY_LEN)
        .map(|_| rng.random_range(0x21u8..=0x7e))
        .collect();
    format!("{PREFIX}{}", STANDARD.encode(key))
}

fn valid_delivery_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn parse_timestamp(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn secret() -> WebhookSecret {
        generate_secret().parse().unwrap()
    }

    fn delivery<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> Delivery<'a> {
        Delivery {
            id: Some(id),
            timestamp: Some(ts),
            signature: Some(sig),
        }
    }

    #[test]
    fn generated_secret_round_trips_and_is_printable() {
        let s = generate_secret();
        assert!(s.starts_with("whsec_"));
        let key = STANDARD.decode(&s[6..]).unwrap();
        assert_eq!(key.len(), 32);
        assert!(key.iter().all(|b| (0x21..=0x7e).contains(b)));
        assert_ne!(s, generate_secret());
    }

    #[test]
    fn secret_errors_name_the_problem() {
        assert_eq!("abc".parse::<WebhookSecret>().unwrap_err(), SecretError::MissingPrefix);
        assert_eq!("whsec_!!".parse::<WebhookSecret>().unwrap_err(), SecretError::NotBase64);
        let short = format!("whsec_{}", STANDARD.encode(b"short"));
        assert_eq!(short.parse::<WebhookSecret>().unwrap_err(), SecretError::BadLength(5));
        let binary = format!("whsec_{}", STANDARD.encode([0xffu8; 32]));
        assert_eq!(binary.parse::<WebhookSecret>().unwrap_err(), SecretError::NotPrintable);
    }

    #[test]
    fn debug_hides_the_key() {
        let raw = generate_secret();
        let shown = format!("{:?}", raw.parse::<WebhookSecret>().unwrap());
        assert!(!shown.contains(&raw[6..]));
        assert_eq!(shown, "WebhookSecret(<redacted>)");
    }

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // From the Standard Webhooks spec test suite; its key bytes are not printable, so the
        // vector is checked through the MAC itself rather than through parsing.
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let s = WebhookSecret {
            key: SecretBox::new(Box::new(key)),
        };
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            s.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn verifies_valid_and_rejects_wrong() {
        let s = secret();
        let ts = NOW.to_string();
        let sig = s.sign("msg_1", &ts, b"{}");
        assert_eq!(s.verify(&delivery("msg_1", &ts, &sig), b"{}", NOW), Ok(()));
        assert_eq!(
            s.verify(&delivery("msg_1", &ts, &sig), b"{ }", NOW),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            s.verify(&delivery("msg_2", &ts, &sig), b"{}", NOW),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            secret().verify(&delivery("msg_1", &ts, &sig), b"{}", NOW),
            Err(VerifyError::BadSignature)
        );
        let several = format!("v2,abc v1,AAAA {sig}");
        assert_eq!(s.verify(&delivery("msg_1", &ts, &several), b"{}", NOW), Ok(()));
    }

    #[test]
    fn tolerance_is_five_minutes_both_ways() {
        let s = secret();
        for (offset, ok) in [(-300, true), (300, true), (-301, false), (301, false)] {
            let ts = (NOW + offset).to_string();
            let sig = s.sign("m", &ts, b"x");
            let got = s.verify(&delivery("m", &ts, &sig), b"x", NOW);
            assert_eq!(got.is_ok(), ok, "offset {offset}: {got:?}");
            if !ok {
                assert_eq!(got, Err(VerifyError::OutsideTolerance));
            }
        }
    }

    #[test]
    fn malformed_headers() {
        let s = secret();
        let d = Delivery {
            id: None,
            ..delivery("m", "1", "v1,x")
        };
        assert_eq!(s.verify(&d, b"", NOW), Err(VerifyError::MissingHeader("webhook-id")));
        let d = Delivery {
            timestamp: None,
            ..delivery("m", "1", "v1,x")
        };
        assert_eq!(
            s.verify(&d, b"", NOW),
            Err(VerifyError::MissingHeader("webhook-timestamp"))
        );
        let d = Delivery {
            signature: None,
            ..delivery("m", "1", "v1,x")
        };
        assert_eq!(
            s.verify(&d, b"", NOW),
            Err(VerifyError::MissingHeader("webhook-signature"))
        );
        assert_eq!(
            s.verify(&delivery("m", "-5", "v1,x"), b"", NOW),
            Err(VerifyError::BadTimestamp)
        );
        assert_eq!(
            s.verify(&delivery("m", "1e9", "v1,x"), b"", NOW),
            Err(VerifyError::BadTimestamp)
        );
        assert_eq!(
            s.verify(&delivery("a b", "1", "v1,x"), b"", NOW),
            Err(VerifyError::BadId)
        );
    }
}
