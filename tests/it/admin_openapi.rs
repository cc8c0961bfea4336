//! The admin API's OpenAPI document against the routes: the same paths and methods as `ROUTES` and
//! `PUBLIC_ROUTES` (which another test ties to the route attributes), every reference resolving, errors
//! as problem documents; and the bridge serves it, answers every operation it lists and no other method
//! on those paths.

use std::collections::BTreeSet;

use cf_bridge::http::admin::{OPENAPI, PUBLIC_ROUTES, ROUTES};
use cf_testkit::ADMIN_TOKEN;
use cf_testkit::world::{SIM_QUICK, World};
use serde_json::Value;

use crate::admin_api::fits;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

fn document() -> Value {
    serde_json::from_str(OPENAPI).expect("src/http/openapi.json is JSON")
}

/// `(METHOD, path template)` of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if METHODS.contains(&method.to_uppercase().as_str()) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// The value a local `$ref` points to.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r);
            }
            m.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn the_document_lists_exactly_the_admin_routes() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = operations(&doc);
    let listed: Vec<(&str, &str)> = ROUTES.iter().chain(PUBLIC_ROUTES).copied().collect();
    for (method, path) in &listed {
        let n = ops.iter().filter(|(m, p)| m == method && fits(p, path)).count();
        assert_eq!(
            n, 1,
            "{method} {path} is a route; the OpenAPI document must describe it once"
        );
    }
    for (method, template) in &ops {
        assert!(
            listed.iter().any(|(m, p)| m == method && fits(template, p)),
            "the OpenAPI document describes {method} {template}, which is not a route"
        );
    }
}

#[test]
fn every_operation_is_complete_and_every_reference_resolves() {
    let doc = document();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        assert!(resolve(&doc, r).is_some(), "$ref {r} does not resolve");
    }
    for (method, template) in operations(&doc) {
        let op = &doc["paths"][&template][method.to_lowercase()];
        let what = format!("{method} {template}");
        assert!(op["operationId"].is_string() && op["summary"].is_string(), "{what}");
        // Every {param} of the path is declared as a path parameter.
        let declared: Vec<String> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| match p["$ref"].as_str() {
                Some(r) => resolve(&doc, r).cloned().unwrap_or_default(),
                None => p.clone(),
            })
            .filter(|p| p["in"] == "path")
            .filter_map(|p| p["name"].as_str().map(str::to_string))
            .collect();
        let wanted: Vec<String> = template
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_string)
            .collect();
        assert_eq!(declared, wanted, "{what}: path parameters");
        // Public routes say so; the others need the token and say what its absence answers.
        let public = PUBLIC_ROUTES.iter().any(|(m, p)| *m == method && fits(&template, p));
        assert_eq!(op["security"] == serde_json::json!([]), public, "{what}: security");
        let responses = op["responses"].as_object().expect("responses");
        assert!(public || responses.contains_key("401"), "{what}: no 401");
        // The JSON API's errors are problem documents.
        if !template.starts_with("/admin/ui") {
            for (code, response) in responses.iter().filter(|(c, _)| c.as_str() >= "400") {
                let response = match response["$ref"].as_str() {
                    Some(r) => resolve(&doc, r).expect("resolves"),
                    None => response,
                };
                assert!(
                    response["content"]["application/problem+json"].is_object(),
                    "{what} {code}: not a problem document"
                );
            }
        }
    }
}

fn no_route(status: u16, body: &str) -> bool {
    status == 404
        && serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["detail"].as_str().map(|d| d.starts_with("no route for")))
            .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_serves_the_document_and_answers_what_it_lists() {
    let w = World::start(SIM_QUICK, &[]).await;
    let url = &w.bridge.url;
    let http = cf_testkit::http();

    let resp = http
        .get(format!("{url}/admin/openapi.json"))
        .send()
        .await
        .expect("GET without the token");
    assert_eq!(resp.status().as_u16(), 401);
    let resp = http
        .get(format!("{url}/admin/openapi.json"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("GET the document");
    assert_eq!(resp.status().as_u16(), 200);
    let served: Value = resp.json().await.expect("JSON");
    assert_eq!(served, document());

    // Every listed route reaches a handler; any other method on its path is no route. Sample paths name
    // an instance that does not exist, so nothing changes.
    let ops = operations(&document());
    for (method, path) in ROUTES.iter().chain(PUBLIC_ROUTES) {
        for m in METHODS {
            let resp = http
                .request(
                    reqwest::Method::from_bytes(m.as_bytes()).expect("method"),
                    format!("{url}{path}"),
                )
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .expect("admin request");
            let status = resp.status().as_u16();
            // A change stream never ends: its headers are the answer.
            let streams = resp
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            let body = if streams {
                String::new()
            } else {
                resp.text().await.unwrap_or_default()
            };
            let documented = ops.iter().any(|(om, t)| om == m && fits(t, path));
            assert_eq!(
                !no_route(status, &body),
                documented,
                "{m} {path} (route {method}): answered {status} {body:.200}; the OpenAPI document {} it",
                if documented { "lists" } else { "does not list" }
            );
        }
    }
}
