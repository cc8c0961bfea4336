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
