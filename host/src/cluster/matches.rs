//! The cluster's directory of matches: the KV bucket `TL_MATCHES`, one key
//! per match (its id in hex), created by the owner that first applies one
//! of its events. Every node watches it, so a session subscribed to `"*"`
//! on any node is told of matches whichever node runs them. Keys live
//! [`KEEP`] (a match lasts hours): the bucket does not grow without bound.

use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::{Stream, StreamExt as _};

use super::ClusterError;
use super::bets::key;
use super::streams::{Cluster, bucket};

pub const BUCKET: &str = "TL_MATCHES";

/// How long a match stays in the directory after its first event.
pub const KEEP: Duration = Duration::from_secs(48 * 3600);

/// The directory of a connected node.
#[derive(Clone)]
pub struct Directory {
    kv: kv::Store,
}

impl Directory {
    /// Open (create or update) the bucket.
    pub async fn open(cluster: &Cluster) -> Result<Directory, ClusterError> {
        let kv = cluster
            .js
            .create_or_update_key_value(bucket(BUCKET, &cluster.config, KEEP))
            .await
            .map_err(|e| ClusterError::Setup {
                what: format!("bucket {BUCKET}"),
                source: e.into(),
            })?;
        Ok(Directory { kv })
    }

    /// Name `match_id` in the directory (once: a key already there is
    /// left as it is).
    pub async fn record(&self, match_id: &str) -> Result<(), ClusterError> {
        let k = key(match_id);
        match self.kv.create(&k, match_id.to_owned().into()).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(ClusterError::kv("create", BUCKET, &k)(e.into())),
        }
    }

    /// Every match in the directory, then each one added.
    pub async fn watch(&self) -> Result<impl Stream<Item = String> + Send + use<>, ClusterError> {
        let watch = self
            .kv
            .watch_with_history(">")
            .await
            .map_err(|e| ClusterError::kv("watch", BUCKET, ">")(e.into()))?;
        Ok(watch.filter_map(|entry| async move {
            let entry = entry.ok()?;
            (entry.operation == kv::Operation::Put)
                .then(|| String::from_utf8(entry.value.to_vec()).ok())
                .flatten()
        }))
    }
}
