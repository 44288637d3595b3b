//! The small ports every PC decodes besides its named chips:
//! - 0x80, the POST-code port: writes are latched (a POST card would show them) and have no
//!   other effect; reads return all ones, as on boards without a readable POST latch (and as
//!   QEMU's `ioport80`).
//! - 0x92, system control port A (IBM PS/2 Technical Reference; Intel PIIX/ICH datasheets,
//!   "Port 92h"): bit 1 is the A20 gate, bit 0 the fast CPU reset. This board's address bus
//!   has A20 always enabled, so the bit reads as 1 and clearing it is reported as unimplemented
//!   (masking A20 would change what memory a guest sees); a write with bit 0 set requests a
//!   reset.
//! - 0x61, system control port B (Intel ICH datasheets, "NMI Status and Control Register"):
//!   bit 0 gates 8254 counter 2, bit 1 enables the speaker data, bit 4 toggles with every
//!   DRAM refresh request (every 15.085 µs of virtual time), bit 5 is counter 2's output.

use crate::{Ns, Unimplemented};

/// POST-code port.
pub const POST_PORT: u16 = 0x80;
/// System control port A.
pub const PORT_A: u16 = 0x92;
/// System control port B.
pub const PORT_B: u16 = 0x61;

/// Port A bit 0: fast CPU reset.
const PORT_A_RESET: u8 = 1 << 0;
/// Port A bit 1: A20 gate.
const PORT_A_A20: u8 = 1 << 1;
/// Port B bit 0: counter 2 gate.
pub const PORT_B_GATE2: u8 = 1 << 0;
/// Port B bits 3:0 are read/write (gate, speaker, parity and channel-check enables).
const PORT_B_RW: u8 = 0x0f;
/// Port B bit 4: refresh toggle.
const PORT_B_REFRESH: u8 = 1 << 4;
/// Port B bit 5: counter 2 output.
const PORT_B_OUT2: u8 = 1 << 5;
/// Refresh request period in nanoseconds (15.085 µs).
const REFRESH_PERIOD_NS: u64 = 15_085;

/// Snapshot of [`SystemPorts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SystemPortsState {
    /// Last POST code written to port 0x80.
    pub post_code: u8,
    /// Port A as last written (bit 1 forced on).
    pub port_a: u8,
    /// Port B read/write bits.
    pub port_b: u8,
}

impl Default for SystemPortsState {
    fn default() -> Self {
        Self {
            post_code: 0,
            port_a: PORT_A_A20,
            port_b: 0,
        }
    }
}

/// What a write to one of the system ports asks of the board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemEvent {
    /// Nothing beyond the register update.
    None,
    /// Port A bit 0 was set: reset the machine.
    Reset,
}

/// Ports 0x80, 0x92 and 0x61.
#[derive(Clone, Debug, Default)]
pub struct SystemPorts {
    state: SystemPortsState,
}

impl SystemPorts {
    /// After reset.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores from a snapshot.
    pub fn from_state(state: SystemPortsState) -> Self {
        Self { state }
    }

    /// A snapshot.
    pub fn state(&self) -> SystemPortsState {
        self.state
    }

    /// The gate input of 8254 counter 2 (port B bit 0).
    pub fn gate2(&self) -> bool {
        self.state.port_b & PORT_B_GATE2 != 0
    }

    /// Reads a byte from `port`; `out2` is 8254 counter 2's output at `now`.
    pub fn read(&self, port: u16, now: Ns, out2: bool) -> u8 {
        match port {
            PORT_A => self.state.port_a,
            PORT_B => {
                let mut v = self.state.port_b & PORT_B_RW;
                if (now.raw() / REFRESH_PERIOD_NS) % 2 == 1 {
                    v |= PORT_B_REFRESH;
                }
                if out2 {
                    v |= PORT_B_OUT2;
                }
                v
            }
            _ => 0xff,
        }
    }

    /// Writes a byte to `port`.
    pub fn write(&mut self, port: u16, value: u8) -> Result<SystemEvent, Unimplemented> {
        match port {
            POST_PORT => self.state.post_code = value,
            PORT_A => {
                if value & PORT_A_A20 == 0 {
                    return Err(Unimplemented(
                        "disabling the A20 gate (port 0x92 bit 1 = 0)",
                    ));
                }
                self.state.port_a = value & !PORT_A_RESET;
                if value & PORT_A_RESET != 0 {
                    return Ok(SystemEvent::Reset);
                }
            }
            PORT_B => self.state.port_b = value & PORT_B_RW,
            _ => {}
        }
        Ok(SystemEvent::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_codes_are_accepted() {
        let mut s = SystemPorts::new();
        assert_eq!(s.write(POST_PORT, 0x55), Ok(SystemEvent::None));
        assert_eq!(s.state().post_code, 0x55);
        assert_eq!(s.read(POST_PORT, Ns::ZERO, false), 0xff);
    }

    #[test]
    fn a20_is_on_and_stays_on() {
        let mut s = SystemPorts::new();
        assert_eq!(s.read(PORT_A, Ns::ZERO, false) & PORT_A_A20, PORT_A_A20);
        assert_eq!(s.write(PORT_A, 0x02), Ok(SystemEvent::None));
        assert!(s.write(PORT_A, 0x00).is_err());
        assert_eq!(s.write(PORT_A, 0x03), Ok(SystemEvent::Reset));
        assert_eq!(s.read(PORT_A, Ns::ZERO, false), 0x02);
    }

    #[test]
    fn port_b_gate_refresh_and_out2() {
        let mut s = SystemPorts::new();
        s.write(PORT_B, 0xff).unwrap();
        assert!(s.gate2());
        assert_eq!(s.read(PORT_B, Ns::ZERO, false), 0x0f);
        assert_eq!(s.read(PORT_B, Ns::new(REFRESH_PERIOD_NS), true), 0x3f);
    }
}
