//! Guest versions: install, canary, rollout, rollback, and who runs what.
//!
//! [`Guests`] owns the installed versions (compiled [`GuestVersion`]s over one
//! shared [`Platform`], their components kept in the store) and which one
//! is active. An install compiles the component on a blocking thread, checks
//! its world, runs the canary, keeps it in the store, and rolls it out:
//! every match gets a [`crate::worker::Command::Switch`] in its mailbox
//! (`concurrency` in flight, one by default; a [`ROLLOUT_PAUSE`] after
//! every `slice` of switching), so each switches between two of its own
//! events while the others keep serving; but a match asleep on the version
//! replaced is passed by (`deferred`) and takes the new one as it wakes
//! (`Worker::take_current`, reading the router's version). Matches that fail to migrate stay
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

mod canary;
pub mod cluster;
mod placement;
mod rollout;

pub use canary::CANARY_EVENTS_PER_MATCH;
pub use placement::{MatchFailure, Placement};
pub use rollout::{CanaryReport, Listing, RolloutKind, RolloutOutcome, RolloutReport, VersionInfo};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::journal::{GUESTS_SCOPE, GuestRecord, Journal, Op, sync};
use crate::metrics::{Kind, Metrics};
use crate::router::Router;
use crate::sandbox::{GuestVersion, LoadError, Platform};
use crate::store::StoreHandle;

/// How long a rollout pauses once its switches ran for `slice` (the
/// runtime's timer rounds it up to its next millisecond).
pub const ROLLOUT_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

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
    /// Once its switches have taken this long since the last pause (or
    /// its start), by their workers' own time (`rollout::work`), the
    /// rollout pauses [`ROLLOUT_PAUSE`], so the work they queued behind
    /// them (events, frames, the store's commits) runs before the next:
    /// paced by time, not by count, as a live match's switch takes its
    /// worker ~50–250 times a sleeping one's. Zero: no pauses.
    pub slice: std::time::Duration,
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
        let from_store = explicit.is_none() && stored_active.is_some();
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
        let (runtime, bytes, previous) = match guests.compile(platform.clone(), bytes).await {
            Ok((runtime, bytes, _)) => (runtime, bytes, previous),
            // A stored guest built for an older contract (this host was
            // upgraded): run the built-in one, which migrates the states
            // the old one saved.
            Err(InstallError::Load(e)) if from_store && e.is_contract() => {
                tracing::warn!(error = %e, "the stored active guest does not fit this host; running the built-in one");
                let (runtime, bytes, _) = guests
                    .compile(platform, default.to_vec())
                    .await
                    .map_err(|e| anyhow::anyhow!("loading the built-in guest: {e}"))?;
                (runtime, bytes, None)
            }
            Err(e) => anyhow::bail!("loading the guest: {e}"),
        };
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

    /// An installed version's component, from this node's store.
    pub fn component(&self, hash: &str) -> Result<Option<Vec<u8>>, crate::store::StoreError> {
        Ok(self.store.store.guest(hash)?.map(|r| r.component))
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
        let (size, installed_at) = (component.len(), now_ms());
        if !known {
            let record = GuestRecord {
                installed_at,
                component,
            };
            self.write(Op::PutGuest {
                hash: hash.to_owned(),
                record,
            })
            .await?;
        }
        let mut v = self.versions.lock().expect("versions lock");
        let entry = v.map.entry(hash.to_owned()).or_insert(Installed {
            runtime: None,
            size,
            installed_at,
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
}
