//! The command loop's one timer: whichever idle deadline comes first of
//! marking a dirty match clean (`clean_after` after its last push), a
//! nap (`nap_after` after its last command, `NAP_AGAIN_AFTER` for a
//! sparse match; live only: [`super::nap`])
//! and hibernation (`hibernate_after` after its last command, clean only).

use tokio::time::Instant;

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

/// Fires at the deadline; never without one.
pub(super) async fn fire(next: Option<(Instant, Timer)>) -> Timer {
    match next {
        Some((at, timer)) => {
            tokio::time::sleep_until(at).await;
            timer
        }
        None => std::future::pending().await,
    }
}
