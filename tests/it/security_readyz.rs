//! A flood of `/readyz` probes does not write the journal per probe (issue 14, item 7): one readiness
//! evaluation (which proves the journal writable with one write) answers every probe for about a second.
//! Observed through the public metric `cf_bridge_journal_health_writes_total`.

use std::time::{Duration, Instant};

use cf_testkit::promtext;
use cf_testkit::world::{SIM_FAST, World};

async fn health_writes(w: &World) -> f64 {
    let text = w.bridge.admin().metrics().await;
    promtext::parse(&text)
        .expect("valid exposition")
        .sum("cf_bridge_journal_health_writes_total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_readiness_probes_writes_the_journal_about_once_a_second() {
    let w = World::start(SIM_FAST, &[]).await;
    let before = health_writes(&w).await;
    let started = Instant::now();
    let probes = (0..8).map(|_| {
        let url = format!("{}/readyz", w.bridge.url);
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0u32;
            while started.elapsed() < Duration::from_millis(2500) {
                let r = client.get(&url).send().await.expect("GET /readyz");
                assert!(matches!(r.status().as_u16(), 200 | 503));
                n += 1;
            }
            n
        })
    });
    let mut requests = 0;
    for p in probes {
        requests += p.await.expect("probe task");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let writes = health_writes(&w).await - before;
    println!("{requests} probes in {elapsed:.1} s wrote the journal {writes} times");
    assert!(requests >= 200, "the flood is a flood: {requests} probes");
    assert!(
        writes <= elapsed.ceil() + 1.0,
        "{writes} journal writes for {requests} probes in {elapsed:.1} s"
    );
    assert!(writes >= 1.0, "readiness is still evaluated");
}
