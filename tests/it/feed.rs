//! The framer and parser against the real sample messages (sans IO).

use touchline::feed::frame::{FrameError, Framer};
use touchline::feed::parse::{FeedMessage, ParseError, parse};
use touchline_guest::event::MatchEvent;

use crate::support::{all_samples, sample};

const LIMIT: usize = 4 << 20;

pub(crate) fn parse_sample(rel: &str) -> Result<FeedMessage, ParseError> {
    let bytes = sample(rel);
    let mut f = Framer::new(LIMIT);
    f.push(&bytes);
    let frame = f
        .next_message()
        .unwrap_or_else(|| panic!("{rel}: no frame"))
        .unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert!(f.next_message().is_none(), "{rel}: one message per file");
    parse(&frame)
}

fn match_event(rel: &str) -> MatchEvent {
    match parse_sample(rel) {
        Ok(FeedMessage::Match(e)) => e,
        other => panic!("{rel}: expected a match event, got {other:?}"),
    }
}

macro_rules! expect_variant {
    ($rel:expr, $variant:path) => {
        match match_event($rel) {
            $variant(e) => e,
            other => panic!("{}: got {:?}", $rel, other.kind()),
        }
    };
}

#[test]
fn odds_change_sample_values() {
    let oc = expect_variant!("uof/messages/odds_change.xml", MatchEvent::OddsChange);
    assert_eq!(oc.header.event_id, "sr:match:10927088");
    assert_eq!(oc.header.product, Some(4));
    assert_eq!(oc.header.timestamp, 1_487_254_396_715);
    let ses = oc.sport_event_status.expect("sport_event_status");
    assert_eq!((ses.status, ses.match_status), (1, Some(6)));
    assert_eq!((ses.home_score, ses.away_score), (Some(0.0), Some(2.0)));
    assert_eq!(ses.clock.and_then(|c| c.match_time).as_deref(), Some("27:33"));
    assert_eq!(ses.period_scores.len(), 1);
    assert_eq!(ses.period_scores[0].away_score, 2.0);
    assert_eq!(oc.markets.len(), 42);
    assert_eq!(oc.markets.iter().map(|m| m.outcomes.len()).sum::<usize>(), 78);
    let m68 = oc
        .markets
        .iter()
        .find(|m| m.id == 68 && m.specifiers == "total=2.5")
        .expect("market 68 total=2.5");
    assert_eq!((m68.status, m68.favourite), (1, true));
    let o13 = m68.outcomes.iter().find(|o| o.id == "13").expect("outcome 13");
    assert_eq!((o13.odds, o13.active), (Some(1.5), true));
    let m10 = oc.markets.iter().find(|m| m.id == 10).expect("market 10");
    let o11 = m10.outcomes.iter().find(|o| o.id == "11").expect("outcome 11");
    assert_eq!((o11.odds, o11.active), (None, false), "no odds attribute, active=0");
    let settled = oc
        .markets
        .iter()
        .find(|m| m.id == 68 && m.specifiers == "total=1.5")
        .expect("68 total=1.5");
    assert_eq!((settled.status, settled.outcomes.len()), (-3, 0));
}

#[test]
fn odds_change_variants() {
    let none = expect_variant!("uof/messages/odds_change_no_markets.xml", MatchEvent::OddsChange);
    assert!(none.markets.is_empty());
    assert!(none.sport_event_status.is_some());
    let no_outcomes = expect_variant!("uof/messages/odds_change_no_outcomes.xml", MatchEvent::OddsChange);
    assert_eq!(
        (
            no_outcomes.markets.len(),
            no_outcomes.markets[0].id,
            no_outcomes.markets[0].outcomes.len()
        ),
        (1, 26, 0)
    );
    let single = expect_variant!("uof/messages/odds_change_single_market.xml", MatchEvent::OddsChange);
    assert_eq!(single.markets.len(), 1);
    assert_eq!(single.markets[0].specifiers, "total=3.5");
    assert_eq!(single.markets[0].outcomes[1].odds, Some(6.5));
    let full = expect_variant!("uof/messages/odds_change_prematch_full.xml", MatchEvent::OddsChange);
    assert_eq!(
        (full.header.product, full.header.event_id.as_str()),
        (Some(3), "sr:match:31604309")
    );
    assert_eq!(full.markets.len(), 170);
    assert_eq!(full.markets.iter().map(|m| m.outcomes.len()).sum::<usize>(), 805);
    assert_eq!(full.markets[0].outcomes[0].odds, Some(2.25));
    assert_eq!(full.sport_event_status.map(|s| s.status), Some(0));
}

