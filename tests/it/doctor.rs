//! Issue 18, item 8: `cf-bridge doctor` passes a good setup and names each broken part with what to fix:
//! a webhook secret that differs between PocketBase and the bridge, hooks missing or not configured, a
//! template not published, an unknown Coolify server, a refused superuser.

use cf_bridge::doctor;
use cf_testkit::settings::TestSettings;
use cf_testkit::world::{SIM_FAST, publish_templates};
use cf_testkit::{PbOptions, TestPb, TestSim, WEBHOOK_SECRET, free_port};
use serde_json::json;

fn settings(pb: &TestPb, sim: &TestSim, dir: &std::path::Path) -> TestSettings {
    TestSettings::new(pb.into(), &sim.url, &sim.token, dir, free_port())
}

fn failed(report: &doctor::Report, check: &str, says: &str) {
    let f = report
        .get(check)
        .unwrap_or_else(|| panic!("no {check} check in:\n{report}"));
    assert!(
        !f.ok && f.detail.contains(says),
        "{check} should fail saying {says:?}:\n{report}"
    );
    assert!(
        f.fix.as_ref().is_some_and(|fix| !fix.is_empty()),
        "{check} says what to fix:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_good_setup_and_names_what_to_fix() {
    let pb = TestPb::start_with_env(&[
        ("CF_BRIDGE_WEBHOOK_URL", "http://127.0.0.1:9/hooks/pocketbase"),
        ("CF_BRIDGE_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ])
    .await;
    let sim = TestSim::start(SIM_FAST);
    let dir = tempfile::tempdir().expect("dir");
    let good = settings(&pb, &sim, dir.path());
    let templates = publish_templates(&pb, &good).await;

    let report = doctor::run(&good.settings()).await;
    assert!(report.ok(), "{report}");
    assert!(report.to_string().ends_with("checks passed"), "{report}");
    let (ok, out, err) = cf_testkit::cli::run_with_env(crate::bridge_bin(), &["doctor"], good.env());
    assert!(ok, "doctor exits 0 on a good setup: {out}{err}");

    // The bridge's webhook secret is not PocketBase's.
    let other = cf_bridge::webhook::generate_secret();
    let bad = good.clone().with(&[("CF_BRIDGE__WEBHOOK__SECRET", other.as_str())]);
    let report = doctor::run(&bad.settings()).await;
    failed(&report, "hooks", "differs from webhook.secret");
    assert!(!report.to_string().contains(&other) && !report.to_string().contains(WEBHOOK_SECRET));
    let (ok, out, _) = cf_testkit::cli::run_with_env(crate::bridge_bin(), &["doctor"], bad.env());
    assert!(!ok && out.contains("FAIL hooks"), "{out}");

    // A template switched off in PocketBase; a server Coolify does not have; a refused password.
    pb.patch("bot_templates", &templates["telegram-bot"], json!({"active": false}))
        .await;
    let bad = good.clone().with(&[
        ("CF_BRIDGE__COOLIFY__SERVER_UUID", "no-such-server"),
        ("CF_BRIDGE__POCKETBASE__SUPERUSER_PASSWORD", "not-the-password-1"),
    ]);
    let report = doctor::run(&bad.settings()).await;
    failed(&report, "coolify server", "no-such-server");
    failed(&report, "pocketbase auth", "refused");
    let report = doctor::run(&good.settings()).await;
    failed(&report, "templates", "telegram-bot inactive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_notices_hooks_missing_or_not_configured() {
    let sim = TestSim::start(SIM_FAST);
    let dir = tempfile::tempdir().expect("dir");
    let unconfigured = TestPb::start().await;
    let report = doctor::run(&settings(&unconfigured, &sim, dir.path()).settings()).await;
    failed(&report, "hooks", "not set");

    let no_hooks = tempfile::tempdir().expect("empty hooks dir");
    let bare = TestPb::start_with(PbOptions {
        hooks: Some(no_hooks.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    let report = doctor::run(&settings(&bare, &sim, dir.path()).settings()).await;
    failed(&report, "hooks", "does not have the project's hooks");
    assert!(report.get("schema").is_some_and(|f| f.ok), "{report}");
}

/// Issue 17: webhooks are optional. A bridge without webhook.secret beside a PocketBase without the webhook
/// variables passes the hooks check and says changes arrive by realtime and resync; a PocketBase that still
/// posts webhooks to it (they would all be refused) fails it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_the_default_path_without_webhooks() {
    let sim = TestSim::start(SIM_FAST);
    let dir = tempfile::tempdir().expect("dir");
    let plain = TestPb::start().await;
    let report = doctor::run(
        &settings(&plain, &sim, dir.path())
            .without("CF_BRIDGE__WEBHOOK__SECRET")
            .settings(),
    )
    .await;
    let hooks = report
        .get("hooks")
        .unwrap_or_else(|| panic!("no hooks check in:\n{report}"));
    assert!(hooks.ok && hooks.detail.contains("realtime and resync"), "{report}");

    let posting = TestPb::start_with_env(&[
        ("CF_BRIDGE_WEBHOOK_URL", "http://127.0.0.1:9/hooks/pocketbase"),
        ("CF_BRIDGE_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ])
    .await;
    let report = doctor::run(
        &settings(&posting, &sim, dir.path())
            .without("CF_BRIDGE__WEBHOOK__SECRET")
            .settings(),
    )
    .await;
    failed(&report, "hooks", "webhook intake is off");
    assert!(!report.to_string().contains(WEBHOOK_SECRET), "{report}");
}
