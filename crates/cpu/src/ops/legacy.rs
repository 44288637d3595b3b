//! The rest of the general-purpose set: decimal adjust (DAA, DAS, AAA, AAS, AAM, AAD), BOUND,
//! ARPL, SALC, far-pointer loads (LDS, LES, LFS, LGS, LSS), WAIT, CLAC/STAC (SMAP), and the
//! architectural outcome of instructions whose CPUID feature this processor does not have
//! (SDM Vol. 2A/2B instruction pages; Vol. 3A §2.5 CR0.EM/TS/MP for #NM).

use iced_x86::{CpuidFeature as F, Instruction, Mnemonic as M, Register};

use crate::Cpu;
use crate::bus::Bus;
use crate::exec::{Loc, seg_of};
use crate::fault::{Ex, Exc, Fault, vector};
use crate::flags::parity;
use crate::state::Mode;
use x86::reg::cr0;
use x86::reg::rflags::{AC, AF, CF, PF, SF, ZF};

/// The CPUID features this processor has (and advertises, or has on every Intel 64 CPU).
fn has_feature(f: F) -> bool {
    matches!(
        f,
        F::INTEL8086
            | F::INTEL186
            | F::INTEL286
            | F::INTEL386
            | F::INTEL486
            | F::X64
            | F::CPUID
            | F::CMOV
            | F::CX8
            | F::CMPXCHG16B
            | F::POPCNT
            | F::LZCNT
            | F::RDTSCP
            | F::SYSCALL
            | F::SEP
            | F::MSR
            | F::TSC
            | F::INVPCID
            | F::PAUSE
            | F::MULTIBYTENOP
            | F::SMAP
    )
}

impl Cpu {
    fn szp(&mut self, v: u64, keep: u64) {
        let mut f = keep;
        if v & 0xff == 0 {
            f |= ZF;
        }
        if v & 0x80 != 0 {
            f |= SF;
        }
        if parity(v) {
            f |= PF;
        }
        self.flags.set_status(f);
    }

    #[inline(never)]
    pub(crate) fn bcd(&mut self, ins: &Instruction) -> Ex<()> {
        let al = self.reg(Register::AL);
        let ax = self.reg(Register::AX);
        let cf = self.flags.cf();
        let af = self.flags.get(AF);
        match ins.mnemonic() {
            M::Daa | M::Das => {
                let daa = ins.mnemonic() == M::Daa;
                let mut r = al;
                let mut f = 0;
                if al & 0xf > 9 || af {
                    r = if daa { r + 6 } else { r.wrapping_sub(6) };
                    if cf || r > 0xff {
                        f |= CF;
                    }
                    f |= AF;
                }
                if al > 0x99 || cf {
                    r = if daa { r + 0x60 } else { r.wrapping_sub(0x60) };
                    f |= CF;
                }
                self.set_reg(Register::AL, r & 0xff);
                self.szp(r, f);
            }
            M::Aaa | M::Aas => {
                let f = if al & 0xf > 9 || af {
                    let v = if ins.mnemonic() == M::Aaa {
                        ax.wrapping_add(0x106)
                    } else {
                        (ax.wrapping_sub(6) & 0xff) | ((ax >> 8).wrapping_sub(1) << 8)
                    };
                    self.set_reg(Register::AX, v);
                    AF | CF
                } else {
                    0
                };
                let al = self.reg(Register::AL) & 0xf;
                self.set_reg(Register::AL, al);
                let b = self.flags.bits() & !(AF | CF);
                self.flags.set_bits(b | f);
            }
            M::Aam => {
                let base = ins.immediate(0) & 0xff;
                if base == 0 {
                    return Err(Fault::new(vector::DE).into());
                }
                self.set_reg(Register::AX, ((al / base) << 8) | (al % base));
                self.szp(al % base, 0);
            }
            M::Aad => {
                let base = ins.immediate(0) & 0xff;
                let r = (al + (ax >> 8) * base) & 0xff;
                self.set_reg(Register::AX, r);
                self.szp(r, 0);
            }
            _ => {
                // SALC: AL = CF ? 0xFF : 0 (no flags).
                self.set_reg(Register::AL, if cf { 0xff } else { 0 });
            }
        }
        Ok(())
    }

