//! Market descriptions: the provider's `/v1/descriptions/en/markets.xml`
//! (`<market_descriptions>`), its variant list
//! (`/v1/descriptions/en/variants.xml`, `<variant_descriptions>`) and
//! single-variant answers (`<market id=".." variant="..">`), parsed into one
//! [`Descriptions`] table.
//!
//! Per market: its name template, its `groups` (what a `bet_stop
//! groups=".."` refers to), its outcomes (id → name template), its
//! specifiers and whether its outcome names are flex scores. Variant
//! markets (specifier `variant=sr:exact_games:bestof:5`) take their
//! outcomes from the variant's description. Owns parsing and lookups only:
//! never fetches, never renders (that is [`super::render`]).

use std::collections::{BTreeMap, HashMap};

use super::xml::{Attrs, DataError, Step, Walker};

/// One outcome of a market or variant: its id in the feed and the template
/// its name is rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub id: String,
    pub name: String,
}

/// A specifier a market carries in the feed (`hcp`, `total`, `variant`...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Specifier {
    pub name: String,
    /// `decimal`, `integer`, `string`, `variable_text`...
    pub kind: String,
}

/// One market's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Market {
    pub id: u32,
    /// Name template, e.g. `{!goalnr} goal`.
    pub name: String,
    /// The groups it belongs to (`all`, `score`, `corners`...), as listed.
    pub groups: Vec<String>,
    /// Empty for variant markets and player markets: their outcomes come
    /// from the variant description or are profiles (`sr:player:..`).
    pub outcomes: Vec<Outcome>,
    pub specifiers: Vec<Specifier>,
    /// `includes_outcomes_of_type` (or `outcome_type`): `sr:player`,
    /// `sr:competitor`... when outcome ids are profiles.
    pub outcome_type: Option<String>,
    /// The `is_flex_score` attribute: outcome names are scores to add to
    /// the `score` specifier.
    pub flex_score: bool,
}

/// The outcomes a variant gives a market.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// `sr:exact_games:bestof:5`.
    pub id: String,
    /// The market name template of a single-variant answer (`<market
    /// variant="..">`); the shared variant list has none.
    pub market_name: Option<String>,
    pub outcomes: Vec<Outcome>,
}

impl Variant {
    pub fn outcome(&self, id: &str) -> Option<&Outcome> {
        self.outcomes.iter().find(|o| o.id == id)
    }
}

impl Market {
    pub fn outcome(&self, id: &str) -> Option<&Outcome> {
        self.outcomes.iter().find(|o| o.id == id)
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// Every description known: markets by id, variants by id and by market.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptions {
    /// In id order, so group queries answer in a stable order.
    markets: BTreeMap<u32, Market>,
    /// The shared variant list, by variant id.
    variants: HashMap<String, Variant>,
    /// Single-variant answers, by market and variant id: more specific
    /// than the shared list.
    market_variants: HashMap<u32, HashMap<String, Variant>>,
}

impl Descriptions {
    /// One response: `<market_descriptions>` (markets, possibly with
    /// single-variant entries) or `<variant_descriptions>`.
    pub fn parse(xml: &str) -> Result<Descriptions, DataError> {
        let mut out = Descriptions::default();
        let mut w = Walker::new(xml);
        let mut root_seen = false;
        // The market or variant being read, and its outcomes so far.
        let mut entry: Option<Entry> = None;
        while let Some(step) = w.next()? {
            let Step::Open(attrs) = step else {
                if w.path().len() == 2
                    && let Some(e) = entry.take()
                {
                    out.insert(e);
                }
                continue;
            };
            if !root_seen {
                root_seen = true;
                let root = w.path()[0].as_str();
                if root != "market_descriptions" && root != "variant_descriptions" {
                    return Err(DataError::WrongRoot {
                        expected: "market_descriptions or variant_descriptions",
                        found: root.to_owned(),
                    });
                }
                continue;
            }
            if w.at(&["market"]) {
                entry = Some(Entry::market(&attrs)?);
            } else if w.at(&["variant"]) {
                entry = Some(Entry::Variant(Variant {
                    id: attrs.required("variant", "id")?.to_owned(),
                    market_name: None,
                    outcomes: Vec::new(),
                }));
            } else if let Some(e) = entry.as_mut() {
                e.child(&w, &attrs)?;
            }
        }
        if !root_seen {
            return Err(DataError::Empty);
        }
        Ok(out)
    }

    /// Several responses merged in order (markets, variants...).
    pub fn parse_all<'a>(docs: impl IntoIterator<Item = &'a str>) -> Result<Descriptions, DataError> {
        let mut out = Descriptions::default();
        for doc in docs {
            out.merge(Descriptions::parse(doc)?);
        }
        Ok(out)
    }

