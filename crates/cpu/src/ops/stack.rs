//! The stack: PUSH, POP (incl. segment registers), PUSHF/POPF with the IOPL rules, PUSHA/POPA,
//! ENTER, LEAVE (SDM Vol. 1 §6.2–§6.5, Vol. 2B "POP", "POPF", "PUSH", "PUSHF", Vol. 2A
//! "ENTER", "LEAVE"). The stack-address size is 64 in 64-bit mode, else SS.B.

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

use crate::Cpu;
use crate::bus::Bus;
use crate::exec::seg_of;
use crate::fault::Ex;
use crate::flags::mask;
use crate::regs::Gpr;
use crate::state::{Mode, Seg, ar};
use x86::reg::rflags;

impl Cpu {
    /// Width in bits of the stack pointer in use.
    #[inline]
    pub(crate) fn sp_bits(&self) -> u32 {
        if self.mode == Mode::Long64 {
            64
        } else if self.seg[Seg::Ss as usize].ar & ar::DB != 0 {
            32
        } else {
            16
        }
    }

    #[inline]
    pub(crate) fn set_sp(&mut self, v: u64) {
        let m = mask(self.sp_bits());
        let rsp = &mut self.gpr[Gpr::Rsp as usize];
        *rsp = (*rsp & !m) | (v & m);
    }

    /// Pushes `bytes` bytes.
    #[inline]
    pub(crate) fn push<B: Bus>(&mut self, bus: &mut B, v: u64, bytes: usize) -> Ex<()> {
        let m = mask(self.sp_bits());
        let sp = self.gpr[Gpr::Rsp as usize].wrapping_sub(bytes as u64) & m;
        self.write_seg(bus, Seg::Ss, sp, bytes, v)?;
        self.set_sp(sp);
        Ok(())
    }

    /// Pops `bytes` bytes.
    #[inline]
    pub(crate) fn pop<B: Bus>(&mut self, bus: &mut B, bytes: usize) -> Ex<u64> {
        let m = mask(self.sp_bits());
        let sp = self.gpr[Gpr::Rsp as usize] & m;
        let v = self.read_seg(bus, Seg::Ss, sp, bytes)?;
        self.set_sp(sp.wrapping_add(bytes as u64));
        Ok(v)
    }

    /// Reads the stack at `depth` bytes above the stack pointer without popping.
    pub(crate) fn peek<B: Bus>(&mut self, bus: &mut B, depth: u64, bytes: usize) -> Ex<u64> {
        let m = mask(self.sp_bits());
        let sp = self.gpr[Gpr::Rsp as usize].wrapping_add(depth) & m;
        self.read_seg(bus, Seg::Ss, sp, bytes)
    }

    /// RFLAGS as PUSHF stores it: VM and RF read as 0.
    pub(crate) fn flags_image(&self) -> u64 {
        self.flags.bits() & !(rflags::VM | rflags::RF)
    }

    /// POPF / IRET-style flag load with the privilege rules of POPF (SDM Vol. 2B "POPF").
    pub(crate) fn load_flags_popf(&mut self, v: u64, width: u32) {
        let mut changeable =
            rflags::STATUS | rflags::TF | rflags::DF | rflags::NT | rflags::AC | rflags::ID;
        let iopl = ((self.flags.bits() & rflags::IOPL) >> rflags::IOPL_SHIFT) as u8;
        if self.mode == Mode::Real || self.cpl == 0 {
            changeable |= rflags::IF | rflags::IOPL;
        } else if self.cpl <= iopl {
            changeable |= rflags::IF;
        }
        changeable &= mask(width);
        let old = self.flags.bits();
        let new = (old & !changeable & !rflags::RF) | (v & changeable) | rflags::FIXED1;
        self.flags.set_bits(new);
    }

