//! Sans-IO parser: one framed XML message → one typed [`FeedMessage`].
//!
//! Lenient per field, as the provider's SDKs are. BOMs, missing
//! declarations, unknown attributes and elements are fine. An optional
//! attribute whose value cannot be read (or means nothing, like `NaN` odds)
//! is dropped and reported as a [`Problem`], and the message still applies;
//! where reading it as absent could mislead a bettor it is read the safe
//! way instead (a market `status` as suspended, an outcome `active` as
//! inactive, a settled outcome as undecided, an alive's `subscribed` as
//! unsubscribed, a `sport_event_status` without a readable `status` left
//! out: see [`odds`] and [`settlement`]). Only a message without its
//! required structure is rejected with a precise [`ParseError`]: not
//! well-formed XML, no `event_id`, a market or outcome without a readable
//! id. `product_down` and `cashout` (probabilities) are recognised and
//! not used ([`FeedMessage::Unused`]). No IO, no allocation beyond the
//! result.

mod fields;
mod odds;
mod settlement;

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;
use touchline_guest::event::{
    Alive, BetStop, FixtureChange, Header, MatchEvent, SnapshotComplete, canonical_specifiers,
};

use fields::{Attr, Fields, malformed, opt_str, req_str};

use crate::cluster::partition::MAX_MATCH_ID_BYTES;

/// A parsed feed message.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedMessage {
    /// About one match: routed to that match's worker.
    Match(MatchEvent),
    Alive(Alive),
    SnapshotComplete(SnapshotComplete),
    /// A message Touchline recognises and does not use (`product_down`,
    /// `cashout`): counted by kind, not reported as unknown.
    Unused {
        kind: &'static str,
    },
}

