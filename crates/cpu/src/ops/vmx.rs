//! The VMX instructions (SDM Vol. 3C chapter 31 "VMX Instruction Reference", 2023–2024
//! numbering): VMXON, VMXOFF, VMCLEAR, VMPTRLD, VMPTRST, VMREAD, VMWRITE, VMLAUNCH, VMRESUME
//! (VM entry itself is in `nonroot::entry`), INVEPT and INVVPID (`ops/vmx_inv.rs`) and VMCALL,
//! with the conventions of §31.2 (VMsucceed, VMfailInvalid, VMfailValid(n) with the number in
//! the VM-instruction error field of the current VMCS), and VMX operation as §24.7–§24.8 enable
//! and restrict it. In VMX non-root operation each of them causes a VM exit first
//! (`nonroot::intercept`), except VMREAD and VMWRITE let through by VMCS shadowing, which access
//! the shadow VMCS here.
//!
//! Each instruction is its fault checks and operand decoding around a VMX operation
//! (`vmx_op_*`) that returns the outcome as a [`VmResult`]; the native API
//! (`nonroot::native`) calls the same operations without an instruction.
//!
//! Everything here sits behind [`crate::CpuFeatures::vmx`]: without it every VMX instruction
//! raises #UD, as on a processor without VMX.
//!
//! The current VMCS is cached in the CPU as silicon may do (§25.11.1): VMPTRLD reads the region
//! from physical memory ([`Vmcs::load`]), VMCLEAR writes it back with launch state clear
//! ([`Vmcs::store`]), and so do VMXOFF and a VMPTRLD of another region. A VMCS region that is
//! not RAM stops the run with [`crate::CpuError::Unsupported`].

use iced_x86::{Instruction, Mnemonic as M};

use x86::Hpa;
use x86::msr::feature_control;
use x86::reg::{cr4, rflags};
use x86::vmx::controls::secondary_proc;
use x86::vmx::{VmInstructionError, VmcsField};

use crate::Cpu;
use crate::bus::Bus;
use crate::error::CpuError;
use crate::exec::Loc;
use crate::fault::{Ex, Exc, Fault};
use crate::icache::ICache;
use crate::state::{Mode, Seg};
use crate::vmx::capabilities::{MODEL, REVISION_ID};
use crate::vmx::vmcs::{LaunchState, PhysMemory, Vmcs};

/// How a VMX instruction fails (§31.2): VMfailInvalid, or VMfailValid with an error number
/// (which becomes VMfailInvalid when there is no current VMCS to hold the number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFail {
    /// VMfailInvalid: CF = 1.
    Invalid,
    /// VMfailValid(n): ZF = 1 and n in the VM-instruction error field.
    Valid(VmInstructionError),
}

/// The outcome of a VMX operation: VMsucceed with a value, or a failure.
pub type VmResult<T> = Result<T, VmFail>;

/// The current-VMCS pointer when there is no current VMCS (§25.1: FFFFFFFF_FFFFFFFFH).
pub(crate) const INVALID_POINTER: u64 = u64::MAX;

/// VMX operation of one logical processor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct VmxState {
    /// In VMX (root) operation: the VMXON pointer.
    vmxon: Option<u64>,
    /// The current VMCS: its pointer and the cached contents.
    pub(crate) current: Option<(u64, Box<Vmcs>)>,
    /// In VMX non-root operation: between a successful VM entry and the next VM exit.
    pub(crate) non_root: bool,
    /// The EPT pointer in force: set in non-root operation with "enable EPT" (§29.3), `None`
    /// otherwise. Guest-physical addresses are translated through it.
    pub(crate) ept: Option<x86::paging::Eptp>,
    /// The VPID in force (§29.1): the VPID field in non-root operation with "enable VPID",
    /// 0 in root operation and in non-root operation without it.
    pub(crate) vpid: u16,
    /// Guest state of non-root operation without a register of its own.
    pub(crate) extra: crate::nonroot::GuestExtra,
    /// The interruptibility-state bits (blocking by STI, by MOV SS) the executing
    /// instruction began with; 0 between instructions. VM entry fails with error 26 after
    /// MOV SS; a VM exit the instruction causes saves them.
    pub(crate) step_blocking: u32,
    /// The check that failed at the last VM entry.
    pub(crate) last_entry_failure: Option<crate::vmx::checks::EntryCheckFailure>,
    /// Failed VM-entry checks not yet taken by [`crate::Cpu::take_vm_entry_failures`] (the
    /// first [`crate::nonroot::FAILURE_LOG`]), with the linear RIP of the VMLAUNCH or VMRESUME.
    pub(crate) entry_failures: Vec<(u64, crate::vmx::checks::EntryCheckFailure)>,
    /// Failures beyond the log's capacity.
    pub(crate) entry_failures_dropped: u64,
    /// Native root operation: the program that owns the CPU is the VMX root software, and a
    /// VM exit ends the run (`nonroot::native`).
    pub(crate) native: bool,
}

impl VmxState {
    /// Whether the processor is in VMX operation (after VMXON, before VMXOFF).
    pub(crate) fn in_vmx_operation(&self) -> bool {
        self.vmxon.is_some()
    }

    /// The current-VMCS pointer, [`INVALID_POINTER`] when none.
    pub(crate) fn current_pointer(&self) -> u64 {
        self.current.as_ref().map_or(INVALID_POINTER, |(p, _)| *p)
    }

    /// The secondary processor-based controls in force (0 when not activated).
    pub(crate) fn secondary_controls(&self) -> u32 {
        let primary = self.field(VmcsField::PrimaryProcBasedControls) as u32;
        if primary & x86::vmx::controls::primary_proc::ACTIVATE_SECONDARY_CONTROLS != 0 {
            self.field(VmcsField::SecondaryProcBasedControls) as u32
        } else {
            0
        }
    }

    /// The cached current VMCS.
    pub(crate) fn vmcs(&self) -> Option<&Vmcs> {
        self.current.as_ref().map(|(_, v)| &**v)
    }

    /// The cached current VMCS, for writing.
    pub(crate) fn vmcs_mut(&mut self) -> Option<&mut Vmcs> {
        self.current.as_mut().map(|(_, v)| &mut **v)
    }

    /// A field of the current VMCS (0 without one: only called in non-root operation, which
    /// has one).
    pub(crate) fn field(&self, field: VmcsField) -> u64 {
        self.vmcs().map_or(0, |v| v.get(field))
    }
}

/// Guest-physical memory as the VMX instructions access it: RAM only. A region outside RAM
/// is reported as `Err` (the caller stops the run).
pub(crate) struct BusMemory<'a, B: Bus> {
    pub(crate) bus: &'a mut B,
    pub(crate) icache: &'a mut ICache,
}

impl<B: Bus> BusMemory<'_, B> {
    /// The RAM byte range behind `len` bytes at `addr`, if every byte is RAM and the frames are
    /// contiguous in [`Bus::ram`].
    fn range(&self, addr: Hpa, len: usize) -> Result<core::ops::Range<usize>, ()> {
        let first = self.bus.ram_offset(addr.frame()).ok_or(())?;
        let start = first + addr.page_offset() as usize;
        let end = start.checked_add(len).ok_or(())?;
        let last_addr = addr.checked_add(len.saturating_sub(1) as u64).ok_or(())?;
        let last = self.bus.ram_offset(last_addr.frame()).ok_or(())?;
        if last + last_addr.page_offset() as usize + 1 != end || end > self.bus.ram().len() {
            return Err(());
        }
        Ok(start..end)
    }
}

