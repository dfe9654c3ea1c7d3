//! A match's snapshots by seq and the journal after them: its recovery base
//! (the newest snapshot) and what regenerates the update frames a resuming
//! client missed.
//!
//! Frames are not stored per event (issue 14: they were 60% of the
//! journal's bytes, and sled wrote every byte about five times). A client
//! resuming at `seq` older than its match's resume ring gets the updates
//! rebuilt by the guest from the newest snapshot at or before `seq` and the
//! events after it ([`Store::history`]). So a new snapshot prunes only what
//! no resume window can need: with `cut` = its seq − [`JOURNAL_RETENTION`],
//! the newest older snapshot at or before `cut` stays with every event
//! after it; older snapshots and the events up to that one go. Between
//! them snapshots are thinned to one per [`SPACING`] seqs.
//!
//! The removals a snapshot makes wait for the next flush ([`super::locs`]);
//! until then the rule skips the snapshots it already removed.
//!
//! Layout: `snapshot_locs` match \0 seq → where the [`SnapshotRecord`] is
//! in the value log. Stores written before kept one snapshot per match in
//! `snapshots` (match → record); [`Store::migrate_snapshots`] moves those
//! to `snapshots_by_seq` (match \0 seq → record, the layout before the
//! value log), which `Store::migrate_values` then moves into the log.

use super::locs::Locs;
use super::{JournalEntry, Store, StoreError, dec, dec_snapshot, enc, key, prefix, seq_of};
use crate::journal::{History, SnapshotRecord};

/// The resume window: a new snapshot at S keeps what rebuilds every seq
/// from S − this on.
pub const JOURNAL_RETENTION: u64 = 256;

/// The least distance, in seqs, between two kept snapshots other than the
/// newest (each rebuild replays at most this many events more).
const SPACING: u64 = 32;

impl Store {
    /// Move snapshots kept by match (the layout before `snapshots_by_seq`)
    /// under their seq, then drop the old tree. Idempotent: a start cut
    /// short midway moves the rest next time.
    pub(super) fn migrate_snapshots(db: &sled::Db) -> Result<usize, StoreError> {
        if !db.tree_names().iter().any(|n| n.as_ref() == b"snapshots") {
            return Ok(0);
        }
        let into = db.open_tree("snapshots_by_seq")?;
        let legacy = db.open_tree("snapshots")?;
        let mut moved = 0;
        for item in legacy.iter() {
            let (k, v) = item?;
            let record = dec_snapshot(&k, &v)?;
            into.insert(key(&String::from_utf8_lossy(&k), record.seq), enc(&record))?;
            moved += 1;
        }
        into.flush()?;
        db.drop_tree("snapshots")?;
        Ok(moved)
    }

    /// A match's newest snapshot (its recovery base), if any.
    pub fn snapshot(&self, match_id: &str) -> Result<Option<SnapshotRecord>, StoreError> {
        match self.snapshots.scan_prefix(prefix(match_id)).next_back() {
            Some(item) => {
                let (k, v) = item?;
                Ok(Some(dec_snapshot(&k, &self.value(Locs::Snapshots, &k, &v)?)?))
            }
            None => Ok(None),
        }
    }

    /// The newest snapshot at or before `at_or_before` and the events after
    /// it up to `to`, if the journal still has every one of them.
    pub fn history(&self, match_id: &str, at_or_before: u64, to: u64) -> Result<Option<History>, StoreError> {
        let base = match self
            .snapshots
            .range(prefix(match_id)..=key(match_id, at_or_before))
            .next_back()
        {
            Some(item) => {
                let (k, v) = item?;
                Some(dec_snapshot(&k, &self.value(Locs::Snapshots, &k, &v)?)?)
            }
            None => None,
        };
        let from = base.as_ref().map_or(0, |b| b.seq) + 1;
        let mut events = Vec::new();
        for item in self.journal.range(key(match_id, from)..=key(match_id, to)) {
            let (k, v) = item?;
            if seq_of(&k) != from + events.len() as u64 {
                return Ok(None);
            }
            let entry = self.value(Locs::Journal, &k, &v)?;
            events.push(dec::<JournalEntry>("journal", &k, &entry)?.event);
        }
        Ok((from + events.len() as u64 == to + 1).then_some(History { base, events }))
    }

