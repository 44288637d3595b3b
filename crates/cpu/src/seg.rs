//! Segmentation: descriptor tables, segment-register loads with the protected-mode checks,
//! far JMP/CALL/RET (direct and through call gates, with the stack switch of an inter-privilege
//! call), IRET in real, protected and IA-32e mode (SDM Vol. 3A §3.4 segment selectors and
//! descriptors, §5.5–§5.8 privilege checks and call gates, §6.14 64-bit IRET; Vol. 2A "CALL",
//! "JMP", Vol. 2B "MOV", "POP", "RET", Vol. 2A "IRET").
//!
//! Not implemented, and reported as [`crate::CpuError::Unsupported`] when a guest needs them:
//! hardware task switching (task gates, JMP/CALL to a TSS, IRET with NT = 1) and virtual-8086
//! mode (IRET to EFLAGS.VM = 1).

use crate::Cpu;
use crate::bus::Bus;
use crate::error::CpuError;
use crate::fault::{Ex, Exc, Fault, vector};
use crate::flags::mask;
use crate::mmu::canonical;
use crate::regs::Gpr;
use crate::state::{Mode, Seg, Segment, ar};
use x86::reg::{efer, rflags};

/// Segment-descriptor fields.
pub(crate) mod desc {
    /// Base address (bits 15:0 of the descriptor's second word... packed as in the SDM).
    pub fn base(d: u64) -> u64 {
        ((d >> 16) & 0xff_ffff) | (((d >> 56) & 0xff) << 24)
    }
    /// The limit in bytes, scaled by G.
    pub fn limit(d: u64) -> u32 {
        let raw = ((d & 0xffff) | (((d >> 48) & 0xf) << 16)) as u32;
        if d & (1 << 55) != 0 {
            (raw << 12) | 0xfff
        } else {
            raw
        }
    }
    /// Access rights in the VMCS layout ([`crate::state::ar`]).
    pub fn ar(d: u64) -> u32 {
        (((d >> 40) & 0xff) | (((d >> 52) & 0xf) << 12)) as u32
    }
    pub fn dpl(d: u64) -> u8 {
        ((d >> 45) & 3) as u8
    }
    pub fn present(d: u64) -> bool {
        d & (1 << 47) != 0
    }
    /// S = 1: code or data.
    pub fn code_or_data(d: u64) -> bool {
        d & (1 << 44) != 0
    }
    pub fn code(d: u64) -> bool {
        code_or_data(d) && d & (1 << 43) != 0
    }
    pub fn conforming(d: u64) -> bool {
        code(d) && d & (1 << 42) != 0
    }
    /// Type field (bits 43:40).
    pub fn typ(d: u64) -> u8 {
        ((d >> 40) & 0xf) as u8
    }
}

/// Error code naming a selector (SDM Vol. 3A §6.13).
pub(crate) fn sel_err(sel: u16) -> u32 {
    u32::from(sel & 0xfffc)
}

impl Cpu {
    /// Linear address of the descriptor for `sel`, or `None` beyond the table limit.
    fn desc_lin(&self, sel: u16) -> Option<u64> {
        let (base, limit) = if sel & 4 != 0 {
            if self.ldtr.unusable() {
                return None;
            }
            (self.ldtr.base, u64::from(self.ldtr.limit))
        } else {
            (self.gdtr.base, u64::from(self.gdtr.limit))
        };
        let off = u64::from(sel & 0xfff8);
        (off + 7 <= limit).then_some(base.wrapping_add(off))
    }

    /// Reads the descriptor of `sel`; #GP(selector) beyond the table limit.
    pub(crate) fn read_desc<B: Bus>(&mut self, bus: &mut B, sel: u16) -> Ex<u64> {
        let lin = self.desc_lin(sel).ok_or(Fault::gp(sel_err(sel)))?;
        self.read_lin(bus, lin, 8, true)
    }

    /// Reads the upper half of a 16-byte system descriptor (IA-32e mode).
    fn read_desc_high<B: Bus>(&mut self, bus: &mut B, sel: u16) -> Ex<u64> {
        let lin = self
            .desc_lin(sel.wrapping_add(8))
            .ok_or(Fault::gp(sel_err(sel)))?;
        self.read_lin(bus, lin, 8, true)
    }

    /// Sets the accessed bit of a code/data descriptor.
    fn set_accessed<B: Bus>(&mut self, bus: &mut B, sel: u16, d: u64) -> Ex<()> {
        if d & (1 << 40) == 0
            && let Some(lin) = self.desc_lin(sel)
        {
            self.write_lin(bus, lin + 5, 1, (d >> 40) | 1, true)?;
        }
        Ok(())
    }

    pub(crate) fn seg_from_desc(sel: u16, d: u64) -> Segment {
        Segment {
            selector: sel,
            base: desc::base(d),
            limit: desc::limit(d),
            ar: desc::ar(d) | ar::ACCESSED,
        }
    }

