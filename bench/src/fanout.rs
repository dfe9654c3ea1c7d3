//! The fan-out measurement, the same for every server it drives: Touchline
//! (`touchline serve`) and its peers ([`crate::peer`]).
//!
//! A [`Target`] is a running server with a feed port, a WebSocket port, a
//! pid and a count of match events applied. [`measure`] opens the matches,
//! connects the clients ([`load::Clients`]), runs the paced feed
//! ([`load::paced`]) for the window and reads the server's CPU time and
//! memory and the generator's (this process's) CPU time from `/proc`
//! ([`touchline_testkit::procfs`]). It never starts or stops a server: the
//! caller owns it and adds what only that server can tell (its `/metrics`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use touchline::sim::SimConfig;
use touchline_testkit::{Launch, ServerProcess, procfs};

use crate::load::{self, Clients, FanoutStats, Poison};
use crate::scenarios::{Sizes, latency_json, progress, stop_server};

/// A server the fan-out clients and feeder can drive.
pub(crate) trait Target {
    /// Where the WebSocket clients connect (`GET /ws`).
    fn http(&self) -> SocketAddr;
    /// Where the feed connection goes.
    fn feed(&self) -> SocketAddr;
    /// Its process, for CPU time and memory.
    fn pid(&self) -> u32;
    /// Match events applied so far (to wait for the opening book).
    fn events_applied(&self) -> anyhow::Result<f64>;
}

impl Target for ServerProcess {
    fn http(&self) -> SocketAddr {
        self.http
    }

    fn feed(&self) -> SocketAddr {
        self.feed
    }

    fn pid(&self) -> u32 {
        ServerProcess::pid(self)
    }

    fn events_applied(&self) -> anyhow::Result<f64> {
        Ok(self.metrics()?.value("touchline_events_applied_total"))
    }
}

/// After the feed stops, clients keep counting this long: frames in flight
/// land, and count (the server's CPU for them too).
const GRACE: Duration = Duration::from_millis(500);

/// Touchline under the fan-out load: [`measure`] plus what its `/metrics`
/// tell (restarts after traps, dead letters: the faults scenario's figures).
pub(crate) async fn touchline(
    launch: Launch,
    sizes: &Sizes,
    clients: usize,
    ids: &[String],
    exclude: &[String],
    poison: Option<Poison>,
    seed: u64,
) -> anyhow::Result<(Value, Histogram<u64>)> {
    let server = launch.start()?;
    let (mut result, latency) = measure(&server, sizes, clients, ids, exclude, poison, seed).await?;
    let m = server.metrics()?;
    result["trap_to_serving_s"] = json!({
        "p50": m.quantile("touchline_recovery_seconds", 0.5),
        "p99": m.quantile("touchline_recovery_seconds", 0.99),
        "count": m.value("touchline_recovery_seconds_count"),
        // Events each rebuild replayed (restarts and wake-ups alike).
        "replayed_events": {
            "p50": m.quantile("touchline_recovery_replayed_events", 0.5),
            "p99": m.quantile("touchline_recovery_replayed_events", 0.99),
            "mean": m.value("touchline_recovery_replayed_events_sum")
                / m.value("touchline_recovery_replayed_events_count").max(1.0),
        },
        "mean": m.value("touchline_recovery_seconds_sum") / m.value("touchline_recovery_seconds_count").max(1.0),
        // The same restarts in the worker thread's CPU time: their own
        // work, without waiting for a core (2 cores shared with the
        // clients' sockets and the generator).
        "cpu": {
            "p50": m.quantile("touchline_recovery_cpu_seconds", 0.5),
            "p99": m.quantile("touchline_recovery_cpu_seconds", 0.99),
        },
        // And the time the thread was preempted, ready to run, waiting for
        // a core: what the clock adds to the CPU time.
        "runqueue": {
            "p50": m.quantile("touchline_recovery_runqueue_seconds", 0.5),
            "p90": m.quantile("touchline_recovery_runqueue_seconds", 0.9),
            "p99": m.quantile("touchline_recovery_runqueue_seconds", 0.99),
        },
    });
    result["dead_letters"] = json!(m.value("touchline_dead_letters_total"));
    stop_server(server)?;
    Ok((result, latency))
}

