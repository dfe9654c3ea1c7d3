//! [`ServeConfig`]: what the server runs on, in its own units, and its
//! validation ([`ServeConfig::validate`], the one place settings are
//! checked; error names are the flags). Built by `Settings::into_config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;

/// What the server runs on, in its own units; built by [`Settings::into_config`].
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// HTTP + WebSocket listen address.
    pub http: SocketAddr,
    /// Accept feed connections here.
    pub feed_listen: Option<SocketAddr>,
    /// Or dial a feed server here (reconnecting with backoff).
    pub feed_connect: Option<String>,
    /// Where sled keeps its files.
    pub data_dir: PathBuf,
    /// A guest component to run instead of the embedded default.
    pub guest: Option<PathBuf>,
    /// Matches that can be live at once (pooling allocator slots).
    pub max_matches: u32,
    /// Linear memory cap per match instance.
    pub guest_memory_bytes: usize,
    /// Time budget of one guest call.
    pub guest_call_deadline: Duration,
    /// Largest feed message accepted.
    pub max_message_bytes: usize,
    /// Quiet time after which a partial feed message is dropped.
    pub feed_stall: Duration,
    /// Concurrent WebSocket sessions.
    pub max_sessions: usize,
    /// Open HTTP connections per source address.
    pub max_connections_per_ip: usize,
    /// Open HTTP connections in all; `None`: from the open-file limit.
    pub max_connections: Option<usize>,
    /// Time a connection has to send a request head (and to upgrade).
    pub header_timeout: Duration,
    /// What one WebSocket session may make the server hold or do.
    pub session_budget: crate::push::Budget,
    /// Accept `permessage-deflate` when a WebSocket client offers it.
    pub ws_deflate: bool,
    /// Journal, snapshots and recovery on (off only to measure their cost).
    pub durability: bool,
    /// Longest a journaled event waits for its group commit.
    pub commit_interval: Duration,
    /// Free bytes kept on the data dir's disk (0: not checked).
    pub store_reserve: u64,
    /// Bytes the store may cache (sled's cache capacity).
    pub store_cache: u64,
    /// Snapshot a match's state every this many events...
    pub snapshot_every: u64,
    /// ...or this often, whichever comes first.
    pub snapshot_interval: Duration,
    /// Idle time after which a match is durably marked clean (its epoch
    /// then survives a crash).
    pub clean_after: Duration,
    /// Idle time after which a match gives its instance back; `None`: never.
    pub hibernate_after: Option<Duration>,
    /// Idle time after which a live match gives its instance back but
    /// keeps its buffers (`worker::nap`); `None`: never.
    pub nap_after: Option<Duration>,
    /// Restart intensity: more than this many failures...
    pub max_failures: u32,
    /// ...within this window quarantines the match.
    pub failure_window: Duration,
    /// Bearer token for `/admin/*`; without one the admin routes are 404.
    pub admin_token: Option<String>,
    /// A rollout aborts (every match back on the old guest) when more
    /// matches than this fail to switch or fail their first event.
    pub rollout_max_failed: usize,
    /// Matches the canary replays through a new guest before a rollout.
    pub canary_matches: usize,
    /// Matches switching at once during a rollout.
    pub rollout_concurrency: usize,
    /// A rollout pauses (`guests::ROLLOUT_PAUSE`) once its switches have
    /// taken this long (their workers' time) since the last pause; zero:
    /// never.
    pub rollout_slice: Duration,
    /// How long after the switches first-event failures still count
    /// towards `rollout_max_failed`.
    pub rollout_probation: Duration,
    /// The serving threads' `SCHED_FIFO` priority; 0: ordinary
    /// ([`crate::realtime`]).
    pub realtime_priority: u8,
    /// Guest versions kept installed (at least 2: active and previous).
    pub keep_guest_versions: usize,
    /// Smallest and largest stake accepted.
    pub min_stake: f64,
    pub max_stake: f64,
    /// Accept a bet when the current odds are better for the bettor.
    pub accept_better_odds: bool,
    /// Run the match model compiled into the host instead of the guest
    /// (no Wasm, no limits): only to measure what Wasm costs.
    pub native_model: bool,
    /// Producer ids this deployment uses.
    pub producers: Vec<u32>,
    /// The producer table, if not the built-in one.
    pub producers_file: Option<PathBuf>,
    /// Alive timeout, lag limit and recovery timers.
    pub producer_timing: crate::producers::Timing,
    /// The provider's recovery API (`--recovery-url`, else `--api-url`).
    pub recovery_url: Option<String>,
    /// Its access token (recoveries and reference data).
    pub recovery_token: Option<String>,
    /// The provider's API, for market descriptions.
    pub api_url: Option<String>,
    /// Market descriptions from files instead.
    pub descriptions_files: Vec<PathBuf>,
    /// Names in frames (and fixtures fetched for them).
    pub names: bool,
    /// The cluster this node joins (`--cluster`); `None`: a single node.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Where this node's clients reach it, advertised to the cluster
    /// (`None`: `http://` and the bound HTTP address).
    pub advertise_url: Option<String>,
}

