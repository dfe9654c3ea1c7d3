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
//! memory only, when the worker is idle or nearly (at most [`QUEUED_MAX`]
//! command left in its mailbox after one), once the apply time since the
//! last checkpoint (or base) is [`SAVE_RATIO`] times the last save's
//! cost, so saving never costs more than half of applying (a save's cost
//! is taken from the last ones, an outlier damped: [`save_cost`]). For the
//! simulator's odds changes that is after every event, so a restart
//! restores the checkpoint and replays nothing when the match keeps up
//! with its feed. Under a backlog no checkpoint is taken, so a restart
//! then replays what came since the match was last (nearly) idle (at most
//! the tail): the match's own backlog (more in its mailbox) or the
//! server's (its feed reader's last read filled the whole buffer, more
//! waiting: [`FeedBehind`], shown as `touchline_feed_behind`; the feed
//! reader of this node, not a cluster's event stream).
//!
//! Why a ratio of 2 and one command queued: the restart's p99. With a
//! ratio of 4 and checkpoints only in an empty mailbox, 65 of the faults
//! bench's 400 restarts replayed one event, and its 8 slowest were all
//! among them (the replayed event alone 92–123 µs of their 174–199 µs,
//! with `--realtime-priority`; a build logging each phase, one run).
//! - A ratio of 4 left an odds change uncovered whenever its apply took
//!   less than four saves (the 42–86 µs applies and 9–17 µs saves above).
//! - An empty mailbox left the event before a crashing one uncovered when
//!   both came together (the bench's feed writes what is due every 2 ms
//!   in one go; a feed that sends two messages for a match at once does
//!   the same). One command waiting is a
//!   burst, not a backlog; a save delays it by one save.
//!
//! Measured (`touchline-bench --only faults`, the binaries alternated, 2
//! runs each, trap to serving p99 with `--realtime-priority`, and the
//! mean events replayed per rebuild):
//!
//! | ratio, queued | p99 | replayed |
//! |---|---|---|
//! | 4, none (before) | 200 / 200 / 265 / 200 µs (4 runs) | 0.12–0.16 |
//! | 4, one | 200 / 265 µs | 0.15–0.21 |
//! | 2, none | 136 / 136 µs | 0.005 |
//! | 2, one | 100 / 100 µs | 0 |
//!
//! (p99 is a histogram bucket's bound: 200 µs is a bound, the next ones
//! 212 and 265.)
//!
//! Its cost, with the match's backlog as the only gate: a save after
//! nearly every event, even in the pipeline bench, whose feed is one
//! blast (`touchline_checkpoints_total`: 0.86 per event at 1,000 matches,
//! 0.78 at 100: its mailboxes rarely hold two, so the workers keep up
//! with the router), 9–17 µs each. Alternated with the ratio of
//! 4 (this VM's speed varied by a fifth between runs, so the spread is
//! wide): pipeline / parse at 1,000 matches 0.540 / 0.657 / 0.619 / 0.627
//! / 0.705 against 0.657 / 0.611 / 0.622, and 0.597 in a `make bench`;
//! fan-out at 1,000 clients, one run each, 2.251 against 2.257 CPU-s per
//! 100k deliveries (user time 8.25 against 7.71 µs per delivery). Hence
//! the server's backlog as a gate too: in the pipeline bench 0.10 and
//! 0.20 checkpoints per event at 1,000 matches (two runs), pipeline /
//! parse 0.692 and 0.577 against 0.629 and 0.627 with the ratio of 4,
//! alternated (the 0.577 run had its parse limit measured at 11.0k msg/s
//! before it and 14.4k after: the VM slowed during it); the faults bench
//! unchanged by it (p99 136 µs with `--realtime-priority`, 0.005 events
//! replayed per rebuild, one run).
//!
//! Earlier (a checkpoint every 50 µs of applying, then the ratio of 4):
//! the pipeline at 1,000 matches used 12.6–13.0 CPU-s without
//! checkpoints, 13.4–16.1 with one after every due event, 13.5–14.0 with
//! them in idle time only (there, each match's mailbox empties often);
//! the restart's p50 went from 414 µs to 87–108 µs.
//!
//! The checkpoint lives in the [`Tail`] and goes with it: a snapshot (a
//! nap takes one), a switch or hibernating clears the tail and the
//! checkpoint alike. Only
//! the version that saved it restores it (any other restarts from the base).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Worker;
use super::lifecycle::Base;
use super::persist::Tail;
use crate::sandbox::Saved;

/// A checkpoint is taken once the apply time since the last one is at
/// least this many times the last save's cost.
pub const SAVE_RATIO: u32 = 2;

/// Commands that may wait in the mailbox for a checkpoint to be taken
/// still: more is a backlog.
pub const QUEUED_MAX: usize = 1;

/// Whether the server is behind its feed: its feed reader's last read
/// filled the whole buffer, so more was waiting. Set by the feed reader
/// ([`crate::feed::Intake`]), read by every worker after each command
/// (no checkpoint while it holds). One shared flag, cloned into both; the
/// gauge `touchline_feed_behind` only shows it.
#[derive(Debug, Clone, Default)]
pub struct FeedBehind(Arc<AtomicBool>);

impl FeedBehind {
    pub fn set(&self, behind: bool) {
        self.0.store(behind, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

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

    /// The mailbox is (nearly) empty: save the state in memory if the
    /// replay a restart would do calls for it; whether it was saved.
    pub(super) fn checkpoint_if_due(&mut self) -> bool {
        if self.tail.events.is_empty() || !due(self.tail.unsaved, self.tail.last_save) {
            return false;
        }
        self.checkpoint_now()
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
                self.env.metrics.checkpoints.inc();
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
    fn due_once_two_saves_worth_of_applying_is_uncovered() {
        let us = Duration::from_micros;
        assert!(!due(Duration::ZERO, Duration::ZERO), "nothing applied");
        assert!(due(us(1), Duration::ZERO), "no save yet");
        assert!(due(us(2), us(1)));
        assert!(!due(us(1), us(1)));
        // A save of 20 µs: not before 40 µs of applying.
        assert!(!due(us(39), us(20)));
        assert!(due(us(40), us(20)));
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
