//! Names for a match's subscribers: the event's (competitors, tournament,
//! sport, scheduled start, from its fixture) and each market's and
//! outcome's (rendered from the market descriptions), sent beside the ids,
//! never instead of them.
//!
//! - A snapshot carries `names` for the whole state: the event's and every
//!   market's with its outcomes'.
//! - An update carries `names` only for the markets and outcomes the match
//!   has not named before (those an odds_change brings first): a client
//!   that took a snapshot and follows the updates knows every name, and an
//!   update of known markets is not a byte larger. After a hibernation or
//!   a restart the first odds_change names its markets again (the set of
//!   names sent is not kept).
//! - The fixture is asked for on the match's first event and never waited
//!   for ([`crate::reference::Fixtures`]); when it arrives, subscribers get
//!   one `names` frame with the whole set, and later snapshots carry it.
//!
//! Without descriptions market names are left out (the ids say as much);
//! without a fixture the event's names are left out; with neither there
//! is no `names` field at all.

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{oneshot, watch};
use touchline_guest::event::MatchEvent;

use super::Worker;
use super::frame::FrameKind;
use crate::names::{Competitors, Descriptions, Fixture, NoProfiles, Profiles, Renderer};
use crate::reference::Fixtures;

/// Where a worker's names come from.
#[derive(Debug, Clone)]
pub struct NameSource {
    pub descriptions: watch::Receiver<Arc<Descriptions>>,
    pub fixtures: Fixtures,
}

/// A worker's names: its fixture and what it has named.
#[derive(Debug, Default)]
pub(super) struct Naming {
    fixture: Option<Arc<Fixture>>,
    /// The fixture asked for and not yet had.
    pub(super) waiting: Option<oneshot::Receiver<Arc<Fixture>>>,
    asked: bool,
    /// Hashes of the markets and outcomes named in frames so far.
    named: HashSet<u64>,
    /// The names of the update being applied, and what they name (counted
    /// as named only once the update is committed).
    pending: Option<(Box<RawValue>, Vec<u64>)>,
}

impl Naming {
    /// The names for the update being committed, if it has any.
    pub(super) fn take_pending(&mut self) -> Option<Box<RawValue>> {
        let (json, hashes) = self.pending.take()?;
        self.named.extend(hashes);
        Some(json)
    }

    pub(super) fn forget_pending(&mut self) {
        self.pending = None;
    }

    /// What a hibernated match need not keep.
    pub(super) fn forget_named(&mut self) {
        self.named = HashSet::new();
    }
}

/// The `names` of a frame; absent parts are left out.
#[derive(Debug, Default, Serialize)]
struct NamesView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    home: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    away: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tournament: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sport: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduled: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    markets: Vec<MarketNames>,
}

#[derive(Debug, Serialize)]
struct MarketNames {
    id: u32,
    specifiers: String,
    name: String,
    /// Outcome id → name.
    outcomes: BTreeMap<String, String>,
}

/// The ids of a snapshot state's markets (the rest of the JSON is skipped).
#[derive(Deserialize)]
struct StateIds {
    #[serde(default)]
    markets: Vec<MarketIds>,
}

#[derive(Deserialize)]
struct MarketIds {
    id: u32,
    specifiers: String,
    outcomes: Vec<OutcomeId>,
}

#[derive(Deserialize)]
struct OutcomeId {
    id: String,
}

