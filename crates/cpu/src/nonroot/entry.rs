//! VM entry (SDM Vol. 3C chapter 27): VMLAUNCH and VMRESUME in root operation.
//!
//! In the SDM's order: the basic checks of §27.1 (VMfailInvalid, errors 4, 5 and 26), the
//! checks on controls and host state of §27.2 (VMfailValid 7 or 8) and on guest state of
//! §27.3.1 (a VM-entry failure exit, reason 33), all done by [`crate::vmx::checks`]; then
//! loading the guest state (§27.3.2), the VM-entry MSR-load list (§27.4; a failure is exit
//! reason 34 with the entry's 1-based index as qualification), entering non-root operation
//! with the VMX-preemption timer armed (§26.5.1), and event injection (§27.6) through the
//! guest's IDT. The non-register state of §27.3.3 follows: activity state HLT, blocking by
//! STI, MOV SS and NMI. Pending debug exceptions are loaded as the guest's pending #DB
//! (§27.7.3): B3–B0 and BS deliver a #DB before the first guest instruction, unless an
//! event is injected (then they are discarded, as the SDM says for injected events other
//! than #DB traps).
//!
//! A failed check is also kept ([`Cpu::last_vm_entry_failure`]) so that a hypervisor author
//! can be told which rule failed, with the field and its value (`nestvisor run
//! --explain-vmentry`).

use x86::reg::{cr0, cr4, efer, rflags};
use x86::vmx::controls::{
    ActivityState, entry, interruptibility as intr, pending_debug, pin_based, secondary_proc,
};
use x86::vmx::{
    ExitReason, InterruptionInfo, InterruptionType, VmInstructionError, VmcsField as F,
};
use x86::{Hpa, paging::Eptp};

use super::{GuestExtra, LDTR_FIELDS, SEGMENT_FIELDS, SegmentFields, TR_FIELDS};
use crate::Cpu;
use crate::bus::{Bus, MsrAccess};
use crate::fault::{Class, Ex, Exc, Fault};
use crate::interrupt::Source;
use crate::ops::vmx::{BusMemory, VmFail, VmResult};
use crate::state::{DescriptorTable, Seg, Segment};
use crate::vmx::capabilities::MODEL;
use crate::vmx::checks::{self, EntryCheckFailure, EntryContext, Outcome};
use crate::vmx::vmcs::{LaunchState, PhysMemory, Vmcs};

/// The most entries a VM-entry or VM-exit MSR list may have: 512 × (IA32_VMX_MISC[27:25] + 1)
/// (SDM Vol. 3D §A.6). A longer list fails at the first entry past the limit.
pub(crate) const MSR_LIST_MAX: u64 = 512;

/// IA32_SMM_MONITOR_CTL: writable only in SMM, so never from an MSR-load list.
const IA32_SMM_MONITOR_CTL: u32 = 0x9b;

/// An entry of an MSR-load list that cannot be loaded (§27.4, §28.6), by 0-based index: one
/// the SDM refuses, or one outside RAM (what the processor would read there, all ones, sets
/// reserved bits 63:32 of the entry, which the SDM refuses too).
pub(crate) enum MsrListError {
    /// The entry at this index is refused.
    Refused(u64),
}

impl Cpu {
    /// VMLAUNCH (`launch`) or VMRESUME in VMX root operation (§31.3 and chapter 27).
    pub(crate) fn vm_entry<B: Bus>(&mut self, bus: &mut B, launch: bool) -> Ex<()> {
        self.vmx_root_checks()?;
        // VMfailValid(26) needs a current VMCS; without one the entry fails invalid below.
        if self.vmx.step_blocking & intr::MOV_SS != 0 && self.vmx.vmcs().is_some() {
            self.vm_fail(VmInstructionError::EntryEventsBlockedByMovSs);
            return Ok(());
        }
        match self.vmx_op_enter(bus, launch)? {
            Ok(()) => Ok(()),
            Err(fail) => {
                self.vm_status::<()>(Err(fail));
                Ok(())
            }
        }
    }

