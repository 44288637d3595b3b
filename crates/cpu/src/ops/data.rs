//! Data movement and conditions: MOV (incl. segment, control and debug registers via
//! [`super::system`]), MOVZX/MOVSX/MOVSXD, LEA, XCHG, CMPXCHG, CMPXCHG8B/16B, XADD, CBW/CWDE/
//! CDQE/CWD/CDQ/CQO, LAHF/SAHF, XLAT, CLC/STC/CMC/CLD/STD, SETcc, CMOVcc and the condition codes
//! (SDM Vol. 1 Appendix B, Vol. 2A–2B instruction pages).

use iced_x86::{ConditionCode as CC, Instruction, Mnemonic as M, OpKind, Register};

use crate::Cpu;
use crate::bus::Bus;
use crate::exec::{Loc, seg_of};
use crate::fault::{Ex, Fault};
use crate::flags::{FlagOp, mask};
use crate::regs::Gpr;
use x86::reg::rflags::{AF, CF, DF, OF, PF, SF, ZF};

impl Cpu {
    /// Evaluates a condition code (SDM Vol. 1 Appendix B, Table B-1). Without short-circuits:
    /// a CMOVcc or SETcc must not become a host branch, which data-dependent conditions would
    /// make unpredictable.
    #[inline(always)]
    pub(crate) fn cond(&self, cc: CC) -> bool {
        let f = &self.flags;
        match cc {
            CC::o => f.get(OF),
            CC::no => !f.get(OF),
            CC::b => f.cf(),
            CC::ae => !f.cf(),
            CC::e => f.get(ZF),
            CC::ne => !f.get(ZF),
            CC::be => f.cf() | f.get(ZF),
            CC::a => !(f.cf() | f.get(ZF)),
            CC::s => f.get(SF),
            CC::ns => !f.get(SF),
            CC::p => f.get(PF),
            CC::np => !f.get(PF),
            CC::l => f.get(SF) != f.get(OF),
            CC::ge => f.get(SF) == f.get(OF),
            CC::le => f.get(ZF) | (f.get(SF) != f.get(OF)),
            CC::g => !f.get(ZF) & (f.get(SF) == f.get(OF)),
            CC::None => true,
        }
    }

