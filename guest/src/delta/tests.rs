//! The delta's wire shape, table style: events applied in order to a fresh
//! match, then the JSON of the last event's delta (`check`). Whether
//! deltas merge back into snapshots over long streams is checked on the
//! simulator and the samples in `tests/it/delta.rs`.

use serde_json::{Value, json};

use crate::event::*;
use crate::market::status;
use crate::model::MatchState;

fn header(product: u32) -> Header {
    Header {
        product: Some(product),
        event_id: "m".into(),
        timestamp: 7,
        request_id: None,
    }
}

/// An odds_change of product 1 for market 18 `total=2.5` at `st`:
/// (outcome, odds, active).
fn odds(st: i32, outcomes: &[(&str, f64, bool)]) -> MatchEvent {
    odds_from(1, st, outcomes)
}

fn odds_from(product: u32, st: i32, outcomes: &[(&str, f64, bool)]) -> MatchEvent {
    MatchEvent::OddsChange(OddsChange {
        header: header(product),
        sport_event_status: None,
        betting_status: None,
        markets: vec![MarketOdds {
            id: 18,
            specifiers: "total=2.5".into(),
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
        }],
    })
}

/// Both outcomes active at 1.9 and 2.0.
fn book() -> MatchEvent {
    odds(status::ACTIVE, &[("12", 1.9, true), ("13", 2.0, true)])
}

fn stop() -> MatchEvent {
    MatchEvent::BetStop(BetStop {
        header: header(1),
        groups: vec!["all".into()],
        market_status: status::SUSPENDED,
        markets: None,
    })
}

fn settle(outcomes: &[(&str, i8)]) -> MatchEvent {
    MatchEvent::BetSettlement(BetSettlement {
        header: header(1),
        certainty: Some(2),
        markets: vec![SettledMarket {
            id: 18,
            specifiers: "total=2.5".into(),
            void_reason: None,
            outcomes: outcomes
                .iter()
                .map(|(id, r)| SettledOutcome {
                    id: (*id).into(),
                    result: *r,
                    void_factor: None,
                    dead_heat_factor: None,
                })
                .collect(),
        }],
    })
}

fn market_ref() -> MarketRef {
    MarketRef {
        id: 18,
        specifiers: "total=2.5".into(),
    }
}

fn cancel() -> MatchEvent {
    MatchEvent::BetCancel(BetCancel {
        header: header(1),
        start_time: Some(100),
        end_time: None,
        superceded_by: None,
        markets: vec![CancelledMarket {
            id: 18,
            specifiers: "total=2.5".into(),
            void_reason: Some(4),
        }],
    })
}

/// Apply `events` to a fresh match; the last delta's `markets` must be
/// `expected`. Each delta rendered by hand is what serde_json writes for
/// it, also with the `v2` guest's field after it.
fn check(events: &[MatchEvent], expected: Value) {
    let mut s = MatchState::new("m");
    let mut last = Value::Null;
    for e in events {
        let change = s.apply(e);
        let delta = s.delta(e.kind(), &change);
        let derived = serde_json::to_string(&delta).expect("JSON");
        assert_eq!(
            super::json::to_string(&delta).expect("JSON"),
            derived,
            "rendered by hand"
        );
        let extended = super::json::to_string_with(&delta, "events_seen", 3).expect("JSON");
        let flattened = serde_json::to_string(&crate::glue::WithExtension {
            inner: &delta,
            events_seen: 3,
        });
        assert_eq!(extended, flattened.expect("JSON"), "with a field after it");
        last = serde_json::from_str(&derived).expect("JSON");
    }
    assert_eq!(last["markets"], expected, "{last}");
}

#[test]
fn a_new_market_comes_whole() {
    check(
        &[book()],
        json!([{"id": 18, "specifiers": "total=2.5", "status": 1, "favourite": false,
                "outcomes": [{"id": "12", "odds": 1.9, "active": true, "result": null},
                             {"id": "13", "odds": 2.0, "active": true, "result": null}],
                "status_before_resolution": null, "void_reason": null, "certainty": null, "product": 1}]),
    );
}

#[test]
fn a_known_market_carries_only_what_moved_of_the_outcomes_that_moved() {
    let moved = odds(status::ACTIVE, &[("12", 1.8, true), ("13", 2.0, true)]);
    check(
        &[book(), moved],
        json!([{"id": 18, "specifiers": "total=2.5", "outcomes": [{"id": "12", "odds": 1.8}]}]),
    );
    let off = odds(status::ACTIVE, &[("13", 2.0, false)]);
    check(
        &[book(), off],
        json!([{"id": 18, "specifiers": "total=2.5", "outcomes": [{"id": "13", "active": false}]}]),
    );
    let new_outcome = odds(status::ACTIVE, &[("12", 1.9, true), ("14", 9.0, true)]);
    check(
        &[book(), new_outcome],
        json!([{"id": 18, "specifiers": "total=2.5",
                "outcomes": [{"id": "14", "odds": 9.0, "active": true, "result": null}]}]),
    );
}

#[test]
fn an_unchanged_book_and_a_repeat_say_nothing() {
    check(&[book(), book()], json!([]));
    check(&[book(), settle(&[("12", 1)]), settle(&[("12", 1)])], json!([]));
    check(&[book(), stop(), stop()], json!([]));
}

