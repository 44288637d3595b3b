//! The interface between the software CPU and the board it is soldered to.
//!
//! The CPU is generic over [`Bus`] (no `dyn` on the hot path). The board provides:
//!
//! - **Physical memory**, addressed host-physically ([`Hpa`], [`Hfn`]): what the processor
//!   puts on its bus, after paging and, in VMX non-root operation, after EPT (a guest-physical
//!   address never reaches the board). RAM is one host byte slice ([`Bus::ram`]/[`Bus::ram_mut`]); the board
//!   says, per 4-KiB frame, where in that slice the frame lives ([`Bus::ram_offset`]), or that
//!   it is not RAM. The CPU's TLB caches "this linear page is RAM at offset X", so a hit costs
//!   a masked compare and a slice index. Every physical access that is not RAM goes to
//!   [`Bus::mmio_read`]/[`Bus::mmio_write`]; the board answers unbacked reads with all ones,
//!   as a PC does (SDM Vol. 3A §11.3: memory types aside, an access to no device floats).
//!   The RAM layout is fixed for the life of a run: `ram_offset` must give the same answer for
//!   the same frame every time, because the TLB and the decode cache remember it.
//! - **Port I/O** (SDM Vol. 1 §19): [`Bus::io_in`]/[`Bus::io_out`] with sizes 1, 2 or 4.
//!   Permission checks (IOPL, the TSS I/O bitmap) are the CPU's business, not the board's.
//! - **Interrupts** (SDM Vol. 3A §6.8): the board's local APIC / PIC says whether a maskable
//!   interrupt is pending ([`Bus::has_interrupt`]) and hands over its vector when the CPU
//!   acknowledges it ([`Bus::acknowledge_interrupt`]). The CPU asks only at instruction
//!   boundaries where RFLAGS.IF = 1 and no STI or MOV SS shadow is in force.
//! - **The task priority** (SDM Vol. 3A §11.8.6): CR8 is the local APIC's TPR[7:4], one
//!   register with two names, so MOV to and from CR8 go to the board ([`Bus::cr8`],
//!   [`Bus::set_cr8`]), whose APIC then holds back interrupts of a lower priority class.
//! - **MSRs the board owns** (IA32_APIC_BASE, the x2APIC range 0x800–0x8FF, IA32_TSC_DEADLINE):
//!   [`Bus::rdmsr`]/[`Bus::wrmsr`] are asked first and may answer [`MsrAccess::NotMine`], in
//!   which case the CPU handles the MSR itself or raises #GP(0).
//! - **Time.** Time is virtual: it advances by one tick per retired instruction or event
//!   delivered between instructions (see [`crate::Cpu::run`]), and by the ticks a halted CPU
//!   is told to skip ([`crate::Cpu::skip_idle_ticks`]), never with the
//!   host clock. Every bus call that may depend on time gets `now`. The TSC reads
//!   `now.tsc()` = ticks × [`TSC_PER_TICK`]; the board derives the APIC timer from the same
//!   clock.

use x86::{Hfn, Hpa};

/// TSC increments per virtual tick (one tick = one retired instruction). With this constant
/// the TSC of a 1-GIPS model machine runs at 1 GHz, a plausible figure for guests that
/// calibrate against it.
pub const TSC_PER_TICK: u64 = 1;

/// A point of virtual time: steps (retired instructions and delivered events) plus skipped
/// idle ticks since reset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtualTime(u64);

impl VirtualTime {
    /// Wraps a raw tick count.
    pub const fn from_ticks(ticks: u64) -> Self {
        Self(ticks)
    }

    /// Ticks since reset.
    pub const fn ticks(self) -> u64 {
        self.0
    }

    /// The time-stamp counter at this point (SDM Vol. 3B §18.17).
    pub const fn tsc(self) -> u64 {
        self.0.wrapping_mul(TSC_PER_TICK)
    }
}

/// The board's answer to an MSR access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrAccess {
    /// The MSR belongs to the board and was read (the value) or written (the value is ignored).
    Done(u64),
    /// The MSR belongs to the board and the access is illegal (reserved bits, read-only
    /// register, x2APIC not enabled, …): the CPU raises #GP(0).
    Fault,
    /// Not a board MSR: the CPU handles it (or raises #GP(0) if nobody implements it).
    NotMine,
}

/// Width of an I/O or MMIO access in bytes: 1, 2, 4 (or 8 for MMIO).
pub type AccessSize = u8;

/// Everything outside the CPU package: RAM, MMIO, ports, interrupt controllers, board MSRs.
pub trait Bus {
    /// All of the board's RAM as one slice; [`Bus::ram_offset`] maps frames into it.
    fn ram(&self) -> &[u8];

