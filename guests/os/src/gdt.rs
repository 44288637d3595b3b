//! The kernel's GDT and TSS (SDM Vol. 3A §3.4.5 segment descriptors, §8.7 "Task Management in
//! 64-bit Mode"): flat 64-bit code and data segments for rings 0 and 3, laid out as SYSCALL and
//! SYSRET expect them (§5.8.8: SYSCALL loads CS from STAR[47:32] and SS = CS + 8; 64-bit SYSRET
//! loads CS from STAR[63:48] + 16 and SS from STAR[63:48] + 8), and a 64-bit TSS whose RSP0 is
//! the running process's kernel stack and whose IST1 is a dedicated #DF stack (§6.14.5).

use core::cell::UnsafeCell;
use rt::arch::{DescriptorTablePointer, load_gdt, load_tr};

pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
/// Ring-3 data selector (GDT index 3, RPL 3).
pub const USER_DS: u16 = 0x18 | 3;
/// Ring-3 64-bit code selector (GDT index 4, RPL 3).
pub const USER_CS: u16 = 0x20 | 3;
const TSS_SEL: u16 = 0x28;
/// The selector base SYSRET adds to (STAR[63:48]): CS = base + 16, SS = base + 8.
pub const SYSRET_BASE: u16 = 0x10;
/// IST slot of the double-fault stack (1-based, as in the IDT gate).
pub const IST_DOUBLE_FAULT: u8 = 1;

/// 64-bit code, DPL 0: P, S, type execute/read, L.
const DESC_KERNEL_CODE: u64 = 0x00AF_9A00_0000_FFFF;
/// Data, DPL 0: P, S, type read/write.
const DESC_KERNEL_DATA: u64 = 0x00CF_9200_0000_FFFF;
/// Data, DPL 3.
const DESC_USER_DATA: u64 = 0x00CF_F200_0000_FFFF;
/// 64-bit code, DPL 3.
const DESC_USER_CODE: u64 = 0x00AF_FA00_0000_FFFF;
/// System descriptor type 9: available 64-bit TSS, present.
const DESC_TSS_AVAILABLE: u64 = 0x89;

/// The 64-bit TSS (SDM Vol. 3A Figure 8-11).
#[repr(C, packed(4))]
struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

const _: () = assert!(size_of::<Tss>() == 104);

const DF_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct DfStack([u8; DF_STACK_SIZE]);

/// Descriptor tables: written once by [`init`], then only RSP0 changes ([`set_kernel_stack`]).
struct Tables {
    gdt: UnsafeCell<[u64; 7]>,
    tss: UnsafeCell<Tss>,
    df_stack: UnsafeCell<DfStack>,
}

// SAFETY: one CPU; the kernel runs with interrupts masked, so there is never concurrent access.
unsafe impl Sync for Tables {}

static TABLES: Tables = Tables {
    gdt: UnsafeCell::new([0; 7]),
    tss: UnsafeCell::new(Tss {
        reserved0: 0,
        rsp: [0; 3],
        reserved1: 0,
        ist: [0; 7],
        reserved2: 0,
        reserved3: 0,
        // No I/O permission bitmap: every port access from ring 3 raises #GP (SDM Vol. 1, "I/O Permission Bit Map").
        iomap_base: size_of::<Tss>() as u16,
    }),
    df_stack: UnsafeCell::new(DfStack([0; DF_STACK_SIZE])),
};

/// Builds and loads the GDT and the TSS.
pub fn init() {
    let tss_base = TABLES.tss.get() as u64;
    let limit = (size_of::<Tss>() - 1) as u64;
    let tss_low = (limit & 0xFFFF)
        | ((tss_base & 0xFF_FFFF) << 16)
        | (DESC_TSS_AVAILABLE << 40)
        | (((limit >> 16) & 0xF) << 48)
        | (((tss_base >> 24) & 0xFF) << 56);
    let tss_high = tss_base >> 32;
    let df_top = TABLES.df_stack.get() as u64 + DF_STACK_SIZE as u64;
    // SAFETY: called once at boot before anything else uses the tables.
    unsafe {
        *TABLES.gdt.get() = [
            0,
            DESC_KERNEL_CODE,
            DESC_KERNEL_DATA,
            DESC_USER_DATA,
            DESC_USER_CODE,
            tss_low,
            tss_high,
        ];
        let tss = TABLES.tss.get();
        (&raw mut (*tss).ist).write_unaligned([df_top, 0, 0, 0, 0, 0, 0]);
        let ptr = DescriptorTablePointer {
            limit: (7 * 8 - 1) as u16,
            base: TABLES.gdt.get() as u64,
        };
        load_gdt(&ptr, KERNEL_CS, KERNEL_DS);
        load_tr(TSS_SEL);
    }
}

/// Points TSS.RSP0 (the stack of interrupts and exceptions from ring 3) at `top`.
pub fn set_kernel_stack(top: u64) {
    // SAFETY: one CPU with interrupts masked; the processor only reads RSP0 on a ring change.
    unsafe { (&raw mut (*TABLES.tss.get()).rsp).write_unaligned([top, 0, 0]) };
}
