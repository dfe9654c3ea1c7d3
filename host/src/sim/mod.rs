//! Built-in feed simulator: the provider's side of the feed. A TCP feed
//! server speaking the feed's vocabulary, and the provider's HTTP API
//! (recovery requests, fault injection).
//!
//! **The stream.** [`Generator`] is sans-IO and deterministic for a seed:
//! it plays `matches` soccer matches at once, plus an `alive` per producer
//! (1 "LO" live odds, 3 "Ctrl" pre-match) every 10 s of feed time. Each
//! new match is announced by Ctrl with a fixture_change and priced by Ctrl
//! before kick-off (`sport_event_status status="0"`; a main book, now and
//! then a ~80 KB full book of player markets) for a couple of hundred of
//! its messages; at kick-off Ctrl sends one odds_change with every market
//! it priced at `status="-2"` (handed over) and LO takes over with live
//! odds (a Poisson goal model driving 33-37 markets; goals come with a
//! bet_stop before and reopened odds after; half-time and full-time settle
//! their markets). An ended match, once settled, is replaced by a new
//! fixture. At the start about a quarter of the matches (at least one when
//! there are two or more) are before kick-off, the others just kicked off,
//! and the generator keeps at least one match before kick-off at all times
//! (the last one waits for the next fixture), so producer 3 always owns a
//! match. About one message in 500 is a full book, as before this phase
//! model. `game` plays one match; `pricing` turns the goal model into
//! prices and market XML.
//!
//! **Time.** Feed time advances by 1/rate s per message (1/50 s unpaced).
//! [`Generator::new`] starts it at a fixed epoch (2027), so the byte stream
//! for a seed is the same whatever the rate; [`serve`] starts each
//! connection's generator at the wall clock ([`Generator::starting_at`])
//! and paces it, so timestamps are wall-clock ms (within a pace tick).
//!
//! **Recovery.** Asked through the API, every open feed connection sends,
//! between two of its batches, one `<odds_change product="P" ...
//! request_id="ID">` per match producer P owns (its whole current book),
//! then `<snapshot_complete request_id="ID" product="P" timestamp="..."/>`.
//! `after` is logged but not used: every recovery is a full snapshot.
//!
//! **The HTTP API** (`api`, bound at `--api-listen`; `touchline simulate`
//! prints `SIMULATOR feed=ADDR api=http://ADDR`, see [`Listening`]):
//! - `POST /v1/{LO|Ctrl}/recovery/initiate_request?after=MS&request_id=ID`
//!   → 202 `<response response_code="ACCEPTED">...`; an unknown producer
//!   404, a bad query (`request_id` missing or not a number) 400, both XML.
//! - `GET /control/requests` → every recovery request so far (JSON).
//! - `POST /control/fault?kind=K&product=P&seconds=N` → 200 JSON echo;
//!   kinds `stop_alive` (no alive from P for N s), `unsubscribed` (one
//!   `subscribed="0"` alive from P now), `drop` (close every feed
//!   connection), `delay` (P's timestamps N s old for N s).
//! - `POST /control/snapshot_complete?product=P&request_id=ID` → that
//!   message on every connection.
//! - `GET /v1/descriptions/en/markets.xml`, `.../variants.xml`: the market
//!   descriptions of every market the simulator emits (name templates,
//!   specifiers, groups); `GET /v1/sports/en/sport_events/{id}/fixture.xml`:
//!   a match's teams, tournament and kick-off ([`reference`]);
//!   `POST /control/fixtures?mode=up|down|slow&ms=N` makes that endpoint
//!   answer 503 or late.
//!
//! The same faults play from the command line (`--fault`, `--fault-every`;
//! [`FaultScript`]). [`Provider`] is what the API, the script and the feed
//! connections share. Its queues are bounded: see `provider`.
//! `docs/simulator.md` is the user's guide.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod api;
mod fault;
mod game;
mod generator;
mod markets;
mod pricing;
mod provider;
pub mod reference;
mod serve;
mod settle;
#[cfg(test)]
mod tests;

