//! How much address space each guest's linear memory reserves, and so
//! whether the compiled guest checks the bounds of every memory access.
//!
//! A 32-bit Wasm memory reserved in full (4 GiB, then a guard region)
//! needs no bounds checks: an index plus a static offset smaller than the
//! guard lands in the reservation or in the guard, inaccessible beyond the
//! memory's current size, where the access faults and the call traps.
//! Reserving only the cap (`--guest-memory-mib`) makes Cranelift compare
//! every load's and store's address first and guard it against Spectre
//! with a conditional move. On the pipeline at 1,000 matches the full
//! reservation took the Wasm run without durability from 8.25-8.56 CPU-s
//! to 7.48-7.93 (three runs each, alternated) and the durable run from
//! 9.11-9.36 to 8.81-9.03.
//!
//! The pooling allocator reserves every slot up front, so the full
//! reservation costs 4 GiB of address space per slot: the default 10,000
//! matches (plus slack and spares) take ~39 TiB of the 128 TiB a process
//! has on x86-64. Platforms in one process share [`address_budget`], half
//! of what the process may map; a pool that does not fit in what is left
//! (`--max-matches` above ~16,000 on x86-64, a smaller address space as
//! some arm64 kernels give, an `RLIMIT_AS`, or platforms whose pools add up
//! past it) reserves only its cap and keeps the checks. So does a pool whose full reservation the kernel
//! refuses ([`super::Platform::new`] retries). Either way the guest traps
//! on an access out of its memory: the tests run both.
//!
//! Page tables are the cost besides address space: a slot once used keeps
//! its page-table pages after its memory is released (`MADV_DONTNEED` frees
//! pages, not tables), and with slots 4 GiB apart each needs a directory
//! page of its own: ~4 KB more per slot used than with slots of the cap,
//! kernel memory that the RSS does not show (the bench's density scenario
//! reports `VmPTE`).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::process::{Resource, getrlimit};

/// A full reservation: every 32-bit index.
pub const FULL: u64 = 1 << 32;
/// The guard region after (and before) each memory. Accesses with a static
/// offset below it need no check in a full reservation; larger ones keep
/// theirs.
pub const GUARD: u64 = 64 * 1024;
/// Address space the full reservations of one process may take together:
/// half of what it may map, the rest left to everything else. What it may
/// map is the user address space, found as the power of two above one of
/// its own addresses (a stack high in it: 128 TiB on x86-64, 512 GiB on
/// an arm64 kernel of 39-bit addresses), or its `RLIMIT_AS` if lower.
pub fn address_budget() -> u64 {
    static BUDGET: OnceLock<u64> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        let here = 0u8;
        let space = (std::ptr::addr_of!(here) as usize as u64).next_power_of_two();
        let limit = getrlimit(Resource::As).current.unwrap_or(u64::MAX);
        space.min(limit) / 2
    })
}

/// Address space claimed by the full reservations alive in this process.
static CLAIMED: AtomicU64 = AtomicU64::new(0);

/// The reservation of one platform's memories: full (bounds checks elided)
/// while it holds its claim on the process's budget, else its cap.
#[derive(Debug)]
pub struct Reservation {
    per_memory: u64,
    claimed: u64,
    budget: &'static AtomicU64,
}

impl Reservation {
    /// The reservation for `slots` memories capped at `cap` bytes each:
    /// full if they fit in what is left of [`address_budget`].
    pub fn claim(slots: u32, cap: u64) -> Reservation {
        Reservation::claim_from(&CLAIMED, address_budget(), slots, cap)
    }

    fn claim_from(budget: &'static AtomicU64, limit: u64, slots: u32, cap: u64) -> Reservation {
        let per_memory = cap.max(FULL);
        let need = u64::from(slots).saturating_mul(per_memory + 2 * GUARD);
        let took = budget.fetch_update(Ordering::AcqRel, Ordering::Acquire, |claimed| {
            claimed.checked_add(need).filter(|total| *total <= limit)
        });
        match took {
            Ok(_) => Reservation {
                per_memory,
                claimed: need,
                budget,
            },
            // A cap of 4 GiB is a full reservation anyway: reserved
            // unclaimed, as nothing smaller would hold it.
            Err(_) => Reservation::capped(budget, cap),
        }
    }

