//! System instructions (SDM Vol. 2 pages; Vol. 3A §2.5 control registers, §2.8 system
//! instructions, §4.10.4 TLB invalidation, §5.8.8 SYSCALL/SYSRET, §5.8.7 SYSENTER/SYSEXIT,
//! §9.8.5 entering IA-32e mode): MOV to/from CR0/CR2/CR3/CR4/CR8 and DR0–DR7, CLTS, LMSW, SMSW,
//! LGDT/LIDT/SGDT/SIDT, LTR/STR/LLDT/SLDT, CLI/STI, HLT, INVLPG, INVPCID, SWAPGS, WBINVD/INVD,
//! SYSCALL/SYSRET, SYSENTER/SYSEXIT.
//!
//! Debug registers are storage only: enabling a breakpoint in DR7 stops the run with
//! [`crate::CpuError::Unsupported`] rather than silently never firing.

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use crate::Cpu;
use crate::bus::Bus;
use crate::error::CpuError;
use crate::exec::Loc;
use crate::fault::{Ex, Exc, Fault};
use crate::flags::mask;
use crate::mmu::{MAXPHYADDR, canonical};
use crate::regs::Gpr;
use crate::seg::{desc, sel_err};
use crate::state::{Mode, Seg, Segment, ar};
use crate::vmx::capabilities::MODEL;
use x86::reg::{cr0, cr4, efer, rflags};
use x86::vmx::controls::secondary_proc;

/// CR4 bits this model implements.
const CR4_SUPPORTED: u64 =
    cr4::DE | cr4::PSE | cr4::PAE | cr4::PGE | cr4::TSD | cr4::PCIDE | cr4::SMEP | cr4::SMAP;
/// CR4 bits whose change invalidates the TLB (SDM Vol. 3A §4.10.4.1).
const CR4_FLUSH: u64 = cr4::PSE | cr4::PAE | cr4::PGE | cr4::PCIDE | cr4::SMEP | cr4::SMAP;

impl Cpu {
    fn require_cpl0(&self) -> Ex<()> {
        if self.cpl != 0 {
            Err(Fault::gp(0).into())
        } else {
            Ok(())
        }
    }

    /// PAE paging (not 4-level): CR0.PG = 1, CR4.PAE = 1, IA32_EFER.LMA = 0.
    fn pae_paging(&self) -> bool {
        self.cr0 & cr0::PG != 0 && self.cr4 & cr4::PAE != 0 && self.efer & efer::LMA == 0
    }

    #[inline(never)]
    pub(crate) fn hlt(&mut self) -> Ex<()> {
        self.require_cpl0()?;
        self.halted = true;
        Ok(())
    }

    #[inline(never)]
    pub(crate) fn cli_sti(&mut self, ins: &Instruction) -> Ex<()> {
        let iopl = ((self.flags.bits() & rflags::IOPL) >> rflags::IOPL_SHIFT) as u8;
        if self.mode != Mode::Real && self.cpl > iopl {
            return Err(Fault::gp(0).into());
        }
        if ins.mnemonic() == M::Sti {
            // STI blocks interrupts for one instruction if IF was clear (§6.8.3).
            if !self.flags.get(rflags::IF) {
                self.shadow = true;
            }
            self.flags.set(rflags::IF, true);
        } else {
            self.flags.set(rflags::IF, false);
        }
        Ok(())
    }

    /// Writes CR0 with the checks of MOV to CR0 (Vol. 2B "MOV—Move to/from Control
    /// Registers") and IA-32e activation (Vol. 3A §9.8.5).
    pub(crate) fn write_cr0<B: Bus>(&mut self, bus: &mut B, v: u64) -> Ex<()> {
        let v = v | cr0::ET;
        // In VMX operation CR0 must keep the VMX fixed bits (PE, NE, PG), SDM Vol. 3C §24.8;
        // a guest with "unrestricted guest" may clear PE and PG.
        let unrestricted = self.vmx.non_root
            && self.vmx.secondary_controls() & secondary_proc::UNRESTRICTED_GUEST != 0;
        let fixed_view = if unrestricted {
            v | cr0::PE | cr0::PG
        } else {
            v
        };
        if v >> 32 != 0
            || (self.vmx.in_vmx_operation() && MODEL.cr0_fixed.check(fixed_view).is_err())
            || (v & cr0::PG != 0 && v & cr0::PE == 0)
            || (v & cr0::NW != 0 && v & cr0::CD == 0)
        {
            return Err(Fault::gp(0).into());
        }
        let old = self.cr0;
        let mut new_efer = self.efer;
        if (old ^ v) & cr0::PG != 0 {
            if v & cr0::PG != 0 {
                if self.efer & efer::LME != 0 {
                    if self.cr4 & cr4::PAE == 0 || self.seg[Seg::Cs as usize].ar & ar::L != 0 {
                        return Err(Fault::gp(0).into());
                    }
                    new_efer |= efer::LMA;
                }
            } else {
                if self.mode == Mode::Long64 || self.cr4 & cr4::PCIDE != 0 {
                    return Err(Fault::gp(0).into());
                }
                new_efer &= !efer::LMA;
            }
        }
        let old_efer = self.efer;
        self.cr0 = v;
        self.efer = new_efer;
        if (old ^ v) & (cr0::PG | cr0::CD | cr0::NW) != 0
            && self.pae_paging()
            && let Err(e) = self.load_pdptes(bus)
        {
            self.cr0 = old;
            self.efer = old_efer;
            return Err(e);
        }
        if (old ^ v) & (cr0::PG | cr0::PE) != 0 {
            self.tlb.flush_current();
            self.counters.tlb_flushes += 1;
        }
        self.update_mode();
        Ok(())
    }

