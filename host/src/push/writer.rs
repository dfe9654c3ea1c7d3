//! Writing text frames to a WebSocket client without copying them.
//!
//! A server's frames are not masked, so a frame on the wire is a header of
//! 2 to 10 bytes followed by the payload as it is. The writer sends the
//! header and the shared frame buffer ([`Utf8Bytes`], serialised once for
//! every subscriber) side by side in one vectored write, gathering up to
//! [`MAX_FRAMES_PER_WRITE`] queued frames per system call, where a library
//! would copy each frame into a per-connection output buffer first. It
//! holds only references to the frames, so a client that is behind costs
//! its queue of references, not a buffer of copies.
//!
//! On a connection that negotiated `permessage-deflate` a frame goes out
//! compressed (RSV1 set) with the bytes every such connection shares
//! ([`Text::payload`]).
//!
//! tungstenite keeps the rest of the protocol (reading client frames,
//! pongs, the closing handshake): the session flushes what tungstenite
//! queued (a pong) before writing here, so the two never interleave within
//! a frame.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use tokio::io::{AsyncWrite, AsyncWriteExt as _};

use crate::deflate::{MAX_HEADER, Text, frame_header};

/// Frames gathered into one vectored write (two slices each, well under
/// the kernel's `IOV_MAX` of 1024).
pub const MAX_FRAMES_PER_WRITE: usize = 64;

/// Frames waiting for the client, in order.
#[derive(Debug, Default)]
pub struct Writer {
    queue: VecDeque<Text>,
    /// The connection negotiated `permessage-deflate`.
    deflate: bool,
    /// Bytes of the first queued frame (header and payload) already sent.
    sent: usize,
}

impl Writer {
    pub fn new(deflate: bool) -> Writer {
        Writer {
            deflate,
            ..Writer::default()
        }
    }

