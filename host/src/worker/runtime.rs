//! The Wasm runtime: one engine, one pre-linked guest, one store per match.
//!
//! [`Runtime`] is built once: it configures the engine (pooling allocator
//! sized for the configured number of matches, epoch interruption, memory
//! cap), compiles the guest component, checks it implements the
//! `match-worker` world with our event format, and pre-links it
//! (`InstancePre`). [`GuestInstance`] is one match's store + instance; every
//! call into it runs under an epoch deadline and a memory limit, and a trap
//! comes back as a [`Failure`], never as a host panic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder, Trap,
};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "match-worker",
    });
}

use bindings::exports::touchline::worker::match_::Error as GuestError;
use bindings::touchline::worker::host::{Host, Level};
use bindings::{MatchWorker, MatchWorkerPre};

/// How often the epoch advances. Deadlines are whole ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Limits applied to every guest.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Concurrent live instances the pooling allocator reserves slots for.
    pub max_instances: u32,
    /// Linear memory cap per instance.
    pub memory_bytes: usize,
    /// Wall-clock budget of one guest call, rounded up to [`EPOCH_TICK`].
    pub call_deadline: Duration,
}

/// A guest component ready to instantiate, plus its identity.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` runs the model natively (benchmark baseline).
    wasm: Option<Wasm>,
    limits: Limits,
    /// Content hash of the guest component (hex sha-256), or "native".
    version: String,
    stop_ticker: Arc<AtomicBool>,
}

struct Wasm {
    engine: Engine,
    pre: MatchWorkerPre<HostState>,
    deadline_ticks: u64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

/// Per-store host state: what a guest's imports can reach.
pub struct HostState {
    limits: StoreLimits,
    match_id: Arc<str>,
}

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let match_id = &*self.match_id;
        match level {
            Level::Error => tracing::error!(match_id, guest = %message, "guest log"),
            Level::Warn => tracing::warn!(match_id, guest = %message, "guest log"),
            Level::Info => tracing::info!(match_id, guest = %message, "guest log"),
            Level::Debug => tracing::debug!(match_id, guest = %message, "guest log"),
        }
    }
}

/// Why a guest call failed. Each variant is one metrics label.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Failure {
    /// Panic, `unreachable`, out-of-bounds access or another Wasm trap.
    #[error("guest trapped: {0}")]
    Trap(String),
    /// Ran past its epoch deadline (an infinite loop, say).
    #[error("guest exceeded its {0:?} deadline")]
    Deadline(Duration),
    /// Tried to grow memory past the cap.
    #[error("guest exceeded its memory limit of {0} bytes")]
    Memory(usize),
    /// The guest reported an error without trapping.
    #[error("guest rejected the input: {0}")]
    Rejected(String),
}

impl Failure {
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Trap(_) => "trap",
            Failure::Deadline(_) => "deadline",
            Failure::Memory(_) => "memory",
            Failure::Rejected(_) => "rejected",
        }
    }

    /// Whether the instance is unusable afterwards.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Failure::Rejected(_))
    }
}

