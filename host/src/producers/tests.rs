//! The producer machine with a fake clock: every way down, every way back
//! up, and what must not bring a producer back.

use std::time::{Duration, Instant};

use super::machine::{Effect, Machine, Reason, Status, Timing};
use super::table::Table;
use super::{Board, LagWatch};
use crate::journal::ProducerRecord;

const T0_WALL: i64 = 1_800_000_000_000;

fn timing() -> Timing {
    Timing {
        alive_timeout: Duration::from_secs(20),
        max_feed_delay: Some(Duration::from_secs(20)),
        recovery_min_interval: Duration::from_secs(30),
        recovery_timeout: Duration::from_secs(120),
    }
}

/// A machine for producers 1 and 3 and a fake clock.
struct Rig {
    m: Machine,
    t0: Instant,
    /// Seconds since `t0`.
    at: f64,
}

impl Rig {
    fn new(saved: &[ProducerRecord]) -> Rig {
        let t0 = Instant::now();
        let producers = Table::default().select(&[1, 3]).expect("1 and 3");
        Rig {
            m: Machine::new(producers, saved, timing(), t0, T0_WALL),
            t0,
            at: 0.0,
        }
    }

    /// A cluster node's machine: it defers to another node's request for
    /// 2 s while it has no feed connection of its own.
    fn deferring() -> Rig {
        let mut r = Rig::new(&[]);
        let producers = Table::default().select(&[1, 3]).expect("1 and 3");
        r.m = Machine::new(producers, &[], timing(), r.t0, T0_WALL).deferring(Duration::from_secs(2));
        r
    }

    fn now(&self) -> Instant {
        self.t0 + Duration::from_secs_f64(self.at)
    }

    fn wall(&self) -> i64 {
        T0_WALL + (self.at * 1000.0) as i64
    }

    /// Advance the clock to `secs` and tick.
    fn tick_at(&mut self, secs: f64) -> Vec<Effect> {
        self.at = secs;
        let (now, wall) = (self.now(), self.wall());
        self.m.tick(now, wall)
    }

    fn alive(&mut self, product: u32, subscribed: bool) -> Vec<Effect> {
        let (now, wall) = (self.now(), self.wall());
        self.m.alive(product, wall, subscribed, now, wall)
    }

    fn complete(&mut self, product: u32, id: u64) -> Vec<Effect> {
        let (now, wall) = (self.now(), self.wall());
        self.m.snapshot_complete(product, Some(id), now, wall)
    }

    fn connected(&mut self) -> Vec<Effect> {
        let (now, wall) = (self.now(), self.wall());
        self.m.connected(now, wall)
    }

    fn status(&self, product: u32) -> Status {
        self.m
            .producers()
            .iter()
            .find(|t| t.producer.id == product)
            .expect("selected")
            .status
    }

    fn is_up(&self, product: u32) -> bool {
        self.status(product).is_up()
    }

    /// Connect, take the startup requests and complete them: both up.
    fn up(&mut self) {
        let effects = self.connected();
        for (p, id, _) in requests(&effects) {
            self.complete(p, id);
        }
        assert!(self.is_up(1) && self.is_up(3), "{effects:?}");
    }
}

/// The requests among `effects`: (product, request id, after).
fn requests(effects: &[Effect]) -> Vec<(u32, u64, Option<i64>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Request {
                product,
                request_id,
                after,
                ..
            } => Some((*product, *request_id, *after)),
            _ => None,
        })
        .collect()
}

fn request_of(effects: &[Effect], product: u32) -> (u64, Option<i64>) {
    requests(effects)
        .into_iter()
        .find(|r| r.0 == product)
        .map(|r| (r.1, r.2))
        .unwrap_or_else(|| panic!("no request for {product} in {effects:?}"))
}

fn reason(s: Status) -> Option<Reason> {
    match s {
        Status::Up => None,
        Status::Down { reason, .. } => Some(reason),
    }
}

#[test]
fn every_producer_starts_down_and_asks_only_once_connected() {
    let mut r = Rig::new(&[]);
    assert_eq!(reason(r.status(1)), Some(Reason::Startup));
    assert_eq!(reason(r.status(3)), Some(Reason::Startup));
    assert!(
        requests(&r.tick_at(1.0)).is_empty(),
        "no request without a feed connection"
    );
    let effects = r.connected();
    let (id1, after1) = request_of(&effects, 1);
    let (id3, _) = request_of(&effects, 3);
    assert_ne!(id1, id3);
    assert_eq!(after1, None, "nothing kept: a full recovery");
    assert_eq!(r.status(1).name(), "recovering");
    // Alives and fresh odds alone never bring it back.
    r.alive(1, true);
    assert!(!r.is_up(1));
    r.complete(1, id1);
    assert!(r.is_up(1) && !r.is_up(3), "producers are independent");
    r.complete(3, id3);
    assert!(r.is_up(3));
}

