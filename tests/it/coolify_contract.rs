//! Contract test: every request the client sends and every response the simulator gives in this
//! scenario is checked against docs/coolify-openapi.yaml.
//!
//! Where the spec is wrong (per the PHP source, see docs/SIMULATOR.md), the deviation is listed
//! once in `SPEC_EXCEPTIONS` with its reason; every listed exception must actually occur, so the
//! table cannot rot.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cf_bridge::coolify::*;
use cf_bridge::metrics::Metrics;
use cf_testkit::TestSim;
use cf_testkit::http as reqwest_client;
use coolify_sim::LOCALHOST_SERVER_UUID;
use serde_json::{Value, json};

/// (endpoint template, "request" or response status, location, reason)
const SPEC_EXCEPTIONS: &[(&str, &str, &str, &str)] = &[
    (
        "POST /services",
        "request",
        "$.environment_uuid: required",
        "spec lists environment_name and environment_uuid as both required; the controller needs only one",
    ),
    (
        "GET /services",
        "200",
        "$[*].description: expected string, got null",
        "Service.description is nullable in the model (null when not given)",
    ),
    (
        "GET /services",
        "200",
        "$[*].deleted_at: expected string, got null",
        "deleted_at is null until soft-deleted",
    ),
    (
        "GET /services",
        "200",
        "$[*].service_type: expected string, got null",
        "service_type is null for custom compose",
    ),
    (
        "GET /services/{uuid}",
        "200",
        "$.deleted_at: expected string, got null",
        "deleted_at is null until soft-deleted",
    ),
    (
        "GET /services/{uuid}",
        "200",
        "$.service_type: expected string, got null",
        "service_type is null for custom compose",
    ),
    (
        "GET /projects",
        "200",
        "$[*].description: expected string, got null",
        "Project.description is nullable",
    ),
    (
        "GET /projects/{uuid}",
        "200",
        "$.description: expected string, got null",
        "Project.description is nullable",
    ),
    (
        "POST /services",
        "422",
        "$.errors.docker_compose_raw: expected array, got string",
        "the base64 check returns errors.docker_compose_raw as a plain string",
    ),
    (
        "POST /services",
        "422",
        "$.errors: expected object, got array",
        "urls validation returns errors as a list (\"Invalid URL: ...\", \"Service container with 'x' not found.\")",
    ),
];

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "number" => v.is_number(),
        other => kind(v) == other,
    }
}

/// A JSON-schema subset: $ref, allOf, type (string or list), nullable, enum, properties, required,
/// items, additionalProperties.
fn check(spec: &Value, schema: &Value, v: &Value, loc: &str, errs: &mut BTreeSet<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = r.strip_prefix('#').and_then(|p| spec.pointer(p));
        match target {
            Some(t) => check(spec, t, v, loc, errs),
            None => {
                errs.insert(format!("{loc}: unresolvable $ref {r}"));
            }
        }
        return;
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check(spec, s, v, loc, errs);
        }
    }
    if v.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
        return;
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| type_ok(t, v)) {
        errs.insert(format!("{loc}: expected {}, got {}", types.join("|"), kind(v)));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        errs.insert(format!("{loc}: {v} not in enum"));
    }
    if let Value::Object(obj) = v {
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(props) = props {
            for (k, sub) in props {
                if let Some(x) = obj.get(k) {
                    check(spec, sub, x, &format!("{loc}.{k}"), errs);
                }
            }
        }
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !obj.contains_key(req) {
                errs.insert(format!("{loc}.{req}: required"));
            }
        }
        match schema.get("additionalProperties") {
            Some(Value::Bool(false)) => {
                for k in obj.keys().filter(|k| !props.is_some_and(|p| p.contains_key(*k))) {
                    errs.insert(format!("{loc}.{k}: not allowed"));
                }
            }
            Some(extra @ Value::Object(_)) => {
                for (k, x) in obj.iter().filter(|(k, _)| !props.is_some_and(|p| p.contains_key(*k))) {
                    check(spec, extra, x, &format!("{loc}.{k}"), errs);
                }
            }
            _ => {}
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (v, schema.get("items")) {
        for x in items {
            check(spec, item_schema, x, &format!("{loc}[*]"), errs);
        }
    }
}

fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|p| spec.pointer(p))
    {
        Some(t) => t,
        None => v,
    }
}

