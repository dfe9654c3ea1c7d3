//! Assembling a server: store and writer, guest registry, router and
//! workers, bet desk, feed intake, HTTP; and stopping it in order.

mod sources;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use futures_util::future::OptionFuture;
use sources::{start_catalog, start_fixtures, start_producers};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::sandbox::{self, Limits, Platform};
use crate::{
    DEFAULT_GUEST, ServeConfig, bets, feed, guests, http, journal, listen, metrics, producers, push, router, store,
    supervisor, worker,
};

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

    fn sleeps(&self, match_id: &Arc<str>, asleep: bool) {
        self.placement.sleeps(match_id, asleep);
    }

    fn bet_changed(&self, record: &journal::BetRecord) {
        self.owners.notify(bets::Answer::from_record(record));
    }
}

/// Longest a stopping node spends handing its partitions over.
const HAND_OVER_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

/// A running server.
pub struct Server {
    pub http_addr: SocketAddr,
    pub feed_addr: Option<SocketAddr>,
    pub guest_version: String,
    router: Arc<router::Router>,
    writer_stop: CancellationToken,
    writer_task: store::WriterThread,
    feed_stop: CancellationToken,
    feed_tasks: TaskTracker,
    session_stop: CancellationToken,
    session_tasks: TaskTracker,
    http_task: HttpTask,
    producers_stop: CancellationToken,
    producer_tasks: TaskTracker,
    /// This node's partition leases, in a cluster.
    leases: Option<crate::cluster::Leases>,
}

impl Server {
    /// Open the store, compile the guest, bind the listeners and start.
    pub async fn start(config: ServeConfig) -> anyhow::Result<Server> {
        Server::start_on(config, None).await
    }

