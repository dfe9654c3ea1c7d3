//! Persistence: the journal append per event, snapshots (the recovery
//! base), the match record, clean marks, and restoring at start.
//!
//! Durability protocol for epochs: a match is either durably *clean at seq
//! S* (nothing beyond S was ever pushed) or *dirty*. Before the first push
//! after a clean mark the worker durably clears the mark (a journal
//! barrier); after `clean_after` idle it writes a new clean mark. On
//! restart a match whose clean mark equals its last journaled seq keeps its
//! epoch; any other gets a new one, so a client never sees one (epoch, seq)
//! twice with different content.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::checkpoint::Checkpoint;
use super::frame::FrameKind;
use super::lifecycle::Base;
use super::release::Stored;
use super::{RECOVERY_TAIL_BYTES, Worker};
use crate::journal::{MatchMeta, Op, Recovered, SnapshotRecord};

/// Whether a match is durably clean at its seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mark {
    Clean,
    /// Pushed beyond the last clean mark; the last push was at this time
    /// (the idle timer that writes the next mark runs from it).
    Dirty {
        last_push: Instant,
    },
}

impl Mark {
    pub fn is_clean(self) -> bool {
        self == Mark::Clean
    }

    pub fn dirty_since(self) -> Option<Instant> {
        match self {
            Mark::Clean => None,
            Mark::Dirty { last_push } => Some(last_push),
        }
    }
}

/// Encoded events applied since the recovery base, in order, and the
/// in-memory checkpoint partway along them ([`super::checkpoint`]).
#[derive(Debug, Default)]
pub(super) struct Tail {
    pub events: Vec<Bytes>,
    pub bytes: usize,
    /// (Boxed: most matches, and every sleeping one, have none.)
    pub checkpoint: Option<Box<Checkpoint>>,
    /// Apply time of the events after the checkpoint (or the base).
    pub unsaved: Duration,
    /// What the last checkpoint's save cost.
    pub last_save: Duration,
}

impl Tail {
    pub fn push(&mut self, event: Bytes) {
        self.bytes += event.len();
        self.events.push(event);
    }

    /// The base now covers every event: they and the checkpoint go.
    pub fn clear(&mut self) {
        self.events.clear();
        self.bytes = 0;
        self.checkpoint = None;
        self.unsaved = Duration::ZERO;
    }
}

impl Worker {
    /// Become ready: fresh, or restored from the journal after a restart.
    pub(super) async fn start(&mut self, recovered: Option<Recovered>) {
        let started = Instant::now();
        let start_no = self.journal().map_or(1, |j| j.start_no());
        let Some(r) = recovered else {
            self.epoch = start_no;
            match self.version.instantiate(self.id.clone()) {
                Ok(i) => self.install(i),
                Err(f) => self.quarantine(format!("cannot instantiate the guest: {f}")),
            }
            self.env
                .metrics
                .instantiate_seconds
                .observe(started.elapsed().as_secs_f64());
            self.write_meta().await;
            return;
        };
        self.bets = r.bets;
        self.assume_every_producer();
        if let Some(s) = r.snapshot {
            self.seq = s.seq;
            self.base = Some(Box::new(Base {
                state: s.state,
                guest: Arc::from(s.guest),
                state_version: s.state_version,
            }));
            // Read from the store, which has it (without a journal, as on a
            // cluster's node, `give_base_back` keeps it all the same).
            self.stored = Stored::ReadBack;
        }
        for (seq, entry) in r.journal {
            if seq != self.seq + 1 {
                tracing::error!(match_id = %self.id, expected = self.seq + 1, found = seq, "journal gap; stopping replay there");
                break;
            }
            self.seq = seq;
            self.tail.push(Bytes::from(entry.event));
        }
        // Continuity is proven only by a clean mark at exactly this seq.
        self.epoch = if r.meta.clean_seq == Some(self.seq) {
            r.meta.epoch
        } else {
            start_no
        };
        if let Err(f) = self.recover() {
            self.quarantine(format!("cannot restore state: {f}"));
        }
        if let Some(reason) = r.meta.quarantined {
            self.quarantine(reason);
        }
        self.env
            .metrics
            .restore_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(match_id = %self.id, epoch = self.epoch, seq = self.seq, kept_epoch = self.epoch == r.meta.epoch, "match restored");
        self.write_meta().await;
        // Restored on a version other than the current one (it stayed
        // behind on it, or slept through a rollout that passed it by):
        // asleep at once, so its first command takes the current one.
        if self.version_to_take().is_some() && self.env.hibernate_after.is_some() {
            self.hibernate();
        }
    }

