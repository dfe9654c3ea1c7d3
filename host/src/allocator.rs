//! The binary's heap: mimalloc, its purge delay, the thread that gives
//! emptied pages back once the delay is over, the runtime threads'
//! collections when they park, and the resident heap (a module of
//! `main.rs` only; the library leaves the allocator to whoever links it).
//!
//! mimalloc instead of glibc's malloc. A match that falls asleep frees its
//! frames and buffers while the small records it keeps (task, mailbox,
//! state) stay: under glibc those pinned the pages around them, so RSS
//! stayed at the high-water mark of every match ever awake (tens of KB per
//! hibernated match in the density scenario). mimalloc keeps small objects
//! of one size together and returns a page after it empties.
//!
//! When it returns it is [`PURGE_DELAY_MS`] later, and only when some
//! thread calls into the allocator's slow path after that: a server that
//! goes quiet would keep what its last burst freed. [`spawn_purger`] runs
//! a thread that asks every [`PURGE_SWEEP`] for the purges that are due,
//! so an idle server gives pages back within delay + sweep.
//!
//! A page empties only once its blocks are back on it. mimalloc 3 gives
//! up a page that fills (whoever frees into it then frees it), but on a
//! page still in its owner's queues, as the pages a busy thread allocates
//! from are, a block another thread frees waits until the owner next
//! allocates there. A match is put to sleep by whichever runtime thread
//! runs it then, so much of what falls asleep is freed across threads;
//! each runtime thread collects its own heaps when it parks
//! ([`on_park`], at most every [`PARK_COLLECT_EVERY`]), which puts those
//! blocks back and hands emptied pages to the purge.
//!
//! A match's permanent records (task, worker, mailbox, `Fanout`,
//! `StateCell`, id) come from a heap of their own ([`Heaps`],
//! [`touchline::resident`]), so they do not pin the pages of the burst
//! they were made in.
//!
//! Transparent huge pages are off for the process ([`tune`]): mimalloc 3
//! asks for them on its arenas, and each fault then zeroes 2 MiB, again
//! after every purge that emptied one.

#[cfg(not(feature = "dhat-heap"))]
#[global_allocator]
static ALLOCATOR: Heaps = Heaps;

/// mimalloc, with a second heap for what [`touchline::resident::scope`]
/// marks: a match's permanent records, packed on pages of their own
/// instead of among the transient buffers of the burst they were made in
/// (see that module). mimalloc 3's heaps allocate from any thread, and any
/// block is freed (and reallocated) the same way whichever heap it came
/// from.
#[cfg(not(feature = "dhat-heap"))]
struct Heaps;

/// The resident heap, made by [`tune`]; null until then (and if mimalloc
/// could not make one: allocations then go to the default heap).
static RESIDENT: std::sync::atomic::AtomicPtr<libmimalloc_sys::mi_heap_t> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// The resident heap, if this allocation is marked for it.
#[cfg(not(feature = "dhat-heap"))]
fn resident_heap() -> Option<*mut libmimalloc_sys::mi_heap_t> {
    if !touchline::resident::active() {
        return None;
    }
    let heap = RESIDENT.load(std::sync::atomic::Ordering::Acquire);
    (!heap.is_null()).then_some(heap)
}