    #[inline(never)]
    pub(crate) fn bound<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let w = self.op_width(ins, 0);
        let Loc::Mem(seg, off) = self.loc(ins, 1) else {
            return Err(Fault::ud().into());
        };
        let b = (w / 8) as usize;
        let sx = |v: u64| ((v << (64 - w)) as i64) >> (64 - w);
        let lower = sx(self.read_seg(bus, seg, off, b)?);
        let upper = sx(self.read_seg(bus, seg, off.wrapping_add(b as u64), b)?);
        let idx = sx(self.reg(ins.op0_register()));
        if idx < lower || idx > upper {
            return Err(Fault::new(vector::BR).into());
        }
        Ok(())
    }

    #[inline(never)]
    pub(crate) fn arpl<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        if self.mode == Mode::Real {
            return Err(Fault::ud().into());
        }
        let dst = self.loc(ins, 0);
        let d = self.get_rmw(bus, dst, 16)?;
        let s = self.reg(ins.op1_register());
        if d & 3 < s & 3 {
            self.flags.set(ZF, true);
            self.put(bus, dst, 16, (d & !3) | (s & 3))
        } else {
            self.flags.set(ZF, false);
            Ok(())
        }
    }

    /// LDS, LES, LFS, LGS, LSS r, m16:16/32/64.
    #[inline(never)]
    pub(crate) fn load_far_pointer<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let Loc::Mem(seg, off) = self.loc(ins, 1) else {
            return Err(Fault::ud().into());
        };
        let w = self.op_width(ins, 0);
        let b = (w / 8) as usize;
        let offset = self.read_seg(bus, seg, off, b)?;
        let sel = self.read_seg(bus, seg, off.wrapping_add(b as u64), 2)? as u16;
        let target = seg_of(match ins.mnemonic() {
            M::Lds => Register::DS,
            M::Les => Register::ES,
            M::Lfs => Register::FS,
            M::Lgs => Register::GS,
            _ => Register::SS,
        });
        self.load_data_seg(bus, target, sel)?;
        self.set_reg(ins.op0_register(), offset);
        Ok(())
    }

    /// WAIT/FWAIT: #NM when CR0.MP and CR0.TS are both set; there is no x87 whose pending
    /// exceptions it could report.
    pub(crate) fn wait(&mut self) -> Ex<()> {
        if self.cr0 & cr0::MP != 0 && self.cr0 & cr0::TS != 0 {
            return Err(Fault::new(vector::NM).into());
        }
        Ok(())
    }

    /// CLAC/STAC (SMAP): CPL 0 only, else #UD.
    pub(crate) fn clac_stac(&mut self, ins: &Instruction) -> Ex<()> {
        if self.cpl != 0 {
            return Err(Fault::ud().into());
        }
        self.flags.set(AC, ins.mnemonic() == M::Stac);
        Ok(())
    }

    /// An instruction the dispatcher does not handle. If it needs a CPUID feature this
    /// processor lacks, the outcome is architectural: #UD (x87 instructions: #NM when CR0.EM or
    /// CR0.TS is set). Otherwise it is a hole in the model, reported by name.
    #[inline(never)]
    pub(crate) fn not_dispatched<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Exc {
        let features = ins.cpuid_features();
        let fpu = features.iter().any(|f| {
            matches!(
                f,
                F::FPU | F::FPU287 | F::FPU387 | F::FPU287XL_ONLY | F::FPU387SL_ONLY
            )
        });
        if fpu {
            if self.cr0 & (cr0::EM | cr0::TS) != 0 {
                return Fault::new(vector::NM).into();
            }
            // No x87 and CR0.EM = 0: the SDM leaves this undefined; stop and say so.
            return self.unimplemented(bus, ins);
        }
        if !features.is_empty() && !features.iter().all(|f| has_feature(*f)) {
            return Fault::ud().into();
        }
        self.unimplemented(bus, ins)
    }
}

