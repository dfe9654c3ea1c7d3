//! A WebSocket session's socket, shared by the session (tungstenite and the
//! [`Writer`](super::writer::Writer) write through it) and the matches,
//! which write frames to it directly ([`Direct`]) while the session holds
//! nothing to write, the way a Node server's `send` writes at once.
//!
//! The wire is the socket's write half; the connection ([`crate::listen`])
//! keeps the read half and reads without it.
//!
//! The connection owns the socket: when it is dropped it releases the
//! write half ([`Wire::release`]), so the descriptor closes then, however
//! long a match still holds the session's outbox (until its next frame).
//!
//! Every write takes the wire's lock, so writes never interleave inside a
//! frame; a match that finds the lock taken (the session is writing) does
//! not wait for it: its frame is queued. The wire is *open* to direct writes only after the session
//! opened it ([`Direct::resume`]: nothing queued, nothing of its own being
//! written); any write of the session's closes it first. A direct write the
//! socket takes only in part closes it too and leaves the frame's rest
//! here: the session's next write or flush sends that rest before anything
//! else.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::task::{Context, Poll, ready};

use prometheus_client::metrics::counter::Counter;
use tokio::io::AsyncWrite;
use tokio::net::tcp::OwnedWriteHalf;

use crate::deflate::{MAX_HEADER, Text};

use super::writer::header;
use crate::worker::{Direct, Offer, Resumed};

/// An accepted connection's write half (see the module doc).
#[derive(Debug)]
pub struct Wire {
    state: Mutex<State>,
    /// The connection negotiated `permessage-deflate`: frames go out
    /// compressed ([`Text::payload`]; a frame not compressed yet is
    /// compressed before the lock is taken, not under it).
    deflate: AtomicBool,
}

#[derive(Debug)]
struct State {
    /// `None` once the connection is gone.
    tcp: Option<OwnedWriteHalf>,
    /// Matches may write frames directly.
    open: bool,
    /// A frame a direct write began, and how many of its bytes on the
    /// wire (header included) went out.
    begun: Option<(Text, usize)>,
}

