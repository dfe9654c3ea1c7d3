//! The Wasm runtime: one engine, one pre-linked component per guest version,
//! one store per match.
//!
//! [`Platform`] is built once per host: it configures the engine (pooling
//! allocator sized for the configured number of matches plus room for
//! migrations and canaries, epoch interruption, memory cap) and the linker.
//! [`Platform::load`] compiles a guest component (blocking: call it off the
//! async workers), checks that it implements the `match-worker` world with
//! our event format, saying precisely what is missing when it does not
//! ([`LoadError`]), and pre-links it into a [`GuestVersion`]: one guest version,
//! identified by the sha-256 of its bytes. Several versions share the
//! engine and the pool during a hot swap. [`GuestInstance`] is one match's
//! store + instance; every call into it runs under an epoch deadline and a
//! memory limit, and a trap comes back as a [`Failure`], never as a host
//! panic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy, Store};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "match-worker",
    });
}

mod instance;
mod reservation;
mod spares;

use bindings::{MatchWorker, MatchWorkerPre};
pub use instance::{Failure, GuestInstance, HostState, Saved};
use reservation::Reservation;
pub use spares::SPARES;
use spares::{Spare, Spares};

/// How often the epoch advances. Deadlines are whole ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The interface a guest must export, as named in `wit/`.
pub const MATCH_EXPORT: &str = "touchline:worker/match@0.3.0";
/// The only interface a guest may import.
pub const HOST_IMPORT: &str = "touchline:worker/host@0.3.0";
/// Functions of [`MATCH_EXPORT`].
const MATCH_FUNCTIONS: &[&str] = &[
    "event-format",
    "init",
    "state-version",
    "migrate",
    "apply",
    "decide-bet",
    "settle-bets",
    "snapshot",
    "save-state",
    "restore-state",
];

/// Core instances one component may hold: ours has 3 (the module and the
/// adapter shims); other toolchains add shims. The pool's per-component
/// check and each store's instance limit both use it.
const MAX_CORE_INSTANCES: u32 = 8;

/// Slots whose memory the pool gives back together ([`Platform::new`]).
const DECOMMIT_BATCH: usize = 16;

/// Pool slots beyond one per match: a match being switched holds two
/// instances for a moment, a canary holds scratch ones, loading probes one.
pub const POOL_SLACK: u32 = 64;
/// The name a spare is warmed with is this many zero bytes ([`spares`]):
/// heap room for a ~40-market match's state restored into it (a cold
/// spare took 12-13 page faults restoring one, a warmed one 5: the test;
/// measured before the guest's heap grew 4 KiB at a time from
/// `__heap_base`, `guest/src/heap.rs`, so that the warm-up now claims the
/// heap past these 32 KiB: near the ~35 KB an instance of the simulator's
/// matches peaks at, restoring and applying one event, as an instrumented
/// guest counted).
const WARM_HEAP_BYTES: usize = 32 * 1024;
/// Set (to anything) in the environment, the engine writes
/// `/tmp/perf-<pid>.map` naming the guest's compiled functions, so `perf`
/// shows them instead of `[JIT]` addresses (`bench/README.md`, "Profiling").
pub const PERFMAP_ENV: &str = "TOUCHLINE_GUEST_PERFMAP";

/// Limits applied to every guest.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Concurrent live matches the pooling allocator reserves slots for.
    pub max_instances: u32,
    /// Linear memory cap per instance.
    pub memory_bytes: usize,
    /// Wall-clock budget of one guest call, rounded up to [`EPOCH_TICK`].
    pub call_deadline: Duration,
}

