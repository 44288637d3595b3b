//! How a run ends: [`StopReason`] for the endings a board expects (budget, HLT, shutdown, a
//! device's request) and [`CpuError`] for what the model cannot do. Architectural faults are
//! neither: they are delivered to the guest (SDM Vol. 3A §6).

use thiserror::Error;

/// Why [`crate::Cpu::run`] returned without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The instruction budget of this call is used up.
    BudgetExhausted,
    /// HLT: the CPU waits for an interrupt. The board may skip virtual time to its next timer
    /// deadline ([`crate::Cpu::skip_idle_ticks`]) and call `run` again; if RFLAGS.IF = 0 no
    /// maskable interrupt can wake it.
    Halted,
    /// Shutdown: a triple fault (SDM Vol. 3A §6.15, interrupt 8, "Exception Class").
    Shutdown,
    /// A device asked to stop the run ([`crate::Bus::stop_requested`]).
    BusStop,
    /// A VM exit in native VMX root operation ([`crate::Cpu::native_run`]): the program that
    /// owns the processor handles it.
    VmExit,
}

/// Something the model does not implement; the run stops and names it. Never a guest fault.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CpuError {
    /// An instruction the CPU does not implement (never skipped, never a no-op).
    #[error("unimplemented instruction {mnemonic} at {rip:#x} (bytes {bytes:02x?})")]
    Unimplemented {
        /// Linear address of the instruction (CS.base + RIP).
        rip: u64,
        /// Its encoding.
        bytes: Vec<u8>,
        /// Its mnemonic as iced-x86 names it.
        mnemonic: String,
    },
    /// An architectural feature or mode the model does not implement (virtual-8086 mode, task
    /// switches, …), with the reason.
    #[error("unimplemented behaviour at {rip:#x}: {what}")]
    Unsupported {
        /// Linear address of the instruction that needed it.
        rip: u64,
        /// What was needed.
        what: &'static str,
    },
}
