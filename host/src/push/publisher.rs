//! In a cluster, a match's owner publishes every frame its workers send
//! ([`FramePublisher`], the workers' frame tap) into `TL_FRAMES`
//! (`tl.fo.<match>`), which stores it and republishes it to
//! `tl.fr.<match>` for the other nodes' relays (`super::relay`).
//!
//! - **Never blocks a worker**: frames go through one bounded queue
//!   ([`PUBLISH_QUEUE`]) to one task. A full queue drops the frame
//!   (`cluster_frames_dropped_total{reason="queue_full"}`); the relays see
//!   the gap at the match's next frame and resynchronise their sessions.
//! - **Fenced**: a frame is queued only while this node holds the match's
//!   partition before its local deadline (the [`Fence`], checked as the
//!   worker sends it), with its lease token in the headers
//!   ([`crate::cluster::frames`]), and expects the barrier its tenure
//!   raised ([`crate::cluster::barrier`]). A frame that leaves a paused
//!   node after another has taken the partition is refused by the stream
//!   (`reason="fenced"`) and reaches no relay.
//! - **Stored, in order, or retried**: the task publishes in queue order
//!   with up to [`IN_FLIGHT`] acknowledgements outstanding. A frame the
//!   stream did not acknowledge (no leader during an election, a server
//!   lost, a timeout) is published again, with every later one, before
//!   anything newer; each carries a message id unique to it in this
//!   process, so one stored already is acknowledged as a duplicate and not
//!   stored (nor republished) twice. Without this a frame lost in an
//!   election would be a match's last for as long as its odds stayed
//!   still, and its subscribers on other nodes would never learn of it.
//!   When an earlier frame failed but a later one was stored, the retry
//!   lands out of order and the relays resynchronise (as after a gap). A
//!   frame whose tenure has ended, or that has waited past [`PATIENCE`],
//!   is dropped (`reason="tenure_over"`, `reason="gave_up"`).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, publish::PublishAck};
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::partition::frame_in_subject;
use crate::cluster::{Fence, Partitions, barrier};
use crate::metrics::{Metrics, Reason};
use crate::worker::{Frame, FrameTap};

/// Frames waiting to be published (all matches of the node).
pub const PUBLISH_QUEUE: usize = 16 * 1024;
/// Frames published whose acknowledgement is awaited.
pub const IN_FLIGHT: usize = 1024;
/// How long a frame may go unstored before it is dropped (below
/// `TL_FRAMES`' duplicate window, so a retry is always recognised).
pub const PATIENCE: Duration = Duration::from_secs(20);
/// Pause before publishing failed frames again (doubling to 1 s).
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// A frame waiting to be published, with the tenure it is published under.
struct Queued {
    id: Arc<str>,
    frame: Frame,
    partition: u32,
    token: u64,
    /// The partition's barrier sequence this tenure raised.
    barrier: u64,
    /// Its message id's number (unique in this process).
    number: u64,
    /// When it was queued.
    since: Instant,
}

type Acked = Pin<Box<dyn Future<Output = (Queued, Result<PublishAck, PublishErrorKind>)> + Send>>;

/// The frame tap of a cluster node's workers.
pub struct FramePublisher {
    tx: mpsc::Sender<Queued>,
    fence: Arc<Fence>,
    partitions: Partitions,
    metrics: Arc<Metrics>,
    numbers: std::sync::atomic::AtomicU64,
}

