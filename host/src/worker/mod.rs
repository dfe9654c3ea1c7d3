//! Match workers: one task, one store, one guest instance per match, supervised.
//!
//! A worker owns its [`GuestInstance`] and drains a bounded mailbox of
//! [`Command`]s in order, so feed events and subscriptions of a match are
//! serialised. Each applied event gets the next `seq`, one update frame
//! (serialised here once, shared by every subscriber through the match's
//! broadcast), and one journal append. Guest calls run inline on the tokio
//! task (they take microseconds; a runaway is cut off by the epoch deadline).
//!
//! Supervision ([`crate::supervisor`] holds the policy): on a guest failure
//! the instance is dropped, a fresh one restores the last snapshot and
//! replays the events after it, and the failed event is retried once. A
//! second failure dead-letters the event (kept in the store, never applied,
//! no seq taken). Past the restart intensity the match is quarantined: later
//! events are held in the store, not applied, until an operator heals it.
//!
//! Hot swap ([`crate::guests`] runs rollouts): a [`Command::Switch`] is
//! handled between two events like any command. The worker saves the state
//! from its current instance, instantiates the new version and hands it the
//! state through the guest's `migrate`; if that fails the match stays on the
//! old version. The first event after a switch is on probation: if the new
//! version fails on it, the match goes back to the old version with the
//! state saved at the switch and the event is applied there. A quarantined
//! match switches and then replays what was kept (snapshot, tail, dead
//! letters, held events) under the new version. Seq, epoch and subscribers
//! are untouched by a switch; frames carry the new `guest_version`.
//!
//! Durability protocol for epochs: a match is either durably *clean at seq
//! S* (nothing beyond S was ever pushed) or *dirty*. Before the first push
//! after a clean mark the worker durably clears the mark (a store barrier);
//! after `clean_after` idle it writes a new clean mark. On restart a match
//! whose clean mark equals its last journaled seq keeps its epoch; any
//! other gets a new one, so a client never sees one (epoch, seq) twice with
//! different content.

pub mod runtime;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use touchline_guest::event::MatchEvent;

use crate::metrics::{Kind, Metrics};
use crate::store::{BetRecord, DeadLetter, MatchMeta, Op, Recovered, SnapshotRecord, StoreHandle};
use crate::supervisor::{Intensity, Policy, Verdict};
use runtime::{Failure, GuestInstance, Runtime, Saved};
use touchline_guest::bet::{BetDecision, BetRequest, OpenBet, Settlement};

/// Mailbox capacity per match. When full, the feed reader waits (TCP
/// backpressure to the feed): events are never dropped, and a stuck guest
/// cannot hold the mailbox longer than its epoch deadline per event.
pub const MAILBOX_CAPACITY: usize = 1024;

/// Update frames buffered per match for subscribers. A subscriber that falls
/// further behind gets `Lagged` and catches up from the resume ring and the
/// journal (or a fresh snapshot). Small on purpose: the ring is allocated
/// per match and keeps its last frames (~8 KB each) alive while anyone
/// subscribes.
pub const UPDATE_BUFFER: usize = 16;

/// Recent update frames a worker keeps for resuming clients: enough to
/// cover what the store writer has not inserted yet (one commit interval);
/// older frames come from the journal.
pub const RESUME_RING: usize = 16;

/// Encoded events kept in memory since the last snapshot (the recovery
/// base) are capped at this many bytes: past it the worker snapshots.
pub const RECOVERY_TAIL_BYTES: usize = 256 * 1024;

/// How a worker persists and recovers.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `None` runs without durability (benchmark baseline).
    pub store: Option<StoreHandle>,
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
    /// Connected bet owners, told about settlements.
    pub owners: Arc<crate::bets::Owners>,
    /// Which match runs which guest version; probation failures.
    pub placement: Arc<crate::guests::Placement>,
}

/// A client's position in a match stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct Position {
    pub epoch: u64,
    pub seq: u64,
}

/// What a worker is asked to do.
#[derive(Debug)]
pub enum Command {
    /// Apply a feed event.
    Event(MatchEvent),
    /// A subscriber joins: reply with what it needs to be current, in order
    /// with the update stream.
    Subscribe {
        since: Option<Position>,
        reply: oneshot::Sender<Catchup>,
    },
    /// Operator: lift quarantine and replay dead letters and held events.
    Heal { reply: oneshot::Sender<String> },
    /// Decide a bet against the current state; the reply comes once the
    /// decision is durable.
    Bet {
        request: BetRequest,
        reply: oneshot::Sender<BetRecord>,
    },
    /// Run another guest version from now on (see the module doc).
    Switch {
        runtime: Runtime,
        /// Go back to the current version if the new one fails on the
        /// first event (rollouts); `false` for rollbacks.
        probation: bool,
        reply: oneshot::Sender<SwitchOutcome>,
    },
}

