//! Whether realtime frames arrive as a flow (a flood), shared by the stream's reader and the journal's
//! writer: both do less work per frame by waiting for more of them, but only where a flow makes the wait
//! gather something; a person's change must not wait. The reader also counts its frames on a [`FloodSign`],
//! with a stricter rule of its own, for the PocketBase client, which spaces the bridge's writes in a flood.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::IntCounter;

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
#[derive(Debug)]
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

/// The flood the [`FloodSign`] is raised for: 160 frames within 250 ms (640 a second, held for a quarter of a
/// second). Not the reader's and writer's flow of 8 within 12 ms: frames read together after a pause of the
/// reader count as one instant, and at 200 changes a second with their echoes (about 400 frames a second)
/// that rule saw flows often enough to space the bridge's writes where nothing was flooded, its jobs reading
/// records again behind the delayed write-backs (PocketBase's CPU per change at 200/s 2.84x -> 3.32x of a
/// bare write, goal 3x; docs/BENCHMARKS.md, "Thirty-ninth session"). A quarter second holds a pause of the
/// reader's many times over, and 640 a second is below what the hooked PocketBase takes in a flood on this
/// machine even on its slowest hours (864 writes a second).
const FLOOD_WINDOW: Duration = Duration::from_millis(250);
const FLOOD_FRAMES: usize = 160;

/// How long after the last frame of a flood the [`FloodSign`] stays up: long enough that the pauses
/// between the bursts a flood's stream is read in (8 ms) do not drop it.
const LINGER: Duration = Duration::from_millis(100);

/// Whether PocketBase is taking a flood of writes, as the realtime reader's frames show; shared by clones.
/// The reader counts its frames here (one lock per frame), the PocketBase client's write gate looks (one per
/// write): neither waits long for the other.
#[derive(Clone, Debug)]
pub struct FloodSign {
    inner: Arc<Mutex<Sign>>,
}

#[derive(Debug)]
struct Sign {
    flow: Flow,
    /// When the frames last were a flood.
    seen: Option<Instant>,
    counters: Option<FloodCounters>,
}

/// Where a [`FloodSign`] counts, for `/metrics`: whether floods were seen, and what they held back, is
/// otherwise visible nowhere.
#[derive(Clone, Debug)]
pub struct FloodCounters {
    /// Times the sign went up after being down.
    pub floods: IntCounter,
    /// Writes after which the next one was held back because the sign was up.
    pub writes_spaced: IntCounter,
}

impl Default for FloodSign {
    fn default() -> FloodSign {
        FloodSign::with_rule(FLOOD_WINDOW, FLOOD_FRAMES)
    }
}

impl FloodSign {
    /// A sign raised by `frames` within `window`.
    pub fn with_rule(window: Duration, frames: usize) -> FloodSign {
        FloodSign {
            inner: Arc::new(Mutex::new(Sign {
                flow: Flow::new(window, frames),
                seen: None,
                counters: None,
            })),
        }
    }

    fn sign(&self) -> std::sync::MutexGuard<'_, Sign> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts on `counters` from now on.
    pub fn count_on(&self, counters: FloodCounters) {
        self.sign().counters = Some(counters);
    }

    /// Counts a frame received now.
    pub fn saw(&self) {
        let mut sign = self.sign();
        sign.flow.saw(1);
        if sign.flow.flowing() {
            let now = Instant::now();
            if !sign.up_at(now)
                && let Some(counters) = &sign.counters
            {
                counters.floods.inc();
            }
            sign.seen = Some(now);
        }
    }

    /// Whether a flood was seen within the last [`LINGER`].
    pub fn up(&self) -> bool {
        self.sign().up_at(Instant::now())
    }

    /// Whether a write that ended now holds back the next one: the sign is up. Such a write is counted.
    pub fn holds_back(&self) -> bool {
        let sign = self.sign();
        let up = sign.up_at(Instant::now());
        if up && let Some(counters) = &sign.counters {
            counters.writes_spaced.inc();
        }
        up
    }
}

impl Sign {
    fn up_at(&self, now: Instant) -> bool {
        self.seen.is_some_and(|at| now.saturating_duration_since(at) < LINGER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flood_sign_is_up_in_a_flood_until_a_linger_without_one_and_not_at_a_person_s_pace() {
        // 200 changes a second and their echoes, read in bursts of 8 every 20 ms: no flood.
        let sign = FloodSign::default();
        let looking = sign.clone();
        for _ in 0..25 {
            (0..8).for_each(|_| sign.saw());
            assert!(!looking.up(), "400 frames a second raised the sign");
            std::thread::sleep(Duration::from_millis(20));
        }
        // A flood's pace: 13 frames every 10 ms.
        let sign = FloodSign::default();
        let looking = sign.clone();
        for _ in 0..30 {
            (0..13).for_each(|_| sign.saw());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(looking.up(), "1,300 frames a second did not raise the sign");
        std::thread::sleep(LINGER + Duration::from_millis(20));
        assert!(!looking.up(), "still up a linger after the last frame");
    }

    #[test]
    fn a_flood_is_counted_once_however_many_frames_it_brings_and_again_after_a_linger() {
        let sign = FloodSign::default();
        let counters = FloodCounters {
            floods: IntCounter::new("floods", "floods").expect("a valid name"),
            writes_spaced: IntCounter::new("spaced", "spaced").expect("a valid name"),
        };
        sign.count_on(counters.clone());
        // All at once, so that a stalled test thread cannot make one flood look like two.
        let flood = |sign: &FloodSign| (0..400).for_each(|_| sign.saw());
        flood(&sign);
        assert_eq!(counters.floods.get(), 1, "one flood of 400 frames");
        std::thread::sleep(LINGER + Duration::from_millis(20));
        flood(&sign);
        assert_eq!(counters.floods.get(), 2, "a second flood after a linger without one");
        assert!(sign.holds_back(), "a write in a flood did not hold back the next");
        assert_eq!(counters.writes_spaced.get(), 1);
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
