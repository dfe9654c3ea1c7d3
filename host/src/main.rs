//! The `touchline` binary: CLI, tracing, signals → ordered shutdown.
//!
//! Subcommands: `serve` (the server), `simulate` (a feed server), `demo`
//! (both, the simulator feeding the server over loopback TCP; `make run`),
//! `swap` (the admin API's client for hot-swapping guest versions).
//! Errors end here as `anyhow` with their whole chain printed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use touchline::ServeConfig;
use touchline::sim::SimConfig;

#[derive(Parser)]
#[command(
    name = "touchline",
    version,
    about = "Live odds from a feed to browsers, one WebAssembly instance per match"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Run the feed simulator (a TCP feed server).
    Simulate {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        #[command(flatten)]
        sim: SimArgs,
    },
    /// Hot-swap the match logic of a running server: install FILE (a guest
    /// component) and roll it out to every match, roll back to the previous
    /// version, or list the installed versions. Prints the server's JSON
    /// report; fails unless the server did it.
    Swap {
        /// The server's HTTP address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        /// The server's admin token.
        #[arg(long, env = "TOUCHLINE_ADMIN_TOKEN", hide_env_values = true)]
        token: String,
        /// Return every match to the previous version.
        #[arg(long, conflicts_with_all = ["file", "list"])]
        rollback: bool,
        /// Show installed versions and which matches run which.
        #[arg(long, conflicts_with = "file")]
        list: bool,
        /// Guest component to install.
        #[arg(required_unless_present_any = ["rollback", "list"])]
        file: Option<PathBuf>,
    },
    /// Run the simulator and the server fed by it over loopback TCP.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        #[command(flatten)]
        sim: SimArgs,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// TOML file with any of these settings, named like the flags
    /// (`max-matches = 5000`); flags and environment variables win over it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// HTTP + WebSocket address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Accept feed connections on this address.
    #[arg(long)]
    feed_listen: Option<SocketAddr>,
    /// Dial a feed server at HOST:PORT, reconnecting with backoff.
    #[arg(long)]
    feed_connect: Option<String>,
    /// Data directory (sled).
    #[arg(long, default_value = "./data")]
    data: PathBuf,
    /// Guest component to run instead of the built-in one.
    #[arg(long)]
    guest: Option<PathBuf>,
    /// Matches live at once (pooling allocator slots).
    #[arg(long, default_value_t = 10_000)]
    max_matches: u32,
    /// Linear memory cap per match, MiB.
    #[arg(long, default_value_t = 32)]
    guest_memory_mib: usize,
    /// Time budget of one guest call, ms.
    #[arg(long, default_value_t = 100)]
    guest_deadline_ms: u64,
    /// Largest feed message accepted, bytes.
    #[arg(long, default_value_t = 4 << 20)]
    max_message_bytes: usize,
    /// Concurrent WebSocket sessions.
    #[arg(long, default_value_t = 20_000)]
    max_sessions: usize,
    /// Run without journal, snapshots or recovery (only to measure their cost).
    #[arg(long)]
    no_durability: bool,
    /// Longest a journaled event waits for its group commit, ms.
    #[arg(long, default_value_t = 10)]
    commit_interval_ms: u64,
    /// Snapshot a match every this many events...
    #[arg(long, default_value_t = 100)]
    snapshot_every: u64,
    /// ...or this often (ms), whichever comes first.
    #[arg(long, default_value_t = 10_000)]
    snapshot_interval_ms: u64,
    /// Idle time (ms) after which a match is durably marked clean, so its
    /// stream epoch survives a crash. Lower (down to the commit interval)
    /// proves continuity sooner but costs an fsync before the first push
    /// after each quiet period.
    #[arg(long, default_value_t = 1000)]
    clean_after_ms: u64,
    /// Idle time (ms) after which a match gives its Wasm instance back and
    /// keeps only its state (0 = never); the next event restores it.
    #[arg(long, default_value_t = 30_000)]
    hibernate_after_ms: u64,
    /// Restart intensity: more than this many guest failures...
    #[arg(long, default_value_t = 3)]
    max_failures: u32,
    /// ...within this window (ms) quarantines the match.
    #[arg(long, default_value_t = 5000)]
    failure_window_ms: u64,
    /// Run the match model compiled into the host, without Wasm (benchmark
    /// baseline only: no isolation, no limits).
    #[arg(long, hide = true)]
    native_model: bool,
    /// Smallest stake accepted.
    #[arg(long, default_value_t = 0.1)]
    min_stake: f64,
    /// Largest stake accepted.
    #[arg(long, default_value_t = 10_000.0)]
    max_stake: f64,
    /// Accept a bet when the current odds are better for the bettor than offered.
    #[arg(long)]
    accept_better_odds: bool,
    /// Bearer token for /admin/* (at least 16 characters); unset disables them.
    #[arg(long, env = "TOUCHLINE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// A guest rollout aborts, returning every match to the old version,
    /// when more matches than this fail to switch or fail their first event.
    #[arg(long, default_value_t = 3)]
    rollout_max_failed: usize,
    /// Matches whose stored state and recent journal a new guest replays in
    /// scratch instances before it touches live matches (0 = no canary).
    #[arg(long, default_value_t = 8)]
    canary_matches: usize,
    /// Matches switching to a new guest at once. One at a time measured
    /// both fastest overall and gentlest on update latency on 2 cores
    /// (parallel switches were slower; not profiled, likely allocation contention).
    #[arg(long, default_value_t = 1)]
    rollout_concurrency: usize,
    /// After a rollout's switches, how long (ms) first-event failures still
    /// count towards --rollout-max-failed (a switched match that fails its
    /// first event later still goes back on its own).
    #[arg(long, default_value_t = 1000)]
    rollout_probation_ms: u64,
    /// Guest versions kept in the store (at least 2); after an install the
    /// oldest that no match runs, and that are neither active nor previous,
    /// are removed.
    #[arg(long, default_value_t = 8)]
    keep_guest_versions: usize,
}

