//! Match workers: one task, one store, one guest instance per match.
//!
//! A worker owns its [`GuestInstance`] and drains a bounded mailbox of
//! [`Command`]s in order, so feed events and snapshot requests for a match
//! are serialised. Each applied event gets the next `seq` and one update
//! frame, serialised here once and shared by every subscriber through the
//! match's broadcast channel. Guest calls run inline on the tokio task
//! (they are microseconds; a runaway is cut off by the epoch deadline).

pub mod runtime;

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use touchline_guest::event::MatchEvent;

use crate::metrics::Metrics;
use runtime::{Failure, GuestInstance, Runtime};

/// Mailbox capacity per match. When full, the feed reader waits (TCP
/// backpressure to the feed): events are never dropped, and a stuck guest
/// cannot hold the mailbox longer than its epoch deadline per event.
pub const MAILBOX_CAPACITY: usize = 1024;

/// Update frames buffered per match for subscribers. A subscriber that falls
/// further behind gets `Lagged` and is resynchronised with a fresh snapshot.
/// Small on purpose: the ring is allocated per match and keeps its last
/// frames alive while anyone subscribes, so it bounds memory per match.
pub const UPDATE_BUFFER: usize = 64;

/// What a worker is asked to do.
#[derive(Debug)]
pub enum Command {
    /// Apply a feed event.
    Event(MatchEvent),
    /// Reply with a snapshot frame consistent with the update stream.
    Snapshot(oneshot::Sender<Frame>),
}

/// A serialised frame for one match, shared by all its subscribers.
#[derive(Debug, Clone)]
pub struct Frame {
    /// For updates, this frame's seq; for snapshots and status frames, the
    /// seq of the last update applied before it.
    pub seq: u64,
    pub kind: FrameKind,
    /// The JSON text, serialised once; cloning shares the buffer.
    pub bytes: Utf8Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Snapshot,
    Update,
    Status,
}

/// The ends of a worker other tasks hold.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    pub match_id: Arc<str>,
    pub mailbox: mpsc::Sender<Command>,
    pub updates: broadcast::Sender<Frame>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "match")]
    match_id: &'a str,
    seq: u64,
    guest_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// Start the worker for `match_id`; returns its handle.
pub fn spawn(
    match_id: Arc<str>,
    runtime: Runtime,
    metrics: Arc<Metrics>,
    tasks: &tokio_util::task::TaskTracker,
) -> WorkerHandle {
    let (mailbox, rx) = mpsc::channel(MAILBOX_CAPACITY);
    let (updates, _) = broadcast::channel(UPDATE_BUFFER);
    let handle = WorkerHandle {
        match_id: match_id.clone(),
        mailbox,
        updates: updates.clone(),
    };
    tasks.spawn(
        Worker {
            match_id,
            runtime,
            metrics,
            updates,
            seq: 0,
            instance: None,
            failed: None,
        }
        .run(rx),
    );
    handle
}

struct Worker {
    match_id: Arc<str>,
    runtime: Runtime,
    metrics: Arc<Metrics>,
    updates: broadcast::Sender<Frame>,
    /// Seq of the last applied event.
    seq: u64,
    instance: Option<GuestInstance>,
    /// Set when the guest failed fatally; events are no longer applied.
    failed: Option<String>,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let started = std::time::Instant::now();
        match self.runtime.instantiate(self.match_id.clone()) {
            Ok(i) => {
                self.instance = Some(i);
                self.metrics
                    .instantiate_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            Err(f) => self.fail(f),
        }
        self.metrics.live_matches.inc();
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Command::Event(event) => self.apply(&event),
                Command::Snapshot(reply) => {
                    let frame = self.snapshot_frame();
                    let _ = reply.send(frame);
                }
            }
        }
        self.metrics.live_matches.dec();
        tracing::debug!(match_id = %self.match_id, seq = self.seq, "worker stopped");
    }

    fn apply(&mut self, event: &MatchEvent) {
        let Some(instance) = self.instance.as_mut().filter(|_| self.failed.is_none()) else {
            self.metrics.events_not_applied.inc();
            return;
        };
        let bytes = touchline_guest::encode(event);
        match instance.apply(&bytes).and_then(validate_json) {
            Ok(delta) => {
                self.seq += 1;
                let frame = self.frame(FrameKind::Update, Some(&delta), None, None);
                self.metrics.events_applied.inc();
                // No receivers is fine: nobody is watching this match.
                let _ = self.updates.send(frame);
            }
            Err(f) if !f.is_fatal() => {
                self.metrics.events_rejected.inc();
                tracing::warn!(match_id = %self.match_id, seq = self.seq, error = %f, "guest rejected event");
            }
            Err(f) => self.fail(f),
        }
    }

    fn fail(&mut self, f: Failure) {
        tracing::error!(match_id = %self.match_id, seq = self.seq, guest_version = self.runtime.version(), error = %f, "match worker failed");
        self.metrics
            .worker_failures
            .get_or_create(&vec![("cause".to_owned(), f.kind().to_owned())])
            .inc();
        let reason = f.to_string();
        let frame = self.frame(FrameKind::Status, None, None, Some(&reason));
        let _ = self.updates.send(frame);
        self.instance = None;
        self.failed = Some(reason);
    }

    fn snapshot_frame(&mut self) -> Frame {
        let state = match self.instance.as_mut().map(|i| i.snapshot().and_then(validate_json)) {
            Some(Ok(s)) => s,
            Some(Err(f)) => {
                self.fail(f);
                null_json()
            }
            None => null_json(),
        };
        let reason = self.failed.clone();
        self.frame(FrameKind::Snapshot, None, Some(&state), reason.as_deref())
    }

    fn frame(
        &self,
        kind: FrameKind,
        delta: Option<&RawValue>,
        state: Option<&RawValue>,
        reason: Option<&str>,
    ) -> Frame {
        let envelope = Envelope {
            kind: match kind {
                FrameKind::Snapshot => "snapshot",
                FrameKind::Update => "update",
                FrameKind::Status => "status",
            },
            match_id: &self.match_id,
            seq: self.seq,
            guest_version: self.runtime.version(),
            delta,
            state,
            reason,
        };
        let text = serde_json::to_string(&envelope).expect("envelope fields are strings, numbers and validated JSON");
        Frame {
            seq: self.seq,
            kind,
            bytes: Utf8Bytes::from(text),
        }
    }
}

/// The guest's JSON goes to browsers verbatim: check it is JSON first.
fn validate_json(text: String) -> Result<Box<RawValue>, Failure> {
    RawValue::from_string(text).map_err(|e| Failure::Rejected(format!("guest returned invalid JSON: {e}")))
}

fn null_json() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is JSON")
}
