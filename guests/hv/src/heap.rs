//! The heap of guest-hv, `alloc`'s global allocator: a first-fit free list that reuses freed
//! memory and merges freed neighbours (the `linked_list_allocator` crate, behind its spin lock:
//! one processor, no interrupts, so the lock is never contended) over one block of physical
//! memory that `main` takes from the frame allocator (`frames.rs`) before anything allocates.
//! The hypervisor's maps and vectors come and go with the guest's mappings; the free list
//! gives their memory back to later allocations. Exhaustion is an allocation failure, which
//! `alloc` reports and rt's panic handler turns into an exit with a message.

use core::mem::MaybeUninit;

use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Gives the heap its memory, for the rest of the run. Called once, before the first
/// allocation (an allocation before it fails).
pub fn init(memory: &'static mut [MaybeUninit<u8>]) {
    HEAP.lock().init_from_slice(memory);
}

/// Bytes the heap holds, and bytes of it in use.
pub fn usage() -> (usize, usize) {
    let heap = HEAP.lock();
    (heap.size(), heap.used())
}
