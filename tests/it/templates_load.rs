//! Loading templates: a broken template is refused at load with a message naming it.

use std::fs;
use std::path::Path;

use cf_bridge::quota::Ceiling;
use cf_bridge::templates::{RenderInput, TemplateError, TemplateSet, render};

const MANIFEST: &str = r#"
name = "demo"
description = "demo"
version = "1"
required_secrets = []
cpu_default = 0.2
mem_default = 128
public_service = "app"
public_port = 8080

[services.app]
share = 1.0
"#;

const COMPOSE: &str = r#"services:
  app:
    image: nginx:1.27.3
    restart: unless-stopped
    #EXTRA
    environment:
{%- for e in env %}
      {{ e.key }}: {{ e.value }}
{%- endfor %}
    expose: ["{{ public_port }}"]
    healthcheck:
      test: ["CMD", "true"]
    deploy:
      resources:
        limits:
          cpus: {{ limits.app.cpus }}
          memory: {{ limits.app.memory }}
    networks: [stack]
networks:
  stack: {}
"#;

fn write(dir: &Path, name: &str, manifest: &str, compose: &str) {
    let d = dir.join(name);
    fs::create_dir_all(&d).expect("mkdir");
    fs::write(d.join("template.toml"), manifest).expect("manifest");
    fs::write(d.join("compose.yml.liquid"), compose).expect("compose");
}

fn load(manifest: &str, compose: &str) -> Result<TemplateSet, TemplateError> {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "demo", manifest, compose);
    TemplateSet::load_dir(dir.path())
}

#[test]
fn a_valid_template_loads_and_renders_within_its_ceiling() {
    let set = load(MANIFEST, COMPOSE).expect("loads");
    let t = set.get("demo").expect("demo");
    assert_eq!(t.mem_default_mb, 128);
    assert_eq!(t.healthcheck_path, "/healthz");
    let mut input = RenderInput::sample(t);
    input.cpu = 0.5;
    let err = render(
        t,
        &input,
        &Ceiling {
            max_stacks: None,
            cpu: 0.25,
            mem_mb: 256,
        },
    )
    .expect_err("above ceiling");
    assert!(
        err.to_string()
            .contains("CPU limits add up to 0.5 cores, above the ceiling of 0.25"),
        "{err}"
    );
    input.cpu = 0.0;
    input.mem_mb = 0;
    let r = render(
        t,
        &input,
        &Ceiling {
            max_stacks: None,
            cpu: 0.25,
            mem_mb: 256,
        },
    )
    .expect("template defaults");
    assert!(r.compose_yaml.contains("cpus: \"0.20\"") && r.compose_yaml.contains("memory: \"128M\""));
}

#[test]
fn broken_templates_are_refused_at_load() {
    let cases: Vec<(String, String, &str)> = vec![
        (
            MANIFEST.replace("name = \"demo\"", "name = \"other\""),
            COMPOSE.into(),
            "differs from its directory",
        ),
        (
            MANIFEST.replace("public_service = \"app\"", "public_service = \"web\""),
            COMPOSE.into(),
            "not among [services]",
        ),
        (
            MANIFEST.replace("share = 1.0", "share = 1.5"),
            COMPOSE.into(),
            "share must be in (0, 1]",
        ),
        (
            MANIFEST.replace("required_secrets = []", "required_secrets = [\"CLOUDFREEDOM_API_KEY\"]"),
            COMPOSE.into(),
            "not a valid tenant secret name",
        ),
        (
            format!("{MANIFEST}\nunknown_field = 1\n"),
            COMPOSE.into(),
            "unknown field",
        ),
        (
            MANIFEST.into(),
            COMPOSE.replace("#EXTRA", "privileged: true"),
            "template demo: service app: privileged mode is not allowed",
        ),
        (
            MANIFEST.into(),
            COMPOSE.replace("#EXTRA", "ports: [\"80:80\"]"),
            "ports published on the host",
        ),
        (
            MANIFEST.into(),
            COMPOSE.replace("{{ limits.app.cpus }}", "\"4\""),
            "above the ceiling",
        ),
        (
            MANIFEST.into(),
            COMPOSE.replace("{%- endfor %}", ""),
            "compose template does not parse",
        ),
        (
            MANIFEST.into(),
            COMPOSE.replace("{{ e.value }}", "{{ e.missing_field }}"),
            "rendering failed",
        ),
        (
            MANIFEST.into(),
            COMPOSE.replace("image: nginx:1.27.3", "image: postgres:17.2"),
            "is a database image",
        ),
    ];
    for (manifest, compose, expected) in cases {
        let err = load(&manifest, &compose).expect_err(expected);
        assert!(err.to_string().contains(expected), "expected {expected:?} in {err}");
    }
}

#[test]
fn missing_directory_is_an_io_error() {
    let err = TemplateSet::load_dir(Path::new("/nonexistent/cf-bridge-templates")).expect_err("missing");
    assert!(matches!(err, TemplateError::Io { .. }), "{err}");
}

#[test]
fn a_missing_directory_names_the_path_and_the_io_error_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope");
    let err = TemplateSet::load_dir(&missing).expect_err("a missing directory is refused");
    let text = cf_bridge::dependencies::describe(&err);
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert_eq!(text.matches("os error 2").count(), 1, "{text}");
}

#[test]
fn versions_kept_from_earlier_runs_are_checked_and_never_replace_the_one_on_disk() {
    let dir = cf_testkit::repo_root().join("templates");
    let set = TemplateSet::load_dir(&dir).expect("shipped templates");
    let now = set.get("base-llm").expect("base-llm").clone();
    let older = (
        now.manifest_source
            .replace("version = \"1.0.0\"", "version = \"0.9.0\""),
        now.compose_source.replace("v1.81.9-stable", "v1.80.0-stable"),
    );
    let same_version = (now.manifest_source.clone(), "services: {}\n".to_string());
    let set = set.with_earlier([older, same_version]).expect("kept versions load");
    assert!(
        set.version("base-llm", "0.9.0")
            .expect("0.9.0")
            .compose_source
            .contains("v1.80.0-stable")
    );
    assert_eq!(
        set.version("base-llm", "1.0.0").expect("1.0.0").compose_source,
        now.compose_source
    );
    assert_eq!(set.get("base-llm").expect("newest").version, "1.0.0");
    assert!(set.version("base-llm", "2.0.0").is_none());
    let mut versions = set.versions_of("base-llm");
    versions.sort();
    assert_eq!(versions, ["0.9.0", "1.0.0"]);

    let broken = (
        now.manifest_source
            .replace("version = \"1.0.0\"", "version = \"0.8.0\""),
        "nope: [".into(),
    );
    let set = TemplateSet::load_dir(&dir).expect("shipped templates");
    assert!(
        set.with_earlier([broken]).is_err(),
        "a kept version is checked as one on disk"
    );
}
