//! A feed connection's publishes to `TL_EVENTS` in a cluster: several in
//! flight at once, at most one per match.
//!
//! Waiting for each acknowledgement before reading the next message made
//! ingest a chain of round trips (the bench's cluster scenario: ~3,000
//! events/s whatever the number of nodes, node a two-thirds idle). A
//! [`Publishing`] window lets up to [`IN_FLIGHT`] publishes run at once,
//! each its own task, with one rule that keeps what matters:
//!
//! - **A match's events are stored in the connection's order.** A match's
//!   next event is not sent before its previous one is acknowledged (or
//!   given up), so no failure pattern (a timeout, a "no responders" during
//!   an election, a retry) can store them out of order. Events of different
//!   matches may be stored in any order between them: each match's worker
//!   sees only its own. (Across connections there is no order: a new
//!   connection's event can be stored while an old one still retries its
//!   predecessor, as before this window.)
//! - **Backpressure stays.** With [`IN_FLIGHT`] publishes pending, or the
//!   match's previous one still pending, the reader waits: the feed
//!   connection is read no faster than the stream stores.
//! - **Retries are per event**, as before: with backoff for up to
//!   [`PUBLISH_PATIENCE`], then counted as
//!   `route_errors_total{kind="cluster_unavailable"}` and logged.
//! - **Producer news follows the events read before it**: the feed module
//!   calls [`Publishing::drain`] before it tells the producers anything (an
//!   `alive` says everything before it was processed, and becomes a
//!   recovery's `after`; a `snapshot_complete` ends a recovery; a lag
//!   crossing or the connection's end too), so every earlier event is
//!   stored (or given up) first. Alives come every few seconds: a round
//!   trip each.
//! - **Shutdown**: once the server is stopping, pending publishes get
//!   [`SHUTDOWN_GRACE`]; then the rest are aborted and counted as
//!   `cluster_unavailable`, as is every event read after that (the leases
//!   are handed over by then; a reader retrying for 30 s per event would
//!   hold the exit).
//!
//! Bounded: [`IN_FLIGHT`] tasks, each holding one event's encoded bytes and
//! its 64-character message id (made once, not per retry).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use touchline_guest::event::MatchEvent;

use super::cluster::{RETRY_MAX, RETRY_MIN};
use crate::cluster::ingest::{Ingest, message_id};
use crate::metrics::{Kind, Metrics};

/// Publishes in flight on one feed connection.
pub const IN_FLIGHT: usize = 256;
/// How long a publish is retried while NATS does not answer.
pub const PUBLISH_PATIENCE: Duration = Duration::from_secs(30);
/// How long pending publishes may still take once the server is stopping.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// One feed connection's window of publishes.
pub struct Publishing {
    ingest: Ingest,
    metrics: Arc<Metrics>,
    /// The server stopping: pending publishes get [`SHUTDOWN_GRACE`].
    stop: CancellationToken,
    /// When the grace ends (set once the stop is seen).
    grace_ends: Option<Instant>,
    /// The grace ended: what is read from now on is counted, not sent.
    abandoned: bool,
    /// Dropped with the connection's future only if it is dropped before
    /// the window is drained (a panic, the runtime going away): the tasks
    /// are then aborted, which is safer than leaving them to race a later
    /// connection's events of the same match.
    /// Each task ends with its match's id.
    tasks: JoinSet<String>,
    /// Match → its pending task: a match in here has its next event wait
    /// (the per-match order), looked up once per event.
    pending: HashMap<String, Id>,
}

impl Publishing {
    pub fn new(ingest: Ingest, metrics: Arc<Metrics>, stop: CancellationToken) -> Publishing {
        Publishing {
            ingest,
            metrics,
            stop,
            grace_ends: None,
            abandoned: false,
            tasks: JoinSet::new(),
            pending: HashMap::new(),
        }
    }

    /// Start publishing `event` (parsed from the feed message `raw`), once
    /// its match has nothing in flight and the window has room.
    pub async fn publish(&mut self, event: &MatchEvent, raw: Vec<u8>) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            self.finished(done);
        }
        let id = event.event_id();
        while self.pending.contains_key(id) || self.tasks.len() >= IN_FLIGHT {
            self.next().await;
        }
        if self.abandoned {
            return unpublished(&self.metrics, 1);
        }
        let bytes = Bytes::from(touchline_guest::encode(event));
        let msg_id = message_id(id, &raw);
        let (ingest, metrics, match_id) = (self.ingest.clone(), self.metrics.clone(), id.to_owned());
        let task = self.tasks.spawn(async move {
            publish(&ingest, &metrics, &match_id, bytes, msg_id).await;
            match_id
        });
        self.pending.insert(id.to_owned(), task.id());
    }

    /// Wait until every publish started has ended (or, the server
    /// stopping, until the grace is over).
    pub async fn drain(&mut self) {
        while !self.tasks.is_empty() {
            self.next().await;
        }
    }

    /// Wait for one publish to end, or for the grace after a stop to run
    /// out (then abandon every pending one).
    async fn next(&mut self) {
        let grace = async {
            self.stop.cancelled().await;
            let ends = *self.grace_ends.get_or_insert(Instant::now() + SHUTDOWN_GRACE);
            tokio::time::sleep_until(ends).await;
        };
        let done = tokio::select! {
            done = self.tasks.join_next_with_id() => done,
            () = grace => None,
        };
        match done {
            Some(done) => self.finished(done),
            None if !self.tasks.is_empty() => self.abandon(),
            None => {}
        }
    }

    fn finished(&mut self, done: Result<(Id, String), tokio::task::JoinError>) {
        match done {
            Ok((_, match_id)) => {
                self.pending.remove(&match_id);
            }
            Err(e) => {
                tracing::error!(error = %e, "an event's publish task failed");
                self.pending.retain(|_, id| *id != e.id());
            }
        }
    }

    /// The server stopped and NATS did not take the pending publishes in
    /// time: abort them, and count them (and every later event) as not
    /// routed.
    fn abandon(&mut self) {
        let left = self.tasks.len();
        tracing::error!(
            left,
            "events not published: the server stopped while NATS did not answer"
        );
        unpublished(&self.metrics, left);
        self.tasks.abort_all();
        self.tasks.detach_all();
        self.pending.clear();
        self.abandoned = true;
    }
}

/// `n` events counted as not routed: the cluster did not take them.
fn unpublished(metrics: &Metrics, n: usize) {
    metrics
        .route_errors
        .get_or_create(&Kind {
            kind: "cluster_unavailable",
        })
        .inc_by(n as u64);
}

/// Publish one match event (`bytes`, encoded, with message id `msg_id`),
/// retrying for up to [`PUBLISH_PATIENCE`], then counting it as not routed.
async fn publish(ingest: &Ingest, metrics: &Metrics, match_id: &str, bytes: Bytes, msg_id: String) {
    let started = tokio::time::Instant::now();
    let mut backoff = RETRY_MIN;
    loop {
        match ingest.publish(match_id, bytes.clone(), msg_id.clone()).await {
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
                return unpublished(metrics, 1);
            }
        }
    }
}
