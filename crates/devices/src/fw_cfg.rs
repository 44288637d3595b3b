//! QEMU's firmware configuration interface, the port-I/O ("traditional") form
//! (QEMU `docs/specs/fw_cfg.rst`, `hw/nvram/fw_cfg.c`): a 16-bit write to the selector port
//! (0x510) chooses an item and rewinds its read offset; byte reads of the data port (0x511)
//! return the item's bytes one after the other, then zeros past its end. An unknown key
//! selects nothing and reads as zeros. Data-port writes have been ignored since QEMU 2.4 and
//! are ignored here; there is no DMA interface, so the ID item advertises only the traditional
//! interface. Like QEMU's combined I/O region, a byte read at either port reads data.
//!
//! Items (integers little-endian, as QEMU stores them): signature (0x00, "QEMU"), ID (0x01),
//! RAM size (0x03, u64 bytes), CPU count (0x05, u16), maximum CPU count (0x0F, u16) and the
//! file directory (0x19, a big-endian u32 count of zero: no named files).

/// Selector port (16-bit writes).
pub const SELECTOR_PORT: u16 = 0x510;
/// Data port (byte reads).
pub const DATA_PORT: u16 = 0x511;

/// Item keys (`FW_CFG_*` in QEMU's `include/standard-headers/linux/qemu_fw_cfg.h`).
pub mod key {
    /// "QEMU".
    pub const SIGNATURE: u16 = 0x00;
    /// Interface feature bits: bit 0 traditional I/O, bit 1 DMA.
    pub const ID: u16 = 0x01;
    /// RAM size in bytes (u64).
    pub const RAM_SIZE: u16 = 0x03;
    /// Number of CPUs at boot (u16).
    pub const NB_CPUS: u16 = 0x05;
    /// Maximum number of CPUs (u16).
    pub const MAX_CPUS: u16 = 0x0f;
    /// Directory of named files.
    pub const FILE_DIR: u16 = 0x19;
}

/// Bits 13:0 of a selector are the item number; bit 14 (write channel) and bit 15
/// (architecture-specific item) qualify it.
const ENTRY_MASK: u16 = 0x3fff;
/// Selector bit 15: architecture-specific item (none exist on this board).
const ARCH_LOCAL: u16 = 0x8000;

/// Snapshot of [`FwCfg`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FwCfgState {
    /// RAM size reported in item 0x03.
    pub ram_size: u64,
    /// CPU count reported in items 0x05 and 0x0F.
    pub cpus: u16,
    /// The selected key (as written).
    pub selector: u16,
    /// Read offset inside the selected item.
    pub offset: u32,
}

/// The fw_cfg device.
#[derive(Clone, Debug)]
pub struct FwCfg {
    state: FwCfgState,
}

impl FwCfg {
    /// A device describing a machine with `ram_size` bytes of RAM and `cpus` CPUs.
    pub fn new(ram_size: u64, cpus: u16) -> Self {
        Self::from_state(FwCfgState {
            ram_size,
            cpus,
            selector: key::SIGNATURE,
            offset: 0,
        })
    }

    /// Restores from a snapshot.
    pub fn from_state(state: FwCfgState) -> Self {
        Self { state }
    }

    /// A snapshot.
    pub fn state(&self) -> FwCfgState {
        self.state
    }

    /// Byte `index` of item `selector`, or `None` past its end or for an unknown item.
    fn item_byte(&self, selector: u16, index: u32) -> Option<u8> {
        if selector & ARCH_LOCAL != 0 {
            return None;
        }
        let i = usize::try_from(index).ok()?;
        let mut buf = [0u8; 8];
        let bytes: &[u8] = match selector & ENTRY_MASK {
            key::SIGNATURE => b"QEMU",
            key::ID => {
                buf[..4].copy_from_slice(&1u32.to_le_bytes());
                &buf[..4]
            }
            key::RAM_SIZE => {
                buf = self.state.ram_size.to_le_bytes();
                &buf
            }
            key::NB_CPUS | key::MAX_CPUS => {
                buf[..2].copy_from_slice(&self.state.cpus.to_le_bytes());
                &buf[..2]
            }
            key::FILE_DIR => &[0, 0, 0, 0],
            _ => return None,
        };
        bytes.get(i).copied()
    }

    /// IN of `size` bytes from `port` (0x510 or 0x511). Byte reads return the next data
    /// byte; wider reads are not valid for the device (QEMU rejects them) and read all ones.
    pub fn read(&mut self, port: u16, size: u8) -> u32 {
        if size != 1 || !(port == SELECTOR_PORT || port == DATA_PORT) {
            return crate::width_mask(size) as u32;
        }
        let b = self
            .item_byte(self.state.selector, self.state.offset)
            .unwrap_or(0);
        self.state.offset = self.state.offset.saturating_add(1);
        u32::from(b)
    }

    /// OUT of `size` bytes to `port`: a 16-bit write to the selector selects an item.
    pub fn write(&mut self, port: u16, size: u8, value: u32) {
        if port == SELECTOR_PORT && size == 2 {
            self.state.selector = (value & 0xffff) as u16;
            self.state.offset = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_item(f: &mut FwCfg, k: u16, n: usize) -> std::vec::Vec<u8> {
        f.write(SELECTOR_PORT, 2, u32::from(k));
        (0..n).map(|_| f.read(DATA_PORT, 1) as u8).collect()
    }

    extern crate std;

    #[test]
    fn signature_id_ram_cpus() {
        let mut f = FwCfg::new(128 << 20, 1);
        assert_eq!(read_item(&mut f, key::SIGNATURE, 6), b"QEMU\0\0");
        assert_eq!(read_item(&mut f, key::ID, 4), [1, 0, 0, 0]);
        assert_eq!(
            read_item(&mut f, key::RAM_SIZE, 8),
            (128u64 << 20).to_le_bytes()
        );
        assert_eq!(read_item(&mut f, key::NB_CPUS, 3), [1, 0, 0]);
        assert_eq!(read_item(&mut f, key::MAX_CPUS, 2), [1, 0]);
        assert_eq!(read_item(&mut f, key::FILE_DIR, 4), [0, 0, 0, 0]);
    }

    #[test]
    fn unknown_keys_and_bad_widths() {
        let mut f = FwCfg::new(1 << 20, 1);
        assert_eq!(read_item(&mut f, 0x1234, 2), [0, 0]);
        assert_eq!(read_item(&mut f, ARCH_LOCAL | key::SIGNATURE, 1), [0]);
        // Byte writes to the selector do not select.
        f.write(SELECTOR_PORT, 2, u32::from(key::SIGNATURE));
        f.write(SELECTOR_PORT, 1, u32::from(key::ID));
        assert_eq!(f.read(DATA_PORT, 1), u32::from(b'Q'));
        assert_eq!(f.read(DATA_PORT, 2), 0xffff);
        // Reselecting rewinds.
        assert_eq!(read_item(&mut f, key::SIGNATURE, 1), b"Q");
    }
}
