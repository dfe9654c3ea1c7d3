//! Issue 13, events partitioned: real `touchline serve --cluster` processes
//! on a real nats-server. A node's feed publishes each match event to
//! `TL_EVENTS`; each partition's owner applies it, whichever node read the
//! feed, and a WebSocket client on any node sees every match (snapshot,
//! then contiguous updates, relayed from the owner); two nodes reading the
//! same stream apply each event once.

use std::collections::BTreeSet;
use std::io::Write as _;

use serde_json::json;
use touchline::cluster::Partitions;
use touchline_testkit::provider::bring_up;

use crate::support::nodes::{
    PARTITIONS, cluster, handled, matches_of, owners_snapshots, subscribed, traffic, until_current, wait_sum,
};
use crate::support::{DEADLINE, Tracker};

#[test]
fn events_fed_to_one_node_are_applied_by_the_owner_of_their_partition() {
    let (_nats, [a, b, c], held) = cluster(["a", "b", "c"]);
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
    let (_nats, [a, b], _) = cluster(["a", "b"]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_any_node_sees_every_match_snapshot_then_contiguous_updates() {
    let (_nats, [a, b, c], held) = cluster(["a", "b", "c"]);
    let (bytes, ids, events) = traffic(24, 600);
    // Subscribed before the matches exist: a's own as they appear, the
    // others' through their relays.
    let mut ws = subscribed(&a, &ids).await;
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
    for (id, snap) in &want {
        assert_eq!(
            Some(tracker.matches[id].epoch),
            snap["epoch"].as_u64(),
            "{id}: the owner's epoch"
        );
    }
    // A client arriving later on a is made current too (a relay's
    // snapshot and the updates after it).
    let mut late = subscribed(&a, &ids).await;
    let mut late_tracker = Tracker::default();
    until_current(&mut late, &mut late_tracker, &want).await;
    assert_eq!(late_tracker.gaps, 0);
    // A bet on a match another node may run is decided by its owner,
    // against the owner's state (the producers are down in this test).
    let some = ids.iter().next().expect("a match");
    ws.send(json!({"op": "bet", "id": "cluster-1", "match": some, "market": 1, "specifiers": "", "outcome": "1", "odds": 2.0, "stake": 10.0}))
        .await;
    let answer = ws.next_matching(|f| f["type"] == "bet" && f["id"] == "cluster-1").await;
    assert_eq!(answer["status"], "rejected", "{answer}");
    assert_eq!(answer["reason"], "producer_down", "{answer}");
    assert_eq!(
        answer["seq"], want[some]["seq"],
        "decided on the owner's state: {answer}"
    );
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

#[test]
fn every_node_hears_what_the_feed_says_about_the_producers() {
    let (_nats, [a, b], _) = cluster(["a", "b"]);
    // Only a reads the feed. Its connection, alives and snapshot_completes
    // reach b too, and so do a's recovery requests: b, with no feed of its
    // own, follows them instead of asking, and the completions of a's
    // requests written on a's feed bring both up.
    let mut feed = a.feed();
    bring_up(&a.provider, &mut feed, a.http, DEADLINE).expect("a's producers up");
    crate::support::wait_for("b's producers up, from a's requests", || {
        touchline_testkit::provider::all_up(b.http, DEADLINE)
            .ok()?
            .then_some(())
    });
    assert!(
        b.provider.requests().is_empty(),
        "b asked for nothing: {:?}",
        b.provider.requests()
    );
    assert_eq!(
        b.metric("touchline_recovery_requests_total"),
        0.0,
        "b's service sent no request"
    );
}
