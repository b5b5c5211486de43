//! The process allocator: the system allocator, except that one allocation of
//! [`LARGE`] bytes or more is an anonymous `MAP_NORESERVE` mapping.
//!
//! **Why.** kafka-protocol 0.18 decodes every array as
//! `Vec::with_capacity(count)`, with `count` read off the wire before a single
//! element is. A 14-byte Metadata v0 body that claims 2^31 − 1 topics asks for
//! 154 GB; the system allocator refuses, and Rust answers a refused allocation
//! by aborting the process, so one hostile frame stopped the whole broker
//! (`net/fuzz/seeds/request_frame/crash-oom-*`). A `MAP_NORESERVE` mapping
//! only reserves address space: pages are committed when touched, and the
//! decoder touches one element per element it actually decodes — bounded by
//! the frame, which the memory budget already bounds. The decode then fails
//! on the missing bytes, the mapping is unmapped, and the client gets an
//! error like any other malformed request.
//!
//! No allocation Brook makes on purpose comes near [`LARGE`] (the largest are
//! request frames, capped by `socket.request.max.bytes`, and segment write
//! buffers), so the mapping path serves exactly those wire-declared capacities.
//!
//! Limits: the address space is 128 TiB and a shard decodes one request at a
//! time, so a few reservations of at most 2^32 × (element size) are live at
//! once. Under `vm.overcommit_memory = 2` Linux ignores `MAP_NORESERVE`, the
//! mapping fails and the old abort comes back (RELIABILITY.md says so). The
//! real fix belongs in the codec — cap the capacity at the bytes remaining —
//! and this module goes away when kafka-protocol does that.
//!
//! Installed with `#[global_allocator]` by the `brook` binary, by the
//! request-frame fuzz target and by the tests that replay those frames.
use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// Allocations of this many bytes or more are mappings (1 GiB).
pub const LARGE: usize = 1 << 30;

/// Mappings are page-aligned; a larger alignment goes to the system allocator.
const PAGE: usize = 4096;

/// See the module documentation.
pub struct BrookAlloc;

fn mapped(layout: Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= PAGE
}

unsafe impl GlobalAlloc for BrookAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if mapped(layout) {
            map(layout.size())
        } else {
            // SAFETY: the caller's contract for `alloc` is passed on unchanged.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if mapped(layout) {
            // Anonymous mappings are zero-filled.
            map(layout.size())
        } else {
            // SAFETY: as for `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if mapped(layout) {
            // SAFETY: `ptr` came from `map(layout.size())` (same layout, by the
            // caller's contract) and nothing refers to it any more.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
        } else {
            // SAFETY: `ptr` came from `System` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `realloc`'s contract guarantees `new_size`, rounded up to
        // `layout.align()`, does not overflow isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !mapped(layout) && !mapped(new_layout) {
            // SAFETY: both sides belong to `System`.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Crossing between the two allocators (or mapping to mapping): move.
        // SAFETY: `new_layout` has a non-zero size (realloc's contract).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the shorter length and distinct.
            unsafe {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// An anonymous, private, unreserved mapping of `size` bytes, or null.
fn map(size: usize) -> *mut u8 {
    // SAFETY: a fresh anonymous mapping aliases nothing.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}
