//! The producer table: who produces odds on the feed, under what name the
//! provider's API knows it, and how far back a recovery may reach.
//!
//! Built in from the provider's `/v1/descriptions/producers.xml` (the
//! sample in `tests/data/uof/rest/producers_conn.xml`), or read from a file
//! of that shape (`--producers-file`). `--producers 1,3` then selects the
//! ones a deployment uses. Sans-IO: [`Table::parse`] takes the text.

use std::time::Duration;

use quick_xml::events::Event;

/// Producer ids must fit the bit sets a match keeps of them.
pub const MAX_PRODUCER_ID: u32 = 63;

/// One producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Producer {
    pub id: u32,
    /// The name in API paths (`/v1/{name}/recovery/...`): `LO`, `Ctrl`.
    pub name: String,
    pub description: String,
    /// `live`, `prematch`, `virtual`, or several joined by `|`.
    pub scope: String,
    /// How far back a recovery's `after` may reach.
    pub recovery_window: Duration,
}

/// Why a table or a selection was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("producers file is not XML: {0}")]
    Xml(String),
    #[error("producer element without a valid `{attribute}`")]
    Attribute { attribute: &'static str },
    #[error("producer id {0} is above {MAX_PRODUCER_ID}")]
    IdTooLarge(u32),
    #[error("producer {0} is listed twice")]
    Duplicate(u32),
    #[error("no producer {0} in the producer table")]
    Unknown(u32),
    #[error("no producers selected")]
    Empty,
}

/// Producers by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    producers: Vec<Producer>,
}

/// The provider's producers (`producers_conn.xml` in the samples): id,
/// name, description, scope, recovery window in minutes.
const BUILT_IN: &[(u32, &str, &str, &str, u64)] = &[
    (1, "LO", "Live Odds", "live", 600),
    (3, "Ctrl", "Betradar Ctrl", "prematch", 4320),
    (4, "BetPal", "BetPal", "live", 4320),
    (5, "PremiumCricket", "Premium Cricket", "live|prematch", 4320),
    (6, "VF", "Virtual football", "virtual", 180),
    (7, "WNS", "Numbers Betting", "prematch", 4320),
    (8, "VBL", "Virtual Basketball League", "virtual", 180),
    (9, "VTO", "Virtual Tennis Open", "virtual", 180),
    (10, "VDR", "Virtual Dog Racing", "virtual", 180),
    (11, "VHC", "Virtual Horse Classics", "virtual", 180),
    (12, "VTI", "Virtual Tennis In-Play", "virtual", 180),
    (14, "C-Odds", "Competition Odds", "live", 4320),
    (15, "VBI", "Virtual Baseball In-Play", "virtual", 180),
    (16, "PB", "Performance betting", "live|prematch", 4320),
    (17, "VCI", "Virtual Cricket In-Play", "virtual", 180),
];

impl Default for Table {
    fn default() -> Table {
        Table {
            producers: BUILT_IN
                .iter()
                .map(|&(id, name, description, scope, minutes)| Producer {
                    id,
                    name: name.to_owned(),
                    description: description.to_owned(),
                    scope: scope.to_owned(),
                    recovery_window: Duration::from_secs(minutes * 60),
                })
                .collect(),
        }
    }
}

