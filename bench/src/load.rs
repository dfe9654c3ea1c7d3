//! Load generation: feed traffic over TCP and WebSocket clients.
//!
//! The feeder stamps each message's `timestamp` with its send time in
//! microseconds; the server carries it into the update's `delta.timestamp`,
//! so a client's receive time minus that stamp is the feed-to-browser
//! latency, on one machine clock. Clients parse only the few fields they
//! need from each frame, so the load generator stays cheap.

use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use touchline::deflate::inflate::Inflating;
use touchline::sim::{Generator, SimConfig};

pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("static histogram bounds are valid")
}

/// Write `bytes` to the feed port as fast as the server takes them.
pub fn blast(feed: SocketAddr, bytes: Arc<Vec<u8>>) -> std::thread::JoinHandle<anyhow::Result<()>> {
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(feed).context("connecting to the feed port")?;
        s.set_nodelay(true)?;
        for chunk in bytes.chunks(64 * 1024) {
            s.write_all(chunk)?;
        }
        // Keep the socket open until the server has read everything.
        s.flush()?;
        std::thread::sleep(Duration::from_millis(50));
        Ok(())
    })
}

/// Matches whose odds_change carry a poison market every `every`.
#[derive(Clone)]
pub struct Poison {
    pub matches: Vec<String>,
    pub every: Duration,
}

