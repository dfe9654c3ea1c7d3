//! The store's write queue and its one writer (on a thread of its own,
//! [`spawn_writer`]: its commits block; tests run it as a task of their
//! own runtime): group commits, and
//! barriers that are acknowledged only for writes that really were made
//! durable.
//!
//! [`run_writer`] gathers ops for at most the commit interval (an urgent
//! barrier cuts the wait short: someone is waiting), applies the batch,
//! then flushes once for all of them, in its own thread. While it gathers
//! it sleeps, woken by the interval's end or an urgent barrier
//! ([`StoreHandle`] tells it), not by every op: ~120 wake-ups a second
//! instead of ~4,600 in the pipeline at 1,000 matches. A write sled refuses *taints* its
//! match: the next barrier of that match (or the next global barrier) is
//! answered `Err`, so a bet whose record was not written is never
//! confirmed. A failed flush answers every barrier of its batch `Err`.
//! Failures are logged at most once a second, with a count.
//!
//! **Disk full.** Before each batch the writer reads the data dir's free
//! space; under the reserve ([`super::health`]) it does not give sled the
//! batch but *holds* it, in order, and answers barriers `Err` (nothing is
//! durable now). New bet decisions are refused outright (dropped, their
//! match tainted): a bet answered `storage_unavailable` must never turn up
//! accepted later. Snapshots are dropped (the journal keeps every event).
//! Everything else — events and frames, marks, settlements of accepted
//! bets, parked events, producer records — waits, up to [`HELD_BYTES`];
//! past that the writer takes nothing more from the queue, so senders wait
//! (the feed reader in the end: backpressure, no loss). Every second it
//! looks again; once space is back it writes what it held, in order, and
//! carries on: the journal has no hole. Stopped while full, what was held
//! is not written: a restart then recovers what was durable and, the
//! matches not being durably clean, gives them a new epoch.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::{Notify, mpsc, oneshot};

use super::health::{Problem, StoreHealth, Throttle};
use super::{Store, StoreError};
use crate::journal::{History, Journal, JournalError, Op, Parked, SnapshotRecord};
use crate::metrics::Metrics;

/// Capacity of the write queue, in ops. Absorbs bursts and slow fsyncs;
/// when full, senders wait (the feed reader ultimately), never drop: a
/// write that was accepted is a promise. Depth is exported as a metric.
pub const WRITE_QUEUE: usize = 65_536;
/// Most ops applied in one group commit.
const MAX_BATCH: usize = 8192;
/// Ops held while the disk is full, in (approximate) bytes; past it the
/// writer stops taking ops from the queue.
pub const HELD_BYTES: usize = 64 << 20;
/// How often a full disk is looked at again.
const RECHECK: Duration = Duration::from_secs(1);

/// The sending end of the write queue; the journal the workers use.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Op>,
    /// Told after an urgent barrier is queued: the writer, gathering a
    /// batch, sleeps until the commit is due and is woken early only by
    /// this, not by every op ([`run_writer`]).
    urgent: Arc<Notify>,
    pub store: Store,
}

/// The receiving end of the write queue, for [`run_writer`].
#[derive(Debug)]
pub struct WriteQueue {
    ops: mpsc::Receiver<Op>,
    urgent: Arc<Notify>,
}

/// Create the queue; run [`run_writer`] with the receiver.
pub fn queue(store: Store) -> (StoreHandle, WriteQueue) {
    let (tx, ops) = mpsc::channel(WRITE_QUEUE);
    let urgent = Arc::new(Notify::new());
    (
        StoreHandle {
            tx,
            urgent: urgent.clone(),
            store,
        },
        WriteQueue { ops, urgent },
    )
}

impl StoreHandle {
    /// After `op` was queued: wake the writer if someone waits on it.
    fn queued(&self, urgent: bool) {
        if urgent {
            self.urgent.notify_one();
        }
    }
}

fn is_urgent(op: &Op) -> bool {
    matches!(op, Op::Barrier { urgent: true, .. })
}

impl Journal for StoreHandle {
    fn start_no(&self) -> u64 {
        self.store.start_no()
    }

