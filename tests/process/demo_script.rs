//! The README's first command: `scripts/demo.py` (what `scripts/demo.sh` runs after building) with the
//! real PocketBase, the simulator and the bridge, run to its end, so a change that breaks the demo fails CI.

use std::net::TcpStream;
use std::process::Command;
use std::time::Instant;

use cf_testkit::pocketbase::pocketbase_bin;
use cf_testkit::{bind_local, repo_root};

use crate::bridge_bin;

fn demo(env: &[(&str, &str)]) -> (std::process::Output, tempfile::TempDir) {
    let target = bridge_bin().parent().expect("the binaries' directory");
    assert!(
        target.join("coolify-sim").exists(),
        "{} has no coolify-sim: build the whole workspace (cargo test --workspace, as scripts/test.sh does)",
        target.display()
    );
    let work = tempfile::tempdir().expect("demo dir");
    let out = Command::new("python3")
        .arg(repo_root().join("scripts/demo.py"))
        .arg(pocketbase_bin())
        .arg(target)
        .env("CF_DEMO_EXIT", "1")
        .env("CF_DEMO_WORK", work.path())
        .envs(env.iter().copied())
        .output()
        .expect("run python3 scripts/demo.py");
    (out, work)
}

#[test]
fn the_demo_provisions_a_tenant_and_two_instances_end_to_end() {
    let started = Instant::now();
    let (out, _work) = demo(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the demo failed ({}) after {:?}:\n{stdout}\n{stderr}",
        out.status,
        started.elapsed()
    );
    for name in ["support-bot", "research-agent"] {
        assert!(
            stdout.lines().any(|l| l.contains(name) && l.contains("status=running")),
            "{name} never shown running:\n{stdout}"
        );
    }
    assert!(stdout.contains("cf-bridge check-config: ok"), "{stdout}");
    assert!(stdout.contains("coolify-sim holds 2 service(s)"), "{stdout}");
    assert!(!stdout.contains("error:"), "the demo shows an error:\n{stdout}");
}

/// A bridge that cannot start is shown with the end of its log, and the demo stops what it had started.
#[test]
fn a_bridge_that_exits_at_start_up_is_shown_with_its_log_and_nothing_is_left_running() {
    let taken = bind_local();
    let metrics = taken.local_addr().expect("its address").to_string();
    let (out, work) = demo(&[("CF_BRIDGE__METRICS__BIND", &metrics)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = work.path().join("cf-bridge.log");
    assert!(
        stderr.contains(&format!(
            "cf-bridge exited during start-up; the end of its log ({})",
            log.display()
        )) && stderr.contains(&format!("binding metrics.bind {metrics}")),
        "{stderr}"
    );
    assert_failed_and_stopped(&out);
}

/// A refused step is named without its command line (the superuser's password is on one), and the demo stops
/// what it had started.
#[test]
fn a_refused_configuration_is_named_and_nothing_is_left_running() {
    let (out, _work) = demo(&[("CF_BRIDGE__QUEUE__CONCURRENCY", "0")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("queue.concurrency: must be between 1 and 256")
            && stderr.contains("cf-bridge check-config failed with exit status 2"),
        "{stderr}"
    );
    assert_failed_and_stopped(&out);
}

/// The demo exited 1, and PocketBase and coolify-sim, whose addresses it showed, no longer answer.
fn assert_failed_and_stopped(out: &std::process::Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    for (what, prefix) in [
        ("PocketBase", "PocketBase 0.40.6     http://"),
        ("coolify-sim", "coolify-sim           http://"),
    ] {
        let address = stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix)?.split('/').next())
            .unwrap_or_else(|| panic!("no {what} address shown:\n{stdout}"));
        assert!(
            TcpStream::connect(address).is_err(),
            "{what} at {address} still answers after the demo stopped"
        );
    }
}
