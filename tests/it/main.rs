//! Touchline's one integration-test binary.
//!
//! - `feed`: the framer and parser against the real sample messages.
//! - `feed_props`: property test: no corruption between valid messages
//!   costs a valid message (the framer's resynchronisation).
//! - `feed_problems`: lenient parsing of altered samples.
//! - `budgets`: what one client may make the server hold or do (ping
//!   floods, pending subscriptions, slow request heads, oversized messages,
//!   connections per address, running out of descriptors), with RSS bounds.
//! - `bets`: bet decisions, idempotency, durability of confirmed bets.
//! - `realtime`: `--realtime-priority`: the serving threads under
//!   `SCHED_FIFO`, the rest ordinary; refused without the permission.
//! - `settle_bets`: settlements, cancels and rollbacks of accepted bets.
//! - `cluster_ingest`: match events published to `TL_EVENTS` by partition,
//!   the same feed from two ingest nodes stored once.
//! - `cluster_lease`: partition leases on real nats-server processes
//!   (issue 13): balance, crash and graceful hand-over, the fencing rule,
//!   a NATS server killed under a 3-server cluster.
//! - `cluster_nats_loss`: serve nodes on a 3-server NATS cluster with the
//!   feed streaming: one server killed, then all of them restarted; no
//!   update lost.
//! - `cluster_serve`: `touchline serve --cluster` processes on a real
//!   nats-server: partitions shared, `/api/nodes`, takeover after kill -9,
//!   hand-over on SIGTERM.
//! - `delta`: update deltas applied to the previous state give the next
//!   snapshot (simulator and samples, through the Wasm guest); rebuilt
//!   guests regenerate them; what an update frame weighs.
//! - `deflate`: `permessage-deflate` by hand over a real socket: compressed
//!   requests, shared compressed frames, a compressed bomb refused; and
//!   Python's `websockets` (`clients/websockets_client.py`, `make pyws`).
//! - `deploy`: the Prometheus alert rules and the Grafana dashboard name
//!   only metrics the server exports.
//! - `density`: 100,000 matches tracked (hibernated) in one server within
//!   a stated memory bound per match.
//! - `e2e`: the real `touchline` binary over real sockets.
//! - `faults`: guest panics, infinite loops, memory bombs, quarantine, heal.
//! - `disk`: a full disk (a tmpfs the test fills): not ready, bets refused,
//!   writes held, recovery by itself with no hole.
//! - `durability`: kill -9 and SIGTERM mid-stream, restart, resume.
//! - `bet_ids`: one bet id sent by many sessions at once.
//! - `limits`: max sessions, max matches, ids per request, message size,
//!   `unsubscribe ["*"]`.
//! - `logs`: log lines in a file (no colour codes), JSON logs, `demo` on
//!   a taken HTTP port.
//! - `names`: event, market and outcome names from the simulator's API;
//!   a down or slow fixture endpoint holds no update back.
//! - `no_durability`: `--no-durability` serves, and keeps nothing.
//! - `ops`: the operator console (`/ops`) in headless Chromium.
//! - `ops_api`: the console's admin API without a browser: cards, detail
//!   with raw dead letters, actions and their activity log, the admin
//!   socket's login and ticks.
//! - `page`: the live odds page in headless Chromium.
//! - `producers`: producers down and back (silence, unsubscribed, a dropped
//!   feed, kill -9, a lagging feed) with the simulator as the provider;
//!   hand-over.
//! - `slow`: a client that stops reading is cut off; one that lags catches up.
//! - `swap`: hot-swapping the match logic under load, refusals, the CLI,
//!   kill -9 mid-rollout, pruning, pacing.
//! - `swap_failures`: guests that trap during migration or on their first
//!   event (canary, per-match rollback, abort), and healing.
//! - `swap_asleep`: sleeping matches a rollout passes by.
//! - `support`: starting servers, WebSocket and HTTP clients, waiting.

mod bet_ids;
mod bets;
mod budgets;
mod cluster_bets;
mod cluster_events;
mod cluster_failover;
mod cluster_fencing;
mod cluster_ingest;
mod cluster_lease;
mod cluster_nats_loss;
mod cluster_page;
mod cluster_relays;
mod cluster_serve;
mod cluster_swap;
mod deflate;
mod delta;
mod density;
mod deploy;
mod disk;
mod durability;
mod e2e;
mod faults;
mod feed;
mod feed_problems;
mod feed_props;
mod limits;
mod logs;
mod names;
mod no_durability;
mod ops;
mod ops_api;
mod page;
mod producers;
mod realtime;
mod settle_bets;
mod slow;
mod support;
mod swap;
mod swap_asleep;
mod swap_failures;
