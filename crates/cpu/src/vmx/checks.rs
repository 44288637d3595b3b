//! The VM-entry checks of SDM Vol. 3C chapter 27 ("VM Entries"), as pure functions over a
//! [`Vmcs`] and the modeled processor ([`VmxModel`]):
//!
//! - §27.2.1 checks on the VMX controls: §27.2.1.1 VM-execution, §27.2.1.2 VM-exit and
//!   §27.2.1.3 VM-entry control fields (with event injection);
//! - §27.2.2 checks on host control registers and MSRs, §27.2.3 on host segment and
//!   descriptor-table registers, §27.2.4 related to address-space size;
//! - §27.3.1 checks on the guest-state area: §27.3.1.1 control registers, debug registers and
//!   MSRs, §27.3.1.2 segment registers, §27.3.1.3 descriptor-table registers, §27.3.1.4 RIP and
//!   RFLAGS, §27.3.1.5 non-register state (activity, interruptibility, pending debug
//!   exceptions, VMCS link pointer), §27.3.1.6 PDPTEs.
//!
//! A failure names its [`Rule`] (section and short text), the field and its value, and the
//! architectural outcome ([`Outcome`]): VMfailValid with error 7 (controls) or 8 (host state)
//! per §27.2, or a VM-entry failure with basic exit reason 33 and bit 31 set, with exit
//! qualification 0, 2 (PDPTEs), 3 (NMI injection with blocking by STI) or 4 (VMCS link
//! pointer), per §27.7 ("VM-Entry Failures During or After Loading Guest State"). The SDM
//! lets the checks within a group run in any order; these run in the SDM's order, controls,
//! then host state, then guest state, so the first failure reported is the one a reader finds
//! first.
//!
//! Section numbers are those of the 2023–2024 SDM editions, as everywhere in nestvisor
//! (`docs/architecture.md`); older editions, and issue 5, number "VM Entries" chapter 26 with
//! the same subsections. Rules for
//! controls the model does not advertise (TPR shadow, APIC virtualization, posted interrupts,
//! PML, #VE, SMM) are checked too, so that a richer [`VmxModel`] gets them right; with
//! [`super::capabilities::MODEL`] the allowed-1 check rejects those controls first.
//!
//! The VMCS is guest-controlled: nothing here panics, overflows or reads memory other than
//! the 4 bytes at the VMCS link pointer and, without EPT, the 32 bytes of PDPTEs at guest CR3.

use core::fmt;

use paging::{Ept, EptCaps, InvalidEptp, Pdptes};
use x86::addr::phys_mask;
use x86::paging::Eptp;
use x86::reg::{cr0, cr4, efer, rflags};
use x86::segment::AccessRights;
use x86::vmx::caps::{AllowedControls64, ControlViolation, VmFuncCap};
use x86::vmx::controls::{
    ActivityState, entry, exit, interruptibility as intr, pending_debug, pin_based, primary_proc,
    secondary_proc,
};
use x86::vmx::exit::EntryFailureQualification;
use x86::vmx::{
    AllowedControls, ExitReason, ExitReasonField, InterruptionInfo, InterruptionType,
    VmInstructionError, VmcsField as F,
};
use x86::{Gpa, Gva, Hpa};

use super::capabilities::{DEBUGCTL_BTF, LINEAR_ADDRESS_BITS, VmxModel};
use super::vmcs::{PhysMemory, Vmcs};

/// What a failed VM entry does (SDM Vol. 3C §27.2, §27.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// VM entry does not start: RFLAGS.ZF = 1 and the VM-instruction error field holds the
    /// number (7: invalid control fields, 8: invalid host-state fields).
    VmFailValid(VmInstructionError),
    /// VM entry fails after it started to load guest state: a VM exit with basic reason 33
    /// ("invalid guest state") and bit 31 set, this exit qualification, and the host state
    /// loaded as for a VM exit (§27.7).
    InvalidGuestState(EntryFailureQualification),
}

impl Outcome {
    /// The exit-reason field of the VM-entry-failure exit, if the outcome is one.
    pub const fn exit_reason(self) -> Option<ExitReasonField> {
        match self {
            Self::VmFailValid(_) => None,
            Self::InvalidGuestState(_) => {
                Some(ExitReasonField::new(ExitReason::EntryFailureGuestState))
            }
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::VmFailValid(e) => write!(f, "VMfailValid({}: {})", e.number(), e.description()),
            Self::InvalidGuestState(q) => write!(
                f,
                "VM-entry failure exit (reason 33 | 1<<31, qualification {})",
                *q as u64
            ),
        }
    }
}

/// The state of the logical processor that VM entry checks besides the VMCS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryContext {
    /// IA32_EFER.LMA at the time of VM entry (§27.2.4).
    pub ia32e_mode: bool,
    /// The current-VMCS pointer: the VMCS link pointer must differ from it (§27.3.1.5).
    pub current_vmcs: Hpa,
}

/// Which group a rule belongs to, and so its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Group {
    Control,
    Host,
    Guest,
    GuestPdpte,
    GuestNmiSti,
    GuestLink,
}

macro_rules! rules {
    ($( $variant:ident, $group:ident, $section:literal, $text:literal; )*) => {
        /// A VM-entry check, named after the SDM rule it implements.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Rule {
            $(
                #[doc = $text]
                $variant,
            )*
        }

        impl Rule {
            /// Every rule, in the order the checks run.
            pub const ALL: &'static [Rule] = &[$(Rule::$variant,)*];

            /// The SDM section (Vol. 3C) that states the rule.
            pub const fn section(self) -> &'static str {
                match self { $(Rule::$variant => $section,)* }
            }

            /// The rule in a few words.
            pub const fn text(self) -> &'static str {
                match self { $(Rule::$variant => $text,)* }
            }

            const fn group(self) -> Group {
                match self { $(Rule::$variant => Group::$group,)* }
            }
        }
    };
}

