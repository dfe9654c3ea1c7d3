//! Update deltas against snapshots, through the real (Wasm) guest: an
//! update applied to the state before it, by the rule of
//! `docs/protocol.md` ("Applying an update", [`crate::support::merge`]),
//! gives the state a fresh snapshot shows, on the simulator's stream and on
//! the real samples; a guest rebuilt from a saved state and fed the same
//! events regenerates byte-identical deltas; the guest's delta is, byte
//! for byte, serde_json's rendering of the same model's delta run natively
//! (the guest renders it by hand: `touchline_guest::delta::json`); and what an update frame
//! weighs, against the same update with every touched market in full (the
//! format before deltas).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use touchline::DEFAULT_GUEST;
use touchline::feed::parse::{FeedMessage, parse};
use touchline::sandbox::{GuestInstance, GuestVersion, Limits, Platform, Saved};
use touchline::sim::{Generator, SimConfig};
use touchline_guest::event::MatchEvent;
use touchline_guest::model::MatchState;

use crate::support::{all_samples, merge, normalise, sample_for};

/// A guest rebuilt from a saved state every this many events of a match
/// must regenerate the deltas that follow.
const REBUILD_EVERY: u64 = 29;

fn guest() -> GuestVersion {
    let platform = Platform::new(Limits {
        max_instances: 64,
        memory_bytes: 64 << 20,
        call_deadline: Duration::from_secs(5),
    })
    .expect("platform");
    platform.load(DEFAULT_GUEST).expect("the default guest loads")
}

/// One match as a client follows it, beside the guest that runs it.
struct Followed {
    guest: GuestInstance,
    /// Rebuilt from `guest`'s saved state now and then; applies the same
    /// events and must say the same.
    shadow: GuestInstance,
    /// The model run natively, whose delta is rendered both by hand (as
    /// the guest does) and by serde_json's derived `Serialize`.
    native: MatchState,
    /// The first snapshot with every update merged in.
    state: Value,
    seq: u64,
}

/// Bytes of the update frames, as sent and with touched markets in full.
#[derive(Debug, Default)]
struct Weight {
    updates: u64,
    delta_frames: u64,
    full_frames: u64,
    /// Outcomes the deltas carry, and those of the markets they name.
    outcomes_sent: u64,
    outcomes_touched: u64,
}

impl Weight {
    fn mean(total: u64, n: u64) -> f64 {
        total as f64 / n.max(1) as f64
    }

    fn report(&self, what: &str) {
        println!(
            "{what}: {} updates, mean update frame {:.0} bytes as deltas, {:.0} bytes with touched markets in full; \
             {} of the {} outcomes of the markets named sent",
            self.updates,
            Self::mean(self.delta_frames, self.updates),
            Self::mean(self.full_frames, self.updates),
            self.outcomes_sent,
            self.outcomes_touched,
        );
    }
}

/// Replays events through the guest, checking every update.
struct Replay {
    version: GuestVersion,
    matches: BTreeMap<String, Followed>,
    weight: Weight,
}

fn snapshot(guest: &mut GuestInstance) -> Value {
    serde_json::from_str(guest.snapshot_json().expect("snapshot").get()).expect("JSON")
}

/// An update frame as the worker renders it (no names).
fn frame_len(version: &str, id: &str, seq: u64, delta: &str) -> u64 {
    let head = serde_json::json!({"type": "update", "match": id, "epoch": 1, "seq": seq, "guest_version": version});
    let head = head.to_string();
    // `{...,"delta":DELTA}`
    (head.len() + ",\"delta\":".len() + delta.len()) as u64
}

/// `delta` with each market it names as the snapshot after it shows it.
fn with_full_markets(delta: &Value, after: &Value) -> Value {
    let key = |m: &Value| (m["id"].clone(), m["specifiers"].clone());
    let mut full = delta.clone();
    let whole: Vec<Value> = delta["markets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            after["markets"]
                .as_array()
                .and_then(|ms| ms.iter().find(|s| key(s) == key(m)))
                .cloned()
                .unwrap_or_else(|| panic!("a market of the delta is not in the snapshot: {m}"))
        })
        .collect();
    full["markets"] = Value::Array(whole);
    full
}

impl Replay {
    fn new() -> Replay {
        Replay {
            version: guest(),
            matches: BTreeMap::new(),
            weight: Weight::default(),
        }
    }

