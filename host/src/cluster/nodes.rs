//! Node liveness in the `TL_NODES` KV bucket: one key per node id, put by
//! its heartbeat every round, gone when the bucket's `max_age` (the lease
//! TTL) passes without one, or at once when the node leaves gracefully.
//!
//! The live set is read from the bucket's stream as the list of subjects
//! that hold a message (one request): an expired key holds none. Leaving
//! purges the node's subject from the stream rather than writing a KV
//! delete marker, which would still be listed. A node that is live here
//! is a candidate for a share of the partitions ([`super::balance`]); it
//! owns nothing by being live.

use std::collections::BTreeSet;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::{ClusterError, NodeId};

/// The nodes bucket.
pub const BUCKET: &str = "TL_NODES";

/// What a node's key holds (JSON): enough to tell two lives apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeValue {
    pub incarnation: u64,
    /// Where its HTTP and WebSocket clients reach it (a page whose node
    /// goes away reconnects to another: `GET /api/nodes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// This node's entry in the bucket.
#[derive(Debug, Clone)]
pub struct Nodes {
    kv: kv::Store,
    me: NodeId,
    value: Bytes,
}

impl Nodes {
    pub fn new(kv: kv::Store, me: NodeId, incarnation: u64, url: Option<String>) -> Nodes {
        // Serialising an integer and a string cannot fail.
        let value = serde_json::to_vec(&NodeValue { incarnation, url }).expect("node value serialises");
        Nodes {
            kv,
            me,
            value: Bytes::from(value),
        }
    }

    /// Put this node's key (it lives another TTL).
    pub async fn heartbeat(&self) -> Result<(), ClusterError> {
        self.kv
            .put(self.me.as_str(), self.value.clone())
            .await
            .map(drop)
            .map_err(|e| ClusterError::kv("put", BUCKET, self.me.as_str())(e.into()))
    }

    /// The ids of the nodes whose heartbeat has not expired.
    pub async fn live(&self) -> Result<BTreeSet<String>, ClusterError> {
        let prefix = self.kv.prefix.clone();
        let filter = format!("{prefix}>");
        let err = |e: async_nats::Error| ClusterError::kv("list", BUCKET, ">")(e);
        let subjects = self
            .kv
            .stream
            .info_with_subjects(&filter)
            .await
            .map_err(|e| err(e.into()))?;
        let listed: Vec<(String, usize)> = subjects.try_collect().await.map_err(|e| err(e.into()))?;
        Ok(listed
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .filter_map(|(subject, _)| subject.strip_prefix(&prefix).map(str::to_owned))
            .collect())
    }

    /// The URL node `id` advertises, if it is live and advertises one.
    pub async fn url_of(&self, id: &str) -> Option<String> {
        let value = self.kv.get(id).await.ok()??;
        serde_json::from_slice::<NodeValue>(&value).ok()?.url
    }

    /// Remove this node's key at once (graceful shutdown).
    pub async fn leave(&self) -> Result<(), ClusterError> {
        let subject = format!("{}{}", self.kv.prefix, self.me);
        self.kv
            .stream
            .purge()
            .filter(subject)
            .await
            .map(drop)
            .map_err(|e| ClusterError::kv("purge", BUCKET, self.me.as_str())(e.into()))
    }
}
