//! Fan-out: a match pushes each frame into the queue of every session
//! subscribed to it, the way a Node server loops over a set and calls
//! `send`.
//!
//! Each match has one [`Fanout`] (a list of subscribed [`Outbox`]es); each
//! WebSocket session has one [`Outbox`]: a bounded queue of [`Delivery`]s
//! from all its matches and one waker. Sending a frame to N subscribers
//! is N pushes of a shared buffer (no copy, no allocation) under two short
//! locks, and wakes each session at most once per batch: a session drains
//! everything queued in one go and writes it out together.
//!
//! A subscription is `(match, generation)`: the session picks a new
//! generation each time it (re)subscribes, and frames of an older one are
//! not delivered. The worker attaches a subscriber by pushing its catch-up
//! frames first and then adding it to the list, in the order of its
//! mailbox, so the session sees the snapshot (or the missed updates) and
//! then every later frame of the match, with no gap and no duplicate.
//!
//! Bounds: an outbox holds at most [`Outbox::capacity`] deliveries. A push
//! into a full one drops the frame, records the subscription as *lagged*
//! and detaches it from the match, so nothing more of that match queues;
//! the session then catches up from the position of the last frame it sent
//! (the missed updates, or a fresh snapshot). A closed outbox (its session
//! ended) or a subscription the session no longer wants is detached on the
//! match's next frame.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::Frame;

/// Sees every frame a match sends, before its subscribers do (in a
/// cluster: the frame published for the other nodes' sessions).
pub trait FrameTap: Send + Sync {
    fn frame(&self, match_id: &Arc<str>, frame: &Frame);
}

/// One match's subscribers.
pub struct Fanout {
    match_id: Arc<str>,
    subs: Mutex<Vec<Sub>>,
    tap: Option<Arc<dyn FrameTap>>,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("match_id", &self.match_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Sub {
    outbox: Arc<Outbox>,
    generation: u64,
}

/// A frame of one match for one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub match_id: Arc<str>,
    pub generation: u64,
    pub frame: Frame,
}

/// A subscription that lost frames because its session's outbox was full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lagged {
    pub match_id: Arc<str>,
    pub generation: u64,
}

/// What a session takes out of its outbox in one go.
#[derive(Debug, Default)]
pub struct Batch {
    pub deliveries: VecDeque<Delivery>,
    pub lagged: Vec<Lagged>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty() && self.lagged.is_empty()
    }
}

impl Fanout {
    pub fn new(match_id: Arc<str>) -> Fanout {
        Fanout::tapped(match_id, None)
    }

    /// A fan-out whose every frame `tap` sees first.
    pub fn tapped(match_id: Arc<str>, tap: Option<Arc<dyn FrameTap>>) -> Fanout {
        Fanout {
            match_id,
            subs: Mutex::new(Vec::new()),
            tap,
        }
    }

    /// Push `frame` to every subscriber; returns how many still subscribe.
    pub fn send(&self, frame: Frame) -> usize {
        if let Some(tap) = &self.tap {
            tap.frame(&self.match_id, &frame);
        }
        let mut subs = lock(&self.subs);
        subs.retain(|s| {
            s.outbox.push(Delivery {
                match_id: self.match_id.clone(),
                generation: s.generation,
                frame: frame.clone(),
            })
        });
        subs.len()
    }

    /// Subscribe `outbox` as `generation`: `catchup` goes into it first
    /// (whatever its fill: it is bounded by the resume ring), then every
    /// later frame. Replaces an earlier subscription of the same outbox.
    pub(crate) fn attach(&self, outbox: Arc<Outbox>, generation: u64, catchup: Vec<Frame>) {
        let mut subs = lock(&self.subs);
        subs.retain(|s| !Arc::ptr_eq(&s.outbox, &outbox));
        let open = outbox.push_catchup(&self.match_id, generation, catchup);
        if open {
            subs.push(Sub { outbox, generation });
        }
    }

    /// Tell every subscriber it lagged (they catch up from where they
    /// are, as after a full outbox) and forget them: what they were sent
    /// can no longer be continued without a gap.
    pub fn lag_all(&self) {
        for s in std::mem::take(&mut *lock(&self.subs)) {
            s.outbox.lag(&self.match_id, s.generation);
        }
    }

    /// Sessions subscribed now (some may have left since their last frame).
    pub fn subscribers(&self) -> usize {
        lock(&self.subs).len()
    }

