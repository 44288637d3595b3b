//! Every instruction cpu-alu measures, one thin wrapper per form: the wrapper loads RFLAGS with
//! a chosen value (POPFQ), runs the instruction on register or memory operands of the chosen
//! width, and returns the result with RFLAGS as PUSHFQ saw it right after. The only file of
//! this program with inline assembly.

use core::arch::asm;

/// A two-operand instruction `op dst, src` on registers of `$w` bits: (result, RFLAGS).
macro_rules! binary {
    ($insn:literal, $w:expr, $a:expr, $b:expr, $fin:expr) => {{
        let (a, b, fin): (u64, u64, u64) = ($a, $b, $fin);
        let flags: u64;
        let r: u64;
        match $w {
            8 => {
                let mut x = a as u8;
                // SAFETY: register-only arithmetic; POPFQ loads status flags with IF, TF clear.
                unsafe {
                    asm!("push {fin}", "popfq", concat!($insn, " {x}, {y}"), "pushfq", "pop {f}",
                         x = inout(reg_byte) x, y = in(reg_byte) b as u8, fin = in(reg) fin,
                         f = lateout(reg) flags)
                };
                r = u64::from(x);
            }
            16 => {
                let mut x = a as u16;
                // SAFETY: as above.
                unsafe {
                    asm!("push {fin}", "popfq", concat!($insn, " {x:x}, {y:x}"), "pushfq", "pop {f}",
                         x = inout(reg) x, y = in(reg) b as u16, fin = in(reg) fin,
                         f = lateout(reg) flags)
                };
                r = u64::from(x);
            }
            32 => {
                let mut x = a as u32;
                // SAFETY: as above.
                unsafe {
                    asm!("push {fin}", "popfq", concat!($insn, " {x:e}, {y:e}"), "pushfq", "pop {f}",
                         x = inout(reg) x, y = in(reg) b as u32, fin = in(reg) fin,
                         f = lateout(reg) flags)
                };
                r = u64::from(x);
            }
            _ => {
                let mut x = a;
                // SAFETY: as above.
                unsafe {
                    asm!("push {fin}", "popfq", concat!($insn, " {x:r}, {y:r}"), "pushfq", "pop {f}",
                         x = inout(reg) x, y = in(reg) b, fin = in(reg) fin,
                         f = lateout(reg) flags)
                };
                r = x;
            }
        }
        (r, flags)
    }};
}

/// A one-operand instruction `op dst` on a register of `$w` bits: (result, RFLAGS).
macro_rules! unary {
    ($insn:literal, $w:expr, $a:expr, $fin:expr) => {{
        let (a, fin): (u64, u64) = ($a, $fin);
        let flags: u64;
        let r: u64;
        match $w {
            8 => {
                let mut x = a as u8;
                // SAFETY: register-only arithmetic; POPFQ loads status flags with IF, TF clear.
                unsafe {
                    asm!("push {fin}", "popfq", concat!($insn, " {x}"), "pushfq", "pop {f}",
                         x = inout(reg_byte) x, fin = in(reg) fin, f = lateout(reg) flags)
                };
                r = u64::from(x);
            }
            16 => {
                let mut x = a as u16;
                // SAFETY: as above.
                unsafe {
                    asm!("push {fin}", "popfq", concat!($insn, " {x:x}"), "pushfq", "pop {f}",
                         x = inout(reg) x, fin = in(reg) fin, f = lateout(reg) flags)
                };
                r = u64::from(x);
            }
            32 => {
                let mut x = a as u32;
                // SAFETY: as above.
                unsafe {
                    asm!("push {fin}", "popfq", concat!($insn, " {x:e}"), "pushfq", "pop {f}",
                         x = inout(reg) x, fin = in(reg) fin, f = lateout(reg) flags)
                };
                r = u64::from(x);
            }
            _ => {
                let mut x = a;
                // SAFETY: as above.
                unsafe {
                    asm!("push {fin}", "popfq", concat!($insn, " {x:r}"), "pushfq", "pop {f}",
                         x = inout(reg) x, fin = in(reg) fin, f = lateout(reg) flags)
                };
                r = x;
            }
        }
        (r, flags)
    }};
}

