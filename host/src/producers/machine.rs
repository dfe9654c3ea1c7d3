//! The producer state machine: one per deployment, owning every selected
//! producer's state. Sans-IO: inputs carry the time (`Instant` for timers,
//! Unix ms for the feed's clock), outputs are [`Effect`]s the owner task
//! carries out (publish, log, persist, ask the provider for a recovery).
//!
//! ```text
//!              alive timeout / subscribed="0" / connection lost
//!   ┌────┐ ───────────────────────────────────────────────▶ ┌──────┐  request sent   ┌────────────┐
//!   │ up │                                                   │ down │ ──────────────▶ │ recovering │
//!   └────┘ ◀── snapshot_complete(product, current request) ─ └──────┘ ◀── timeout ─── └────────────┘
//!     │  ▲                                                  (every producer starts here: `startup`)
//!     │  └── lag back under --max-feed-delay (no recovery) ──┐
//!     └── lag over --max-feed-delay ─────────────────▶ down(`delayed`)
//! ```
//!
//! Invariants: a producer is up only after a `snapshot_complete` carrying
//! its product and the id of its current request (or, for `delayed`, the
//! lag ending); an `alive` or fresh odds never bring it back. At most one
//! request per producer per `recovery_min_interval`; none while no feed
//! connection is up (the answer could not arrive).
//!
//! In a cluster one node asks for a recovery and the others follow it
//! ([`Machine::adopt`]: the request id its announcement names becomes
//! theirs, so its `snapshot_complete` brings every node up). A node with
//! no feed connection of its own ([`Machine::local_feed`]) defers
//! ([`Machine::deferring`]): it asks itself only if no request was adopted
//! within the grace after going down, so an outage costs one request, not
//! one per node, and a lost announcement costs only the grace. A request
//! in flight is never replaced by an announced one (two nodes asking at
//! once would otherwise each follow the other's and wait for the wrong
//! completion).

use std::time::{Duration, Instant};

pub use super::status::{Effect, Reason, Request, Status, Timing};
use super::table::Producer;
use crate::journal::ProducerRecord;

/// One producer's state and what it is remembered by.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub producer: Producer,
    pub status: Status,
    /// When the status last changed (Unix ms).
    pub since: i64,
    /// Feed timestamp of the last alive received while up: a recovery's `after`.
    pub last_alive_up: Option<i64>,
    /// Feed timestamp of the last alive received in any state.
    pub last_alive: Option<i64>,
    /// When the last alive arrived (local clock).
    alive_at: Instant,
    /// When the producer last went down, or its reason changed.
    down_at: Instant,
    /// When the last request was sent (for the minimum interval).
    last_request: Option<Instant>,
    /// Whether messages currently lag beyond the limit.
    lagging: bool,
    pub last_recovery: Option<Duration>,
}

/// Every selected producer's state.
#[derive(Debug)]
pub struct Machine {
    timing: Timing,
    producers: Vec<Tracked>,
    next_request_id: u64,
    connections: usize,
    /// Wait this long after going down for another node's request before
    /// asking, while this node has no feed connection of its own (`None`:
    /// ask at once).
    defer: Option<Duration>,
    /// This node's own feed connections (in a cluster `connections` counts
    /// every node's).
    local_feeds: usize,
    /// When a feed connection (anyone's) last came up from none: the grace
    /// runs from it too (a request was impossible before).
    connected_at: Option<Instant>,
}