#[cfg(test)]
mod tests {
    use crate::Cpu;
    use crate::fault::{Fault, vector};
    use crate::test_utils::{TestBus, run_bytes64, run_bytes64_fault};
    use x86::reg::rflags::{AF, CF};

    /// Runs 32-bit code (multiboot entry state) up to HLT.
    fn run32(code: &[u8], setup: impl FnOnce(&mut Cpu)) -> Cpu {
        let mut bus = TestBus::new();
        let mut c = code.to_vec();
        c.push(0xf4);
        bus.load(0x10_0000, &c);
        let mut cpu = Cpu::new();
        cpu.set_multiboot_entry(0x10_0000, 0, 0);
        cpu.gpr = [0; 16];
        cpu.gpr[4] = 0x8000;
        setup(&mut cpu);
        assert_eq!(cpu.run(&mut bus, 100), Ok(crate::StopReason::Halted));
        cpu
    }

    #[test]
    fn decimal_adjust() {
        // add al, bl ; daa  (0x19 + 0x28 = 0x41 -> 0x47 BCD)
        let c = run32(&[0x00, 0xd8, 0x27], |c| {
            c.gpr[0] = 0x19;
            c.gpr[3] = 0x28;
        });
        assert_eq!(c.gpr[0] & 0xff, 0x47);
        // sub al, bl ; das  (0x41 - 0x28 = 0x19 -> 0x13 BCD)
        let c = run32(&[0x28, 0xd8, 0x2f], |c| {
            c.gpr[0] = 0x41;
            c.gpr[3] = 0x28;
        });
        assert_eq!(c.gpr[0] & 0xff, 0x13);
        // aaa after 9 + 3: AX = 0x0102, CF = AF = 1  (add al, bl ; aaa)
        let c = run32(&[0x00, 0xd8, 0x37], |c| {
            c.gpr[0] = 9;
            c.gpr[3] = 3;
        });
        assert_eq!(c.gpr[0] & 0xffff, 0x0102);
        assert_eq!(c.rflags() & (AF | CF), AF | CF);
        // aam: 47 -> AH = 4, AL = 7 ; aad: back to 47
        let c = run32(&[0xd4, 0x0a], |c| c.gpr[0] = 47);
        assert_eq!(c.gpr[0] & 0xffff, 0x0407);
        let c = run32(&[0xd5, 0x0a], |c| c.gpr[0] = 0x0407);
        assert_eq!(c.gpr[0] & 0xffff, 47);
        // salc after stc
        let c = run32(&[0xf9, 0xd6], |_| {});
        assert_eq!(c.gpr[0] & 0xff, 0xff);
    }

    #[test]
    fn unavailable_features_raise_ud_and_x87_nm() {
        // movaps xmm0, xmm1 (SSE not present): #UD
        assert_eq!(run_bytes64_fault(&[0x0f, 0x28, 0xc1], |_| {}), vector::UD);
        // adcx eax, ecx (ADX not present): #UD
        assert_eq!(
            run_bytes64_fault(&[0x66, 0x0f, 0x38, 0xf6, 0xc1], |_| {}),
            vector::UD
        );
        // fld1 with CR0.EM = 1: #NM
        assert_eq!(
            run_bytes64_fault(&[0xd9, 0xe8], |c| c.cr0 |= x86::reg::cr0::EM),
            vector::NM
        );
        // endbr64 is a NOP without CET; stac/clac toggle AC at CPL 0
        let (c, _) = run_bytes64(&[0xf3, 0x0f, 0x1e, 0xfa, 0x0f, 0x01, 0xcb], |_| {});
        assert_ne!(c.rflags() & (1 << 18), 0);
        assert_eq!(
            run_bytes64_fault(&[0x0f, 0x01, 0xca], |c| c.cpl = 3),
            vector::UD
        );
        let _ = Fault::ud();
    }
}
