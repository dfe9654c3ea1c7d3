//! Server configuration: one validated struct, built by `main` from flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Concurrent WebSocket sessions.
    pub max_sessions: usize,
    /// Journal, snapshots and recovery on (off only to measure their cost).
    pub durability: bool,
    /// Longest a journaled event waits for its group commit.
    pub commit_interval: Duration,
    /// Snapshot a match's state every this many events...
    pub snapshot_every: u64,
    /// ...or this often, whichever comes first.
    pub snapshot_interval: Duration,
    /// Idle time after which a match is durably marked clean (its epoch
    /// then survives a crash).
    pub clean_after: Duration,
    /// Idle time after which a match gives its instance back; `None`: never.
    pub hibernate_after: Option<Duration>,
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
    /// How long after the switches first-event failures still count
    /// towards `rollout_max_failed`.
    pub rollout_probation: Duration,
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
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("give --feed-listen or --feed-connect (or both): without a feed nothing happens")]
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
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            feed_listen: None,
            feed_connect: None,
            data_dir: PathBuf::from("data"),
            guest: None,
            max_matches: 10_000,
            guest_memory_bytes: 32 << 20,
            guest_call_deadline: Duration::from_millis(100),
            max_message_bytes: 4 << 20,
            max_sessions: 20_000,
            durability: true,
            commit_interval: Duration::from_millis(10),
            snapshot_every: 100,
            snapshot_interval: Duration::from_secs(10),
            clean_after: Duration::from_secs(1),
            hibernate_after: Some(Duration::from_secs(30)),
            max_failures: 3,
            failure_window: Duration::from_secs(5),
            admin_token: None,
            rollout_max_failed: 3,
            canary_matches: 8,
            rollout_concurrency: 1,
            rollout_probation: Duration::from_secs(1),
            keep_guest_versions: 8,
            native_model: false,
            min_stake: 0.1,
            max_stake: 10_000.0,
            accept_better_odds: false,
        }
    }
}

impl ServeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.feed_listen.is_none() && self.feed_connect.is_none() {
            return Err(ConfigError::NoFeed);
        }
        range("--max-matches", u64::from(self.max_matches), 1, 1_000_000)?;
        range("--guest-memory-mib", (self.guest_memory_bytes >> 20) as u64, 2, 4096)?;
        range(
            "--guest-deadline-ms",
            self.guest_call_deadline.as_millis() as u64,
            1,
            60_000,
        )?;
        range("--max-message-bytes", self.max_message_bytes as u64, 1024, 1 << 30)?;
        range("--max-sessions", self.max_sessions as u64, 1, 1_000_000)?;
        range(
            "--commit-interval-ms",
            self.commit_interval.as_millis() as u64,
            1,
            10_000,
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
