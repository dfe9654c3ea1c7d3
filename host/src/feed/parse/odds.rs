//! odds_change: the scoreboard and the markets' odds. Read the safe way
//! where a dropped value would mislead a bettor: an unreadable market
//! `status` is suspended, an unreadable outcome `active` inactive, and a
//! `sport_event_status` whose `status` is unreadable is left out.

use std::borrow::Cow;

use quick_xml::events::BytesStart;
use quick_xml::reader::Reader;
use touchline_guest::event::{Clock, MarketOdds, OddsChange, OutcomeOdds, PeriodScore, SportEventStatus};
use touchline_guest::model::status;

use super::fields::{Attr, Fields, attrs, opt_str, req_value};
use super::{Body, ParseError, Result, header};

pub(super) fn odds_change(
    r: &mut Reader<&[u8]>,
    root: &BytesStart,
    body: Body,
    f: &mut Fields<'_>,
) -> Result<OddsChange> {
    const E: &str = "odds_change";
    let mut msg = OddsChange {
        header: header(root, E, f)?,
        sport_event_status: None,
        betting_status: None,
        markets: Vec::new(),
    };
    // Inside a sport_event_status left out, its clock and period scores are too.
    let mut scoreboard = true;
    body.for_each(r, |e, _| {
        match e.name().as_ref() {
            b"sport_event_status" => {
                const S: &str = "sport_event_status";
                let st = f.attr(e, S, "status")?;
                scoreboard = !st.is_unreadable();
                msg.sport_event_status = scoreboard.then_some(SportEventStatus {
                    status: st.or(0, 0),
                    match_status: f.attr(e, S, "match_status")?.ok(),
                    home_score: f.attr(e, S, "home_score")?.ok(),
                    away_score: f.attr(e, S, "away_score")?.ok(),
                    clock: None,
                    period_scores: Vec::new(),
                });
            }
            b"clock" => {
                const C: &str = "clock";
                if let Some(ses) = msg.sport_event_status.as_mut().filter(|_| scoreboard) {
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
                if let Some(ses) = msg.sport_event_status.as_mut().filter(|_| scoreboard) {
                    ses.period_scores.push(PeriodScore {
                        number: f.attr(e, P, "number")?.ok(),
                        match_status_code: f.attr(e, P, "match_status_code")?.ok(),
                        home_score: f.attr(e, P, "home_score")?.ok().unwrap_or(0.0),
                        away_score: f.attr(e, P, "away_score")?.ok().unwrap_or(0.0),
                    });
                }
            }
            b"odds" => msg.betting_status = f.attr(e, "odds", "betting_status")?.ok(),
            b"market" => {
                const M: &str = "market";
                let [id, specs, st, favourite] = attrs(e, M, ["id", "specifiers", "status", "favourite"])?;
                msg.markets.push(MarketOdds {
                    id: req_value(id, M, "id")?,
                    specifiers: specs
                        .map(|s| touchline_guest::event::canonical_specifiers(&s))
                        .unwrap_or_default(),
                    status: f.value(st, "status").or(status::ACTIVE, status::SUSPENDED),
                    favourite: f.value::<u8>(favourite, "favourite").ok() == Some(1),
                    outcomes: Vec::new(),
                });
            }
            b"outcome" => {
                const O: &str = "outcome";
                if let Some(m) = msg.markets.last_mut() {
                    let [id, odds, active] = attrs(e, O, ["id", "odds", "active"])?;
                    let odds: Option<f64> = f.value(odds, "odds").ok();
                    let active = match f.value::<u8>(active, "active") {
                        Attr::Read(a) => a == 1,
                        Attr::Absent => odds.is_some(),
                        Attr::Unreadable => false,
                    };
                    m.outcomes.push(OutcomeOdds {
                        id: id
                            .ok_or(ParseError::MissingAttribute { element: O, attr: "id" })?
                            .as_ref()
                            .into(),
                        odds,
                        active,
                    });
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(msg)
}
