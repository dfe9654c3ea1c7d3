//! The command loop's one timer: whichever idle deadline comes first of
//! marking a dirty match clean (`clean_after` after its last push), a
//! nap (`nap_after` after its last command, `NAP_AGAIN_AFTER` for a
//! sparse match; live only: [`super::nap`])
//! and hibernation (`hibernate_after` after its last command, clean only).

use std::pin::Pin;

use tokio::time::{Instant, Sleep};

use super::Worker;
use super::lifecycle::Lifecycle;

/// What the timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// Quiet for `clean_after`: snapshot and mark clean.
    Clean,
    /// Idle for `nap_after`: give the instance back.
    Nap,
    /// Idle and clean for `hibernate_after`: give everything back.
    Hibernate,
}

impl Worker {
    /// The earliest idle deadline, if any is set.
    pub(super) fn next_timer(&self) -> Option<(Instant, Timer)> {
        let clean = self.mark.dirty_since().map(|t| t + self.env.clean_after);
        let nap = (self.env.nap_after)
            .filter(|_| matches!(self.life, Lifecycle::Live(_)))
            .map(|d| self.last_command + self.nap_delay(d));
        let hibernate = (self.env.hibernate_after)
            .filter(|_| {
                self.mark.is_clean()
                    && matches!(
                        self.life,
                        Lifecycle::Live(_) | Lifecycle::Napping | Lifecycle::Probation { .. }
                    )
            })
            .map(|d| self.last_command + d);
        [(clean, Timer::Clean), (nap, Timer::Nap), (hibernate, Timer::Hibernate)]
            .into_iter()
            .filter_map(|(at, timer)| Some((at?, timer)))
            .min_by_key(|(at, _)| *at)
    }
}

/// The armed deadline: one `Sleep`, moved when the deadline moves and
/// dropped when there is none. Boxed, and kept by the worker rather than
/// made in each turn of the command loop: a `Sleep` is ~110 bytes, and
/// in the loop's future it would be part of every match's task, a
/// hibernated one's too, which has no deadline.
#[derive(Default)]
pub(super) struct Alarm(Option<(Pin<Box<Sleep>>, Timer)>);

impl Alarm {
    /// Arm it for `next` (disarm it for `None`).
    pub(super) fn set(&mut self, next: Option<(Instant, Timer)>) {
        match (next, &mut self.0) {
            (None, armed) => *armed = None,
            (Some((at, timer)), Some((sleep, kind))) => {
                if sleep.deadline() != at {
                    sleep.as_mut().reset(at);
                }
                *kind = timer;
            }
            (Some((at, timer)), armed) => *armed = Some((Box::pin(tokio::time::sleep_until(at)), timer)),
        }
    }

    /// Fires at the deadline; never while disarmed. A deadline that has
    /// passed fires at once, again, until [`Alarm::set`] moves it.
    pub(super) async fn fire(&mut self) -> Timer {
        match &mut self.0 {
            Some((sleep, timer)) => {
                sleep.as_mut().await;
                *timer
            }
            None => std::future::pending().await,
        }
    }
}
