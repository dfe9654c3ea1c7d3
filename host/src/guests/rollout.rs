//! Rolling a version out to every match (and back): the sleepers passed
//! by, the switches paced by the time they take, the probation window,
//! the abort threshold, and the report.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde::Serialize;

use super::{Guests, InstallError, MatchFailure};
use crate::metrics::Kind;
use crate::router::Router;
use crate::sandbox::GuestVersion;
use crate::worker::SwitchOutcome;

/// What a switch counts towards the rollout's slice: the time the worker
/// took for it (a live match's ~0.5 ms: saving, instantiating, migrating,
/// its status frame to every subscriber; a sleeping one switched asleep a
/// few µs), so the pauses follow the work queued behind the switches and
/// not the round trips between them (~30 µs each, mostly waking the
/// match's task). One that healed or failed did unmeasured work: a whole
/// slice. An unchanged match: nothing.
fn work(outcome: Option<&SwitchOutcome>, slice: Duration) -> Duration {
    match outcome {
        Some(SwitchOutcome::Switched { seconds }) => Duration::try_from_secs_f64(*seconds).unwrap_or(slice),
        Some(SwitchOutcome::Healed { .. } | SwitchOutcome::Failed(_) | SwitchOutcome::Skipped(_)) => slice,
        Some(SwitchOutcome::Unchanged) | None => Duration::ZERO,
    }
}

/// How a rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutOutcome {
    /// Every match switched.
    Complete,
    /// Some stayed on the old version, fewer than the abort threshold.
    Partial,
    /// Too many failed: every match went back.
    Aborted,
    /// The version was already active.
    Unchanged,
}

impl RolloutOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutOutcome::Complete => "complete",
            RolloutOutcome::Partial => "partial",
            RolloutOutcome::Aborted => "aborted",
            RolloutOutcome::Unchanged => "unchanged",
        }
    }
}

/// An install (with canary and abort threshold) or a rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutKind {
    Install,
    Rollback,
}

impl RolloutKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutKind::Install => "install",
            RolloutKind::Rollback => "rollback",
        }
    }
}

/// What a rollout (or rollback) did.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutReport {
    pub outcome: RolloutOutcome,
    pub kind: RolloutKind,
    pub from: String,
    pub to: String,
    pub compile_ms: Option<f64>,
    pub canary: Option<CanaryReport>,
    pub matches: usize,
    pub switched: usize,
    pub unchanged: usize,
    /// Matches asleep on the version replaced, passed by: each takes the
    /// new version as it wakes, on probation (a failure there counts as
    /// any first-event failure), or stays if it failed on it before.
    pub deferred: usize,
    /// Quarantined matches switched and healed (replayed under the new version).
    pub healed: Vec<MatchFailure>,
    pub failed: Vec<MatchFailure>,
    /// Matches the old version could not take the state from (its own
    /// failure; they stay on it and do not count towards aborting).
    pub skipped: Vec<MatchFailure>,
    /// Matches that failed their first event after switching (so far).
    pub probation_failures: Vec<MatchFailure>,
    /// Switched matches still waiting for their first event when the
    /// probation window closed (each still goes back on its own failure).
    pub probation_pending: usize,
    /// After an abort: matches that could not be switched back.
    pub revert_failed: Vec<MatchFailure>,
    /// From the start to the last switch answered (all matches switched),
    /// before any probation wait; the pauses included.
    pub switch_ms: f64,
    /// Pauses between switches (`--rollout-slice-us`) and the time they
    /// took, within `switch_ms`.
    pub pauses: usize,
    pub paused_ms: f64,
    /// Per-match switch time, microseconds.
    pub switch_us_p50: Option<f64>,
    pub switch_us_p99: Option<f64>,
    pub switch_us_max: Option<f64>,
    pub total_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CanaryReport {
    pub matches: usize,
    pub events: usize,
    pub ms: f64,
}

