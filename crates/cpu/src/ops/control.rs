//! Near control transfers: JMP, Jcc, CALL, RET, LOOP/LOOPE/LOOPNE, JCXZ/JECXZ/JRCXZ (SDM Vol. 2A
//! "CALL", "JMP", "Jcc", Vol. 2B "LOOP", "RET"); far forms go to `crate::seg` (Vol. 3A §5.8).
//!
//! Branch targets are checked before anything is pushed: outside 64-bit mode against the CS
//! limit, in 64-bit mode for canonical form, #GP(0) either way.

use iced_x86::{Code, Instruction, Mnemonic as M, OpKind, Register};

use crate::Cpu;
use crate::bus::Bus;
use crate::fault::{Ex, Fault};
use crate::flags::mask;
use crate::mmu::canonical;
use crate::state::Seg;

impl Cpu {
    /// Checks a near-branch target and makes it the next RIP.
    #[inline]
    pub(crate) fn branch(&mut self, target: u64) -> Ex<()> {
        if self.code_bits == 64 {
            if !canonical(target) {
                return Err(Fault::gp(0).into());
            }
        } else if target > u64::from(self.seg[Seg::Cs as usize].limit) {
            return Err(Fault::gp(0).into());
        }
        self.next_rip = target;
        Ok(())
    }

    /// The target of a relative branch, rebased from the decoder's IP 0 onto RIP.
    #[inline]
    fn rel_target(&self, ins: &Instruction) -> u64 {
        match ins.op0_kind() {
            OpKind::NearBranch16 => self.rip.wrapping_add(u64::from(ins.near_branch16())) & 0xffff,
            OpKind::NearBranch32 => {
                self.rip.wrapping_add(u64::from(ins.near_branch32())) & 0xffff_ffff
            }
            _ => self.rip.wrapping_add(ins.near_branch64()),
        }
    }

    pub(crate) fn jcc(&mut self, ins: &Instruction) -> Ex<()> {
        if self.cond(ins.condition_code()) {
            let t = self.rel_target(ins);
            self.branch(t)?;
        }
        Ok(())
    }

