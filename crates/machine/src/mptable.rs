//! The MP configuration table the board's firmware leaves in memory (Intel MultiProcessor
//! Specification 1.4, chapter 4 "MP Configuration Table"), so that an operating system finds
//! the I/O APIC and the ISA interrupt routing without probing.
//!
//! The MP floating pointer structure (§4.1) sits at [`FLOATING_POINTER`], in the BIOS area the
//! specification tells operating systems to search (0xF0000–0xFFFFF, 16-byte aligned), which
//! the multiboot memory map reports as reserved. It points at the configuration table (§4.2)
//! right after it: the header, one processor (the bootstrap processor, local APIC ID 0), one
//! ISA bus, the I/O APIC, an I/O interrupt assignment for every ISA IRQ (IRQ 0 on pin 2, as the
//! board wires it; IRQ *n* on pin *n* otherwise; IRQ 2 is the 8259 cascade and has none), and
//! the local interrupts (ExtINT on LINT0, NMI on LINT1: virtual-wire mode, §3.6.2.2; the
//! floating pointer's IMCRP bit is clear because the board has no IMCR).

/// Physical address of the floating pointer structure.
pub const FLOATING_POINTER: u64 = 0xf_0000;
/// Local APIC ID of the bootstrap processor.
const BSP_APIC_ID: u8 = 0;
/// ID given to the I/O APIC (distinct from every local APIC ID).
pub const IOAPIC_ID: u8 = 1;

/// Entry types (§4.3).
mod entry {
    pub const PROCESSOR: u8 = 0;
    pub const BUS: u8 = 1;
    pub const IOAPIC: u8 = 2;
    pub const IO_INTERRUPT: u8 = 3;
    pub const LOCAL_INTERRUPT: u8 = 4;
}

/// Interrupt types of interrupt assignment entries (table 4-8).
mod int_type {
    pub const INT: u8 = 0;
    pub const NMI: u8 = 1;
    pub const EXTINT: u8 = 3;
}

/// Sets the byte at `checksum_at` so that the bytes of `table` add up to zero.
fn checksum(table: &mut [u8], checksum_at: usize) {
    table[checksum_at] = 0;
    let sum = table.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    table[checksum_at] = sum.wrapping_neg();
}

/// The floating pointer structure followed by the configuration table, for a board whose local
/// APIC is at `lapic` (version `lapic_version`) and I/O APIC at `ioapic` (version
/// `ioapic_version`), with the PIT's IRQ 0 on I/O APIC pin `irq0_pin`. To be placed at
/// [`FLOATING_POINTER`].
pub fn build(
    lapic: u32,
    lapic_version: u8,
    ioapic: u32,
    ioapic_version: u8,
    irq0_pin: u8,
) -> Vec<u8> {
    let table_addr = (FLOATING_POINTER + 16) as u32;
    let mut entries: Vec<u8> = Vec::new();
    let mut count = 0u16;
    // Processor: enabled (bit 0), bootstrap (bit 1); signature and features are left zero:
    // the operating system asks CPUID.
    entries.extend_from_slice(&[entry::PROCESSOR, BSP_APIC_ID, lapic_version, 0b11]);
    entries.extend_from_slice(&[0; 16]);
    count += 1;
    entries.extend_from_slice(&[entry::BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[entry::IOAPIC, IOAPIC_ID, ioapic_version, 1]);
    entries.extend_from_slice(&ioapic.to_le_bytes());
    count += 1;
    for irq in (0u8..16).filter(|&i| i != 2) {
        let pin = if irq == 0 { irq0_pin } else { irq };
        // Flags 0: polarity and trigger conform to the bus (ISA: active high, edge).
        entries.extend_from_slice(&[
            entry::IO_INTERRUPT,
            int_type::INT,
            0,
            0,
            0,
            irq,
            IOAPIC_ID,
            pin,
        ]);
        count += 1;
    }
    for (kind, lint) in [(int_type::EXTINT, 0u8), (int_type::NMI, 1)] {
        // Destination 0xFF: every local APIC.
        entries.extend_from_slice(&[entry::LOCAL_INTERRUPT, kind, 0, 0, 0, 0, 0xff, lint]);
        count += 1;
    }

    let mut table = Vec::with_capacity(44 + entries.len());
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    table.push(4); // specification revision 1.4
    table.push(0); // checksum
    table.extend_from_slice(b"NESTVISR");
    table.extend_from_slice(b"PC BOARD    ");
    table.extend_from_slice(&0u32.to_le_bytes()); // no OEM table
    table.extend_from_slice(&0u16.to_le_bytes());
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&lapic.to_le_bytes());
    table.extend_from_slice(&[0, 0, 0, 0]); // no extended table; reserved
    table.extend_from_slice(&entries);
    checksum(&mut table, 7);

    let mut fp = Vec::with_capacity(16 + table.len());
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&table_addr.to_le_bytes());
    fp.extend_from_slice(&[1, 4, 0]); // length in paragraphs, revision 1.4, checksum
    fp.extend_from_slice(&[0, 0, 0, 0, 0]); // feature bytes: table present, no IMCR
    checksum(&mut fp, 10);
    fp.extend_from_slice(&table);
    fp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
    }

    #[test]
    fn tables_are_well_formed() {
        let t = build(0xfee0_0000, 0x14, 0xfec0_0000, 0x20, 2);
        // Floating pointer: signature, pointer, 16 bytes summing to zero.
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(u32::from_le_bytes(t[4..8].try_into().unwrap()), 0xf_0010);
        assert_eq!((t[8], t[9]), (1, 4));
        assert_eq!(sum(&t[..16]), 0);
        assert_eq!(t[12], 0, "MP configuration table present");
        // Configuration table.
        let c = &t[16..];
        assert_eq!(&c[..4], b"PCMP");
        let len = usize::from(u16::from_le_bytes([c[4], c[5]]));
        assert_eq!(len, c.len());
        assert_eq!(sum(c), 0);
        let count = u16::from_le_bytes([c[34], c[35]]);
        assert_eq!(
            u32::from_le_bytes(c[36..40].try_into().unwrap()),
            0xfee0_0000
        );
        // Walk the entries: sizes by type, and the IRQ 0 override.
        let mut at = 44;
        let mut seen = [0usize; 5];
        let mut irq0_pin = None;
        for _ in 0..count {
            let ty = c[at];
            seen[usize::from(ty)] += 1;
            if ty == entry::IO_INTERRUPT && c[at + 5] == 0 {
                irq0_pin = Some(c[at + 7]);
            }
            if ty == entry::IOAPIC {
                assert_eq!(
                    u32::from_le_bytes(c[at + 4..at + 8].try_into().unwrap()),
                    0xfec0_0000
                );
            }
            at += if ty == entry::PROCESSOR { 20 } else { 8 };
        }
        assert_eq!(at, len);
        assert_eq!(seen, [1, 1, 1, 15, 2]);
        assert_eq!(irq0_pin, Some(2));
    }
}
