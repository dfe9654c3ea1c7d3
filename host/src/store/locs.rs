//! sled's two trees of locations into the value log ([`super::values`]):
//! `journal_locs` and `snapshot_locs`, keyed like the trees of values they
//! replace (match \0 seq). Here: reading a value through its location,
//! removals held until the values are durable, the check at open, moving a
//! data dir written before the value log, and copying sparse segments
//! forward.
//!
//! Removals wait ([`Store::remove_later`]): a snapshot prunes older
//! snapshots and events, and if sled made those removals durable before the
//! new snapshot was in the log, a crash would leave neither. So they are
//! applied in [`Store::flush`], after the value log's sync and before
//! sled's flush, each only if the key still points where it did.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::values::{Loc, ValueLog};
use super::{Store, StoreError};

/// The trees of locations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Locs {
    Journal,
    Snapshots,
}

/// Removals waiting for the next flush ([`Store::remove_later`]).
#[derive(Debug, Default)]
pub(super) struct Later {
    removals: Vec<(Locs, sled::IVec, sled::IVec)>,
    /// Snapshot keys among them: the pruning rule skips them.
    snapshots: HashSet<sled::IVec>,
}

pub(super) type Pending = Arc<Mutex<Later>>;

fn lock(p: &Pending) -> std::sync::MutexGuard<'_, Later> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    pub(super) fn locs(&self, which: Locs) -> &sled::Tree {
        match which {
            Locs::Journal => &self.journal,
            Locs::Snapshots => &self.snapshots,
        }
    }

    /// The value a location (sled's value under `key`) points at.
    pub(super) fn value(&self, what: &'static str, key: &[u8], loc: &[u8]) -> Result<Vec<u8>, StoreError> {
        let corrupt = |source| StoreError::Value {
            what,
            key: String::from_utf8_lossy(key).into_owned(),
            source,
        };
        let loc = Loc::from_bytes(loc).ok_or_else(|| {
            corrupt(super::values::ValueError::Bad {
                loc: Loc { seg: 0, off: 0, len: 0 },
                why: "not a location",
            })
        })?;
        self.values.get(loc).map_err(corrupt)
    }

    /// Put `bytes` in the value log and point `key` at it, freeing what it
    /// pointed at before.
    pub(super) fn put_value(&self, which: Locs, key: Vec<u8>, bytes: &[u8]) -> Result<(), StoreError> {
        let loc = self.values.put(bytes);
        if let Some(old) = self
            .locs(which)
            .insert(key, &loc.to_bytes())?
            .and_then(|o| Loc::from_bytes(&o))
        {
            self.values.free(old);
        }
        Ok(())
    }

    /// Remove `key` at the next flush, if it still points at `loc` then.
    pub(super) fn remove_later(&self, which: Locs, key: sled::IVec, loc: sled::IVec) {
        let mut later = lock(&self.later);
        if which == Locs::Snapshots {
            later.snapshots.insert(key.clone());
        }
        later.removals.push((which, key, loc));
    }

    /// Whether a snapshot's key is to be removed at the next flush.
    pub(super) fn removing(&self, key: &[u8]) -> bool {
        lock(&self.later).snapshots.contains(key)
    }

    /// Apply the removals held for this flush (the value log is synced).
    pub(super) fn apply_removals(&self) -> Result<(), StoreError> {
        let removals = {
            let mut later = lock(&self.later);
            later.snapshots.clear();
            std::mem::take(&mut later.removals)
        };
        for (which, key, loc) in removals {
            let removed = self
                .locs(which)
                .compare_and_swap(&key, Some(&loc), None as Option<&[u8]>)?
                .is_ok();
            if let Some(loc) = Loc::from_bytes(&loc).filter(|_| removed) {
                self.values.free(loc);
            }
        }
        Ok(())
    }

    /// At open: drop each location the log does not hold (sled wrote it
    /// before a crash took its value) with every later one of its match,
    /// and count the rest as live. Returns how many were dropped.
    pub(super) fn check_locs(tree: &sled::Tree, values: &ValueLog) -> Result<u64, StoreError> {
        let mut dropped = 0;
        let mut broken: Option<Vec<u8>> = None;
        for item in tree.iter() {
            let (k, v) = item?;
            let of_match = &k[..k.len().saturating_sub(8)];
            let loc = Loc::from_bytes(&v).filter(|l| values.holds(*l));
            match loc {
                Some(loc) if broken.as_deref() != Some(of_match) => values.count(loc),
                _ => {
                    tree.remove(&k)?;
                    dropped += 1;
                    broken = Some(of_match.to_vec());
                }
            }
        }
        Ok(dropped)
    }

    /// Move the trees of values written before the value log (`journal`,
    /// `snapshots_by_seq`) into it, then drop them. Idempotent: a start cut
    /// short midway moves them again (what the first try put is freed).
    pub(super) fn migrate_values(
        db: &sled::Db,
        values: &ValueLog,
        into: [(&str, &sled::Tree); 2],
    ) -> Result<usize, StoreError> {
        let mut moved = 0;
        let mut old = Vec::new();
        for (name, locs) in into {
            if !db.tree_names().iter().any(|n| n.as_ref() == name.as_bytes()) {
                continue;
            }
            let legacy = db.open_tree(name)?;
            for item in legacy.iter() {
                let (k, v) = item?;
                let loc = values.put(&v);
                if let Some(prev) = locs.insert(k, &loc.to_bytes())?.and_then(|p| Loc::from_bytes(&p)) {
                    values.free(prev);
                }
                moved += 1;
            }
            old.push(name);
        }
        if old.is_empty() {
            return Ok(0);
        }
        values.sync().map_err(StoreError::Values)?;
        db.flush()?;
        for name in old {
            db.drop_tree(name)?;
        }
        db.flush()?;
        Ok(moved)
    }

    /// Copy the live values of the log's sparsest segment forward, if one
    /// is sparse enough ([`ValueLog::sparse_segment`]): synced before sled
    /// points at the copies, the segment goes once nothing points at it.
    /// The writer calls it right after a flush (no removal pending).
    /// Returns the segment and how many values moved.
    pub fn compact(&self) -> Result<Option<(u32, usize)>, StoreError> {
        let Some(seg) = self.values.sparse_segment() else {
            return Ok(None);
        };
        let mut moved = Vec::new();
        for which in [Locs::Journal, Locs::Snapshots] {
            for item in self.locs(which).iter() {
                let (k, v) = item?;
                let Some(loc) = Loc::from_bytes(&v).filter(|l| l.seg == seg) else {
                    continue;
                };
                let bytes = self.value("compacted", &k, &v)?;
                moved.push((which, k, loc, self.values.put(&bytes)));
            }
        }
        self.values.sync().map_err(StoreError::Values)?;
        let n = moved.len();
        for (which, k, old, new) in moved {
            let swapped = self
                .locs(which)
                .compare_and_swap(&k, Some(&old.to_bytes()), Some(&new.to_bytes()))?;
            self.values.free(if swapped.is_ok() { old } else { new });
        }
        Ok(Some((seg, n)))
    }
}

#[cfg(test)]
mod tests;
