//! The CMOS RAM and real-time clock (Motorola MC146818A datasheet; the PC CMOS map as in the
//! IBM PC/AT Technical Reference and QEMU's `hw/rtc/mc146818rtc.c` / `hw/i386/pc.c`).
//!
//! Port 0x70 selects a register (bits 6:0) and writes the NMI mask (bit 7, "NMI disable");
//! port 0x71 reads and writes the selected register. 128 bytes, of which 0x00–0x0D are the
//! clock. The clock is deterministic: it starts at 2000-01-01 00:00:00 (a Saturday) and
//! advances with virtual time, so the same run reads the same dates. Updates are instantaneous,
//! so UIP (register A bit 7) is never seen set. Register B's data mode (bit 2, binary vs BCD)
//! and hour format (bit 1, 24 vs 12 hour) are honoured on reads.
//!
//! Not implemented, and reported as such: setting the clock, the periodic, alarm and
//! update-ended interrupts (register B bits 6:4, IRQ8) and the SET bit (register B bit 7).
//! The memory-size bytes follow the AT map (0x15/0x16 base KiB, 0x17/0x18 and 0x30/0x31
//! extended KiB) with QEMU's additions (0x34/0x35 RAM above 16 MiB in 64-KiB units, 0x5B–0x5D
//! RAM above 4 GiB in 64-KiB units).

use crate::{Ns, Unimplemented};

/// Index port (bit 7: NMI disable).
pub const INDEX_PORT: u16 = 0x70;
/// Data port.
pub const DATA_PORT: u16 = 0x71;

/// Register A: divider 32.768 kHz, rate 1.024 kHz (0x26, the BIOS default).
const REG_A_DEFAULT: u8 = 0x26;
/// Register B bit 1: 24-hour mode.
const REG_B_24H: u8 = 1 << 1;
/// Register B bit 2: binary (not BCD) data mode.
const REG_B_BINARY: u8 = 1 << 2;
/// Register B bits 7:4: SET, PIE, AIE, UIE.
const REG_B_UNSUPPORTED: u8 = 0xf0;
/// Register D bit 7: valid RAM and time.
const REG_D_VRT: u8 = 1 << 7;

/// Clock register indices.
mod idx {
    pub const SECONDS: u8 = 0x00;
    pub const MINUTES: u8 = 0x02;
    pub const HOURS: u8 = 0x04;
    pub const WEEKDAY: u8 = 0x06;
    pub const DAY: u8 = 0x07;
    pub const MONTH: u8 = 0x08;
    pub const YEAR: u8 = 0x09;
    pub const REG_A: u8 = 0x0a;
    pub const REG_B: u8 = 0x0b;
    pub const REG_C: u8 = 0x0c;
    pub const REG_D: u8 = 0x0d;
    pub const CENTURY: u8 = 0x32;
}

/// Snapshot of [`Cmos`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmosState {
    /// The 128 bytes (the clock bytes 0x00–0x09 and 0x32 are computed on read).
    pub ram: [u8; 128],
    /// Selected register.
    pub index: u8,
    /// NMI disabled (port 0x70 bit 7).
    pub nmi_disabled: bool,
}

/// CMOS RAM and RTC.
#[derive(Clone, Debug)]
pub struct Cmos {
    state: CmosState,
}

impl Cmos {
    /// CMOS contents for a machine with `ram_size` bytes of RAM.
    pub fn new(ram_size: u64) -> Self {
        let mut ram = [0u8; 128];
        ram[usize::from(idx::REG_A)] = REG_A_DEFAULT;
        ram[usize::from(idx::REG_B)] = REG_B_24H;
        ram[usize::from(idx::REG_D)] = REG_D_VRT;
        let base_kib: u16 = 640;
        ram[0x15..0x17].copy_from_slice(&base_kib.to_le_bytes());
        let ext_kib = (ram_size.saturating_sub(1 << 20) / 1024).min(0xffff) as u16;
        ram[0x17..0x19].copy_from_slice(&ext_kib.to_le_bytes());
        ram[0x30..0x32].copy_from_slice(&ext_kib.to_le_bytes());
        let above_16m = (ram_size.min(0xc000_0000).saturating_sub(16 << 20) >> 16).min(0xffff);
        ram[0x34..0x36].copy_from_slice(&(above_16m as u16).to_le_bytes());
        let above_4g = (ram_size.saturating_sub(0x1_0000_0000) >> 16).min(0xff_ffff) as u32;
        ram[0x5b..0x5e].copy_from_slice(&above_4g.to_le_bytes()[..3]);
        Self {
            state: CmosState {
                ram,
                index: 0,
                nmi_disabled: false,
            },
        }
    }

