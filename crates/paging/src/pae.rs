//! PAE paging: four PDPTEs held in registers, then two levels of 512 8-byte entries, 2-MiB
//! pages (SDM Vol. 3A §4.4, Tables 4-8 to 4-11; access rights §4.6; #PF §4.7).
//!
//! The PDPTEs are loaded from the 32-byte-aligned table at CR3 bits 31:5 when CR3, CR0 or CR4
//! is written (§4.4.1), and a reserved bit in a present PDPTE makes that load #GP(0); VM entry
//! loads them from the VMCS guest-PDPTE fields instead (Vol. 3C §28.3.2.4). [`load_pdptes`] is
//! the load; a [`Pae`] walk only reads the register. PDPTEs carry no rights and no accessed
//! flag. In PDEs and PTEs bits 62:MAXPHYADDR are reserved, and bit 63 (XD) too when
//! IA32_EFER.NXE = 0.

use core::marker::PhantomData;

use x86::Gva;
use x86::paging::{pae, pte};

use crate::guest::{Access, PageAttrs, PageFault, PageRights, PagingContext};
use crate::memory::{Address, EntryWidth, TableMemory};
use crate::walk::{Decoded, Level, PageSize, PagingFormat, Rights, Root};

/// The four PAE page-directory-pointer-table entries of the PDPTE registers, checked for
/// reserved bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pdptes([u64; 4]);

/// A present PDPTE with a reserved bit set: the load raises #GP(0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReservedPdpte {
    /// Which PDPTE (0–3).
    pub index: usize,
    /// Its value.
    pub entry: u64,
}

impl Pdptes {
    /// Checks four PDPTE values (from memory or from the VMCS guest-PDPTE fields): no present
    /// entry may set a bit reserved under `maxphyaddr` (SDM Vol. 3A Table 4-8).
    pub fn new(entries: [u64; 4], maxphyaddr: u8) -> Result<Self, ReservedPdpte> {
        let reserved = pae::pdpte_reserved(u32::from(maxphyaddr));
        for (index, &entry) in entries.iter().enumerate() {
            if entry & pte::PRESENT != 0 && entry & reserved != 0 {
                return Err(ReservedPdpte { index, entry });
            }
        }
        Ok(Self(entries))
    }

    /// The four register values.
    pub const fn entries(&self) -> [u64; 4] {
        self.0
    }
}

/// Why loading the PDPTEs failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PdpteLoadError<E> {
    /// A present PDPTE has a reserved bit set: #GP(0) (SDM Vol. 3A §4.4.1).
    Reserved(ReservedPdpte),
    /// The table could not be read.
    Table(E),
}

/// Loads and checks the PDPTEs from the table at CR3 bits 31:5, as MOV to CR3 (and to CR0 or
/// CR4, when it enables PAE paging) does (SDM Vol. 3A §4.4.1).
pub fn load_pdptes<P, T>(
    tables: &mut T,
    cr3: u64,
    maxphyaddr: u8,
) -> Result<Pdptes, PdpteLoadError<T::Error>>
where
    P: Address,
    T: TableMemory<P>,
{
    let base = cr3 & x86::reg::cr3::PAE_PDPT_MASK;
    let mut entries = [0u64; 4];
    for (i, entry) in (0u64..).zip(entries.iter_mut()) {
        let (value, _) = tables
            .read_entry(P::from_raw(base + 8 * i), EntryWidth::U64, 3)
            .map_err(PdpteLoadError::Table)?;
        *entry = value;
    }
    Pdptes::new(entries, maxphyaddr).map_err(PdpteLoadError::Reserved)
}

/// PAE paging from the loaded PDPTE registers, producing addresses of type `P`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pae<P> {
    pdptes: Pdptes,
    ctx: PagingContext,
    _out: PhantomData<P>,
}

impl<P: Address> Pae<P> {
    /// The format for the PDPTE registers `pdptes` under `ctx`.
    pub fn new(pdptes: Pdptes, ctx: PagingContext) -> Self {
        Self {
            pdptes,
            ctx,
            _out: PhantomData,
        }
    }

    /// The control bits this format was built with.
    pub fn context(&self) -> &PagingContext {
        &self.ctx
    }

    /// Reserved bits of a PDE or PTE: 62:MAXPHYADDR, and 63 when IA32_EFER.NXE = 0.
    #[inline]
    fn reserved_high(&self) -> u64 {
        let above = !x86::addr::phys_mask(u32::from(self.ctx.maxphyaddr));
        if self.ctx.nxe {
            above & !pte::XD
        } else {
            above
        }
    }
}

