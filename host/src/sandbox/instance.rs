//! One match's guest: its own wasmtime store and instance (or the native
//! model), every call bounded in time and memory, failures classified.
//!
//! [`GuestInstance`] never panics the host: a trap, an overrun deadline or
//! a memory overrun comes back as a [`Failure`]. A memory overrun is known
//! from the store's own limiter ([`HostState`] records that it refused to
//! grow), not from an error message.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use wasmtime::{Store, Trap};

use super::bindings::MatchWorker;
use super::bindings::exports::touchline::worker::match_::Error as GuestError;
use super::bindings::touchline::worker::host::{Host, Level};
use super::{MAX_CORE_INSTANCES, Platform};

/// Per-store host state: what a guest's imports can reach.
pub struct HostState {
    match_id: Arc<str>,
    /// Linear memory cap of this instance...
    memory_cap: usize,
    /// ...and whether the guest tried to grow past it (the call that did
    /// trapped: a [`Failure::Memory`]).
    memory_exceeded: bool,
    /// Linear memory the guest holds now, bytes (what the console shows).
    memory_bytes: usize,
}

impl HostState {
    pub(super) fn new(match_id: Arc<str>, memory_cap: usize) -> HostState {
        HostState {
            match_id,
            memory_cap,
            memory_exceeded: false,
            memory_bytes: 0,
        }
    }

    /// Name the match a spare instance now serves (its logs say so).
    pub(super) fn name(&mut self, match_id: Arc<str>) {
        self.match_id = match_id;
    }
}

impl wasmtime::ResourceLimiter for HostState {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.memory_exceeded = true;
            // An error (not `Ok(false)`) makes `memory.grow` trap.
            return Err(wasmtime::Error::msg(format!(
                "memory cap of {} bytes: refused to grow to {desired}",
                self.memory_cap
            )));
        }
        self.memory_bytes = self.memory_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, _desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES as usize
    }
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

impl Platform {
    /// What a failed call was: the limiter's record first (a refused
    /// growth surfaces as an error, or as a trap in the guest's allocator),
    /// then the trap code.
    pub(super) fn classify(&self, e: wasmtime::Error, state: &mut HostState) -> Failure {
        let limits = &self.inner.limits;
        if std::mem::take(&mut state.memory_exceeded) {
            return Failure::Memory(limits.memory_bytes);
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Failure::Deadline(limits.call_deadline),
            Some(trap) => Failure::Trap(trap.to_string()),
            None => Failure::Trap(super::chain(&e)),
        }
    }
}

/// A saved guest state and who saved it (see [`GuestVersion::instantiate_with`]).
#[derive(Debug, Clone, Copy)]
pub struct Saved<'a> {
    pub state: &'a [u8],
    /// Content hash of the version that saved it.
    pub guest: &'a str,
    pub state_version: u32,
}

impl<'a> From<&'a crate::journal::SnapshotRecord> for Saved<'a> {
    fn from(s: &'a crate::journal::SnapshotRecord) -> Saved<'a> {
        Saved {
            state: &s.state,
            guest: &s.guest,
            state_version: s.state_version,
        }
    }
}

/// One match's guest: its own store and instance (or the native model).
pub struct GuestInstance {
    kind: Kind,
    match_id: Arc<str>,
}

/// Boxed: a worker holds its instance inline in its lifecycle, which is
/// part of every match's task whether the match is live or asleep.
enum Kind {
    Wasm(Box<WasmInstance>),
    Native(Box<touchline_guest::glue::Model>),
}

struct WasmInstance {
    store: Store<HostState>,
    bindings: MatchWorker,
    platform: Platform,
}

impl WasmInstance {
    /// One guest call under a fresh epoch deadline; failures classified.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&MatchGuest, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        self.store.set_epoch_deadline(self.platform.inner.deadline_ticks);
        f(self.bindings.touchline_worker_match_(), &mut self.store)
            .map_err(|e| self.platform.classify(e, self.store.data_mut()))
    }
}

impl GuestInstance {
    pub(super) fn native(match_id: Arc<str>) -> GuestInstance {
        GuestInstance {
            kind: Kind::Native(Box::new(touchline_guest::glue::Model::new(&*match_id))),
            match_id,
        }
    }

    /// A fresh Wasm instance, initialised for its match.
    pub(super) fn wasm(
        match_id: Arc<str>,
        store: Store<HostState>,
        bindings: MatchWorker,
        platform: Platform,
    ) -> Result<GuestInstance, Failure> {
        let mut guest = WasmInstance {
            store,
            bindings,
            platform,
        };
        guest.call(|m, s| m.call_init(s, &match_id))?;
        Ok(GuestInstance {
            kind: Kind::Wasm(Box::new(guest)),
            match_id,
        })
    }
}