    /// [`Server::start`] serving HTTP on `http`, a listener bound already
    /// (`demo` binds it before its simulator, so a taken port fails first);
    /// `None` binds `config.http`.
    pub async fn start_on(config: ServeConfig, http: Option<TcpListener>) -> anyhow::Result<Server> {
        config.validate()?;
        // Before any serving thread starts: they raise themselves to it.
        crate::realtime::configure(config.realtime_priority)?;
        // Joined first: a cluster that cannot be reached fails the start
        // before anything opens or listens. Its leases are kept only once
        // the node serves (below).
        let cluster = match &config.cluster {
            Some(c) => Some(Arc::new(
                crate::cluster::Cluster::connect(c.clone())
                    .await
                    .with_context(|| format!("joining the cluster as node {}", c.node_id))?,
            )),
            None => None,
        };
        let store = store::Store::open_reserving(&config.data_dir, config.store_reserve, config.store_cache)?;
        let metrics = Arc::new(metrics::Metrics::new());
        let (handle, rx) = store::queue(store.clone());
        let writer_stop = CancellationToken::new();
        let writer_task = store::spawn_writer(
            store.clone(),
            rx,
            config.commit_interval,
            metrics.clone(),
            writer_stop.clone(),
        )
        .context("starting the store writer's thread")?;
        let (guests, version) = open_guests(&config, handle.clone(), metrics.clone()).await?;
        let guests = Arc::new(guests);
        let guest_version = version.version().to_owned();
        tracing::info!(guest_version, start_no = store.start_no(), "guest ready");
        let owners = Arc::new(bets::Owners::default());
        let observer = Arc::new(Observers {
            placement: guests.placement.clone(),
            owners: owners.clone(),
        });
        let journal = config
            .durability
            .then(|| Arc::new(handle.clone()) as Arc<dyn journal::Journal>);
        let producers_stop = CancellationToken::new();
        let producer_tasks = TaskTracker::new();
        let (producers, announcements) = start_producers(
            &config,
            &store,
            journal.clone(),
            &metrics,
            &producers_stop,
            &producer_tasks,
        )?;
        let catalog = start_catalog(&config, &store, journal.clone(), &producers_stop, &producer_tasks)?;
        let names = config.names.then(|| worker::NameSource {
            descriptions: catalog.watch(),
            fixtures: start_fixtures(&config, journal.clone(), &metrics, &producers_stop, &producer_tasks),
        });
        // In a cluster a match's state lives in TL_EVENTS, replayed by its
        // partition's owner: the node's sled journal does not keep it
        // (`feed::cluster`).
        let match_journal = if cluster.is_some() { None } else { journal };
        let mut worker_config = worker_config(
            &config,
            match_journal,
            observer,
            metrics.clone(),
            producers.board(),
            names,
        );
        // Shared with the feed reader, which sets it.
        let feed_behind = worker_config.feed_behind.clone();
        // In a cluster bets are recorded in JetStream (`bets::cluster`).
        let bet_book = OptionFuture::from(cluster.as_deref().map(crate::cluster::bets::BetBook::open))
            .await
            .transpose()
            .context("the cluster's bet records")?;
        let bet_log = bet_book
            .as_ref()
            .zip(cluster.as_ref())
            .map(|(book, c)| Arc::new(bets::cluster::JetStreamBets::new(book.clone(), c.config.partitions)));
        worker_config.bet_log = bet_log.clone().map(|l| Arc::new(l) as Arc<dyn worker::BetLog>);
        // In a cluster every frame is published for the other nodes, once
        // this node holds leases (`push::relay`).
        let tap = cluster.as_ref().map(|_| Arc::new(push::publisher::LateTap::default()));
        worker_config.tap = tap.clone().map(|t| t as Arc<dyn worker::FrameTap>);
        // ...and each match's snapshots kept in JetStream (`feed::snapshots`).
        let snapshots = cluster
            .as_ref()
            .map(|_| Arc::new(feed::snapshots::Snapshots::default()));
        worker_config.snapshots = snapshots.clone().map(|s| s as Arc<dyn worker::SnapshotSink>);
        let router = Arc::new(router::Router::new(version, worker_config, config.max_matches as usize));
        let desk = bets::Desk::new(
            router.clone(),
            owners,
            config.durability.then_some(handle),
            bets::Policy {
                min_stake: config.min_stake,
                max_stake: config.max_stake,
                accept_better_odds: config.accept_better_odds,
            },
            metrics.clone(),
        );
        // A cluster node sends each bet to its match's owner, which records
        // the decision in the cluster (docs/cluster.md).
        let desk = Arc::new(match (&cluster, &bet_book) {
            (Some(c), Some(book)) => desk.in_cluster(bets::cluster::Remote {
                book: book.clone(),
                partitions: c.config.partitions,
            }),
            _ => desk,
        });
        if config.durability && cluster.is_none() {
            let recovered = store.recover_all()?;
            tracing::info!(matches = recovered.len(), "restoring matches from the store");
            // Matches that had stayed behind on another version keep it.
            let pinned = guests.pinned(&recovered).await;
            router.restore(recovered, &pinned);
        }
        let (feed_stop, feed_tasks) = (CancellationToken::new(), TaskTracker::new());
        let rejects = Arc::new(feed::Rejects::default());
        let intake = feed::Intake {
            rejects: rejects.clone(),
            router: router.clone(),
            metrics: metrics.clone(),
            feed_behind,
            max_message_bytes: config.max_message_bytes,
            stall_after: config.feed_stall,
            producers: producers.clone(),
            descriptions: catalog.watch(),
            ingest: cluster.as_deref().map(crate::cluster::ingest::Ingest::new),
        };
        let feed_addr = start_feed(&config, intake, &feed_stop, &feed_tasks).await?;
        // In a cluster `"*"` covers every node's matches (`push::directory`).
        let directory = OptionFuture::from(cluster.as_deref().map(crate::cluster::matches::Directory::open))
            .await
            .transpose()
            .context("the cluster's directory of matches")?;
        // In a cluster the guest version is the cluster's (`guests::cluster`).
        let guest_book = OptionFuture::from(cluster.as_deref().map(crate::cluster::guests::GuestBook::open))
            .await
            .transpose()
            .context("the cluster's guest records")?;
        let guest_rollouts = guest_book.zip(cluster.as_ref()).map(|(book, c)| {
            Arc::new(guests::cluster::Rollouts {
                book,
                node: c.config.node_id.clone(),
                guests: guests.clone(),
            })
        });
        let (session_stop, session_tasks) = (CancellationToken::new(), TaskTracker::new());
        let ready = Arc::new(AtomicBool::new(false));
        let metrics_for_http = metrics.clone();
        let metrics_for_cluster = metrics.clone();
        let producers_for_cluster = producers.clone();
        let desk_for_cluster = desk.clone();
        let state = http::AppState {
            cluster: cluster.clone(),
            nodes_view: Arc::default(),
            router: router.clone(),
            metrics,
            ready: ready.clone(),
            sessions: Arc::new(tokio::sync::Semaphore::new(config.max_sessions)),
            budget: config.session_budget,
            handshake_timeout: config.header_timeout,
            ws_deflate: config.ws_deflate,
            session_tasks: session_tasks.clone(),
            shutdown: session_stop.clone(),
            auth: Arc::new(crate::auth::Guard::new(config.admin_token.clone())),
            desk,
            guests: guests.clone(),
            guest_rollouts: guest_rollouts.clone(),
            producers,
            catalog,
            store: store.clone(),
            feed_expected: config.feed_listen.is_some() || config.feed_connect.is_some(),
            console: Arc::new(crate::ops::Console::new(rejects, config.data_dir.clone())),
        };
        let (http_addr, http_task) = serve_http(&config, http, state, metrics_for_http, session_stop.clone()).await?;
        let leases = cluster.as_ref().map(|c| {
            tracing::info!(node = %c.config.node_id, partitions = c.config.partitions.count(), "joined the cluster");
            feed::cluster::hear_producers(
                c.client.clone(),
                producers_for_cluster.clone(),
                feed_stop.clone(),
                &feed_tasks,
            );
            if let Some(announcements) = announcements {
                feed::cluster::announce(
                    crate::cluster::ingest::Ingest::new(c),
                    announcements,
                    feed_stop.clone(),
                    &feed_tasks,
                );
            }
            // The bound address, unless it names no host (0.0.0.0, ::):
            // then only --advertise-url can say where clients reach it.
            let url = config.advertise_url.clone().or_else(|| {
                let named = !http_addr.ip().is_unspecified();
                if !named {
                    tracing::warn!(%http_addr, "no --advertise-url: pages cannot move to this node");
                }
                named.then(|| format!("http://{http_addr}"))
            });
            let leases = crate::cluster::Leases::start_at(c, url);
            crate::cluster::leases::count(
                leases.owned(),
                metrics_for_cluster.clone(),
                feed_stop.clone(),
                &feed_tasks,
            );
            let partitions = c.config.partitions;
            if let Some(snapshots) = &snapshots {
                snapshots.start(
                    c.clone(),
                    leases.fence(),
                    metrics_for_cluster.clone(),
                    feed::snapshots::Cadence {
                        every: c.config.snapshot_every,
                        interval: c.config.snapshot_interval,
                    },
                    feed_stop.clone(),
                    &feed_tasks,
                );
            }
            if let Some(tap) = &tap {
                tap.set(push::publisher::FramePublisher::start(
                    c.js.clone(),
                    c.config.node_id.as_str(),
                    leases.fence(),
                    partitions,
                    metrics_for_cluster.clone(),
                    feed_stop.clone(),
                    &feed_tasks,
                ));
            }
            router.set_remote(Arc::new(push::relay::Relays::new(
                c,
                leases.owned(),
                config.max_matches as usize,
                metrics_for_cluster.clone(),
                session_stop.clone(),
                session_tasks.clone(),
            )));
            if let Some(rollouts) = &guest_rollouts {
                guests::cluster::follow(rollouts.clone(), router.clone(), feed_stop.clone(), &feed_tasks);
            }
            let progress = Arc::new(crate::cluster::bets::Progress::default());
            if let (Some(book), Some(log), Some(directory)) = (&bet_book, &bet_log, &directory) {
                log.set_fence(leases.fence());
                let owner = bets::cluster::Owner {
                    desk: desk_for_cluster.clone(),
                    book: book.clone(),
                    progress: progress.clone(),
                    fence: leases.fence(),
                };
                bets::cluster::serve_owned(owner, leases.owned(), feed_stop.clone(), &feed_tasks);
                bets::cluster::hear_settlements(
                    c.client.clone(),
                    desk_for_cluster.owners.clone(),
                    feed_stop.clone(),
                    &feed_tasks,
                );
                push::directory::follow(directory.clone(), router.clone(), session_stop.clone(), &session_tasks);
                let appliers = feed::cluster::Appliers {
                    cluster: c.clone(),
                    fence: leases.fence(),
                    router: router.clone(),
                    metrics: metrics_for_cluster.clone(),
                    book: book.clone(),
                    progress,
                    directory: directory.clone(),
                };
                feed::cluster::apply_owned(appliers, leases.owned(), feed_stop.clone(), &feed_tasks);
            }
            leases
        });
        ready.store(true, Ordering::Release);
        Ok(Server {
            http_addr,
            feed_addr,
            guest_version,
            router,
            writer_stop,
            writer_task,
            feed_stop,
            feed_tasks,
            session_stop,
            session_tasks,
            http_task,
            producers_stop,
            producer_tasks,
            leases,
        })
    }

