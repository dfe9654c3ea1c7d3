//! Feed intake: TCP connections in, typed events routed to match workers.
//!
//! [`frame`] and [`parse`] are the sans-IO core; this module is the IO edge:
//! it accepts (`--feed-listen`) or dials (`--feed-connect`, reconnecting with
//! backoff) feed connections, pushes every read into a [`frame::Framer`],
//! parses each message and dispatches it through the [`Router`]. A bad
//! message is counted and logged, never fatal to the connection: what the
//! framer or the parser drops is counted by reason in messages and bytes
//! (`feed_dropped_messages_total{reason}`, `feed_dropped_bytes_total{reason}`;
//! `feed_errors_total{kind}` counts the same drops, in messages). The loop
//! tells the framer when the connection closed and when it has been quiet
//! for `--feed-stall-ms`, so a partial message is dropped and counted rather
//! than held.
//!
//! It is also where the producers learn what the feed says about them:
//! `alive`s, `snapshot_complete`s, lag crossings (a [`LagWatch`] per
//! connection) and connections opening and closing go to the producer
//! service; messages of producers this deployment does not use are counted
//! (`feed_ignored_total{product}`) and dropped here. So are the fields the
//! parser could not read in messages that still apply
//! (`feed_problems_total{kind,field}`). A `bet_stop`'s groups are
//! resolved into market ids here ([`groups`]).
//!
//! In a cluster ([`cluster`]) match events are published to `TL_EVENTS`
//! instead (a window of publishes per connection, one per match in flight:
//! [`publishing`]), and each node applies the partitions it owns.

pub mod cluster;
pub mod frame;
pub mod groups;
pub mod parse;
pub mod publishing;
mod rejects;
pub mod snapshots;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::metrics::{FeedProblem, Kind, Metrics, Reason};
use crate::producers::{Input, LagWatch, Producers, wall_ms};
use crate::router::Router;
use frame::Framer;
use parse::FeedMessage;
use publishing::Publishing;
pub use rejects::{Rejected, Rejects};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Reconnect backoff for `--feed-connect`: doubles from MIN up to MAX.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Accept errors (e.g. EMFILE) back off this long before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a feed connection needs.
#[derive(Clone)]
pub struct Intake {
    pub router: Arc<Router>,
    pub metrics: Arc<Metrics>,
    /// Set after every read: whether it filled the whole buffer (the
    /// workers' [`crate::worker::FeedBehind`]); cleared when the
    /// connection goes quiet or closes. One flag for all connections: with
    /// two at once, the last to read sets it.
    pub feed_behind: crate::worker::FeedBehind,
    pub max_message_bytes: usize,
    /// A partial message still held after the connection was quiet this
    /// long is dropped (`stalled`).
    pub stall_after: Duration,
    pub producers: Producers,
    /// The market descriptions in force: what a `bet_stop`'s groups mean.
    pub descriptions: tokio::sync::watch::Receiver<Arc<crate::names::Descriptions>>,
    /// The last messages dropped, for the operator console.
    pub rejects: Arc<Rejects>,
    /// In a cluster: match events are published to `TL_EVENTS` (their
    /// partition's owner applies them) instead of routed here.
    pub ingest: Option<crate::cluster::ingest::Ingest>,
}

