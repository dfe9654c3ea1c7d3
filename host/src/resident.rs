//! Allocations that live as long as their match: a scope the binary's
//! allocator honours by taking them from a heap of their own.
//!
//! A match allocates its few permanent records (its worker, its task, its
//! mailbox, its fan-out, its state cell) once, when it first appears, in
//! the middle of a feed's burst. Allocated beside the burst's transient
//! buffers, each pins a partly empty allocator page after the burst is
//! freed, and a hibernated match then costs the page space around its
//! records as well as the records. Inside [`scope`], the binary's
//! allocator (`main.rs`'s `allocator`) takes allocations from a separate
//! heap that holds only such records, packed together; freeing works the
//! same from anywhere. A block that grows (is reallocated) moves to the
//! default heap: a record that grows was not a fixed-size one. The
//! library itself allocates normally: with another global allocator
//! (tests, the heap profiler) the scope changes nothing.
//!
//! A flag per thread, not an argument: tokio allocates a task when it is
//! spawned, on the spawning thread, with no allocator to pass.
//!
//! The other way round, [`note_given_back`] counts the times a match gave
//! memory back; the binary's runtime threads collect their heaps when
//! they park only if it moved.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` with this thread's allocations marked as resident (nested
/// scopes are fine; the mark is restored even if `f` panics).
pub fn scope<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ACTIVE.with(|a| a.set(self.0));
        }
    }
    let _restore = Restore(ACTIVE.with(|a| a.replace(true)));
    f()
}

/// Whether this thread is inside a [`scope`] (the allocator asks, on
/// every allocation: a flag with no destructor, read without allocating).
#[inline]
pub fn active() -> bool {
    ACTIVE.try_with(Cell::get).unwrap_or(false)
}

/// How many times a match has given memory back (fell asleep, in
/// `worker`'s one transition function, or dropped its stored base).
static GIVEN_BACK: AtomicU64 = AtomicU64::new(0);

/// A match gave memory back: the binary's runtime threads collect their
/// heaps when they next park (and only then: a collection visits every
/// page a thread owns).
pub fn note_given_back() {
    GIVEN_BACK.fetch_add(1, Ordering::Relaxed);
}

/// The count [`note_given_back`] moves.
pub fn given_back() -> u64 {
    GIVEN_BACK.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_holds_inside_a_scope_and_is_restored_after_even_a_panic() {
        assert!(!active());
        scope(|| {
            assert!(active());
            scope(|| assert!(active()));
            assert!(active(), "a nested scope leaves the outer one marked");
        });
        assert!(!active());
        let panicked = std::panic::catch_unwind(|| scope(|| panic!("inside")));
        assert!(panicked.is_err());
        assert!(!active(), "a panic inside restores the mark");
    }
}