    /// Restores from a snapshot.
    pub fn from_state(state: CmosState) -> Self {
        Self { state }
    }

    /// A snapshot.
    pub fn state(&self) -> CmosState {
        self.state.clone()
    }

    /// Whether the NMI mask (port 0x70 bit 7) is set.
    pub fn nmi_disabled(&self) -> bool {
        self.state.nmi_disabled
    }

    fn encode(&self, v: u8) -> u8 {
        if self.state.ram[usize::from(idx::REG_B)] & REG_B_BINARY != 0 {
            v
        } else {
            (v / 10) << 4 | (v % 10)
        }
    }

    fn clock_byte(&self, index: u8, now: Ns) -> Option<u8> {
        let secs = now.raw() / 1_000_000_000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (year, month, day) = civil_from_days(days);
        let v = match index {
            idx::SECONDS => (rem % 60) as u8,
            idx::MINUTES => (rem / 60 % 60) as u8,
            idx::HOURS => {
                let h = (rem / 3600) as u8;
                if self.state.ram[usize::from(idx::REG_B)] & REG_B_24H != 0 {
                    h
                } else {
                    // 12-hour mode: 12, 1..11, with bit 7 for PM (encoded after BCD).
                    let h12 = if h.is_multiple_of(12) { 12 } else { h % 12 };
                    return Some(self.encode(h12) | if h >= 12 { 0x80 } else { 0 });
                }
            }
            // 2000-01-01 was a Saturday; the RTC counts Sunday as 1.
            idx::WEEKDAY => ((days + 6) % 7 + 1) as u8,
            idx::DAY => day,
            idx::MONTH => month,
            idx::YEAR => (year % 100) as u8,
            idx::CENTURY => (year / 100) as u8,
            _ => return None,
        };
        Some(self.encode(v))
    }

    /// IN from port 0x70 or 0x71.
    pub fn read(&mut self, port: u16, now: Ns) -> u8 {
        if port != DATA_PORT {
            // The index register is write-only on the PC; undecoded reads float.
            return 0xff;
        }
        let i = self.state.index;
        if let Some(v) = self.clock_byte(i, now) {
            return v;
        }
        let v = self.state.ram[usize::from(i & 0x7f)];
        if i == idx::REG_C {
            // Reading C clears the interrupt flags (none are ever set here).
            self.state.ram[usize::from(i)] = 0;
        }
        v
    }

    /// OUT to port 0x70 or 0x71.
    pub fn write(&mut self, port: u16, value: u8) -> Result<(), Unimplemented> {
        if port == INDEX_PORT {
            self.state.index = value & 0x7f;
            self.state.nmi_disabled = value & 0x80 != 0;
            return Ok(());
        }
        let i = self.state.index;
        match i {
            idx::SECONDS..=idx::YEAR | idx::CENTURY => {
                if matches!(i, 1 | 3 | 5) {
                    return Err(Unimplemented("RTC alarm registers"));
                }
                Err(Unimplemented("setting the RTC clock"))
            }
            idx::REG_A => {
                // Bit 7 (UIP) is read-only.
                self.state.ram[usize::from(i)] = value & 0x7f;
                Ok(())
            }
            idx::REG_B => {
                if value & REG_B_UNSUPPORTED != 0 {
                    return Err(Unimplemented(
                        "RTC SET bit and periodic/alarm/update interrupts",
                    ));
                }
                self.state.ram[usize::from(i)] = value;
                Ok(())
            }
            idx::REG_C | idx::REG_D => Ok(()), // read-only
            _ => {
                self.state.ram[usize::from(i)] = value;
                Ok(())
            }
        }
    }
}