/// Why a guest component was refused. Nothing is installed when loading fails.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not WebAssembly: the bytes do not start with the \\0asm header")]
    NotWasm,
    #[error(
        "a core WebAssembly module, not a component: wrap it with wit-component \
         (as `make guest` does) or build it with cargo-component"
    )]
    CoreModule,
    #[error("not a valid component: {0}")]
    Invalid(String),
    #[error("the component does not export `{MATCH_EXPORT}` (it exports: {exports})")]
    MissingExport { exports: String },
    #[error("the component's `{MATCH_EXPORT}` lacks function `{0}`")]
    MissingFunction(&'static str),
    #[error("the component imports `{0}`, which the host does not provide (only `{HOST_IMPORT}`)")]
    UnknownImport(String),
    #[error("the component does not fit the match-worker world: {0}")]
    Mismatch(String),
    #[error("the guest speaks event format {guest}, the host speaks {host}")]
    EventFormat { guest: u32, host: u32 },
    #[error("the guest failed while being probed: {0}")]
    Probe(Failure),
}

impl LoadError {
    /// The component was built for another version of the host's contract
    /// (world or event format), not broken.
    pub fn is_contract(&self) -> bool {
        matches!(
            self,
            LoadError::MissingExport { .. }
                | LoadError::MissingFunction(_)
                | LoadError::UnknownImport(_)
                | LoadError::Mismatch(_)
                | LoadError::EventFormat { .. }
        )
    }

    /// Metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            LoadError::NotWasm => "not_wasm",
            LoadError::CoreModule => "core_module",
            LoadError::Invalid(_) => "invalid",
            LoadError::MissingExport { .. } => "missing_export",
            LoadError::MissingFunction(_) => "missing_function",
            LoadError::UnknownImport(_) => "unknown_import",
            LoadError::Mismatch(_) => "mismatch",
            LoadError::EventFormat { .. } => "event_format",
            LoadError::Probe(_) => "probe",
        }
    }
}

/// The engine and linker every guest version shares.
#[derive(Clone)]
pub struct Platform {
    inner: Arc<PlatformInner>,
}

struct PlatformInner {
    engine: Engine,
    /// Address space per memory: 4 GiB when the guest checks no bounds
    /// (the claim on the budget is the epoch ticker's).
    reservation_bytes: u64,
    linker: Linker<HostState>,
    limits: Limits,
    deadline_ticks: u64,
    stop_ticker: Arc<AtomicBool>,
    /// Instances made ahead of need ([`spares`]).
    spares: Spares,
    /// Numbers each [`Platform::load`], to tell spares' versions apart.
    loads: AtomicU64,
}

impl Drop for PlatformInner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// One guest version ready to instantiate, plus its identity.
#[derive(Clone)]
pub struct GuestVersion {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GuestVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestVersion")
            .field("version", &self.inner.version)
            .field("state_version", &self.inner.state_version)
            .finish()
    }
}

struct Inner {
    /// `None` runs the model natively (benchmark baseline).
    wasm: Option<Wasm>,
    /// Content hash of the guest component (hex sha-256), or "native".
    version: Arc<str>,
    /// The guest's `state-version`.
    state_version: u32,
}

struct Wasm {
    platform: Platform,
    pre: MatchWorkerPre<HostState>,
    /// Which load of the platform this is (spares are per load).
    load: u64,
}

impl Drop for Wasm {
    fn drop(&mut self) {
        drop(self.platform.inner.spares.discard(self.load));
    }
}

impl Wasm {
    /// A store and instance of this version, for no match yet. `warm`: also
    /// initialised once for no match ([`spares`]: its first call's page
    /// faults taken now, off a restart's path).
    fn instantiate_spare(&self, warm: bool) -> Result<Spare, Failure> {
        let p = &self.platform.inner;
        let mut store = Store::new(&p.engine, HostState::new(Arc::from(""), p.limits.memory_bytes));
        store.limiter(|s| s);
        store.set_epoch_deadline(p.deadline_ticks);
        let made = self.pre.instantiate(&mut store).and_then(|bindings| {
            if warm {
                let name = "\0".repeat(WARM_HEAP_BYTES);
                bindings.touchline_worker_match_().call_init(&mut store, &name)?;
            }
            Ok(bindings)
        });
        match made {
            Ok(bindings) => Ok(Spare { store, bindings }),
            Err(e) => Err(self.platform.classify(e, store.data_mut())),
        }
    }
}

