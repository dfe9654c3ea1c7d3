//! The resume ring: a match's last update frames, for clients resuming
//! with `since` ([`super::catchup`]), bounded by [`RESUME_RING`] frames and
//! [`RESUME_RING_BYTES`] of their text.
//!
//! A frame pushed is kept as sent (the buffer its subscribers were given,
//! shared). When the match naps ([`super::nap`]) the frames are packed:
//! each frame's JSON compressed on its own with LZ4, so a match between
//! two updates holds ~2.6 times fewer bytes of ring (250 of the
//! simulator's update frames, 3.5 KB on average: 2.64×, ~2.9 µs to
//! compress each). The frames a resume needs are unpacked once and
//! kept as sent again, so a crowd of clients resuming from the same match
//! shares one buffer per frame, byte for byte the one first sent, as every
//! frame is serialised once. The bounds count the frames' text, packed or
//! not, so packing changes what a match holds, never which frames a client
//! can resume from. A frame that would not shrink stays as sent. The ring
//! never hands out other bytes than those first sent: a packed frame that
//! does not unpack to its whole text is an error ([`Unpack`]), and the
//! client gets a snapshot instead.
//!
//! Measured: the ring was ~14 KB of host heap per live match of the
//! simulator (dhat, 1,000 live matches: 4 frames each, the byte bound), the
//! largest single item a live match holds on the host.

use std::collections::VecDeque;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::frame::FrameKind;
use super::{Frame, RESUME_RING, RESUME_RING_BYTES};

/// The last update frames (see the module header).
#[derive(Debug, Default)]
pub(super) struct Ring {
    frames: VecDeque<Kept>,
    /// Text bytes of the frames kept (the bound, checked at every push).
    text: usize,
}

/// One frame kept: its header fields beside its text, packed or not.
#[derive(Debug)]
struct Kept {
    /// The update's seq (the ring's order and a resume's cut).
    seq: u64,
    /// Its epoch, as sent.
    epoch: u64,
    /// Its kind, as sent (updates only, in practice).
    kind: FrameKind,
    body: Body,
}

#[derive(Debug)]
enum Body {
    /// The buffer sent to subscribers (shared with them while queued).
    Sent(Utf8Bytes),
    /// LZ4 block of a frame's text, `len` bytes once unpacked.
    Packed { len: usize, block: Box<[u8]> },
}

/// A packed frame that did not unpack to its text, all `len` bytes of it
/// (a bug or corrupted memory): the client gets a snapshot instead.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Unpack {
    pub seq: u64,
}

impl Body {
    fn text_len(&self) -> usize {
        match self {
            Body::Sent(b) => b.len(),
            Body::Packed { len, .. } => *len,
        }
    }

    fn held(&self) -> usize {
        match self {
            Body::Sent(b) => b.len(),
            Body::Packed { block, .. } => block.len(),
        }
    }
}

impl Kept {
    /// The frame's text as sent, unpacking it if need be.
    fn text(&self) -> Result<Utf8Bytes, Unpack> {
        let unpack = || Unpack { seq: self.seq };
        match &self.body {
            Body::Sent(b) => Ok(b.clone()),
            Body::Packed { len, block } => {
                // A block that decodes short is not an error to LZ4.
                let text = lz4_flex::block::decompress(block, *len).map_err(|_| unpack())?;
                if text.len() != *len {
                    return Err(unpack());
                }
                Utf8Bytes::try_from(bytes::Bytes::from(text)).map_err(|_| unpack())
            }
        }
    }

    fn frame(&self, bytes: Utf8Bytes) -> Frame {
        Frame {
            seq: self.seq,
            epoch: self.epoch,
            kind: self.kind,
            bytes,
        }
    }
}

impl Ring {
    /// Bytes held for the frames kept (packed ones at their packed size;
    /// for the console, summed when asked).
    pub fn bytes(&self) -> usize {
        self.frames.iter().map(|k| k.body.held()).sum()
    }

    /// How many frames are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// The seq of the oldest frame kept.
    pub fn first_seq(&self) -> Option<u64> {
        self.frames.front().map(|k| k.seq)
    }

    pub fn push(&mut self, frame: Frame) {
        let body = Body::Sent(frame.bytes);
        self.text += body.text_len();
        self.frames.push_back(Kept {
            seq: frame.seq,
            epoch: frame.epoch,
            kind: frame.kind,
            body,
        });
        while self.frames.len() > RESUME_RING || (self.text > RESUME_RING_BYTES && self.frames.len() > 1) {
            if let Some(old) = self.frames.pop_front() {
                self.text -= old.body.text_len();
            }
        }
    }

    /// The frames after `seq`, in order, as first sent. Those unpacked for
    /// it are kept as sent again: the next client resuming shares them.
    pub fn after(&mut self, seq: u64) -> Result<Vec<Frame>, Unpack> {
        let mut out = Vec::new();
        for kept in self.frames.iter_mut().filter(|k| k.seq > seq) {
            let text = kept.text()?;
            if matches!(kept.body, Body::Packed { .. }) {
                kept.body = Body::Sent(text.clone());
            }
            out.push(kept.frame(text));
        }
        Ok(out)
    }

