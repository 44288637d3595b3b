//! Emulation of the guest instructions that touch emulated memory-mapped I/O: a page the
//! hypervisor leaves unmapped in EPT (the local APIC's, say) makes every access an EPT
//! violation (SDM Vol. 3C §28.2.1, table 28-7); the hypervisor then decodes the faulting
//! instruction with [`decode`], performs the access against a device with [`emulate`] and
//! advances RIP by [`MmioInstruction::len`] (the caller's job, in the one place RIP moves).
//!
//! The decoder is small and exact, for the moves a kernel uses on device registers: MOV r/m,r
//! (88/89), MOV r,r/m (8A/8B), MOV r/m,imm (C6/C7 /0), MOV with a direct offset (A0–A3, what
//! compilers emit for a constant address) and MOVZX r,r/m8 / r,r/m16 (0F B6/B7), in 64-bit,
//! 32-bit and 16-bit code (SDM Vol. 2A chapter 2, "Instruction Format": legacy prefixes §2.1.1,
//! ModR/M and SIB §2.1.5 with tables 2-1, 2-2 and 2-3, REX prefixes §2.2.1, RIP-relative
//! addressing §2.2.1.6; Vol. 2B MOV and MOVZX). Everything else — a LOCK or REP prefix, any other
//! opcode, a register-direct ModR/M, bytes that end too early, more than 15 bytes — is a
//! [`DecodeError`] naming it; no input panics.
//!
//! The address of the access is not computed: the EPT violation reports the guest-physical
//! address, so only the length of the memory operand (ModR/M, SIB, displacement) matters here,
//! and segment overrides are accepted and skipped.
//!
//! Register writes follow the architecture (SDM Vol. 1 §3.4.1.1): an 8-bit or 16-bit
//! destination keeps the other bits of the register, a 32-bit destination in 64-bit mode is
//! zero-extended to 64 bits, MOVZX zero-extends to its operand size. Outside 64-bit mode bits
//! 63:32 are not visible to the guest and are kept.

use core::fmt;

use devices::Unimplemented;
use x86::Gpa;

/// The architectural limit on the length of an instruction; a longer one raises #GP (SDM Vol.
/// 2A §2.3.11: "the maximum length of an Intel 64 and IA-32 instruction remains 15 bytes").
pub const MAX_INSTRUCTION_LEN: usize = 15;

/// The default operand and address size of the code the guest runs (CS.L and CS.D, SDM Vol. 3A
/// §5.2.1 and Vol. 1 §3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeMode {
    /// 64-bit mode (IA-32e mode, CS.L = 1): 32-bit operands, 64-bit addresses, REX prefixes.
    Bits64,
    /// Protected or compatibility mode with CS.D = 1: 32-bit operands and addresses.
    Bits32,
    /// CS.D = 0 (real mode, virtual-8086 mode, 16-bit protected-mode code): 16-bit operands and
    /// addresses.
    Bits16,
}

/// A general-purpose register operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Register {
    /// Register 0–15 in the encoding order (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8–R15), of
    /// which a byte operand is the low byte (AL..DIL, R8B..R15B).
    Gpr(u8),
    /// AH, CH, DH, BH (bits 15:8 of register 0–3): byte registers 4–7 of an instruction without
    /// a REX prefix (SDM Vol. 2A §2.2.1.2, table 3-1).
    HighByte(u8),
}

/// How a load writes its destination register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegWidth {
    /// Bits 7:0 (or 15:8 for [`Register::HighByte`]); the rest kept.
    Byte,
    /// Bits 15:0; the rest kept.
    Word,
    /// Bits 31:0, keeping bits 63:32: a 32-bit destination outside 64-bit mode.
    Dword,
    /// The whole register: a 64-bit destination, or a 32-bit one in 64-bit mode (the loaded
    /// value zero-extended).
    Qword,
}

/// What an MMIO instruction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioOp {
    /// A read of [`MmioInstruction::size`] bytes, zero-extended and written to `dest` as
    /// `width` says: MOV r,r/m (8A/8B), MOV AL/rAX,moffs (A0/A1), MOVZX (0F B6/B7).
    Load {
        /// The destination register.
        dest: Register,
        /// How the destination is written.
        width: RegWidth,
    },
    /// A write of the low [`MmioInstruction::size`] bytes of `src`: MOV r/m,r (88/89), MOV
    /// moffs,AL/rAX (A2/A3).
    StoreRegister {
        /// The source register.
        src: Register,
    },
    /// A write of an immediate: MOV r/m,imm (C6/C7), already sign-extended to the access size
    /// (a 64-bit store takes a 32-bit immediate) and masked to it.
    StoreImmediate {
        /// The value written.
        value: u64,
    },
}

/// A decoded MMIO instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioInstruction {
    /// Length in bytes, prefixes included: how far RIP advances.
    pub len: u8,
    /// Size of the memory access in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// What it does.
    pub op: MmioOp,
}

impl MmioInstruction {
    /// Whether the access writes memory (a read otherwise).
    pub fn is_write(&self) -> bool {
        !matches!(self.op, MmioOp::Load { .. })
    }
}

/// Why instruction bytes are not an MMIO instruction this decoder handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the instruction does.
    Truncated,
    /// Longer than [`MAX_INSTRUCTION_LEN`] bytes.
    TooLong,
    /// A LOCK prefix (F0).
    Lock,
    /// A REPNE (F2) or REP (F3) prefix, which no move here takes.
    Rep(u8),
    /// A one-byte opcode that is not an MMIO move.
    Opcode(u8),
    /// A two-byte opcode (0F xx) that is not an MMIO move.
    TwoByteOpcode(u8),
    /// C6 or C7 with a ModR/M reg field other than 0 (not MOV r/m,imm).
    Extension {
        /// The opcode.
        opcode: u8,
        /// The ModR/M reg field.
        reg: u8,
    },
    /// ModR/M mod = 11b: a register operand, which no memory access has.
    RegisterOperand,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => write!(f, "instruction bytes end too early"),
            Self::TooLong => write!(f, "instruction longer than 15 bytes"),
            Self::Lock => write!(f, "LOCK prefix on an MMIO access"),
            Self::Rep(p) => write!(f, "prefix {p:#04x} on an MMIO access"),
            Self::Opcode(op) => write!(f, "opcode {op:#04x} is not an MMIO move"),
            Self::TwoByteOpcode(op) => write!(f, "opcode 0x0f {op:#04x} is not an MMIO move"),
            Self::Extension { opcode, reg } => {
                write!(f, "opcode {opcode:#04x} /{reg} is not an MMIO move")
            }
            Self::RegisterOperand => write!(f, "register operand (ModR/M mod = 11b)"),
        }
    }
}

