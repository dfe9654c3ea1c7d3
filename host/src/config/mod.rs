//! Server configuration: every setting declared once, in [`Settings`] (its
//! flag, help, environment variable, TOML key and default), and turned into
//! the [`ServeConfig`] the server runs on by [`Settings::into_config`], which
//! validates it ([`ServeConfig::validate`] is the one place of validation).
//!
//! Precedence: command-line flag > environment variable > `--config` file >
//! default. `serve` and `demo` both take [`ServeArgs`], so they share every
//! default. This module reads the config file and nothing else: it never
//! binds, opens or starts anything.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches as _};

mod serve;
pub use serve::ServeConfig;

/// What `serve` and `demo` take: the settings, and a file to fill in the
/// ones not given as flags or environment variables.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML file with any of these settings, named like the flags
    /// (`max-matches = 5000`); flags and environment variables win over it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
}

impl ServeArgs {
    /// The settings with the `--config` file, if any, laid under the flags
    /// and environment. `matches` are the subcommand's that parsed `self`:
    /// they tell which settings came from the command line or environment.
    pub fn resolve(self, matches: &ArgMatches) -> Result<Settings, ConfigError> {
        let Some(path) = self.config else {
            return Ok(self.settings);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        self.settings
            .under_file(matches, &text)
            .map_err(|source| ConfigError::File { path, source })
    }
}

/// Every setting, written once: the field is the flag (`max_matches` is
/// `--max-matches` and the TOML key `max-matches`), its doc comment the help,
/// its `#[arg]` the default (which [`Settings::default`], and so the TOML
/// file's missing keys, take from clap). Units are the users' (MiB, ms);
/// [`Settings::into_config`] converts them. A new setting is a field here,
/// its line in `into_config` and, if it has bounds, one in `validate`.
#[derive(Debug, Clone, PartialEq, Args, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// HTTP + WebSocket address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// Accept feed connections on this address.
    #[arg(long)]
    pub feed_listen: Option<SocketAddr>,
    /// Dial a feed server at HOST:PORT, reconnecting with backoff.
    #[arg(long)]
    pub feed_connect: Option<String>,
    /// Data directory (sled).
    #[arg(long, default_value = "./data")]
    pub data: PathBuf,
    /// Guest component to run instead of the built-in one.
    #[arg(long)]
    pub guest: Option<PathBuf>,
    /// Matches live at once (pooling allocator slots).
    #[arg(long, default_value_t = 10_000)]
    pub max_matches: u32,
    /// Linear memory cap per match, MiB.
    #[arg(long, default_value_t = 32)]
    pub guest_memory_mib: usize,
    /// Time budget of one guest call, ms.
    #[arg(long, default_value_t = 100)]
    pub guest_deadline_ms: u64,
    /// Largest feed message accepted, bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_message_bytes: usize,
    /// A feed message still incomplete after the connection was quiet this
    /// long (ms) is dropped and counted (`stalled`).
    #[arg(long, default_value_t = 30_000)]
    pub feed_stall_ms: u64,
    /// Concurrent WebSocket sessions.
    #[arg(long, default_value_t = 20_000)]
    pub max_sessions: usize,
    /// Open HTTP connections (WebSocket sessions included) from one source
    /// address; more are closed as they are accepted.
    #[arg(long, default_value_t = 256)]
    pub max_connections_per_ip: usize,
    /// Open HTTP connections in all (WebSocket sessions included); past it a
    /// new connection closes the one idle longest before a request, or is
    /// closed itself (default: the open-file limit less 128 descriptors kept
    /// for the store, the feed and the provider's API).
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Time (ms) a connection has to send a whole request head (the
    /// WebSocket upgrade request too), counted from its accept or from the
    /// end of its previous response; also bounds the upgrade itself.
    #[arg(long, default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// Largest client WebSocket message, bytes; a larger one closes the
    /// session (1009).
    #[arg(long, default_value_t = 64 * 1024)]
    pub ws_max_message_bytes: usize,
    /// Control frames (pings, unsolicited pongs) a WebSocket client may send
    /// per second on average...
    #[arg(long, default_value_t = 4)]
    pub ws_pings_per_sec: u32,
    /// ...and at once; one beyond the budget closes the session (1008).
    #[arg(long, default_value_t = 16)]
    pub ws_ping_burst: u32,
    /// Bytes a WebSocket client's frames may take to read per second on
    /// average, a compressed message counted as what it inflates to (0: no
    /// limit; otherwise at least 1024: one 4 KiB read past the budget
    /// waits 4 s at that rate)...
    #[arg(long, default_value_t = 64 * 1024)]
    pub ws_read_bytes_per_sec: u64,
    /// ...and at once; past the budget the server stops reading the client
    /// until its debt is repaid (nothing is dropped, the session stays).
    #[arg(long, default_value_t = 256 * 1024)]
    pub ws_read_burst_bytes: u64,
    /// Never accept `permessage-deflate`: every frame goes out as it is.
    /// Accepted by default when a client offers it: each frame is then
    /// compressed once and the compressed bytes shared by every such
    /// client (docs/protocol.md, "Compression").
    #[arg(long)]
    pub no_ws_deflate: bool,
    /// Matches one WebSocket session may name in its subscriptions
    /// (`["*"]` is not counted: it is bounded by --max-matches).
    #[arg(long, default_value_t = 10_000)]
    pub max_subscriptions: usize,
    /// Of those, matches not seen yet (kept until their first event).
    #[arg(long, default_value_t = 1_000)]
    pub max_pending_subscriptions: usize,
    /// Run without journal, snapshots or recovery (only to measure their cost).
    #[arg(long)]
    pub no_durability: bool,
    /// Longest a journaled event waits for its group commit, ms.
    #[arg(long, default_value_t = 10)]
    pub commit_interval_ms: u64,
    /// Run the serving threads (the runtime's workers, the store's writer)
    /// under `SCHED_FIFO` at this priority, the guests' epoch ticker one
    /// above, ahead of every ordinary thread on the machine; 0 = ordinary
    /// scheduling. Needs CAP_SYS_NICE or an RLIMIT_RTPRIO above it: without,
    /// the server refuses to start. For a machine with headroom
    /// (ARCHITECTURE.md, "Real-time priority").
    #[arg(long, default_value_t = 0)]
    pub realtime_priority: u8,
    /// Free space kept on the data dir's disk, MiB: under it the store
    /// holds writes (and is not ready) until there is room again; 0 = not
    /// checked.
    #[arg(long, default_value_t = 64)]
    pub store_reserve_mib: u64,
    /// Memory the store may use to cache what it read and wrote, MiB. Every
    /// match's journal entries and snapshots pass through it, so it is most
    /// of what 100,000 tracked matches cost beyond their own records.
    #[arg(long, default_value_t = 64)]
    pub store_cache_mib: u64,
    /// Snapshot a match every this many events...
    #[arg(long, default_value_t = 100)]
    pub snapshot_every: u64,
    /// ...or this often (ms), whichever comes first.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_interval_ms: u64,
    /// Idle time (ms) after which a match is durably marked clean, so its
    /// stream epoch survives a crash. Lower (down to the commit interval)
    /// proves continuity sooner but costs an fsync before the first push
    /// after each quiet period.
    #[arg(long, default_value_t = 1000)]
    pub clean_after_ms: u64,
    /// Idle time (ms) after which a match gives its Wasm instance back and
    /// keeps only its state (0 = never); the next event restores it.
    #[arg(long, default_value_t = 30_000)]
    pub hibernate_after_ms: u64,
    /// Idle time (ms) after which a live match gives its Wasm instance back
    /// but keeps everything else (0 = never): its next command restores
    /// the state saved in memory (0.04–0.07 ms on an idle machine, p50
    /// 0.11–0.17 ms under the density bench's load), and the instance's
    /// memory is free in between. Matches quieter than this pay that per
    /// event; one whose last two commands (events, bets, subscriptions)
    /// each came after a spell this long naps again 50 ms after each (it
    /// pays the restore anyway). Bursts and busier matches do not.
    #[arg(long, default_value_t = 2000)]
    pub nap_after_ms: u64,
    /// Restart intensity: more than this many guest failures...
    #[arg(long, default_value_t = 3)]
    pub max_failures: u32,
    /// ...within this window (ms) quarantines the match.
    #[arg(long, default_value_t = 5000)]
    pub failure_window_ms: u64,
    /// Run the match model compiled into the host, without Wasm (benchmark
    /// baseline only: no isolation, no limits).
    #[arg(long, hide = true)]
    pub native_model: bool,
    /// Smallest stake accepted.
    #[arg(long, default_value_t = 0.1)]
    pub min_stake: f64,
    /// Largest stake accepted.
    #[arg(long, default_value_t = 10_000.0)]
    pub max_stake: f64,
    /// Accept a bet when the current odds are better for the bettor than offered.
    #[arg(long)]
    pub accept_better_odds: bool,
    /// Bearer token for /admin/* (at least 16 characters); unset disables them.
    #[arg(long, env = "TOUCHLINE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A guest rollout aborts, returning every match to the old version,
    /// when more matches than this fail to switch or fail their first event.
    #[arg(long, default_value_t = 3)]
    pub rollout_max_failed: usize,
    /// Matches whose stored state and recent journal a new guest replays in
    /// scratch instances before it touches live matches (0 = no canary).
    #[arg(long, default_value_t = 8)]
    pub canary_matches: usize,
    /// Matches switching to a new guest at once. One at a time measured
    /// both fastest overall and gentlest on update latency on 2 cores
    /// (parallel switches were slower; not profiled, likely allocation contention).
    #[arg(long, default_value_t = 1)]
    pub rollout_concurrency: usize,
    /// A rollout pauses 1 ms (the runtime's timer: 1–2 ms) once its
    /// switches have taken this many µs since the last pause (their own
    /// time, as their workers report it, not the round trips between
    /// them), so the events and frames they queued run before the next
    /// (0 = never). A live match's switch takes its worker ~0.5–0.75 ms
    /// (the rollout's per-match p50 474–754 µs in the swap scenario) and
    /// queues a status frame to each of its subscribers: 100 of them back
    /// to back lifted the update p99 during a rollback ~3× the calm one.
    /// 250 pauses after each live switch (99 pauses for 100); 1,000, paced
    /// then by the wall time since the last pause, paused after every
    /// second (46–58 for 100). The swap scenario's rollback p99 over the
    /// calm one, pooled over 8 cycles: 1.46–2.28 in 6 runs against 1.84–
    /// 2.75 in 4 (and 7.76 in one with another feed seed: one ~60 ms
    /// stall, which calm windows show too), its 100 live switches in
    /// 273–313 ms against 161–207 ms.
    /// Matches asleep on a version older than the one replaced, switched
    /// asleep in a few µs of their workers' time each (2–9 µs at p50, an
    /// earlier measure), share a pause by the tens (derived, not
    /// measured); those asleep on the version replaced are passed by and
    /// switch as they wake.
    #[arg(long, default_value_t = 250)]
    pub rollout_slice_us: u64,
    /// After a rollout's switches, how long (ms) first-event failures still
    /// count towards --rollout-max-failed (a switched match that fails its
    /// first event later still goes back on its own).
    #[arg(long, default_value_t = 1000)]
    pub rollout_probation_ms: u64,
    /// Guest versions kept in the store (at least 2); after an install the
    /// oldest that no match runs, and that are neither active nor previous,
    /// are removed.
    #[arg(long, default_value_t = 8)]
    pub keep_guest_versions: usize,
    /// Producers this deployment uses (ids of the producer table); messages
    /// of others are counted and ignored.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub producers: Vec<u32>,
    /// Producer table in the shape of the provider's `producers.xml`
    /// (default: the built-in copy of it).
    #[arg(long)]
    pub producers_file: Option<PathBuf>,
    /// A producer without an `alive` for this long (s) is down.
    #[arg(long, default_value_t = 20)]
    pub alive_timeout: u64,
    /// A producer whose messages were generated more than this long (s)
    /// before they arrive is down (`delayed`) until the lag is gone; 0 =
    /// not checked (replaying recorded feeds).
    #[arg(long, default_value_t = 20)]
    pub max_feed_delay: u64,
    /// The provider's API (`http://host:port[/prefix]`): market
    /// descriptions, and recoveries unless --recovery-url says otherwise.
    #[arg(long)]
    pub api_url: Option<String>,
    /// Market descriptions from these files (the shape of the provider's
    /// `markets.xml` / `variants.xml`) instead of --api-url.
    #[arg(long, value_delimiter = ',')]
    pub descriptions_file: Vec<PathBuf>,
    /// Frames carry ids only: no market, outcome or event names, no
    /// fixtures fetched (only to measure what names cost).
    #[arg(long)]
    pub no_names: bool,
    /// Where recoveries are asked for (`/v1/{producer}/recovery/
    /// initiate_request`); default --api-url. Without either, producers
    /// cannot recover and no bet is accepted.
    #[arg(long)]
    pub recovery_url: Option<String>,
    /// Access token sent to the provider's API (`x-access-token`).
    #[arg(long, env = "TOUCHLINE_RECOVERY_TOKEN", hide_env_values = true)]
    pub recovery_token: Option<String>,
    /// At most one recovery request per producer this often (s).
    #[arg(long, default_value_t = 30)]
    pub recovery_min_interval: u64,
    /// Ask again when a recovery's `snapshot_complete` has not arrived
    /// after this long (s).
    #[arg(long, default_value_t = 300)]
    pub recovery_timeout: u64,
    /// Join a cluster on NATS JetStream at these servers (comma-separated
    /// `nats://` URLs, a TOML array in --config; give all of a NATS
    /// cluster's). Every node must run the same --partitions,
    /// --lease-ttl-ms and --cluster-replicas. A feed connection publishes
    /// its events to the cluster, each node applies the partitions it
    /// owns, and clients on any node see every match (issue 13, in
    /// progress: docs/cluster.md).
    #[arg(long, value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// This node's name in the cluster (letters, digits, `-`, `_`); needed
    /// with --cluster.
    #[arg(long)]
    pub node_id: Option<String>,
    /// Partitions the matches are split into (the same on every node).
    #[arg(long, default_value_t = 64)]
    pub partitions: u32,
    /// A partition's lease lasts this long (ms) without a renewal: a
    /// crashed node's partitions are taken over after it.
    #[arg(long, default_value_t = 3000)]
    pub lease_ttl_ms: u64,
    /// Replicas of the cluster's streams and buckets (3 on a 3-server
    /// NATS cluster, so it survives the loss of one).
    #[arg(long, default_value_t = 1)]
    pub cluster_replicas: usize,
    /// In a cluster, a relay (this node's stand-in for a match another
    /// node runs) with no session for this long (ms) is let go: its
    /// subscription ends and its memory is freed.
    #[arg(long, default_value_t = 60_000)]
    pub relay_idle_ms: u64,
    /// In a cluster, a match's snapshot is kept in JetStream (and the
    /// events it covers trimmed) at most every this many events...
    #[arg(long, default_value_t = 1_000)]
    pub cluster_snapshot_every: u64,
    /// ...or this often (ms), whichever comes first. Each costs the NATS
    /// servers a publish and two purges (docs/cluster.md, "Snapshots").
    #[arg(long, default_value_t = 30_000)]
    pub cluster_snapshot_interval_ms: u64,
    /// In a cluster, the URL this node's clients reach it at, listed by
    /// `GET /api/nodes` for pages whose node goes away (default:
    /// `http://` and the address --http is bound to).
    #[arg(long)]
    pub advertise_url: Option<String>,
}

impl Default for Settings {
    /// The defaults written in the `#[arg]` attributes above, read back from
    /// clap (with no environment), so they are written nowhere else.
    fn default() -> Self {
        let command = Settings::augment_args(clap::Command::new("defaults")).mut_args(|arg| arg.env(None));
        let matches = command
            .try_get_matches_from(["defaults"])
            .expect("every setting has a default or is optional");
        Settings::from_arg_matches(&matches).expect("the defaults parse as settings")
    }
}

impl Settings {
    /// Lay a TOML file (`toml_text`) under these settings: each key the file
    /// has replaces the setting unless `matches` (the ones that parsed
    /// `self`) say it came from the command line or the environment.
    /// Generic over the settings: a setting's TOML key is its flag, its clap
    /// id the same with underscores.
    pub fn under_file(self, matches: &ArgMatches, toml_text: &str) -> Result<Settings, FileError> {
        // Typed first, so an unknown key or a wrong type is refused by name
        // and line.
        toml::from_str::<Settings>(toml_text).map_err(FileError::Parse)?;
        let file: toml::Table = toml_text.parse().map_err(FileError::Parse)?;
        // Settings that are `None` are left out of the table and come back
        // as their default, which is `None` too.
        let mut merged = toml::Table::try_from(self).map_err(FileError::Merge)?;
        for (key, value) in file {
            let given = matches!(
                matches.value_source(&key.replace('-', "_")),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if !given {
                merged.insert(key, value);
            }
        }
        merged.try_into().map_err(FileError::Parse)
    }

    /// The server's configuration in its own units, validated.
    pub fn into_config(self) -> Result<ServeConfig, ConfigError> {
        let ms = Duration::from_millis;
        let config = ServeConfig {
            http: self.http,
            feed_listen: self.feed_listen,
            feed_connect: self.feed_connect,
            data_dir: self.data,
            guest: self.guest,
            max_matches: self.max_matches,
            // Saturating, so a huge value is refused as out of range rather
            // than wrapped into range.
            guest_memory_bytes: self.guest_memory_mib.saturating_mul(1 << 20),
            guest_call_deadline: ms(self.guest_deadline_ms),
            max_message_bytes: self.max_message_bytes,
            feed_stall: ms(self.feed_stall_ms),
            max_sessions: self.max_sessions,
            max_connections_per_ip: self.max_connections_per_ip,
            max_connections: self.max_connections,
            header_timeout: ms(self.header_timeout_ms),
            session_budget: crate::push::Budget {
                max_message_bytes: self.ws_max_message_bytes,
                pings_per_sec: self.ws_pings_per_sec,
                ping_burst: self.ws_ping_burst,
                read_bytes_per_sec: self.ws_read_bytes_per_sec,
                read_burst_bytes: self.ws_read_burst_bytes,
                max_subscriptions: self.max_subscriptions,
                max_pending: self.max_pending_subscriptions,
            },
            ws_deflate: !self.no_ws_deflate,
            durability: !self.no_durability,
            commit_interval: ms(self.commit_interval_ms),
            realtime_priority: self.realtime_priority,
            store_reserve: self.store_reserve_mib << 20,
            store_cache: self.store_cache_mib << 20,
            snapshot_every: self.snapshot_every,
            snapshot_interval: ms(self.snapshot_interval_ms),
            clean_after: ms(self.clean_after_ms),
            hibernate_after: (self.hibernate_after_ms > 0).then(|| ms(self.hibernate_after_ms)),
            nap_after: (self.nap_after_ms > 0).then(|| ms(self.nap_after_ms)),
            max_failures: self.max_failures,
            failure_window: ms(self.failure_window_ms),
            admin_token: self.admin_token,
            rollout_max_failed: self.rollout_max_failed,
            canary_matches: self.canary_matches,
            rollout_concurrency: self.rollout_concurrency,
            rollout_slice: std::time::Duration::from_micros(self.rollout_slice_us),
            rollout_probation: ms(self.rollout_probation_ms),
            keep_guest_versions: self.keep_guest_versions,
            min_stake: self.min_stake,
            max_stake: self.max_stake,
            accept_better_odds: self.accept_better_odds,
            native_model: self.native_model,
            producers: self.producers,
            producers_file: self.producers_file,
            producer_timing: crate::producers::Timing {
                alive_timeout: Duration::from_secs(self.alive_timeout),
                max_feed_delay: (self.max_feed_delay > 0).then(|| Duration::from_secs(self.max_feed_delay)),
                recovery_min_interval: Duration::from_secs(self.recovery_min_interval),
                recovery_timeout: Duration::from_secs(self.recovery_timeout),
            },
            recovery_url: self.recovery_url.or_else(|| self.api_url.clone()),
            recovery_token: self.recovery_token,
            api_url: self.api_url,
            descriptions_files: self.descriptions_file,
            names: !self.no_names,
            advertise_url: self.advertise_url,
            cluster: cluster_config(
                self.cluster,
                self.node_id,
                self.partitions,
                ms(self.lease_ttl_ms),
                self.cluster_replicas,
                ms(self.relay_idle_ms),
            )?
            .map(|mut c| {
                c.snapshot_every = self.cluster_snapshot_every.max(1);
                c.snapshot_interval = ms(self.cluster_snapshot_interval_ms);
                c
            }),
        };
        config.validate()?;
        Ok(config)
    }
}

/// The cluster's configuration, if `--cluster` names servers.
fn cluster_config(
    urls: Vec<String>,
    node_id: Option<String>,
    partitions: u32,
    lease_ttl: Duration,
    replicas: usize,
    relay_idle: Duration,
) -> Result<Option<crate::cluster::ClusterConfig>, ConfigError> {
    if urls.is_empty() {
        // A forgotten `--cluster` must not quietly give a single node.
        return match node_id {
            Some(_) => Err(ConfigError::NodeIdWithoutCluster),
            None => Ok(None),
        };
    }
    let flag = |flag| move |source| ConfigError::Cluster { flag, source };
    let node = node_id.ok_or(ConfigError::NoNodeId)?;
    let node = crate::cluster::NodeId::new(node).map_err(flag("--node-id"))?;
    let mut config = crate::cluster::ClusterConfig::new(urls, node);
    config.partitions = crate::cluster::Partitions::new(partitions).map_err(flag("--partitions"))?;
    config.lease_ttl = lease_ttl;
    config.replicas = replicas;
    config.relay_idle = relay_idle;
    Ok(Some(config))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--cluster needs --node-id")]
    NoNodeId,
    #[error("--node-id is for a cluster: give --cluster too")]
    NodeIdWithoutCluster,
    #[error("{flag}: {source}")]
    Cluster {
        flag: &'static str,
        source: crate::cluster::ClusterError,
    },
    #[error("--cluster: {url:?} is not a NATS server address: {reason}")]
    ClusterUrl { url: String, reason: String },
    #[error(
        "give --feed-listen or --feed-connect (or both; only a --cluster node may read no feed): without a feed nothing happens"
    )]
    NoFeed,
    #[error("stake limits must be positive, finite, and min <= max")]
    StakeLimits,
    #[error("the admin token must be at least 16 characters")]
    WeakToken,
    #[error("{name} must be between {min} and {max}, got {got}")]
    OutOfRange {
        name: &'static str,
        min: u64,
        max: u64,
        got: u64,
    },
    #[error("{name} must be 0 (no limit) or between {min} and {max}, got {got}")]
    ZeroOrRange {
        name: &'static str,
        min: u64,
        max: u64,
        got: u64,
    },
    #[error("--producers: {0}")]
    Producers(#[from] crate::producers::TableError),
    #[error("--recovery-url: {0}")]
    RecoveryUrl(#[from] crate::provider_api::ApiError),
    #[error("--api-url: {0}")]
    ApiUrl(crate::provider_api::ApiError),
    #[error("reading config {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: FileError,
    },
}

/// What is wrong with a `--config` file's contents.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Not TOML, an unknown key, or a value of the wrong type (toml's
    /// message names the key and its line).
    #[error(transparent)]
    Parse(toml::de::Error),
    /// A flag's value TOML cannot hold (a path that is not UTF-8, an
    /// integer above `i64::MAX`), so the file cannot be laid under it.
    #[error("merging the file with the flags: {0}")]
    Merge(toml::ser::Error),
}

#[cfg(test)]
mod tests;
