use std::time::{Duration, Instant};

use cf_bridge::pg::leader::{Candidate, LeaderSettings};
use cf_bridge::pg::{self, PgConfig};
use cf_testkit::Postgres;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const LEASE: Duration = Duration::from_secs(3);

fn settings() -> LeaderSettings {
    LeaderSettings { lease: LEASE }
}

/// Which of the candidates lead now.
fn leaders(watches: &[watch::Receiver<bool>]) -> Vec<usize> {
    (0..watches.len()).filter(|i| *watches[*i].borrow()).collect()
}

/// Waits until exactly one leads (never two at once meanwhile) and returns it and how long it took.
async fn one_leader(watches: &[watch::Receiver<bool>], within: Duration) -> (usize, Duration) {
    let start = Instant::now();
    loop {
        let now = leaders(watches);
        assert!(now.len() <= 1, "two leaders at once: {now:?}");
        if let [one] = now[..] {
            return (one, start.elapsed());
        }
        assert!(start.elapsed() < within, "nobody leads after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn none_lead(watches: &[watch::Receiver<bool>], within: Duration) -> Duration {
    let start = Instant::now();
    while !leaders(watches).is_empty() {
        assert!(start.elapsed() < within, "still a leader after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn candidates(cfg: &PgConfig, n: usize, shutdown: &CancellationToken) -> (Vec<Candidate>, Vec<watch::Receiver<bool>>) {
    let all: Vec<Candidate> = (0..n)
        .map(|i| {
            Candidate::spawn(
                cfg.clone().with_application_name(&format!("candidate-{i}")),
                settings(),
                shutdown,
            )
        })
        .collect();
    let watches = all.iter().map(Candidate::is_leader).collect();
    (all, watches)
}

#[tokio::test]
async fn one_of_two_leads_and_the_other_takes_over_within_the_lease_when_its_connection_is_killed() {
    let db = Postgres::shared().database().await;
    let cfg = PgConfig::parse(&db.url).unwrap();
    let shutdown = CancellationToken::new();
    let (_all, watches) = candidates(&cfg, 2, &shutdown);
    let (first, _) = one_leader(&watches, LEASE * 2).await;
    // It stays the only leader over two leases.
    let settle = Instant::now();
    while settle.elapsed() < LEASE * 2 {
        assert_eq!(leaders(&watches), vec![first]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (admin, _conn) = pg::connect(&cfg).await.unwrap();
    let killed: i64 = admin
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1) t",
            &[&format!("candidate-{first}")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "the leader's one connection");
    let killed_at = Instant::now();
    let stepped_down = none_lead(&watches[first..=first], LEASE).await;
    let (second, took) = one_leader(&watches, LEASE).await;
    assert_ne!(second, first);
    println!("leader's connection killed: it stepped down after {stepped_down:?}, another led after {took:?}");
    assert!(
        killed_at.elapsed() <= LEASE + Duration::from_millis(500),
        "took over within the lease"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn someone_leads_again_after_postgres_restarts() {
    let pg = Postgres::start();
    let db = pg.database().await;
    let cfg = PgConfig::parse(&db.url).unwrap();
    let shutdown = CancellationToken::new();
    let (_all, watches) = candidates(&cfg, 2, &shutdown);
    one_leader(&watches, LEASE * 2).await;

    pg.stop();
    let down = none_lead(&watches, LEASE).await;
    pg.restart();
    let (_, back) = one_leader(&watches, LEASE * 2).await;
    println!("PostgreSQL stopped: nobody led after {down:?}; restarted: a leader after {back:?}");
    shutdown.cancel();
}

#[tokio::test]
async fn a_stopped_leader_hands_over_at_once() {
    let db = Postgres::shared().database().await;
    let cfg = PgConfig::parse(&db.url).unwrap();
    let shutdown = CancellationToken::new();
    let (mut all, watches) = candidates(&cfg, 2, &shutdown);
    let (first, _) = one_leader(&watches, LEASE * 2).await;
    all.remove(first).stop().await;
    let rest = [watches[1 - first].clone()];
    let (_, took) = one_leader(&rest, LEASE).await;
    println!("leader stopped: the other led after {took:?}");
}
