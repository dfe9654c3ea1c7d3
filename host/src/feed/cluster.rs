//! The feed in a cluster: a node's feed connections publish every match
//! event to `TL_EVENTS` ([`super::publishing`]) instead of routing it, and each node
//! applies the events of the partitions it owns ([`apply_owned`]), in
//! stream order, through its router.
//!
//! - **Publish** ([`super::publishing`]): each feed connection keeps a
//!   bounded window of publishes in flight, at most one per match, so a
//!   match's events are stored in feed order and the reader waits when
//!   the window is full (the stream's replication is the backpressure).
//!   While NATS does not answer each retries with backoff for up to
//!   [`super::publishing::PUBLISH_PATIENCE`]; past it the event is counted
//!   as not routed (`route_errors_total{kind="cluster_unavailable"}`) and
//!   logged (a reader blocked for ever would hold every later message of
//!   the connection, alive messages included).
//! - **Apply**: one task per owned partition first raises the partition's
//!   frame barrier ([`crate::cluster::barrier`]: from then on the stream
//!   refuses the previous tenure's frames), then reads it from the stream
//!   ([`crate::cluster::consume`]) and dispatches each event to its match's
//!   worker. Before each dispatch it asks the [`Fence`] whether this node
//!   still holds the partition under the same token before its local
//!   deadline, so a lost lease (or a pause past the deadline) stops the
//!   applying at the next event, before the lease task reacts. A partition
//!   let go has its matches released from the router; taken (again), its
//!   matches start from their snapshots in JetStream
//!   ([`super::snapshots`]) and the events left in the stream after them
//!   are applied (the owner trims those a snapshot covers): the state of a
//!   match lives in JetStream, not on this node, so the local sled journal
//!   is not used for cluster matches.
//! - **Producers**: what a feed says about the producers (`alive`s,
//!   `snapshot_complete`s, lag crossings, its connection opening and
//!   closing) goes to every node (`tl.pr`), so each node's producer
//!   service, hence each owner's workers, knows whether the odds are
//!   current. It travels beside the events, not in their stream: a node
//!   may hear a `snapshot_complete` before it has applied the recovery's
//!   events; a bet is decided only once the owner has applied every event
//!   stored when the bet arrived (`bets::cluster`), which puts a
//!   recovery's events before it. Every node asks for its own recoveries.
//! - **Bets**: an applier reports how far it has come
//!   ([`crate::cluster::bets::Progress`]); once it has handed over every
//!   event stored when its tenure began it gives each match's worker the
//!   partition's recorded bets, and only then may the desk decide there.
//! - **Snapshots for the other nodes' relays** (`push::relay`): while it
//!   applies a partition, the node answers `tl.snap.<p>` with the snapshot
//!   frame of the match asked for.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::barrier::{self, Raised};
use crate::cluster::bets::{Applied, BetBook, Progress};
use crate::cluster::consume::{self, Delivery};
use crate::cluster::ingest::{Ingest, PRODUCERS_SUBJECT};
use crate::cluster::matches::Directory;
use crate::cluster::partition::snapshot_subject;
use crate::cluster::{Cluster, Fence, Owned};
use crate::metrics::{Kind, Metrics};
use crate::producers::{Input, Producers};
use crate::router::Router;
use crate::worker::{Catchup, Command};

/// Backoff between publish attempts and consumer reopenings: doubles up
/// to [`RETRY_MAX`].
pub(super) const RETRY_MIN: Duration = Duration::from_millis(50);
pub(super) const RETRY_MAX: Duration = Duration::from_secs(1);

/// Tell every node's producer service what this node's feed says
/// (`tl.pr`, JSON). Not retried: liveness is only ever current, and the
/// next `alive` comes within seconds.
pub async fn tell(ingest: &Ingest, input: &Input) {
    let news = match serde_json::to_vec(input) {
        Ok(n) => n,
        Err(e) => return tracing::error!(error = %e, "producer news not encodable"),
    };
    if let Err(e) = ingest.tell(bytes::Bytes::from(news)).await {
        tracing::warn!(error = %e, ?input, "producer news not published");
    }
}