/// Bits 20:13 of a PDE that maps a 2-MiB page: reserved.
const RESERVED_2M: u64 = 0x001f_e000;
/// The address field of a PAE PDE, PTE or PDPTE (bits 51:12; the reserved-bit checks limit it
/// to MAXPHYADDR).
const ADDR_MASK: u64 = pte::ADDR_MASK;

impl<P: Address> PagingFormat for Pae<P> {
    type Input = Gva;
    type Output = P;
    type Access = Access;
    type Rights = PageRights;
    type Attrs = PageAttrs;
    type Fault = PageFault;

    const WIDTH: EntryWidth = EntryWidth::U64;

    #[inline]
    fn top_level(&self) -> Level {
        3
    }

    #[inline]
    fn root(&self, input: Gva) -> Root<P> {
        // Linear-address bits 31:30 select the PDPTE.
        let index = ((input.raw() >> 30) & 3) as usize;
        Root::Register(self.pdptes.0.get(index).copied().unwrap_or(0))
    }

    #[inline]
    fn entry_addr(&self, table: P, input: Gva, level: Level) -> P {
        // Level 2 takes bits 29:21, level 1 bits 20:12.
        let shift = if level == 2 { 21 } else { 12 };
        let index = (input.raw() >> shift) & 0x1ff;
        P::from_raw(table.to_raw() | (index * 8))
    }

    #[inline]
    fn decode(&self, level: Level, entry: u64) -> Decoded<P, PageRights> {
        if entry & pte::PRESENT == 0 {
            return Decoded::NotPresent {
                rights: PageRights::of_entry(entry, self.ctx.nxe),
            };
        }
        let base = P::from_raw(entry & ADDR_MASK);
        if level == 3 {
            // A PDPTE register: checked at load time, it grants every right.
            return Decoded::Table {
                table: base,
                rights: PageRights::ALL,
            };
        }
        let rights = PageRights::of_entry(entry, self.ctx.nxe);
        if entry & self.reserved_high() != 0 {
            return Decoded::Reserved;
        }
        if level == 2 && entry & pte::PAGE_SIZE != 0 {
            if entry & RESERVED_2M != 0 {
                return Decoded::Reserved;
            }
            return Decoded::Leaf {
                page: P::from_raw(entry & ADDR_MASK & !PageSize::Size2M.offset_mask()),
                size: PageSize::Size2M,
                rights,
            };
        }
        if level == 2 {
            Decoded::Table {
                table: base,
                rights,
            }
        } else {
            Decoded::Leaf {
                page: base,
                size: PageSize::Size4K,
                rights,
            }
        }
    }

    crate::guest::guest_format_rules!();
}

impl<P: Address> Pae<P> {
    /// I/D is reported with CR4.SMEP = 1 or IA32_EFER.NXE = 1 (SDM Vol. 3A §4.7).
    #[inline]
    fn fetch_reported(&self) -> bool {
        self.ctx.smep || self.ctx.nxe
    }
}

#[cfg(test)]
mod tests {
    use x86::Gpa;
    use x86::exception::pf_error;

    use super::*;
    use crate::Direct;
    use crate::guest::{AccessKind, Privilege};
    use crate::test_utils::{SparseMemory, plain_ctx};
    use crate::walk::{WalkError, translate};

    const P: u64 = pte::PRESENT;
    const W: u64 = pte::WRITABLE;
    const U: u64 = pte::USER;
    const A: u64 = pte::ACCESSED;
    const PDPT: u64 = 0x1020;
    const PD: u64 = 0x2000;
    const PT: u64 = 0x3000;
    /// PDPTE 2, PDE 0x11, PTE 0x22, offset 0x333.
    const VA: u64 = (2 << 30) | (0x11 << 21) | (0x22 << 12) | 0x333;

    fn setup() -> (SparseMemory, Pdptes) {
        let mut m = SparseMemory::new();
        m.set64(PDPT + 2 * 8, PD | P);
        m.set64(PD + 0x11 * 8, PT | P | W | U);
        m.set64(PT + 0x22 * 8, 0x7_0000_0000 | P | W | U);
        let pdptes = load_pdptes::<Gpa, _>(&mut Direct(&mut m), PDPT | 0x7, 36).unwrap();
        (m, pdptes)
    }

