//! Hot swap, per match: a [`super::Command::Switch`] is handled between two
//! events like any command.
//!
//! The worker saves the state from its current instance, instantiates the
//! new version and hands it the state through the guest's `migrate`; if
//! that fails the match stays on the old version. The first event after a
//! switch is on probation: if the new version fails on it (or on anything
//! before it), the match goes back to the old version with the state saved
//! at the switch and the event is applied there. A quarantined match
//! switches and then replays what was kept (snapshot, tail, dead letters,
//! held events) under the new version. A rollout passes by a match asleep
//! on the version it replaces: the match takes the current version as it
//! wakes ([`Worker::take_current`], as a BEAM process takes new code at
//! its next call), without a command of its own; one restored on another
//! version than the current one goes to sleep at once to do the same. A
//! sleeping match a rollout does switch (asleep on an older version, or
//! named by an explicit switch) with nothing since its last snapshot is
//! switched without waking: it migrates when it wakes, on the same
//! probation; an idle live one (clean, hibernation on; napping or not) is
//! put to sleep first and switched the same way. A napping match
//! otherwise wakes to hand its state over. A sleeping match switched to
//! the version that saved its base (a rollback before it woke) just takes
//! that version: nothing to migrate. A match remembers the last version
//! it failed to switch to (migration or first event) and does not take it
//! as it wakes; an explicit switch to it tries it afresh, and a restart
//! forgets it (the match tries once more). Seq, epoch and subscribers are
//! untouched by a switch; frames carry the new `guest_version`.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::frame::Status;
use super::lifecycle::{Base, Fallback, Lifecycle};
use super::{ProbationNews, SwitchOutcome, Worker, short};
use crate::sandbox::{Failure, GuestVersion};

/// The version every match is to run: the active one, or a rollout's
/// target while it runs. The router sets it; its clones, in every worker's
/// config, read it as a sleeping match wakes ([`Worker::take_current`]).
#[derive(Clone)]
pub struct Current(Arc<Mutex<GuestVersion>>);

impl Current {
    pub fn new(version: GuestVersion) -> Current {
        Current(Arc::new(Mutex::new(version)))
    }

    pub fn get(&self) -> GuestVersion {
        self.0.lock().expect("current version lock").clone()
    }

    pub fn set(&self, version: GuestVersion) {
        *self.0.lock().expect("current version lock") = version;
    }
}

impl Worker {
    /// The router's version, if this match is to take it: another than
    /// its own, and not one it failed on.
    pub(super) fn version_to_take(&self) -> Option<GuestVersion> {
        let current = self.env.current.as_ref()?.get();
        let other = current.version() != self.version.version();
        (other && self.refused.as_deref() != Some(current.version())).then_some(current)
    }

    /// Whether the match slept or woke since it last told the observer.
    pub(super) fn sleep_changed(&self) -> bool {
        self.told_asleep != matches!(self.life, Lifecycle::Hibernated { .. })
    }

    /// Between two commands: tell the observer whether the match sleeps.
    /// One that stopped sleeping without waking (an operator quarantined
    /// it) takes the current version now, as a switch would: a rollout
    /// may have passed it by meanwhile.
    pub(super) async fn settle_asleep(&mut self) {
        let asleep = matches!(self.life, Lifecycle::Hibernated { .. });
        let left_without_waking = self.told_asleep && !asleep;
        self.tell_asleep(asleep);
        if left_without_waking && let Some(current) = self.version_to_take() {
            let outcome = Box::pin(self.switch(current, true)).await;
            tracing::debug!(match_id = %self.id, ?outcome, "took the current version on leaving its sleep");
        }
    }

    /// Waking from hibernation: a rollout passes a sleeping match by
    /// (`guests::rollout`), so take the current version now, as the
    /// rollout would have: on probation, and without waking to do it (its
    /// base is its whole state; the restore that follows migrates it under
    /// the new version), as a BEAM process takes new code at its next
    /// call. Not a version it failed on before (`refused`: it would fail
    /// again at every wake). A match that slept with events since its base
    /// (its snapshot failed) or whose base cannot be read would have to
    /// wake on its own version to hand its state over: it does, and takes
    /// the current one at a later wake (a new sleep snapshots it first).
    /// One with no state saved at all has nothing to migrate: the switch
    /// just gives it the current version. Its caller has told the observer it
    /// is awake first, so a rollout that began meanwhile either switches
    /// it itself or has set the version read here.
    pub(super) async fn take_current(&mut self) {
        let Some(current) = self.version_to_take() else {
            return;
        };
        if !self.tail.events.is_empty() || self.take_base_back().is_err() {
            tracing::debug!(match_id = %self.id, to = short(current.version()), "a sleeping match with events since its base, or its base unreadable, wakes on its own version");
            return;
        }
        // Never wakes (the checks above; one with no state saved just takes
        // the version, `sleeps_on_state_of`): not recursive in fact.
        let outcome = Box::pin(self.switch(current, true)).await;
        tracing::debug!(match_id = %self.id, ?outcome, "took the current version on waking");
    }