// SAFETY: every block comes from mimalloc (one of its heaps) with the
// layout's size and alignment, and mimalloc frees and reallocates any of
// its blocks; the rest is `MiMalloc`'s own implementation.
#[cfg(not(feature = "dhat-heap"))]
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Heaps {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        match resident_heap() {
            // SAFETY: a live heap (never deleted), a non-zero size (the
            // caller's contract), a power-of-two alignment (Layout's).
            Some(heap) => unsafe {
                libmimalloc_sys::mi_heap_malloc_aligned(heap, layout.size(), layout.align()).cast()
            },
            // SAFETY: the caller's contract, passed on.
            None => unsafe { mimalloc::MiMalloc.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        match resident_heap() {
            // SAFETY: as in `alloc`.
            Some(heap) => unsafe {
                libmimalloc_sys::mi_heap_zalloc_aligned(heap, layout.size(), layout.align()).cast()
            },
            // SAFETY: the caller's contract, passed on.
            None => unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: a block of mimalloc's, from either heap.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `dealloc`; the new block comes from the default
        // heap (a record that grows was not a fixed-size one).
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

/// Heap profiling (`--features dhat-heap`): every allocation is recorded
/// with its call stack; the profile is written when `main` returns.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// mimalloc's `purge_delay` option: how long (ms) an emptied page stays
/// committed before it is given back (mimalloc 3's default, set here so a
/// different build's default does not change it). Given back at once (0,
/// until December 2026) every page a burst emptied cost an `madvise`, a
/// TLB shootdown on the other core and a zero-filled page fault when it
/// was used again: 2% of the server's samples in `madvise` alone in the
/// pipeline at 1,000 matches, and pipeline/parse 0.422–0.442 (CPU
/// 13.3–13.9 s, 4 runs) against 0.458–0.469 (12.5–12.9 s, 4 runs) with
/// 1,000 ms, alternated. `MIMALLOC_PURGE_DELAY` set in the environment wins.
pub const PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// How often the purger asks for the purges that are due (mimalloc runs
/// at most one sweep per tenth of the delay anyway).
pub const PURGE_SWEEP: std::time::Duration = std::time::Duration::from_millis(100);

/// mimalloc's option number for `purge_delay` (the C header's
/// `mi_option_purge_delay`, which the Rust bindings do not name).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc's option number for `allow_thp` (the header's
/// `mi_option_allow_thp`, unnamed in the bindings too): whether it
/// `madvise`s its arenas for transparent huge pages. mimalloc 3 does by
/// default; each first touch of a 2 MiB range then faulted in and zeroed
/// a whole huge page, and again whenever a purge had emptied one:
/// `clear_page_erms` under `do_huge_pmd_anonymous_page` took 5.5% of the
/// server's samples in the pipeline at 1,000 matches, and pipeline/parse
/// was 0.49–0.52 with them against 0.57–0.60 without (CPU 9.8–10.1
/// against 8.7–9.3 s, 3 runs each, alternated). `MIMALLOC_ALLOW_THP` set in the
/// environment wins.
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

// FFI calls into the allocator (its options, heaps and collections) and
// the global allocator's implementation; nothing else here is `unsafe`.
/// Set the purge delay, make the resident heap and turn transparent huge
/// pages off; call before any other thread exists.
///
/// Huge pages go off for the whole process (`PR_SET_THP_DISABLE`), not
/// only for the arenas mimalloc reserves from now on: one may have been
/// reserved, and `madvise`d, before `main`, and a Wasm instance's few
/// touched pages are no place for 2 MiB ones either. A failing `prctl`
/// only leaves them as the system has them.
#[allow(unsafe_code)]
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: an option store, before any other thread exists (the
        // runtime starts after it); the option number is the header's.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    static RESIDENT_MADE: std::sync::Once = std::sync::Once::new();
    RESIDENT_MADE.call_once(|| {
        // SAFETY: a heap of mimalloc's, made once and never deleted.
        let heap = unsafe { libmimalloc_sys::mi_heap_new() };
        RESIDENT.store(heap, std::sync::atomic::Ordering::Release);
    });
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: as above.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0) };
        if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
            eprintln!("warning: transparent huge pages stay as the system has them: {e}");
        }
    }
}

/// Start the thread that gives back the pages whose purge delay is over.
/// It holds no heap of its own worth collecting, so each sweep costs only
/// the allocator's check of its arenas; it runs until the process exits.
#[allow(unsafe_code)]
pub fn spawn_purger() -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("heap-purger".into())
        .spawn(|| {
            // The thread's allocator state exists only once it allocated.
            drop(std::hint::black_box(Box::new(0u64)));
            loop {
                std::thread::sleep(PURGE_SWEEP);
                // SAFETY: a collection of this thread's (empty) heap and
                // of the process's arenas, which mimalloc guards itself.
                unsafe { libmimalloc_sys::mi_collect(false) };
            }
        })
        .map(drop)
}

/// How often at most a runtime thread collects its own heap when it
/// parks ([`on_park`]): the purger's sweep. A thread that parks sooner
/// after its last collection skips this one, and if it then stays idle
/// it keeps what it freed since until it next wakes: at most once a
/// second instead, the density scenario read 3,177 B per hibernated
/// match (one run) against 2,416 / 2,449 B. Each collection visits the pages the thread owns; at
/// this rate the pipeline's ratio to the parse limit read 0.694 / 0.512 /
/// 0.671 / 0.624 against 0.663 / 0.652 / 0.657 / 0.711 without it
/// (alternated, the same binary).
pub const PARK_COLLECT_EVERY: std::time::Duration = PURGE_SWEEP;

