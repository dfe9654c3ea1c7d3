//! What the integration tests and the benchmark share to drive a real
//! `touchline serve`: one launcher, one `/metrics` reader, one HTTP client.
//!
//! - [`server`]: [`ServerProcess`], the server as a child process on
//!   ephemeral loopback ports, its READY line, SIGTERM / SIGKILL, and its
//!   RSS and CPU time read from `/proc`.
//! - [`procfs`]: CPU time, RSS and peak RSS of any process (or `self`)
//!   from `/proc`.
//! - [`metrics`]: the Prometheus text reader (a value by name and labels,
//!   a histogram quantile).
//! - [`http`]: a minimal blocking HTTP/1.1 client.
//! - [`sim`]: `touchline simulate` as a child process (feed + provider API).
//! - [`provider`]: the feed provider's recovery API (records requests),
//!   and bringing a server's producers up from a test's feed connection.
//! - [`nats`]: real `nats-server` processes (one JetStream server, or a
//!   3-server cluster) for the cluster tests: kill -9, restart.
//! - [`nodes`]: who holds which partition, as a cluster node's
//!   `/api/nodes` tells, and waiting until that settles.
//!
//! Errors are typed ([`Error`]): the tests turn them into panics, the bench
//! into `anyhow` errors. Nothing here knows which binary it runs: the caller
//! passes its path (`CARGO_BIN_EXE_touchline` in the tests, a flag in the
//! bench).

pub mod http;
pub mod metrics;
pub mod nats;
pub mod nodes;
pub mod procfs;
pub mod provider;
pub mod server;
pub mod sim;

use std::path::PathBuf;
use std::time::Duration;

pub use metrics::Metrics;
pub use nats::{NatsCluster, NatsServer};
pub use server::{Launch, ServerProcess};

/// What can go wrong driving a server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("server binary {0} not found (build it first: `make build`)")]
    MissingBinary(PathBuf),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nats-server not found at {0} (install it with `make nats`, or set TOUCHLINE_NATS_SERVER)")]
    MissingNatsServer(PathBuf),
    #[error("nats-server exited; its log is {log}")]
    NatsExited { log: PathBuf },
    #[error("the server exited before it printed READY; its log is {log}")]
    NotReady { log: PathBuf },
    #[error("the server reported no feed port")]
    NoFeedPort,
    #[error("the server did not exit within {0:?} of SIGTERM")]
    StopTimeout(Duration),
    #[error("{name} reached only {reached} of {target} within {timeout:?}")]
    MetricTimeout {
        name: String,
        reached: f64,
        target: f64,
        timeout: Duration,
    },
    #[error("timed out waiting for {0}")]
    Timeout(String),
    #[error("malformed HTTP response: {0}")]
    BadResponse(&'static str),
}

impl Error {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