    /// MOV/POP to DS, ES, FS, GS or SS (SDM Vol. 2B "MOV", protected-mode checks).
    pub(crate) fn load_data_seg<B: Bus>(&mut self, bus: &mut B, seg: Seg, sel: u16) -> Ex<()> {
        if self.mode == Mode::Real {
            let s = &mut self.seg[seg as usize];
            s.selector = sel;
            s.base = u64::from(sel) << 4;
            return Ok(());
        }
        let rpl = (sel & 3) as u8;
        if sel & 0xfffc == 0 {
            if seg == Seg::Ss && !(self.mode == Mode::Long64 && self.cpl != 3 && rpl == self.cpl) {
                return Err(Fault::gp(0).into());
            }
            self.seg[seg as usize] = Segment {
                selector: sel,
                ar: ar::UNUSABLE,
                ..Segment::default()
            };
            return Ok(());
        }
        let d = self.read_desc(bus, sel)?;
        let dpl = desc::dpl(d);
        if seg == Seg::Ss {
            let writable_data = desc::code_or_data(d) && !desc::code(d) && d & (1 << 41) != 0;
            if rpl != self.cpl || dpl != self.cpl || !writable_data {
                return Err(Fault::gp(sel_err(sel)).into());
            }
            if !desc::present(d) {
                return Err(Fault::with_code(vector::SS, sel_err(sel)).into());
            }
        } else {
            let readable = desc::code_or_data(d) && (!desc::code(d) || d & (1 << 41) != 0);
            if !readable || (!desc::conforming(d) && dpl < self.cpl.max(rpl)) {
                return Err(Fault::gp(sel_err(sel)).into());
            }
            if !desc::present(d) {
                return Err(Fault::with_code(vector::NP, sel_err(sel)).into());
            }
        }
        self.set_accessed(bus, sel, d)?;
        self.seg[seg as usize] = Self::seg_from_desc(sel, d);
        Ok(())
    }

    /// Loads CS from a checked code descriptor at privilege `cpl` and jumps to `rip`.
    fn load_cs(&mut self, sel: u16, d: u64, cpl: u8, rip: u64) -> Ex<()> {
        let cs = Self::seg_from_desc((sel & !3) | u16::from(cpl), d);
        let long = self.efer & efer::LMA != 0 && cs.ar & ar::L != 0;
        if !long && rip > u64::from(cs.limit) {
            return Err(Fault::gp(0).into());
        }
        if long && !canonical(rip) {
            return Err(Fault::gp(0).into());
        }
        self.seg[Seg::Cs as usize] = cs;
        self.cpl = cpl;
        self.update_mode();
        self.next_rip = rip;
        Ok(())
    }

    /// Checks a code-segment descriptor for a far transfer at the current CPL: conforming code
    /// needs DPL ≤ CPL, non-conforming code DPL = CPL and RPL ≤ CPL.
    fn check_far_code(&self, sel: u16, d: u64) -> Ex<()> {
        let rpl = (sel & 3) as u8;
        let dpl = desc::dpl(d);
        let ok = if desc::conforming(d) {
            dpl <= self.cpl
        } else {
            dpl == self.cpl && rpl <= self.cpl
        };
        if !ok || (self.efer & efer::LMA != 0 && d & (1 << 53) != 0 && d & (1 << 54) != 0) {
            return Err(Fault::gp(sel_err(sel)).into());
        }
        if !desc::present(d) {
            return Err(Fault::with_code(vector::NP, sel_err(sel)).into());
        }
        Ok(())
    }

    fn unsupported(&self, what: &'static str) -> Exc {
        let rip = self.seg[Seg::Cs as usize].base.wrapping_add(self.rip);
        Exc::Error(Box::new(CpuError::Unsupported { rip, what }))
    }

    /// A call gate: (target selector, offset, parameter count, 32-bit gate).
    fn read_call_gate<B: Bus>(
        &mut self,
        bus: &mut B,
        sel: u16,
        d: u64,
    ) -> Ex<(u16, u64, u32, bool)> {
        let rpl = (sel & 3) as u8;
        let dpl = desc::dpl(d);
        if dpl < self.cpl || dpl < rpl {
            return Err(Fault::gp(sel_err(sel)).into());
        }
        if !desc::present(d) {
            return Err(Fault::with_code(vector::NP, sel_err(sel)).into());
        }
        let target = (d >> 16) as u16;
        let mut off = (d & 0xffff) | ((d >> 32) & 0xffff_0000);
        let big = desc::typ(d) == 0xc;
        if self.efer & efer::LMA != 0 {
            let hi = self.read_desc_high(bus, sel)?;
            if (hi >> 40) & 0x1f != 0 {
                return Err(Fault::gp(sel_err(sel)).into());
            }
            off |= (hi & 0xffff_ffff) << 32;
        }
        Ok((target, off, (d >> 32) as u32 & 0x1f, big))
    }

