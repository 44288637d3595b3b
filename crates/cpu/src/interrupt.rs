//! Exception and interrupt delivery (SDM Vol. 3A §6): the real-mode IVT (§20.1.4), protected-mode
//! interrupt and trap gates with the privilege checks and stack switch (§6.12.1), IA-32e gates
//! with IST and the 16-byte-aligned 64-bit frame (§6.14), error codes with the EXT bit
//! (§6.13), and double fault / triple fault by exception class (§6.15, Tables 6-4 and 6-5).

use iced_x86::{Instruction, Mnemonic as M};

use crate::Cpu;
use crate::bus::Bus;
use crate::error::CpuError;
use crate::fault::{Class, Ex, Exc, Fault, vector};
use crate::mmu::canonical;
use crate::regs::Gpr;
use crate::seg::{desc, sel_err};
use crate::state::{Mode, Seg, Segment};
use x86::reg::{efer, rflags};
use x86::vmx::{InterruptionInfo, InterruptionType};

/// The IDT-vectoring information of an event being delivered (SDM Vol. 3C §28.2.4).
fn vectoring(v: u8, kind: InterruptionType, error: Option<u32>) -> (u32, Option<u32>) {
    let mut info = InterruptionInfo::new(v, kind);
    if error.is_some() {
        info = info.with_error_code();
    }
    (info.0, error)
}

/// Where an event comes from: decides the EXT bit, the gate DPL check and the return address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// An external interrupt (INTR) or an exception detected by the processor: EXT = 1, no DPL
    /// check.
    Hardware,
    /// INT n, INT3, INTO: the gate's DPL must be ≥ CPL, EXT = 0.
    Software,
    /// INT1 (ICEBP): no DPL check, EXT = 0.
    Icebp,
}

