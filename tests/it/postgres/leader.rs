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
async fn a_stopped_leader_lets_the_other_lead_within_the_lease() {
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

/// A TCP relay that can hang (hold every byte, like a network partition: neither side learns anything)
/// and then cut (close both sides, as the server's keepalive eventually would).
struct HangingProxy {
    port: u16,
    frozen: watch::Sender<bool>,
    cut: watch::Sender<bool>,
}

impl HangingProxy {
    async fn start(target: u16) -> HangingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (frozen, _) = watch::channel(false);
        let (cut, _) = watch::channel(false);
        let (f, c) = (frozen.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let Ok(up) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let (down_r, down_w) = down.into_split();
                let (up_r, up_w) = up.into_split();
                tokio::spawn(pump(down_r, up_w, f.subscribe(), c.subscribe()));
                tokio::spawn(pump(up_r, down_w, f.subscribe(), c.subscribe()));
            }
        });
        HangingProxy { port, frozen, cut }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
    mut cut: watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => r.unwrap_or(0),
            _ = cut.wait_for(|c| *c) => return,
        };
        // While frozen nothing passes, not even a close.
        tokio::select! {
            _ = frozen.wait_for(|f| !*f) => {}
            _ = cut.wait_for(|c| *c) => return,
        }
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_leader_whose_connection_hangs_steps_down_within_the_lease() {
    let pg = Postgres::shared();
    let db = pg.database().await;
    let direct = PgConfig::parse(&db.url).unwrap();
    let proxy = HangingProxy::start(pg.port).await;
    let via_proxy = PgConfig::parse(&db.url.replace(&format!(":{}/", pg.port), &format!(":{}/", proxy.port))).unwrap();
    let shutdown = CancellationToken::new();
    let hanging = Candidate::spawn(via_proxy, settings(), &shutdown);
    one_leader(&[hanging.is_leader()], LEASE * 2).await;
    let other = Candidate::spawn(direct, settings(), &shutdown);
    let watches = [hanging.is_leader(), other.is_leader()];

    proxy.frozen.send_replace(true);
    let stepped_down = none_lead(&watches, LEASE).await;
    // The server still holds the hung session and its lock: nobody leads until it learns it is gone.
    tokio::time::sleep(LEASE).await;
    assert!(
        leaders(&watches).is_empty(),
        "the lock is still held by the hung session"
    );
    proxy.cut.send_replace(true);
    let (now, took) = one_leader(&watches, LEASE).await;
    assert_eq!(now, 1, "the directly connected candidate");
    println!(
        "leader's connection hung: it stepped down after {stepped_down:?}; session closed: another led after {took:?}"
    );
    shutdown.cancel();
}
