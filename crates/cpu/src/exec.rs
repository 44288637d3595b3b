//! Fetch, decode and dispatch (SDM Vol. 2 for instruction formats; Vol. 3A §3.7 and §5 for the
//! checks on code fetch).
//!
//! Instructions are decoded by iced-x86 at IP 0, so that one decoded instruction serves every
//! linear address its physical page is mapped at: branch targets and RIP-relative
//! displacements come out relative to the instruction start and are rebased on the current RIP.
//! Dispatch is one `match` on the mnemonic (which iced derives from `Code` by table), into one
//! file per family under `ops/`.

use iced_x86::{
    Decoder, DecoderError, DecoderOptions, Instruction, Mnemonic as M, OpKind, Register,
};

use crate::Cpu;
use crate::bus::Bus;
use crate::error::CpuError;
use crate::fault::{Ex, Exc, Fault};
use crate::mmu::{Access, Phys};
use crate::regs::{self, GprRef};
use crate::state::Seg;
use crate::uop::{Kind, Uop};

/// An operand location.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Loc {
    Reg(GprRef),
    Mem(Seg, u64),
    Imm(u64),
}

/// Maps an iced segment register.
#[inline]
pub(crate) fn seg_of(r: Register) -> Seg {
    match r {
        Register::ES => Seg::Es,
        Register::CS => Seg::Cs,
        Register::SS => Seg::Ss,
        Register::FS => Seg::Fs,
        Register::GS => Seg::Gs,
        _ => Seg::Ds,
    }
}

#[inline]
pub(crate) fn width_mask(bits: u32) -> u64 {
    crate::flags::mask(bits)
}

impl Cpu {
    /// Executes one instruction.
    pub(crate) fn step<B: Bus>(&mut self, bus: &mut B) -> Ex<()> {
        let i = self.fetch(bus)?;
        self.fetched(i)?;
        self.exec_fetched(bus, i)
    }

    /// Executes the instruction `fetch` returned (and `fetched` checked) and retires it.
    #[inline(always)]
    pub(crate) fn exec_fetched<B: Bus>(&mut self, bus: &mut B, i: usize) -> Ex<()> {
        let u = self.uop_ref(i);
        let generic = matches!(u.kind, Kind::Generic | Kind::Safe);
        let nop = matches!(u.kind, Kind::Nop);
        let mask = width_mask(self.code_bits);
        self.next_rip = self.rip.wrapping_add(u64::from(u.len)) & mask;
        // In VMX non-root operation PAUSE (a `Nop` uop) may exit, so it goes through
        // `execute`, whose intercept check decides VM exits; no other uop can exit.
        if generic || (self.vmx.non_root && nop) {
            let ins = self.decoded;
            self.execute(bus, &ins)?;
        } else {
            self.exec_uop(bus, i)?;
        }
        self.rip = self.next_rip;
        self.retired += 1;
        Ok(())
    }

    /// Fetches and decodes the instruction at CS:RIP through the decode cache: the slot it is
    /// cached in, or `usize::MAX` if it is not cached (see `fetched`).
    #[inline(always)]
    pub(crate) fn fetch<B: Bus>(&mut self, bus: &mut B) -> Ex<usize> {
        let bits = self.code_bits;
        // In 64-bit mode RIP is the linear address; its canonical check waits for the miss
        // path, because the cached page was canonical and canonicality is a property of the
        // page number.
        let lin = if bits == 64 {
            self.rip
        } else {
            let lin = self.linear(Seg::Cs, self.rip, 1, Access::Exec)?;
            self.mask_lin(lin)
        };
        // CR3 rather than the PCID names the address space: it is one load instead of a test
        // of CR4.PCIDE, and any change of the PCID is a change of CR3.
        let page1 = (lin >> 12) + 1;
        let generation = self.tlb.generation();
        let p0 = if let Some(f) = self.fetch.find(page1, generation, self.cpl, self.cr3) {
            Phys::Ram(f.ram + (lin & 0xfff) as usize)
        } else {
            self.fetch_page(bus, lin, page1)?
        };
        if let Phys::Ram(off) = p0
            && let Some(i) = self.icache.find(off, bits)
        {
            self.counters.decode_hits += 1;
            return Ok(i);
        }
        self.fetch_miss(bus, lin, p0)?;
        Ok(usize::MAX)
    }