    pub(crate) fn stack_op<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let size = (-ins.stack_pointer_increment()).unsigned_abs() as usize;
        match ins.mnemonic() {
            M::Push => {
                let v = if ins.op0_kind() == OpKind::Register
                    && ins.op0_register().is_segment_register()
                {
                    u64::from(self.seg[seg_of(ins.op0_register()) as usize].selector)
                } else {
                    let l = self.loc(ins, 0);
                    // Immediates are sign-extended to the operand size by the decoder.
                    match l {
                        crate::exec::Loc::Imm(v) => v,
                        _ => self.get(bus, l, (size * 8) as u32)?,
                    }
                };
                self.push(bus, v & mask((size * 8) as u32), size)
            }
            M::Pop => {
                let saved = self.gpr[Gpr::Rsp as usize];
                let v = self.pop(bus, size)?;
                let r = if ins.op0_kind() == OpKind::Register
                    && ins.op0_register().is_segment_register()
                {
                    let seg = seg_of(ins.op0_register());
                    let r = self.load_data_seg(bus, seg, v as u16);
                    if r.is_ok() && seg == Seg::Ss {
                        self.shadow = true;
                        self.mov_ss_shadow = true;
                    }
                    r
                } else {
                    // A memory destination addressed through RSP uses the incremented value.
                    let dst = self.loc(ins, 0);
                    self.put(bus, dst, (size * 8) as u32, v)
                };
                if r.is_err() {
                    self.gpr[Gpr::Rsp as usize] = saved;
                }
                r
            }
            M::Pushf | M::Pushfd | M::Pushfq => {
                let v = self.flags_image() & mask((size * 8) as u32);
                self.push(bus, v, size)
            }
            M::Popf | M::Popfd | M::Popfq => {
                let v = self.pop(bus, size)?;
                self.load_flags_popf(v, (size * 8) as u32);
                Ok(())
            }
            M::Pusha | M::Pushad => {
                let b = size / 8;
                let w = (b * 8) as u32;
                let sp = self.gpr[Gpr::Rsp as usize];
                let saved = sp;
                for i in 0..8 {
                    let v = if i == 4 { sp } else { self.gpr[i] };
                    if let Err(e) = self.push(bus, v & mask(w), b) {
                        self.gpr[Gpr::Rsp as usize] = saved;
                        return Err(e);
                    }
                }
                Ok(())
            }
            M::Popa | M::Popad => {
                let b = (size / 8) as u64;
                let w = (b * 8) as u32;
                let mut vals = [0u64; 8];
                for (i, v) in vals.iter_mut().enumerate() {
                    *v = self.peek(bus, b * (7 - i as u64), b as usize)?;
                }
                for (i, v) in vals.iter().enumerate() {
                    if i != Gpr::Rsp as usize {
                        let r = crate::regs::GprRef {
                            index: i,
                            width: w,
                            high: false,
                        };
                        crate::regs::write(&mut self.gpr, r, *v);
                    }
                }
                let sp = self.gpr[Gpr::Rsp as usize].wrapping_add(8 * b);
                self.set_sp(sp);
                Ok(())
            }
            M::Enter => self.enter(bus, ins),
            _ => {
                // LEAVE: RSP <- RBP, then POP RBP.
                let saved = self.gpr[Gpr::Rsp as usize];
                let rbp = self.gpr[Gpr::Rbp as usize];
                self.set_sp(rbp);
                let w = self.leave_width(ins);
                match self.pop(bus, (w / 8) as usize) {
                    Ok(v) => {
                        let r = match w {
                            16 => Register::BP,
                            32 => Register::EBP,
                            _ => Register::RBP,
                        };
                        self.set_reg(r, v);
                        Ok(())
                    }
                    Err(e) => {
                        self.gpr[Gpr::Rsp as usize] = saved;
                        Err(e)
                    }
                }
            }
        }
    }

    fn leave_width(&self, ins: &Instruction) -> u32 {
        match ins.code() {
            iced_x86::Code::Leavew => 16,
            iced_x86::Code::Leaved => 32,
            _ => 64,
        }
    }

    fn enter<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let alloc = ins.immediate(0) & 0xffff;
        let level = ins.immediate(1) & 31;
        let w: u32 = match ins.code() {
            iced_x86::Code::Enterw_imm16_imm8 => 16,
            iced_x86::Code::Enterd_imm16_imm8 => 32,
            _ => 64,
        };
        let b = (w / 8) as usize;
        let saved = (self.gpr[Gpr::Rsp as usize], self.gpr[Gpr::Rbp as usize]);
        let r = (|| {
            let rbp = self.gpr[Gpr::Rbp as usize];
            self.push(bus, rbp & mask(w), b)?;
            let frame = self.gpr[Gpr::Rsp as usize] & mask(self.sp_bits());
            let spm = mask(self.sp_bits());
            let mut bp = rbp;
            for _ in 1..level {
                bp = bp.wrapping_sub(b as u64) & spm;
                let v = self.read_seg(bus, Seg::Ss, bp, b)?;
                self.push(bus, v, b)?;
            }
            if level > 0 {
                self.push(bus, frame & mask(w), b)?;
            }
            let bpr = match w {
                16 => Register::BP,
                32 => Register::EBP,
                _ => Register::RBP,
            };
            self.set_reg(bpr, frame);
            let sp = self.gpr[Gpr::Rsp as usize].wrapping_sub(alloc);
            // Check the new top of stack is writable (the SDM's final stack access check).
            let spw = sp & spm;
            if alloc > 0 {
                self.linear(Seg::Ss, spw, 1, crate::mmu::Access::Write)?;
            }
            self.set_sp(sp);
            Ok(())
        })();
        if r.is_err() {
            self.gpr[Gpr::Rsp as usize] = saved.0;
            self.gpr[Gpr::Rbp as usize] = saved.1;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use crate::test_utils::run_bytes64;

    #[test]
    fn push_pop_and_frames() {
        // push rax; push 0xffffffff80 (6a 80 = push -128); pop rbx; pop rcx
        let (c, _) = run_bytes64(&[0x50, 0x6a, 0x80, 0x5b, 0x59], |c| c.gpr[0] = 0x1234);
        assert_eq!(c.gpr[3], (-128i64) as u64);
        assert_eq!(c.gpr[1], 0x1234);
        // enter 16, 0 ; leave
        let (c, _) = run_bytes64(&[0xc8, 0x10, 0x00, 0x00, 0xc9], |c| c.gpr[5] = 0xabc);
        assert_eq!(c.gpr[5], 0xabc);
        assert_eq!(c.gpr[4], crate::test_utils::STACK_TOP);
        // enter 8, 0: rbp = old rsp - 8, rsp = rbp - 8
        let (c, _) = run_bytes64(&[0xc8, 0x08, 0x00, 0x00], |_| {});
        assert_eq!(c.gpr[5], crate::test_utils::STACK_TOP - 8);
        assert_eq!(c.gpr[4], crate::test_utils::STACK_TOP - 16);
        // pushfq; pop rax: bit 1 set
        let (c, _) = run_bytes64(&[0x9c, 0x58], |_| {});
        assert_eq!(c.gpr[0] & 2, 2);
        // push -1 & !TF; popfq: reserved bits stay clear, VM/RF not loaded, IF loaded at CPL 0
        let (c, _) = run_bytes64(&[0x68, 0xff, 0xfe, 0xff, 0xff, 0x9d], |_| {});
        let f = c.rflags();
        assert_eq!(
            f & (1 << 3 | 1 << 5 | 1 << 15 | 1 << 16 | 1 << 17 | 1 << 22),
            0
        );
        assert_ne!(f & (1 << 9), 0);
    }
}
