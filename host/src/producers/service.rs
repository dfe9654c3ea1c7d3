//! The task that owns the producer machine: feeds it what the feed reader
//! saw and the clock, carries out its effects (publish the [`Board`], log
//! and count transitions, keep what a restart needs, ask the provider for
//! recoveries) and hands out [`Producers`], the handle the feed reader and
//! the HTTP API hold.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::machine::{Effect, Machine, Status, Timing};
use super::{Board, Producer, bit, wall_ms};
use crate::journal::{Journal, Op, ProducerRecord};
use crate::metrics::Metrics;
use crate::provider_api::Endpoint;

/// Inputs queued for the owner. When full, the feed reader waits (they
/// are few: alives, snapshot completions, lag crossings, connections).
const INPUT_QUEUE: usize = 1024;
/// How often timers are checked: a missed alive is noticed within this
/// much of its deadline.
const TICK: Duration = Duration::from_millis(250);

/// What the producer service needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The selected producers.
    pub producers: Vec<Producer>,
    pub timing: Timing,
    /// The provider's recovery API; `None`: recoveries cannot be asked for
    /// (producers stay down; a warning says so).
    pub recovery: Option<Endpoint>,
    /// Longest wait for the provider to accept a request.
    pub request_timeout: Duration,
    /// In a cluster: while this node has no feed connection of its own,
    /// wait this long after a producer goes down for another node's request
    /// before asking ([`super::machine::Machine::deferring`]).
    pub defer: Option<Duration>,
    /// In a cluster: each request as it is sent, as [`Input::Requested`],
    /// for every node to follow (full: not told, the others ask themselves
    /// after their grace).
    pub announce: Option<mpsc::Sender<Input>>,
}

/// What the feed reader tells the owner. In a cluster the feed's inputs
/// travel to every node as JSON (`feed::cluster`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Input {
    Alive {
        product: u32,
        timestamp: i64,
        subscribed: bool,
    },
    Lag {
        product: u32,
        over: bool,
    },
    SnapshotComplete {
        product: u32,
        request_id: Option<u64>,
    },
    Connected,
    ConnectionLost,
    RequestFailed {
        product: u32,
        request_id: u64,
    },
    /// In a cluster: this node's own feed connection opened or closed
    /// (beside [`Input::Connected`] / [`Input::ConnectionLost`], which
    /// every node hears): a node with one asks for recoveries at once.
    LocalFeed {
        connected: bool,
    },
    /// In a cluster: a node asks the provider for this recovery; every node
    /// follows it ([`super::machine::Machine::adopt`]).
    Requested {
        product: u32,
        request_id: u64,
        after: Option<i64>,
    },
}

/// The handle: send inputs, watch the board.
#[derive(Debug, Clone)]
pub struct Producers {
    tx: mpsc::Sender<Input>,
    board: watch::Receiver<Board>,
    /// The latest views, refreshed after every input (the board changes
    /// only with a producer's state, so workers wake only then).
    views: watch::Receiver<Arc<[super::View]>>,
    selected: u64,
    max_feed_delay: Option<Duration>,
}

impl Producers {
    pub async fn send(&self, input: Input) {
        // Only fails once the owner has stopped (shutdown).
        let _ = self.tx.send(input).await;
    }

    pub fn is_selected(&self, product: u32) -> bool {
        self.selected & bit(product) != 0
    }

    pub fn max_feed_delay(&self) -> Option<Duration> {
        self.max_feed_delay
    }

    /// The board, to watch (workers).
    pub fn board(&self) -> watch::Receiver<Board> {
        self.board.clone()
    }

    /// Every producer as it stands now, last alive included (the API).
    pub fn views(&self) -> Arc<[super::View]> {
        self.views.borrow().clone()
    }
}

/// Start the owner task: every producer down (`startup`), `saved` what an
/// earlier run kept.
pub fn start(
    cfg: Config,
    saved: &[ProducerRecord],
    journal: Option<Arc<dyn Journal>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) -> Producers {
    let now = tokio::time::Instant::now().into_std();
    let mut machine = Machine::new(cfg.producers.clone(), saved, cfg.timing, now, wall_ms());
    if let Some(grace) = cfg.defer {
        machine = machine.deferring(grace);
    }
    let board = Board::from_machine(&machine);
    for v in board.views.iter() {
        metrics.producer_up.get_or_create(&product_label(v.id)).set(0);
    }
    if cfg.recovery.is_none() {
        tracing::warn!("no --recovery-url: producers cannot recover and no bet will be accepted");
    }
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    let (board_tx, board_rx) = watch::channel(board.clone());
    let (views_tx, views_rx) = watch::channel(board.views.clone());
    let handle = Producers {
        tx: tx.clone(),
        board: board_rx,
        views: views_rx,
        selected: board.selected,
        max_feed_delay: cfg.timing.max_feed_delay,
    };
    let owner = Owner {
        machine,
        cfg,
        board: board_tx,
        views: views_tx,
        journal,
        metrics,
        tx,
    };
    tasks.spawn(owner.run(rx, shutdown));
    handle
}

