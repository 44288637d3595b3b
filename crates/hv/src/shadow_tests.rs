//! Property tests of the shadow MMU (issue 6 item 6): after any sequence of guest page-table
//! edits followed by the architectural flush, the translation the processor finds in the shadow
//! tables equals a fresh walk of the guest's tables, permissions and #PF error codes included.
//!
//! The "processor" here walks the shadow tables with `crates/paging` on every access (a
//! processor without a TLB, which the SDM allows) and hands its page faults to
//! [`ShadowMmu::page_fault`], as the VM does; writes to write-protected guest tables are
//! emulated as the VM does. The guest edits its tables through its own linear addresses (an
//! identity map of its RAM), so its writes take the write-protection, unsync and emulation
//! paths. Guests: 4-level, PAE and 32-bit paging, with CR0.WP and EFER.NXE both ways, two
//! address spaces that share some tables (the root cache), 4-KiB and large pages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use alloc::vec::Vec;

use paging::{
    Access, AccessKind, GuestPaging, Memory, MemoryError, PagingContext, PagingMode, Pdptes,
    Privilege, WalkError,
};
use proptest::prelude::*;
use x86::exception::pf_error;
use x86::paging::pte;
use x86::reg::{cr0, cr4, efer};
use x86::{Gpa, Gva, Hpa};

use crate::guest::RamLayout;
use crate::memory::{PhysMemory, VecMemory};
use crate::shadow::{Fault, GuestPagingState, ShadowConfig, ShadowMmu};

/// Guest RAM: 8 MiB at host-physical 0; shadow frames after it.
const RAM: u64 = 8 << 20;
const HOST: usize = 12 << 20;
/// Where the test region starts (linear): 1 GiB.
const REGION: u64 = 1 << 30;
/// Data frames the test's leaves map: [4 MiB, 8 MiB).
const DATA: u64 = 4 << 20;
const MAXPHYADDR: u8 = 39;

/// Page-table frames (guest-physical).
const ROOT: [u64; 2] = [0x1000, 0x2000];
const PDPT: [u64; 2] = [0x3000, 0x4000];
const PD_ID: u64 = 0x5000;
const PD: [u64; 2] = [0x6000, 0x7000];
/// The test region's page tables (four of them; 32-bit ones are 4 KiB as well).
const PT: [u64; 4] = [0x10000, 0x11000, 0x12000, 0x13000];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Bits32,
    Pae,
    Level4,
}

struct Machine {
    mem: VecMemory,
    mmu: ShadowMmu,
    st: GuestPagingState,
    mode: Mode,
    space: usize,
}

/// Host memory as `crates/paging` reads it (host-physical = the address).
struct Host<'a>(&'a mut VecMemory);

impl Memory<Gpa> for Host<'_> {
    fn read_u32(&mut self, a: Gpa) -> Result<u32, MemoryError<Gpa>> {
        let mut b = [0; 4];
        self.0
            .read(Hpa::new(a.raw()), &mut b)
            .map_err(|_| MemoryError { addr: a })?;
        Ok(u32::from_le_bytes(b))
    }
    fn read_u64(&mut self, a: Gpa) -> Result<u64, MemoryError<Gpa>> {
        self.0
            .read_u64(Hpa::new(a.raw()))
            .map_err(|_| MemoryError { addr: a })
    }
    fn write_u32(&mut self, a: Gpa, v: u32) -> Result<(), MemoryError<Gpa>> {
        self.0
            .write(Hpa::new(a.raw()), &v.to_le_bytes())
            .map_err(|_| MemoryError { addr: a })
    }
    fn write_u64(&mut self, a: Gpa, v: u64) -> Result<(), MemoryError<Gpa>> {
        self.0
            .write_u64(Hpa::new(a.raw()), v)
            .map_err(|_| MemoryError { addr: a })
    }
}

