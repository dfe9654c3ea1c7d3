//! The names scenario: what names beside ids cost, and that a fixture
//! endpoint that is down or slow holds no update back.
//!
//! Four servers, one after the other, each fed by its own fresh
//! `touchline simulate` (200 matches, 200 messages/s, paced: timestamps
//! are wall-clock ms) that is also its provider's API: names on (fixtures
//! answered), `--no-names`, names on with the fixture endpoint down (503),
//! and with it slow (2 s a fixture). Clients follow every match. Measured
//! per server: snapshot and update frame bytes (mean), the share of
//! updates carrying names, and update latency from the message's feed
//! timestamp to its arrival at a client (ms resolution, so p50 reads as
//! "under a few ms"; the comparison between servers is the point).

use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use touchline_testkit::sim::SimProcess;

use crate::load::{self, now_us};
use crate::producers::{match_ids, wait_producers};
use crate::scenarios::{Servers, latency_json, progress, stop_server};

const MATCHES: usize = 200;
const PER_CLIENT: usize = 20;

/// The servers compared: name, extra flags, fixture endpoint mode.
const VARIANTS: [(&str, &[&str], &str); 4] = [
    ("names", &[], "up"),
    ("no_names", &["--no-names"], "up"),
    ("fixtures_down", &[], "down"),
    ("fixtures_slow", &[], "slow&ms=2000"),
];

/// What one client counted.
#[derive(Default)]
struct Counts {
    snapshot_bytes: u64,
    snapshots: u64,
    snapshots_named: u64,
    update_bytes: u64,
    updates: u64,
    updates_named: u64,
    names_frames: u64,
}

pub async fn names_run(servers: &Servers, dir: &Path, quick: bool) -> anyhow::Result<Value> {
    let seconds = if quick { 5 } else { 15 };
    let mut out = serde_json::Map::new();
    for (name, flags, mode) in VARIANTS {
        progress(&format!("names: {name} ({MATCHES} matches, {seconds} s)"));
        out.insert(
            name.to_owned(),
            variant(servers, &dir.join(name), flags, mode, seconds).await?,
        );
    }
    Ok(Value::Object(out))
}

async fn variant(servers: &Servers, dir: &Path, flags: &[&str], mode: &str, seconds: u64) -> anyhow::Result<Value> {
    std::fs::create_dir_all(dir)?;
    let sim = SimProcess::start(
        &servers.exe,
        &["--matches", &MATCHES.to_string(), "--rate", "200"],
        &dir.join("sim.log"),
    )?;
    let (code, body) = sim.control(&format!("/control/fixtures?mode={mode}"))?;
    anyhow::ensure!(code == 200, "fixture mode: {code} {body}");
    let mut extra: Vec<String> = [
        "--feed-connect",
        &sim.feed.to_string(),
        "--api-url",
        &sim.api_url(),
        "--recovery-min-interval",
        "1",
    ]
    .map(str::to_owned)
    .into();
    extra.extend(flags.iter().map(|f| (*f).to_owned()));
    let server = servers.launch(&dir.join("server"), &extra).start()?;
    wait_producers(server.http, |p| p["state"] == "up").await?;
    let ids = match_ids(server.http, MATCHES).await?;
    let mut tasks = Vec::new();
    for chunk in ids.chunks(PER_CLIENT) {
        tasks.push(tokio::spawn(client(server.http, chunk.to_vec(), seconds)));
    }
    let mut total = Counts::default();
    let mut latency = load::histogram();
    for t in tasks {
        let (c, h) = t.await??;
        total.snapshot_bytes += c.snapshot_bytes;
        total.snapshots += c.snapshots;
        total.snapshots_named += c.snapshots_named;
        total.update_bytes += c.update_bytes;
        total.updates += c.updates;
        total.updates_named += c.updates_named;
        total.names_frames += c.names_frames;
        latency.add(&h)?;
    }
    let (_, metrics) = touchline_testkit::http::get(server.http, "/metrics", Duration::from_secs(10))?;
    let fixtures: Vec<String> = metrics
        .lines()
        .filter(|l| l.starts_with("touchline_fixtures_total"))
        .map(str::to_owned)
        .collect();
    stop_server(server)?;
    let mean = |bytes: u64, n: u64| if n == 0 { 0.0 } else { bytes as f64 / n as f64 };
    Ok(json!({
        "snapshots": total.snapshots,
        "snapshots_with_event_names": total.snapshots_named,
        "snapshot_bytes_mean": mean(total.snapshot_bytes, total.snapshots),
        "updates": total.updates,
        "updates_with_names": total.updates_named,
        "update_bytes_mean": mean(total.update_bytes, total.updates),
        "names_frames": total.names_frames,
        "update_latency_ms": latency_json(&latency),
        "fixtures": fixtures,
    }))
}

/// Follow `ids` for `seconds`: frame sizes, and each update's latency in
/// ms (arrival minus its feed timestamp).
async fn client(
    http: std::net::SocketAddr,
    ids: Vec<String>,
    seconds: u64,
) -> anyhow::Result<(Counts, hdrhistogram::Histogram<u64>)> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws")).await?;
    ws.send(Message::Text(
        json!({"op": "subscribe", "matches": ids}).to_string().into(),
    ))
    .await?;
    let mut c = Counts::default();
    let mut latency = load::histogram();
    let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let msg = tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            m = ws.next() => m,
        };
        let Some(Ok(Message::Text(t))) = msg else {
            anyhow::ensure!(!matches!(msg, None | Some(Err(_))), "connection lost");
            continue;
        };
        let now_ms = now_us() / 1000;
        let f: Value = serde_json::from_str(&t)?;
        let bytes = t.len() as u64;
        match f["type"].as_str() {
            Some("snapshot") => {
                c.snapshots += 1;
                c.snapshot_bytes += bytes;
                c.snapshots_named += u64::from(f["names"]["event"].is_string());
            }
            Some("update") => {
                c.updates += 1;
                c.update_bytes += bytes;
                c.updates_named += u64::from(f.get("names").is_some());
                if let Some(ts) = f["delta"]["timestamp"].as_i64() {
                    let _ = latency.record((now_ms - ts).max(1) as u64);
                }
            }
            Some("names") => c.names_frames += 1,
            _ => {}
        }
    }
    let _ = ws.close(None).await;
    Ok((c, latency))
}
