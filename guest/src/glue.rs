//! The match-worker operations over encoded bytes, in plain Rust.
//!
//! This is what the `match-worker` world exports, minus the canonical ABI:
//! the Wasm export layer ([`crate::component`]) forwards to it, and the host
//! runs it natively as the benchmark's baseline, so both do the same work
//! (decode the event, apply it, serialise the delta).
//!
//! It also owns the saved-state layout and its versions ([`STATE_VERSION`],
//! [`Model::migrate`]). With the `v2` feature the worker counts one more
//! piece of state, [`Extension`] (how many events the match applied since it
//! first ran v2 logic), shown as `events_seen` in every delta and snapshot:
//! the behaviour change the hot-swap tests and benchmark look for.
//!
//! Saved-state layouts (bincode, parts one after the other). Layouts only
//! grow by appending parts, so a guest reads an older layout and fills in
//! what it lacks, and reads the prefix it knows of a newer one (rollback):
//!
//! | layout | parts | saved by |
//! |---|---|---|
//! | 1 | `MatchState` | default guest before producers (WIT 0.2.0) |
//! | 2 | `MatchState`, [`Extension`] | `v2` guest before producers (WIT 0.2.0) |
//! | 3 | `MatchState`, [`Extension`], [`ProducerPart`] | default and `v2` guests of event format 1 |
//! | 4 | `MatchState`, [`Extension`], [`ProducerPart`], [`SettlementPart`] | default and `v2` guests now (event format 2) |
//!
//! `MatchState` and `Market` keep layout 1's encoding: their producer
//! fields are `serde(skip)` there and travel in [`ProducerPart`] (owner,
//! hand-overs, each market's producer keyed like the markets), their
//! cancels and fixture state in [`SettlementPart`]. Both builds save layout
//! 4; the default one writes a zero [`Extension`] and drops the one it
//! reads (as before, v2's count restarts after a round trip through the
//! default logic). A state from layout 1 or 2 comes back with no owner, no
//! hand-over and markets of unknown producer: bettable until the host
//! reports a producer down, and taken over by the next odds. A state from
//! before layout 4 comes back with the fixture not cancelled and, for each
//! market an old bet_cancel had put at -4, a cancel without window (what
//! that cancel meant then: see [`SettlementPart::restore_older`]).
//! (`OutcomeResult::result` became `i8` in layout 4, to hold -1 undecided:
//! 0 and 1 are the same byte as layout 1's `u8`.)
//!
//! Events are decoded by [`crate::event::decode`], which also reads the
//! entries of journals written in event format 1.

use serde::{Deserialize, Serialize};

use crate::event::MatchEvent;
use crate::model::MatchState;
use crate::producer::ProducerPart;
use crate::settlement::SettlementPart;

/// Layout version of what [`Model::save_state`] returns (see the table
/// above). The same for both builds: the `v2` guest reads every part the
/// default one saves in full, never by a shorter prefix.
pub const STATE_VERSION: u32 = 4;

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

/// A snapshot with v2's field alongside (a delta is written by hand,
/// `delta::json::to_string_with`; its tests compare the two).
#[cfg(any(feature = "v2", test))]
#[derive(Serialize)]
pub(crate) struct WithExtension<T: Serialize> {
    #[serde(flatten)]
    pub inner: T,
    pub events_seen: u64,
}

/// One match's model behind the worker interface.
#[derive(Debug, Default)]
pub struct Model {
    state: MatchState,
    /// Shown and counted only with the `v2` feature (a default build keeps
    /// it at its default, and saves that).
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
        let event: MatchEvent = crate::event::decode(event).map_err(|e| GlueError::BadEvent(e.to_string()))?;
        self.apply_event(&event)
    }

    pub fn apply_event(&mut self, event: &MatchEvent) -> Result<String, GlueError> {
        let change = self.state.apply(event);
        let delta = self.state.delta(event.kind(), &change);
        #[cfg(feature = "v2")]
        let json = {
            self.ext.events_seen += 1;
            crate::delta::json::to_string_with(&delta, "events_seen", self.ext.events_seen)
        };
        #[cfg(not(feature = "v2"))]
        let json = crate::delta::json::to_string(&delta);
        json.map_err(|e| GlueError::BadEvent(e.to_string()))
    }

    /// Decide an encoded [`crate::bet::BetRequest`] while `producers_down`
    /// are down; the encoded decision.
    pub fn decide_bet(&self, request: &[u8], producers_down: &[u32]) -> Result<Vec<u8>, GlueError> {
        let bet: crate::bet::BetRequest = crate::decode(request).map_err(|e| GlueError::BadEvent(e.to_string()))?;
        Ok(crate::encode(&self.state.decide(&bet, producers_down)))
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
        crate::encode(&(
            &self.state,
            &self.ext,
            ProducerPart::of(&self.state),
            SettlementPart::of(&self.state),
        ))
    }

    /// Replace the model with a state this same version saved.
    pub fn restore_state(&mut self, state: &[u8]) -> Result<(), GlueError> {
        self.migrate(&self.state.match_id.clone(), state, STATE_VERSION)
    }

    /// Take over a state saved by a guest whose layout is `from_version`
    /// (older, newer or the same; see [`STATE_VERSION`]).
    pub fn migrate(&mut self, match_id: &str, state: &[u8], from_version: u32) -> Result<(), GlueError> {
        let bad = |e: bincode::error::DecodeError| GlueError::BadState(format!("layout v{from_version}: {e}"));
        // A newer layout is read by the prefix this guest knows.
        let (mut restored, ext, producers, settlement) = match from_version.min(STATE_VERSION) {
            0 => return Err(GlueError::BadState("state layout version 0 does not exist".into())),
            1 => (
                crate::decode::<MatchState>(state).map_err(bad)?,
                Extension::default(),
                ProducerPart::default(),
                None,
            ),
            2 => {
                let (s, ext) = crate::decode::<(MatchState, Extension)>(state).map_err(bad)?;
                (s, ext, ProducerPart::default(), None)
            }
            3 => {
                let (s, ext, p) = crate::decode::<(MatchState, Extension, ProducerPart)>(state).map_err(bad)?;
                (s, ext, p, None)
            }
            _ => {
                let (s, ext, p, part) =
                    crate::decode::<(MatchState, Extension, ProducerPart, SettlementPart)>(state).map_err(bad)?;
                (s, ext, p, Some(part))
            }
        };
        if !match_id.is_empty() && restored.match_id != match_id {
            return Err(GlueError::BadState(format!(
                "state of {} offered to {match_id}",
                restored.match_id
            )));
        }
        producers.restore_into(&mut restored);
        match settlement {
            Some(part) => part.restore_into(&mut restored),
            None => SettlementPart::restore_older(&mut restored),
        }
        self.state = restored;
        self.ext = if cfg!(feature = "v2") {
            ext
        } else {
            Extension::default()
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests;
