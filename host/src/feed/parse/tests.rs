//! The parser on hand-written messages: what is rejected, and what applies
//! with its problems reported. (The real samples are parsed in
//! `tests/it/feed.rs`.)

use super::*;
use touchline_guest::event::{
    BetCancel, BetSettlement, CancelRollback, MarketRef, OddsChange, OutcomeRollback, SettlementRollback,
};

fn check_err(xml: &str, kind: &str) {
    let mut problems = Vec::new();
    let err = parse_reporting(xml.as_bytes(), &mut problems).expect_err("must be rejected");
    assert_eq!(err.kind(), kind, "{err}");
    assert!(
        problems.is_empty(),
        "a rejected message reports no problems: {problems:?}"
    );
}

/// Parse `xml`: it applies, with exactly these (kind, field) problems.
fn check(xml: &str, expected: &[(&str, &str)]) -> FeedMessage {
    let mut problems = Vec::new();
    let msg = parse_reporting(xml.as_bytes(), &mut problems).unwrap_or_else(|e| panic!("{xml}: {e}"));
    let got: Vec<(&str, &str)> = problems.iter().map(|p| (p.kind, p.field)).collect();
    assert_eq!(got, expected, "{xml}");
    msg
}

macro_rules! variant {
    ($msg:expr, $variant:path) => {
        match $msg {
            FeedMessage::Match($variant(e)) => e,
            other => panic!("got {other:?}"),
        }
    };
}

#[test]
fn rejects_only_messages_without_their_structure() {
    check_err("<bogus product=\"1\"/>", "unknown_type");
    check_err("<bet_stop product=\"1\" timestamp=\"soon\"/>", "missing_attribute");
    check_err(
        "<odds_change event_id=\"m\"><odds><market id=\"x\"/></odds></odds_change>",
        "bad_value",
    );
    check_err(
        "<odds_change event_id=\"m\"><odds><market id=\"1\"><outcome odds=\"2\"/></market></odds></odds_change>",
        "missing_attribute",
    );
    check_err(
        "<bet_settlement event_id=\"m\"><outcomes><market><outcome id=\"1\" result=\"1\"/></market></outcomes></bet_settlement>",
        "missing_attribute",
    );
    check_err(
        "<bet_settlement event_id=\"m\"><outcomes><market id=\"1\"><outcome result=\"1\"/></market></outcomes></bet_settlement>",
        "missing_attribute",
    );
    check_err(
        "<rollback_bet_settlement event_id=\"m\"><market id=\"1\"><outcome/></market></rollback_bet_settlement>",
        "missing_attribute",
    );
    // Not well-formed: an undefined entity.
    check_err("<bet_stop event_id=\"m\" timestamp=\"&soon;\"/>", "bad_value");
    check_err("<odds_change event_id=\"m\"><odds></market></odds_change>", "malformed");
    check_err("<odds_change event_id=\"m\"><odds>", "malformed");
    check_err("<cashout event_id=\"m\"><odds>", "malformed");
    check_err("   ", "empty");
    // A match id that cannot name a worker, a store key or a subject.
    check_err("<bet_stop event_id=\"\" product=\"1\"/>", "bad_value");
    check_err("<bet_stop event_id=\"sr:match:1&#9;x\" product=\"1\"/>", "bad_value");
    check_err("<bet_stop event_id=\"sr:match:1&#0;\" product=\"1\"/>", "bad_value");
    let long = format!("<bet_stop event_id=\"{}\" product=\"1\"/>", "m".repeat(257));
    check_err(&long, "bad_value");
    let longest = format!("<bet_stop event_id=\"{}\" product=\"1\"/>", "m".repeat(256));
    check(&longest, &[]);
}

#[test]
fn bet_stop_defaults() {
    let b = variant!(
        check("<bet_stop event_id=\"sr:match:1\" groups=\"goal|corner\"/>", &[]),
        MatchEvent::BetStop
    );
    assert_eq!(b.groups, ["goal", "corner"]);
    assert_eq!(b.market_status, -1);
}

#[test]
fn an_unreadable_optional_attribute_is_dropped_and_reported() {
    let b = variant!(
        check(
            "<bet_stop event_id=\"m\" product=\"one\" timestamp=\"soon\" market_status=\"x\"/>",
            &[
                ("bet_stop", "product"),
                ("bet_stop", "timestamp"),
                ("bet_stop", "market_status")
            ],
        ),
        MatchEvent::BetStop
    );
    assert_eq!(
        (
            b.header.event_id.as_str(),
            b.header.product,
            b.header.timestamp,
            b.market_status
        ),
        ("m", None, 0, -1)
    );
    let f = variant!(
        check(
            "<fixture_change event_id=\"m\" change_type=\"cancelled\" start_time=\"5\"/>",
            &[("fixture_change", "change_type")],
        ),
        MatchEvent::FixtureChange
    );
    assert_eq!((f.change_type, f.start_time), (None, Some(5)));
    let c: BetCancel = variant!(
        check(
            "<bet_cancel event_id=\"m\" start_time=\"x\" end_time=\"20\"><market id=\"1\" void_reason=\"?\"/></bet_cancel>",
            &[("bet_cancel", "start_time"), ("bet_cancel", "void_reason")],
        ),
        MatchEvent::BetCancel
    );
    assert_eq!(
        (c.start_time, c.end_time, c.markets[0].void_reason),
        (None, Some(20), None)
    );
}