    /// An applied event: next seq, frame, journal, fan-out.
    pub(super) async fn commit(&mut self, bytes: Vec<u8>, delta: &RawValue, routed: Option<std::time::Instant>) {
        if self.mark.is_clean() {
            // The first push beyond a clean mark: clear it durably first.
            self.mark = Mark::Dirty {
                last_push: Instant::now(),
            };
            self.env.metrics.unclean_matches.inc();
            if let Some(journal) = self.env.journal.clone() {
                let started = Instant::now();
                self.write_meta().await;
                if let Err(e) = crate::journal::sync(&*journal, Some(self.id.clone())).await {
                    tracing::error!(match_id = %self.id, error = %e, "clearing the clean mark was not made durable; continuing");
                }
                self.env
                    .metrics
                    .dirty_barrier_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
        }
        self.seq += 1;
        let names = self.naming.take_pending();
        let mut envelope = self.envelope(FrameKind::Update).with_delta(delta);
        envelope.names = names.as_deref();
        let frame = envelope.render();
        let event = Bytes::from(bytes);
        if let Some(journal) = self.journal() {
            // Shares the event's buffer; the journal encodes it. The frame
            // is not kept: catch-up regenerates it (`catchup::regenerate`).
            let append = Op::Append {
                match_id: self.id.clone(),
                seq: self.seq,
                event: event.clone(),
            };
            if let Err(e) = journal.write(append).await {
                tracing::error!(match_id = %self.id, seq = self.seq, error = %e, "journal append refused");
            }
        }
        self.tail.push(event);
        self.recent.push(frame.clone());
        // A snapshot frame is of one seq: this one made it stale.
        self.snapshot_cache = None;
        self.env.metrics.events_applied.inc();
        // No receivers is fine: nobody is watching this match.
        let _ = self.updates.send(frame);
        if let Some(routed) = routed {
            self.env
                .metrics
                .event_to_fanout_seconds
                .observe(routed.elapsed().as_secs_f64());
        }
        if self.tail.events.len() as u64 >= self.env.snapshot_every
            || self.tail.bytes >= RECOVERY_TAIL_BYTES
            || self.last_snapshot.elapsed() >= self.env.snapshot_interval
        {
            self.snapshot();
        }
        self.mark = Mark::Dirty {
            last_push: Instant::now(),
        };
    }

    /// Quiet for `clean_after`: snapshot and mark clean.
    pub(super) async fn on_idle(&mut self) {
        if !self.tail.events.is_empty() {
            self.snapshot();
        }
        self.mark_clean().await;
    }

    pub(super) async fn mark_clean(&mut self) {
        if !self.mark.is_clean() {
            self.mark = Mark::Clean;
            self.env.metrics.unclean_matches.dec();
            self.write_meta().await;
        }
    }

    /// Save the guest state as the new recovery base (and persist it).
    pub(super) fn snapshot(&mut self) {
        let saved = match self.life.reader() {
            Some(instance) => instance.save_state(),
            None => return,
        };
        match saved {
            Ok(state) => {
                let mut stored = Stored::No;
                let record = || SnapshotRecord {
                    seq: self.seq,
                    epoch: self.epoch,
                    state: state.clone(),
                    guest: self.version.version().to_owned(),
                    state_version: self.version.state_version(),
                };
                if let (Some(sink), Some(position)) = (&self.env.snapshots, self.position) {
                    // In a cluster (no journal): kept in JetStream.
                    sink.snapshot(&self.id, self.seq, position, &record);
                }
                if let Some(journal) = self.journal() {
                    let record = record();
                    // Never blocks the worker: a full queue skips storing this
                    // snapshot (the stored one is older, and the journal,
                    // trimmed only by stored snapshots, still has every event
                    // after it). In memory it is the new base all the same, so
                    // an overloaded store does not make every later event
                    // save the state again.
                    let queued = journal.try_write(Op::Snapshot {
                        match_id: self.id.clone(),
                        record,
                    });
                    stored = match queued {
                        Ok(()) => Stored::Queued,
                        Err(_) => {
                            self.env.metrics.snapshots_skipped.inc();
                            Stored::No
                        }
                    };
                }
                self.stored = stored;
                self.base = Some(Box::new(self.own_base(state)));
                self.tail.clear();
                self.last_snapshot = Instant::now();
            }
            Err(f) => {
                tracing::warn!(match_id = %self.id, error = %f, "snapshot failed; keeping the previous one")
            }
        }
    }

    /// Persist epoch, clean mark, quarantine and version.
    pub(super) async fn write_meta(&mut self) {
        let Some(journal) = self.journal() else { return };
        let meta = MatchMeta {
            epoch: self.epoch,
            clean_seq: self.mark.is_clean().then_some(self.seq),
            quarantined: self.life.quarantine_reason().map(str::to_owned),
            guest: Some(self.version.version().to_owned()),
        };
        let op = Op::Meta {
            match_id: self.id.clone(),
            meta,
        };
        if let Err(e) = journal.write(op).await {
            tracing::error!(match_id = %self.id, error = %e, "match record refused");
        }
    }

    /// Keep an event that arrived while quarantined.
    pub(super) async fn hold(&mut self, bytes: Vec<u8>, raw: Option<bytes::Bytes>) {
        self.env.metrics.events_held.inc();
        if let Some(journal) = self.journal() {
            let op = Op::Hold {
                match_id: self.id.clone(),
                event: bytes,
                raw,
            };
            if let Err(e) = journal.write(op).await {
                tracing::error!(match_id = %self.id, error = %e, "held event refused");
            }
        }
    }
}
