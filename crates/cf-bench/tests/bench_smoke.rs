//! cf-bench still works: a tiny run against real PocketBase, coolify-sim and cf-bridge prints the table.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn tiny_bench_prints_the_table() {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_cf-bench"))
        .args(["--mode", "tiny"])
        .output()
        .expect("run cf-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cf-bench failed:\n{stderr}");
    assert!(
        stdout.starts_with("| section | figure | cf-bridge | baseline | ratio |"),
        "no table header:\n{stdout}"
    );
    for section in ["1 latency", "2 throughput", "3 budget", "4 webhook", "5 resources"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("| {section} |"))),
            "no {section} rows:\n{stdout}"
        );
    }
    // Figures are measured, not placeholders: the latency rows carry milliseconds, the resync made one
    // call (its drift check's list).
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("first Coolify call p50") && l.contains(" ms |")),
        "no measured latency:\n{stdout}"
    );
    assert!(
        stdout.contains("| Coolify calls made by that resync (its drift check) | 1 |"),
        "resync of unchanged records made other calls than one list:\n{stdout}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(300),
        "tiny bench took {:?}",
        start.elapsed()
    );
}
