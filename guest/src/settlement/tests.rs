//! Settlement rules, table style: events applied in order to a match with
//! one open market (18 `total=2.5`: Over "12", Under "13"), then bets on it
//! judged by `settle`.

use super::*;
use crate::event::*;

const SPEC: &str = "total=2.5";
const STAKE: f64 = 10.0;
const ODDS: f64 = 2.0;

fn header() -> Header {
    Header {
        product: Some(1),
        event_id: "m".into(),
        timestamp: 1,
        request_id: None,
    }
}

fn market_ref() -> MarketRef {
    MarketRef {
        id: 18,
        specifiers: SPEC.into(),
    }
}

/// The market offered: both outcomes active at [`ODDS`], status `st`.
fn odds(st: i32) -> MatchEvent {
    MatchEvent::OddsChange(OddsChange {
        header: header(),
        sport_event_status: None,
        betting_status: None,
        markets: vec![MarketOdds {
            id: 18,
            specifiers: SPEC.into(),
            status: st,
            favourite: false,
            outcomes: ["12", "13"]
                .map(|id| OutcomeOdds {
                    id: id.into(),
                    odds: Some(ODDS),
                    active: true,
                })
                .into(),
        }],
    })
}

/// A settlement of market 18: (outcome, result, void_factor, dead_heat_factor).
fn settle(certainty: Option<u8>, outcomes: &[(&str, i8, Option<f64>, Option<f64>)]) -> MatchEvent {
    MatchEvent::BetSettlement(BetSettlement {
        header: header(),
        certainty,
        markets: vec![SettledMarket {
            id: 18,
            specifiers: SPEC.into(),
            void_reason: None,
            outcomes: outcomes
                .iter()
                .map(|&(id, result, void_factor, dead_heat_factor)| SettledOutcome {
                    id: id.into(),
                    result,
                    void_factor,
                    dead_heat_factor,
                })
                .collect(),
        }],
    })
}

/// Over won, Under lost, confirmed.
fn over_won() -> MatchEvent {
    settle(Some(2), &[("12", 1, None, None), ("13", 0, None, None)])
}

fn cancel(start_time: Option<i64>, end_time: Option<i64>) -> MatchEvent {
    MatchEvent::BetCancel(BetCancel {
        header: header(),
        start_time,
        end_time,
        superceded_by: None,
        markets: vec![CancelledMarket {
            id: 18,
            specifiers: SPEC.into(),
            void_reason: Some(12),
        }],
    })
}

fn rollback_cancel(start_time: Option<i64>, end_time: Option<i64>) -> MatchEvent {
    MatchEvent::RollbackBetCancel(CancelRollback {
        header: header(),
        markets: vec![market_ref()],
        start_time,
        end_time,
    })
}

/// Roll back the settlement of market 18: whole when `outcomes` is empty,
/// else only those outcomes.
fn rollback_settlement(outcomes: &[&str]) -> MatchEvent {
    let (markets, outcomes) = if outcomes.is_empty() {
        (vec![market_ref()], vec![])
    } else {
        let only = OutcomeRollback {
            id: 18,
            specifiers: SPEC.into(),
            outcomes: outcomes.iter().map(|o| (*o).to_owned()).collect(),
        };
        (vec![], vec![only])
    };
    MatchEvent::RollbackBetSettlement(SettlementRollback {
        header: header(),
        markets,
        outcomes,
    })
}

fn bet(outcome: &str, placed_at: i64) -> OpenBet {
    OpenBet {
        market: 18,
        specifiers: SPEC.into(),
        outcome: outcome.into(),
        odds: ODDS,
        stake: STAKE,
        placed_at,
    }
}

/// A match with market 18 open, then `events`.
fn state(events: &[MatchEvent]) -> MatchState {
    let mut s = MatchState::new("m");
    s.apply(&odds(status::ACTIVE));
    for e in events {
        s.apply(e);
    }
    s
}

use SettleStatus::{Lost, Open, Void, Won};

