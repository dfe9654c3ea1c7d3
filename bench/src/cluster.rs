//! The cluster scenario (issue 13): `touchline serve --cluster` nodes on a
//! real nats-server (`touchline_testkit::NatsServer`, one JetStream server,
//! a fresh one for each run so no run replays another's events), measured
//! three ways:
//!
//! - **Throughput**: the same stream blasted into node a of a 3-node
//!   cluster and into a single node (`serve`, durability on), one after the
//!   other; events applied per second across the nodes (as the pipeline
//!   scenario counts them), and the CPU of every process (nodes and
//!   nats-server).
//! - **Scaling**: one node pinned to core 0 against two nodes pinned to
//!   cores 0 and 1 (`taskset -a -cp`, every thread), the same stream into
//!   node a. nats-server and this generator are not pinned: on a 2-core
//!   machine they share the nodes' cores, which the ratio pays for.
//! - **Failover**: three nodes (default lease TTL, 3 s), a paced feed into
//!   a, a client on a following every match. Node b or c (in turn) is
//!   stopped (SIGSTOP: from then on it sends nothing), and once none of its
//!   matches' frames has reached the client for 200 ms (what it sent before
//!   has arrived) it is killed with -9. One sample is the time from the
//!   stop to the first frame of one of its matches with a seq above the
//!   last the client had: the new owner's. The node is then started again
//!   and the partitions left to settle before the next kill. The client's
//!   seq gaps are counted (the protocol's promise: 0). With 10 kills, p99
//!   is the largest sample.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use touchline::cluster::Partitions;
use touchline::sim::SimConfig;
use touchline_testkit::{NatsCluster, NatsServer, ServerProcess, nodes, procfs};

use crate::load;
use crate::scenarios::{Servers, match_ids, pipeline_run, progress, stop_server, traffic};

/// Bound on the partitions settling among the nodes.
const SETTLE: Duration = Duration::from_secs(60);
/// Bound on a run's events being applied.
const APPLY: Duration = Duration::from_secs(600);
/// Bound on one failover.
const FAILOVER: Duration = Duration::from_secs(30);
/// Matches and feed rate of the failover run.
const FAILOVER_MATCHES: u32 = 24;
const FAILOVER_RATE: f64 = 200.0;
/// The failover run's lease TTL: the default, given explicitly.
const LEASE_TTL_MS: &str = "3000";

/// How big a run is.
pub(crate) struct ClusterSizes {
    /// Matches and messages of the throughput and scaling streams.
    pub matches: u32,
    pub messages: usize,
    pub kills: usize,
}

pub(crate) async fn cluster_run(
    servers: &Servers,
    dir: &Path,
    sizes: &ClusterSizes,
    seed: u64,
) -> anyhow::Result<Value> {
    let (stream, events) = traffic(seed, sizes.matches, sizes.messages);
    let stream = Arc::new(stream);

    progress(&format!("cluster: single node, {events} events"));
    let single = pipeline_run(servers.launch(&dir.join("single"), &[]), stream.clone(), events)?;
    progress("cluster: 3 nodes on one nats-server");
    let three = throughput(
        servers,
        &dir.join("three"),
        &stream,
        events,
        &["a", "b", "c"],
        Setup::default(),
    )?;
    progress("cluster: 3 nodes on 3 nats-servers, replicas 3");
    let replicated = throughput(
        servers,
        &dir.join("replicated"),
        &stream,
        events,
        &["a", "b", "c"],
        Setup {
            replicated: true,
            ..Setup::default()
        },
    )?;
    let pinned = Setup {
        pin: true,
        ..Setup::default()
    };
    progress("cluster: 1 node on core 0");
    let one_pinned = throughput(servers, &dir.join("one-pinned"), &stream, events, &["a"], pinned)?;
    progress("cluster: 2 nodes on cores 0 and 1");
    let two_pinned = throughput(servers, &dir.join("two-pinned"), &stream, events, &["a", "b"], pinned)?;
    progress(&format!("cluster: failover, {} kills", sizes.kills));
    let failover = failover(servers, &dir.join("failover"), sizes.kills, seed).await?;

    let rate = |v: &Value| v["events_per_s"].as_f64();
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    Ok(json!({
        "matches": sizes.matches,
        "events": events,
        "single_node": single,
        "three_nodes": three,
        "three_nodes_replicated": replicated,
        "one_node_on_one_core": one_pinned,
        "two_nodes_on_one_core_each": two_pinned,
        "three_nodes_over_single": ratio(rate(&three), rate(&single)),
        "replicated_over_single": ratio(rate(&replicated), rate(&single)),
        "two_pinned_over_one_pinned": ratio(rate(&two_pinned), rate(&one_pinned)),
        "failover": failover,
    }))
}

/// `serve --cluster URL --node-id ID` on `dir/ID`, plus `extra`.
fn node(servers: &Servers, dir: &Path, nats: &str, id: &str, extra: &[&str]) -> anyhow::Result<ServerProcess> {
    let mut args: Vec<String> = ["--cluster", nats, "--node-id", id].map(str::to_owned).into();
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    servers.start(&dir.join(id), &args)
}

