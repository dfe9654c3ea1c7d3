//! Events as `EVENT_FORMAT`s 1 and 2 encoded them, read from journals
//! written before format 3.
//!
//! Each format changed some kinds only by appending fields: format 2 the
//! rollbacks (the window of a rollback_bet_cancel, the outcomes of a
//! rollback_bet_settlement), format 3 the bet_stop (the market ids its
//! groups stood for, resolved by the host from the market descriptions).
//! An older entry of a changed kind always ends before the new fields, so
//! it never decodes as a newer format and lands here: tried as format 2,
//! then as format 1. Every other kind decodes the same in all three.
//! Nothing here is ever encoded by the host.

use serde::{Deserialize, Serialize};

use super::{
    BetCancel, BetSettlement, BetStop, CancelRollback, FixtureChange, Header, MarketRef, MatchEvent, OddsChange,
    SettlementRollback,
};

/// A bet_stop of formats 1 and 2: its groups, unresolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Stop2 {
    pub header: Header,
    pub groups: Vec<String>,
    pub market_status: i32,
}

impl From<Stop2> for BetStop {
    /// Resolved by the guest's own table, as those formats meant.
    fn from(s: Stop2) -> BetStop {
        BetStop {
            header: s.header,
            groups: s.groups,
            market_status: s.market_status,
            markets: None,
        }
    }
}

/// `MatchEvent` of format 2: same variants, same order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) enum Format2 {
    OddsChange(OddsChange),
    BetStop(Stop2),
    BetSettlement(BetSettlement),
    BetCancel(BetCancel),
    RollbackBetSettlement(SettlementRollback),
    RollbackBetCancel(CancelRollback),
    FixtureChange(FixtureChange),
}

impl From<Format2> for MatchEvent {
    fn from(e: Format2) -> MatchEvent {
        match e {
            Format2::OddsChange(e) => MatchEvent::OddsChange(e),
            Format2::BetStop(e) => MatchEvent::BetStop(e.into()),
            Format2::BetSettlement(e) => MatchEvent::BetSettlement(e),
            Format2::BetCancel(e) => MatchEvent::BetCancel(e),
            Format2::RollbackBetSettlement(e) => MatchEvent::RollbackBetSettlement(e),
            Format2::RollbackBetCancel(e) => MatchEvent::RollbackBetCancel(e),
            Format2::FixtureChange(e) => MatchEvent::FixtureChange(e),
        }
    }
}

/// `MatchEvent` of format 1: same variants, same order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) enum Format1 {
    OddsChange(OddsChange),
    BetStop(Stop2),
    BetSettlement(BetSettlement),
    BetCancel(BetCancel),
    RollbackBetSettlement(MarketRollback),
    RollbackBetCancel(MarketRollback),
    FixtureChange(FixtureChange),
}

/// Both rollbacks of format 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct MarketRollback {
    pub header: Header,
    pub markets: Vec<MarketRef>,
}

/// A format-2 or format-1 event, if `bytes` are one (all of them).
pub(super) fn decode(bytes: &[u8]) -> Option<MatchEvent> {
    whole::<Format2>(bytes)
        .map(MatchEvent::from)
        .or_else(|| whole::<Format1>(bytes).map(MatchEvent::from))
}

fn whole<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let (event, read) = bincode::serde::decode_from_slice::<T, _>(bytes, crate::codec()).ok()?;
    (read == bytes.len()).then_some(event)
}

