//! The hot-swap scenario: 10,000 matches (100 fed, 1,000 clients
//! watching) switched to the v2 guest and back while the feed runs: the
//! update latency before, during and after each, the switch times the
//! server reports, and the server's CPU time each took, by thread (the
//! sizes here are the full run's: `sizes.rs` has the quick run's).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use touchline_testkit::procfs;

use crate::fanout::{open_matches, watch_and_feed};
use crate::scenarios::{Servers, latency_json, stop_server};
use crate::sizes::Sizes;

/// Update latency before, during and after a hot swap to v2 and a rollback
/// to v1, with the fan-out load running; the server's rollout reports give
/// compile, canary and per-match switch times.
pub(crate) async fn swap_run(
    servers: &Servers,
    dir: &Path,
    sizes: &Sizes,
    fed: &[String],
    seed: u64,
) -> anyhow::Result<Value> {
    let v2 = std::fs::read(servers.built_guest("touchline_guest_v2.wasm")?)?;
    let token = "bench-admin-token-0123456789".to_owned();
    let flags = vec![
        "--admin-token".to_owned(),
        token.clone(),
        "--max-matches".into(),
        (sizes.swap_matches + 500).to_string(),
    ];
    let server = servers.start(dir, &flags)?;
    open_matches(&server, fed)?;
    let idle: Vec<String> = (0..sizes.swap_matches.saturating_sub(fed.len() as u32))
        .map(|i| format!("sr:match:{}", 900_000 + i))
        .collect();
    for chunk in idle.chunks(2000) {
        open_matches(&server, chunk)?;
    }
    let (c, stop, feeder) = watch_and_feed(&server, sizes, sizes.swap_clients, fed, &[], None, seed).await?;
    let window = Duration::from_secs_f64(sizes.swap_window);
    let pid = server.pid();
    let calm = Cpu::start(pid);
    tokio::time::sleep(window).await; // phase 0: the measurement window before
    let calm = calm.stop();
    c.phase.store(1, Ordering::Relaxed);
    let started = Instant::now();
    let cpu = Cpu::start(pid);
    let (status, install) = admin_post(server.http, &token, "/admin/guest", v2).await?;
    let install_cpu = cpu.stop();
    let install_wall = started.elapsed().as_secs_f64();
    anyhow::ensure!((200..300).contains(&status), "install: {status} {install}");
    c.phase.store(2, Ordering::Relaxed);
    tokio::time::sleep(window).await; // phase 2: on v2
    c.phase.store(3, Ordering::Relaxed);
    let started = Instant::now();
    let cpu = Cpu::start(pid);
    let (status, rollback) = admin_post(server.http, &token, "/admin/guest/rollback", Vec::new()).await?;
    let rollback_cpu = cpu.stop();
    let rollback_wall = started.elapsed().as_secs_f64();
    anyhow::ensure!((200..300).contains(&status), "rollback: {status} {rollback}");
    c.phase.store(2, Ordering::Relaxed);
    tokio::time::sleep(window / 2).await; // more of phase 2, back on v1
    stop.store(true, Ordering::Relaxed);
    feeder.join().map_err(|_| anyhow::anyhow!("feeder panicked"))??;
    let m = server.metrics()?;
    tokio::time::sleep(Duration::from_millis(500)).await; // grace period for in-flight frames
    let stats = c.finish().await;
    stop_server(server)?;
    let install: Value = serde_json::from_str(&install)?;
    let rollback: Value = serde_json::from_str(&rollback)?;
    let phase = |i: usize| latency_json(&stats.by_phase[i]);
    let p99 = |i: usize| stats.by_phase[i].value_at_quantile(0.99) as f64;
    Ok(json!({
        "matches": sizes.swap_matches,
        "fed_matches": fed.len(),
        "clients": stats.clients,
        "feed_rate": sizes.fanout_rate,
        "install": install,
        "install_wall_s": install_wall,
        "rollback": rollback,
        "rollback_wall_s": rollback_wall,
        "server_cpu_s": {
            "what": "the server's CPU time while each admin request ran (install: compile, canary, switches, probation wait; rollback: switches): cpu_s in all (/proc/PID/stat, 10 ms ticks, threads that ended in the window included), by_thread_cpu_s by thread name (schedstat, ns, subtracted thread by thread; the runtime's workers and its blocking pool are both tokio-rt-worker); calm_per_s: CPU-seconds per second in the window before, what serving alone costs",
            "calm_per_s": calm.per_s(),
            "install": install_cpu.json(),
            "rollback": rollback_cpu.json(),
        },
        "switch_seconds": {
            "p50": m.quantile("touchline_match_switch_seconds", 0.5),
            "p99": m.quantile("touchline_match_switch_seconds", 0.99),
            "count": m.value("touchline_match_switch_seconds_count"),
        },
        "latency_us": {
            "before": phase(0),
            "during_install": phase(1),
            "steady_after": phase(2),
            "during_rollback": phase(3),
        },
        "p99_ratio_during_install_over_before": p99(1) / p99(0).max(1.0),
        "p99_ratio_during_rollback_over_before": p99(3) / p99(0).max(1.0),
        "seq_gaps": stats.gaps,
        "sessions_closed": stats.closed,
        "resnapshots": stats.resnapshots,
        "updates_skipped_by_resnapshot": stats.skipped,
        "deliveries": stats.deliveries,
    }))
}

/// The server's CPU time over a window: in all and by thread.
struct Cpu {
    pid: u32,
    started: Instant,
    total: f64,
    threads: BTreeMap<u32, (String, f64)>,
}

/// What a [`Cpu`] window measured.
struct CpuSpent {
    seconds: f64,
    total: f64,
    threads: BTreeMap<String, f64>,
}

impl Cpu {
    fn start(pid: u32) -> Cpu {
        Cpu {
            pid,
            started: Instant::now(),
            total: procfs::cpu_seconds(pid),
            threads: procfs::cpu_by_thread(pid),
        }
    }

    fn stop(self) -> CpuSpent {
        let mut threads = procfs::cpu_by_thread_since(&self.threads, &procfs::cpu_by_thread(self.pid));
        threads.retain(|_, s| *s >= 0.0005);
        CpuSpent {
            seconds: self.started.elapsed().as_secs_f64(),
            total: procfs::cpu_seconds(self.pid) - self.total,
            threads,
        }
    }
}

impl CpuSpent {
    fn json(&self) -> Value {
        json!({ "cpu_s": self.total, "by_thread_cpu_s": self.threads })
    }

    /// CPU-seconds per second of the window.
    fn per_s(&self) -> Value {
        let per = |x: f64| x / self.seconds.max(1e-9);
        let threads: BTreeMap<&String, f64> = self.threads.iter().map(|(k, v)| (k, per(*v))).collect();
        json!({ "cpu": per(self.total), "by_thread": threads })
    }
}

/// Bound on one admin request: an install compiles, canaries and rolls out
/// to every match before it answers.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(600);

/// `POST path` to the admin API: (status, body). The blocking client runs
/// off the runtime's threads, so the clients keep reading meanwhile.
async fn admin_post(http: SocketAddr, token: &str, path: &'static str, body: Vec<u8>) -> anyhow::Result<(u16, String)> {
    let auth = format!("Bearer {token}");
    let answer = tokio::task::spawn_blocking(move || {
        let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/wasm")];
        touchline_testkit::http::request(http, "POST", path, &headers, &body, ADMIN_TIMEOUT)
    })
    .await
    .context("admin request task")??;
    Ok(answer)
}
