//! cpu-alu: the general-purpose integer instructions against the SDM's definitions (SDM Vol. 2A
//! and 2B, each instruction's "Operation" and "Flags Affected"; Vol. 1 §3.4.3 EFLAGS, §7.3 and
//! Appendix A).
//!
//! For each family and operand width the program runs the real instruction over a fixed set of
//! operands and two incoming flag states (all status flags clear, all set), compares result and
//! RFLAGS with [`reference`] (the SDM's operation in plain Rust), and prints one line:
//! `<family>/<width>: cases=<n> hash=<FNV-1a of every (result, defined flags)>`. Flags the SDM
//! leaves undefined for a case are masked out of both the comparison and the hash:
//! AF after logic ops and non-zero shifts; OF after multi-bit shifts and rotates; CF after SHL
//! and SHR by the operand size or more; SF ZF AF PF after MUL and IMUL; every flag after DIV
//! and IDIV; OF SF AF PF after BT*; CF OF SF AF PF (and the destination, for a zero source)
//! after BSF and BSR. #DE of DIV and IDIV is caught by the exception handler and counted.

#![no_std]
#![no_main]

mod insn;
mod reference;

use cputests::out;
use cputests::report::{Fnv, Report};
use insn::{Atomic, Bin, Division, Imm, Sh, Str, Un};
use reference::{CF, OF, Outcome, PF, SF, STATUS, ZF, mask, sext};
use rt::BootInfo;

const WIDTHS: [u32; 4] = [8, 16, 32, 64];
/// RFLAGS before each case: status flags all clear, all set (bit 1 is always 1).
const FLAGS_IN: [u64; 2] = [0x2, 0x2 | STATUS];
/// Failures printed per family; the rest are only counted.
const MAX_PRINTED: u32 = 3;

/// Operands: the edges of every width, then a deterministic pseudo-random spread.
fn operands() -> [u64; 20] {
    let mut v = [
        0,
        1,
        2,
        0x0F,
        0x7F,
        0x80,
        0xFF,
        0x7FFF,
        0x8000,
        0xFFFF,
        0x7FFF_FFFF,
        0x8000_0000,
        0xFFFF_FFFF,
        0x7FFF_FFFF_FFFF_FFFF,
        0x8000_0000_0000_0000,
        u64::MAX,
        0,
        0,
        0,
        0,
    ];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for slot in &mut v[16..] {
        // xorshift64 (Marsaglia): fixed seed, same operands on every machine.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *slot = x;
    }
    v
}

/// The cases of one family at one width.
struct Family {
    name: &'static str,
    width: u32,
    cases: u32,
    mismatches: u32,
    traps: u32,
    hash: Fnv,
}

impl Family {
    fn new(name: &'static str, width: u32) -> Family {
        Family {
            name,
            width,
            cases: 0,
            mismatches: 0,
            traps: 0,
            hash: Fnv::default(),
        }
    }

    /// One case: `got` (result, RFLAGS) against `want`, over `want.defined`.
    fn case(&mut self, report: &mut Report, inputs: [u64; 3], got: (u64, u64), want: Outcome) {
        self.cases += 1;
        let flags = got.1 & want.defined;
        self.hash.u64(got.0);
        self.hash.u64(flags);
        if got.0 != want.result || flags != want.flags & want.defined {
            self.mismatches += 1;
            if self.mismatches <= MAX_PRINTED {
                out!(
                    report,
                    "FAIL {}/{} in={:#x},{:#x},{:#x}: got {:#x} flags {:#x}, want {:#x} flags {:#x} (defined {:#x})",
                    self.name,
                    self.width,
                    inputs[0],
                    inputs[1],
                    inputs[2],
                    got.0,
                    flags,
                    want.result,
                    want.flags & want.defined,
                    want.defined
                );
            }
        }
    }

    fn finish(self, report: &mut Report) {
        let (name, width, cases, hash) = (self.name, self.width, self.cases, self.hash.0);
        if self.traps > 0 {
            out!(
                report,
                "{name}/{width}: cases={cases} de={} hash={hash:016x}",
                self.traps
            );
        } else {
            out!(report, "{name}/{width}: cases={cases} hash={hash:016x}");
        }
        report.check(
            format_args!(
                "{}/{}: {} mismatches",
                self.name, self.width, self.mismatches
            ),
            self.mismatches == 0,
        );
    }
}

