//! Paging-structure entry formats: 32-bit paging (with PSE and PSE-36), PAE paging, 4-level and
//! 5-level paging, and EPT, plus the EPT pointer (EPTP).
//!
//! These are bit positions and small decoders only; the walk that gives them meaning lives in
//! the `paging` crate. Sources: SDM Vol. 3A §4.3 (32-bit paging, Tables 4-4 to 4-6), §4.4 (PAE
//! paging, Tables 4-8 to 4-11), §4.5 (4-level and 5-level paging, Tables 4-14 to 4-20), §4.9.2
//! (PAT index bits); SDM Vol. 3C §25.6.11 (EPTP, Table 25-9) and §29.3.2 (EPT entries,
//! Tables 29-1 to 29-7).

/// Bits of the entries of 32-bit, PAE, 4-level and 5-level paging (SDM Vol. 3A Tables 4-4 to
/// 4-20). 32-bit entries use the low 32 bits with the same positions.
pub mod pte {
    /// Present (P): the entry maps a page or references a table.
    pub const PRESENT: u64 = 1 << 0;
    /// Read/write (R/W): if 0, writes may not be allowed to the region controlled by the entry.
    pub const WRITABLE: u64 = 1 << 1;
    /// User/supervisor (U/S): if 0, user-mode accesses are not allowed to the region.
    pub const USER: u64 = 1 << 2;
    /// Page-level write-through (PWT): bit 0 of the PAT index of a leaf.
    pub const PWT: u64 = 1 << 3;
    /// Page-level cache disable (PCD): bit 1 of the PAT index of a leaf.
    pub const PCD: u64 = 1 << 4;
    /// Accessed (A): set by the processor when the entry is used for a translation.
    pub const ACCESSED: u64 = 1 << 5;
    /// Dirty (D): set by the processor on a write through a leaf entry.
    pub const DIRTY: u64 = 1 << 6;
    /// Page size (PS) in a PDE, PDPTE, PML4E or PML5E: 1 maps a large page (reserved in the
    /// PML4E and PML5E, and in a 32-bit PDE it is honoured only with CR4.PSE = 1).
    pub const PAGE_SIZE: u64 = 1 << 7;
    /// PAT in an entry that maps a 4-KiB page (same position as [`PAGE_SIZE`]): bit 2 of the
    /// PAT index.
    pub const PAT_4K: u64 = 1 << 7;
    /// Global (G) in a leaf entry: the translation is global if CR4.PGE = 1.
    pub const GLOBAL: u64 = 1 << 8;
    /// PAT in an entry that maps a large (2-MiB, 4-MiB or 1-GiB) page: bit 2 of the PAT index.
    pub const PAT_LARGE: u64 = 1 << 12;
    /// Protection key, bits 62:59 of a leaf in 4-level and 5-level paging with CR4.PKE or
    /// CR4.PKS (not implemented by nestvisor: the bits are ignored as with PKE = PKS = 0).
    pub const PROTECTION_KEY: u64 = 0xf << 59;
    /// Execute-disable (XD): if 1 and IA32_EFER.NXE = 1, instruction fetches are not allowed
    /// from the region (reserved when NXE = 0). Not present in 32-bit entries.
    pub const XD: u64 = 1 << 63;
    /// The address field of a 64-bit entry, bits 51:12 (bits at or above MAXPHYADDR are
    /// reserved).
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

    /// The PAT index (0–7) of a leaf entry: PAT·4 + PCD·2 + PWT (SDM Vol. 3A §11.12.3).
    /// `large` selects the position of the PAT bit (12 for large pages, 7 for 4-KiB pages).
    #[inline]
    pub const fn pat_index(entry: u64, large: bool) -> u8 {
        let pat = if large {
            entry & PAT_LARGE != 0
        } else {
            entry & PAT_4K != 0
        };
        ((pat as u8) << 2) | (((entry & PCD != 0) as u8) << 1) | ((entry & PWT != 0) as u8)
    }
}

