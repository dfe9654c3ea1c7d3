//! The guest version a cluster runs, in JetStream: components by content
//! hash in the object store `TL_GUESTS`, and in the KV bucket `TL_GUEST`
//! the version every node should run (`active`) and what each node runs
//! (`node.<id>`). NATS only: `guests::cluster` installs and rolls out.

use std::collections::BTreeMap;

use async_nats::jetstream::{kv, object_store, stream::StorageType};
use futures_util::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt as _;

use super::streams::{Cluster, bucket};
use super::{ClusterError, NodeId};

/// The bucket of the desired version and the nodes' reports.
pub const BUCKET: &str = "TL_GUEST";
/// The object store of components.
pub const OBJECTS: &str = "TL_GUESTS";
/// The key naming the version every node should run.
const ACTIVE: &str = "active";

/// What a node runs, as it last reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeGuest {
    /// Its active version.
    pub active: String,
    /// How its last rollout to the cluster's version went (`ok`,
    /// `aborted`, or the refusal).
    pub outcome: String,
    /// Unix ms of the report.
    pub at: i64,
}

/// The cluster's view of its guests (`GET /admin/guest`, `cluster`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GuestView {
    /// The version every node should run (the last one installed or
    /// rolled back to on any node).
    pub desired: Option<String>,
    /// Each node's last report, with whether the node is alive now.
    pub nodes: BTreeMap<String, NodeView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub report: NodeGuest,
    pub live: bool,
}

/// The guest records of a connected node.
#[derive(Clone)]
pub struct GuestBook {
    cluster: Cluster,
    kv: kv::Store,
    objects: object_store::ObjectStore,
}

impl GuestBook {
    /// Open (create or update) the bucket and the object store.
    pub async fn open(cluster: &Cluster) -> Result<GuestBook, ClusterError> {
        let setup = |what: &str| {
            let what = what.to_owned();
            move |e: async_nats::Error| ClusterError::Setup { what, source: e }
        };
        let replicas = cluster.config.replicas;
        let kv = cluster
            .js
            .create_or_update_key_value(bucket(BUCKET, &cluster.config, std::time::Duration::ZERO))
            .await
            .map_err(|e| setup(&format!("bucket {BUCKET}"))(e.into()))?;
        let objects = match cluster.js.get_object_store(OBJECTS).await {
            Ok(o) => o,
            Err(_) => cluster
                .js
                .create_object_store(object_store::Config {
                    bucket: OBJECTS.to_owned(),
                    num_replicas: replicas,
                    storage: StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| setup(&format!("object store {OBJECTS}"))(e.into()))?,
        };
        Ok(GuestBook {
            cluster: cluster.clone(),
            kv,
            objects,
        })
    }

    /// Keep `component` (unless kept already) and make `hash` the version
    /// every node should run.
    pub async fn publish(&self, hash: &str, component: &[u8]) -> Result<(), ClusterError> {
        let stored = self.objects.info(hash).await.is_ok_and(|i| !i.deleted);
        if !stored {
            let mut reader = component;
            self.objects
                .put(hash, &mut reader)
                .await
                .map_err(|e| ClusterError::Setup {
                    what: format!("keeping guest {hash} in {OBJECTS}"),
                    source: e.into(),
                })?;
        }
        self.kv
            .put(ACTIVE, hash.to_owned().into())
            .await
            .map_err(|e| ClusterError::kv("put", BUCKET, ACTIVE)(e.into()))?;
        Ok(())
    }

    /// A kept component.
    pub async fn component(&self, hash: &str) -> Result<Vec<u8>, ClusterError> {
        let failed = |source: async_nats::Error| ClusterError::Setup {
            what: format!("reading guest {hash} from {OBJECTS}"),
            source,
        };
        let mut object = self.objects.get(hash).await.map_err(|e| failed(e.into()))?;
        let mut out = Vec::new();
        object.read_to_end(&mut out).await.map_err(|e| failed(e.into()))?;
        Ok(out)
    }

    /// The version every node should run: its current value first, then
    /// each change.
    pub async fn desired(&self) -> Result<impl Stream<Item = String> + Send + use<>, ClusterError> {
        let watch = self
            .kv
            .watch_with_history(ACTIVE)
            .await
            .map_err(|e| ClusterError::kv("watch", BUCKET, ACTIVE)(e.into()))?;
        Ok(watch.filter_map(|entry| async move {
            let entry = entry.ok()?;
            (entry.operation == kv::Operation::Put)
                .then(|| String::from_utf8(entry.value.to_vec()).ok())
                .flatten()
        }))
    }

    /// Tell the cluster what this node runs.
    pub async fn report(&self, node: &NodeId, report: &NodeGuest) -> Result<(), ClusterError> {
        let key = format!("node.{node}");
        let value = serde_json::to_vec(report).map_err(|e| ClusterError::Config(e.to_string()))?;
        self.kv
            .put(&key, value.into())
            .await
            .map_err(|e| ClusterError::kv("put", BUCKET, &key)(e.into()))?;
        Ok(())
    }

    /// The desired version and every node's last report.
    pub async fn view(&self) -> Result<GuestView, ClusterError> {
        let desired = self
            .kv
            .get(ACTIVE)
            .await
            .map_err(|e| ClusterError::kv("get", BUCKET, ACTIVE)(e.into()))?
            .and_then(|v| String::from_utf8(v.to_vec()).ok());
        let mut keys = self
            .kv
            .keys()
            .await
            .map_err(|e| ClusterError::kv("keys", BUCKET, "*")(e.into()))?;
        let mut nodes = BTreeMap::new();
        while let Some(key) = keys.next().await {
            let Ok(key) = key else { continue };
            let Some(node) = key.strip_prefix("node.") else {
                continue;
            };
            let Ok(Some(value)) = self.kv.get(&key).await else {
                continue;
            };
            let Ok(report) = serde_json::from_slice::<NodeGuest>(&value) else {
                continue;
            };
            let live = matches!(self.cluster.nodes.get(node).await, Ok(Some(_)));
            nodes.insert(node.to_owned(), NodeView { report, live });
        }
        Ok(GuestView { desired, nodes })
    }
}
