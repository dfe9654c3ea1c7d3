//! The store's write queue and its one writer task: group commits, and
//! barriers that are acknowledged only for writes that really were made
//! durable.
//!
//! [`run_writer`] gathers ops for at most the commit interval (a barrier
//! cuts the wait short: someone is waiting), applies the batch, then
//! `flush_async`es once for all of them. A write sled refuses *taints* its
//! match: the next barrier of that match (or the next global barrier) is
//! answered `Err`, so a bet whose record was not written is never
//! confirmed. A failed flush answers every barrier of its batch `Err`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError};
use crate::journal::{Journal, JournalError, Op, Parked};
use crate::metrics::Metrics;

/// Capacity of the write queue, in ops. Absorbs bursts and slow fsyncs;
/// when full, senders wait (the feed reader ultimately), never drop: a
/// write that was accepted is a promise. Depth is exported as a metric.
pub const WRITE_QUEUE: usize = 65_536;
/// Most ops applied in one group commit.
const MAX_BATCH: usize = 8192;

/// The sending end of the write queue; the journal the workers use.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Op>,
    pub store: Store,
}

/// Create the queue; run [`run_writer`] with the receiver.
pub fn queue(store: Store) -> (StoreHandle, mpsc::Receiver<Op>) {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    (StoreHandle { tx, store }, rx)
}

impl Journal for StoreHandle {
    fn start_no(&self) -> u64 {
        self.store.start_no()
    }

    fn write(&self, op: Op) -> BoxFuture<'_, Result<(), JournalError>> {
        Box::pin(async move { self.tx.send(op).await.map_err(|_| JournalError::WriterGone) })
    }

    fn try_write(&self, op: Op) -> Result<(), JournalError> {
        self.tx.try_send(op).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => JournalError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => JournalError::WriterGone,
        })
    }

    fn frames(&self, match_id: &str, from: u64, to: u64) -> Result<Option<Vec<String>>, JournalError> {
        self.store.frames(match_id, from, to).map_err(read_error)
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
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}

impl Sink for Store {
    fn apply(&self, op: Op) -> Result<(), StoreError> {
        Store::apply(self, op)
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(Store::flush(self))
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
        if let Some(m) = op_match {
            self.matches.insert(Arc::from(m));
        }
        self.any = Some(error.to_string());
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
    mut rx: mpsc::Receiver<Op>,
    commit_interval: Duration,
    metrics: Arc<Metrics>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut taint = Taint::default();
    let mut stopping = false;
    while !stopping {
        let first = tokio::select! {
            op = rx.recv() => op,
            _ = stop.cancelled() => None,
        };
        match first {
            Some(op) => batch.push(op),
            None => {
                stopping = true;
                rx.close();
            }
        }
        let deadline = tokio::time::Instant::now() + commit_interval;
        // A barrier means someone waits for durability: commit now rather
        // than at the end of the interval.
        while batch.len() < MAX_BATCH && !matches!(batch.last(), Some(Op::Barrier { .. })) {
            if stopping {
                match rx.recv().await {
                    Some(op) => batch.push(op),
                    None => break,
                }
                continue;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(op)) => batch.push(op),
                Ok(None) | Err(_) => break,
            }
        }
        if stopping && !rx.is_empty() {
            // More than one batch left: keep going until it is empty.
            stopping = false;
        }
        metrics.store_queue_depth.set(rx.len() as i64);
        commit(&store, &mut batch, &mut taint, &metrics).await;
    }
}

type Ack = oneshot::Sender<Result<(), JournalError>>;

