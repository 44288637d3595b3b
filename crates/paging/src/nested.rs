//! The two-dimensional walk: guest paging over EPT (SDM Vol. 3C §29.3.3 "EPT-induced VM
//! exits", §29.3.5, and Vol. 3A §4 for the guest dimension).
//!
//! With EPT, every guest-physical address the guest walk uses is itself translated through
//! EPT: the address of each guest paging-structure entry (an access of origin
//! [`EptOrigin::GuestPagingStructure`], a read, counted as a write when EPT accessed and dirty
//! flags are on), the writes of the guest's accessed and dirty flags, and finally the
//! guest-physical address the linear address translates to ([`EptOrigin::GuestLinear`], with
//! the access's own kind). The guest walk is the same generic [`walk`] as everywhere, reading
//! its tables through [`EptTables`].
//!
//! Order of events, which is also the order of precedence of the faults:
//! 1. each guest entry, top level first: EPT-translate its address (EPT A/D flags of that
//!    translation are set when it succeeds, as those accesses happen), read it, decode it;
//! 2. the guest rights check (#PF);
//! 3. the EPT write check of every guest entry whose accessed/dirty flag must be set (only
//!    relevant when EPT A/D is off: otherwise the reads already needed write access);
//! 4. the EPT translation of the final guest-physical address;
//! 5. only if all of that succeeded: the guest's accessed and dirty flags are written.

use x86::Gva;

use crate::ept::EptTranslation;
use crate::ept::{Ept, EptAccess, EptFault, EptOrigin, EptRights, EptViolation};
use crate::guest::GuestTranslation;
use crate::guest::{Access, AccessKind, PageAttrs, PageFault, PageRights};
use crate::memory::{Address, EntryWidth, Memory, MemoryError, TableMemory, set_flags_at};
use crate::walk::{Level, PagingFormat, WalkError, translate, walk};

/// Which guest-physical access an EPT fault of a two-dimensional walk belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EptStage {
    /// The guest paging-structure entry of `level` (read, or A/D flag write).
    GuestTable {
        /// The level of the guest entry.
        level: Level,
    },
    /// The final translation of the linear address.
    Final,
    /// A guest PDPTE load (PAE paging, MOV to CR3/CR0/CR4).
    PdpteLoad,
}

/// Why a two-dimensional walk failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NestedFault<I, O> {
    /// The guest dimension faulted: a #PF for the guest.
    Guest(PageFault),
    /// The EPT dimension faulted: an EPT violation or misconfiguration exit.
    Ept {
        /// The violation (with its exit qualification) or misconfiguration.
        fault: EptFault,
        /// The guest-physical address whose translation faulted (the exit's guest-physical
        /// address field).
        gpa: I,
        /// Which access it was.
        stage: EptStage,
    },
    /// Memory behind a translation could not be read or written.
    Memory(MemoryError<O>),
}

/// Where a guest paging-structure entry was found: its guest-physical address, its physical
/// address and the EPT translation that led there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptSlot<I, O> {
    /// Guest-physical address of the entry.
    pub gpa: I,
    /// Physical address of the entry.
    pub addr: O,
    /// Rights of the EPT translation of `gpa`.
    pub rights: EptRights,
    /// Level of the EPT leaf that mapped `gpa`.
    pub ept_level: Level,
    /// Level of the guest entry.
    pub guest_level: Level,
}

/// Guest-physical memory reached through EPT, as a [`TableMemory`] for the guest walk.
#[derive(Debug)]
pub struct EptTables<'a, I, O, M: ?Sized> {
    ept: &'a Ept<I, O>,
    memory: &'a mut M,
    origin: EptOrigin,
}

impl<'a, I: Address, O: Address, M: Memory<O> + ?Sized> EptTables<'a, I, O, M> {
    /// Tables for a guest linear-address walk.
    pub fn for_walk(ept: &'a Ept<I, O>, memory: &'a mut M) -> Self {
        Self {
            ept,
            memory,
            origin: EptOrigin::GuestPagingStructure,
        }
    }

    /// Tables for the PDPTE loads of PAE paging (reads not tied to a linear address).
    pub fn for_pdpte_load(ept: &'a Ept<I, O>, memory: &'a mut M) -> Self {
        Self {
            ept,
            memory,
            origin: EptOrigin::NoLinear,
        }
    }

    /// The stage of a read of the guest entry of `level`.
    fn stage_for(&self, level: Level) -> EptStage {
        match self.origin {
            EptOrigin::NoLinear => EptStage::PdpteLoad,
            _ => EptStage::GuestTable { level },
        }
    }
}

