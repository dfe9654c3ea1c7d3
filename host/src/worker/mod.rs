//! Match workers: one task, one guest instance, one mailbox per match.
//!
//! A worker drains a bounded mailbox of [`Command`]s in order, so feed
//! events, subscriptions, bets and switches of a match are serialised. Each
//! applied event gets the next `seq`, one update frame (serialised once,
//! pushed to every subscribed session's queue by the match's [`Fanout`])
//! and one
//! journal append. Guest calls run inline on the tokio task (microseconds;
//! a runaway is cut off by the epoch deadline).
//!
//! What it is asked and answers is [`command`]. The match's lifecycle is
//! one enum ([`lifecycle`], with its table); the rest is split by
//! concern: [`supervise`] (apply under supervision,
//! restart, dead letter, quarantine, heal), [`persist`] (journal, snapshots,
//! clean marks, restore at start), [`switch`] (hot swap with first-event
//! probation), [`catchup`] (snapshots and missed updates for subscribers),
//! [`ring`] (the resume ring, released while the match naps: [`nap`]),
//! [`regenerate`] (missed updates older than the resume ring, rebuilt from
//! the journal),
//! [`bets`] (decisions and settlements), [`producers`] (which producers
//! the match hears from, telling subscribers when one is down). It depends
//! only on what lies below it: the guest sandbox, the journal, the
//! supervisor policy, the producer board; it tells the layers above through
//! [`Observer`]. One clock: tokio's.

mod bets;
mod catchup;
mod checkpoint;
mod command;
mod fanout;
mod frame;
mod inspect;
mod lifecycle;
mod mailbox;
mod names;
mod nap;
mod observer;
mod operate;
mod outbox;
mod persist;
mod producers;
mod regenerate;
mod release;
mod ring;
mod supervise;
mod switch;
#[cfg(test)]
mod tests;
mod timer;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::journal::{BetRecord, Journal, Recovered};
use crate::metrics::Metrics;
use crate::producers::Board;
use crate::sandbox::GuestVersion;
use crate::supervisor::{Intensity, Policy};
pub use checkpoint::FeedBehind;
pub use command::{Catchup, Command, Position, SwitchOutcome};
pub use fanout::{Batch, Delivery, Fanout, FrameTap, Lagged};
pub use frame::{Frame, FrameKind, Status};
pub use inspect::{Card, Detail, LastError, StateCell};
pub use lifecycle::State;
use lifecycle::{Base, Lifecycle};
use mailbox::WeakMailbox;
pub use mailbox::{Closed, Mailbox};
pub use names::NameSource;
pub use observer::{BetLog, Nobody, Observer, ProbationNews, SnapshotSink};
pub use operate::{Action, Refusal};
pub use outbox::{Direct, Offer, Outbox, Resumed, Watch};
use persist::{Mark, Tail};
use ring::Ring;
pub use switch::Current;
use timer::{Alarm, Timer};

/// Mailbox capacity per match ([`mailbox`]). When full, the feed reader waits (TCP
/// backpressure to the feed): events are never dropped, and a stuck guest
/// cannot hold the mailbox longer than its epoch deadline per event.
pub const MAILBOX_CAPACITY: usize = 1024;

/// Recent update frames a worker keeps for resuming clients: enough to
/// cover what the store writer has not inserted yet (one commit interval);
/// older frames are regenerated from the journal ([`regenerate`]). At most
/// this many frames...
pub const RESUME_RING: usize = 16;
/// ...and at most this many bytes of their text ([`ring`];
/// the last frame is kept whatever its size). A frame some session sent
/// compressed also holds its compressed bytes (`permessage-deflate`,
/// [`crate::deflate::Text`]), not counted here: a fifth more on the
/// simulator's updates, at most as much again. A resume reaching further back than ring and store
/// waits for the store writer once (see [`catchup`]). A napping or
/// hibernated match keeps no ring.
pub const RESUME_RING_BYTES: usize = 16 * 1024;

/// Encoded events kept in memory since the last snapshot (the recovery
/// base) are capped at this many bytes: past it the worker snapshots.
pub const RECOVERY_TAIL_BYTES: usize = 16 * 1024;

