//! The journal seam: every durable operation of a match worker, as a trait.
//!
//! A worker never touches a database. It appends the events it applied,
//! snapshots its state, writes its record (epoch, clean mark, quarantine,
//! version), parks dead letters and held events, records bets and waits on
//! barriers, all through [`Journal`]. The sled store
//! ([`crate::store::StoreHandle`]) is the production implementation, with
//! one writer task making group commits; [`memory::MemoryJournal`] keeps
//! everything in memory for unit tests (and can be told to fail); the
//! cluster's replicated log will be a third.
//!
//! The one promise every implementation keeps: a [`Durable`] resolves `Ok`
//! only when everything written before its barrier is durable. A write that
//! failed makes the next barrier of the same match (or the next global one)
//! resolve `Err`, so nothing waiting on it is confirmed.

pub mod memory;
pub mod records;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

pub use records::{
    BetRecord, DeadLetter, GuestRecord, History, JournalEntry, MatchMeta, ProducerRecord, Recovered, SnapshotRecord,
};

/// Why a journal operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error("the journal writer has stopped")]
    WriterGone,
    #[error("the journal write queue is full")]
    QueueFull,
    /// A write (or the flush covering it) failed: what was written before
    /// the barrier is not (all) durable.
    #[error("a journal write failed: {0}")]
    WriteFailed(String),
    #[error("reading the journal: {0}")]
    Read(String),
}

/// A write.
#[derive(Debug)]
pub enum Op {
    /// An applied event, shared with the worker and encoded by the journal
    /// as a [`JournalEntry`]. Its update frame is not kept: a resuming
    /// client's missed updates are regenerated from a snapshot and the
    /// events after it ([`Journal::history`]).
    Append {
        match_id: Arc<str>,
        seq: u64,
        event: bytes::Bytes,
    },
    Snapshot {
        match_id: Arc<str>,
        record: SnapshotRecord,
    },
    Meta {
        match_id: Arc<str>,
        meta: MatchMeta,
    },
    /// A poison event and, when the feed delivered it, its message as it
    /// arrived (`raw`: what the operator console shows).
    DeadLetter {
        match_id: Arc<str>,
        letter: DeadLetter,
        raw: Option<bytes::Bytes>,
    },
    /// An event that arrived while the match was quarantined, with its raw
    /// message as for a dead letter.
    Hold {
        match_id: Arc<str>,
        event: Vec<u8>,
        raw: Option<bytes::Bytes>,
    },
    /// Remove dead letters and held events of a match (after healing).
    ClearParked {
        match_id: Arc<str>,
    },
    /// Remove one dead letter (replayed by an operator), by its [`Kept::id`].
    RemoveDeadLetter {
        match_id: Arc<str>,
        id: u64,
    },
    Bet(Box<BetRecord>),
    /// Keep an installed guest component.
    PutGuest {
        hash: String,
        record: GuestRecord,
    },
    /// Forget an installed guest component.
    RemoveGuest {
        hash: String,
    },
    /// Which guest version is active, and which one a rollback returns to.
    ActiveGuest {
        active: String,
        previous: Option<String>,
    },
    /// What a restart needs to recover a producer (never blocks a match).
    Producer(ProducerRecord),
    /// A reference-data response kept for the next start (`markets.xml`...,
    /// a match's fixture under [`FIXTURE_PREFIX`]`{match id}`).
    Reference {
        key: String,
        text: String,
    },
    /// Acknowledged once everything sent before it is durable; `Err` if a
    /// write of `scope` (a match, or any write for `None`) failed since the
    /// last barrier that reported it.
    Barrier {
        scope: Option<Arc<str>>,
        ack: oneshot::Sender<Result<(), JournalError>>,
        /// Someone waits on it: commit at once. `false`: answered with the
        /// next group commit (no fsync of its own).
        urgent: bool,
    },
}

/// The barrier scope of the guest registry's writes (no match id can
/// start with a NUL).
pub const GUESTS_SCOPE: &str = "\0guests";

/// The barrier scope of the producer records and reference data.
pub const PRODUCERS_SCOPE: &str = "\0producers";