    fn write_cr3<B: Bus>(&mut self, bus: &mut B, v: u64) -> Ex<()> {
        let pcide = self.cr4 & cr4::PCIDE != 0;
        let no_flush = pcide && v & (1 << 63) != 0;
        let v = if pcide { v & !(1 << 63) } else { v };
        if self.efer & efer::LMA != 0 && v >> MAXPHYADDR != 0 {
            return Err(Fault::gp(0).into());
        }
        let old = self.cr3;
        self.cr3 = if self.efer & efer::LMA != 0 {
            v
        } else {
            v & 0xffff_ffff
        };
        if self.pae_paging()
            && let Err(e) = self.load_pdptes(bus)
        {
            self.cr3 = old;
            return Err(e);
        }
        if !no_flush {
            if pcide {
                self.tlb.flush_pcid(self.pcid());
            } else {
                self.tlb.flush_non_global();
            }
            self.counters.tlb_flushes += 1;
        }
        Ok(())
    }

    fn write_cr4<B: Bus>(&mut self, bus: &mut B, v: u64) -> Ex<()> {
        let old = self.cr4;
        let long = self.efer & efer::LMA != 0;
        let supported = if self.features.vmx {
            CR4_SUPPORTED | cr4::VMXE
        } else {
            CR4_SUPPORTED
        };
        // In VMX operation CR4 must keep the VMX fixed bits (VMXE among them), SDM Vol. 3C
        // §24.8.
        if v & !supported != 0
            || (self.vmx.in_vmx_operation() && MODEL.cr4_fixed.check(v).is_err())
            || (long && v & cr4::PAE == 0)
            || (v & cr4::PCIDE != 0 && old & cr4::PCIDE == 0 && (!long || self.cr3 & 0xfff != 0))
        {
            return Err(Fault::gp(0).into());
        }
        self.cr4 = v;
        if (old ^ v) & (cr4::PAE | cr4::PGE | cr4::PSE | cr4::SMEP) != 0
            && self.pae_paging()
            && let Err(e) = self.load_pdptes(bus)
        {
            self.cr4 = old;
            return Err(e);
        }
        if (old ^ v) & CR4_FLUSH != 0 {
            self.tlb.flush_current();
            self.counters.tlb_flushes += 1;
        }
        Ok(())
    }

