//! The descriptor tables (SDM Vol. 3A §3.4.5 segment descriptors, §7.14.1 64-bit IDT gates,
//! §9.7 "Task Management in 64-bit Mode"): flat 64-bit code and data segments for rings 0 and
//! 3 laid out as SYSCALL and SYSRET expect (§6.8.8: SYSCALL loads CS from STAR[47:32] and SS =
//! CS + 8; 64-bit SYSRET loads CS from STAR[63:48] + 16 and SS from STAR[63:48] + 8) and as
//! SYSENTER and 64-bit SYSEXIT expect (Vol. 2B "SYSENTER", "SYSEXIT": CS and SS at
//! IA32_SYSENTER_CS and + 8, back at + 32 and + 40), a 64-bit TSS with RSP0 and IST stacks (§7.14.5), and an IDT with interrupt gates for vectors 0–31
//! and a DPL-3 gate for [`crate::arch::SYSCALL_GATE`].

use crate::arch;
use core::cell::UnsafeCell;
use rt::arch::{DescriptorTablePointer, load_gdt, load_idt, load_tr};
use rt::desc::{KERNEL_CODE64, KERNEL_DATA, Tss64, USER_CODE64, USER_DATA, tss_descriptor};

pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
/// Ring-3 data selector (GDT index 3, RPL 3).
pub const USER_DS: u16 = 0x18 | 3;
/// Ring-3 64-bit code selector (GDT index 4, RPL 3).
pub const USER_CS: u16 = 0x20 | 3;
/// Ring-3 64-bit code selector of 64-bit SYSEXIT: IA32_SYSENTER_CS (= KERNEL_CS) + 32, RPL 3.
pub const SYSEXIT_CS: u16 = 0x28 | 3;
/// Ring-3 data selector of 64-bit SYSEXIT: IA32_SYSENTER_CS + 40, RPL 3.
pub const SYSEXIT_SS: u16 = 0x30 | 3;
const TSS_SEL: u16 = 0x38;
/// Descriptors in the GDT (the TSS takes two).
const GDT_ENTRIES: usize = 9;
/// The selector base SYSRET adds to (STAR[63:48]): CS = base + 16, SS = base + 8.
pub const SYSRET_BASE: u16 = 0x10;

/// IST slot (1-based, as in a gate) of the double-fault stack.
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST slot of the breakpoint stack: an ordinary exception on a known stack.
pub const IST_BREAKPOINT: u8 = 2;
const IST_COUNT: usize = 2;

/// Gate type 0xE: 64-bit interrupt gate (IF cleared on entry), present, DPL 0.
const GATE_INTERRUPT: u64 = 0x8E;
/// Descriptor privilege level 3 in a gate's type byte: INT n from ring 3 allowed (§7.12.1.1).
const GATE_DPL3: u64 = 0x60;
/// The present bit in a gate's type byte.
const GATE_PRESENT: u64 = 0x80;

/// Size of each dedicated stack (RSP0 and the IST stacks).
pub const STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct Stack([u8; STACK_SIZE]);

/// Tables and stacks: written by [`init`] and by the setters below, on one CPU with interrupts
/// masked.
struct Tables {
    gdt: UnsafeCell<[u64; GDT_ENTRIES]>,
    tss: UnsafeCell<Tss64>,
    idt: UnsafeCell<[[u64; 2]; 256]>,
    stacks: UnsafeCell<[Stack; 1 + IST_COUNT]>,
}

// SAFETY: one CPU, interrupts masked: never concurrent access.
unsafe impl Sync for Tables {}

static TABLES: Tables = Tables {
    gdt: UnsafeCell::new([0; GDT_ENTRIES]),
    tss: UnsafeCell::new(Tss64::new()),
    idt: UnsafeCell::new([[0; 2]; 256]),
    stacks: UnsafeCell::new([const { Stack([0; STACK_SIZE]) }; 1 + IST_COUNT]),
};

/// `[bottom, top)` of dedicated stack `index`: 0 is RSP0, 1.. are the IST slots.
pub fn stack(index: usize) -> (u64, u64) {
    let bottom = TABLES.stacks.get() as u64 + (index * STACK_SIZE) as u64;
    (bottom, bottom + STACK_SIZE as u64)
}

/// An interrupt gate (SDM Vol. 3A Figure 7-8) to `handler` in the kernel code segment.
fn gate(handler: u64, ist: u8, dpl3: bool) -> [u64; 2] {
    let kind = GATE_INTERRUPT | if dpl3 { GATE_DPL3 } else { 0 };
    let low = (handler & 0xFFFF)
        | (u64::from(KERNEL_CS) << 16)
        | (u64::from(ist) << 32)
        | (kind << 40)
        | (((handler >> 16) & 0xFFFF) << 48);
    [low, handler >> 32]
}

/// Builds and loads the GDT, the TSS and the IDT.
pub fn init() {
    let tss_base = TABLES.tss.get() as u64;
    let [tss_low, tss_high] = tss_descriptor(tss_base);
    let mut ist = [0; 7];
    for (slot, top) in ist.iter_mut().zip(1..=IST_COUNT) {
        *slot = stack(top).1;
    }
    // SAFETY: called once at boot before anything else uses the tables.
    unsafe {
        *TABLES.gdt.get() = [
            0,
            KERNEL_CODE64,
            KERNEL_DATA,
            USER_DATA,
            USER_CODE64,
            USER_CODE64,
            USER_DATA,
            tss_low,
            tss_high,
        ];
        let tss = TABLES.tss.get();
        (&raw mut (*tss).ist).write_unaligned(ist);
        (&raw mut (*tss).rsp).write_unaligned([stack(0).1, 0, 0]);
        let idt = &mut *TABLES.idt.get();
        for vector in 0..32u8 {
            let ist = match vector {
                8 => IST_DOUBLE_FAULT,
                3 => IST_BREAKPOINT,
                _ => 0,
            };
            idt[usize::from(vector)] = gate(arch::trap_stub(vector), ist, vector == 3);
        }
        idt[usize::from(arch::SYSCALL_GATE)] = gate(arch::gate_stub(), 0, true);

        let gdtr = DescriptorTablePointer {
            limit: (GDT_ENTRIES * 8 - 1) as u16,
            base: TABLES.gdt.get() as u64,
        };
        load_gdt(&gdtr, KERNEL_CS, KERNEL_DS);
        load_tr(TSS_SEL);
        let idtr = DescriptorTablePointer {
            limit: (256 * 16 - 1) as u16,
            base: TABLES.idt.get() as u64,
        };
        load_idt(&idtr);
    }
}

/// Marks the gate of `vector` present or not present: delivering through a not-present gate
/// raises #NP with the IDT bit in its error code (SDM Vol. 3A §7.15, Interrupt 11).
pub fn set_gate_present(vector: u8, present: bool) {
    // SAFETY: one CPU, interrupts masked; the processor reads the IDT only on delivery.
    unsafe {
        let entry = &mut (*TABLES.idt.get())[usize::from(vector)][0];
        if present {
            *entry |= GATE_PRESENT << 40;
        } else {
            *entry &= !(GATE_PRESENT << 40);
        }
    }
}
