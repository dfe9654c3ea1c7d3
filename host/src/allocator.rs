//! The binary's heap: mimalloc, its purge delay, and the thread that gives
//! emptied pages back once the delay is over (a module of `main.rs` only;
//! the library leaves the allocator to whoever links it).
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
//! Transparent huge pages are off for the process ([`tune`]): mimalloc 3
//! asks for them on its arenas, and each fault then zeroes 2 MiB, again
//! after every purge that emptied one.

#[cfg(not(feature = "dhat-heap"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

// FFI calls into the allocator's options and collection; nothing else
// here is `unsafe`.
/// Set the purge delay and turn transparent huge pages off; call before
/// any other thread exists.
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

    /// The option number is mimalloc's `purge_delay` (its default is
    /// 1,000 ms in mimalloc 3, and the environment may set it), and a
    /// burst's freed memory goes back to the system while every thread
    /// that freed it stays out of the allocator: the purger did it.
    #[test]
    fn freed_memory_goes_back_after_the_delay_with_the_process_quiet() {
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
}
