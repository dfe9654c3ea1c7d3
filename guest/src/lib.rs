//! Touchline's default match logic.
//!
//! Owns the match model: the typed feed events a match receives
//! ([`event`]), the state they build ([`model`], [`market`]) and the
//! deltas that say what each event changed ([`delta`]), which producer's
//! odds count ([`producer`]), bets against them ([`bet`]), how settlements
//! and cancellations stand ([`settlement`]) and fixture changes
//! ([`fixture`]). Everything here is
//! plain, IO-free Rust so it is unit-tested natively and can run natively
//! as the benchmark's baseline. When compiled
//! for `wasm32`, `component` exports [`glue`] (the worker operations over
//! encoded bytes) through the `match-worker` world in `wit/`; it must stay a
//! thin layer with no logic of its own. The host runs [`glue`] natively as
//! the benchmark's no-Wasm baseline.

pub mod bet;
pub mod delta;
pub mod event;
pub mod fixture;
pub mod glue;
pub mod market;
pub mod model;
pub mod producer;
pub mod settlement;

// The generated canonical-ABI glue is `unsafe` by nature, and so is the
// fault-injection guest's read past its memory; nothing else is.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod component;
// The heap's memory source claims linear memory by address; it is built
// natively only for its tests.
#[cfg(any(target_arch = "wasm32", test))]
#[allow(unsafe_code)]
mod heap;

/// Version of the bincode encoding of [`event::MatchEvent`],
/// [`model::MatchState`] and the bet types; the host refuses a guest
/// reporting another one. 2: rollbacks carry a window or outcomes,
/// settlement results may be -1, `OpenBet` has `placed_at` (format-1
/// journal entries still decode: [`event::decode`]). 3: a bet_stop carries
/// the market ids its groups stand for.
pub const EVENT_FORMAT: u32 = 3;

/// bincode configuration shared by host and guest for events and states.
pub fn codec() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encode an event or a state in the `EVENT_FORMAT` encoding.
pub fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, codec())
        .expect("event and state types are plain data: encoding into a Vec cannot fail")
}

/// Decode bytes produced by [`encode`]; the error is for the caller to report.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(bytes, codec()).map(|(v, _)| v)
}
