//! [`Grow4k`] natively, over a memory of a test's own: where the heap
//! starts, how far it extends, when the memory grows.

use core::alloc::Layout;
use core::ptr::NonNull;

use talc::base::Talc;
use talc::wasm::WasmBinning;

use super::{Grow4k, Memory, STEP, WASM_PAGE};

/// A linear memory of `pages` WebAssembly pages (aligned as one is: its
/// addresses are offsets from 0), growable to `max`, with
/// the heap's base `data` bytes in (as if data and stack came first).
#[derive(Debug)]
struct TestMemory {
    /// Kept for its allocation: all access goes through `base`.
    _buffer: Vec<u8>,
    base: usize,
    data: usize,
    pages: usize,
    max: usize,
    grows: Vec<usize>,
}

impl TestMemory {
    fn new(data: usize, pages: usize, max: usize) -> TestMemory {
        let mut buffer = vec![0u8; (max + 1) * WASM_PAGE];
        // Aligned as a linear memory is (its addresses start at 0).
        let base = (buffer.as_mut_ptr() as usize).next_multiple_of(WASM_PAGE);
        TestMemory {
            _buffer: buffer,
            base,
            data,
            pages,
            max,
            grows: Vec::new(),
        }
    }
}

impl Memory for TestMemory {
    fn heap_base(&self) -> usize {
        self.base + self.data
    }

    fn end(&self) -> u64 {
        (self.base + self.pages * WASM_PAGE) as u64
    }

    fn grow(&mut self, pages: usize) -> bool {
        if self.pages + pages > self.max {
            return false;
        }
        self.pages += pages;
        self.grows.push(pages);
        true
    }
}

type Heap = Talc<Grow4k<TestMemory>, WasmBinning>;

fn heap(data: usize, pages: usize, max: usize) -> Heap {
    Talc::new(Grow4k::new(TestMemory::new(data, pages, max)))
}

fn alloc(h: &mut Heap, size: usize) -> NonNull<u8> {
    let layout = Layout::from_size_align(size, 8).expect("layout");
    let p = unsafe { h.allocate(layout) }.expect("allocation");
    // Write all of it: the memory must really be there.
    unsafe { core::ptr::write_bytes(p.as_ptr(), 0xA5, size) };
    p
}

fn free(h: &mut Heap, p: NonNull<u8>, size: usize) {
    let layout = Layout::from_size_align(size, 8).expect("layout");
    unsafe { h.deallocate(p.as_ptr(), layout) };
}

fn used(h: &Heap) -> usize {
    h.source.heap_end().expect("claimed") - h.source.memory.heap_base()
}

#[test]
fn the_heap_starts_at_its_base_and_ends_at_the_next_step() {
    let mut h = heap(36_000, 2, 4);
    assert_eq!(h.source.heap_end(), None);
    let p = alloc(&mut h, 100);
    let base = h.source.memory.heap_base();
    assert!(p.as_ptr() as usize >= base);
    let end = h.source.heap_end().expect("claimed");
    assert_eq!(end % STEP, 0);
    assert!(
        end - base <= 2 * 4096,
        "a 100-byte allocation claimed {} bytes",
        end - base
    );
    assert!(h.source.memory.grows.is_empty(), "the initial memory had room");
}

#[test]
fn the_heap_stays_near_its_high_water_mark() {
    // An instance's life in small: a state of small records kept, and per
    // event a decoded input, a buffer grown by doubling and a few
    // transients, all freed again.
    let mut h = heap(36_000, 1, 16);
    let mut live = 0usize;
    let mut peak = 0usize;
    let mut state = Vec::new();
    for i in 0..200 {
        let size = 48 + (i % 5) * 16;
        state.push((alloc(&mut h, size), size));
        live += size;
    }
    for event in 0..300 {
        let input = 3_000 + (event % 7) * 100;
        let decoded = alloc(&mut h, input);
        live += input;
        let mut transients = Vec::new();
        for k in 0..30 {
            let size = 24 + (k * 7 + event) % 200;
            transients.push((alloc(&mut h, size), size));
            live += size;
        }
        let mut out = (alloc(&mut h, 64), 64);
        live += 64;
        while out.1 < 4_096 {
            let bigger = (alloc(&mut h, out.1 * 2), out.1 * 2);
            live += bigger.1;
            peak = peak.max(live);
            free(&mut h, out.0, out.1);
            live -= out.1;
            out = bigger;
        }
        peak = peak.max(live);
        for (p, size) in transients.into_iter().chain([out, (decoded, input)]) {
            free(&mut h, p, size);
            live -= size;
        }
        // The state changes a little per event.
        let (p, size) = state.swap_remove(event % state.len());
        free(&mut h, p, size);
        live -= size;
        let size = 48 + (event % 5) * 16;
        state.push((alloc(&mut h, size), size));
        live += size;
    }
    // talc's tags and rounding (up to a word and a chunk unit per
    // allocation) and fragmentation come on top of the bytes asked for.
    assert!(
        used(&h) <= peak * 3 / 2 + 2 * STEP,
        "heap of {} bytes for a peak of {peak} bytes asked for",
        used(&h)
    );
    assert!(used(&h) < WASM_PAGE, "the heap never needed a whole WebAssembly page");
}

#[test]
fn the_memory_grows_only_when_the_heap_passes_its_end() {
    let mut h = heap(60_000, 1, 8);
    let a = alloc(&mut h, 2_000);
    assert!(h.source.memory.grows.is_empty());
    let b = alloc(&mut h, 10_000);
    assert_eq!(
        h.source.memory.grows,
        vec![1],
        "past the first page's end: one more page"
    );
    let c = alloc(&mut h, 20_000);
    assert_eq!(h.source.memory.grows, vec![1], "within the grown page: no growth");
    assert!(h.source.heap_end().expect("claimed") as u64 <= h.source.memory.end());
    for (p, size) in [(a, 2_000), (b, 10_000), (c, 20_000)] {
        free(&mut h, p, size);
    }
}

#[test]
fn an_allocation_larger_than_a_page_grows_the_memory_enough() {
    let mut h = heap(1_000, 1, 8);
    let size = 3 * WASM_PAGE + 5;
    let p = alloc(&mut h, size);
    assert!((p.as_ptr() as usize + size) as u64 <= h.source.memory.end());
    assert_eq!(h.source.memory.grows.iter().sum::<usize>(), 3);
}

#[test]
fn a_memory_that_cannot_grow_fails_the_allocation() {
    let mut h = heap(1_000, 1, 2);
    let _kept = alloc(&mut h, 50_000);
    let layout = Layout::from_size_align(2 * WASM_PAGE, 8).expect("layout");
    assert!(unsafe { h.allocate(layout) }.is_none());
    // What fits still does.
    let _more = alloc(&mut h, 20_000);
}
