//! What the simulated provider's API says about markets and matches: the
//! market descriptions (`/v1/descriptions/en/markets.xml`, in the shape of
//! the provider's, with name templates, specifiers and the `groups` a
//! `bet_stop` names) and variant descriptions (`variants.xml`) for every
//! market the simulator emits, and one fixture per match
//! (`/v1/sports/en/sport_events/{id}/fixture.xml`: teams, tournament,
//! sport, kick-off), made up deterministically from the match id. Pure:
//! the API serves these strings; [`FixtureMode`] lets tests make the
//! fixture endpoint slow or down.

use std::fmt::Write as _;
use std::time::Duration;

use super::game::PREMATCH_MARKETS;

/// A market's outcomes: (id, name template).
type Outcomes = &'static [(&'static str, &'static str)];

/// One invariant market: id, name template, groups, specifier (name,
/// type), outcomes (none: a variant market).
type Description = (
    u32,
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
    Outcomes,
);

/// The invariant markets the simulator prices.
const MARKETS: &[Description] = &[
    (
        1,
        "1x2",
        "all|score|regular_play",
        None,
        &[("1", "{$competitor1}"), ("2", "draw"), ("3", "{$competitor2}")],
    ),
    (
        8,
        "{!goalnr} goal",
        "all|score|regular_play",
        Some(("goalnr", "integer")),
        &[("6", "{$competitor1}"), ("7", "none"), ("8", "{$competitor2}")],
    ),
    (
        10,
        "Double chance",
        "all|score|regular_play",
        None,
        &[
            ("9", "{$competitor1} or draw"),
            ("10", "{$competitor1} or {$competitor2}"),
            ("11", "draw or {$competitor2}"),
        ],
    ),
    (
        11,
        "Draw no bet",
        "all|score|regular_play",
        None,
        &[("4", "{$competitor1}"), ("5", "{$competitor2}")],
    ),
    (
        15,
        "Winning margin",
        "all|score|regular_play",
        Some(("variant", "variable_text")),
        &[],
    ),
    (
        16,
        "Handicap",
        "all|score|regular_play",
        Some(("hcp", "decimal")),
        &[("1714", "{$competitor1} ({+hcp})"), ("1715", "{$competitor2} ({-hcp})")],
    ),
    (
        18,
        "Total",
        "all|score|regular_play",
        Some(("total", "decimal")),
        &[("12", "over {total}"), ("13", "under {total}")],
    ),
    (
        19,
        "{$competitor1} total",
        "all|score|regular_play",
        Some(("total", "decimal")),
        &[("12", "over {total}"), ("13", "under {total}")],
    ),
    (
        20,
        "{$competitor2} total",
        "all|score|regular_play",
        Some(("total", "decimal")),
        &[("12", "over {total}"), ("13", "under {total}")],
    ),
    (
        21,
        "Exact goals",
        "all|score|regular_play",
        Some(("variant", "variable_text")),
        &[],
    ),
    (
        26,
        "Total - odd/even",
        "all|score|regular_play",
        None,
        &[("70", "odd"), ("72", "even")],
    ),
    (
        29,
        "Both teams to score",
        "all|score|regular_play",
        None,
        &[("74", "yes"), ("76", "no")],
    ),
    (
        60,
        "1st half - 1x2",
        "all|score|1st_half",
        None,
        &[("1", "{$competitor1}"), ("2", "draw"), ("3", "{$competitor2}")],
    ),
    (
        68,
        "1st half - total",
        "all|score|1st_half",
        Some(("total", "decimal")),
        &[("12", "over {total}"), ("13", "under {total}")],
    ),
    (
        166,
        "Total corners",
        "all|regular_play|corners",
        Some(("total", "decimal")),
        &[("12", "over {total}"), ("13", "under {total}")],
    ),
    // Described (as the provider describes more than a match offers), not
    // priced: the `bookings` group has a member.
    (
        139,
        "Total bookings",
        "all|regular_play|bookings",
        Some(("total", "decimal")),
        &[("12", "over {total}"), ("13", "under {total}")],
    ),
];

/// The variants of the variant markets: variant value, outcomes.
const VARIANTS: &[(&str, Outcomes)] = &[
    (
        "sr:exact_goals:6+",
        &[
            ("1336", "0"),
            ("1337", "1"),
            ("1338", "2"),
            ("1339", "3"),
            ("1340", "4"),
            ("1341", "5"),
            ("1342", "6+"),
        ],
    ),
    (
        "sr:winning_margin:3+",
        &[
            ("1350", "{$competitor1} by 3+"),
            ("1351", "{$competitor1} by 2"),
            ("1352", "{$competitor1} by 1"),
            ("1353", "draw"),
            ("1354", "{$competitor2} by 1"),
            ("1355", "{$competitor2} by 2"),
            ("1356", "{$competitor2} by 3+"),
        ],
    ),
];

