//! The local APIC timer as the scheduler's clock (SDM Vol. 3A §11.4 local APIC, §11.5.4 APIC
//! timer), and the legacy 8259 PICs masked so that nothing else interrupts.
//!
//! The timer runs periodically with a fixed divide value and initial count: no calibration
//! against the TSC or any other clock, so a tick is a fixed number of APIC-timer input cycles
//! wherever the kernel runs. When ticks arrive does depend on the machine; what the kernel
//! prints never does.

use crate::mm::{PhysAddr, paging};
use crate::trap::{SPURIOUS_VECTOR, TIMER_VECTOR};
use core::sync::atomic::{AtomicU64, Ordering};
use rt::arch::{self, outb};

const IA32_APIC_BASE: u32 = 0x1B;
/// IA32_APIC_BASE: APIC global enable.
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_ADDR: u64 = 0xF_FFFF_F000;
const CPUID1_EDX_APIC: u32 = 1 << 9;

/// End-of-interrupt register.
const EOI: u64 = 0x0B0;
/// Spurious-interrupt vector register.
const SVR: u64 = 0x0F0;
/// SVR: APIC software enable.
const SVR_ENABLE: u32 = 1 << 8;
/// LVT timer register.
const LVT_TIMER: u64 = 0x320;
/// LVT timer: periodic mode (bits 18:17 = 01).
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
/// LVT LINT0 and LINT1.
const LVT_LINT0: u64 = 0x350;
const LVT_LINT1: u64 = 0x360;
/// LVT: masked.
const LVT_MASKED: u32 = 1 << 16;
/// Timer initial-count register.
const TIMER_INITIAL: u64 = 0x380;
/// Timer divide-configuration register.
const TIMER_DIVIDE: u64 = 0x3E0;
/// Divide by 16 (bits 3,1:0 = 0,11).
const DIVIDE_BY_16: u32 = 0b0011;

/// Timer input cycles between ticks, after the divider: a fixed constant.
pub const TIMER_INITIAL_COUNT: u32 = 20_000;

static APIC: AtomicU64 = AtomicU64::new(0);

fn write(reg: u64, value: u32) {
    let base = APIC.load(Ordering::Relaxed);
    // SAFETY: `base` maps the local APIC's 4-KiB register page; registers are 32-bit aligned.
    unsafe { ((base + reg) as *mut u32).write_volatile(value) };
}

/// Remaps the 8259 PICs away from the exception vectors and masks every line.
fn mask_pics() {
    // SAFETY: ports 0x20/0x21/0xA0/0xA1 are the PICs; the ICW sequence only reprograms them.
    unsafe {
        outb(0x20, 0x11); // ICW1: edge, cascade, ICW4 follows
        outb(0xA0, 0x11);
        outb(0x21, 0x20); // ICW2: vector bases 0x20 and 0x28
        outb(0xA1, 0x28);
        outb(0x21, 0x04); // ICW3: slave on IRQ2
        outb(0xA1, 0x02);
        outb(0x21, 0x01); // ICW4: 8086 mode
        outb(0xA1, 0x01);
        outb(0x21, 0xFF); // OCW1: mask all
        outb(0xA1, 0xFF);
    }
}

/// Enables the local APIC and starts the periodic timer on [`TIMER_VECTOR`].
pub fn init() {
    mask_pics();
    assert!(
        arch::cpuid(1, 0).edx & CPUID1_EDX_APIC != 0,
        "guest-os needs a local APIC"
    );
    // SAFETY: IA32_APIC_BASE exists when CPUID.1:EDX.APIC is set; we only set the enable bit.
    let base = unsafe {
        let msr = arch::rdmsr(IA32_APIC_BASE);
        arch::wrmsr(IA32_APIC_BASE, msr | APIC_BASE_ENABLE);
        msr & APIC_BASE_ADDR
    };
    APIC.store(
        paging::map_mmio(PhysAddr::new(base)).as_u64(),
        Ordering::Relaxed,
    );
    write(SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
    write(LVT_LINT0, LVT_MASKED);
    write(LVT_LINT1, LVT_MASKED);
    write(TIMER_DIVIDE, DIVIDE_BY_16);
    write(LVT_TIMER, LVT_TIMER_PERIODIC | u32::from(TIMER_VECTOR));
    write(TIMER_INITIAL, TIMER_INITIAL_COUNT);
}

/// Signals the end of the current interrupt.
pub fn end_of_interrupt() {
    write(EOI, 0);
}
