//! Sans-IO parser: one framed XML message → one typed [`FeedMessage`].
//!
//! Lenient where real feeds deviate from the XSD (BOMs, missing
//! declarations, undeclared or misspelt attributes, missing optional
//! attributes), strict where a wrong value would mislead a bettor: a
//! missing `event_id` or an unreadable id, odds or timestamp rejects the
//! whole message with a precise [`ParseError`]. Unknown attributes and
//! elements are ignored. No IO, no allocation beyond the result.

use std::borrow::Cow;
use std::str::FromStr;

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;
use touchline_guest::event::{
    Alive, BetCancel, BetSettlement, BetStop, CancelRollback, CancelledMarket, Clock, FixtureChange, Header,
    MarketOdds, MarketRef, MatchEvent, OddsChange, OutcomeOdds, OutcomeRollback, PeriodScore, SettledMarket,
    SettledOutcome, SettlementRollback, SnapshotComplete, SportEventStatus, canonical_specifiers,
};

/// A parsed feed message.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedMessage {
    /// About one match: routed to that match's worker.
    Match(MatchEvent),
    Alive(Alive),
    SnapshotComplete(SnapshotComplete),
}

impl FeedMessage {
    /// Stable label for metrics: the feed element name.
    pub fn kind(&self) -> &'static str {
        match self {
            FeedMessage::Match(e) => e.kind(),
            FeedMessage::Alive(_) => "alive",
            FeedMessage::SnapshotComplete(_) => "snapshot_complete",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown message type <{0}>")]
    UnknownType(String),
    #[error("malformed XML: {0}")]
    Malformed(String),
    #[error("<{element}> lacks required attribute `{attr}`")]
    MissingAttribute { element: &'static str, attr: &'static str },
    #[error("<{element}> attribute `{attr}` has unreadable value {value:?}")]
    BadValue {
        element: &'static str,
        attr: &'static str,
        value: String,
    },
    #[error("no message element found")]
    Empty,
}

impl ParseError {
    /// Stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ParseError::UnknownType(_) => "unknown_type",
            ParseError::Malformed(_) => "malformed",
            ParseError::MissingAttribute { .. } => "missing_attribute",
            ParseError::BadValue { .. } => "bad_value",
            ParseError::Empty => "empty",
        }
    }
}

type Result<T> = std::result::Result<T, ParseError>;

/// Parse one message as framed by [`super::frame::Framer`].
pub fn parse(xml: &[u8]) -> Result<FeedMessage> {
    let mut r = Reader::from_reader(xml);
    r.config_mut().trim_text(true);
    loop {
        match r.read_event().map_err(malformed)? {
            Event::Start(root) => return parse_root(&mut r, &root, false),
            Event::Empty(root) => return parse_root(&mut r, &root, true),
            Event::Eof => return Err(ParseError::Empty),
            // BOM, declaration, whitespace, comments before the root.
            _ => {}
        }
    }
}

fn parse_root(r: &mut Reader<&[u8]>, root: &BytesStart, empty: bool) -> Result<FeedMessage> {
    let body = Body { empty };
    Ok(match root.name().as_ref() {
        b"odds_change" => FeedMessage::Match(MatchEvent::OddsChange(odds_change(r, root, body)?)),
        b"bet_stop" => {
            const E: &str = "bet_stop";
            let groups = opt_str(root, E, "groups")?.unwrap_or(Cow::Borrowed("all"));
            let msg = BetStop {
                header: header(root, E)?,
                groups: groups.split('|').filter(|g| !g.is_empty()).map(str::to_owned).collect(),
                market_status: opt(root, E, "market_status")?.unwrap_or(-1),
            };
            body.skip(r)?;
            FeedMessage::Match(MatchEvent::BetStop(msg))
        }
        b"bet_settlement" => FeedMessage::Match(MatchEvent::BetSettlement(bet_settlement(r, root, body)?)),
        b"bet_cancel" => FeedMessage::Match(MatchEvent::BetCancel(bet_cancel(r, root, body)?)),
        b"rollback_bet_settlement" => {
            FeedMessage::Match(MatchEvent::RollbackBetSettlement(rollback_settlement(r, root, body)?))
        }
        b"rollback_bet_cancel" => FeedMessage::Match(MatchEvent::RollbackBetCancel(rollback_cancel(r, root, body)?)),
        b"fixture_change" => {
            const E: &str = "fixture_change";
            let msg = FixtureChange {
                header: header(root, E)?,
                change_type: opt(root, E, "change_type")?,
                start_time: opt(root, E, "start_time")?,
                next_live_time: opt(root, E, "next_live_time")?,
            };
            body.skip(r)?;
            FeedMessage::Match(MatchEvent::FixtureChange(msg))
        }
        b"alive" => {
            const E: &str = "alive";
            let msg = Alive {
                product: opt(root, E, "product")?,
                timestamp: opt(root, E, "timestamp")?.unwrap_or(0),
                subscribed: opt::<u8>(root, E, "subscribed")?.is_none_or(|s| s == 1),
            };
            body.skip(r)?;
            FeedMessage::Alive(msg)
        }
        b"snapshot_complete" => {
            const E: &str = "snapshot_complete";
            let msg = SnapshotComplete {
                product: opt(root, E, "product")?,
                timestamp: opt(root, E, "timestamp")?.unwrap_or(0),
                request_id: opt(root, E, "request_id")?,
            };
            body.skip(r)?;
            FeedMessage::SnapshotComplete(msg)
        }
        other => {
            return Err(ParseError::UnknownType(String::from_utf8_lossy(other).into_owned()));
        }
    })
}

