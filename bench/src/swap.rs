//! The hot-swap scenario: 10,000 matches (100 fed, 1,000 clients
//! watching) switched to the v2 guest and back, eight times, while the
//! feed runs: the update latency before, during and after each (pooled
//! over the cycles, and each cycle's p99), the switch times the server
//! reports, and the server's CPU time each took, by thread (the sizes here
//! are the full run's: `sizes.rs` has the quick run's); and its section
//! of the table.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use touchline_testkit::procfs;

use crate::fanout::{open_matches, watch_and_feed};
use crate::load::{PHASES, UNRECORDED};
use crate::scenarios::{Servers, latency_json, stop_server};
use crate::sizes::Sizes;

/// Update latency before, during and after hot swaps to v2 and rollbacks
/// to v1 (`swap_cycles` of each: one rollback's window of ~0.3 s holds
/// ~60 events, each to ~50 clients at once, too few for a steady p99),
/// with the fan-out load running; the server's rollout reports give
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
        // The idle matches asleep before anything is measured, as most of
        // a server's would be, rather than falling asleep (30 s by
        // default) in the middle of a cycle.
        "--hibernate-after-ms".into(),
        HIBERNATE_AFTER_MS.to_string(),
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
    // Warm-up, not measured: the clients' snapshots, the idle matches'
    // naps and then their hibernation (the window before read ~2x the
    // p99 of the calm windows later while they were in it).
    c.phase.store(UNRECORDED, Ordering::Relaxed);
    // The gauge counts every sleeping match, a quiet fed one too: what it
    // read is kept beside the idle count.
    let asleep = idle.len() as f64;
    let asleep_at_start =
        tokio::task::block_in_place(|| server.wait_metric("touchline_hibernated_matches", asleep, WARM_UP_TIMEOUT))
            .context("swap: the idle matches did not all hibernate")?;
    c.phase.store(0, Ordering::Relaxed);
    let window = Duration::from_secs_f64(sizes.swap_window);
    let pid = server.pid();
    let calm = Cpu::start(pid);
    tokio::time::sleep(window).await; // phase 0: the measurement window before
    let calm = calm.stop();
    let mut cycles = Vec::new();
    anyhow::ensure!(
        (1..=MAX_CYCLES).contains(&sizes.swap_cycles),
        "swap: {} cycles, 1 to {MAX_CYCLES} fit the clients' latency phases",
        sizes.swap_cycles
    );
    for k in 0..sizes.swap_cycles {
        c.phase.store(install_phase(k), Ordering::Relaxed);
        let install = admin(&server, &token, "/admin/guest", v2.clone(), "install").await?;
        c.phase.store(STEADY, Ordering::Relaxed);
        tokio::time::sleep(window / 2).await; // on v2
        c.phase.store(rollback_phase(k), Ordering::Relaxed);
        let rollback = admin(&server, &token, "/admin/guest/rollback", Vec::new(), "rollback").await?;
        c.phase.store(STEADY, Ordering::Relaxed);
        tokio::time::sleep(window / 2).await; // back on v1
        cycles.push((install, rollback));
    }
    // Not a latency phase: what the rollouts left to the sleepers.
    c.phase.store(UNRECORDED, Ordering::Relaxed);
    let wakes = wake_costs(&server, &token, v2, &idle).await?;
    stop.store(true, Ordering::Relaxed);
    feeder.join().map_err(|_| anyhow::anyhow!("feeder panicked"))??;
    let m = server.metrics()?;
    tokio::time::sleep(Duration::from_millis(500)).await; // grace period for in-flight frames
    let stats = c.finish().await;
    stop_server(server)?;
    let (first_install, first_rollback) = cycles.first().context("no swap cycle ran")?;
    let h = &stats.by_phase;
    let p99 = |h: &Histogram<u64>| h.value_at_quantile(0.99) as f64;
    let before = p99(&h[0]).max(1.0);
    let n = cycles.len();
    let pooled = |phase: fn(usize) -> usize| {
        let mut all = h[phase(0)].clone();
        for k in 1..n {
            let _ = all.add(&h[phase(k)]);
        }
        all
    };
    let (during_install, during_rollback) = (pooled(install_phase), pooled(rollback_phase));
    let by_cycle: Vec<Value> = cycles
        .iter()
        .enumerate()
        .map(|(k, (i, r))| {
            json!({
                "install": i.summary(),
                "rollback": r.summary(),
                "p99_install_us": p99(&h[install_phase(k)]),
                "p99_rollback_us": p99(&h[rollback_phase(k)]),
                "p99_ratio_install_over_before": p99(&h[install_phase(k)]) / before,
                "p99_ratio_rollback_over_before": p99(&h[rollback_phase(k)]) / before,
            })
        })
        .collect();
    Ok(json!({
        "matches": sizes.swap_matches,
        "fed_matches": fed.len(),
        "clients": stats.clients,
        "feed_rate": sizes.fanout_rate,
        "cycles": n,
        "idle_matches": idle.len(),
        "hibernated_at_start": asleep_at_start,
        "install": first_install.report,
        "install_wall_s": first_install.wall_s,
        "rollback": first_rollback.report,
        "rollback_wall_s": first_rollback.wall_s,
        "by_cycle": by_cycle,
        "server_cpu_s": {
            "what": "the server's CPU time while each admin request of the first cycle ran (install: compile, canary, switches, probation wait; rollback: switches; by_cycle has every cycle's cpu_s): cpu_s in all (/proc/PID/stat, 10 ms ticks, threads that ended in the window included), by_thread_cpu_s by thread name (schedstat, ns, subtracted thread by thread; the runtime's workers and its blocking pool are both tokio-rt-worker); calm_per_s: CPU-seconds per second in the window before, what serving alone costs",
            "calm_per_s": calm.per_s(),
            "install": first_install.cpu.json(),
            "rollback": first_rollback.cpu.json(),
        },
        "switch_seconds": {
            "p50": m.quantile("touchline_match_switch_seconds", 0.5),
            "p99": m.quantile("touchline_match_switch_seconds", 0.99),
            "count": m.value("touchline_match_switch_seconds_count"),
        },
        "latency_us": {
            "what": "during_install and during_rollback pool every cycle's samples; by_cycle has each cycle's p99",
            "before": latency_json(&h[0]),
            "during_install": latency_json(&during_install),
            "steady_after": latency_json(&h[STEADY]),
            "during_rollback": latency_json(&during_rollback),
        },
        "p99_ratio_during_install_over_before": p99(&during_install) / before,
        "p99_ratio_during_rollback_over_before": p99(&during_rollback) / before,
        "wakes": wakes,
        "seq_gaps": stats.gaps,
        "sessions_closed": stats.closed,
        "resnapshots": stats.resnapshots,
        "updates_skipped_by_resnapshot": stats.skipped,
        "deliveries": stats.deliveries,
    }))
}