    /// A queue of this match's frames alone, for tests and tools: attached
    /// at once, without a catch-up.
    pub fn watch(&self, capacity: usize) -> Watch {
        let outbox = Arc::new(Outbox::new(capacity));
        outbox.want(&self.match_id, 0);
        self.attach(outbox.clone(), 0, Vec::new());
        Watch {
            outbox,
            batch: Batch::default(),
        }
    }
}

/// One session's queue of frames from all its matches.
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<Inner>,
    ready: Notify,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Delivery>,
    lagged: Vec<Lagged>,
    /// The generation of each match the session subscribes to now.
    wanted: HashMap<Arc<str>, u64>,
    closed: bool,
}

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            capacity,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The session subscribes to `match_id` as `generation` from now on
    /// (frames of any other generation are refused).
    pub fn want(&self, match_id: &Arc<str>, generation: u64) {
        lock(&self.inner).wanted.insert(match_id.clone(), generation);
    }

    /// The session no longer subscribes to `match_id`.
    pub fn unwant(&self, match_id: &str) {
        lock(&self.inner).wanted.remove(match_id);
    }

    /// Whether `generation` of `match_id` is what the session wants now.
    pub fn wants(&self, match_id: &str, generation: u64) -> bool {
        lock(&self.inner).wanted.get(match_id) == Some(&generation)
    }

    /// The session ended: refuse everything from now on.
    pub fn close(&self) {
        let mut inner = lock(&self.inner);
        inner.closed = true;
        inner.queue = VecDeque::new();
        inner.wanted = HashMap::new();
    }

    /// Wait until something is queued (returns at once if something was
    /// queued since the last [`Outbox::take`]).
    pub async fn ready(&self) {
        self.ready.notified().await
    }

    /// Everything queued, in order, and the subscriptions that lagged.
    /// Swaps buffers with `batch` (which must be empty), so neither
    /// allocates in the steady state.
    pub fn take(&self, batch: &mut Batch) {
        debug_assert!(batch.is_empty());
        let mut inner = lock(&self.inner);
        std::mem::swap(&mut inner.queue, &mut batch.deliveries);
        std::mem::swap(&mut inner.lagged, &mut batch.lagged);
        // A burst leaves a large buffer behind: give it back once idle.
        if inner.queue.capacity() > 4 * self.capacity.min(64) {
            inner.queue = VecDeque::new();
        }
    }

    /// `false`: the subscription is over (unwanted, lagged or closed) and
    /// the match should forget it.
    fn push(&self, delivery: Delivery) -> bool {
        let mut inner = lock(&self.inner);
        if inner.closed || inner.wanted.get(&delivery.match_id) != Some(&delivery.generation) {
            return false;
        }
        let was_idle = inner.queue.is_empty() && inner.lagged.is_empty();
        if inner.queue.len() >= self.capacity {
            drop(inner);
            self.lag(&delivery.match_id, delivery.generation);
            return false;
        }
        inner.queue.push_back(delivery);
        drop(inner);
        if was_idle {
            self.ready.notify_one();
        }
        true
    }

    /// The subscription `generation` of `match_id` lost frames: the session
    /// is told, and takes nothing more of it until it subscribes again.
    fn lag(&self, match_id: &Arc<str>, generation: u64) {
        let mut inner = lock(&self.inner);
        if inner.closed || inner.wanted.get(match_id) != Some(&generation) {
            return;
        }
        inner.wanted.remove(match_id);
        inner.lagged.push(Lagged {
            match_id: match_id.clone(),
            generation,
        });
        drop(inner);
        self.ready.notify_one();
    }

    /// Catch-up frames go in whatever the fill; `false` if the session
    /// no longer wants this subscription.
    fn push_catchup(&self, match_id: &Arc<str>, generation: u64, frames: Vec<Frame>) -> bool {
        let mut inner = lock(&self.inner);
        if inner.closed || inner.wanted.get(match_id) != Some(&generation) {
            return false;
        }
        if frames.is_empty() {
            return true;
        }
        let was_idle = inner.queue.is_empty() && inner.lagged.is_empty();
        inner.queue.extend(frames.into_iter().map(|frame| Delivery {
            match_id: match_id.clone(),
            generation,
            frame,
        }));
        drop(inner);
        if was_idle {
            self.ready.notify_one();
        }
        true
    }
}

/// A test's or tool's view of one match's frames (see [`Fanout::watch`]).
#[derive(Debug)]
pub struct Watch {
    outbox: Arc<Outbox>,
    batch: Batch,
}