/// Whether the root element has children to read.
#[derive(Clone, Copy)]
struct Body {
    empty: bool,
}

impl Body {
    /// Read to the end of the root, checking well-formedness.
    fn skip(self, r: &mut Reader<&[u8]>) -> Result<()> {
        self.for_each(r, |_, _| Ok(()))
    }

    /// Call `f(element, depth)` for each child start/empty element (depth 1
    /// = direct child) until the root closes.
    fn for_each(self, r: &mut Reader<&[u8]>, mut f: impl FnMut(&BytesStart, usize) -> Result<()>) -> Result<()> {
        if self.empty {
            return Ok(());
        }
        let mut depth = 1usize;
        loop {
            match r.read_event().map_err(malformed)? {
                Event::Start(e) => {
                    f(&e, depth)?;
                    depth += 1;
                }
                Event::Empty(e) => f(&e, depth)?,
                Event::End(_) => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                Event::Eof => {
                    return Err(ParseError::Malformed(
                        "message ends before its root element closes".into(),
                    ));
                }
                _ => {}
            }
        }
    }
}

fn odds_change(r: &mut Reader<&[u8]>, root: &BytesStart, body: Body) -> Result<OddsChange> {
    const E: &str = "odds_change";
    let mut msg = OddsChange {
        header: header(root, E)?,
        sport_event_status: None,
        betting_status: None,
        markets: Vec::new(),
    };
    body.for_each(r, |e, _| {
        match e.name().as_ref() {
            b"sport_event_status" => {
                const S: &str = "sport_event_status";
                msg.sport_event_status = Some(SportEventStatus {
                    status: opt(e, S, "status")?.unwrap_or(0),
                    match_status: opt(e, S, "match_status")?,
                    home_score: opt(e, S, "home_score")?,
                    away_score: opt(e, S, "away_score")?,
                    clock: None,
                    period_scores: Vec::new(),
                });
            }
            b"clock" => {
                const C: &str = "clock";
                if let Some(ses) = msg.sport_event_status.as_mut() {
                    ses.clock = Some(Clock {
                        match_time: opt_str(e, C, "match_time")?.map(Cow::into_owned),
                        stoppage_time: opt_str(e, C, "stoppage_time")?.map(Cow::into_owned),
                        remaining_time: opt_str(e, C, "remaining_time")?.map(Cow::into_owned),
                        stopped: opt_str(e, C, "stopped")?.map(|s| s == "true" || s == "1"),
                    });
                }
            }
            b"period_score" => {
                const P: &str = "period_score";
                if let Some(ses) = msg.sport_event_status.as_mut() {
                    ses.period_scores.push(PeriodScore {
                        number: opt(e, P, "number")?,
                        match_status_code: opt(e, P, "match_status_code")?,
                        home_score: opt(e, P, "home_score")?.unwrap_or(0.0),
                        away_score: opt(e, P, "away_score")?.unwrap_or(0.0),
                    });
                }
            }
            b"odds" => msg.betting_status = opt(e, "odds", "betting_status")?,
            b"market" => {
                const M: &str = "market";
                let [id, specs, status, favourite] = attrs(e, M, ["id", "specifiers", "status", "favourite"])?;
                msg.markets.push(MarketOdds {
                    id: num(id, M, "id")?.ok_or(ParseError::MissingAttribute { element: M, attr: "id" })?,
                    specifiers: specs.map(|s| canonical_specifiers(&s)).unwrap_or_default(),
                    status: num(status, M, "status")?.unwrap_or(1),
                    favourite: num::<u8>(favourite, M, "favourite")? == Some(1),
                    outcomes: Vec::new(),
                });
            }
            b"outcome" => {
                const O: &str = "outcome";
                if let Some(m) = msg.markets.last_mut() {
                    let [id, odds, active] = attrs(e, O, ["id", "odds", "active"])?;
                    let odds: Option<f64> = num(odds, O, "odds")?;
                    m.outcomes.push(OutcomeOdds {
                        id: id
                            .ok_or(ParseError::MissingAttribute { element: O, attr: "id" })?
                            .into_owned(),
                        odds,
                        active: num::<u8>(active, O, "active")?.map_or(odds.is_some(), |a| a == 1),
                    });
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(msg)
}

fn bet_settlement(r: &mut Reader<&[u8]>, root: &BytesStart, body: Body) -> Result<BetSettlement> {
    const E: &str = "bet_settlement";
    let mut msg = BetSettlement {
        header: header(root, E)?,
        certainty: opt(root, E, "certainty")?,
        markets: Vec::new(),
    };
    body.for_each(r, |e, _| {
        match e.name().as_ref() {
            b"market" => {
                const M: &str = "market";
                msg.markets.push(SettledMarket {
                    id: req(e, M, "id")?,
                    specifiers: specifiers(e, M)?,
                    void_reason: opt(e, M, "void_reason")?,
                    outcomes: Vec::new(),
                });
            }
            b"outcome" => {
                const O: &str = "outcome";
                if let Some(m) = msg.markets.last_mut() {
                    m.outcomes.push(SettledOutcome {
                        id: req_str(e, O, "id")?.into_owned(),
                        result: req(e, O, "result")?,
                        void_factor: opt(e, O, "void_factor")?,
                        dead_heat_factor: opt(e, O, "dead_heat_factor")?,
                    });
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(msg)
}

fn bet_cancel(r: &mut Reader<&[u8]>, root: &BytesStart, body: Body) -> Result<BetCancel> {
    const E: &str = "bet_cancel";
    let mut msg = BetCancel {
        header: header(root, E)?,
        start_time: opt(root, E, "start_time")?,
        end_time: opt(root, E, "end_time")?,
        superceded_by: opt_str(root, E, "superceded_by")?.map(Cow::into_owned),
        markets: Vec::new(),
    };
    body.for_each(r, |e, depth| {
        if depth == 1 && e.name().as_ref() == b"market" {
            const M: &str = "market";
            msg.markets.push(CancelledMarket {
                id: req(e, M, "id")?,
                specifiers: specifiers(e, M)?,
                void_reason: opt(e, M, "void_reason")?,
            });
        }
        Ok(())
    })?;
    Ok(msg)
}

fn rollback_settlement(r: &mut Reader<&[u8]>, root: &BytesStart, body: Body) -> Result<SettlementRollback> {
    const E: &str = "rollback_bet_settlement";
    let mut markets: Vec<OutcomeRollback> = Vec::new();
    body.for_each(r, |e, depth| {
        match (depth, e.name().as_ref()) {
            (1, b"market") => markets.push(OutcomeRollback {
                id: req(e, "market", "id")?,
                specifiers: specifiers(e, "market")?,
                outcomes: Vec::new(),
            }),
            (2, b"outcome") => {
                if let Some(m) = markets.last_mut() {
                    m.outcomes.push(req_str(e, "outcome", "id")?.into_owned());
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    // A market without `<outcome>` children is rolled back whole.
    let (whole, some): (Vec<_>, Vec<_>) = markets.into_iter().partition(|m| m.outcomes.is_empty());
    Ok(SettlementRollback {
        header: header(root, E)?,
        markets: whole
            .into_iter()
            .map(|m| MarketRef {
                id: m.id,
                specifiers: m.specifiers,
            })
            .collect(),
        outcomes: some,
    })
}

fn rollback_cancel(r: &mut Reader<&[u8]>, root: &BytesStart, body: Body) -> Result<CancelRollback> {
    const E: &str = "rollback_bet_cancel";
    let mut msg = CancelRollback {
        header: header(root, E)?,
        markets: Vec::new(),
        start_time: opt(root, E, "start_time")?,
        end_time: opt(root, E, "end_time")?,
    };
    body.for_each(r, |e, depth| {
        if depth == 1 && e.name().as_ref() == b"market" {
            msg.markets.push(MarketRef {
                id: req(e, "market", "id")?,
                specifiers: specifiers(e, "market")?,
            });
        }
        Ok(())
    })?;
    Ok(msg)
}

fn header(e: &BytesStart, element: &'static str) -> Result<Header> {
    Ok(Header {
        product: opt(e, element, "product")?,
        event_id: req_str(e, element, "event_id")?.into_owned(),
        timestamp: opt(e, element, "timestamp")?.unwrap_or(0),
        request_id: opt(e, element, "request_id")?,
    })
}

fn specifiers(e: &BytesStart, element: &'static str) -> Result<String> {
    Ok(opt_str(e, element, "specifiers")?
        .map(|s| canonical_specifiers(&s))
        .unwrap_or_default())
}

fn opt_str<'a>(e: &'a BytesStart, element: &'static str, attr: &'static str) -> Result<Option<Cow<'a, str>>> {
    let Some(a) = e.try_get_attribute(attr).map_err(malformed)? else {
        return Ok(None);
    };
    a.unescape_value().map(Some).map_err(|_| ParseError::BadValue {
        element,
        attr,
        value: String::from_utf8_lossy(&a.value).into_owned(),
    })
}

fn req_str<'a>(e: &'a BytesStart, element: &'static str, attr: &'static str) -> Result<Cow<'a, str>> {
    opt_str(e, element, attr)?.ok_or(ParseError::MissingAttribute { element, attr })
}

fn opt<T: FromStr>(e: &BytesStart, element: &'static str, attr: &'static str) -> Result<Option<T>> {
    num(opt_str(e, element, attr)?, element, attr)
}

fn req<T: FromStr>(e: &BytesStart, element: &'static str, attr: &'static str) -> Result<T> {
    opt(e, element, attr)?.ok_or(ParseError::MissingAttribute { element, attr })
}

/// The values of `names` on `e`, found in one pass over its attributes
/// (the hot path: every market and outcome of every odds_change).
fn attrs<'a, const N: usize>(
    e: &'a BytesStart,
    element: &'static str,
    names: [&'static str; N],
) -> Result<[Option<Cow<'a, str>>; N]> {
    let mut out: [Option<Cow<'a, str>>; N] = std::array::from_fn(|_| None);
    for a in e.attributes().with_checks(false) {
        let a = a.map_err(malformed)?;
        if let Some(i) = names.iter().position(|n| a.key.as_ref() == n.as_bytes()) {
            let value = a.unescape_value().map_err(|_| ParseError::BadValue {
                element,
                attr: names[i],
                value: String::from_utf8_lossy(&a.value).into_owned(),
            })?;
            out[i] = Some(value);
        }
    }
    Ok(out)
}

/// Parse an attribute value found by [`attrs`].
fn num<T: FromStr>(v: Option<Cow<'_, str>>, element: &'static str, attr: &'static str) -> Result<Option<T>> {
    match v {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| ParseError::BadValue {
            element,
            attr,
            value: v.into_owned(),
        }),
    }
}

fn malformed(e: impl std::fmt::Display) -> ParseError {
    ParseError::Malformed(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_err(xml: &str, kind: &str) {
        let err = parse(xml.as_bytes()).expect_err("must be rejected");
        assert_eq!(err.kind(), kind, "{err}");
    }

    #[test]
    fn rejects_with_precise_reasons() {
        check_err("<product_down product=\"1\"/>", "unknown_type");
        check_err("<bet_stop product=\"1\"/>", "missing_attribute");
        check_err("<bet_stop event_id=\"sr:match:1\" timestamp=\"soon\"/>", "bad_value");
        check_err(
            "<odds_change event_id=\"m\"><odds><market id=\"x\"/></odds></odds_change>",
            "bad_value",
        );
        check_err("<odds_change event_id=\"m\"><odds></market></odds_change>", "malformed");
        check_err("<odds_change event_id=\"m\"><odds>", "malformed");
        check_err("   ", "empty");
    }

    #[test]
    fn bet_stop_defaults() {
        let FeedMessage::Match(MatchEvent::BetStop(b)) =
            parse(b"<bet_stop event_id=\"sr:match:1\" groups=\"goal|corner\"/>").expect("parse")
        else {
            panic!("not a bet_stop")
        };
        assert_eq!(b.groups, ["goal", "corner"]);
        assert_eq!(b.market_status, -1);
    }
}
