//! Settlement rules: how bet_settlement, bet_cancel and their rollbacks
//! change a match's markets, and where an accepted bet stands
//! ([`MatchState::settle`]). Pure.
//!
//! As the feed (Sportradar UOF) means them:
//! - bet_settlement gives each listed outcome its result: won, lost (with a
//!   `void_factor` share refunded: 1 void, 0.5 half win / half loss) or
//!   undecided (`-1`: its bets stay open; a later settlement decides it).
//!   An undecided result never replaces a decided one. The market is
//!   settled (status -3, the highest `certainty` seen) and stays so, whatever
//!   odds_change says, until a rollback_bet_settlement reopens it: the whole
//!   market, or only the outcomes it names.
//! - bet_cancel voids the bets placed within its window (`start_time`
//!   inclusive, `end_time` exclusive; a missing bound is open) and leaves
//!   the market's status to odds_change. Each market keeps the cancels in
//!   force; a rollback_bet_cancel removes the one with its window (or, if
//!   it names no window and none matches, all of them), so the bets it had
//!   voided stand again as they were, settled or open.
//! - A bet stands from that alone: void if a cancel in force covers its
//!   placement time, else as its outcome's decided result says, else open.
//!   Applying the same settlement or cancel again (several producers, a
//!   recovery, certainty 1 then 2) leaves every bet's standing unchanged,
//!   so the host settles and notifies each bet once.
//!
//! The cancels and the fixture are not in the layout-1 encoding of
//! `MatchState`/`Market`: [`SettlementPart`] is what layout 4 appends (see
//! `glue`).

use serde::{Deserialize, Serialize};

use crate::bet::{OpenBet, SettleStatus, Settlement};
use crate::delta::{Head, OutcomeFields, outcome_changed};
use crate::event::{BetCancel, BetSettlement, CancelRollback, SettledMarket, SettlementRollback};
use crate::fixture::Fixture;
use crate::market::{Market, MarketKey, Outcome, OutcomeResult, status};
use crate::model::{Change, MatchState};

/// A bet_cancel in force on a market.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cancel {
    /// Bets placed at or after it (Unix ms) are void; `None`: since ever.
    pub start_time: Option<i64>,
    /// Bets placed before it are void; `None`: up to now and later.
    pub end_time: Option<i64>,
    pub void_reason: Option<i32>,
}

impl Cancel {
    /// Whether a bet placed at `placed_at` (Unix ms) is void by it.
    pub fn covers(&self, placed_at: i64) -> bool {
        self.start_time.is_none_or(|s| placed_at >= s) && self.end_time.is_none_or(|e| placed_at < e)
    }

    fn window(&self) -> (Option<i64>, Option<i64>) {
        (self.start_time, self.end_time)
    }
}

impl MatchState {
    pub(crate) fn bet_settlement(&mut self, e: &BetSettlement) -> Change {
        let mut change = Change::default();
        for s in &e.markets {
            self.edit_market(
                &mut change,
                (s.id, s.specifiers.as_str().into()),
                true,
                |market, outcomes| {
                    market.take_settlement(s, e.certainty, outcomes);
                },
            );
        }
        change
    }

    pub(crate) fn rollback_settlement(&mut self, e: &SettlementRollback) -> Change {
        let mut change = Change::default();
        let whole = e.markets.iter().map(|r| (r.id, &r.specifiers, None));
        let some = e.outcomes.iter().map(|r| (r.id, &r.specifiers, Some(&r.outcomes[..])));
        for (id, specifiers, only) in whole.chain(some) {
            self.edit_market(
                &mut change,
                (id, specifiers.as_str().into()),
                false,
                |market, outcomes| {
                    market.reopen(only, outcomes);
                },
            );
        }
        change
    }

