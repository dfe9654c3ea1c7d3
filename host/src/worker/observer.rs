//! What a worker tells the layers above it, without depending on them.
//!
//! The worker sits below the guest registry and the bet desk; it reports
//! through this trait, which it defines and they implement (`lib.rs` joins
//! `guests::Placement` and `bets::Owners` into one observer). Calls are
//! cheap and never block: they run on the worker's task between commands.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::journal::{BetRecord, SnapshotRecord};

/// How a probation (the first event after a switch) went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbationNews {
    /// Switched with probation: the next event decides.
    Started,
    /// Passed its first event, or the probation was cut short (another
    /// switch, the worker stopped).
    Ended,
    /// Failed: back on the old version, for this reason.
    Failed(String),
}

pub trait Observer: Send + Sync {
    /// `match_id` runs guest `version` from now on.
    fn runs(&self, match_id: &Arc<str>, version: Arc<str>);
    /// The worker stopped (its mailbox closed).
    fn stopped(&self, match_id: &str);
    fn probation(&self, match_id: &Arc<str>, news: ProbationNews);
    /// `match_id` sleeps (hibernated, told between commands) or woke (told
    /// as the wake begins): a rollout passes a sleeping match by, and it
    /// takes the version as it wakes.
    fn sleeps(&self, match_id: &Arc<str>, asleep: bool);
    /// An accepted bet's standing changed (settled, voided, reopened); the
    /// record is already durable (or its write failed and was logged).
    fn bet_changed(&self, record: &BetRecord);
}

/// Where a cluster records bets (JetStream, `bets::cluster`) in place of
/// the node's journal: a decision outlives the node that made it.
pub trait BetLog: Send + Sync {
    /// Record a decision unless one is recorded already for its id.
    /// `Ok(None)`: recorded; `Ok(Some(stored))`: that one stands; `Err`:
    /// not recorded (the bet does not stand).
    fn decided(&self, record: BetRecord) -> BoxFuture<'static, Result<Option<BetRecord>, String>>;
    /// Record an accepted bet's new standing (every node tells the bet's
    /// owner from the record).
    fn changed(&self, record: BetRecord) -> BoxFuture<'static, Result<(), String>>;
}

/// Where a cluster keeps each match's snapshots (JetStream,
/// `feed::snapshots`) in place of the node's journal: a new owner restores
/// from the last one and replays only the events after it.
pub trait SnapshotSink: Send + Sync {
    /// The match's state at `seq`, after the event at `position` (its
    /// `TL_EVENTS` sequence): `record` is called only if the sink keeps
    /// this one (most are skipped: the cluster's cadence is sparser than
    /// the worker's), so a skipped snapshot copies nothing. Never blocks
    /// the worker.
    fn snapshot(&self, match_id: &Arc<str>, seq: u64, position: u64, record: &dyn Fn() -> SnapshotRecord);
}

/// Tells nobody: for tests and tools that run workers alone.
#[derive(Debug, Default)]
pub struct Nobody;

impl Observer for Nobody {
    fn runs(&self, _: &Arc<str>, _: Arc<str>) {}
    fn stopped(&self, _: &str) {}
    fn probation(&self, _: &Arc<str>, _: ProbationNews) {}
    fn sleeps(&self, _: &Arc<str>, _: bool) {}
    fn bet_changed(&self, _: &BetRecord) {}
}