/// How a worker persists, recovers and reports.
#[derive(Clone)]
pub struct WorkerConfig {
    /// `None` runs without durability (benchmark baseline).
    pub journal: Option<Arc<dyn Journal>>,
    pub policy: Policy,
    /// Snapshot the guest state every this many events...
    pub snapshot_every: u64,
    /// ...or this often, whichever comes first.
    pub snapshot_interval: Duration,
    /// Idle time after which a match is durably marked clean.
    pub clean_after: Duration,
    /// Idle time after which a match gives its instance back (its pool
    /// slot and memory), keeping only its state; the next command restores
    /// it. `None`: never.
    pub hibernate_after: Option<Duration>,
    /// Idle time after which a live match gives its instance back but
    /// keeps its buffers and a checkpoint of its state ([`nap`]); `None`:
    /// never.
    pub nap_after: Option<Duration>,
    /// Who hears about versions, probations and settlements.
    pub observer: Arc<dyn Observer>,
    pub metrics: Arc<Metrics>,
    /// The server is behind its feed: no checkpoints
    /// ([`FeedBehind`]).
    pub feed_behind: checkpoint::FeedBehind,
    /// Which producers are down: bets on their markets are refused, their
    /// matches' subscribers told.
    pub producers: watch::Receiver<Board>,
    /// Descriptions and fixtures for names in frames; `None`: frames carry
    /// ids only.
    pub names: Option<NameSource>,
    /// In a cluster: sees every frame (published for the other nodes).
    pub tap: Option<Arc<dyn FrameTap>>,
    /// In a cluster: where bets are recorded (instead of `journal`).
    pub bet_log: Option<Arc<dyn BetLog>>,
    /// In a cluster: where snapshots are kept (instead of `journal`).
    pub snapshots: Option<Arc<dyn SnapshotSink>>,
    /// The router's version, taken by a sleeping match as it wakes
    /// ([`switch`]); `None` (no router): its own stays.
    pub current: Option<Current>,
}

/// The ends of a worker other tasks hold.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    pub mailbox: Mailbox,
    pub updates: Arc<Fanout>,
    /// Its lifecycle state, as of its last transition.
    pub state: Arc<StateCell>,
}

/// Start the worker for `match_id` (restoring `recovered` if given).
pub fn spawn(
    match_id: Arc<str>,
    version: GuestVersion,
    cfg: Arc<WorkerConfig>,
    recovered: Option<Recovered>,
    tasks: &tokio_util::task::TaskTracker,
) -> WorkerHandle {
    use crate::resident;
    // What the match keeps for as long as it is tracked, asleep or not,
    // comes from the resident heap: its mailbox, fan-out, state cell,
    // worker and task. What it recovered is read once, and the listing's
    // entry lives in a shared table: both outside.
    let recovered = recovered.map(Box::new);
    let (handle, worker, rx) = resident::scope(|| {
        let (mailbox, rx) = mailbox::channel(MAILBOX_CAPACITY);
        let updates = Arc::new(Fanout::tapped(match_id.clone(), cfg.tap.clone()));
        let state = Arc::new(StateCell::new(State::Restarting));
        let handle = WorkerHandle {
            mailbox: mailbox.clone(),
            updates: updates.clone(),
            state: state.clone(),
        };
        let worker = Box::new(Worker::new(match_id, version, cfg, updates, mailbox.downgrade(), state));
        (handle, worker, rx)
    });
    // Placed before its task runs, so a listing right after a restart
    // already shows every match.
    worker.env.observer.runs(&worker.id, worker.version.version_arc());
    resident::scope(|| {
        tasks.spawn(worker.run(rx, recovered));
    });
    handle
}

/// A handle that is not a worker: its commands go to whoever holds the
/// [`Inbox`] (in a cluster, the relay of a match another node runs), its
/// frames come from whoever sends on its [`Fanout`].
pub fn stand_in(match_id: Arc<str>) -> (WorkerHandle, Inbox) {
    let (mailbox, rx) = mailbox::channel(MAILBOX_CAPACITY);
    let handle = WorkerHandle {
        mailbox,
        updates: Arc::new(Fanout::new(match_id)),
        state: Arc::new(StateCell::new(State::Live)),
    };
    (handle, Inbox(rx))
}

/// The commands sent to a [`stand_in`]'s handle.
pub struct Inbox(mailbox::Receiver);

impl Inbox {
    /// The next command; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Box<Command>> {
        self.0.recv().await
    }

    /// No command is queued and only one handle can send (the keeper's):
    /// no one else holds the handle to send with.
    pub fn unshared_and_empty(&self) -> bool {
        self.0.unshared_and_empty()
    }
}