impl FeedMessage {
    /// Stable label for metrics: the feed element name.
    pub fn kind(&self) -> &'static str {
        match self {
            FeedMessage::Match(e) => e.kind(),
            FeedMessage::Alive(_) => "alive",
            FeedMessage::SnapshotComplete(_) => "snapshot_complete",
            FeedMessage::Unused { kind } => kind,
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

/// An optional attribute of a message that could not be read: dropped (or
/// read the safe way) and reported; the message still applies. Both fields
/// come from closed sets (message kinds, attribute names), so they can be
/// metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Problem {
    /// The message's kind (`FeedMessage::kind`).
    pub kind: &'static str,
    /// The attribute's name.
    pub field: &'static str,
}

type Result<T> = std::result::Result<T, ParseError>;

/// Parse one message as framed by [`super::frame::Framer`]; the problems
/// of a message that applies are dropped (see [`parse_reporting`]).
pub fn parse(xml: &[u8]) -> Result<FeedMessage> {
    parse_reporting(xml, &mut Vec::new())
}

/// [`parse`], appending the message's [`Problem`]s to `problems` (none when
/// it is rejected).
pub fn parse_reporting(xml: &[u8], problems: &mut Vec<Problem>) -> Result<FeedMessage> {
    let before = problems.len();
    let parsed = parse_message(xml, problems);
    if parsed.is_err() {
        problems.truncate(before);
    }
    parsed
}

fn parse_message(xml: &[u8], problems: &mut Vec<Problem>) -> Result<FeedMessage> {
    let mut r = Reader::from_reader(xml);
    r.config_mut().trim_text(true);
    loop {
        match r.read_event().map_err(malformed)? {
            Event::Start(root) => return parse_root(&mut r, &root, false, problems),
            Event::Empty(root) => return parse_root(&mut r, &root, true, problems),
            Event::Eof => return Err(ParseError::Empty),
            // BOM, declaration, whitespace, comments before the root.
            _ => {}
        }
    }
}

/// Message kinds, as static names (metric labels).
const KINDS: &[&str] = &[
    "odds_change",
    "bet_stop",
    "bet_settlement",
    "bet_cancel",
    "rollback_bet_settlement",
    "rollback_bet_cancel",
    "fixture_change",
    "alive",
    "snapshot_complete",
    "product_down",
    "cashout",
];

fn parse_root(
    r: &mut Reader<&[u8]>,
    root: &BytesStart,
    empty: bool,
    problems: &mut Vec<Problem>,
) -> Result<FeedMessage> {
    let body = Body { empty };
    let name = root.name();
    let Some(&kind) = KINDS.iter().find(|k| k.as_bytes() == name.as_ref()) else {
        return Err(ParseError::UnknownType(
            String::from_utf8_lossy(name.as_ref()).into_owned(),
        ));
    };
    let f = &mut Fields::new(kind, problems);
    let e = kind;
    Ok(match kind {
        "odds_change" => FeedMessage::Match(MatchEvent::OddsChange(odds::odds_change(r, root, body, f)?)),
        "bet_stop" => {
            let groups = opt_str(root, e, "groups")?.unwrap_or(Cow::Borrowed("all"));
            let msg = BetStop {
                header: header(root, e, f)?,
                groups: groups.split('|').filter(|g| !g.is_empty()).map(str::to_owned).collect(),
                market_status: f.attr(root, e, "market_status")?.ok().unwrap_or(-1),
                // Resolved from the market descriptions on intake.
                markets: None,
            };
            body.skip(r)?;
            FeedMessage::Match(MatchEvent::BetStop(msg))
        }
        "bet_settlement" => {
            FeedMessage::Match(MatchEvent::BetSettlement(settlement::bet_settlement(r, root, body, f)?))
        }
        "bet_cancel" => FeedMessage::Match(MatchEvent::BetCancel(settlement::bet_cancel(r, root, body, f)?)),
        "rollback_bet_settlement" => FeedMessage::Match(MatchEvent::RollbackBetSettlement(
            settlement::rollback_settlement(r, root, body, f)?,
        )),
        "rollback_bet_cancel" => FeedMessage::Match(MatchEvent::RollbackBetCancel(settlement::rollback_cancel(
            r, root, body, f,
        )?)),
        "fixture_change" => {
            let msg = FixtureChange {
                header: header(root, e, f)?,
                change_type: f.attr(root, e, "change_type")?.ok(),
                start_time: f.attr(root, e, "start_time")?.ok(),
                next_live_time: f.attr(root, e, "next_live_time")?.ok(),
            };
            body.skip(r)?;
            FeedMessage::Match(MatchEvent::FixtureChange(msg))
        }
        "alive" => {
            let msg = Alive {
                product: f.attr(root, e, "product")?.ok(),
                timestamp: f.attr(root, e, "timestamp")?.ok().unwrap_or(0),
                // Unreadable: not subscribed, so the producer recovers
                // rather than its odds be trusted.
                subscribed: match f.attr::<u8>(root, e, "subscribed")? {
                    Attr::Read(s) => s == 1,
                    Attr::Absent => true,
                    Attr::Unreadable => false,
                },
            };
            body.skip(r)?;
            FeedMessage::Alive(msg)
        }
        "snapshot_complete" => {
            let msg = SnapshotComplete {
                product: f.attr(root, e, "product")?.ok(),
                timestamp: f.attr(root, e, "timestamp")?.ok().unwrap_or(0),
                request_id: f.attr(root, e, "request_id")?.ok(),
            };
            body.skip(r)?;
            FeedMessage::SnapshotComplete(msg)
        }
        _ => {
            body.skip(r)?;
            FeedMessage::Unused { kind }
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

/// The attributes every match message has: `event_id` is required (the
/// routing key), the rest optional.
fn header(e: &BytesStart, element: &'static str, f: &mut Fields<'_>) -> Result<Header> {
    Ok(Header {
        product: f.attr(e, element, "product")?.ok(),
        event_id: match_id(e, element)?,
        timestamp: f.attr(e, element, "timestamp")?.ok().unwrap_or(0),
        request_id: f.attr(e, element, "request_id")?.ok(),
    })
}

/// A match id names a worker, its store keys (`id \0 seq`) and, in a
/// cluster, one NATS subject token: it must be 1 to
/// [`MAX_MATCH_ID_BYTES`] bytes without control characters (a NUL would let
/// one match's keys fall in another's range). Anything else rejects the
/// message (`bad_value`).
fn match_id(e: &BytesStart, element: &'static str) -> Result<String> {
    let id = req_str(e, element, "event_id")?;
    if id.is_empty() || id.len() > MAX_MATCH_ID_BYTES || id.chars().any(char::is_control) {
        return Err(ParseError::BadValue {
            element,
            attr: "event_id",
            value: id.chars().take(64).collect(),
        });
    }
    Ok(id.into_owned())
}

/// A market's specifiers, canonical; part of its identity, so never dropped.
fn specifiers(e: &BytesStart, element: &'static str) -> Result<String> {
    Ok(opt_str(e, element, "specifiers")?
        .map(|s| canonical_specifiers(&s).into())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests;
