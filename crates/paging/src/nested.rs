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

use crate::ept::{Ept, EptAccess, EptFault, EptOrigin, EptRights, EptViolation};
use crate::guest::{Access, AccessKind, PageFault, PageRights};
use crate::memory::{Address, EntryWidth, Memory, MemoryError, TableMemory};
use crate::walk::{Level, PagingFormat, Translation, WalkError, translate, walk};

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
    stage: EptStage,
}

impl<'a, I: Address, O: Address, M: Memory<O> + ?Sized> EptTables<'a, I, O, M> {
    /// Tables for a guest linear-address walk.
    pub fn for_walk(ept: &'a Ept<I, O>, memory: &'a mut M) -> Self {
        Self {
            ept,
            memory,
            origin: EptOrigin::GuestPagingStructure,
            stage: EptStage::GuestTable { level: 0 },
        }
    }

    /// Tables for the PDPTE loads of PAE paging (reads not tied to a linear address).
    pub fn for_pdpte_load(ept: &'a Ept<I, O>, memory: &'a mut M) -> Self {
        Self {
            ept,
            memory,
            origin: EptOrigin::NoLinear,
            stage: EptStage::PdpteLoad,
        }
    }

    fn stage_for(&self, level: Level) -> EptStage {
        match self.stage {
            EptStage::GuestTable { .. } => EptStage::GuestTable { level },
            other => other,
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

    fn write_entry(
        &mut self,
        slot: Self::Slot,
        width: EntryWidth,
        value: u64,
    ) -> Result<(), Self::Error> {
        match width {
            // A 4-byte entry only ever holds 32 bits: the truncation is exact.
            EntryWidth::U32 => self.memory.write_u32(slot.addr, value as u32),
            EntryWidth::U64 => self.memory.write_u64(slot.addr, value),
        }
        .map_err(NestedFault::Memory)
    }
}

/// The result of a two-dimensional walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NestedTranslation<F: PagingFormat, I: Address, O: Address> {
    /// The guest dimension: linear to guest-physical, with the guest's rights and attributes.
    pub guest: Translation<F>,
    /// The EPT translation of the final guest-physical address.
    pub ept: Translation<Ept<I, O>>,
}

impl<F: PagingFormat, I: Address, O: Address> NestedTranslation<F, I, O> {
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
) -> Result<NestedTranslation<F, I, O>, NestedFault<I, O>>
where
    F: PagingFormat<
            Input = Gva,
            Output = I,
            Access = Access,
            Rights = PageRights,
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