/// What a [`Command::Switch`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum SwitchOutcome {
    /// Running the new version; the switch took this long.
    Switched { seconds: f64 },
    /// Already running it.
    Unchanged,
    /// Was quarantined: switched and replayed what was kept; `healthy`
    /// unless the replay quarantined it again.
    Healed { report: String, healthy: bool },
    /// Still on the old version: the new one failed to take the state.
    Failed(String),
    /// Still on the old version, which could not hand its state over (its
    /// own failure, not the new version's).
    Skipped(String),
}

/// The recovery base: a saved state and who saved it.
#[derive(Debug, Clone)]
struct Base {
    state: Vec<u8>,
    /// Content hash of the guest version that saved it...
    guest: Arc<str>,
    /// ...and its state layout version.
    state_version: u32,
}

/// What a snapshot frame's content depends on: the cached one is reused
/// while all of it is unchanged.
#[derive(Debug, PartialEq)]
struct SnapshotKey {
    seq: u64,
    epoch: u64,
    guest: Arc<str>,
    quarantined: Option<String>,
}

/// A switched match until its first event under the new version.
struct Probation {
    old: Runtime,
    /// The state at the switch, as the old side held it.
    base: Base,
}

/// How a subscriber catches up.
#[derive(Debug)]
pub enum Catchup {
    /// The whole state.
    Snapshot(Frame),
    /// The updates it missed (possibly none): its epoch is current.
    Missed(Vec<Frame>),
}

/// A serialised frame for one match, shared by all its subscribers.
#[derive(Debug, Clone)]
pub struct Frame {
    /// For updates, this frame's seq; otherwise the seq of the last update
    /// applied before it.
    pub seq: u64,
    pub epoch: u64,
    pub kind: FrameKind,
    /// The JSON text, serialised once; cloning shares the buffer.
    pub bytes: Utf8Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Snapshot,
    Update,
    Status,
}

/// The ends of a worker other tasks hold.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    pub mailbox: mpsc::Sender<Command>,
    pub updates: broadcast::Sender<Frame>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "match")]
    match_id: &'a str,
    epoch: u64,
    seq: u64,
    guest_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quarantined: Option<&'a str>,
    /// Status frames: what happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// Start the worker for `match_id` (restoring `recovered` if given).
pub fn spawn(
    match_id: Arc<str>,
    runtime: Runtime,
    metrics: Arc<Metrics>,
    cfg: Arc<WorkerConfig>,
    recovered: Option<Recovered>,
    tasks: &tokio_util::task::TaskTracker,
) -> WorkerHandle {
    let (mailbox, rx) = mpsc::channel(MAILBOX_CAPACITY);
    let (updates, _) = broadcast::channel(UPDATE_BUFFER);
    let handle = WorkerHandle {
        mailbox,
        updates: updates.clone(),
    };
    let worker = Worker {
        intensity: Intensity::new(cfg.policy),
        match_id,
        runtime,
        metrics,
        cfg,
        updates,
        seq: 0,
        epoch: 0,
        instance: None,
        quarantined: None,
        base: None,
        probation: None,
        snapshot_cache: None,
        since_base: Vec::new(),
        since_base_bytes: 0,
        last_snapshot: Instant::now(),
        // Not counted as unclean until its first push.
        clean: true,
        recent: VecDeque::new(),
        idle_since: None,
        healing: false,
        last_command: tokio::time::Instant::now(),
        hibernated: false,
        bets: Vec::new(),
    };
    // Placed before its task runs, so a listing right after a restart
    // already shows every match.
    worker.cfg.placement.set(&worker.match_id, worker.runtime.version_arc());
    tasks.spawn(worker.run(rx, recovered));
    handle
}

struct Worker {
    match_id: Arc<str>,
    runtime: Runtime,
    metrics: Arc<Metrics>,
    cfg: Arc<WorkerConfig>,
    updates: broadcast::Sender<Frame>,
    /// Seq of the last applied event.
    seq: u64,
    epoch: u64,
    /// `None` between a failure and the restart.
    instance: Option<GuestInstance>,
    quarantined: Option<String>,
    intensity: Intensity,
    /// Last snapshot of the guest state (the recovery base)...
    base: Option<Base>,
    /// ...and the encoded events applied since, in order...
    since_base: Vec<Bytes>,
    /// ...and their total size.
    since_base_bytes: usize,
    last_snapshot: Instant,
    /// Durably marked clean at `seq` (see the module doc).
    clean: bool,
    /// Last update frames, for resuming clients.
    recent: VecDeque<Frame>,
    /// When the mailbox last went quiet after an event.
    idle_since: Option<tokio::time::Instant>,
    /// Replaying kept events for an operator: failures do not quarantine.
    healing: bool,
    /// When the last command arrived (for hibernation).
    last_command: tokio::time::Instant,
    /// The instance was given back while idle.
    hibernated: bool,
    /// Accepted bets on this match, with where they stand.
    bets: Vec<BetRecord>,
    /// Set between a switch and the first event after it.
    probation: Option<Probation>,
    /// The last snapshot frame served, and what it was made from.
    snapshot_cache: Option<(SnapshotKey, Frame)>,
}

