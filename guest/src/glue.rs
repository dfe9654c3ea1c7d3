//! The match-worker operations over encoded bytes, in plain Rust.
//!
//! This is what the `match-worker` world exports, minus the canonical ABI:
//! the Wasm export layer ([`crate::component`]) forwards to it, and the host
//! runs it natively as the benchmark's baseline, so both do the same work
//! (decode the event, apply it, serialise the delta).

use crate::event::MatchEvent;
use crate::model::MatchState;

/// Errors the guest reports without trapping (the WIT `error` variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlueError {
    BadEvent(String),
    BadState(String),
}

/// One match's model behind the worker interface.
#[derive(Debug, Default)]
pub struct Worker {
    state: MatchState,
}

impl Worker {
    pub fn new(match_id: impl Into<String>) -> Worker {
        Worker {
            state: MatchState::new(match_id),
        }
    }

    /// Decode and apply one event; the delta as JSON.
    pub fn apply(&mut self, event: &[u8]) -> Result<String, GlueError> {
        let event: MatchEvent = crate::decode(event).map_err(|e| GlueError::BadEvent(e.to_string()))?;
        self.apply_event(&event)
    }

    pub fn apply_event(&mut self, event: &MatchEvent) -> Result<String, GlueError> {
        let change = self.state.apply(event);
        serde_json::to_string(&self.state.delta(event.kind(), &change)).map_err(|e| GlueError::BadEvent(e.to_string()))
    }

    /// Decide an encoded [`crate::bet::BetRequest`]; the encoded decision.
    pub fn decide_bet(&self, request: &[u8]) -> Result<Vec<u8>, GlueError> {
        let bet: crate::bet::BetRequest = crate::decode(request).map_err(|e| GlueError::BadEvent(e.to_string()))?;
        Ok(crate::encode(&self.state.decide(&bet)))
    }

    /// Settle encoded `Vec<OpenBet>`; the encoded `Vec<Settlement>`.
    pub fn settle_bets(&self, bets: &[u8]) -> Result<Vec<u8>, GlueError> {
        let bets: Vec<crate::bet::OpenBet> = crate::decode(bets).map_err(|e| GlueError::BadEvent(e.to_string()))?;
        let settled: Vec<crate::bet::Settlement> = bets.iter().map(|b| self.state.settle(b)).collect();
        Ok(crate::encode(&settled))
    }

    pub fn snapshot(&self) -> String {
        serde_json::to_string(&self.state.snapshot()).unwrap_or_else(|_| "{}".to_owned())
    }

    pub fn save_state(&self) -> Vec<u8> {
        crate::encode(&self.state)
    }

    pub fn restore_state(&mut self, state: &[u8]) -> Result<(), GlueError> {
        let restored: MatchState = crate::decode(state).map_err(|e| GlueError::BadState(e.to_string()))?;
        if !self.state.match_id.is_empty() && self.state.match_id != restored.match_id {
            return Err(GlueError::BadState(format!(
                "state of {} offered to {}",
                restored.match_id, self.state.match_id
            )));
        }
        self.state = restored;
        Ok(())
    }
}
