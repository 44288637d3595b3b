//! VM exits (SDM Vol. 3C chapter 28): recording the exit information (§28.2), saving guest
//! state (§28.3), the VM-exit MSR-store list (§28.4), loading host state (§28.5) and the
//! VM-exit MSR-load list (§28.6), and the VMX abort when host state cannot be loaded (§28.7).

use x86::reg::{cr0, cr4, efer, rflags};
use x86::vmx::controls::{ActivityState, exit, interruptibility as intr, pin_based};
use x86::vmx::{ExitReasonField, InterruptionInfo, VmcsField as F};

use super::{LDTR_FIELDS, SEGMENT_FIELDS, SegmentFields, TR_FIELDS};
use crate::Cpu;
use crate::bus::Bus;
use crate::error::CpuError;
use crate::fault::{Ex, Exc};
use crate::nonroot::entry::MsrListError;
use crate::state::{DescriptorTable, Seg, Segment, ar};
use crate::vmx::capabilities::MODEL;
use crate::vmx::exit::VmExit;
use crate::vmx::vmcs::{PhysMemory, Vmcs};

/// VMX-abort indicators (§28.7).
mod abort {
    /// A failure saving guest MSRs.
    pub const SAVE_GUEST_MSRS: u32 = 1;
    /// Host PDPTEs failed their checks.
    pub const HOST_PDPTES: u32 = 2;
    /// A failure loading host MSRs.
    pub const LOAD_HOST_MSRS: u32 = 4;
}

/// CR0 bits a VM exit does not change (§28.5.1): ET, CD, NW and the reserved bits.
const CR0_KEPT: u64 = cr0::ET | cr0::CD | cr0::NW | !0xe005_003f;

impl Cpu {
    /// Performs a VM exit (chapter 28) and goes on at the host RIP in root operation.
    pub(crate) fn vm_exit<B: Bus>(&mut self, bus: &mut B, exit: VmExit) -> Ex<()> {
        if !self.vmx.non_root || self.vmx.vmcs().is_none() {
            return Err(Exc::Error(Box::new(CpuError::Unsupported {
                rip: self.seg[Seg::Cs as usize].base.wrapping_add(self.rip),
                what: "a VM exit outside VMX non-root operation (model bug)",
            })));
        }
        self.record_exit(&exit);
        self.save_guest_state();
        let store = (
            self.vmx.field(F::VmExitMsrStoreAddress),
            self.vmx.field(F::VmExitMsrStoreCount),
        );
        self.vmx.non_root = false;
        if self.store_msr_list(bus, store.0, store.1).is_err() {
            return self.vmx_abort(bus, abort::SAVE_GUEST_MSRS);
        }
        self.load_host_state(bus)
    }

    /// §28.2: the exit reason, qualification, addresses, interruption and IDT-vectoring
    /// information, instruction length and information; the valid bit of the VM-entry
    /// interruption-information field is cleared.
    fn record_exit(&mut self, exit: &VmExit) {
        let delivering = self.vmx.extra.delivering.take();
        let injected_length = self.vmx.extra.injected_length.take();
        let len = match injected_length {
            Some(len) if delivering.is_some() => len,
            _ => self.next_rip.wrapping_sub(self.rip) & 0xf,
        };
        let Some(v) = self.vmx.vmcs_mut() else {
            return;
        };
        v.set(
            F::ExitReason,
            u64::from(ExitReasonField::new(exit.reason).0),
        );
        v.set(F::ExitQualification, exit.qualification);
        if let Some(gla) = exit.guest_linear {
            v.set(F::GuestLinearAddress, gla);
        }
        if let Some(gpa) = exit.guest_physical {
            v.set(F::GuestPhysicalAddress, gpa);
        }
        match exit.interruption {
            Some(i) => {
                v.set(F::VmExitInterruptionInfo, u64::from(i.info));
                if let Some(code) = i.error_code {
                    v.set(F::VmExitInterruptionErrorCode, u64::from(code));
                }
            }
            None => v.set(F::VmExitInterruptionInfo, 0),
        }
        match delivering {
            Some((info, code)) => {
                v.set(
                    F::IdtVectoringInfo,
                    u64::from(info | InterruptionInfo::VALID),
                );
                if let Some(code) = code {
                    v.set(F::IdtVectoringErrorCode, u64::from(code));
                }
            }
            None => v.set(F::IdtVectoringInfo, 0),
        }
        v.set(F::VmExitInstructionLength, len);
        if let Some(info) = exit.instruction_info {
            v.set(F::VmExitInstructionInfo, u64::from(info));
        }
        let entry_info = v.get(F::VmEntryInterruptionInfo);
        v.set(
            F::VmEntryInterruptionInfo,
            entry_info & !u64::from(InterruptionInfo::VALID),
        );
    }