rules! {
    // §27.2.1.1 VM-execution control fields.
    PinReserved, Control, "27.2.1.1", "reserved pin-based VM-execution controls must be set as IA32_VMX_TRUE_PINBASED_CTLS allows";
    PrimaryReserved, Control, "27.2.1.1", "reserved primary processor-based controls must be set as IA32_VMX_TRUE_PROCBASED_CTLS allows";
    SecondaryReserved, Control, "27.2.1.1", "with \"activate secondary controls\", reserved secondary controls must be 0 (IA32_VMX_PROCBASED_CTLS2)";
    TertiaryReserved, Control, "27.2.1.1", "with \"activate tertiary controls\", reserved tertiary controls must be 0 (IA32_VMX_PROCBASED_CTLS3)";
    Cr3TargetCount, Control, "27.2.1.1", "the CR3-target count must not exceed IA32_VMX_MISC[24:16]";
    IoBitmapAddress, Control, "27.2.1.1", "with \"use I/O bitmaps\", each I/O-bitmap address must be 4-KByte aligned and within MAXPHYADDR";
    MsrBitmapAddress, Control, "27.2.1.1", "with \"use MSR bitmaps\", the MSR-bitmap address must be 4-KByte aligned and within MAXPHYADDR";
    VirtualApicAddress, Control, "27.2.1.1", "with \"use TPR shadow\", the virtual-APIC address must be 4-KByte aligned and within MAXPHYADDR";
    TprThreshold, Control, "27.2.1.1", "with \"use TPR shadow\" and without \"virtual-interrupt delivery\", bits 31:4 of the TPR threshold must be 0";
    TprShadowRequired, Control, "27.2.1.1", "without \"use TPR shadow\", \"virtualize x2APIC mode\", \"APIC-register virtualization\" and \"virtual-interrupt delivery\" must be 0";
    X2apicWithApicAccesses, Control, "27.2.1.1", "\"virtualize x2APIC mode\" and \"virtualize APIC accesses\" must not both be 1";
    VirtualInterruptDelivery, Control, "27.2.1.1", "\"virtual-interrupt delivery\" requires \"external-interrupt exiting\"";
    PostedInterrupts, Control, "27.2.1.1", "\"process posted interrupts\" requires \"virtual-interrupt delivery\" and \"acknowledge interrupt on exit\"";
    PostedInterruptVector, Control, "27.2.1.1", "with \"process posted interrupts\", bits 15:8 of the notification vector must be 0";
    PostedInterruptDescriptor, Control, "27.2.1.1", "with \"process posted interrupts\", the descriptor address must be 64-byte aligned and within MAXPHYADDR";
    VirtualNmis, Control, "27.2.1.1", "\"virtual NMIs\" requires \"NMI exiting\"";
    NmiWindow, Control, "27.2.1.1", "\"NMI-window exiting\" requires \"virtual NMIs\"";
    ApicAccessAddress, Control, "27.2.1.1", "with \"virtualize APIC accesses\", the APIC-access address must be 4-KByte aligned and within MAXPHYADDR";
    VpidZero, Control, "27.2.1.1", "with \"enable VPID\", the VPID must not be 0000H";
    EptpMemoryType, Control, "27.2.1.1", "the EPTP memory type (bits 2:0) must be one IA32_VMX_EPT_VPID_CAP allows (UC or WB)";
    EptpWalkLength, Control, "27.2.1.1", "bits 5:3 of the EPTP must be the supported page-walk length minus 1 (3)";
    EptpAccessedDirty, Control, "27.2.1.1", "EPTP bit 6 (A/D flags) must be 0 unless IA32_VMX_EPT_VPID_CAP[21] is 1";
    EptpReserved, Control, "27.2.1.1", "EPTP bits 11:7 and bits beyond MAXPHYADDR must be 0";
    PmlRequiresEpt, Control, "27.2.1.1", "\"enable PML\" requires \"enable EPT\"";
    PmlAddress, Control, "27.2.1.1", "with \"enable PML\", the PML address must be 4-KByte aligned and within MAXPHYADDR";
    UnrestrictedRequiresEpt, Control, "27.2.1.1", "\"unrestricted guest\" requires \"enable EPT\"";
    ModeBasedRequiresEpt, Control, "27.2.1.1", "\"mode-based execute control for EPT\" requires \"enable EPT\"";
    SubPageRequiresEpt, Control, "27.2.1.1", "\"sub-page write permissions for EPT\" requires \"enable EPT\"";
    VmFunctionReserved, Control, "27.2.1.1", "with \"enable VM functions\", reserved VM-function controls must be 0 (IA32_VMX_VMFUNC)";
    EptpSwitchingRequiresEpt, Control, "27.2.1.1", "EPTP switching (VM function 0) requires \"enable EPT\"";
    EptpListAddress, Control, "27.2.1.1", "with EPTP switching, the EPTP-list address must be 4-KByte aligned and within MAXPHYADDR";
    VmcsShadowingBitmaps, Control, "27.2.1.1", "with \"VMCS shadowing\", the VMREAD- and VMWRITE-bitmap addresses must be 4-KByte aligned and within MAXPHYADDR";
    VeInfoAddress, Control, "27.2.1.1", "with \"EPT-violation #VE\", the virtualization-exception information address must be 4-KByte aligned and within MAXPHYADDR";
    // §27.2.1.2 VM-exit control fields.
    ExitReserved, Control, "27.2.1.2", "reserved VM-exit controls must be set as IA32_VMX_TRUE_EXIT_CTLS allows";
    SecondaryExitReserved, Control, "27.2.1.2", "with \"activate secondary controls\" (VM-exit), reserved secondary VM-exit controls must be 0 (IA32_VMX_EXIT_CTLS2)";
    SavePreemptionTimer, Control, "27.2.1.2", "\"save VMX-preemption timer value\" requires \"activate VMX-preemption timer\"";
    ExitMsrStoreAddress, Control, "27.2.1.2", "with a non-zero VM-exit MSR-store count, bits 3:0 of the address must be 0 and no bit beyond MAXPHYADDR set";
    ExitMsrStoreEnd, Control, "27.2.1.2", "the last byte of the VM-exit MSR-store area must be within MAXPHYADDR";
    ExitMsrLoadAddress, Control, "27.2.1.2", "with a non-zero VM-exit MSR-load count, bits 3:0 of the address must be 0 and no bit beyond MAXPHYADDR set";
    ExitMsrLoadEnd, Control, "27.2.1.2", "the last byte of the VM-exit MSR-load area must be within MAXPHYADDR";
    // §27.2.1.3 VM-entry control fields.
    EntryReserved, Control, "27.2.1.3", "reserved VM-entry controls must be set as IA32_VMX_TRUE_ENTRY_CTLS allows";
    EntrySmm, Control, "27.2.1.3", "outside SMM, \"entry to SMM\" and \"deactivate dual-monitor treatment\" must be 0";
    EventType, Control, "27.2.1.3", "the injected interruption type must not be reserved (1; 7 without the monitor trap flag)";
    EventVector, Control, "27.2.1.3", "the injected vector must match the type (NMI: 2, hardware exception: at most 31, other event: 0)";
    EventDeliverErrorCode, Control, "27.2.1.3", "deliver-error-code must be 1 exactly for hardware exceptions 8, 10-14 and 17 in protected mode";
    EventReserved, Control, "27.2.1.3", "bits 30:12 of the VM-entry interruption-information field must be 0";
    EventErrorCode, Control, "27.2.1.3", "with deliver-error-code, bits 31:16 of the VM-entry exception error code must be 0";
    EventInstructionLength, Control, "27.2.1.3", "a software interrupt or exception needs an instruction length of 1 to 15 (0 only with IA32_VMX_MISC[30])";
    EntryMsrLoadAddress, Control, "27.2.1.3", "with a non-zero VM-entry MSR-load count, bits 3:0 of the address must be 0 and no bit beyond MAXPHYADDR set";
    EntryMsrLoadEnd, Control, "27.2.1.3", "the last byte of the VM-entry MSR-load area must be within MAXPHYADDR";
    // §27.2.2 host control registers and MSRs.
    HostCr0Fixed, Host, "27.2.2", "host CR0 must have the bits IA32_VMX_CR0_FIXED0/1 fix";
    HostCr4Fixed, Host, "27.2.2", "host CR4 must have the bits IA32_VMX_CR4_FIXED0/1 fix";
    HostCr3, Host, "27.2.2", "host CR3 must not set bits beyond MAXPHYADDR";
    HostSysenterEsp, Host, "27.2.2", "host IA32_SYSENTER_ESP must be canonical";
    HostSysenterEip, Host, "27.2.2", "host IA32_SYSENTER_EIP must be canonical";
    HostPat, Host, "27.2.2", "with \"load IA32_PAT\", each host PAT entry must be 0, 1, 4, 5, 6 or 7";
    HostEferReserved, Host, "27.2.2", "with \"load IA32_EFER\", reserved host EFER bits must be 0";
    HostEferMode, Host, "27.2.2", "with \"load IA32_EFER\", host EFER.LMA and LME must equal \"host address-space size\"";
    // §27.2.3 host segment and descriptor-table registers.
    HostSelectorRplTi, Host, "27.2.3", "host selectors must have RPL = 0 and TI = 0";
    HostCsNull, Host, "27.2.3", "the host CS selector must not be 0000H";
    HostTrNull, Host, "27.2.3", "the host TR selector must not be 0000H";
    HostSsNull, Host, "27.2.3", "the host SS selector must not be 0000H without \"host address-space size\"";
    HostBaseCanonical, Host, "27.2.3", "host FS, GS, GDTR, IDTR and TR bases must be canonical";
    // §27.2.4 address-space size.
    OutsideIa32eGuest, Host, "27.2.4", "outside IA-32e mode, \"IA-32e mode guest\" must be 0";
    OutsideIa32eHost, Host, "27.2.4", "outside IA-32e mode, \"host address-space size\" must be 0";
    InsideIa32eHost, Host, "27.2.4", "in IA-32e mode, \"host address-space size\" must be 1";
    LegacyHostPcide, Host, "27.2.4", "without \"host address-space size\", host CR4.PCIDE must be 0";
    LegacyHostRip, Host, "27.2.4", "without \"host address-space size\", bits 63:32 of host RIP must be 0";
    LongHostPae, Host, "27.2.4", "with \"host address-space size\", host CR4.PAE must be 1";
    LongHostRip, Host, "27.2.4", "with \"host address-space size\", host RIP must be canonical";
    // §27.3.1.1 guest control registers, debug registers and MSRs.
    GuestCr0Fixed, Guest, "27.3.1.1", "guest CR0 must have the bits IA32_VMX_CR0_FIXED0/1 fix (PE and PG free with \"unrestricted guest\")";
    GuestCr0PgPe, Guest, "27.3.1.1", "guest CR0.PG requires CR0.PE";
    GuestCr4Fixed, Guest, "27.3.1.1", "guest CR4 must have the bits IA32_VMX_CR4_FIXED0/1 fix";
    GuestDebugctl, Guest, "27.3.1.1", "with \"load debug controls\", reserved guest IA32_DEBUGCTL bits must be 0";
    GuestIa32ePaging, Guest, "27.3.1.1", "an IA-32e mode guest needs CR0.PG = 1 and CR4.PAE = 1";
    GuestPcide, Guest, "27.3.1.1", "outside IA-32e mode, guest CR4.PCIDE must be 0";
    GuestCr3, Guest, "27.3.1.1", "guest CR3 must not set bits beyond MAXPHYADDR";
    GuestDr7, Guest, "27.3.1.1", "with \"load debug controls\", bits 63:32 of guest DR7 must be 0";
    GuestSysenterEsp, Guest, "27.3.1.1", "guest IA32_SYSENTER_ESP must be canonical";
    GuestSysenterEip, Guest, "27.3.1.1", "guest IA32_SYSENTER_EIP must be canonical";
    GuestPat, Guest, "27.3.1.1", "with \"load IA32_PAT\", each guest PAT entry must be 0, 1, 4, 5, 6 or 7";
    GuestBndcfgs, Guest, "27.3.1.1", "with \"load IA32_BNDCFGS\", guest IA32_BNDCFGS bits 11:2 must be 0 and bits 63:12 canonical";
    GuestEferReserved, Guest, "27.3.1.1", "with \"load IA32_EFER\", reserved guest EFER bits must be 0";
    GuestEferLma, Guest, "27.3.1.1", "with \"load IA32_EFER\", guest EFER.LMA must equal \"IA-32e mode guest\"";
    GuestEferLme, Guest, "27.3.1.1", "with \"load IA32_EFER\" and CR0.PG, guest EFER.LME must equal \"IA-32e mode guest\"";
    // §27.3.1.2 guest segment registers.
    V86Base, Guest, "27.3.1.2", "in virtual-8086 mode, each segment base must be the selector times 16";
    V86Limit, Guest, "27.3.1.2", "in virtual-8086 mode, each segment limit must be 0000FFFFH";
    V86AccessRights, Guest, "27.3.1.2", "in virtual-8086 mode, each segment's access rights must be 000000F3H";
    TrTi, Guest, "27.3.1.2", "the TR selector must have TI = 0";
    LdtrTi, Guest, "27.3.1.2", "a usable LDTR selector must have TI = 0";
    SsRpl, Guest, "27.3.1.2", "without \"unrestricted guest\", SS.RPL must equal CS.RPL";
    BaseCanonical, Guest, "27.3.1.2", "TR, FS, GS and a usable LDTR base must be canonical";
    BaseHigh, Guest, "27.3.1.2", "bits 63:32 of the CS base and of a usable SS, DS or ES base must be 0";
    CsType, Guest, "27.3.1.2", "the CS type must be 9, 11, 13 or 15 (or 3 with \"unrestricted guest\")";
    SsType, Guest, "27.3.1.2", "a usable SS must have type 3 or 7";
    DataAccessed, Guest, "27.3.1.2", "a usable DS, ES, FS or GS must have the accessed type bit set";
    DataCodeReadable, Guest, "27.3.1.2", "a code segment in DS, ES, FS or GS must be readable";
    CodeDataS, Guest, "27.3.1.2", "CS and usable SS, DS, ES, FS and GS must have S = 1";
    CsDplData, Guest, "27.3.1.2", "with CS type 3, CS.DPL must be 0";
    CsDplNonConforming, Guest, "27.3.1.2", "a non-conforming CS (type 9 or 11) must have DPL = SS.DPL";
    CsDplConforming, Guest, "27.3.1.2", "a conforming CS (type 13 or 15) must have DPL <= SS.DPL";
    SsDplRpl, Guest, "27.3.1.2", "without \"unrestricted guest\", SS.DPL must equal SS.RPL";
    SsDplZero, Guest, "27.3.1.2", "SS.DPL must be 0 with CS type 3 or CR0.PE = 0";
    DataDpl, Guest, "27.3.1.2", "without \"unrestricted guest\", a usable DS, ES, FS or GS of type 0-11 must have DPL >= RPL";
    SegmentPresent, Guest, "27.3.1.2", "CS, TR and usable SS, DS, ES, FS, GS and LDTR must be present";
    SegmentReserved, Guest, "27.3.1.2", "access-rights bits 11:8 and 31:17 must be 0 (CS, TR, and usable others)";
    CsLongDefault, Guest, "27.3.1.2", "in an IA-32e mode guest, CS.L = 1 requires CS.D/B = 0";
    SegmentGranularity, Guest, "27.3.1.2", "G must be 0 if limit bits 11:0 are not all 1, and 1 if any of limit bits 31:20 is 1";
    TrType, Guest, "27.3.1.2", "the TR type must be 11 (or 3 outside an IA-32e mode guest)";
    SystemSegmentS, Guest, "27.3.1.2", "TR and a usable LDTR must have S = 0";
    TrUsable, Guest, "27.3.1.2", "TR must be usable (access-rights bit 16 = 0)";
    LdtrType, Guest, "27.3.1.2", "a usable LDTR must have type 2";
    // §27.3.1.3 guest descriptor-table registers.
    DescriptorTableBase, Guest, "27.3.1.3", "the GDTR and IDTR bases must be canonical";
    DescriptorTableLimit, Guest, "27.3.1.3", "bits 31:16 of the GDTR and IDTR limits must be 0";
    // §27.3.1.4 guest RIP and RFLAGS.
    RipHigh, Guest, "27.3.1.4", "bits 63:32 of RIP must be 0 unless the guest is IA-32e mode with CS.L = 1";
    RipCanonical, Guest, "27.3.1.4", "in 64-bit mode, RIP must be canonical";
    RflagsReserved, Guest, "27.3.1.4", "RFLAGS bits 63:22, 15, 5 and 3 must be 0 and bit 1 must be 1";
    RflagsVm, Guest, "27.3.1.4", "RFLAGS.VM must be 0 in an IA-32e mode guest or with CR0.PE = 0";
    RflagsIf, Guest, "27.3.1.4", "RFLAGS.IF must be 1 when an external interrupt is injected";
    // §27.3.1.5 guest non-register state.
    ActivityUnsupported, Guest, "27.3.1.5", "the activity state must be one IA32_VMX_MISC reports (active or HLT)";
    ActivityHltDpl, Guest, "27.3.1.5", "the HLT activity state requires SS.DPL = 0";
    ActivityBlocking, Guest, "27.3.1.5", "with blocking by STI or MOV SS, the activity state must be active";
    ActivityInjection, Guest, "27.3.1.5", "the injected event must not be one the activity state blocks";
    InterruptibilityReserved, Guest, "27.3.1.5", "interruptibility-state bits 31:5 must be 0";
    InterruptibilityEnclave, Guest, "27.3.1.5", "enclave interruption (bit 4) requires SGX, which is not supported";
    InterruptibilityStiMovSs, Guest, "27.3.1.5", "blocking by STI and by MOV SS must not both be set";
    InterruptibilityStiIf, Guest, "27.3.1.5", "blocking by STI requires RFLAGS.IF = 1";
    InterruptibilityExtInt, Guest, "27.3.1.5", "injecting an external interrupt requires no blocking by STI or MOV SS";
    InterruptibilityNmiMovSs, Guest, "27.3.1.5", "injecting an NMI requires no blocking by MOV SS";
    InterruptibilitySmi, Guest, "27.3.1.5", "outside SMM, blocking by SMI must be 0";
    InterruptibilityNmiSti, GuestNmiSti, "27.3.1.5", "injecting an NMI requires no blocking by STI (this processor makes the requirement)";
    InterruptibilityVirtualNmi, Guest, "27.3.1.5", "with \"virtual NMIs\", injecting an NMI requires no blocking by NMI";
    PendingDebugReserved, Guest, "27.3.1.5", "pending-debug-exceptions bits 11:4, 13, 15 and 63:17 must be 0";
    PendingDebugRtm, Guest, "27.3.1.5", "pending-debug-exceptions bit 16 (RTM) requires RTM, which is not supported";
    PendingDebugBsSet, Guest, "27.3.1.5", "with STI/MOV SS blocking or HLT, BS must be 1 if RFLAGS.TF = 1 and IA32_DEBUGCTL.BTF = 0";
    PendingDebugBsClear, Guest, "27.3.1.5", "with STI/MOV SS blocking or HLT, BS must be 0 if RFLAGS.TF = 0 or IA32_DEBUGCTL.BTF = 1";
    LinkPointerAddress, GuestLink, "27.3.1.5", "a VMCS link pointer other than FFFFFFFF_FFFFFFFFH must be 4-KByte aligned and within MAXPHYADDR";
    LinkPointerRevision, GuestLink, "27.3.1.5", "bits 30:0 at the VMCS link pointer must be the VMCS revision identifier";
    LinkPointerShadow, GuestLink, "27.3.1.5", "bit 31 at the VMCS link pointer must equal \"VMCS shadowing\"";
    LinkPointerCurrent, GuestLink, "27.3.1.5", "outside SMM, the VMCS link pointer must not be the current-VMCS pointer";
    // §27.3.1.6 guest PDPTEs.
    Pdpte, GuestPdpte, "27.3.1.6", "with PAE paging, present PDPTEs must not set reserved bits";
}

