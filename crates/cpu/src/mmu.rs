//! Memory accesses: segmentation (SDM Vol. 3A §3.4.5, §5.3 limit checks, §5.4 type checks,
//! §3.3.7.1 canonical addresses in 64-bit mode) and paging (Vol. 3A §4: 32-bit paging with PSE
//! §4.3, PAE §4.4, 4-level §4.5, access rights §4.6 incl. WP/SMEP/SMAP/NX, page-fault error
//! codes §4.7, accessed and dirty flags §4.8), through the TLB ([`crate::tlb`]).
//!
//! A TLB miss walks with `crates/paging` (the same walker the hypervisor uses); the TLB hit
//! path re-checks the cached rights with the rules of §4.6 (`rights_ok`, tested against the
//! walker's own check for every combination). With PAE paging the four PDPTEs are registers,
//! loaded by MOV to CR3/CR0/CR4 (§4.4.1). Alignment checking (#AC) is done here too.

use paging::{
    AccessKind, Pae, Paging4, Paging32, PagingContext, Privilege, WalkError, load_pdptes,
};
use x86::reg::{cr0, cr3, cr4, efer, rflags};
use x86::{Gpa, Gva};

use crate::Cpu;
use crate::bus::Bus;
use crate::bus::VirtualTime;
use crate::fault::{Ex, Exc, Fault, pf, vector};
use crate::icache::ICache;
use crate::state::{Mode, Seg, ar};
use crate::tlb::{Entry, perm};
use x86::Gfn;

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
    /// MMIO or unbacked.
    Io(Gpa),
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
            return Ok(match bus.ram_offset(Gfn::new(pa >> 12)) {
                Some(off) => Phys::Ram(off + (pa & 0xfff) as usize),
                None => Phys::Io(Gpa::new(pa)),
            });
        }
        let user = self.user_access(implicit);
        if let Some(e) = self.tlb.lookup(lin, self.pcid())
            && self.rights_ok(e.perm, access, user, implicit)
        {
            self.counters.tlb_hits += 1;
            let off = lin & 0xfff;
            return Ok(if e.ram != usize::MAX {
                Phys::Ram(e.ram + off as usize)
            } else {
                Phys::Io(Gpa::new((e.frame << 12) | off))
            });
        }
        self.counters.tlb_misses += 1;
        let e = self.walk(bus, lin, access, user, implicit)?;
        let off = lin & 0xfff;
        self.tlb.insert(lin, e);
        Ok(if e.ram != usize::MAX {
            Phys::Ram(e.ram + off as usize)
        } else {
            Phys::Io(Gpa::new((e.frame << 12) | off))
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
    /// A/D updates (§4.8); a failed walk is a #PF with the walker's error code (§4.7).
    fn walk<B: Bus>(
        &mut self,
        bus: &mut B,
        lin: u64,
        access: Access,
        user: bool,
        implicit: bool,
    ) -> Ex<Entry> {
        let ctx = PagingContext::from_registers(
            self.cr0,
            self.cr4,
            self.efer,
            self.flags.bits(),
            MAXPHYADDR as u8,
            true,
        )
        .map_err(|_| self.unsupported_paging())?;
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
        let pa = paging::Access::new(kind, privilege);
        let gva = Gva::new(lin);
        let now = self.now();
        let pcid = self.pcid();
        let mut mem = PhysMem {
            bus: &mut *bus,
            icache: &mut self.icache,
            now,
            touched: false,
        };
        let t = if self.efer & efer::LMA != 0 {
            let f = Paging4::new(Gpa::new(self.cr3 & cr3::ADDR_MASK), ctx);
            paging::translate(&f, &mut mem, gva, pa)
                .map(|t| (t.addr, t.size, t.rights, t.attrs, t.dirty))
        } else if self.cr4 & cr4::PAE != 0 {
            let pdptes = match self.pdptes {
                Some(p) => p,
                None => {
                    let p = load_pdptes(&mut paging::Direct(&mut mem), self.cr3, MAXPHYADDR as u8)
                        .map_err(|_| Fault::gp(0))?;
                    self.pdptes = Some(p);
                    p
                }
            };
            let f = Pae::new(pdptes, ctx);
            paging::translate(&f, &mut mem, gva, pa)
                .map(|t| (t.addr, t.size, t.rights, t.attrs, t.dirty))
        } else {
            let f = Paging32::new(Gpa::new(self.cr3), ctx);
            paging::translate(&f, &mut mem, gva, pa)
                .map(|t| (t.addr, t.size, t.rights, t.attrs, t.dirty))
        };
        self.touched_device |= mem.touched;
        let (addr, size, rights, attrs, dirty) = match t {
            Ok(t) => t,
            Err(WalkError::Fault(f)) => return Err(Fault::page(lin, f.error_code).into()),
            // `PhysMem` never fails: unbacked table memory reads as all ones.
            Err(WalkError::Table(_)) => return Err(Fault::page(lin, pf::P | pf::RSVD).into()),
        };
        let frame = addr.raw() >> 12;
        let mut p = 0;
        if rights.user {
            p |= perm::USER;
        }
        if rights.write {
            p |= perm::WRITE;
        }
        if rights.execute {
            p |= perm::EXEC;
        }
        if dirty {
            p |= perm::DIRTY;
        }
        Ok(Entry {
            vpn1: 0,
            frame,
            ram: bus.ram_offset(Gfn::new(frame)).unwrap_or(usize::MAX),
            pcid,
            tag: 0,
            global: attrs.global,
            page_shift: size.shift() as u8,
            perm: p,
        })
    }

    fn unsupported_paging(&self) -> Exc {
        let rip = self.seg[Seg::Cs as usize].base.wrapping_add(self.rip);
        Exc::Error(Box::new(crate::error::CpuError::Unsupported {
            rip,
            what: "paging feature (protection keys or CET)",
        }))
    }

    /// Loads the PDPTE registers from the table at CR3 (MOV to CR3/CR0/CR4 with PAE paging,
    /// §4.4.1): a present entry with a reserved bit set is #GP(0).
    pub(crate) fn load_pdptes<B: Bus>(&mut self, bus: &mut B) -> Ex<()> {
        let now = self.now();
        let mut mem = PhysMem {
            bus,
            icache: &mut self.icache,
            now,
            touched: false,
        };
        let p = load_pdptes(&mut paging::Direct(&mut mem), self.cr3, MAXPHYADDR as u8)
            .map_err(|_| Fault::gp(0))?;
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
                    Some(bytes) => {
                        let mut b = [0u8; 8];
                        b[..size].copy_from_slice(bytes);
                        u64::from_le_bytes(b)
                    }
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
                    bytes.copy_from_slice(&value.to_le_bytes()[..size]);
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

    /// Reads through a segment (checks, then paging).
    #[inline]
    pub(crate) fn read_seg<B: Bus>(
        &mut self,
        bus: &mut B,
        seg: Seg,
        off: u64,
        size: usize,
    ) -> Ex<u64> {
        let lin = self.linear(seg, off, size as u64, Access::Read)?;
        self.read_lin(bus, lin, size, false)
    }

    /// Writes through a segment (checks, then paging).
    #[inline]
    pub(crate) fn write_seg<B: Bus>(
        &mut self,
        bus: &mut B,
        seg: Seg,
        off: u64,
        size: usize,
        value: u64,
    ) -> Ex<()> {
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
    fn read(&mut self, addr: Gpa, size: usize) -> u64 {
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

    fn write(&mut self, addr: Gpa, size: usize, v: u64) {
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

impl<B: Bus> paging::Memory<Gpa> for PhysMem<'_, B> {
    fn read_u32(&mut self, addr: Gpa) -> Result<u32, paging::MemoryError<Gpa>> {
        Ok(self.read(addr, 4) as u32)
    }
    fn read_u64(&mut self, addr: Gpa) -> Result<u64, paging::MemoryError<Gpa>> {
        Ok(self.read(addr, 8))
    }
    fn write_u32(&mut self, addr: Gpa, value: u32) -> Result<(), paging::MemoryError<Gpa>> {
        self.write(addr, 4, u64::from(value));
        Ok(())
    }
    fn write_u64(&mut self, addr: Gpa, value: u64) -> Result<(), paging::MemoryError<Gpa>> {
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
            let rights = paging::PageRights {
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