/// 32-bit paging specifics (SDM Vol. 3A §4.3, Table 4-4 to 4-6).
pub mod legacy {
    /// The address field of a PDE that references a page table or of a PTE (bits 31:12).
    pub const ADDR_MASK: u32 = 0xffff_f000;
    /// Bits 31:22 of a PDE that maps a 4-MiB page: bits 31:22 of the page's address.
    pub const PDE_4M_ADDR_LOW: u32 = 0xffc0_0000;
    /// Bits 20:13 of a PDE that maps a 4-MiB page (PSE-36): bits 39:32 of the page's address,
    /// of which only those below min(MAXPHYADDR, 40) are address bits; the rest are reserved.
    pub const PDE_4M_ADDR_HIGH: u32 = 0x001f_e000;
    /// Bit 21 of a PDE that maps a 4-MiB page: always reserved.
    pub const PDE_4M_RESERVED: u32 = 1 << 21;

    /// The physical-address width M that PSE-36 gives 4-MiB pages: min(MAXPHYADDR, 40).
    #[inline]
    pub const fn pse36_width(maxphyaddr: u32) -> u32 {
        if maxphyaddr < 40 { maxphyaddr } else { 40 }
    }

    /// The reserved bits of a PDE that maps a 4-MiB page: bit 21 and bits 20:(M−19), where
    /// M = min(MAXPHYADDR, 40) (SDM Vol. 3A Table 4-4).
    #[inline]
    pub const fn pde_4m_reserved(maxphyaddr: u32) -> u32 {
        let m = pse36_width(maxphyaddr);
        // Bits 20:13 carry address bits 39:32; address bits at or above M are reserved.
        let high_reserved = if m <= 32 {
            PDE_4M_ADDR_HIGH
        } else {
            PDE_4M_ADDR_HIGH & !(((1u32 << (m - 32)) - 1) << 13)
        };
        PDE_4M_RESERVED | high_reserved
    }

    /// The physical address of the 4-MiB page mapped by a PDE (reserved bits ignored).
    #[inline]
    pub const fn pde_4m_base(pde: u32) -> u64 {
        (pde & PDE_4M_ADDR_LOW) as u64 | ((((pde & PDE_4M_ADDR_HIGH) >> 13) as u64) << 32)
    }
}

/// PAE paging specifics (SDM Vol. 3A §4.4, Table 4-8).
pub mod pae {
    /// Bits of a PDPTE that are always reserved: 2:1 and 8:5.
    pub const PDPTE_RESERVED_LOW: u64 = 0b1_1110_0110;

    /// All reserved bits of a PAE PDPTE under `maxphyaddr`: bits 2:1, 8:5 and 63:MAXPHYADDR
    /// (SDM Vol. 3A Table 4-8). A present PDPTE with any of them set makes the load #GP(0).
    #[inline]
    pub const fn pdpte_reserved(maxphyaddr: u32) -> u64 {
        PDPTE_RESERVED_LOW | !crate::addr::phys_mask(maxphyaddr)
    }
}

/// Memory types (SDM Vol. 3A §11.3, Table 11-2), as used by EPT leaf entries, the EPTP and the
/// PAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MemoryType {
    /// Uncacheable (UC), encoding 0.
    Uncacheable = 0,
    /// Write combining (WC), encoding 1.
    WriteCombining = 1,
    /// Write-through (WT), encoding 4.
    WriteThrough = 4,
    /// Write-protected (WP), encoding 5.
    WriteProtected = 5,
    /// Write-back (WB), encoding 6.
    WriteBack = 6,
}

impl MemoryType {
    /// Decodes a 3-bit memory-type field; encodings 2, 3 and 7 are reserved and give `None`.
    #[inline]
    pub const fn from_bits(bits: u64) -> Option<Self> {
        match bits {
            0 => Some(Self::Uncacheable),
            1 => Some(Self::WriteCombining),
            4 => Some(Self::WriteThrough),
            5 => Some(Self::WriteProtected),
            6 => Some(Self::WriteBack),
            _ => None,
        }
    }
}