impl Rule {
    /// What a VM entry that breaks this rule does.
    pub const fn outcome(self) -> Outcome {
        match self.group() {
            Group::Control => Outcome::VmFailValid(VmInstructionError::EntryInvalidControlFields),
            Group::Host => Outcome::VmFailValid(VmInstructionError::EntryInvalidHostStateFields),
            Group::Guest => Outcome::InvalidGuestState(EntryFailureQualification::Default),
            Group::GuestPdpte => {
                Outcome::InvalidGuestState(EntryFailureQualification::PdpteLoading)
            }
            Group::GuestNmiSti => {
                Outcome::InvalidGuestState(EntryFailureQualification::NmiInjectionBlockedBySti)
            }
            Group::GuestLink => {
                Outcome::InvalidGuestState(EntryFailureQualification::InvalidVmcsLinkPointer)
            }
        }
    }
}

/// A failed VM-entry check: the rule, the field that breaks it and the field's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryCheckFailure {
    /// The rule.
    pub rule: Rule,
    /// The field that breaks it (for rules relating two fields, the one the rule is about).
    pub field: F,
    /// The field's value.
    pub value: u64,
    /// For the allowed-0/1 and fixed-bit rules, the offending bits.
    pub bits: Option<ControlViolation>,
}

impl EntryCheckFailure {
    /// The architectural outcome.
    pub const fn outcome(&self) -> Outcome {
        self.rule.outcome()
    }
}

impl fmt::Display for EntryCheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: SDM Vol. 3C §{}: {}: {} = {:#x}",
            self.outcome(),
            self.rule.section(),
            self.rule.text(),
            self.field,
            self.value
        )?;
        if let Some(bits) = self.bits {
            write!(
                f,
                " (must be 1: {:#x}, must be 0: {:#x})",
                bits.must_be_one, bits.must_be_zero
            )?;
        }
        Ok(())
    }
}

/// The result of a check.
pub type CheckResult = Result<(), EntryCheckFailure>;

