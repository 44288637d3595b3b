//! 4-level paging (SDM Vol. 3A §4.5 "4-Level Paging and 5-Level Paging"): the kernel's own
//! hierarchy and one hierarchy per process.
//!
//! The upper half is the kernel's and is the same in every address space (PML4 entries 256–511
//! point at shared tables): a direct map of all RAM at [`DIRECT_MAP`] with 2-MiB pages (§4.5.4,
//! PS=1), device registers at [`MMIO_BASE`] (PCD, §12.12 memory types), and the kernel image at
//! `KERNEL_VMA` with 4-KiB pages, code read-only and everything else no-execute (§4.6, XD needs
//! IA32_EFER.NXE). Kernel pages are global (CR4.PGE, §4.10.2.4) so CR3 loads keep them. The lower
//! half belongs to the process; its leaves carry a software bit (Table 4-19, bits the processor
//! ignores) marking copy-on-write pages.

use super::frame;
use super::{PAGE_SIZE, PhysAddr, VirtAddr, phys_to_virt, set_phys_window};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use rt::BootInfo;
use rt::arch::{self, KERNEL_VMA};

/// Where all RAM is mapped: physical `p` at `DIRECT_MAP + p` (PML4 entry 256).
pub const DIRECT_MAP: u64 = 0xFFFF_8000_0000_0000;
/// Where device registers are mapped (PML4 entry 510).
pub const MMIO_BASE: u64 = 0xFFFF_FF00_0000_0000;
/// First address above the user half.
pub const USER_END: u64 = 0x0000_8000_0000_0000;

/// Paging-structure entry bits (SDM Vol. 3A Tables 4-15 to 4-20).
pub mod pte {
    /// Present.
    pub const P: u64 = 1 << 0;
    /// Writable.
    pub const W: u64 = 1 << 1;
    /// User-mode accessible.
    pub const U: u64 = 1 << 2;
    /// Page-level write-through.
    pub const PWT: u64 = 1 << 3;
    /// Page-level cache disable.
    pub const PCD: u64 = 1 << 4;
    /// Page size: this PDE maps a 2-MiB page.
    pub const PS: u64 = 1 << 7;
    /// Global: survives CR3 loads while CR4.PGE = 1.
    pub const G: u64 = 1 << 8;
    /// Software (ignored by the processor): the page is shared copy-on-write.
    pub const COW: u64 = 1 << 9;
    /// Execute-disable (only with IA32_EFER.NXE = 1).
    pub const NX: u64 = 1 << 63;
    /// Physical-address field of a 4-KiB-page entry (MAXPHYADDR up to 52).
    pub const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
}

const CR4_PGE: u64 = 1 << 7;
const CR4_PCIDE: u64 = 1 << 17;
const CPUID1_ECX_PCID: u32 = 1 << 17;
const EFER: u32 = 0xC000_0080;
const EFER_NXE: u64 = 1 << 11;
const CR3_NOFLUSH: u64 = 1 << 63;
const TWO_MIB: u64 = 2 << 20;

static KERNEL_ROOT: AtomicU64 = AtomicU64::new(0);
static NX: AtomicBool = AtomicBool::new(false);
static PCID: AtomicBool = AtomicBool::new(false);
static NEXT_MMIO: AtomicU64 = AtomicU64::new(MMIO_BASE);

/// The execute-disable bit if the processor has it enabled, else 0.
pub fn nx() -> u64 {
    if NX.load(Ordering::Relaxed) {
        pte::NX
    } else {
        0
    }
}

/// Whether CR4.PCIDE is on.
pub fn pcid_enabled() -> bool {
    PCID.load(Ordering::Relaxed)
}

/// One paging-structure entry of a live hierarchy.
#[derive(Debug, Clone, Copy)]
pub struct Entry(*mut u64);

impl Entry {
    /// # Safety
    /// `table` must be the physical address of a page-table frame owned by a live hierarchy.
    unsafe fn of(table: PhysAddr, index: usize) -> Entry {
        Entry(phys_to_virt(table).cast::<u64>().wrapping_add(index))
    }

    pub fn get(self) -> u64 {
        // SAFETY: an Entry always points into a live page-table frame (see `of`).
        unsafe { self.0.read_volatile() }
    }

    pub fn set(self, value: u64) {
        // SAFETY: as in `get`; one CPU with interrupts masked writes page tables.
        unsafe { self.0.write_volatile(value) }
    }

    pub fn present(self) -> bool {
        self.get() & pte::P != 0
    }

    /// The frame (or table) the entry points at.
    pub fn frame(self) -> PhysAddr {
        PhysAddr::new(self.get() & pte::ADDR)
    }

