//! A heap buffer aligned for O_DIRECT.
//!
//! O_DIRECT on ext4 requires the buffer address, the file position and the length
//! of every write to be multiples of the logical block size (4 KiB on the disks
//! Brook targets). `AlignedBuf` owns such memory and implements compio's `IoBuf`
//! so it can be moved into an io_uring write and handed back with the result.

use std::alloc::{Layout, alloc, dealloc};
use std::ptr::NonNull;

/// Block size every O_DIRECT write is aligned to.
pub const BLOCK_BYTES: usize = 4096;
const _: () = assert!(BLOCK_BYTES.is_power_of_two());

/// Rounds `n` up to a multiple of [`BLOCK_BYTES`].
pub fn round_up(n: u64) -> u64 {
    n.div_ceil(BLOCK_BYTES as u64) * BLOCK_BYTES as u64
}

/// Rounds `n` down to a multiple of [`BLOCK_BYTES`].
pub fn round_down(n: u64) -> u64 {
    n - n % BLOCK_BYTES as u64
}

/// Owned, 4 KiB-aligned bytes with a fill length.
///
/// The memory is not zeroed when allocated: only the filled bytes and, when the
/// buffer is written, the padding of its last block ([`AlignedBuf::into_padded`])
/// are ever read, so an idle megabyte costs no resident memory until it is used.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    capacity: usize,
    len: usize,
}

// SAFETY: the buffer is uniquely owned; moving it between threads moves ownership.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// A buffer that can hold at least `capacity` bytes (rounded up to whole blocks).
    pub fn with_capacity(capacity: usize) -> Self {
        let (ptr, capacity) = allocate(capacity);
        AlignedBuf {
            ptr,
            capacity,
            len: 0,
        }
    }

    /// A buffer with no memory at all (capacity 0); the first append allocates.
    pub fn empty() -> Self {
        AlignedBuf {
            ptr: NonNull::<[u8; BLOCK_BYTES]>::dangling().cast(),
            capacity: 0,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `len` bytes were written by `extend_from_slice`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Appends bytes, growing (and re-aligning) the allocation when needed.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let needed = self.len + bytes.len();
        if needed > self.capacity {
            self.grow(needed.max(self.capacity * 2));
        }
        // SAFETY: capacity checked above; regions do not overlap (bytes is not ours).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                bytes.len(),
            );
        }
        self.len = needed;
    }

    /// Empties the buffer for reuse. Nothing is zeroed: `into_padded` zeroes the
    /// padding of the last block when the buffer is written, which is the only
    /// place stale bytes could otherwise reach the disk.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The last `n` bytes appended, for patching fields in place.
    pub fn last_mut(&mut self, n: usize) -> &mut [u8] {
        assert!(
            n <= self.len,
            "last_mut({n}) of a buffer holding {}",
            self.len
        );
        // SAFETY: ptr is valid for `len` initialised bytes and we hold `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(self.len - n), n) }
    }

    /// Length rounded up to whole blocks: how many bytes an O_DIRECT write of this buffer covers.
    /// The padding past `len` is always zero.
    pub fn padded_len(&self) -> usize {
        round_up(self.len as u64) as usize
    }

    /// A view of this buffer padded with zeros to whole blocks, for O_DIRECT writes.
    pub fn into_padded(self) -> PaddedBuf {
        let (len, padded) = (self.len, self.padded_len());
        // SAFETY: padded <= capacity (a whole number of blocks, 0 for an empty
        // buffer, where this writes nothing); we own the bytes.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(len), 0, padded - len) };
        PaddedBuf(self)
    }

    fn grow(&mut self, capacity: usize) {
        let mut bigger = AlignedBuf::with_capacity(capacity);
        bigger.extend_from_slice(self.as_slice());
        *self = bigger;
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.capacity > 0 {
            // SAFETY: from `allocate` with this capacity, and no longer used.
            unsafe { release(self.ptr, self.capacity) }
        }
    }
}