fn fail(rule: Rule, field: F, value: u64) -> CheckResult {
    Err(EntryCheckFailure {
        rule,
        field,
        value,
        bits: None,
    })
}

/// Fails with `rule` unless `ok`.
fn ensure(ok: bool, rule: Rule, field: F, value: u64) -> CheckResult {
    if ok { Ok(()) } else { fail(rule, field, value) }
}

fn canonical(value: u64) -> bool {
    Gva::new(value).is_canonical(LINEAR_ADDRESS_BITS)
}

fn within(addr: u64, maxphyaddr: u8) -> bool {
    addr & !phys_mask(u32::from(maxphyaddr)) == 0
}

/// 4-KByte aligned and within MAXPHYADDR.
fn page_address(v: &Vmcs, m: &VmxModel, field: F, rule: Rule) -> CheckResult {
    let a = v.get(field);
    ensure(a & 0xfff == 0 && within(a, m.maxphyaddr), rule, field, a)
}

/// The allowed-1 check of a 64-bit control field (tertiary controls, secondary VM-exit
/// controls, VM-function controls).
fn allowed64(ctl: AllowedControls64, value: u64, rule: Rule, field: F) -> CheckResult {
    ctl.check(value).map_err(|bits| EntryCheckFailure {
        rule,
        field,
        value,
        bits: Some(bits),
    })
}

/// The allowed-0/1 check of a control field.
fn allowed(ctl: AllowedControls, value: u32, rule: Rule, field: F) -> CheckResult {
    ctl.check(value).map_err(|bits| EntryCheckFailure {
        rule,
        field,
        value: u64::from(value),
        bits: Some(bits),
    })
}

/// The fixed-bit check of a control register.
fn fixed(bits: x86::vmx::FixedBits, value: u64, rule: Rule, field: F) -> CheckResult {
    bits.check(value).map_err(|bits| EntryCheckFailure {
        rule,
        field,
        value,
        bits: Some(bits),
    })
}

/// An MSR-load or MSR-store area of `count` 16-byte entries (§27.2.1.2, §27.2.1.3).
fn msr_area(
    v: &Vmcs,
    m: &VmxModel,
    (count_field, addr_field): (F, F),
    (addr_rule, end_rule): (Rule, Rule),
) -> CheckResult {
    let count = v.get(count_field);
    if count == 0 {
        return Ok(());
    }
    let addr = v.get(addr_field);
    ensure(
        addr & 0xf == 0 && within(addr, m.maxphyaddr),
        addr_rule,
        addr_field,
        addr,
    )?;
    // The SDM computes the last byte with more bits than MAXPHYADDR: u128 cannot overflow.
    let last = u128::from(addr) + u128::from(count) * 16 - 1;
    let beyond = last.checked_shr(u32::from(m.maxphyaddr)).unwrap_or(0);
    ensure(beyond == 0, end_rule, count_field, count)
}

/// Whether every byte of a PAT value is a valid memory type (§27.2.2, §27.3.1.1).
fn pat_valid(pat: u64) -> bool {
    pat.to_le_bytes()
        .iter()
        .all(|t| matches!(t, 0 | 1 | 4 | 5 | 6 | 7))
}

/// The controls as VM entry sees them: secondary controls read as 0 unless activated.
#[derive(Clone, Copy, Debug)]
struct Controls {
    pin: u32,
    primary: u32,
    secondary: u32,
    exit: u32,
    entry: u32,
}

impl Controls {
    fn of(v: &Vmcs) -> Self {
        let primary = v.get(F::PrimaryProcBasedControls) as u32;
        let secondary = if primary & primary_proc::ACTIVATE_SECONDARY_CONTROLS != 0 {
            v.get(F::SecondaryProcBasedControls) as u32
        } else {
            0
        };
        Self {
            pin: v.get(F::PinBasedControls) as u32,
            primary,
            secondary,
            exit: v.get(F::PrimaryVmExitControls) as u32,
            entry: v.get(F::VmEntryControls) as u32,
        }
    }

    fn ia32e_guest(&self) -> bool {
        self.entry & entry::IA32E_MODE_GUEST != 0
    }

    fn unrestricted(&self) -> bool {
        self.secondary & secondary_proc::UNRESTRICTED_GUEST != 0
    }

    fn host_64(&self) -> bool {
        self.exit & exit::HOST_ADDRESS_SPACE_SIZE != 0
    }
}

/// Every VM-entry check of §27.2 and §27.3.1, in order: controls, host state, guest state.
/// `mem` is read for the VMCS link pointer and, with PAE paging and no EPT, the PDPTEs.
pub fn check_vm_entry<M: PhysMemory>(
    v: &Vmcs,
    m: &VmxModel,
    ctx: &EntryContext,
    mem: &mut M,
) -> CheckResult {
    check_controls(v, m)?;
    check_host_state(v, m, ctx)?;
    check_guest_state(v, m, ctx, mem)
}

/// §27.2.1: the VM-execution, VM-exit and VM-entry control fields (VMfailValid 7).
pub fn check_controls(v: &Vmcs, m: &VmxModel) -> CheckResult {
    check_execution_controls(v, m)?;
    check_exit_controls(v, m)?;
    check_entry_controls(v, m)
}

/// §27.2.1.1 VM-execution control fields.
fn check_execution_controls(v: &Vmcs, m: &VmxModel) -> CheckResult {
    use pin_based as pin;
    use primary_proc as p1;
    use secondary_proc as p2;
    let caps = &m.caps;
    let c = Controls::of(v);
    allowed(
        caps.pin_based,
        c.pin,
        Rule::PinReserved,
        F::PinBasedControls,
    )?;
    allowed(
        caps.primary_proc,
        c.primary,
        Rule::PrimaryReserved,
        F::PrimaryProcBasedControls,
    )?;
    if c.primary & p1::ACTIVATE_SECONDARY_CONTROLS != 0 {
        allowed(
            caps.secondary_proc,
            c.secondary,
            Rule::SecondaryReserved,
            F::SecondaryProcBasedControls,
        )?;
    }
    if c.primary & p1::ACTIVATE_TERTIARY_CONTROLS != 0 {
        let tertiary = v.get(F::TertiaryProcBasedControls);
        allowed64(
            caps.tertiary_proc,
            tertiary,
            Rule::TertiaryReserved,
            F::TertiaryProcBasedControls,
        )?;
    }
    let count = v.get(F::Cr3TargetCount);
    ensure(
        count <= u64::from(caps.misc.cr3_target_count()),
        Rule::Cr3TargetCount,
        F::Cr3TargetCount,
        count,
    )?;
    if c.primary & p1::USE_IO_BITMAPS != 0 {
        page_address(v, m, F::IoBitmapA, Rule::IoBitmapAddress)?;
        page_address(v, m, F::IoBitmapB, Rule::IoBitmapAddress)?;
    }
    if c.primary & p1::USE_MSR_BITMAPS != 0 {
        page_address(v, m, F::MsrBitmaps, Rule::MsrBitmapAddress)?;
    }
    let vid = c.secondary & p2::VIRTUAL_INTERRUPT_DELIVERY != 0;
    if c.primary & p1::USE_TPR_SHADOW != 0 {
        page_address(v, m, F::VirtualApicAddress, Rule::VirtualApicAddress)?;
        let tpr = v.get(F::TprThreshold);
        ensure(
            vid || tpr & !0xf == 0,
            Rule::TprThreshold,
            F::TprThreshold,
            tpr,
        )?;
    } else {
        let needs = p2::VIRTUALIZE_X2APIC_MODE
            | p2::APIC_REGISTER_VIRTUALIZATION
            | p2::VIRTUAL_INTERRUPT_DELIVERY;
        ensure(
            c.secondary & needs == 0,
            Rule::TprShadowRequired,
            F::SecondaryProcBasedControls,
            u64::from(c.secondary),
        )?;
    }
    let both = p2::VIRTUALIZE_X2APIC_MODE | p2::VIRTUALIZE_APIC_ACCESSES;
    ensure(
        c.secondary & both != both,
        Rule::X2apicWithApicAccesses,
        F::SecondaryProcBasedControls,
        u64::from(c.secondary),
    )?;
    ensure(
        !vid || c.pin & pin::EXTERNAL_INTERRUPT_EXITING != 0,
        Rule::VirtualInterruptDelivery,
        F::PinBasedControls,
        u64::from(c.pin),
    )?;
    if c.pin & pin::PROCESS_POSTED_INTERRUPTS != 0 {
        ensure(
            vid && c.exit & exit::ACKNOWLEDGE_INTERRUPT_ON_EXIT != 0,
            Rule::PostedInterrupts,
            F::PinBasedControls,
            u64::from(c.pin),
        )?;
        let vector = v.get(F::PostedInterruptNotificationVector);
        ensure(
            vector & 0xff00 == 0,
            Rule::PostedInterruptVector,
            F::PostedInterruptNotificationVector,
            vector,
        )?;
        let desc = v.get(F::PostedInterruptDescriptorAddress);
        ensure(
            desc & 0x3f == 0 && within(desc, m.maxphyaddr),
            Rule::PostedInterruptDescriptor,
            F::PostedInterruptDescriptorAddress,
            desc,
        )?;
    }
    ensure(
        c.pin & pin::NMI_EXITING != 0 || c.pin & pin::VIRTUAL_NMIS == 0,
        Rule::VirtualNmis,
        F::PinBasedControls,
        u64::from(c.pin),
    )?;
    ensure(
        c.pin & pin::VIRTUAL_NMIS != 0 || c.primary & p1::NMI_WINDOW_EXITING == 0,
        Rule::NmiWindow,
        F::PrimaryProcBasedControls,
        u64::from(c.primary),
    )?;
    if c.secondary & p2::VIRTUALIZE_APIC_ACCESSES != 0 {
        page_address(v, m, F::ApicAccessAddress, Rule::ApicAccessAddress)?;
    }
    if c.secondary & p2::ENABLE_VPID != 0 {
        let vpid = v.get(F::Vpid);
        ensure(vpid != 0, Rule::VpidZero, F::Vpid, vpid)?;
    }
    let ept = c.secondary & p2::ENABLE_EPT != 0;
    if ept {
        let raw = v.get(F::EptPointer);
        let mbec = c.secondary & p2::MODE_BASED_EXECUTE_CONTROL != 0;
        let caps = EptCaps::from_msr(caps.ept_vpid.0);
        if let Err(e) = Ept::<Gpa, Hpa>::new(Eptp::new(raw), &caps, m.maxphyaddr, mbec) {
            let rule = match e {
                InvalidEptp::MemoryType => Rule::EptpMemoryType,
                InvalidEptp::WalkLength => Rule::EptpWalkLength,
                InvalidEptp::AccessedDirty => Rule::EptpAccessedDirty,
                InvalidEptp::Reserved => Rule::EptpReserved,
            };
            return fail(rule, F::EptPointer, raw);
        }
    }
    let secondary = u64::from(c.secondary);
    if c.secondary & p2::ENABLE_PML != 0 {
        ensure(
            ept,
            Rule::PmlRequiresEpt,
            F::SecondaryProcBasedControls,
            secondary,
        )?;
        page_address(v, m, F::PmlAddress, Rule::PmlAddress)?;
    }
    for (control, rule) in [
        (p2::UNRESTRICTED_GUEST, Rule::UnrestrictedRequiresEpt),
        (p2::MODE_BASED_EXECUTE_CONTROL, Rule::ModeBasedRequiresEpt),
        (p2::SUB_PAGE_WRITE_PERMISSIONS, Rule::SubPageRequiresEpt),
    ] {
        ensure(
            ept || c.secondary & control == 0,
            rule,
            F::SecondaryProcBasedControls,
            secondary,
        )?;
    }
    if c.secondary & p2::ENABLE_VM_FUNCTIONS != 0 {
        let vmfunc = v.get(F::VmFunctionControls);
        allowed64(
            caps.vmfunc.allowed(),
            vmfunc,
            Rule::VmFunctionReserved,
            F::VmFunctionControls,
        )?;
        if vmfunc & VmFuncCap::EPTP_SWITCHING != 0 {
            ensure(
                ept,
                Rule::EptpSwitchingRequiresEpt,
                F::VmFunctionControls,
                vmfunc,
            )?;
            page_address(v, m, F::EptpListAddress, Rule::EptpListAddress)?;
        }
    }
    if c.secondary & p2::VMCS_SHADOWING != 0 {
        page_address(v, m, F::VmreadBitmapAddress, Rule::VmcsShadowingBitmaps)?;
        page_address(v, m, F::VmwriteBitmapAddress, Rule::VmcsShadowingBitmaps)?;
    }
    if c.secondary & p2::EPT_VIOLATION_VE != 0 {
        page_address(
            v,
            m,
            F::VirtualizationExceptionInfoAddress,
            Rule::VeInfoAddress,
        )?;
    }
    Ok(())
}

