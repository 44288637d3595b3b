//! Integer arithmetic: ADD, ADC, SUB, SBB, CMP, INC, DEC, NEG, and the two-operand dispatcher
//! shared with the logic group (SDM Vol. 2A/2B instruction pages; flags per Vol. 1 Appendix A).

use iced_x86::{Instruction, Mnemonic as M, OpKind};

use crate::regs;

use crate::Cpu;
use crate::bus::Bus;
use crate::fault::{Ex, Fault};
use crate::flags::{FlagOp, mask};

/// The eight classic two-operand ALU operations plus TEST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AluOp {
    Add,
    Or,
    Adc,
    Sbb,
    And,
    Sub,
    Xor,
    Cmp,
    Test,
}

impl Cpu {
    /// Computes `a op b` at `width` bits, sets the flags, and returns the result.
    #[inline(always)]
    pub(crate) fn alu_compute(&mut self, op: AluOp, width: u32, a: u64, b: u64) -> u64 {
        let m = mask(width);
        match op {
            AluOp::Add => {
                let r = a.wrapping_add(b) & m;
                self.flags.set_lazy(FlagOp::Add, width, a, b, r, false);
                r
            }
            AluOp::Adc => {
                let c = self.flags.cf();
                let r = a.wrapping_add(b).wrapping_add(u64::from(c)) & m;
                self.flags.set_lazy(FlagOp::Add, width, a, b, r, c);
                r
            }
            AluOp::Sub | AluOp::Cmp => {
                let r = a.wrapping_sub(b) & m;
                self.flags.set_lazy(FlagOp::Sub, width, a, b, r, false);
                r
            }
            AluOp::Sbb => {
                let c = self.flags.cf();
                let r = a.wrapping_sub(b).wrapping_sub(u64::from(c)) & m;
                self.flags.set_lazy(FlagOp::Sub, width, a, b, r, c);
                r
            }
            AluOp::And | AluOp::Test => self.logic_result(width, a & b),
            AluOp::Or => self.logic_result(width, a | b),
            AluOp::Xor => self.logic_result(width, a ^ b),
        }
    }

    /// `op0 = op0 op op1` (or just the flags for CMP and TEST).
    pub(crate) fn alu<B: Bus>(&mut self, bus: &mut B, ins: &Instruction, op: AluOp) -> Ex<()> {
        // Fast path: a register destination (no LOCK possible) and a register or immediate
        // source, the common case in compiled code.
        if ins.op0_kind() == OpKind::Register
            && !ins.has_lock_prefix()
            && let Some(d) = regs::gpr_ref(ins.op0_register())
        {
            let b = match ins.op1_kind() {
                OpKind::Register => {
                    regs::gpr_ref(ins.op1_register()).map(|s| regs::read(&self.gpr, s))
                }
                OpKind::Memory => None,
                _ => Some(ins.immediate(1)),
            };
            if let Some(b) = b {
                let a = regs::read(&self.gpr, d);
                let r = self.alu_compute(op, d.width, a, b & mask(d.width));
                if !matches!(op, AluOp::Cmp | AluOp::Test) {
                    regs::write(&mut self.gpr, d, r);
                }
                return Ok(());
            }
        }
        let width = self.op_width(ins, 0);
        let dst = self.loc(ins, 0);
        let src = self.loc(ins, 1);
        let writes = !matches!(op, AluOp::Cmp | AluOp::Test);
        self.check_lock(ins, writes)?;
        let a = if writes {
            self.get_rmw(bus, dst, width)?
        } else {
            self.get(bus, dst, width)?
        };
        let b = self.get(bus, src, width)?;
        let r = self.alu_compute(op, width, a, b);
        if writes {
            self.put(bus, dst, width, r)?;
        }
        Ok(())
    }

