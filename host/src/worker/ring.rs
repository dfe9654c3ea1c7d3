//! The resume ring: a match's last update frames, for clients resuming
//! with `since` ([`super::catchup`]), bounded by [`RESUME_RING`] frames and
//! [`RESUME_RING_BYTES`] of their text.
//!
//! A frame pushed is kept as sent (the buffer its subscribers were given,
//! shared), so a crowd of clients resuming from the same match shares one
//! buffer per frame, byte for byte the one first sent, as every frame is
//! serialised once. A match that hibernates, or naps with a journal,
//! releases it, and a client resuming from it gets the updates it missed
//! rebuilt from the journal ([`super::regenerate`]).
//!
//! Measured: the ring was ~14 KB of host heap per live match of the
//! simulator (dhat, 1,000 live matches: 4 frames each, the byte bound), the
//! largest single item a live match holds on the host; packed with LZ4
//! while the match napped (2.64x smaller), still ~4.7 KB of every napping
//! match's ~9 KB of host heap (dhat, 1,000 live matches napping between
//! updates a second apart).

use std::collections::VecDeque;

use super::{Frame, RESUME_RING, RESUME_RING_BYTES};

/// The last update frames (see the module header).
#[derive(Debug, Default)]
pub(super) struct Ring {
    frames: VecDeque<Frame>,
    /// Text bytes of the frames kept (the bound, checked at every push).
    text: usize,
}

impl Ring {
    /// Bytes held for the frames kept (for the console).
    pub fn bytes(&self) -> usize {
        self.text
    }

    /// How many frames are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// The seq of the oldest frame kept.
    pub fn first_seq(&self) -> Option<u64> {
        self.frames.front().map(|f| f.seq)
    }

    pub fn push(&mut self, frame: Frame) {
        self.text += frame.bytes.len();
        self.frames.push_back(frame);
        while self.frames.len() > RESUME_RING || (self.text > RESUME_RING_BYTES && self.frames.len() > 1) {
            if let Some(old) = self.frames.pop_front() {
                self.text -= old.bytes.len();
            }
        }
    }

    /// The frames after `seq`, in order, as first sent.
    pub fn after(&self, seq: u64) -> Vec<Frame> {
        self.frames.iter().filter(|f| f.seq > seq).cloned().collect()
    }

    /// Every frame kept (the console's detail).
    pub fn frames(&self) -> Vec<Frame> {
        self.frames.iter().cloned().collect()
    }

    /// Forget every frame and give the buffer back (napping, hibernation).
    pub fn release(&mut self) {
        *self = Ring::default();
    }
}

#[cfg(test)]
mod tests {

    use super::super::frame::FrameKind;
    use super::*;

    fn update(seq: u64, text: String) -> Frame {
        Frame {
            seq,
            epoch: 3,
            kind: FrameKind::Update,
            bytes: crate::deflate::Text::from(text),
        }
    }

    #[test]
    fn the_ring_keeps_the_last_frames_within_its_bounds_as_sent() {
        let big = |s: u64| update(s, format!("{s:0>w$}", w = RESUME_RING_BYTES / 4));
        let mut ring = Ring::default();
        for s in 1..=10 {
            ring.push(big(s));
        }
        assert!(ring.len() < RESUME_RING, "the byte bound decides here");
        assert!(ring.bytes() <= RESUME_RING_BYTES);
        assert_eq!(ring.first_seq(), Some(11 - ring.len() as u64));
        let pushed = big(11);
        ring.push(pushed.clone());
        let last = ring.after(10);
        assert_eq!(last.len(), 1);
        assert_eq!(
            last[0].bytes.as_str().as_ptr(),
            pushed.bytes.as_str().as_ptr(),
            "shared"
        );
        // The frame count bounds small frames.
        let mut small = Ring::default();
        for s in 1..=40 {
            small.push(update(s, format!(r#"{{"seq":{s}}}"#)));
        }
        assert_eq!((small.len(), small.first_seq()), (RESUME_RING, Some(25)));
        assert_eq!(small.after(38).iter().map(|f| f.seq).collect::<Vec<_>>(), [39, 40]);
        small.release();
        assert_eq!((small.len(), small.bytes(), small.first_seq()), (0, 0, None));
    }
}