    /// Resolves a far-transfer selector to (code selector, descriptor, offset, gate info).
    fn far_target<B: Bus>(&mut self, bus: &mut B, sel: u16, off: u64) -> Ex<FarTarget> {
        if sel & 0xfffc == 0 {
            return Err(Fault::gp(0).into());
        }
        let d = self.read_desc(bus, sel)?;
        if desc::code(d) {
            return Ok((sel, d, off, None));
        }
        if desc::code_or_data(d) {
            return Err(Fault::gp(sel_err(sel)).into());
        }
        let long = self.efer & efer::LMA != 0;
        match desc::typ(d) {
            0xc | 0x4 if !long || desc::typ(d) == 0xc => {
                let (target, goff, params, big) = self.read_call_gate(bus, sel, d)?;
                if target & 0xfffc == 0 {
                    return Err(Fault::gp(0).into());
                }
                let td = self.read_desc(bus, target)?;
                if !desc::code(td) || desc::dpl(td) > self.cpl {
                    return Err(Fault::gp(sel_err(target)).into());
                }
                if long && (td & (1 << 53) == 0 || td & (1 << 54) != 0) {
                    return Err(Fault::gp(sel_err(target)).into());
                }
                if !desc::present(td) {
                    return Err(Fault::with_code(vector::NP, sel_err(target)).into());
                }
                let goff = if big || long { goff } else { goff & 0xffff };
                Ok((target, td, goff, Some((params, big || long))))
            }
            0x1 | 0x9 | 0x5 => {
                Err(self.unsupported("hardware task switch (far transfer to a TSS or task gate)"))
            }
            _ => Err(Fault::gp(sel_err(sel)).into()),
        }
    }

    #[inline(never)]
    pub(crate) fn far_jmp<B: Bus>(
        &mut self,
        bus: &mut B,
        sel: u16,
        off: u64,
        osize: u32,
    ) -> Ex<()> {
        if self.mode == Mode::Real {
            self.seg[Seg::Cs as usize].selector = sel;
            self.seg[Seg::Cs as usize].base = u64::from(sel) << 4;
            self.next_rip = off & mask(osize);
            return Ok(());
        }
        let (tsel, d, off, gate) = self.far_target(bus, sel, off)?;
        if gate.is_some() {
            // JMP through a call gate: no privilege change; the target must be reachable.
            let dpl = desc::dpl(d);
            if (desc::conforming(d) && dpl > self.cpl) || (!desc::conforming(d) && dpl != self.cpl)
            {
                return Err(Fault::gp(sel_err(tsel)).into());
            }
            return self.load_cs(tsel, d, self.cpl, off);
        }
        self.check_far_code(tsel, d)?;
        self.set_accessed(bus, tsel, d)?;
        self.load_cs(
            tsel,
            d,
            self.cpl,
            off & if osize == 64 { u64::MAX } else { mask(osize) },
        )
    }

    #[inline(never)]
    pub(crate) fn far_call<B: Bus>(
        &mut self,
        bus: &mut B,
        sel: u16,
        off: u64,
        osize: u32,
    ) -> Ex<()> {
        let bytes = (osize / 8) as usize;
        let old_cs = self.seg[Seg::Cs as usize].selector;
        let ret = self.next_rip;
        if self.mode == Mode::Real {
            let saved = self.gpr[Gpr::Rsp as usize];
            let r = self
                .push(bus, u64::from(old_cs), bytes)
                .and_then(|()| self.push(bus, ret, bytes));
            if r.is_err() {
                self.gpr[Gpr::Rsp as usize] = saved;
                return r;
            }
            return self.far_jmp(bus, sel, off, osize);
        }
        let (tsel, d, off, gate) = self.far_target(bus, sel, off)?;
        let snapshot = self.snapshot();
        let r = (|| {
            match gate {
                None => {
                    self.check_far_code(tsel, d)?;
                    self.push(bus, u64::from(old_cs), bytes)?;
                    self.push(bus, ret, bytes)?;
                    self.set_accessed(bus, tsel, d)?;
                    self.load_cs(
                        tsel,
                        d,
                        self.cpl,
                        off & if osize == 64 { u64::MAX } else { mask(osize) },
                    )
                }
                Some((params, big)) => {
                    let dpl = desc::dpl(d);
                    let gbytes = if self.efer & efer::LMA != 0 {
                        8
                    } else if big {
                        4
                    } else {
                        2
                    };
                    if !desc::conforming(d) && dpl < self.cpl {
                        // More privileged: switch to the stack of the TSS for `dpl`.
                        let old_ss = self.seg[Seg::Ss as usize].selector;
                        let old_sp = self.gpr[Gpr::Rsp as usize];
                        let old_sp_bits = self.sp_bits();
                        let mut args = [0u64; 31];
                        let n = if self.efer & efer::LMA != 0 {
                            0
                        } else {
                            params as usize
                        };
                        for (i, a) in args[..n].iter_mut().enumerate() {
                            let addr = old_sp.wrapping_add((i * gbytes) as u64) & mask(old_sp_bits);
                            *a = self.read_seg(bus, Seg::Ss, addr, gbytes)?;
                        }
                        self.switch_stack(bus, dpl, 0)?;
                        self.push(bus, u64::from(old_ss), gbytes)?;
                        self.push(bus, old_sp, gbytes)?;
                        for a in args[..n].iter().rev() {
                            self.push(bus, *a, gbytes)?;
                        }
                        self.push(bus, u64::from(old_cs), gbytes)?;
                        self.push(bus, ret, gbytes)?;
                        self.load_cs(tsel, d, dpl, off)
                    } else {
                        self.push(bus, u64::from(old_cs), gbytes)?;
                        self.push(bus, ret, gbytes)?;
                        self.load_cs(tsel, d, self.cpl, off)
                    }
                }
            }
        })();
        if r.is_err() {
            self.restore(snapshot);
        }
        r
    }

