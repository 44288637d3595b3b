//! RFLAGS with lazily evaluated arithmetic flags (SDM Vol. 1 §3.4.3, Appendix A "EFLAGS Cross
//! Reference").
//!
//! The common flag producers (ADD/ADC/SUB/SBB/CMP/NEG/INC/DEC and the logic group) record their
//! operands and result; CF, PF, AF, ZF, SF and OF are computed only when something reads them.
//! Everything else (shifts, multiplies, POPF, …) sets the status flags eagerly.

use x86::reg::rflags::{AF, CF, OF, PF, SF, STATUS, ZF};

/// The operation whose flags are pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlagOp {
    /// The status flags are in `bits`.
    None,
    /// `res = a + b + carry`.
    Add,
    /// `res = a - b - carry`.
    Sub,
    /// `res = a + 1`, CF in `carry`.
    Inc,
    /// `res = a - 1`, CF in `carry`.
    Dec,
    /// AND/OR/XOR/TEST: CF = OF = 0, AF undefined (0 here, as Intel hardware leaves it).
    Logic,
    /// Shifts and multiplies: CF in `carry`, OF = (`b` != 0), AF = 0, ZF/SF/PF from `res`.
    Cfof,
}

/// RFLAGS.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Flags {
    bits: u64,
    op: FlagOp,
    /// 64 minus the operand width in bits (56, 48, 32 or 0): the mask and the sign bit of the
    /// width are one shift away, and a block op, which knows this shift, stores it as it is.
    shift: u8,
    a: u64,
    b: u64,
    res: u64,
    carry: bool,
}

#[inline]
pub(crate) const fn mask(width: u32) -> u64 {
    // Branch-free; widths are 8, 16, 32 or 64 (0 would give all ones, never a panic).
    u64::MAX >> (64u32.wrapping_sub(width) & 63)
}

#[inline]
pub(crate) const fn sign(width: u32) -> u64 {
    1u64 << (width.wrapping_sub(1) & 63)
}

/// PF: set when the low byte has an even number of one bits.
#[inline]
pub(crate) const fn parity(v: u64) -> bool {
    (v as u8).count_ones().is_multiple_of(2)
}

impl Flags {
    /// RFLAGS = `bits`, nothing pending.
    pub const fn new(bits: u64) -> Self {
        Self {
            bits,
            op: FlagOp::None,
            shift: 56,
            a: 0,
            b: 0,
            res: 0,
            carry: false,
        }
    }

    /// Records an arithmetic result whose flags are computed when read.
    #[inline(always)]
    pub fn set_lazy(&mut self, op: FlagOp, width: u32, a: u64, b: u64, res: u64, carry: bool) {
        let m = mask(width);
        self.record(
            op,
            (64u32.wrapping_sub(width) & 63) as u8,
            a & m,
            b & m,
            res & m,
            carry,
        );
    }

    /// `set_lazy` for the width given as `shift`, 64 minus it (0, 32, 48 or 56), and operands
    /// and result already masked to it: what a block op has at hand.
    #[inline(always)]
    pub fn record(&mut self, op: FlagOp, shift: u8, a: u64, b: u64, res: u64, carry: bool) {
        self.op = op;
        self.shift = shift;
        self.a = a;
        self.b = b;
        self.res = res;
        self.carry = carry;
    }

    /// The whole register.
    #[inline]
    pub fn bits(&self) -> u64 {
        if self.op == FlagOp::None {
            self.bits
        } else {
            (self.bits & !STATUS) | self.status()
        }
    }

    /// Replaces the whole register (the caller has applied the reserved-bit rules).
    #[inline]
    pub fn set_bits(&mut self, bits: u64) {
        self.bits = bits;
        self.op = FlagOp::None;
    }

    /// Sets the six status flags from `status` (other bits ignored), eagerly.
    #[inline]
    pub fn set_status(&mut self, status: u64) {
        // All six are replaced: the pending ones need not be evaluated (the other bits of
        // `bits` are current whatever is pending).
        self.set_bits((self.bits & !STATUS) | (status & STATUS));
    }

    /// Sets CF and OF (ROL, ROR: the other status flags stay).
    #[inline]
    pub fn set_cf_of(&mut self, cf: bool, of: bool) {
        let b = self.bits() & !(CF | OF);
        self.set_bits(b | if cf { CF } else { 0 } | if of { OF } else { 0 });
    }

