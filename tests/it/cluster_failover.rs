//! Issue 13, failover: an owner `kill -9`'d while the feed streams. Its
//! partitions are taken over after the lease TTL; the new owner rebuilds
//! each match from `TL_EVENTS` (same events, same order: the same seqs and
//! the same epoch), and a client on a surviving node sees every update,
//! no gap, ending in the state a single node fed the same stream reaches.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use touchline::cluster::Partitions;

use crate::support::nodes::{
    PARTITIONS, cluster, holdings, messages, owners_snapshots, reference, stream, subscribed, until_current,
};
use crate::support::{DEADLINE, Tracker, normalise};

/// The lease TTL of [`node`] (1 s) plus the expiry of the dead node's keys
/// and a round of balancing, with room for a loaded 2-core machine.
const TAKEOVER_WITHIN: Duration = Duration::from_secs(7);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_killed_while_the_feed_streams_is_taken_over_without_a_gap() {
    let (_nats, [a, b, c], held) = cluster(["a", "b", "c"]);
    let (msgs, ids, events) = messages(24, 1500);
    let msgs = Arc::new(msgs);
    let partitions = Partitions::new(PARTITIONS).expect("count");
    let on_b: Vec<&String> = ids
        .iter()
        .filter(|m| held["b"].contains(&partitions.partition_of(m)))
        .collect();
    assert!(!on_b.is_empty(), "b runs some of the matches");

    let mut ws = subscribed(&a, &ids).await;
    let mut tracker = Tracker::default();
    let sent = Arc::new(AtomicUsize::new(0));
    let feeder = stream(&a, msgs.clone(), sent.clone());

    // A third of the way in, b dies.
    while sent.load(Ordering::Relaxed) < msgs.len() / 3 {
        tracker.apply(&ws.next().await);
    }
    let epochs_before: Vec<(String, u64)> = on_b
        .iter()
        .filter_map(|m| Some(((*m).clone(), tracker.matches.get(*m)?.epoch)))
        .collect();
    let seqs_before: Vec<u64> = on_b
        .iter()
        .map(|m| tracker.matches.get(*m).map_or(0, |v| v.seq))
        .collect();
    let killed = Instant::now();
    drop(b.kill9());
    // Until a sees the partitions held by a and c alone, reading the
    // client meanwhile.
    let mut taken = None;
    let mut first_update = None;
    while taken.is_none() || first_update.is_none() {
        // Frames as they come; the holdings looked at between them (also
        // when none comes for a while).
        let f = tokio::time::timeout(Duration::from_millis(100), ws.next())
            .await
            .unwrap_or(serde_json::Value::Null);
        if !f.is_null() {
            tracker.apply(&f);
        }
        // The new owner's first frame for one of b's matches: an update,
        // or the snapshot that catches the relay up when the new owner
        // replayed past the feed's end before the relay saw its frames.
        if first_update.is_none()
            && (f["type"] == "update" || f["type"] == "snapshot")
            && let Some(i) = on_b.iter().position(|m| f["match"] == m.as_str())
            && f["seq"].as_u64() > Some(seqs_before[i])
        {
            first_update = Some(killed.elapsed());
        }
        if taken.is_none()
            && let Some(h) = tokio::task::block_in_place(|| holdings(&a))
            && !h.contains_key("b")
        {
            taken = Some((killed.elapsed(), h));
        }
        assert!(killed.elapsed() < DEADLINE, "no takeover: {:?}", holdings(&a));
    }
    let (took, after) = taken.expect("taken");
    let first_update = first_update.expect("an update");
    assert!(took < TAKEOVER_WITHIN, "taken over in {took:?} (TTL 1 s)");
    feeder.join().expect("feeder");

    // The same stream on one node: the state every match must reach.
    let reference = reference(&msgs, &ids, events).await;
    // The client on a reaches it, with no gap, b's matches still in the
    // epoch they had.
    until_current(&mut ws, &mut tracker, &reference).await;
    assert_eq!(tracker.gaps, 0, "no update missed across the failover");
    for (m, epoch) in &epochs_before {
        assert_eq!(tracker.matches[m].epoch, *epoch, "{m} kept its epoch");
    }
    // And so do the owners now (a and c).
    let run_by = |node: &str| {
        ids.iter()
            .filter(|m| after[node].contains(&partitions.partition_of(m)))
            .cloned()
            .collect()
    };
    let owners = owners_snapshots(&[(&a, run_by("a")), (&c, run_by("c"))]).await;
    for (m, snap) in &owners {
        assert_eq!(snap["seq"], reference[m]["seq"], "{m}");
        assert_eq!(normalise(&snap["state"]), normalise(&reference[m]["state"]), "{m}");
    }
    eprintln!(
        "kill -9 of b ({} of {} matches): partitions held by a and c after {took:?}, first frame (update or catch-up snapshot) of one of b's matches after {first_update:?}",
        on_b.len(),
        ids.len()
    );
}

