//! Issue 13, relays: a node's stand-in for a match another node runs lives
//! only while its sessions want it. Unsubscribed, it is let go after
//! `--relay-idle-ms` (its NATS subscription and memory with it); a later
//! subscription gets a new one, which carries the match on with no gap. A
//! session resuming with `since` is resumed from the relay's ring, or from
//! what `TL_FRAMES` keeps when the relay is new.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::nodes::{
    events_in, handled, matches_of, messages, reference, serve_node, settled, until_current, wait_sum,
};
use crate::support::{DEADLINE, Tracker, Ws, wait_for};

/// The relays' idle time in this test.
const IDLE: Duration = Duration::from_millis(400);

/// Read `ws` into `tracker` until it has a snapshot of every one of `ids`.
async fn snapshots_of(ws: &mut Ws, tracker: &mut Tracker, ids: &BTreeSet<String>) {
    let mut got = BTreeSet::new();
    while got.len() < ids.len() {
        let f = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("a snapshot in time");
        if f["type"] == "snapshot"
            && let Some(m) = f["match"].as_str()
        {
            got.insert(m.to_owned());
        }
        tracker.apply(&f);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_relay_is_let_go_and_a_later_subscription_gets_a_new_one() {
    let nats = crate::support::cluster::nats();
    let idle = IDLE.as_millis().to_string();
    let extra = ["--lease-ttl-ms", "1000", "--relay-idle-ms", idle.as_str()];
    let [a, b] = ["a", "b"].map(|id| serve_node(&nats.url(), id, &extra));
    tokio::task::block_in_place(|| settled(&a, &["a", "b"]));
    let (msgs, _, _) = messages(8, 400);
    let (first, rest) = msgs.split_at(200);
    a.feed().write_all(&first.concat()).expect("feeding a");
    tokio::task::block_in_place(|| wait_sum(&[&a, &b], "events handled", events_in(first), handled));
    // b's matches, watched from a: through relays.
    let on_b = tokio::task::block_in_place(|| matches_of(&b));
    assert!(!on_b.is_empty(), "b runs some of the matches");
    let relays = |n: f64| {
        let a = &a;
        move || (a.metric("touchline_cluster_relays") == n).then_some(())
    };
    let names: Vec<&String> = on_b.iter().collect();
    let mut ws = Ws::connect(a.http).await;
    let mut tracker = Tracker::default();
    ws.send(json!({"op": "subscribe", "matches": names})).await;
    snapshots_of(&mut ws, &mut tracker, &on_b).await;
    assert_eq!(
        a.metric("touchline_cluster_relays"),
        on_b.len() as f64,
        "one relay per match"
    );

    // Unsubscribed (the client stays): every relay is let go.
    ws.send(json!({"op": "unsubscribe", "matches": names})).await;
    let unsubscribed = Instant::now();
    tokio::task::block_in_place(|| wait_for("the relays let go", relays(0.0)));
    let took = unsubscribed.elapsed();
    assert!(took >= IDLE, "let go only after the idle time: {took:?}");

    // Subscribed again: new relays, and the matches go on from there with
    // no gap to the owner's state.
    let mut tracker = Tracker::default();
    ws.send(json!({"op": "subscribe", "matches": names})).await;
    let resubscribed = Instant::now();
    snapshots_of(&mut ws, &mut tracker, &on_b).await;
    assert_eq!(a.metric("touchline_cluster_relays"), on_b.len() as f64);
    a.feed().write_all(&rest.concat()).expect("feeding a");
    let (all, ids, events) = messages(8, 400);
    let want: BTreeMap<_, _> = reference(&all, &ids, events)
        .await
        .into_iter()
        .filter(|(m, _)| on_b.contains(m))
        .collect();
    until_current(&mut ws, &mut tracker, &want).await;
    assert_eq!(tracker.gaps, 0, "no update missed through the new relays");
    // Relays with a session are kept, however long: the client reads on
    // for three idle times (a negative, so watched for a while).
    while resubscribed.elapsed() < 3 * IDLE {
        if let Ok(f) = tokio::time::timeout(IDLE / 4, ws.next()).await {
            tracker.apply(&f);
        }
    }
    assert_eq!(
        a.metric("touchline_cluster_relays"),
        on_b.len() as f64,
        "kept while wanted"
    );
    eprintln!(
        "{} relays let go {took:?} after the unsubscribe (idle {IDLE:?}); new ones carried on with no gap",
        on_b.len()
    );
}

/// A session resuming with `since` through a relay is resumed (a `resumed`
/// head, then the updates it missed), not sent a snapshot: on a node whose
/// relay forwarded every update after it, from the relay's ring; on a node
/// with no relay for the match yet, from what `TL_FRAMES` keeps. Both then
/// go on with no gap to the owner's final state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resuming_through_a_relay_gets_what_it_missed_not_a_snapshot() {
    use crate::support::nodes::owners_snapshots;
    let nats = crate::support::cluster::nats();
    let [a, b, c] = ["a", "b", "c"].map(|id| serve_node(&nats.url(), id, &["--lease-ttl-ms", "1000"]));
    tokio::task::block_in_place(|| settled(&a, &["a", "b", "c"]));
    let (msgs, ids, events) = messages(8, 450);
    let (first, rest) = msgs.split_at(150);
    let (second, third) = rest.split_at(150);
    a.feed().write_all(&first.concat()).expect("feeding a");
    tokio::task::block_in_place(|| wait_sum(&[&a, &b, &c], "events handled", events_in(first), handled));
    let on_b = tokio::task::block_in_place(|| matches_of(&b));
    assert!(!on_b.is_empty(), "b runs some of the matches");
    let names: Vec<&String> = on_b.iter().collect();

    // A client on a follows b's matches through relays; where it was after
    // the first part is the resume point.
    let mut watcher = Ws::connect(a.http).await;
    let mut seen = Tracker::default();
    watcher.send(json!({"op": "subscribe", "matches": names})).await;
    snapshots_of(&mut watcher, &mut seen, &on_b).await;
    let now = owners_snapshots(&[(&b, on_b.clone())]).await;
    until_current(&mut watcher, &mut seen, &now).await;
    let at: BTreeMap<String, _> = seen.matches.clone();
    let since: serde_json::Map<String, serde_json::Value> = at
        .iter()
        .map(|(m, v)| (m.clone(), json!({"epoch": v.epoch, "seq": v.seq})))
        .collect();

    // The second part goes by (the relays forward it to the watcher)...
    let fed = events_in(first) + events_in(second);
    a.feed().write_all(&second.concat()).expect("feeding a");
    tokio::task::block_in_place(|| wait_sum(&[&a, &b, &c], "events handled", fed, handled));
    let now = owners_snapshots(&[(&b, on_b.clone())]).await;
    until_current(&mut watcher, &mut seen, &now).await;

    // ...and clients that were at the resume point come back, on a (its
    // relays forwarded it all) and on c (no relay for b's matches yet).
    assert_eq!(c.metric("touchline_cluster_relays"), 0.0, "c has no relay yet");
    let mut back = Vec::new();
    for node in [&a, &c] {
        let mut ws = Ws::connect(node.http).await;
        let mut tracker = Tracker {
            matches: at.clone(),
            ..Tracker::default()
        };
        ws.send(json!({"op": "subscribe", "matches": names, "since": since}))
            .await;
        let mut resumed = BTreeSet::new();
        while resumed.len() < on_b.len() {
            let f = tokio::time::timeout(DEADLINE, ws.next())
                .await
                .expect("a frame in time");
            assert_ne!(f["type"], "snapshot", "resumed, not sent a snapshot: {f}");
            if f["type"] == "resumed" {
                assert!(f["producers_down"].is_array(), "the head names the producers down: {f}");
                resumed.insert(f["match"].as_str().expect("match").to_owned());
            }
            tracker.apply(&f);
        }
        assert_eq!(node.metric("touchline_cluster_relay_resumed_total"), on_b.len() as f64);
        back.push((ws, tracker));
    }
    a.feed().write_all(&third.concat()).expect("feeding a");
    let want: BTreeMap<_, _> = reference(&msgs, &ids, events)
        .await
        .into_iter()
        .filter(|(m, _)| on_b.contains(m))
        .collect();
    for (ws, tracker) in &mut back {
        until_current(ws, tracker, &want).await;
        assert_eq!(tracker.gaps, 0, "nothing missed after the resume point");
        for (m, v) in &tracker.matches {
            assert_eq!(Some(v.epoch), since[m]["epoch"].as_u64(), "{m} kept its epoch");
        }
    }
    eprintln!(
        "{} matches resumed through the relays of a (their rings) and c (TL_FRAMES)",
        on_b.len()
    );
}
