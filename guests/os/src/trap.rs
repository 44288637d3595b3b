//! The IDT and what happens on each vector (SDM Vol. 3A §6.10 IDT, §6.14 64-bit interrupt and
//! exception handling, §6.15 exception reference, §4.7 page-fault error code).
//!
//! Exceptions from ring 3 are the process's fault: a page fault may be resolved (demand-zero or
//! copy-on-write, see [`crate::vm`]); anything else kills the process with a message saying what
//! it did, and the kernel carries on. An exception in ring 0 is a kernel bug: it is reported and
//! the machine leaves through the debug-exit port with [`rt::EXIT_PANIC`]. The LAPIC timer
//! (vector 32) preempts the running process.

use crate::arch::{self, TrapFrame};
use crate::{apic, gdt, proc, vm};
use core::cell::UnsafeCell;
use rt::arch::{DescriptorTablePointer, load_idt, read_cr2};
use rt::println;

/// Vector of the LAPIC timer.
pub const TIMER_VECTOR: u8 = 32;
/// Vector of the LAPIC spurious interrupt.
pub const SPURIOUS_VECTOR: u8 = 0xFF;

const DOUBLE_FAULT: u64 = 8;
const PAGE_FAULT: u64 = 14;

/// Gate type 0xE: 64-bit interrupt gate (IF cleared on entry), present, DPL 0.
const GATE_INTERRUPT: u64 = 0x8E;

struct Idt(UnsafeCell<[[u64; 2]; 256]>);

// SAFETY: written once at boot on one CPU, then only read by the processor.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([[0; 2]; 256]));

/// An interrupt gate (SDM Vol. 3A Figure 6-8) to `handler` in the kernel code segment.
fn gate(handler: u64, ist: u8) -> [u64; 2] {
    let low = (handler & 0xFFFF)
        | (u64::from(gdt::KERNEL_CS) << 16)
        | (u64::from(ist) << 32)
        | (GATE_INTERRUPT << 40)
        | (((handler >> 16) & 0xFFFF) << 48);
    [low, handler >> 32]
}

/// Fills and loads the IDT: exceptions 0–31, the timer, the spurious vector.
pub fn init() {
    // SAFETY: called once at boot, before interrupts are enabled; nothing else touches the IDT.
    let idt = unsafe { &mut *IDT.0.get() };
    for vector in 0..=TIMER_VECTOR {
        let ist = if u64::from(vector) == DOUBLE_FAULT {
            gdt::IST_DOUBLE_FAULT
        } else {
            0
        };
        idt[usize::from(vector)] = gate(arch::trap_stub(vector), ist);
    }
    idt[usize::from(SPURIOUS_VECTOR)] = gate(arch::spurious_stub(), 0);
    let ptr = DescriptorTablePointer {
        limit: (256 * 16 - 1) as u16,
        base: IDT.0.get() as u64,
    };
    // SAFETY: the IDT is static and every installed gate points at a valid stub.
    unsafe { load_idt(&ptr) };
}

/// Mnemonic and name of an exception vector.
pub fn exception_name(vector: u64) -> (&'static str, &'static str) {
    match vector {
        0 => ("#DE", "divide error"),
        1 => ("#DB", "debug"),
        2 => ("NMI", "non-maskable interrupt"),
        3 => ("#BP", "breakpoint"),
        4 => ("#OF", "overflow"),
        5 => ("#BR", "bound range exceeded"),
        6 => ("#UD", "invalid opcode"),
        7 => ("#NM", "device not available"),
        8 => ("#DF", "double fault"),
        10 => ("#TS", "invalid TSS"),
        11 => ("#NP", "segment not present"),
        12 => ("#SS", "stack-segment fault"),
        13 => ("#GP", "general protection"),
        14 => ("#PF", "page fault"),
        16 => ("#MF", "x87 floating-point error"),
        17 => ("#AC", "alignment check"),
        18 => ("#MC", "machine check"),
        19 => ("#XM", "SIMD floating-point exception"),
        20 => ("#VE", "virtualization exception"),
        21 => ("#CP", "control protection"),
        _ => ("#??", "reserved vector"),
    }
}

/// Page-fault error code bits (SDM Vol. 3A §4.7, Figure 4-12).
pub mod pf {
    /// The fault was a protection violation (the page was present).
    pub const PRESENT: u64 = 1 << 0;
    /// The access was a write.
    pub const WRITE: u64 = 1 << 1;
    /// A reserved bit was set in a paging-structure entry.
    pub const RESERVED: u64 = 1 << 3;
    /// The access was an instruction fetch.
    pub const FETCH: u64 = 1 << 4;
}

/// Describes a page-fault error code: "write to 0x0 (not present)".
pub struct PageFaultText {
    pub addr: u64,
    pub error: u64,
}

impl core::fmt::Display for PageFaultText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let access = if self.error & pf::FETCH != 0 {
            "instruction fetch from"
        } else if self.error & pf::WRITE != 0 {
            "write to"
        } else {
            "read from"
        };
        let why = if self.error & pf::RESERVED != 0 {
            "reserved bit set"
        } else if self.error & pf::PRESENT != 0 {
            "protection violation"
        } else {
            "not present"
        };
        write!(f, "{access} {:#x} ({why})", self.addr)
    }
}

/// Common entry from `arch`'s interrupt and exception stubs.
pub extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    let from_user = frame.cs & 3 == 3;
    match frame.vector {
        v if v == u64::from(TIMER_VECTOR) => {
            apic::end_of_interrupt();
            if from_user {
                proc::preempt();
            }
        }
        v if v == u64::from(SPURIOUS_VECTOR) => {}
        PAGE_FAULT if from_user => {
            let addr = read_cr2();
            if let Err(why) = vm::user_page_fault(addr, frame.error) {
                let text = PageFaultText {
                    addr,
                    error: frame.error,
                };
                proc::kill_current(frame, format_args!("page fault: {text}: {why}"));
            }
        }
        v if from_user => {
            let (mnemonic, name) = exception_name(v);
            proc::kill_current(
                frame,
                format_args!("{mnemonic} {name}, error code {:#x}", frame.error),
            );
        }
        v => kernel_fault(frame, v),
    }
}

fn kernel_fault(frame: &TrapFrame, vector: u64) -> ! {
    let (mnemonic, name) = exception_name(vector);
    println!(
        "guest-os: kernel {mnemonic} {name} at rip={:#x}, error code {:#x}, rsp={:#x}",
        frame.rip, frame.error, frame.rsp
    );
    if vector == PAGE_FAULT {
        println!(
            "guest-os:   {}",
            PageFaultText {
                addr: read_cr2(),
                error: frame.error
            }
        );
    }
    rt::exit(rt::EXIT_PANIC)
}
