//! Pre-decoded instructions: the hot forms of compiled code (MOV, the ALU group, INC/DEC/NEG/
//! NOT, shifts and rotates, IMUL, MOVZX/MOVSX, LEA, Jcc, near JMP/CALL/RET, PUSH/POP, CMOVcc,
//! SETcc) turned once, when an instruction enters the decode cache, into a compact [`Uop`]
//! whose operands are resolved: general registers as register views, the memory operand as an
//! addressing form (base, index, scale, displacement, segment, address width), the immediate,
//! the operand width, the condition and the branch displacement. Executing a `Uop` does not
//! look at iced's operand kinds again. The semantics are those of the generic handlers in
//! `ops/*` (SDM Vol. 2 instruction pages), which the `Uop` handlers share: the same flag
//! computation ([`crate::Cpu::alu_compute`], `shift_compute`, `imul_trunc`), the same memory
//! path (segment checks, paging, faults, self-modifying code) and the same operand order.
//!
//! Anything else is [`Kind::Generic`] (executed from the iced `Instruction` by `exec`) or
//! [`Kind::Safe`]: generic, but known not to change what an instruction boundary decides (IF,
//! TF, the interrupt shadow, CS, the mode, VMX operation, HLT) and not to reach a device except
//! through memory, so that it may run inside a burst (see `Cpu::burst`).

use iced_x86::{Code, ConditionCode as CC, Instruction, Mnemonic as M, OpKind, Register};

use crate::Cpu;
use crate::bus::Bus;
use crate::exec::{Loc, is_cmovcc, is_jcc, is_setcc, seg_of};
use crate::fault::{Ex, Fault};
use crate::flags::{FlagOp, mask};
use crate::ops::arith::AluOp;
use crate::regs::{self, Gpr, GprRef};
use crate::state::Seg;

/// A general-purpose register view in one byte: bits 0-3 the register, bits 4-6 the view
/// (0: low byte, 1: word, 2: doubleword, 3: quadword, 4: AH/CH/DH/BH).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct R(u8);

impl R {
    #[inline(always)]
    fn of(r: Register) -> Option<R> {
        let g = regs::gpr_ref(r)?;
        let view = match (g.width, g.high) {
            (8, true) => 4,
            (8, false) => 0,
            (16, _) => 1,
            (32, _) => 2,
            _ => 3,
        };
        Some(R((g.index as u8 & 15) | (view << 4)))
    }

    #[inline(always)]
    pub(crate) fn width(self) -> u32 {
        match self.0 >> 4 {
            1 => 16,
            2 => 32,
            3 => 64,
            _ => 8,
        }
    }

    /// The register number (for the 32- and 64-bit views).
    #[inline(always)]
    pub(crate) fn idx(self) -> usize {
        usize::from(self.0 & 15)
    }

    /// AH, CH, DH or BH.
    #[inline(always)]
    pub(crate) fn is_high_byte(self) -> bool {
        self.0 >> 4 == 4
    }

    #[inline(always)]
    fn gref(self) -> GprRef {
        GprRef {
            index: usize::from(self.0 & 15),
            width: self.width(),
            high: self.0 >> 4 == 4,
        }
    }

    #[inline(always)]
    fn read(self, gpr: &[u64; 16]) -> u64 {
        let view = usize::from(self.0 >> 4) & 7;
        (gpr[usize::from(self.0 & 15)] >> VIEW_SHIFT[view]) & VIEW_MASK[view]
    }

    #[inline(always)]
    fn write(self, gpr: &mut [u64; 16], v: u64) {
        let view = usize::from(self.0 >> 4) & 7;
        let slot = &mut gpr[usize::from(self.0 & 15)];
        *slot = (*slot & VIEW_KEEP[view]) | ((v & VIEW_MASK[view]) << VIEW_SHIFT[view]);
    }
}

/// Per view of `R`: where its bits are, and what a write keeps of the register (an 8- or
/// 16-bit write merges, a 32-bit write zero-extends: SDM Vol. 1 §3.4.1.1).
const VIEW_SHIFT: [u32; 8] = [0, 0, 0, 0, 8, 0, 0, 0];
const VIEW_MASK: [u64; 8] = [0xff, 0xffff, 0xffff_ffff, u64::MAX, 0xff, 0, 0, 0];
const VIEW_KEEP: [u64; 8] = [!0xff, !0xffff, 0, 0, !0xff00, 0, 0, 0];

/// An operand of a `Uop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opnd {
    Reg(R),
    /// The `Uop`'s immediate.
    Imm,
    /// The `Uop`'s memory operand.
    Mem,
}

/// How the effective address is relative to RIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rel {
    None,
    Rip,
    Eip,
}

/// A memory operand's addressing form, as `exec::ea` computes it (12 bytes).
#[derive(Clone, Copy, Debug)]
pub(crate) struct MemForm {
    /// The displacement, sign-extended when used (a wider one is not compiled).
    disp: i32,
    base: Option<R>,
    index: Option<R>,
    scale: u8,
    /// The address size the sum is truncated to, in bits.
    awidth: u8,
    pub rel: Rel,
    pub seg: Seg,
}

impl MemForm {
    /// Base, index, scale and displacement of a 64-bit address made of 64-bit registers (not
    /// RIP-relative), as register numbers.
    pub(crate) fn plain_64(&self) -> Option<(Option<u8>, Option<u8>, u8, i32)> {
        self.plain_64_or_rip(false)
    }

    /// As [`MemForm::plain_64`], or (`rip` true) a RIP-relative one, given as neither base nor
    /// index.
    pub(crate) fn plain_64_or_rip(&self, rip: bool) -> Option<(Option<u8>, Option<u8>, u8, i32)> {
        if rip && self.rel == Rel::Rip {
            return Some((None, None, 0, self.disp));
        }
        let full = |r: Option<R>| match r {
            None => Some(None),
            Some(r) if r.width() == 64 => Some(Some(r.idx() as u8)),
            Some(_) => None,
        };
        if self.rel != Rel::None || self.awidth != 64 {
            return None;
        }
        Some((full(self.base)?, full(self.index)?, self.scale, self.disp))
    }