    fn apply(&mut self, event: &MatchEvent) {
        let id = event.header().event_id.clone();
        let version = &self.version;
        let m = self.matches.entry(id.clone()).or_insert_with(|| {
            let mut guest = version.instantiate(Arc::from(id.as_str())).expect("instance");
            let shadow = version.instantiate(Arc::from(id.as_str())).expect("instance");
            Followed {
                native: MatchState::new(id.as_str()),
                state: snapshot(&mut guest),
                guest,
                shadow,
                seq: 0,
            }
        });
        let bytes = touchline_guest::encode(event);
        let delta = m.guest.apply_json(&bytes).expect("applies");
        let again = m.shadow.apply_json(&bytes).expect("the shadow applies");
        assert_eq!(
            delta.get(),
            again.get(),
            "{id} seq {}: a rebuilt guest says the same",
            m.seq + 1
        );
        let change = m.native.apply(event);
        let native = m.native.delta(event.kind(), &change);
        let by_hand = touchline_guest::delta::json::to_string(&native).expect("JSON");
        assert_eq!(
            by_hand,
            serde_json::to_string(&native).expect("JSON"),
            "{id} seq {}: the delta rendered by hand is serde_json's",
            m.seq + 1
        );
        assert_eq!(delta.get(), by_hand, "{id} seq {}: the guest's delta", m.seq + 1);
        m.seq += 1;
        let value: Value = serde_json::from_str(delta.get()).expect("JSON");
        merge(&mut m.state, &value);
        let fresh = snapshot(&mut m.guest);
        assert_eq!(
            normalise(&m.state),
            normalise(&fresh),
            "{id} seq {}: the previous state with the delta {delta} is not the snapshot",
            m.seq
        );
        let full = with_full_markets(&value, &fresh);
        let outcomes = |d: &Value| -> u64 {
            let markets = d["markets"].as_array().into_iter().flatten();
            markets
                .map(|m| m["outcomes"].as_array().map_or(0, |o| o.len() as u64))
                .sum()
        };
        self.weight.outcomes_sent += outcomes(&value);
        self.weight.outcomes_touched += outcomes(&full);
        let full = full.to_string();
        self.weight.updates += 1;
        self.weight.delta_frames += frame_len(version.version(), &id, m.seq, delta.get());
        self.weight.full_frames += frame_len(version.version(), &id, m.seq, &full);
        if m.seq.is_multiple_of(REBUILD_EVERY) {
            let state = m.guest.save_state().expect("saves");
            let saved = Saved {
                state: &state,
                guest: version.version(),
                state_version: version.state_version(),
            };
            m.shadow = version
                .rebuild(Arc::from(id.as_str()), Some(saved), [])
                .expect("rebuilds");
        }
    }
}

/// The match events of the simulator's stream (seeded).
fn sim_events(matches: u32, messages: usize) -> Vec<MatchEvent> {
    let mut generator = Generator::new(&SimConfig {
        matches,
        seed: 14,
        rate: 0.0,
        count: 0,
    });
    (0..messages)
        .filter_map(|_| match parse(generator.next_message().as_bytes()) {
            Ok(FeedMessage::Match(e)) => Some(e),
            _ => None,
        })
        .collect()
}

/// Every sample match message of each set, as one match per set: the
/// odds_changes, then the rest (settlements, cancels, stops, their
/// rollbacks), then the odds_changes again, in name order.
fn sample_events() -> Vec<MatchEvent> {
    let mut out = Vec::new();
    for (n, set) in ["uof/", "uof-minus5/"].into_iter().enumerate() {
        let id = format!("sr:match:{}", n + 1);
        let events: Vec<(bool, MatchEvent)> = all_samples()
            .into_iter()
            .filter(|(rel, _)| rel.starts_with(set))
            .filter_map(|(rel, bytes)| {
                let bytes = if bytes.windows(10).any(|w| w == b"event_id=\"") {
                    sample_for(&rel, &id)
                } else {
                    bytes
                };
                match parse(&bytes) {
                    Ok(FeedMessage::Match(e)) => Some((matches!(e, MatchEvent::OddsChange(_)), e)),
                    _ => None,
                }
            })
            .collect();
        let odds = events.iter().filter(|(o, _)| *o).map(|(_, e)| e.clone());
        let rest = events.iter().filter(|(o, _)| !*o).map(|(_, e)| e.clone());
        out.extend(odds.clone().chain(rest).chain(odds));
    }
    out
}

#[test]
fn deltas_rebuild_the_snapshot_on_the_simulator_stream() {
    let events = sim_events(12, 6_000);
    let mut replay = Replay::new();
    for e in &events {
        replay.apply(e);
    }
    assert!(replay.weight.updates > 5_000, "{}", replay.weight.updates);
    replay.weight.report("simulator (12 matches, seed 14)");
}

#[test]
fn deltas_rebuild_the_snapshot_on_the_samples() {
    let events = sample_events();
    assert!(events.len() > 20, "{}", events.len());
    let mut replay = Replay::new();
    for e in &events {
        replay.apply(e);
    }
    replay.weight.report("samples");
}
