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
//! | 3 | `MatchState`, [`Extension`], [`ProducerPart`] | default and `v2` guests now |
//!
//! `MatchState` and `Market` keep layout 1's encoding: their producer
//! fields are `serde(skip)` there and travel in [`ProducerPart`] (owner,
//! hand-overs, each market's producer keyed like the markets). Both builds
//! save layout 3; the default one writes a zero [`Extension`] and drops the
//! one it reads (as before, v2's count restarts after a round trip through
//! the default logic). A state from layout 1 or 2 comes back with no owner,
//! no hand-over and markets of unknown producer: bettable until the host
//! reports a producer down, and taken over by the next odds.

use serde::{Deserialize, Serialize};

use crate::event::MatchEvent;
use crate::model::MatchState;
use crate::producer::ProducerPart;

/// Layout version of what [`Model::save_state`] returns (see the table
/// above). The same for both builds: the `v2` guest reads every part the
/// default one saves in full, never by a shorter prefix.
pub const STATE_VERSION: u32 = 3;

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
        crate::encode(&(&self.state, &self.ext, ProducerPart::of(&self.state)))
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
        let (mut restored, ext, producers) = match from_version.min(STATE_VERSION) {
            0 => return Err(GlueError::BadState("state layout version 0 does not exist".into())),
            1 => (
                crate::decode::<MatchState>(state).map_err(bad)?,
                Extension::default(),
                ProducerPart::default(),
            ),
            2 => {
                let (s, ext) = crate::decode::<(MatchState, Extension)>(state).map_err(bad)?;
                (s, ext, ProducerPart::default())
            }
            _ => crate::decode::<(MatchState, Extension, ProducerPart)>(state).map_err(bad)?,
        };
        if !match_id.is_empty() && restored.match_id != match_id {
            return Err(GlueError::BadState(format!(
                "state of {} offered to {match_id}",
                restored.match_id
            )));
        }
        producers.restore_into(&mut restored);
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
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::event::{Header, MarketOdds, OddsChange, OutcomeOdds};
    use crate::market::{MarketKey, Outcome};
    use crate::model::Summary;

    /// `Market` and `MatchState` as guests before producers encode them
    /// (layouts 1 and 2): what such a guest reads of any state.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct OldMarket {
        id: u32,
        specifiers: String,
        status: i32,
        favourite: bool,
        outcomes: Vec<Outcome>,
        status_before_resolution: Option<i32>,
        void_reason: Option<i32>,
        certainty: Option<u8>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct OldMatchState {
        match_id: String,
        summary: Summary,
        markets: BTreeMap<MarketKey, OldMarket>,
        updated_at: i64,
    }

    impl OldMatchState {
        /// What an older guest holds for `s`.
        fn of(s: &MatchState) -> OldMatchState {
            let markets = s.markets.iter().map(|(k, m)| {
                let old = OldMarket {
                    id: m.id,
                    specifiers: m.specifiers.clone(),
                    status: m.status,
                    favourite: m.favourite,
                    outcomes: m.outcomes.clone(),
                    status_before_resolution: m.status_before_resolution,
                    void_reason: m.void_reason,
                    certainty: m.certainty,
                };
                (k.clone(), old)
            });
            OldMatchState {
                match_id: s.match_id.clone(),
                summary: s.summary.clone(),
                markets: markets.collect(),
                updated_at: s.updated_at,
            }
        }
    }

    /// A model of match "m" with a live book from `product` (one market) and
    /// 3 events seen.
    fn model(product: u32) -> Model {
        let mut w = Model::new("m");
        let odds = crate::event::MatchEvent::OddsChange(OddsChange {
            header: Header {
                product: Some(product),
                event_id: "m".into(),
                timestamp: 42,
                request_id: None,
            },
            sport_event_status: None,
            betting_status: None,
            markets: vec![MarketOdds {
                id: 18,
                specifiers: "total=2.5".into(),
                status: 1,
                favourite: false,
                outcomes: vec![OutcomeOdds {
                    id: "12".into(),
                    odds: Some(1.9),
                    active: true,
                }],
            }],
        });
        w.apply_event(&odds).expect("apply");
        w.ext.events_seen = 3;
        w
    }

    /// What a build keeps of v2's count when it reads `seen`.
    fn kept(seen: u64) -> u64 {
        if cfg!(feature = "v2") { seen } else { 0 }
    }

    #[test]
    fn older_layouts_restore_with_producers_unknown() {
        let saved = model(1);
        let old = OldMatchState::of(saved.state());
        let mut w = Model::new("m");
        w.migrate("m", &crate::encode(&old), 1).expect("layout 1");
        assert_eq!(OldMatchState::of(w.state()), old, "everything layout 1 holds");
        let m = w.state().market(18, "total=2.5").expect("market");
        assert_eq!((m.product, &w.state().producers), (None, &Default::default()));
        assert_eq!(w.ext, Extension::default());
        let layout2 = crate::encode(&(&old, Extension { events_seen: 7 }));
        w.migrate("m", &layout2, 2).expect("layout 2");
        assert_eq!(OldMatchState::of(w.state()), old);
        assert_eq!(w.ext.events_seen, kept(7));
    }

    #[test]
    fn older_guests_read_the_prefix_of_the_current_layout() {
        let w = model(1);
        let bytes = w.save_state();
        let expected = OldMatchState::of(w.state());
        assert_eq!(crate::decode::<OldMatchState>(&bytes).expect("as layout 1"), expected);
        let (state, ext) = crate::decode::<(OldMatchState, Extension)>(&bytes).expect("as layout 2");
        assert_eq!((state, ext), (expected, w.ext));
    }

    #[test]
    fn a_newer_layout_is_read_by_its_known_prefix() {
        let mut bytes = model(1).save_state();
        bytes.extend_from_slice(&[9, 9, 9]); // a part this guest does not know
        let mut w = Model::new("m");
        w.migrate("m", &bytes, STATE_VERSION + 1).expect("newer layout");
        assert_eq!(w.state(), model(1).state());
    }

    #[test]
    fn refuses_foreign_or_broken_states() {
        let mut w = Model::new("m");
        let other = crate::encode(&MatchState::new("other"));
        assert!(matches!(w.migrate("m", &other, 1), Err(GlueError::BadState(m)) if m.contains("offered to m")));
        assert!(matches!(w.migrate("m", &[0xff, 0xff], 1), Err(GlueError::BadState(_))));
        assert!(matches!(w.migrate("m", &other, 0), Err(GlueError::BadState(_))));
        let layout1 = crate::encode(&MatchState::new("m"));
        assert!(
            matches!(w.migrate("m", &layout1, 3), Err(GlueError::BadState(_))),
            "layout 1 offered as 3 lacks its parts"
        );
    }

    #[test]
    fn save_then_restore_round_trips() {
        let w = model(3);
        assert_eq!(w.state().updated_at, 42, "the state to save is not the empty one");
        assert_eq!(w.state().producers.owner, Some(3));
        let mut back = Model::new("m");
        back.restore_state(&w.save_state()).expect("restore");
        assert_eq!(back.state(), w.state(), "producers included");
        assert_eq!(back.ext.events_seen, kept(3));
    }
}