/// One installed version, for listings.
#[derive(Debug, Clone, Serialize)]
pub struct VersionInfo {
    pub hash: String,
    pub size: usize,
    /// Unix ms.
    pub installed_at: i64,
    pub active: bool,
    pub previous: bool,
    pub matches: usize,
    pub match_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub active: String,
    pub previous: Option<String>,
    pub rollout_in_progress: bool,
    pub versions: Vec<VersionInfo>,
    pub last_rollout: Option<RolloutReport>,
}

impl Guests {
    pub(super) fn finish(&self, report: RolloutReport) -> RolloutReport {
        self.metrics
            .rollouts
            .get_or_create(&Kind {
                kind: match report.kind {
                    RolloutKind::Rollback => "rollback",
                    RolloutKind::Install => report.outcome.as_str(),
                },
            })
            .inc();
        tracing::info!(
            kind = report.kind.as_str(),
            outcome = report.outcome.as_str(),
            from = report.from,
            to = report.to,
            matches = report.matches,
            switched = report.switched,
            deferred = report.deferred,
            failed = report.failed.len(),
            skipped = report.skipped.len(),
            healed = report.healed.len(),
            probation_failures = report.probation_failures.len(),
            total_ms = report.total_ms,
            "guest rollout finished"
        );
        *self.last.lock().expect("last rollout lock") = Some(report.clone());
        report
    }

