//! The PC board: RAM, port and MMIO buses, the multiboot1 loader and the bare run loop that
//! drives the software CPU.
//!
//! - [`board`]: RAM, the address and port decoders, interrupt wiring, the [`cpu::Bus`]
//!   implementation (SDM Vol. 3A §11 for the APIC side, the AT port map for the rest).
//! - [`mptable`]: the MP configuration table left by the firmware (MP Specification 1.4 §4).
//! - [`multiboot`]: the loader (GNU Multiboot Specification 0.6.96 §3).
//! - [`run`]: [`Machine`], the bare run loop: the CPU in slices, timers on virtual time, idle
//!   time skipped while halted with interrupts enabled, and the [`Ending`] of a run.

pub mod board;
pub mod mptable;
pub mod multiboot;
pub mod run;

pub use board::{Board, BoardCounters, BoardStop};
pub use multiboot::{LoadError, Loaded, Module};
pub use run::{Ending, Machine};

use thiserror::Error;

/// Errors building or loading a machine (not endings of a run: see [`Ending`]).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Error {
    /// The RAM size is not supported.
    #[error(
        "RAM size {0:#x} is not supported (a multiple of 4 KiB from {min} MiB to {max} MiB)",
        min = board::MIN_RAM >> 20,
        max = board::MAX_RAM >> 20
    )]
    RamSize(u64),
    /// The image or its modules could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
}
