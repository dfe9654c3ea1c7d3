//! Router: match id → worker, creating the worker on first sight.
//!
//! The one registry of live matches. Feed connections dispatch events
//! through it; WebSocket sessions look matches up and listen for new ones.
//! It never calls a guest and never blocks on a worker while holding its lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use touchline_guest::event::MatchEvent;

use crate::journal::Recovered;
use crate::sandbox::GuestVersion;
use crate::worker::{self, Command, SwitchOutcome, WorkerConfig, WorkerHandle};

/// Announcements of new matches buffered for sessions subscribed to `*`. A
/// session that lags re-reads the full match list instead.
const NEW_MATCH_BUFFER: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("match capacity of {0} reached; event for a new match dropped")]
    Capacity(usize),
    #[error("router is shut down")]
    Closed,
    #[error("this node no longer holds the match's partition")]
    NotHeld,
}

impl RouteError {
    pub fn kind(&self) -> &'static str {
        match self {
            RouteError::Capacity(_) => "capacity",
            RouteError::Closed => "closed",
            RouteError::NotHeld => "not_held",
        }
    }
}

/// Handles for matches this node does not run: in a cluster, relays of
/// the matches another node owns (implemented above the router).
pub trait Remote: Send + Sync {
    /// A handle for `id`, if it is another node's to run.
    fn handle(&self, id: &str) -> Option<WorkerHandle>;
}

pub struct Router {
    /// The guest version new and restored matches start on: the active one,
    /// or the rollout's target while a rollout runs. Shared with the
    /// workers: a sleeping match a rollout passed by takes it as it wakes.
    version: worker::Current,
    worker_config: Arc<WorkerConfig>,
    /// `None` once shut down: dropping the handles closes every mailbox.
    matches: Mutex<Option<HashMap<Arc<str>, WorkerHandle>>>,
    new_matches: broadcast::Sender<Arc<str>>,
    max_matches: usize,
    tasks: tokio_util::task::TaskTracker,
    remote: std::sync::OnceLock<Arc<dyn Remote>>,
    /// In a cluster: matches other nodes run, as the cluster's directory
    /// names them (for sessions subscribed to `"*"`).
    announced: Mutex<std::collections::HashSet<Arc<str>>>,
}