    pub(crate) fn mov<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let r0 = ins.op0_register();
        let r1 = ins.op1_register();
        // Fast path: a general register from a general register or an immediate, the common
        // case in compiled code (the write masks the value to the register's width).
        if ins.op0_kind() == OpKind::Register
            && let Some(d) = crate::regs::gpr_ref(r0)
        {
            let v = match ins.op1_kind() {
                OpKind::Register => {
                    crate::regs::gpr_ref(r1).map(|s| crate::regs::read(&self.gpr, s))
                }
                OpKind::Memory => None,
                _ => Some(ins.immediate(1)),
            };
            if let Some(v) = v {
                crate::regs::write(&mut self.gpr, d, v);
                return Ok(());
            }
        }
        let general = |kind: OpKind, r: Register| {
            kind != OpKind::Register || crate::regs::gpr_ref(r).is_some()
        };
        if general(ins.op0_kind(), r0) && general(ins.op1_kind(), r1) {
            let w = self.op_width(ins, 0);
            let src = self.loc(ins, 1);
            let v = self.get(bus, src, w)?;
            let dst = self.loc(ins, 0);
            return self.put(bus, dst, w, v);
        }
        if ins.op0_kind() == OpKind::Register && r0.is_cr()
            || ins.op1_kind() == OpKind::Register && r1.is_cr()
        {
            return self.mov_cr(bus, ins);
        }
        if ins.op0_kind() == OpKind::Register && r0.is_dr()
            || ins.op1_kind() == OpKind::Register && r1.is_dr()
        {
            return self.mov_dr(ins);
        }
        if ins.op0_kind() == OpKind::Register && r0.is_segment_register() {
            // MOV Sreg, r/m16. CS cannot be loaded this way (iced leaves it invalid).
            let src = self.loc(ins, 1);
            let sel = self.get(bus, src, 16)? as u16;
            let seg = seg_of(r0);
            self.load_data_seg(bus, seg, sel)?;
            if r0 == Register::SS {
                self.shadow = true;
                self.mov_ss_shadow = true;
            }
            return Ok(());
        }
        if ins.op1_kind() == OpKind::Register && r1.is_segment_register() {
            let sel = u64::from(self.seg[seg_of(r1) as usize].selector);
            let w = if ins.op0_kind() == OpKind::Memory {
                16
            } else {
                self.op_width(ins, 0)
            };
            let dst = self.loc(ins, 0);
            return self.put(bus, dst, w, sel);
        }
        let w = self.op_width(ins, 0);
        let src = self.loc(ins, 1);
        let v = self.get(bus, src, w)?;
        let dst = self.loc(ins, 0);
        self.put(bus, dst, w, v)
    }

    pub(crate) fn movx<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let dw = self.op_width(ins, 0);
        let sw = self.op_width(ins, 1);
        let src = self.loc(ins, 1);
        let v = self.get(bus, src, sw)?;
        let v = if ins.mnemonic() == M::Movzx {
            v
        } else {
            ((((v << (64 - sw)) as i64) >> (64 - sw)) as u64) & mask(dw)
        };
        let dst = self.loc(ins, 0);
        self.put(bus, dst, dw, v)
    }

    pub(crate) fn lea(&mut self, ins: &Instruction) -> Ex<()> {
        if ins.op1_kind() != OpKind::Memory {
            return Err(Fault::ud().into());
        }
        let v = self.ea(ins);
        self.set_reg(ins.op0_register(), v);
        Ok(())
    }

    pub(crate) fn xchg<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let w = self.op_width(ins, 0);
        let a = self.loc(ins, 0);
        let b = self.loc(ins, 1);
        let va = self.get_rmw(bus, a, w)?;
        let vb = self.get_rmw(bus, b, w)?;
        self.put(bus, a, w, vb)?;
        self.put(bus, b, w, va)
    }

    pub(crate) fn cmpxchg<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        self.check_lock(ins, true)?;
        let w = self.op_width(ins, 0);
        let dst = self.loc(ins, 0);
        let src = self.loc(ins, 1);
        let old = self.get_rmw(bus, dst, w)?;
        let acc = self.gpr[Gpr::Rax as usize] & mask(w);
        self.alu_compute(super::arith::AluOp::Cmp, w, acc, old);
        if acc == old {
            let v = self.get(bus, src, w)?;
            self.put(bus, dst, w, v)
        } else {
            // The destination is written back unchanged; the accumulator receives it.
            self.put(bus, dst, w, old)?;
            let rax = match w {
                8 => Register::AL,
                16 => Register::AX,
                32 => Register::EAX,
                _ => Register::RAX,
            };
            self.set_reg(rax, old);
            Ok(())
        }
    }

    /// CMPXCHG8B / CMPXCHG16B m64/m128.
    #[inline(never)]
    pub(crate) fn cmpxchg_wide<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        self.check_lock(ins, true)?;
        let Loc::Mem(seg, off) = self.loc(ins, 0) else {
            return Err(Fault::ud().into());
        };
        let wide = ins.mnemonic() == M::Cmpxchg16b;
        let half = if wide { 64 } else { 32 };
        let bytes = if wide { 8 } else { 4 };
        if wide && off & 15 != 0 {
            return Err(Fault::gp(0).into());
        }
        self.probe_write(bus, seg, off, 2 * bytes)?;
        let lo = self.read_seg(bus, seg, off, bytes)?;
        let hi = self.read_seg(bus, seg, off.wrapping_add(bytes as u64), bytes)?;
        let m = mask(half);
        let (rax, rdx) = (
            self.gpr[Gpr::Rax as usize] & m,
            self.gpr[Gpr::Rdx as usize] & m,
        );
        if (lo, hi) == (rax, rdx) {
            let (rbx, rcx) = (
                self.gpr[Gpr::Rbx as usize] & m,
                self.gpr[Gpr::Rcx as usize] & m,
            );
            self.write_seg(bus, seg, off, bytes, rbx)?;
            self.write_seg(bus, seg, off.wrapping_add(bytes as u64), bytes, rcx)?;
            self.flags.set(ZF, true);
        } else {
            self.write_seg(bus, seg, off, bytes, lo)?;
            self.write_seg(bus, seg, off.wrapping_add(bytes as u64), bytes, hi)?;
            self.gpr[Gpr::Rax as usize] = lo;
            self.gpr[Gpr::Rdx as usize] = hi;
            self.flags.set(ZF, false);
        }
        Ok(())
    }

    pub(crate) fn xadd<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        self.check_lock(ins, true)?;
        let w = self.op_width(ins, 0);
        let dst = self.loc(ins, 0);
        let src = self.loc(ins, 1);
        let d = self.get_rmw(bus, dst, w)?;
        let s = self.get(bus, src, w)?;
        let sum = d.wrapping_add(s) & mask(w);
        self.flags.set_lazy(FlagOp::Add, w, d, s, sum, false);
        self.put(bus, src, w, d)?;
        self.put(bus, dst, w, sum)
    }

    pub(crate) fn convert(&mut self, ins: &Instruction) -> Ex<()> {
        let rax = self.gpr[Gpr::Rax as usize];
        let sx = |v: u64, w: u32| (((v << (64 - w)) as i64) >> (64 - w)) as u64;
        match ins.mnemonic() {
            M::Cbw => self.set_reg(Register::AX, sx(rax, 8)),
            M::Cwde => self.set_reg(Register::EAX, sx(rax, 16)),
            M::Cdqe => self.set_reg(Register::RAX, sx(rax, 32)),
            M::Cwd => self.set_reg(Register::DX, sx(rax, 16) >> 16),
            M::Cdq => self.set_reg(Register::EDX, sx(rax, 32) >> 32),
            _ => self.set_reg(Register::RDX, ((rax as i64) >> 63) as u64),
        }
        Ok(())
    }

    #[inline(never)]
    pub(crate) fn lahf_sahf(&mut self, ins: &Instruction) -> Ex<()> {
        let st = SF | ZF | AF | PF | CF;
        if ins.mnemonic() == M::Lahf {
            let ah = (self.flags.bits() & st) | 2;
            self.set_reg(Register::AH, ah);
        } else {
            let ah = self.reg(Register::AH);
            let b = self.flags.bits();
            self.flags.set_bits((b & !st) | (ah & st));
        }
        Ok(())
    }

    #[inline(never)]
    pub(crate) fn xlat<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let src = self.loc(ins, 0);
        let v = self.get(bus, src, 8)?;
        self.set_reg(Register::AL, v);
        Ok(())
    }

    pub(crate) fn flag_op(&mut self, ins: &Instruction) -> Ex<()> {
        match ins.mnemonic() {
            M::Clc => self.flags.set(CF, false),
            M::Stc => self.flags.set(CF, true),
            M::Cmc => {
                let c = self.flags.cf();
                self.flags.set(CF, !c);
            }
            M::Cld => self.flags.set(DF, false),
            _ => self.flags.set(DF, true),
        }
        Ok(())
    }

    pub(crate) fn setcc<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let v = u64::from(self.cond(ins.condition_code()));
        let dst = self.loc(ins, 0);
        self.put(bus, dst, 8, v)
    }

    pub(crate) fn cmovcc<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let w = self.op_width(ins, 0);
        let src = self.loc(ins, 1);
        // The source is read (and may fault) whatever the condition.
        let v = self.get(bus, src, w)?;
        let dst = self.loc(ins, 0);
        if self.cond(ins.condition_code()) {
            self.put(bus, dst, w, v)
        } else if w == 32 {
            // A 32-bit CMOV writes its destination even when false: the upper half is cleared.
            let cur = self.get(bus, dst, w)?;
            self.put(bus, dst, w, cur)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::test_utils::run_bytes64;
    use x86::reg::rflags::{CF, ZF};

    #[test]
    fn register_and_immediate_moves_merge_or_zero_extend_by_width() {
        let init = |c: &mut crate::Cpu| {
            c.gpr[0] = 0x1111_1111_1111_1111;
            c.gpr[3] = 0x2222_2222_8765_4321;
        };
        // mov ah, bl
        let (c, _) = run_bytes64(&[0x88, 0xdc], init);
        assert_eq!(c.gpr[0], 0x1111_1111_1111_2111);
        // mov ax, bx
        let (c, _) = run_bytes64(&[0x66, 0x89, 0xd8], init);
        assert_eq!(c.gpr[0], 0x1111_1111_1111_4321);
        // mov eax, ebx
        let (c, _) = run_bytes64(&[0x89, 0xd8], init);
        assert_eq!(c.gpr[0], 0x8765_4321);
        // mov rax, -2 (imm32 sign-extended)
        let (c, _) = run_bytes64(&[0x48, 0xc7, 0xc0, 0xfe, 0xff, 0xff, 0xff], init);
        assert_eq!(c.gpr[0], u64::MAX - 1);
        // mov al, 0x80
        let (c, _) = run_bytes64(&[0xb0, 0x80], init);
        assert_eq!(c.gpr[0], 0x1111_1111_1111_1180);
        // mov rbx, ds (a segment source leaves the fast path): the selector, zero-extended
        let (c, _) = run_bytes64(&[0x48, 0x8c, 0xdb], init);
        assert_eq!(c.gpr[3], 0x10);
    }

    #[test]
    fn moves_and_extensions() {
        // movsx rax, bl / movzx eax, bx / movsxd rax, ebx
        let (c, _) = run_bytes64(&[0x48, 0x0f, 0xbe, 0xc3], |c| c.gpr[3] = 0x80);
        assert_eq!(c.gpr[0], 0xffff_ffff_ffff_ff80);
        let (c, _) = run_bytes64(&[0x0f, 0xb7, 0xc3], |c| {
            c.gpr[0] = u64::MAX;
            c.gpr[3] = 0x8001;
        });
        assert_eq!(c.gpr[0], 0x8001);
        let (c, _) = run_bytes64(&[0x48, 0x63, 0xc3], |c| c.gpr[3] = 0x8000_0000);
        assert_eq!(c.gpr[0], 0xffff_ffff_8000_0000);
        // lea eax, [rbx+rcx*4+8] truncates to 32 bits
        let (c, _) = run_bytes64(&[0x8d, 0x44, 0x8b, 0x08], |c| {
            c.gpr[3] = 0xffff_ffff;
            c.gpr[1] = 1;
        });
        assert_eq!(c.gpr[0], 11);
        // cdqe / cqo / cbw
        let (c, _) = run_bytes64(&[0x48, 0x98], |c| c.gpr[0] = 0xffff_fffe);
        assert_eq!(c.gpr[0], u64::MAX - 1);
        let (c, _) = run_bytes64(&[0x48, 0x99], |c| c.gpr[0] = 1 << 63);
        assert_eq!(c.gpr[2], u64::MAX);
        let (c, _) = run_bytes64(&[0x66, 0x98], |c| c.gpr[0] = 0x1234_0080);
        assert_eq!(c.gpr[0], 0x1234_ff80);
    }

    #[test]
    fn atomics() {
        // lock cmpxchg [rdi], ecx: equal -> store ecx, ZF
        let (c, bus) = run_bytes64(&[0xf0, 0x0f, 0xb1, 0x0f], |c| {
            c.gpr[7] = 0x20_0000;
            c.gpr[0] = 0;
            c.gpr[1] = 0x55;
        });
        assert_eq!(bus.read_u64(0x20_0000), 0x55);
        assert_eq!(c.rflags() & ZF, ZF);
        // cmpxchg ebx, ecx: not equal -> eax = ebx, ZF = 0
        let (c, _) = run_bytes64(&[0x0f, 0xb1, 0xcb], |c| {
            c.gpr[0] = 1;
            c.gpr[3] = 2;
            c.gpr[1] = 3;
        });
        assert_eq!((c.gpr[0], c.gpr[3], c.rflags() & ZF), (2, 2, 0));
        // lock xadd [rdi], rax
        let (c, bus) = run_bytes64(&[0xf0, 0x48, 0x0f, 0xc1, 0x07], |c| {
            c.gpr[7] = 0x20_0000;
            c.gpr[0] = 5;
        });
        assert_eq!((c.gpr[0], bus.read_u64(0x20_0000)), (0, 5));
        // lock cmpxchg16b [rdi] (memory is zero, rdx:rax = 0): store rcx:rbx
        let (c, bus) = run_bytes64(&[0xf0, 0x48, 0x0f, 0xc7, 0x0f], |c| {
            c.gpr[7] = 0x20_0000;
            c.gpr[3] = 7;
            c.gpr[1] = 9;
        });
        assert_eq!((bus.read_u64(0x20_0000), bus.read_u64(0x20_0008)), (7, 9));
        assert_eq!(c.rflags() & ZF, ZF);
        // cmpxchg8b [rdi] mismatch: edx:eax <- memory
        let (c, _) = run_bytes64(&[0x0f, 0xc7, 0x0f], |c| {
            c.gpr[7] = 0x20_0000;
            c.gpr[0] = 1;
        });
        assert_eq!((c.gpr[0], c.gpr[2], c.rflags() & ZF), (0, 0, 0));
        // xchg rax, [rdi]
        let (c, bus) = run_bytes64(&[0x48, 0x87, 0x07], |c| {
            c.gpr[7] = 0x20_0000;
            c.gpr[0] = 42;
        });
        assert_eq!((c.gpr[0], bus.read_u64(0x20_0000)), (0, 42));
    }

    #[test]
    fn conditions() {
        // cmp eax, ebx ; setl cl ; setb dl ; cmovg eax, ebx (not taken)
        let (c, _) = run_bytes64(
            &[
                0x39, 0xd8, 0x0f, 0x9c, 0xc1, 0x0f, 0x92, 0xc2, 0x0f, 0x4f, 0xc3,
            ],
            |c| {
                c.gpr[0] = (-1i32) as u32 as u64 | (0xdead << 32);
                c.gpr[3] = 1;
            },
        );
        assert_eq!(c.gpr[1] & 0xff, 1, "-1 < 1 signed");
        assert_eq!(c.gpr[2] & 0xff, 0, "0xffffffff > 1 unsigned");
        assert_eq!(
            c.gpr[0], 0xffff_ffff,
            "false 32-bit CMOV still zero-extends"
        );
        // stc; lahf -> AH = 0x03; sahf round trip
        let (c, _) = run_bytes64(&[0xf9, 0x9f], |_| {});
        assert_eq!((c.gpr[0] >> 8) & 0xff, 0x03);
        let (c, _) = run_bytes64(&[0x9e], |c| c.gpr[0] = 0x4100);
        assert_eq!(c.rflags() & (CF | ZF), CF | ZF);
    }
}