    /// Adds `other`; an entry of `other` replaces one of the same key
    /// (market id, variant id, market id and variant) whole.
    pub fn merge(&mut self, other: Descriptions) {
        self.markets.extend(other.markets);
        self.variants.extend(other.variants);
        for (market_id, variants) in other.market_variants {
            self.market_variants.entry(market_id).or_default().extend(variants);
        }
    }

    pub fn market(&self, id: u32) -> Option<&Market> {
        self.markets.get(&id)
    }

    /// The description of `variant` for market `market_id`: its
    /// single-variant answer if there is one, else the shared list's.
    pub fn variant(&self, market_id: u32, variant: &str) -> Option<&Variant> {
        self.market_variants
            .get(&market_id)
            .and_then(|vs| vs.get(variant))
            .or_else(|| self.variants.get(variant))
    }

    /// The groups of a market, `None` for a market not described.
    pub fn groups_of(&self, market_id: u32) -> Option<&[String]> {
        self.markets.get(&market_id).map(|m| m.groups.as_slice())
    }

    /// Markets in any of `groups` (as a `bet_stop`'s `groups="a|b"` lists
    /// them), in id order.
    pub fn markets_in_groups<'a>(&'a self, groups: &'a [&'a str]) -> impl Iterator<Item = u32> + 'a {
        self.markets
            .values()
            .filter(|m| groups.iter().any(|g| m.in_group(g)))
            .map(|m| m.id)
    }

    /// Market ids described, in order.
    pub fn market_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.markets.keys().copied()
    }

    /// Markets described (variants aside).
    pub fn len(&self) -> usize {
        self.markets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.markets.is_empty() && self.variants.is_empty() && self.market_variants.is_empty()
    }

    /// Variant descriptions known (shared list and single-variant answers).
    pub fn variant_count(&self) -> usize {
        self.variants.len() + self.market_variants.values().map(HashMap::len).sum::<usize>()
    }

    fn insert(&mut self, entry: Entry) {
        match entry {
            Entry::Market(m) => {
                self.markets.insert(m.id, m);
            }
            Entry::MarketVariant(market_id, v) => {
                self.market_variants
                    .entry(market_id)
                    .or_default()
                    .insert(v.id.clone(), v);
            }
            Entry::Variant(v) => {
                self.variants.insert(v.id.clone(), v);
            }
        }
    }
}

/// A description being read.
enum Entry {
    Market(Market),
    /// `<market id variant>`: a single-variant answer.
    MarketVariant(u32, Variant),
    Variant(Variant),
}

impl Entry {
    fn market(attrs: &Attrs) -> Result<Entry, DataError> {
        let id = attrs.required("market", "id")?;
        let id = id.trim().parse::<u32>().map_err(|_| DataError::BadValue {
            element: "market",
            attr: "id",
            value: id.to_owned(),
        })?;
        let name = attrs.required("market", "name")?.to_owned();
        if let Some(variant) = attrs.text("variant") {
            return Ok(Entry::MarketVariant(
                id,
                Variant {
                    id: variant,
                    market_name: Some(name),
                    outcomes: Vec::new(),
                },
            ));
        }
        Ok(Entry::Market(Market {
            id,
            name,
            groups: attrs
                .get("groups")
                .unwrap_or_default()
                .split('|')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect(),
            outcomes: Vec::new(),
            specifiers: Vec::new(),
            outcome_type: attrs
                .text("includes_outcomes_of_type")
                .or_else(|| attrs.text("outcome_type")),
            flex_score: false,
        }))
    }

    /// An element inside the entry: outcomes, specifiers and attributes
    /// are read; mappings and anything unknown are skipped.
    fn child(&mut self, w: &Walker<'_>, attrs: &Attrs) -> Result<(), DataError> {
        let entry = match self {
            Entry::Variant(_) => "variant",
            Entry::Market(_) | Entry::MarketVariant(..) => "market",
        };
        let at = |list: &str, item: &str| w.at(&[entry, list, item]);
        if at("outcomes", "outcome") {
            let outcome = Outcome {
                id: attrs.required("outcome", "id")?.to_owned(),
                name: attrs.required("outcome", "name")?.to_owned(),
            };
            match self {
                Entry::Market(m) => m.outcomes.push(outcome),
                Entry::MarketVariant(_, v) | Entry::Variant(v) => v.outcomes.push(outcome),
            }
        } else if let Entry::Market(m) = self {
            if at("specifiers", "specifier") {
                m.specifiers.push(Specifier {
                    name: attrs.required("specifier", "name")?.to_owned(),
                    kind: attrs.text("type").unwrap_or_else(|| "string".to_owned()),
                });
            } else if at("attributes", "attribute") && attrs.get("name") == Some("is_flex_score") {
                m.flex_score = true;
            }
        }
        Ok(())
    }
}
