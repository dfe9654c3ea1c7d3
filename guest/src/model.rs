//! The match model: state of one match and how each feed event changes it.
//!
//! Pure and deterministic: `MatchState::apply` turns an event into a new
//! state plus a [`Change`] naming exactly what changed, which
//! [`crate::delta`] renders as the update's [`Delta`]. No IO, no clock, no
//! randomness, so the same journal always rebuilds the same state. The JSON
//! views here are the wire format of `snapshot` and `update` frames. Which
//! producer's odds count is [`crate::producer`]'s rule; settlements,
//! cancellations and their rollbacks are [`crate::settlement`]'s, fixture
//! changes [`crate::fixture`]'s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::delta::Head;
pub use crate::delta::{Change, Delta, Fields, MarketChange, MarketDelta, MarketPart, OutcomeDelta, OutcomeFields};
use crate::event::{BetStop, Clock, MatchEvent, OddsChange, PeriodScore, SportEventStatus};
pub use crate::fixture::Fixture;
pub use crate::market::{Market, MarketKey, MarketView, Outcome, OutcomeResult, market_groups, status};
pub use crate::producer::Producers;
use crate::producer::hand_over_applies;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MatchState {
    pub match_id: String,
    pub summary: Summary,
    pub markets: BTreeMap<MarketKey, Market>,
    /// Producer timestamp of the last applied event.
    pub updated_at: i64,
    /// Owner and hand-overs. Not part of the `MatchState` encoding (layout
    /// v1, which older guests read as a prefix): saved in the producer part
    /// appended after it (see `glue`).
    #[serde(skip)]
    pub producers: Producers,
    /// What the fixture_changes said (cancelled or not). Not in this
    /// encoding either: saved in the settlement part (layout 4).
    #[serde(skip)]
    pub fixture: Fixture,
}

/// Score, clock and status: what a scoreboard shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// sport_event_status/@status: 0 not started, 1 live, 2 suspended,
    /// 3 ended, 4 closed.
    pub status: i32,
    pub match_status: Option<i32>,
    pub score: Score,
    pub clock: Option<Clock>,
    pub period_scores: Vec<PeriodScore>,
    pub start_time: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub home: f64,
    pub away: f64,
}

/// The scoreboard as the JSON views show it: the summary's fields, the
/// producer that owns the match (`"producer": P`, absent while unknown),
/// the last fixture change type (`"fixture_change": T`, absent while none)
/// and whether the event is cancelled (`"cancelled"`, always there, so a
/// client merging summaries sees it lifted). A snapshot flattens it into
/// the state, and a client merges a delta's `summary` into that state, so
/// an owner or fixture change travels in `summary`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummaryView<'a> {
    #[serde(flatten)]
    pub summary: &'a Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub producer: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixture_change: Option<i32>,
    pub cancelled: bool,
}

/// The `state` of a snapshot frame.
#[derive(Debug, Serialize)]
pub struct SnapshotView<'a> {
    #[serde(rename = "match")]
    pub match_id: &'a str,
    #[serde(flatten)]
    pub summary: SummaryView<'a>,
    pub updated_at: i64,
    pub markets: Vec<MarketView<'a>>,
}

impl MatchState {
    pub fn new(match_id: impl Into<String>) -> Self {
        MatchState {
            match_id: match_id.into(),
            ..Default::default()
        }
    }

    pub fn market(&self, id: u32, specifiers: &str) -> Option<&Market> {
        self.markets.get(&(id, specifiers.into()))
    }

    /// Apply one event; returns what it changed: markets (and in them which
    /// fields and outcomes) and whether the summary changed. Use
    /// [`MatchState::delta`] to render it.
    pub fn apply(&mut self, event: &MatchEvent) -> Change {
        if let MatchEvent::OddsChange(e) = event
            && self.producers.ignores(e.header.product)
        {
            // Its producer handed the match over: stale, not even a timestamp.
            return Change::default();
        }
        self.updated_at = self.updated_at.max(event.header().timestamp);
        match event {
            MatchEvent::OddsChange(e) => self.odds_change(e),
            MatchEvent::BetStop(e) => self.bet_stop(e),
            MatchEvent::BetSettlement(e) => self.bet_settlement(e),
            MatchEvent::BetCancel(e) => self.bet_cancel(e),
            MatchEvent::RollbackBetSettlement(e) => self.rollback_settlement(e),
            MatchEvent::RollbackBetCancel(e) => self.rollback_cancel(e),
            MatchEvent::FixtureChange(e) => self.fixture_change(e),
        }
    }