/// After `events`, each bet (outcome, placed at) stands as expected
/// (status, payout).
fn check(events: &[MatchEvent], bets: &[(&str, i64, SettleStatus, f64)]) -> MatchState {
    let s = state(events);
    for &(outcome, placed_at, status, payout) in bets {
        let got = s.settle(&bet(outcome, placed_at));
        assert_eq!(
            (got.status, got.payout),
            (status, payout),
            "bet on {outcome} placed at {placed_at} after {events:#?}"
        );
    }
    s
}

#[test]
fn windowed_cancels_void_only_the_bets_placed_inside() {
    // Bets on Over placed at 50, 100, 150, 200 and 250; is each void?
    let placed = [50, 100, 150, 200, 250];
    for (window, void) in [
        ((Some(100), Some(200)), [false, true, true, false, false]),
        ((None, Some(200)), [true, true, true, false, false]),
        ((Some(100), None), [false, true, true, true, true]),
        ((None, None), [true; 5]),
    ] {
        let bets: Vec<_> = placed
            .iter()
            .zip(void)
            .map(|(&at, void)| ("12", at, if void { Void } else { Open }, if void { STAKE } else { 0.0 }))
            .collect();
        let s = check(&[cancel(window.0, window.1)], &bets);
        let m = s.market(18, SPEC).expect("market");
        assert_eq!(m.status, status::ACTIVE, "a cancel leaves the status to odds_change");
        // A settlement after it pays the bets outside the window only.
        let bets: Vec<_> = placed
            .iter()
            .zip(void)
            .map(|(&at, void)| ("12", at, if void { Void } else { Won }, if void { STAKE } else { 20.0 }))
            .collect();
        check(&[cancel(window.0, window.1), over_won()], &bets);
    }
}

#[test]
fn a_repeated_cancel_changes_nothing() {
    let mut s = state(&[cancel(Some(100), Some(200))]);
    assert!(s.apply(&cancel(Some(100), Some(200))).markets.is_empty());
    assert_eq!(s.market(18, SPEC).expect("market").cancels.len(), 1);
    assert_eq!(s.apply(&cancel(Some(300), None)).markets.len(), 1, "another window");
}

#[test]
fn rolling_back_a_cancel_restores_the_bets_as_they_were() {
    let settled_then_cancelled = [over_won(), cancel(Some(100), Some(200))];
    check(
        &settled_then_cancelled,
        &[
            ("12", 150, Void, STAKE),
            ("12", 250, Won, 20.0),
            ("13", 150, Void, STAKE),
        ],
    );
    let mut events = settled_then_cancelled.to_vec();
    // Another window rolls back nothing.
    events.push(rollback_cancel(Some(100), Some(300)));
    check(&events, &[("12", 150, Void, STAKE)]);
    // The same window restores the earlier settlement.
    events.push(rollback_cancel(Some(100), Some(200)));
    let s = check(&events, &[("12", 150, Won, 20.0), ("13", 150, Lost, 0.0)]);
    assert_eq!(s.market(18, SPEC).expect("market").status, status::SETTLED);
    // Cancelled while open: rolled back, open again.
    check(
        &[cancel(None, Some(200)), rollback_cancel(None, Some(200))],
        &[("12", 150, Open, 0.0)],
    );
}

#[test]
fn a_rollback_undoes_only_the_cancel_of_its_window() {
    let two = [cancel(Some(100), Some(200)), cancel(Some(300), Some(400))];
    let mut events = two.to_vec();
    events.push(rollback_cancel(Some(100), Some(200)));
    check(&events, &[("12", 150, Open, 0.0), ("12", 350, Void, STAKE)]);
    // A rollback naming no window, when none matches, undoes them all.
    let mut events = two.to_vec();
    events.push(rollback_cancel(None, None));
    check(&events, &[("12", 150, Open, 0.0), ("12", 350, Open, 0.0)]);
}

#[test]
fn undecided_outcomes_stay_open_and_the_rest_applies() {
    let partly = settle(Some(1), &[("12", -1, None, None), ("13", 0, None, None)]);
    let s = check(
        std::slice::from_ref(&partly),
        &[("12", 1, Open, 0.0), ("13", 1, Lost, 0.0)],
    );
    assert_eq!(s.market(18, SPEC).expect("market").status, status::SETTLED);
    let snap = serde_json::to_value(s.snapshot()).expect("json");
    assert_eq!(snap["markets"][0]["outcomes"][0]["result"]["result"], -1, "{snap}");
    // Decided later...
    let decided = settle(Some(2), &[("12", 1, None, None)]);
    check(&[partly.clone(), decided.clone()], &[("12", 1, Won, 20.0)]);
    // ...and a later undecided does not reopen it.
    check(
        &[partly.clone(), decided, partly],
        &[("12", 1, Won, 20.0), ("13", 1, Lost, 0.0)],
    );
}