#[test]
fn missed_alives_take_it_down_and_a_recovery_brings_it_back() {
    let mut r = Rig::new(&[]);
    r.up();
    r.at = 5.0;
    r.alive(1, true);
    r.alive(3, true);
    let alive_wall = r.wall();
    assert!(r.tick_at(24.9).is_empty(), "19.9 s of silence is fine");
    r.alive(3, true);
    let effects = r.tick_at(25.0);
    assert_eq!(reason(r.status(1)), Some(Reason::AliveTimeout));
    assert!(r.is_up(3), "3 kept sending alives");
    assert!(requests(&effects).is_empty(), "{effects:?}");
    // Silent: no request, even past the minimum interval (30 s from the
    // startup requests at 0 s)...
    assert!(requests(&r.tick_at(40.0)).iter().all(|q| q.0 != 1));
    // ...until it speaks again (an alive alone does not bring it up).
    r.at = 41.0;
    let effects = r.alive(1, true);
    assert!(!r.is_up(1));
    let (id, after) = request_of(&effects, 1);
    assert_eq!(after, Some(alive_wall), "after = the last alive while up");
    r.complete(1, id);
    assert!(r.is_up(1));
}

#[test]
fn unsubscribed_is_down_at_once_and_only_the_current_request_reopens() {
    let mut r = Rig::new(&[]);
    r.up();
    r.at = 40.0;
    let effects = r.alive(1, false);
    assert_eq!(reason(r.status(1)), Some(Reason::Unsubscribed));
    let (id, _) = request_of(&effects, 1);
    // Another request id, or another producer's snapshot_complete, changes nothing.
    let ignored = r.complete(1, id + 1000);
    assert!(matches!(
        ignored[..],
        [Effect::Ignored {
            why: "not the current request",
            ..
        }]
    ));
    r.complete(3, id);
    assert!(!r.is_up(1));
    let (now, wall) = (r.now(), r.wall());
    r.m.snapshot_complete(1, None, now, wall);
    assert!(!r.is_up(1), "a snapshot_complete without request_id");
    r.complete(1, id);
    assert!(r.is_up(1));
}

#[test]
fn a_lost_connection_takes_every_producer_down_each_back_on_its_own() {
    let mut r = Rig::new(&[]);
    r.up();
    r.at = 31.0;
    let (now, wall) = (r.now(), r.wall());
    let effects = r.m.connection_lost(now, wall);
    assert_eq!(reason(r.status(1)), Some(Reason::ConnectionLost));
    assert_eq!(reason(r.status(3)), Some(Reason::ConnectionLost));
    assert!(requests(&effects).is_empty(), "no connection, no request");
    let effects = r.connected();
    let (id1, _) = request_of(&effects, 1);
    let (id3, _) = request_of(&effects, 3);
    r.complete(1, id1);
    assert!(r.is_up(1) && !r.is_up(3));
    r.complete(3, id3);
    assert!(r.is_up(3));
}

#[test]
fn a_lagging_feed_is_delayed_and_comes_back_by_itself() {
    let mut r = Rig::new(&[]);
    r.up();
    r.at = 50.0;
    r.alive(1, true);
    let (now, wall) = (r.now(), r.wall());
    let effects = r.m.lag(1, true, now, wall);
    assert_eq!(r.status(1).name(), "delayed");
    assert!(requests(&effects).is_empty(), "a delay asks for no recovery");
    assert!(requests(&r.tick_at(55.0)).iter().all(|q| q.0 != 1));
    let (now, wall) = (r.now(), r.wall());
    r.m.lag(1, false, now, wall);
    assert!(r.is_up(1), "back without a recovery once the lag is gone");
    // But a delayed producer that also goes silent needs a recovery.
    let (now, wall) = (r.now(), r.wall());
    r.m.lag(1, true, now, wall);
    r.alive(1, true);
    r.tick_at(76.0);
    assert_eq!(reason(r.status(1)), Some(Reason::AliveTimeout));
    r.at = 77.0;
    let (id, _) = request_of(&r.alive(1, true), 1);
    // Recovered while still lagging: delayed, not up.
    r.complete(1, id);
    assert_eq!(r.status(1).name(), "delayed");
}