    const NONE: MemForm = MemForm {
        disp: 0,
        base: None,
        index: None,
        scale: 0,
        awidth: 64,
        rel: Rel::None,
        seg: Seg::Ds,
    };

    fn of(ins: &Instruction) -> Option<MemForm> {
        let base = ins.memory_base();
        let disp = ins.memory_displacement64();
        let seg = seg_of(ins.memory_segment());
        // The displacement as a sign-extended 32-bit value; exact whenever the sum is
        // truncated to 32 bits or fewer, otherwise it must fit.
        let d32 = disp as u32 as i32;
        let fits = d32 as i64 as u64 == disp;
        match base {
            Register::RIP | Register::EIP => {
                let rel = if base == Register::RIP {
                    Rel::Rip
                } else {
                    Rel::Eip
                };
                if rel == Rel::Rip && !fits {
                    return None;
                }
                return Some(MemForm {
                    disp: d32,
                    rel,
                    seg,
                    ..Self::NONE
                });
            }
            _ => {}
        }
        let b = match base {
            Register::None => None,
            r => Some(R::of(r)?),
        };
        let i = match ins.memory_index() {
            Register::None => None,
            r => Some(R::of(r)?),
        };
        let width = match (b, i) {
            (Some(r), _) | (None, Some(r)) => r.width(),
            (None, None) => match ins.memory_displ_size() {
                2 => 16,
                4 => 32,
                _ => 64,
            },
        };
        if width == 64 && !fits {
            return None;
        }
        Some(MemForm {
            disp: d32,
            base: b,
            index: i,
            scale: ins.memory_index_scale() as u8,
            awidth: width as u8,
            rel: Rel::None,
            seg,
        })
    }
}

/// A shift or rotate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sh {
    Shl,
    Shr,
    Sar,
    Rol,
    Ror,
    Rcl,
    Rcr,
}

impl Sh {
    #[inline(always)]
    fn mnemonic(self) -> M {
        match self {
            Sh::Shl => M::Shl,
            Sh::Shr => M::Shr,
            Sh::Sar => M::Sar,
            Sh::Rol => M::Rol,
            Sh::Ror => M::Ror,
            Sh::Rcl => M::Rcl,
            Sh::Rcr => M::Rcr,
        }
    }
}

/// What a `Uop` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Executed from the iced instruction; ends a burst.
    Generic,
    /// Executed from the iced instruction; may run inside a burst.
    Safe,
    Nop,
    Mov,
    /// MOV r64, r64/imm.
    Mov64,
    /// MOV r32, r32/imm (zero-extends).
    Mov32,
    Alu(AluOp),
    /// The ALU operation on r64, r64/imm.
    Alu64(AluOp),
    /// The ALU operation on r32, r32/imm (a write zero-extends).
    Alu32(AluOp),
    Inc,
    Dec,
    Neg,
    Not,
    /// Shift or rotate by `src` (an immediate or CL).
    Shift(Sh),
    /// IMUL dst, src.
    Imul2,
    /// IMUL dst, src, imm.
    Imul3,
    /// MOVZX dst, src (`aux` = source width).
    Movzx,
    /// MOVSX/MOVSXD dst, src (`aux` = source width).
    Movsx,
    Lea,
    /// Jcc rel: target = (RIP + imm) & mask(w).
    Jcc(CC),
    /// JMP rel.
    Jmp,
    /// JMP r/m (near, absolute).
    JmpInd,
    /// CALL rel (`aux` = bytes pushed).
    Call,
    /// CALL r/m (near).
    CallInd,
    /// RET near (`aux` = bytes popped; `w` = 1 if an imm16 is added to RSP).
    Ret,
    /// PUSH src (`aux` = bytes).
    Push,
    /// POP dst (`aux` = bytes).
    Pop,
    Cmov(CC),
    Setcc(CC),
}

/// A pre-decoded instruction: 32 bytes, aligned so that a copy is two vector moves.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
pub(crate) struct Uop {
    pub kind: Kind,
    /// Instruction length in bytes.
    pub len: u8,
    /// Operand width in bits (or the branch-target width).
    pub w: u8,
    /// What the kind says (a source width, bytes pushed or popped).
    pub aux: u8,
    pub dst: Opnd,
    pub src: Opnd,
    /// The immediate or the branch displacement, sign-extended when used (a wider one is not
    /// compiled, except MOV r64, imm64, whose high half is in `hi`).
    imm: i32,
    hi: u32,
    pub mem: MemForm,
}

const _: () = assert!(size_of::<Uop>() == 32);

impl Uop {
    pub(crate) const GENERIC: Uop = Uop {
        kind: Kind::Generic,
        len: 0,
        w: 0,
        aux: 0,
        dst: Opnd::Imm,
        src: Opnd::Imm,
        imm: 0,
        hi: 0,
        mem: MemForm::NONE,
    };

    /// Compiles `ins` (decoded at IP 0).
    pub(crate) fn compile(ins: &Instruction) -> Uop {
        let len = ins.len() as u8;
        let kind = compile_kind(ins).unwrap_or(Kind::Generic);
        let kind = if kind == Kind::Generic && burst_safe(ins) {
            Kind::Safe
        } else {
            kind
        };
        let mut u = Uop {
            kind,
            len,
            ..Self::GENERIC
        };
        if matches!(kind, Kind::Generic | Kind::Safe | Kind::Nop) {
            return u;
        }
        match fill(&mut u, ins) {
            Some(()) => {
                specialise(&mut u);
                u
            }
            None => Uop {
                kind: if burst_safe(ins) {
                    Kind::Safe
                } else {
                    Kind::Generic
                },
                len,
                ..Self::GENERIC
            },
        }
    }
}

