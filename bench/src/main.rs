//! `touchline-bench`: the pipeline measured against its baselines, side by
//! side, in one run (`make bench`, `make bench-quick`).
//!
//! This process is the load generator; every server it measures is a
//! separate release `touchline serve` ([`touchline_testkit::ServerProcess`])
//! reached over loopback TCP and WebSocket ([`load`]). The scenarios are in
//! [`scenarios`] (the fan-out measurement in [`fanout`], the Node.js peer
//! it is compared with in [`peer`]), the table and the latency plot in
//! [`report`]; the density scenario in [`density`]; the cluster's (nodes
//! on a real nats-server) in [`cluster`];
//! `bench/README.md` explains what each figure means. Errors end here as
//! `anyhow` with their whole chain printed.

mod cluster;
mod density;
mod fanout;
mod load;
mod names;
mod peer;
mod producers;
mod report;
mod scenarios;
mod sizes;
mod swap;
mod targets;

use std::path::PathBuf;

use clap::Parser;

/// The server `make build` leaves in the workspace's target dir.
const DEFAULT_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/touchline");

#[derive(Parser)]
#[command(
    name = "touchline-bench",
    version,
    about = "Measure a release `touchline serve` against its baselines (`make bench`)"
)]
struct Cli {
    /// The under-a-minute version.
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where to write the JSON (the latency plot goes next to it as .svg).
    #[arg(long, default_value = "bench/results/latest.json")]
    out: PathBuf,
    /// Run only these scenarios (parse, pipeline, fanout, density,
    /// faults, bets, producers, names, swap, cluster), when iterating on
    /// one of them.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The `touchline` binary to measure. The fault-injection and v2 guests
    /// are taken from the target dir it was built in (`make build` puts
    /// them there).
    #[arg(long, env = "TOUCHLINE_BENCH_SERVER", default_value = DEFAULT_SERVER)]
    server: PathBuf,
    /// Fan-out client counts instead of the run's (e.g. `5000` for an A/B
    /// or a profile of one size).
    #[arg(long, value_delimiter = ',')]
    fanout_clients: Vec<usize>,
    /// Seconds of fed fan-out instead of the run's (4 quick, 20 full).
    #[arg(long)]
    fanout_seconds: Option<f64>,
    /// Pipeline match counts instead of the run's (e.g. `1000` for an A/B
    /// or a profile of one size).
    #[arg(long, value_delimiter = ',')]
    pipeline_matches: Vec<u32>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli)));
    touchline::exit_report(result)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    anyhow::ensure!(
        cli.server.is_file(),
        "no server binary at {}: build it first (`make build`, or `cargo build --release -p touchline`) \
         or name another with --server / TOUCHLINE_BENCH_SERVER",
        cli.server.display()
    );
    // Extra flags for every server of a run, for experiments
    // (e.g. TOUCHLINE_BENCH_SERVER_ARGS="--clean-after-ms 2000").
    let common = std::env::var("TOUCHLINE_BENCH_SERVER_ARGS")
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    scenarios::run(scenarios::Plan {
        quick: cli.quick,
        seed: cli.seed,
        out: cli.out,
        only: cli.only,
        fanout_clients: cli.fanout_clients,
        fanout_seconds: cli.fanout_seconds,
        pipeline_matches: cli.pipeline_matches,
        servers: scenarios::Servers {
            exe: cli.server,
            common,
        },
    })
    .await
}