    /// Keep `record` as the match's newest snapshot and prune what no
    /// resume window needs any more (see the module header).
    pub(super) fn put_snapshot(&self, match_id: &str, record: &SnapshotRecord) -> Result<(), StoreError> {
        self.put_value(Locs::Snapshots, key(match_id, record.seq), record)?;
        // The one before it stays only if it is SPACING past the one
        // before that: a match that snapshots every few events keeps a
        // handful, not hundreds.
        let mut older = self
            .snapshots
            .range(prefix(match_id)..key(match_id, record.seq))
            .rev()
            .filter(|item| item.as_ref().map_or(true, |(k, _)| !self.removing(k)));
        if let (Some(previous), Some(before)) = (older.next(), older.next()) {
            let (previous, at) = previous?;
            if seq_of(&previous) < seq_of(&before?.0) + SPACING {
                self.remove_later(Locs::Snapshots, previous, at);
            }
        }
        drop(older);
        let cut = record.seq.saturating_sub(JOURNAL_RETENTION);
        let Some(item) = self
            .snapshots
            .range(prefix(match_id)..=key(match_id, cut))
            .rev()
            .find(|item| item.as_ref().map_or(true, |(k, _)| !self.removing(k)))
        else {
            return Ok(());
        };
        let oldest_kept = seq_of(&item?.0);
        for item in self.snapshots.range(prefix(match_id)..key(match_id, oldest_kept)) {
            let (k, at) = item?;
            self.remove_later(Locs::Snapshots, k, at);
        }
        for item in self.journal.range(prefix(match_id)..=key(match_id, oldest_kept)) {
            let (k, at) = item?;
            self.remove_later(Locs::Journal, k, at);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{open_once_released, record, snapshot};

    fn append(store: &Store, m: &str, seq: u64) {
        crate::store::tests::append(store, m, seq, 0);
    }

    /// Events 1..=600 with a snapshot every 50: the history still rebuilds
    /// every seq of the last `JOURNAL_RETENTION` from the newest snapshot at
    /// or before it; older ones, and another match's, are not mixed in.
    #[test]
    fn a_snapshot_prunes_only_what_no_resume_window_needs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        for seq in 1..=600 {
            append(&store, "m", seq);
            append(&store, "other", seq);
            if seq % 50 == 0 {
                snapshot(&store, "m", seq);
            }
        }
        // The removals wait for the flush (`super::locs`).
        store.flush().expect("flush");
        assert_eq!(store.snapshot("m").expect("read").map(|s| s.seq), Some(600));
        // 600 − 256 = 344: the newest snapshot at or before it (300) stays
        // with everything after it.
        let h = store.history("m", 344, 600).expect("read").expect("kept");
        assert_eq!(h.base_seq(), 300);
        assert_eq!(h.events.len(), 300);
        assert_eq!(h.events[0], b"event 301");
        let h = store.history("m", 420, 430).expect("read").expect("kept");
        assert_eq!((h.base_seq(), h.events.len()), (400, 30));
        assert_eq!(h.base.expect("base").state, 400u64.to_be_bytes());
        // Before the oldest kept snapshot: gone.
        assert_eq!(store.history("m", 299, 600).expect("read"), None);
        // The other match never snapshotted: it keeps all, from seq 1.
        let h = store.history("other", 10, 12).expect("read").expect("kept");
        assert_eq!((h.base, h.events.len()), (None, 12));
        // An event not journaled (yet): nothing.
        assert_eq!(store.history("m", 590, 601).expect("read"), None);
    }

    /// A match that snapshots every 3 events keeps a handful of snapshots,
    /// at least `SPACING` apart but for the newest, and still rebuilds the
    /// whole resume window.
    #[test]
    fn snapshots_taken_often_are_thinned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        for seq in 1..=600 {
            append(&store, "busy", seq);
            if seq % 3 == 0 {
                snapshot(&store, "busy", seq);
            }
        }
        store.flush().expect("flush");
        let kept: Vec<u64> = store
            .snapshots
            .scan_prefix(prefix("busy"))
            .keys()
            .map(|k| seq_of(&k.expect("key")))
            .collect();
        assert!(kept.len() <= (JOURNAL_RETENTION / SPACING + 3) as usize, "{kept:?}");
        assert_eq!(kept.last(), Some(&600));
        for pair in kept[..kept.len() - 1].windows(2) {
            assert!(pair[1] - pair[0] >= SPACING, "{kept:?}");
        }
        for since in [344, 400, 599] {
            let h = store.history("busy", since, 600).expect("read").expect("kept");
            assert!(
                h.base_seq() <= since && since - h.base_seq() < 2 * SPACING,
                "{since}: {}",
                h.base_seq()
            );
        }
    }

    /// A store written before kept one snapshot per match, by match id:
    /// opened now, each is the match's newest snapshot, and the old tree
    /// is gone.
    #[test]
    fn snapshots_kept_by_match_move_to_the_by_seq_layout_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = sled::open(dir.path()).expect("sled");
            let legacy = db.open_tree("snapshots").expect("tree");
            legacy.insert("sr:match:1", enc(&record(7))).expect("insert");
            legacy.insert("sr:match:2", enc(&record(9))).expect("insert");
            db.flush().expect("flush");
        }
        let store = open_once_released(dir.path());
        assert_eq!(store.snapshot("sr:match:1").expect("read"), Some(record(7)));
        assert_eq!(store.snapshot("sr:match:2").expect("read"), Some(record(9)));
        assert!(!store.db.tree_names().iter().any(|n| n.as_ref() == b"snapshots"));
        drop(store);
        let store = open_once_released(dir.path());
        assert_eq!(store.snapshot("sr:match:1").expect("read"), Some(record(7)));
    }
}