pub(crate) struct Worker {
    id: Arc<str>,
    /// The guest version this match runs.
    version: GuestVersion,
    life: Lifecycle,
    env: Arc<WorkerConfig>,
    updates: Arc<Fanout>,
    /// To tell itself about bets whose record failed (weak: it must not
    /// keep its own mailbox open).
    mailbox: WeakMailbox,
    /// Seq of the last applied event.
    seq: u64,
    /// In a cluster: the `TL_EVENTS` sequence of the last event handled.
    position: Option<u64>,
    epoch: u64,
    intensity: Intensity,
    /// Last snapshot of the guest state (the recovery base)... (Boxed:
    /// a hibernated match has given it back, and holds only the pointer.)
    base: Option<Box<Base>>,
    /// ...and the encoded events applied since, in order. Whether the
    /// store has the base too (a hibernated match then gives its copy
    /// back: `base` is `None`, see [`release`]).
    tail: Tail,
    stored: release::Stored,
    last_snapshot: Instant,
    /// Durably clean at `seq`, or dirty since a push (see [`persist`]).
    mark: Mark,
    /// Last update frames, for resuming clients (see [`RESUME_RING`]).
    recent: Ring,
    /// When the last command arrived (for naps and hibernation).
    last_command: Instant,
    /// The next idle deadline, armed ([`timer`]).
    alarm: Alarm,
    /// How many of the last commands (up to 2) in a row came after an
    /// idle spell of at least `nap_after`: 2 makes a sparse match, which
    /// naps again sooner ([`nap::NAP_AGAIN_AFTER`]).
    long_gaps: u8,
    /// Accepted bets on this match, with where they stand.
    bets: Vec<BetRecord>,
    /// Telling owners of the last settlements (once durable).
    telling: Option<tokio::task::JoinHandle<()>>,
    /// The last snapshot frame served, and what it was made from.
    /// (Boxed: most matches have none most of the time.)
    snapshot_cache: Option<Box<(catchup::SnapshotKey, Frame)>>,
    /// Update frames the last catch-up regenerated, for the next one
    /// needing the same seqs (see [`catchup`]).
    regenerated: Option<Box<regenerate::Regenerated>>,
    /// The producer board, watched.
    board: watch::Receiver<Board>,
    /// Its producers, and what its subscribers were told of them.
    producers: producers::Producers,
    /// Its fixture and the names it has sent.
    naming: names::Naming,
    /// Its lifecycle state, published (see [`inspect`]).
    shown: Arc<StateCell>,
    /// Restarts and the last failure, once there was one.
    troubles: Option<Box<inspect::Troubles>>,
    /// The last version it failed to switch to: not taken on waking.
    refused: Option<Arc<str>>,
    /// Whether the observer was last told it sleeps.
    told_asleep: bool,
}

/// What woke the command loop.
enum Wake {
    Command(Option<Box<Command>>),
    /// An idle deadline ([`timer`]).
    Timer(Timer),
    /// The producer board changed (`false`: its sender is gone).
    Board(bool),
    /// The fixture arrived (`None`: it never will).
    Fixture(Option<Arc<crate::names::Fixture>>),
    /// The barrier asked for before giving the base back resolved
    /// (`true`: the store has it durably).
    Stored(bool),
}

impl Worker {
    fn new(
        id: Arc<str>,
        version: GuestVersion,
        env: Arc<WorkerConfig>,
        updates: Arc<Fanout>,
        mailbox: WeakMailbox,
        shown: Arc<StateCell>,
    ) -> Worker {
        Worker {
            intensity: Intensity::new(env.policy),
            id,
            version,
            life: Lifecycle::Restarting,
            updates,
            mailbox,
            seq: 0,
            epoch: 0,
            position: None,
            base: None,
            tail: Tail::default(),
            stored: release::Stored::No,
            last_snapshot: Instant::now(),
            // Not counted as unclean until its first push.
            mark: Mark::Clean,
            recent: Ring::default(),
            last_command: Instant::now(),
            alarm: Alarm::default(),
            long_gaps: 0,
            bets: Vec::new(),
            telling: None,
            snapshot_cache: None,
            regenerated: None,
            board: env.producers.clone(),
            producers: producers::Producers::default(),
            naming: names::Naming::default(),
            shown,
            troubles: None,
            refused: None,
            told_asleep: false,
            env,
        }
    }

    /// The command loop. A task is as large as its future, the largest
    /// state it can be in, and a hibernated match waits in the select below
    /// for hours: so the worker is boxed (an async fn's arguments are held
    /// twice) and every longer await is boxed too.
    async fn run(mut self: Box<Self>, mut rx: mailbox::Receiver, recovered: Option<Box<Recovered>>) {
        self.env.metrics.live_matches.inc();
        Box::pin(self.start(recovered.map(|r| *r))).await;
        let mut board_open = true;
        loop {
            if self.sleep_changed() {
                Box::pin(self.settle_asleep()).await;
            }
            let next = self.next_timer();
            self.alarm.set(next);
            let wake = tokio::select! {
                c = rx.recv() => Wake::Command(c),
                t = self.alarm.fire() => Wake::Timer(t),
                r = self.board.changed(), if board_open => Wake::Board(r.is_ok()),
                f = names::arrival(&mut self.naming.waiting) => Wake::Fixture(f),
                ok = release::syncing(&mut self.stored) => Wake::Stored(ok),
            };
            match wake {
                Wake::Command(None) => break,
                Wake::Command(Some(cmd)) => {
                    // Being looked at is not activity: a console watching
                    // must not keep a match from hibernating.
                    if !matches!(*cmd, Command::Inspect { .. }) {
                        self.note_command(Instant::now());
                    }
                    Box::pin(self.handle(*cmd)).await;
                    // Not under a backlog, the server's (its feed reader
                    // finding more waiting) or the match's own (its
                    // mailbox): there the worker applies events rather
                    // than saving states (`checkpoint`). The mailbox is
                    // read once, and again only after a save, during which
                    // a command may have come.
                    let mut queued = rx.len();
                    if !self.env.feed_behind.get() && queued <= checkpoint::QUEUED_MAX && self.checkpoint_if_due() {
                        queued = rx.len();
                    }
                    // A spare for the next restart or wake-up, made while
                    // nobody waits (`sandbox::spares`).
                    if queued == 0 {
                        self.version.replenish_spare();
                    }
                }
                Wake::Timer(Timer::Clean) => Box::pin(self.on_idle()).await,
                Wake::Timer(Timer::Nap) => self.nap(),
                Wake::Timer(Timer::Hibernate) => self.hibernate(),
                Wake::Board(open) => {
                    board_open = open;
                    let board = self.board.borrow_and_update().clone();
                    self.on_board(&board);
                }
                Wake::Fixture(f) => self.on_fixture(f),
                Wake::Stored(ok) => self.on_base_stored(ok),
            }
        }
        Box::pin(self.stop()).await;
    }