/// §27.2.1.2 VM-exit control fields.
fn check_exit_controls(v: &Vmcs, m: &VmxModel) -> CheckResult {
    let c = Controls::of(v);
    allowed(
        m.caps.exit,
        c.exit,
        Rule::ExitReserved,
        F::PrimaryVmExitControls,
    )?;
    if c.exit & exit::ACTIVATE_SECONDARY_CONTROLS != 0 {
        let secondary = v.get(F::SecondaryVmExitControls);
        allowed64(
            m.caps.secondary_exit,
            secondary,
            Rule::SecondaryExitReserved,
            F::SecondaryVmExitControls,
        )?;
    }
    ensure(
        c.pin & pin_based::ACTIVATE_PREEMPTION_TIMER != 0
            || c.exit & exit::SAVE_PREEMPTION_TIMER == 0,
        Rule::SavePreemptionTimer,
        F::PrimaryVmExitControls,
        u64::from(c.exit),
    )?;
    msr_area(
        v,
        m,
        (F::VmExitMsrStoreCount, F::VmExitMsrStoreAddress),
        (Rule::ExitMsrStoreAddress, Rule::ExitMsrStoreEnd),
    )?;
    msr_area(
        v,
        m,
        (F::VmExitMsrLoadCount, F::VmExitMsrLoadAddress),
        (Rule::ExitMsrLoadAddress, Rule::ExitMsrLoadEnd),
    )
}

/// The hardware exceptions that deliver an error code (§27.2.1.3): #DF, #TS, #NP, #SS, #GP,
/// #PF, #AC.
const fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17)
}

/// §27.2.1.3 VM-entry control fields.
fn check_entry_controls(v: &Vmcs, m: &VmxModel) -> CheckResult {
    let c = Controls::of(v);
    allowed(
        m.caps.entry,
        c.entry,
        Rule::EntryReserved,
        F::VmEntryControls,
    )?;
    // This processor is never in SMM.
    ensure(
        c.entry & (entry::ENTRY_TO_SMM | entry::DEACTIVATE_DUAL_MONITOR) == 0,
        Rule::EntrySmm,
        F::VmEntryControls,
        u64::from(c.entry),
    )?;
    let raw = v.get(F::VmEntryInterruptionInfo);
    let info = InterruptionInfo(raw as u32);
    if info.is_valid() {
        let kind = info.kind();
        let mtf = m
            .caps
            .primary_proc
            .allows_one(primary_proc::MONITOR_TRAP_FLAG);
        let type_ok = match kind {
            InterruptionType::Reserved => false,
            InterruptionType::OtherEvent => mtf,
            _ => true,
        };
        ensure(type_ok, Rule::EventType, F::VmEntryInterruptionInfo, raw)?;
        let vector = info.vector();
        let vector_ok = match kind {
            InterruptionType::Nmi => vector == 2,
            InterruptionType::HardwareException => vector <= 31,
            InterruptionType::OtherEvent => vector == 0,
            _ => true,
        };
        ensure(
            vector_ok,
            Rule::EventVector,
            F::VmEntryInterruptionInfo,
            raw,
        )?;
        let protected = !c.unrestricted() || v.get(F::GuestCr0) & cr0::PE != 0;
        let hw = kind == InterruptionType::HardwareException;
        let deliver_ok = if m.caps.basic.no_error_code_required() {
            // IA32_VMX_BASIC[56]: any hardware exception may be delivered with or without an
            // error code, but only in protected mode.
            !info.error_code_valid() || (protected && hw)
        } else {
            info.error_code_valid() == (protected && hw && exception_has_error_code(vector))
        };
        ensure(
            deliver_ok,
            Rule::EventDeliverErrorCode,
            F::VmEntryInterruptionInfo,
            raw,
        )?;
        ensure(
            raw as u32 & InterruptionInfo::ENTRY_RESERVED == 0,
            Rule::EventReserved,
            F::VmEntryInterruptionInfo,
            raw,
        )?;
        if info.error_code_valid() {
            let code = v.get(F::VmEntryExceptionErrorCode);
            ensure(
                code & 0xffff_0000 == 0,
                Rule::EventErrorCode,
                F::VmEntryExceptionErrorCode,
                code,
            )?;
        }
        if kind.is_software() {
            let len = v.get(F::VmEntryInstructionLength);
            let min = if m.caps.misc.inject_zero_length() {
                0
            } else {
                1
            };
            ensure(
                (min..=15).contains(&len),
                Rule::EventInstructionLength,
                F::VmEntryInstructionLength,
                len,
            )?;
        }
    }
    msr_area(
        v,
        m,
        (F::VmEntryMsrLoadCount, F::VmEntryMsrLoadAddress),
        (Rule::EntryMsrLoadAddress, Rule::EntryMsrLoadEnd),
    )
}