/// EPT paging-structure entry bits (SDM Vol. 3C §29.3.2, Tables 29-1 to 29-7).
pub mod ept {
    /// Read access (bit 0).
    pub const READ: u64 = 1 << 0;
    /// Write access (bit 1).
    pub const WRITE: u64 = 1 << 1;
    /// Execute access (bit 2); with mode-based execute control, execute access for
    /// supervisor-mode linear addresses.
    pub const EXECUTE: u64 = 1 << 2;
    /// Bits 2:0 together.
    pub const RWX: u64 = READ | WRITE | EXECUTE;
    /// EPT memory type of a leaf (bits 5:3); reserved in non-leaf entries.
    pub const MEMORY_TYPE_MASK: u64 = 0b111 << 3;
    /// Shift of [`MEMORY_TYPE_MASK`].
    pub const MEMORY_TYPE_SHIFT: u32 = 3;
    /// Ignore PAT memory type (bit 6) of a leaf; reserved in non-leaf entries.
    pub const IGNORE_PAT: u64 = 1 << 6;
    /// Large page (bit 7): maps a 1-GiB page in a PDPTE or a 2-MiB page in a PDE; reserved in
    /// a PML5E and PML4E, ignored in a PTE.
    pub const LARGE_PAGE: u64 = 1 << 7;
    /// Accessed (bit 8), if EPTP bit 6 enables accessed and dirty flags; ignored otherwise.
    pub const ACCESSED: u64 = 1 << 8;
    /// Dirty (bit 9) of a leaf, if EPTP bit 6 enables accessed and dirty flags.
    pub const DIRTY: u64 = 1 << 9;
    /// Execute access for user-mode linear addresses (bit 10), if the "mode-based execute
    /// control for EPT" VM-execution control is 1; ignored otherwise.
    pub const USER_EXECUTE: u64 = 1 << 10;
    /// Suppress #VE (bit 63) of a leaf, if the "EPT-violation #VE" control is 1.
    pub const SUPPRESS_VE: u64 = 1 << 63;
    /// The address field, bits 51:12 (bits at or above MAXPHYADDR are reserved).
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
    /// Reserved bits 7:3 of an EPT PML5E or PML4E.
    pub const RESERVED_PML4E: u64 = 0b1111_1000;
    /// Reserved bits 6:3 of a non-leaf EPT PDPTE or PDE.
    pub const RESERVED_TABLE: u64 = 0b0111_1000;
    /// Reserved bits 29:12 of an EPT PDPTE that maps a 1-GiB page.
    pub const RESERVED_1G: u64 = 0x3fff_f000;
    /// Reserved bits 20:12 of an EPT PDE that maps a 2-MiB page.
    pub const RESERVED_2M: u64 = 0x001f_f000;

    /// The memory-type field of a leaf entry, as its raw 3-bit value.
    #[inline]
    pub const fn memory_type_bits(entry: u64) -> u64 {
        (entry & MEMORY_TYPE_MASK) >> MEMORY_TYPE_SHIFT
    }
}

/// The extended-page-table pointer, a 64-bit VM-execution control field (SDM Vol. 3C §25.6.11,
/// Table 25-9).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Eptp(u64);

impl Eptp {
    /// Memory type of the EPT paging structures (bits 2:0): 0 (UC) or 6 (WB) when supported.
    pub const MEMORY_TYPE_MASK: u64 = 0b111;
    /// Page-walk length minus one (bits 5:3).
    pub const WALK_LENGTH_MASK: u64 = 0b111 << 3;
    /// Enable accessed and dirty flags for EPT (bit 6).
    pub const AD_ENABLE: u64 = 1 << 6;
    /// Enable enforcement of access rights for supervisor shadow-stack pages (bit 7).
    pub const SSS_ENABLE: u64 = 1 << 7;
    /// Reserved bits 11:8.
    pub const RESERVED_LOW: u64 = 0xf00;
    /// Address of the EPT PML4 (or PML5) table, bits 51:12 (bits at or above MAXPHYADDR are
    /// reserved).
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

