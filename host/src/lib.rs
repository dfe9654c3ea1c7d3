//! Touchline host: live odds from an XML feed to browsers, one WebAssembly
//! instance per match.
//!
//! Data flows feed → router → worker → push:
//! - [`feed`]: TCP intake; [`feed::frame`] and [`feed::parse`] are the
//!   sans-IO framer and parser.
//! - [`router`]: match id → worker, created on first sight.
//! - [`worker`]: one guest instance per match, its lifecycle and
//!   supervision; it reports upwards through [`worker::Observer`].
//! - [`sandbox`]: the Wasm engine, guest versions, limits and traps.
//! - [`journal`]: the seam for everything a worker makes durable.
//! - [`guests`]: installed guest versions, canary, hot-swap rollouts and
//!   rollbacks.
//! - [`push`]: WebSocket sessions, subscriptions, snapshots and updates.
//! - [`bets`]: bet intake, idempotency, durable confirmation.
//! - [`http`]: page, health, metrics, bets API, WebSocket upgrade.
//! - [`store`]: the only owner of sled (the production journal); its
//!   writer makes group commits.
//! - [`supervisor`]: restart policy and intensity.
//! - [`sim`]: the built-in feed simulator.
//! - [`metrics`], [`config`].
//!
//! [`Server::start`] binds everything and returns the bound addresses, so
//! tests can use port 0; [`Server::shutdown`] stops in order: feed, workers,
//! WebSockets, store.

pub mod bets;
pub mod config;
pub mod feed;
pub mod guests;
pub mod http;
pub mod journal;
pub mod layers;
pub mod metrics;
pub mod push;
pub mod router;
pub mod sandbox;
pub mod sim;
pub mod store;
pub mod supervisor;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::ServeConfig;
use sandbox::{Limits, Platform};

/// The default guest, built by `make guest` and wrapped by `build.rs`.
pub const DEFAULT_GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/touchline_guest.component.wasm"));

/// What `touchline serve` prints on stdout once it listens, so a parent
/// process (the tests, the bench) learns its ephemeral ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub http: SocketAddr,
    pub feed: Option<SocketAddr>,
}

impl Ready {
    pub fn line(&self, guest_version: &str) -> String {
        let feed = self.feed.map_or_else(|| "-".to_owned(), |a| a.to_string());
        format!("READY http={} feed={feed} guest_version={guest_version}", self.http)
    }

    pub fn parse(line: &str) -> Option<Ready> {
        let field = |k: &str| {
            line.strip_prefix("READY ")?
                .split(' ')
                .find_map(|kv| kv.strip_prefix(k))
        };
        Some(Ready {
            http: field("http=")?.parse().ok()?,
            feed: field("feed=")?.parse().ok(),
        })
    }

    /// Read a child's stdout up to its READY line (`None` if it exits
    /// first), then keep draining it so the child never blocks on the pipe.
    pub fn wait(stdout: std::process::ChildStdout) -> Option<Ready> {
        use std::io::BufRead as _;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let ready = lines.by_ref().map_while(Result::ok).find_map(|l| Ready::parse(&l));
        std::thread::spawn(move || for _ in lines {});
        ready
    }
}

/// What the workers report, to the layers that care: versions and
/// probations to the guest registry, settlements to bet owners.
struct Observers {
    placement: Arc<guests::Placement>,
    owners: Arc<bets::Owners>,
}

impl worker::Observer for Observers {
    fn runs(&self, match_id: &Arc<str>, version: Arc<str>) {
        self.placement.set(match_id, version);
    }

    fn stopped(&self, match_id: &str) {
        self.placement.remove(match_id);
    }

    fn probation(&self, match_id: &Arc<str>, news: worker::ProbationNews) {
        match news {
            worker::ProbationNews::Started => self.placement.probation_started(match_id),
            worker::ProbationNews::Ended => self.placement.probation_ended(match_id),
            worker::ProbationNews::Failed(reason) => self.placement.probation_failed(match_id, &reason),
        }
    }

    fn bet_changed(&self, record: &journal::BetRecord) {
        self.owners.notify(bets::Answer::from_record(record));
    }
}