pub use api::{routes, serve_api};
pub use fault::{Fault, FaultAt, FaultError, FaultScript};
pub use generator::{Control, EPOCH_MS, Generator};
pub use provider::{CONTROL_QUEUE, Connection, HELD_CONTROLS, Provider, REQUEST_LOG, RecoveryRequest};
pub use serve::serve;

/// Producer id of live odds.
pub const LO: u32 = 1;
/// Producer id of the pre-match producer.
pub const CTRL: u32 = 3;

/// One producer the simulator emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Producer {
    /// The `product` attribute of its messages.
    pub id: u32,
    /// Its name in the recovery API's paths.
    pub name: &'static str,
}

/// The producers the simulator emits, as the provider's producer table
/// names them.
pub const PRODUCERS: [Producer; 2] = [Producer { id: LO, name: "LO" }, Producer { id: CTRL, name: "Ctrl" }];

impl Producer {
    pub fn by_name(name: &str) -> Option<Producer> {
        PRODUCERS.into_iter().find(|p| p.name == name)
    }

    pub fn by_id(id: u32) -> Option<Producer> {
        PRODUCERS.into_iter().find(|p| p.id == id)
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub matches: u32,
    pub seed: u64,
    /// Messages per second per connection; 0 = as fast as the socket takes.
    pub rate: f64,
    /// Stop each connection after this many messages (0 = never).
    pub count: u64,
}

/// Where a running simulator listens: what `touchline simulate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    pub feed: SocketAddr,
    pub api: SocketAddr,
}

impl Listening {
    /// `SIMULATOR feed=127.0.0.1:9000 api=http://127.0.0.1:41234`
    pub fn line(&self) -> String {
        format!("SIMULATOR feed={} api={}", self.feed, self.api_url())
    }

    /// The API's base URL, as the server's `--recovery-url` takes it.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// Read [`Self::line`] back (tests and scripts).
    pub fn parse(line: &str) -> Option<Listening> {
        let rest = line.trim().strip_prefix("SIMULATOR ")?;
        let field = |name: &str| rest.split(' ').find_map(|f| f.strip_prefix(name));
        Some(Listening {
            feed: field("feed=")?.parse().ok()?,
            api: field("api=")?.strip_prefix("http://")?.parse().ok()?,
        })
    }
}

/// A simulator with its listeners bound, not yet serving: the addresses
/// are known (port 0 works) before anything runs.
pub struct Simulator {
    feed: TcpListener,
    api: TcpListener,
    cfg: SimConfig,
    script: FaultScript,
    provider: Provider,
}

impl Simulator {
    pub async fn bind(
        feed: SocketAddr,
        api: SocketAddr,
        cfg: SimConfig,
        script: FaultScript,
    ) -> std::io::Result<Simulator> {
        Ok(Simulator {
            feed: TcpListener::bind(feed).await?,
            api: TcpListener::bind(api).await?,
            cfg,
            script,
            provider: Provider::default(),
        })
    }

    pub fn listening(&self) -> std::io::Result<Listening> {
        Ok(Listening {
            feed: self.feed.local_addr()?,
            api: self.api.local_addr()?,
        })
    }

    /// The handle the API uses (tests call it directly).
    pub fn provider(&self) -> Provider {
        self.provider.clone()
    }

    /// Serve the feed, the API and the fault script until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let Simulator {
            feed,
            api,
            cfg,
            script,
            provider,
        } = self;
        let api_task = tokio::spawn(serve_api(api, provider.clone(), shutdown.clone()));
        let script_task = tokio::spawn(script.play(provider.clone(), shutdown.clone()));
        serve(feed, cfg, provider, shutdown).await;
        if let Ok(Err(e)) = api_task.await {
            tracing::warn!(error = %e, "simulator API stopped");
        }
        let _ = script_task.await;
    }
}

/// Wall-clock ms since the Unix epoch (0 if the clock is before it).
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