/// `clients` clients, each on `sizes.per_client` of `ids`, while the feed
/// runs at the fan-out rate for the window; latency is recorded for the
/// matches not in `exclude`. Server CPU and the generator's are taken over
/// the window (`*_cpu_percent`) and over the window plus the grace period
/// (`*_cpu_s`, what the deliveries counted cost). RSS per client is the
/// growth from the matches open without clients to the end of the window
/// (everything a served client costs, in-flight frames included); RSS per
/// idle client the growth to the moment every client has its snapshots,
/// before the feed starts. Bytes per delivery is the mean payload of the
/// update frames the clients received (JSON text, no WebSocket header);
/// wire bytes per delivery, what the clients read from their sockets after
/// their snapshots (headers and the few status frames included, compressed
/// where `sizes.deflate` had the server compress) per update.
pub(crate) async fn measure(
    target: &impl Target,
    sizes: &Sizes,
    clients: usize,
    ids: &[String],
    exclude: &[String],
    poison: Option<Poison>,
    seed: u64,
) -> anyhow::Result<(Value, Histogram<u64>)> {
    let pid = target.pid();
    // Create every match first so clients have something to subscribe to.
    open_matches(target, ids)?;
    let rss_before_clients = procfs::rss_bytes(pid);
    let c = watch(target, sizes, clients, ids, exclude).await?;
    let rss_connected = procfs::rss_bytes(pid);
    let (stop, feeder) = feed(target, sizes, poison, seed);
    let (times0, gen0, t0) = (procfs::cpu_times(pid), procfs::cpu_seconds("self"), Instant::now());
    let mut waited = 0.0;
    while waited < sizes.fanout_seconds {
        tokio::time::sleep(Duration::from_secs(1)).await; // the measurement window, not synchronisation
        waited += 1.0;
        progress(&format!("  {waited:.0}/{:.0} s", sizes.fanout_seconds));
    }
    stop.store(true, Ordering::Relaxed);
    let sent = feeder.join().map_err(|_| anyhow::anyhow!("feeder panicked"))??;
    let secs = t0.elapsed().as_secs_f64();
    let (cpu_window, gen_window) = (
        (procfs::cpu_times(pid) - times0).total(),
        procfs::cpu_seconds("self") - gen0,
    );
    let rss = procfs::rss_bytes(pid);
    tokio::time::sleep(GRACE).await; // grace period for in-flight frames
    let (times, generator_cpu) = (procfs::cpu_times(pid) - times0, procfs::cpu_seconds("self") - gen0);
    let cpu = times.total();
    let peak = procfs::peak_rss_bytes(pid);
    let stats: FanoutStats = c.finish().await;
    // Deliveries were counted until now, grace period included.
    let delivery_secs = t0.elapsed().as_secs_f64();
    let deliveries = stats.deliveries as f64;
    let bytes = stats.delivered_bytes as f64;
    let result = json!({
        "feed_messages": sent,
        "deliveries": stats.deliveries,
        "deliveries_per_s": deliveries / delivery_secs,
        "delivered_bytes": stats.delivered_bytes,
        "bytes_per_delivery": (deliveries > 0.0).then(|| bytes / deliveries),
        "wire_bytes_per_delivery": (deliveries > 0.0).then(|| stats.wire_bytes as f64 / deliveries),
        "deflate": sizes.deflate,
        "delivered_bytes_per_s": bytes / delivery_secs,
        "latency_us": latency_json(&stats.latency),
        "seq_gaps": stats.gaps,
        "resnapshots": stats.resnapshots,
        "updates_skipped_by_resnapshot": stats.skipped,
        "server_cpu_percent": 100.0 * cpu_window / secs,
        "server_cpu_s": cpu,
        "deliveries_per_server_cpu_s": (cpu > 0.0).then(|| deliveries / cpu),
        "server_cpu_s_per_100k_deliveries": (deliveries > 0.0).then(|| cpu / deliveries * 1e5),
        "server_user_us_per_delivery": (deliveries > 0.0).then(|| times.user / deliveries * 1e6),
        "server_system_us_per_delivery": (deliveries > 0.0).then(|| times.system / deliveries * 1e6),
        "server_rss_bytes": rss,
        "server_rss_peak_bytes": peak,
        "server_rss_before_clients_bytes": rss_before_clients,
        "server_rss_connected_bytes": rss_connected,
        "rss_per_client_bytes": rss.saturating_sub(rss_before_clients) as f64 / clients.max(1) as f64,
        "rss_per_idle_client_bytes": rss_connected.saturating_sub(rss_before_clients) as f64 / clients.max(1) as f64,
        "generator_cpu_percent": 100.0 * gen_window / secs,
        "generator_cpu_s": generator_cpu,
        "clients": stats.clients,
    });
    Ok((result, stats.latency))
}

