//! The in-memory checkpoint: a saved guest state partway along the
//! recovery tail, so that a restart after a failure replays only the
//! events after it.
//!
//! The recovery base is the last snapshot, taken every `snapshot_every`
//! events, every `snapshot_interval`, or when the tail reaches
//! [`super::RECOVERY_TAIL_BYTES`], and queued to the store. Replaying the
//! tail after it costs one guest apply per event (42–86 µs for the
//! simulator's odds changes on the real guest, as this VM's speed varied;
//! restoring a saved state of 2.9 KB costs 28–50 µs, saving it 9–17 µs),
//! which is what a crashed match
//! used to take to serve again. A checkpoint is the state saved again in
//! memory only, when the worker is idle (its mailbox empty after a
//! command), once the apply time since the last checkpoint (or base) is
//! [`SAVE_RATIO`] times the last save's cost, so saving never costs more
//! than a quarter of applying (a save's cost is taken from the last ones,
//! an outlier damped: [`save_cost`]). For the simulator's odds changes
//! that is after every event, so a restart restores the checkpoint and
//! replays nothing when the match keeps up with its feed. Under a backlog
//! no checkpoint is taken, so a restart then replays what came since the
//! match was last idle (at most the tail).
//! The cost, measured (`touchline-bench --only pipeline,faults`, binaries
//! alternated): the pipeline at 1,000 matches used 12.6–13.0 CPU-s without
//! checkpoints, 13.4–16.1 with one after every due event, 13.5–14.0 with
//! them in idle time (there, each match's mailbox empties often); the
//! restart's p50 went from 414 µs to 87–108 µs with a checkpoint every
//! 50 µs of applying. Without that fixed budget (here, 4 saves' worth),
//! a restart replayed 0.14–0.18 events on average against 0.16–0.20
//! with it (`--only faults`, alternated, 3 runs each, a slow day when an
//! apply took longer than 50 µs anyway): the same, where applies are
//! slow; where they are fast (42 µs) the budget left one event uncovered.
//!
//! The checkpoint lives in the [`Tail`] and goes with it: a snapshot (a
//! nap takes one), a switch or hibernating clears the tail and the
//! checkpoint alike. Only
//! the version that saved it restores it (any other restarts from the base).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Worker;
use super::lifecycle::Base;
use super::persist::Tail;
use crate::sandbox::Saved;

/// A checkpoint is taken once the apply time since the last one is at
/// least this many times the last save's cost.
pub const SAVE_RATIO: u32 = 4;

/// A state saved in memory after the first `covers` events of the tail.
#[derive(Debug)]
pub(super) struct Checkpoint {
    saved: Base,
    covers: usize,
}

/// Whether the apply time not yet covered by a checkpoint calls for one,
/// given what the last save cost.
pub(super) fn due(unsaved: Duration, last_save: Duration) -> bool {
    !unsaved.is_zero() && unsaved >= last_save * SAVE_RATIO
}

/// The cost of a save to budget with, given the previous one and what
/// this save took (wall time): a save the thread was preempted in counts
/// at most twice the previous, so one outlier cannot stop checkpoints for
/// the rest of the tail, while a state that really grew is caught up with
/// in a few saves.
pub(super) fn save_cost(previous: Duration, took: Duration) -> Duration {
    if previous.is_zero() {
        took
    } else {
        took.min(previous * 2)
    }
}

/// What a restart rebuilds from: a saved state (none: the empty model)
/// and the events to apply after it.
pub(super) struct Start<'a> {
    pub saved: Option<Saved<'a>>,
    pub events: &'a [Bytes],
}

impl Tail {
    /// The checkpoint if `guest` saved it, with the events after it.
    pub fn checkpoint_start(&self, guest: &str) -> Option<Start<'_>> {
        let c = self.checkpoint.as_ref().filter(|c| &*c.saved.guest == guest)?;
        Some(Start {
            saved: Some(c.saved.saved()),
            events: self.events.get(c.covers..)?,
        })
    }

    /// Bytes held by the checkpoint.
    pub fn checkpoint_bytes(&self) -> usize {
        self.checkpoint.as_ref().map_or(0, |c| c.saved.state.len())
    }
}

impl Worker {
    /// `state`, saved by the version this match runs.
    pub(super) fn own_base(&self, state: Vec<u8>) -> Base {
        Base {
            state,
            guest: self.version.version_arc(),
            state_version: self.version.state_version(),
        }
    }

    /// An event was applied (`took`: the guest's time on it): the replay a
    /// restart would do grew by that much.
    pub(super) fn after_apply(&mut self, took: Duration) {
        self.tail.unsaved += took;
    }

    /// The mailbox is empty: save the state in memory if the replay a
    /// restart would do calls for it.
    pub(super) fn checkpoint_if_due(&mut self) {
        if self.tail.events.is_empty() || !due(self.tail.unsaved, self.tail.last_save) {
            return;
        }
        self.checkpoint_now();
    }

    /// Save the state in memory now; whether it was saved.
    pub(super) fn checkpoint_now(&mut self) -> bool {
        let Some(instance) = self.life.applier() else {
            return false;
        };
        let started = Instant::now();
        let saved = instance.save_state();
        self.tail.last_save = save_cost(self.tail.last_save, started.elapsed());
        self.tail.unsaved = Duration::ZERO;
        match saved {
            Ok(state) => {
                self.tail.checkpoint = Some(Box::new(Checkpoint {
                    saved: self.own_base(state),
                    covers: self.tail.events.len(),
                }));
                true
            }
            // Not a failure of the match: the restart replays from the
            // previous checkpoint or the base.
            Err(f) => {
                tracing::warn!(match_id = %self.id, error = %f, "in-memory checkpoint failed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_once_four_saves_worth_of_applying_is_uncovered() {
        let us = Duration::from_micros;
        assert!(!due(Duration::ZERO, Duration::ZERO), "nothing applied");
        assert!(due(us(1), Duration::ZERO), "no save yet");
        assert!(due(us(4), us(1)));
        assert!(!due(us(3), us(1)));
        // A save of 20 µs: not before 80 µs of applying.
        assert!(!due(us(79), us(20)));
        assert!(due(us(80), us(20)));
    }

    #[test]
    fn one_slow_save_counts_at_most_double_and_a_grown_state_is_caught_up_with() {
        let us = Duration::from_micros;
        assert_eq!(save_cost(Duration::ZERO, us(13)), us(13));
        assert_eq!(save_cost(us(13), us(2_000)), us(26), "preempted once");
        assert_eq!(save_cost(us(26), us(12)), us(12));
        let mut c = us(10);
        for _ in 0..7 {
            c = save_cost(c, us(1_000));
        }
        assert_eq!(c, us(1_000));
    }
}
