//! Napping: a live match idle for `nap_after` gives its Wasm instance back
//! (the pool slot decommits its linear memory) and keeps everything else —
//! seq and epoch, subscribers, the resume ring, the snapshot frame, names,
//! the recovery base and tail — plus a checkpoint of the whole state in
//! memory ([`super::checkpoint`]). Its next command (but an inspection)
//! restores that checkpoint into a fresh instance before anything else.
//!
//! Why: a live guest's linear memory keeps every page it ever touched
//! (its allocator cannot give pages back, and Wasm memory does not
//! shrink): 57 KB for most matches of the simulator and up to ~400 KB
//! for some, against a saved state of ~3 KB. Between two updates of a
//! live match, seconds apart in a real feed, that memory serves nothing.
//! The cost is a restore per event that comes after a nap, measured on
//! the real guest at 8–15 µs to take a spare instance and 28–50 µs to
//! restore a 2.9 KB state, against 42–86 µs to apply an odds change; a
//! burst within `nap_after` pays it once.
//!
//! It is the recovery path without a failure: the same rebuild a restart
//! does from the checkpoint ([`super::supervise`]), with nothing to
//! replay since the checkpoint is taken now if the last events are not
//! covered. A nap that cannot save (a failing `save-state`) does not
//! happen. Only `Live` naps: a match on probation keeps its instance until
//! its first event decides; a quarantined or healing one is not live.
//! Hibernation is the longer sleep that also gives the buffers back and
//! the base to the store; a napping match hibernates straight from its
//! checkpoint, without waking.

use std::time::Instant;

use super::Worker;
use super::lifecycle::{Base, Lifecycle};

impl Worker {
    /// Give the instance back if the whole state is in memory to restore.
    pub(super) fn nap(&mut self) {
        if !matches!(self.life, Lifecycle::Live(_)) {
            return;
        }
        if !self.tail.events.is_empty()
            && self.tail.whole_checkpoint(self.version.version()).is_none()
            && !self.checkpoint_now()
        {
            return;
        }
        self.enter(Lifecycle::Napping);
    }

    /// Restore a napping match's instance from its checkpoint (or its base
    /// when the tail is empty); a failure leaves it `Restarting`, which
    /// the next event rebuilds under supervision.
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

    /// While napping, the state a snapshot saves: the checkpoint, which
    /// covers the whole tail.
    pub(super) fn napping_state(&self) -> Option<&Base> {
        if matches!(self.life, Lifecycle::Napping) {
            self.tail.whole_checkpoint(self.version.version())
        } else {
            None
        }
    }
}
