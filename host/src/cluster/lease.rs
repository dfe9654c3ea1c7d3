//! The lease protocol on the `TL_LEASES` KV bucket: one key per partition
//! (`p<N>`), holding the owner's node id, its incarnation and the fencing
//! token. This file only speaks the protocol, one request at a time;
//! [`super::leases`] decides when.
//!
//! - acquire = `create` (fails with AlreadyExists while someone holds it);
//! - renew = `update` with the revision last written (WrongLastRevision:
//!   someone else wrote it, the lease is lost);
//! - release = delete with the expected revision (the next `create`
//!   succeeds at once);
//! - an unrenewed lease disappears when the bucket's `max_age` (the lease
//!   TTL) runs out, counted by the server from its last write.
//!
//! The fencing token is the key's revision when the lease was acquired
//! (a stream sequence: every later tenure, by anyone, has a larger one);
//! renewals carry it in the value, so it is stable for the whole tenure.
//!
//! Local deadline (the fencing rule): a lease written by a request sent at
//! local instant `t` is held until `t + ttl − margin` by this node's
//! monotonic clock. The server stamps the write after `t`, so nobody can
//! create the key before `t + ttl`; the margin (`ttl / 5`, 600 ms at the
//! default 3 s) covers the server's clock running ahead of ours or of the
//! previous leader's in a cluster, and this node's timer firing late
//! under load. A write still in flight when the deadline passes is the
//! store's to refuse by token (not built yet: see docs/cluster.md).

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::partition::Partitions;
use super::{ClusterError, NodeId};

/// The leases bucket.
pub const BUCKET: &str = "TL_LEASES";

/// Fraction of the TTL kept as the fencing margin (see the module doc).
pub const MARGIN_DIVISOR: u32 = 5;

/// The key of partition `p`'s lease.
pub fn key(partition: u32) -> String {
    format!("p{partition}")
}

/// What a lease key holds (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseValue {
    pub node: String,
    /// The holding process: a node restarted under the same id does not
    /// adopt the leases of its previous life (they expire).
    pub incarnation: u64,
    /// The fencing token; 0 in the write that acquired it, which then is
    /// the entry's own revision.
    #[serde(default)]
    pub token: u64,
}

/// Who holds a partition, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub value: LeaseValue,
    /// The tenure's fencing token.
    pub token: u64,
    /// The entry's current revision.
    pub revision: u64,
}

/// A lease this node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub partition: u32,
    pub token: u64,
    /// The revision of our last write: the next renewal's expectation.
    pub revision: u64,
    /// When the request of that write was sent (local clock).
    pub sent: Instant,
    /// `sent + ttl − margin`: past it the lease is treated as lost.
    pub deadline: Instant,
}

/// How a renewal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Renewed(Lease),
    /// Someone else wrote the key (or it expired and was taken).
    Lost,
}

/// The protocol, for one node (one process).
#[derive(Debug, Clone)]
pub struct LeaseKv {
    kv: kv::Store,
    me: NodeId,
    incarnation: u64,
    ttl: Duration,
}

impl LeaseKv {
    pub fn new(kv: kv::Store, me: NodeId, incarnation: u64, ttl: Duration) -> LeaseKv {
        LeaseKv {
            kv,
            me,
            incarnation,
            ttl,
        }
    }

    /// This process's incarnation (in every value it writes).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// `ttl / MARGIN_DIVISOR`.
    pub fn margin(&self) -> Duration {
        self.ttl / MARGIN_DIVISOR
    }

    fn value(&self, token: u64) -> Bytes {
        let v = LeaseValue {
            node: self.me.as_str().to_owned(),
            incarnation: self.incarnation,
            token,
        };
        // A struct of a string and two integers always serialises.
        Bytes::from(serde_json::to_vec(&v).expect("lease value serialises"))
    }

    fn lease(&self, partition: u32, token: u64, revision: u64, sent: Instant) -> Lease {
        Lease {
            partition,
            token,
            revision,
            sent,
            deadline: sent + self.ttl - self.margin(),
        }
    }

    fn ours(&self, h: &Holder) -> bool {
        h.value.node == self.me.as_str() && h.value.incarnation == self.incarnation
    }

    /// Try to take partition `p`: `Ok(None)` while someone else holds it.
    /// A key holding our own write (an earlier attempt whose answer was
    /// lost, or a lease we gave up at its deadline) is taken over as a new
    /// tenure with a compare-and-set.
    pub async fn acquire(&self, partition: u32) -> Result<Option<Lease>, ClusterError> {
        let key = key(partition);
        let sent = Instant::now();
        match self.kv.create(&key, self.value(0)).await {
            Ok(rev) => return Ok(Some(self.lease(partition, rev, rev, sent))),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(ClusterError::kv("create", BUCKET, &key)(e.into())),
        }
        match self.read(partition).await? {
            Some(h) if self.ours(&h) => {
                let sent = Instant::now();
                match self.kv.update(&key, self.value(0), h.revision).await {
                    Ok(rev) => Ok(Some(self.lease(partition, rev, rev, sent))),
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
                    Err(e) => Err(ClusterError::kv("update", BUCKET, &key)(e.into())),
                }
            }
            _ => Ok(None),
        }
    }

