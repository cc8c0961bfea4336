//! The operator page over plain HTTP: filters by tenant, status and source, the reason of every failure,
//! the rows and panels the live page re-fetches, the instance page's timeline, and tenant input escaped.

use std::time::Duration;

use cf_testkit::world::{SIM_QUICK, World, pb_now};
use serde_json::json;

struct Page {
    url: String,
    cookie: String,
    http: reqwest::Client,
}

impl Page {
    async fn sign_in(w: &World) -> Page {
        let _ = cf_testkit::http();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        let cookie = cf_testkit::admin::ui_session(&http, &w.bridge.url).await;
        Page {
            url: w.bridge.url.clone(),
            cookie,
            http,
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .header("cookie", &self.cookie)
            .send()
            .await
            .expect("page");
        (resp.status().as_u16(), resp.text().await.unwrap_or_default())
    }

    /// A form post from the page itself (same origin); answers the status and where it sends the browser.
    async fn post_form(&self, path: &str, body: &str) -> (u16, String) {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .header("cookie", &self.cookie)
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string())
            .send()
            .await
            .expect("form post");
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (resp.status().as_u16(), location)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_reasons_rows_and_the_timeline() {
    let w = World::start(SIM_QUICK, &[("CF_BRIDGE__QUEUE__MAX_ATTEMPTS", "1")]).await;
    let alpha = w.create_tenant("alpha", "team").await;
    let beta = w.create_tenant("beta", "team").await;
    let hostile = "<script>alert('page')</script>";
    let good = w
        .create_instance_with(&alpha, "base-llm", "good-one", json!({"name": hostile}))
        .await;
    w.wait_status(&good, "running", Duration::from_secs(60)).await;
    w.sim
        .set_fault(json!({"route": "POST /services", "error_rate": 1.0}))
        .await;
    let bad = w.create_instance(&beta, "base-llm", "bad-one", "running").await;
    let dead = w.bridge.admin().wait_dead_job(&bad, Duration::from_secs(60)).await;
    w.sim.clear_faults().await;
    let reason = dead["last_error"]
        .as_str()
        .expect("a dead job has its error")
        .to_string();
    assert!(!reason.is_empty());

    let page = Page::sign_in(&w).await;
    let (code, all) = page.get("/admin/ui").await;
    assert_eq!(code, 200);
    assert!(all.contains(&format!("id=\"inst-{good}\"")) && all.contains(&format!("id=\"inst-{bad}\"")));
    assert!(!all.contains(hostile), "a record's name reached the page as markup");
    assert!(all.contains("&lt;script&gt;alert(&#39;page&#39;)&lt;/script&gt;"));
    // Each instance names its tenant; the failure says why, in the jobs and on the failed events.
    assert!(all.contains("<td class=\"tenant\">alpha</td>") && all.contains("<td class=\"tenant\">beta</td>"));
    let escaped_reason = cf_bridge::http::views::esc(&reason);
    assert!(
        all.contains(&format!("<td class=\"reason\">{escaped_reason}</td>")),
        "the dead job's reason is not shown: {reason}"
    );
    assert!(
        all.contains(&format!(
            "class=\"failed\">failed</td><td class=\"reason\">{escaped_reason}</td>"
        )),
        "a failed event does not say why"
    );

    let (_, only_alpha) = page.get(&format!("/admin/ui?tenant={alpha}")).await;
    assert!(only_alpha.contains(&format!("inst-{good}")) && !only_alpha.contains(&format!("inst-{bad}")));
    let (_, running) = page.get("/admin/ui?status=running").await;
    assert!(running.contains(&format!("inst-{good}")) && !running.contains(&format!("inst-{bad}")));
    let (_, replays) = page.get("/admin/ui?source=replay").await;
    assert!(!replays.contains("<td>realtime</td>") && !replays.contains("<td>webhook</td>"));
    let (_, realtime) = page.get("/admin/ui?source=realtime").await;
    assert!(realtime.contains("<td>realtime</td>"));
    for bad_filter in ["status=<b>bogus</b>", "source=carrier-pigeon", "tenant=NOT%20AN%20ID"] {
        let (code, body) = page.get(&format!("/admin/ui?{bad_filter}")).await;
        assert_eq!(code, 400, "{bad_filter}");
        assert!(!body.contains("<b>bogus"), "{body}");
    }

    // The row the live page re-fetches, and its answer when the filters hide it.
    let (code, row) = page.get(&format!("/admin/ui/instances/{bad}/row?tenant={beta}")).await;
    assert_eq!(code, 200);
    assert!(row.starts_with(&format!("<tr id=\"inst-{bad}\"")), "{row}");
    let (code, hidden) = page.get(&format!("/admin/ui/instances/{bad}/row?tenant={alpha}")).await;
    assert_eq!((code, hidden.as_str()), (204, ""));
    let (code, panels) = page.get("/admin/ui/panels").await;
    assert_eq!(code, 200);
    for part in [
        "chart-budget",
        "chart-jobs",
        "chart-health",
        "failed-jobs",
        "id=\"events\"",
    ] {
        assert!(panels.contains(part), "{part} missing from the panels");
    }

    // The instance page: the failure's reason on its timeline, with its deploy_logs row and buttons.
    let (code, inst) = page.get(&format!("/admin/ui/instances/{bad}")).await;
    assert_eq!(code, 200);
    for part in [
        "class=\"t-event\"",
        "class=\"t-job\"",
        "class=\"t-attempt\"",
        "class=\"t-deploy_log\"",
        "id=\"restart\"",
        "data-event=",
        escaped_reason.as_str(),
    ] {
        assert!(inst.contains(part), "{part} missing from the instance page");
    }
    let (code, good_page) = page.get(&format!("/admin/ui/instances/{good}")).await;
    assert_eq!(code, 200);
    assert!(!good_page.contains(hostile));
    assert!(good_page.contains("class=\"t-coolify\""), "the service's Coolify uuid");
    let (code, fragment) = page.get(&format!("/admin/ui/instances/{good}?fragment=1")).await;
    assert_eq!(code, 200);
    assert!(
        fragment.starts_with("<h1>") && !fragment.contains("<script"),
        "{fragment:.200}"
    );
    assert_eq!(page.get("/admin/ui/instances/zzzzzzzzzzzzzzz").await.0, 404);
    // Deleted from PocketBase, its history stays readable from the journal.
    w.pb.delete("bot_instances", &bad).await;
    let (code, gone) = page.get(&format!("/admin/ui/instances/{bad}")).await;
    assert_eq!(code, 200);
    assert!(gone.contains("id=\"gone\"") && gone.contains(escaped_reason.as_str()));
    assert_eq!(page.get("/admin/ui/instances/NOT%20AN%20ID").await.0, 400);
}

/// A deleted instance's page says until when it is kept and offers restore and purge; the restore button
/// brings it back through the same operation as the admin API; a bad form changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_instance_is_restored_from_its_page() {
    let w = World::start(SIM_QUICK, &[("CF_BRIDGE__LIFECYCLE__RETENTION_SECS", "3600")]).await;
    let tenant = w.create_tenant("kept", "business").await;
    let id = w.create_instance(&tenant, "base-llm", "kept-one", "running").await;
    w.wait_status(&id, "running", Duration::from_secs(60)).await;
    let page = Page::sign_in(&w).await;
    let (_, body) = page.get(&format!("/admin/ui/instances/{id}")).await;
    assert!(!body.contains("id=\"restore\""), "no restore for a live instance");

    w.pb.patch("bot_instances", &id, json!({"deletion_requested_at": pb_now()}))
        .await;
    w.wait_record("bot_instances", &id, "closed", Duration::from_secs(40), |r| {
        r["status"] == "stopped" && r["retained_until"].as_str().is_some_and(|s| !s.is_empty())
    })
    .await;
    let (status, body) = page.get(&format!("/admin/ui/instances/{id}")).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("id=\"deletion\"") && body.contains("kept until"),
        "{body}"
    );
    assert!(
        body.contains("id=\"restore\"") && body.contains("id=\"purge\""),
        "{body}"
    );

