//! What the journal keeps, as plain data: the records every implementation
//! stores and hands back to a recovering worker.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Per-match durable record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchMeta {
    /// Stream epoch: same while the host can prove continuity.
    pub epoch: u64,
    /// `Some(seq)`: durably nothing beyond `seq` was ever pushed to clients.
    /// Cleared (durably) before the first push after it.
    pub clean_seq: Option<u64>,
    /// Why the match is quarantined, if it is.
    pub quarantined: Option<String>,
    /// Content hash of the guest version the match runs. A restart keeps a
    /// match on it when it differs from the active version (its switch or
    /// first event failed there); `None` in records from before hot swap.
    pub guest: Option<String>,
}

/// An installed guest component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestRecord {
    #[serde(with = "serde_bytes")]
    pub component: Vec<u8>,
    /// Unix ms.
    pub installed_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub seq: u64,
    pub epoch: u64,
    /// Guest state (`save-state` bytes)...
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
    /// ...saved by this guest version (content hash)...
    pub guest: String,
    /// ...whose `state-version` is this.
    pub state_version: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The applied event, encoded.
    #[serde(with = "serde_bytes")]
    pub event: Vec<u8>,
    /// Empty: entries written before the frames were regenerated (issue
    /// 14) carry the update frame sent, which nothing reads any more. Kept
    /// so both read the same way.
    pub frame: String,
}

/// A snapshot and the events after it: what rebuilding a match's state at
/// any seq from the snapshot's up to the last event's takes.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// `None`: the match had no snapshot yet, the events start at seq 1.
    pub base: Option<SnapshotRecord>,
    /// The events after the base, in seq order, contiguous.
    pub events: Vec<Vec<u8>>,
}

impl History {
    /// The seq the base stands at (0: before the first event).
    pub fn base_seq(&self) -> u64 {
        self.base.as_ref().map_or(0, |b| b.seq)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    #[serde(with = "serde_bytes")]
    pub event: Vec<u8>,
    pub reason: String,
    /// Seq of the last event applied before this one arrived.
    pub after_seq: u64,
}

/// A bet and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BetRecord {
    pub match_id: String,
    pub request: touchline_guest::bet::BetRequest,
    /// `Ok(accepted odds)` or `Err(reason code)`.
    pub decision: Result<f64, String>,
    /// Seq and epoch of the match state the decision saw.
    pub seq: u64,
    pub epoch: u64,
    /// Unix ms of the decision.
    pub decided_at: i64,
    /// Settled, voided or (after a rollback) open again; `None` until the
    /// market is first settled or cancelled.
    pub settlement: Option<touchline_guest::bet::Settlement>,
}

/// What a restart needs to ask a producer for the right recovery window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerRecord {
    pub product: u32,
    /// Feed timestamp (Unix ms) of the last `alive` received while the
    /// producer was up: the next recovery's `after`.
    pub last_alive: Option<i64>,
    /// The last recovery request id used (ids never repeat).
    pub last_request_id: u64,
}

/// Everything kept for one match, for recovery.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub match_id: Arc<str>,
    pub meta: MatchMeta,
    pub snapshot: Option<SnapshotRecord>,
    /// Journal entries after the snapshot, in seq order.
    pub journal: Vec<(u64, JournalEntry)>,
    /// Accepted bets on this match.
    pub bets: Vec<BetRecord>,
}
