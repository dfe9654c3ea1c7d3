//! Bet decisions: a bet request judged against the match model, pure; and
//! the types of bets and their settlements (the rules that settle them are
//! [`crate::settlement`]'s).
//!
//! The worker calls this between feed events, so a decision sees exactly the
//! odds of its turn. Stake limits and request shape are checked by the host
//! before a bet reaches the worker; this module judges only what depends on
//! the match state, and on which producers the host knows to be down.

use serde::{Deserialize, Serialize};

use crate::model::{MatchState, status};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BetRequest {
    pub id: String,
    pub market: u32,
    /// Canonical specifiers (see `event::canonical_specifiers`).
    pub specifiers: String,
    pub outcome: String,
    /// The odds the bettor saw and accepts.
    pub odds: f64,
    pub stake: f64,
    /// Accept when the current odds are better for the bettor than offered.
    pub accept_better_odds: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BetDecision {
    Accepted { odds: f64 },
    Rejected(RejectReason),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RejectReason {
    MatchEnded {
        status: i32,
    },
    UnknownMarket,
    MarketNotActive {
        status: i32,
    },
    UnknownOutcome,
    OutcomeInactive,
    OddsChanged {
        current: f64,
    },
    /// The market shows odds of a producer that is down, or of an unknown
    /// one while some producer is down (they cannot be proved current).
    ProducerDown {
        product: Option<u32>,
    },
}

impl RejectReason {
    /// Stable code for clients and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::MatchEnded { .. } => "match_ended",
            RejectReason::UnknownMarket => "unknown_market",
            RejectReason::MarketNotActive { .. } => "market_not_active",
            RejectReason::UnknownOutcome => "unknown_outcome",
            RejectReason::OutcomeInactive => "outcome_inactive",
            RejectReason::OddsChanged { .. } => "odds_changed",
            RejectReason::ProducerDown { .. } => "producer_down",
        }
    }
}

/// An accepted bet, as settlement needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenBet {
    pub market: u32,
    pub specifiers: String,
    pub outcome: String,
    /// Accepted odds.
    pub odds: f64,
    pub stake: f64,
    /// When it was placed (Unix ms, the host's decision time): a bet_cancel
    /// voids only the bets placed in its window.
    pub placed_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettleStatus {
    /// Not settled (or settled and rolled back).
    Open,
    Won,
    Lost,
    /// Refunded in full or in part (`void_factor`).
    Void,
}

impl SettleStatus {
    pub fn code(self) -> &'static str {
        match self {
            SettleStatus::Open => "accepted",
            SettleStatus::Won => "won",
            SettleStatus::Lost => "lost",
            SettleStatus::Void => "void",
        }
    }
}

/// Where a bet stands. The host keeps it in its bet records (this encoding)
/// and tells the bettor each time it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settlement {
    pub status: SettleStatus,
    pub payout: f64,
    pub void_factor: f64,
    pub dead_heat_factor: f64,
}

/// Sport event statuses after which no bet is taken: ended, closed,
/// cancelled, abandoned.
const ENDED: [i32; 4] = [3, 4, 5, 9];

/// Odds are compared to the cent the feed quotes them in.
const ODDS_EPSILON: f64 = 1e-9;

/// Whether odds shown by `product` cannot be trusted while `down` are down.
fn producer_down(product: Option<u32>, down: &[u32]) -> bool {
    match product {
        Some(p) => down.contains(&p),
        None => !down.is_empty(),
    }
}