    fn write(&self, op: Op) -> BoxFuture<'_, Result<(), JournalError>> {
        Box::pin(async move {
            let urgent = is_urgent(&op);
            self.tx.send(op).await.map_err(|_| JournalError::WriterGone)?;
            self.queued(urgent);
            Ok(())
        })
    }

    fn try_write(&self, op: Op) -> Result<(), JournalError> {
        let urgent = is_urgent(&op);
        self.tx.try_send(op).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => JournalError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => JournalError::WriterGone,
        })?;
        self.queued(urgent);
        Ok(())
    }

    fn history(&self, match_id: &str, at_or_before: u64, to: u64) -> Result<Option<History>, JournalError> {
        self.store.history(match_id, at_or_before, to).map_err(read_error)
    }

    fn stored_snapshot(&self, match_id: &str) -> Result<Option<SnapshotRecord>, JournalError> {
        self.store.snapshot(match_id).map_err(read_error)
    }

    fn parked(&self, match_id: &str) -> Result<Parked, JournalError> {
        Ok(Parked {
            dead_letters: self.store.dead_letters(match_id).map_err(read_error)?,
            held: self.store.held(match_id).map_err(read_error)?,
        })
    }

    fn reference(&self, key: &str) -> Result<Option<String>, JournalError> {
        self.store.reference_text(key).map_err(read_error)
    }
}

fn read_error(e: StoreError) -> JournalError {
    JournalError::Read(e.to_string())
}

/// What the writer writes to: the sled [`Store`] (tests wrap it to refuse
/// writes, the way a failing disk would).
pub trait Sink: Send + Sync + 'static {
    fn apply(&self, op: Op) -> Result<(), StoreError>;
    /// Make everything applied so far durable, blocking the calling thread
    /// (the writer's own: [`spawn_writer`]).
    fn flush(&self) -> Result<(), StoreError>;
    fn health(&self) -> &StoreHealth;
    /// Copy a sparse segment of the value log forward, if there is one
    /// (right after a flush): the segment and how many values moved.
    fn compact(&self) -> Result<Option<(u32, usize)>, StoreError> {
        Ok(None)
    }
    /// The value log's bytes on disk and bytes pointed at.
    fn value_usage(&self) -> (u64, u64) {
        (0, 0)
    }
}

impl Sink for Store {
    fn apply(&self, op: Op) -> Result<(), StoreError> {
        Store::apply(self, op)
    }

    /// sled's `flush`, in the calling thread. Its `flush_async` would hand
    /// the flush to sled's thread pool, and every hand-off there wakes all
    /// of the pool's idle threads (seven) to take one job: a second such
    /// hand-off per commit, on top of the one that writes the log buffer.
    fn flush(&self) -> Result<(), StoreError> {
        Store::flush(self)
    }

    fn health(&self) -> &StoreHealth {
        Store::health(self)
    }

    fn compact(&self) -> Result<Option<(u32, usize)>, StoreError> {
        Store::compact(self)
    }

    fn value_usage(&self) -> (u64, u64) {
        self.values.usage()
    }
}

/// What the writer holds while the disk is full.
#[derive(Debug, Default)]
struct Held {
    ops: Vec<Op>,
    bytes: usize,
    /// Bet decisions refused and snapshots dropped meanwhile.
    refused: u64,
    dropped: u64,
}

/// An op's size, roughly: what it costs to hold.
fn weight(op: &Op) -> usize {
    match op {
        Op::Append { event, .. } => event.len() + 64,
        Op::Hold { event, raw, .. } => event.len() + raw.as_ref().map_or(0, |r| r.len()) + 64,
        Op::DeadLetter { letter, raw, .. } => letter.event.len() + raw.as_ref().map_or(0, |r| r.len()) + 64,
        Op::Reference { text, .. } => text.len() + 64,
        Op::PutGuest { record, .. } => record.component.len() + 64,
        _ => 512,
    }
}

impl Held {
    /// Take `op` while the disk is full (see the module header).
    fn hold(&mut self, op: Op, taint: &mut Taint, full: &Problem) {
        match op {
            Op::Barrier { scope, ack, .. } => {
                // Reports (and so clears) what its scope had failed too.
                let _ = taint.take(scope.as_deref());
                let _ = ack.send(Err(JournalError::WriteFailed(full.to_string())));
            }
            Op::Bet(record) if record.settlement.is_none() => {
                taint.record_text(Some(&record.match_id), &full.to_string());
                self.refused += 1;
            }
            Op::Snapshot { .. } => self.dropped += 1,
            op => {
                self.bytes += weight(&op);
                self.ops.push(op);
            }
        }
    }
}

/// Writes that failed and no barrier has reported yet.
#[derive(Debug, Default)]
struct Taint {
    /// Matches with a failed write...
    matches: HashSet<Arc<str>>,
    /// ...and whether any write (of a match or not) failed.
    any: Option<String>,
}

