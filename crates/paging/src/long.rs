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

use crate::guest::{Access, AccessKind, PageAttrs, PageFault, PageRights, PagingContext};
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

/// A translation found by [`LongMode::quick_translate`]: [`Translation`](crate::Translation)'s
/// fields but the address of the byte, the level and the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuickTranslation<P> {
    /// The first byte of the page.
    pub page: P,
    /// The size of the page.
    pub size: PageSize,
    /// The rights of the translation: the intersection over every entry used.
    pub rights: PageRights,
    /// Attributes of the leaf.
    pub attrs: PageAttrs,
    /// The leaf's dirty flag.
    pub dirty: bool,
}

impl<P: Address, const LEVELS: u8> LongMode<P, LEVELS> {
    /// The common TLB miss without the generic walker's bookkeeping: the translation of
    /// `input` for `access` when every entry of the walk is present, has no reserved bit set
    /// and already has its accessed flag (and for a write the leaf its dirty flag), and the
    /// rights permit the access. [`translate`](crate::translate) would then read the same
    /// entries, write nothing and return the same translation. In every other case, a fault
    /// or a flag to set, this returns `None` and the caller walks with `translate`. `read`
    /// reads the 8-byte entry at an address, `None` when that is not plain memory.
    #[inline]
    pub fn quick_translate(
        &self,
        input: Gva,
        access: Access,
        mut read: impl FnMut(P) -> Option<u64>,
    ) -> Option<QuickTranslation<P>> {
        // Reserved in every entry: bits 51:MAXPHYADDR, and XD without IA32_EFER.NXE.
        let reserved = self.ctx.reserved_51_m() | if self.ctx.nxe { 0 } else { pte::XD };
        let mut table = self.root.to_raw();
        let mut level = LEVELS;
        // The rights are the intersection over the entries (`PageRights::intersect`): R/W and
        // U/S of all of them, XD of any.
        let (mut all, mut any) = (u64::MAX, 0);
        loop {
            let index = (input.raw() >> (12 + 9 * (u32::from(level) - 1))) & 0x1ff;
            let entry = read(P::from_raw(table | (index * 8)))?;
            let needed = pte::PRESENT | pte::ACCESSED;
            if entry & needed != needed || entry & reserved != 0 {
                return None;
            }
            all &= entry;
            any |= entry;
            let size = match level {
                1 => PageSize::Size4K,
                _ if entry & pte::PAGE_SIZE == 0 => {
                    table = entry & pte::ADDR_MASK;
                    level -= 1;
                    continue;
                }
                2 if entry & RESERVED_2M == 0 => PageSize::Size2M,
                3 if self.ctx.gb_pages && entry & RESERVED_1G == 0 => PageSize::Size1G,
                // PS in a PML5E or PML4E, a PDPTE without 1-GiB pages, or reserved bits of a
                // large page.
                _ => return None,
            };
            let rights = PageRights {
                write: all & pte::WRITABLE != 0,
                user: all & pte::USER != 0,
                execute: !(self.ctx.nxe && any & pte::XD != 0),
            };
            let dirty = entry & pte::DIRTY != 0;
            let writes = matches!(access.kind, AccessKind::Write);
            if (writes && !dirty) || !rights.permit(&self.ctx, access) {
                return None;
            }
            return Some(QuickTranslation {
                page: P::from_raw(entry & pte::ADDR_MASK & !size.offset_mask()),
                size,
                rights,
                attrs: self.attrs(entry, size),
                dirty,
            });
        }
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
        let xd_reserved = !self.ctx.nxe && entry & pte::XD != 0;
        if entry & self.ctx.reserved_51_m() != 0 || xd_reserved {
            return Decoded::Reserved;
        }
        let size = match level {
            1 => PageSize::Size4K,
            _ if entry & pte::PAGE_SIZE == 0 => {
                return Decoded::Table {
                    table: P::from_raw(entry & pte::ADDR_MASK),
                    rights,
                };
            }
            2 => PageSize::Size2M,
            3 if self.ctx.gb_pages => PageSize::Size1G,
            // PS in a PML5E or PML4E, or in a PDPTE without 1-GiB pages.
            _ => return Decoded::Reserved,
        };
        let size_reserved = match size {
            PageSize::Size1G => RESERVED_1G,
            PageSize::Size2M => RESERVED_2M,
            _ => 0,
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

    crate::guest::guest_format_rules!();
}

#[cfg(test)]
mod tests {
    use x86::Gpa;
    use x86::exception::pf_error;

    use super::*;
    use crate::guest::{AccessKind, Privilege};
    use crate::test_utils::{SparseMemory, plain_ctx};
    use crate::walk::{WalkError, translate};

    const P: u64 = pte::PRESENT;
    const W: u64 = pte::WRITABLE;
    const U: u64 = pte::USER;
    const A: u64 = pte::ACCESSED;
    const D: u64 = pte::DIRTY;
    const PS: u64 = pte::PAGE_SIZE;

    const PML4: u64 = 0x1000;
    const PDPT: u64 = 0x2000;
    const PD: u64 = 0x3000;
    const PT: u64 = 0x4000;
    const PAGE: u64 = 0x0012_3000;
    /// PML4 index 1, PDPT index 2, PD index 3, PT index 4, offset 0x567.
    const VA: u64 = (1 << 39) | (2 << 30) | (3 << 21) | (4 << 12) | 0x567;

    fn entry(table: u64, level: u32) -> u64 {
        let index = (VA >> (12 + 9 * (level - 1))) & 0x1ff;
        table + index * 8
    }

    /// Four levels mapping VA to PAGE with `flags` in every entry.
    fn tables(flags: u64) -> SparseMemory {
        let mut m = SparseMemory::new();
        m.set64(entry(PML4, 4), PDPT | flags);
        m.set64(entry(PDPT, 3), PD | flags);
        m.set64(entry(PD, 2), PT | flags);
        m.set64(entry(PT, 1), PAGE | flags);
        m
    }

    fn go(
        m: &mut SparseMemory,
        ctx: PagingContext,
        kind: AccessKind,
        privilege: Privilege,
    ) -> Result<crate::GuestTranslation<Gpa>, WalkError<PageFault, crate::MemoryError<Gpa>>> {
        let f = Paging4::new(Gpa::new(PML4), ctx);
        translate(&f, m, Gva::new(VA), Access::new(kind, privilege))
    }

    fn pf(
        r: Result<crate::GuestTranslation<Gpa>, WalkError<PageFault, crate::MemoryError<Gpa>>>,
    ) -> (u32, Level) {
        match r {
            Err(WalkError::Fault(f)) => (f.error_code, f.level),
            other => panic!("expected #PF, got {other:?}"),
        }
    }

    #[test]
    fn four_kib_translation_sets_accessed_and_dirty() {
        let mut m = tables(P | W | U);
        let t = go(&mut m, plain_ctx(), AccessKind::Read, Privilege::User).unwrap();
        assert_eq!(t.addr, Gpa::new(PAGE | 0x567));
        assert_eq!(t.size, PageSize::Size4K);
        assert_eq!(t.level, 1);
        assert_eq!(t.leaf_addr(), Some(Gpa::new(entry(PT, 1))));
        assert!(!t.dirty);
        assert_eq!(t.path.steps().len(), 4);
        assert_eq!(m.get64(entry(PML4, 4)), PDPT | P | W | U | A);
        assert_eq!(m.get64(entry(PT, 1)), PAGE | P | W | U | A);
        let t = go(&mut m, plain_ctx(), AccessKind::Write, Privilege::User).unwrap();
        assert!(t.dirty);
        // D only in the leaf.
        assert_eq!(m.get64(entry(PD, 2)), PT | P | W | U | A);
        assert_eq!(m.get64(entry(PT, 1)), PAGE | P | W | U | A | D);
    }

    #[test]
    fn large_pages() {
        let mut m = tables(P | W);
        m.set64(
            entry(PD, 2),
            0x4060_0000 | P | W | PS | pte::PAT_LARGE | pte::GLOBAL,
        );
        let ctx = PagingContext {
            pge: true,
            ..plain_ctx()
        };
        let t = go(&mut m, ctx, AccessKind::Write, Privilege::Supervisor).unwrap();
        assert_eq!(t.size, PageSize::Size2M);
        assert_eq!(t.addr, Gpa::new(0x4060_0000 | (VA & 0x1f_ffff)));
        assert_eq!(
            t.attrs,
            PageAttrs {
                global: true,
                pat_index: 4
            }
        );
        assert_eq!(m.get64(entry(PD, 2)) & (A | D), A | D);

        m.set64(entry(PDPT, 3), 0x8000_0000 | P | W | PS);
        let t = go(&mut m, plain_ctx(), AccessKind::Read, Privilege::Supervisor).unwrap();
        assert_eq!(t.size, PageSize::Size1G);
        assert_eq!(t.level, 3);
        assert_eq!(t.addr, Gpa::new(0x8000_0000 | (VA & 0x3fff_ffff)));
        assert_eq!(
            t.attrs,
            PageAttrs {
                global: false,
                pat_index: 0
            }
        );
    }

    #[test]
    fn reserved_bits_fault_with_rsvd() {
        let rsvd = pf_error::PRESENT | pf_error::RSVD;
        let ctx = PagingContext {
            maxphyaddr: 40,
            ..plain_ctx()
        };
        // Bits 51:MAXPHYADDR.
        let mut m = tables(P | W);
        m.set64(entry(PT, 1), PAGE | P | (1 << 45));
        assert_eq!(
            pf(go(&mut m, ctx, AccessKind::Read, Privilege::Supervisor)),
            (rsvd, 1)
        );
        // Bits 62:52 are ignored.
        m.set64(entry(PT, 1), PAGE | P | (0x7ff << 52));
        assert!(go(&mut m, ctx, AccessKind::Read, Privilege::Supervisor).is_ok());
        // XD reserved with NXE = 0 (a write fault reports W/R too).
        m.set64(entry(PDPT, 3), PD | P | W | pte::XD);
        let r = go(&mut m, ctx, AccessKind::Write, Privilege::Supervisor);
        assert_eq!(pf(r), (rsvd | pf_error::WRITE, 3));
        // PS in a PML4E.
        let mut m = tables(P | W);
        m.set64(entry(PML4, 4), PDPT | P | PS);
        assert_eq!(
            pf(go(&mut m, ctx, AccessKind::Read, Privilege::Supervisor)),
            (rsvd, 4)
        );
        // 1-GiB page without support, and misaligned large pages.
        let mut m = tables(P | W);
        m.set64(entry(PDPT, 3), 0x8000_0000 | P | PS);
        let no1g = PagingContext {
            gb_pages: false,
            ..ctx
        };
        assert_eq!(
            pf(go(&mut m, no1g, AccessKind::Read, Privilege::Supervisor)),
            (rsvd, 3)
        );
        m.set64(entry(PDPT, 3), 0x8000_2000 | P | PS);
        assert_eq!(
            pf(go(&mut m, ctx, AccessKind::Read, Privilege::Supervisor)),
            (rsvd, 3)
        );
        let mut m = tables(P | W);
        m.set64(entry(PD, 2), 0x4060_2000 | P | PS);
        assert_eq!(
            pf(go(&mut m, ctx, AccessKind::Read, Privilege::Supervisor)),
            (rsvd, 2)
        );
        // The PAT bit of a large page is not reserved.
        m.set64(entry(PD, 2), 0x4060_1000 | P | PS);
        assert!(go(&mut m, ctx, AccessKind::Read, Privilege::Supervisor).is_ok());
    }

    #[test]
    fn not_present_and_reserved_take_precedence_over_rights() {
        // A supervisor-only PML4E does not stop the walk: the not-present PTE decides.
        let mut m = tables(P | W | U);
        m.set64(entry(PML4, 4), PDPT | P | W);
        m.set64(entry(PT, 1), 0);
        assert_eq!(
            pf(go(&mut m, plain_ctx(), AccessKind::Write, Privilege::User)),
            (0b110, 1)
        );
        m.set64(entry(PT, 1), PAGE | P | (1 << 51));
        let ctx = PagingContext {
            maxphyaddr: 46,
            ..plain_ctx()
        };
        assert_eq!(
            pf(go(&mut m, ctx, AccessKind::Write, Privilege::User)),
            (0b1111, 1)
        );
        m.set64(entry(PT, 1), PAGE | P | W | U);
        assert_eq!(
            pf(go(&mut m, plain_ctx(), AccessKind::Write, Privilege::User)),
            (0b111, 1)
        );
    }

    #[test]
    fn faults_leave_accessed_flags_alone() {
        let mut m = tables(P | U);
        let before = m.clone();
        let r = go(&mut m, plain_ctx(), AccessKind::Write, Privilege::User);
        assert_eq!(pf(r), (0b111, 1));
        for level in (1..=4).rev() {
            let table = [PT, PD, PDPT, PML4][level as usize - 1];
            assert_eq!(
                m.get64(entry(table, level)),
                before.get64(entry(table, level))
            );
        }
    }

    #[test]
    fn execute_disable_and_fetch_error_code() {
        let ctx = PagingContext {
            nxe: true,
            ..plain_ctx()
        };
        let mut m = tables(P | W | U);
        m.set64(entry(PD, 2), PT | P | W | U | pte::XD);
        let r = go(&mut m, ctx, AccessKind::Fetch, Privilege::User);
        assert_eq!(
            pf(r),
            (pf_error::PRESENT | pf_error::USER | pf_error::FETCH, 1)
        );
        let t = go(&mut m, ctx, AccessKind::Read, Privilege::User).unwrap();
        assert!(!t.rights.execute);
        // Not-present fetches report I/D when NXE = 1 or SMEP = 1, not otherwise.
        m.set64(entry(PD, 2), PT | P | W | U);
        m.set64(entry(PT, 1), 0);
        assert_eq!(
            pf(go(&mut m, ctx, AccessKind::Fetch, Privilege::Supervisor)),
            (0x10, 1)
        );
        let r = go(
            &mut m,
            plain_ctx(),
            AccessKind::Fetch,
            Privilege::Supervisor,
        );
        assert_eq!(pf(r), (0, 1));
        let smep = PagingContext {
            smep: true,
            ..plain_ctx()
        };
        assert_eq!(
            pf(go(&mut m, smep, AccessKind::Fetch, Privilege::Supervisor)),
            (0x10, 1)
        );
    }

    #[test]
    fn supervisor_rules_wp_smep_smap() {
        let mut m = tables(P | U);
        // WP = 0: supervisor writes to read-only pages succeed, and set D.
        let t = go(
            &mut m,
            plain_ctx(),
            AccessKind::Write,
            Privilege::Supervisor,
        )
        .unwrap();
        assert!(t.dirty);
        let wp = PagingContext {
            wp: true,
            ..plain_ctx()
        };
        assert_eq!(
            pf(go(&mut m, wp, AccessKind::Write, Privilege::Supervisor)),
            (0b011, 1)
        );
        let smap = PagingContext {
            smap: true,
            ..plain_ctx()
        };
        assert_eq!(
            pf(go(&mut m, smap, AccessKind::Read, Privilege::Supervisor)),
            (0b001, 1)
        );
        let ac = PagingContext { ac: true, ..smap };
        assert!(go(&mut m, ac, AccessKind::Read, Privilege::Supervisor).is_ok());
        // Implicit accesses ignore AC and report U/S = 0.
        assert_eq!(
            pf(go(&mut m, ac, AccessKind::Read, Privilege::Implicit)),
            (0b001, 1)
        );
        let smep = PagingContext {
            smep: true,
            ..plain_ctx()
        };
        assert_eq!(
            pf(go(&mut m, smep, AccessKind::Fetch, Privilege::Supervisor)),
            (0x11, 1)
        );
    }

    #[test]
    fn unbacked_tables_are_errors() {
        let mut m = tables(P | W);
        m.set64(entry(PD, 2), 0xdead_0000 | P | W);
        assert_eq!(
            go(&mut m, plain_ctx(), AccessKind::Read, Privilege::Supervisor),
            Err(WalkError::Table(crate::MemoryError {
                addr: Gpa::new(0xdead_0000 + 4 * 8)
            }))
        );
    }

    #[test]
    fn self_referencing_tables_end() {
        // Every entry points back at the PML4: the walk reads four entries and ends with a
        // "page" at the PML4.
        let mut m = SparseMemory::new();
        for i in 0..512 {
            m.set64(PML4 + i * 8, PML4 | P | W);
        }
        let f = Paging4::new(Gpa::new(PML4), plain_ctx());
        let t = translate(
            &f,
            &mut m,
            Gva::new(VA),
            Access::new(AccessKind::Read, Privilege::Supervisor),
        )
        .unwrap();
        assert_eq!(t.addr, Gpa::new(PML4 | 0x567));
        // All-ones entries: reserved bits.
        let mut m = SparseMemory::new();
        for i in 0..512 {
            m.set64(PML4 + i * 8, u64::MAX);
        }
        let r = translate(
            &f,
            &mut m,
            Gva::new(VA),
            Access::new(AccessKind::Read, Privilege::User),
        );
        assert_eq!(
            r.unwrap_err(),
            WalkError::Fault(PageFault {
                error_code: 0b1101,
                level: 4
            })
        );
    }

    #[test]
    fn five_level_paging() {
        let pml5 = 0x9000;
        let va5 = VA | (7 << 48);
        let mut m = tables(P | W | U);
        m.set64(pml5 + 7 * 8, PML4 | P | W | U);
        let f = Paging5::new(Gpa::new(pml5), plain_ctx());
        let t = translate(
            &f,
            &mut m,
            Gva::new(va5),
            Access::new(AccessKind::Read, Privilege::User),
        )
        .unwrap();
        assert_eq!(t.addr, Gpa::new(PAGE | 0x567));
        assert_eq!(t.path.steps().len(), 5);
        assert_eq!(m.get64(pml5 + 7 * 8) & A, A);
        // PS in a PML5E is reserved.
        m.set64(pml5 + 7 * 8, PML4 | P | PS);
        let r = translate(
            &f,
            &mut m,
            Gva::new(va5),
            Access::new(AccessKind::Read, Privilege::User),
        );
        assert_eq!(
            r.unwrap_err(),
            WalkError::Fault(PageFault {
                error_code: 0b1101,
                level: 5
            })
        );
    }

    mod quick {
        use proptest::prelude::*;

        use super::*;

        /// The flags an entry of the test walk may carry: the rights, accessed and dirty, PS,
        /// G, XD and a bit that is reserved below MAXPHYADDR 52.
        fn flags() -> impl Strategy<Value = u64> {
            let bit = |b: u64, p: f64| {
                proptest::bool::weighted(p).prop_map(move |on| if on { b } else { 0 })
            };
            (
                (
                    bit(P, 0.95),
                    bit(W, 0.8),
                    bit(U, 0.8),
                    bit(A, 0.9),
                    bit(D, 0.8),
                ),
                (
                    bit(PS, 0.1),
                    bit(pte::GLOBAL, 0.3),
                    bit(pte::XD, 0.2),
                    bit(1 << 45, 0.03),
                ),
            )
                .prop_map(|((p, w, u, a, d), (ps, g, xd, r))| p | w | u | a | d | ps | g | xd | r)
        }

        fn access() -> impl Strategy<Value = Access> {
            let kinds = [AccessKind::Read, AccessKind::Write, AccessKind::Fetch];
            let privileges = [Privilege::User, Privilege::Supervisor, Privilege::Implicit];
            (0..3usize, 0..3usize).prop_map(move |(k, p)| Access::new(kinds[k], privileges[p]))
        }

        fn ctx() -> impl Strategy<Value = PagingContext> {
            proptest::collection::vec(any::<bool>(), 8).prop_map(|b| PagingContext {
                wp: b[0],
                pse: false,
                pge: b[1],
                smep: b[2],
                smap: b[3],
                nxe: b[4],
                ac: b[5],
                maxphyaddr: if b[6] { 40 } else { 52 },
                gb_pages: b[7],
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// `quick_translate` answers exactly when `translate` succeeds without writing a
            /// flag, and then with the same translation.
            #[test]
            fn quick_translate_agrees_with_the_walk(
                f4 in flags(), f3 in flags(), f2 in flags(), f1 in flags(),
                misaligned in any::<bool>(),
                ctx in ctx(),
                access in access(),
            ) {
                let mut m = SparseMemory::new();
                let slots = [entry(PML4, 4), entry(PDPT, 3), entry(PD, 2), entry(PT, 1)];
                // Large pages at 1 GiB and 2 MiB, aligned or not.
                let odd = if misaligned { 0x2000 } else { 0 };
                let targets = [PDPT, 0x4000_0000 | odd, 0x4060_0000 | odd, PAGE];
                let fallbacks = [PDPT, PD, PT, PAGE];
                for (level, (&slot, f)) in slots.iter().zip([f4, f3, f2, f1]).enumerate() {
                    let large = f & PS != 0 && level > 0;
                    let target = if large { targets[level] } else { fallbacks[level] };
                    m.set64(slot, target | f);
                }
                m.map(PAGE);
                let before = slots.map(|a| m.get64(a));
                let f = Paging4::new(Gpa::new(PML4), ctx);
                let quick = f.quick_translate(Gva::new(VA), access, |a: Gpa| m.try_get64(a.raw()));
                let walked = translate(&f, &mut m, Gva::new(VA), access);
                let after = slots.map(|a| m.get64(a));
                match (quick, walked) {
                    (Some(q), Ok(t)) => {
                        prop_assert_eq!(before, after, "the quick case writes nothing");
                        prop_assert_eq!(q.page, t.page);
                        prop_assert_eq!(q.size, t.size);
                        prop_assert_eq!(q.rights, t.rights);
                        prop_assert_eq!(q.attrs, t.attrs);
                        prop_assert_eq!(q.dirty, t.dirty);
                    }
                    (Some(q), Err(e)) => prop_assert!(false, "quick {q:?} but the walk {e:?}"),
                    (None, Ok(_)) => prop_assert_ne!(before, after, "a walk that wrote nothing"),
                    (None, Err(_)) => {}
                }
            }
        }
    }
}