/// Accept feed connections until `shutdown`.
pub async fn listen(listener: TcpListener, intake: Intake, shutdown: CancellationToken) {
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                tracing::info!(%peer, "feed connected");
                tasks.spawn(connection(stream, intake.clone(), shutdown.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "feed accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    tasks.close();
    tasks.wait().await;
}

/// Dial `addr` and keep a connection open until `shutdown`.
pub async fn connect(addr: String, intake: Intake, shutdown: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    while !shutdown.is_cancelled() {
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => break,
            s = TcpStream::connect(&addr) => s,
        };
        match attempt {
            Ok(stream) => {
                tracing::info!(%addr, "connected to feed");
                backoff = BACKOFF_MIN;
                connection(stream, intake.clone(), shutdown.clone()).await;
            }
            Err(e) => tracing::warn!(%addr, error = %e, retry_in = ?backoff, "feed connect failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn connection(mut stream: TcpStream, intake: Intake, shutdown: CancellationToken) {
    let _ = stream.set_nodelay(true);
    intake.metrics.feed_connections.inc();
    tell(&intake, None, Input::Connected).await;
    let mut lag = LagWatch::default();
    let mut publishing = (intake.ingest.clone()).map(|i| Publishing::new(i, intake.metrics.clone(), shutdown.clone()));
    let mut framer = Framer::new(intake.max_message_bytes);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let read = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = tokio::time::timeout(intake.stall_after, stream.read(&mut buf)) => r,
        };
        let closed = match read {
            Err(_quiet) => {
                // Quiet: nothing waits, so not behind.
                behind(&intake, false);
                framer.stalled();
                false
            }
            Ok(Ok(0)) => true,
            Ok(Ok(n)) => {
                intake.metrics.feed_bytes.inc_by(n as u64);
                // A full buffer: more is waiting, the server is behind
                // its feed (workers then save no checkpoints).
                behind(&intake, n == buf.len());
                framer.push(&buf[..n]);
                false
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "feed read failed");
                true
            }
        };
        if closed {
            framer.close();
        }
        while let Some(frame) = framer.next_message() {
            match frame {
                Ok(msg) => handle_message(msg, &intake, &mut lag, publishing.as_mut()).await,
                Err(e) => {
                    let reason = e.kind();
                    count_dropped(&intake.metrics, reason, e.bytes());
                    intake.rejects.record(reason, e.bytes(), None);
                    tracing::warn!(reason, bytes = e.bytes(), error = %e, "feed bytes dropped; framing resumed");
                }
            }
        }
        if closed {
            break;
        }
    }
    intake.metrics.feed_connections.dec();
    behind(&intake, false);
    tell(&intake, publishing.as_mut(), Input::ConnectionLost).await;
    tracing::info!("feed connection closed");
}

/// Whether the server is behind its feed: the workers' flag, and the
/// gauge that shows it.
fn behind(intake: &Intake, behind: bool) {
    intake.feed_behind.set(behind);
    intake.metrics.feed_behind.set(i64::from(behind));
}

/// Tell the producers what the feed says: this node's service, or in a
/// cluster every node's ([`cluster::tell`]), after every event read before
/// it is stored (`publishing`: an `alive` says all before it was
/// processed, a `snapshot_complete` ends a recovery).
async fn tell(intake: &Intake, publishing: Option<&mut Publishing>, input: Input) {
    if let Some(p) = publishing {
        p.drain().await;
    }
    match &intake.ingest {
        Some(ingest) => {
            // This node's own service also learns it has a feed of its
            // own: it asks for recoveries at once, the others follow.
            let local = match input {
                Input::Connected => Some(true),
                Input::ConnectionLost => Some(false),
                _ => None,
            };
            if let Some(connected) = local {
                intake.producers.send(Input::LocalFeed { connected }).await;
            }
            cluster::tell(ingest, &input).await
        }
        None => intake.producers.send(input).await,
    }
}

/// One message (or run of garbage) dropped by the framer or the parser.
fn count_dropped(metrics: &Metrics, reason: &'static str, bytes: usize) {
    metrics.feed_errors.get_or_create(&Kind { kind: reason }).inc();
    metrics.feed_dropped_messages.get_or_create(&Reason { reason }).inc();
    metrics
        .feed_dropped_bytes
        .get_or_create(&Reason { reason })
        .inc_by(bytes as u64);
}

/// One framed message: counted, parsed, and its event dispatched (or, in
/// a cluster, given to `publishing`).
async fn handle_message(xml: Vec<u8>, intake: &Intake, lag: &mut LagWatch, mut publishing: Option<&mut Publishing>) {
    let mut problems = Vec::new();
    let msg = match parse::parse_reporting(&xml, &mut problems) {
        Ok(msg) => msg,
        Err(e) => {
            count_dropped(&intake.metrics, e.kind(), xml.len());
            intake.rejects.record(e.kind(), xml.len(), Some(&xml));
            tracing::warn!(reason = e.kind(), bytes = xml.len(), error = %e, "feed message rejected");
            return;
        }
    };
    intake
        .metrics
        .feed_messages
        .get_or_create(&Kind { kind: msg.kind() })
        .inc();
    for &parse::Problem { kind, field } in &problems {
        intake
            .metrics
            .feed_problems
            .get_or_create(&FeedProblem { kind, field })
            .inc();
        tracing::debug!(kind, field, "feed message applied without an unreadable field");
    }
    let (product, timestamp) = match &msg {
        FeedMessage::Match(e) => (e.header().product, e.header().timestamp),
        FeedMessage::Alive(a) => (a.product, a.timestamp),
        FeedMessage::SnapshotComplete(s) => (s.product, s.timestamp),
        FeedMessage::Unused { .. } => (None, 0),
    };
    let producers = &intake.producers;
    if let Some(p) = product {
        if !producers.is_selected(p) {
            let label = vec![("product".to_owned(), p.to_string())];
            intake.metrics.feed_ignored.get_or_create(&label).inc();
            return;
        }
        // Without a readable timestamp (0) there is no lag to tell.
        if let Some(limit) = producers.max_feed_delay()
            && timestamp > 0
            && let Some(over) = lag.observe(p, timestamp, wall_ms(), limit)
        {
            tracing::info!(
                product = p,
                over,
                lag_ms = wall_ms() - timestamp,
                "feed lag crossed the limit"
            );
            tell(intake, publishing.as_deref_mut(), Input::Lag { product: p, over }).await;
        }
    }
    match msg {
        FeedMessage::Match(mut event) => {
            if let touchline_guest::event::MatchEvent::BetStop(stop) = &mut event {
                groups::resolve(stop, &intake.descriptions.borrow());
            }
            if let Some(p) = publishing {
                p.publish(&event, xml).await;
                return;
            }
            // The message's own buffer, moved (kept only if the event is
            // dead-lettered or held: what the operator console shows).
            if let Err(e) = intake.router.dispatch(event, Some(bytes::Bytes::from(xml))).await {
                intake
                    .metrics
                    .route_errors
                    .get_or_create(&Kind { kind: e.kind() })
                    .inc();
                tracing::warn!(error = %e, "event not routed");
            }
        }
        FeedMessage::Alive(a) => {
            intake.metrics.feed_alive.inc();
            tracing::debug!(product = ?a.product, subscribed = a.subscribed, "alive");
            match a.product {
                Some(product) => {
                    let alive = Input::Alive {
                        product,
                        timestamp: a.timestamp,
                        subscribed: a.subscribed,
                    };
                    tell(intake, publishing, alive).await
                }
                None => tracing::warn!("alive without a product: ignored"),
            }
        }
        FeedMessage::SnapshotComplete(s) => {
            tracing::info!(product = ?s.product, request_id = ?s.request_id, "snapshot complete");
            match s.product {
                Some(product) => {
                    let complete = Input::SnapshotComplete {
                        product,
                        request_id: s.request_id,
                    };
                    tell(intake, publishing, complete).await
                }
                None => tracing::warn!("snapshot_complete without a product: ignored"),
            }
        }
        // Recognised, counted above, used by nothing.
        FeedMessage::Unused { .. } => {}
    }
}