impl<I: Address, O: Address, M: Memory<O> + ?Sized> TableMemory<I> for EptTables<'_, I, O, M> {
    type Error = NestedFault<I, O>;
    type Slot = EptSlot<I, O>;

    fn read_entry(
        &mut self,
        gpa: I,
        width: EntryWidth,
        level: Level,
    ) -> Result<(u64, Self::Slot), Self::Error> {
        let stage = self.stage_for(level);
        let access = EptAccess::new(AccessKind::Read, self.origin);
        let t = translate(self.ept, &mut *self.memory, gpa, access).map_err(|e| match e {
            WalkError::Fault(fault) => NestedFault::Ept { fault, gpa, stage },
            WalkError::Table(e) => NestedFault::Memory(e),
        })?;
        let value = match width {
            EntryWidth::U32 => {
                u64::from(self.memory.read_u32(t.addr).map_err(NestedFault::Memory)?)
            }
            EntryWidth::U64 => self.memory.read_u64(t.addr).map_err(NestedFault::Memory)?,
        };
        let slot = EptSlot {
            gpa,
            addr: t.addr,
            rights: t.rights,
            ept_level: t.level,
            guest_level: level,
        };
        Ok((value, slot))
    }

    fn check_write(&mut self, slot: Self::Slot) -> Result<(), Self::Error> {
        if slot.rights.write {
            return Ok(());
        }
        // Writes of guest accessed and dirty flags are data writes for EPT (§29.3.3.2).
        let access = EptAccess::new(AccessKind::Write, EptOrigin::GuestPagingStructure);
        Err(NestedFault::Ept {
            fault: EptFault::Violation(EptViolation {
                access,
                treated_as_write: false,
                rights: slot.rights,
                level: slot.ept_level,
            }),
            gpa: slot.gpa,
            stage: EptStage::GuestTable {
                level: slot.guest_level,
            },
        })
    }

    fn set_flags(
        &mut self,
        slot: Self::Slot,
        width: EntryWidth,
        flags: u64,
    ) -> Result<(), Self::Error> {
        set_flags_at(&mut *self.memory, slot.addr, width, flags).map_err(NestedFault::Memory)
    }
}

/// The result of a two-dimensional walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NestedTranslation<I, O> {
    /// The guest dimension: linear to guest-physical, with the guest's rights and attributes.
    pub guest: GuestTranslation<I>,
    /// The EPT translation of the final guest-physical address.
    pub ept: EptTranslation<O>,
}

impl<I: Address, O: Address> NestedTranslation<I, O> {
    /// The physical address of the accessed byte.
    #[inline]
    pub fn addr(&self) -> O {
        self.ept.addr
    }

    /// The size of the region both dimensions map uniformly: the smaller of the two pages.
    #[inline]
    pub fn size(&self) -> crate::walk::PageSize {
        if self.guest.size.bytes() <= self.ept.size.bytes() {
            self.guest.size
        } else {
            self.ept.size
        }
    }
}

/// Translates the linear address `gva` through the guest's paging `guest` and then EPT `ept`,
/// for `access`, setting the accessed and dirty flags of both dimensions as the hardware does.
pub fn translate_nested<F, I, O, M>(
    guest: &F,
    ept: &Ept<I, O>,
    memory: &mut M,
    gva: Gva,
    access: Access,
) -> Result<NestedTranslation<I, O>, NestedFault<I, O>>
where
    F: PagingFormat<
            Input = Gva,
            Output = I,
            Access = Access,
            Rights = PageRights,
            Attrs = PageAttrs,
            Fault = PageFault,
        >,
    I: Address,
    O: Address,
    M: Memory<O> + ?Sized,
{
    let mut tables = EptTables::for_walk(ept, memory);
    let walked = walk(guest, &mut tables, gva, access).map_err(|e| match e {
        WalkError::Fault(pf) => NestedFault::Guest(pf),
        WalkError::Table(e) => e,
    })?;
    walked.check_updates(&mut tables)?;
    let gpa = walked.translation().addr;
    let user = walked.translation().rights.user;
    let final_access = EptAccess::new(access.kind, EptOrigin::GuestLinear { user });
    let ept_translation =
        translate(ept, &mut *tables.memory, gpa, final_access).map_err(|e| match e {
            WalkError::Fault(fault) => NestedFault::Ept {
                fault,
                gpa,
                stage: EptStage::Final,
            },
            WalkError::Table(e) => NestedFault::Memory(e),
        })?;
    let guest_translation = walked.commit(&mut tables)?;
    Ok(NestedTranslation {
        guest: guest_translation,
        ept: ept_translation,
    })
}

