//! 32-bit paging: two levels of 1024 4-byte entries, 4-MiB pages with CR4.PSE and PSE-36
//! (SDM Vol. 3A §4.3, Tables 4-4 to 4-6; access rights §4.6; #PF §4.7).
//!
//! The only reserved bits of 32-bit paging are those of a PDE that maps a 4-MiB page: bit 21
//! and the PSE-36 address bits at or above min(MAXPHYADDR, 40). PDE bit 7 is ignored when
//! CR4.PSE = 0. There is no execute-disable bit, so the I/D error-code flag is reported only
//! with CR4.SMEP = 1.

use core::marker::PhantomData;

use x86::Gva;
use x86::paging::{legacy, pte};

use crate::guest::{
    Access, FaultCause, PageAttrs, PageFault, PageRights, PagingContext, guest_flags_to_set,
};
use crate::memory::{Address, EntryWidth};
use crate::walk::{Decoded, Level, PageSize, PagingFormat, Root};

/// 32-bit paging with the page directory at `root` (CR3 bits 31:12), producing addresses of
/// type `P`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging32<P> {
    root: P,
    ctx: PagingContext,
    _out: PhantomData<P>,
}

impl<P: Address> Paging32<P> {
    /// The format for the page directory at `root` (its low 12 bits are ignored) under `ctx`.
    pub fn new(root: P, ctx: PagingContext) -> Self {
        Self {
            root: P::from_raw(root.to_raw() & u64::from(legacy::ADDR_MASK)),
            ctx,
            _out: PhantomData,
        }
    }

    /// The control bits this format was built with.
    pub fn context(&self) -> &PagingContext {
        &self.ctx
    }
}

impl<P: Address> PagingFormat for Paging32<P> {
    type Input = Gva;
    type Output = P;
    type Access = Access;
    type Rights = PageRights;
    type Attrs = PageAttrs;
    type Fault = PageFault;

    const WIDTH: EntryWidth = EntryWidth::U32;

    #[inline]
    fn top_level(&self) -> Level {
        2
    }

    #[inline]
    fn root(&self, _input: Gva) -> Root<P> {
        Root::Table(self.root)
    }

    #[inline]
    fn entry_addr(&self, table: P, input: Gva, level: Level) -> P {
        // Level 2 takes linear-address bits 31:22, level 1 bits 21:12.
        let shift = if level == 2 { 22 } else { 12 };
        let index = (input.raw() >> shift) & 0x3ff;
        P::from_raw(table.to_raw() | (index * 4))
    }

    #[inline]
    fn decode(&self, level: Level, entry: u64) -> Decoded<P, PageRights> {
        // Entries are 32 bits: the upper half of `entry` is zero.
        let entry32 = entry as u32;
        let rights = PageRights::of_entry(entry, false);
        if entry & pte::PRESENT == 0 {
            return Decoded::NotPresent { rights };
        }
        if level == 2 && self.ctx.pse && entry & pte::PAGE_SIZE != 0 {
            if entry32 & legacy::pde_4m_reserved(u32::from(self.ctx.maxphyaddr)) != 0 {
                return Decoded::Reserved;
            }
            return Decoded::Leaf {
                page: P::from_raw(legacy::pde_4m_base(entry32)),
                size: PageSize::Size4M,
                rights,
            };
        }
        let base = P::from_raw(u64::from(entry32 & legacy::ADDR_MASK));
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

    #[inline]
    fn not_present(&self, access: Access, level: Level, _rights: PageRights) -> PageFault {
        PageFault::new(FaultCause::NotPresent, access, self.ctx.smep, level)
    }

    #[inline]
    fn reserved(&self, access: Access, level: Level) -> PageFault {
        PageFault::new(FaultCause::Reserved, access, self.ctx.smep, level)
    }

    #[inline]
    fn check(&self, access: Access, rights: PageRights, level: Level) -> Result<(), PageFault> {
        if rights.permit(&self.ctx, access) {
            Ok(())
        } else {
            Err(PageFault::new(
                FaultCause::Rights,
                access,
                self.ctx.smep,
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