/// Where a throughput run's nodes run.
#[derive(Clone, Copy, Default)]
struct Setup {
    /// Node i on core i (`taskset`).
    pin: bool,
    /// Three nats-servers in one JetStream cluster and `--cluster-replicas
    /// 3` (every publish acknowledged by two of three), instead of one.
    replicated: bool,
}

/// The NATS of a run: one server or a 3-server cluster.
enum Nats {
    One(NatsServer),
    Three(NatsCluster),
}

impl Nats {
    fn urls(&self) -> String {
        match self {
            Nats::One(n) => n.url(),
            Nats::Three(c) => c.urls().join(","),
        }
    }

    fn pids(&self) -> Vec<u32> {
        match self {
            Nats::One(n) => n.pid().into_iter().collect(),
            Nats::Three(c) => (0..3).filter_map(|i| c.server(i).pid()).collect(),
        }
    }
}

/// Nodes `ids` on fresh NATS, settled, placed as `setup` says. The stream
/// is blasted into the first; done when the nodes together have applied
/// every event.
fn throughput(
    servers: &Servers,
    dir: &Path,
    stream: &Arc<Vec<u8>>,
    events: u64,
    ids: &[&str],
    setup: Setup,
) -> anyhow::Result<Value> {
    let (nats, extra): (Nats, &[&str]) = if setup.replicated {
        let c = NatsCluster::start().context("starting 3 nats-servers (make nats installs it)")?;
        (Nats::Three(c), &["--cluster-replicas", "3"])
    } else {
        let n = NatsServer::start().context("starting nats-server (make nats installs it)")?;
        (Nats::One(n), &[])
    };
    // One after the other: the first creates the streams (a Raft group
    // each when replicated).
    let nodes = ids
        .iter()
        .map(|id| {
            let n = node(servers, dir, &nats.urls(), id, extra)?;
            nodes::settled(n.http, &[id], SETTLE)?;
            Ok(n)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    nodes::settled(nodes[0].http, ids, SETTLE)?;
    if setup.pin {
        for (core, n) in nodes.iter().enumerate() {
            let status = std::process::Command::new("taskset")
                .args(["-a", "-cp", &core.to_string(), &n.pid().to_string()])
                .stdout(std::process::Stdio::null())
                .status()
                .context("running taskset")?;
            anyhow::ensure!(status.success(), "taskset -a -cp {core} {} failed", n.pid());
        }
    }
    let nats_pids = nats.pids();
    let cpu = |nodes: &[ServerProcess]| -> (Vec<f64>, f64) {
        (
            nodes.iter().map(ServerProcess::cpu_seconds).collect(),
            nats_pids.iter().map(|p| procfs::cpu_seconds(*p)).sum(),
        )
    };
    let (nodes_cpu0, nats_cpu0) = cpu(&nodes);
    let started = Instant::now();
    let writer = load::blast(nodes[0].feed, stream.clone());
    loop {
        let applied: f64 = nodes
            .iter()
            .map(|n| n.metrics().map_or(0.0, |m| m.value("touchline_events_applied_total")))
            .sum();
        if applied >= events as f64 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < APPLY,
            "{applied} of {events} events applied after {APPLY:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = started.elapsed().as_secs_f64();
    let (nodes_cpu, nats_cpu) = cpu(&nodes);
    writer.join().map_err(|_| anyhow::anyhow!("feed writer panicked"))??;
    let route_errors = nodes[0].metrics()?.value("touchline_route_errors_total");
    for n in nodes {
        stop_server(n)?;
    }
    let nodes_cpu: Vec<f64> = nodes_cpu.iter().zip(&nodes_cpu0).map(|(a, b)| a - b).collect();
    Ok(json!({
        "nodes": ids,
        "pinned": setup.pin,
        "nats_servers": nats_pids.len(),
        "replicas": if setup.replicated { 3 } else { 1 },
        "events_per_s": events as f64 / secs,
        "seconds": secs,
        "nodes_cpu_s": nodes_cpu,
        "nats_cpu_s": nats_cpu - nats_cpu0,
        "route_errors": route_errors,
    }))
}

/// What the failover client saw: each match's last (seq, arrival), and
/// the frames it counted.
#[derive(Default)]
struct Seen {
    last: BTreeMap<String, (u64, Instant)>,
    /// The client's connection closed (the run fails).
    closed: bool,
    gaps: u64,
    snapshots: u64,
    updates: u64,
}

/// A client on `http` following `ids`, until `stop`.
async fn follow(
    http: SocketAddr,
    ids: Vec<String>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
        .await
        .context("the failover client's handshake")?;
    let sub = json!({"op": "subscribe", "matches": ids});
    ws.send(Message::Text(sub.to_string().into())).await?;
    Ok(tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let text = match tokio::time::timeout(Duration::from_millis(100), ws.next()).await {
                Err(_quiet) => continue,
                Ok(Some(Ok(Message::Text(text)))) => text,
                Ok(Some(Ok(_))) => continue,
                Ok(None | Some(Err(_))) => {
                    progress("cluster: the failover client's connection closed");
                    seen.lock().expect("seen lock").closed = true;
                    return;
                }
            };
            let Ok(f) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let (Some(id), Some(seq)) = (f["match"].as_str(), f["seq"].as_u64()) else {
                continue;
            };
            let mut s = seen.lock().expect("seen lock");
            let before = s.last.get(id).map(|(seq, _)| *seq);
            match f["type"].as_str() {
                Some("snapshot") => s.snapshots += 1,
                Some("update") => {
                    s.updates += 1;
                    if before.is_some_and(|b| seq != b + 1) {
                        s.gaps += 1;
                    }
                }
                _ => continue,
            }
            s.last.insert(id.to_owned(), (seq, Instant::now()));
        }
    }))
}

