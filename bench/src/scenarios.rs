//! The scenarios of a run: parse limit, pipeline (Wasm vs native,
//! durability on vs off), fan-out (beside the Node.js peer), density,
//! faults, bets, hot swap.
//!
//! Every figure written comes from a measurement made in this run; ratios
//! compare runs made here, minutes apart, on the same machine. Each
//! scenario starts its own servers ([`Servers`]) on a fresh data dir and
//! stops them before the next one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use touchline::feed::frame::Framer;
use touchline::feed::parse::parse;
use touchline::sim::{Generator, SimConfig};
use touchline_testkit::{Launch, ServerProcess};

use crate::fanout;
use crate::load::{self, Poison};
use crate::peer;
use crate::report::{git_revision, latency_svg, machine, table};
pub(crate) use crate::sizes::Sizes;
use crate::targets::targets;

/// Size of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    pub seed: u64,
    pub out: PathBuf,
    /// Scenario names to run; empty runs all.
    pub only: Vec<String>,
    /// Fan-out client counts replacing the run's (none: the run's own).
    pub fanout_clients: Vec<usize>,
    /// Fed fan-out seconds replacing the run's.
    pub fanout_seconds: Option<f64>,
    /// Pipeline match counts replacing the run's.
    pub pipeline_matches: Vec<u32>,
    pub servers: Servers,
}

/// How every server of a run is started.
#[derive(Debug, Clone)]
pub struct Servers {
    /// The `touchline` binary measured.
    pub exe: PathBuf,
    /// Flags given to every server (`TOUCHLINE_BENCH_SERVER_ARGS`).
    pub common: Vec<String>,
}

/// A server given SIGTERM has this long to flush and exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

impl Servers {
    /// `touchline serve` on `dir` with `extra` flags, logging warnings to
    /// `dir.log` (so logging costs the measurement nothing).
    pub(crate) fn launch(&self, dir: &Path, extra: &[String]) -> Launch {
        Launch::new(&self.exe, dir)
            .log(dir.with_extension("log"))
            .rust_log("warn")
            .args(&self.common)
            .args(extra)
    }

    pub(crate) fn start(&self, dir: &Path, extra: &[String]) -> anyhow::Result<ServerProcess> {
        Ok(self.launch(dir, extra).start()?)
    }

    /// A guest `make build` leaves in the server binary's target dir
    /// (`target/release/touchline` → `target/<name>`).
    pub(crate) fn built_guest(&self, name: &str) -> anyhow::Result<PathBuf> {
        let target = self.exe.parent().and_then(Path::parent).context("target dir")?;
        let p = target.join(name);
        anyhow::ensure!(p.exists(), "{} not found", p.display());
        Ok(p)
    }
}

/// SIGTERM and wait: graceful, everything flushed. A server that exits
/// unhappily is reported, not fatal: its figures are already taken.
pub(crate) fn stop_server(server: ServerProcess) -> anyhow::Result<()> {
    let log = server.log_path().to_owned();
    let status = server.terminate(STOP_TIMEOUT)?;
    if !status.success() {
        progress(&format!("warning: server exited with {status}; see {}", log.display()));
    }
    Ok(())
}

pub(crate) fn progress(msg: &str) {
    eprintln!("[bench {}] {msg}", chrono_free_clock());
}