    /// Stop in order: in a cluster the partitions handed over, then feed
    /// intake, workers (mailboxes drained), WebSocket sessions (close
    /// frames sent), then the store writer (it commits and flushes all it
    /// was given).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        // Partitions are handed over first, so other nodes take them at
        // once (the owned set shrinks before the keys are released, and
        // the appliers stop at it: `feed::cluster`). Bounded:
        // with NATS gone, the leases expire by themselves.
        if let Some(leases) = self.leases {
            match tokio::time::timeout(HAND_OVER_WITHIN, leases.shutdown()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "handing the partitions over"),
                Err(_) => tracing::warn!("handing the partitions over took too long; they expire by themselves"),
            }
        }
        self.feed_stop.cancel();
        self.feed_tasks.close();
        self.feed_tasks.wait().await;
        self.producers_stop.cancel();
        self.producer_tasks.close();
        self.producer_tasks.wait().await;
        self.router.shutdown().await;
        self.session_stop.cancel();
        self.session_tasks.close();
        self.session_tasks.wait().await;
        match self.http_task.await {
            Ok(r) => r.context("HTTP server")?,
            Err(e) => tracing::warn!(error = %e, "HTTP task ended abnormally"),
        }
        self.writer_stop.cancel();
        // Stopped, the writer has committed (and flushed) all it was given.
        if let Err(e) = self.writer_task.join().await {
            tracing::warn!(error = %e, "store writer ended abnormally");
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// The guest registry and the version to run: `--guest` if given, else the
/// stored active one, else the embedded default (or the native model).
async fn open_guests(
    config: &ServeConfig,
    store: store::StoreHandle,
    metrics: Arc<metrics::Metrics>,
) -> anyhow::Result<(guests::Guests, sandbox::GuestVersion)> {
    let explicit = match &config.guest {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("reading guest {}", path.display()))?),
        None => None,
    };
    let platform = if config.native_model {
        tracing::warn!("running the match model natively: no isolation, benchmark use only");
        None
    } else {
        let platform = Platform::new(Limits {
            max_instances: config.max_matches,
            memory_bytes: config.guest_memory_bytes,
            call_deadline: config.guest_call_deadline,
        })?;
        metrics
            .guest_memory_reservation_bytes
            .set(platform.reservation_bytes() as i64);
        Some(platform)
    };
    let policy = guests::RolloutPolicy {
        max_failed: config.rollout_max_failed,
        canary_matches: config.canary_matches,
        concurrency: config.rollout_concurrency,
        slice: config.rollout_slice,
        probation_window: config.rollout_probation,
        keep_versions: config.keep_guest_versions,
    };
    guests::Guests::open(platform, store, explicit, DEFAULT_GUEST, metrics, policy).await
}