/// Outcome of applying one event under supervision.
enum Applied {
    Ok(Box<RawValue>),
    Rejected(Failure),
    DeadLettered(String),
    Quarantined,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, recovered: Option<Recovered>) {
        self.metrics.live_matches.inc();
        self.start(recovered).await;
        loop {
            let idle_deadline = self.idle_since.map(|t| t + self.cfg.clean_after);
            let hibernate_deadline = self
                .cfg
                .hibernate_after
                .filter(|_| self.instance.is_some() && self.idle_since.is_none())
                .map(|d| self.last_command + d);
            let cmd = tokio::select! {
                c = rx.recv() => c,
                _ = sleep_until(idle_deadline) => {
                    self.on_idle().await;
                    continue;
                }
                _ = sleep_until(hibernate_deadline) => {
                    self.hibernate();
                    continue;
                }
            };
            let Some(cmd) = cmd else { break };
            self.last_command = tokio::time::Instant::now();
            // A switch wakes a hibernated match only if it really switches.
            if !matches!(cmd, Command::Switch { .. }) {
                self.wake();
            }
            match cmd {
                Command::Event(event) => {
                    let settles = matches!(
                        event,
                        MatchEvent::BetSettlement(_)
                            | MatchEvent::BetCancel(_)
                            | MatchEvent::RollbackBetSettlement(_)
                            | MatchEvent::RollbackBetCancel(_)
                    );
                    self.on_event(touchline_guest::encode(&event)).await;
                    if settles && !self.bets.is_empty() {
                        self.settle_bets().await;
                    }
                }
                Command::Subscribe { since, reply } => {
                    let catchup = self.catchup(since);
                    let _ = reply.send(catchup);
                }
                Command::Heal { reply } => {
                    let report = self.heal().await;
                    let _ = reply.send(report);
                }
                Command::Bet { request, reply } => self.bet(request, reply).await,
                Command::Switch {
                    runtime,
                    probation,
                    reply,
                } => {
                    let outcome = self.switch(runtime, probation).await;
                    let _ = reply.send(outcome);
                }
            }
        }
        // Mailbox closed: graceful shutdown. Leave a snapshot and a clean mark.
        if !self.hibernated {
            self.snapshot();
        }
        self.mark_clean().await;
        self.metrics.live_matches.dec();
        self.cfg.placement.remove(&self.match_id);
        if self.hibernated {
            self.metrics.hibernated_matches.dec();
        }
        if self.quarantined.is_some() {
            self.metrics.quarantined_matches.dec();
        }
        tracing::debug!(match_id = %self.match_id, seq = self.seq, "worker stopped");
    }

    /// Become ready: fresh, or restored from the store after a restart.
    async fn start(&mut self, recovered: Option<Recovered>) {
        let started = Instant::now();
        let start_no = self.cfg.store.as_ref().map_or(1, |s| s.store.start_no());
        let Some(r) = recovered else {
            self.epoch = start_no;
            match self.runtime.instantiate(self.match_id.clone()) {
                Ok(i) => self.instance = Some(i),
                Err(f) => self.quarantine(format!("cannot instantiate the guest: {f}")),
            }
            self.metrics
                .instantiate_seconds
                .observe(started.elapsed().as_secs_f64());
            self.write_meta().await;
            return;
        };
        self.bets = r.bets;
        if let Some(s) = r.snapshot {
            self.seq = s.seq;
            self.base = Some(Base {
                state: s.state,
                guest: Arc::from(s.guest),
                state_version: s.state_version,
            });
        }
        for (seq, entry) in r.journal {
            if seq != self.seq + 1 {
                tracing::error!(match_id = %self.match_id, expected = self.seq + 1, found = seq, "journal gap; stopping replay there");
                break;
            }
            self.seq = seq;
            self.since_base_bytes += entry.event.len();
            self.since_base.push(Bytes::from(entry.event));
        }
        // Continuity is proven only by a clean mark at exactly this seq.
        self.epoch = if r.meta.clean_seq == Some(self.seq) {
            r.meta.epoch
        } else {
            start_no
        };
        if let Err(f) = self.recover() {
            self.quarantine(format!("cannot restore state: {f}"));
        }
        if let Some(reason) = r.meta.quarantined {
            self.quarantine(reason);
        }
        self.metrics.restore_seconds.observe(started.elapsed().as_secs_f64());
        tracing::info!(match_id = %self.match_id, epoch = self.epoch, seq = self.seq, kept_epoch = self.epoch == r.meta.epoch, "match restored");
        self.write_meta().await;
    }

    async fn on_event(&mut self, bytes: Vec<u8>) {
        if self.quarantined.is_some() {
            self.hold(bytes).await;
            return;
        }
        if let Some(p) = self.probation.take() {
            let first = match self.instance.as_mut() {
                Some(i) => i.apply_json(&bytes),
                None => Err(Failure::Trap("no instance after the switch".into())),
            };
            match first {
                Ok(delta) => {
                    self.metrics
                        .match_switches
                        .get_or_create(&Kind {
                            kind: "probation_passed",
                        })
                        .inc();
                    self.cfg.placement.probation_ended(&self.match_id);
                    self.commit(bytes, &delta).await;
                    return;
                }
                // The event goes to the old version below.
                Err(f) => self.revert(p, &f).await,
            }
        }
        match self.apply_supervised(&bytes) {
            Applied::Ok(delta) => self.commit(bytes, &delta).await,
            Applied::Rejected(f) => {
                self.metrics.events_rejected.inc();
                tracing::warn!(match_id = %self.match_id, seq = self.seq, error = %f, "guest rejected event");
            }
            Applied::DeadLettered(reason) => {
                if let Some(store) = &self.cfg.store {
                    let letter = DeadLetter {
                        event: bytes,
                        reason: reason.clone(),
                        after_seq: self.seq,
                    };
                    let _ = store
                        .send(Op::DeadLetter {
                            match_id: self.match_id.clone(),
                            letter,
                        })
                        .await;
                }
                self.metrics.dead_letters.inc();
                tracing::error!(match_id = %self.match_id, seq = self.seq, reason, "poison event dead-lettered");
                self.status("dead_letter", &reason);
                self.ensure_instance();
            }
            Applied::Quarantined => {
                self.write_meta().await;
                self.hold(bytes).await;
            }
        }
    }

    /// Run `new` from now on: migrate the state into it, or stay and say why.
    async fn switch(&mut self, new: Runtime, probation: bool) -> SwitchOutcome {
        if new.version() == self.runtime.version() {
            return SwitchOutcome::Unchanged;
        }
        // A probation left from an earlier rollout ends here, whatever this
        // switch does: its "old version" is not the one to go back to now.
        if self.probation.take().is_some() {
            self.cfg.placement.probation_ended(&self.match_id);
        }
        let started = Instant::now();
        let old = self.runtime.clone();
        let (from, to) = (short(old.version()), short(new.version()));
        if self.quarantined.is_some() {
            // Nothing live to migrate: heal replays snapshot, tail, dead
            // letters and held events under the new version.
            self.runtime = new.clone();
            self.instance = None;
            self.probation = None;
            self.cfg.placement.set(&self.match_id, new.version_arc());
            self.status("upgraded", &format!("guest {from} → {to}; healing"));
            let report = self.heal().await;
            self.count_switch("healed");
            self.write_meta().await;
            tracing::info!(match_id = %self.match_id, from, to, report, "quarantined match switched and healed");
            return SwitchOutcome::Healed {
                report,
                healthy: self.quarantined.is_none(),
            };
        }
        let was_hibernated = self.hibernated;
        let saved = match &self.base {
            // Asleep with nothing since its base: the base is its state, no
            // need to wake the old version to save it again.
            Some(b) if was_hibernated && self.since_base.is_empty() => b.clone(),
            _ => {
                self.wake();
                self.ensure_instance();
                match self.instance.as_mut().map(|i| i.save_state()) {
                    Some(Ok(state)) => Base {
                        state,
                        guest: old.version_arc(),
                        state_version: old.state_version(),
                    },
                    Some(Err(f)) => {
                        if f.is_fatal() {
                            // The next command restarts it from the last state.
                            self.instance = None;
                        }
                        return self.switch_skipped(
                            &from,
                            &to,
                            format!("the old version failed saving its state: {f}"),
                        );
                    }
                    None => return self.switch_skipped(&from, &to, "the old version cannot rebuild its state".into()),
                }
            }
        };
        match new.instantiate_with(self.match_id.clone(), &saved.state, &saved.guest, saved.state_version) {
            Ok(instance) => {
                if self.hibernated {
                    // Switched without waking: awake now on the new version.
                    self.hibernated = false;
                    self.metrics.hibernated_matches.dec();
                }
                self.instance = Some(instance);
                self.runtime = new;
                self.probation = probation.then(|| Probation {
                    old: old.clone(),
                    base: saved,
                });
                if probation {
                    self.cfg.placement.probation_started(&self.match_id);
                }
                // The migrated state becomes the recovery base (and the
                // stored snapshot), saved by the new version.
                self.snapshot();
                self.cfg.placement.set(&self.match_id, self.runtime.version_arc());
                self.write_meta().await;
                self.status("upgraded", &format!("guest {from} → {to}"));
                // An idle match goes back to sleep at once (its migrated state
                // is the base it wakes from), so a rollout does not bring
                // every hibernated match's memory back.
                if was_hibernated {
                    self.hibernate();
                }
                let seconds = started.elapsed().as_secs_f64();
                self.metrics.match_switch_seconds.observe(seconds);
                self.count_switch("switched");
                tracing::info!(match_id = %self.match_id, from, to, seq = self.seq, micros = (seconds * 1e6) as u64, "match switched");
                SwitchOutcome::Switched { seconds }
            }
            Err(f) => self.switch_failed(&from, &to, format!("migration failed: {f}")),
        }
    }

    fn switch_skipped(&mut self, from: &str, to: &str, reason: String) -> SwitchOutcome {
        self.count_switch("skipped");
        tracing::warn!(match_id = %self.match_id, from, to, reason, "match not switched: the old version could not hand its state over");
        SwitchOutcome::Skipped(reason)
    }

    fn switch_failed(&mut self, from: &str, to: &str, reason: String) -> SwitchOutcome {
        self.count_switch("failed");
        tracing::warn!(match_id = %self.match_id, from, to, reason, "match stays on the old guest");
        SwitchOutcome::Failed(reason)
    }

    fn count_switch(&self, outcome: &'static str) {
        self.metrics.match_switches.get_or_create(&Kind { kind: outcome }).inc();
    }

    /// The new version failed on its first event: back to the old one, with
    /// the state it saved at the switch.
    async fn revert(&mut self, p: Probation, failure: &Failure) {
        let to = std::mem::replace(&mut self.runtime, p.old);
        let reason = format!(
            "guest {} failed on its first event, back on {}: {failure}",
            short(to.version()),
            short(self.runtime.version())
        );
        self.base = Some(p.base);
        self.since_base.clear();
        self.since_base_bytes = 0;
        if let Err(f) = self.recover() {
            tracing::error!(match_id = %self.match_id, error = %f, "the old guest cannot take its own state back");
        }
        self.snapshot();
        self.count_switch("probation_failed");
        self.cfg.placement.set(&self.match_id, self.runtime.version_arc());
        self.cfg.placement.probation_failed(&self.match_id, &reason);
        self.write_meta().await;
        tracing::warn!(match_id = %self.match_id, seq = self.seq, reason, "switch rolled back");
        self.status("rolled_back", &reason);
    }

    /// Apply with restart-and-retry-once.
    fn apply_supervised(&mut self, bytes: &[u8]) -> Applied {
        let mut last = String::new();
        for _attempt in 0..2 {
            if self.instance.is_none()
                && let Err(f) = self.restart()
            {
                return self.fail(f).unwrap_or_else(|| Applied::DeadLettered(last.clone()));
            }
            let Some(instance) = self.instance.as_mut() else {
                continue;
            };
            match instance.apply_json(bytes) {
                Ok(delta) => return Applied::Ok(delta),
                Err(f) if !f.is_fatal() => return Applied::Rejected(f),
                Err(f) => {
                    last = f.to_string();
                    if let Some(q) = self.fail(f) {
                        return q;
                    }
                }
            }
        }
        Applied::DeadLettered(last)
    }

    /// Count a fatal failure; quarantine past the intensity.
    fn fail(&mut self, f: Failure) -> Option<Applied> {
        self.instance = None;
        self.metrics
            .worker_failures
            .get_or_create(&vec![("cause".to_owned(), f.kind().to_owned())])
            .inc();
        tracing::warn!(match_id = %self.match_id, seq = self.seq, guest_version = self.runtime.version(), error = %f, "guest failed");
        // While healing, each kept event gets its one more chance: what still
        // fails is dead-lettered again, but does not re-quarantine the match.
        let verdict = if self.healing {
            Verdict::Restart
        } else {
            self.intensity.record(Instant::now())
        };
        match verdict {
            Verdict::Restart => None,
            Verdict::Quarantine => {
                let reason = format!("restart intensity exceeded; last failure: {f}");
                self.quarantine(reason);
                Some(Applied::Quarantined)
            }
        }
    }

    /// Restart after a failure, timing trap-to-serving.
    fn restart(&mut self) -> Result<(), Failure> {
        let started = Instant::now();
        let r = self.recover();
        self.metrics.recovery_seconds.observe(started.elapsed().as_secs_f64());
        r
    }

    /// A fresh instance with the last snapshot and the events since.
    fn recover(&mut self) -> Result<(), Failure> {
        self.instance = None;
        let saved = self.base.as_ref().map(|b| Saved {
            state: &b.state,
            guest: &b.guest,
            state_version: b.state_version,
        });
        let events = self.since_base.iter().map(|e| &e[..]);
        self.instance = Some(self.runtime.rebuild(self.match_id.clone(), saved, events)?);
        Ok(())
    }

    async fn commit(&mut self, bytes: Vec<u8>, delta: &RawValue) {
        if self.clean {
            // The first push beyond a clean mark: clear it durably first.
            self.clean = false;
            self.metrics.unclean_matches.inc();
            if let Some(store) = self.cfg.store.clone() {
                let started = Instant::now();
                self.write_meta().await;
                if store.barrier().await.is_err() {
                    tracing::error!(match_id = %self.match_id, "store writer gone; continuing without durability");
                }
                self.metrics
                    .dirty_barrier_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
        }
        self.seq += 1;
        let frame = self.frame(FrameKind::Update, Some(delta), None, None, None);
        let event = Bytes::from(bytes);
        if let Some(store) = &self.cfg.store {
            // Shares the event and frame buffers; the writer encodes them.
            let append = Op::Append {
                match_id: self.match_id.clone(),
                seq: self.seq,
                event: event.clone(),
                frame: frame.bytes.clone(),
            };
            let _ = store.send(append).await;
        }
        self.since_base_bytes += event.len();
        self.since_base.push(event);
        if self.recent.len() == RESUME_RING {
            self.recent.pop_front();
        }
        self.recent.push_back(frame.clone());
        self.metrics.events_applied.inc();
        // No receivers is fine: nobody is watching this match.
        let _ = self.updates.send(frame);
        if self.since_base.len() as u64 >= self.cfg.snapshot_every
            || self.since_base_bytes >= RECOVERY_TAIL_BYTES
            || self.last_snapshot.elapsed() >= self.cfg.snapshot_interval
        {
            self.snapshot();
        }
        self.idle_since = Some(tokio::time::Instant::now());
    }

    /// Decide a bet between two events, record it, and answer once the
    /// record is durable (without holding up the next event: many bets share
    /// one group commit).
    async fn bet(&mut self, request: BetRequest, reply: oneshot::Sender<BetRecord>) {
        let started = Instant::now();
        let decision = self.decide(&request);
        self.metrics
            .bet_decision_seconds
            .observe(started.elapsed().as_secs_f64());
        let record = BetRecord {
            match_id: self.match_id.to_string(),
            request,
            decision,
            seq: self.seq,
            epoch: self.epoch,
            decided_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            settlement: None,
        };
        if record.decision.is_ok() {
            self.bets.push(record.clone());
        }
        let Some(store) = self.cfg.store.clone() else {
            let _ = reply.send(record);
            return;
        };
        let (durable, done) = oneshot::channel();
        if store.send(Op::Bet(Box::new(record.clone()))).await.is_err()
            || store.send(Op::Barrier(durable)).await.is_err()
        {
            tracing::error!(match_id = %self.match_id, "store writer gone; bet not confirmed");
            return; // dropping `reply` tells the desk the bet was not recorded
        }
        tokio::spawn(async move {
            if done.await.is_ok() {
                let _ = reply.send(record);
            }
        });
    }

    /// After a settlement, cancellation or rollback: update every accepted
    /// bet whose standing changed, durably, and tell its owner.
    async fn settle_bets(&mut self) {
        let open: Vec<OpenBet> = self
            .bets
            .iter()
            .filter_map(|b| {
                let odds = *b.decision.as_ref().ok()?;
                let r = &b.request;
                Some(OpenBet {
                    market: r.market,
                    specifiers: r.specifiers.clone(),
                    outcome: r.outcome.clone(),
                    odds,
                    stake: r.stake,
                })
            })
            .collect();
        let Some(instance) = self.instance.as_mut() else { return };
        let settled: Vec<Settlement> = match instance
            .settle_bets(&touchline_guest::encode(&open))
            .map(|b| touchline_guest::decode::<Vec<Settlement>>(&b))
        {
            Ok(Ok(s)) if s.len() == self.bets.len() => s,
            other => {
                let detail = format!("{:?}", other.map(|r| r.map(|s| s.len())));
                tracing::error!(match_id = %self.match_id, detail, "settling bets failed");
                return;
            }
        };
        for (bet, now) in self.bets.iter_mut().zip(settled) {
            let unchanged = match &bet.settlement {
                Some(prev) => *prev == now,
                None => now.status == touchline_guest::bet::SettleStatus::Open,
            };
            if unchanged {
                continue;
            }
            self.metrics
                .bet_settlements
                .get_or_create(&vec![("status".to_owned(), now.status.code().to_owned())])
                .inc();
            bet.settlement = Some(now);
            if let Some(store) = &self.cfg.store {
                let _ = store.send(Op::Bet(Box::new(bet.clone()))).await;
            }
            self.cfg.owners.notify(crate::bets::Answer::from_record(bet));
        }
    }

    fn decide(&mut self, request: &BetRequest) -> Result<f64, String> {
        if self.quarantined.is_some() {
            return Err("match_quarantined".into());
        }
        self.ensure_instance();
        let Some(instance) = self.instance.as_mut() else {
            return Err("worker_unavailable".into());
        };
        match instance.decide_bet(&touchline_guest::encode(request)) {
            Ok(bytes) => match touchline_guest::decode::<BetDecision>(&bytes) {
                Ok(BetDecision::Accepted { odds }) => Ok(odds),
                Ok(BetDecision::Rejected(r)) => Err(r.code().to_owned()),
                Err(e) => Err(format!("worker_error: {e}")),
            },
            Err(f) => {
                if f.is_fatal() {
                    let _ = self.fail(f);
                    self.ensure_instance();
                }
                Err("worker_failed".into())
            }
        }
    }

    /// Give the instance back; keep the state (snapshot + tail) to restore.
    fn hibernate(&mut self) {
        if self.instance.is_none() || self.quarantined.is_some() {
            return;
        }
        if !self.since_base.is_empty() {
            self.snapshot();
        }
        self.instance = None;
        self.hibernated = true;
        self.metrics.hibernated_matches.inc();
    }

    /// Restore a hibernated match before it does anything.
    fn wake(&mut self) {
        if !self.hibernated {
            return;
        }
        self.hibernated = false;
        self.metrics.hibernated_matches.dec();
        let started = Instant::now();
        if let Err(f) = self.recover() {
            tracing::warn!(match_id = %self.match_id, error = %f, "waking from hibernation failed; restarting on the next event");
        }
        self.metrics.wake_seconds.observe(started.elapsed().as_secs_f64());
    }

    async fn on_idle(&mut self) {
        self.idle_since = None;
        if !self.since_base.is_empty() {
            self.snapshot();
        }
        self.mark_clean().await;
    }

    async fn mark_clean(&mut self) {
        if !self.clean {
            self.clean = true;
            self.metrics.unclean_matches.dec();
            self.write_meta().await;
        }
    }

    /// Make sure there is an instance to answer with (after a dead letter,
    /// or to show a quarantined match's last good state).
    fn ensure_instance(&mut self) {
        if self.instance.is_none()
            && let Err(f) = self.recover()
        {
            tracing::warn!(match_id = %self.match_id, error = %f, "cannot rebuild the last good state");
        }
    }

    /// Save the guest state as the new recovery base (and persist it).
    fn snapshot(&mut self) {
        let Some(instance) = self.instance.as_mut() else { return };
        match instance.save_state() {
            Ok(state) => {
                if let Some(store) = &self.cfg.store {
                    let record = SnapshotRecord {
                        seq: self.seq,
                        epoch: self.epoch,
                        state: state.clone(),
                        guest: self.runtime.version().to_owned(),
                        state_version: self.runtime.state_version(),
                    };
                    // Never blocks the worker: a full queue skips storing this
                    // snapshot (the stored one is older, and the journal,
                    // trimmed only by stored snapshots, still has every event
                    // after it). In memory it is the new base all the same, so
                    // an overloaded store does not make every later event
                    // save the state again.
                    if store
                        .try_send(Op::Snapshot {
                            match_id: self.match_id.clone(),
                            record,
                        })
                        .is_err()
                    {
                        self.metrics.snapshots_skipped.inc();
                    }
                }
                self.base = Some(Base {
                    state,
                    guest: self.runtime.version_arc(),
                    state_version: self.runtime.state_version(),
                });
                self.since_base.clear();
                self.since_base_bytes = 0;
                self.last_snapshot = Instant::now();
            }
            Err(f) => {
                tracing::warn!(match_id = %self.match_id, error = %f, "snapshot failed; keeping the previous one")
            }
        }
    }

    /// Persist epoch, clean mark (as `self.clean` says) and quarantine.
    async fn write_meta(&mut self) {
        let Some(store) = &self.cfg.store else { return };
        let clean_seq = self.clean.then_some(self.seq);
        let meta = MatchMeta {
            epoch: self.epoch,
            clean_seq,
            quarantined: self.quarantined.clone(),
            guest: Some(self.runtime.version().to_owned()),
        };
        let _ = store
            .send(Op::Meta {
                match_id: self.match_id.clone(),
                meta,
            })
            .await;
    }

    fn quarantine(&mut self, reason: String) {
        if self.quarantined.is_none() {
            self.metrics.quarantined_matches.inc();
        }
        tracing::error!(match_id = %self.match_id, seq = self.seq, reason, "match quarantined");
        self.instance = None;
        self.quarantined = Some(reason.clone());
        self.status("quarantined", &reason);
    }

    async fn hold(&mut self, bytes: Vec<u8>) {
        self.metrics.events_held.inc();
        if let Some(store) = &self.cfg.store {
            let _ = store
                .send(Op::Hold {
                    match_id: self.match_id.clone(),
                    event: bytes,
                })
                .await;
        }
    }

    async fn heal(&mut self) -> String {
        let Some(store) = self.cfg.store.clone() else {
            return "no store: nothing was kept to replay".into();
        };
        if store.barrier().await.is_err() {
            return "store writer gone".into();
        }
        let letters = store.store.dead_letters(&self.match_id).unwrap_or_default();
        let held = store.store.held(&self.match_id).unwrap_or_default();
        let _ = store
            .send(Op::ClearParked {
                match_id: self.match_id.clone(),
            })
            .await;
        if self.quarantined.take().is_some() {
            self.metrics.quarantined_matches.dec();
        }
        self.intensity.reset();
        if self.instance.is_none()
            && let Err(f) = self.restart()
        {
            self.quarantine(format!("cannot restore state: {f}"));
            return format!("heal failed: {f}");
        }
        self.status("healed", "replaying dead letters and held events");
        self.write_meta().await;
        let (n_dead, n_held) = (letters.len(), held.len());
        self.healing = true;
        for event in letters.into_iter().map(|l| l.event).chain(held) {
            self.on_event(event).await;
        }
        self.healing = false;
        self.intensity.reset();
        let report = format!(
            "replayed {n_dead} dead letters and {n_held} held events; seq {}; {}",
            self.seq,
            self.quarantined
                .as_deref()
                .map_or("healthy".to_owned(), |r| format!("quarantined again: {r}"))
        );
        tracing::info!(match_id = %self.match_id, report, "match healed");
        report
    }

    fn catchup(&mut self, since: Option<Position>) -> Catchup {
        if let Some(p) = since
            && p.epoch == self.epoch
            && p.seq <= self.seq
            && self.quarantined.is_none()
            && let Some(frames) = self.missed(p.seq)
        {
            // Tell the client its resume point was accepted, then what it missed.
            let resumed = serde_json::json!({
                "type": "resumed",
                "match": &*self.match_id,
                "epoch": self.epoch,
                "seq": p.seq,
                "guest_version": self.runtime.version(),
            });
            let head = Frame {
                seq: p.seq,
                epoch: self.epoch,
                kind: FrameKind::Status,
                bytes: Utf8Bytes::from(resumed.to_string()),
            };
            return Catchup::Missed(std::iter::once(head).chain(frames).collect());
        }
        Catchup::Snapshot(self.snapshot_frame())
    }

    /// Update frames after `seq`, from the ring and the journal.
    fn missed(&self, seq: u64) -> Option<Vec<Frame>> {
        let ring_first = self.recent.front().map_or(self.seq + 1, |f| f.seq);
        let mut out = Vec::new();
        if seq + 1 < ring_first {
            let store = self.cfg.store.as_ref()?;
            let older = store.store.frames(&self.match_id, seq + 1, ring_first - 1).ok()??;
            out.extend(older.into_iter().enumerate().map(|(i, text)| Frame {
                seq: seq + 1 + i as u64,
                epoch: self.epoch,
                kind: FrameKind::Update,
                bytes: Utf8Bytes::from(text),
            }));
        }
        out.extend(self.recent.iter().filter(|f| f.seq > seq).cloned());
        Some(out)
    }

    fn status(&mut self, status: &'static str, reason: &str) {
        let frame = self.frame(FrameKind::Status, None, None, Some(status), Some(reason));
        let _ = self.updates.send(frame);
    }

    /// The snapshot frame for a subscriber: rendered by the guest once per
    /// state, then shared by every subscriber until the state changes.
    fn snapshot_frame(&mut self) -> Frame {
        let key = SnapshotKey {
            seq: self.seq,
            epoch: self.epoch,
            guest: self.runtime.version_arc(),
            quarantined: self.quarantined.clone(),
        };
        if let Some((k, frame)) = &self.snapshot_cache
            && *k == key
        {
            return frame.clone();
        }
        self.ensure_instance();
        let state = match self.instance.as_mut().map(|i| i.snapshot_json()) {
            Some(Ok(s)) => s,
            Some(Err(f)) => {
                tracing::warn!(match_id = %self.match_id, error = %f, "snapshot for a subscriber failed");
                return self.frame(FrameKind::Snapshot, None, Some(&null_json()), None, None);
            }
            None => return self.frame(FrameKind::Snapshot, None, Some(&null_json()), None, None),
        };
        let frame = self.frame(FrameKind::Snapshot, None, Some(&state), None, None);
        self.snapshot_cache = Some((key, frame.clone()));
        frame
    }

    fn frame(
        &self,
        kind: FrameKind,
        delta: Option<&RawValue>,
        state: Option<&RawValue>,
        status: Option<&'static str>,
        reason: Option<&str>,
    ) -> Frame {
        let envelope = Envelope {
            kind: match kind {
                FrameKind::Snapshot => "snapshot",
                FrameKind::Update => "update",
                FrameKind::Status => "status",
            },
            match_id: &self.match_id,
            epoch: self.epoch,
            seq: self.seq,
            guest_version: self.runtime.version(),
            delta,
            state,
            quarantined: if kind == FrameKind::Snapshot {
                self.quarantined.as_deref()
            } else {
                None
            },
            status,
            reason,
        };
        let text = serde_json::to_string(&envelope).expect("envelope fields are strings, numbers and validated JSON");
        Frame {
            seq: self.seq,
            epoch: self.epoch,
            kind,
            bytes: Utf8Bytes::from(text),
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn null_json() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is JSON")
}

/// A content hash short enough for logs and status frames.
fn short(version: &str) -> String {
    version.chars().take(12).collect()
}