fn chrono_free_clock() -> String {
    let s = load::now_us() / 1_000_000;
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

/// Run every scenario, print the table, write the JSON and the plot.
pub async fn run(plan: Plan) -> anyhow::Result<()> {
    let mut sizes = plan.sizes();
    if plan.wants("fanout") {
        peer::check()?;
    }
    let scratch = tempfile::tempdir().context("bench scratch dir")?;
    let mut report = json!({
        "mode": if plan.quick { "quick" } else { "full" },
        "seed": plan.seed,
        "machine": machine(&plan.servers.exe),
        "git_revision": git_revision(),
        "started_at_unix": load::now_us() / 1_000_000,
    });
    let started = Instant::now();

    // 1. Parse limit, on the stream the 1000-match pipeline run uses.
    progress("parse limit");
    let (stream, events) = traffic(plan.seed, 1000, sizes.pipeline_messages);
    let parse_seconds = if plan.quick { 1.0 } else { 3.0 };
    let parse = parse_limit(&stream, parse_seconds);
    report["parse"] = parse.clone();
    let parse_stream = stream.clone();

    // 2. Pipeline.
    if plan.wants("pipeline") {
        let mut pipeline = Vec::new();
        for &m in &sizes.pipeline_matches {
            let (stream, events) = if m == 1000 {
                (stream.clone(), events)
            } else {
                traffic(plan.seed, m, sizes.pipeline_messages)
            };
            let stream = Arc::new(stream);
            let mut variants = vec![("wasm", vec![]), ("native", vec!["--native-model".to_owned()])];
            if m == 1000 {
                variants.push(("wasm-no-durability", vec!["--no-durability".to_owned()]));
            }
            for (name, flags) in variants {
                progress(&format!("pipeline: {m} matches, {name}"));
                let dir = scratch.path().join(format!("pipeline-{m}-{name}"));
                // The parse rate right before and after the Wasm run, on the
                // same stream as the ratio's: this VM's speed drifts
                // (9.7k–13.9k msg/s from one run to the next), so the ratio
                // is taken against the parse rate of the moment.
                let bracket = name == "wasm";
                let before = bracket.then(|| parse_limit(&parse_stream, parse_seconds));
                let r = pipeline_run(plan.servers.launch(&dir, &flags), stream.clone(), events)?;
                let after = bracket.then(|| parse_limit(&parse_stream, parse_seconds));
                let mut entry =
                    json!({"matches": m, "variant": name, "events": events, "bytes": stream.len(), "result": r});
                if let (Some(b), Some(a)) = (before, after) {
                    entry["parse_around"] = json!([b["messages_per_s"], a["messages_per_s"]]);
                }
                pipeline.push(entry);
            }
        }
        let rate = |m: u64, v: &str| {
            pipeline
                .iter()
                .find(|p| p["matches"] == m && p["variant"] == v)
                .and_then(|p| p["result"]["events_per_s"].as_f64())
        };
        let mut ratios = serde_json::Map::new();
        for &m in &sizes.pipeline_matches {
            if let (Some(w), Some(n)) = (rate(m.into(), "wasm"), rate(m.into(), "native")) {
                ratios.insert(format!("wasm_over_native_{m}"), json!(w / n));
            }
            let around = pipeline
                .iter()
                .find(|p| p["matches"] == m && p["variant"] == "wasm")
                .and_then(|p| Some((p["parse_around"][0].as_f64()? + p["parse_around"][1].as_f64()?) / 2.0));
            if let (Some(w), Some(p)) = (rate(m.into(), "wasm"), around) {
                ratios.insert(format!("pipeline_over_parse_{m}"), json!(w / p));
            }
        }
        if let (Some(on), Some(off)) = (rate(1000, "wasm"), rate(1000, "wasm-no-durability")) {
            ratios.insert("durability_on_over_off_1000".into(), json!(on / off));
        }
        report["pipeline"] = json!(pipeline);
        report["pipeline_ratios"] = Value::Object(ratios);
    }

    // 3. Fan-out.
    let ids = match_ids(plan.seed, sizes.fanout_matches);
    let mut curves = Vec::new();
    if plan.wants("fanout") {
        let mut fanout = Vec::new();
        for &c in &sizes.fanout_clients {
            progress(&format!("fan-out: {c} clients x {} matches each", sizes.per_client));
            let dir = scratch.path().join(format!("fanout-{c}"));
            let launch = plan.servers.launch(&dir, &[]);
            let (r, h) = fanout::touchline(launch, &sizes, c, &ids, &[], None, plan.seed).await?;
            curves.push((format!("{c} clients"), h));
            // The Node peer right after, on the same feed and clients.
            let (node, node_h) = peer::fanout(scratch.path(), &sizes, c, &ids, plan.seed).await?;
            curves.push((format!("{c} clients, {}", peer::NAME), node_h));
            let vs = peer::versus(&r, &node);
            fanout.push(json!({"clients": c, "per_client": sizes.per_client, "matches": sizes.fanout_matches, "feed_rate": sizes.fanout_rate, "result": r, peer::NAME: node, "versus": vs}));
        }
        // The first size once more, its clients offering permessage-deflate
        // as browsers do, to Touchline and then to the peer with ws's
        // compression on: against the uncompressed runs above.
        if let Some(first) = fanout.first() {
            let c = sizes.fanout_clients[0];
            progress(&format!("fan-out: {c} clients offering permessage-deflate"));
            let dir = scratch.path().join(format!("fanout-{c}-deflate"));
            sizes.deflate = true;
            let run = fanout::touchline(plan.servers.launch(&dir, &[]), &sizes, c, &ids, &[], None, plan.seed).await;
            let node = match run {
                Ok(_) => peer::fanout(scratch.path(), &sizes, c, &ids, plan.seed).await,
                Err(_) => Err(anyhow::anyhow!("not run: Touchline's run failed")),
            };
            sizes.deflate = false;
            let ((d, h), (node, node_h)) = (run?, node?);
            curves.push((format!("{c} clients, permessage-deflate"), h));
            curves.push((format!("{c} clients, {}, permessage-deflate", peer::NAME), node_h));
            report["fanout_deflate"] = deflate_versus(c, &first["result"], &first[peer::NAME], d, node);
        }
        report["fanout"] = json!(fanout);
    }

    // 4. Density.
    if plan.wants("density") {
        progress(&format!(
            "density: {} matches, {} of them live",
            sizes.density_matches, sizes.density_live
        ));
        report["density"] = crate::density::density_run(
            &plan.servers,
            &scratch.path().join("density"),
            sizes.density_matches,
            sizes.density_live,
            plan.seed,
        )?;
    }

    // 5. Faults: 10% of matches crash repeatedly, against the same run without.
    let s = &sizes;
    if plan.wants("faults") {
        let faulty = (plan.servers)
            .built_guest("touchline_guest_faulty.wasm")
            .context("the fault-injection guest (make build builds it)")?;
        let guest = vec![
            "--guest".to_owned(),
            faulty.display().to_string(),
            "--max-failures".into(),
            "1000".into(),
            "--failure-window-ms".into(),
            "1000".into(),
        ];
        let crashing: Vec<String> = ids.iter().step_by(10).cloned().collect();
        let poison = Poison {
            matches: crashing.clone(),
            every: Duration::from_millis(500),
        };
        let mut faults = json!({
            "clients": s.fault_clients,
            "crashing_matches": crashing.len(),
            "matches": ids.len(),
        });
        // Ordinary scheduling, then the serving threads under SCHED_FIFO
        // (host/src/realtime.rs): the same pair of runs each.
        for realtime in [false, true] {
            let mut args = guest.clone();
            let scheduling = if realtime {
                args.extend(["--realtime-priority".to_owned(), REALTIME_PRIORITY.to_string()]);
                format!(", --realtime-priority {REALTIME_PRIORITY}")
            } else {
                String::new()
            };
            let dir = |name: &str| {
                scratch
                    .path()
                    .join(format!("faults-{name}{}", if realtime { "-rt" } else { "" }))
            };
            progress(&format!("faults: baseline, {} clients{scheduling}", s.fault_clients));
            let calm = fanout::touchline(
                plan.servers.launch(&dir("calm"), &args),
                s,
                s.fault_clients,
                &ids,
                &crashing,
                None,
                plan.seed,
            )
            .await;
            // Without CAP_SYS_NICE the server refuses the priority: the
            // rest of the bench still runs, and the report says why. Any
            // other failure fails the bench.
            let (calm, calm_h) = match calm {
                Err(e) if realtime && let Some(why) = refusal(&e) => {
                    progress(&format!("faults{scheduling}: not run: {why}"));
                    faults["realtime"] = json!({"priority": REALTIME_PRIORITY, "refused": why});
                    break;
                }
                r => r?,
            };
            progress(&format!(
                "faults: {} of {} matches crashing every 500 ms{scheduling}",
                crashing.len(),
                ids.len()
            ));
            let (stormy, stormy_h) = fanout::touchline(
                plan.servers.launch(&dir("storm"), &args),
                s,
                s.fault_clients,
                &ids,
                &crashing,
                Some(poison.clone()),
                plan.seed,
            )
            .await?;
            let p99 = |r: &Value| r["latency_us"]["p99"].as_f64();
            let pair = json!({
                "without_crashes": calm,
                "with_crashes": stormy,
                "healthy_p99_ratio_crash_over_calm": p99(&stormy).zip(p99(&calm)).map(|(a, b)| a / b),
            });
            if realtime {
                faults["realtime"] = pair;
                faults["realtime"]["priority"] = json!(REALTIME_PRIORITY);
            } else {
                curves.push(("healthy, no crashes".into(), calm_h));
                curves.push(("healthy, 10% crashing".into(), stormy_h));
                for (k, v) in pair.as_object().expect("an object") {
                    faults[k] = v.clone();
                }
            }
        }
        report["faults"] = faults;
    }
    // 6. Bets: decided per second and latency, on one match and across many.
    if plan.wants("bets") {
        let mut bets = Vec::new();
        for matches in [1u32, 100] {
            progress(&format!("bets: 50 clients over {matches} match(es)"));
            let dir = scratch.path().join(format!("bets-{matches}"));
            let seconds = if plan.quick { 3.0 } else { 10.0 };
            bets.push(bets_run(plan.servers.launch(&dir, &[]), matches, 50, seconds).await?);
        }
        report["bets"] = json!(bets);
    }

    // 7. Producers: recovery of every match, and how soon subscribers learn
    // a producer is down and back.
    if plan.wants("producers") {
        progress("producers: the simulator as the provider");
        report["producers"] =
            crate::producers::producers_run(&plan.servers, &scratch.path().join("producers"), plan.quick).await?;
    }

    // 7b. Names: their cost in frame bytes and update latency; a fixture
    // endpoint down or slow.
    if plan.wants("names") {
        report["names"] = crate::names::names_run(&plan.servers, &scratch.path().join("names"), plan.quick).await?;
    }

    // 8. Hot swap under load: v1 → v2 → v1 while clients watch.
    if plan.wants("swap") {
        progress(&format!(
            "hot swap: {} matches, {} clients",
            s.swap_matches, s.swap_clients
        ));
        report["swap"] = crate::swap::swap_run(&plan.servers, &scratch.path().join("swap"), s, &ids, plan.seed).await?;
    }
    // 9. The cluster: throughput against a single node, scaling over two
    // pinned cores, failover after kill -9.
    if plan.wants("cluster") {
        report["cluster"] =
            crate::cluster::cluster_run(&plan.servers, &scratch.path().join("cluster"), &s.cluster, plan.seed).await?;
    }
    report["targets"] = targets(&report);
    report["elapsed_s"] = json!(started.elapsed().as_secs_f64());

    let table = table(&report);
    println!("{table}");
    if let Some(dir) = plan.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&plan.out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", plan.out.display()))?;
    let svg = plan.out.with_extension("svg");
    std::fs::write(&svg, latency_svg(&curves)).with_context(|| format!("writing {}", svg.display()))?;
    progress(&format!(
        "wrote {} and {} in {:.0} s",
        plan.out.display(),
        svg.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The fan-out runs with permessage-deflate, Touchline's (`deflate`) and
/// the peer's (`peer_deflate`), beside the same clients' uncompressed runs
/// (`plain`, `peer`): wire bytes and server CPU per delivery, as ratios.
fn deflate_versus(clients: usize, plain: &Value, peer: &Value, deflate: Value, peer_deflate: Value) -> Value {
    let ratio = |k: &str, over: &Value| deflate[k].as_f64().zip(over[k].as_f64()).map(|(d, p)| d / p);
    let peer_ratio = |k: &str| peer_deflate[k].as_f64().zip(peer[k].as_f64()).map(|(d, p)| d / p);
    let figures = |r: &Value| {
        json!({
            "wire_bytes_per_delivery": r["wire_bytes_per_delivery"],
            "bytes_per_delivery": r["bytes_per_delivery"],
            "server_cpu_s_per_100k_deliveries": r["server_cpu_s_per_100k_deliveries"],
            "deliveries_per_server_cpu_s": r["deliveries_per_server_cpu_s"],
            "latency_p99_us": r["latency_us"]["p99"],
            "generator_cpu_percent": r["generator_cpu_percent"],
        })
    };
    json!({
        "clients": clients,
        "plain": figures(plain),
        "deflate": figures(&deflate),
        "wire_bytes_deflate_over_plain": ratio("wire_bytes_per_delivery", plain),
        "cpu_per_delivery_deflate_over_plain": ratio("server_cpu_s_per_100k_deliveries", plain),
        "deliveries_per_server_cpu_s_over_uncompressed_peer": ratio("deliveries_per_server_cpu_s", peer),
        peer::NAME: figures(&peer_deflate),
        "peer_wire_bytes_deflate_over_plain": peer_ratio("wire_bytes_per_delivery"),
        "peer_cpu_per_delivery_deflate_over_plain": peer_ratio("server_cpu_s_per_100k_deliveries"),
        // Both compressing: Touchline once per frame, the peer per client.
        "deliveries_per_server_cpu_s_over_peer": ratio("deliveries_per_server_cpu_s", &peer_deflate),
        "result": deflate,
        "peer_result": peer_deflate,
    })
}

/// The server's own words if `e` is its refusal of `--realtime-priority`
/// (it exited before READY, its log says so), read before the scratch
/// directory goes.
fn refusal(e: &anyhow::Error) -> Option<String> {
    let touchline_testkit::Error::NotReady { log } = e.downcast_ref::<touchline_testkit::Error>()? else {
        return None;
    };
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().find(|l| l.contains("was refused")).map(str::to_owned)
}

/// The faults scenario's second pair of runs: the serving threads under
/// `SCHED_FIFO` at this priority (`--realtime-priority`).
const REALTIME_PRIORITY: u8 = 1;

/// Deterministic feed bytes for `matches` matches and how many match events
/// they hold.
pub(crate) fn traffic(seed: u64, matches: u32, n: usize) -> (Vec<u8>, u64) {
    let mut g = Generator::new(&SimConfig {
        matches,
        seed,
        rate: 50.0,
        count: 0,
    });
    let mut out = Vec::with_capacity(n * 8 * 1024);
    let mut events = 0;
    for _ in 0..n {
        let m = g.next_message();
        if !m.starts_with("<alive") {
            events += 1;
        }
        out.extend_from_slice(m.as_bytes());
    }
    (out, events)
}

pub(crate) fn match_ids(seed: u64, matches: u32) -> Vec<String> {
    let first = 40_000_000 + (seed % 1000) * 100_000;
    (0..u64::from(matches))
        .map(|i| format!("sr:match:{}", first + i))
        .collect()
}

fn parse_limit(stream: &[u8], seconds: f64) -> Value {
    let started = Instant::now();
    let (mut messages, mut bytes, mut rounds) = (0u64, 0u64, 0u64);
    while started.elapsed().as_secs_f64() < seconds || rounds == 0 {
        let mut framer = Framer::new(4 << 20);
        for chunk in stream.chunks(64 * 1024) {
            framer.push(chunk);
            while let Some(frame) = framer.next_message() {
                if let Ok(f) = frame
                    && let Ok(m) = parse(&f)
                {
                    std::hint::black_box(&m);
                    messages += 1;
                }
            }
        }
        bytes += stream.len() as u64;
        rounds += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let sizes = message_sizes(stream);
    json!({
        "messages_per_s": messages as f64 / secs,
        "mb_per_s": bytes as f64 / secs / 1e6,
        "seconds": secs,
        "message_bytes": sizes,
    })
}

/// Size distribution of the stream's messages (to show it is realistic).
fn message_sizes(stream: &[u8]) -> Value {
    let mut framer = Framer::new(4 << 20);
    framer.push(stream);
    let mut by_kind: std::collections::BTreeMap<&'static str, (u64, usize, usize)> = Default::default();
    while let Some(Ok(f)) = framer.next_message() {
        if let Ok(m) = parse(&f) {
            let e = by_kind.entry(m.kind()).or_insert((0, usize::MAX, 0));
            e.0 += 1;
            e.1 = e.1.min(f.len());
            e.2 = e.2.max(f.len());
        }
    }
    let total: u64 = by_kind.values().map(|v| v.0).sum();
    json!({
        "mean": stream.len() as f64 / total.max(1) as f64,
        "by_kind": by_kind.iter().map(|(k, (n, lo, hi))| (k.to_string(), json!({"count": n, "min": lo, "max": hi}))).collect::<serde_json::Map<_, _>>(),
    })
}

pub(crate) fn pipeline_run(launch: Launch, stream: Arc<Vec<u8>>, events: u64) -> anyhow::Result<Value> {
    let server = launch.start()?;
    let cpu0 = server.cpu_seconds();
    let written0 = server.written_bytes();
    let started = Instant::now();
    let writer = load::blast(server.feed, stream.clone());
    server.wait_metric(
        "touchline_events_applied_total",
        events as f64,
        Duration::from_secs(600),
    )?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu0;
    let written = server.written_bytes().saturating_sub(written0);
    writer.join().map_err(|_| anyhow::anyhow!("feed writer panicked"))??;
    let m = server.metrics()?;
    let result = json!({
        "events_per_s": events as f64 / secs,
        "mb_per_s": stream.len() as f64 / secs / 1e6,
        "seconds": secs,
        "server_cpu_s": cpu,
        "written_bytes_per_event": written as f64 / events as f64,
        "store_ops_per_s": m.value("touchline_store_ops_total") / secs,
        "store_commit_p99_s": m.quantile("touchline_store_commit_seconds", 0.99),
        "rss_bytes": server.rss_bytes(),
        "feed_errors": m.value("touchline_feed_errors_total"),
        // States saved in memory per event applied (`worker::checkpoint`:
        // none under a backlog).
        "checkpoints_per_event": m.value("touchline_checkpoints_total") / events as f64,
    });
    stop_server(server)?;
    Ok(result)
}

pub(crate) fn latency_json(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.50),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}

/// `clients` WebSocket clients each placing bets back to back (one in
/// flight per client) on `matches` matches for `seconds`; every bet is at
/// the current odds, so every one is decided, accepted and made durable.
async fn bets_run(launch: Launch, matches: u32, clients: usize, seconds: f64) -> anyhow::Result<Value> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    // Bets are taken only while their producer is up: the feed connection
    // stays open and a recording provider's recoveries are completed on it.
    let provider = touchline_testkit::provider::Provider::start()?;
    let server = launch.args(["--recovery-url", &provider.url()]).start()?;
    let mut feed = std::net::TcpStream::connect(server.feed)?;
    touchline_testkit::provider::bring_up(&provider, &mut feed, server.http, Duration::from_secs(30))?;
    let ids = match_ids(99, matches);
    let book: String = ids
        .iter()
        .map(|id| {
            format!(
                r#"<odds_change product="1" event_id="{id}" timestamp="{}"><odds><market id="1" status="1"><outcome id="1" odds="2.0" active="1"/><outcome id="2" odds="3.0" active="1"/><outcome id="3" odds="4.0" active="1"/></market></odds></odds_change>"#,
                touchline_testkit::provider::now_ms()
            )
        })
        .collect();
    std::io::Write::write_all(&mut feed, book.as_bytes())?;
    server.wait_metric(
        "touchline_events_applied_total",
        ids.len() as f64,
        Duration::from_secs(60),
    )?;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (http, ids) = (server.http, ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = load::histogram();
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws")).await?;
            let mut k = 0usize;
            while Instant::now() < deadline {
                let m = &ids[(c + k) % ids.len()];
                let bet = json!({"op": "bet", "id": format!("bench-{c}-{k}"), "match": m, "market": 1, "outcome": "1", "odds": 2.0, "stake": 1.0});
                let sent = Instant::now();
                ws.send(Message::Text(bet.to_string().into())).await?;
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) if t.as_str().contains("\"type\":\"bet\"") => break,
                        Some(Ok(_)) => {}
                        _ => anyhow::bail!("connection closed"),
                    }
                }
                let _ = h.record(sent.elapsed().as_micros().max(1) as u64);
                k += 1;
            }
            anyhow::Ok(h)
        }));
    }
    let mut latency = load::histogram();
    for t in tasks {
        latency.add(&t.await??)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let m = server.metrics()?;
    let accepted = m.value("touchline_bets_total{decision=\"accepted\"");
    let result = json!({
        "matches": matches,
        "clients": clients,
        "bets": latency.len(),
        "bets_per_s": latency.len() as f64 / secs,
        "accepted": accepted,
        "round_trip_us": latency_json(&latency),
        "decision_s": {"p50": m.quantile("touchline_bet_decision_seconds", 0.5), "p99": m.quantile("touchline_bet_decision_seconds", 0.99)},
        "confirm_s": {"p50": m.quantile("touchline_bet_confirm_seconds", 0.5), "p99": m.quantile("touchline_bet_confirm_seconds", 0.99)},
    });
    stop_server(server)?;
    Ok(result)
}