    pub(crate) fn control<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        match ins.mnemonic() {
            M::Jmp => match ins.op0_kind() {
                OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => {
                    let t = self.rel_target(ins);
                    self.branch(t)
                }
                OpKind::FarBranch16 | OpKind::FarBranch32 => {
                    let off = if ins.op0_kind() == OpKind::FarBranch16 {
                        u64::from(ins.far_branch16())
                    } else {
                        u64::from(ins.far_branch32())
                    };
                    self.far_jmp(bus, ins.far_branch_selector(), off, self.far_osize(ins))
                }
                _ if is_far_mem(ins) => {
                    let (sel, off) = self.read_far_pointer(bus, ins)?;
                    self.far_jmp(bus, sel, off, self.far_osize(ins))
                }
                _ => {
                    let w = self.op_width(ins, 0);
                    let l = self.loc(ins, 0);
                    let t = self.get(bus, l, w)?;
                    self.branch(t)
                }
            },
            M::Call => {
                let size = (-ins.stack_pointer_increment()).unsigned_abs() as usize;
                match ins.op0_kind() {
                    OpKind::FarBranch16 | OpKind::FarBranch32 => {
                        let off = if ins.op0_kind() == OpKind::FarBranch16 {
                            u64::from(ins.far_branch16())
                        } else {
                            u64::from(ins.far_branch32())
                        };
                        self.far_call(bus, ins.far_branch_selector(), off, self.far_osize(ins))
                    }
                    _ if is_far_mem(ins) => {
                        let (sel, off) = self.read_far_pointer(bus, ins)?;
                        self.far_call(bus, sel, off, self.far_osize(ins))
                    }
                    kind => {
                        let t = if matches!(
                            kind,
                            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
                        ) {
                            self.rel_target(ins)
                        } else {
                            let w = self.op_width(ins, 0);
                            let l = self.loc(ins, 0);
                            self.get(bus, l, w)?
                        };
                        let ret = self.next_rip;
                        self.branch(t)?;
                        self.push(bus, ret & mask((size * 8) as u32), size)
                    }
                }
            }
            M::Ret => {
                let size = match ins.code() {
                    Code::Retnw | Code::Retnw_imm16 => 2,
                    Code::Retnd | Code::Retnd_imm16 => 4,
                    _ => 8,
                };
                let saved = self.gpr[crate::regs::Gpr::Rsp as usize];
                let t = self.pop(bus, size)?;
                if let Err(e) = self.branch(t) {
                    self.gpr[crate::regs::Gpr::Rsp as usize] = saved;
                    return Err(e);
                }
                if ins.op_count() > 0 {
                    let sp =
                        self.gpr[crate::regs::Gpr::Rsp as usize].wrapping_add(ins.immediate(0));
                    self.set_sp(sp);
                }
                Ok(())
            }
            M::Retf => {
                let imm = if ins.op_count() > 0 {
                    ins.immediate(0)
                } else {
                    0
                };
                self.far_ret(bus, self.far_osize(ins), imm)
            }
            _ => self.loop_insn(ins),
        }
    }

    /// Operand size in bytes of a far transfer (offset part).
    fn far_osize(&self, ins: &Instruction) -> u32 {
        match ins.code() {
            Code::Jmp_ptr1616
            | Code::Call_ptr1616
            | Code::Jmp_m1616
            | Code::Call_m1616
            | Code::Retfw
            | Code::Retfw_imm16 => 16,
            Code::Jmp_m1664 | Code::Call_m1664 | Code::Retfq | Code::Retfq_imm16 => 64,
            _ => 32,
        }
    }

    fn read_far_pointer<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<(u16, u64)> {
        let crate::exec::Loc::Mem(seg, off) = self.loc(ins, 0) else {
            return Err(Fault::ud().into());
        };
        let bytes = (self.far_osize(ins) / 8) as usize;
        let o = self.read_seg(bus, seg, off, bytes)?;
        let s = self.read_seg(bus, seg, off.wrapping_add(bytes as u64), 2)?;
        Ok((s as u16, o))
    }

    fn loop_insn(&mut self, ins: &Instruction) -> Ex<()> {
        use Code as C;
        let counter = match ins.code() {
            C::Loopne_rel8_16_CX
            | C::Loopne_rel8_32_CX
            | C::Loope_rel8_16_CX
            | C::Loope_rel8_32_CX
            | C::Loop_rel8_16_CX
            | C::Loop_rel8_32_CX
            | C::Jcxz_rel8_16
            | C::Jcxz_rel8_32 => Register::CX,
            C::Loopne_rel8_16_RCX
            | C::Loopne_rel8_64_RCX
            | C::Loope_rel8_16_RCX
            | C::Loope_rel8_64_RCX
            | C::Loop_rel8_16_RCX
            | C::Loop_rel8_64_RCX
            | C::Jrcxz_rel8_16
            | C::Jrcxz_rel8_64 => Register::RCX,
            _ => Register::ECX,
        };
        let take = match ins.mnemonic() {
            M::Jcxz | M::Jecxz | M::Jrcxz => self.reg(counter) == 0,
            m => {
                let c = self.reg(counter).wrapping_sub(1);
                self.set_reg(counter, c);
                let nz = c & mask(counter.size() as u32 * 8) != 0;
                match m {
                    M::Loope => nz && self.flags.get(x86::reg::rflags::ZF),
                    M::Loopne => nz && !self.flags.get(x86::reg::rflags::ZF),
                    _ => nz,
                }
            }
        };
        if take {
            let t = self.rel_target(ins);
            self.branch(t)?;
        }
        Ok(())
    }
}

fn is_far_mem(ins: &Instruction) -> bool {
    matches!(
        ins.code(),
        Code::Jmp_m1616
            | Code::Jmp_m1632
            | Code::Jmp_m1664
            | Code::Call_m1616
            | Code::Call_m1632
            | Code::Call_m1664
    )
}

#[cfg(test)]
mod tests {
    use crate::test_utils::{CODE, STACK_TOP, run_bytes64};