/// One operation, natively through `glue` or through the guest's export
/// (a call that may trap). `infallible`: the operation itself cannot fail;
/// `fallible`: the guest may reject the input (`Failure::Rejected`).
macro_rules! dispatch {
    (infallible $self:ident, |$w:ident| $native:expr, |$m:ident, $s:ident| $wasm:expr) => {
        match &mut $self.kind {
            Kind::Native($w) => Ok($native),
            Kind::Wasm(g) => g.call(|$m, $s| $wasm),
        }
    };
    (fallible $self:ident, |$w:ident| $native:expr, |$m:ident, $s:ident| $wasm:expr) => {
        match &mut $self.kind {
            Kind::Native($w) => $native.map_err(rejected),
            Kind::Wasm(g) => g.call(|$m, $s| $wasm)?.map_err(rejected),
        }
    };
}

impl GuestInstance {
    /// Linear memory this instance holds, bytes (0 for the native model).
    pub fn memory_bytes(&self) -> usize {
        match &self.kind {
            Kind::Native(_) => 0,
            Kind::Wasm(g) => g.store.data().memory_bytes,
        }
    }

    pub(super) fn event_format(&mut self) -> Result<u32, Failure> {
        dispatch!(infallible self, |_w| touchline_guest::EVENT_FORMAT, |m, s| m.call_event_format(s))
    }

    pub(super) fn state_version(&mut self) -> Result<u32, Failure> {
        dispatch!(infallible self, |_w| touchline_guest::glue::STATE_VERSION, |m, s| m.call_state_version(s))
    }

    /// Take over a state saved by another guest version (`from_version` is
    /// its layout version).
    pub fn migrate(&mut self, state: &[u8], from_version: u32) -> Result<(), Failure> {
        let id = self.match_id.clone();
        dispatch!(fallible self, |w| w.migrate(&id, state, from_version), |m, s| m.call_migrate(s, &id, state, from_version))
    }

    /// Apply one encoded event; returns the delta JSON.
    pub fn apply(&mut self, event: &[u8]) -> Result<String, Failure> {
        dispatch!(fallible self, |w| w.apply(event), |m, s| m.call_apply(s, event))
    }

    /// [`GuestInstance::apply`], the delta checked to be JSON: it goes to
    /// browsers verbatim, and a guest may be anything.
    pub fn apply_json(&mut self, event: &[u8]) -> Result<Box<RawValue>, Failure> {
        self.apply(event).and_then(validate_json)
    }

    /// Decide an encoded bet request while `producers_down` (`product`
    /// ids) are down; the encoded decision.
    pub fn decide_bet(&mut self, request: &[u8], producers_down: &[u32]) -> Result<Vec<u8>, Failure> {
        dispatch!(fallible self, |w| w.decide_bet(request, producers_down), |m, s| m.call_decide_bet(s, request, producers_down))
    }

    /// Settle encoded open bets; the encoded settlements.
    pub fn settle_bets(&mut self, bets: &[u8]) -> Result<Vec<u8>, Failure> {
        dispatch!(fallible self, |w| w.settle_bets(bets), |m, s| m.call_settle_bets(s, bets))
    }

    /// The whole state as JSON, checked like [`GuestInstance::apply_json`].
    pub fn snapshot_json(&mut self) -> Result<Box<RawValue>, Failure> {
        dispatch!(infallible self, |w| w.snapshot(), |m, s| m.call_snapshot(s)).and_then(validate_json)
    }

    /// The whole state, encoded for persistence.
    pub fn save_state(&mut self) -> Result<Vec<u8>, Failure> {
        dispatch!(infallible self, |w| w.save_state(), |m, s| m.call_save_state(s))
    }

    pub fn restore_state(&mut self, state: &[u8]) -> Result<(), Failure> {
        dispatch!(fallible self, |w| w.restore_state(state), |m, s| m.call_restore_state(s, state))
    }
}

type MatchGuest = super::bindings::exports::touchline::worker::match_::Guest;

fn validate_json(text: String) -> Result<Box<RawValue>, Failure> {
    RawValue::from_string(text).map_err(|e| Failure::Rejected(format!("guest returned invalid JSON: {e}")))
}

/// The guest's own error (either side of the ABI) as a failure.
fn rejected(e: impl Into<touchline_guest::glue::GlueError>) -> Failure {
    use touchline_guest::glue::GlueError;
    Failure::Rejected(match e.into() {
        GlueError::BadEvent(m) => format!("bad event: {m}"),
        GlueError::BadState(m) => format!("bad state: {m}"),
    })
}

impl From<GuestError> for touchline_guest::glue::GlueError {
    fn from(e: GuestError) -> Self {
        match e {
            GuestError::BadEvent(m) => touchline_guest::glue::GlueError::BadEvent(m),
            GuestError::BadState(m) => touchline_guest::glue::GlueError::BadState(m),
        }
    }
}