#[cfg(test)]
mod tests {
    use x86::paging::{Eptp, ept, pte};
    use x86::{Gpa, Hpa};

    use super::*;
    use crate::ept::EptCaps;
    use crate::guest::{PagingContext, Privilege};
    use crate::long::Paging4;
    use crate::pae::{Pae, load_pdptes};
    use crate::test_utils::{SparseMemory, plain_ctx};

    /// Guest-physical page `i` (i < 64) lives at host-physical 0x20_0000 + i·4096.
    const HOST_BASE: u64 = 0x20_0000;
    const EPT_PML4: u64 = 0x1000;
    const EPT_PT: u64 = 0x4000;
    const G_PML4: u64 = 0x10_000;
    const G_PDPT: u64 = 0x11_000;
    const G_PD: u64 = 0x12_000;
    const G_PT: u64 = 0x13_000;
    const G_PAGE: u64 = 0x14_000;
    const VA: u64 = 0x567;
    const GP: u64 = pte::PRESENT | pte::WRITABLE | pte::USER;
    const EPT_RWX: u64 = ept::RWX | (6 << 3);

    fn hpa(gpa: u64) -> u64 {
        HOST_BASE + gpa
    }

    fn setup() -> SparseMemory {
        let mut m = SparseMemory::new();
        m.set64(EPT_PML4, 0x2000 | ept::RWX);
        m.set64(0x2000, 0x3000 | ept::RWX);
        m.set64(0x3000, EPT_PT | ept::RWX);
        for i in 0..64 {
            m.set64(EPT_PT + i * 8, (HOST_BASE + i * 4096) | EPT_RWX);
        }
        m.set64(hpa(G_PML4), G_PDPT | GP);
        m.set64(hpa(G_PDPT), G_PD | GP);
        m.set64(hpa(G_PD), G_PT | GP);
        m.set64(hpa(G_PT), G_PAGE | GP);
        m.map(hpa(G_PAGE));
        m
    }

    fn ept(ad: bool) -> Ept<Gpa, Hpa> {
        let caps = EptCaps::from_msr((1 << 6) | (1 << 14) | (1 << 21));
        let eptp = EPT_PML4 | (3 << 3) | 6 | if ad { 1 << 6 } else { 0 };
        Ept::new(Eptp::new(eptp), &caps, 46, false).unwrap()
    }

    fn guest() -> Paging4<Gpa> {
        Paging4::new(Gpa::new(G_PML4), plain_ctx())
    }

    fn set_ept_pte(m: &mut SparseMemory, gpa: u64, flags: u64) {
        m.set64(EPT_PT + (gpa >> 12) * 8, hpa(gpa & !0xfff) | flags);
    }

    type Res = Result<NestedTranslation<Gpa, Hpa>, NestedFault<Gpa, Hpa>>;

    fn go(m: &mut SparseMemory, ad: bool, kind: AccessKind) -> Res {
        let access = Access::new(kind, Privilege::User);
        translate_nested(&guest(), &ept(ad), m, Gva::new(VA), access)
    }

    fn ept_fault(r: Res) -> (u64, Gpa, EptStage) {
        match r {
            Err(NestedFault::Ept {
                fault: EptFault::Violation(v),
                gpa,
                stage,
            }) => (v.exit_qualification(), gpa, stage),
            other => panic!("expected an EPT violation, got {other:?}"),
        }
    }

    #[test]
    fn both_dimensions_translate_and_set_flags() {
        let mut m = setup();
        let t = go(&mut m, true, AccessKind::Write).unwrap();
        assert_eq!(t.guest.addr, Gpa::new(G_PAGE | VA));
        assert_eq!(t.addr(), Hpa::new(hpa(G_PAGE) | VA));
        assert_eq!(t.size(), crate::PageSize::Size4K);
        // Guest flags, written at the host-physical address of each guest entry.
        assert_eq!(m.get64(hpa(G_PML4)), G_PDPT | GP | pte::ACCESSED);
        assert_eq!(m.get64(hpa(G_PT)), G_PAGE | GP | pte::ACCESSED | pte::DIRTY);
        // EPT flags: guest table pages are dirty (paging-structure accesses are writes), and
        // so is the final page.
        let ad = ept::ACCESSED | ept::DIRTY;
        for page in [G_PML4, G_PDPT, G_PD, G_PT, G_PAGE] {
            assert_eq!(m.get64(EPT_PT + (page >> 12) * 8) & ad, ad, "{page:#x}");
        }
        // An unrelated page is untouched.
        assert_eq!(m.get64(EPT_PT + 0x20 * 8) & ad, 0);
    }

