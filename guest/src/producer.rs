//! Producers of one match: which producer owns it, which ones handed it
//! over, and the part of the saved state that records them. Pure.
//!
//! A UOF match is covered by several producers (the `product` of each
//! message: 1 live odds, 3 pre-match). Pre-match hands a match over to live
//! by sending its markets at status -2; from then on its odds for the match
//! are stale. The rules (applied by `MatchState::odds_change`):
//! - a market shows one producer's odds ([`crate::market::Market::product`]);
//!   odds from another producer take it over;
//! - a -2 from P suspends (status -2, no bets) a market that shows P's odds
//!   (or odds of unknown origin) until another producer's odds arrive; a
//!   market already taken over by another producer ignores it;
//! - once P handed the match over, its odds_change for the match is ignored
//!   entirely (markets and scoreboard); its bet_stop and settlements apply;
//! - the owner is the producer of the last odds_change that took the match;
//!   one that hands over does not take it from another owner.
//!
//! This data is not in the `MatchState`/`Market` encoding (layout v1, read
//! by older guests as a prefix): [`ProducerPart`] is appended after the
//! older layout parts (see `glue`).

use serde::{Deserialize, Serialize};

use crate::market::MarketKey;
use crate::model::MatchState;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Producers {
    /// Producer of the last odds_change that took the match: whose
    /// scoreboard is shown (`"producer"` in the JSON views).
    pub owner: Option<u32>,
    /// Producers that handed this match over: their odds_change is ignored.
    pub handed_over: Vec<u32>,
}

impl Producers {
    /// Whether an odds_change from `product` is ignored entirely.
    pub fn ignores(&self, product: Option<u32>) -> bool {
        product.is_some_and(|p| self.handed_over.contains(&p))
    }

    /// Whether an odds_change from `from` takes the match (owner and
    /// scoreboard): any does, except a hand-over from a producer that does
    /// not own it (a late -2 must not put a live scoreboard back to
    /// pre-match).
    pub(crate) fn taken_by(&self, from: Option<u32>, hands_over: bool) -> bool {
        !hands_over || self.owner.is_none() || self.owner == from
    }

    /// Record the owner; returns whether it changed. An odds_change without
    /// a product leaves the owner as it was.
    pub(crate) fn own(&mut self, from: Option<u32>) -> bool {
        let changed = from.is_some() && self.owner != from;
        if changed {
            self.owner = from;
        }
        changed
    }

    pub(crate) fn hand_over(&mut self, from: Option<u32>) {
        if let Some(p) = from
            && !self.handed_over.contains(&p)
        {
            self.handed_over.push(p);
        }
    }
}

/// Whether a -2 from `from` applies to a market showing `shown`'s odds: it
/// does unless another producer's odds are known to have arrived (odds of
/// unknown origin may be `from`'s: no bet on them).
pub(crate) fn hand_over_applies(shown: Option<u32>, from: Option<u32>) -> bool {
    shown.is_none() || shown == from
}

/// What state layout v3 appends: the match's [`Producers`] and each
/// market's producer, keyed like `MatchState::markets` (markets without one
/// are left out).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProducerPart {
    pub producers: Producers,
    pub markets: Vec<(MarketKey, u32)>,
}

/// [`ProducerPart`] borrowing from the state: the same encoding, no copies
/// of the market keys.
#[derive(Serialize)]
pub struct ProducerPartRef<'a> {
    producers: &'a Producers,
    markets: Vec<(&'a MarketKey, u32)>,
}

