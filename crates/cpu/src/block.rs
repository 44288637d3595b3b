//! Blocks: straight-line runs of pre-decoded instructions that run back to back, without a fetch,
//! a decode-cache lookup or a budget check per instruction (issue 3, "speed by design").
//!
//! A block starts at an instruction boundary in one 4-KiB page of RAM and runs to the first
//! control transfer (included), the first instruction that is not burst-safe (excluded: the
//! full path runs it), PAUSE (excluded: it may exit in VMX non-root operation), the end of the
//! page, or [`MAX_INSNS`] instructions. Blocks are keyed like the decode cache, by RAM offset,
//! so one block serves every linear address its page is mapped at, and they are checked against
//! the decode cache's per-page generation, so a write to the page drops them (self-modifying
//! code, SDM Vol. 3A §11.6). A store made by the block to its own page ends it after that
//! instruction, and the next instruction is decoded afresh.
//!
//! Blocks run only inside a burst (`Cpu::burst`), in 64-bit mode, and only when the whole block
//! fits before the burst's limit: the instruction count, and so every timer deadline and every
//! instruction boundary at which an interrupt could be taken, are what single steps give.
//!
//! The register forms of the hot instructions are lowered to [`Op`]s that work on the register
//! file directly; everything else in a block runs through the `Uop` handlers or the generic ones,
//! exactly as in a burst. A backward pass over the block finds the instructions whose status
//! flags nothing reads before they are all overwritten; those skip the lazy-flag record, and a
//! CMP or TEST among them vanishes. Every instruction that may fault, leave the block or read
//! RFLAGS counts as a reader, so RFLAGS is exact wherever an exception handler, a VM exit or
//! the next block can see it (QEMU's TCG makes the same argument for its condition codes).
//!
//! The ops run threaded. Each op kind has its own handler (`Cpu::run_op`, one instance per
//! kind and one more for its 64-bit operands, which masks nothing, both listed in
//! `Handlers::TABLE`), which runs its op and ends by jumping to the next op's
//! handler (`Cpu::next_op`): a call in tail position, which the compiler makes a jump. So there
//! is no central dispatch loop: each handler has its own indirect jump, whose target the branch
//! predictor learns from that op kind's successors, and each handler keeps the CPU, the ops
//! left and `acc` (below) in registers instead of sharing one huge function's registers with
//! every other op. A handler that needs a call (a data-page miss, a `Uop` or generic
//! instruction, CALL and RET, a condition it does not evaluate itself) makes it in a function
//! of its own in tail position, so the hit paths need no stack frame. Where the compiler does not turn a tail
//! call into a jump the handlers nest, at most one per op of the block; a block that branches
//! back to its start returns to `Cpu::run_ops`, which starts the next pass.
//!
//! A register-only loop is bound by latency as much as by the number of host instructions:
//! each op stores its result to the register file in memory and the next loads it back, a
//! store-to-load forwarding on the chain of every dependent pair. So the flagless arithmetic
//! ops also pass their result to the next handler in a register (`acc`), and a forward pass
//! (`forward`) gives an op that reads that result, while its register has not been written
//! since, a form that takes it from there. Every op still writes the register file, so nothing
//! else changes.

use std::cell::Cell;
use std::marker::PhantomData;
use std::rc::Rc;

use iced_x86::Mnemonic as M;
use iced_x86::{ConditionCode as CC, Decoder, DecoderOptions, FlowControl, Instruction};

use crate::Cpu;
use crate::bus::Bus;
use crate::fault::{Ex, Exc};
use crate::flags::{FlagOp, mask};
use crate::mmu::{Access, read_le, write_le};
use crate::ops::arith::AluOp;
use crate::ops::shift::shift_status;
use crate::regs::Gpr;
use crate::state::Seg;
use crate::uop::{Kind, Opnd, Sh, Uop};

/// The most instructions in one block.
pub(crate) const MAX_INSNS: usize = 64;

/// Block table entries (a power of two).
const TABLE: usize = 1 << 12;

/// Ops, `Uop`s or generic instructions held before everything is dropped and rebuilt.
const ARENA: usize = 1 << 18;

/// Declares the op kinds, the list of them (`KINDS`, in discriminant order) and the table of
/// their handlers (`Handlers::TABLE`), from one list.
macro_rules! kinds {
    ($(#[$meta:meta])* pub(crate) enum K { $($(#[$doc:meta])* $k:ident,)* }) => {
        $(#[$meta])*
        pub(crate) enum K { $($(#[$doc])* $k,)* }

        /// Every kind, in discriminant order.
        const KINDS: [K; [$(K::$k),*].len()] = [$(K::$k),*];

        impl<B: Bus> Handlers<B> {
            /// The handlers, indexed by an op's code (`Op::code`): each kind's, and each
            /// kind's for 64-bit operands (`WIDE`).
            const TABLE: [Handler<B>; 256] = {
                // Every code an op may hold is set below.
                let mut table: [Handler<B>; 256] = [Cpu::run_op::<B, { K::Uop as u8 }>; 256];
                $(
                    table[K::$k as usize] = Cpu::run_op::<B, { K::$k as u8 }>;
                    table[K::$k as usize | WIDE as usize] = Cpu::run_op::<B, { K::$k as u8 | WIDE }>;
                )*
                table
            };
        }
    };
}

kinds! {
/// What an [`Op`] does. `R`: the source is register `s`; `I`: the source is `imm`. `Nf`: the
/// status flags are dead and not recorded. Widths are 32 or 64 bits (`Op::w`); a 32-bit result
/// is zero-extended into the register (SDM Vol. 1 §3.4.1.1). CMP and TEST, which write no
/// register, also come at 8 and 16 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum K {
    MovR,
    MovI,
    AddR,
    AddI,
    SubR,
    SubI,
    AndR,
    AndI,
    OrR,
    OrI,
    XorR,
    XorI,
    CmpR,
    CmpI,
    TestR,
    TestI,
    AddRNf,
    AddINf,
    SubRNf,
    SubINf,
    AndRNf,
    AndINf,
    OrRNf,
    OrINf,
    XorRNf,
    XorINf,
    /// Shifts and rotates by `x`, a count already masked and not 0.
    Shl,
    Shr,
    Sar,
    Rol,
    Ror,
    ShlNf,
    ShrNf,
    SarNf,
    RolNf,
    RorNf,
    Inc,
    Dec,
    Neg,
    IncNf,
    DecNf,
    NegNf,
    Not,
    /// IMUL d, s.
    Imul2,
    Imul2Nf,
    /// IMUL d, s, imm.
    Imul3,
    Imul3Nf,
    /// MOVZX/MOVSX/MOVSXD d, s: `x` is the source width.
    Movzx,
    Movsx,
    /// LEA d, [s + index * scale + imm]: `x` holds the index (bits 0-3), "no index" (bit 4),
    /// "no base" (bit 7) and log2 of the scale (bits 5-6).
    Lea,
    /// CMOVcc d, s: `x` is the condition.
    Cmov,
    /// SETcc on the low byte of `d`.
    Setcc,
    /// Jcc rel (the last instruction): `imm` is the target relative to the instruction.
    Jcc,
    /// JMP rel (the last instruction).
    Jmp,
    /// CMOVcc, SETcc and Jcc on E or NE, the commonest conditions: their handlers read ZF
    /// without first finding out which condition they evaluate.
    CmovZ,
    SetccZ,
    JccZ,
    /// CMP or TEST (register or immediate forms, any width) fused with the `CmovZ` or
    /// `SetccZ` after it when nothing reads the flags after that (`fuse_on_zf`): ZF is
    /// computed from the operands, and no flags are recorded. `d`, `s`, `sh` are the
    /// comparison's, `x` the condition; `imm` = the comparison's immediate (32 bits,
    /// sign-extended) | the consumer's `d` << 32 | its `s` << 40 | its `sh` << 48 | SETcc << 56.
    CmpRZ,
    CmpIZ,
    TestRZ,
    TestIZ,
    /// CMP or TEST fused with the `JccZ` after it, the block's last instruction
    /// (`fuse_branch`): the flags are recorded, and the condition is taken from the result.
    /// `d`, `s`, `sh` and `x` as in `CmpRZ`, `off` and `len` the Jcc's; `imm` = the
    /// comparison's immediate (32 bits, sign-extended) | the Jcc's `imm` (32 bits,
    /// sign-extended) << 32.
    CmpRJz,
    CmpIJz,
    TestRJz,
    TestIJz,
    /// Fused `MOV d, s` and the op named, with dead flags: `d = s op x` for shifts and
    /// rotates (x the count), `d = s op r[x]` for the register forms, `d = s op imm`.
    ShlNf3,
    ShrNf3,
    RolNf3,
    RorNf3,
    XorRNf3,
    AddRNf3,
    SubRNf3,
    AndINf3,
    AddINf3,
    /// Forms of the ops above that take an operand from `acc`, the result of the last op that
    /// `produces` one, instead of the register file (`forward`): `A`, the first operand (`d`
    /// of a two-operand form, `s` of a fused one); `B`, the second (`s`).
    AddRNfA,
    AddRNfB,
    SubRNfA,
    SubRNfB,
    AndRNfA,
    AndRNfB,
    OrRNfA,
    OrRNfB,
    XorRNfA,
    XorRNfB,
    Imul2NfA,
    Imul2NfB,
    AddINfA,
    SubINfA,
    AndINfA,
    OrINfA,
    XorINfA,
    ShlNfA,
    ShrNfA,
    IncNfA,
    DecNfA,
    ShlNf3A,
    ShrNf3A,
    RolNf3A,
    XorRNf3A,
    AddRNf3A,
    SubRNf3A,
    AndINf3A,
    AddINf3A,
    MovRB,
    /// ADD, OR, AND, SUB or XOR (`x` = `AluOp as u8`) of the immediate `imm` to the low byte
    /// of `d` (AL to R15B, not AH to BH), which leaves the other bytes; flags recorded or dead.
    AluB,
    AluBNf,
    /// MOV of the immediate `imm` to the low byte of `d`.
    MovIB,
    /// `MOV d, [mem]` (32 or 64 bits): the address as LEA's (`s`, `x`), `imm` = displacement
    /// (32 bits) | instruction index << 32 | segment << 48 | RIP-relative << 56 | the segment
    /// is FS or GS (it has a base) << 61.
    Load,
    /// `MOV [mem], s` (32 or 64 bits): the address as `Load`'s, with the base in `d`.
    Store,
    /// `op d, [mem]` for an ALU operation (32 or 64 bits, flags recorded): `Load` with the
    /// operation in `imm` bits 57 to 60 (`AluOp as u8`).
    LoadAlu,
    /// `LoadAlu` for ADD, SUB, AND, OR or XOR with dead flags.
    LoadAluNf,
    /// `MOVZX d, [mem]` from a byte or a word: `Load` with the size in bytes in `imm` bits 57
    /// to 60.
    LoadZx,
    /// `MOV d, [s + disp]` and `MOV [d + disp], s`, 64 bits, through DS or SS (flat in 64-bit
    /// mode), the commonest forms: `imm` = the displacement, `x` = instruction index | SS << 7.
    LoadB,
    StoreB,
    /// `MOVZX d, s` from a high-byte register (AH, CH, DH, BH): `s` = the full register.
    MovzxHigh,
    /// `PUSH d` (64 bits): `imm` = instruction index << 32.
    Push,
    /// `POP d` (64 bits): `imm` = instruction index << 32.
    Pop,
    /// `CALL rel` (64 bits), the block's last instruction: `imm` = target - RIP.
    Call,
    /// `RET` (64 bits, no immediate), the block's last instruction.
    Ret,
    /// A `Uop` kept in the block's arena: `imm` = arena index | instruction index << 32.
    Uop,
    /// A burst-safe generic instruction, kept in the arena like `Uop`.
    Generic,
}
}

/// The bit of an op's code (`Op::code`) that marks 64-bit operands: its handler, compiled for
/// them, masks nothing.
const WIDE: u8 = 0x80;
const _: () = assert!(KINDS.len() <= WIDE as usize);

/// The handler of an op kind: runs the first op of a slice and, through `Cpu::next_op`, the
/// rest.
type Handler<B> = fn(&mut Cpu, &mut B, &Pass, &[Op], u64) -> Flow;

/// The handlers for a bus type (`Handlers::TABLE`, declared with the kinds).
struct Handlers<B>(PhantomData<B>);

/// How a pass through a block's ops ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    /// The pass ended: RIP and the count are those after the last instruction run, or, if an
    /// op raised an exception (kept in `Pass::exc`), those of that instruction.
    Done,
    /// As `Done`, after the block's last instruction, a Jcc or JMP (`Cpu::run_ops` runs the
    /// block again if it branched back to its start).
    Branched,
}

/// What the handlers share during the passes of one run of a block through its ops.
struct Pass {
    /// The generation of the page the block was built from, and the linear address of the
    /// byte after its last instruction.
    generation: u32,
    end: u64,
    /// The block's RAM page.
    page: usize,
    /// The linear address of the block's page.
    base: u64,
    /// Instructions retired before the current pass, and the number of the block's last one.
    start: Cell<u64>,
    last: Cell<u64>,
    /// The exception that ended the pass, if one did.
    exc: Cell<Option<Exc>>,
}

impl Pass {
    /// Instructions retired before the current pass.
    #[inline(always)]
    fn start(&self) -> u64 {
        self.start.get()
    }

    /// The number of the block's last instruction in the current pass.
    #[inline(always)]
    fn last(&self) -> u64 {
        self.last.get()
    }

    /// Ends the pass with exception `e`.
    #[cold]
    fn fail(&self, e: Exc) -> Flow {
        self.exc.set(Some(e));
        Flow::Done
    }

    /// Ends the pass with the outcome of the op that ran last.
    #[inline(always)]
    fn done(&self, r: Ex<()>) -> Flow {
        match r {
            Ok(()) => Flow::Done,
            Err(e) => self.fail(e),
        }
    }
}

/// One lowered instruction: 16 bytes.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct Op {
    /// The kind (`K as u8`), with `WIDE` if the operands are 64 bits wide (`sh` is 0): the
    /// index of the op's handler. `WIDE` is a promise, not a duty: an op without it runs the
    /// kind's general handler.
    code: u8,
    /// The registers: typed, so that indexing the register file with them needs neither a
    /// mask nor a bounds check.
    d: Gpr,
    s: Gpr,
    x: u8,
    /// 64 minus the operand width in bits (the width is 32 or 64, 8 for SETcc), or minus the
    /// branch-target width.
    sh: u8,
    /// Instruction length.
    len: u8,
    /// Offset of the instruction in its page.
    off: u16,
    /// The immediate, displacement or target, as the kind says; for a register form without
    /// one, the mask of the operand width ([`Op::rmask`]).
    imm: u64,
}

const _: () = assert!(size_of::<Op>() == 16);

impl Op {
    /// What the op does.
    #[inline(always)]
    fn kind(&self) -> K {
        KINDS[usize::from(self.code & !WIDE)]
    }

    /// The op as one of kind `kind` over the same operands (64-bit ones still marked so).
    #[inline(always)]
    fn with_kind(self, kind: K) -> Op {
        Op {
            code: kind as u8 | (self.code & WIDE),
            ..self
        }
    }
    /// The mask of the operand width.
    #[inline(always)]
    fn mask(&self) -> u64 {
        u64::MAX >> (self.sh & 63)
    }

    /// The mask of the operand width, for an op without an immediate: the lowering keeps it
    /// in `imm` (one AND with memory instead of computing it from `sh`).
    #[inline(always)]
    fn rmask(&self) -> u64 {
        self.imm
    }

    /// The operand width in bits.
    #[inline(always)]
    fn width(&self) -> u32 {
        64 - u32::from(self.sh)
    }

    /// A memory op's access size in bytes (its operand width: 32 or 64 bits).
    #[inline(always)]
    fn size(&self) -> usize {
        if self.sh == 0 { 8 } else { 4 }
    }

    /// Whether a `Load`, `LoadAlu` or `Store` addresses a flat segment (not FS or GS), whose
    /// offset is the linear address.
    #[inline(always)]
    fn flat(&self) -> bool {
        (self.imm >> 61) & 1 == 0
    }

    /// A memory op's instruction index in its block.
    #[inline(always)]
    fn index(&self) -> u64 {
        match self.kind() {
            K::LoadB | K::StoreB => u64::from(self.x & 0x3f),
            _ => (self.imm >> 32) & 0xff,
        }
    }
}

/// A block (16 bytes: found, it is copied into registers, not memory).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Block {
    /// The page generation the block was built from.
    generation: u32,
    /// First op in the arena.
    start: u32,
    ops: u16,
    /// Instructions (0: the first instruction cannot start a block).
    pub insns: u16,
    /// Offset in the page of the byte after the last instruction (4096 at the page's end).
    end: u16,
}

const _: () = assert!(size_of::<Block>() == 16);

/// A block in the table, under its key.
#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// RAM offset of the first instruction + 1 (0: empty).
    key: u64,
    block: Block,
}