/// `clients` WebSocket clients on `ids` (snapshots received), then the
/// paced feed at the fan-out rate until `stop`.
pub(crate) async fn watch_and_feed(
    target: &impl Target,
    sizes: &Sizes,
    clients: usize,
    ids: &[String],
    exclude: &[String],
    poison: Option<Poison>,
    seed: u64,
) -> anyhow::Result<(Clients, Arc<AtomicBool>, std::thread::JoinHandle<anyhow::Result<u64>>)> {
    let c = watch(target, sizes, clients, ids, exclude).await?;
    let (stop, feeder) = feed(target, sizes, poison, seed);
    Ok((c, stop, feeder))
}

/// `clients` WebSocket clients on `ids`, once every one has its snapshots.
async fn watch(
    target: &impl Target,
    sizes: &Sizes,
    clients: usize,
    ids: &[String],
    exclude: &[String],
) -> anyhow::Result<Clients> {
    let c = Clients::open(target.http(), clients, sizes.per_client, ids, exclude, sizes.deflate).await?;
    c.wait_ready(clients, Duration::from_secs(120)).await?;
    Ok(c)
}

/// The paced feed at the fan-out rate until the flag is set.
fn feed(
    target: &impl Target,
    sizes: &Sizes,
    poison: Option<Poison>,
    seed: u64,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<anyhow::Result<u64>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let cfg = SimConfig {
        matches: sizes.fanout_matches,
        seed,
        rate: sizes.fanout_rate,
        count: 0,
    };
    let feeder = load::paced(target.feed(), cfg, sizes.fanout_rate, poison, stop.clone());
    (stop, feeder)
}

/// Create `ids` on `target` with a one-market book each (market 1, outcomes
/// 1/2/3 at 2.0/3.0/4.0) and wait until all are applied.
pub(crate) fn open_matches(target: &impl Target, ids: &[String]) -> anyhow::Result<()> {
    let target_events = target.events_applied()? + ids.len() as f64;
    let book: Vec<u8> = ids
        .iter()
        .flat_map(|id| {
            format!(
                r#"<odds_change product="1" event_id="{id}" timestamp="1"><odds><market id="1" status="1"><outcome id="1" odds="2.0" active="1"/><outcome id="2" odds="3.0" active="1"/><outcome id="3" odds="4.0" active="1"/></market></odds></odds_change>"#
            )
            .into_bytes()
        })
        .collect();
    load::blast(target.feed(), Arc::new(book))
        .join()
        .map_err(|_| anyhow::anyhow!("feed writer panicked"))??;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let applied = target.events_applied()?;
        if applied >= target_events {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {applied} of {target_events} events applied within 60 s of the opening book"
        );
        std::thread::sleep(touchline_testkit::server::POLL);
    }
}
