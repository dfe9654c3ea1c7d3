//! [`serve`]: the simulated feed over TCP. One [`Generator`] per accepted
//! connection, its feed time started at the wall clock and paced so its
//! timestamps stay on it; the provider's controls for that connection are
//! applied between two batches, so within a pace tick.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::generator::Generator;
use super::provider::{Connection, Provider};
use super::{SimConfig, wall_ms};

/// How often the pacer wakes to write what is due (and apply controls).
const PACE_TICK: Duration = Duration::from_millis(5);
/// Messages per batch when unpaced.
const UNPACED_BATCH: u64 = 64;

/// Serve the simulated feed to every connection until `shutdown`.
pub async fn serve(listener: TcpListener, cfg: SimConfig, provider: Provider, shutdown: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
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
        let conn = provider.connect();
        tracing::info!(%peer, connection = conn.id, matches = cfg.matches, seed = cfg.seed, rate = cfg.rate, "simulator: feed client connected");
        tokio::spawn(feed(stream, peer, cfg.clone(), conn, shutdown.clone()));
    }
}

/// One connection: paced batches of messages, controls in between.
async fn feed(
    mut stream: TcpStream,
    peer: std::net::SocketAddr,
    cfg: SimConfig,
    mut conn: Connection,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let mut generator = Generator::starting_at(&cfg, wall_ms());
    let started = tokio::time::Instant::now();
    let mut sent: u64 = 0;
    let mut buf = String::with_capacity(64 * 1024);
    let mut tick = tokio::time::interval(PACE_TICK);
    let paced = cfg.rate > 0.0;
    loop {
        let done = cfg.count > 0 && sent >= cfg.count;
        if paced || done {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = conn.dropped().cancelled() => break,
                _ = tick.tick() => {}
            }
        } else if shutdown.is_cancelled() {
            return;
        } else if conn.dropped().is_cancelled() {
            break;
        }
        buf.clear();
        while let Some(control) = conn.try_next() {
            generator.control(&control, &mut buf);
        }
        let due = if paced {
            (started.elapsed().as_secs_f64() * cfg.rate) as u64
        } else {
            sent + UNPACED_BATCH
        };
        let due = if cfg.count > 0 { due.min(cfg.count) } else { due };
        while sent < due {
            buf.push_str(&generator.next_message());
            buf.push('\n');
            sent += 1;
        }
        if !buf.is_empty() {
            let written = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = conn.dropped().cancelled() => break,
                w = stream.write_all(buf.as_bytes()) => w,
            };
            if written.is_err() {
                tracing::info!(%peer, connection = conn.id, sent, "simulator: feed client left");
                return;
            }
        }
        if !done && cfg.count > 0 && sent >= cfg.count {
            // Keep the connection open (controls still apply); the client
            // decides when to go.
            tracing::info!(%peer, connection = conn.id, sent, "simulator: all messages sent");
        }
    }
    tracing::info!(%peer, connection = conn.id, sent, "simulator: feed connection closed by the provider (drop fault or full control queue)");
}
