//! Cluster test support: real `nats-server` processes (from
//! `touchline-testkit`), lease-keeping nodes on them, and the checks of
//! who owns which partition. Waits poll a condition against a deadline.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use touchline::cluster::lease::LeaseKv;
use touchline::cluster::{Cluster, ClusterConfig, Leases, NodeId, Partitions};
use touchline_testkit::{NatsCluster, NatsServer};

/// Partitions in every cluster test: the default.
pub const PARTITIONS: u32 = 64;

/// A single JetStream server; panics naming `make nats` if the binary is
/// missing (a cluster test never passes without a real server).
pub fn nats() -> NatsServer {
    NatsServer::start().unwrap_or_else(|e| panic!("starting nats-server: {e}"))
}

/// Three JetStream servers in a cluster (blocks the calling worker while
/// they start).
pub fn nats_cluster() -> NatsCluster {
    tokio::task::block_in_place(NatsCluster::start).unwrap_or_else(|e| panic!("starting a nats cluster: {e}"))
}

/// A node `id` connected to `urls`, its streams and buckets set up.
pub async fn connect(urls: &[String], id: &str, ttl: Duration, replicas: usize) -> Cluster {
    let mut config = ClusterConfig::new(urls.to_vec(), NodeId::new(id).expect("valid node id"));
    config.partitions = Partitions::new(PARTITIONS).expect("valid count");
    config.lease_ttl = ttl;
    config.replicas = replicas;
    Cluster::connect(config)
        .await
        .unwrap_or_else(|e| panic!("connecting node {id}: {e:?}"))
}

/// `ids` connected and keeping leases.
pub async fn start_nodes(urls: &[String], ids: &[&str], ttl: Duration, replicas: usize) -> Vec<(Cluster, Leases)> {
    let mut out = Vec::new();
    for id in ids {
        let cluster = connect(urls, id, ttl, replicas).await;
        let leases = Leases::start(&cluster);
        out.push((cluster, leases));
    }
    out
}

/// Partition → (node, token) if every partition is held by exactly one of
/// `nodes` and none holds more than `share`; `None` otherwise.
pub fn settled(nodes: &[&Leases], share: usize) -> Option<BTreeMap<u32, (String, u64)>> {
    let mut owners = BTreeMap::new();
    for n in nodes {
        let owned = n.owned().borrow().clone();
        if owned.len() > share {
            return None;
        }
        for (p, token) in owned {
            if owners.insert(p, (n.node().to_string(), token)).is_some() {
                return None;
            }
        }
    }
    (owners.len() == PARTITIONS as usize).then_some(owners)
}

/// `ceil(PARTITIONS / nodes)`.
pub fn share(nodes: usize) -> usize {
    (PARTITIONS as usize).div_ceil(nodes)
}

/// Poll `f` every 10 ms until it gives `Some`, or panic after `within`.
pub async fn wait_until<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until `nodes` settle (see [`settled`]), then check the bucket
/// agrees: each partition's key holds that node's tenure.
pub async fn wait_settled(cluster: &Cluster, nodes: &[&Leases], within: Duration) -> BTreeMap<u32, (String, u64)> {
    let share = share(nodes.len());
    let owners = wait_until("every partition owned once, shares balanced", within, || {
        settled(nodes, share)
    })
    .await;
    let reader = observer(cluster);
    let held = reader
        .owners(cluster.config.partitions)
        .await
        .expect("reading the leases");
    for (p, (node, token)) in &owners {
        let h = held
            .get(p)
            .unwrap_or_else(|| panic!("partition {p} has no lease in the bucket"));
        assert_eq!((&h.value.node, h.token), (node, *token), "partition {p}'s lease");
    }
    owners
}

/// A reader (and contender) of the leases bucket that is no node.
pub fn observer(cluster: &Cluster) -> LeaseKv {
    LeaseKv::new(
        cluster.leases.clone(),
        NodeId::new("observer").expect("valid node id"),
        1,
        cluster.config.lease_ttl,
    )
}

/// The server leading a stream's Raft group (`n0`..`n2`), as an index.
pub async fn leader_of(js: &async_nats::jetstream::Context, stream: &str) -> usize {
    let mut stream = js.get_stream(stream).await.expect("the stream");
    let info = stream.info().await.expect("stream info");
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("a replicated stream has a leader");
    leader
        .trim_start_matches('n')
        .parse()
        .expect("servers are named n0..n2")
}
