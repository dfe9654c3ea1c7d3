//! Push to browsers: WebSocket sessions and their subscriptions.
//!
//! [`session`] runs one WebSocket connection: it parses client requests,
//! subscribes to matches (each match's broadcast of pre-serialised frames),
//! sends a snapshot first and then updates with contiguous `seq`, and
//! resynchronises a subscriber that lagged with a fresh snapshot. Frames
//! are never re-serialised per client. The wire protocol is in
//! `docs/protocol.md`.

pub mod session;

/// Largest client message accepted; a larger one closes the session (1009).
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// Most match ids one subscribe/unsubscribe request may name.
pub const MAX_IDS_PER_REQUEST: usize = 10_000;
