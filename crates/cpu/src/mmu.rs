//! Memory accesses: segmentation (SDM Vol. 3A §3.4.5, §5.3 limit checks, §5.4 type checks,
//! §3.3.7.1 canonical addresses in 64-bit mode) and paging (Vol. 3A §4: 32-bit paging with PSE
//! §4.3, PAE §4.4, 4-level §4.5, access rights §4.6 incl. WP/SMEP/SMAP/NX, page-fault error
//! codes §4.7, accessed and dirty flags §4.8), through the TLB ([`crate::tlb`]), and in VMX
//! non-root operation with "enable EPT" the EPT dimension (Vol. 3C §29.3).
//!
//! A TLB miss walks with `crates/paging` (the same walker the hypervisor uses); the TLB hit
//! path re-checks the cached rights with the rules of §4.6 (`rights_ok`, tested against the
//! walker's own check for every combination). With PAE paging the four PDPTEs are registers,
//! loaded by MOV to CR3/CR0/CR4 (§4.4.1). Alignment checking (#AC) is done here too.
//!
//! EPT (Vol. 3C §29.3): with `vmx.ept` set, every guest-physical address goes through the EPT
//! before it reaches the bus: each guest paging-structure entry a walk reads or updates, the
//! final address (the two-dimensional walk, `paging::translate_nested`), the PDPTE loads of PAE
//! paging, and with guest paging off (unrestricted guest) the linear address itself, which is
//! then a guest-physical address. EPT accessed and dirty flags (EPTP bit 6, §29.3.5), 2-MiB and
//! 1-GiB pages and execute-only translations come with the walker. A failure is a VM exit
//! value: an EPT misconfiguration (§29.3.3.1) or an EPT violation (§29.3.3.2) with the exit
//! qualification of Table 28-7 (bits 0–2 the access, 3–5 the rights, 7 "guest-linear address
//! valid", 8 "translation of a linear address" rather than a paging-structure access), the
//! guest-physical address and, when bit 7 is set, the guest-linear address. A host-physical
//! address that is not RAM is MMIO at that address.
//!
//! The TLB caches the combination (§29.4.1): a combined translation carries the guest rights
//! with the EPT rights folded in (no EPT write or no EPT dirty flag clears
//! [`perm::DIRTY`], so that a write walks; no EPT execute clears [`perm::EXEC`]) and is not
//! cached at all when EPT refuses reads (execute-only pages), so the hit path is the same
//! compare as without EPT. Entries are tagged by VPID and EP4TA ([`crate::tlb`]); the context
//! follows `vmx.non_root`/`vpid`/`ept` through [`Cpu::tlb_vmx_transition`]. A page fault or an
//! EPT violation drops the faulting address's entry (§4.10.4.1, §29.4.3.1).

use paging::{
    AccessKind, Ept, EptAccess, EptCaps, EptFault, EptOrigin, EptRights, EptTables, NestedFault,
    Pae, PageAttrs, PageFault, PageRights, Paging4, Paging32, PagingContext, PagingFormat,
    PdpteLoadError, Pdptes, Privilege, WalkError, load_pdptes,
};
use x86::reg::{cr0, cr3, cr4, efer, rflags};
use x86::{Gpa, Gva, Hpa};

use crate::Cpu;
use crate::bus::Bus;
use crate::bus::VirtualTime;
use crate::fault::{Ex, Exc, Fault, pf, vector};
use crate::icache::ICache;
use crate::state::{Mode, Seg, ar};
use crate::tlb::{Entry, perm};
use crate::vmx::capabilities::MODEL;
use crate::vmx::exit::VmExit;
use x86::Hfn;

/// The physical-address width the model implements (CPUID.80000008H:EAX[7:0]).
pub(crate) const MAXPHYADDR: u32 = 39;

/// Kind of linear access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
    Exec,
}

/// Where a translated access goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phys {
    /// RAM at this byte offset of [`Bus::ram`].
    Ram(usize),
    /// MMIO or unbacked, at this host-physical address.
    Io(Hpa),
}

impl Cpu {
    /// Whether this access is a user-mode access for paging (CPL 3 and not an implicit
    /// supervisor access such as a descriptor-table read, §4.6).
    #[inline]
    fn user_access(&self, implicit: bool) -> bool {
        self.cpl == 3 && !implicit
    }

    /// The PCID in force (0 unless CR4.PCIDE).
    #[inline]
    pub(crate) fn pcid(&self) -> u16 {
        if self.cr4 & cr4::PCIDE != 0 {
            (self.cr3 & 0xfff) as u16
        } else {
            0
        }
    }

    /// Segment `seg`, offset `off` → linear address, with the limit, type and canonical checks.
    /// `size` is the access width in bytes; `off` is already truncated to the address size.
    pub(crate) fn linear(&self, seg: Seg, off: u64, size: u64, access: Access) -> Ex<u64> {
        let s = &self.seg[seg as usize];
        let fault = || {
            if seg == Seg::Ss {
                Fault::with_code(vector::SS, 0)
            } else {
                Fault::gp(0)
            }
        };
        if self.mode == Mode::Long64 {
            let base = if matches!(seg, Seg::Fs | Seg::Gs) {
                s.base
            } else {
                0
            };
            let lin = base.wrapping_add(off);
            let last = lin.wrapping_add(size - 1);
            if !canonical(lin) || !canonical(last) {
                return Err(fault().into());
            }
            self.check_alignment(lin, size, access)?;
            return Ok(lin);
        }
        if self.mode != Mode::Real {
            if s.unusable() {
                return Err(fault().into());
            }
            let code = s.ar & ar::CODE != 0;
            let ok = match access {
                Access::Write => !code && s.ar & ar::RW != 0,
                Access::Read => !code || s.ar & ar::RW != 0,
                Access::Exec => true,
            };
            if !ok {
                return Err(fault().into());
            }
        }
        let last = off.wrapping_add(size - 1);
        let expand_down = s.ar & (ar::CODE | ar::DC) == ar::DC && self.mode != Mode::Real;
        let in_limit = if expand_down {
            let top = if s.ar & ar::DB != 0 {
                0xffff_ffff
            } else {
                0xffff
            };
            off > u64::from(s.limit) && last <= top && last >= off
        } else {
            last <= u64::from(s.limit) && last >= off
        };
        if !in_limit {
            return Err(fault().into());
        }
        let lin = s.base.wrapping_add(off) & 0xffff_ffff;
        self.check_alignment(lin, size, access)?;
        Ok(lin)
    }

    /// The linear address of an access of `size` bytes at offset `off` of `seg` in 64-bit
    /// mode when none of [`Cpu::linear`]'s checks can fail and it stays within one page: a
    /// segment other than FS and GS (base 0), canonical, and no alignment check. `None`: take
    /// the full path.
    #[inline(always)]
    pub(crate) fn flat_linear(&self, seg: Seg, off: u64, size: usize) -> Option<u64> {
        let ok = self.mode == Mode::Long64
            && !matches!(seg, Seg::Fs | Seg::Gs)
            && canonical(off)
            && (off & 0xfff) as usize + size <= 4096
            && !(self.cpl == 3 && self.cr0 & cr0::AM != 0);
        ok.then_some(off)
    }

    /// Alignment checking (SDM Vol. 3A §6.15 interrupt 17): a misaligned data access at CPL 3
    /// with CR0.AM = 1 and EFLAGS.AC = 1 raises #AC(0).
    #[inline]
    fn check_alignment(&self, lin: u64, size: u64, access: Access) -> Ex<()> {
        if self.cpl == 3
            && access != Access::Exec
            && lin & (size.min(8) - 1) != 0
            && self.cr0 & cr0::AM != 0
            && self.flags.get(rflags::AC)
        {
            return Err(Fault::with_code(vector::AC, 0).into());
        }
        Ok(())
    }

    /// Translates a linear address for an access, through the TLB.
    #[inline]
    pub(crate) fn translate<B: Bus>(
        &mut self,
        bus: &mut B,
        lin: u64,
        access: Access,
        implicit: bool,
    ) -> Ex<Phys> {
        if self.cr0 & cr0::PG == 0 {
            let pa = lin & 0xffff_ffff;
            if self.vmx.ept.is_some() && self.vmx.non_root {
                return self.translate_guest_physical(bus, pa, access);
            }
            return Ok(match bus.ram_offset(Hfn::new(pa >> 12)) {
                Some(off) => Phys::Ram(off + (pa & 0xfff) as usize),
                None => Phys::Io(Hpa::new(pa)),
            });
        }
        let user = self.user_access(implicit);
        if let Some(&e) = self.tlb.lookup(lin, self.pcid())
            && self.rights_ok(e.perm, access, user, implicit)
        {
            self.counters.tlb_hits += 1;
            if !implicit && access != Access::Exec {
                self.fill_data_page(lin, &e);
            }
            let off = lin & 0xfff;
            return Ok(if e.ram != usize::MAX {
                Phys::Ram(e.ram + off as usize)
            } else {
                Phys::Io(Hpa::new((e.frame << 12) | off))
            });
        }
        self.counters.tlb_misses += 1;
        let (e, cache) = match self.quick_walk(bus, lin, access, user, implicit) {
            Some(e) => (e, true),
            None => self.walk(bus, lin, access, user, implicit)?,
        };
        let off = lin & 0xfff;
        if cache {
            self.tlb.insert(lin, e);
            if !implicit && access != Access::Exec {
                self.fill_data_page(lin, &e);
            }
        }
        Ok(if e.ram != usize::MAX {
            Phys::Ram(e.ram + off as usize)
        } else {
            Phys::Io(Hpa::new((e.frame << 12) | off))
        })
    }

    /// The key the data pages are valid under (`tlb::DataPages`).
    #[inline(always)]
    pub(crate) fn data_key(&self) -> (u64, u64, u64, u8) {
        (self.tlb.generation(), self.cr3, self.cr0, self.cpl)
    }

    /// Caches a TLB entry for an explicit data access in the data pages, if its rights depend
    /// only on the key.
    #[inline]
    fn fill_data_page(&mut self, lin: u64, e: &Entry) {
        let user_page = e.perm & perm::USER != 0;
        let cacheable = e.ram != usize::MAX
            && user_page == (self.cpl == 3)
            && !(self.cpl == 3 && self.cr0 & cr0::AM != 0);
        if cacheable {
            let writable = e.perm & perm::WRITE != 0 && e.perm & perm::DIRTY != 0;
            let key = self.data_key();
            self.dpages.fill(lin, e.ram, writable, key);
        }
    }

