//! The heap of guest-hv: a bump allocator over a block of its image (the hypervisor allocates
//! a little at start-up and a table list that grows with the guest's mappings; it frees almost
//! nothing). Exhaustion is an allocation failure, which `alloc` reports and rt turns into an
//! exit with a message.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

const HEAP_SIZE: usize = 4 << 20;

#[repr(C, align(4096))]
struct Block(UnsafeCell<[u8; HEAP_SIZE]>);

// SAFETY: guest-hv runs on one processor without interrupts; the allocator hands out disjoint
// ranges of the block (the atomic bump pointer).
unsafe impl Sync for Block {}

static BLOCK: Block = Block(UnsafeCell::new([0; HEAP_SIZE]));
static NEXT: AtomicUsize = AtomicUsize::new(0);

struct Bump;

// SAFETY: `alloc` returns disjoint, suitably aligned ranges inside BLOCK or null; `dealloc`
// does nothing, which is allowed (memory is simply not reused).
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = BLOCK.0.get() as usize;
        let mut cur = NEXT.load(Ordering::Relaxed);
        loop {
            let start = (base + cur).next_multiple_of(layout.align()) - base;
            let Some(end) = start.checked_add(layout.size()).filter(|&e| e <= HEAP_SIZE) else {
                return core::ptr::null_mut();
            };
            match NEXT.compare_exchange(cur, end, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return (base + start) as *mut u8,
                Err(now) => cur = now,
            }
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

#[global_allocator]
static ALLOCATOR: Bump = Bump;

/// Nothing to set up: the block is in the image's bss. Kept for the reader of `main`.
pub fn init() {
    NEXT.store(0, Ordering::Relaxed);
}
