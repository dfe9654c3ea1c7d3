//! A WebSocket session's [`Outbox`]: the one bounded queue every match it
//! subscribes to pushes its frames into ([`super::Fanout`]), with one
//! waker; and the [`Direct`] path, on which those frames go straight to
//! the session's socket instead.
//!
//! Writing at once: an outbox given the session's socket writes a frame
//! straight to it, from the match's own task, while nothing is queued and
//! the session is not writing, as a Node server's `send` does; the session
//! is not woken. A frame the socket does not take at once closes that
//! path: the frame (or, if the socket took part of it, the frame's rest,
//! which the socket keeps and the session's next write finishes) goes
//! first, and everything after it goes through the queue and the session,
//! until the session has written everything and opens the socket to direct
//! writes again ([`Outbox::resume_direct`]). While anything is queued (a
//! frame, a catch-up, a lag) later frames queue behind it, and the session
//! taking it closes the socket until it has written it. Either way a frame
//! is written once, whole and in order.
//!
//! Each subscription lives in a slot whose index its match keeps, so a
//! frame costs no lookup by match id; a session never reuses a generation,
//! so a match whose slot was given to another subscription finds another
//! generation there and is detached.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::fanout::{Batch, Delivery, Lagged};
use super::{Frame, FrameKind, Position};
use crate::deflate::Text;

/// A session's socket, written to directly by the matches when the
/// session has nothing of its own queued or being written.
pub trait Direct: Send + Sync {
    /// Write `text` as one frame now, if the socket is open to direct
    /// writes and takes at least part of it.
    fn offer(&self, text: &Text) -> Offer;
    /// Close the socket to direct writes (the session took frames to write).
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

/// One session's queue of frames from all its matches.
pub struct Outbox {
    pub(super) inner: Mutex<Inner>,
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
pub(super) struct Inner {
    queue: VecDeque<Delivery>,
    lagged: Vec<Lagged>,
    /// Each match the session subscribes to now: its slot in `slots`.
    wanted: HashMap<Arc<str>, usize>,
    /// The subscriptions; a freed slot is `None` until reused. Generations
    /// are never reused by a session, so a match holding a slot that was
    /// since given to another subscription finds another generation there.
    pub(super) slots: Vec<Option<Want>>,
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
pub(super) struct Want {
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

    /// Wait until something is queued, or a frame begun on the socket
    /// waits for its rest (returns at once if either happened since the
    /// last [`Outbox::take`]).
    pub async fn ready(&self) {
        self.ready.notified().await
    }

    /// Everything queued, in order, and the subscriptions that lagged.
    /// Swaps buffers with `batch` (which must be empty), so neither
    /// allocates in the steady state. The socket is closed to direct
    /// writes while the session holds what it took (a later frame written
    /// directly would overtake it); the session opens it again once it has
    /// written everything. Until then, anything queued keeps later frames
    /// in the queue.
    pub fn take(&self, batch: &mut Batch) {
        debug_assert!(batch.is_empty());
        let mut inner = lock(&self.inner);
        std::mem::swap(&mut inner.queue, &mut batch.deliveries);
        std::mem::swap(&mut inner.lagged, &mut batch.lagged);
        if !batch.is_empty()
            && let Some(direct) = &self.direct
        {
            direct.pause();
        }
        // A burst leaves a large buffer behind: give it back once idle.
        if inner.queue.capacity() > 4 * self.capacity.min(64) {
            inner.queue = VecDeque::new();
        }
    }

    /// `false`: the subscription is over (unwanted, lagged or closed) and
    /// the match should forget it.
    pub(super) fn push(&self, match_id: &Arc<str>, slot: usize, generation: u64, frame: &Frame) -> bool {
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
        drop(guard);
        if was_idle {
            self.ready.notify_one();
        }
        true
    }

    /// The subscription `generation` of `match_id` lost frames: the session
    /// is told, and takes nothing more of it until it subscribes again.
    pub(super) fn lag(&self, match_id: &Arc<str>, generation: u64) {
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
    pub(super) fn push_catchup(&self, match_id: &Arc<str>, generation: u64, frames: Vec<Frame>) -> Option<usize> {
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
    pub(super) fn new(outbox: Arc<Outbox>) -> Watch {
        Watch {
            outbox,
            batch: Batch::default(),
        }
    }

    /// The next frame; `None` if the watch was told to catch up: frames
    /// were lost (the queue was full) or the match was released.
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

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here panics while holding a lock; a poisoned one still holds
    // consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
