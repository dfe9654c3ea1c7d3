//! Spare instances: a few guests instantiated ahead of need, so that a
//! match restarting after a crash (or waking from hibernation) takes one
//! ready-made instead of instantiating on its critical path.
//!
//! Instantiating from the pre-linked component costs 44 µs at the median
//! and 170 µs at p99 (the density bench's `instantiate_s`): most of what a
//! restart that replays a checkpoint's few events takes. A spare made in
//! idle time is also warmed: `init`ed once for no match, with a name of
//! [`super::WARM_HEAP_BYTES`] zero bytes. That first call takes the page
//! faults every instance pays on its first use (stack, statics, the
//! allocator setting up) and, as the name is copied into the guest's heap
//! and freed when the real `init` replaces it, touches heap room the
//! restored state then reuses, with zeros, never another match's data.
//! Taking a spare names its match in the store and calls `init`, which
//! replaces everything the warm-up made, as for a fresh instance. In the
//! faults bench's 400 restarts (a build logging each, one run each): 11
//! page faults per restart and its CPU p50/p99 116/567 µs unwarmed, 4
//! and 52/198 µs warmed.
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

    use touchline_testkit::procfs::minor_faults;

    use super::{SPARES, Spare};
    use crate::feed::parse::{FeedMessage, parse};
    use crate::sandbox::{GuestInstance, GuestVersion, Limits, Platform, Wasm};

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

    /// A match's saved state with `markets` markets of three outcomes.
    fn state_of(v: &GuestVersion, markets: u32) -> Vec<u8> {
        let odds: String = (1..=markets)
            .map(|m| {
                format!(r#"<market id="{m}" status="1"><outcome id="1" odds="1.5" active="1"/><outcome id="2" odds="3.25" active="1"/><outcome id="3" odds="6.0" active="1"/></market>"#)
            })
            .collect();
        let xml = format!(
            r#"<odds_change product="1" event_id="sr:match:7" timestamp="1"><odds>{odds}</odds></odds_change>"#
        );
        let Ok(FeedMessage::Match(event)) = parse(xml.as_bytes()) else {
            panic!("not a match event")
        };
        let mut i = v.instantiate(Arc::from("sr:match:7")).expect("instance");
        i.apply(&touchline_guest::encode(&event)).expect("applied");
        i.save_state().expect("saved")
    }

    /// Take a spare made by `make` for a match and restore `state` into
    /// it: the page faults that took, and the instance.
    fn restore_from(v: &GuestVersion, make: impl Fn(&Wasm) -> Spare, state: &[u8]) -> (u64, GuestInstance) {
        let wasm = v.inner.wasm.as_ref().expect("a Wasm version");
        assert!(wasm.platform.inner.spares.put(wasm.load, make(wasm)).is_none());
        let before = minor_faults("thread-self");
        let mut i = v.instantiate(Arc::from("sr:match:7")).expect("from the spare");
        i.restore_state(state).expect("restored");
        (minor_faults("thread-self") - before, i)
    }

    #[test]
    fn a_warmed_spare_took_its_first_page_faults_ahead_and_serves_as_a_fresh_one() {
        let p = platform();
        let v = load(&p);
        let state = state_of(&v, 40);
        let (cold, mut a) = restore_from(&v, |w| w.instantiate_spare(false).expect("cold"), &state);
        let (warm, mut b) = restore_from(&v, |w| w.instantiate_spare(true).expect("warm"), &state);
        // Nothing of the warm-up shows: same state, same snapshot.
        assert_eq!(a.save_state().expect("a"), b.save_state().expect("b"));
        assert_eq!(a.snapshot_json().expect("a").get(), b.snapshot_json().expect("b").get());
        // Its init's pages (stack, statics, allocator) and heap room for
        // the state were touched before it was taken.
        assert!(
            warm + 4 <= cold,
            "page faults taking a warm spare: {warm}, a cold one: {cold}"
        );
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