    /// Loads SS:RSP for privilege level `dpl` from the TSS (or IST `ist` in IA-32e mode),
    /// and lowers the CPL to `dpl` so that the pushes that follow are supervisor accesses.
    pub(crate) fn switch_stack<B: Bus>(&mut self, bus: &mut B, dpl: u8, ist: u8) -> Ex<()> {
        let tr_sel = self.tr.selector;
        let ts = |code: u16| Fault::with_code(vector::TS, sel_err(code));
        if self.efer & efer::LMA != 0 {
            let off = if ist != 0 {
                0x24 + 8 * u64::from(ist - 1)
            } else {
                4 + 8 * u64::from(dpl)
            };
            if off + 7 > u64::from(self.tr.limit) {
                return Err(ts(tr_sel).into());
            }
            let rsp = self.read_lin(bus, self.tr.base.wrapping_add(off), 8, true)?;
            if !canonical(rsp) {
                return Err(Fault::with_code(vector::SS, 0).into());
            }
            if dpl != self.cpl {
                self.seg[Seg::Ss as usize] = Segment {
                    selector: u16::from(dpl),
                    ar: ar::UNUSABLE,
                    ..Segment::default()
                };
            }
            self.cpl = dpl;
            self.gpr[Gpr::Rsp as usize] = rsp & !0xf;
            return Ok(());
        }
        let big = self.tr.ar & 0x8 != 0;
        let (sp_off, ss_off, spb) = if big {
            (4 + 8 * u64::from(dpl), 8 + 8 * u64::from(dpl), 4)
        } else {
            (2 + 4 * u64::from(dpl), 4 + 4 * u64::from(dpl), 2)
        };
        if ss_off + 1 > u64::from(self.tr.limit) {
            return Err(ts(tr_sel).into());
        }
        let sp = self.read_lin(bus, self.tr.base.wrapping_add(sp_off), spb, true)?;
        let ss = self.read_lin(bus, self.tr.base.wrapping_add(ss_off), 2, true)? as u16;
        if ss & 0xfffc == 0 {
            return Err(Fault::with_code(vector::TS, 0).into());
        }
        if (ss & 3) as u8 != dpl {
            return Err(ts(ss).into());
        }
        let d = self.read_desc(bus, ss).map_err(|_| ts(ss))?;
        let writable_data = desc::code_or_data(d) && !desc::code(d) && d & (1 << 41) != 0;
        if desc::dpl(d) != dpl || !writable_data {
            return Err(ts(ss).into());
        }
        if !desc::present(d) {
            return Err(Fault::with_code(vector::SS, sel_err(ss)).into());
        }
        self.set_accessed(bus, ss, d)?;
        self.seg[Seg::Ss as usize] = Self::seg_from_desc(ss, d);
        self.cpl = dpl;
        self.update_mode();
        self.gpr[Gpr::Rsp as usize] = sp;
        Ok(())
    }

    #[inline(never)]
    pub(crate) fn far_ret<B: Bus>(&mut self, bus: &mut B, osize: u32, imm: u64) -> Ex<()> {
        let bytes = (osize / 8) as usize;
        let b = bytes as u64;
        let rip = self.peek(bus, 0, bytes)?;
        let sel = self.peek(bus, b, 2)? as u16;
        if self.mode == Mode::Real {
            let sp = self.gpr[Gpr::Rsp as usize].wrapping_add(2 * b + imm);
            self.set_sp(sp);
            return self.far_jmp(bus, sel, rip, osize);
        }
        if sel & 0xfffc == 0 {
            return Err(Fault::gp(0).into());
        }
        let d = self.read_desc(bus, sel)?;
        let rpl = (sel & 3) as u8;
        let dpl = desc::dpl(d);
        if !desc::code(d)
            || rpl < self.cpl
            || (desc::conforming(d) && dpl > rpl)
            || (!desc::conforming(d) && dpl != rpl)
        {
            return Err(Fault::gp(sel_err(sel)).into());
        }
        if !desc::present(d) {
            return Err(Fault::with_code(vector::NP, sel_err(sel)).into());
        }
        let snapshot = self.snapshot();
        let r = (|| {
            if rpl == self.cpl {
                let sp = self.gpr[Gpr::Rsp as usize].wrapping_add(2 * b + imm);
                self.set_sp(sp);
                return self.load_cs(sel, d, rpl, rip & mask(osize));
            }
            // Return to an outer level: SS:RSP follow CS:RIP (and the imm16 parameters).
            let new_sp = self.peek(bus, 2 * b + imm, bytes)?;
            let ss = self.peek(bus, 3 * b + imm, 2)? as u16;
            self.load_cs(sel, d, rpl, rip & mask(osize))?;
            self.load_ss_for_return(bus, ss, rpl, d)?;
            let sp = new_sp.wrapping_add(imm);
            self.gpr[Gpr::Rsp as usize] = if self.sp_bits() == 64 {
                sp
            } else {
                sp & mask(self.sp_bits())
            };
            self.null_inaccessible_segments();
            Ok(())
        })();
        if r.is_err() {
            self.restore(snapshot);
        }
        r
    }