    /// A read of `size` bytes at linear `lin` through the data pages, if cached and within
    /// one page (counted as a TLB hit).
    #[inline(always)]
    fn read_fast<B: Bus>(&mut self, bus: &B, lin: u64, size: usize) -> Option<u64> {
        let off = self.dpages.find(lin, size, false, self.data_key())?;
        let bytes = bus.ram().get(off..off + size)?;
        self.counters.tlb_hits += 1;
        Some(read_le(bytes))
    }

    /// A write through the data pages, as [`Cpu::read_fast`]; `false` if not cached.
    #[inline(always)]
    fn write_fast<B: Bus>(&mut self, bus: &mut B, lin: u64, size: usize, value: u64) -> bool {
        let Some(off) = self.dpages.find(lin, size, true, self.data_key()) else {
            return false;
        };
        let Some(bytes) = bus.ram_mut().get_mut(off..off + size) else {
            return false;
        };
        write_le(bytes, value);
        self.counters.tlb_hits += 1;
        self.icache.note_write(off);
        true
    }

    /// Brings the TLB's context up to date with VMX operation (`vmx.non_root`, `vmx.vpid`,
    /// `vmx.ept`), to be called by VM entry once it has set them and by VM exit once it has
    /// cleared them (SDM Vol. 3C §29.4): translations are then looked up and filled under the
    /// VPID and EP4TA in force. Crossing the non-root boundary with VPIDs disabled (VPID 0 on
    /// the non-root side) drops VPID 0's linear and combined mappings (§29.1.3); with VPIDs
    /// enabled nothing is dropped, so a hypervisor that forgets INVVPID sees stale
    /// translations. The fetch page is invalidated (the TLB generation changes). Nothing else
    /// reads those three fields for the TLB (the lookup stays one compare): code that changes
    /// them, tests included, calls this.
    pub(crate) fn tlb_vmx_transition(&mut self) {
        let non_root = self.vmx.non_root;
        let vpid = if non_root { self.vmx.vpid } else { 0 };
        let ep4ta = match self.vmx.ept {
            Some(eptp) if non_root => Some(eptp.root_raw()),
            _ => None,
        };
        if self.tlb.non_root() != non_root {
            let guest_vpid = if non_root { vpid } else { self.tlb.vpid() };
            if guest_vpid == 0 {
                self.tlb.flush_vpid(0, false);
                self.counters.tlb_flushes += 1;
            }
        }
        self.tlb.set_context(non_root, vpid, ep4ta);
    }

    /// The EPT in force (VMX non-root operation with "enable EPT"), as a walker format.
    #[inline]
    fn ept01(&self) -> Ex<Option<Ept<Gpa, Hpa>>> {
        let Some(eptp) = self.vmx.ept.filter(|_| self.vmx.non_root) else {
            return Ok(None);
        };
        self.ept_format(eptp).map(Some)
    }

    /// The walker format of EPTP `eptp`.
    #[inline(never)]
    fn ept_format(&self, eptp: x86::paging::Eptp) -> Ex<Ept<Gpa, Hpa>> {
        let caps = EptCaps::from_msr(MODEL.caps.ept_vpid.0);
        // Mode-based execute control is not in the model's allowed-1 settings.
        match Ept::new(eptp, &caps, MODEL.maxphyaddr, false) {
            Ok(ept) => Ok(ept),
            // VM entry checks the EPTP (§27.2.1.1): one in force that fails is a model bug.
            Err(_) => Err(Exc::Error(Box::new(crate::error::CpuError::Unsupported {
                rip: self.seg[Seg::Cs as usize].base.wrapping_add(self.rip),
                what: "an EPTP in force that VM entry should have refused",
            }))),
        }
    }

    /// Guest paging off under EPT (unrestricted guest): the linear address is the
    /// guest-physical address `gpa`, translated through EPT and cached as a guest-physical
    /// mapping (§29.4.1). An EPT violation has qualification bits 7 and 8 set and the address
    /// as guest-linear address.
    #[inline(never)]
    fn translate_guest_physical<B: Bus>(
        &mut self,
        bus: &mut B,
        gpa: u64,
        access: Access,
    ) -> Ex<Phys> {
        let off = gpa & 0xfff;
        if let Some(e) = self.tlb.lookup_guest_physical(gpa) {
            let ok = match access {
                Access::Read => true,
                Access::Write => e.perm & perm::DIRTY != 0,
                Access::Exec => e.perm & perm::EXEC != 0,
            };
            if ok {
                self.counters.tlb_hits += 1;
                return Ok(if e.ram != usize::MAX {
                    Phys::Ram(e.ram + off as usize)
                } else {
                    Phys::Io(Hpa::new((e.frame << 12) | off))
                });
            }
        }
        self.counters.tlb_misses += 1;
        let Some(ept) = self.ept01()? else {
            return Ok(Phys::Io(Hpa::new(gpa)));
        };
        let origin = EptOrigin::GuestLinear { user: false };
        let ept_access = EptAccess::new(access_kind(access), origin);
        let now = self.now();
        let mut mem = PhysMem {
            bus: &mut *bus,
            icache: &mut self.icache,
            now,
            touched: false,
        };
        let r = paging::translate(&ept, &mut mem, Gpa::new(gpa), ept_access);
        self.touched_device |= mem.touched;
        let t = match r {
            Ok(t) => t,
            Err(e) => {
                let c = self.tlb.guest_physical_context();
                self.tlb.drop_address(gpa, c);
                return Err(Exc::vm_exit(match e {
                    WalkError::Fault(f) => ept_exit(f, gpa, Some(gpa)),
                    // `PhysMem` never fails.
                    WalkError::Table(_) => VmExit::ept_misconfig(gpa),
                }));
            }
        };
        let frame = t.addr.raw() >> 12;
        let mut p = perm::USER;
        if t.rights.write {
            p |= perm::WRITE;
            if t.dirty {
                p |= perm::DIRTY;
            }
        }
        if t.rights.execute {
            p |= perm::EXEC;
        }
        let e = Entry {
            vpn1: 0,
            frame,
            ram: bus.ram_offset(Hfn::new(frame)).unwrap_or(usize::MAX),
            ctx: self.tlb.guest_physical_context(),
            global: false,
            page_shift: 12,
            perm: p,
        };
        if t.rights.read {
            self.tlb.insert(gpa, e);
        }
        Ok(if e.ram != usize::MAX {
            Phys::Ram(e.ram + off as usize)
        } else {
            Phys::Io(Hpa::new((frame << 12) | off))
        })
    }

    /// The access-rights rules of §4.6 on combined rights `p`. A write to a clean page is
    /// refused here so that the walk sets the dirty flag.
    #[inline]
    fn rights_ok(&self, p: u8, access: Access, user: bool, implicit: bool) -> bool {
        let user_page = p & perm::USER != 0;
        if user {
            return user_page
                && match access {
                    Access::Read => true,
                    Access::Write => p & perm::WRITE != 0 && p & perm::DIRTY != 0,
                    Access::Exec => p & perm::EXEC != 0,
                };
        }
        match access {
            Access::Exec => p & perm::EXEC != 0 && !(user_page && self.cr4 & cr4::SMEP != 0),
            _ => {
                // SMAP: supervisor data accesses to user pages are refused when CR4.SMAP = 1 and
                // either the access is implicit or EFLAGS.AC = 0 (§4.6.1).
                if user_page
                    && self.cr4 & cr4::SMAP != 0
                    && (implicit || !self.flags.get(rflags::AC))
                {
                    return false;
                }
                access == Access::Read
                    || ((p & perm::WRITE != 0 || self.cr0 & cr0::WP == 0) && p & perm::DIRTY != 0)
            }
        }
    }