    /// The VM entry of VMLAUNCH or VMRESUME after the instruction's own checks: `Ok(Ok(()))`
    /// when the processor entered the guest, or failed the entry with a VM-entry failure
    /// exit (reason 33 or 34 with bit 31, host state loaded); `Ok(Err(..))` for VMfail.
    pub(crate) fn vmx_op_enter<B: Bus>(&mut self, bus: &mut B, launch: bool) -> Ex<VmResult<()>> {
        let pointer = self.vmx.current_pointer();
        let Some(vmcs) = self.vmx.vmcs() else {
            return Ok(Err(VmFail::Invalid));
        };
        // A shadow VMCS cannot be entered (§31.3: VMfailInvalid).
        if vmcs.is_shadow() {
            return Ok(Err(VmFail::Invalid));
        }
        match (launch, vmcs.launch_state()) {
            (true, LaunchState::Launched) => {
                return Ok(Err(VmFail::Valid(VmInstructionError::VmlaunchNonClearVmcs)));
            }
            (false, LaunchState::Clear) => {
                return Ok(Err(VmFail::Valid(
                    VmInstructionError::VmresumeNonLaunchedVmcs,
                )));
            }
            _ => {}
        }
        let ctx = EntryContext {
            ia32e_mode: self.efer & efer::LMA != 0,
            current_vmcs: Hpa::new(pointer),
        };
        let checked = {
            let Some((_, vmcs)) = self.vmx.current.as_ref() else {
                return Ok(Err(VmFail::Invalid));
            };
            let mut mem = BusMemory {
                bus: &mut *bus,
                icache: &mut self.icache,
            };
            checks::check_vm_entry(vmcs, &MODEL, &ctx, &mut mem)
        };
        if let Err(failure) = checked {
            self.vmx.last_entry_failure = Some(failure);
            if self.vmx.entry_failures.len() < super::FAILURE_LOG {
                let rip = self.seg[Seg::Cs as usize].base.wrapping_add(self.rip);
                self.vmx.entry_failures.push((rip, failure));
            } else {
                self.vmx.entry_failures_dropped += 1;
            }
            return match failure.outcome() {
                Outcome::VmFailValid(e) => Ok(Err(VmFail::Valid(e))),
                Outcome::InvalidGuestState(q) => self
                    .entry_failure(bus, ExitReason::EntryFailureGuestState, q as u64)
                    .map(Ok),
            };
        }
        self.vmx.last_entry_failure = None;
        let Some(vmcs) = self.vmx.vmcs().cloned() else {
            return Ok(Err(VmFail::Invalid));
        };
        self.load_guest_state(&vmcs);
        match self.load_msr_list(
            bus,
            vmcs.get(F::VmEntryMsrLoadAddress),
            vmcs.get(F::VmEntryMsrLoadCount),
        ) {
            Ok(()) => {}
            Err(MsrListError::Refused(i)) => {
                return self
                    .entry_failure(bus, ExitReason::EntryFailureMsrLoading, i + 1)
                    .map(Ok);
            }
        }
        if launch && let Some(v) = self.vmx.vmcs_mut() {
            v.set_launch_state(LaunchState::Launched);
        }
        self.vmx.non_root = true;
        self.tlb_vmx_transition();
        self.fetch.clear();
        self.arm_preemption_timer(&vmcs);
        self.next_rip = self.rip;
        self.inject_event(bus, &vmcs).map(Ok)
    }

    /// A VM-entry failure after the guest-state checks or during the MSR-load list (§27.8):
    /// the exit reason with bit 31 set and the qualification are recorded, no guest state is
    /// saved, and host state is loaded as for a VM exit.
    fn entry_failure<B: Bus>(&mut self, bus: &mut B, reason: ExitReason, q: u64) -> Ex<()> {
        if let Some(v) = self.vmx.vmcs_mut() {
            v.set(
                F::ExitReason,
                u64::from(x86::vmx::ExitReasonField::new(reason).with(1 << 31).0),
            );
            v.set(F::ExitQualification, q);
            let info = v.get(F::VmEntryInterruptionInfo);
            v.set(
                F::VmEntryInterruptionInfo,
                info & !u64::from(InterruptionInfo::VALID),
            );
        }
        self.vmx.non_root = false;
        self.load_host_state(bus)
    }