    for bad in ["id=abc&op=explode", "op=restore", "id=..%2Fx&op=purge"] {
        let (status, _) = page.post_form("/admin/ui/lifecycle", bad).await;
        assert_eq!(status, 400, "{bad}");
    }
    let (_, view) = w.bridge.admin().get(&format!("/admin/instances/{id}")).await;
    assert_eq!(
        view["deletion"]["state"], "retained",
        "a bad form changed nothing: {view}"
    );

    let (status, location) = page
        .post_form("/admin/ui/lifecycle", &format!("id={id}&op=restore"))
        .await;
    assert_eq!(
        (status, location.as_str()),
        (303, format!("/admin/ui/instances/{id}").as_str())
    );
    let (_, body) = page.get(&format!("/admin/ui/instances/{id}")).await;
    assert!(body.contains("restore of"), "the outcome is shown once: {body}");
    w.wait_status(&id, "running", Duration::from_secs(60)).await;
}

/// The instance page lists the Coolify calls its jobs made (route template, status), a failed one with its
/// 5xx, never another instance's calls, a URL's values, the Coolify token or a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_lists_the_instances_coolify_calls() {
    let w = World::start(SIM_QUICK, &[]).await;
    let tenant = w.create_tenant("calls", "business").await;
    let quiet = w.create_instance(&tenant, "base-llm", "quiet-one", "running").await;
    w.wait_status(&quiet, "running", Duration::from_secs(60)).await;
    let secret = "sk-call-log-secret-4242";
    let (code, body) = w
        .bridge
        .admin()
        .put_secrets(&quiet, json!({ "CALL_LOG_SECRET": secret }))
        .await;
    assert_eq!(code, 202, "{body}");
    w.wait_record(
        "bot_instances",
        &quiet,
        "secrets applied",
        Duration::from_secs(60),
        |r| r["secrets_hash"].as_str().is_some_and(|h| !h.is_empty()) && r["status"] == "running",
    )
    .await;

    w.sim
        .set_fault(json!({"route": "POST /deploy", "error_rate": 1.0}))
        .await;
    let flaky = w.create_instance(&tenant, "base-llm", "flaky-one", "running").await;
    let admin = w.bridge.admin();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, view) = admin.get(&format!("/admin/instances/{flaky}")).await;
        let failed_start = view["coolify_calls"]
            .as_array()
            .is_some_and(|calls| calls.iter().any(|c| c["route"] == "POST /deploy" && c["status"] == 500));
        if failed_start {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed start recorded: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w.sim.clear_faults().await;
    w.wait_status(&flaky, "running", Duration::from_secs(60)).await;

    let job_ids = |view: &serde_json::Value| -> Vec<i64> {
        let calls = view["coolify_calls"].as_array().expect("coolify_calls");
        calls.iter().filter_map(|c| c["job_id"].as_i64()).collect()
    };
    let (code, quiet_view) = admin.get(&format!("/admin/instances/{quiet}")).await;
    assert_eq!(code, 200);
    let (_, flaky_view) = admin.get(&format!("/admin/instances/{flaky}")).await;
    let (quiet_jobs, flaky_jobs) = (job_ids(&quiet_view), job_ids(&flaky_view));
    assert!(!quiet_jobs.is_empty() && !flaky_jobs.is_empty());
    assert!(
        quiet_jobs.iter().all(|j| !flaky_jobs.contains(j)),
        "calls shared between instances: {quiet_jobs:?} {flaky_jobs:?}"
    );

    let page = Page::sign_in(&w).await;
    let (code, quiet_page) = page.get(&format!("/admin/ui/instances/{quiet}")).await;
    assert_eq!(code, 200);
    for part in [
        "<code>POST /services</code> <span class=\"succeeded\">201</span>",
        "<code>POST /deploy</code> <span class=\"succeeded\">200</span>",
    ] {
        assert!(quiet_page.contains(part), "{part} missing from the timeline");
    }
    assert!(quiet_page.contains("class=\"t-coolify-call\""));
    assert!(
        !quiet_page.contains("<span class=\"failed\">500</span>"),
        "another instance's failed call on this page"
    );
    for flaky_job in &flaky_jobs {
        assert!(
            !quiet_page.contains(&format!("(job {flaky_job})")),
            "job {flaky_job} is the other instance's"
        );
    }
    let (_, flaky_page) = page.get(&format!("/admin/ui/instances/{flaky}")).await;
    assert!(
        flaky_page.contains("<code>POST /deploy</code> <span class=\"failed\">500</span>"),
        "the failed start is not shown"
    );
    // A later run started the service (by a start of the stopped service or a deploy).
    assert!(
        ["<code>POST /services/{uuid}/start</code>", "<code>POST /deploy</code>"]
            .iter()
            .any(|call| flaky_page.contains(&format!("{call} <span class=\"succeeded\">200</span>"))),
        "the successful start is not shown"
    );
    for shown in [
        &quiet_page,
        &flaky_page,
        &quiet_view.to_string(),
        &flaky_view.to_string(),
    ] {
        for never in [secret, cf_testkit::sim::SIM_TOKEN, "/api/v1/", w.sim.url.as_str()] {
            assert!(!shown.contains(never), "{never} reached the page or the API");
        }
    }
}

