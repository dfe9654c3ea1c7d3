//! Which partitions this node should try to acquire and which to hand back.
//! Sans-IO: a pure function of what the node last read.
//!
//! Every node runs [`plan`] on its own view (live nodes, current owners)
//! each round. With `N` live nodes and `P` partitions a node's share is
//! `ceil(P / N)`: it never acquires past it, and hands back what it holds
//! beyond it, but only as many as the other live nodes lack (handing back
//! what nobody would take is churn). Since `N · share ≥ P`, while a
//! partition is free some live node is below its share and takes it: the
//! assignment converges to every partition owned and nobody above its
//! share. Which partitions: each node ranks them by a rendezvous hash of
//! (node, partition), takes free ones from the top of its ranking and
//! hands back from the bottom, so nodes racing for free partitions mostly
//! want different ones, and a partition tends to return to the same node.
//! The lease's compare-and-set settles any race; [`plan`] only proposes.
//!
//! A lease held by a node that is no longer live counts as owned until it
//! expires (nobody can take it before that anyway), and not towards any
//! node's share.

use std::collections::{BTreeMap, BTreeSet};

use super::partition::{Partitions, fnv1a64};

/// What a node read, and who it is.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub me: &'a str,
    /// Nodes whose heartbeat is current (`me` counts even if its own
    /// heartbeat is not visible yet).
    pub live: &'a BTreeSet<String>,
    pub partitions: Partitions,
    /// Partition → node holding its lease. A partition absent is free.
    pub owners: &'a BTreeMap<u32, String>,
}

/// What to try this round.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Free partitions to try to create leases for, most preferred first.
    pub acquire: Vec<u32>,
    /// Own partitions to hand back (release their leases).
    pub release: Vec<u32>,
}

/// `ceil(partitions / nodes)`: the most any node should hold.
pub fn share(partitions: Partitions, nodes: usize) -> u32 {
    let nodes = u32::try_from(nodes.max(1)).unwrap_or(u32::MAX);
    partitions.count().div_ceil(nodes)
}

/// Rendezvous weight of `partition` for `node`: higher is preferred.
fn weight(node: &str, partition: u32) -> u64 {
    let mut bytes = Vec::with_capacity(node.len() + 5);
    bytes.extend_from_slice(node.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&partition.to_le_bytes());
    // FNV of short inputs differs mostly in its low bits: mix them up.
    let mut h = fnv1a64(&bytes);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// The plan for `view.me` (see the module doc).
pub fn plan(view: &View<'_>) -> Plan {
    let mut live: BTreeSet<&str> = view.live.iter().map(String::as_str).collect();
    live.insert(view.me);
    let share = share(view.partitions, live.len());

    let mut held: BTreeMap<&str, u32> = live.iter().map(|n| (*n, 0)).collect();
    for node in view.owners.values() {
        if let Some(n) = held.get_mut(node.as_str()) {
            *n += 1;
        }
    }
    let mine = held.get(view.me).copied().unwrap_or(0);
    let others_lack: u32 = held
        .iter()
        .filter(|(n, _)| **n != view.me)
        .map(|(_, &h)| share.saturating_sub(h))
        .sum();

    let mut plan = Plan::default();
    if mine > share {
        let mut own: Vec<u32> = view
            .owners
            .iter()
            .filter(|(_, n)| n.as_str() == view.me)
            .map(|(&p, _)| p)
            .collect();
        own.sort_by_key(|&p| (weight(view.me, p), p));
        let excess = (mine - share).min(others_lack) as usize;
        plan.release = own.into_iter().take(excess).collect();
    } else if mine < share {
        let mut free: Vec<u32> = view.partitions.all().filter(|p| !view.owners.contains_key(p)).collect();
        free.sort_by_key(|&p| (std::cmp::Reverse(weight(view.me, p)), p));
        plan.acquire = free.into_iter().take((share - mine) as usize).collect();
    }
    plan
}

#[cfg(test)]
mod tests;
