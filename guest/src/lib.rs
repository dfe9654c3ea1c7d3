//! Touchline's default match logic.
//!
//! Owns the match model: the typed feed events a match receives
//! ([`event`]), the state they build and the deltas they produce
//! ([`model`], [`market`]), which producer's odds count ([`producer`]) and
//! bets against them ([`bet`]). Everything here is plain, IO-free Rust so it is unit-tested
//! natively and can run natively as the benchmark's baseline. When compiled
//! for `wasm32`, `component` exports [`glue`] (the worker operations over
//! encoded bytes) through the `match-worker` world in `wit/`; it must stay a
//! thin layer with no logic of its own. The host runs [`glue`] natively as
//! the benchmark's no-Wasm baseline.

pub mod bet;
pub mod event;
pub mod glue;
pub mod market;
pub mod model;
pub mod producer;

// The generated canonical-ABI glue is `unsafe` by nature; nothing else is.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod component;

/// Version of the bincode encoding of [`event::MatchEvent`] and
/// [`model::MatchState`]; the host refuses a guest reporting another one.
pub const EVENT_FORMAT: u32 = 1;

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
