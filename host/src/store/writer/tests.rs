//! Tests of the store writer: barriers and taints, a full queue, and a
//! write stuck in the store while the runtime carries on.

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

    fn flush(&self) -> Result<(), StoreError> {
        Sink::flush(&self.store)
    }

    fn health(&self) -> &StoreHealth {
        self.store.health()
    }
}

/// The real store, each write announced and then held until the test
/// lets it go, or 10 s (a disk that stalls).
struct Stalling {
    store: Store,
    entered: tokio::sync::mpsc::UnboundedSender<()>,
    gate: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    timed_out: Arc<std::sync::atomic::AtomicBool>,
}

impl Sink for Stalling {
    fn apply(&self, op: Op) -> Result<(), StoreError> {
        let _ = self.entered.send(());
        let gate = self.gate.lock().expect("gate");
        if gate.recv_timeout(Duration::from_secs(10)).is_err() {
            self.timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.store.apply(op)
    }

    fn flush(&self) -> Result<(), StoreError> {
        Sink::flush(&self.store)
    }

    fn health(&self) -> &StoreHealth {
        self.store.health()
    }
}

/// On a one-thread runtime: while a write is stuck in the store, the
/// runtime's thread still runs other tasks. (With the writer a task of
/// that runtime, the write held its only thread until the 10 s were
/// up.)
#[tokio::test]
async fn a_write_stuck_in_the_store_does_not_hold_the_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (handle, rx) = queue(store.clone());
    let (entered, mut entered_rx) = tokio::sync::mpsc::unbounded_channel();
    let (release, gate) = std::sync::mpsc::channel();
    let timed_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = tokio_util::sync::CancellationToken::new();
    let sink = Stalling {
        store,
        entered,
        gate: std::sync::Mutex::new(gate),
        timed_out: timed_out.clone(),
    };
    let writer = spawn_writer(
        sink,
        rx,
        Duration::from_millis(1),
        Arc::new(Metrics::new()),
        stop.clone(),
    )
    .expect("the writer's thread");
    handle.write(bet("m", "b1")).await.expect("queued");
    entered_rx.recv().await.expect("the write reached the store");
    assert_eq!(tokio::spawn(async { 7 }).await.expect("task"), 7);
    release.send(()).expect("the writer waits at the gate");
    sync(&handle, None).await.expect("durable");
    assert!(
        !timed_out.load(std::sync::atomic::Ordering::SeqCst),
        "the other task ran only after the stuck write gave up"
    );
    assert!(handle.store.bet("b1").expect("read").is_some());
    // Stopped, it has committed what was queued and its thread ends.
    handle.write(bet("m", "b2")).await.expect("queued");
    release.send(()).expect("the writer waits at the gate");
    stop.cancel();
    writer.join().await.expect("the writer stopped");
    assert!(handle.store.bet("b2").expect("read").is_some());
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
    let task = writer_task(Refusing { store, refuse }, rx, Duration::from_millis(1));
    (dir, handle, task)
}

/// [`run_writer`] as a task of the test's runtime, never told to stop.
fn writer_task<S: Sink>(sink: S, rx: WriteQueue, commit_interval: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run_writer(
        sink,
        rx,
        commit_interval,
        Arc::new(Metrics::new()),
        tokio_util::sync::CancellationToken::new(),
    ))
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
    let _task = writer_task(store, rx, Duration::from_millis(1));
    blocked.await.expect("queued once the writer drains");
    sync(&handle, None).await.expect("durable");
    assert!(handle.store.bet("waits").expect("read").is_some());
}

#[tokio::test]
async fn an_urgent_barrier_cuts_a_long_commit_interval_short() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (handle, rx) = queue(store.clone());
    // The writer sleeps out the interval while it gathers a batch; only an
    // urgent barrier wakes it before that.
    let _task = writer_task(store, rx, Duration::from_secs(3600));
    handle.write(bet("m", "b1")).await.expect("queued");
    // The writer has taken it and is gathering a batch.
    let taken = tokio::time::Instant::now() + Duration::from_secs(30);
    while handle.tx.capacity() < WRITE_QUEUE {
        assert!(
            tokio::time::Instant::now() < taken,
            "the writer never took the first write"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    handle.write(bet("m", "b2")).await.expect("queued");
    let durable = handle.barrier(Some(Arc::from("m"))).await.expect("queued");
    tokio::time::timeout(Duration::from_secs(30), durable.wait())
        .await
        .expect("answered long before the commit interval")
        .expect("durable");
    assert!(handle.store.bet("b1").expect("read").is_some());
    assert!(handle.store.bet("b2").expect("read").is_some());
}