/// §27.2.2–§27.2.4: the host-state area (VMfailValid 8).
pub fn check_host_state(v: &Vmcs, m: &VmxModel, ctx: &EntryContext) -> CheckResult {
    let c = Controls::of(v);
    // §27.2.2.
    let hcr0 = v.get(F::HostCr0);
    fixed(m.cr0_fixed, hcr0, Rule::HostCr0Fixed, F::HostCr0)?;
    let hcr4 = v.get(F::HostCr4);
    fixed(m.cr4_fixed, hcr4, Rule::HostCr4Fixed, F::HostCr4)?;
    let hcr3 = v.get(F::HostCr3);
    ensure(within(hcr3, m.maxphyaddr), Rule::HostCr3, F::HostCr3, hcr3)?;
    let esp = v.get(F::HostIa32SysenterEsp);
    ensure(
        canonical(esp),
        Rule::HostSysenterEsp,
        F::HostIa32SysenterEsp,
        esp,
    )?;
    let eip = v.get(F::HostIa32SysenterEip);
    ensure(
        canonical(eip),
        Rule::HostSysenterEip,
        F::HostIa32SysenterEip,
        eip,
    )?;
    if c.exit & exit::LOAD_IA32_PAT != 0 {
        let pat = v.get(F::HostIa32Pat);
        ensure(pat_valid(pat), Rule::HostPat, F::HostIa32Pat, pat)?;
    }
    if c.exit & exit::LOAD_IA32_EFER != 0 {
        let e = v.get(F::HostIa32Efer);
        ensure(
            e & !efer::DEFINED == 0,
            Rule::HostEferReserved,
            F::HostIa32Efer,
            e,
        )?;
        let mode_ok = (e & efer::LMA != 0) == c.host_64() && (e & efer::LME != 0) == c.host_64();
        ensure(mode_ok, Rule::HostEferMode, F::HostIa32Efer, e)?;
    }
    // §27.2.3.
    for field in [
        F::HostEsSelector,
        F::HostCsSelector,
        F::HostSsSelector,
        F::HostDsSelector,
        F::HostFsSelector,
        F::HostGsSelector,
        F::HostTrSelector,
    ] {
        let sel = v.get(field);
        ensure(sel & 0x7 == 0, Rule::HostSelectorRplTi, field, sel)?;
    }
    let cs = v.get(F::HostCsSelector);
    ensure(cs != 0, Rule::HostCsNull, F::HostCsSelector, cs)?;
    let tr = v.get(F::HostTrSelector);
    ensure(tr != 0, Rule::HostTrNull, F::HostTrSelector, tr)?;
    let ss = v.get(F::HostSsSelector);
    ensure(
        c.host_64() || ss != 0,
        Rule::HostSsNull,
        F::HostSsSelector,
        ss,
    )?;
    for field in [
        F::HostFsBase,
        F::HostGsBase,
        F::HostGdtrBase,
        F::HostIdtrBase,
        F::HostTrBase,
    ] {
        let base = v.get(field);
        ensure(canonical(base), Rule::HostBaseCanonical, field, base)?;
    }
    // §27.2.4.
    let entry = u64::from(c.entry);
    let exitc = u64::from(c.exit);
    if ctx.ia32e_mode {
        ensure(
            c.host_64(),
            Rule::InsideIa32eHost,
            F::PrimaryVmExitControls,
            exitc,
        )?;
    } else {
        ensure(
            !c.ia32e_guest(),
            Rule::OutsideIa32eGuest,
            F::VmEntryControls,
            entry,
        )?;
        ensure(
            !c.host_64(),
            Rule::OutsideIa32eHost,
            F::PrimaryVmExitControls,
            exitc,
        )?;
    }
    let rip = v.get(F::HostRip);
    if c.host_64() {
        ensure(hcr4 & cr4::PAE != 0, Rule::LongHostPae, F::HostCr4, hcr4)?;
        ensure(canonical(rip), Rule::LongHostRip, F::HostRip, rip)
    } else {
        // "IA-32e mode guest" must be 0 here too (§27.2.4); the checks above already imply
        // it: outside IA-32e mode it must be 0, and in IA-32e mode this branch is not taken.
        ensure(
            hcr4 & cr4::PCIDE == 0,
            Rule::LegacyHostPcide,
            F::HostCr4,
            hcr4,
        )?;
        ensure(rip >> 32 == 0, Rule::LegacyHostRip, F::HostRip, rip)
    }
}

/// A guest segment register as the VMCS holds it.
#[derive(Clone, Copy, Debug)]
struct Segment {
    selector: u16,
    base: u64,
    limit: u32,
    ar: AccessRights,
    fields: SegmentFields,
}

#[derive(Clone, Copy, Debug)]
struct SegmentFields {
    selector: F,
    base: F,
    limit: F,
    ar: F,
}

impl Segment {
    fn read(v: &Vmcs, fields: SegmentFields) -> Self {
        Self {
            selector: v.get(fields.selector) as u16,
            base: v.get(fields.base),
            limit: v.get(fields.limit) as u32,
            ar: AccessRights(v.get(fields.ar) as u32),
            fields,
        }
    }

    fn usable(&self) -> bool {
        !self.ar.unusable()
    }

    fn rpl(&self) -> u8 {
        (self.selector & 3) as u8
    }

    fn ar_value(&self) -> u64 {
        u64::from(self.ar.0)
    }

    /// Access-rights bits 11:8 and 31:17 zero.
    fn check_reserved(&self) -> CheckResult {
        ensure(
            self.ar.0 & AccessRights::RESERVED == 0,
            Rule::SegmentReserved,
            self.fields.ar,
            self.ar_value(),
        )
    }

    fn check_present(&self) -> CheckResult {
        ensure(
            self.ar.present(),
            Rule::SegmentPresent,
            self.fields.ar,
            self.ar_value(),
        )
    }

    /// G against the limit.
    fn check_granularity(&self) -> CheckResult {
        let g = self.ar.granularity();
        let ok = (self.limit & 0xfff == 0xfff || !g) && (self.limit >> 20 == 0 || g);
        ensure(
            ok,
            Rule::SegmentGranularity,
            self.fields.ar,
            self.ar_value(),
        )
    }
}

macro_rules! segment_fields {
    ($sel:ident, $base:ident, $limit:ident, $ar:ident) => {
        SegmentFields {
            selector: F::$sel,
            base: F::$base,
            limit: F::$limit,
            ar: F::$ar,
        }
    };
}

const ES: SegmentFields = segment_fields!(
    GuestEsSelector,
    GuestEsBase,
    GuestEsLimit,
    GuestEsAccessRights
);
const CS: SegmentFields = segment_fields!(
    GuestCsSelector,
    GuestCsBase,
    GuestCsLimit,
    GuestCsAccessRights
);
const SS: SegmentFields = segment_fields!(
    GuestSsSelector,
    GuestSsBase,
    GuestSsLimit,
    GuestSsAccessRights
);
const DS: SegmentFields = segment_fields!(
    GuestDsSelector,
    GuestDsBase,
    GuestDsLimit,
    GuestDsAccessRights
);
const FS: SegmentFields = segment_fields!(
    GuestFsSelector,
    GuestFsBase,
    GuestFsLimit,
    GuestFsAccessRights
);
const GS: SegmentFields = segment_fields!(
    GuestGsSelector,
    GuestGsBase,
    GuestGsLimit,
    GuestGsAccessRights
);
const LDTR: SegmentFields = segment_fields!(
    GuestLdtrSelector,
    GuestLdtrBase,
    GuestLdtrLimit,
    GuestLdtrAccessRights
);
const TR: SegmentFields = segment_fields!(
    GuestTrSelector,
    GuestTrBase,
    GuestTrLimit,
    GuestTrAccessRights
);

/// §27.3.1: the guest-state area (VM-entry failure, exit reason 33).
pub fn check_guest_state<M: PhysMemory>(
    v: &Vmcs,
    m: &VmxModel,
    ctx: &EntryContext,
    mem: &mut M,
) -> CheckResult {
    check_guest_registers(v, m)?;
    check_guest_segments(v)?;
    check_guest_descriptor_tables(v)?;
    check_guest_rip_rflags(v)?;
    check_guest_non_register_state(v, m, ctx, mem)?;
    check_guest_pdptes(v, m, mem)
}

/// §27.3.1.1 control registers, debug registers and MSRs.
fn check_guest_registers(v: &Vmcs, m: &VmxModel) -> CheckResult {
    let c = Controls::of(v);
    let gcr0 = v.get(F::GuestCr0);
    let cr0_rules = if c.unrestricted() {
        m.cr0_fixed.without(cr0::PE | cr0::PG)
    } else {
        m.cr0_fixed
    };
    fixed(cr0_rules, gcr0, Rule::GuestCr0Fixed, F::GuestCr0)?;
    ensure(
        gcr0 & cr0::PG == 0 || gcr0 & cr0::PE != 0,
        Rule::GuestCr0PgPe,
        F::GuestCr0,
        gcr0,
    )?;
    let gcr4 = v.get(F::GuestCr4);
    fixed(m.cr4_fixed, gcr4, Rule::GuestCr4Fixed, F::GuestCr4)?;
    let load_debug = c.entry & entry::LOAD_DEBUG_CONTROLS != 0;
    if load_debug {
        let d = v.get(F::GuestIa32Debugctl);
        ensure(
            d & !m.debugctl_valid == 0,
            Rule::GuestDebugctl,
            F::GuestIa32Debugctl,
            d,
        )?;
    }
    if c.ia32e_guest() {
        ensure(
            gcr0 & cr0::PG != 0,
            Rule::GuestIa32ePaging,
            F::GuestCr0,
            gcr0,
        )?;
        ensure(
            gcr4 & cr4::PAE != 0,
            Rule::GuestIa32ePaging,
            F::GuestCr4,
            gcr4,
        )?;
    } else {
        ensure(gcr4 & cr4::PCIDE == 0, Rule::GuestPcide, F::GuestCr4, gcr4)?;
    }
    let gcr3 = v.get(F::GuestCr3);
    ensure(
        within(gcr3, m.maxphyaddr),
        Rule::GuestCr3,
        F::GuestCr3,
        gcr3,
    )?;
    if load_debug {
        let dr7 = v.get(F::GuestDr7);
        ensure(dr7 >> 32 == 0, Rule::GuestDr7, F::GuestDr7, dr7)?;
    }
    let esp = v.get(F::GuestIa32SysenterEsp);
    ensure(
        canonical(esp),
        Rule::GuestSysenterEsp,
        F::GuestIa32SysenterEsp,
        esp,
    )?;
    let eip = v.get(F::GuestIa32SysenterEip);
    ensure(
        canonical(eip),
        Rule::GuestSysenterEip,
        F::GuestIa32SysenterEip,
        eip,
    )?;
    if c.entry & entry::LOAD_IA32_PAT != 0 {
        let pat = v.get(F::GuestIa32Pat);
        ensure(pat_valid(pat), Rule::GuestPat, F::GuestIa32Pat, pat)?;
    }
    if c.entry & entry::LOAD_IA32_BNDCFGS != 0 {
        let b = v.get(F::GuestIa32Bndcfgs);
        ensure(
            b & 0xffc == 0 && canonical(b & !0xfff),
            Rule::GuestBndcfgs,
            F::GuestIa32Bndcfgs,
            b,
        )?;
    }
    if c.entry & entry::LOAD_IA32_EFER != 0 {
        let e = v.get(F::GuestIa32Efer);
        ensure(
            e & !efer::DEFINED == 0,
            Rule::GuestEferReserved,
            F::GuestIa32Efer,
            e,
        )?;
        ensure(
            (e & efer::LMA != 0) == c.ia32e_guest(),
            Rule::GuestEferLma,
            F::GuestIa32Efer,
            e,
        )?;
        ensure(
            gcr0 & cr0::PG == 0 || (e & efer::LME != 0) == c.ia32e_guest(),
            Rule::GuestEferLme,
            F::GuestIa32Efer,
            e,
        )?;
    }
    Ok(())
}

