//! Catching subscribers up: a snapshot (rendered once per state and shared)
//! or, for a client resuming at `(epoch, seq)`, the updates it missed: the
//! recent ones from the resume ring, older ones regenerated
//! ([`super::regenerate`]). Also the frame envelope and status frames.

use std::sync::Arc;

use super::frame::{Envelope, FrameKind, Status, null_json};
use super::regenerate::Lacking;
use super::{Catchup, Frame, Position, Worker};

/// What a snapshot frame's content depends on: the cached one is reused
/// while all of it is unchanged.
#[derive(Debug, PartialEq)]
pub(super) struct SnapshotKey {
    seq: u64,
    epoch: u64,
    guest: Arc<str>,
    quarantined: Option<String>,
    producers_down: Vec<u32>,
    names: (usize, bool),
}

impl Worker {
    pub(super) async fn catchup(&mut self, since: Option<Position>) -> Catchup {
        if let Some(p) = since
            && p.epoch == self.epoch
            && p.seq <= self.seq
            && self.life.quarantine_reason().is_none()
            && let Some(frames) = self.missed_or_wait(p.seq).await
        {
            // Tell the client its resume point was accepted, then what it
            // missed. Status frames are not kept, so the head says which of
            // the match's producers are down now.
            let down = self.producers_down(&self.board.borrow());
            let mut head = self.envelope(FrameKind::Resumed);
            head.seq = p.seq;
            head.producers_down = Some(&down);
            let head = head.render();
            return Catchup::Missed(std::iter::once(head).chain(frames).collect());
        }
        Catchup::Snapshot(self.snapshot_frame().await)
    }

    /// [`Worker::missed`]; if the ring and the store lack some, they may
    /// still be queued for the store writer (the ring is short, and a
    /// napping or hibernated match keeps none): wait for it once and look
    /// again.
    async fn missed_or_wait(&mut self, seq: u64) -> Option<Vec<Frame>> {
        match self.missed(seq) {
            Ok(frames) => return Some(frames),
            Err(Lacking::Never) => return None,
            Err(Lacking::NotStored) => {}
        }
        crate::journal::sync(self.journal()?, Some(self.id.clone()))
            .await
            .ok()?;
        self.missed(seq).ok()
    }

    /// Update frames after `seq`, from the ring and, older than it,
    /// regenerated.
    fn missed(&mut self, seq: u64) -> Result<Vec<Frame>, Lacking> {
        let ring_first = self.recent.first_seq().unwrap_or(self.seq + 1);
        let mut out = Vec::new();
        if seq + 1 < ring_first {
            out = self.regenerate(seq, ring_first - 1)?;
        }
        out.extend(self.recent.after(seq));
        Ok(out)
    }

    /// Tell every subscriber what happened (takes no seq).
    pub(super) fn status(&self, status: Status, reason: &str) {
        self.status_about(status, reason, None);
    }

    /// [`Worker::status`], about `product` if it concerns a producer. The
    /// frame is kept nowhere: with nobody to tell, nothing is rendered (a
    /// rollout switching 10,000 sleeping matches rendered one for each).
    pub(super) fn status_about(&self, status: Status, reason: &str, product: Option<u32>) {
        self.updates.send_if_heard(|| {
            let mut envelope = self.envelope(FrameKind::Status).with_status(status, reason);
            envelope.product = product;
            envelope.render()
        });
    }

    /// The snapshot frame for a subscriber: rendered by the guest once per
    /// state, then shared by every subscriber until the state changes.
    async fn snapshot_frame(&mut self) -> Frame {
        let producers_down = self.producers_down(&self.board.borrow());
        let key = SnapshotKey {
            seq: self.seq,
            epoch: self.epoch,
            guest: self.version.version_arc(),
            quarantined: self.life.quarantine_reason().map(str::to_owned),
            producers_down,
            names: self.names_generation(),
        };
        if let Some(cached) = &self.snapshot_cache
            && cached.0 == key
        {
            return cached.1.clone();
        }
        self.ensure_instance().await;
        let state = match self.life.reader().map(|i| i.snapshot_json()) {
            Some(Ok(s)) => s,
            Some(Err(f)) => {
                tracing::warn!(match_id = %self.id, error = %f, "snapshot for a subscriber failed");
                return self.snapshot_envelope(&null_json(), &key.producers_down, None);
            }
            None => return self.snapshot_envelope(&null_json(), &key.producers_down, None),
        };
        let names = self.state_names(Some(&state));
        let frame = self.snapshot_envelope(&state, &key.producers_down, names.as_deref());
        self.snapshot_cache = Some(Box::new((key, frame.clone())));
        frame
    }

    fn snapshot_envelope(
        &self,
        state: &serde_json::value::RawValue,
        producers_down: &[u32],
        names: Option<&serde_json::value::RawValue>,
    ) -> Frame {
        let mut envelope = self.envelope(FrameKind::Snapshot).with_state(state);
        envelope.producers_down = Some(producers_down);
        envelope.names = names;
        envelope.render()
    }

    /// A frame of `kind` at the current position.
    pub(super) fn envelope(&self, kind: FrameKind) -> Envelope<'_> {
        Envelope {
            kind,
            match_id: &self.id,
            epoch: self.epoch,
            seq: self.seq,
            guest_version: self.version.version(),
            delta: None,
            state: None,
            quarantined: if kind == FrameKind::Snapshot {
                self.life.quarantine_reason()
            } else {
                None
            },
            status: None,
            reason: None,
            product: None,
            producers_down: None,
            names: None,
        }
    }
}
