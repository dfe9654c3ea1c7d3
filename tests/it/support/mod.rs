//! Test support: sample files, the real server as a child process, clients.
//!
//! Everything waits on a condition with a deadline; nothing sleeps to
//! synchronise. Servers bind 127.0.0.1:0 and report their ports on stdout.
//! Launching, `/metrics` reading and HTTP are `touchline-testkit`'s, shared
//! with the bench; this module gives them the tests' shape (panics with the
//! reason, the [`DEADLINE`]).

#![allow(dead_code)]

pub mod browser;
pub mod cluster;
pub mod nodes;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use touchline_testkit::provider::Provider;
use touchline_testkit::sim::SimProcess;
use touchline_testkit::{Launch, ServerProcess};

/// Generous bound for anything a test waits on.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data")
}

/// Bytes of one sample file, e.g. `uof/messages/odds_change.xml`.
pub fn sample(rel: &str) -> Vec<u8> {
    let p = data_dir().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Every sample message file, sorted, as (relative path, bytes).
pub fn all_samples() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for set in ["uof", "uof-minus5"] {
        let dir = data_dir().join(set).join("messages");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .expect("samples dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        for n in names {
            let rel = format!("{set}/messages/{}", n.to_string_lossy());
            out.push((rel.clone(), sample(&rel)));
        }
    }
    out
}

/// A sample with its event id replaced, to make more traffic for one match.
pub fn sample_for(rel: &str, event_id: &str) -> Vec<u8> {
    let text = String::from_utf8(sample(rel)).expect("samples are UTF-8");
    let start = text.find("event_id=\"").expect("sample has an event_id") + "event_id=\"".len();
    let end = start + text[start..].find('"').expect("closing quote");
    format!("{}{}{}", &text[..start], event_id, &text[end..]).into_bytes()
}

/// Poll `f` until it returns `Some`, or panic after `DEADLINE`.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The real `touchline serve` ([`touchline_testkit::ServerProcess`]),
/// killed on drop; a test that panics prints the tail of its log.
pub struct Server {
    /// `None` only after `kill9`/`terminate` took it.
    process: Option<ServerProcess>,
    pub http: SocketAddr,
    pub feed: SocketAddr,
    /// `None` only after `kill9`/`terminate` handed it back.
    pub data: Option<tempfile::TempDir>,
    /// The provider's recovery API this server asks (`--recovery-url`).
    pub provider: Provider,
}

impl Server {
    pub fn start(extra: &[&str]) -> Server {
        Self::start_in(tempfile::tempdir().expect("tempdir"), extra)
    }