/// Tell every node of each recovery request this node's producer service
/// sends (`tl.pr`, as [`Input::Requested`]), so they follow it instead of
/// asking themselves, until `stop`.
pub fn announce(
    ingest: Ingest,
    mut requests: tokio::sync::mpsc::Receiver<Input>,
    stop: CancellationToken,
    tasks: &TaskTracker,
) {
    tasks.spawn(async move {
        loop {
            let request = tokio::select! {
                _ = stop.cancelled() => return,
                r = requests.recv() => match r { Some(r) => r, None => return },
            };
            tell(&ingest, &request).await;
        }
    });
}

/// Feed this node's producer service with what every node's feed says
/// about the producers, until `stop`.
pub fn hear_producers(client: async_nats::Client, producers: Producers, stop: CancellationToken, tasks: &TaskTracker) {
    tasks.spawn(async move {
        let mut news = match client.subscribe(PRODUCERS_SUBJECT).await {
            Ok(s) => s,
            Err(e) => return tracing::error!(error = %e, "cannot hear the producers' news"),
        };
        loop {
            let m = tokio::select! {
                _ = stop.cancelled() => return,
                m = news.next() => match m { Some(m) => m, None => return },
            };
            match serde_json::from_slice::<Input>(&m.payload) {
                // A recovery request failing is the requesting node's own.
                Ok(Input::RequestFailed { .. }) => {}
                Ok(input) => producers.send(input).await,
                Err(e) => tracing::warn!(error = %e, "not producer news: skipped"),
            }
        }
    });
}

/// What the appliers of a node share.
pub struct Appliers {
    pub cluster: Arc<Cluster>,
    pub fence: Arc<Fence>,
    pub router: Arc<Router>,
    pub metrics: Arc<Metrics>,
    /// The partitions' recorded bets, restored into their workers.
    pub book: BetBook,
    /// How far each applier has come (the bet desk waits on it).
    pub progress: Arc<Progress>,
    /// The cluster's matches: each applier names the ones it runs.
    pub directory: Directory,
}

/// Keep one applying task per partition this node owns, until `stop`.
pub fn apply_owned(appliers: Appliers, owned: watch::Receiver<Owned>, stop: CancellationToken, tasks: &TaskTracker) {
    let Appliers {
        cluster,
        fence,
        router,
        metrics,
        book,
        progress,
        directory,
    } = appliers;
    let spawner = tasks.clone();
    let partitions = cluster.config.partitions;
    let releasing = router.clone();
    let start = move |p: u32, token: u64, cancel: CancellationToken| {
        spawner.spawn(serve_snapshots(
            cluster.client.clone(),
            (p, token, fence.clone()),
            router.clone(),
            cancel.clone(),
        ));
        let applier = Applier {
            cluster: cluster.clone(),
            partition: p,
            token,
            fence: fence.clone(),
            router: router.clone(),
            metrics: metrics.clone(),
            book: book.clone(),
            progress: Arc::new(progress.begin(p, token)),
            directory: directory.clone(),
            named: std::sync::Mutex::new(std::collections::HashSet::new()),
        };
        spawner.spawn(applier.run(cancel));
    };
    let left = move |p: u32| {
        let released = releasing.release(|id| partitions.partition_of(id) == p);
        tracing::info!(partition = p, released, "partition let go: its matches released");
    };
    crate::cluster::tenures::each(owned, stop, tasks, start, left);
}

