//! Shadow paging (issue 6, `--mmu shadow`): the guest runs on its own page tables while the
//! processor, with EPT off, walks tables the hypervisor builds from them, as KVM's shadow MMU
//! does (`mmu.c`, `paging_tmpl.h`; `../shared/reference/nested-vmx-anchor.md` §3).
//!
//! - **Shadow pages** hold 512 shadow entries (SPTEs) and are keyed by the guest frame they
//!   shadow (gfn) and a [`Role`]: level, quadrant (a 1024-entry 32-bit guest table needs two
//!   shadow leaf pages, and a 32-bit page directory four shadow directories), whether the page
//!   is *direct* (it covers a linear gfn range: a guest large page, or memory with paging off),
//!   the access the upper guest entries grant, and the guest-paging controls that change how a
//!   guest entry translates (CR0.WP, EFER.NXE, CR4.PSE, the entry width).
//! - **The real paging mode** is 4-level paging for a guest in IA-32e mode and PAE paging
//!   otherwise (32-bit, PAE and paging-off guests alike; a PAE root of four entries below
//!   4 GiB points at the shadow directories). The processor runs with CR0.PG and CR0.WP set
//!   whatever the guest's view (`vm_shadow.rs` keeps the view).
//! - **Faults** ([`ShadowMmu::page_fault`]): the guest's tables are walked in software
//!   (`crates/paging`, setting the guest's accessed and dirty flags as the processor would);
//!   a guest fault is returned for injection; otherwise the shadow path is built and the leaf
//!   set. SPTE rights are the AND over the guest walk; clean guest leaves are mapped read-only
//!   so that the first write sets D (SDM Vol. 3A §4.8); CR0.WP = 0 is emulated with the host's
//!   WP kept at 1 (a supervisor write to a read-only page gets a writable, supervisor-only
//!   SPTE).
//! - **Write protection**: every gfn with a shadow page of a guest table is mapped read-only
//!   (a reverse map finds its SPTEs). A write to it faults and is emulated by the VM
//!   ([`Fault::WriteTracked`]), after which [`ShadowMmu::guest_wrote`] zaps the SPTEs the
//!   written guest entries produced; three emulated writes in a row without the page being used
//!   unshadow it (KVM's write-flood heuristic).
//! - **Unsync leaves**: a write to a gfn whose shadow pages are all 4-KiB leaf tables does not
//!   emulate: the pages are marked unsync and the gfn mapped writable. They are resynchronised
//!   at the architectural flush points (SDM Vol. 3A §4.10.4.1): MOV to CR3, INVPCID of a
//!   context or all, a change of CR4.PGE or of the paging mode, and for one entry INVLPG
//!   ([`ShadowMmu::sync_all`], [`ShadowMmu::invlpg`]).
//! - **Root cache**: the current root and three previous ones, keyed by guest CR3 (and PDPTEs
//!   and mode), so that a process switch back to a recent address space reuses its root.
//! - **Budget**: at most [`ShadowConfig::max_pages`] shadow pages; past it everything is zapped
//!   and rebuilt on demand.
//!
//! The processor's TLB caches shadow translations under the guest's VPID: the MMU reports the
//! invalidations its own changes need ([`Flush`]) and the VM performs them with INVVPID.
//! Stale entries it does not flush are exactly those the guest itself has not flushed yet,
//! which the architecture allows the processor to keep.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use paging::{
    Access, AccessKind, Direct, GuestPaging, Memory, MemoryError, PageRights, PagingContext,
    PagingMode, Pdptes, Privilege, WalkError, load_pdptes,
};
use x86::exception::pf_error;
use x86::paging::pte;
use x86::reg::{cr0, cr4, efer};
use x86::{Gpa, Gva, Hfn, Hpa};

use crate::guest::RamLayout;
use crate::memory::PhysMemory;

/// The bits of a 64-bit SPTE's address field.
const SPTE_ADDR: u64 = pte::ADDR_MASK;
/// The permissions of a shadow entry that references a shadow table: everything is decided
/// at the leaf, where the guest walk's combined rights go.
const LINK: u64 = pte::PRESENT | pte::WRITABLE | pte::USER | pte::ACCESSED;
/// Emulated writes to a shadowed table, without a fault through it in between, after which
/// the table is unshadowed (KVM's `write_flooding_count`).
const FLOOD_WRITES: u8 = 3;
/// Roots kept: the current one and three previous (KVM's `prev_roots`).
const ROOTS: usize = 4;

/// The guest's paging registers, as the guest sees them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestPagingState {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// IA32_EFER (with LMA as the guest's mode has it).
    pub efer: u64,
    /// The PDPTE registers, loaded at the last MOV to CR3 (or CR0/CR4) in PAE paging.
    pub pdptes: [u64; 4],
}

impl GuestPagingState {
    /// The paging mode these registers select.
    pub fn mode(&self) -> PagingMode {
        PagingMode::from_registers(self.cr0, self.cr4, self.efer)
    }

    /// Whether the processor runs the guest with 4-level paging (IA-32e mode) rather than
    /// PAE paging.
    pub fn long(&self) -> bool {
        self.efer & efer::LMA != 0
    }
}

/// The guest-paging controls that change how a guest entry translates: a shadow page built
/// under one value never serves another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Context {
    mode: u8,
    wp: bool,
    nxe: bool,
    pse: bool,
    pge: bool,
}

impl Context {
    fn of(st: &GuestPagingState) -> Self {
        Self {
            mode: match st.mode() {
                PagingMode::Disabled => 0,
                PagingMode::Bits32 => 1,
                PagingMode::Pae => 2,
                PagingMode::Level4 => 3,
                PagingMode::Level5 => 4,
            },
            wp: st.cr0 & cr0::WP != 0,
            nxe: st.efer & efer::NXE != 0,
            pse: st.cr4 & cr4::PSE != 0,
            pge: st.cr4 & cr4::PGE != 0,
        }
    }

    fn gpte32(self) -> bool {
        self.mode == 1
    }
}

/// Rights as three bits (W, U, X), for roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rights(u8);

impl Rights {
    const ALL: Self = Self(7);

    fn of(r: PageRights) -> Self {
        Self(u8::from(r.write) | (u8::from(r.user) << 1) | (u8::from(r.execute) << 2))
    }