#[test]
fn a_settlement_repeated_settles_each_bet_once() {
    let live = settle(Some(1), &[("12", 1, None, None), ("13", 0, None, None)]);
    let mut s = state(&[]);
    assert_eq!(s.apply(&live).markets.len(), 1);
    let first = s.settle(&bet("12", 1));
    assert_eq!((first.status, first.payout), (Won, 20.0));
    // Confirmed with the same result: the market shows certainty 2, the
    // bet's settlement is unchanged (the host notifies on a change only).
    assert_eq!(s.apply(&over_won()).markets.len(), 1, "certainty 1 → 2");
    assert_eq!(s.settle(&bet("12", 1)), first);
    assert_eq!(s.market(18, SPEC).expect("market").certainty, Some(2));
    // Again (another producer, a recovery, a live-scouted straggler).
    for again in [over_won(), live] {
        assert!(s.apply(&again).markets.is_empty(), "{again:?}");
        assert_eq!(s.settle(&bet("12", 1)), first);
        assert_eq!(s.market(18, SPEC).expect("market").certainty, Some(2));
    }
}

#[test]
fn a_settled_market_stays_settled_through_odds_changes() {
    let mut s = state(&[over_won()]);
    for st in [status::ACTIVE, status::SUSPENDED, status::DEACTIVATED] {
        assert!(s.apply(&odds(st)).markets.is_empty(), "odds_change at {st}");
    }
    let m = s.market(18, SPEC).expect("market");
    assert_eq!(m.status, status::SETTLED);
    assert!(m.outcomes.iter().all(|o| o.result.is_some() && !o.active));
    assert_eq!(s.settle(&bet("12", 1)).status, Won);
    // Reopened by its rollback: suspended until fresh odds...
    s.apply(&rollback_settlement(&[]));
    assert_eq!(s.market(18, SPEC).expect("market").status, status::SUSPENDED);
    assert_eq!(s.settle(&bet("12", 1)).status, Open);
    // ...which it takes again.
    s.apply(&odds(status::ACTIVE));
    assert_eq!(s.market(18, SPEC).expect("market").status, status::ACTIVE);
}

#[test]
fn an_outcome_level_rollback_reopens_only_its_outcomes() {
    let mut events = vec![over_won(), rollback_settlement(&["12"])];
    let s = check(&events, &[("12", 1, Open, 0.0), ("13", 1, Lost, 0.0)]);
    let m = s.market(18, SPEC).expect("market");
    assert_eq!((m.status, m.certainty), (status::SETTLED, Some(2)), "still settled");
    events.push(rollback_settlement(&["13"]));
    let s = check(&events, &[("12", 1, Open, 0.0), ("13", 1, Open, 0.0)]);
    let m = s.market(18, SPEC).expect("market");
    assert_eq!((m.status, m.certainty), (status::SUSPENDED, None), "open again");
    // Rolling back what is not settled changes nothing.
    let mut s = state(&[]);
    assert!(s.apply(&rollback_settlement(&[])).markets.is_empty());
    assert_eq!(s.market(18, SPEC).expect("market").status, status::ACTIVE);
}

