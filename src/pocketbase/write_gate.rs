//! The gate every record write of the bridge to PocketBase passes: at most `max_writes_in_flight` at once,
//! and while PocketBase takes a flood of writes (the realtime reader's [`FloodSign`]), the next only
//! [`SPACING`] after the last one's exchange ended.
//!
//! In a flood, each of the bridge's write-backs is one more write PocketBase carries out, its hooks run and
//! its frame broadcast, on the cores the flood needs; and the job behind it worked a version of the record
//! that the flood mostly changes again before it ends, so the work is done again after it. In a quick
//! flood of renames PocketBase took 0.745x of the no-hook PocketBase's writes with the bridge's jobs
//! writing as they finished (about 40 write-backs a second), 0.835x with every job held until the flood
//! ended, and 0.826x with the writes 100 ms apart (200 and 500 ms took no more off; docs/BENCHMARKS.md,
//! "Thirty-ninth session"). Spaced rather than held, jobs still finish during a flood of any length: ten
//! write-backs a second, more than Coolify's default budget (180 calls a minute) lets the bridge change
//! services anyway.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::flow::FloodSign;

/// While the flood sign is up, how long after one write's exchange ends the next may start.
pub const SPACING: Duration = Duration::from_millis(100);

/// See the module's documentation.
#[derive(Debug)]
pub struct WriteGate {
    permits: Arc<Semaphore>,
    flood: FloodSign,
    spacing: Duration,
}

/// A write's pass through the gate; [`WriteGate::leave`] gives it back.
pub struct Pass {
    _permit: OwnedSemaphorePermit,
}

impl WriteGate {
    pub fn new(in_flight: usize, flood: FloodSign) -> WriteGate {
        WriteGate::with_spacing(in_flight, flood, SPACING)
    }

    fn with_spacing(in_flight: usize, flood: FloodSign, spacing: Duration) -> WriteGate {
        WriteGate {
            permits: Arc::new(Semaphore::new(in_flight)),
            flood,
            spacing,
        }
    }

    /// The sign the gate watches, for the realtime reader to count its frames on.
    pub fn flood_sign(&self) -> FloodSign {
        self.flood.clone()
    }

    /// Waits for a pass; `None` only if the gate were closed, which it never is.
    pub async fn enter(&self) -> Option<Pass> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .ok()
            .map(|permit| Pass { _permit: permit })
    }

    /// Gives the pass back once the write's exchange is over: at once, or while the flood sign is up,
    /// after [`SPACING`] (the writer itself goes on meanwhile).
    pub fn leave(&self, pass: Pass) {
        if self.flood.holds_back() {
            let spacing = self.spacing;
            tokio::spawn(async move {
                tokio::time::sleep(spacing).await;
                drop(pass);
            });
        } else {
            drop(pass);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use prometheus::IntCounter;

    use super::*;
    use crate::flow::FloodCounters;

    #[tokio::test]
    async fn in_a_flood_writes_are_spaced_and_outside_one_they_follow_at_once() {
        let spacing = Duration::from_millis(150);
        // A sign raised by a single frame, for a linger after each.
        let gate = WriteGate::with_spacing(1, FloodSign::with_rule(Duration::from_secs(60), 1), spacing);
        let counters = FloodCounters {
            floods: IntCounter::new("floods", "floods").expect("a valid name"),
            writes_spaced: IntCounter::new("spaced", "spaced").expect("a valid name"),
        };
        gate.flood_sign().count_on(counters.clone());

        let started = Instant::now();
        for _ in 0..3 {
            let pass = gate.enter().await.expect("the gate is open");
            gate.leave(pass);
        }
        assert!(
            started.elapsed() < spacing,
            "without a flood three writes took {:?}",
            started.elapsed()
        );
        assert_eq!(
            counters.writes_spaced.get(),
            0,
            "a write outside a flood was counted as spaced"
        );

        gate.flood_sign().saw();
        let started = Instant::now();
        let pass = gate.enter().await.expect("the gate is open");
        gate.leave(pass);
        assert!(started.elapsed() < spacing, "the first write in a flood waited");
        gate.flood_sign().saw();
        let pass = gate.enter().await.expect("the gate is open");
        assert!(
            started.elapsed() >= spacing,
            "in a flood the next write started after {:?}",
            started.elapsed()
        );
        gate.leave(pass);
        // The second frame came while the sign was up: one flood. Only the write whose successor waited
        // counts; the last one left after the linger, without a flood.
        assert_eq!(counters.floods.get(), 1);
        assert_eq!(counters.writes_spaced.get(), 1);
    }
}