/// A runtime thread is about to park (tokio's `on_thread_park`): collect
/// its heaps if a match has given memory back since its last collection
/// ([`touchline::resident::note_given_back`]), at most every
/// [`PARK_COLLECT_EVERY`]. mimalloc gives a page back only once it is
/// empty, and blocks freed by other threads wait on the page until its
/// owner next allocates in it: a match's buffers are freed by whichever
/// thread runs it when it falls asleep, and a thread that then idles kept
/// every page they emptied (the hibernated match's figure read 3.2–6.6 KB
/// run to run, the same binary). Collecting hands those frees back to
/// their pages and empty pages to the arenas, whose purge delay still
/// applies. A collection visits every page the thread owns, so a server
/// whose matches all stay awake does none. (Collecting at every park, at
/// most every 100 ms, the fan-out at 10,000 clients read 1.20 CPU-s per
/// 100k deliveries against 1.10 without, one run each, and 1.21 gated:
/// within the spread of a saturated machine, the Node peer's p99 6.4–7.8
/// s in the same runs.)
#[allow(unsafe_code)]
pub fn on_park() {
    thread_local! {
        /// When this thread last collected, and the count it had seen.
        static LAST: std::cell::Cell<(Option<std::time::Instant>, u64)> =
            const { std::cell::Cell::new((None, 0)) };
    }
    // Every park asks: the clock is read only once something was given
    // back.
    let given_back = touchline::resident::given_back();
    let due = LAST
        .try_with(|last| {
            let (at, seen) = last.get();
            if seen == given_back {
                return false;
            }
            let now = std::time::Instant::now();
            if at.is_some_and(|t| now.duration_since(t) < PARK_COLLECT_EVERY) {
                return false;
            }
            last.set((Some(now), given_back));
            true
        })
        .unwrap_or(false);
    if !due {
        return;
    }
    // SAFETY: collections of this thread's own heaps (the default one and
    // its share of the resident one), which mimalloc allows at any time.
    unsafe {
        libmimalloc_sys::mi_collect(false);
        let resident = RESIDENT.load(std::sync::atomic::Ordering::Acquire);
        if !resident.is_null() {
            libmimalloc_sys::mi_heap_collect(resident, false);
        }
    }
}

#[cfg(all(test, not(feature = "dhat-heap")))]
mod tests {
    use std::io::Read as _;
    use std::time::{Duration, Instant};

    use super::*;

