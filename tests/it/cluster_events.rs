//! Issue 13, events partitioned: real `touchline serve --cluster` processes
//! on a real nats-server. A node's feed publishes each match event to
//! `TL_EVENTS`; each partition's owner applies it, whichever node read the
//! feed, and a WebSocket client on any node sees every match (snapshot,
//! then contiguous updates, relayed from the owner); two nodes reading the
//! same stream apply each event once.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use touchline::cluster::Partitions;
use touchline::feed::parse::{FeedMessage, parse};
use touchline::sim::{Generator, SimConfig};

use crate::support::cluster::nats;
use crate::support::{DEADLINE, Server, Tracker, Ws, http_get, http_request, normalise};

const PARTITIONS: u32 = 8;
const TOKEN: &str = "cluster-events-token-0123456789";

fn node(url: &str, id: &str) -> Server {
    Server::start(&[
        "--cluster",
        url,
        "--node-id",
        id,
        "--partitions",
        &PARTITIONS.to_string(),
        "--lease-ttl-ms",
        "1000",
        "--admin-token",
        TOKEN,
    ])
}

/// Node id → the partitions it holds, as `server` sees the cluster (`None`
/// while a partition is free or `/api/nodes` is briefly unavailable).
fn holdings(server: &Server) -> Option<BTreeMap<String, BTreeSet<u32>>> {
    let (code, body) = http_get(server.http, "/api/nodes");
    let v: Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
    if v["free"].as_array().is_none_or(|f| !f.is_empty()) {
        return None;
    }
    let held = v["nodes"]
        .as_array()?
        .iter()
        .map(|n| {
            let parts = n["partitions"].as_array().into_iter().flatten();
            let parts = parts.filter_map(|p| p.as_u64()).map(|p| p as u32).collect();
            (n["id"].as_str().unwrap_or_default().to_owned(), parts)
        })
        .collect();
    Some(held)
}

