//! One accepted HTTP connection's place in the [`Table`]: the shared
//! [`Registry`], the [`Slot`] a connection holds until its socket is
//! dropped, and [`Conn`], the socket carrying its slot.
//!
//! The socket is a [`Wire`]: once the connection is a WebSocket session,
//! the matches it subscribes to write frames to it directly.
//!
//! The slot travels inside the socket, so a connection upgraded to a
//! WebSocket session keeps its place (per address and in all) until the
//! session drops it, long after hyper is done with the connection.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio_util::sync::CancellationToken;

use crate::push::wire::Wire;

use super::table::{Id, Refused, Table};
use crate::metrics::Metrics;

/// The table, shared by the accept loop and every connection.
pub struct Registry {
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
}

struct Inner {
    table: Table,
    /// Fired to close a connection the table evicted.
    evict: std::collections::HashMap<Id, CancellationToken>,
}

impl Registry {
    pub fn new(max: usize, per_ip: usize, metrics: Arc<Metrics>) -> Registry {
        Registry {
            inner: Mutex::new(Inner {
                table: Table::new(max, per_ip),
                evict: std::collections::HashMap::new(),
            }),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The table's transitions leave it whole at every step: a panic
        // elsewhere while it was held leaves nothing half-done.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Take a connection from `ip` in, closing the one waiting longest if
    /// the table is full (then `true`).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<(Arc<Slot>, bool), Refused> {
        let mut inner = self.lock();
        let admitted = inner.table.admit(ip)?;
        if let Some(victim) = admitted.evicted {
            inner.fire(victim);
            self.metrics.http_evicted.inc();
        }
        let token = CancellationToken::new();
        inner.evict.insert(admitted.id, token.clone());
        self.metrics.http_connections.set(inner.table.len() as i64);
        let slot = Arc::new(Slot {
            id: admitted.id,
            evicted: token,
            registry: self.clone(),
        });
        Ok((slot, admitted.evicted.is_some()))
    }

    /// Close the connection waiting longest for a request (descriptors ran
    /// out); `false` if none is waiting.
    pub fn evict_oldest(&self) -> bool {
        let mut inner = self.lock();
        let Some(victim) = inner.table.evict() else {
            return false;
        };
        inner.fire(victim);
        self.metrics.http_evicted.inc();
        true
    }

    fn release(&self, id: Id) {
        let mut inner = self.lock();
        inner.table.release(id);
        inner.evict.remove(&id);
        self.metrics.http_connections.set(inner.table.len() as i64);
    }
}

impl Inner {
    fn fire(&mut self, id: Id) {
        if let Some(token) = self.evict.get(&id) {
            token.cancel();
        }
    }
}

/// A connection's place in the table, given back when the last holder (its
/// socket, its service) drops it.
pub struct Slot {
    id: Id,
    /// Cancelled when the table evicts this connection.
    evicted: CancellationToken,
    registry: Arc<Registry>,
}

impl Slot {
    /// Fires when this connection is to be closed to make room.
    pub fn evicted(&self) -> CancellationToken {
        self.evicted.clone()
    }

    /// A request head arrived.
    pub fn busy(&self) {
        self.registry.lock().table.busy(self.id);
    }

    /// The response is ready (a 101: the connection is now a session).
    pub fn done(&self, upgraded: bool) {
        self.registry.lock().table.done(self.id, upgraded);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.release(self.id);
    }
}

/// An accepted socket holding its slot: the read half, and the write
/// half as a [`Wire`].
pub struct Conn {
    read: OwnedReadHalf,
    wire: Arc<Wire>,
    _slot: Arc<Slot>,
}

impl Conn {
    pub fn new(tcp: TcpStream, slot: Arc<Slot>) -> Conn {
        // Frames are written whole, gathered; Nagle would only hold a
        // frame's last segment back until the client acknowledges the
        // previous one (up to its delayed-ACK time).
        let _ = tcp.set_nodelay(true);
        let (read, write) = tcp.into_split();
        Conn {
            read,
            wire: Arc::new(Wire::new(write)),
            _slot: slot,
        }
    }

    /// The write half, for a WebSocket session's direct writes.
    pub fn wire(&self) -> Arc<Wire> {
        self.wire.clone()
    }
}

impl Drop for Conn {
    /// The socket closes with the connection, though a match may still
    /// hold its write half (in the session's outbox) until its next frame.
    fn drop(&mut self) {
        self.wire.release();
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.wire.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.wire.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.wire.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.wire.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::{Direct, Resumed};
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::AsyncReadExt as _;
    use tokio::net::TcpListener;

    /// A session's outbox may keep the wire (a match holds the outbox until
    /// its next frame): the socket still closes with the connection, and
    /// the wire takes nothing more.
    #[tokio::test]
    async fn the_socket_closes_with_the_connection_whoever_holds_its_wire() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, peer) = listener.accept().await.expect("accept");
        let registry = Arc::new(Registry::new(8, 8, Arc::new(Metrics::new())));
        let (slot, _) = registry.admit(peer.ip()).expect("admitted");
        let conn = Conn::new(server, slot);
        let socket = crate::push::wire::Socket::new(conn.wire(), Counter::default(), Counter::default());
        assert_eq!(socket.resume(), Resumed::Yes);
        drop(conn);
        let mut rest = Vec::new();
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), client.read_to_end(&mut rest)).await;
        assert_eq!(read.expect("EOF, not a hang").expect("read"), 0);
        let frame = crate::deflate::Text::from("late");
        assert_eq!(socket.offer(&frame), crate::worker::Offer::Refused);
    }
}
