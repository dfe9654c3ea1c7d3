//! Partition leases against real nats-server processes (issue 13): every
//! partition owned once and shares balanced; a crashed holder taken over
//! after the TTL; a graceful shutdown handed over at once; a holder cut
//! off from NATS drops its partitions before anyone can take them (the
//! fencing rule); with a 3-server cluster at replicas 3, a server killed
//! with -9 changes no owner unless it leads the leases' stream (then every
//! holder drops its partitions at its deadline and they are retaken after
//! the election); the test server keeps its streams across kill -9.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use touchline::cluster::lease::Lease;
use touchline::cluster::{Cluster, Leases};

use crate::support::cluster::{
    PARTITIONS, leader_of, nats, nats_cluster, observer, settled, share, start_nodes, wait_settled,
};

/// Short TTL for the tests (rounds every 333 ms).
const TTL: Duration = Duration::from_secs(1);

/// After a holder stops, the others own everything within `TTL` plus
/// this: its last renewal expires at most `TTL` after the stop, the
/// server's expiry timer fires up to ~0.25 s late (measured), and the
/// others notice in their next round (`TTL/3`) and take over in it:
/// ~0.6 s nominal, measured 0.0-0.45 s; the rest is room for a loaded
/// machine.
const TAKEOVER_SLACK: Duration = Duration::from_millis(1500);

