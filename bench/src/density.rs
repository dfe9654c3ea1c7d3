//! The density scenario (issue 14): what a hibernated and a live match
//! cost in RSS, many matches tracked by one server (most hibernated, some
//! live and fed), and how long waking a hibernated match takes.
//!
//! 1. `matches` matches get one realistic live odds_change each (~40
//!    markets, from the simulator), fed in batches paced by the server's
//!    gauges: a batch goes out only once all but [`AWAKE`] of the matches
//!    fed so far have hibernated, so the live working set stays small
//!    while the tracked count grows. Per hibernated match: the RSS growth
//!    over the idle server, divided by `matches` (fixed costs such as the
//!    store's 64 MiB cache and the allocator's share of the live working
//!    set included: at 20,000 matches, `--quick`, they weigh five times
//!    what they do at 100,000). RSS is read once it has settled: the
//!    allocator gives emptied pages back gradually.
//! 2. Waking: [`WAKES`] hibernated matches get one event each, 20 at a
//!    time; the
//!    server's `touchline_wake_seconds` over exactly those wakes (bucket
//!    counts before and after; a quantile is its bucket's upper bound, and
//!    the 1 ms of the target is one of the bounds).
//! 3. `live` of them are then fed a simulated match's stream of odds
//!    changes (deltas, as in production), a round every
//!    [`ROUND_EVERY`], often enough to keep them from hibernating and not
//!    so fast that a backlog is measured as what they hold (a flooding
//!    feeder once made this 100–220 KB per live match on a slow run). A
//!    round goes out in [`ROUND_SLICES`] parts spread over its second, as
//!    a feed interleaves its matches, not all of them at the same
//!    instant; the
//!    process's RSS is reported (the mean of readings every 50 ms over
//!    three rounds, and the lowest and highest).
//! 4. What a live match costs is read on a server of its own, fed half of
//!    `live` matches the same way and then all of them: the RSS growth
//!    between the two means over the matches added (napping ones count:
//!    they are live, and between two rounds most of them nap). That
//!    server's store cache is 4 MiB, full before the first reading: a
//!    bound for all matches, not what one more live match costs (with the
//!    default 64 MiB still filling, it was counted as ~55 KB of each). The
//!    growth over the idle server is reported beside.
//!    Read as growth of the dense process instead, it came out anywhere
//!    from 7 to 54 KB for the same binary: live matches there reuse pages
//!    the filling freed.
//!
//! Each target is written beside its measured value.

use std::io::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use touchline::sim::{Generator, SimConfig};
use touchline_testkit::ServerProcess;

use crate::scenarios::{Servers, progress, stop_server};

/// Targets of issue 14.
const HIBERNATED_TARGET_BYTES: f64 = 4096.0;
const LIVE_TARGET_BYTES: f64 = 40960.0;
const WAKE_P99_TARGET_S: f64 = 0.001;

/// Matches fed and not yet hibernated, at most, before the next batch.
const AWAKE: f64 = 4000.0;
const BATCH: usize = 2000;
/// Rounds of updates for the live matches before their RSS is taken
/// (enough to fill an awake match's resume ring and a recovery tail).
const LIVE_ROUNDS: usize = 20;
/// One round to every live match this often: an update a second per
/// match, as busy as a live match of the real feed gets (1,000 events/s
/// at 1,000 live matches, five times the fan-out scenario's whole feed),
/// well inside the hibernation delay and within what the server applies,
/// so nothing queues. Between two rounds a match naps (`--nap-after-ms
/// 500`: its instance given back); the run reports how many did while the
/// RSS was read.
const ROUND_EVERY: Duration = Duration::from_millis(1000);
/// Parts a round is written in, evenly over [`ROUND_EVERY`]: each match
/// still gets one update a second. Written at once, a round of 1,000
/// ~8 KB messages was a backlog of ~100 ms of work whose queued events,
/// parsed forms and feed bytes the allocator kept from one round to the
/// next (its purge delay is the round's second): 126 KB of RSS per live
/// match against 91 KB in 20 parts (PSS 107 against 76 KB; one run
/// each, the same binary, a feeder of the same rounds).
const ROUND_SLICES: u32 = 20;
/// The store's cache on the server that measures live matches alone, MiB:
/// full within the first round (500 matches journal ~5 MB a round), so
/// the growth between the two readings is the matches', not the cache
/// filling up. The cache is one bound for all matches, full on a server
/// that has run a while; the default 64 MiB, still filling between the
/// readings, was counted as ~55 KB of every live match (187 against 131
/// KB with 16 MiB, one run each).
const ALONE_STORE_CACHE_MIB: u32 = 4;
/// Hibernated matches woken for the wake figure (at most a tenth).
const WAKES: usize = 2000;
const WAKE_GROUP: usize = 20;
const WAIT: Duration = Duration::from_secs(600);