    pub(crate) fn summary_view(&self) -> SummaryView<'_> {
        SummaryView {
            summary: &self.summary,
            producer: self.producers.owner,
            fixture_change: self.fixture.change_type,
            cancelled: self.fixture.cancelled(),
        }
    }

    pub fn snapshot(&self) -> SnapshotView<'_> {
        SnapshotView {
            match_id: &self.match_id,
            summary: self.summary_view(),
            updated_at: self.updated_at,
            markets: self.markets.values().map(Market::view).collect(),
        }
    }

    fn odds_change(&mut self, e: &OddsChange) -> Change {
        let from = e.header.product;
        let hands_over = e.markets.iter().any(|m| m.status == status::HANDED_OVER);
        let mut change = Change::default();
        if self.producers.taken_by(from, hands_over) {
            change.summary = self.producers.own(from);
            if let Some(ses) = &e.sport_event_status {
                change.summary |= self.summary.update(ses);
            }
        }
        for m in &e.markets {
            let key = (m.id, m.specifiers.clone());
            // Feeds resend whole books; only what actually moved is a change.
            match self.markets.get_mut(&key) {
                // Settled: only a rollback reopens it.
                Some(market) if market.is_settled() => {}
                // Another producer's odds arrived: the market stays theirs.
                Some(market) if m.status == status::HANDED_OVER && !hand_over_applies(market.product, from) => {}
                Some(market) => {
                    let before = Head::of(market);
                    let mut outcomes = Vec::new();
                    market.take_odds(m, from, &mut outcomes);
                    change.edited(&key, &before, market, outcomes);
                }
                None => {
                    let mut market = Market::new(m.id, &m.specifiers);
                    market.take_odds(m, from, &mut Vec::new());
                    self.markets.insert(key.clone(), market);
                    change.created(key);
                }
            }
        }
        if hands_over {
            self.producers.hand_over(from);
        }
        change
    }

    /// Stop the active markets of the named groups: those the host
    /// resolved from the market descriptions, else those of the built-in
    /// table (`all`: every active market).
    fn bet_stop(&mut self, e: &BetStop) -> Change {
        let all = e.groups.iter().any(|g| g == "all");
        let stops = |id: u32| match &e.markets {
            Some(ids) => ids.contains(&id),
            None => market_groups(id).iter().any(|g| e.groups.iter().any(|s| s == g)),
        };
        let mut change = Change::default();
        for (key, market) in self.markets.iter_mut() {
            if market.status != status::ACTIVE {
                continue;
            }
            if all || stops(market.id) {
                let before = Head::of(market);
                market.status = e.market_status;
                change.edited(key, &before, market, Vec::new());
            }
        }
        change
    }
}

