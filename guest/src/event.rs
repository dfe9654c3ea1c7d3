//! Typed feed events, in the vocabulary of the Unified Odds Feed.
//!
//! These are the values the host's parser produces and a match worker
//! consumes. They carry only what the match model and routing use; the
//! parser drops unknown attributes and elements. No parsing lives here.
//!
//! Their bincode encoding is the `EVENT_FORMAT`, and journals keep it: a
//! new format only appends fields at the end of a changed kind's struct,
//! so an entry of an earlier format always ends too early for the new
//! one and is read by [`decode`] through [`older`] instead.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

mod older;

/// Fields every match-scoped message carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Producer id (1 live odds, 3 pre-match, ...). Optional because real
    /// messages omit it (`rollback_bet_cancel` in the samples).
    pub product: Option<u32>,
    /// The routing key: one match worker per `event_id`.
    pub event_id: String,
    /// Producer timestamp, ms since the Unix epoch.
    pub timestamp: i64,
    pub request_id: Option<u64>,
}

/// A message about one match: what a match worker applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MatchEvent {
    OddsChange(OddsChange),
    BetStop(BetStop),
    BetSettlement(BetSettlement),
    BetCancel(BetCancel),
    RollbackBetSettlement(SettlementRollback),
    RollbackBetCancel(CancelRollback),
    FixtureChange(FixtureChange),
}

/// Decode an event of the current `EVENT_FORMAT` or of formats 1 and 2
/// (journal entries written before format 3); the error is the current
/// format's.
pub fn decode(bytes: &[u8]) -> Result<MatchEvent, bincode::error::DecodeError> {
    crate::decode::<MatchEvent>(bytes).or_else(|current| older::decode(bytes).ok_or(current))
}

impl MatchEvent {
    pub fn header(&self) -> &Header {
        match self {
            MatchEvent::OddsChange(e) => &e.header,
            MatchEvent::BetStop(e) => &e.header,
            MatchEvent::BetSettlement(e) => &e.header,
            MatchEvent::BetCancel(e) => &e.header,
            MatchEvent::RollbackBetSettlement(e) => &e.header,
            MatchEvent::RollbackBetCancel(e) => &e.header,
            MatchEvent::FixtureChange(e) => &e.header,
        }
    }

    pub fn event_id(&self) -> &str {
        &self.header().event_id
    }

    /// Whether applying it can change how accepted bets stand (settle,
    /// void or reopen them).
    pub fn settles_bets(&self) -> bool {
        matches!(
            self,
            MatchEvent::BetSettlement(_)
                | MatchEvent::BetCancel(_)
                | MatchEvent::RollbackBetSettlement(_)
                | MatchEvent::RollbackBetCancel(_)
        )
    }

