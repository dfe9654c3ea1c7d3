//! Fixtures, one per match: competitors, tournament, sport and scheduled
//! start from the provider's `GET /v1/sports/en/sport_events/{id}/fixture.xml`,
//! fetched by one task off the hot path.
//!
//! A match's worker asks once, on its first event ([`Fixtures::want`]):
//! the call never waits (a full queue says no, and the worker asks again
//! on a later event), and the answer comes on a oneshot whenever it is
//! had. The task looks in the store first (key `fixture/{id}` of the
//! `reference` tree, kept from an earlier fetch), then fetches, at most
//! [`FETCHES_IN_FLIGHT`] at a time, each bounded by the request timeout.
//! A failed fetch (API down, slow, 5xx, unparsable answer) is retried
//! with backoff from 1 s doubling to 5 min, for as long as the match's
//! worker still waits; a match never waits for its fixture. A failure also
//! pauses every fetch (1 s doubling to 60 s, reset by a success), so an
//! API that is down is probed by a few requests per pause, not hammered
//! by one per match. Bounds: the
//! request queue holds [`WANT_QUEUE`] asks, and at most [`MAX_WAITING`]
//! matches wait (fetching or backing off) at once; asks beyond either are
//! refused and counted (`fixtures_total{outcome="refused"}`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::journal::{FIXTURE_PREFIX, Journal, Op};
use crate::metrics::Metrics;
use crate::names::Fixture;
use crate::provider_api::Endpoint;

/// Asks queued for the task.
pub const WANT_QUEUE: usize = 1024;
/// Matches waiting for their fixture at once.
pub const MAX_WAITING: usize = 100_000;
/// Fetches in flight at once.
pub const FETCHES_IN_FLIGHT: usize = 16;
const PAUSE_MIN: Duration = Duration::from_secs(1);
const PAUSE_MAX: Duration = Duration::from_secs(60);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The store key a match's fixture is kept under.
pub fn store_key(event_id: &str) -> String {
    format!("{FIXTURE_PREFIX}{event_id}")
}

struct Want {
    event_id: Arc<str>,
    reply: oneshot::Sender<Arc<Fixture>>,
}

/// The handle workers hold.
#[derive(Debug, Clone)]
pub struct Fixtures {
    asks: Option<mpsc::Sender<Want>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Want {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Want").field("event_id", &self.event_id).finish()
    }
}

impl Fixtures {
    /// No source of fixtures: every ask is answered never.
    pub fn none(metrics: Arc<Metrics>) -> Fixtures {
        Fixtures { asks: None, metrics }
    }

    /// Ask for a match's fixture without waiting. `None`: not now (no
    /// source, or the queue is full: ask again later).
    pub fn want(&self, event_id: &Arc<str>) -> Option<oneshot::Receiver<Arc<Fixture>>> {
        let asks = self.asks.as_ref()?;
        let (reply, rx) = oneshot::channel();
        match asks.try_send(Want {
            event_id: event_id.clone(),
            reply,
        }) {
            Ok(()) => Some(rx),
            Err(_) => {
                self.count("refused");
                None
            }
        }
    }

    fn count(&self, outcome: &'static str) {
        count(&self.metrics, outcome);
    }
}

fn count(metrics: &Metrics, outcome: &'static str) {
    metrics
        .fixtures
        .get_or_create(&crate::metrics::Outcome { outcome })
        .inc();
}

/// Start the task fetching from `endpoint`.
pub fn start(
    endpoint: Endpoint,
    timeout: Duration,
    journal: Option<Arc<dyn Journal>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) -> Fixtures {
    let (asks, rx) = mpsc::channel(WANT_QUEUE);
    let task = Task {
        endpoint,
        timeout,
        journal,
        metrics: metrics.clone(),
        waiting: HashMap::new(),
        retries: Vec::new(),
        fetching: JoinSet::new(),
        paused_until: None,
        pause: PAUSE_MIN,
    };
    tasks.spawn(task.run(rx, shutdown));
    Fixtures {
        asks: Some(asks),
        metrics,
    }
}

/// A match waiting: who to tell, and how often it failed.
struct Waiting {
    replies: Vec<oneshot::Sender<Arc<Fixture>>>,
    failures: u32,
}

/// What one fetch comes back with: the fixture and the text it was read
/// from (to keep), or why not.
type Fetched = (Arc<str>, Result<(Fixture, String), String>);

struct Task {
    endpoint: Endpoint,
    timeout: Duration,
    journal: Option<Arc<dyn Journal>>,
    metrics: Arc<Metrics>,
    waiting: HashMap<Arc<str>, Waiting>,
    /// Matches backing off, with when to try again.
    retries: Vec<(Instant, Arc<str>)>,
    fetching: JoinSet<Fetched>,
    /// No fetch starts before this (the last one failed)...
    paused_until: Option<Instant>,
    /// ...and the next failure pauses this long.
    pause: Duration,
}

