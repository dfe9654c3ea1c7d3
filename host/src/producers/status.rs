//! The vocabulary of the producer machine ([`super::machine`]): why a
//! producer is down ([`Reason`]), its state ([`Status`]), a recovery in
//! flight ([`Request`]), the timers ([`Timing`]) and what the machine asks
//! its owner to do ([`Effect`]).

use std::time::{Duration, Instant};

use crate::journal::ProducerRecord;

/// Why a producer is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Not yet recovered since this process started.
    Startup,
    /// No `alive` within `--alive-timeout`.
    AliveTimeout,
    /// `alive subscribed="0"`: the provider dropped our subscription.
    Unsubscribed,
    /// The feed connection closed.
    ConnectionLost,
    /// Messages' generation time lags the wall clock by more than
    /// `--max-feed-delay`.
    Delayed,
    /// In a cluster: another node asked the provider for a recovery while
    /// this one still had the producer up (it saw an outage this one did
    /// not): down until that recovery completes.
    Recovery,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::Startup => "startup",
            Reason::AliveTimeout => "alive_timeout",
            Reason::Unsubscribed => "unsubscribed",
            Reason::ConnectionLost => "connection_lost",
            Reason::Delayed => "delayed",
            Reason::Recovery => "recovery",
        }
    }
}

/// Timers and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub alive_timeout: Duration,
    /// `None`: the lag is not watched.
    pub max_feed_delay: Option<Duration>,
    pub recovery_min_interval: Duration,
    pub recovery_timeout: Duration,
}

/// A recovery asked of the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    /// Unix ms the recovery starts from; `None`: full recovery.
    pub after: Option<i64>,
    pub sent: Instant,
}

/// A producer's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Up,
    /// Down; `request` is the recovery in flight, if any.
    Down {
        reason: Reason,
        request: Option<Request>,
    },
}

impl Status {
    pub fn is_up(&self) -> bool {
        matches!(self, Status::Up)
    }

    /// `up`, `delayed`, `recovering` (a request in flight) or `down`.
    pub fn name(&self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Down {
                reason: Reason::Delayed,
                ..
            } => "delayed",
            Status::Down { request: Some(_), .. } => "recovering",
            Status::Down { request: None, .. } => "down",
        }
    }
}

/// What the machine tells its owner to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A producer changed state (publish it, log it, count it).
    Changed { product: u32, from: Status, to: Status },
    /// Ask the provider for a recovery (the request is already the
    /// producer's current one).
    Request {
        product: u32,
        name: String,
        request_id: u64,
        after: Option<i64>,
    },
    /// A recovery completed after this long (request to snapshot_complete).
    Recovered {
        product: u32,
        request_id: u64,
        took: Duration,
    },
    /// Keep what a restart needs to ask for the right window.
    Persist(ProducerRecord),
    /// A `snapshot_complete` that changed nothing, and why.
    Ignored {
        product: u32,
        request_id: Option<u64>,
        why: &'static str,
    },
}
