//! Which paging mode CR0, CR4 and IA32_EFER select (SDM Vol. 3A §4.1.1, Table 4-1), and a guest
//! format chosen at run time that still walks through the monomorphised walker of its mode.

use x86::Gva;
use x86::reg::{cr0, cr4, efer};

use crate::ept::Ept;
use crate::guest::{Access, GuestTranslation, PageFault, PageRights, PagingContext};
use crate::legacy::Paging32;
use crate::long::{Paging4, Paging5};
use crate::memory::{Address, Memory, MemoryError};
use crate::nested::{NestedFault, NestedTranslation, translate_nested};
use crate::pae::{Pae, Pdptes};
use crate::walk::{WalkError, translate};

/// The paging mode in force (SDM Vol. 3A §4.1.1, Table 4-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PagingMode {
    /// CR0.PG = 0: linear addresses are physical addresses.
    Disabled,
    /// CR0.PG = 1, CR4.PAE = 0.
    Bits32,
    /// CR0.PG = 1, CR4.PAE = 1, IA32_EFER.LMA = 0.
    Pae,
    /// CR0.PG = 1, CR4.PAE = 1, IA32_EFER.LMA = 1, CR4.LA57 = 0.
    Level4,
    /// CR0.PG = 1, CR4.PAE = 1, IA32_EFER.LMA = 1, CR4.LA57 = 1.
    Level5,
}

impl PagingMode {
    /// The mode CR0, CR4 and IA32_EFER select. IA32_EFER.LMA (not LME) decides between PAE and
    /// 4/5-level paging: it is what the processor (and VM entry, from the "IA-32e mode guest"
    /// control) sets once long mode is active.
    pub const fn from_registers(cr0: u64, cr4: u64, efer: u64) -> Self {
        if cr0 & cr0::PG == 0 {
            Self::Disabled
        } else if cr4 & cr4::PAE == 0 {
            Self::Bits32
        } else if efer & efer::LMA == 0 {
            Self::Pae
        } else if cr4 & cr4::LA57 == 0 {
            Self::Level4
        } else {
            Self::Level5
        }
    }
}

/// Why [`GuestPaging::new`] has no format to give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoGuestPaging {
    /// Paging is disabled: translate nothing.
    Disabled,
    /// PAE paging without loaded PDPTE registers.
    MissingPdptes,
}

/// The guest-paging format of the current mode, producing addresses of type `P`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestPaging<P> {
    /// 32-bit paging.
    Bits32(Paging32<P>),
    /// PAE paging.
    Pae(Pae<P>),
    /// 4-level paging.
    Level4(Paging4<P>),
    /// 5-level paging.
    Level5(Paging5<P>),
}

impl<P: Address> GuestPaging<P> {
    /// The format of `mode` with CR3 value `cr3` (its address bits; PCID and flags are
    /// ignored) or, for PAE, the PDPTE registers `pdptes`.
    pub fn new(
        mode: PagingMode,
        cr3: u64,
        pdptes: Option<Pdptes>,
        ctx: PagingContext,
    ) -> Result<Self, NoGuestPaging> {
        let root = P::from_raw(cr3);
        match mode {
            PagingMode::Disabled => Err(NoGuestPaging::Disabled),
            PagingMode::Bits32 => Ok(Self::Bits32(Paging32::new(root, ctx))),
            PagingMode::Pae => match pdptes {
                Some(p) => Ok(Self::Pae(Pae::new(p, ctx))),
                None => Err(NoGuestPaging::MissingPdptes),
            },
            PagingMode::Level4 => Ok(Self::Level4(Paging4::new(root, ctx))),
            PagingMode::Level5 => Ok(Self::Level5(Paging5::new(root, ctx))),
        }
    }

    /// The control bits of the format.
    pub fn context(&self) -> &PagingContext {
        match self {
            Self::Bits32(f) => f.context(),
            Self::Pae(f) => f.context(),
            Self::Level4(f) => f.context(),
            Self::Level5(f) => f.context(),
        }
    }