/// The block cache.
#[derive(Debug)]
pub(crate) struct Blocks {
    table: Vec<Entry>,
    /// Shared with the block that runs (`run_block`), so that its handlers may borrow the CPU.
    ops: Rc<Vec<Op>>,
    uops: Vec<Uop>,
    generic: Vec<Instruction>,
    /// Scratch for `build`.
    scratch: Vec<(Instruction, Uop)>,
    /// Blocks built since creation.
    pub built: u64,
    /// Flushes since creation.
    pub flushes: u64,
}

#[inline(always)]
fn slot(off: usize) -> usize {
    ((off as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - TABLE.trailing_zeros())) as usize
}

impl Blocks {
    pub fn new() -> Self {
        Self {
            table: Vec::new(),
            ops: Rc::new(Vec::new()),
            uops: Vec::new(),
            generic: Vec::new(),
            scratch: Vec::new(),
            built: 0,
            flushes: 0,
        }
    }

    /// Drops every block.
    pub fn flush(&mut self) {
        self.flushes += 1;
        self.table.clear();
        // A block running now keeps the arena it runs from.
        match Rc::get_mut(&mut self.ops) {
            Some(ops) => ops.clear(),
            None => self.ops = Rc::new(Vec::new()),
        }
        self.uops.clear();
        self.generic.clear();
    }

    /// The block starting at RAM offset `off`, if built from the page's current contents
    /// (`generation`).
    #[inline(always)]
    pub fn find(&self, off: usize, generation: u32) -> Option<Block> {
        let e = self.table.get(slot(off))?;
        (e.key == off as u64 + 1 && e.block.generation == generation).then_some(e.block)
    }

    fn insert(&mut self, off: usize, block: Block) {
        if self.table.is_empty() {
            self.table = vec![Entry::default(); TABLE];
        }
        if let Some(s) = self.table.get_mut(slot(off)) {
            *s = Entry {
                key: off as u64 + 1,
                block,
            };
        }
    }
}

/// How an instruction treats the status flags, for the liveness pass.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Writes all six and reads none.
    Writes,
    /// Neither reads nor writes them, and cannot fault.
    None,
    /// Reads them, writes some of them, may fault or may leave the block.
    Reads,
}

impl Cpu {
    /// Builds the block at RAM offset `off` (a 64-bit code page already translated) and
    /// returns it; one with no instructions if the first cannot start a block.
    #[inline(never)]
    pub(crate) fn build_block<B: Bus>(&mut self, bus: &B, off: usize) -> Block {
        let page = off >> 12;
        let Some(generation) = self.icache.mark_code(page) else {
            return Block::default();
        };
        let blocks = &mut self.icache.blocks;
        if blocks.ops.len() + MAX_INSNS > ARENA
            || blocks.uops.len() + MAX_INSNS > ARENA
            || blocks.generic.len() + MAX_INSNS > ARENA
        {
            blocks.flush();
        }
        blocks.built += 1;
        let end_of_page = (page + 1) << 12;
        let bytes = bus.ram().get(off..end_of_page).unwrap_or(&[]);
        let mut decoder = Decoder::new(64, bytes, DecoderOptions::NONE);
        let mut scratch = std::mem::take(&mut blocks.scratch);
        scratch.clear();
        while scratch.len() < MAX_INSNS && decoder.can_decode() {
            // At IP 0, as the decode cache and the `Uop` handlers expect.
            decoder.set_ip(0);
            let ins = decoder.decode();
            self.counters.decode_misses += 1;
            // Invalid, or running past the page: the full path decides.
            if ins.is_invalid() || ins.mnemonic() == M::Pause {
                break;
            }
            let uop = Uop::compile(&ins);
            if uop.kind == Kind::Generic {
                break;
            }
            scratch.push((ins, uop));
            if ins.flow_control() != FlowControl::Next {
                break;
            }
        }
        // Liveness of the status flags after each instruction: live at the end of the block.
        let mut live_after = [false; MAX_INSNS];
        let mut live = true;
        for (i, (ins, uop)) in scratch.iter().enumerate().rev() {
            live_after[i] = live;
            live = match effect(ins, uop) {
                Effect::Writes => false,
                Effect::None => live,
                Effect::Reads => true,
            };
        }
        // No block runs while one is built: the arena is not shared.
        let ops = Rc::make_mut(&mut blocks.ops);
        let start = ops.len();
        let mut pos = 0usize;
        for (i, (ins, uop)) in scratch.iter().enumerate() {
            let base = Op {
                code: K::Uop as u8,
                d: Gpr::Rax,
                s: Gpr::Rax,
                x: 0,
                sh: 0,
                len: ins.len() as u8,
                off: ((off + pos) & 0xfff) as u16,
                imm: 0,
            };
            pos += ins.len();
            match lower(uop, live_after[i], base, i) {
                Lowered::Op(op) => ops.push(op),
                Lowered::Nothing => {}
                Lowered::Slow if uop.kind == Kind::Safe => {
                    ops.push(Op {
                        code: K::Generic as u8,
                        imm: blocks.generic.len() as u64 | ((i as u64) << 32),
                        ..base
                    });
                    blocks.generic.push(*ins);
                }
                Lowered::Slow => {
                    ops.push(Op {
                        imm: blocks.uops.len() as u64 | ((i as u64) << 32),
                        ..base
                    });
                    blocks.uops.push(*uop);
                }
            }
        }
        fuse(ops, start);
        forward(ops, start);
        let block = Block {
            generation,
            start: start as u32,
            ops: (ops.len() - start) as u16,
            insns: scratch.len() as u16,
            end: ((off & 0xfff) + pos) as u16,
        };
        blocks.scratch = scratch;
        blocks.insert(off, block);
        block
    }

    /// Runs `block`, whose first instruction is at RIP, and retires its instructions: all of
    /// them, or up to one that faults (RIP left at it, as a fault requires), leaves the block
    /// early (a taken branch of a generic instruction, a REP iteration), touched a device or
    /// wrote the block's own page (RIP after it). `page` is the block's RAM page. A block
    /// that branches back to its own start runs again at once while the next run fits before
    /// `limit` (the burst's), as the burst would run it, without looking it up.
    #[inline(always)]
    pub(crate) fn run_block<B: Bus>(
        &mut self,
        bus: &mut B,
        block: &Block,
        page: usize,
        limit: u64,
    ) -> Ex<()> {
        // The block runs from its own reference to the arena, so that the handlers may borrow
        // the CPU; a flush meanwhile (nothing in a block flushes, but a generic handler might
        // one day) leaves it that arena.
        let ops = Rc::clone(&self.icache.blocks.ops);
        let start = block.start as usize;
        let slice = ops
            .get(start..start + usize::from(block.ops))
            .unwrap_or(&[]);
        let r = self.run_ops(bus, slice, block, page, limit);
        // The common outcome as a constant: the caller's check of it then folds, rather than
        // reload the whole result from where the loop left it.
        if r.is_ok() {
            return Ok(());
        }
        r
    }

    #[inline(always)]
    fn run_ops<B: Bus>(
        &mut self,
        bus: &mut B,
        ops: &[Op],
        block: &Block,
        page: usize,
        limit: u64,
    ) -> Ex<()> {
        let entry = self.rip;
        let insns = u64::from(block.insns);
        // The code page was translated under this generation (the burst's fetch page).
        let tlb_generation = self.tlb.generation();
        // Loads and stores look up the data pages without their key (`find_synced`): the
        // burst has synced it, and every op that might change it (a `Uop`, generic or missed
        // memory op) syncs it again, so neither a block nor a loop within one checks it.
        // Instructions retired before the pass. An op that may touch memory or fault first
        // sets RIP and the count to its own instruction's (virtual time included), so a
        // device, a fault and an early exit see them as single steps would.
        let start = self.retired;
        let pass = Pass {
            generation: block.generation,
            end: (entry & !0xfff) + u64::from(block.end),
            page,
            base: entry & !0xfff,
            start: Cell::new(start),
            last: Cell::new(start + insns - 1),
            exc: Cell::new(None),
        };
        loop {
            // `acc` holds nothing yet: `forward` starts each block with it empty.
            match self.next_op(bus, &pass, ops, 0) {
                Flow::Done => return pass.exc.take().map_or(Ok(()), Err),
                // A loop within the block: nothing the burst checks between blocks has
                // changed (a device, a fault or a write to this page ended the block before
                // its branch), so it runs again if it fits.
                Flow::Branched => {
                    let start = self.retired;
                    if self.rip != entry
                        || start + insns > limit
                        || self.tlb.generation() != tlb_generation
                    {
                        return Ok(());
                    }
                    self.counters.blocks_run += 1;
                    pass.start.set(start);
                    pass.last.set(start + insns - 1);
                }
            }
        }
    }

    /// Runs the first of `ops`, which runs the next in turn (a tail call: the jump to the next
    /// handler is made from each handler, not from one dispatch site), or ends the pass after
    /// the block's last op.
    #[inline(always)]
    fn next_op<B: Bus>(&mut self, bus: &mut B, pass: &Pass, ops: &[Op], acc: u64) -> Flow {
        match ops.first() {
            Some(op) => Handlers::<B>::TABLE[usize::from(op.code)](self, bus, pass, ops, acc),
            None => {
                self.rip = pass.end;
                self.retired = pass.last() + 1;
                Flow::Done
            }
        }
    }

