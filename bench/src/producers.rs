//! The producer scenario: a server fed by `touchline simulate` (1,000
//! matches) that is also its provider, and WebSocket clients covering every
//! match. Measured: how long a full recovery of 1,000 matches takes at
//! start-up (request to `snapshot_complete`, and server start to every
//! producer up), and after the live producer drops the subscription how
//! long until every affected subscriber is told (`producer_down`), and
//! until it is recovered and every one told again (`producer_up`).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use touchline_testkit::sim::SimProcess;

use crate::load::{self, now_us};
use crate::scenarios::{Servers, latency_json, progress, stop_server};

/// Matches of the simulator, and clients (each follows `PER_CLIENT` of them).
const MATCHES: usize = 1000;
const PER_CLIENT: usize = 10;
const WAIT: Duration = Duration::from_secs(120);

/// What one client saw: per match, when it was told producer 1 went down
/// and came back (µs since the epoch), and which of its matches had heard
/// from producer 1 when it subscribed.
#[derive(Default)]
struct Seen {
    down: HashMap<String, i64>,
    up: HashMap<String, i64>,
    of_lo: usize,
}

pub async fn producers_run(servers: &Servers, dir: &Path, quick: bool) -> anyhow::Result<Value> {
    std::fs::create_dir_all(dir)?;
    let matches = if quick { 200 } else { MATCHES };
    let sim = SimProcess::start(
        &servers.exe,
        &["--matches", &matches.to_string(), "--rate", "200"],
        &dir.join("sim.log"),
    )?;
    let started = Instant::now();
    let extra = [
        "--feed-connect".to_owned(),
        sim.feed.to_string(),
        "--recovery-url".to_owned(),
        sim.api_url(),
        "--recovery-min-interval".to_owned(),
        "1".to_owned(),
    ];
    let server = servers.launch(&dir.join("server"), &extra).start()?;
    wait_producers(server.http, |p| p["state"] == "up").await?;
    let startup_up_s = started.elapsed().as_secs_f64();
    let startup = producers(server.http)?;

    // Clients covering every match, each with its snapshots.
    let ids = match_ids(server.http, matches).await?;
    progress(&format!(
        "producers: {} clients over {} matches",
        ids.len().div_ceil(PER_CLIENT),
        ids.len()
    ));
    let (go, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut tasks = Vec::new();
    let mut ready = Vec::new();
    for chunk in ids.chunks(PER_CLIENT) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        ready.push(rx);
        tasks.push(tokio::spawn(client(server.http, chunk.to_vec(), tx, go.subscribe())));
    }
    for r in ready {
        r.await?;
    }
    // The trigger: the live producer drops the subscription.
    let t0 = now_us();
    let (code, body) = sim.control("/control/fault?kind=unsubscribed&product=1")?;
    anyhow::ensure!(code == 200, "fault: {code} {body}");
    wait_producers(server.http, |p| p["id"] != 1 || p["state"] != "up").await?;
    wait_producers(server.http, |p| p["state"] == "up").await?;
    let after = producers(server.http)?;
    let _ = go.send(());
    let mut told_down = load::histogram();
    let mut told_up = load::histogram();
    let (mut expected, mut down_n, mut up_n) = (0, 0, 0);
    for t in tasks {
        let seen = t.await??;
        expected += seen.of_lo;
        down_n += seen.down.len();
        up_n += seen.up.len();
        for at in seen.down.values() {
            let _ = told_down.record((at - t0).max(1) as u64);
        }
        for at in seen.up.values() {
            let _ = told_up.record((at - t0).max(1) as u64);
        }
    }
    let lo = |v: &Value| v.as_array().and_then(|a| a.iter().find(|p| p["id"] == 1)).cloned();
    let result = json!({
        "matches": ids.len(),
        "startup": {
            "server_start_to_all_up_s": startup_up_s,
            "request_to_complete_s": startup.as_array().map(|a| a.iter().map(|p| json!({"producer": p["name"], "s": p["last_recovery_seconds"]})).collect::<Vec<_>>()),
        },
        "unsubscribed": {
            "subscribers_expected": expected,
            "told_down": down_n,
            "told_up": up_n,
            "trigger_to_told_down_us": latency_json(&told_down),
            "trigger_to_told_up_us": latency_json(&told_up),
            "recovery_request_to_complete_s": lo(&after).map(|p| p["last_recovery_seconds"].clone()),
        },
    });
    stop_server(server)?;
    Ok(result)
}