    /// A [`super::Command::Switch`]: asked to, a match tries again a
    /// version it failed on.
    pub(super) async fn switch_asked(&mut self, new: GuestVersion, probation: bool) -> SwitchOutcome {
        if self.refused.as_deref() == Some(new.version()) {
            self.refused = None;
        }
        self.switch(new, probation).await
    }

    /// Run `new` from now on: migrate the state into it, or stay and say why.
    pub(super) async fn switch(&mut self, new: GuestVersion, probation: bool) -> SwitchOutcome {
        if new.version() == self.version.version() {
            return SwitchOutcome::Unchanged;
        }
        let started = Instant::now();
        let (from, to) = (short(self.version.version()), short(new.version()));
        if self.sleeps_on_state_of(&new) {
            return self.switch_to_its_base(new, started, &from, &to).await;
        }
        // A probation left from an earlier rollout ends here, whatever this
        // switch does: its "old version" is not the one to go back to now.
        self.end_probation();
        if self.life.quarantine_reason().is_some_and(super::operate::by_hand) {
            // An operator's quarantine stays until an operator heals it:
            // the new version takes the state over at that heal.
            self.lose_instance();
            self.version = new;
            self.version_changed();
            self.status(
                Status::Upgraded,
                &format!("guest {from} → {to}; stays quarantined by an operator"),
            );
            self.write_meta().await;
            self.count_switch("switched");
            return SwitchOutcome::Switched {
                seconds: started.elapsed().as_secs_f64(),
            };
        }
        if matches!(self.life, Lifecycle::Quarantined { .. }) {
            // Nothing live to migrate: heal replays snapshot, tail, dead
            // letters and held events under the new version.
            self.lose_instance();
            self.version = new;
            self.version_changed();
            self.status(Status::Upgraded, &format!("guest {from} → {to}; healing"));
            let report = self.heal().await;
            self.count_switch("healed");
            self.write_meta().await;
            tracing::info!(match_id = %self.id, from, to, report, "quarantined match switched and healed");
            return SwitchOutcome::Healed {
                report,
                healthy: self.life.quarantine_reason().is_none(),
            };
        }
        // A live match with nothing unconfirmed switches the way a sleeping
        // one does, as a BEAM process takes new code at its next call: it
        // goes to sleep now (its state saved as its base, if events came
        // since the last snapshot) and the new version migrates that base
        // when its next command wakes it, on the same probation. A rollout
        // pays at most a snapshot per idle match, not an instantiate and a
        // migration (issue 14: 10,000 matches in under 500 ms). Busy
        // (dirty) matches switch at once: they would wake for their next
        // event anyway.
        if probation
            && matches!(self.life, Lifecycle::Live(_) | Lifecycle::Napping)
            && self.mark.is_clean()
            && self.env.hibernate_after.is_some()
        {
            self.hibernate();
        }
        if probation
            && matches!(self.life, Lifecycle::Hibernated { fallback: None })
            && self.tail.events.is_empty()
            && self.take_base_back().is_ok()
            && self.sleeps_with_nothing_since()
        {
            return self.switch_asleep(new, started, &from, &to).await;
        }
        // Asleep before the switch: asleep after it, even if handing the
        // state over had to wake it.
        let was_hibernated = matches!(self.life, Lifecycle::Hibernated { .. });
        let Some(saved) = self.state_to_hand_over().await else {
            return self.switch_skipped(&from, &to, "the old version cannot rebuild its state".into());
        };
        let saved = match saved {
            Ok(base) => base,
            Err(f) => return self.switch_skipped(&from, &to, format!("the old version failed saving its state: {f}")),
        };
        match new.instantiate_with(self.id.clone(), &saved.state, &saved.guest, saved.state_version) {
            Ok(instance) => {
                let old = std::mem::replace(&mut self.version, new);
                if probation {
                    let fallback = Fallback {
                        version: old,
                        base: Box::new(saved),
                    };
                    self.enter(Lifecycle::Probation { instance, fallback });
                    self.env.observer.probation(&self.id, ProbationNews::Started);
                } else {
                    self.enter(Lifecycle::Live(instance));
                }
                // The migrated state becomes the recovery base (and the
                // stored snapshot), saved by the new version.
                self.snapshot();
                self.version_changed();
                self.write_meta().await;
                self.status(Status::Upgraded, &format!("guest {from} → {to}"));
                // An idle match goes back to sleep at once (its migrated state
                // is the base it wakes from), so a rollout does not bring
                // every hibernated match's memory back.
                if was_hibernated {
                    self.hibernate();
                }
                let seconds = started.elapsed().as_secs_f64();
                self.env.metrics.match_switch_seconds.observe(seconds);
                self.count_switch("switched");
                tracing::info!(match_id = %self.id, from, to, seq = self.seq, micros = (seconds * 1e6) as u64, "match switched");
                SwitchOutcome::Switched { seconds }
            }
            Err(f) => {
                self.refused = Some(new.version_arc());
                self.switch_failed(&from, &to, format!("migration failed: {f}"))
            }
        }
    }