/// Why an MMIO access could not be emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioError {
    /// The device refused the access.
    Device(Unimplemented),
}

impl From<Unimplemented> for MmioError {
    fn from(u: Unimplemented) -> Self {
        Self::Device(u)
    }
}

impl fmt::Display for MmioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Device(u) => write!(f, "MMIO device: {u}"),
        }
    }
}

/// A device behind emulated MMIO, addressed by guest-physical address. A device that cannot
/// perform an access (a width it does not model, say) reports it instead of guessing.
pub trait MmioDevice {
    /// Reads `size` bytes (1, 2, 4 or 8) at `gpa`.
    fn read(&mut self, gpa: Gpa, size: u8) -> Result<u64, Unimplemented>;
    /// Writes the low `size` bytes of `value` at `gpa`.
    fn write(&mut self, gpa: Gpa, size: u8, value: u64) -> Result<(), Unimplemented>;
}

/// The bytes of an instruction, read once from the front.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn next(&mut self) -> Result<u8, DecodeError> {
        if self.pos >= MAX_INSTRUCTION_LEN {
            return Err(DecodeError::TooLong);
        }
        let b = *self.bytes.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads `n` (at most 8) bytes as a little-endian number.
    fn le(&mut self, n: usize) -> Result<u64, DecodeError> {
        let mut v = 0;
        for i in 0..n.min(8) {
            v |= u64::from(self.next()?) << (8 * i);
        }
        Ok(v)
    }

    /// Skips a memory operand: ModR/M, SIB and displacement (tables 2-1, 2-2 and 2-3). Returns
    /// the ModR/M reg field. `addr16`: 16-bit addressing (no SIB, 16-bit displacements).
    fn memory_operand(&mut self, addr16: bool) -> Result<u8, DecodeError> {
        let modrm = self.next()?;
        let (md, reg, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
        if md == 3 {
            return Err(DecodeError::RegisterOperand);
        }
        let disp = if addr16 {
            match md {
                // [disp16]
                0 if rm == 6 => 2,
                0 => 0,
                1 => 1,
                _ => 2,
            }
        } else {
            // rm = 100b: a SIB byte follows, whose base 101b with mod = 00b means "no base,
            // disp32"; rm = 101b with mod = 00b is disp32 (RIP-relative in 64-bit mode). REX.B
            // does not change either rule (§2.2.1.2).
            let base = if rm == 4 { self.next()? & 7 } else { rm };
            match md {
                0 if base == 5 => 4,
                0 => 0,
                1 => 1,
                _ => 4,
            }
        };
        self.le(disp)?;
        Ok(reg)
    }
}

/// The byte register with number `n` (0–15): AH..BH for 4–7 without a REX prefix.
fn byte_register(n: u8, rex: bool) -> Register {
    if !rex && (4..8).contains(&n) {
        Register::HighByte(n - 4)
    } else {
        Register::Gpr(n)
    }
}

/// The mask of an access of `size` bytes.
fn size_mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// Decodes the instruction at the start of `bytes` (the bytes at the guest's RIP; more may
/// follow) as code of `mode`.
pub fn decode(bytes: &[u8], mode: CodeMode) -> Result<MmioInstruction, DecodeError> {
    let mut c = Cursor { bytes, pos: 0 };
    let (mut operand_override, mut address_override) = (false, false);
    // The REX prefix counts only right before the opcode: a legacy prefix after it voids it
    // (§2.2.1: "other placements are ignored"), and of several the last one counts.
    let mut rex: Option<u8> = None;
    let opcode = loop {
        let b = c.next()?;
        match b {
            0x66 => operand_override = true,
            0x67 => address_override = true,
            // ES, CS, SS, DS, FS, GS overrides: the address comes from the EPT violation.
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {}
            0xf0 => return Err(DecodeError::Lock),
            0xf2 | 0xf3 => return Err(DecodeError::Rep(b)),
            0x40..=0x4f if mode == CodeMode::Bits64 => {
                rex = Some(b);
                continue;
            }
            _ => break b,
        }
        rex = None;
    };
    let rex_bits = rex.unwrap_or(0);
    let (rex_w, rex_r) = (rex_bits & 8 != 0, (rex_bits & 4) << 1);
    let operand_size = match (rex_w, mode, operand_override) {
        (true, ..) => 8,
        (false, CodeMode::Bits16, false) | (false, CodeMode::Bits32 | CodeMode::Bits64, true) => 2,
        _ => 4,
    };
    let (addr16, address_size) = match (mode, address_override) {
        (CodeMode::Bits64, false) => (false, 8),
        (CodeMode::Bits64, true) | (CodeMode::Bits32, false) | (CodeMode::Bits16, true) => {
            (false, 4)
        }
        (CodeMode::Bits32, true) | (CodeMode::Bits16, false) => (true, 2),
    };
    let width = |size: u8| match size {
        1 => RegWidth::Byte,
        2 => RegWidth::Word,
        4 if mode != CodeMode::Bits64 => RegWidth::Dword,
        _ => RegWidth::Qword,
    };
    let (size, op) = match opcode {
        0x88..=0x8b => {
            let reg = c.memory_operand(addr16)? | rex_r;
            let byte = opcode & 1 == 0;
            let (size, register) = if byte {
                (1, byte_register(reg, rex.is_some()))
            } else {
                (operand_size, Register::Gpr(reg))
            };
            let op = if opcode & 2 == 0 {
                MmioOp::StoreRegister { src: register }
            } else {
                MmioOp::Load {
                    dest: register,
                    width: width(size),
                }
            };
            (size, op)
        }
        0xa0..=0xa3 => {
            c.le(address_size)?;
            let size = if opcode & 1 == 0 { 1 } else { operand_size };
            let register = Register::Gpr(0);
            let op = if opcode & 2 == 0 {
                MmioOp::Load {
                    dest: register,
                    width: width(size),
                }
            } else {
                MmioOp::StoreRegister { src: register }
            };
            (size, op)
        }
        0xc6 | 0xc7 => {
            let reg = c.memory_operand(addr16)?;
            if reg != 0 {
                return Err(DecodeError::Extension { opcode, reg });
            }
            let size = if opcode == 0xc6 { 1 } else { operand_size };
            let imm_size = size.min(4);
            let imm = c.le(usize::from(imm_size))?;
            // A 64-bit store sign-extends its 32-bit immediate.
            let value = if size == 8 {
                imm as u32 as i32 as i64 as u64
            } else {
                imm
            };
            (
                size,
                MmioOp::StoreImmediate {
                    value: value & size_mask(size),
                },
            )
        }
        0x0f => match c.next()? {
            op2 @ (0xb6 | 0xb7) => {
                let reg = c.memory_operand(addr16)? | rex_r;
                let size = if op2 == 0xb6 { 1 } else { 2 };
                (
                    size,
                    MmioOp::Load {
                        dest: Register::Gpr(reg),
                        width: width(operand_size),
                    },
                )
            }
            op2 => return Err(DecodeError::TwoByteOpcode(op2)),
        },
        _ => return Err(DecodeError::Opcode(opcode)),
    };
    Ok(MmioInstruction {
        // At most MAX_INSTRUCTION_LEN: `Cursor::next` refuses the byte after it.
        len: c.pos as u8,
        size,
        op,
    })
}

