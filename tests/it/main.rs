//! Touchline's one integration-test binary.
//!
//! - `feed`: the framer and parser against the real sample messages.
//! - `e2e`: the real `touchline` binary over real sockets.
//! - `page`: the live odds page in headless Chromium (when available).
//! - `support`: starting servers, WebSocket and HTTP clients, waiting.

mod e2e;
mod feed;
mod page;
mod support;