impl Taint {
    fn record(&mut self, op_match: Option<&str>, error: &StoreError) {
        self.record_text(op_match, &error.to_string());
    }

    fn record_text(&mut self, op_match: Option<&str>, error: &str) {
        if let Some(m) = op_match {
            self.matches.insert(Arc::from(m));
        }
        self.any = Some(error.to_owned());
    }

    /// Whether a barrier of `scope` covers a failed write; reports it.
    fn take(&mut self, scope: Option<&str>) -> Option<String> {
        match scope {
            Some(m) => self.matches.remove(m).then(|| self.any.clone().unwrap_or_default()),
            None => {
                self.matches.clear();
                self.any.take()
            }
        }
    }
}

/// The store writer: group commits until `stop`, then it drains the queue,
/// commits what is left and flushes one last time.
pub async fn run_writer<S: Sink>(
    store: S,
    queue: WriteQueue,
    commit_interval: Duration,
    metrics: Arc<Metrics>,
    stop: tokio_util::sync::CancellationToken,
) {
    let WriteQueue { ops: mut rx, urgent } = queue;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut taint = Taint::default();
    let mut held = Held::default();
    let mut log = Throttle::new(Duration::from_secs(1));
    let mut stopping = false;
    while !stopping {
        // Holding: look at the disk again every second; past the budget,
        // take nothing more (senders wait).
        let recheck = (!held.ops.is_empty()).then(|| tokio::time::Instant::now() + RECHECK);
        let room = held.bytes < HELD_BYTES;
        let first = tokio::select! {
            op = rx.recv(), if room => Some(op),
            _ = stop.cancelled() => Some(None),
            _ = sleep_until(recheck) => None,
        };
        match first {
            Some(Some(op)) => batch.push(op),
            Some(None) => {
                stopping = true;
                rx.close();
            }
            None => {}
        }
        let deadline = tokio::time::Instant::now() + commit_interval;
        if stopping {
            while batch.len() < MAX_BATCH {
                match rx.recv().await {
                    Some(op) => batch.push(op),
                    None => break,
                }
            }
        } else {
            gather(&mut rx, &urgent, &mut batch, deadline).await;
        }
        if stopping && !rx.is_empty() {
            // More than one batch left: keep going until it is empty.
            stopping = false;
        }
        metrics.store_queue_depth.set(rx.len() as i64);
        if let Some(full) = full(&store) {
            if store.health().set(Some(full.clone())) {
                tracing::error!(problem = %full, "store: disk full; holding writes until there is room");
            }
            for op in batch.drain(..) {
                held.hold(op, &mut taint, &full);
            }
            metrics.store_held_ops.set(held.ops.len() as i64);
            if stopping && !held.ops.is_empty() {
                tracing::error!(
                    held = held.ops.len(),
                    "store: stopping with the disk still full; held writes are not made durable"
                );
            }
            continue;
        }
        if !held.ops.is_empty() || held.refused > 0 || held.dropped > 0 {
            tracing::warn!(
                held = held.ops.len(),
                refused_bets = held.refused,
                dropped_snapshots = held.dropped,
                "store: room again; writing what was held"
            );
            let mut ops = std::mem::take(&mut held).ops;
            ops.append(&mut batch);
            batch = ops;
            metrics.store_held_ops.set(0);
        }
        commit(&store, &mut batch, &mut taint, &metrics, &mut log);
    }
}

/// Add to `batch` what arrives until `deadline`, without a wake-up per op:
/// take what is queued, then sleep until the deadline or until an urgent
/// barrier is queued (someone waits for durability: commit now). Waking
/// for every op, as `recv` would, cost a futex call in the sender and a
/// context switch here per op: ~4,600 a second in the pipeline at 1,000
/// matches, each one also preempting a runtime worker on 2 cores.
async fn gather(rx: &mut mpsc::Receiver<Op>, urgent: &Notify, batch: &mut Vec<Op>, deadline: tokio::time::Instant) {
    let complete = |batch: &Vec<Op>| batch.len() >= MAX_BATCH || batch.last().is_some_and(is_urgent);
    loop {
        while !complete(batch) {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                // Closed: the stop that follows finds the queue drained.
                Err(_) => break,
            }
        }
        if complete(batch) || rx.is_closed() || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = urgent.notified() => {}
        }
    }
}