impl<B: Bus> PhysMemory for BusMemory<'_, B> {
    type Error = ();

    fn read(&mut self, addr: Hpa, buf: &mut [u8]) -> Result<(), ()> {
        let r = self.range(addr, buf.len())?;
        buf.copy_from_slice(self.bus.ram().get(r).ok_or(())?);
        Ok(())
    }

    fn write(&mut self, addr: Hpa, data: &[u8]) -> Result<(), ()> {
        let r = self.range(addr, data.len())?;
        let start = r.start;
        self.bus
            .ram_mut()
            .get_mut(r)
            .ok_or(())?
            .copy_from_slice(data);
        // Decoded instructions of the page are stale (the region is at most one page).
        self.icache.note_write(start);
        Ok(())
    }
}

/// A VMXON or VMCS pointer must be 4-KiB aligned and within MAXPHYADDR (§31.3).
fn valid_pointer(addr: u64) -> bool {
    addr & 0xfff == 0 && addr >> MODEL.maxphyaddr == 0
}

impl Cpu {
    /// The error that stops the run when a VMCS or VMXON region is not RAM.
    pub(crate) fn region_not_ram(&self) -> Exc {
        Exc::Error(Box::new(CpuError::Unsupported {
            rip: self.seg[Seg::Cs as usize].base.wrapping_add(self.rip),
            what: "a VMXON or VMCS region outside RAM",
        }))
    }

    /// Sets RFLAGS (and the VM-instruction error field) for the outcome of a VMX operation.
    pub(crate) fn vm_status<T>(&mut self, r: VmResult<T>) {
        match r {
            Ok(_) => self.vm_succeed(),
            Err(VmFail::Invalid) => self.vm_fail_invalid(),
            Err(VmFail::Valid(e)) => self.vm_fail(e),
        }
    }

    /// VMsucceed (§31.2): CF, PF, AF, ZF, SF, OF := 0.
    pub(crate) fn vm_succeed(&mut self) {
        self.flags.set_status(0);
    }

    /// VMfailInvalid (§31.2): CF := 1, the other status flags 0.
    pub(crate) fn vm_fail_invalid(&mut self) {
        self.flags.set_status(rflags::CF);
    }

    /// VMfail(error) (§31.2): VMfailValid(error) with a current VMCS (ZF := 1 and the number in
    /// its VM-instruction error field), VMfailInvalid without.
    pub(crate) fn vm_fail(&mut self, error: VmInstructionError) {
        match &mut self.vmx.current {
            Some((_, vmcs)) => {
                vmcs.set(VmcsField::VmInstructionError, u64::from(error.number()));
                self.flags.set_status(rflags::ZF);
            }
            None => self.vm_fail_invalid(),
        }
    }

    /// The #UD conditions of VMXON: CR0.PE = 0, CR4.VMXE = 0, RFLAGS.VM = 1, compatibility mode.
    pub(crate) fn vmx_mode_ud(&self) -> bool {
        matches!(self.mode, Mode::Real | Mode::Compatibility)
            || self.cr4 & cr4::VMXE == 0
            || self.flags.get(rflags::VM)
    }

    /// The checks that open every VMX instruction but VMXON in root operation: #UD outside VMX
    /// operation, with CR0.PE = 0, RFLAGS.VM = 1 or in compatibility mode; #GP(0) at CPL > 0.
    pub(crate) fn vmx_root_checks(&self) -> Ex<()> {
        if !self.vmx.in_vmx_operation() || self.vmx_mode_ud() {
            return Err(Fault::ud().into());
        }
        if self.cpl != 0 {
            return Err(Fault::gp(0).into());
        }
        Ok(())
    }

    /// The 64-bit memory operand of VMXON, VMCLEAR and VMPTRLD (a register operand does not
    /// encode these instructions; the decoder never yields one, #UD if it did).
    fn vmx_pointer_operand<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<u64> {
        match self.loc(ins, 0) {
            Loc::Mem(seg, off) => self.read_seg(bus, seg, off, 8),
            _ => Err(Fault::ud().into()),
        }
    }

    /// The effective operand size of VMREAD and VMWRITE: 64 bits in 64-bit mode, else 32.
    pub(crate) fn vmx_operand_bits(&self) -> u32 {
        if self.mode == Mode::Long64 { 64 } else { 32 }
    }

    pub(crate) fn bus_memory<'a, B: Bus>(&'a mut self, bus: &'a mut B) -> BusMemory<'a, B> {
        BusMemory {
            bus,
            icache: &mut self.icache,
        }
    }

    /// Writes the cached current VMCS back to its region and forgets it.
    fn flush_current_vmcs<B: Bus>(&mut self, bus: &mut B) -> Ex<()> {
        if let Some((ptr, vmcs)) = self.vmx.current.take() {
            vmcs.store(&mut self.bus_memory(bus), Hpa::new(ptr))
                .map_err(|()| self.region_not_ram())?;
        }
        Ok(())
    }

