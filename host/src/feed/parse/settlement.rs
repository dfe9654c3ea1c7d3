//! bet_settlement, bet_cancel and their rollbacks. A settled outcome whose
//! `result`, `void_factor` or `dead_heat_factor` cannot be read, or says
//! what the feed cannot mean (a result other than -1, 0, 1; a void factor
//! outside 0..=1; a dead-heat factor outside 0<..=1), is read as undecided:
//! its bets stay open rather than be paid wrongly.

use std::borrow::Cow;

use quick_xml::events::BytesStart;
use quick_xml::reader::Reader;
use touchline_guest::event::{
    BetCancel, BetSettlement, CancelRollback, CancelledMarket, MarketRef, OutcomeRollback, SettledMarket,
    SettledOutcome, SettlementRollback,
};
use touchline_guest::model::OutcomeResult;

use super::fields::{Attr, Fields, opt_str, req, req_str};
use super::{Body, Result, header, specifiers};

pub(super) fn bet_settlement(
    r: &mut Reader<&[u8]>,
    root: &BytesStart,
    body: Body,
    f: &mut Fields<'_>,
) -> Result<BetSettlement> {
    const E: &str = "bet_settlement";
    let mut msg = BetSettlement {
        header: header(root, E, f)?,
        certainty: f.attr(root, E, "certainty")?.ok(),
        markets: Vec::new(),
    };
    body.for_each(r, |e, _| {
        match e.name().as_ref() {
            b"market" => {
                const M: &str = "market";
                msg.markets.push(SettledMarket {
                    id: req(e, M, "id")?,
                    specifiers: specifiers(e, M)?,
                    void_reason: f.attr(e, M, "void_reason")?.ok(),
                    outcomes: Vec::new(),
                });
            }
            b"outcome" => {
                if let Some(m) = msg.markets.last_mut() {
                    m.outcomes.push(settled_outcome(e, f)?);
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(msg)
}

fn settled_outcome(e: &BytesStart, f: &mut Fields<'_>) -> Result<SettledOutcome> {
    const O: &str = "outcome";
    let id = req_str(e, O, "id")?.into_owned();
    let result = f.attr::<i8>(e, O, "result")?;
    let result = f.check(result, "result", |r| (-1..=1).contains(r));
    let void_factor = f.attr(e, O, "void_factor")?;
    let void_factor = f.check(void_factor, "void_factor", |v| (0.0..=1.0).contains(v));
    let dead_heat_factor = f.attr(e, O, "dead_heat_factor")?;
    let dead_heat_factor = f.check(dead_heat_factor, "dead_heat_factor", |d| *d > 0.0 && *d <= 1.0);
    if matches!(result, Attr::Absent) {
        // Required: without it the outcome is not decided.
        f.report("result");
    }
    let readable = !void_factor.is_unreadable() && !dead_heat_factor.is_unreadable();
    Ok(SettledOutcome {
        id,
        result: result.ok().filter(|_| readable).unwrap_or(OutcomeResult::UNDECIDED),
        void_factor: void_factor.ok(),
        dead_heat_factor: dead_heat_factor.ok(),
    })
}

pub(super) fn bet_cancel(
    r: &mut Reader<&[u8]>,
    root: &BytesStart,
    body: Body,
    f: &mut Fields<'_>,
) -> Result<BetCancel> {
    const E: &str = "bet_cancel";
    let mut msg = BetCancel {
        header: header(root, E, f)?,
        start_time: f.attr(root, E, "start_time")?.ok(),
        end_time: f.attr(root, E, "end_time")?.ok(),
        superceded_by: opt_str(root, E, "superceded_by")?.map(Cow::into_owned),
        markets: Vec::new(),
    };
    body.for_each(r, |e, depth| {
        if depth == 1 && e.name().as_ref() == b"market" {
            const M: &str = "market";
            msg.markets.push(CancelledMarket {
                id: req(e, M, "id")?,
                specifiers: specifiers(e, M)?,
                void_reason: f.attr(e, M, "void_reason")?.ok(),
            });
        }
        Ok(())
    })?;
    Ok(msg)
}

/// A market without `<outcome>` children is rolled back whole; one with
/// them, only for those outcomes.
pub(super) fn rollback_settlement(
    r: &mut Reader<&[u8]>,
    root: &BytesStart,
    body: Body,
    f: &mut Fields<'_>,
) -> Result<SettlementRollback> {
    const E: &str = "rollback_bet_settlement";
    let header = header(root, E, f)?;
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
    let (whole, outcomes): (Vec<_>, Vec<_>) = markets.into_iter().partition(|m| m.outcomes.is_empty());
    let markets = whole.into_iter().map(|m| MarketRef {
        id: m.id,
        specifiers: m.specifiers,
    });
    Ok(SettlementRollback {
        header,
        markets: markets.collect(),
        outcomes,
    })
}

pub(super) fn rollback_cancel(
    r: &mut Reader<&[u8]>,
    root: &BytesStart,
    body: Body,
    f: &mut Fields<'_>,
) -> Result<CancelRollback> {
    const E: &str = "rollback_bet_cancel";
    let mut msg = CancelRollback {
        header: header(root, E, f)?,
        markets: Vec::new(),
        start_time: f.attr(root, E, "start_time")?.ok(),
        end_time: f.attr(root, E, "end_time")?.ok(),
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