impl Runtime {
    /// Compile `component_bytes` and prepare it for instantiation.
    pub fn new(component_bytes: &[u8], limits: Limits) -> anyhow::Result<Runtime> {
        let mut pool = PoolingAllocationConfig::default();
        let n = limits.max_instances.max(1);
        // Per guest component: 3 core instances (the module and the
        // adapter shims), 2 tables, 1 memory.
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(3))
            .total_memories(n)
            .total_tables(n.saturating_mul(2))
            .max_core_instances_per_component(3)
            .max_memories_per_component(1)
            .max_tables_per_component(2)
            .max_memory_size(limits.memory_bytes)
            // Give freed memory back entirely: hibernated matches must not
            // keep pages resident in their old slots.
            .linear_memory_keep_resident(0);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            // Reserve only the cap (not 4 GiB) per memory, so tens of
            // thousands of slots fit in the address space. Bounds checks
            // become explicit, which costs little for this workload.
            .memory_reservation(limits.memory_bytes as u64)
            .memory_guard_size(64 * 1024)
            .memory_reservation_for_growth(0);
        let engine = wt(Engine::new(&config)).context("configuring the Wasm engine")?;
        let component = wt(Component::new(&engine, component_bytes)).context("compiling the guest component")?;
        let mut linker = Linker::<HostState>::new(&engine);
        wt(MatchWorker::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        ))
        .context("linking host imports")?;
        let pre = wt(linker.instantiate_pre(&component)).context("guest does not fit the match-worker world")?;
        let pre = wt(MatchWorkerPre::new(pre)).context("guest does not export the match-worker interface")?;
        let deadline_ticks = limits.call_deadline.as_millis().div_ceil(EPOCH_TICK.as_millis()).max(1) as u64;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), stop_ticker.clone())?;
        let runtime = Runtime {
            inner: Arc::new(Inner {
                wasm: Some(Wasm {
                    engine,
                    pre,
                    deadline_ticks,
                }),
                limits,
                version: content_hash(component_bytes),
                stop_ticker,
            }),
        };
        // Refuse a guest that speaks another event encoding now, not on the
        // first event.
        let mut probe = runtime
            .instantiate(Arc::from("probe"))
            .context("instantiating the guest")?;
        let format = probe.event_format().context("asking the guest for its event format")?;
        anyhow::ensure!(
            format == touchline_guest::EVENT_FORMAT,
            "guest speaks event format {format}, host speaks {}",
            touchline_guest::EVENT_FORMAT
        );
        Ok(runtime)
    }

    /// The same match logic compiled into the host, behind the same
    /// interface: no Wasm, no limits. Only for measuring what Wasm costs.
    pub fn native(limits: Limits) -> Runtime {
        Runtime {
            inner: Arc::new(Inner {
                wasm: None,
                limits,
                version: "native".to_owned(),
                stop_ticker: Arc::new(AtomicBool::new(true)),
            }),
        }
    }

    /// Content hash identifying this guest version.
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    /// A fresh store and instance for `match_id`, with an empty model.
    pub fn instantiate(&self, match_id: Arc<str>) -> Result<GuestInstance, Failure> {
        let Some(wasm) = &self.inner.wasm else {
            return Ok(GuestInstance {
                kind: Kind::Native(touchline_guest::glue::Worker::new(&*match_id)),
            });
        };
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.inner.limits.memory_bytes)
            .trap_on_grow_failure(true)
            .instances(4)
            .build();
        let mut store = Store::new(
            &wasm.engine,
            HostState {
                limits,
                match_id: match_id.clone(),
            },
        );
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(wasm.deadline_ticks);
        let bindings = wasm.pre.instantiate(&mut store).map_err(|e| self.classify(e))?;
        call(&mut store, &bindings, self, |b, s| {
            b.touchline_worker_match_().call_init(s, &match_id)
        })?;
        Ok(GuestInstance {
            kind: Kind::Wasm {
                store,
                bindings,
                runtime: self.clone(),
            },
        })
    }

    fn classify(&self, e: wasmtime::Error) -> Failure {
        if let Some(trap) = e.downcast_ref::<Trap>() {
            return match trap {
                Trap::Interrupt => Failure::Deadline(self.inner.limits.call_deadline),
                _ => Failure::Trap(trap.to_string()),
            };
        }
        let text = e.chain().map(|c| c.to_string()).collect::<Vec<_>>().join(": ");
        if text.contains("memory") && (text.contains("grow") || text.contains("limit")) {
            return Failure::Memory(self.inner.limits.memory_bytes);
        }
        Failure::Trap(text)
    }
}

/// One match's guest: its own store and instance (or the native model).
pub struct GuestInstance {
    kind: Kind,
}

enum Kind {
    Wasm {
        store: Store<HostState>,
        bindings: MatchWorker,
        runtime: Runtime,
    },
    Native(touchline_guest::glue::Worker),
}

impl GuestInstance {
    fn event_format(&mut self) -> Result<u32, Failure> {
        match &mut self.kind {
            Kind::Native(_) => Ok(touchline_guest::EVENT_FORMAT),
            Kind::Wasm {
                store,
                bindings,
                runtime,
            } => call(store, bindings, runtime, |b, s| {
                b.touchline_worker_match_().call_event_format(s)
            }),
        }
    }

