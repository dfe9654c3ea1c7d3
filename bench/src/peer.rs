//! The Node.js peer (`bench/peers/node-ws/server.js`, `ws` + `saxes`): the
//! same fan-out job as Touchline done the plain Node way, driven by the same
//! feeder and clients in the same run ([`crate::fanout::measure`]), so every
//! fan-out figure has its peer beside it, and [`versus`] turns the pair into
//! ratios against the targets of issue 14.
//!
//! The peer is a child process like `touchline serve`: ephemeral loopback
//! ports learnt from the same READY line ([`touchline::Ready`]), stderr to a
//! log file, SIGTERM to stop, killed on drop. It needs `node` (20) on the
//! PATH and its packages installed (`npm ci`, which `make bench` runs); this
//! module only checks they are there.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::fanout::{self, Target};
use crate::scenarios::{Sizes, progress};

/// The peer's directory: `server.js`, `package.json`, the lockfile.
const PEER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/node-ws");

/// Its name in the JSON and the table.
pub(crate) const NAME: &str = "node-ws";

/// Issue 14: Touchline's deliveries per server CPU-second at least this
/// many times the peer's.
const DELIVERIES_PER_CPU_TARGET: f64 = 2.0;

/// Issue 14: Touchline's RSS per connected client at most this (16 KiB).
const RSS_PER_CLIENT_TARGET: f64 = 16.0 * 1024.0;

/// A running `node server.js`, killed on drop.
pub(crate) struct NodePeer {
    child: Child,
    http: SocketAddr,
    feed: SocketAddr,
}

/// Fail early, before any scenario runs, if the peer cannot start.
pub(crate) fn check() -> anyhow::Result<()> {
    let dir = Path::new(PEER_DIR);
    let out = Command::new("node")
        .arg("--version")
        .output()
        .context("running `node --version`: the fan-out scenario needs Node.js 20 on the PATH")?;
    anyhow::ensure!(out.status.success(), "`node --version` failed");
    for package in ["ws", "saxes"] {
        anyhow::ensure!(
            dir.join("node_modules").join(package).is_dir(),
            "the Node peer's packages are not installed: run `npm ci --prefix bench/peers/node-ws` \
             (`make bench` does)"
        );
    }
    Ok(())
}