/// Variants of Ctrl's player markets (`variant=sr:player_props:K`).
const PLAYER_VARIANTS: u32 = 17;
const PLAYERS: [&str; 12] = [
    "A. Moreno",
    "B. Okafor",
    "C. Lindqvist",
    "D. Santos",
    "E. Novak",
    "F. Haddad",
    "G. Silva",
    "H. Kowalski",
    "I. Mensah",
    "J. Petit",
    "K. Tanaka",
    "L. Duarte",
];
const TEAMS: [&str; 24] = [
    "Arsenal",
    "Chelsea",
    "Liverpool",
    "Everton",
    "Ajax",
    "PSV",
    "Feyenoord",
    "Benfica",
    "Porto",
    "Sporting",
    "Celtic",
    "Rangers",
    "Napoli",
    "Lazio",
    "Sevilla",
    "Valencia",
    "Lyon",
    "Marseille",
    "Basel",
    "Young Boys",
    "Rapid Wien",
    "Sturm Graz",
    "Malmö",
    "Brøndby",
];
const TOURNAMENTS: [(&str, &str); 4] = [
    ("sr:tournament:17", "Premier League"),
    ("sr:tournament:7", "UEFA Champions League"),
    ("sr:tournament:679", "UEFA Europa League"),
    ("sr:tournament:34", "Ligue 1"),
];

