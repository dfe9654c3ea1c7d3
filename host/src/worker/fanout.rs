//! Fan-out: a match pushes each frame into the [`Outbox`] of every session
//! subscribed to it, the way a Node server loops over a set and calls
//! `send` (and, while a session has nothing queued, the outbox writes the
//! frame straight to its socket: [`super::outbox`]).
//!
//! Each match has one [`Fanout`] (a list of subscribed outboxes); each
//! WebSocket session has one outbox: a bounded queue of [`Delivery`]s from
//! all its matches and one waker. Sending a frame to N subscribers is N
//! pushes of a shared buffer (no copy, no allocation) under short locks,
//! each a `writev` or a queued reference, and wakes each session at most
//! once per batch: a session drains everything queued in one go and writes
//! it out together.
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
//! the session then catches up from the position of the last frame taken
//! for it (the missed updates, or a fresh snapshot). A closed outbox (its
//! session ended) or a subscription the session no longer wants is
//! detached on the match's next frame.
//!
//! A match released from this node ([`Fanout::release`]: in a cluster, its
//! partition moved away) tells every subscriber to catch up, and so every
//! session that attaches later (its `Attach` was queued before the
//! release), at once: it finds the match where it runs now.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::outbox::lock;
use super::{Frame, Outbox, Position, Watch};

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
    /// The match no longer runs here ([`Fanout::release`]): a subscriber
    /// attaching is told to catch up at once. Read under `subs`' lock, set
    /// before `release` takes it, so an attach either sees it or is there
    /// to be told.
    released: AtomicBool,
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
            released: AtomicBool::new(false),
        }
    }

    /// [`Fanout::send`] for a frame kept nowhere else (a status): rendered
    /// only if a subscriber or the tap would hear it.
    pub fn send_if_heard(&self, render: impl FnOnce() -> Frame) -> usize {
        if self.tap.is_none() && lock(&self.subs).is_empty() {
            return 0;
        }
        self.send(render())
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
            if self.released.load(Ordering::Relaxed) {
                outbox.lag(&self.match_id, generation);
                return;
            }
            subs.push(Sub {
                outbox,
                generation,
                slot,
            });
        }
    }

    /// The match no longer runs here: every subscriber, and every one that
    /// attaches from now on, is told to catch up (from wherever it runs
    /// now).
    pub fn release(&self) {
        self.released.store(true, Ordering::Relaxed);
        self.lag_all();
    }

    /// Tell every subscriber it lagged (they catch up from where they
    /// are, as after a full outbox) and forget them: what they were sent
    /// can no longer be continued without a gap.
    pub fn lag_all(&self) {
        for s in std::mem::take(&mut *lock(&self.subs)) {
            s.outbox.lag(&self.match_id, s.generation);
        }
    }

    /// Forget the subscribers that left (unsubscribed, or their session
    /// ended) since the last frame; how many remain.
    pub fn prune(&self) -> usize {
        let mut subs = lock(&self.subs);
        subs.retain(|s| s.outbox.wants(&self.match_id, s.generation));
        subs.len()
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
        Watch::new(outbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::{Direct, FrameKind, Offer, Resumed};
    use std::collections::VecDeque;

    fn frame(seq: u64) -> Frame {
        Frame {
            seq,
            epoch: 1,
            kind: FrameKind::Update,
            bytes: crate::deflate::Text::from(format!("{seq}")),
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
        assert_eq!(lock(&out.inner).slots.len(), 1, "the slot was reused");
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
        fn offer(&self, text: &crate::deflate::Text) -> Offer {
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
        // The catch-up is queued: frame 2 queues behind it instead of
        // overtaking it (and the session's take closes the socket until it
        // has written both).
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

    #[test]
    fn after_a_lag_later_frames_queue_until_the_session_has_written() {
        let (socket, out, fan_a, _a) = direct_outbox();
        let b: Arc<str> = Arc::from("b");
        let fan_b = Fanout::new(b.clone());
        out.want(&b, 2);
        fan_a.attach(out.clone(), 1, vec![]);
        fan_b.attach(out.clone(), 2, vec![]);
        assert_eq!(out.resume_direct(), Resumed::Yes);
        fan_a.lag_all();
        fan_b.send(frame(1)); // behind the lag: queued
        let mut batch = Batch::default();
        out.take(&mut batch); // the session takes it, not yet written
        fan_b.send(frame(2));
        assert!(lock(&socket.taken).is_empty(), "frame 2 must not overtake frame 1");
        assert_eq!(seqs(&out).0, vec![2]);
    }

    #[tokio::test]
    async fn a_frame_begun_on_the_socket_wakes_the_session_and_the_rest_queues() {
        let (socket, out, fan, _id) = direct_outbox();
        fan.attach(out.clone(), 1, vec![]);
        assert_eq!(out.resume_direct(), Resumed::Yes);
        lock(&socket.accept).push_back(Offer::Begun);
        fan.send(frame(1));
        // Woken for the begun frame, with nothing queued: its rest is the
        // session's to flush.
        tokio::time::timeout(std::time::Duration::from_secs(5), out.ready())
            .await
            .expect("the session is woken");
        assert_eq!(*lock(&socket.taken), ["1"]);
        fan.send(frame(2));
        assert_eq!(seqs(&out).0, vec![2], "queued behind the begun frame");
    }
}
