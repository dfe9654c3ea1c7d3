//! Producers: who is sending the odds, whether what they said can still be
//! trusted, and getting them back after an outage.
//!
//! A feed carries several producers (`product` on every message: 1 live
//! odds, 3 pre-match, ...). Whatever a producer said is stale the moment it
//! may have gone quiet, so every producer has a state ([`machine`]): it
//! starts down, goes down on a missed `alive`, `subscribed="0"`, a lost feed
//! connection or a lagging feed, and comes back only through a recovery it
//! asked the provider for ([`crate::provider_api`]) and saw completed. One task owns
//! the machine ([`service`]); it publishes a [`Board`] that every match
//! worker watches (bets on a down producer's markets are refused, its
//! matches' subscribers told) and `GET /api/producers` shows. [`table`] is
//! the producer table. [`LagWatch`] is the feed reader's half of the lag
//! check: it reports only when a producer crosses the limit.

pub mod machine;
mod service;
pub mod status;
pub mod table;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

pub use service::{Config, Input, Producers, start};
pub use status::{Reason, Status, Timing};
pub use table::{Producer, Table, TableError};

/// The bit of `product` in a producer set (`0` for ids beyond the table's
/// limit, which are never selected).
pub fn bit(product: u32) -> u64 {
    if product <= table::MAX_PRODUCER_ID {
        1 << product
    } else {
        0
    }
}

/// The producers in a set, lowest id first.
pub fn ids(set: u64) -> impl Iterator<Item = u32> {
    (0..=table::MAX_PRODUCER_ID).filter(move |p| set & (1 << p) != 0)
}

/// One producer as the API shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct View {
    pub id: u32,
    pub name: String,
    /// `up`, `down`, `recovering` or `delayed`.
    pub state: &'static str,
    pub reason: Option<Reason>,
    /// Unix ms of the last change of state.
    pub since: i64,
    /// Feed timestamp of the last `alive`.
    pub last_alive: Option<i64>,
    /// Feed timestamp of the last `alive` while up: the next recovery's `after`.
    pub recovery_after: Option<i64>,
    /// The recovery in flight.
    pub request_id: Option<u64>,
    pub last_recovery_seconds: Option<f64>,
}

/// Every selected producer's state, as published to workers and the API.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Board {
    /// Producers not up.
    pub down: u64,
    pub selected: u64,
    pub views: Arc<[View]>,
}

impl Board {
    pub fn is_down(&self, product: u32) -> bool {
        self.down & bit(product) != 0
    }

    /// Why `product` is down.
    pub fn reason(&self, product: u32) -> Option<Reason> {
        self.views.iter().find(|v| v.id == product).and_then(|v| v.reason)
    }

    fn from_machine(m: &machine::Machine) -> Board {
        let mut board = Board::default();
        let views: Vec<View> = m
            .producers()
            .iter()
            .map(|t| {
                let id = t.producer.id;
                board.selected |= bit(id);
                let (reason, request_id) = match t.status {
                    Status::Up => (None, None),
                    Status::Down { reason, request } => {
                        board.down |= bit(id);
                        (Some(reason), request.map(|r| r.id))
                    }
                };
                View {
                    id,
                    name: t.producer.name.clone(),
                    state: t.status.name(),
                    reason,
                    since: t.since,
                    last_alive: t.last_alive,
                    recovery_after: t.last_alive_up,
                    request_id,
                    last_recovery_seconds: t.last_recovery.map(|d| d.as_secs_f64()),
                }
            })
            .collect();
        board.views = views.into();
        board
    }
}

/// The feed reader's lag check, per connection: whether each producer's
/// messages lag the wall clock by more than the limit, reported only when
/// that changes.
#[derive(Debug, Default)]
pub struct LagWatch {
    over: u64,
}

impl LagWatch {
    /// A message of `product` generated at `timestamp` (Unix ms) read at
    /// `wall_ms`: `Some(over)` when the producer crossed the limit.
    pub fn observe(&mut self, product: u32, timestamp: i64, wall_ms: i64, limit: Duration) -> Option<bool> {
        let over = wall_ms.saturating_sub(timestamp) > limit.as_millis() as i64;
        let b = bit(product);
        if (self.over & b != 0) == over {
            return None;
        }
        self.over ^= b;
        Some(over)
    }
}

/// Unix ms now.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
