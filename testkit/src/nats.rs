//! Real `nats-server` processes for the cluster tests: one JetStream server
//! ([`NatsServer`]) or a 3-server JetStream cluster ([`NatsCluster`]), on
//! loopback, each with its own store dir, killed on drop.
//!
//! The binary is `$TOUCHLINE_NATS_SERVER` or `<workspace>/.tools/nats/bin/
//! nats-server` (`make nats` installs it); when neither exists, starting
//! fails with an error naming `make nats`: a cluster test never passes
//! without a server. Client and monitoring ports are the server's own
//! choice (`-p -1 -m -1`), learnt from the file `--ports_file_dir` writes;
//! cluster ports must be known before the servers start (each names the
//! others in `--routes`), so they are picked by binding port 0 and
//! releasing it, and a start that loses that race is retried. A restart
//! reuses the ports and the store dir, so clients reconnect to the same
//! URL and JetStream finds its data. Readiness is polled (`/healthz`, and
//! for a cluster an elected meta leader every server agrees on) against a
//! deadline: nothing sleeps to synchronise.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Bound on a server (or a whole cluster) becoming ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(10);

/// Bound on one monitoring request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

/// Attempts at starting a cluster whose picked cluster ports were taken
/// by someone else in the meantime.
const CLUSTER_ATTEMPTS: usize = 3;

/// The `nats-server` binary the tests use.
pub fn binary() -> Result<PathBuf> {
    binary_from(std::env::var_os("TOUCHLINE_NATS_SERVER"))
}

/// [`binary`] given the variable's value.
fn binary_from(var: Option<std::ffi::OsString>) -> Result<PathBuf> {
    let path = match var {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/nats/bin/nats-server"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingNatsServer(path))
    }
}

/// The ports a server listens on, fixed after its first start.
#[derive(Debug, Clone, Copy)]
struct Ports {
    client: u16,
    monitor: u16,
}

/// Cluster membership flags of one server.
#[derive(Debug, Clone)]
struct Membership {
    cluster_name: String,
    server_name: String,
    cluster_port: u16,
    /// Every member's cluster port, this one's included (a route to
    /// itself is ignored), so any member can be restarted alone.
    routes: Vec<u16>,
}

/// One `nats-server -js` child process.
#[derive(Debug)]
pub struct NatsServer {
    exe: PathBuf,
    /// Store dir (`store/`), ports files and the log; removed on drop.
    dir: tempfile::TempDir,
    /// `None` until the first start has reported them.
    ports: Option<Ports>,
    membership: Option<Membership>,
    /// `None` while killed.
    child: Option<Child>,
}

impl NatsServer {
    /// A single JetStream server on ephemeral loopback ports, ready.
    pub fn start() -> Result<NatsServer> {
        let mut server = NatsServer::new(None)?;
        server.spawn()?;
        server.wait_healthy(Instant::now() + START_TIMEOUT)?;
        Ok(server)
    }

