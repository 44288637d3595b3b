//! What VMX non-root operation changes (SDM Vol. 3C chapter 26): the instructions that cause
//! VM exits unconditionally (§26.1.2) or by a control (§26.1.3), with the exit qualification
//! and instruction information of §28.2; the events at an instruction boundary that cause
//! VM exits (§26.2: the VMX-preemption timer, NMI-window and interrupt-window exiting,
//! external-interrupt exiting with "acknowledge interrupt on exit"); the exception bitmap with
//! the page-fault error-code mask and match (§26.2); and the instructions that behave
//! differently without exiting (§26.3: reads of CR0/CR4 through the read shadows, writes that
//! keep the host-owned bits).
//!
//! Priorities (§26.1.1): #UD and the faults based on privilege level (CPL, IOPL and the TSS
//! I/O bitmap) come before the VM exit, so each rule here lets the instruction raise them
//! itself when they apply; everything else of the instruction (memory operands, the
//! instruction's own work) comes after.

use iced_x86::{Code, Instruction, Mnemonic as M, OpKind, Register};
use x86::reg::{cr0, cr4, rflags};
use x86::vmx::controls::{exit as exit_ctl, pin_based, primary_proc as pp, secondary_proc as sp};
use x86::vmx::exit::{CrAccessQualification, IoQualification, MovDrQualification};
use x86::vmx::{ExitReason, InterruptionInfo, InterruptionType, VmcsField as F};

use crate::Cpu;
use crate::bus::Bus;
use crate::exec::{Loc, seg_of};
use crate::fault::{Ex, Exc, Fault, vector};
use crate::regs::Gpr;
use crate::state::{Mode, Seg};
use crate::vmx::exit::{ExitInterruption, VmExit};

/// The GPR number (0 = RAX … 15 = R15) of an iced register, if it is one.
fn gpr_number(r: Register) -> Option<u8> {
    let full = r.full_register();
    (full.is_gpr64()).then(|| (full as u32 - Register::RAX as u32) as u8)
}

/// The CR3-target values (IA32_VMX_MISC reports 4).
const CR3_TARGETS: [F; 4] = [
    F::Cr3TargetValue0,
    F::Cr3TargetValue1,
    F::Cr3TargetValue2,
    F::Cr3TargetValue3,
];

/// An exit with a reason only.
fn exit(reason: ExitReason) -> Exc {
    Exc::vm_exit(VmExit::new(reason, 0))
}

impl Cpu {
    /// The events of an instruction boundary in non-root operation, in priority order
    /// (§26.2, §26.7.x): the VMX-preemption timer, NMI-window exiting, interrupt-window
    /// exiting, external-interrupt exiting. A VM exit here has instruction length 0.
    pub(crate) fn nonroot_boundary<B: Bus>(&mut self, bus: &mut B) -> Ex<()> {
        self.next_rip = self.rip;
        if let Some(deadline) = self.vmx.extra.preemption_deadline
            && self.now().tsc() >= deadline
        {
            return Err(exit(ExitReason::PreemptionTimer));
        }
        let pin = self.vmx.field(F::PinBasedControls) as u32;
        let primary = self.vmx.field(F::PrimaryProcBasedControls) as u32;
        if primary & pp::NMI_WINDOW_EXITING != 0 && !self.vmx.extra.nmi_blocked && !self.shadow {
            return Err(exit(ExitReason::NmiWindow));
        }
        if primary & pp::INTERRUPT_WINDOW_EXITING != 0 && self.flags.get(rflags::IF) && !self.shadow
        {
            return Err(exit(ExitReason::InterruptWindow));
        }
        // With external-interrupt exiting, RFLAGS.IF does not block external interrupts
        // (§26.3.1.x); blocking by STI and MOV SS still does.
        if pin & pin_based::EXTERNAL_INTERRUPT_EXITING != 0
            && !self.shadow
            && bus.has_interrupt(self.now())
        {
            let ack = self.vmx.field(F::PrimaryVmExitControls) as u32
                & exit_ctl::ACKNOWLEDGE_INTERRUPT_ON_EXIT
                != 0;
            let mut e = VmExit::new(ExitReason::ExternalInterrupt, 0);
            if ack && let Some(v) = bus.acknowledge_interrupt(self.now()) {
                e.interruption = Some(ExitInterruption {
                    info: InterruptionInfo::new(v, InterruptionType::ExternalInterrupt).0,
                    error_code: None,
                });
            }
            self.halted = false;
            return Err(Exc::vm_exit(e));
        }
        Ok(())
    }