/// §27.3.1.2 segment registers.
fn check_guest_segments(v: &Vmcs) -> CheckResult {
    let c = Controls::of(v);
    let unrestricted = c.unrestricted();
    let ia32e = c.ia32e_guest();
    let gcr0 = v.get(F::GuestCr0);
    let es = Segment::read(v, ES);
    let cs = Segment::read(v, CS);
    let ss = Segment::read(v, SS);
    let ds = Segment::read(v, DS);
    let fs = Segment::read(v, FS);
    let gs = Segment::read(v, GS);
    let ldtr = Segment::read(v, LDTR);
    let tr = Segment::read(v, TR);
    let v86 = v.get(F::GuestRflags) & rflags::VM != 0;

    // Selectors.
    ensure(
        tr.selector & 4 == 0,
        Rule::TrTi,
        TR.selector,
        u64::from(tr.selector),
    )?;
    if ldtr.usable() {
        ensure(
            ldtr.selector & 4 == 0,
            Rule::LdtrTi,
            LDTR.selector,
            u64::from(ldtr.selector),
        )?;
    }
    if !v86 && !unrestricted {
        ensure(
            ss.rpl() == cs.rpl(),
            Rule::SsRpl,
            SS.selector,
            u64::from(ss.selector),
        )?;
    }

    // Base addresses.
    for s in [&tr, &fs, &gs] {
        ensure(
            canonical(s.base),
            Rule::BaseCanonical,
            s.fields.base,
            s.base,
        )?;
    }
    if ldtr.usable() {
        ensure(
            canonical(ldtr.base),
            Rule::BaseCanonical,
            LDTR.base,
            ldtr.base,
        )?;
    }
    ensure(cs.base >> 32 == 0, Rule::BaseHigh, CS.base, cs.base)?;
    for s in [&ss, &ds, &es] {
        if s.usable() {
            ensure(s.base >> 32 == 0, Rule::BaseHigh, s.fields.base, s.base)?;
        }
    }

    if v86 {
        for s in [&cs, &ss, &ds, &es, &fs, &gs] {
            let expected = u64::from(s.selector) << 4;
            ensure(s.base == expected, Rule::V86Base, s.fields.base, s.base)?;
            ensure(
                s.limit == 0xffff,
                Rule::V86Limit,
                s.fields.limit,
                u64::from(s.limit),
            )?;
            ensure(
                s.ar.0 == 0xf3,
                Rule::V86AccessRights,
                s.fields.ar,
                s.ar_value(),
            )?;
        }
    } else {
        // Types.
        let cs_type = cs.ar.typ();
        let cs_type_ok = matches!(cs_type, 9 | 11 | 13 | 15) || (unrestricted && cs_type == 3);
        ensure(cs_type_ok, Rule::CsType, CS.ar, cs.ar_value())?;
        if ss.usable() {
            ensure(
                matches!(ss.ar.typ(), 3 | 7),
                Rule::SsType,
                SS.ar,
                ss.ar_value(),
            )?;
        }
        for s in [&ds, &es, &fs, &gs] {
            if s.usable() {
                let t = s.ar.typ();
                ensure(t & 1 != 0, Rule::DataAccessed, s.fields.ar, s.ar_value())?;
                ensure(
                    t & 8 == 0 || t & 2 != 0,
                    Rule::DataCodeReadable,
                    s.fields.ar,
                    s.ar_value(),
                )?;
            }
        }
        // S.
        ensure(
            cs.ar.is_code_or_data(),
            Rule::CodeDataS,
            CS.ar,
            cs.ar_value(),
        )?;
        for s in [&ss, &ds, &es, &fs, &gs] {
            if s.usable() {
                ensure(
                    s.ar.is_code_or_data(),
                    Rule::CodeDataS,
                    s.fields.ar,
                    s.ar_value(),
                )?;
            }
        }
        // DPL.
        match cs_type {
            3 => ensure(cs.ar.dpl() == 0, Rule::CsDplData, CS.ar, cs.ar_value())?,
            9 | 11 => ensure(
                cs.ar.dpl() == ss.ar.dpl(),
                Rule::CsDplNonConforming,
                CS.ar,
                cs.ar_value(),
            )?,
            _ => ensure(
                cs.ar.dpl() <= ss.ar.dpl(),
                Rule::CsDplConforming,
                CS.ar,
                cs.ar_value(),
            )?,
        }
        if !unrestricted {
            ensure(
                ss.ar.dpl() == ss.rpl(),
                Rule::SsDplRpl,
                SS.ar,
                ss.ar_value(),
            )?;
        }
        ensure(
            !(cs_type == 3 || gcr0 & cr0::PE == 0) || ss.ar.dpl() == 0,
            Rule::SsDplZero,
            SS.ar,
            ss.ar_value(),
        )?;
        if !unrestricted {
            for s in [&ds, &es, &fs, &gs] {
                if s.usable() && s.ar.typ() <= 11 {
                    ensure(
                        s.ar.dpl() >= s.rpl(),
                        Rule::DataDpl,
                        s.fields.ar,
                        s.ar_value(),
                    )?;
                }
            }
        }
        // P, reserved bits, L/D, G.
        cs.check_present()?;
        for s in [&ss, &ds, &es, &fs, &gs] {
            if s.usable() {
                s.check_present()?;
            }
        }
        cs.check_reserved()?;
        for s in [&ss, &ds, &es, &fs, &gs] {
            if s.usable() {
                s.check_reserved()?;
            }
        }
        ensure(
            !(ia32e && cs.ar.long() && cs.ar.default_big()),
            Rule::CsLongDefault,
            CS.ar,
            cs.ar_value(),
        )?;
        cs.check_granularity()?;
        for s in [&ss, &ds, &es, &fs, &gs] {
            if s.usable() {
                s.check_granularity()?;
            }
        }
    }

    // TR.
    let tr_type_ok = tr.ar.typ() == 11 || (!ia32e && tr.ar.typ() == 3);
    ensure(tr_type_ok, Rule::TrType, TR.ar, tr.ar_value())?;
    ensure(
        !tr.ar.is_code_or_data(),
        Rule::SystemSegmentS,
        TR.ar,
        tr.ar_value(),
    )?;
    tr.check_present()?;
    tr.check_reserved()?;
    tr.check_granularity()?;
    ensure(tr.usable(), Rule::TrUsable, TR.ar, tr.ar_value())?;

    // LDTR.
    if ldtr.usable() {
        ensure(ldtr.ar.typ() == 2, Rule::LdtrType, LDTR.ar, ldtr.ar_value())?;
        ensure(
            !ldtr.ar.is_code_or_data(),
            Rule::SystemSegmentS,
            LDTR.ar,
            ldtr.ar_value(),
        )?;
        ldtr.check_present()?;
        ldtr.check_reserved()?;
        ldtr.check_granularity()?;
    }
    Ok(())
}

/// §27.3.1.3 GDTR and IDTR.
fn check_guest_descriptor_tables(v: &Vmcs) -> CheckResult {
    for field in [F::GuestGdtrBase, F::GuestIdtrBase] {
        let base = v.get(field);
        ensure(canonical(base), Rule::DescriptorTableBase, field, base)?;
    }
    for field in [F::GuestGdtrLimit, F::GuestIdtrLimit] {
        let limit = v.get(field);
        ensure(limit >> 16 == 0, Rule::DescriptorTableLimit, field, limit)?;
    }
    Ok(())
}