impl MatchState {
    /// `producers_down`: the producers the host knows to be down now.
    pub fn decide(&self, bet: &BetRequest, producers_down: &[u32]) -> BetDecision {
        use RejectReason::*;
        let reject = |r| BetDecision::Rejected(r);
        if ENDED.contains(&self.summary.status) {
            return reject(MatchEnded {
                status: self.summary.status,
            });
        }
        let Some(market) = self.market(bet.market, &bet.specifiers) else {
            return reject(UnknownMarket);
        };
        // Before the status: a down producer's markets are often suspended
        // too, and the reason to give is the producer.
        if producer_down(market.product, producers_down) {
            return reject(ProducerDown {
                product: market.product,
            });
        }
        if market.status != status::ACTIVE {
            return reject(MarketNotActive { status: market.status });
        }
        let Some(outcome) = market.outcomes.iter().find(|o| o.id == bet.outcome) else {
            return reject(UnknownOutcome);
        };
        let Some(current) = outcome.odds.filter(|_| outcome.active) else {
            return reject(OutcomeInactive);
        };
        if (current - bet.odds).abs() < ODDS_EPSILON || (bet.accept_better_odds && current > bet.odds) {
            BetDecision::Accepted { odds: current }
        } else {
            reject(OddsChanged { current })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::*;

    fn state() -> MatchState {
        let mut s = MatchState::new("m");
        s.apply(&MatchEvent::OddsChange(OddsChange {
            header: Header {
                product: Some(1),
                event_id: "m".into(),
                timestamp: 1,
                request_id: None,
            },
            sport_event_status: Some(SportEventStatus {
                status: 1,
                ..Default::default()
            }),
            betting_status: None,
            markets: vec![
                MarketOdds {
                    id: 18,
                    specifiers: "total=2.5".into(),
                    status: 1,
                    favourite: false,
                    outcomes: vec![
                        OutcomeOdds {
                            id: "12".into(),
                            odds: Some(1.9),
                            active: true,
                        },
                        OutcomeOdds {
                            id: "13".into(),
                            odds: Some(1.9),
                            active: false,
                        },
                    ],
                },
                MarketOdds {
                    id: 1,
                    specifiers: "".into(),
                    status: -1,
                    favourite: false,
                    outcomes: vec![],
                },
            ],
        }));
        s
    }

    /// Decide `bet` tweaked by `f` against the standard state, no producer
    /// down.
    fn check(f: impl FnOnce(&mut BetRequest), expected: BetDecision) {
        check_down(f, &[], expected);
    }

    /// A bet on Over 2.5 at its odds.
    fn request() -> BetRequest {
        BetRequest {
            id: "b".into(),
            market: 18,
            specifiers: "total=2.5".into(),
            outcome: "12".into(),
            odds: 1.9,
            stake: 10.0,
            accept_better_odds: false,
        }
    }

    /// [`check`] with `down` producers down.
    fn check_down(f: impl FnOnce(&mut BetRequest), down: &[u32], expected: BetDecision) {
        let mut bet = request();
        f(&mut bet);
        assert_eq!(state().decide(&bet, down), expected);
    }

    #[test]
    fn decisions() {
        use RejectReason::*;
        check(|_| {}, BetDecision::Accepted { odds: 1.9 });
        check(|b| b.odds = 2.0, BetDecision::Rejected(OddsChanged { current: 1.9 }));
        check(|b| b.odds = 1.8, BetDecision::Rejected(OddsChanged { current: 1.9 }));
        check(
            |b| {
                b.odds = 1.8;
                b.accept_better_odds = true
            },
            BetDecision::Accepted { odds: 1.9 },
        );
        check(|b| b.market = 99, BetDecision::Rejected(UnknownMarket));
        check(
            |b| b.specifiers = "total=3.5".into(),
            BetDecision::Rejected(UnknownMarket),
        );
        check(|b| b.outcome = "99".into(), BetDecision::Rejected(UnknownOutcome));
        check(|b| b.outcome = "13".into(), BetDecision::Rejected(OutcomeInactive));
        check(
            |b| {
                b.market = 1;
                b.specifiers = String::new()
            },
            BetDecision::Rejected(MarketNotActive { status: -1 }),
        );
    }

    #[test]
    fn a_down_producer_s_markets_take_no_bets() {
        use RejectReason::*;
        let live = BetDecision::Rejected(ProducerDown { product: Some(1) });
        check_down(|_| {}, &[1], live.clone());
        check_down(|_| {}, &[3, 1], live.clone());
        check_down(|_| {}, &[3], BetDecision::Accepted { odds: 1.9 });
        // Market 1 is suspended: the producer is the reason given.
        check_down(
            |b| {
                b.market = 1;
                b.specifiers = String::new()
            },
            &[1],
            live,
        );
        // Unknown market first, then the producer.
        check_down(|b| b.market = 99, &[1], BetDecision::Rejected(UnknownMarket));
        // Odds of unknown origin (e.g. a state saved before producers were
        // recorded): bettable only while no producer is down.
        let mut s = state();
        s.markets.values_mut().for_each(|m| m.product = None);
        let bet = request();
        assert_eq!(s.decide(&bet, &[]), BetDecision::Accepted { odds: 1.9 });
        assert_eq!(
            s.decide(&bet, &[3]),
            BetDecision::Rejected(ProducerDown { product: None })
        );
        assert_eq!(ProducerDown { product: None }.code(), "producer_down");
    }

    #[test]
    fn ended_match_takes_no_bets() {
        let mut s = state();
        s.summary.status = 3;
        let bet = request();
        assert_eq!(
            s.decide(&bet, &[1]),
            BetDecision::Rejected(RejectReason::MatchEnded { status: 3 })
        );
    }
}
