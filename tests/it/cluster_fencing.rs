//! Issue 13, fencing: a node paused (SIGSTOP) past its lease TTL loses its
//! partitions to the others; resumed (SIGCONT), it publishes nothing for
//! them. Every frame carries the publisher's lease token: after the resume,
//! a frame with one of the paused node's old tokens would be a stale
//! owner's. Underneath, the stream itself refuses a frame behind a later
//! tenure's barrier (`cluster::barrier`), so what a paused node's NATS
//! client still held when it stopped reaches no one either.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use touchline::cluster::Partitions;
use touchline::cluster::frames::FrameHead;
use touchline::cluster::partition::match_id;

use async_nats::jetstream::context::PublishErrorKind;
use touchline::cluster::barrier::{self, Raised};

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

/// The store side alone, on one real nats-server: a frame is republished
/// to `tl.fr.<match>` only while the barrier it expects is its
/// partition's last; raising is idempotent for its tenure and refused to
/// an earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_refuses_a_frame_behind_a_later_tenures_barrier() {
    let server = crate::support::cluster::nats();
    let cluster = crate::support::cluster::connect(&[server.url()], "a", Duration::from_secs(1), 1).await;
    let mut frames = cluster.client.subscribe("tl.fr.>").await.expect("subscribed");
    cluster.client.flush().await.expect("subscription registered");
    let p = 5;
    async fn next_seq(frames: &mut async_nats::Subscriber) -> u64 {
        let m = tokio::time::timeout(DEADLINE, frames.next())
            .await
            .expect("a frame in time")
            .expect("subscribed");
        assert_eq!(m.subject.as_str(), "tl.fr.m");
        FrameHead::read(m.headers.as_ref().expect("headers"))
            .expect("a head")
            .seq
    }
    let frame = |seq: u64, token: u64, barrier: u64| {
        let mut headers = FrameHead {
            kind: "update".into(),
            epoch: 1,
            seq,
            token,
        }
        .headers();
        barrier::expect(&mut headers, p, barrier);
        headers
    };

    let Ok(Raised::Held { sequence: first }) = barrier::raise(&cluster, p, 10).await else {
        panic!("the first tenure raises the barrier")
    };
    assert_eq!(
        barrier::raise(&cluster, p, 10).await.expect("raised again"),
        Raised::Held { sequence: first },
        "raising again under the same token changes nothing"
    );
    let publish = |seq, token, barrier| {
        cluster
            .client
            .publish_with_headers("tl.fo.m", frame(seq, token, barrier), "{}".into())
    };
    publish(1, 10, first).await.expect("published");
    assert_eq!(
        next_seq(&mut frames).await,
        1,
        "the holder's frame is stored and republished"
    );

    let Ok(Raised::Held { sequence: second }) = barrier::raise(&cluster, p, 20).await else {
        panic!("the next tenure raises the barrier")
    };
    assert!(second > first);
    // The previous tenure's frame, as a paused node's client would send
    // it on resuming: refused by the stream...
    let refused = cluster
        .js
        .publish_with_headers("tl.fo.m", frame(2, 10, first), "{}".into())
        .await
        .expect("sent")
        .await
        .expect_err("refused by the barrier");
    assert_eq!(refused.kind(), PublishErrorKind::WrongLastSequence);
    publish(2, 10, first).await.expect("sent");
    // ...and never republished: the next frame seen is the new tenure's.
    publish(3, 20, second).await.expect("published");
    assert_eq!(next_seq(&mut frames).await, 3, "only the new tenure's frame is seen");
    assert_eq!(
        barrier::raise(&cluster, p, 10).await.expect("read"),
        Raised::Superseded { by: 20 },
        "an earlier tenure never takes the barrier back"
    );
}