/// A shift or rotate `op dst, cl` on a register of `$w` bits: (result, RFLAGS).
macro_rules! shift {
    ($insn:literal, $w:expr, $a:expr, $count:expr, $fin:expr) => {{
        let (a, count, fin): (u64, u8, u64) = ($a, $count, $fin);
        let flags: u64;
        let r: u64;
        match $w {
            8 => {
                let mut x = a as u8;
                // SAFETY: register-only arithmetic; POPFQ loads status flags with IF, TF clear.
                unsafe {
                    asm!("push {fin}", "popfq", concat!($insn, " {x}, cl"), "pushfq", "pop {f}",
                         x = inout(reg_byte) x, in("cl") count, fin = in(reg) fin,
                         f = lateout(reg) flags)
                };
                r = u64::from(x);
            }
            16 => {
                let mut x = a as u16;
                // SAFETY: as above.
                unsafe {
                    asm!("push {fin}", "popfq", concat!($insn, " {x:x}, cl"), "pushfq", "pop {f}",
                         x = inout(reg) x, in("cl") count, fin = in(reg) fin,
                         f = lateout(reg) flags)
                };
                r = u64::from(x);
            }
            32 => {
                let mut x = a as u32;
                // SAFETY: as above.
                unsafe {
                    asm!("push {fin}", "popfq", concat!($insn, " {x:e}, cl"), "pushfq", "pop {f}",
                         x = inout(reg) x, in("cl") count, fin = in(reg) fin,
                         f = lateout(reg) flags)
                };
                r = u64::from(x);
            }
            _ => {
                let mut x = a;
                // SAFETY: as above.
                unsafe {
                    asm!("push {fin}", "popfq", concat!($insn, " {x:r}, cl"), "pushfq", "pop {f}",
                         x = inout(reg) x, in("cl") count, fin = in(reg) fin,
                         f = lateout(reg) flags)
                };
                r = x;
            }
        }
        (r, flags)
    }};
}

/// An instruction with an immediate operand, `op dst, imm`: the 80/81/83 forms of the ALU
/// operations, C0/C1 (shift count) and D0/D1 (count 1).
macro_rules! with_imm {
    ($insn:literal, $imm:literal, $w:expr, $a:expr, $fin:expr) => {{
        let (a, fin): (u64, u64) = ($a, $fin);
        let flags: u64;
        let r: u64;
        match $w {
            8 => {
                let mut x = a as u8;
                // SAFETY: register-only arithmetic; POPFQ loads status flags with IF, TF clear.
                unsafe {
                    asm!("push {fin}", "popfq", concat!($insn, " {x}, ", $imm), "pushfq", "pop {f}",
                         x = inout(reg_byte) x, fin = in(reg) fin, f = lateout(reg) flags)
                };
                r = u64::from(x);
            }
            16 => {
                let mut x = a as u16;
                // SAFETY: as above.
                unsafe {
                    asm!("push {fin}", "popfq", concat!($insn, " {x:x}, ", $imm), "pushfq", "pop {f}",
                         x = inout(reg) x, fin = in(reg) fin, f = lateout(reg) flags)
                };
                r = u64::from(x);
            }
            32 => {
                let mut x = a as u32;
                // SAFETY: as above.
                unsafe {
                    asm!("push {fin}", "popfq", concat!($insn, " {x:e}, ", $imm), "pushfq", "pop {f}",
                         x = inout(reg) x, fin = in(reg) fin, f = lateout(reg) flags)
                };
                r = u64::from(x);
            }
            _ => {
                let mut x = a;
                // SAFETY: as above.
                unsafe {
                    asm!("push {fin}", "popfq", concat!($insn, " {x:r}, ", $imm), "pushfq", "pop {f}",
                         x = inout(reg) x, fin = in(reg) fin, f = lateout(reg) flags)
                };
                r = x;
            }
        }
        (r, flags)
    }};
}

