//! Last line of defence against secrets in stored payloads.

use serde_json::Value;

/// Keys kept even though they look secret: a hash reveals nothing and the resync compares it.
const ALLOWED: &[&str] = &["secrets_hash"];
const MARKERS: &[&str] = &["secret", "password", "token", "api_key"];

// Without lowering a copy of each key: every event's payload passes here twice (at the intake and at the
// journal), key by key.
fn is_secret_key(key: &str) -> bool {
    let contains = |marker: &str| {
        key.as_bytes()
            .windows(marker.len())
            .any(|w| w.eq_ignore_ascii_case(marker.as_bytes()))
    };
    !ALLOWED.iter().any(|a| key.eq_ignore_ascii_case(a)) && MARKERS.iter().any(|m| contains(m))
}

/// Drops every object key that names a secret, at any depth.
pub fn strip_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !is_secret_key(k));
            map.values_mut().for_each(strip_secrets);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_secrets),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strips_nested_secret_keys_but_keeps_the_hash() {
        let mut v = json!({
            "name": "bot",
            "secrets_hash": "abc",
            "Password": "p",
            "config": {"API_KEY": "k", "apiToken": "t", "keep": 1,
                       "list": [{"client_secret": "s", "ok": true}]},
            "tokens": ["a"],
            "SECRETS_HASH": "def",
            "MyPassWordX": "p2",
            "tok": 1
        });
        strip_secrets(&mut v);
        assert_eq!(
            v,
            json!({"name": "bot", "secrets_hash": "abc", "SECRETS_HASH": "def", "tok": 1,
                   "config": {"keep": 1, "list": [{"ok": true}]}})
        );
    }
}
