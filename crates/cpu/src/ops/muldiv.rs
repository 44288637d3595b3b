//! MUL, IMUL (one, two and three operands), DIV, IDIV (SDM Vol. 2A "DIV", "IDIV", "IMUL",
//! Vol. 2B "MUL"). Division by zero and quotients that do not fit raise #DE. CF = OF flag a
//! product that does not fit the destination; SF, ZF and PF follow the low half (undefined in
//! the SDM; this is what Bochs does), AF is 0. DIV/IDIV leave the flags unchanged (undefined).

use iced_x86::{Instruction, Mnemonic as M};

use crate::Cpu;
use crate::bus::Bus;
use crate::fault::{Ex, Fault, vector};
use crate::flags::{FlagOp, mask};
use crate::regs::Gpr;

fn sext(v: u64, width: u32) -> i128 {
    i128::from(((v << (64 - width)) as i64) >> (64 - width))
}

impl Cpu {
    /// CF = OF = `overflow`, SF/ZF/PF from `low`, AF = 0 (lazily).
    #[inline]
    fn mul_flags(&mut self, width: u32, low: u64, overflow: bool) {
        self.flags.set_lazy(
            FlagOp::Cfof,
            width,
            0,
            u64::from(overflow),
            low & mask(width),
            overflow,
        );
    }

    /// Reads the implicit accumulator pair (AH:AL for 8-bit, DX:AX, EDX:EAX, RDX:RAX).
    fn acc_pair(&self, width: u32) -> (u64, u64) {
        let rax = self.gpr[Gpr::Rax as usize];
        let rdx = self.gpr[Gpr::Rdx as usize];
        if width == 8 {
            ((rax >> 8) & 0xff, rax & 0xff)
        } else {
            (rdx & mask(width), rax & mask(width))
        }
    }

    fn set_acc_pair(&mut self, width: u32, high: u64, low: u64) {
        let m = mask(width);
        let rax = &mut self.gpr[Gpr::Rax as usize];
        match width {
            8 => *rax = (*rax & !0xffff) | ((high & 0xff) << 8) | (low & 0xff),
            16 => {
                *rax = (*rax & !0xffff) | (low & m);
                let rdx = &mut self.gpr[Gpr::Rdx as usize];
                *rdx = (*rdx & !0xffff) | (high & m);
            }
            _ => {
                *rax = low & m;
                self.gpr[Gpr::Rdx as usize] = high & m;
            }
        }
    }

    /// The truncated signed product of IMUL r, r/m [, imm] at `w` bits, with its flags.
    #[inline]
    pub(crate) fn imul_trunc(&mut self, w: u32, sa: u64, sb: u64) -> u64 {
        let p = sext(sa, w) * sext(sb, w);
        let low = (p as u64) & mask(w);
        self.mul_flags(w, low, sext(low, w) != p);
        low
    }

