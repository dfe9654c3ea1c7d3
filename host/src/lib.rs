//! Touchline host: live odds from an XML feed to browsers, one WebAssembly
//! instance per match.
//!
//! Data flows feed → router → worker → push:
//! - [`feed`]: TCP intake; [`feed::frame`] and [`feed::parse`] are the
//!   sans-IO framer and parser.
//! - [`router`]: match id → worker, created on first sight.
//! - [`worker`]: one guest instance per match, its lifecycle and
//!   supervision; it reports upwards through [`worker::Observer`].
//! - [`sandbox`]: the Wasm engine, guest versions, limits and traps.
//! - [`journal`]: the seam for everything a worker makes durable.
//! - [`guests`]: installed guest versions, canary, hot-swap rollouts and
//!   rollbacks.
//! - [`push`]: WebSocket sessions, subscriptions, snapshots and updates.
//! - [`bets`]: bet intake, idempotency, durable confirmation.
//! - [`http`]: page, health, metrics, bets API, WebSocket upgrade.
//! - [`listen`]: the HTTP port's accept loop: connection limits (per
//!   address, in all), the request-head timeout, running out of
//!   descriptors.
//! - [`cluster`]: Touchline as a cluster on NATS JetStream (issue 13, in
//!   progress): partitions, subjects, leases and their balancing, the
//!   streams; `serve --cluster` joins and keeps leases, events are not
//!   partitioned yet.
//! - [`store`]: the only owner of sled (the production journal); its
//!   writer makes group commits.
//! - [`producers`]: the feed's producers, their state (up, down,
//!   recovering) and recoveries through the provider's API.
//! - [`reference`]: the provider's market descriptions, fetched and kept.
//! - [`supervisor`]: restart policy and intensity.
//! - [`sim`]: the built-in feed simulator.
//! - [`names`]: market descriptions, fixtures and the names rendered from
//!   them (pure; not wired in yet).
//! - [`resident`]: marks a match's permanent records for the binary's
//!   allocator to keep apart from transient buffers.
//! - [`realtime`]: the serving threads under `SCHED_FIFO`
//!   (`--realtime-priority`).
//! - [`deflate`]: `permessage-deflate`: frames compressed once and shared,
//!   client messages inflated below tungstenite.
//! - [`metrics`], [`config`].
//!
//! [`Server::start`] binds everything and returns the bound addresses, so
//! tests can use port 0; [`Server::shutdown`] stops in order: feed, workers,
//! WebSockets, store.

pub mod auth;
pub mod bets;
pub mod cluster;
pub mod config;
pub mod deflate;
pub mod feed;
pub mod guests;
pub mod http;
pub mod journal;
pub mod layers;
pub mod listen;
pub mod metrics;
pub mod names;
pub mod ops;
mod passthrough;
pub mod producers;
pub mod provider_api;
pub mod push;
pub mod realtime;
pub mod reference;
pub mod resident;
pub mod router;
pub mod sandbox;
pub mod sim;
pub mod store;
pub mod supervisor;
pub mod worker;

mod server;

use std::net::SocketAddr;

pub use config::ServeConfig;
pub use server::{Server, bind_http};

/// The default guest, built by `make guest` and wrapped by `build.rs`.
pub const DEFAULT_GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/touchline_guest.component.wasm"));

/// What `touchline serve` prints on stdout once it listens, so a parent
/// process (the tests, the bench) learns its ephemeral ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub http: SocketAddr,
    pub feed: Option<SocketAddr>,
}

impl Ready {
    pub fn line(&self, guest_version: &str) -> String {
        let feed = self.feed.map_or_else(|| "-".to_owned(), |a| a.to_string());
        format!("READY http={} feed={feed} guest_version={guest_version}", self.http)
    }

    pub fn parse(line: &str) -> Option<Ready> {
        let field = |k: &str| {
            line.strip_prefix("READY ")?
                .split(' ')
                .find_map(|kv| kv.strip_prefix(k))
        };
        Some(Ready {
            http: field("http=")?.parse().ok()?,
            feed: field("feed=")?.parse().ok(),
        })
    }

    /// Read a child's stdout up to its READY line (`None` if it exits
    /// first), then keep draining it so the child never blocks on the pipe.
    pub fn wait(stdout: std::process::ChildStdout) -> Option<Ready> {
        use std::io::BufRead as _;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let ready = lines.by_ref().map_while(Result::ok).find_map(|l| Ready::parse(&l));
        std::thread::spawn(move || for _ in lines {});
        ready
    }
}

/// How a binary ends: success, or the error with its whole chain on
/// stderr and a failure code.
pub fn exit_report(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Ready;

    #[test]
    fn ready_line_round_trips() {
        let r = Ready {
            http: "127.0.0.1:8080".parse().expect("addr"),
            feed: Some("127.0.0.1:9000".parse().expect("addr")),
        };
        assert_eq!(Ready::parse(&r.line("abc")), Some(r));
        let no_feed = Ready { feed: None, ..r };
        assert_eq!(Ready::parse(&no_feed.line("abc")), Some(no_feed));
        assert_eq!(Ready::parse("Touchline is live"), None);
    }
}