    pub(crate) fn bet_cancel(&mut self, e: &BetCancel) -> Change {
        let mut change = Change::default();
        for c in &e.markets {
            let cancel = Cancel {
                start_time: e.start_time,
                end_time: e.end_time,
                void_reason: c.void_reason,
            };
            self.edit_market(
                &mut change,
                (c.id, c.specifiers.as_str().into()),
                true,
                |market, _| match market.cancels.iter_mut().find(|x| x.window() == cancel.window()) {
                    Some(same) => *same = cancel,
                    None => market.cancels.push(cancel),
                },
            );
        }
        change
    }

    pub(crate) fn rollback_cancel(&mut self, e: &CancelRollback) -> Change {
        let window = (e.start_time, e.end_time);
        let mut change = Change::default();
        for r in &e.markets {
            self.edit_market(&mut change, (r.id, r.specifiers.as_str().into()), false, |market, _| {
                let before = market.cancels.len();
                market.cancels.retain(|c| c.window() != window);
                if market.cancels.len() == before && window == (None, None) {
                    // A rollback naming no window undoes the market's
                    // cancellation as a whole.
                    market.cancels.clear();
                }
            });
        }
        change
    }

    /// Edit the market at `key` with `edit` (which reports the indices of
    /// the outcomes it changed), creating it first if it is missing and
    /// `create`; what changed goes into `change`.
    fn edit_market(
        &mut self,
        change: &mut Change,
        key: MarketKey,
        create: bool,
        edit: impl FnOnce(&mut Market, &mut Vec<(usize, OutcomeFields)>),
    ) {
        let mut outcomes = Vec::new();
        if let Some(market) = self.markets.get_mut(&key) {
            let before = Head::of(market);
            edit(market, &mut outcomes);
            change.edited(&key, &before, market, outcomes);
        } else if create {
            let mut market = Market::new(key.0, &key.1);
            edit(&mut market, &mut outcomes);
            self.markets.insert(key.clone(), market);
            change.created(key);
        }
    }

    /// Where a bet stands now: void if a cancel in force covers its
    /// placement, else as its outcome's decided result says, else open.
    /// payout = stake × void_factor + stake × (1 − void_factor) × (won ? odds × dead_heat_factor : 0)
    pub fn settle(&self, bet: &OpenBet) -> Settlement {
        let open = Settlement {
            status: SettleStatus::Open,
            payout: 0.0,
            void_factor: 0.0,
            dead_heat_factor: 1.0,
        };
        let Some(market) = self.market(bet.market, &bet.specifiers) else {
            return open;
        };
        if market.cancels.iter().any(|c| c.covers(bet.placed_at)) {
            return Settlement {
                status: SettleStatus::Void,
                payout: bet.stake,
                void_factor: 1.0,
                dead_heat_factor: 1.0,
            };
        }
        let result = market
            .outcomes
            .iter()
            .find(|o| o.id == bet.outcome)
            .and_then(|o| o.result.as_ref())
            .filter(|r| r.is_decided());
        let Some(r) = result else { return open };
        let won = r.result == OutcomeResult::WON;
        let vf = r.void_factor.unwrap_or(0.0);
        let dhf = r.dead_heat_factor.unwrap_or(1.0);
        let payout = bet.stake * vf + bet.stake * (1.0 - vf) * if won { bet.odds * dhf } else { 0.0 };
        let status = if won {
            SettleStatus::Won
        } else if vf > 0.0 {
            SettleStatus::Void
        } else {
            SettleStatus::Lost
        };
        Settlement {
            status,
            payout,
            void_factor: vf,
            dead_heat_factor: dhf,
        }
    }
}

