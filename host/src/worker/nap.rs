//! Napping: a live match idle for `nap_after` gives its Wasm instance back
//! (the pool slot decommits its linear memory) and, when it has a journal,
//! its resume ring, and keeps everything else — seq and epoch,
//! subscribers, the snapshot frame while it is current, names. A client
//! resuming from a napping match gets the updates it missed rebuilt from
//! the journal ([`super::regenerate`]): the same updates, the last one
//! naming everything in the state, as a hibernated match's clients do. A
//! match with no journal (a cluster's workers, `--no-durability`) keeps
//! its ring, the only place its missed updates are.
//! Its state goes into a snapshot first if events came since the last one
//! ([`Worker::snapshot`]: the recovery base, queued to the store), so a
//! napping match holds its whole state once, as its base, with an empty
//! recovery tail and no checkpoint. Its next command (but an inspection)
//! restores that base into a fresh instance before anything else.
//!
//! Why: a live guest's linear memory keeps every page it ever touched
//! (its allocator cannot give pages back, and Wasm memory does not
//! shrink): for the simulator's 40-market matches 13 pages of its own
//! and the 9 pages of the guest's shared data image (`guest/src/heap.rs`),
//! plus ~10 KB of wasmtime's per-instance state on the host, against a
//! saved state of ~3 KB. Between two updates of a
//! live match, seconds apart in a real feed, that memory serves nothing;
//! neither do the tail's events (up to [`super::RECOVERY_TAIL_BYTES`]) and
//! a checkpoint beside a base, which the snapshot replaces.
//! The cost is a restore per event that comes after a nap, measured on
//! the real guest at 8–15 µs to take a spare instance and 28–50 µs to
//! restore a 2.9 KB state, against 42–86 µs to apply an odds change; a
//! burst within `nap_after` pays it once. A match whose commands come
//! further apart than `nap_after` (twice in a row) naps again after
//! [`NAP_AGAIN_AFTER`] instead: it pays the restore either way. The
//! snapshot is the one going clean takes (`clean_after`, by default
//! sooner than a nap) a moment later anyway: by default a match naps with
//! its tail already empty, but for a sparse one, which takes it itself.
//!
//! It is the recovery path without a failure: the same rebuild a restart
//! does from the base ([`super::supervise`]), with nothing to replay. A
//! nap whose snapshot cannot be saved (a failing `save-state`) does not
//! happen. Only `Live` naps: a match on probation keeps its instance until
//! its first event decides; a quarantined or healing one is not live.
//! Hibernation is the longer sleep that also gives the buffers back and
//! the base to the store; a napping match hibernates without waking, as
//! its base is its whole state already.

use std::time::{Duration, Instant};

use super::Worker;
use super::lifecycle::Lifecycle;

/// How soon a sparse match naps again: one whose last two commands (but
/// inspections) each came after an idle spell of at least `nap_after`, so
/// that it napped before each, or would have if it was live. Such a match
/// pays the restore on its next command anyway if it stays as sparse, so
/// holding its instance `nap_after` long serves nothing. One long spell is
/// not enough: a match whose gaps are random around a mean below
/// `nap_after` has one now and then, and napping sooner after it would
/// cost a restore the full delay would have saved (for gaps spread
/// exponentially around 0.7 s, the pipeline scenario's mean: 5.7% of
/// events, against 0.3% for two in a row). A command sooner than
/// `nap_after` after the last brings the full delay back, so a burst after
/// a quiet spell pays one extra restore at most. Measured on 1,000 live
/// matches fed one 40-market odds change a second each, `--nap-after-ms
/// 500` (a feeder of the density scenario's rounds, one run each): the
/// RSS grew 79 KB per live match from 500 to 1,000 with every match
/// holding its instance 500 ms after each update, 53 KB holding it 250 ms,
/// 38 KB holding it 100 ms, for the same server CPU (10.4, 10.0 and 9.8 s:
/// every update came after a nap in all three); 160 KB and 6.1 s with no
/// nap at all (`--nap-after-ms 2000`). Then, the resume ring released on
/// napping, 50 ms against 100 ms, alternated, 2 runs each: 75.6 / 75.5 MB
/// against 82.5 / 80.4 MB of RSS at 1,000 live matches, 5.47 / 5.91 s
/// against 5.47 / 5.96 s of server CPU; the density scenario 34.6 / 29.5
/// KB of RSS per live match against 37.2 / 38.8 KB. The hold serves a
/// command that follows within it, such as the feed's next message on the
/// match in the same burst; one 50–100 ms later pays a restore.
pub const NAP_AGAIN_AFTER: Duration = Duration::from_millis(50);

impl Worker {
    /// A command (but an inspection) arrived at `now`: count it towards
    /// the sparse rule if it came after an idle spell of `nap_after`.
    pub(super) fn note_command(&mut self, now: tokio::time::Instant) {
        self.long_gaps = match self.env.nap_after {
            Some(d) if now - self.last_command >= d => (self.long_gaps + 1).min(2),
            _ => 0,
        };
        self.last_command = now;
    }

    /// How long after its last command this match naps: `nap_after`, or
    /// [`NAP_AGAIN_AFTER`] if its last two commands each came after an
    /// idle spell of at least `nap_after`.
    pub(super) fn nap_delay(&self, nap_after: Duration) -> Duration {
        if self.long_gaps >= 2 {
            nap_after.min(NAP_AGAIN_AFTER)
        } else {
            nap_after
        }
    }

    /// Give the instance back, its state saved as the base first.
    pub(super) fn nap(&mut self) {
        if !matches!(self.life, Lifecycle::Live(_)) {
            return;
        }
        if !self.tail.events.is_empty() {
            self.snapshot();
            if !self.tail.events.is_empty() {
                // The state could not be saved: stay live, and try again
                // a whole `nap_after` from now, not at once (the timer's
                // deadline is past).
                self.last_command = tokio::time::Instant::now();
                self.long_gaps = 0;
                return;
            }
        }
        self.enter(Lifecycle::Napping);
        // Frames kept only to be quick go: a resume rebuilds them from the
        // journal. Without one the ring is all a resume has.
        if self.journal().is_some() {
            self.recent.release();
        }
        self.regenerated = None;
    }

    /// Restore a napping match's instance from its base; a failure leaves
    /// it `Restarting`, which the next event rebuilds under supervision.
    pub(super) fn wake_from_nap(&mut self) {
        if !matches!(self.life, Lifecycle::Napping) {
            return;
        }
        let started = Instant::now();
        if let Err(f) = self.recover() {
            tracing::warn!(match_id = %self.id, error = %f, "restoring a napping match failed");
            self.enter(Lifecycle::Restarting);
        }
        self.env
            .metrics
            .nap_wake_seconds
            .observe(started.elapsed().as_secs_f64());
    }
}
