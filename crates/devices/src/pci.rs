//! PCI configuration mechanism #1 (PCI Local Bus Specification 3.0 §3.2.2.3.2) on a board
//! with no PCI devices: CONFIG_ADDRESS at 0xCF8 (a 32-bit read/write register) and
//! CONFIG_DATA at 0xCFC–0xCFF. Every configuration read ends in a master abort, which returns
//! all ones, so a probe of vendor ID reads 0xFFFF ("no device"); configuration writes are
//! dropped. Only 32-bit accesses address CONFIG_ADDRESS (§3.2.2.3.2: byte and word accesses to
//! 0xCF8 pass through as ordinary I/O), so narrower accesses there read all ones and are
//! ignored, like any undecoded port.

/// CONFIG_ADDRESS.
pub const CONFIG_ADDRESS: u16 = 0xcf8;
/// CONFIG_DATA (four byte lanes, 0xCFC–0xCFF).
pub const CONFIG_DATA: u16 = 0xcfc;

/// CONFIG_ADDRESS bit 31: enable configuration space mapping.
const ENABLE: u32 = 1 << 31;
/// Writable bits of CONFIG_ADDRESS: enable, bus, device, function, register (bits 1:0 are
/// read-only zero; 30:24 reserved, read as zero).
const ADDRESS_MASK: u32 = ENABLE | 0x00ff_fffc;

/// Snapshot of [`PciHost`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PciHostState {
    /// CONFIG_ADDRESS.
    pub address: u32,
}

/// The host bridge's configuration mechanism, with an empty bus behind it.
#[derive(Clone, Debug, Default)]
pub struct PciHost {
    state: PciHostState,
}

impl PciHost {
    /// After reset: CONFIG_ADDRESS = 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores from a snapshot.
    pub fn from_state(state: PciHostState) -> Self {
        Self { state }
    }

    /// A snapshot.
    pub fn state(&self) -> PciHostState {
        self.state
    }

    /// Whether `port` belongs to the mechanism.
    pub fn claims(port: u16) -> bool {
        (CONFIG_ADDRESS..CONFIG_ADDRESS + 4).contains(&port)
            || (CONFIG_DATA..CONFIG_DATA + 4).contains(&port)
    }

    /// IN of `size` bytes from `port`.
    pub fn read(&self, port: u16, size: u8) -> u32 {
        if port == CONFIG_ADDRESS && size == 4 {
            self.state.address
        } else {
            // A configuration read of an absent device master-aborts: all ones.
            crate::width_mask(size) as u32
        }
    }

    /// OUT of `size` bytes to `port`.
    pub fn write(&mut self, port: u16, size: u8, value: u32) {
        if port == CONFIG_ADDRESS && size == 4 {
            self.state.address = value & ADDRESS_MASK;
        }
        // Configuration writes to an absent device are dropped.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_bus_reads_all_ones() {
        let mut p = PciHost::new();
        p.write(CONFIG_ADDRESS, 4, 0x8000_0000);
        assert_eq!(p.read(CONFIG_DATA, 2), 0xffff);
        assert_eq!(p.read(CONFIG_DATA, 4), 0xffff_ffff);
        assert_eq!(p.read(CONFIG_DATA + 2, 1), 0xff);
        p.write(CONFIG_DATA, 4, 0);
        assert_eq!(p.read(CONFIG_DATA, 4), 0xffff_ffff);
    }

    #[test]
    fn config_address_is_32_bit_only_with_reserved_bits_zero() {
        let mut p = PciHost::new();
        p.write(CONFIG_ADDRESS, 4, 0xffff_ffff);
        assert_eq!(p.read(CONFIG_ADDRESS, 4), 0x80ff_fffc);
        p.write(CONFIG_ADDRESS, 1, 0);
        assert_eq!(p.read(CONFIG_ADDRESS, 4), 0x80ff_fffc);
        assert_eq!(p.read(CONFIG_ADDRESS, 2), 0xffff);
        assert!(PciHost::claims(0xcfe) && PciHost::claims(0xcf8) && !PciHost::claims(0xcf7));
    }
}