/// The engine's configuration for a pool whose memories reserve `reservation`.
fn engine_config(pool: &PoolingAllocationConfig, reservation: &Reservation) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool.clone()))
        // The whole 4 GiB when the process's budget allows (no bounds
        // checks), else only the cap, so tens of thousands of slots fit in
        // the address space ([`reservation`]).
        .memory_reservation(reservation.per_memory())
        .memory_guard_size(reservation::GUARD)
        .memory_reservation_for_growth(0);
    if std::env::var_os(PERFMAP_ENV).is_some() {
        config.profiler(ProfilingStrategy::PerfMap);
    }
    config
}

impl Platform {
    /// Configure the engine and the host imports; starts the epoch ticker.
    pub fn new(limits: Limits) -> anyhow::Result<Platform> {
        let mut pool = PoolingAllocationConfig::default();
        let n = (limits.max_instances.max(1))
            .saturating_add(POOL_SLACK)
            .saturating_add(SPARES as u32);
        // Per guest component: 3 core instances (the module and the
        // adapter shims), 2 tables, 1 memory.
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(3))
            .total_memories(n)
            .total_tables(n.saturating_mul(2))
            .max_core_instances_per_component(MAX_CORE_INSTANCES)
            .max_memories_per_component(1)
            .max_tables_per_component(2)
            .max_memory_size(limits.memory_bytes)
            // Give freed memory back entirely: hibernated matches must not
            // keep pages resident in their old slots.
            .linear_memory_keep_resident(0)
            // ...in batches: a match that naps gives its slot back, and the
            // decommit of one slot at a time was a TLB shootdown to the
            // other core each (`smp_call_function_many_cond` and the IPI's
            // `native_write_msr`, 11% of a nap-heavy server's samples). A
            // feeder of the density scenario's rounds (every update after a
            // nap), alternated, 2 runs each: server CPU 7.13 / 7.15 s
            // against 8.36 / 8.41 s with batches of 1, the RSS the same
            // (87–90 MB at 1,000 live matches). At most (cores, up to 16)
            // × 15 slots wait for their decommit, each with the pages its
            // instance touched (13 of its own for the simulator's matches).
            .decommit_batch_size(DECOMMIT_BATCH);
        let cap = limits.memory_bytes as u64;
        let reservation = Reservation::claim(n, cap);
        let (engine, reservation) = match Engine::new(&engine_config(&pool, &reservation)) {
            Ok(engine) => (engine, reservation),
            Err(e) if reservation.elides_bounds_checks() && cap < reservation::FULL => {
                tracing::warn!(slots = n, error = %chain(&e), "full guest memory reservations failed: reserving the cap, with bounds checks");
                let reservation = reservation.fall_back(cap);
                let engine =
                    wt(Engine::new(&engine_config(&pool, &reservation))).context("configuring the Wasm engine")?;
                (engine, reservation)
            }
            Err(e) => return wt(Err(e)).context("configuring the Wasm engine"),
        };
        if reservation.elides_bounds_checks() {
            tracing::info!(
                slots = n,
                reservation_bytes = reservation.per_memory(),
                "guest memory pool reserved in full: no bounds checks"
            );
        } else {
            tracing::warn!(
                slots = n,
                reservation_bytes = reservation.per_memory(),
                "guest memory pool past the address budget: each memory reserves its cap and the guest checks bounds (~8% more of its CPU)"
            );
        }
        let mut linker = Linker::<HostState>::new(&engine);
        wt(MatchWorker::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        ))
        .context("linking host imports")?;
        let deadline_ticks = limits.call_deadline.as_millis().div_ceil(EPOCH_TICK.as_millis()).max(1) as u64;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let reservation_bytes = reservation.per_memory();
        spawn_epoch_ticker(engine.clone(), stop_ticker.clone(), reservation)?;
        Ok(Platform {
            inner: Arc::new(PlatformInner {
                engine,
                reservation_bytes,
                linker,
                limits,
                deadline_ticks,
                stop_ticker,
                spares: Spares::default(),
                loads: AtomicU64::new(0),
            }),
        })
    }

    /// Address space each guest memory reserves: 4 GiB when the compiled
    /// guests check no bounds, else the memory cap (`sandbox/reservation.rs`).
    pub fn reservation_bytes(&self) -> u64 {
        self.inner.reservation_bytes
    }

    /// Compile, check and pre-link a guest component. CPU-bound for tens to
    /// hundreds of milliseconds: run it on a blocking thread.
    pub fn load(&self, bytes: &[u8]) -> Result<GuestVersion, LoadError> {
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', _, _, 0, 0]) => return Err(LoadError::CoreModule),
            Some([0, b'a', b's', b'm', ..]) => {}
            _ => return Err(LoadError::NotWasm),
        }
        let p = &self.inner;
        let component = Component::new(&p.engine, bytes).map_err(|e| LoadError::Invalid(chain(&e)))?;
        check_world(&p.engine, &component)?;
        let pre = p
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Mismatch(chain(&e)))?;
        let pre = MatchWorkerPre::new(pre).map_err(|e| LoadError::Mismatch(chain(&e)))?;
        let mut runtime = GuestVersion {
            inner: Arc::new(Inner {
                wasm: Some(Wasm {
                    platform: self.clone(),
                    pre,
                    load: p.loads.fetch_add(1, Ordering::Relaxed),
                }),
                version: Arc::from(content_hash(bytes)),
                state_version: 0,
            }),
        };
        // Refuse a guest that speaks another event encoding now, not on the
        // first event; learn its state layout version.
        let mut probe = runtime.instantiate(Arc::from("probe")).map_err(LoadError::Probe)?;
        let format = probe.event_format().map_err(LoadError::Probe)?;
        if format != touchline_guest::EVENT_FORMAT {
            return Err(LoadError::EventFormat {
                guest: format,
                host: touchline_guest::EVENT_FORMAT,
            });
        }
        let state_version = probe.state_version().map_err(LoadError::Probe)?;
        drop(probe);
        Arc::get_mut(&mut runtime.inner)
            .expect("the probe instance was dropped: no other reference")
            .state_version = state_version;
        Ok(runtime)
    }
}