fn arithmetic(report: &mut Report) {
    let ops = operands();
    let families: [(&str, Bin); 9] = [
        ("add", Bin::Add),
        ("adc", Bin::Adc),
        ("sub", Bin::Sub),
        ("sbb", Bin::Sbb),
        ("cmp", Bin::Cmp),
        ("and", Bin::And),
        ("or", Bin::Or),
        ("xor", Bin::Xor),
        ("test", Bin::Test),
    ];
    for (name, op) in families {
        for width in WIDTHS {
            let mut fam = Family::new(name, width);
            for &a in &ops {
                for &b in &ops {
                    for fin in FLAGS_IN {
                        let (a, b) = (a & mask(width), b & mask(width));
                        let carry = fin & CF != 0;
                        let want = match op {
                            Bin::Add => reference::add(width, a, b, false, fin),
                            Bin::Adc => reference::add(width, a, b, carry, fin),
                            Bin::Sub => reference::sub(width, a, b, false, fin),
                            Bin::Sbb => reference::sub(width, a, b, carry, fin),
                            Bin::Cmp => Outcome {
                                result: a,
                                ..reference::sub(width, a, b, false, fin)
                            },
                            Bin::And => reference::logic(width, a & b, fin),
                            Bin::Or => reference::logic(width, a | b, fin),
                            Bin::Xor => reference::logic(width, a ^ b, fin),
                            _ => Outcome {
                                result: a,
                                ..reference::logic(width, a & b, fin)
                            },
                        };
                        fam.case(
                            report,
                            [a, b, fin],
                            insn::binary(op, width, a, b, fin),
                            want,
                        );
                    }
                }
            }
            fam.finish(report);
        }
    }
}

fn one_operand(report: &mut Report) {
    let ops = operands();
    let families: [(&str, Un); 6] = [
        ("neg", Un::Neg),
        ("not", Un::Not),
        ("inc", Un::Inc),
        ("dec", Un::Dec),
        ("shl1", Un::Shl1),
        ("sar1", Un::Sar1),
    ];
    for (name, op) in families {
        for width in WIDTHS {
            let mut fam = Family::new(name, width);
            for &a in &ops {
                for fin in FLAGS_IN {
                    let a = a & mask(width);
                    let want = match op {
                        Un::Neg => reference::sub(width, 0, a, false, fin),
                        Un::Not => Outcome {
                            result: !a & mask(width),
                            flags: fin,
                            defined: STATUS,
                        },
                        Un::Inc => reference::inc_dec(width, a, true, fin),
                        Un::Dec => reference::inc_dec(width, a, false, fin),
                        Un::Shl1 => reference::shift(width, 'l', a, 1, fin),
                        _ => reference::shift(width, 'a', a, 1, fin),
                    };
                    fam.case(report, [a, 0, fin], insn::unary(op, width, a, fin), want);
                }
            }
            fam.finish(report);
        }
    }
    for width in [32, 64] {
        let mut fam = Family::new("bswap", width);
        for &a in &ops {
            let a = a & mask(width);
            let want = if width == 32 {
                u64::from((a as u32).swap_bytes())
            } else {
                a.swap_bytes()
            };
            let want = Outcome {
                result: want,
                flags: 0x2,
                defined: STATUS,
            };
            fam.case(
                report,
                [a, 0, 0x2],
                insn::unary(Un::Bswap, width, a, 0x2),
                want,
            );
        }
        fam.finish(report);
    }
}

