//! `process.nice` (issue 17): every thread of a started bridge has the configured nice value, and the
//! default (0) leaves the bridge as it was started.

use cf_testkit::{BridgeProcess, TestPb, TestSim};

use crate::bridge_bin;

/// A task's nice value, from its `stat` line: field 19, the 17th after the command name's `)`.
fn nice_of(stat: &str) -> i32 {
    let (_, after_name) = stat.rsplit_once(')').expect("stat line with a command name");
    after_name
        .split_whitespace()
        .nth(16)
        .and_then(|v| v.parse().ok())
        .expect("nice field")
}

/// Every thread's nice value, by thread name.
fn thread_nices(pid: u32) -> Vec<(String, i32)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the bridge's threads");
    tasks
        .filter_map(|t| {
            let path = t.ok()?.path();
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            let name = std::fs::read_to_string(path.join("comm")).ok()?;
            Some((name.trim().to_string(), nice_of(&stat)))
        })
        .collect()
}

#[tokio::test]
async fn every_thread_of_the_bridge_runs_at_its_configured_nice_value() {
    let own = nice_of(&std::fs::read_to_string("/proc/thread-self/stat").expect("own stat"));
    let pb = TestPb::start().await;
    let sim = TestSim::start(cf_testkit::world::SIM_FAST);
    for (setting, expected) in [(None, own), (Some("10"), own.max(10)), (Some("15"), own.max(15))] {
        let env: Vec<(&str, &str)> = setting
            .map(|nice| ("CF_BRIDGE__PROCESS__NICE", nice))
            .into_iter()
            .collect();
        let mut bridge = BridgeProcess::for_stack(bridge_bin(), (&pb).into(), &sim, &env).await;
        let threads = thread_nices(bridge.pid().expect("bridge pid"));
        // The runtime's worker, the journal's writer and the HTTP servers' workers at least.
        assert!(threads.len() >= 4, "{threads:?}");
        for (name, nice) in &threads {
            assert_eq!(
                *nice, expected,
                "thread {name} with process.nice = {setting:?}: {threads:?}"
            );
        }
        let log = bridge.log();
        assert!(
            log.contains("CPU priority (nice value)") && log.contains(&format!("\"nice\":{expected}")),
            "{log}"
        );
        bridge.terminate();
    }
}
