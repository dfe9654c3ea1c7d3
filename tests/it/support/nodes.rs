//! `touchline serve --cluster` processes in tests: starting a node, the
//! partitions each holds (as `/api/nodes` tells), the matches each runs,
//! simulator traffic, and the checks a client's view must pass. Waits poll
//! a condition against a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use touchline::feed::parse::{FeedMessage, parse};
use touchline::sim::{Generator, SimConfig};

use touchline_testkit::NatsServer;

use super::{DEADLINE, Server, Tracker, Ws, http_request, normalise};

/// Partitions of the clusters these tests start.
pub const PARTITIONS: u32 = 8;

/// The nodes' admin token (to list their matches).
pub const TOKEN: &str = "cluster-events-token-0123456789";

/// A nats-server and one node per id on it (lease TTL 1 s), once the
/// partitions have settled among them; who holds which.
pub fn cluster<const N: usize>(ids: [&str; N]) -> (NatsServer, [Server; N], BTreeMap<String, BTreeSet<u32>>) {
    let nats = super::cluster::nats();
    let url = nats.url();
    let nodes = ids.map(|id| node(&url, id));
    // Blocking polls (also from a multi-threaded tokio test).
    let held = tokio::task::block_in_place(|| settled(&nodes[0], &ids));
    (nats, nodes, held)
}

/// A client on `server` subscribed to `ids`.
pub async fn subscribed(server: &Server, ids: &BTreeSet<String>) -> Ws {
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": ids.iter().collect::<Vec<_>>()}))
        .await;
    ws
}

/// `serve --cluster url --node-id id`, lease TTL 1 s.
pub fn node(url: &str, id: &str) -> Server {
    node_ttl(url, id, "1000")
}

/// `serve --cluster url --node-id id` with a lease TTL of `ttl_ms`.
pub fn node_ttl(url: &str, id: &str, ttl_ms: &str) -> Server {
    serve_node(url, id, &["--lease-ttl-ms", ttl_ms])
}