/// Applies one partition for one tenure (one fencing token).
struct Applier {
    cluster: Arc<Cluster>,
    partition: u32,
    token: u64,
    fence: Arc<Fence>,
    router: Arc<Router>,
    metrics: Arc<Metrics>,
    book: BetBook,
    /// How far it has come, for the bet desk.
    progress: Arc<watch::Sender<Applied>>,
    directory: Directory,
    /// Matches named in the directory this tenure.
    named: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Applier {
    /// Still this tenure's owner, before its local deadline.
    fn holds(&self) -> bool {
        self.fence.holds(self.partition, self.token)
    }

    async fn run(self, cancel: CancellationToken) {
        let p = self.partition;
        tracing::info!(partition = p, token = self.token, "applying partition");
        // The next stream sequence to read: the whole partition first.
        let mut from = 1;
        let mut backoff = RETRY_MIN;
        // Once every event stored at the start is handed over, the
        // partition's recorded bets go back to their workers (bets are
        // decided only after that).
        let Some(restore_at) = self
            .until_ok(&cancel, "reading the partition's last event", || {
                self.book.last_event(p)
            })
            .await
        else {
            return;
        };
        // The store-side fence: frames of this tenure expect its barrier,
        // and the previous tenure's are refused from now on.
        let raised = self
            .until_ok(&cancel, "raising the partition's frame barrier", || {
                barrier::raise(&self.cluster, p, self.token)
            })
            .await;
        match raised {
            Some(Raised::Held { sequence }) => self.fence.raised(p, self.token, sequence),
            Some(Raised::Superseded { by }) => {
                tracing::warn!(
                    partition = p,
                    token = self.token,
                    by,
                    "a later tenure holds the barrier: not applying"
                );
                return;
            }
            None => return,
        }
        // Each match from its snapshot: only the events after it are
        // applied (those it covers and not yet trimmed are skipped).
        let Some(covered) = self
            .until_ok(&cancel, "restoring the partition's snapshots", || {
                super::snapshots::restore(&self.cluster, p, &self.router)
            })
            .await
        else {
            return;
        };
        let mut following = restore_at == 0;
        if following {
            self.follow_bets(&cancel);
        }
        while !cancel.is_cancelled() && self.holds() {
            let events = match consume::events(&self.cluster, p, from).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "opening the partition's events; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RETRY_MAX);
                    continue;
                }
            };
            let mut events = std::pin::pin!(events);
            loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => return,
                    next = events.next() => next,
                };
                match next {
                    Some(Ok(delivery)) => {
                        if !self.holds() {
                            tracing::info!(partition = p, "lease lost: applying stopped");
                            return;
                        }
                        backoff = RETRY_MIN;
                        let applied = self.apply(delivery, &covered).await;
                        from = applied + 1;
                        self.progress.send_modify(|a| a.sequence = applied);
                        if applied >= restore_at && !following {
                            following = true;
                            self.follow_bets(&cancel);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(partition = p, error = %e, from, "partition's events interrupted; reopening");
                        break;
                    }
                    None => break,
                }
            }
        }
    }

    /// Name a match in the cluster's directory, once per tenure, off the
    /// applying path (a name lost only keeps it from other nodes' `"*"`).
    fn name(&self, match_id: &str) {
        {
            // Looked up first: the common case (named already) allocates
            // nothing on the applying path.
            let mut named = self.named.lock().expect("named lock");
            if named.contains(match_id) {
                return;
            }
            named.insert(match_id.to_owned());
        }
        let (directory, id) = (self.directory.clone(), match_id.to_owned());
        tokio::spawn(async move {
            if let Err(e) = directory.record(&id).await {
                tracing::warn!(match_id = id, error = %e, "match not named in the cluster's directory");
            }
        });
    }

    /// Follow the partition's bet records for this tenure, from the last
    /// record of every bet: each accepted bet goes to its match's worker
    /// (known ones are skipped there), and once the backlog is read the
    /// desk may decide bets here. Following (not reading once) also picks
    /// up a decision an earlier owner recorded after this one read.
    fn follow_bets(&self, cancel: &CancellationToken) {
        let (p, book, router, progress) = (
            self.partition,
            self.book.clone(),
            self.router.clone(),
            self.progress.clone(),
        );
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut backoff = RETRY_MIN;
            while !cancel.is_cancelled() {
                let records = match book.records(p).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(partition = p, error = %e, "following the partition's bets; retrying");
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(RETRY_MAX);
                        continue;
                    }
                };
                let mut records = std::pin::pin!(records);
                loop {
                    let next = tokio::select! {
                        _ = cancel.cancelled() => return,
                        next = records.next() => next,
                    };
                    let Some(Ok((record, caught_up))) = next else { break };
                    backoff = RETRY_MIN;
                    if let Some(record) = record.filter(|r| r.decision.is_ok()) {
                        match router.local(&record.match_id) {
                            Some(handle) => {
                                let records = vec![record];
                                let _ = handle.mailbox.send(Command::RestoreBets { records }).await;
                            }
                            None => tracing::error!(
                                partition = p,
                                match_id = record.match_id,
                                bet = record.request.id,
                                "an accepted bet on a match with no events here: not settled"
                            ),
                        }
                    }
                    if caught_up && !progress.borrow().bets_restored {
                        tracing::info!(partition = p, "recorded bets restored");
                        progress.send_modify(|a| a.bets_restored = true);
                    }
                }
            }
        });
    }

    /// `op` until it succeeds, with backoff, while this tenure lasts.
    async fn until_ok<T, F, Fut>(&self, cancel: &CancellationToken, what: &str, op: F) -> Option<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::cluster::ClusterError>>,
    {
        let mut backoff = RETRY_MIN;
        while !cancel.is_cancelled() && self.holds() {
            match op().await {
                Ok(v) => return Some(v),
                Err(e) => tracing::warn!(partition = self.partition, error = %e, what, "retrying"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RETRY_MAX);
        }
        None
    }

    /// Route one delivery; its stream sequence.
    async fn apply(&self, delivery: Delivery, covered: &std::collections::HashMap<String, u64>) -> u64 {
        let consumed = |kind| self.metrics.cluster_consumed.get_or_create(&Kind { kind }).inc();
        match delivery {
            Delivery::Foreign { sequence, subject } => {
                consumed("foreign");
                tracing::warn!(
                    partition = self.partition,
                    sequence,
                    subject,
                    "not an event of ours: skipped"
                );
                sequence
            }
            Delivery::Event(e) if covered.get(&e.match_id).is_some_and(|c| e.sequence <= *c) => {
                consumed("covered");
                e.sequence
            }
            Delivery::Event(e) => {
                match touchline_guest::event::decode(&e.event) {
                    Ok(event) if event.event_id() == e.match_id => {
                        consumed("event");
                        self.name(&e.match_id);
                        if let Err(err) = self
                            .router
                            .dispatch_while(event, None, Some(e.sequence), || self.holds())
                            .await
                        {
                            self.metrics
                                .route_errors
                                .get_or_create(&Kind { kind: err.kind() })
                                .inc();
                            tracing::warn!(match_id = e.match_id, error = %err, "event not routed");
                        }
                    }
                    _ => {
                        consumed("undecodable");
                        tracing::warn!(
                            partition = self.partition,
                            sequence = e.sequence,
                            match_id = e.match_id,
                            "undecodable event: skipped"
                        );
                    }
                }
                e.sequence
            }
        }
    }
}

