//! EPT: guest-physical to physical translation with four or five levels of 512 8-byte entries,
//! 2-MiB and 1-GiB pages, read/write/execute rights, mode-based execute control, execute-only
//! pages, memory types, accessed and dirty flags (SDM Vol. 3C §29.3).
//!
//! - Entries: Vol. 3C §29.3.2, Tables 29-1 to 29-7. An entry is present if any of bits 2:0 is
//!   set, or bit 10 with mode-based execute control (MBEC).
//! - Misconfigurations (§29.3.3.1), checked on each present entry used: bits 2:0 = 010b or
//!   110b (write without read); no read and no write (execute-only, including an entry that is
//!   present only through bit 10 under MBEC) when execute-only is not supported; a reserved
//!   bit (51:MAXPHYADDR; 7:3 of a PML5E/PML4E; 6:3 of a non-leaf PDPTE/PDE; 29:12 of a 1-GiB
//!   leaf; 20:12 of a 2-MiB leaf; bit 7 of a PDPTE when 1-GiB pages are not supported); a
//!   leaf memory type of 2, 3 or 7.
//! - Violations (§29.3.3.2): a not-present entry, or an access the combined rights refuse.
//!   With accessed and dirty flags enabled (EPTP bit 6), accesses to guest paging-structure
//!   entries count as writes (and then set bits 0 and 1 of the exit qualification). With MBEC,
//!   fetches from user-mode linear addresses need bit 10 instead of bit 2.
//! - Exit qualification bits 0–8 of EPT violations: Vol. 3C §28.2.1, Table 28-7.
//! - Accessed and dirty flags: §29.3.5 (A on every entry used, D on the leaf on a write,
//!   guest paging-structure accesses being writes; PDPTE loads are reads).
//! - The EPTP checks of VM entry: Vol. 3C §27.2.1.1; capabilities: IA32_VMX_EPT_VPID_CAP,
//!   Appendix A.10.
//!
//! The walk indexes with guest-physical bits 47:12 (56:12 with a 5-level walk) and ignores the
//! bits above: guest-physical addresses wider than the walk are the caller's to refuse.

use core::marker::PhantomData;

use x86::paging::{Eptp, MemoryType, ept};

use crate::guest::AccessKind;
use crate::memory::{Address, EntryWidth};
use crate::walk::{Decoded, Level, PageSize, PagingFormat, Rights, Root};

/// The EPT features the processor supports (IA32_VMX_EPT_VPID_CAP, SDM Vol. 3C Appendix A.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EptCaps {
    /// Bit 0: execute-only translations.
    pub execute_only: bool,
    /// Bit 6: page-walk length 4.
    pub walk_length_4: bool,
    /// Bit 7: page-walk length 5.
    pub walk_length_5: bool,
    /// Bit 8: EPT paging structures may be uncacheable.
    pub uncacheable: bool,
    /// Bit 14: EPT paging structures may be write-back.
    pub write_back: bool,
    /// Bit 17: 1-GiB pages.
    pub pages_1g: bool,
    /// Bit 21: accessed and dirty flags.
    pub accessed_dirty: bool,
}

impl EptCaps {
    /// Decodes the EPT bits of IA32_VMX_EPT_VPID_CAP.
    pub const fn from_msr(msr: u64) -> Self {
        Self {
            execute_only: msr & (1 << 0) != 0,
            walk_length_4: msr & (1 << 6) != 0,
            walk_length_5: msr & (1 << 7) != 0,
            uncacheable: msr & (1 << 8) != 0,
            write_back: msr & (1 << 14) != 0,
            pages_1g: msr & (1 << 17) != 0,
            accessed_dirty: msr & (1 << 21) != 0,
        }
    }
}

/// Why an EPTP value fails the checks of VM entry (SDM Vol. 3C §27.2.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InvalidEptp {
    /// Bits 2:0 are not a supported paging-structure memory type (UC or WB).
    MemoryType,
    /// Bits 5:3 are not a supported page-walk length minus one.
    WalkLength,
    /// Bit 6 enables accessed and dirty flags, which are not supported.
    AccessedDirty,
    /// Bit 7 (supervisor shadow-stack control, not supported), bits 11:8 or bits 63:MAXPHYADDR
    /// are set.
    Reserved,
}