/// Block-aligned, uninitialised memory of at least `capacity` bytes (rounded up
/// to whole blocks); returns it with its rounded capacity.
fn allocate(capacity: usize) -> (NonNull<u8>, usize) {
    let capacity = round_up(capacity.max(BLOCK_BYTES) as u64) as usize;
    let layout = Layout::from_size_align(capacity, BLOCK_BYTES).expect("aligned layout");
    // SAFETY: layout has non-zero size.
    let raw = unsafe { alloc(layout) };
    let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
    (ptr, capacity)
}

/// Frees memory from [`allocate`].
///
/// # Safety
/// `ptr` and `capacity` are exactly what `allocate` returned, and the memory is
/// not used afterwards.
unsafe fn release(ptr: NonNull<u8>, capacity: usize) {
    let layout = Layout::from_size_align(capacity, BLOCK_BYTES).expect("aligned layout");
    // SAFETY: allocated by `allocate` with this exact layout (caller's contract).
    unsafe { dealloc(ptr.as_ptr(), layout) };
}

/// An [`AlignedBuf`] presented to the kernel as whole zero-padded blocks.
pub struct PaddedBuf(AlignedBuf);

impl PaddedBuf {
    pub fn into_inner(self) -> AlignedBuf {
        self.0
    }
}

impl compio::buf::IoBuf for PaddedBuf {
    fn as_init(&self) -> &[u8] {
        let len = self.0.padded_len();
        assert!(
            len <= self.0.capacity,
            "padded length {len} exceeds capacity {}",
            self.0.capacity
        );
        // SAFETY: the first `len` bytes were filled by `extend_from_slice` and
        // `into_padded` zeroed the bytes between `len` and the block boundary.
        unsafe { std::slice::from_raw_parts(self.0.ptr.as_ptr(), len) }
    }
}

/// A 4 KiB-aligned buffer for O_DIRECT reads: uninitialised until the kernel
/// fills it (a multi-MiB catch-up read should not pay for zeroing first), then
/// handed to `Bytes::from_owner` so fetch responses slice it without a copy.
pub struct ReadBuf {
    ptr: NonNull<u8>,
    capacity: usize,
    /// Bytes the kernel has written, from the start.
    len: usize,
}

// SAFETY: uniquely owned memory; after the read it is only read through `&self`.
unsafe impl Send for ReadBuf {}
// SAFETY: no interior mutability; `&ReadBuf` only reads initialised bytes.
unsafe impl Sync for ReadBuf {}

impl ReadBuf {
    /// An empty buffer of at least `capacity` bytes (rounded up to whole blocks).
    pub fn with_capacity(capacity: usize) -> Self {
        let (ptr, capacity) = allocate(capacity);
        ReadBuf {
            ptr,
            capacity,
            len: 0,
        }
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        // SAFETY: from `allocate` with this capacity, and no longer used.
        unsafe { release(self.ptr, self.capacity) }
    }
}

impl AsRef<[u8]> for ReadBuf {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the first `len` bytes were written by the kernel (set_len's contract).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl compio::buf::IoBuf for ReadBuf {
    fn as_init(&self) -> &[u8] {
        self.as_ref()
    }
}

impl compio::buf::SetLen for ReadBuf {
    unsafe fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.capacity);
        self.len = len;
    }
}

impl compio::buf::IoBufMut for ReadBuf {
    fn as_uninit(&mut self) -> &mut [std::mem::MaybeUninit<u8>] {
        // SAFETY: ptr is valid for `capacity` bytes; MaybeUninit needs no initialisation.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast(), self.capacity) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_padded() {
        let mut b = AlignedBuf::with_capacity(10);
        assert_eq!(b.ptr.as_ptr() as usize % BLOCK_BYTES, 0);
        b.extend_from_slice(&[7u8; 5000]);
        assert_eq!(b.ptr.as_ptr() as usize % BLOCK_BYTES, 0);
        assert_eq!(b.len(), 5000);
        assert_eq!(b.padded_len(), 8192);
        let p = b.into_padded();
        let s = compio::buf::IoBuf::as_init(&p);
        assert_eq!(s.len(), 8192);
        assert!(s[5000..].iter().all(|&x| x == 0));
        let mut b = p.into_inner();
        b.clear();
        b.extend_from_slice(&[1, 2]);
        assert!(
            compio::buf::IoBuf::as_init(&b.into_padded())[2..]
                .iter()
                .all(|&x| x == 0)
        );
    }
}
