//! A match's lifecycle: one enum whose variants hold their own data, and
//! the one function every transition goes through.
//!
//! | state | holds | on event | leaves by |
//! |---|---|---|---|
//! | `Restarting` | nothing | rebuild from base + tail, apply | rebuilt → `Live`; failure past intensity → `Quarantined` |
//! | `Live` | instance | apply (supervised) | failure → `Restarting`; idle → `Napping`/`Hibernated`; switch → `Live`/`Probation` |
//! | `Napping` | nothing (its base: the whole state, snapshotted at the nap) | restore it first | any command but an inspection → `Live`; idle → `Hibernated` |
//! | `Probation` | new instance + fallback | apply on trial | success → `Live`; any failure → old version `Live` |
//! | `Hibernated` | fallback if it slept on probation | wake first | any command → `Live`/`Probation` |
//! | `Quarantined` | reason + a read-only view | hold it | heal → `Healing`; switch → `Healing` on the new version |
//! | `Healing` | instance (if up) | replay kept events; failures dead-letter, never quarantine | done → `Live`/`Restarting` |
//! | `Stopped` | nothing | — | terminal (mailbox closed) |
//!
//! Gauges (`hibernated_matches`, `quarantined_matches`,
//! `napping_matches`) follow from the state, in [`Worker::enter`], so they
//! cannot drift from it. A napping match is live to everyone outside
//! (its [`State`] is `Live`): it is only the instance that is away
//! ([`super::nap`]).

use std::sync::Arc;

use super::Worker;
use crate::sandbox::{GuestInstance, GuestVersion};

/// The recovery base: a saved state and who saved it.
#[derive(Debug, Clone)]
pub(super) struct Base {
    pub state: Vec<u8>,
    /// Content hash of the guest version that saved it...
    pub guest: Arc<str>,
    /// ...and its state layout version.
    pub state_version: u32,
}

impl Base {
    /// The guest's view of it, to restore.
    pub fn saved(&self) -> crate::sandbox::Saved<'_> {
        crate::sandbox::Saved {
            state: &self.state,
            guest: &self.guest,
            state_version: self.state_version,
        }
    }
}

/// Where a match on probation goes back to if the new version fails.
pub(super) struct Fallback {
    pub version: GuestVersion,
    /// The state at the switch, as the old version held it (boxed: a
    /// lifecycle state is part of every match).
    pub base: Box<Base>,
}

pub(super) enum Lifecycle {
    /// No instance: the next command rebuilds one from base + tail.
    Restarting,
    Live(GuestInstance),
    /// Live and idle for `nap_after` (`NAP_AGAIN_AFTER` if sparse): the
    /// instance was given back, and the
    /// base (a snapshot taken at the nap) is the whole state: the tail is
    /// empty ([`super::nap`]).
    Napping,
    /// Switched; the first event decides whether the new version stays.
    Probation {
        instance: GuestInstance,
        fallback: Fallback,
    },
    /// Idle: the instance (pool slot and memory) was given back.
    Hibernated {
        fallback: Option<Fallback>,
    },
    /// Past the restart intensity: events are held, not applied. `view`
    /// is rebuilt only to render snapshots of the last good state.
    Quarantined {
        reason: String,
        view: Option<GuestInstance>,
    },
    /// An operator heal (or a switch of a quarantined match) replays what
    /// was kept; failures dead-letter but do not quarantine again.
    Healing {
        instance: Option<GuestInstance>,
    },
    Stopped,
}

/// A lifecycle state's name, for logs, metrics and listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Restarting,
    Live,
    Probation,
    Hibernated,
    Quarantined,
    Healing,
    Stopped,
}

impl State {
    /// Every state, in declaration order (`State as u8` indexes it).
    pub const ALL: [State; 7] = [
        State::Restarting,
        State::Live,
        State::Probation,
        State::Hibernated,
        State::Quarantined,
        State::Healing,
        State::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Restarting => "restarting",
            State::Live => "live",
            State::Probation => "probation",
            State::Hibernated => "hibernated",
            State::Quarantined => "quarantined",
            State::Healing => "healing",
            State::Stopped => "stopped",
        }
    }
}

