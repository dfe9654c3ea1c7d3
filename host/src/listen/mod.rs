//! The HTTP port's accept loop: which connections are taken in, how long
//! one may take to send a request head, and what happens when descriptors
//! run out. The routes are `http`'s; this module only serves them.
//!
//! - Per source address at most `--max-connections-per-ip` connections
//!   (WebSocket sessions included); more are closed as they are accepted.
//! - In all at most `--max-connections` (default: the open-file limit less
//!   [`descriptors::FD_RESERVE`]); past it a new connection closes the one
//!   that has waited longest for a request ([`table`]), or is closed itself
//!   when every connection is busy or a session.
//! - A request head (a WebSocket upgrade request too) must arrive within
//!   `--header-timeout-ms` of the accept or of the previous response
//!   (hyper's `header_read_timeout`): slow or idle connections are closed.
//! - When accepts fail for want of descriptors anyway, the connection
//!   waiting longest is closed, or else the newest one is shed through a
//!   reserve descriptor, and accepting pauses (5 ms doubling to 1 s): the
//!   listener stays alive and `/healthz` is answered again as soon as a
//!   descriptor is free.
//!
//! It never reads a request body or writes a response itself, except the
//! best-effort 503 of a connection refused at accept.

pub mod conn;
pub mod descriptors;
pub mod table;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::conn::{Conn, Registry, Slot};
use self::table::Refused;
use crate::metrics::{Kind, Metrics};

/// What the accept loop enforces (from the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub per_ip: usize,
    pub header_timeout: Duration,
}

/// What a connection refused at accept is sent, if its socket takes it at
/// once (it is closed either way).
const REFUSED: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 21\r\n\r\ntoo many connections\n";

/// Serve `app` on `listener` until `stop`; then stop accepting, let each
/// connection finish its request in flight, and return.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let registry = Arc::new(Registry::new(limits.max_connections, limits.per_ip, metrics.clone()));
    let tasks = TaskTracker::new();
    let mut reserve = descriptors::Reserve::open();
    let mut backoff = descriptors::Backoff::default();
    // Failed accepts are logged at most once a second (they come in runs).
    let (mut last_warned, mut failed) = (None::<std::time::Instant>, 0u64);
    tracing::info!(
        max_connections = limits.max_connections,
        per_ip = limits.per_ip,
        header_timeout_ms = limits.header_timeout.as_millis() as u64,
        "HTTP connection limits"
    );
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let error = match accepted {
            Ok((tcp, peer)) => {
                backoff.reset();
                match registry.admit(peer.ip()) {
                    Ok((slot, evicted)) => {
                        let conn = Connection {
                            tcp,
                            peer,
                            slot,
                            app: app.clone(),
                            header_timeout: limits.header_timeout,
                            metrics: metrics.clone(),
                        };
                        tasks.spawn(conn.run(stop.clone()));
                        if evicted {
                            // Let the evicted connection close before the
                            // next accept takes another descriptor.
                            tokio::task::yield_now().await;
                        }
                    }
                    Err(refused) => shed(tcp, refused, &metrics, peer),
                }
                continue;
            }
            Err(e) => e,
        };
        if matches!(
            error.kind(),
            std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
        ) {
            continue; // the client gave up before we took it: nothing to do
        }
        let exhausted = descriptors::exhausted(&error);
        let kind = if exhausted { "descriptors" } else { "other" };
        metrics.http_accept_errors.get_or_create(&Kind { kind }).inc();
        let evicted = exhausted && registry.evict_oldest();
        let shed = exhausted && !evicted && reserve.shed(&listener);
        let pause = backoff.pause();
        failed += 1;
        if last_warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            last_warned = Some(std::time::Instant::now());
            tracing::warn!(error = %error, kind, evicted, shed, failed, pause_ms = pause.as_millis() as u64, "accepting HTTP connections fails");
            failed = 0;
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// Close a connection refused at accept, telling it why if its socket
/// takes the answer at once.
fn shed(tcp: TcpStream, refused: Refused, metrics: &Metrics, peer: std::net::SocketAddr) {
    metrics.http_refused.get_or_create(&Kind { kind: refused.kind() }).inc();
    tracing::debug!(%peer, reason = %refused, "HTTP connection refused");
    let _ = tcp.try_write(REFUSED);
}

/// One accepted connection, served by hyper.
struct Connection {
    tcp: TcpStream,
    peer: std::net::SocketAddr,
    slot: Arc<Slot>,
    app: axum::Router,
    header_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Connection {
    /// Serve requests until the client leaves, the connection is upgraded
    /// (the session then holds the socket and its slot), its head does not
    /// come in time, it is evicted, or `stop` (the request in flight, if
    /// any, is finished first).
    async fn run(self, stop: CancellationToken) {
        let peer = self.peer;
        let evicted = self.slot.evicted();
        let slot = self.slot.clone();
        let app = TowerToHyperService::new(self.app);
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let (slot, app) = (slot.clone(), app.clone());
            // The client's address, for handlers that limit per address.
            let mut req = req;
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            async move {
                slot.busy();
                let response: Result<_, Infallible> = hyper::service::Service::call(&app, req).await;
                if let Ok(r) = &response {
                    slot.done(r.status() == hyper::StatusCode::SWITCHING_PROTOCOLS);
                }
                response
            }
        });
        let io = TokioIo::new(Conn::new(self.tcp, self.slot));
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout);
        let conn = builder.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = evicted.cancelled() => return, // dropping it closes the socket
            () = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        match result {
            Err(e) if e.is_timeout() => {
                self.metrics.http_header_timeouts.inc();
                tracing::debug!("HTTP connection closed: no request head in time");
            }
            Err(e) => tracing::debug!(error = %e, "HTTP connection ended with an error"),
            Ok(()) => {}
        }
    }
}
