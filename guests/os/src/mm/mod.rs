//! Physical memory: the frame allocator ([`frame`]) and 4-level paging ([`paging`]).
//!
//! All physical memory is reached through one window: during early boot the runtime's mapping of
//! the first GiB at `KERNEL_VMA`, afterwards the kernel's direct map of all RAM at
//! [`paging::DIRECT_MAP`].

pub mod frame;
pub mod paging;

use core::sync::atomic::{AtomicU64, Ordering};

pub const PAGE_SIZE: u64 = 4096;

/// Virtual address of physical address 0 in the current window.
static PHYS_WINDOW: AtomicU64 = AtomicU64::new(rt::arch::KERNEL_VMA);
/// Physical addresses the current window reaches.
static PHYS_LIMIT: AtomicU64 = AtomicU64::new(1 << 30);

/// A kernel pointer to physical address `pa`.
pub fn phys_to_virt(pa: u64) -> *mut u8 {
    assert!(
        pa < PHYS_LIMIT.load(Ordering::Relaxed),
        "physical {pa:#x} outside the kernel's window"
    );
    (PHYS_WINDOW.load(Ordering::Relaxed) + pa) as *mut u8
}

/// Switches the physical window (once the direct map is live).
fn set_phys_window(base: u64, limit: u64) {
    PHYS_WINDOW.store(base, Ordering::Relaxed);
    PHYS_LIMIT.store(limit, Ordering::Relaxed);
}

pub fn page_align_down(x: u64) -> u64 {
    x & !(PAGE_SIZE - 1)
}

pub fn page_align_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE_SIZE - 1).map(page_align_down)
}