    /// The feed's element name for this event (also the `event` of a delta).
    pub fn kind(&self) -> &'static str {
        match self {
            MatchEvent::OddsChange(_) => "odds_change",
            MatchEvent::BetStop(_) => "bet_stop",
            MatchEvent::BetSettlement(_) => "bet_settlement",
            MatchEvent::BetCancel(_) => "bet_cancel",
            MatchEvent::RollbackBetSettlement(_) => "rollback_bet_settlement",
            MatchEvent::RollbackBetCancel(_) => "rollback_bet_cancel",
            MatchEvent::FixtureChange(_) => "fixture_change",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OddsChange {
    pub header: Header,
    pub sport_event_status: Option<SportEventStatus>,
    /// `odds/@betting_status`, when the producer sends it.
    pub betting_status: Option<i32>,
    pub markets: Vec<MarketOdds>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SportEventStatus {
    /// 0 not started, 1 live, 2 suspended, 3 ended, 4 closed, ...
    pub status: i32,
    pub match_status: Option<i32>,
    pub home_score: Option<f64>,
    pub away_score: Option<f64>,
    pub clock: Option<Clock>,
    pub period_scores: Vec<PeriodScore>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Clock {
    pub match_time: Option<String>,
    pub stoppage_time: Option<String>,
    pub remaining_time: Option<String>,
    pub stopped: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodScore {
    pub number: Option<u32>,
    pub match_status_code: Option<i32>,
    pub home_score: f64,
    pub away_score: f64,
}

/// One market of an odds_change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarketOdds {
    pub id: u32,
    /// Canonical form: `name=value` pairs sorted by name, joined by `|`.
    /// Inline up to 12 bytes in the guest, 24 natively (no allocation when
    /// decoded); encoded as a string like the `String` it was.
    pub specifiers: CompactString,
    /// 1 active, 0 deactivated, -1 suspended, -2 handed over, -3 settled,
    /// -4 cancelled. The feed's default is 1.
    pub status: i32,
    pub favourite: bool,
    pub outcomes: Vec<OutcomeOdds>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeOdds {
    /// Outcome ids are strings in the feed (`13`, `pre:outcometext:30101`);
    /// inline like `MarketOdds::specifiers`.
    pub id: CompactString,
    pub odds: Option<f64>,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BetStop {
    pub header: Header,
    /// Market groups to stop; `["all"]` stops every active market.
    pub groups: Vec<String>,
    /// Status to put the stopped markets in; the feed's default is -1.
    pub market_status: i32,
    /// The markets `groups` stand for, resolved by the host from the market
    /// descriptions when it had them (format 3); `None`: the guest's own
    /// table decides (older journal entries, no descriptions).
    pub markets: Option<Vec<u32>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BetSettlement {
    pub header: Header,
    /// 1 live scouted, 2 confirmed. Absent in some real messages.
    pub certainty: Option<u8>,
    pub markets: Vec<SettledMarket>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettledMarket {
    pub id: u32,
    pub specifiers: String,
    pub void_reason: Option<i32>,
    pub outcomes: Vec<SettledOutcome>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettledOutcome {
    pub id: String,
    /// 1 won, 0 lost (a void share comes from `void_factor`), -1 undecided
    /// (the outcome's bets stay open). Format 1 had `u8`: 0 and 1 encode
    /// the same single byte.
    pub result: i8,
    pub void_factor: Option<f64>,
    pub dead_heat_factor: Option<f64>,
}

/// Void the bets placed on these markets within `[start_time, end_time)`
/// (Unix ms; a missing bound is open). The markets' status is not touched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BetCancel {
    pub header: Header,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    /// The event this cancellation's event was superseded by (kept, not
    /// acted on).
    pub superceded_by: Option<String>,
    pub markets: Vec<CancelledMarket>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelledMarket {
    pub id: u32,
    pub specifiers: String,
    pub void_reason: Option<i32>,
}

/// rollback_bet_settlement: these markets' settlements are undone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettlementRollback {
    pub header: Header,
    /// Markets reopened whole.
    pub markets: Vec<MarketRef>,
    /// Markets named with `<outcome>` children: only those outcomes
    /// reopen. (Appended in format 2, see the module header.)
    pub outcomes: Vec<OutcomeRollback>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRollback {
    pub id: u32,
    pub specifiers: String,
    pub outcomes: Vec<String>,
}

/// rollback_bet_cancel: the cancellation of these markets with the same
/// window is undone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelRollback {
    pub header: Header,
    pub markets: Vec<MarketRef>,
    /// The window of the bet_cancel rolled back. (Appended in format 2.)
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarketRef {
    pub id: u32,
    pub specifiers: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixtureChange {
    pub header: Header,
    /// What changed ([`change_type`]).
    pub change_type: Option<i32>,
    pub start_time: Option<i64>,
    pub next_live_time: Option<i64>,
}

/// `fixture_change/@change_type` values.
pub mod change_type {
    pub const NEW: i32 = 1;
    pub const DATETIME: i32 = 2;
    pub const CANCELLED: i32 = 3;
    pub const FORMAT: i32 = 4;
    pub const COVERAGE: i32 = 5;
    pub const PITCHER: i32 = 6;
}

/// Producer heartbeat, sent every 10 s per producer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alive {
    pub product: Option<u32>,
    pub timestamp: i64,
    pub subscribed: bool,
}

/// End of a recovery snapshot requested by `request_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotComplete {
    pub product: Option<u32>,
    pub timestamp: i64,
    pub request_id: Option<u64>,
}

/// Canonical specifiers: pairs sorted by name, so `setnr=4|pointnr=45` and
/// `pointnr=45|setnr=4` name the same market.
pub fn canonical_specifiers(raw: &str) -> CompactString {
    let raw = raw.trim();
    if !raw.contains('|') {
        // Most markets: no allocation when it fits inline.
        return raw.into();
    }
    let mut pairs: Vec<&str> = raw.split('|').filter(|p| !p.is_empty()).collect();
    fn name(pair: &str) -> &str {
        pair.split('=').next().unwrap_or(pair)
    }
    pairs.sort_unstable_by(|a, b| name(a).cmp(name(b)));
    let mut joined = CompactString::with_capacity(raw.len());
    for (i, pair) in pairs.into_iter().enumerate() {
        if i > 0 {
            joined.push('|');
        }
        joined.push_str(pair);
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specifiers_are_canonical() {
        assert_eq!(canonical_specifiers("setnr=4|pointnr=45"), "pointnr=45|setnr=4");
        assert_eq!(canonical_specifiers("total=2.5"), "total=2.5");
        assert_eq!(canonical_specifiers(""), "");
    }
}
