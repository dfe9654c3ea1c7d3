//! The WebAssembly export layer: `match-worker` world → [`crate::model`].
//!
//! Thin by design: decode, call the model, encode. The only state is the one
//! `MatchState` of this instance (one instance serves one match). With the
//! `fault-injection` feature it also misbehaves on purpose for fault tests.

use std::cell::RefCell;

use crate::event::MatchEvent;
use crate::model::MatchState;

wit_bindgen::generate!({
    path: "../wit",
    world: "match-worker",
});

use exports::touchline::worker::match_::{Error, Guest};
use touchline::worker::host::{Level, log};

thread_local! {
    static STATE: RefCell<MatchState> = RefCell::new(MatchState::default());
}

struct Worker;

impl Guest for Worker {
    fn event_format() -> u32 {
        crate::EVENT_FORMAT
    }

    fn init(match_id: String) {
        // A panic aborts the instance (a trap); say why first.
        std::panic::set_hook(Box::new(|info| log(Level::Error, &info.to_string())));
        STATE.with(|s| *s.borrow_mut() = MatchState::new(match_id));
    }

    fn apply(event: Vec<u8>) -> Result<String, Error> {
        let event: MatchEvent = crate::decode(&event).map_err(|e| Error::BadEvent(e.to_string()))?;
        #[cfg(feature = "fault-injection")]
        faults::inject(&event);
        STATE.with(|s| {
            let mut state = s.borrow_mut();
            let change = state.apply(&event);
            serde_json::to_string(&state.delta(event.kind(), &change)).map_err(|e| Error::BadEvent(e.to_string()))
        })
    }

    fn snapshot() -> String {
        STATE.with(|s| serde_json::to_string(&s.borrow().snapshot()).unwrap_or_else(|_| "{}".to_owned()))
    }

    fn save_state() -> Vec<u8> {
        STATE.with(|s| crate::encode(&*s.borrow()))
    }

    fn restore_state(state: Vec<u8>) -> Result<(), Error> {
        let restored: MatchState = crate::decode(&state).map_err(|e| Error::BadState(e.to_string()))?;
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            if !s.match_id.is_empty() && s.match_id != restored.match_id {
                return Err(Error::BadState(format!(
                    "state of {} offered to {}",
                    restored.match_id, s.match_id
                )));
            }
            *s = restored;
            Ok(())
        })
    }
}

#[cfg(feature = "fault-injection")]
mod faults {
    use crate::event::MatchEvent;

    /// Markets whose presence in an odds_change makes the guest fail.
    const PANIC: u32 = 999_001;
    const LOOP: u32 = 999_002;
    const MEMORY_BOMB: u32 = 999_003;

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

export!(Worker);