/// (year, month 1–12, day 1–31) of `days` days after 2000-01-01 (proleptic Gregorian; H. Hinnant's
/// `civil_from_days`, shifted to the 2000 epoch).
fn civil_from_days(days: u64) -> (u64, u8, u8) {
    // Days from 0000-03-01 to 2000-01-01 is 730425.
    let z = days + 730_425;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd(c: &mut Cmos, i: u8, now: Ns) -> u8 {
        c.write(INDEX_PORT, i).unwrap();
        c.read(DATA_PORT, now)
    }

    #[test]
    fn clock_starts_at_2000_and_advances_in_bcd() {
        let mut c = Cmos::new(64 << 20);
        let t0 = Ns::ZERO;
        assert_eq!(rd(&mut c, idx::YEAR, t0), 0x00);
        assert_eq!(rd(&mut c, idx::CENTURY, t0), 0x20);
        assert_eq!(rd(&mut c, idx::MONTH, t0), 0x01);
        assert_eq!(rd(&mut c, idx::DAY, t0), 0x01);
        assert_eq!(rd(&mut c, idx::WEEKDAY, t0), 7); // Saturday
        let t = Ns::new((86_400 * 59 + 3600 * 13 + 60 * 45 + 12) * 1_000_000_000);
        // 2000 is a leap year: day 59 after Jan 1 is Feb 29.
        assert_eq!(rd(&mut c, idx::MONTH, t), 0x02);
        assert_eq!(rd(&mut c, idx::DAY, t), 0x29);
        assert_eq!(rd(&mut c, idx::HOURS, t), 0x13);
        assert_eq!(rd(&mut c, idx::MINUTES, t), 0x45);
        assert_eq!(rd(&mut c, idx::SECONDS, t), 0x12);
        assert_eq!(rd(&mut c, idx::REG_A, t) & 0x80, 0);
    }

    #[test]
    fn binary_and_12_hour_modes() {
        let mut c = Cmos::new(64 << 20);
        c.write(INDEX_PORT, idx::REG_B).unwrap();
        c.write(DATA_PORT, REG_B_BINARY).unwrap();
        let t = Ns::new(3600 * 13 * 1_000_000_000);
        assert_eq!(rd(&mut c, idx::HOURS, t), 0x81); // 1 PM
        assert_eq!(rd(&mut c, idx::HOURS, Ns::ZERO), 12); // midnight is 12 AM
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (2000, 1, 1));
        assert_eq!(civil_from_days(366), (2001, 1, 1));
        assert_eq!(civil_from_days(365 * 100 + 25 - 1), (2099, 12, 31));
    }

    #[test]
    fn memory_size_bytes_and_nmi_mask() {
        let mut c = Cmos::new(32 << 20);
        assert_eq!(rd(&mut c, 0x15, Ns::ZERO), 0x80);
        assert_eq!(rd(&mut c, 0x16, Ns::ZERO), 0x02);
        let ext =
            u16::from(rd(&mut c, 0x17, Ns::ZERO)) | u16::from(rd(&mut c, 0x18, Ns::ZERO)) << 8;
        assert_eq!(ext, 31 * 1024);
        assert_eq!(Cmos::new(1 << 30).state().ram[0x17..0x19], [0xff, 0xff]);
        let hi = u16::from(rd(&mut c, 0x34, Ns::ZERO)) | u16::from(rd(&mut c, 0x35, Ns::ZERO)) << 8;
        assert_eq!(hi, (16 << 20 >> 16) as u16);
        c.write(INDEX_PORT, 0x8f).unwrap();
        assert!(c.nmi_disabled());
        c.write(DATA_PORT, 0x0a).unwrap();
        assert_eq!(rd(&mut c, 0x0f, Ns::ZERO), 0x0a);
    }

    #[test]
    fn unsupported_writes_are_reported() {
        let mut c = Cmos::new(1 << 20);
        c.write(INDEX_PORT, idx::SECONDS).unwrap();
        assert!(c.write(DATA_PORT, 0).is_err());
        c.write(INDEX_PORT, idx::REG_B).unwrap();
        assert!(c.write(DATA_PORT, 0x40).is_err());
    }
}
