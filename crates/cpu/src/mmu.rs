//! Memory accesses: segmentation (SDM Vol. 3A §3.4.5, §5.3 limit checks, §5.4 type checks,
//! §3.3.7.1 canonical addresses in 64-bit mode) and paging (Vol. 3A §4: 32-bit paging with PSE
//! §4.3, PAE §4.4, 4-level §4.5, access rights §4.6 incl. WP/SMEP/SMAP/NX, page-fault error
//! codes §4.7, accessed and dirty flags §4.8), through the TLB ([`crate::tlb`]).
//!
//! Known deviation: with PAE paging the four PDPTEs are read at walk time instead of being
//! loaded into registers by MOV to CR3 (§4.4.1).

use x86::Gpa;
use x86::reg::{cr0, cr4, efer, rflags};

use crate::Cpu;
use crate::bus::Bus;
use crate::fault::{Ex, Fault, pf, vector};
use crate::state::{Mode, Seg, ar};
use crate::tlb::{Entry, perm};
use x86::Gfn;

/// The physical-address width the model implements (CPUID.80000008H:EAX[7:0]).
pub(crate) const MAXPHYADDR: u32 = 39;
const PHYS_MASK: u64 = (1 << MAXPHYADDR) - 1;

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
        Ok(s.base.wrapping_add(off) & 0xffff_ffff)
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
                    && (implicit || self.flags.bits() & rflags::AC == 0)
                {
                    return false;
                }
                access == Access::Read
                    || ((p & perm::WRITE != 0 || self.cr0 & cr0::WP == 0) && p & perm::DIRTY != 0)
            }
        }
    }

    /// The page walk (§4.3–§4.5) with A/D updates (§4.8); a failed walk is a #PF.
    fn walk<B: Bus>(
        &mut self,
        bus: &mut B,
        lin: u64,
        access: Access,
        user: bool,
        implicit: bool,
    ) -> Ex<Entry> {
        let nxe = self.efer & efer::NXE != 0;
        let mut code = 0;
        if access == Access::Write {
            code |= pf::W;
        }
        if user {
            code |= pf::U;
        }
        if access == Access::Exec && (nxe || self.cr4 & cr4::SMEP != 0) {
            code |= pf::I;
        }
        let not_present = |code: u32| Fault::page(lin, code);
        let rsvd = |code: u32| Fault::page(lin, code | pf::P | pf::RSVD);

        // (entry physical address, entry value, width 4 or 8) along the walk.
        let mut path: [(u64, u64, bool); 5] = [(0, 0, false); 5];
        let mut n = 0;
        let mut rights = perm::USER | perm::WRITE | perm::EXEC;
        let (frame_base, page_shift, global);

        let legacy32 = self.cr4 & cr4::PAE == 0;
        if legacy32 {
            // 32-bit paging (§4.3).
            let pde_addr = (self.cr3 & 0xffff_f000) | (((lin >> 22) & 0x3ff) * 4);
            let pde = u64::from(self.phys_read_u32(bus, pde_addr));
            if pde & 1 == 0 {
                return Err(not_present(code).into());
            }
            path[n] = (pde_addr, pde, false);
            n += 1;
            combine(&mut rights, pde, false);
            if pde & 0x80 != 0 && self.cr4 & cr4::PSE != 0 {
                // 4-MiB page: bits 39:32 of the address come from PDE bits 20:13.
                if pde & (1 << 21) != 0 || (pde >> 13) & 0xff > PHYS_MASK >> 32 {
                    return Err(rsvd(code).into());
                }
                frame_base = (pde & 0xffc0_0000) | (((pde >> 13) & 0xff) << 32);
                page_shift = 22;
            } else {
                let pte_addr = (pde & 0xffff_f000) | (((lin >> 12) & 0x3ff) * 4);
                let pte = u64::from(self.phys_read_u32(bus, pte_addr));
                if pte & 1 == 0 {
                    return Err(not_present(code).into());
                }
                path[n] = (pte_addr, pte, false);
                n += 1;
                combine(&mut rights, pte, false);
                frame_base = pte & 0xffff_f000;
                page_shift = 12;
            }
            global = path[n - 1].1 & 0x100 != 0;
        } else {
            let long = self.efer & efer::LMA != 0;
            let rsvd_high = !PHYS_MASK & 0x000f_ffff_ffff_ffff | if nxe { 0 } else { 1 << 63 };
            let mut table;
            let mut level;
            if long {
                table = self.cr3 & PHYS_MASK & !0xfff;
                level = 4;
            } else {
                // PAE (§4.4): the PDPTE selected by bits 31:30.
                let pdpte_addr = (self.cr3 & 0xffff_ffe0) + ((lin >> 30) & 3) * 8;
                let pdpte = self.phys_read_u64(bus, pdpte_addr);
                if pdpte & 1 == 0 {
                    return Err(not_present(code).into());
                }
                if pdpte & (0x1e6 | (!PHYS_MASK & 0x000f_ffff_ffff_ffff) | (1 << 63)) != 0 {
                    return Err(rsvd(code).into());
                }
                table = pdpte & PHYS_MASK & !0xfff;
                level = 2;
            }
            loop {
                let shift = 12 + 9 * (level - 1);
                let addr = table + ((lin >> shift) & 0x1ff) * 8;
                let e = self.phys_read_u64(bus, addr);
                if e & 1 == 0 {
                    return Err(not_present(code).into());
                }
                let ps = e & 0x80 != 0;
                let bad_ps = ps && (level == 4 || (level == 3 && !long));
                if e & rsvd_high != 0 || bad_ps {
                    return Err(rsvd(code).into());
                }
                path[n] = (addr, e, true);
                n += 1;
                combine(&mut rights, e, nxe);
                if level == 1 || ps {
                    if level > 1 {
                        // Bits 12+..shift-1 (above the PAT bit) of a large-page entry are reserved.
                        let low = ((1u64 << shift) - 1) & !0x1fff;
                        if e & low != 0 {
                            return Err(rsvd(code).into());
                        }
                    }
                    frame_base = e & PHYS_MASK & !((1u64 << shift) - 1);
                    page_shift = shift as u8;
                    global = e & 0x100 != 0;
                    break;
                }
                table = e & PHYS_MASK & !0xfff;
                level -= 1;
            }
        }

        // Access rights (§4.6), on the walk's combined rights, before any flag is written.
        let dirty = path[n - 1].1 & 0x40 != 0;
        let check = rights
            | if access == Access::Write {
                perm::DIRTY
            } else {
                0
            };
        if !self.rights_ok(check, access, user, implicit) {
            return Err(Fault::page(lin, code | pf::P).into());
        }
        // Accessed flags on every entry used, dirty on the final entry for a write (§4.8).
        for (i, &(addr, e, wide)) in path[..n].iter().enumerate() {
            let mut new = e | 0x20;
            if i == n - 1 && access == Access::Write {
                new |= 0x40;
            }
            if new != e {
                if wide {
                    self.phys_write_u64(bus, addr, new);
                } else {
                    self.phys_write_u32(bus, addr, new as u32);
                }
            }
        }
        let pa = frame_base | (lin & ((1u64 << page_shift) - 1) & !0xfff);
        let frame = pa >> 12;
        let ram = bus.ram_offset(Gfn::new(frame)).unwrap_or(usize::MAX);
        let mut p = rights;
        if dirty || access == Access::Write {
            p |= perm::DIRTY;
        }
        Ok(Entry {
            vpn1: 0,
            frame,
            ram,
            pcid: self.pcid(),
            tag: 0,
            global: global && self.cr4 & cr4::PGE != 0,
            page_shift,
            perm: p,
        })
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

    fn phys_at<B: Bus>(bus: &B, pa: u64) -> Phys {
        match bus.ram_offset(Gfn::new(pa >> 12)) {
            Some(off) => Phys::Ram(off + (pa & 0xfff) as usize),
            None => Phys::Io(Gpa::new(pa)),
        }
    }

    pub(crate) fn phys_read_u32<B: Bus>(&mut self, bus: &mut B, pa: u64) -> u32 {
        let p = Self::phys_at(bus, pa);
        self.phys_read(bus, p, 4) as u32
    }

    pub(crate) fn phys_read_u64<B: Bus>(&mut self, bus: &mut B, pa: u64) -> u64 {
        let p = Self::phys_at(bus, pa);
        self.phys_read(bus, p, 8)
    }

    fn phys_write_u32<B: Bus>(&mut self, bus: &mut B, pa: u64, v: u32) {
        let p = Self::phys_at(bus, pa);
        self.phys_write(bus, p, 4, u64::from(v));
    }

    fn phys_write_u64<B: Bus>(&mut self, bus: &mut B, pa: u64, v: u64) {
        let p = Self::phys_at(bus, pa);
        self.phys_write(bus, p, 8, v);
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

/// Folds one paging-structure entry into the combined rights.
#[inline]
fn combine(rights: &mut u8, e: u64, nxe: bool) {
    if e & 2 == 0 {
        *rights &= !perm::WRITE;
    }
    if e & 4 == 0 {
        *rights &= !perm::USER;
    }
    if nxe && e & (1 << 63) != 0 {
        *rights &= !perm::EXEC;
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
