//! What one event changed ([`Change`]) and the `delta` of the update frame
//! that says it ([`Delta`]): only what changed, for a client to merge into
//! the state it has (`docs/protocol.md`, "Applying an update"). Pure.
//!
//! A [`Change`] is found while the event is applied, by comparing each
//! market it edits with the market before ([`Head`], the outcomes an edit
//! reports), so it depends on the model state and the event alone: a guest
//! rebuilt from a saved state and fed the same events says the same bytes.
//!
//! Per market a delta carries its key (`id`, `specifiers`) and:
//! - a market the state did not have: the whole market, as a snapshot
//!   shows it;
//! - otherwise each of its own fields that changed (`status`, `favourite`,
//!   `status_before_resolution`, `void_reason`, `certainty`, `product`,
//!   `cancels`), `null` (`cancels`: `[]`) for one that became none, and in
//!   `outcomes` only the outcomes that changed or are new: a new one whole,
//!   a known one by its `id` with the fields that changed (`odds`,
//!   `active`, `result`).
//!
//! A market no event changed is not in the delta; nothing is ever removed.
//! [`json`] renders a delta as the `Serialize` derived here would, faster.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::market::{Market, MarketKey, MarketView, Outcome, OutcomeResult};
use crate::model::{MatchState, SummaryView};
use crate::settlement::Cancel;

/// What an applied event changed, before rendering.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    /// The scoreboard (or its owner, or the fixture's state) changed.
    pub summary: bool,
    /// In key order, each once (a `bet_stop` for `all` changes hundreds).
    pub markets: BTreeMap<MarketKey, MarketChange>,
}

/// What changed in one market.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MarketChange {
    /// The state did not have it before the event: it goes out whole.
    pub new: bool,
    /// Which of its own fields changed.
    pub fields: Fields,
    /// The outcomes that changed or are new, by index into
    /// `Market::outcomes` (only ever appended to, so stable); ascending,
    /// each once.
    pub outcomes: Vec<(usize, OutcomeFields)>,
}

/// Which of a market's own fields changed (a bit each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fields(u8);

impl Fields {
    pub const STATUS: Fields = Fields(1);
    pub const FAVOURITE: Fields = Fields(1 << 1);
    pub const STATUS_BEFORE_RESOLUTION: Fields = Fields(1 << 2);
    pub const VOID_REASON: Fields = Fields(1 << 3);
    pub const CERTAINTY: Fields = Fields(1 << 4);
    pub const PRODUCT: Fields = Fields(1 << 5);
    pub const CANCELS: Fields = Fields(1 << 6);

    pub fn has(self, f: Fields) -> bool {
        self.0 & f.0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn with(self, f: Fields, on: bool) -> Fields {
        if on { Fields(self.0 | f.0) } else { self }
    }
}

/// Which fields of an outcome changed (a bit each), or that it is new.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutcomeFields(u8);

impl OutcomeFields {
    pub const ODDS: OutcomeFields = OutcomeFields(1);
    pub const ACTIVE: OutcomeFields = OutcomeFields(1 << 1);
    pub const RESULT: OutcomeFields = OutcomeFields(1 << 2);
    /// Not in the market before: goes out whole.
    pub const NEW: OutcomeFields = OutcomeFields(1 << 3);

    pub fn has(self, f: OutcomeFields) -> bool {
        self.0 & f.0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn with(self, f: OutcomeFields, on: bool) -> OutcomeFields {
        if on { OutcomeFields(self.0 | f.0) } else { self }
    }
}

/// Record that the outcome at `index` changed `fields` (nothing when none).
pub(crate) fn outcome_changed(changed: &mut Vec<(usize, OutcomeFields)>, index: usize, fields: OutcomeFields) {
    if !fields.is_empty() {
        changed.push((index, fields));
    }
}

/// A market's own fields as they were before an edit: what the edit is
/// compared with. Cheap: no outcome is copied, and the cancels are almost
/// always none.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Head {
    status: i32,
    favourite: bool,
    status_before_resolution: Option<i32>,
    void_reason: Option<i32>,
    certainty: Option<u8>,
    product: Option<u32>,
    cancels: Vec<Cancel>,
}

impl Head {
    pub(crate) fn of(m: &Market) -> Head {
        Head {
            status: m.status,
            favourite: m.favourite,
            status_before_resolution: m.status_before_resolution,
            void_reason: m.void_reason,
            certainty: m.certainty,
            product: m.product,
            cancels: m.cancels.clone(),
        }
    }

    /// The fields in which `after` differs from this.
    fn diff(&self, after: &Market) -> Fields {
        Fields::default()
            .with(Fields::STATUS, self.status != after.status)
            .with(Fields::FAVOURITE, self.favourite != after.favourite)
            .with(
                Fields::STATUS_BEFORE_RESOLUTION,
                self.status_before_resolution != after.status_before_resolution,
            )
            .with(Fields::VOID_REASON, self.void_reason != after.void_reason)
            .with(Fields::CERTAINTY, self.certainty != after.certainty)
            .with(Fields::PRODUCT, self.product != after.product)
            .with(Fields::CANCELS, self.cancels != after.cancels)
    }
}

impl Change {
    /// The event created the market at `key`.
    pub(crate) fn created(&mut self, key: MarketKey) {
        let entry = self.markets.entry(key).or_default();
        entry.new = true;
    }

