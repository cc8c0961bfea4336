//! The README's first command: `scripts/demo.py` (what `scripts/demo.sh` runs after building) with the
//! real PocketBase, the simulator and the bridge, run to its end, so a change that breaks the demo fails CI.

use std::process::Command;
use std::time::Instant;

use cf_testkit::pocketbase::pocketbase_bin;
use cf_testkit::repo_root;

use crate::bridge_bin;

#[test]
fn the_demo_provisions_a_tenant_and_two_instances_end_to_end() {
    let target = bridge_bin().parent().expect("the binaries' directory");
    assert!(
        target.join("coolify-sim").exists(),
        "{} has no coolify-sim: build the whole workspace (cargo test --workspace, as scripts/test.sh does)",
        target.display()
    );
    let work = tempfile::tempdir().expect("demo dir");
    let started = Instant::now();
    let out = Command::new("python3")
        .arg(repo_root().join("scripts/demo.py"))
        .arg(pocketbase_bin())
        .arg(target)
        .env("CF_DEMO_EXIT", "1")
        .env("CF_DEMO_WORK", work.path())
        .output()
        .expect("run python3 scripts/demo.py");
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
