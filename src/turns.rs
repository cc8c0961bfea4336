//! The fleet-wide passes take turns: the resync (with its drift check), the health poll and the orphan
//! scan each hold a fleet's worth of listings while they run. Started together, and then due together on
//! the same interval, their listings lay side by side and made the bridge's peak memory; one at a time, the
//! peak is the largest pass's, and a pass that waited finds the listings the one before it made (the
//! resync's instances for the health poll, a fresh Coolify list for the orphan scan) instead of reading its
//! own beside them.

use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard};

/// One turn at a time, first come first served (tokio's mutex is fair).
#[derive(Debug, Clone, Default)]
pub struct FleetTurns(Arc<Mutex<()>>);

impl FleetTurns {
    /// Waits for a turn, which lasts until the guard is dropped.
    pub async fn take(&self) -> MutexGuard<'_, ()> {
        self.0.lock().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_pass_waits_for_the_one_under_way() {
        let turns = FleetTurns::default();
        let first = turns.take().await;
        let other = turns.clone();
        let waiting = tokio::spawn(async move {
            let _turn = other.take().await;
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the second pass waits for the first");
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("its turn comes when the first ends")
            .expect("task");
    }
}