async fn commit<S: Sink>(store: &S, batch: &mut Vec<Op>, taint: &mut Taint, metrics: &Metrics) {
    let started = Instant::now();
    let n = batch.len() as u64;
    // Barriers of this batch with what they report unless the flush fails.
    let mut acks: Vec<(Ack, Result<(), JournalError>)> = Vec::new();
    for op in batch.drain(..) {
        if let Op::Barrier { scope, ack } = op {
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
            tracing::error!(error = %e, match_id = op_match.as_deref().unwrap_or("-"), "store write failed");
            taint.record(op_match.as_deref(), &e);
        }
    }
    if let Err(e) = store.flush().await {
        metrics.store_errors.inc();
        tracing::error!(error = %e, "store flush failed");
        // Not durable: nothing in this batch may be acknowledged.
        for (ack, _) in acks {
            let _ = ack.send(Err(JournalError::WriteFailed(format!("flush: {e}"))));
        }
        return;
    }
    metrics.store_ops.inc_by(n);
    metrics.store_commit_seconds.observe(started.elapsed().as_secs_f64());
    for (ack, verdict) in acks {
        let _ = ack.send(verdict);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{BetRecord, sync};
    use touchline_guest::bet::BetRequest;

    /// The real store, refusing every write of one match (as sled does
    /// when its disk fails).
    struct Refusing {
        store: Store,
        refuse: &'static str,
    }

    impl Sink for Refusing {
        fn apply(&self, op: Op) -> Result<(), StoreError> {
            if op.scope() == Some(self.refuse) {
                return Err(StoreError::Sled(sled::Error::Unsupported("injected failure".into())));
            }
            self.store.apply(op)
        }

        fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
            Box::pin(self.store.flush())
        }
    }

    fn bet(match_id: &str, id: &str) -> Op {
        Op::Bet(Box::new(BetRecord {
            match_id: match_id.into(),
            request: BetRequest {
                id: id.into(),
                market: 1,
                specifiers: String::new(),
                outcome: "1".into(),
                odds: 2.0,
                stake: 1.0,
                accept_better_odds: false,
            },
            decision: Ok(2.0),
            seq: 1,
            epoch: 1,
            decided_at: 0,
            settlement: None,
        }))
    }

    async fn start(refuse: &'static str) -> (tempfile::TempDir, StoreHandle, tokio::task::JoinHandle<()>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let (handle, rx) = queue(store.clone());
        let task = tokio::spawn(run_writer(
            Refusing { store, refuse },
            rx,
            Duration::from_millis(1),
            Arc::new(Metrics::new()),
            tokio_util::sync::CancellationToken::new(),
        ));
        (dir, handle, task)
    }

    #[tokio::test]
    async fn a_refused_write_fails_the_next_barrier_of_its_match_only() {
        let (_dir, handle, _task) = start("bad").await;
        handle.write(bet("bad", "b1")).await.expect("queued");
        handle.write(bet("good", "g1")).await.expect("queued");
        // Another match's barrier is not tainted by it...
        sync(&handle, Some(Arc::from("good"))).await.expect("good is durable");
        // ...the match's own is, once...
        let err = sync(&handle, Some(Arc::from("bad")))
            .await
            .expect_err("bad was not written");
        assert!(matches!(err, JournalError::WriteFailed(_)), "{err:?}");
        // ...and a barrier after it reported only covers later writes.
        sync(&handle, Some(Arc::from("bad"))).await.expect("nothing new failed");
        assert!(handle.store.bet("g1").expect("read").is_some());
        assert!(handle.store.bet("b1").expect("read").is_none());
    }

    #[tokio::test]
    async fn a_global_barrier_reports_any_failed_write() {
        let (_dir, handle, _task) = start("bad").await;
        handle.write(bet("bad", "b1")).await.expect("queued");
        assert!(sync(&handle, None).await.is_err());
        sync(&handle, None).await.expect("reported once");
    }

    #[tokio::test]
    async fn barriers_are_answered_in_order_after_what_came_before_them() {
        let (_dir, handle, _task) = start("none").await;
        let mut waits = Vec::new();
        for i in 0..50 {
            handle.write(bet("m", &format!("b{i}"))).await.expect("queued");
            let durable = handle.barrier(Some(Arc::from("m"))).await.expect("queued");
            waits.push((i, durable));
        }
        for (i, durable) in waits {
            durable.wait().await.expect("durable");
            // Everything written before the barrier is readable once it is answered.
            assert!(handle.store.bet(&format!("b{i}")).expect("read").is_some(), "b{i}");
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_try_write_and_write_waits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        // No writer yet: the queue fills up.
        let (handle, rx) = queue(store.clone());
        for i in 0..WRITE_QUEUE {
            handle.try_write(bet("m", &format!("b{i}"))).expect("room");
        }
        assert_eq!(handle.try_write(bet("m", "over")), Err(JournalError::QueueFull));
        let blocked = handle.write(bet("m", "waits"));
        tokio::pin!(blocked);
        assert!(
            futures_util::poll!(blocked.as_mut()).is_pending(),
            "a full queue makes writers wait"
        );
        let _task = tokio::spawn(run_writer(
            store,
            rx,
            Duration::from_millis(1),
            Arc::new(Metrics::new()),
            tokio_util::sync::CancellationToken::new(),
        ));
        blocked.await.expect("queued once the writer drains");
        sync(&handle, None).await.expect("durable");
        assert!(handle.store.bet("waits").expect("read").is_some());
    }
}
