//! Every shipped template's rendered compose is accepted by coolify-sim through the real `CoolifyClient`:
//! the service is created (201), only the public container gets the domain, and Coolify sees the
//! `${VAR}` references it must create env vars for.

use std::path::PathBuf;
use std::sync::Arc;

use cf_bridge::coolify::{CoolifyClient, CreateService, ServiceUrl};
use cf_bridge::metrics::Metrics;
use cf_bridge::quota::{self, Ceiling, PlanTier};
use cf_bridge::templates::{RenderInput, TemplateSet, render};
use cf_testkit::TestSim;
use coolify_sim::LOCALHOST_SERVER_UUID;
use serde_json::{Value, json};

fn client(sim: &TestSim) -> CoolifyClient {
    CoolifyClient::new(&sim.settings(), Arc::new(Metrics::new())).expect("client")
}

fn input(name: &str, ceiling: &Ceiling) -> RenderInput {
    RenderInput {
        instance_id: format!("inst{}", name.replace('-', "")),
        instance_name: format!("Sim {name}"),
        subdomain: name.to_string(),
        domain: format!("{name}.bots.test.example"),
        tenant_slug: "acme".into(),
        config: json!({}),
        cpu: ceiling.cpu,
        mem_mb: ceiling.mem_mb,
        router_base_url: "https://router.test.example".into(),
    }
}

#[tokio::test]
async fn every_template_is_accepted_by_the_simulator() {
    let sim = TestSim::start(&["--rate-limit", "100000"]);
    let c = client(&sim);
    let set =
        TemplateSet::load_dir(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates")).expect("templates load");
    assert_eq!(set.len(), 3, "expected the three shipped templates");
    let sovereign = Ceiling {
        max_stacks: None,
        cpu: 4.0,
        mem_mb: 8192,
    };
    let project = c
        .create_project("cf-acme", Some("templates test"))
        .await
        .expect("create project");

    for t in set.iter() {
        // The tightest plan, so every template must also fit a starter stack.
        let ceiling = quota::ceiling(PlanTier::Starter, 0, &sovereign);
        let inp = input(&t.name, &ceiling);
        let rendered = render(t, &inp, &ceiling).unwrap_or_else(|e| panic!("{} renders: {e}", t.name));
        let url = format!("https://{}:{}", inp.domain, rendered.public_port);
        let req = CreateService {
            project_uuid: project.clone(),
            environment_name: Some("production".into()),
            server_uuid: LOCALHOST_SERVER_UUID.into(),
            name: format!("cf-{}", inp.instance_id),
            compose_yaml: rendered.compose_yaml.clone(),
            urls: vec![ServiceUrl {
                name: rendered.public_service.clone(),
                url: url.clone(),
            }],
            instant_deploy: false,
            ..Default::default()
        };
        let created = c
            .create_service(&req)
            .await
            .unwrap_or_else(|e| panic!("{}: sim refused the compose: {e}", t.name));
        assert_eq!(created.domains, vec![url.clone()], "{}", t.name);

        let log = sim.requests().await;
        let last = log
            .iter()
            .rev()
            .find(|r| r["path"] == "POST /services")
            .expect("create logged");
        assert_eq!(last["status"], 201, "{}: {last}", t.name);

        let state = sim.state().await;
        let svc = state["services"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["uuid"] == created.uuid.as_str()))
            .unwrap_or_else(|| panic!("{}: service not in sim state", t.name));
        assert_eq!(svc["name"], format!("cf-{}", inp.instance_id));
        assert_eq!(
            svc["compose"].as_str(),
            Some(rendered.compose_yaml.as_str()),
            "{}: compose stored verbatim",
            t.name
        );
        let apps = svc["applications"].as_array().expect("applications");
        let names: Vec<&str> = apps.iter().filter_map(|a| a["name"].as_str()).collect();
        let mut declared: Vec<&str> = t.services.keys().map(String::as_str).collect();
        declared.sort();
        let mut seen = names.clone();
        seen.sort();
        assert_eq!(seen, declared, "{}: containers", t.name);
        for app in apps {
            let fqdn = &app["fqdn"];
            if app["name"] == t.public_service.as_str() {
                assert_eq!(fqdn, &json!(url), "{}: public container gets the domain", t.name);
            } else {
                assert_eq!(
                    fqdn,
                    &Value::Null,
                    "{}: internal container {} must have no domain",
                    t.name,
                    app["name"]
                );
            }
        }
        // Coolify creates an env var for each reference; the bridge fills the secret ones later.
        let env_keys: Vec<&str> = svc["envs"]
            .as_array()
            .expect("envs")
            .iter()
            .filter_map(|e| e["key"].as_str())
            .collect();
        for r in &rendered.env_refs {
            assert!(
                env_keys.contains(&r.as_str()),
                "{}: sim has no env var {r} (has {env_keys:?})",
                t.name
            );
        }
        for s in &t.required_secrets {
            assert!(
                env_keys.contains(&s.as_str()),
                "{}: required secret {s} is not referenced",
                t.name
            );
        }
        assert!(env_keys.contains(&"CLOUDFREEDOM_API_KEY"), "{}", t.name);
        assert!(env_keys.contains(&"CLOUDFREEDOM_ROUTER_BASE_URL"), "{}", t.name);
    }

    // base-llm: LiteLLM is internal, Open WebUI public.
    let state = sim.state().await;
    let llm = state["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "cf-instbasellm"))
        .expect("base-llm service");
    let litellm = llm["applications"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == "litellm"))
        .expect("litellm");
    assert_eq!(litellm["fqdn"], Value::Null);
    let webui = llm["applications"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == "webui"))
        .expect("webui");
    assert_eq!(webui["fqdn"], json!("https://base-llm.bots.test.example:8080"));
}
