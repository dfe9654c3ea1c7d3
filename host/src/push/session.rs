//! One WebSocket session: requests in, snapshot and update frames out.
//!
//! Per subscribed match the session holds a broadcast receiver of the
//! worker's frames. Subscribing first attaches the receiver, then asks the
//! worker for a snapshot through its mailbox; updates with `seq` at or below
//! the snapshot's are dropped, so the client sees snapshot(N), N+1, N+2, ...
//! with no gap and no duplicate. A receiver that lags (the client reads too
//! slowly for the match's buffer) is replaced and the client gets a fresh
//! snapshot. A client that stops reading altogether is disconnected after
//! [`WRITE_TIMEOUT`]. Sessions never hold a worker's mailbox beyond one
//! snapshot request, so shutdown can drain workers.
//!
//! What a client may make the session hold is budgeted ([`super::budget`]):
//! control frames, named and pending subscriptions, bets in flight. The
//! outbox is drained (under [`WRITE_TIMEOUT`]) before the next event is
//! handled, and so is the pong tungstenite queues for each ping: nothing
//! queues for a client that does not read.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, oneshot};
use tokio_stream::StreamMap;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use super::budget::{Budget, ControlBudget, MAX_BETS_IN_FLIGHT, Refusal};
use super::named::Named;
use super::request::Request;
use crate::metrics::{Kind, Metrics};
use crate::router::Router;
use crate::worker::{Catchup, Command, Frame, FrameKind, Position};

/// A client that has not accepted a frame for this long is disconnected.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

type BetFuture = Pin<Box<dyn Future<Output = crate::bets::Answer> + Send>>;

type CatchupFuture = Pin<Box<dyn Future<Output = (Arc<str>, Option<(broadcast::Receiver<Frame>, Catchup)>)> + Send>>;

struct Session {
    router: Arc<Router>,
    metrics: Arc<Metrics>,
    /// Subscribed to every match, present and future.
    all: bool,
    /// Explicitly named matches, including ones not seen yet, and their
    /// resume points.
    named: Named,
    /// Live update streams, one per subscribed match that has caught up.
    streams: StreamMap<Arc<str>, BroadcastStream<Frame>>,
    /// Position of the last frame sent for each match in `streams`.
    positions: HashMap<Arc<str>, Position>,
    /// Matches whose catch-up is on its way.
    pending: HashSet<Arc<str>>,
    catchups: FuturesUnordered<CatchupFuture>,
    /// Frames to send, in order; drained before the next event.
    outbox: VecDeque<Utf8Bytes>,
    /// A ping was read: tungstenite queued its pong, to flush now.
    flush_due: bool,
    budget: Budget,
    control: ControlBudget,
    desk: Arc<crate::bets::Desk>,
    /// This session's bets waiting for their durable decision.
    bets: FuturesUnordered<BetFuture>,
    /// Settlements of this session's bets.
    bet_updates: tokio::sync::mpsc::Sender<crate::bets::Answer>,
    /// Accepted bets this session registered as owner of.
    owned: Vec<String>,
}

/// Run a session until the client leaves or `shutdown` fires.
pub async fn run<S>(
    ws: WebSocketStream<S>,
    router: Arc<Router>,
    desk: Arc<crate::bets::Desk>,
    metrics: Arc<Metrics>,
    budget: Budget,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    metrics.ws_sessions.inc();
    let (mut sink, mut incoming) = ws.split();
    let mut new_matches = router.watch_new();
    let (bet_updates, mut settled) = tokio::sync::mpsc::channel(crate::bets::OWNER_QUEUE);
    let mut s = Session {
        router,
        metrics: metrics.clone(),
        all: false,
        named: Named::default(),
        streams: StreamMap::new(),
        positions: HashMap::new(),
        pending: HashSet::new(),
        catchups: FuturesUnordered::new(),
        outbox: VecDeque::new(),
        flush_due: false,
        budget,
        control: ControlBudget::new(&budget, Instant::now()),
        desk,
        bets: FuturesUnordered::new(),
        bet_updates,
        owned: Vec::new(),
    };
    let close: Option<CloseFrame> = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Some(CloseFrame { code: CloseCode::Away, reason: "server shutting down".into() }),
            msg = incoming.next() => if let Err(close) = s.incoming(msg) {
                break close;
            },
            Some((id, item)) = s.streams.next() => s.forward(id, item),
            Some((id, ready)) = s.catchups.next() => s.attach(id, ready),
            Some(answer) = settled.recv() => s.push_answer(&answer),
            Some(answer) = s.bets.next() => s.answered(answer),
            announced = new_matches.recv(), if s.all || !s.named.is_empty() => {
                match announced {
                    Ok(id) => {
                        s.named.seen(&id);
                        if s.all || s.named.contains(&id) { s.subscribe(id) }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => s.resubscribe_known(),
                    Err(broadcast::error::RecvError::Closed) => {}
                }
            }
        }
        if s.outbox.is_empty() && !s.flush_due {
            continue;
        }
        s.flush_due = false;
        // Queue every pending frame, then flush once: one write for many
        // frames when a session is behind or subscribed to busy matches.
        let n = s.outbox.len() as u64;
        let write = async {
            for text in s.outbox.drain(..) {
                sink.feed(Message::Text(text)).await?;
            }
            sink.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => metrics.ws_frames_sent.inc_by(n),
            Ok(Err(_)) => break None,
            Err(_) => {
                metrics.ws_slow_disconnects.inc();
                break Some(CloseFrame {
                    code: CloseCode::Policy,
                    reason: "client too slow".into(),
                });
            }
        };
    };
    super::close::close(sink, incoming, close).await;
    s.desk.owners.unregister(&s.owned, &s.bet_updates);
    metrics.ws_sessions.dec();
}

