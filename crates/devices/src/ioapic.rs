//! The I/O APIC (Intel 82093AA I/O Advanced Programmable Interrupt Controller datasheet,
//! §3.0 "Register Description", §3.2.4 "I/O Redirection Table Registers").
//!
//! A 24-pin I/O APIC at 0xFEC00000: IOREGSEL at offset 0x00 selects a register, IOWIN at 0x10
//! reads and writes it (32-bit accesses). Registers: ID (0x00, bits 27:24), version (0x01:
//! 23 as the maximum redirection entry), arbitration ID (0x02) and the 24 64-bit redirection
//! entries at 0x10 + 2·n (low dword) / 0x11 + 2·n (high dword). The version is 0x20, that of
//! the I/O APICs integrated in Intel chipsets (ICH datasheets, "I/O APIC Registers") and of
//! QEMU's model, which add the directed EOI register at offset 0x40.
//!
//! Edge-triggered pins deliver one message per rising edge (after the polarity inversion of
//! bit 13) while unmasked. Level-triggered pins deliver while asserted and remote IRR (bit 14)
//! is clear, set remote IRR, and are re-evaluated when the local APIC's EOI for the vector
//! clears it ([`IoApic::eoi`]); a masked asserted level pin delivers when unmasked. Delivery
//! status (bit 12) is always idle: messages reach the local APIC at once. Messages are handed
//! to the board as [`InterruptMessage`]s; which local APICs take them is theirs to decide.

use crate::Unimplemented;
use crate::lapic::{DeliveryMode, InterruptMessage};

/// Default physical base.
pub const DEFAULT_BASE: x86::Gpa = x86::Gpa::new(0xfec0_0000);
/// Size of the register window.
pub const MMIO_SIZE: u64 = 0x1000;
/// Number of redirection entries (and pins).
pub const PINS: usize = 24;

/// IOREGSEL offset.
const IOREGSEL: u64 = 0x00;
/// IOWIN offset.
const IOWIN: u64 = 0x10;
/// EOI register offset.
const IOEOI: u64 = 0x40;

/// Version register: version 0x20 (with the EOI register), maximum redirection entry 23.
pub const VERSION: u32 = 0x20 | ((PINS as u32 - 1) << 16);

/// Redirection entry bit 12: delivery status (read-only).
const RTE_DELIVERY_STATUS: u64 = 1 << 12;
/// Bit 13: input pin polarity (1 = active low).
const RTE_ACTIVE_LOW: u64 = 1 << 13;
/// Bit 14: remote IRR (read-only).
const RTE_REMOTE_IRR: u64 = 1 << 14;
/// Bit 15: trigger mode (1 = level).
const RTE_LEVEL: u64 = 1 << 15;
/// Bit 16: mask.
const RTE_MASKED: u64 = 1 << 16;
/// Bit 11: destination mode (1 = logical).
const RTE_LOGICAL: u64 = 1 << 11;
/// Writable bits: vector, delivery mode, destination mode, polarity, trigger, mask,
/// destination (63:56).
const RTE_WRITABLE: u64 = 0xff00_0000_0001_afff;

/// Snapshot of an [`IoApic`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoApicState {
    /// IOREGSEL.
    pub select: u8,
    /// ID register bits 27:24.
    pub id: u8,
    /// Redirection table.
    pub redirection: [u64; PINS],
    /// Levels of the input pins (as driven, before polarity).
    pub pins: u32,
}

impl Default for IoApicState {
    /// After reset: every entry masked (datasheet: "the mask bit is set on reset").
    fn default() -> Self {
        Self {
            select: 0,
            id: 0,
            redirection: [RTE_MASKED; PINS],
            pins: 0,
        }
    }
}

/// The I/O APIC.
#[derive(Clone, Debug, Default)]
pub struct IoApic {
    state: IoApicState,
}

impl IoApic {
    /// After reset.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores from a snapshot.
    pub fn from_state(state: IoApicState) -> Self {
        Self { state }
    }

    /// A snapshot.
    pub fn state(&self) -> IoApicState {
        self.state.clone()
    }

    fn asserted(&self, pin: usize) -> bool {
        let level = self.state.pins & (1 << pin) != 0;
        level != (self.state.redirection[pin] & RTE_ACTIVE_LOW != 0)
    }

    fn message(&self, pin: usize) -> Result<InterruptMessage, Unimplemented> {
        let e = self.state.redirection[pin];
        let delivery = DeliveryMode::from_bits((e >> 8) as u32);
        if !matches!(delivery, DeliveryMode::Fixed | DeliveryMode::LowestPriority) {
            return Err(Unimplemented(
                "I/O APIC delivery modes other than fixed and lowest priority",
            ));
        }
        Ok(InterruptMessage {
            vector: (e & 0xff) as u8,
            delivery,
            logical: e & RTE_LOGICAL != 0,
            destination: (e >> 56) as u32,
            level_triggered: e & RTE_LEVEL != 0,
        })
    }