#[test]
fn minus5_odds_changes() {
    let oc = expect_variant!("uof-minus5/messages/odds_change-0.xml", MatchEvent::OddsChange);
    assert_eq!(
        (oc.header.event_id.as_str(), oc.header.timestamp, oc.header.product),
        ("sr:match:123", 1234, Some(2))
    );
    let ses = oc.sport_event_status.expect("status");
    assert_eq!(
        (ses.home_score, ses.away_score, ses.period_scores.len()),
        (Some(2.0), Some(2.0), 2)
    );
    assert_eq!(oc.betting_status, Some(1));
    assert_eq!(oc.markets.len(), 9);
    let m123 = oc.markets.iter().find(|m| m.id == 123).expect("market 123");
    assert_eq!(
        (m123.status, m123.specifiers.as_str()),
        (-1, "game=3|point=1|set=2"),
        "specifiers are canonicalised"
    );
    let m188 = oc.markets.iter().find(|m| m.id == 188).expect("market 188");
    assert_eq!(m188.outcomes[0].id, "sr:player:1234");
    let vhc = expect_variant!("uof-minus5/messages/odds_change-vhc.xml", MatchEvent::OddsChange);
    assert_eq!(vhc.header.event_id, "vhc:stage:18361597");
    assert_eq!(vhc.markets.len(), 6);
    assert_eq!(vhc.markets[0].outcomes[0].id, "sr:competitor:94075,sr:competitor:94137");
    assert_eq!(vhc.markets[0].outcomes[0].odds, Some(9.5));
}

#[test]
fn bet_stop_and_fixture_change() {
    let bs = expect_variant!("uof/messages/bet_stop.xml", MatchEvent::BetStop);
    assert_eq!(
        (bs.header.event_id.as_str(), bs.groups.clone(), bs.market_status),
        ("sr:match:9578495", vec!["all".to_owned()], -1)
    );
    let fc = expect_variant!("uof/messages/fixture_change.xml", MatchEvent::FixtureChange);
    assert_eq!(fc.header.event_id, "sr:match:8816128");
    assert_eq!((fc.start_time, fc.change_type), (Some(1_466_436_600_000), Some(2)));
}

#[test]
fn settlements() {
    let s = expect_variant!("uof/messages/bet_settlement.xml", MatchEvent::BetSettlement);
    assert_eq!(s.header.event_id, "sr:match:9583135");
    assert_eq!(s.certainty, None, "this real message lacks the required certainty");
    assert_eq!(s.markets.len(), 46);
    assert_eq!(s.markets.iter().map(|m| m.outcomes.len()).sum::<usize>(), 130);
    assert_eq!(
        (s.markets[0].id, s.markets[0].specifiers.as_str()),
        (213, "gamenr=3|setnr=3")
    );
    assert_eq!(
        s.markets[0]
            .outcomes
            .iter()
            .map(|o| (o.id.as_str(), o.result))
            .collect::<Vec<_>>(),
        [("70", 0), ("72", 1)]
    );

    let m = expect_variant!("uof-minus5/messages/bet_settlement.xml", MatchEvent::BetSettlement);
    assert_eq!((m.certainty, m.markets.len()), (Some(2), 5));
    let m201 = m.markets.iter().find(|x| x.id == 201).expect("market 201");
    let o864 = m201.outcomes.iter().find(|o| o.id == "864").expect("864");
    assert_eq!((o864.result, o864.void_factor), (0, Some(0.5)));
    let m535 = m.markets.iter().find(|x| x.id == 535).expect("market 535");
    assert_eq!(m535.specifiers, "variant=pre:markettext:52751");
    let dh = m535
        .outcomes
        .iter()
        .find(|o| o.id == "pre:outcometext:6388892")
        .expect("dead heat outcome");
    assert_eq!((dh.result, dh.dead_heat_factor), (1, Some(0.5)));
}