#[derive(Args, Clone)]
struct SimArgs {
    /// Matches played at once.
    #[arg(long, default_value_t = 12)]
    matches: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Messages per second per connection (0 = unpaced).
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
    /// Stop after this many messages per connection (0 = never).
    #[arg(long, default_value_t = 0)]
    count: u64,
}

impl From<SimArgs> for SimConfig {
    fn from(a: SimArgs) -> SimConfig {
        SimConfig {
            matches: a.matches,
            seed: a.seed,
            rate: a.rate,
            count: a.count,
        }
    }
}

/// Settings from `--config`, named like the flags.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    http: Option<SocketAddr>,
    feed_listen: Option<SocketAddr>,
    feed_connect: Option<String>,
    data: Option<PathBuf>,
    guest: Option<PathBuf>,
    max_matches: Option<u32>,
    guest_memory_mib: Option<usize>,
    guest_deadline_ms: Option<u64>,
    max_message_bytes: Option<usize>,
    max_sessions: Option<usize>,
    no_durability: Option<bool>,
    commit_interval_ms: Option<u64>,
    snapshot_every: Option<u64>,
    snapshot_interval_ms: Option<u64>,
    clean_after_ms: Option<u64>,
    hibernate_after_ms: Option<u64>,
    max_failures: Option<u32>,
    failure_window_ms: Option<u64>,
    min_stake: Option<f64>,
    max_stake: Option<f64>,
    accept_better_odds: Option<bool>,
    admin_token: Option<String>,
    rollout_max_failed: Option<usize>,
    canary_matches: Option<usize>,
    rollout_concurrency: Option<usize>,
    rollout_probation_ms: Option<u64>,
    keep_guest_versions: Option<usize>,
}