    fn capped(budget: &'static AtomicU64, cap: u64) -> Reservation {
        Reservation {
            per_memory: cap,
            claimed: 0,
            budget,
        }
    }

    /// Give the claim back and reserve only `cap` (the kernel refused the
    /// full reservation).
    pub fn fall_back(self, cap: u64) -> Reservation {
        Reservation::capped(self.budget, cap)
    }

    /// Bytes reserved per memory.
    pub fn per_memory(&self) -> u64 {
        self.per_memory
    }

    /// Whether the compiled guest's accesses go unchecked (the guard
    /// regions trap instead).
    pub fn elides_bounds_checks(&self) -> bool {
        self.per_memory >= FULL
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.claimed, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn pools_get_full_reservations_while_the_budget_lasts() {
        static BUDGET: AtomicU64 = AtomicU64::new(0);
        let limit = 10 * (FULL + 2 * GUARD);
        let a = Reservation::claim_from(&BUDGET, limit, 6, 32 * MIB);
        assert!(a.elides_bounds_checks());
        assert_eq!(a.per_memory(), FULL);
        let b = Reservation::claim_from(&BUDGET, limit, 6, 32 * MIB);
        assert!(!b.elides_bounds_checks(), "6 + 6 slots exceed a budget of 10");
        assert_eq!(b.per_memory(), 32 * MIB, "the cap, checked");
        let c = Reservation::claim_from(&BUDGET, limit, 4, 32 * MIB);
        assert!(c.elides_bounds_checks(), "6 + 4 fit");
        drop((a, b));
        assert_eq!(
            BUDGET.load(Ordering::Acquire),
            4 * (FULL + 2 * GUARD),
            "a's claim given back"
        );
        let d = c.fall_back(32 * MIB);
        assert!(!d.elides_bounds_checks());
        assert_eq!(BUDGET.load(Ordering::Acquire), 0, "a refused claim is given back");
    }

    #[test]
    fn a_cap_of_four_gib_claims_its_share_and_is_full_past_the_budget_too() {
        static BUDGET: AtomicU64 = AtomicU64::new(0);
        let r = Reservation::claim_from(&BUDGET, 2 * (FULL + 2 * GUARD), 2, FULL);
        assert_eq!(r.per_memory(), FULL);
        assert!(r.elides_bounds_checks());
        assert_eq!(BUDGET.load(Ordering::Acquire), 2 * (FULL + 2 * GUARD));
        let past = Reservation::claim_from(&BUDGET, 2 * (FULL + 2 * GUARD), 1, FULL);
        assert!(past.elides_bounds_checks() && past.claimed == 0);
        drop((r, past));
        assert_eq!(BUDGET.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_huge_pool_overflows_into_the_capped_reservation() {
        static BUDGET: AtomicU64 = AtomicU64::new(0);
        let r = Reservation::claim_from(&BUDGET, address_budget(), u32::MAX, 32 * MIB);
        assert!(!r.elides_bounds_checks());
        assert_eq!(BUDGET.load(Ordering::Acquire), 0);
    }

    #[test]
    fn the_budget_is_half_what_the_process_may_map() {
        let budget = address_budget();
        let limit = getrlimit(Resource::As).current.unwrap_or(u64::MAX);
        assert!(budget > 0 && budget <= limit / 2, "{budget} against RLIMIT_AS {limit}");
        if cfg!(target_arch = "x86_64") && limit == u64::MAX {
            // 4-level paging: 128 TiB of user space (5-level paging maps
            // above it only when asked to).
            assert_eq!(budget, 64 << 40);
        }
    }
}
