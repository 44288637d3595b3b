//! Segment selectors, segment and gate descriptors, and the TSS layouts.
//!
//! SDM Vol. 3A §3.4.2 (selectors), §3.4.5 (segment descriptors, Figure 3-8), §3.5 (system
//! descriptor types, Table 3-2), §5.8.3 (call gates), §6.11 and §6.14.1 (IDT gates, 32-bit and
//! 64-bit), §8.2.1 and §8.7 (32-bit and 64-bit TSS), and Vol. 3C §25.4.1 (the VMCS access-rights
//! format, which is the descriptor's attribute bits moved down by 8 plus an "unusable" bit).

/// A segment selector: index, table indicator and requested privilege level.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Selector(pub u16);

impl Selector {
    /// The null selector.
    pub const NULL: Self = Self(0);

    /// Builds a selector from its parts (`index` is truncated to 13 bits).
    pub const fn new(index: u16, ldt: bool, rpl: u8) -> Self {
        Self(((index & 0x1fff) << 3) | ((ldt as u16) << 2) | (rpl as u16 & 3))
    }

    /// Requested privilege level, bits 1:0.
    pub const fn rpl(self) -> u8 {
        (self.0 & 3) as u8
    }

    /// Table indicator, bit 2: the selector names an LDT entry.
    pub const fn is_ldt(self) -> bool {
        self.0 & 4 != 0
    }

    /// Descriptor index, bits 15:3.
    pub const fn index(self) -> u16 {
        self.0 >> 3
    }

    /// Byte offset of the descriptor inside its table.
    pub const fn table_offset(self) -> u64 {
        (self.0 & !7) as u64
    }

    /// A null selector: index 0 in the GDT, whatever the RPL (SDM Vol. 3A §3.4.2).
    pub const fn is_null(self) -> bool {
        self.0 & !3 == 0
    }
}

impl core::fmt::Debug for Selector {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SEL:{:#06x}", self.0)
    }
}

/// Type field values of system descriptors (S = 0), SDM Vol. 3A Table 3-2. In IA-32e mode the
/// 16-bit types and task gates do not exist and types 9/11/12/14/15 mean the 64-bit forms.
pub mod system_type {
    /// 16-bit TSS, available.
    pub const TSS16_AVAILABLE: u8 = 0x1;
    /// LDT.
    pub const LDT: u8 = 0x2;
    /// 16-bit TSS, busy.
    pub const TSS16_BUSY: u8 = 0x3;
    /// 16-bit call gate.
    pub const CALL_GATE16: u8 = 0x4;
    /// Task gate.
    pub const TASK_GATE: u8 = 0x5;
    /// 16-bit interrupt gate.
    pub const INTERRUPT_GATE16: u8 = 0x6;
    /// 16-bit trap gate.
    pub const TRAP_GATE16: u8 = 0x7;
    /// 32-bit (or 64-bit) TSS, available.
    pub const TSS_AVAILABLE: u8 = 0x9;
    /// 32-bit (or 64-bit) TSS, busy.
    pub const TSS_BUSY: u8 = 0xb;
    /// 32-bit (or 64-bit) call gate.
    pub const CALL_GATE: u8 = 0xc;
    /// 32-bit (or 64-bit) interrupt gate.
    pub const INTERRUPT_GATE: u8 = 0xe;
    /// 32-bit (or 64-bit) trap gate.
    pub const TRAP_GATE: u8 = 0xf;
}

/// Type-field bits of code and data descriptors (S = 1), SDM Vol. 3A Table 3-1.
pub mod code_data_type {
    /// Accessed.
    pub const ACCESSED: u8 = 1 << 0;
    /// Data: writable. Code: readable.
    pub const WRITABLE_OR_READABLE: u8 = 1 << 1;
    /// Data: expand-down. Code: conforming.
    pub const EXPAND_DOWN_OR_CONFORMING: u8 = 1 << 2;
    /// Code segment (otherwise data).
    pub const CODE: u8 = 1 << 3;
}

/// A legacy 8-byte segment descriptor as it sits in the GDT or LDT.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Descriptor(pub u64);

impl Descriptor {
    /// Base address, bits 15:0 at 31:16, 23:16 at 39:32, 31:24 at 63:56.
    pub const fn base(self) -> u32 {
        (((self.0 >> 16) & 0xff_ffff) | ((self.0 >> 32) & 0xff00_0000)) as u32
    }

    /// The raw 20-bit limit.
    pub const fn raw_limit(self) -> u32 {
        ((self.0 & 0xffff) | ((self.0 >> 32) & 0xf_0000)) as u32
    }

    /// The limit in bytes, scaled by the granularity bit (G = 1: 4-KiB units, low 12 bits ones).
    pub const fn limit(self) -> u32 {
        if self.granularity() {
            (self.raw_limit() << 12) | 0xfff
        } else {
            self.raw_limit()
        }
    }

    /// The 4-bit type field.
    pub const fn typ(self) -> u8 {
        ((self.0 >> 40) & 0xf) as u8
    }

    /// S: code or data segment (otherwise a system descriptor).
    pub const fn is_code_or_data(self) -> bool {
        self.0 & (1 << 44) != 0
    }