impl Cpu {
    /// Delivers an exception raised by an instruction (RIP = the faulting instruction), with
    /// the double-fault rules. A triple fault is `Exc::Shutdown` (in VMX non-root operation the
    /// caller turns it into a VM exit); a VM exit during delivery is returned as it is.
    pub(crate) fn deliver_fault<B: Bus>(&mut self, bus: &mut B, first: Fault) -> Ex<()> {
        let mut cur = first;
        loop {
            // VMX non-root operation: the exception bitmap may turn the exception into a
            // VM exit (SDM Vol. 3C §26.2) before CR2 or DR6 change; otherwise an exit during
            // its delivery records it as IDT-vectoring information (§28.2.4).
            if self.vmx.non_root {
                if let Some(exit) = self.exception_exit(&cur, InterruptionType::HardwareException) {
                    return Err(exit);
                }
                self.vmx.extra.delivering = Some(vectoring(
                    cur.vector,
                    InterruptionType::HardwareException,
                    cur.error_code,
                ));
            }
            if cur.vector == vector::PF {
                self.cr2 = cur.address;
            }
            let ret = self.rip;
            match self.deliver_event(bus, cur.vector, cur.error_code, Source::Hardware, ret) {
                Ok(()) => {
                    self.vmx.extra.delivering = None;
                    // A delivery is a step of virtual time (see `Cpu::run`).
                    self.retired += 1;
                    return Ok(());
                }
                Err(Exc::Fault(second)) => {
                    // In VMX non-root operation the nested exception meets the exception
                    // bitmap first, as a fault during the delivery of `cur` (IDT-vectoring
                    // information); only if it does not exit is it combined with `cur` by the
                    // double-fault rules, and a resulting #DF exits, if it does, directly
                    // (SDM Vol. 3C §28.2.4, §26.2).
                    if self.vmx.non_root
                        && let Some(exit) =
                            self.exception_exit(&second, InterruptionType::HardwareException)
                    {
                        return Err(exit);
                    }
                    cur = match (cur.class(), second.class()) {
                        (Class::DoubleFault, Class::Contributory | Class::PageFault) => {
                            return Err(Exc::Shutdown);
                        }
                        (Class::Contributory, Class::Contributory)
                        | (Class::PageFault, Class::Contributory | Class::PageFault) => {
                            self.vmx.extra.delivering = None;
                            Fault::with_code(vector::DF, 0)
                        }
                        _ => second,
                    };
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// A pending NMI at an instruction boundary (SDM Vol. 3A §6.7.1, §6.9): delivered through
    /// vector 2 unless NMIs are blocked (from an NMI's delivery to the next IRET) or events
    /// are blocked by MOV SS. In VMX non-root operation with "NMI exiting" it causes a VM
    /// exit instead (Vol. 3C §26.2; the host then blocks NMIs, §28.5); without, it is the
    /// guest's and the guest's NMI blocking applies.
    pub(crate) fn nmi_boundary<B: Bus>(&mut self, bus: &mut B) -> Ex<()> {
        if self.shadow && self.mov_ss_shadow {
            return Ok(());
        }
        if self.vmx.non_root {
            let pin = self.vmx.field(x86::vmx::VmcsField::PinBasedControls) as u32;
            if pin & x86::vmx::controls::pin_based::NMI_EXITING != 0 {
                self.nmi_pending = false;
                self.nmi_blocked = true;
                self.halted = false;
                let mut e = crate::vmx::exit::VmExit::new(x86::vmx::ExitReason::ExceptionOrNmi, 0);
                e.interruption = Some(crate::vmx::exit::ExitInterruption {
                    info: InterruptionInfo::new(vector::NMI, InterruptionType::Nmi).0,
                    error_code: None,
                });
                return Err(Exc::vm_exit(e));
            }
            if self.vmx.extra.nmi_blocked {
                return Ok(());
            }
            self.vmx.extra.nmi_blocked = true;
            self.vmx.extra.delivering = Some(vectoring(vector::NMI, InterruptionType::Nmi, None));
        } else {
            if self.nmi_blocked {
                return Ok(());
            }
            self.nmi_blocked = true;
        }
        self.nmi_pending = false;
        self.halted = false;
        let ret = self.rip;
        self.deliver_event(bus, vector::NMI, None, Source::Hardware, ret)?;
        self.vmx.extra.delivering = None;
        self.retired += 1;
        Ok(())
    }

    /// Delivers an external interrupt at an instruction boundary.
    pub(crate) fn deliver_interrupt<B: Bus>(&mut self, bus: &mut B, v: u8) -> Ex<()> {
        let ret = self.rip;
        if self.vmx.non_root {
            self.vmx.extra.delivering =
                Some(vectoring(v, InterruptionType::ExternalInterrupt, None));
        }
        self.deliver_event(bus, v, None, Source::Hardware, ret)?;
        self.vmx.extra.delivering = None;
        Ok(())
    }

    /// INT n, INT3, INTO, INT1: traps whose return address is the next instruction.
    #[inline(never)]
    pub(crate) fn soft_int<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        let (v, src) = match ins.mnemonic() {
            M::Int3 => (vector::BP, Source::Software),
            M::Into => {
                if !self.flags.get(rflags::OF) {
                    return Ok(());
                }
                (vector::OF, Source::Software)
            }
            M::Int1 => (vector::DB, Source::Icebp),
            _ => (ins.immediate(0) as u8, Source::Software),
        };
        let ret = self.next_rip;
        if self.vmx.non_root {
            // INT3 and INTO are software exceptions, INT1 a privileged software exception:
            // the exception bitmap applies to them, not to INT n (SDM Vol. 3C §26.2).
            let kind = match ins.mnemonic() {
                M::Int3 | M::Into => InterruptionType::SoftwareException,
                M::Int1 => InterruptionType::PrivilegedSoftwareException,
                _ => InterruptionType::SoftwareInterrupt,
            };
            if kind != InterruptionType::SoftwareInterrupt
                && let Some(exit) = self.exception_exit(&Fault::new(v), kind)
            {
                return Err(exit);
            }
            self.vmx.extra.delivering = Some(vectoring(v, kind, None));
        }
        self.deliver_event(bus, v, None, src, ret)?;
        self.vmx.extra.delivering = None;
        // The handler's first instruction is the next one executed.
        self.next_rip = self.rip;
        Ok(())
    }

    /// Delivers vector `v` through the IDT, returning to `ret`.
    pub(crate) fn deliver_event<B: Bus>(
        &mut self,
        bus: &mut B,
        v: u8,
        error: Option<u32>,
        src: Source,
        ret: u64,
    ) -> Ex<()> {
        self.counters.events_delivered += 1;
        self.halted = false;
        let ext = u32::from(src == Source::Hardware);
        let idt_err = u32::from(v) * 8 + 2 + ext;
        if self.mode == Mode::Real {
            return self.deliver_real(bus, v, ret);
        }
        let long = self.efer & efer::LMA != 0;
        let entry = if long { 16 } else { 8 };
        if u64::from(v) * entry + entry - 1 > u64::from(self.idtr.limit) {
            return Err(Fault::gp(idt_err).into());
        }
        let gate_lin = self.idtr.base.wrapping_add(u64::from(v) * entry);
        let gate = self.read_lin(bus, gate_lin, 8, true)?;
        let typ = ((gate >> 40) & 0x1f) as u8;
        let trap = match (long, typ) {
            (true, 0xe) | (false, 0xe | 0x6) => false,
            (true, 0xf) | (false, 0xf | 0x7) => true,
            (false, 0x5) => {
                let rip = self.seg[Seg::Cs as usize].base.wrapping_add(self.rip);
                return Err(Exc::Error(Box::new(CpuError::Unsupported {
                    rip,
                    what: "task gate in the IDT (hardware task switch)",
                })));
            }
            _ => return Err(Fault::gp(idt_err).into()),
        };
        let gate_dpl = desc::dpl(gate);
        if src == Source::Software && gate_dpl < self.cpl {
            return Err(Fault::gp(idt_err).into());
        }
        if !desc::present(gate) {
            return Err(Fault::with_code(vector::NP, idt_err).into());
        }
        let sel = (gate >> 16) as u16;
        let mut off = (gate & 0xffff) | ((gate >> 32) & 0xffff_0000);
        let gate32 = typ & 8 != 0;
        if !long && !gate32 {
            off &= 0xffff;
        }
        let ist = if long { ((gate >> 32) & 7) as u8 } else { 0 };
        if long {
            let hi = self.read_lin(bus, gate_lin + 8, 8, true)?;
            off |= (hi & 0xffff_ffff) << 32;
        }
        if sel & 0xfffc == 0 {
            return Err(Fault::gp(ext).into());
        }
        let d = self
            .read_desc(bus, sel)
            .map_err(|_| Exc::Fault(Fault::gp(sel_err(sel) + ext)))?;
        let dpl = desc::dpl(d);
        if !desc::code(d) || dpl > self.cpl || (long && (d & (1 << 53) == 0 || d & (1 << 54) != 0))
        {
            return Err(Fault::gp(sel_err(sel) + ext).into());
        }
        if !desc::present(d) {
            return Err(Fault::with_code(vector::NP, sel_err(sel) + ext).into());
        }
        if long && !canonical(off) {
            return Err(Fault::gp(ext).into());
        }

        let snapshot = self.snapshot();
        let old_ss = self.seg[Seg::Ss as usize].selector;
        let old_rsp = self.gpr[Gpr::Rsp as usize];
        let old_cs = self.seg[Seg::Cs as usize].selector;
        let image = self.flags.bits();
        let r = (|| {
            let inner = !desc::conforming(d) && dpl < self.cpl;
            if long {
                if inner || ist != 0 {
                    let target = if inner { dpl } else { self.cpl };
                    self.switch_stack(bus, target, ist)?;
                } else {
                    let rsp = self.gpr[Gpr::Rsp as usize] & !0xf;
                    self.gpr[Gpr::Rsp as usize] = rsp;
                }
                // The 64-bit frame: SS, RSP, RFLAGS, CS, RIP, error code, 8 bytes each.
                let cpl = if inner { dpl } else { snapshot.cpl };
                self.cpl = cpl;
                self.push(bus, u64::from(old_ss), 8)?;
                self.push(bus, old_rsp, 8)?;
                self.push(bus, image, 8)?;
                self.push(bus, u64::from(old_cs), 8)?;
                self.push(bus, ret, 8)?;
                if let Some(e) = error {
                    self.push(bus, u64::from(e), 8)?;
                }
            } else {
                let b = if gate32 { 4 } else { 2 };
                if inner {
                    self.switch_stack(bus, dpl, 0)?;
                    self.push(bus, u64::from(old_ss), b)?;
                    self.push(bus, old_rsp & crate::flags::mask(8 * b as u32), b)?;
                } else if !desc::conforming(d) && dpl != self.cpl {
                    return Err(Fault::gp(sel_err(sel) + ext).into());
                }
                self.push(bus, image & crate::flags::mask(8 * b as u32), b)?;
                self.push(bus, u64::from(old_cs), b)?;
                self.push(bus, ret & crate::flags::mask(8 * b as u32), b)?;
                if let Some(e) = error {
                    self.push(bus, u64::from(e), b)?;
                }
            }
            let cpl = self.cpl;
            let cs = Cpu::seg_from_desc((sel & !3) | u16::from(cpl), d);
            if !long && off > u64::from(cs.limit) {
                return Err(Fault::gp(ext).into());
            }
            self.seg[Seg::Cs as usize] = cs;
            self.update_mode();
            let mut f = self.flags.bits() & !(rflags::TF | rflags::NT | rflags::RF | rflags::VM);
            if !trap {
                f &= !rflags::IF;
            }
            self.flags.set_bits(f);
            self.rip = off;
            Ok(())
        })();
        if r.is_err() {
            self.restore(snapshot);
        }
        r
    }

    /// Real-address-mode delivery through the interrupt vector table (SDM Vol. 3A §20.1.4).
    fn deliver_real<B: Bus>(&mut self, bus: &mut B, v: u8, ret: u64) -> Ex<()> {
        let off = u64::from(v) * 4;
        if off + 3 > u64::from(self.idtr.limit) {
            return Err(Fault::gp(0).into());
        }
        let entry = self.read_lin(bus, self.idtr.base.wrapping_add(off), 4, true)?;
        let saved = self.gpr[Gpr::Rsp as usize];
        let image = self.flags.bits() & 0xffff;
        let cs = self.seg[Seg::Cs as usize].selector;
        let r = (|| {
            self.push(bus, image, 2)?;
            self.push(bus, u64::from(cs), 2)?;
            self.push(bus, ret & 0xffff, 2)
        })();
        if let Err(e) = r {
            self.gpr[Gpr::Rsp as usize] = saved;
            return Err(e);
        }
        let sel = (entry >> 16) as u16;
        let c = &mut self.seg[Seg::Cs as usize];
        *c = Segment {
            selector: sel,
            base: u64::from(sel) << 4,
            ..*c
        };
        let f = self.flags.bits() & !(rflags::IF | rflags::TF | rflags::AC | rflags::RF);
        self.flags.set_bits(f);
        self.rip = entry & 0xffff;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::StopReason;
    use crate::fault::vector;
    use crate::test_utils::*;

    const HANDLER: u64 = CODE + 0x800;

    #[test]
    fn ud2_is_delivered_through_a_64_bit_gate() {
        // ud2
        let (mut cpu, mut bus) = long_env(&[0x0f, 0x0b]);
        bus.load(HANDLER, &[0xf4]); // hlt
        set_gate64(&mut bus, vector::UD, HANDLER, false, 0, 0);
        cpu.flags.set_bits(0x202);
        assert_eq!(cpu.run(&mut bus, 10), Ok(StopReason::Halted));
        assert_eq!(cpu.rip, HANDLER + 1);
        let rsp = cpu.gpr[4];
        assert_eq!(rsp, STACK_TOP - 40);
        assert_eq!(bus.read_u64(rsp), CODE, "faults push the faulting RIP");
        assert_eq!(bus.read_u64(rsp + 8), u64::from(KCODE64));
        assert_eq!(bus.read_u64(rsp + 16), 0x202);
        assert_eq!(bus.read_u64(rsp + 24), STACK_TOP);
        assert_eq!(cpu.rflags() & (1 << 9), 0, "interrupt gate clears IF");
    }

    #[test]
    fn page_fault_pushes_error_code_and_sets_cr2() {
        // mov rax, [0x40000000]  (not mapped: PDPT entry 1 is not present)
        let (mut cpu, mut bus) = long_env(&[0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x00, 0x40]);
        bus.load(HANDLER, &[0xf4]);
        set_gate64(&mut bus, vector::PF, HANDLER, false, 0, 0);
        assert_eq!(cpu.run(&mut bus, 10), Ok(StopReason::Halted));
        assert_eq!(cpu.cr2, 0x4000_0000);
        let rsp = cpu.gpr[4];
        assert_eq!(bus.read_u64(rsp), 0, "not present, read, supervisor");
        assert_eq!(bus.read_u64(rsp + 8), CODE);
    }

    #[test]
    fn fault_during_page_fault_delivery_is_a_double_fault() {
        // #PF whose gate is not present -> #NP (contributory) -> #DF (error code 0).
        let (mut cpu, mut bus) = long_env(&[0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x00, 0x40]);
        bus.load(HANDLER, &[0xf4]);
        set_gate64(&mut bus, vector::DF, HANDLER, false, 0, 1);
        assert_eq!(cpu.run(&mut bus, 10), Ok(StopReason::Halted));
        assert_eq!(cpu.rip, HANDLER + 1);
        let rsp = cpu.gpr[4];
        assert_eq!(rsp, IST1 - 48, "#DF on IST1");
        assert_eq!(bus.read_u64(rsp), 0, "#DF error code");
        assert_eq!(bus.read_u64(rsp + 8), CODE);
    }

    #[test]
    fn benign_then_contributory_is_serial_and_no_idt_is_a_triple_fault() {
        // ud2 with an empty IDT: #UD -> #GP (serial) -> #GP again -> #DF -> #GP: shutdown.
        let (mut cpu, mut bus) = long_env(&[0x0f, 0x0b]);
        cpu.idtr.limit = 0;
        assert_eq!(cpu.run(&mut bus, 10), Ok(StopReason::Shutdown));
        // With only a #GP handler, #UD -> #GP(error code = IDT vector 6) is delivered.
        let (mut cpu, mut bus) = long_env(&[0x0f, 0x0b]);
        bus.load(HANDLER, &[0xf4]);
        set_gate64(&mut bus, vector::GP, HANDLER, false, 0, 0);
        assert_eq!(cpu.run(&mut bus, 10), Ok(StopReason::Halted));
        assert_eq!(bus.read_u64(cpu.gpr[4]), 6 * 8 + 2 + 1, "IDT bit and EXT");
    }

    #[test]
    fn user_int_switches_to_rsp0_and_iretq_returns() {
        // Kernel: push SS, RSP, RFLAGS, CS, RIP for user mode, iretq.
        //   6a 2b                push 0x2b
        //   68 00 00 17 00       push 0x170000
        //   6a 02                push 2
        //   6a 33                push 0x33
        //   68 00 10 10 00       push 0x101000
        //   48 cf                iretq
        let (mut cpu, mut bus) = long_env(&[
            0x6a, 0x2b, 0x68, 0x00, 0x00, 0x17, 0x00, 0x6a, 0x02, 0x6a, 0x33, 0x68, 0x00, 0x10,
            0x10, 0x00, 0x48, 0xcf,
        ]);
        // User: int 0x80 (gate DPL 3); after the return: int 0x81 (gate DPL 0) -> #GP.
        bus.load(0x10_1000, &[0xcd, 0x80, 0xcd, 0x81]);
        // 0x80 handler: iretq.  #GP handler: hlt.
        bus.load(HANDLER, &[0x48, 0xcf]);
        bus.load(HANDLER + 0x10, &[0xf4]);
        set_gate64(&mut bus, 0x80, HANDLER, true, 3, 0);
        set_gate64(&mut bus, 0x81, HANDLER, true, 0, 0);
        set_gate64(&mut bus, vector::GP, HANDLER + 0x10, false, 0, 0);
        // Run to the INT 0x80 handler's first instruction: 6 kernel + 1 user instructions.
        assert_eq!(cpu.run(&mut bus, 7), Ok(StopReason::BudgetExhausted));
        assert_eq!((cpu.cpl, cpu.rip), (0, HANDLER));
        let rsp = cpu.gpr[4];
        assert_eq!(rsp, RSP0 - 40);
        assert_eq!(bus.read_u64(rsp), 0x10_1002, "INT pushes the next RIP");
        assert_eq!(bus.read_u64(rsp + 8), u64::from(UCODE64));
        assert_eq!(bus.read_u64(rsp + 24), 0x17_0000);
        assert_eq!(bus.read_u64(rsp + 32), u64::from(UDATA));
        // iretq back to user, then INT 0x81 faults: #GP(0x81 * 8 + 2) at CPL 0.
        assert_eq!(cpu.run(&mut bus, 10), Ok(StopReason::Halted));
        let rsp = cpu.gpr[4];
        assert_eq!(bus.read_u64(rsp), 0x81 * 8 + 2);
        assert_eq!(
            bus.read_u64(rsp + 8),
            0x10_1002,
            "a fault pushes the INT's own RIP"
        );
        assert_eq!(bus.read_u64(rsp + 16), u64::from(UCODE64));
    }

    #[test]
    fn external_interrupt_waits_for_the_sti_shadow_and_wakes_hlt() {
        // sti; nop; hlt
        let (mut cpu, mut bus) = long_env(&[0xfb, 0x90, 0xf4, 0xf4]);
        bus.load(HANDLER, &[0xf4]);
        set_gate64(&mut bus, 0x20, HANDLER, false, 0, 0);
        bus.irqs.push_back(0x20);
        assert_eq!(cpu.run(&mut bus, 100), Ok(StopReason::Halted));
        assert_eq!(
            bus.read_u64(cpu.gpr[4]),
            CODE + 2,
            "taken after the instruction after STI"
        );
        // A halted CPU with IF = 1 wakes on the next interrupt; the return RIP is after HLT.
        let (mut cpu, mut bus) = long_env(&[0xfb, 0xf4, 0x90, 0xf4]);
        bus.load(HANDLER, &[0xf4]);
        set_gate64(&mut bus, 0x20, HANDLER, false, 0, 0);
        assert_eq!(cpu.run(&mut bus, 100), Ok(StopReason::Halted));
        assert_eq!(cpu.rip, CODE + 2);
        assert_eq!(
            cpu.run(&mut bus, 100),
            Ok(StopReason::Halted),
            "still halted"
        );
        bus.irqs.push_back(0x20);
        assert_eq!(cpu.run(&mut bus, 100), Ok(StopReason::Halted));
        assert_eq!(cpu.rip, HANDLER + 1);
        assert_eq!(bus.read_u64(cpu.gpr[4]), CODE + 2);
    }
}

#[cfg(test)]
mod trap_tests {
    use crate::StopReason;
    use crate::fault::vector;
    use crate::test_utils::*;

    #[test]
    fn single_step_traps_after_each_instruction_with_tf() {
        #[rustfmt::skip]
        let code = [
            0x9c,                                   // pushfq
            0x48, 0x81, 0x0c, 0x24, 0x00, 0x01, 0x00, 0x00, // or qword [rsp], 0x100
            0x9d,                                   // popfq (TF = 1 afterwards)
            0x90,                                   // nop  -> #DB after it
            0x90,
            0xf4,
        ];
        let (mut cpu, mut bus) = long_env(&code);
        let handler = CODE + 0x800;
        bus.load(handler, &[0xf4]);
        set_gate64(&mut bus, vector::DB, handler, false, 0, 0);
        assert_eq!(cpu.run(&mut bus, 20), Ok(StopReason::Halted));
        assert_eq!(cpu.rip, handler + 1);
        assert_eq!(
            bus.read_u64(cpu.gpr[4]),
            CODE + 11,
            "trap after the first NOP"
        );
        assert_ne!(cpu.dr[6] & (1 << 14), 0, "DR6.BS");
        assert_eq!(cpu.rflags() & 0x100, 0, "delivery clears TF");
    }

    #[test]
    fn alignment_check_at_cpl3() {
        // mov eax, [rsp+1]
        let set = |c: &mut crate::Cpu| {
            c.cpl = 3;
            c.cr0 |= x86::reg::cr0::AM;
            c.flags.set_bits(2 | x86::reg::rflags::AC);
        };
        assert_eq!(
            run_bytes64_fault(&[0x8b, 0x44, 0x24, 0x01], set),
            vector::AC
        );
        // Aligned: no fault (the HLT after it faults with #GP at CPL 3).
        assert_eq!(
            run_bytes64_fault(&[0x8b, 0x44, 0x24, 0x00], set),
            vector::GP
        );
    }
}

#[cfg(test)]
mod fault_loop_tests {
    use crate::Cpu;
    use crate::StopReason;
    use crate::fault::vector;
    use crate::state::{Seg, Segment};
    use crate::test_utils::TestBus;

    /// Real mode, #UD whose handler is the same UD2: every step is a delivery, the stack wraps
    /// forever, and nothing retires. The budget must still end the run.
    #[test]
    fn a_fault_loop_exhausts_the_budget() {
        let mut bus = TestBus::new();
        let mut cpu = Cpu::new();
        cpu.set_segment(Seg::Cs, Segment::real(0, true));
        cpu.rip = 0x7000;
        bus.load(0x7000, &[0x0f, 0x0b]); // ud2
        bus.load(u64::from(vector::UD) * 4, &[0x00, 0x70, 0x00, 0x00]); // IVT[6] = 0000:7000
        assert_eq!(cpu.run(&mut bus, 1000), Ok(StopReason::BudgetExhausted));
        assert_eq!(cpu.instructions_retired(), 1000);
        assert_eq!(cpu.counters().events_delivered, 1000);
    }
}