    /// The VMX instructions (dispatch).
    #[inline(never)]
    pub(crate) fn vmx_insn<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        if !self.features.vmx {
            return Err(Fault::ud().into());
        }
        match ins.mnemonic() {
            M::Vmxon => self.vmxon(bus, ins),
            M::Vmxoff => self.vmxoff(bus),
            M::Vmclear => self.vmclear(bus, ins),
            M::Vmptrld => self.vmptrld(bus, ins),
            M::Vmptrst => self.vmptrst(bus, ins),
            M::Vmread => self.vmread(bus, ins),
            M::Vmwrite => self.vmwrite(bus, ins),
            M::Vmcall => self.vmcall(),
            M::Vmlaunch => self.vm_entry(bus, true),
            M::Vmresume => self.vm_entry(bus, false),
            M::Invept => self.invept(bus, ins),
            M::Invvpid => self.invvpid(bus, ins),
            _ => Err(self.unimplemented(bus, ins)),
        }
    }

    /// VMXON (§31.3 "VMXON—Enter VMX Operation").
    fn vmxon<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        if self.vmx_mode_ud() {
            return Err(Fault::ud().into());
        }
        if self.vmx.in_vmx_operation() {
            if self.cpl != 0 {
                return Err(Fault::gp(0).into());
            }
            self.vm_fail(VmInstructionError::VmxonInVmxRoot);
            return Ok(());
        }
        // Outside VMX operation: CPL, the VMX fixed bits of CR0 and CR4 (§24.8) and
        // IA32_FEATURE_CONTROL locked with VMX enabled outside SMX (§24.7); no SMX operation.
        let fc = self.msr.feature_control;
        if self.cpl != 0
            || MODEL.cr0_fixed.check(self.cr0).is_err()
            || MODEL.cr4_fixed.check(self.cr4).is_err()
            || fc & feature_control::LOCK == 0
            || fc & feature_control::VMX_OUTSIDE_SMX == 0
        {
            return Err(Fault::gp(0).into());
        }
        let addr = self.vmx_pointer_operand(bus, ins)?;
        let r = self.vmx_op_on(bus, addr)?;
        self.vm_status(r);
        Ok(())
    }

    /// The VMX operation of VMXON after its fault checks: the region's pointer and revision.
    pub(crate) fn vmx_op_on<B: Bus>(&mut self, bus: &mut B, addr: u64) -> Ex<VmResult<()>> {
        if !valid_pointer(addr) {
            return Ok(Err(VmFail::Invalid));
        }
        let (revision, shadow) = Vmcs::read_header(&mut self.bus_memory(bus), Hpa::new(addr))
            .map_err(|()| self.region_not_ram())?;
        if revision != REVISION_ID || shadow {
            return Ok(Err(VmFail::Invalid));
        }
        self.vmx.vmxon = Some(addr);
        self.vmx.current = None;
        Ok(Ok(()))
    }

    /// VMXOFF (§31.3 "VMXOFF—Leave VMX Operation"). The dual-monitor treatment of SMIs is
    /// never active (no SMM monitor), so error 23 cannot occur. The cached current VMCS is
    /// written back (software should have executed VMCLEAR, §25.11.1).
    fn vmxoff<B: Bus>(&mut self, bus: &mut B) -> Ex<()> {
        self.vmx_root_checks()?;
        self.flush_current_vmcs(bus)?;
        self.vmx = VmxState::default();
        self.vm_succeed();
        Ok(())
    }

    /// VMCLEAR (§31.3 "VMCLEAR—Clear Virtual-Machine Control Structure"): errors 2 and 3.
    fn vmclear<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        self.vmx_root_checks()?;
        let addr = self.vmx_pointer_operand(bus, ins)?;
        let r = self.vmx_op_clear(bus, addr)?;
        self.vm_status(r);
        Ok(())
    }

    /// The VMX operation of VMCLEAR.
    pub(crate) fn vmx_op_clear<B: Bus>(&mut self, bus: &mut B, addr: u64) -> Ex<VmResult<()>> {
        if !valid_pointer(addr) {
            return Ok(Err(VmFail::Valid(
                VmInstructionError::VmclearInvalidAddress,
            )));
        }
        if self.vmx.vmxon == Some(addr) {
            return Ok(Err(VmFail::Valid(VmInstructionError::VmclearVmxonPointer)));
        }
        if self.vmx.current_pointer() == addr {
            if let Some((_, vmcs)) = &mut self.vmx.current {
                vmcs.set_launch_state(LaunchState::Clear);
            }
            self.flush_current_vmcs(bus)?;
        } else {
            Vmcs::clear_in_memory(&mut self.bus_memory(bus), Hpa::new(addr))
                .map_err(|()| self.region_not_ram())?;
        }
        Ok(Ok(()))
    }

    /// VMPTRLD (§31.3 "VMPTRLD—Load Pointer to Virtual-Machine Control Structure"): errors 9,
    /// 10 and 11. The shadow-VMCS indicator is accepted: the model supports VMCS shadowing.
    fn vmptrld<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        self.vmx_root_checks()?;
        let addr = self.vmx_pointer_operand(bus, ins)?;
        let r = self.vmx_op_ptrld(bus, addr)?;
        self.vm_status(r);
        Ok(())
    }

    /// The VMX operation of VMPTRLD.
    pub(crate) fn vmx_op_ptrld<B: Bus>(&mut self, bus: &mut B, addr: u64) -> Ex<VmResult<()>> {
        if !valid_pointer(addr) {
            return Ok(Err(VmFail::Valid(
                VmInstructionError::VmptrldInvalidAddress,
            )));
        }
        if self.vmx.vmxon == Some(addr) {
            return Ok(Err(VmFail::Valid(VmInstructionError::VmptrldVmxonPointer)));
        }
        let (revision, shadow) = Vmcs::read_header(&mut self.bus_memory(bus), Hpa::new(addr))
            .map_err(|()| self.region_not_ram())?;
        let shadowing = MODEL.caps.secondary_proc.allowed1 & secondary_proc::VMCS_SHADOWING != 0;
        if revision != REVISION_ID || (shadow && !shadowing) {
            return Ok(Err(VmFail::Valid(
                VmInstructionError::VmptrldIncorrectRevision,
            )));
        }
        if self.vmx.current_pointer() != addr {
            self.flush_current_vmcs(bus)?;
            let vmcs = Vmcs::load(&mut self.bus_memory(bus), Hpa::new(addr))
                .map_err(|()| self.region_not_ram())?;
            self.vmx.current = Some((addr, Box::new(vmcs)));
        }
        Ok(Ok(()))
    }

    /// VMPTRST (§31.3 "VMPTRST—Store Pointer to Virtual-Machine Control Structure").
    fn vmptrst<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        self.vmx_root_checks()?;
        let Loc::Mem(seg, off) = self.loc(ins, 0) else {
            return Err(Fault::ud().into());
        };
        let ptr = self.vmx.current_pointer();
        self.write_seg(bus, seg, off, 8, ptr)?;
        self.vm_succeed();
        Ok(())
    }

    /// VMREAD (§31.3 "VMREAD—Read Field from Virtual-Machine Control Structure"): error 12 for
    /// an unsupported field or a 64-bit encoding with bits 63:32 set. The destination (register
    /// or memory) takes the effective operand size: a shorter field is zero-extended, a longer
    /// one truncated.
    fn vmread<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        self.vmx_root_checks()?;
        if self.vmx.non_root {
            return self.shadow_vmread_vmwrite(bus, ins, false);
        }
        let encoding = self.reg(ins.op1_register());
        let value = match self.vmx_op_read(encoding) {
            Ok(v) => v,
            Err(e) => {
                self.vm_status::<()>(Err(e));
                return Ok(());
            }
        };
        let bits = self.vmx_operand_bits();
        let dst = self.loc(ins, 0);
        self.put(bus, dst, bits, value & crate::flags::mask(bits))?;
        self.vm_succeed();
        Ok(())
    }

    /// The VMX operation of VMREAD on the current VMCS: error 12 for an unsupported field or
    /// an encoding with bits 63:32 set.
    pub(crate) fn vmx_op_read(&self, encoding: u64) -> VmResult<u64> {
        let Some((_, vmcs)) = &self.vmx.current else {
            return Err(VmFail::Invalid);
        };
        let encoding = u32::try_from(encoding)
            .map_err(|_| VmFail::Valid(VmInstructionError::UnsupportedVmcsComponent))?;
        vmcs.vmread(encoding, &MODEL.caps).map_err(VmFail::Valid)
    }

    /// VMWRITE (§31.3 "VMWRITE—Write Field to Virtual-Machine Control Structure"): the source
    /// (register or memory, effective operand size) is read first, then error 12 for an
    /// unsupported field or an encoding with bits 63:32 set and error 13 for a read-only one.
    fn vmwrite<B: Bus>(&mut self, bus: &mut B, ins: &Instruction) -> Ex<()> {
        self.vmx_root_checks()?;
        if self.vmx.non_root {
            return self.shadow_vmread_vmwrite(bus, ins, true);
        }
        if self.vmx.current.is_none() {
            self.vm_fail_invalid();
            return Ok(());
        }
        let bits = self.vmx_operand_bits();
        let src = self.loc(ins, 1);
        let value = self.get(bus, src, bits)?;
        let encoding = self.reg(ins.op0_register());
        let r = self.vmx_op_write(encoding, value);
        self.vm_status(r);
        Ok(())
    }

    /// The VMX operation of VMWRITE on the current VMCS: error 12 for an unsupported field or
    /// an encoding with bits 63:32 set, 13 for a read-only one.
    pub(crate) fn vmx_op_write(&mut self, encoding: u64, value: u64) -> VmResult<()> {
        let Some((_, vmcs)) = &mut self.vmx.current else {
            return Err(VmFail::Invalid);
        };
        let encoding = u32::try_from(encoding)
            .map_err(|_| VmFail::Valid(VmInstructionError::UnsupportedVmcsComponent))?;
        vmcs.vmwrite(encoding, value, &MODEL.caps)
            .map_err(VmFail::Valid)
    }

    /// VMREAD or VMWRITE in non-root operation that VMCS shadowing lets through (the
    /// intercept decided it, §26.1.3): it accesses the shadow VMCS that the VMCS link pointer
    /// references, in memory; its errors go to the current VMCS (§31.3 pseudo-code).
    fn shadow_vmread_vmwrite<B: Bus>(
        &mut self,
        bus: &mut B,
        ins: &Instruction,
        write: bool,
    ) -> Ex<()> {
        let link = self.vmx.field(VmcsField::VmcsLinkPointer);
        if link == INVALID_POINTER {
            self.vm_fail_invalid();
            return Ok(());
        }
        let bits = self.vmx_operand_bits();
        let value = if write {
            let src = self.loc(ins, 1);
            self.get(bus, src, bits)?
        } else {
            0
        };
        let encoding = self.reg(if write {
            ins.op0_register()
        } else {
            ins.op1_register()
        });
        let mut shadow = Vmcs::load(&mut self.bus_memory(bus), Hpa::new(link))
            .map_err(|()| self.region_not_ram())?;
        let Ok(encoding) = u32::try_from(encoding) else {
            self.vm_fail(VmInstructionError::UnsupportedVmcsComponent);
            return Ok(());
        };
        if write {
            match shadow.vmwrite(encoding, value, &MODEL.caps) {
                Ok(()) => {
                    shadow
                        .store(&mut self.bus_memory(bus), Hpa::new(link))
                        .map_err(|()| self.region_not_ram())?;
                    self.vm_succeed();
                }
                Err(e) => self.vm_fail(e),
            }
        } else {
            match shadow.vmread(encoding, &MODEL.caps) {
                Ok(v) => {
                    let dst = self.loc(ins, 0);
                    self.put(bus, dst, bits, v & crate::flags::mask(bits))?;
                    self.vm_succeed();
                }
                Err(e) => self.vm_fail(e),
            }
        }
        Ok(())
    }

    /// VMCALL in VMX root operation (§31.3 "VMCALL—Call to VM Monitor"): without an SMM
    /// monitor (IA32_SMM_MONITOR_CTL[0] = 0) it fails with error 1.
    fn vmcall(&mut self) -> Ex<()> {
        self.vmx_root_checks()?;
        self.vm_fail(VmInstructionError::VmcallInVmxRoot);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StopReason;
    use crate::fault::vector;
    use crate::test_utils::{CODE, TestBus, first_fault, long_mode};
    use x86::reg::cr0;

    /// The VMXON region, two VMCS regions, and where pointer operands are kept.
    const VMXON: u64 = 0x20_0000;
    const VMCS_A: u64 = 0x20_1000;
    const VMCS_B: u64 = 0x20_2000;
    /// RAX, RBX, RSI point here: [RAX] holds the VMXON pointer, [RBX] and [RSI] VMCS pointers.
    const PTR_AX: u64 = 0x20_8000;
    const PTR_BX: u64 = 0x20_8008;
    const PTR_SI: u64 = 0x20_8010;
    /// Where memory operands of VMREAD/VMWRITE and VMPTRST go.
    const SCRATCH: u64 = 0x20_9000;

    const STATUS: u64 = rflags::CF | rflags::PF | rflags::AF | rflags::ZF | rflags::SF | rflags::OF;

    const VMXON_RAX: [u8; 4] = [0xf3, 0x0f, 0xc7, 0x30]; // vmxon [rax]
    const VMXOFF: [u8; 3] = [0x0f, 0x01, 0xc4]; // vmxoff
    const VMPTRLD_RBX: [u8; 3] = [0x0f, 0xc7, 0x33]; // vmptrld [rbx]
    const VMPTRLD_RSI: [u8; 3] = [0x0f, 0xc7, 0x36]; // vmptrld [rsi]
    const VMCLEAR_RBX: [u8; 4] = [0x66, 0x0f, 0xc7, 0x33]; // vmclear [rbx]
    const VMPTRST_RDI: [u8; 3] = [0x0f, 0xc7, 0x3f]; // vmptrst [rdi]
    const VMREAD_RBX_RCX: [u8; 3] = [0x0f, 0x78, 0xcb]; // vmread rbx, rcx
    const VMWRITE_RCX_RBX: [u8; 3] = [0x0f, 0x79, 0xcb]; // vmwrite rcx, rbx
    const VMREAD_RDI_RCX: [u8; 3] = [0x0f, 0x78, 0x0f]; // vmread [rdi], rcx
    const VMWRITE_RCX_RDI: [u8; 3] = [0x0f, 0x79, 0x0f]; // vmwrite rcx, [rdi]
    const VMCALL: [u8; 3] = [0x0f, 0x01, 0xc1]; // vmcall
    const VMLAUNCH: [u8; 3] = [0x0f, 0x01, 0xc2]; // vmlaunch
    const VMRESUME: [u8; 3] = [0x0f, 0x01, 0xc3]; // vmresume
    const INVEPT: [u8; 5] = [0x66, 0x0f, 0x38, 0x80, 0x07]; // invept rax, [rdi]
    const INVVPID: [u8; 5] = [0x66, 0x0f, 0x38, 0x81, 0x07]; // invvpid rax, [rdi]

    /// A 64-bit CPU with the VMX switch on, ready for VMXON: CR0.NE and CR4.VMXE set,
    /// IA32_FEATURE_CONTROL locked with VMX enabled; revision identifiers in the three
    /// regions; RAX, RBX, RSI, RDI pointing at the pointer slots and the scratch area.
    fn vmx_setup(cpu: &mut Cpu, bus: &mut TestBus) {
        cpu.features.vmx = true;
        cpu.cr0 |= cr0::NE;
        cpu.cr4 |= cr4::VMXE;
        cpu.msr.feature_control = feature_control::LOCK | feature_control::VMX_OUTSIDE_SMX;
        for region in [VMXON, VMCS_A, VMCS_B] {
            bus.load(region, &REVISION_ID.to_le_bytes());
        }
        bus.write_u64(PTR_AX, VMXON);
        bus.write_u64(PTR_BX, VMCS_A);
        bus.write_u64(PTR_SI, VMCS_B);
        cpu.gpr[0] = PTR_AX;
        cpu.gpr[3] = PTR_BX;
        cpu.gpr[6] = PTR_SI;
        cpu.gpr[7] = SCRATCH;
        // Every status flag set, so that VMsucceed visibly clears them.
        cpu.flags.set_status(STATUS);
    }

    /// A VMX-ready CPU with `code` at CODE, followed by HLT.
    fn env(code: &[&[u8]], setup: impl FnOnce(&mut Cpu, &mut TestBus)) -> (Cpu, TestBus) {
        let mut bus = TestBus::new();
        let mut bytes: Vec<u8> = code.concat();
        bytes.push(0xf4);
        bus.load(CODE, &bytes);
        let mut cpu = long_mode(&mut bus);
        vmx_setup(&mut cpu, &mut bus);
        setup(&mut cpu, &mut bus);
        (cpu, bus)
    }

    /// Runs `n` instructions.
    fn steps(cpu: &mut Cpu, bus: &mut TestBus, n: u64) {
        assert_eq!(
            cpu.run(bus, n),
            Ok(StopReason::BudgetExhausted),
            "rip {:#x}",
            cpu.rip
        );
    }

    /// Runs to the final HLT.
    fn run(code: &[&[u8]], setup: impl FnOnce(&mut Cpu, &mut TestBus)) -> (Cpu, TestBus) {
        let (mut cpu, mut bus) = env(code, setup);
        assert_eq!(
            cpu.run(&mut bus, 1000),
            Ok(StopReason::Halted),
            "rip {:#x}",
            cpu.rip
        );
        (cpu, bus)
    }

    /// The first fault of `code` on a VMX-ready CPU.
    fn fault(code: &[&[u8]], setup: impl FnOnce(&mut Cpu)) -> Fault {
        let bytes = code.concat();
        first_fault(&bytes, |cpu| {
            let mut scratch = TestBus::new();
            vmx_setup(cpu, &mut scratch);
            setup(cpu);
        })
    }

    fn status(cpu: &Cpu) -> u64 {
        cpu.flags.bits() & STATUS
    }

    /// The VM-instruction error field of the cached current VMCS.
    fn error_field(cpu: &Cpu) -> u64 {
        let (_, vmcs) = cpu.vmx.current.as_ref().expect("a current VMCS");
        vmcs.get(VmcsField::VmInstructionError)
    }

    fn valid(cpu: &Cpu, error: VmInstructionError) {
        assert_eq!(status(cpu), rflags::ZF, "VMfailValid");
        assert_eq!(error_field(cpu), u64::from(error.number()));
    }

    // --- the switch ----------------------------------------------------------------------

    #[test]
    fn switch_off_hides_vmx() {
        // cpuid with EAX = 1: ECX.VMX clear.
        let (cpu, _) = crate::test_utils::run_bytes64(&[0x0f, 0xa2], |c| c.gpr[0] = 1);
        assert_eq!(cpu.gpr[1] as u32 & crate::cpuid::VMX, 0);
        assert!(!cpu.features().vmx, "off by default");
        // mov cr4, rax with VMXE: #GP(0).
        let f = first_fault(&[0x0f, 0x22, 0xe0], |c| c.gpr[0] = c.cr4 | cr4::VMXE);
        assert_eq!(f, Fault::gp(0));
        // rdmsr IA32_VMX_BASIC: #GP(0); wrmsr IA32_FEATURE_CONTROL with VMX enable: #GP(0).
        let f = first_fault(&[0x0f, 0x32], |c| c.gpr[1] = 0x480);
        assert_eq!(f, Fault::gp(0));
        let f = first_fault(&[0x0f, 0x30], |c| {
            c.gpr[1] = 0x3a;
            c.gpr[0] = 5;
        });
        assert_eq!(f, Fault::gp(0));
        // Every VMX instruction: #UD, even with CR4.VMXE forced on.
        for code in [
            &VMXON_RAX[..],
            &VMXOFF,
            &VMPTRLD_RBX,
            &VMCLEAR_RBX,
            &VMPTRST_RDI,
            &VMREAD_RBX_RCX,
            &VMWRITE_RCX_RBX,
            &VMCALL,
            &VMLAUNCH,
            &VMRESUME,
            &INVEPT,
            &INVVPID,
        ] {
            let f = first_fault(code, |c| {
                c.cr4 |= cr4::VMXE;
                c.cr0 |= cr0::NE;
                c.msr.feature_control = 5;
                c.gpr[0] = PTR_AX;
            });
            assert_eq!(f, Fault::ud(), "{code:02x?}");
        }
    }

    #[test]
    fn switch_on_advertises_vmx() {
        let cpu = Cpu::with_features(crate::CpuFeatures { vmx: true });
        assert!(cpu.features().vmx);
        // cpuid with EAX = 1: ECX.VMX set.
        let (cpu, _) = run(&[&[0x0f, 0xa2]], |c, _| c.gpr[0] = 1);
        assert_ne!(cpu.gpr[1] as u32 & crate::cpuid::VMX, 0);
        // mov cr4, rax: VMXE can be cleared and set outside VMX operation.
        let (cpu, _) = run(&[&[0x0f, 0x22, 0xe0]], |c, _| c.gpr[0] = cr4::PAE);
        assert_eq!(cpu.cr4, cr4::PAE);
        let (cpu, _) = run(&[&[0x0f, 0x22, 0xe0]], |c, _| {
            c.gpr[0] = cr4::PAE | cr4::VMXE
        });
        assert_eq!(cpu.cr4, cr4::PAE | cr4::VMXE);
        // rdmsr of every capability MSR: MODEL's value or #GP(0).
        for index in 0x480..=0x492u32 {
            let mut bus = TestBus::new();
            let mut cpu = long_mode(&mut bus);
            vmx_setup(&mut cpu, &mut bus);
            match MODEL.read_msr(index) {
                Some(v) if index <= 0x491 => assert_eq!(cpu.read_msr(index), Ok(v)),
                _ => assert_eq!(cpu.read_msr(index), Err(Fault::gp(0)), "{index:#x}"),
            }
        }
        // rdmsr ecx = IA32_VMX_BASIC (0x480) as an instruction: EDX:EAX.
        let (cpu, _) = run(&[&[0x0f, 0x32]], |c, _| c.gpr[1] = 0x480);
        let basic = MODEL.read_msr(0x480).unwrap_or(0);
        assert_eq!((cpu.gpr[0], cpu.gpr[2]), (basic & 0xffff_ffff, basic >> 32));
        // The capability MSRs are read-only: wrmsr #GP(0).
        let f = fault(&[&[0x0f, 0x30]], |c| c.gpr[1] = 0x480);
        assert_eq!(f, Fault::gp(0));
        // IA32_FEATURE_CONTROL takes lock + VMX outside SMX, not VMX inside SMX (no SMX).
        let mut bus = TestBus::new();
        let mut cpu = long_mode(&mut bus);
        cpu.features.vmx = true;
        assert_eq!(cpu.write_msr(0x3a, 2), Err(Fault::gp(0)));
        assert_eq!(cpu.write_msr(0x3a, 5), Ok(()));
        assert_eq!(cpu.read_msr(0x3a), Ok(5));
        assert_eq!(cpu.write_msr(0x3a, 1), Err(Fault::gp(0)), "locked");
    }

    // --- VMXON ---------------------------------------------------------------------------

    #[test]
    fn vmxon_succeeds_with_an_invalid_current_vmcs() {
        let (cpu, bus) = run(&[&VMXON_RAX, &VMPTRST_RDI], |_, _| {});
        assert_eq!(status(&cpu), 0, "VMsucceed");
        assert_eq!(cpu.vmx.vmxon, Some(VMXON));
        assert_eq!(bus.read_u64(SCRATCH), INVALID_POINTER, "vmptrst");
    }

    #[test]
    fn vmxon_ud_conditions() {
        // CR4.VMXE = 0.
        assert_eq!(fault(&[&VMXON_RAX], |c| c.cr4 &= !cr4::VMXE), Fault::ud());
        // Compatibility mode (IA32_EFER.LMA = 1, CS.L = 0): a 32-bit code segment.
        let f = fault(&[&VMXON_RAX], |c| {
            c.seg[Seg::Cs as usize] = crate::Segment::flat32(0x18, true, 0);
            c.update_mode();
            assert_eq!(c.mode, Mode::Compatibility);
        });
        assert_eq!(f, Fault::ud());
        // #UD comes before the CPL check.
        let f = fault(&[&VMXON_RAX], |c| {
            c.cr4 &= !cr4::VMXE;
            c.cpl = 3;
        });
        assert_eq!(f, Fault::ud());
    }

    /// Real mode (CR0.PE = 0): #UD, although CR4.VMXE is set and the CPL is 0.
    #[test]
    fn vmxon_in_real_mode_is_ud() {
        let mut bus = TestBus::new();
        bus.load(0x1_0000, &[0xf3, 0x0f, 0xc7, 0x30]); // vmxon [bx+si]
        let mut cpu = Cpu::with_features(crate::CpuFeatures { vmx: true });
        cpu.set_segment(Seg::Cs, crate::Segment::real(0x1000, true));
        cpu.rip = 0;
        cpu.cr4 = cr4::VMXE;
        cpu.msr.feature_control = feature_control::LOCK | feature_control::VMX_OUTSIDE_SMX;
        assert_eq!(cpu.mode, Mode::Real);
        cpu.icache.attach(&bus);
        assert_eq!(cpu.step(&mut bus), Err(Exc::Fault(Fault::ud())));
    }

    #[test]
    fn vmxon_gp_conditions() {
        assert_eq!(fault(&[&VMXON_RAX], |c| c.cpl = 3), Fault::gp(0), "CPL 3");
        // CR0.NE is fixed to 1 in VMX operation (IA32_VMX_CR0_FIXED0).
        assert_eq!(fault(&[&VMXON_RAX], |c| c.cr0 &= !cr0::NE), Fault::gp(0));
        // IA32_FEATURE_CONTROL not locked, or locked without VMX outside SMX.
        let f = fault(&[&VMXON_RAX], |c| {
            c.msr.feature_control = feature_control::VMX_OUTSIDE_SMX;
        });
        assert_eq!(f, Fault::gp(0));
        let f = fault(&[&VMXON_RAX], |c| {
            c.msr.feature_control = feature_control::LOCK
        });
        assert_eq!(f, Fault::gp(0));
        // The operand read faults like any memory read: RAX at an unmapped page is #PF.
        let f = fault(&[&VMXON_RAX], |c| c.gpr[0] = 0x4000_0000);
        assert_eq!(f.vector, vector::PF);
    }

    #[test]
    fn vmxon_fail_invalid() {
        for (what, pointer, header) in [
            ("not 4-KiB aligned", VMXON + 8, REVISION_ID),
            ("beyond MAXPHYADDR", 1u64 << MODEL.maxphyaddr, REVISION_ID),
            ("wrong revision", VMXON, REVISION_ID ^ 1),
            ("shadow indicator", VMXON, REVISION_ID | 1 << 31),
        ] {
            let (cpu, _) = run(&[&VMXON_RAX], |_, bus| {
                bus.write_u64(PTR_AX, pointer);
                bus.load(VMXON, &header.to_le_bytes());
            });
            assert_eq!(status(&cpu), rflags::CF, "{what}: VMfailInvalid");
            assert!(!cpu.vmx.in_vmx_operation(), "{what}");
        }
    }

    #[test]
    fn vmxon_in_vmx_root_operation() {
        // Without a current VMCS: VMfailInvalid.
        let (cpu, _) = run(&[&VMXON_RAX, &VMXON_RAX], |_, _| {});
        assert_eq!(status(&cpu), rflags::CF);
        // With one: VMfailValid(15).
        let (cpu, _) = run(&[&VMXON_RAX, &VMPTRLD_RBX, &VMXON_RAX], |_, _| {});
        valid(&cpu, VmInstructionError::VmxonInVmxRoot);
        // At CPL 3 in VMX operation: #GP(0).
        let (mut cpu, mut bus) = env(&[&VMXON_RAX, &VMXON_RAX], |_, _| {});
        steps(&mut cpu, &mut bus, 1);
        cpu.cpl = 3;
        assert_eq!(cpu.step(&mut bus), Err(Exc::Fault(Fault::gp(0))));
    }

    #[test]
    fn control_registers_keep_vmx_fixed_bits_in_vmx_operation() {
        // mov cr4, rcx clearing VMXE; mov cr0, rcx clearing NE: #GP(0) in VMX operation.
        for (code, bits) in [
            ([0x0f, 0x22, 0xe1], cr4::PAE),
            ([0x0f, 0x22, 0xc1], cr0::PE | cr0::PG | cr0::ET),
        ] {
            let (mut cpu, mut bus) = env(&[&VMXON_RAX, &code], |c, _| c.gpr[1] = bits);
            steps(&mut cpu, &mut bus, 1);
            assert_eq!(cpu.step(&mut bus), Err(Exc::Fault(Fault::gp(0))));
        }
    }

    // --- VMXOFF --------------------------------------------------------------------------

    #[test]
    fn vmxoff_leaves_vmx_operation_and_writes_the_vmcs_back() {
        // vmxon; vmptrld [rbx]; vmwrite rcx (GUEST_RIP), rbx; vmxoff
        let (cpu, bus) = run(
            &[&VMXON_RAX, &VMPTRLD_RBX, &VMWRITE_RCX_RBX, &VMXOFF],
            |c, _| {
                c.gpr[1] = u64::from(VmcsField::GuestRip.encoding());
            },
        );
        assert_eq!(status(&cpu), 0);
        assert_eq!(cpu.vmx, VmxState::default());
        let mut mem = crate::vmx::vmcs::tests::TestMemory(bus.ram.clone());
        let region = Vmcs::load(&mut mem, Hpa::new(VMCS_A)).unwrap();
        assert_eq!(region.get(VmcsField::GuestRip), PTR_BX);
        // Outside VMX operation: #UD; CPL 3 inside: #GP(0).
        assert_eq!(fault(&[&VMXOFF], |_| {}), Fault::ud());
        let (mut cpu, mut bus) = env(&[&VMXON_RAX, &VMXOFF], |_, _| {});
        steps(&mut cpu, &mut bus, 1);
        cpu.cpl = 3;
        assert_eq!(cpu.step(&mut bus), Err(Exc::Fault(Fault::gp(0))));
    }

    // --- VMCLEAR -------------------------------------------------------------------------

    #[test]
    fn vmclear_errors_2_and_3() {
        for (what, pointer, error) in [
            (
                "misaligned",
                VMCS_A + 0x10,
                VmInstructionError::VmclearInvalidAddress,
            ),
            (
                "beyond MAXPHYADDR",
                VMCS_A | 1 << MODEL.maxphyaddr,
                VmInstructionError::VmclearInvalidAddress,
            ),
            (
                "VMXON pointer",
                VMXON,
                VmInstructionError::VmclearVmxonPointer,
            ),
        ] {
            // No current VMCS: VMfailInvalid.
            let (cpu, _) = run(&[&VMXON_RAX, &VMCLEAR_RBX], |_, bus| {
                bus.write_u64(PTR_BX, pointer);
            });
            assert_eq!(status(&cpu), rflags::CF, "{what}");
            // With VMCS B current: VMfailValid(n), B stays current.
            let (cpu, _) = run(&[&VMXON_RAX, &VMPTRLD_RSI, &VMCLEAR_RBX], |_, bus| {
                bus.write_u64(PTR_BX, pointer);
            });
            valid(&cpu, error);
            assert_eq!(cpu.vmx.current_pointer(), VMCS_B, "{what}");
        }
        // Outside VMX operation: #UD.
        assert_eq!(fault(&[&VMCLEAR_RBX], |_| {}), Fault::ud());
    }

    #[test]
    fn vmclear_of_the_current_vmcs_writes_it_back_clear() {
        // A launched region with a stale GUEST_RIP in memory.
        let mut launched = Vmcs::new(REVISION_ID);
        launched.set_launch_state(LaunchState::Launched);
        launched.set(VmcsField::GuestRip, 0x1111);
        // vmxon; vmptrld [rbx]; vmwrite rcx (GUEST_RIP), rbx; vmclear [rbx]; vmptrst [rdi]
        let (cpu, bus) = run(
            &[
                &VMXON_RAX,
                &VMPTRLD_RBX,
                &VMWRITE_RCX_RBX,
                &VMCLEAR_RBX,
                &VMPTRST_RDI,
            ],
            |c, bus| {
                c.gpr[1] = u64::from(VmcsField::GuestRip.encoding());
                bus.load(VMCS_A, &launched.to_bytes());
            },
        );
        assert_eq!(status(&cpu), 0);
        assert_eq!(bus.read_u64(SCRATCH), INVALID_POINTER, "no current VMCS");
        let mut mem = crate::vmx::vmcs::tests::TestMemory(bus.ram.clone());
        let region = Vmcs::load(&mut mem, Hpa::new(VMCS_A)).unwrap();
        assert_eq!(region.launch_state(), LaunchState::Clear);
        assert_eq!(
            region.get(VmcsField::GuestRip),
            PTR_BX,
            "cached value written back"
        );
    }

    #[test]
    fn vmclear_of_another_region_clears_its_launch_state_only() {
        let mut launched = Vmcs::new(REVISION_ID);
        launched.set_launch_state(LaunchState::Launched);
        launched.set(VmcsField::GuestRip, 0x2222);
        // vmxon; vmptrld [rsi]; vmclear [rbx]
        let (cpu, bus) = run(&[&VMXON_RAX, &VMPTRLD_RSI, &VMCLEAR_RBX], |_, bus| {
            bus.load(VMCS_A, &launched.to_bytes());
        });
        assert_eq!(status(&cpu), 0);
        assert_eq!(cpu.vmx.current_pointer(), VMCS_B);
        let mut mem = crate::vmx::vmcs::tests::TestMemory(bus.ram.clone());
        let region = Vmcs::load(&mut mem, Hpa::new(VMCS_A)).unwrap();
        assert_eq!(region.launch_state(), LaunchState::Clear);
        assert_eq!(region.get(VmcsField::GuestRip), 0x2222);
    }

    // --- VMPTRLD / VMPTRST ---------------------------------------------------------------

    #[test]
    fn vmptrld_errors_9_10_11() {
        for (what, pointer, header, error) in [
            (
                "misaligned",
                VMCS_A + 1,
                REVISION_ID,
                VmInstructionError::VmptrldInvalidAddress,
            ),
            (
                "beyond MAXPHYADDR",
                1 << 63,
                REVISION_ID,
                VmInstructionError::VmptrldInvalidAddress,
            ),
            (
                "VMXON pointer",
                VMXON,
                REVISION_ID,
                VmInstructionError::VmptrldVmxonPointer,
            ),
            (
                "wrong revision",
                VMCS_A,
                REVISION_ID + 1,
                VmInstructionError::VmptrldIncorrectRevision,
            ),
        ] {
            let (cpu, _) = run(&[&VMXON_RAX, &VMPTRLD_RBX], |_, bus| {
                bus.write_u64(PTR_BX, pointer);
                bus.load(VMCS_A, &header.to_le_bytes());
            });
            assert_eq!(status(&cpu), rflags::CF, "{what}: no current VMCS");
            assert_eq!(cpu.vmx.current_pointer(), INVALID_POINTER);
            let (cpu, _) = run(&[&VMXON_RAX, &VMPTRLD_RSI, &VMPTRLD_RBX], |_, bus| {
                bus.write_u64(PTR_BX, pointer);
                bus.load(VMCS_A, &header.to_le_bytes());
            });
            valid(&cpu, error);
            assert_eq!(cpu.vmx.current_pointer(), VMCS_B, "{what}");
        }
    }

    #[test]
    fn vmptrld_loads_a_shadow_vmcs_and_vmptrst_stores_the_pointer() {
        let mut region = Vmcs::new(REVISION_ID);
        region.set_shadow(true);
        region.set(VmcsField::GuestRsp, 0x7777);
        // vmxon; vmptrld [rbx]; vmptrst [rdi]; vmread rbx, rcx (GUEST_RSP)
        let (cpu, bus) = run(
            &[&VMXON_RAX, &VMPTRLD_RBX, &VMPTRST_RDI, &VMREAD_RBX_RCX],
            |c, bus| {
                c.gpr[1] = u64::from(VmcsField::GuestRsp.encoding());
                bus.load(VMCS_A, &region.to_bytes());
            },
        );
        assert_eq!(status(&cpu), 0);
        assert_eq!(bus.read_u64(SCRATCH), VMCS_A);
        assert_eq!(cpu.gpr[3], 0x7777, "loaded from the region");
        // VMPTRST at CPL 3: #GP(0); outside VMX operation: #UD.
        assert_eq!(fault(&[&VMPTRST_RDI], |_| {}), Fault::ud());
        let (mut cpu, mut bus) = env(&[&VMXON_RAX, &VMPTRST_RDI], |_, _| {});
        steps(&mut cpu, &mut bus, 1);
        cpu.cpl = 3;
        assert_eq!(cpu.step(&mut bus), Err(Exc::Fault(Fault::gp(0))));
    }

    #[test]
    fn vmptrld_of_another_region_writes_the_current_one_back() {
        // vmxon; vmptrld [rbx]; vmwrite rcx (GUEST_RIP), rbx; vmptrld [rsi]
        let (cpu, bus) = run(
            &[&VMXON_RAX, &VMPTRLD_RBX, &VMWRITE_RCX_RBX, &VMPTRLD_RSI],
            |c, _| c.gpr[1] = u64::from(VmcsField::GuestRip.encoding()),
        );
        assert_eq!(status(&cpu), 0);
        assert_eq!(cpu.vmx.current_pointer(), VMCS_B);
        let mut mem = crate::vmx::vmcs::tests::TestMemory(bus.ram.clone());
        let region = Vmcs::load(&mut mem, Hpa::new(VMCS_A)).unwrap();
        assert_eq!(region.get(VmcsField::GuestRip), PTR_BX);
    }

    #[test]
    fn a_vmcs_region_outside_ram_stops_the_run() {
        // 0x4000_0000 is below MAXPHYADDR but not RAM on the test bus.
        let (mut cpu, mut bus) = env(&[&VMXON_RAX, &VMPTRLD_RBX], |_, bus| {
            bus.write_u64(PTR_BX, 0x4000_0000);
        });
        assert!(matches!(
            cpu.run(&mut bus, 10),
            Err(CpuError::Unsupported { rip, .. }) if rip == CODE + 4
        ));
    }

    // --- VMREAD / VMWRITE ----------------------------------------------------------------

    #[test]
    fn vmread_vmwrite_without_a_current_vmcs_fail_invalid() {
        for code in [VMREAD_RBX_RCX, VMWRITE_RCX_RBX] {
            let (cpu, _) = run(&[&VMXON_RAX, &code], |_, _| {});
            assert_eq!(status(&cpu), rflags::CF, "{code:02x?}");
        }
        assert_eq!(fault(&[&VMREAD_RBX_RCX], |_| {}), Fault::ud());
        assert_eq!(fault(&[&VMWRITE_RCX_RBX], |_| {}), Fault::ud());
    }

    #[test]
    fn vmwrite_then_vmread_register_and_memory_operands() {
        // vmxon; vmptrld [rbx]; vmwrite rcx, [rdi]; vmread rbx, rcx
        let (cpu, _) = run(
            &[&VMXON_RAX, &VMPTRLD_RBX, &VMWRITE_RCX_RDI, &VMREAD_RBX_RCX],
            |c, bus| {
                c.gpr[1] = u64::from(VmcsField::GuestCr3.encoding());
                bus.write_u64(SCRATCH, 0x1234_5678_9abc_d000);
            },
        );
        assert_eq!(status(&cpu), 0);
        assert_eq!(cpu.gpr[3], 0x1234_5678_9abc_d000);
        // vmxon; vmptrld [rbx]; vmwrite rcx (GUEST_ES_SELECTOR, 16 bits), rbx;
        // vmread [rdi], rcx: the 16-bit field zero-extended to 64 bits in memory.
        let (cpu, bus) = run(
            &[&VMXON_RAX, &VMPTRLD_RBX, &VMWRITE_RCX_RBX, &VMREAD_RDI_RCX],
            |c, bus| {
                c.gpr[1] = u64::from(VmcsField::GuestEsSelector.encoding());
                bus.write_u64(SCRATCH, u64::MAX);
            },
        );
        assert_eq!(status(&cpu), 0);
        assert_eq!(bus.read_u64(SCRATCH), PTR_BX & 0xffff);
    }

    #[test]
    fn vmread_vmwrite_errors_12_and_13() {
        for (what, encoding, code, error) in [
            (
                "VMREAD of no field",
                0x0001,
                VMREAD_RBX_RCX,
                VmInstructionError::UnsupportedVmcsComponent,
            ),
            (
                "VMWRITE of no field",
                0x0001,
                VMWRITE_RCX_RBX,
                VmInstructionError::UnsupportedVmcsComponent,
            ),
            (
                "VMREAD with bits 63:32 set",
                1 << 32 | u64::from(VmcsField::GuestRip.encoding()),
                VMREAD_RBX_RCX,
                VmInstructionError::UnsupportedVmcsComponent,
            ),
            (
                "VMWRITE with bits 63:32 set",
                1 << 32 | u64::from(VmcsField::GuestRip.encoding()),
                VMWRITE_RCX_RBX,
                VmInstructionError::UnsupportedVmcsComponent,
            ),
            (
                "VMWRITE of a read-only field",
                u64::from(VmcsField::ExitReason.encoding()),
                VMWRITE_RCX_RBX,
                VmInstructionError::VmwriteReadOnlyComponent,
            ),
        ] {
            let (cpu, _) = run(&[&VMXON_RAX, &VMPTRLD_RBX, &code], |c, _| {
                c.gpr[1] = encoding;
                c.gpr[3] = PTR_BX;
            });
            valid(&cpu, error);
            if code == VMREAD_RBX_RCX {
                assert_eq!(cpu.gpr[3], PTR_BX, "{what}: destination unchanged");
            }
        }
        // The error is readable: vmwrite rcx (EXIT_REASON), rbx; vmread rbx, rdx (error field).
        let (cpu, _) = run(
            &[
                &VMXON_RAX,
                &VMPTRLD_RBX,
                &VMWRITE_RCX_RBX,
                &[0x0f, 0x78, 0xd3],
            ],
            |c, _| {
                c.gpr[1] = u64::from(VmcsField::ExitReason.encoding());
                c.gpr[2] = u64::from(VmcsField::VmInstructionError.encoding());
            },
        );
        assert_eq!(status(&cpu), 0);
        assert_eq!(cpu.gpr[3], 13);
        // A memory fault of VMWRITE's source comes before the field check: #PF, no VMfail.
        let (mut cpu, mut bus) = env(&[&VMXON_RAX, &VMPTRLD_RBX, &VMWRITE_RCX_RDI], |c, _| {
            c.gpr[1] = 0x0001;
            c.gpr[7] = 0x4000_0000;
        });
        steps(&mut cpu, &mut bus, 2);
        let r = cpu.step(&mut bus);
        assert!(
            matches!(r, Err(Exc::Fault(f)) if f.vector == vector::PF),
            "{r:?}"
        );
    }

    /// 32-bit protected mode with paging (CR0.PG is fixed to 1 in VMX operation): VMREAD and
    /// VMWRITE have a 32-bit operand size; a 64-bit field is truncated and zero-extended.
    #[test]
    fn vmread_vmwrite_in_32_bit_mode() {
        let mut bus = TestBus::new();
        #[rustfmt::skip]
        let code = [
            0xf3, 0x0f, 0xc7, 0x30, // vmxon [eax]
            0x0f, 0xc7, 0x33,       // vmptrld [ebx]
            0x0f, 0x79, 0xca,       // vmwrite ecx, edx
            0x0f, 0x78, 0xcb,       // vmread ebx, ecx
            0xf4,                   // hlt
        ];
        bus.load(CODE, &code);
        // 4-MiB identity pages for the first 16 MiB.
        for i in 0..4u64 {
            bus.load(0x4000 + 4 * i, &((i << 22) as u32 | 0x83).to_le_bytes());
        }
        let mut cpu = Cpu::with_features(crate::CpuFeatures { vmx: true });
        cpu.set_multiboot_entry(CODE as u32, 0, 0);
        cpu.set_control_registers(cr0::PE | cr0::NE | cr0::PG, 0x4000, cr4::PSE | cr4::VMXE, 0);
        vmx_setup(&mut cpu, &mut bus);
        cpu.gpr[1] = u64::from(VmcsField::GuestCr3.encoding());
        cpu.gpr[2] = 0x8765_4321;
        assert_eq!(cpu.mode, Mode::Protected);
        assert_eq!(cpu.run(&mut bus, 100), Ok(StopReason::Halted));
        assert_eq!(status(&cpu), 0);
        assert_eq!(cpu.gpr[3], 0x8765_4321);
        let (_, vmcs) = cpu.vmx.current.as_ref().unwrap();
        assert_eq!(vmcs.get(VmcsField::GuestCr3), 0x8765_4321);
    }

    // --- VMCALL, and what is not implemented ---------------------------------------------

    #[test]
    fn vmcall_in_vmx_root_operation_fails_with_error_1() {
        let (cpu, _) = run(&[&VMXON_RAX, &VMCALL], |_, _| {});
        assert_eq!(status(&cpu), rflags::CF);
        let (cpu, _) = run(&[&VMXON_RAX, &VMPTRLD_RBX, &VMCALL], |_, _| {});
        valid(&cpu, VmInstructionError::VmcallInVmxRoot);
        assert_eq!(fault(&[&VMCALL], |_| {}), Fault::ud());
    }

    #[test]
    fn vmlaunch_and_vmresume_basic_checks() {
        for code in [&VMLAUNCH[..], &VMRESUME, &INVEPT, &INVVPID] {
            // Outside VMX operation: #UD, as the SDM says.
            assert_eq!(fault(&[code], |_| {}), Fault::ud(), "{code:02x?}");
        }
        // Without a current VMCS: VMfailInvalid.
        let (cpu, _) = run(&[&VMXON_RAX, &VMLAUNCH], |_, _| {});
        assert_eq!(status(&cpu), rflags::CF);
        // A clear VMCS of zeros: VMRESUME fails with 5 before any check; VMLAUNCH gets to
        // the control checks and fails with 7.
        let (cpu, _) = run(&[&VMXON_RAX, &VMPTRLD_RBX, &VMRESUME], |_, _| {});
        valid(&cpu, VmInstructionError::VmresumeNonLaunchedVmcs);
        let (cpu, _) = run(&[&VMXON_RAX, &VMPTRLD_RBX, &VMLAUNCH], |_, _| {});
        valid(&cpu, VmInstructionError::EntryInvalidControlFields);
        assert!(
            cpu.last_vm_entry_failure().is_some(),
            "the failed rule is kept"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 200,
            ..proptest::prelude::ProptestConfig::default()
        })]
        /// Guest input never panics: random pointers, region contents, encodings and values
        /// through every root-operation instruction; each VMX instruction ends in VMsucceed,
        /// VMfailInvalid or VMfailValid with a field-access error.
        #[test]
        fn random_operands_and_regions_never_panic(
            pointers in proptest::prelude::any::<[u64; 2]>(),
            pick in 0u8..8,
            region in proptest::collection::vec(proptest::prelude::any::<u8>(), 64),
            encoding in proptest::prelude::any::<u64>(),
            value in proptest::prelude::any::<u64>(),
        ) {
            let (mut cpu, mut bus) = env(
                &[&VMXON_RAX, &VMPTRLD_RBX, &VMWRITE_RCX_RBX, &VMREAD_RBX_RCX, &VMCLEAR_RBX],
                |c, bus| {
                    // Mostly real regions, sometimes anything at all.
                    let chosen = |i: usize, good: u64| {
                        if pick & (1 << i) != 0 { pointers[i] } else { good }
                    };
                    bus.write_u64(PTR_AX, chosen(0, VMXON));
                    bus.write_u64(PTR_BX, chosen(1, VMCS_A));
                    bus.load(VMCS_A + 4, &region);
                    if pick == 7 {
                        bus.load(VMCS_A, &region[..4]);
                    }
                    c.gpr[1] = if pick & 4 != 0 { encoding } else { encoding & 0xffff };
                    c.gpr[2] = value;
                },
            );
            for _ in 0..5 {
                match cpu.run(&mut bus, 1) {
                    Ok(StopReason::BudgetExhausted) => {
                        let flags = status(&cpu);
                        proptest::prop_assert!(
                            flags == 0 || flags == rflags::CF || flags == rflags::ZF,
                            "{flags:#x}"
                        );
                    }
                    Ok(_) | Err(CpuError::Unsupported { .. }) => break,
                    Err(e) => proptest::prop_assert!(false, "{e:?}"),
                }
            }
        }
    }
}
