//! Guest versions: install, canary, rollout, rollback, and who runs what.
//!
//! [`Guests`] owns the installed versions (compiled [`GuestVersion`]s over one
//! shared [`Platform`], their components kept in the store) and which one
//! is active. An install compiles the component on a blocking thread, checks
//! its world, runs the canary, keeps it in the store, and rolls it out:
//! every live match gets a [`crate::worker::Command::Switch`] in its mailbox
//! (`concurrency` in flight, one by default), so each switches between two of its own
//! events while the others keep serving. Matches that fail to migrate stay
//! on the old version; past `max_failed` failures (migration or first event,
//! counted until every switched match has passed its first event or the
//! probation window ends) the rollout aborts and every match goes back to the
//! version it ran before. A rollback is a rollout to the previous version
//! without canary or abort. One rollout at a time; it runs in its own task,
//! so a client that goes away does not cut it short. Installing the active
//! version again retries the matches that stayed behind.
//!
//! [`Placement`] is shared with the workers: each records the version it
//! runs and reports a failed first event, which counts against the rollout
//! in progress.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use serde::Serialize;

use crate::journal::{GUESTS_SCOPE, GuestRecord, Journal, Op, sync};
use crate::metrics::{Kind, Metrics};
use crate::router::Router;
use crate::sandbox::{GuestVersion, LoadError, Platform, Saved};
use crate::store::{Store, StoreHandle};
use crate::worker::SwitchOutcome;

/// Events replayed per canary match at most (the tail after its snapshot).
pub const CANARY_EVENTS_PER_MATCH: usize = 256;

/// Rollout policy.
#[derive(Debug, Clone, Copy)]
pub struct RolloutPolicy {
    /// Abort and roll everything back when more matches than this fail.
    pub max_failed: usize,
    /// Matches whose stored state and recent journal the canary replays.
    pub canary_matches: usize,
    /// Switches in flight at once: more finishes a rollout sooner, fewer
    /// leaves more CPU to the matches' own events meanwhile.
    pub concurrency: usize,
    /// After the switches, how long first-event failures still count
    /// towards `max_failed` (matches without an event by then stay on
    /// probation individually).
    pub probation_window: std::time::Duration,
    /// Installed versions kept; older ones that no match runs and that are
    /// neither active nor previous are removed after an install.
    pub keep_versions: usize,
}

/// Why an install or rollback did not happen. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("refused: {0}")]
    Load(#[from] LoadError),
    #[error("canary failed: {0}")]
    Canary(String),
    #[error("another rollout is in progress")]
    Busy,
    #[error("no previous version to roll back to")]
    NoPrevious,
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("store: {0}")]
    Journal(#[from] crate::journal::JournalError),
    #[error("internal: {0}")]
    Internal(String),
}

impl InstallError {
    pub fn kind(&self) -> &'static str {
        match self {
            InstallError::Load(e) => e.kind(),
            InstallError::Canary(_) => "canary",
            InstallError::Busy => "busy",
            InstallError::NoPrevious => "no_previous",
            InstallError::Store(_) | InstallError::Journal(_) => "store",
            InstallError::Internal(_) => "internal",
        }
    }
}