/// What kind of access reaches guest-physical memory, for EPT (SDM Vol. 3C §28.2.1, exit
/// qualification bits 7 and 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EptOrigin {
    /// Not through a linear address (the PDPTE loads of MOV to CR3 with PAE paging): the guest
    /// linear-address field is not valid.
    NoLinear,
    /// An access to a guest paging-structure entry during a linear-address translation (a
    /// read, or the write of an accessed or dirty flag).
    GuestPagingStructure,
    /// The access to the translation of a linear address; `user` if that is a user-mode
    /// address (U/S = 1 in every guest paging-structure entry), which MBEC distinguishes.
    GuestLinear {
        /// The linear address is a user-mode address.
        user: bool,
    },
}

/// A guest-physical access to translate through EPT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EptAccess {
    /// Read, write or fetch.
    pub kind: AccessKind,
    /// What the access is for.
    pub origin: EptOrigin,
}

impl EptAccess {
    /// An access of `kind` for `origin`.
    #[inline]
    pub const fn new(kind: AccessKind, origin: EptOrigin) -> Self {
        Self { kind, origin }
    }
}

/// The rights of an EPT translation, each the AND over every entry used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EptRights {
    /// Bit 0: reads allowed.
    pub read: bool,
    /// Bit 1: writes allowed.
    pub write: bool,
    /// Bit 2: fetches allowed (with MBEC: fetches from supervisor-mode linear addresses).
    pub execute: bool,
    /// Bit 10 with MBEC: fetches from user-mode linear addresses allowed (always false without
    /// MBEC, where bit 10 is ignored).
    pub user_execute: bool,
}

impl Rights for EptRights {
    const ALL: Self = Self {
        read: true,
        write: true,
        execute: true,
        user_execute: true,
    };

    #[inline]
    fn intersect(self, other: Self) -> Self {
        Self {
            read: self.read && other.read,
            write: self.write && other.write,
            execute: self.execute && other.execute,
            user_execute: self.user_execute && other.user_execute,
        }
    }
}

/// Attributes of an EPT leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EptAttrs {
    /// The EPT memory type (bits 5:3).
    pub memory_type: MemoryType,
    /// Ignore PAT (bit 6).
    pub ignore_pat: bool,
    /// Suppress #VE (bit 63), meaningful with the "EPT-violation #VE" control.
    pub suppress_ve: bool,
}

/// An EPT translation.
pub type EptTranslation<O> = crate::walk::Translation<O, EptRights, EptAttrs>;

/// An EPT violation (SDM Vol. 3C §29.3.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EptViolation {
    /// The access that was refused.
    pub access: EptAccess,
    /// The access was a guest paging-structure read counted as a write (EPT A/D enabled).
    pub treated_as_write: bool,
    /// The rights of the entries used, the not-present one included.
    pub rights: EptRights,
    /// The level of the not-present entry, or of the leaf.
    pub level: Level,
}

impl EptViolation {
    /// Bits 0–8 of the exit qualification (SDM Vol. 3C §28.2.1, Table 28-7). Bits 9–11 (only
    /// with advanced VM-exit information for EPT violations, not supported) and bit 12 (NMI
    /// unblocking, known to the CPU, not to the walk) are clear.
    pub const fn exit_qualification(&self) -> u64 {
        let kind = self.access.kind;
        let read = matches!(kind, AccessKind::Read);
        let write = matches!(kind, AccessKind::Write) || self.treated_as_write;
        let fetch = matches!(kind, AccessKind::Fetch);
        let (linear_valid, translation) = match self.access.origin {
            EptOrigin::NoLinear => (false, false),
            EptOrigin::GuestPagingStructure => (true, false),
            EptOrigin::GuestLinear { .. } => (true, true),
        };
        (read as u64)
            | (write as u64) << 1
            | (fetch as u64) << 2
            | (self.rights.read as u64) << 3
            | (self.rights.write as u64) << 4
            | (self.rights.execute as u64) << 5
            | (self.rights.user_execute as u64) << 6
            | (linear_valid as u64) << 7
            | (translation as u64) << 8
    }
}

/// An EPT-induced VM exit raised by a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EptFault {
    /// EPT violation (basic exit reason 48).
    Violation(EptViolation),
    /// EPT misconfiguration (basic exit reason 49) at `level`.
    Misconfig {
        /// The level of the misconfigured entry.
        level: Level,
    },
}

