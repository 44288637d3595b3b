//! 4-level and 5-level paging: four or five levels of 512 8-byte entries, 2-MiB and 1-GiB
//! pages (SDM Vol. 3A §4.5, Tables 4-14 to 4-20; access rights §4.6; #PF §4.7).
//!
//! Reserved bits: 51:MAXPHYADDR in every entry; bit 63 (XD) when IA32_EFER.NXE = 0; PS in a
//! PML5E and PML4E; PS in a PDPTE when 1-GiB pages are not supported; bits 29:13 of a PDPTE
//! that maps a 1-GiB page and bits 20:13 of a PDE that maps a 2-MiB page. Bits 62:52 are
//! ignored (62:59 would be the protection key with CR4.PKE/PKS, which is not implemented and
//! refused by [`PagingContext::from_registers`]). The walker indexes with linear-address bits
//! 47:12 (56:12 for 5-level paging); the processor checks canonicality before translating
//! (#GP or #SS, Vol. 1 §3.3.7.1), so that is the caller's job.

use core::marker::PhantomData;

use x86::Gva;
use x86::paging::pte;

use crate::guest::{
    Access, FaultCause, PageAttrs, PageFault, PageRights, PagingContext, guest_flags_to_set,
};
use crate::memory::{Address, EntryWidth};
use crate::walk::{Decoded, Level, PageSize, PagingFormat, Root};

/// 4-level (`LEVELS == 4`) or 5-level (`LEVELS == 5`) paging with the top table at `root`,
/// producing addresses of type `P`. Use the aliases [`Paging4`] and [`Paging5`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongMode<P, const LEVELS: u8> {
    root: P,
    ctx: PagingContext,
    _out: PhantomData<P>,
}

/// 4-level paging (CR4.PAE = 1, IA32_EFER.LME = 1, CR4.LA57 = 0).
pub type Paging4<P> = LongMode<P, 4>;
/// 5-level paging (CR4.PAE = 1, IA32_EFER.LME = 1, CR4.LA57 = 1).
pub type Paging5<P> = LongMode<P, 5>;

/// Bits 29:13 of a PDPTE that maps a 1-GiB page: reserved.
const RESERVED_1G: u64 = 0x3fff_e000;
/// Bits 20:13 of a PDE that maps a 2-MiB page: reserved.
const RESERVED_2M: u64 = 0x001f_e000;

impl<P: Address, const LEVELS: u8> LongMode<P, LEVELS> {
    /// The format for the top-level table at `root` (CR3 bits 51:12; other bits ignored)
    /// under `ctx`.
    pub fn new(root: P, ctx: PagingContext) -> Self {
        const { assert!(LEVELS == 4 || LEVELS == 5) };
        Self {
            root: P::from_raw(root.to_raw() & pte::ADDR_MASK),
            ctx,
            _out: PhantomData,
        }
    }

    /// The control bits this format was built with.
    pub fn context(&self) -> &PagingContext {
        &self.ctx
    }

    /// I/D is reported with CR4.SMEP = 1 or IA32_EFER.NXE = 1 (SDM Vol. 3A §4.7).
    #[inline]
    fn fetch_reported(&self) -> bool {
        self.ctx.smep || self.ctx.nxe
    }
}

impl<P: Address, const LEVELS: u8> PagingFormat for LongMode<P, LEVELS> {
    type Input = Gva;
    type Output = P;
    type Access = Access;
    type Rights = PageRights;
    type Attrs = PageAttrs;
    type Fault = PageFault;

    const WIDTH: EntryWidth = EntryWidth::U64;

    #[inline]
    fn top_level(&self) -> Level {
        LEVELS
    }

    #[inline]
    fn root(&self, _input: Gva) -> Root<P> {
        Root::Table(self.root)
    }

    #[inline]
    fn entry_addr(&self, table: P, input: Gva, level: Level) -> P {
        let index = (input.raw() >> (12 + 9 * (u32::from(level) - 1))) & 0x1ff;
        P::from_raw(table.to_raw() | (index * 8))
    }

    #[inline]
    fn decode(&self, level: Level, entry: u64) -> Decoded<P, PageRights> {
        let rights = PageRights::of_entry(entry, self.ctx.nxe);
        if entry & pte::PRESENT == 0 {
            return Decoded::NotPresent { rights };
        }
        let mut reserved = self.ctx.reserved_51_m();
        if !self.ctx.nxe {
            reserved |= pte::XD;
        }
        if entry & reserved != 0 {
            return Decoded::Reserved;
        }
        let large = entry & pte::PAGE_SIZE != 0;
        let (size, size_reserved) = match (level, large) {
            (_, false) | (1, true) => {
                let base = P::from_raw(entry & pte::ADDR_MASK);
                return if level == 1 {
                    Decoded::Leaf {
                        page: base,
                        size: PageSize::Size4K,
                        rights,
                    }
                } else {
                    Decoded::Table {
                        table: base,
                        rights,
                    }
                };
            }
            (2, true) => (PageSize::Size2M, RESERVED_2M),
            (3, true) if self.ctx.gb_pages => (PageSize::Size1G, RESERVED_1G),
            // PS in a PML4E or PML5E, or in a PDPTE without 1-GiB pages.
            _ => return Decoded::Reserved,
        };
        if entry & size_reserved != 0 {
            return Decoded::Reserved;
        }
        Decoded::Leaf {
            page: P::from_raw(entry & pte::ADDR_MASK & !size.offset_mask()),
            size,
            rights,
        }
    }

    #[inline]
    fn not_present(&self, access: Access, level: Level, _rights: PageRights) -> PageFault {
        PageFault::new(FaultCause::NotPresent, access, self.fetch_reported(), level)
    }

    #[inline]
    fn reserved(&self, access: Access, level: Level) -> PageFault {
        PageFault::new(FaultCause::Reserved, access, self.fetch_reported(), level)
    }

    #[inline]
    fn check(&self, access: Access, rights: PageRights, level: Level) -> Result<(), PageFault> {
        if rights.permit(&self.ctx, access) {
            Ok(())
        } else {
            Err(PageFault::new(
                FaultCause::Rights,
                access,
                self.fetch_reported(),
                level,
            ))
        }
    }

    #[inline]
    fn attrs(&self, leaf: u64, size: PageSize) -> PageAttrs {
        PageAttrs::of_leaf(&self.ctx, leaf, size != PageSize::Size4K)
    }

    #[inline]
    fn flags_to_set(&self, access: Access, leaf: bool) -> u64 {
        guest_flags_to_set(access, leaf)
    }

    #[inline]
    fn is_dirty(&self, leaf: u64) -> bool {
        leaf & pte::DIRTY != 0
    }
}