    /// §27.3.2: control registers, debug registers and MSRs, segment and descriptor-table
    /// registers, RIP, RSP and RFLAGS, the PDPTEs; §27.3.3 the non-register state.
    fn load_guest_state(&mut self, v: &Vmcs) {
        let entry_ctls = v.get(F::VmEntryControls) as u32;
        let secondary = self.vmx.secondary_controls();
        self.cr0 = v.get(F::GuestCr0) | cr0::ET;
        self.cr3 = v.get(F::GuestCr3);
        self.cr4 = v.get(F::GuestCr4);
        let mut extra = GuestExtra::default();
        if entry_ctls & entry::LOAD_DEBUG_CONTROLS != 0 {
            self.dr[7] = v.get(F::GuestDr7);
            extra.debugctl = v.get(F::GuestIa32Debugctl);
        }
        self.msr.sysenter_cs = v.get(F::GuestIa32SysenterCs) & 0xffff_ffff;
        self.msr.sysenter_esp = v.get(F::GuestIa32SysenterEsp);
        self.msr.sysenter_eip = v.get(F::GuestIa32SysenterEip);
        if entry_ctls & entry::LOAD_IA32_EFER != 0 {
            self.efer = v.get(F::GuestIa32Efer);
        } else if entry_ctls & entry::IA32E_MODE_GUEST != 0 {
            self.efer |= efer::LMA | efer::LME;
        } else {
            self.efer &= !(efer::LMA | efer::LME);
        }
        if entry_ctls & entry::LOAD_IA32_PAT != 0 {
            self.msr.pat = v.get(F::GuestIa32Pat);
        }
        for (s, f) in SEGMENT_FIELDS {
            self.seg[s as usize] = segment(v, f);
        }
        self.ldtr = segment(v, LDTR_FIELDS);
        self.tr = segment(v, TR_FIELDS);
        self.gdtr = DescriptorTable {
            base: v.get(F::GuestGdtrBase),
            limit: v.get(F::GuestGdtrLimit) as u16,
        };
        self.idtr = DescriptorTable {
            base: v.get(F::GuestIdtrBase),
            limit: v.get(F::GuestIdtrLimit) as u16,
        };
        self.gpr[crate::Gpr::Rsp as usize] = v.get(F::GuestRsp);
        self.rip = v.get(F::GuestRip);
        self.flags =
            crate::flags::Flags::new((v.get(F::GuestRflags) & rflags::DEFINED) | rflags::FIXED1);
        // The CPL is SS.DPL (§27.3.2.2).
        self.cpl = self.seg[Seg::Ss as usize].dpl();
        self.update_mode();
        // PAE paging: the PDPTEs come from the VMCS with EPT, from guest CR3 without (the
        // checks of §27.3.1.6 have validated them).
        self.pdptes = None;
        let pae = self.cr0 & cr0::PG != 0 && self.cr4 & cr4::PAE != 0 && self.efer & efer::LMA == 0;
        let ept = secondary & secondary_proc::ENABLE_EPT != 0;
        if pae && ept {
            let entries = [
                F::GuestPdpte0,
                F::GuestPdpte1,
                F::GuestPdpte2,
                F::GuestPdpte3,
            ]
            .map(|f| v.get(f));
            self.pdptes = paging::Pdptes::new(entries, MODEL.maxphyaddr).ok();
        }
        // §27.3.3: activity and interruptibility state.
        let interruptibility = v.get(F::GuestInterruptibilityState) as u32;
        self.shadow = interruptibility & (intr::STI | intr::MOV_SS) != 0;
        self.mov_ss_shadow = interruptibility & intr::MOV_SS != 0;
        extra.nmi_blocked = interruptibility & intr::NMI != 0;
        self.halted = v.get(F::GuestActivityState) == ActivityState::Hlt as u64;
        let pending = v.get(F::GuestPendingDebugExceptions);
        if pending & (pending_debug::B0_B3 | pending_debug::BS) != 0 {
            extra.pending_db = Some(pending & (pending_debug::B0_B3 | pending_debug::BS));
        }
        self.vmx.extra = extra;
        // EPT and VPID (§29.1, §29.3) and the TLB's view of the transition (§29.4.3.3).
        self.vmx.ept = ept.then(|| Eptp::new(v.get(F::EptPointer)));
        self.vmx.vpid = if secondary & secondary_proc::ENABLE_VPID != 0 {
            v.get(F::Vpid) as u16
        } else {
            0
        };
    }

