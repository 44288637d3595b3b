//! PC devices as plain state machines: 16550 UART, local APIC and timer, I/O APIC, 8259 PIC,
//! 8254 PIT, the debug-exit port, fw_cfg, the CMOS/RTC, PCI configuration mechanism #1 and
//! the small "system" ports a PC decodes. No threads, files or bus knowledge: each device is
//! driven by `read`/`write` calls with offsets inside its own window and reports through small
//! traits ([`IrqLine`], [`ByteSink`]), so the board and the hypervisor (for the virtual devices
//! it gives its guests) use the same code. Every device has a plain-data `…State` struct and
//! `state()` / `from_state()` for snapshots.
//!
//! Time is virtual: devices that count take a [`Ns`] (nanoseconds of virtual time since
//! reset) from the caller and never read a host clock.
//!
//! Modules and their references:
//! - [`uart`]: NS16550A / TI PC16550D datasheet.
//! - [`lapic`]: SDM Vol. 3A chapter 11 (local APIC, x2APIC, APIC timer).
//! - [`ioapic`]: Intel 82093AA I/O APIC datasheet.
//! - [`pic`]: Intel 8259A datasheet.
//! - [`pit`]: Intel 8254 datasheet.
//! - [`debug_exit`]: QEMU `hw/misc/debugexit.c` (isa-debug-exit).
//! - [`fw_cfg`]: QEMU `docs/specs/fw_cfg.rst`, `hw/nvram/fw_cfg.c`.
//! - [`cmos`]: MC146818 RTC datasheet and the PC CMOS map.
//! - [`pci`]: PCI Local Bus Specification 3.0 §3.2.2.3.2 (configuration mechanism #1).
//! - [`system`]: POST port 0x80, system control port A (0x92) and B (0x61).

#![no_std]

pub mod cmos;
pub mod debug_exit;
pub mod fw_cfg;
pub mod ioapic;
pub mod lapic;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod system;
pub mod uart;

/// A point of virtual time, in nanoseconds since reset. The board derives it from retired
/// instructions; devices only compare and subtract it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ns(u64);

impl Ns {
    /// Time zero (reset).
    pub const ZERO: Self = Self(0);

    /// Wraps a nanosecond count.
    pub const fn new(ns: u64) -> Self {
        Self(ns)
    }

    /// The nanosecond count.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// `self + ns`, saturating at the end of time.
    pub const fn saturating_add(self, ns: u64) -> Self {
        Self(self.0.saturating_add(ns))
    }

    /// Nanoseconds from `earlier` to `self`, zero if `earlier` is later.
    pub const fn since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// `value * num / den` without intermediate overflow, saturating at `u64::MAX`.
pub(crate) fn muldiv(value: u64, num: u64, den: u64) -> u64 {
    let r = u128::from(value) * u128::from(num) / u128::from(den.max(1));
    u64::try_from(r).unwrap_or(u64::MAX)
}

/// An interrupt output pin of a device. The device drives the level; what the pin is wired to
/// (a PIC input, an I/O APIC pin, a virtual interrupt of a guest) is the board's business.
pub trait IrqLine {
    /// Drives the line high (`true`, asserted) or low.
    fn set_level(&mut self, asserted: bool);
}

/// An [`IrqLine`] that only remembers its level and the rising edges it saw, for a board that
/// polls its devices' pins after every access and tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatchedLine {
    level: bool,
    rising_edges: u32,
}

impl LatchedLine {
    /// The current level of the pin.
    pub fn level(&self) -> bool {
        self.level
    }

    /// The rising edges seen since the last call, and forgets them. A pulse (high then low
    /// between two polls) is a rising edge whose level is already gone: edge-triggered
    /// inputs must still see it.
    pub fn take_rising_edges(&mut self) -> u32 {
        core::mem::take(&mut self.rising_edges)
    }
}

impl IrqLine for LatchedLine {
    fn set_level(&mut self, asserted: bool) {
        if asserted && !self.level {
            self.rising_edges = self.rising_edges.saturating_add(1);
        }
        self.level = asserted;
    }
}

/// Where a device's output bytes go (the UART's transmitter, a debug console).
pub trait ByteSink {
    /// Takes one byte the device transmitted.
    fn put(&mut self, byte: u8);

    /// Pushes buffered bytes to their destination (the board calls it between run slices
    /// and at the end of a run). Sinks without a buffer need not implement it.
    fn flush(&mut self) {}
}

/// A borrowed sink is a sink, so a caller can keep what a run's devices wrote.
impl<S: ByteSink + ?Sized> ByteSink for &mut S {
    fn put(&mut self, byte: u8) {
        (**self).put(byte);
    }

    fn flush(&mut self) {
        (**self).flush();
    }
}

/// A device operation that this model does not implement. The board stops the run with the
/// message rather than guessing: a silent approximation would hide a guest's expectations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unimplemented(pub &'static str);

impl core::fmt::Display for Unimplemented {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "not implemented: {}", self.0)
    }
}

/// Width of a port or MMIO access in bytes (1, 2, 4 or 8), with the mask of its value.
pub(crate) const fn width_mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

#[cfg(test)]
pub(crate) mod test_utils {
    //! Mocks shared by the device tests.
    extern crate std;
    use std::vec::Vec;

    /// A sink that keeps every byte.
    #[derive(Debug, Default)]
    pub struct VecSink(pub Vec<u8>);

    impl super::ByteSink for VecSink {
        fn put(&mut self, byte: u8) {
            self.0.push(byte);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latched_line_counts_rising_edges_including_pulses() {
        let mut l = LatchedLine::default();
        l.set_level(true);
        l.set_level(true);
        l.set_level(false);
        l.set_level(true);
        l.set_level(false);
        assert!(!l.level());
        assert_eq!(l.take_rising_edges(), 2);
        assert_eq!(l.take_rising_edges(), 0);
    }

    #[test]
    fn muldiv_does_not_overflow() {
        assert_eq!(muldiv(u64::MAX, 2, 2), u64::MAX);
        assert_eq!(muldiv(1_000_000_000, 1_193_182, 1_000_000_000), 1_193_182);
        assert_eq!(muldiv(u64::MAX, 3, 1), u64::MAX);
    }

    #[test]
    fn ns_arithmetic() {
        assert_eq!(Ns::new(5).since(Ns::new(7)), 0);
        assert_eq!(Ns::new(7).since(Ns::new(5)), 2);
        assert_eq!(Ns::new(u64::MAX).saturating_add(1), Ns::new(u64::MAX));
    }
}
