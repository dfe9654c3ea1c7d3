//! Lenient parsing of the real samples: an unreadable optional attribute
//! is dropped and reported as a problem, and the message applies; a message
//! without its required structure is rejected.

use touchline::feed::parse::{FeedMessage, ParseError, Problem, parse_reporting};
use touchline_guest::event::MatchEvent;

use crate::feed::parse_sample;
use crate::support::sample;

/// A sample with `from` replaced by `to`, parsed with its problems.
fn parse_altered(rel: &str, from: &str, to: &str) -> (Result<FeedMessage, ParseError>, Vec<Problem>) {
    let text = String::from_utf8(sample(rel)).expect("utf-8");
    assert!(text.contains(from), "{rel} has {from}");
    let mut problems = Vec::new();
    let parsed = parse_reporting(text.replacen(from, to, 1).as_bytes(), &mut problems);
    (parsed, problems)
}

#[test]
fn an_unreadable_optional_attribute_of_a_sample_is_dropped_and_the_rest_applies() {
    let cases = [
        (
            "uof-minus5/messages/bet_settlement.xml",
            r#"certainty="2""#,
            r#"certainty="sure""#,
            "bet_settlement",
            "certainty",
        ),
        (
            "uof-minus5/messages/bet_cancel.xml",
            r#"start_time="1564597838000""#,
            r#"start_time="soon""#,
            "bet_cancel",
            "start_time",
        ),
        (
            "uof-minus5/messages/bet_cancel.xml",
            r#"void_reason="12""#,
            r#"void_reason="twelve""#,
            "bet_cancel",
            "void_reason",
        ),
        (
            "uof/messages/fixture_change.xml",
            r#"change_type="2""#,
            r#"change_type="datetime""#,
            "fixture_change",
            "change_type",
        ),
        (
            "uof/messages/odds_change.xml",
            r#"timestamp="1487254396715""#,
            r#"timestamp="late""#,
            "odds_change",
            "timestamp",
        ),
        (
            "uof/messages/bet_stop.xml",
            r#"product="#,
            r#"product="x" p="#,
            "bet_stop",
            "product",
        ),
        (
            "uof/messages/alive.xml",
            r#"subscribed="1""#,
            r#"subscribed="yes""#,
            "alive",
            "subscribed",
        ),
    ];
    for (rel, from, to, kind, field) in cases {
        let original = parse_sample(rel).expect("the sample parses");
        let (parsed, problems) = parse_altered(rel, from, to);
        let parsed = parsed.unwrap_or_else(|e| panic!("{rel} with {to}: rejected: {e}"));
        assert_eq!(problems, [Problem { kind, field }], "{rel} with {to}");
        assert_eq!(parsed.kind(), original.kind());
        if let (FeedMessage::Match(a), FeedMessage::Match(b)) = (&parsed, &original) {
            assert_eq!(a.event_id(), b.event_id(), "{rel}");
        }
    }
    // The rest of the message is as it was: the whole settlement applies.
    let (parsed, _) = parse_altered(
        "uof-minus5/messages/bet_settlement.xml",
        r#"certainty="2""#,
        r#"certainty="sure""#,
    );
    let Ok(FeedMessage::Match(MatchEvent::BetSettlement(s))) = parsed else {
        panic!("settlement")
    };
    assert_eq!((s.certainty, s.markets.len()), (None, 5));
    // An undecided outcome keeps the others settled.
    let (parsed, problems) = parse_altered(
        "uof-minus5/messages/bet_settlement.xml",
        r#"<outcome id="76" result="1"/>"#,
        r#"<outcome id="76" result="-1"/>"#,
    );
    let Ok(FeedMessage::Match(MatchEvent::BetSettlement(s))) = parsed else {
        panic!("settlement")
    };
    assert!(problems.is_empty(), "-1 is a result: {problems:?}");
    let results: Vec<i8> = s.markets[0].outcomes.iter().map(|o| o.result).collect();
    assert_eq!(results, [0, -1]);
}

#[test]
fn a_sample_without_its_required_structure_is_rejected() {
    for (rel, from, to) in [
        ("uof/messages/bet_cancel.xml", r#"event_id="sr:match:10237855""#, ""),
        ("uof/messages/bet_settlement.xml", r#"market id="213""#, "market"),
        ("uof/messages/odds_change.xml", r#"outcome id="13""#, "outcome"),
        ("uof-minus5/messages/bet_cancel.xml", r#"id="62""#, r#"id="sixty-two""#),
    ] {
        let (parsed, problems) = parse_altered(rel, from, to);
        assert!(parsed.is_err(), "{rel} without {from}: {parsed:?}");
        assert!(problems.is_empty(), "{rel}: {problems:?}");
    }
}