    #[test]
    fn near_branches() {
        // mov ecx, 5; xor eax, eax; l: add eax, 2; loop l
        let (c, _) = run_bytes64(
            &[0xb9, 5, 0, 0, 0, 0x31, 0xc0, 0x83, 0xc0, 0x02, 0xe2, 0xfb],
            |_| {},
        );
        assert_eq!((c.gpr[0], c.gpr[1]), (10, 0));
        // call +1; (skipped byte: hlt would stop) int3 .. we use: call f; jmp end; f: mov eax,7; ret
        // e8 02 00 00 00 | eb 06 | b8 07 00 00 00 | c3
        let (c, _) = run_bytes64(
            &[0xe8, 0x02, 0, 0, 0, 0xeb, 0x06, 0xb8, 0x07, 0, 0, 0, 0xc3],
            |_| {},
        );
        assert_eq!(c.gpr[0], 7);
        assert_eq!(c.gpr[4], STACK_TOP);
        assert_eq!(c.rip, CODE + 13 + 1, "stopped after the HLT that follows");
        // cmp eax, 1; jne +2 (skipped mov); mov al, 9
        let (c, _) = run_bytes64(&[0x83, 0xf8, 0x01, 0x75, 0x02, 0xb0, 0x09], |_| {});
        assert_eq!(c.gpr[0], 0);
        // jrcxz taken when rcx = 0: jrcxz +2; mov al, 9
        let (c, _) = run_bytes64(&[0xe3, 0x02, 0xb0, 0x09], |_| {});
        assert_eq!(c.gpr[0], 0);
    }
}

#[cfg(test)]
mod far_tests {
    use crate::fault::{Exc, Fault};
    use crate::state::Mode;
    use crate::test_utils::*;
    use crate::{Seg, StopReason};

    #[test]
    fn long_mode_to_compatibility_mode_and_back() {
        #[rustfmt::skip]
        let code = [
            0x6a, 0x18,                         // push 0x18 (32-bit code)
            0x68, 0x00, 0x01, 0x10, 0x00,       // push 0x100100
            0x48, 0xcb,                         // retfq
        ];
        let (mut cpu, mut bus) = long_env(&code);
        // Compatibility mode: mov eax, 0x12345678; jmp 0x08:0x100200
        bus.load(
            0x10_0100,
            &[
                0xb8, 0x78, 0x56, 0x34, 0x12, 0xea, 0x00, 0x02, 0x10, 0x00, 0x08, 0x00,
            ],
        );
        bus.load(0x10_0200, &[0xf4]);
        assert_eq!(cpu.run(&mut bus, 3), Ok(StopReason::BudgetExhausted));
        assert_eq!(
            (cpu.mode(), cpu.code_bits, cpu.rip),
            (Mode::Compatibility, 32, 0x10_0100)
        );
        assert_eq!(cpu.gpr[4], STACK_TOP, "RETF popped 16 bytes");
        assert_eq!(cpu.run(&mut bus, 10), Ok(StopReason::Halted));
        assert_eq!(
            (cpu.mode(), cpu.segment(Seg::Cs).selector),
            (Mode::Long64, KCODE64)
        );
        assert_eq!(cpu.gpr[0], 0x1234_5678);
    }

    #[test]
    fn rep_movs_fault_leaves_the_progress_in_the_registers() {
        // rep movsb from 0x3ffffff8 (the last 8 mapped bytes) to 0x200000, 16 bytes.
        let (mut cpu, mut bus) = long_env(&[0xf3, 0xa4]);
        cpu.gpr[6] = 0x3fff_fff8;
        cpu.gpr[7] = 0x20_0000;
        cpu.gpr[1] = 16;
        cpu.icache.attach(&bus);
        let e = cpu.step(&mut bus);
        assert_eq!(e, Err(Exc::Fault(Fault::page(0x4000_0000, 0))));
        assert_eq!(
            (cpu.gpr[1], cpu.gpr[6], cpu.gpr[7]),
            (8, 0x4000_0000, 0x20_0008)
        );
        assert_eq!(cpu.rip, CODE, "the fault reports the string instruction");
        assert_eq!(
            bus.read_u64(0x20_0000),
            u64::MAX,
            "the 8 bytes before the fault were copied"
        );
    }
}