/// Section 8 of the table: the hot swap.
pub(crate) fn table(t: &mut String, w: &Value) {
    use std::fmt::Write as _;
    let f = crate::report::fixed;
    let (i, b) = (&w["install"], &w["rollback"]);
    let _ = writeln!(
        t,
        "\n8. hot swap v1 → v2 → v1 ({} matches, {} fed at {} msg/s, {} clients)",
        w["matches"], w["fed_matches"], w["feed_rate"], w["clients"]
    );
    let _ = writeln!(
        t,
        "   install (first cycle): compile {} ms, canary {} matches / {} events in {} ms, {} (then probation until {} ms)",
        f(&i["compile_ms"]),
        i["canary"]["matches"],
        i["canary"]["events"],
        f(&i["canary"]["ms"]),
        switched(i),
        f(&i["total_ms"]),
    );
    let _ = writeln!(t, "   rollback (first cycle): {}", switched(b));
    let l = &w["latency_us"];
    if let Some(cycles) = w["by_cycle"].as_array() {
        let ratios = |key: &str| cycles.iter().map(|c| f(&c[key])).collect::<Vec<_>>().join(" / ");
        let _ = writeln!(
            t,
            "   {} cycle{}, pooled below; p99 ratio over before by cycle: install {}, rollback {}",
            cycles.len(),
            if cycles.len() == 1 { "" } else { "s" },
            ratios("p99_ratio_install_over_before"),
            ratios("p99_ratio_rollback_over_before")
        );
    }
    let _ = writeln!(
        t,
        "   update latency p50/p99 µs: before {} / {}, during install {} / {}, during rollback {} / {}, steady {} / {} (p99 ratio over before: install {}, rollback {}); gaps {}, sessions closed {}",
        l["before"]["p50"],
        l["before"]["p99"],
        l["during_install"]["p50"],
        l["during_install"]["p99"],
        l["during_rollback"]["p50"],
        l["during_rollback"]["p99"],
        l["steady_after"]["p50"],
        l["steady_after"]["p99"],
        f(&w["p99_ratio_during_install_over_before"]),
        f(&w["p99_ratio_during_rollback_over_before"]),
        w["seq_gaps"],
        w["sessions_closed"]
    );
    let cpu = &w["server_cpu_s"];
    let _ = writeln!(
        t,
        "   server CPU-s (first cycle): install {} in {} s, rollback {} in {} s, against {} per s serving alone",
        f(&cpu["install"]["cpu_s"]),
        f(&w["install_wall_s"]),
        f(&cpu["rollback"]["cpu_s"]),
        f(&w["rollback_wall_s"]),
        f(&cpu["calm_per_s"]["cpu"])
    );
    let wk = &w["wakes"];
    let us = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{:.0}", x * 1e6));
    let (plain, taking) = (&wk["plain"], &wk["taking_the_version"]);
    let _ = writeln!(
        t,
        "   waking {} sleepers p50/p99 µs: on their own version {} / {}; after an install passed {} by, taking it {} / {} ({} switched as they woke)",
        wk["matches"],
        us(&plain["p50_s"]),
        us(&plain["p99_s"]),
        wk["deferred"],
        us(&taking["p50_s"]),
        us(&taking["p99_s"]),
        taking["switched"]
    );
}

