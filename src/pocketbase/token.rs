//! Superuser token bookkeeping: JWT expiry and when to refresh.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::error::PbError;

/// A token with the time it was obtained and its expiry (unix seconds).
#[derive(Clone)]
pub(crate) struct CachedToken {
    pub token: SecretString,
    pub obtained: i64,
    pub exp: i64,
}

impl CachedToken {
    /// Reads `exp` from the JWT payload (no signature check: PocketBase checks it on every call).
    pub fn new(token: SecretString, now: i64) -> Result<Self, PbError> {
        let exp = jwt_exp(token.expose_secret())?;
        Ok(CachedToken {
            token,
            obtained: now,
            exp,
        })
    }

    /// Half of the lifetime has passed: time to refresh.
    pub fn needs_refresh(&self, now: i64) -> bool {
        now >= self.obtained + (self.exp - self.obtained) / 2
    }

    pub fn expired(&self, now: i64) -> bool {
        now >= self.exp
    }

    pub fn is(&self, other: &SecretString) -> bool {
        self.token.expose_secret() == other.expose_secret()
    }
}

#[derive(Deserialize)]
struct Claims {
    exp: i64,
}

fn jwt_exp(token: &str) -> Result<i64, PbError> {
    let not_jwt = || PbError::Auth {
        message: "the PocketBase token is not a well-formed JWT".into(),
    };
    let token = token.strip_prefix("Bearer ").unwrap_or(token);
    let payload = token.split('.').nth(1).ok_or_else(not_jwt)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| not_jwt())?;
    let claims: Claims = serde_json::from_slice(&bytes).map_err(|_| not_jwt())?;
    Ok(claims.exp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> SecretString {
        SecretString::from(format!("eyJhbGciOiJIUzI1NiJ9.{}.sig", URL_SAFE_NO_PAD.encode(payload)))
    }

    #[test]
    fn refresh_after_half_the_lifetime() {
        let t = CachedToken::new(jwt(r#"{"exp":1100,"type":"auth"}"#), 1000).unwrap();
        assert!(!t.needs_refresh(1049));
        assert!(t.needs_refresh(1050));
        assert!(!t.expired(1099));
        assert!(t.expired(1100));
    }

    #[test]
    fn garbage_is_an_auth_error_without_the_token() {
        for bad in ["nodots", "a.!!!.c", "a.e30.c"] {
            let err = CachedToken::new(SecretString::from(bad.to_string()), 0).err().unwrap();
            assert!(matches!(err, PbError::Auth { .. }));
            assert!(!err.to_string().contains(bad));
        }
    }
}