#[test]
fn cancels_and_rollbacks() {
    let c = expect_variant!("uof/messages/bet_cancel.xml", MatchEvent::BetCancel);
    assert_eq!(c.header.event_id, "sr:match:10237855");
    assert_eq!(c.header.request_id, Some(1));
    let ids: Vec<_> = c.markets.iter().map(|m| (m.id, m.specifiers.as_str())).collect();
    assert_eq!(
        ids,
        [(312, "pointnr=45|setnr=4"), (313, "pointnr=1|setnr=2"), (314, "")]
    );
    assert!(
        expect_variant!("uof/messages/bet_cancel_no_markets.xml", MatchEvent::BetCancel)
            .markets
            .is_empty()
    );
    let m5 = expect_variant!("uof-minus5/messages/bet_cancel.xml", MatchEvent::BetCancel);
    assert_eq!(
        (m5.start_time, m5.end_time),
        (Some(1_564_597_838_000), Some(1_564_598_513_000))
    );
    assert_eq!(
        (
            m5.markets[0].id,
            m5.markets[0].specifiers.as_str(),
            m5.markets[0].void_reason
        ),
        (62, "goalnr=1", Some(12))
    );

    let rs = expect_variant!(
        "uof/messages/rollback_bet_settlement.xml",
        MatchEvent::RollbackBetSettlement
    );
    assert_eq!(rs.markets.len(), 2);
    assert!(
        expect_variant!(
            "uof/messages/rollback_bet_settlement_no_markets.xml",
            MatchEvent::RollbackBetSettlement
        )
        .markets
        .is_empty()
    );
    let ns = expect_variant!(
        "uof/messages/rollback_bet_settlement_no_specifiers.xml",
        MatchEvent::RollbackBetSettlement
    );
    assert_eq!((ns.markets[0].id, ns.markets[0].specifiers.as_str()), (312, ""));
    let rc = expect_variant!("uof/messages/rollback_bet_cancel.xml", MatchEvent::RollbackBetCancel);
    assert_eq!(rc.markets[1].specifiers, "pointnr=1|setnr=2");
    assert!(
        expect_variant!(
            "uof/messages/rollback_bet_cancel_no_markets.xml",
            MatchEvent::RollbackBetCancel
        )
        .markets
        .is_empty()
    );
    let m5 = expect_variant!(
        "uof-minus5/messages/rollback_bet_cancel.xml",
        MatchEvent::RollbackBetCancel
    );
    assert_eq!(
        (m5.header.product, m5.header.event_id.as_str()),
        (None, "sr:match:4444"),
        "lacks the required product"
    );
    assert_eq!((m5.start_time, m5.end_time), (None, None), "names no window");
    assert!(rs.outcomes.is_empty() && ns.outcomes.is_empty(), "whole markets");
}

#[test]
fn producer_messages_and_unused_types() {
    match parse_sample("uof/messages/alive.xml") {
        Ok(FeedMessage::Alive(a)) => assert_eq!(
            (a.product, a.timestamp, a.subscribed),
            (Some(1), 1_465_848_166_722, true)
        ),
        other => panic!("alive: {other:?}"),
    }
    match parse_sample("uof/messages/snapshot_completed.xml") {
        Ok(FeedMessage::SnapshotComplete(s)) => {
            assert_eq!((s.product, s.request_id), (Some(1), Some(1)))
        }
        other => panic!("snapshot_complete: {other:?}"),
    }
    for (rel, kind) in [
        ("uof/messages/probabilities.xml", "cashout"),
        ("uof/messages/probabilities_no_odds.xml", "cashout"),
        ("uof/messages/product_down.xml", "product_down"),
    ] {
        assert_eq!(parse_sample(rel), Ok(FeedMessage::Unused { kind }), "{rel}");
    }
    assert_eq!(
        parse(b"<product_up product=\"1\"/>"),
        Err(ParseError::UnknownType("product_up".into()))
    );
}

/// Frame a stream delivered in the given read sizes; render each frame.
fn frame_all(stream: &[u8], cuts: &[usize]) -> Vec<Result<Vec<u8>, FrameError>> {
    let mut f = Framer::new(LIMIT);
    let mut out = Vec::new();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        f.push(&stream[at..cut]);
        at = cut;
        out.extend(std::iter::from_fn(|| f.next_message()));
    }
    out
}

fn concatenated() -> (Vec<u8>, usize) {
    let samples = all_samples();
    let mut stream = Vec::new();
    for (_, bytes) in &samples {
        stream.extend_from_slice(bytes);
    }
    (stream, samples.len())
}

