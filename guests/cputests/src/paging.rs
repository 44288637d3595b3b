//! 4-level page tables (SDM Vol. 3A §5.5) built from a pool of page frames inside the image,
//! for programs that map, remap and inspect translations. A new hierarchy shares the runtime's
//! mappings (the first GiB at 0 and at [`KERNEL_VMA`], 2-MiB pages, supervisor) by copying the
//! top-level entries; test mappings go into other PML4 slots so the shared tables are never
//! written. Frames are addressed through the kernel mapping: physical `p` is at
//! `KERNEL_VMA + p`.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use rt::arch::KERNEL_VMA;

/// Present.
pub const P: u64 = 1 << 0;
/// Writable.
pub const RW: u64 = 1 << 1;
/// User-mode accessible.
pub const US: u64 = 1 << 2;
/// Page-level write-through.
pub const PWT: u64 = 1 << 3;
/// Page-level cache disable.
pub const PCD: u64 = 1 << 4;
/// Accessed: set by the processor on any access through the entry (§5.8).
pub const A: u64 = 1 << 5;
/// Dirty: set by the processor on a write through a leaf entry (§5.8).
pub const D: u64 = 1 << 6;
/// Page size: this PDPTE/PDE maps a 1-GiB/2-MiB page.
pub const PS: u64 = 1 << 7;
/// Global: the translation survives CR3 loads when CR4.PGE = 1 (§5.10.2.4).
pub const G: u64 = 1 << 8;
/// Execute-disable (with IA32_EFER.NXE = 1).
pub const XD: u64 = 1 << 63;
/// Bits 51:12 of an entry: the physical address.
pub const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

pub const SIZE_4K: u64 = 1 << 12;
pub const SIZE_2M: u64 = 1 << 21;
pub const SIZE_1G: u64 = 1 << 30;

/// Frames in the pool (4 MiB: room for an aligned 2-MiB page).
const POOL_FRAMES: usize = 1024;

#[repr(C, align(4096))]
struct Frame([u8; 4096]);

struct Pool(UnsafeCell<[Frame; POOL_FRAMES]>);

// SAFETY: one CPU; each frame is handed out once and then owned by its user.
unsafe impl Sync for Pool {}

static POOL: Pool = Pool(UnsafeCell::new([const { Frame([0; 4096]) }; POOL_FRAMES]));
static NEXT: AtomicUsize = AtomicUsize::new(0);
/// The runtime's CR3 at boot, recorded by [`init`]: what every new hierarchy starts from.
static BOOT_CR3: AtomicU64 = AtomicU64::new(0);

/// Records the runtime's hierarchy. Called once by [`crate::init`], before any CR3 load.
pub fn init() {
    BOOT_CR3.store(rt::arch::read_cr3(), Ordering::Relaxed);
}

/// The physical address of a kernel virtual address in the image.
pub fn phys(va: u64) -> u64 {
    va - KERNEL_VMA
}

/// A pointer to physical address `pa` (below 1 GiB) through the kernel mapping.
pub fn virt(pa: u64) -> *mut u64 {
    (pa + KERNEL_VMA) as *mut u64
}

/// A zeroed frame from the pool: its physical address. Panics when the pool is exhausted (a
/// bug of the program, not of the CPU).
pub fn alloc_frame() -> u64 {
    let index = NEXT.fetch_add(1, Ordering::Relaxed);
    assert!(index < POOL_FRAMES, "page-frame pool exhausted");
    let va = POOL.0.get() as u64 + (index as u64) * SIZE_4K;
    // SAFETY: frame `index` was never handed out before; it is 4096 bytes of the pool.
    unsafe { core::ptr::write_bytes(va as *mut u8, 0, 4096) };
    phys(va)
}

/// Physically contiguous, size-aligned frames for a 2-MiB page: `None` when the pool has none.
pub fn alloc_2m() -> Option<u64> {
    let base = phys(POOL.0.get() as u64);
    let next = base + NEXT.load(Ordering::Relaxed) as u64 * SIZE_4K;
    let aligned = next.next_multiple_of(SIZE_2M);
    let first = ((aligned - base) / SIZE_4K) as usize;
    if first + 512 > POOL_FRAMES {
        return None;
    }
    NEXT.store(first + 512, Ordering::Relaxed);
    Some(aligned)
}

