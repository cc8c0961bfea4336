//! Whether realtime frames arrive as a flow (a flood), shared by the stream's reader and the journal's
//! writer: both do less work per frame by waiting for more of them, but only where a flow makes the wait
//! gather something; a person's change must not wait. The reader also raises a [`FloodSign`] for the
//! PocketBase client, which spaces the bridge's own writes while PocketBase takes a flood.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The window of a flow, and how long the journal's writer waits in one for more frames before it commits.
/// Under a flood the next frame came just after each commit, so nearly every frame was a commit of its own
/// (1.9 commits per event), each writing every page it touched whole. 12 ms rather than 4: in a flood the
/// bridge spent 9 % less CPU per frame, and PocketBase beside it took 5 % more writes (docs/BENCHMARKS.md,
/// "Thirty-sixth session").
pub(crate) const WINDOW: Duration = Duration::from_millis(12);
/// Frames received within one [`WINDOW`] that make a flow worth waiting in (8 in 12 ms: 667 frames a
/// second, held for the whole window; a flood brings over 1,000). With one frame enough, a person's change
/// at 50 a second often came just after the echo of another's write-back and waited too: the first Coolify
/// call's p99 rose by about the wait (docs/BENCHMARKS.md, "Thirty-fourth session"). At 50 changes a second
/// and their echoes (about 100 frames a second) 8 frames come within 12 ms almost never.
pub(crate) const FRAMES: usize = 8;

/// When frames came lately: whether they are a flow.
pub(crate) struct Flow {
    pub(crate) window: Duration,
    /// When each of the last frames was received, oldest first; at most `frames`.
    received: VecDeque<Instant>,
    frames: usize,
}

impl Flow {
    /// A flood's: [`FRAMES`] within [`WINDOW`].
    pub(crate) fn flood() -> Flow {
        Flow::new(WINDOW, FRAMES)
    }

    /// `frames` received within `window` are a flow.
    pub(crate) fn new(window: Duration, frames: usize) -> Flow {
        Flow {
            window,
            received: VecDeque::with_capacity(frames),
            frames,
        }
    }

    pub(crate) fn flowing(&self) -> bool {
        self.received.len() == self.frames && self.received.front().is_some_and(|at| at.elapsed() < self.window)
    }

    pub(crate) fn saw(&mut self, frames: usize) {
        let now = Instant::now();
        for _ in 0..frames.min(self.frames) {
            if self.received.len() == self.frames {
                self.received.pop_front();
            }
            self.received.push_back(now);
        }
    }
}

/// How long after the last frame of a flow the [`FloodSign`] stays up: longer than the pauses between the
/// bursts a flood's stream is read in (8 ms), so the sign does not drop between two of them.
const LINGER: Duration = Duration::from_millis(100);

/// Whether PocketBase is taking a flood of writes, as the realtime reader saw it last; shared by clones.
#[derive(Clone, Debug, Default)]
pub struct FloodSign {
    /// When a flow was last seen, in milliseconds after [`epoch`] plus one; 0 before any.
    seen: Arc<AtomicU64>,
}

/// The instant sign times count from: the first use in the process.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl FloodSign {
    /// Frames are coming as a flow now.
    pub fn raise(&self) {
        let ms = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        self.seen.store(ms, Ordering::Relaxed);
    }

    /// Whether a flow was seen within the last [`LINGER`].
    pub fn up(&self) -> bool {
        match self.seen.load(Ordering::Relaxed) {
            0 => false,
            seen => {
                let now = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
                now.saturating_sub(seen) < LINGER.as_millis() as u64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flood_sign_is_up_from_a_flow_until_a_linger_without_one() {
        let sign = FloodSign::default();
        let seen_by_another = sign.clone();
        assert!(!sign.up(), "up before any flow");
        seen_by_another.raise();
        assert!(sign.up(), "a clone's raise is not seen");
        std::thread::sleep(LINGER + Duration::from_millis(20));
        assert!(!sign.up(), "still up a linger after the last flow");
    }

    #[test]
    fn a_flow_is_a_flood_not_a_person_s_changes_and_their_echoes() {
        let mut flow = Flow::flood();
        // 50 changes a second and the echoes of their write-backs: a frame every 10 ms is never a flow.
        for _ in 0..2 * FRAMES {
            flow.saw(1);
            assert!(!flow.flowing());
            std::thread::sleep(Duration::from_millis(10));
        }
        // Seven frames at once are not one either.
        let mut flow = Flow::flood();
        flow.saw(FRAMES - 1);
        assert!(!flow.flowing());
        // Eight are, until a window has passed without more.
        flow.saw(1);
        assert!(flow.flowing());
        std::thread::sleep(WINDOW + Duration::from_millis(5));
        assert!(!flow.flowing());
    }
}