/// Feed `rate` messages/s from `cfg`'s generator until `stop`, stamping
/// send times; with `poison`, also poison events for some matches.
pub fn paced(
    feed: SocketAddr,
    cfg: SimConfig,
    rate: f64,
    poison: Option<Poison>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<anyhow::Result<u64>> {
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(feed).context("connecting to the feed port")?;
        s.set_nodelay(true)?;
        let mut generator = Generator::new(&cfg);
        let started = Instant::now();
        let mut sent = 0u64;
        let mut next_poison = poison.as_ref().map(|p| started + p.every);
        let mut buf = String::with_capacity(1 << 20);
        while !stop.load(Ordering::Relaxed) {
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            buf.clear();
            while sent < due {
                buf.push_str(&generator.next_message_stamped(now_us()));
                sent += 1;
            }
            if let (Some(p), Some(at)) = (&poison, next_poison.as_mut())
                && Instant::now() >= *at
            {
                *at += p.every;
                for id in &p.matches {
                    buf.push_str(&format!(
                        r#"<odds_change product="1" event_id="{id}" timestamp="{}"><odds><market id="999001" status="1"><outcome id="1" odds="2.0" active="1"/></market></odds></odds_change>"#,
                        now_us()
                    ));
                }
            }
            if !buf.is_empty() {
                s.write_all(buf.as_bytes())?;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(sent)
    })
}

/// Latency is also kept per phase, a number the driver sets while the
/// clients run (before / during / after a hot swap, say).
pub const PHASES: usize = 32;
/// A phase whose latencies are not kept (a warm-up).
pub const UNRECORDED: usize = PHASES;

/// A client's latency samples: phase (< [`PHASES`], 5 bits) above
/// `LATENCY_BITS` of latency in µs (at most ~134 s: a saturated 10,000
/// clients' p99 was 3.6 s for Touchline, 8.5 s for Node; longer is
/// recorded as the most).
const LATENCY_BITS: u32 = 27;
const LATENCY_MAX: u64 = (1 << LATENCY_BITS) - 1;
const _: () = assert!(
    PHASES <= 1 << (32 - LATENCY_BITS),
    "a phase fits above the latency in a u32"
);
/// Samples room a client starts with (10 updates/s for 25 s in the
/// bench's load; more grows the Vec).
const SAMPLES_RESERVED: usize = 256;

/// Each client's WebSocket read buffer.
const READ_BUFFER: usize = 4 * 1024;

/// Largest frame a client inflates (tungstenite's own default limit).
const MAX_MESSAGE: usize = 64 << 20;

/// What the clients saw.
pub struct FanoutStats {
    pub clients: usize,
    pub deliveries: u64,
    /// Payload bytes of the updates delivered (the JSON text of each frame,
    /// without the WebSocket header).
    pub delivered_bytes: u64,
    /// Bytes the clients read from their sockets after their snapshots
    /// (frame headers included, compressed where compressed): what the
    /// updates (and the few status frames among them) cost on the wire.
    pub wire_bytes: u64,
    pub gaps: u64,
    pub resnapshots: u64,
    /// Updates a re-snapshot stood in for (never delivered one by one).
    pub skipped: u64,
    /// Sessions the server closed while the clients ran.
    pub closed: u64,
    /// Feed-to-client latency of updates, µs.
    pub latency: Histogram<u64>,
    /// The same, by phase.
    pub by_phase: Vec<Histogram<u64>>,
}

/// A running set of WebSocket clients.
pub struct Clients {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub ready: Arc<AtomicU64>,
    deliveries: Arc<AtomicU64>,
    delivered_bytes: Arc<AtomicU64>,
    wire_bytes: Arc<AtomicU64>,
    gaps: Arc<AtomicU64>,
    resnapshots: Arc<AtomicU64>,
    skipped: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
    latency: Arc<Mutex<Vec<Histogram<u64>>>>,
    /// Which phase latencies are recorded under (`< PHASES`; none under
    /// [`UNRECORDED`]).
    pub phase: Arc<std::sync::atomic::AtomicUsize>,
}

impl Clients {
    /// Open `n` clients, each subscribed to `k` of `matches`; latency is
    /// recorded only for matches not in `exclude`. With `deflate`, each
    /// offers `permessage-deflate` (as browsers do) and the server must
    /// take it.
    pub async fn open(
        http: SocketAddr,
        n: usize,
        k: usize,
        matches: &[String],
        exclude: &[String],
        deflate: bool,
    ) -> anyhow::Result<Clients> {
        let c = Clients {
            stop: Arc::new(AtomicBool::new(false)),
            tasks: Vec::with_capacity(n),
            ready: Arc::new(AtomicU64::new(0)),
            deliveries: Arc::new(AtomicU64::new(0)),
            delivered_bytes: Arc::new(AtomicU64::new(0)),
            wire_bytes: Arc::new(AtomicU64::new(0)),
            gaps: Arc::new(AtomicU64::new(0)),
            resnapshots: Arc::new(AtomicU64::new(0)),
            skipped: Arc::new(AtomicU64::new(0)),
            closed: Arc::new(AtomicU64::new(0)),
            latency: Arc::new(Mutex::new(vec![histogram(); PHASES])),
            phase: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        };
        let exclude: Arc<std::collections::HashSet<String>> = Arc::new(exclude.iter().cloned().collect());
        let connecting = Arc::new(Semaphore::new(64));
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let subs: Vec<String> = (0..k)
                .map(|j| matches[(i * 7 + j * 13) % matches.len()].clone())
                .collect();
            let permit = connecting.clone().acquire_owned().await?;
            // Spread clients over 127.0.0.2..=127.0.0.51 so source ports never run short.
            let source = Ipv4Addr::new(127, 0, 0, 2 + (i % 50) as u8);
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((source, 0)))?;
            let stream = socket
                .connect(http)
                .await
                .with_context(|| format!("client {i} connecting"))?;
            stream.set_nodelay(true)?;
            // A 4 KiB read buffer, not tungstenite's 128 KiB, which it
            // zero-fills on every read: at 10,000 clients that memset, not
            // the server, saturated the generator.
            // Frames as large as the messages inflated: the filter hands
            // tungstenite one frame per compressed message.
            let config = WebSocketConfig::default()
                .read_buffer_size(READ_BUFFER)
                .max_message_size(Some(MAX_MESSAGE))
                .max_frame_size(Some(MAX_MESSAGE));
            let mut request = format!("ws://{http}/ws").into_client_request()?;
            if deflate {
                request.headers_mut().insert(
                    "sec-websocket-extensions",
                    HeaderValue::from_static("permessage-deflate; client_max_window_bits"),
                );
            }
            // Counting what is read; inflating once the answer took it.
            let (stream, _) = Inflating::new(stream, Vec::new(), false, 0);
            let (mut ws, answer) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .with_context(|| format!("client {i} handshake"))?;
            if deflate {
                let took = answer
                    .headers()
                    .get("sec-websocket-extensions")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("permessage-deflate"));
                anyhow::ensure!(took, "client {i}: the server did not take permessage-deflate");
                ws.get_mut().start(MAX_MESSAGE);
            }
            drop(permit);
            let sub = serde_json::json!({"op": "subscribe", "matches": subs});
            ws.send(Message::Text(sub.to_string().into())).await?;
            let (stop, ready, deliveries, gaps, resnapshots, latency, exclude) = (
                c.stop.clone(),
                c.ready.clone(),
                c.deliveries.clone(),
                c.gaps.clone(),
                c.resnapshots.clone(),
                c.latency.clone(),
                exclude.clone(),
            );
            let (phase, closed, skipped, delivered_bytes, wire_bytes) = (
                c.phase.clone(),
                c.closed.clone(),
                c.skipped.clone(),
                c.delivered_bytes.clone(),
                c.wire_bytes.clone(),
            );
            tasks.push(tokio::spawn(async move {
                // Raw samples, put into the shared histograms at the end:
                // a histogram per client and phase (~200 KB each, faulted
                // in page by page as latencies spread over its buckets)
                // took 8 GB at 10,000 clients, and the generator spent
                // about half its CPU zeroing those pages.
                // Each sample is a u32: the phase in the top 5 bits, the
                // latency (µs, capped at 2^27 - 1, ~134 s) below.
                let mut local: Vec<u32> = Vec::with_capacity(SAMPLES_RESERVED);
                let mut last: HashMap<String, u64> = HashMap::with_capacity(k);
                let (mut n_deliveries, mut n_gaps, mut n_resnap, mut n_skipped) = (0u64, 0u64, 0u64, 0u64);
                let mut n_bytes = 0u64;
                let mut snapshots = 0usize;
                let mut read_at_ready = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let msg = match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
                        Err(_) => continue,
                        Ok(Some(Ok(Message::Text(t)))) => t,
                        Ok(Some(Ok(_))) => continue,
                        Ok(_) => {
                            closed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    };
                    let received = now_us();
                    let text = msg.as_str();
                    let Some(id) = field_str(text, "\"match\":\"") else {
                        continue;
                    };
                    let seq = field_u64(text, "\"seq\":").unwrap_or(0);
                    if text.starts_with("{\"type\":\"snapshot\"") {
                        snapshots += 1;
                        if snapshots == k {
                            read_at_ready = ws.get_ref().bytes_read();
                            ready.fetch_add(1, Ordering::Relaxed);
                        } else if snapshots > k {
                            n_resnap += 1;
                        }
                        // A re-snapshot replaces the updates a lagging client
                        // missed: no gap in its state, but those updates were
                        // never delivered one by one.
                        if let Some(prev) = last.insert(id.to_owned(), seq) {
                            n_skipped += seq.saturating_sub(prev + 1);
                        }
                    } else if text.starts_with("{\"type\":\"update\"") {
                        n_deliveries += 1;
                        n_bytes += text.len() as u64;
                        match last.get_mut(id) {
                            Some(prev) => {
                                if seq != *prev + 1 {
                                    n_gaps += 1;
                                }
                                *prev = seq;
                            }
                            None => n_gaps += 1,
                        }
                        if let Some(ts) = field_u64(text, "\"timestamp\":")
                            && !exclude.contains(id)
                        {
                            let lat = (received - ts as i64).max(1) as u64;
                            let p = phase.load(Ordering::Relaxed);
                            if p < PHASES {
                                local.push(((p as u32) << LATENCY_BITS) | lat.min(LATENCY_MAX) as u32);
                            }
                        }
                    }
                }
                deliveries.fetch_add(n_deliveries, Ordering::Relaxed);
                delivered_bytes.fetch_add(n_bytes, Ordering::Relaxed);
                if snapshots >= k {
                    wire_bytes.fetch_add(ws.get_ref().bytes_read() - read_at_ready, Ordering::Relaxed);
                }
                gaps.fetch_add(n_gaps, Ordering::Relaxed);
                resnapshots.fetch_add(n_resnap, Ordering::Relaxed);
                skipped.fetch_add(n_skipped, Ordering::Relaxed);
                if let Ok(mut h) = latency.lock() {
                    for sample in local {
                        let (p, lat) = (sample >> LATENCY_BITS, sample & LATENCY_MAX as u32);
                        let _ = h[p as usize].record(u64::from(lat));
                    }
                }
                let _ = ws.close(None).await;
            }));
        }
        Ok(Clients { tasks, ..c })
    }

    /// Wait until every client has its snapshots.
    pub async fn wait_ready(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while (self.ready.load(Ordering::Relaxed) as usize) < n {
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {n} clients got their snapshots",
                self.ready.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Stop every client and gather what they saw.
    pub async fn finish(self) -> FanoutStats {
        self.stop.store(true, Ordering::Relaxed);
        let clients = self.tasks.len();
        for t in self.tasks {
            let _ = t.await;
        }
        let by_phase = self
            .latency
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|_| vec![histogram(); PHASES]);
        let mut latency = histogram();
        for h in &by_phase {
            let _ = latency.add(h);
        }
        FanoutStats {
            clients,
            deliveries: self.deliveries.load(Ordering::Relaxed),
            delivered_bytes: self.delivered_bytes.load(Ordering::Relaxed),
            wire_bytes: self.wire_bytes.load(Ordering::Relaxed),
            gaps: self.gaps.load(Ordering::Relaxed),
            resnapshots: self.resnapshots.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
            latency,
            by_phase,
        }
    }
}

fn field_str<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(key)? + key.len();
    let end = text[at..].find('"')?;
    Some(&text[at..at + end])
}

fn field_u64(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    let digits = text[at..].bytes().take_while(u8::is_ascii_digit).count();
    text[at..at + digits].parse().ok()
}
