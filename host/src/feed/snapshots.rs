//! In a cluster, each match's snapshots go to JetStream
//! ([`crate::cluster::snapshots`]) instead of the node's journal, and a
//! partition's new owner restores its matches from them.
//!
//! - **Keeping** ([`Snapshots`], the workers' [`SnapshotSink`]): a worker
//!   takes a snapshot as on a single node (its recovery base: every
//!   `--snapshot-every` events, every `--snapshot-interval-ms`, when its
//!   tail reaches 16 KiB, when idle) and hands it over with the `TL_EVENTS`
//!   sequence of the last event it covers. The sink keeps one only if the
//!   match's last kept one is `--cluster-snapshot-every` (1,000) seqs or
//!   `--cluster-snapshot-interval-ms` (30 s) behind ([`Cadence`]; a
//!   match's first at once): each costs the NATS servers a publish and two
//!   filtered purges (the rollup and the trim), where the worker's 16 KiB
//!   tail alone would make one every few events of a busy match, and a
//!   failover replays at most the cadence's events per match. See the
//!   cluster bench in docs/cluster.md. It is queued (bounded,
//!   [`QUEUE`]; full: dropped, counted, the next one covers it) only while
//!   this node holds the partition and has raised its barrier, and one task
//!   stores each, expecting that barrier (a stale owner's is refused), then
//!   trims the match's events it covers from `TL_EVENTS`.
//! - **Restoring** ([`restore`]): after raising its barrier, a new owner
//!   reads the partition's snapshots, starts a worker for each match from
//!   its own (same `seq`, same `epoch`: the frames continue where the last
//!   owner's stopped), and returns each match's position, so the applier
//!   skips the events a snapshot covers (those not trimmed yet).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::snapshots::{self, Stored};
use crate::cluster::{Cluster, Fence};
use crate::journal::{MatchMeta, Recovered, SnapshotRecord};
use crate::metrics::{Kind, Metrics};
use crate::router::Router;
use crate::worker::SnapshotSink;

/// Snapshots waiting to be stored (all matches of the node).
pub const QUEUE: usize = 1024;

/// One snapshot to store.
struct Queued {
    match_id: Arc<str>,
    record: SnapshotRecord,
    partition: u32,
    position: u64,
    barrier: u64,
}

/// How often a match's snapshot is kept in JetStream.
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    /// Seqs since the last one kept.
    pub every: u64,
    /// ...or time since it.
    pub interval: std::time::Duration,
}

/// The workers' snapshot sink, started once the node holds leases.
#[derive(Default)]
pub struct Snapshots(OnceLock<Started>);

struct Started {
    tx: mpsc::Sender<Queued>,
    cluster: Arc<Cluster>,
    fence: Arc<Fence>,
    metrics: Arc<Metrics>,
    cadence: Cadence,
    kept: std::sync::Mutex<Kept>,
}

/// Each match's last snapshot kept: its seq and when. Matches end, so the
/// map is pruned of those quiet for two intervals whenever it doubles
/// (forgetting one only makes its next snapshot due at once).
#[derive(Default)]
struct Kept {
    by_match: HashMap<Arc<str>, (u64, std::time::Instant)>,
    prune_at: usize,
}

impl Started {
    /// Whether `match_id`'s snapshot at `seq` is due (and if so, noted).
    fn due(&self, match_id: &Arc<str>, seq: u64) -> bool {
        // Nothing panics under this lock; a poisoned map is still whole.
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let due = kept.by_match.get(match_id).is_none_or(|&(at_seq, at)| {
            seq >= at_seq + self.cadence.every || seq < at_seq || now.duration_since(at) >= self.cadence.interval
        });
        if due {
            kept.by_match.insert(match_id.clone(), (seq, now));
            if kept.by_match.len() >= kept.prune_at {
                let quiet = 2 * self.cadence.interval;
                kept.by_match.retain(|_, (_, at)| now.duration_since(*at) < quiet);
                kept.prune_at = (2 * kept.by_match.len()).max(1024);
            }
        }
        due
    }