    /// Descriptor privilege level.
    pub const fn dpl(self) -> u8 {
        ((self.0 >> 45) & 3) as u8
    }

    /// Present.
    pub const fn present(self) -> bool {
        self.0 & (1 << 47) != 0
    }

    /// AVL: available for system software.
    pub const fn avl(self) -> bool {
        self.0 & (1 << 52) != 0
    }

    /// L: 64-bit code segment (IA-32e mode only).
    pub const fn long(self) -> bool {
        self.0 & (1 << 53) != 0
    }

    /// D/B: default operand size 32 (code), big stack (data).
    pub const fn default_big(self) -> bool {
        self.0 & (1 << 54) != 0
    }

    /// G: limit granularity is 4 KiB.
    pub const fn granularity(self) -> bool {
        self.0 & (1 << 55) != 0
    }

    /// Code segment (S = 1 and type bit 3).
    pub const fn is_code(self) -> bool {
        self.is_code_or_data() && self.typ() & code_data_type::CODE != 0
    }

    /// The descriptor with the accessed bit set.
    pub const fn with_accessed(self) -> Self {
        Self(self.0 | (1 << 40))
    }

    /// The attribute bits in the VMCS access-rights layout (SDM Vol. 3C §25.4.1): type, S, DPL,
    /// P in bits 7:0, AVL, L, D/B, G in bits 15:12. The unusable bit (16) is the caller's.
    pub const fn access_rights(self) -> AccessRights {
        AccessRights((((self.0 >> 40) & 0xff) | ((self.0 >> 40) & 0xf000)) as u32)
    }

    /// Builds a descriptor from base, raw 20-bit limit and the access-rights attribute bits.
    pub const fn from_parts(base: u32, raw_limit: u32, ar: AccessRights) -> Self {
        let base = base as u64;
        let limit = raw_limit as u64;
        let ar = ar.0 as u64;
        Self(
            (limit & 0xffff)
                | ((base & 0xff_ffff) << 16)
                | ((ar & 0xff) << 40)
                | ((limit & 0xf_0000) << 32)
                | ((ar & 0xf000) << 40)
                | ((base & 0xff00_0000) << 32),
        )
    }
}

impl core::fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Descriptor {{ base: {:#x}, limit: {:#x}, type: {:#x}, s: {}, dpl: {}, p: {}, l: {}, db: {}, g: {} }}",
            self.base(),
            self.raw_limit(),
            self.typ(),
            self.is_code_or_data() as u8,
            self.dpl(),
            self.present() as u8,
            self.long() as u8,
            self.default_big() as u8,
            self.granularity() as u8
        )
    }
}

/// Segment attributes in the VMCS access-rights format (SDM Vol. 3C §25.4.1, Table 25-2), which
/// is also how the software CPU keeps its hidden segment state.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct AccessRights(pub u32);

impl AccessRights {
    /// Bit 16: the segment is unusable (loaded with a null selector, or never loaded).
    pub const UNUSABLE: u32 = 1 << 16;
    /// Bits that must be zero: 11:8 and 31:17.
    pub const RESERVED: u32 = 0xfffe_0f00;

    /// The 4-bit type field.
    pub const fn typ(self) -> u8 {
        (self.0 & 0xf) as u8
    }
    /// S: code or data segment.
    pub const fn is_code_or_data(self) -> bool {
        self.0 & (1 << 4) != 0
    }
    /// Descriptor privilege level.
    pub const fn dpl(self) -> u8 {
        ((self.0 >> 5) & 3) as u8
    }
    /// Present.
    pub const fn present(self) -> bool {
        self.0 & (1 << 7) != 0
    }
    /// L: 64-bit code.
    pub const fn long(self) -> bool {
        self.0 & (1 << 13) != 0
    }
    /// D/B.
    pub const fn default_big(self) -> bool {
        self.0 & (1 << 14) != 0
    }
    /// G.
    pub const fn granularity(self) -> bool {
        self.0 & (1 << 15) != 0
    }
    /// The unusable bit.
    pub const fn unusable(self) -> bool {
        self.0 & Self::UNUSABLE != 0
    }
}

/// An IDT gate or call gate in legacy (8-byte) form (SDM Vol. 3A §6.11, Figure 6-2; §5.8.3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct Gate(pub u64);

