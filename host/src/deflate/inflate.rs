//! Compressed messages inflated below tungstenite, which does not know the
//! extension (it refuses any frame with RSV1 set).
//!
//! [`Inflater`] is a sans-IO filter over the bytes a peer sends: frames
//! pass through as they are, except a compressed message (RSV1 on its
//! first frame), whose fragments it gathers and inflates and hands on as
//! one uncompressed frame (FIN, RSV1 clear, masked with a zero key where
//! the peer masked, so the bytes are the payload itself). Control frames
//! between the fragments pass at once, as they came.
//!
//! Bounded: a message whose compressed or inflated size passes `max`
//! comes out as a frame header claiming `max + 1` bytes, so tungstenite
//! refuses it as too big (the session closes with 1009, as for any message
//! over the budget) and nothing larger is held. Anything the extension
//! forbids (RSV1 on a continuation or a control frame, a new message
//! inside a fragmented one, data that does not inflate) comes out as a
//! frame with RSV1 set, which tungstenite refuses as a protocol error.
//! After either, the filter passes nothing more.
//!
//! [`Inflating`] runs the filter over a stream's reads (writes pass by).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, ReadBuf};

use super::{MAX_HEADER, TAIL, frame_header};

/// The filter (see the module doc).
#[derive(Debug)]
pub struct Inflater {
    max: usize,
    /// Bytes received and not yet taken (a header's first part).
    input: Vec<u8>,
    /// Bytes for the reader, from `out_at` on.
    out: Vec<u8>,
    out_at: usize,
    /// The frame whose payload is arriving.
    frame: Option<Payload>,
    /// A compressed message being gathered.
    message: Option<Message>,
    /// A bad or oversized message was handed on; nothing more is.
    ended: bool,
}

#[derive(Debug)]
struct Payload {
    left: u64,
    /// Gathered into the message (with this mask, at this offset), or
    /// passed on as it is.
    gather: Option<([u8; 4], usize)>,
    fin: bool,
}

#[derive(Debug)]
struct Message {
    opcode: u8,
    masked: bool,
    data: Vec<u8>,
}

impl Inflater {
    /// A filter for messages of at most `max` bytes, compressed or not.
    pub fn new(max: usize) -> Inflater {
        Inflater {
            max,
            input: Vec::new(),
            out: Vec::new(),
            out_at: 0,
            frame: None,
            message: None,
            ended: false,
        }
    }