    pub fn push(&mut self, text: Text) {
        self.queue.push_back(text);
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Forget every queued frame but one partly written (its rest must go
    /// out before anything else is written on the connection).
    pub fn keep_partial(&mut self) {
        self.queue.truncate(usize::from(self.sent > 0));
    }

    /// Write every queued frame; returns how many were written.
    pub async fn write_all<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> io::Result<u64> {
        let mut frames = 0;
        while !self.queue.is_empty() {
            let n = {
                let mut heads = [[0u8; MAX_HEADER]; MAX_FRAMES_PER_WRITE];
                let mut slices = [IoSlice::new(&[]); 2 * MAX_FRAMES_PER_WRITE];
                let mut used = 0;
                let mut skip = self.sent;
                for (text, head) in self.queue.iter().zip(heads.iter_mut()) {
                    let (rsv1, payload) = text.payload(self.deflate);
                    let used_head = header(rsv1, payload.len(), head);
                    let head = &head[..used_head];
                    for part in [head, payload] {
                        if skip >= part.len() {
                            skip -= part.len();
                            continue;
                        }
                        slices[used] = IoSlice::new(&part[skip..]);
                        skip = 0;
                        used += 1;
                    }
                }
                io.write_vectored(&slices[..used]).await?
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            frames += self.advance(n);
        }
        io.flush().await?;
        // A burst leaves a large queue behind: give it back.
        if self.queue.capacity() > 4 * MAX_FRAMES_PER_WRITE {
            self.queue = VecDeque::new();
        }
        Ok(frames)
    }

    /// `n` more bytes went out: drop the frames they completed.
    fn advance(&mut self, n: usize) -> u64 {
        let mut left = self.sent + n;
        let mut done = 0;
        while let Some(front) = self.queue.front() {
            let whole = frame_len(front.payload(self.deflate).1.len());
            if left < whole {
                break;
            }
            left -= whole;
            self.queue.pop_front();
            done += 1;
        }
        self.sent = left;
        done
    }
}

/// A final text frame's header for a payload of `len` bytes, unmasked,
/// compressed (RSV1, RFC 7692 §6) if `rsv1`; returns its length.
pub(super) fn header(rsv1: bool, len: usize, out: &mut [u8; MAX_HEADER]) -> usize {
    // FIN, (RSV1,) text
    frame_header(if rsv1 { 0xc1 } else { 0x81 }, false, len as u64, out)
}

/// Bytes a frame of `len` payload bytes takes on the wire.
fn frame_len(len: usize) -> usize {
    len + header(false, len, &mut [0; MAX_HEADER])
}

/// A WebSocket client on `io` collecting every text frame it reads until
/// the stream ends (tests of the writers).
#[cfg(test)]
pub(super) fn client_texts<S>(io: S) -> tokio::task::JoinHandle<Vec<String>>
where
    S: tokio::io::AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use futures_util::StreamExt as _;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;
    tokio::spawn(async move {
        let mut ws = WebSocketStream::from_raw_socket(io, Role::Client, None).await;
        let mut got = Vec::new();
        while let Some(Ok(Message::Text(t))) = ws.next().await {
            got.push(t.as_str().to_owned());
        }
        got
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    fn texts() -> Vec<String> {
        [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000, 3]
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let c = char::from(b'a' + i as u8);
                c.to_string().repeat(n)
            })
            .collect()
    }

    /// Frames written through a pipe of 7 bytes (every write partial) are
    /// what a WebSocket client reads, in order.
    #[tokio::test]
    async fn a_client_reads_every_frame_whatever_the_partial_writes() {
        let (mut server, client) = tokio::io::duplex(7);
        let sent = texts();
        let mut writer = Writer::default();
        for t in &sent {
            writer.push(Text::from(t.clone()));
        }
        let reader = client_texts(client);
        assert_eq!(writer.write_all(&mut server).await.expect("write"), sent.len() as u64);
        assert!(writer.is_empty());
        drop(server);
        assert_eq!(reader.await.expect("reader"), sent);
    }

    /// On a connection that negotiated `permessage-deflate`, frames large
    /// enough go out compressed (fewer bytes on the wire) and a client
    /// that inflates them reads every one as it was, through partial
    /// writes.
    #[tokio::test]
    async fn a_deflate_client_reads_every_frame_compressed_or_not() {
        let sent: Vec<String> = (0..20)
            .map(|i| {
                format!(
                    "{{\"seq\":{i},\"markets\":[{}]}}",
                    "{\"id\":1,\"odds\":\"2.10\"},".repeat(i * 10)
                )
            })
            .collect();
        let plain_bytes: usize = sent.iter().map(|t| frame_len(t.len())).sum();
        let mut writer = Writer::new(true);
        for t in &sent {
            writer.push(Text::from(t.clone()));
        }
        let (mut server, client) = tokio::io::duplex(7);
        let (io, _) = crate::deflate::inflate::Inflating::new(client, Vec::new(), true, 1 << 20);
        let (counted, mut tap) = tokio::io::duplex(1 << 20);
        let reader = client_texts(io);
        let copy = tokio::spawn(async move {
            let mut wire = Vec::new();
            tap.read_to_end(&mut wire).await.expect("read");
            wire.len()
        });
        assert_eq!(writer.write_all(&mut server).await.expect("write"), sent.len() as u64);
        drop(server);
        assert_eq!(reader.await.expect("reader"), sent);
        // The same frames once more, to count their bytes on the wire.
        let mut again = Writer::new(true);
        for t in &sent {
            again.push(Text::from(t.clone()));
        }
        let mut counted = counted;
        again.write_all(&mut counted).await.expect("write");
        drop(counted);
        let wire_bytes = copy.await.expect("tap");
        assert!(wire_bytes * 5 < plain_bytes, "{wire_bytes} of {plain_bytes} bytes");
    }

    /// More frames than one vectored write takes all go out, and the wire
    /// length is the header plus the payload.
    #[tokio::test]
    async fn many_small_frames_are_gathered_and_all_written() {
        let (mut server, mut client) = tokio::io::duplex(1 << 20);
        let mut writer = Writer::default();
        let n = 3 * MAX_FRAMES_PER_WRITE + 5;
        for i in 0..n {
            writer.push(Text::from(format!("{i:03}")));
        }
        assert_eq!(writer.write_all(&mut server).await.expect("write"), n as u64);
        drop(server);
        let mut wire = Vec::new();
        client.read_to_end(&mut wire).await.expect("read");
        assert_eq!(wire.len(), n * (2 + 3));
        assert_eq!(&wire[..5], &[0x81, 3, b'0', b'0', b'0']);
    }

    #[test]
    fn headers_use_the_shortest_length_encoding() {
        let head = |len| {
            let mut h = [0; MAX_HEADER];
            let n = header(false, len, &mut h);
            h[..n].to_vec()
        };
        assert_eq!(head(125), [0x81, 125]);
        assert_eq!(head(126), [0x81, 126, 0, 126]);
        assert_eq!(head(65_536), [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(frame_len(70_000), 70_010);
    }

    /// A write cut off mid-frame leaves the frame's rest to finish, and
    /// only that, before anything else goes out.
    #[tokio::test(start_paused = true)]
    async fn after_a_cut_only_the_rest_of_the_partial_frame_goes_out() {
        let (mut server, mut client) = tokio::io::duplex(100);
        let mut writer = Writer::default();
        writer.push(Text::from("x".repeat(150)));
        writer.push(Text::from("y".repeat(10)));
        let cut = tokio::time::timeout(std::time::Duration::from_millis(50), writer.write_all(&mut server)).await;
        assert!(cut.is_err(), "the pipe holds 100 bytes: the write blocks");
        writer.keep_partial();
        let reader = tokio::spawn(async move {
            let mut wire = Vec::new();
            client.read_to_end(&mut wire).await.expect("read");
            wire
        });
        assert_eq!(writer.write_all(&mut server).await.expect("write"), 1);
        drop(server);
        let wire = reader.await.expect("reader");
        assert_eq!(wire.len(), 4 + 150, "the first frame whole, the second never");
    }
}