/// Two-operand ALU instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bin {
    Add,
    Adc,
    Sub,
    Sbb,
    Cmp,
    And,
    Or,
    Xor,
    Test,
    /// IMUL r, r/m (two-operand form, 16/32/64 bits).
    Imul2,
    Bt,
    Bts,
    Btr,
    Btc,
    /// BSF/BSR: the destination starts as the first operand (kept by AMD and QEMU, undefined
    /// per the SDM when the source is 0).
    Bsf,
    Bsr,
}

/// `op a, b` of `width` bits with RFLAGS = `fin` before: (result, RFLAGS after).
pub fn binary(op: Bin, width: u32, a: u64, b: u64, fin: u64) -> (u64, u64) {
    match op {
        Bin::Add => binary!("add", width, a, b, fin),
        Bin::Adc => binary!("adc", width, a, b, fin),
        Bin::Sub => binary!("sub", width, a, b, fin),
        Bin::Sbb => binary!("sbb", width, a, b, fin),
        Bin::Cmp => binary!("cmp", width, a, b, fin),
        Bin::And => binary!("and", width, a, b, fin),
        Bin::Or => binary!("or", width, a, b, fin),
        Bin::Xor => binary!("xor", width, a, b, fin),
        Bin::Test => binary!("test", width, a, b, fin),
        // No 8-bit register forms of these: the callers use 16, 32 and 64.
        Bin::Imul2 => binary!("imul", width.max(16), a, b, fin),
        Bin::Bt => binary!("bt", width.max(16), a, b, fin),
        Bin::Bts => binary!("bts", width.max(16), a, b, fin),
        Bin::Btr => binary!("btr", width.max(16), a, b, fin),
        Bin::Btc => binary!("btc", width.max(16), a, b, fin),
        Bin::Bsf => binary!("bsf", width.max(16), a, b, fin),
        Bin::Bsr => binary!("bsr", width.max(16), a, b, fin),
    }
}

/// One-operand ALU instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Un {
    Neg,
    Not,
    Inc,
    Dec,
    /// SHL r/m, 1 (opcode D0/D1 /4): the single-bit form without a count operand.
    Shl1,
    /// SAR r/m, 1 (D0/D1 /7).
    Sar1,
    /// BSWAP (32 and 64 bits).
    Bswap,
}

/// `op a` of `width` bits with RFLAGS = `fin` before: (result, RFLAGS after).
pub fn unary(op: Un, width: u32, a: u64, fin: u64) -> (u64, u64) {
    match op {
        Un::Neg => unary!("neg", width, a, fin),
        Un::Not => unary!("not", width, a, fin),
        Un::Inc => unary!("inc", width, a, fin),
        Un::Dec => unary!("dec", width, a, fin),
        Un::Shl1 => with_imm!("shl", "1", width, a, fin),
        Un::Sar1 => with_imm!("sar", "1", width, a, fin),
        Un::Bswap => unary!("bswap", width.max(32), a, fin),
    }
}

/// Instructions with an immediate operand: the immediate is part of the encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imm {
    /// ADD r/m, 0x7F (83 /0 ib for 16/32/64 bits, 80 /0 ib for 8).
    AddPositive8,
    /// ADD r/m, -128: imm8 sign-extended to the operand size.
    AddNegative8,
    /// CMP r/m, -1.
    CmpMinusOne,
    /// AND r/m, -2.
    AndMinusTwo,
    /// SUB r/m, -0x1234 (81 /5 iw/id; sign-extended to 64 bits): 16 bits and wider.
    SubNegative32,
    /// XOR r/m, 0x5A5A (81 /6): 16 bits and wider.
    XorPositive32,
    /// SHL r/m, 5 (C0/C1 /4 ib).
    Shl5,
    /// SAR r/m, 31.
    Sar31,
    /// ROL r/m, 9.
    Rol9,
    /// RCR r/m, 3.
    Rcr3,
}