    /// Loads SS on a return to an outer level (RET far, IRET): RPL and DPL must equal the new
    /// CPL, writable data; a null SS is allowed only for a 64-bit target below CPL 3.
    fn load_ss_for_return<B: Bus>(
        &mut self,
        bus: &mut B,
        ss: u16,
        cpl: u8,
        cs_desc: u64,
    ) -> Ex<()> {
        if ss & 0xfffc == 0 {
            let long_target = self.efer & efer::LMA != 0 && cs_desc & (1 << 53) != 0;
            if long_target && cpl != 3 {
                self.seg[Seg::Ss as usize] = Segment {
                    selector: ss,
                    ar: ar::UNUSABLE,
                    ..Segment::default()
                };
                return Ok(());
            }
            return Err(Fault::gp(0).into());
        }
        let d = self.read_desc(bus, ss)?;
        let writable_data = desc::code_or_data(d) && !desc::code(d) && d & (1 << 41) != 0;
        if (ss & 3) as u8 != cpl || desc::dpl(d) != cpl || !writable_data {
            return Err(Fault::gp(sel_err(ss)).into());
        }
        if !desc::present(d) {
            return Err(Fault::with_code(vector::SS, sel_err(ss)).into());
        }
        self.set_accessed(bus, ss, d)?;
        self.seg[Seg::Ss as usize] = Self::seg_from_desc(ss, d);
        self.update_mode();
        Ok(())
    }

    /// After a return to an outer level, data segment registers the new CPL may not use are
    /// loaded with null (SDM Vol. 2B "RET", "IRET").
    fn null_inaccessible_segments(&mut self) {
        for s in [Seg::Es, Seg::Ds, Seg::Fs, Seg::Gs] {
            let r = &mut self.seg[s as usize];
            let conforming_code = r.ar & (ar::CODE | ar::DC) == (ar::CODE | ar::DC);
            if !r.unusable() && !conforming_code && r.dpl() < self.cpl {
                *r = Segment {
                    selector: 0,
                    ar: ar::UNUSABLE,
                    ..Segment::default()
                };
            }
        }
    }

    /// IRET, IRETD, IRETQ.
    #[inline(never)]
    pub(crate) fn iret<B: Bus>(&mut self, bus: &mut B, ins: &iced_x86::Instruction) -> Ex<()> {
        // IRET ends NMI blocking, even when it faults (SDM Vol. 3A §6.7.1); in VMX non-root
        // operation it ends the guest's (virtual-)NMI blocking (Vol. 3C §26.3.1.5).
        if self.vmx.non_root {
            self.vmx.extra.nmi_blocked = false;
        } else {
            self.nmi_blocked = false;
        }
        let osize: u32 = match ins.mnemonic() {
            iced_x86::Mnemonic::Iret => 16,
            iced_x86::Mnemonic::Iretd => 32,
            _ => 64,
        };
        let b = u64::from(osize / 8);
        let bytes = b as usize;
        let rip = self.peek(bus, 0, bytes)?;
        let sel = self.peek(bus, b, 2)? as u16;
        let fl = self.peek(bus, 2 * b, bytes)?;
        if self.mode == Mode::Real {
            let sp = self.gpr[Gpr::Rsp as usize].wrapping_add(3 * b);
            self.set_sp(sp);
            self.seg[Seg::Cs as usize].selector = sel;
            self.seg[Seg::Cs as usize].base = u64::from(sel) << 4;
            self.next_rip = rip & mask(osize);
            self.load_flags_iret(fl, osize);
            return Ok(());
        }
        let long = self.efer & efer::LMA != 0;
        if self.flags.get(rflags::NT) {
            if long {
                return Err(Fault::gp(0).into());
            }
            return Err(self.unsupported("IRET with NT = 1 (task return)"));
        }
        if !long && fl & rflags::VM != 0 && self.cpl == 0 && osize == 32 {
            return Err(self.unsupported("IRET to virtual-8086 mode"));
        }
        if sel & 0xfffc == 0 {
            return Err(Fault::gp(0).into());
        }
        let d = self.read_desc(bus, sel)?;
        let rpl = (sel & 3) as u8;
        let dpl = desc::dpl(d);
        if !desc::code(d)
            || rpl < self.cpl
            || (desc::conforming(d) && dpl > rpl)
            || (!desc::conforming(d) && dpl != rpl)
            || (long && d & (1 << 53) != 0 && d & (1 << 54) != 0)
        {
            return Err(Fault::gp(sel_err(sel)).into());
        }
        if !desc::present(d) {
            return Err(Fault::with_code(vector::NP, sel_err(sel)).into());
        }
        let snapshot = self.snapshot();
        let r = (|| {
            // In 64-bit mode IRET always pops SS:RSP; elsewhere only on a privilege change.
            let pops_stack = self.mode == Mode::Long64 || rpl != self.cpl;
            let (new_sp, ss) = if pops_stack {
                (
                    self.peek(bus, 3 * b, bytes)?,
                    self.peek(bus, 4 * b, 2)? as u16,
                )
            } else {
                (0, 0)
            };
            let target_rip = if long && d & (1 << 53) != 0 {
                rip
            } else {
                rip & mask(osize.min(32))
            };
            self.load_flags_iret(fl, osize);
            if pops_stack {
                self.load_cs(sel, d, rpl, target_rip)?;
                self.load_ss_for_return(bus, ss, rpl, d)?;
                self.gpr[Gpr::Rsp as usize] = if self.sp_bits() == 64 {
                    new_sp
                } else {
                    new_sp & mask(self.sp_bits())
                };
            } else {
                let sp = self.gpr[Gpr::Rsp as usize].wrapping_add(3 * b);
                self.set_sp(sp);
                self.load_cs(sel, d, rpl, target_rip)?;
            }
            if rpl > snapshot.cpl {
                self.null_inaccessible_segments();
            }
            Ok(())
        })();
        if r.is_err() {
            self.restore(snapshot);
        }
        r
    }