    /// Executes and retires the instruction `fetch` found in a burst (never in VMX non-root
    /// operation: no intercepts): as `fetched` and `exec_fetched`, or `None` for a generic
    /// instruction that is not burst-safe (the full path then fetches it again).
    #[inline(always)]
    pub(crate) fn burst_exec<B: Bus>(
        &mut self,
        bus: &mut B,
        i: usize,
        code_mask: u64,
    ) -> Option<Ex<()>> {
        let u = self.uop_ref(i);
        let (kind, len) = (u.kind, u.len);
        if matches!(kind, Kind::Generic) {
            return None;
        }
        // `code_mask` is the mask of the code size, constant in a burst (64-bit: no limit).
        if code_mask != u64::MAX
            && let Err(e) = self.check_cs_limit(usize::from(len))
        {
            return Some(Err(e));
        }
        self.next_rip = self.rip.wrapping_add(u64::from(len)) & code_mask;
        // In VMX non-root operation PAUSE (a `Nop` uop) may exit: it takes the path with the
        // intercept check. No other uop can cause a VM exit (their memory accesses go through
        // EPT, whose violations come back as errors).
        let r = if matches!(kind, Kind::Safe) || (self.vmx.non_root && matches!(kind, Kind::Nop)) {
            if i != usize::MAX {
                self.decoded = self.icache.instr(i);
            }
            let ins = self.decoded;
            self.execute(bus, &ins)
        } else {
            self.exec_uop(bus, i)
        };
        Some(r.map(|()| {
            self.rip = self.next_rip;
            self.retired += 1;
        }))
    }

    /// Checks the CS limit for the instruction `fetch` found (decode-cache slot `i`, or
    /// `usize::MAX`: the uncached one in `self.fetched`), leaves a generic one in
    /// `self.decoded`, and returns its kind.
    #[inline(always)]
    pub(crate) fn fetched(&mut self, i: usize) -> Ex<Kind> {
        let u = self.uop_ref(i);
        let (kind, len) = (u.kind, u.len);
        if i != usize::MAX
            && (matches!(kind, Kind::Generic | Kind::Safe)
                || (self.vmx.non_root && matches!(kind, Kind::Nop)))
        {
            self.decoded = self.icache.instr(i);
        }
        self.check_cs_limit(usize::from(len))?;
        Ok(kind)
    }

    /// Translates the page of a fetch at `lin` and remembers it.
    #[inline(never)]
    fn fetch_page<B: Bus>(&mut self, bus: &mut B, lin: u64, page1: u64) -> Ex<Phys> {
        if self.code_bits == 64 && !crate::mmu::canonical(lin) {
            return Err(Fault::gp(0).into());
        }
        let p = self.translate(bus, lin, Access::Exec, false)?;
        if let Phys::Ram(off) = p {
            self.fetch.fill(crate::FetchPage {
                page1,
                ram: off & !0xfff,
                generation: self.tlb.generation(),
                cpl: self.cpl,
                cr3: self.cr3,
            });
        }
        Ok(p)
    }