    /// Hibernated, its base the whole state (no event since).
    fn sleeps_with_nothing_since(&self) -> bool {
        matches!(self.life, Lifecycle::Hibernated { fallback: None })
            && self.base.is_some()
            && self.tail.events.is_empty()
    }

    /// A rollout reaching a sleeping match switches it without waking it
    /// (its base read back from the store if it was given back; the
    /// fallback keeps it until the match wakes):
    /// it wakes under the new version, which migrates the base then
    /// (`recover`: `migrate` when another version saved the base), on
    /// probation as any switched match: if the migration or its first
    /// event fails, it goes back to the old version with that base. The
    /// canary has already run the new version on real matches; this keeps
    /// a rollout over many idle matches from instantiating each (issue 14:
    /// 10,000 matches in under 500 ms).
    async fn switch_asleep(&mut self, new: GuestVersion, started: Instant, from: &str, to: &str) -> SwitchOutcome {
        let Some(base) = self.base.clone() else {
            return SwitchOutcome::Unchanged;
        };
        let old = std::mem::replace(&mut self.version, new);
        self.enter(Lifecycle::Hibernated {
            fallback: Some(Fallback { version: old, base }),
        });
        // The fallback holds the state now: the base goes back to the store
        // once it is durable (read back when the match wakes).
        self.asleep_on_another_version(Some(ProbationNews::Started), started, from, to)
            .await
    }

    /// A sleeping match now runs another version (a probation begun or
    /// ended with it): recorded, told, counted; the base given back to the
    /// store.
    async fn asleep_on_another_version(
        &mut self,
        news: Option<ProbationNews>,
        started: Instant,
        from: &str,
        to: &str,
    ) -> SwitchOutcome {
        if let Some(news) = news {
            self.env.observer.probation(&self.id, news);
        }
        self.version_changed();
        self.write_meta().await;
        self.give_base_back();
        self.status(Status::Upgraded, &format!("guest {from} → {to}"));
        let seconds = started.elapsed().as_secs_f64();
        self.env.metrics.match_switch_seconds.observe(seconds);
        self.count_switch("switched");
        // One per sleeping match, 10,000 in a rollout: the rollout's report
        // and its own log line count them.
        tracing::debug!(match_id = %self.id, from, to, seq = self.seq, micros = (seconds * 1e6) as u64, "sleeping match switched without waking");
        SwitchOutcome::Switched { seconds }
    }

    /// Asleep with nothing since and nothing `version` would migrate: on a
    /// base `version` saved (read back from the store if it was given
    /// back), switched asleep from `version` and not woken since; or with
    /// no state saved at all (no event ever applied). A match that
    /// switched awake and fell asleep before its first event sleeps on the
    /// state the new version saved instead.
    fn sleeps_on_state_of(&mut self, version: &GuestVersion) -> bool {
        matches!(self.life, Lifecycle::Hibernated { .. })
            && self.tail.events.is_empty()
            && self.take_base_back().is_ok()
            && self
                .base
                .as_ref()
                .is_none_or(|b| &*b.guest == version.version() && b.state_version == version.state_version())
    }