fn read_register(regs: &[u64; 16], r: Register) -> u64 {
    match r {
        Register::Gpr(n) => regs[usize::from(n & 15)],
        Register::HighByte(n) => regs[usize::from(n & 3)] >> 8,
    }
}

fn write_register(regs: &mut [u64; 16], r: Register, width: RegWidth, value: u64) {
    let (index, shift, mask) = match (r, width) {
        (Register::HighByte(n), _) => (usize::from(n & 3), 8, 0xff),
        (Register::Gpr(n), RegWidth::Byte) => (usize::from(n & 15), 0, 0xff),
        (Register::Gpr(n), RegWidth::Word) => (usize::from(n & 15), 0, 0xffff),
        (Register::Gpr(n), RegWidth::Dword) => (usize::from(n & 15), 0, 0xffff_ffff),
        (Register::Gpr(n), RegWidth::Qword) => (usize::from(n & 15), 0, u64::MAX),
    };
    let old = regs[index];
    regs[index] = (old & !(mask << shift)) | ((value & mask) << shift);
}

/// Performs `insn`, whose memory operand is at `gpa`, against `device`, with the guest's
/// general-purpose registers in `regs` (encoding order, as in [`Register::Gpr`]: `regs[4]` is
/// RSP, which the caller loads from and stores back to the VMCS). A load reads the device and
/// writes the destination register; a store writes the register's or the immediate's low
/// `insn.size` bytes. RIP is not touched.
pub fn emulate(
    insn: &MmioInstruction,
    regs: &mut [u64; 16],
    device: &mut impl MmioDevice,
    gpa: Gpa,
) -> Result<(), MmioError> {
    let mask = size_mask(insn.size);
    match insn.op {
        MmioOp::Load { dest, width } => {
            let value = device.read(gpa, insn.size)? & mask;
            write_register(regs, dest, width, value);
        }
        MmioOp::StoreRegister { src } => {
            device.write(gpa, insn.size, read_register(regs, src) & mask)?;
        }
        MmioOp::StoreImmediate { value } => device.write(gpa, insn.size, value & mask)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use CodeMode::{Bits16, Bits32, Bits64};
    use MmioOp::{Load, StoreImmediate, StoreRegister};
    use RegWidth::{Byte, Dword, Qword, Word};
    use Register::{Gpr, HighByte};
    use alloc::vec::Vec;

    const RAX: u8 = 0;
    const RCX: u8 = 1;
    const RDX: u8 = 2;
    const RBX: u8 = 3;
    const RSI: u8 = 6;
    const RDI: u8 = 7;
    const R8: u8 = 8;
    const R9: u8 = 9;
    const R15: u8 = 15;

    const fn load(len: u8, size: u8, dest: Register, width: RegWidth) -> MmioInstruction {
        MmioInstruction {
            len,
            size,
            op: Load { dest, width },
        }
    }

    const fn store(len: u8, size: u8, src: Register) -> MmioInstruction {
        MmioInstruction {
            len,
            size,
            op: StoreRegister { src },
        }
    }

    const fn store_imm(len: u8, size: u8, value: u64) -> MmioInstruction {
        MmioInstruction {
            len,
            size,
            op: StoreImmediate { value },
        }
    }

    /// Every supported form against bytes assembled by GNU as and disassembled by objdump.
    const TABLE: &[(&[u8], CodeMode, MmioInstruction)] = &[
        // --- 64-bit mode: what rustc/LLVM emits for xAPIC accesses ---
        // mov dword ptr [rax+0x320], ecx
        (
            &[0x89, 0x88, 0x20, 0x03, 0x00, 0x00],
            Bits64,
            store(6, 4, Gpr(RCX)),
        ),
        // mov eax, dword ptr [rdx+0x30]
        (&[0x8b, 0x42, 0x30], Bits64, load(3, 4, Gpr(RAX), Qword)),
        // mov dword ptr [rax+0xb0], 0
        (
            &[0xc7, 0x80, 0xb0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
            Bits64,
            store_imm(10, 4, 0),
        ),
        // mov dword ptr [rax], 0
        (
            &[0xc7, 0x00, 0x00, 0x00, 0x00, 0x00],
            Bits64,
            store_imm(6, 4, 0),
        ),
        // --- byte registers: AH..BH without REX, SPL..DIL with any REX ---
        // mov byte ptr [rax], cl
        (&[0x88, 0x08], Bits64, store(2, 1, Gpr(RCX))),
        // mov byte ptr [rax], ah
        (&[0x88, 0x20], Bits64, store(2, 1, HighByte(0))),
        // mov byte ptr [rax], bh
        (&[0x88, 0x38], Bits64, store(2, 1, HighByte(3))),
        // mov byte ptr [rax], spl
        (&[0x40, 0x88, 0x20], Bits64, store(3, 1, Gpr(4))),
        // mov byte ptr [rax], r9b
        (&[0x44, 0x88, 0x08], Bits64, store(3, 1, Gpr(R9))),
        // mov byte ptr [r8], cl
        (&[0x41, 0x88, 0x08], Bits64, store(3, 1, Gpr(RCX))),
        // mov cl, byte ptr [rax]
        (&[0x8a, 0x08], Bits64, load(2, 1, Gpr(RCX), Byte)),
        // mov dh, byte ptr [rbx]
        (&[0x8a, 0x33], Bits64, load(2, 1, HighByte(2), Byte)),
        // mov sil, byte ptr [rbx]
        (&[0x40, 0x8a, 0x33], Bits64, load(3, 1, Gpr(RSI), Byte)),
        // --- REX.R/REX.B/REX.W/REX.X ---
        // mov r15d, dword ptr [r12]
        (
            &[0x45, 0x8b, 0x3c, 0x24],
            Bits64,
            load(4, 4, Gpr(R15), Qword),
        ),
        // mov r15, qword ptr [r13+0x10]
        (
            &[0x4d, 0x8b, 0x7d, 0x10],
            Bits64,
            load(4, 8, Gpr(R15), Qword),
        ),
        // mov qword ptr [rax], rbx
        (&[0x48, 0x89, 0x18], Bits64, store(3, 8, Gpr(RBX))),
        // mov dword ptr [rax+r9*8], ecx
        (&[0x42, 0x89, 0x0c, 0xc8], Bits64, store(4, 4, Gpr(RCX))),
        // --- 66: 16-bit operands ---
        // mov word ptr [rax], dx
        (&[0x66, 0x89, 0x10], Bits64, store(3, 2, Gpr(RDX))),
        // mov dx, word ptr [rax+0x7f]
        (
            &[0x66, 0x8b, 0x50, 0x7f],
            Bits64,
            load(4, 2, Gpr(RDX), Word),
        ),
        // --- immediates ---
        // mov byte ptr [rax+0x300], 0x55
        (
            &[0xc6, 0x80, 0x00, 0x03, 0x00, 0x00, 0x55],
            Bits64,
            store_imm(7, 1, 0x55),
        ),
        // mov word ptr [rax], 0x1234
        (
            &[0x66, 0xc7, 0x00, 0x34, 0x12],
            Bits64,
            store_imm(5, 2, 0x1234),
        ),
        // mov qword ptr [rax], -2
        (
            &[0x48, 0xc7, 0x00, 0xfe, 0xff, 0xff, 0xff],
            Bits64,
            store_imm(7, 8, 0xffff_ffff_ffff_fffe),
        ),
        // mov dword ptr [rip+0x100], 0x12345678
        (
            &[0xc7, 0x05, 0x00, 0x01, 0x00, 0x00, 0x78, 0x56, 0x34, 0x12],
            Bits64,
            store_imm(10, 4, 0x1234_5678),
        ),
        // mov dword ptr [0xfee00320], 5 (SIB, no base)
        (
            &[
                0xc7, 0x04, 0x25, 0x20, 0x03, 0xe0, 0xfe, 0x05, 0x00, 0x00, 0x00,
            ],
            Bits64,
            store_imm(11, 4, 5),
        ),
        // --- ModR/M, SIB, disp8/disp32, RIP-relative ---
        // mov dword ptr [rip+0x1000], eax
        (
            &[0x89, 0x05, 0x00, 0x10, 0x00, 0x00],
            Bits64,
            store(6, 4, Gpr(RAX)),
        ),
        // mov eax, dword ptr [rip-0x10]
        (
            &[0x8b, 0x05, 0xf0, 0xff, 0xff, 0xff],
            Bits64,
            load(6, 4, Gpr(RAX), Qword),
        ),
        // mov dword ptr [rax+rcx*4+0x20], esi
        (&[0x89, 0x74, 0x88, 0x20], Bits64, store(4, 4, Gpr(RSI))),
        // mov dword ptr [rsp], edi
        (&[0x89, 0x3c, 0x24], Bits64, store(3, 4, Gpr(RDI))),
        // mov dword ptr [rsp+8], edi
        (&[0x89, 0x7c, 0x24, 0x08], Bits64, store(4, 4, Gpr(RDI))),
        // mov dword ptr [rbp+0], edi
        (&[0x89, 0x7d, 0x00], Bits64, store(3, 4, Gpr(RDI))),
        // mov dword ptr [r13+0], edi
        (&[0x41, 0x89, 0x7d, 0x00], Bits64, store(4, 4, Gpr(RDI))),
        // mov ecx, dword ptr [0xfee00030+rax*1]
        (
            &[0x8b, 0x0c, 0x05, 0x30, 0x00, 0xe0, 0xfe],
            Bits64,
            load(7, 4, Gpr(RCX), Qword),
        ),
        // --- MOVZX ---
        // movzx eax, byte ptr [rdx+0x20]
        (
            &[0x0f, 0xb6, 0x42, 0x20],
            Bits64,
            load(4, 1, Gpr(RAX), Qword),
        ),
        // movzx ecx, word ptr [rdx]
        (&[0x0f, 0xb7, 0x0a], Bits64, load(3, 2, Gpr(RCX), Qword)),
        // movzx rax, byte ptr [rdx]
        (
            &[0x48, 0x0f, 0xb6, 0x02],
            Bits64,
            load(4, 1, Gpr(RAX), Qword),
        ),
        // movzx r8d, word ptr [r9+0x80]
        (
            &[0x45, 0x0f, 0xb7, 0x81, 0x80, 0x00, 0x00, 0x00],
            Bits64,
            load(8, 2, Gpr(R8), Qword),
        ),
        // movzx ax, byte ptr [rdx]
        (
            &[0x66, 0x0f, 0xb6, 0x02],
            Bits64,
            load(4, 1, Gpr(RAX), Word),
        ),
        // --- segment overrides, 67 ---
        // mov dword ptr fs:[rax], ecx
        (&[0x64, 0x89, 0x08], Bits64, store(3, 4, Gpr(RCX))),
        // mov eax, dword ptr gs:[rax+0x30]
        (
            &[0x65, 0x8b, 0x40, 0x30],
            Bits64,
            load(4, 4, Gpr(RAX), Qword),
        ),
        // mov dword ptr [eax+0x320], ecx
        (
            &[0x67, 0x89, 0x88, 0x20, 0x03, 0x00, 0x00],
            Bits64,
            store(7, 4, Gpr(RCX)),
        ),
        // mov eax, dword ptr [eip+0x10]
        (
            &[0x67, 0x8b, 0x05, 0x10, 0x00, 0x00, 0x00],
            Bits64,
            load(7, 4, Gpr(RAX), Qword),
        ),
        // --- moffs: 64-bit offsets, 32-bit with 67 ---
        // movabs eax, [0xfee00030]
        (
            &[0xa1, 0x30, 0x00, 0xe0, 0xfe, 0x00, 0x00, 0x00, 0x00],
            Bits64,
            load(9, 4, Gpr(RAX), Qword),
        ),
        // movabs [0xfee000b0], eax
        (
            &[0xa3, 0xb0, 0x00, 0xe0, 0xfe, 0x00, 0x00, 0x00, 0x00],
            Bits64,
            store(9, 4, Gpr(RAX)),
        ),
        // movabs al, [0xfee00030]
        (
            &[0xa0, 0x30, 0x00, 0xe0, 0xfe, 0x00, 0x00, 0x00, 0x00],
            Bits64,
            load(9, 1, Gpr(RAX), Byte),
        ),
        // movabs rax, [0xfee00030]
        (
            &[0x48, 0xa1, 0x30, 0x00, 0xe0, 0xfe, 0x00, 0x00, 0x00, 0x00],
            Bits64,
            load(10, 8, Gpr(RAX), Qword),
        ),
        // addr32 mov [0xfee000b0], eax
        (
            &[0x67, 0xa3, 0xb0, 0x00, 0xe0, 0xfe],
            Bits64,
            store(6, 4, Gpr(RAX)),
        ),
        // --- REX placement: voided by a later legacy prefix; the last REX counts ---
        // rex.w data16 mov word ptr [rax], cx
        (&[0x48, 0x66, 0x89, 0x08], Bits64, store(4, 2, Gpr(RCX))),
        // rex.wr rex mov byte ptr [rax], spl
        (&[0x4c, 0x40, 0x88, 0x20], Bits64, store(4, 1, Gpr(4))),
        // data16 mov qword ptr [rax], rcx (REX.W wins)
        (&[0x66, 0x48, 0x89, 0x08], Bits64, store(4, 8, Gpr(RCX))),
        // --- 32-bit protected mode ---
        // mov dword ptr [eax+0x320], ecx
        (
            &[0x89, 0x88, 0x20, 0x03, 0x00, 0x00],
            Bits32,
            store(6, 4, Gpr(RCX)),
        ),
        // mov eax, dword ptr [edx+0x30]
        (&[0x8b, 0x42, 0x30], Bits32, load(3, 4, Gpr(RAX), Dword)),
        // mov dword ptr [eax+0xb0], 0
        (
            &[0xc7, 0x80, 0xb0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
            Bits32,
            store_imm(10, 4, 0),
        ),
        // mov dword ptr ds:[0xfee000b0], 0
        (
            &[0xc7, 0x05, 0xb0, 0x00, 0xe0, 0xfe, 0x00, 0x00, 0x00, 0x00],
            Bits32,
            store_imm(10, 4, 0),
        ),
        // mov eax, ds:[0xfee00030]
        (
            &[0xa1, 0x30, 0x00, 0xe0, 0xfe],
            Bits32,
            load(5, 4, Gpr(RAX), Dword),
        ),
        // mov ecx, dword ptr ds:[0xfee00030]
        (
            &[0x8b, 0x0d, 0x30, 0x00, 0xe0, 0xfe],
            Bits32,
            load(6, 4, Gpr(RCX), Dword),
        ),
        // mov word ptr [eax], 0x1234
        (
            &[0x66, 0xc7, 0x00, 0x34, 0x12],
            Bits32,
            store_imm(5, 2, 0x1234),
        ),
        // movzx eax, byte ptr [ecx]
        (&[0x0f, 0xb6, 0x01], Bits32, load(3, 1, Gpr(RAX), Dword)),
        // mov dword ptr [ebp+esi*2-4], ebx
        (&[0x89, 0x5c, 0x75, 0xfc], Bits32, store(4, 4, Gpr(RBX))),
        // mov byte ptr [eax], bh
        (&[0x88, 0x38], Bits32, store(2, 1, HighByte(3))),
        // mov dword ptr [bx+si+0x10], eax
        (&[0x67, 0x89, 0x40, 0x10], Bits32, store(4, 4, Gpr(RAX))),
        // mov ax, word ptr [bp+0]
        (
            &[0x67, 0x66, 0x8b, 0x46, 0x00],
            Bits32,
            load(5, 2, Gpr(RAX), Word),
        ),
        // mov dword ptr es:[di], ecx
        (&[0x26, 0x67, 0x89, 0x0d], Bits32, store(4, 4, Gpr(RCX))),
        // mov dword ptr [0x30], eax (addr16 disp16)
        (
            &[0x67, 0x89, 0x06, 0x30, 0x00],
            Bits32,
            store(5, 4, Gpr(RAX)),
        ),
        // --- 16-bit code ---
        // mov word ptr [bx+si], ax
        (&[0x89, 0x00], Bits16, store(2, 2, Gpr(RAX))),
        // mov ax, ds:[0x30]
        (&[0xa1, 0x30, 0x00], Bits16, load(3, 2, Gpr(RAX), Word)),
        // mov dword ptr [si+0x1234], ecx
        (
            &[0x66, 0x89, 0x8c, 0x34, 0x12],
            Bits16,
            store(5, 4, Gpr(RCX)),
        ),
        // mov word ptr [bx], 0x5678
        (&[0xc7, 0x07, 0x78, 0x56], Bits16, store_imm(4, 2, 0x5678)),
        // mov eax, dword ptr [eax+0x30]
        (
            &[0x67, 0x66, 0x8b, 0x40, 0x30],
            Bits16,
            load(5, 4, Gpr(RAX), Dword),
        ),
        // mov dword ptr [0x10], 1
        (
            &[0x66, 0xc7, 0x06, 0x10, 0x00, 0x01, 0x00, 0x00, 0x00],
            Bits16,
            store_imm(9, 4, 1),
        ),
    ];

    #[test]
    fn every_supported_form() {
        for &(bytes, mode, want) in TABLE {
            assert_eq!(decode(bytes, mode), Ok(want), "{bytes:02x?} in {mode:?}");
            // Bytes after the instruction are not part of it.
            let mut longer = bytes.to_vec();
            longer.extend_from_slice(&[0x90, 0x90, 0x90]);
            assert_eq!(decode(&longer, mode), Ok(want), "{bytes:02x?} + nops");
            assert_eq!(usize::from(want.len), bytes.len());
        }
    }

    #[test]
    fn every_shorter_prefix_is_truncated() {
        for &(bytes, mode, _) in TABLE {
            for n in 0..bytes.len() {
                assert_eq!(
                    decode(&bytes[..n], mode),
                    Err(DecodeError::Truncated),
                    "{:02x?}",
                    &bytes[..n]
                );
            }
        }
    }

    #[test]
    fn direction() {
        let cases: [(&[u8], bool); 5] = [
            (&[0x89, 0x08], true),                   // mov dword ptr [rax], ecx
            (&[0xc6, 0x00, 0x01], true),             // mov byte ptr [rax], 1
            (&[0xa2, 0, 0, 0, 0, 0, 0, 0, 0], true), // movabs byte ptr [0], al
            (&[0x8b, 0x08], false),                  // mov ecx, dword ptr [rax]
            (&[0x0f, 0xb6, 0x08], false),            // movzx ecx, byte ptr [rax]
        ];
        for (bytes, write) in cases {
            assert_eq!(
                decode(bytes, Bits64).unwrap().is_write(),
                write,
                "{bytes:02x?}"
            );
        }
    }

    #[test]
    fn errors() {
        use DecodeError as E;
        let cases: &[(&[u8], CodeMode, DecodeError)] = &[
            (&[], Bits64, E::Truncated),
            (&[0xf0, 0x83, 0x00, 0x01], Bits64, E::Lock), // lock add dword ptr [rax], 1
            (&[0xf0, 0x89, 0x08], Bits64, E::Lock),       // lock mov [rax], ecx (#UD)
            (&[0xf3, 0x89, 0x08], Bits64, E::Rep(0xf3)),  // xrelease mov [rax], ecx
            (&[0xf2, 0x8b, 0x08], Bits64, E::Rep(0xf2)),
            (&[0x01, 0x08], Bits64, E::Opcode(0x01)), // add dword ptr [rax], ecx
            (&[0x87, 0x08], Bits64, E::Opcode(0x87)), // xchg dword ptr [rax], ecx
            (&[0x0f, 0xaf, 0x08], Bits64, E::TwoByteOpcode(0xaf)), // imul ecx, dword ptr [rax]
            (&[0x0f, 0xbe, 0x08], Bits64, E::TwoByteOpcode(0xbe)), // movsx ecx, byte ptr [rax]
            (&[0x89, 0xc8], Bits64, E::RegisterOperand), // mov eax, ecx
            (&[0x8a, 0xc1], Bits32, E::RegisterOperand), // mov al, cl
            (&[0x0f, 0xb6, 0xc1], Bits64, E::RegisterOperand), // movzx eax, cl
            (
                &[0xc7, 0xc0, 0x01, 0x00, 0x00, 0x00],
                Bits64,
                E::RegisterOperand,
            ), // mov eax, 1
            (
                &[0xc7, 0x08, 0x01, 0x00, 0x00, 0x00],
                Bits64,
                E::Extension {
                    opcode: 0xc7,
                    reg: 1,
                },
            ),
            (
                &[0xc6, 0x38, 0x01],
                Bits64,
                E::Extension {
                    opcode: 0xc6,
                    reg: 7,
                },
            ),
            // 40-4F are INC/DEC outside 64-bit mode, not REX.
            (&[0x40, 0x89, 0x08], Bits32, E::Opcode(0x40)), // inc eax
            (&[0x48, 0x89, 0x08], Bits16, E::Opcode(0x48)), // dec ax
            // A REX before 0F still needs an opcode after it.
            (&[0x48, 0x0f], Bits64, E::Truncated),
        ];
        for (bytes, mode, want) in cases {
            assert_eq!(decode(bytes, *mode), Err(*want), "{bytes:02x?}");
        }
    }

    #[test]
    fn fifteen_bytes_is_the_limit() {
        // 13 DS overrides + mov [rax], ecx: 15 bytes.
        let mut bytes = alloc::vec![0x3e; 13];
        bytes.extend_from_slice(&[0x89, 0x08]);
        assert_eq!(decode(&bytes, Bits64), Ok(store(15, 4, Gpr(RCX))));
        // One more prefix: 16 bytes.
        bytes.insert(0, 0x3e);
        assert_eq!(decode(&bytes, Bits64), Err(DecodeError::TooLong));
        // The limit counts displacement and immediate too: 6 prefixes + 10 bytes.
        let mut bytes = alloc::vec![0x3e; 6];
        bytes.extend_from_slice(&[0xc7, 0x80, 0xb0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode(&bytes, Bits64), Err(DecodeError::TooLong));
        // And prefixes alone.
        assert_eq!(decode(&[0x66; 20], Bits64), Err(DecodeError::TooLong));
    }

    #[test]
    fn error_messages_name_the_problem() {
        use alloc::string::ToString;
        assert_eq!(
            DecodeError::TwoByteOpcode(0xaf).to_string(),
            "opcode 0x0f 0xaf is not an MMIO move"
        );
        assert_eq!(
            DecodeError::Extension {
                opcode: 0xc7,
                reg: 1
            }
            .to_string(),
            "opcode 0xc7 /1 is not an MMIO move"
        );
        assert_eq!(
            MmioError::Device(Unimplemented("x")).to_string(),
            "MMIO device: not implemented: x"
        );
    }

    /// A device that answers every read with `answer` and records writes.
    #[derive(Debug, Default)]
    struct Recorder {
        answer: u64,
        reads: Vec<(Gpa, u8)>,
        writes: Vec<(Gpa, u8, u64)>,
        refuse: bool,
    }

    impl MmioDevice for Recorder {
        fn read(&mut self, gpa: Gpa, size: u8) -> Result<u64, Unimplemented> {
            if self.refuse {
                return Err(Unimplemented("refused"));
            }
            self.reads.push((gpa, size));
            Ok(self.answer)
        }

        fn write(&mut self, gpa: Gpa, size: u8, value: u64) -> Result<(), Unimplemented> {
            if self.refuse {
                return Err(Unimplemented("refused"));
            }
            self.writes.push((gpa, size, value));
            Ok(())
        }
    }

    const GPA: Gpa = Gpa::new(0xfee0_0030);
    const FILL: u64 = 0x1111_2222_3333_4444;

    /// Decodes `bytes`, runs it with every register `FILL` (plus its index) and a device that
    /// answers `answer`; returns the registers and the device.
    fn run(bytes: &[u8], mode: CodeMode, answer: u64) -> ([u64; 16], Recorder) {
        let mut regs = core::array::from_fn(|i| FILL + i as u64);
        let mut dev = Recorder {
            answer,
            ..Default::default()
        };
        let insn = decode(bytes, mode).unwrap();
        emulate(&insn, &mut regs, &mut dev, GPA).unwrap();
        (regs, dev)
    }

    /// The registers before `run`, with `index` replaced.
    fn regs_with(index: usize, value: u64) -> [u64; 16] {
        let mut regs: [u64; 16] = core::array::from_fn(|i| FILL + i as u64);
        regs[index] = value;
        regs
    }

    #[test]
    fn loads_write_registers_by_the_x86_rules() {
        let answer = 0x8877_6655_4433_2211;
        // mov cl, byte ptr [rax]: bits 63:8 kept.
        let (regs, dev) = run(&[0x8a, 0x08], Bits64, answer);
        assert_eq!(regs, regs_with(1, 0x1111_2222_3333_4411));
        assert_eq!(dev.reads, [(GPA, 1)]);
        // mov dh, byte ptr [rbx]: bits 15:8 of RDX only.
        let (regs, _) = run(&[0x8a, 0x33], Bits64, answer);
        assert_eq!(regs, regs_with(2, 0x1111_2222_3333_1146));
        // mov sil, byte ptr [rbx]: the low byte of RSI.
        let (regs, _) = run(&[0x40, 0x8a, 0x33], Bits64, answer);
        assert_eq!(regs, regs_with(6, 0x1111_2222_3333_4411));
        // mov dx, word ptr [rax+0x7f]: bits 63:16 kept.
        let (regs, dev) = run(&[0x66, 0x8b, 0x50, 0x7f], Bits64, answer);
        assert_eq!(regs, regs_with(2, 0x1111_2222_3333_2211));
        assert_eq!(dev.reads, [(GPA, 2)]);
        // mov eax, dword ptr [rdx+0x30] in 64-bit mode: zero-extended.
        let (regs, dev) = run(&[0x8b, 0x42, 0x30], Bits64, answer);
        assert_eq!(regs, regs_with(0, 0x4433_2211));
        assert_eq!(dev.reads, [(GPA, 4)]);
        // The same in 32-bit mode: bits 63:32 (invisible to the guest) kept.
        let (regs, _) = run(&[0x8b, 0x42, 0x30], Bits32, answer);
        assert_eq!(regs, regs_with(0, 0x1111_2222_4433_2211));
        // mov r15, qword ptr [r13+0x10].
        let (regs, dev) = run(&[0x4d, 0x8b, 0x7d, 0x10], Bits64, answer);
        assert_eq!(regs, regs_with(15, answer));
        assert_eq!(dev.reads, [(GPA, 8)]);
        // movzx eax, byte ptr [rdx+0x20]: zero-extended to 64 bits.
        let (regs, _) = run(&[0x0f, 0xb6, 0x42, 0x20], Bits64, answer);
        assert_eq!(regs, regs_with(0, 0x11));
        // movzx ax, byte ptr [rdx]: zero-extended to 16 bits, bits 63:16 kept.
        let (regs, _) = run(&[0x66, 0x0f, 0xb6, 0x02], Bits64, answer);
        assert_eq!(regs, regs_with(0, 0x1111_2222_3333_0011));
        // movzx r8d, word ptr [r9+0x80].
        let (regs, dev) = run(
            &[0x45, 0x0f, 0xb7, 0x81, 0x80, 0x00, 0x00, 0x00],
            Bits64,
            answer,
        );
        assert_eq!(regs, regs_with(8, 0x2211));
        assert_eq!(dev.reads, [(GPA, 2)]);
        // movzx eax, byte ptr [ecx] in 32-bit mode: bits 31:8 cleared, 63:32 kept.
        let (regs, _) = run(&[0x0f, 0xb6, 0x01], Bits32, answer);
        assert_eq!(regs, regs_with(0, 0x1111_2222_0000_0011));
        // A device answering wider than the access is masked: mov cl, byte ptr [rax].
        let (regs, _) = run(&[0x8a, 0x08], Bits64, u64::MAX);
        assert_eq!(regs, regs_with(1, 0x1111_2222_3333_44ff));
    }

    #[test]
    fn stores_write_the_low_bytes() {
        let before = regs_with(0, FILL);
        // mov dword ptr [rax+0x320], ecx
        let (after, dev) = run(&[0x89, 0x88, 0x20, 0x03, 0x00, 0x00], Bits64, 0);
        assert_eq!(after, before);
        assert_eq!(dev.writes, [(GPA, 4, 0x3333_4445)]);
        // mov byte ptr [rax], ah vs. mov byte ptr [rax], spl
        let (_, dev) = run(&[0x88, 0x20], Bits64, 0);
        assert_eq!(dev.writes, [(GPA, 1, 0x44)]);
        let (_, dev) = run(&[0x40, 0x88, 0x20], Bits64, 0);
        assert_eq!(dev.writes, [(GPA, 1, 0x48)]);
        // mov byte ptr [rax], r9b
        let (_, dev) = run(&[0x44, 0x88, 0x08], Bits64, 0);
        assert_eq!(dev.writes, [(GPA, 1, 0x4d)]);
        // mov word ptr [rax], dx
        let (_, dev) = run(&[0x66, 0x89, 0x10], Bits64, 0);
        assert_eq!(dev.writes, [(GPA, 2, 0x4446)]);
        // mov qword ptr [rax], rbx
        let (_, dev) = run(&[0x48, 0x89, 0x18], Bits64, 0);
        assert_eq!(dev.writes, [(GPA, 8, FILL + 3)]);
        // mov dword ptr [rax+0xb0], 0
        let (after, dev) = run(
            &[0xc7, 0x80, 0xb0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00],
            Bits64,
            0,
        );
        assert_eq!(after, before);
        assert_eq!(dev.writes, [(GPA, 4, 0)]);
        // mov qword ptr [rax], -2
        let (_, dev) = run(&[0x48, 0xc7, 0x00, 0xfe, 0xff, 0xff, 0xff], Bits64, 0);
        assert_eq!(dev.writes, [(GPA, 8, 0xffff_ffff_ffff_fffe)]);
        // mov dword ptr [rax], 0xfffffffe: no sign extension below 64 bits.
        let (_, dev) = run(&[0xc7, 0x00, 0xfe, 0xff, 0xff, 0xff], Bits64, 0);
        assert_eq!(dev.writes, [(GPA, 4, 0xffff_fffe)]);
        // movabs [0xfee000b0], eax
        let (_, dev) = run(
            &[0xa3, 0xb0, 0x00, 0xe0, 0xfe, 0x00, 0x00, 0x00, 0x00],
            Bits64,
            0,
        );
        assert_eq!(dev.writes, [(GPA, 4, 0x3333_4444)]);
    }

    #[test]
    fn device_refusals_pass_through() {
        let mut regs = [7; 16];
        let mut dev = Recorder {
            refuse: true,
            ..Default::default()
        };
        for bytes in [&[0x8b, 0x08][..], &[0x89, 0x08], &[0xc6, 0x00, 0x01]] {
            let insn = decode(bytes, Bits64).unwrap();
            assert_eq!(
                emulate(&insn, &mut regs, &mut dev, GPA),
                Err(MmioError::Device(Unimplemented("refused")))
            );
        }
        assert_eq!(regs, [7; 16], "a refused load leaves the registers alone");
    }

    /// No byte string panics the decoder or the emulator, and what decodes fits in its bytes:
    /// every one- and two-byte string, and a million pseudo-random 15-byte strings drawn from
    /// the bytes that matter here.
    #[test]
    fn garbage_never_panics() {
        fn check(bytes: &[u8]) {
            for mode in [Bits64, Bits32, Bits16] {
                if let Ok(insn) = decode(bytes, mode) {
                    assert!(usize::from(insn.len) <= bytes.len().min(MAX_INSTRUCTION_LEN));
                    assert!(matches!(insn.size, 1 | 2 | 4 | 8));
                    let mut regs = [u64::MAX; 16];
                    let mut dev = Recorder::default();
                    assert_eq!(emulate(&insn, &mut regs, &mut dev, GPA), Ok(()));
                }
            }
        }
        for a in 0..=255u8 {
            check(&[a]);
            for b in 0..=255u8 {
                check(&[a, b]);
            }
        }
        const INTERESTING: [u8; 24] = [
            0x66, 0x67, 0x40, 0x44, 0x48, 0x4f, 0x2e, 0x64, 0xf0, 0xf3, 0x0f, 0x88, 0x89, 0x8a,
            0x8b, 0xa1, 0xa3, 0xc6, 0xc7, 0xb6, 0xb7, 0x04, 0x05, 0x84,
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..1_000_000 {
            let mut bytes = [0u8; MAX_INSTRUCTION_LEN];
            for b in &mut bytes {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = if x & 1 == 0 {
                    INTERESTING[(x >> 8) as usize % INTERESTING.len()]
                } else {
                    (x >> 16) as u8
                };
            }
            let n = (x >> 32) as usize % (MAX_INSTRUCTION_LEN + 1);
            check(&bytes[..n]);
        }
    }
}
