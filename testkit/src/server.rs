//! The server under test: a separate `touchline serve` process.
//!
//! Started on ephemeral loopback ports (`127.0.0.1:0`) with a data dir the
//! caller owns; its ports are learnt from the READY line it prints
//! ([`touchline::Ready`]); read through `/metrics` and `/proc`; stopped by
//! SIGTERM (graceful) or SIGKILL, and killed on drop so no test or bench
//! run leaves one behind. Its stderr goes to a log file, never to ours.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Metrics, Result};

/// How often [`ServerProcess::wait_metric`] scrapes `/metrics`: often enough
/// for the bench's throughput timings (seconds long), rarely enough that
/// the scraping costs the server nothing measurable.
pub const POLL: Duration = Duration::from_millis(20);

/// Bound on one `/metrics` scrape (a server under full load answers late).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start a server.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The `touchline` binary.
    pub exe: PathBuf,
    /// `--data`: the caller owns it (and removes it, or restarts on it).
    pub data: PathBuf,
    /// Where the server's stderr (its tracing output) is appended.
    pub log: PathBuf,
    /// `RUST_LOG` for the server: the tests keep `info` to read a failing
    /// test's log, the bench `warn` so logging costs nothing.
    pub rust_log: String,
    /// Flags after `serve --http 127.0.0.1:0 --feed-listen 127.0.0.1:0 --data DIR`.
    pub args: Vec<OsString>,
    /// A command the server runs under, with its arguments (`prlimit
    /// --nofile=N`, `setpriv ...`; the workspace has no unsafe code for a
    /// `pre_exec`): the server's own command line follows them. Empty:
    /// none.
    pub wrapper: Vec<OsString>,
}