async fn failover(servers: &Servers, dir: &Path, kills: usize, seed: u64) -> anyhow::Result<Value> {
    anyhow::ensure!(kills > 0, "a failover run needs at least one kill");
    let nats = NatsServer::start().context("starting nats-server (make nats installs it)")?;
    let ids = ["a", "b", "c"];
    let mut nodes: BTreeMap<&str, ServerProcess> = BTreeMap::new();
    for id in ids {
        nodes.insert(
            id,
            node(servers, dir, &nats.url(), id, &["--lease-ttl-ms", LEASE_TTL_MS])?,
        );
    }
    let a = (nodes["a"].http, nodes["a"].feed);
    tokio::task::block_in_place(|| nodes::settled(a.0, &ids, SETTLE))?;
    let matches = match_ids(seed, FAILOVER_MATCHES);
    let stop = Arc::new(AtomicBool::new(false));
    let feed = load::paced(
        a.1,
        SimConfig {
            matches: FAILOVER_MATCHES,
            seed,
            rate: FAILOVER_RATE,
            count: 0,
        },
        FAILOVER_RATE,
        None,
        stop.clone(),
    );
    let seen = Arc::new(Mutex::new(Seen::default()));
    let client = follow(a.0, matches.clone(), seen.clone(), stop.clone()).await?;
    let partitions = Partitions::default();
    let mut took = Vec::with_capacity(kills);
    for k in 0..kills {
        let victim = ["b", "c"][k % 2];
        let held = tokio::task::block_in_place(|| nodes::settled(a.0, &ids, SETTLE))?;
        let lost: BTreeSet<&String> = matches
            .iter()
            .filter(|m| held[victim].contains(&partitions.partition_of(m)))
            .collect();
        anyhow::ensure!(!lost.is_empty(), "{victim} runs none of the fed matches");
        let victim_process = nodes.remove(victim).context("the victim")?;
        victim_process.signal("STOP")?;
        let killed = Instant::now();
        // What it sent before the stop reaches the client first.
        let at_kill: BTreeMap<String, u64> = loop {
            {
                let s = seen.lock().expect("seen lock");
                let quiet = lost.iter().all(|m| {
                    s.last
                        .get(*m)
                        .is_none_or(|(_, at)| at.elapsed() >= Duration::from_millis(200))
                });
                if quiet {
                    break lost
                        .iter()
                        .map(|m| ((*m).clone(), s.last.get(*m).map_or(0, |(seq, _)| *seq)))
                        .collect();
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        tokio::task::block_in_place(|| victim_process.kill9())?;
        let first = loop {
            let newer = {
                let s = seen.lock().expect("seen lock");
                at_kill
                    .iter()
                    .filter_map(|(m, before)| s.last.get(m).filter(|(seq, _)| seq > before).map(|(_, at)| *at))
                    .min()
            };
            if let Some(at) = newer {
                break at.saturating_duration_since(killed);
            }
            anyhow::ensure!(
                !seen.lock().expect("seen lock").closed,
                "the failover client was cut off"
            );
            anyhow::ensure!(
                killed.elapsed() < FAILOVER,
                "no frame from {victim}'s matches {FAILOVER:?} after it was killed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        progress(&format!(
            "cluster: kill {} of {kills}: {victim} ({} matches) taken over, first frame {:.2} s after it stopped",
            k + 1,
            lost.len(),
            first.as_secs_f64()
        ));
        took.push(first.as_secs_f64());
        nodes.insert(
            victim,
            node(servers, dir, &nats.url(), victim, &["--lease-ttl-ms", LEASE_TTL_MS])?,
        );
    }
    stop.store(true, Ordering::Relaxed);
    let sent = feed.join().map_err(|_| anyhow::anyhow!("feed panicked"))??;
    client.await?;
    for (_, n) in nodes {
        stop_server(n)?;
    }
    let s = seen.lock().expect("seen lock");
    let mut sorted = took.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    Ok(json!({
        "kills": kills,
        "lease_ttl_ms": LEASE_TTL_MS.parse::<u64>()?,
        "matches": FAILOVER_MATCHES,
        "feed_rate": FAILOVER_RATE,
        "messages_sent": sent,
        "first_frame_after_stop_s": {"p50": pct(0.5), "p99": pct(0.99), "min": sorted[0], "max": sorted[sorted.len() - 1], "all": took},
        "client": {"updates": s.updates, "snapshots": s.snapshots, "seq_gaps": s.gaps},
    }))
}