    /// Whether `access` is allowed to a cached translation with `rights` (the check a walk
    /// ends with, for a TLB hit).
    pub fn permits(&self, rights: PageRights, access: Access) -> bool {
        rights.permit(self.context(), access)
    }

    /// [`translate`] with the format of this mode.
    pub fn translate<M: Memory<P> + ?Sized>(
        &self,
        memory: &mut M,
        gva: Gva,
        access: Access,
    ) -> Result<GuestTranslation<P>, WalkError<PageFault, MemoryError<P>>> {
        match self {
            Self::Bits32(f) => translate(f, memory, gva, access),
            Self::Pae(f) => translate(f, memory, gva, access),
            Self::Level4(f) => translate(f, memory, gva, access),
            Self::Level5(f) => translate(f, memory, gva, access),
        }
    }

    /// [`translate_nested`] with the format of this mode.
    pub fn translate_nested<O: Address, M: Memory<O> + ?Sized>(
        &self,
        ept: &Ept<P, O>,
        memory: &mut M,
        gva: Gva,
        access: Access,
    ) -> Result<NestedTranslation<P, O>, NestedFault<P, O>> {
        match self {
            Self::Bits32(f) => translate_nested(f, ept, memory, gva, access),
            Self::Pae(f) => translate_nested(f, ept, memory, gva, access),
            Self::Level4(f) => translate_nested(f, ept, memory, gva, access),
            Self::Level5(f) => translate_nested(f, ept, memory, gva, access),
        }
    }
}

#[cfg(test)]
mod tests {
    use x86::Gpa;
    use x86::paging::pte;

    use super::*;
    use crate::guest::{AccessKind, Privilege};
    use crate::test_utils::{SparseMemory, plain_ctx};

    #[test]
    fn modes_of_table_4_1() {
        let pg = cr0::PG | cr0::PE;
        assert_eq!(
            PagingMode::from_registers(cr0::PE, cr4::PAE, efer::LME),
            PagingMode::Disabled
        );
        assert_eq!(
            PagingMode::from_registers(pg, cr4::PSE, 0),
            PagingMode::Bits32
        );
        assert_eq!(
            PagingMode::from_registers(pg, cr4::PAE, efer::LME),
            PagingMode::Pae
        );
        let lma = efer::LME | efer::LMA;
        assert_eq!(
            PagingMode::from_registers(pg, cr4::PAE, lma),
            PagingMode::Level4
        );
        assert_eq!(
            PagingMode::from_registers(pg, cr4::PAE | cr4::LA57, lma),
            PagingMode::Level5
        );
    }

    #[test]
    fn run_time_choice_walks_like_the_format() {
        let mut m = SparseMemory::new();
        let flags = pte::PRESENT | pte::WRITABLE;
        m.set64(0x1000, 0x2000 | flags);
        m.set64(0x2000, 0x3000 | flags);
        m.set64(0x3000, 0x4000 | flags);
        m.set64(0x4000, 0x5000 | flags);
        let g =
            GuestPaging::<Gpa>::new(PagingMode::Level4, 0x1000 | 0x18, None, plain_ctx()).unwrap();
        let access = Access::new(AccessKind::Write, Privilege::Supervisor);
        let t = g.translate(&mut m, Gva::new(0x123), access).unwrap();
        assert_eq!(t.addr, Gpa::new(0x5123));
        assert!(g.permits(t.rights, access));
        assert!(!g.permits(t.rights, Access::new(AccessKind::Read, Privilege::User)));
        assert_eq!(
            GuestPaging::<Gpa>::new(PagingMode::Pae, 0x1000, None, plain_ctx()),
            Err(NoGuestPaging::MissingPdptes)
        );
        assert_eq!(
            GuestPaging::<Gpa>::new(PagingMode::Disabled, 0, None, plain_ctx()),
            Err(NoGuestPaging::Disabled)
        );
    }
}