impl Lifecycle {
    pub fn state(&self) -> State {
        match self {
            Lifecycle::Restarting => State::Restarting,
            Lifecycle::Live(_) | Lifecycle::Napping => State::Live,
            Lifecycle::Probation { .. } => State::Probation,
            Lifecycle::Hibernated { .. } => State::Hibernated,
            Lifecycle::Quarantined { .. } => State::Quarantined,
            Lifecycle::Healing { .. } => State::Healing,
            Lifecycle::Stopped => State::Stopped,
        }
    }

    /// The instance that applies events (live, on probation, healing).
    pub fn applier(&mut self) -> Option<&mut GuestInstance> {
        match self {
            Lifecycle::Live(i) | Lifecycle::Probation { instance: i, .. } => Some(i),
            Lifecycle::Healing { instance } => instance.as_mut(),
            _ => None,
        }
    }

    /// The instance that answers reads (snapshots, saved state), also a
    /// quarantined match's view.
    pub fn reader(&mut self) -> Option<&mut GuestInstance> {
        match self {
            Lifecycle::Quarantined { view, .. } => view.as_mut(),
            other => other.applier(),
        }
    }

    pub fn quarantine_reason(&self) -> Option<&str> {
        match self {
            Lifecycle::Quarantined { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

impl Worker {
    /// The one place the lifecycle changes: the gauges follow the state.
    /// Returns the state left.
    pub(super) fn enter(&mut self, next: Lifecycle) -> Lifecycle {
        let (from, to) = (self.life.state(), next.state());
        let napping = matches!(next, Lifecycle::Napping);
        let left = std::mem::replace(&mut self.life, next);
        let was_napping = matches!(left, Lifecycle::Napping);
        // Falling asleep gives memory back: the runtime threads collect
        // their heaps at their next park (`resident`).
        if (napping && !was_napping) || (to == State::Hibernated && from != to) {
            crate::resident::note_given_back();
        }
        if napping != was_napping {
            let gauge = &self.env.metrics.napping_matches;
            if napping {
                gauge.inc()
            } else {
                gauge.dec()
            };
        }
        self.shown.set(to);
        if from != to {
            let m = &self.env.metrics;
            match from {
                State::Hibernated => m.hibernated_matches.dec(),
                State::Quarantined => m.quarantined_matches.dec(),
                _ => 0,
            };
            match to {
                State::Hibernated => m.hibernated_matches.inc(),
                State::Quarantined => m.quarantined_matches.inc(),
                _ => 0,
            };
            tracing::debug!(match_id = %self.id, from = from.as_str(), to = to.as_str(), seq = self.seq, "lifecycle");
        }
        left
    }

    /// Tell the observer this match sleeps (hibernated) or not, once per
    /// change: awake as a wake begins ([`Worker::wake`]), asleep only
    /// between commands ([`Worker::settle_asleep`]), never in the middle of
    /// one (a wake passes through `Hibernated` again as it rebuilds).
    pub(super) fn tell_asleep(&mut self, asleep: bool) {
        if self.told_asleep != asleep {
            self.told_asleep = asleep;
            self.env.observer.sleeps(&self.id, asleep);
        }
    }

    /// Put a freshly built instance where the current state keeps one.
    pub(super) fn install(&mut self, instance: GuestInstance) {
        let next = match self.enter(Lifecycle::Restarting) {
            Lifecycle::Healing { .. } => Lifecycle::Healing {
                instance: Some(instance),
            },
            Lifecycle::Quarantined { reason, .. } => Lifecycle::Quarantined {
                reason,
                view: Some(instance),
            },
            Lifecycle::Probation { fallback, .. }
            | Lifecycle::Hibernated {
                fallback: Some(fallback),
            } => Lifecycle::Probation { instance, fallback },
            _ => Lifecycle::Live(instance),
        };
        self.enter(next);
    }

    /// Drop the instance after a fatal failure, keeping the state's data.
    pub(super) fn lose_instance(&mut self) {
        let next = match self.enter(Lifecycle::Restarting) {
            Lifecycle::Healing { .. } => Lifecycle::Healing { instance: None },
            Lifecycle::Quarantined { reason, .. } => Lifecycle::Quarantined { reason, view: None },
            Lifecycle::Hibernated { fallback } => Lifecycle::Hibernated { fallback },
            Lifecycle::Stopped => Lifecycle::Stopped,
            _ => Lifecycle::Restarting,
        };
        self.enter(next);
    }
}