/// Index of `va` in the table of `level` (4 = PML4 … 1 = PT).
fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1FF) as usize
}

/// A 4-level hierarchy: the physical address of its PML4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressSpace {
    pub pml4: u64,
}

impl AddressSpace {
    /// A new hierarchy with the runtime's mappings (the top-level entries of the boot CR3) and
    /// nothing else: test regions of other hierarchies are not shared.
    pub fn new() -> AddressSpace {
        let pml4 = alloc_frame();
        let current = BOOT_CR3.load(Ordering::Relaxed) & ADDR_MASK;
        for i in 0..512 {
            // SAFETY: both are page-table frames below 1 GiB, mapped at KERNEL_VMA.
            unsafe { *virt(pml4).add(i) = *virt(current).add(i) };
        }
        AddressSpace { pml4 }
    }

    /// Pointer to the entry for `va` at `level`, creating the tables above it (present,
    /// writable, user: the leaf decides) when `create`; `None` when a table is missing.
    pub fn entry(&self, va: u64, level: u32, create: bool) -> Option<*mut u64> {
        let mut table = self.pml4;
        for l in (level + 1..=4).rev() {
            let slot = virt(table).wrapping_add(index(va, l));
            // SAFETY: `slot` is inside a page-table frame of this hierarchy.
            let e = unsafe { *slot };
            if e & P == 0 {
                if !create {
                    return None;
                }
                let next = alloc_frame();
                // SAFETY: as above.
                unsafe { *slot = next | P | RW | US };
                table = next;
            } else {
                table = e & ADDR_MASK;
            }
        }
        Some(virt(table).wrapping_add(index(va, level)))
    }

    /// Maps `va` to `pa` with a page of `size` (4 KiB, 2 MiB or 1 GiB) and leaf `flags`
    /// (P is added; PS too for the large sizes). Does not flush any TLB.
    pub fn map(&self, va: u64, pa: u64, size: u64, flags: u64) {
        let (level, ps) = match size {
            SIZE_4K => (1, 0),
            SIZE_2M => (2, PS),
            SIZE_1G => (3, PS),
            _ => panic!("no page size {size:#x}"),
        };
        let slot = self.entry(va, level, true).expect("created");
        // SAFETY: `slot` is an entry of this hierarchy.
        unsafe { *slot = pa | flags | ps | P };
    }

    /// The leaf entry mapping `va` at `level`, if its tables exist.
    pub fn read(&self, va: u64, level: u32) -> Option<u64> {
        // SAFETY: `entry` returns a pointer into this hierarchy.
        self.entry(va, level, false).map(|p| unsafe { *p })
    }

    /// Overwrites the entry mapping `va` at `level` (its tables must exist).
    pub fn write(&self, va: u64, level: u32, value: u64) {
        let slot = self.entry(va, level, false).expect("mapped");
        // SAFETY: `slot` is an entry of this hierarchy.
        unsafe { *slot = value };
    }

    /// Loads this hierarchy into CR3 (flushing non-global translations), with `pcid` in bits
    /// 11:0 and bit 63 (no flush) when `keep` (§5.10.4.1; both need CR4.PCIDE = 1).
    ///
    /// # Safety
    /// The hierarchy must map the running code, stack and data (it does, through the shared
    /// top-level entries).
    pub unsafe fn load(&self, pcid: u64, keep: bool) {
        let v = self.pml4 | pcid | if keep { 1 << 63 } else { 0 };
        // SAFETY: forwarded to the caller.
        unsafe { rt::arch::write_cr3(v) };
    }
}

impl Default for AddressSpace {
    fn default() -> Self {
        AddressSpace::new()
    }
}

/// Maps the kernel code in `[start, end)` (page aligned, in the image) at `user_va` as
/// read-only, executable user pages: how a program lends ring 3 the code it wrote for it.
pub fn map_user_code(space: &AddressSpace, start: u64, end: u64, user_va: u64) {
    let mut offset = 0;
    while start + offset < end {
        space.map(user_va + offset, phys(start + offset), SIZE_4K, US);
        offset += SIZE_4K;
    }
}