    /// Decodes the instruction at `lin` (physical `p0`) and caches it.
    #[inline(never)]
    fn fetch_miss<B: Bus>(&mut self, bus: &mut B, lin: u64, p0: Phys) -> Ex<()> {
        let bits = self.code_bits;
        self.counters.decode_misses += 1;
        let mut bytes = [0u8; 15];
        let in_page = (4096 - (lin & 0xfff) as usize).min(15);
        for (i, b) in bytes[..in_page].iter_mut().enumerate() {
            let p = match p0 {
                Phys::Ram(off) => Phys::Ram(off + i),
                Phys::Io(pa) => Phys::Io(pa.wrapping_add(i as u64)),
            };
            *b = self.phys_read(bus, p, 1) as u8;
        }
        let mut n = in_page;
        let mut second_fault = None;
        if in_page < 15 {
            let lin1 = self.mask_lin(lin.wrapping_add(in_page as u64));
            match self.translate(bus, lin1, Access::Exec, false) {
                Ok(p1) => {
                    for i in 0..15 - in_page {
                        let p = match p1 {
                            Phys::Ram(off) => Phys::Ram(off + i),
                            Phys::Io(pa) => Phys::Io(pa.wrapping_add(i as u64)),
                        };
                        bytes[in_page + i] = self.phys_read(bus, p, 1) as u8;
                    }
                    n = 15;
                }
                Err(e) => second_fault = Some(e),
            }
        }
        let mut decoder = Decoder::new(bits, &bytes[..n], DecoderOptions::NONE);
        let ins = decoder.decode();
        if ins.is_invalid() {
            if decoder.last_error() == DecoderError::NoMoreBytes
                && let Some(e) = second_fault
            {
                return Err(e);
            }
            // Too long (15 bytes without completing) or undefined: #GP for the length limit
            // (SDM Vol. 2A §2.3.11), #UD otherwise.
            if n == 15 && decoder.last_error() == DecoderError::NoMoreBytes {
                return Err(Fault::gp(0).into());
            }
            return Err(Fault::ud().into());
        }
        self.check_cs_limit(ins.len())?;
        let u = Uop::compile(&ins);
        self.decoded = ins;
        self.fetched = u;
        if let Phys::Ram(off) = p0
            && ins.len() <= in_page
        {
            self.icache.insert(off, bits, &u, &ins);
        }
        Ok(())
    }

    /// The whole instruction must lie within CS (SDM Vol. 3A §5.3).
    #[inline]
    fn check_cs_limit(&self, len: usize) -> Ex<()> {
        if self.code_bits != 64 {
            let last = self.rip.wrapping_add(len as u64 - 1);
            if last > u64::from(self.seg[Seg::Cs as usize].limit) {
                return Err(Fault::gp(0).into());
            }
        }
        Ok(())
    }

    /// The error for an instruction the model does not implement.
    #[inline(never)]
    pub(crate) fn unimplemented<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Exc {
        let lin = self.seg[Seg::Cs as usize].base.wrapping_add(self.rip);
        let bytes = (0..ins.len() as u64)
            .map(|i| {
                self.read_lin(bus, lin.wrapping_add(i), 1, true)
                    .map_or(0, |b| b as u8)
            })
            .collect();
        Exc::Error(Box::new(CpuError::Unimplemented {
            rip: lin,
            bytes,
            mnemonic: format!("{:?}", ins.mnemonic()).to_lowercase(),
        }))
    }

    // --- operands --------------------------------------------------------------------------

    /// The effective address (offset within the segment) of the memory operand.
    #[inline(always)]
    pub(crate) fn ea(&self, ins: &Instruction) -> u64 {
        let disp = ins.memory_displacement64();
        let base = ins.memory_base();
        match base {
            Register::RIP => return self.rip.wrapping_add(disp),
            Register::EIP => return self.rip.wrapping_add(disp) & 0xffff_ffff,
            _ => {}
        }
        let mut a = disp;
        let mut width = 0;
        if let Some(r) = regs::gpr_ref(base) {
            a = a.wrapping_add(regs::read(&self.gpr, r));
            width = r.width;
        }
        if let Some(r) = regs::gpr_ref(ins.memory_index()) {
            let scale = u64::from(ins.memory_index_scale());
            a = a.wrapping_add(regs::read(&self.gpr, r).wrapping_mul(scale));
            if width == 0 {
                width = r.width;
            }
        }
        if width == 0 {
            width = match ins.memory_displ_size() {
                2 => 16,
                4 => 32,
                _ => 64,
            };
        }
        a & width_mask(width)
    }

    /// The location of operand `n`.
    #[inline(always)]
    pub(crate) fn loc(&self, ins: &Instruction, n: u32) -> Loc {
        match ins.op_kind(n) {
            OpKind::Register => match regs::gpr_ref(ins.op_register(n)) {
                Some(r) => Loc::Reg(r),
                None => Loc::Imm(0),
            },
            OpKind::Memory => Loc::Mem(seg_of(ins.memory_segment()), self.ea(ins)),
            OpKind::Immediate8
            | OpKind::Immediate8_2nd
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => Loc::Imm(ins.immediate(n)),
            // Branch targets and string operands are handled by their instructions, which
            // never ask for them here.
            _ => Loc::Imm(0),
        }
    }