#[test]
fn concatenated_set_frames_identically_at_every_split_point() {
    let (stream, files) = concatenated();
    let reference = frame_all(&stream, &[]);
    assert_eq!(reference.len(), files);
    assert!(
        reference.iter().all(Result::is_ok),
        "the samples frame cleanly: {reference:?}"
    );
    // Parsing is a pure function of a frame's bytes, so identical frames
    // parse identically; check the parse once, then the framing per split.
    let parsed: Vec<_> = reference.iter().map(|f| parse(f.as_ref().expect("frame"))).collect();
    let singles: Vec<_> = all_samples().iter().map(|(rel, _)| parse_sample(rel)).collect();
    assert_eq!(parsed, singles, "concatenated messages parse as they do alone");
    for cut in 1..stream.len() {
        let got = frame_all(&stream, &[cut]);
        assert!(got == reference, "split at byte {cut} frames differently");
    }
}

#[test]
fn byte_at_a_time_reads_frame_identically() {
    let (stream, _) = concatenated();
    let cuts: Vec<usize> = (1..stream.len()).collect();
    assert!(frame_all(&stream, &cuts) == frame_all(&stream, &[]));
}

#[test]
fn garbage_and_truncation_between_valid_messages_lose_none() {
    let valid = [
        sample("uof/messages/odds_change.xml"),
        sample("uof/messages/bet_stop.xml"),
        sample("uof-minus5/messages/bet_settlement.xml"),
        sample("uof/messages/alive.xml"),
        sample("uof/messages/odds_change_prematch_full.xml"),
    ];
    let truncated_oc = sample("uof/messages/odds_change.xml");
    let truncated_oc = &truncated_oc[..truncated_oc.len() / 2];
    let truncated_decl = sample("uof-minus5/messages/bet_settlement.xml");
    let truncated_decl = &truncated_decl[..700];
    let mut stream = Vec::new();
    stream.extend_from_slice(&valid[0]);
    stream.extend_from_slice(b"\x00\x01\xFF\xFEnot xml at all \xC3\x28 ");
    stream.extend_from_slice(&valid[1]);
    stream.extend_from_slice(truncated_oc);
    stream.extend_from_slice(&valid[2]); // starts with a declaration
    stream.extend_from_slice(truncated_decl);
    stream.extend_from_slice(b"\xEF\xBB\xBF"); // a BOM cuts the open message
    stream.extend_from_slice(&valid[3]);
    stream.extend_from_slice(b"<<<>>> </stray> &amp; ");
    stream.extend_from_slice(&valid[4]);
    let expected: Vec<FeedMessage> = valid
        .iter()
        .map(|v| {
            let mut f = Framer::new(LIMIT);
            f.push(v);
            parse(&f.next_message().expect("frame").expect("ok")).expect("parse")
        })
        .collect();
    for cuts in [vec![], (1..stream.len()).step_by(97).collect::<Vec<_>>()] {
        let frames = frame_all(&stream, &cuts);
        let good: Vec<FeedMessage> = frames
            .iter()
            .filter_map(|f| f.as_ref().ok())
            .filter_map(|b| parse(b).ok())
            .collect();
        assert_eq!(
            good,
            expected,
            "every valid message survives (reads cut at {} points)",
            cuts.len()
        );
        // The framer reports the garbage (with the next message's BOM and
        // declaration: the whole run between two messages), the message cut
        // by the next one, the one cut by a BOM and declaration and then
        // the next message, and the stray markup, which is garbage between
        // messages (before, `</stray>` was `malformed` and `<>` a frame the
        // parser refused).
        let errors: Vec<&FrameError> = frames.iter().filter_map(|f| f.as_ref().err()).collect();
        let prolog = |v: &[u8]| {
            v.windows(2)
                .position(|w| w[0] == b'<' && w[1].is_ascii_alphabetic())
                .expect("a root")
        };
        assert!(
            matches!(
                errors[..],
                [
                    FrameError::Garbage { bytes: first },
                    FrameError::Truncated { .. },
                    FrameError::Truncated { .. },
                    FrameError::Garbage { bytes: last },
                ] if *first == 22 + prolog(&valid[1]) && *last == 22 + prolog(&valid[4])
            ),
            "garbage, both truncations and the stray markup are reported: {errors:?}"
        );
        assert!(
            frames.iter().filter_map(|f| f.as_ref().ok()).all(|b| parse(b).is_ok()),
            "only the valid messages are framed"
        );
    }
}