/// A walk of the tables at `cr3` in `mode`: the address or the #PF error code, and the
/// entries used (for the accessed/dirty checks). No flags are written.
fn walk(
    mem: &mut VecMemory,
    mode: PagingMode,
    cr3: u64,
    pdptes: Option<[u64; 4]>,
    ctx: PagingContext,
    gva: u64,
    access: Access,
) -> Result<(u64, Vec<u64>), u32> {
    let pdptes = pdptes.map(|p| Pdptes::new(p, 52).unwrap());
    let format = GuestPaging::<Gpa>::new(mode, cr3, pdptes, ctx).unwrap();
    let mut host = Host(mem);
    match format.translate(&mut host, Gva::new(gva), access) {
        Ok(t) => Ok((
            t.addr.raw(),
            t.path.steps().iter().map(|s| s.entry).collect(),
        )),
        Err(WalkError::Fault(pf)) => Err(pf.error_code),
        Err(WalkError::Table(e)) => panic!("walk outside memory: {e:?}"),
    }
}

impl Machine {
    fn new(mode: Mode, wp: bool, nxe: bool) -> Self {
        let mut mem = VecMemory::new(HOST, (RAM >> 12)..(HOST as u64 >> 12));
        let layout = RamLayout {
            base: Hpa::new(0),
            size: RAM,
        };
        let mmu = ShadowMmu::new(ShadowConfig {
            layout,
            maxphyaddr: MAXPHYADDR,
            gb_pages: true,
            max_pages: 64,
        });
        let rw = pte::PRESENT | pte::WRITABLE | pte::USER;
        let mut w = |at: u64, v: u64, wide: bool| {
            if wide {
                mem.write_u64(Hpa::new(at), v).unwrap();
            } else {
                mem.write(Hpa::new(at), &(v as u32).to_le_bytes()).unwrap();
            }
        };
        let cr4v;
        let mut efer_v = if nxe { efer::NXE } else { 0 };
        match mode {
            Mode::Level4 => {
                // Identity map of RAM with 2-MiB pages (supervisor), test region at 1 GiB.
                for s in 0..2 {
                    w(ROOT[s], PDPT[s] | rw, true);
                    w(PDPT[s], PD_ID | rw, true);
                    w(PDPT[s] + 8, PD[s] | rw, true);
                }
                for i in 0..4 {
                    w(
                        PD_ID + 8 * i,
                        (i << 21) | pte::PRESENT | pte::WRITABLE | pte::PAGE_SIZE,
                        true,
                    );
                }
                cr4v = cr4::PAE;
                efer_v |= efer::LME | efer::LMA;
            }
            Mode::Pae => {
                for s in 0..2 {
                    w(ROOT[s], PD_ID | pte::PRESENT, true);
                    w(ROOT[s] + 8, PD[s] | pte::PRESENT, true);
                }
                for i in 0..4 {
                    w(
                        PD_ID + 8 * i,
                        (i << 21) | pte::PRESENT | pte::WRITABLE | pte::PAGE_SIZE,
                        true,
                    );
                }
                cr4v = cr4::PAE;
            }
            Mode::Bits32 => {
                // The page directories are ROOT: entries 0 and 1 map 8 MiB with 4-MiB
                // pages, entries 256 and 257 are the test region.
                for root in ROOT {
                    for i in 0..2 {
                        w(
                            root + 4 * i,
                            (i << 22) | pte::PRESENT | pte::WRITABLE | pte::PAGE_SIZE,
                            false,
                        );
                    }
                }
                cr4v = cr4::PSE;
            }
        }
        let mut m = Self {
            mem,
            mmu,
            st: GuestPagingState {
                cr0: cr0::PE | cr0::PG | if wp { cr0::WP } else { 0 },
                cr3: ROOT[0],
                cr4: cr4v,
                efer: efer_v,
                pdptes: [0; 4],
            },
            mode,
            space: 0,
        };
        // The test region starts mapped through page tables, one of them shared by the two
        // address spaces.
        let table = pte::PRESENT | pte::WRITABLE | pte::USER | pte::ACCESSED;
        for (s, pts) in [(0, [PT[0], PT[1]]), (1, [PT[1], PT[2]])] {
            for (slot, pt) in (0..2).zip(pts) {
                let at = m.pde_addr(s, slot);
                m.store(at, pt | table, m.wide());
            }
        }
        m.load_cr3(0);
        m
    }

