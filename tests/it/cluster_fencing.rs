//! Issue 13, fencing: a node paused (SIGSTOP) past its lease TTL loses its
//! partitions to the others; resumed (SIGCONT), it publishes nothing for
//! them. Every frame carries the publisher's lease token: after the resume,
//! a frame with one of the paused node's old tokens would be a stale
//! owner's.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use touchline::cluster::Partitions;
use touchline::cluster::frames::FrameHead;
use touchline::cluster::partition::match_id;

use crate::support::DEADLINE;
use crate::support::nodes::{PARTITIONS, cluster, holdings, messages};

/// A frame seen on `tl.fr.>`: its match's partition and its token.
async fn next_frame(frames: &mut async_nats::Subscriber, partitions: Partitions) -> (u32, u64) {
    let m = tokio::time::timeout(DEADLINE, frames.next())
        .await
        .expect("frames flow")
        .expect("subscribed");
    let id = m
        .subject
        .as_str()
        .rsplit('.')
        .next()
        .and_then(match_id)
        .expect("a match subject");
    let head = FrameHead::read(m.headers.as_ref().expect("headers")).expect("a frame head");
    (partitions.partition_of(&id), head.token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_publishes_nothing_for_the_partitions_it_lost() {
    let (nats, [a, b], held) = cluster(["a", "b"]);
    let url = nats.url();
    let partitions = Partitions::new(PARTITIONS).expect("count");
    let client = async_nats::connect(url.as_str()).await.expect("a NATS client");
    let mut frames = client.subscribe("tl.fr.>").await.expect("subscribed");

    // The feed streams into a for the whole test.
    let (msgs, _, _) = messages(16, 20_000);
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (mut feed, stop) = (a.feed(), stop.clone());
        std::thread::spawn(move || {
            for chunk in msgs.chunks(5) {
                if stop.load(Ordering::Relaxed) || feed.write_all(&chunk.concat()).is_err() {
                    return;
                }
                // The feed's pace, not a wait.
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    // b's token for each of its partitions seen publishing before the
    // pause (one tenure each: a partition's token is its own).
    let mut b_tokens = BTreeMap::new();
    for _ in 0..400 {
        let (p, token) = next_frame(&mut frames, partitions).await;
        if held["b"].contains(&p) {
            b_tokens.insert(p, token);
        }
    }
    assert!(!b_tokens.is_empty(), "b published for its partitions");
    let stale = |p: u32, token: u64| b_tokens.get(&p) == Some(&token);
    b.signal("STOP");
    // a takes b's partitions (after the TTL) and publishes for one of them
    // under its own token.
    let paused = Instant::now();
    let mut seen_before = BTreeSet::new();
    loop {
        let (p, token) = next_frame(&mut frames, partitions).await;
        seen_before.insert(token);
        if b_tokens.contains_key(&p) && !stale(p, token) {
            break;
        }
        assert!(paused.elapsed() < DEADLINE, "a never took b's partitions");
    }
    let took = paused.elapsed();
    assert!(
        took > Duration::from_millis(500),
        "taken over only after b's lease ran out: {took:?}"
    );
    b.signal("CONT");

    // Until b is back (it rejoins, is given partitions again and publishes
    // for one of them under a new token), no frame may carry an old one.
    let resumed = Instant::now();
    let mut late = Vec::new();
    loop {
        let (p, token) = next_frame(&mut frames, partitions).await;
        if stale(p, token) {
            late.push((p, token));
        }
        let back = tokio::task::block_in_place(|| holdings(&a))
            .and_then(|h| h.get("b").cloned())
            .is_some_and(|mine| mine.contains(&p));
        if back && !seen_before.contains(&token) && !b_tokens.values().any(|t| *t == token) {
            break;
        }
        assert!(resumed.elapsed() < DEADLINE, "b did not come back");
    }
    stop.store(true, Ordering::Relaxed);
    feeder.join().expect("feeder");
    assert!(late.is_empty(), "b published under tokens it had lost: {late:?}");
    eprintln!(
        "b paused: a published for b's partitions after {took:?}; b back and publishing under a new token {:?} after SIGCONT; no stale frame",
        resumed.elapsed()
    );
}