/// Which match runs which version, and first-event failures.
#[derive(Debug, Default)]
pub struct Placement {
    running: Mutex<HashMap<Arc<str>, Arc<str>>>,
    probation: Mutex<Probation>,
    /// Signalled whenever a probation starts, ends or fails.
    changed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Probation {
    /// Switched matches that have not had their first event yet.
    pending: std::collections::HashSet<Arc<str>>,
    /// First-event failures since the current (or last) rollout began.
    failures: Vec<MatchFailure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MatchFailure {
    #[serde(rename = "match")]
    pub match_id: String,
    pub reason: String,
}

impl Placement {
    pub fn set(&self, match_id: &Arc<str>, version: Arc<str>) {
        self.running
            .lock()
            .expect("placement lock")
            .insert(match_id.clone(), version);
    }

    pub fn remove(&self, match_id: &str) {
        self.running.lock().expect("placement lock").remove(match_id);
        self.probation_ended(match_id);
    }

    pub fn probation_started(&self, match_id: &Arc<str>) {
        self.probation
            .lock()
            .expect("placement lock")
            .pending
            .insert(match_id.clone());
        self.changed.notify_waiters();
    }

    /// Passed its first event, or its probation was cut short.
    pub fn probation_ended(&self, match_id: &str) {
        if self.probation.lock().expect("placement lock").pending.remove(match_id) {
            self.changed.notify_waiters();
        }
    }

    pub fn probation_failed(&self, match_id: &str, reason: &str) {
        let mut p = self.probation.lock().expect("placement lock");
        p.pending.remove(match_id);
        p.failures.push(MatchFailure {
            match_id: match_id.to_owned(),
            reason: reason.to_owned(),
        });
        drop(p);
        self.changed.notify_waiters();
    }

    fn probation_failures(&self) -> Vec<MatchFailure> {
        self.probation.lock().expect("placement lock").failures.clone()
    }

    /// (matches still on probation, first-event failures).
    fn probation_counts(&self) -> (usize, usize) {
        let p = self.probation.lock().expect("placement lock");
        (p.pending.len(), p.failures.len())
    }

    fn reset_probation(&self) {
        self.probation.lock().expect("placement lock").failures.clear();
    }

    /// Match → the version it runs now.
    fn running(&self) -> HashMap<Arc<str>, Arc<str>> {
        self.running.lock().expect("placement lock").clone()
    }

    /// Version → matches running it (sorted).
    pub fn by_version(&self) -> BTreeMap<Arc<str>, Vec<Arc<str>>> {
        let mut out: BTreeMap<Arc<str>, Vec<Arc<str>>> = BTreeMap::new();
        for (m, v) in self.running.lock().expect("placement lock").iter() {
            out.entry(v.clone()).or_default().push(m.clone());
        }
        for ids in out.values_mut() {
            ids.sort();
        }
        out
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
    /// before any probation wait.
    pub switch_ms: f64,
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

struct Installed {
    /// Compiled on first use after a restart.
    runtime: Option<GuestVersion>,
    size: usize,
    installed_at: i64,
}

/// Clears the rollout flag when a rollout ends, however it ends.
struct RollingGuard<'a>(&'a AtomicBool);

impl Drop for RollingGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

struct Versions {
    map: BTreeMap<String, Installed>,
    active: String,
    previous: Option<String>,
    /// The active version as the store had it when this host started.
    stored_active: Option<String>,
}

pub struct Guests {
    platform: Option<Platform>,
    /// Reads directly; writes through the store's writer.
    store: StoreHandle,
    metrics: Arc<Metrics>,
    policy: RolloutPolicy,
    pub placement: Arc<Placement>,
    versions: Mutex<Versions>,
    last: Mutex<Option<RolloutReport>>,
    /// Set while a rollout or rollback runs (one at a time).
    rolling: AtomicBool,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Guests {
    /// The versions kept in `store` and the one to run now: `explicit` (the
    /// `--guest` file) if given, else the stored active version, else
    /// `default` (the embedded guest). Whatever runs is installed in the
    /// store. `platform: None` runs the model natively (no versions).
    pub async fn open(
        platform: Option<Platform>,
        store: StoreHandle,
        explicit: Option<Vec<u8>>,
        default: &[u8],
        metrics: Arc<Metrics>,
        policy: RolloutPolicy,
    ) -> anyhow::Result<(Guests, GuestVersion)> {
        let mut map = BTreeMap::new();
        for (hash, rec) in store.store.guests()? {
            map.insert(
                hash,
                Installed {
                    runtime: None,
                    size: rec.component.len(),
                    installed_at: rec.installed_at,
                },
            );
        }
        let (stored_active, stored_previous) = store.store.active_guest()?;
        let versions = Versions {
            map,
            active: "native".into(),
            previous: None,
            stored_active: stored_active.clone(),
        };
        let guests = Guests::assemble(platform.clone(), store.clone(), metrics, policy, versions);
        let Some(platform) = platform else {
            return Ok((guests, GuestVersion::native()));
        };
        let (bytes, previous) = match (explicit, stored_active) {
            (Some(b), active) => {
                let prev = active.filter(|a| *a != crate::sandbox::content_hash(&b));
                (b, prev.or(stored_previous))
            }
            (None, Some(active)) => match store.store.guest(&active)? {
                Some(rec) => (rec.component, stored_previous),
                None => anyhow::bail!("the store names {active} as the active guest but does not hold it"),
            },
            (None, None) => (default.to_vec(), None),
        };
        let (runtime, bytes, _) = guests
            .compile(platform, bytes)
            .await
            .map_err(|e| anyhow::anyhow!("loading the guest: {e}"))?;
        guests.keep(&runtime, bytes).await?;
        let previous = previous.filter(|p| guests.versions.lock().expect("versions lock").map.contains_key(p));
        guests.activate(runtime.version(), previous.as_deref()).await?;
        Ok((guests, runtime))
    }

    fn assemble(
        platform: Option<Platform>,
        store: StoreHandle,
        metrics: Arc<Metrics>,
        policy: RolloutPolicy,
        versions: Versions,
    ) -> Guests {
        metrics.guest_versions_installed.set(versions.map.len() as i64);
        Guests {
            platform,
            store,
            metrics,
            policy,
            placement: Arc::new(Placement::default()),
            versions: Mutex::new(versions),
            last: Mutex::new(None),
            rolling: AtomicBool::new(false),
        }
    }

    pub fn listing(&self) -> Listing {
        let placed = self.placement.by_version();
        let v = self.versions.lock().expect("versions lock");
        let versions = v
            .map
            .iter()
            .map(|(hash, i)| {
                let ids: Vec<String> = placed
                    .get(hash.as_str())
                    .map(|ids| ids.iter().map(|m| m.to_string()).collect())
                    .unwrap_or_default();
                VersionInfo {
                    hash: hash.clone(),
                    size: i.size,
                    installed_at: i.installed_at,
                    active: *hash == v.active,
                    previous: v.previous.as_deref() == Some(hash),
                    matches: ids.len(),
                    match_ids: ids,
                }
            })
            .collect();
        Listing {
            active: v.active.clone(),
            previous: v.previous.clone(),
            rollout_in_progress: self.rolling.load(Ordering::Acquire),
            versions,
            // First-event failures keep coming after a rollout returns.
            last_rollout: self.last.lock().expect("last rollout lock").clone().map(|mut r| {
                r.probation_failures = self.placement.probation_failures();
                r
            }),
        }
    }

    /// Compile, check, canary, keep and roll out a new version. Runs in its
    /// own task: the caller going away does not stop it halfway.
    pub async fn install(
        self: &Arc<Self>,
        router: &Arc<Router>,
        bytes: Vec<u8>,
    ) -> Result<RolloutReport, InstallError> {
        let (me, router) = (self.clone(), router.clone());
        let result = tokio::spawn(async move { me.install_inner(&router, bytes).await })
            .await
            .unwrap_or_else(|e| Err(InstallError::Internal(format!("rollout task: {e}"))));
        let label = match &result {
            Ok(r) => r.outcome.as_str(),
            Err(e) => e.kind(),
        };
        self.metrics.guest_installs.get_or_create(&Kind { kind: label }).inc();
        if let Err(e) = &result {
            tracing::warn!(error = %e, "guest install refused");
        }
        result
    }

    async fn install_inner(&self, router: &Router, bytes: Vec<u8>) -> Result<RolloutReport, InstallError> {
        let _rolling = self.start_rolling()?;
        let platform = self
            .platform
            .clone()
            .ok_or_else(|| InstallError::Internal("running the native model: no guests to swap".into()))?;
        let size = bytes.len();
        let (runtime, bytes, compile) = self.compile(platform, bytes).await?;
        let hash = runtime.version().to_owned();
        let from = router.version();
        tracing::info!(
            guest_version = hash,
            size,
            compile_ms = compile.as_secs_f64() * 1e3,
            "guest compiled"
        );
        let reinstall = hash == from.version();
        // Installing the active version again retries the matches that
        // stayed behind on another one; with none, there is nothing to do.
        let runtime = if reinstall { from.clone() } else { runtime };
        if reinstall && self.placement.running().values().all(|v| **v == *hash) {
            return Ok(self.finish(RolloutReport::unchanged(RolloutKind::Install, &hash)));
        }
        let canary = self.canary(router, &from, &runtime).await?;
        self.keep(&runtime, bytes).await?;
        let mut report = self
            .roll(
                router,
                RolloutKind::Install,
                &from,
                &runtime,
                Some(self.policy.max_failed),
            )
            .await;
        report.compile_ms = Some(compile.as_secs_f64() * 1e3);
        report.canary = Some(canary);
        let activated = if report.outcome != RolloutOutcome::Aborted && !reinstall {
            self.activate(&hash, Some(from.version())).await
        } else {
            Ok(())
        };
        self.prune().await;
        let report = self.finish(report);
        activated.map(|()| report)
    }

    /// Remove the oldest versions beyond `keep_versions` that are neither
    /// active nor previous and that no match runs.
    async fn prune(&self) {
        let running = self.placement.by_version();
        let doomed: Vec<String> = {
            let v = self.versions.lock().expect("versions lock");
            let mut spare: Vec<(&String, i64)> = v
                .map
                .iter()
                .filter(|(h, _)| {
                    **h != v.active && v.previous.as_ref() != Some(*h) && !running.contains_key(h.as_str())
                })
                .map(|(h, i)| (h, i.installed_at))
                .collect();
            let excess = v.map.len().saturating_sub(self.policy.keep_versions.max(2));
            spare.sort_by_key(|(_, at)| *at);
            spare.into_iter().take(excess).map(|(h, _)| h.clone()).collect()
        };
        for hash in doomed {
            match self.write(Op::RemoveGuest { hash: hash.clone() }).await {
                Ok(()) => {
                    let mut v = self.versions.lock().expect("versions lock");
                    v.map.remove(&hash);
                    self.metrics.guest_versions_installed.set(v.map.len() as i64);
                    drop(v);
                    tracing::info!(guest_version = hash, "old guest version removed");
                }
                Err(e) => tracing::warn!(guest_version = hash, error = %e, "removing an old guest version failed"),
            }
        }
    }

    /// Return to the previous version. Runs in its own task, like
    /// [`Guests::install`].
    pub async fn rollback(self: &Arc<Self>, router: &Arc<Router>) -> Result<RolloutReport, InstallError> {
        let (me, router) = (self.clone(), router.clone());
        let result = tokio::spawn(async move { me.rollback_inner(&router).await })
            .await
            .unwrap_or_else(|e| Err(InstallError::Internal(format!("rollback task: {e}"))));
        if let Err(e) = &result {
            self.metrics
                .rollouts
                .get_or_create(&Kind {
                    kind: "rollback_refused",
                })
                .inc();
            tracing::warn!(error = %e, "rollback refused");
        }
        result
    }

    async fn rollback_inner(&self, router: &Router) -> Result<RolloutReport, InstallError> {
        let _rolling = self.start_rolling()?;
        let previous = self
            .versions
            .lock()
            .expect("versions lock")
            .previous
            .clone()
            .ok_or(InstallError::NoPrevious)?;
        let target = self.version_of(&previous).await?;
        let from = router.version();
        let report = self.roll(router, RolloutKind::Rollback, &from, &target, None).await;
        let activated = self.activate(&previous, Some(from.version())).await;
        let report = self.finish(report);
        activated.map(|()| report)
    }

    /// A compiled runtime for an installed version (compiling it from the
    /// store on first use after a restart).
    pub async fn version_of(&self, hash: &str) -> Result<GuestVersion, InstallError> {
        if let Some(r) = self.loaded(hash) {
            return Ok(r);
        }
        let platform = self
            .platform
            .clone()
            .ok_or_else(|| InstallError::Internal("native model".into()))?;
        let rec = self
            .store
            .store
            .guest(hash)?
            .ok_or_else(|| InstallError::Internal(format!("version {hash} is not in the store")))?;
        let (runtime, _, _) = self.compile(platform, rec.component).await?;
        if let Some(i) = self.versions.lock().expect("versions lock").map.get_mut(hash) {
            i.runtime = Some(runtime.clone());
        }
        Ok(runtime)
    }

    /// Compile a component on a blocking thread (never on the workers'
    /// threads); the runtime, the bytes back, and how long it took.
    async fn compile(
        &self,
        platform: Platform,
        bytes: Vec<u8>,
    ) -> Result<(GuestVersion, Vec<u8>, std::time::Duration), InstallError> {
        let started = Instant::now();
        let (runtime, bytes) = tokio::task::spawn_blocking(move || platform.load(&bytes).map(|r| (r, bytes)))
            .await
            .map_err(|e| InstallError::Internal(format!("compile task: {e}")))??;
        let took = started.elapsed();
        self.metrics.guest_compile_seconds.observe(took.as_secs_f64());
        Ok((runtime, bytes, took))
    }

    /// Keep a compiled version: in the store (if new) and in memory.
    async fn keep(&self, runtime: &GuestVersion, component: Vec<u8>) -> Result<(), InstallError> {
        let hash = runtime.version();
        let known = self.versions.lock().expect("versions lock").map.contains_key(hash);
        let record = GuestRecord {
            installed_at: now_ms(),
            component,
        };
        if !known {
            self.write(Op::PutGuest {
                hash: hash.to_owned(),
                record: record.clone(),
            })
            .await?;
        }
        let mut v = self.versions.lock().expect("versions lock");
        let entry = v.map.entry(hash.to_owned()).or_insert(Installed {
            runtime: None,
            size: record.component.len(),
            installed_at: record.installed_at,
        });
        entry.runtime.get_or_insert_with(|| runtime.clone());
        self.metrics.guest_versions_installed.set(v.map.len() as i64);
        Ok(())
    }

    /// A registry write, made durable before it returns.
    async fn write(&self, op: Op) -> Result<(), crate::journal::JournalError> {
        self.store.write(op).await?;
        sync(&self.store, Some(Arc::from(GUESTS_SCOPE))).await
    }

    /// Mark a rollout as running, or say one already is.
    fn start_rolling(&self) -> Result<RollingGuard<'_>, InstallError> {
        self.rolling
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map_err(|_| InstallError::Busy)?;
        Ok(RollingGuard(&self.rolling))
    }

    /// For matches restored from the store: the versions those that had
    /// stayed behind keep (each compiled once; one that cannot be loaded is
    /// left out, so its matches run the active version).
    pub async fn pinned(&self, recovered: &[crate::store::Recovered]) -> HashMap<String, GuestVersion> {
        let mut tried: HashMap<String, Option<GuestVersion>> = HashMap::new();
        for hash in recovered.iter().filter_map(|r| r.meta.guest.as_deref()) {
            if tried.contains_key(hash) || !self.keeps_own_version(hash) {
                continue;
            }
            let runtime = match self.version_of(hash).await {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(guest_version = hash, error = %e, "cannot load a version matches stayed on; they run the active one");
                    None
                }
            };
            tried.insert(hash.to_owned(), runtime);
        }
        tried.into_iter().filter_map(|(h, r)| Some((h, r?))).collect()
    }

    /// An installed version's runtime, if it is compiled.
    fn loaded(&self, hash: &str) -> Option<GuestVersion> {
        self.versions
            .lock()
            .expect("versions lock")
            .map
            .get(hash)
            .and_then(|i| i.runtime.clone())
    }

    /// Whether a match last seen running `hash` stays on it across a
    /// restart: it does when it had stayed behind on a version other than
    /// the one that was active (a failed switch or first event), unless
    /// that version is gone.
    pub fn keeps_own_version(&self, hash: &str) -> bool {
        let v = self.versions.lock().expect("versions lock");
        v.stored_active.as_deref().is_some_and(|a| a != hash) && hash != v.active && v.map.contains_key(hash)
    }

    /// The in-memory record first (it must match what the router runs),
    /// then the store.
    async fn activate(&self, active: &str, previous: Option<&str>) -> Result<(), InstallError> {
        {
            let mut v = self.versions.lock().expect("versions lock");
            v.active = active.to_owned();
            v.previous = previous.map(str::to_owned);
        }
        let op = Op::ActiveGuest {
            active: active.to_owned(),
            previous: previous.map(str::to_owned),
        };
        if let Err(e) = self.write(op).await {
            tracing::error!(error = %e, active, "recording the active guest failed; a restart would run the one before");
            return Err(e.into());
        }
        Ok(())
    }

    fn finish(&self, report: RolloutReport) -> RolloutReport {
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
    async fn canary(
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
        let result = tokio::task::spawn_blocking(move || canary(&store, &from, &to, &sample))
            .await
            .map_err(|e| InstallError::Internal(format!("canary task: {e}")))?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        self.metrics.guest_canary_seconds.observe(ms / 1e3);
        let (matches, events) = result.map_err(InstallError::Canary)?;
        tracing::info!(matches, events, ms, "canary passed");
        Ok(CanaryReport { matches, events, ms })
    }

    /// Switch every live match from `from` to `to`; with `max_failed`, on
    /// probation, aborting past that many failures.
    async fn roll(
        &self,
        router: &Router,
        kind: RolloutKind,
        from: &GuestVersion,
        to: &GuestVersion,
        max_failed: Option<usize>,
    ) -> RolloutReport {
        let started = Instant::now();
        self.placement.reset_probation();
        router.set_version(to.clone());
        // What each match ran before, to go back to on abort.
        let before = self.placement.running();
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
        let mut times = Vec::with_capacity(ids.len());
        let probation = max_failed.is_some();
        let over = |report: &RolloutReport| {
            let (_, probation_failed) = self.placement.probation_counts();
            max_failed.is_some_and(|max| report.failed.len() + probation_failed > max)
        };
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
        while let Some((id, outcome)) = switches.next().await {
            let failure = |reason: String| MatchFailure {
                match_id: id.to_string(),
                reason,
            };
            match outcome {
                Some(SwitchOutcome::Switched { seconds }) => {
                    report.switched += 1;
                    times.push(seconds * 1e6);
                }
                Some(SwitchOutcome::Unchanged) | None => report.unchanged += 1,
                Some(SwitchOutcome::Healed { report: r, healthy }) => {
                    report.switched += 1;
                    if healthy {
                        report.healed.push(failure(r));
                    } else {
                        report.failed.push(failure(r));
                    }
                }
                Some(SwitchOutcome::Failed(reason)) => report.failed.push(failure(reason)),
                Some(SwitchOutcome::Skipped(reason)) => report.skipped.push(failure(reason)),
            }
            if over(&report) {
                aborted = true;
                break;
            }
        }
        drop(switches);
        report.switch_ms = started.elapsed().as_secs_f64() * 1e3;
        // First-event failures still count until every switched match has
        // had its first event, or the window closes.
        if probation && !aborted {
            let deadline = tokio::time::Instant::now() + self.policy.probation_window;
            loop {
                let changed = self.placement.changed.notified();
                if over(&report) {
                    aborted = true;
                    break;
                }
                if self.placement.probation_counts().0 == 0 || tokio::time::timeout_at(deadline, changed).await.is_err()
                {
                    break;
                }
            }
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
        times.sort_by(f64::total_cmp);
        let pct = |q: f64| {
            times
                .get(((times.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
        };
        report.switch_us_p50 = pct(0.5);
        report.switch_us_p99 = pct(0.99);
        report.switch_us_max = times.last().copied();
        report.total_ms = started.elapsed().as_secs_f64() * 1e3;
        report
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
    fn unchanged(kind: RolloutKind, to: &str) -> RolloutReport {
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
            healed: Vec::new(),
            failed: Vec::new(),
            skipped: Vec::new(),
            probation_failures: Vec::new(),
            probation_pending: 0,
            revert_failed: Vec::new(),
            switch_ms: 0.0,
            switch_us_p50: None,
            switch_us_p99: None,
            switch_us_max: None,
            total_ms: 0.0,
        }
    }
}

/// The canary proper. For each sampled match, in scratch instances:
/// the old version rebuilds the match's state from the store (snapshot +
/// journal after it) and saves it; the new version takes that state over
/// through `migrate` (exactly what a live switch does) and renders a
/// snapshot; and a fresh instance of the new version applies the match's
/// most recent journal entries. Any trap, rejection or invalid JSON refuses
/// the rollout. Returns (matches, events) replayed.
fn canary(
    store: &Store,
    from: &GuestVersion,
    to: &GuestVersion,
    sample: &[Arc<str>],
) -> Result<(usize, usize), String> {
    let mut events = 0;
    let mut matches = 0;

    for id in sample {
        let Some(rec) = store.recover_one(id).map_err(|e| format!("reading match {id}: {e}"))? else {
            continue;
        };
        // The live state, as the old version holds it. A failure here is
        // the old version's (the live worker has its own supervision): the
        // canary then skips the migration step for this match.
        let saved = rec.snapshot.as_ref().map(|s| Saved {
            state: &s.state,
            guest: &s.guest,
            state_version: s.state_version,
        });
        let tail = rec.journal.iter().map(|(_, e)| &e.event[..]);
        let rebuilt = from
            .rebuild(id.clone(), saved, tail)
            .and_then(|mut old| old.save_state());
        if let Ok(state) = rebuilt {
            let mut migrated = to
                .instantiate_with(id.clone(), &state, from.version(), from.state_version())
                .map_err(|f| {
                    format!(
                        "match {id}: taking over its state at seq {}: {f}",
                        rec.journal
                            .last()
                            .map_or(rec.snapshot.as_ref().map_or(0, |s| s.seq), |(seq, _)| *seq)
                    )
                })?;
            migrated
                .snapshot_json()
                .map_err(|f| format!("match {id}: snapshot after migrating: {f}"))?;
        }
        let recent = store
            .recent_events(id, CANARY_EVENTS_PER_MATCH)
            .map_err(|e| format!("reading match {id}: {e}"))?;
        let mut fresh = to
            .instantiate(id.clone())
            .map_err(|f| format!("match {id}: instantiating: {f}"))?;
        for (seq, event) in &recent {
            fresh
                .apply_json(event)
                .map_err(|f| format!("match {id}: event seq {seq}: {f}"))?;
            events += 1;
        }
        matches += 1;
    }
    Ok((matches, events))
}
