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
//! Writing at once: an outbox given the session's socket ([`Direct`])
//! writes a frame straight to it, from the match's own task, when nothing
//! of the session's is queued or being written, as a Node server's `send`
//! does; the session is not woken. A socket that does not take the whole
//! frame at once ends that: the frame's rest and everything after it go
//! through the queue and the session, until the session has written
//! everything and opens the socket to direct writes again
//! ([`Outbox::resume_direct`]). Either way a frame is written once, whole
//! and in order.
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

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{Frame, FrameKind, Position};

/// A session's socket, written to directly by the matches when the
/// session has nothing of its own queued or being written.
pub trait Direct: Send + Sync {
    /// Write `text` as one frame now, if the socket is open to direct
    /// writes and takes at least part of it.
    fn offer(&self, text: &Utf8Bytes) -> Offer;
    /// Close the socket to direct writes (the session has frames to write).
    fn pause(&self);
    /// Open it again; [`Resumed::Unfinished`] if a frame begun directly
    /// must be finished first (the session's next flush does it).
    fn resume(&self) -> Resumed;
}

/// What became of a frame offered to a [`Direct`] socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Written whole.
    Sent,
    /// Written in part: the socket keeps the rest, closed to direct writes
    /// until the session's next flush finishes it.
    Begun,
    /// Not written: the socket is closed to direct writes, or full.
    Refused,
}

