//! AND, OR, XOR, TEST, NOT (SDM Vol. 2A/2B): CF = OF = 0, SF/ZF/PF from the result, AF
//! undefined (left 0). The instructions themselves go through the ALU dispatcher in
//! [`super::arith`]; NOT (no flags) through `unary`.

use crate::Cpu;
use crate::flags::{FlagOp, mask};

impl Cpu {
    /// Records the flags of a logic result and returns it truncated to `width`.
    #[inline(always)]
    pub(crate) fn logic_result(&mut self, width: u32, r: u64) -> u64 {
        let r = r & mask(width);
        self.flags.set_lazy(FlagOp::Logic, width, 0, 0, r, false);
        r
    }
}

#[cfg(test)]
mod tests {
    use crate::test_utils::{FlagCase, run_bytes64};
    use x86::reg::rflags::{AF, CF, OF, PF, SF, ZF};

    #[test]
    fn logic_golden_flags() {
        let table: &[FlagCase] = &[
            (&[0x20, 0xd8], "and al, bl", 0xf0, 0x0f, 0x00, ZF | PF),
            (&[0x08, 0xd8], "or al, bl", 0x80, 0x01, 0x81, SF | PF),
            (&[0x30, 0xd8], "xor al, bl", 0xff, 0xfe, 0x01, 0),
            (&[0x48, 0x31, 0xc0], "xor rax, rax", 123, 0, 0, ZF | PF),
            (&[0x84, 0xd8], "test al, bl", 0x81, 0x80, 0x81, SF),
            (
                &[0x48, 0x85, 0xd8],
                "test rax, rbx",
                1 << 63,
                1 << 63,
                1 << 63,
                SF | PF,
            ),
            (&[0xf6, 0xd0], "not al", 0x0f, 0, 0xf0, 0),
        ];
        for &(bytes, asm, a, b, want, flags) in table {
            let (cpu, _) = run_bytes64(bytes, |c| {
                c.gpr[0] = a;
                c.gpr[3] = b;
                // Every logic op clears CF and OF: start with them set (NOT leaves them).
                c.flags
                    .set_bits(0x2 | if asm.starts_with("not") { 0 } else { CF | OF });
            });
            assert_eq!(cpu.gpr[0], want, "{asm}");
            assert_eq!(cpu.rflags() & (CF | PF | AF | ZF | SF | OF), flags, "{asm}");
        }
    }
}