    /// All of the board's RAM, writable.
    fn ram_mut(&mut self) -> &mut [u8];

    /// Where the 4-KiB physical frame `frame` lives in [`Bus::ram`], as a byte offset (a
    /// multiple of 4096 with 4096 bytes behind it), or `None` if the frame is MMIO or unbacked.
    fn ram_offset(&self, frame: Hfn) -> Option<usize>;

    /// Reads `size` bytes (1, 2, 4 or 8) at a non-RAM physical address, little-endian in the
    /// low bytes of the result. Unbacked addresses read as all ones.
    fn mmio_read(&mut self, addr: Hpa, size: AccessSize, now: VirtualTime) -> u64;

    /// Writes `size` bytes (1, 2, 4 or 8) at a non-RAM physical address. Unbacked addresses
    /// ignore the write.
    fn mmio_write(&mut self, addr: Hpa, size: AccessSize, value: u64, now: VirtualTime);

    /// IN from `port`, `size` 1, 2 or 4 bytes. Unclaimed ports read as all ones.
    fn io_in(&mut self, port: u16, size: AccessSize, now: VirtualTime) -> u32;

    /// OUT to `port`, `size` 1, 2 or 4 bytes.
    fn io_out(&mut self, port: u16, size: AccessSize, value: u32, now: VirtualTime);

    /// Whether a maskable interrupt is pending for this CPU at `now` (the INTR line).
    fn has_interrupt(&mut self, now: VirtualTime) -> bool;

    /// A time until which [`Bus::has_interrupt`] is known to answer `false`, without any
    /// effect on the board, at every boundary after `now` (the CPU has just asked at `now` and
    /// got `false`, or acknowledged), provided the CPU makes no other call to the board in
    /// between (RAM accesses aside). The CPU then skips the question at those boundaries: the
    /// answer is the same, so interrupts are recognised at exactly the same instruction
    /// boundaries. The default promises nothing (the CPU asks at every boundary).
    fn interrupt_horizon(&self, now: VirtualTime) -> VirtualTime {
        now
    }

    /// Whether an NMI was delivered to this processor since the last call (the call takes
    /// it). The processor asks after an instruction that touched a device (an NMI is raised
    /// only by a guest access to the board: an IPI), and delivers it at the next boundary
    /// where NMIs are not blocked (SDM Vol. 3A §6.7.1). A board without NMI sources never
    /// has one.
    fn take_nmi(&mut self) -> bool {
        false
    }

    /// INTA: the vector of the highest-priority pending interrupt, now in service, or `None`
    /// if it went away (a spurious interrupt the CPU then ignores).
    fn acknowledge_interrupt(&mut self, now: VirtualTime) -> Option<u8>;

    /// MOV from CR8: the task-priority class, TPR[7:4] of the local APIC (SDM Vol. 3A
    /// §11.8.6). A board without a local APIC has no priorities: CR8 reads as 0.
    fn cr8(&mut self, now: VirtualTime) -> u8 {
        let _ = now;
        0
    }

    /// MOV to CR8 of `class` (0–15; the CPU has refused larger values): TPR[7:4] = `class`,
    /// TPR[3:0] = 0, and the APIC holds back interrupts whose priority class is not above it.
    /// A board without a local APIC has no priorities to hold back.
    fn set_cr8(&mut self, class: u8, now: VirtualTime) {
        let _ = (class, now);
    }

    /// RDMSR of a board MSR, or [`MsrAccess::NotMine`].
    fn rdmsr(&mut self, msr: u32, now: VirtualTime) -> MsrAccess {
        let _ = (msr, now);
        MsrAccess::NotMine
    }

    /// WRMSR of a board MSR (answer `Done(_)` when taken), or [`MsrAccess::NotMine`].
    fn wrmsr(&mut self, msr: u32, value: u64, now: VirtualTime) -> MsrAccess {
        let _ = (msr, value, now);
        MsrAccess::NotMine
    }

    /// WRMSR IA32_TSC moved this processor's time-stamp counter: from `now` on, RDTSC reads
    /// `now.tsc() + offset` (wrapping). A board whose local APIC has a TSC-deadline timer
    /// compares IA32_TSC_DEADLINE with that value, not with `now.tsc()` (SDM Vol. 3A
    /// §11.5.4.1); a board without one has nothing to do.
    fn tsc_offset_changed(&mut self, offset: u64, now: VirtualTime) {
        let _ = (offset, now);
    }

    /// Whether a device asked to end the run (the debug-exit port, a reset request). Checked
    /// after every instruction that touched a port or MMIO; the run then stops with
    /// [`crate::StopReason::BusStop`].
    fn stop_requested(&self) -> bool {
        false
    }
}