    /// Take bytes from the peer and filter them, up to the end of the
    /// first compressed message they complete ([`Inflater::pump`]).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.ended {
            return;
        }
        if self.input.is_empty() {
            // Filtered where they are; only what is left is kept.
            let used = self.take(bytes);
            if !self.ended {
                self.input.extend_from_slice(&bytes[used..]);
            }
        } else {
            self.input.extend_from_slice(bytes);
            self.pump();
        }
    }

    /// Filter what is held, up to the end of the first compressed message
    /// it completes, so what is ready for the reader holds at most one
    /// inflated message (whatever the number of small compressed ones one
    /// read brought); whether anything was taken.
    pub fn pump(&mut self) -> bool {
        let input = std::mem::take(&mut self.input);
        let used = self.take(&input);
        if !self.ended && used < input.len() {
            self.input = input;
            self.input.drain(..used);
        }
        // Otherwise `input` goes, and its buffer with it: an idle session
        // keeps none.
        used > 0
    }

    /// Whether the filter has ended (see the module doc): what follows is
    /// not filtered.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Filter what `bytes` hold, up to the end of the first compressed
    /// message they complete; returns how many were taken (the rest is the
    /// first part of a frame header, or follows that message).
    fn take(&mut self, bytes: &[u8]) -> usize {
        let mut at = 0;
        // A frame whose payload has all come (an empty one just read too)
        // is done even with no byte left.
        while !self.ended && (at < bytes.len() || self.frame.as_ref().is_some_and(|p| p.left == 0)) {
            let Some(mut p) = self.frame.take() else {
                match self.header(&bytes[at..]) {
                    Some(used) => at += used,
                    None => break,
                }
                continue;
            };
            let n = (bytes.len() - at).min(usize::try_from(p.left).unwrap_or(usize::MAX));
            let chunk = &bytes[at..at + n];
            match (&mut p.gather, &mut self.message) {
                (Some((mask, offset)), Some(m)) => {
                    m.data
                        .extend(chunk.iter().enumerate().map(|(i, b)| b ^ mask[(*offset + i) % 4]));
                    *offset += n;
                }
                _ => self.out.extend_from_slice(chunk),
            }
            at += n;
            p.left -= n as u64;
            if p.left > 0 {
                self.frame = Some(p);
            } else if p.gather.is_some() && p.fin {
                self.finish();
                break;
            }
        }
        at
    }

    /// Bytes ready for the reader.
    pub fn ready(&self) -> &[u8] {
        &self.out[self.out_at..]
    }

    /// The reader took `n` of them.
    pub fn consume(&mut self, n: usize) {
        self.out_at += n;
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
            if self.out.capacity() > 8 * 1024 {
                self.out = Vec::new();
            }
        }
    }

    /// Read a frame header from the front of `bytes`; its length, or
    /// `None` until it has arrived whole.
    fn header(&mut self, bytes: &[u8]) -> Option<usize> {
        let (&b0, &b1) = (bytes.first()?, bytes.get(1)?);
        let masked = b1 & 0x80 != 0;
        let (len, ext) = match b1 & 0x7f {
            126 => (u64::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?)), 2),
            127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?), 8),
            n => (u64::from(n), 0),
        };
        let head = 2 + ext + if masked { 4 } else { 0 };
        let mask: [u8; 4] = if masked {
            bytes.get(head - 4..head)?.try_into().ok()?
        } else {
            if bytes.len() < head {
                return None;
            }
            [0; 4]
        };
        let (fin, rsv1, opcode) = (b0 & 0x80 != 0, b0 & 0x40 != 0, b0 & 0x0f);
        let gather = match (opcode, rsv1, &self.message) {
            // A new data message inside a fragmented compressed one, or
            // RSV1 where the extension does not allow it.
            (1 | 2, _, Some(_)) | (0, true, Some(_)) | (8.., true, _) => return self.refuse(masked),
            // RSV2 or RSV3 (no extension gives them a meaning), or a
            // fragment masked otherwise than the message's first.
            (0, false, Some(m)) if b0 & 0x30 != 0 || m.masked != masked => return self.refuse(masked),
            (1 | 2, true, None) if b0 & 0x30 != 0 => return self.refuse(masked),
            (1 | 2, true, None) => {
                self.message = Some(Message {
                    opcode,
                    masked,
                    data: Vec::new(),
                });
                true
            }
            (0, false, Some(_)) => true,
            _ => false,
        };
        if gather {
            let held = self.message.as_ref().map_or(0, |m| m.data.len() as u64);
            if len > (self.max as u64).saturating_sub(held) {
                return self.too_big(masked);
            }
        } else {
            self.out.extend_from_slice(&bytes[..head]);
        }
        self.frame = Some(Payload {
            left: len,
            gather: gather.then_some((mask, 0)),
            fin,
        });
        Some(head)
    }

    /// The compressed message is whole: hand it on inflated.
    fn finish(&mut self) {
        /// Room kept before the inflated bytes for the frame's header.
        const HEAD: usize = MAX_HEADER;
        let Some(m) = self.message.take() else { return };
        let mut data = m.data;
        data.extend_from_slice(&TAIL);
        let mut inflater = Decompress::new(false);
        let mut plain = vec![0u8; HEAD];
        let len = |plain: &Vec<u8>| plain.len() - HEAD;
        loop {
            let room = (self.max + 1).saturating_sub(len(&plain));
            if room == 0 {
                self.too_big(m.masked);
                return;
            }
            // Doubling, so a message near a large limit is not copied over
            // and over.
            // (`reserve_exact`: `reserve` may double past the budget, and
            // all the room given is filled.)
            plain.reserve_exact(room.min(len(&plain).max(16 << 10)));
            let (in_before, out_before) = (inflater.total_in(), plain.len());
            let input = &data[usize::try_from(in_before).unwrap_or(usize::MAX).min(data.len())..];
            let status = inflater.decompress_vec(input, &mut plain, FlushDecompress::Sync);
            let all_in = inflater.total_in() as usize == data.len();
            match status {
                Err(_) => {
                    self.refuse(m.masked);
                    return;
                }
                // A final block (RFC 7692 §7.2.3.3 allows one): the tail
                // appended after it is not read.
                Ok(Status::StreamEnd) => break,
                Ok(_) if all_in && plain.len() < plain.capacity() => break,
                Ok(_) if (inflater.total_in(), plain.len()) == (in_before, out_before) => {
                    if all_in {
                        break;
                    }
                    self.refuse(m.masked); // stuck: the data is cut short
                    return;
                }
                Ok(_) => {}
            }
        }
        if len(&plain) > self.max {
            self.too_big(m.masked);
            return;
        }
        let mut head = [0u8; HEAD];
        let n = frame_header(0x80 | m.opcode, m.masked, len(&plain) as u64, &mut head);
        let at = HEAD - n;
        plain[at..HEAD].copy_from_slice(&head[..n]);
        if self.ready().is_empty() {
            // The message becomes what is ready, header and all, uncopied.
            self.out = plain;
            self.out_at = at;
        } else {
            self.out.extend_from_slice(&plain[at..]);
        }
    }

    /// A frame tungstenite refuses as a protocol error (RSV1 set); the end.
    fn refuse(&mut self, masked: bool) -> Option<usize> {
        frame_head(&mut self.out, 0xc1, masked, 0);
        self.end()
    }

    /// A frame header tungstenite refuses as over its size limit; the end.
    fn too_big(&mut self, masked: bool) -> Option<usize> {
        frame_head(&mut self.out, 0x81, masked, self.max as u64 + 1);
        self.end()
    }

    fn end(&mut self) -> Option<usize> {
        self.ended = true;
        self.message = None;
        self.frame = None;
        self.input.clear();
        Some(0)
    }
}

