//! Broken configuration files: `cf-bridge check-config` exits 2 and names each bad key, never panics
//! and never prints a secret from the file.

use std::process::Command;

const ADMIN: &str = "admin-token-for-config-tests-0123";
const PASSWORD: &str = "pb-password-never-printed-42";
const WHSEC: &str = "whsec_dGVzdC13ZWJob29rLWtleS1wcmludGFibGUtYXNjaWkhIQ==";

fn valid() -> String {
    format!(
        r#"[pocketbase]
url = "http://127.0.0.1:8090"
superuser_email = "bridge@example.com"
superuser_password = "{PASSWORD}"

[coolify]
url = "http://127.0.0.1:8000"
token = "1|coolify-token-never-printed"

[webhook]
secret = "{WHSEC}"

[admin]
token = "{ADMIN}"
bind = "127.0.0.1:8088"

[journal]
path = "cf-bridge.db"

[domains]
base_domain = "bots.example.com"

[router]
base_url = "https://router.example.com"

[secrets]
key = "secrets-key-for-config-tests-0123456789ab"
"#
    )
}

/// Runs check-config on `text` with no CF_BRIDGE__ variables; returns exit code and stderr+stdout.
fn check(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cf-bridge.toml");
    std::fs::write(&path, text).expect("write config");
    // `templates_dir` (default "templates") is found beside the file.
    std::os::unix::fs::symlink(cf_testkit::repo_root().join("templates"), dir.path().join("templates"))
        .expect("templates beside the config");
    let out = Command::new(crate::bridge_bin())
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run cf-bridge check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn replace(base: &str, from: &str, to: &str) -> String {
    assert!(base.contains(from), "fixture lacks {from:?}");
    base.replace(from, to)
}

#[test]
fn the_fixture_itself_is_valid() {
    let (code, out) = check(&valid());
    assert_eq!(code, 0, "{out}");
    for secret in [PASSWORD, ADMIN, "coolify-token-never-printed"] {
        assert!(!out.contains(secret), "check-config printed a secret");
    }
}

#[test]
fn broken_files_exit_2_naming_the_key() {
    let v = valid();
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "pocketbase url",
            replace(&v, "http://127.0.0.1:8090", "not a url"),
            &["pocketbase.url"],
        ),
        (
            "ftp url",
            replace(&v, "http://127.0.0.1:8000", "ftp://127.0.0.1"),
            &["coolify.url"],
        ),
        (
            "rate",
            replace(&v, "[coolify]\n", "[coolify]\nrequests_per_minute = 0\n"),
            &["coolify.requests_per_minute"],
        ),
        (
            "rate as text",
            replace(&v, "[coolify]\n", "[coolify]\nrequests_per_minute = \"many\"\n"),
            &["requests_per_minute"],
        ),
        (
            "rate negative",
            replace(&v, "[coolify]\n", "[coolify]\nrequests_per_minute = -5\n"),
            &["requests_per_minute"],
        ),
        (
            "webhook secret",
            replace(&v, WHSEC, "plain-secret"),
            &["webhook.secret"],
        ),
        ("bind", replace(&v, "127.0.0.1:8088", "localhost:port"), &["admin.bind"]),
        (
            "email",
            replace(&v, "bridge@example.com", "bridge"),
            &["pocketbase.superuser_email"],
        ),
        (
            "max_attempts",
            format!("{v}\n[queue]\nmax_attempts = 0\n"),
            &["queue.max_attempts"],
        ),
        (
            "orphans",
            format!("{v}\n[reconcile]\norphans = \"delete-everything\"\n"),
            &["reconcile.orphans"],
        ),
        ("log format", format!("{v}\n[log]\nformat = \"xml\"\n"), &["log.format"]),
        (
            "two at once",
            replace(&replace(&v, "bots.example.com", ""), "127.0.0.1:8088", "nowhere"),
            &["domains.base_domain", "admin.bind"],
        ),
    ];
    for (what, text, keys) in cases {
        let (code, out) = check(&text);
        assert_eq!(code, 2, "{what}: exit {code}; output:\n{out}");
        for key in keys {
            assert!(out.contains(key), "{what}: output does not name {key}:\n{out}");
        }
        assert!(!out.contains("panicked"), "{what}: check-config panicked:\n{out}");
        for secret in [PASSWORD, ADMIN, "coolify-token-never-printed"] {
            assert!(!out.contains(secret), "{what}: check-config printed a secret:\n{out}");
        }
    }
}

#[test]
fn unparseable_files_exit_2_with_the_reason() {
    let cases: Vec<(&str, String)> = vec![
        ("not toml", "this is = = not toml [".to_string()),
        (
            "binary",
            String::from_utf8_lossy(&[0xff, 0xfe, 0x00, 0x01, 0x80]).into_owned(),
        ),
        ("section as value", format!("pocketbase = 5\n{}", "")),
        (
            "duplicate key",
            format!("{}\n[admin]\ntoken = \"again-and-again-0123456\"\n", valid()),
        ),
        ("empty", String::new()),
    ];
    for (what, text) in cases {
        let (code, out) = check(&text);
        assert_eq!(code, 2, "{what}: exit {code}; output:\n{out}");
        assert!(
            out.starts_with("error: ") && out.len() > 12,
            "{what}: no reason given:\n{out}"
        );
        assert!(!out.contains("panicked"), "{what}: check-config panicked:\n{out}");
        assert!(
            !out.contains(PASSWORD) && !out.contains(ADMIN),
            "{what}: printed a secret:\n{out}"
        );
    }
}

/// Issue 18, item 8: the example file as it is (placeholders), and a templates directory that does not
/// exist or is empty, are refused with the key named.
#[test]
fn placeholders_and_a_missing_templates_dir_are_refused() {
    let example = std::fs::read_to_string(cf_testkit::repo_root().join("cf-bridge.example.toml")).expect("example");
    let (code, out) = check(&example);
    assert_eq!(code, 2, "{out}");
    for key in ["coolify.url", "coolify.token", "admin.token", "secrets.key"] {
        assert!(
            out.lines().any(|l| l.contains(key) && l.contains("placeholder")),
            "{key} not refused as a placeholder:\n{out}"
        );
    }
    let (code, out) = check(&format!("{}\n[reconcile]\ntemplates_dir = \"no-such-dir\"\n", valid()));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("reconcile.templates_dir") && out.contains("no-such-dir"),
        "{out}"
    );
    let empty = tempfile::tempdir().expect("empty dir");
    let (code, out) = check(&format!(
        "{}\n[reconcile]\ntemplates_dir = {:?}\n",
        valid(),
        empty.path().display().to_string()
    ));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no templates in"), "{out}");
}
