//! The serving threads' scheduling (`--realtime-priority`): ordinary
//! (`SCHED_OTHER`) unless asked; given a priority, the runtime's workers
//! and the store's writer run under `SCHED_FIFO` at it and the guests'
//! epoch ticker one above, so a ready serving thread takes a core at once,
//! ahead of every ordinary thread on the machine.
//!
//! Why: on a machine the server shares (the bench's load generator, a
//! neighbour), a worker that has used its slice waits for another
//! thread's whole slice (~1.4 ms here, traced), whatever it was doing. A crashed
//! guest's restart costs a p99 of 200–331 µs of its own CPU but read
//! 2.5–4.8 ms at the p99, that wait (bench/README.md, faults); under
//! `SCHED_FIFO` the wait was gone (the faults scenario runs both).
//!
//! What it costs (ARCHITECTURE.md, "Real-time priority"):
//! - It needs CAP_SYS_NICE or an RLIMIT_RTPRIO above the priority.
//!   [`configure`] tries it first, so a server without the permission
//!   refuses to start instead of running ordinary unnoticed.
//! - Ordinary threads get what the serving threads leave (sled's own I/O
//!   threads among them, which the writer's flushes wait on); the kernel
//!   keeps a share for them (`sched_rt_runtime_us`, 95% by default) when
//!   the server runs at its limit. It is for a machine with headroom.
//! - Threads of equal `SCHED_FIFO` priority do not take turns: a busy
//!   worker keeps its core until it parks. The epoch ticker, one above,
//!   still interrupts a guest that loops.
//! - Only threads that park as runtime workers raise themselves
//!   ([`follow`] from tokio's `on_thread_unpark`), and a raised thread
//!   raises with `SCHED_RESET_ON_FORK`: a thread it starts (tokio's
//!   blocking pool grows from the thread that calls `spawn_blocking`; sled
//!   grows its pool from the thread that queues the work) starts
//!   ordinary. So guests compile and the canary runs at ordinary
//!   scheduling, and never hold a core against the serving threads.
//!
//! A process follows one setting: a thread once raised stays raised.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

/// The highest priority `--realtime-priority` takes: the ticker runs one
/// above, and 99 is the highest there is.
pub const MAX_PRIORITY: u8 = 98;

/// The configured priority; 0: ordinary.
static PRIORITY: AtomicU8 = AtomicU8::new(0);

/// Which of the server's threads raises itself: the ticker one above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A runtime worker or the store's writer.
    Serving,
    /// The guests' epoch ticker: it must preempt a worker running a guest
    /// that loops, to interrupt it.
    Ticker,
}

/// Why the serving threads cannot have the priority asked for.
#[derive(Debug, thiserror::Error)]
pub enum RealtimeError {
    #[error(
        "--realtime-priority {priority}: SCHED_FIFO at {highest} was refused ({reason}); it needs CAP_SYS_NICE or an RLIMIT_RTPRIO of at least {highest} (and, under cgroup v1 with real-time group scheduling, a real-time budget for the server's group)"
    )]
    Refused { priority: u8, highest: u8, reason: String },
}

/// Set the priority the serving threads follow (0: ordinary; its bound is
/// checked with the other settings, `ServeConfig::validate`). A priority is
/// tried first, at the ticker's, on a thread of its own: refused (the
/// kernel's bound included), it is an error now, not a warning on every
/// thread later.
pub fn configure(priority: u8) -> Result<(), RealtimeError> {
    if priority > 0 {
        let highest = level(priority, Role::Ticker);
        let tried = std::thread::spawn(move || raise(highest))
            .join()
            .unwrap_or_else(|_| Err("the probing thread panicked".into()));
        tried.map_err(|reason| RealtimeError::Refused {
            priority,
            highest,
            reason,
        })?;
    }
    PRIORITY.store(priority, Ordering::Relaxed);
    Ok(())
}

/// Raise the calling thread to the configured priority for its role, if it
/// was not yet: the runtime's workers call it as they unpark (tokio's
/// `on_thread_unpark`: an atomic load and a thread-local read once raised),
/// the store's writer and the epoch ticker as they start. A refusal (the
/// permission withdrawn since [`configure`]) is logged once per thread.
pub fn follow(role: Role) {
    thread_local! {
        /// The priority this thread last tried (0: none).
        static TRIED: Cell<u8> = const { Cell::new(0) };
    }
    let wanted = PRIORITY.load(Ordering::Relaxed);
    if wanted == 0 || TRIED.get() == wanted {
        return;
    }
    TRIED.set(wanted);
    let level = level(wanted, role);
    if let Err(reason) = raise(level) {
        tracing::warn!(priority = level, ?role, %reason, "this thread stays under ordinary scheduling");
    }
}

/// The `SCHED_FIFO` priority of a role's threads.
fn level(priority: u8, role: Role) -> u8 {
    match role {
        Role::Serving => priority,
        Role::Ticker => priority.saturating_add(1),
    }
}

/// Put the calling thread under `SCHED_FIFO` at `level`, with
/// `SCHED_RESET_ON_FORK`: the threads it starts start ordinary.
#[allow(unsafe_code)]
fn raise(level: u8) -> Result<(), String> {
    let param = libc::sched_param {
        sched_priority: i32::from(level),
    };
    // SAFETY: `param` is a valid sched_param for the call's duration; pid
    // 0 is the calling thread.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ticker_runs_one_above_the_serving_threads() {
        assert_eq!(level(1, Role::Serving), 1);
        assert_eq!(level(1, Role::Ticker), 2);
        assert_eq!(level(MAX_PRIORITY, Role::Ticker), 99);
    }

    /// The calling thread's policy, flags included.
    #[allow(unsafe_code)]
    fn policy() -> i32 {
        // SAFETY: no pointers; pid 0 is the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    /// Needs CAP_SYS_NICE (CI runs as root): without, it fails, not skips.
    #[test]
    fn a_raised_thread_is_fifo_and_the_threads_it_starts_are_ordinary() {
        let (raised, child) = std::thread::spawn(|| {
            raise(1).expect("SCHED_FIFO for the test's thread (CAP_SYS_NICE)");
            let raised = policy();
            (raised, std::thread::spawn(policy).join().expect("the child thread"))
        })
        .join()
        .expect("the raised thread");
        assert_eq!(raised, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK);
        assert_eq!(
            child,
            libc::SCHED_OTHER,
            "a compile started from a worker would hold a core"
        );
    }

    #[test]
    fn a_priority_above_the_highest_is_refused_and_not_followed() {
        let e = configure(MAX_PRIORITY + 1).expect_err("99 is the ticker's, above the highest");
        assert!(
            matches!(
                e,
                RealtimeError::Refused {
                    priority: 99,
                    highest: 100,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(PRIORITY.load(Ordering::Relaxed), 0);
    }
}
