//! Push to browsers: WebSocket sessions and their subscriptions.
//!
//! [`session`] runs one WebSocket connection: it parses client requests,
//! subscribes to matches (each match's broadcast of pre-serialised frames),
//! sends a snapshot first and then updates with contiguous `seq`, and
//! resynchronises a subscriber that lagged with a fresh snapshot. Frames
//! are never re-serialised per client. [`budget`] is what one client may
//! make the server hold or do. The wire protocol is in `docs/protocol.md`.

pub mod budget;
mod close;
mod named;
mod request;
pub mod session;

pub use budget::Budget;

/// Most match ids one subscribe/unsubscribe request may name.
pub const MAX_IDS_PER_REQUEST: usize = 10_000;
