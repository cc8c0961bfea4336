//! cf-bench still works: a tiny run against real PocketBase, coolify-sim and cf-bridge prints the table and
//! writes the same figures as JSON.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

#[test]
fn tiny_bench_prints_the_table_and_the_json() {
    let start = Instant::now();
    let dir = std::env::temp_dir().join(format!("cf-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("json dir");
    let json_path = dir.join("full.json");
    let out = Command::new(env!("CARGO_BIN_EXE_cf-bench"))
        .args(["--mode", "tiny", "--json"])
        .arg(&json_path)
        .output()
        .expect("run cf-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cf-bench failed:\n{stderr}");
    assert!(
        stdout.starts_with("| section | figure | cf-bridge | baseline | ratio (overhead) | goal | met |"),
        "no table header:\n{stdout}"
    );
    assert!(
        stdout.contains("cf-bridge's peak resident memory (VmHWM, read after each phase) rose during: the start to "),
        "no note of where the bridge's peak rose:\n{stdout}"
    );
    let sections = [
        "1 latency",
        "2 throughput",
        "3 budget",
        "4 webhook",
        "5 resources",
        "6 stream check",
        "7 idle fleet",
    ];
    for section in sections {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("| {section} |"))),
            "no {section} rows:\n{stdout}"
        );
    }
    // Figures are measured, not placeholders: the latency rows carry milliseconds and an overhead beside
    // the no-hook frame, the resync made one call (its drift check's list).
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("first Coolify call p50") && l.contains(" ms (no-hook frame)") && l.contains(" ms) |")),
        "no measured latency with its overhead:\n{stdout}"
    );
    // The baselines that bound two of issue 17's targets are measured too: a realtime subscriber that only
    // reads frames beside the hooks alone, and a start's writes made without the bridge. The hooks with and
    // without that subscriber are measured at PocketBase's own runtime pool too, beside the deployment's.
    let measured = |l: &&str| {
        let ratio = l.split('|').map(str::trim).nth(5).unwrap_or("");
        ratio.starts_with(|c: char| c.is_ascii_digit()) && ratio.contains('x')
    };
    for row in [
        "a realtime subscriber that only reads every frame (no bridge) vs no hooks | ",
        "a start's writes made without the bridge",
        "project hooks with webhook delivery off, PocketBase's default --hooksPool (15) vs no hooks | ",
        "only reads every frame (no bridge), PocketBase's default --hooksPool (15) vs no hooks | ",
    ] {
        assert!(
            stdout.lines().filter(|l| l.contains(row)).any(|l| measured(&l)),
            "no measured row with {row:?} and its ratio:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("| Coolify calls made by that resync (its drift check) | 1 |"),
        "resync of unchanged records made other calls than one list:\n{stdout}"
    );
    // A flood's write rate counts only with the bridge keeping up, so how far behind it ended is measured.
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("until the bridge had journaled all of it")
                && l.split('|').nth(3).is_some_and(|v| v.trim().ends_with(" s"))),
        "no measured row of how long after the flood the bridge had journaled it:\n{stdout}"
    );

    // The JSON: one object per table row, each with the fields docs/BENCHMARKS.md names.
    let text = std::fs::read_to_string(&json_path).expect("cf-bench wrote no JSON");
    let doc: Value = serde_json::from_str(&text).expect("the JSON is well-formed");
    let figures = doc["figures"].as_array().expect("figures is a list");
    let rows = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| section"))
        .count();
    assert_eq!(figures.len(), rows, "one JSON object per table row");
    for f in figures {
        for key in ["name", "value", "unit", "baseline", "ratio", "goal", "met"] {
            assert!(f.get(key).is_some(), "figure without {key}: {f}");
        }
        assert!(f["name"].is_string() && f["unit"].is_string(), "{f}");
        assert!(f["value"].is_number() || f["value"].is_null(), "{f}");
    }
    for section in sections {
        assert!(
            figures.iter().any(|f| f["section"] == section),
            "no {section} figure in the JSON"
        );
    }
    let latency = figures
        .iter()
        .find(|f| f["name"].as_str().is_some_and(|n| n.contains("first Coolify call p99")))
        .expect("latency figure in the JSON");
    assert!(
        latency["value"].is_number() && latency["baseline"].is_number() && latency["overhead_ms"].is_number(),
        "latency figure without value, no-hook baseline or overhead: {latency}"
    );
    assert_eq!(doc["context"]["mode"], "tiny");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        start.elapsed() < Duration::from_secs(300),
        "tiny bench took {:?}",
        start.elapsed()
    );
}
