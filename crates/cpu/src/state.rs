//! Architectural register state that is not a general-purpose register: segment registers with
//! their hidden descriptor caches (SDM Vol. 3A §3.4.3), descriptor-table registers (§2.4), and
//! the operating mode derived from CR0, EFER and CS (§2.2, §9.8.5).

/// Segment registers in the SDM's encoding order (ModRM.reg of MOV Sreg).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Seg {
    Es = 0,
    Cs = 1,
    Ss = 2,
    Ds = 3,
    Fs = 4,
    Gs = 5,
}

impl Seg {
    /// All six, in encoding order.
    pub const ALL: [Seg; 6] = [Seg::Es, Seg::Cs, Seg::Ss, Seg::Ds, Seg::Fs, Seg::Gs];
}

/// Access-rights bits of a segment cache, in the layout of the VMCS guest access-rights fields
/// (SDM Vol. 3C §24.4.1, Table 24-2): descriptor bits 47:40 and 55:52 packed into 15:0, bit 16
/// "unusable".
#[allow(missing_docs)]
pub mod ar {
    pub const TYPE: u32 = 0xf;
    pub const ACCESSED: u32 = 1 << 0;
    /// Writable (data) or readable (code).
    pub const RW: u32 = 1 << 1;
    /// Expand-down (data) or conforming (code).
    pub const DC: u32 = 1 << 2;
    pub const CODE: u32 = 1 << 3;
    /// Code/data (1) or system (0) descriptor.
    pub const S: u32 = 1 << 4;
    pub const DPL_SHIFT: u32 = 5;
    pub const DPL: u32 = 3 << 5;
    pub const P: u32 = 1 << 7;
    pub const AVL: u32 = 1 << 12;
    pub const L: u32 = 1 << 13;
    pub const DB: u32 = 1 << 14;
    pub const G: u32 = 1 << 15;
    pub const UNUSABLE: u32 = 1 << 16;
}

/// A segment register: the visible selector and the hidden cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Segment {
    /// The selector.
    pub selector: u16,
    /// The base address (64 bits for FS/GS/TR/LDTR in long mode).
    pub base: u64,
    /// The effective limit in bytes (already scaled by G).
    pub limit: u32,
    /// Access rights ([`ar`]).
    pub ar: u32,
}

impl Segment {
    /// A real-mode segment for `selector`: base = selector × 16, the given limit, and the
    /// access rights real mode leaves in the cache (present, writable data, or code for CS).
    pub const fn real(selector: u16, code: bool) -> Self {
        let typ = if code {
            ar::CODE | ar::RW | ar::ACCESSED
        } else {
            ar::RW | ar::ACCESSED
        };
        Self {
            selector,
            base: (selector as u64) << 4,
            limit: 0xffff,
            ar: typ | ar::S | ar::P,
        }
    }

    /// A flat 4-GiB 32-bit segment with `dpl`, code (execute/read) or data (read/write).
    pub const fn flat32(selector: u16, code: bool, dpl: u8) -> Self {
        let typ = if code {
            ar::CODE | ar::RW | ar::ACCESSED
        } else {
            ar::RW | ar::ACCESSED
        };
        Self {
            selector,
            base: 0,
            limit: 0xffff_ffff,
            ar: typ | ar::S | ar::P | ar::DB | ar::G | ((dpl as u32) << ar::DPL_SHIFT),
        }
    }

    /// The descriptor privilege level.
    pub const fn dpl(&self) -> u8 {
        ((self.ar & ar::DPL) >> ar::DPL_SHIFT) as u8
    }

    /// Whether the register holds a null selector (or is otherwise unusable).
    pub const fn unusable(&self) -> bool {
        self.ar & ar::UNUSABLE != 0
    }
}

/// GDTR or IDTR (SDM Vol. 3A §2.4.1, §2.4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DescriptorTable {
    /// Linear base address.
    pub base: u64,
    /// Limit in bytes (the table spans base..=base+limit).
    pub limit: u16,
}

/// The operating mode (SDM Vol. 3A §2.2, Figure 2-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Real-address mode (CR0.PE = 0).
    Real,
    /// Protected mode, legacy (EFER.LMA = 0).
    Protected,
    /// IA-32e compatibility mode (LMA = 1, CS.L = 0).
    Compatibility,
    /// 64-bit mode (LMA = 1, CS.L = 1).
    Long64,
}