/// Wait until every node in `ids` holds partitions and every partition is
/// held, and that has not changed for a second (balancing is over).
fn settled(server: &Server, ids: &[&str]) -> BTreeMap<String, BTreeSet<u32>> {
    let start = Instant::now();
    let mut last: Option<(BTreeMap<String, BTreeSet<u32>>, Instant)> = None;
    loop {
        let now = holdings(server).filter(|h| ids.iter().all(|id| h.get(*id).is_some_and(|p| !p.is_empty())));
        match (&now, &last) {
            (Some(h), Some((l, since))) if h == l && since.elapsed() > Duration::from_secs(1) => return h.clone(),
            (Some(h), Some((l, _))) if h == l => {}
            (Some(h), _) => last = Some((h.clone(), Instant::now())),
            (None, _) => last = None,
        }
        assert!(start.elapsed() < DEADLINE, "the cluster did not settle: {now:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The ids of the matches `server` runs.
fn matches_of(server: &Server) -> BTreeSet<String> {
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

/// `n` simulator messages over `matches` matches; the ids of the matches
/// they carry events for, and how many events.
fn traffic(matches: u32, n: usize) -> (Vec<u8>, BTreeSet<String>, usize) {
    let mut g = Generator::new(&SimConfig {
        matches,
        seed: 13,
        rate: 100.0,
        count: 0,
    });
    let (mut bytes, mut ids, mut events) = (Vec::new(), BTreeSet::new(), 0);
    for _ in 0..n {
        let m = g.next_message();
        if let Ok(FeedMessage::Match(e)) = parse(m.as_bytes()) {
            ids.insert(e.event_id().to_owned());
            events += 1;
        }
        bytes.extend_from_slice(m.as_bytes());
    }
    (bytes, ids, events)
}

/// Wait until `f` over every node reaches `want`; the value.
fn wait_sum(nodes: &[&Server], what: &str, want: f64, f: impl Fn(&Server) -> f64) -> f64 {
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
fn handled(n: &Server) -> f64 {
    n.metric("touchline_events_applied_total") + n.metric("touchline_events_rejected_total")
}

#[test]
fn events_fed_to_one_node_are_applied_by_the_owner_of_their_partition() {
    let nats = nats();
    let url = nats.url();
    let (a, b, c) = (node(&url, "a"), node(&url, "b"), node(&url, "c"));
    let held = settled(&a, &["a", "b", "c"]);
    let (bytes, ids, events) = traffic(24, 600);
    a.feed().write_all(&bytes).expect("feeding a");

    let published = wait_sum(&[&a], "published by a", events as f64, |n| {
        n.metric(r#"touchline_cluster_published_total{kind="new""#)
    });
    assert_eq!(published, events as f64, "every match event published once");
    let nodes = [&a, &b, &c];
    wait_sum(&nodes, "events handled", published, handled);
    // Each match runs on the owner of its partition only, and nowhere else.
    let partitions = Partitions::new(PARTITIONS).expect("count");
    let mut seen = BTreeSet::new();
    for (id, server) in [("a", &a), ("b", &b), ("c", &c)] {
        let mine = matches_of(server);
        assert!(!mine.is_empty(), "node {id} owns {:?} and runs no match", held[id]);
        for m in &mine {
            let p = partitions.partition_of(m);
            assert!(
                held[id].contains(&p),
                "{m} (partition {p}) runs on {id}, which holds {:?}",
                held[id]
            );
            assert!(seen.insert(m.clone()), "{m} runs on two nodes");
        }
    }
    assert_eq!(seen, ids, "every fed match runs somewhere");
    // Nothing more arrives: each event was applied (or refused) once.
    let total: f64 = nodes.iter().map(|n| handled(n)).sum();
    assert_eq!(total, events as f64);
    assert_eq!(
        nodes
            .iter()
            .map(|n| n.metric("touchline_route_errors_total"))
            .sum::<f64>(),
        0.0
    );
}

#[test]
fn two_nodes_fed_the_same_stream_apply_each_event_once() {
    let nats = nats();
    let url = nats.url();
    let (a, b) = (node(&url, "a"), node(&url, "b"));
    settled(&a, &["a", "b"]);
    let (bytes, _, events) = traffic(16, 400);
    // Both feeds at once, as two redundant provider connections.
    std::thread::scope(|s| {
        for n in [&a, &b] {
            let bytes = &bytes;
            s.spawn(move || n.feed().write_all(bytes).expect("feeding"));
        }
    });
    let nodes = [&a, &b];
    let copies = wait_sum(&nodes, "published copies", 2.0 * events as f64, |n| {
        n.metric("touchline_cluster_published_total")
    });
    assert_eq!(copies, 2.0 * events as f64, "both nodes published every event");
    let new: f64 = nodes
        .iter()
        .map(|n| n.metric(r#"touchline_cluster_published_total{kind="new""#))
        .sum();
    assert_eq!(new, events as f64, "the stream kept one copy of each");
    wait_sum(&nodes, "events handled", events as f64, handled);
    let consumed: f64 = nodes
        .iter()
        .map(|n| n.metric(r#"touchline_cluster_consumed_total{kind="event""#))
        .sum();
    assert_eq!(consumed, events as f64, "each stored event read once, by its owner");
    assert_eq!(nodes.iter().map(|n| handled(n)).sum::<f64>(), events as f64);
}

/// Each match's current snapshot, from the node that runs it (after the
/// feed was handled: its final state).
async fn owners_snapshots(owners: &[(&Server, BTreeSet<String>)]) -> BTreeMap<String, Value> {
    let mut want = BTreeMap::new();
    for (server, ids) in owners {
        let mut ws = Ws::connect(server.http).await;
        ws.send(json!({"op": "subscribe", "matches": ids.iter().collect::<Vec<_>>()}))
            .await;
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

/// Read `ws` into `tracker` until every match of `want` is at its seq;
/// then its state must equal the snapshot's.
async fn until_current(ws: &mut Ws, tracker: &mut Tracker, want: &BTreeMap<String, Value>) {
    let behind = |t: &Tracker| {
        want.iter()
            .filter(|(id, snap)| t.matches.get(*id).is_none_or(|v| Some(v.seq) != snap["seq"].as_u64()))
            .count()
    };
    while behind(tracker) > 0 {
        let f = ws.next().await;
        tracker.apply(&f);
    }
    for (id, snap) in want {
        let view = &tracker.matches[id];
        assert_eq!(Some(view.epoch), snap["epoch"].as_u64(), "{id}");
        assert_eq!(
            normalise(&view.state),
            normalise(&snap["state"]),
            "{id}: the snapshot and updates seen equal the owner's snapshot"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_any_node_sees_every_match_snapshot_then_contiguous_updates() {
    let nats = nats();
    let url = nats.url();
    let (a, b, c) = (node(&url, "a"), node(&url, "b"), node(&url, "c"));
    let held = tokio::task::block_in_place(|| settled(&a, &["a", "b", "c"]));
    let (bytes, ids, events) = traffic(24, 600);
    // Subscribed before the matches exist: a's own as they appear, the
    // others' through their relays.
    let mut ws = Ws::connect(a.http).await;
    ws.send(json!({"op": "subscribe", "matches": ids.iter().collect::<Vec<_>>()}))
        .await;
    let mut tracker = Tracker::default();
    tokio::task::block_in_place(|| {
        a.feed().write_all(&bytes).expect("feeding a");
        wait_sum(&[&a, &b, &c], "events handled", events as f64, handled);
    });
    let partitions = Partitions::new(PARTITIONS).expect("count");
    let run_by = |node: &str| -> BTreeSet<String> {
        ids.iter()
            .filter(|m| held[node].contains(&partitions.partition_of(m)))
            .cloned()
            .collect()
    };
    let want = owners_snapshots(&[(&a, run_by("a")), (&b, run_by("b")), (&c, run_by("c"))]).await;
    assert_eq!(want.len(), ids.len());
    until_current(&mut ws, &mut tracker, &want).await;
    assert_eq!(tracker.gaps, 0, "contiguous updates on a");
    // A client arriving later on a is made current too (a relay's
    // snapshot and the updates after it).
    let mut late = Ws::connect(a.http).await;
    late.send(json!({"op": "subscribe", "matches": ids.iter().collect::<Vec<_>>()}))
        .await;
    let mut late_tracker = Tracker::default();
    until_current(&mut late, &mut late_tracker, &want).await;
    assert_eq!(late_tracker.gaps, 0);
    let remote = ids
        .iter()
        .filter(|m| !held["a"].contains(&partitions.partition_of(m)))
        .count();
    assert!(remote > 0, "some matches run on b or c");
    eprintln!(
        "client on a: {} matches ({remote} run elsewhere), every update contiguous",
        ids.len()
    );
}
