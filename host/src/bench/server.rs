//! The server under test: a separate `touchline serve` process.
//!
//! Started from the bench's own executable on ephemeral loopback ports with
//! a temporary data dir; read through its `/metrics` and `/proc`. Killed on
//! drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

pub struct ServerProc {
    child: Child,
    pub http: SocketAddr,
    pub feed: SocketAddr,
    pub data: PathBuf,
}

impl ServerProc {
    /// Start `touchline serve` with `extra` flags on `data`.
    pub fn start(data: &Path, extra: &[String]) -> anyhow::Result<ServerProc> {
        let exe = std::env::current_exe().context("locating the touchline executable")?;
        let log = std::fs::File::create(data.with_extension("log")).context("server log file")?;
        // Extra flags for every server of a run, for experiments
        // (e.g. TOUCHLINE_BENCH_SERVER_ARGS="--clean-after-ms 2000").
        let common: Vec<String> = std::env::var("TOUCHLINE_BENCH_SERVER_ARGS")
            .map(|v| v.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let mut child = Command::new(exe)
            .args([
                "serve",
                "--http",
                "127.0.0.1:0",
                "--feed-listen",
                "127.0.0.1:0",
                "--data",
            ])
            .arg(data)
            .args(&common)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting touchline serve")?;
        let stdout = child.stdout.take().context("server stdout")?;
        let Some(ready) = crate::Ready::wait(stdout) else {
            bail!(
                "server exited before it was ready; see {}",
                data.with_extension("log").display()
            )
        };
        let feed = ready.feed.context("the server reported no feed port")?;
        Ok(ServerProc {
            http: ready.http,
            feed,
            child,
            data: data.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait (graceful: everything flushed).
    pub fn stop(mut self) -> anyhow::Result<()> {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("server did not stop within 120 s")
    }

    pub fn metrics(&self) -> anyhow::Result<Metrics> {
        let mut s = TcpStream::connect(self.http)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(Metrics(text))
    }

    /// Poll `/metrics` until `name` reaches `target`; returns when it did.
    pub fn wait_metric(&self, name: &str, target: f64, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.metrics()?.value(name);
            if v >= target {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!("{name} reached only {v} of {target} within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory (VmRSS), bytes.
    pub fn rss(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:") * 1024
    }

    /// CPU time used so far (user + system), seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are
        // fields 14 and 15 (1-based), in clock ticks (100 per second on Linux).
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
        (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A `/metrics` scrape.
pub struct Metrics(pub String);

impl Metrics {
    /// Sum of a metric over its label sets; `name` may end inside the label
    /// set (`touchline_bets_total{decision="accepted"`) to sum a subset.
    pub fn value(&self, name: &str) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with(' ') || r.starts_with('{') || r.starts_with(','))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Quantile `q` of a histogram from its cumulative buckets (upper bound
    /// of the bucket holding it: resolution is the bucket factor, 1.25).
    pub fn quantile(&self, name: &str, q: f64) -> Option<f64> {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, f64)> = self
            .0
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|r| {
                let (le, rest) = r.split_once("\"} ")?;
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
                Some((le, rest.trim().parse().ok()?))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = buckets.last()?.1;
        if total == 0.0 {
            return None;
        }
        buckets.iter().find(|(_, c)| *c >= q * total).map(|(le, _)| *le)
    }
}