/// The immediate forms: the immediate is sign-extended to the operand size (SDM Vol. 2A §2.2.1.5
/// and each instruction's opcode table: "imm8 sign-extended", "imm32 sign-extended to 64 bits").
fn immediates(report: &mut Report) {
    let ops = operands();
    for form in Imm::ALL {
        let name = match form {
            Imm::AddPositive8 => "add-imm(0x7f)",
            Imm::AddNegative8 => "add-imm(-128)",
            Imm::CmpMinusOne => "cmp-imm(-1)",
            Imm::AndMinusTwo => "and-imm(-2)",
            Imm::SubNegative32 => "sub-imm(-0x1234)",
            Imm::XorPositive32 => "xor-imm(0x5a5a)",
            Imm::Shl5 => "shl-imm(5)",
            Imm::Sar31 => "sar-imm(31)",
            Imm::Rol9 => "rol-imm(9)",
            Imm::Rcr3 => "rcr-imm(3)",
        };
        for width in WIDTHS {
            if form.wide_only() && width == 8 {
                continue;
            }
            let mut fam = Family::new(name, width);
            let imm = form.value() as u64 & mask(width);
            let count = form.value() as u8;
            for &a in &ops {
                for fin in FLAGS_IN {
                    let a = a & mask(width);
                    let want = match form {
                        Imm::AddPositive8 | Imm::AddNegative8 => {
                            reference::add(width, a, imm, false, fin)
                        }
                        Imm::CmpMinusOne => Outcome {
                            result: a,
                            ..reference::sub(width, a, imm, false, fin)
                        },
                        Imm::AndMinusTwo => reference::logic(width, a & imm, fin),
                        Imm::SubNegative32 => reference::sub(width, a, imm, false, fin),
                        Imm::XorPositive32 => reference::logic(width, a ^ imm, fin),
                        Imm::Shl5 => reference::shift(width, 'l', a, count, fin),
                        Imm::Sar31 => reference::shift(width, 'a', a, count, fin),
                        Imm::Rol9 => reference::rotate(width, "rol", a, count, fin),
                        Imm::Rcr3 => reference::rotate(width, "rcr", a, count, fin),
                    };
                    fam.case(
                        report,
                        [a, imm, fin],
                        insn::immediate(form, width, a, fin),
                        want,
                    );
                }
            }
            fam.finish(report);
        }
    }
}

fn shifts(report: &mut Report) {
    let values = [
        0x1,
        0x80,
        0x81,
        0x7F,
        0x8000_0001,
        0x8000_0000_0000_0001,
        0xDEAD_BEEF_0BAD_F00D,
        u64::MAX,
    ];
    let counts = [
        0u8, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255,
    ];
    let families: [(&str, Sh); 7] = [
        ("shl", Sh::Shl),
        ("shr", Sh::Shr),
        ("sar", Sh::Sar),
        ("rol", Sh::Rol),
        ("ror", Sh::Ror),
        ("rcl", Sh::Rcl),
        ("rcr", Sh::Rcr),
    ];
    for (name, op) in families {
        for width in WIDTHS {
            let mut fam = Family::new(name, width);
            for &a in &values {
                for &count in &counts {
                    for fin in FLAGS_IN {
                        let a = a & mask(width);
                        let want = match op {
                            Sh::Shl => reference::shift(width, 'l', a, count, fin),
                            Sh::Shr => reference::shift(width, 'r', a, count, fin),
                            Sh::Sar => reference::shift(width, 'a', a, count, fin),
                            _ => reference::rotate(width, name, a, count, fin),
                        };
                        let got = insn::shift(op, width, a, count, fin);
                        fam.case(report, [a, u64::from(count), fin], got, want);
                    }
                }
            }
            fam.finish(report);
        }
    }
}

fn multiply(report: &mut Report) {
    let ops = operands();
    for (name, signed) in [("mul", false), ("imul1", true)] {
        for width in WIDTHS {
            let mut fam = Family::new(name, width);
            for &a in &ops {
                for &b in &ops {
                    for fin in FLAGS_IN {
                        let (a, b) = (a & mask(width), b & mask(width));
                        let (hi, lo, want) = reference::widening_mul(width, signed, a, b, fin);
                        let (ghi, glo, flags) = insn::widening_mul(signed, width, a, b, fin);
                        // Result compared: both halves, folded into one value.
                        let fold = |h: u64, l: u64| h.rotate_left(32) ^ l;
                        let want = Outcome {
                            result: fold(hi, lo),
                            ..want
                        };
                        fam.case(report, [a, b, fin], (fold(ghi, glo), flags), want);
                    }
                }
            }
            fam.finish(report);
        }
    }
    for width in [16, 32, 64] {
        let mut fam = Family::new("imul2", width);
        for &a in &ops {
            for &b in &ops {
                for fin in FLAGS_IN {
                    let (a, b) = (a & mask(width), b & mask(width));
                    let want = reference::imul2(width, a, b, fin);
                    fam.case(
                        report,
                        [a, b, fin],
                        insn::binary(Bin::Imul2, width, a, b, fin),
                        want,
                    );
                }
            }
        }
        fam.finish(report);
    }
}