    #[test]
    fn walk_from_the_pdpte_registers() {
        let (mut m, pdptes) = setup();
        assert_eq!(pdptes.entries()[2], PD | P);
        let f = Pae::<Gpa>::new(
            pdptes,
            PagingContext {
                maxphyaddr: 36,
                ..plain_ctx()
            },
        );
        let access = Access::new(AccessKind::Write, Privilege::User);
        let t = translate(&f, &mut m, Gva::new(VA), access).unwrap();
        assert_eq!(t.addr, Gpa::new(0x7_0000_0333));
        assert_eq!(t.path.steps()[0].addr, None);
        // The PDPTE in memory is not touched: the walk used the register.
        assert_eq!(m.get64(PDPT + 2 * 8), PD | P);
        assert_eq!(m.get64(PD + 0x11 * 8) & A, A);
        // A change in memory does not affect the registers.
        m.set64(PDPT + 2 * 8, 0);
        assert!(translate(&f, &mut m, Gva::new(VA), access).is_ok());
    }

    #[test]
    fn pdpte_load_checks_reserved_bits() {
        let (mut m, _) = setup();
        m.set64(PDPT + 8, 0x5000 | P | W);
        let r = load_pdptes::<Gpa, _>(&mut Direct(&mut m), PDPT, 36);
        assert_eq!(
            r,
            Err(PdpteLoadError::Reserved(ReservedPdpte {
                index: 1,
                entry: 0x5000 | P | W
            }))
        );
        // Not-present PDPTEs may hold anything.
        m.set64(PDPT + 8, 0xffff_ffff_ffff_fffe);
        assert!(load_pdptes::<Gpa, _>(&mut Direct(&mut m), PDPT, 36).is_ok());
        m.set64(PDPT + 8, (1 << 36) | P);
        assert!(load_pdptes::<Gpa, _>(&mut Direct(&mut m), PDPT, 36).is_err());
        assert!(load_pdptes::<Gpa, _>(&mut Direct(&mut m), PDPT, 40).is_ok());
        assert!(Pdptes::new([0, P | (1 << 63), 0, 0], 52).is_err());
    }

    #[test]
    fn not_present_pdpte_faults_at_level_3() {
        let (mut m, pdptes) = setup();
        let f = Pae::<Gpa>::new(pdptes, plain_ctx());
        let r = translate(
            &f,
            &mut m,
            Gva::new(VA & 0x3fff_ffff),
            Access::new(AccessKind::Read, Privilege::User),
        );
        let want = PageFault {
            error_code: pf_error::USER,
            level: 3,
        };
        assert_eq!(r, Err(WalkError::Fault(want)));
    }

    #[test]
    fn reserved_bits_of_pae_entries() {
        let (mut m, pdptes) = setup();
        let read = Access::new(AccessKind::Read, Privilege::Supervisor);
        let rsvd = |level| {
            Err(WalkError::Fault(PageFault {
                error_code: pf_error::PRESENT | pf_error::RSVD,
                level,
            }))
        };
        // Bits 62:52 are reserved in PAE (not ignored as in 4-level paging).
        m.set64(PT + 0x22 * 8, 0x5000 | P | (1 << 60));
        let f = Pae::<Gpa>::new(pdptes, plain_ctx());
        assert_eq!(translate(&f, &mut m, Gva::new(VA), read), rsvd(1));
        // XD: reserved with NXE = 0, honoured with NXE = 1.
        m.set64(PT + 0x22 * 8, 0x5000 | P | pte::XD);
        assert_eq!(translate(&f, &mut m, Gva::new(VA), read), rsvd(1));
        let nx = Pae::<Gpa>::new(
            pdptes,
            PagingContext {
                nxe: true,
                ..plain_ctx()
            },
        );
        let t = translate(&nx, &mut m, Gva::new(VA), read).unwrap();
        assert!(!t.rights.execute);
        let fetch = Access::new(AccessKind::Fetch, Privilege::Supervisor);
        let r = translate(&nx, &mut m, Gva::new(VA), fetch);
        let want = PageFault {
            error_code: pf_error::PRESENT | pf_error::FETCH,
            level: 1,
        };
        assert_eq!(r, Err(WalkError::Fault(want)));
        // 2-MiB pages: bits 20:13 reserved.
        m.set64(PD + 0x11 * 8, 0x4020_0000 | P | pte::PAGE_SIZE);
        let t = translate(&f, &mut m, Gva::new(VA), read).unwrap();
        assert_eq!(t.size, PageSize::Size2M);
        assert_eq!(t.addr, Gpa::new(0x4020_0000 | (VA & 0x1f_ffff)));
        m.set64(PD + 0x11 * 8, 0x4020_4000 | P | pte::PAGE_SIZE);
        assert_eq!(translate(&f, &mut m, Gva::new(VA), read), rsvd(2));
    }
}
