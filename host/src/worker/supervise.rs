//! Supervision, carried out: apply under supervision, restart from the last
//! state, retry once, dead-letter a poison event, quarantine past the
//! restart intensity, heal on an operator's word; hibernate and wake.
//!
//! [`crate::supervisor`] holds the policy (pure); this file is the only
//! place that acts on its verdicts. On a guest failure the instance is
//! dropped, a fresh one restores the last snapshot and replays the events
//! after it, and the failed event is retried once. A second failure
//! dead-letters the event (kept in the journal, never applied, no seq
//! taken). Past the restart intensity the match is quarantined: later
//! events are held in the journal, not applied, until an operator heals it.

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::checkpoint::Start;
use super::frame::Status;
use super::lifecycle::{Base, Lifecycle};
use super::{ProbationNews, Worker};
use crate::journal::{DeadLetter, Op};
use crate::metrics::Kind;
use crate::sandbox::Failure;
use crate::supervisor::Verdict;

/// What became of an event ([`Worker::on_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Applied: it took the next seq.
    Applied,
    /// The guest refused it (not a failure): nothing kept.
    Rejected,
    DeadLettered,
    /// Kept for the heal (the match is quarantined).
    Held,
}

/// Outcome of applying one event under supervision.
pub(super) enum Applied {
    Ok(Box<RawValue>),
    Rejected(Failure),
    DeadLettered(String),
    Quarantined,
}

impl Worker {
    /// Apply a feed event (`routed`: when it was routed here, for
    /// `event_to_fanout_seconds`; `None` for replays; `raw`: its feed
    /// message, kept with it if it is dead-lettered or held).
    pub(super) async fn on_event(
        &mut self,
        bytes: Vec<u8>,
        routed: Option<std::time::Instant>,
        raw: Option<Bytes>,
    ) -> Fate {
        // Real time, not tokio's (paused in tests): what the guest took.
        let started = std::time::Instant::now();
        match &mut self.life {
            Lifecycle::Quarantined { .. } => {
                self.hold(bytes, raw).await;
                return Fate::Held;
            }
            Lifecycle::Probation { instance, .. } => match instance.apply_json(&bytes) {
                Ok(delta) => {
                    let took = started.elapsed();
                    self.pass_probation();
                    self.commit(bytes, &delta, routed).await;
                    self.after_apply(took);
                    return Fate::Applied;
                }
                // Back on the old version, which applies the event below.
                Err(f) => self.fail_probation(&f).await,
            },
            _ => {}
        }
        match self.apply_supervised(&bytes).await {
            Applied::Ok(delta) => {
                let took = started.elapsed();
                self.commit(bytes, &delta, routed).await;
                self.after_apply(took);
                Fate::Applied
            }
            Applied::Rejected(f) => {
                self.env.metrics.events_rejected.inc();
                tracing::warn!(match_id = %self.id, seq = self.seq, error = %f, "guest rejected event");
                Fate::Rejected
            }
            Applied::DeadLettered(reason) => {
                self.dead_letter(bytes, reason, raw).await;
                Fate::DeadLettered
            }
            Applied::Quarantined => {
                self.write_meta().await;
                self.hold(bytes, raw).await;
                Fate::Held
            }
        }
    }

    /// Apply with restart-and-retry-once.
    async fn apply_supervised(&mut self, bytes: &[u8]) -> Applied {
        let mut last = String::new();
        for _attempt in 0..2 {
            if self.life.applier().is_none()
                && let Err(f) = self.restart()
            {
                return self
                    .fail(f)
                    .await
                    .unwrap_or_else(|| Applied::DeadLettered(last.clone()));
            }
            let Some(instance) = self.life.applier() else {
                continue;
            };
            match instance.apply_json(bytes) {
                Ok(delta) => return Applied::Ok(delta),
                Err(f) if !f.is_fatal() => return Applied::Rejected(f),
                Err(f) => {
                    last = f.to_string();
                    if let Some(q) = self.fail(f).await {
                        return q;
                    }
                }
            }
        }
        Applied::DeadLettered(last)
    }

    async fn dead_letter(&mut self, bytes: Vec<u8>, reason: String, raw: Option<Bytes>) {
        if let Some(journal) = self.journal() {
            let op = Op::DeadLetter {
                match_id: self.id.clone(),
                letter: DeadLetter {
                    event: bytes,
                    reason: reason.clone(),
                    after_seq: self.seq,
                },
                raw,
            };
            if let Err(e) = journal.write(op).await {
                tracing::error!(match_id = %self.id, error = %e, "dead letter refused");
            }
        }
        self.env.metrics.dead_letters.inc();
        tracing::error!(match_id = %self.id, seq = self.seq, reason, "poison event dead-lettered");
        self.status(Status::DeadLetter, &reason);
        self.ensure_instance().await;
    }