    /// The VM exit an exception causes through the exception bitmap (§26.2), instead of its
    /// delivery: the VM-exit interruption information and error code, and for #PF the
    /// faulting address as exit qualification (CR2 is not written), for #DB the DR6 bits.
    pub(crate) fn exception_exit(&self, f: &Fault, kind: InterruptionType) -> Option<Exc> {
        let bitmap = self.vmx.field(F::ExceptionBitmap) as u32;
        let mut exits = bitmap & (1 << f.vector) != 0;
        if f.vector == vector::PF {
            let mask = self.vmx.field(F::PageFaultErrorCodeMask) as u32;
            let want = self.vmx.field(F::PageFaultErrorCodeMatch) as u32;
            let matches = f.error_code.unwrap_or(0) & mask == want;
            exits = if exits { matches } else { !matches };
        }
        if !exits {
            return None;
        }
        let mut info = InterruptionInfo::new(f.vector, kind);
        if f.error_code.is_some() {
            info = info.with_error_code();
        }
        let qualification = match f.vector {
            vector::PF => f.address,
            vector::DB => self.dr[6] & 0x600f,
            _ => 0,
        };
        let mut e = VmExit::new(ExitReason::ExceptionOrNmi, qualification);
        e.interruption = Some(ExitInterruption {
            info: info.0,
            error_code: f.error_code,
        });
        Some(Exc::vm_exit(e))
    }

    /// CR0 or CR4 as the guest reads it (§26.3.1.1): host-owned bits (set in the guest/host
    /// mask) come from the read shadow.
    pub(crate) fn guest_cr_view(&self, cr: u8, actual: u64) -> u64 {
        if !self.vmx.non_root {
            return actual;
        }
        let (mask, shadow) = self.cr_mask_shadow(cr);
        (actual & !mask) | (shadow & mask)
    }

    /// The value a non-exiting guest write of CR0 or CR4 leaves (§26.3.1.1): host-owned bits
    /// keep their current value.
    pub(crate) fn guest_cr_write(&self, cr: u8, value: u64) -> u64 {
        if !self.vmx.non_root {
            return value;
        }
        let (mask, _) = self.cr_mask_shadow(cr);
        let current = if cr == 0 { self.cr0 } else { self.cr4 };
        (value & !mask) | (current & mask)
    }

    fn cr_mask_shadow(&self, cr: u8) -> (u64, u64) {
        if cr == 0 {
            (
                self.vmx.field(F::Cr0GuestHostMask),
                self.vmx.field(F::Cr0ReadShadow),
            )
        } else {
            (
                self.vmx.field(F::Cr4GuestHostMask),
                self.vmx.field(F::Cr4ReadShadow),
            )
        }
    }