    /// The width in bits of operand `n` (register or memory; immediates take the width of
    /// operand 0).
    #[inline(always)]
    pub(crate) fn op_width(&self, ins: &Instruction, n: u32) -> u32 {
        match ins.op_kind(n) {
            OpKind::Register => regs::gpr_ref(ins.op_register(n)).map_or(64, |r| r.width),
            OpKind::Memory => (ins.memory_size().size() * 8) as u32,
            _ if n > 0 => self.op_width(ins, 0),
            _ => 64,
        }
    }

    #[inline(always)]
    pub(crate) fn get<B: Bus>(&mut self, bus: &mut B, loc: Loc, width: u32) -> Ex<u64> {
        match loc {
            Loc::Reg(r) => Ok(regs::read(&self.gpr, r)),
            Loc::Mem(seg, off) => self.read_seg(bus, seg, off, (width / 8) as usize),
            Loc::Imm(v) => Ok(v & width_mask(width)),
        }
    }

    #[inline(always)]
    pub(crate) fn put<B: Bus>(&mut self, bus: &mut B, loc: Loc, width: u32, v: u64) -> Ex<()> {
        match loc {
            Loc::Reg(r) => {
                regs::write(&mut self.gpr, r, v);
                Ok(())
            }
            Loc::Mem(seg, off) => self.write_seg(bus, seg, off, (width / 8) as usize, v),
            Loc::Imm(_) => Err(Fault::ud().into()),
        }
    }

    /// Reads a read-modify-write destination: faults as a write would.
    #[inline(always)]
    pub(crate) fn get_rmw<B: Bus>(&mut self, bus: &mut B, loc: Loc, width: u32) -> Ex<u64> {
        if let Loc::Mem(seg, off) = loc {
            self.probe_write(bus, seg, off, (width / 8) as usize)?;
        }
        self.get(bus, loc, width)
    }

    #[inline]
    pub(crate) fn reg(&self, r: Register) -> u64 {
        regs::gpr_ref(r).map_or(0, |g| regs::read(&self.gpr, g))
    }

    #[inline]
    pub(crate) fn set_reg(&mut self, r: Register, v: u64) {
        if let Some(g) = regs::gpr_ref(r) {
            regs::write(&mut self.gpr, g, v);
        }
    }

    // --- dispatch ---------------------------------------------------------------------------