    fn and(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    fn write(self) -> bool {
        self.0 & 1 != 0
    }

    fn user(self) -> bool {
        self.0 & 2 != 0
    }

    fn execute(self) -> bool {
        self.0 & 4 != 0
    }
}

/// Everything besides the gfn that decides what a shadow page holds (anchor §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Role {
    /// 1 (page table) … 4 (PML4); 3 with `pae_root` for the four-entry PAE root.
    level: u8,
    /// The page covers a linear gfn range instead of shadowing a guest table.
    direct: bool,
    /// The PAE root of a 32-bit, PAE or paging-off guest (never shared, never keyed).
    pae_root: bool,
    /// Which part of a 1024-entry 32-bit guest table the page shadows.
    quadrant: u8,
    /// The rights the guest entries above grant.
    access: Rights,
    ctx: Context,
}

/// A shadow page's key.
type Key = (u64, Role);

/// A shadow entry's place: the shadow page's frame and the index in it.
type Slot = (Hfn, u16);

#[derive(Debug)]
struct ShadowPage {
    gfn: u64,
    role: Role,
    /// Shadow entries that reference this page.
    parents: Vec<Slot>,
    /// Root-cache entries that hold this page as their top.
    pins: u32,
    /// A leaf table the guest may write without a fault: resynchronised at flush points.
    unsync: bool,
    /// Emulated writes since the page was last used by a fault.
    writes: u8,
}

/// A root in the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CachedRoot {
    key: RootKey,
    top: Hfn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RootKey {
    /// CR3's address bits.
    cr3: u64,
    ctx: Context,
    /// The PDPTE registers (PAE guests only).
    pdptes: [u64; 4],
}

/// What a page fault in the guest came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The shadow now maps the access: resume the guest.
    Fixed,
    /// The guest's own tables fault: inject #PF with this error code.
    Inject {
        /// The #PF error code.
        error_code: u32,
    },
    /// The access reaches guest-physical memory that is not RAM: emulate it.
    Mmio {
        /// The guest-physical address.
        gpa: Gpa,
    },
    /// A write to a page the shadow MMU write-protects (a guest page table): emulate the
    /// instruction, then report the write with [`ShadowMmu::guest_wrote`].
    WriteTracked {
        /// The guest-physical address written.
        gpa: Gpa,
    },
}

/// TLB invalidations the MMU's own changes need before the guest runs again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flush {
    /// Everything of the guest's VPID (a write-protection or a zap of many entries).
    pub all: bool,
    /// All but global translations (a CR3 load's).
    pub non_global: bool,
    /// Single linear addresses.
    pub addresses: Vec<u64>,
}

/// An error of the shadow MMU itself (never the guest's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowError(pub String);

impl core::fmt::Display for ShadowError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "shadow MMU: {}", self.0)
    }
}

/// Counters of the shadow MMU (issue 6 item 5).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShadowCounters {
    /// Page faults the shadow MMU fixed (the guest never saw them).
    pub shadow_faults: u64,
    /// Page faults that were the guest's and were injected.
    pub guest_faults: u64,
    /// Faults on memory that is not RAM (emulated MMIO).
    pub mmio_faults: u64,
    /// Writes to write-protected guest page tables that were emulated.
    pub wp_emulations: u64,
    /// Shadow pages unshadowed (write flooding, or an instruction that cannot be emulated).
    pub unshadowed: u64,
    /// Leaf tables made unsync.
    pub unsync: u64,
    /// Unsync leaf tables resynchronised.
    pub resync: u64,
    /// Shadow entries zapped by an INVLPG or INVPCID of one address.
    pub invlpg: u64,
    /// Roots built.
    pub roots_built: u64,
    /// Roots taken again from the cache.
    pub roots_reused: u64,
    /// Shadow pages created.
    pub pages_created: u64,
    /// Shadow pages freed.
    pub pages_freed: u64,
    /// Times everything was zapped because the page budget ran out.
    pub resets: u64,
}

/// How the MMU is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowConfig {
    /// Where the guest's RAM is in host memory.
    pub layout: RamLayout,
    /// MAXPHYADDR the guest sees.
    pub maxphyaddr: u8,
    /// Whether 1-GiB pages are offered to the guest.
    pub gb_pages: bool,
    /// At most this many shadow pages exist at once.
    pub max_pages: usize,
}

/// The shadow MMU of one vCPU.
#[derive(Debug)]
pub struct ShadowMmu {
    cfg: ShadowConfig,
    pages: BTreeMap<Hfn, ShadowPage>,
    index: BTreeMap<Key, Hfn>,
    /// Guest table shadow pages (not direct) by gfn.
    by_gfn: BTreeMap<u64, Vec<Hfn>>,
    /// Leaf SPTEs by the gfn they map.
    rmap: BTreeMap<u64, Vec<Slot>>,
    unsync: BTreeSet<Hfn>,
    roots: Vec<CachedRoot>,
    /// The root changed (the VM writes the new one to the guest's CR3 field).
    root_changed: bool,
    flush: Flush,
    counters: ShadowCounters,
}

/// The guest's RAM as the software walker sees it: reads beyond RAM give all ones, as the
/// board's unbacked addresses do (a table there has reserved bits set); writes there vanish.
struct GuestMem<'a, M> {
    mem: &'a mut M,
    layout: RamLayout,
}

impl<M: PhysMemory> GuestMem<'_, M> {
    fn hpa(&self, gpa: u64, len: u64) -> Option<Hpa> {
        (gpa.checked_add(len)? <= self.layout.size).then(|| self.layout.base.wrapping_add(gpa))
    }

    fn read(&mut self, addr: Gpa, buf: &mut [u8]) -> Result<(), MemoryError<Gpa>> {
        match self.hpa(addr.raw(), buf.len() as u64) {
            Some(at) => self.mem.read(at, buf).map_err(|_| MemoryError { addr }),
            None => {
                buf.fill(0xff);
                Ok(())
            }
        }
    }

    fn write(&mut self, addr: Gpa, data: &[u8]) -> Result<(), MemoryError<Gpa>> {
        match self.hpa(addr.raw(), data.len() as u64) {
            Some(at) => self.mem.write(at, data).map_err(|_| MemoryError { addr }),
            None => Ok(()),
        }
    }
}

impl<M: PhysMemory> Memory<Gpa> for GuestMem<'_, M> {
    fn read_u32(&mut self, addr: Gpa) -> Result<u32, MemoryError<Gpa>> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn read_u64(&mut self, addr: Gpa) -> Result<u64, MemoryError<Gpa>> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn write_u32(&mut self, addr: Gpa, v: u32) -> Result<(), MemoryError<Gpa>> {
        self.write(addr, &v.to_le_bytes())
    }
    fn write_u64(&mut self, addr: Gpa, v: u64) -> Result<(), MemoryError<Gpa>> {
        self.write(addr, &v.to_le_bytes())
    }
}