fn worker_config(
    config: &ServeConfig,
    journal: Option<Arc<dyn journal::Journal>>,
    observer: Arc<dyn worker::Observer>,
    metrics: Arc<metrics::Metrics>,
    producers: tokio::sync::watch::Receiver<producers::Board>,
    names: Option<worker::NameSource>,
) -> worker::WorkerConfig {
    worker::WorkerConfig {
        journal,
        policy: supervisor::Policy {
            max_failures: config.max_failures,
            window: config.failure_window,
        },
        snapshot_every: config.snapshot_every,
        snapshot_interval: config.snapshot_interval,
        clean_after: config.clean_after,
        hibernate_after: config.hibernate_after,
        nap_after: config.nap_after,
        observer,
        metrics,
        producers,
        feed_behind: worker::FeedBehind::default(),
        names,
        tap: None,
        bet_log: None,
        snapshots: None,
        current: None,
    }
}

/// Listen for and/or dial the feed; the bound listen address, if any.
async fn start_feed(
    config: &ServeConfig,
    intake: feed::Intake,
    stop: &CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<Option<SocketAddr>> {
    let mut feed_addr = None;
    if let Some(addr) = config.feed_listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding feed listener {addr}"))?;
        feed_addr = Some(listener.local_addr()?);
        tasks.spawn(feed::listen(listener, intake.clone(), stop.clone()));
    }
    if let Some(addr) = config.feed_connect.clone() {
        tasks.spawn(feed::connect(addr, intake, stop.clone()));
    }
    Ok(feed_addr)
}

type HttpTask = tokio::task::JoinHandle<std::io::Result<()>>;

/// Bind the HTTP port (unless bound already) and serve until `stop`,
/// within the connection limits.
async fn serve_http(
    config: &ServeConfig,
    bound: Option<TcpListener>,
    state: http::AppState,
    metrics: Arc<metrics::Metrics>,
    stop: CancellationToken,
) -> anyhow::Result<(SocketAddr, HttpTask)> {
    let listener = match bound {
        Some(listener) => listener,
        None => bind_http(config.http).await?,
    };
    let bound = listener.local_addr()?;
    let limits = listen::Limits {
        max_connections: config
            .max_connections
            .unwrap_or_else(|| listen::descriptors::default_max_connections(listen::descriptors::open_file_limit())),
        per_ip: config.max_connections_per_ip,
        header_timeout: config.header_timeout,
    };
    let task = tokio::spawn(listen::serve(listener, http::routes(state), limits, metrics, stop));
    Ok((bound, task))
}

/// Bind the HTTP + WebSocket port; a taken one is named in the error.
pub async fn bind_http(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding HTTP {addr} (is another server using it? choose another with --http)"))
}