#[test]
fn odds_read_the_safe_way() {
    let xml = r#"<odds_change event_id="m" timestamp="1">
        <sport_event_status status="live" match_status="6" home_score="1"><clock match_time="10:00"/></sport_event_status>
        <odds betting_status="x">
          <market id="1" status="open" favourite="?">
            <outcome id="1" odds="NaN" active="1"/>
            <outcome id="2" odds="2.5" active="yes"/>
            <outcome id="3" odds="inf"/>
            <outcome id="4" odds="1.5"/>
          </market>
          <market id="2"/>
        </odds></odds_change>"#;
    let oc: OddsChange = variant!(
        check(
            xml,
            &[
                ("odds_change", "status"),
                ("odds_change", "betting_status"),
                ("odds_change", "status"),
                ("odds_change", "favourite"),
                ("odds_change", "odds"),
                ("odds_change", "active"),
                ("odds_change", "odds"),
            ],
        ),
        MatchEvent::OddsChange
    );
    assert_eq!(
        oc.sport_event_status, None,
        "a scoreboard of unreadable status is left out"
    );
    assert_eq!(oc.betting_status, None);
    let m = &oc.markets[0];
    assert_eq!((m.status, m.favourite), (-1, false), "unreadable status: suspended");
    let outcomes: Vec<_> = m.outcomes.iter().map(|o| (o.id.as_str(), o.odds, o.active)).collect();
    assert_eq!(
        outcomes,
        [
            ("1", None, true),
            ("2", Some(2.5), false),
            ("3", None, false),
            ("4", Some(1.5), true)
        ]
    );
    assert_eq!(oc.markets[1].status, 1, "absent: the feed's default");
}

#[test]
fn settled_outcomes_that_cannot_be_read_are_undecided() {
    let xml = r#"<bet_settlement event_id="m" certainty="sure"><outcomes><market id="1" void_reason="v">
        <outcome id="won" result="1"/>
        <outcome id="undecided" result="-1"/>
        <outcome id="half" result="0" void_factor="0.5"/>
        <outcome id="dead-heat" result="1" dead_heat_factor="0.5"/>
        <outcome id="no-result"/>
        <outcome id="two" result="2"/>
        <outcome id="bad-void" result="1" void_factor="half"/>
        <outcome id="big-void" result="0" void_factor="1.5"/>
        <outcome id="zero-heat" result="1" dead_heat_factor="0"/>
        </market></outcomes></bet_settlement>"#;
    let s: BetSettlement = variant!(
        check(
            xml,
            &[
                ("bet_settlement", "certainty"),
                ("bet_settlement", "void_reason"),
                ("bet_settlement", "result"),
                ("bet_settlement", "result"),
                ("bet_settlement", "void_factor"),
                ("bet_settlement", "void_factor"),
                ("bet_settlement", "dead_heat_factor"),
            ],
        ),
        MatchEvent::BetSettlement
    );
    assert_eq!((s.certainty, s.markets[0].void_reason), (None, None));
    let got: Vec<_> = s.markets[0]
        .outcomes
        .iter()
        .map(|o| (o.id.as_str(), o.result, o.void_factor, o.dead_heat_factor))
        .collect();
    assert_eq!(
        got,
        [
            ("won", 1, None, None),
            ("undecided", -1, None, None),
            ("half", 0, Some(0.5), None),
            ("dead-heat", 1, None, Some(0.5)),
            ("no-result", -1, None, None),
            ("two", -1, None, None),
            ("bad-void", -1, None, None),
            ("big-void", -1, None, None),
            ("zero-heat", -1, None, None),
        ]
    );
}

#[test]
fn rollbacks_carry_their_window_and_outcomes() {
    let c: CancelRollback = variant!(
        check(
            r#"<rollback_bet_cancel event_id="m" start_time="10" end_time="20"><market id="1" specifiers="b=2|a=1"/></rollback_bet_cancel>"#,
            &[],
        ),
        MatchEvent::RollbackBetCancel
    );
    assert_eq!(
        (c.start_time, c.end_time, c.markets[0].specifiers.as_str()),
        (Some(10), Some(20), "a=1|b=2")
    );
    let s: SettlementRollback = variant!(
        check(
            r#"<rollback_bet_settlement event_id="m"><market id="1"/><market id="2" specifiers="total=2.5"><outcome id="12"/><outcome id="13"/></market></rollback_bet_settlement>"#,
            &[],
        ),
        MatchEvent::RollbackBetSettlement
    );
    assert_eq!(
        s.markets,
        [MarketRef {
            id: 1,
            specifiers: String::new()
        }]
    );
    assert_eq!(
        s.outcomes,
        [OutcomeRollback {
            id: 2,
            specifiers: "total=2.5".into(),
            outcomes: vec!["12".into(), "13".into()],
        }]
    );
}

#[test]
fn producer_messages() {
    let FeedMessage::Alive(a) = check(
        "<alive product=\"1\" timestamp=\"5\" subscribed=\"maybe\"/>",
        &[("alive", "subscribed")],
    ) else {
        panic!("alive")
    };
    assert!(!a.subscribed, "unreadable: not subscribed");
    assert!(matches!(
        check("<alive product=\"1\" timestamp=\"5\"/>", &[]),
        FeedMessage::Alive(Alive { subscribed: true, .. })
    ));
    for (xml, kind) in [
        ("<product_down product=\"1\" timestamp=\"1\"/>", "product_down"),
        (
            "<cashout event_id=\"m\" product=\"1\"><odds><market id=\"1\"/></odds></cashout>",
            "cashout",
        ),
    ] {
        let msg = check(xml, &[]);
        assert_eq!((msg.kind(), &msg), (kind, &FeedMessage::Unused { kind }));
    }
}