fn body_schema<'a>(spec: &'a Value, holder: &'a Value) -> Option<&'a Value> {
    let content = resolve(spec, holder).get("content")?.as_object()?;
    content
        .get("application/json")
        .or_else(|| content.get("text/html"))
        .and_then(|c| c.get("schema"))
}

#[test]
fn validator_catches_violations() {
    let spec = json!({"components": {"schemas": {"P": {"type": "object", "required": ["id"],
        "properties": {"id": {"type": "integer"}, "n": {"type": "string", "nullable": true},
                       "e": {"type": "string", "enum": ["a"]}}, "additionalProperties": false}}}});
    let s = json!({"type": "array", "items": {"$ref": "#/components/schemas/P"}});
    let mut errs = BTreeSet::new();
    check(&spec, &s, &json!([{"id": 1, "n": null, "e": "a"}]), "$", &mut errs);
    assert!(errs.is_empty(), "{errs:?}");
    check(&spec, &s, &json!([{"id": "x", "e": "b", "z": 1}, {}]), "$", &mut errs);
    let want: BTreeSet<String> = [
        "$[*].id: expected integer, got string",
        "$[*].e: \"b\" not in enum",
        "$[*].z: not allowed",
        "$[*].id: required",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(errs, want);
}

async fn scenario(sim: &TestSim) {
    let c = CoolifyClient::new(&sim.settings(), Arc::new(Metrics::new())).expect("client");
    c.health().await.expect("health");
    c.version().await.expect("version");
    c.team().await.expect("team");
    c.servers().await.expect("servers");
    let p = c.create_project("cf-contract", None).await.expect("project");
    let p2 = c
        .create_project("cf-contract-2", Some("described"))
        .await
        .expect("project 2");
    c.list_projects().await.expect("list");
    c.get_project(&p).await.expect("get");
    c.patch_project(
        &p2,
        &ProjectPatch {
            name: Some("cf-contract-2b".into()),
            description: None,
        },
    )
    .await
    .expect("patch");
    c.list_environments(&p).await.expect("envs");
    let compose =
        "services:\n  bot:\n    image: x/bot:1\n    environment:\n      T: ${T}\n  db:\n    image: postgres:16\n";
    let mut req = CreateService {
        project_uuid: p.clone(),
        environment_name: Some("production".into()),
        server_uuid: LOCALHOST_SERVER_UUID.into(),
        name: "cf-c1".into(),
        description: Some("bot".into()),
        compose_yaml: compose.into(),
        urls: vec![ServiceUrl {
            name: "bot".into(),
            url: "https://c1.example.com:8080".into(),
        }],
        tags: vec!["tenant".into()],
        ..Default::default()
    };
    let s1 = c.create_service(&req).await.expect("service 1");
    req.name = "cf-c2".into();
    req.description = None;
    req.urls.clear();
    let s2 = c.create_service(&req).await.expect("service 2");
    assert!(
        c.create_service(&{
            let mut r = req.clone();
            r.urls = vec![ServiceUrl {
                name: "bot".into(),
                url: "https://c1.example.com".into(),
            }];
            r
        })
        .await
        .is_err()
    );
    c.get_environment(&p, "production").await.expect("environment");
    c.list_services().await.expect("services");
    c.get_service(&s1.uuid).await.expect("service");
    c.patch_service(
        &s2.uuid,
        &ServicePatch {
            description: Some("now described".into()),
            ..Default::default()
        },
    )
    .await
    .expect("patch");
    c.list_envs(&s1.uuid).await.expect("envs");
    c.bulk_upsert_envs(&s1.uuid, &[EnvVarInput::plain("T", "v"), EnvVarInput::plain("U", "w")])
        .await
        .expect("bulk");
    c.start_service(&s1.uuid).await.expect("start");
    c.start_service(&s1.uuid).await.expect("start again");
    c.restart_service(&s1.uuid).await.expect("restart");
    c.stop_service(&s1.uuid).await.expect("stop");
    c.stop_service(&s1.uuid).await.expect("stop again");
    assert!(c.get_service("missing").await.is_err());
    assert!(matches!(c.delete_project(&p).await, Err(CoolifyError::HasResources)));
    c.delete_service_and_wait(&s1.uuid, Duration::from_secs(5))
        .await
        .expect("delete 1");
    c.delete_service_and_wait(&s2.uuid, Duration::from_secs(5))
        .await
        .expect("delete 2");
    c.delete_project(&p).await.expect("delete project");

    // Error shapes the client never provokes by itself.
    let http = reqwest_client();
    let post = |path: &str, body: Value| {
        http.post(format!("{}/api/v1{path}", sim.url))
            .bearer_auth(&sim.token)
            .header("Accept", "application/json")
            .json(&body)
    };
    let service = |raw: String, urls: Value| {
        json!({"project_uuid": p2, "environment_name": "production", "server_uuid": LOCALHOST_SERVER_UUID,
               "docker_compose_raw": raw, "urls": urls})
    };
    post("/services", service(compose.into(), json!([])))
        .send()
        .await
        .expect("plain yaml");
    post(
        "/services",
        service(STANDARD.encode(compose), json!([{"name": "bot", "url": "nope"}])),
    )
    .send()
    .await
    .expect("bad url");
    post("/projects", json!({"name": "x"}))
        .send()
        .await
        .expect("short name");
    http.post(format!("{}/api/v1/projects", sim.url))
        .bearer_auth(&sim.token)
        .body("{}")
        .send()
        .await
        .expect("no content type");
    http.get(format!("{}/api/v1/projects", sim.url))
        .bearer_auth("1|bad")
        .send()
        .await
        .expect("bad token");
    sim.set_fault(json!({"route": "GET /servers", "storm_429": {"count": 1, "retry_after": 1}}))
        .await;
    c.servers().await.expect("servers after 429");
}

#[tokio::test]
async fn simulator_and_client_follow_the_spec() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/coolify-openapi.yaml")).expect("spec");
    let spec: Value = serde_norway::from_str(&text).expect("spec parses");
    let sim = TestSim::start(&[
        "--rate-limit",
        "100000",
        "--start-delay-ms",
        "50",
        "--delete-delay-ms",
        "100",
    ]);
    scenario(&sim).await;

    let mut violations: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut used = BTreeSet::new();
    let (mut checked, mut unspecified) = (0, BTreeSet::new());
    for entry in sim.requests().await {
        let template = entry["path"].as_str().expect("path");
        let Some((method, path)) = template.split_once(' ') else {
            continue;
        };
        let Some(op) = spec.pointer(&format!(
            "/paths/{}/{}",
            path.replace('~', "~0").replace('/', "~1"),
            method.to_lowercase()
        )) else {
            unspecified.insert(template.to_string());
            continue;
        };
        let status = entry["status"].to_string();
        let mut sides = Vec::new();
        if let (Some(body), Some(rb)) = (entry.get("request").filter(|b| !b.is_null()), op.get("requestBody"))
            && let Some(schema) = body_schema(&spec, rb)
        {
            sides.push(("request".to_string(), schema, body));
        }
        if entry["lost"] != true
            && let (Some(resp), Some(body)) = (op.pointer(&format!("/responses/{status}")), entry.get("response"))
        {
            match body_schema(&spec, resp) {
                Some(schema) => sides.push((status.clone(), schema, body)),
                None => {
                    unspecified.insert(format!("{template} {status} (no schema)"));
                }
            }
        } else if entry["lost"] != true {
            unspecified.insert(format!("{template} {status} (status not in spec)"));
        }
        for (side, schema, body) in sides {
            checked += 1;
            let mut errs = BTreeSet::new();
            check(&spec, schema, body, "$", &mut errs);
            for e in errs {
                match SPEC_EXCEPTIONS
                    .iter()
                    .position(|(t, s, l, _)| *t == template && *s == side && *l == e)
                {
                    Some(i) => {
                        used.insert(i);
                    }
                    None => {
                        violations.entry(format!("{template} [{side}]")).or_default().insert(e);
                    }
                }
            }
        }
    }
    eprintln!("contract: {checked} bodies checked; not covered by the spec: {unspecified:?}");
    assert!(checked > 40, "too few bodies checked: {checked}");
    assert!(violations.is_empty(), "spec violations: {violations:#?}");
    let unused: Vec<_> = SPEC_EXCEPTIONS
        .iter()
        .enumerate()
        .filter(|(i, _)| !used.contains(i))
        .map(|(_, e)| e)
        .collect();
    assert!(
        unused.is_empty(),
        "exceptions listed but not observed (remove them): {unused:#?}"
    );
}