    /// The instruction-information field and displacement of a memory operand (§28.2.5,
    /// Tables 28-9 to 28-14): scaling, address size, segment, index and base registers;
    /// `reg2` goes in bits 31:28 (VMREAD/VMWRITE, INVEPT, INVVPID, INVPCID).
    fn operand_info(&self, ins: &Instruction, n: u32, reg2: Option<Register>) -> (u32, u64) {
        let mut info = 0u32;
        let mut displacement = 0;
        let address_size = match ins.memory_base().size().max(ins.memory_index().size()) {
            2 => 0,
            4 => 1,
            8 => 2,
            _ => match self.code_bits {
                16 => 0,
                32 => 1,
                _ => 2,
            },
        };
        info |= address_size << 7;
        match ins.op_kind(n) {
            OpKind::Memory => {
                info |= (ins.memory_index_scale().trailing_zeros()) & 3;
                info |= (seg_of(ins.memory_segment()) as u32) << 15;
                match gpr_number(ins.memory_index()) {
                    Some(r) => info |= u32::from(r) << 18,
                    None => info |= 1 << 22,
                }
                match gpr_number(ins.memory_base()) {
                    Some(r) => info |= u32::from(r) << 23,
                    None => info |= 1 << 27,
                }
                displacement = ins.memory_displacement64();
                if matches!(ins.memory_base(), Register::RIP | Register::EIP) {
                    // RIP-relative: the displacement is relative to the next instruction;
                    // the processor reports it as such.
                    displacement = displacement.wrapping_sub(self.next_rip.wrapping_sub(self.rip));
                }
            }
            _ => {
                info |= 1 << 10;
                if let Some(r) = gpr_number(ins.op_register(n)) {
                    info |= u32::from(r) << 3;
                }
            }
        }
        if let Some(r2) = reg2.and_then(gpr_number) {
            info |= u32::from(r2) << 28;
        }
        (info, displacement)
    }

    /// An exit with the instruction information and displacement of operand `n`.
    fn operand_exit(
        &self,
        reason: ExitReason,
        ins: &Instruction,
        n: u32,
        reg2: Option<Register>,
        extra_info: u32,
    ) -> Exc {
        let (info, displacement) = self.operand_info(ins, n, reg2);
        let mut e = VmExit::new(reason, displacement).with_instruction_info(info | extra_info);
        if let Loc::Mem(seg, off) = self.loc(ins, n) {
            e = e.with_guest_linear(self.seg[seg as usize].base.wrapping_add(off));
        }
        Exc::vm_exit(e)
    }

    /// Whether an MSR access exits (§26.1.3, §25.6.9): always without MSR bitmaps; with them,
    /// by the bit for the MSR in the read or write half for low (0–1FFFH) or high
    /// (C0000000H–C0001FFFH) MSRs; any other MSR exits.
    fn msr_exits<B: Bus>(&mut self, bus: &mut B, msr: u32, write: bool) -> bool {
        let primary = self.vmx.field(F::PrimaryProcBasedControls) as u32;
        if primary & pp::USE_MSR_BITMAPS == 0 {
            return true;
        }
        let half = match msr {
            0..=0x1fff => 0,
            0xc000_0000..=0xc000_1fff => 1024,
            _ => return true,
        };
        let bit = msr & 0x1fff;
        let offset = half + if write { 2048 } else { 0 } + u64::from(bit / 8);
        let at = self.vmx.field(F::MsrBitmaps).wrapping_add(offset);
        self.bitmap_bit(bus, at, bit % 8)
    }

    /// Whether an I/O access to `bytes` ports from `port` exits (§26.1.3): unconditional I/O
    /// exiting without bitmaps; with bitmaps, a set bit for any port (A for 0–7FFFH, B for
    /// 8000H–FFFFH), or a wrap past FFFFH.
    fn io_exits<B: Bus>(&mut self, bus: &mut B, port: u16, bytes: u16) -> bool {
        let primary = self.vmx.field(F::PrimaryProcBasedControls) as u32;
        if primary & pp::USE_IO_BITMAPS == 0 {
            return primary & pp::UNCONDITIONAL_IO_EXITING != 0;
        }
        if u32::from(port) + u32::from(bytes) > 0x1_0000 {
            return true;
        }
        (port..port + bytes).any(|p| {
            let (field, p) = if p < 0x8000 {
                (F::IoBitmapA, p)
            } else {
                (F::IoBitmapB, p - 0x8000)
            };
            let at = self.vmx.field(field).wrapping_add(u64::from(p / 8));
            self.bitmap_bit(bus, at, u32::from(p % 8))
        })
    }