    pub fn start_faulty(extra: &[&str]) -> Server {
        let mut args = vec!["--guest", env!("TOUCHLINE_FAULTY_GUEST")];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    /// Start on `data` (a fresh dir, or one a stopped server handed back).
    /// The server's log goes to `server.log` there, appended across restarts.
    ///
    /// These servers are fed recorded samples from a test's own connection:
    /// unless `extra` says otherwise, they use the samples' producers (1, 3
    /// and BetPal, 4), the feed's lag is not checked (the samples are from
    /// 2016) and a producer is declared silent only after 180 s. Producers
    /// start down: [`Server::feed_up`] brings them up.
    pub fn start_in(data: tempfile::TempDir, extra: &[&str]) -> Server {
        Self::start_raw(data, extra, None, None)
    }

    /// [`Server::start_in`] with the log at `log` (off a disk a test fills).
    pub fn start_logging(data: tempfile::TempDir, log: Option<&Path>, extra: &[&str]) -> Server {
        Self::start_raw(data, extra, None, log)
    }

    /// [`Server::start`] with the server's open-file limit (soft and hard)
    /// lowered to `open_files`.
    pub fn start_with_open_files(open_files: u64, extra: &[&str]) -> Server {
        Self::start_raw(tempfile::tempdir().expect("tempdir"), extra, Some(open_files), None)
    }

    fn start_raw(data: tempfile::TempDir, extra: &[&str], open_files: Option<u64>, log: Option<&Path>) -> Server {
        let provider = Provider::start().expect("the provider's API");
        let url = provider.url();
        let defaults = [
            ("--recovery-url", url.as_str()),
            ("--producers", "1,3,4"),
            ("--max-feed-delay", "0"),
            ("--alive-timeout", "180"),
        ];
        let args = with_defaults(&defaults, extra);
        let mut launch = Launch::new(env!("CARGO_BIN_EXE_touchline"), data.path()).args(&args);
        if let Some(limit) = open_files {
            launch = launch.open_files(limit);
        }
        if let Some(log) = log {
            launch = launch.log(log);
        }
        Self::launched(data, launch, provider)
    }

    /// A server fed by `sim` (`--feed-connect`), which is also the
    /// provider it asks for recoveries: producers 1 and 3 at the real
    /// defaults but for a 15 s alive timeout (the simulator's alives come
    /// every 10 s) and a 1 s minimum interval between requests, unless
    /// `extra` says otherwise.
    pub fn start_sim(data: tempfile::TempDir, sim: &SimProcess, extra: &[&str]) -> Server {
        let (feed, api) = (sim.feed.to_string(), sim.api_url());
        let defaults = [
            ("--feed-connect", feed.as_str()),
            ("--recovery-url", api.as_str()),
            ("--producers", "1,3"),
            ("--alive-timeout", "15"),
            ("--recovery-min-interval", "1"),
        ];
        // Unused here: the recording provider of raw-feed servers.
        let provider = Provider::start().expect("the provider's API");
        Self::launch(data, &with_defaults(&defaults, extra), provider)
    }

    fn launch(data: tempfile::TempDir, args: &[&str], provider: Provider) -> Server {
        let launch = Launch::new(env!("CARGO_BIN_EXE_touchline"), data.path()).args(args);
        Self::launched(data, launch, provider)
    }

    fn launched(data: tempfile::TempDir, launch: Launch, provider: Provider) -> Server {
        let process = launch.start().unwrap_or_else(|e| panic!("starting touchline: {e}"));
        Server {
            http: process.http,
            feed: process.feed,
            process: Some(process),
            data: Some(data),
            provider,
        }
    }

    /// Open a feed connection and bring every producer up through it
    /// (answering the server's recovery requests): bets can be accepted.
    pub fn feed_up(&self) -> TcpStream {
        let mut feed = self.feed();
        touchline_testkit::provider::bring_up(&self.provider, &mut feed, self.http, DEADLINE)
            .unwrap_or_else(|e| panic!("bringing the producers up: {e}"));
        feed
    }

    /// Its process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.process().pid()
    }

    /// Send it signal `sig` (`STOP`, `CONT`...).
    pub fn signal(&self, sig: &str) {
        self.process()
            .signal(sig)
            .unwrap_or_else(|e| panic!("signalling the server: {e}"));
    }

    fn process(&self) -> &ServerProcess {
        self.process.as_ref().expect("the server is running")
    }

    /// `kill -9`: no chance to flush anything. Returns the data dir.
    pub fn kill9(mut self) -> tempfile::TempDir {
        let process = self.process.take().expect("the server is running");
        process.kill9().expect("SIGKILL");
        self.data.take().expect("data dir")
    }

    /// SIGTERM and wait for a clean exit. Returns the data dir.
    pub fn terminate(mut self) -> tempfile::TempDir {
        let process = self.process.take().expect("the server is running");
        let exit = process.terminate(DEADLINE).expect("touchline to exit on SIGTERM");
        assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
        self.data.take().expect("data dir")
    }

    /// Open a feed connection.
    pub fn feed(&self) -> TcpStream {
        let s = TcpStream::connect(self.feed).expect("connecting to the feed port");
        s.set_nodelay(true).expect("nodelay");
        s
    }

    /// One metric's value (sum over its label sets), 0 if absent.
    pub fn metric(&self, name: &str) -> f64 {
        self.process().metrics().expect("GET /metrics").value(name)
    }

    /// Its resident memory (VmRSS), bytes.
    pub fn rss(&self) -> u64 {
        self.process().rss_bytes()
    }

    pub fn wait_metric(&self, name: &str, at_least: f64) -> f64 {
        self.process()
            .wait_metric(name, at_least, DEADLINE)
            .unwrap_or_else(|e| panic!("timed out waiting for {name} >= {at_least}: {e}"))
    }
}

/// `extra`, after each default flag it does not give itself.
fn with_defaults<'a>(defaults: &[(&'a str, &'a str)], extra: &[&'a str]) -> Vec<&'a str> {
    let mut args: Vec<&str> = Vec::new();
    for &(flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend_from_slice(extra);
    args
}

/// The simulator (`touchline simulate`), logging to `dir/sim.log`.
pub fn simulator(dir: &Path, args: &[&str]) -> SimProcess {
    SimProcess::start(Path::new(env!("CARGO_BIN_EXE_touchline")), args, &dir.join("sim.log"))
        .unwrap_or_else(|e| panic!("starting the simulator: {e}"))
}