    /// Sets or clears the flags in `mask`.
    #[inline]
    pub fn set(&mut self, flag: u64, on: bool) {
        if flag & STATUS == 0 {
            // Control and system flags live in `bits` whatever is pending.
            self.bits = if on {
                self.bits | flag
            } else {
                self.bits & !flag
            };
            return;
        }
        let b = self.bits();
        self.set_bits(if on { b | flag } else { b & !flag });
    }

    /// The sign bit of the pending operation's width.
    #[inline(always)]
    fn sign(&self) -> u64 {
        (1u64 << 63) >> (self.shift & 63)
    }

    /// Whether `flag` is set.
    #[inline(always)]
    pub fn get(&self, flag: u64) -> bool {
        if flag & STATUS == 0 || self.op == FlagOp::None {
            return self.bits & flag != 0;
        }
        match flag {
            CF => self.cf(),
            ZF => self.res == 0,
            SF => self.res & self.sign() != 0,
            OF => self.of(),
            PF => parity(self.res),
            _ => self.status() & flag != 0,
        }
    }

    /// CF and ZF after a SUB or CMP without a borrow in (the commonest unsigned comparison),
    /// cheap to answer; `None` after anything else.
    #[inline(always)]
    pub fn after_sub(&self) -> Option<(bool, bool)> {
        (self.op == FlagOp::Sub && !self.carry).then_some((self.a < self.b, self.res == 0))
    }

    /// The carry flag (without short-circuits, as `Cpu::cond` explains).
    #[inline(always)]
    pub fn cf(&self) -> bool {
        match self.op {
            FlagOp::None => self.bits & CF != 0,
            FlagOp::Add => (self.res < self.a) | (self.carry & (self.res == self.a)),
            FlagOp::Sub => (self.a < self.b) | (self.carry & (self.a == self.b)),
            FlagOp::Inc | FlagOp::Dec | FlagOp::Cfof => self.carry,
            FlagOp::Logic => false,
        }
    }

    /// The overflow flag. Inline, like the other flags a condition reads, so that evaluating
    /// a condition makes no call.
    #[inline(always)]
    fn of(&self) -> bool {
        let s = self.sign();
        let (a, b, r) = (self.a, self.b, self.res);
        match self.op {
            FlagOp::None => self.bits & OF != 0,
            FlagOp::Add => (a ^ r) & (b ^ r) & s != 0,
            FlagOp::Sub => (a ^ b) & (a ^ r) & s != 0,
            FlagOp::Inc => r == s,
            FlagOp::Dec => a == s,
            FlagOp::Logic => false,
            FlagOp::Cfof => b != 0,
        }
    }

    fn status(&self) -> u64 {
        let s = self.sign();
        let (a, b, r) = (self.a, self.b, self.res);
        if self.op == FlagOp::None {
            return self.bits & STATUS;
        }
        let of = self.of();
        let af = match self.op {
            FlagOp::Add | FlagOp::Sub => (a ^ b ^ r) & 0x10 != 0,
            FlagOp::Inc | FlagOp::Dec => (a ^ 1 ^ r) & 0x10 != 0,
            _ => false,
        };
        let mut f = 0;
        if self.cf() {
            f |= CF;
        }
        if parity(r) {
            f |= PF;
        }
        if af {
            f |= AF;
        }
        if r == 0 {
            f |= ZF;
        }
        if r & s != 0 {
            f |= SF;
        }
        if of {
            f |= OF;
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Reading one flag lazily agrees with the whole evaluated register.
        #[test]
        fn single_flag_reads_agree_with_the_evaluated_register(
            op in 0u8..6, w in 0usize..4, a in any::<u64>(), b in any::<u64>(), carry in any::<bool>(),
        ) {
            let width = [8, 16, 32, 64][w];
            let op = [FlagOp::Add, FlagOp::Sub, FlagOp::Inc, FlagOp::Dec, FlagOp::Logic, FlagOp::Cfof][op as usize];
            let res = match op {
                FlagOp::Add => a.wrapping_add(b).wrapping_add(u64::from(carry)),
                FlagOp::Sub => a.wrapping_sub(b).wrapping_sub(u64::from(carry)),
                FlagOp::Inc => a.wrapping_add(1),
                FlagOp::Dec => a.wrapping_sub(1),
                _ => a & b,
            };
            let mut f = Flags::new(2);
            f.set_lazy(op, width, a, b, res, carry);
            let all = f.bits();
            for flag in [CF, PF, AF, ZF, SF, OF] {
                prop_assert_eq!(f.get(flag), all & flag != 0, "flag {:#x}", flag);
            }
            prop_assert_eq!(f.cf(), all & CF != 0);
        }
    }
}
