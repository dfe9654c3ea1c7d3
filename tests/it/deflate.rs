//! `permessage-deflate` over a real socket, read and written by hand here
//! (tungstenite, the server's library, does not know the extension): the
//! offer is taken, a compressed request is answered, shared frames come
//! compressed and inflate to what they say, and a compressed bomb closes
//! the session with 1009 without being inflated whole; and the read
//! budget counts a compressed message as what it inflates to.

use std::io::Write as _;
use std::time::{Duration, Instant};

use flate2::write::DeflateEncoder;
use flate2::{Compression, Decompress, FlushDecompress};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::{DEADLINE, Server, sample_for};

const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// `plain` as a permessage-deflate payload (raw deflate, sync flush, its
/// tail left off).
fn deflate(plain: &[u8]) -> Vec<u8> {
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::default());
    enc.write_all(plain).expect("deflate");
    enc.flush().expect("sync flush");
    let mut out = std::mem::take(enc.get_mut());
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - 4);
    out
}

fn inflate(packed: &[u8]) -> Vec<u8> {
    let input = [packed, &TAIL].concat();
    let mut out = Vec::with_capacity(1 << 22);
    Decompress::new(false)
        .decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("the server's frame inflates");
    out
}

/// A client's frame: final, masked, RSV1 if `compressed`.
fn client_frame(opcode: u8, compressed: bool, payload: &[u8]) -> Vec<u8> {
    let key = [0x5a, 0x01, 0xc3, 0x7e];
    let mut f = vec![0x80 | u8::from(compressed) << 6 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => f.extend([0x80 | 126, (n >> 8) as u8, n as u8]),
        n => {
            f.push(0x80 | 127);
            f.extend((n as u64).to_be_bytes());
        }
    }
    f.extend(key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

struct Raw {
    tcp: TcpStream,
    buf: Vec<u8>,
}

/// A server frame: RSV1, opcode, payload.
type Frame = (bool, u8, Vec<u8>);

impl Raw {
    /// Upgrade offering what browsers offer; the server's answer's head.
    async fn connect(server: &Server) -> (Raw, String) {
        let mut tcp = TcpStream::connect(server.http).await.expect("connect");
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
            server.http
        );
        tcp.write_all(request.as_bytes()).await.expect("upgrade request");
        let mut raw = Raw { tcp, buf: Vec::new() };
        let end = loop {
            if let Some(i) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            raw.fill().await;
        };
        let head = String::from_utf8(raw.buf.drain(..end).collect()).expect("head");
        (raw, head)
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout(DEADLINE, self.tcp.read(&mut chunk))
            .await
            .expect("timed out reading")
            .expect("read");
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    async fn frame(&mut self) -> Frame {
        loop {
            if self.buf.len() >= 2 {
                let (b0, b1) = (self.buf[0], self.buf[1]);
                assert_eq!(b1 & 0x80, 0, "server frames are not masked");
                let (len, head) = match b1 & 0x7f {
                    126 if self.buf.len() >= 4 => (usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])), 4),
                    127 if self.buf.len() >= 10 => {
                        let len = u64::from_be_bytes(self.buf[2..10].try_into().expect("8 bytes"));
                        (usize::try_from(len).expect("len"), 10)
                    }
                    n @ 0..=125 => (usize::from(n), 2),
                    _ => (usize::MAX, 0),
                };
                if head > 0 && self.buf.len() >= head + len {
                    assert_ne!(b0 & 0x80, 0, "the server sends whole messages");
                    let payload = self.buf[head..head + len].to_vec();
                    self.buf.drain(..head + len);
                    return (b0 & 0x40 != 0, b0 & 0x0f, payload);
                }
            }
            self.fill().await;
        }
    }

    async fn send(&mut self, frame: &[u8]) {
        self.tcp.write_all(frame).await.expect("send");
    }
}

/// A text frame's JSON, inflated if it came compressed.
fn json_of((compressed, opcode, payload): &Frame) -> Value {
    assert_eq!(*opcode, 1, "a text frame");
    let text = if *compressed { inflate(payload) } else { payload.clone() };
    serde_json::from_slice(&text).expect("JSON")
}