    /// §26.5.1: the VMX-preemption timer counts down by one each time bit 5 of the TSC
    /// changes (IA32_VMX_MISC[4:0] = 5); a zero value exits before the first instruction.
    fn arm_preemption_timer(&mut self, v: &Vmcs) {
        let pin = v.get(F::PinBasedControls) as u32;
        self.vmx.extra.preemption_deadline = (pin & pin_based::ACTIVATE_PREEMPTION_TIMER != 0)
            .then(|| {
                let rate = u32::from(MODEL.caps.misc.preemption_timer_rate());
                let value = v.get(F::VmxPreemptionTimerValue) & 0xffff_ffff;
                let start = self.now().tsc() >> rate;
                start.saturating_add(value) << rate
            });
    }

    /// Loads the MSR list of `count` 16-byte entries at physical `addr` (§27.4 on entry,
    /// §28.6 on exit): each entry as WRMSR at CPL 0 would, except for the MSRs the SDM
    /// excludes (FS/GS base, x2APIC MSRs, SMM-only MSRs) and entries with reserved bits.
    pub(crate) fn load_msr_list<B: Bus>(
        &mut self,
        bus: &mut B,
        addr: u64,
        count: u64,
    ) -> Result<(), MsrListError> {
        for i in 0..count {
            if i >= MSR_LIST_MAX {
                return Err(MsrListError::Refused(i));
            }
            let mut raw = [0u8; 16];
            let at = Hpa::new(addr.wrapping_add(i * 16));
            self.bus_memory(bus)
                .read(at, &mut raw)
                .map_err(|()| MsrListError::Refused(i))?;
            let head = u64::from_le_bytes(raw[..8].try_into().unwrap_or_default());
            let data = u64::from_le_bytes(raw[8..].try_into().unwrap_or_default());
            let index = head as u32;
            let refused = head >> 32 != 0
                || matches!(index, 0xc000_0100 | 0xc000_0101)
                || index >> 8 == 0x8
                || index == IA32_SMM_MONITOR_CTL
                || self.wrmsr_cpl0(bus, index, data).is_err();
            if refused {
                return Err(MsrListError::Refused(i));
            }
        }
        Ok(())
    }

    /// WRMSR at CPL 0 (the board's MSRs first, then the CPU's).
    pub(crate) fn wrmsr_cpl0<B: Bus>(&mut self, bus: &mut B, index: u32, v: u64) -> Ex<()> {
        let now = self.now();
        self.touched_device = true;
        match bus.wrmsr(index, v, now) {
            MsrAccess::Done(_) => Ok(()),
            MsrAccess::Fault => Err(Fault::gp(0).into()),
            MsrAccess::NotMine => self.write_msr(index, v).map_err(Exc::from),
        }
    }

    /// RDMSR at CPL 0 (the board's MSRs first, then the CPU's).
    pub(crate) fn rdmsr_cpl0<B: Bus>(&mut self, bus: &mut B, index: u32) -> Ex<u64> {
        let now = self.now();
        self.touched_device = true;
        match bus.rdmsr(index, now) {
            MsrAccess::Done(v) => Ok(v),
            MsrAccess::Fault => Err(Fault::gp(0).into()),
            MsrAccess::NotMine => self.read_msr(index).map_err(Exc::from),
        }
    }