    /// Apply one encoded event; returns the delta JSON.
    pub fn apply(&mut self, event: &[u8]) -> Result<String, Failure> {
        match &mut self.kind {
            Kind::Native(w) => w.apply(event).map_err(native_rejected),
            Kind::Wasm {
                store,
                bindings,
                runtime,
            } => call(store, bindings, runtime, |b, s| {
                b.touchline_worker_match_().call_apply(s, event)
            })?
            .map_err(rejected),
        }
    }

    /// Decide an encoded bet request; the encoded decision.
    pub fn decide_bet(&mut self, request: &[u8]) -> Result<Vec<u8>, Failure> {
        match &mut self.kind {
            Kind::Native(w) => w.decide_bet(request).map_err(native_rejected),
            Kind::Wasm {
                store,
                bindings,
                runtime,
            } => call(store, bindings, runtime, |b, s| {
                b.touchline_worker_match_().call_decide_bet(s, request)
            })?
            .map_err(rejected),
        }
    }

    /// Settle encoded open bets; the encoded settlements.
    pub fn settle_bets(&mut self, bets: &[u8]) -> Result<Vec<u8>, Failure> {
        match &mut self.kind {
            Kind::Native(w) => w.settle_bets(bets).map_err(native_rejected),
            Kind::Wasm {
                store,
                bindings,
                runtime,
            } => call(store, bindings, runtime, |b, s| {
                b.touchline_worker_match_().call_settle_bets(s, bets)
            })?
            .map_err(rejected),
        }
    }

    /// The whole state as JSON.
    pub fn snapshot(&mut self) -> Result<String, Failure> {
        match &mut self.kind {
            Kind::Native(w) => Ok(w.snapshot()),
            Kind::Wasm {
                store,
                bindings,
                runtime,
            } => call(store, bindings, runtime, |b, s| {
                b.touchline_worker_match_().call_snapshot(s)
            }),
        }
    }

    /// The whole state, encoded for persistence.
    pub fn save_state(&mut self) -> Result<Vec<u8>, Failure> {
        match &mut self.kind {
            Kind::Native(w) => Ok(w.save_state()),
            Kind::Wasm {
                store,
                bindings,
                runtime,
            } => call(store, bindings, runtime, |b, s| {
                b.touchline_worker_match_().call_save_state(s)
            }),
        }
    }

    pub fn restore_state(&mut self, state: &[u8]) -> Result<(), Failure> {
        match &mut self.kind {
            Kind::Native(w) => w.restore_state(state).map_err(native_rejected),
            Kind::Wasm {
                store,
                bindings,
                runtime,
            } => call(store, bindings, runtime, |b, s| {
                b.touchline_worker_match_().call_restore_state(s, state)
            })?
            .map_err(rejected),
        }
    }
}

/// One guest call under a fresh epoch deadline; failures classified.
fn call<R>(
    store: &mut Store<HostState>,
    bindings: &MatchWorker,
    runtime: &Runtime,
    f: impl FnOnce(&MatchWorker, &mut Store<HostState>) -> wasmtime::Result<R>,
) -> Result<R, Failure> {
    let ticks = runtime.inner.wasm.as_ref().map_or(1, |w| w.deadline_ticks);
    store.set_epoch_deadline(ticks);
    f(bindings, store).map_err(|e| runtime.classify(e))
}

fn native_rejected(e: touchline_guest::glue::GlueError) -> Failure {
    use touchline_guest::glue::GlueError;
    Failure::Rejected(match e {
        GlueError::BadEvent(m) => format!("bad event: {m}"),
        GlueError::BadState(m) => format!("bad state: {m}"),
    })
}

/// wasmtime's error type is its own; carry it into `anyhow` with its chain.
fn wt<T>(r: wasmtime::Result<T>) -> anyhow::Result<T> {
    r.map_err(|e| anyhow::Error::from_boxed(e.into_boxed_dyn_error()))
}

fn rejected(e: GuestError) -> Failure {
    Failure::Rejected(match e {
        GuestError::BadEvent(m) => format!("bad event: {m}"),
        GuestError::BadState(m) => format!("bad state: {m}"),
    })
}

fn spawn_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .context("spawning the epoch ticker")?;
    Ok(())
}

/// Hex sha-256 of the component bytes: identifies a guest version.
fn content_hash(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
