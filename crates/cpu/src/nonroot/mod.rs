//! VMX non-root operation and the transitions into and out of it (SDM Vol. 3C, 2023–2024
//! numbering): chapter 27 "VM Entries" ([`entry`]), chapter 28 "VM Exits" ([`exit`]), and
//! chapter 26 "VMX Non-Root Operation" ([`intercept`]: which instructions and events cause VM
//! exits, and how the others behave differently).
//!
//! The CPU runs the guest itself: VM entry loads the guest-state area into the registers and
//! sets `vmx.non_root`; from then on the ordinary interpreter runs the guest, and the places
//! where non-root operation differs ask [`intercept`] (instruction dispatch, event delivery,
//! the instruction boundary, the EPT walk). A VM exit is an `Exc::VmExit` value, concluded by
//! the run loop: [`exit`] saves guest state, records the exit information and loads host state,
//! and execution goes on at the host RIP in root operation.
//!
//! What VM entry loads and VM exit saves is kept in one table of segment fields
//! ([`SEGMENT_FIELDS`]), so that the two directions cannot disagree.
//!
//! [`native`] lets the program that owns the processor be the VMX root software (nestvisor's
//! native hypervisor): the same operations, with VM exits returning to the caller.

pub(crate) mod entry;
mod exit;
mod intercept;
pub(crate) mod native;

use x86::vmx::VmcsField as F;

use crate::state::Seg;

/// How many failed VM entries the CPU keeps for [`crate::Cpu::take_vm_entry_failures`].
pub(crate) const FAILURE_LOG: usize = 256;

/// The guest-state fields of one segment register: selector, base, limit, access rights.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentFields {
    pub selector: F,
    pub base: F,
    pub limit: F,
    pub access_rights: F,
}

/// The guest-state fields of ES, CS, SS, DS, FS, GS (in [`Seg`] order).
pub(crate) const SEGMENT_FIELDS: [(Seg, SegmentFields); 6] = [
    (
        Seg::Es,
        SegmentFields {
            selector: F::GuestEsSelector,
            base: F::GuestEsBase,
            limit: F::GuestEsLimit,
            access_rights: F::GuestEsAccessRights,
        },
    ),
    (
        Seg::Cs,
        SegmentFields {
            selector: F::GuestCsSelector,
            base: F::GuestCsBase,
            limit: F::GuestCsLimit,
            access_rights: F::GuestCsAccessRights,
        },
    ),
    (
        Seg::Ss,
        SegmentFields {
            selector: F::GuestSsSelector,
            base: F::GuestSsBase,
            limit: F::GuestSsLimit,
            access_rights: F::GuestSsAccessRights,
        },
    ),
    (
        Seg::Ds,
        SegmentFields {
            selector: F::GuestDsSelector,
            base: F::GuestDsBase,
            limit: F::GuestDsLimit,
            access_rights: F::GuestDsAccessRights,
        },
    ),
    (
        Seg::Fs,
        SegmentFields {
            selector: F::GuestFsSelector,
            base: F::GuestFsBase,
            limit: F::GuestFsLimit,
            access_rights: F::GuestFsAccessRights,
        },
    ),
    (
        Seg::Gs,
        SegmentFields {
            selector: F::GuestGsSelector,
            base: F::GuestGsBase,
            limit: F::GuestGsLimit,
            access_rights: F::GuestGsAccessRights,
        },
    ),
];

/// LDTR's guest-state fields.
pub(crate) const LDTR_FIELDS: SegmentFields = SegmentFields {
    selector: F::GuestLdtrSelector,
    base: F::GuestLdtrBase,
    limit: F::GuestLdtrLimit,
    access_rights: F::GuestLdtrAccessRights,
};

/// TR's guest-state fields.
pub(crate) const TR_FIELDS: SegmentFields = SegmentFields {
    selector: F::GuestTrSelector,
    base: F::GuestTrBase,
    limit: F::GuestTrLimit,
    access_rights: F::GuestTrAccessRights,
};

/// The guest state of non-root operation that has no register of its own in the CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct GuestExtra {
    /// IA32_DEBUGCTL as loaded by "load debug controls" (the model implements none of its
    /// features; the value is kept so that VM exits save what VM entry loaded).
    pub debugctl: u64,
    /// Blocking by NMI (or virtual-NMI blocking with "virtual NMIs").
    pub nmi_blocked: bool,
    /// The tick at which the VMX-preemption timer reaches zero, when it is active.
    pub preemption_deadline: Option<u64>,
    /// The event whose delivery is in progress through the guest IDT: the IDT-vectoring
    /// information (§28.2.4) and its error code, if a VM exit interrupts it.
    pub delivering: Option<(u32, Option<u32>)>,
    /// The VM-entry instruction length of an injected software event being delivered: an
    /// exit during its delivery reports it as the VM-exit instruction length (§28.2.4).
    pub injected_length: Option<u64>,
    /// Debug exceptions pending from VM entry (B3–B0 and BS, §27.7.3), delivered before the
    /// first guest instruction.
    pub pending_db: Option<u64>,
}

#[cfg(test)]
mod tests;

impl crate::Cpu {
    /// Blocking by STI or by MOV SS, as interruptibility-state bits (SDM Vol. 3C §25.4.2):
    /// the shadow pending for the next instruction, or, while an instruction executes, the
    /// one it began with.
    pub(crate) fn blocking_state(&self) -> u32 {
        use x86::vmx::controls::interruptibility as intr;
        if self.shadow {
            if self.mov_ss_shadow {
                intr::MOV_SS
            } else {
                intr::STI
            }
        } else {
            self.vmx.step_blocking
        }
    }

    /// Whether a maskable interrupt can end the HLT state: RFLAGS.IF, or in VMX non-root
    /// operation with "external-interrupt exiting", where an interrupt causes a VM exit
    /// whatever RFLAGS.IF says (SDM Vol. 3C §26.3.1.2). A board uses it to tell a wait from
    /// a hang.
    pub fn interrupts_can_wake(&self) -> bool {
        use x86::vmx::controls::pin_based;
        self.flags.get(x86::reg::rflags::IF)
            || (self.vmx.non_root
                && self.vmx.field(F::PinBasedControls) as u32
                    & pin_based::EXTERNAL_INTERRUPT_EXITING
                    != 0)
    }

    /// In VMX non-root operation with "external-interrupt exiting": an interrupt causes a VM
    /// exit whatever RFLAGS.IF says.
    pub(crate) fn interrupts_exit(&self) -> bool {
        use x86::vmx::controls::pin_based;
        self.vmx.non_root
            && self.vmx.field(F::PinBasedControls) as u32 & pin_based::EXTERNAL_INTERRUPT_EXITING
                != 0
    }

    /// The virtual time at which the processor itself leaves the HLT state, without an
    /// interrupt: when the VMX-preemption timer of non-root operation expires (§26.5.1). A
    /// board that skips idle time must not skip past it.
    pub fn own_deadline(&self) -> Option<crate::VirtualTime> {
        let tsc = self
            .vmx
            .extra
            .preemption_deadline
            .filter(|_| self.vmx.non_root)?;
        Some(crate::VirtualTime::from_ticks(
            tsc.div_ceil(crate::TSC_PER_TICK),
        ))
    }
}
