//! Physical memory: the frame allocator ([`frame`]) and 4-level paging ([`paging`]).
//!
//! All physical memory is reached through one window: during early boot the runtime's mapping of
//! the first GiB at `KERNEL_VMA`, afterwards the kernel's direct map of all RAM at
//! [`paging::DIRECT_MAP`].

pub mod frame;
pub mod paging;
pub mod ranges;

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

pub const PAGE_SIZE: u64 = 4096;

/// A physical address, as paging-structure entries and CR3 name memory (SDM Vol. 3A §4.5).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PhysAddr(u64);

impl PhysAddr {
    pub const fn new(addr: u64) -> Self {
        PhysAddr(addr)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The address `bytes` further on.
    pub const fn offset(self, bytes: u64) -> Self {
        PhysAddr(self.0 + bytes)
    }

    /// The number of the 4-KiB frame holding this address.
    pub const fn frame_number(self) -> u64 {
        self.0 / PAGE_SIZE
    }
}

/// A virtual (linear) address; in 4-level paging bits 47:12 select one entry per paging
/// structure (SDM Vol. 3A §4.5.4, Figure 4-8).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct VirtAddr(u64);

impl VirtAddr {
    pub const fn new(addr: u64) -> Self {
        VirtAddr(addr)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The index of this address's entry in a paging structure of `level` (1: page table,
    /// 2: page directory, 3: PDPT, 4: PML4).
    pub const fn table_index(self, level: u32) -> usize {
        ((self.0 >> (12 + 9 * (level - 1))) & 0x1FF) as usize
    }

    /// The start of the 4-KiB page holding this address.
    pub const fn page(self) -> Self {
        VirtAddr(self.0 & !(PAGE_SIZE - 1))
    }

    /// The offset of this address in its 4-KiB page.
    pub const fn page_offset(self) -> u64 {
        self.0 & (PAGE_SIZE - 1)
    }
}

impl fmt::Debug for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VA:{:#x}", self.0)
    }
}

impl fmt::Debug for PhysAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PA:{:#x}", self.0)
    }
}

/// Virtual address of physical address 0 in the current window.
static PHYS_WINDOW: AtomicU64 = AtomicU64::new(rt::arch::KERNEL_VMA);
/// Physical addresses the current window reaches.
static PHYS_LIMIT: AtomicU64 = AtomicU64::new(1 << 30);

/// A kernel pointer to physical address `pa`.
pub fn phys_to_virt(pa: PhysAddr) -> *mut u8 {
    let pa = pa.as_u64();
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