/// Rollouts from the dashboard (issue 19 item 4): the panel lists the template's kept versions; the form
/// starts a rollout over two instances through the same operation as the admin API, the panel shows it
/// running then succeeded, one more is refused while it runs; a rollback from the template's button
/// returns the old compose; a malformed form is a 400; an unknown version or a bad batch is refused in the
/// flash and starts nothing; a template name with markup stays text; the instance page shows its version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_and_a_rollback_from_the_dashboard() {
    use crate::templates_rollout::{NEW_IMAGE, OLD_IMAGE, compose_of, copy_templates, publish_v2};
    const WAIT: Duration = Duration::from_secs(120);
    let dir = tempfile::tempdir().expect("templates dir");
    copy_templates(dir.path());
    let mut w = crate::templates_rollout::world(dir.path(), SIM_QUICK, &[]).await;
    let tenant = w.create_tenant("pagerollout", "business").await;
    let mut ids = Vec::new();
    for n in 0..2 {
        ids.push(
            w.create_instance(&tenant, "base-llm", &format!("pr{n}"), "running")
                .await,
        );
    }
    for id in &ids {
        w.wait_status(id, "running", WAIT).await;
    }
    publish_v2(dir.path());
    w.bridge.restart().await;
    let page = Page::sign_in(&w).await;

    let (code, body) = page.get("/admin/ui").await;
    assert_eq!(code, 200);
    assert!(
        body.contains("<tr><td>base-llm</td><td>2.0.0</td><td>1.0.0, 2.0.0</td>"),
        "the template's newest and kept versions: {body}"
    );
    assert!(body.contains("id=\"rollout-form\""), "{body}");

    for bad in [
        "op=rollout",
        "template=base-llm",
        "template=base-llm&op=explode",
        "template=&op=rollout",
    ] {
        let (status, _) = page.post_form("/admin/ui/rollout", bad).await;
        assert_eq!(status, 400, "{bad}");
    }
    let refused = [
        ("template=base-llm&op=rollout&to=9.9.9", "no version of that name"),
        ("template=base-llm&op=rollout&batch=0", "batch must be between 1 and 20"),
        (
            "template=base-llm&op=rollout&batch=many",
            "batch must be between 1 and 20",
        ),
        ("template=base-llm&op=rollout&tenant=nobody", "no tenant with that slug"),
        ("template=base-llm&op=rollback", "has no rollout to roll back"),
        (
            "template=%3Cb%3Ex%3C%2Fb%3E&op=rollout",
            "rollout of template &lt;b&gt;x&lt;/b&gt; refused: no template of that name",
        ),
    ];
    for (form, why) in refused {
        let (status, location) = page.post_form("/admin/ui/rollout", form).await;
        assert_eq!((status, location.as_str()), (303, "/admin/ui"), "{form}");
        let (_, body) = page.get("/admin/ui").await;
        let flash = body.split("id=\"flash\"").nth(1).unwrap_or_default();
        assert!(flash.contains(why), "{form}: the flash does not say {why:?}: {body}");
        assert!(!body.contains("<b>x</b>"), "a template name reached the page as markup");
        assert!(
            !body.contains("<tr id=\"rollout-"),
            "a refused form started a rollout: {body}"
        );
    }
    let (status, _) = w.bridge.admin().get("/admin/rollouts/1").await;
    assert_eq!(status, 404, "a refused form started a rollout");

    let mut stream = crate::ui_stream::Stream::open(&w.bridge.url).await;
    let (status, _) = page
        .post_form(
            "/admin/ui/rollout",
            "template=base-llm&op=rollout&to=2.0.0&batch=1&tenant=pagerollout",
        )
        .await;
    assert_eq!(status, 303);
    let (_, body) = page.get("/admin/ui").await;
    assert!(
        body.contains("rollout 1 of template base-llm started: 2 instances in 2 batches"),
        "{body}"
    );
    assert!(
        body.contains("<tr id=\"rollout-1\"><td>1</td><td>base-llm</td><td>rollout</td><td>1.0.0</td><td>2.0.0</td>"),
        "{body}"
    );
    assert!(body.contains("class=\"state running\">running</td>"), "{body}");
    page.post_form("/admin/ui/rollout", "template=base-llm&op=rollout")
        .await;
    let (_, body) = page.get("/admin/ui").await;
    assert!(
        body.contains("rollout 1 of template base-llm is still running"),
        "{body}"
    );

    let panel_of = |id: u32, state: &'static str| {
        let page = &page;
        async move {
            let (code, panels) = page.get("/admin/ui/panels").await;
            assert_eq!(code, 200);
            let row = panels
                .split(&format!("<tr id=\"rollout-{id}\">"))
                .nth(1)
                .and_then(|r| r.split("</tr>").next())
                .map(str::to_owned);
            row.filter(|r| r.contains(&format!("class=\"state {state}\"")))
        }
    };
    let done = w
        .wait("the rollout to succeed on the panel", WAIT, || panel_of(1, "succeeded"))
        .await;
    assert!(done.contains("<td class=\"batches\">2 of 2</td>"), "{done}");
    for id in &ids {
        assert!(compose_of(&w, id).await.contains(NEW_IMAGE), "{id}");
    }

    let (status, _) = page
        .post_form("/admin/ui/rollout", "template=base-llm&op=rollback")
        .await;
    assert_eq!(status, 303);
    let (_, body) = page.get("/admin/ui").await;
    assert!(body.contains("rollback 2 of template base-llm started"), "{body}");
    // Each journaled step is announced, so the live page refreshes the panel (ui.js: any change does).
    stream
        .until("the rollback's start on the stream", |c| {
            c["kind"] == "rollout" && c["rollout_id"] == 2
        })
        .await;
    let steps = stream
        .changes()
        .into_iter()
        .filter(|c| c["kind"] == "rollout" && c["rollout_id"] == 1)
        .count();
    assert!(
        steps >= 4,
        "the rollout's start, its 2 batches and its end are announced: {steps}"
    );
    let done = w
        .wait("the rollback to succeed on the panel", WAIT, || {
            panel_of(2, "succeeded")
        })
        .await;
    assert!(done.contains("<td>rollback</td><td>2.0.0</td><td>1.0.0</td>"), "{done}");
    for id in &ids {
        assert!(compose_of(&w, id).await.contains(OLD_IMAGE), "{id}");
        w.wait_record("bot_instances", id, "its version recorded", WAIT, |r| {
            r["template_version"] == "1.0.0"
        })
        .await;
    }
    let (_, body) = page.get(&format!("/admin/ui/instances/{}", ids[0])).await;
    assert!(
        body.contains("<tr><th>template version</th><td>1.0.0</td></tr>"),
        "the instance page shows its version: {body}"
    );
}
