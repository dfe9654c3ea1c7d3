//! A market as the match model keeps it: its outcomes, status codes, how
//! an odds_change changes it, whose odds it shows, its JSON view and its
//! betting groups. Settlements, cancellations and their rollbacks are
//! [`crate::settlement`]'s. Pure.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::delta::{OutcomeFields, outcome_changed};
use crate::event::MarketOdds;
use crate::settlement::Cancel;

/// Market status codes of the feed.
pub mod status {
    pub const ACTIVE: i32 = 1;
    pub const DEACTIVATED: i32 = 0;
    pub const SUSPENDED: i32 = -1;
    pub const HANDED_OVER: i32 = -2;
    pub const SETTLED: i32 = -3;
    pub const CANCELLED: i32 = -4;
}

/// Market key: id + canonical specifiers (inline up to 12 bytes in the
/// guest, so making the key of a `total=2.5` allocates nothing).
pub type MarketKey = (u32, CompactString);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Market {
    pub id: u32,
    pub specifiers: CompactString,
    pub status: i32,
    pub favourite: bool,
    pub outcomes: Vec<Outcome>,
    /// Status before the market was settled, restored by the rollback of
    /// its settlement.
    pub status_before_resolution: Option<i32>,
    /// Of the settlement.
    pub void_reason: Option<i32>,
    /// Of the settlement: 1 live scouted, 2 confirmed (the highest any
    /// settlement carried since the market was last reopened).
    pub certainty: Option<u8>,
    /// The producer whose odds the market shows (the `product` of the
    /// odds_change that last set them); `None` until odds arrive, or when
    /// they came without one. Not part of the `Market` encoding, which is
    /// layout v1's and must stay readable by older guests: saved in the
    /// producer part appended after it (see `glue`, `producer`), shown in
    /// JSON through [`MarketView`].
    #[serde(skip)]
    pub product: Option<u32>,
    /// The bet_cancels in force (not rolled back), each voiding the bets
    /// placed in its window. Not in the layout-1 encoding either: saved in
    /// the settlement part (layout 4, see `glue`, `settlement`).
    #[serde(skip)]
    pub cancels: Vec<Cancel>,
}

/// A market as the snapshot and delta JSON show it: its fields and, when
/// known, whose odds they are (`"product": P`) and the cancellations in
/// force (`"cancels": [...]`, absent when none).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MarketView<'a> {
    #[serde(flatten)]
    pub market: &'a Market,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<u32>,
    #[serde(skip_serializing_if = "<[Cancel]>::is_empty")]
    pub cancels: &'a [Cancel],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Inline up to 12 bytes in the guest (the simulator's ids are);
    /// encoded as a string like the `String` it was (saved states of every
    /// layout read the same).
    pub id: CompactString,
    pub odds: Option<f64>,
    pub active: bool,
    pub result: Option<OutcomeResult>,
}

/// An outcome's settlement, as the feed gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeResult {
    /// [`OutcomeResult::WON`], [`OutcomeResult::LOST`] or
    /// [`OutcomeResult::UNDECIDED`]. Layouts 1-3 had `u8` (0 and 1 only):
    /// the same bytes.
    pub result: i8,
    pub void_factor: Option<f64>,
    pub dead_heat_factor: Option<f64>,
}

impl OutcomeResult {
    pub const WON: i8 = 1;
    pub const LOST: i8 = 0;
    /// Settled later: the outcome's bets stay open.
    pub const UNDECIDED: i8 = -1;

    pub fn is_decided(&self) -> bool {
        self.result != Self::UNDECIDED
    }
}

impl Market {
    pub(crate) fn new(id: u32, specifiers: &str) -> Self {
        Market {
            id,
            specifiers: specifiers.into(),
            status: status::DEACTIVATED,
            favourite: false,
            outcomes: Vec::new(),
            status_before_resolution: None,
            void_reason: None,
            certainty: None,
            product: None,
            cancels: Vec::new(),
        }
    }

    pub fn view(&self) -> MarketView<'_> {
        MarketView {
            market: self,
            product: self.product,
            cancels: &self.cancels,
        }
    }

    /// Whether a bet_settlement settled it (some outcome holds a result,
    /// decided or not) and no rollback reopened it since: odds_change
    /// leaves such a market alone.
    pub fn is_settled(&self) -> bool {
        self.outcomes.iter().any(|o| o.result.is_some())
    }

    /// Odds from producer `from`: merged, and the market now shows that
    /// producer's odds. The indices of the outcomes that changed or are
    /// new go to `changed` (the market's own fields are compared by the
    /// caller: `delta`).
    pub(crate) fn take_odds(&mut self, m: &MarketOdds, from: Option<u32>, changed: &mut Vec<(usize, OutcomeFields)>) {
        self.product = from;
        self.status = m.status;
        self.favourite = m.favourite;
        for o in &m.outcomes {
            match self.outcomes.iter().position(|x| x.id == o.id) {
                Some(i) => {
                    let x = &mut self.outcomes[i];
                    let fields = OutcomeFields::default()
                        .with(OutcomeFields::ODDS, x.odds != o.odds)
                        .with(OutcomeFields::ACTIVE, x.active != o.active);
                    x.odds = o.odds;
                    x.active = o.active;
                    outcome_changed(changed, i, fields);
                }
                None => {
                    changed.push((self.outcomes.len(), OutcomeFields::NEW));
                    self.outcomes.push(Outcome {
                        id: o.id.clone(),
                        odds: o.odds,
                        active: o.active,
                        result: None,
                    });
                }
            }
        }
    }
}

/// Betting groups of a market when the host resolved none (no market
/// descriptions, or a journal entry older than event format 3): the
/// groups of the provider's descriptions for the markets the simulator
/// and the samples use; every market is in `all`. Unknown markets are
/// stopped only by `groups="all"`.
pub fn market_groups(market_id: u32) -> &'static [&'static str] {
    match market_id {
        // 1x2, next goal, double chance, draw no bet, handicaps, totals,
        // exact goals, winning margin, both teams to score
        1 | 8 | 10 | 11 | 14 | 15 | 16 | 18 | 19 | 20 | 21 | 26 | 29 => &["all", "score", "regular_play"],
        // first-half markets
        60 | 61 | 62 | 63 | 65 | 66 | 68 | 69 => &["all", "score", "1st_half"],
        // corners
        162..=170 => &["all", "regular_play", "corners"],
        // bookings
        136..=146 => &["all", "regular_play", "bookings"],
        _ => &["all"],
    }
}