    /// The PTE index of test page `within` (0..16) of a slot: eight at the start of the
    /// table and eight further on (in the second quadrant of a 32-bit table).
    fn pte_index(&self, within: u64) -> u64 {
        let half = if self.wide() { 256 } else { 512 };
        within % 8 + if within >= 8 { half } else { 0 }
    }

    /// The linear address of test page `page` (0..32).
    fn page_addr(&self, page: u64) -> u64 {
        REGION + (page / 16) * self.slot_span() + self.pte_index(page % 16) * 4096
    }

    fn wide(&self) -> bool {
        self.mode != Mode::Bits32
    }

    /// Guest-physical address of the PDE of test slot `slot` (0 or 1) in space `s`.
    fn pde_addr(&self, s: usize, slot: u64) -> u64 {
        match self.mode {
            Mode::Bits32 => ROOT[s] + 4 * (256 + slot),
            _ => PD[s] + 8 * slot,
        }
    }

    /// Linear span of one test slot.
    fn slot_span(&self) -> u64 {
        if self.wide() { 2 << 20 } else { 4 << 20 }
    }

    fn load_cr3(&mut self, s: usize) {
        self.space = s;
        self.st.cr3 = ROOT[s];
        if self.mode == Mode::Pae {
            self.st.pdptes = self.mmu.load_pdptes(&mut self.mem, ROOT[s]).unwrap();
        }
        self.mmu.sync_all(&mut self.mem).unwrap();
        self.mmu.switch_root(&mut self.mem, &self.st).unwrap();
        self.mmu.take_flush();
    }

    fn guest_ctx(&self) -> PagingContext {
        PagingContext::from_registers(self.st.cr0, self.st.cr4, self.st.efer, 0, MAXPHYADDR, true)
            .unwrap()
    }

    /// What the guest's own tables say.
    fn reference(&mut self, gva: u64, access: Access) -> Result<(u64, Vec<u64>), u32> {
        let mode = self.st.mode();
        let pdptes = (mode == PagingMode::Pae).then_some(self.st.pdptes);
        let ctx = self.guest_ctx();
        walk(&mut self.mem, mode, self.st.cr3, pdptes, ctx, gva, access)
    }

    /// What the processor finds in the shadow tables (host-physical address or error code).
    fn shadow_walk(&mut self, gva: u64, access: Access) -> Result<u64, u32> {
        let root = self.mmu.root().unwrap().raw();
        let long = self.st.long();
        let real_cr4 = (self.st.cr4 & (cr4::SMEP | cr4::SMAP | cr4::PGE)) | cr4::PAE;
        let real_efer = self.st.efer & efer::NXE | if long { efer::LME | efer::LMA } else { 0 };
        let ctx = PagingContext::from_registers(
            cr0::PE | cr0::PG | cr0::WP,
            real_cr4,
            real_efer,
            0,
            52,
            true,
        )
        .unwrap();
        let (mode, pdptes) = if long {
            (PagingMode::Level4, None)
        } else {
            let mut p = [0u64; 4];
            for (i, e) in p.iter_mut().enumerate() {
                *e = self.mem.read_u64(Hpa::new(root + 8 * i as u64)).unwrap();
            }
            (PagingMode::Pae, Some(p))
        };
        walk(&mut self.mem, mode, root, pdptes, ctx, gva, access).map(|(a, _)| a)
    }

