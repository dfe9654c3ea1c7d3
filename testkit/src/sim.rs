//! `touchline simulate` as a child process: the feed and the provider's
//! API (recoveries, faults) on ephemeral loopback ports, killed on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Error, Result};

#[derive(Debug)]
pub struct SimProcess {
    child: Child,
    pub feed: SocketAddr,
    pub api: SocketAddr,
}

impl SimProcess {
    /// `exe simulate --listen 127.0.0.1:0 --api-listen 127.0.0.1:0 ARGS`,
    /// its log appended to `log`; waits for its `SIMULATOR` line.
    pub fn start(exe: &Path, args: &[&str], log: &Path) -> Result<SimProcess> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(Error::io(format!("opening the simulator log {}", log.display())))?;
        let mut child = Command::new(exe)
            .args(["simulate", "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(Error::io(format!("starting {} simulate", exe.display())))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let listening = lines
            .by_ref()
            .map_while(std::result::Result::ok)
            .find_map(|l| touchline::sim::Listening::parse(&l));
        // Keep draining, so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let Some(l) = listening else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::BadResponse("the simulator exited before its SIMULATOR line"));
        };
        Ok(SimProcess {
            child,
            feed: l.feed,
            api: l.api,
        })
    }

    /// What to give the server as `--recovery-url`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// `POST` a control route (`/control/fault?...`): (status, body).
    pub fn control(&self, path_and_query: &str) -> Result<(u16, String)> {
        crate::http::request(self.api, "POST", path_and_query, &[], b"", Duration::from_secs(10))
    }

    /// The recovery requests received so far (`GET /control/requests`, JSON).
    pub fn requests(&self) -> Result<String> {
        Ok(crate::http::get(self.api, "/control/requests", Duration::from_secs(10))?.1)
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