    /// The event edited the market at `key`, which was `before` and is
    /// `after` now; `outcomes`: the outcomes the edit changed (by index).
    /// Nothing is recorded when nothing changed.
    pub(crate) fn edited(
        &mut self,
        key: &MarketKey,
        before: &Head,
        after: &Market,
        mut outcomes: Vec<(usize, OutcomeFields)>,
    ) {
        let fields = before.diff(after);
        if fields.is_empty() && outcomes.is_empty() {
            return;
        }
        let entry = self.markets.entry(key.clone()).or_default();
        entry.fields = Fields(entry.fields.0 | fields.0);
        // Usually the first edit of this market in the event, each outcome
        // once: then this is all.
        outcomes.append(&mut entry.outcomes);
        outcomes.sort_unstable_by_key(|(i, _)| *i);
        outcomes.dedup_by(|later, first| {
            let same = later.0 == first.0;
            if same {
                first.1 = OutcomeFields(first.1.0 | later.1.0);
            }
            same
        });
        entry.outcomes = outcomes;
    }
}

/// What one event changed. Serialised as the body of an `update` frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delta<'a> {
    pub event: &'static str,
    pub timestamp: i64,
    /// Present when the scoreboard (or its owner) changed: all of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<SummaryView<'a>>,
    /// Every market this event changed, in key order, with what changed.
    pub markets: Vec<MarketDelta<'a>>,
}

/// One market of a delta.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MarketDelta<'a> {
    /// New to the state: whole.
    Whole(MarketView<'a>),
    /// Known: what changed.
    Part(MarketPart<'a>),
}

/// The changed part of a known market: its key, the fields that changed
/// (`Some(None)` is a field that became none: `null`), and the outcomes
/// that changed (a new one whole, a known one its id and what changed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MarketPart<'a> {
    pub id: u32,
    pub specifiers: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub favourite: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_before_resolution: Option<Option<i32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub void_reason: Option<Option<i32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certainty: Option<Option<u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<Option<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancels: Option<&'a [Cancel]>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<OutcomeDelta<'a>>,
}

/// One outcome of a known market in a delta.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum OutcomeDelta<'a> {
    /// New to the market: whole.
    Whole(&'a Outcome),
    /// Known: its id and the fields that changed (`Some(None)`: `null`).
    Part {
        id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        odds: Option<Option<f64>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        active: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<Option<&'a OutcomeResult>>,
    },
}

impl<'a> OutcomeDelta<'a> {
    fn of(o: &'a Outcome, f: OutcomeFields) -> OutcomeDelta<'a> {
        if f.has(OutcomeFields::NEW) {
            return OutcomeDelta::Whole(o);
        }
        OutcomeDelta::Part {
            id: &o.id,
            odds: f.has(OutcomeFields::ODDS).then_some(o.odds),
            active: f.has(OutcomeFields::ACTIVE).then_some(o.active),
            result: f.has(OutcomeFields::RESULT).then_some(o.result.as_ref()),
        }
    }
}

impl<'a> MarketPart<'a> {
    fn of(m: &'a Market, c: &MarketChange) -> MarketPart<'a> {
        let f = c.fields;
        MarketPart {
            id: m.id,
            specifiers: &m.specifiers,
            status: f.has(Fields::STATUS).then_some(m.status),
            favourite: f.has(Fields::FAVOURITE).then_some(m.favourite),
            status_before_resolution: f
                .has(Fields::STATUS_BEFORE_RESOLUTION)
                .then_some(m.status_before_resolution),
            void_reason: f.has(Fields::VOID_REASON).then_some(m.void_reason),
            certainty: f.has(Fields::CERTAINTY).then_some(m.certainty),
            product: f.has(Fields::PRODUCT).then_some(m.product),
            cancels: f.has(Fields::CANCELS).then_some(&m.cancels[..]),
            outcomes: c
                .outcomes
                .iter()
                .filter_map(|&(i, f)| m.outcomes.get(i).map(|o| OutcomeDelta::of(o, f)))
                .collect(),
        }
    }
}

impl MatchState {
    /// Render a [`Change`] against the current state.
    pub fn delta(&self, event: &'static str, change: &Change) -> Delta<'_> {
        Delta {
            event,
            timestamp: self.updated_at,
            summary: change.summary.then(|| self.summary_view()),
            markets: change
                .markets
                .iter()
                .filter_map(|(k, c)| {
                    let m = self.markets.get(k)?;
                    Some(if c.new {
                        MarketDelta::Whole(m.view())
                    } else {
                        MarketDelta::Part(MarketPart::of(m, c))
                    })
                })
                .collect(),
        }
    }
}

pub mod json;
#[cfg(test)]
mod tests;
