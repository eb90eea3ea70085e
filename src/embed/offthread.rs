//! Runs a blocking call (an HTTP request) on its own thread while the calling thread waits in
//! short slices, so a PostgreSQL backend can keep answering cancel requests and
//! statement_timeout. The worker never touches PostgreSQL; if the caller gives up (an interrupt
//! raises an error out of `tick`, or the deadline passes), the worker is left to finish on its
//! own and its result is dropped.

use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the caller waits between two `tick`s.
pub const SLICE: Duration = Duration::from_millis(20);

/// Runs `work` on a new thread and returns its result, or `None` when `deadline` passes first.
/// `tick` runs between slices of waiting (the backend checks for interrupts there).
pub fn run<T, W, K>(work: W, deadline: Instant, mut tick: K) -> Option<T>
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
        return None;
    }
    loop {
        tick();
        let now = Instant::now();
        if now >= deadline {
            return rx.try_recv().ok();
        }
        match rx.recv_timeout(SLICE.min(deadline - now)) {
            Ok(v) => return Some(v),
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// Runs `f` with every signal blocked on this thread, so threads it starts inherit a mask that
/// leaves the process's signals (in PostgreSQL: cancel, terminate, latch wake-ups) to the
/// calling thread.
pub fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigfillset/pthread_sigmask on stack-allocated sets; the old mask is restored.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let out = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_result() {
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(run(|| 42, deadline, || {}), Some(42));
    }

    #[test]
    fn gives_up_at_the_deadline_and_ticks_meanwhile() {
        let start = Instant::now();
        let mut ticks = 0;
        let r = run(
            || std::thread::sleep(Duration::from_secs(3)),
            start + Duration::from_millis(200),
            || ticks += 1,
        );
        assert_eq!(r, None);
        assert!(
            start.elapsed() < Duration::from_millis(600),
            "{:?}",
            start.elapsed()
        );
        assert!(ticks >= 5, "ticked {ticks} times");
    }
}