/// Name what the component lacks (or has too much of) before wasmtime's
/// own, less specific, type check.
fn check_world(engine: &Engine, component: &Component) -> Result<(), LoadError> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        if name != HOST_IMPORT {
            return Err(LoadError::UnknownImport(name.to_owned()));
        }
    }
    let Some(export) = ty.get_export(engine, MATCH_EXPORT) else {
        let names: Vec<&str> = ty.exports(engine).map(|(n, _)| n).collect();
        let exports = if names.is_empty() {
            "nothing".to_owned()
        } else {
            names.join(", ")
        };
        return Err(LoadError::MissingExport { exports });
    };
    let ComponentItem::ComponentInstance(instance) = export.ty else {
        return Err(LoadError::Mismatch(format!("`{MATCH_EXPORT}` is not an instance")));
    };
    for f in MATCH_FUNCTIONS {
        match instance.get_export(engine, f).map(|e| e.ty) {
            Some(ComponentItem::ComponentFunc(_)) => {}
            _ => return Err(LoadError::MissingFunction(f)),
        }
    }
    Ok(())
}

impl GuestVersion {
    /// The same match logic compiled into the host, behind the same
    /// interface: no Wasm, no limits. Only for measuring what Wasm costs.
    pub fn native() -> GuestVersion {
        GuestVersion {
            inner: Arc::new(Inner {
                wasm: None,
                version: Arc::from("native"),
                state_version: touchline_guest::glue::STATE_VERSION,
            }),
        }
    }