    /// Count a fatal failure and drop the instance; quarantine past the
    /// intensity. On probation the new version is at fault: back to the old
    /// one, not counted.
    pub(super) async fn fail(&mut self, f: Failure) -> Option<Applied> {
        self.env
            .metrics
            .worker_failures
            .get_or_create(&vec![("cause".to_owned(), f.kind().to_owned())])
            .inc();
        tracing::warn!(match_id = %self.id, seq = self.seq, guest_version = self.version.version(), error = %f, "guest failed");
        self.note_failure(f.to_string());
        let verdict = match self.life {
            Lifecycle::Probation { .. } | Lifecycle::Hibernated { fallback: Some(_) } => {
                self.fail_probation(&f).await;
                return None;
            }
            // While healing, each kept event gets its one more chance: what
            // still fails is dead-lettered again, but does not re-quarantine.
            Lifecycle::Healing { .. } | Lifecycle::Quarantined { .. } => Verdict::Restart,
            _ => self.intensity.record(Instant::now().into_std()),
        };
        self.lose_instance();
        match verdict {
            Verdict::Restart => None,
            Verdict::Quarantine => {
                self.quarantine(format!("restart intensity exceeded; last failure: {f}"));
                Some(Applied::Quarantined)
            }
        }
    }

    /// Restart after a failure, timing trap-to-serving: on the clock, in
    /// the thread's CPU time (no await in between: one thread), which
    /// tells the restart's own work from waiting for a core, and in the
    /// thread's run-queue wait, which says how long it was preempted
    /// (read outside the timed span).
    fn restart(&mut self) -> Result<(), Failure> {
        let queued = run_queue_wait();
        let (started, cpu) = (Instant::now(), thread_cpu());
        let r = self.recover();
        let (took, used) = (started.elapsed(), thread_cpu().saturating_sub(cpu));
        let metrics = &self.env.metrics;
        metrics.recovery_seconds.observe(took.as_secs_f64());
        metrics.recovery_cpu_seconds.observe(used.as_secs_f64());
        if let (Some(before), Some(after)) = (queued, run_queue_wait()) {
            metrics
                .recovery_runqueue_seconds
                .observe(after.saturating_sub(before).as_secs_f64());
        }
        r
    }

    /// A fresh instance with the last snapshot and the events since, put
    /// where the current state keeps its instance.
    pub(super) fn recover(&mut self) -> Result<(), Failure> {
        self.lose_instance();
        if self.tail.checkpoint_start(self.version.version()).is_none() {
            self.take_base_back()?;
        }
        let start = self
            .tail
            .checkpoint_start(self.version.version())
            .unwrap_or_else(|| Start {
                saved: self.base.as_deref().map(Base::saved),
                events: &self.tail.events,
            });
        let replayed = start.events.len();
        let events = start.events.iter().map(Bytes::as_ref);
        let instance = self.version.rebuild(self.id.clone(), start.saved, events)?;
        self.env.metrics.recovery_replayed_events.observe(replayed as f64);
        self.install(instance);
        Ok(())
    }

    /// Make sure there is an instance to answer with (after a dead letter,
    /// or to show a quarantined match's last good state).
    pub(super) async fn ensure_instance(&mut self) {
        if matches!(self.life, Lifecycle::Hibernated { .. } | Lifecycle::Napping) {
            return self.wake().await;
        }
        if self.life.reader().is_none()
            && !matches!(self.life, Lifecycle::Stopped)
            && let Err(f) = self.recover()
        {
            tracing::warn!(match_id = %self.id, error = %f, "cannot rebuild the last good state");
        }
    }

    pub(super) fn quarantine(&mut self, reason: String) {
        tracing::error!(match_id = %self.id, seq = self.seq, reason, "match quarantined");
        if let Lifecycle::Probation { .. } | Lifecycle::Hibernated { fallback: Some(_) } = self.life {
            self.env.observer.probation(&self.id, ProbationNews::Ended);
        }
        self.enter(Lifecycle::Quarantined {
            reason: reason.clone(),
            view: None,
        });
        self.status(Status::Quarantined, &reason);
    }