/// A running server.
pub struct Server {
    pub http_addr: SocketAddr,
    pub feed_addr: Option<SocketAddr>,
    pub guest_version: String,
    router: Arc<router::Router>,
    store: store::Store,
    writer_stop: CancellationToken,
    writer_task: tokio::task::JoinHandle<()>,
    feed_stop: CancellationToken,
    feed_tasks: TaskTracker,
    session_stop: CancellationToken,
    session_tasks: TaskTracker,
    http_task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Open the store, compile the guest, bind the listeners and start.
    pub async fn start(config: ServeConfig) -> anyhow::Result<Server> {
        config.validate()?;
        let store = store::Store::open(&config.data_dir)?;
        let explicit = match &config.guest {
            Some(path) => Some(std::fs::read(path).with_context(|| format!("reading guest {}", path.display()))?),
            None => None,
        };
        let limits = Limits {
            max_instances: config.max_matches,
            memory_bytes: config.guest_memory_bytes,
            call_deadline: config.guest_call_deadline,
        };
        let platform = if config.native_model {
            tracing::warn!("running the match model natively: no isolation, benchmark use only");
            None
        } else {
            Some(Platform::new(limits)?)
        };
        let metrics = Arc::new(metrics::Metrics::new());
        let (handle, rx) = store::queue(store.clone());
        let writer_stop = CancellationToken::new();
        let writer_task = tokio::spawn(store::run_writer(
            store.clone(),
            rx,
            config.commit_interval,
            metrics.clone(),
            writer_stop.clone(),
        ));
        let (guests, version) = guests::Guests::open(
            platform,
            handle.clone(),
            explicit,
            DEFAULT_GUEST,
            metrics.clone(),
            guests::RolloutPolicy {
                max_failed: config.rollout_max_failed,
                canary_matches: config.canary_matches,
                concurrency: config.rollout_concurrency,
                probation_window: config.rollout_probation,
                keep_versions: config.keep_guest_versions,
            },
        )
        .await?;
        let guests = Arc::new(guests);
        let guest_version = version.version().to_owned();
        tracing::info!(guest_version, start_no = store.start_no(), "guest ready");
        let owners = Arc::new(bets::Owners::default());
        let journal: Option<Arc<dyn journal::Journal>> = config
            .durability
            .then(|| Arc::new(handle.clone()) as Arc<dyn journal::Journal>);
        let worker_config = worker::WorkerConfig {
            journal,
            policy: supervisor::Policy {
                max_failures: config.max_failures,
                window: config.failure_window,
            },
            snapshot_every: config.snapshot_every,
            snapshot_interval: config.snapshot_interval,
            clean_after: config.clean_after,
            hibernate_after: config.hibernate_after,
            observer: Arc::new(Observers {
                placement: guests.placement.clone(),
                owners: owners.clone(),
            }),
            metrics: metrics.clone(),
        };
        let router = Arc::new(router::Router::new(version, worker_config, config.max_matches as usize));
        let desk = Arc::new(bets::Desk::new(
            router.clone(),
            owners,
            config.durability.then(|| handle.clone()),
            bets::Policy {
                min_stake: config.min_stake,
                max_stake: config.max_stake,
                accept_better_odds: config.accept_better_odds,
            },
            metrics.clone(),
        ));
        drop(handle);
        if config.durability {
            let recovered = store.recover_all()?;
            tracing::info!(matches = recovered.len(), "restoring matches from the store");
            // Matches that had stayed behind on another version keep it.
            let pinned = guests.pinned(&recovered).await;
            router.restore(recovered, &pinned);
        }

        let feed_stop = CancellationToken::new();
        let feed_tasks = TaskTracker::new();
        let intake = feed::Intake {
            router: router.clone(),
            metrics: metrics.clone(),
            max_message_bytes: config.max_message_bytes,
        };
        let mut feed_addr = None;
        if let Some(addr) = config.feed_listen {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding feed listener {addr}"))?;
            feed_addr = Some(listener.local_addr()?);
            feed_tasks.spawn(feed::listen(listener, intake.clone(), feed_stop.clone()));
        }
        if let Some(addr) = config.feed_connect.clone() {
            feed_tasks.spawn(feed::connect(addr, intake.clone(), feed_stop.clone()));
        }

        let session_stop = CancellationToken::new();
        let session_tasks = TaskTracker::new();
        let ready = Arc::new(AtomicBool::new(false));
        let state = http::AppState {
            router: router.clone(),
            metrics,
            ready: ready.clone(),
            sessions: Arc::new(tokio::sync::Semaphore::new(config.max_sessions)),
            session_tasks: session_tasks.clone(),
            shutdown: session_stop.clone(),
            admin_token: config.admin_token.clone(),
            desk,
            guests,
        };
        let listener = TcpListener::bind(config.http)
            .await
            .with_context(|| format!("binding HTTP {}", config.http))?;
        let http_addr = listener.local_addr()?;
        let stop = session_stop.clone();
        let http_task = tokio::spawn(async move {
            axum::serve(listener, http::routes(state))
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });
        ready.store(true, Ordering::Release);
        Ok(Server {
            http_addr,
            feed_addr,
            guest_version,
            router,
            store,
            writer_stop,
            writer_task,
            feed_stop,
            feed_tasks,
            session_stop,
            session_tasks,
            http_task,
        })
    }

    /// Stop in order: feed intake, workers (mailboxes drained), WebSocket
    /// sessions (close frames sent), then flush the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.feed_stop.cancel();
        self.feed_tasks.close();
        self.feed_tasks.wait().await;
        self.router.shutdown().await;
        self.session_stop.cancel();
        self.session_tasks.close();
        self.session_tasks.wait().await;
        match self.http_task.await {
            Ok(r) => r.context("HTTP server")?,
            Err(e) => tracing::warn!(error = %e, "HTTP task ended abnormally"),
        }
        self.writer_stop.cancel();
        if let Err(e) = self.writer_task.await {
            tracing::warn!(error = %e, "store writer ended abnormally");
        }
        self.store.flush().await?;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Ready;

    #[test]
    fn ready_line_round_trips() {
        let r = Ready {
            http: "127.0.0.1:8080".parse().expect("addr"),
            feed: Some("127.0.0.1:9000".parse().expect("addr")),
        };
        assert_eq!(Ready::parse(&r.line("abc")), Some(r));
        let no_feed = Ready { feed: None, ..r };
        assert_eq!(Ready::parse(&no_feed.line("abc")), Some(no_feed));
        assert_eq!(Ready::parse("Touchline is live"), None);
    }
}