impl Table {
    /// A table from the text of a `producers.xml` response.
    pub fn parse(xml: &str) -> Result<Table, TableError> {
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut producers: Vec<Producer> = Vec::new();
        loop {
            match reader.read_event().map_err(|e| TableError::Xml(e.to_string()))? {
                Event::Eof => break,
                Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"producer" => {
                    let mut p = Producer {
                        id: 0,
                        name: String::new(),
                        description: String::new(),
                        scope: String::new(),
                        recovery_window: Duration::ZERO,
                    };
                    let mut minutes = None;
                    for a in e.attributes() {
                        let a = a.map_err(|e| TableError::Xml(e.to_string()))?;
                        let v = a
                            .unescape_value()
                            .map_err(|e| TableError::Xml(e.to_string()))?
                            .into_owned();
                        match a.key.as_ref() {
                            b"id" => p.id = v.parse().map_err(|_| TableError::Attribute { attribute: "id" })?,
                            b"name" => p.name = v,
                            b"description" => p.description = v,
                            b"scope" => p.scope = v,
                            b"stateful_recovery_window_in_minutes" => {
                                minutes = Some(v.parse::<u64>().map_err(|_| TableError::Attribute {
                                    attribute: "stateful_recovery_window_in_minutes",
                                })?)
                            }
                            _ => {}
                        }
                    }
                    if p.id == 0 {
                        return Err(TableError::Attribute { attribute: "id" });
                    }
                    if p.name.is_empty() {
                        return Err(TableError::Attribute { attribute: "name" });
                    }
                    if p.id > MAX_PRODUCER_ID {
                        return Err(TableError::IdTooLarge(p.id));
                    }
                    if producers.iter().any(|q| q.id == p.id) {
                        return Err(TableError::Duplicate(p.id));
                    }
                    // The API's default window (3 h) when a file omits it.
                    p.recovery_window = Duration::from_secs(minutes.unwrap_or(180) * 60);
                    producers.push(p);
                }
                _ => {}
            }
        }
        Ok(Table { producers })
    }

    pub fn get(&self, id: u32) -> Option<&Producer> {
        self.producers.iter().find(|p| p.id == id)
    }

    /// The producers a deployment uses, in the order given.
    pub fn select(&self, ids: &[u32]) -> Result<Vec<Producer>, TableError> {
        if ids.is_empty() {
            return Err(TableError::Empty);
        }
        let mut out: Vec<Producer> = Vec::with_capacity(ids.len());
        for &id in ids {
            let p = self.get(id).ok_or(TableError::Unknown(id))?;
            if out.iter().any(|q| q.id == id) {
                return Err(TableError::Duplicate(id));
            }
            out.push(p.clone());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> String {
        let path = format!("{}/../tests/data/uof/rest/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn the_built_in_table_is_the_providers() {
        let parsed = Table::parse(&sample("producers_conn.xml")).expect("the sample parses");
        assert_eq!(parsed, Table::default());
        let lo = parsed.get(1).expect("LO");
        assert_eq!((lo.name.as_str(), lo.scope.as_str()), ("LO", "live"));
        assert_eq!(lo.recovery_window, Duration::from_secs(600 * 60));
        assert_eq!(parsed.get(3).expect("Ctrl").name, "Ctrl");
    }

    #[test]
    fn the_older_sample_without_scope_parses_too() {
        let t = Table::parse(&sample("producers.xml")).expect("parses");
        assert_eq!(
            t.get(5).expect("cricket").recovery_window,
            Duration::from_secs(180 * 60)
        );
        assert_eq!(t.get(5).expect("cricket").scope, "");
    }

    #[test]
    fn selection_and_its_errors() {
        let t = Table::default();
        let picked = t.select(&[3, 1]).expect("known ids");
        assert_eq!(picked.iter().map(|p| p.id).collect::<Vec<_>>(), vec![3, 1]);
        assert_eq!(t.select(&[1, 2]), Err(TableError::Unknown(2)));
        assert_eq!(t.select(&[1, 1]), Err(TableError::Duplicate(1)));
        assert_eq!(t.select(&[]), Err(TableError::Empty));
    }

    #[test]
    fn broken_files_are_refused_with_the_reason() {
        let bad = |xml: &str| Table::parse(xml).expect_err(xml);
        assert_eq!(
            bad(r#"<producers><producer name="X"/></producers>"#),
            TableError::Attribute { attribute: "id" }
        );
        assert_eq!(
            bad(r#"<producers><producer id="2"/></producers>"#),
            TableError::Attribute { attribute: "name" }
        );
        assert_eq!(
            bad(r#"<producers><producer id="64" name="X"/></producers>"#),
            TableError::IdTooLarge(64)
        );
        assert_eq!(
            bad(r#"<producers><producer id="2" name="X"/><producer id="2" name="Y"/></producers>"#),
            TableError::Duplicate(2)
        );
        assert!(matches!(
            bad("<producers><producer id=\"2\" name=\"X\" </producers>"),
            TableError::Xml(_)
        ));
    }
}