    /// A level pin that is asserted, unmasked and not waiting for an EOI sends its message.
    fn service_level(
        &mut self,
        pin: usize,
        out: &mut impl FnMut(InterruptMessage),
    ) -> Result<(), Unimplemented> {
        let e = self.state.redirection[pin];
        if e & RTE_LEVEL != 0 && e & (RTE_MASKED | RTE_REMOTE_IRR) == 0 && self.asserted(pin) {
            let m = self.message(pin)?;
            self.state.redirection[pin] |= RTE_REMOTE_IRR;
            out(m);
        }
        Ok(())
    }

    /// Drives input `pin` to `level`; messages to deliver go to `out`.
    pub fn set_pin(
        &mut self,
        pin: usize,
        level: bool,
        out: &mut impl FnMut(InterruptMessage),
    ) -> Result<(), Unimplemented> {
        if pin >= PINS {
            return Ok(());
        }
        let was = self.asserted(pin);
        if level {
            self.state.pins |= 1 << pin;
        } else {
            self.state.pins &= !(1 << pin);
        }
        let e = self.state.redirection[pin];
        if e & RTE_LEVEL == 0 {
            if !was && self.asserted(pin) && e & RTE_MASKED == 0 {
                out(self.message(pin)?);
            }
            Ok(())
        } else {
            self.service_level(pin, out)
        }
    }

    /// A rising edge on `pin` that the board saw only as an edge count (the pin may already
    /// be low again): edge-triggered entries deliver it.
    pub fn pulse_pin(
        &mut self,
        pin: usize,
        out: &mut impl FnMut(InterruptMessage),
    ) -> Result<(), Unimplemented> {
        if pin >= PINS {
            return Ok(());
        }
        let e = self.state.redirection[pin];
        if e & (RTE_LEVEL | RTE_MASKED) == 0 {
            out(self.message(pin)?);
        }
        Ok(())
    }

    /// The local APIC's EOI for a level-triggered `vector`: clears remote IRR of the entries
    /// with that vector and re-delivers those whose pin is still asserted.
    pub fn eoi(
        &mut self,
        vector: u8,
        out: &mut impl FnMut(InterruptMessage),
    ) -> Result<(), Unimplemented> {
        for pin in 0..PINS {
            let e = self.state.redirection[pin];
            if e & RTE_REMOTE_IRR != 0 && (e & 0xff) as u8 == vector {
                self.state.redirection[pin] &= !RTE_REMOTE_IRR;
                self.service_level(pin, out)?;
            }
        }
        Ok(())
    }

