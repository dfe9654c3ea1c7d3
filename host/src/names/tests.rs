//! Table tests for descriptions, names and fixtures, built from the
//! provider's real REST responses in `tests/data/` (uof: the SDK's
//! invariant and variant descriptions, all groups `all`; uof-minus5: market
//! descriptions with the real groups, and fixtures).

use std::collections::HashMap;
use std::sync::OnceLock;

use super::*;

fn sample(path: &str) -> String {
    let path = format!("{}/../tests/data/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The uof set: invariant markets and the shared variant list.
fn uof() -> &'static Descriptions {
    static D: OnceLock<Descriptions> = OnceLock::new();
    D.get_or_init(|| {
        let (markets, variants) = (
            sample("uof/rest/invariant_market_descriptions.en.xml"),
            sample("uof/rest/variant_market_descriptions.en.xml"),
        );
        Descriptions::parse_all([markets.as_str(), variants.as_str()]).expect("the uof samples parse")
    })
}

/// The minus5 set: two market description responses with real groups.
fn minus5() -> Descriptions {
    let (a, b) = (
        sample("uof-minus5/rest/markets-0.xml"),
        sample("uof-minus5/rest/markets-1.xml"),
    );
    Descriptions::parse_all([a.as_str(), b.as_str()]).expect("the minus5 samples parse")
}

fn arsenal_chelsea() -> Competitors {
    Competitors::new("Arsenal", "Chelsea")
}

fn players() -> HashMap<String, String> {
    HashMap::from([
        ("sr:player:1234".to_owned(), "Saka, Bukayo".to_owned()),
        ("sr:competitor:5".to_owned(), "Team Five".to_owned()),
    ])
}

/// (market id, specifiers, outcome id) → (market name, outcome name).
type Row = (u32, &'static str, &'static str, &'static str, &'static str);

/// Renders every row for Arsenal – Chelsea with [`players`] and lists all
/// the rows that differ.
fn check(d: &Descriptions, rows: &[Row]) {
    let (teams, profiles) = (arsenal_chelsea(), players());
    let r = Renderer::new(d, &teams, &profiles);
    let wrong: Vec<String> = rows
        .iter()
        .filter_map(|&(market, specs, outcome, want_market, want_outcome)| {
            let got = (r.market_name(market, specs), r.outcome_name(market, specs, outcome));
            (got != (want_market.to_owned(), want_outcome.to_owned()))
                .then(|| format!("{market} [{specs}] {outcome}: got {got:?}, want ({want_market:?}, {want_outcome:?})"))
        })
        .collect();
    assert!(wrong.is_empty(), "{} rows differ:\n{}", wrong.len(), wrong.join("\n"));
}

#[test]
fn names_from_the_uof_descriptions() {
    #[rustfmt::skip]
    let rows: &[Row] = &[
        // Plain outcomes and competitors.
        (1, "", "1", "1x2", "Arsenal"),
        (1, "", "2", "1x2", "draw"),
        (10, "", "9", "Double chance", "Arsenal or draw"),
        (10, "", "10", "Double chance", "Arsenal or Chelsea"),
        (11, "", "5", "Draw no bet", "Chelsea"),
        (26, "", "70", "Odd/even", "odd"),
        (29, "", "74", "Both teams to score", "yes"),
        (60, "", "3", "1st half - 1x2", "Chelsea"),
        (81, "", "480", "1st half - correct score", "other"),
        // {total}, {hcp}, {+hcp} / {-hcp}.
        (18, "total=2.5", "12", "Total", "over 2.5"),
        (166, "total=9.5", "13", "Total corners", "under 9.5"),
        (69, "total=1.5", "13", "1st half - Arsenal total", "under 1.5"),
        (282, "total=4.5", "12", "Innings 1 to 5th top - Arsenal total", "over 4.5"),
        (14, "hcp=0:1", "1711", "Handicap 0:1", "Arsenal (0:1)"),
        (476, "hcp=0:2", "1712", "Try handicap 0:2", "draw (0:2)"),
        (16, "hcp=-1.5", "1714", "Handicap", "Arsenal (-1.5)"),
        (16, "hcp=-1.5", "1715", "Handicap", "Chelsea (+1.5)"),
        (16, "hcp=0.25", "1714", "Handicap", "Arsenal (+0.25)"),
        (16, "hcp=0", "1715", "Handicap", "Chelsea (0)"),
        (66, "hcp=1", "1715", "1st half - handicap", "Chelsea (-1)"),
        (500, "framenr=5|hcp=-10.5", "1715", "5th frame - point handicap", "Chelsea (+10.5)"),
        (701, "milestone=50", "76", "Any player to score 50", "no"),
        (379, "setnr=2|legnr=3|score=100", "74", "2nd set leg 3 - checkout score 100+", "yes"),
        (575, "total=2.5|from=1|to=10", "12", "10 minutes - total corners from 1 to 10", "over 2.5"),
        // {!ordinal}.
        (8, "goalnr=1", "6", "1st goal", "Arsenal"),
        (8, "goalnr=2", "7", "2nd goal", "none"),
        (8, "goalnr=3", "8", "3rd goal", "Chelsea"),
        (8, "goalnr=11", "6", "11th goal", "Arsenal"),
        (8, "goalnr=21", "6", "21st goal", "Arsenal"),
        (62, "goalnr=12", "8", "1st half - 12th goal", "Chelsea"),
        (103, "goalnr=22|from=1|to=15", "8", "15 minutes - 22nd goal from 1 to 15", "Chelsea"),
        (163, "cornernr=13", "6", "13th corner", "Arsenal"),
        (382, "xth=23", "7", "23rd player to score a 180", "none"),
        (556, "mapnr=2|xth=3", "4", "2nd map - 3rd dragon", "Arsenal"),
        (209, "setnr=1|gamenrX=3|gamenrY=4", "2", "1st set - 3rd and 4th game winner", "draw"),
        (101, "goalnr=1", "598", "When will the 1st goal be scored (10 min interval)", "1-10"),
        (184, "goalnr=1", "818", "1st goal & 1x2", "Arsenal goal & Chelsea"),
        // Arithmetic: {!(inningnr+1)}, {(minute-1)}.
        (739, "inningnr=7|runnr=1", "1826", "When will the 1st run be scored (incl. extra innings)", "7th inning"),
        (739, "inningnr=7|runnr=1", "1828", "When will the 1st run be scored (incl. extra innings)", "8th inning"),
        (739, "inningnr=7|runnr=1", "1829", "When will the 1st run be scored (incl. extra innings)", "9th inning"),
        (725, "mapnr=1|minute=30", "1831", "1st map - duration", "00:00 - 29:59"),
        (725, "mapnr=1|minute=30", "1832", "1st map - duration", "30:00+"),
        // Flex score: outcomes added to the score specifier.
        (41, "score=1:0", "114", "Correct score [1:0]", "2:0"),
        (41, "score=0:0", "110", "Correct score [0:0]", "0:0"),
        (402, "score=1:2", "1059", "1st half - correct score [1:2]", "1:3"),
        // Variant markets: outcomes from the shared variant list.
        (15, "variant=sr:winning_margin:3+", "sr:winning_margin:3+:115", "Winning margin", "Arsenal by 3+"),
        (15, "variant=sr:winning_margin:3+", "sr:winning_margin:3+:119", "Winning margin", "draw"),
        (21, "variant=sr:exact_goals:6+", "sr:exact_goals:6+:74", "Exact goals", "6+"),
        (241, "variant=sr:exact_games:bestof:5", "sr:exact_games:bestof:5:40", "Exact games", "4"),
        (196, "variant=sr:exact_sets:bestof:5", "sr:exact_sets:bestof:5:36", "Exact sets", "5"),
        (199, "variant=sr:correct_score:bestof:3", "sr:correct_score:bestof:3:5", "Correct score", "2:1"),
        (171, "variant=sr:point_range:7+", "sr:point_range:7+:1147", "Chelsea corner range", "7+"),
        // Player and competitor markets: {%player}, profile outcome ids.
        (38, "goalnr=1|type=live", "sr:player:1234", "1st goalscorer", "Saka, Bukayo"),
        (38, "goalnr=1|type=live", "sr:player:999", "1st goalscorer", "Player 999"),
        (38, "goalnr=1|type=live", "1716", "1st goalscorer", "no goal"),
        (683, "", "sr:player:1234", "Top batter", "Saka, Bukayo"),
        (537, "id=1", "sr:competitor:5", "3-ball", "Team Five"),
        (537, "id=1", "sr:competitor:6", "3-ball", "Competitor 6"),
        (638, "inningnr=1|player=sr:player:1234|total=20.5", "12", "1st innings - Saka, Bukayo total", "over 20.5"),
        (709, "player=sr:player:77|total=30.5", "13", "Player 77 total player performance", "under 30.5"),
        (657, "inningnr=2|dismissalnr=3|player1=sr:player:1234|player2=sr:player:77", "1822",
            "2nd innings - 3rd batter out", "Player 77"),
        (717, "player1=sr:player:1234|player2=sr:player:77|hcp=1.5", "1816", "Batter head2head (handicap)",
            "Saka, Bukayo (+1.5)"),
        (717, "player1=sr:player:1234|player2=sr:player:77|hcp=1.5", "1817", "Batter head2head (handicap)",
            "Player 77 (-1.5)"),
    ];
    check(uof(), rows);
    let markets: std::collections::BTreeSet<u32> = rows.iter().map(|r| r.0).collect();
    assert!(markets.len() >= 30, "only {} markets in the table", markets.len());
}

#[test]
fn names_from_the_minus5_descriptions() {
    #[rustfmt::skip]
    check(&minus5(), &[
        (1, "", "3", "1x2", "Chelsea"),
        (10, "", "11", "Double chance", "draw or Chelsea"),
        (16, "hcp=-0.75", "1715", "Handicap", "Chelsea (+0.75)"),
        (18, "total=3.5", "12", "Ukupno golova", "više od 3.5"),
        (575, "total=4.5|from=11|to=20", "13", "10 minutes - total corners from 11 to 20", "under 4.5"),
        // Single-variant answers (<market id variant>).
        (21, "variant=sr:exact_goals:6+", "sr:exact_goals:6+:68", "Exact goals", "0"),
        (892, "variant=sr:goalscorer:fieldplayers_nogoal_owngoal_other|goalnr=2|version=1",
            "sr:goalscorer:fieldplayers_nogoal_owngoal_other:1334", "2nd goalscorer", "own goal"),
        (892, "variant=sr:goalscorer:fieldplayers_nogoal_owngoal_other|goalnr=2|version=1",
            "sr:player:1234", "2nd goalscorer", "Saka, Bukayo"),
    ]);
}

#[test]
fn what_cannot_be_rendered_falls_back_readably() {
    #[rustfmt::skip]
    check(uof(), &[
        // Unknown market, unknown outcome.
        (9999, "", "1", "Market 9999", "1"),
        (9999, "total=2.5", "12", "Market 9999 (total=2.5)", "12"),
        (1, "", "99", "1x2", "99"),
        // Missing or unreadable specifiers.
        (18, "", "12", "Total", "12"),
        (8, "", "6", "Market 8", "Arsenal"),
        (8, "goalnr=x", "6", "Market 8 (goalnr=x)", "Arsenal"),
        (8, "goalnr=-1", "6", "Market 8 (goalnr=-1)", "Arsenal"),
        (16, "hcp=NaN", "1714", "Handicap", "1714"),
        (725, "mapnr=1|minute=3.5", "1831", "1st map - duration", "1831"),
        (41, "score=x", "114", "Correct score [x]", "114"),
        // A variant not described: the market name stays, the id shows.
        (241, "variant=sr:exact_games:bestof:99", "sr:exact_games:bestof:99:1", "Exact games",
            "sr:exact_games:bestof:99:1"),
        // Profiles not known: readable, never empty.
        (683, "", "sr:player:1", "Top batter", "Player 1"),
        (683, "", "sr:player:1,sr:player:1234", "Top batter", "Player 1, Saka, Bukayo"),
    ]);
    // No competitors known yet (no fixture).
    let (none, d) = (Competitors::default(), uof());
    let r = Renderer::new(d, &none, &NoProfiles);
    assert_eq!(r.outcome_name(1, "", "1"), "Home");
    assert_eq!(r.outcome_name(16, "hcp=1", "1715"), "Away (-1)");
    assert_eq!(r.market_name(170, "variant=sr:point_range:7+"), "Home corner range");
    assert_eq!(r.template("{$event}", ""), Ok("Home vs. Away".into()));
    assert_eq!(r.outcome_name(38, "goalnr=1", "sr:player:1234"), "Player 1234");
}

#[test]
fn the_template_vocabulary() {
    let (teams, d) = (arsenal_chelsea(), Descriptions::default());
    let profiles = players();
    let r = Renderer::new(&d, &teams, &profiles);
    let ok = |t: &str, specs: &str| r.template(t, specs).unwrap_or_else(|e| panic!("{t}: {e}"));
    assert_eq!(ok("no braces", ""), "no braces");
    assert_eq!(ok("{$event}", ""), "Arsenal vs. Chelsea");
    assert_eq!(ok("{$competitor1} - {$competitor2}", ""), "Arsenal - Chelsea");
    assert_eq!(ok("{total}", "total=2.50"), "2.50"); // as written
    let ordinals = [0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 21, 22, 23, 101, 111, 112, 113, 121];
    let rendered: Vec<String> = ordinals.iter().map(|n| ok("{!n}", &format!("n={n}"))).collect();
    assert_eq!(
        rendered,
        [
            "0th", "1st", "2nd", "3rd", "4th", "10th", "11th", "12th", "13th", "14th", "21st", "22nd", "23rd", "101st",
            "111th", "112th", "113th", "121st"
        ]
    );
    assert_eq!(ok("{+h} {-h}", "h=2"), "+2 -2");
    assert_eq!(ok("{+h} {-h}", "h=-0.25"), "-0.25 +0.25");
    assert_eq!(ok("{+h} {-h}", "h=0.0"), "0 0");
    assert_eq!(ok("{+h}", "h=1.50"), "+1.5");
    assert_eq!(ok("{(m-1)}:59 {(m+10)}", "m=30"), "29:59 40");
    assert_eq!(ok("{!(n+2)} {+(h+1)}", "n=1|h=0.5"), "3rd +1.5");
    assert_eq!(
        ok("{%p} / {%q}", "p=sr:player:1234|q=sr:player:8"),
        "Saka, Bukayo / Player 8"
    );
    assert_eq!(ok("{%p}", "p=free text"), "free text");
    // Specifiers in any order, with spaces around them.
    assert_eq!(ok("{a}{b}", " b=2 | a=1 "), "12");

    let err = |t: &str, specs: &str| r.template(t, specs).expect_err(t);
    assert_eq!(err("{total", ""), TemplateError::Unbalanced("{total".into()));
    assert_eq!(err("total}", ""), TemplateError::Unbalanced("total}".into()));
    assert_eq!(err("{a{b}}", "a=1"), TemplateError::Unbalanced("{a{b}}".into()));
    assert_eq!(err("{}", ""), TemplateError::EmptyExpression);
    assert_eq!(err("{!}", ""), TemplateError::EmptyExpression);
    assert_eq!(err("{total}", "hcp=1"), TemplateError::MissingSpecifier("total".into()));
    assert_eq!(err("{$referee}", ""), TemplateError::UnknownEntity("referee".into()));
    assert_eq!(err("{(m*2)}", "m=1"), TemplateError::BadOperand("(m*2)".into()));
    assert_eq!(err("{(m-1}", "m=1"), TemplateError::BadOperand("(m-1".into()));
    assert!(matches!(err("{!n}", "n=1.5"), TemplateError::NotANumber { .. }));
    assert!(matches!(err("{+h}", "h=inf"), TemplateError::NotANumber { .. }));
}

#[test]
fn the_uof_descriptions_are_all_read() {
    let d = uof();
    assert_eq!(d.len(), 751);
    assert_eq!(d.variant_count(), 98);
    let m = d.market(16).expect("handicap");
    assert_eq!(m.groups, ["all"]);
    assert_eq!(
        m.specifiers,
        [Specifier {
            name: "hcp".into(),
            kind: "decimal".into()
        }]
    );
    assert_eq!(m.outcomes.len(), 2);
    assert!(d.market(41).expect("correct score").flex_score);
    assert!(!m.flex_score);
    assert_eq!(d.market(38).and_then(|m| m.outcome_type.as_deref()), Some("sr:player"));
    let v = d.variant(241, "sr:exact_games:bestof:5").expect("shared variant");
    assert_eq!((v.market_name.as_deref(), v.outcomes.len()), (None, 3));
    // Mapping outcomes are not outcomes.
    assert_eq!(d.market(1).map(|m| m.outcomes.len()), Some(3));
    assert_eq!(d.markets_in_groups(&["player_props"]).collect::<Vec<_>>(), [770]);
    assert_eq!(d.markets_in_groups(&["all"]).count(), 751);
}

#[test]
fn groups_from_the_minus5_descriptions() {
    let d = minus5();
    let q = |groups: &[&str]| d.markets_in_groups(groups).collect::<Vec<_>>();
    assert_eq!(q(&["corners"]), [575]);
    assert_eq!(q(&["10_min"]), [575]);
    assert_eq!(q(&["scorers"]), [892]);
    assert_eq!(q(&["score"]), [1, 10, 11, 16, 18, 21]);
    assert_eq!(q(&["regular_play"]), [1, 10, 11, 16, 18, 21, 892]);
    assert_eq!(q(&["corners", "scorers"]), [575, 892]);
    assert_eq!(q(&["all"]), [1, 10, 11, 16, 18, 21, 575, 892]);
    // The samples have no booking or first-half market.
    assert_eq!(q(&["bookings"]), [] as [u32; 0]);
    assert_eq!(q(&["1st_half"]), [] as [u32; 0]);
    assert_eq!(q(&[]), [] as [u32; 0]);
    assert_eq!(
        d.groups_of(575).expect("described"),
        ["all", "10_min", "corners"].map(String::from)
    );
    assert_eq!(d.groups_of(9999), None);
    // Single-variant answers do not replace their market's description.
    assert_eq!(d.market(21).map(|m| m.groups.len()), Some(3));
    let v = d.variant(21, "sr:exact_goals:6+").expect("single-variant answer");
    assert_eq!((v.market_name.as_deref(), v.outcomes.len()), (Some("Exact goals"), 7));
}

#[test]
fn merging_later_files_replaces_whole_entries() {
    let mut d = uof().clone();
    d.merge(minus5());
    // minus5's market 1 brings the real groups; its 18 is in Croatian.
    assert_eq!(d.groups_of(1).map(<[String]>::len), Some(3));
    assert_eq!(d.market(18).map(|m| m.name.as_str()), Some("Ukupno golova"));
    assert_eq!(d.markets_in_groups(&["corners"]).collect::<Vec<_>>(), [575]);
    assert_eq!(d.len(), 752); // 892 is new
    // The single-variant answer now wins over the shared list.
    assert_eq!(
        d.variant(21, "sr:exact_goals:6+")
            .and_then(|v| v.market_name.as_deref()),
        Some("Exact goals")
    );
    assert_eq!(
        d.variant(15, "sr:exact_goals:6+").map(|v| v.market_name.is_none()),
        Some(true)
    );
}

#[test]
fn lenient_on_the_unknown_strict_on_the_broken() {
    let d = Descriptions::parse(
        r#"<market_descriptions new="1"><extra/>
             <market id=" 7" name="M {x}" groups="all|| b " colour="red">
               <outcomes><outcome id="1" name="a" weight="2"/><novelty id="9" name="z"/></outcomes>
               <specifiers><specifier name="x"/></specifiers>
               <future><outcomes><outcome id="2" name="ignored"/></outcomes></future>
             </market>
             <market id="8" name="No groups"/>
           </market_descriptions>"#,
    )
    .expect("lenient");
    let m = d.market(7).expect("market 7");
    assert_eq!(
        (m.groups.clone(), m.outcomes.len()),
        (vec!["all".to_owned(), "b".to_owned()], 1)
    );
    assert_eq!(m.specifiers[0].kind, "string");
    assert_eq!(d.groups_of(8), Some(&[] as &[String]));

    let bad = |xml: &str| Descriptions::parse(xml).expect_err(xml);
    assert!(matches!(
        bad("<market_descriptions><market id=\"1\""),
        DataError::Xml(_)
    ));
    assert_eq!(
        bad("<market_descriptions><market id=\"1\" name=\"x\">"),
        DataError::Truncated("market".into())
    );
    assert_eq!(bad(""), DataError::Empty);
    assert!(matches!(bad("<fixtures_fixture/>"), DataError::WrongRoot { .. }));
    assert_eq!(
        bad(r#"<market_descriptions><market name="x"/></market_descriptions>"#),
        DataError::MissingAttribute {
            element: "market",
            attr: "id"
        }
    );
    assert_eq!(
        bad(r#"<market_descriptions><market id="x1" name="x"/></market_descriptions>"#),
        DataError::BadValue {
            element: "market",
            attr: "id",
            value: "x1".into()
        }
    );
    assert_eq!(
        bad(
            r#"<variant_descriptions><variant id="v"><outcomes><outcome id="1"/></outcomes></variant></variant_descriptions>"#
        ),
        DataError::MissingAttribute {
            element: "outcome",
            attr: "name"
        }
    );
}

/// (file, event id, home, away, tournament, sport, scheduled ms).
type FixtureRow = (
    &'static str,
    &'static str,
    (&'static str, &'static str),
    (&'static str, &'static str),
    Option<&'static str>,
    Option<&'static str>,
    Option<i64>,
);

#[test]
fn every_fixture_sample_parses() {
    #[rustfmt::skip]
    let rows: &[FixtureRow] = &[
        ("uof/rest/fixtures.en.xml", "sr:match:9210275",
            ("sr:competitor:66390", "Pericos de Puebla"), ("sr:competitor:66410", "Rojos Del Aguila de Veracruz"),
            Some("Mexican League"), Some("Baseball"), Some(1_470_787_200_000)),
        ("uof-minus5/rest/fixture-0.xml", "sr:match:18001015",
            ("sr:competitor:2953", "Ajax Amsterdam"), ("sr:competitor:33", "Tottenham Hotspur"),
            Some("UEFA Champions League"), Some("Soccer"), Some(1_557_342_000_000)),
        ("uof-minus5/rest/fixture-1.xml", "sr:match:8696826",
            ("sr:competitor:1860", "IK Oddevold"), ("sr:competitor:22356", "Tvaakers IF"),
            Some("Div 1 Sodra"), Some("Soccer"), Some(1_477_936_800_000)),
        ("uof-minus5/rest/fixture-2.xml", "sr:match:13616027",
            ("sr:competitor:328169", "Hossam Y / Taweel I H"), ("sr:competitor:406755", "Goldhoff G / Gornet A"),
            Some("ITF Egypt F2, Men Doubles"), Some("Tennis"), Some(1_516_699_800_000)),
        // The tournament is commented out in this one.
        ("uof-minus5/rest/fixture-3.xml", "sr:match:13616027",
            ("sr:competitor:328169", "Hossam Y / Taweel I H"), ("sr:competitor:406755", "Goldhoff G / Gornet A"),
            None, None, Some(1_516_699_800_000)),
    ];
    for &(file, event, home, away, tournament, sport, scheduled) in rows {
        let f = Fixture::parse(&sample(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        fn side(c: Option<&Competitor>) -> Option<(&str, &str)> {
            c.map(|c| (c.id.as_str(), c.name.as_str()))
        }
        assert_eq!(f.event_id, event, "{file}");
        assert_eq!((side(f.home()), side(f.away())), (Some(home), Some(away)), "{file}");
        assert_eq!(f.home().and_then(|c| c.qualifier), Some(Qualifier::Home), "{file}");
        assert_eq!(f.competitors.len(), 2, "{file}: players are not competitors");
        assert_eq!(
            (f.tournament.as_deref(), f.sport.as_deref()),
            (tournament, sport),
            "{file}"
        );
        assert_eq!(f.scheduled_ms, scheduled, "{file}");
        assert_eq!(f.competitors().event, format!("{} vs. {}", home.1, away.1));
    }
}

#[test]
fn a_fixture_names_its_competitors_in_rendered_names() {
    let f = Fixture::parse(&sample("uof-minus5/rest/fixture-0.xml")).expect("parses");
    let teams = f.competitors();
    let r = Renderer::new(uof(), &teams, &f);
    assert_eq!(r.outcome_name(16, "hcp=-1", "1714"), "Ajax Amsterdam (-1)");
    assert_eq!(r.outcome_name(537, "id=1", "sr:competitor:33"), "Tottenham Hotspur");
    assert_eq!(
        r.template("{$event}", ""),
        Ok("Ajax Amsterdam vs. Tottenham Hotspur".into())
    );
}

#[test]
fn broken_fixtures_are_refused_with_the_reason() {
    let bad = |xml: &str| Fixture::parse(xml).expect_err(xml);
    assert_eq!(bad("<fixtures_fixture/>"), DataError::MissingElement("fixture"));
    assert_eq!(
        bad(r#"<fixtures_fixture><fixture scheduled="2019-05-08T19:00:00+00:00"/></fixtures_fixture>"#),
        DataError::MissingAttribute {
            element: "fixture",
            attr: "id"
        }
    );
    assert_eq!(
        bad(r#"<fixtures_fixture><fixture id="sr:match:1" scheduled="yesterday"/></fixtures_fixture>"#),
        DataError::BadValue {
            element: "fixture",
            attr: "scheduled",
            value: "yesterday".into()
        }
    );
    assert_eq!(
        bad(
            r#"<fixtures_fixture><fixture id="sr:match:1"><competitors><competitor id="sr:competitor:1"/></competitors></fixture></fixtures_fixture>"#
        ),
        DataError::MissingAttribute {
            element: "competitor",
            attr: "name"
        }
    );
    assert!(matches!(
        bad("<fixtures_fixture><fixture id=\"a\">"),
        DataError::Truncated(_)
    ));
    // No qualifiers, no time: sides by position, no start.
    let f = Fixture::parse(
        r#"<fixtures_fixture><fixture id="sr:match:1"><competitors>
             <competitor id="sr:competitor:1" name="A"/><competitor id="sr:competitor:2" name="B" qualifier="x"/>
           </competitors></fixture></fixtures_fixture>"#,
    )
    .expect("lenient");
    assert_eq!(
        (f.home().map(|c| c.name.as_str()), f.away().map(|c| c.name.as_str())),
        (Some("A"), Some("B"))
    );
    assert_eq!(f.scheduled_ms, None);
}

#[test]
fn start_times() {
    let cases = [
        ("2016-08-10T00:00:00+00:00", Some(1_470_787_200_000)),
        ("2019-05-08T19:00:00Z", Some(1_557_342_000_000)),
        ("2019-05-08T21:00:00+02:00", Some(1_557_342_000_000)),
        ("2000-02-29T23:59:59.5+02:00", Some(951_861_599_500)),
        ("1969-12-31T23:59:59Z", Some(-1000)),
        ("2019-02-29T00:00:00Z", None),
        ("2019-05-08", None),
        ("2019-05-08T19:00:00+2", None),
        ("2019-05-08T19:00:00.Z", None),
        ("2019-13-08T19:00:00Z", None),
    ];
    for (text, want) in cases {
        assert_eq!(fixture::unix_ms(text), want, "{text}");
    }
}
