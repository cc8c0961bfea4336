//! `cf-bridge templates render` and `cf-bridge templates sync`, run as the real binary.

use std::path::Path;

use cf_testkit::settings::{PbAccess, TestSettings};
use cf_testkit::{TestPb, free_port, repo_root};
use serde_json::{Value, json};

use crate::bridge_bin;

const NO_PB: (&str, &str, &str) = ("http://127.0.0.1:9", "nobody@test.local", "unused-password-1");

/// The environment a CLI command needs to load a valid configuration; `pb` is (url, superuser email,
/// password).
fn cli_env(pb: (&str, &str, &str), templates_dir: &Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let access = PbAccess {
        url: pb.0,
        email: pb.1,
        password: pb.2,
    };
    let templates = templates_dir.display().to_string();
    TestSettings::new(
        access,
        "http://127.0.0.1:9",
        "1|unused-by-this-command",
        Path::new("/nonexistent"),
        free_port(),
    )
    .with(&[("CF_BRIDGE__RECONCILE__TEMPLATES_DIR", templates.as_str())])
    .with(extra)
    .env()
    .to_vec()
}

/// Runs `cf-bridge --config <empty file> ARGS` with `env` only; returns (success, stdout, stderr).
fn run_cli(args: &[&str], env: &[(String, String)]) -> (bool, String, String) {
    cf_testkit::cli::run_with_env(bridge_bin(), args, env)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write file");
    p.display().to_string()
}

#[test]
fn render_prints_the_compose_and_names_what_is_wrong() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let env = cli_env(NO_PB, &repo_root().join("templates"), &[]);
    let hostile = "Bot\"\n    privileged: true\n    x: &a [*a]";
    let instance = json!({
        "id": "abc123def456ghi", "name": hostile, "subdomain": "helpdesk",
        "config": {"MODEL": "gpt-4o", "SYSTEM_PROMPT": "${HOME} is 'quoted'"}, "cpu_limit": 0.25, "mem_limit": 128,
    });
    let file = write(tmp.path(), "instance.json", &instance.to_string());

    let (ok, out, err) = run_cli(&["templates", "render", "telegram-bot", "--instance", &file], &env);
    assert!(ok, "render failed: {err}");
    let doc: serde_norway::Value = serde_norway::from_str(&out).expect("output is YAML");
    let services = doc.get("services").and_then(|s| s.as_mapping()).expect("services map");
    assert_eq!(services.len(), 1, "{out}");
    let bot = services.get("bot").expect("bot service");
    assert!(
        bot.get("privileged").is_none(),
        "the hostile name changed the structure:\n{out}"
    );
    let env_map = bot.get("environment").expect("environment");
    assert_eq!(env_map.get("MODEL").and_then(|v| v.as_str()), Some("gpt-4o"));
    assert!(out.contains("${TELEGRAM_BOT_TOKEN}"), "secrets stay references:\n{out}");
    assert!(
        out.contains("cpus: \"0.25\"") && out.contains("memory: \"128M\""),
        "{out}"
    );

    // base-llm uses the domain: built from the subdomain and the configured base domain.
    let (ok, out, err) = run_cli(&["templates", "render", "base-llm", "--instance", &file], &env);
    assert!(ok, "render failed: {err}");
    assert!(
        out.contains("WEBUI_URL: \"https://helpdesk.bots.test.example\""),
        "{out}"
    );
    let doc: serde_norway::Value = serde_norway::from_str(&out).expect("output is YAML");
    let webui = doc.get("services").and_then(|s| s.get("webui")).expect("webui");
    assert!(webui.get("privileged").is_none(), "{out}");
    assert_eq!(
        webui
            .get("environment")
            .and_then(|e| e.get("WEBUI_NAME"))
            .and_then(|v| v.as_str()),
        Some(hostile)
    );

    // The same instance over a starter plan's CPU: refused with the quota message.
    let greedy = write(
        tmp.path(),
        "greedy.json",
        &json!({"id": "abc", "subdomain": "x", "cpu_limit": 2.0}).to_string(),
    );
    let (ok, _, err) = run_cli(
        &[
            "templates",
            "render",
            "telegram-bot",
            "--instance",
            &greedy,
            "--plan",
            "starter",
        ],
        &env,
    );
    assert!(!ok);
    assert!(
        err.contains("requested 2 CPU but plan starter allows at most 0.25 CPU"),
        "{err}"
    );

    let (ok, out, err) = run_cli(&["templates", "render", "no-such-bot", "--instance", &file], &env);
    assert!(!ok, "{out}");
    assert!(
        err.contains("no template \"no-such-bot\"") && err.contains("base-llm, openclaw-agent, telegram-bot"),
        "{err}"
    );

    let bad = write(tmp.path(), "bad.json", "{\"name\": \"unterminated");
    let (ok, _, err) = run_cli(&["templates", "render", "telegram-bot", "--instance", &bad], &env);
    assert!(!ok);
    assert!(err.contains("bad.json is not JSON"), "{err}");

    let (ok, _, err) = run_cli(
        &[
            "templates",
            "render",
            "telegram-bot",
            "--instance",
            "/nonexistent/i.json",
        ],
        &env,
    );
    assert!(!ok);
    assert!(err.contains("reading /nonexistent/i.json"), "{err}");

    let nested = write(
        tmp.path(),
        "nested.json",
        &json!({"config": {"MODEL": {"x": 1}}}).to_string(),
    );
    let (ok, _, err) = run_cli(&["templates", "render", "telegram-bot", "--instance", &nested], &env);
    assert!(!ok);
    assert!(
        err.contains("telegram-bot") && err.contains("config key MODEL"),
        "{err}"
    );
}