fn hash_of(parts: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

fn to_raw(view: &NamesView<'_>) -> Box<RawValue> {
    serde_json::value::to_raw_value(view).expect("names are strings and numbers")
}

impl Worker {
    fn source(&self) -> Option<&NameSource> {
        self.env.names.as_ref()
    }

    /// Ask for the fixture once (again after a refused ask).
    pub(super) fn ask_fixture(&mut self) {
        if self.naming.asked || self.naming.fixture.is_some() {
            return;
        }
        let Some(source) = self.source() else { return };
        let waiting = source.fixtures.want(&self.id);
        self.naming.asked = waiting.is_some();
        self.naming.waiting = waiting;
    }

    /// The fixture arrived (`None`: the ask was refused or the fetcher
    /// stopped; asked again on a later event).
    pub(super) fn on_fixture(&mut self, fixture: Option<Arc<Fixture>>) {
        self.naming.waiting = None;
        let Some(fixture) = fixture else {
            self.naming.asked = false;
            return;
        };
        self.naming.fixture = Some(fixture);
        self.snapshot_cache = None;
        if self.updates.subscribers() > 0 {
            // Their names are rendered from the state (`nap`).
            self.wake_from_nap();
            let names = self.state_names(None);
            if let Some(names) = names {
                let mut envelope = self.envelope(FrameKind::Names);
                envelope.names = Some(&names);
                let frame = envelope.render();
                let _ = self.updates.send(frame);
            }
        }
    }

    /// Names the coming update will carry: the markets and outcomes of an
    /// odds_change not named before.
    pub(super) fn prepare_names(&mut self, event: &MatchEvent) {
        self.naming.pending = None;
        let (Some(source), MatchEvent::OddsChange(e)) = (self.source(), event) else {
            return;
        };
        let descriptions = source.descriptions.borrow().clone();
        if descriptions.is_empty() {
            return;
        }
        let competitors = self.competitors();
        let profiles: &dyn Profiles = match &self.naming.fixture {
            Some(f) => &**f,
            None => &NoProfiles,
        };
        let renderer = Renderer::new(&descriptions, &competitors, profiles);
        let mut hashes = Vec::new();
        let mut markets = Vec::new();
        for m in &e.markets {
            let key = hash_of((m.id, &m.specifiers));
            let new_market = !self.naming.named.contains(&key);
            let mut outcomes = BTreeMap::new();
            for o in &m.outcomes {
                let h = hash_of((m.id, &m.specifiers, &o.id));
                if new_market || !self.naming.named.contains(&h) {
                    outcomes.insert(
                        o.id.as_str().to_owned(),
                        renderer.outcome_name(m.id, &m.specifiers, &o.id),
                    );
                    hashes.push(h);
                }
            }
            if new_market || !outcomes.is_empty() {
                hashes.push(key);
                markets.push(MarketNames {
                    id: m.id,
                    specifiers: m.specifiers.as_str().to_owned(),
                    name: renderer.market_name(m.id, &m.specifiers),
                    outcomes,
                });
            }
        }
        if markets.is_empty() {
            return;
        }
        let view = NamesView {
            markets,
            ..NamesView::default()
        };
        self.naming.pending = Some((to_raw(&view), hashes));
    }

    /// What the names of a snapshot depend on besides the state: the
    /// descriptions in force and whether the fixture is in.
    pub(super) fn names_generation(&self) -> (usize, bool) {
        let descriptions = self
            .source()
            .map_or(0, |s| Arc::as_ptr(&s.descriptions.borrow()) as usize);
        (descriptions, self.naming.fixture.is_some())
    }

    /// The whole set of names for a state (`state`: the guest's snapshot
    /// JSON, rendered if `None`); `None` when there is nothing to name.
    pub(super) fn state_names(&mut self, state: Option<&RawValue>) -> Option<Box<RawValue>> {
        let source = self.source()?;
        let descriptions = source.descriptions.borrow().clone();
        let fixture = self.naming.fixture.clone();
        if descriptions.is_empty() && fixture.is_none() {
            return None;
        }
        let rendered;
        let state = match state {
            Some(s) => s,
            None => {
                rendered = self.life.reader().and_then(|i| i.snapshot_json().ok())?;
                &*rendered
            }
        };
        let ids: StateIds = serde_json::from_str(state.get()).unwrap_or(StateIds { markets: Vec::new() });
        let competitors = self.competitors();
        let profiles: &dyn Profiles = match &fixture {
            Some(f) => &**f,
            None => &NoProfiles,
        };
        let renderer = Renderer::new(&descriptions, &competitors, profiles);
        let mut view = NamesView::default();
        if let Some(f) = &fixture {
            view.event = Some(competitors.event.clone()).filter(|e| !e.is_empty());
            view.home = f.home().map(|c| c.name.as_str());
            view.away = f.away().map(|c| c.name.as_str());
            view.tournament = f.tournament.as_deref();
            view.sport = f.sport.as_deref();
            view.scheduled = f.scheduled_ms;
        }
        if !descriptions.is_empty() {
            for m in ids.markets {
                let outcomes = m
                    .outcomes
                    .iter()
                    .map(|o| (o.id.clone(), renderer.outcome_name(m.id, &m.specifiers, &o.id)))
                    .collect();
                self.naming.named.insert(hash_of((m.id, &m.specifiers)));
                for o in &m.outcomes {
                    self.naming.named.insert(hash_of((m.id, &m.specifiers, &o.id)));
                }
                view.markets.push(MarketNames {
                    name: renderer.market_name(m.id, &m.specifiers),
                    id: m.id,
                    specifiers: m.specifiers,
                    outcomes,
                });
            }
        }
        Some(to_raw(&view))
    }

    fn competitors(&self) -> Competitors {
        self.naming
            .fixture
            .as_ref()
            .map(|f| f.competitors())
            .unwrap_or_default()
    }
}

/// The fixture, when it comes (a select branch; pending while none is
/// asked for).
pub(super) async fn arrival(waiting: &mut Option<oneshot::Receiver<Arc<Fixture>>>) -> Option<Arc<Fixture>> {
    match waiting {
        Some(rx) => rx.await.ok(),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
