//! The multiboot1 handover (multiboot spec 0.6.96 §3.2–3.3): the information structure is read
//! once at boot through the runtime's early mapping of the first GiB ([`Early`]) and copied into
//! a [`BootInfo`] in kernel memory ([`info`]), so the kernel may drop the identity mapping and
//! reuse the loader's memory.

mod info;

pub use info::{BootInfo, MEMORY_AVAILABLE, MemoryRegion, Module, PhysMemory};

use crate::arch::KERNEL_VMA;

/// EAX value a multiboot1 loader passes to the image (spec §3.2).
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;

/// The early mapping covers physical addresses below this.
const EARLY_LIMIT: u64 = 1 << 30;

/// Reads physical memory through the early mapping.
struct Early;

impl Early {
    fn check(pa: u64, len: u64) {
        if pa.checked_add(len).is_none_or(|end| end > EARLY_LIMIT) {
            panic!("multiboot: structure at {pa:#x}+{len:#x} lies above the first GiB");
        }
    }
}

impl PhysMemory for Early {
    fn read_u32(&self, pa: u64) -> u32 {
        Early::check(pa, 4);
        // SAFETY: the first GiB is mapped at KERNEL_VMA by the entry stub; unaligned read.
        unsafe { core::ptr::read_unaligned((KERNEL_VMA + pa) as *const u32) }
    }

    fn read_u8(&self, pa: u64) -> u8 {
        Early::check(pa, 1);
        // SAFETY: as above.
        unsafe { core::ptr::read((KERNEL_VMA + pa) as *const u8) }
    }
}

struct BootCell(core::cell::UnsafeCell<BootInfo>);

// SAFETY: written once by `parse` before the image's code runs, read-only afterwards.
unsafe impl Sync for BootCell {}

static BOOT_INFO: BootCell = BootCell(core::cell::UnsafeCell::new(BootInfo::EMPTY));

/// Parses the information structure at physical `info`. Called once, by the runtime.
pub(crate) fn parse(info: u64) -> &'static BootInfo {
    // SAFETY: called exactly once, before kernel_main, on one CPU: nobody else holds a reference.
    let boot = unsafe { &mut *BOOT_INFO.0.get() };
    info::parse(&Early, info, boot);
    boot
}