impl Session {
    /// Handle one client request; a bad one gets an error frame.
    /// A message from the client; `Err` ends the session (with a close
    /// frame to send, if any).
    fn incoming(&mut self, msg: Option<Result<Message, tungstenite::Error>>) -> Result<(), Option<CloseFrame>> {
        match msg {
            Some(Ok(Message::Text(text))) => self.request(&text),
            Some(Ok(Message::Binary(_))) => self.error("binary frames are not supported; send JSON text"),
            Some(Ok(Message::Close(_))) | None => return Err(None),
            // tungstenite has queued the pong: flushed before the next
            // read, so pongs never pile up behind a client that does not
            // read (the write timeout ends it instead).
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                if !self.control.take(Instant::now()) {
                    self.count("control_budget");
                    tracing::info!(
                        per_sec = self.budget.pings_per_sec,
                        burst = self.budget.ping_burst,
                        "websocket client over its control frame budget; closing"
                    );
                    return Err(Some(CloseFrame {
                        code: CloseCode::Policy,
                        reason: "too many pings".into(),
                    }));
                }
                self.flush_due = true;
            }
            Some(Ok(Message::Frame(_))) => {} // only ever written, never read
            Some(Err(e)) => {
                // A message over the size budget: the client is told why
                // (1009), as the protocol promises.
                if let tungstenite::Error::Capacity(e) = e {
                    self.count("too_big");
                    tracing::debug!(error = %e, "websocket client message too big; closing");
                    let reason = format!("message too big: at most {} bytes", self.budget.max_message_bytes);
                    return Err(Some(CloseFrame {
                        code: CloseCode::Size,
                        reason: reason.into(),
                    }));
                }
                self.count("protocol");
                tracing::debug!(error = %e, "websocket protocol error");
                return Err(None);
            }
        }
        Ok(())
    }

    /// A bet of this session was decided. Accepted bets are settled later:
    /// this session hears about it.
    fn answered(&mut self, answer: crate::bets::Answer) {
        if answer.status == crate::bets::BetStatus::Accepted {
            self.desk.owners.register(&answer.id, self.bet_updates.clone());
            self.owned.push(answer.id.clone());
        }
        self.push_answer(&answer);
    }

    fn push_answer(&mut self, answer: &crate::bets::Answer) {
        let text = serde_json::to_string(answer).expect("bet answers are plain data");
        self.outbox.push_back(Utf8Bytes::from(text));
    }

    fn request(&mut self, text: &str) {
        let req: Request = match serde_json::from_str(text) {
            Ok(r) => r,
            Err(e) => return self.error(&format!("bad request: {e}")),
        };
        if let Request::Subscribe { matches, .. } | Request::Unsubscribe { matches } = &req
            && matches.len() > super::MAX_IDS_PER_REQUEST
        {
            return self.error(&format!("at most {} matches per request", super::MAX_IDS_PER_REQUEST));
        }
        match req {
            Request::Subscribe { matches, mut since } => {
                let router = &self.router;
                if let Err(refusal) = self.named.admit(&matches, &self.budget, |id| router.get(id).is_some()) {
                    return self.refuse(&refusal);
                }
                for id in matches {
                    if id == "*" {
                        self.all = true;
                        self.resubscribe_known();
                    } else {
                        // Resume points count only for matches named here.
                        let resume = since.remove(&id);
                        let id: Arc<str> = Arc::from(id);
                        self.named.name(id.clone(), self.router.get(&id).is_some(), resume);
                        self.subscribe(id);
                    }
                }
            }
            Request::Bet {
                id,
                match_id,
                market,
                specifiers,
                outcome,
                odds,
                stake,
            } => {
                if self.bets.len() >= MAX_BETS_IN_FLIGHT {
                    return self.refuse(&Refusal::BetsInFlight { id: id.into_string() });
                }
                let bet = crate::bets::ClientBet {
                    id: id.into_string(),
                    match_id,
                    market: market.into_string(),
                    specifiers,
                    outcome: outcome.into_string(),
                    odds,
                    stake,
                };
                let desk = self.desk.clone();
                self.bets.push(Box::pin(async move { desk.place(bet).await }));
            }
            Request::Unsubscribe { matches } => {
                for id in matches {
                    if id == "*" {
                        self.all = false;
                        self.named.clear();
                        let ids: Vec<Arc<str>> = self.streams.keys().cloned().collect();
                        ids.iter().for_each(|id| self.drop_stream(id));
                    } else {
                        self.named.forget(&id);
                        if !self.all {
                            self.drop_stream(id.as_str());
                        }
                    }
                }
            }
        }
    }

    fn error(&mut self, reason: &str) {
        self.count("bad_request");
        self.push_error(reason);
    }

    /// A request over a budget: an error frame, and the session continues.
    fn refuse(&mut self, refusal: &Refusal) {
        self.count(refusal.kind());
        self.push_error(&refusal.to_string());
    }

    fn push_error(&mut self, reason: &str) {
        let frame = serde_json::json!({"type": "error", "reason": reason});
        self.outbox.push_back(Utf8Bytes::from(frame.to_string()));
    }

    fn count(&self, kind: &'static str) {
        self.metrics.ws_client_errors.get_or_create(&Kind { kind }).inc();
    }

    fn drop_stream(&mut self, id: &str) {
        self.streams.remove(id);
        self.positions.remove(id);
    }

    /// Every known match this session wants (after `["*"]`, or after
    /// missing announcements of new matches).
    fn resubscribe_known(&mut self) {
        for id in self.router.match_ids() {
            self.named.seen(&id);
            if self.all || self.named.contains(&id) {
                self.subscribe(id);
            }
        }
    }

    /// Start a subscription: attach to updates, then ask the worker how to
    /// catch up (from the client's `since`, if it gave one).
    fn subscribe(&mut self, id: Arc<str>) {
        let since = self.named.take_since(&id);
        self.subscribe_from(id, since);
    }

    fn subscribe_from(&mut self, id: Arc<str>, since: Option<Position>) {
        if self.streams.contains_key(&id) || self.pending.contains(&id) {
            return;
        }
        // Unknown yet: `named` remembers it and the announcement of the new
        // match completes the subscription.
        let Some(handle) = self.router.get(&id) else {
            if let Some(p) = since {
                self.named.keep_since(id, p);
            }
            return;
        };
        self.pending.insert(id.clone());
        let rx = handle.updates.subscribe();
        self.catchups.push(Box::pin(async move {
            let (tx, reply) = oneshot::channel();
            if handle
                .mailbox
                .send(Command::Subscribe { since, reply: tx })
                .await
                .is_err()
            {
                return (id, None);
            }
            drop(handle);
            match reply.await {
                Ok(catchup) => (id, Some((rx, catchup))),
                Err(_) => (id, None),
            }
        }));
    }

    /// The worker answered: send the snapshot or the missed updates, then
    /// forward live updates after them.
    fn attach(&mut self, id: Arc<str>, ready: Option<(broadcast::Receiver<Frame>, Catchup)>) {
        self.pending.remove(&id);
        let Some((rx, catchup)) = ready else { return };
        if !(self.all || self.named.contains(&id)) {
            return; // unsubscribed meanwhile
        }
        let frames = match catchup {
            Catchup::Snapshot(frame) => vec![frame],
            Catchup::Missed(frames) => frames,
        };
        for f in frames {
            self.send(&id, f);
        }
        self.streams.insert(id, BroadcastStream::new(rx));
    }

    /// Queue `frame` and remember it as the client's position in the match.
    fn send(&mut self, id: &Arc<str>, frame: Frame) {
        let positional = !matches!(frame.kind, FrameKind::Status | FrameKind::Names);
        if positional || !self.positions.contains_key(id) {
            self.positions.insert(
                id.clone(),
                Position {
                    epoch: frame.epoch,
                    seq: frame.seq,
                },
            );
        }
        self.outbox.push_back(frame.bytes);
    }

    fn forward(&mut self, id: Arc<str>, item: Result<Frame, BroadcastStreamRecvError>) {
        match item {
            Ok(frame) => {
                let already_sent = self
                    .positions
                    .get(&id)
                    .is_some_and(|p| frame.kind == FrameKind::Update && p.epoch == frame.epoch && frame.seq <= p.seq);
                // Updates already in the snapshot or the catch-up are skipped.
                if !already_sent {
                    self.send(&id, frame);
                }
            }
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                tracing::debug!(match_id = %id, missed, "subscriber lagged; catching up");
                self.metrics.ws_resyncs.inc();
                let from = self.positions.get(&id).copied();
                self.drop_stream(&id);
                self.subscribe_from(id, from);
            }
        }
    }
}