impl Drop for Server {
    fn drop(&mut self) {
        let log = self.process.take().map(|p| p.log_path().to_owned());
        if std::thread::panicking()
            && let Some(log) = log
            && let Ok(log) = std::fs::read_to_string(log)
        {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- server log (last 40 lines) ---");
            tail.iter().rev().for_each(|l| eprintln!("{l}"));
        }
    }
}

/// One metric's value in a `/metrics` text (sum over its label sets).
pub fn metric_in(text: &str, name: &str) -> f64 {
    touchline_testkit::metrics::value(text, name)
}

/// Minimal HTTP/1.1 POST with optional headers: (status, body).
pub fn http_post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    http_request(addr, "POST", path, headers, body)
}

/// Minimal HTTP/1.1 request: (status, body).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    touchline_testkit::http::request(addr, method, path, headers, body, DEADLINE)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Minimal HTTP/1.1 GET: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    touchline_testkit::http::get(addr, path, DEADLINE).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

type WsStream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A real WebSocket client.
pub struct Ws {
    pub ws: WsStream,
    /// Close code the server sent, once it closed the session.
    pub closed: Option<Option<u16>>,
}

impl Ws {
    pub async fn connect(http: SocketAddr) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
            .await
            .expect("websocket connect");
        Ws { ws, closed: None }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("ws send");
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("ws send");
    }

    /// Next JSON text frame, within the deadline.
    pub async fn next(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection closed")
                .expect("websocket error");
            match msg {
                Message::Text(t) => {
                    return serde_json::from_str(&t).expect("server frames are JSON");
                }
                Message::Close(c) => panic!("server closed the session: {c:?}"),
                _ => {}
            }
        }
    }

    /// Next frame, or `None` once the server closed the session (by a close
    /// frame, returned in `closed`, or by the connection dropping).
    pub async fn next_or_close(&mut self) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("timed out waiting for a frame");
            match msg {
                Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).expect("server frames are JSON")),
                Some(Ok(Message::Close(c))) => {
                    self.closed = Some(c.map(|c| u16::from(c.code)));
                    return None;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Skip frames until one satisfies `pred`.
    pub async fn next_matching(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.next().await;
            if pred(&v) {
                return v;
            }
        }
    }
}

/// Find outcome `outcome` of market `id`/`specifiers` in a market list.
pub fn odds_of(markets: &Value, id: u64, specifiers: &str, outcome: &str) -> Option<f64> {
    markets
        .as_array()?
        .iter()
        .find(|m| m["id"] == id && m["specifiers"] == specifiers)?["outcomes"]
        .as_array()?
        .iter()
        .find(|o| o["id"] == outcome)?["odds"]
        .as_f64()
}

/// What a client knows about one match, built from the frames it received.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientView {
    pub epoch: u64,
    pub seq: u64,
    /// The snapshot `state` with every delta applied.
    pub state: Value,
}

/// Client-side model of the protocol: snapshots replace, updates merge.
#[derive(Debug, Default)]
pub struct Tracker {
    pub matches: std::collections::BTreeMap<String, ClientView>,
    /// Seq gaps seen (must stay 0).
    pub gaps: u64,
    pub statuses: Vec<Value>,
}

impl Tracker {
    pub fn apply(&mut self, f: &Value) {
        let id = f["match"].as_str().unwrap_or_default().to_owned();
        let (epoch, seq) = (f["epoch"].as_u64().expect("epoch"), f["seq"].as_u64().expect("seq"));
        match f["type"].as_str() {
            Some("snapshot") => {
                self.matches.insert(
                    id,
                    ClientView {
                        epoch,
                        seq,
                        state: f["state"].clone(),
                    },
                );
            }
            Some("update") => {
                let Some(v) = self.matches.get_mut(&id) else {
                    panic!("update before snapshot: {f}")
                };
                if v.epoch != epoch || seq != v.seq + 1 {
                    self.gaps += 1;
                }
                v.seq = seq;
                v.epoch = epoch;
                merge(&mut v.state, &f["delta"]);
            }
            Some("status") => self.statuses.push(f.clone()),
            _ => {}
        }
    }
}