    pub(crate) fn muldiv<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let width = self.op_width(ins, 0);
        let w = width;
        let m = mask(width);
        if ins.op_count() >= 2 {
            // IMUL r, r/m [, imm]: truncated signed product.
            let (sa, sb) = if ins.op_count() == 3 {
                let s = self.loc(ins, 1);
                let i = self.loc(ins, 2);
                (self.get(bus, s, w)?, self.get(bus, i, w)?)
            } else {
                let d = self.loc(ins, 0);
                let s = self.loc(ins, 1);
                (self.get(bus, d, w)?, self.get(bus, s, w)?)
            };
            let low = self.imul_trunc(w, sa, sb);
            let d = self.loc(ins, 0);
            return self.put(bus, d, w, low);
        }
        let src_loc = self.loc(ins, 0);
        let src = self.get(bus, src_loc, w)?;
        match ins.mnemonic() {
            M::Mul => {
                let (_, a) = self.acc_pair(w);
                let p = u128::from(a) * u128::from(src);
                let low = (p as u64) & m;
                let high = ((p >> w) as u64) & m;
                self.set_acc_pair(w, high, low);
                self.mul_flags(w, low, high != 0);
            }
            M::Imul => {
                let (_, a) = self.acc_pair(w);
                let p = sext(a, w) * sext(src, w);
                let low = (p as u64) & m;
                let high = ((p >> w) as u64) & m;
                self.set_acc_pair(w, high, low);
                self.mul_flags(w, low, sext(low, w) != p);
            }
            M::Div => {
                if src == 0 {
                    return Err(Fault::new(vector::DE).into());
                }
                let (hi, lo) = self.acc_pair(w);
                let n = (u128::from(hi) << w) | u128::from(lo);
                let q = n / u128::from(src);
                let r = n % u128::from(src);
                if q > u128::from(m) {
                    return Err(Fault::new(vector::DE).into());
                }
                self.set_acc_pair(w, r as u64, q as u64);
            }
            _ => {
                if src == 0 {
                    return Err(Fault::new(vector::DE).into());
                }
                let (hi, lo) = self.acc_pair(w);
                let n = if w == 64 {
                    (i128::from(hi as i64) << 64) | i128::from(lo)
                } else {
                    sext((hi << w) | lo, 2 * w)
                };
                let d = sext(src, w);
                let (q, r) = (n.wrapping_div(d), n.wrapping_rem(d));
                let lim = 1i128 << (w - 1);
                if q >= lim || q < -lim {
                    return Err(Fault::new(vector::DE).into());
                }
                self.set_acc_pair(w, (r as u64) & m, (q as u64) & m);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Cpu;
    use crate::fault::vector;
    use crate::test_utils::{run_bytes64, run_bytes64_fault};
    use x86::reg::rflags::{CF, OF};

    #[test]
    fn multiplies() {
        // mul bl: 0x80 * 2 = 0x100 -> AX, CF = OF = 1
        let (cpu, _) = run_bytes64(&[0xf6, 0xe3], |c: &mut Cpu| {
            c.gpr[0] = 0x80;
            c.gpr[3] = 2;
        });
        assert_eq!(cpu.gpr[0], 0x100);
        assert_eq!(cpu.rflags() & (CF | OF), CF | OF);
        // mul rbx: 2^63 * 4 = 2^65 -> RDX = 2, RAX = 0
        let (cpu, _) = run_bytes64(&[0x48, 0xf7, 0xe3], |c| {
            c.gpr[0] = 1 << 63;
            c.gpr[3] = 4;
        });
        assert_eq!((cpu.gpr[2], cpu.gpr[0]), (2, 0));
        // imul eax, ebx, -3 (6b c3 fd): 5 * -3 = -15 fits
        let (cpu, _) = run_bytes64(&[0x6b, 0xc3, 0xfd], |c| c.gpr[3] = 5);
        assert_eq!(cpu.gpr[0], 0xffff_fff1);
        assert_eq!(cpu.rflags() & (CF | OF), 0);
        // imul rax, rbx: overflow
        let (cpu, _) = run_bytes64(&[0x48, 0x0f, 0xaf, 0xc3], |c| {
            c.gpr[0] = 1 << 62;
            c.gpr[3] = 2;
        });
        assert_eq!(cpu.gpr[0], 1 << 63);
        assert_eq!(cpu.rflags() & (CF | OF), CF | OF);
        // imul cl (one operand): AL=-2 * CL=3 = -6 -> AX = 0xfffa, no overflow
        let (cpu, _) = run_bytes64(&[0xf6, 0xe9], |c| {
            c.gpr[0] = 0xfe;
            c.gpr[1] = 3;
        });
        assert_eq!(cpu.gpr[0], 0xfffa);
        assert_eq!(cpu.rflags() & (CF | OF), 0);
    }

    #[test]
    fn divides_and_raises_de() {
        // div ecx: EDX:EAX = 0x1_0000_0005 / 2
        let (cpu, _) = run_bytes64(&[0xf7, 0xf1], |c| {
            c.gpr[0] = 5;
            c.gpr[2] = 1;
            c.gpr[1] = 2;
        });
        assert_eq!((cpu.gpr[0], cpu.gpr[2]), (0x8000_0002, 1));
        // idiv rcx: -7 / 2 = -3 rem -1
        let (cpu, _) = run_bytes64(&[0x48, 0xf7, 0xf9], |c| {
            c.gpr[0] = -7i64 as u64;
            c.gpr[2] = u64::MAX;
            c.gpr[1] = 2;
        });
        assert_eq!((cpu.gpr[0] as i64, cpu.gpr[2] as i64), (-3, -1));
        // idiv bl: AX = -128*... 0x8000 / -1 overflows AL -> #DE
        assert_eq!(
            run_bytes64_fault(&[0xf6, 0xfb], |c| {
                c.gpr[0] = 0x8000;
                c.gpr[3] = 0xff;
            }),
            vector::DE
        );
        // div rcx by zero -> #DE
        assert_eq!(run_bytes64_fault(&[0x48, 0xf7, 0xf1], |_| {}), vector::DE);
        // div cl: 0x200 / 2 = 0x100 does not fit AL -> #DE
        assert_eq!(
            run_bytes64_fault(&[0xf6, 0xf1], |c| {
                c.gpr[0] = 0x200;
                c.gpr[1] = 2;
            }),
            vector::DE
        );
    }
}