    /// Content hash identifying this guest version.
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    /// [`GuestVersion::version`], shareable.
    pub fn version_arc(&self) -> Arc<str> {
        self.inner.version.clone()
    }

    /// Layout version of the states this guest saves.
    pub fn state_version(&self) -> u32 {
        self.inner.state_version
    }

    /// A fresh store and instance for `match_id`, with an empty model.
    pub fn instantiate(&self, match_id: Arc<str>) -> Result<GuestInstance, Failure> {
        match &self.inner.wasm {
            None => Ok(GuestInstance::native(match_id)),
            Some(wasm) => {
                let Spare { mut store, bindings } = match wasm.platform.inner.spares.take(wasm.load) {
                    Some(spare) => spare,
                    None => wasm.instantiate_spare(false)?,
                };
                store.data_mut().name(match_id.clone());
                GuestInstance::wasm(match_id, store, bindings, wasm.platform.clone())
            }
        }
    }

    /// Make one spare instance of this version if the platform wants one
    /// ([`spares`]): for idle time, as it costs an instantiation. Whether
    /// one was made.
    pub fn replenish_spare(&self) -> bool {
        let Some(wasm) = &self.inner.wasm else { return false };
        let spares = &wasm.platform.inner.spares;
        if !spares.wanted(wasm.load) {
            return false;
        }
        match wasm.instantiate_spare(true) {
            Ok(spare) => {
                drop(spares.put(wasm.load, spare));
                true
            }
            Err(f) => {
                tracing::debug!(guest_version = %self.inner.version, error = %f, "no spare instance");
                false
            }
        }
    }

    /// Spare instances the platform keeps now, of any version.
    #[cfg(test)]
    pub(crate) fn spares(&self) -> usize {
        self.inner.wasm.as_ref().map_or(0, |w| w.platform.inner.spares.len())
    }

    /// A fresh instance holding `saved` (if any) with `events` applied
    /// after it: how a match is rebuilt after a failure or a wake-up, and
    /// how the canary rebuilds one.
    pub fn rebuild<'e>(
        &self,
        match_id: Arc<str>,
        saved: Option<Saved<'_>>,
        events: impl IntoIterator<Item = &'e [u8]>,
    ) -> Result<GuestInstance, Failure> {
        let mut instance = match saved {
            Some(s) => self.instantiate_with(match_id, s.state, s.guest, s.state_version)?,
            None => self.instantiate(match_id)?,
        };
        for event in events {
            instance.apply(event)?;
        }
        Ok(instance)
    }

    /// A fresh instance holding `state`, saved by a guest whose layout is
    /// `from_version` (`restore-state` when this version saved it,
    /// `migrate` otherwise).
    pub fn instantiate_with(
        &self,
        match_id: Arc<str>,
        state: &[u8],
        saved_by: &str,
        from_version: u32,
    ) -> Result<GuestInstance, Failure> {
        let mut instance = self.instantiate(match_id)?;
        if saved_by == self.version() {
            instance.restore_state(state)?;
        } else {
            instance.migrate(state, from_version)?;
        }
        Ok(instance)
    }
}

fn chain(e: &wasmtime::Error) -> String {
    e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ")
}

/// wasmtime's error type is its own; carry it into `anyhow` with its chain.
fn wt<T>(r: wasmtime::Result<T>) -> anyhow::Result<T> {
    r.map_err(|e| anyhow::Error::from_boxed(e.into_boxed_dyn_error()))
}

/// The ticker holds the last clone of the engine, so it also holds the
/// pool's claim on the address budget and gives it back after the engine.
fn spawn_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>, reservation: Reservation) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            crate::realtime::follow(crate::realtime::Role::Ticker);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
            drop(engine);
            drop(reservation);
        })
        .context("spawning the epoch ticker")?;
    Ok(())
}

/// Hex sha-256 of the component bytes: identifies a guest version.
pub fn content_hash(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