fn divide(report: &mut Report) {
    let ops = operands();
    for (name, signed) in [("div", false), ("idiv", true)] {
        for width in WIDTHS {
            let mut fam = Family::new(name, width);
            for hi in [0, 1, u64::MAX] {
                for &lo in &ops {
                    for &divisor in &ops {
                        let (hi, lo, divisor) =
                            (hi & mask(width), lo & mask(width), divisor & mask(width));
                        let mut d = Division {
                            signed,
                            width,
                            hi,
                            lo,
                            divisor,
                            ..Division::default()
                        };
                        // SAFETY: `divide` reads and writes only `d`.
                        let trap =
                            unsafe { cputests::trap::probe(insn::divide, &raw mut d as u64) };
                        let got = match trap {
                            Some(t) => {
                                fam.traps += 1;
                                (u64::MAX, t.vector)
                            }
                            None => (d.quotient, d.remainder),
                        };
                        // #DE is vector 0.
                        let want = reference::divide(width, signed, hi, lo, divisor)
                            .unwrap_or((u64::MAX, 0));
                        // The remainder travels in the flags slot, with every bit "defined".
                        let want = Outcome {
                            result: want.0,
                            flags: want.1,
                            defined: u64::MAX,
                        };
                        fam.case(report, [hi, lo, divisor], got, want);
                    }
                }
            }
            fam.finish(report);
        }
    }
}

fn bits(report: &mut Report) {
    let ops = operands();
    let offsets = [0u64, 1, 5, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 100, 255];
    let families: [(&str, Bin); 4] = [
        ("bt", Bin::Bt),
        ("bts", Bin::Bts),
        ("btr", Bin::Btr),
        ("btc", Bin::Btc),
    ];
    for (name, op) in families {
        for width in [16, 32, 64] {
            let mut fam = Family::new(name, width);
            for &a in &ops {
                for &offset in &offsets {
                    for fin in FLAGS_IN {
                        let a = a & mask(width);
                        let want = reference::bit_test(width, name, a, offset, fin);
                        fam.case(
                            report,
                            [a, offset, fin],
                            insn::binary(op, width, a, offset, fin),
                            want,
                        );
                    }
                }
            }
            fam.finish(report);
        }
    }
    for (name, op, forward) in [("bsf", Bin::Bsf, true), ("bsr", Bin::Bsr, false)] {
        for width in [16, 32, 64] {
            let mut fam = Family::new(name, width);
            for &src in &ops {
                for fin in FLAGS_IN {
                    let src = src & mask(width);
                    let (index, want) = reference::bit_scan(width, forward, src, fin);
                    let (r, flags) =
                        insn::binary(op, width, 0x5A5A_5A5A_5A5A_5A5A & mask(width), src, fin);
                    // For a zero source the destination is undefined: neither compared nor hashed.
                    let r = if index.is_some() { r } else { 0 };
                    fam.case(report, [src, 0, fin], (r, flags), want);
                }
            }
            fam.finish(report);
        }
    }

    // BTS with a memory bit string: the register offset is signed and selects a quadword
    // anywhere around the operand (SDM Vol. 2A "BT", Table 3-2 note).
    let mut fam = Family::new("bts-mem", 64);
    let mut buffer = [0u64; 16];
    let base = buffer.as_mut_ptr().wrapping_add(8);
    for (i, offset) in (-512i64..512).step_by(37).enumerate() {
        let fin = FLAGS_IN[i % 2];
        let word = 8 + offset.div_euclid(64);
        let bit = offset.rem_euclid(64);
        let before = buffer[word as usize];
        // SAFETY: offsets -512..512 bits from element 8 stay inside the 16-quadword buffer.
        let flags = unsafe { insn::bts_mem(base, offset, fin) };
        let after = buffer[word as usize];
        let was = before >> bit & 1 != 0;
        let want = Outcome {
            result: before | 1 << bit,
            flags: (fin & !CF) | if was { CF } else { 0 },
            defined: CF | ZF,
        };
        fam.case(report, [offset as u64, before, fin], (after, flags), want);
    }
    let mut second = Family::new("bts-mem-again", 64);
    // A second pass over the same offsets finds every bit set.
    for (i, offset) in (-512i64..512).step_by(37).enumerate() {
        let fin = FLAGS_IN[i % 2];
        // SAFETY: as above.
        let flags = unsafe { insn::bts_mem(base, offset, fin) };
        let want = Outcome {
            result: 0,
            flags: fin | CF,
            defined: CF | ZF,
        };
        second.case(report, [offset as u64, 0, fin], (0, flags), want);
    }
    fam.finish(report);
    second.finish(report);
}

