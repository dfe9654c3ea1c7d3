//! The match-worker operations over encoded bytes, in plain Rust.
//!
//! This is what the `match-worker` world exports, minus the canonical ABI:
//! the Wasm export layer ([`crate::component`]) forwards to it, and the host
//! runs it natively as the benchmark's baseline, so both do the same work
//! (decode the event, apply it, serialise the delta).
//!
//! It also owns the saved-state layout and its versions ([`STATE_VERSION`],
//! [`Model::migrate`]). With the `v2` feature the worker carries one more
//! piece of state, [`Extension`] (how many events the match applied since it
//! first ran v2 logic), shown as `events_seen` in every delta and snapshot:
//! the behaviour change the hot-swap tests and benchmark look for.

use serde::{Deserialize, Serialize};

use crate::event::MatchEvent;
use crate::model::MatchState;

/// Layout version of what [`Model::save_state`] returns. Layouts only grow
/// by appending: v1 is a `MatchState`; v2 is a `MatchState` followed by an
/// [`Extension`]. So a guest reads an older state and fills in the rest, and
/// reads the prefix it knows of a newer one (a rollback).
pub const STATE_VERSION: u32 = if cfg!(feature = "v2") { 2 } else { 1 };

/// Errors the guest reports without trapping (the WIT `error` variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlueError {
    BadEvent(String),
    BadState(String),
}

/// What state layout v2 appends to v1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extension {
    /// Events applied since this match first ran v2 logic.
    pub events_seen: u64,
}

/// A delta or snapshot with v2's field alongside.
#[cfg(feature = "v2")]
#[derive(Serialize)]
struct WithExtension<T: Serialize> {
    #[serde(flatten)]
    inner: T,
    events_seen: u64,
}

/// One match's model behind the worker interface.
#[derive(Debug, Default)]
pub struct Model {
    state: MatchState,
    /// Saved, shown and counted only with the `v2` feature (a v1 build
    /// keeps it at its default).
    ext: Extension,
}

impl Model {
    pub fn new(match_id: impl Into<String>) -> Model {
        Model {
            state: MatchState::new(match_id),
            ext: Extension::default(),
        }
    }

    /// The model (read-only), for fault injection and tests.
    pub fn state(&self) -> &MatchState {
        &self.state
    }

    /// Decode and apply one event; the delta as JSON.
    pub fn apply(&mut self, event: &[u8]) -> Result<String, GlueError> {
        let event: MatchEvent = crate::decode(event).map_err(|e| GlueError::BadEvent(e.to_string()))?;
        self.apply_event(&event)
    }

    pub fn apply_event(&mut self, event: &MatchEvent) -> Result<String, GlueError> {
        let change = self.state.apply(event);
        let delta = self.state.delta(event.kind(), &change);
        #[cfg(feature = "v2")]
        let delta = {
            self.ext.events_seen += 1;
            WithExtension {
                inner: delta,
                events_seen: self.ext.events_seen,
            }
        };
        serde_json::to_string(&delta).map_err(|e| GlueError::BadEvent(e.to_string()))
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
        let view = self.state.snapshot();
        #[cfg(feature = "v2")]
        let view = WithExtension {
            inner: view,
            events_seen: self.ext.events_seen,
        };
        serde_json::to_string(&view).unwrap_or_else(|_| "{}".to_owned())
    }

    /// The state in layout [`STATE_VERSION`].
    pub fn save_state(&self) -> Vec<u8> {
        if STATE_VERSION >= 2 {
            crate::encode(&(&self.state, &self.ext))
        } else {
            crate::encode(&self.state)
        }
    }

    /// Replace the model with a state this same version saved.
    pub fn restore_state(&mut self, state: &[u8]) -> Result<(), GlueError> {
        self.migrate(&self.state.match_id.clone(), state, STATE_VERSION)
    }

    /// Take over a state saved by a guest whose layout is `from_version`
    /// (older, newer or the same; see [`STATE_VERSION`]).
    pub fn migrate(&mut self, match_id: &str, state: &[u8], from_version: u32) -> Result<(), GlueError> {
        let bad = |e: bincode::error::DecodeError| GlueError::BadState(format!("layout v{from_version}: {e}"));
        let (restored, ext) = match from_version {
            0 => return Err(GlueError::BadState("state layout version 0 does not exist".into())),
            // v1 layout: nothing after the model (also a newer layout read
            // as v1 by a v1 guest: the prefix).
            v if v < 2 || STATE_VERSION < 2 => (crate::decode::<MatchState>(state).map_err(bad)?, Extension::default()),
            _ => crate::decode::<(MatchState, Extension)>(state).map_err(bad)?,
        };
        if !match_id.is_empty() && restored.match_id != match_id {
            return Err(GlueError::BadState(format!(
                "state of {} offered to {match_id}",
                restored.match_id
            )));
        }
        self.state = restored;
        self.ext = ext;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_bytes(match_id: &str, seen: u64) -> Vec<u8> {
        crate::encode(&(MatchState::new(match_id), Extension { events_seen: seen }))
    }

    #[test]
    fn migrates_from_older_and_newer_layouts() {
        let v1 = crate::encode(&MatchState::new("m"));
        let mut w = Model::new("m");
        w.migrate("m", &v1, 1).expect("v1 state");
        assert_eq!(w.ext, Extension::default());
        // A v2 state: read in full by a v2 guest, by prefix by a v1 guest.
        w.migrate("m", &v2_bytes("m", 7), 2).expect("v2 state");
        let expect = if STATE_VERSION >= 2 { 7 } else { 0 };
        assert_eq!(w.ext.events_seen, expect);
        assert_eq!(w.state().match_id, "m");
    }

    #[test]
    fn refuses_foreign_or_broken_states() {
        let mut w = Model::new("m");
        let other = crate::encode(&MatchState::new("other"));
        assert!(matches!(w.migrate("m", &other, 1), Err(GlueError::BadState(m)) if m.contains("offered to m")));
        assert!(matches!(w.migrate("m", &[0xff, 0xff], 1), Err(GlueError::BadState(_))));
        assert!(matches!(w.migrate("m", &other, 0), Err(GlueError::BadState(_))));
    }

    #[test]
    fn save_then_restore_round_trips() {
        let mut w = Model::new("m");
        let event = crate::event::MatchEvent::BetStop(crate::event::BetStop {
            header: crate::event::Header {
                product: Some(1),
                event_id: "m".into(),
                timestamp: 42,
                request_id: None,
            },
            groups: vec!["all".into()],
            market_status: -1,
        });
        w.apply_event(&event).expect("apply");
        assert_eq!(w.state().updated_at, 42, "the state to save is not the empty one");
        w.ext.events_seen = 3;
        let saved = w.save_state();
        let mut back = Model::new("m");
        back.restore_state(&saved).expect("restore");
        assert_eq!(back.state(), w.state());
        let expect = if STATE_VERSION >= 2 { 3 } else { 0 };
        assert_eq!(back.ext.events_seen, expect);
    }
}