    #[test]
    fn guest_faults_are_page_faults() {
        let mut m = setup();
        m.set64(hpa(G_PD), 0);
        let r = go(&mut m, false, AccessKind::Read);
        assert_eq!(
            r.unwrap_err(),
            NestedFault::Guest(PageFault {
                error_code: 0b100,
                level: 2
            })
        );
    }

    #[test]
    fn ept_fault_on_a_guest_table() {
        let mut m = setup();
        set_ept_pte(&mut m, G_PD, 0);
        let (qual, gpa, stage) = ept_fault(go(&mut m, false, AccessKind::Write));
        // A read of a paging structure: bit 0, guest linear address valid (bit 7), not the
        // final translation (bit 8 clear), no rights.
        assert_eq!(qual, 0b0_1000_0001);
        assert_eq!(gpa, Gpa::new(G_PD));
        assert_eq!(stage, EptStage::GuestTable { level: 2 });
        // The guest entries read before are untouched: the access did not succeed.
        assert_eq!(m.get64(hpa(G_PML4)), G_PDPT | GP);
    }

    #[test]
    fn ept_fault_on_the_final_translation_leaves_guest_flags() {
        let mut m = setup();
        set_ept_pte(&mut m, G_PAGE, ept::READ | (6 << 3));
        let (qual, gpa, stage) = ept_fault(go(&mut m, false, AccessKind::Write));
        assert_eq!(qual, 0b1_1000_1010);
        assert_eq!(gpa, Gpa::new(G_PAGE | VA));
        assert_eq!(stage, EptStage::Final);
        assert_eq!(m.get64(hpa(G_PT)), G_PAGE | GP);
        assert!(go(&mut m, false, AccessKind::Read).is_ok());
        assert_eq!(m.get64(hpa(G_PT)), G_PAGE | GP | pte::ACCESSED);
    }

    #[test]
    fn read_only_guest_tables_under_ept() {
        // Without EPT A/D: reading a read-only guest table is fine, but setting its accessed
        // flag is a write, refused by EPT.
        let mut m = setup();
        set_ept_pte(&mut m, G_PDPT, ept::READ | (6 << 3));
        let (qual, gpa, stage) = ept_fault(go(&mut m, false, AccessKind::Read));
        assert_eq!(qual, 0b0_1000_1010);
        assert_eq!(gpa, Gpa::new(G_PDPT));
        assert_eq!(stage, EptStage::GuestTable { level: 3 });
        assert_eq!(m.get64(hpa(G_PML4)), G_PDPT | GP);
        // With the accessed flag already set, no write is needed.
        m.set64(hpa(G_PDPT), G_PD | GP | pte::ACCESSED);
        assert!(go(&mut m, false, AccessKind::Read).is_ok());
        // With EPT A/D the read itself counts as a write: bits 0 and 1.
        let (qual, _, _) = ept_fault(go(&mut m, true, AccessKind::Read));
        assert_eq!(qual, 0b0_1000_1011);
    }

    #[test]
    fn pdpte_loads_through_ept() {
        let mut m = setup();
        m.set64(hpa(0x15_000), G_PD | pte::PRESENT);
        let e = ept(true);
        let mut tables = EptTables::for_pdpte_load(&e, &mut m);
        let pdptes = load_pdptes(&mut tables, 0x15_000, 46).unwrap();
        // A PDPTE load is a read: no EPT dirty flag.
        assert_eq!(m.get64(EPT_PT + 0x15 * 8) & ept::DIRTY, 0);
        let f = Pae::<Gpa>::new(pdptes, PagingContext { ..plain_ctx() });
        let t = translate_nested(
            &f,
            &e,
            &mut m,
            Gva::new(VA),
            Access::new(AccessKind::Read, Privilege::User),
        )
        .unwrap();
        assert_eq!(t.addr(), Hpa::new(hpa(G_PAGE) | VA));
        set_ept_pte(&mut m, 0x15_000, 0);
        let mut tables = EptTables::for_pdpte_load(&e, &mut m);
        match load_pdptes(&mut tables, 0x15_000, 46) {
            Err(crate::PdpteLoadError::Table(NestedFault::Ept {
                fault: EptFault::Violation(v),
                stage: EptStage::PdpteLoad,
                ..
            })) => assert_eq!(v.exit_qualification(), 1),
            other => panic!("{other:?}"),
        }
    }
}
