//! Compose validation: each forbidden construct is refused with a message naming template, service and
//! problem; the baseline document passes.

use std::collections::BTreeMap;

use cf_bridge::quota::Ceiling;
use cf_bridge::templates::{Template, TemplateError, validate_compose};

fn template() -> Template {
    Template {
        name: "telegram-bot".into(),
        description: String::new(),
        version: "1".into(),
        manifest_source: String::new(),
        icon: String::new(),
        required_secrets: vec!["TELEGRAM_BOT_TOKEN".into()],
        default_config: serde_json::Map::new(),
        cpu_default: 0.25,
        mem_default_mb: 256,
        public_service: "bot".into(),
        public_port: 8080,
        healthcheck_path: "/healthz".into(),
        services: BTreeMap::from([("bot".to_string(), 0.5), ("worker".to_string(), 0.5)]),
        compose_source: String::new(),
        own_env: BTreeMap::new(),
        parsed: Default::default(),
    }
}

fn ceiling() -> Ceiling {
    Ceiling {
        max_stacks: Some(2),
        cpu: 0.25,
        mem_mb: 256,
    }
}

const BASE: &str = r#"
services:
  bot:
    image: python:3.12.8-slim-bookworm
    restart: unless-stopped
    environment:
      CLOUDFREEDOM_ROUTER_BASE_URL: "${CLOUDFREEDOM_ROUTER_BASE_URL:-https://r.example}"
      CLOUDFREEDOM_API_KEY: "${CLOUDFREEDOM_API_KEY}"
      TELEGRAM_BOT_TOKEN: "${TELEGRAM_BOT_TOKEN}"
    expose:
      - "8080"
    healthcheck:
      test: ["CMD", "true"]
    deploy:
      resources:
        limits:
          cpus: "0.10"
          memory: "128M"
    volumes:
      - data:/data
    networks:
      - stack
#WORKER
  worker:
    image: redis:7.4.1
    restart: unless-stopped
    environment:
      CLOUDFREEDOM_ROUTER_BASE_URL: "${CLOUDFREEDOM_ROUTER_BASE_URL}"
      CLOUDFREEDOM_API_KEY: "${CLOUDFREEDOM_API_KEY}"
    healthcheck:
      test: ["CMD", "redis-cli", "ping"]
    cpus: 0.1
    mem_limit: 64m
    networks:
      - stack
volumes:
  data: {}
networks:
  stack: {}
"#;

/// Inserts `extra` (indented for a service key) into the bot service.
fn with_bot(extra: &str) -> String {
    BASE.replace("#WORKER\n", &format!("{extra}\n"))
}

fn reject(yaml: &str, expected: &str) {
    let err = validate_compose(&template(), yaml, &ceiling()).expect_err(expected);
    let msg = err.to_string();
    assert!(msg.starts_with("template telegram-bot: "), "{msg}");
    assert!(msg.contains(expected), "expected {expected:?} in {msg:?}");
}

#[test]
fn baseline_is_valid() {
    validate_compose(&template(), BASE, &ceiling()).expect("baseline valid");
}

#[test]
fn privileged_is_refused() {
    reject(
        &with_bot("    privileged: true"),
        "service bot: privileged mode is not allowed",
    );
    reject(&with_bot("    privileged: \"yes\""), "privileged mode is not allowed");
    validate_compose(&template(), &with_bot("    privileged: false"), &ceiling()).expect("false is fine");
}

#[test]
fn host_namespaces_are_refused() {
    reject(
        &with_bot("    network_mode: host"),
        "service bot: host network mode is not allowed",
    );
    reject(
        &with_bot("    network_mode: \"container:other\""),
        "network_mode is not allowed",
    );
    reject(&with_bot("    pid: host"), "pid: \"host\" is not allowed");
    reject(&with_bot("    ipc: host"), "ipc: \"host\" is not allowed");
    reject(&with_bot("    userns_mode: host"), "userns_mode");
}

#[test]
fn capabilities_devices_and_ports_are_refused() {
    reject(
        &with_bot("    cap_add: [SYS_ADMIN]"),
        "service bot: cap_add is not allowed",
    );
    reject(
        &with_bot("    devices: [\"/dev/kvm:/dev/kvm\"]"),
        "devices is not allowed",
    );
    reject(
        &with_bot("    security_opt: [\"seccomp:unconfined\"]"),
        "security_opt is not allowed",
    );
    reject(
        &with_bot("    ports: [\"8080:8080\"]"),
        "ports published on the host are not allowed",
    );
    reject(&with_bot("    env_file: [/etc/passwd]"), "env_file is not allowed");
    reject(&with_bot("    build: ."), "build is not allowed");
    reject(&with_bot("    container_name: fixed"), "container_name is not allowed");
    reject(
        &with_bot("    sysctls: {net.ipv4.ip_forward: 1}"),
        "key sysctls is not allowed",
    );
    reject(
        &with_bot("    labels: {traefik.http.routers.x.rule: \"Host(`bank.com`)\"}"),
        "label traefik",
    );
}

#[test]
fn host_mounts_are_refused() {
    let docker_sock = BASE.replace("- data:/data", "- /var/run/docker.sock:/var/run/docker.sock");
    reject(&docker_sock, "service bot: mounting the Docker socket is not allowed");
    let host_path = BASE.replace("- data:/data", "- /etc:/host-etc:ro");
    reject(&host_path, "host path mount \"/etc\" is not allowed");
    let relative = BASE.replace("- data:/data", "- ./secrets:/secrets");
    reject(&relative, "host path mount");
    let long_bind = BASE.replace("- data:/data", "- {type: bind, source: /, target: /host}");
    reject(&long_bind, "host path mount");
    let undeclared = BASE.replace("- data:/data", "- other:/data");
    reject(&undeclared, "volume \"other\" is not declared");
    let disguised = BASE.replace("  data: {}", "  data: {driver_opts: {type: none, o: bind, device: /}}");
    reject(&disguised, "volumes data: option driver_opts is not allowed");
    let external = BASE.replace("  stack: {}", "  stack: {external: true}");
    reject(&external, "networks stack: option external is not allowed");
}