struct Owner {
    machine: Machine,
    cfg: Config,
    board: watch::Sender<Board>,
    views: watch::Sender<Arc<[super::View]>>,
    journal: Option<Arc<dyn Journal>>,
    metrics: Arc<Metrics>,
    /// For request tasks to report failures.
    tx: mpsc::Sender<Input>,
}

impl Owner {
    async fn run(mut self, mut rx: mpsc::Receiver<Input>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let effects = tokio::select! {
                _ = shutdown.cancelled() => break,
                input = rx.recv() => match input {
                    Some(input) => self.input(input),
                    None => break,
                },
                _ = tick.tick() => {
                    let effects = self.machine.tick(now(), wall_ms());
                    // A quiet tick changes nothing shown: no views to rebuild.
                    if effects.is_empty() {
                        continue;
                    }
                    effects
                }
            };
            self.carry_out(effects);
        }
    }

    fn input(&mut self, input: Input) -> Vec<Effect> {
        let (now, wall) = (now(), wall_ms());
        let m = &mut self.machine;
        match input {
            Input::Alive {
                product,
                timestamp,
                subscribed,
            } => m.alive(product, timestamp, subscribed, now, wall),
            Input::Lag { product, over } => m.lag(product, over, now, wall),
            Input::SnapshotComplete { product, request_id } => m.snapshot_complete(product, request_id, now, wall),
            Input::Connected => m.connected(now, wall),
            Input::ConnectionLost => m.connection_lost(now, wall),
            Input::RequestFailed { product, request_id } => m.request_failed(product, request_id, now, wall),
            Input::Requested {
                product,
                request_id,
                after,
            } => m.adopt(product, request_id, after, now, wall),
            Input::LocalFeed { connected } => m.local_feed(connected, now, wall),
        }
    }

    fn carry_out(&mut self, effects: Vec<Effect>) {
        let mut changed = false;
        for effect in effects {
            match effect {
                Effect::Changed { product, from, to } => {
                    changed = true;
                    self.changed(product, from, to);
                }
                Effect::Request {
                    product,
                    name,
                    request_id,
                    after,
                } => self.request(product, name, request_id, after),
                Effect::Recovered {
                    product,
                    request_id,
                    took,
                } => {
                    self.metrics.producer_recovery_seconds.observe(took.as_secs_f64());
                    tracing::info!(
                        product,
                        request_id,
                        seconds = took.as_secs_f64(),
                        "producer recovery complete"
                    );
                }
                Effect::Persist(record) => {
                    if let Some(j) = &self.journal
                        && let Err(e) = j.try_write(Op::Producer(record))
                    {
                        // The next alive or request writes it again.
                        tracing::debug!(product = record.product, error = %e, "producer record not queued");
                    }
                }
                Effect::Ignored {
                    product,
                    request_id,
                    why,
                } => {
                    self.metrics
                        .snapshot_complete_ignored
                        .get_or_create(&product_label(product))
                        .inc();
                    tracing::info!(product, request_id, why, "snapshot_complete ignored");
                }
            }
        }
        let now = Board::from_machine(&self.machine);
        if *self.views.borrow() != now.views {
            self.views.send_replace(now.views.clone());
        }
        if changed {
            self.board.send_replace(now);
        }
    }

    fn changed(&self, product: u32, from: Status, to: Status) {
        let label = product_label(product);
        self.metrics
            .producer_up
            .get_or_create(&label)
            .set(i64::from(to.is_up()));
        let reason = match to {
            Status::Down { reason, .. } => Some(reason.code()),
            Status::Up => None,
        };
        if from.is_up()
            && let Some(reason) = reason
        {
            let mut labels = label.clone();
            labels.push(("reason".into(), reason.into()));
            self.metrics.producer_down.get_or_create(&labels).inc();
        }
        tracing::info!(product, from = from.name(), to = to.name(), reason, "producer state");
    }

    fn request(&self, product: u32, name: String, request_id: u64, after: Option<i64>) {
        self.metrics
            .recovery_requests
            .get_or_create(&product_label(product))
            .inc();
        let Some(endpoint) = self.cfg.recovery.clone() else {
            tracing::warn!(product, request_id, "recovery needed but no --recovery-url is set");
            return;
        };
        tracing::info!(product, producer = %name, request_id, after, full = after.is_none(), "requesting recovery");
        // Announced before it is sent: the recovery's `snapshot_complete`
        // travels after it on this node's NATS connection, so every node
        // follows the request before its completion can arrive. A request
        // that fails is this node's to ask again; the others drop theirs at
        // the recovery timeout and ask themselves.
        if let Some(announce) = &self.cfg.announce {
            let requested = Input::Requested {
                product,
                request_id,
                after,
            };
            if announce.try_send(requested).is_err() {
                tracing::warn!(
                    product,
                    request_id,
                    "recovery request not announced: the other nodes ask after their grace"
                );
            }
        }
        let (tx, timeout) = (self.tx.clone(), self.cfg.request_timeout);
        tokio::spawn(async move {
            if let Err(e) = endpoint.initiate(&name, after, request_id, timeout).await {
                tracing::warn!(product, request_id, error = %e, "recovery request failed; will ask again");
                let _ = tx.send(Input::RequestFailed { product, request_id }).await;
            }
        });
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

fn product_label(product: u32) -> crate::metrics::Labels {
    vec![("product".into(), product.to_string())]
}