impl Task {
    async fn run(mut self, mut asks: mpsc::Receiver<Want>, shutdown: CancellationToken) {
        // Matches due for a fetch, waiting for a slot.
        let mut due: std::collections::VecDeque<Arc<str>> = Default::default();
        loop {
            if self.paused_until.is_some_and(|t| t <= Instant::now()) {
                self.paused_until = None;
            }
            while self.paused_until.is_none()
                && self.fetching.len() < FETCHES_IN_FLIGHT
                && let Some(id) = due.pop_front()
            {
                self.fetch(id);
            }
            let next_retry = self.retries.iter().map(|(t, _)| *t).min();
            let resume = self.paused_until.filter(|_| !due.is_empty());
            tokio::select! {
                _ = shutdown.cancelled() => return,
                want = asks.recv() => match want {
                    Some(w) => {
                        if let Some(id) = self.ask(w) {
                            due.push_back(id);
                        }
                    }
                    None => return,
                },
                Some(done) = self.fetching.join_next(), if !self.fetching.is_empty() => {
                    if let Ok((id, outcome)) = done {
                        self.fetched(id, outcome);
                    }
                }
                _ = sleep_until(resume) => {}
                _ = sleep_until(next_retry) => {
                    let now = Instant::now();
                    let (ready, later): (Vec<_>, Vec<_>) = self.retries.drain(..).partition(|(t, _)| *t <= now);
                    self.retries = later;
                    for (_, id) in ready {
                        // Retried only while a worker still waits for it.
                        let wanted = self.waiting.get_mut(&id).is_some_and(|w| {
                            w.replies.retain(|r| !r.is_closed());
                            !w.replies.is_empty()
                        });
                        if wanted {
                            due.push_back(id);
                        } else {
                            self.waiting.remove(&id);
                        }
                    }
                }
            }
        }
    }

    /// A new ask: answered from the store, joined to a wait in progress,
    /// or due for a fetch (`Some`).
    fn ask(&mut self, w: Want) -> Option<Arc<str>> {
        if let Some(waiting) = self.waiting.get_mut(&w.event_id) {
            waiting.replies.push(w.reply);
            return None;
        }
        if let Some(f) = self.stored(&w.event_id) {
            count(&self.metrics, "stored");
            let _ = w.reply.send(Arc::new(f));
            return None;
        }
        if self.waiting.len() >= MAX_WAITING {
            count(&self.metrics, "refused");
            return None;
        }
        self.waiting.insert(
            w.event_id.clone(),
            Waiting {
                replies: vec![w.reply],
                failures: 0,
            },
        );
        Some(w.event_id)
    }

    fn stored(&self, event_id: &str) -> Option<Fixture> {
        let text = self.journal.as_ref()?.reference(&store_key(event_id)).ok()??;
        Fixture::parse(&text).ok()
    }

    fn fetch(&mut self, id: Arc<str>) {
        let (endpoint, timeout) = (self.endpoint.clone(), self.timeout);
        self.fetching.spawn(async move {
            let path = format!("/v1/sports/en/sport_events/{id}/fixture.xml");
            let outcome = match endpoint.get(&path, timeout).await {
                Ok(text) => Fixture::parse(&text)
                    .map(|f| (f, text))
                    .map_err(|e| format!("unreadable fixture: {e}")),
                Err(e) => Err(e.to_string()),
            };
            (id, outcome)
        });
    }

    fn fetched(&mut self, id: Arc<str>, outcome: Result<(Fixture, String), String>) {
        match outcome {
            Ok((fixture, text)) => {
                count(&self.metrics, "fetched");
                self.pause = PAUSE_MIN;
                if let Some(j) = &self.journal
                    && let Err(e) = j.try_write(Op::Reference {
                        key: store_key(&id),
                        text,
                    })
                {
                    tracing::debug!(match_id = %id, error = %e, "fixture not kept this time");
                }
                let fixture = Arc::new(fixture);
                for reply in self.waiting.remove(&id).map(|w| w.replies).unwrap_or_default() {
                    let _ = reply.send(fixture.clone());
                }
            }
            Err(e) => {
                count(&self.metrics, "failed");
                if self.paused_until.is_none() {
                    self.paused_until = Some(Instant::now() + self.pause);
                    self.pause = (self.pause * 2).min(PAUSE_MAX);
                }
                let Some(w) = self.waiting.get_mut(&id) else { return };
                w.failures += 1;
                let backoff = BACKOFF_MIN
                    .saturating_mul(1 << w.failures.min(16).saturating_sub(1))
                    .min(BACKOFF_MAX);
                tracing::debug!(match_id = %id, error = %e, retry_in = ?backoff, failures = w.failures, "fixture not had");
                self.retries.push((Instant::now() + backoff, id));
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
