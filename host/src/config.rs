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
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("give --feed-listen or --feed-connect (or both): without a feed nothing happens")]
    NoFeed,
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
