//! One WebSocket session: requests in, snapshot and update frames out.
//!
//! The session has one bounded queue, its [`Outbox`], that every match it
//! subscribes to pushes its shared frames into ([`crate::worker::Fanout`]);
//! one wake-up drains everything queued and writes it with one flush.
//! While the session holds nothing to write, the matches write their
//! frames to its socket directly instead ([`super::wire`]) and the session
//! is not woken at all; it opens the socket to them again each time it has
//! written everything.
//! Subscribing picks a new generation for the match and asks the worker
//! (through its mailbox) to attach the outbox: the worker queues the
//! snapshot, or the updates missed since the client's `since`, and then
//! every later frame, so the client sees snapshot(N), N+1, N+2, ... with no
//! gap and no duplicate. A subscription whose frames did not fit in the
//! outbox (the client reads too slowly) lags: it is detached and caught up
//! again from the last frame sent (missed updates or a fresh snapshot). A
//! client that stops reading altogether is disconnected after
//! [`WRITE_TIMEOUT`]. Sessions never hold a worker's mailbox beyond one
//! attach request, so shutdown can drain workers.
//!
//! What a client may make the session hold is budgeted ([`super::budget`]):
//! control frames, named and pending subscriptions, bets in flight. The
//! outbox is drained (under [`WRITE_TIMEOUT`]) before the next event is
//! handled, and so is the pong tungstenite queues for each ping: nothing
//! queues for a client that does not read.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use super::budget::{Budget, ControlBudget, MAX_BETS_IN_FLIGHT, Refusal};
use super::named::Named;
use super::request::Request;
use super::wire::{Socket, Wire};
use super::writer::Writer;
use crate::bets::Answer;
use crate::deflate::Text;
use crate::metrics::{Kind, Metrics};
use crate::router::Router;
use crate::worker::{Batch, Command, Lagged, Outbox, Position, Resumed};

/// A client that has not accepted a frame for this long is disconnected.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Frames a session's outbox holds (from all its matches) while its socket
/// is busy. A frame that does not fit lags its match's subscription, which
/// then catches up from the resume ring or a snapshot. The frames are
/// shared, so a full outbox costs ~80 bytes per entry, not the frames.
pub const OUTBOX_CAPACITY: usize = 256;

type BetFuture = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// An attach request on its way into a worker's mailbox: `false` if the
/// worker is gone.
type AttachFuture = Pin<Box<dyn Future<Output = (Arc<str>, u64, bool)> + Send>>;

struct Session {
    router: Arc<Router>,
    metrics: Arc<Metrics>,
    /// Subscribed to every match, present and future.
    all: bool,
    /// Explicitly named matches, including ones not seen yet, and their
    /// resume points.
    named: Named,
    /// Where every match's frames for this session are queued.
    inbox: Arc<Outbox>,
    /// What was taken out of it last (kept for its buffers).
    batch: Batch,
    /// The subscribed matches (attached, or with the attach on its way),
    /// with the generation of each.
    subs: HashMap<Arc<str>, u64>,
    generations: u64,
    attaching: FuturesUnordered<AttachFuture>,
    /// Frames to send, in order; written out before the next event.
    out: Writer,
    /// A ping was read: tungstenite queued its pong, to flush now.
    flush_due: bool,
    budget: Budget,
    control: ControlBudget,
    desk: Arc<crate::bets::Desk>,
    /// This session's bets waiting for their durable decision.
    bets: FuturesUnordered<BetFuture>,
    /// Settlements of this session's bets.
    /// Made at the session's first accepted bet: a channel costs a block
    /// of 32 answers (~8 KB) from the start, most sessions never bet.
    bet_updates: Option<(tokio::sync::mpsc::Sender<Answer>, tokio::sync::mpsc::Receiver<Answer>)>,
    /// Accepted bets this session registered as owner of.
    owned: Vec<String>,
}

/// Run a session until the client leaves or `shutdown` fires. `wire`: the
/// socket under `ws`, for the matches to write to directly.
pub async fn run<S>(
    ws: WebSocketStream<S>,
    wire: Arc<Wire>,
    router: Arc<Router>,
    desk: Arc<crate::bets::Desk>,
    metrics: Arc<Metrics>,
    budget: Budget,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    metrics.ws_sessions.inc();
    let mut ws = ws;
    let mut new_matches = router.watch_new();
    let deflate = wire.deflate();
    let mut s = Session {
        router,
        metrics: metrics.clone(),
        all: false,
        named: Named::default(),
        inbox: Arc::new(Outbox::direct(
            OUTBOX_CAPACITY,
            Arc::new(Socket::new(
                wire,
                metrics.ws_frames_sent.clone(),
                metrics.ws_frames_direct.clone(),
            )),
        )),
        batch: Batch::default(),
        subs: HashMap::new(),
        generations: 0,
        attaching: FuturesUnordered::new(),
        out: Writer::new(deflate),
        flush_due: false,
        budget,
        control: ControlBudget::new(&budget, Instant::now()),
        desk,
        bets: FuturesUnordered::new(),
        bet_updates: None,
        owned: Vec::new(),
    };
    let close: Option<CloseFrame> = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Some(CloseFrame { code: CloseCode::Away, reason: "server shutting down".into() }),
            msg = ws.next() => if let Err(close) = s.incoming(msg) {
                break close;
            },
            _ = s.inbox.ready() => s.forward(),
            Some((id, generation, sent)) = s.attaching.next() => if !sent { s.worker_gone(&id, generation) },
            Some(answer) = settled(&mut s.bet_updates) => s.push_answer(&answer),
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
        if let Err(close) = s.write_out(&mut ws).await {
            break close;
        }
    };
    s.inbox.close();
    // A write cut off by the timeout may have left a frame half sent: its
    // rest goes first, or the client would read the close frame inside it.
    // If even that does not go out, the connection is dropped.
    s.out.keep_partial();
    let whole = s.out.is_empty()
        || matches!(
            tokio::time::timeout(WRITE_TIMEOUT, s.out.write_all(ws.get_mut())).await,
            Ok(Ok(_))
        );
    if whole {
        super::close::close(ws, close).await;
    }
    if let Some((tx, _)) = &s.bet_updates {
        s.desk.owners.unregister(&s.owned, tx);
    }
    metrics.ws_sessions.dec();
}

