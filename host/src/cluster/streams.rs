//! The cluster's configuration, the connection to NATS, and the idempotent
//! setup of everything it keeps in JetStream. Every node runs the setup at
//! start; creating what exists with the same configuration is a no-op,
//! and a changed configuration (replicas, the resume window) is applied
//! as a stream update.
//!
//! | name | subjects | what |
//! |---|---|---|
//! | stream `TL_EVENTS` | `tl.ev.>` | match events by partition; a 2 min duplicate window (`Nats-Msg-Id`) applies a re-sent event once |
//! | stream `TL_FRAMES` | `tl.fo.>`, `tl.fb.>`, `tl.fs.>` | frames per match, the last `resume_window` of each, each stored one republished to `tl.fr.<match>` for the relays; the partitions' barriers ([`super::barrier`]): a stale owner's frame is refused, so never republished; each match's snapshot ([`super::snapshots`], rolled up: the last only) |
//! | stream `TL_BETS` | `tl.bd.>` | bet decisions (not `tl.bet.*`: a stream on the request subject would answer bets itself) |
//! | KV `TL_LEASES` | `$KV.TL_LEASES.p<N>` | partition leases, `max_age` = lease TTL ([`super::lease`]) |
//! | KV `TL_NODES` | `$KV.TL_NODES.<node>` | node heartbeats, `max_age` = lease TTL ([`super::nodes`]) |

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use tokio::sync::watch;

use super::partition::Partitions;
use super::{ClusterError, NodeId, lease, nodes};

pub const EVENTS_STREAM: &str = "TL_EVENTS";
pub const FRAMES_STREAM: &str = "TL_FRAMES";
pub const BETS_STREAM: &str = "TL_BETS";

/// Lease TTL when `--lease-ttl-ms` is not given: renewed every second.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);

/// Shortest TTL accepted: renewals every `ttl/3` must fit a round trip
/// with room to spare.
pub const MIN_LEASE_TTL: Duration = Duration::from_millis(300);

/// How long a relay lives without a session when not configured.
pub const DEFAULT_RELAY_IDLE: Duration = Duration::from_secs(60);

/// Frames kept per match in `TL_FRAMES` when not configured.
pub const DEFAULT_RESUME_WINDOW: i64 = 256;

/// JetStream's own default; long enough for any retry of a publish.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// `TL_FRAMES`' duplicate window: longer than a frame is retried, short
/// because every frame's id is kept that long.
pub const FRAMES_DUPLICATE_WINDOW: Duration = Duration::from_secs(30);

/// Bound on one JetStream API request or publish acknowledgement.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One validated cluster configuration.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS servers; give all of a cluster's, the client fails over.
    pub urls: Vec<String>,
    pub node_id: NodeId,
    pub partitions: Partitions,
    pub lease_ttl: Duration,
    /// Replicas of every stream and bucket: 1 on a single server, 3 on a
    /// 3-server cluster (survives the loss of one).
    pub replicas: usize,
    /// Frames kept per match for `since` (`TL_FRAMES`' per-subject limit).
    pub resume_window: i64,
    /// A relay with no session for this long is let go (`push::relay`).
    pub relay_idle: Duration,
    /// A match's snapshot is kept in JetStream at most every this many
    /// events (`feed::snapshots`)...
    pub snapshot_every: u64,
    /// ...or this often.
    pub snapshot_interval: Duration,
}

impl ClusterConfig {
    /// Defaults for everything but where and who.
    pub fn new(urls: Vec<String>, node_id: NodeId) -> ClusterConfig {
        ClusterConfig {
            urls,
            node_id,
            partitions: Partitions::default(),
            lease_ttl: DEFAULT_LEASE_TTL,
            replicas: 1,
            resume_window: DEFAULT_RESUME_WINDOW,
            relay_idle: DEFAULT_RELAY_IDLE,
            snapshot_every: 1_000,
            snapshot_interval: Duration::from_secs(30),
        }
    }

    pub fn validate(&self) -> Result<(), ClusterError> {
        let bad = |what: String| Err(ClusterError::Config(what));
        if self.urls.is_empty() {
            return bad("no NATS url".into());
        }
        if self.lease_ttl < MIN_LEASE_TTL {
            return bad(format!("lease ttl {:?} is under {MIN_LEASE_TTL:?}", self.lease_ttl));
        }
        if !(1..=5).contains(&self.replicas) {
            return bad(format!("replicas {}: 1 to 5", self.replicas));
        }
        if self.resume_window < 1 {
            return bad(format!("resume window {}: at least 1", self.resume_window));
        }
        Ok(())
    }

    /// How often leases are renewed and nodes heartbeat: `ttl / 3`.
    pub fn renew_interval(&self) -> Duration {
        self.lease_ttl / 3
    }
}

/// `TL_EVENTS`.
pub fn events_stream(config: &ClusterConfig) -> stream::Config {
    stream::Config {
        name: EVENTS_STREAM.to_owned(),
        subjects: vec!["tl.ev.>".to_owned()],
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        ..Default::default()
    }
}