/// Bound on settling from a cold start (nodes see each other only after
/// their first heartbeats, so the first rounds are contended).
const SETTLE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_cover_every_partition_once_and_balance() {
    let server = nats();
    let nodes = start_nodes(&[server.url()], &["a", "b", "c"], TTL, 1).await;
    let handles: Vec<_> = nodes.iter().map(|(_, l)| l).collect();
    let started = Instant::now();
    let owners = wait_settled(&nodes[0].0, &handles, SETTLE).await;
    let mut per_node = BTreeMap::<String, usize>::new();
    for (node, _) in owners.values() {
        *per_node.entry(node.clone()).or_default() += 1;
    }
    eprintln!("3 nodes settled in {:?}: {per_node:?}", started.elapsed());
    assert!(per_node.values().all(|&n| n <= share(3)), "{per_node:?}");

    // Two nodes only: at most 32 each.
    let pair = start_nodes(&[server.url()], &["d", "e"], TTL, 1).await;
    drop(nodes);
    let handles: Vec<_> = pair.iter().map(|(_, l)| l).collect();
    let owners = wait_settled(&pair[0].0, &handles, SETTLE + TTL).await;
    assert_eq!(owners.len(), PARTITIONS as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holder_is_taken_over_after_the_ttl() {
    let server = nats();
    let mut nodes = start_nodes(&[server.url()], &["a", "b", "c"], TTL, 1).await;
    let handles: Vec<_> = nodes.iter().map(|(_, l)| l).collect();
    let before = wait_settled(&nodes[0].0, &handles, SETTLE).await;

    // Dropping the handle aborts the task: no hand-back, no node key
    // removed, as a crash.
    let (_, crashed) = nodes.remove(0);
    let lost = crashed.owned().borrow().len();
    let stopped = Instant::now();
    drop(crashed);
    let handles: Vec<_> = nodes.iter().map(|(_, l)| l).collect();
    let after = wait_settled(&nodes[0].0, &handles, TTL + TAKEOVER_SLACK).await;
    let took = stopped.elapsed();
    eprintln!("{lost} partitions of a crashed node taken over in {took:?} (TTL {TTL:?})");

    // The survivors kept theirs, with the same tokens.
    for (p, (node, token)) in &before {
        if node != "a" {
            assert_eq!(after.get(p), Some(&(node.clone(), *token)), "partition {p} moved");
        }
    }
    // Not before the crashed node's leases could have expired: its last
    // renewal was written at most a round (TTL/3, plus the round's own
    // few ms) before the stop.
    let earliest = TTL - TTL / 3 - Duration::from_millis(50);
    assert!(took >= earliest, "taken over after {took:?}: before the TTL ran out?");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_hands_over_at_once() {
    // The default TTL: the hand-over must not wait for it.
    let ttl = Duration::from_secs(3);
    let server = nats();
    let mut nodes = start_nodes(&[server.url()], &["a", "b", "c"], ttl, 1).await;
    let handles: Vec<_> = nodes.iter().map(|(_, l)| l).collect();
    wait_settled(&nodes[0].0, &handles, SETTLE).await;

    let (_, leaving) = nodes.remove(0);
    let owned = leaving.owned();
    let stopped = Instant::now();
    leaving.shutdown().await.expect("graceful shutdown");
    assert!(owned.borrow().is_empty(), "nothing owned after shutdown");
    let handles: Vec<_> = nodes.iter().map(|(_, l)| l).collect();
    wait_settled(&nodes[0].0, &handles, ttl / 2).await;
    eprintln!("graceful hand-over took {:?} (TTL {ttl:?})", stopped.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_cut_off_drops_its_partitions_before_anyone_can_take_them() {
    let server = nats();
    let nodes = start_nodes(&[server.url()], &["a"], TTL, 1).await;
    let (cluster, holder) = &nodes[0];
    let owners = wait_settled(cluster, &[holder], SETTLE).await;

    // Record when each partition leaves the holder's set.
    let mut owned = holder.owned();
    let lost_at = tokio::spawn(async move {
        let mut held: BTreeMap<u32, u64> = owned.borrow_and_update().clone();
        let mut lost = BTreeMap::new();
        while !held.is_empty() && owned.changed().await.is_ok() {
            let now = Instant::now();
            let current = owned.borrow_and_update().clone();
            held.retain(|p, _| {
                let gone = !current.contains_key(p);
                if gone {
                    lost.insert(*p, now);
                }
                !gone
            });
        }
        lost
    });

    holder.isolate(true);
    let cut = Instant::now();
    // A contender tries every partition every 10 ms: the earliest anyone
    // can take each, by the send time of its first successful create.
    let contender = observer(cluster);
    let mut taken: BTreeMap<u32, Lease> = BTreeMap::new();
    while taken.len() < PARTITIONS as usize {
        assert!(cut.elapsed() < TTL * 5, "took only {} partitions", taken.len());
        for p in 0..PARTITIONS {
            if !taken.contains_key(&p)
                && let Some(lease) = contender.acquire(p).await.expect("create")
            {
                taken.insert(p, lease);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lost = tokio::time::timeout(TTL, lost_at)
        .await
        .expect("the holder reported every loss")
        .expect("watcher task");
    let mut closest = Duration::MAX;
    for (p, lease) in &taken {
        let lost = lost
            .get(p)
            .unwrap_or_else(|| panic!("partition {p} never reported lost"));
        assert!(
            *lost < lease.sent,
            "partition {p}: lost at {lost:?}, taken by a create sent at {:?}",
            lease.sent
        );
        closest = closest.min(lease.sent - *lost);
        // The old tenure's token no longer validates; the new one's does.
        let (_, old) = &owners[p];
        assert!(
            !contender.validates(*p, *old).await.expect("read"),
            "partition {p}'s old token"
        );
        assert!(contender.validates(*p, lease.token).await.expect("read"));
        assert!(lease.token > *old, "tokens grow across tenures");
    }
    eprintln!("cut off: losses reported at least {closest:?} before anyone could take over (TTL {TTL:?})");
    assert!(holder.owned().borrow().is_empty());
    holder.isolate(false);
}

/// Every node's owned set at once: partition → (node, token). Panics if
/// a partition is in two sets (sound: a holder drops a partition at least
/// `TTL/5` before anyone can take it, far more than this read takes).
fn sample(nodes: &[(Cluster, Leases)]) -> BTreeMap<u32, (String, u64)> {
    let mut seen = BTreeMap::new();
    for (_, l) in nodes {
        for (p, token) in l.owned().borrow().iter() {
            let me = (l.node().to_string(), *token);
            if let Some(other) = seen.insert(*p, me.clone()) {
                panic!("partition {p} held by {other:?} and {me:?} at once");
            }
        }
    }
    seen
}

/// The default TTL (3 s) rides out the loss of a server that does not lead
/// the leases' or nodes' stream: their quorum (2 of 3) and leader are
/// intact, clients of the killed server reconnect to another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_killed_changes_no_owner() {
    let ttl = Duration::from_secs(3);
    let mut servers = nats_cluster();
    let nodes = start_nodes(&servers.urls(), &["a", "b", "c"], ttl, 3).await;
    let handles: Vec<_> = nodes.iter().map(|(_, l)| l).collect();
    let before = wait_settled(&nodes[0].0, &handles, SETTLE).await;

    let leaders = [
        leader_of(&nodes[0].0.js, "KV_TL_LEASES").await,
        leader_of(&nodes[0].0.js, "KV_TL_NODES").await,
    ];
    let connected: Vec<String> = nodes.iter().map(|(c, _)| c.client.server_info().server_name).collect();
    // A follower of both, preferably one a node is connected to.
    let victim = (0..3)
        .filter(|i| !leaders.contains(i))
        .max_by_key(|i| connected.iter().filter(|s| **s == format!("n{i}")).count())
        .expect("3 servers, at most 2 leaders");
    eprintln!("killing n{victim} (leaders {leaders:?}, nodes connected to {connected:?})");
    servers.kill_9(victim).expect("kill -9");

    // For three TTLs every partition keeps its owner and token; then the
    // server comes back on its ports and store, and nothing changes either.
    let killed = Instant::now();
    while killed.elapsed() < ttl * 3 {
        let now = sample(&nodes);
        assert!(
            now == before,
            "owners changed {:?} after n{victim} was killed",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::task::block_in_place(|| servers.restart(victim)).expect("restart");
    let restarted = Instant::now();
    while restarted.elapsed() < ttl {
        assert!(sample(&nodes) == before, "owners changed after n{victim} came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The leases stream's leader killed: no write is possible until the
/// others elect a new one (nats-server waits 4-9 s for a lost leader,
/// longer than a 3 s TTL). Every holder drops its partitions at its
/// deadline, nobody takes one before that, and all are owned again once a
/// leader is elected. (Riding this out needs a TTL above the election
/// time: see docs/cluster.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leases_leader_killed_drops_every_partition_before_retaking_it() {
    let ttl = Duration::from_secs(3);
    let mut servers = nats_cluster();
    let nodes = start_nodes(&servers.urls(), &["a", "b", "c"], ttl, 3).await;
    let handles: Vec<_> = nodes.iter().map(|(_, l)| l).collect();
    let before = wait_settled(&nodes[0].0, &handles, SETTLE).await;

    let leader = leader_of(&nodes[0].0.js, "KV_TL_LEASES").await;
    servers.kill_9(leader).expect("kill -9");
    let killed = Instant::now();
    // Election (at most 9 s) + expiry (the TTL) + a round.
    let within = Duration::from_secs(9) + ttl + TAKEOVER_SLACK;
    let (mut fewest, mut all_dropped) = (usize::MAX, None);
    let after = loop {
        let now = sample(&nodes);
        fewest = fewest.min(now.len());
        if now.is_empty() && all_dropped.is_none() {
            all_dropped = Some(killed.elapsed());
        }
        if fewest < PARTITIONS as usize && settled(&handles, share(3)).is_some() {
            break now;
        }
        assert!(
            killed.elapsed() < within,
            "{} partitions owned {within:?} after the kill",
            now.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let back = killed.elapsed();
    let same = after
        .iter()
        .filter(|(p, (n, _))| before.get(p).map(|(b, _)| b) == Some(n))
        .count();
    eprintln!(
        "leases leader n{leader} killed: fewest owned {fewest}, all dropped after {all_dropped:?}, \
         all owned again after {back:?} ({same} of {PARTITIONS} by the same node)"
    );
}

/// The test server itself: restarted after kill -9 on the same port and
/// store, it still has what JetStream acknowledged, and a client given its
/// URL reconnects. Also: event subjects with a real match id (`:`) and an
/// escaped one are accepted by a real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_restarts_on_its_port_with_its_streams() {
    use touchline::cluster::partition::{Partitions, event_subject};

    let mut server = nats();
    let node = crate::support::cluster::connect(&[server.url()], "a", TTL, 1).await;
    let p = Partitions::default();
    let mut acked = Vec::new();
    for id in ["sr:match:123", "odd id.with*dots>"] {
        let subject = event_subject(p.partition_of(id), id).expect("valid id");
        let ack = node
            .js
            .publish(subject.clone(), "event".into())
            .await
            .expect("publish")
            .await
            .expect("ack");
        acked.push((subject, ack.sequence));
    }
    tokio::task::block_in_place(|| server.kill_9()).expect("kill -9");
    tokio::task::block_in_place(|| server.restart()).expect("restart");
    let stream = node
        .js
        .get_stream("TL_EVENTS")
        .await
        .expect("the stream after a restart");
    for (subject, seq) in acked {
        let last = stream
            .get_last_raw_message_by_subject(&subject)
            .await
            .unwrap_or_else(|e| panic!("{subject} after a restart: {e}"));
        assert_eq!(last.sequence, seq, "{subject}");
    }
}