impl Gate {
    /// Target offset (bits 15:0 and 63:48 of the descriptor).
    pub const fn offset(self) -> u32 {
        ((self.0 & 0xffff) | ((self.0 >> 32) & 0xffff_0000)) as u32
    }
    /// Target code-segment selector (for a task gate: the TSS selector).
    pub const fn selector(self) -> Selector {
        Selector((self.0 >> 16) as u16)
    }
    /// Call gates: the parameter count (bits 36:32). 64-bit IDT gates: the IST index (34:32).
    pub const fn param_count_or_ist(self) -> u8 {
        ((self.0 >> 32) & 0x1f) as u8
    }
    /// IST index of a 64-bit IDT gate (bits 34:32).
    pub const fn ist(self) -> u8 {
        ((self.0 >> 32) & 0x7) as u8
    }
    /// Gate type (a [`system_type`] value).
    pub const fn typ(self) -> u8 {
        ((self.0 >> 40) & 0xf) as u8
    }
    /// S bit: must be 0 for gates.
    pub const fn s(self) -> bool {
        self.0 & (1 << 44) != 0
    }
    /// Gate DPL.
    pub const fn dpl(self) -> u8 {
        ((self.0 >> 45) & 3) as u8
    }
    /// Present.
    pub const fn present(self) -> bool {
        self.0 & (1 << 47) != 0
    }
    /// Builds a gate (the high 32 bits of a 64-bit gate's offset go in the second quadword).
    pub const fn new(selector: Selector, offset: u32, typ: u8, dpl: u8, ist: u8) -> Self {
        Self(
            (offset as u64 & 0xffff)
                | ((selector.0 as u64) << 16)
                | ((ist as u64 & 7) << 32)
                | ((typ as u64 & 0xf) << 40)
                | ((dpl as u64 & 3) << 45)
                | (1 << 47)
                | ((offset as u64 & 0xffff_0000) << 32),
        )
    }
}

/// Byte offsets in the 32-bit TSS (SDM Vol. 3A §8.2.1, Figure 8-2).
pub mod tss32 {
    /// Previous task link.
    pub const LINK: u64 = 0x00;
    /// ESP for privilege level 0; SS0 follows at +4, then ESP1/SS1, ESP2/SS2 every 8 bytes.
    pub const ESP0: u64 = 0x04;
    /// CR3.
    pub const CR3: u64 = 0x1c;
    /// EIP.
    pub const EIP: u64 = 0x20;
    /// EFLAGS.
    pub const EFLAGS: u64 = 0x24;
    /// EAX; ECX, EDX, EBX, ESP, EBP, ESI, EDI follow every 4 bytes.
    pub const EAX: u64 = 0x28;
    /// ES; CS, SS, DS, FS, GS follow every 4 bytes.
    pub const ES: u64 = 0x48;
    /// LDT selector.
    pub const LDT: u64 = 0x60;
    /// T (debug trap) bit in bit 0, I/O map base in bits 31:16.
    pub const TRAP_IOMAP: u64 = 0x64;
    /// Minimum limit of a 32-bit TSS.
    pub const MIN_LIMIT: u32 = 0x67;
}

/// Byte offsets in the 64-bit TSS (SDM Vol. 3A §8.7, Figure 8-11).
pub mod tss64 {
    /// RSP for privilege level `n` is at `RSP0 + 8 * n`.
    pub const RSP0: u64 = 0x04;
    /// Interrupt stack table entry `n` (1..=7) is at `IST1 + 8 * (n - 1)`.
    pub const IST1: u64 = 0x24;
    /// I/O map base address (16 bits).
    pub const IOMAP_BASE: u64 = 0x66;
    /// Minimum limit of a 64-bit TSS.
    pub const MIN_LIMIT: u32 = 0x67;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_descriptors_decode() {
        // The classic flat 32-bit ring-0 code and data descriptors.
        let code = Descriptor(0x00cf_9a00_0000_ffff);
        assert_eq!(code.base(), 0);
        assert_eq!(code.limit(), 0xffff_ffff);
        assert_eq!(code.typ(), 0xa);
        assert!(code.is_code() && code.present() && code.default_big() && !code.long());
        assert_eq!(code.dpl(), 0);
        assert_eq!(code.access_rights(), AccessRights(0xc09a));
        let data = Descriptor(0x00cf_9200_0000_ffff);
        assert!(!data.is_code() && data.is_code_or_data());
        // 64-bit ring-3 code: L = 1, D = 0, DPL 3.
        let code64 = Descriptor(0x00af_fa00_0000_ffff);
        assert!(code64.long() && !code64.default_big());
        assert_eq!(code64.dpl(), 3);
    }

    #[test]
    fn descriptor_round_trips_through_parts() {
        let d = Descriptor(0x12cf_9a34_5678_ffff);
        assert_eq!(d.base(), 0x1234_5678);
        let again = Descriptor::from_parts(d.base(), d.raw_limit(), d.access_rights());
        assert_eq!(again, d);
    }

    #[test]
    fn selectors() {
        let s = Selector(0x2b);
        assert_eq!((s.index(), s.is_ldt(), s.rpl()), (5, false, 3));
        assert_eq!(Selector::new(5, false, 3), s);
        assert!(Selector(3).is_null());
        assert!(
            !Selector(4).is_null(),
            "index 0 in the LDT is not the null selector"
        );
        assert_eq!(s.table_offset(), 0x28);
    }

    #[test]
    fn gates() {
        let g = Gate::new(
            Selector(0x08),
            0xdead_beef,
            system_type::INTERRUPT_GATE,
            3,
            2,
        );
        assert_eq!(g.offset(), 0xdead_beef);
        assert_eq!(g.selector(), Selector(0x08));
        assert_eq!(
            (g.typ(), g.dpl(), g.ist(), g.present(), g.s()),
            (0xe, 3, 2, true, false)
        );
    }
}