    /// Points the entry at `frame` with `flags`.
    pub fn map(self, frame: PhysAddr, flags: u64) {
        self.set(frame.as_u64() | flags);
    }
}

/// The entry for `va` at `level` (1 = PTE) below the table at `table` (of level `from`),
/// creating missing tables with `table_flags` when `create`. None if a table is missing (and not
/// created) or memory ran out.
fn walk(root: PhysAddr, va: VirtAddr, level: u32, create: bool, table_flags: u64) -> Option<Entry> {
    let mut table = root;
    for l in (level + 1..=4).rev() {
        // SAFETY: `table` is the root or was read from a present non-leaf entry of the hierarchy.
        let e = unsafe { Entry::of(table, va.table_index(l)) };
        if !e.present() {
            if !create {
                return None;
            }
            e.map(frame::alloc_zeroed()?, table_flags);
        }
        debug_assert!(e.get() & pte::PS == 0, "walk through a large page");
        table = e.frame();
    }
    // SAFETY: as above.
    Some(unsafe { Entry::of(table, va.table_index(level)) })
}

/// Builds the kernel's hierarchy, enables global pages, NX and PCID when present, and switches
/// to it. Returns nothing; afterwards the physical window is the direct map.
pub fn init(boot: &BootInfo, top: u64) {
    let efer_nx = {
        // SAFETY: IA32_EFER exists on every processor with long mode.
        unsafe { arch::rdmsr(EFER) & EFER_NXE != 0 }
    };
    NX.store(efer_nx, Ordering::Relaxed);
    let root = frame::alloc_zeroed().expect("no memory for the kernel page tables");
    let kernel_table = pte::P | pte::W;

    // Direct map: every 2-MiB block that holds available RAM.
    let top = top.next_multiple_of(TWO_MIB);
    for region in boot.available() {
        let mut pa = region.base & !(TWO_MIB - 1);
        while pa < region.end().min(top) {
            let e = walk(root, VirtAddr::new(DIRECT_MAP + pa), 2, true, kernel_table)
                .expect("out of memory");
            e.map(PhysAddr::new(pa), pte::P | pte::W | pte::PS | pte::G | nx());
            pa += TWO_MIB;
        }
    }

    // The kernel image, 4-KiB pages: code read-only and executable, the rest writable, NX.
    let (start, end) = rt::image_phys_range();
    let (text_start, text_end) = rt::text_range();
    let mut pa = start;
    while pa < end {
        let va = KERNEL_VMA + pa;
        let rights = if (text_start..text_end).contains(&va) {
            0
        } else {
            pte::W | nx()
        };
        let e = walk(root, VirtAddr::new(va), 1, true, kernel_table).expect("out of memory");
        e.map(PhysAddr::new(pa), pte::P | pte::G | rights);
        pa += PAGE_SIZE;
    }
    KERNEL_ROOT.store(root.as_u64(), Ordering::Relaxed);

    // SAFETY: the new hierarchy maps the kernel image (code, stacks, data) where it runs now.
    unsafe {
        arch::write_cr4(arch::read_cr4() | CR4_PGE);
        arch::write_cr3(root.as_u64());
    }
    set_phys_window(DIRECT_MAP, top);

    if arch::cpuid(1, 0).ecx & CPUID1_ECX_PCID != 0 {
        // SAFETY: CPUID says PCIDs exist and CR3[11:0] is 0 (SDM Vol. 3A §4.10.1 conditions).
        unsafe { arch::write_cr4(arch::read_cr4() | CR4_PCIDE) };
        PCID.store(true, Ordering::Relaxed);
    }
}

/// Unmaps one page of the kernel image (a stack guard page): touching it faults.
pub fn unmap_kernel_page(va: VirtAddr) {
    let e = walk(kernel_root(), va, 1, false, 0).expect("kernel page without a page table");
    e.set(0);
    arch::invlpg(va.as_u64());
}

/// Maps one page of device registers, uncached, and returns its kernel address.
pub fn map_mmio(pa: PhysAddr) -> VirtAddr {
    let va = VirtAddr::new(NEXT_MMIO.fetch_add(PAGE_SIZE, Ordering::Relaxed));
    let e = walk(kernel_root(), va, 1, true, pte::P | pte::W).expect("out of memory");
    e.map(pa, pte::P | pte::W | pte::PCD | pte::PWT | pte::G | nx());
    va
}

fn kernel_root() -> PhysAddr {
    PhysAddr::new(KERNEL_ROOT.load(Ordering::Relaxed))
}

