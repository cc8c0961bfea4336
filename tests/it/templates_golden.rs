//! Golden renderings of the shipped templates. Regenerate with `UPDATE_GOLDEN=1 cargo test --test templates_golden`.

use std::path::{Path, PathBuf};

use cf_bridge::quota::Ceiling;
use cf_bridge::templates::{RenderInput, TemplateSet, render, validate_compose};
use serde_json::json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn input(name: &str) -> RenderInput {
    RenderInput {
        instance_id: "k3v9x2m1q8w4e7r".into(),
        instance_name: format!("Golden {name}"),
        subdomain: "golden".into(),
        domain: "golden.bots.example.com".into(),
        tenant_slug: "acme".into(),
        config: json!({ "LANGUAGE": "en", "TEMPERATURE": 0.2, "VERBOSE": true }),
        cpu: 0.5,
        mem_mb: 512,
        router_base_url: "https://router.cloudfreedom.example/v1".into(),
    }
}

fn check_golden(name: &str) {
    let set = TemplateSet::load_dir(&root().join("templates")).expect("shipped templates load");
    let t = set.get(name).expect("template present");
    let ceiling = Ceiling {
        max_stacks: Some(10),
        cpu: 0.5,
        mem_mb: 512,
    };
    let rendered = render(t, &input(name), &ceiling).expect("renders");
    validate_compose(t, &rendered.compose_yaml, &ceiling).expect("valid");
    let path = root().join("tests/golden").join(format!("{name}.yml"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &rendered.compose_yaml).expect("write golden");
    }
    let golden =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(
        rendered.compose_yaml,
        golden,
        "rendering of {name} differs from {}",
        path.display()
    );
    assert_eq!(rendered.public_service, t.public_service);
    assert_eq!(rendered.public_port, t.public_port);
}

#[test]
fn golden_telegram_bot() {
    check_golden("telegram-bot");
}

#[test]
fn golden_openclaw_agent() {
    check_golden("openclaw-agent");
}

#[test]
fn golden_base_llm() {
    check_golden("base-llm");
}

#[test]
fn all_three_templates_ship() {
    let set = TemplateSet::load_dir(Path::new(&root().join("templates"))).expect("load");
    let names: Vec<&str> = set.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["base-llm", "openclaw-agent", "telegram-bot"]);
}