impl FramePublisher {
    /// Start the publishing task (until `stop`). `node` names this process
    /// in the frames' message ids.
    pub fn start(
        js: jetstream::Context,
        node: &str,
        fence: Arc<Fence>,
        partitions: Partitions,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
        tasks: &TaskTracker,
    ) -> FramePublisher {
        let (tx, rx) = mpsc::channel::<Queued>(PUBLISH_QUEUE);
        // A process's message ids must differ from its previous run's
        // (the duplicate window outlives a restart).
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let prefix: Arc<str> = Arc::from(format!("{node}-{}-{started:x}", std::process::id()));
        let task = Publishing {
            js,
            prefix,
            fence: fence.clone(),
            metrics: metrics.clone(),
            in_flight: FuturesOrdered::new(),
            retry: VecDeque::new(),
            backoff: RETRY_MIN,
        };
        tasks.spawn(task.run(rx, stop));
        FramePublisher {
            tx,
            fence,
            partitions,
            metrics,
            numbers: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl FrameTap for FramePublisher {
    fn frame(&self, match_id: &Arc<str>, frame: &Frame) {
        let p = self.partitions.partition_of(match_id);
        let Some(token) = self.fence.token(p) else {
            // Not ours (any more, or past our deadline): whoever owns it
            // now publishes.
            return;
        };
        // Before its tenure's barrier is raised the partition applies
        // nothing, so this is rare (a status frame at the takeover).
        let Some(barrier) = self.fence.barrier(p, token) else {
            return dropped(&self.metrics, "no_barrier");
        };
        let queued = Queued {
            id: match_id.clone(),
            frame: frame.clone(),
            partition: p,
            token,
            barrier,
            number: self.numbers.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            since: Instant::now(),
        };
        if self.tx.try_send(queued).is_err() {
            dropped(&self.metrics, "queue_full");
        }
    }
}

/// The publishing task's state.
struct Publishing {
    js: jetstream::Context,
    prefix: Arc<str>,
    fence: Arc<Fence>,
    metrics: Arc<Metrics>,
    in_flight: FuturesOrdered<Acked>,
    /// Frames to publish again, in order, before anything from the queue.
    retry: VecDeque<Queued>,
    backoff: Duration,
}

impl Publishing {
    async fn run(mut self, mut rx: mpsc::Receiver<Queued>, stop: CancellationToken) {
        let mut resume_at: Option<Instant> = None;
        loop {
            let room = self.in_flight.len() < IN_FLIGHT;
            let retrying = !self.retry.is_empty();
            // While failed frames wait, newer ones wait behind them.
            let due = resume_at.is_none_or(|at| Instant::now() >= at);
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                Some((queued, acked)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.settle(queued, acked);
                    if !self.retry.is_empty() && resume_at.is_none() {
                        resume_at = Some(Instant::now() + self.backoff);
                        self.backoff = (self.backoff * 2).min(RETRY_MAX);
                    }
                }
                _ = sleep_until(resume_at), if retrying && !due => {}
                _ = std::future::ready(()), if retrying && due && room && self.in_flight.is_empty() => {
                    // Everything in flight has settled: publish the failed
                    // frames again, then go on with the queue.
                    resume_at = None;
                    while let Some(queued) = self.retry.pop_front() {
                        self.publish(queued).await;
                    }
                }
                next = rx.recv(), if !retrying && room => {
                    let Some(queued) = next else { return };
                    self.publish(queued).await;
                }
            }
        }
    }

    /// What one acknowledgement says about its frame.
    fn settle(&mut self, queued: Queued, acked: Result<PublishAck, PublishErrorKind>) {
        match acked {
            Ok(_) => self.backoff = RETRY_MIN,
            Err(PublishErrorKind::WrongLastSequence) => {
                // Behind a later tenure's barrier: a stale owner's frame.
                dropped(&self.metrics, "fenced");
            }
            Err(kind) if self.fence.barrier(queued.partition, queued.token).is_none() => {
                tracing::debug!(match_id = %queued.id, error = %kind, "frame not stored; its tenure is over");
                dropped(&self.metrics, "tenure_over");
            }
            Err(kind) if queued.since.elapsed() > PATIENCE => {
                tracing::warn!(match_id = %queued.id, error = %kind, "frame not stored in time: dropped");
                dropped(&self.metrics, "gave_up");
            }
            Err(kind) => {
                tracing::debug!(match_id = %queued.id, error = %kind, "frame not stored; publishing it again");
                self.retry.push_back(queued);
            }
        }
    }

    /// Send one frame and keep its acknowledgement in flight.
    async fn publish(&mut self, queued: Queued) {
        let Ok(subject) = frame_in_subject(&queued.id) else {
            return;
        };
        let mut headers = queued.frame.head(queued.token).headers();
        barrier::expect(&mut headers, queued.partition, queued.barrier);
        let msg_id = format!("{}-{}", self.prefix, queued.number);
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
        let payload = Bytes::from(queued.frame.bytes.plain().clone());
        let sent = self.js.publish_with_headers(subject, headers, payload).await;
        let acked: Acked = match sent {
            Ok(ack) => Box::pin(async move {
                let acked = ack.await.map_err(|e| e.kind());
                (queued, acked)
            }),
            Err(e) => {
                let kind = e.kind();
                Box::pin(async move { (queued, Err(kind)) })
            }
        };
        self.in_flight.push_back(acked);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A frame tap set once the node holds leases (the workers' configuration
/// is made before): frames before that are nobody's to publish.
#[derive(Default)]
pub struct LateTap(std::sync::OnceLock<FramePublisher>);

impl LateTap {
    pub fn set(&self, publisher: FramePublisher) {
        let _ = self.0.set(publisher);
    }
}

impl FrameTap for LateTap {
    fn frame(&self, match_id: &Arc<str>, frame: &Frame) {
        if let Some(p) = self.0.get() {
            p.frame(match_id, frame);
        }
    }
}

/// A frame not published for the other nodes, and why.
fn dropped(metrics: &Metrics, reason: &'static str) {
    metrics.cluster_frames_dropped.get_or_create(&Reason { reason }).inc();
}