    /// A TLB miss: the walk of `crates/paging` for the current paging mode (32-bit §4.3, PAE
    /// §4.4 from the PDPTE registers, 4-level §4.5), with its access-rights checks (§4.6) and
    /// A/D updates (§4.8); a failed walk is a #PF with the walker's error code (§4.7). Under
    /// EPT the walk is two-dimensional (Vol. 3C §29.3) and may end in an EPT violation or
    /// misconfiguration exit. Returns the entry and whether the TLB may cache it (not when
    /// EPT refuses reads: an execute-only page must not satisfy a later read).
    #[inline(never)]
    fn walk<B: Bus>(
        &mut self,
        bus: &mut B,
        lin: u64,
        access: Access,
        user: bool,
        implicit: bool,
    ) -> Ex<(Entry, bool)> {
        let ctx = self
            .paging_context()
            .map_err(|_| self.unsupported_paging())?;
        let pa = paging::Access::new(access_kind(access), privilege(user, implicit));
        let ept = self.ept01()?;
        let pcid = self.pcid();
        let long = self.efer & efer::LMA != 0;
        let pdptes = if !long && self.cr4 & cr4::PAE != 0 {
            match self.pdptes {
                Some(p) => Some(p),
                None => {
                    let p = self.read_pdptes(bus, ept.as_ref())?;
                    self.pdptes = Some(p);
                    Some(p)
                }
            }
        } else {
            None
        };
        let now = self.now();
        let mut mem = PhysMem {
            bus: &mut *bus,
            icache: &mut self.icache,
            now,
            touched: false,
        };
        let ept = ept.as_ref();
        let found = if long {
            let f = Paging4::new(Gpa::new(self.cr3 & cr3::ADDR_MASK), ctx);
            walk_with(&f, ept, &mut mem, lin, pa)
        } else if let Some(pdptes) = pdptes {
            walk_with(&Pae::new(pdptes, ctx), ept, &mut mem, lin, pa)
        } else {
            walk_with(
                &Paging32::new(Gpa::new(self.cr3), ctx),
                ept,
                &mut mem,
                lin,
                pa,
            )
        };
        self.touched_device |= mem.touched;
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                // A page fault or an EPT violation invalidates the entry of the faulting
                // address (§4.10.4.1, Vol. 3C §29.4.3.1); a misconfiguration is harmless here.
                let c = self.tlb.context(pcid);
                self.tlb.drop_address(lin, c);
                return Err(e);
            }
        };
        let cache = found.ept.is_none_or(|(r, _)| r.read);
        Ok((self.tlb_entry(bus, &found, pcid), cache))
    }

    /// The walker's view of the control registers; `Err` for a paging feature the walker
    /// does not implement.
    #[inline]
    fn paging_context(&self) -> Result<PagingContext, paging::Unsupported> {
        // Of RFLAGS only AC affects translation: no need to evaluate the lazy status flags.
        let ac = if self.flags.get(rflags::AC) {
            rflags::AC
        } else {
            0
        };
        PagingContext::from_registers(self.cr0, self.cr4, self.efer, ac, MAXPHYADDR as u8, true)
    }

    /// The common miss, answered without the walker's bookkeeping
    /// (`LongMode::quick_translate`): 4-level paging without EPT, tables in RAM, every
    /// accessed flag (and a write's dirty flag) already set and the access permitted. `None`
    /// in every other case, faults included: [`Cpu::walk`] then walks.
    #[inline]
    fn quick_walk<B: Bus>(
        &self,
        bus: &B,
        lin: u64,
        access: Access,
        user: bool,
        implicit: bool,
    ) -> Option<Entry> {
        if self.efer & efer::LMA == 0 || (self.vmx.non_root && self.vmx.ept.is_some()) {
            return None;
        }
        let ctx = self.paging_context().ok()?;
        let pa = paging::Access::new(access_kind(access), privilege(user, implicit));
        let f = Paging4::new(Gpa::new(self.cr3 & cr3::ADDR_MASK), ctx);
        let ram = |a: Gpa| {
            let off = bus.ram_offset(Hfn::new(a.raw() >> 12))? + (a.raw() & 0xfff) as usize;
            Some(u64::from_le_bytes(
                bus.ram().get(off..off + 8)?.try_into().ok()?,
            ))
        };
        let q = f.quick_translate(Gva::new(lin), pa, ram)?;
        let frame = (q.page.raw() | (lin & q.size.offset_mask())) >> 12;
        let found = Found {
            frame,
            page_shift: q.size.shift() as u8,
            rights: q.rights,
            attrs: q.attrs,
            dirty: q.dirty,
            ept: None,
        };
        Some(self.tlb_entry(bus, &found, self.pcid()))
    }

    /// The TLB entry for a walk's result.
    #[inline]
    fn tlb_entry<B: Bus>(&self, bus: &B, found: &Found, pcid: u16) -> Entry {
        let rights = found.rights;
        let mut p = 0;
        if rights.user {
            p |= perm::USER;
        }
        if rights.write {
            p |= perm::WRITE;
        }
        // EPT refusing execution or a write without walking makes the access walk again.
        let (ept_exec, ept_clean_write) = match found.ept {
            None => (true, true),
            Some((r, dirty)) => (r.execute, r.write && dirty),
        };
        if rights.execute && ept_exec {
            p |= perm::EXEC;
        }
        if found.dirty && ept_clean_write {
            p |= perm::DIRTY;
        }
        let frame = found.frame;
        Entry {
            vpn1: 0,
            frame,
            ram: bus.ram_offset(Hfn::new(frame)).unwrap_or(usize::MAX),
            ctx: self.tlb.context(pcid),
            global: found.attrs.global,
            page_shift: found.page_shift,
            perm: p,
        }
    }

    fn unsupported_paging(&self) -> Exc {
        let rip = self.seg[Seg::Cs as usize].base.wrapping_add(self.rip);
        Exc::Error(Box::new(crate::error::CpuError::Unsupported {
            rip,
            what: "paging feature (protection keys or CET)",
        }))
    }

    /// Reads and checks the four PDPTEs of the table at CR3 (§4.4.1), through `ept` when it is
    /// in force (Vol. 3C §29.3: an EPT violation of a PDPTE load has qualification bit 7
    /// clear and no guest-linear address). A present entry with a reserved bit is #GP(0).
    fn read_pdptes<B: Bus>(&mut self, bus: &mut B, ept: Option<&Ept<Gpa, Hpa>>) -> Ex<Pdptes> {
        let now = self.now();
        let mut mem = PhysMem {
            bus,
            icache: &mut self.icache,
            now,
            touched: false,
        };
        let r = match ept {
            None => {
                load_pdptes::<Gpa, _>(&mut paging::Direct(&mut mem), self.cr3, MAXPHYADDR as u8)
                    .map_err(|_| Exc::from(Fault::gp(0)))
            }
            Some(ept) => {
                let mut tables = EptTables::for_pdpte_load(ept, &mut mem);
                load_pdptes(&mut tables, self.cr3, MAXPHYADDR as u8).map_err(|e| match e {
                    PdpteLoadError::Reserved(_) => Exc::from(Fault::gp(0)),
                    PdpteLoadError::Table(f) => nested_exc(f, 0),
                })
            }
        };
        self.touched_device |= mem.touched;
        r
    }

    /// Loads the PDPTE registers from the table at CR3 (MOV to CR3/CR0/CR4 with PAE paging,
    /// §4.4.1): a present entry with a reserved bit set is #GP(0); under EPT the table is
    /// reached through EPT, whose faults are VM exits.
    pub(crate) fn load_pdptes<B: Bus>(&mut self, bus: &mut B) -> Ex<()> {
        let ept = self.ept01()?;
        let p = self.read_pdptes(bus, ept.as_ref())?;
        self.pdptes = Some(p);
        Ok(())
    }

    // --- physical memory -------------------------------------------------------------------

    /// Reads `size` (1..=8) bytes at a translated location; the caller guarantees the bytes
    /// lie in one page.
    #[inline]
    pub(crate) fn phys_read<B: Bus>(&mut self, bus: &mut B, p: Phys, size: usize) -> u64 {
        match p {
            Phys::Ram(off) => {
                let ram = bus.ram();
                match ram.get(off..off + size) {
                    Some(bytes) => read_le(bytes),
                    None => mask_bytes(u64::MAX, size),
                }
            }
            Phys::Io(pa) => {
                self.touched_device = true;
                mask_bytes(bus.mmio_read(pa, size as u8, self.now()), size)
            }
        }
    }

    /// Writes `size` (1..=8) bytes at a translated location within one page, and drops any
    /// decoded instruction of that page (self-modifying code).
    #[inline]
    pub(crate) fn phys_write<B: Bus>(&mut self, bus: &mut B, p: Phys, size: usize, value: u64) {
        match p {
            Phys::Ram(off) => {
                if let Some(bytes) = bus.ram_mut().get_mut(off..off + size) {
                    write_le(bytes, value);
                }
                self.icache.note_write(off);
            }
            Phys::Io(pa) => {
                self.touched_device = true;
                bus.mmio_write(pa, size as u8, mask_bytes(value, size), self.now());
            }
        }
    }

    // --- linear memory ---------------------------------------------------------------------

    /// Reads `size` bytes at linear `lin`. `implicit` marks supervisor-mode implicit accesses
    /// (descriptor tables, the TSS, the IDT).
    pub(crate) fn read_lin<B: Bus>(
        &mut self,
        bus: &mut B,
        lin: u64,
        size: usize,
        implicit: bool,
    ) -> Ex<u64> {
        let lin = self.mask_lin(lin);
        if !implicit && let Some(v) = self.read_fast(bus, lin, size) {
            return Ok(v);
        }
        if (lin & 0xfff) as usize + size <= 4096 {
            let p = self.translate(bus, lin, Access::Read, implicit)?;
            return Ok(self.phys_read(bus, p, size));
        }
        let first = 4096 - (lin & 0xfff) as usize;
        let p0 = self.translate(bus, lin, Access::Read, implicit)?;
        let lin1 = self.mask_lin(lin.wrapping_add(first as u64));
        let p1 = self.translate(bus, lin1, Access::Read, implicit)?;
        let lo = self.phys_read(bus, p0, first);
        let hi = self.phys_read(bus, p1, size - first);
        Ok(lo | (hi << (8 * first)))
    }

    /// Writes `size` bytes at linear `lin` (both pages are translated before any byte is
    /// written, so a fault leaves memory untouched).
    pub(crate) fn write_lin<B: Bus>(
        &mut self,
        bus: &mut B,
        lin: u64,
        size: usize,
        value: u64,
        implicit: bool,
    ) -> Ex<()> {
        let lin = self.mask_lin(lin);
        if !implicit && self.write_fast(bus, lin, size, value) {
            return Ok(());
        }
        if (lin & 0xfff) as usize + size <= 4096 {
            let p = self.translate(bus, lin, Access::Write, implicit)?;
            self.phys_write(bus, p, size, value);
            return Ok(());
        }
        let first = 4096 - (lin & 0xfff) as usize;
        let p0 = self.translate(bus, lin, Access::Write, implicit)?;
        let lin1 = self.mask_lin(lin.wrapping_add(first as u64));
        let p1 = self.translate(bus, lin1, Access::Write, implicit)?;
        self.phys_write(bus, p0, first, value);
        self.phys_write(bus, p1, size - first, value >> (8 * first));
        Ok(())
    }

    /// Outside IA-32e mode linear addresses are 32 bits wide.
    #[inline]
    pub(crate) fn mask_lin(&self, lin: u64) -> u64 {
        if self.efer & efer::LMA != 0 {
            lin
        } else {
            lin & 0xffff_ffff
        }
    }

    /// Reads through a segment (checks, then paging). Inline at every caller: the data pages'
    /// hit, then calls of the full path.
    #[inline(always)]
    pub(crate) fn read_seg<B: Bus>(
        &mut self,
        bus: &mut B,
        seg: Seg,
        off: u64,
        size: usize,
    ) -> Ex<u64> {
        // 64-bit mode without FS/GS: the offset is the linear address, and a cached page is
        // canonical and needs no alignment check (`DataPages`).
        if self.mode == Mode::Long64
            && !matches!(seg, Seg::Fs | Seg::Gs)
            && let Some(v) = self.read_fast(bus, off, size)
        {
            return Ok(v);
        }
        let lin = self.linear(seg, off, size as u64, Access::Read)?;
        self.read_lin(bus, lin, size, false)
    }

    /// Writes through a segment (checks, then paging), as [`Cpu::read_seg`].
    #[inline(always)]
    pub(crate) fn write_seg<B: Bus>(
        &mut self,
        bus: &mut B,
        seg: Seg,
        off: u64,
        size: usize,
        value: u64,
    ) -> Ex<()> {
        if self.mode == Mode::Long64
            && !matches!(seg, Seg::Fs | Seg::Gs)
            && self.write_fast(bus, off, size, value)
        {
            return Ok(());
        }
        let lin = self.linear(seg, off, size as u64, Access::Write)?;
        self.write_lin(bus, lin, size, value, false)
    }

    /// Checks that a write through a segment would succeed (for read-modify-write operands,
    /// whose faults are write faults), returning the linear address.
    pub(crate) fn probe_write<B: Bus>(
        &mut self,
        bus: &mut B,
        seg: Seg,
        off: u64,
        size: usize,
    ) -> Ex<u64> {
        let lin = self.linear(seg, off, size as u64, Access::Write)?;
        let lin = self.mask_lin(lin);
        self.translate(bus, lin, Access::Write, false)?;
        if (lin & 0xfff) as usize + size > 4096 {
            let next = self.mask_lin((lin | 0xfff).wrapping_add(1));
            self.translate(bus, next, Access::Write, false)?;
        }
        Ok(lin)
    }
}

