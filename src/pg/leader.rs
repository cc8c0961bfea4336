//! One leader among the replicas: whoever holds a session advisory lock on a connection of its own. The
//! lock lives exactly as long as that session, so a leader whose process or connection dies loses it at
//! once on the server; the leader steps down as soon as its connection closes, and learns of a connection
//! that hangs by a `SELECT 1` every `check_every` (answered within `check_every`). Candidates try the lock every
//! `check_every` too, so a new leader takes over within the lease (`2 * check_every` plus a connect).
//!
//! A network partition is the one case where the server may still hold the old session for a while (until
//! its TCP keepalive gives up) while the old leader has already stepped down: nobody leads in between. Two
//! leaders at once can only overlap for one check interval, and what a leader runs is idempotent (events
//! are hints, deduplicated).

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{PgConfig, connect, lock_keys};

#[derive(Debug, Clone, Copy)]
pub struct LeaderSettings {
    /// How long a dead leader may still be believed: a successor leads within it.
    pub lease: Duration,
}

impl Default for LeaderSettings {
    fn default() -> Self {
        LeaderSettings {
            lease: Duration::from_secs(15),
        }
    }
}

impl LeaderSettings {
    /// A check (the leader's `SELECT 1`, a candidate's lock attempt) every third of the lease: a failed
    /// leader notices within two thirds, a candidate tries at least once more before the lease ends.
    pub fn check_every(&self) -> Duration {
        (self.lease / 3).max(Duration::from_millis(50))
    }
}

/// A running candidate. `is_leader` says whether this replica leads right now.
pub struct Candidate {
    is_leader: watch::Receiver<bool>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Candidate {
    /// Starts competing for the lead on its own connection, until `shutdown` or [`Candidate::stop`].
    pub fn spawn(cfg: PgConfig, settings: LeaderSettings, shutdown: &CancellationToken) -> Candidate {
        let (tx, rx) = watch::channel(false);
        let stop = shutdown.child_token();
        let task = tokio::spawn(run(cfg, settings, tx, stop.clone()));
        Candidate {
            is_leader: rx,
            stop,
            task,
        }
    }

    pub fn is_leader(&self) -> watch::Receiver<bool> {
        self.is_leader.clone()
    }

    /// Steps down (releasing the lock for the next one) and ends.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

enum Outcome {
    Stopped,
    Lost,
}

async fn run(cfg: PgConfig, settings: LeaderSettings, is_leader: watch::Sender<bool>, stop: CancellationToken) {
    let every = settings.check_every();
    loop {
        let outcome = tokio::select! {
            o = attempt(&cfg, every, &is_leader, &stop) => o,
            () = stop.cancelled() => Outcome::Stopped,
        };
        is_leader.send_replace(false);
        match outcome {
            Outcome::Stopped => return,
            Outcome::Lost => {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}

/// One connection's life: competes, leads while the connection answers, returns when it does not.
async fn attempt(
    cfg: &PgConfig,
    every: Duration,
    is_leader: &watch::Sender<bool>,
    stop: &CancellationToken,
) -> Outcome {
    let (client, conn) = match tokio::time::timeout(every, connect(cfg)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "leader election: cannot connect");
            return Outcome::Lost;
        }
        Err(_) => {
            tracing::warn!(target = %cfg.redacted(), "leader election: connecting timed out");
            return Outcome::Lost;
        }
    };
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn = conn;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            // The server ended the session (terminated, restarted): the lock is gone with it, now.
            _ = &mut conn => {
                if *is_leader.borrow() {
                    tracing::warn!("leader election: connection closed, stepping down");
                }
                return Outcome::Lost;
            }
            () = stop.cancelled() => {
                if *is_leader.borrow() {
                    // Closing the session would release it too; unlocking first lets a successor in sooner.
                    let _ = tokio::time::timeout(every, client.execute("SELECT pg_advisory_unlock($1)", &[&lock_keys::LEADER])).await;
                    tracing::info!("leader election: stepped down (stopping)");
                }
                conn.abort();
                return Outcome::Stopped;
            }
        }
        let leading = *is_leader.borrow();
        let sql = if leading {
            "SELECT true"
        } else {
            "SELECT pg_try_advisory_lock($1)"
        };
        let params: &[&(dyn tokio_postgres::types::ToSql + Sync)] = if leading { &[] } else { &[&lock_keys::LEADER] };
        match tokio::time::timeout(every, client.query_one(sql, params)).await {
            Ok(Ok(row)) => {
                let holds: bool = row.get(0);
                if holds && !leading {
                    tracing::info!("leader election: this replica leads");
                    is_leader.send_replace(true);
                }
            }
            Ok(Err(e)) => {
                if leading {
                    tracing::warn!(error = %e, "leader election: connection failed, stepping down");
                }
                conn.abort();
                return Outcome::Lost;
            }
            Err(_) => {
                if leading {
                    tracing::warn!("leader election: PostgreSQL did not answer in time, stepping down");
                }
                conn.abort();
                return Outcome::Lost;
            }
        }
    }
}