#[test]
fn limits_are_required_and_bounded() {
    let no_cpu = BASE.replace("    cpus: 0.1\n", "");
    reject(&no_cpu, "service worker: CPU limit is missing");
    let no_mem = BASE.replace("    mem_limit: 64m\n", "");
    reject(&no_mem, "service worker: memory limit is missing");
    let no_deploy = BASE.replace(
        "          cpus: \"0.10\"\n          memory: \"128M\"\n",
        "          pids: 100\n",
    );
    reject(&no_deploy, "service bot: CPU limit is missing");
    let cpu_high = BASE.replace("cpus: \"0.10\"", "cpus: \"0.20\"");
    reject(
        &cpu_high,
        "CPU limits add up to 0.30000000000000004 cores, above the ceiling of 0.25",
    );
    let mem_high = BASE.replace("memory: \"128M\"", "memory: \"1g\"");
    reject(
        &mem_high,
        "memory limits add up to 1088 MB, above the ceiling of 256 MB",
    );
    let reservations = BASE.replace(
        "        limits:\n",
        "        reservations: {devices: [{capabilities: [gpu]}]}\n        limits:\n",
    );
    reject(&reservations, "deploy.resources.reservations is not allowed");
    let replicas = BASE.replace("    deploy:\n", "    deploy:\n      replicas: 5\n");
    reject(&replicas, "deploy.replicas is not allowed");
    let junk = BASE.replace("cpus: 0.1", "cpus: lots");
    reject(&junk, "CPU limit \"lots\" is not a positive number");
}

#[test]
fn structure_must_match_the_template() {
    reject("version: '3'\n", "top-level key version is not allowed");
    reject("networks: {}\n", "compose has no top-level services map");
    reject("services: []\n", "top-level services must be a non-empty mapping");
    reject("- just a list\n", "compose must be a mapping");
    let extra = BASE.replace("volumes:\n  data", "  evil:\n    image: alpine\nvolumes:\n  data");
    reject(
        &extra,
        "services [bot, evil, worker] differ from the declared [bot, worker]",
    );
    let tagged = BASE.replace(
        "image: python:3.12.8-slim-bookworm",
        "image: !!python/object:os.system x",
    );
    reject(&tagged, "line 4: YAML tag ('!') is not allowed");
    let custom = BASE.replace("image: redis:7.4.1", "image: !custom redis:7.4.1");
    reject(&custom, "YAML tag");
    let non_string_env = BASE.replace(
        "TELEGRAM_BOT_TOKEN: \"${TELEGRAM_BOT_TOKEN}\"",
        "TELEGRAM_BOT_TOKEN: \"${TELEGRAM_BOT_TOKEN}\"\n      PORT: 8080",
    );
    reject(&non_string_env, "environment PORT: value must be a string");
    let stray_ref = BASE.replace(
        "\"${CLOUDFREEDOM_API_KEY}\"\n      TELEGRAM",
        "\"${CLOUDFREEDOM_API_KEY}\"\n      HOME_DIR: \"${HOME}\"\n      TELEGRAM",
    );
    reject(&stray_ref, "references ${HOME}");
    let fqdn = BASE.replace(
        "image: redis:7.4.1",
        "image: redis:7.4.1\n    labels: [\"x=${SERVICE_FQDN_WORKER}\"]",
    );
    reject(&fqdn, "would generate a domain");
    let missing_key = BASE.replace(
        "      CLOUDFREEDOM_API_KEY: \"${CLOUDFREEDOM_API_KEY}\"\n    healthcheck",
        "    healthcheck",
    );
    reject(
        &missing_key,
        "service worker: environment must set CLOUDFREEDOM_API_KEY",
    );
    let no_health = BASE.replace("    healthcheck:\n      test: [\"CMD\", \"redis-cli\", \"ping\"]\n", "");
    reject(&no_health, "service worker: a healthcheck is required");
    let no_net = BASE.replace(
        "    mem_limit: 64m\n    networks:\n      - stack\n",
        "    mem_limit: 64m\n",
    );
    reject(&no_net, "service worker: must join the stack's own network");
    let bad_yaml = BASE.replace("services:", "services: [");
    let err = validate_compose(&template(), &bad_yaml, &ceiling()).expect_err("bad yaml");
    assert!(matches!(err, TemplateError::Yaml { .. }), "{err}");
    let anchors = "x-base: &b {image: alpine}\nservices:\n  bot: *b\n";
    reject(anchors, "line 1: YAML anchor ('&') is not allowed");
}

#[test]
fn public_service_rules() {
    let mut t = template();
    t.public_service = "worker".into();
    let err = validate_compose(&t, BASE, &ceiling()).expect_err("database image");
    assert!(
        err.to_string()
            .contains("public service worker: image redis:7.4.1 is a database image"),
        "{err}"
    );
    let no_expose = BASE.replace("    expose:\n      - \"8080\"\n", "");
    reject(&no_expose, "public service bot must expose port 8080");
    let mut t = template();
    t.required_secrets.push("OPENAI_API_KEY".into());
    let err = validate_compose(&t, BASE, &ceiling()).expect_err("unreferenced secret");
    assert!(
        err.to_string()
            .contains("required secret OPENAI_API_KEY is never referenced"),
        "{err}"
    );
}