/// Idle matches woken to measure a wake, twice.
const WAKE_SAMPLE: usize = 1000;
/// Bound on waking them.
const WAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a rollout leaves to the sleeping matches it passes by: `n` idle
/// matches woken on their own version (plain wakes), then v2 installed
/// and `n` others woken, each taking v2 as it wakes (its state migrated);
/// both read from the server's `touchline_wake_seconds` over exactly
/// those wakes.
async fn wake_costs(
    server: &touchline_testkit::ServerProcess,
    token: &str,
    v2: Vec<u8>,
    idle: &[String],
) -> anyhow::Result<Value> {
    let n = (idle.len() / 2).min(WAKE_SAMPLE);
    let plain = tokio::task::block_in_place(|| woken(server, &idle[..n]))?;
    let install = admin(server, token, "/admin/guest", v2, "install before the wakes").await?;
    let taking = tokio::task::block_in_place(|| woken(server, &idle[n..2 * n]))?;
    Ok(json!({
        "what": "one event fed to each of `matches` sleeping matches: plain, on the version they slept on; taking_the_version, after an install that passed them by (`deferred`), each switching to it as it wakes; p50/p99 of touchline_wake_seconds over those wakes (bucket upper bounds), and the switches made meanwhile",
        "matches": n,
        "deferred": install.report["deferred"],
        "plain": plain,
        "taking_the_version": taking,
    }))
}