impl Op {
    /// The barrier scope a write belongs to: its match, [`GUESTS_SCOPE`]
    /// for the guest registry, `None` for a global barrier.
    pub fn scope(&self) -> Option<&str> {
        match self {
            Op::Append { match_id, .. }
            | Op::Snapshot { match_id, .. }
            | Op::Meta { match_id, .. }
            | Op::DeadLetter { match_id, .. }
            | Op::Hold { match_id, .. }
            | Op::ClearParked { match_id }
            | Op::RemoveDeadLetter { match_id, .. } => Some(match_id),
            Op::Bet(record) => Some(&record.match_id),
            Op::Barrier { scope, .. } => scope.as_deref(),
            Op::PutGuest { .. } | Op::RemoveGuest { .. } | Op::ActiveGuest { .. } => Some(GUESTS_SCOPE),
            Op::Producer(_) | Op::Reference { .. } => Some(PRODUCERS_SCOPE),
        }
    }
}

/// A barrier in the queue: resolves when what was written before it is
/// durable (or failed).
#[derive(Debug)]
pub struct Durable(oneshot::Receiver<Result<(), JournalError>>);

impl Durable {
    /// A barrier and the sender its journal acknowledges.
    pub fn pair() -> (oneshot::Sender<Result<(), JournalError>>, Durable) {
        let (tx, rx) = oneshot::channel();
        (tx, Durable(rx))
    }

    pub async fn wait(self) -> Result<(), JournalError> {
        self.0.await.unwrap_or(Err(JournalError::WriterGone))
    }

    /// [`Durable::wait`] without giving the barrier up: a `select!`
    /// branch that may be polled again.
    pub async fn done(&mut self) -> Result<(), JournalError> {
        (&mut self.0).await.unwrap_or(Err(JournalError::WriterGone))
    }
}

/// What a match parked: dead letters and events held while quarantined,
/// in the order they were parked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parked {
    pub dead_letters: Vec<Kept<DeadLetter>>,
    /// Encoded events.
    pub held: Vec<Kept<Vec<u8>>>,
}

/// One parked item.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept<T> {
    /// The store's name for it, stable while it is kept (a replay names it).
    pub id: u64,
    pub item: T,
    /// The feed message it came from, as it arrived (`None`: kept before
    /// raw messages were, or not from the feed).
    pub raw: Option<Vec<u8>>,
}

/// Prefix of the `Op::Reference` keys holding one match's fixture each
/// (read one at a time, never all at start).
pub const FIXTURE_PREFIX: &str = "fixture/";

/// Where a worker's durable operations go. Implementations order writes as
/// they are queued.
pub trait Journal: Send + Sync + std::fmt::Debug {
    /// Which start of this journal this is (1 for the first): the epoch of
    /// streams whose continuity cannot be proven, so no epoch is reused.
    fn start_no(&self) -> u64;

    /// Queue a write; waits only while the queue is full.
    fn write(&self, op: Op) -> BoxFuture<'_, Result<(), JournalError>>;

    /// Queue a write only if there is room right now.
    fn try_write(&self, op: Op) -> Result<(), JournalError>;

    /// Queue a barrier for `scope` (a match, or `None` for every write).
    fn barrier(&self, scope: Option<Arc<str>>) -> BoxFuture<'_, Result<Durable, JournalError>> {
        Box::pin(async move {
            let (ack, durable) = Durable::pair();
            self.write(Op::Barrier {
                scope,
                ack,
                urgent: true,
            })
            .await?;
            Ok(durable)
        })
    }

    /// What regenerating a match's updates after `at_or_before` up to `to`
    /// needs: the newest stored snapshot at or before `at_or_before` and
    /// every event after it up to `to`; `None` if any of it is no longer
    /// kept.
    fn history(&self, match_id: &str, at_or_before: u64, to: u64) -> Result<Option<History>, JournalError>;

    /// What a match parked (dead letters, held events), oldest first.
    fn parked(&self, match_id: &str) -> Result<Parked, JournalError>;

    /// The match's stored snapshot (a hibernated match that gave its copy
    /// back reads it when it wakes).
    fn stored_snapshot(&self, match_id: &str) -> Result<Option<SnapshotRecord>, JournalError>;

    /// A reference-data text kept under `key` (`Op::Reference`), if any.
    fn reference(&self, _key: &str) -> Result<Option<String>, JournalError> {
        Ok(None)
    }
}

/// Queue a barrier and wait for it.
pub async fn sync(journal: &dyn Journal, scope: Option<Arc<str>>) -> Result<(), JournalError> {
    journal.barrier(scope).await?.wait().await
}