/// `bytes` (at most 8) as a little-endian value. The usual sizes are copies of a known
/// length, which compile to one load instead of a call to `memcpy`.
#[inline(always)]
pub(crate) fn read_le(bytes: &[u8]) -> u64 {
    match *bytes {
        [a, b, c, d, e, f, g, h] => u64::from_le_bytes([a, b, c, d, e, f, g, h]),
        [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
        [a, b] => u64::from(u16::from_le_bytes([a, b])),
        [a] => u64::from(a),
        _ => bytes
            .iter()
            .take(8)
            .rev()
            .fold(0, |v, &b| (v << 8) | u64::from(b)),
    }
}

/// Stores the low `bytes.len()` (at most 8) bytes of `v` into `bytes`, as [`read_le`] reads.
#[inline(always)]
pub(crate) fn write_le(bytes: &mut [u8], v: u64) {
    match bytes.len() {
        8 => bytes.copy_from_slice(&v.to_le_bytes()),
        4 => bytes.copy_from_slice(&(v as u32).to_le_bytes()),
        2 => bytes.copy_from_slice(&(v as u16).to_le_bytes()),
        _ => {
            for (i, b) in bytes.iter_mut().take(8).enumerate() {
                *b = (v >> (8 * i)) as u8;
            }
        }
    }
}

#[inline]
fn mask_bytes(v: u64, size: usize) -> u64 {
    if size >= 8 {
        v
    } else {
        v & ((1u64 << (8 * size)) - 1)
    }
}

/// Canonical for 48-bit linear addresses (§3.3.7.1).
#[inline]
pub(crate) fn canonical(lin: u64) -> bool {
    ((lin << 16) as i64 >> 16) as u64 == lin
}

/// The privilege of an access, for the walker.
#[inline]
fn privilege(user: bool, implicit: bool) -> Privilege {
    if user {
        Privilege::User
    } else if implicit {
        Privilege::Implicit
    } else {
        Privilege::Supervisor
    }
}

/// Kind of an access, for the walker.
#[inline]
fn access_kind(access: Access) -> AccessKind {
    match access {
        Access::Read => AccessKind::Read,
        Access::Write => AccessKind::Write,
        Access::Exec => AccessKind::Fetch,
    }
}

/// What a successful walk leaves for the TLB entry.
struct Found {
    /// The (host-)physical frame of the accessed 4-KiB page.
    frame: u64,
    /// log2 of the page size: the smaller of the guest page and the EPT page.
    page_shift: u8,
    /// The guest's combined rights.
    rights: PageRights,
    /// The guest leaf's attributes.
    attrs: PageAttrs,
    /// The guest leaf's dirty flag is set (after this access).
    dirty: bool,
    /// Under EPT: the EPT rights and whether the EPT leaf needs no dirty-flag update.
    ept: Option<(EptRights, bool)>,
}

/// The walk of guest format `f` for `lin`, one-dimensional or over `ept`, with its faults as
/// exceptions: #PF, or an EPT violation or misconfiguration exit.
#[inline(always)]
fn walk_with<F, M>(
    f: &F,
    ept: Option<&Ept<Gpa, Hpa>>,
    mem: &mut M,
    lin: u64,
    access: paging::Access,
) -> Ex<Found>
where
    F: PagingFormat<
            Input = Gva,
            Output = Gpa,
            Access = paging::Access,
            Rights = PageRights,
            Attrs = PageAttrs,
            Fault = PageFault,
        >,
    M: paging::Memory<Gpa> + paging::Memory<Hpa>,
{
    let gva = Gva::new(lin);
    match ept {
        None => match paging::translate(f, mem, gva, access) {
            Ok(t) => Ok(Found {
                frame: t.addr.raw() >> 12,
                page_shift: t.size.shift() as u8,
                rights: t.rights,
                attrs: t.attrs,
                dirty: t.dirty,
                ept: None,
            }),
            Err(WalkError::Fault(pf)) => Err(Fault::page(lin, pf.error_code).into()),
            // `PhysMem` never fails: unbacked table memory reads as all ones.
            Err(WalkError::Table(_)) => Err(Fault::page(lin, pf::P | pf::RSVD).into()),
        },
        Some(ept) => match paging::translate_nested(f, ept, mem, gva, access) {
            Ok(t) => Ok(Found {
                frame: t.addr().raw() >> 12,
                page_shift: t.size().shift() as u8,
                rights: t.guest.rights,
                attrs: t.guest.attrs,
                dirty: t.guest.dirty,
                ept: Some((t.ept.rights, t.ept.dirty)),
            }),
            Err(e) => Err(nested_exc(e, lin)),
        },
    }
}

/// The exception or VM exit of a failed two-dimensional walk (or PDPTE load) for linear
/// address `lin` (used only when the qualification says the guest-linear address is valid).
fn nested_exc(e: NestedFault<Gpa, Hpa>, lin: u64) -> Exc {
    match e {
        NestedFault::Guest(pf) => Fault::page(lin, pf.error_code).into(),
        NestedFault::Ept { fault, gpa, .. } => Exc::vm_exit(ept_exit(fault, gpa.raw(), Some(lin))),
        // `PhysMem` never fails: unbacked table memory reads as all ones.
        NestedFault::Memory(_) => Fault::page(lin, pf::P | pf::RSVD).into(),
    }
}

/// Qualification bit 7: the guest-linear-address field is valid (Vol. 3C Table 28-7).
const QUAL_LINEAR_VALID: u64 = 1 << 7;

/// The VM exit of an EPT fault at guest-physical `gpa`; `gla` is recorded when the
/// qualification says it is valid.
fn ept_exit(fault: EptFault, gpa: u64, gla: Option<u64>) -> VmExit {
    match fault {
        EptFault::Violation(v) => {
            let q = v.exit_qualification();
            VmExit::ept_violation(q, gpa, gla.filter(|_| q & QUAL_LINEAR_VALID != 0))
        }
        EptFault::Misconfig { .. } => VmExit::ept_misconfig(gpa),
    }
}

/// Physical memory as the page walker sees it: RAM, or MMIO for table reads outside RAM
/// (unbacked reads are all ones, so a walk never fails for lack of memory). Writes of A/D flags
/// drop decoded instructions of the page like any other write.
struct PhysMem<'a, B> {
    bus: &'a mut B,
    icache: &'a mut ICache,
    now: VirtualTime,
    touched: bool,
}

impl<B: Bus> PhysMem<'_, B> {
    fn read(&mut self, addr: Hpa, size: usize) -> u64 {
        let off = self
            .bus
            .ram_offset(addr.frame())
            .map(|o| o + addr.page_offset() as usize);
        match off.and_then(|o| self.bus.ram().get(o..o + size)) {
            Some(bytes) => {
                let mut b = [0u8; 8];
                b[..size].copy_from_slice(bytes);
                u64::from_le_bytes(b)
            }
            None => {
                self.touched = true;
                mask_bytes(self.bus.mmio_read(addr, size as u8, self.now), size)
            }
        }
    }

    fn write(&mut self, addr: Hpa, size: usize, v: u64) {
        let off = self
            .bus
            .ram_offset(addr.frame())
            .map(|o| o + addr.page_offset() as usize);
        if let Some(o) = off
            && let Some(bytes) = self.bus.ram_mut().get_mut(o..o + size)
        {
            bytes.copy_from_slice(&v.to_le_bytes()[..size]);
            self.icache.note_write(o);
            return;
        }
        self.touched = true;
        self.bus.mmio_write(addr, size as u8, v, self.now);
    }
}

/// Guest-physical memory where no EPT translates it (root operation, or non-root without
/// "enable EPT"): guest-physical addresses are host-physical.
impl<B: Bus> paging::Memory<Gpa> for PhysMem<'_, B> {
    fn read_u32(&mut self, addr: Gpa) -> Result<u32, paging::MemoryError<Gpa>> {
        Ok(self.read(Hpa::new(addr.raw()), 4) as u32)
    }
    fn read_u64(&mut self, addr: Gpa) -> Result<u64, paging::MemoryError<Gpa>> {
        Ok(self.read(Hpa::new(addr.raw()), 8))
    }
    fn write_u32(&mut self, addr: Gpa, value: u32) -> Result<(), paging::MemoryError<Gpa>> {
        self.write(Hpa::new(addr.raw()), 4, u64::from(value));
        Ok(())
    }
    fn write_u64(&mut self, addr: Gpa, value: u64) -> Result<(), paging::MemoryError<Gpa>> {
        self.write(Hpa::new(addr.raw()), 8, value);
        Ok(())
    }
}