    /// Every frame kept (the console's detail), unpacked for the reader and
    /// left packed; one that does not unpack is left out.
    pub fn frames(&self) -> Vec<Frame> {
        self.frames
            .iter()
            .filter_map(|k| Some(k.frame(k.text().ok()?)))
            .collect()
    }

    /// Compress the frames kept as sent (napping: see the module header).
    pub fn pack(&mut self) {
        for kept in &mut self.frames {
            let Body::Sent(text) = &kept.body else { continue };
            let block = lz4_flex::block::compress(text.as_bytes());
            if block.len() >= text.len() {
                continue;
            }
            kept.body = Body::Packed {
                len: text.len(),
                block: block.into_boxed_slice(),
            };
        }
    }

    /// Forget every frame and give the buffer back (hibernation).
    pub fn release(&mut self) {
        *self = Ring::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(seq: u64, text: String) -> Frame {
        Frame {
            seq,
            epoch: 3,
            kind: FrameKind::Update,
            bytes: Utf8Bytes::from(text),
        }
    }

    fn text(seq: u64) -> String {
        let markets: Vec<String> = (0..20)
            .map(|m| {
                format!(
                    r#"{{"id":{m},"specifiers":"","status":1,"outcomes":[{{"id":"1","odds":{}.5,"active":true}}]}}"#,
                    seq + m
                )
            })
            .collect();
        format!(
            r#"{{"type":"update","match":"sr:match:1","epoch":3,"seq":{seq},"delta":{{"markets":[{}]}}}}"#,
            markets.join(",")
        )
    }

    fn sent(frames: &[Frame]) -> Vec<(u64, u64, FrameKind, String)> {
        frames
            .iter()
            .map(|f| (f.seq, f.epoch, f.kind, f.bytes.as_str().to_owned()))
            .collect()
    }

    #[test]
    fn packed_frames_unpack_to_what_was_sent_and_hold_fewer_bytes() {
        let mut ring = Ring::default();
        let frames: Vec<Frame> = (1..=4).map(|s| update(s, text(s))).collect();
        for f in &frames {
            ring.push(f.clone());
        }
        let before = ring.bytes();
        ring.pack();
        assert!(ring.bytes() * 2 < before, "packed {} of {before} bytes", ring.bytes());
        assert_eq!(sent(&ring.frames()), sent(&frames));
        assert!(ring.bytes() * 2 < before, "the console's reading leaves them packed");
        // A resume unpacks what it needs once: the next one shares it.
        let first = ring.after(2).expect("unpacks");
        assert_eq!(sent(&first), sent(&frames[2..]));
        let again = ring.after(2).expect("unpacks");
        assert!(
            first
                .iter()
                .zip(&again)
                .all(|(a, b)| a.bytes.as_str().as_ptr() == b.bytes.as_str().as_ptr())
        );
        assert_eq!(sent(&ring.after(0).expect("unpacks")), sent(&frames));
        assert_eq!(ring.bytes(), before, "all unpacked, as sent");
        // Packed again; a frame sent after a nap is kept as sent beside
        // the packed ones.
        ring.pack();
        let packed = ring.bytes();
        ring.pack();
        assert_eq!(ring.bytes(), packed);
        let fifth = update(5, text(5));
        ring.push(fifth.clone());
        assert_eq!(ring.bytes(), packed + fifth.bytes.len());
        assert_eq!(
            sent(&ring.after(3).expect("unpacks")),
            sent(&[frames[3].clone(), fifth])
        );
    }

    #[test]
    fn the_bounds_count_the_text_so_packing_keeps_the_same_frames() {
        let (mut plain, mut packed) = (Ring::default(), Ring::default());
        for s in 1..=40 {
            plain.push(update(s, text(s)));
            packed.push(update(s, text(s)));
            packed.pack();
            assert_eq!(packed.first_seq(), plain.first_seq(), "after seq {s}");
            assert_eq!(packed.len(), plain.len());
        }
        assert!(plain.len() < RESUME_RING, "the byte bound decides here");
        // The frame count bounds small frames.
        let mut small = Ring::default();
        for s in 1..=40 {
            small.push(update(s, format!(r#"{{"seq":{s}}}"#)));
        }
        small.pack();
        assert_eq!((small.len(), small.first_seq()), (RESUME_RING, Some(25)));
    }

    #[test]
    fn a_block_that_does_not_unpack_to_its_whole_text_is_an_error() {
        let mut ring = Ring::default();
        ring.push(update(7, text(7)));
        ring.pack();
        let Some(Kept {
            body: Body::Packed { len, .. },
            ..
        }) = ring.frames.front_mut()
        else {
            panic!("packed");
        };
        *len += 1;
        assert_eq!(ring.after(0).map(|f| f.len()), Err(Unpack { seq: 7 }));
        assert!(ring.frames().is_empty(), "left out of the console's reading");
    }

    #[test]
    fn a_frame_that_would_not_shrink_is_kept_as_sent() {
        let mut ring = Ring::default();
        ring.push(update(1, "{}".to_owned()));
        ring.pack();
        assert_eq!(ring.bytes(), 2);
        assert_eq!(
            sent(&ring.after(0).expect("unpacks")),
            sent(&[update(1, "{}".to_owned())])
        );
    }
}
