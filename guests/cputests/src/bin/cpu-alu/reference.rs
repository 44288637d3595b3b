//! The SDM's definitions of the integer instructions (SDM Vol. 2A/2B, each instruction's
//! "Operation" and "Flags Affected"; Vol. 1 §3.4.3.1 and Appendix A "EFLAGS Cross-Reference"),
//! written as plain Rust over `u128` so that no carry or overflow of the host arithmetic is
//! involved. Each function returns the result, RFLAGS after (unaffected flags copied from
//! `fin`) and the mask of status flags the SDM defines for this case: the bits outside the mask
//! are "undefined" and are neither compared nor hashed.

pub const CF: u64 = 1 << 0;
pub const PF: u64 = 1 << 2;
pub const AF: u64 = 1 << 4;
pub const ZF: u64 = 1 << 6;
pub const SF: u64 = 1 << 7;
pub const OF: u64 = 1 << 11;
/// The six status flags.
pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;

/// What an instruction produced: result, RFLAGS, defined status flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub result: u64,
    pub flags: u64,
    pub defined: u64,
}

pub fn mask(width: u32) -> u64 {
    if width == 64 {
        u64::MAX
    } else {
        (1 << width) - 1
    }
}

fn sign(width: u32) -> u64 {
    1 << (width - 1)
}

/// Sign-extends the low `width` bits of `v` to 64.
pub fn sext(v: u64, width: u32) -> i64 {
    let shift = 64 - width;
    ((v << shift) as i64) >> shift
}

fn bit(flag: u64, on: bool) -> u64 {
    if on { flag } else { 0 }
}

/// SF, ZF and PF of a result (PF: even parity of the low byte, Vol. 1 §3.4.3.1).
fn szp(r: u64, width: u32) -> u64 {
    bit(ZF, r == 0)
        | bit(SF, r & sign(width) != 0)
        | bit(PF, (r as u8).count_ones().is_multiple_of(2))
}

/// Status flags in `set` replace those of `fin` within `affected`.
fn merge(fin: u64, affected: u64, set: u64) -> u64 {
    (fin & !affected) | (set & affected)
}

/// ADD/ADC: `a + b + carry`.
pub fn add(width: u32, a: u64, b: u64, carry: bool, fin: u64) -> Outcome {
    let (a, b) = (a & mask(width), b & mask(width));
    let wide = u128::from(a) + u128::from(b) + u128::from(carry);
    let r = wide as u64 & mask(width);
    let f = szp(r, width)
        | bit(CF, wide >> width != 0)
        | bit(AF, (a ^ b ^ r) & 0x10 != 0)
        | bit(OF, (a ^ r) & (b ^ r) & sign(width) != 0);
    Outcome {
        result: r,
        flags: merge(fin, STATUS, f),
        defined: STATUS,
    }
}

/// SUB/SBB/CMP/NEG: `a - b - borrow`.
pub fn sub(width: u32, a: u64, b: u64, borrow: bool, fin: u64) -> Outcome {
    let (a, b) = (a & mask(width), b & mask(width));
    let subtrahend = u128::from(b) + u128::from(borrow);
    let r = (u128::from(a).wrapping_sub(subtrahend)) as u64 & mask(width);
    let f = szp(r, width)
        | bit(CF, u128::from(a) < subtrahend)
        | bit(AF, (a ^ b ^ r) & 0x10 != 0)
        | bit(OF, (a ^ b) & (a ^ r) & sign(width) != 0);
    Outcome {
        result: r,
        flags: merge(fin, STATUS, f),
        defined: STATUS,
    }
}

/// AND/OR/XOR/TEST: OF = CF = 0, SF ZF PF from the result, AF undefined.
pub fn logic(width: u32, r: u64, fin: u64) -> Outcome {
    let r = r & mask(width);
    Outcome {
        result: r,
        flags: merge(fin, STATUS, szp(r, width)),
        defined: STATUS & !AF,
    }
}

/// INC/DEC: like ADD/SUB of 1 but CF is not affected.
pub fn inc_dec(width: u32, a: u64, inc: bool, fin: u64) -> Outcome {
    let o = if inc {
        add(width, a, 1, false, fin)
    } else {
        sub(width, a, 1, false, fin)
    };
    Outcome {
        flags: merge(o.flags, CF, fin),
        ..o
    }
}