    fn read_register(&self) -> u32 {
        match self.state.select {
            0x00 => u32::from(self.state.id) << 24,
            0x01 => VERSION,
            0x02 => u32::from(self.state.id) << 24,
            i @ 0x10..=0x3f => {
                let e = self.state.redirection[usize::from((i - 0x10) / 2)];
                if i % 2 == 0 {
                    e as u32
                } else {
                    (e >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    fn write_register(
        &mut self,
        value: u32,
        out: &mut impl FnMut(InterruptMessage),
    ) -> Result<(), Unimplemented> {
        match self.state.select {
            0x00 => self.state.id = ((value >> 24) & 0xf) as u8,
            i @ 0x10..=0x3f => {
                let pin = usize::from((i - 0x10) / 2);
                let e = &mut self.state.redirection[pin];
                let ro = *e & (RTE_REMOTE_IRR | RTE_DELIVERY_STATUS);
                let new = if i % 2 == 0 {
                    (*e & !0xffff_ffff) | u64::from(value)
                } else {
                    (*e & 0xffff_ffff) | (u64::from(value) << 32)
                };
                *e = (new & RTE_WRITABLE) | ro;
                if *e & RTE_LEVEL == 0 {
                    *e &= !RTE_REMOTE_IRR;
                }
                self.service_level(pin, out)?;
            }
            _ => {} // ID/version/arbitration are read-only or reserved.
        }
        Ok(())
    }

    /// A read of `size` bytes at `offset` in the register window.
    pub fn mmio_read(&self, offset: u64, size: u8) -> Result<u32, Unimplemented> {
        if size != 4 {
            return Err(Unimplemented("I/O APIC access that is not 32 bits wide"));
        }
        Ok(match offset {
            IOREGSEL => u32::from(self.state.select),
            IOWIN => self.read_register(),
            _ => 0,
        })
    }

    /// A write of `size` bytes at `offset`; messages to deliver go to `out`.
    pub fn mmio_write(
        &mut self,
        offset: u64,
        size: u8,
        value: u32,
        out: &mut impl FnMut(InterruptMessage),
    ) -> Result<(), Unimplemented> {
        if size != 4 {
            return Err(Unimplemented("I/O APIC access that is not 32 bits wide"));
        }
        match offset {
            IOREGSEL => self.state.select = value as u8,
            IOWIN => self.write_register(value, out)?,
            IOEOI => self.eoi(value as u8, out)?,
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    fn program(io: &mut IoApic, pin: u8, low: u32, high: u32, got: &mut Vec<InterruptMessage>) {
        let mut sink = |m| got.push(m);
        io.mmio_write(IOREGSEL, 4, u32::from(0x10 + 2 * pin), &mut sink)
            .unwrap();
        io.mmio_write(IOWIN, 4, low, &mut sink).unwrap();
        io.mmio_write(IOREGSEL, 4, u32::from(0x11 + 2 * pin), &mut sink)
            .unwrap();
        io.mmio_write(IOWIN, 4, high, &mut sink).unwrap();
    }

    #[test]
    fn version_id_and_reset_masks() {
        let mut io = IoApic::new();
        let mut sink = |_m| {};
        io.mmio_write(IOREGSEL, 4, 1, &mut sink).unwrap();
        assert_eq!(io.mmio_read(IOWIN, 4).unwrap(), 0x0017_0020);
        io.mmio_write(IOREGSEL, 4, 0, &mut sink).unwrap();
        io.mmio_write(IOWIN, 4, 0x0f00_0000, &mut sink).unwrap();
        assert_eq!(io.mmio_read(IOWIN, 4).unwrap(), 0x0f00_0000);
        io.mmio_write(IOREGSEL, 4, 0x12, &mut sink).unwrap();
        assert_eq!(io.mmio_read(IOWIN, 4).unwrap(), 0x1_0000);
        assert!(io.mmio_read(IOWIN, 1).is_err());
    }

    #[test]
    fn edge_entry_delivers_on_rising_edges_when_unmasked() {
        let mut io = IoApic::new();
        let mut got = Vec::new();
        io.set_pin(2, true, &mut |m| got.push(m)).unwrap(); // masked
        program(&mut io, 2, 0x30, 0x0100_0000, &mut got);
        io.set_pin(2, false, &mut |m| got.push(m)).unwrap();
        io.set_pin(2, true, &mut |m| got.push(m)).unwrap();
        io.set_pin(2, true, &mut |m| got.push(m)).unwrap();
        io.pulse_pin(2, &mut |m| got.push(m)).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            InterruptMessage {
                vector: 0x30,
                delivery: DeliveryMode::Fixed,
                logical: false,
                destination: 1,
                level_triggered: false
            }
        );
    }

    #[test]
    fn level_entry_remote_irr_and_eoi() {
        let mut io = IoApic::new();
        let mut got = Vec::new();
        program(&mut io, 9, 0x1_a041, 0, &mut got); // masked, level, active low
        io.set_pin(9, false, &mut |m| got.push(m)).unwrap(); // asserted (active low), masked
        assert!(got.is_empty());
        program(&mut io, 9, 0xa041, 0, &mut got); // unmask: delivers at once
        assert_eq!(got.len(), 1);
        io.set_pin(9, false, &mut |m| got.push(m)).unwrap();
        assert_eq!(got.len(), 1); // remote IRR set
        io.mmio_write(IOREGSEL, 4, 0x22, &mut |m| got.push(m))
            .unwrap();
        assert_ne!(io.mmio_read(IOWIN, 4).unwrap() & (1 << 14), 0);
        io.eoi(0x41, &mut |m| got.push(m)).unwrap(); // still asserted: again
        assert_eq!(got.len(), 2);
        io.set_pin(9, true, &mut |m| got.push(m)).unwrap(); // deasserted
        io.mmio_write(IOEOI, 4, 0x41, &mut |m| got.push(m)).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(io.state().redirection[9] & RTE_REMOTE_IRR, 0);
    }

    #[test]
    fn unsupported_delivery_modes_are_reported() {
        let mut io = IoApic::new();
        program(&mut io, 1, 0x400 | 0x20, 0, &mut Vec::new()); // NMI
        assert!(io.set_pin(1, true, &mut |_m| {}).is_err());
    }

    #[test]
    fn snapshot_round_trip() {
        let mut io = IoApic::new();
        program(&mut io, 3, 0x33, 0, &mut Vec::new());
        let copy = IoApic::from_state(io.state());
        assert_eq!(copy.state(), io.state());
    }
}