/// `TL_FRAMES`.
pub fn frames_stream(config: &ClusterConfig) -> stream::Config {
    stream::Config {
        name: FRAMES_STREAM.to_owned(),
        subjects: vec!["tl.fo.>".to_owned(), "tl.fb.>".to_owned(), "tl.fs.>".to_owned()],
        // A match's snapshot replaces its previous one (`Nats-Rollup`).
        allow_rollup: true,
        // Only what the stream stored reaches the relays: a frame refused
        // by its partition's barrier is seen by no one.
        republish: Some(stream::Republish {
            source: "tl.fo.>".to_owned(),
            destination: "tl.fr.>".to_owned(),
            headers_only: false,
        }),
        max_messages_per_subject: config.resume_window,
        // A frame published again after a lost acknowledgement is stored
        // once (`push::publisher` retries for at most 20 s).
        duplicate_window: FRAMES_DUPLICATE_WINDOW,
        allow_direct: true,
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    }
}

/// `TL_BETS`.
pub fn bets_stream(config: &ClusterConfig) -> stream::Config {
    stream::Config {
        name: BETS_STREAM.to_owned(),
        subjects: vec!["tl.bd.>".to_owned()],
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// A bucket whose keys live one TTL unless written again.
fn ttl_bucket(name: &str, config: &ClusterConfig) -> kv::Config {
    bucket(name, config, config.lease_ttl)
}

/// A bucket of the cluster (one value per key, the cluster's replicas, on
/// file) whose keys live `max_age` (`ZERO`: for ever).
pub fn bucket(name: &str, config: &ClusterConfig, max_age: Duration) -> kv::Config {
    kv::Config {
        bucket: name.to_owned(),
        history: 1,
        max_age,
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// A connected node: the client, its JetStream context and the buckets.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub config: ClusterConfig,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub leases: kv::Store,
    pub nodes: kv::Store,
    /// Counts the client's reconnections: core NATS messages published
    /// while it was away (frames) are lost, so what forwards them (the
    /// relays) starts again from a snapshot when this changes.
    pub reconnected: watch::Receiver<u64>,
}

impl Cluster {
    /// Connect and run the setup.
    pub async fn connect(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        config.validate()?;
        let urls = config.urls.join(",");
        let (reconnects, reconnected) = watch::channel(0u64);
        let reconnects = std::sync::Arc::new(reconnects);
        let client = async_nats::ConnectOptions::new()
            .name(format!("touchline-{}", config.node_id))
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(REQUEST_TIMEOUT))
            // Unlimited reconnects (the default), at most a second apart:
            // a lease must be renewed within its TTL.
            .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 50).min(1000)))
            .event_callback(move |event| {
                let reconnects = reconnects.clone();
                async move {
                    tracing::info!(event = %event, "nats connection");
                    if matches!(event, async_nats::Event::Connected) {
                        reconnects.send_modify(|n| *n += 1);
                    }
                }
            })
            .connect(config.urls.clone())
            .await
            .map_err(|source| ClusterError::Connect { urls, source })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client.clone());
        let (leases, nodes) = setup(&js, &config).await?;
        Ok(Cluster {
            config,
            client,
            js,
            leases,
            nodes,
            reconnected,
        })
    }
}

/// Create or update the streams and buckets; returns the leases and nodes
/// buckets.
pub async fn setup(js: &jetstream::Context, config: &ClusterConfig) -> Result<(kv::Store, kv::Store), ClusterError> {
    let setup_err = |what: &str| {
        let what = what.to_owned();
        move |e: async_nats::Error| ClusterError::Setup { what, source: e }
    };
    use async_nats::jetstream::context::{CreateKeyValueErrorKind, CreateStreamErrorKind};
    for cfg in [events_stream(config), frames_stream(config), bets_stream(config)] {
        let name = format!("stream {}", cfg.name);
        let timed_out = |e: &async_nats::jetstream::context::CreateStreamError| {
            matches!(
                e.kind(),
                CreateStreamErrorKind::TimedOut | CreateStreamErrorKind::JetStreamUnavailable
            )
        };
        patiently(&name, timed_out, || js.create_or_update_stream(cfg.clone()))
            .await
            .map_err(|e| setup_err(&name)(e.into()))?;
    }
    let mut buckets = Vec::with_capacity(2);
    for name in [lease::BUCKET, nodes::BUCKET] {
        // The bucket's TTL is every node's lease: a node configured
        // otherwise would rewrite it for all (and believe it holds keys the
        // server lets expire sooner). Refused, naming both.
        if let Ok(mut stream) = js.get_stream(format!("KV_{name}")).await
            && let Ok(info) = stream.info().await
        {
            let (ttl, replicas) = (info.config.max_age, info.config.num_replicas);
            if ttl != config.lease_ttl || replicas != config.replicas {
                return Err(ClusterError::Config(format!(
                    "bucket {name} has a lease TTL of {} ms and {replicas} replicas; this node has {} ms and {}: \
                     every node of a cluster must run the same --lease-ttl-ms and --cluster-replicas",
                    ttl.as_millis(),
                    config.lease_ttl.as_millis(),
                    config.replicas
                )));
            }
        }
        let what = format!("bucket {name}");
        let timed_out = |e: &async_nats::jetstream::context::CreateKeyValueError| {
            matches!(e.kind(), CreateKeyValueErrorKind::TimedOut)
        };
        let store = patiently(&what, timed_out, || {
            js.create_or_update_key_value(ttl_bucket(name, config))
        })
        .await
        .map_err(|e| setup_err(&what)(e.into()))?;
        buckets.push(store);
    }
    let nodes = buckets.pop().expect("two buckets");
    let leases = buckets.pop().expect("two buckets");
    tracing::info!(
        replicas = config.replicas,
        partitions = config.partitions.count(),
        lease_ttl_ms = config.lease_ttl.as_millis() as u64,
        "cluster streams and buckets ready"
    );
    Ok((leases, nodes))
}

