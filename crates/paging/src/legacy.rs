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

use crate::guest::{Access, PageAttrs, PageFault, PageRights, PagingContext};
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

    /// 32-bit paging has no XD bit: I/D is reported only with CR4.SMEP = 1 (SDM Vol. 3A §4.7).
    #[inline]
    fn fetch_reported(&self) -> bool {
        self.ctx.smep
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

    crate::guest::guest_format_rules!();
}

#[cfg(test)]
mod tests {
    use x86::Hpa;
    use x86::exception::pf_error;

    use super::*;
    use crate::guest::{AccessKind, Privilege};
    use crate::test_utils::{SparseMemory, plain_ctx};
    use crate::walk::{WalkError, translate};

    const P: u32 = pte::PRESENT as u32;
    const W: u32 = pte::WRITABLE as u32;
    const U: u32 = pte::USER as u32;
    const A: u32 = pte::ACCESSED as u32;
    const D: u32 = pte::DIRTY as u32;
    const PS: u32 = pte::PAGE_SIZE as u32;
    const PD: u64 = 0x1000;
    const PT: u64 = 0x2000;
    /// PDE index 0x301, PTE index 0x2a, offset 0x123.
    const VA: u64 = (0x301 << 22) | (0x2a << 12) | 0x123;
    const PDE: u64 = PD + 0x301 * 4;
    const PTE: u64 = PT + 0x2a * 4;

    fn read(privilege: Privilege) -> Access {
        Access::new(AccessKind::Read, privilege)
    }

    #[test]
    fn four_kib_pages_with_4_byte_entries() {
        let mut m = SparseMemory::new();
        m.set32(PDE, PT as u32 | P | W | U);
        m.set32(
            PTE,
            0xabcd_e000 | P | U | pte::PAT_4K as u32 | pte::GLOBAL as u32,
        );
        let ctx = PagingContext {
            pge: true,
            ..plain_ctx()
        };
        let f = Paging32::new(Hpa::new(PD), ctx);
        let t = translate(&f, &mut m, Gva::new(VA), read(Privilege::User)).unwrap();
        assert_eq!(t.addr, Hpa::new(0xabcd_e123));
        assert_eq!(
            t.attrs,
            PageAttrs {
                global: true,
                pat_index: 4
            }
        );
        assert!(!t.rights.write && t.rights.user && t.rights.execute);
        assert_eq!(m.get32(PDE), PT as u32 | P | W | U | A);
        let w = Access::new(AccessKind::Write, Privilege::Supervisor);
        let t = translate(&f, &mut m, Gva::new(VA), w).unwrap();
        assert!(t.dirty);
        assert_eq!(m.get32(PTE) & (A | D), A | D);
        assert_eq!(m.get32(PDE) & D, 0);
    }

    #[test]
    fn ps_is_ignored_without_cr4_pse() {
        let mut m = SparseMemory::new();
        m.set32(PDE, PT as u32 | P | PS);
        m.set32(PTE, 0x5000 | P);
        let f = Paging32::new(Hpa::new(PD), plain_ctx());
        let t = translate(&f, &mut m, Gva::new(VA), read(Privilege::Supervisor)).unwrap();
        assert_eq!(t.size, PageSize::Size4K);
        assert_eq!(t.addr, Hpa::new(0x5123));
    }

    #[test]
    fn four_mib_pages_and_pse36() {
        let pse = |maxphyaddr| PagingContext {
            pse: true,
            maxphyaddr,
            ..plain_ctx()
        };
        let mut m = SparseMemory::new();
        // Address bits 35:32 = 0xf in PDE bits 16:13.
        m.set32(
            PDE,
            0xc040_0000 | (0xf << 13) | P | PS | pte::PAT_LARGE as u32,
        );
        let f = Paging32::new(Hpa::new(PD), pse(36));
        let t = translate(&f, &mut m, Gva::new(VA), read(Privilege::Supervisor)).unwrap();
        assert_eq!(t.size, PageSize::Size4M);
        assert_eq!(t.addr, Hpa::new(0xf_c040_0000 | (VA & 0x3f_ffff)));
        assert_eq!(t.attrs.pat_index, 4);
        // With MAXPHYADDR 32 those bits are reserved; bit 21 always is.
        let f = Paging32::new(Hpa::new(PD), pse(32));
        let r = translate(&f, &mut m, Gva::new(VA), read(Privilege::Supervisor));
        let rsvd = PageFault {
            error_code: pf_error::PRESENT | pf_error::RSVD,
            level: 2,
        };
        assert_eq!(r, Err(WalkError::Fault(rsvd)));
        m.set32(PDE, 0xc040_0000 | (1 << 21) | P | PS);
        let f = Paging32::new(Hpa::new(PD), pse(40));
        let r = translate(&f, &mut m, Gva::new(VA), read(Privilege::Supervisor));
        assert_eq!(r, Err(WalkError::Fault(rsvd)));
        // MAXPHYADDR above 40 still gives 4-MiB pages only 40 address bits: 8 high bits.
        m.set32(PDE, 0xc040_0000 | (0xff << 13) | P | PS);
        let f = Paging32::new(Hpa::new(PD), pse(52));
        let t = translate(&f, &mut m, Gva::new(VA), read(Privilege::Supervisor)).unwrap();
        assert_eq!(t.page, Hpa::new(0xff_c040_0000));
    }

    #[test]
    fn no_execute_disable_in_32_bit_paging() {
        let mut m = SparseMemory::new();
        m.set32(PDE, PT as u32 | P | W);
        m.map(PT);
        let ctx = PagingContext {
            nxe: true,
            ..plain_ctx()
        };
        let f = Paging32::new(Hpa::new(PD), ctx);
        let fetch = Access::new(AccessKind::Fetch, Privilege::User);
        // Not present PTE: I/D is not reported even with NXE (32-bit paging has no XD).
        let r = translate(&f, &mut m, Gva::new(VA), fetch);
        let want = PageFault {
            error_code: pf_error::USER,
            level: 1,
        };
        assert_eq!(r, Err(WalkError::Fault(want)));
        let smep = PagingContext { smep: true, ..ctx };
        let f = Paging32::new(Hpa::new(PD), smep);
        let r = translate(&f, &mut m, Gva::new(VA), fetch);
        let want = PageFault {
            error_code: pf_error::USER | pf_error::FETCH,
            level: 1,
        };
        assert_eq!(r, Err(WalkError::Fault(want)));
    }
}
