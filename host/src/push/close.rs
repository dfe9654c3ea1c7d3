//! Ending a session: the close frame the server owes the client, then a
//! short, bounded linger so the client can read it.
//!
//! A client still sending when the server closes (an oversized message, a
//! ping flood) would otherwise have its connection reset under it: a socket
//! closed with unread input sends RST, and the client's kernel may throw
//! away the close frame it had not read yet (the client then reports 1005
//! or 1006 instead of the code it was sent). So after a close frame the
//! server shuts its side (FIN) and reads and discards the client's input
//! until the client closes too, for at most [`CLOSE_LINGER`] and
//! [`LINGER_BYTES`]. It never waits on a client that does not read: the
//! close frame itself is bounded by [`WRITE_TIMEOUT`].

use std::time::Duration;

use futures_util::SinkExt as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::session::WRITE_TIMEOUT;

/// Longest the server reads a closed session's input, waiting for the
/// client to close its side.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Most bytes of a closed session's input read (and discarded) meanwhile:
/// enough for a client to finish sending a message many times over the
/// size limit and still read why it was closed.
pub const LINGER_BYTES: u64 = 16 << 20;

/// Close the session: with `frame` when the server ends it (then linger),
/// or by finishing the closing handshake the client started (`None`).
pub(super) async fn close<S>(mut ws: WebSocketStream<S>, frame: Option<CloseFrame>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(frame) = frame else {
        let _ = timeout(WRITE_TIMEOUT, ws.close(None)).await;
        return;
    };
    let code = u16::from(frame.code);
    if !matches!(
        timeout(WRITE_TIMEOUT, ws.send(Message::Close(Some(frame)))).await,
        Ok(Ok(()))
    ) {
        return; // the client reads nothing: there is nothing to wait for
    }
    let raw = ws.get_mut();
    let lingered = timeout(CLOSE_LINGER, async {
        let _ = raw.shutdown().await;
        let mut discard = tokio::io::sink();
        tokio::io::copy(&mut (&mut *raw).take(LINGER_BYTES), &mut discard).await
    })
    .await;
    tracing::debug!(code, ?lingered, "websocket session closed by the server");
}
