//! [`Leases`]: the task that keeps this node's share of the partitions.
//! It owns the held leases and is the only writer of this node's lease
//! and node keys; it never applies events or publishes frames itself.
//!
//! Every round (`ttl / 3`): heartbeat the node key, renew every held lease
//! (each bounded by its own deadline), read the live nodes and the
//! owners, and follow [`super::balance::plan`]: hand back the excess,
//! try to create leases for free partitions up to the share. Between and
//! during rounds a held lease whose local deadline passes is dropped at
//! once (the fencing rule of [`super::lease`]): every await of a round is
//! bounded by the earliest deadline, and a timer fires on it between
//! rounds. A hand-back by another node (a delete in the bucket, seen
//! through a watch) starts a round at once.
//!
//! The owned set (partition → fencing token) is published on a `watch`
//! before anything else can happen to a partition: a lease dropped or
//! handed back leaves the set before its key is deleted, and a lease
//! enters it only once acquired. [`Leases::shutdown`] hands everything
//! back at once (the others take over within a round of theirs);
//! dropping [`Leases`] without it is a crash: the keys expire after the
//! TTL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::kv::{self, Operation};
use futures_util::StreamExt;
use futures_util::future::FutureExt;
use futures_util::future::join_all;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, sleep_until, timeout, timeout_at};

use super::balance::{self, View};
use super::fence::Fence;
use super::lease::{Lease, LeaseKv, Renewal};
use super::nodes::Nodes;
use super::partition::Partitions;
use super::streams::{Cluster, REQUEST_TIMEOUT};
use super::{ClusterError, NodeId};

/// Partition → fencing token of each partition this node holds.
pub type Owned = BTreeMap<u32, u64>;

/// Handle of the lease task. Dropping it aborts the task without handing
/// anything back (as a crash would).
#[derive(Debug)]
pub struct Leases {
    node: NodeId,
    owned: watch::Receiver<Owned>,
    fence: Arc<Fence>,
    /// Asks the task to hand everything back and end.
    stop: Option<oneshot::Sender<()>>,
    /// Test hook: while set, the task sends nothing (a node cut off from
    /// NATS); its deadlines still run.
    isolated: Arc<AtomicBool>,
    task: Option<JoinHandle<Result<(), ClusterError>>>,
}

impl Leases {
    /// Start keeping leases for `cluster`'s node. Needs a tokio runtime.
    pub fn start(cluster: &Cluster) -> Leases {
        Leases::start_at(cluster, None)
    }

    /// [`Leases::start`], the node's heartbeat advertising `url` (where
    /// its clients reach it).
    pub fn start_at(cluster: &Cluster, url: Option<String>) -> Leases {
        let config = &cluster.config;
        // Tells this process's writes from a previous life's under the
        // same node id; nanoseconds since the epoch differ between lives.
        let incarnation = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let (tx, rx) = watch::channel(Owned::new());
        let (stop, stopped) = oneshot::channel();
        let isolated = Arc::new(AtomicBool::new(false));
        let fence = Arc::new(Fence::default());
        let keeper = Keeper {
            leases: LeaseKv::new(
                cluster.leases.clone(),
                config.node_id.clone(),
                incarnation,
                config.lease_ttl,
            ),
            nodes: Nodes::new(cluster.nodes.clone(), config.node_id.clone(), incarnation, url),
            me: config.node_id.clone(),
            partitions: config.partitions,
            tick: config.renew_interval(),
            held: BTreeMap::new(),
            owned: tx,
            fence: fence.clone(),
            isolated: isolated.clone(),
        };
        tracing::info!(node = %config.node_id, incarnation, "lease task starting");
        Leases {
            node: config.node_id.clone(),
            owned: rx,
            fence,
            stop: Some(stop),
            isolated,
            task: Some(tokio::spawn(keeper.run(stopped))),
        }
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The owned set, as it changes.
    pub fn owned(&self) -> watch::Receiver<Owned> {
        self.owned.clone()
    }

    /// The partitions this node may act for now (deadlines included).
    pub fn fence(&self) -> Arc<Fence> {
        self.fence.clone()
    }

    /// The fencing token of partition `p`, while this node holds it.
    pub fn token(&self, partition: u32) -> Option<u64> {
        self.owned.borrow().get(&partition).copied()
    }

    /// Hand every lease back and remove the node key, then end the task.
    pub async fn shutdown(mut self) -> Result<(), ClusterError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().ok_or(ClusterError::TaskGone)?;
        task.await.map_err(|_| ClusterError::TaskGone)?
    }