/// Snapshots in JetStream: the owner keeps each match's snapshot (every 8
/// events here) and trims the events it covers from `TL_EVENTS`; killed,
/// its partitions' new owner restores each match from its snapshot and
/// applies only the events left after it, reaching the single node's
/// state with the same seqs and epochs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_restores_each_match_from_its_snapshot_and_applies_only_what_follows() {
    use std::io::Write as _;

    use crate::support::nodes::{events_in, handled, matches_of, serve_node, settled, wait_sum};
    let nats = crate::support::cluster::nats();
    let extra = [
        "--lease-ttl-ms",
        "1000",
        "--snapshot-every",
        "8",
        "--cluster-snapshot-every",
        "8",
    ];
    let [a, b] = ["a", "b"].map(|id| serve_node(&nats.url(), id, &extra));
    tokio::task::block_in_place(|| settled(&a, &["a", "b"]));
    let (msgs, ids, events) = messages(12, 600);
    a.feed().write_all(&msgs.concat()).expect("feeding a");
    tokio::task::block_in_place(|| wait_sum(&[&a, &b], "events handled", events_in(&msgs), handled));
    let on_b = tokio::task::block_in_place(|| matches_of(&b));
    assert!(!on_b.is_empty(), "b runs some of the matches");

    // b stored snapshots and trimmed what they cover.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("a NATS client"));
    let stored_events = || {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream("TL_EVENTS").await.expect("the events stream");
            stream.info().await.expect("its info").state.messages
        }
    };
    let started = Instant::now();
    while stored_events().await >= events as u64 {
        assert!(started.elapsed() < DEADLINE, "TL_EVENTS was never trimmed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(b.metric(r#"touchline_cluster_snapshots_total{kind="stored""#) > 0.0);
    let before = owners_snapshots(&[(&b, on_b.clone())]).await;

    let (restored, applied) = (
        a.metric("touchline_restore_seconds_count"),
        a.metric("touchline_events_applied_total"),
    );
    drop(b.kill9());
    tokio::task::block_in_place(|| {
        crate::support::wait_for("a runs every match", || (matches_of(&a) == ids).then_some(()))
    });
    // a applies what the snapshots do not cover: until it is at the seqs
    // a single node fed the same stream reaches.
    let reference = reference(&msgs, &ids, events).await;
    let took = Instant::now();
    let owners = loop {
        let owners = owners_snapshots(&[(&a, on_b.clone())]).await;
        if owners.iter().all(|(m, snap)| snap["seq"] == reference[m]["seq"]) {
            break owners;
        }
        assert!(took.elapsed() < DEADLINE, "a never caught up: {owners:?}");
    };
    let restored = a.metric("touchline_restore_seconds_count") - restored;
    let replayed = a.metric("touchline_events_applied_total") - applied;
    let b_events: usize = msgs
        .iter()
        .filter(|m| {
            on_b.iter()
                .any(|id| std::str::from_utf8(m).is_ok_and(|t| t.contains(id.as_str())))
        })
        .count();
    assert!(
        restored >= on_b.len() as f64,
        "each of b's matches restored from a snapshot: {restored}"
    );
    assert!(
        replayed < b_events as f64 / 2.0,
        "only what the snapshots do not cover is applied again: {replayed} of {b_events}"
    );
    for (m, snap) in &owners {
        assert_eq!(snap["seq"], reference[m]["seq"], "{m}");
        assert_eq!(snap["epoch"], before[m]["epoch"], "{m} kept its epoch");
        assert_eq!(normalise(&snap["state"]), normalise(&reference[m]["state"]), "{m}");
    }
    eprintln!(
        "kill -9 of b ({} matches): restored from snapshots, {replayed} of their {b_events} events applied again",
        on_b.len()
    );
}