impl Router {
    pub fn new(version: GuestVersion, mut worker_config: WorkerConfig, max_matches: usize) -> Router {
        let version = worker::Current::new(version);
        worker_config.current = Some(version.clone());
        Router {
            version,
            worker_config: Arc::new(worker_config),
            matches: Mutex::new(Some(HashMap::new())),
            new_matches: broadcast::channel(NEW_MATCH_BUFFER).0,
            max_matches,
            tasks: tokio_util::task::TaskTracker::new(),
            remote: std::sync::OnceLock::new(),
            announced: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Deliver `event` (and the feed message it came from) to its match's
    /// worker, waiting if the mailbox is full.
    pub async fn dispatch(&self, event: MatchEvent, raw: Option<bytes::Bytes>) -> Result<(), RouteError> {
        self.dispatch_while(event, raw, None, || true).await
    }

    /// [`Router::dispatch`], if `allowed` still says yes under the match
    /// map's lock (in a cluster: this node still holds the partition), so
    /// a [`Router::release`] racing it either removes the worker made here
    /// or runs first and this makes none.
    pub async fn dispatch_while(
        &self,
        event: MatchEvent,
        raw: Option<bytes::Bytes>,
        position: Option<u64>,
        allowed: impl Fn() -> bool,
    ) -> Result<(), RouteError> {
        let mailbox = self.mailbox_or_create(event.event_id(), allowed)?;
        mailbox
            .send(Command::Event {
                event,
                routed: std::time::Instant::now(),
                raw,
                position,
            })
            .await
            .map_err(|_| RouteError::Closed)
    }

    /// The match's mailbox (only it: the per-event path clones one sender).
    fn mailbox_or_create(&self, id: &str, allowed: impl Fn() -> bool) -> Result<worker::Mailbox, RouteError> {
        let mut guard = self.matches.lock().expect("router lock is never held across a panic");
        let map = guard.as_mut().ok_or(RouteError::Closed)?;
        if !allowed() {
            return Err(RouteError::NotHeld);
        }
        if let Some(h) = map.get(id) {
            return Ok(h.mailbox.clone());
        }
        if map.len() >= self.max_matches {
            return Err(RouteError::Capacity(self.max_matches));
        }
        let id: Arc<str> = crate::resident::scope(|| Arc::from(id));
        // Under the map lock: a rollout that lists the matches after
        // changing the version sees every match created before the change.
        let handle = self.spawn(id.clone(), None, self.version());
        let mailbox = handle.mailbox.clone();
        map.insert(id.clone(), handle);
        drop(guard);
        tracing::info!(match_id = %id, "new match");
        let _ = self.new_matches.send(id);
        Ok(mailbox)
    }

    fn spawn(&self, id: Arc<str>, recovered: Option<Recovered>, version: GuestVersion) -> WorkerHandle {
        worker::spawn(id, version, self.worker_config.clone(), recovered, &self.tasks)
    }

    /// Start a worker for every match found in the store after a restart
    /// (or, in a cluster, in a partition's snapshots as a tenure begins),
    /// on the current version unless `pinned` holds the one its record
    /// names. They restore concurrently; commands queue in their mailboxes
    /// meanwhile. Each is announced like a new match: a session that named
    /// it while no worker here had it (its subscription lagged as the
    /// partition changed hands) attaches now, where it would otherwise
    /// wait for an announcement that never comes.
    pub fn restore(&self, recovered: Vec<Recovered>, pinned: &std::collections::HashMap<String, GuestVersion>) {
        let current = self.version();
        let mut guard = self.matches.lock().expect("router lock");
        let Some(map) = guard.as_mut() else { return };
        let mut restored = Vec::with_capacity(recovered.len());
        for r in recovered {
            // The id the match keeps, made apart from the record read
            // back (see `resident`).
            let id: Arc<str> = crate::resident::scope(|| Arc::from(&*r.match_id));
            let version = r
                .meta
                .guest
                .as_deref()
                .and_then(|h| pinned.get(h))
                .cloned()
                .unwrap_or_else(|| current.clone());
            let handle = self.spawn(id.clone(), Some(r), version);
            map.insert(id.clone(), handle);
            restored.push(id);
        }
        drop(guard);
        for id in restored {
            let _ = self.new_matches.send(id);
        }
    }

    /// Ask a match's worker to heal it (lift quarantine, replay what was kept).
    pub async fn heal(&self, id: &str) -> Option<String> {
        let handle = self.get(id)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        handle.mailbox.send(Command::Heal { reply: tx }).await.ok()?;
        drop(handle);
        rx.await.ok()
    }

    /// The guest version new matches start on.
    pub fn version(&self) -> GuestVersion {
        self.version.get()
    }

    /// Start new matches on `version` from now on. Taken under the map lock,
    /// so [`Router::match_ids`] called afterwards lists every match that
    /// started on the previous one.
    pub fn set_version(&self, version: GuestVersion) {
        let _map = self.matches.lock().expect("router lock");
        self.version.set(version);
    }

    /// Ask a match's worker to switch to `version`; `None` if the match is
    /// gone.
    pub async fn switch(&self, id: &str, version: GuestVersion, probation: bool) -> Option<SwitchOutcome> {
        let handle = self.get(id)?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        handle
            .mailbox
            .send(Command::Switch {
                version,
                probation,
                reply,
            })
            .await
            .ok()?;
        drop(handle);
        rx.await.ok()
    }

    /// Let go of the matches `leaving` picks (in a cluster: those of a
    /// partition this node no longer owns). Their handles are dropped, so
    /// each worker ends once the commands already queued are answered, and
    /// their subscribers are told to catch up (from wherever the match runs
    /// now). Returns how many.
    pub fn release(&self, leaving: impl Fn(&str) -> bool) -> usize {
        let mut gone = Vec::new();
        {
            let mut guard = self.matches.lock().expect("router lock");
            let Some(map) = guard.as_mut() else { return 0 };
            map.retain(|id, h| {
                let keep = !leaving(id);
                if !keep {
                    gone.push(h.updates.clone());
                }
                keep
            });
        }
        // Their sessions are told, as after a full outbox: they subscribe
        // again and find the match where it runs now.
        for updates in &gone {
            updates.release();
        }
        gone.len()
    }

    /// The match's handle: its worker here, or (in a cluster) the relay of
    /// the node that runs it.
    pub fn get(&self, id: &str) -> Option<WorkerHandle> {
        self.local(id).or_else(|| self.remote.get()?.handle(id))
    }

    /// The match's worker on this node, if it runs here.
    pub fn local(&self, id: &str) -> Option<WorkerHandle> {
        self.matches.lock().expect("router lock").as_ref()?.get(id).cloned()
    }

    /// Where [`Router::get`] finds the matches this node does not run (set
    /// once, in a cluster).
    pub fn set_remote(&self, remote: Arc<dyn Remote>) {
        let _ = self.remote.set(remote);
    }

    /// Ask a match's worker for its card (and detail); `None` if it is
    /// gone or did not answer within `within` (a long mailbox).
    pub async fn ask_inspect(
        handle: WorkerHandle,
        detail: bool,
        within: std::time::Duration,
    ) -> Option<worker::Detail> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        tokio::time::timeout(within, async move {
            handle.mailbox.send(Command::Inspect { detail, reply }).await.ok()?;
            drop(handle);
            rx.await.ok()
        })
        .await
        .ok()
        .flatten()
    }

    /// Carry out an operator's action on a match; `None` if it is gone.
    pub async fn operate(&self, id: &str, action: worker::Action) -> Option<Result<String, worker::Refusal>> {
        let handle = self.get(id)?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        handle.mailbox.send(Command::Operate { action, reply }).await.ok()?;
        drop(handle);
        rx.await.ok()
    }

    /// Every match with its handle (for the operator console).
    pub fn handles(&self) -> Vec<(Arc<str>, WorkerHandle)> {
        self.matches
            .lock()
            .expect("router lock")
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Every live match id.
    pub fn match_ids(&self) -> Vec<Arc<str>> {
        self.matches
            .lock()
            .expect("router lock")
            .as_ref()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// In a cluster: a match the cluster's directory names. If it is not
    /// known here yet, sessions subscribed to `"*"` are told (they reach it
    /// through a relay, or its worker here once it has events).
    pub fn announce(&self, id: &str) {
        let id: Arc<str> = Arc::from(id);
        // Kept even while it runs here: its partition may move away, and
        // `"*"` must still cover it then.
        let new = self.announced.lock().expect("announced lock").insert(id.clone());
        if new && self.local(&id).is_none() {
            let _ = self.new_matches.send(id);
        }
    }

    /// Every match a `"*"` subscription covers: this node's and, in a
    /// cluster, the others' announced ones.
    pub fn known_ids(&self) -> Vec<Arc<str>> {
        let mut ids = self.match_ids();
        let local: std::collections::HashSet<Arc<str>> = ids.iter().cloned().collect();
        let announced = self.announced.lock().expect("announced lock");
        ids.extend(announced.iter().filter(|id| !local.contains(*id)).cloned());
        ids
    }

    /// Listen for matches created from now on.
    pub fn watch_new(&self) -> broadcast::Receiver<Arc<str>> {
        self.new_matches.subscribe()
    }

    /// Close every mailbox and wait for the workers to drain them.
    pub async fn shutdown(&self) {
        let handles = self.matches.lock().expect("router lock").take();
        drop(handles);
        self.tasks.close();
        self.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::feed::parse::{FeedMessage, parse};

    fn router() -> Router {
        let config = WorkerConfig {
            journal: None,
            policy: crate::supervisor::Policy {
                max_failures: 2,
                window: Duration::from_secs(60),
            },
            snapshot_every: 100,
            snapshot_interval: Duration::from_secs(3600),
            clean_after: Duration::from_secs(1),
            hibernate_after: None,
            nap_after: None,
            observer: Arc::new(worker::Nobody),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            producers: tokio::sync::watch::channel(crate::producers::Board::default()).1,
            feed_behind: Default::default(),
            names: None,
            tap: None,
            bet_log: None,
            snapshots: None,
            current: None,
        };
        Router::new(GuestVersion::native(), config, 16)
    }

    #[tokio::test]
    async fn announced_matches_stay_covered_by_star_after_their_worker_leaves() {
        let router = router();
        let mut new = router.watch_new();
        let Ok(FeedMessage::Match(event)) = parse(br#"<odds_change product="1" event_id="sr:match:1" timestamp="1"/>"#)
        else {
            panic!("an event");
        };
        router.dispatch(event, None).await.expect("dispatched");
        assert_eq!(new.recv().await.ok().as_deref(), Some("sr:match:1"));
        // Named by the directory while it runs here: no second announcement.
        router.announce("sr:match:1");
        router.announce("sr:match:2");
        assert_eq!(new.recv().await.ok().as_deref(), Some("sr:match:2"));
        assert!(new.try_recv().is_err(), "each match announced once");
        // Its partition moves away: `"*"` still covers it (through a relay).
        assert_eq!(router.release(|id| id == "sr:match:1"), 1);
        let mut known: Vec<String> = router.known_ids().iter().map(|id| id.to_string()).collect();
        known.sort();
        assert_eq!(known, ["sr:match:1", "sr:match:2"]);
        router.shutdown().await;
    }

    #[tokio::test]
    async fn a_subscriber_attached_after_its_match_was_released_is_told_to_catch_up() {
        let router = router();
        let Ok(FeedMessage::Match(event)) = parse(br#"<odds_change product="1" event_id="sr:match:1" timestamp="1"/>"#)
        else {
            panic!("an event");
        };
        router.dispatch(event, None).await.expect("dispatched");
        // A session takes the handle, the partition moves away, and only
        // then does its `Attach` reach the mailbox.
        let handle = router.get("sr:match:1").expect("runs here");
        assert_eq!(router.release(|id| id == "sr:match:1"), 1);
        let id: Arc<str> = Arc::from("sr:match:1");
        let outbox = Arc::new(worker::Outbox::new(16));
        outbox.want(&id, 1);
        handle
            .mailbox
            .send(Command::Attach {
                since: None,
                outbox: outbox.clone(),
                generation: 1,
            })
            .await
            .expect("queued before the worker ends");
        drop(handle);
        router.shutdown().await;
        let mut batch = worker::Batch::default();
        outbox.take(&mut batch);
        assert!(!batch.deliveries.is_empty(), "attached: its snapshot was queued");
        let lagged: Vec<(String, u64)> = batch
            .lagged
            .iter()
            .map(|l| (l.match_id.to_string(), l.generation))
            .collect();
        assert_eq!(
            lagged,
            [("sr:match:1".to_owned(), 1)],
            "told to catch up where the match runs now"
        );
    }

    #[tokio::test]
    async fn restored_matches_are_announced() {
        let router = router();
        let mut new = router.watch_new();
        let recovered = |id: &str| Recovered {
            match_id: Arc::from(id),
            meta: crate::journal::MatchMeta {
                epoch: 1,
                clean_seq: None,
                quarantined: None,
                guest: None,
            },
            snapshot: None,
            journal: Vec::new(),
            bets: Vec::new(),
        };
        router.restore(
            vec![recovered("sr:match:7"), recovered("sr:match:8")],
            &Default::default(),
        );
        let announced: Vec<String> = [new.try_recv(), new.try_recv()]
            .into_iter()
            .map(|a| a.expect("announced").to_string())
            .collect();
        assert_eq!(announced, ["sr:match:7", "sr:match:8"]);
        router.shutdown().await;
    }
}