    /// §27.6: the event of the VM-entry interruption-information field, delivered through
    /// the guest IDT after the guest state is loaded, as if it had occurred then. Faults
    /// during its delivery follow the guest's rules (and may cause VM exits, which record the
    /// injected event as IDT-vectoring information). Without an injected event, pending debug
    /// exceptions are delivered instead.
    fn inject_event<B: Bus>(&mut self, bus: &mut B, v: &Vmcs) -> Ex<()> {
        let info = InterruptionInfo(v.get(F::VmEntryInterruptionInfo) as u32);
        if info.0 & InterruptionInfo::VALID == 0 {
            if let Some(pending) = self.vmx.extra.pending_db.take() {
                self.dr[6] = (self.dr[6] & !0x400f) | pending | 0xffff_0ff0;
                return Err(Fault::new(crate::fault::vector::DB).into());
            }
            return Ok(());
        }
        self.vmx.extra.pending_db = None;
        self.halted = false;
        let error = info
            .error_code_valid()
            .then(|| v.get(F::VmEntryExceptionErrorCode) as u32);
        let len = v.get(F::VmEntryInstructionLength);
        let vector = info.vector();
        let (source, ret) = match info.kind() {
            InterruptionType::SoftwareInterrupt | InterruptionType::SoftwareException => {
                (Source::Software, self.rip.wrapping_add(len))
            }
            InterruptionType::PrivilegedSoftwareException => {
                (Source::Icebp, self.rip.wrapping_add(len))
            }
            InterruptionType::Nmi => {
                self.vmx.extra.nmi_blocked = true;
                (Source::Hardware, self.rip)
            }
            _ => (Source::Hardware, self.rip),
        };
        // The IDT-vectoring information of an exit during this delivery is the injected
        // event itself (§28.2.4), with its error code.
        self.vmx.extra.delivering = Some((info.0 & !InterruptionInfo::NMI_UNBLOCKING, error));
        self.vmx.extra.injected_length = info.kind().is_software().then_some(len);
        // Injecting #PF does not load CR2: the hypervisor has set it (§27.6.1.2).
        match self.deliver_event(bus, vector, error, source, ret) {
            Ok(()) => {
                self.vmx.extra.delivering = None;
                self.vmx.extra.injected_length = None;
                self.retired += 1;
                // VMLAUNCH/VMRESUME completes at the handler, not after the instruction.
                self.next_rip = self.rip;
                Ok(())
            }
            // A fault while delivering an injected hardware exception combines with it by the
            // double-fault rules (§27.6.1.1); after any other event it is delivered serially.
            // The nested exception meets the exception bitmap first, as a fault during the
            // injected event's delivery (§27.6.1.2, §28.2.4).
            Err(Exc::Fault(second))
                if let Some(exit) =
                    self.exception_exit(&second, InterruptionType::HardwareException) =>
            {
                Err(exit)
            }
            Err(Exc::Fault(second)) if info.kind() == InterruptionType::HardwareException => {
                self.vmx.extra.delivering = None;
                let first = Fault {
                    vector,
                    error_code: error,
                    address: 0,
                };
                Err(match (first.class(), second.class()) {
                    (Class::DoubleFault, Class::Contributory | Class::PageFault) => Exc::Shutdown,
                    (Class::Contributory, Class::Contributory)
                    | (Class::PageFault, Class::Contributory | Class::PageFault) => {
                        Fault::with_code(crate::fault::vector::DF, 0).into()
                    }
                    _ => second.into(),
                })
            }
            Err(e) => Err(e),
        }
    }
}

/// A segment register from its guest-state fields.
fn segment(v: &Vmcs, f: SegmentFields) -> Segment {
    Segment {
        selector: v.get(f.selector) as u16,
        base: v.get(f.base),
        limit: v.get(f.limit) as u32,
        ar: v.get(f.access_rights) as u32 & 0x1_f0ff,
    }
}

impl Cpu {
    /// The VM-entry check that failed at the last VMLAUNCH or VMRESUME, if it failed a check
    /// (SDM rule, field, value).
    pub fn last_vm_entry_failure(&self) -> Option<EntryCheckFailure> {
        self.vmx.last_entry_failure
    }

    /// The failed VM-entry checks since the last call, each with the linear address of the
    /// VMLAUNCH or VMRESUME (what `nestvisor run --explain-vmentry` prints), and how many
    /// more failed than the log keeps.
    pub fn take_vm_entry_failures(&mut self) -> (Vec<(u64, EntryCheckFailure)>, u64) {
        (
            core::mem::take(&mut self.vmx.entry_failures),
            core::mem::take(&mut self.vmx.entry_failures_dropped),
        )
    }
}