    /// INC, DEC, NEG, NOT.
    pub(crate) fn unary<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        self.check_lock(ins, true)?;
        let width = self.op_width(ins, 0);
        let dst = self.loc(ins, 0);
        let a = self.get_rmw(bus, dst, width)?;
        let m = mask(width);
        let r = match ins.mnemonic() {
            M::Inc => {
                let r = a.wrapping_add(1) & m;
                let cf = self.flags.cf();
                self.flags.set_lazy(FlagOp::Inc, width, a, 1, r, cf);
                r
            }
            M::Dec => {
                let r = a.wrapping_sub(1) & m;
                let cf = self.flags.cf();
                self.flags.set_lazy(FlagOp::Dec, width, a, 1, r, cf);
                r
            }
            M::Neg => {
                let r = 0u64.wrapping_sub(a) & m;
                self.flags.set_lazy(FlagOp::Sub, width, 0, a, r, false);
                r
            }
            _ => !a & m,
        };
        self.put(bus, dst, width, r)
    }

    /// LOCK is allowed only on read-modify-write instructions with a memory destination
    /// (SDM Vol. 2A "LOCK"); iced rejects it on the wrong opcodes, this catches a register
    /// destination or a compare.
    #[inline]
    pub(crate) fn check_lock(&self, ins: &Instruction, writes: bool) -> Ex<()> {
        if ins.has_lock_prefix() && (!writes || ins.op0_kind() != OpKind::Memory) {
            return Err(Fault::ud().into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::test_utils::{FlagCase, run_bytes64};
    use x86::reg::rflags::{AF, CF, OF, PF, SF, ZF};

    /// Golden flag table: (bytes, disassembly, rax, rbx, expected rax, expected status flags).
    #[test]
    fn add_sub_golden_flags() {
        let table: &[FlagCase] = &[
            (&[0x00, 0xd8], "add al, bl", 0x7f, 0x01, 0x80, SF | OF | AF),
            (
                &[0x00, 0xd8],
                "add al, bl",
                0xff,
                0x01,
                0x00,
                ZF | CF | AF | PF,
            ),
            (
                &[0x00, 0xd8],
                "add al, bl",
                0x80,
                0x80,
                0x00,
                ZF | CF | OF | PF,
            ),
            (&[0x48, 0x01, 0xd8], "add rax, rbx", u64::MAX, 2, 1, CF | AF),
            (
                &[0x01, 0xd8],
                "add eax, ebx",
                0x7fff_ffff,
                1,
                0x8000_0000,
                SF | OF | AF | PF,
            ),
            (
                &[0x28, 0xd8],
                "sub al, bl",
                0x00,
                0x01,
                0xff,
                SF | CF | AF | PF,
            ),
            (&[0x28, 0xd8], "sub al, bl", 0x80, 0x01, 0x7f, OF | AF),
            (&[0x66, 0x29, 0xd8], "sub ax, bx", 5, 5, 0, ZF | PF),
            (
                &[0x48, 0x29, 0xd8],
                "sub rax, rbx",
                0,
                1,
                u64::MAX,
                SF | CF | AF | PF,
            ),
            (&[0x38, 0xd8], "cmp al, bl", 0x10, 0x20, 0x10, SF | CF | PF),
        ];
        for &(bytes, asm, a, b, want, flags) in table {
            let (cpu, _) = run_bytes64(bytes, |c| {
                c.gpr[0] = a;
                c.gpr[3] = b;
            });
            assert_eq!(cpu.gpr[0], want, "{asm}");
            assert_eq!(
                cpu.rflags() & (CF | PF | AF | ZF | SF | OF),
                flags,
                "{asm} {a:#x},{b:#x}"
            );
        }
    }

    #[test]
    fn adc_sbb_use_the_carry() {
        // stc; adc al, bl
        let (cpu, _) = run_bytes64(&[0xf9, 0x10, 0xd8], |c| {
            c.gpr[0] = 0xff;
            c.gpr[3] = 0;
        });
        assert_eq!(cpu.gpr[0] & 0xff, 0);
        assert_eq!(cpu.rflags() & (CF | ZF | OF | AF), CF | ZF | AF);
        // stc; sbb al, bl  (0 - 0 - 1)
        let (cpu, _) = run_bytes64(&[0xf9, 0x18, 0xd8], |c| {
            c.gpr[0] = 0;
            c.gpr[3] = 0;
        });
        assert_eq!(cpu.gpr[0] & 0xff, 0xff);
        assert_eq!(cpu.rflags() & (CF | SF | OF), CF | SF);
        // stc; sbb al, bl  (0x80 - 0x7f - 1 = 0, OF from signed overflow? -128 - 127 - 1: yes)
        let (cpu, _) = run_bytes64(&[0xf9, 0x18, 0xd8], |c| {
            c.gpr[0] = 0x80;
            c.gpr[3] = 0x7f;
        });
        assert_eq!(cpu.gpr[0] & 0xff, 0);
        assert_eq!(cpu.rflags() & (CF | ZF | OF), ZF | OF);
    }

    #[test]
    fn inc_dec_neg_keep_or_set_cf() {
        // stc; inc al (0x7f -> 0x80: OF, CF kept)
        let (cpu, _) = run_bytes64(&[0xf9, 0xfe, 0xc0], |c| c.gpr[0] = 0x7f);
        assert_eq!(cpu.gpr[0], 0x80);
        assert_eq!(cpu.rflags() & (CF | OF | SF | AF | ZF), CF | OF | SF | AF);
        // clc; dec eax (0 -> 0xffffffff, CF kept clear)
        let (cpu, _) = run_bytes64(&[0xf8, 0xff, 0xc8], |c| c.gpr[0] = 0);
        assert_eq!(cpu.gpr[0], 0xffff_ffff);
        assert_eq!(cpu.rflags() & (CF | SF | AF | PF), SF | AF | PF);
        // neg rax (0 -> 0, CF = 0)
        let (cpu, _) = run_bytes64(&[0x48, 0xf7, 0xd8], |c| c.gpr[0] = 0);
        assert_eq!(cpu.rflags() & (CF | ZF), ZF);
        // neg al (0x80 -> 0x80, CF = OF = 1)
        let (cpu, _) = run_bytes64(&[0xf6, 0xd8], |c| c.gpr[0] = 0x80);
        assert_eq!(cpu.gpr[0], 0x80);
        assert_eq!(cpu.rflags() & (CF | OF | SF), CF | OF | SF);
    }
}
