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
//! sled's flush, each only if the key still points where it did. A key
//! given a new value (a snapshot saved again at its seq: a stop, a guest
//! switch) waits the same way, read meanwhile through `replacing`: pointed
//! at the new value at once, a crash could drop the key (its new value not
//! synced) with the old value still there.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::values::{Loc, ValueError, ValueLog};
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
    /// Keys that point at a value, to point at their new one at the flush:
    /// what sled has now, and the new location.
    replacing: HashMap<(Locs, sled::IVec), (sled::IVec, Loc)>,
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

    /// The value `key` points at, sled having `loc` under it (or a
    /// replacement waiting for the flush). A value a compaction moved
    /// away meanwhile is read again from where sled points now.
    pub(super) fn value(&self, which: Locs, key: &[u8], loc: &[u8]) -> Result<Vec<u8>, StoreError> {
        let what = match which {
            Locs::Journal => "journal",
            Locs::Snapshots => "snapshot",
        };
        let corrupt = |source| StoreError::Value {
            what,
            key: String::from_utf8_lossy(key).into_owned(),
            source,
        };
        let located = |loc: &[u8]| Loc::from_bytes(loc).ok_or_else(|| corrupt(ValueError::NotALocation(loc.len())));
        let replaced = {
            let later = lock(&self.later);
            if later.replacing.is_empty() {
                None
            } else {
                later
                    .replacing
                    .get(&(which, sled::IVec::from(key)))
                    .map(|(_, new)| *new)
            }
        };
        let loc = match replaced {
            Some(new) => new,
            None => located(loc)?,
        };
        match self.values.get(loc) {
            Err(ValueError::Gone(_)) => match self.locs(which).get(key)? {
                Some(now) => self.values.get(located(&now)?).map_err(corrupt),
                None => Err(corrupt(ValueError::Gone(loc.seg))),
            },
            read => read.map_err(corrupt),
        }
    }

    /// Put `value`, encoded, in the value log and point `key` at it, freeing what it
    /// pointed at before.
    pub(super) fn put_value<T: serde::Serialize>(
        &self,
        which: Locs,
        key: Vec<u8>,
        value: &T,
    ) -> Result<(), StoreError> {
        let loc = self.values.put_with(|buf| {
            bincode::serde::encode_into_std_write(value, buf, touchline_guest::codec())
                .expect("records are plain data: encoding into a Vec cannot fail");
        });
        let key = sled::IVec::from(key);
        let superseded = {
            let mut later = lock(&self.later);
            if later.replacing.is_empty() {
                None
            } else {
                later
                    .replacing
                    .get_mut(&(which, key.clone()))
                    .map(|(_, waiting)| std::mem::replace(waiting, loc))
            }
        };
        if let Some(superseded) = superseded {
            self.values.free(superseded);
            return Ok(());
        }
        // A new key (every event, nearly every snapshot) in one traversal
        // of sled's tree; one already there keeps its value until the flush.
        if let Err(taken) = self
            .locs(which)
            .compare_and_swap(&key, None as Option<&[u8]>, Some(&loc.to_bytes()))?
        {
            let old = taken.current.expect("a key compare-and-swap found taken holds a value");
            lock(&self.later).replacing.insert((which, key), (old, loc));
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
    pub(super) fn apply_later(&self) -> Result<(), StoreError> {
        // A replacement leaves `replacing` only once sled has it: a reader
        // that read the old location from sled meanwhile still finds the
        // new one there. One sled failed stays for the next flush.
        let replacing: Vec<_> = lock(&self.later)
            .replacing
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((which, key), (old, new)) in replacing {
            let swapped = self
                .locs(which)
                .compare_and_swap(&key, Some(&old), Some(&new.to_bytes()))?
                .is_ok();
            lock(&self.later).replacing.remove(&(which, key));
            // Only the writer writes: the key is still `old`.
            let freed = if swapped { Loc::from_bytes(&old) } else { Some(new) };
            if let Some(freed) = freed {
                self.values.free(freed);
            }
        }
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
                // Not the whole store in memory at once (the old trees
                // stay until every value is synced).
                if moved % 4096 == 0 {
                    values.sync()?;
                }
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
    /// The writer calls it right after a flush (no removal pending). It
    /// reads both location trees whole, on the writer's thread: commits
    /// wait for it, a pause that grows with the matches tracked (rare:
    /// only when the dead bytes exceed the live ones by a segment).
    /// Returns the segment and how many values moved.
    pub fn compact(&self) -> Result<Option<(u32, usize)>, StoreError> {
        let Some(seg) = self.values.sparse_segment() else {
            return Ok(None);
        };
        let mut moved = Vec::new();
        let copied = self
            .copy_forward(seg, &mut moved)
            .and_then(|()| Ok(self.values.sync()?));
        if let Err(e) = copied {
            // Nothing points at the copies: free them, and leave the segment.
            for (_, _, _, new) in moved {
                self.values.free(new);
            }
            self.values.stuck(seg);
            return Err(e);
        }
        let n = moved.len();
        let mut failed = None;
        for (which, k, old, new) in moved {
            if failed.is_some() {
                self.values.free(new);
                continue;
            }
            match self
                .locs(which)
                .compare_and_swap(&k, Some(&old.to_bytes()), Some(&new.to_bytes()))
            {
                Ok(swapped) => self.values.free(if swapped.is_ok() { old } else { new }),
                Err(e) => {
                    self.values.free(new);
                    failed = Some(e);
                }
            }
        }
        if let Some(e) = failed {
            self.values.stuck(seg);
            return Err(e.into());
        }
        Ok(Some((seg, n)))
    }

    /// Put a copy of every value in `seg` sled points at.
    fn copy_forward(&self, seg: u32, moved: &mut Vec<(Locs, sled::IVec, Loc, Loc)>) -> Result<(), StoreError> {
        for which in [Locs::Journal, Locs::Snapshots] {
            for item in self.locs(which).iter() {
                let (k, v) = item?;
                let Some(loc) = Loc::from_bytes(&v).filter(|l| l.seg == seg) else {
                    continue;
                };
                let bytes = self.value(which, &k, &v)?;
                moved.push((which, k, loc, self.values.put(&bytes)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