async fn templates_by_name(pb: &TestPb) -> Vec<Value> {
    let v = pb
        .superuser_request(
            "GET",
            "/api/collections/bot_templates/records?perPage=100&sort=name",
            None,
        )
        .await;
    v["items"].as_array().expect("items").clone()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

#[tokio::test]
async fn sync_upserts_by_name_and_deactivates_removed_templates() {
    let pb = TestPb::start().await;
    let shipped = repo_root().join("templates");
    let pbc = (pb.url.as_str(), pb.email.as_str(), pb.password.as_str());
    let sync = |dir: &Path| run_cli(&["templates", "sync"], &cli_env(pbc, dir, &[]));

    let (ok, out, err) = sync(&shipped);
    assert!(ok, "sync failed: {out}\n{err}");
    assert_eq!(out.lines().filter(|l| l.starts_with("created")).count(), 3, "{out}");
    let records = templates_by_name(&pb).await;
    let names: Vec<&str> = records.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["base-llm", "openclaw-agent", "telegram-bot"]);
    let tg = &records[2];
    assert_eq!(tg["version"], "1.0.0");
    assert_eq!(tg["required_secrets"], json!(["TELEGRAM_BOT_TOKEN"]));
    assert_eq!(tg["default_config"]["MODEL"], "gpt-4o-mini");
    assert_eq!(tg["cpu_default"], 0.25);
    assert_eq!(tg["mem_default"], 128);
    assert_eq!(tg["public_service"], "bot");
    assert_eq!(tg["active"], true);
    let source = std::fs::read_to_string(shipped.join("telegram-bot/compose.yml.liquid")).expect("source");
    assert_eq!(tg["compose_template"], source.as_str());
    let ids: Vec<Value> = records.iter().map(|r| r["id"].clone()).collect();

    // A copy with telegram-bot removed and base-llm at a new version.
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("templates");
    copy_dir(&shipped, &copy);
    std::fs::remove_dir_all(copy.join("telegram-bot")).expect("remove template");
    let manifest = copy.join("base-llm/template.toml");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(
        &manifest,
        text.replacen("version = \"1.0.0\"", "version = \"1.1.0\"", 1),
    )
    .expect("bump version");

    let (ok, out, err) = sync(&copy);
    assert!(ok, "sync failed: {out}\n{err}");
    assert!(out.contains("updated  base-llm 1.1.0"), "{out}");
    assert!(out.contains("inactive telegram-bot"), "{out}");
    let records = templates_by_name(&pb).await;
    assert_eq!(
        records.iter().map(|r| r["id"].clone()).collect::<Vec<_>>(),
        ids,
        "upserted by name: same records"
    );
    assert_eq!(records[0]["version"], "1.1.0");
    assert_eq!(records[0]["active"], true);
    assert_eq!(records[2]["name"], "telegram-bot");
    assert_eq!(
        records[2]["active"], false,
        "a template removed from the directory is marked inactive"
    );

    // Idempotent: nothing is deactivated twice; putting it back reactivates the same record.
    let (ok, out, _) = sync(&copy);
    assert!(ok && !out.contains("inactive"), "{out}");
    let (ok, out, _) = sync(&shipped);
    assert!(ok && out.lines().all(|l| l.starts_with("updated")), "{out}");
    let records = templates_by_name(&pb).await;
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r["active"] == true));
    assert_eq!(records[0]["version"], "1.0.0");

    // A broken template directory: the error names the template and nothing is written.
    std::fs::write(copy.join("base-llm/template.toml"), "name = \"base-llm\"\n").expect("break manifest");
    let (ok, _, err) = sync(&copy);
    assert!(!ok);
    assert!(err.contains("base-llm/template.toml"), "{err}");
    assert!(templates_by_name(&pb).await.iter().all(|r| r["active"] == true));
}
