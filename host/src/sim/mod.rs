//! Built-in feed simulator: a TCP server speaking the feed's vocabulary.
//!
//! [`Generator`] is sans-IO and deterministic for a seed: it plays `matches`
//! soccer matches at once (a Poisson goal model drives 33-37 markets per
//! match; goals come with a bet_stop before and reopened odds after;
//! half-time and full-time settle their markets; an ended match is replaced
//! by a new one announced with a fixture_change), plus an `alive` per
//! producer every 10 s of feed time. Timestamps are virtual, so the byte
//! stream for a seed is the same whatever the rate. [`serve`] paces it over
//! each accepted connection. `game` plays one match; `pricing` turns the
//! goal model into fair prices and market XML.

use std::collections::VecDeque;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod game;
mod pricing;

use game::SimMatch;

/// Feed time at the start of every run (2027-01-15T08:00:00Z).
const EPOCH_MS: i64 = 1_800_000_000_000;
/// Feed time between alive messages.
const ALIVE_EVERY_MS: i64 = 10_000;
/// How often the pacer wakes to write what is due.
const PACE_TICK: Duration = Duration::from_millis(5);
/// Producers that send alive messages.
const PRODUCERS: [u32; 2] = [1, 3];
/// Share of messages that are a pre-match producer's full book (~80 KB,
/// like the real `odds_change_prematch_full` sample).
const PREMATCH_SHARE: f64 = 1.0 / 500.0;

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub matches: u32,
    pub seed: u64,
    /// Messages per second per connection; 0 = as fast as the socket takes.
    pub rate: f64,
    /// Stop each connection after this many messages (0 = never).
    pub count: u64,
}

/// Deterministic message source.
pub struct Generator {
    rng: ChaCha8Rng,
    matches: Vec<SimMatch>,
    next_match_id: u64,
    now_ms: i64,
    step_ms: f64,
    elapsed_ms: f64,
    next_alive_ms: i64,
    /// Producers whose alive is due.
    alive_due: VecDeque<u32>,
    /// Overrides the timestamp attribute of the next messages (the
    /// benchmark stamps send times into it to measure latency).
    stamp: Option<i64>,
}

impl Generator {
    pub fn new(cfg: &SimConfig) -> Generator {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let first = 40_000_000 + (cfg.seed % 1000) * 100_000;
        let n = cfg.matches.max(1) as u64;
        let matches = (0..n).map(|i| SimMatch::new(first + i, &mut rng)).collect();
        // Feed time advances as if the rate were 50 msg/s when unpaced.
        let rate = if cfg.rate > 0.0 { cfg.rate } else { 50.0 };
        Generator {
            rng,
            matches,
            next_match_id: first + n,
            now_ms: EPOCH_MS,
            step_ms: 1000.0 / rate,
            elapsed_ms: 0.0,
            next_alive_ms: EPOCH_MS,
            alive_due: VecDeque::new(),
            stamp: None,
        }
    }

    /// The next message with `timestamp` set to `stamp` (any unit).
    pub fn next_message_stamped(&mut self, stamp: i64) -> String {
        self.stamp = Some(stamp);
        let m = self.next_message();
        self.stamp = None;
        m
    }

    /// The next message, without BOM or declaration.
    pub fn next_message(&mut self) -> String {
        self.elapsed_ms += self.step_ms;
        self.now_ms = EPOCH_MS + self.elapsed_ms as i64;
        if self.now_ms >= self.next_alive_ms {
            self.next_alive_ms += ALIVE_EVERY_MS;
            self.alive_due.extend(PRODUCERS);
        }
        if let Some(product) = self.alive_due.pop_front() {
            return format!(
                r#"<alive product="{product}" timestamp="{}" subscribed="1"/>"#,
                self.now_ms
            );
        }
        let i = self.rng.random_range(0..self.matches.len());
        let now = self.stamp.unwrap_or(self.now_ms);
        if self.matches[i].ended {
            let id = self.next_match_id;
            self.next_match_id += 1;
            self.matches[i] = SimMatch::new(id, &mut self.rng);
            return format!(
                r#"<fixture_change product="1" event_id="sr:match:{id}" timestamp="{now}" change_type="1" start_time="{}"/>"#,
                self.now_ms + 60_000
            );
        }
        if self.rng.random_bool(PREMATCH_SHARE) {
            return self.matches[i].prematch_book(&mut self.rng, now);
        }
        self.matches[i].step(&mut self.rng, now)
    }
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
            let mut generator = Generator::new(&cfg);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::parse::{FeedMessage, parse};

    fn cfg(seed: u64) -> SimConfig {
        SimConfig {
            matches: 3,
            seed,
            rate: 100.0,
            count: 0,
        }
    }

    #[test]
    fn same_seed_same_stream_and_every_message_parses() {
        let (mut a, mut b, mut c) = (
            Generator::new(&cfg(7)),
            Generator::new(&cfg(7)),
            Generator::new(&cfg(8)),
        );
        let mut kinds = std::collections::BTreeMap::new();
        let mut differs = false;
        for _ in 0..5000 {
            let m = a.next_message();
            assert_eq!(m, b.next_message());
            differs |= m != c.next_message();
            let parsed = parse(m.as_bytes()).unwrap_or_else(|e| panic!("{e}: {m}"));
            *kinds.entry(parsed.kind()).or_insert(0) += 1;
            if let FeedMessage::Match(touchline_guest::event::MatchEvent::OddsChange(oc)) = parsed {
                let n = oc.markets.len();
                match oc.header.product {
                    Some(3) => assert_eq!(n, 170, "the pre-match full book"),
                    _ => assert!((33..=37).contains(&n), "a live odds_change carries the live book: {n}"),
                }
            }
        }
        assert!(differs, "another seed gives another stream");
        let sizes: Vec<usize> = (0..2000).map(|_| a.next_message().len()).collect();
        assert!(sizes.iter().any(|&n| n > 60_000), "an occasional full pre-match book");
        for k in ["odds_change", "bet_stop", "bet_settlement", "fixture_change", "alive"] {
            assert!(kinds.contains_key(k), "no {k} in 5000 messages: {kinds:?}");
        }
    }
}
