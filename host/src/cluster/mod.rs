//! Touchline as a cluster on NATS JetStream (issue 13): the foundations.
//! `serve --cluster` joins, keeps its share of the leases ([`leases`]) and
//! answers `/api/nodes` ([`view`]); its feed publishes events
//! ([`ingest`]) and it reads the partitions it owns ([`consume`]), wired to
//! the router by `feed::cluster`. Single-node mode with sled is untouched.
//!
//! - [`partition`]: match id → partition (a stable hash: part of the wire
//!   contract) and the NATS subjects (`tl.ev.<p>.<match>`, `tl.fr.<match>`,
//!   `tl.bet.<p>`), with match ids escaped into one subject token.
//! - [`balance`]: sans-IO: which partitions this node should try to take
//!   and which to hand back, so every node ends with at most its share.
//! - [`lease`]: the lease protocol on the `TL_LEASES` KV bucket (create,
//!   compare-and-set renew, compare-and-set release; the revision at
//!   acquisition is the fencing token) and the local deadline.
//! - [`fence`]: whether this node may act for a partition now (token and
//!   local deadline, checked against the clock at each act).
//! - [`barrier`]: the store side of fencing: a partition's barrier in
//!   `TL_FRAMES`, raised by each new owner, which every frame expects, so
//!   a stale owner's frames are refused by the stream.
//! - [`nodes`]: node liveness in the `TL_NODES` bucket (heartbeat, TTL).
//! - [`leases`]: [`Leases`], the task that keeps this node's leases:
//!   heartbeat, renew, balance, publish the owned set, graceful hand-over.
//! - [`tenures`]: one task per partition tenure this node holds.
//! - [`bets`], [`guests`], [`matches`]: bet claims and records, the
//!   cluster's guest version, the directory of matches (JetStream only).
//! - [`snapshots`]: each match's snapshot in `TL_FRAMES` (fenced by the
//!   barrier), reading a partition's, trimming `TL_EVENTS` below them.
//! - [`consume`]: one partition's events from `TL_EVENTS`, in stream
//!   order (the owner's ordered consumer).
//! - [`frames`]: a frame between nodes (its JSON text; kind, epoch, seq
//!   and the publisher's lease token in headers).
//! - [`streams`]: [`ClusterConfig`], connecting, and the idempotent setup of
//!   the streams (`TL_EVENTS`, `TL_FRAMES`, `TL_BETS`) and buckets.
//!
//! `docs/cluster.md` records the design and what is not built yet. This
//! module never touches sled, the workers or the sockets of the single
//! node: it only talks to NATS.

pub mod balance;
pub mod barrier;
pub mod bets;
pub mod consume;
pub mod fence;
pub mod frames;
pub mod guests;
pub mod ingest;
pub mod lease;
pub mod leases;
pub mod matches;
pub mod nodes;
pub mod partition;
pub mod snapshots;
pub mod streams;
pub mod tenures;
pub mod view;

pub use fence::Fence;
pub use leases::{Leases, Owned};
pub use partition::Partitions;
pub use streams::{Cluster, ClusterConfig};

use std::fmt;

/// What can go wrong in the cluster layer. Callers branch on the variant;
/// the NATS error behind it is the source.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid cluster configuration: {0}")]
    Config(String),
    #[error("match id {0:?} cannot be a subject token (empty or too long)")]
    MatchId(String),
    #[error("connecting to NATS at {urls}")]
    Connect {
        urls: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("setting up {what}")]
    Setup {
        what: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("{op} {key} in {bucket}")]
    Kv {
        op: &'static str,
        bucket: &'static str,
        key: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("publishing to {subject}")]
    Publish {
        subject: String,
        #[source]
        source: async_nats::Error,
    },
    #[error("{0} did not complete in time")]
    TimedOut(&'static str),
    #[error("the lease task ended unexpectedly")]
    TaskGone,
}

impl ClusterError {
    fn kv(op: &'static str, bucket: &'static str, key: &str) -> impl FnOnce(async_nats::Error) -> ClusterError {
        let key = key.to_owned();
        move |source| ClusterError::Kv {
            op,
            bucket,
            key,
            source,
        }
    }
}

/// A node's name in the cluster: a KV key and a subject token, so only
/// ASCII letters, digits, `-` and `_`, at most [`NodeId::MAX_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(String);

impl NodeId {
    pub const MAX_LEN: usize = 64;

    pub fn new(id: impl Into<String>) -> Result<NodeId, ClusterError> {
        let id = id.into();
        let valid = !id.is_empty()
            && id.len() <= Self::MAX_LEN
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(NodeId(id))
        } else {
            Err(ClusterError::Config(format!(
                "node id {id:?}: 1 to {} of A-Z a-z 0-9 - _",
                Self::MAX_LEN
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::NodeId;

    #[test]
    fn node_ids_are_key_and_token_safe() {
        for ok in ["a", "node-1", "N_2", &"x".repeat(64)] {
            assert!(NodeId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a.b", "a b", "a*", "a>", "é", &"x".repeat(65)] {
            assert!(NodeId::new(bad).is_err(), "{bad}");
        }
    }
}
