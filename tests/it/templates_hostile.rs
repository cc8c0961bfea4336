//! Hostile record values: each is either refused with a clear error or rendered harmless (the parsed
//! compose keeps its structure and the value reads back exactly as a string).

use std::collections::BTreeSet;
use std::path::PathBuf;

use cf_bridge::quota::Ceiling;
use cf_bridge::templates::escape::unescape_dollars;
use cf_bridge::templates::{RenderInput, Template, TemplateError, TemplateSet, render};
use serde_json::{Value as Json, json};
use serde_norway::Value;

fn set() -> TemplateSet {
    TemplateSet::load_dir(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates")).expect("templates load")
}

fn ceiling() -> Ceiling {
    Ceiling {
        max_stacks: None,
        cpu: 1.0,
        mem_mb: 1024,
    }
}

fn input(config: Json, name: &str) -> RenderInput {
    RenderInput {
        instance_id: "abc123def456ghi".into(),
        instance_name: name.into(),
        subdomain: "bot".into(),
        domain: "bot.example.com".into(),
        tenant_slug: "acme".into(),
        config,
        cpu: 1.0,
        mem_mb: 1024,
        router_base_url: "https://router.example.com/v1".into(),
    }
}

/// Service keys, and per service: env keys and whether `privileged` appears.
fn shape(doc: &Value) -> Vec<(String, BTreeSet<String>, bool, usize)> {
    let services = doc.get("services").and_then(Value::as_mapping).expect("services map");
    services
        .iter()
        .map(|(k, svc)| {
            let env: BTreeSet<String> = svc
                .get("environment")
                .and_then(Value::as_mapping)
                .expect("environment map")
                .iter()
                .map(|(k, v)| {
                    assert!(v.is_string(), "env value {k:?} is not a string");
                    k.as_str().expect("string env key").to_string()
                })
                .collect();
            let keys = svc.as_mapping().map(|m| m.len()).unwrap_or(0);
            (
                k.as_str().unwrap_or_default().to_string(),
                env,
                svc.get("privileged").is_some(),
                keys,
            )
        })
        .collect()
}

fn env_value<'a>(doc: &'a Value, service: &str, key: &str) -> &'a str {
    doc["services"][service]["environment"][key]
        .as_str()
        .expect("env value is a string")
}