    /// Replay stored state and recent journal entries of a sample of
    /// matches through `runtime`, in scratch instances, on a blocking thread.
    pub(super) async fn canary(
        &self,
        router: &Router,
        from: &GuestVersion,
        to: &GuestVersion,
    ) -> Result<CanaryReport, InstallError> {
        let mut ids = router.match_ids();
        ids.sort();
        let n = self.policy.canary_matches.min(ids.len());
        // Spread the sample over the sorted ids.
        let sample: Vec<Arc<str>> = (0..n).map(|i| ids[i * ids.len() / n.max(1)].clone()).collect();
        let store = self.store.store.clone();
        let (from, to) = (from.clone(), to.clone());
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || super::canary::canary(&store, &from, &to, &sample))
            .await
            .map_err(|e| InstallError::Internal(format!("canary task: {e}")))?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        self.metrics.guest_canary_seconds.observe(ms / 1e3);
        let (matches, events) = result.map_err(InstallError::Canary)?;
        tracing::info!(matches, events, ms, "canary passed");
        Ok(CanaryReport { matches, events, ms })
    }

    /// Switch every match from `from` to `to` (but the sleepers passed
    /// by); with `max_failed`, on probation, aborting past that many
    /// failures.
    pub(super) async fn roll(
        &self,
        router: &Router,
        kind: RolloutKind,
        from: &GuestVersion,
        to: &GuestVersion,
        max_failed: Option<usize>,
    ) -> RolloutReport {
        let started = Instant::now();
        self.placement.reset_probation();
        // What each match ran before, to go back to on abort (before a
        // sleeper can take the new version as it wakes).
        let before = self.placement.running();
        router.set_version(to.clone());
        let ids = router.match_ids();
        tracing::info!(
            kind = kind.as_str(),
            from = from.version(),
            to = to.version(),
            matches = ids.len(),
            "guest rollout started"
        );
        let mut report = RolloutReport::unchanged(kind, to.version());
        report.from = from.version().to_owned();
        report.outcome = RolloutOutcome::Complete;
        report.matches = ids.len();
        let ids = self.passing_sleepers_by(ids, from, to, &mut report);
        let messaged = ids.len();
        let mut times = Vec::with_capacity(ids.len());
        let probation = max_failed.is_some();
        let mut switches = futures_util::stream::iter(ids)
            .map(|id| {
                let to = to.clone();
                async move {
                    let outcome = router.switch(&id, to, probation).await;
                    (id, outcome)
                }
            })
            .buffer_unordered(self.policy.concurrency.max(1));
        let mut aborted = false;
        let slice = self.policy.slice;
        let (mut answered, mut worked) = (0usize, Duration::ZERO);
        while let Some((id, outcome)) = switches.next().await {
            answered += 1;
            worked += work(outcome.as_ref(), slice);
            report.record(&id, outcome, &mut times);
            if self.over(&report, max_failed) {
                aborted = true;
                break;
            }
            // Paced by the time the switches themselves took (not the
            // round trips between them), with no pause after the last.
            if !slice.is_zero() && worked >= slice && answered < messaged {
                let paused = Instant::now();
                tokio::time::sleep(super::ROLLOUT_PAUSE).await;
                report.pauses += 1;
                report.paused_ms += paused.elapsed().as_secs_f64() * 1e3;
                worked = Duration::ZERO;
            }
        }
        drop(switches);
        report.switch_ms = started.elapsed().as_secs_f64() * 1e3;
        if probation && !aborted {
            aborted = self.probation_aborts(&report, max_failed).await;
        }
        report.probation_failures = self.placement.probation_failures();
        report.probation_pending = self.placement.probation_counts().0;
        if aborted {
            tracing::warn!(
                failed = report.failed.len(),
                probation_failures = report.probation_failures.len(),
                "too many matches failed; switching every match back"
            );
            report.revert_failed = self.revert(router, from, &before).await;
            report.outcome = RolloutOutcome::Aborted;
        } else if !report.failed.is_empty() || !report.probation_failures.is_empty() {
            report.outcome = RolloutOutcome::Partial;
        }
        report.set_switch_times(times);
        report.total_ms = started.elapsed().as_secs_f64() * 1e3;
        report
    }

    /// The matches a rollout from `from` to `to` sends a switch to: not
    /// the sleeping ones on `from`, which take `to` as they wake
    /// (`Worker::take_current`, counted `deferred`), nor those asleep on
    /// `to` already (`unchanged`). A rollout over 10,000 mostly idle
    /// matches wakes only the live ones' tasks (issue 14: a sleeping
    /// match's switch cost ~30 us of CPU, mostly the runtime's waking its
    /// task, and 10,000 of them took ~250 ms of both cores). A match asleep
    /// on an older version still switches now (asleep, without waking), so
    /// only the active and previous versions keep sleepers and an older
    /// one can be pruned. Called after the router's version changed.
    fn passing_sleepers_by(
        &self,
        ids: Vec<Arc<str>>,
        from: &GuestVersion,
        to: &GuestVersion,
        report: &mut RolloutReport,
    ) -> Vec<Arc<str>> {
        let sleeping = self.placement.sleeping();
        ids.into_iter()
            .filter(|id| match sleeping.get(id) {
                Some(v) if **v == *to.version() => {
                    report.unchanged += 1;
                    false
                }
                Some(v) if **v == *from.version() => {
                    report.deferred += 1;
                    false
                }
                _ => true,
            })
            .collect()
    }

    /// Past the abort threshold: migration failures plus first-event
    /// failures so far (rollouts with a threshold only).
    fn over(&self, report: &RolloutReport, max_failed: Option<usize>) -> bool {
        let (_, probation_failed) = self.placement.probation_counts();
        max_failed.is_some_and(|max| report.failed.len() + probation_failed > max)
    }

    /// First-event failures still count until every switched match has had
    /// its first event, or the probation window closes: whether they pass
    /// the threshold meanwhile.
    async fn probation_aborts(&self, report: &RolloutReport, max_failed: Option<usize>) -> bool {
        let deadline = tokio::time::Instant::now() + self.policy.probation_window;
        loop {
            let changed = self.placement.changed.notified();
            if self.over(report, max_failed) {
                return true;
            }
            if self.placement.probation_counts().0 == 0 || tokio::time::timeout_at(deadline, changed).await.is_err() {
                return false;
            }
        }
    }

    /// After an abort: every match back on the version it ran before the
    /// rollout (`from` for matches created since). Switches already sent
    /// may still be running: a revert queues behind them in each mailbox.
    async fn revert(
        &self,
        router: &Router,
        from: &GuestVersion,
        before: &HashMap<Arc<str>, Arc<str>>,
    ) -> Vec<MatchFailure> {
        router.set_version(from.clone());
        let ids = router.match_ids();
        let targets: Vec<(Arc<str>, GuestVersion)> = ids
            .into_iter()
            .map(|id| {
                let runtime = before
                    .get(&id)
                    .and_then(|v| self.loaded(v))
                    .unwrap_or_else(|| from.clone());
                (id, runtime)
            })
            .collect();
        futures_util::stream::iter(targets)
            .map(|(id, runtime)| async move {
                let outcome = router.switch(&id, runtime, false).await;
                (id, outcome)
            })
            .buffer_unordered(self.policy.concurrency.max(1))
            .filter_map(|(id, outcome)| async move {
                match outcome {
                    Some(SwitchOutcome::Failed(reason) | SwitchOutcome::Skipped(reason)) => Some(MatchFailure {
                        match_id: id.to_string(),
                        reason,
                    }),
                    _ => None,
                }
            })
            .collect()
            .await
    }
}