pub(crate) fn density_run(servers: &Servers, dir: &Path, matches: u32, live: u32, seed: u64) -> anyhow::Result<Value> {
    // Hibernation short enough to pace the feeding, long enough for the
    // live matches to stay awake between their rounds.
    let flags = server_flags(matches, 1000);
    let server = servers.start(dir, &flags)?;
    let idle = settled_rss(&server)?;
    let mut g = Generator::new(&SimConfig {
        matches: 1,
        seed,
        rate: 50.0,
        count: 0,
    });
    // One simulated match's live odds changes: the first is the template
    // every match gets, the rest are the live matches' rounds.
    let mut stream = Vec::new();
    while stream.len() < LIVE_ROUNDS + 1 {
        let m = g.next_message();
        if m.starts_with("<odds_change product=\"1\"") {
            stream.push(m);
        }
    }
    let ids: Vec<String> = (0..matches).map(|i| format!("sr:match:{}", 60_000_000 + i)).collect();
    let mut feed = TcpStream::connect(server.feed).context("connecting to the feed port")?;
    feed.set_nodelay(true)?;

    let t0 = Instant::now();
    let mut fed = 0usize;
    for batch in ids.chunks(BATCH) {
        wait_until(&server, |m| {
            m.value("touchline_hibernated_matches") + AWAKE >= fed as f64
        })?;
        let bytes: String = batch.iter().map(|id| with_id(&stream[0], id)).collect();
        feed.write_all(bytes.as_bytes())?;
        fed += batch.len();
    }
    server.wait_metric("touchline_hibernated_matches", f64::from(matches), WAIT)?;
    let create_s = t0.elapsed().as_secs_f64();
    let hibernated = settled_rss(&server)?;
    let hibernated_page_tables = server.page_table_bytes();
    let per_hibernated = hibernated.saturating_sub(idle) as f64 / f64::from(matches);
    progress(&format!(
        "density: {matches} hibernated in {create_s:.1} s, {per_hibernated:.0} B each"
    ));

    // Waking: the last matches fed (not the live ones), one event each.
    let wakes = WAKES.min(ids.len() / 10).max(1);
    let before = server.metrics()?;
    // A few at a time, as events for sleeping matches come in production
    // (a burst of thousands would time the CPU queue, not a wake).
    let mut applied = ids.len();
    for group in ids[ids.len() - wakes..].chunks(WAKE_GROUP) {
        let bytes: String = group.iter().map(|id| with_id(&stream[1], id)).collect();
        feed.write_all(bytes.as_bytes())?;
        applied += group.len();
        server.wait_metric("touchline_events_applied_total", applied as f64, WAIT)?;
    }
    let after = server.metrics()?;
    let wake = |q| quantile_between(&before.0, &after.0, "touchline_wake_seconds", q);
    let (wake_p50, wake_p99) = (wake(0.5), wake(0.99));

    // The live ones: a feeder keeps them awake while the RSS is read.
    let dense = live_phase(&server, &ids[..live as usize], &stream)?;
    let m = server.metrics()?;
    stop_server(server)?;

    // What a live match costs, on a server of its own: growing a process
    // that tracks 100,000 matches, live matches reuse pages the filling
    // freed (readings of 7–54 KB each, run to run, for the same binary),
    // so the dense process gives only its total. There, half of them live
    // and then all: the growth between the two is what a live match adds.
    // Its store cache is full before the first reading
    // ([`ALONE_STORE_CACHE_MIB`]). Not paced by hibernation here: none sleeps between two rounds.
    let mut flags = server_flags(live, 30_000);
    flags.extend(["--store-cache-mib".to_owned(), ALONE_STORE_CACHE_MIB.to_string()]);
    let alone = servers.start(&dir.with_extension("live"), &flags)?;
    let alone_idle = settled_rss(&alone)?;
    let live_ids: Vec<String> = (0..live).map(|i| format!("sr:match:{}", 70_000_000 + i)).collect();
    let mut feed = TcpStream::connect(alone.feed).context("connecting to the feed port")?;
    let mut phases = Vec::new();
    for ids in [&live_ids[..live_ids.len() / 2], &live_ids[..]] {
        let firsts: String = ids[phases.len() * live_ids.len() / 2..]
            .iter()
            .map(|id| with_id(&stream[0], id))
            .collect();
        feed.write_all(firsts.as_bytes())?;
        phases.push(live_phase(&alone, ids, &stream)?);
    }
    let alone_m = alone.metrics()?;
    stop_server(alone)?;
    let (half, all) = (&phases[0], &phases[1]);
    // What the second half of the live matches added, per match.
    let per_added =
        |at_all: u64, at_half: u64| at_all.saturating_sub(at_half) as f64 / (all.awake - half.awake).max(1.0);
    let per_live = per_added(all.mean, half.mean);
    let over_idle = |rss: u64| rss.saturating_sub(alone_idle) as f64 / all.awake.max(1.0);
    let tables_per_live = per_added(all.page_tables, half.page_tables);
    let pss_per_live = all.pss.zip(half.pss).map(|(a, h)| per_added(a, h));
    let result = json!({
        "matches": matches,
        "live_matches": live,
        "rss_idle_bytes": idle,
        "rss_hibernated_bytes": hibernated,
        "page_tables_hibernated_bytes": hibernated_page_tables,
        "rss_with_live_bytes": dense.mean,
        "rss_with_live_range_bytes": [dense.min, dense.max],
        "napping_while_measured": dense.napping,
        "rss_per_hibernated_match_bytes": per_hibernated,
        "rss_per_hibernated_match_target_bytes": HIBERNATED_TARGET_BYTES,
        "live_alone": {
            "rss_idle_bytes": alone_idle,
            "store_cache_mib": ALONE_STORE_CACHE_MIB,
            "half": {"awake": half.awake, "rss_bytes": half.mean, "rss_range_bytes": [half.min, half.max], "pss_bytes": half.pss, "page_table_bytes": half.page_tables, "napping_while_measured": half.napping},
            "all": {"awake": all.awake, "rss_bytes": all.mean, "rss_range_bytes": [all.min, all.max], "pss_bytes": all.pss, "page_table_bytes": all.page_tables, "napping_while_measured": all.napping},
            "page_tables_per_live_match_bytes": tables_per_live,
            // The RSS counts the guest's data image (~36 KB, shared) once
            // per awake instance that maps it; the PSS once in all.
            "pss_per_live_match_bytes": pss_per_live,
            "rss_over_idle_per_live_match_bytes": over_idle(all.mean),
            "nap_wake_s": {"p50": alone_m.quantile("touchline_nap_wake_seconds", 0.5), "p99": alone_m.quantile("touchline_nap_wake_seconds", 0.99)},
        },
        "rss_per_live_match_bytes": per_live,
        "rss_per_live_match_target_bytes": LIVE_TARGET_BYTES,
        "nap_wake_s": {"p50": m.quantile("touchline_nap_wake_seconds", 0.5), "p99": m.quantile("touchline_nap_wake_seconds", 0.99)},
        "create_all_s": create_s,
        "instantiate_s": {"p50": m.quantile("touchline_instantiate_seconds", 0.5), "p99": m.quantile("touchline_instantiate_seconds", 0.99)},
        "wake_s": {"p50": wake_p50, "p99": wake_p99, "count": wakes},
        "wake_p99_target_s": WAKE_P99_TARGET_S,
        "met": {
            "hibernated": per_hibernated <= HIBERNATED_TARGET_BYTES,
            "live": per_live <= LIVE_TARGET_BYTES,
            // A bucket's upper bound, and 1 ms is one of the bounds.
            "wake_p99": wake_p99.is_some_and(|p| p <= WAKE_P99_TARGET_S),
        },
    });
    Ok(result)
}