    /// Lift a quarantine (if any) and replay dead letters and held events.
    pub(super) async fn heal(&mut self) -> String {
        let Some(journal) = self.env.journal.clone() else {
            return "no journal: nothing was kept to replay".into();
        };
        if let Err(e) = crate::journal::sync(&*journal, Some(self.id.clone())).await {
            return format!("heal failed: {e}");
        }
        let parked = match journal.parked(&self.id) {
            Ok(p) => p,
            Err(e) => return format!("heal failed: {e}"),
        };
        // A napping match heals from its instance, not through a restart.
        self.wake_from_nap();
        let instance = match self.enter(Lifecycle::Restarting) {
            Lifecycle::Live(i) => Some(i),
            Lifecycle::Probation { instance, .. } => {
                self.env.observer.probation(&self.id, ProbationNews::Ended);
                Some(instance)
            }
            Lifecycle::Quarantined { view, .. } => view,
            Lifecycle::Healing { instance } => instance,
            _ => None,
        };
        self.enter(Lifecycle::Healing { instance });
        self.intensity.reset();
        if self.life.applier().is_none()
            && let Err(f) = self.restart()
        {
            // What was kept stays kept: cleared only once it is replayed.
            self.quarantine(format!("cannot restore state: {f}"));
            return format!("heal failed: {f}");
        }
        // Cleared before the replays, which park again what fails again.
        let clear = Op::ClearParked {
            match_id: self.id.clone(),
        };
        if let Err(e) = journal.write(clear).await {
            return format!("heal failed: {e}");
        }
        self.status(Status::Healed, "replaying dead letters and held events");
        self.write_meta().await;
        let (n_dead, n_held) = (parked.dead_letters.len(), parked.held.len());
        let kept = (parked.dead_letters.into_iter())
            .map(|l| (l.item.event, l.raw))
            .chain(parked.held.into_iter().map(|h| (h.item, h.raw)));
        for (event, raw) in kept {
            self.on_event(event, None, raw.map(Bytes::from)).await;
        }
        let next = match self.enter(Lifecycle::Restarting) {
            Lifecycle::Healing { instance: Some(i) } => Lifecycle::Live(i),
            Lifecycle::Healing { instance: None } => Lifecycle::Restarting,
            other => other,
        };
        self.enter(next);
        self.intensity.reset();
        // Answered once what the replays wrote (events applied, letters
        // parked anew) is durable, so what is read next is so.
        if let Err(e) = crate::journal::sync(&*journal, Some(self.id.clone())).await {
            return format!("heal failed: replayed, but not durable: {e}");
        }
        let report = format!(
            "replayed {n_dead} dead letters and {n_held} held events; seq {}; {}",
            self.seq,
            self.life
                .quarantine_reason()
                .map_or("healthy".to_owned(), |r| format!("quarantined again: {r}"))
        );
        tracing::info!(match_id = %self.id, report, "match healed");
        report
    }

    /// Give the instance back; keep the state (snapshot + tail) to restore.
    pub(super) fn hibernate(&mut self) {
        if !matches!(
            self.life,
            Lifecycle::Live(_) | Lifecycle::Napping | Lifecycle::Probation { .. }
        ) {
            return;
        }
        // Napping, the tail is empty: nothing to wake for.
        if !self.tail.events.is_empty() {
            self.snapshot();
        }
        self.release_buffers();
        let fallback = match self.enter(Lifecycle::Restarting) {
            Lifecycle::Probation { fallback, .. } => Some(fallback),
            _ => None,
        };
        self.enter(Lifecycle::Hibernated { fallback });
        self.give_base_back();
    }

    /// Restore a hibernated match before it does anything.
    pub(super) async fn wake(&mut self) {
        if matches!(self.life, Lifecycle::Napping) {
            return self.wake_from_nap();
        }
        if !matches!(self.life, Lifecycle::Hibernated { .. }) {
            return;
        }
        let started = Instant::now();
        // Awake, as the observer hears it, before reading the version to
        // take ([`Worker::take_current`]).
        self.tell_asleep(false);
        self.take_current().await;
        if let Err(f) = self.recover() {
            tracing::warn!(match_id = %self.id, error = %f, "waking from hibernation failed");
            if let Lifecycle::Hibernated { fallback: Some(_) } = self.life {
                self.fail_probation(&f).await;
            } else {
                // The next command restarts it.
                self.enter(Lifecycle::Restarting);
            }
        }
        self.env.metrics.wake_seconds.observe(started.elapsed().as_secs_f64());
    }

    pub(super) fn count_switch(&self, outcome: &'static str) {
        self.env
            .metrics
            .match_switches
            .get_or_create(&Kind { kind: outcome })
            .inc();
    }
}

/// How long this thread has waited on a run queue, ready to run, since
/// it started (the second field of `/proc/thread-self/schedstat`); `None`
/// where the kernel does not say.
fn run_queue_wait() -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = stat.split_whitespace().nth(1)?.parse().ok()?;
    Some(std::time::Duration::from_nanos(ns))
}

/// CPU time of the calling thread so far.
fn thread_cpu() -> std::time::Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}