impl Machine {
    /// Every producer down (`startup`); `saved` is what an earlier run
    /// kept; request ids continue above both it and `wall_ms` (so they
    /// never repeat, even when a save was lost).
    pub fn new(
        producers: Vec<Producer>,
        saved: &[ProducerRecord],
        timing: Timing,
        now: Instant,
        wall_ms: i64,
    ) -> Machine {
        let last_id = saved.iter().map(|s| s.last_request_id).max().unwrap_or(0);
        let producers = producers
            .into_iter()
            .map(|producer| {
                let kept = saved.iter().find(|s| s.product == producer.id);
                Tracked {
                    status: Status::Down {
                        reason: Reason::Startup,
                        request: None,
                    },
                    since: wall_ms,
                    last_alive_up: kept.and_then(|s| s.last_alive),
                    last_alive: None,
                    alive_at: now,
                    down_at: now,
                    last_request: None,
                    lagging: false,
                    last_recovery: None,
                    producer,
                }
            })
            .collect();
        Machine {
            timing,
            producers,
            next_request_id: (last_id + 1).max(wall_ms.max(0) as u64),
            connections: 0,
            defer: None,
            local_feeds: 0,
            connected_at: None,
        }
    }

    /// In a cluster: this node's own feed connection opened or closed.
    pub fn local_feed(&mut self, connected: bool, now: Instant, wall_ms: i64) -> Vec<Effect> {
        if connected {
            self.local_feeds += 1;
        } else {
            self.local_feeds = self.local_feeds.saturating_sub(1);
        }
        let mut out = Vec::new();
        self.request_due(now, wall_ms, &mut out);
        out
    }

    /// Ask for a recovery only if no other node's request was adopted
    /// within `grace` of going down.
    pub fn deferring(mut self, grace: Duration) -> Machine {
        self.defer = Some(grace);
        self
    }

    /// Another node asked the provider for recovery `request_id` of
    /// `product` (from `after`): follow it. A producer that is down with no
    /// request in flight takes it as its own (its `snapshot_complete`
    /// brings it up); one that is up or delayed goes down (`recovery`) with
    /// it: the requester saw an outage, and the odds are not current until
    /// the recovery completes. One with a request in flight keeps it.
    /// Request ids continue above it.
    pub fn adopt(
        &mut self,
        product: u32,
        request_id: u64,
        after: Option<i64>,
        now: Instant,
        wall_ms: i64,
    ) -> Vec<Effect> {
        self.next_request_id = self.next_request_id.max(request_id + 1);
        let mut out = Vec::new();
        let Some(i) = self.index(product) else {
            return out;
        };
        let reason = match self.producers[i].status {
            Status::Down { request: Some(_), .. } => return out,
            Status::Down { reason, .. } if reason != Reason::Delayed => reason,
            _ => Reason::Recovery,
        };
        self.producers[i].last_request = Some(now);
        let request = Request {
            id: request_id,
            after,
            sent: now,
        };
        self.set(
            i,
            Status::Down {
                reason,
                request: Some(request),
            },
            now,
            wall_ms,
            &mut out,
        );
        out.push(Effect::Persist(self.saved(i)));
        out
    }

    pub fn producers(&self) -> &[Tracked] {
        &self.producers
    }

    pub fn is_selected(&self, product: u32) -> bool {
        self.index(product).is_some()
    }

    fn index(&self, product: u32) -> Option<usize> {
        self.producers.iter().position(|t| t.producer.id == product)
    }

    /// An `alive` message.
    pub fn alive(&mut self, product: u32, timestamp: i64, subscribed: bool, now: Instant, wall_ms: i64) -> Vec<Effect> {
        let Some(i) = self.index(product) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let t = &mut self.producers[i];
        t.alive_at = now;
        t.last_alive = Some(timestamp);
        if !subscribed {
            self.down(i, Reason::Unsubscribed, now, wall_ms, &mut out);
        } else if self.producers[i].status.is_up() {
            self.producers[i].last_alive_up = Some(timestamp);
            out.push(Effect::Persist(self.saved(i)));
        }
        self.request_due(now, wall_ms, &mut out);
        out
    }

    /// Messages of `product` started or stopped lagging beyond the limit.
    pub fn lag(&mut self, product: u32, over: bool, now: Instant, wall_ms: i64) -> Vec<Effect> {
        let Some(i) = self.index(product) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        self.producers[i].lagging = over;
        match self.producers[i].status {
            Status::Up if over => self.down(i, Reason::Delayed, now, wall_ms, &mut out),
            Status::Down {
                reason: Reason::Delayed,
                ..
            } if !over => self.set(i, Status::Up, now, wall_ms, &mut out),
            _ => {}
        }
        out
    }