/// Feed one event to each of `ids`, asleep, and read their wakes (the
/// feeder's events count as applied too: waited for by the wakes' count).
fn woken(server: &touchline_testkit::ServerProcess, ids: &[String]) -> anyhow::Result<Value> {
    let before = server.metrics()?;
    open_matches(server, ids)?;
    let wakes = before.value("touchline_wake_seconds_count") + ids.len() as f64;
    server
        .wait_metric("touchline_wake_seconds_count", wakes, WAKE_TIMEOUT)
        .context("swap: the sleepers fed did not all wake")?;
    let after = server.metrics()?;
    let q = |q| crate::density::quantile_between(&before.0, &after.0, "touchline_wake_seconds", q);
    let delta = |name: &str| after.value(name) - before.value(name);
    Ok(json!({
        "p50_s": q(0.5),
        "p99_s": q(0.99),
        "wakes": delta("touchline_wake_seconds_count"),
        "switched": delta(r#"touchline_match_switches_total{kind="switched""#),
    }))
}

/// A rollout report's switching, as the table shows it.
fn switched(x: &Value) -> String {
    let f = crate::report::fixed;
    format!(
        "{} switched, {} asleep passed by, in {} ms ({} pauses, {} ms; per match p50/p99/max {} / {} / {} µs), {}",
        x["switched"],
        x["deferred"],
        f(&x["switch_ms"]),
        x["pauses"],
        f(&x["paused_ms"]),
        f(&x["switch_us_p50"]),
        f(&x["switch_us_p99"]),
        f(&x["switch_us_max"]),
        x["outcome"].as_str().unwrap_or("?")
    )
}

/// `--hibernate-after-ms` of the swap's server: its idle matches asleep
/// within the warm-up.
const HIBERNATE_AFTER_MS: u64 = 3000;
/// Bound on the warm-up: 10,000 idle matches asleep.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// The clients' latency phases ([`PHASES`]): 0 the window before,
/// [`STEADY`] the windows between requests, then two per cycle.
const STEADY: usize = 1;
/// Install-and-rollback cycles at most.
const MAX_CYCLES: usize = (PHASES - 2) / 2;
const _: () = assert!(MAX_CYCLES >= 8, "eight cycles pooled in the full run");

/// The latency phase of cycle `k`'s install: 2, 4, 6, …
fn install_phase(k: usize) -> usize {
    2 + 2 * k
}

/// The latency phase of cycle `k`'s rollback: 3, 5, 7, …
fn rollback_phase(k: usize) -> usize {
    install_phase(k) + 1
}

/// One admin request of a cycle: the server's report, its wall time and
/// the server's CPU time while it ran.
struct Request {
    report: Value,
    wall_s: f64,
    cpu: CpuSpent,
}

impl Request {
    /// What `by_cycle` keeps of it.
    fn summary(&self) -> Value {
        let r = &self.report;
        json!({
            "outcome": r["outcome"],
            "switched": r["switched"],
            "deferred": r["deferred"],
            "compile_ms": r["compile_ms"],
            "switch_ms": r["switch_ms"],
            "pauses": r["pauses"],
            "paused_ms": r["paused_ms"],
            "total_ms": r["total_ms"],
            "wall_s": self.wall_s,
            "cpu_s": self.cpu.total,
        })
    }
}

/// `POST path` with `body`, timed, with the server's CPU time around it;
/// anything but a 2xx ends the scenario.
async fn admin(
    server: &touchline_testkit::ServerProcess,
    token: &str,
    path: &'static str,
    body: Vec<u8>,
    what: &str,
) -> anyhow::Result<Request> {
    let started = Instant::now();
    let cpu = Cpu::start(server.pid());
    let (status, answer) = admin_post(server.http, token, path, body).await?;
    let cpu = cpu.stop();
    let wall_s = started.elapsed().as_secs_f64();
    anyhow::ensure!((200..300).contains(&status), "{what}: {status} {answer}");
    Ok(Request {
        report: serde_json::from_str(&answer).with_context(|| format!("{what}: the server's report"))?,
        wall_s,
        cpu,
    })
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