    pub(crate) fn execute<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        use crate::ops::arith::AluOp;
        // VMX: in non-root operation, the instructions that cause VM exits (SDM Vol. 3C
        // §26.1) exit here, before they execute (`nonroot::intercept`).
        if self.vmx.non_root {
            self.nonroot_intercept(bus, ins)?;
        }
        match ins.mnemonic() {
            M::Add => self.alu(bus, ins, AluOp::Add),
            M::Or => self.alu(bus, ins, AluOp::Or),
            M::Adc => self.alu(bus, ins, AluOp::Adc),
            M::Sbb => self.alu(bus, ins, AluOp::Sbb),
            M::And => self.alu(bus, ins, AluOp::And),
            M::Sub => self.alu(bus, ins, AluOp::Sub),
            M::Xor => self.alu(bus, ins, AluOp::Xor),
            M::Cmp => self.alu(bus, ins, AluOp::Cmp),
            M::Test => self.alu(bus, ins, AluOp::Test),
            M::Inc | M::Dec | M::Neg | M::Not => self.unary(bus, ins),
            M::Shl | M::Sal | M::Shr | M::Sar | M::Rol | M::Ror | M::Rcl | M::Rcr => {
                self.shift(bus, ins)
            }
            M::Shld | M::Shrd => self.shift_double(bus, ins),
            M::Mul | M::Imul | M::Div | M::Idiv => self.muldiv(bus, ins),
            M::Bt | M::Bts | M::Btr | M::Btc => self.bit_test(bus, ins),
            M::Bsf | M::Bsr | M::Tzcnt | M::Lzcnt | M::Popcnt => self.bit_scan(bus, ins),
            M::Bswap => self.bswap(ins),
            M::Mov => self.mov(bus, ins),
            M::Movzx | M::Movsx | M::Movsxd => self.movx(bus, ins),
            M::Lea => self.lea(ins),
            M::Xchg => self.xchg(bus, ins),
            M::Cmpxchg => self.cmpxchg(bus, ins),
            M::Cmpxchg8b | M::Cmpxchg16b => self.cmpxchg_wide(bus, ins),
            M::Xadd => self.xadd(bus, ins),
            M::Cbw | M::Cwde | M::Cdqe | M::Cwd | M::Cdq | M::Cqo => self.convert(ins),
            M::Lahf | M::Sahf => self.lahf_sahf(ins),
            M::Xlatb => self.xlat(bus, ins),
            M::Nop | M::Pause => Ok(()),
            M::Ud0 | M::Ud1 | M::Ud2 => Err(Fault::ud().into()),
            M::Clc | M::Stc | M::Cmc | M::Cld | M::Std => self.flag_op(ins),
            M::Cli | M::Sti => self.cli_sti(ins),
            M::Push
            | M::Pop
            | M::Pushf
            | M::Pushfd
            | M::Pushfq
            | M::Popf
            | M::Popfd
            | M::Popfq
            | M::Pusha
            | M::Pushad
            | M::Popa
            | M::Popad
            | M::Enter
            | M::Leave => self.stack_op(bus, ins),
            M::Jmp
            | M::Call
            | M::Ret
            | M::Retf
            | M::Loop
            | M::Loope
            | M::Loopne
            | M::Jcxz
            | M::Jecxz
            | M::Jrcxz => self.control(bus, ins),
            M::Iret | M::Iretd | M::Iretq => self.iret(bus, ins),
            M::Int | M::Int3 | M::Into | M::Int1 => self.soft_int(bus, ins),
            M::Movsb
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
            | M::Insb
            | M::Insw
            | M::Insd
            | M::Outsb
            | M::Outsw
            | M::Outsd => self.string(bus, ins),
            M::In | M::Out => self.port_io(bus, ins),
            M::Hlt => self.hlt(),
            M::Cpuid => self.cpuid(),
            M::Rdmsr | M::Wrmsr => self.msr_insn(bus, ins),
            M::Rdtsc | M::Rdtscp => self.rdtsc(ins),
            M::Invlpg | M::Invpcid => self.invlpg(bus, ins),
            M::Lgdt | M::Lidt | M::Sgdt | M::Sidt => self.desc_table(bus, ins),
            M::Ltr | M::Str | M::Lldt | M::Sldt => self.ltr_lldt(bus, ins),
            M::Lar | M::Lsl | M::Verr | M::Verw => self.lar_lsl(bus, ins),
            M::Swapgs => self.swapgs(),
            M::Wbinvd | M::Invd => self.cache_ctl(),
            M::Clts | M::Lmsw | M::Smsw => self.cr0_insn(bus, ins),
            M::Syscall | M::Sysret | M::Sysretq | M::Sysenter | M::Sysexit | M::Sysexitq => {
                self.fast_syscall(bus, ins)
            }
            m if is_jcc(m) => self.jcc(ins),
            m if is_setcc(m) => self.setcc(bus, ins),
            m if is_cmovcc(m) => self.cmovcc(bus, ins),
            M::Daa | M::Das | M::Aaa | M::Aas | M::Aam | M::Aad | M::Salc => self.bcd(ins),
            M::Bound => self.bound(bus, ins),
            M::Arpl => self.arpl(bus, ins),
            M::Lds | M::Les | M::Lfs | M::Lgs | M::Lss => self.load_far_pointer(bus, ins),
            M::Wait => self.wait(),
            M::Monitor | M::Mwait => self.monitor_mwait(bus, ins),
            M::Rdrand | M::Rdseed => self.rdrand(ins),
            M::Rdpmc => self.rdpmc(),
            M::Clac | M::Stac => self.clac_stac(ins),
            M::Vmxon
            | M::Vmxoff
            | M::Vmclear
            | M::Vmptrld
            | M::Vmptrst
            | M::Vmread
            | M::Vmwrite
            | M::Vmcall
            | M::Vmlaunch
            | M::Vmresume
            | M::Invept
            | M::Invvpid => self.vmx_insn(bus, ins),
            // Hint NOPs on a processor without CET.
            M::Endbr32 | M::Endbr64 => Ok(()),
            _ => Err(self.not_dispatched(bus, ins)),
        }
    }
}