    /// The EFLAGS load of IRET (Vol. 2A "IRET"): status, TF, DF, NT, RF, AC, ID always; IF if
    /// CPL ≤ IOPL; IOPL, VIF, VIP at CPL 0 (all of them in real mode).
    fn load_flags_iret(&mut self, v: u64, width: u32) {
        let mut changeable = rflags::STATUS
            | rflags::TF
            | rflags::DF
            | rflags::NT
            | rflags::RF
            | rflags::AC
            | rflags::ID;
        let iopl = ((self.flags.bits() & rflags::IOPL) >> rflags::IOPL_SHIFT) as u8;
        if self.mode == Mode::Real || self.cpl <= iopl {
            changeable |= rflags::IF;
        }
        if self.mode == Mode::Real || self.cpl == 0 {
            changeable |= rflags::IOPL | rflags::VIF | rflags::VIP;
        }
        changeable &= mask(width);
        let old = self.flags.bits();
        self.flags
            .set_bits((old & !changeable) | (v & changeable) | rflags::FIXED1);
    }

    /// Saves the state a multi-step transfer may change, to undo it on a fault.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            cs: self.seg[Seg::Cs as usize],
            ss: self.seg[Seg::Ss as usize],
            rsp: self.gpr[Gpr::Rsp as usize],
            cpl: self.cpl,
            flags: self.flags.bits(),
            next_rip: self.next_rip,
            data: [self.seg[0], self.seg[3], self.seg[4], self.seg[5]],
        }
    }

    pub(crate) fn restore(&mut self, s: Snapshot) {
        self.seg[Seg::Cs as usize] = s.cs;
        self.seg[Seg::Ss as usize] = s.ss;
        self.seg[0] = s.data[0];
        self.seg[3] = s.data[1];
        self.seg[4] = s.data[2];
        self.seg[5] = s.data[3];
        self.gpr[Gpr::Rsp as usize] = s.rsp;
        self.cpl = s.cpl;
        self.flags.set_bits(s.flags);
        self.next_rip = s.next_rip;
        self.update_mode();
    }
}

/// A resolved far-transfer target: code selector, its descriptor, the offset, and for a call
/// gate (parameter count, 32/64-bit gate).
type FarTarget = (u16, u64, u64, Option<(u32, bool)>);

/// State saved around far transfers and event delivery.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snapshot {
    cs: Segment,
    ss: Segment,
    rsp: u64,
    pub cpl: u8,
    flags: u64,
    next_rip: u64,
    data: [Segment; 4],
}

#[cfg(test)]
mod tests {
    use crate::fault::{Exc, Fault, vector};
    use crate::test_utils::TestBus;
    use crate::{Cpu, DescriptorTable, Seg, StopReason};

    const GDT: u64 = 0x5000;
    const TSS: u64 = 0x6000;
    const IDT: u64 = 0x7000;
    const GATE_TARGET: u64 = 0x10_0800;
    const INT_HANDLER: u64 = 0x10_0900;

    fn gate32(offset: u64, sel: u16, access: u64, params: u64) -> u64 {
        (offset & 0xffff)
            | (u64::from(sel) << 16)
            | (params << 32)
            | (access << 40)
            | ((offset >> 16) << 48)
    }

    /// 32-bit protected mode with ring 0 and ring 3 flat segments, a 32-bit TSS (ESP0 = 0x9000,
    /// SS0 = 0x10), a DPL 3 call gate at 0x30 and a DPL 3 interrupt gate for vector 0x80.
    fn protected_env(code: &[u8]) -> (Cpu, TestBus) {
        let mut bus = TestBus::new();
        let gdt = [
            0,
            0x00cf_9a00_0000_ffff,
            0x00cf_9200_0000_ffff,
            0x00cf_fa00_0000_ffff,
            0x00cf_f200_0000_ffff,
            0x67 | (TSS << 16) | (0x89 << 40),
            gate32(GATE_TARGET, 0x08, 0xec, 1),
        ];
        for (i, d) in gdt.iter().enumerate() {
            bus.write_u64(GDT + 8 * i as u64, *d);
        }
        bus.load(TSS + 4, &0x9000u32.to_le_bytes());
        bus.load(TSS + 8, &0x10u32.to_le_bytes());
        bus.write_u64(IDT + 8 * 0x80, gate32(INT_HANDLER, 0x08, 0xee, 0));
        bus.load(0x10_0000, code);
        let mut cpu = Cpu::new();
        cpu.set_multiboot_entry(0x10_0000, 0, 0);
        cpu.gpr = [0; 16];
        cpu.gpr[4] = 0x8000;
        cpu.gdtr = DescriptorTable {
            base: GDT,
            limit: 0x37,
        };
        cpu.idtr = DescriptorTable {
            base: IDT,
            limit: 0x7ff,
        };
        (cpu, bus)
    }