impl ProducerPart {
    /// The part to save after `state`'s older layout parts.
    pub fn of(state: &MatchState) -> ProducerPartRef<'_> {
        ProducerPartRef {
            producers: &state.producers,
            markets: state
                .markets
                .iter()
                .filter_map(|(k, m)| Some((k, m.product?)))
                .collect(),
        }
    }

    /// Put the part back into the state it was saved with (a key naming no
    /// market is dropped).
    pub fn restore_into(self, state: &mut MatchState) {
        state.producers = self.producers;
        for (key, product) in self.markets {
            if let Some(m) = state.markets.get_mut(&key) {
                m.product = Some(product);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bet::{BetDecision, BetRequest};
    use crate::event::*;
    use crate::market::status;

    const LO: u32 = 1;
    const CTRL: u32 = 3;

    /// An odds_change from `product` for market 1 (status `st`, outcome "1"
    /// at `odds`), with a scoreboard at `match_status`.
    fn oc(product: u32, st: i32, odds: f64, match_status: i32) -> MatchEvent {
        MatchEvent::OddsChange(OddsChange {
            header: Header {
                product: Some(product),
                event_id: "m".into(),
                timestamp: 10,
                request_id: None,
            },
            sport_event_status: Some(SportEventStatus {
                status: i32::from(match_status != 0),
                match_status: Some(match_status),
                ..Default::default()
            }),
            betting_status: None,
            markets: vec![MarketOdds {
                id: 1,
                specifiers: "".into(),
                status: st,
                favourite: false,
                outcomes: vec![OutcomeOdds {
                    id: "1".into(),
                    odds: Some(odds),
                    active: true,
                }],
            }],
        })
    }

    fn bet(odds: f64) -> BetRequest {
        BetRequest {
            id: "b".into(),
            market: 1,
            specifiers: String::new(),
            outcome: "1".into(),
            odds,
            stake: 1.0,
            accept_better_odds: false,
        }
    }

    /// Apply `events` to a fresh state; check market 1's status and
    /// producer, the owner and whether a bet at `odds` is accepted.
    fn check(
        events: &[MatchEvent],
        expected: (i32, Option<u32>, Option<u32>),
        odds: f64,
        accepted: bool,
    ) -> MatchState {
        let mut s = MatchState::new("m");
        for e in events {
            s.apply(e);
        }
        let m = s.market(1, "").expect("market 1");
        assert_eq!(
            (m.status, m.product, s.producers.owner),
            expected,
            "status, product, owner"
        );
        let decision = s.decide(&bet(odds), &[]);
        assert_eq!(
            matches!(decision, BetDecision::Accepted { .. }),
            accepted,
            "{decision:?}"
        );
        s
    }

    #[test]
    fn a_late_hand_over_leaves_live_odds_active() {
        let s = check(
            &[
                oc(CTRL, 1, 2.0, 0),
                oc(LO, 1, 1.8, 6),
                oc(CTRL, status::HANDED_OVER, 2.0, 0),
            ],
            (status::ACTIVE, Some(LO), Some(LO)),
            1.8,
            true,
        );
        assert_eq!(s.producers.handed_over, [CTRL]);
        assert_eq!(s.summary.match_status, Some(6), "the live scoreboard stays");
    }

    #[test]
    fn stale_odds_after_a_hand_over_are_ignored() {
        let mut s = check(
            &[
                oc(CTRL, status::HANDED_OVER, 2.0, 0),
                oc(LO, 1, 1.8, 6),
                oc(CTRL, 1, 2.5, 0),
            ],
            (status::ACTIVE, Some(LO), Some(LO)),
            1.8,
            true,
        );
        assert_eq!(s.summary.match_status, Some(6));
        assert_eq!(s.market(1, "").expect("market").outcomes[0].odds, Some(1.8));
        let before = s.clone();
        let change = s.apply(&oc(CTRL, 1, 3.0, 0));
        assert_eq!((change.summary, change.markets.len()), (false, 0));
        assert_eq!(s, before, "not even the timestamp moves");
    }

    #[test]
    fn a_hand_over_suspends_until_the_next_producer_s_odds() {
        let handed = [oc(CTRL, 1, 2.0, 0), oc(CTRL, status::HANDED_OVER, 2.0, 0)];
        check(&handed, (status::HANDED_OVER, Some(CTRL), Some(CTRL)), 2.0, false);
        let mut reopened = handed.to_vec();
        reopened.push(oc(LO, 1, 1.9, 6));
        check(&reopened, (status::ACTIVE, Some(LO), Some(LO)), 1.9, true);
    }

    #[test]
    fn deactivated_closes_and_another_producer_takes_a_market_over() {
        check(
            &[oc(LO, 1, 1.8, 6), oc(LO, status::DEACTIVATED, 1.8, 6)],
            (status::DEACTIVATED, Some(LO), Some(LO)),
            1.8,
            false,
        );
        let s = check(
            &[oc(LO, 1, 1.8, 6), oc(CTRL, 1, 2.2, 0)],
            (status::ACTIVE, Some(CTRL), Some(CTRL)),
            2.2,
            true,
        );
        assert!(s.producers.handed_over.is_empty());
    }

    #[test]
    fn json_shows_market_product_and_match_producer() {
        let mut s = MatchState::new("m");
        let change = s.apply(&oc(LO, 1, 1.8, 6));
        let delta = serde_json::to_value(s.delta("odds_change", &change)).expect("json");
        assert_eq!(delta["markets"][0]["product"], LO);
        assert_eq!(delta["markets"][0]["status"], 1, "the market's own fields stay");
        assert_eq!(delta["summary"]["producer"], LO, "a new owner is a scoreboard change");
        assert_eq!(delta["summary"]["match_status"], 6);
        let snap = serde_json::to_value(s.snapshot()).expect("json");
        assert_eq!(
            (&snap["producer"], &snap["markets"][0]["product"]),
            (&LO.into(), &LO.into())
        );
        let empty = serde_json::to_value(MatchState::new("m").snapshot()).expect("json");
        assert!(empty.get("producer").is_none(), "{empty}");
        let mut unknown = MatchState::new("m");
        unknown
            .markets
            .insert((1, "".into()), crate::market::Market::new(1, ""));
        let snap = serde_json::to_value(unknown.snapshot()).expect("json");
        assert!(snap["markets"][0].get("product").is_none(), "{snap}");
    }

    #[test]
    fn the_part_round_trips_and_borrows_the_owned_encoding() {
        let mut s = MatchState::new("m");
        s.apply(&oc(CTRL, 1, 2.0, 0));
        s.apply(&oc(CTRL, status::HANDED_OVER, 2.0, 0));
        let bytes = crate::encode(&ProducerPart::of(&s));
        let part: ProducerPart = crate::decode(&bytes).expect("decode");
        assert_eq!(part.markets, [((1, "".into()), CTRL)]);
        let mut back = s.clone();
        back.producers = Producers::default();
        back.markets.values_mut().for_each(|m| m.product = None);
        part.restore_into(&mut back);
        assert_eq!(back, s);
    }
}