    /// Renew `lease`. Bound it by `lease.deadline`: the answer is of no use
    /// after it.
    pub async fn renew(&self, lease: &Lease) -> Result<Renewal, ClusterError> {
        let key = key(lease.partition);
        let mut expected = lease.revision;
        for attempt in 0..2 {
            let sent = Instant::now();
            match self.kv.update(&key, self.value(lease.token), expected).await {
                Ok(rev) => {
                    return Ok(Renewal::Renewed(self.lease(lease.partition, lease.token, rev, sent)));
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision && attempt == 0 => {
                    // An earlier renewal may have been written though its
                    // answer was lost: then the key still holds this very
                    // tenure, and nobody else has written since.
                    match self.read(lease.partition).await? {
                        Some(h) if self.ours(&h) && h.token == lease.token => expected = h.revision,
                        _ => return Ok(Renewal::Lost),
                    }
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => return Ok(Renewal::Lost),
                Err(e) => return Err(ClusterError::kv("update", BUCKET, &key)(e.into())),
            }
        }
        Ok(Renewal::Lost)
    }

    /// Hand `lease` back: the key is deleted if it still holds our last
    /// write (otherwise it is not ours anymore, which is fine too).
    pub async fn release(&self, lease: &Lease) -> Result<(), ClusterError> {
        let key = key(lease.partition);
        match self.kv.delete_expect_revision(&key, Some(lease.revision)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(()),
            Err(e) => Err(ClusterError::kv("delete", BUCKET, &key)(e.into())),
        }
    }

    /// The holder of partition `p`, if any. A direct get: on a replicated
    /// bucket a follower may answer slightly behind the leader, so this is
    /// a view, never a grant (only the compare-and-set grants).
    pub async fn read(&self, partition: u32) -> Result<Option<Holder>, ClusterError> {
        let key = key(partition);
        let entry = self
            .kv
            .entry(&key)
            .await
            .map_err(|e| ClusterError::kv("read", BUCKET, &key)(e.into()))?;
        let Some(entry) = entry.filter(|e| e.operation == Operation::Put) else {
            return Ok(None);
        };
        let value = match serde_json::from_slice::<LeaseValue>(&entry.value) {
            Ok(v) => v,
            Err(e) => {
                // Not ours to interpret, but held: nobody may take it.
                tracing::warn!(partition, error = %e, "unreadable lease value");
                LeaseValue {
                    node: String::new(),
                    incarnation: 0,
                    token: 0,
                }
            }
        };
        let token = if value.token == 0 { entry.revision } else { value.token };
        Ok(Some(Holder {
            value,
            token,
            revision: entry.revision,
        }))
    }

    /// Every partition's holder (absent: free), read concurrently.
    pub async fn owners(&self, partitions: Partitions) -> Result<BTreeMap<u32, Holder>, ClusterError> {
        let reads = join_all(partitions.all().map(|p| async move { (p, self.read(p).await) })).await;
        let mut out = BTreeMap::new();
        for (p, r) in reads {
            if let Some(h) = r? {
                out.insert(p, h);
            }
        }
        Ok(out)
    }

    /// Changes to the bucket from now on (a hand-back shows as a delete).
    pub async fn watch(&self) -> Result<kv::Watch, ClusterError> {
        self.kv
            .watch_all()
            .await
            .map_err(|e| ClusterError::kv("watch", BUCKET, ">")(e.into()))
    }

    /// Whether `token` is still partition `p`'s current tenure (a view,
    /// as [`LeaseKv::read`]).
    pub async fn validates(&self, partition: u32, token: u64) -> Result<bool, ClusterError> {
        Ok(self.read(partition).await?.is_some_and(|h| h.token == token))
    }
}

#[cfg(test)]
mod tests {
    use super::LeaseValue;

    #[test]
    fn the_value_is_json_and_tolerates_a_missing_token() {
        let v: LeaseValue = serde_json::from_str(r#"{"node":"a","incarnation":7}"#).expect("parses");
        assert_eq!((v.node.as_str(), v.incarnation, v.token), ("a", 7, 0));
        let text = serde_json::to_string(&LeaseValue {
            node: "b".into(),
            incarnation: 1,
            token: 42,
        })
        .expect("serialises");
        assert_eq!(text, r#"{"node":"b","incarnation":1,"token":42}"#);
        assert_eq!(super::key(12), "p12");
    }
}