/// Host-physical memory: the EPT dimension, and the bus.
impl<B: Bus> paging::Memory<Hpa> for PhysMem<'_, B> {
    fn read_u32(&mut self, addr: Hpa) -> Result<u32, paging::MemoryError<Hpa>> {
        Ok(self.read(addr, 4) as u32)
    }
    fn read_u64(&mut self, addr: Hpa) -> Result<u64, paging::MemoryError<Hpa>> {
        Ok(self.read(addr, 8))
    }
    fn write_u32(&mut self, addr: Hpa, value: u32) -> Result<(), paging::MemoryError<Hpa>> {
        self.write(addr, 4, u64::from(value));
        Ok(())
    }
    fn write_u64(&mut self, addr: Hpa, value: u64) -> Result<(), paging::MemoryError<Hpa>> {
        self.write(addr, 8, value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StopReason;
    use crate::test_utils::*;

    /// A 4-KiB page table for 0x400000..0x600000 at 0x4000; PTE 0 maps 0x400000.
    const PT: u64 = 0x4000;
    const A: u64 = 0xaaaa_aaaa_aaaa_aaaa;
    const B: u64 = 0xbbbb_bbbb_bbbb_bbbb;

    fn env(code: &[u8]) -> (Cpu, TestBus) {
        let (cpu, mut bus) = long_env(code);
        bus.write_u64(0x3000 + 8 * 2, PT | 7); // PD entry 2 -> PT
        bus.write_u64(PT, 0x50_0007);
        bus.write_u64(0x50_0000, A);
        bus.write_u64(0x51_0000, B);
        (cpu, bus)
    }

    #[rustfmt::skip]
    const STALE: &[u8] = &[
        0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x40, 0x00,             // mov rax, [0x400000]
        0x48, 0xc7, 0x04, 0x25, 0x00, 0x40, 0x00, 0x00, 0x07, 0x00, 0x51, 0x00, // mov qword [0x4000], 0x510007
        0x48, 0x8b, 0x1c, 0x25, 0x00, 0x00, 0x40, 0x00,             // mov rbx, [0x400000]
        0x0f, 0x01, 0x3c, 0x25, 0x00, 0x00, 0x40, 0x00,             // invlpg [0x400000]
        0x48, 0x8b, 0x0c, 0x25, 0x00, 0x00, 0x40, 0x00,             // mov rcx, [0x400000]
        0x48, 0xc7, 0x04, 0x25, 0x00, 0x40, 0x00, 0x00, 0x07, 0x00, 0x50, 0x00, // mov qword [0x4000], 0x500007
        0x48, 0x8b, 0x14, 0x25, 0x00, 0x00, 0x40, 0x00,             // mov rdx, [0x400000]
        0x0f, 0x20, 0xdf,                                           // mov rdi, cr3
        0x0f, 0x22, 0xdf,                                           // mov cr3, rdi
        0x48, 0x8b, 0x34, 0x25, 0x00, 0x00, 0x40, 0x00,             // mov rsi, [0x400000]
        0xf4,                                                       // hlt
    ];

    #[test]
    fn skipped_flush_sees_the_stale_translation() {
        let (mut cpu, mut bus) = env(STALE);
        assert_eq!(cpu.run(&mut bus, 100), Ok(StopReason::Halted));
        assert_eq!(cpu.gpr[0], A);
        assert_eq!(cpu.gpr[3], A, "no flush: the TLB still maps the old frame");
        assert_eq!(cpu.gpr[1], B, "INVLPG: fresh translation");
        assert_eq!(cpu.gpr[2], B, "no flush after remapping back: stale again");
        assert_eq!(cpu.gpr[6], A, "MOV to CR3 flushes non-global entries");
        // The walk set the accessed flag of the PTE (it was rewritten without it since).
        assert_eq!(bus.read_u64(PT) & 0x20, 0x20);
    }

    #[test]
    fn global_pages_survive_cr3_but_not_invlpg_and_pcid_no_flush_keeps_entries() {
        // Global mapping, CR4.PGE: the CR3 reload keeps it.
        let (mut cpu, mut bus) = env(STALE);
        bus.write_u64(PT, 0x50_0107);
        cpu.cr4 |= cr4::PGE;
        // Patch the two PTE writes to keep G set.
        bus.ram[CODE as usize + 8 + 9] = 0x01;
        bus.ram[CODE as usize + 44 + 9] = 0x01;
        assert_eq!(cpu.run(&mut bus, 100), Ok(StopReason::Halted));
        assert_eq!((cpu.gpr[3], cpu.gpr[1]), (A, B));
        assert_eq!(cpu.gpr[6], B, "a global translation survives MOV to CR3");

        // PCIDs: MOV to CR3 with bit 63 set does not flush the PCID's entries.
        #[rustfmt::skip]
        let code: &[u8] = &[
            0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x40, 0x00,             // mov rax, [0x400000]
            0x48, 0xc7, 0x04, 0x25, 0x00, 0x40, 0x00, 0x00, 0x07, 0x00, 0x51, 0x00, // mov qword [0x4000], 0x510007
            0x0f, 0x20, 0xdf,                                           // mov rdi, cr3
            0x48, 0x0f, 0xba, 0xef, 0x3f,                               // bts rdi, 63
            0x0f, 0x22, 0xdf,                                           // mov cr3, rdi
            0x48, 0x8b, 0x1c, 0x25, 0x00, 0x00, 0x40, 0x00,             // mov rbx, [0x400000]
            0x48, 0x0f, 0xba, 0xf7, 0x3f,                               // btr rdi, 63
            0x0f, 0x22, 0xdf,                                           // mov cr3, rdi
            0x48, 0x8b, 0x0c, 0x25, 0x00, 0x00, 0x40, 0x00,             // mov rcx, [0x400000]
            0xf4,
        ];
        let (mut cpu, mut bus) = env(code);
        cpu.cr4 |= cr4::PCIDE;
        cpu.cr3 |= 5;
        assert_eq!(cpu.run(&mut bus, 100), Ok(StopReason::Halted));
        assert_eq!(cpu.cr3 & (1 << 63), 0, "the no-flush bit is not stored");
        assert_eq!(cpu.gpr[3], A, "no-flush CR3 load keeps the PCID's entries");
        assert_eq!(cpu.gpr[1], B, "a flushing CR3 load drops them");
    }

    #[test]
    fn write_sets_dirty_and_rights_are_enforced() {
        // mov qword [0x400000], rax ; then at CPL 3 a supervisor page faults (tested by walk).
        let (mut cpu, mut bus) = env(&[0x48, 0x89, 0x04, 0x25, 0x00, 0x00, 0x40, 0x00, 0xf4]);
        assert_eq!(cpu.run(&mut bus, 10), Ok(StopReason::Halted));
        assert_eq!(bus.read_u64(PT) & 0x60, 0x60, "A and D set");
        // Read-only page with CR0.WP = 1: supervisor write faults with P|W.
        let (mut cpu, mut bus) = env(&[]);
        bus.write_u64(PT, 0x50_0005);
        cpu.cr0 |= cr0::WP;
        cpu.icache.attach(&bus);
        let e = cpu.write_lin(&mut bus, 0x40_0000, 8, 1, false).unwrap_err();
        assert_eq!(e, Exc::Fault(Fault::page(0x40_0000, pf::P | pf::W)));
        // WP = 0: allowed.
        cpu.cr0 &= !cr0::WP;
        assert_eq!(cpu.write_lin(&mut bus, 0x40_0000, 8, 1, false), Ok(()));
        // User access to a supervisor page: P|U.
        bus.write_u64(PT, 0x50_0003);
        cpu.tlb.flush_all();
        cpu.cpl = 3;
        let e = cpu.read_lin(&mut bus, 0x40_0000, 8, false).unwrap_err();
        assert_eq!(e, Exc::Fault(Fault::page(0x40_0000, pf::P | pf::U)));
    }

    #[test]
    fn invpcid_single_context_and_bad_type() {
        #[rustfmt::skip]
        let code: &[u8] = &[
            0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x40, 0x00,             // mov rax, [0x400000]
            0x48, 0xc7, 0x04, 0x25, 0x00, 0x40, 0x00, 0x00, 0x07, 0x00, 0x51, 0x00, // remap to B
            0x48, 0xc7, 0xc1, 0x01, 0x00, 0x00, 0x00,                   // mov rcx, 1
            0x66, 0x0f, 0x38, 0x82, 0x0f,                               // invpcid rcx, [rdi] (PCID 6)
            0x48, 0x8b, 0x1c, 0x25, 0x00, 0x00, 0x40, 0x00,             // mov rbx, [0x400000]
            0x66, 0x0f, 0x38, 0x82, 0x0e,                               // invpcid rcx, [rsi] (PCID 5)
            0x48, 0x8b, 0x14, 0x25, 0x00, 0x00, 0x40, 0x00,             // mov rdx, [0x400000]
            0x48, 0xc7, 0xc1, 0x04, 0x00, 0x00, 0x00,                   // mov rcx, 4
            0x66, 0x0f, 0x38, 0x82, 0x0e,                               // invpcid rcx, [rsi]: #GP
        ];
        let (mut cpu, mut bus) = env(code);
        cpu.cr4 |= cr4::PCIDE;
        cpu.cr3 |= 5;
        bus.write_u64(0x20_0000, 6);
        bus.write_u64(0x20_0010, 5);
        cpu.gpr[7] = 0x20_0000;
        cpu.gpr[6] = 0x20_0010;
        cpu.icache.attach(&bus);
        let fault = loop {
            match cpu.step(&mut bus) {
                Ok(()) => {}
                Err(Exc::Fault(f)) => break f,
                Err(e) => panic!("{e:?}"),
            }
        };
        assert_eq!(fault, Fault::gp(0), "INVPCID type 4 is #GP(0)");
        assert_eq!(
            cpu.gpr[3], A,
            "another PCID's flush leaves this PCID's entries"
        );
        assert_eq!(cpu.gpr[2], B, "single-context INVPCID of the current PCID");
    }

    /// The TLB hit path re-checks rights with `rights_ok`; it must agree with the walker's
    /// rules (`PageRights::permit`) for every combination, or a hit would grant what a walk
    /// refuses.
    #[test]
    fn tlb_rights_check_agrees_with_the_walker() {
        let mut cpu = Cpu::new();
        for bits in 0..(1u32 << 10) {
            let b = |i: u32| bits & (1 << i) != 0;
            let rights = PageRights {
                user: b(0),
                write: b(1),
                execute: b(2),
            };
            cpu.cr0 = if b(3) { cr0::WP } else { 0 };
            cpu.cr4 = if b(4) { cr4::SMEP } else { 0 } | if b(5) { cr4::SMAP } else { 0 };
            cpu.flags.set_bits(2 | if b(6) { rflags::AC } else { 0 });
            let (user, implicit) = (b(7), b(8) && !b(7));
            for access in [Access::Read, Access::Write, Access::Exec] {
                let ctx =
                    PagingContext::from_registers(cpu.cr0, cpu.cr4, 0, cpu.flags.bits(), 39, true)
                        .unwrap();
                let kind = match access {
                    Access::Read => AccessKind::Read,
                    Access::Write => AccessKind::Write,
                    Access::Exec => AccessKind::Fetch,
                };
                let privilege = if user {
                    Privilege::User
                } else if implicit {
                    Privilege::Implicit
                } else {
                    Privilege::Supervisor
                };
                let want = rights.permit(&ctx, paging::Access::new(kind, privilege));
                let mut p = perm::DIRTY;
                if rights.user {
                    p |= perm::USER;
                }
                if rights.write {
                    p |= perm::WRITE;
                }
                if rights.execute {
                    p |= perm::EXEC;
                }
                assert_eq!(
                    cpu.rights_ok(p, access, user, implicit),
                    want,
                    "{bits:#b} {access:?}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tlb_properties {
    use super::*;
    use crate::test_utils::*;
    use proptest::prelude::*;

    const PT: u64 = 0x4000;
    const BASE: u64 = 0x40_0000;
    const PAGES: u64 = 8;

    #[derive(Clone, Debug)]
    enum Op {
        /// Access page `i` (write?, user?).
        Access(u64, bool, bool),
        /// Rewrite PTE `i` behind the TLB's back.
        Edit(u64, u64),
        /// INVLPG page `i`.
        Invlpg(u64),
        /// MOV to CR3 (flushes non-global entries).
        ReloadCr3,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..PAGES, any::<bool>(), any::<bool>()).prop_map(|(i, w, u)| Op::Access(i, w, u)),
            2 => (0..PAGES, 0u64..64, 0u64..8).prop_map(|(i, f, flags)| Op::Edit(i, ((0x500 + f) << 12) | flags)),
            2 => (0..PAGES).prop_map(Op::Invlpg),
            1 => Just(Op::ReloadCr3),
        ]
    }

    fn access(
        cpu: &mut Cpu,
        bus: &mut TestBus,
        i: u64,
        write: bool,
        user: bool,
    ) -> Result<Phys, Exc> {
        cpu.cpl = if user { 3 } else { 0 };
        let a = if write { Access::Write } else { Access::Read };
        cpu.translate(bus, BASE + i * 4096 + 8, a, false)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Once the architectural flush for a page has happened (INVLPG or MOV to CR3) and the
        /// page has not been edited since, a translation through the TLB equals a fresh walk.
        #[test]
        fn after_the_flush_the_tlb_agrees_with_a_fresh_walk(ops in proptest::collection::vec(op(), 1..80)) {
            let (mut cpu, mut bus) = long_env(&[]);
            bus.write_u64(0x3000 + 8 * 2, PT | 7);
            for i in 0..PAGES {
                bus.write_u64(PT + 8 * i, ((0x500 + i) << 12) | 7);
            }
            cpu.icache.attach(&bus);
            let mut fresh = long_mode(&mut TestBus::new());
            fresh.cr3 = cpu.cr3;
            fresh.icache.attach(&bus);
            let mut stale = [false; PAGES as usize];
            for op in ops {
                match op {
                    Op::Access(i, w, u) => {
                        let got = access(&mut cpu, &mut bus, i, w, u);
                        fresh.tlb.flush_all();
                        let want = access(&mut fresh, &mut bus, i, w, u);
                        if !stale[i as usize] {
                            prop_assert_eq!(got, want, "page {} write {} user {}", i, w, u);
                        }
                    }
                    Op::Edit(i, pte) => {
                        bus.write_u64(PT + 8 * i, pte);
                        stale[i as usize] = true;
                    }
                    Op::Invlpg(i) => {
                        cpu.tlb.flush_page(BASE + i * 4096);
                        stale[i as usize] = false;
                    }
                    Op::ReloadCr3 => {
                        cpu.tlb.flush_non_global();
                        stale = [false; PAGES as usize];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod ept_tests {
    //! EPT in the CPU's translation (Vol. 3C §29.3) and the VMX tagging of the TLB (§29.4).
    //! The guest is `long_mode`'s: 4-level paging identity-mapping the first GiB with 2-MiB
    //! pages, its tables at guest-physical 0x1000–0x3fff. The EPT maps guest-physical
    //! 0–2 MiB with 4-KiB pages (identity unless a test remaps one) and 2–8 MiB with 2-MiB
    //! pages, identity.
    use super::*;
    use crate::test_utils::*;
    use x86::paging::{Eptp, ept, pte};

    const EPT_PML4: u64 = 0x60_0000;
    const EPT_PDPT: u64 = 0x60_1000;
    const EPT_PD: u64 = 0x60_2000;
    const EPT_PT: u64 = 0x60_3000;
    /// Write-back memory type in a leaf.
    const WB: u64 = 6 << 3;
    const RWX: u64 = ept::RWX | WB;
    /// A data page: linear = guest-physical 0x5000, host-physical 0x7000 (remapped).
    const LIN: u64 = 0x5000;
    const HOST: u64 = 0x7000;
    const BITS_7_8: u64 = 0x180;

    fn eptp(ad: bool) -> Eptp {
        Eptp::new(EPT_PML4 | (3 << 3) | 6 | if ad { Eptp::AD_ENABLE } else { 0 })
    }

    fn set_pte(bus: &mut TestBus, gpa: u64, hpa: u64, flags: u64) {
        bus.write_u64(EPT_PT + (gpa >> 12) * 8, hpa | flags);
    }

    fn pte(bus: &TestBus, gpa: u64) -> u64 {
        bus.read_u64(EPT_PT + (gpa >> 12) * 8)
    }

    /// A CPU in non-root operation with EPT (A/D if `ad`) and VPID `vpid`.
    fn setup(ad: bool, vpid: u16) -> (Cpu, TestBus) {
        let mut bus = TestBus::new();
        let mut cpu = long_mode(&mut bus);
        bus.write_u64(EPT_PML4, EPT_PDPT | ept::RWX);
        bus.write_u64(EPT_PDPT, EPT_PD | ept::RWX);
        bus.write_u64(EPT_PD, EPT_PT | ept::RWX);
        for i in 1..4 {
            bus.write_u64(EPT_PD + 8 * i, (i << 21) | ept::LARGE_PAGE | RWX);
        }
        for i in 0..512 {
            set_pte(&mut bus, i << 12, i << 12, RWX);
        }
        set_pte(&mut bus, LIN, HOST, RWX);
        bus.write_u64(HOST, 0x1122_3344_5566_7788);
        bus.write_u64(LIN, 0xdead);
        cpu.icache.attach(&bus);
        cpu.vmx.non_root = true;
        cpu.vmx.ept = Some(eptp(ad));
        cpu.vmx.vpid = vpid;
        cpu.tlb_vmx_transition();
        (cpu, bus)
    }

    fn violation(q: u64, gpa: u64, gla: Option<u64>) -> Exc {
        Exc::vm_exit(VmExit::ept_violation(q, gpa, gla))
    }

    #[test]
    fn both_dimensions_translate_and_ept_flags_follow_eptp_bit_6() {
        for ad in [false, true] {
            let (mut cpu, mut bus) = setup(ad, 1);
            assert_eq!(
                cpu.read_lin(&mut bus, LIN, 8, false),
                Ok(0x1122_3344_5566_7788),
                "the host page, not the guest-physical one"
            );
            let flags = ept::ACCESSED | ept::DIRTY;
            // Guest paging-structure accesses are writes for EPT A/D (§29.3.5).
            for table in [0x1000, 0x2000, 0x3000] {
                let want = if ad { flags } else { 0 };
                assert_eq!(pte(&bus, table) & flags, want, "table {table:#x} ad {ad}");
            }
            let want = if ad { ept::ACCESSED } else { 0 };
            assert_eq!(pte(&bus, LIN) & flags, want, "a read sets A only");
            assert_eq!(bus.read_u64(EPT_PD) & flags, want, "non-leaf: A");
            cpu.write_lin(&mut bus, LIN, 8, 5, false).unwrap();
            assert_eq!(bus.read_u64(HOST), 5);
            let want = if ad { flags } else { 0 };
            assert_eq!(pte(&bus, LIN) & flags, want, "a write sets D");
            assert_eq!(pte(&bus, 0x9000) & flags, 0, "an unused page is untouched");
        }
    }

    #[test]
    fn ept_violations_have_the_exact_qualification() {
        // (EPT flags of the data page, access, qualification).
        let cases = [
            (0, Access::Read, 0b001 | BITS_7_8),
            (0, Access::Write, 0b010 | BITS_7_8),
            (0, Access::Exec, 0b100 | BITS_7_8),
            (ept::READ | WB, Access::Write, 0b010 | 0b001_000 | BITS_7_8),
            (
                ept::READ | ept::WRITE | WB,
                Access::Exec,
                0b100 | 0b011_000 | BITS_7_8,
            ),
            (
                ept::EXECUTE | WB,
                Access::Read,
                0b001 | 0b100_000 | BITS_7_8,
            ),
            (
                ept::EXECUTE | WB,
                Access::Write,
                0b010 | 0b100_000 | BITS_7_8,
            ),
        ];
        for (flags, access, q) in cases {
            let (mut cpu, mut bus) = setup(false, 1);
            set_pte(&mut bus, LIN, HOST, flags);
            let lin = LIN | 0x123;
            let r = cpu.translate(&mut bus, lin, access, false);
            assert_eq!(
                r,
                Err(violation(q, lin, Some(lin))),
                "flags {flags:#x} {access:?}"
            );
        }
    }

    #[test]
    fn a_cached_read_does_not_let_a_write_or_fetch_through() {
        let (mut cpu, mut bus) = setup(false, 1);
        set_pte(&mut bus, LIN, HOST, ept::READ | WB);
        // The guest page is dirty already: only EPT can make the write walk.
        bus.write_u64(0x3000, 0x87 | pte::ACCESSED | pte::DIRTY);
        assert!(cpu.translate(&mut bus, LIN, Access::Read, false).is_ok());
        assert!(cpu.tlb.lookup(LIN, 0).is_some(), "cached");
        let q = 0b010 | 0b001_000 | BITS_7_8;
        assert_eq!(
            cpu.write_lin(&mut bus, LIN, 1, 0, false),
            Err(violation(q, LIN, Some(LIN)))
        );
        let q = 0b100 | 0b001_000 | BITS_7_8;
        assert_eq!(
            cpu.translate(&mut bus, LIN, Access::Exec, false),
            Err(violation(q, LIN, Some(LIN)))
        );
        // The violation dropped the entry of the address (§29.4.3.1).
        assert!(cpu.tlb.lookup(LIN, 0).is_none());
    }

    #[test]
    fn execute_only_pages_fetch_but_never_read_from_the_tlb() {
        let (mut cpu, mut bus) = setup(false, 1);
        set_pte(&mut bus, LIN, HOST, ept::EXECUTE | WB);
        let p = cpu.translate(&mut bus, LIN, Access::Exec, false);
        assert_eq!(p, Ok(Phys::Ram(HOST as usize)));
        let q = 0b001 | 0b100_000 | BITS_7_8;
        assert_eq!(
            cpu.translate(&mut bus, LIN, Access::Read, false),
            Err(violation(q, LIN, Some(LIN)))
        );
        assert_eq!(cpu.translate(&mut bus, LIN, Access::Exec, false), p);
        assert_eq!(
            cpu.translate(&mut bus, LIN, Access::Read, false),
            Err(violation(q, LIN, Some(LIN)))
        );
    }

    #[test]
    fn guest_paging_structure_violations() {
        for ad in [false, true] {
            // The guest PD (guest-physical 0x3000) is not mapped by EPT.
            let (mut cpu, mut bus) = setup(ad, 1);
            set_pte(&mut bus, 0x3000, 0x3000, 0);
            // A read of a paging structure: bit 0 (and bit 1 with A/D, §29.3.3.2), bit 7 but
            // not bit 8; the guest-physical address of the PDE (index 0).
            let q = if ad { 0b011 } else { 0b001 } | 0x80;
            let r = cpu.translate(&mut bus, LIN, Access::Exec, false);
            assert_eq!(r, Err(violation(q, 0x3000, Some(LIN))), "ad {ad}");
            // Read-only guest tables: without A/D, the PDE's accessed-flag write is refused.
            let (mut cpu, mut bus) = setup(ad, 1);
            set_pte(&mut bus, 0x3000, 0x3000, ept::READ | WB);
            let q = 0b010 | if ad { 0b001 } else { 0 } | 0b001_000 | 0x80;
            let r = cpu.translate(&mut bus, LIN, Access::Read, false);
            assert_eq!(r, Err(violation(q, 0x3000, Some(LIN))), "ad {ad}");
        }
    }

    #[test]
    fn misconfigurations_name_the_guest_physical_address() {
        let (mut cpu, mut bus) = setup(false, 1);
        // Write without read (§29.3.3.1).
        set_pte(&mut bus, LIN, HOST, ept::WRITE | WB);
        let r = cpu.translate(&mut bus, LIN | 8, Access::Read, false);
        assert_eq!(r, Err(Exc::vm_exit(VmExit::ept_misconfig(LIN | 8))));
        // A reserved memory type in a 2-MiB leaf.
        bus.write_u64(
            EPT_PD + 8,
            (1 << 21) | ept::LARGE_PAGE | ept::RWX | (2 << 3),
        );
        let r = cpu.translate(&mut bus, 0x20_0010, Access::Write, false);
        assert_eq!(r, Err(Exc::vm_exit(VmExit::ept_misconfig(0x20_0010))));
    }

    #[test]
    fn large_ept_pages_and_the_combined_page_size() {
        let (mut cpu, mut bus) = setup(true, 1);
        // 2 MiB guest page over a 2 MiB EPT page: one 2 MiB combined page.
        let p = cpu.translate(&mut bus, 0x40_0123, Access::Write, false);
        assert_eq!(p, Ok(Phys::Ram(0x40_0123)));
        assert_eq!(cpu.tlb.lookup(0x40_0000, 0).map(|e| e.page_shift), Some(21));
        assert_eq!(bus.read_u64(EPT_PD + 16) & ept::DIRTY, ept::DIRTY);
        // 2 MiB guest page over 4 KiB EPT pages: 4 KiB.
        cpu.translate(&mut bus, 0x9000, Access::Read, false)
            .unwrap();
        assert_eq!(cpu.tlb.lookup(0x9000, 0).map(|e| e.page_shift), Some(12));
        // A 1 GiB guest page over a 1 GiB EPT page (guest-physical 1–2 GiB → host 0).
        bus.write_u64(0x2000 + 8, 0x4000_0000 | 0x87);
        bus.write_u64(EPT_PDPT + 8, ept::LARGE_PAGE | RWX);
        let p = cpu.translate(&mut bus, 0x4000_5008, Access::Read, false);
        assert_eq!(p, Ok(Phys::Ram(0x5008)));
        assert_eq!(
            cpu.tlb.lookup(0x4000_5000, 0).map(|e| e.page_shift),
            Some(30)
        );
        // INVLPG elsewhere in the combined page drops it.
        cpu.tlb.flush_page(0x4123_4000);
        assert!(cpu.tlb.lookup(0x4000_5000, 0).is_none());
    }

    #[test]
    fn guest_paging_off_translates_guest_physical_addresses() {
        let (mut cpu, mut bus) = setup(true, 1);
        cpu.cr0 &= !cr0::PG;
        cpu.efer &= !efer::LMA;
        assert_eq!(
            cpu.read_lin(&mut bus, LIN, 8, false),
            Ok(0x1122_3344_5566_7788)
        );
        assert_eq!(pte(&bus, LIN) & ept::ACCESSED, ept::ACCESSED);
        assert_eq!(pte(&bus, LIN) & ept::DIRTY, 0);
        cpu.write_lin(&mut bus, LIN, 8, 7, false).unwrap();
        assert_eq!(
            pte(&bus, LIN) & ept::DIRTY,
            ept::DIRTY,
            "the write walked again"
        );
        assert_eq!(bus.read_u64(HOST), 7);
        // Cached: an EPT edit without INVEPT is not seen...
        set_pte(&mut bus, LIN, 0x8000, RWX);
        assert_eq!(cpu.read_lin(&mut bus, LIN, 8, false), Ok(7));
        // ...but INVEPT single-context drops guest-physical mappings.
        cpu.tlb.flush_ept(EPT_PML4);
        assert_eq!(cpu.read_lin(&mut bus, LIN, 8, false), Ok(0));
        // A violation: the linear address is the guest-physical one (bits 7 and 8).
        set_pte(&mut bus, 0x9000, 0x9000, 0);
        let r = cpu.translate(&mut bus, 0x9abc, Access::Read, false);
        assert_eq!(r, Err(violation(0b001 | BITS_7_8, 0x9abc, Some(0x9abc))));
        // Without EPT, paging off is the identity.
        cpu.vmx.ept = None;
        cpu.tlb_vmx_transition();
        assert_eq!(cpu.read_lin(&mut bus, LIN, 8, false), Ok(0xdead));
    }

    #[test]
    fn mmio_behind_ept_goes_to_the_host_physical_address() {
        let (mut cpu, mut bus) = setup(false, 1);
        set_pte(&mut bus, 0x6000, 0xfee0_0000, ept::READ | ept::WRITE | WB);
        cpu.write_lin(&mut bus, 0x6008, 4, 0xabcd, false).unwrap();
        assert_eq!(bus.mmio_writes, vec![(0xfee0_0008, 0xabcd)]);
        assert_eq!(cpu.read_lin(&mut bus, 0x6008, 4, false), Ok(0xffff_ffff));
        // Guest tables behind MMIO read as all ones: a reserved-bit #PF for the guest.
        set_pte(&mut bus, 0x3000, 0xfee0_0000, RWX);
        cpu.tlb.flush_all();
        let r = cpu.translate(&mut bus, LIN, Access::Read, false);
        assert!(
            matches!(r, Err(Exc::Fault(f)) if f.vector == vector::PF),
            "{r:?}"
        );
    }

    #[test]
    fn pdpte_loads_go_through_ept() {
        let (mut cpu, mut bus) = setup(true, 1);
        // PAE guest: PDPT at guest-physical 0x8000 (host 0x8000), PD at 0x3000.
        cpu.efer = 0;
        cpu.cr3 = 0x8000;
        bus.write_u64(0x8000, 0x3000 | 1);
        assert_eq!(cpu.load_pdptes(&mut bus), Ok(()));
        assert_eq!(pte(&bus, 0x8000) & ept::DIRTY, 0, "a PDPTE load is a read");
        assert_eq!(
            cpu.read_lin(&mut bus, LIN, 8, false),
            Ok(0x1122_3344_5566_7788)
        );
        // EPT violation of a PDPTE load: a read, no guest-linear address (bit 7 clear).
        set_pte(&mut bus, 0x8000, 0x8000, 0);
        assert_eq!(cpu.load_pdptes(&mut bus), Err(violation(1, 0x8000, None)));
        // A reserved bit in a PDPTE is still #GP(0).
        set_pte(&mut bus, 0x8000, 0x8000, RWX);
        bus.write_u64(0x8000, 0x3000 | 1 | (1 << 5));
        assert_eq!(cpu.load_pdptes(&mut bus), Err(Fault::gp(0).into()));
    }

    #[test]
    fn guest_page_faults_stay_page_faults() {
        let (mut cpu, mut bus) = setup(false, 1);
        bus.write_u64(0x3000, 0);
        let r = cpu.translate(&mut bus, LIN, Access::Write, false);
        assert_eq!(r, Err(Fault::page(LIN, pf::W).into()));
    }

    #[test]
    fn stale_ept_translations_survive_until_invept() {
        let (mut cpu, mut bus) = setup(false, 1);
        bus.write_u64(0x8000, 0x8888);
        assert_eq!(
            cpu.read_lin(&mut bus, LIN, 8, false),
            Ok(0x1122_3344_5566_7788)
        );
        set_pte(&mut bus, LIN, 0x8000, RWX);
        assert_eq!(
            cpu.read_lin(&mut bus, LIN, 8, false),
            Ok(0x1122_3344_5566_7788),
            "stale: no INVEPT yet"
        );
        // Another EPT's flush does not help; this one's does.
        cpu.tlb.flush_ept(0x12_3000);
        assert_eq!(
            cpu.read_lin(&mut bus, LIN, 8, false),
            Ok(0x1122_3344_5566_7788)
        );
        cpu.tlb.flush_ept(EPT_PML4);
        assert_eq!(cpu.read_lin(&mut bus, LIN, 8, false), Ok(0x8888));
    }

    #[test]
    fn vm_transitions_flush_only_without_vpids() {
        for vpid in [0, 9] {
            let (mut cpu, mut bus) = setup(false, vpid);
            assert_eq!(
                cpu.read_lin(&mut bus, LIN, 8, false),
                Ok(0x1122_3344_5566_7788)
            );
            set_pte(&mut bus, LIN, 0x8000, RWX);
            // VM exit, a root access to the same linear page, VM entry.
            cpu.vmx.non_root = false;
            cpu.vmx.ept = None;
            cpu.vmx.vpid = 0;
            cpu.tlb_vmx_transition();
            assert_eq!(
                cpu.read_lin(&mut bus, LIN, 8, false),
                Ok(0xdead),
                "root: no EPT"
            );
            cpu.vmx.non_root = true;
            cpu.vmx.ept = Some(eptp(false));
            cpu.vmx.vpid = vpid;
            cpu.tlb_vmx_transition();
            let want = if vpid == 0 { 0 } else { 0x1122_3344_5566_7788 };
            assert_eq!(
                cpu.read_lin(&mut bus, LIN, 8, false),
                Ok(want),
                "VPID {vpid}"
            );
        }
    }

    #[test]
    fn instructions_are_fetched_through_ept() {
        let (mut cpu, mut bus) = setup(false, 1);
        // The guest's code page (guest-physical CODE) lives at host 0x30_0000.
        let host = 0x30_0000;
        bus.load(host, &[0x48, 0xc7, 0xc0, 0x34, 0x12, 0x00, 0x00]); // mov rax, 0x1234
        bus.load(CODE, &[0x48, 0xc7, 0xc0, 0x99, 0x00, 0x00, 0x00]); // mov rax, 0x99
        set_pte(&mut bus, CODE, host, RWX);
        cpu.icache.attach(&bus);
        cpu.fetch.clear();
        assert_eq!(cpu.step(&mut bus), Ok(()));
        assert_eq!(cpu.gpr[0], 0x1234);
        // A code page EPT does not let execute: a fetch violation at the next instruction.
        set_pte(&mut bus, CODE, host, ept::READ | ept::WRITE | WB);
        cpu.tlb.flush_ept(EPT_PML4);
        let rip = cpu.rip;
        let q = 0b100 | 0b011_000 | BITS_7_8;
        assert_eq!(cpu.step(&mut bus), Err(violation(q, rip, Some(rip))));
    }

    #[test]
    fn flushes_of_the_guest_stay_in_its_vpid() {
        let (mut cpu, mut bus) = setup(false, 4);
        cpu.read_lin(&mut bus, LIN, 8, false).unwrap();
        // Root fills the same page, then the guest's CR3 reload (current VPID 4) and INVLPG.
        cpu.vmx.non_root = false;
        cpu.tlb_vmx_transition();
        cpu.read_lin(&mut bus, LIN, 8, false).unwrap();
        cpu.vmx.non_root = true;
        cpu.tlb_vmx_transition();
        cpu.tlb.flush_non_global();
        cpu.tlb.flush_page(LIN);
        assert!(cpu.tlb.lookup(LIN, 0).is_none());
        cpu.vmx.non_root = false;
        cpu.tlb_vmx_transition();
        assert!(
            cpu.tlb.lookup(LIN, 0).is_some(),
            "root's translation survives"
        );
    }
}

#[cfg(test)]
mod ept_properties {
    use super::*;
    use crate::test_utils::*;
    use proptest::prelude::*;
    use x86::paging::{Eptp, ept};

    const EPT_PML4: u64 = 0x60_0000;
    const EPT_PT: u64 = 0x60_3000;
    const PT: u64 = 0x4000;
    const BASE: u64 = 0x40_0000;
    const PAGES: u64 = 8;
    /// Guest page i maps guest-physical 0x10_0000 + (frame << 12), frames < 64, all in the
    /// 4-KiB part of the EPT.
    const GPA: u64 = 0x10_0000;
    const WB: u64 = 6 << 3;
    /// EPT leaf rights: none, R, RW, RX, RWX, X (execute-only), W (misconfiguration).
    const EPT_FLAGS: [u64; 7] = [0, 1, 3, 5, 7, 4, 2];

    #[derive(Clone, Debug)]
    enum Op {
        /// Access page `i` (write?, fetch?, user?).
        Access(u64, bool, bool, bool),
        /// Rewrite guest PTE `i` behind the TLB's back.
        Guest(u64, u64),
        /// Rewrite the EPT entry of guest-physical frame `f`: host frame, rights.
        Ept(u64, u64, u64),
        Invlpg(u64),
        ReloadCr3,
        Invept,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0..PAGES, any::<bool>(), any::<bool>(), any::<bool>())
                .prop_map(|(i, w, x, u)| Op::Access(i, w, x, u)),
            // P, R/W, U/S, and A and D (0x60) or not.
            2 => (0..PAGES, 0u64..16, 0u64..8, any::<bool>())
                .prop_map(|(i, f, fl, ad)| Op::Guest(i, ((GPA >> 12) + f) << 12 | fl | if ad { 0x60 } else { 0 })),
            3 => (0u64..16, 0u64..32, 0..EPT_FLAGS.len()).prop_map(|(f, h, r)| Op::Ept(f, h, EPT_FLAGS[r])),
            1 => (0..PAGES).prop_map(Op::Invlpg),
            1 => Just(Op::ReloadCr3),
            1 => Just(Op::Invept),
        ]
    }

    fn non_root(cpu: &mut Cpu, ad: bool) {
        cpu.vmx.non_root = true;
        let eptp = EPT_PML4 | (3 << 3) | 6 | if ad { Eptp::AD_ENABLE } else { 0 };
        cpu.vmx.ept = Some(Eptp::new(eptp));
        cpu.vmx.vpid = 1;
        cpu.tlb_vmx_transition();
    }

    fn access(cpu: &mut Cpu, bus: &mut TestBus, i: u64, w: bool, x: bool, u: bool) -> Ex<Phys> {
        cpu.cpl = if u { 3 } else { 0 };
        let a = match (w, x) {
            (true, _) => Access::Write,
            (false, true) => Access::Exec,
            _ => Access::Read,
        };
        cpu.translate(bus, BASE + i * 4096 + 8, a, false)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Under EPT, once the flushes for a page have happened (INVLPG or MOV to CR3 for its
        /// guest PTE, INVEPT for the EPT entries it uses) a translation through the TLB equals
        /// a fresh two-dimensional walk: the same physical location, or the same #PF or VM
        /// exit.
        #[test]
        fn after_the_flushes_the_tlb_agrees_with_a_fresh_walk(
            ad in any::<bool>(),
            ops in proptest::collection::vec(op(), 1..80),
        ) {
            let (mut cpu, mut bus) = long_env(&[]);
            bus.write_u64(0x3000 + 8 * 2, PT | 7);
            for i in 0..PAGES {
                let ad = if i % 2 == 0 { 0x60 } else { 0 };
                bus.write_u64(PT + 8 * i, (GPA + (i << 12)) | 7 | ad);
            }
            bus.write_u64(EPT_PML4, 0x60_1000 | ept::RWX);
            bus.write_u64(0x60_1000, 0x60_2000 | ept::RWX);
            bus.write_u64(0x60_2000, EPT_PT | ept::RWX);
            for i in 1..4u64 {
                bus.write_u64(0x60_2000 + 8 * i, (i << 21) | ept::LARGE_PAGE | ept::RWX | WB);
            }
            for f in 0..512u64 {
                bus.write_u64(EPT_PT + 8 * f, (f << 12) | ept::RWX | WB);
            }
            cpu.icache.attach(&bus);
            non_root(&mut cpu, ad);
            let mut fresh = long_mode(&mut TestBus::new());
            fresh.cr3 = cpu.cr3;
            fresh.icache.attach(&bus);
            non_root(&mut fresh, ad);
            // Pages whose guest PTE, and guest-physical frames whose EPT entry, changed
            // since the last flush that covers them.
            let mut guest_stale = [false; PAGES as usize];
            let mut ept_stale = false;
            for op in ops {
                match op {
                    Op::Access(i, w, x, u) => {
                        let got = access(&mut cpu, &mut bus, i, w, x, u);
                        fresh.tlb.flush_all();
                        let want = access(&mut fresh, &mut bus, i, w, x, u);
                        if !guest_stale[i as usize] && !ept_stale {
                            prop_assert_eq!(got, want, "page {} w {} x {} u {}", i, w, x, u);
                        }
                    }
                    Op::Guest(i, pte) => {
                        bus.write_u64(PT + 8 * i, pte);
                        guest_stale[i as usize] = true;
                    }
                    Op::Ept(f, h, rights) => {
                        let frame = (GPA >> 12) + f;
                        bus.write_u64(EPT_PT + 8 * frame, ((0x20 + h) << 12) | rights | WB);
                        ept_stale = true;
                    }
                    Op::Invlpg(i) => {
                        cpu.tlb.flush_page(BASE + i * 4096);
                        guest_stale[i as usize] = false;
                    }
                    Op::ReloadCr3 => {
                        cpu.tlb.flush_non_global();
                        guest_stale = [false; PAGES as usize];
                    }
                    Op::Invept => {
                        cpu.tlb.flush_ept(EPT_PML4);
                        guest_stale = [false; PAGES as usize];
                        ept_stale = false;
                    }
                }
            }
        }
    }
}