#[test]
fn payouts_with_void_and_dead_heat_factors() {
    // (result, void_factor, dead_heat_factor, odds) → (status, payout) of a
    // 10 stake. payout = stake × vf + stake × (1 − vf) × (won ? odds × dhf : 0)
    type Case = (i8, Option<f64>, Option<f64>, f64, SettleStatus, f64);
    let cases: &[Case] = &[
        (1, None, None, 2.0, Won, 20.0),
        (0, None, None, 2.0, Lost, 0.0),
        (0, Some(1.0), None, 2.0, Void, 10.0),
        // Dead heat: a two-way tie pays half.
        (1, None, Some(0.5), 3.0, Won, 15.0),
        (1, Some(0.5), Some(0.5), 2.0, Won, 10.0),
        // Asian handicap quarter lines (the feed sends the split as a half
        // void factor). Home -0.25 = 0 and -0.5: a draw pushes the 0 half
        // and loses the -0.5 half: half loss, 5 back.
        (0, Some(0.5), None, 1.9, Void, 5.0),
        // Home -0.75 = -0.5 and -1, home wins by one: the -0.5 half wins at
        // the odds, the -1 half is refunded: half win, 5 + 5 × 1.9.
        (1, Some(0.5), None, 1.9, Won, 14.5),
        // Away +0.25 on a draw: the 0 half pushes, the +0.5 half wins.
        (1, Some(0.5), None, 2.1, Won, 15.5),
        // Away +0.75 when home wins by one: the +1 half pushes, the +0.5
        // half loses.
        (0, Some(0.5), None, 2.1, Void, 5.0),
        // Full wins and losses of the same lines carry no void factor.
        (1, None, None, 1.9, Won, 19.0),
        (0, None, None, 1.9, Lost, 0.0),
    ];
    for &(result, vf, dhf, odds, status, payout) in cases {
        let s = state(&[settle(Some(2), &[("12", result, vf, dhf)])]);
        let got = s.settle(&OpenBet { odds, ..bet("12", 1) });
        assert_eq!(got.status, status, "{result} {vf:?} {dhf:?} at {odds}");
        assert!(
            (got.payout - payout).abs() < 1e-9,
            "{result} {vf:?} {dhf:?} at {odds}: {} ≠ {payout}",
            got.payout
        );
        assert_eq!(
            (got.void_factor, got.dead_heat_factor),
            (vf.unwrap_or(0.0), dhf.unwrap_or(1.0))
        );
    }
}

#[test]
fn unknown_markets_and_outcomes_are_open() {
    let s = state(&[over_won()]);
    assert_eq!(
        s.settle(&OpenBet {
            market: 99,
            ..bet("12", 1)
        })
        .status,
        Open
    );
    assert_eq!(
        s.settle(&bet("99", 1)).status,
        Open,
        "an outcome the settlement did not name"
    );
}

#[test]
fn json_shows_cancels_and_certainty() {
    let s = state(&[cancel(Some(100), None), settle(Some(1), &[("12", 1, None, None)])]);
    let snap = serde_json::to_value(s.snapshot()).expect("json");
    let m = &snap["markets"][0];
    assert_eq!(m["certainty"], 1, "{m}");
    assert_eq!(
        m["cancels"],
        serde_json::json!([{"start_time": 100, "end_time": null, "void_reason": 12}])
    );
    let plain = serde_json::to_value(state(&[]).snapshot()).expect("json");
    assert!(plain["markets"][0].get("cancels").is_none(), "{plain}");
}

#[test]
fn the_part_round_trips() {
    let mut s = state(&[cancel(Some(1), Some(2)), over_won()]);
    s.fixture.change_type = Some(3);
    let part: SettlementPart = crate::decode(&crate::encode(&SettlementPart::of(&s))).expect("decode");
    assert_eq!(part.cancels.len(), 1);
    let mut back = s.clone();
    back.fixture = Fixture::default();
    back.markets.values_mut().for_each(|m| m.cancels.clear());
    part.restore_into(&mut back);
    assert_eq!(back, s);
}

#[test]
fn a_cancel_of_an_older_layout_keeps_its_bets_void() {
    // What a guest before layout 4 held after a bet_cancel: status -4, the
    // status before it remembered.
    let mut s = state(&[]);
    let m = s.markets.get_mut(&(18, SPEC.into())).expect("market");
    (m.status_before_resolution, m.status, m.void_reason) = (Some(status::ACTIVE), status::CANCELLED, Some(12));
    SettlementPart::restore_older(&mut s);
    let m = s.market(18, SPEC).expect("market");
    assert_eq!((m.status, m.status_before_resolution), (status::CANCELLED, None));
    assert_eq!(s.settle(&bet("12", 1)).status, Void);
    s.apply(&rollback_cancel(None, None));
    assert_eq!(s.settle(&bet("12", 1)).status, Open);
}