impl NodePeer {
    /// Start the peer on ephemeral loopback ports, its stderr to `log`, and
    /// wait for its READY line.
    pub(crate) fn start(log: &Path, deflate: bool) -> anyhow::Result<NodePeer> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let stderr = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let script = PathBuf::from(PEER_DIR).join("server.js");
        let mut child = Command::new("node")
            .arg(&script)
            .args(["--http", "127.0.0.1:0", "--feed", "127.0.0.1:0"])
            .args(deflate.then_some("--deflate"))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .with_context(|| format!("starting node {}", script.display()))?;
        let stdout = child.stdout.take().context("the peer's stdout is piped")?;
        let started = Instant::now();
        let ready = touchline::Ready::wait(stdout);
        let Some((http, Some(feed))) = ready.map(|r| (r.http, r.feed)) else {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "the Node peer exited before its READY line (after {:?}); its log is {}",
                started.elapsed(),
                log.display()
            );
        };
        Ok(NodePeer { child, http, feed })
    }

    /// SIGTERM and wait for it to exit (it closes its sessions with 1001).
    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        // `kill(1)`, as testkit does: std has no SIGTERM and unsafe is denied.
        let sent = Command::new("kill").args(["-TERM", &pid]).status()?;
        anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            anyhow::ensure!(Instant::now() < deadline, "the Node peer ignored SIGTERM for 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Drop for NodePeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Target for NodePeer {
    fn http(&self) -> SocketAddr {
        self.http
    }

    fn feed(&self) -> SocketAddr {
        self.feed
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn events_applied(&self) -> anyhow::Result<f64> {
        let (status, text) = touchline_testkit::http::get(self.http, "/metrics", Duration::from_secs(30))?;
        anyhow::ensure!(status == 200, "the Node peer's /metrics answered {status}");
        Ok(touchline_testkit::metrics::value(&text, "peer_events_applied_total"))
    }
}

/// The peer under the same fan-out load as Touchline's run for `clients`.
pub(crate) async fn fanout(
    scratch: &Path,
    sizes: &Sizes,
    clients: usize,
    ids: &[String],
    seed: u64,
) -> anyhow::Result<(Value, Histogram<u64>)> {
    let deflate = if sizes.deflate { ", permessage-deflate" } else { "" };
    progress(&format!("fan-out: {clients} clients, Node peer ({NAME}){deflate}"));
    let peer = NodePeer::start(&scratch.join(format!("{NAME}-{clients}{deflate}.log")), sizes.deflate)?;
    let (result, latency) = fanout::measure(&peer, sizes, clients, ids, &[], None, seed).await?;
    peer.stop()?;
    Ok((result, latency))
}

/// Touchline's fan-out result beside the peer's: each figure for both, the
/// ratios and each target with its measured value.
pub(crate) fn versus(touchline: &Value, peer: &Value) -> Value {
    let both = |key: &str| json!({"touchline": touchline[key], NAME: peer[key]});
    let per_cpu = |r: &Value| r["deliveries_per_server_cpu_s"].as_f64();
    let ratio = per_cpu(touchline).zip(per_cpu(peer)).map(|(t, p)| t / p);
    // Per connected client: RSS after every client subscribed and got its
    // snapshots, before the feed starts, over the clients. The figure
    // under load also holds what grows with the feed whatever the
    // clients (the store's cache, frames in flight), so it is shown beside.
    let rss_per_client = touchline["rss_per_idle_client_bytes"].as_f64();
    let bytes = |r: &Value| r["bytes_per_delivery"].as_f64();
    // The kernel's share: both servers make one socket write per delivery
    // to the same clients, and on loopback the sender's system time also
    // carries the receiving side's TCP work. Were Touchline's user time
    // zero, its ratio would be at most the peer's whole CPU per delivery
    // over Touchline's system time alone.
    let us = |r: &Value, k: &str| r[k].as_f64();
    let peer_us = us(peer, "server_user_us_per_delivery").zip(us(peer, "server_system_us_per_delivery"));
    let ceiling = peer_us
        .zip(us(touchline, "server_system_us_per_delivery"))
        .map(|((u, s), t)| (u + s) / t);
    json!({
        "deliveries_per_server_cpu_s": {
            "touchline": touchline["deliveries_per_server_cpu_s"],
            NAME: peer["deliveries_per_server_cpu_s"],
            "touchline_over_peer": ratio,
            "target": format!(">= {DELIVERIES_PER_CPU_TARGET}"),
            "met": ratio.map(|r| r >= DELIVERIES_PER_CPU_TARGET),
            "ceiling_with_no_user_time": ceiling,
        },
        "server_user_us_per_delivery": both("server_user_us_per_delivery"),
        "server_system_us_per_delivery": both("server_system_us_per_delivery"),
        "rss_per_client_bytes": both("rss_per_client_bytes"),
        "rss_per_connected_client_bytes": {
            "touchline": touchline["rss_per_idle_client_bytes"],
            NAME: peer["rss_per_idle_client_bytes"],
            "target": format!("<= {RSS_PER_CLIENT_TARGET} (Touchline)"),
            "met": rss_per_client.map(|b| b <= RSS_PER_CLIENT_TARGET),
        },
        // The same frames, so this is the same number give or take how
        // each language writes a float (`2.0` against `2`).
        "bytes_per_delivery": {
            "touchline": touchline["bytes_per_delivery"],
            NAME: peer["bytes_per_delivery"],
            "touchline_over_peer": bytes(touchline).zip(bytes(peer)).map(|(t, p)| t / p),
        },
        "delivered_bytes_per_s": both("delivered_bytes_per_s"),
        "rss_per_idle_client_bytes": both("rss_per_idle_client_bytes"),
        "server_cpu_s_per_100k_deliveries": both("server_cpu_s_per_100k_deliveries"),
        "feed_messages": both("feed_messages"),
        "deliveries": both("deliveries"),
        "latency_p50_us": json!({"touchline": touchline["latency_us"]["p50"], NAME: peer["latency_us"]["p50"]}),
        "latency_p99_us": json!({"touchline": touchline["latency_us"]["p99"], NAME: peer["latency_us"]["p99"]}),
        "resnapshots": both("resnapshots"),
        "server_rss_peak_bytes": both("server_rss_peak_bytes"),
        "generator_cpu_percent": both("generator_cpu_percent"),
    })
}