    /// Bit `bit` of the byte at physical `at` (a bitmap outside RAM reads as all ones: the
    /// access exits).
    fn bitmap_bit<B: Bus>(&mut self, bus: &mut B, at: u64, bit: u32) -> bool {
        use crate::vmx::vmcs::PhysMemory;
        let mut b = [0xffu8];
        let _ = self.bus_memory(bus).read(x86::Hpa::new(at), &mut b);
        b[0] & (1 << bit) != 0
    }

    /// The VM exit of an I/O instruction (§28.2.1 Table 28-5; INS/OUTS also save the
    /// guest-linear address and instruction information, §28.2.5 Table 28-9).
    fn io_intercept<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let m = ins.mnemonic();
        let string = !matches!(m, M::In | M::Out);
        let is_in = matches!(m, M::In | M::Insb | M::Insw | M::Insd);
        let (bytes, port, immediate) = if string {
            let bytes = match m {
                M::Insb | M::Outsb => 1,
                M::Insw | M::Outsw => 2,
                _ => 4,
            };
            (bytes, self.gpr[Gpr::Rdx as usize] as u16, false)
        } else {
            let (port_op, data) = if is_in {
                (1, ins.op0_register())
            } else {
                (0, ins.op1_register())
            };
            match ins.op_kind(port_op) {
                OpKind::Register => (data.size(), self.gpr[Gpr::Rdx as usize] as u16, false),
                _ => (data.size(), ins.immediate(port_op) as u16, true),
            }
        };
        // The I/O permission check has priority over the exit (§26.1.1).
        self.check_io(bus, port, bytes)?;
        if !self.io_exits(bus, port, bytes as u16) {
            return Ok(());
        }
        let rep = ins.has_rep_prefix() || ins.has_repne_prefix();
        let flags = (u64::from(string) << 4) | (u64::from(rep) << 5) | (u64::from(immediate) << 6);
        let q = IoQualification::new(bytes as u8, is_in, port, flags).map_or(0, |q| q.0);
        let mut e = VmExit::new(ExitReason::IoInstruction, q);
        if string {
            let address_size = match ins.memory_base().size() {
                2 => 0,
                4 => 1,
                _ => 2,
            };
            let mut info = address_size << 7;
            let (seg, reg) = if is_in {
                (Seg::Es, Gpr::Rdi)
            } else {
                (seg_of(ins.memory_segment()), Gpr::Rsi)
            };
            info |= (seg as u32) << 15;
            let mask = crate::flags::mask(8 << address_size.min(2) << 1);
            let off = self.gpr[reg as usize] & mask;
            e = e
                .with_instruction_info(info)
                .with_guest_linear(self.seg[seg as usize].base.wrapping_add(off));
        }
        Err(Exc::vm_exit(e))
    }

    /// MOV to or from a control register, CLTS and LMSW (§26.1.3; qualification Table 28-3).
    fn cr_intercept<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let primary = self.vmx.field(F::PrimaryProcBasedControls) as u32;
        let crq =
            |q: CrAccessQualification| Err(Exc::vm_exit(VmExit::new(ExitReason::CrAccess, q.0)));
        match ins.mnemonic() {
            M::Clts => {
                let (mask, shadow) = self.cr_mask_shadow(0);
                if mask & shadow & cr0::TS != 0 {
                    return crq(CrAccessQualification::clts());
                }
                Ok(())
            }
            M::Lmsw => {
                let l = self.loc(ins, 0);
                let memory = matches!(l, Loc::Mem(..));
                let src = self.get(bus, l, 16)?;
                let (mask, shadow) = self.cr_mask_shadow(0);
                let pe = mask & src & !shadow & cr0::PE != 0;
                let others = mask & (src ^ shadow) & (cr0::MP | cr0::EM | cr0::TS) != 0;
                if pe || others {
                    return crq(CrAccessQualification::lmsw(src as u16, memory));
                }
                Ok(())
            }
            _ => {
                let to_cr = ins.op0_register().is_cr();
                let (cr, gpr) = if to_cr {
                    (ins.op0_register(), ins.op1_register())
                } else {
                    (ins.op1_register(), ins.op0_register())
                };
                let n = (cr as u32 - Register::CR0 as u32) as u8;
                let g = gpr_number(gpr).unwrap_or(0);
                let value = self.reg(gpr);
                let exits = match (to_cr, n) {
                    (true, 0 | 4) => {
                        let (mask, shadow) = self.cr_mask_shadow(n);
                        (value ^ shadow) & mask != 0
                    }
                    (true, 3) => {
                        primary & pp::CR3_LOAD_EXITING != 0 && {
                            let count = self.vmx.field(F::Cr3TargetCount).min(4) as usize;
                            !CR3_TARGETS[..count]
                                .iter()
                                .any(|&f| self.vmx.field(f) == value)
                        }
                    }
                    (false, 3) => primary & pp::CR3_STORE_EXITING != 0,
                    (true, 8) => primary & pp::CR8_LOAD_EXITING != 0,
                    (false, 8) => primary & pp::CR8_STORE_EXITING != 0,
                    _ => false,
                };
                if !exits {
                    return Ok(());
                }
                crq(if to_cr {
                    CrAccessQualification::mov_to_cr(n, g)
                } else {
                    CrAccessQualification::mov_from_cr(n, g)
                })
            }
        }
    }

    /// The instructions that exit in non-root operation (§26.1.2, §26.1.3). Runs before the
    /// instruction; `Ok` lets it execute.
    pub(crate) fn nonroot_intercept<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let primary = self.vmx.field(F::PrimaryProcBasedControls) as u32;
        let secondary = self.vmx.secondary_controls();
        let cpl0 = self.cpl == 0;
        let m = ins.mnemonic();
        match m {
            // Unconditional (§26.1.2).
            M::Cpuid => Err(exit(ExitReason::Cpuid)),
            M::Invd if cpl0 => Err(exit(ExitReason::Invd)),
            M::Vmcall => Err(exit(ExitReason::Vmcall)),
            M::Vmlaunch | M::Vmresume | M::Vmxoff => {
                if self.vmx_mode_ud() {
                    return Err(Fault::ud().into());
                }
                Err(exit(match m {
                    M::Vmlaunch => ExitReason::Vmlaunch,
                    M::Vmresume => ExitReason::Vmresume,
                    _ => ExitReason::Vmxoff,
                }))
            }
            M::Vmxon | M::Vmclear | M::Vmptrld | M::Vmptrst => {
                if self.vmx_mode_ud() {
                    return Err(Fault::ud().into());
                }
                let reason = match m {
                    M::Vmxon => ExitReason::Vmxon,
                    M::Vmclear => ExitReason::Vmclear,
                    M::Vmptrld => ExitReason::Vmptrld,
                    _ => ExitReason::Vmptrst,
                };
                Err(self.operand_exit(reason, ins, 0, None, 0))
            }
            M::Vmread | M::Vmwrite => {
                if self.vmx_mode_ud() {
                    return Err(Fault::ud().into());
                }
                let (field_reg, operand, reason) = if m == M::Vmread {
                    (ins.op1_register(), 0, ExitReason::Vmread)
                } else {
                    (ins.op0_register(), 1, ExitReason::Vmwrite)
                };
                if self.shadow_vmcs_access(bus, self.reg(field_reg), m == M::Vmwrite) {
                    return Ok(());
                }
                Err(self.operand_exit(reason, ins, operand, Some(field_reg), 0))
            }
            M::Invept | M::Invvpid => {
                if self.vmx_mode_ud() {
                    return Err(Fault::ud().into());
                }
                let reason = if m == M::Invept {
                    ExitReason::Invept
                } else {
                    ExitReason::Invvpid
                };
                Err(self.operand_exit(reason, ins, 1, Some(ins.op0_register()), 0))
            }
            // Conditional (§26.1.3), after the privilege checks that have priority.
            M::Hlt if cpl0 && primary & pp::HLT_EXITING != 0 => Err(exit(ExitReason::Hlt)),
            M::Invlpg if cpl0 && primary & pp::INVLPG_EXITING != 0 => {
                let Loc::Mem(seg, off) = self.loc(ins, 0) else {
                    return Ok(());
                };
                let lin = self.seg[seg as usize].base.wrapping_add(off);
                Err(Exc::vm_exit(VmExit::new(ExitReason::Invlpg, lin)))
            }
            M::Invpcid if secondary & sp::ENABLE_INVPCID == 0 => Err(Fault::ud().into()),
            M::Invpcid if cpl0 && primary & pp::INVLPG_EXITING != 0 => {
                Err(self.operand_exit(ExitReason::Invpcid, ins, 1, Some(ins.op0_register()), 0))
            }
            M::Rdpmc if primary & pp::RDPMC_EXITING != 0 && (cpl0 || self.cr4 & cr4::PCE != 0) => {
                Err(exit(ExitReason::Rdpmc))
            }
            M::Rdtscp if secondary & sp::ENABLE_RDTSCP == 0 => Err(Fault::ud().into()),
            M::Rdtsc | M::Rdtscp
                if primary & pp::RDTSC_EXITING != 0 && (cpl0 || self.cr4 & cr4::TSD == 0) =>
            {
                Err(exit(if m == M::Rdtsc {
                    ExitReason::Rdtsc
                } else {
                    ExitReason::Rdtscp
                }))
            }
            M::Mov if cpl0 && (ins.op0_register().is_cr() || ins.op1_register().is_cr()) => {
                self.cr_intercept(bus, ins)
            }
            M::Clts | M::Lmsw if cpl0 => self.cr_intercept(bus, ins),
            M::Mov
                if cpl0
                    && primary & pp::MOV_DR_EXITING != 0
                    && (ins.op0_register().is_dr() || ins.op1_register().is_dr()) =>
            {
                let to_dr = ins.op0_register().is_dr();
                let (dr, gpr) = if to_dr {
                    (ins.op0_register(), ins.op1_register())
                } else {
                    (ins.op1_register(), ins.op0_register())
                };
                let n = (dr as u32 - Register::DR0 as u32) as u8;
                if matches!(n, 4 | 5) && self.cr4 & cr4::DE != 0 {
                    return Err(Fault::ud().into());
                }
                let g = gpr_number(gpr).unwrap_or(0);
                let q = if to_dr {
                    MovDrQualification::mov_to_dr(n, g)
                } else {
                    MovDrQualification::mov_from_dr(n, g)
                };
                Err(Exc::vm_exit(VmExit::new(ExitReason::MovDr, q.0)))
            }
            M::In | M::Out | M::Insb | M::Insw | M::Insd | M::Outsb | M::Outsw | M::Outsd => {
                self.io_intercept(bus, ins)
            }
            M::Rdmsr | M::Wrmsr if cpl0 => {
                let msr = self.gpr[Gpr::Rcx as usize] as u32;
                let write = m == M::Wrmsr;
                if self.msr_exits(bus, msr, write) {
                    return Err(exit(if write {
                        ExitReason::Wrmsr
                    } else {
                        ExitReason::Rdmsr
                    }));
                }
                Ok(())
            }
            M::Pause if primary & pp::PAUSE_EXITING != 0 => Err(exit(ExitReason::Pause)),
            // MONITOR and MWAIT are #UD above CPL 0, before their exits; MWAIT's
            // qualification bit 0 says whether the monitoring hardware is armed.
            M::Monitor if cpl0 && primary & pp::MONITOR_EXITING != 0 => {
                Err(exit(ExitReason::Monitor))
            }
            M::Mwait if cpl0 && primary & pp::MWAIT_EXITING != 0 => Err(Exc::vm_exit(VmExit::new(
                ExitReason::Mwait,
                u64::from(self.hint.monitor_armed),
            ))),
            // RDRAND and RDSEED: instruction information with the destination register and
            // the operand size (§28.2.5, Table 28-16).
            M::Rdrand | M::Rdseed
                if secondary
                    & if m == M::Rdrand {
                        sp::RDRAND_EXITING
                    } else {
                        sp::RDSEED_EXITING
                    }
                    != 0 =>
            {
                let dst = ins.op0_register();
                let size = match dst.size() {
                    2 => 0,
                    4 => 1,
                    _ => 2,
                };
                let info = (u32::from(gpr_number(dst).unwrap_or(0)) << 3) | (size << 11);
                let reason = if m == M::Rdrand {
                    ExitReason::Rdrand
                } else {
                    ExitReason::Rdseed
                };
                Err(Exc::vm_exit(
                    VmExit::new(reason, 0).with_instruction_info(info),
                ))
            }
            M::Wbinvd if cpl0 && secondary & sp::WBINVD_EXITING != 0 => {
                Err(exit(ExitReason::Wbinvd))
            }
            M::Lgdt | M::Lidt | M::Sgdt | M::Sidt
                if secondary & sp::DESCRIPTOR_TABLE_EXITING != 0
                    && (cpl0 || matches!(m, M::Sgdt | M::Sidt)) =>
            {
                let identity = match m {
                    M::Sgdt => 0,
                    M::Sidt => 1,
                    M::Lgdt => 2,
                    _ => 3,
                };
                let operand_size = u32::from(!matches!(
                    ins.code(),
                    Code::Lgdt_m1632_16
                        | Code::Lidt_m1632_16
                        | Code::Sgdt_m1632_16
                        | Code::Sidt_m1632_16
                ));
                Err(self.operand_exit(
                    ExitReason::GdtrIdtrAccess,
                    ins,
                    0,
                    None,
                    (identity << 28) | (operand_size << 11),
                ))
            }
            M::Lldt | M::Ltr | M::Sldt | M::Str
                if secondary & sp::DESCRIPTOR_TABLE_EXITING != 0
                    && self.mode != Mode::Real
                    && (cpl0 || matches!(m, M::Sldt | M::Str)) =>
            {
                let identity = match m {
                    M::Sldt => 0,
                    M::Str => 1,
                    M::Lldt => 2,
                    _ => 3,
                };
                Err(self.operand_exit(ExitReason::LdtrTrAccess, ins, 0, None, identity << 28))
            }
            _ => Ok(()),
        }
    }

    /// VMREAD and VMWRITE with VMCS shadowing (§26.1.3, §25.10): with "VMCS shadowing" and
    /// the field's bit clear in the VMREAD or VMWRITE bitmap, the instruction accesses the
    /// shadow VMCS instead of exiting (and fails with VMfailInvalid without a valid VMCS link
    /// pointer). An encoding with bits 63:15 set always exits.
    fn shadow_vmcs_access<B: Bus>(&mut self, bus: &mut B, encoding: u64, write: bool) -> bool {
        // An invalid link pointer does not exit: the instruction fails with VMfailInvalid.
        if self.vmx.secondary_controls() & sp::VMCS_SHADOWING == 0 || encoding >> 15 != 0 {
            return false;
        }
        let bitmap = self.vmx.field(if write {
            F::VmwriteBitmapAddress
        } else {
            F::VmreadBitmapAddress
        });
        let bit = encoding as u32 & 0x7fff;
        !self.bitmap_bit(bus, bitmap.wrapping_add(u64::from(bit / 8)), bit % 8)
    }
}