    /// §28.3: the guest-state area from the registers.
    fn save_guest_state(&mut self) {
        let now_tsc = self.now().tsc();
        let rate = u32::from(MODEL.caps.misc.preemption_timer_rate());
        let extra = self.vmx.extra;
        let halted = self.halted;
        let blocking = self.blocking_state();
        let pdptes = self.pdptes;
        let pae = self.cr0 & cr0::PG != 0 && self.cr4 & cr4::PAE != 0 && self.efer & efer::LMA == 0;
        let ept = self.vmx.ept.is_some();
        let (cr0, cr3, cr4, dr7) = (self.cr0, self.cr3, self.cr4, self.dr[7]);
        let (msr, efer, flags) = (self.msr.clone(), self.efer, self.flags.bits());
        let (segs, ldtr, tr, gdtr, idtr) = (self.seg, self.ldtr, self.tr, self.gdtr, self.idtr);
        let (rsp, rip) = (self.gpr[crate::Gpr::Rsp as usize], self.rip);
        let Some(v) = self.vmx.vmcs_mut() else {
            return;
        };
        let exit_ctls = v.get(F::PrimaryVmExitControls) as u32;
        v.set(F::GuestCr0, cr0);
        v.set(F::GuestCr3, cr3);
        v.set(F::GuestCr4, cr4);
        if exit_ctls & exit::SAVE_DEBUG_CONTROLS != 0 {
            v.set(F::GuestDr7, dr7);
            v.set(F::GuestIa32Debugctl, extra.debugctl);
        }
        v.set(F::GuestIa32SysenterCs, msr.sysenter_cs);
        v.set(F::GuestIa32SysenterEsp, msr.sysenter_esp);
        v.set(F::GuestIa32SysenterEip, msr.sysenter_eip);
        if exit_ctls & exit::SAVE_IA32_PAT != 0 {
            v.set(F::GuestIa32Pat, msr.pat);
        }
        if exit_ctls & exit::SAVE_IA32_EFER != 0 {
            v.set(F::GuestIa32Efer, efer);
        }
        for (s, f) in SEGMENT_FIELDS {
            put_segment(v, f, segs[s as usize]);
        }
        put_segment(v, LDTR_FIELDS, ldtr);
        put_segment(v, TR_FIELDS, tr);
        v.set(F::GuestGdtrBase, gdtr.base);
        v.set(F::GuestGdtrLimit, u64::from(gdtr.limit));
        v.set(F::GuestIdtrBase, idtr.base);
        v.set(F::GuestIdtrLimit, u64::from(idtr.limit));
        v.set(F::GuestRsp, rsp);
        v.set(F::GuestRip, rip);
        v.set(F::GuestRflags, flags);
        // §28.3.4: activity, interruptibility, pending debug exceptions, the timer.
        let activity = if halted {
            ActivityState::Hlt
        } else {
            ActivityState::Active
        };
        v.set(F::GuestActivityState, activity as u64);
        let mut interruptibility = blocking;
        if extra.nmi_blocked {
            interruptibility |= intr::NMI;
        }
        v.set(F::GuestInterruptibilityState, u64::from(interruptibility));
        v.set(
            F::GuestPendingDebugExceptions,
            extra.pending_db.unwrap_or(0),
        );
        let pin = v.get(F::PinBasedControls) as u32;
        if pin & pin_based::ACTIVATE_PREEMPTION_TIMER != 0
            && exit_ctls & exit::SAVE_PREEMPTION_TIMER != 0
        {
            let left = extra
                .preemption_deadline
                .map_or(0, |d| (d >> rate).saturating_sub(now_tsc >> rate));
            v.set(F::VmxPreemptionTimerValue, left);
        }
        if pae && ept {
            let entries = pdptes.map_or([0; 4], |p| p.entries());
            for (f, e) in [
                F::GuestPdpte0,
                F::GuestPdpte1,
                F::GuestPdpte2,
                F::GuestPdpte3,
            ]
            .into_iter()
            .zip(entries)
            {
                v.set(f, e);
            }
        }
    }