    #[test]
    fn ring3_call_gate_with_parameter_copy_retf_and_32_bit_interrupt_gate() {
        #[rustfmt::skip]
        let kernel = [
            0x66, 0xb8, 0x28, 0x00,                 // mov ax, 0x28
            0x0f, 0x00, 0xd8,                       // ltr ax
            0x6a, 0x23,                             // push 0x23        (SS)
            0x68, 0x00, 0x00, 0x17, 0x00,           // push 0x170000    (ESP)
            0x6a, 0x02,                             // push 2           (EFLAGS)
            0x6a, 0x1b,                             // push 0x1b        (CS)
            0x68, 0x00, 0x10, 0x10, 0x00,           // push 0x101000    (EIP)
            0xcf,                                   // iretd
        ];
        let (mut cpu, mut bus) = protected_env(&kernel);
        // User: push 0x55; call far 0x33:0 (the call gate); int 0x80
        bus.load(
            0x10_1000,
            &[0x6a, 0x55, 0x9a, 0, 0, 0, 0, 0x33, 0x00, 0xcd, 0x80],
        );
        // Gate target (CPL 0): mov eax, [esp+8] (the copied parameter); retf 4
        bus.load(GATE_TARGET, &[0x8b, 0x44, 0x24, 0x08, 0xca, 0x04, 0x00]);
        bus.load(INT_HANDLER, &[0xf4]);

        assert_eq!(cpu.run(&mut bus, 8), Ok(StopReason::BudgetExhausted));
        assert_eq!(
            (cpu.cpl(), cpu.rip(), cpu.segment(Seg::Ss).selector),
            (3, 0x10_1000, 0x23)
        );
        assert_eq!(
            bus.ram[GDT as usize + 0x28 + 5] & 0xf,
            0xb,
            "LTR marks the TSS busy"
        );

        // push; call far through the gate: CPL 0 on the TSS stack with the parameter copied.
        assert_eq!(cpu.run(&mut bus, 2), Ok(StopReason::BudgetExhausted));
        assert_eq!(
            (cpu.cpl(), cpu.rip(), cpu.segment(Seg::Ss).selector),
            (0, GATE_TARGET, 0x10)
        );
        let esp = cpu.gpr[4];
        assert_eq!(esp, 0x9000 - 20);
        let rd = |bus: &TestBus, a: u64| {
            u32::from_le_bytes(bus.ram[a as usize..a as usize + 4].try_into().unwrap())
        };
        assert_eq!(
            [
                rd(&bus, esp),
                rd(&bus, esp + 4),
                rd(&bus, esp + 8),
                rd(&bus, esp + 12),
                rd(&bus, esp + 16)
            ],
            [0x10_1009, 0x1b, 0x55, 0x16_fffc, 0x23]
        );
        // mov eax, [esp+8]; retf 4: back at CPL 3, parameter popped from both stacks.
        assert_eq!(cpu.run(&mut bus, 2), Ok(StopReason::BudgetExhausted));
        assert_eq!(
            (cpu.cpl(), cpu.rip(), cpu.gpr[0], cpu.gpr[4]),
            (3, 0x10_1009, 0x55, 0x17_0000)
        );
        // int 0x80 through a 32-bit interrupt gate: stack switch to ESP0 and a 5-dword frame.
        assert_eq!(cpu.run(&mut bus, 10), Ok(StopReason::Halted));
        let esp = cpu.gpr[4];
        assert_eq!(esp, 0x9000 - 20);
        assert_eq!(
            [
                rd(&bus, esp),
                rd(&bus, esp + 4),
                rd(&bus, esp + 12),
                rd(&bus, esp + 16)
            ],
            [0x10_100b, 0x1b, 0x17_0000, 0x23]
        );
    }

    #[test]
    fn segment_load_checks() {
        let (mut cpu, mut bus) = protected_env(&[]);
        cpu.icache.attach(&bus);
        // A ring 3 data segment into SS at CPL 0: #GP(selector).
        assert_eq!(
            cpu.load_data_seg(&mut bus, Seg::Ss, 0x23),
            Err(Exc::Fault(Fault::gp(0x20)))
        );
        // Null SS outside 64-bit mode: #GP(0). Null DS: fine, unusable.
        assert_eq!(
            cpu.load_data_seg(&mut bus, Seg::Ss, 0),
            Err(Exc::Fault(Fault::gp(0)))
        );
        assert_eq!(cpu.load_data_seg(&mut bus, Seg::Ds, 0), Ok(()));
        assert!(cpu.segment(Seg::Ds).unusable());
        // A selector beyond the GDT limit: #GP(selector).
        assert_eq!(
            cpu.load_data_seg(&mut bus, Seg::Es, 0x80),
            Err(Exc::Fault(Fault::gp(0x80)))
        );
        // Not present: #NP(selector).
        bus.ram[GDT as usize + 0x10 + 5] &= 0x7f;
        assert_eq!(
            cpu.load_data_seg(&mut bus, Seg::Fs, 0x10),
            Err(Exc::Fault(Fault::with_code(vector::NP, 0x10)))
        );
        // A code segment is not writable: loading it into SS is #GP.
        assert_eq!(
            cpu.load_data_seg(&mut bus, Seg::Ss, 0x08),
            Err(Exc::Fault(Fault::gp(0x08)))
        );
        // Reading through the null DS is #GP(0).
        assert_eq!(
            cpu.read_seg(&mut bus, Seg::Ds, 0, 4),
            Err(Exc::Fault(Fault::gp(0)))
        );
        // A write beyond a 16-bit limit through SS is #SS(0).
        cpu.seg[Seg::Ss as usize].limit = 0xfff;
        assert_eq!(
            cpu.write_seg(&mut bus, Seg::Ss, 0xffe, 4, 0),
            Err(Exc::Fault(Fault::with_code(vector::SS, 0)))
        );
    }
}