/// The producers as the server lists them.
fn producers(http: std::net::SocketAddr) -> anyhow::Result<Value> {
    let (code, body) = touchline_testkit::http::get(http, "/api/producers", Duration::from_secs(10))?;
    anyhow::ensure!(code == 200, "/api/producers: {code}");
    Ok(serde_json::from_str(&body)?)
}

/// Wait until every producer satisfies `pred`.
pub(crate) async fn wait_producers(http: std::net::SocketAddr, pred: impl Fn(&Value) -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let list = producers(http)?;
        if list.as_array().is_some_and(|a| a.iter().all(&pred)) {
            return Ok(());
        }
        anyhow::ensure!(start.elapsed() < WAIT, "producers never as expected: {list}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The ids of the first `n` matches the server announces.
pub(crate) async fn match_ids(http: std::net::SocketAddr, n: usize) -> anyhow::Result<Vec<String>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws")).await?;
    ws.send(Message::Text(
        json!({"op": "subscribe", "matches": ["*"]}).to_string().into(),
    ))
    .await?;
    let mut ids = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while ids.len() < n {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("only {} of {n} matches announced", ids.len()))?;
        let Some(Ok(Message::Text(t))) = msg else { continue };
        let f: Value = serde_json::from_str(&t)?;
        if f["type"] == "snapshot"
            && let Some(id) = f["match"].as_str()
        {
            ids.insert(id.to_owned());
        }
    }
    let _ = ws.close(None).await;
    Ok(ids.into_iter().collect())
}

/// Follow `ids`; once every snapshot is in, say so on `ready`; note when
/// each match is told producer 1 is down and back, until `go`.
async fn client(
    http: std::net::SocketAddr,
    ids: Vec<String>,
    ready: tokio::sync::oneshot::Sender<()>,
    mut go: tokio::sync::broadcast::Receiver<()>,
) -> anyhow::Result<Seen> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws")).await?;
    ws.send(Message::Text(
        json!({"op": "subscribe", "matches": ids}).to_string().into(),
    ))
    .await?;
    let mut seen = Seen::default();
    let mut snapshots = 0;
    let mut ready = Some(ready);
    // After `go` (every producer up), read on until each match told down
    // was told up, for at most a few seconds.
    let mut until: Option<tokio::time::Instant> = None;
    loop {
        if until.is_some() && seen.up.len() >= seen.down.len() {
            break;
        }
        let msg = tokio::select! {
            _ = go.recv(), if until.is_none() => {
                until = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                continue;
            }
            _ = sleep_until(until) => break,
            m = ws.next() => m,
        };
        let Some(Ok(Message::Text(t))) = msg else {
            anyhow::ensure!(!matches!(msg, None | Some(Err(_))), "connection lost");
            continue;
        };
        let at = now_us();
        // Updates are most frames: look only at the others in full.
        if t.as_str().starts_with("{\"type\":\"update\"") {
            continue;
        }
        let f: Value = serde_json::from_str(&t)?;
        let id = f["match"].as_str().unwrap_or_default().to_owned();
        match f["type"].as_str() {
            Some("snapshot") => {
                snapshots += 1;
                let lo = f["state"]["markets"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|m| m["product"] == 1));
                seen.of_lo += usize::from(lo);
                if snapshots == ids.len()
                    && let Some(r) = ready.take()
                {
                    let _ = r.send(());
                }
            }
            Some("status") if f["product"] == 1 => {
                if f["status"] == "producer_down" {
                    seen.down.entry(id).or_insert(at);
                } else if f["status"] == "producer_up" {
                    seen.up.entry(id).or_insert(at);
                }
            }
            _ => {}
        }
    }
    let _ = ws.close(None).await;
    Ok(seen)
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