impl Wire {
    /// A socket closed to direct writes until [`Direct::resume`].
    pub fn new(tcp: OwnedWriteHalf) -> Wire {
        Wire {
            state: Mutex::new(State {
                tcp: Some(tcp),
                open: false,
                begun: None,
            }),
            deflate: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every step leaves the state whole: a poisoned lock holds
        // consistent data.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The session negotiated `permessage-deflate` (before any frame).
    pub fn set_deflate(&self, deflate: bool) {
        self.deflate.store(deflate, Ordering::Relaxed);
    }

    pub fn deflate(&self) -> bool {
        self.deflate.load(Ordering::Relaxed)
    }

    /// The connection is gone: close the socket's write half now.
    pub fn release(&self) {
        let mut st = self.lock();
        st.open = false;
        st.begun = None;
        st.tcp = None;
    }

    /// Write `text` as one frame if the wire is open and the socket takes
    /// at least part of it.
    fn offer(&self, text: &Text) -> Offer {
        let (rsv1, payload) = text.payload(self.deflate());
        let mut st = match self.state.try_lock() {
            Ok(st) => st,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            // The session is writing (so the wire is closed anyway).
            Err(TryLockError::WouldBlock) => return Offer::Refused,
        };
        let st = &mut *st;
        let (true, Some(tcp)) = (st.open, &st.tcp) else {
            return Offer::Refused;
        };
        let mut head = [0u8; MAX_HEADER];
        let h = header(rsv1, payload.len(), &mut head);
        let bufs = [IoSlice::new(&head[..h]), IoSlice::new(payload)];
        match tcp.try_write_vectored(&bufs) {
            Ok(n) if n == h + payload.len() => Offer::Sent,
            Ok(n) if n > 0 => {
                st.open = false;
                st.begun = Some((text.clone(), n));
                Offer::Begun
            }
            // Full (or failing: the session's own write meets the error).
            _ => {
                st.open = false;
                Offer::Refused
            }
        }
    }

    /// Send the rest of a frame a direct write began.
    fn finish(st: &mut State, deflate: bool, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((text, sent)) = &mut st.begun {
            let tcp = st.tcp.as_mut().ok_or(io::ErrorKind::NotConnected)?;
            let mut head = [0u8; MAX_HEADER];
            let (rsv1, payload) = text.payload(deflate);
            let h = header(rsv1, payload.len(), &mut head);
            let (a, b) = if *sent < h {
                (&head[*sent..h], payload)
            } else {
                (&[][..], &payload[*sent - h..])
            };
            let n = ready!(Pin::new(tcp).poll_write_vectored(cx, &[IoSlice::new(a), IoSlice::new(b)]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
            if *sent == h + payload.len() {
                st.begun = None;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// A write of the session's: closes the wire to direct writes and
    /// finishes a begun frame first.
    pub fn poll_write_vectored(&self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let mut st = self.lock();
        st.open = false;
        ready!(Wire::finish(&mut st, self.deflate(), cx))?;
        let tcp = st.tcp.as_mut().ok_or(io::ErrorKind::NotConnected)?;
        Pin::new(tcp).poll_write_vectored(cx, bufs)
    }

    pub fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.lock();
        Wire::finish(&mut st, self.deflate(), cx)
    }

    pub fn poll_shutdown(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.lock();
        st.open = false;
        ready!(Wire::finish(&mut st, self.deflate(), cx))?;
        match st.tcp.as_mut() {
            Some(tcp) => Pin::new(tcp).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// A session's [`Wire`] as its outbox's direct path, counting the frames
/// written on it (in `sent`, and in `direct`).
pub struct Socket {
    wire: Arc<Wire>,
    sent: Counter,
    direct: Counter,
}

impl Socket {
    pub fn new(wire: Arc<Wire>, sent: Counter, direct: Counter) -> Socket {
        Socket { wire, sent, direct }
    }
}

impl Direct for Socket {
    fn offer(&self, text: &Text) -> Offer {
        let offer = self.wire.offer(text);
        if offer != Offer::Refused {
            self.sent.inc();
            self.direct.inc();
        }
        offer
    }

    fn pause(&self) {
        self.wire.lock().open = false;
    }

    fn resume(&self) -> Resumed {
        let mut st = self.wire.lock();
        if st.begun.is_some() {
            return Resumed::Unfinished;
        }
        st.open = true;
        Resumed::Yes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::writer::Writer;
    use tokio::net::{TcpListener, TcpSocket};

    /// The session's side of a wire, as the connection gives it.
    struct Session(Arc<Wire>);

    impl AsyncWrite for Session {
        fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.0.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.0.poll_write_vectored(cx, bufs)
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.0.poll_flush(cx)
        }
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.0.poll_shutdown(cx)
        }
    }

    /// Over real sockets with small buffers: a direct write the socket
    /// takes in part closes the wire to direct writes, and the session's
    /// next write sends the frame's rest before its own frame, so the
    /// client reads both whole and in order.
    #[tokio::test]
    async fn a_frame_begun_directly_is_finished_before_the_sessions_own() {
        let listener = TcpSocket::new_v4().expect("socket");
        listener.set_recv_buffer_size(4096).expect("rcvbuf");
        listener.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let listener: TcpListener = listener.listen(8).expect("listen");
        let sender = TcpSocket::new_v4().expect("socket");
        sender.set_send_buffer_size(4096).expect("sndbuf");
        let tcp = sender
            .connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (client, _) = listener.accept().await.expect("accept");
        let (_read, write) = tcp.into_split();
        let wire = Arc::new(Wire::new(write));
        let socket = Socket::new(wire.clone(), Counter::default(), Counter::default());

        let big = Text::from("b".repeat(1 << 20));
        assert_eq!(socket.offer(&big), Offer::Refused, "closed until resumed");
        assert_eq!(socket.resume(), Resumed::Yes);
        assert_eq!(socket.offer(&big), Offer::Begun, "1 MiB does not fit in the buffers");
        assert_eq!(socket.offer(&Text::from("x")), Offer::Refused);
        assert_eq!(socket.resume(), Resumed::Unfinished);

        let reader = crate::push::writer::client_texts(client);
        let mut out = Writer::default();
        out.push(Text::from("own"));
        let mut session = Session(wire.clone());
        assert_eq!(out.write_all(&mut session).await.expect("write"), 1);
        assert_eq!(socket.resume(), Resumed::Yes, "nothing left unfinished");
        assert_eq!(socket.offer(&Text::from("after")), Offer::Sent);
        drop((socket, session, wire));
        let got = reader.await.expect("reader");
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], big.as_str());
        assert_eq!(&got[1..], ["own", "after"]);
    }
}