    async fn handle(&mut self, cmd: Command) {
        // Records of bets this match knows already (a cluster's records
        // arrive again with each settlement): nothing to do, not even
        // waking a hibernated match.
        if let Command::RestoreBets { records } = &cmd
            && records
                .iter()
                .all(|r| r.decision.is_err() || self.bets.iter().any(|b| b.request.id == r.request.id))
        {
            return;
        }
        // A switch wakes a hibernated match only if it really switches; an
        // inspection or an operator's action never wakes it by itself.
        if !matches!(
            cmd,
            Command::Switch { .. } | Command::ForgetBet { .. } | Command::Inspect { .. } | Command::Operate { .. }
        ) {
            self.wake().await;
        }
        match cmd {
            Command::Event {
                event,
                routed,
                raw,
                position,
            } => {
                if position.is_some() {
                    self.position = position;
                }
                self.heard_from(event.header().product);
                self.ask_fixture();
                self.prepare_names(&event);
                let settles = event.settles_bets();
                self.on_event(touchline_guest::encode(&event), Some(routed), raw).await;
                self.naming.forget_pending();
                if settles && !self.bets.is_empty() {
                    self.settle_bets().await;
                }
            }
            Command::Attach {
                since,
                outbox,
                generation,
            } => {
                let frames = match self.catchup(since).await {
                    Catchup::Snapshot(frame) => vec![frame],
                    Catchup::Missed(frames) => frames,
                };
                self.updates.attach(outbox, generation, frames);
            }
            Command::Subscribe { since, reply } => {
                let catchup = self.catchup(since).await;
                let _ = reply.send(catchup);
            }
            Command::Heal { reply } => {
                let report = self.heal().await;
                let _ = reply.send(report);
            }
            Command::Bet { request, reply } => self.bet(request, reply).await,
            Command::Switch {
                version,
                probation,
                reply,
            } => {
                let outcome = self.switch_asked(version, probation).await;
                let _ = reply.send(outcome);
            }
            Command::ForgetBet { id } => self.bets.retain(|b| b.request.id != id),
            Command::RestoreBets { records } => self.restore_bets(records).await,
            Command::Inspect { detail, reply } => {
                let answer = if detail {
                    self.detail()
                } else {
                    Detail {
                        card: self.card(),
                        frames: Vec::new(),
                        bets: Vec::new(),
                    }
                };
                let _ = reply.send(answer);
            }
            Command::Operate { action, reply } => {
                let outcome = self.operate(action).await;
                let _ = reply.send(outcome);
            }
        }
    }

    /// Mailbox closed (graceful shutdown, or the router let the match go:
    /// `Router::release`). Leave a snapshot and a clean mark.
    async fn stop(&mut self) {
        if !matches!(self.life, Lifecycle::Hibernated { .. }) {
            self.snapshot();
        }
        self.mark_clean().await;
        if matches!(
            self.life,
            Lifecycle::Probation { .. } | Lifecycle::Hibernated { fallback: Some(_) }
        ) {
            self.env.observer.probation(&self.id, ProbationNews::Ended);
        }
        self.enter(Lifecycle::Stopped);
        self.env.metrics.live_matches.dec();
        self.env.observer.stopped(&self.id);
        tracing::debug!(match_id = %self.id, seq = self.seq, "worker stopped");
    }

    fn journal(&self) -> Option<&dyn Journal> {
        self.env.journal.as_deref()
    }
}

/// A content hash short enough for logs and status frames.
fn short(version: &str) -> String {
    version.chars().take(12).collect()
}