    #[inline(never)]
    pub(crate) fn mov_cr<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        self.require_cpl0()?;
        let to_cr = ins.op0_register().is_cr();
        let (cr, gpr) = if to_cr {
            (ins.op0_register(), ins.op1_register())
        } else {
            (ins.op1_register(), ins.op0_register())
        };
        if !to_cr {
            // In VMX non-root operation the host-owned bits of CR0 and CR4 read from the
            // read shadows (SDM Vol. 3C §26.3.1.1).
            let v = match cr {
                Register::CR0 => self.guest_cr_view(0, self.cr0),
                Register::CR2 => self.cr2,
                Register::CR3 => self.cr3,
                Register::CR4 => self.guest_cr_view(4, self.cr4),
                Register::CR8 => u64::from(bus.cr8(self.now())),
                _ => return Err(Fault::ud().into()),
            };
            self.set_reg(gpr, v);
            return Ok(());
        }
        let v = self.reg(gpr);
        // A write that does not exit leaves the host-owned bits as they are (§26.3.1.1).
        match cr {
            Register::CR0 => self.write_cr0(bus, self.guest_cr_write(0, v)),
            Register::CR2 => {
                self.cr2 = v;
                Ok(())
            }
            Register::CR3 => self.write_cr3(bus, v),
            Register::CR4 => self.write_cr4(bus, self.guest_cr_write(4, v)),
            // CR8 is the local APIC's TPR[7:4] (SDM Vol. 3A §11.8.6); bits 63:4 are reserved
            // (Vol. 2B "MOV—Move to/from Control Registers": #GP(0)).
            Register::CR8 => match u8::try_from(v) {
                Ok(class @ 0..=0xf) => {
                    bus.set_cr8(class, self.now());
                    Ok(())
                }
                _ => Err(Fault::gp(0).into()),
            },
            _ => Err(Fault::ud().into()),
        }
    }

    #[inline(never)]
    pub(crate) fn mov_dr(&mut self, ins: &Instruction) -> Ex<()> {
        self.require_cpl0()?;
        let to_dr = ins.op0_register().is_dr();
        let (dr, gpr) = if to_dr {
            (ins.op0_register(), ins.op1_register())
        } else {
            (ins.op1_register(), ins.op0_register())
        };
        let mut n = (dr as usize) - (Register::DR0 as usize);
        if n == 4 || n == 5 {
            if self.cr4 & cr4::DE != 0 {
                return Err(Fault::ud().into());
            }
            n += 2;
        }
        if n > 7 {
            return Err(Fault::ud().into());
        }
        if !to_dr {
            let v = self.dr[n];
            self.set_reg(gpr, v);
            return Ok(());
        }
        let v = self.reg(gpr);
        if (n == 6 || n == 7) && v >> 32 != 0 {
            return Err(Fault::gp(0).into());
        }
        match n {
            6 => self.dr[6] = v | 0xffff_0ff0,
            7 => {
                if v & 0xff != 0 {
                    let rip = self.seg[Seg::Cs as usize].base.wrapping_add(self.rip);
                    return Err(Exc::Error(Box::new(CpuError::Unsupported {
                        rip,
                        what: "hardware breakpoints (DR7 L0-L3/G0-G3)",
                    })));
                }
                self.dr[7] = (v & !(1 << 11 | 1 << 12 | 1 << 14 | 1 << 15)) | 0x400;
            }
            _ => self.dr[n] = v,
        }
        Ok(())
    }

    #[inline(never)]
    pub(crate) fn cr0_insn<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        match ins.mnemonic() {
            M::Clts => {
                self.require_cpl0()?;
                self.cr0 = self.guest_cr_write(0, self.cr0 & !cr0::TS);
                Ok(())
            }
            M::Lmsw => {
                self.require_cpl0()?;
                let l = self.loc(ins, 0);
                let v = self.get(bus, l, 16)?;
                // LMSW loads PE, MP, EM, TS and cannot clear PE.
                let low = (v & 0xf) | (self.cr0 & cr0::PE);
                let new = self.guest_cr_write(0, (self.cr0 & !0xf) | low);
                self.write_cr0(bus, new)
            }
            _ => {
                let w = if ins.op0_kind() == OpKind::Memory {
                    16
                } else {
                    self.op_width(ins, 0)
                };
                let l = self.loc(ins, 0);
                let cr0 = self.guest_cr_view(0, self.cr0);
                self.put(bus, l, w, cr0 & mask(w))
            }
        }
    }

    #[inline(never)]
    pub(crate) fn desc_table<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let Loc::Mem(seg, off) = self.loc(ins, 0) else {
            return Err(Fault::ud().into());
        };
        let base_bytes = if self.code_bits == 64 { 8 } else { 4 };
        let o16 = self.code_bits != 64 && ins.memory_size().size() == 6 && self.osize16(ins);
        match ins.mnemonic() {
            M::Lgdt | M::Lidt => {
                self.require_cpl0()?;
                let limit = self.read_seg(bus, seg, off, 2)? as u16;
                let mut base = self.read_seg(bus, seg, off.wrapping_add(2), base_bytes)?;
                if o16 {
                    base &= 0xff_ffff;
                }
                if self.code_bits == 64 && !canonical(base) {
                    return Err(Fault::gp(0).into());
                }
                let t = crate::state::DescriptorTable { base, limit };
                if ins.mnemonic() == M::Lgdt {
                    self.gdtr = t;
                } else {
                    self.idtr = t;
                }
                Ok(())
            }
            _ => {
                let t = if ins.mnemonic() == M::Sgdt {
                    self.gdtr
                } else {
                    self.idtr
                };
                self.write_seg(bus, seg, off, 2, u64::from(t.limit))?;
                self.write_seg(bus, seg, off.wrapping_add(2), base_bytes, t.base)
            }
        }
    }

    /// Whether the instruction has a 16-bit operand size (outside 64-bit mode).
    fn osize16(&self, ins: &Instruction) -> bool {
        matches!(
            ins.code(),
            iced_x86::Code::Lgdt_m1632_16 | iced_x86::Code::Lidt_m1632_16
        )
    }

    #[inline(never)]
    pub(crate) fn ltr_lldt<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        if self.mode == Mode::Real {
            return Err(Fault::ud().into());
        }
        let long = self.efer & efer::LMA != 0;
        match ins.mnemonic() {
            M::Str | M::Sldt => {
                let sel = if ins.mnemonic() == M::Str {
                    self.tr.selector
                } else {
                    self.ldtr.selector
                };
                let w = if ins.op0_kind() == OpKind::Memory {
                    16
                } else {
                    self.op_width(ins, 0)
                };
                let l = self.loc(ins, 0);
                self.put(bus, l, w, u64::from(sel))
            }
            m => {
                self.require_cpl0()?;
                let l = self.loc(ins, 0);
                let sel = self.get(bus, l, 16)? as u16;
                let is_ltr = m == M::Ltr;
                if sel & 0xfffc == 0 {
                    if is_ltr {
                        return Err(Fault::gp(0).into());
                    }
                    self.ldtr = Segment {
                        selector: sel,
                        ar: ar::UNUSABLE,
                        ..Segment::default()
                    };
                    return Ok(());
                }
                if sel & 4 != 0 {
                    return Err(Fault::gp(sel_err(sel)).into());
                }
                let d = self.read_desc(bus, sel)?;
                let typ = desc::typ(d);
                let ok_type = if is_ltr {
                    if long { typ == 9 } else { typ == 9 || typ == 1 }
                } else {
                    typ == 2
                };
                if desc::code_or_data(d) || !ok_type {
                    return Err(Fault::gp(sel_err(sel)).into());
                }
                if !desc::present(d) {
                    return Err(Fault::with_code(crate::fault::vector::NP, sel_err(sel)).into());
                }
                let mut s = Cpu::seg_from_desc(sel, d);
                s.ar &= !ar::ACCESSED;
                s.ar |= u32::from(typ & 1);
                if long {
                    let hi_lin = self.gdtr.base.wrapping_add(u64::from(sel & 0xfff8) + 8);
                    if u64::from(sel & 0xfff8) + 15 > u64::from(self.gdtr.limit) {
                        return Err(Fault::gp(sel_err(sel)).into());
                    }
                    let hi = self.read_lin(bus, hi_lin, 8, true)?;
                    s.base |= (hi & 0xffff_ffff) << 32;
                    if !canonical(s.base) {
                        return Err(Fault::gp(sel_err(sel)).into());
                    }
                }
                if is_ltr {
                    // Mark the descriptor busy.
                    let lin = self.gdtr.base.wrapping_add(u64::from(sel & 0xfff8));
                    self.write_lin(bus, lin + 5, 1, (d >> 40) | 2, true)?;
                    s.ar |= 2;
                    self.tr = s;
                } else {
                    self.ldtr = s;
                }
                Ok(())
            }
        }
    }

    #[inline(never)]
    pub(crate) fn invlpg<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        self.require_cpl0()?;
        if ins.mnemonic() == M::Invlpg {
            let Loc::Mem(seg, off) = self.loc(ins, 0) else {
                return Err(Fault::ud().into());
            };
            let base = if self.mode == Mode::Long64 && !matches!(seg, Seg::Fs | Seg::Gs) {
                0
            } else {
                self.seg[seg as usize].base
            };
            let lin = self.mask_lin(base.wrapping_add(off));
            self.tlb.flush_page(lin);
            self.counters.tlb_flushes += 1;
            return Ok(());
        }
        // INVPCID r64, m128 (Vol. 2A "INVPCID").
        let typ = self.reg(ins.op0_register());
        let Loc::Mem(seg, off) = self.loc(ins, 1) else {
            return Err(Fault::ud().into());
        };
        let pcid = self.read_seg(bus, seg, off, 8)?;
        let lin = self.read_seg(bus, seg, off.wrapping_add(8), 8)?;
        if pcid > 0xfff {
            return Err(Fault::gp(0).into());
        }
        let pcid = pcid as u16;
        match typ {
            0 => {
                if !canonical(lin) || (self.cr4 & cr4::PCIDE == 0 && pcid != 0) {
                    return Err(Fault::gp(0).into());
                }
                self.tlb.flush_page_pcid(lin, pcid);
            }
            1 => {
                if self.cr4 & cr4::PCIDE == 0 && pcid != 0 {
                    return Err(Fault::gp(0).into());
                }
                self.tlb.flush_pcid(pcid);
            }
            2 => self.tlb.flush_current(),
            3 => self.tlb.flush_non_global(),
            _ => return Err(Fault::gp(0).into()),
        }
        self.counters.tlb_flushes += 1;
        Ok(())
    }

    #[inline(never)]
    pub(crate) fn swapgs(&mut self) -> Ex<()> {
        if self.mode != Mode::Long64 {
            return Err(Fault::ud().into());
        }
        self.require_cpl0()?;
        let gs = &mut self.seg[Seg::Gs as usize].base;
        core::mem::swap(gs, &mut self.msr.kernel_gs_base);
        Ok(())
    }

    pub(crate) fn cache_ctl(&mut self) -> Ex<()> {
        // No caches are modelled: write-back and invalidation have nothing to do.
        self.require_cpl0()
    }

    /// Flat segment for SYSCALL/SYSRET/SYSENTER/SYSEXIT (Vol. 3A §5.8.7, §5.8.8).
    fn flat(sel: u16, code: bool, dpl: u8, long: bool) -> Segment {
        let mut s = Segment::flat32(sel, code, dpl);
        if long {
            s.ar = (s.ar & !ar::DB) | ar::L;
        }
        s
    }

    #[inline(never)]
    pub(crate) fn fast_syscall<B: Bus>(&mut self, _bus: &mut B, ins: &Instruction) -> Ex<()> {
        let long = self.efer & efer::LMA != 0;
        match ins.mnemonic() {
            M::Syscall => {
                if self.mode != Mode::Long64 || self.efer & efer::SCE == 0 {
                    return Err(Fault::ud().into());
                }
                let sel = ((self.msr.star >> 32) & 0xfffc) as u16;
                self.gpr[Gpr::Rcx as usize] = self.next_rip;
                self.gpr[Gpr::R11 as usize] = self.flags.bits() & !rflags::RF;
                let f = self.flags.bits() & !self.msr.fmask & !rflags::RF;
                self.flags.set_bits(f | rflags::FIXED1);
                self.seg[Seg::Cs as usize] = Self::flat(sel, true, 0, true);
                self.seg[Seg::Ss as usize] = Self::flat(sel + 8, false, 0, false);
                self.cpl = 0;
                self.update_mode();
                self.next_rip = self.msr.lstar;
            }
            M::Sysret | M::Sysretq => {
                if self.mode != Mode::Long64 || self.efer & efer::SCE == 0 {
                    return Err(Fault::ud().into());
                }
                self.require_cpl0()?;
                let to64 = ins.mnemonic() == M::Sysretq;
                let rcx = self.gpr[Gpr::Rcx as usize];
                if to64 && !canonical(rcx) {
                    return Err(Fault::gp(0).into());
                }
                let base = ((self.msr.star >> 48) & 0xffff) as u16;
                let cs = if to64 { base + 16 } else { base } | 3;
                self.seg[Seg::Cs as usize] = Self::flat(cs, true, 3, to64);
                self.seg[Seg::Ss as usize].selector = (base + 8) | 3;
                let ss = &mut self.seg[Seg::Ss as usize];
                *ss = Segment {
                    ar: (Segment::flat32(0, false, 3).ar),
                    base: 0,
                    limit: 0xffff_ffff,
                    selector: ss.selector,
                };
                let f = (self.gpr[Gpr::R11 as usize] & 0x3c_7fd7) | rflags::FIXED1;
                self.flags.set_bits(f);
                self.cpl = 3;
                self.update_mode();
                self.next_rip = if to64 { rcx } else { rcx & 0xffff_ffff };
            }
            M::Sysenter => {
                let cs = (self.msr.sysenter_cs & 0xfffc) as u16;
                if self.mode == Mode::Real || cs == 0 {
                    return Err(Fault::gp(0).into());
                }
                let f = self.flags.bits() & !(rflags::VM | rflags::IF | rflags::RF);
                self.flags.set_bits(f);
                self.seg[Seg::Cs as usize] = Self::flat(cs, true, 0, long);
                self.seg[Seg::Ss as usize] = Self::flat(cs + 8, false, 0, false);
                self.cpl = 0;
                self.update_mode();
                let (sp, ip) = (self.msr.sysenter_esp, self.msr.sysenter_eip);
                self.gpr[Gpr::Rsp as usize] = if long { sp } else { sp & 0xffff_ffff };
                self.next_rip = if long { ip } else { ip & 0xffff_ffff };
            }
            _ => {
                let base = (self.msr.sysenter_cs & 0xfffc) as u16;
                if self.mode == Mode::Real || base == 0 || self.cpl != 0 {
                    return Err(Fault::gp(0).into());
                }
                let to64 = ins.mnemonic() == M::Sysexitq;
                let (rip, rsp) = (self.gpr[Gpr::Rdx as usize], self.gpr[Gpr::Rcx as usize]);
                if to64 && (!canonical(rip) || !canonical(rsp)) {
                    return Err(Fault::gp(0).into());
                }
                let (cs, ss) = if to64 {
                    (base + 32, base + 40)
                } else {
                    (base + 16, base + 24)
                };
                self.seg[Seg::Cs as usize] = Self::flat(cs | 3, true, 3, to64);
                self.seg[Seg::Ss as usize] = Self::flat(ss | 3, false, 3, false);
                self.cpl = 3;
                self.update_mode();
                self.gpr[Gpr::Rsp as usize] = if to64 { rsp } else { rsp & 0xffff_ffff };
                self.next_rip = if to64 { rip } else { rip & 0xffff_ffff };
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::fault::{Exc, Fault};
    use crate::state::{Mode, Seg, Segment};
    use crate::test_utils::*;
    use crate::{Cpu, StopReason};
    use x86::reg::{cr0, efer};

    /// Real mode -> 32-bit protected mode -> long mode, as a boot loader does it.
    #[rustfmt::skip]
    const BOOT16: &[u8] = &[
        0x0f, 0x01, 0x16, 0x00, 0x81,               // lgdt [0x8100]
        0x0f, 0x20, 0xc0,                           // mov eax, cr0
        0x66, 0x83, 0xc8, 0x01,                     // or eax, 1
        0x0f, 0x22, 0xc0,                           // mov cr0, eax
        0x66, 0xea, 0x20, 0x80, 0x00, 0x00, 0x18, 0x00, // jmp dword 0x18:0x8020
    ];
    #[rustfmt::skip]
    const BOOT32: &[u8] = &[
        0x66, 0xb8, 0x10, 0x00,                     // mov ax, 0x10
        0x8e, 0xd8,                                 // mov ds, ax
        0x8e, 0xd0,                                 // mov ss, ax
        0x0f, 0x20, 0xe0,                           // mov eax, cr4
        0x83, 0xc8, 0x20,                           // or eax, 0x20 (PAE)
        0x0f, 0x22, 0xe0,                           // mov cr4, eax
        0xb8, 0x00, 0x10, 0x00, 0x00,               // mov eax, 0x1000
        0x0f, 0x22, 0xd8,                           // mov cr3, eax
        0xb9, 0x80, 0x00, 0x00, 0xc0,               // mov ecx, 0xc0000080 (EFER)
        0x0f, 0x32,                                 // rdmsr
        0x0d, 0x00, 0x01, 0x00, 0x00,               // or eax, 0x100 (LME)
        0x0f, 0x30,                                 // wrmsr
        0x0f, 0x20, 0xc0,                           // mov eax, cr0
        0x0d, 0x00, 0x00, 0x00, 0x80,               // or eax, 0x80000000 (PG)
        0x0f, 0x22, 0xc0,                           // mov cr0, eax
        0xea, 0x60, 0x80, 0x00, 0x00, 0x08, 0x00,   // jmp 0x08:0x8060
    ];
    #[rustfmt::skip]
    const BOOT64: &[u8] = &[
        0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // mov rax, 0x1122334455667788
        0xf4,                                                       // hlt
    ];

    #[test]
    fn real_to_protected_to_long_mode() {
        let mut bus = TestBus::new();
        let mut cpu = Cpu::new();
        identity_map(&mut bus);
        install_tables(&mut cpu, &mut bus);
        cpu.gdtr = Default::default();
        bus.load(0x8000, BOOT16);
        bus.load(0x8020, BOOT32);
        bus.load(0x8060, BOOT64);
        bus.load(0x8100, &[0x47, 0x00, 0x00, 0x50, 0x00, 0x00]);
        cpu.set_segment(Seg::Cs, Segment::real(0, true));
        cpu.rip = 0x8000;
        assert_eq!(cpu.mode(), Mode::Real);
        assert_eq!(cpu.run(&mut bus, 4), Ok(StopReason::BudgetExhausted));
        assert_eq!(
            (cpu.mode(), cpu.code_bits),
            (Mode::Protected, 16),
            "PE=1, still 16-bit CS"
        );
        assert_eq!(cpu.run(&mut bus, 1), Ok(StopReason::BudgetExhausted));
        assert_eq!(
            (cpu.code_bits, cpu.segment(Seg::Cs).selector),
            (32, KCODE32)
        );
        assert_eq!(cpu.run(&mut bus, 100), Ok(StopReason::Halted));
        assert_eq!(cpu.mode(), Mode::Long64);
        assert_eq!(cpu.efer() & (efer::LME | efer::LMA), efer::LME | efer::LMA);
        assert_eq!(cpu.gpr(crate::Gpr::Rax), 0x1122_3344_5566_7788);
        assert_eq!(cpu.segment(Seg::Ds).selector, KDATA);
    }

    fn fault_of(cpu: &mut Cpu, bus: &mut TestBus) -> Fault {
        cpu.icache.attach(bus);
        loop {
            match cpu.step(bus) {
                Ok(()) => assert!(!cpu.halted, "expected a fault"),
                Err(Exc::Fault(f)) => return f,
                Err(e) => panic!("{e:?}"),
            }
        }
    }

    #[test]
    fn illegal_mode_transitions_fault() {
        // 64-bit mode: clearing CR0.PG is #GP(0).  mov rax, cr0; btr eax, 31; mov cr0, rax
        assert_eq!(
            first_fault(
                &[0x0f, 0x20, 0xc0, 0x0f, 0xba, 0xf0, 0x1f, 0x0f, 0x22, 0xc0],
                |_| {}
            ),
            Fault::gp(0)
        );
        // Clearing CR4.PAE while IA-32e mode is active: #GP(0).  mov rax, cr4; and al, 0xdf; mov cr4, rax
        assert_eq!(
            first_fault(&[0x0f, 0x20, 0xe0, 0x24, 0xdf, 0x0f, 0x22, 0xe0], |_| {}),
            Fault::gp(0)
        );
        // Protected mode, EFER.LME = 1, CR4.PAE = 0: setting CR0.PG is #GP(0).
        let mut bus = TestBus::new();
        let mut cpu = Cpu::new();
        cpu.set_multiboot_entry(0x10_0000, 0, 0);
        cpu.efer = efer::LME;
        // mov eax, cr0; or eax, 0x80000000; mov cr0, eax
        bus.load(
            0x10_0000,
            &[
                0x0f, 0x20, 0xc0, 0x0d, 0x00, 0x00, 0x00, 0x80, 0x0f, 0x22, 0xc0,
            ],
        );
        assert_eq!(fault_of(&mut cpu, &mut bus), Fault::gp(0));
        assert_eq!(cpu.cr0 & cr0::PG, 0);
        // CR0.PG without CR0.PE: #GP(0).  mov eax, 0x80000010; mov cr0, eax
        let mut cpu = Cpu::new();
        cpu.set_multiboot_entry(0x10_0000, 0, 0);
        bus.load(0x10_0000, &[0xb8, 0x10, 0x00, 0x00, 0x80, 0x0f, 0x22, 0xc0]);
        assert_eq!(fault_of(&mut cpu, &mut bus), Fault::gp(0));
        // MOV to CR0 at CPL 3 is #GP(0) (64-bit user mode).
        assert_eq!(
            first_fault(&[0x0f, 0x22, 0xc0], |c| {
                c.cpl = 3;
            }),
            Fault::gp(0)
        );
    }

    #[test]
    fn cr8_goes_to_the_board_and_its_reserved_bits_fault() {
        #[rustfmt::skip]
        let (cpu, bus) = run_bytes64(&[
            0xb8, 0x09, 0x00, 0x00, 0x00,   // mov eax, 9
            0x44, 0x0f, 0x22, 0xc0,         // mov cr8, rax
            0x44, 0x0f, 0x20, 0xc3,         // mov rbx, cr8
        ], |_| {});
        assert_eq!((bus.cr8, cpu.gpr[3]), (9, 9));
        // Bits 63:4 are reserved: #GP(0).
        for v in [0x10u64, 1 << 63] {
            // mov rax, v; mov cr8, rax
            let mut code = vec![0x48, 0xb8];
            code.extend_from_slice(&v.to_le_bytes());
            code.extend_from_slice(&[0x44, 0x0f, 0x22, 0xc0]);
            assert_eq!(first_fault(&code, |_| {}), Fault::gp(0), "{v:#x}");
        }
        // At CPL 3: #GP(0).
        assert_eq!(
            first_fault(&[0x44, 0x0f, 0x20, 0xc0], |c| c.cpl = 3),
            Fault::gp(0)
        );
    }

    #[test]
    fn syscall_sysret_round_trip() {
        let handler = CODE + 0x800;
        #[rustfmt::skip]
        let kernel: &[u8] = &[
            0xb9, 0x80, 0x00, 0x00, 0xc0, 0x0f, 0x32, 0x83, 0xc8, 0x01, 0x0f, 0x30, // EFER.SCE = 1
            0xb9, 0x81, 0x00, 0x00, 0xc0, 0x31, 0xc0, 0xba, 0x08, 0x00, 0x20, 0x00, 0x0f, 0x30, // STAR
            0xb9, 0x82, 0x00, 0x00, 0xc0, 0xb8, 0x00, 0x08, 0x10, 0x00, 0x31, 0xd2, 0x0f, 0x30, // LSTAR
            0xb9, 0x00, 0x10, 0x10, 0x00,                   // mov ecx, 0x101000
            0x41, 0xbb, 0x02, 0x02, 0x00, 0x00,             // mov r11d, 0x202
            0x48, 0x0f, 0x07,                               // sysretq
        ];
        let (mut cpu, mut bus) = long_env(kernel);
        bus.load(0x10_1000, &[0x0f, 0x05]); // syscall
        bus.load(handler, &[0xf4]);
        assert_eq!(cpu.run(&mut bus, 15), Ok(StopReason::BudgetExhausted));
        assert_eq!(
            (cpu.cpl, cpu.rip, cpu.segment(Seg::Cs).selector),
            (3, 0x10_1000, UCODE64)
        );
        assert_eq!(cpu.segment(Seg::Ss).selector, UDATA);
        assert_eq!(cpu.rflags() & 0x202, 0x202);
        assert_eq!(cpu.run(&mut bus, 10), Ok(StopReason::Halted));
        assert_eq!((cpu.cpl, cpu.segment(Seg::Cs).selector), (0, KCODE64));
        assert_eq!(cpu.gpr[1], 0x10_1002, "RCX = return RIP");
        assert_eq!(cpu.gpr[11], 0x202, "R11 = RFLAGS");
    }

    #[test]
    fn real_mode_int_and_iret() {
        let mut bus = TestBus::new();
        let mut cpu = Cpu::new();
        cpu.set_segment(Seg::Cs, Segment::real(0, true));
        cpu.gpr[4] = 0x7000;
        cpu.rip = 0x7000;
        bus.load(0x40, &[0x00, 0x71, 0x00, 0x00]); // IVT[0x10] = 0000:7100
        bus.load(0x7000, &[0xcd, 0x10, 0xf4]); // int 0x10; hlt
        bus.load(0x7100, &[0xb8, 0x34, 0x12, 0xcf]); // mov ax, 0x1234; iret
        assert_eq!(cpu.run(&mut bus, 10), Ok(StopReason::Halted));
        assert_eq!((cpu.gpr[0], cpu.gpr[4], cpu.rip), (0x1234, 0x7000, 0x7003));
    }

    #[test]
    fn port_io_and_iopl() {
        // mov dx, 0x3f8; mov al, 'A'; out dx, al; in al, 0x60
        let (c, bus) = run_bytes64(
            &[0x66, 0xba, 0xf8, 0x03, 0xb0, 0x41, 0xee, 0xe4, 0x60],
            |_| {},
        );
        assert_eq!(bus.port_writes, vec![(0x3f8, 0x41)]);
        assert_eq!(c.gpr[0] & 0xff, 0x60);
        // CPL 3 with IOPL 0 and an I/O bitmap beyond the TSS limit: #GP(0).
        let mut bus = TestBus::new();
        let mut cpu = long_mode(&mut bus);
        install_tables(&mut cpu, &mut bus);
        bus.load(CODE, &[0xe6, 0x80]); // out 0x80, al
        bus.load(TSS + 0x66, &[0x68, 0x00]); // I/O bitmap base beyond the TSS limit
        cpu.cpl = 3;
        assert_eq!(fault_of(&mut cpu, &mut bus), Fault::gp(0));
    }
}

#[cfg(test)]
mod paging_mode_tests {
    use crate::fault::{Exc, Fault, pf};
    use crate::test_utils::TestBus;
    use crate::{Cpu, StopReason};
    use x86::reg::{cr0, cr4};

    /// 32-bit protected mode at 0x100000 with `code`, paging off.
    fn env(code: &[u8]) -> (Cpu, TestBus) {
        let mut bus = TestBus::new();
        bus.load(0x10_0000, code);
        let mut cpu = Cpu::new();
        cpu.set_multiboot_entry(0x10_0000, 0, 0);
        cpu.gpr = [0; 16];
        cpu.gpr[4] = 0x8000;
        (cpu, bus)
    }

    #[test]
    fn legacy_32_bit_paging_with_4m_pages() {
        // Page directory at 0x2000: PDE 0 = 4-MiB identity page (PS), PDE 1 -> table at 0x3000
        // whose PTE 0 maps 0x400000 -> 0x600000 (read-only, supervisor).
        #[rustfmt::skip]
        let code = [
            0x0f, 0x20, 0xe0, 0x83, 0xc8, 0x10, 0x0f, 0x22, 0xe0, // cr4 |= PSE
            0xb8, 0x00, 0x20, 0x00, 0x00, 0x0f, 0x22, 0xd8,       // cr3 = 0x2000
            0x0f, 0x20, 0xc0, 0x0d, 0x00, 0x00, 0x01, 0x80, 0x0f, 0x22, 0xc0, // cr0 |= PG | WP
            0xa1, 0x00, 0x00, 0x40, 0x00,                         // mov eax, [0x400000]
            0xf4,
        ];
        let (mut cpu, mut bus) = env(&code);
        bus.load(0x2000, &0x0000_0083u32.to_le_bytes());
        bus.load(0x2004, &0x0000_3003u32.to_le_bytes());
        bus.load(0x3000, &0x0060_0001u32.to_le_bytes());
        bus.load(0x60_0000, &0x1234_5678u32.to_le_bytes());
        assert_eq!(cpu.run(&mut bus, 20), Ok(StopReason::Halted));
        assert_eq!(cpu.gpr[0], 0x1234_5678);
        assert_eq!(
            bus.ram[0x2000] & 0x20,
            0x20,
            "accessed flag of the 4-MiB PDE (code fetch)"
        );
        // A write to the read-only page with CR0.WP = 1: #PF(P|W).
        cpu.icache.attach(&bus);
        assert_eq!(
            cpu.write_lin(&mut bus, 0x40_0000, 4, 0, false),
            Err(Exc::Fault(Fault::page(0x40_0000, pf::P | pf::W)))
        );
    }

    #[test]
    fn pae_paging_loads_pdptes_on_cr3_write() {
        // PDPT at 0x2000 (PDPTE 0 -> PD at 0x3000 whose PDE 0 is a 2-MiB identity page), then
        // a CR3 load of a PDPT with a reserved bit set in a present entry: #GP(0).
        #[rustfmt::skip]
        let code = [
            0x0f, 0x20, 0xe0, 0x83, 0xc8, 0x20, 0x0f, 0x22, 0xe0, // cr4 |= PAE
            0xb8, 0x00, 0x20, 0x00, 0x00, 0x0f, 0x22, 0xd8,       // cr3 = 0x2000
            0x0f, 0x20, 0xc0, 0x0d, 0x00, 0x00, 0x00, 0x80, 0x0f, 0x22, 0xc0, // cr0 |= PG
            0xb8, 0x00, 0x40, 0x00, 0x00, 0x0f, 0x22, 0xd8,       // cr3 = 0x4000 (bad PDPT)
            0xf4,
        ];
        let (mut cpu, mut bus) = env(&code);
        bus.write_u64(0x2000, 0x3001);
        bus.write_u64(0x3000, 0x83);
        bus.write_u64(0x4000, 0x3001 | (1 << 5));
        cpu.icache.attach(&bus);
        let mut fault = None;
        for _ in 0..10 {
            match cpu.step(&mut bus) {
                Ok(()) => {}
                Err(Exc::Fault(f)) => {
                    fault = Some(f);
                    break;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(fault, Some(Fault::gp(0)));
        assert_eq!(cpu.cr3, 0x2000, "the faulting load left CR3 alone");
        assert_eq!(cpu.cr4 & cr4::PAE, cr4::PAE);
        assert_ne!(cpu.cr0 & cr0::PG, 0);
    }
}

#[cfg(test)]
mod more_tests {
    use crate::StopReason;
    use crate::state::Seg;
    use crate::test_utils::*;
    use x86::reg::cr0;

    #[test]
    fn sysenter_sysexit_in_ia32e_mode() {
        let (mut cpu, mut bus) = long_env(&[0x0f, 0x34]); // sysenter
        bus.load(CODE + 0x800, &[0x48, 0x0f, 0x35]); // sysexitq
        cpu.msr.sysenter_cs = 0x08;
        cpu.msr.sysenter_eip = CODE + 0x800;
        cpu.msr.sysenter_esp = 0x9000;
        cpu.cpl = 3;
        cpu.gpr[2] = 0x10_2000; // RDX: return RIP
        cpu.gpr[1] = 0x17_0000; // RCX: return RSP
        assert_eq!(cpu.run(&mut bus, 1), Ok(StopReason::BudgetExhausted));
        assert_eq!((cpu.cpl, cpu.rip, cpu.gpr[4]), (0, CODE + 0x800, 0x9000));
        assert_eq!(
            (cpu.segment(Seg::Cs).selector, cpu.segment(Seg::Ss).selector),
            (0x08, 0x10)
        );
        assert_eq!(cpu.run(&mut bus, 1), Ok(StopReason::BudgetExhausted));
        assert_eq!((cpu.cpl, cpu.rip, cpu.gpr[4]), (3, 0x10_2000, 0x17_0000));
        assert_eq!(
            (cpu.segment(Seg::Cs).selector, cpu.segment(Seg::Ss).selector),
            (0x2b, 0x33)
        );
    }

    #[test]
    fn swapgs_string_io_and_msw() {
        // swapgs
        let (c, _) = run_bytes64(&[0x0f, 0x01, 0xf8], |c| {
            c.seg[Seg::Gs as usize].base = 1;
            c.msr.kernel_gs_base = 2;
        });
        assert_eq!((c.seg[Seg::Gs as usize].base, c.msr.kernel_gs_base), (2, 1));
        // rep outsb of "hi" to port 0x3f8, then insb from it
        let (_, bus) = run_bytes64(&[0xf3, 0x6e, 0x6c], |c| {
            c.gpr[2] = 0x3f8;
            c.gpr[1] = 2;
            c.gpr[6] = CODE + 0x100;
            c.gpr[7] = 0x20_0000;
        });
        assert_eq!(
            bus.port_writes,
            vec![(0x3f8, 0), (0x3f8, 0)],
            "bytes at CODE+0x100 are zero"
        );
        assert_eq!(
            bus.ram[0x20_0000], 0xf8,
            "INSB stored the byte read from the port"
        );
        // lmsw ax (MP|TS, PE kept); smsw ebx; clts
        let (c, _) = run_bytes64(&[0x0f, 0x01, 0xf0, 0x0f, 0x01, 0xe3, 0x0f, 0x06], |c| {
            c.gpr[0] = 0x000a
        });
        assert_eq!(c.gpr[3] & 0xf, cr0::PE | cr0::MP | cr0::TS);
        assert_eq!(c.cr0 & (cr0::PE | cr0::MP | cr0::TS), cr0::PE | cr0::MP);
    }
}