#[test]
fn no_snapshot_complete_in_time_asks_again_and_never_more_often_than_the_interval() {
    let mut r = Rig::new(&[]);
    let first = request_of(&r.connected(), 1).0;
    // Alives keep coming, but no snapshot_complete.
    let mut ids = vec![first];
    let mut last_request_at = 0.0;
    for s in 1..=400 {
        r.at = f64::from(s);
        r.alive(1, true);
        r.alive(3, true);
        let effects = r.tick_at(f64::from(s));
        for (p, id, _) in requests(&effects) {
            if p == 1 {
                assert!(
                    r.at - last_request_at >= 30.0,
                    "requests at {last_request_at} and {}",
                    r.at
                );
                last_request_at = r.at;
                ids.push(id);
            }
        }
    }
    assert_eq!(ids.len(), 4, "at 0, 120, 240, 360 s: {ids:?}");
    assert!(ids.windows(2).all(|w| w[1] > w[0]), "ids never repeat");
    // The old request's completion no longer counts.
    r.complete(1, first);
    assert!(!r.is_up(1));
    r.complete(1, *ids.last().expect("ids"));
    assert!(r.is_up(1));
}

#[test]
fn a_failed_request_is_retried_after_the_minimum_interval() {
    let mut r = Rig::new(&[]);
    let (id, _) = request_of(&r.connected(), 1);
    let (now, wall) = (r.now(), r.wall());
    r.m.request_failed(1, id, now, wall);
    assert_eq!(r.status(1).name(), "down");
    assert!(requests(&r.tick_at(29.0)).iter().all(|q| q.0 != 1));
    let (again, _) = request_of(&r.tick_at(30.0), 1);
    assert!(again > id);
}

#[test]
fn after_is_clamped_to_the_recovery_window_and_kept_across_restarts() {
    let window_ms = 600 * 60 * 1000; // LO: 600 minutes
    let old = T0_WALL - window_ms - 5_000;
    let recent = T0_WALL - 60_000;
    let mut r = Rig::new(&[
        ProducerRecord {
            product: 1,
            last_alive: Some(old),
            last_request_id: 7,
        },
        ProducerRecord {
            product: 3,
            last_alive: Some(recent),
            last_request_id: u64::MAX / 2,
        },
    ]);
    let effects = r.connected();
    let (id1, after1) = request_of(&effects, 1);
    let (_, after3) = request_of(&effects, 3);
    assert_eq!(after1, Some(T0_WALL - window_ms), "clamped to the window");
    assert_eq!(after3, Some(recent), "inside the window: as kept");
    assert!(id1 > u64::MAX / 2, "request ids continue above every kept one");
    let persisted: Vec<&ProducerRecord> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist(p) => Some(p),
            _ => None,
        })
        .collect();
    assert!(persisted.iter().any(|p| p.product == 1 && p.last_request_id >= id1));
}

#[test]
fn a_new_trigger_during_a_recovery_abandons_it() {
    let mut r = Rig::new(&[]);
    let (first, _) = request_of(&r.connected(), 1);
    r.at = 31.0;
    let effects = r.alive(1, false);
    let (second, _) = request_of(&effects, 1);
    assert!(second > first);
    r.complete(1, first);
    assert!(!r.is_up(1), "the abandoned request does not count");
    r.complete(1, second);
    assert!(r.is_up(1));
}

#[test]
fn the_board_and_the_lag_watch() {
    let mut r = Rig::new(&[]);
    r.up();
    r.at = 40.0;
    r.alive(1, false);
    let board = Board::from_machine(&r.m);
    assert!(board.is_down(1) && !board.is_down(3));
    assert_eq!(board.reason(1), Some(Reason::Unsubscribed));
    assert_eq!(board.selected, (1 << 1) | (1 << 3));
    let v = &board.views[0];
    assert_eq!((v.id, v.state), (1, "recovering"));
    assert!(v.request_id.is_some());

    let mut lag = LagWatch::default();
    let limit = Duration::from_secs(20);
    assert_eq!(lag.observe(1, T0_WALL, T0_WALL + 1_000, limit), None);
    assert_eq!(lag.observe(1, T0_WALL, T0_WALL + 20_001, limit), Some(true));
    assert_eq!(lag.observe(1, T0_WALL, T0_WALL + 30_000, limit), None, "reported once");
    assert_eq!(lag.observe(3, T0_WALL, T0_WALL + 1_000, limit), None, "per producer");
    assert_eq!(lag.observe(1, T0_WALL + 29_000, T0_WALL + 30_000, limit), Some(false));
    assert_eq!(
        lag.observe(1, T0_WALL + 99_000, T0_WALL, limit),
        None,
        "ahead of our clock is not late"
    );
}

