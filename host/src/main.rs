//! The `touchline` binary: CLI, tracing, signals → ordered shutdown.
//!
//! Subcommands: `serve` (the server), `simulate` (a feed server), `demo`
//! (both, the simulator feeding the server over loopback TCP; `make run`),
//! `swap` (the admin API's client for hot-swapping guest versions).
//! Errors end here as `anyhow` with their whole chain printed.

mod allocator;

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr as _;

use anyhow::Context as _;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use touchline::ServeConfig;
use touchline::config::ServeArgs;
use touchline::sim::{FaultAt, FaultScript, SimConfig, Simulator};

#[derive(Parser)]
#[command(
    name = "touchline",
    version,
    about = "Live odds from a feed to browsers, one WebAssembly instance per match"
)]
struct Cli {
    /// Log lines on stderr: `text` (coloured only on a terminal) or `json`
    /// (one object per line, for a log shipper).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TOUCHLINE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Log to stderr in `format`, filtered by `RUST_LOG` (default `info`).
/// Text carries colour codes only when stderr is a terminal, so a log file
/// has none.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,touchline=info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Run the feed simulator (a TCP feed server and the provider's HTTP
    /// API); prints `SIMULATOR feed=ADDR api=http://ADDR`.
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
    /// Run the simulator and the server fed by it over loopback TCP (the
    /// server takes every `serve` setting but --feed-connect).
    Demo {
        #[command(flatten)]
        server: ServeArgs,
        #[command(flatten)]
        sim: SimArgs,
    },
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
    /// The provider's HTTP API (recovery requests, fault injection).
    #[arg(long, default_value = "127.0.0.1:0")]
    api_listen: SocketAddr,
    /// Inject a fault AT seconds after the first feed connection
    /// (repeatable): stop_alive:PRODUCT:SECONDS@AT, delay:PRODUCT:SECONDS@AT,
    /// unsubscribed:PRODUCT@AT or drop@AT. Producers: 1 (LO), 3 (Ctrl).
    #[arg(long = "fault", value_name = "KIND[:PRODUCT][:SECONDS]@AT", value_parser = FaultAt::from_str)]
    faults: Vec<FaultAt>,
    /// Play the --fault script again every SECS seconds.
    #[arg(long, value_name = "SECS", requires = "faults")]
    fault_every: Option<u64>,
}

impl SimArgs {
    /// Bind the simulator's feed port (`feed`) and API port.
    async fn bind(self, feed: SocketAddr) -> anyhow::Result<Simulator> {
        let script = FaultScript::new(self.faults.clone(), self.fault_every)?;
        let api = self.api_listen;
        Simulator::bind(feed, api, self.into(), script)
            .await
            .with_context(|| format!("binding the simulator (feed {feed}, API {api})"))
    }
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

fn main() -> std::process::ExitCode {
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    allocator::tune();
    if let Err(e) = allocator::spawn_purger() {
        eprintln!("error: starting the heap purger: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(allocator::on_park)
        // Only workers unpark: the blocking pool stays ordinary.
        .on_thread_unpark(|| touchline::realtime::follow(touchline::realtime::Role::Serving))
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // demo dials its own simulator: its --feed-connect is refused, so not shown.
    let matches = Cli::command()
        .mut_subcommand("demo", |demo| demo.mut_arg("feed_connect", |arg| arg.hide(true)))
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    init_logging(cli.log_format);
    // `serve` and `demo` read which settings the command line or the
    // environment gave from their subcommand's matches.
    let (_, sub) = matches.subcommand().expect("clap requires a subcommand");
    touchline::exit_report(runtime.block_on(run(cli, sub)))
}

async fn run(cli: Cli, sub: &ArgMatches) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args.resolve(sub)?.into_config()?, None).await,
        Command::Simulate { listen, sim } => {
            let simulator = sim.bind(listen).await?;
            // Tests and scripts read this line for the bound (maybe ephemeral) ports.
            println!("{}", simulator.listening()?.line());
            let stop = CancellationToken::new();
            let task = tokio::spawn(simulator.run(stop.clone()));
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
        Command::Demo { server, sim } => {
            let mut settings = server.resolve(sub)?;
            anyhow::ensure!(
                settings.feed_connect.is_none(),
                "demo feeds the server from its own simulator: --feed-connect (flag or config file) is for serve"
            );
            // The HTTP port first: a taken one fails before anything starts.
            let http = touchline::bind_http(settings.http).await?;
            let simulator = sim.bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            let listening = simulator.listening()?;
            settings.feed_connect = Some(listening.feed.to_string());
            let api_url = listening.api_url();
            // The simulator is the provider: recoveries and market
            // descriptions are asked of its API.
            if settings.api_url.is_none() && settings.recovery_url.is_none() {
                settings.api_url = Some(api_url.clone());
            }
            let config = settings.into_config()?;
            println!("{}", listening.line());
            println!("Simulator API: {api_url}");
            let stop = CancellationToken::new();
            tokio::spawn(simulator.run(stop.clone()));
            let result = serve(config, Some(http)).await;
            stop.cancel();
            result
        }
    }
}

async fn serve(config: ServeConfig, http: Option<tokio::net::TcpListener>) -> anyhow::Result<()> {
    let console = config.admin_token.is_some();
    let server = touchline::Server::start_on(config, http).await?;
    // Tests and scripts read this line for the bound (maybe ephemeral) ports.
    let ready = touchline::Ready {
        http: server.http_addr,
        feed: server.feed_addr,
    };
    println!("{}", ready.line(&server.guest_version));
    println!("Touchline is live: open http://{}/", server.http_addr);
    if console {
        println!(
            "Operator console: http://{}/ops (log in with the admin token)",
            server.http_addr
        );
    }
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
