//! Update frames a resuming client missed, older than the resume ring,
//! rebuilt from the journal: frames are not stored (issue 14), and the
//! same events from the same state give the same deltas.
//!
//! A scratch instance of the version the match runs now takes the newest
//! stored snapshot at or before the client's position (or starts from the
//! first event), applies the events up to that position quietly, then
//! renders each later one's delta in its update envelope. It is trusted
//! only if it reaches the match's own state: it also replays up to the
//! check point (the live recovery base, or the newest stored snapshot while
//! the match sleeps), which must be saved by the same version, and the
//! state it holds there must be byte for byte the check point's. A hot swap
//! in between (a migration at another seq, a version counting its own
//! events) fails that comparison, and the client gets a snapshot instead.
//!
//! The last regenerated update carries the names of everything in the
//! state it leaves (the first sent may have named markets the client never
//! saw). The result is kept (≤ [`KEPT_BYTES`]) for the next catch-up that
//! needs the same seqs of the same epoch and version: a storm of lagging
//! clients costs one rebuild. Dropped when the match sleeps or switches.

use std::sync::Arc;

use super::frame::FrameKind;
use super::{Frame, Worker};
use crate::sandbox::Saved;

/// The most events one rebuild applies (the resume window the store keeps,
/// 256 events, plus the spacing of the snapshots it keeps and a snapshot
/// interval): beyond it the client gets a snapshot, so a worker's pause for
/// one catch-up is bounded by this many guest applies (not measured on its
/// own).
const MAX_EVENTS: usize = 512;

/// The most bytes of regenerated frames a match keeps for the next
/// catch-up (larger results are not kept).
const KEPT_BYTES: usize = 256 * 1024;

/// Why missed updates were not rebuilt.
#[derive(Debug, PartialEq)]
pub(super) enum Lacking {
    /// The journal does not have them all: they may still be queued for
    /// the store writer (worth waiting for it once), or pruned.
    NotStored,
    /// They cannot be rebuilt: too many events, another version's state,
    /// a guest failure, no journal.
    Never,
}

/// Update frames the last catch-up regenerated, contiguous.
#[derive(Debug)]
pub(super) struct Regenerated {
    epoch: u64,
    version: Arc<str>,
    frames: Vec<Frame>,
}

impl Regenerated {
    /// Bytes of the frames kept (for the console).
    pub(super) fn bytes(&self) -> usize {
        self.frames.iter().map(|f| f.bytes.len()).sum()
    }

    /// The frames `seq + 1..=to`, if all are here.
    fn covering(&self, seq: u64, to: u64) -> Option<Vec<Frame>> {
        let (first, last) = (self.frames.first()?.seq, self.frames.last()?.seq);
        (first <= seq + 1 && to <= last).then(|| {
            self.frames
                .iter()
                .filter(|f| f.seq > seq && f.seq <= to)
                .cloned()
                .collect()
        })
    }
}

impl Worker {
    /// The update frames `seq + 1..=to` (see the module header); failing
    /// that (the client gets a snapshot), why: the journal does not have
    /// them all, more than [`MAX_EVENTS`] would have to be applied, the
    /// rebuild does not reach the match's own state, or the guest fails.
    pub(super) fn regenerate(&mut self, seq: u64, to: u64) -> Result<Vec<Frame>, Lacking> {
        if let Some(kept) = &self.regenerated
            && kept.epoch == self.epoch
            && *kept.version == *self.version.version()
            && let Some(frames) = kept.covering(seq, to)
        {
            return Ok(frames);
        }
        let kept = Regenerated {
            epoch: self.epoch,
            version: self.version.version_arc(),
            frames: self.rebuild_frames(seq, to)?,
        };
        let frames = kept.frames.clone();
        self.regenerated = (kept.bytes() <= KEPT_BYTES).then(|| Box::new(kept));
        Ok(frames)
    }

    fn rebuild_frames(&mut self, seq: u64, to: u64) -> Result<Vec<Frame>, Lacking> {
        let (check_seq, check_state) = self.check_point().ok_or(Lacking::Never)?;
        let last = to.max(check_seq);
        let journal = self.journal().ok_or(Lacking::Never)?;
        let history = journal
            .history(&self.id, seq, last)
            .ok()
            .flatten()
            .ok_or(Lacking::NotStored)?;
        let base_seq = history.base_seq();
        if history.events.len() > MAX_EVENTS || check_seq < base_seq {
            return Err(Lacking::Never);
        }
        let mut scratch = self
            .version
            .rebuild(self.id.clone(), history.base.as_ref().map(Saved::from), [])
            .map_err(|_| Lacking::Never)?;
        let reaches = |scratch: &mut crate::sandbox::GuestInstance| match &check_state {
            Some(state) => scratch.save_state().ok().as_ref() == Some(state),
            None => true,
        };
        if check_seq == base_seq && !reaches(&mut scratch) {
            return Err(Lacking::Never);
        }
        let mut names = None;
        let mut deltas = Vec::with_capacity((to - seq) as usize);
        for (n, event) in (base_seq + 1..).zip(&history.events) {
            if n > seq && n <= to {
                deltas.push((n, scratch.apply_json(event).map_err(|_| Lacking::Never)?));
            } else {
                scratch.apply(event).map_err(|_| Lacking::Never)?;
            }
            if n == to {
                let state = scratch.snapshot_json().ok();
                names = self.state_names(state.as_deref());
            }
            if n == check_seq && !reaches(&mut scratch) {
                tracing::info!(match_id = %self.id, seq, check_seq, "a rebuild did not reach the match's state: a snapshot instead");
                return Err(Lacking::Never);
            }
        }
        let count = deltas.len();
        Ok(deltas
            .iter()
            .enumerate()
            .map(|(i, (n, delta))| {
                let mut envelope = self.envelope(FrameKind::Update).with_delta(delta);
                envelope.seq = *n;
                if i + 1 == count {
                    envelope.names = names.as_deref();
                }
                envelope.render()
            })
            .collect())
    }

    /// The seq and state a rebuild must reach: the recovery base (the
    /// newest stored snapshot while the match sleeps without it), if the
    /// version the match runs now saved it; `(0, None)` for a match that
    /// has had no snapshot (its state is its events from the first, and
    /// nothing switched it: every switch leaves a snapshot).
    fn check_point(&self) -> Option<(u64, Option<Vec<u8>>)> {
        let version = self.version.version();
        let base_seq = self.seq - self.tail.events.len() as u64;
        match &self.base {
            Some(b) => (*b.guest == *version).then(|| (base_seq, Some(b.state.clone()))),
            None => match self.journal()?.stored_snapshot(&self.id).ok()? {
                Some(s) => (s.guest == version).then_some((s.seq, Some(s.state))),
                None => Some((0, None)),
            },
        }
    }
}