fn conditions(report: &mut Report) {
    let mut set = Family::new("setcc", 8);
    let mut cmov = Family::new("cmovcc", 32);
    for cc in 0..16u8 {
        for combo in 0..32u64 {
            // Every combination of the five flags the conditions read.
            let fin = 0x2
                | if combo & 1 != 0 { CF } else { 0 }
                | if combo & 2 != 0 { PF } else { 0 }
                | if combo & 4 != 0 { ZF } else { 0 }
                | if combo & 8 != 0 { SF } else { 0 }
                | if combo & 16 != 0 { OF } else { 0 };
            let holds = reference::condition(cc, fin);
            let want = Outcome {
                result: u64::from(holds),
                flags: 0,
                defined: 0,
            };
            set.case(
                report,
                [u64::from(cc), fin, 0],
                (u64::from(insn::setcc(cc, fin)), 0),
                want,
            );
            // The 32-bit CMOV writes (zero-extends) its destination even when the condition is
            // false (SDM Vol. 2A "CMOVcc").
            let dst = 0xFFFF_FFFF_1111_1111;
            let src = 0x2222_2222_3333_3333;
            let result = if holds { 0x3333_3333 } else { 0x1111_1111 };
            let want = Outcome {
                result,
                flags: 0,
                defined: 0,
            };
            cmov.case(
                report,
                [u64::from(cc), fin, 0],
                (insn::cmovcc(cc, fin, dst, src), 0),
                want,
            );
        }
    }
    set.finish(report);
    cmov.finish(report);
}

/// Buffers of the string tests: a source pattern and a destination.
struct Buffers {
    src: [u8; 256],
    dst: [u8; 256],
}

impl Buffers {
    fn new() -> Buffers {
        let mut b = Buffers {
            src: [0; 256],
            dst: [0xEE; 256],
        };
        for (i, byte) in b.src.iter_mut().enumerate() {
            *byte = (i as u8).wrapping_mul(7).wrapping_add(3);
        }
        b
    }
}

