//! Restart policy of a match worker, Erlang style, as plain data.
//!
//! A worker fails when its guest traps, overruns its deadline or its memory
//! cap. The policy: restart from the last snapshot + journal and retry the
//! failed event once; if the retry fails too, the event is a poison pill and
//! is dead-lettered. [`Intensity`] bounds how often that may happen: more
//! than `max_failures` within `window` quarantines the match. No IO here;
//! the worker ([`crate::worker`]) carries the policy out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Restart intensity: at most `max_failures` in any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub max_failures: u32,
    pub window: Duration,
}

/// Failure times of one match within the policy window.
#[derive(Debug, Clone)]
pub struct Intensity {
    policy: Policy,
    failures: VecDeque<Instant>,
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Restart,
    Quarantine,
}

impl Intensity {
    pub fn new(policy: Policy) -> Intensity {
        Intensity {
            policy,
            failures: VecDeque::new(),
        }
    }

    /// Record a failure at `now`; restart unless the intensity is exceeded.
    pub fn record(&mut self, now: Instant) -> Verdict {
        while self
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.policy.window)
        {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        if self.failures.len() as u32 > self.policy.max_failures {
            Verdict::Quarantine
        } else {
            Verdict::Restart
        }
    }

    /// Failures still inside the window at `now`.
    pub fn in_window(&self, now: Instant) -> usize {
        self.failures
            .iter()
            .filter(|t| now.duration_since(**t) <= self.policy.window)
            .count()
    }

    /// Forget past failures (after an operator heals the match).
    pub fn reset(&mut self) {
        self.failures.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantines_past_the_intensity_and_forgets_old_failures() {
        let t0 = Instant::now();
        let mut i = Intensity::new(Policy {
            max_failures: 3,
            window: Duration::from_secs(5),
        });
        for k in 0..3 {
            assert_eq!(i.record(t0 + Duration::from_secs(k)), Verdict::Restart);
        }
        assert_eq!(i.record(t0 + Duration::from_secs(4)), Verdict::Quarantine, "4 in 5 s");
        let mut j = Intensity::new(Policy {
            max_failures: 3,
            window: Duration::from_secs(5),
        });
        for k in 0..10 {
            assert_eq!(
                j.record(t0 + Duration::from_secs(3 * k)),
                Verdict::Restart,
                "spread out failures restart"
            );
        }
    }
}