    /// The handler of the ops whose code (`Op::code`: the kind, and `WIDE` for 64-bit
    /// operands) is `CODE` (`Handlers::TABLE`): runs the first of `ops`, whose code it is,
    /// then the rest (`next_op`). `acc` is the result of the last op that `produces` one
    /// (`forward`).
    fn run_op<B: Bus, const CODE: u8>(
        &mut self,
        bus: &mut B,
        pass: &Pass,
        ops: &[Op],
        mut acc: u64,
    ) -> Flow {
        let kind = const { KINDS[(CODE & !WIDE) as usize] };
        let Some((op, rest)) = ops.split_first() else {
            return self.next_op(bus, pass, ops, acc);
        };
        // The masks of the operand width (`Op::mask`, `Op::rmask`): none for 64-bit operands,
        // whose handlers know it.
        let wide = CODE & WIDE != 0;
        let (m, rm) = if wide {
            (u64::MAX, u64::MAX)
        } else {
            (op.mask(), op.rmask())
        };
        let (base, start) = (pass.base, pass.start());
        let (d, s) = (op.d as usize, op.s as usize);
        let g = &mut self.gpr;
        match kind {
            K::MovR => g[d] = g[s] & rm,
            K::MovRB => g[d] = acc & rm,
            K::MovI => g[d] = op.imm,
            K::MovIB => g[d] = (g[d] & !0xff) | op.imm,
            K::AluB | K::AluBNf => {
                let (a, b) = (g[d] & 0xff, op.imm);
                let (r, fop) = match ALU_OPS[usize::from(op.x) % ALU_OPS.len()] {
                    AluOp::Add => (a.wrapping_add(b) & 0xff, FlagOp::Add),
                    AluOp::Sub => (a.wrapping_sub(b) & 0xff, FlagOp::Sub),
                    AluOp::Or => (a | b, FlagOp::Logic),
                    AluOp::Xor => (a ^ b, FlagOp::Logic),
                    _ => (a & b, FlagOp::Logic),
                };
                g[d] = (g[d] & !0xff) | r;
                if kind == K::AluB {
                    let (a, b) = if fop == FlagOp::Logic { (0, 0) } else { (a, b) };
                    self.flags.record(fop, 56, a, b, r, false);
                }
            }
            // The operands masked to the width, whose mask a register form keeps in `imm`
            // (an immediate is masked already); the flags recorded as they are.
            K::AddR | K::AddI => {
                let reg = kind == K::AddR;
                let m = if reg { rm } else { m };
                let (a, b) = (g[d] & m, if reg { g[s] & m } else { op.imm });
                let r = a.wrapping_add(b) & m;
                self.flags.record(FlagOp::Add, op.sh, a, b, r, false);
                g[d] = r;
            }
            K::SubR | K::SubI | K::CmpR | K::CmpI => {
                let reg = matches!(kind, K::SubR | K::CmpR);
                let m = if reg { rm } else { m };
                let (a, b) = (g[d] & m, if reg { g[s] & m } else { op.imm });
                let r = a.wrapping_sub(b) & m;
                self.flags.record(FlagOp::Sub, op.sh, a, b, r, false);
                if matches!(kind, K::SubR | K::SubI) {
                    g[d] = r;
                }
            }
            // One arm for both sources: each handler is compiled for its own `kind`, so the
            // choice folds away.
            K::AndR | K::OrR | K::XorR | K::TestR | K::AndI | K::OrI | K::XorI | K::TestI => {
                let reg = matches!(kind, K::AndR | K::OrR | K::XorR | K::TestR);
                let m = if reg { rm } else { m };
                let (a, b) = (g[d], if reg { g[s] } else { op.imm });
                let r = match kind {
                    K::OrR | K::OrI => a | b,
                    K::XorR | K::XorI => a ^ b,
                    _ => a & b,
                } & m;
                self.flags.record(FlagOp::Logic, op.sh, 0, 0, r, false);
                if !matches!(kind, K::TestR | K::TestI) {
                    g[d] = r;
                }
            }
            // The flagless forms (`produces`): each leaves its result in `acc`.
            K::AddRNf => acc = put(g, d, g[d].wrapping_add(g[s]) & rm),
            K::AddRNfA => acc = put(g, d, acc.wrapping_add(g[s]) & rm),
            K::AddRNfB => acc = put(g, d, g[d].wrapping_add(acc) & rm),
            K::SubRNf => acc = put(g, d, g[d].wrapping_sub(g[s]) & rm),
            K::SubRNfA => acc = put(g, d, acc.wrapping_sub(g[s]) & rm),
            K::SubRNfB => acc = put(g, d, g[d].wrapping_sub(acc) & rm),
            K::AndRNf => acc = put(g, d, g[d] & g[s] & rm),
            K::AndRNfA => acc = put(g, d, acc & g[s] & rm),
            K::AndRNfB => acc = put(g, d, g[d] & acc & rm),
            K::OrRNf => acc = put(g, d, (g[d] | g[s]) & rm),
            K::OrRNfA => acc = put(g, d, (acc | g[s]) & rm),
            K::OrRNfB => acc = put(g, d, (g[d] | acc) & rm),
            K::XorRNf => acc = put(g, d, (g[d] ^ g[s]) & rm),
            K::XorRNfA => acc = put(g, d, (acc ^ g[s]) & rm),
            K::XorRNfB => acc = put(g, d, (g[d] ^ acc) & rm),
            K::Imul2Nf => acc = put(g, d, g[d].wrapping_mul(g[s]) & rm),
            K::Imul2NfA => acc = put(g, d, acc.wrapping_mul(g[s]) & rm),
            K::Imul2NfB => acc = put(g, d, g[d].wrapping_mul(acc) & rm),
            K::Imul3Nf => acc = put(g, d, g[s].wrapping_mul(op.imm) & m),
            K::AddINf => acc = put(g, d, g[d].wrapping_add(op.imm) & m),
            K::AddINfA => acc = put(g, d, acc.wrapping_add(op.imm) & m),
            K::SubINf => acc = put(g, d, g[d].wrapping_sub(op.imm) & m),
            K::SubINfA => acc = put(g, d, acc.wrapping_sub(op.imm) & m),
            K::AndINf => acc = put(g, d, g[d] & op.imm),
            K::AndINfA => acc = put(g, d, acc & op.imm),
            K::OrINf => acc = put(g, d, (g[d] | op.imm) & m),
            K::OrINfA => acc = put(g, d, (acc | op.imm) & m),
            K::XorINf => acc = put(g, d, (g[d] ^ op.imm) & m),
            K::XorINfA => acc = put(g, d, (acc ^ op.imm) & m),
            K::ShlNf => acc = put(g, d, (g[d] << op.x) & rm),
            K::ShlNfA => acc = put(g, d, (acc << op.x) & rm),
            K::ShrNf => acc = put(g, d, (g[d] & rm) >> op.x),
            K::ShrNfA => acc = put(g, d, (acc & rm) >> op.x),
            K::IncNf => acc = put(g, d, g[d].wrapping_add(1) & rm),
            K::IncNfA => acc = put(g, d, acc.wrapping_add(1) & rm),
            K::DecNf => acc = put(g, d, g[d].wrapping_sub(1) & rm),
            K::DecNfA => acc = put(g, d, acc.wrapping_sub(1) & rm),
            K::ShlNf3 => acc = put(g, d, (g[s] << op.x) & rm),
            K::ShlNf3A => acc = put(g, d, (acc << op.x) & rm),
            K::ShrNf3 => acc = put(g, d, (g[s] & rm) >> op.x),
            K::ShrNf3A => acc = put(g, d, (acc & rm) >> op.x),
            K::RolNf3 => acc = put(g, d, rotate(op, g[s], wide, false)),
            K::RolNf3A => acc = put(g, d, rotate(op, acc, wide, false)),
            K::RorNf3 => g[d] = rotate(op, g[s], wide, true),
            K::XorRNf3 => acc = put(g, d, (g[s] ^ g[op.x as usize & 15]) & rm),
            K::XorRNf3A => acc = put(g, d, (acc ^ g[op.x as usize & 15]) & rm),
            K::AddRNf3 => {
                acc = put(g, d, g[s].wrapping_add(g[op.x as usize & 15]) & rm);
            }
            K::AddRNf3A => {
                acc = put(g, d, acc.wrapping_add(g[op.x as usize & 15]) & rm);
            }
            K::SubRNf3 => {
                acc = put(g, d, g[s].wrapping_sub(g[op.x as usize & 15]) & rm);
            }
            K::SubRNf3A => {
                acc = put(g, d, acc.wrapping_sub(g[op.x as usize & 15]) & rm);
            }
            K::AndINf3 => acc = put(g, d, g[s] & op.imm),
            K::AndINf3A => acc = put(g, d, acc & op.imm),
            K::AddINf3 => acc = put(g, d, g[s].wrapping_add(op.imm) & m),
            K::AddINf3A => acc = put(g, d, acc.wrapping_add(op.imm) & m),
            K::SarNf => {
                let v = ((g[d] << op.sh) as i64) >> op.sh;
                g[d] = ((v >> op.x) as u64) & m;
            }
            K::RolNf => g[d] = rotate(op, g[d], wide, false),
            K::RorNf => g[d] = rotate(op, g[d], wide, true),
            K::Shl => self.shift_live(op, d, M::Shl),
            K::Shr => self.shift_live(op, d, M::Shr),
            K::Sar => self.shift_live(op, d, M::Sar),
            K::Rol | K::Ror => {
                let mnemonic = if kind == K::Rol { M::Rol } else { M::Ror };
                let a = g[d] & m;
                let r = self.shift_compute(mnemonic, op.width(), a, u64::from(op.x));
                self.gpr[d] = r;
            }
            K::Inc | K::Dec => {
                let (a, m) = (g[d] & m, m);
                let cf = self.flags.cf();
                let (r, fop) = if kind == K::Inc {
                    (a.wrapping_add(1) & m, FlagOp::Inc)
                } else {
                    (a.wrapping_sub(1) & m, FlagOp::Dec)
                };
                self.flags.set_lazy(fop, op.width(), a, 1, r, cf);
                self.gpr[d] = r;
            }
            K::Neg => {
                let a = g[d] & m;
                let r = 0u64.wrapping_sub(a) & m;
                self.flags.set_lazy(FlagOp::Sub, op.width(), 0, a, r, false);
                g[d] = r;
            }
            K::NegNf => g[d] = 0u64.wrapping_sub(g[d]) & rm,
            K::Not => g[d] = !g[d] & rm,
            K::Imul2 | K::Imul3 => {
                let (a, b) = if kind == K::Imul2 {
                    (g[d] & m, g[s] & m)
                } else {
                    (g[s] & m, op.imm)
                };
                let r = self.imul_trunc(op.width(), a, b);
                self.gpr[d] = r;
            }
            K::Movzx => g[d] = g[s] & mask(u32::from(op.x)),
            K::Movsx => {
                let sh = 64 - u32::from(op.x);
                g[d] = ((((g[s] << sh) as i64) >> sh) as u64) & m;
            }
            K::Lea => g[d] = add_address(op, g, s, op.imm) & m,
            K::MovzxHigh => g[d] = (g[s] >> 8) & 0xff,
            // Loads and stores: the data-page hit runs inline (RAM within one page, so
            // no fault, no device and no need to make the instruction current); a miss
            // takes the full path. In 64-bit mode the offset is the linear address, but
            // for FS and GS, whose ops always miss (`Op::flat`).
            K::LoadB => {
                let ea = g[s].wrapping_add(op.imm);
                match self.load_hit(bus, ea, 8, true) {
                    Some(v) => self.gpr[d] = v,
                    None => return self.mem_miss(bus, pass, ops, acc, ea, 8),
                }
            }
            K::Load | K::LoadAlu | K::LoadAluNf | K::LoadZx => {
                let size = if kind == K::LoadZx {
                    ((op.imm >> 57) & 15) as usize
                } else {
                    op.size()
                };
                let ea = data_address(op, g, base, s);
                match self.load_hit(bus, ea, size, op.flat()) {
                    Some(v) => match kind {
                        K::Load | K::LoadZx => self.gpr[d] = v,
                        K::LoadAluNf => self.gpr[d] = alu_nf(op, self.gpr[d], v),
                        _ => self.load_alu(op, d, v),
                    },
                    None => return self.mem_miss(bus, pass, ops, acc, ea, size),
                }
            }
            K::Pop => {
                let ea = g[Gpr::Rsp as usize];
                match self.load_hit(bus, ea, 8, true) {
                    // POP RSP loads the value read (the increment is overwritten).
                    Some(v) => {
                        self.gpr[Gpr::Rsp as usize] = ea.wrapping_add(8);
                        self.gpr[d] = v;
                    }
                    None => return self.mem_miss(bus, pass, ops, acc, ea, 8),
                }
            }
            K::StoreB | K::Store | K::Push => {
                let (ea, size, v, flat) = match kind {
                    K::StoreB => (g[d].wrapping_add(op.imm), 8, g[s], true),
                    K::Push => (g[Gpr::Rsp as usize].wrapping_sub(8), 8, g[d], true),
                    _ => (data_address(op, g, base, d), op.size(), g[s] & m, op.flat()),
                };
                match self.store_hit(bus, ea, size, v, flat) {
                    Some(code) => {
                        if kind == K::Push {
                            self.gpr[Gpr::Rsp as usize] = ea;
                        }
                        // Code written (any page, this block's included): the next
                        // instruction is decoded afresh.
                        if code {
                            let (_, fall) = self.enter_op(op, base, start + op.index());
                            self.rip = fall;
                            self.retired += 1;
                            return Flow::Done;
                        }
                    }
                    None => return self.mem_miss(bus, pass, ops, acc, ea, size),
                }
            }
            // The commonest conditions (E, NE, S, NS, and the unsigned ones after SUB or CMP) are
            // evaluated here; the others out of line, in tail position, so that these handlers
            // need no stack frame.
            K::Cmov | K::Setcc | K::Jcc | K::Jmp | K::CmovZ | K::SetccZ | K::JccZ => {
                let c = match (kind, op.x) {
                    (K::Jmp, _) => true,
                    (K::CmovZ | K::SetccZ | K::JccZ, x) => {
                        self.flags.get(x86::reg::rflags::ZF) != (x == CC_NE)
                    }
                    (_, CC_E) => self.flags.get(x86::reg::rflags::ZF),
                    (_, CC_NE) => !self.flags.get(x86::reg::rflags::ZF),
                    (_, CC_S) => self.flags.get(x86::reg::rflags::SF),
                    (_, CC_NS) => !self.flags.get(x86::reg::rflags::SF),
                    (_, CC_B | CC_AE | CC_BE | CC_A) => match self.flags.after_sub() {
                        Some((cf, zf)) => match op.x {
                            CC_B => cf,
                            CC_AE => !cf,
                            CC_BE => cf | zf,
                            _ => !(cf | zf),
                        },
                        None => return self.cond_op_slow(bus, pass, ops, acc),
                    },
                    _ => return self.cond_op_slow(bus, pass, ops, acc),
                };
                if let Some(flow) = self.cond_op(kind, op, pass, c, m) {
                    return flow;
                }
            }
            K::CmpRZ | K::CmpIZ | K::TestRZ | K::TestIZ => {
                let a = g[d] & m;
                let b = match kind {
                    K::CmpRZ | K::TestRZ => g[s],
                    _ => op.imm as u32 as i32 as i64 as u64,
                };
                let r = match kind {
                    K::CmpRZ | K::CmpIZ => a.wrapping_sub(b),
                    _ => a & b,
                };
                let c = (r & m == 0) != (op.x == CC_NE);
                let (cd, cs) = ((op.imm >> 32) as usize & 15, (op.imm >> 40) as usize & 15);
                g[cd] = if (op.imm >> 56) & 1 == 0 {
                    // As `cond_op`'s CMOV: without a host branch.
                    let cm = u64::MAX >> ((op.imm >> 48) & 63);
                    std::hint::select_unpredictable(c, g[cs] & cm, g[cd] & cm)
                } else {
                    (g[cd] & !0xff) | u64::from(c)
                };
            }
            K::CmpRJz | K::CmpIJz | K::TestRJz | K::TestIJz => {
                let sub = matches!(kind, K::CmpRJz | K::CmpIJz);
                let a = g[d] & m;
                let b = match kind {
                    K::CmpRJz | K::TestRJz => g[s] & m,
                    _ => (op.imm as u32 as i32 as i64 as u64) & m,
                };
                let r = if sub { a.wrapping_sub(b) & m } else { a & b };
                if sub {
                    self.flags.record(FlagOp::Sub, op.sh, a, b, r, false);
                } else {
                    self.flags.record(FlagOp::Logic, op.sh, 0, 0, r, false);
                }
                let c = (r == 0) != (op.x == CC_NE);
                let rel = (op.imm >> 32) as u32 as i32 as i64 as u64;
                return self.branch_op(pass, op, c, rel, 0);
            }
            K::Call | K::Ret => return self.call_ret_op(bus, pass, op),
            K::Uop | K::Generic => return self.slow_op(bus, pass, ops, acc),
        }
        self.next_op(bus, pass, rest, acc)
    }
}

impl Cpu {
    /// CMOVcc, SETcc or Jcc, the first of `ops`, whose condition its handler does not evaluate
    /// itself: the pass goes on unless the op ended it.
    #[inline(never)]
    fn cond_op_slow<B: Bus>(&mut self, bus: &mut B, pass: &Pass, ops: &[Op], acc: u64) -> Flow {
        let Some((op, rest)) = ops.split_first() else {
            return self.next_op(bus, pass, ops, acc);
        };
        let c = op.kind() == K::Jmp || self.cond(cc(op.x));
        match self.cond_op(op.kind(), op, pass, c, op.mask()) {
            Some(flow) => flow,
            None => self.next_op(bus, pass, rest, acc),
        }
    }

    /// CMOVcc, SETcc, Jcc or JMP (`kind`) once its condition `c` is known (`m`: the mask of
    /// the operand width): how the pass ends, if the op ends it (a branch ends the block).
    #[inline(always)]
    fn cond_op(&mut self, kind: K, op: &Op, pass: &Pass, c: bool, m: u64) -> Option<Flow> {
        let (d, s) = (op.d as usize, op.s as usize);
        match kind {
            K::Cmov | K::CmovZ => {
                // Without a host branch: the guest chose CMOV for a condition that a branch
                // predictor cannot learn. (The masked values, not the registers, are the
                // choices: a choice between two loads would become a branch again. A 32-bit
                // CMOV writes its destination even when false.)
                let (t, f) = (self.gpr[s] & m, self.gpr[d] & m);
                self.gpr[d] = std::hint::select_unpredictable(c, t, f);
                None
            }
            K::Setcc | K::SetccZ => {
                self.gpr[d] = (self.gpr[d] & !0xff) | u64::from(c);
                None
            }
            _ => Some(self.branch_op(pass, op, c, op.imm, op.sh)),
        }
    }