impl ServeConfig {
    /// The one place settings are checked; error names are the flags.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // A cluster node may read no feed: it applies the partitions it
        // owns from the cluster's stream.
        if self.feed_listen.is_none() && self.feed_connect.is_none() && self.cluster.is_none() {
            return Err(ConfigError::NoFeed);
        }
        range("--max-matches", u64::from(self.max_matches), 1, 1_000_000)?;
        range("--guest-memory-mib", (self.guest_memory_bytes >> 20) as u64, 2, 4096)?;
        range("--store-cache-mib", self.store_cache >> 20, 1, 1 << 20)?;
        range(
            "--guest-deadline-ms",
            self.guest_call_deadline.as_millis() as u64,
            1,
            60_000,
        )?;
        range("--max-message-bytes", self.max_message_bytes as u64, 1024, 1 << 30)?;
        range("--feed-stall-ms", self.feed_stall.as_millis() as u64, 100, 3_600_000)?;
        range("--max-sessions", self.max_sessions as u64, 1, 1_000_000)?;
        range(
            "--max-connections-per-ip",
            self.max_connections_per_ip as u64,
            1,
            1_000_000,
        )?;
        if let Some(max) = self.max_connections {
            range("--max-connections", max as u64, 1, 1_000_000)?;
        }
        range(
            "--header-timeout-ms",
            self.header_timeout.as_millis() as u64,
            100,
            600_000,
        )?;
        let b = &self.session_budget;
        range("--ws-max-message-bytes", b.max_message_bytes as u64, 1024, 16 << 20)?;
        range("--ws-pings-per-sec", u64::from(b.pings_per_sec), 1, 1_000_000)?;
        range("--ws-ping-burst", u64::from(b.ping_burst), 1, 1_000_000)?;
        if b.read_bytes_per_sec != 0 && range("--ws-read-bytes-per-sec", b.read_bytes_per_sec, 1024, 1 << 30).is_err() {
            return Err(ConfigError::ZeroOrRange {
                name: "--ws-read-bytes-per-sec",
                min: 1024,
                max: 1 << 30,
                got: b.read_bytes_per_sec,
            });
        }
        range("--ws-read-burst-bytes", b.read_burst_bytes, 1024, 1 << 30)?;
        range("--max-subscriptions", b.max_subscriptions as u64, 1, 1_000_000)?;
        range("--max-pending-subscriptions", b.max_pending as u64, 0, 1_000_000)?;
        range(
            "--commit-interval-ms",
            self.commit_interval.as_millis() as u64,
            1,
            10_000,
        )?;
        range(
            "--realtime-priority",
            u64::from(self.realtime_priority),
            0,
            u64::from(crate::realtime::MAX_PRIORITY),
        )?;
        range("--snapshot-every", self.snapshot_every, 1, 1_000_000)?;
        range(
            "--snapshot-interval-ms",
            self.snapshot_interval.as_millis() as u64,
            10,
            3_600_000,
        )?;
        range("--clean-after-ms", self.clean_after.as_millis() as u64, 1, 3_600_000)?;
        range("--max-failures", u64::from(self.max_failures), 1, 1000)?;
        range(
            "--failure-window-ms",
            self.failure_window.as_millis() as u64,
            1,
            3_600_000,
        )?;
        // Each switch in flight holds two instances: stay within the pool's slack.
        range(
            "--rollout-concurrency",
            self.rollout_concurrency as u64,
            1,
            u64::from(crate::sandbox::POOL_SLACK / 4),
        )?;
        range(
            "--rollout-slice-us",
            self.rollout_slice.as_micros() as u64,
            0,
            10_000_000,
        )?;
        range("--keep-guest-versions", self.keep_guest_versions as u64, 2, 1000)?;
        range(
            "--rollout-probation-ms",
            self.rollout_probation.as_millis() as u64,
            0,
            600_000,
        )?;
        range(
            "--canary-matches",
            self.canary_matches as u64,
            0,
            u64::from(crate::sandbox::POOL_SLACK / 4),
        )?;
        if !(self.min_stake.is_finite()
            && self.min_stake > 0.0
            && self.max_stake.is_finite()
            && self.max_stake >= self.min_stake)
        {
            return Err(ConfigError::StakeLimits);
        }
        if self.admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::WeakToken);
        }
        let t = &self.producer_timing;
        range("--alive-timeout", t.alive_timeout.as_secs(), 10, 180)?;
        if let Some(d) = t.max_feed_delay {
            range("--max-feed-delay", d.as_secs(), 1, 3600)?;
        }
        range("--recovery-min-interval", t.recovery_min_interval.as_secs(), 1, 3600)?;
        range("--recovery-timeout", t.recovery_timeout.as_secs(), 1, 86_400)?;
        if self.producers_file.is_none() {
            crate::producers::Table::default().select(&self.producers)?;
        }
        if let Some(url) = &self.recovery_url {
            crate::provider_api::Endpoint::parse(url, None)?;
        }
        if let Some(c) = &self.cluster {
            for url in &c.urls {
                url.parse::<async_nats::ServerAddr>()
                    .map_err(|e| ConfigError::ClusterUrl {
                        url: url.clone(),
                        reason: e.to_string(),
                    })?;
            }
            range("--lease-ttl-ms", c.lease_ttl.as_millis() as u64, 300, 60_000)?;
            range("--cluster-replicas", c.replicas as u64, 1, 5)?;
            range("--partitions", u64::from(c.partitions.count()), 1, 4096)?;
        }
        if let Some(url) = &self.api_url {
            crate::provider_api::Endpoint::parse(url, None).map_err(ConfigError::ApiUrl)?;
        }
        Ok(())
    }
}

fn range(name: &'static str, got: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&got) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange { name, min, max, got })
    }
}
