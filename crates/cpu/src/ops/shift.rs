//! Shifts and rotates: SAL/SHL, SHR, SAR, ROL, ROR, RCL, RCR, SHLD, SHRD (SDM Vol. 2B "SAL/SAR/
//! SHL/SHR", Vol. 2B "RCL/RCR/ROL/ROR", Vol. 2B "SHLD", "SHRD").
//!
//! The count is masked to 5 bits (6 with a 64-bit operand); a masked count of 0 changes no
//! flag. OF is architecturally defined only for a count of 1; for larger counts it is computed
//! with the same formula (what Intel hardware and Bochs do). AF is undefined and left 0 by the
//! shifts; rotates touch only CF and OF.

use iced_x86::{Instruction, Mnemonic as M};

use crate::Cpu;
use crate::bus::Bus;
use crate::fault::Ex;
use crate::flags::{FlagOp, mask, parity, sign};
use x86::reg::rflags::{CF, OF, PF, SF, ZF};

impl Cpu {
    fn result_flags(width: u32, r: u64, cf: bool, of: bool) -> u64 {
        let mut f = 0;
        if cf {
            f |= CF;
        }
        if of {
            f |= OF;
        }
        if r & mask(width) == 0 {
            f |= ZF;
        }
        if r & sign(width) != 0 {
            f |= SF;
        }
        if parity(r) {
            f |= PF;
        }
        f
    }

    pub(crate) fn shift<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let width = self.op_width(ins, 0);
        let dst = self.loc(ins, 0);
        let cnt_loc = self.loc(ins, 1);
        let count = self.get(bus, cnt_loc, 8)? & if width == 64 { 0x3f } else { 0x1f };
        let a = self.get_rmw(bus, dst, width)?;
        if count == 0 {
            return Ok(());
        }
        let r = self.shift_compute(ins.mnemonic(), width, a, count);
        self.put(bus, dst, width, r)
    }

    /// SHL/SAL/SHR/SAR/ROL/ROR/RCL/RCR of `a` at `width` bits by a masked, non-zero `count`:
    /// sets the flags and returns the result.
    #[inline]
    pub(crate) fn shift_compute(&mut self, op: M, width: u32, a: u64, count: u64) -> u64 {
        let m = mask(width);
        let s = sign(width);
        let w = u64::from(width);
        let msb = |v: u64| v & s != 0;
        let (r, status) = match op {
            M::Shl | M::Sal | M::Shr | M::Sar => {
                let (r, cf, of) = shift_status(op, width, a, count);
                (r, Some((cf, of)))
            }
            M::Rol | M::Ror => {
                let c = count % w;
                let r = if c == 0 {
                    a
                } else if op == M::Rol {
                    ((a << c) | (a >> (w - c))) & m
                } else {
                    ((a >> c) | (a << (w - c))) & m
                };
                let (cf, of) = if op == M::Rol {
                    let cf = r & 1 != 0;
                    (cf, msb(r) ^ cf)
                } else {
                    (msb(r), msb(r) ^ (r & (s >> 1) != 0))
                };
                self.set_cf_of(cf, of);
                (r, None)
            }
            _ => {
                // RCL/RCR rotate through CF: a (width+1)-bit rotation.
                let c = count % (w + 1);
                let cf_in = u128::from(self.flags.cf());
                let v = (cf_in << w) | u128::from(a);
                let full = (1u128 << (w + 1)) - 1;
                let rot = if c == 0 {
                    v
                } else if op == M::Rcl {
                    ((v << c) | (v >> (w + 1 - c))) & full
                } else {
                    ((v >> c) | (v << (w + 1 - c))) & full
                };
                let r = (rot as u64) & m;
                let cf = (rot >> w) & 1 != 0;
                let of = if op == M::Rcl {
                    msb(r) ^ cf
                } else {
                    msb(r) ^ (r & (s >> 1) != 0)
                };
                self.set_cf_of(cf, of);
                (r, None)
            }
        };
        // SHL/SHR/SAR: CF and OF as computed, SF/ZF/PF from the result, AF = 0 (lazily).
        if let Some((cf, of)) = status {
            self.flags
                .set_lazy(FlagOp::Cfof, width, 0, u64::from(of), r, cf);
        }
        r
    }

    fn set_cf_of(&mut self, cf: bool, of: bool) {
        let b = self.flags.bits() & !(CF | OF);
        self.flags
            .set_bits(b | if cf { CF } else { 0 } | if of { OF } else { 0 });
    }

    /// SHLD / SHRD.
    #[inline(never)]
    pub(crate) fn shift_double<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let width = self.op_width(ins, 0);
        let dst = self.loc(ins, 0);
        let src = self.loc(ins, 1);
        let cnt_loc = self.loc(ins, 2);
        let count = self.get(bus, cnt_loc, 8)? & if width == 64 { 0x3f } else { 0x1f };
        let a = self.get_rmw(bus, dst, width)?;
        let b = self.get(bus, src, width)?;
        if count == 0 {
            return Ok(());
        }
        let w = u32::from(width as u8);
        let c = count as u32;
        let m = mask(width);
        let (r, cf) = if w == 64 {
            // Counts are 1..=63 here.
            if ins.mnemonic() == M::Shld {
                ((a << c) | (b >> (64 - c)), (a >> (64 - c)) & 1 != 0)
            } else {
                ((a >> c) | (b << (64 - c)), (a >> (c - 1)) & 1 != 0)
            }
        } else {
            // The operand is viewed as dst:src:dst, so that a 16-bit count above 16 pulls dst
            // in again. Counts above the width give undefined results; this is what Bochs does.
            let v = (u128::from(a) << (2 * w)) | (u128::from(b) << w) | u128::from(a);
            if ins.mnemonic() == M::Shld {
                (
                    ((v << c) >> (2 * w)) as u64 & m,
                    (v << c) >> (3 * w) & 1 != 0,
                )
            } else {
                ((v >> c) as u64 & m, (v >> (c - 1)) & 1 != 0)
            }
        };
        let of = (r ^ a) & sign(width) != 0;
        self.flags.set_status(Self::result_flags(width, r, cf, of));
        self.put(bus, dst, width, r)
    }
}