/// How long the setup waits out JetStream timing out or being unavailable
/// (a stream leader's election takes seconds on a loaded cluster; a node
/// starting then waits for it instead of failing its start).
const SETUP_PATIENCE: Duration = Duration::from_secs(30);

/// `op` again while it fails with an error `timed_out` accepts, until
/// [`SETUP_PATIENCE`] has passed; the last outcome.
async fn patiently<T, E: std::fmt::Display, Fut: Future<Output = Result<T, E>>>(
    what: &str,
    timed_out: impl Fn(&E) -> bool,
    mut op: impl FnMut() -> Fut,
) -> Result<T, E> {
    let deadline = tokio::time::Instant::now() + SETUP_PATIENCE;
    loop {
        match op().await {
            Err(e) if timed_out(&e) && tokio::time::Instant::now() < deadline => {
                tracing::warn!(what, error = %e, "cluster setup: JetStream did not answer; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            outcome => return outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn setup_waits_out_timeouts_for_a_while_and_nothing_else() {
        let tries = std::cell::Cell::new(0);
        let timed_out = |e: &&str| *e == "timed out";
        // Timed out twice, then answered.
        let got = patiently("x", timed_out, || {
            tries.set(tries.get() + 1);
            std::future::ready(if tries.get() < 3 { Err("timed out") } else { Ok(7) })
        })
        .await;
        assert_eq!((got, tries.get()), (Ok(7), 3));
        // Another error: at once.
        tries.set(0);
        let got: Result<(), _> = patiently("x", timed_out, || {
            tries.set(tries.get() + 1);
            std::future::ready(Err("refused"))
        })
        .await;
        assert_eq!((got, tries.get()), (Err("refused"), 1));
        // Timing out for ever: given up after the patience.
        let start = tokio::time::Instant::now();
        let got: Result<(), _> = patiently("x", timed_out, || std::future::ready(Err("timed out"))).await;
        assert_eq!(got, Err("timed out"));
        assert!(start.elapsed() >= SETUP_PATIENCE);
    }

    fn config() -> ClusterConfig {
        ClusterConfig::new(vec!["nats://127.0.0.1:4222".into()], NodeId::new("a").expect("valid"))
    }

    #[test]
    fn defaults_validate_and_bad_values_do_not() {
        let c = config();
        assert!(c.validate().is_ok());
        assert_eq!(c.renew_interval(), Duration::from_secs(1));
        assert_eq!(c.partitions.count(), 64);
        for bad in [
            ClusterConfig {
                urls: vec![],
                ..config()
            },
            ClusterConfig {
                lease_ttl: Duration::from_millis(100),
                ..config()
            },
            ClusterConfig {
                replicas: 0,
                ..config()
            },
            ClusterConfig {
                resume_window: 0,
                ..config()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn streams_capture_disjoint_subjects() {
        let c = config();
        let subjects: Vec<String> = [events_stream(&c), frames_stream(&c), bets_stream(&c)]
            .into_iter()
            .flat_map(|s| s.subjects)
            .collect();
        assert_eq!(subjects, ["tl.ev.>", "tl.fo.>", "tl.fb.>", "tl.fs.>", "tl.bd.>"]);
        // Republished frames are captured by no stream (a loop otherwise).
        assert!(!subjects.iter().any(|s| s.starts_with("tl.fr")));
        // Bet requests must not be captured by any stream.
        assert!(
            !subjects
                .iter()
                .any(|s| super::super::partition::bet_subject(0).starts_with(s.trim_end_matches('>')))
        );
        assert_eq!(frames_stream(&c).max_messages_per_subject, DEFAULT_RESUME_WINDOW);
        assert_eq!(ttl_bucket(lease::BUCKET, &c).max_age, DEFAULT_LEASE_TTL);
    }
}
