//! What a `bet_stop`'s `groups="a|b"` stands for: the market ids whose
//! description lists one of those groups, resolved on intake from the
//! market descriptions in force and carried in the event (event format 3),
//! so a journal replays the same stop whatever the descriptions are later.
//!
//! `all` needs no resolving (the guest stops every active market); with no
//! descriptions at all the event goes unresolved and the guest's built-in
//! table decides. A market the descriptions do not describe is stopped
//! only by `all`.

use touchline_guest::event::BetStop;

use crate::names::Descriptions;

/// Fill `stop.markets` from `descriptions`.
pub fn resolve(stop: &mut BetStop, descriptions: &Descriptions) {
    if descriptions.is_empty() || stop.groups.iter().any(|g| g == "all") {
        return;
    }
    let groups: Vec<&str> = stop.groups.iter().map(String::as_str).collect();
    stop.markets = Some(descriptions.markets_in_groups(&groups).collect());
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use touchline_guest::event::{Header, MarketOdds, MatchEvent, OddsChange, OutcomeOdds};
    use touchline_guest::model::{MatchState, status};

    use super::*;

    fn header() -> Header {
        Header {
            product: Some(1),
            event_id: "sr:match:1".into(),
            timestamp: 1,
            request_id: None,
        }
    }

    fn real() -> Descriptions {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data");
        let texts = [
            "uof/rest/invariant_market_descriptions.en.xml",
            "uof-minus5/rest/markets-0.xml",
            "uof-minus5/rest/markets-1.xml",
        ]
        .map(|p| std::fs::read_to_string(format!("{dir}/{p}")).expect("sample"));
        Descriptions::parse_all(texts.iter().map(String::as_str)).expect("samples parse")
    }

    fn simulated() -> Descriptions {
        Descriptions::parse(&crate::sim::reference::markets_xml()).expect("the simulator's descriptions parse")
    }

    /// Every described market active in one match, except every third one
    /// (deactivated); then a bet_stop per group: exactly the active markets
    /// of that group are suspended.
    fn check(d: &Descriptions) -> usize {
        let mut groups: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        for id in d.market_ids() {
            for g in d.groups_of(id).unwrap_or_default() {
                groups.entry(g.clone()).or_default().insert(id);
            }
        }
        let ids: Vec<u32> = d.market_ids().collect();
        let inactive = |id: u32| id.is_multiple_of(3);
        let book = MatchEvent::OddsChange(OddsChange {
            header: header(),
            sport_event_status: None,
            betting_status: None,
            markets: ids
                .iter()
                .map(|&id| MarketOdds {
                    id,
                    specifiers: "".into(),
                    status: if inactive(id) {
                        status::DEACTIVATED
                    } else {
                        status::ACTIVE
                    },
                    favourite: false,
                    outcomes: vec![OutcomeOdds {
                        id: "1".into(),
                        odds: Some(2.0),
                        active: true,
                    }],
                })
                .collect(),
        });
        for (group, members) in &groups {
            let mut state = MatchState::new("sr:match:1");
            state.apply(&book);
            let mut stop = BetStop {
                header: header(),
                groups: vec![group.clone()],
                market_status: status::SUSPENDED,
                markets: None,
            };
            resolve(&mut stop, d);
            state.apply(&MatchEvent::BetStop(stop));
            for &id in &ids {
                let want = match (members.contains(&id), inactive(id)) {
                    (_, true) => status::DEACTIVATED,
                    (true, false) => status::SUSPENDED,
                    (false, false) => status::ACTIVE,
                };
                let got = state.market(id, "").map(|m| m.status);
                assert_eq!(got, Some(want), "market {id}, bet_stop groups=\"{group}\"");
            }
        }
        groups.len()
    }

    #[test]
    fn each_real_group_stops_exactly_its_active_markets() {
        let groups = check(&real());
        assert!(groups >= 6, "the samples name {groups} groups");
    }

    #[test]
    fn each_simulated_group_stops_exactly_its_active_markets() {
        let d = simulated();
        for g in ["all", "score", "regular_play", "1st_half", "corners", "bookings"] {
            assert!(
                d.markets_in_groups(&[g]).next().is_some(),
                "the simulator describes no `{g}` market"
            );
        }
        check(&d);
    }

    #[test]
    fn all_and_no_descriptions_are_left_to_the_guest() {
        let mut stop = BetStop {
            header: header(),
            groups: vec!["all".into()],
            market_status: -1,
            markets: None,
        };
        resolve(&mut stop, &simulated());
        assert_eq!(stop.markets, None);
        stop.groups = vec!["corners".into()];
        resolve(&mut stop, &Descriptions::default());
        assert_eq!(stop.markets, None);
        resolve(&mut stop, &simulated());
        assert!(
            stop.markets
                .as_ref()
                .is_some_and(|m| m.contains(&166) && !m.contains(&1))
        );
    }
}