fn cc_of(ins: &Instruction) -> CC {
    ins.condition_code()
}

/// The specialised kind of `ins`, if it has one (operands are checked by `fill`).
fn compile_kind(ins: &Instruction) -> Option<Kind> {
    if ins.has_lock_prefix() {
        return None;
    }
    let m = ins.mnemonic();
    Some(match m {
        M::Nop | M::Pause | M::Endbr32 | M::Endbr64 => Kind::Nop,
        M::Mov => Kind::Mov,
        M::Add => Kind::Alu(AluOp::Add),
        M::Or => Kind::Alu(AluOp::Or),
        M::Adc => Kind::Alu(AluOp::Adc),
        M::Sbb => Kind::Alu(AluOp::Sbb),
        M::And => Kind::Alu(AluOp::And),
        M::Sub => Kind::Alu(AluOp::Sub),
        M::Xor => Kind::Alu(AluOp::Xor),
        M::Cmp => Kind::Alu(AluOp::Cmp),
        M::Test => Kind::Alu(AluOp::Test),
        M::Inc => Kind::Inc,
        M::Dec => Kind::Dec,
        M::Neg => Kind::Neg,
        M::Not => Kind::Not,
        M::Shl | M::Sal => Kind::Shift(Sh::Shl),
        M::Shr => Kind::Shift(Sh::Shr),
        M::Sar => Kind::Shift(Sh::Sar),
        M::Rol => Kind::Shift(Sh::Rol),
        M::Ror => Kind::Shift(Sh::Ror),
        M::Rcl => Kind::Shift(Sh::Rcl),
        M::Rcr => Kind::Shift(Sh::Rcr),
        M::Imul if ins.op_count() == 2 => Kind::Imul2,
        M::Imul if ins.op_count() == 3 => Kind::Imul3,
        M::Movzx => Kind::Movzx,
        M::Movsx | M::Movsxd => Kind::Movsx,
        M::Lea => Kind::Lea,
        M::Jmp => match ins.op0_kind() {
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => Kind::Jmp,
            OpKind::Register | OpKind::Memory if !is_far(ins) => Kind::JmpInd,
            _ => return None,
        },
        M::Call => match ins.op0_kind() {
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => Kind::Call,
            OpKind::Register | OpKind::Memory if !is_far(ins) => Kind::CallInd,
            _ => return None,
        },
        M::Ret => Kind::Ret,
        M::Push => Kind::Push,
        M::Pop => Kind::Pop,
        _ => match cc_of(ins) {
            CC::None => return None,
            cc if is_jcc(m) => Kind::Jcc(cc),
            cc if is_cmovcc(m) => Kind::Cmov(cc),
            cc if is_setcc(m) => Kind::Setcc(cc),
            _ => return None,
        },
    })
}