/// The count mask of shifts and rotates: 6 bits for 64-bit operands, else 5.
fn count_mask(width: u32) -> u8 {
    if width == 64 { 0x3F } else { 0x1F }
}

/// SAL/SHL, SHR, SAR by `count`, as the SDM's loop states it ("SAL/SAL/SHL/SHR—Shift").
pub fn shift(width: u32, kind: char, a: u64, count: u8, fin: u64) -> Outcome {
    let masked = count & count_mask(width);
    let mut dest = a & mask(width);
    if masked == 0 {
        return Outcome {
            result: dest,
            flags: fin,
            defined: STATUS,
        };
    }
    let mut cf = false;
    for _ in 0..masked {
        match kind {
            'l' => {
                cf = dest & sign(width) != 0;
                dest = (dest << 1) & mask(width);
            }
            'r' => {
                cf = dest & 1 != 0;
                dest >>= 1;
            }
            _ => {
                cf = dest & 1 != 0;
                dest = (dest >> 1) | (dest & sign(width));
            }
        }
    }
    let of = match kind {
        'l' => (dest & sign(width) != 0) != cf,
        'r' => a & sign(width) != 0,
        _ => false,
    };
    let mut defined = STATUS & !AF;
    if masked != 1 {
        defined &= !OF;
    }
    // "CF is undefined for SHL and SHR where the count is greater than or equal to the size".
    if kind != 'a' && u32::from(masked) >= width {
        defined &= !CF;
    }
    let f = szp(dest, width) | bit(CF, cf) | bit(OF, of);
    Outcome {
        result: dest,
        flags: merge(fin, STATUS, f),
        defined,
    }
}

/// ROL, ROR, RCL, RCR by `count` ("RCL/RCR/ROL/ROR—Rotate"): only CF and OF are affected,
/// OF only for a masked count of 1.
pub fn rotate(width: u32, kind: &str, a: u64, count: u8, fin: u64) -> Outcome {
    let masked = count & count_mask(width);
    let through_carry = kind.starts_with("rc");
    let temp = match (through_carry, width) {
        (true, 8) => masked % 9,
        (true, 16) => masked % 17,
        (true, _) => masked,
        (false, _) => masked % width as u8,
    };
    let msb = |v: u64| v & sign(width) != 0;
    let mut dest = a & mask(width);
    let mut cf = fin & CF != 0;
    let mut of = fin & OF != 0;
    if kind == "rcr" && masked == 1 {
        of = msb(dest) != cf;
    }
    for _ in 0..temp {
        match kind {
            "rol" => dest = ((dest << 1) & mask(width)) | u64::from(msb(dest)),
            "ror" => dest = (dest >> 1) | if dest & 1 != 0 { sign(width) } else { 0 },
            "rcl" => {
                let out = msb(dest);
                dest = ((dest << 1) & mask(width)) | u64::from(cf);
                cf = out;
            }
            _ => {
                let out = dest & 1 != 0;
                dest = (dest >> 1) | if cf { sign(width) } else { 0 };
                cf = out;
            }
        }
    }
    if masked != 0 {
        match kind {
            "rol" => cf = dest & 1 != 0,
            "ror" => cf = msb(dest),
            _ => {}
        }
        if masked == 1 {
            of = match kind {
                "rol" | "rcl" => msb(dest) != cf,
                "ror" => msb(dest) != (dest & (sign(width) >> 1) != 0),
                _ => of,
            };
        }
    }
    let mut defined = STATUS;
    if masked > 1 {
        defined &= !OF;
    }
    Outcome {
        result: dest,
        flags: merge(fin, CF | OF, bit(CF, cf) | bit(OF, of)),
        defined,
    }
}