/// EPT with the top table at `root`, translating `I` (a [`Gpa`](x86::Gpa) for EPT01, an
/// [`NGpa`](x86::NGpa) for EPT12) into `O` (an [`Hpa`](x86::Hpa), or a [`Gpa`](x86::Gpa)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ept<I, O> {
    root: O,
    levels: Level,
    ad: bool,
    mbec: bool,
    execute_only: bool,
    pages_1g: bool,
    maxphyaddr: u8,
    _in: PhantomData<I>,
}

impl<I: Address, O: Address> Ept<I, O> {
    /// Checks `eptp` as VM entry does (SDM Vol. 3C §27.2.1.1) against `caps` and
    /// `maxphyaddr`, and builds the format; `mbec` is the "mode-based execute control for EPT"
    /// VM-execution control.
    pub fn new(
        eptp: Eptp,
        caps: &EptCaps,
        maxphyaddr: u8,
        mbec: bool,
    ) -> Result<Self, InvalidEptp> {
        let memory_type_ok = match eptp.memory_type_bits() {
            0 => caps.uncacheable,
            6 => caps.write_back,
            _ => false,
        };
        if !memory_type_ok {
            return Err(InvalidEptp::MemoryType);
        }
        let levels = match eptp.walk_length() {
            4 if caps.walk_length_4 => 4,
            5 if caps.walk_length_5 => 5,
            _ => return Err(InvalidEptp::WalkLength),
        };
        if eptp.ad_enabled() && !caps.accessed_dirty {
            return Err(InvalidEptp::AccessedDirty);
        }
        let reserved =
            Eptp::SSS_ENABLE | Eptp::RESERVED_LOW | !x86::addr::phys_mask(u32::from(maxphyaddr));
        if eptp.raw() & reserved != 0 {
            return Err(InvalidEptp::Reserved);
        }
        Ok(Self {
            root: O::from_raw(eptp.root_raw()),
            levels,
            ad: eptp.ad_enabled(),
            mbec,
            execute_only: caps.execute_only,
            pages_1g: caps.pages_1g,
            maxphyaddr,
            _in: PhantomData,
        })
    }

    /// The number of levels (the page-walk length).
    pub fn levels(&self) -> Level {
        self.levels
    }

    /// Whether accessed and dirty flags are enabled (EPTP bit 6).
    pub fn accessed_dirty(&self) -> bool {
        self.ad
    }

    /// Whether mode-based execute control is on.
    pub fn mbec(&self) -> bool {
        self.mbec
    }

    /// Whether the access is a guest paging-structure access counted as a write.
    #[inline]
    fn treated_as_write(&self, access: EptAccess) -> bool {
        self.ad
            && matches!(access.kind, AccessKind::Read)
            && matches!(access.origin, EptOrigin::GuestPagingStructure)
    }

    #[inline]
    fn rights_of(&self, entry: u64) -> EptRights {
        EptRights {
            read: entry & ept::READ != 0,
            write: entry & ept::WRITE != 0,
            execute: entry & ept::EXECUTE != 0,
            user_execute: self.mbec && entry & ept::USER_EXECUTE != 0,
        }
    }
}

impl<I: Address, O: Address> PagingFormat for Ept<I, O> {
    type Input = I;
    type Output = O;
    type Access = EptAccess;
    type Rights = EptRights;
    type Attrs = EptAttrs;
    type Fault = EptFault;

    const WIDTH: EntryWidth = EntryWidth::U64;

    #[inline]
    fn top_level(&self) -> Level {
        self.levels
    }

    #[inline]
    fn root(&self, _input: I) -> Root<O> {
        Root::Table(self.root)
    }

    #[inline]
    fn entry_addr(&self, table: O, input: I, level: Level) -> O {
        let index = (input.to_raw() >> (12 + 9 * (u32::from(level) - 1))) & 0x1ff;
        O::from_raw(table.to_raw() | (index * 8))
    }

