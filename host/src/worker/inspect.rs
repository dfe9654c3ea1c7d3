//! What a worker tells the operator console about itself, on demand.
//!
//! Nothing here runs per event: a [`Command::Inspect`](super::Command)
//! asks the worker between two commands (a sleeping match answers without
//! waking), and the rare facts a card shows beside the current ones
//! (restarts, the last failure) are written when they happen. The
//! lifecycle state is also published in a [`StateCell`] on every
//! transition, so the console can tell which matches changed without
//! asking each one.

use std::sync::atomic::{AtomicU8, Ordering};

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

/// The lifecycle state, published on every transition for readers that
/// must not ask the worker (one byte, written in `Worker::enter`).
#[derive(Debug)]
pub struct StateCell(AtomicU8);

impl StateCell {
    pub(super) fn new(state: State) -> StateCell {
        StateCell(AtomicU8::new(state as u8))
    }

    pub(super) fn set(&self, state: State) {
        self.0.store(state as u8, Ordering::Relaxed);
    }

    pub fn get(&self) -> State {
        State::ALL
            .get(usize::from(self.0.load(Ordering::Relaxed)))
            .copied()
            .unwrap_or(State::Stopped)
    }
}

impl Worker {
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
        let kept = self.base.as_ref().map_or(0, |b| b.state.len()) + self.tail.bytes + self.recent.bytes();
        Card {
            state: self.life.state().as_str(),
            version: self.version.version().to_owned(),
            epoch: self.epoch,
            seq: self.seq,
            memory_bytes: instance + kept,
            subscribers: self.updates.subscribers(),
            restarts: self.troubles.as_ref().map_or(0, |t| t.restarts),
            failures_in_window: self.intensity.in_window(std::time::Instant::now()),
            last_error: self.troubles.as_ref().and_then(|t| t.last_error.clone()),
            quarantine_reason: self.life.quarantine_reason().map(str::to_owned),
        }
    }

    pub(super) fn detail(&mut self) -> Detail {
        Detail {
            card: self.card(),
            frames: self.recent.frames.iter().cloned().collect(),
            bets: self.bets.clone(),
        }
    }
}
