//! Runs a blocking call (an HTTP request) on its own thread while the calling thread waits in
//! short slices, so a PostgreSQL backend can keep answering cancel requests and
//! statement_timeout. The worker never touches PostgreSQL; if the caller gives up (an interrupt
//! raises an error out of `tick`, or the deadline passes), the worker is left to finish on its
//! own and its result is dropped.

use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the caller waits between two `tick`s.
pub const SLICE: Duration = Duration::from_millis(20);

/// Why `run` has no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoResult {
    /// The deadline passed first.
    Deadline,
    /// The thread could not be started, or ended without a result (it panicked).
    ThreadFailed,
}

/// Runs `work` on a new thread and returns its result. `tick` runs between slices of waiting
/// (the backend checks for interrupts there).
pub fn run<T, W, K>(work: W, deadline: Instant, mut tick: K) -> Result<T, NoResult>
where
    T: Send + 'static,
    W: FnOnce() -> T + Send + 'static,
    K: FnMut(),
{
    let (tx, rx) = mpsc::sync_channel(1);
    let spawned = with_signals_blocked(|| {
        std::thread::Builder::new()
            .name("memori-embed".into())
            .spawn(move || {
                let _ = tx.send(work());
            })
    });
    if spawned.is_err() {
        return Err(NoResult::ThreadFailed);
    }
    loop {
        tick();
        let now = Instant::now();
        if now >= deadline {
            return rx.try_recv().map_err(|_| NoResult::Deadline);
        }
        match rx.recv_timeout(SLICE.min(deadline - now)) {
            Ok(v) => return Ok(v),
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(NoResult::ThreadFailed),
        }
    }
}

/// Runs `f` with every signal blocked on this thread, so threads it starts inherit a mask that
/// leaves the process's signals (in PostgreSQL: cancel, terminate, latch wake-ups) to the
/// calling thread.
pub fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    /// Restores the saved mask when dropped, also if `f` panics.
    struct Restore(libc::sigset_t);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: restores a mask saved by pthread_sigmask below.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
        }
    }
    // SAFETY: sigfillset/pthread_sigmask on stack-allocated sets.
    let _restore = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        Restore(old)
    };
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_result() {
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(run(|| 42, deadline, || {}), Ok(42));
    }

    #[test]
    fn a_thread_that_panics_is_not_a_timeout() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let r: Result<(), _> = run(|| panic!("boom"), deadline, || {});
        assert_eq!(r, Err(NoResult::ThreadFailed));
    }

    #[test]
    fn gives_up_at_the_deadline_and_ticks_meanwhile() {
        let start = Instant::now();
        let mut ticks = 0;
        let work = Duration::from_secs(3);
        let r = run(
            move || std::thread::sleep(work),
            start + Duration::from_millis(200),
            || ticks += 1,
        );
        assert_eq!(r, Err(NoResult::Deadline));
        // Given up long before the work would have ended (a ratio to the work, not a machine's
        // speed: the deadline is 200 ms of the work's 3 s).
        let took = start.elapsed();
        assert!(took * 2 < work, "{took:?}");
        assert!(ticks >= 5, "ticked {ticks} times");
    }
}