impl From<Format1> for MatchEvent {
    fn from(e: Format1) -> MatchEvent {
        match e {
            Format1::OddsChange(e) => MatchEvent::OddsChange(e),
            Format1::BetStop(e) => MatchEvent::BetStop(e.into()),
            Format1::BetSettlement(e) => MatchEvent::BetSettlement(e),
            Format1::BetCancel(e) => MatchEvent::BetCancel(e),
            // A whole-market rollback, as format 1 meant.
            Format1::RollbackBetSettlement(r) => MatchEvent::RollbackBetSettlement(SettlementRollback {
                header: r.header,
                markets: r.markets,
                outcomes: Vec::new(),
            }),
            // Format 1 kept no window: the rollback names none.
            Format1::RollbackBetCancel(r) => MatchEvent::RollbackBetCancel(CancelRollback {
                header: r.header,
                markets: r.markets,
                start_time: None,
                end_time: None,
            }),
            Format1::FixtureChange(e) => MatchEvent::FixtureChange(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{SettledMarket, SettledOutcome};

    fn header() -> Header {
        Header {
            product: Some(1),
            event_id: "m".into(),
            timestamp: 7,
            request_id: Some(3),
        }
    }

    fn market(id: u32, specifiers: &str) -> MarketRef {
        MarketRef {
            id,
            specifiers: specifiers.into(),
        }
    }

    /// `old` encoded as format 1 decodes (through [`crate::event::decode`])
    /// as `new`.
    fn check(old: Format1, new: MatchEvent) {
        let bytes = crate::encode(&old);
        assert_eq!(crate::event::decode(&bytes).expect("decodes"), new, "{old:?}");
    }

    #[test]
    fn format_1_journal_entries_still_decode() {
        let markets = vec![market(312, "pointnr=45|setnr=4"), market(314, "")];
        check(
            Format1::RollbackBetCancel(MarketRollback {
                header: header(),
                markets: markets.clone(),
            }),
            MatchEvent::RollbackBetCancel(CancelRollback {
                header: header(),
                markets: markets.clone(),
                start_time: None,
                end_time: None,
            }),
        );
        check(
            Format1::RollbackBetSettlement(MarketRollback {
                header: header(),
                markets: markets.clone(),
            }),
            MatchEvent::RollbackBetSettlement(SettlementRollback {
                header: header(),
                markets,
                outcomes: Vec::new(),
            }),
        );
        // Format 1's `u8` results are format 2's `i8` ones, byte for byte...
        for r in [0u8, 1] {
            assert_eq!(crate::encode(&r), crate::encode(&(r as i8)));
        }
        // ...so unchanged kinds are the very same bytes.
        let settlement = BetSettlement {
            header: header(),
            certainty: Some(2),
            markets: vec![SettledMarket {
                id: 1,
                specifiers: String::new(),
                void_reason: None,
                outcomes: [("1", 1), ("2", 0)]
                    .map(|(id, result)| SettledOutcome {
                        id: id.into(),
                        result,
                        void_factor: None,
                        dead_heat_factor: Some(0.5),
                    })
                    .into(),
            }],
        };
        let old = crate::encode(&Format1::BetSettlement(settlement.clone()));
        let new = MatchEvent::BetSettlement(settlement);
        assert_eq!(old, crate::encode(&new));
        assert_eq!(crate::decode::<MatchEvent>(&old).expect("current format"), new);
    }

    #[test]
    fn format_2_bet_stops_decode_unresolved_and_current_ones_keep_their_markets() {
        let old = Stop2 {
            header: header(),
            groups: vec!["corners".into()],
            market_status: -1,
        };
        for bytes in [
            crate::encode(&Format2::BetStop(old.clone())),
            crate::encode(&Format1::BetStop(old.clone())),
        ] {
            assert_eq!(
                crate::event::decode(&bytes).expect("decodes"),
                MatchEvent::BetStop(old.clone().into())
            );
        }
        let new = MatchEvent::BetStop(BetStop {
            markets: Some(vec![166, 167]),
            ..old.into()
        });
        let bytes = crate::encode(&new);
        assert_eq!(crate::event::decode(&bytes).expect("decodes"), new);
        assert_eq!(decode(&bytes), None, "formats 1 and 2 do not take the trailing markets");
    }

    #[test]
    fn current_rollbacks_are_not_read_as_format_1() {
        let new = MatchEvent::RollbackBetCancel(CancelRollback {
            header: header(),
            markets: vec![market(1, "")],
            start_time: Some(10),
            end_time: None,
        });
        let bytes = crate::encode(&new);
        assert_eq!(crate::event::decode(&bytes).expect("decodes"), new);
        assert_eq!(
            whole::<Format1>(&bytes),
            None,
            "format 1 does not take the trailing window"
        );
        assert!(crate::event::decode(&bytes[..bytes.len() - 1]).is_err(), "cut short");
    }
}