    /// One access by the "processor": walks the shadow, and on a fault lets the shadow MMU
    /// fix it, until the access goes through or the guest gets a #PF. A write stores `value`.
    fn access(&mut self, gva: u64, access: Access, value: Option<(u64, bool)>) -> Result<u64, u32> {
        for _ in 0..8 {
            match self.shadow_walk(gva, access) {
                Ok(hpa) => {
                    if let Some((v, wide)) = value {
                        self.store(hpa, v, wide);
                    }
                    return Ok(hpa);
                }
                Err(error) => {
                    assert_eq!(
                        error & pf_error::RSVD,
                        0,
                        "a reserved bit in a shadow entry"
                    );
                    let st = self.st;
                    let fault = self
                        .mmu
                        .page_fault(&mut self.mem, &st, gva, error, false, &|g| g < RAM)
                        .unwrap();
                    self.mmu.take_flush();
                    match fault {
                        Fault::Fixed => {}
                        Fault::Inject { error_code } => return Err(error_code),
                        Fault::Mmio { gpa } => panic!("MMIO at {gpa:?} in RAM"),
                        Fault::WriteTracked { gpa } => {
                            // The VM emulates the store, then reports it.
                            let (v, wide) = value.expect("a tracked write without a value");
                            self.store(gpa.raw(), v, wide);
                            self.mmu
                                .guest_wrote(&mut self.mem, gpa, if wide { 8 } else { 4 })
                                .unwrap();
                            return Ok(gpa.raw());
                        }
                    }
                }
            }
        }
        panic!("the access to {gva:#x} does not converge");
    }

    fn store(&mut self, at: u64, v: u64, wide: bool) {
        if wide {
            self.mem.write_u64(Hpa::new(at), v).unwrap();
        } else {
            self.mem
                .write(Hpa::new(at), &(v as u32).to_le_bytes())
                .unwrap();
        }
    }

    /// The guest writes entry `v` at guest-physical `gpa` of one of its tables, through its
    /// identity map (a supervisor write).
    fn edit(&mut self, gpa: u64, v: u64) {
        let wide = self.wide();
        let r = self.access(
            gpa,
            Access::new(AccessKind::Write, Privilege::Supervisor),
            Some((v, wide)),
        );
        assert_eq!(r, Ok(gpa), "the identity map is writable");
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Write the PTE of test page `within` (0..16) of test table `table` with a leaf made of
    /// `bits`.
    EditPte {
        table: usize,
        within: u64,
        bits: u16,
        frame: u64,
    },
    /// Write the PDE of test slot `slot` in space `space`: a table, a large page, or nothing.
    EditPde {
        space: usize,
        slot: u64,
        kind: u8,
        bits: u16,
    },
    /// An access to test page `page` (0..32).
    Access { page: u64, kind: u8, user: bool },
    /// INVLPG of test page `page`.
    Invlpg { page: u64 },
    /// MOV to CR3 of space `space`.
    LoadCr3 { space: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..4usize, 0..16u64, any::<u16>(), 0..1024u64)
            .prop_map(|(table, within, bits, frame)| Op::EditPte { table, within, bits, frame }),
        1 => (0..2usize, 0..2u64, 0..3u8, any::<u16>())
            .prop_map(|(space, slot, kind, bits)| Op::EditPde { space, slot, kind, bits }),
        6 => (0..32u64, 0..3u8, any::<bool>())
            .prop_map(|(page, kind, user)| Op::Access { page, kind, user }),
        1 => (0..32u64).prop_map(|page| Op::Invlpg { page }),
        1 => (0..2usize).prop_map(|space| Op::LoadCr3 { space }),
    ]
}

/// Flag bits from a random word: P (mostly set), W, U, A, D, G, and XD or a reserved bit
/// now and then.
fn flags(bits: u16, wide: bool) -> u64 {
    let mut f = 0;
    if bits & 7 != 0 {
        f |= pte::PRESENT;
    }
    for (b, flag) in [
        (3, pte::WRITABLE),
        (4, pte::USER),
        (5, pte::ACCESSED),
        (6, pte::DIRTY),
        (7, pte::GLOBAL),
    ] {
        if bits & (1 << b) != 0 {
            f |= flag;
        }
    }
    if wide && bits & (1 << 8) != 0 {
        f |= pte::XD;
    }
    if wide && bits & 0xfe00 == 0x1200 {
        f |= 1 << 45; // above MAXPHYADDR: reserved
    }
    f
}

