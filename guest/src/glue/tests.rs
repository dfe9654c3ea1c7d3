//! Saved-state layouts: every older one restores, older guests read the
//! prefix of the current one, a newer one is read by its known prefix.

use std::collections::BTreeMap;

use super::*;
use crate::event::{Header, MarketOdds, OddsChange, OutcomeOdds};
use crate::market::{MarketKey, Outcome};
use crate::model::Summary;

/// `Market` and `MatchState` as guests before producers encode them
/// (layouts 1 and 2): what such a guest reads of any state.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct OldMarket {
    id: u32,
    specifiers: String,
    status: i32,
    favourite: bool,
    outcomes: Vec<Outcome>,
    status_before_resolution: Option<i32>,
    void_reason: Option<i32>,
    certainty: Option<u8>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct OldMatchState {
    match_id: String,
    summary: Summary,
    markets: BTreeMap<MarketKey, OldMarket>,
    updated_at: i64,
}

impl OldMatchState {
    /// What an older guest holds for `s`.
    fn of(s: &MatchState) -> OldMatchState {
        let markets = s.markets.iter().map(|(k, m)| {
            let old = OldMarket {
                id: m.id,
                specifiers: m.specifiers.to_string(),
                status: m.status,
                favourite: m.favourite,
                outcomes: m.outcomes.clone(),
                status_before_resolution: m.status_before_resolution,
                void_reason: m.void_reason,
                certainty: m.certainty,
            };
            (k.clone(), old)
        });
        OldMatchState {
            match_id: s.match_id.clone(),
            summary: s.summary.clone(),
            markets: markets.collect(),
            updated_at: s.updated_at,
        }
    }
}

/// A model of match "m" with a live book from `product` (one market) and
/// 3 events seen.
fn model(product: u32) -> Model {
    let mut w = Model::new("m");
    let odds = crate::event::MatchEvent::OddsChange(OddsChange {
        header: Header {
            product: Some(product),
            event_id: "m".into(),
            timestamp: 42,
            request_id: None,
        },
        sport_event_status: None,
        betting_status: None,
        markets: vec![MarketOdds {
            id: 18,
            specifiers: "total=2.5".into(),
            status: 1,
            favourite: false,
            outcomes: vec![OutcomeOdds {
                id: "12".into(),
                odds: Some(1.9),
                active: true,
            }],
        }],
    });
    w.apply_event(&odds).expect("apply");
    w.ext.events_seen = 3;
    w
}

/// What a build keeps of v2's count when it reads `seen`.
fn kept(seen: u64) -> u64 {
    if cfg!(feature = "v2") { seen } else { 0 }
}

#[test]
fn older_layouts_restore_with_producers_unknown() {
    let saved = model(1);
    let old = OldMatchState::of(saved.state());
    let mut w = Model::new("m");
    w.migrate("m", &crate::encode(&old), 1).expect("layout 1");
    assert_eq!(OldMatchState::of(w.state()), old, "everything layout 1 holds");
    let m = w.state().market(18, "total=2.5").expect("market");
    assert_eq!((m.product, &w.state().producers), (None, &Default::default()));
    assert_eq!(w.ext, Extension::default());
    let layout2 = crate::encode(&(&old, Extension { events_seen: 7 }));
    w.migrate("m", &layout2, 2).expect("layout 2");
    assert_eq!(OldMatchState::of(w.state()), old);
    assert_eq!(w.ext.events_seen, kept(7));
}

#[test]
fn older_guests_read_the_prefix_of_the_current_layout() {
    let w = model(1);
    let bytes = w.save_state();
    let expected = OldMatchState::of(w.state());
    assert_eq!(crate::decode::<OldMatchState>(&bytes).expect("as layout 1"), expected);
    let (state, ext) = crate::decode::<(OldMatchState, Extension)>(&bytes).expect("as layout 2");
    assert_eq!((state, ext), (expected, w.ext));
    let (_, _, producers) = crate::decode::<(OldMatchState, Extension, ProducerPart)>(&bytes).expect("as layout 3");
    assert_eq!(producers.producers.owner, Some(1));
}

#[test]
fn layout_3_restores_with_its_cancels_kept() {
    let mut w = model(1);
    let cancel = crate::event::MatchEvent::BetCancel(crate::event::BetCancel {
        header: Header {
            product: Some(1),
            event_id: "m".into(),
            timestamp: 43,
            request_id: None,
        },
        start_time: Some(100),
        end_time: None,
        superceded_by: None,
        markets: vec![crate::event::CancelledMarket {
            id: 18,
            specifiers: "total=2.5".into(),
            void_reason: None,
        }],
    });
    w.apply_event(&cancel).expect("apply");
    w.state.fixture.change_type = Some(3);
    let mut back = Model::new("m");
    back.restore_state(&w.save_state()).expect("layout 4");
    assert_eq!(back.state(), w.state(), "cancels and fixture included");
    // What a layout-3 guest saved after its bet_cancel (-4, no window).
    let mut old = model(1);
    let m = old.state.markets.get_mut(&(18, "total=2.5".into())).expect("market");
    (m.status_before_resolution, m.status) = (Some(1), crate::market::status::CANCELLED);
    let layout3 = crate::encode(&(&old.state, &old.ext, ProducerPart::of(&old.state)));
    let mut back = Model::new("m");
    back.migrate("m", &layout3, 3).expect("layout 3");
    let m = back.state().market(18, "total=2.5").expect("market");
    assert_eq!((m.status, m.cancels.len()), (crate::market::status::CANCELLED, 1));
    assert_eq!(back.state().producers.owner, Some(1));
    assert_eq!(back.state().fixture, Default::default());
}

#[test]
fn a_newer_layout_is_read_by_its_known_prefix() {
    let mut bytes = model(1).save_state();
    bytes.extend_from_slice(&[9, 9, 9]); // a part this guest does not know
    let mut w = Model::new("m");
    w.migrate("m", &bytes, STATE_VERSION + 1).expect("newer layout");
    assert_eq!(w.state(), model(1).state());
}

#[test]
fn refuses_foreign_or_broken_states() {
    let mut w = Model::new("m");
    let other = crate::encode(&MatchState::new("other"));
    assert!(matches!(w.migrate("m", &other, 1), Err(GlueError::BadState(m)) if m.contains("offered to m")));
    assert!(matches!(w.migrate("m", &[0xff, 0xff], 1), Err(GlueError::BadState(_))));
    assert!(matches!(w.migrate("m", &other, 0), Err(GlueError::BadState(_))));
    let layout1 = crate::encode(&MatchState::new("m"));
    assert!(
        matches!(w.migrate("m", &layout1, 3), Err(GlueError::BadState(_))),
        "layout 1 offered as 3 lacks its parts"
    );
    let layout3 = crate::encode(&(MatchState::new("m"), Extension::default(), ProducerPart::default()));
    assert!(
        matches!(w.migrate("m", &layout3, 4), Err(GlueError::BadState(_))),
        "layout 3 offered as 4 lacks its part"
    );
}

#[test]
fn save_then_restore_round_trips() {
    let w = model(3);
    assert_eq!(w.state().updated_at, 42, "the state to save is not the empty one");
    assert_eq!(w.state().producers.owner, Some(3));
    let mut back = Model::new("m");
    back.restore_state(&w.save_state()).expect("restore");
    assert_eq!(back.state(), w.state(), "producers included");
    assert_eq!(back.ext.events_seen, kept(3));
}