    fn new(membership: Option<Membership>) -> Result<NatsServer> {
        let exe = binary()?;
        let dir = tempfile::Builder::new()
            .prefix("tl-nats-")
            .tempdir()
            .map_err(Error::io("creating the nats-server dir"))?;
        Ok(NatsServer {
            exe,
            dir,
            ports: None,
            membership,
            child: None,
        })
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.ports().client)
    }

    /// The monitoring endpoint (`/healthz`, `/jsz`, `/varz`).
    pub fn monitor(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports().monitor))
    }

    /// Where the server's output goes (appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn ports(&self) -> Ports {
        self.ports.expect("a started server knows its ports")
    }

    /// SIGKILL and reap: no chance to flush or to tell its peers.
    pub fn kill_9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().map_err(Error::io("sending SIGKILL to nats-server"))?;
            child.wait().map_err(Error::io("reaping nats-server"))?;
        }
        Ok(())
    }

    /// Start again on the same ports and store dir (after [`kill_9`]), and
    /// wait until it is healthy.
    ///
    /// [`kill_9`]: NatsServer::kill_9
    pub fn restart(&mut self) -> Result<()> {
        self.kill_9()?;
        self.spawn()?;
        self.wait_healthy(Instant::now() + START_TIMEOUT)
    }

    fn spawn(&mut self) -> Result<()> {
        let ports_dir = self.dir.path().join("ports");
        std::fs::create_dir_all(&ports_dir).map_err(Error::io("creating the ports dir"))?;
        let log_path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(Error::io(format!("opening {}", log_path.display())))?;
        let (client, monitor) = match self.ports {
            Some(p) => (p.client.to_string(), p.monitor.to_string()),
            None => ("-1".to_owned(), "-1".to_owned()),
        };
        let mut command = Command::new(&self.exe);
        command
            .arg("-js")
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .args(["-a", "127.0.0.1", "-p", &client, "-m", &monitor])
            .arg("--ports_file_dir")
            .arg(&ports_dir);
        if let Some(m) = &self.membership {
            let routes: Vec<String> = m.routes.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
            command
                .args(["--server_name", &m.server_name, "--cluster_name", &m.cluster_name])
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{}", m.cluster_port))
                .arg("--routes")
                .arg(routes.join(","));
        }
        let stderr = log.try_clone().map_err(Error::io("sharing the log file"))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(Error::io(format!("starting {}", self.exe.display())))?;
        let pid = child.id();
        self.child = Some(child);
        if self.ports.is_none() {
            self.ports = Some(self.read_ports_file(&ports_dir, pid, Instant::now() + START_TIMEOUT)?);
        }
        Ok(())
    }

    /// The ports the server chose, from the file it writes once it listens
    /// (`<binary name>_<pid>.ports`).
    fn read_ports_file(&mut self, dir: &Path, pid: u32, deadline: Instant) -> Result<Ports> {
        let suffix = format!("_{pid}.ports");
        loop {
            self.check_alive()?;
            let found = std::fs::read_dir(dir)
                .map_err(Error::io("listing the ports dir"))?
                .filter_map(|e| e.ok())
                .find(|e| e.file_name().to_string_lossy().ends_with(&suffix));
            // The file may be seen half-written: read until it parses.
            if let Some(ports) = found
                .and_then(|e| std::fs::read_to_string(e.path()).ok())
                .and_then(|text| parse_ports(&text))
            {
                return Ok(ports);
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!("nats-server's ports file in {}", dir.display())));
            }
            std::thread::sleep(POLL);
        }
    }

    /// An error naming the log if the process has exited.
    fn check_alive(&mut self) -> Result<()> {
        let exited = match self.child.as_mut() {
            None => true,
            Some(c) => c.try_wait().map_err(Error::io("polling nats-server"))?.is_some(),
        };
        if exited {
            self.child = None;
            return Err(Error::NatsExited { log: self.log_path() });
        }
        Ok(())
    }

    /// Poll `/healthz` until 200 (JetStream up; in a cluster also a meta
    /// leader known and its streams current).
    fn wait_healthy(&mut self, deadline: Instant) -> Result<()> {
        loop {
            self.check_alive()?;
            if matches!(crate::http::get(self.monitor(), "/healthz", HTTP_TIMEOUT), Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "nats-server /healthz on {} (log {})",
                    self.monitor(),
                    self.log_path().display()
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The meta leader's server name as this server sees it (`/jsz`).
    fn meta_leader(&self) -> Option<String> {
        let (status, body) = crate::http::get(self.monitor(), "/jsz", HTTP_TIMEOUT).ok()?;
        if status != 200 {
            return None;
        }
        let jsz: serde_json::Value = serde_json::from_str(&body).ok()?;
        let leader = jsz.get("meta_cluster")?.get("leader")?.as_str()?;
        (!leader.is_empty()).then(|| leader.to_owned())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.kill_9();
    }
}

fn parse_ports(text: &str) -> Option<Ports> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let port = |key: &str| -> Option<u16> {
        let url = v.get(key)?.as_array()?.first()?.as_str()?;
        url.rsplit(':').next()?.parse().ok()
    };
    Some(Ports {
        client: port("nats")?,
        monitor: port("monitoring")?,
    })
}

/// Three JetStream servers in one cluster on loopback.
#[derive(Debug)]
pub struct NatsCluster {
    servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Size of the cluster: the smallest that keeps a quorum (2) with one
    /// server down, so R3 streams go on.
    pub const SIZE: usize = 3;

    /// Start the servers and wait until every one is healthy and they agree
    /// on an elected meta leader.
    pub fn start() -> Result<NatsCluster> {
        let mut last = None;
        for _ in 0..CLUSTER_ATTEMPTS {
            match Self::try_start() {
                Ok(cluster) => return Ok(cluster),
                // Most likely a picked cluster port was taken meanwhile.
                Err(e @ Error::NatsExited { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn try_start() -> Result<NatsCluster> {
        let cluster_ports = free_ports(Self::SIZE)?;
        let mut servers = Vec::with_capacity(Self::SIZE);
        for (i, &cluster_port) in cluster_ports.iter().enumerate() {
            servers.push(NatsServer::new(Some(Membership {
                cluster_name: "tl-test".to_owned(),
                server_name: format!("n{i}"),
                cluster_port,
                routes: cluster_ports.clone(),
            }))?);
        }
        for s in &mut servers {
            s.spawn()?;
        }
        let mut cluster = NatsCluster { servers };
        cluster.wait_ready(Instant::now() + START_TIMEOUT)?;
        Ok(cluster)
    }

    /// Every running server healthy, and all of them naming the same meta
    /// leader.
    fn wait_ready(&mut self, deadline: Instant) -> Result<()> {
        for s in self.servers.iter_mut().filter(|s| s.child.is_some()) {
            s.wait_healthy(deadline)?;
        }
        loop {
            let leaders: Vec<Option<String>> = self
                .servers
                .iter()
                .filter(|s| s.child.is_some())
                .map(NatsServer::meta_leader)
                .collect();
            if leaders.iter().all(|l| l.is_some() && *l == leaders[0]) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "a meta leader all servers agree on (saw {leaders:?})"
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Every server's client URL (give a client all of them).
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    pub fn server(&self, i: usize) -> &NatsServer {
        &self.servers[i]
    }

    /// SIGKILL server `i`.
    pub fn kill_9(&mut self, i: usize) -> Result<()> {
        self.servers[i].kill_9()
    }

    /// Start server `i` again on its ports and store, and wait until the
    /// cluster is ready again.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.servers[i].kill_9()?;
        self.servers[i].spawn()?;
        self.wait_ready(Instant::now() + START_TIMEOUT)
    }

    /// Kill every server with -9, one after the other, then start them all
    /// again on their ports and stores (the whole cluster restarting), and
    /// wait until the cluster is ready again.
    pub fn restart_all(&mut self) -> Result<()> {
        for s in &mut self.servers {
            s.kill_9()?;
        }
        for s in &mut self.servers {
            s.spawn()?;
        }
        self.wait_ready(Instant::now() + START_TIMEOUT)
    }
}

/// `n` distinct free loopback ports: bound together (so distinct), then
/// released for a server to take.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").map_err(Error::io("binding a free port")))
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(Error::io("reading a bound port"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_binary_names_make_nats() {
        let err = super::binary_from(Some("/nonexistent/nats-server".into())).expect_err("no such binary");
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/nats-server") && text.contains("make nats"),
            "{text}"
        );
    }

    #[test]
    fn the_ports_file_is_read() {
        let p = super::parse_ports(r#"{"nats":["nats://127.0.0.1:37415"],"monitoring":["http://127.0.0.1:42953"]}"#)
            .expect("parses");
        assert_eq!((p.client, p.monitor), (37415, 42953));
        assert!(super::parse_ports(r#"{"nats":["nats://127.0.0.1:1"#).is_none());
    }
}