pub(crate) fn is_jcc(m: M) -> bool {
    matches!(
        m,
        M::Jo
            | M::Jno
            | M::Jb
            | M::Jae
            | M::Je
            | M::Jne
            | M::Jbe
            | M::Ja
            | M::Js
            | M::Jns
            | M::Jp
            | M::Jnp
            | M::Jl
            | M::Jge
            | M::Jle
            | M::Jg
    )
}

pub(crate) fn is_setcc(m: M) -> bool {
    matches!(
        m,
        M::Seto
            | M::Setno
            | M::Setb
            | M::Setae
            | M::Sete
            | M::Setne
            | M::Setbe
            | M::Seta
            | M::Sets
            | M::Setns
            | M::Setp
            | M::Setnp
            | M::Setl
            | M::Setge
            | M::Setle
            | M::Setg
    )
}

pub(crate) fn is_cmovcc(m: M) -> bool {
    matches!(
        m,
        M::Cmovo
            | M::Cmovno
            | M::Cmovb
            | M::Cmovae
            | M::Cmove
            | M::Cmovne
            | M::Cmovbe
            | M::Cmova
            | M::Cmovs
            | M::Cmovns
            | M::Cmovp
            | M::Cmovnp
            | M::Cmovl
            | M::Cmovge
            | M::Cmovle
            | M::Cmovg
    )
}

#[cfg(test)]
impl Cpu {
    /// `step` through the generic handlers only (the reference the `Uop`s are tested against).
    pub(crate) fn step_generic<B: Bus>(&mut self, bus: &mut B) -> Ex<()> {
        let i = self.fetch(bus)?;
        self.fetched(i)?;
        if i != usize::MAX {
            self.decoded = self.icache.instr(i);
        }
        let len = self.uop_ref(i).len;
        self.next_rip = self.rip.wrapping_add(u64::from(len)) & width_mask(self.code_bits);
        let ins = self.decoded;
        self.execute(bus, &ins)?;
        self.rip = self.next_rip;
        self.retired += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::fault::{Exc, Fault};
    use crate::test_utils::{CODE, long_env};

    /// A MOV to CR3 that keeps the TLB (PCID no-flush bit) still moves instruction fetch to
    /// the new address space: the next instruction comes from the new mapping of the page.
    #[test]
    fn fetch_follows_a_cr3_load_that_keeps_the_tlb() {
        let code = CODE as usize;
        #[rustfmt::skip]
        let (mut cpu, mut bus) = long_env(&[
            0x0f, 0x22, 0xd8,               // mov cr3, rax
            0xbb, 0x01, 0x00, 0x00, 0x00,   // mov ebx, 1 (old address space)
            0xf4,                           // hlt
        ]);
        // The same bytes after the MOV in the other space: mov ebx, 2; hlt.
        bus.ram.copy_within(code..code + 9, 0x20_0000 + code);
        bus.ram[0x20_0000 + code + 4] = 2;
        // The other space: PML4 0x10000 -> PDPT 0x11000 -> PD 0x12000, whose first 2-MiB page
        // is the physical one at 2 MiB.
        bus.write_u64(0x1_0000, 0x1_1000 | 7);
        bus.write_u64(0x1_1000, 0x1_2000 | 7);
        bus.write_u64(0x1_2000, 0x20_0000 | 0x87);
        cpu.cr4 |= x86::reg::cr4::PCIDE;
        cpu.gpr[0] = (1 << 63) | 0x1_0000 | 1;
        assert_eq!(cpu.run(&mut bus, 10), Ok(crate::StopReason::Halted));
        assert_eq!(cpu.gpr[3], 2);
    }

    /// A fetch at a non-canonical RIP is #GP(0) (SDM Vol. 3A §3.3.7.1), also right after a
    /// fetch from a page with the same low address bits.
    #[test]
    fn fetch_at_a_non_canonical_rip_is_gp() {
        let (mut cpu, mut bus) = long_env(&[0x90]); // nop
        cpu.icache.attach(&bus);
        assert_eq!(cpu.step(&mut bus), Ok(()));
        cpu.rip = CODE | (1 << 47);
        assert_eq!(cpu.step(&mut bus), Err(Exc::Fault(Fault::gp(0))));
    }
}