/// Loads CR3 with a hierarchy (SDM Vol. 3A §4.10.4.1): with PCIDs, `keep` leaves the PCID's
/// cached translations in place (bit 63), otherwise they are flushed; without PCIDs every load
/// flushes all non-global translations.
pub fn load(root: PhysAddr, pcid: u16, keep: bool) {
    let value = if pcid_enabled() {
        let noflush = if keep { CR3_NOFLUSH } else { 0 };
        root.as_u64() | u64::from(pcid & 0xFFF) | noflush
    } else {
        root.as_u64()
    };
    // SAFETY: every hierarchy shares the kernel half, so the running code stays mapped.
    unsafe { arch::write_cr3(value) };
}

/// Loads the kernel's own hierarchy (PCID 0), e.g. before tearing down a process's.
pub fn load_kernel() {
    load(kernel_root(), 0, true);
}

/// A process's 4-level hierarchy: its own lower half, the kernel's upper half.
#[derive(Debug)]
pub struct AddressSpace {
    root: PhysAddr,
}

const USER_TABLE: u64 = pte::P | pte::W | pte::U;

impl AddressSpace {
    /// An empty user half. None when memory is exhausted.
    pub fn new() -> Option<AddressSpace> {
        let root = frame::alloc_zeroed()?;
        let kernel = kernel_root();
        for i in 256..512 {
            // SAFETY: both are live PML4 frames.
            let (src, dst) = unsafe { (Entry::of(kernel, i), Entry::of(root, i)) };
            dst.set(src.get());
        }
        Some(AddressSpace { root })
    }

    /// Physical address of the PML4.
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// The leaf entry of `va`, if its tables exist.
    pub fn entry(&self, va: VirtAddr) -> Option<Entry> {
        walk(self.root, va, 1, false, 0)
    }

    /// The leaf entry of `va`, creating its tables. None when memory is exhausted.
    pub fn entry_or_create(&self, va: VirtAddr) -> Option<Entry> {
        walk(self.root, va, 1, true, USER_TABLE)
    }

    /// Calls `f` for every present leaf of the user half in `[start, end)`.
    pub fn for_each_leaf(
        &self,
        start: VirtAddr,
        end: VirtAddr,
        mut f: impl FnMut(VirtAddr, Entry),
    ) {
        self.visit(self.root, 4, 0, start.as_u64(), end.as_u64(), &mut f);
    }

    fn visit(
        &self,
        table: PhysAddr,
        level: u32,
        base: u64,
        start: u64,
        end: u64,
        f: &mut impl FnMut(VirtAddr, Entry),
    ) {
        let span = 1u64 << (12 + 9 * (level - 1));
        let entries = if level == 4 { 256 } else { 512 };
        for i in 0..entries {
            let va = base + i as u64 * span;
            if va >= end || va + span <= start {
                continue;
            }
            // SAFETY: `table` is a live table of this hierarchy.
            let e = unsafe { Entry::of(table, i) };
            if !e.present() {
                continue;
            }
            if level == 1 {
                f(VirtAddr::new(va), e);
            } else {
                self.visit(e.frame(), level - 1, va, start, end, f);
            }
        }
    }

    /// A copy-on-write duplicate: every present user page becomes read-only and shared, marked
    /// [`pte::COW`] in both hierarchies. The caller must flush this hierarchy's translations.
    /// None (with nothing changed in `self` that matters) when memory is exhausted.
    pub fn fork(&self) -> Option<AddressSpace> {
        let child = AddressSpace::new()?;
        let mut ok = true;
        self.for_each_leaf(VirtAddr::new(0), VirtAddr::new(USER_END), |va, e| {
            if !ok {
                return;
            }
            let Some(target) = child.entry_or_create(va) else {
                ok = false;
                return;
            };
            let shared = (e.get() & !pte::W) | pte::COW;
            e.set(shared);
            target.set(shared);
            frame::share(e.frame());
        });
        if ok {
            Some(child)
        } else {
            child.destroy();
            None
        }
    }

    /// Frees every user page (dropping one reference to each frame) and every table.
    pub fn destroy(self) {
        self.free_tables(self.root, 4);
    }

    fn free_tables(&self, table: PhysAddr, level: u32) {
        let entries = if level == 4 { 256 } else { 512 };
        for i in 0..entries {
            // SAFETY: `table` is a live table of this hierarchy.
            let e = unsafe { Entry::of(table, i) };
            if !e.present() {
                continue;
            }
            if level > 1 {
                self.free_tables(e.frame(), level - 1);
            } else {
                frame::release(e.frame());
            }
        }
        frame::release(table);
    }
}