/// [`run_writer`] on a thread of its own, with a current-thread runtime
/// for its timers. sled's inserts and removes are synchronous, and now and
/// then one seals a log buffer and writes it (`pwrite`) in the calling
/// thread: as a task of the server's runtime, a batch held one of its two
/// workers for as long, and every session and match queued behind it
/// waited.
pub fn spawn_writer<S: Sink>(
    store: S,
    rx: WriteQueue,
    commit_interval: Duration,
    metrics: Arc<Metrics>,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<WriterThread> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    let (done_tx, done) = oneshot::channel();
    std::thread::Builder::new().name("store-writer".into()).spawn(move || {
        crate::realtime::follow(crate::realtime::Role::Serving);
        runtime.block_on(run_writer(store, rx, commit_interval, metrics, stop));
        let _ = done_tx.send(());
    })?;
    Ok(WriterThread { done })
}

/// The writer's thread ([`spawn_writer`]).
#[derive(Debug)]
pub struct WriterThread {
    done: oneshot::Receiver<()>,
}

impl WriterThread {
    /// Wait until the writer has stopped (its stop token cancelled, every
    /// queued op committed); `Err` if it ended by a panic instead.
    pub async fn join(self) -> Result<(), &'static str> {
        self.done.await.map_err(|_| "the store writer's thread panicked")
    }
}

/// The disk's problem if free space is under the reserve.
fn full<S: Sink>(store: &S) -> Option<Problem> {
    let health = store.health();
    let reserve = health.reserve();
    if reserve == 0 {
        return None;
    }
    let available = health.available()?;
    (available < reserve).then_some(Problem::Full { available, reserve })
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

type Ack = oneshot::Sender<Result<(), JournalError>>;

fn commit<S: Sink>(store: &S, batch: &mut Vec<Op>, taint: &mut Taint, metrics: &Metrics, log: &mut Throttle) {
    let started = Instant::now();
    let n = batch.len() as u64;
    // Barriers of this batch with what they report unless the flush fails.
    let mut acks: Vec<(Ack, Result<(), JournalError>)> = Vec::new();
    let mut failed = false;
    for op in batch.drain(..) {
        if let Op::Barrier { scope, ack, .. } = op {
            let verdict = match taint.take(scope.as_deref()) {
                Some(e) => Err(JournalError::WriteFailed(e)),
                None => Ok(()),
            };
            acks.push((ack, verdict));
            continue;
        }
        let op_match: Option<String> = op.scope().map(str::to_owned);
        if let Err(e) = store.apply(op) {
            metrics.store_errors.inc();
            if let Some(suppressed) = log.allow(Instant::now()) {
                tracing::error!(error = %e, match_id = op_match.as_deref().unwrap_or("-"), suppressed, "store write failed");
            }
            store.health().set(Some(Problem::Failed(e.to_string())));
            failed = true;
            taint.record(op_match.as_deref(), &e);
        }
    }
    store.health().flush_started();
    let flushed = store.flush();
    store.health().flush_done();
    if let Err(e) = flushed {
        metrics.store_errors.inc();
        if let Some(suppressed) = log.allow(Instant::now()) {
            tracing::error!(error = %e, suppressed, "store flush failed");
        }
        store.health().set(Some(Problem::Failed(format!("flush: {e}"))));
        // Not durable: nothing in this batch may be acknowledged.
        for (ack, _) in acks {
            let _ = ack.send(Err(JournalError::WriteFailed(format!("flush: {e}"))));
        }
        return;
    }
    if !failed && store.health().set(None) {
        tracing::warn!("store: writing again");
    }
    metrics.store_ops.inc_by(n);
    metrics.store_commit_seconds.observe(started.elapsed().as_secs_f64());
    for (ack, verdict) in acks {
        let _ = ack.send(verdict);
    }
    // Space back from the value log, after the acks: nobody waits on it.
    match store.compact() {
        Ok(Some((segment, moved))) => {
            metrics.store_compactions.inc();
            tracing::info!(segment, moved, "value log: a sparse segment copied forward")
        }
        Ok(None) => {}
        Err(e) => {
            if let Some(suppressed) = log.allow(Instant::now()) {
                tracing::error!(error = %e, suppressed, "value log: compacting failed");
            }
        }
    }
    let (bytes, live) = store.value_usage();
    metrics.store_value_bytes.set(bytes as i64);
    metrics.store_value_live_bytes.set(live as i64);
}

#[cfg(test)]
mod tests;
