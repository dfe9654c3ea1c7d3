//! The fixture as fixture_change messages change it: start time, the last
//! change type, and what a cancelled event does to its markets. Pure.
//!
//! A fixture_change with `change_type` 3 (cancelled) suspends every active
//! market of the match, and the scoreboard says so (`"cancelled": true`,
//! `"fixture_change": 3`) until a later fixture_change of another type
//! (e.g. a new date) lifts it; its markets then wait for fresh odds. The
//! other change types (1 new, 2 date and time, 4 format, 5 coverage, 6
//! pitcher) are kept and shown, and change nothing else.

use serde::{Deserialize, Serialize};

use crate::delta::Head;
use crate::event::{FixtureChange, change_type};
use crate::market::status;
use crate::model::{Change, MatchState};

/// What the match keeps of its fixture_changes (saved in the settlement
/// part, layout 4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fixture {
    /// `change_type` of the last fixture_change that carried one.
    pub change_type: Option<i32>,
}

impl Fixture {
    /// Whether the event is cancelled.
    pub fn cancelled(&self) -> bool {
        self.change_type == Some(change_type::CANCELLED)
    }
}

impl MatchState {
    pub(crate) fn fixture_change(&mut self, e: &FixtureChange) -> Change {
        let mut change = Change::default();
        let start = e.start_time.or(e.next_live_time);
        if start.is_some() && start != self.summary.start_time {
            self.summary.start_time = start;
            change.summary = true;
        }
        if e.change_type.is_some() && e.change_type != self.fixture.change_type {
            self.fixture.change_type = e.change_type;
            change.summary = true;
        }
        if self.fixture.cancelled() {
            for (key, market) in &mut self.markets {
                if market.status == status::ACTIVE {
                    let before = Head::of(market);
                    market.status = status::SUSPENDED;
                    change.edited(key, &before, market, Vec::new());
                }
            }
        }
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::*;

    fn header() -> Header {
        Header {
            product: Some(3),
            event_id: "m".into(),
            timestamp: 5,
            request_id: None,
        }
    }

    fn fixture_change(change_type: Option<i32>) -> MatchEvent {
        MatchEvent::FixtureChange(FixtureChange {
            header: header(),
            change_type,
            start_time: Some(1_000),
            next_live_time: None,
        })
    }

    /// A state with market 1 active and market 2 deactivated.
    fn state() -> MatchState {
        let market = |id, status| MarketOdds {
            id,
            specifiers: "".into(),
            status,
            favourite: false,
            outcomes: vec![],
        };
        let mut s = MatchState::new("m");
        s.apply(&MatchEvent::OddsChange(OddsChange {
            header: header(),
            sport_event_status: None,
            betting_status: None,
            markets: vec![market(1, status::ACTIVE), market(2, status::DEACTIVATED)],
        }));
        s
    }

    /// Apply `change_types` in turn; check market 1 and 2's statuses, what
    /// the last one touched and the scoreboard's fixture fields.
    fn check(change_types: &[Option<i32>], statuses: [i32; 2], touched: usize, json: (Option<i32>, bool)) {
        let mut s = state();
        let mut last = Change::default();
        for &t in change_types {
            last = s.apply(&fixture_change(t));
        }
        let got = [1, 2].map(|id| s.market(id, "").expect("market").status);
        assert_eq!(got, statuses, "{change_types:?}");
        assert_eq!(last.markets.len(), touched, "{change_types:?}");
        let snap = serde_json::to_value(s.snapshot()).expect("json");
        assert_eq!(snap["fixture_change"], serde_json::json!(json.0), "{snap}");
        assert_eq!(snap["cancelled"], json.1, "{snap}");
    }

    #[test]
    fn a_cancelled_event_suspends_its_active_markets_and_says_so() {
        use status::*;
        check(&[None], [ACTIVE, DEACTIVATED], 0, (None, false));
        check(&[Some(2)], [ACTIVE, DEACTIVATED], 0, (Some(2), false));
        check(&[Some(5)], [ACTIVE, DEACTIVATED], 0, (Some(5), false));
        check(&[Some(3)], [SUSPENDED, DEACTIVATED], 1, (Some(3), true));
        // A change without a type keeps the cancellation.
        check(&[Some(3), None], [SUSPENDED, DEACTIVATED], 0, (Some(3), true));
        // A new date lifts it; the markets wait for fresh odds.
        check(&[Some(3), Some(2)], [SUSPENDED, DEACTIVATED], 0, (Some(2), false));
    }

    #[test]
    fn the_scoreboard_changes_with_the_change_type() {
        let mut s = state();
        assert!(s.apply(&fixture_change(Some(1))).summary, "start time and type");
        assert!(!s.apply(&fixture_change(Some(1))).summary, "a repeat");
        assert!(s.apply(&fixture_change(Some(3))).summary);
        assert_eq!(s.summary.start_time, Some(1_000));
    }
}
