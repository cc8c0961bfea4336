//! Gives the memory freed after a burst back to the system.
//!
//! glibc's allocator keeps what a burst freed (a backlog of jobs, a page of journal events for the admin
//! API) in its per-thread arenas, fragmented, for the life of the process: after a 1,000 changes/s phase
//! the bridge stayed at about three times its working memory while idle, and `malloc_trim` in the idle
//! process gave a third of its anonymous memory back at once (docs/BENCHMARKS.md, "Sixth session"). No
//! bound on a buffer can fix that, as the memory is already free; trimming on a slow tick does, for a
//! few milliseconds of CPU per tick. Elsewhere (musl, other systems) there is nothing to do.

use std::time::Duration;

use crate::reconcile::Periodic;
use crate::reconcile::error::ReconcileError;

/// How often freed memory is handed back: a burst's memory is returned within this long. Under a backlog
/// the free memory grew by about 1 MiB a second between trims 10 s apart, and the peak came just before
/// one (docs/BENCHMARKS.md, "Seventeenth session"). A trim costs about half a millisecond with thousands
/// of free holes in the heap, a few microseconds with none.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(2);

/// Hands the allocator's free memory back to the system; true when some was returned.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks glibc's own free lists, under each arena's lock; it touches no
        // memory in use and may be called from any thread at any time.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Caps the allocator's arenas at two; call before any thread starts. glibc gives threads arenas of their
/// own, up to eight per core, and each keeps its own free and fragmented memory: after a burst on a
/// loaded machine the idle bridge held up to twice what it held without the load
/// (tests/process/memory_release.rs). Two are plenty for a process whose threads are few (a worker per
/// core, at most 4 blocking threads) and whose allocations are short. Elsewhere a no-op.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a parameter of glibc's allocator; called before other threads exist.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Trims every [`TRIM_INTERVAL`], on a blocking thread (a trim walks every arena).
pub struct Trimmer;

impl Periodic for Trimmer {
    const NAME: &'static str = "memory trim";

    fn interval(&self) -> Duration {
        TRIM_INTERVAL
    }

    async fn tick(&mut self) -> Result<(), ReconcileError> {
        if let Err(e) = tokio::task::spawn_blocking(release_free_memory).await {
            tracing::debug!(error = %e, "memory trim did not run");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_memory_is_handed_back() {
        // Many small blocks freed all but one in 64: glibc keeps the holes; a trim returns their pages.
        let mut blocks: Vec<Vec<u8>> = (0..200_000).map(|i| vec![i as u8; 512]).collect();
        let kept: Vec<Vec<u8>> = blocks.drain(..).step_by(64).collect();
        let released = release_free_memory();
        assert_eq!(
            released,
            cfg!(all(target_os = "linux", target_env = "gnu")),
            "{} blocks kept",
            kept.len()
        );
    }
}
