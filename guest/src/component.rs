//! The WebAssembly export layer: `match-worker` world → [`crate::model`].
//!
//! Thin by design: canonical ABI in, [`crate::glue`] (decode, model, encode),
//! canonical ABI out. The only state is the one `glue::Model` of this
//! instance (one instance serves one match). With the
//! `fault-injection` feature it also misbehaves on purpose for fault tests
//! (odds_change markets 999001..999003 in `apply`, market 999004 in a state
//! given to `migrate`).

use std::cell::RefCell;

use crate::glue::{self, GlueError};

wit_bindgen::generate!({
    path: "../wit",
    world: "match-worker",
});

use exports::touchline::worker::match_::{Error, Guest};
use touchline::worker::host::{Level, log};

/// talc instead of std's dlmalloc, which was 4.7% of the server's CPU in
/// the pipeline bench at 1,000 matches (a perf profile with the guest's
/// symbols: `bench/README.md`, "Profiling"), over a heap extended 4 KiB at
/// a time ([`crate::heap`]).
#[global_allocator]
static ALLOCATOR: talc::cell::TalcSyncCell<crate::heap::Grow4k<crate::heap::Wasm32>, talc::wasm::WasmBinning> =
    talc::cell::TalcSyncCell::new_wasm(crate::heap::Grow4k::new(crate::heap::Wasm32));

thread_local! {
    static MODEL: RefCell<glue::Model> = RefCell::new(glue::Model::default());
}

fn wit_error(e: GlueError) -> Error {
    match e {
        GlueError::BadEvent(m) => Error::BadEvent(m),
        GlueError::BadState(m) => Error::BadState(m),
    }
}

/// The export shim (no state of its own: the model lives in `MODEL`).
struct Export;

impl Guest for Export {
    fn event_format() -> u32 {
        crate::EVENT_FORMAT
    }

    fn init(match_id: String) {
        // A panic aborts the instance (a trap); say why first.
        std::panic::set_hook(Box::new(|info| log(Level::Error, &info.to_string())));
        MODEL.with(|w| *w.borrow_mut() = glue::Model::new(match_id));
    }

    fn apply(event: Vec<u8>) -> Result<String, Error> {
        #[cfg(feature = "fault-injection")]
        if let Ok(e) = crate::decode::<crate::event::MatchEvent>(&event) {
            faults::inject(&e);
        }
        MODEL.with(|w| w.borrow_mut().apply(&event)).map_err(wit_error)
    }

    fn state_version() -> u32 {
        glue::STATE_VERSION
    }

    fn migrate(match_id: String, state: Vec<u8>, from_version: u32) -> Result<(), Error> {
        MODEL
            .with(|w| w.borrow_mut().migrate(&match_id, &state, from_version))
            .map_err(wit_error)?;
        #[cfg(feature = "fault-injection")]
        MODEL.with(|w| faults::on_migrate(w.borrow().state()));
        Ok(())
    }

    fn decide_bet(request: Vec<u8>, producers_down: Vec<u32>) -> Result<Vec<u8>, Error> {
        MODEL
            .with(|w| w.borrow().decide_bet(&request, &producers_down))
            .map_err(wit_error)
    }

    fn settle_bets(bets: Vec<u8>) -> Result<Vec<u8>, Error> {
        MODEL.with(|w| w.borrow().settle_bets(&bets)).map_err(wit_error)
    }

    fn snapshot() -> String {
        MODEL.with(|w| w.borrow().snapshot())
    }

    fn save_state() -> Vec<u8> {
        MODEL.with(|w| w.borrow().save_state())
    }

    fn restore_state(state: Vec<u8>) -> Result<(), Error> {
        MODEL.with(|w| w.borrow_mut().restore_state(&state)).map_err(wit_error)
    }
}

#[cfg(feature = "fault-injection")]
mod faults {
    use crate::event::MatchEvent;

    /// Markets whose presence in an odds_change makes the guest fail.
    const PANIC: u32 = 999_001;
    const LOOP: u32 = 999_002;
    const MEMORY_BOMB: u32 = 999_003;
    /// A state holding this market makes `migrate` panic (hot-swap tests).
    const MIGRATE_TRAP: u32 = 999_004;
    /// Reads a byte at the address its first outcome's odds give, or, for
    /// odds of 0, in the page after the end of the guest's linear memory.
    const OUT_OF_BOUNDS: u32 = 999_005;

    pub fn on_migrate(state: &crate::model::MatchState) {
        if state.markets.keys().any(|(id, _)| *id == MIGRATE_TRAP) {
            panic!("fault injection: migrating a state with market {MIGRATE_TRAP}");
        }
    }

    pub fn inject(event: &MatchEvent) {
        let MatchEvent::OddsChange(oc) = event else {
            return;
        };
        for m in &oc.markets {
            match m.id {
                PANIC => panic!("fault injection: market {PANIC}"),
                LOOP =>
                {
                    #[allow(clippy::empty_loop)]
                    loop {
                        std::hint::black_box(());
                    }
                }
                OUT_OF_BOUNDS => {
                    let end = core::arch::wasm32::memory_size(0) * 65_536;
                    let at = match m.outcomes.first().and_then(|o| o.odds) {
                        Some(a) if a >= 1.0 => a as usize,
                        _ => end + 4096,
                    };
                    // Memory the guest does not own (the tests pick such
                    // addresses): the read must trap, by the host's explicit
                    // check or by the inaccessible pages of a full
                    // reservation (`sandbox::reservation`).
                    let byte = unsafe { core::ptr::read_volatile(at as *const u8) };
                    std::hint::black_box(byte);
                }
                MEMORY_BOMB => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![1u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                _ => {}
            }
        }
    }
}

export!(Export);
