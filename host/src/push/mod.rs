//! Push to browsers: WebSocket sessions and their subscriptions.
//!
//! [`session`] runs one WebSocket connection: it parses client requests,
//! subscribes to matches (each pushes its pre-serialised frames into the
//! session's one bounded outbox), sends a snapshot first and then updates
//! with contiguous `seq`, and resynchronises a subscriber that lagged from
//! the missed updates or a fresh snapshot. Frames
//! are never re-serialised per client. [`budget`] is what one client may
//! make the server hold or do; [`throttle`] holds back a client that sends
//! faster than its read budget. In a cluster, [`publisher`] and [`relay`] carry
//! frames between nodes and [`directory`] makes `"*"` cover every node's
//! matches. The wire protocol is in `docs/protocol.md`.

pub mod budget;
mod close;
pub mod directory;
mod named;
pub mod publisher;
pub mod relay;
mod request;
pub mod session;
pub mod throttle;
pub mod wire;
mod writer;

pub use budget::Budget;
pub use session::OUTBOX_CAPACITY;

/// Most match ids one subscribe/unsubscribe request may name.
pub const MAX_IDS_PER_REQUEST: usize = 10_000;