/// One-operand MUL (unsigned) or IMUL (signed): the double-width product (high, low) and the
/// flags: CF = OF = "the upper half is significant"; SF ZF AF PF undefined.
pub fn widening_mul(width: u32, signed: bool, a: u64, b: u64, fin: u64) -> (u64, u64, Outcome) {
    let (hi, lo, significant) = if signed {
        let p = i128::from(sext(a, width)) * i128::from(sext(b, width));
        let lo = p as u64 & mask(width);
        (
            ((p >> width) as u64) & mask(width),
            lo,
            i128::from(sext(lo, width)) != p,
        )
    } else {
        let p = u128::from(a & mask(width)) * u128::from(b & mask(width));
        let hi = (p >> width) as u64 & mask(width);
        (hi, p as u64 & mask(width), hi != 0)
    };
    let f = bit(CF | OF, significant);
    (
        hi,
        lo,
        Outcome {
            result: lo,
            flags: merge(fin, CF | OF, f),
            defined: CF | OF,
        },
    )
}

/// Two-operand IMUL: the truncated product; CF = OF = truncation lost significant bits.
pub fn imul2(width: u32, a: u64, b: u64, fin: u64) -> Outcome {
    let (_, lo, o) = widening_mul(width, true, a, b, fin);
    Outcome { result: lo, ..o }
}

/// DIV/IDIV of (hi:lo) by `divisor`: `Some((quotient, remainder))`, or `None` for #DE (divisor
/// 0, or a quotient too large for the destination). IDIV truncates towards zero and the
/// remainder takes the dividend's sign. All flags are undefined.
pub fn divide(width: u32, signed: bool, hi: u64, lo: u64, divisor: u64) -> Option<(u64, u64)> {
    let m = mask(width);
    if signed {
        let dividend = (i128::from(sext(hi, width)) << width) | i128::from(lo & m);
        let d = i128::from(sext(divisor, width));
        if d == 0 {
            return None;
        }
        let q = dividend / d;
        let r = dividend % d;
        let min = -(1i128 << (width - 1));
        let max = (1i128 << (width - 1)) - 1;
        (min..=max)
            .contains(&q)
            .then_some((q as u64 & m, r as u64 & m))
    } else {
        let dividend = (u128::from(hi & m) << width) | u128::from(lo & m);
        let d = u128::from(divisor & m);
        if d == 0 {
            return None;
        }
        let q = dividend / d;
        (q <= u128::from(m)).then_some((q as u64, (dividend % d) as u64))
    }
}

/// BT/BTS/BTR/BTC with a register bit base: CF = the selected bit (offset modulo the operand
/// size), ZF unaffected, OF SF AF PF undefined.
pub fn bit_test(width: u32, kind: &str, a: u64, offset: u64, fin: u64) -> Outcome {
    let a = a & mask(width);
    let b = 1 << (offset % u64::from(width));
    let r = match kind {
        "bts" => a | b,
        "btr" => a & !b,
        "btc" => a ^ b,
        _ => a,
    };
    Outcome {
        result: r,
        flags: merge(fin, CF, bit(CF, a & b != 0)),
        defined: CF | ZF,
    }
}

/// BSF/BSR: ZF = (source = 0); the destination is undefined then (reported as `None`); CF OF
/// SF AF PF undefined.
pub fn bit_scan(width: u32, forward: bool, src: u64, fin: u64) -> (Option<u64>, Outcome) {
    let src = src & mask(width);
    let index = if src == 0 {
        None
    } else if forward {
        Some(u64::from(src.trailing_zeros()))
    } else {
        Some(63 - u64::from(src.leading_zeros()))
    };
    let o = Outcome {
        result: index.unwrap_or(0),
        flags: merge(fin, ZF, bit(ZF, src == 0)),
        defined: ZF,
    };
    (index, o)
}

/// Condition `cc` (Vol. 1 Appendix B, "EFLAGS Condition Codes") on `flags`.
pub fn condition(cc: u8, flags: u64) -> bool {
    let f = |flag: u64| flags & flag != 0;
    let holds = match cc >> 1 {
        0 => f(OF),
        1 => f(CF),
        2 => f(ZF),
        3 => f(CF) || f(ZF),
        4 => f(SF),
        5 => f(PF),
        6 => f(SF) != f(OF),
        _ => f(ZF) || (f(SF) != f(OF)),
    };
    holds != (cc & 1 != 0)
}