/// JMP/CALL through a far pointer in memory.
fn is_far(ins: &Instruction) -> bool {
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

/// Operand `n` as a `Uop` operand; `None` for anything but a general register, the memory
/// operand or an immediate.
fn opnd(ins: &Instruction, n: u32, u: &mut Uop) -> Option<Opnd> {
    match ins.op_kind(n) {
        OpKind::Register => Some(Opnd::Reg(R::of(ins.op_register(n))?)),
        OpKind::Memory => {
            u.mem = MemForm::of(ins)?;
            Some(Opnd::Mem)
        }
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => {
            set_imm(u, ins.immediate(n))?;
            Some(Opnd::Imm)
        }
        _ => None,
    }
}

/// Stores an immediate: sign-extended 32 bits, or (MOV r64, imm64) split in two halves.
fn set_imm(u: &mut Uop, v: u64) -> Option<()> {
    u.imm = v as u32 as i32;
    u.hi = (v >> 32) as u32;
    // Every use of a zero-extended 32-bit value masks it to at most 32 bits.
    let bits = if u.w != 0 { u.w } else { u.aux * 8 };
    if u.imm as i64 as u64 == v || (v >> 32 == 0 && bits <= 32 && bits != 0) || u.kind == Kind::Mov
    {
        Some(())
    } else {
        None
    }
}

impl Uop {
    /// The immediate as the generic path sees it: `ins.immediate(n)` (64 bits), or the
    /// relative branch target. For a zero-extended 32-bit value (a 32-bit operand) the
    /// sign-extended one differs only above bit 31, which every use masks off.
    #[inline(always)]
    pub(crate) fn imm(&self) -> u64 {
        if matches!(self.kind, Kind::Mov | Kind::Mov64 | Kind::Mov32) {
            u64::from(self.imm as u32) | (u64::from(self.hi) << 32)
        } else {
            self.imm as i64 as u64
        }
    }
}

/// The width of operand `n`, as `exec::op_width` gives it.
fn width(ins: &Instruction, n: u32) -> Option<u8> {
    let w = match ins.op_kind(n) {
        OpKind::Register => R::of(ins.op_register(n))?.width(),
        OpKind::Memory => (ins.memory_size().size() * 8) as u32,
        _ => return None,
    };
    matches!(w, 8 | 16 | 32 | 64).then_some(w as u8)
}

/// The size of a near branch target: 16, 32 or 64 bits.
fn branch_width(ins: &Instruction) -> Option<u8> {
    match ins.op0_kind() {
        OpKind::NearBranch16 => Some(16),
        OpKind::NearBranch32 => Some(32),
        OpKind::NearBranch64 => Some(64),
        _ => None,
    }
}

/// Resolves the operands of `u` (whose kind is set); `None` if a form is not handled here.
fn fill(u: &mut Uop, ins: &Instruction) -> Option<()> {
    let stack_bytes = || Some((-ins.stack_pointer_increment()).unsigned_abs() as u8);
    match u.kind {
        Kind::Mov | Kind::Alu(_) | Kind::Cmov(_) => {
            if ins.op_count() != 2 {
                return None;
            }
            u.w = width(ins, 0)?;
            u.dst = opnd(ins, 0, u)?;
            u.src = opnd(ins, 1, u)?;
            if u.dst == Opnd::Imm {
                return None;
            }
        }
        Kind::Inc | Kind::Dec | Kind::Neg | Kind::Not | Kind::Setcc(_) => {
            u.w = width(ins, 0)?;
            u.dst = opnd(ins, 0, u)?;
            if u.dst == Opnd::Imm {
                return None;
            }
        }
        Kind::Shift(_) => {
            if ins.op_count() != 2 {
                return None;
            }
            u.w = width(ins, 0)?;
            u.dst = opnd(ins, 0, u)?;
            u.src = opnd(ins, 1, u)?;
            if u.dst == Opnd::Imm || u.src == Opnd::Mem {
                return None;
            }
        }
        Kind::Imul2 => {
            u.w = width(ins, 0)?;
            u.dst = opnd(ins, 0, u)?;
            u.src = opnd(ins, 1, u)?;
        }
        Kind::Imul3 => {
            u.w = width(ins, 0)?;
            u.dst = opnd(ins, 0, u)?;
            u.src = opnd(ins, 1, u)?;
            if opnd(ins, 2, u)? != Opnd::Imm {
                return None;
            }
        }
        Kind::Movzx | Kind::Movsx => {
            u.w = width(ins, 0)?;
            u.aux = width(ins, 1)?;
            u.dst = opnd(ins, 0, u)?;
            u.src = opnd(ins, 1, u)?;
            if !matches!(u.dst, Opnd::Reg(_)) {
                return None;
            }
        }
        Kind::Lea => {
            if ins.op1_kind() != OpKind::Memory {
                return None;
            }
            u.dst = opnd(ins, 0, u)?;
            u.src = opnd(ins, 1, u)?;
            if !matches!(u.dst, Opnd::Reg(_)) {
                return None;
            }
        }
        Kind::Jcc(_) | Kind::Jmp => {
            u.w = branch_width(ins)?;
            set_imm(u, ins.near_branch64())?;
        }
        Kind::Call => {
            u.w = branch_width(ins)?;
            set_imm(u, ins.near_branch64())?;
            u.aux = stack_bytes()?;
        }
        Kind::JmpInd => {
            u.w = width(ins, 0)?;
            u.dst = opnd(ins, 0, u)?;
        }
        Kind::CallInd => {
            u.w = width(ins, 0)?;
            u.dst = opnd(ins, 0, u)?;
            u.aux = stack_bytes()?;
        }
        Kind::Ret => {
            u.aux = match ins.code() {
                Code::Retnw | Code::Retnw_imm16 => 2,
                Code::Retnd | Code::Retnd_imm16 => 4,
                Code::Retnq | Code::Retnq_imm16 => 8,
                _ => return None,
            };
            if ins.op_count() > 0 {
                u.w = 1;
                set_imm(u, ins.immediate(0))?;
            }
        }
        Kind::Push => {
            u.aux = stack_bytes()?;
            u.dst = opnd(ins, 0, u)?;
        }
        Kind::Pop => {
            u.aux = stack_bytes()?;
            u.dst = opnd(ins, 0, u)?;
            if u.dst == Opnd::Imm {
                return None;
            }
        }
        Kind::Generic
        | Kind::Safe
        | Kind::Nop
        | Kind::Mov64
        | Kind::Mov32
        | Kind::Alu64(_)
        | Kind::Alu32(_) => {}
    }
    if !matches!(u.aux, 0 | 1 | 2 | 4 | 8 | 16 | 32 | 64) {
        return None;
    }
    Some(())
}

/// The register forms at 64 and 32 bits get kinds of their own, which index the register
/// file directly.
fn specialise(u: &mut Uop) {
    let Opnd::Reg(d) = u.dst else {
        return;
    };
    let view = d.0 >> 4;
    let src_ok = match u.src {
        Opnd::Reg(s) => s.0 >> 4 == view,
        Opnd::Imm => true,
        Opnd::Mem => false,
    };
    if !src_ok || !(view == 2 || view == 3) {
        return;
    }
    u.kind = match (u.kind, view) {
        (Kind::Mov, 3) => Kind::Mov64,
        (Kind::Mov, _) => Kind::Mov32,
        (Kind::Alu(op), 3) => Kind::Alu64(op),
        (Kind::Alu(op), _) => Kind::Alu32(op),
        (k, _) => k,
    };
}

/// Whether a generic instruction may run inside a burst: it cannot change IF, TF, the
/// interrupt shadow, CS, CPL, the mode, paging controls or VMX operation, cannot halt, and
/// reaches devices only through memory (which ends the burst after it).
fn burst_safe(ins: &Instruction) -> bool {
    let m = ins.mnemonic();
    let no_special_reg = || {
        (0..ins.op_count()).all(|n| {
            ins.op_kind(n) != OpKind::Register || regs::gpr_ref(ins.op_register(n)).is_some()
        })
    };
    match m {
        M::Add
        | M::Or
        | M::Adc
        | M::Sbb
        | M::And
        | M::Sub
        | M::Xor
        | M::Cmp
        | M::Test
        | M::Inc
        | M::Dec
        | M::Neg
        | M::Not
        | M::Shl
        | M::Sal
        | M::Shr
        | M::Sar
        | M::Rol
        | M::Ror
        | M::Rcl
        | M::Rcr
        | M::Shld
        | M::Shrd
        | M::Mul
        | M::Imul
        | M::Div
        | M::Idiv
        | M::Bt
        | M::Bts
        | M::Btr
        | M::Btc
        | M::Bsf
        | M::Bsr
        | M::Tzcnt
        | M::Lzcnt
        | M::Popcnt
        | M::Bswap
        | M::Movzx
        | M::Movsx
        | M::Movsxd
        | M::Lea
        | M::Xchg
        | M::Cmpxchg
        | M::Cmpxchg8b
        | M::Cmpxchg16b
        | M::Xadd
        | M::Cbw
        | M::Cwde
        | M::Cdqe
        | M::Cwd
        | M::Cdq
        | M::Cqo
        | M::Lahf
        | M::Sahf
        | M::Xlatb
        | M::Nop
        | M::Pause
        | M::Clc
        | M::Stc
        | M::Cmc
        | M::Cld
        | M::Std
        | M::Movsb
        | M::Movsw
        | M::Movsd
        | M::Movsq
        | M::Stosb
        | M::Stosw
        | M::Stosd
        | M::Stosq
        | M::Lodsb
        | M::Lodsw
        | M::Lodsd
        | M::Lodsq
        | M::Cmpsb
        | M::Cmpsw
        | M::Cmpsd
        | M::Cmpsq
        | M::Scasb
        | M::Scasw
        | M::Scasd
        | M::Scasq
        | M::Pushf
        | M::Pushfd
        | M::Pushfq
        | M::Enter
        | M::Leave
        | M::Ret
        | M::Loop
        | M::Loope
        | M::Loopne
        | M::Jcxz
        | M::Jecxz
        | M::Jrcxz
        | M::Endbr32
        | M::Endbr64 => no_special_reg(),
        M::Mov | M::Push | M::Pop => no_special_reg(),
        M::Jmp | M::Call => {
            no_special_reg()
                && matches!(
                    ins.op0_kind(),
                    OpKind::NearBranch16
                        | OpKind::NearBranch32
                        | OpKind::NearBranch64
                        | OpKind::Register
                        | OpKind::Memory
                )
                && !is_far(ins)
        }
        _ => is_jcc(m) || is_cmovcc(m) || is_setcc(m),
    }
}

impl Cpu {
    /// The effective address of the `Uop`'s memory operand (as `exec::ea`).
    #[inline(always)]
    fn uop_ea(&self, m: &MemForm) -> u64 {
        let disp = m.disp as i64 as u64;
        match m.rel {
            Rel::Rip => return self.rip.wrapping_add(disp),
            Rel::Eip => return self.rip.wrapping_add(disp) & 0xffff_ffff,
            Rel::None => {}
        }
        let mut a = disp;
        if let Some(b) = m.base {
            a = a.wrapping_add(b.read(&self.gpr));
        }
        if let Some(i) = m.index {
            a = a.wrapping_add(i.read(&self.gpr).wrapping_mul(u64::from(m.scale)));
        }
        a & mask(u32::from(m.awidth))
    }

    /// The location of a `Uop` operand.
    #[inline(always)]
    fn uop_loc(&self, u: &Uop, o: Opnd) -> Loc {
        match o {
            Opnd::Reg(r) => Loc::Reg(r.gref()),
            Opnd::Imm => Loc::Imm(u.imm()),
            Opnd::Mem => Loc::Mem(u.mem.seg, self.uop_ea(&u.mem)),
        }
    }

    /// The pre-decoded instruction `exec::fetch` named: decode-cache slot `i`, or
    /// (`usize::MAX`) the uncached one in `self.fetched`.
    #[inline(always)]
    pub(crate) fn uop_ref(&self, i: usize) -> &Uop {
        if i == usize::MAX {
            &self.fetched
        } else {
            self.icache.uop(i)
        }
    }

    /// Executes a specialised `Uop` (not `Generic`/`Safe`, which `exec` runs from the iced
    /// instruction), read in place from where `uop_ref(i)` finds it: each arm takes what it
    /// needs from it before changing any state.
    #[inline(always)]
    pub(crate) fn exec_uop<B: Bus>(&mut self, bus: &mut B, i: usize) -> Ex<()> {
        let u = self.uop_ref(i);
        let w = u32::from(u.w);
        match u.kind {
            Kind::Alu64(op) | Kind::Alu32(op) => {
                let Opnd::Reg(d) = u.dst else {
                    return Err(Fault::ud().into());
                };
                let b = match u.src {
                    Opnd::Reg(s) => self.gpr[s.idx()],
                    _ => u.imm(),
                };
                let d = d.idx();
                let r = if matches!(u.kind, Kind::Alu64(_)) {
                    self.alu_compute(op, 64, self.gpr[d], b)
                } else {
                    self.alu_compute(op, 32, self.gpr[d] & 0xffff_ffff, b & 0xffff_ffff)
                };
                // The result is truncated to the width: a 32-bit write zero-extends.
                if !matches!(op, AluOp::Cmp | AluOp::Test) {
                    self.gpr[d] = r;
                }
                Ok(())
            }
            Kind::Mov64 | Kind::Mov32 => {
                let Opnd::Reg(d) = u.dst else {
                    return Err(Fault::ud().into());
                };
                let v = match u.src {
                    Opnd::Reg(s) => self.gpr[s.idx()],
                    _ => u.imm(),
                };
                self.gpr[d.idx()] = if matches!(u.kind, Kind::Mov64) {
                    v
                } else {
                    v & 0xffff_ffff
                };
                Ok(())
            }
            Kind::Alu(op) => {
                if let (Opnd::Reg(d), Opnd::Reg(_) | Opnd::Imm) = (u.dst, u.src) {
                    let b = match u.src {
                        Opnd::Reg(s) => s.read(&self.gpr),
                        _ => u.imm(),
                    };
                    let a = d.read(&self.gpr);
                    let r = self.alu_compute(op, w, a, b & mask(w));
                    if !matches!(op, AluOp::Cmp | AluOp::Test) {
                        d.write(&mut self.gpr, r);
                    }
                    return Ok(());
                }
                let dst = self.uop_loc(u, u.dst);
                let src = self.uop_loc(u, u.src);
                let writes = !matches!(op, AluOp::Cmp | AluOp::Test);
                let a = if writes {
                    self.get_rmw(bus, dst, w)?
                } else {
                    self.get(bus, dst, w)?
                };
                let b = self.get(bus, src, w)?;
                let r = self.alu_compute(op, w, a, b);
                if writes {
                    self.put(bus, dst, w, r)?;
                }
                Ok(())
            }
            Kind::Mov => {
                if let Opnd::Reg(d) = u.dst {
                    let v = match u.src {
                        Opnd::Reg(s) => s.read(&self.gpr),
                        Opnd::Imm => u.imm(),
                        Opnd::Mem => {
                            let (seg, off) = (u.mem.seg, self.uop_ea(&u.mem));
                            self.read_seg(bus, seg, off, (w / 8) as usize)?
                        }
                    };
                    d.write(&mut self.gpr, v);
                    return Ok(());
                }
                let src = self.uop_loc(u, u.src);
                let dst = self.uop_loc(u, u.dst);
                let v = self.get(bus, src, w)?;
                self.put(bus, dst, w, v)
            }
            Kind::Jcc(cc) => {
                let t = self.rip.wrapping_add(u.imm()) & mask(w);
                if self.cond(cc) {
                    self.branch(t)?;
                }
                Ok(())
            }
            Kind::Jmp => {
                let t = self.rip.wrapping_add(u.imm()) & mask(w);
                self.branch(t)
            }
            Kind::JmpInd => {
                let l = self.uop_loc(u, u.dst);
                let t = self.get(bus, l, w)?;
                self.branch(t)
            }
            Kind::Call | Kind::CallInd => {
                let size = u.aux;
                let t = if matches!(u.kind, Kind::Call) {
                    self.rip.wrapping_add(u.imm()) & mask(w)
                } else {
                    let l = self.uop_loc(u, u.dst);
                    self.get(bus, l, w)?
                };
                let ret = self.next_rip;
                self.branch(t)?;
                self.push(bus, ret & mask(u32::from(size) * 8), usize::from(size))
            }
            Kind::Ret => {
                let (size, add) = (usize::from(u.aux), (u.w == 1).then(|| u.imm()));
                let saved = self.gpr[Gpr::Rsp as usize];
                let t = self.pop(bus, size)?;
                if let Err(e) = self.branch(t) {
                    self.gpr[Gpr::Rsp as usize] = saved;
                    return Err(e);
                }
                if let Some(imm) = add {
                    let sp = self.gpr[Gpr::Rsp as usize].wrapping_add(imm);
                    self.set_sp(sp);
                }
                Ok(())
            }
            Kind::Push => {
                let size = u.aux;
                let bits = u32::from(size) * 8;
                let v = match u.dst {
                    Opnd::Reg(r) => r.read(&self.gpr),
                    Opnd::Imm => u.imm(),
                    Opnd::Mem => {
                        let l = self.uop_loc(u, u.dst);
                        self.get(bus, l, bits)?
                    }
                };
                self.push(bus, v & mask(bits), usize::from(size))
            }
            Kind::Pop => {
                let size = u.aux;
                let (dst, mem) = (u.dst, u.mem);
                let saved = self.gpr[Gpr::Rsp as usize];
                let v = self.pop(bus, usize::from(size))?;
                // A memory destination addressed through RSP uses the incremented value.
                let dst = match dst {
                    Opnd::Reg(r) => Loc::Reg(r.gref()),
                    _ => Loc::Mem(mem.seg, self.uop_ea(&mem)),
                };
                let r = self.put(bus, dst, u32::from(size) * 8, v);
                if r.is_err() {
                    self.gpr[Gpr::Rsp as usize] = saved;
                }
                r
            }
            kind @ (Kind::Inc | Kind::Dec | Kind::Neg | Kind::Not) => {
                let dst = self.uop_loc(u, u.dst);
                let a = self.get_rmw(bus, dst, w)?;
                let m = mask(w);
                let r = match kind {
                    Kind::Inc => {
                        let r = a.wrapping_add(1) & m;
                        let cf = self.flags.cf();
                        self.flags.set_lazy(FlagOp::Inc, w, a, 1, r, cf);
                        r
                    }
                    Kind::Dec => {
                        let r = a.wrapping_sub(1) & m;
                        let cf = self.flags.cf();
                        self.flags.set_lazy(FlagOp::Dec, w, a, 1, r, cf);
                        r
                    }
                    Kind::Neg => {
                        let r = 0u64.wrapping_sub(a) & m;
                        self.flags.set_lazy(FlagOp::Sub, w, 0, a, r, false);
                        r
                    }
                    _ => !a & m,
                };
                self.put(bus, dst, w, r)
            }
            Kind::Shift(op) => {
                let count = match u.src {
                    Opnd::Reg(r) => r.read(&self.gpr),
                    _ => u.imm() & 0xff,
                } & if w == 64 { 0x3f } else { 0x1f };
                let dst = self.uop_loc(u, u.dst);
                let a = match dst {
                    Loc::Reg(r) => regs::read(&self.gpr, r),
                    _ => self.get_rmw(bus, dst, w)?,
                };
                if count == 0 {
                    return Ok(());
                }
                let r = match op {
                    // The common shifts by a count below the width, inline (the flags as
                    // `shift_compute` sets them: CF the last bit out, OF for a count of 1).
                    Sh::Shl if count < u64::from(w) => {
                        let r = (a << count) & mask(w);
                        let cf = (a >> (u64::from(w) - count)) & 1 != 0;
                        let of = (r & crate::flags::sign(w) != 0) ^ cf;
                        self.flags
                            .set_lazy(FlagOp::Cfof, w, 0, u64::from(of), r, cf);
                        r
                    }
                    Sh::Shr if count < u64::from(w) => {
                        let r = a >> count;
                        let cf = (a >> (count - 1)) & 1 != 0;
                        let of = ((r << 1) ^ r) & crate::flags::sign(w) != 0;
                        self.flags
                            .set_lazy(FlagOp::Cfof, w, 0, u64::from(of), r, cf);
                        r
                    }
                    // ROL/ROR: CF and OF change, the other status flags stay.
                    Sh::Rol | Sh::Ror => {
                        let c = (count % u64::from(w)) as u32;
                        let m = mask(w);
                        let r = if c == 0 {
                            a
                        } else if op == Sh::Rol {
                            ((a << c) | (a >> (w - c))) & m
                        } else {
                            ((a >> c) | (a << (w - c))) & m
                        };
                        let s = crate::flags::sign(w);
                        let msb = r & s != 0;
                        let (cf, of) = if op == Sh::Rol {
                            (r & 1 != 0, msb ^ (r & 1 != 0))
                        } else {
                            (msb, msb ^ (r & (s >> 1) != 0))
                        };
                        self.flags.set_cf_of(cf, of);
                        r
                    }
                    _ => self.shift_compute(op.mnemonic(), w, a, count),
                };
                if let Loc::Reg(d) = dst {
                    regs::write(&mut self.gpr, d, r);
                    return Ok(());
                }
                self.put(bus, dst, w, r)
            }
            kind @ (Kind::Imul2 | Kind::Imul3) => {
                let d = self.uop_loc(u, u.dst);
                let s = self.uop_loc(u, u.src);
                let imm = u.imm() & mask(w);
                let (sa, sb) = if matches!(kind, Kind::Imul3) {
                    (self.get(bus, s, w)?, imm)
                } else {
                    (self.get(bus, d, w)?, self.get(bus, s, w)?)
                };
                let low = self.imul_trunc(w, sa, sb);
                self.put(bus, d, w, low)
            }
            kind @ (Kind::Movzx | Kind::Movsx) => {
                let sw = u32::from(u.aux);
                let src = self.uop_loc(u, u.src);
                let dst = self.uop_loc(u, u.dst);
                let v = self.get(bus, src, sw)?;
                let v = if matches!(kind, Kind::Movzx) {
                    v
                } else {
                    ((((v << (64 - sw)) as i64) >> (64 - sw)) as u64) & mask(w)
                };
                self.put(bus, dst, w, v)
            }
            Kind::Lea => {
                let v = self.uop_ea(&u.mem);
                if let Opnd::Reg(d) = u.dst {
                    d.write(&mut self.gpr, v);
                }
                Ok(())
            }
            Kind::Cmov(cc) => {
                let src = self.uop_loc(u, u.src);
                let dst = self.uop_loc(u, u.dst);
                // The source is read (and may fault) whatever the condition.
                let v = self.get(bus, src, w)?;
                if self.cond(cc) {
                    self.put(bus, dst, w, v)
                } else if w == 32 {
                    // A 32-bit CMOV writes its destination even when false.
                    let cur = self.get(bus, dst, w)?;
                    self.put(bus, dst, w, cur)
                } else {
                    Ok(())
                }
            }
            Kind::Setcc(cc) => {
                let dst = self.uop_loc(u, u.dst);
                let v = u64::from(self.cond(cc));
                self.put(bus, dst, 8, v)
            }
            Kind::Nop => Ok(()),
            // Never compiled into a uop that reaches here.
            Kind::Generic | Kind::Safe => Err(Fault::ud().into()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::state::Segment;
    use crate::test_utils::{CODE, TestBus, long_env};
    use iced_x86::{Decoder, DecoderOptions};
    use proptest::prelude::*;

    /// Opcodes of the forms `Uop` specialises (one byte, or after 0x0F).
    pub(crate) const HOT: &[u8] = &[
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x10, 0x11, 0x12,
        0x13, 0x18, 0x19, 0x1a, 0x1b, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x28, 0x29, 0x2a, 0x2b,
        0x30, 0x31, 0x32, 0x33, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x40, 0x48, 0x50, 0x55, 0x58,
        0x5d, 0x63, 0x68, 0x69, 0x6a, 0x6b, 0x70, 0x74, 0x75, 0x7c, 0x7f, 0x80, 0x81, 0x83, 0x84,
        0x85, 0x88, 0x89, 0x8a, 0x8b, 0x8d, 0x8f, 0xa8, 0xa9, 0xb0, 0xb4, 0xb8, 0xbf, 0xc0, 0xc1,
        0xc2, 0xc3, 0xc6, 0xc7, 0xd0, 0xd1, 0xd2, 0xd3, 0xe8, 0xe9, 0xeb, 0xf6, 0xf7, 0xfe, 0xff,
    ];
    pub(crate) const HOT_0F: &[u8] = &[
        0xaf, 0xb6, 0xb7, 0xbe, 0xbf, 0x40, 0x42, 0x44, 0x45, 0x4c, 0x4f, 0x84, 0x85, 0x8c, 0x8f,
        0x92, 0x94, 0x95, 0x9c, 0x9f,
    ];
    pub(crate) const PREFIXES: &[&[u8]] =
        &[&[], &[0x48], &[0x66], &[0x41], &[0x4d], &[0x40], &[0x67]];

    /// A CPU and board in `mode` (0: real, 1: 32-bit protected, 2: 64-bit) with `code` at
    /// [`CODE`] and the given registers and flags.
    fn env(mode: u8, code: &[u8], gpr: [u64; 16], flags: u64) -> (Cpu, TestBus) {
        let (mut cpu, mut bus) = long_env(code);
        match mode {
            0 => {
                cpu.set_control_registers(0, 0, 0, 0);
                for s in Seg::ALL {
                    cpu.set_segment(s, Segment::real(0, s == Seg::Cs));
                }
                cpu.set_segment(Seg::Cs, Segment::real(0x1000, true));
                bus.load(0x1_0000 + 0x8000, code);
                cpu.rip = 0x8000;
            }
            1 => cpu.set_multiboot_entry(CODE as u32, 0, 0),
            _ => {}
        }
        cpu.icache.attach(&bus);
        cpu.gpr = gpr;
        cpu.set_rflags(flags);
        (cpu, bus)
    }

    fn register() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            // Near data in RAM (above the code page), and small counts and indices.
            (0x10_8000u64..0x10_9000),
            (0u64..0x100),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        /// Every specialised `Uop` does what the generic handler does: the same outcome
        /// (fault or not), registers, RIP, RFLAGS and memory, in all three modes.
        #[test]
        fn uops_agree_with_the_generic_handlers(
            mode in 0u8..3,
            prefix in 0usize..7,
            two_byte in any::<bool>(),
            op in 0usize..128,
            tail in any::<[u8; 10]>(),
            gpr in proptest::array::uniform16(register()),
            flags in any::<u64>(),
        ) {
            let mut code = PREFIXES[prefix].to_vec();
            if two_byte {
                code.extend([0x0f, HOT_0F[op % HOT_0F.len()]]);
            } else {
                code.push(HOT[op % HOT.len()]);
            }
            code.extend(tail);
            let bits = [16, 32, 64][usize::from(mode)];
            let ins = Decoder::new(bits, &code, DecoderOptions::NONE).decode();
            let kind = Uop::compile(&ins).kind;
            prop_assume!(!ins.is_invalid() && !matches!(kind, Kind::Generic | Kind::Safe));
            let (mut a, mut bus_a) = env(mode, &code, gpr, flags);
            let (mut b, mut bus_b) = env(mode, &code, gpr, flags);
            let ra = a.step(&mut bus_a);
            let rb = b.step_generic(&mut bus_b);
            prop_assert_eq!(&ra, &rb, "{} {:?}", ins, kind);
            prop_assert_eq!(a.gpr, b.gpr, "{}", ins);
            prop_assert_eq!(a.rip, b.rip, "{}", ins);
            prop_assert_eq!(a.rflags(), b.rflags(), "{}", ins);
            prop_assert!(bus_a.ram == bus_b.ram, "memory differs after {}", ins);
        }
    }

    fn kind(bytes: &[u8]) -> Kind {
        let ins = Decoder::new(64, bytes, DecoderOptions::NONE).decode();
        Uop::compile(&ins).kind
    }

    /// A burst ends exactly at the budget, and self-modifying code inside one takes effect
    /// for the next instruction.
    #[test]
    fn bursts_end_at_the_budget_and_see_their_own_writes() {
        #[rustfmt::skip]
        let code = [
            0x48, 0xff, 0xc0,   // l: inc rax
            0xeb, 0xfb,         // jmp l
        ];
        let (mut cpu, mut bus) = long_env(&code);
        assert_eq!(
            cpu.run(&mut bus, 1001),
            Ok(crate::StopReason::BudgetExhausted)
        );
        assert_eq!(cpu.instructions_retired(), 1001);
        assert_eq!(cpu.gpr[0], 501);
        #[rustfmt::skip]
        let code = [
            0xc6, 0x05, 0x02, 0x00, 0x00, 0x00, 0xc8,   // mov byte [rip + 2], 0xc8: the next
            0x48, 0xff, 0xc0,                           // inc rax becomes dec rax (48 ff c8)
            0xf4,                                       // hlt
        ];
        let (mut cpu, mut bus) = long_env(&code);
        assert_eq!(cpu.run(&mut bus, 100), Ok(crate::StopReason::Halted));
        assert_eq!(cpu.gpr[0], u64::MAX);
    }

    #[test]
    fn hot_forms_are_specialised_and_system_forms_are_not() {
        assert_eq!(kind(&[0x48, 0x31, 0xc0]), Kind::Alu64(AluOp::Xor)); // xor rax, rax
        assert_eq!(kind(&[0x83, 0xe0, 0x01]), Kind::Alu32(AluOp::And)); // and eax, 1
        assert_eq!(kind(&[0x30, 0xc0]), Kind::Alu(AluOp::Xor)); // xor al, al
        assert_eq!(kind(&[0x48, 0x03, 0x03]), Kind::Alu(AluOp::Add)); // add rax, [rbx]
        assert_eq!(kind(&[0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8]), Kind::Mov64); // mov rax, imm64
        assert_eq!(kind(&[0x89, 0xc8]), Kind::Mov32); // mov eax, ecx
        assert_eq!(kind(&[0x48, 0xc1, 0xe0, 0x0d]), Kind::Shift(Sh::Shl)); // shl rax, 13
        assert_eq!(kind(&[0x48, 0x0f, 0xaf, 0xce]), Kind::Imul2); // imul rcx, rsi
        assert_eq!(kind(&[0x75, 0xfe]), Kind::Jcc(CC::ne)); // jne $
        assert_eq!(kind(&[0x48, 0x8b, 0x04, 0x24]), Kind::Mov); // mov rax, [rsp]
        assert_eq!(kind(&[0xf0, 0x48, 0x01, 0x03]), Kind::Safe); // lock add [rbx], rax
        assert_eq!(kind(&[0x8e, 0xd8]), Kind::Generic); // mov ds, eax
        assert_eq!(kind(&[0x0f, 0x22, 0xd8]), Kind::Generic); // mov cr3, rax
        assert_eq!(kind(&[0xfb]), Kind::Generic); // sti
        assert_eq!(kind(&[0x9d]), Kind::Generic); // popfq
        assert_eq!(kind(&[0x17]), Kind::Generic); // (invalid in 64-bit mode)
        assert_eq!(kind(&[0xff, 0x2c, 0x24]), Kind::Generic); // jmp far [rsp]
    }
}
