//! In a cluster, frames cross nodes: a match's owner publishes every frame
//! it sends (`super::publisher`), which reaches `tl.fr.<match>` once stored,
//! and a node whose sessions want a match another node runs serves them
//! from a relay ([`Relays`], the router's [`Remote`]): a stand-in handle
//! whose fan-out is fed from that subject.
//!
//! - **Publishing** is [`super::publisher`]: into `TL_FRAMES`, fenced by
//!   the partition's barrier, republished by the stream to
//!   `tl.fr.<match>` once stored.
//! - **A relay** subscribes to `tl.fr.<match>` first, then asks the owner
//!   for a snapshot (`tl.snap.<p>`, answered by `feed::cluster`). A
//!   session that attaches gets that snapshot and the updates the relay
//!   has seen since (it keeps the last [`RELAY_RING`]), then every later
//!   frame through the relay's fan-out: contiguous, as from the worker.
//!   Updates the relay sees out of order (a lost frame, a new epoch),
//!   frames under another lease token (a new owner), or this node's NATS
//!   connection coming back (frames sent meanwhile are lost, and when they
//!   were a match's last no later frame would show it) make every attached
//!   session catch up again (as after a full outbox), from a fresh
//!   snapshot. A status or names frame drops the cached snapshot. A
//!   session resuming with `since` is resumed from the ring (a `resumed`
//!   head naming the producers down, from the cached snapshot, then the
//!   updates after `since`) when the ring holds every update after it in
//!   the same epoch and the snapshot is current; otherwise it is sent a
//!   snapshot (`relay_resumed_total` counts the former). A relay that has
//!   forwarded nothing yet when a session resumes first fills its ring from
//!   what `TL_FRAMES` keeps of the match (the resume window; once per
//!   relay, bounded by [`HISTORY_WAIT`]), so a client moving to a node
//!   with no relay for its match is resumed too.
//! - A relay with no session (none attached, none waiting, no command
//!   queued, no handle handed out) for `--relay-idle-ms` (60 s) is let go:
//!   its subscription ends and its ring and snapshot are freed; a later
//!   session makes a new one. The check and the removal happen under the
//!   lock handles are handed out under, so no session is left holding a
//!   handle to a relay that went. A relay also ends at shutdown or when
//!   its subscription fails (its entry goes with it). At most `max` exist
//!   (the match capacity); `cluster_relays` counts them.
//!   Operator commands sent to a relay are not answered (their callers
//!   see the match as gone); bets never come here (`bets::cluster` sends
//!   them to the owner).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::frames::FrameHead;
use crate::cluster::partition::{frame_subject, snapshot_subject};
use crate::cluster::{Cluster, Owned, Partitions};
use crate::metrics::Metrics;
use crate::router::Remote;
use crate::worker::{self, Command, Frame, FrameKind, Inbox, Outbox, Position, WorkerHandle};

/// Update frames a relay keeps to bring a new session from its snapshot to
/// the present.
pub const RELAY_RING: usize = 256;
/// How long a relay waits before asking again for a snapshot the owner
/// could not give (no owner yet, or the match has no state yet).
const ASK_AGAIN: Duration = Duration::from_millis(200);
/// How long a relay waits for what `TL_FRAMES` keeps of its match.
const HISTORY_WAIT: Duration = Duration::from_secs(2);

/// A frame from its NATS message, with its publisher's lease token
/// (`None`: not one a node publishes).
fn frame_of(headers: Option<&async_nats::HeaderMap>, payload: Bytes) -> Option<(Frame, u64)> {
    let head = FrameHead::read(headers?)?;
    Some((Frame::from_head(&head, payload)?, head.token))
}

/// The relays of one node.
pub struct Relays {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    /// The client's reconnections ([`crate::cluster::Cluster::reconnected`]).
    reconnected: watch::Receiver<u64>,
    partitions: Partitions,
    owned: watch::Receiver<Owned>,
    relays: Keeper,
    max: usize,
    /// A relay with no session for this long is let go.
    idle: Duration,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// The relays of a node by match, each by the handle it is reached with.
type Keeper = Arc<Mutex<HashMap<Arc<str>, WorkerHandle>>>;

impl Relays {
    /// At most `max` relays at once.
    pub fn new(
        cluster: &Cluster,
        owned: watch::Receiver<Owned>,
        max: usize,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
        tasks: TaskTracker,
    ) -> Relays {
        Relays {
            client: cluster.client.clone(),
            js: cluster.js.clone(),
            reconnected: cluster.reconnected.clone(),
            partitions: cluster.config.partitions,
            owned,
            relays: Arc::new(Mutex::new(HashMap::new())),
            max,
            idle: cluster.config.relay_idle,
            metrics,
            tasks,
            stop,
        }
    }