impl Launch {
    /// `exe serve` on `data`, logging at `info` to `data/server.log`.
    pub fn new(exe: impl Into<PathBuf>, data: impl Into<PathBuf>) -> Launch {
        let data = data.into();
        Launch {
            exe: exe.into(),
            log: data.join("server.log"),
            data,
            rust_log: "info".to_owned(),
            args: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    pub fn log(mut self, log: impl Into<PathBuf>) -> Launch {
        self.log = log.into();
        self
    }

    pub fn rust_log(mut self, filter: &str) -> Launch {
        filter.clone_into(&mut self.rust_log);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn wrapper<I, S>(mut self, wrapper: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.wrapper.extend(wrapper.into_iter().map(Into::into));
        self
    }

    /// The server's open-file limit (`RLIMIT_NOFILE`, soft and hard), if
    /// not ours: run under `prlimit`.
    pub fn open_files(self, limit: u64) -> Launch {
        self.wrapper(["prlimit".to_owned(), format!("--nofile={limit}")])
    }

    /// Start it and wait for its READY line.
    pub fn start(self) -> Result<ServerProcess> {
        ServerProcess::start(self)
    }
}

/// A running `touchline serve`, killed on drop.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    pub http: SocketAddr,
    pub feed: SocketAddr,
    log: PathBuf,
}

impl ServerProcess {
    /// Spawn the server and wait until it has printed READY (its listeners
    /// are bound); fails if it exits first.
    pub fn start(launch: Launch) -> Result<ServerProcess> {
        if !launch.exe.is_file() {
            return Err(Error::MissingBinary(launch.exe));
        }
        if let Some(dir) = launch.log.parent() {
            std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&launch.log)
            .map_err(Error::io(format!("opening the server log {}", launch.log.display())))?;
        // The program and what comes before `serve`: the wrapper's words,
        // then the server's binary.
        let mut line: Vec<OsString> = launch.wrapper.clone();
        line.push(launch.exe.clone().into_os_string());
        let mut command = Command::new(&line[0]);
        command.args(&line[1..]);
        let mut child = command
            .args([
                "serve",
                "--http",
                "127.0.0.1:0",
                "--feed-listen",
                "127.0.0.1:0",
                "--data",
            ])
            .arg(&launch.data)
            .args(&launch.args)
            .env("RUST_LOG", &launch.rust_log)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(Error::io(format!("starting {} serve", line[0].to_string_lossy())))?;
        // The pipe is always there: stdout was asked for above.
        let stdout = child.stdout.take().expect("stdout is piped");
        let ready = touchline::Ready::wait(stdout);
        let Some((http, Some(feed))) = ready.map(|r| (r.http, r.feed)) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(match ready {
                None => Error::NotReady { log: launch.log },
                Some(_) => Error::NoFeedPort,
            });
        };
        Ok(ServerProcess {
            child,
            http,
            feed,
            log: launch.log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where its stderr goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// SIGTERM, then wait up to `timeout` for it to exit (graceful: feed
    /// stopped, workers drained, store flushed).
    pub fn terminate(mut self, timeout: Duration) -> Result<ExitStatus> {
        self.signal("TERM")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(Error::io("waiting for the server"))? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(Error::StopTimeout(timeout));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Send signal `sig` (`TERM`, `STOP`, `CONT`...) with `kill(1)`: std
    /// has no such call and the workspace denies unsafe code.
    pub fn signal(&self, sig: &str) -> Result<()> {
        let what = format!("kill -{sig} {}", self.pid());
        let sent = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .map_err(Error::io(format!("running {what}")))?;
        if !sent.success() {
            return Err(Error::Io {
                what,
                source: std::io::Error::other(format!("kill exited with {sent}")),
            });
        }
        Ok(())
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) -> Result<ExitStatus> {
        self.child.kill().map_err(Error::io("sending SIGKILL"))?;
        self.child.wait().map_err(Error::io("reaping the server"))
    }

    /// One scrape of `/metrics`.
    pub fn metrics(&self) -> Result<Metrics> {
        let (_, text) = crate::http::get(self.http, "/metrics", SCRAPE_TIMEOUT)?;
        Ok(Metrics(text))
    }

    /// Scrape `/metrics` every [`POLL`] until `name` (see
    /// [`crate::metrics::value`]) is at least `target`; returns the value.
    pub fn wait_metric(&self, name: &str, target: f64, timeout: Duration) -> Result<f64> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.metrics()?.value(name);
            if v >= target {
                return Ok(v);
            }
            if Instant::now() > deadline {
                return Err(Error::MetricTimeout {
                    name: name.to_owned(),
                    reached: v,
                    target,
                    timeout,
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Resident memory (VmRSS), bytes; 0 once it has exited.
    pub fn rss_bytes(&self) -> u64 {
        crate::procfs::rss_bytes(self.pid())
    }

    /// Its proportional set size (`procfs::pss_bytes`), bytes; `None` once
    /// it has exited or where the kernel does not tell.
    pub fn pss_bytes(&self) -> Option<u64> {
        crate::procfs::pss_bytes(self.pid())
    }

    /// Its page tables (VmPTE), bytes; 0 once it has exited.
    pub fn page_table_bytes(&self) -> u64 {
        crate::procfs::page_table_bytes(self.pid())
    }

    /// Its peak resident memory so far (VmHWM), bytes; 0 once it has exited.
    pub fn peak_rss_bytes(&self) -> u64 {
        crate::procfs::peak_rss_bytes(self.pid())
    }

    /// Bytes written through system calls so far (files and sockets); 0
    /// once it has exited.
    pub fn written_bytes(&self) -> u64 {
        crate::procfs::written_bytes(self.pid())
    }

    /// CPU time used so far (user + system), seconds; 0 once it has exited.
    pub fn cpu_seconds(&self) -> f64 {
        crate::procfs::cpu_seconds(self.pid())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_binary_is_named() {
        let err = super::Launch::new("/nonexistent/touchline", "/tmp/unused")
            .start()
            .expect_err("no such binary");
        assert!(err.to_string().contains("/nonexistent/touchline not found"), "{err}");
    }
}
