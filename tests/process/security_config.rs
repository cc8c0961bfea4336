//! Configuration errors never show a value (issue 14, item 5): a TOML syntax error is reported by file,
//! line and column, not by quoting the line (an unterminated `secret = "whsec_...` would print the
//! secret); a value of the wrong type is reported by key and expected type.

use std::process::Command;

const CANARY: &str = "CANARY0secret0value";

/// Runs `cf-bridge --config <file> check-config` with only `env`; returns (exit code, stdout + stderr).
fn check_config(toml: &str, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cf-bridge.toml");
    std::fs::write(&path, toml).expect("write config");
    std::os::unix::fs::symlink(cf_testkit::repo_root().join("templates"), dir.path().join("templates"))
        .expect("templates beside the config");
    let out = Command::new(crate::bridge_bin())
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run cf-bridge");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text, path.display().to_string())
}

#[test]
fn a_toml_syntax_error_names_file_line_and_column_but_not_the_line() {
    // (file, where the parser stops): an unterminated multi-line string runs to the end of the file.
    let cases = [
        (
            format!("[webhook]\nsecret = \"whsec_{CANARY}\n[admin]\ntoken = \"x\"\n"),
            "line 2, column ",
        ),
        (format!("[admin]\ntoken = '{CANARY}\n"), "line 2, column "),
        (format!("[secrets]\nkey = \"{CANARY}\"\"\n"), "line 2, column "),
        (format!("[secrets]\nkey = {CANARY}\n"), "line 2, column 7"),
        (format!("[coolify]\ntoken = \"\"\"{CANARY}\n"), "line 3, column 1"),
    ];
    for (toml, at) in &cases {
        let (code, text, path) = check_config(toml, &[]);
        assert_eq!(code, Some(2), "{text}");
        assert!(!text.contains(CANARY), "the secret was echoed:\n{text}");
        assert!(text.contains(&path), "the file is named:\n{text}");
        assert!(text.contains(at), "line and column are given for {toml:?}:\n{text}");
    }
}

#[test]
fn a_value_of_the_wrong_type_is_not_echoed() {
    let (code, text, _) = check_config(&format!("[queue]\nconcurrency = \"{CANARY}\"\n"), &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(!text.contains(CANARY), "{text}");
    assert!(text.contains("concurrency"), "the key is named:\n{text}");
    let (code, text, _) = check_config("", &[("CF_BRIDGE__QUEUE__MAX_ATTEMPTS", CANARY)]);
    assert_eq!(code, Some(2), "{text}");
    assert!(!text.contains(CANARY), "{text}");
    assert!(text.contains("max_attempts"), "the key is named:\n{text}");
}

/// Issue 18, item 3: every secret may come from a mounted file (`*_FILE`), and `check-config` says where
/// each value came from without showing any secret; an unreadable file is named with its variable.
#[test]
fn secrets_from_files_and_where_each_value_came_from() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = |name: &str, value: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("{value}\n")).expect("write secret");
        p.display().to_string()
    };
    let admin = secret("admin", &format!("admin-{CANARY}"));
    let coolify = secret("coolify", &format!("1|{CANARY}"));
    let password = secret("pw", &format!("pw-{CANARY}"));
    let key = secret("key", &format!("key-{CANARY}-0123456789abcdef"));
    let webhook = secret("webhook", "whsec_d2ViaG9vay1jYW5hcnk=");
    let env = [
        ("CF_BRIDGE__POCKETBASE__URL", "http://127.0.0.1:8090"),
        ("CF_BRIDGE__POCKETBASE__SUPERUSER_EMAIL", "bridge@cloudfreedom.test"),
        ("CF_BRIDGE__POCKETBASE__SUPERUSER_PASSWORD_FILE", password.as_str()),
        ("CF_BRIDGE__COOLIFY__URL", "http://127.0.0.1:8000"),
        ("CF_BRIDGE__COOLIFY__TOKEN_FILE", coolify.as_str()),
        ("CF_BRIDGE__WEBHOOK__SECRET_FILE", webhook.as_str()),
        ("CF_BRIDGE__ADMIN__TOKEN_FILE", admin.as_str()),
        ("CF_BRIDGE__SECRETS__KEY_FILE", key.as_str()),
        ("CF_BRIDGE__DOMAINS__BASE_DOMAIN", "bots.cloudfreedom.test"),
        ("CF_BRIDGE__ROUTER__BASE_URL", "https://router.cloudfreedom.test"),
    ];
    let (code, text, path) = check_config("[queue]\nconcurrency = 4\n", &env);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains(CANARY), "a secret was shown:\n{text}");
    assert!(
        text.contains(&format!(
            "token = \"<redacted>\"  # env file CF_BRIDGE__ADMIN__TOKEN_FILE={admin}"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("concurrency = 4  # file {path}")), "{text}");
    assert!(
        text.contains("base_domain = \"bots.cloudfreedom.test\"  # env CF_BRIDGE__DOMAINS__BASE_DOMAIN"),
        "{text}"
    );
    assert!(text.contains("max_attempts = 12  # default"), "{text}");

    let mut unreadable = env.to_vec();
    unreadable.retain(|(k, _)| *k != "CF_BRIDGE__ADMIN__TOKEN_FILE");
    unreadable.push(("CF_BRIDGE__ADMIN__TOKEN_FILE", "/nonexistent/admin-token"));
    let (code, text, _) = check_config("", &unreadable);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("CF_BRIDGE__ADMIN__TOKEN_FILE: cannot read /nonexistent/admin-token"),
        "{text}"
    );
    assert!(!text.contains(CANARY), "{text}");
}