/// `/v1/descriptions/en/markets.xml`.
pub fn markets_xml() -> String {
    let mut x = String::from(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<market_descriptions response_code="OK">
"#,
    );
    for (id, name, groups, specifier, outcomes) in MARKETS {
        let _ = writeln!(x, r#"  <market id="{id}" name="{name}" groups="{groups}">"#);
        outcomes_xml(&mut x, outcomes);
        if let Some((s, kind)) = specifier {
            let _ = writeln!(
                x,
                r#"    <specifiers><specifier name="{s}" type="{kind}"/></specifiers>"#
            );
        }
        x.push_str("  </market>\n");
    }
    for k in 0..PREMATCH_MARKETS {
        let _ = writeln!(
            x,
            r#"  <market id="{}" name="Player special {}" groups="all|regular_play|scorers">
    <specifiers><specifier name="variant" type="variable_text"/></specifiers>
  </market>"#,
            500 + k,
            k + 1
        );
    }
    x.push_str("</market_descriptions>\n");
    x
}

/// `/v1/descriptions/en/variants.xml`.
pub fn variants_xml() -> String {
    let mut x = String::from(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<variant_descriptions response_code="OK">
"#,
    );
    for (variant, outcomes) in VARIANTS {
        let _ = writeln!(x, r#"  <variant id="{variant}">"#);
        outcomes_xml(&mut x, outcomes);
        x.push_str("  </variant>\n");
    }
    for k in 0..PLAYER_VARIANTS {
        let _ = writeln!(x, r#"  <variant id="sr:player_props:{k}">"#);
        x.push_str("    <outcomes>\n");
        for n in 1..=6u32 {
            let player = PLAYERS[((k + n) as usize) % PLAYERS.len()];
            let _ = writeln!(x, r#"      <outcome id="pre:{n}" name="{player}"/>"#);
        }
        x.push_str("    </outcomes>\n  </variant>\n");
    }
    x.push_str("</variant_descriptions>\n");
    x
}

fn outcomes_xml(x: &mut String, outcomes: &[(&str, &str)]) {
    if outcomes.is_empty() {
        return;
    }
    x.push_str("    <outcomes>\n");
    for (id, name) in outcomes {
        let _ = writeln!(x, r#"      <outcome id="{id}" name="{name}"/>"#);
    }
    x.push_str("    </outcomes>\n");
}

/// The fixture of `event_id` (`sr:match:N`), or `None` for other ids.
/// Teams and tournament follow from N, so every run names a match alike.
pub fn fixture_xml(event_id: &str) -> Option<String> {
    let n: u64 = event_id.strip_prefix("sr:match:")?.parse().ok()?;
    let home = (n % TEAMS.len() as u64) as usize;
    // Another team, never the same one.
    let away = (home + 1 + (n / TEAMS.len() as u64 % (TEAMS.len() as u64 - 1)) as usize) % TEAMS.len();
    let (tid, tournament) = TOURNAMENTS[(n / 7 % TOURNAMENTS.len() as u64) as usize];
    // Kick-off on the hour, a day from the 2027 epoch per thousand ids.
    let day = 15 + (n % 1000) / 100;
    let hour = 12 + n % 10;
    Some(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<fixtures_fixture generated_at="2027-01-15T08:00:00+00:00" xmlns="http://schemas.sportradar.com/sportsapi/v1/unified">
  <fixture id="{event_id}" scheduled="2027-01-{day:02}T{hour:02}:00:00+00:00" start_time="2027-01-{day:02}T{hour:02}:00:00+00:00" start_time_confirmed="true" liveodds="booked">
    <tournament id="{tid}" name="{tournament}">
      <sport id="sr:sport:1" name="Soccer"/>
      <category id="sr:category:1" name="International"/>
    </tournament>
    <competitors>
      <competitor id="sr:competitor:{}" name="{}" qualifier="home"/>
      <competitor id="sr:competitor:{}" name="{}" qualifier="away"/>
    </competitors>
  </fixture>
</fixtures_fixture>
"#,
        1000 + home,
        TEAMS[home],
        1000 + away,
        TEAMS[away]
    ))
}

/// How the fixture endpoint behaves (tests: a provider API that is slow
/// or down must not hold up a match's updates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FixtureMode {
    #[default]
    Up,
    /// Answers 503.
    Down,
    /// Answers after this long.
    Slow(#[serde(with = "millis")] Duration),
}

mod millis {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_cover_every_market_the_simulator_emits() {
        let markets = markets_xml();
        for (id, ..) in MARKETS {
            assert!(markets.contains(&format!(r#"<market id="{id}" "#)), "market {id}");
        }
        assert!(markets.contains(r#"<market id="669" name="Player special 170" groups="all|regular_play|scorers">"#));
        assert!(markets.contains(r#"groups="all|regular_play|corners""#));
        let variants = variants_xml();
        assert!(variants.contains(r#"<outcome id="1350" name="{$competitor1} by 3+"/>"#));
        assert!(variants.contains(r#"<variant id="sr:player_props:16">"#));
        // Both are XML.
        for text in [&markets, &variants] {
            let mut r = quick_xml::Reader::from_str(text);
            loop {
                match r.read_event() {
                    Ok(quick_xml::events::Event::Eof) => break,
                    Ok(_) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }

    #[test]
    fn a_fixture_names_two_different_teams_the_same_way_every_time() {
        for n in 40_100_000..40_100_200u64 {
            let id = format!("sr:match:{n}");
            let x = fixture_xml(&id).expect("a match id");
            assert_eq!(Some(x.clone()), fixture_xml(&id));
            let names: Vec<&str> = x
                .match_indices("name=\"")
                .map(|(i, _)| &x[i + 6..i + 6 + x[i + 6..].find('"').expect("closing quote")])
                .collect();
            // tournament, sport, category, home, away
            assert_eq!(names.len(), 5, "{x}");
            assert_ne!(names[3], names[4], "{id}: {x}");
        }
        assert_eq!(fixture_xml("sr:season:1"), None);
    }
}

#[cfg(test)]
mod names_tests {
    //! The simulator's descriptions name every market and outcome it emits
    //! (no fallback), read by the server's own parser and renderer.

    use super::*;
    use crate::feed::parse::{FeedMessage, parse};
    use crate::names::{Descriptions, Fixture, NoProfiles, Renderer};
    use crate::sim::{Generator, SimConfig};
    use touchline_guest::event::MatchEvent;

    #[test]
    fn every_market_and_outcome_emitted_has_a_name() {
        let d = Descriptions::parse_all([markets_xml().as_str(), variants_xml().as_str()]).expect("descriptions parse");
        let mut g = Generator::new(&SimConfig {
            matches: 20,
            seed: 3,
            rate: 100.0,
            count: 0,
        });
        let mut named = std::collections::BTreeSet::new();
        for _ in 0..20_000 {
            let Ok(FeedMessage::Match(MatchEvent::OddsChange(oc))) = parse(g.next_message().as_bytes()) else {
                continue;
            };
            let fixture = Fixture::parse(&fixture_xml(&oc.header.event_id).expect("a match")).expect("fixture parses");
            let competitors = fixture.competitors();
            let r = Renderer::new(&d, &competitors, &NoProfiles);
            for m in &oc.markets {
                let name = r.market_name(m.id, &m.specifiers);
                assert!(!name.starts_with("Market "), "market {} {}: {name}", m.id, m.specifiers);
                for o in &m.outcomes {
                    let outcome = r.outcome_name(m.id, &m.specifiers, &o.id);
                    assert_ne!(outcome, o.id, "market {} {} outcome {}", m.id, m.specifiers, o.id);
                }
                named.insert(m.id);
            }
        }
        assert!(named.len() > 30, "markets named: {named:?}");
        let competitors = Fixture::parse(&fixture_xml("sr:match:40100010").expect("a match"))
            .expect("fixture")
            .competitors();
        let r = Renderer::new(&d, &competitors, &NoProfiles);
        assert_eq!(r.market_name(15, "variant=sr:winning_margin:3+"), "Winning margin");
        assert_eq!(
            r.outcome_name(15, "variant=sr:winning_margin:3+", "1350"),
            format!("{} by 3+", competitors.home)
        );
        assert_eq!(
            r.outcome_name(16, "hcp=-1.5", "1715"),
            format!("{} (+1.5)", competitors.away)
        );
        assert_eq!(r.market_name(8, "goalnr=2"), "2nd goal");
    }
}
