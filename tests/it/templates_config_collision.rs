//! A config key that collides with a template's own environment, end to end (real PocketBase, coolify-sim,
//! the bridge in the test process): the instance shows `error` with a message naming the key (the
//! template's own env is platform wiring, such as the router key, that config must not replace), nothing
//! reaches Coolify, and renaming the key lets it deploy with the config value in its env.

use std::time::Duration;

use cf_testkit::world::{SIM_QUICK, World, text};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_key_the_template_sets_itself_is_a_clear_error() {
    let w = World::start(SIM_QUICK, &[]).await;
    let tenant = w.create_tenant("collide", "team").await;
    let id = w
        .create_instance_with(
            &tenant,
            "base-llm",
            "collide",
            json!({"config": {"OPENAI_API_KEY": "sk-my-own-key"}}),
        )
        .await;
    let expected = "template base-llm: config key OPENAI_API_KEY is set by the template itself \
                    (service litellm, webui); choose another name";
    let r = w
        .wait_record("bot_instances", &id, "the collision refused", WAIT, |r| {
            r["status"] == "error"
        })
        .await;
    assert_eq!(text(&r, "error_message"), expected, "{r}");
    assert!(!text(&r, "error_message").contains("sk-my-own-key"));
    assert!(w.service_of(&id).await.is_none(), "nothing reaches Coolify");
    let rows = w.deploy_logs(&id).await;
    assert!(
        rows.iter().any(|r| r["status"] == "failed" && r["message"] == expected),
        "{rows:?}"
    );

    w.pb.patch(
        "bot_instances",
        &id,
        json!({"config": {"MY_OPENAI_API_KEY": "sk-my-own-key"}}),
    )
    .await;
    let r = w.wait_status(&id, "running", WAIT).await;
    assert_eq!(text(&r, "error_message"), "");
    let svc = w.service_of(&id).await.expect("service");
    let compose = svc["compose"].as_str().unwrap_or_default();
    assert!(compose.contains("MY_OPENAI_API_KEY"), "{compose}");
    assert!(
        compose.contains("OPENAI_API_KEY: \"${CLOUDFREEDOM_API_KEY}\""),
        "{compose}"
    );
}