impl Imm {
    /// Every form.
    pub const ALL: [Imm; 10] = [
        Imm::AddPositive8,
        Imm::AddNegative8,
        Imm::CmpMinusOne,
        Imm::AndMinusTwo,
        Imm::SubNegative32,
        Imm::XorPositive32,
        Imm::Shl5,
        Imm::Sar31,
        Imm::Rol9,
        Imm::Rcr3,
    ];

    /// The immediate as the instruction states it (before sign extension).
    pub fn value(self) -> i64 {
        match self {
            Imm::AddPositive8 => 0x7F,
            Imm::AddNegative8 => -128,
            Imm::CmpMinusOne => -1,
            Imm::AndMinusTwo => -2,
            Imm::SubNegative32 => -0x1234,
            Imm::XorPositive32 => 0x5A5A,
            Imm::Shl5 => 5,
            Imm::Sar31 => 31,
            Imm::Rol9 => 9,
            Imm::Rcr3 => 3,
        }
    }

    /// Whether the form needs an operand of at least 16 bits (its immediate does not fit 8).
    pub fn wide_only(self) -> bool {
        matches!(self, Imm::SubNegative32 | Imm::XorPositive32)
    }
}

/// `op a, imm` of `width` bits with RFLAGS = `fin` before: (result, RFLAGS after).
pub fn immediate(form: Imm, width: u32, a: u64, fin: u64) -> (u64, u64) {
    match form {
        Imm::AddPositive8 => with_imm!("add", "0x7f", width, a, fin),
        Imm::AddNegative8 => with_imm!("add", "-128", width, a, fin),
        Imm::CmpMinusOne => with_imm!("cmp", "-1", width, a, fin),
        Imm::AndMinusTwo => with_imm!("and", "-2", width, a, fin),
        Imm::SubNegative32 => with_imm!("sub", "-0x1234", width.max(16), a, fin),
        Imm::XorPositive32 => with_imm!("xor", "0x5a5a", width.max(16), a, fin),
        Imm::Shl5 => with_imm!("shl", "5", width, a, fin),
        Imm::Sar31 => with_imm!("sar", "31", width, a, fin),
        Imm::Rol9 => with_imm!("rol", "9", width, a, fin),
        Imm::Rcr3 => with_imm!("rcr", "3", width, a, fin),
    }
}

/// Shifts and rotates by CL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sh {
    Shl,
    Shr,
    Sar,
    Rol,
    Ror,
    Rcl,
    Rcr,
}

/// `op a, cl` of `width` bits with RFLAGS = `fin` before: (result, RFLAGS after).
pub fn shift(op: Sh, width: u32, a: u64, count: u8, fin: u64) -> (u64, u64) {
    match op {
        Sh::Shl => shift!("shl", width, a, count, fin),
        Sh::Shr => shift!("shr", width, a, count, fin),
        Sh::Sar => shift!("sar", width, a, count, fin),
        Sh::Rol => shift!("rol", width, a, count, fin),
        Sh::Ror => shift!("ror", width, a, count, fin),
        Sh::Rcl => shift!("rcl", width, a, count, fin),
        Sh::Rcr => shift!("rcr", width, a, count, fin),
    }
}

