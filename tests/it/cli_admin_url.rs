//! `cf-bridge --admin-url` / `CF_BRIDGE_ADMIN_URL`: the online commands reach the bridge there rather than
//! at `admin.bind`; a malformed URL is refused before anything is sent; problem details reach the operator.

use cf_testkit::world::{SIM_QUICK, World};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_commands_use_the_admin_url_given() {
    let w = World::start(SIM_QUICK, &[]).await;
    // The configuration names a port nothing listens on: only the URL given can reach the bridge.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let env = [("CF_BRIDGE__ADMIN__BIND".to_string(), closed.to_string())];
    let run = |args: &[&str], extra: &[(String, String)]| {
        let all: Vec<(String, String)> = env.iter().chain(extra).cloned().collect();
        cf_testkit::cli::run(crate::bridge_bin(), &w.cli_config(), args, &all)
    };

    let out = run(&["resync"], &[]);
    assert!(!out.status.success(), "admin.bind is closed: {}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("is the bridge running?"),
        "{}",
        text(&out.stderr)
    );

    let url = w.bridge.url.clone();
    let out = run(&["--admin-url", &url, "resync"], &[]);
    assert!(out.status.success(), "--admin-url: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("resync requested"), "{}", text(&out.stdout));

    let with_slash = format!("{url}/");
    let out = run(&["resync"], &[("CF_BRIDGE_ADMIN_URL".into(), with_slash)]);
    assert!(out.status.success(), "CF_BRIDGE_ADMIN_URL: {}", text(&out.stderr));

    // The bridge's problem detail is what the operator reads.
    let out = run(&["--admin-url", &url, "rotate-router-key", "nosuchinstance"], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("404") && text(&out.stderr).contains("no bot instance nosuchinstance"),
        "{}",
        text(&out.stderr)
    );

    for bad in [
        "bridge:8088",
        "127.0.0.1:8088",
        "http://user:pw@127.0.0.1:8088",
        "http://h/?a=1",
    ] {
        let out = run(&["--admin-url", bad, "resync"], &[]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{bad}: {stderr}");
        assert!(stderr.contains("--admin-url"), "{bad}: {stderr}");
        assert!(!stderr.contains("pw@"), "{bad}: the credentials are echoed: {stderr}");
    }
}
