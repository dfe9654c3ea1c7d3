//! Spare instances: a few guests instantiated ahead of need, so that a
//! match restarting after a crash (or waking from hibernation) takes one
//! ready-made instead of instantiating on its critical path.
//!
//! Instantiating from the pre-linked component costs 44 µs at the median
//! and 170 µs at p99 (the density bench's `instantiate_s`): most of what a
//! restart that replays a checkpoint's few events takes. A spare is a
//! store and instance not yet `init`ed for any match; taking one names
//! its match in the store and calls `init`, as a fresh one would.
//!
//! The platform keeps at most [`SPARES`] of them across guest versions,
//! each tagged with the version (its load, not its hash: two loads of the
//! same bytes are different components) that instantiated it. Workers top
//! them up one at a time in their idle time (after a command, their
//! mailbox empty), so the instantiation moves off the restart's path onto
//! a moment nobody waits on. A version being topped up when the spares
//! are full takes the place of a spare of the version holding the most,
//! if that holds at least two more: versions in use together (a rollout)
//! settle on even shares, the version every match runs ends up with all
//! of them, and a dropped version's spares are dropped with it. The
//! pooling allocator has [`SPARES`] slots beyond the configured matches
//! for them.

use std::collections::VecDeque;
use std::sync::Mutex;

use wasmtime::Store;

use super::HostState;
use super::bindings::MatchWorker;

/// Spare instances the platform keeps, across versions.
pub const SPARES: usize = 16;

/// A guest instantiated, not yet initialised for a match.
pub(super) struct Spare {
    pub store: Store<HostState>,
    pub bindings: MatchWorker,
}

/// The platform's spares, each with the load id of its version.
#[derive(Default)]
pub(super) struct Spares {
    kept: Mutex<VecDeque<(u64, Spare)>>,
}

impl Spares {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Spare)>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A spare of version `load`, the newest one first (its pages are the
    /// likeliest to be warm).
    pub fn take(&self, load: u64) -> Option<Spare> {
        let mut kept = self.lock();
        let i = kept.iter().rposition(|(l, _)| *l == load)?;
        kept.remove(i).map(|(_, s)| s)
    }

    /// Whether a spare of version `load` would be kept ([`Spares::put`]).
    pub fn wanted(&self, load: u64) -> bool {
        room(&self.lock(), load).is_some()
    }

    /// Keep `spare` of version `load`, in place of another version's
    /// spare when full ([`room`]); what could not be kept, or what was
    /// evicted, is returned to be dropped outside the lock (dropping frees
    /// its pool slot).
    pub fn put(&self, load: u64, spare: Spare) -> Option<Spare> {
        let mut kept = self.lock();
        match room(&kept, load) {
            None => Some(spare),
            Some(evict) => {
                let evicted = evict.and_then(|i| kept.remove(i)).map(|(_, s)| s);
                kept.push_back((load, spare));
                evicted
            }
        }
    }

    /// Drop every spare of version `load` (it is being dropped).
    pub fn discard(&self, load: u64) -> Vec<Spare> {
        let mut kept = self.lock();
        let (gone, stay): (VecDeque<_>, VecDeque<_>) = kept.drain(..).partition(|(l, _)| *l == load);
        *kept = stay;
        gone.into_iter().map(|(_, s)| s).collect()
    }

    /// Spares kept now, of any version.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Whether another spare of `load` fits: `Some(None)` while there are
/// fewer than [`SPARES`]; when full, `Some(Some(i))`, the oldest spare of
/// the version holding the most, if that is at least two more than
/// `load` holds. Versions in use together so settle on even shares
/// instead of evicting each other's spares on every idle moment (a
/// rollout runs two), and the version all matches run ends up with all.
fn room(kept: &VecDeque<(u64, Spare)>, load: u64) -> Option<Option<usize>> {
    if kept.len() < SPARES {
        return Some(None);
    }
    let count = |v: u64| kept.iter().filter(|(l, _)| *l == v).count();
    let mine = count(load);
    let (richest, most) = kept
        .iter()
        .map(|(l, _)| *l)
        .filter(|l| *l != load)
        .map(|l| (l, count(l)))
        .max_by_key(|(_, n)| *n)?;
    (most >= mine + 2).then(|| kept.iter().position(|(l, _)| *l == richest))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::SPARES;
    use crate::sandbox::{GuestVersion, Limits, Platform};

    fn platform() -> Platform {
        Platform::new(Limits {
            max_instances: 4,
            memory_bytes: 64 << 20,
            call_deadline: Duration::from_secs(5),
        })
        .expect("platform")
    }

    fn load(p: &Platform) -> GuestVersion {
        p.load(crate::DEFAULT_GUEST).expect("the default guest loads")
    }

    #[test]
    fn a_spare_is_made_in_idle_time_up_to_the_cap_and_taken_by_the_next_instance() {
        let p = platform();
        let v = load(&p);
        assert_eq!(v.spares(), 0);
        for _ in 0..SPARES {
            assert!(v.replenish_spare());
        }
        assert!(!v.replenish_spare(), "at the cap");
        assert_eq!(v.spares(), SPARES);
        // Taken: named for its match and initialised as a fresh one.
        let mut a = v.instantiate(Arc::from("sr:match:1")).expect("from a spare");
        assert_eq!(v.spares(), SPARES - 1);
        let state = a.snapshot_json().expect("snapshot");
        assert!(state.get().contains("sr:match:1"), "{}", state.get());
        // The pool has room for the spares beyond the configured matches
        // and their slack: every match and every spare at once.
        let live: Vec<_> = (0..4 + crate::sandbox::POOL_SLACK)
            .map(|i| v.instantiate(Arc::from(format!("sr:match:{i}"))).expect("a slot"))
            .collect();
        assert!(v.replenish_spare(), "slots for the spares remain");
        drop(live);
    }

    #[test]
    fn the_version_topped_up_takes_the_places_of_another_versions_spares() {
        let p = platform();
        let (old, new) = (load(&p), load(&p));
        for _ in 0..SPARES {
            assert!(old.replenish_spare());
        }
        // Same bytes, another load: not the same component, not its spares.
        // Both in use (a rollout): they settle on even shares, then stop.
        let mut made = 0;
        while new.replenish_spare() || old.replenish_spare() {
            made += 1;
            assert!(made <= SPARES, "versions evicting each other's spares");
        }
        assert_eq!(made, SPARES / 2, "the new version took half the places");
        assert_eq!(new.spares(), SPARES, "the cap holds across versions");
        // The old version retired: its spares go with it, the new one
        // fills the places.
        drop(old);
        assert_eq!(new.spares(), SPARES / 2);
        while new.replenish_spare() {}
        assert_eq!(new.spares(), SPARES);
    }
}