/// Answer the other nodes' relays with a snapshot of one of partition
/// `p`'s matches (`tl.snap.<p>`, the match id as payload) for this tenure:
/// the frame a local subscriber would get, with its kind, epoch, seq and
/// our token in the headers; an empty answer if the match has no worker
/// here (yet).
async fn serve_snapshots(
    client: async_nats::Client,
    (p, token, fence): (u32, u64, Arc<Fence>),
    router: Arc<Router>,
    cancel: CancellationToken,
) {
    let mut requests = match client.subscribe(snapshot_subject(p)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(partition = p, error = %e, "cannot serve snapshots");
            return;
        }
    };
    loop {
        let request = tokio::select! {
            _ = cancel.cancelled() => return,
            next = requests.next() => match next { Some(r) => r, None => return },
        };
        let Some(reply) = request.reply else { continue };
        if !fence.holds(p, token) {
            // Not ours to answer any more: the new owner will.
            continue;
        }
        let id = String::from_utf8_lossy(&request.payload).into_owned();
        let frame = match router.local(&id) {
            Some(handle) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let asked = handle.mailbox.send(Command::Subscribe { since: None, reply: tx }).await;
                match (asked, rx.await) {
                    (Ok(()), Ok(Catchup::Snapshot(f))) => Some(f),
                    _ => None,
                }
            }
            None => None,
        };
        let sent = match frame {
            Some(f) => {
                let headers = f.head(token).headers();
                client
                    .publish_with_headers(reply, headers, bytes::Bytes::from(f.bytes.plain().clone()))
                    .await
            }
            None => client.publish(reply, bytes::Bytes::new()).await,
        };
        if let Err(e) = sent {
            tracing::debug!(partition = p, error = %e, "snapshot answer not sent");
        }
    }
}