    /// §28.4: each entry of the MSR-store list receives the MSR's value (RDMSR at CPL 0). An
    /// entry whose head is not RAM reads as all ones, reserved bits set: the store fails.
    fn store_msr_list<B: Bus>(&mut self, bus: &mut B, addr: u64, count: u64) -> Result<(), ()> {
        for i in 0..count {
            if i >= super::entry::MSR_LIST_MAX {
                return Err(());
            }
            let at = x86::Hpa::new(addr.wrapping_add(i * 16));
            let mut head = [0u8; 8];
            self.bus_memory(bus).read(at, &mut head)?;
            let head = u64::from_le_bytes(head);
            let index = head as u32;
            if head >> 32 != 0 || index >> 8 == 0x8 {
                return Err(());
            }
            let value = self.rdmsr_cpl0(bus, index).map_err(|_| ())?;
            let data_at = x86::Hpa::new(addr.wrapping_add(i * 16 + 8));
            // A store outside RAM goes nowhere, as a bus write there would (the head read
            // above has already refused what reads as all ones).
            let _ = self.bus_memory(bus).write(data_at, &value.to_le_bytes());
        }
        Ok(())
    }

    /// §28.5: host state, then the VM-exit MSR-load list (§28.6). The VMX-specific state of
    /// non-root operation ends here.
    pub(crate) fn load_host_state<B: Bus>(&mut self, bus: &mut B) -> Ex<()> {
        let Some(v) = self.vmx.vmcs().cloned() else {
            return Ok(());
        };
        let exit_ctls = v.get(F::PrimaryVmExitControls) as u32;
        let host64 = exit_ctls & exit::HOST_ADDRESS_SPACE_SIZE != 0;
        // §28.5.1: control registers, debug registers, MSRs.
        self.cr0 = (v.get(F::HostCr0) & !CR0_KEPT) | (self.cr0 & CR0_KEPT);
        self.cr3 = v.get(F::HostCr3);
        self.cr4 = v.get(F::HostCr4);
        if host64 {
            self.cr4 |= cr4::PAE;
        }
        self.dr[7] = 0x400;
        self.msr.sysenter_cs = v.get(F::HostIa32SysenterCs) & 0xffff_ffff;
        self.msr.sysenter_esp = v.get(F::HostIa32SysenterEsp);
        self.msr.sysenter_eip = v.get(F::HostIa32SysenterEip);
        if exit_ctls & exit::LOAD_IA32_PAT != 0 {
            self.msr.pat = v.get(F::HostIa32Pat);
        }
        if exit_ctls & exit::LOAD_IA32_EFER != 0 {
            self.efer = v.get(F::HostIa32Efer);
        } else if host64 {
            self.efer |= efer::LMA | efer::LME;
        } else {
            self.efer &= !(efer::LMA | efer::LME);
        }
        // §28.5.2: segment and descriptor-table registers.
        let data = ar::ACCESSED | ar::RW | ar::S | ar::P | ar::DB | ar::G;
        let code = ar::ACCESSED | ar::RW | ar::CODE | ar::S | ar::P | ar::G;
        let code = if host64 { code | ar::L } else { code | ar::DB };
        let host_selectors = [
            (Seg::Es, F::HostEsSelector, None),
            (Seg::Cs, F::HostCsSelector, None),
            (Seg::Ss, F::HostSsSelector, None),
            (Seg::Ds, F::HostDsSelector, None),
            (Seg::Fs, F::HostFsSelector, Some(F::HostFsBase)),
            (Seg::Gs, F::HostGsSelector, Some(F::HostGsBase)),
        ];
        for (s, sel, base) in host_selectors {
            let selector = v.get(sel) as u16;
            let mut a = if s == Seg::Cs { code } else { data };
            if s != Seg::Cs && selector & !3 == 0 {
                a |= ar::UNUSABLE;
            }
            self.seg[s as usize] = Segment {
                selector,
                base: base.map_or(0, |b| v.get(b)),
                limit: 0xffff_ffff,
                ar: a,
            };
        }
        self.tr = Segment {
            selector: v.get(F::HostTrSelector) as u16,
            base: v.get(F::HostTrBase),
            limit: 0x67,
            ar: ar::P | 0xb,
        };
        self.ldtr = Segment {
            selector: 0,
            base: 0,
            limit: 0,
            ar: ar::UNUSABLE,
        };
        self.gdtr = DescriptorTable {
            base: v.get(F::HostGdtrBase),
            limit: 0xffff,
        };
        self.idtr = DescriptorTable {
            base: v.get(F::HostIdtrBase),
            limit: 0xffff,
        };
        // §28.5.3: RIP, RSP, RFLAGS.
        self.rip = v.get(F::HostRip);
        self.next_rip = self.rip;
        self.gpr[crate::Gpr::Rsp as usize] = v.get(F::HostRsp);
        self.flags = crate::flags::Flags::new(rflags::FIXED1);
        self.cpl = 0;
        self.halted = false;
        self.shadow = false;
        self.vmx.step_blocking = 0;
        self.mov_ss_shadow = false;
        self.vmx.extra = super::GuestExtra::default();
        self.update_mode();
        self.vmx.non_root = false;
        self.vmx.ept = None;
        self.vmx.vpid = 0;
        self.tlb_vmx_transition();
        self.fetch.clear();
        // A PAE host (32-bit hypervisor) loads its PDPTEs; bad ones abort (§28.5.4).
        self.pdptes = None;
        if !host64 && self.cr0 & cr0::PG != 0 && self.cr4 & cr4::PAE != 0 {
            match self.load_pdptes(bus) {
                Ok(()) => {}
                Err(Exc::Fault(_)) => return self.vmx_abort(bus, abort::HOST_PDPTES),
                Err(e) => return Err(e),
            }
        }
        match self.load_msr_list(
            bus,
            v.get(F::VmExitMsrLoadAddress),
            v.get(F::VmExitMsrLoadCount),
        ) {
            Ok(()) => Ok(()),
            Err(MsrListError::Refused(_)) => self.vmx_abort(bus, abort::LOAD_HOST_MSRS),
        }
    }

    /// §28.7: a VMX abort writes its indicator into the VMCS region and shuts the processor
    /// down.
    fn vmx_abort<B: Bus>(&mut self, bus: &mut B, indicator: u32) -> Ex<()> {
        self.vmx.non_root = false;
        let pointer = self.vmx.current_pointer();
        if let Some(v) = self.vmx.vmcs_mut() {
            v.set_abort_indicator(indicator);
        }
        let mut region = [0u8; 4];
        region.copy_from_slice(&indicator.to_le_bytes());
        let at = x86::Hpa::new(pointer.wrapping_add(crate::vmx::vmcs::ABORT_OFFSET));
        self.bus_memory(bus)
            .write(at, &region)
            .map_err(|()| self.region_not_ram())?;
        Err(Exc::Shutdown)
    }
}

/// Writes a segment register into its guest-state fields.
fn put_segment(v: &mut Vmcs, f: SegmentFields, s: Segment) {
    v.set(f.selector, u64::from(s.selector));
    v.set(f.base, s.base);
    v.set(f.limit, u64::from(s.limit));
    v.set(f.access_rights, u64::from(s.ar));
}