fn run(mode: Mode, wp: bool, nxe: bool, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut m = Machine::new(mode, wp, nxe);
    let wide = m.wide();
    let entry = if wide { 8 } else { 4 };
    // Test pages (0..32) whose translation the guest changed without flushing it yet.
    let mut stale: alloc::collections::BTreeSet<u64> = Default::default();
    let pages = 32;
    for op in ops {
        match *op {
            Op::EditPte {
                table,
                within,
                bits,
                frame,
            } => {
                let v = (DATA + (frame << 12) % (RAM - DATA)) | flags(bits, wide);
                m.edit(PT[table] + entry * m.pte_index(within), v);
                // The test pages mapped through this table may change.
                for s in 0..2 {
                    for slot in 0..2 {
                        let pde = m.mem.read_u64(Hpa::new(m.pde_addr(s, slot))).unwrap();
                        let pde = if wide { pde } else { pde & 0xffff_ffff };
                        if pde & pte::PRESENT != 0
                            && pde & pte::PAGE_SIZE == 0
                            && pde & 0xffff_f000 == PT[table]
                        {
                            stale.insert(slot * 16 + within);
                        }
                    }
                }
            }
            Op::EditPde {
                space,
                slot,
                kind,
                bits,
            } => {
                let v = match kind {
                    0 => 0,
                    1 => {
                        PT[usize::from(bits as u8) % 4]
                            | flags(bits | 1, wide) & !(pte::PAGE_SIZE | pte::DIRTY | pte::GLOBAL)
                    }
                    _ => DATA | pte::PAGE_SIZE | flags(bits, wide),
                };
                let at = m.pde_addr(space, slot);
                let before = m.mem.read_u64(Hpa::new(at)).unwrap();
                m.edit(at, v);
                // A not-present entry is never cached (SDM Vol. 3A §4.10.2.3): only a present
                // one can leave stale translations behind.
                if before & pte::PRESENT != 0 {
                    stale.extend(slot * 16..(slot + 1) * 16);
                }
            }
            Op::Access { page, kind, user } => {
                let gva = m.page_addr(page) + 8 * (page % 7);
                let kind =
                    [AccessKind::Read, AccessKind::Write, AccessKind::Fetch][usize::from(kind)];
                let access = Access::new(
                    kind,
                    if user {
                        Privilege::User
                    } else {
                        Privilege::Supervisor
                    },
                );
                if stale.contains(&page) {
                    // The architecture allows the old translation or the new: either way the
                    // access must not confuse the MMU.
                    let _ = m.access(
                        gva,
                        access,
                        (kind == AccessKind::Write).then_some((0x5a, wide)),
                    );
                } else {
                    let want = m.reference(gva, access);
                    let got = m.access(gva, access, None);
                    prop_assert_eq!(
                        got,
                        want.clone().map(|(a, _)| a),
                        "{:?} {:?} at {:#x} ({:?})",
                        mode,
                        access,
                        gva,
                        op
                    );
                    if let Ok((_, entries)) = m.reference(gva, access) {
                        // The guest's entries record the access (SDM Vol. 3A §4.8).
                        let leaf = *entries.last().unwrap();
                        let checked = if mode == Mode::Pae {
                            &entries[1..]
                        } else {
                            &entries[..]
                        };
                        prop_assert!(
                            checked.iter().all(|e| e & pte::ACCESSED != 0),
                            "A not set: {:x?}",
                            entries
                        );
                        if kind == AccessKind::Write {
                            prop_assert!(leaf & pte::DIRTY != 0, "D not set: {:#x}", leaf);
                        }
                    }
                }
            }
            Op::Invlpg { page } => {
                let gva = m.page_addr(page);
                m.mmu.invlpg(&mut m.mem, gva).unwrap();
                m.mmu.take_flush();
                stale.remove(&page);
            }
            Op::LoadCr3 { space } => {
                m.load_cr3(space);
                stale.clear();
            }
        }
        m.mmu
            .check_invariants(&mut m.mem)
            .map_err(|e| TestCaseError::fail(alloc::format!("{e} after {op:?}")))?;
    }
    // The final flush: everything agrees.
    let space = m.space;
    m.load_cr3(space);
    for page in 0..pages {
        let gva = m.page_addr(page);
        for kind in [AccessKind::Read, AccessKind::Write] {
            let access = Access::new(kind, Privilege::Supervisor);
            let want = m.reference(gva, access).map(|(a, _)| a);
            prop_assert_eq!(
                m.access(gva, access, None),
                want,
                "{:?} after the flush at {:#x}",
                mode,
                gva
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn level4_shadow_equals_the_guest_walk(wp: bool, nxe: bool, ops in proptest::collection::vec(op(), 1..80)) {
        run(Mode::Level4, wp, nxe, &ops)?;
    }

    #[test]
    fn pae_shadow_equals_the_guest_walk(wp: bool, nxe: bool, ops in proptest::collection::vec(op(), 1..80)) {
        run(Mode::Pae, wp, nxe, &ops)?;
    }

    #[test]
    fn bits32_shadow_equals_the_guest_walk(wp: bool, ops in proptest::collection::vec(op(), 1..80)) {
        run(Mode::Bits32, wp, false, &ops)?;
    }
}

#[test]
fn a_write_to_a_leaf_table_makes_it_unsync_and_a_flush_resyncs_it() {
    let mut m = Machine::new(Mode::Level4, true, false);
    let rw = pte::PRESENT | pte::WRITABLE | pte::USER;
    m.edit(PD[0], PT[0] | rw);
    m.edit(PT[0], DATA | rw);
    let read = Access::new(AccessKind::Read, Privilege::Supervisor);
    assert_eq!(m.access(REGION, read, None), Ok(DATA));
    // PT[0] is now a shadowed leaf table: the next write to it goes unsync, not emulated.
    let before = m.mmu.counters().clone();
    m.edit(PT[0], (DATA + 0x1000) | rw);
    let after = m.mmu.counters().clone();
    assert_eq!(after.unsync, before.unsync + 1, "{after:?}");
    assert_eq!(after.wp_emulations, before.wp_emulations);
    // Without a flush the shadow may keep the old translation (a TLB may too).
    assert_eq!(m.access(REGION, read, None), Ok(DATA));
    m.load_cr3(0);
    assert_eq!(m.mmu.counters().resync, before.resync + 1);
    assert_eq!(m.access(REGION, read, None), Ok(DATA + 0x1000));
}

#[test]
fn a_write_to_a_directory_is_emulated_and_a_root_comes_back_from_the_cache() {
    let mut m = Machine::new(Mode::Level4, true, false);
    let rw = pte::PRESENT | pte::WRITABLE | pte::USER;
    m.edit(PD[0], PT[0] | rw);
    m.edit(PT[0], DATA | rw);
    let read = Access::new(AccessKind::Read, Privilege::Supervisor);
    assert_eq!(m.access(REGION, read, None), Ok(DATA));
    let before = m.mmu.counters().clone();
    // PD[0] is an upper-level table: writes to it are emulated.
    m.edit(PD[0] + 8, PT[1] | rw);
    assert_eq!(m.mmu.counters().wp_emulations, before.wp_emulations + 1);
    m.load_cr3(1);
    m.load_cr3(0);
    let c = m.mmu.counters();
    assert_eq!(
        (c.roots_built, c.roots_reused),
        (before.roots_built + 1, before.roots_reused + 1)
    );
}

#[test]
fn a_guest_fault_is_injected_with_the_guests_error_code() {
    let mut m = Machine::new(Mode::Pae, true, true);
    let user_write = Access::new(AccessKind::Write, Privilege::User);
    // Nothing mapped at the test region: not present, user write.
    assert_eq!(
        m.access(REGION, user_write, Some((1, true))),
        Err(pf_error::WRITE | pf_error::USER)
    );
    // A read-only user page: a user write is a protection fault.
    m.edit(PD[0], PT[0] | pte::PRESENT | pte::WRITABLE | pte::USER);
    m.edit(PT[0], DATA | pte::PRESENT | pte::USER);
    assert_eq!(
        m.access(REGION, user_write, Some((1, true))),
        Err(pf_error::PRESENT | pf_error::WRITE | pf_error::USER)
    );
}