    /// A `snapshot_complete`: up only for the current request of that product.
    pub fn snapshot_complete(
        &mut self,
        product: u32,
        request_id: Option<u64>,
        now: Instant,
        wall_ms: i64,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        let Some(i) = self.index(product) else {
            return vec![Effect::Ignored {
                product,
                request_id,
                why: "producer not selected",
            }];
        };
        let current = match self.producers[i].status {
            Status::Down {
                request: Some(r),
                reason,
            } if reason != Reason::Delayed => r,
            _ => {
                out.push(Effect::Ignored {
                    product,
                    request_id,
                    why: "no recovery in flight",
                });
                return out;
            }
        };
        if request_id != Some(current.id) {
            out.push(Effect::Ignored {
                product,
                request_id,
                why: "not the current request",
            });
            return out;
        }
        let took = now.saturating_duration_since(current.sent);
        self.producers[i].last_recovery = Some(took);
        out.push(Effect::Recovered {
            product,
            request_id: current.id,
            took,
        });
        if self.producers[i].lagging {
            // Recovered, but what follows is still late.
            self.set(
                i,
                Status::Down {
                    reason: Reason::Delayed,
                    request: None,
                },
                now,
                wall_ms,
                &mut out,
            );
        } else {
            self.set(i, Status::Up, now, wall_ms, &mut out);
        }
        out
    }

    /// A feed connection opened.
    pub fn connected(&mut self, now: Instant, wall_ms: i64) -> Vec<Effect> {
        if self.connections == 0 {
            self.connected_at = Some(now);
        }
        self.connections += 1;
        let mut out = Vec::new();
        self.request_due(now, wall_ms, &mut out);
        out
    }

    /// A feed connection closed: whatever any producer said may be stale.
    pub fn connection_lost(&mut self, now: Instant, wall_ms: i64) -> Vec<Effect> {
        self.connections = self.connections.saturating_sub(1);
        let mut out = Vec::new();
        for i in 0..self.producers.len() {
            // Lag is a property of a connection's messages: forget it.
            self.producers[i].lagging = false;
            self.down(i, Reason::ConnectionLost, now, wall_ms, &mut out);
        }
        self.request_due(now, wall_ms, &mut out);
        out
    }

    /// The provider refused or did not answer a request: ask again once
    /// the minimum interval has passed.
    pub fn request_failed(&mut self, product: u32, request_id: u64, now: Instant, wall_ms: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        if let Some(i) = self.index(product)
            && let Status::Down {
                reason,
                request: Some(r),
            } = self.producers[i].status
            && r.id == request_id
        {
            self.set(i, Status::Down { reason, request: None }, now, wall_ms, &mut out);
        }
        out
    }

    /// Time passed: alive timeouts, recovery timeouts, requests due.
    pub fn tick(&mut self, now: Instant, wall_ms: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        for i in 0..self.producers.len() {
            let t = &self.producers[i];
            let silent = now.saturating_duration_since(t.alive_at) >= self.timing.alive_timeout;
            match t.status {
                Status::Up if silent => self.down(i, Reason::AliveTimeout, now, wall_ms, &mut out),
                Status::Down {
                    reason: Reason::Delayed,
                    ..
                } if silent => self.down(i, Reason::AliveTimeout, now, wall_ms, &mut out),
                Status::Down {
                    reason,
                    request: Some(r),
                } => {
                    // Quiet for the whole timeout since the request went out.
                    let quiet_since = t.alive_at.max(r.sent);
                    if now.saturating_duration_since(r.sent) >= self.timing.recovery_timeout {
                        // No snapshot_complete in time: ask again.
                        self.set(i, Status::Down { reason, request: None }, now, wall_ms, &mut out);
                    } else if now.saturating_duration_since(quiet_since) >= self.timing.alive_timeout
                        && self.connections > 0
                    {
                        // The producer went quiet during its recovery.
                        self.down(i, Reason::AliveTimeout, now, wall_ms, &mut out);
                    }
                }
                _ => {}
            }
        }
        self.request_due(now, wall_ms, &mut out);
        out
    }