impl Watch {
    /// The next frame; `None` if frames were lost (the queue was full).
    pub async fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.try_recv() {
                return Some(f);
            }
            if !self.batch.lagged.is_empty() {
                return None;
            }
            self.outbox.ready().await;
        }
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<Frame> {
        if self.batch.deliveries.is_empty() && self.batch.lagged.is_empty() {
            self.outbox.take(&mut self.batch);
        }
        self.batch.deliveries.pop_front().map(|d| d.frame)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here panics while holding a lock; a poisoned one still holds
    // consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::FrameKind;
    use tokio_tungstenite::tungstenite::Utf8Bytes;

    fn frame(seq: u64) -> Frame {
        Frame {
            seq,
            epoch: 1,
            kind: FrameKind::Update,
            bytes: Utf8Bytes::from(format!("{seq}")),
        }
    }

    fn seqs(outbox: &Outbox) -> (Vec<u64>, Vec<Lagged>) {
        let mut b = Batch::default();
        outbox.take(&mut b);
        (b.deliveries.iter().map(|d| d.frame.seq).collect(), b.lagged)
    }

    #[test]
    fn catchup_comes_first_then_every_frame_in_order() {
        let id: Arc<str> = Arc::from("m");
        let fan = Fanout::new(id.clone());
        let out = Arc::new(Outbox::new(8));
        out.want(&id, 1);
        fan.send(frame(1)); // before the attach: not for this session
        fan.attach(out.clone(), 1, vec![frame(1)]);
        fan.send(frame(2));
        fan.send(frame(3));
        assert_eq!(seqs(&out), (vec![1, 2, 3], vec![]));
    }

    #[test]
    fn a_full_outbox_lags_the_subscription_and_detaches_it() {
        let id: Arc<str> = Arc::from("m");
        let fan = Fanout::new(id.clone());
        let out = Arc::new(Outbox::new(2));
        out.want(&id, 7);
        fan.attach(out.clone(), 7, vec![]);
        for s in 1..=4 {
            fan.send(frame(s));
        }
        let lagged = Lagged {
            match_id: id.clone(),
            generation: 7,
        };
        assert_eq!(seqs(&out), (vec![1, 2], vec![lagged]));
        assert_eq!(fan.subscribers(), 0, "detached at the first lost frame");
        assert!(!out.wants("m", 7));
    }

    #[test]
    fn unwanted_old_and_closed_subscriptions_are_dropped_on_the_next_frame() {
        let id: Arc<str> = Arc::from("m");
        let fan = Fanout::new(id.clone());
        let (a, b, c) = (
            Arc::new(Outbox::new(8)),
            Arc::new(Outbox::new(8)),
            Arc::new(Outbox::new(8)),
        );
        for o in [&a, &b, &c] {
            o.want(&id, 1);
            fan.attach(o.clone(), 1, vec![]);
        }
        a.unwant("m");
        b.want(&id, 2); // resubscribing: generation 1 is over
        c.close();
        assert_eq!(fan.send(frame(1)), 0);
        assert_eq!(seqs(&a).0, Vec::<u64>::new());
        assert_eq!(seqs(&b).0, Vec::<u64>::new());
    }

    #[test]
    fn reattaching_replaces_the_earlier_subscription() {
        let id: Arc<str> = Arc::from("m");
        let fan = Fanout::new(id.clone());
        let out = Arc::new(Outbox::new(8));
        out.want(&id, 1);
        fan.attach(out.clone(), 1, vec![]);
        out.want(&id, 2);
        fan.attach(out.clone(), 2, vec![frame(5)]);
        assert_eq!(fan.send(frame(6)), 1);
        let mut b = Batch::default();
        out.take(&mut b);
        let got: Vec<(u64, u64)> = b.deliveries.iter().map(|d| (d.generation, d.frame.seq)).collect();
        assert_eq!(got, vec![(2, 5), (2, 6)]);
    }

    #[tokio::test]
    async fn a_session_is_woken_once_per_batch() {
        let id: Arc<str> = Arc::from("m");
        let fan = Fanout::new(id.clone());
        let mut watch = fan.watch(16);
        fan.send(frame(1));
        fan.send(frame(2));
        assert_eq!(watch.recv().await.map(|f| f.seq), Some(1));
        assert_eq!(watch.recv().await.map(|f| f.seq), Some(2));
        let waiting = tokio::spawn(async move { watch.recv().await.map(|f| f.seq) });
        fan.send(frame(3));
        assert_eq!(waiting.await.expect("task"), Some(3));
    }
}