/// Whether a socket is open to direct writes again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumed {
    Yes,
    /// Frames are queued: the session was woken for them.
    Queued,
    /// A frame begun directly waits for its rest (a flush writes it).
    Unfinished,
}

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
    /// Where the outbox keeps this subscription (no lookup by id per frame).
    slot: usize,
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
    /// The last frame of the match taken for the session (queued or
    /// written), where its catch-up starts; `None` before the first.
    pub position: Option<Position>,
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
        subs.retain(|s| s.outbox.push(&self.match_id, s.slot, s.generation, &frame));
        subs.len()
    }

    /// Subscribe `outbox` as `generation`: `catchup` goes into it first
    /// (whatever its fill: it is bounded by the resume ring), then every
    /// later frame. Replaces an earlier subscription of the same outbox.
    pub(crate) fn attach(&self, outbox: Arc<Outbox>, generation: u64, catchup: Vec<Frame>) {
        let mut subs = lock(&self.subs);
        subs.retain(|s| !Arc::ptr_eq(&s.outbox, &outbox));
        if let Some(slot) = outbox.push_catchup(&self.match_id, generation, catchup) {
            subs.push(Sub {
                outbox,
                generation,
                slot,
            });
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
pub struct Outbox {
    inner: Mutex<Inner>,
    ready: Notify,
    capacity: usize,
    direct: Option<Arc<dyn Direct>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("capacity", &self.capacity)
            .field("direct", &self.direct.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<Delivery>,
    lagged: Vec<Lagged>,
    /// Each match the session subscribes to now: its slot in `slots`.
    wanted: HashMap<Arc<str>, usize>,
    /// The subscriptions; a freed slot is `None` until reused. Generations
    /// are never reused by a session, so a match holding a slot that was
    /// since given to another subscription finds another generation there.
    slots: Vec<Option<Want>>,
    free: Vec<usize>,
    closed: bool,
}

/// The subscription in `slot` if it is still `generation`.
fn slot_of(slots: &mut [Option<Want>], slot: usize, generation: u64) -> Option<&mut Want> {
    slots
        .get_mut(slot)
        .and_then(Option::as_mut)
        .filter(|w| w.generation == generation)
}

impl Inner {
    fn by_id(&mut self, match_id: &str, generation: u64) -> Option<usize> {
        let slot = *self.wanted.get(match_id)?;
        slot_of(&mut self.slots, slot, generation).map(|_| slot)
    }

    fn unwant(&mut self, match_id: &str) -> Option<Want> {
        let slot = self.wanted.remove(match_id)?;
        self.free.push(slot);
        self.slots[slot].take()
    }
}

/// A subscription: its generation and the last frame taken for it.
#[derive(Debug, Clone, Copy)]
struct Want {
    generation: u64,
    position: Option<Position>,
}

impl Want {
    /// `frame` was taken for the session (queued or written).
    fn took(&mut self, frame: &Frame) {
        let positional = !matches!(frame.kind, FrameKind::Status | FrameKind::Names);
        if positional || self.position.is_none() {
            self.position = Some(Position {
                epoch: frame.epoch,
                seq: frame.seq,
            });
        }
    }
}

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            capacity,
            direct: None,
        }
    }

    /// An outbox whose frames go straight to `socket` while the session
    /// has nothing queued or being written.
    pub fn direct(capacity: usize, socket: Arc<dyn Direct>) -> Outbox {
        Outbox {
            direct: Some(socket),
            ..Outbox::new(capacity)
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The session subscribes to `match_id` as `generation` from now on
    /// (frames of any other generation are refused).
    pub fn want(&self, match_id: &Arc<str>, generation: u64) {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        let want = Some(Want {
            generation,
            position: None,
        });
        if let Some(&slot) = inner.wanted.get(match_id) {
            inner.slots[slot] = want;
        } else if let Some(slot) = inner.free.pop() {
            inner.slots[slot] = want;
            inner.wanted.insert(match_id.clone(), slot);
        } else {
            inner.slots.push(want);
            inner.wanted.insert(match_id.clone(), inner.slots.len() - 1);
        }
    }

    /// The session no longer subscribes to `match_id`.
    pub fn unwant(&self, match_id: &str) {
        lock(&self.inner).unwant(match_id);
    }

    /// Whether `generation` of `match_id` is what the session wants now.
    pub fn wants(&self, match_id: &str, generation: u64) -> bool {
        lock(&self.inner).by_id(match_id, generation).is_some()
    }

    /// The session has written everything it held: open its socket to
    /// direct writes again, unless frames are queued or a frame begun
    /// directly is unfinished.
    pub fn resume_direct(&self) -> Resumed {
        let inner = lock(&self.inner);
        match &self.direct {
            _ if !inner.queue.is_empty() || !inner.lagged.is_empty() => Resumed::Queued,
            Some(d) if !inner.closed => d.resume(),
            _ => Resumed::Yes,
        }
    }

    /// The session ended: refuse everything from now on.
    pub fn close(&self) {
        let mut inner = lock(&self.inner);
        inner.closed = true;
        inner.queue = VecDeque::new();
        inner.wanted = HashMap::new();
        inner.slots = Vec::new();
        inner.free = Vec::new();
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
    fn push(&self, match_id: &Arc<str>, slot: usize, generation: u64, frame: &Frame) -> bool {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        if inner.closed {
            return false;
        }
        let was_idle = inner.queue.is_empty() && inner.lagged.is_empty();
        let Some(want) = slot_of(&mut inner.slots, slot, generation) else {
            return false;
        };
        if was_idle && let Some(direct) = &self.direct {
            match direct.offer(&frame.bytes) {
                Offer::Sent => {
                    want.took(frame);
                    return true;
                }
                Offer::Begun => {
                    want.took(frame);
                    drop(guard);
                    // The session finishes the frame at its next flush.
                    self.ready.notify_one();
                    return true;
                }
                Offer::Refused => {}
            }
        }
        if inner.queue.len() >= self.capacity {
            drop(guard);
            self.lag(match_id, generation);
            return false;
        }
        want.took(frame);
        inner.queue.push_back(Delivery {
            match_id: match_id.clone(),
            generation,
            frame: frame.clone(),
        });
        if was_idle && let Some(direct) = &self.direct {
            direct.pause();
        }
        drop(guard);
        if was_idle {
            self.ready.notify_one();
        }
        true
    }

    /// The subscription `generation` of `match_id` lost frames: the session
    /// is told, and takes nothing more of it until it subscribes again.
    fn lag(&self, match_id: &Arc<str>, generation: u64) {
        let mut inner = lock(&self.inner);
        if inner.closed || inner.by_id(match_id, generation).is_none() {
            return;
        }
        let position = inner.unwant(match_id).and_then(|w| w.position);
        inner.lagged.push(Lagged {
            match_id: match_id.clone(),
            generation,
            position,
        });
        drop(inner);
        self.ready.notify_one();
    }

    /// Catch-up frames go in whatever the fill; the subscription's slot,
    /// or `None` if the session no longer wants it.
    fn push_catchup(&self, match_id: &Arc<str>, generation: u64, frames: Vec<Frame>) -> Option<usize> {
        let mut guard = lock(&self.inner);
        let inner = &mut *guard;
        if inner.closed {
            return None;
        }
        let slot = inner.by_id(match_id, generation)?;
        if frames.is_empty() {
            return Some(slot);
        }
        let want = slot_of(&mut inner.slots, slot, generation)?;
        frames.iter().for_each(|f| want.took(f));
        let was_idle = inner.queue.is_empty() && inner.lagged.is_empty();
        inner.queue.extend(frames.into_iter().map(|frame| Delivery {
            match_id: match_id.clone(),
            generation,
            frame,
        }));
        // Direct writes would overtake the catch-up.
        if let Some(direct) = &self.direct {
            direct.pause();
        }
        drop(guard);
        if was_idle {
            self.ready.notify_one();
        }
        Some(slot)
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
            position: Some(Position { epoch: 1, seq: 2 }),
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
    fn a_slot_given_to_another_match_is_not_written_by_the_old_one() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let (fan_a, fan_b) = (Fanout::new(a.clone()), Fanout::new(b.clone()));
        let out = Arc::new(Outbox::new(8));
        out.want(&a, 1);
        fan_a.attach(out.clone(), 1, vec![]);
        out.unwant("a");
        out.want(&b, 2); // takes the slot "a" had
        fan_b.attach(out.clone(), 2, vec![]);
        assert_eq!(fan_a.send(frame(1)), 0, "a's frame finds generation 2 there");
        assert_eq!(fan_b.send(frame(7)), 1);
        let mut batch = Batch::default();
        out.take(&mut batch);
        let got: Vec<(&str, u64)> = batch.deliveries.iter().map(|d| (&*d.match_id, d.frame.seq)).collect();
        assert_eq!(got, vec![("b", 7)]);
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

    /// A socket that takes what `accept` says and records what it took.
    #[derive(Default)]
    struct FakeSocket {
        open: Mutex<bool>,
        accept: Mutex<VecDeque<Offer>>,
        taken: Mutex<Vec<String>>,
    }

    impl Direct for FakeSocket {
        fn offer(&self, text: &Utf8Bytes) -> Offer {
            if !*lock(&self.open) {
                return Offer::Refused;
            }
            let offer = lock(&self.accept).pop_front().unwrap_or(Offer::Sent);
            if offer != Offer::Sent {
                *lock(&self.open) = false;
            }
            if offer != Offer::Refused {
                lock(&self.taken).push(text.as_str().to_owned());
            }
            offer
        }
        fn pause(&self) {
            *lock(&self.open) = false;
        }
        fn resume(&self) -> Resumed {
            *lock(&self.open) = true;
            Resumed::Yes
        }
    }

    fn direct_outbox() -> (Arc<FakeSocket>, Arc<Outbox>, Fanout, Arc<str>) {
        let socket = Arc::new(FakeSocket::default());
        let out = Arc::new(Outbox::direct(4, socket.clone()));
        let id: Arc<str> = Arc::from("m");
        out.want(&id, 1);
        let fan = Fanout::new(id.clone());
        (socket, out, fan, id)
    }

    #[test]
    fn frames_go_straight_to_an_open_socket_and_are_the_position() {
        let (socket, out, fan, id) = direct_outbox();
        fan.attach(out.clone(), 1, vec![frame(1)]);
        // The catch-up is queued and closed the socket: frame 2 queues
        // behind it instead of overtaking it.
        assert_eq!(out.resume_direct(), Resumed::Queued);
        fan.send(frame(2));
        assert_eq!(seqs(&out).0, vec![1, 2]);
        assert!(lock(&socket.taken).is_empty());
        // The session wrote both: the socket opens, and frames 3..=9 (more
        // than the outbox holds) go to it without queueing.
        assert_eq!(out.resume_direct(), Resumed::Yes);
        for seq in 3..=9 {
            fan.send(frame(seq));
        }
        assert_eq!(*lock(&socket.taken), ["3", "4", "5", "6", "7", "8", "9"]);
        assert_eq!(seqs(&out), (vec![], vec![]));
        // A full socket: frame 10 is refused and queued, and everything
        // after it queues too until the session resumes; the outbox's
        // bound holds; a lag names the last frame taken (direct or queued).
        lock(&socket.accept).push_back(Offer::Refused);
        for seq in 10..=15 {
            fan.send(frame(seq));
        }
        let (queued, lagged) = seqs(&out);
        assert_eq!(queued, vec![10, 11, 12, 13]);
        assert_eq!(
            lagged,
            vec![Lagged {
                match_id: id,
                generation: 1,
                position: Some(Position { epoch: 1, seq: 13 }),
            }]
        );
    }

    #[tokio::test]
    async fn a_frame_begun_on_the_socket_wakes_the_session_and_the_rest_queues() {
        let (socket, out, fan, _id) = direct_outbox();
        fan.attach(out.clone(), 1, vec![]);
        assert_eq!(out.resume_direct(), Resumed::Yes);
        lock(&socket.accept).push_back(Offer::Begun);
        fan.send(frame(1));
        fan.send(frame(2));
        // Woken for the begun frame (its rest is the session's to flush),
        // with frame 2 queued behind it.
        tokio::time::timeout(std::time::Duration::from_secs(5), out.ready())
            .await
            .expect("the session is woken");
        assert_eq!(*lock(&socket.taken), ["1"]);
        assert_eq!(seqs(&out).0, vec![2]);
    }
}