fn strings(report: &mut Report) {
    let mut fam = Family::new("string", 64);
    for down in [false, true] {
        let dir: i64 = if down { -1 } else { 1 };
        // (instruction, element size in bytes, RCX); every case starts at offset 128.
        let cases: [(Str, i64, u64); 9] = [
            (Str::RepMovsb, 1, 37),
            (Str::RepMovsq, 8, 9),
            (Str::RepStosw, 2, 21),
            (Str::RepStosd, 4, 0),
            (Str::Lodsb, 1, 5),
            (Str::RepeCmpsb, 1, 40),
            (Str::RepneCmpsw, 2, 30),
            (Str::RepneScasb, 1, 100),
            (Str::RepeScasd, 4, 12),
        ];
        for (op, size, count) in cases {
            let mut b = Buffers::new();
            // Make the compares stop somewhere inside: a mismatch 17 elements in for REPE, a
            // match 13 elements in for REPNE.
            let start: i64 = 128;
            let at = |n: i64| (start + dir * n * size) as usize;
            b.dst[..].copy_from_slice(&b.src);
            match op {
                Str::RepeCmpsb => b.dst[at(17)] ^= 0x40,
                Str::RepneCmpsw => {
                    for n in 0..count as i64 {
                        b.dst[at(n)] ^= 0x01;
                    }
                    b.dst[at(13)] = b.src[at(13)];
                }
                Str::RepeScasd => {
                    for n in 0..count as i64 {
                        b.dst[at(n)..at(n) + 4].copy_from_slice(&0x5151_5151u32.to_le_bytes());
                    }
                    b.dst[at(7)] = 0;
                }
                // The source pattern has no repeated byte: the scan stops at element 13.
                Str::RepneScasb => {}
                _ => b.dst.fill(0xEE),
            }
            let rax: u64 = match op {
                Str::RepneScasb => u64::from(b.dst[at(13)]),
                Str::RepeScasd => 0x5151_5151,
                _ => 0x1122_3344_5566_7788,
            };
            let (si0, di0) = (
                b.src.as_ptr() as u64 + start as u64,
                b.dst.as_mut_ptr() as u64 + start as u64,
            );
            let expected = expected_string(op, &b, start, dir, size, count, rax);
            // SAFETY: at most `count` (≤ 100) elements of ≤ 8 bytes from offset 128 in either
            // direction: inside both 256-byte buffers.
            let got = unsafe { insn::string(op, down, si0, di0, count, rax) };
            let mut h = Fnv::default();
            h.bytes(&b.dst);
            let got_all = [
                got.rsi.wrapping_sub(si0),
                got.rdi.wrapping_sub(di0),
                got.rcx,
                got.rax,
                got.flags & STATUS,
                h.0,
            ];
            for (g, w) in got_all.iter().zip(expected) {
                fam.case(
                    report,
                    [op as u64, u64::from(down), count],
                    (*g, 0),
                    Outcome {
                        result: w,
                        flags: 0,
                        defined: 0,
                    },
                );
            }
        }
    }
    fam.finish(report);
}

/// What a string instruction leaves by the SDM's "Operation" loops: RSI and RDI relative to
/// their start, RCX, RAX, the status flags (CMPS/SCAS: those of the last comparison; the others
/// affect none, so they stay clear) and the hash of the destination buffer.
fn expected_string(
    op: Str,
    b: &Buffers,
    start: i64,
    dir: i64,
    size: i64,
    count: u64,
    rax: u64,
) -> [u64; 6] {
    let mut dst = b.dst;
    let read = |buf: &[u8; 256], off: i64| -> u64 {
        let mut v = 0u64;
        for i in 0..size {
            v |= u64::from(buf[(off + i) as usize]) << (8 * i);
        }
        v
    };
    let mut si = 0i64;
    let mut di = 0i64;
    let mut cx = count;
    let mut ax = rax;
    let mut flags = 0x2u64;
    let width = (size * 8) as u32;
    let step = dir * size;
    match op {
        Str::RepMovsb | Str::RepMovsq | Str::RepStosw | Str::RepStosd => {
            while cx != 0 {
                for i in 0..size {
                    let byte = if matches!(op, Str::RepMovsb | Str::RepMovsq) {
                        b.src[(start + si + i) as usize]
                    } else {
                        (rax >> (8 * i)) as u8
                    };
                    dst[(start + di + i) as usize] = byte;
                }
                if matches!(op, Str::RepMovsb | Str::RepMovsq) {
                    si += step;
                }
                di += step;
                cx -= 1;
            }
        }
        Str::Lodsb => {
            ax = (rax & !0xFF) | read(&b.src, start);
            si += step;
        }
        Str::RepeCmpsb | Str::RepneCmpsw => {
            let repe = op == Str::RepeCmpsb;
            while cx != 0 {
                let o = reference::sub(
                    width,
                    read(&b.src, start + si),
                    read(&b.dst, start + di),
                    false,
                    0x2,
                );
                flags = o.flags;
                si += step;
                di += step;
                cx -= 1;
                if (flags & ZF != 0) != repe {
                    break;
                }
            }
        }
        Str::RepneScasb | Str::RepeScasd => {
            let repe = op == Str::RepeScasd;
            while cx != 0 {
                let o = reference::sub(
                    width,
                    rax & mask(width),
                    read(&b.dst, start + di),
                    false,
                    0x2,
                );
                flags = o.flags;
                di += step;
                cx -= 1;
                if (flags & ZF != 0) != repe {
                    break;
                }
            }
        }
    }
    let mut h = Fnv::default();
    h.bytes(&dst);
    [si as u64, di as u64, cx, ax, flags & STATUS, h.0]
}