/// §27.3.1.4 RIP and RFLAGS.
fn check_guest_rip_rflags(v: &Vmcs) -> CheckResult {
    let c = Controls::of(v);
    let rip = v.get(F::GuestRip);
    let cs = AccessRights(v.get(F::GuestCsAccessRights) as u32);
    if c.ia32e_guest() && cs.long() {
        ensure(canonical(rip), Rule::RipCanonical, F::GuestRip, rip)?;
    } else {
        ensure(rip >> 32 == 0, Rule::RipHigh, F::GuestRip, rip)?;
    }
    let fl = v.get(F::GuestRflags);
    let reserved = !0x3f_ffff | 1 << 15 | 1 << 5 | 1 << 3;
    ensure(
        fl & reserved == 0 && fl & rflags::FIXED1 != 0,
        Rule::RflagsReserved,
        F::GuestRflags,
        fl,
    )?;
    let pe = v.get(F::GuestCr0) & cr0::PE != 0;
    ensure(
        fl & rflags::VM == 0 || (!c.ia32e_guest() && pe),
        Rule::RflagsVm,
        F::GuestRflags,
        fl,
    )?;
    let info = InterruptionInfo(v.get(F::VmEntryInterruptionInfo) as u32);
    let ext_int = info.is_valid() && info.kind() == InterruptionType::ExternalInterrupt;
    ensure(
        !ext_int || fl & rflags::IF != 0,
        Rule::RflagsIf,
        F::GuestRflags,
        fl,
    )
}

/// Whether the activity state `state` lets VM entry inject `info` (§27.3.1.5).
fn injection_allowed(state: ActivityState, info: InterruptionInfo) -> bool {
    use InterruptionType as T;
    match state {
        ActivityState::Active => true,
        ActivityState::Hlt => match info.kind() {
            T::ExternalInterrupt | T::Nmi => true,
            T::HardwareException => matches!(info.vector(), 1 | 18),
            T::OtherEvent => info.vector() == 0,
            _ => false,
        },
        ActivityState::Shutdown => match info.kind() {
            T::Nmi => true,
            T::HardwareException => info.vector() == 18,
            _ => false,
        },
        ActivityState::WaitForSipi => false,
    }
}

/// §27.3.1.5 activity state, interruptibility state, pending debug exceptions and the VMCS
/// link pointer.
fn check_guest_non_register_state<M: PhysMemory>(
    v: &Vmcs,
    m: &VmxModel,
    ctx: &EntryContext,
    mem: &mut M,
) -> CheckResult {
    let c = Controls::of(v);
    let info_raw = v.get(F::VmEntryInterruptionInfo);
    let info = InterruptionInfo(info_raw as u32);
    let injecting = |kind: InterruptionType| info.is_valid() && info.kind() == kind;
    let interruptibility = v.get(F::GuestInterruptibilityState);
    let intr32 = interruptibility as u32;
    let fl = v.get(F::GuestRflags);

    // Activity state.
    let raw_state = v.get(F::GuestActivityState);
    let state = ActivityState::from_u32(raw_state as u32).filter(|s| match s.misc_support_bit() {
        None => true,
        Some(bit) => m.caps.misc.0 & bit != 0,
    });
    let Some(state) = state else {
        return fail(Rule::ActivityUnsupported, F::GuestActivityState, raw_state);
    };
    let ss = AccessRights(v.get(F::GuestSsAccessRights) as u32);
    ensure(
        state != ActivityState::Hlt || ss.dpl() == 0,
        Rule::ActivityHltDpl,
        F::GuestActivityState,
        raw_state,
    )?;
    ensure(
        state == ActivityState::Active || intr32 & (intr::STI | intr::MOV_SS) == 0,
        Rule::ActivityBlocking,
        F::GuestActivityState,
        raw_state,
    )?;
    ensure(
        !info.is_valid() || injection_allowed(state, info),
        Rule::ActivityInjection,
        F::GuestActivityState,
        raw_state,
    )?;
    // "Entry to SMM" with wait-for-SIPI: the control cannot be 1 outside SMM (§27.2.1.3).

    // Interruptibility state.
    let field = F::GuestInterruptibilityState;
    ensure(
        intr32 & intr::RESERVED == 0,
        Rule::InterruptibilityReserved,
        field,
        interruptibility,
    )?;
    ensure(
        intr32 & intr::ENCLAVE_INTERRUPTION == 0,
        Rule::InterruptibilityEnclave,
        field,
        interruptibility,
    )?;
    ensure(
        intr32 & (intr::STI | intr::MOV_SS) != intr::STI | intr::MOV_SS,
        Rule::InterruptibilityStiMovSs,
        field,
        interruptibility,
    )?;
    ensure(
        intr32 & intr::STI == 0 || fl & rflags::IF != 0,
        Rule::InterruptibilityStiIf,
        field,
        interruptibility,
    )?;
    ensure(
        !injecting(InterruptionType::ExternalInterrupt) || intr32 & (intr::STI | intr::MOV_SS) == 0,
        Rule::InterruptibilityExtInt,
        field,
        interruptibility,
    )?;
    let nmi = injecting(InterruptionType::Nmi);
    ensure(
        !nmi || intr32 & intr::MOV_SS == 0,
        Rule::InterruptibilityNmiMovSs,
        field,
        interruptibility,
    )?;
    ensure(
        intr32 & intr::SMI == 0,
        Rule::InterruptibilitySmi,
        field,
        interruptibility,
    )?;
    ensure(
        !nmi || intr32 & intr::STI == 0,
        Rule::InterruptibilityNmiSti,
        field,
        interruptibility,
    )?;
    ensure(
        !(nmi && c.pin & pin_based::VIRTUAL_NMIS != 0) || intr32 & intr::NMI == 0,
        Rule::InterruptibilityVirtualNmi,
        field,
        interruptibility,
    )?;

    // Pending debug exceptions.
    let field = F::GuestPendingDebugExceptions;
    let pending = v.get(field);
    ensure(
        pending & pending_debug::RESERVED == 0,
        Rule::PendingDebugReserved,
        field,
        pending,
    )?;
    ensure(
        pending & pending_debug::RTM == 0,
        Rule::PendingDebugRtm,
        field,
        pending,
    )?;
    if intr32 & (intr::STI | intr::MOV_SS) != 0 || state == ActivityState::Hlt {
        let tf = fl & rflags::TF != 0;
        let btf = v.get(F::GuestIa32Debugctl) & DEBUGCTL_BTF != 0;
        let bs = pending & pending_debug::BS != 0;
        if tf && !btf {
            ensure(bs, Rule::PendingDebugBsSet, field, pending)?;
        } else {
            ensure(!bs, Rule::PendingDebugBsClear, field, pending)?;
        }
    }

    // VMCS link pointer.
    let field = F::VmcsLinkPointer;
    let link = v.get(field);
    if link != u64::MAX {
        ensure(
            link & 0xfff == 0 && within(link, m.maxphyaddr),
            Rule::LinkPointerAddress,
            field,
            link,
        )?;
        // A pointer outside memory reads as no valid VMCS.
        let Ok((revision, shadow)) = Vmcs::read_header(mem, Hpa::new(link)) else {
            return fail(Rule::LinkPointerRevision, field, link);
        };
        ensure(
            revision == m.caps.basic.revision(),
            Rule::LinkPointerRevision,
            field,
            link,
        )?;
        let shadowing = c.secondary & secondary_proc::VMCS_SHADOWING != 0;
        ensure(shadow == shadowing, Rule::LinkPointerShadow, field, link)?;
        ensure(
            link != ctx.current_vmcs.raw(),
            Rule::LinkPointerCurrent,
            field,
            link,
        )?;
    }
    Ok(())
}

/// §27.3.1.6 PDPTEs, for a guest with PAE paging (CR0.PG, CR4.PAE, not IA-32e mode): the
/// guest-PDPTE fields with EPT, else the table at guest CR3 (which this implementation always
/// checks, as the SDM allows; a table outside memory fails the same way).
fn check_guest_pdptes<M: PhysMemory>(v: &Vmcs, m: &VmxModel, mem: &mut M) -> CheckResult {
    let c = Controls::of(v);
    let pae =
        v.get(F::GuestCr0) & cr0::PG != 0 && v.get(F::GuestCr4) & cr4::PAE != 0 && !c.ia32e_guest();
    if !pae {
        return Ok(());
    }
    if c.secondary & secondary_proc::ENABLE_EPT != 0 {
        let fields = [
            F::GuestPdpte0,
            F::GuestPdpte1,
            F::GuestPdpte2,
            F::GuestPdpte3,
        ];
        let entries = fields.map(|f| v.get(f));
        Pdptes::new(entries, m.maxphyaddr).map(|_| ()).map_err(|e| {
            let field = fields.get(e.index).copied().unwrap_or(F::GuestPdpte0);
            EntryCheckFailure {
                rule: Rule::Pdpte,
                field,
                value: e.entry,
                bits: None,
            }
        })
    } else {
        let cr3 = v.get(F::GuestCr3);
        let mut bytes = [0u8; 32];
        // Without EPT guest-physical addresses are host-physical.
        let at = Hpa::new(cr3 & x86::reg::cr3::PAE_PDPT_MASK);
        if mem.read(at, &mut bytes).is_err() {
            return fail(Rule::Pdpte, F::GuestCr3, cr3);
        }
        let mut entries = [0u64; 4];
        for (e, chunk) in entries.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *e = u64::from_le_bytes(b);
        }
        ensure(
            Pdptes::new(entries, m.maxphyaddr).is_ok(),
            Rule::Pdpte,
            F::GuestCr3,
            cr3,
        )
    }
}

#[cfg(test)]
mod tests;