    /// Relays alive now.
    pub fn len(&self) -> usize {
        self.relays.lock().expect("relays lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Remote for Relays {
    fn handle(&self, id: &str) -> Option<WorkerHandle> {
        let partition = self.partitions.partition_of(id);
        if self.owned.borrow().contains_key(&partition) {
            // Ours: its worker appears with its first event, or when the
            // tenure restores it from its snapshot (both announce it).
            return None;
        }
        let subject = frame_subject(id).ok()?;
        let mut relays = self.relays.lock().expect("relays lock");
        if let Some(h) = relays.get(id) {
            return Some(h.clone());
        }
        if relays.len() >= self.max {
            return None;
        }
        let id: Arc<str> = Arc::from(id);
        let (handle, inbox) = worker::stand_in(id.clone());
        relays.insert(id.clone(), handle.clone());
        self.metrics.cluster_relays.set(relays.len() as i64);
        let relay = Relay {
            id: id.clone(),
            partition,
            client: self.client.clone(),
            js: self.js.clone(),
            fanout: handle.updates.clone(),
            ring: VecDeque::new(),
            last: None,
            token: None,
            snapshot: None,
            pending: Vec::new(),
            history: History::Unread,
            resumed: self.metrics.cluster_relay_resumed.clone(),
        };
        let (stop, reconnected) = (self.stop.clone(), self.reconnected.clone());
        let idle = Idle {
            after: self.idle,
            keeper: self.relays.clone(),
            metrics: self.metrics.clone(),
        };
        self.tasks.spawn(async move {
            if relay.run(inbox, subject, reconnected, &idle, stop).await == Ended::Failed {
                // Its subscription failed: a later session gets a new one.
                let mut relays = idle.keeper.lock().expect("relays lock");
                relays.remove(&id);
                idle.metrics.cluster_relays.set(relays.len() as i64);
            }
        });
        Some(handle)
    }
}

/// How a relay's task ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// Let go, idle: its entry is gone already.
    Idle,
    /// Shutdown.
    Stopped,
    /// Its subscription failed or ended: its entry is still there.
    Failed,
}

/// When and from where a relay is let go.
struct Idle {
    after: Duration,
    keeper: Keeper,
    metrics: Arc<Metrics>,
}

impl Idle {
    /// Remove `relay` from the keeper if nobody uses it or is about to:
    /// no session attached or waiting, no command queued, and no handle
    /// out but the keeper's (checked under the keeper's lock, which
    /// [`Relays::handle`] clones handles under). `true` if removed.
    fn let_go(&self, relay: &Relay, inbox: &Inbox) -> bool {
        let mut relays = self.keeper.lock().expect("relays lock");
        if !relay.pending.is_empty() || relay.fanout.prune() > 0 || !inbox.unshared_and_empty() {
            return false;
        }
        relays.remove(&relay.id);
        self.metrics.cluster_relays.set(relays.len() as i64);
        true
    }
}

/// A session waiting for what makes it current.
struct Pending {
    outbox: Arc<Outbox>,
    generation: u64,
    /// Where it resumes from, if it does.
    since: Option<Position>,
}

/// Whether a relay read what `TL_FRAMES` keeps of its match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum History {
    /// Not yet (read only for a session resuming before the relay has
    /// forwarded anything).
    Unread,
    Wanted,
    Read,
}

/// One match run by another node, for this node's sessions.
struct Relay {
    id: Arc<str>,
    partition: u32,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    fanout: Arc<worker::Fanout>,
    /// The last updates forwarded, in seq order.
    ring: VecDeque<Frame>,
    /// (epoch, seq) of the last update forwarded.
    last: Option<(u64, u64)>,
    /// The lease token of the owner whose frames it forwards.
    token: Option<u64>,
    /// The owner's last snapshot.
    snapshot: Option<Frame>,
    pending: Vec<Pending>,
    history: History,
    /// Sessions resumed from the ring (`cluster_relay_resumed`).
    resumed: prometheus_client::metrics::counter::Counter,
}

impl Relay {
    async fn run(
        mut self,
        mut inbox: Inbox,
        subject: String,
        mut reconnected: watch::Receiver<u64>,
        idle: &Idle,
        stop: CancellationToken,
    ) -> Ended {
        // Only reconnections from now on.
        reconnected.borrow_and_update();
        // Subscribed before any snapshot is asked for: every frame after
        // the snapshot arrives here.
        let mut frames = match self.client.subscribe(subject).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(match_id = %self.id, error = %e, "relay cannot subscribe");
                return Ended::Failed;
            }
        };
        // Looked at every quarter of the idle time: let go after between
        // one and one and a quarter of it without a session.
        let mut check = tokio::time::interval(idle.after / 4);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut unused_since: Option<tokio::time::Instant> = None;
        let mut asking: Option<std::pin::Pin<Box<dyn Future<Output = Option<Frame>> + Send>>> = None;
        let mut ask_after: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ended::Stopped,
                cmd = inbox.recv() => match cmd {
                    Some(cmd) => self.command(*cmd),
                    None => return Ended::Failed,
                },
                msg = frames.next() => match msg {
                    Some(m) => self.frame(m.headers.as_ref(), m.payload),
                    None => return Ended::Failed,
                },
                _ = check.tick() => {
                    let unused = self.pending.is_empty() && self.fanout.prune() == 0;
                    match unused_since {
                        _ if !unused => unused_since = None,
                        None => unused_since = Some(tokio::time::Instant::now()),
                        Some(since) if since.elapsed() >= idle.after && idle.let_go(&self, &inbox) => {
                            tracing::debug!(match_id = %self.id, "relay let go: no session");
                            return Ended::Idle;
                        }
                        Some(_) => {}
                    }
                }
                // Frames published while this node was away are lost, and
                // if they were a match's last no later frame shows the gap.
                Ok(()) = reconnected.changed() => self.resync("this node reconnected to NATS"),
                snap = async { asking.as_mut().expect("guarded").await }, if asking.is_some() => {
                    asking = None;
                    match snap {
                        Some(s) => self.snapshot = Some(s),
                        None => ask_after = Some(tokio::time::Instant::now() + ASK_AGAIN),
                    }
                }
                _ = tokio::time::sleep_until(ask_after.unwrap_or_else(tokio::time::Instant::now)), if ask_after.is_some() => {
                    ask_after = None;
                }
            }
            if self.history == History::Wanted {
                self.history = History::Read;
                self.read_history().await;
            }
            let wants_snapshot = self.complete();
            if wants_snapshot && asking.is_none() && ask_after.is_none() {
                asking = Some(Box::pin(ask(self.client.clone(), self.partition, self.id.clone())));
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Attach {
                since,
                outbox,
                generation,
            } => {
                // One wait per session: a later attach replaces its earlier.
                self.pending.retain(|p| !Arc::ptr_eq(&p.outbox, &outbox));
                match since.and_then(|p| self.resumed(p)) {
                    Some(frames) => {
                        self.resumed.inc();
                        self.fanout.attach(outbox, generation, frames);
                    }
                    None => {
                        if since.is_some() && self.last.is_none() && self.history == History::Unread {
                            self.history = History::Wanted;
                        }
                        self.pending.push(Pending {
                            outbox,
                            generation,
                            since,
                        });
                    }
                }
            }
            // Not answered here (the reply is dropped: "gone").
            other => tracing::debug!(match_id = %self.id, command = ?std::mem::discriminant(&other), "not for a relay"),
        }
    }

    /// Load the ring from what `TL_FRAMES` keeps of the match (before any
    /// frame is forwarded: nobody is attached), so a session resuming at a
    /// point the stream still holds is resumed, not sent a snapshot. Frames
    /// the subscription brings meanwhile follow (those already read are
    /// skipped by seq). Bounded by [`HISTORY_WAIT`]; a failure leaves the
    /// ring empty (the sessions get a snapshot).
    async fn read_history(&mut self) {
        let read = tokio::time::timeout(HISTORY_WAIT, crate::cluster::frames::history(&self.js, &self.id)).await;
        let kept = match read {
            Ok(Ok(kept)) => kept,
            Ok(Err(e)) => {
                tracing::debug!(match_id = %self.id, error = %e, "the frames kept could not be read");
                return;
            }
            Err(_) => return,
        };
        for (headers, payload) in kept {
            self.frame(headers.as_ref(), payload);
        }
    }

    fn frame(&mut self, headers: Option<&async_nats::HeaderMap>, payload: Bytes) {
        let Some((frame, token)) = frame_of(headers, payload) else {
            tracing::warn!(match_id = %self.id, "not a frame: skipped");
            return;
        };
        let token = Some(token);
        if token != self.token {
            // Another owner (a takeover, or this one's next tenure): what
            // it sends is not assumed to continue what the last one sent.
            // Every session catches up from the new owner's snapshot.
            if self.token.is_some() {
                self.resync("a new owner");
            }
            self.token = token;
        }
        if frame.kind == FrameKind::Update {
            match self.last {
                Some((e, s)) if e == frame.epoch && frame.seq <= s => return,
                Some((e, s)) if e == frame.epoch && frame.seq == s + 1 => {}
                None => {}
                Some((e, s)) => {
                    tracing::info!(match_id = %self.id, last_epoch = e, last_seq = s, epoch = frame.epoch, seq = frame.seq, "relay saw a gap");
                    self.resync("a gap");
                }
            }
            self.last = Some((frame.epoch, frame.seq));
            self.ring.push_back(frame.clone());
            if self.ring.len() > RELAY_RING {
                self.ring.pop_front();
            }
        } else {
            // A status or names frame: a session given the cached snapshot
            // and the updates after it would miss this one.
            self.snapshot = None;
        }
        self.fanout.send(frame);
    }

    /// What resumes a session at `since` from the updates forwarded: a
    /// `resumed` head and every update after `since`, if the ring holds
    /// them all, in the epoch of `since`, and the cached snapshot (no status
    /// or names frame since it) says which producers are down now. `None`:
    /// the session is made current from a snapshot instead.
    fn resumed(&self, since: Position) -> Option<Vec<Frame>> {
        let snapshot = self.snapshot.as_ref()?;
        let (epoch, last) = self.last?;
        if since.epoch != epoch || snapshot.epoch != epoch || since.seq > last {
            return None;
        }
        let first = self.ring.front().map_or(last + 1, |f| f.seq);
        if since.seq + 1 < first {
            return None;
        }
        let head = Frame::resumed_from(snapshot, since.seq)?;
        let missed = self.ring.iter().filter(|f| f.seq > since.seq).cloned();
        Some(std::iter::once(head).chain(missed).collect())
    }

    /// Every session catches up from a fresh snapshot, which is also where
    /// the relay starts again.
    fn resync(&mut self, why: &'static str) {
        tracing::info!(match_id = %self.id, why, "the relay's sessions catch up");
        self.fanout.lag_all();
        self.ring.clear();
        self.snapshot = None;
        self.last = None;
    }

    /// Attach the sessions that can be made current; `true` if one waits
    /// for a (newer) snapshot.
    fn complete(&mut self) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        if self.snapshot.is_some() {
            // Sessions resuming: from the ring, if it holds what they missed.
            for p in std::mem::take(&mut self.pending) {
                match p.since.and_then(|s| self.resumed(s)) {
                    Some(frames) => {
                        self.resumed.inc();
                        self.fanout.attach(p.outbox, p.generation, frames);
                    }
                    None => self.pending.push(p),
                }
            }
            if self.pending.is_empty() {
                return false;
            }
        }
        let Some(snap) = &self.snapshot else { return true };
        let catchup = match self.last {
            // Nothing forwarded yet: the snapshot is the start.
            None => Some(vec![snap.clone()]),
            Some((e, _)) if e != snap.epoch => None,
            // The frames after it have not arrived yet: wait for them.
            Some((_, s)) if snap.seq > s => return false,
            Some(_) => {
                let after: Vec<Frame> = self.ring.iter().filter(|f| f.seq > snap.seq).cloned().collect();
                let covered = after.first().is_none_or(|f| f.seq == snap.seq + 1);
                covered.then(|| std::iter::once(snap.clone()).chain(after).collect())
            }
        };
        let Some(catchup) = catchup else {
            // Too old for what was forwarded since: ask again.
            self.snapshot = None;
            return true;
        };
        if self.last.is_none() {
            self.last = Some((snap.epoch, snap.seq));
        }
        for p in self.pending.drain(..) {
            self.fanout.attach(p.outbox, p.generation, catchup.clone());
        }
        false
    }
}

/// Ask the owner of `partition` for a snapshot of `id` (`None`: no owner
/// answered, or it has no such match yet).
async fn ask(client: async_nats::Client, partition: u32, id: Arc<str>) -> Option<Frame> {
    let request = Bytes::copy_from_slice(id.as_bytes());
    match client.request(snapshot_subject(partition), request).await {
        Ok(reply) if !reply.payload.is_empty() => frame_of(reply.headers.as_ref(), reply.payload).map(|(f, _)| f),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(match_id = %id, error = %e, "no snapshot from the owner yet");
            None
        }
    }
}