/// Apply an update's delta to a snapshot state, as a client would: the
/// rule of `docs/protocol.md` ("Applying an update"). The summary's fields
/// replace the state's, `timestamp` is its `updated_at`, a field a guest
/// version adds (`events_seen`) replaces the state's; each market is merged
/// by key (id, specifiers): one not known is added as sent (whole), a known
/// one takes every field sent, and its outcomes are merged the same way by
/// id (one not known is appended as sent, a known one takes every field
/// sent). Nothing is ever removed.
pub fn merge(state: &mut Value, delta: &Value) {
    if let Some(summary) = delta.get("summary").and_then(Value::as_object) {
        for (k, v) in summary {
            state[k] = v.clone();
        }
    }
    state["updated_at"] = delta["timestamp"].clone();
    for (k, v) in delta.as_object().into_iter().flatten() {
        if !["event", "timestamp", "summary", "markets"].contains(&k.as_str()) {
            state[k] = v.clone();
        }
    }
    let key = |m: &Value| {
        (
            m["id"].as_u64().unwrap_or(0),
            m["specifiers"].as_str().unwrap_or("").to_owned(),
        )
    };
    let mut markets: std::collections::BTreeMap<(u64, String), Value> = state["markets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| (key(m), m.clone()))
        .collect();
    for m in delta["markets"].as_array().into_iter().flatten() {
        let Some(known) = markets.get_mut(&key(m)) else {
            markets.insert(key(m), m.clone());
            continue;
        };
        for (k, v) in m.as_object().into_iter().flatten() {
            if k != "outcomes" {
                known[k] = v.clone();
                continue;
            }
            if !known["outcomes"].is_array() {
                known["outcomes"] = Value::Array(Vec::new());
            }
            let outcomes = known["outcomes"].as_array_mut().expect("an array");
            for o in v.as_array().into_iter().flatten() {
                match outcomes.iter_mut().find(|x| x["id"] == o["id"]) {
                    Some(x) => {
                        for (field, value) in o.as_object().into_iter().flatten() {
                            x[field] = value.clone();
                        }
                    }
                    None => outcomes.push(o.clone()),
                }
            }
        }
    }
    state["markets"] = Value::Array(markets.into_values().collect());
}

/// A state as compared: what a snapshot leaves out equals `null` (and
/// `cancels` `[]`, none in force), so those fields are dropped; markets in
/// key order, outcomes in id order.
pub fn normalise(state: &Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                let none =
                    |k: &String, x: &Value| x.is_null() || (k == "cancels" && x.as_array().is_some_and(Vec::is_empty));
                map.retain(|k, x| !none(k, x));
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut s = state.clone();
    strip(&mut s);
    if let Some(markets) = s.get_mut("markets").and_then(Value::as_array_mut) {
        markets.sort_by_key(|m| (m["id"].as_u64(), m["specifiers"].as_str().map(str::to_owned)));
        for m in markets {
            if let Some(outcomes) = m.get_mut("outcomes").and_then(Value::as_array_mut) {
                outcomes.sort_by_key(|o| o["id"].as_str().map(str::to_owned));
            }
        }
    }
    s
}

impl Ws {
    /// A client whose socket receive buffer is set to `bytes` before it
    /// connects (which turns off the kernel's autotuning for it), so a test
    /// that stops reading fills the path to it with little data. Returns the
    /// client and the receive buffer the kernel actually granted.
    pub async fn connect_with_recv_buffer(http: SocketAddr, bytes: u32) -> (Ws, u32) {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let granted = socket.recv_buffer_size().expect("SO_RCVBUF");
        let tcp = socket.connect(http).await.expect("connect");
        let (ws, _) =
            tokio_tungstenite::client_async(format!("ws://{http}/ws"), tokio_tungstenite::MaybeTlsStream::Plain(tcp))
                .await
                .expect("websocket handshake");
        (Ws { ws, closed: None }, granted)
    }
}

/// The most a Linux TCP send buffer can grow to by autotuning
/// (`net.ipv4.tcp_wmem`'s maximum): with the receiver's buffer, a bound on
/// how much a server can write to a client that does not read.
pub fn tcp_send_buffer_max() -> u64 {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").expect("reading /proc/sys/net/ipv4/tcp_wmem");
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .expect("tcp_wmem has three numbers")
}

/// An odds_change for `event_id` with `markets` markets of three active
/// outcomes each, every odd moved by `step`: each such event changes every
/// market, so its update carries them all (a large frame).
pub fn big_odds_change(event_id: &str, markets: u32, step: u32) -> Vec<u8> {
    let mut x = format!(r#"<odds_change product="1" event_id="{event_id}" timestamp="{step}"><odds>"#);
    for m in 1..=markets {
        x.push_str(&format!(r#"<market id="{m}" status="1">"#));
        for o in 1..=3u32 {
            let odds = 1.5 + 0.01 * f64::from((step + m + o) % 50);
            x.push_str(&format!(r#"<outcome id="{o}" odds="{odds:.2}" active="1"/>"#));
        }
        x.push_str("</market>");
    }
    x.push_str("</odds></odds_change>");
    x.into_bytes()
}