    /// When the next timer is due (for the owner's sleep).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.producers
            .iter()
            .filter_map(|t| match t.status {
                Status::Up => Some(t.alive_at + self.timing.alive_timeout),
                Status::Down { request: Some(r), .. } => Some(
                    (r.sent + self.timing.recovery_timeout).min(t.alive_at.max(r.sent) + self.timing.alive_timeout),
                ),
                Status::Down {
                    reason: Reason::Delayed,
                    ..
                } => Some(t.alive_at + self.timing.alive_timeout),
                Status::Down { request: None, .. } => t.last_request.map(|at| at + self.timing.recovery_min_interval),
            })
            .min()
    }

    /// Mark producer `i` down for `reason` (a new trigger while down
    /// replaces the reason and abandons the request in flight).
    fn down(&mut self, i: usize, reason: Reason, now: Instant, wall_ms: i64, out: &mut Vec<Effect>) {
        let to = Status::Down { reason, request: None };
        if self.producers[i].status != to {
            self.set(i, to, now, wall_ms, out);
        }
    }

    fn set(&mut self, i: usize, to: Status, now: Instant, wall_ms: i64, out: &mut Vec<Effect>) {
        let t = &mut self.producers[i];
        let from = t.status;
        t.status = to;
        if from.is_up() != to.is_up() || from.name() != to.name() {
            t.since = wall_ms;
        }
        if let Status::Down { reason, .. } = to
            && (from.is_up() || !matches!(from, Status::Down { reason: r, .. } if r == reason))
        {
            t.down_at = now;
        }
        out.push(Effect::Changed {
            product: t.producer.id,
            from,
            to,
        });
    }

    /// Send the requests that are due: producers down (not `delayed`; if
    /// silent, heard from again) with none in flight, whose last request is
    /// at least the minimum interval old, while a feed connection is up.
    fn request_due(&mut self, now: Instant, wall_ms: i64, out: &mut Vec<Effect>) {
        if self.connections == 0 {
            return;
        }
        for i in 0..self.producers.len() {
            let t = &self.producers[i];
            let Status::Down { reason, request: None } = t.status else {
                continue;
            };
            if reason == Reason::Delayed {
                continue;
            }
            // A producer that went silent is asked once it speaks again
            // (an alive after it went down): asking a silent one is futile.
            if reason == Reason::AliveTimeout && t.alive_at <= t.down_at {
                continue;
            }
            if t.last_request
                .is_some_and(|at| now.saturating_duration_since(at) < self.timing.recovery_min_interval)
            {
                continue;
            }
            let since = self.connected_at.map_or(t.down_at, |c| c.max(t.down_at));
            if self.local_feeds == 0
                && self
                    .defer
                    .is_some_and(|grace| now.saturating_duration_since(since) < grace)
            {
                // Another node's request is expected first.
                continue;
            }
            let window = t.producer.recovery_window.as_millis() as i64;
            let after = t.last_alive_up.map(|ms| ms.max(wall_ms - window));
            let id = self.next_request_id;
            self.next_request_id += 1;
            let request = Request { id, after, sent: now };
            let t = &mut self.producers[i];
            t.last_request = Some(now);
            let name = t.producer.name.clone();
            let product = t.producer.id;
            self.set(
                i,
                Status::Down {
                    reason,
                    request: Some(request),
                },
                now,
                wall_ms,
                out,
            );
            out.push(Effect::Persist(self.saved(i)));
            out.push(Effect::Request {
                product,
                name,
                request_id: id,
                after,
            });
        }
    }

    fn saved(&self, i: usize) -> ProducerRecord {
        let t = &self.producers[i];
        ProducerRecord {
            product: t.producer.id,
            last_alive: t.last_alive_up,
            last_request_id: self.next_request_id - 1,
        }
    }
}
