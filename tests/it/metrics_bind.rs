//! Issue 18, item 6 (optional part): `metrics.bind` serves `/metrics` on an address of its own, and only
//! that; the admin bind then no longer answers it. Without it, `/metrics` stays on the admin bind (the
//! other metrics tests).

use cf_testkit::free_port;
use cf_testkit::world::{SIM_FAST, World};

async fn get(url: &str) -> (u16, String) {
    let r = cf_testkit::http().get(url).send().await.expect("GET");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_bind_serves_metrics_alone_and_takes_them_off_the_admin_bind() {
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let w = World::start(SIM_FAST, &[("CF_BRIDGE__METRICS__BIND", bind.as_str())]).await;
    let metrics = format!("http://{bind}");

    let (status, body) = get(&format!("{metrics}/metrics")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("cf_bridge_build_info"), "{body}");
    for path in ["/healthz", "/readyz", "/admin/jobs", "/admin/ui", "/hooks/pocketbase"] {
        assert_eq!(get(&format!("{metrics}{path}")).await.0, 404, "{path} on metrics.bind");
    }

    assert_eq!(
        get(&format!("{}/metrics", w.bridge.url)).await.0,
        404,
        "/metrics on admin.bind"
    );
    assert_eq!(get(&format!("{}/healthz", w.bridge.url)).await.0, 200);
}