/// A frame's header ([`frame_header`]) onto `out`.
fn frame_head(out: &mut Vec<u8>, b0: u8, masked: bool, len: u64) {
    let mut head = [0u8; MAX_HEADER];
    let n = frame_header(b0, masked, len, &mut head);
    out.extend_from_slice(&head[..n]);
}

/// A stream whose reads go through an [`Inflater`] once the extension is
/// negotiated (and pass by untouched otherwise); writes pass by.
#[derive(Debug)]
pub struct Inflating<S> {
    io: S,
    filter: Option<Box<Inflater>>,
    /// Bytes read from `io`, as they came (compressed).
    read: u64,
}

impl<S> Inflating<S> {
    /// `io`, whose first bytes were read already (`first`), filtered if
    /// `deflate` (for messages of at most `max` bytes). Returns the
    /// stream and the bytes for tungstenite to read first.
    pub fn new(io: S, first: Vec<u8>, deflate: bool, max: usize) -> (Inflating<S>, Vec<u8>) {
        if !deflate {
            return (
                Inflating {
                    io,
                    filter: None,
                    read: 0,
                },
                first,
            );
        }
        let mut filter = Box::new(Inflater::new(max));
        filter.push(&first);
        (
            Inflating {
                io,
                filter: Some(filter),
                read: 0,
            },
            Vec::new(),
        )
    }

    /// Start filtering what comes next (a client, once its handshake's
    /// answer took the extension: the server sends no frame before the
    /// client's first request).
    pub fn start(&mut self, max: usize) {
        self.filter.get_or_insert_with(|| Box::new(Inflater::new(max)));
    }

    /// Bytes read from the stream so far, as they came over it.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Inflating<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(filter) = this.filter.as_mut() else {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
            this.read += (buf.filled().len() - before) as u64;
            return Poll::Ready(Ok(()));
        };
        loop {
            let ready = filter.ready();
            if !ready.is_empty() {
                let n = ready.len().min(buf.remaining());
                buf.put_slice(&ready[..n]);
                filter.consume(n);
                return Poll::Ready(Ok(()));
            }
            if filter.ended() {
                // Nothing more is filtered (tungstenite has stopped reading;
                // a lingering close counts and drops what comes).
                let before = buf.filled().len();
                ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
                this.read += (buf.filled().len() - before) as u64;
                return Poll::Ready(Ok(()));
            }
            // What the last read brought past a compressed message first.
            if filter.pump() {
                continue;
            }
            let mut raw = [0u8; 4096];
            let mut raw = ReadBuf::new(&mut raw);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut raw))?;
            if raw.filled().is_empty() {
                return Poll::Ready(Ok(())); // end of stream
            }
            this.read += raw.filled().len() as u64;
            filter.push(raw.filled());
        }
    }
}

crate::passthrough::writes_pass_through!(Inflating, io);

#[cfg(test)]
#[path = "inflate_tests.rs"]
mod tests;