/// A successful guest walk, reduced to what the shadow needs.
#[derive(Clone, Copy, Debug)]
struct GuestWalk {
    /// Guest-physical address of the accessed byte.
    gpa: u64,
    /// Level of the guest leaf (1 for 4-KiB pages; 0 with paging off).
    leaf_level: u8,
    /// `(level, entry)` of each entry used, top level first.
    entries: [(u8, u64); 5],
    len: usize,
    /// Combined rights.
    rights: Rights,
    /// D is set in the leaf (after this access's update).
    dirty: bool,
    /// The leaf is global (G and CR4.PGE).
    global: bool,
    /// PAT index of the leaf.
    pat: u8,
}

impl GuestWalk {
    fn entry(&self, level: u8) -> Option<u64> {
        self.entries[..self.len]
            .iter()
            .find(|(l, _)| *l == level)
            .map(|&(_, e)| e)
    }
}

fn mem_err(e: impl core::fmt::Debug) -> ShadowError {
    ShadowError(format!("{e:?}"))
}

impl ShadowMmu {
    /// An MMU with no shadow pages yet.
    pub fn new(cfg: ShadowConfig) -> Self {
        Self {
            cfg,
            pages: BTreeMap::new(),
            index: BTreeMap::new(),
            by_gfn: BTreeMap::new(),
            rmap: BTreeMap::new(),
            unsync: BTreeSet::new(),
            roots: Vec::new(),
            root_changed: false,
            flush: Flush::default(),
            counters: ShadowCounters::default(),
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> &ShadowCounters {
        &self.counters
    }

    /// Where the guest's RAM is.
    pub fn layout(&self) -> RamLayout {
        self.cfg.layout
    }

    /// Shadow pages in existence.
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// The host-physical address the processor's CR3 must hold: the current root.
    pub fn root(&self) -> Option<Hpa> {
        self.roots.first().map(|r| r.top.addr())
    }

    /// Whether the root changed since the last call (the guest's CR3 field needs writing).
    pub fn take_root_changed(&mut self) -> bool {
        core::mem::take(&mut self.root_changed)
    }

    /// The TLB invalidations owed, emptied.
    pub fn take_flush(&mut self) -> Flush {
        core::mem::take(&mut self.flush)
    }

    /// The PDPTEs at `cr3` for a PAE guest (MOV to CR3, CR0 or CR4 loads them, SDM Vol. 3A
    /// §4.4.1): `None` when a present entry has a reserved bit set (#GP(0)).
    pub fn load_pdptes<M: PhysMemory>(&self, mem: &mut M, cr3: u64) -> Option<[u64; 4]> {
        let mut gm = GuestMem {
            mem,
            layout: self.cfg.layout,
        };
        load_pdptes::<Gpa, _>(&mut Direct(&mut gm), cr3, self.cfg.maxphyaddr)
            .ok()
            .map(|p| p.entries())
    }

    fn root_key(st: &GuestPagingState) -> RootKey {
        let ctx = Context::of(st);
        let cr3 = match st.mode() {
            PagingMode::Disabled => 0,
            PagingMode::Bits32 => st.cr3 & 0xffff_f000,
            PagingMode::Pae => 0,
            _ => st.cr3 & x86::reg::cr3::ADDR_MASK,
        };
        let pdptes = if st.mode() == PagingMode::Pae {
            st.pdptes
        } else {
            [0; 4]
        };
        RootKey { cr3, ctx, pdptes }
    }

    /// Makes the root for `st` current: the cached one if there is one, else a new one.
    /// Call after every change of CR3, of the paging mode or of the controls in [`Context`];
    /// resynchronisation and the TLB flush the change needs are the caller's (a CR3 load
    /// flushes, a PCID no-flush load would not).
    pub fn switch_root<M: PhysMemory>(
        &mut self,
        mem: &mut M,
        st: &GuestPagingState,
    ) -> Result<(), ShadowError> {
        if st.mode() == PagingMode::Level5 {
            return Err(ShadowError(String::from(
                "5-level paging is not shadowed (CR4.LA57 is not offered)",
            )));
        }
        let key = Self::root_key(st);
        if self.roots.first().is_some_and(|r| r.key == key) {
            return Ok(());
        }
        self.root_changed = true;
        if let Some(i) = self.roots.iter().position(|r| r.key == key) {
            let r = self.roots.remove(i);
            self.roots.insert(0, r);
            self.counters.roots_reused += 1;
            return Ok(());
        }
        self.make_room(mem)?;
        let top = self.build_root(mem, st, key)?;
        self.roots.insert(0, CachedRoot { key, top });
        self.counters.roots_built += 1;
        while self.roots.len() > ROOTS {
            if let Some(old) = self.roots.pop() {
                self.unpin(mem, old.top)?;
            }
        }
        Ok(())
    }

    fn build_root<M: PhysMemory>(
        &mut self,
        mem: &mut M,
        st: &GuestPagingState,
        key: RootKey,
    ) -> Result<Hfn, ShadowError> {
        let ctx = key.ctx;
        if st.long() {
            let role = Role {
                level: 4,
                direct: false,
                pae_root: false,
                quadrant: 0,
                access: Rights::ALL,
                ctx,
            };
            let top = self.get_or_create(mem, (key.cr3 >> 12, role))?;
            self.page_mut(top)?.pins += 1;
            return Ok(top);
        }
        // The PAE root: four entries, each the shadow directory for 1 GiB.
        let role = Role {
            level: 3,
            direct: false,
            pae_root: true,
            quadrant: 0,
            access: Rights::ALL,
            ctx,
        };
        let top = self.alloc_page(mem, 0, role)?;
        if top.addr().raw() >> 32 != 0 {
            return Err(ShadowError(format!(
                "the PAE root must lie below 4 GiB, the frame allocator gave {:?}",
                top.addr()
            )));
        }
        self.page_mut(top)?.pins += 1;
        for i in 0..4u16 {
            let gva = u64::from(i) << 30;
            let child = match st.mode() {
                PagingMode::Disabled => Some((gva >> 12, Self::direct_role(2, Rights::ALL, ctx))),
                PagingMode::Bits32 => Some((
                    key.cr3 >> 12,
                    Role {
                        level: 2,
                        direct: false,
                        pae_root: false,
                        quadrant: i as u8,
                        access: Rights::ALL,
                        ctx,
                    },
                )),
                _ => {
                    let pdpte = key.pdptes[usize::from(i)];
                    (pdpte & pte::PRESENT != 0).then_some({
                        (
                            (pdpte & SPTE_ADDR) >> 12,
                            Role {
                                level: 2,
                                direct: false,
                                pae_root: false,
                                quadrant: 0,
                                access: Rights::ALL,
                                ctx,
                            },
                        )
                    })
                }
            };
            if let Some(child) = child {
                self.link(mem, (top, i), child)?;
            }
        }
        Ok(top)
    }

    fn direct_role(level: u8, access: Rights, ctx: Context) -> Role {
        Role {
            level,
            direct: true,
            pae_root: false,
            quadrant: 0,
            access,
            ctx,
        }
    }

    fn page_mut(&mut self, hfn: Hfn) -> Result<&mut ShadowPage, ShadowError> {
        self.pages
            .get_mut(&hfn)
            .ok_or_else(|| ShadowError(format!("no shadow page at {:?}", hfn.addr())))
    }

    fn read_spte<M: PhysMemory>(mem: &mut M, (hfn, i): Slot) -> Result<u64, ShadowError> {
        mem.read_u64(hfn.addr().wrapping_add(8 * u64::from(i)))
            .map_err(mem_err)
    }

    fn write_spte<M: PhysMemory>(mem: &mut M, (hfn, i): Slot, v: u64) -> Result<(), ShadowError> {
        mem.write_u64(hfn.addr().wrapping_add(8 * u64::from(i)), v)
            .map_err(mem_err)
    }

    /// Zaps everything when the budget is close, so that one fault's pages always fit.
    fn make_room<M: PhysMemory>(&mut self, mem: &mut M) -> Result<(), ShadowError> {
        if self.pages.len() + 8 > self.cfg.max_pages {
            self.reset(mem)?;
        }
        Ok(())
    }

    /// Frees every shadow page and root. The VM must then call [`ShadowMmu::switch_root`]
    /// again (the root cache is empty).
    pub fn reset<M: PhysMemory>(&mut self, mem: &mut M) -> Result<(), ShadowError> {
        self.counters.resets += 1;
        for (hfn, _) in core::mem::take(&mut self.pages) {
            mem.free_frame(hfn);
            self.counters.pages_freed += 1;
        }
        self.index.clear();
        self.by_gfn.clear();
        self.rmap.clear();
        self.unsync.clear();
        self.roots.clear();
        self.root_changed = true;
        self.flush.all = true;
        Ok(())
    }

    fn alloc_page<M: PhysMemory>(
        &mut self,
        mem: &mut M,
        gfn: u64,
        role: Role,
    ) -> Result<Hfn, ShadowError> {
        let hfn = mem
            .alloc_frame()
            .ok_or_else(|| ShadowError(String::from("no frame for a shadow page")))?;
        self.pages.insert(
            hfn,
            ShadowPage {
                gfn,
                role,
                parents: Vec::new(),
                pins: 0,
                unsync: false,
                writes: 0,
            },
        );
        self.counters.pages_created += 1;
        Ok(hfn)
    }

    /// The shadow page of `key`, created (and its gfn write-protected) if there is none.
    fn get_or_create<M: PhysMemory>(&mut self, mem: &mut M, key: Key) -> Result<Hfn, ShadowError> {
        if let Some(&hfn) = self.index.get(&key) {
            return Ok(hfn);
        }
        let (gfn, role) = key;
        if !role.direct {
            // The gfn's unsync leaves become sync first: from now on it is a tracked table.
            let unsync: Vec<Hfn> = self
                .by_gfn
                .get(&gfn)
                .into_iter()
                .flatten()
                .copied()
                .filter(|h| self.unsync.contains(h))
                .collect();
            for h in unsync {
                self.sync_page(mem, h)?;
            }
        }
        let hfn = self.alloc_page(mem, gfn, role)?;
        self.index.insert(key, hfn);
        if !role.direct {
            self.by_gfn.entry(gfn).or_default().push(hfn);
            self.write_protect(mem, gfn)?;
        }
        Ok(hfn)
    }

    /// Whether leaf SPTEs mapping `gfn` must be read-only: it holds a guest table that is
    /// shadowed and in sync.
    fn tracked(&self, gfn: u64) -> bool {
        self.by_gfn
            .get(&gfn)
            .is_some_and(|v| v.iter().any(|h| !self.unsync.contains(h)))
    }

    /// Clears W in every SPTE that maps `gfn`.
    fn write_protect<M: PhysMemory>(&mut self, mem: &mut M, gfn: u64) -> Result<(), ShadowError> {
        let slots = self.rmap.get(&gfn).cloned().unwrap_or_default();
        for slot in slots {
            let spte = Self::read_spte(mem, slot)?;
            if spte & pte::WRITABLE != 0 {
                Self::write_spte(mem, slot, spte & !(pte::WRITABLE | pte::DIRTY))?;
                self.flush.all = true;
            }
        }
        Ok(())
    }

    /// Points the shadow entry `slot` at the shadow page of `key`; says whether the entry
    /// changed.
    fn link<M: PhysMemory>(
        &mut self,
        mem: &mut M,
        slot: Slot,
        key: Key,
    ) -> Result<(Hfn, bool), ShadowError> {
        let child = self.get_or_create(mem, key)?;
        let pae_root = self.pages.get(&slot.0).is_some_and(|p| p.role.pae_root);
        let want = child.addr().raw() | if pae_root { pte::PRESENT } else { LINK };
        let old = Self::read_spte(mem, slot)?;
        if old == want {
            return Ok((child, false));
        }
        if old & pte::PRESENT != 0 {
            self.drop_spte(mem, slot, old)?;
        }
        // A page whose entries may be stale must not become reachable through a new path:
        // the processor has cached nothing for it (anchor §3.6).
        if self.unsync.contains(&child) {
            self.sync_page(mem, child)?;
        }
        Self::write_spte(mem, slot, want)?;
        self.page_mut(child)?.parents.push(slot);
        Ok((child, true))
    }

    /// Forgets what the present SPTE `old` at `slot` referenced (its rmap entry, or its child
    /// page's parent link, freeing the child when nothing holds it) and clears it.
    fn drop_spte<M: PhysMemory>(
        &mut self,
        mem: &mut M,
        slot: Slot,
        old: u64,
    ) -> Result<(), ShadowError> {
        Self::write_spte(mem, slot, 0)?;
        let level = self.pages.get(&slot.0).map_or(1, |p| p.role.level);
        let target = Hfn::new((old & SPTE_ADDR) >> 12);
        if level == 1 {
            if let Some(gfn) = self.gfn_of_hpa(target.addr())
                && let Some(v) = self.rmap.get_mut(&gfn)
            {
                v.retain(|s| *s != slot);
                if v.is_empty() {
                    self.rmap.remove(&gfn);
                }
            }
            return Ok(());
        }
        let orphan = match self.pages.get_mut(&target) {
            Some(child) => {
                child.parents.retain(|s| *s != slot);
                child.parents.is_empty() && child.pins == 0
            }
            None => false,
        };
        if orphan {
            self.free_page(mem, target)?;
        }
        Ok(())
    }

    fn gfn_of_hpa(&self, hpa: Hpa) -> Option<u64> {
        hpa.offset_from(self.cfg.layout.base)
            .filter(|&o| o < self.cfg.layout.size)
            .map(|o| o >> 12)
    }

    /// Clears every entry of the page `hfn` (its children lose a parent).
    fn clear_page<M: PhysMemory>(&mut self, mem: &mut M, hfn: Hfn) -> Result<(), ShadowError> {
        for i in 0..512u16 {
            let spte = Self::read_spte(mem, (hfn, i))?;
            if spte & pte::PRESENT != 0 {
                self.drop_spte(mem, (hfn, i), spte)?;
            }
        }
        Ok(())
    }

    /// Removes the page `hfn`: its parents' entries, its own entries, and the page.
    fn free_page<M: PhysMemory>(&mut self, mem: &mut M, hfn: Hfn) -> Result<(), ShadowError> {
        let parents = match self.pages.get_mut(&hfn) {
            Some(p) => core::mem::take(&mut p.parents),
            None => return Ok(()),
        };
        for slot in parents {
            Self::write_spte(mem, slot, 0)?;
        }
        self.clear_page(mem, hfn)?;
        let Some(page) = self.pages.remove(&hfn) else {
            return Ok(());
        };
        self.index.remove(&(page.gfn, page.role));
        if !page.role.direct
            && let Some(v) = self.by_gfn.get_mut(&page.gfn)
        {
            v.retain(|h| *h != hfn);
            if v.is_empty() {
                self.by_gfn.remove(&page.gfn);
            }
        }
        self.unsync.remove(&hfn);
        mem.free_frame(hfn);
        self.counters.pages_freed += 1;
        self.flush.all = true;
        Ok(())
    }

    /// Drops a root-cache reference to `top`; frees it when nothing else holds it.
    fn unpin<M: PhysMemory>(&mut self, mem: &mut M, top: Hfn) -> Result<(), ShadowError> {
        let free = match self.pages.get_mut(&top) {
            Some(p) => {
                p.pins = p.pins.saturating_sub(1);
                p.pins == 0 && p.parents.is_empty()
            }
            None => false,
        };
        if free {
            self.free_page(mem, top)?;
        }
        Ok(())
    }

    /// Walks the guest's tables for `gva` and `access`, setting accessed and dirty flags as
    /// the processor would.
    fn guest_walk<M: PhysMemory>(
        &self,
        mem: &mut M,
        st: &GuestPagingState,
        gva: u64,
        access: Access,
        ac: bool,
    ) -> Result<Result<GuestWalk, u32>, ShadowError> {
        let mode = st.mode();
        if mode == PagingMode::Disabled {
            return Ok(Ok(GuestWalk {
                gpa: gva & 0xffff_ffff,
                leaf_level: 0,
                entries: [(0, 0); 5],
                len: 0,
                rights: Rights::ALL,
                dirty: true,
                global: false,
                pat: 0,
            }));
        }
        let rflags = if ac { x86::reg::rflags::AC } else { 0 };
        let ctx = PagingContext::from_registers(
            st.cr0,
            st.cr4,
            st.efer,
            rflags,
            self.cfg.maxphyaddr,
            self.cfg.gb_pages,
        )
        .map_err(|u| ShadowError(format!("the guest's paging controls: {u:?}")))?;
        let pdptes = if mode == PagingMode::Pae {
            Some(
                Pdptes::new(st.pdptes, self.cfg.maxphyaddr)
                    .map_err(|e| ShadowError(format!("reserved PDPTE loaded: {e:?}")))?,
            )
        } else {
            None
        };
        let format = GuestPaging::<Gpa>::new(mode, st.cr3, pdptes, ctx)
            .map_err(|e| ShadowError(format!("{e:?}")))?;
        let mut gm = GuestMem {
            mem,
            layout: self.cfg.layout,
        };
        let mut tables = Direct(&mut gm);
        let gva = Gva::new(gva);
        macro_rules! walk {
            ($f:expr) => {
                match paging::walk($f, &mut tables, gva, access) {
                    Ok(w) => w.commit(&mut tables).map_err(mem_err)?,
                    Err(WalkError::Fault(pf)) => return Ok(Err(pf.error_code)),
                    Err(WalkError::Table(e)) => return Err(mem_err(e)),
                }
            };
        }
        let t = match &format {
            GuestPaging::Bits32(f) => walk!(f),
            GuestPaging::Pae(f) => walk!(f),
            GuestPaging::Level4(f) => walk!(f),
            GuestPaging::Level5(f) => walk!(f),
        };
        let mut entries = [(0u8, 0u64); 5];
        let steps = t.path.steps();
        for (slot, step) in entries.iter_mut().zip(steps) {
            *slot = (step.level, step.entry);
        }
        Ok(Ok(GuestWalk {
            gpa: t.addr.raw(),
            leaf_level: t.level,
            entries,
            len: steps.len(),
            rights: Rights::of(t.rights),
            dirty: t.dirty,
            global: t.attrs.global,
            pat: t.attrs.pat_index,
        }))
    }

    /// The rights one guest entry grants (the PAE PDPTEs grant everything).
    fn entry_rights(st: &GuestPagingState, level: u8, entry: u64) -> Rights {
        if st.mode() == PagingMode::Pae && level == 3 {
            return Rights::ALL;
        }
        let nx = st.efer & efer::NXE != 0 && st.mode() != PagingMode::Bits32;
        Rights(
            u8::from(entry & pte::WRITABLE != 0)
                | (u8::from(entry & pte::USER != 0) << 1)
                | (u8::from(!(nx && entry & pte::XD != 0)) << 2),
        )
    }

    /// The key of the shadow page at shadow `level` on the way to `gva`, below the root.
    fn child_key(st: &GuestPagingState, ctx: Context, level: u8, gva: u64, w: &GuestWalk) -> Key {
        let mode = st.mode();
        if mode == PagingMode::Disabled {
            let gfn = (gva & 0xffff_ffff & !((1u64 << (12 + 9 * u32::from(level))) - 1)) >> 12;
            return (gfn, Self::direct_role(level, Rights::ALL, ctx));
        }
        if mode == PagingMode::Bits32 && level == 2 {
            return (
                (st.cr3 & 0xffff_f000) >> 12,
                Role {
                    level: 2,
                    direct: false,
                    pae_root: false,
                    quadrant: ((gva >> 30) & 3) as u8,
                    access: Rights::ALL,
                    ctx,
                },
            );
        }
        // The guest entry one level up references a table or maps a large page.
        let above = level + 1;
        if above > w.leaf_level {
            let access = w.entries[..w.len]
                .iter()
                .filter(|(l, _)| *l >= above)
                .fold(Rights::ALL, |acc, &(l, e)| {
                    acc.and(Self::entry_rights(st, l, e))
                });
            let entry = w.entry(above).unwrap_or(0);
            let table = if ctx.gpte32() {
                entry & 0xffff_f000
            } else {
                entry & SPTE_ADDR
            };
            let quadrant = if ctx.gpte32() {
                ((gva >> 21) & 1) as u8
            } else {
                0
            };
            (
                table >> 12,
                Role {
                    level,
                    direct: false,
                    pae_root: false,
                    quadrant,
                    access,
                    ctx,
                },
            )
        } else {
            // A clean large page is mapped read-only through a page of its own, so that a
            // write faults and sets D even where another mapping of the frames is dirty
            // (KVM's `FNAME(fetch)`).
            let span = 1u64 << (12 + 9 * u32::from(level));
            let access = if w.dirty {
                w.rights
            } else {
                w.rights.and(Rights(6))
            };
            (
                (w.gpa & !(span - 1)) >> 12,
                Self::direct_role(level, access, ctx),
            )
        }
    }

    /// A page fault in the guest at `gva` with the processor's error code `error`, while
    /// the guest's registers are `st` (and EFLAGS.AC is `ac`). `is_ram` says whether a
    /// guest-physical page is RAM the guest may map (not an emulated device's page).
    pub fn page_fault<M: PhysMemory>(
        &mut self,
        mem: &mut M,
        st: &GuestPagingState,
        gva: u64,
        error: u32,
        ac: bool,
        is_ram: &dyn Fn(u64) -> bool,
    ) -> Result<Fault, ShadowError> {
        if error & pf_error::RSVD != 0 {
            return Err(ShadowError(format!(
                "the processor found a reserved bit in a shadow entry for {gva:#x} (error code {error:#x})"
            )));
        }
        let kind = if error & pf_error::FETCH != 0 {
            AccessKind::Fetch
        } else if error & pf_error::WRITE != 0 {
            AccessKind::Write
        } else {
            AccessKind::Read
        };
        let privilege = if error & pf_error::USER != 0 {
            Privilege::User
        } else {
            Privilege::Supervisor
        };
        let access = Access::new(kind, privilege);
        let walk = match self.guest_walk(mem, st, gva, access, ac)? {
            Ok(w) => w,
            Err(error_code) => {
                self.counters.guest_faults += 1;
                return Ok(Fault::Inject { error_code });
            }
        };
        if !is_ram(walk.gpa) {
            self.counters.mmio_faults += 1;
            return Ok(Fault::Mmio {
                gpa: Gpa::new(walk.gpa),
            });
        }
        if self.roots.is_empty() || self.pages.len() + 8 > self.cfg.max_pages {
            self.make_room(mem)?;
            self.switch_root(mem, st)?;
        }
        let ctx = Context::of(st);
        let top = self.roots[0].top;
        let top_level = if st.long() { 4 } else { 3 };
        let mut table = top;
        let mut relinked = false;
        for level in (1..top_level).rev() {
            let shift = 12 + 9 * u32::from(level);
            // The PAE root has four entries (bits 31:30).
            let idx = ((gva >> shift) & if level == 2 && !st.long() { 3 } else { 511 }) as u16;
            let key = Self::child_key(st, ctx, level, gva, &walk);
            let (child, changed) = self.link(mem, (table, idx), key)?;
            relinked |= changed;
            table = child;
            self.page_mut(table)?.writes = 0;
        }
        let gfn = walk.gpa >> 12;
        let write = kind == AccessKind::Write;
        // A write to a shadowed guest table: leaves go unsync, other tables are emulated.
        let mut tracked_write = false;
        if write && self.tracked(gfn) && !self.try_unsync(gfn) {
            tracked_write = true;
        }
        let slot = (table, ((gva >> 12) & 511) as u16);
        let old = Self::read_spte(mem, slot)?;
        let wp0_write = write
            && !walk.rights.write()
            && st.cr0 & cr0::WP == 0
            && privilege == Privilege::Supervisor;
        let spte = self.leaf_spte(gfn, &walk, wp0_write);
        if spte != old {
            if old & pte::PRESENT != 0 {
                self.drop_spte(mem, slot, old)?;
            }
            Self::write_spte(mem, slot, spte)?;
            self.rmap.entry(gfn).or_default().push(slot);
            self.flush.addresses.push(gva);
        }
        if tracked_write {
            self.counters.wp_emulations += 1;
            return Ok(Fault::WriteTracked {
                gpa: Gpa::new(walk.gpa),
            });
        }
        if spte == old && !relinked {
            // The processor faulted on exactly the path the guest's walk gives: the fault is
            // the guest's (an implicit supervisor access under SMAP, say).
            self.counters.guest_faults += 1;
            return Ok(Fault::Inject { error_code: error });
        }
        self.counters.shadow_faults += 1;
        Ok(Fault::Fixed)
    }

    /// The leaf SPTE for guest frame `gfn` reached by `walk`; `wp0_write` for a supervisor
    /// write to a read-only page with CR0.WP = 0 (writable, supervisor only).
    fn leaf_spte(&self, gfn: u64, walk: &GuestWalk, wp0_write: bool) -> u64 {
        let hpa = self.cfg.layout.base.wrapping_add(gfn << 12).raw();
        let mut spte = hpa | pte::PRESENT | pte::ACCESSED;
        let writable = (walk.rights.write() || wp0_write) && walk.dirty && !self.tracked(gfn);
        if writable {
            spte |= pte::WRITABLE | pte::DIRTY;
        }
        if walk.rights.user() && !wp0_write {
            spte |= pte::USER;
        }
        if !walk.rights.execute() {
            spte |= pte::XD;
        }
        if walk.global {
            spte |= pte::GLOBAL;
        }
        if walk.pat & 1 != 0 {
            spte |= pte::PWT;
        }
        if walk.pat & 2 != 0 {
            spte |= pte::PCD;
        }
        if walk.pat & 4 != 0 {
            spte |= pte::PAT_4K;
        }
        spte
    }

    /// Marks the shadow pages of `gfn` unsync when all are 4-KiB leaf tables (anchor §3.6).
    fn try_unsync(&mut self, gfn: u64) -> bool {
        let Some(pages) = self.by_gfn.get(&gfn) else {
            return true;
        };
        if pages
            .iter()
            .any(|h| self.pages.get(h).is_none_or(|p| p.role.level != 1))
        {
            return false;
        }
        for &h in pages {
            if self.unsync.insert(h) {
                if let Some(p) = self.pages.get_mut(&h) {
                    p.unsync = true;
                }
                self.counters.unsync += 1;
            }
        }
        true
    }

    /// Brings the unsync leaf page `hfn` back in line with the guest's table and
    /// write-protects its gfn again: every SPTE whose guest entry no longer gives it is
    /// zapped (it faults in again on use).
    fn sync_page<M: PhysMemory>(&mut self, mem: &mut M, hfn: Hfn) -> Result<(), ShadowError> {
        let Some(page) = self.pages.get_mut(&hfn) else {
            return Ok(());
        };
        page.unsync = false;
        let (gfn, role) = (page.gfn, page.role);
        self.unsync.remove(&hfn);
        self.counters.resync += 1;
        let wide = !role.ctx.gpte32();
        for i in 0..512u16 {
            let spte = Self::read_spte(mem, (hfn, i))?;
            if spte & pte::PRESENT == 0 {
                continue;
            }
            let (gi, width) = if wide {
                (u64::from(i), 8)
            } else {
                (u64::from(role.quadrant) * 512 + u64::from(i), 4)
            };
            let gpa = (gfn << 12) + gi * width;
            let mut gm = GuestMem {
                mem,
                layout: self.cfg.layout,
            };
            let gpte = if wide {
                gm.read_u64(Gpa::new(gpa)).map_err(mem_err)?
            } else {
                u64::from(gm.read_u32(Gpa::new(gpa)).map_err(mem_err)?)
            };
            if self.fresh_leaf(role, gpte) != Some(spte) {
                self.drop_spte(mem, (hfn, i), spte)?;
                self.flush.all = true;
            }
        }
        // Sync again: it is a tracked table.
        self.write_protect(mem, gfn)?;
        Ok(())
    }

    /// The SPTE a fault would now install from the guest PTE `gpte` of a leaf table with
    /// `role`, or `None` when the entry is not present, has a reserved bit set, is not
    /// accessed (the processor has not used it), or maps no RAM.
    fn fresh_leaf(&self, role: Role, gpte: u64) -> Option<u64> {
        if gpte & pte::PRESENT == 0 || gpte & pte::ACCESSED == 0 {
            return None;
        }
        let wide = !role.ctx.gpte32();
        let reserved = if wide {
            let high = pte::ADDR_MASK & !x86::addr::phys_mask(u32::from(self.cfg.maxphyaddr));
            // PAE entries also reserve bits 62:52 (SDM Vol. 3A Table 4-11).
            let pae_high = if role.ctx.mode == 2 {
                0x7ff0_0000_0000_0000
            } else {
                0
            };
            high | pae_high | if role.ctx.nxe { 0 } else { pte::XD }
        } else {
            0
        };
        if gpte & reserved != 0 {
            return None;
        }
        let gfn = if wide {
            (gpte & pte::ADDR_MASK) >> 12
        } else {
            (gpte & 0xffff_f000) >> 12
        };
        if (gfn << 12) >= self.cfg.layout.size {
            return None;
        }
        let nx = wide && role.ctx.nxe && gpte & pte::XD != 0;
        let mine = Rights(
            u8::from(gpte & pte::WRITABLE != 0)
                | (u8::from(gpte & pte::USER != 0) << 1)
                | (u8::from(!nx) << 2),
        );
        let walk = GuestWalk {
            gpa: gfn << 12,
            leaf_level: 1,
            entries: [(0, 0); 5],
            len: 0,
            rights: role.access.and(mine),
            dirty: gpte & pte::DIRTY != 0,
            global: role.ctx.pge && gpte & pte::GLOBAL != 0,
            pat: paging_pat(gpte),
        };
        Some(self.leaf_spte(gfn, &walk, false))
    }

    /// Resynchronises every unsync leaf table (a guest TLB flush of everything).
    pub fn sync_all<M: PhysMemory>(&mut self, mem: &mut M) -> Result<(), ShadowError> {
        let unsync: Vec<Hfn> = self.unsync.iter().copied().collect();
        for h in unsync {
            self.sync_page(mem, h)?;
        }
        Ok(())
    }

    /// INVLPG (or INVPCID of one address) of `gva`: the leaf SPTE for it, in the current
    /// root and every cached one (global pages live on in them), is zapped and faults in
    /// again from the guest's entry (anchor §3.7).
    pub fn invlpg<M: PhysMemory>(&mut self, mem: &mut M, gva: u64) -> Result<(), ShadowError> {
        let tops: Vec<(Hfn, bool)> = self
            .roots
            .iter()
            .map(|r| {
                (
                    r.top,
                    self.pages.get(&r.top).is_some_and(|p| p.role.level == 4),
                )
            })
            .collect();
        for (top, long) in tops {
            let mut table = top;
            let mut found = true;
            for level in (1..if long { 4u8 } else { 3 }).rev() {
                let shift = 12 + 9 * u32::from(level);
                let idx = ((gva >> shift) & if level == 2 && !long { 3 } else { 511 }) as u16;
                let spte = Self::read_spte(mem, (table, idx))?;
                if spte & pte::PRESENT == 0 {
                    found = false;
                    break;
                }
                table = Hfn::new((spte & SPTE_ADDR) >> 12);
            }
            if !found || !self.pages.contains_key(&table) {
                continue;
            }
            let slot = (table, ((gva >> 12) & 511) as u16);
            let spte = Self::read_spte(mem, slot)?;
            if spte & pte::PRESENT != 0 {
                self.drop_spte(mem, slot, spte)?;
                self.counters.invlpg += 1;
            }
        }
        self.flush.addresses.push(gva);
        Ok(())
    }

    /// The guest wrote `len` bytes at `gpa` in a write-protected table (after the VM emulated
    /// the write): the SPTEs made from the written entries are zapped, and a table written
    /// over and over without being used is unshadowed.
    pub fn guest_wrote<M: PhysMemory>(
        &mut self,
        mem: &mut M,
        gpa: Gpa,
        len: u64,
    ) -> Result<(), ShadowError> {
        let gfn = gpa.raw() >> 12;
        let pages = self.by_gfn.get(&gfn).cloned().unwrap_or_default();
        let offset = gpa.raw() & 0xfff;
        for h in pages {
            let Some(page) = self.pages.get_mut(&h) else {
                continue;
            };
            page.writes = page.writes.saturating_add(1);
            let (role, flooded, pinned) = (page.role, page.writes >= FLOOD_WRITES, page.pins > 0);
            if flooded && !pinned {
                self.counters.unshadowed += 1;
                self.free_page(mem, h)?;
                continue;
            }
            let misaligned = if role.ctx.gpte32() {
                offset % 4 + len > 4
            } else {
                offset % 8 + len > 8
            };
            if misaligned {
                // More than one entry, or part of two: drop the whole table's entries.
                self.clear_page(mem, h)?;
                continue;
            }
            let mut slots: Vec<u16> = Vec::new();
            if role.ctx.gpte32() {
                let g = offset / 4;
                match role.level {
                    1 if g / 512 == u64::from(role.quadrant) => slots.push((g % 512) as u16),
                    2 if g / 256 == u64::from(role.quadrant) => {
                        let i = ((g % 256) * 2) as u16;
                        slots.extend([i, i + 1]);
                    }
                    _ => {}
                }
            } else {
                slots.push((offset / 8) as u16);
            }
            for i in slots {
                let spte = Self::read_spte(mem, (h, i))?;
                if spte & pte::PRESENT != 0 {
                    self.drop_spte(mem, (h, i), spte)?;
                }
            }
        }
        Ok(())
    }

    /// Zaps every SPTE that maps `gfn` (the page became an emulated device's, or stopped
    /// being one): the next access faults and finds out what the page is now.
    pub fn zap_gfn<M: PhysMemory>(&mut self, mem: &mut M, gfn: u64) -> Result<(), ShadowError> {
        for slot in self.rmap.get(&gfn).cloned().unwrap_or_default() {
            let spte = Self::read_spte(mem, slot)?;
            if spte & pte::PRESENT != 0 {
                self.drop_spte(mem, slot, spte)?;
            }
        }
        self.flush.all = true;
        Ok(())
    }

    /// The guest-physical address of a supervisor read of `gva` (an instruction's memory
    /// operand the VM emulates), setting accessed flags as the processor would, or the #PF
    /// error code.
    pub fn guest_read<M: PhysMemory>(
        &self,
        mem: &mut M,
        st: &GuestPagingState,
        gva: u64,
    ) -> Result<Result<u64, u32>, ShadowError> {
        let access = Access::new(AccessKind::Read, Privilege::Supervisor);
        Ok(self.guest_walk(mem, st, gva, access, false)?.map(|w| w.gpa))
    }

    /// Stops shadowing the guest tables at `gfn` so that the guest can write the page
    /// directly (a write the VM cannot emulate). `Err` names the case that cannot be done:
    /// the page is the current root's table.
    pub fn unprotect<M: PhysMemory>(&mut self, mem: &mut M, gfn: u64) -> Result<(), ShadowError> {
        // Cached roots on that gfn other than the current one leave the cache.
        let mut i = 1;
        while i < self.roots.len() {
            let top = self.roots[i].top;
            if self
                .pages
                .get(&top)
                .is_some_and(|p| p.gfn == gfn && !p.role.pae_root)
            {
                self.roots.remove(i);
                self.unpin(mem, top)?;
            } else {
                i += 1;
            }
        }
        let pages = self.by_gfn.get(&gfn).cloned().unwrap_or_default();
        for h in pages {
            if self.pages.get(&h).is_some_and(|p| p.pins > 0) {
                return Err(ShadowError(format!(
                    "the guest wrote its current top-level page table (gfn {gfn:#x}) with an instruction that cannot be emulated"
                )));
            }
            self.counters.unshadowed += 1;
            self.free_page(mem, h)?;
        }
        Ok(())
    }

    /// Checks the structure's invariants (for tests): every leaf SPTE is in the rmap and maps
    /// guest RAM, no SPTE mapping a tracked gfn is writable, every link's child lists the
    /// link as a parent.
    pub fn check_invariants<M: PhysMemory>(&self, mem: &mut M) -> Result<(), ShadowError> {
        for (&h, page) in &self.pages {
            for i in 0..512u16 {
                let spte = Self::read_spte(mem, (h, i))?;
                if spte & pte::PRESENT == 0 {
                    continue;
                }
                let target = Hfn::new((spte & SPTE_ADDR) >> 12);
                if page.role.level == 1 {
                    let gfn = self
                        .gfn_of_hpa(target.addr())
                        .ok_or_else(|| ShadowError(format!("SPTE {spte:#x} maps no guest RAM")))?;
                    if !self.rmap.get(&gfn).is_some_and(|v| v.contains(&(h, i))) {
                        return Err(ShadowError(format!("SPTE {spte:#x} is not in the rmap")));
                    }
                    if spte & pte::WRITABLE != 0 && self.tracked(gfn) {
                        return Err(ShadowError(format!(
                            "SPTE {spte:#x} writes the tracked table gfn {gfn:#x}"
                        )));
                    }
                } else {
                    let child = self
                        .pages
                        .get(&target)
                        .ok_or_else(|| ShadowError(format!("link {spte:#x} to no shadow page")))?;
                    if !child.parents.contains(&(h, i)) {
                        return Err(ShadowError(format!("link {spte:#x} not among the parents")));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The PAT index of a 4-KiB guest PTE (PAT, PCD, PWT).
fn paging_pat(gpte: u64) -> u8 {
    pte::pat_index(gpte, false)
}