    /// The branch of `op`, the block's last instruction, to `rel` from it if `c` (the target
    /// masked by `sh`, the branch's width as `Op::sh`), else to the next instruction.
    #[inline(always)]
    fn branch_op(&mut self, pass: &Pass, op: &Op, c: bool, rel: u64, sh: u8) -> Flow {
        let rip = pass.base | u64::from(op.off);
        let next = if c {
            let target = rip.wrapping_add(rel) & (u64::MAX >> (sh & 63));
            // A 64-bit target in RIP's page is canonical, as RIP is: nothing to check
            // (blocks run in 64-bit mode).
            if sh != 0 || (target ^ rip) >> 12 != 0 {
                self.rip = rip;
                self.retired = pass.last();
                if let Err(e) = self.branch(target) {
                    return pass.fail(e);
                }
            }
            target
        } else {
            rip.wrapping_add(u64::from(op.len))
        };
        self.rip = next;
        self.retired = pass.last() + 1;
        Flow::Branched
    }
}

impl Cpu {
    /// Makes `op`'s instruction, in the page at `base`, the current one before something that
    /// may fault, touch a device or leave the block: RIP, the next RIP and the instructions
    /// retired before it (`retired`), as a single step would see them. Returns RIP and the
    /// next RIP.
    #[inline(always)]
    fn enter_op(&mut self, op: &Op, base: u64, retired: u64) -> (u64, u64) {
        let rip = base | u64::from(op.off);
        let fall = rip.wrapping_add(u64::from(op.len));
        self.rip = rip;
        self.next_rip = fall;
        self.retired = retired;
        (rip, fall)
    }
}

impl Cpu {
    /// CALL rel or RET, the block's last instruction (instruction `last` of the count).
    #[inline(never)]
    fn call_ret_op<B: Bus>(&mut self, bus: &mut B, pass: &Pass, op: &Op) -> Flow {
        pass.done(self.call_ret(bus, op, pass.base, pass.last()))
    }

    #[inline(always)]
    fn call_ret<B: Bus>(&mut self, bus: &mut B, op: &Op, base: u64, last: u64) -> Ex<()> {
        let (rip, fall) = self.enter_op(op, base, last);
        let rsp = self.gpr[Gpr::Rsp as usize];
        let (target, sp) = if op.kind() == K::Call {
            let target = rip.wrapping_add(op.imm);
            self.branch(target)?;
            let sp = rsp.wrapping_sub(8);
            match self.dpages.find_synced(sp, 8, true) {
                Some(off) if self.write_ram_8(bus, off, fall) => {}
                _ => self.write_seg(bus, Seg::Ss, sp, 8, fall)?,
            }
            (target, sp)
        } else {
            let cached = self.dpages.find_synced(rsp, 8, false);
            let target = match cached.and_then(|off| bus.ram().get(off..off + 8)) {
                Some(bytes) => {
                    self.counters.tlb_hits += 1;
                    read_le(bytes)
                }
                None => self.read_seg(bus, Seg::Ss, rsp, 8)?,
            };
            self.branch(target)?;
            (target, rsp.wrapping_add(8))
        };
        self.gpr[Gpr::Rsp as usize] = sp;
        self.rip = target;
        self.retired = last + 1;
        Ok(())
    }

    /// Writes `v` to the 8 bytes of RAM at `off`, found in the data pages, as their hit path
    /// does (the decode cache is told); `false` if `off` is not in RAM.
    #[inline(always)]
    fn write_ram_8<B: Bus>(&mut self, bus: &mut B, off: usize, v: u64) -> bool {
        let Some(bytes) = bus.ram_mut().get_mut(off..off + 8) else {
            return false;
        };
        bytes.copy_from_slice(&v.to_le_bytes());
        self.counters.tlb_hits += 1;
        self.icache.note_write(off);
        true
    }

    /// The handler of a `Uop` or generic op, the first of `ops` (out of line, so that it is
    /// the only handler that needs a frame for it): the pass goes on unless the op ended it.
    #[inline(never)]
    fn slow_op<B: Bus>(&mut self, bus: &mut B, pass: &Pass, ops: &[Op], acc: u64) -> Flow {
        let Some((op, rest)) = ops.split_first() else {
            return self.next_op(bus, pass, ops, acc);
        };
        match self.run_slow_op(bus, op, pass.base, pass.start(), pass.page, pass.generation) {
            Ok(false) => self.next_op(bus, pass, rest, acc),
            Ok(true) => Flow::Done,
            Err(e) => pass.fail(e),
        }
    }

    /// A `Uop` or generic op: its instruction is made current and runs through its handler;
    /// the block ends after it (`true`) if it branched, touched a device or wrote the block's
    /// own page.
    #[inline(always)]
    fn run_slow_op<B: Bus>(
        &mut self,
        bus: &mut B,
        op: &Op,
        base: u64,
        start: u64,
        page: usize,
        generation: u32,
    ) -> Ex<bool> {
        let (_, fall) = self.enter_op(op, base, start + (op.imm >> 32));
        let k = op.imm as u32 as usize;
        let blocks = &self.icache.blocks;
        if op.kind() == K::Uop {
            self.fetched = blocks.uops.get(k).copied().unwrap_or(Uop::GENERIC);
            self.exec_uop(bus, usize::MAX)?;
        } else {
            let ins = blocks.generic.get(k).copied().unwrap_or_default();
            self.decoded = ins;
            self.execute(bus, &ins)?;
        }
        self.dpages.sync(self.data_key());
        if self.next_rip != fall
            || self.touched_device
            || self.icache.generation(page) != Some(generation)
        {
            self.rip = self.next_rip;
            self.retired += 1;
            return Ok(true);
        }
        Ok(false)
    }

    /// SHL, SHR or SAR by an immediate (not 0) with its flags live: recorded lazily, as
    /// `shift_compute` does.
    #[inline(always)]
    fn shift_live(&mut self, op: &Op, d: usize, mnemonic: M) {
        let a = self.gpr[d] & op.mask();
        let (r, cf, of) = shift_status(mnemonic, op.width(), a, u64::from(op.x));
        self.flags
            .set_lazy(FlagOp::Cfof, op.width(), 0, u64::from(of), r, cf);
        self.gpr[d] = r;
    }

    /// The register side of a memory op that read `v`: a load, an ALU operation with a
    /// memory source, or a POP.
    #[inline(always)]
    fn finish_read(&mut self, op: &Op, d: usize, v: u64) {
        match op.kind() {
            K::LoadAlu => self.load_alu(op, d, v),
            K::LoadAluNf => self.gpr[d] = alu_nf(op, self.gpr[d], v),
            // POP RSP loads the value read (the increment is overwritten).
            K::Pop => {
                let rsp = &mut self.gpr[Gpr::Rsp as usize];
                *rsp = rsp.wrapping_add(8);
                self.gpr[d] = v;
            }
            _ => self.gpr[d] = v,
        }
    }

    /// The ALU operation of a `LoadAlu` whose memory source read `v`.
    #[inline(always)]
    fn load_alu(&mut self, op: &Op, d: usize, v: u64) {
        let alu = ALU_OPS[((op.imm >> 57) & 15) as usize];
        let a = self.gpr[d] & op.mask();
        let r = self.alu_compute(alu, op.width(), a, v);
        if !matches!(alu, AluOp::Cmp | AluOp::Test) {
            self.gpr[d] = r;
        }
    }

    /// A read of `size` bytes at linear `lin` that hits the data pages (`flat`: the offset is
    /// the linear address): the value, counted as a TLB hit.
    #[inline(always)]
    fn load_hit<B: Bus>(&mut self, bus: &B, lin: u64, size: usize, flat: bool) -> Option<u64> {
        if !flat {
            return None;
        }
        let off = self.dpages.find_synced(lin, size, false)?;
        let v = read_le(bus.ram().get(off..off + size)?);
        self.counters.tlb_hits += 1;
        Some(v)
    }

    /// A write of `size` bytes at linear `lin` that hits the data pages, as
    /// [`Cpu::load_hit`]: whether it wrote a page holding decoded code.
    #[inline(always)]
    fn store_hit<B: Bus>(
        &mut self,
        bus: &mut B,
        lin: u64,
        size: usize,
        v: u64,
        flat: bool,
    ) -> Option<bool> {
        if !flat {
            return None;
        }
        let off = self.dpages.find_synced(lin, size, true)?;
        write_le(bus.ram_mut().get_mut(off..off + size)?, v);
        self.counters.tlb_hits += 1;
        Some(self.icache.note_write(off))
    }

    /// The miss of a memory op, the first of `ops`, of `size` bytes at effective address
    /// `ea` (`mem_op_slow`), out of line and in tail position, so that the hit path of the
    /// memory handlers needs no frame: the pass goes on unless the op ended it.
    #[inline(never)]
    fn mem_miss<B: Bus>(
        &mut self,
        bus: &mut B,
        pass: &Pass,
        ops: &[Op],
        acc: u64,
        ea: u64,
        size: usize,
    ) -> Flow {
        let Some((op, rest)) = ops.split_first() else {
            return self.next_op(bus, pass, ops, acc);
        };
        let (base, start) = (pass.base, pass.start());
        match self.mem_op_slow(bus, op, base, start, ea, size, pass.page, pass.generation) {
            Ok(false) => self.next_op(bus, pass, rest, acc),
            Ok(true) => Flow::Done,
            Err(e) => pass.fail(e),
        }
    }

    /// A memory op that missed the data pages: its instruction is made current, the access
    /// goes through segmentation and the TLB (and may fault, walk or reach a device), and the
    /// block ends after it (`true`) if it touched a device or wrote the block's own page.
    /// `ea` is the effective address (the offset in `seg`).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn mem_op_slow<B: Bus>(
        &mut self,
        bus: &mut B,
        op: &Op,
        base: u64,
        start: u64,
        ea: u64,
        size: usize,
        page: usize,
        generation: u32,
    ) -> Ex<bool> {
        let seg = match op.kind() {
            K::Push | K::Pop => Seg::Ss,
            K::LoadB | K::StoreB if op.x & 0x80 != 0 => Seg::Ss,
            K::LoadB | K::StoreB => Seg::Ds,
            _ => SEGS[((op.imm >> 48) & 7) as usize],
        };
        let (_, fall) = self.enter_op(op, base, start + op.index());
        let (d, s) = (op.d as usize, op.s as usize);
        let wrote = matches!(op.kind(), K::Store | K::StoreB | K::Push);
        // Within one page of a flat segment, the linear address is the offset and only
        // paging can fault: straight to the TLB (and a walk). Otherwise the full path.
        let flat = self.flat_linear(seg, ea, size);
        if wrote {
            let v = if op.kind() == K::Push {
                self.gpr[d]
            } else {
                self.gpr[s] & op.mask()
            };
            match flat {
                Some(lin) => {
                    let p = self.translate(bus, lin, Access::Write, false)?;
                    self.phys_write(bus, p, size, v);
                }
                None => self.write_seg(bus, seg, ea, size, v)?,
            }
            if op.kind() == K::Push {
                self.gpr[Gpr::Rsp as usize] = ea;
            }
        } else {
            let v = match flat {
                Some(lin) => {
                    let p = self.translate(bus, lin, Access::Read, false)?;
                    self.phys_read(bus, p, size)
                }
                None => self.read_seg(bus, seg, ea, size)?,
            };
            self.finish_read(op, d, v);
        }
        // A TLB fill may have been made under a new key.
        self.dpages.sync(self.data_key());
        if self.touched_device || (wrote && self.icache.generation(page) != Some(generation)) {
            self.rip = fall;
            self.retired += 1;
            return Ok(true);
        }
        Ok(false)
    }
}

/// The result of a `LoadAluNf` with `a` the register's value and `v` the value read.
#[inline(always)]
fn alu_nf(op: &Op, a: u64, v: u64) -> u64 {
    let r = match ALU_OPS[((op.imm >> 57) & 15) as usize] {
        AluOp::Add => a.wrapping_add(v),
        AluOp::Sub => a.wrapping_sub(v),
        AluOp::And => a & v,
        AluOp::Or => a | v,
        _ => a ^ v,
    };
    r & op.mask()
}

/// Writes `v` to register `d` and returns it (for `acc`).
#[inline(always)]
fn put(g: &mut [u64; 16], d: usize, v: u64) -> u64 {
    g[d] = v;
    v
}

/// ROL (or ROR, `right`) of `a` by a fused or flagless rotate's count (0 < count < width, the
/// width 32 or 64: `lower` makes no rotate op of another); `wide`: the op's handler is compiled
/// for 64 bits. A rotate right by `c` is one left by the width minus `c`.
#[inline(always)]
fn rotate(op: &Op, a: u64, wide: bool, right: bool) -> u64 {
    let c = u32::from(op.x);
    if wide || op.sh == 0 {
        a.rotate_left(if right { 64 - c } else { c })
    } else {
        u64::from((a as u32).rotate_left(if right { 32 - c } else { c }))
    }
}

/// The effective address (the offset in its segment) of a `Load`, `LoadAlu` or `Store` in the
/// page at `base`, whose base register is `b`.
#[inline(always)]
fn data_address(op: &Op, g: &[u64; 16], base: u64, b: usize) -> u64 {
    let mut a = op.imm as u32 as i32 as i64 as u64;
    if (op.imm >> 56) & 1 != 0 {
        a = a.wrapping_add(base | u64::from(op.off));
    }
    add_address(op, g, b, a)
}

/// The base register and the `x` byte of LEA, `Load` and `Store` for an address.
fn address(base: Option<u8>, index: Option<u8>, scale: u8) -> (u8, u8) {
    let mut x = match index {
        Some(i) => i | ((scale.trailing_zeros() as u8) << 5),
        None => 0x10,
    };
    if base.is_none() {
        x |= 0x80;
    }
    (base.unwrap_or(0), x)
}

/// The sum of base and scaled index an op's `s`/`d` and `x` name, plus `a`.
#[inline(always)]
fn add_address(op: &Op, g: &[u64; 16], base: usize, mut a: u64) -> u64 {
    if op.x & 0x80 == 0 {
        a = a.wrapping_add(g[base]);
    }
    if op.x & 0x10 == 0 {
        a = a.wrapping_add(g[usize::from(op.x & 15)] << ((op.x >> 5) & 3));
    }
    a
}