impl Session {
    /// Write everything the session holds, until it holds nothing and the
    /// socket is open to the matches' direct writes again (or frames
    /// queued meanwhile wake the session). `Err`: the session ends.
    async fn write_out<S>(&mut self, ws: &mut WebSocketStream<S>) -> Result<(), Option<CloseFrame>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            // A frame a direct write began is finished by the flush below.
            if self.out.is_empty() && !self.flush_due && self.inbox.resume_direct() != Resumed::Unfinished {
                return Ok(());
            }
            // tungstenite's own queued bytes (a pong) go first, whole; then
            // every queued frame, gathered into few vectored writes.
            let flush_pong = std::mem::take(&mut self.flush_due);
            let out = &mut self.out;
            let write = async {
                if flush_pong {
                    ws.flush().await.map_err(|_| ())?;
                }
                out.write_all(ws.get_mut()).await.map_err(|_| ())
            };
            match tokio::time::timeout(WRITE_TIMEOUT, write).await {
                Ok(Ok(n)) => {
                    self.metrics.ws_frames_sent.inc_by(n);
                }
                Ok(Err(())) => return Err(None),
                Err(_) => {
                    self.metrics.ws_slow_disconnects.inc();
                    return Err(Some(CloseFrame {
                        code: CloseCode::Policy,
                        reason: "client too slow".into(),
                    }));
                }
            }
        }
    }

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
    fn answered(&mut self, answer: Answer) {
        if answer.status == crate::bets::BetStatus::Accepted {
            let (tx, _) = self
                .bet_updates
                .get_or_insert_with(|| tokio::sync::mpsc::channel(crate::bets::OWNER_QUEUE));
            self.desk.owners.register(&answer.id, tx.clone());
            self.owned.push(answer.id.clone());
        }
        self.push_answer(&answer);
    }

    fn push_answer(&mut self, answer: &Answer) {
        let text = serde_json::to_string(answer).expect("bet answers are plain data");
        self.out.push(Text::from(text));
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
                        // Every match: resume points count for any of them
                        // (a page reconnecting to another node), at most
                        // as many as a session may name.
                        let max = self.budget.max_subscriptions;
                        for (sid, p) in since.drain().take(max) {
                            self.named.resume(Arc::from(sid), p, max);
                        }
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
                        let ids: Vec<Arc<str>> = self.subs.keys().cloned().collect();
                        ids.iter().for_each(|id| self.drop_sub(id));
                    } else {
                        self.named.forget(&id);
                        if !self.all {
                            self.drop_sub(id.as_str());
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
        self.out.push(Text::from(frame.to_string()));
    }

    fn count(&self, kind: &'static str) {
        self.metrics.ws_client_errors.get_or_create(&Kind { kind }).inc();
    }

    fn drop_sub(&mut self, id: &str) {
        self.subs.remove(id);
        self.inbox.unwant(id);
    }

    /// Every known match this session wants (after `["*"]`, or after
    /// missing announcements of new matches).
    fn resubscribe_known(&mut self) {
        for id in self.router.known_ids() {
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
        if self.subs.contains_key(&id) {
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
        self.generations += 1;
        let generation = self.generations;
        self.subs.insert(id.clone(), generation);
        self.inbox.want(&id, generation);
        let outbox = self.inbox.clone();
        self.attaching.push(Box::pin(async move {
            let attach = Command::Attach {
                since,
                outbox,
                generation,
            };
            let sent = handle.mailbox.send(attach).await.is_ok();
            (id, generation, sent)
        }));
    }

    /// The match's worker is gone: the subscription is forgotten, so a
    /// later request (or announcement) can make it again.
    fn worker_gone(&mut self, id: &Arc<str>, generation: u64) {
        if self.subs.get(id) == Some(&generation) {
            self.drop_sub(id);
        }
    }

    /// Frames queued by the matches: keep those of the current
    /// subscriptions, in order, and catch up the ones that lagged.
    fn forward(&mut self) {
        let mut batch = std::mem::take(&mut self.batch);
        self.inbox.take(&mut batch);
        for d in batch.deliveries.drain(..) {
            if self.subs.get(&d.match_id) == Some(&d.generation) {
                self.out.push(d.frame.bytes);
            }
        }
        for Lagged {
            match_id,
            generation,
            position,
        } in batch.lagged.drain(..)
        {
            if self.subs.get(&match_id) != Some(&generation) {
                continue;
            }
            tracing::debug!(match_id = %match_id, "subscriber lagged; catching up");
            self.metrics.ws_resyncs.inc();
            self.subs.remove(&match_id);
            self.subscribe_from(match_id, position);
        }
        self.batch = batch;
    }
}

/// The next settlement of this session's bets (never, before its first
/// accepted bet).
async fn settled(
    updates: &mut Option<(tokio::sync::mpsc::Sender<Answer>, tokio::sync::mpsc::Receiver<Answer>)>,
) -> Option<Answer> {
    match updates {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}
