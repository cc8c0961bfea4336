//! Last line of defence against secrets in stored payloads.

use serde_json::Value;

/// Keys kept even though they look secret: a hash reveals nothing and the resync compares it.
const ALLOWED: &[&str] = &["secrets_hash"];
const MARKERS: &[&str] = &["secret", "password", "token", "api_key"];

fn is_secret_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    !ALLOWED.contains(&lower.as_str()) && MARKERS.iter().any(|m| lower.contains(m))
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
            "tokens": ["a"]
        });
        strip_secrets(&mut v);
        assert_eq!(
            v,
            json!({"name": "bot", "secrets_hash": "abc",
                   "config": {"keep": 1, "list": [{"ok": true}]}})
        );
    }
}