/// Fuses pairs of ops in the ops from `start` on, one dispatch instead of two: `MOV d, s` with
/// the op after it that writes `d` with dead flags (compilers emit such pairs for
/// three-operand arithmetic), and a CMP or TEST with the consumer of its flags, a CMOVcc or
/// SETcc on E or NE after which the flags are dead (`fuse_on_zf`), or a JE or JNE
/// (`fuse_branch`).
fn fuse(ops: &mut Vec<Op>, start: usize) {
    let mut out = start;
    let mut i = start;
    while let Some(&op) = ops.get(i) {
        let next = ops.get(i + 1).copied();
        let fused = next.and_then(|next| {
            if matches!(next.kind(), K::CmovZ | K::SetccZ) && next.imm == 0 {
                return fuse_on_zf(op, next);
            }
            if next.kind() == K::JccZ {
                return fuse_branch(op, next);
            }
            if op.kind() != K::MovR || next.d != op.d || next.sh != op.sh {
                return None;
            }
            // The second source of a register form: the moved value if it names `d`.
            let second = if next.s == op.d { op.s } else { next.s };
            let (kind, x) = match next.kind() {
                K::ShlNf => (K::ShlNf3, next.x),
                K::ShrNf => (K::ShrNf3, next.x),
                K::RolNf => (K::RolNf3, next.x),
                K::RorNf => (K::RorNf3, next.x),
                K::XorRNf => (K::XorRNf3, second as u8),
                K::AddRNf => (K::AddRNf3, second as u8),
                K::SubRNf => (K::SubRNf3, second as u8),
                K::AndINf => (K::AndINf3, 0),
                K::AddINf => (K::AddINf3, 0),
                _ => return None,
            };
            Some(Op {
                s: op.s,
                x,
                ..next.with_kind(kind)
            })
        });
        ops[out] = fused.unwrap_or(op);
        out += 1;
        i += if fused.is_some() { 2 } else { 1 };
    }
    ops.truncate(out);
}

/// A CMP or TEST (`op`) fused with the `CmovZ` or `SetccZ` after it (`next`), when nothing reads
/// the flags after that (`K::CmpRZ` and the others); `None` if `op` is neither, or its
/// immediate does not fit the fused op's 32 bits.
fn fuse_on_zf(op: Op, next: Op) -> Option<Op> {
    let kind = fused_kind(&op, [K::CmpRZ, K::CmpIZ, K::TestRZ, K::TestIZ])?;
    let imm = comparison_imm32(&op)?;
    Some(Op {
        x: next.x,
        imm: u64::from(imm)
            | (next.d as u64) << 32
            | (next.s as u64) << 40
            | u64::from(next.sh) << 48
            | u64::from(next.kind() == K::SetccZ) << 56,
        ..op.with_kind(kind)
    })
}

/// The fused kind for a CMP or TEST (`op`) among `kinds`, given for CMP with a register, CMP
/// with an immediate, TEST with a register and TEST with an immediate; `None` if `op` is
/// neither.
fn fused_kind(op: &Op, [cmp_r, cmp_i, test_r, test_i]: [K; 4]) -> Option<K> {
    match op.kind() {
        K::CmpR => Some(cmp_r),
        K::CmpI => Some(cmp_i),
        K::TestR => Some(test_r),
        K::TestI => Some(test_i),
        _ => None,
    }
}

/// The immediate of a CMP or TEST (`op`, masked to its width by `lower`) as a fused op keeps
/// it: 32 bits that its handler sign-extends and masks again; 0 for a register form; `None` if
/// it does not fit.
fn comparison_imm32(op: &Op) -> Option<u32> {
    if !matches!(op.kind(), K::CmpI | K::TestI) {
        return Some(0);
    }
    let imm = op.imm as u32;
    ((imm as i32 as i64 as u64) & op.mask() == op.imm).then_some(imm)
}

/// A CMP or TEST (`op`) fused with the `JccZ` after it (`next`), a 64-bit branch
/// (`K::CmpRJz` and the others); `None` if `op` is neither, or an immediate does not fit the
/// fused op's 32 bits.
fn fuse_branch(op: Op, next: Op) -> Option<Op> {
    let kind = fused_kind(&op, [K::CmpRJz, K::CmpIJz, K::TestRJz, K::TestIJz])?;
    let imm = comparison_imm32(&op)?;
    if next.sh != 0 || next.imm as i32 as i64 as u64 != next.imm {
        return None;
    }
    Some(Op {
        x: next.x,
        off: next.off,
        len: next.len,
        imm: u64::from(imm) | (next.imm << 32),
        ..op.with_kind(kind)
    })
}

/// Marks the ops from `start` on that read the result of the last op that `produces` one while
/// it is still in `acc` (its register not written since): they take it from there (`K::XorRNfA`
/// and the others). A chain of dependent operations then does not wait for each result to go
/// to the register file in memory and come back, which is what bounds a register-only loop.
fn forward(ops: &mut [Op], start: usize) {
    // The register whose value `acc` holds.
    let mut held: Option<Gpr> = None;
    for op in ops.iter_mut().skip(start) {
        if let Some(r) = held {
            let (a, b) = (op.d == r, op.s == r);
            *op = op.with_kind(match op.kind() {
                K::AddRNf if a => K::AddRNfA,
                K::AddRNf if b => K::AddRNfB,
                K::SubRNf if a => K::SubRNfA,
                K::SubRNf if b => K::SubRNfB,
                K::AndRNf if a => K::AndRNfA,
                K::AndRNf if b => K::AndRNfB,
                K::OrRNf if a => K::OrRNfA,
                K::OrRNf if b => K::OrRNfB,
                K::XorRNf if a => K::XorRNfA,
                K::XorRNf if b => K::XorRNfB,
                K::Imul2Nf if a => K::Imul2NfA,
                K::Imul2Nf if b => K::Imul2NfB,
                K::AddINf if a => K::AddINfA,
                K::SubINf if a => K::SubINfA,
                K::AndINf if a => K::AndINfA,
                K::OrINf if a => K::OrINfA,
                K::XorINf if a => K::XorINfA,
                K::ShlNf if a => K::ShlNfA,
                K::ShrNf if a => K::ShrNfA,
                K::IncNf if a => K::IncNfA,
                K::DecNf if a => K::DecNfA,
                K::ShlNf3 if b => K::ShlNf3A,
                K::ShrNf3 if b => K::ShrNf3A,
                K::RolNf3 if b => K::RolNf3A,
                K::XorRNf3 if b => K::XorRNf3A,
                K::AddRNf3 if b => K::AddRNf3A,
                K::SubRNf3 if b => K::SubRNf3A,
                K::AndINf3 if b => K::AndINf3A,
                K::AddINf3 if b => K::AddINf3A,
                K::MovR if b => K::MovRB,
                k => k,
            });
        }
        held = if produces(op.kind()) {
            Some(op.d)
        } else {
            match writes(op) {
                Writes::None => held,
                Writes::Reg(w) if Some(w) != held => held,
                Writes::Reg(_) | Writes::Any => None,
            }
        };
    }
}

/// Whether an op's handler leaves its result in `acc` (`forward`): the flagless
/// arithmetic forms, the values a dependent chain is made of. Moves are not: they usually begin
/// a chain from a value that is not the last result.
fn produces(kind: K) -> bool {
    use K::*;
    matches!(
        kind,
        AddRNf
            | AddRNfA
            | AddRNfB
            | SubRNf
            | SubRNfA
            | SubRNfB
            | AndRNf
            | AndRNfA
            | AndRNfB
            | OrRNf
            | OrRNfA
            | OrRNfB
            | XorRNf
            | XorRNfA
            | XorRNfB
            | Imul2Nf
            | Imul2NfA
            | Imul2NfB
            | Imul3Nf
            | AddINf
            | AddINfA
            | SubINf
            | SubINfA
            | AndINf
            | AndINfA
            | OrINf
            | OrINfA
            | XorINf
            | XorINfA
            | ShlNf
            | ShlNfA
            | ShrNf
            | ShrNfA
            | IncNf
            | IncNfA
            | DecNf
            | DecNfA
            | ShlNf3
            | ShlNf3A
            | ShrNf3
            | ShrNf3A
            | RolNf3
            | RolNf3A
            | XorRNf3
            | XorRNf3A
            | AddRNf3
            | AddRNf3A
            | SubRNf3
            | SubRNf3A
            | AndINf3
            | AndINf3A
            | AddINf3
            | AddINf3A
    )
}

/// The registers an op that does not `produce` may write.
enum Writes {
    None,
    Reg(Gpr),
    Any,
}

fn writes(op: &Op) -> Writes {
    match op.kind() {
        K::CmpR
        | K::CmpI
        | K::TestR
        | K::TestI
        | K::Store
        | K::StoreB
        | K::Jcc
        | K::JccZ
        | K::Jmp
        | K::CmpRJz
        | K::CmpIJz
        | K::TestRJz
        | K::TestIJz => Writes::None,
        K::Push => Writes::Reg(Gpr::Rsp),
        // The CMOVcc's or SETcc's register.
        K::CmpRZ | K::CmpIZ | K::TestRZ | K::TestIZ => {
            Writes::Reg(Gpr::from_index((op.imm >> 32) as u8))
        }
        // POP writes RSP and its register; CALL and RET leave the block; the others may
        // write anything.
        K::Pop | K::Call | K::Ret | K::Uop | K::Generic => Writes::Any,
        _ => Writes::Reg(op.d),
    }
}

/// The ALU operations by number (`AluOp as u8`).
const ALU_OPS: [AluOp; 9] = [
    AluOp::Add,
    AluOp::Or,
    AluOp::Adc,
    AluOp::Sbb,
    AluOp::And,
    AluOp::Sub,
    AluOp::Xor,
    AluOp::Cmp,
    AluOp::Test,
];

/// The segment registers by number (`Seg as u8`).
const SEGS: [Seg; 8] = [
    Seg::Es,
    Seg::Cs,
    Seg::Ss,
    Seg::Ds,
    Seg::Fs,
    Seg::Gs,
    Seg::Ds,
    Seg::Ds,
];

/// The conditions by their number in an op's `x` (iced-x86's order).
const CCS: [CC; 17] = [
    CC::None,
    CC::o,
    CC::no,
    CC::b,
    CC::ae,
    CC::e,
    CC::ne,
    CC::be,
    CC::a,
    CC::s,
    CC::ns,
    CC::p,
    CC::np,
    CC::l,
    CC::ge,
    CC::le,
    CC::g,
];

/// The numbers of the conditions the handlers evaluate themselves: E, NE, S and NS, and after
/// a SUB or CMP the unsigned comparisons.
const CC_B: u8 = 3;
const CC_AE: u8 = 4;
const CC_E: u8 = 5;
const CC_NE: u8 = 6;
const CC_BE: u8 = 7;
const CC_A: u8 = 8;
const CC_S: u8 = 9;
const CC_NS: u8 = 10;
const _: () = assert!(
    CC::s as u8 == CC_S
        && CC::ns as u8 == CC_NS
        && CC::b as u8 == CC_B
        && CC::ae as u8 == CC_AE
        && CC::e as u8 == CC_E
        && CC::ne as u8 == CC_NE
        && CC::be as u8 == CC_BE
        && CC::a as u8 == CC_A
);

/// `z` for a condition on ZF alone (E or NE), else `other`.
fn on_zf(c: CC, z: K, other: K) -> K {
    if matches!(c, CC::e | CC::ne) {
        z
    } else {
        other
    }
}

/// The condition stored in an op.
#[inline(always)]
fn cc(x: u8) -> CC {
    CCS.get(usize::from(x)).copied().unwrap_or(CC::None)
}

/// What the liveness pass needs to know of an instruction.
fn effect(ins: &Instruction, uop: &Uop) -> Effect {
    let reg_only = !matches!(uop.dst, Opnd::Mem) && !matches!(uop.src, Opnd::Mem);
    match uop.kind {
        Kind::Nop | Kind::Mov64 | Kind::Mov32 | Kind::Lea => Effect::None,
        Kind::Movzx | Kind::Movsx | Kind::Mov | Kind::Not if reg_only => Effect::None,
        // Partial writers: with their flags live they need the flags before them; with their
        // flags dead they need nothing (their results do not depend on the flags), so they
        // pass liveness through as if they did not touch the flags.
        Kind::Inc | Kind::Dec | Kind::Shift(Sh::Rol | Sh::Ror) if reg_only => Effect::None,
        Kind::Alu64(op) | Kind::Alu32(op) if !matches!(op, AluOp::Adc | AluOp::Sbb) => {
            Effect::Writes
        }
        Kind::Neg | Kind::Imul2 | Kind::Imul3 if reg_only => Effect::Writes,
        Kind::Shift(Sh::Shl | Sh::Shr | Sh::Sar) if reg_only && shift_count(uop) != 0 => {
            Effect::Writes
        }
        _ => {
            let _ = ins;
            Effect::Reads
        }
    }
}

/// The count of a shift by an immediate, masked as the instruction masks it (0 for a shift by
/// CL).
fn shift_count(u: &Uop) -> u8 {
    if u.src != Opnd::Imm {
        return 0;
    }
    (u.imm() as u8) & if u.w == 64 { 0x3f } else { 0x1f }
}

/// The op of `kind` on registers `d` and `s` at width `w`, with `x` and `imm`, the rest
/// (instruction length and offset) from `base`.
fn lowered(base: Op, kind: K, d: u8, s: u8, x: u8, w: u8, imm: u64) -> Lowered {
    Lowered::Op(Op {
        code: kind as u8 | if w == 64 { WIDE } else { 0 },
        d: Gpr::from_index(d),
        s: Gpr::from_index(s),
        x,
        sh: 64 - w,
        imm,
        ..base
    })
}

/// A load or store (`kind`: `Load`, `Store`, `LoadAlu`, `LoadAluNf`, `LoadZx`) of register `r`
/// at width `w` through `u`'s memory operand, with `extra` in `imm` bits 57 to 60 (the ALU
/// operation, the size of a `LoadZx`); `Slow` if the address is not a plain one.
fn lower_mem(u: &Uop, kind: K, r: u8, w: u8, extra: u64, base: Op, insn: usize) -> Lowered {
    let op = |kind: K, d: u8, s: u8, x: u8, imm: u64| lowered(base, kind, d, s, x, w, imm);
    let Some((base_reg, index, scale, disp)) = u.mem.plain_64_or_rip(true) else {
        return Lowered::Slow;
    };
    let rip = u.mem.rel == crate::uop::Rel::Rip;
    if let (Some(b), None, false, 64, Seg::Ds | Seg::Ss, K::Load | K::Store) =
        (base_reg, index, rip, w, u.mem.seg, kind)
    {
        let x = insn as u8 | (u8::from(u.mem.seg == Seg::Ss) << 7);
        let (kind, d, s) = if kind == K::Store {
            (K::StoreB, b, r)
        } else {
            (K::LoadB, r, b)
        };
        return op(kind, d, s, x, i64::from(disp) as u64);
    }
    let (b, x) = address(base_reg, index, scale);
    let imm = u64::from(disp as u32)
        | ((insn as u64) << 32)
        | ((u.mem.seg as u64) << 48)
        | (u64::from(rip) << 56)
        | (extra << 57)
        | (u64::from(matches!(u.mem.seg, Seg::Fs | Seg::Gs)) << 61);
    // Load: d = destination, s = base; Store: d = base, s = source.
    let (d, s) = if kind == K::Store { (b, r) } else { (r, b) };
    op(kind, d, s, x, imm)
}

/// An instruction lowered.
enum Lowered {
    Op(Op),
    /// Its effect is dead: a CMP or TEST whose flags nothing reads, or a NOP.
    Nothing,
    /// It runs through the `Uop` or generic handlers.
    Slow,
}

