//! Puts the bridge behind PocketBase in the CPU scheduler, where an operator asks for it (`process.nice`).
//!
//! Where the bridge shares cores with PocketBase (one host, one CPU cgroup), a burst of writes makes them
//! compete, and at equal priority the bridge's share held PocketBase to about 0.7x of the writes a second
//! it takes without hooks. At nice 10 it took 0.75-0.78x in the same floods: the bridge still journaled
//! every frame as it came, and spent less CPU per frame, running later with more to take up at once. The
//! price is a few milliseconds per change whenever the cores are busy, which is why it is not the default
//! (docs/BENCHMARKS.md, "Thirty-sixth session"). A container is a CPU cgroup of its own, inside which a
//! nice value only orders the container's threads; there the container's CPU weight does this
//! (docs/DEPLOY.md).

/// Lowers the process's CPU priority to `nice` unless it already runs at least that low; returns the nice
/// value in force, or `None` where threads have no nice value of their own (outside Linux). Call it before
/// any thread starts: Linux keeps a nice value per thread, and a new thread takes its creator's.
pub fn lower_to(nice: i32) -> std::io::Result<Option<i32>> {
    #[cfg(target_os = "linux")]
    {
        let current = current()?;
        if nice <= current {
            return Ok(Some(current));
        }
        // SAFETY: setpriority only changes the calling thread's scheduling weight (who = 0).
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Some(nice))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = nice;
        Ok(None)
    }
}

/// The calling thread's nice value.
#[cfg(target_os = "linux")]
fn current() -> std::io::Result<i32> {
    // getpriority may return -1 as a value; only errno tells an error from it.
    // SAFETY: __errno_location points at this thread's errno; getpriority reads the caller's (who = 0).
    let value = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, 0)
    };
    let err = std::io::Error::last_os_error();
    if value == -1 && err.raw_os_error() != Some(0) {
        return Err(err);
    }
    Ok(value)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_priority_is_lowered_and_never_raised() {
        // In a thread of its own: the nice value is per thread, and the test harness's other tests share
        // the process.
        std::thread::spawn(|| {
            let start = current().expect("own nice value");
            let target = (start + 3).min(19);
            assert_eq!(lower_to(target).expect("lowered"), Some(target));
            assert_eq!(current().expect("nice value"), target);
            // Asking for a higher priority than the thread has leaves it as it is (raising needs a privilege).
            assert_eq!(lower_to(start).expect("left alone"), Some(target));
            assert_eq!(current().expect("nice value"), target);
        })
        .join()
        .expect("test thread");
    }
}