/// SHL/SAL, SHR or SAR of the `width`-bit value `a` by `count` (1 or more, already masked):
/// the result, CF and OF. SF, ZF and PF follow from the result and AF is 0 (`FlagOp::Cfof`).
#[inline(always)]
pub(crate) fn shift_status(op: M, width: u32, a: u64, count: u64) -> (u64, bool, bool) {
    let m = mask(width);
    let s = sign(width);
    let w = u64::from(width);
    match op {
        M::Shl | M::Sal => {
            let r = if count < w { (a << count) & m } else { 0 };
            let cf = count <= w && (a >> (w - count)) & 1 != 0;
            (r, cf, (r & s != 0) ^ cf)
        }
        M::Shr => {
            let r = if count < w { a >> count } else { 0 };
            let cf = count <= w && (a >> (count - 1)) & 1 != 0;
            (r, cf, ((r << 1) ^ r) & s != 0)
        }
        _ => {
            let sa = ((a << (64 - w)) as i64) >> (64 - w);
            let c = count.min(w);
            let r = ((sa >> c.min(63)) as u64) & m;
            let cf = (sa >> (c - 1).min(63)) & 1 != 0;
            (r, cf, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::test_utils::{FlagCase, run_bytes64};
    use x86::reg::rflags::{CF, OF, PF, SF, ZF};

    const ST: u64 = CF | PF | ZF | SF | OF;

    #[test]
    fn shift_golden_flags() {
        // (bytes, asm, rax, rcx, expected rax, expected CF|PF|ZF|SF|OF)
        let table: &[FlagCase] = &[
            (&[0xd0, 0xe0], "shl al, 1", 0x81, 0, 0x02, CF | OF),
            (&[0xd0, 0xe0], "shl al, 1", 0x40, 0, 0x80, SF | OF),
            (
                &[0xd2, 0xe0],
                "shl al, cl",
                0x01,
                8,
                0x00,
                CF | ZF | PF | OF,
            ),
            (&[0xd0, 0xe8], "shr al, 1", 0x81, 0, 0x40, CF | OF),
            (&[0xd0, 0xf8], "sar al, 1", 0x81, 0, 0xc0, CF | SF | PF),
            (
                &[0x48, 0xd3, 0xf8],
                "sar rax, cl",
                1 << 63,
                63,
                u64::MAX,
                SF | PF,
            ),
            (&[0xc1, 0xe8, 0x04], "shr eax, 4", 0xf0, 0, 0x0f, PF),
            (&[0xd0, 0xc0], "rol al, 1", 0x80, 0, 0x01, CF | OF),
            (&[0xd0, 0xc8], "ror al, 1", 0x01, 0, 0x80, CF | OF),
            (&[0xd0, 0xd0], "rcl al, 1", 0x80, 0, 0x00, CF | OF),
            (&[0xd0, 0xd8], "rcr al, 1", 0x01, 0, 0x00, CF),
            (&[0xd2, 0xe0], "shl al, cl (count 0)", 0x01, 0x20, 0x01, 0),
        ];
        for &(bytes, asm, a, c, want, flags) in table {
            let (cpu, _) = run_bytes64(bytes, |cpu| {
                cpu.gpr[0] = a;
                cpu.gpr[1] = c;
            });
            assert_eq!(cpu.gpr[0], want, "{asm}");
            assert_eq!(cpu.rflags() & ST, flags, "{asm}");
        }
    }

    #[test]
    fn double_shifts() {
        // shld eax, ebx, 4
        let (cpu, _) = run_bytes64(&[0x0f, 0xa4, 0xd8, 0x04], |c| {
            c.gpr[0] = 0x1234_5678;
            c.gpr[3] = 0x9abc_def0;
        });
        assert_eq!(cpu.gpr[0], 0x2345_6789);
        assert_eq!(cpu.rflags() & CF, CF);
        // shrd rax, rbx, cl (cl = 8)
        let (cpu, _) = run_bytes64(&[0x48, 0x0f, 0xad, 0xd8], |c| {
            c.gpr[0] = 0x1122_3344_5566_7788;
            c.gpr[3] = 0xaa;
            c.gpr[1] = 8;
        });
        assert_eq!(cpu.gpr[0], 0xaa11_2233_4455_6677);
        assert_eq!(cpu.rflags() & (CF | SF | OF), SF | CF | OF);
    }
}