    #[inline]
    fn decode(&self, level: Level, entry: u64) -> Decoded<O, EptRights> {
        let rights = self.rights_of(entry);
        if entry & ept::RWX == 0 && !rights.user_execute {
            return Decoded::NotPresent { rights };
        }
        // Misconfigurations of any present entry (§29.3.3.1).
        let write_without_read = rights.write && !rights.read;
        let execute_only = !rights.read && !rights.write;
        let beyond_maxphyaddr =
            entry & ept::ADDR_MASK & !x86::addr::phys_mask(u32::from(self.maxphyaddr)) != 0;
        if write_without_read || (execute_only && !self.execute_only) || beyond_maxphyaddr {
            return Decoded::Reserved;
        }
        let large = entry & ept::LARGE_PAGE != 0;
        let size = match level {
            1 => PageSize::Size4K,
            2 if large => PageSize::Size2M,
            3 if large => PageSize::Size1G,
            _ => {
                // Bits 7:3 of a PML5E or PML4E (the large-page bit included), 6:3 of a
                // PDPTE or PDE that references a table.
                let reserved = if level >= 4 {
                    ept::RESERVED_PML4E
                } else {
                    ept::RESERVED_TABLE
                };
                if entry & reserved != 0 {
                    return Decoded::Reserved;
                }
                return Decoded::Table {
                    table: O::from_raw(entry & ept::ADDR_MASK),
                    rights,
                };
            }
        };
        let (size_reserved, supported) = match size {
            PageSize::Size1G => (ept::RESERVED_1G, self.pages_1g),
            PageSize::Size2M => (ept::RESERVED_2M, true),
            _ => (0, true),
        };
        let memory_type = MemoryType::from_bits(ept::memory_type_bits(entry));
        if !supported || entry & size_reserved != 0 || memory_type.is_none() {
            return Decoded::Reserved;
        }
        Decoded::Leaf {
            page: O::from_raw(entry & ept::ADDR_MASK & !size.offset_mask()),
            size,
            rights,
        }
    }

    #[inline]
    fn not_present(&self, access: EptAccess, level: Level, rights: EptRights) -> EptFault {
        EptFault::Violation(EptViolation {
            access,
            treated_as_write: self.treated_as_write(access),
            rights,
            level,
        })
    }

    #[inline]
    fn reserved(&self, _access: EptAccess, level: Level) -> EptFault {
        EptFault::Misconfig { level }
    }

    #[inline]
    fn check(&self, access: EptAccess, rights: EptRights, level: Level) -> Result<(), EptFault> {
        let treated_as_write = self.treated_as_write(access);
        let allowed = match access.kind {
            AccessKind::Read if treated_as_write => rights.write,
            AccessKind::Read => rights.read,
            AccessKind::Write => rights.write,
            AccessKind::Fetch => match access.origin {
                EptOrigin::GuestLinear { user: true } if self.mbec => rights.user_execute,
                _ => rights.execute,
            },
        };
        if allowed {
            Ok(())
        } else {
            Err(EptFault::Violation(EptViolation {
                access,
                treated_as_write,
                rights,
                level,
            }))
        }
    }

    #[inline]
    fn attrs(&self, leaf: u64, _size: PageSize) -> EptAttrs {
        EptAttrs {
            // The walk only returns leaves whose memory type decoded; UC is never reached.
            memory_type: MemoryType::from_bits(ept::memory_type_bits(leaf))
                .unwrap_or(MemoryType::Uncacheable),
            ignore_pat: leaf & ept::IGNORE_PAT != 0,
            suppress_ve: leaf & ept::SUPPRESS_VE != 0,
        }
    }

    #[inline]
    fn flags_to_set(&self, access: EptAccess, leaf: bool) -> u64 {
        if !self.ad {
            return 0;
        }
        let writes = matches!(access.kind, AccessKind::Write)
            || matches!(access.origin, EptOrigin::GuestPagingStructure);
        if leaf && writes {
            ept::ACCESSED | ept::DIRTY
        } else {
            ept::ACCESSED
        }
    }

    #[inline]
    fn is_dirty(&self, leaf: u64) -> bool {
        !self.ad || leaf & ept::DIRTY != 0
    }
}

#[cfg(test)]
mod tests {
    use x86::{Gpa, Hpa};

    use super::*;
    use crate::test_utils::SparseMemory;
    use crate::walk::{WalkError, translate};

