//! Built-in feed simulator: a TCP server speaking the feed's vocabulary.
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
//! **Controls.** [`Generator::control`] applies what a provider asks of a
//! feed connection: a recovery (one odds_change with `request_id` per
//! match of the producer, then snapshot_complete), a bare
//! snapshot_complete, and fault windows (no alives, an unsubscribed alive,
//! lagging timestamps).

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod game;
mod generator;
mod pricing;

pub use generator::{Control, EPOCH_MS, Generator};

/// How often the pacer wakes to write what is due.
const PACE_TICK: Duration = Duration::from_millis(5);

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

/// Serve the simulated feed to every connection until `shutdown`.
pub async fn serve(listener: TcpListener, cfg: SimConfig, shutdown: CancellationToken) {
    loop {
        let (mut stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "simulator accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        tracing::info!(%peer, matches = cfg.matches, seed = cfg.seed, rate = cfg.rate, "simulator: feed client connected");
        let cfg = cfg.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let mut generator = Generator::starting_at(&cfg, wall_ms());
            let started = tokio::time::Instant::now();
            let mut sent: u64 = 0;
            let mut buf = String::with_capacity(64 * 1024);
            let mut tick = tokio::time::interval(PACE_TICK);
            loop {
                if cfg.rate > 0.0 {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                } else if shutdown.is_cancelled() {
                    return;
                }
                let due = if cfg.rate > 0.0 {
                    (started.elapsed().as_secs_f64() * cfg.rate) as u64
                } else {
                    sent + 64
                };
                let due = if cfg.count > 0 { due.min(cfg.count) } else { due };
                buf.clear();
                while sent < due {
                    buf.push_str(&generator.next_message());
                    buf.push('\n');
                    sent += 1;
                }
                if !buf.is_empty() && stream.write_all(buf.as_bytes()).await.is_err() {
                    tracing::info!(%peer, sent, "simulator: feed client left");
                    return;
                }
                if cfg.count > 0 && sent >= cfg.count {
                    tracing::info!(%peer, sent, "simulator: all messages sent");
                    // Keep the connection open; the client decides when to go.
                    shutdown.cancelled().await;
                    return;
                }
            }
        });
    }
}

/// Wall-clock ms since the Unix epoch (0 if the clock is before it).
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