impl Cpu {
    /// LAR, LSL, VERR, VERW (SDM Vol. 2A "LAR", Vol. 2B "LSL", "VERR/VERW"): ZF = 1 when the
    /// selector names a descriptor of an allowed type visible at the current CPL and RPL; no
    /// fault for a bad selector, only ZF = 0.
    #[inline(never)]
    pub(crate) fn lar_lsl<B: Bus>(&mut self, bus: &mut B, ins: &iced_x86::Instruction) -> Ex<()> {
        use iced_x86::Mnemonic as M;
        if self.mode == Mode::Real {
            return Err(Fault::ud().into());
        }
        let m = ins.mnemonic();
        let src_op = if matches!(m, M::Lar | M::Lsl) { 1 } else { 0 };
        let l = self.loc(ins, src_op);
        let sel = self.get(bus, l, 16)? as u16;
        let long = self.efer & efer::LMA != 0;
        let found = if sel & 0xfffc == 0 || self.desc_lin(sel).is_none() {
            None
        } else {
            Some(self.read_desc(bus, sel)?)
        };
        let ok = found.filter(|&d| {
            let rpl = (sel & 3) as u8;
            let visible = desc::conforming(d) && matches!(m, M::Lar | M::Lsl | M::Verr)
                || desc::dpl(d) >= self.cpl.max(rpl);
            let typ = desc::typ(d);
            let type_ok = if desc::code_or_data(d) {
                match m {
                    M::Verr => !desc::code(d) || d & (1 << 41) != 0,
                    M::Verw => !desc::code(d) && d & (1 << 41) != 0,
                    _ => true,
                }
            } else {
                match (m, long) {
                    (M::Lar, false) => matches!(typ, 1 | 2 | 3 | 4 | 5 | 9 | 0xb | 0xc),
                    (M::Lar, true) => matches!(typ, 2 | 9 | 0xb | 0xc),
                    (M::Lsl, false) => matches!(typ, 1 | 2 | 3 | 9 | 0xb),
                    (M::Lsl, true) => matches!(typ, 2 | 9 | 0xb),
                    _ => false,
                }
            };
            visible && type_ok
        });
        self.flags.set(rflags::ZF, ok.is_some());
        if let Some(d) = ok {
            let w = self.op_width(ins, 0);
            let dst = self.loc(ins, 0);
            match m {
                M::Lar => self.put(bus, dst, w, (d >> 32) & 0x00f0_ff00 & mask(w))?,
                M::Lsl => self.put(bus, dst, w, u64::from(desc::limit(d)) & mask(w))?,
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod lar_tests {
    use crate::test_utils::*;
    use x86::reg::rflags::ZF;

    #[test]
    fn lar_lsl_verr_verw() {
        // lar eax, ecx ; lsl ebx, ecx   (ecx = user data selector 0x2b)
        let code = [0x0f, 0x02, 0xc1, 0x0f, 0x03, 0xd9, 0xf4];
        let (mut cpu, mut bus) = long_env(&code);
        cpu.gpr[1] = u64::from(UDATA);
        assert_eq!(cpu.run(&mut bus, 10), Ok(crate::StopReason::Halted));
        assert_eq!(
            cpu.gpr[0], 0x00c0_f200,
            "second descriptor dword AND 00F0FF00H"
        );
        assert_eq!(cpu.gpr[3], 0xffff_ffff);
        assert_eq!(cpu.rflags() & ZF, ZF);
        // verw cx on the 64-bit code selector: not writable -> ZF = 0; verr: readable -> ZF = 1
        let (mut cpu, mut bus) = long_env(&[0x0f, 0x00, 0xe9, 0xf4]);
        cpu.gpr[1] = u64::from(KCODE64);
        cpu.flags.set_bits(2 | ZF);
        assert_eq!(cpu.run(&mut bus, 10), Ok(crate::StopReason::Halted));
        assert_eq!(cpu.rflags() & ZF, 0);
        let (mut cpu, mut bus) = long_env(&[0x0f, 0x00, 0xe1, 0xf4]);
        cpu.gpr[1] = u64::from(KCODE64);
        assert_eq!(cpu.run(&mut bus, 10), Ok(crate::StopReason::Halted));
        assert_eq!(cpu.rflags() & ZF, ZF);
        // lsl with a selector beyond the GDT: ZF = 0, no fault
        let (mut cpu, mut bus) = long_env(&[0x0f, 0x03, 0xd9, 0xf4]);
        cpu.gpr[1] = 0x1000;
        cpu.gpr[3] = 7;
        assert_eq!(cpu.run(&mut bus, 10), Ok(crate::StopReason::Halted));
        assert_eq!((cpu.rflags() & ZF, cpu.gpr[3]), (0, 7));
    }
}