impl RolloutReport {
    /// Count one match's switch (its time, if it switched).
    fn record(&mut self, id: &str, outcome: Option<SwitchOutcome>, times: &mut Vec<f64>) {
        let failure = |reason: String| MatchFailure {
            match_id: id.to_owned(),
            reason,
        };
        match outcome {
            Some(SwitchOutcome::Switched { seconds }) => {
                self.switched += 1;
                times.push(seconds * 1e6);
            }
            Some(SwitchOutcome::Unchanged) | None => self.unchanged += 1,
            Some(SwitchOutcome::Healed { report, healthy }) => {
                self.switched += 1;
                if healthy {
                    self.healed.push(failure(report));
                } else {
                    self.failed.push(failure(report));
                }
            }
            Some(SwitchOutcome::Failed(reason)) => self.failed.push(failure(reason)),
            Some(SwitchOutcome::Skipped(reason)) => self.skipped.push(failure(reason)),
        }
    }

    /// Per-match switch time percentiles, microseconds.
    fn set_switch_times(&mut self, mut times: Vec<f64>) {
        times.sort_by(f64::total_cmp);
        let pct = |q: f64| {
            times
                .get(((times.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
        };
        self.switch_us_p50 = pct(0.5);
        self.switch_us_p99 = pct(0.99);
        self.switch_us_max = times.last().copied();
    }

    pub(super) fn unchanged(kind: RolloutKind, to: &str) -> RolloutReport {
        RolloutReport {
            outcome: RolloutOutcome::Unchanged,
            kind,
            from: to.to_owned(),
            to: to.to_owned(),
            compile_ms: None,
            canary: None,
            matches: 0,
            switched: 0,
            unchanged: 0,
            deferred: 0,
            healed: Vec::new(),
            failed: Vec::new(),
            skipped: Vec::new(),
            probation_failures: Vec::new(),
            probation_pending: 0,
            revert_failed: Vec::new(),
            switch_ms: 0.0,
            pauses: 0,
            paused_ms: 0.0,
            switch_us_p50: None,
            switch_us_p99: None,
            switch_us_max: None,
            total_ms: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_counts_towards_the_slice_the_time_its_worker_took() {
        let slice = Duration::from_micros(250);
        let switched = |seconds| Some(SwitchOutcome::Switched { seconds });
        assert_eq!(work(switched(0.5).as_ref(), slice), Duration::from_millis(500));
        // Sleepers switched asleep (a few µs each) share a slice; one live
        // switch fills it.
        let asleep: Duration = (0..8).map(|_| work(switched(5e-6).as_ref(), slice)).sum();
        assert!(asleep < slice, "{asleep:?}");
        assert!(work(switched(486e-6).as_ref(), slice) >= slice);
        assert_eq!(work(Some(&SwitchOutcome::Unchanged), slice), Duration::ZERO);
        assert_eq!(work(None, slice), Duration::ZERO);
        assert_eq!(work(Some(&SwitchOutcome::Failed("no".into())), slice), slice);
        // A time that is not one counts a whole slice.
        assert_eq!(work(switched(f64::NAN).as_ref(), slice), slice);
    }
}