/// One-operand MUL or IMUL of `width` bits: the double-width product as (high, low) and RFLAGS.
/// For 8 bits the product is AX: (AH, AL).
pub fn widening_mul(signed: bool, width: u32, a: u64, b: u64, fin: u64) -> (u64, u64, u64) {
    let (mut lo, mut hi): (u64, u64) = (a, 0);
    let flags: u64;
    macro_rules! run {
        ($insn:literal, $operand:literal, $cls:ident, $ty:ty) => {
            // SAFETY: register-only arithmetic on RAX/RDX; POPFQ as in the other wrappers.
            unsafe {
                asm!("push {fin}", "popfq", concat!($insn, " ", $operand), "pushfq", "pop {f}",
                     y = in($cls) b as $ty, fin = in(reg) fin, f = lateout(reg) flags,
                     inout("rax") lo, inout("rdx") hi)
            }
        };
    }
    match (signed, width) {
        (false, 8) => run!("mul", "{y}", reg_byte, u8),
        (true, 8) => run!("imul", "{y}", reg_byte, u8),
        (false, 16) => run!("mul", "{y:x}", reg, u16),
        (true, 16) => run!("imul", "{y:x}", reg, u16),
        (false, 32) => run!("mul", "{y:e}", reg, u32),
        (true, 32) => run!("imul", "{y:e}", reg, u32),
        (false, _) => run!("mul", "{y:r}", reg, u64),
        (true, _) => run!("imul", "{y:r}", reg, u64),
    }
    match width {
        8 => ((lo >> 8) & 0xFF, lo & 0xFF, flags),
        16 => (hi & 0xFFFF, lo & 0xFFFF, flags),
        32 => (hi & 0xFFFF_FFFF, lo & 0xFFFF_FFFF, flags),
        _ => (hi, lo, flags),
    }
}

/// Operands and results of a DIV or IDIV, in memory so that the probe can run it.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct Division {
    pub signed: bool,
    pub width: u32,
    /// The dividend's high half (AH / DX / EDX / RDX) and low half (AL / AX / EAX / RAX).
    pub hi: u64,
    pub lo: u64,
    pub divisor: u64,
    pub quotient: u64,
    pub remainder: u64,
}

/// Runs the division described by the [`Division`] at `arg`; #DE interrupts it.
///
/// # Safety
/// `arg` must point at a live, exclusive `Division`.
pub unsafe extern "C" fn divide(arg: u64) {
    // SAFETY: the caller passes a valid pointer.
    let d = unsafe { &mut *(arg as *mut Division) };
    let (mut lo, mut hi) = (d.lo, d.hi);
    let b = d.divisor;
    macro_rules! run {
        ($insn:literal, $operand:literal, $cls:ident, $ty:ty) => {
            // SAFETY: register-only division on RAX/RDX; a #DE is caught by the probe.
            unsafe {
                asm!(concat!($insn, " ", $operand), y = in($cls) b as $ty,
                     inout("rax") lo, inout("rdx") hi, options(nomem, nostack))
            }
        };
    }
    macro_rules! run8 {
        ($insn:literal) => {
            // SAFETY: register-only division of AX; a #DE is caught by the probe.
            unsafe {
                asm!(concat!($insn, " {y}"), y = in(reg_byte) b as u8, inout("rax") lo,
                     options(nomem, nostack))
            }
        };
    }
    match (d.signed, d.width) {
        (signed, 8) => {
            lo = (lo & 0xFF) | ((hi & 0xFF) << 8);
            if signed {
                run8!("idiv");
            } else {
                run8!("div");
            }
            hi = lo >> 8;
        }
        (false, 16) => run!("div", "{y:x}", reg, u16),
        (true, 16) => run!("idiv", "{y:x}", reg, u16),
        (false, 32) => run!("div", "{y:e}", reg, u32),
        (true, 32) => run!("idiv", "{y:e}", reg, u32),
        (false, _) => run!("div", "{y:r}", reg, u64),
        (true, _) => run!("idiv", "{y:r}", reg, u64),
    }
    let mask = if d.width == 64 {
        u64::MAX
    } else {
        (1 << d.width) - 1
    };
    d.quotient = lo & mask;
    d.remainder = hi & mask;
}

