//! What a worker tells the operator console about itself, on demand.
//!
//! Nothing here runs per event: a [`Command::Inspect`](super::Command)
//! asks the worker between two commands (a sleeping match answers without
//! waking), and the rare facts a card shows beside the current ones
//! (restarts, the last failure) are written when they happen. The
//! lifecycle state is also published in a [`StateCell`] with a generation
//! bumped on every transition (and on what changes a sleeping match's
//! card), so the console need not ask a sleeping match again until it
//! changed.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Frame, State, Worker};
use crate::journal::BetRecord;

/// A match's state as the console lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Card {
    pub state: &'static str,
    /// The guest version it runs (content hash).
    pub version: String,
    pub epoch: u64,
    pub seq: u64,
    /// Guest linear memory plus the recovery base and tail and the resume
    /// ring the worker keeps, bytes.
    pub memory_bytes: usize,
    pub subscribers: usize,
    /// Instance restarts since the process started.
    pub restarts: u64,
    /// Failures the restart intensity still counts.
    pub failures_in_window: usize,
    pub last_error: Option<LastError>,
    pub quarantine_reason: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LastError {
    /// Unix ms.
    pub at: i64,
    pub reason: String,
}

/// A card and what only a match's detail shows.
#[derive(Debug, Clone)]
pub struct Detail {
    pub card: Card,
    /// The resume ring: the last update frames, oldest first.
    pub frames: Vec<Frame>,
    /// Accepted bets on the match.
    pub bets: Vec<BetRecord>,
}

/// What a worker keeps for its card that is not part of its job: boxed,
/// and only once something went wrong (most matches never fail).
#[derive(Debug, Default)]
pub(super) struct Troubles {
    restarts: u64,
    last_error: Option<LastError>,
}

/// The lifecycle state, published for readers that must not ask the
/// worker, with a generation bumped on every transition and on every change
/// a card shows while the match sleeps (a switch while asleep, its base
/// given back): one atomic word, the state in the low byte.
#[derive(Debug)]
pub struct StateCell(AtomicU64);

impl StateCell {
    pub(super) fn new(state: State) -> StateCell {
        StateCell(AtomicU64::new(state as u64))
    }

    /// Enter `state` (or stay in it): a new generation either way.
    pub(super) fn set(&self, state: State) {
        let generation = (self.0.load(Ordering::Relaxed) >> 8).wrapping_add(1);
        self.0.store(generation << 8 | state as u64, Ordering::Relaxed);
    }

    pub fn get(&self) -> State {
        self.load().0
    }

    /// The state and its generation.
    pub fn load(&self) -> (State, u64) {
        let word = self.0.load(Ordering::Relaxed);
        let state = State::ALL
            .get((word & 0xff) as usize)
            .copied()
            .unwrap_or(State::Stopped);
        (state, word >> 8)
    }
}

impl Worker {
    /// The match runs another version from now on: tell the observer, and
    /// the console (a sleeping match's card changed).
    pub(super) fn version_changed(&self) {
        self.env.observer.runs(&self.id, self.version.version_arc());
        self.shown.set(self.life.state());
    }

    /// A guest failure happened (`reason`), and the instance was dropped.
    pub(super) fn note_failure(&mut self, reason: String) {
        let t = self.troubles.get_or_insert_with(Box::default);
        t.restarts += 1;
        t.last_error = Some(LastError {
            at: crate::producers::wall_ms(),
            reason,
        });
    }

    pub(super) fn card(&mut self) -> Card {
        let instance = self.life.reader().map_or(0, |i| i.memory_bytes());
        let kept = self.base.as_ref().map_or(0, |b| b.state.len())
            + self.tail.bytes
            + self.tail.checkpoint_bytes()
            + self.recent.bytes()
            + self.regenerated.as_ref().map_or(0, |r| r.bytes());
        Card {
            state: self.life.state().as_str(),
            version: self.version.version().to_owned(),
            epoch: self.epoch,
            seq: self.seq,
            memory_bytes: instance + kept,
            subscribers: self.updates.subscribers(),
            restarts: self.troubles.as_ref().map_or(0, |t| t.restarts),
            failures_in_window: self.intensity.in_window(tokio::time::Instant::now().into_std()),
            last_error: self.troubles.as_ref().and_then(|t| t.last_error.clone()),
            quarantine_reason: self.life.quarantine_reason().map(str::to_owned),
        }
    }

    pub(super) fn detail(&mut self) -> Detail {
        Detail {
            card: self.card(),
            frames: self.recent.frames(),
            bets: self.bets.clone(),
        }
    }
}