    const R: u64 = ept::READ;
    const W: u64 = ept::WRITE;
    const X: u64 = ept::EXECUTE;
    const UX: u64 = ept::USER_EXECUTE;
    const A: u64 = ept::ACCESSED;
    const D: u64 = ept::DIRTY;
    const WB: u64 = 6 << 3;
    const PML4: u64 = 0x1000;
    const PDPT: u64 = 0x2000;
    const PD: u64 = 0x3000;
    const PT: u64 = 0x4000;
    const GPA: u64 = (3 << 30) | (5 << 21) | (7 << 12) | 0x89;

    fn caps() -> EptCaps {
        EptCaps::from_msr(
            (1 << 0) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 14) | (1 << 17) | (1 << 21),
        )
    }

    fn ept_of(eptp: u64, caps: EptCaps, mbec: bool) -> Ept<Gpa, Hpa> {
        Ept::new(Eptp::new(eptp), &caps, 46, mbec).unwrap()
    }

    fn eptp(ad: bool) -> u64 {
        PML4 | (3 << 3) | 6 | if ad { 1 << 6 } else { 0 }
    }

    fn tables(leaf: u64) -> SparseMemory {
        let mut m = SparseMemory::new();
        m.set64(PML4, PDPT | R | W | X);
        m.set64(PDPT + 3 * 8, PD | R | W | X);
        m.set64(PD + 5 * 8, PT | R | W | X);
        m.set64(PT + 7 * 8, 0x9000 | leaf);
        m
    }

    type Res = Result<EptTranslation<Hpa>, WalkError<EptFault, crate::MemoryError<Hpa>>>;

    fn go(f: &Ept<Gpa, Hpa>, m: &mut SparseMemory, kind: AccessKind, origin: EptOrigin) -> Res {
        translate(f, m, Gpa::new(GPA), EptAccess::new(kind, origin))
    }

    fn qual(r: Res) -> u64 {
        match r {
            Err(WalkError::Fault(EptFault::Violation(v))) => v.exit_qualification(),
            other => panic!("expected an EPT violation, got {other:?}"),
        }
    }

    fn misconfig(r: Res) -> Level {
        match r {
            Err(WalkError::Fault(EptFault::Misconfig { level })) => level,
            other => panic!("expected an EPT misconfiguration, got {other:?}"),
        }
    }

    const LIN: EptOrigin = EptOrigin::GuestLinear { user: false };
    const ULIN: EptOrigin = EptOrigin::GuestLinear { user: true };

    #[test]
    fn translation_and_attributes() {
        let f = ept_of(eptp(false), caps(), false);
        let mut m = tables(R | X | WB | ept::IGNORE_PAT | ept::SUPPRESS_VE);
        let t = go(&f, &mut m, AccessKind::Read, LIN).unwrap();
        assert_eq!(t.addr, Hpa::new(0x9089));
        assert_eq!(
            t.attrs,
            EptAttrs {
                memory_type: MemoryType::WriteBack,
                ignore_pat: true,
                suppress_ve: true
            }
        );
        // Without A/D enabled nothing is written and every leaf counts as dirty.
        assert!(t.dirty);
        assert_eq!(m.get64(PML4), PDPT | R | W | X);
    }

    #[test]
    fn violations_report_access_and_rights() {
        let f = ept_of(eptp(false), caps(), false);
        let mut m = tables(R | X | WB);
        // Write to a read/execute page: bit 1, rights R and X (bits 3, 5), linear (7, 8).
        assert_eq!(qual(go(&f, &mut m, AccessKind::Write, LIN)), 0b1_1010_1010);
        // Not-present leaf: rights all zero.
        m.set64(PT + 7 * 8, 0x9000 | WB);
        assert_eq!(qual(go(&f, &mut m, AccessKind::Fetch, LIN)), 0b1_1000_0100);
        // Paging-structure access (bit 7 only), PDPTE load (neither).
        let ps = EptOrigin::GuestPagingStructure;
        assert_eq!(qual(go(&f, &mut m, AccessKind::Read, ps)), 0b0_1000_0001);
        assert_eq!(
            qual(go(&f, &mut m, AccessKind::Read, EptOrigin::NoLinear)),
            0b1
        );
        // A read-only upper level removes write from the combined rights.
        m.set64(PT + 7 * 8, 0x9000 | R | W | WB);
        m.set64(PDPT + 3 * 8, PD | R | X);
        assert_eq!(qual(go(&f, &mut m, AccessKind::Write, LIN)), 0b1_1000_1010);
    }

    #[test]
    fn misconfigurations() {
        let f = ept_of(eptp(false), caps(), false);
        // Write-only, write+execute.
        assert_eq!(
            misconfig(go(&f, &mut tables(W | WB), AccessKind::Read, LIN)),
            1
        );
        assert_eq!(
            misconfig(go(&f, &mut tables(W | X | WB), AccessKind::Read, LIN)),
            1
        );
        // Reserved memory types in a leaf.
        for mt in [2, 3, 7] {
            let r = go(&f, &mut tables(R | (mt << 3)), AccessKind::Read, LIN);
            assert_eq!(misconfig(r), 1);
        }
        // Memory-type bits are reserved in a non-leaf entry.
        let mut m = tables(R | WB);
        m.set64(PD + 5 * 8, PT | R | W | X | WB);
        assert_eq!(misconfig(go(&f, &mut m, AccessKind::Read, LIN)), 2);
        // Bits 7:3 of a PML4E, including the large-page bit.
        let mut m = tables(R | WB);
        m.set64(PML4, PDPT | R | ept::LARGE_PAGE);
        assert_eq!(misconfig(go(&f, &mut m, AccessKind::Read, LIN)), 4);
        // Address bits at or above MAXPHYADDR (46).
        let mut m = tables(R | WB | (1 << 47));
        assert_eq!(misconfig(go(&f, &mut m, AccessKind::Read, LIN)), 1);
        // Bits 63:52 are ignored.
        let mut m = tables(R | WB | (0x7ff << 52));
        assert!(go(&f, &mut m, AccessKind::Read, LIN).is_ok());
        // Execute-only is a misconfiguration only without the capability.
        let mut m = tables(X | WB);
        assert!(go(&f, &mut m, AccessKind::Fetch, LIN).is_ok());
        let no_xo = EptCaps {
            execute_only: false,
            ..caps()
        };
        let g = ept_of(eptp(false), no_xo, false);
        assert_eq!(misconfig(go(&g, &mut m, AccessKind::Fetch, LIN)), 1);
        // A misconfiguration below a not-writable level wins over the violation.
        let mut m = tables(W | WB);
        m.set64(PDPT + 3 * 8, PD | R);
        assert_eq!(misconfig(go(&f, &mut m, AccessKind::Write, LIN)), 1);
    }

    #[test]
    fn large_pages() {
        let f = ept_of(eptp(false), caps(), false);
        let mut m = tables(R | WB);
        m.set64(PD + 5 * 8, 0x4060_0000 | R | W | ept::LARGE_PAGE | WB);
        let t = go(&f, &mut m, AccessKind::Write, LIN).unwrap();
        assert_eq!(t.size, PageSize::Size2M);
        assert_eq!(t.addr, Hpa::new(0x4060_0000 | (GPA & 0x1f_ffff)));
        m.set64(PD + 5 * 8, 0x4060_1000 | R | ept::LARGE_PAGE | WB);
        assert_eq!(misconfig(go(&f, &mut m, AccessKind::Read, LIN)), 2);
        m.set64(PDPT + 3 * 8, 0x8000_0000 | R | ept::LARGE_PAGE | WB);
        let t = go(&f, &mut m, AccessKind::Read, LIN).unwrap();
        assert_eq!(t.size, PageSize::Size1G);
        let no_1g = EptCaps {
            pages_1g: false,
            ..caps()
        };
        let g = ept_of(eptp(false), no_1g, false);
        assert_eq!(misconfig(go(&g, &mut m, AccessKind::Read, LIN)), 3);
        // Bit 7 of a PTE is ignored.
        let mut m = tables(R | WB | ept::LARGE_PAGE);
        assert!(go(&f, &mut m, AccessKind::Read, LIN).is_ok());
    }

    #[test]
    fn accessed_and_dirty_flags() {
        let f = ept_of(eptp(true), caps(), false);
        let mut m = tables(R | W | WB);
        let t = go(&f, &mut m, AccessKind::Read, LIN).unwrap();
        assert!(!t.dirty);
        assert_eq!(m.get64(PML4), PDPT | R | W | X | A);
        assert_eq!(m.get64(PT + 7 * 8), 0x9000 | R | W | WB | A);
        go(&f, &mut m, AccessKind::Write, LIN).unwrap();
        assert_eq!(m.get64(PD + 5 * 8), PT | R | W | X | A);
        assert_eq!(m.get64(PT + 7 * 8), 0x9000 | R | W | WB | A | D);
        // A guest paging-structure read is a write: it sets D, and needs write access.
        let mut m = tables(R | W | WB);
        go(
            &f,
            &mut m,
            AccessKind::Read,
            EptOrigin::GuestPagingStructure,
        )
        .unwrap();
        assert_eq!(m.get64(PT + 7 * 8) & D, D);
        let mut m = tables(R | WB);
        let r = go(
            &f,
            &mut m,
            AccessKind::Read,
            EptOrigin::GuestPagingStructure,
        );
        assert_eq!(qual(r), 0b0_1000_1011);
        assert_eq!(m.get64(PT + 7 * 8), 0x9000 | R | WB);
        // PDPTE loads are reads.
        go(&f, &mut m, AccessKind::Read, EptOrigin::NoLinear).unwrap();
        assert_eq!(m.get64(PT + 7 * 8), 0x9000 | R | WB | A);
    }

    #[test]
    fn mode_based_execute_control() {
        let f = ept_of(eptp(false), caps(), true);
        let mut m = tables(R | X | WB);
        m.set64(PML4, PDPT | R | W | X | UX);
        m.set64(PDPT + 3 * 8, PD | R | W | X | UX);
        m.set64(PD + 5 * 8, PT | R | W | X | UX);
        assert!(go(&f, &mut m, AccessKind::Fetch, LIN).is_ok());
        // User-mode fetch needs bit 10; rights report bit 6 (user execute) as 0.
        assert_eq!(qual(go(&f, &mut m, AccessKind::Fetch, ULIN)), 0b1_1010_1100);
        m.set64(PT + 7 * 8, 0x9000 | R | UX | WB);
        assert!(go(&f, &mut m, AccessKind::Fetch, ULIN).is_ok());
        assert_eq!(qual(go(&f, &mut m, AccessKind::Fetch, LIN)), 0b1_1100_1100);
        // Present through bit 10 alone: execute-only (allowed with the capability).
        m.set64(PT + 7 * 8, 0x9000 | UX | WB);
        assert!(go(&f, &mut m, AccessKind::Fetch, ULIN).is_ok());
        // Without MBEC bit 10 is ignored: such an entry is not present.
        let g = ept_of(eptp(false), caps(), false);
        assert_eq!(qual(go(&g, &mut m, AccessKind::Fetch, ULIN)), 0b1_1000_0100);
    }

    #[test]
    fn eptp_checks() {
        let c = caps();
        let new = |raw, caps: &EptCaps| Ept::<Gpa, Hpa>::new(Eptp::new(raw), caps, 46, false);
        assert!(new(eptp(true), &c).is_ok());
        assert_eq!(new(PML4 | (3 << 3) | 2, &c), Err(InvalidEptp::MemoryType));
        assert_eq!(new(PML4 | (2 << 3) | 6, &c), Err(InvalidEptp::WalkLength));
        let five = new(PML4 | (4 << 3) | 6, &c).unwrap();
        assert_eq!(five.levels(), 5);
        let no_ad = EptCaps {
            accessed_dirty: false,
            ..c
        };
        assert_eq!(new(eptp(true), &no_ad), Err(InvalidEptp::AccessedDirty));
        assert_eq!(new(eptp(false) | (1 << 8), &c), Err(InvalidEptp::Reserved));
        assert_eq!(new(eptp(false) | (1 << 46), &c), Err(InvalidEptp::Reserved));
        let no_uc = EptCaps {
            uncacheable: false,
            ..c
        };
        assert_eq!(new(PML4 | (3 << 3), &no_uc), Err(InvalidEptp::MemoryType));
    }

    #[test]
    fn five_level_ept() {
        let f = ept_of(0x7000 | (4 << 3) | 6, caps(), false);
        let mut m = tables(R | WB);
        m.set64(0x7000 + 8 * 2, PML4 | R | W | X);
        let gpa = Gpa::new(GPA | (2 << 48));
        let t = translate(&f, &mut m, gpa, EptAccess::new(AccessKind::Read, LIN)).unwrap();
        assert_eq!(t.addr, Hpa::new(0x9089));
        assert_eq!(t.path.steps().len(), 5);
    }
}