/// SETcc for condition `cc` (0 = O … 15 = G, the low nibble of the opcode) with RFLAGS = `fin`.
pub fn setcc(cc: u8, fin: u64) -> u8 {
    let r: u8;
    macro_rules! run {
        ($insn:literal) => {
            // SAFETY: POPFQ and SETcc on a register.
            unsafe {
                asm!("push {fin}", "popfq", concat!($insn, " {r}"), fin = in(reg) fin,
                     r = lateout(reg_byte) r)
            }
        };
    }
    match cc {
        0 => run!("seto"),
        1 => run!("setno"),
        2 => run!("setb"),
        3 => run!("setae"),
        4 => run!("sete"),
        5 => run!("setne"),
        6 => run!("setbe"),
        7 => run!("seta"),
        8 => run!("sets"),
        9 => run!("setns"),
        10 => run!("setp"),
        11 => run!("setnp"),
        12 => run!("setl"),
        13 => run!("setge"),
        14 => run!("setle"),
        _ => run!("setg"),
    }
    r
}

/// CMOVcc (32-bit form, which zero-extends even when the move does not happen) for condition
/// `cc` with RFLAGS = `fin`: the destination starts as `dst`, the source is `src`.
pub fn cmovcc(cc: u8, fin: u64, dst: u64, src: u64) -> u64 {
    let mut r = dst;
    macro_rules! run {
        ($insn:literal) => {
            // SAFETY: POPFQ and a register-to-register CMOVcc.
            unsafe {
                asm!("push {fin}", "popfq", concat!($insn, " {r:e}, {s:e}"), fin = in(reg) fin,
                     r = inout(reg) r, s = in(reg) src)
            }
        };
    }
    match cc {
        0 => run!("cmovo"),
        1 => run!("cmovno"),
        2 => run!("cmovb"),
        3 => run!("cmovae"),
        4 => run!("cmove"),
        5 => run!("cmovne"),
        6 => run!("cmovbe"),
        7 => run!("cmova"),
        8 => run!("cmovs"),
        9 => run!("cmovns"),
        10 => run!("cmovp"),
        11 => run!("cmovnp"),
        12 => run!("cmovl"),
        13 => run!("cmovge"),
        14 => run!("cmovle"),
        _ => run!("cmovg"),
    }
    r
}

/// Registers after a string instruction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StringRegs {
    pub rsi: u64,
    pub rdi: u64,
    pub rcx: u64,
    pub rax: u64,
    pub flags: u64,
}

/// String instructions, each with its repeat prefix and element size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Str {
    RepMovsb,
    RepMovsq,
    RepStosw,
    RepStosd,
    Lodsb,
    RepeCmpsb,
    RepneCmpsw,
    RepneScasb,
    RepeScasd,
}

/// Runs `op` with RSI, RDI, RCX, RAX as given and DF = `down`; status flags cleared before.
///
/// # Safety
/// The ranges the instruction walks (RCX elements from RSI and/or RDI, in the direction DF
/// says) must be valid memory, the destination writable.
pub unsafe fn string(op: Str, down: bool, rsi: u64, rdi: u64, rcx: u64, rax: u64) -> StringRegs {
    let (mut si, mut di, mut cx, mut ax) = (rsi, rdi, rcx, rax);
    let flags: u64;
    let fin: u64 = if down { 0x402 } else { 0x2 };
    macro_rules! run {
        ($insn:literal) => {
            // SAFETY: the caller guarantees the walked memory; DF is cleared again afterwards, as
            // the ABI requires.
            unsafe {
                asm!("push {fin}", "popfq", $insn, "pushfq", "pop {f}", "cld",
                     fin = in(reg) fin, f = lateout(reg) flags,
                     inout("rsi") si, inout("rdi") di, inout("rcx") cx, inout("rax") ax)
            }
        };
    }
    match op {
        Str::RepMovsb => run!("rep movsb"),
        Str::RepMovsq => run!("rep movsq"),
        Str::RepStosw => run!("rep stosw"),
        Str::RepStosd => run!("rep stosd"),
        Str::Lodsb => run!("lodsb"),
        Str::RepeCmpsb => run!("repe cmpsb"),
        Str::RepneCmpsw => run!("repne cmpsw"),
        Str::RepneScasb => run!("repne scasb"),
        Str::RepeScasd => run!("repe scasd"),
    }
    StringRegs {
        rsi: si,
        rdi: di,
        rcx: cx,
        rax: ax,
        flags,
    }
}