impl Market {
    /// Fold a settlement in; the indices of the outcomes it changed go to
    /// `changed` (a repeat changes nothing).
    fn take_settlement(&mut self, s: &SettledMarket, certainty: Option<u8>, changed: &mut Vec<(usize, OutcomeFields)>) {
        if !self.is_settled() && self.status != status::SETTLED {
            self.status_before_resolution = Some(self.status);
        }
        self.status = status::SETTLED;
        self.void_reason = s.void_reason;
        self.certainty = self.certainty.max(certainty);
        for so in &s.outcomes {
            let result = OutcomeResult {
                result: so.result,
                void_factor: so.void_factor,
                dead_heat_factor: so.dead_heat_factor,
            };
            match self.outcomes.iter().position(|o| o.id == so.id) {
                Some(i) => {
                    let o = &mut self.outcomes[i];
                    // Only a rollback reopens a decided outcome.
                    let reopens = !result.is_decided() && o.result.as_ref().is_some_and(OutcomeResult::is_decided);
                    if !reopens {
                        let fields = OutcomeFields::default()
                            .with(OutcomeFields::RESULT, o.result.as_ref() != Some(&result))
                            .with(OutcomeFields::ACTIVE, o.active);
                        o.result = Some(result);
                        o.active = false;
                        outcome_changed(changed, i, fields);
                    }
                }
                None => {
                    changed.push((self.outcomes.len(), OutcomeFields::NEW));
                    self.outcomes.push(Outcome {
                        id: so.id.as_str().into(),
                        odds: None,
                        active: false,
                        result: Some(result),
                    });
                }
            }
        }
    }

    /// Undo the settlement of `only` these outcomes (`None`: all); once no
    /// outcome holds a result the market is open again. The indices of the
    /// outcomes it reopened go to `changed`.
    fn reopen(&mut self, only: Option<&[String]>, changed: &mut Vec<(usize, OutcomeFields)>) {
        let mut any = false;
        for (i, o) in self.outcomes.iter_mut().enumerate() {
            if only.is_none_or(|ids| ids.iter().any(|id| *id == o.id)) && o.result.take().is_some() {
                changed.push((i, OutcomeFields::RESULT));
                any = true;
            }
        }
        if self.is_settled() || !(any || self.status == status::SETTLED) {
            return;
        }
        // Open again, but its old odds are stale: it stays suspended until
        // the producer sends fresh odds.
        self.status = match self.status_before_resolution.take() {
            Some(status::ACTIVE) | None => status::SUSPENDED,
            Some(s) => s,
        };
        self.void_reason = None;
        self.certainty = None;
    }
}

/// What state layout 4 appends: the fixture's state and the cancels in
/// force, keyed like `MatchState::markets` (markets without any are left
/// out).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SettlementPart {
    pub fixture: Fixture,
    pub cancels: Vec<(MarketKey, Vec<Cancel>)>,
}

/// [`SettlementPart`] borrowing from the state: the same encoding.
#[derive(Serialize)]
pub struct SettlementPartRef<'a> {
    fixture: &'a Fixture,
    cancels: Vec<(&'a MarketKey, &'a [Cancel])>,
}

impl SettlementPart {
    /// The part to save after `state`'s older layout parts.
    pub fn of(state: &MatchState) -> SettlementPartRef<'_> {
        SettlementPartRef {
            fixture: &state.fixture,
            cancels: state
                .markets
                .iter()
                .filter(|(_, m)| !m.cancels.is_empty())
                .map(|(k, m)| (k, &m.cancels[..]))
                .collect(),
        }
    }

    /// Put the part back into the state it was saved with (a key naming no
    /// market is dropped).
    pub fn restore_into(self, state: &mut MatchState) {
        state.fixture = self.fixture;
        for (key, cancels) in self.cancels {
            if let Some(m) = state.markets.get_mut(&key) {
                m.cancels = cancels;
            }
        }
    }

    /// Fill in what a state saved before layout 4 lacks. Then a bet_cancel
    /// voided every bet and put the market at -4 (remembering the status
    /// before): such a market keeps its status and gets a cancel without
    /// window, so its bets stay void and a rollback_bet_cancel restores them.
    pub fn restore_older(state: &mut MatchState) {
        for m in state.markets.values_mut() {
            if m.status != status::CANCELLED || m.status_before_resolution.is_none() {
                continue;
            }
            m.cancels.push(Cancel {
                start_time: None,
                end_time: None,
                void_reason: m.void_reason,
            });
            if !m.is_settled() {
                // The status before was the cancel's, not a settlement's.
                m.status_before_resolution = None;
                m.void_reason = None;
            }
        }
    }
}

#[cfg(test)]
mod tests;