    /// Switch a sleeping match to the version that saved its base (or, with
    /// no state saved, to any): nothing to hand over or migrate, so no
    /// instance; a probation it slept on ends. A rollback right after an install pays what the install did
    /// per sleeping match (a match record), not an instantiation and a
    /// restore each: 10,000 matches switch back in 172–187 ms against
    /// 1,368–1,541 ms before (`--only swap`, binaries alternated, 2 runs
    /// each), 247 ms once the base is read back first (one run).
    async fn switch_to_its_base(&mut self, new: GuestVersion, started: Instant, from: &str, to: &str) -> SwitchOutcome {
        let on_probation = matches!(
            self.enter(Lifecycle::Hibernated { fallback: None }),
            Lifecycle::Hibernated { fallback: Some(_) }
        );
        self.version = new;
        let news = on_probation.then_some(ProbationNews::Ended);
        self.asleep_on_another_version(news, started, from, to).await
    }

    /// The state the old version hands over: its base if it sleeps with
    /// nothing since (no need to wake it), else saved from its instance.
    async fn state_to_hand_over(&mut self) -> Option<Result<Base, Failure>> {
        if matches!(self.life, Lifecycle::Hibernated { .. })
            && let Err(f) = self.take_base_back()
        {
            return Some(Err(f));
        }
        if let (Lifecycle::Hibernated { .. }, Some(base)) = (&self.life, &self.base)
            && self.tail.events.is_empty()
        {
            return Some(Ok(Base::clone(base)));
        }
        self.wake().await;
        self.ensure_instance().await;
        let saved = self.life.reader()?.save_state();
        Some(match saved {
            Ok(state) => Ok(self.own_base(state)),
            Err(f) => {
                if f.is_fatal() {
                    // The next command restarts it from the last state.
                    self.lose_instance();
                }
                Err(f)
            }
        })
    }

    fn switch_skipped(&mut self, from: &str, to: &str, reason: String) -> SwitchOutcome {
        self.count_switch("skipped");
        tracing::warn!(match_id = %self.id, from, to, reason, "match not switched: the old version could not hand its state over");
        SwitchOutcome::Skipped(reason)
    }

    fn switch_failed(&mut self, from: &str, to: &str, reason: String) -> SwitchOutcome {
        self.count_switch("failed");
        tracing::warn!(match_id = %self.id, from, to, reason, "match stays on the old guest");
        SwitchOutcome::Failed(reason)
    }

    /// The first event went through on the new version.
    pub(super) fn pass_probation(&mut self) {
        if let Lifecycle::Probation { instance, .. } = self.enter(Lifecycle::Restarting) {
            self.enter(Lifecycle::Live(instance));
            self.count_switch("probation_passed");
            self.env.observer.probation(&self.id, ProbationNews::Ended);
        }
    }

    /// Cut a probation short (another switch): the new version stays.
    fn end_probation(&mut self) {
        let next = match self.enter(Lifecycle::Restarting) {
            Lifecycle::Probation { instance, .. } => Lifecycle::Live(instance),
            Lifecycle::Hibernated { fallback: Some(_) } => Lifecycle::Hibernated { fallback: None },
            other => {
                self.enter(other);
                return;
            }
        };
        self.enter(next);
        self.env.observer.probation(&self.id, ProbationNews::Ended);
    }

    /// The new version failed before passing its first event: back to the
    /// old one, with the state it saved at the switch.
    pub(super) async fn fail_probation(&mut self, failure: &Failure) {
        let fallback = match self.enter(Lifecycle::Restarting) {
            Lifecycle::Probation { fallback, .. }
            | Lifecycle::Hibernated {
                fallback: Some(fallback),
            } => fallback,
            other => {
                self.enter(other);
                return;
            }
        };
        let failed = std::mem::replace(&mut self.version, fallback.version);
        self.refused = Some(failed.version_arc());
        let reason = format!(
            "guest {} failed on its first event, back on {}: {failure}",
            short(failed.version()),
            short(self.version.version())
        );
        self.base = Some(fallback.base);
        self.stored = super::release::Stored::No;
        self.tail.clear();
        if let Err(f) = self.recover() {
            tracing::error!(match_id = %self.id, error = %f, "the old guest cannot take its own state back");
        }
        self.snapshot();
        self.count_switch("probation_failed");
        self.version_changed();
        self.env
            .observer
            .probation(&self.id, ProbationNews::Failed(reason.clone()));
        self.write_meta().await;
        tracing::warn!(match_id = %self.id, seq = self.seq, reason, "switch rolled back");
        self.status(Status::RolledBack, &reason);
    }
}