fn atomics(report: &mut Report) {
    let ops = operands();
    for (name, op) in [
        ("lock-cmpxchg", Atomic::Cmpxchg),
        ("lock-xadd", Atomic::Xadd),
        ("xchg", Atomic::Xchg),
    ] {
        for width in WIDTHS {
            let mut fam = Family::new(name, width);
            for &m in &ops[4..16] {
                for &s in &ops[4..16] {
                    for fin in FLAGS_IN {
                        let (m, s) = (m & mask(width), s & mask(width));
                        // CMPXCHG: the accumulator equals the memory operand in half the cases.
                        let acc = if (m ^ s) & 1 == 0 { m } else { s };
                        let (mem, src, accum, flags) = insn::atomic(op, width, m, s, acc, fin);
                        let (want_mem, want_src, want_acc, want) = match op {
                            Atomic::Cmpxchg => {
                                let o = reference::sub(width, acc, m, false, fin);
                                if acc == m {
                                    (s, s, acc, o)
                                } else {
                                    (m, s, m, o)
                                }
                            }
                            Atomic::Xadd => {
                                let o = reference::add(width, m, s, false, fin);
                                (o.result, m, acc, o)
                            }
                            Atomic::Xchg => (
                                s,
                                m,
                                acc,
                                Outcome {
                                    result: 0,
                                    flags: fin,
                                    defined: STATUS,
                                },
                            ),
                        };
                        let fold =
                            |a: u64, b: u64, c: u64| a ^ b.rotate_left(21) ^ c.rotate_left(42);
                        let want = Outcome {
                            result: fold(want_mem, want_src, want_acc),
                            ..want
                        };
                        fam.case(report, [m, s, fin], (fold(mem, src, accum), flags), want);
                    }
                }
            }
            fam.finish(report);
        }
    }
}

/// A few golden cases straight from the SDM's examples, independent of [`reference`].
fn golden(report: &mut Report) {
    // 0x7F + 1 = 0x80: signed overflow, sign, auxiliary carry, odd parity (0x80 has one bit).
    let (r, f) = insn::binary(Bin::Add, 8, 0x7F, 1, 0x2);
    report.expect_eq(format_args!("add 0x7f+1 result"), r, 0x80);
    report.expect_eq(
        format_args!("add 0x7f+1 flags"),
        f & STATUS,
        OF | SF | reference::AF,
    );
    // 0 - 1 = 0xFF..: borrow, sign, auxiliary borrow, even parity (0xFF has eight bits).
    let (r, f) = insn::binary(Bin::Sub, 32, 0, 1, 0x2);
    report.expect_eq(format_args!("sub 0-1 result"), r, 0xFFFF_FFFF);
    report.expect_eq(
        format_args!("sub 0-1 flags"),
        f & STATUS,
        CF | SF | reference::AF | PF,
    );
    // -128 / -1 overflows IDIV r/m8: #DE.
    let mut d = Division {
        signed: true,
        width: 8,
        hi: 0xFF,
        lo: 0x80,
        divisor: 0xFF,
        ..Division::default()
    };
    // SAFETY: `divide` reads and writes only `d`.
    let trap = unsafe { cputests::trap::probe(insn::divide, &raw mut d as u64) };
    report.expect_eq(
        format_args!("idiv -128/-1 vector"),
        trap.map_or(u64::MAX, |t| t.vector),
        0,
    );
    let signed = sext(0xFFF6, 16);
    report.check(format_args!("sext"), signed == -10);
    out!(report, "golden: add 0x7f+1, sub 0-1, idiv -128/-1 -> #DE");
}

#[unsafe(no_mangle)]
fn kernel_main(_boot: &'static BootInfo) -> ! {
    cputests::init();
    let mut report = Report::new("cpu-alu");
    golden(&mut report);
    arithmetic(&mut report);
    one_operand(&mut report);
    immediates(&mut report);
    shifts(&mut report);
    multiply(&mut report);
    divide(&mut report);
    bits(&mut report);
    conditions(&mut report);
    strings(&mut report);
    atomics(&mut report);
    report.finish()
}
