//! A feed connection's publishes to `TL_EVENTS` in a cluster: several in
//! flight at once, at most one per match.
//!
//! Waiting for each acknowledgement before reading the next message made
//! ingest a chain of round trips (the bench's cluster scenario: ~3,000
//! events/s whatever the number of nodes, node a two-thirds idle). A
//! [`Publishing`] window lets up to [`IN_FLIGHT`] publishes run at once,
//! each its own task, with one rule that keeps what matters:
//!
//! - **A match's events are stored in feed order.** A match's next event
//!   is not sent before its previous one is acknowledged (or given up), so
//!   no failure pattern (a timeout, a "no responders" during an election,
//!   a retry) can store them out of order. Events of different matches may
//!   be stored in any order between them: each match's worker sees only
//!   its own.
//! - **Backpressure stays.** With [`IN_FLIGHT`] publishes pending, or the
//!   match's previous one still pending, the reader waits: the feed
//!   connection is read no faster than the stream stores.
//! - **Retries are per event**, as before ([`publish`]): with backoff for
//!   up to [`PUBLISH_PATIENCE`], then counted as
//!   `route_errors_total{kind="cluster_unavailable"}` and logged.
//! - **Producer news that must follow the events** (`snapshot_complete`, a
//!   connection's end) is told after [`Publishing::drain`]: every event
//!   read before it is stored (or given up) first. Liveness (`alive`, lag)
//!   is not held back by events.
//!
//! Bounded: [`IN_FLIGHT`] tasks, each holding one event's encoded bytes and
//! its feed message (a few KB each).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::{Id, JoinSet};
use touchline_guest::event::MatchEvent;

use crate::cluster::ingest::Ingest;
use crate::metrics::{Kind, Metrics};

/// Publishes in flight on one feed connection.
pub const IN_FLIGHT: usize = 256;
/// How long a publish is retried while NATS does not answer.
pub const PUBLISH_PATIENCE: Duration = Duration::from_secs(30);
/// Backoff between publish attempts: doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// One feed connection's window of publishes.
pub struct Publishing {
    ingest: Ingest,
    metrics: Arc<Metrics>,
    tasks: JoinSet<()>,
    /// The match each task publishes for (the matches with one in flight).
    pending: HashMap<Id, String>,
    busy: HashSet<String>,
}

impl Publishing {
    pub fn new(ingest: Ingest, metrics: Arc<Metrics>) -> Publishing {
        Publishing {
            ingest,
            metrics,
            tasks: JoinSet::new(),
            pending: HashMap::new(),
            busy: HashSet::new(),
        }
    }

    /// Start publishing `event` (parsed from the feed message `raw`), once
    /// its match has nothing in flight and the window has room.
    pub async fn publish(&mut self, event: &MatchEvent, raw: Vec<u8>) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            self.finished(done);
        }
        let id = event.event_id();
        while self.busy.contains(id) || self.tasks.len() >= IN_FLIGHT {
            self.next().await;
        }
        let bytes = Bytes::from(touchline_guest::encode(event));
        let (ingest, metrics, match_id) = (self.ingest.clone(), self.metrics.clone(), id.to_owned());
        let task = self
            .tasks
            .spawn(async move { publish(&ingest, &metrics, &match_id, bytes, &raw).await });
        self.pending.insert(task.id(), id.to_owned());
        self.busy.insert(id.to_owned());
    }

    /// Wait until every publish started has ended.
    pub async fn drain(&mut self) {
        while !self.tasks.is_empty() {
            self.next().await;
        }
    }

    async fn next(&mut self) {
        if let Some(done) = self.tasks.join_next_with_id().await {
            self.finished(done);
        }
    }

    fn finished(&mut self, done: Result<(Id, ()), tokio::task::JoinError>) {
        let id = match done {
            Ok((id, ())) => id,
            Err(e) => {
                tracing::error!(error = %e, "an event's publish task failed");
                e.id()
            }
        };
        if let Some(m) = self.pending.remove(&id) {
            self.busy.remove(&m);
        }
    }
}

/// Publish one match event (`bytes`, encoded, of feed message `raw`),
/// retrying for up to [`PUBLISH_PATIENCE`], then counting it as not routed.
async fn publish(ingest: &Ingest, metrics: &Metrics, match_id: &str, bytes: Bytes, raw: &[u8]) {
    let started = tokio::time::Instant::now();
    let mut backoff = RETRY_MIN;
    loop {
        match ingest.publish(match_id, bytes.clone(), raw).await {
            Ok(p) => {
                let kind = if p.duplicate { "duplicate" } else { "new" };
                metrics.cluster_published.get_or_create(&Kind { kind }).inc();
                return;
            }
            Err(e) if started.elapsed() + backoff < PUBLISH_PATIENCE => {
                tracing::warn!(match_id, error = %e, "publishing an event; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
            Err(e) => {
                tracing::error!(match_id, error = %e, "event not published: the cluster did not answer");
                metrics
                    .route_errors
                    .get_or_create(&Kind {
                        kind: "cluster_unavailable",
                    })
                    .inc();
                return;
            }
        }
    }
}