    /// Wraps a raw EPTP value.
    #[inline]
    pub const fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The raw 64-bit value.
    #[inline]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The raw memory-type field (bits 2:0).
    #[inline]
    pub const fn memory_type_bits(self) -> u64 {
        self.0 & Self::MEMORY_TYPE_MASK
    }

    /// The page-walk length: bits 5:3 plus one (4 or 5 when valid).
    #[inline]
    pub const fn walk_length(self) -> u32 {
        (((self.0 & Self::WALK_LENGTH_MASK) >> 3) + 1) as u32
    }

    /// Whether bit 6 enables accessed and dirty flags for EPT.
    #[inline]
    pub const fn ad_enabled(self) -> bool {
        self.0 & Self::AD_ENABLE != 0
    }

    /// Whether bit 7 enables supervisor shadow-stack enforcement.
    #[inline]
    pub const fn sss_enabled(self) -> bool {
        self.0 & Self::SSS_ENABLE != 0
    }

    /// The raw address of the top-level EPT table (bits 51:12).
    #[inline]
    pub const fn root_raw(self) -> u64 {
        self.0 & Self::ADDR_MASK
    }
}

impl core::fmt::Debug for Eptp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "EPTP:{:#x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pat_index_takes_the_pat_bit_from_its_position() {
        let e = pte::PWT | pte::PAT_4K;
        assert_eq!(pte::pat_index(e, false), 0b101);
        assert_eq!(pte::pat_index(e, true), 0b001);
        assert_eq!(pte::pat_index(pte::PAT_LARGE | pte::PCD, true), 0b110);
    }

    #[test]
    fn pse36_reserved_bits_follow_maxphyaddr() {
        // MAXPHYADDR 32: bits 21:13 reserved.
        assert_eq!(legacy::pde_4m_reserved(32), 0x003f_e000);
        // MAXPHYADDR 36: bits 16:13 carry address bits 35:32; bits 21:17 reserved.
        assert_eq!(legacy::pde_4m_reserved(36), 0x003e_0000);
        // MAXPHYADDR 40 and above: only bit 21.
        assert_eq!(legacy::pde_4m_reserved(40), 1 << 21);
        assert_eq!(legacy::pde_4m_reserved(52), 1 << 21);
        assert_eq!(
            legacy::pde_4m_base(0xffc0_0000 | (0xab << 13)),
            0xab_ffc0_0000
        );
    }

    #[test]
    fn pae_pdpte_reserved_bits() {
        assert_eq!(pae::pdpte_reserved(52), 0xfff0_0000_0000_01e6);
        assert_eq!(pae::pdpte_reserved(36) & (1 << 36), 1 << 36);
        assert_eq!(pae::pdpte_reserved(36) & (1 << 35), 0);
    }

    #[test]
    fn memory_types_decode() {
        assert_eq!(MemoryType::from_bits(6), Some(MemoryType::WriteBack));
        assert_eq!(MemoryType::from_bits(0), Some(MemoryType::Uncacheable));
        for reserved in [2, 3, 7] {
            assert_eq!(MemoryType::from_bits(reserved), None);
        }
    }

    #[test]
    fn eptp_fields() {
        let eptp = Eptp::new(0x1234_5000 | Eptp::AD_ENABLE | (3 << 3) | 6);
        assert_eq!(eptp.walk_length(), 4);
        assert!(eptp.ad_enabled());
        assert_eq!(eptp.memory_type_bits(), 6);
        assert_eq!(eptp.root_raw(), 0x1234_5000);
        assert_eq!(Eptp::new(4 << 3).walk_length(), 5);
    }
}