/// The server's flags: room for `matches`, clean marks soon, hibernation
/// after `hibernate_ms`, and naps after 500 ms: tracking this many matches
/// is a deployment for density, where live matches nap between their
/// rounds (the default, 2 s, is for matches quieter than these;
/// `worker::nap`).
fn server_flags(matches: u32, hibernate_ms: u64) -> Vec<String> {
    [
        "--max-matches",
        &(matches + 16).to_string(),
        "--clean-after-ms",
        "20",
        "--hibernate-after-ms",
        &hibernate_ms.to_string(),
        "--nap-after-ms",
        "500",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// RSS while live matches are fed.
struct LivePhase {
    /// Matches live (napping included) when the readings began.
    awake: f64,
    mean: u64,
    min: u64,
    max: u64,
    /// Mean proportional set size over every fifth reading (shared pages
    /// counted once: `procfs::pss_bytes`, heavier to read than the RSS);
    /// `None` where the kernel does not tell.
    pss: Option<u64>,
    /// Page tables (VmPTE) at the last reading: not in the RSS.
    page_tables: u64,
    /// Napping matches over the readings, lowest and highest.
    napping: Value,
}

/// Feed `ids` a round every [`ROUND_EVERY`] until [`LIVE_ROUNDS`] rounds
/// of them are applied, then
/// read the RSS every 50 ms over three rounds: the mean is what the live
/// matches cost on average (napping ones hold no instance between their
/// rounds).
fn live_phase(server: &ServerProcess, ids: &[String], stream: &[String]) -> anyhow::Result<LivePhase> {
    let applied_before = server.metrics()?.value("touchline_events_applied_total");
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (stop, stream, ids) = (stop.clone(), stream.to_vec(), ids.to_vec());
        let addr = server.feed;
        std::thread::spawn(move || -> anyhow::Result<()> {
            let mut feed = TcpStream::connect(addr)?;
            feed.set_nodelay(true)?;
            let mut round = 0usize;
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let msg = &stream[1 + round % LIVE_ROUNDS];
                // Paced, not flooded: what queues behind a flood is not
                // what a live match holds.
                for (part, slice) in (0u32..).zip(slices(ids.len())) {
                    let bytes: String = ids[slice].iter().map(|id| with_id(msg, id)).collect();
                    feed.write_all(bytes.as_bytes())?;
                    let next = started + ROUND_EVERY * round as u32 + ROUND_EVERY * (part + 1) / ROUND_SLICES;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                round += 1;
            }
            Ok(())
        })
    };
    let want = applied_before + ids.len() as f64 * LIVE_ROUNDS as f64;
    let ready = server.wait_metric("touchline_events_applied_total", want, WAIT);
    let awake = server
        .metrics()
        .map(|m| m.value("touchline_live_matches") - m.value("touchline_hibernated_matches"));
    let (mut readings, mut pss, mut napping) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..60 {
        std::thread::sleep(Duration::from_millis(50));
        readings.push(server.rss_bytes());
        if i % 5 == 0 {
            pss.push(server.pss_bytes());
        }
        napping.push(
            server
                .metrics()
                .map_or(f64::NAN, |m| m.value("touchline_napping_matches")),
        );
    }
    stop.store(true, Ordering::Relaxed);
    feeder.join().map_err(|_| anyhow::anyhow!("feeder panicked"))??;
    ready?;
    Ok(LivePhase {
        awake: awake?,
        mean: readings.iter().sum::<u64>() / readings.len() as u64,
        pss: pss
            .iter()
            .copied()
            .sum::<Option<u64>>()
            .map(|sum| sum / pss.len().max(1) as u64),
        min: readings.iter().min().copied().unwrap_or(0),
        max: readings.iter().max().copied().unwrap_or(0),
        page_tables: server.page_table_bytes(),
        napping: json!({
            "min": napping.iter().copied().fold(f64::INFINITY, f64::min),
            "max": napping.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }),
    })
}

/// The index ranges of `n` matches' [`ROUND_SLICES`] parts of a round.
fn slices(n: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let parts = ROUND_SLICES as usize;
    (0..parts).map(move |i| i * n / parts..(i + 1) * n / parts)
}

/// `template` with its event id replaced by `id`.
fn with_id(template: &str, id: &str) -> String {
    const KEY: &str = "event_id=\"";
    let Some(at) = template.find(KEY).map(|i| i + KEY.len()) else {
        return template.to_owned();
    };
    let end = at + template[at..].find('"').unwrap_or(0);
    format!("{}{id}{}", &template[..at], &template[end..])
}

/// RSS once it stops falling: the allocator gives emptied pages back
/// gradually, when a thread next allocates (each metrics scrape makes the
/// server allocate). Settled: less than 0.5% lower after a further second
/// of scrapes; at most 20 s.
fn settled_rss(server: &ServerProcess) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = server.rss_bytes();
    loop {
        for _ in 0..20 {
            server.metrics()?;
            std::thread::sleep(Duration::from_millis(50));
        }
        let now = server.rss_bytes();
        if now as f64 >= last as f64 * 0.995 || Instant::now() > deadline {
            return Ok(now.min(last));
        }
        last = now;
    }
}

/// Poll the server's metrics until `ok` holds (bounded by [`WAIT`]).
fn wait_until(server: &ServerProcess, ok: impl Fn(&touchline_testkit::metrics::Metrics) -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        if ok(&server.metrics()?) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "density: the server did not catch up in {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Quantile `q` of histogram `name` over the observations made between two
/// scrapes (bucket counts subtracted); the bucket's upper bound.
pub(crate) fn quantile_between(before: &str, after: &str, name: &str, q: f64) -> Option<f64> {
    let buckets = |text: &str| -> Vec<(f64, f64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut v: Vec<(f64, f64)> = text
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|r| {
                let (le, count) = r.split_once("\"} ")?;
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                Some((le, count.trim().parse().ok()?))
            })
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    let (b, a) = (buckets(before), buckets(after));
    let diff: Vec<(f64, f64)> = a
        .iter()
        .map(|&(le, n)| (le, n - b.iter().find(|x| x.0 == le).map_or(0.0, |x| x.1)))
        .collect();
    let total = diff.last()?.1;
    if total <= 0.0 {
        return None;
    }
    diff.iter().find(|(_, n)| *n >= q * total).map(|(le, _)| *le)
}