/// Locked read-modify-write instructions on memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Atomic {
    /// LOCK CMPXCHG [mem], src with the accumulator = `acc`.
    Cmpxchg,
    /// LOCK XADD [mem], src.
    Xadd,
    /// XCHG [mem], src (locked without a prefix).
    Xchg,
}

/// Runs `op` on a memory operand holding `mem` (width bits), with `src` and `acc`: returns
/// (memory after, source register after, accumulator after, RFLAGS after).
pub fn atomic(
    op: Atomic,
    width: u32,
    mem: u64,
    src: u64,
    acc: u64,
    fin: u64,
) -> (u64, u64, u64, u64) {
    let mut cell: u64 = mem;
    let p = &raw mut cell;
    let (mut s, mut a) = (src, acc);
    let flags: u64;
    macro_rules! run {
        ($insn:literal) => {
            // SAFETY: `p` points at a live local; POPFQ as in the other wrappers.
            unsafe {
                asm!("push {fin}", "popfq", $insn, "pushfq", "pop {f}", p = in(reg) p,
                     fin = in(reg) fin, f = lateout(reg) flags, s = inout(reg) s,
                     inout("rax") a)
            }
        };
    }
    match (op, width) {
        (Atomic::Cmpxchg, 8) => run!("lock cmpxchg byte ptr [{p}], {s:l}"),
        (Atomic::Cmpxchg, 16) => run!("lock cmpxchg word ptr [{p}], {s:x}"),
        (Atomic::Cmpxchg, 32) => run!("lock cmpxchg dword ptr [{p}], {s:e}"),
        (Atomic::Cmpxchg, _) => run!("lock cmpxchg qword ptr [{p}], {s:r}"),
        (Atomic::Xadd, 8) => run!("lock xadd byte ptr [{p}], {s:l}"),
        (Atomic::Xadd, 16) => run!("lock xadd word ptr [{p}], {s:x}"),
        (Atomic::Xadd, 32) => run!("lock xadd dword ptr [{p}], {s:e}"),
        (Atomic::Xadd, _) => run!("lock xadd qword ptr [{p}], {s:r}"),
        (Atomic::Xchg, 8) => run!("xchg byte ptr [{p}], {s:l}"),
        (Atomic::Xchg, 16) => run!("xchg word ptr [{p}], {s:x}"),
        (Atomic::Xchg, 32) => run!("xchg dword ptr [{p}], {s:e}"),
        (Atomic::Xchg, _) => run!("xchg qword ptr [{p}], {s:r}"),
    }
    let mask = if width == 64 {
        u64::MAX
    } else {
        (1 << width) - 1
    };
    (cell & mask, s & mask, a & mask, flags)
}

/// BT/BTS with a memory bit string and a register bit offset (which may address bytes far
/// outside the operand, SDM Vol. 2A "BT"): (RFLAGS after). The base operand is the 64-bit word
/// at `base`.
///
/// # Safety
/// `base + offset / 8` (rounded down to the operand size) must be readable and writable.
pub unsafe fn bts_mem(base: *mut u64, offset: i64, fin: u64) -> u64 {
    let flags: u64;
    // SAFETY: the caller guarantees the addressed quadword is valid.
    unsafe {
        asm!("push {fin}", "popfq", "bts qword ptr [{b}], {o}", "pushfq", "pop {f}",
             b = in(reg) base, o = in(reg) offset, fin = in(reg) fin, f = lateout(reg) flags)
    };
    flags
}