#[test]
fn silence_during_a_recovery_gives_it_up_and_waits_for_the_producer() {
    let mut r = Rig::new(&[]);
    // Requests at 0 s; alives stop before the recovery completes.
    let (first, _) = request_of(&r.connected(), 1);
    // Given up only after a whole alive timeout since the request...
    assert!(
        r.tick_at(19.0)
            .iter()
            .all(|e| !matches!(e, Effect::Changed { product: 1, .. }))
    );
    r.tick_at(20.0);
    assert_eq!(reason(r.status(1)), Some(Reason::AliveTimeout));
    // ...and not asked again while silent.
    assert!(requests(&r.tick_at(60.0)).iter().all(|q| q.0 != 1));
    r.at = 61.0;
    let (second, _) = request_of(&r.alive(1, true), 1);
    assert!(second > first);
    r.complete(1, second);
    assert!(r.is_up(1));
}

/// Cluster: a node with no feed of its own follows the feed node's
/// request (its completion brings it up) and asks nothing itself.
#[test]
fn a_deferring_node_follows_another_nodes_request_and_asks_nothing() {
    let mut r = Rig::deferring();
    // Long after start: the grace runs from the feed connection, before
    // which nobody could ask.
    r.at = 10.0;
    assert!(
        requests(&r.connected()).is_empty(),
        "deferred: the feed node asks first"
    );
    // The feed node's request for 1 arrives: followed (recovering).
    let (now, wall) = (r.now(), r.wall());
    let theirs = T0_WALL as u64 + 500;
    r.m.adopt(1, theirs, None, now, wall);
    assert_eq!(r.status(1).name(), "recovering");
    assert!(requests(&r.tick_at(11.0)).is_empty(), "within the grace: nothing asked");
    r.complete(1, theirs);
    assert!(r.is_up(1), "brought up by the request it followed");
    // 3 heard of no request: past the grace, the node asks itself, with an
    // id above the one it followed.
    let (id3, _) = request_of(&r.tick_at(12.5), 3);
    assert!(id3 > theirs, "ids continue above the adopted one");
    // The same announcement heard twice changes nothing.
    let (now, wall) = (r.now(), r.wall());
    assert!(r.m.adopt(3, id3, None, now, wall).is_empty());
}

/// Cluster: a request another node made for a producer this node still has
/// up takes it down (`recovery`) until that recovery completes; a
/// completion of any other request does not bring it up.
#[test]
fn a_request_adopted_while_up_takes_the_producer_down_until_it_completes() {
    let mut r = Rig::new(&[]);
    r.up();
    r.at = 5.0;
    let (now, wall) = (r.now(), r.wall());
    let theirs = T0_WALL as u64 + 9_000;
    let effects = r.m.adopt(1, theirs, Some(wall - 1_000), now, wall);
    assert!(requests(&effects).is_empty(), "adopting asks nothing");
    assert_eq!(reason(r.status(1)), Some(Reason::Recovery));
    assert_eq!(r.status(1).name(), "recovering");
    assert!(r.is_up(3), "another producer is untouched");
    r.complete(1, theirs - 1);
    assert!(!r.is_up(1), "not the request in flight");
    r.complete(1, theirs);
    assert!(r.is_up(1));
}

/// Cluster: a node with a feed connection of its own asks at once, and
/// keeps its request in flight when another node's is announced (each
/// waits for its own completion, not the other's).
#[test]
fn a_node_with_its_own_feed_asks_at_once_and_keeps_its_request() {
    let mut r = Rig::deferring();
    let (now, wall) = (r.now(), r.wall());
    r.m.local_feed(true, now, wall);
    let (mine, _) = request_of(&r.connected(), 1);
    let (now, wall) = (r.now(), r.wall());
    assert!(r.m.adopt(1, mine + 7, None, now, wall).is_empty(), "kept its own");
    r.complete(1, mine);
    assert!(r.is_up(1), "brought up by its own request's completion");
}