    /// Test hook: cut this node off from NATS (`true`) or reconnect it.
    /// Nothing is sent while cut off; leases are dropped at their local
    /// deadlines as they would be if every request timed out.
    #[doc(hidden)]
    pub fn isolate(&self, cut_off: bool) {
        self.isolated.store(cut_off, Ordering::SeqCst);
    }
}

impl Drop for Leases {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The task's state.
struct Keeper {
    leases: LeaseKv,
    nodes: Nodes,
    me: NodeId,
    partitions: Partitions,
    /// Round interval: `ttl / 3`.
    tick: Duration,
    /// What this node holds, with each lease's local deadline.
    held: BTreeMap<u32, Lease>,
    owned: watch::Sender<Owned>,
    /// `held`'s tokens and deadlines, for every act on a partition's behalf.
    fence: Arc<Fence>,
    isolated: Arc<AtomicBool>,
}

/// The next entry of the watch, or never while there is none.
async fn next_change(watch: &mut Option<kv::Watch>) -> Option<Result<kv::Entry, kv::WatcherError>> {
    match watch {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// After a round that lost a free partition to another node, the next
/// comes after `tick / CONTENDED_DIVISOR`: nodes racing for the partitions
/// a node handed back settle in a few short rounds, and a view that keeps
/// showing a taken partition as free (a replica behind) cannot spin.
const CONTENDED_DIVISOR: u32 = 8;

/// Far enough to mean "no deadline" for `sleep_until`.
const NEVER: Duration = Duration::from_secs(86_400);

impl Keeper {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) -> Result<(), ClusterError> {
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Hand-backs (deletes) seen as they happen, so a graceful shutdown
        // elsewhere is followed at once rather than on the next tick.
        // Opened in a round, dropped on any error (and opened again).
        let mut releases: Option<kv::Watch> = None;
        loop {
            tokio::select! {
                biased;
                asked = &mut stop => {
                    return match asked {
                        Ok(()) => self.hand_over().await,
                        // The handle is gone without a shutdown: as a crash.
                        Err(_) => Ok(()),
                    };
                }
                () = sleep_until(self.next_deadline()) => self.expire(),
                // Before the watch: renewals are never starved by its
                // traffic (every renewal in the cluster is an entry).
                _ = tick.tick() => {
                    self.expire();
                    if self.round_unless_isolated(&mut releases).await {
                        tick.reset_after(self.tick / CONTENDED_DIVISOR);
                    }
                }
                change = next_change(&mut releases) => {
                    match change {
                        Some(Ok(entry)) if entry.operation != Operation::Put => {
                            // A burst of hand-backs makes one round.
                            tracing::debug!(node = %self.me, key = %entry.key, "a lease was handed back");
                            while let Some(Some(Ok(_))) = releases.as_mut().and_then(|w| w.next().now_or_never()) {}
                            self.expire();
                            if self.round_unless_isolated(&mut releases).await {
                                tick.reset_after(self.tick / CONTENDED_DIVISOR);
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            tracing::debug!(node = %self.me, error = %e, "lease watch failed; reopened next round");
                            releases = None;
                        }
                        None => releases = None,
                    }
                }
            }
        }
    }

    /// A round, unless cut off; true if it should come again soon.
    async fn round_unless_isolated(&mut self, releases: &mut Option<kv::Watch>) -> bool {
        if self.isolated.load(Ordering::SeqCst) {
            return false;
        }
        if releases.is_none() {
            *releases = timeout_at(self.bound(), self.leases.watch())
                .await
                .ok()
                .and_then(Result::ok);
        }
        self.round().await
    }

    fn next_deadline(&self) -> Instant {
        let never = Instant::now() + NEVER;
        self.held.values().map(|l| l.deadline).min().unwrap_or(never)
    }

    /// Bound on a step of a round: the earliest deadline, at most a tick.
    fn bound(&self) -> Instant {
        self.next_deadline().min(Instant::now() + self.tick)
    }

    fn publish(&self) {
        self.fence.set(&self.held);
        let now: Owned = self.held.iter().map(|(p, l)| (*p, l.token)).collect();
        self.owned.send_if_modified(|o| {
            let changed = *o != now;
            *o = now;
            changed
        });
    }

    fn lose(&mut self, partition: u32, reason: &'static str) {
        if let Some(lease) = self.held.remove(&partition) {
            self.publish();
            tracing::warn!(node = %self.me, partition, token = lease.token, reason, "lease lost");
        }
    }

    /// Drop every lease past its local deadline.
    fn expire(&mut self) {
        let now = Instant::now();
        let due: Vec<u32> = self
            .held
            .values()
            .filter(|l| l.deadline <= now)
            .map(|l| l.partition)
            .collect();
        for p in due {
            self.lose(p, "not renewed before its deadline");
        }
    }

    /// One round; true if a free partition it tried was taken by another
    /// node first (then it tries again soon rather than a tick later).
    async fn round(&mut self) -> bool {
        match timeout_at(self.bound(), self.nodes.heartbeat()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(node = %self.me, error = %e, "heartbeat failed"),
            Err(_) => tracing::warn!(node = %self.me, "heartbeat timed out"),
        }
        self.renew_all().await;
        self.expire();

        let read = timeout_at(self.bound(), async {
            tokio::join!(self.nodes.live(), self.leases.owners(self.partitions))
        })
        .await;
        let (live, holders) = match read {
            Ok((Ok(live), Ok(holders))) => (live, holders),
            Ok((Err(e), _) | (_, Err(e))) => {
                tracing::warn!(node = %self.me, error = %e, "reading the cluster view failed");
                return false;
            }
            Err(_) => {
                tracing::warn!(node = %self.me, "reading the cluster view timed out");
                return false;
            }
        };
        // Someone else's tenure on a partition we hold: ours is over. (An
        // absent key may be a replica behind; the next renewal decides.)
        let taken: Vec<u32> = self
            .held
            .values()
            .filter(|l| holders.get(&l.partition).is_some_and(|h| h.token != l.token))
            .map(|l| l.partition)
            .collect();
        for p in taken {
            self.lose(p, "taken by another tenure");
        }
        // Keys naming this node: what it holds, what this process may take
        // over (its own write whose answer was lost: free to it), and a
        // previous life's leases (held by nobody live until they expire).
        let mine = self.me.as_str();
        let incarnation = self.leases.incarnation();
        let owners: BTreeMap<u32, String> = holders
            .into_iter()
            .filter_map(|(p, h)| match h.value.node == mine {
                false => Some((p, h.value.node)),
                true if self.held.contains_key(&p) => Some((p, h.value.node)),
                true if h.value.incarnation == incarnation => None,
                true => Some((p, format!("{mine} (previous life)"))),
            })
            .collect();
        let plan = balance::plan(&View {
            me: self.me.as_str(),
            live: &live,
            partitions: self.partitions,
            owners: &owners,
        });
        self.hand_back(&plan.release).await;
        self.acquire(&plan.acquire).await
    }

    async fn renew_all(&mut self) {
        let mut pending: FuturesUnordered<_> = self
            .held
            .values()
            .map(|&lease| {
                let kv = self.leases.clone();
                async move { (lease, timeout_at(lease.deadline, kv.renew(&lease)).await) }
            })
            .collect();
        while let Some((old, result)) = pending.next().await {
            match result {
                Ok(Ok(Renewal::Renewed(new))) => {
                    if let Some(l) = self.held.get_mut(&old.partition).filter(|l| l.token == old.token) {
                        *l = new;
                    }
                }
                Ok(Ok(Renewal::Lost)) => self.lose(old.partition, "written by someone else"),
                Ok(Err(e)) => {
                    tracing::debug!(node = %self.me, partition = old.partition, error = %e, "renewal failed; retried next round")
                }
                Err(_) => self.lose(old.partition, "renewal not answered before its deadline"),
            }
        }
        // Renewed deadlines (the owned set itself may not have changed).
        self.fence.set(&self.held);
    }

    /// Leave the set first, then delete the keys: this node has stopped
    /// before anyone can start.
    async fn hand_back(&mut self, partitions: &[u32]) {
        let leases: Vec<Lease> = partitions.iter().filter_map(|p| self.held.remove(p)).collect();
        if leases.is_empty() {
            return;
        }
        self.publish();
        let bound = self.bound();
        let kv = &self.leases;
        let done = timeout_at(bound, join_all(leases.iter().map(|l| kv.release(l)))).await;
        let failed = match done {
            Ok(results) => results.iter().filter(|r| r.is_err()).count(),
            Err(_) => leases.len(),
        };
        // A release that failed expires instead.
        tracing::info!(node = %self.me, released = leases.len(), failed, "handed partitions back");
    }

    /// Try `partitions`; true if another node took one first.
    async fn acquire(&mut self, partitions: &[u32]) -> bool {
        if partitions.is_empty() {
            return false;
        }
        let kv = &self.leases;
        let tries = join_all(partitions.iter().map(|&p| async move { (p, kv.acquire(p).await) }));
        let Ok(results) = timeout_at(self.bound(), tries).await else {
            tracing::debug!(node = %self.me, "acquisitions timed out; retried next round");
            return false;
        };
        let now = Instant::now();
        let mut contended = false;
        for (p, r) in results {
            match r {
                Ok(Some(lease)) if lease.deadline > now => {
                    tracing::info!(node = %self.me, partition = p, token = lease.token, "lease acquired");
                    self.held.insert(p, lease);
                }
                Ok(_) => contended = true,
                Err(e) => tracing::debug!(node = %self.me, partition = p, error = %e, "acquisition failed"),
            }
        }
        self.publish();
        contended
    }

    /// Graceful: leave the owned set, then hand back every lease and the
    /// node key together.
    async fn hand_over(mut self) -> Result<(), ClusterError> {
        let leases: Vec<Lease> = std::mem::take(&mut self.held).into_values().collect();
        self.publish();
        let kv = &self.leases;
        // The node key goes first: a node that sees the leases deleted
        // (and runs a round at once) then counts one node fewer and takes
        // its larger share in that round.
        let handed = timeout(REQUEST_TIMEOUT, async {
            let left = self.nodes.leave().await;
            let released = join_all(leases.iter().map(|l| kv.release(l))).await;
            (left, released)
        })
        .await;
        let (left, released) = handed.map_err(|_| ClusterError::TimedOut("handing the leases back"))?;
        tracing::info!(node = %self.me, released = leases.len(), "leases handed over");
        left?;
        released.into_iter().collect()
    }
}

/// Keep this node's lease metrics (`cluster_partitions_owned`,
/// `cluster_partition_changes_total{kind}`) from its owned set until
/// `stop`.
pub fn count(
    mut owned: watch::Receiver<Owned>,
    metrics: Arc<crate::metrics::Metrics>,
    stop: tokio_util::sync::CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) {
    use crate::metrics::Kind;
    tasks.spawn(async move {
        let mut before = Owned::new();
        loop {
            let now = owned.borrow_and_update().clone();
            let taken = now.iter().filter(|(p, t)| before.get(p) != Some(t)).count();
            let left = before.iter().filter(|(p, t)| now.get(p) != Some(t)).count();
            metrics.cluster_partitions_owned.set(now.len() as i64);
            let kinds = [("taken", taken), ("left", left)];
            for (kind, n) in kinds.into_iter().filter(|(_, n)| *n > 0) {
                metrics
                    .cluster_partition_changes
                    .get_or_create(&Kind { kind })
                    .inc_by(n as u64);
            }
            before = now;
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = owned.changed() => if changed.is_err() { return },
            }
        }
    });
}
