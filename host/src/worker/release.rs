//! What a hibernated match gives back, and how it gets it back on waking.
//!
//! A match asleep keeps its position (seq, epoch, mark), its bets, its
//! producers and names state, and the recovery base only if the store
//! cannot give it back. Given back when it falls asleep:
//! - the resume ring (a resuming client is served from the journal, after
//!   waiting for the store writer once if need be: [`super::catchup`]),
//!   the cached snapshot frame (rendered again on the next subscription),
//!   the set of names sent (an update names its markets again), spare
//!   capacity;
//! - the recovery base, once the store has it durably: the snapshot taken
//!   on falling asleep was queued ([`Stored::Queued`]); a barrier is asked
//!   for ([`Stored::Syncing`]); when it resolves `Ok` and the match still
//!   sleeps with nothing since, the copy is dropped ([`Stored::GivenBack`]).
//!   Waking reads the stored snapshot back (one store read before the
//!   instantiation; both are in `wake_seconds`). Only this worker writes
//!   its match's snapshots, so the stored one is the base. A base read
//!   back and unchanged since ([`Stored::ReadBack`]) is dropped at once
//!   when the match sleeps again: the store has it already, so no barrier
//!   is asked. A rollout reads each sleeping match's base back to
//!   switch it: with a barrier each, the store writer confirmed 10,000
//!   bases it had made durable long before, and each match's task ran
//!   again to hear it.
//!
//! Without a journal, or while the store refuses writes (a full disk), the
//! base stays in memory.

use std::sync::Arc;

use super::Worker;
use super::lifecycle::{Base, Lifecycle};
use crate::journal::{Durable, Op};
use crate::sandbox::Failure;

/// Whether the store has the recovery base.
#[derive(Debug, Default)]
pub(super) enum Stored {
    /// Not known to: keep the copy.
    #[default]
    No,
    /// Its write was queued.
    Queued,
    /// Read back from the store (on waking, or at start), unchanged
    /// since: the store has it, which is all a barrier would tell.
    ReadBack,
    /// Asleep: waiting for the write to be durable.
    Syncing(Durable),
    /// Durable, and the copy was dropped: `base` is `None`.
    GivenBack,
}

/// A `select!` branch: the barrier of [`Stored::Syncing`] resolved
/// (`true`: durably); pending in any other state.
pub(super) async fn syncing(stored: &mut Stored) -> bool {
    match stored {
        Stored::Syncing(durable) => durable.done().await.is_ok(),
        _ => std::future::pending().await,
    }
}

impl Worker {
    /// Falling asleep: what is kept only to be quick goes.
    pub(super) fn release_buffers(&mut self) {
        self.recent.release();
        self.snapshot_cache = None;
        self.regenerated = None;
        self.naming.forget_named();
        if self.tail.events.is_empty() {
            self.tail = super::persist::Tail::default();
        } else {
            // A sleeping match wakes from its base: no state kept twice.
            self.tail.checkpoint = None;
        }
        self.bets.shrink_to_fit();
        if let Some(base) = &mut self.base {
            base.state.shrink_to_fit();
        }
    }

    /// Falling asleep with the base queued for the store: ask for a
    /// barrier (without waiting for room: a busy store keeps the copy).
    /// A base read back from the store and unchanged goes at once.
    /// Without a journal (a cluster's node restores from JetStream)
    /// nothing could read it back: the copy always stays.
    pub(super) fn give_base_back(&mut self) {
        let Some(journal) = self.journal() else { return };
        if !self.tail.events.is_empty() || self.base.is_none() {
            return;
        }
        match self.stored {
            Stored::ReadBack => return self.on_base_stored(true),
            Stored::Queued => {}
            Stored::No | Stored::Syncing(_) | Stored::GivenBack => return,
        }
        let (ack, durable) = Durable::pair();
        // Not urgent: the base waits in memory until a commit happens anyway
        // (a rollout putting 10,000 matches to sleep costs no fsync each).
        let barrier = Op::Barrier {
            scope: Some(self.id.clone()),
            ack,
            urgent: false,
        };
        if journal.try_write(barrier).is_ok() {
            self.stored = Stored::Syncing(durable);
        }
    }

    /// The barrier resolved (or the base was read back from the store:
    /// `durable` is then true): drop the copy if the match still sleeps on
    /// exactly that base.
    pub(super) fn on_base_stored(&mut self, durable: bool) {
        let asleep = matches!(self.life, Lifecycle::Hibernated { .. });
        self.stored = if !durable {
            Stored::No
        } else if asleep && self.tail.events.is_empty() {
            self.base = None;
            crate::resident::note_given_back();
            // Its card's memory changed while it sleeps.
            self.shown.set(self.life.state());
            Stored::GivenBack
        } else {
            Stored::Queued
        };
    }

    /// Read the base back from the store if it was given back.
    pub(super) fn take_base_back(&mut self) -> Result<(), Failure> {
        if !matches!(self.stored, Stored::GivenBack) {
            return Ok(());
        }
        let unreadable = |why: String| Failure::Trap(format!("the stored snapshot cannot be read back: {why}"));
        let journal = self.journal().ok_or_else(|| unreadable("no journal".into()))?;
        let record = journal
            .stored_snapshot(&self.id)
            .map_err(|e| unreadable(e.to_string()))?
            .ok_or_else(|| unreadable("none stored".into()))?;
        if record.seq != self.seq {
            return Err(unreadable(format!(
                "stored at seq {}, the match is at {}",
                record.seq, self.seq
            )));
        }
        self.base = Some(Box::new(Base {
            state: record.state,
            guest: Arc::from(record.guest),
            state_version: record.state_version,
        }));
        self.stored = Stored::ReadBack;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
