//! The cluster as `GET /api/nodes` shows it: the live nodes (their
//! heartbeats in `TL_NODES`) and which partitions each holds (the leases in
//! `TL_LEASES`), read from the buckets when asked.

use std::collections::BTreeMap;

use super::ClusterError;
use super::lease::LeaseKv;
use super::nodes::Nodes;
use super::streams::Cluster;

/// One node and the partitions it holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeView {
    pub id: String,
    pub partitions: Vec<u32>,
    /// Its heartbeat is current. `false`: a holder whose leases have not
    /// expired yet although it stopped heartbeating (crashed, cut off).
    pub live: bool,
    /// Where its clients reach it (`--advertise-url`), while it is live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// What a node sees of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterView {
    /// The node answering.
    pub node: String,
    pub partitions: u32,
    /// Live nodes and lease holders, by id, with what they hold.
    pub nodes: Vec<NodeView>,
    /// Partitions nobody holds now (between a holder's loss and a takeover).
    pub free: Vec<u32>,
}

pub async fn view(cluster: &Cluster) -> Result<ClusterView, ClusterError> {
    let config = &cluster.config;
    // Read-only handles: the incarnation only matters to writes.
    let nodes = Nodes::new(cluster.nodes.clone(), config.node_id.clone(), 0, None);
    let leases = LeaseKv::new(cluster.leases.clone(), config.node_id.clone(), 0, config.lease_ttl);
    let live = nodes.live().await?;
    let owners = leases.owners(config.partitions).await?;
    let mut held: BTreeMap<String, Vec<u32>> = live.iter().map(|n| (n.clone(), Vec::new())).collect();
    let mut free = Vec::new();
    for p in config.partitions.all() {
        match owners.get(&p) {
            Some(h) => held.entry(h.value.node.clone()).or_default().push(p),
            None => free.push(p),
        }
    }
    let mut listed = Vec::with_capacity(held.len());
    for (id, partitions) in held {
        let url = if live.contains(&id) {
            nodes.url_of(&id).await
        } else {
            None
        };
        listed.push(NodeView {
            live: live.contains(&id),
            id,
            partitions,
            url,
        });
    }
    Ok(ClusterView {
        node: config.node_id.as_str().to_owned(),
        partitions: config.partitions.count(),
        nodes: listed,
        free,
    })
}