#[test]
fn a_status_change_is_the_status_alone() {
    check(
        &[book(), stop()],
        json!([{"id": 18, "specifiers": "total=2.5", "status": -1}]),
    );
    let deactivated = odds(status::DEACTIVATED, &[("12", 1.9, true), ("13", 2.0, true)]);
    check(
        &[book(), deactivated],
        json!([{"id": 18, "specifiers": "total=2.5", "status": 0}]),
    );
}

#[test]
fn another_producer_s_odds_change_the_product() {
    let from_3 = odds_from(3, status::ACTIVE, &[("12", 1.9, true), ("13", 2.0, true)]);
    check(
        &[from_3, book()],
        json!([{"id": 18, "specifiers": "total=2.5", "product": 1}]),
    );
}

#[test]
fn a_settlement_and_its_rollback() {
    check(
        &[book(), settle(&[("12", 1), ("13", 0)])],
        json!([{"id": 18, "specifiers": "total=2.5", "status": -3, "status_before_resolution": 1, "certainty": 2,
                "outcomes": [{"id": "12", "active": false, "result": {"result": 1, "void_factor": null, "dead_heat_factor": null}},
                             {"id": "13", "active": false, "result": {"result": 0, "void_factor": null, "dead_heat_factor": null}}]}]),
    );
    let rollback = MatchEvent::RollbackBetSettlement(SettlementRollback {
        header: header(1),
        markets: vec![market_ref()],
        outcomes: vec![],
    });
    check(
        &[book(), settle(&[("12", 1)]), rollback],
        json!([{"id": 18, "specifiers": "total=2.5", "status": -1, "status_before_resolution": null, "certainty": null,
                "outcomes": [{"id": "12", "result": null}]}]),
    );
}

#[test]
fn cancels_go_whole_and_an_empty_list_says_none_is_left() {
    check(
        &[book(), cancel()],
        json!([{"id": 18, "specifiers": "total=2.5",
                "cancels": [{"start_time": 100, "end_time": null, "void_reason": 4}]}]),
    );
    let rollback = MatchEvent::RollbackBetCancel(CancelRollback {
        header: header(1),
        markets: vec![market_ref()],
        start_time: Some(100),
        end_time: None,
    });
    check(
        &[book(), cancel(), rollback],
        json!([{"id": 18, "specifiers": "total=2.5", "cancels": []}]),
    );
}

#[test]
fn a_market_first_named_by_a_settlement_or_a_cancel_comes_whole() {
    check(
        &[settle(&[("12", 1)])],
        json!([{"id": 18, "specifiers": "total=2.5", "status": -3, "favourite": false,
                "outcomes": [{"id": "12", "odds": null, "active": false, "result": {"result": 1, "void_factor": null, "dead_heat_factor": null}}],
                "status_before_resolution": 0, "void_reason": null, "certainty": 2}]),
    );
    check(
        &[cancel()],
        json!([{"id": 18, "specifiers": "total=2.5", "status": 0, "favourite": false, "outcomes": [],
                "status_before_resolution": null, "void_reason": null, "certainty": null,
                "cancels": [{"start_time": 100, "end_time": null, "void_reason": 4}]}]),
    );
}

#[test]
fn two_edits_of_one_market_in_one_event_merge() {
    // A rollback naming outcome 13 alone, then the whole market: both
    // outcomes reopen, each listed once.
    let rollback = MatchEvent::RollbackBetSettlement(SettlementRollback {
        header: header(1),
        markets: vec![market_ref()],
        outcomes: vec![OutcomeRollback {
            id: 18,
            specifiers: "total=2.5".into(),
            outcomes: vec!["13".into()],
        }],
    });
    check(
        &[book(), settle(&[("12", 1), ("13", 0)]), rollback],
        json!([{"id": 18, "specifiers": "total=2.5", "status": -1, "status_before_resolution": null, "certainty": null,
                "outcomes": [{"id": "12", "result": null}, {"id": "13", "result": null}]}]),
    );
    // One odds_change listing the market twice: the outcomes of both,
    // each once, with what either edit changed.
    let MatchEvent::OddsChange(mut twice) = odds(status::ACTIVE, &[("12", 1.8, true)]) else {
        unreachable!("an odds_change")
    };
    let MatchEvent::OddsChange(second) = odds(status::ACTIVE, &[("13", 2.1, true), ("12", 1.8, false)]) else {
        unreachable!("an odds_change")
    };
    twice.markets.extend(second.markets);
    check(
        &[book(), MatchEvent::OddsChange(twice)],
        json!([{"id": 18, "specifiers": "total=2.5",
                "outcomes": [{"id": "12", "odds": 1.8, "active": false}, {"id": "13", "odds": 2.1}]}]),
    );
    // A settlement naming an outcome the market did not have: that one whole.
    check(
        &[book(), settle(&[("14", 1)])],
        json!([{"id": 18, "specifiers": "total=2.5", "status": -3, "status_before_resolution": 1, "certainty": 2,
                "outcomes": [{"id": "14", "odds": null, "active": false, "result": {"result": 1, "void_factor": null, "dead_heat_factor": null}}]}]),
    );
}