impl Summary {
    /// Fold a sport_event_status in; returns whether anything changed.
    fn update(&mut self, ses: &SportEventStatus) -> bool {
        // Field by field, copying only what differs (no clone of the whole
        // summary per event).
        fn set<T: PartialEq + Clone>(slot: &mut T, value: &T) -> bool {
            let differs = slot != value;
            if differs {
                *slot = value.clone();
            }
            differs
        }
        let mut changed = set(&mut self.status, &ses.status);
        if ses.match_status.is_some() {
            changed |= set(&mut self.match_status, &ses.match_status);
        }
        if let Some(h) = &ses.home_score {
            changed |= set(&mut self.score.home, h);
        }
        if let Some(a) = &ses.away_score {
            changed |= set(&mut self.score.away, a);
        }
        if ses.clock.is_some() {
            changed |= set(&mut self.clock, &ses.clock);
        }
        if !ses.period_scores.is_empty() {
            changed |= set(&mut self.period_scores, &ses.period_scores);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::*;

    fn header() -> Header {
        Header {
            product: Some(1),
            event_id: "sr:match:1".into(),
            timestamp: 10,
            request_id: None,
        }
    }

    fn odds(id: u32, spec: &str, st: i32, outcomes: &[(&str, f64, bool)]) -> MarketOdds {
        MarketOdds {
            id,
            specifiers: spec.into(),
            status: st,
            favourite: false,
            outcomes: outcomes
                .iter()
                .map(|(id, o, a)| OutcomeOdds {
                    id: (*id).into(),
                    odds: Some(*o),
                    active: *a,
                })
                .collect(),
        }
    }

    fn oc(markets: Vec<MarketOdds>, ses: Option<SportEventStatus>) -> MatchEvent {
        MatchEvent::OddsChange(OddsChange {
            header: header(),
            sport_event_status: ses,
            betting_status: None,
            markets,
        })
    }

    /// Apply `events` to a fresh state and check the status of `(id, spec)`.
    fn check(events: &[MatchEvent], id: u32, spec: &str, expected_status: i32) -> MatchState {
        let mut s = MatchState::new("sr:match:1");
        for e in events {
            s.apply(e);
        }
        assert_eq!(
            s.market(id, spec).map(|m| m.status),
            Some(expected_status),
            "market {id} {spec}"
        );
        s
    }

    #[test]
    fn odds_change_creates_and_updates_markets() {
        let s = check(
            &[
                oc(vec![odds(1, "", 1, &[("1", 2.0, true), ("2", 3.0, true)])], None),
                oc(vec![odds(1, "", 1, &[("1", 2.1, true)])], None),
            ],
            1,
            "",
            status::ACTIVE,
        );
        let m = s.market(1, "").expect("market");
        assert_eq!(m.outcomes[0].odds, Some(2.1));
        assert_eq!(
            m.outcomes[1].odds,
            Some(3.0),
            "outcomes not in the message keep their odds"
        );
    }

    #[test]
    fn only_markets_that_moved_are_a_change() {
        let mut s = MatchState::new("m");
        let book = |o: f64| {
            oc(
                vec![
                    odds(1, "", 1, &[("1", 2.0, true)]),
                    odds(18, "total=2.5", 1, &[("12", o, true)]),
                ],
                None,
            )
        };
        assert_eq!(s.apply(&book(1.9)).markets.len(), 2, "new markets are changes");
        assert!(
            s.apply(&book(1.9)).markets.is_empty(),
            "a resent, unchanged book changes nothing"
        );
        assert_eq!(
            s.apply(&book(1.8)).markets.into_keys().collect::<Vec<_>>(),
            [(18, "total=2.5".into())]
        );
    }

    #[test]
    fn summary_change_is_reported_once() {
        let ses = SportEventStatus {
            status: 1,
            home_score: Some(1.0),
            away_score: Some(0.0),
            ..Default::default()
        };
        let mut s = MatchState::new("m");
        assert!(s.apply(&oc(vec![], Some(ses.clone()))).summary);
        assert!(
            !s.apply(&oc(vec![], Some(ses))).summary,
            "unchanged status is not a change"
        );
        assert_eq!(s.summary.score, Score { home: 1.0, away: 0.0 });
    }

    #[test]
    fn bet_stop_all_suspends_only_active_markets() {
        let stop = MatchEvent::BetStop(BetStop {
            header: header(),
            groups: vec!["all".into()],
            market_status: -1,
            markets: None,
        });
        let events = [oc(vec![odds(1, "", 1, &[]), odds(18, "total=2.5", 0, &[])], None), stop];
        let s = check(&events, 1, "", status::SUSPENDED);
        assert_eq!(s.market(18, "total=2.5").map(|m| m.status), Some(status::DEACTIVATED));
    }

    #[test]
    fn bet_stop_by_group_spares_other_groups() {
        let stop = MatchEvent::BetStop(BetStop {
            header: header(),
            groups: vec!["corners".into()],
            market_status: -1,
            markets: None,
        });
        let s = check(
            &[oc(vec![odds(1, "", 1, &[]), odds(166, "", 1, &[])], None), stop],
            166,
            "",
            status::SUSPENDED,
        );
        assert_eq!(s.market(1, "").map(|m| m.status), Some(status::ACTIVE));
    }

    #[test]
    fn bet_stop_resolved_by_the_host_stops_exactly_those_markets() {
        // The host says "corners" means market 1 here: its word, not the table's.
        let stop = MatchEvent::BetStop(BetStop {
            header: header(),
            groups: vec!["corners".into()],
            market_status: -1,
            markets: Some(vec![1, 18]),
        });
        let events = [
            oc(
                vec![
                    odds(1, "", 1, &[]),
                    odds(166, "", 1, &[]),
                    odds(18, "total=2.5", 0, &[]),
                ],
                None,
            ),
            stop,
        ];
        let s = check(&events, 1, "", status::SUSPENDED);
        assert_eq!(s.market(166, "").map(|m| m.status), Some(status::ACTIVE));
        // Inactive markets of the group keep their status.
        assert_eq!(s.market(18, "total=2.5").map(|m| m.status), Some(status::DEACTIVATED));
    }

    #[test]
    fn settlement_and_rollback() {
        let settle = MatchEvent::BetSettlement(BetSettlement {
            header: header(),
            certainty: Some(2),
            markets: vec![SettledMarket {
                id: 1,
                specifiers: String::new(),
                void_reason: None,
                outcomes: vec![SettledOutcome {
                    id: "1".into(),
                    result: 1,
                    void_factor: None,
                    dead_heat_factor: Some(0.5),
                }],
            }],
        });
        let s = check(
            &[oc(vec![odds(1, "", 1, &[("1", 2.0, true)])], None), settle.clone()],
            1,
            "",
            status::SETTLED,
        );
        let r = &s.market(1, "").expect("market").outcomes[0].result;
        assert_eq!(r.as_ref().and_then(|r| r.dead_heat_factor), Some(0.5));
        let rollback = MatchEvent::RollbackBetSettlement(SettlementRollback {
            header: header(),
            markets: vec![MarketRef {
                id: 1,
                specifiers: String::new(),
            }],
            outcomes: vec![],
        });
        let s = check(
            &[oc(vec![odds(1, "", 1, &[("1", 2.0, true)])], None), settle, rollback],
            1,
            "",
            status::SUSPENDED,
        );
        assert!(s.market(1, "").expect("market").outcomes[0].result.is_none());
    }

    #[test]
    fn a_cancel_and_its_rollback_leave_the_status_to_odds_change() {
        let cancel = MatchEvent::BetCancel(BetCancel {
            header: header(),
            start_time: None,
            end_time: None,
            superceded_by: None,
            markets: vec![CancelledMarket {
                id: 18,
                specifiers: "total=2.5".into(),
                void_reason: Some(12),
            }],
        });
        let base = oc(vec![odds(18, "total=2.5", 1, &[])], None);
        let s = check(&[base.clone(), cancel.clone()], 18, "total=2.5", status::ACTIVE);
        assert_eq!(s.market(18, "total=2.5").expect("market").cancels.len(), 1);
        let rollback = MatchEvent::RollbackBetCancel(CancelRollback {
            header: header(),
            markets: vec![MarketRef {
                id: 18,
                specifiers: "total=2.5".into(),
            }],
            start_time: None,
            end_time: None,
        });
        let s = check(&[base, cancel, rollback], 18, "total=2.5", status::ACTIVE);
        assert!(s.market(18, "total=2.5").expect("market").cancels.is_empty());
    }

    #[test]
    fn delta_and_snapshot_json_shape() {
        let mut s = MatchState::new("sr:match:1");
        let book = |o: f64| oc(vec![odds(68, "total=2.5", 1, &[("13", o, true)])], None);
        let first = s.apply(&book(1.4));
        assert!(
            first.summary,
            "the first producer to own the match changes the scoreboard"
        );
        let ch = s.apply(&book(1.5));
        let delta = serde_json::to_value(s.delta("odds_change", &ch)).expect("json");
        assert_eq!(delta["markets"][0]["outcomes"][0]["odds"], 1.5);
        assert!(delta.get("summary").is_none());
        let snap = serde_json::to_value(s.snapshot()).expect("json");
        assert_eq!(snap["match"], "sr:match:1");
        assert_eq!(snap["status"], 0);
        assert_eq!(snap["score"]["home"], 0.0);
        assert_eq!(snap["markets"][0]["specifiers"], "total=2.5");
    }

    #[test]
    fn state_round_trips_through_the_codec() {
        let mut s = MatchState::new("sr:match:1");
        s.apply(&oc(vec![odds(1, "", 1, &[("1", 2.0, true)])], None));
        let back: MatchState = crate::decode(&crate::encode(&s)).expect("decode");
        // Producers are not in this encoding (glue saves them after it).
        let mut expected = s.clone();
        expected.producers = Producers::default();
        expected.markets.values_mut().for_each(|m| m.product = None);
        assert_eq!(back, expected);
    }
}