/// Lowers `u`, the block's instruction number `insn`, to an op if it is a register form of 32
/// or 64 bits or a plain load or store; `live`: its flags are read.
fn lower(u: &Uop, live: bool, base: Op, insn: usize) -> Lowered {
    use Lowered::{Nothing, Slow};
    let op = |kind: K, d: u8, s: u8, x: u8, w: u8, imm: u64| lowered(base, kind, d, s, x, w, imm);
    // A register of the 32- or 64-bit view: its number and width.
    let reg = |o: Opnd| match o {
        Opnd::Reg(r) if matches!(r.width(), 32 | 64) => Some((r.idx() as u8, r.width() as u8)),
        _ => None,
    };
    let pick = |live: bool, with: K, without: K| if live { with } else { without };
    match u.kind {
        Kind::Nop => Nothing,
        Kind::Mov64 | Kind::Mov32 | Kind::Alu64(_) | Kind::Alu32(_) => {
            let Some((d, w)) = reg(u.dst) else {
                return Slow;
            };
            let m = mask(u32::from(w));
            // A register form keeps its width's mask in `imm` (`Op::rmask`).
            let (s, imm, is_reg) = match u.src {
                Opnd::Reg(r) => (r.idx() as u8, m, true),
                _ => (0, u.imm() & m, false),
            };
            let kind = match u.kind {
                Kind::Mov64 | Kind::Mov32 => {
                    if is_reg {
                        K::MovR
                    } else {
                        K::MovI
                    }
                }
                Kind::Alu64(a) | Kind::Alu32(a) => {
                    let (with, without) = match (a, is_reg) {
                        (AluOp::Add, true) => (K::AddR, K::AddRNf),
                        (AluOp::Add, false) => (K::AddI, K::AddINf),
                        (AluOp::Sub, true) => (K::SubR, K::SubRNf),
                        (AluOp::Sub, false) => (K::SubI, K::SubINf),
                        (AluOp::And, true) => (K::AndR, K::AndRNf),
                        (AluOp::And, false) => (K::AndI, K::AndINf),
                        (AluOp::Or, true) => (K::OrR, K::OrRNf),
                        (AluOp::Or, false) => (K::OrI, K::OrINf),
                        (AluOp::Xor, true) => (K::XorR, K::XorRNf),
                        (AluOp::Xor, false) => (K::XorI, K::XorINf),
                        (AluOp::Cmp | AluOp::Test, _) if !live => return Nothing,
                        (AluOp::Cmp, true) => (K::CmpR, K::CmpR),
                        (AluOp::Cmp, false) => (K::CmpI, K::CmpI),
                        (AluOp::Test, true) => (K::TestR, K::TestR),
                        (AluOp::Test, false) => (K::TestI, K::TestI),
                        (AluOp::Adc | AluOp::Sbb, _) => return Slow,
                    };
                    pick(live, with, without)
                }
                _ => return Slow,
            };
            op(kind, d, s, 0, w, imm)
        }
        Kind::Shift(sh) => {
            let (Some((d, w)), Opnd::Imm) = (reg(u.dst), u.src) else {
                return Slow;
            };
            let count = shift_count(u);
            if count == 0 {
                return Slow;
            }
            let (with, without) = match sh {
                Sh::Shl => (K::Shl, K::ShlNf),
                Sh::Shr => (K::Shr, K::ShrNf),
                Sh::Sar => (K::Sar, K::SarNf),
                Sh::Rol => (K::Rol, K::RolNf),
                Sh::Ror => (K::Ror, K::RorNf),
                Sh::Rcl | Sh::Rcr => return Slow,
            };
            op(
                pick(live, with, without),
                d,
                0,
                count,
                w,
                mask(u32::from(w)),
            )
        }
        Kind::Inc | Kind::Dec | Kind::Neg | Kind::Not => {
            let Some((d, w)) = reg(u.dst) else {
                return Slow;
            };
            let kind = match u.kind {
                Kind::Inc => pick(live, K::Inc, K::IncNf),
                Kind::Dec => pick(live, K::Dec, K::DecNf),
                Kind::Neg => pick(live, K::Neg, K::NegNf),
                _ => K::Not,
            };
            op(kind, d, 0, 0, w, mask(u32::from(w)))
        }
        Kind::Imul2 | Kind::Imul3 => {
            let (Some((d, w)), Some((s, sw))) = (reg(u.dst), reg(u.src)) else {
                return Slow;
            };
            if w != sw {
                return Slow;
            }
            if u.kind == Kind::Imul2 {
                op(
                    pick(live, K::Imul2, K::Imul2Nf),
                    d,
                    s,
                    0,
                    w,
                    mask(u32::from(w)),
                )
            } else {
                let imm = u.imm() & mask(u32::from(w));
                op(pick(live, K::Imul3, K::Imul3Nf), d, s, 0, w, imm)
            }
        }
        Kind::Movzx | Kind::Movsx => {
            let (Some((d, w)), Opnd::Reg(s)) = (reg(u.dst), u.src) else {
                return match (u.kind, reg(u.dst), u.src) {
                    (Kind::Movzx, Some((d, w)), Opnd::Mem) => {
                        lower_mem(u, K::LoadZx, d, w, u64::from(u.aux / 8), base, insn)
                    }
                    _ => Slow,
                };
            };
            let kind = match (u.kind, s.is_high_byte()) {
                (Kind::Movzx, true) => K::MovzxHigh,
                (_, true) => return Slow,
                (Kind::Movzx, false) => K::Movzx,
                _ => K::Movsx,
            };
            op(kind, d, s.idx() as u8, s.width() as u8, w, 0)
        }
        Kind::Lea => {
            let Some((d, w)) = reg(u.dst) else {
                return Slow;
            };
            let Some((base_reg, index, scale, disp)) = u.mem.plain_64() else {
                return Slow;
            };
            let (s, x) = address(base_reg, index, scale);
            op(K::Lea, d, s, x, w, disp as i64 as u64)
        }
        // CMP and TEST of a byte or word register (not AH to BH) with a register or an
        // immediate: they write only the flags, so the ops serve at the narrower width too.
        Kind::Alu(a @ (AluOp::Cmp | AluOp::Test)) if matches!(u.dst, Opnd::Reg(d) if matches!(d.width(), 8 | 16) && !d.is_high_byte()) =>
        {
            let Opnd::Reg(d) = u.dst else {
                return Slow;
            };
            let w = d.width() as u8;
            let m = mask(u32::from(w));
            let (with_reg, with_imm) = if a == AluOp::Cmp {
                (K::CmpR, K::CmpI)
            } else {
                (K::TestR, K::TestI)
            };
            match u.src {
                Opnd::Reg(s) if s.width() == d.width() && !s.is_high_byte() => {
                    if !live {
                        return Nothing;
                    }
                    op(with_reg, d.idx() as u8, s.idx() as u8, 0, w, m)
                }
                Opnd::Imm if !live => Nothing,
                Opnd::Imm => op(with_imm, d.idx() as u8, 0, 0, w, u.imm() & m),
                _ => Slow,
            }
        }
        // An immediate to a byte register (not AH to BH): MOV, and the ALU operations whose
        // result depends on the operands alone.
        Kind::Mov | Kind::Alu(AluOp::Add | AluOp::Or | AluOp::And | AluOp::Sub | AluOp::Xor)
            if matches!((u.dst, u.src), (Opnd::Reg(d), Opnd::Imm) if d.width() == 8 && !d.is_high_byte()) =>
        {
            let Opnd::Reg(d) = u.dst else {
                return Slow;
            };
            let imm = u.imm() & 0xff;
            match u.kind {
                Kind::Alu(a) => op(
                    pick(live, K::AluB, K::AluBNf),
                    d.idx() as u8,
                    0,
                    a as u8,
                    8,
                    imm,
                ),
                _ => op(K::MovIB, d.idx() as u8, 0, 0, 8, imm),
            }
        }
        Kind::Mov | Kind::Alu(_) => {
            let (kind, r, w, alu) = match (u.kind, u.dst, u.src, reg(u.dst), reg(u.src)) {
                (Kind::Mov, _, Opnd::Mem, Some((d, w)), _) => (K::Load, d, w, 0),
                (Kind::Mov, Opnd::Mem, _, _, Some((s, w))) => (K::Store, s, w, 0),
                (Kind::Alu(a), _, Opnd::Mem, Some((d, w)), _) => {
                    let plain = matches!(
                        a,
                        AluOp::Add | AluOp::Sub | AluOp::And | AluOp::Or | AluOp::Xor
                    );
                    let kind = if plain && !live {
                        K::LoadAluNf
                    } else {
                        K::LoadAlu
                    };
                    (kind, d, w, a as u64)
                }
                _ => return Slow,
            };
            lower_mem(u, kind, r, w, alu, base, insn)
        }
        Kind::Cmov(c) => {
            let (Some((d, w)), Some((s, sw))) = (reg(u.dst), reg(u.src)) else {
                return Slow;
            };
            if w != sw {
                return Slow;
            }
            op(
                on_zf(c, K::CmovZ, K::Cmov),
                d,
                s,
                c as u8,
                w,
                u64::from(live),
            )
        }
        Kind::Setcc(c) => match u.dst {
            Opnd::Reg(r) if r.width() == 8 && !r.is_high_byte() => op(
                on_zf(c, K::SetccZ, K::Setcc),
                r.idx() as u8,
                0,
                c as u8,
                8,
                u64::from(live),
            ),
            _ => Slow,
        },
        Kind::Jcc(c) => op(on_zf(c, K::JccZ, K::Jcc), 0, 0, c as u8, u.w, u.imm()),
        Kind::Jmp => op(K::Jmp, 0, 0, 0, u.w, u.imm()),
        // The 64-bit stack forms (the stack-address size is 64 in 64-bit mode).
        Kind::Push | Kind::Pop if u.aux == 8 => match reg(u.dst) {
            Some((d, 64)) => {
                let kind = if u.kind == Kind::Push {
                    K::Push
                } else {
                    K::Pop
                };
                op(kind, d, 0, 0, 64, (insn as u64) << 32)
            }
            _ => Slow,
        },
        Kind::Call if u.aux == 8 && u.w == 64 => op(K::Call, 0, 0, 0, 64, u.imm()),
        Kind::Ret if u.aux == 8 && u.w != 1 => op(K::Ret, 0, 0, 0, 64, 0),
        _ => Slow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{CODE, TestBus, long_env};
    use crate::uop::tests::{HOT, HOT_0F, PREFIXES};
    use proptest::prelude::*;

    /// One instruction from its parts, if it may sit inside a block: its bytes.
    fn instruction(prefix: usize, two_byte: bool, op: usize, tail: [u8; 10]) -> Option<Vec<u8>> {
        let mut code = PREFIXES[prefix % PREFIXES.len()].to_vec();
        if two_byte {
            code.extend([0x0f, HOT_0F[op % HOT_0F.len()]]);
        } else {
            code.push(HOT[op % HOT.len()]);
        }
        code.extend(tail);
        let ins = Decoder::new(64, &code, DecoderOptions::NONE).decode();
        let ok = !ins.is_invalid()
            && ins.flow_control() == FlowControl::Next
            && Uop::compile(&ins).kind != Kind::Generic;
        ok.then(|| code[..ins.len()].to_vec())
    }

    /// The exception handler: a HLT, in a page of its own.
    const HANDLER: u64 = CODE + 0x2000;

    fn register() -> impl Strategy<Value = u64> {
        prop_oneof![
            1 => any::<u64>(),
            // Data in RAM, the code page itself (self-modifying stores), small values.
            6 => 0x10_8000u64..0x10_9000,
            1 => CODE..CODE + 0x80,
            2 => 0u64..0x100,
        ]
    }

    /// The bytes after an opcode: ModRM and SIB (or an immediate) at random, then small bytes,
    /// so that displacements stay within the identity map and most accesses do not fault.
    fn tail() -> impl Strategy<Value = [u8; 10]> {
        let small = prop_oneof![Just(0u8), 0u8..0x10];
        (any::<[u8; 2]>(), proptest::array::uniform8(small)).prop_map(|(head, rest)| {
            let mut t = [0u8; 10];
            t[..2].copy_from_slice(&head);
            t[2..].copy_from_slice(&rest);
            t
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]
        /// A run of hot instructions ending in a conditional branch gives the same machine
        /// (registers, RIP, RFLAGS, memory, instructions retired, how the run ended) with blocks
        /// as with single steps, whatever the budget: dead flags, faults inside a block, stores
        /// into the block's own page and budgets that end mid-block included.
        #[test]
        fn blocks_agree_with_single_steps(
            parts in proptest::collection::vec(
                (0usize..7, any::<bool>(), 0usize..128, tail()), 1..24),
            cc in 0u8..16,
            gpr in proptest::array::uniform16(register()),
            flags in any::<u64>(),
            budget in prop_oneof![Just(10_000u64), 1u64..30],
            supervisor in any::<bool>(),
        ) {
            let mut code: Vec<u8> = parts
                .iter()
                .filter_map(|&(p, t, o, tail)| instruction(p, t, o, tail))
                .flatten()
                .collect();
            // Jcc over one HLT: the condition decides where the run halts.
            code.extend([0x70 | cc, 0x01, 0xf4, 0xf4]);
            let run = |blocks: bool| {
                // Exceptions are delivered to a HLT, so that a fault inside a block is seen
                // with its frame, its error code and CR2.
                let (mut cpu, mut bus) = machine(&code, supervisor, blocks);
                cpu.gpr = gpr;
                cpu.gpr[4] = crate::test_utils::STACK_TOP - 0x100;
                cpu.set_rflags(flags & !(x86::reg::rflags::TF | x86::reg::rflags::IF));
                let stop = cpu.run(&mut bus, budget);
                (stop, cpu, bus)
            };
            let (stop_a, a, bus_a) = run(true);
            let (stop_b, b, bus_b) = run(false);
            prop_assert_eq!(&stop_a, &stop_b);
            prop_assert_eq!(a.gpr, b.gpr);
            prop_assert_eq!(a.rip, b.rip);
            prop_assert_eq!(a.rflags(), b.rflags());
            prop_assert_eq!(a.retired, b.retired);
            prop_assert_eq!(a.cr2, b.cr2);
            prop_assert!(bus_a.ram == bus_b.ram, "memory differs");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]
        /// Register-only runs (LEA included) with registers at random over all 64 bits: the
        /// lowered ops compute what single steps compute, at 32 and 64 bits, with the flags
        /// recorded or dead.
        #[test]
        fn register_blocks_agree_with_single_steps(
            parts in proptest::collection::vec(
                (0usize..7, any::<bool>(), 0usize..128, any::<[u8; 10]>()), 1..32),
            cc in 0u8..16,
            gpr in any::<[u64; 16]>(),
            flags in any::<u64>(),
        ) {
            let mut code: Vec<u8> = parts
                .iter()
                .filter_map(|&(p, t, o, tail)| instruction(p, t, o, tail))
                .filter(|bytes| {
                    let ins = Decoder::new(64, bytes, DecoderOptions::NONE).decode();
                    ins.mnemonic() == M::Lea
                        || (0..ins.op_count()).all(|n| ins.op_kind(n) != iced_x86::OpKind::Memory)
                })
                .flatten()
                .collect();
            code.extend([0x70 | cc, 0x01, 0xf4, 0xf4]);
            registers_agree(&code, gpr, crate::test_utils::STACK_TOP - 0x100, flags)?;
        }
    }

    /// Runs register-only `code` from `gpr` (RSP replaced by `rsp`) and the status and control
    /// flags of `flags` (TF and IF clear), with blocks and with single steps, and checks that
    /// both end alike; returns the machine that ran blocks.
    fn registers_agree(
        code: &[u8],
        gpr: [u64; 16],
        rsp: u64,
        flags: u64,
    ) -> Result<Cpu, TestCaseError> {
        let run = |blocks: bool| {
            let (mut cpu, mut bus) = long_env(code);
            cpu.use_blocks = blocks;
            cpu.gpr = gpr;
            cpu.gpr[4] = rsp;
            cpu.set_rflags(flags & !(x86::reg::rflags::TF | x86::reg::rflags::IF));
            let stop = cpu.run(&mut bus, 10_000);
            (stop, cpu)
        };
        let (stop_a, a) = run(true);
        let (stop_b, b) = run(false);
        prop_assert_eq!(&stop_a, &stop_b);
        prop_assert_eq!(a.gpr, b.gpr);
        prop_assert_eq!(a.rip, b.rip);
        prop_assert_eq!(a.rflags(), b.rflags());
        prop_assert_eq!(a.retired, b.retired);
        Ok(a)
    }

    /// One instruction over registers `a` and `b` (0 to 3: RAX, RCX, RDX, RBX) for the
    /// forwarding tests: every form that `produces` or consumes `acc`, forms that write a
    /// register without producing (moves, a load, POP, XCHG, a flag-live shift), and CMP and
    /// TEST, which write none but decide whether the flags before them are live.
    fn chain_insn(form: usize, a: u8, b: u8, imm: u8) -> Vec<u8> {
        let rr = 0xc0 | (b << 3) | a; // ModRM: r/m = a (destination), reg = b
        let ra = 0xc0 | (a << 3) | b; // ModRM: reg = a (destination), r/m = b
        match form % 24 {
            0 => vec![0x48, 0x01, rr],                                      // add a, b
            1 => vec![0x48, 0x29, rr],                                      // sub a, b
            2 => vec![0x48, 0x21, rr],                                      // and a, b
            3 => vec![0x48, 0x09, rr],                                      // or a, b
            4 => vec![0x48, 0x31, rr],                                      // xor a, b
            5 => vec![0x48, 0x0f, 0xaf, ra],                                // imul a, b
            6 => vec![0x48, 0x83, 0xc0 | (imm % 7) << 3 | a, imm], // add/or/adc/sbb/and/sub/xor a, imm
            7 => vec![0x48, 0xc1, 0xe0 | a, imm % 63 + 1],         // shl a, imm
            8 => vec![0x48, 0xc1, 0xe8 | a, imm % 63 + 1],         // shr a, imm
            9 => vec![0x48, 0xc1, 0xc0 | a, imm % 63 + 1],         // rol a, imm
            10 => vec![0x48, 0xff, 0xc0 | a],                      // inc a
            11 => vec![0x48, 0xff, 0xc8 | a],                      // dec a
            12 => vec![0x48, 0x89, rr],                            // mov a, b
            13 => vec![0x48, 0x89, rr, 0x48, 0xc1, 0xe0 | a, imm % 63 + 1], // mov + shl
            14 => vec![0x48, 0x89, rr, 0x48, 0x83, 0xc0 | a, imm], // mov + add imm (fused)
            15 => vec![0x0f, 0xb6, ra],                            // movzx a32, b8
            16 => vec![0x48, 0x8b, 0x44 | (a << 3), 0x24, 0x08],   // mov a, [rsp + 8]
            17 => vec![0x50 | a],                                  // push a
            18 => vec![0x58 | a],                                  // pop a
            19 => vec![0x48, 0x87, rr],                            // xchg a, b
            20 => vec![0x48, 0x83, if imm & 1 == 0 { 0xec } else { 0xc4 }, 8], // sub/add rsp, 8
            21 => vec![0x48, 0x8d, 0x04 | (a << 3), (b << 3) | a], // lea a, [a + b]
            22 => vec![0x48, 0x39, rr],                            // cmp a, b
            _ => vec![0x48, 0x85, rr],                             // test a, b
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]
        /// Chains over four registers, so that an op often reads the result of the one before
        /// (`forward`) and often a register written in between by something that does not
        /// leave its result in `acc`: blocks agree with single steps.
        #[test]
        fn forwarded_chains_agree_with_single_steps(
            parts in proptest::collection::vec((0usize..24, 0u8..4, 0u8..4, any::<u8>()), 1..24),
            gpr in any::<[u64; 16]>(),
            flags in any::<u64>(),
        ) {
            let mut code: Vec<u8> = vec![0x90];
            for &(form, a, b, imm) in &parts {
                code.extend(chain_insn(form, a, b, imm));
            }
            code.extend([0x74, 0x01, 0xf4, 0xf4]);
            let a = registers_agree(&code, gpr, crate::test_utils::STACK_TOP - 0x400, flags)?;
            prop_assert!(a.counters.blocks_run > 0);
        }
    }

    /// An instruction whose flags a later one overwrites keeps them when something between
    /// them faults: the handler's frame holds them.
    #[test]
    fn flags_are_exact_at_a_fault_inside_a_block() {
        #[rustfmt::skip]
        let code = [
            0x90,               // nop (the block starts after the first fetch)
            0x01, 0xd8,         // add eax, ebx: CF, ZF and PF set
            0x48, 0x8b, 0x0a,   // mov rcx, [rdx]: #GP, RDX is not canonical
            0x29, 0xd8,         // sub eax, ebx
            0xf4,
        ];
        let run = |blocks: bool| {
            let (mut cpu, mut bus) = long_env(&code);
            bus.load(HANDLER, &[0xf4]);
            crate::test_utils::set_gate64(&mut bus, 13, HANDLER, false, 0, 0);
            cpu.use_blocks = blocks;
            cpu.gpr[0] = 1;
            cpu.gpr[3] = u64::from(u32::MAX);
            cpu.gpr[2] = 0x8000_0000_0000_0000;
            cpu.gpr[4] = crate::test_utils::STACK_TOP - 0x100;
            assert_eq!(cpu.run(&mut bus, 1000), Ok(crate::StopReason::Halted));
            // The frame: error code, RIP, CS, RFLAGS, RSP, SS.
            let rflags = bus.read_u64(cpu.gpr[4] + 24);
            (
                cpu.rip,
                bus.read_u64(cpu.gpr[4] + 8),
                rflags,
                cpu.counters.blocks_run,
            )
        };
        let (a, b) = (run(true), run(false));
        assert_eq!(a.0, HANDLER + 1);
        assert_eq!(a.1, CODE + 3, "the frame's RIP is the faulting MOV");
        let status = x86::reg::rflags::CF | x86::reg::rflags::ZF | x86::reg::rflags::PF;
        assert_eq!(a.2 & status, status);
        assert_eq!(a.2, b.2);
        assert_eq!((a.3, b.3), (1, 0));
    }

    /// Loads and stores lowered to ops: RIP-relative and base + index * scale forms, 32-bit
    /// loads zero-extending, and a store into the block's own page ending the block.
    #[test]
    fn loads_and_stores_in_a_block() {
        #[rustfmt::skip]
        let code = [
            0x90,                                       // nop
            0x48, 0x8b, 0x05, 0x1c, 0x00, 0x00, 0x00,   // mov rax, [rip + 0x1c] (the data)
            0x8b, 0x0c, 0x5e,                           // mov ecx, [rsi + rbx * 2]
            0x48, 0x89, 0x14, 0x5e,                     // mov [rsi + rbx * 2], rdx
            0x48, 0x89, 0x05, 0x06, 0x00, 0x00, 0x00,   // mov [rip + 6], rax: into this page
            0x48, 0xff, 0xc7,                           // inc rdi
            0xf4,                                       // hlt
            0x90, 0x90,
            0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, // (overwritten)
            0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // the data
        ];
        let run = |blocks: bool| {
            let (mut cpu, mut bus) = long_env(&code);
            cpu.use_blocks = blocks;
            cpu.gpr[1] = u64::MAX;
            cpu.gpr[2] = 0x0123_4567_89ab_cdef;
            cpu.gpr[3] = 4;
            cpu.gpr[6] = 0x10_8000;
            bus.write_u64(0x10_8008, 0xffff_ffff_8765_4321);
            assert_eq!(cpu.run(&mut bus, 1000), Ok(crate::StopReason::Halted));
            (cpu, bus)
        };
        let ((a, bus_a), (b, bus_b)) = (run(true), run(false));
        assert_eq!(a.gpr[0], 0x1122_3344_5566_7788);
        assert_eq!(a.gpr[1], 0x8765_4321, "a 32-bit load zero-extends");
        assert_eq!(bus_a.read_u64(0x10_8008), 0x0123_4567_89ab_cdef);
        assert_eq!(bus_a.read_u64(CODE + 0x1c), 0x1122_3344_5566_7788);
        assert_eq!(a.gpr[7], 1);
        assert_eq!(a.gpr, b.gpr);
        assert_eq!(a.retired, b.retired);
        assert!(bus_a.ram == bus_b.ram);
        assert_eq!(
            a.counters.blocks_run, 2,
            "the store into the page ended the first block"
        );
    }

    /// Runs `code` with blocks and with single steps after `setup`, with exceptions delivered
    /// to a HLT, and checks that both end the same way: registers, RIP, RFLAGS, instructions
    /// retired, memory, and every MMIO access with its value and virtual time. It does so on
    /// user pages and on supervisor pages (where loads and stores hit the data pages), and
    /// returns the machine that ran blocks on supervisor pages.
    fn agree(code: &[u8], setup: impl Fn(&mut Cpu)) -> Cpu {
        agree_on(code, &setup, false);
        agree_on(code, &setup, true)
    }

    /// A 64-bit machine running `code`, with blocks or single steps, on the test board's user
    /// pages or on supervisor pages (where CPL 0 accesses use the data pages), and every
    /// exception delivered to a HLT at [`HANDLER`].
    fn machine(code: &[u8], supervisor: bool, blocks: bool) -> (Cpu, TestBus) {
        let (mut cpu, mut bus) = long_env(code);
        if supervisor {
            crate::test_utils::supervisor_pages(&mut bus);
        }
        bus.load(HANDLER, &[0xf4]);
        for vector in 0..32 {
            crate::test_utils::set_gate64(&mut bus, vector, HANDLER, false, 0, 0);
        }
        cpu.use_blocks = blocks;
        (cpu, bus)
    }

    /// [`agree`] on user pages (no access uses the data pages) or supervisor pages.
    fn agree_on(code: &[u8], setup: &impl Fn(&mut Cpu), supervisor: bool) -> Cpu {
        let run = |blocks: bool| {
            let (mut cpu, mut bus) = machine(code, supervisor, blocks);
            cpu.gpr[4] = crate::test_utils::STACK_TOP - 0x100;
            setup(&mut cpu);
            let stop = cpu.run(&mut bus, 1000);
            (stop, cpu, bus)
        };
        let ((stop_a, a, bus_a), (stop_b, b, bus_b)) = (run(true), run(false));
        assert_eq!(stop_a, stop_b);
        assert_eq!((a.gpr, a.rip, a.rflags()), (b.gpr, b.rip, b.rflags()));
        assert_eq!(a.retired, b.retired);
        assert!(bus_a.ram == bus_b.ram, "memory differs");
        assert_eq!(bus_a.mmio_writes, bus_b.mmio_writes);
        assert_eq!(
            bus_a.mmio_times, bus_b.mmio_times,
            "a device saw another time"
        );
        assert_eq!(b.counters.blocks_run, 0);
        a
    }

    /// PUSH, POP, CALL and RET lowered to ops behave as single steps: a call into a function
    /// that swaps two registers through the stack, a stack and a store in MMIO (the device
    /// sees each access at its instruction's time), POP RSP, and a RET to a non-canonical
    /// address (#GP with RSP not popped).
    #[test]
    fn stack_ops_agree_with_single_steps() {
        const MMIO: u64 = 0x3000_0000;
        #[rustfmt::skip]
        let call = [
            0x90,                           // nop
            0x48, 0x83, 0xc0, 0x01,         // add rax, 1
            0xe8, 0x06, 0x00, 0x00, 0x00,   // call f
            0x48, 0x89, 0x06,               // mov [rsi], rax
            0xf4,                           // hlt
            0x90, 0x90,
            0x53,                           // f: push rbx
            0x41, 0x55,                     // push r13
            0x48, 0x83, 0xc0, 0x01,         // add rax, 1
            0x5b,                           // pop rbx
            0x41, 0x5d,                     // pop r13
            0xc3,                           // ret
        ];
        let swap = |rsi: u64, rsp: u64| {
            move |cpu: &mut Cpu| {
                (cpu.gpr[3], cpu.gpr[13], cpu.gpr[6]) = (0x1111, 0x2222, rsi);
                cpu.gpr[4] = rsp;
            }
        };
        let stack = crate::test_utils::STACK_TOP - 0x100;
        let a = agree(&call, swap(0x10_8000, stack));
        assert_eq!(
            (a.gpr[0], a.gpr[3], a.gpr[13], a.gpr[4]),
            (2, 0x2222, 0x1111, stack)
        );
        assert!(a.counters.blocks_run >= 3);
        agree(&call, swap(MMIO, stack));
        agree(&call, swap(0x10_8000, MMIO + 0x100));
        #[rustfmt::skip]
        let pop_rsp = [
            0x90,                   // nop
            0x56,                   // push rsi
            0x5c,                   // pop rsp
            0xf4,                   // hlt
        ];
        let a = agree(&pop_rsp, |cpu| cpu.gpr[6] = 0x10_9000);
        assert_eq!(a.gpr[4], 0x10_9000);
        #[rustfmt::skip]
        let bad_ret = [
            0x90,                                                       // nop
            0x48, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0x80,                      // mov rax, 1 << 63
            0x50,                                                       // push rax
            0xc3,                                                       // ret: #GP
        ];
        let a = agree(&bad_ret, |_| {});
        assert_eq!(a.rip, HANDLER + 1);
    }

    /// The data-page hit of a block's loads and stores stops where single steps would see
    /// something else: an FS or GS operand is not its offset's linear address, and a store that
    /// rewrites the next instruction ends the block, so the new instruction runs.
    #[test]
    fn block_data_accesses_respect_segment_bases_and_code_writes() {
        #[rustfmt::skip]
        let bases = [
            0x90,                               // nop
            0x48, 0x89, 0x13,                   // mov [rbx], rdx: caches the page of rbx
            0x64, 0x48, 0x89, 0x33,             // mov fs:[rbx], rsi
            0x64, 0x48, 0x8b, 0x03,             // mov rax, fs:[rbx]
            0x65, 0x48, 0x89, 0x43, 0x08,       // mov gs:[rbx + 8], rax
            0x48, 0x8b, 0x0b,                   // mov rcx, [rbx]
            0xf4,                               // hlt
        ];
        let a = agree(&bases, |cpu| {
            (cpu.gpr[2], cpu.gpr[3], cpu.gpr[6]) = (0x1111, 0x10_8000, 0x2222);
            cpu.seg[Seg::Fs as usize].base = 0x1000;
            cpu.seg[Seg::Gs as usize].base = 0x2000;
        });
        assert_eq!((a.gpr[0], a.gpr[1]), (0x2222, 0x1111));
        #[rustfmt::skip]
        let rewrite = [
            0x90,                                       // nop
            0x48, 0x8b, 0x05, 0x17, 0x00, 0x00, 0x00,   // mov rax, [rip + 0x17]: the new code
            0x48, 0x89, 0x05, 0x18, 0x00, 0x00, 0x00,   // mov [rip + 0x18], rax: makes the
                                                        // code page's data page writable
            0x48, 0x89, 0x05, 0x00, 0x00, 0x00, 0x00,   // mov [rip], rax: over the next 8
            0x48, 0xff, 0xc7, 0x90, 0x90, 0x90, 0x90, 0x90, // inc rdi (becomes inc rsi)
            0xf4,                                       // hlt
            0x48, 0xff, 0xc6, 0x90, 0x90, 0x90, 0x90, 0x90, // the new code: inc rsi
            0, 0, 0, 0, 0, 0, 0, 0,                     // scratch
        ];
        let a = agree(&rewrite, |_| {});
        assert_eq!(
            (a.gpr[6], a.gpr[7]),
            (1, 0),
            "the rewritten instruction ran"
        );
    }

    /// A 64-bit load or store through RBP or RSP addresses the stack segment: at a
    /// non-canonical address it faults with #SS(0), through any other base with #GP(0) (SDM
    /// Vol. 3A §6.15), in a block as in single steps.
    #[test]
    fn non_canonical_stack_operands_fault_with_ss() {
        #[rustfmt::skip]
        let code = [
            0x90,                           // nop
            0x48, 0x8b, 0x45, 0x08,         // mov rax, [rbp + 8]
            0xf4,                           // hlt
            0x90,                           // nop
            0x48, 0x89, 0x43, 0x08,         // mov [rbx + 8], rax
            0xf4,                           // hlt
        ];
        let run = |blocks: bool, start: u64| {
            let (mut cpu, mut bus) = long_env(&code);
            crate::test_utils::supervisor_pages(&mut bus);
            bus.load(HANDLER, &[0xf4, 0xf4]);
            crate::test_utils::set_gate64(&mut bus, crate::fault::vector::SS, HANDLER, false, 0, 0);
            crate::test_utils::set_gate64(
                &mut bus,
                crate::fault::vector::GP,
                HANDLER + 1,
                false,
                0,
                0,
            );
            cpu.use_blocks = blocks;
            cpu.rip = start;
            (cpu.gpr[3], cpu.gpr[5]) = (1 << 63, 1 << 63);
            cpu.run(&mut bus, 100).unwrap();
            (cpu.rip, cpu.retired, cpu.counters.blocks_run)
        };
        for (start, handler) in [(CODE, HANDLER), (CODE + 6, HANDLER + 1)] {
            let (rip, retired, blocks) = run(true, start);
            assert_eq!((rip, retired), (handler + 1, run(false, start).1));
            assert!(blocks >= 1);
        }
    }

    /// A block's loads look the data pages up without their key, which each block checks as
    /// it starts: a MOV to CR3 between two blocks (it is not burst-safe) drops what the first
    /// cached, so the second reads through the new tables.
    #[test]
    fn a_cr3_write_between_blocks_drops_the_data_pages() {
        #[rustfmt::skip]
        let code = [
            0x90,                   // nop
            0x48, 0x8b, 0x03,       // mov rax, [rbx]
            0x0f, 0x22, 0xd9,       // mov cr3, rcx
            0x90,                   // nop: fetched through the new tables
            0x90,                   // nop
            0x48, 0x8b, 0x13,       // mov rdx, [rbx]
            0xf4,                   // hlt
        ];
        let (mut cpu, mut bus) = long_env(&code);
        crate::test_utils::supervisor_pages(&mut bus);
        // Tables like the identity map's but for 4 MiB, which map 6 MiB.
        let (pml4, pdpt, pd) = (0x2_0000u64, 0x2_1000u64, 0x2_2000u64);
        bus.write_u64(pml4, pdpt | 3);
        bus.write_u64(pdpt, pd | 3);
        for i in 0..512u64 {
            let frame = if i == 2 { 3 } else { i };
            bus.write_u64(pd + 8 * i, (frame << 21) | 0x83);
        }
        bus.write_u64(0x40_0000, 0xaaaa);
        bus.write_u64(0x60_0000, 0xbbbb);
        (cpu.gpr[1], cpu.gpr[3]) = (pml4, 0x40_0000);
        assert_eq!(cpu.run(&mut bus, 100), Ok(crate::StopReason::Halted));
        assert_eq!((cpu.gpr[0], cpu.gpr[2]), (0xaaaa, 0xbbbb));
        assert_eq!(cpu.counters.blocks_run, 2);
    }

    /// Every fused `MOV d, s; op d, …` form, a second source naming `d` included, computes
    /// what single steps compute.
    #[test]
    fn fused_pairs_agree_with_single_steps() {
        #[rustfmt::skip]
        let code = [
            0x90,                               // nop
            0x49, 0x89, 0xc1, 0x4d, 0x31, 0xc1, // mov r9, rax; xor r9, r8
            0x4d, 0x89, 0xca, 0x4d, 0x01, 0xd2, // mov r10, r9; add r10, r10
            0x4d, 0x89, 0xcb, 0x49, 0x29, 0xc3, // mov r11, r9; sub r11, rax
            0x89, 0xc1, 0x81, 0xe1, 0xff, 0x00, 0x00, 0x00, // mov ecx, eax; and ecx, 0xff
            0x48, 0x89, 0xc2, 0x48, 0x83, 0xc2, 0x05, // mov rdx, rax; add rdx, 5
            0x48, 0x89, 0xc6, 0x48, 0xc1, 0xee, 0x03, // mov rsi, rax; shr rsi, 3
            0x48, 0x89, 0xc7, 0x48, 0xc1, 0xc7, 0x09, // mov rdi, rax; rol rdi, 9
            0x48, 0x89, 0xc3, 0x48, 0xc1, 0xcb, 0x07, // mov rbx, rax; ror rbx, 7
            0x41, 0x89, 0xc4, 0x41, 0xc1, 0xe4, 0x04, // mov r12d, eax; shl r12d, 4
            0x41, 0x89, 0xc5, 0x41, 0xc1, 0xcd, 0x05, // mov r13d, eax; ror r13d, 5
            0x48, 0x39, 0xc0,                   // cmp rax, rax: the flags above are dead
            0xf4,
        ];
        let run = |blocks: bool| {
            let (mut cpu, mut bus) = long_env(&code);
            cpu.use_blocks = blocks;
            cpu.gpr[0] = 0xf123_4567_89ab_cdef;
            cpu.gpr[8] = 0x0f0f_0f0f_f0f0_f0f0;
            for r in [1, 2, 3, 6, 7, 9, 10, 11, 12, 13] {
                cpu.gpr[r] = 0xdead_beef_dead_beef;
            }
            assert_eq!(cpu.run(&mut bus, 1000), Ok(crate::StopReason::Halted));
            cpu
        };
        let (a, b) = (run(true), run(false));
        assert_eq!(a.gpr, b.gpr);
        assert_eq!(a.rflags(), b.rflags());
        assert_eq!(a.retired, b.retired);
        let r9 = 0xf123_4567_89ab_cdef_u64 ^ 0x0f0f_0f0f_f0f0_f0f0;
        assert_eq!(a.gpr[10], r9.wrapping_mul(2));
        let fused = a
            .icache
            .blocks
            .ops
            .iter()
            .filter(|op| op.kind() == K::XorRNf3)
            .count();
        assert_eq!(fused, 1);
    }

    /// A CMP or TEST of width `w` (8, 16, 32, 64) between registers `a` and `b` (0 to 3), or
    /// `a` and `imm`.
    fn compare(test: bool, with_imm: bool, w: u32, a: u8, b: u8, imm: i32) -> Vec<u8> {
        let mut code = Vec::new();
        match w {
            16 => code.push(0x66),
            64 => code.push(0x48),
            _ => {}
        }
        let byte = w == 8;
        match (test, with_imm) {
            (false, false) => code.extend([if byte { 0x38 } else { 0x39 }, 0xc0 | b << 3 | a]),
            (true, false) => code.extend([if byte { 0x84 } else { 0x85 }, 0xc0 | b << 3 | a]),
            (false, true) => code.extend([if byte { 0x80 } else { 0x81 }, 0xf8 | a]),
            (true, true) => code.extend([if byte { 0xf6 } else { 0xf7 }, 0xc0 | a]),
        }
        let bytes = imm.to_le_bytes();
        if with_imm {
            code.extend_from_slice(
                &bytes[..match w {
                    8 => 1,
                    16 => 2,
                    _ => 4,
                }],
            );
        }
        code
    }

    /// [`compare`], then its consumer: CMOVE/CMOVNE between `c` and `d` (`consumer` 0: 64 bits,
    /// 1: 32 bits), SETE/SETNE of `c` (2), or JE/JNE over one byte (3: short, 4: near).
    fn compare_and_consume(
        test: bool,
        with_imm: bool,
        w: u32,
        (a, b, c, d): (u8, u8, u8, u8),
        imm: i32,
        ne: bool,
        consumer: u8,
    ) -> Vec<u8> {
        let mut code = compare(test, with_imm, w, a, b, imm);
        let cc = u8::from(ne);
        match consumer {
            0 => code.extend([0x48, 0x0f, 0x44 | cc, 0xc0 | c << 3 | d]), // cmovcc c, d (64)
            1 => code.extend([0x0f, 0x44 | cc, 0xc0 | c << 3 | d]),       // cmovcc c, d (32)
            2 => code.extend([0x0f, 0x94 | cc, 0xc0 | c]),                // setcc c (low byte)
            3 => code.extend([0x74 | cc, 1]),                             // jcc +1
            _ => code.extend([0x0f, 0x84 | cc, 1, 0, 0, 0]),              // jcc +1 (near)
        }
        code
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 800, ..ProptestConfig::default() })]
        /// A CMP or TEST fused with the consumer of its flags computes what single steps
        /// compute, at every width, with register and immediate operands, equal and unequal:
        /// with a CMOVcc or SETcc on E or NE after which the flags are dead (`fuse_on_zf`;
        /// with the flags live after it, the pair is not fused), or with the JE or JNE that
        /// ends the block (`fuse_branch`), taken or not.
        #[test]
        fn compares_fused_with_their_consumer_agree_with_single_steps(
            test in any::<bool>(),
            with_imm in any::<bool>(),
            w in prop::sample::select(vec![8u32, 16, 32, 64]),
            regs in (0u8..4, 0u8..4, 0u8..4, 0u8..4),
            imm in any::<i32>(),
            ne in any::<bool>(),
            consumer in 0u8..5,
            live in any::<bool>(),
            mut gpr in any::<[u64; 16]>(),
            equal in any::<bool>(),
            flags in any::<u64>(),
        ) {
            // A NOP first: the first instruction runs before any block (its page is not yet
            // the burst's). Then ADD c, a, which leaves c's value in `acc` (`forward`): after
            // the pair, XOR c, b must not take it from there, since the pair wrote c.
            let (a, b, c, _) = regs;
            let branch = consumer >= 3;
            let mut code = vec![0x90, 0x48, 0x01, 0xc0 | a << 3 | c];
            code.extend(compare_and_consume(test, with_imm, w, regs, imm, ne, consumer));
            // Operands equal (the ADD writes neither).
            if equal && c != a && c != b {
                gpr[usize::from(b)] = gpr[usize::from(a)];
                if with_imm {
                    gpr[usize::from(a)] = imm as i64 as u64;
                }
            }
            if !branch {
                if !live {
                    // XOR c, b, then CMP RAX, RAX: the flags after the consumer are dead.
                    code.extend([0x48, 0x31, 0xc0 | b << 3 | c, 0x48, 0x39, 0xc0]);
                }
                code.extend([0x75, 0x01]);
            }
            // A taken branch skips one HLT.
            code.extend([0xf4, 0xf4]);
            let cpu = registers_agree(&code, gpr, crate::test_utils::STACK_TOP - 0x100, flags)?;
            let fused = cpu.icache.blocks.ops.iter().any(|op| {
                matches!(
                    op.kind(),
                    K::CmpRZ | K::CmpIZ | K::TestRZ | K::TestIZ
                        | K::CmpRJz | K::CmpIJz | K::TestRJz | K::TestIJz
                )
            });
            prop_assert_eq!(fused, branch || !live);
        }
    }

    /// The integer loop of bench-intloop runs as one block per iteration, and its flags are
    /// those of single steps.
    #[test]
    fn a_loop_runs_as_one_block_per_iteration() {
        #[rustfmt::skip]
        let code = [
            0x48, 0x0f, 0xaf, 0xce,         // l: imul rcx, rsi
            0x49, 0x89, 0xc1,               // mov r9, rax
            0x49, 0xc1, 0xe1, 0x0d,         // shl r9, 13
            0x49, 0x31, 0xc1,               // xor r9, rax
            0x49, 0xff, 0xc0,               // inc r8
            0x4c, 0x39, 0xc7,               // cmp rdi, r8
            0x75, 0xeb,                     // jne l
            0xf4,                           // hlt
        ];
        let run = |blocks: bool, budget: u64| {
            let (mut cpu, mut bus) = long_env(&code);
            cpu.use_blocks = blocks;
            cpu.gpr[0] = 0x9e37_79b9_7f4a_7c15;
            cpu.gpr[1] = 1;
            cpu.gpr[6] = 0x2545_f491_4f6c_dd1d;
            cpu.gpr[7] = 1000;
            let stop = cpu.run(&mut bus, budget);
            (stop, cpu)
        };
        let ((stop, a), (_, b)) = (run(true, 100_000), run(false, 100_000));
        assert_eq!(stop, Ok(crate::StopReason::Halted));
        assert_eq!(a.gpr, b.gpr);
        assert_eq!(a.rflags(), b.rflags());
        assert_eq!(a.retired, b.retired);
        assert_eq!(a.counters.blocks_run, 1000);
        assert_eq!(b.counters.blocks_run, 0);
        // The loop runs itself again without the burst: it still stops at the budget, on an
        // instruction boundary inside an iteration or between two.
        for budget in [1, 6, 7, 8, 50, 351, 5001] {
            let ((stop_a, a), (stop_b, b)) = (run(true, budget), run(false, budget));
            assert_eq!(stop_a, stop_b, "budget {budget}");
            assert_eq!((a.gpr, a.rip, a.retired), (b.gpr, b.rip, b.retired));
            assert_eq!(a.retired, budget);
        }
    }
}