    /// A snapshot noted as kept was not queued: the next one is due.
    fn forget(&self, match_id: &Arc<str>) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.by_match.remove(match_id);
    }
}

impl Snapshots {
    /// Start storing (until `stop`).
    pub fn start(
        &self,
        cluster: Arc<Cluster>,
        fence: Arc<Fence>,
        metrics: Arc<Metrics>,
        cadence: Cadence,
        stop: CancellationToken,
        tasks: &TaskTracker,
    ) {
        let (tx, mut rx) = mpsc::channel::<Queued>(QUEUE);
        let (storing, counted) = (cluster.clone(), metrics.clone());
        tasks.spawn(async move {
            let count = |kind| {
                counted.cluster_snapshots.get_or_create(&Kind { kind }).inc();
            };
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    next = rx.recv() => next,
                };
                let Some(q) = next else { return };
                let stored =
                    snapshots::write(&storing, q.partition, &q.match_id, &q.record, (q.position, q.barrier)).await;
                match stored {
                    Ok(true) => count("stored"),
                    Ok(false) => {
                        count("fenced");
                        continue;
                    }
                    Err(e) => {
                        count("failed");
                        tracing::warn!(match_id = %q.match_id, error = %e, "snapshot not stored (the events stay)");
                        continue;
                    }
                }
                if let Err(e) = snapshots::trim(&storing, q.partition, &q.match_id, q.position).await {
                    tracing::warn!(match_id = %q.match_id, error = %e, "events under a snapshot not trimmed");
                }
            }
        });
        let _ = self.0.set(Started {
            tx,
            cluster,
            fence,
            metrics,
            cadence,
            kept: std::sync::Mutex::new(Kept::default()),
        });
    }
}

impl SnapshotSink for Snapshots {
    fn snapshot(&self, match_id: &Arc<str>, seq: u64, position: u64, record: &dyn Fn() -> SnapshotRecord) {
        let Some(s) = self.0.get() else { return };
        let partition = s.cluster.config.partitions.partition_of(match_id);
        let Some(barrier) = s.fence.token(partition).and_then(|t| s.fence.barrier(partition, t)) else {
            // Not ours (any more): the owner keeps its own.
            return;
        };
        if !s.due(match_id, seq) {
            return;
        }
        let queued = Queued {
            match_id: match_id.clone(),
            record: record(),
            partition,
            position,
            barrier,
        };
        if s.tx.try_send(queued).is_err() {
            s.forget(match_id);
            s.metrics
                .cluster_snapshots
                .get_or_create(&Kind { kind: "dropped" })
                .inc();
        }
    }
}

/// Start a worker for each of partition `partition`'s matches from its
/// stored snapshot; each restored match's position (events at or below it
/// are covered).
pub async fn restore(
    cluster: &Cluster,
    partition: u32,
    router: &Router,
) -> Result<HashMap<String, u64>, crate::cluster::ClusterError> {
    let stored = snapshots::of_partition(cluster, partition).await?;
    let covered = stored.iter().map(|s| (s.match_id.clone(), s.position)).collect();
    let recovered = stored.into_iter().map(recovered).collect::<Vec<_>>();
    if !recovered.is_empty() {
        tracing::info!(
            partition,
            matches = recovered.len(),
            "matches restored from their snapshots"
        );
    }
    router.restore(recovered, &HashMap::new());
    Ok(covered)
}

/// What a worker restores from: the snapshot, marked clean at its seq so
/// the epoch is kept.
fn recovered(s: Stored) -> Recovered {
    Recovered {
        match_id: Arc::from(s.match_id),
        meta: MatchMeta {
            epoch: s.record.epoch,
            clean_seq: Some(s.record.seq),
            quarantined: None,
            guest: Some(s.record.guest.clone()),
        },
        snapshot: Some(s.record),
        journal: Vec::new(),
        bets: Vec::new(),
    }
}
