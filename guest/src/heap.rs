//! The guest's heap: talc, given memory 4 KiB at a time from the bottom.
//!
//! A live match's instance costs the host the 4 KiB pages of its linear
//! memory that the guest touches, not the 64 KiB WebAssembly pages it has.
//! talc's own WebAssembly source (`talc::wasm::WasmGrowAndExtend`) hands
//! the allocator a whole grown WebAssembly page at a time and never the
//! ~28 KiB between the data's end (`__heap_base`) and the initial memory's
//! end, so allocations, and the size talc writes at the end of a free gap,
//! spread over all 16 pages of every page grown: an instance of the
//! simulator's 40-market matches, woken for one event, touched 16 heap
//! pages for ~35 KB live at its peak.
//!
//! [`Grow4k`] starts the heap at the heap's base (`__heap_base`) and, when
//! nothing free fits an allocation, extends it by what that allocation
//! needs rounded up to 4 KiB, growing the memory only when the extension
//! passes its end. The heap is so never much larger than its high-water
//! mark, and the same instance touches 11 pages. talc still fits an
//! allocation into what it has first; a free chunk at the top merges with
//! the extension.

use core::alloc::Layout;
use core::ptr::NonNull;

use talc::base::Talc;
use talc::base::binning::Binning;

#[cfg(test)]
mod tests;

/// The heap's growth step: the host's page size.
pub const STEP: usize = 4096;
/// A WebAssembly page.
pub const WASM_PAGE: usize = 65_536;
/// More than talc adds to an allocation: its tail and chunk rounding, and
/// on the first claim its bins' list heads (~64 words). An extension that
/// still falls short makes talc ask again, and each one adds a step.
const SLACK: usize = 1024;

/// The linear memory the heap lives in.
pub trait Memory {
    /// The first address the heap may use.
    fn heap_base(&self) -> usize;
    /// The address after the memory's last byte (a `u64`: 4 GiB, the end
    /// of a full 32-bit memory, is one more than a 32-bit `usize` holds).
    fn end(&self) -> u64;
    /// Grow by `pages` WebAssembly pages; false if the memory cannot.
    fn grow(&mut self, pages: usize) -> bool;
}

/// This instance's own memory (index 0) and the linker's `__heap_base`.
#[cfg(target_arch = "wasm32")]
#[derive(Debug)]
pub struct Wasm32;

#[cfg(target_arch = "wasm32")]
unsafe extern "C" {
    /// The first byte after the data and the stack, set by `wasm-ld`.
    static __heap_base: u8;
}

#[cfg(target_arch = "wasm32")]
impl Memory for Wasm32 {
    fn heap_base(&self) -> usize {
        core::ptr::addr_of!(__heap_base) as usize
    }

    fn end(&self) -> u64 {
        core::arch::wasm32::memory_size(0) as u64 * WASM_PAGE as u64
    }

    fn grow(&mut self, pages: usize) -> bool {
        core::arch::wasm32::memory_grow(0, pages) != usize::MAX
    }
}

/// talc's memory source: the heap from the memory's heap base up,
/// extended 4 KiB at a time (see the module docs).
#[derive(Debug)]
pub struct Grow4k<M> {
    memory: M,
    /// The heap's end, once claimed.
    end: Option<NonNull<u8>>,
}

impl<M> Grow4k<M> {
    pub const fn new(memory: M) -> Self {
        Self { memory, end: None }
    }

    /// The heap's end so far (`None` before the first allocation).
    #[cfg(test)]
    pub fn heap_end(&self) -> Option<usize> {
        self.end.map(|e| e.as_ptr() as usize)
    }
}

// SAFETY: `acquire` allocates nothing; it claims memory only the heap uses
// (from the memory's heap base up, in a single-threaded instance), grown
// first if needed, and only ever extends the heap it claimed.
unsafe impl<M: Memory + core::fmt::Debug> talc::source::Source for Grow4k<M> {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        let need = layout
            .size()
            .checked_add(layout.align())
            .and_then(|n| n.checked_add(SLACK))
            .ok_or(())?;
        let from = match talc.source.end {
            Some(end) => end.as_ptr() as usize,
            None => talc.source.memory.heap_base(),
        };
        let to = from
            .checked_add(need)
            .and_then(|t| t.checked_next_multiple_of(STEP))
            .ok_or(())?;
        let memory_end = talc.source.memory.end();
        if to as u64 > memory_end {
            let pages = (to as u64 - memory_end).div_ceil(WASM_PAGE as u64);
            if !talc.source.memory.grow(pages as usize) {
                return Err(());
            }
        }
        let end = match talc.source.end {
            // SAFETY: [from, to) is within the memory (grown above if
            // needed) and nothing but the heap uses it.
            None => unsafe { talc.claim(from as *mut u8, to - from) }.ok_or(())?,
            // SAFETY: `end` is the end of the heap claimed here, and
            // [end, to) lies within the memory, unused.
            Some(end) => unsafe { talc.extend(end, to as *mut u8) },
        };
        talc.source.end = Some(end);
        Ok(())
    }
}