/// Fill settings not given as flags (or environment) from `--config`.
fn apply_config_file(args: &mut ServeArgs, matches: &ArgMatches) -> anyhow::Result<()> {
    let Some(path) = args.config.clone() else { return Ok(()) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading config {}", path.display()))?;
    let file: FileConfig = toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
    let from_file = |id: &str| {
        !matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    macro_rules! take {
        ($($field:ident),* $(,)?) => {$(
            if from_file(stringify!($field)) && let Some(v) = file.$field {
                args.$field = v;
            }
        )*};
    }
    macro_rules! take_some {
        ($($field:ident),* $(,)?) => {$(
            if from_file(stringify!($field)) && let Some(v) = file.$field {
                args.$field = Some(v);
            }
        )*};
    }
    take!(
        http,
        data,
        max_matches,
        guest_memory_mib,
        guest_deadline_ms,
        max_message_bytes,
        max_sessions,
        no_durability,
        commit_interval_ms,
        snapshot_every,
        snapshot_interval_ms,
        clean_after_ms,
        hibernate_after_ms,
        max_failures,
        failure_window_ms,
        min_stake,
        max_stake,
        accept_better_odds,
        rollout_max_failed,
        canary_matches,
        rollout_concurrency,
        rollout_probation_ms,
        keep_guest_versions,
    );
    take_some!(feed_listen, feed_connect, guest, admin_token);
    Ok(())
}

impl From<ServeArgs> for ServeConfig {
    fn from(a: ServeArgs) -> ServeConfig {
        ServeConfig {
            http: a.http,
            feed_listen: a.feed_listen,
            feed_connect: a.feed_connect,
            data_dir: a.data,
            guest: a.guest,
            max_matches: a.max_matches,
            guest_memory_bytes: a.guest_memory_mib << 20,
            guest_call_deadline: Duration::from_millis(a.guest_deadline_ms),
            max_message_bytes: a.max_message_bytes,
            max_sessions: a.max_sessions,
            durability: !a.no_durability,
            commit_interval: Duration::from_millis(a.commit_interval_ms),
            snapshot_every: a.snapshot_every,
            snapshot_interval: Duration::from_millis(a.snapshot_interval_ms),
            clean_after: Duration::from_millis(a.clean_after_ms),
            hibernate_after: (a.hibernate_after_ms > 0).then(|| Duration::from_millis(a.hibernate_after_ms)),
            max_failures: a.max_failures,
            failure_window: Duration::from_millis(a.failure_window_ms),
            admin_token: a.admin_token,
            rollout_max_failed: a.rollout_max_failed,
            canary_matches: a.canary_matches,
            rollout_concurrency: a.rollout_concurrency,
            rollout_probation: Duration::from_millis(a.rollout_probation_ms),
            keep_guest_versions: a.keep_guest_versions,
            native_model: a.native_model,
            min_stake: a.min_stake,
            max_stake: a.max_stake,
            accept_better_odds: a.accept_better_odds,
        }
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,touchline=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches)
        .map_err(anyhow::Error::from)
        .and_then(|mut cli| {
            if let Command::Serve(args) = &mut cli.command
                && let Some(sub) = matches.subcommand_matches("serve")
            {
                apply_config_file(args, sub)?;
            }
            Ok(cli)
        }) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args.into()).await,
        Command::Simulate { listen, sim } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            println!("SIMULATOR feed={}", listener.local_addr()?);
            let stop = CancellationToken::new();
            let task = tokio::spawn(touchline::sim::serve(listener, sim.into(), stop.clone()));
            signal().await?;
            stop.cancel();
            let _ = task.await;
            Ok(())
        }
        Command::Swap {
            http,
            token,
            rollback,
            list,
            file,
        } => {
            let (method, path, body) = match (file, rollback, list) {
                (Some(f), _, _) => {
                    let bytes = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
                    (hyper::Method::POST, "/admin/guest", bytes)
                }
                (None, true, _) => (hyper::Method::POST, "/admin/guest/rollback", Vec::new()),
                (None, false, _) => (hyper::Method::GET, "/admin/guest", Vec::new()),
            };
            let (status, text) = touchline::http::admin_request(http, method, path, &token, body).await?;
            println!("{text}");
            anyhow::ensure!(status.is_success(), "{path}: HTTP {status}");
            Ok(())
        }
        Command::Demo { http, data, sim } => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .context("binding the simulator")?;
            let feed = listener.local_addr()?;
            let stop = CancellationToken::new();
            tokio::spawn(touchline::sim::serve(listener, sim.into(), stop.clone()));
            let config = ServeConfig {
                http,
                feed_connect: Some(feed.to_string()),
                data_dir: data,
                ..ServeConfig::default()
            };
            let result = serve(config).await;
            stop.cancel();
            result
        }
    }
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let server = touchline::Server::start(config).await?;
    // Tests and scripts read this line for the bound (maybe ephemeral) ports.
    let ready = touchline::Ready {
        http: server.http_addr,
        feed: server.feed_addr,
    };
    println!("{}", ready.line(&server.guest_version));
    println!("Touchline is live: open http://{}/", server.http_addr);
    signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await
}

/// Wait for Ctrl-C or SIGTERM.
async fn signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