    /// The purge delay in force (ms).
    #[allow(unsafe_code)]
    fn purge_delay_ms() -> std::ffi::c_long {
        // SAFETY: an option read.
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    /// Resident bytes of this process, read without allocating (an
    /// allocation here could run the purges the test waits for).
    fn resident() -> u64 {
        let mut buf = [0u8; 128];
        let mut f = std::fs::File::open("/proc/self/statm").expect("statm");
        let n = f.read(&mut buf).expect("read statm");
        let text = std::str::from_utf8(&buf[..n]).expect("utf-8");
        let pages: u64 = text
            .split(' ')
            .nth(1)
            .expect("resident field")
            .parse()
            .expect("a number");
        pages * 4096
    }

    /// mimalloc no longer asks for huge pages, and the process has them
    /// off (the kernel's own view, `THP_enabled` in `/proc/self/status`).
    #[test]
    fn transparent_huge_pages_are_off() {
        tune();
        // SAFETY: an option read.
        #[allow(unsafe_code)]
        let allowed = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_ALLOW_THP) };
        if let Ok(v) = std::env::var("MIMALLOC_ALLOW_THP") {
            let on = matches!(v.to_ascii_lowercase().as_str(), "1" | "on" | "true" | "yes");
            assert_eq!(allowed != 0, on, "the environment's choice ({v}) stands");
            return;
        }
        // (On a mimalloc 2 build option 43 would not exist and read 0; the
        // kernel's view below is what counts.)
        assert_eq!(allowed, 0);
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let line = status
            .lines()
            .find(|l| l.starts_with("THP_enabled:"))
            .expect("THP_enabled line");
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }

    // mimalloc 3's `mi_heap_contains` (the bindings name only the older
    // versions' call; the signature is the v3 header's).
    #[allow(unsafe_code)]
    unsafe extern "C" {
        fn mi_heap_contains(heap: *const libmimalloc_sys::mi_heap_t, p: *const std::ffi::c_void) -> bool;
    }

    /// Allocations inside a resident scope come from the resident heap,
    /// the rest from the default one, and either frees the same way.
    #[test]
    #[allow(unsafe_code)]
    fn a_resident_scope_allocates_from_the_resident_heap() {
        tune();
        let heap = RESIDENT.load(std::sync::atomic::Ordering::Acquire);
        assert!(!heap.is_null(), "tune made the resident heap");
        let inside = touchline::resident::scope(|| Box::new([7u8; 700]));
        let outside = Box::new([7u8; 700]);
        // SAFETY: a query about two live blocks and a live heap.
        let (a, b) = unsafe {
            (
                mi_heap_contains(heap, std::ptr::from_ref(&*inside).cast()),
                mi_heap_contains(heap, std::ptr::from_ref(&*outside).cast()),
            )
        };
        assert!(a, "the scope's block is in the resident heap");
        assert!(!b, "the other block is not");
        drop((inside, outside));
    }

    /// The tests that read the process's RSS, one at a time.
    static RSS_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Wait (up to the purge delay and 10 s) for the RSS to fall at least
    /// 48 MiB below `full`.
    fn wait_for_48_mib_below(full: u64) {
        let deadline = Instant::now() + Duration::from_millis(purge_delay_ms() as u64) + Duration::from_secs(10);
        let mut now = resident();
        while now + 48 * 1024 * 1024 > full {
            assert!(
                Instant::now() < deadline,
                "RSS {full} B with the blocks, still {now} B after freeing them"
            );
            std::thread::sleep(Duration::from_millis(20));
            now = resident();
        }
    }

    /// Blocks freed by another thread than the one that allocated them
    /// (a match's buffers, freed by whichever runtime thread puts it to
    /// sleep) go back once their owner parks: without [`on_park`] the
    /// owner's pages keep them until it next allocates in them, and an
    /// idle owner never does. It collects only once a match has given
    /// memory back.
    #[test]
    fn what_another_thread_freed_goes_back_once_its_owner_parks() {
        let _one = RSS_TESTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tune();
        spawn_purger().expect("purger");
        let (blocks_tx, blocks_rx) = std::sync::mpsc::channel();
        let (freed_tx, freed_rx) = std::sync::mpsc::channel::<()>();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let (parked_tx, parked_rx) = std::sync::mpsc::channel::<()>();
        let (noted_tx, noted_rx) = std::sync::mpsc::channel::<()>();
        let owner = std::thread::spawn(move || {
            // 64 MiB in 2 KiB blocks, touched. mimalloc 3 gives up pages
            // that fill (and whoever frees into one then frees it); the
            // owner frees one block in 16 itself, which takes each page
            // back into its own queues, as the pages a busy runtime
            // thread allocates from are. The rest is handed over.
            let mut blocks: Vec<Option<Box<[u8; 2048]>>> =
                (0..32 * 1024).map(|_| Some(Box::new([1u8; 2048]))).collect();
            for block in blocks.iter_mut().step_by(16) {
                *block = None;
            }
            blocks_tx.send(blocks).expect("send the blocks");
            freed_rx.recv().expect("told they are freed");
            // No match has given memory back yet: no collection.
            on_park();
            parked_tx.send(()).expect("the test waits");
            noted_rx.recv().expect("told to go on");
            // As a match falling asleep says it gave memory back.
            touchline::resident::note_given_back();
            on_park();
            // Parked, out of the allocator, until the test is over.
            let _ = stop_rx.recv();
        });
        let blocks = blocks_rx.recv().expect("the blocks");
        let full = resident();
        drop(blocks);
        freed_tx.send(()).expect("the owner waits");
        parked_rx.recv().expect("the owner parked");
        // A whole purge delay and two sweeps later, nothing went back.
        std::thread::sleep(Duration::from_millis(purge_delay_ms() as u64) + 2 * PURGE_SWEEP);
        let kept = resident();
        assert!(
            kept + 16 * 1024 * 1024 > full,
            "RSS {full} B with the blocks, {kept} B before any collection"
        );
        noted_tx.send(()).expect("the owner waits");
        wait_for_48_mib_below(full);
        drop(stop_tx);
        owner.join().expect("owner");
    }

    /// The option number is mimalloc's `purge_delay` (its default is
    /// 1,000 ms in mimalloc 3, and the environment may set it), and a
    /// burst's freed memory goes back to the system while every thread
    /// that freed it stays out of the allocator: the purger did it.
    #[test]
    fn freed_memory_goes_back_after_the_delay_with_the_process_quiet() {
        let _one = RSS_TESTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tune();
        match std::env::var("MIMALLOC_PURGE_DELAY") {
            Ok(v) => assert_eq!(purge_delay_ms().to_string(), v),
            Err(_) => assert_eq!(purge_delay_ms(), PURGE_DELAY_MS),
        }
        spawn_purger().expect("purger");
        // 64 MiB in 2 KiB blocks, touched, then freed.
        let blocks: Vec<Box<[u8; 2048]>> = (0..32 * 1024).map(|_| Box::new([1u8; 2048])).collect();
        let full = resident();
        drop(blocks);
        wait_for_48_mib_below(full);
    }
}