fn hostile_values() -> Vec<String> {
    let mut v: Vec<String> = [
        "\"",
        "'",
        "x\"\n    privileged: true",
        "x\n    privileged: true",
        "\"\nservices:\n  evil:\n    image: alpine\n    privileged: true",
        "\n  evil:\n    image: alpine",
        "&a",
        "*a",
        "&anchor [1, 2]",
        "<<: *a",
        "!!python/object/apply:os.system [\"rm -rf /\"]",
        "!custom tag",
        "${HOME}",
        "$HOME",
        "$(rm -rf /)",
        "`id`",
        "$${ESCAPED}",
        "${CLOUDFREEDOM_API_KEY}",
        "${SERVICE_FQDN_BOT_8080}",
        "{{ config.MODEL }}",
        "{% raw %}",
        "{% endraw %}{{ evil",
        "\u{202E}RTL override",
        "zero\u{200B}width\u{200D}joiner",
        "emoji 🚀🔥👩‍💻",
        "\u{FEFF}byte order mark",
        "中文 العربية עברית",
        "null",
        "~",
        "true",
        "- item",
        "key: value",
        "# comment",
        "[1, 2]",
        "{a: b}",
        "\\",
        "\\n not a newline",
        "%TAG ! tag:evil.com,2000:",
        "---\nservices: {}",
        "...",
        "tab\there",
        "crlf\r\nline",
        "/var/run/docker.sock:/var/run/docker.sock",
        "/:/host",
        "0x1F",
        "1e400",
        "",
        " leading and trailing ",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    v.push("a".repeat(4096));
    v.push("é".repeat(2048));
    v
}

fn rejected_values() -> Vec<(String, &'static str)> {
    vec![
        ("nul\0byte".to_string(), "NUL"),
        ("bell\u{7}".to_string(), "U+0007"),
        ("esc\u{1b}[31m".to_string(), "U+001B"),
        ("del\u{7f}".to_string(), "U+007F"),
        ("next line\u{85}".to_string(), "U+0085"),
        ("nonchar\u{FFFF}".to_string(), "U+FFFF"),
        ("a".repeat(4097), "4097 bytes"),
    ]
}

#[test]
fn hostile_config_values_render_harmless() {
    let set = set();
    let values = hostile_values();
    assert!(values.len() >= 30);
    for t in set.iter() {
        let baseline = render(t, &input(json!({ "MODEL": "benign" }), "benign"), &ceiling()).expect("baseline");
        let base_doc: Value = serde_norway::from_str(&baseline.compose_yaml).expect("baseline parses");
        for value in &values {
            let r = render(t, &input(json!({ "MODEL": value }), value), &ceiling())
                .unwrap_or_else(|e| panic!("{}: value {value:?} should render: {e}", t.name));
            let doc: Value = serde_norway::from_str(&r.compose_yaml).expect("hostile rendering parses");
            assert_eq!(
                shape(&doc),
                shape(&base_doc),
                "{}: structure changed by {value:?}",
                t.name
            );
            assert_eq!(
                r.env_refs, baseline.env_refs,
                "{}: env refs changed by {value:?}",
                t.name
            );
            for svc in t.services.keys() {
                assert_eq!(
                    unescape_dollars(env_value(&doc, svc, "MODEL")),
                    *value,
                    "{}: MODEL round trip",
                    t.name
                );
            }
            if t.name == "base-llm" {
                assert_eq!(unescape_dollars(env_value(&doc, "webui", "WEBUI_NAME")), *value);
                let cmd = doc["services"]["litellm"]["command"]
                    .as_sequence()
                    .expect("command list");
                assert_eq!(cmd.len(), 4);
                assert_eq!(unescape_dollars(cmd[3].as_str().expect("string arg")), *value);
            }
            assert!(r.compose_yaml.is_ascii(), "rendering stays ASCII");
        }
    }
}

#[test]
fn dollar_signs_are_doubled_for_compose() {
    let set = set();
    let t = set.get("telegram-bot").expect("template");
    let r = render(t, &input(json!({ "MODEL": "${HOME}$x" }), "n"), &ceiling()).expect("renders");
    assert!(
        r.compose_yaml.contains(r#""MODEL": "$${HOME}$$x""#),
        "{}",
        r.compose_yaml
    );
}

#[test]
fn control_characters_and_oversized_values_are_rejected() {
    let set = set();
    let t = set.get("telegram-bot").expect("template");
    for (value, expected) in rejected_values() {
        let err = render(t, &input(json!({ "MODEL": value }), "n"), &ceiling()).expect_err("must be rejected");
        let msg = err.to_string();
        assert!(matches!(err, TemplateError::Input { .. }), "{msg}");
        assert!(
            msg.contains("config key MODEL") && msg.contains(expected),
            "unclear message: {msg}"
        );
        assert!(msg.starts_with("template telegram-bot: "), "{msg}");

        let err = render(t, &input(json!({}), &value), &ceiling()).expect_err("hostile name must be rejected");
        assert!(err.to_string().contains("instance name"), "{err}");
    }
}

#[test]
fn hostile_config_keys_are_rejected_by_name() {
    let set = set();
    let t = set.get("telegram-bot").expect("template");
    for key in [
        "a b",
        "1abc",
        "KEY-X",
        "ÄKEY",
        "",
        "key\n",
        "x: y",
        "$HOME",
        "{{ k }}",
        &"K".repeat(65),
    ] {
        let err = render(t, &input(json!({ key: "v" }), "n"), &ceiling()).expect_err(key);
        let msg = err.to_string();
        assert!(msg.contains("config key") && msg.contains("is invalid"), "{msg}");
        assert!(
            !msg.contains('\n'),
            "message must not carry raw control characters: {msg:?}"
        );
    }
}

#[test]
fn yaml_keywords_as_keys_stay_strings() {
    let set = set();
    let t = set.get("telegram-bot").expect("template");
    let r = render(
        t,
        &input(json!({ "null": "1", "true": "2", "y": "3", "_": "4" }), "n"),
        &ceiling(),
    )
    .expect("renders");
    let doc: Value = serde_norway::from_str(&r.compose_yaml).expect("parses");
    for (k, v) in [("null", "1"), ("true", "2"), ("y", "3"), ("_", "4")] {
        assert_eq!(env_value(&doc, "bot", k), v);
    }
}

#[test]
fn reserved_and_structured_config_is_rejected() {
    let set = set();
    let t = set.get("telegram-bot").expect("template");
    let cases: Vec<(Json, &str)> = vec![
        (json!({ "CLOUDFREEDOM_API_KEY": "stolen" }), "reserved"),
        (json!({ "SERVICE_FQDN_BOT": "evil.example.com" }), "reserved"),
        (json!({ "TELEGRAM_BOT_TOKEN": "inline" }), "reserved"),
        (json!({ "LIST": [1, 2] }), "nested"),
        (json!({ "OBJ": { "privileged": true } }), "nested"),
        (json!(["not", "an", "object"]), "config must be a JSON object"),
        (json!("string config"), "config must be a JSON object"),
    ];
    for (config, expected) in cases {
        let err = render(t, &input(config.clone(), "n"), &ceiling()).expect_err("rejected");
        assert!(err.to_string().contains(expected), "{config}: {err}");
    }
    let many: serde_json::Map<String, Json> = (0..200).map(|i| (format!("K{i}"), json!("v"))).collect();
    let err = render(t, &input(Json::Object(many), "n"), &ceiling()).expect_err("too many keys");
    assert!(err.to_string().contains("more than 128 keys"), "{err}");
}

#[test]
fn null_config_values_fall_back_to_defaults() {
    let set = set();
    let t = set.get("telegram-bot").expect("template");
    for config in [json!(null), json!({ "MODEL": null })] {
        let r = render(t, &input(config, "n"), &ceiling()).expect("renders");
        assert!(r.compose_yaml.contains(r#""MODEL": "gpt-4o-mini""#));
    }
}

#[test]
fn hostile_identity_fields_are_rejected() {
    let set = set();
    let t: &Template = set.get("telegram-bot").expect("template");
    let mut i = input(json!({}), "n");
    i.subdomain = "evil\"\n  privileged: true".into();
    assert!(
        render(t, &i, &ceiling())
            .expect_err("subdomain")
            .to_string()
            .contains("subdomain")
    );
    let mut i = input(json!({}), "n");
    i.domain = "bot.example.com:8080/../".into();
    assert!(
        render(t, &i, &ceiling())
            .expect_err("domain")
            .to_string()
            .contains("domain")
    );
    let mut i = input(json!({}), "n");
    i.tenant_slug = "Acme Corp".into();
    assert!(
        render(t, &i, &ceiling())
            .expect_err("slug")
            .to_string()
            .contains("tenant slug")
    );
    let mut i = input(json!({}), "n");
    i.instance_id = "../../etc".into();
    assert!(
        render(t, &i, &ceiling())
            .expect_err("id")
            .to_string()
            .contains("instance id")
    );
    let mut i = input(json!({}), "n");
    i.router_base_url = "https://router}\"\n  evil: x".into();
    assert!(
        render(t, &i, &ceiling())
            .expect_err("router")
            .to_string()
            .contains("router base URL")
    );
}

/// The template's own env is its wiring (base-llm's OPENAI_API_KEY is the router key in litellm and the
/// internal proxy key in webui): a config key of that name is refused before rendering, with a message
/// naming the key and the services, not a YAML parse error.
#[test]
fn config_colliding_with_template_env_is_refused() {
    let set = set();
    let t = set.get("base-llm").expect("template");
    assert_eq!(
        t.own_env.get("OPENAI_API_KEY"),
        Some(&vec!["litellm".to_string(), "webui".to_string()])
    );
    assert!(
        !t.own_env.contains_key("MODEL"),
        "config defaults are not the template's own env"
    );
    let err = render(t, &input(json!({ "OPENAI_API_KEY": "mine" }), "n"), &ceiling()).expect_err("duplicate key");
    assert_eq!(
        err.to_string(),
        "template base-llm: config key OPENAI_API_KEY is set by the template itself (service litellm, webui); \
         choose another name"
    );
    let err = render(t, &input(json!({ "ENABLE_OLLAMA_API": "true" }), "n"), &ceiling()).expect_err("own key");
    assert!(
        err.to_string()
            .contains("config key ENABLE_OLLAMA_API is set by the template itself (service webui)"),
        "{err}"
    );
    // A config default stays overridable, and other keys pass.
    let ok = render(
        t,
        &input(json!({ "MODEL": "openai/gpt-4o", "OPENAI_API_KEY_HINT": "x" }), "n"),
        &ceiling(),
    );
    assert!(ok.is_ok(), "{ok:?}");
}