/// `serve --cluster url --node-id id` with the tests' partitions and admin
/// token, and `extra`.
pub fn serve_node(url: &str, id: &str, extra: &[&str]) -> Server {
    let partitions = PARTITIONS.to_string();
    let mut args = vec![
        "--cluster",
        url,
        "--node-id",
        id,
        "--partitions",
        &partitions,
        "--admin-token",
        TOKEN,
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Node id → the partitions it holds, as `server` sees the cluster (`None`
/// while a partition is free or `/api/nodes` is briefly unavailable).
pub fn holdings(server: &Server) -> Option<BTreeMap<String, BTreeSet<u32>>> {
    touchline_testkit::nodes::holdings(server.http)
}

/// Wait until every node in `ids` holds partitions and every partition is
/// held, and that has not changed for a second (balancing is over).
pub fn settled(server: &Server, ids: &[&str]) -> BTreeMap<String, BTreeSet<u32>> {
    touchline_testkit::nodes::settled(server.http, ids, DEADLINE).unwrap_or_else(|e| panic!("{e}"))
}

/// `serve --cluster urls --node-id id --cluster-replicas 3` with the
/// default lease TTL: a node on a 3-server NATS cluster.
pub fn replicated(urls: &[String], id: &str) -> Server {
    serve_node(&urls.join(","), id, &["--cluster-replicas", "3"])
}

/// The ids of the matches `server` runs.
pub fn matches_of(server: &Server) -> BTreeSet<String> {
    let bearer = format!("Bearer {TOKEN}");
    let (code, body) = http_request(
        server.http,
        "GET",
        "/admin/ops/matches",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect()
}

/// `n` simulator messages over `matches` matches, one by one; the ids of
/// the matches they carry events for, and how many events.
pub fn messages(matches: u32, n: usize) -> (Vec<Vec<u8>>, BTreeSet<String>, usize) {
    let mut g = Generator::new(&SimConfig {
        matches,
        seed: 13,
        rate: 100.0,
        count: 0,
    });
    let (mut out, mut ids, mut events) = (Vec::new(), BTreeSet::new(), 0);
    for _ in 0..n {
        let m = g.next_message();
        if let Ok(FeedMessage::Match(e)) = parse(m.as_bytes()) {
            ids.insert(e.event_id().to_owned());
            events += 1;
        }
        out.push(m.into_bytes());
    }
    (out, ids, events)
}

/// How many of `msgs` carry a match event (what the nodes will handle).
pub fn events_in(msgs: &[Vec<u8>]) -> f64 {
    msgs.iter()
        .filter(|m| matches!(parse(m), Ok(FeedMessage::Match(_))))
        .count() as f64
}

/// [`messages`], as one byte stream.
pub fn traffic(matches: u32, n: usize) -> (Vec<u8>, BTreeSet<String>, usize) {
    let (msgs, ids, events) = messages(matches, n);
    (msgs.concat(), ids, events)
}

/// Feed `msgs` to `server` ten at a time, at a live feed's pace, from a
/// thread; `sent` counts them.
pub fn stream(server: &Server, msgs: Arc<Vec<Vec<u8>>>, sent: Arc<AtomicUsize>) -> std::thread::JoinHandle<()> {
    let mut feed = server.feed();
    std::thread::spawn(move || {
        for chunk in msgs.chunks(10) {
            for m in chunk {
                feed.write_all(m).expect("feeding");
            }
            sent.fetch_add(chunk.len(), Ordering::Relaxed);
            // The feed's pace (a live feed is not a burst), not a wait.
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

/// Each match's final snapshot on a single node fed `msgs` (`events` match
/// events, over the matches `ids`): the state a cluster fed the same must
/// reach.
pub async fn reference(msgs: &[Vec<u8>], ids: &BTreeSet<String>, events: usize) -> BTreeMap<String, Value> {
    let single = Server::start(&[]);
    tokio::task::block_in_place(|| {
        single
            .feed()
            .write_all(&msgs.concat())
            .expect("feeding the single node");
        wait_sum(&[&single], "events handled by the single node", events as f64, handled);
    });
    owners_snapshots(&[(&single, ids.clone())]).await
}

/// Wait until `f` over every node reaches `want`; the value.
pub fn wait_sum(nodes: &[&Server], what: &str, want: f64, f: impl Fn(&Server) -> f64) -> f64 {
    let start = Instant::now();
    loop {
        let got: f64 = nodes.iter().map(|n| f(n)).sum();
        if got >= want {
            return got;
        }
        assert!(start.elapsed() < DEADLINE, "{what}: {got}, want {want}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every node's events applied or refused by the guest: each event reached
/// exactly one worker.
pub fn handled(n: &Server) -> f64 {
    n.metric("touchline_events_applied_total") + n.metric("touchline_events_rejected_total")
}

/// Each match's current snapshot, from the node that runs it (after the
/// feed was handled: its final state).
pub async fn owners_snapshots(owners: &[(&Server, BTreeSet<String>)]) -> BTreeMap<String, Value> {
    let mut want = BTreeMap::new();
    for (server, ids) in owners {
        let mut ws = subscribed(server, ids).await;
        let mut got = 0;
        while got < ids.len() {
            let f = ws.next().await;
            if f["type"] == "snapshot" {
                got += 1;
                want.insert(f["match"].as_str().expect("match").to_owned(), f);
            }
        }
    }
    want
}

/// How many matches of `want` the client is not at the seq of.
pub fn behind(tracker: &Tracker, want: &BTreeMap<String, Value>) -> usize {
    want.iter()
        .filter(|(id, snap)| {
            tracker
                .matches
                .get(*id)
                .is_none_or(|v| Some(v.seq) != snap["seq"].as_u64())
        })
        .count()
}

/// Read `ws` into `tracker` until every match of `want` is at its seq;
/// then its state must equal the snapshot's (the epochs are the caller's
/// to check).
pub async fn until_current(ws: &mut Ws, tracker: &mut Tracker, want: &BTreeMap<String, Value>) {
    while behind(tracker, want) > 0 {
        let Ok(f) = tokio::time::timeout(DEADLINE / 2, ws.next()).await else {
            let late: Vec<_> = want
                .iter()
                .filter_map(|(id, snap)| {
                    let seen = tracker.matches.get(id).map(|v| (v.epoch, v.seq));
                    (seen.map(|s| s.1) != snap["seq"].as_u64())
                        .then(|| format!("{id}: at {seen:?}, want {}", snap["seq"]))
                })
                .collect();
            panic!("the client stopped short: {late:?}");
        };
        tracker.apply(&f);
    }
    for (id, snap) in want {
        let view = &tracker.matches[id];
        assert_eq!(
            normalise(&view.state),
            normalise(&snap["state"]),
            "{id}: the snapshot and updates seen equal the owner's snapshot"
        );
    }
}
