//! The kernel's GDT and TSS (SDM Vol. 3A §3.4.5 segment descriptors, §8.7 "Task Management in
//! 64-bit Mode"): flat 64-bit code and data segments for rings 0 and 3, laid out as SYSCALL and
//! SYSRET expect them (§5.8.8: SYSCALL loads CS from STAR[47:32] and SS = CS + 8; 64-bit SYSRET
//! loads CS from STAR[63:48] + 16 and SS from STAR[63:48] + 8), and a 64-bit TSS whose RSP0 is
//! the running process's kernel stack and whose IST1 is a dedicated #DF stack (§6.14.5).

use core::cell::UnsafeCell;
use rt::arch::{DescriptorTablePointer, load_gdt, load_tr};
use rt::desc::{KERNEL_CODE64, KERNEL_DATA, Tss64, USER_CODE64, USER_DATA, tss_descriptor};

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

const DF_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct DfStack([u8; DF_STACK_SIZE]);

/// Descriptor tables: written once by [`init`], then only RSP0 changes ([`set_kernel_stack`]).
struct Tables {
    gdt: UnsafeCell<[u64; 7]>,
    tss: UnsafeCell<Tss64>,
    df_stack: UnsafeCell<DfStack>,
}

// SAFETY: one CPU; the kernel runs with interrupts masked, so there is never concurrent access.
unsafe impl Sync for Tables {}

static TABLES: Tables = Tables {
    gdt: UnsafeCell::new([0; 7]),
    tss: UnsafeCell::new(Tss64::new()),
    df_stack: UnsafeCell::new(DfStack([0; DF_STACK_SIZE])),
};

/// Builds and loads the GDT and the TSS.
pub fn init() {
    let tss_base = TABLES.tss.get() as u64;
    let [tss_low, tss_high] = tss_descriptor(tss_base);
    let df_top = TABLES.df_stack.get() as u64 + DF_STACK_SIZE as u64;
    // SAFETY: called once at boot before anything else uses the tables.
    unsafe {
        *TABLES.gdt.get() = [
            0,
            KERNEL_CODE64,
            KERNEL_DATA,
            USER_DATA,
            USER_CODE64,
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