/// A server that applied the sample odds change as `sr:match:1`, and its
/// feed connection.
fn fed_server() -> (Server, std::net::TcpStream) {
    let server = Server::start(&[]);
    let mut feed = server.feed();
    feed.write_all(&sample_for("uof/messages/odds_change.xml", "sr:match:1"))
        .expect("feed");
    server.wait_metric("touchline_events_applied_total", 1.0);
    (server, feed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_offers_deflate_gets_compressed_frames_and_a_bomb_is_refused() {
    let (server, mut feed) = fed_server();

    let (mut ws, head) = Raw::connect(&server).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains(
            "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
        ),
        "{head}"
    );

    // A compressed request is read as the JSON it inflates to.
    let subscribe = json!({"op": "subscribe", "matches": ["sr:match:1"]}).to_string();
    ws.send(&client_frame(1, true, &deflate(subscribe.as_bytes()))).await;
    let snapshot = loop {
        let frame = ws.frame().await;
        if json_of(&frame)["type"] == "snapshot" {
            break frame;
        }
    };
    let (compressed, _, packed) = &snapshot;
    assert!(compressed, "the snapshot comes compressed");
    let plain = inflate(packed);
    let v = json_of(&snapshot);
    assert_eq!(v["match"], "sr:match:1", "{v}");
    assert!(
        packed.len() * 3 < plain.len(),
        "compressed to {} of {} bytes",
        packed.len(),
        plain.len()
    );
    eprintln!("snapshot: {} bytes compressed, {} plain", packed.len(), plain.len());

    // A compressed update: the next event's frame.
    feed.write_all(&sample_for("uof/messages/odds_change_single_market.xml", "sr:match:1"))
        .expect("feed");
    let update = loop {
        let frame = ws.frame().await;
        if json_of(&frame)["type"] == "update" {
            break json_of(&frame);
        }
    };
    assert_eq!(update["seq"], v["seq"].as_u64().expect("seq") + 1, "{update}");

    // 10 MiB of zeros deflate to ~10 KiB: over the 64 KiB budget once
    // inflated, so the session closes with 1009.
    let bomb = deflate(&vec![b'0'; 10 << 20]);
    assert!(bomb.len() < 64 * 1024);
    ws.send(&client_frame(1, true, &bomb)).await;
    let close = loop {
        let frame = ws.frame().await;
        if frame.1 == 8 {
            break frame.2;
        }
    };
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1009);
    assert!(String::from_utf8_lossy(&close[2..]).starts_with("message too big"));
    server.wait_metric(r#"touchline_ws_client_errors_total{kind="too_big"}"#, 1.0);
}

/// A client whose few bytes inflate to much is held to the read budget
/// by what they inflate to: 8 compressed requests of ~60 bytes, 32 KiB
/// each once inflated, are all answered, none lost and the session kept,
/// but no sooner than the budget lets the server read 256 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_requests_are_read_within_the_read_budget_as_what_they_inflate_to() {
    let server = Server::start(&["--ws-read-bytes-per-sec", "65536", "--ws-read-burst-bytes", "65536"]);
    let (mut ws, head) = Raw::connect(&server).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // An unknown op, padded with JSON whitespace: one error frame each.
    let open = r#"{"op":"ping""#;
    let request = format!("{open}{}}}", " ".repeat(32 * 1024 - open.len() - 1));
    assert_eq!(request.len(), 32 * 1024);
    let frame = client_frame(1, true, &deflate(request.as_bytes()));
    assert!(frame.len() < 200, "{} bytes on the wire", frame.len());
    let start = Instant::now();
    for _ in 0..8 {
        ws.send(&frame).await;
    }
    for i in 0..8 {
        let answer = json_of(&ws.frame().await);
        assert_eq!(answer["type"], "error", "answer {i}: {answer}");
        assert!(
            answer["reason"].as_str().is_some_and(|r| r.contains("ping")),
            "{answer}"
        );
    }
    // All 256 KiB read: 64 KiB at once, the rest at 64 KiB/s, the last read
    // (4 KiB at most) past the budget. Counted on the ~1.5 KB that came
    // over the wire, all of it would be read at once.
    let took = start.elapsed();
    let least = Duration::from_secs_f64((256.0 - 64.0 - 4.0) / 64.0);
    assert!(took >= least, "256 KiB read in {took:?}, under the budget's {least:?}");
    assert!(server.metric("touchline_ws_read_throttled_total") >= 1.0);
    eprintln!("8 compressed requests of 32 KiB answered in {took:?}");
}

/// The python the tests run `clients/websockets_client.py` with:
/// `$TOUCHLINE_PYTHON`, or the venv `make pyws` installs.
fn python() -> std::path::PathBuf {
    let path = std::env::var_os("TOUCHLINE_PYTHON").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/py/bin/python"),
        std::path::PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} not found: install it with `make pyws`, or set TOUCHLINE_PYTHON",
        path.display()
    );
    path
}

/// Another implementation than this test's: Python's `websockets` offers
/// the extension, checks the answer strictly, inflates what comes and
/// compresses what it sends. Its snapshot is the one a client without the
/// extension gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pythons_websockets_negotiates_deflate_and_reads_the_same_snapshot() {
    let (server, _feed) = fed_server();

    let mut plain = crate::support::Ws::connect(server.http).await;
    plain.send(json!({"op": "subscribe", "matches": ["sr:match:1"]})).await;
    let snapshot = plain.next_matching(|f| f["type"] == "snapshot").await;
    // As the library offers it, then asking for the server's window too.
    for (extra, answer) in [
        (
            None,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (
            Some("window"),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15",
        ),
    ] {
        let seen = python_client(&server, "sr:match:1", extra).await;
        assert_eq!(seen["extensions"], answer);
        assert_eq!(seen["snapshot"], snapshot);
    }
}

/// What `clients/websockets_client.py` saw of `id` on `server`.
async fn python_client(server: &Server, id: &str, extra: Option<&str>) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/it/clients/websockets_client.py");
    let out = tokio::process::Command::new(python())
        .arg(&script)
        .arg(format!("ws://{}/ws", server.http))
        .arg(id)
        .args(extra)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(DEADLINE, out)
        .await
        .expect("the Python client finishes")
        .expect("running the Python client");
    assert!(
        out.status.success(),
        "the Python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}
