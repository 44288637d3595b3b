//! The VMX capability MSRs of the modeled processor (SDM Vol. 3D Appendix A, "VMX Capability
//! Reporting Facility"; the MSR numbers are in [`x86::msr`]).
//!
//! [`MODEL`] is the contract of the whole VMX silicon: every control whose 1-setting it allows,
//! every activity state, EPT and VPID feature it reports is a promise that the rest of the
//! silicon (VMX instructions, VM entry, non-root operation, VM exits, EPT, VPID) implements,
//! and the VM-entry checks ([`super::checks`]) test a VMCS against exactly these values. It is
//! modeled on Intel Haswell (4th-generation Core, 2013), the first generation with EPT
//! accessed/dirty flags and VMCS shadowing, restricted to what issue 5 lists: Haswell features
//! the issue does not list (TSC offsetting, TPR shadow and APIC virtualization, posted
//! interrupts, the monitor trap flag, PAUSE-loop exiting, VM functions, SMM controls, the
//! IA32_PERF_GLOBAL_CTRL controls, "VMWRITE to any field", zero-length software injection,
//! advanced EPT-violation information) are not advertised.
//!
//! The VMCS revision identifier is nestvisor's own: the region layout is implementation
//! specific ([`super::vmcs`]), so a hypervisor must not assume Intel's, as with KVM's vmcs12.
//!
//! Guest-visible only with the model switch [`crate::CpuFeatures::vmx`] (the board turns it
//! on): with it RDMSR of IA32_VMX_BASIC..=IA32_VMX_VMFUNC returns [`VmxModel::read_msr`],
//! without it CPUID.1:ECX.VMX stays 0 and RDMSR raises #GP.

use x86::msr;
use x86::reg::{cr0, cr4};
use x86::vmx::caps::{AllowedControls64, VmFuncCap};
use x86::vmx::controls::{entry, exit, pin_based, primary_proc, secondary_proc};
use x86::vmx::{
    AllowedControls, EptVpidCap, FixedBits, VmcsEnum, VmxBasic, VmxCapabilities, VmxMisc,
};

/// The VMCS revision identifier (IA32_VMX_BASIC bits 30:0): "NV" and layout version 1.
pub const REVISION_ID: u32 = 0x4e56_0001;

/// The processor's physical-address width (CPUID.80000008H:EAX[7:0]), which bounds every
/// physical address in a VMCS.
pub const MAXPHYADDR: u8 = crate::mmu::MAXPHYADDR as u8;

/// The linear-address width with 4-level paging: "canonical" means bits 63:47 are equal.
pub const LINEAR_ADDRESS_BITS: u32 = 48;

/// Everything the modeled processor reports about VMX, and what the VM-entry checks consult.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxModel {
    /// The capability MSRs. The pin-based, primary processor-based, VM-exit and VM-entry
    /// controls hold the TRUE forms (IA32_VMX_TRUE_*_CTLS), which VM entry uses because
    /// IA32_VMX_BASIC bit 55 is set (SDM Vol. 3D §A.2).
    pub caps: VmxCapabilities,
    /// IA32_VMX_CR0_FIXED0/1 (§A.7).
    pub cr0_fixed: FixedBits,
    /// IA32_VMX_CR4_FIXED0/1 (§A.8).
    pub cr4_fixed: FixedBits,
    /// The physical-address width.
    pub maxphyaddr: u8,
    /// IA32_DEBUGCTL bits that WRMSR accepts (VM entry with "load debug controls" checks the
    /// guest field against them, SDM Vol. 3C §27.3.1.1).
    pub debugctl_valid: u64,
}

/// IA32_DEBUGCTL bits of the modeled generation (SDM Vol. 3B §17.4.1 and Vol. 4 Table 2-2):
/// LBR (0), BTF (1), TR (6), BTS (7), BTINT (8), BTS_OFF_OS (9), BTS_OFF_USR (10),
/// FREEZE_LBRS_ON_PMI (11), FREEZE_PERFMON_ON_PMI (12), ENABLE_UNCORE_PMI (13),
/// FREEZE_WHILE_SMM (14), RTM_DEBUG (15). Bits 5:2 and 63:16 are reserved.
pub const DEBUGCTL_VALID: u64 = 0x3 | 0xffc0;

/// IA32_DEBUGCTL.BTF: single-step on branches (bit 1).
pub const DEBUGCTL_BTF: u64 = 1 << 1;

/// The pin-based controls allowed to be 1 (TRUE and non-TRUE MSRs agree on allowed-1).
const PIN_ALLOWED1: u32 = pin_based::DEFAULT1
    | pin_based::EXTERNAL_INTERRUPT_EXITING
    | pin_based::NMI_EXITING
    | pin_based::VIRTUAL_NMIS
    | pin_based::ACTIVATE_PREEMPTION_TIMER;

/// The primary processor-based controls allowed to be 1.
const PRIMARY_ALLOWED1: u32 = primary_proc::DEFAULT1
    | primary_proc::INTERRUPT_WINDOW_EXITING
    | primary_proc::HLT_EXITING
    | primary_proc::INVLPG_EXITING
    | primary_proc::MWAIT_EXITING
    | primary_proc::RDPMC_EXITING
    | primary_proc::RDTSC_EXITING
    | primary_proc::CR3_LOAD_EXITING
    | primary_proc::CR3_STORE_EXITING
    | primary_proc::CR8_LOAD_EXITING
    | primary_proc::CR8_STORE_EXITING
    | primary_proc::NMI_WINDOW_EXITING
    | primary_proc::MOV_DR_EXITING
    | primary_proc::UNCONDITIONAL_IO_EXITING
    | primary_proc::USE_IO_BITMAPS
    | primary_proc::USE_MSR_BITMAPS
    | primary_proc::MONITOR_EXITING
    | primary_proc::PAUSE_EXITING
    | primary_proc::ACTIVATE_SECONDARY_CONTROLS;

/// The secondary processor-based controls allowed to be 1.
const SECONDARY_ALLOWED1: u32 = secondary_proc::ENABLE_EPT
    | secondary_proc::DESCRIPTOR_TABLE_EXITING
    | secondary_proc::ENABLE_RDTSCP
    | secondary_proc::ENABLE_VPID
    | secondary_proc::WBINVD_EXITING
    | secondary_proc::UNRESTRICTED_GUEST
    | secondary_proc::RDRAND_EXITING
    | secondary_proc::ENABLE_INVPCID
    | secondary_proc::VMCS_SHADOWING
    | secondary_proc::RDSEED_EXITING;

/// The VM-exit controls allowed to be 1.
const EXIT_ALLOWED1: u32 = exit::DEFAULT1
    | exit::HOST_ADDRESS_SPACE_SIZE
    | exit::ACKNOWLEDGE_INTERRUPT_ON_EXIT
    | exit::SAVE_IA32_PAT
    | exit::LOAD_IA32_PAT
    | exit::SAVE_IA32_EFER
    | exit::LOAD_IA32_EFER
    | exit::SAVE_PREEMPTION_TIMER;

/// The VM-entry controls allowed to be 1.
const ENTRY_ALLOWED1: u32 =
    entry::DEFAULT1 | entry::IA32E_MODE_GUEST | entry::LOAD_IA32_PAT | entry::LOAD_IA32_EFER;

/// The modeled processor.
pub const MODEL: VmxModel = VmxModel {
    caps: VmxCapabilities {
        basic: VmxBasic::new(REVISION_ID, 4096, VmxBasic::MEMORY_TYPE_WB)
            .with(VmxBasic::INS_OUTS_INFO | VmxBasic::TRUE_CONTROLS),
        // TRUE forms: the default1 controls that §A.2 lets software clear are allowed-0 here
        // (CR3-load/store exiting, save/load debug controls).
        pin_based: AllowedControls {
            allowed0: pin_based::DEFAULT1,
            allowed1: PIN_ALLOWED1,
        },
        primary_proc: AllowedControls {
            allowed0: primary_proc::DEFAULT1
                & !(primary_proc::CR3_LOAD_EXITING | primary_proc::CR3_STORE_EXITING),
            allowed1: PRIMARY_ALLOWED1,
        },
        secondary_proc: AllowedControls {
            allowed0: 0,
            allowed1: SECONDARY_ALLOWED1,
        },
        tertiary_proc: AllowedControls64 { allowed1: 0 },
        exit: AllowedControls {
            allowed0: exit::DEFAULT1 & !exit::SAVE_DEBUG_CONTROLS,
            allowed1: EXIT_ALLOWED1,
        },
        secondary_exit: AllowedControls64 { allowed1: 0 },
        entry: AllowedControls {
            allowed0: entry::DEFAULT1 & !entry::LOAD_DEBUG_CONTROLS,
            allowed1: ENTRY_ALLOWED1,
        },
        // Preemption timer: one tick each time TSC bit 5 changes; 4 CR3-target values; MSR
        // lists of up to 512 entries; VM exits store EFER.LMA; HLT is the only inactive
        // activity state (issue 5 item 3: "active and HLT").
        misc: VmxMisc::new(5, 4, 0).with(VmxMisc::STORE_LMA | VmxMisc::ACTIVITY_HLT),
        ept_vpid: EptVpidCap(0).with(
            EptVpidCap::EXECUTE_ONLY
                | EptVpidCap::PAGE_WALK_4
                | EptVpidCap::MEMORY_TYPE_UC
                | EptVpidCap::MEMORY_TYPE_WB
                | EptVpidCap::PAGES_2M
                | EptVpidCap::PAGES_1G
                | EptVpidCap::INVEPT
                | EptVpidCap::ACCESSED_DIRTY
                | EptVpidCap::INVEPT_SINGLE_CONTEXT
                | EptVpidCap::INVEPT_ALL_CONTEXT
                | EptVpidCap::INVVPID
                | EptVpidCap::INVVPID_INDIVIDUAL_ADDRESS
                | EptVpidCap::INVVPID_SINGLE_CONTEXT
                | EptVpidCap::INVVPID_ALL_CONTEXT
                | EptVpidCap::INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS,
        ),
        vmfunc: VmFuncCap(0),
        fred: false,
        seam: false,
    },
    // CR0: PE, NE and PG fixed to 1 (PE and PG freed by "unrestricted guest"); bits 63:32 are
    // reserved. The values every Intel processor reports.
    cr0_fixed: FixedBits::new(cr0::PE | cr0::NE | cr0::PG, 0xffff_ffff),
    // CR4: VMXE fixed to 1; may be 1 only the bits the software CPU implements, plus VMXE.
    cr4_fixed: FixedBits::new(
        cr4::VMXE,
        cr4::DE
            | cr4::PSE
            | cr4::PAE
            | cr4::PGE
            | cr4::TSD
            | cr4::PCIDE
            | cr4::SMEP
            | cr4::SMAP
            | cr4::VMXE,
    ),
    maxphyaddr: MAXPHYADDR,
    debugctl_valid: DEBUGCTL_VALID,
};

impl VmxModel {
    /// IA32_VMX_VMCS_ENUM: the highest field index among the fields this processor supports.
    pub const fn vmcs_enum(&self) -> VmcsEnum {
        self.caps.vmcs_enum()
    }

    /// The non-TRUE form of a control MSR: the default1 controls are reported as fixed to 1.
    const fn non_true(ctl: AllowedControls, default1: u32) -> u64 {
        AllowedControls {
            allowed0: ctl.allowed0 | default1,
            allowed1: ctl.allowed1,
        }
        .to_msr()
    }

    /// The value RDMSR of capability MSR `index` returns, or `None` for an MSR outside the
    /// VMX capability range or one this processor does not implement (tertiary controls,
    /// secondary VM-exit controls: RDMSR raises #GP).
    pub const fn read_msr(&self, index: u32) -> Option<u64> {
        let c = &self.caps;
        Some(match index {
            msr::IA32_VMX_BASIC => c.basic.0,
            msr::IA32_VMX_PINBASED_CTLS => Self::non_true(c.pin_based, pin_based::DEFAULT1),
            msr::IA32_VMX_PROCBASED_CTLS => Self::non_true(c.primary_proc, primary_proc::DEFAULT1),
            msr::IA32_VMX_EXIT_CTLS => Self::non_true(c.exit, exit::DEFAULT1),
            msr::IA32_VMX_ENTRY_CTLS => Self::non_true(c.entry, entry::DEFAULT1),
            msr::IA32_VMX_MISC => c.misc.0,
            msr::IA32_VMX_CR0_FIXED0 => self.cr0_fixed.fixed0,
            msr::IA32_VMX_CR0_FIXED1 => self.cr0_fixed.fixed1,
            msr::IA32_VMX_CR4_FIXED0 => self.cr4_fixed.fixed0,
            msr::IA32_VMX_CR4_FIXED1 => self.cr4_fixed.fixed1,
            msr::IA32_VMX_VMCS_ENUM => self.vmcs_enum().0,
            msr::IA32_VMX_PROCBASED_CTLS2 => c.secondary_proc.to_msr(),
            msr::IA32_VMX_EPT_VPID_CAP => c.ept_vpid.0,
            msr::IA32_VMX_TRUE_PINBASED_CTLS => c.pin_based.to_msr(),
            msr::IA32_VMX_TRUE_PROCBASED_CTLS => c.primary_proc.to_msr(),
            msr::IA32_VMX_TRUE_EXIT_CTLS => c.exit.to_msr(),
            msr::IA32_VMX_TRUE_ENTRY_CTLS => c.entry.to_msr(),
            msr::IA32_VMX_VMFUNC => c.vmfunc.0,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x86::vmx::caps::InvvpidType;
    use x86::vmx::controls::{pin_based as pin, primary_proc as p1, secondary_proc as p2};
    use x86::vmx::{VmcsField, caps::InveptType};

    /// Every control whose 1-setting is advertised, with the issue 5 item that plans it. The
    /// reserved default1 bits are not listed: they have no function.
    const PLANNED: &[(Class, u32, &str)] = &[
        (
            Class::Pin,
            pin::EXTERNAL_INTERRUPT_EXITING,
            "4: external-interrupt exiting",
        ),
        (Class::Pin, pin::NMI_EXITING, "4: NMI exiting"),
        (Class::Pin, pin::VIRTUAL_NMIS, "4: virtual NMIs"),
        (
            Class::Pin,
            pin::ACTIVATE_PREEMPTION_TIMER,
            "1, 4: preemption timer",
        ),
        (
            Class::Primary,
            p1::INTERRUPT_WINDOW_EXITING,
            "4: interrupt window",
        ),
        (Class::Primary, p1::HLT_EXITING, "4: HLT"),
        (Class::Primary, p1::INVLPG_EXITING, "4: INVLPG"),
        (Class::Primary, p1::MWAIT_EXITING, "4: MWAIT"),
        (Class::Primary, p1::RDPMC_EXITING, "4: RDPMC"),
        (Class::Primary, p1::RDTSC_EXITING, "4: RDTSC(P)"),
        (
            Class::Primary,
            p1::CR3_LOAD_EXITING,
            "4: MOV CR, CR3-target values",
        ),
        (Class::Primary, p1::CR3_STORE_EXITING, "4: MOV CR"),
        (Class::Primary, p1::CR8_LOAD_EXITING, "4: MOV CR"),
        (Class::Primary, p1::CR8_STORE_EXITING, "4: MOV CR"),
        (Class::Primary, p1::NMI_WINDOW_EXITING, "4: NMI window"),
        (Class::Primary, p1::MOV_DR_EXITING, "4: MOV DR"),
        (Class::Primary, p1::UNCONDITIONAL_IO_EXITING, "4: I/O"),
        (Class::Primary, p1::USE_IO_BITMAPS, "1, 4: I/O bitmaps"),
        (Class::Primary, p1::USE_MSR_BITMAPS, "1, 4: MSR bitmaps"),
        (Class::Primary, p1::MONITOR_EXITING, "4: MONITOR"),
        (Class::Primary, p1::PAUSE_EXITING, "4: PAUSE"),
        (
            Class::Primary,
            p1::ACTIVATE_SECONDARY_CONTROLS,
            "1: EPT, VPID, ...",
        ),
        (Class::Secondary, p2::ENABLE_EPT, "1, 5: EPT"),
        (
            Class::Secondary,
            p2::DESCRIPTOR_TABLE_EXITING,
            "4: descriptor-table exiting",
        ),
        (Class::Secondary, p2::ENABLE_RDTSCP, "4: RDTSC(P)"),
        (Class::Secondary, p2::ENABLE_VPID, "1, 5: VPID"),
        (Class::Secondary, p2::WBINVD_EXITING, "4: WBINVD"),
        (
            Class::Secondary,
            p2::UNRESTRICTED_GUEST,
            "1: unrestricted guest",
        ),
        (Class::Secondary, p2::RDRAND_EXITING, "4: RDRAND"),
        (Class::Secondary, p2::ENABLE_INVPCID, "4: INVPCID"),
        (Class::Secondary, p2::VMCS_SHADOWING, "1, 6: VMCS shadowing"),
        (Class::Secondary, p2::RDSEED_EXITING, "4: RDSEED"),
        (
            Class::Exit,
            exit::HOST_ADDRESS_SPACE_SIZE,
            "4: load host state (27.5)",
        ),
        (
            Class::Exit,
            exit::ACKNOWLEDGE_INTERRUPT_ON_EXIT,
            "4: acknowledge on exit",
        ),
        (Class::Exit, exit::SAVE_IA32_PAT, "4: save guest state"),
        (
            Class::Exit,
            exit::LOAD_IA32_PAT,
            "4: load host state (27.5)",
        ),
        (Class::Exit, exit::SAVE_IA32_EFER, "4: save guest state"),
        (
            Class::Exit,
            exit::LOAD_IA32_EFER,
            "4: load host state (27.5)",
        ),
        (
            Class::Exit,
            exit::SAVE_PREEMPTION_TIMER,
            "1, 4: preemption timer",
        ),
        (
            Class::Entry,
            entry::IA32E_MODE_GUEST,
            "3: loading guest state",
        ),
        (Class::Entry, entry::LOAD_IA32_PAT, "3: loading guest state"),
        (
            Class::Entry,
            entry::LOAD_IA32_EFER,
            "3: loading guest state",
        ),
    ];

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Class {
        Pin,
        Primary,
        Secondary,
        Exit,
        Entry,
    }

    fn planned(class: Class) -> u32 {
        PLANNED
            .iter()
            .filter(|(c, _, _)| *c == class)
            .fold(0, |acc, (_, bit, _)| acc | bit)
    }

    #[test]
    fn every_advertised_control_is_planned_by_issue_5() {
        let c = MODEL.caps;
        let table = [
            (Class::Pin, c.pin_based, pin::DEFAULT1),
            (Class::Primary, c.primary_proc, p1::DEFAULT1),
            (Class::Secondary, c.secondary_proc, p2::DEFAULT1),
            (Class::Exit, c.exit, exit::DEFAULT1),
            (Class::Entry, c.entry, entry::DEFAULT1),
        ];
        for (class, allowed, default1) in table {
            // Functional controls advertised = the planned list, exactly (CR3-load/store
            // exiting and the debug controls are default1 controls with a function).
            assert_eq!(
                allowed.allowed1 & !default1,
                planned(class) & !default1,
                "{class:?}"
            );
            assert_eq!(
                allowed.allowed1 & planned(class),
                planned(class),
                "{class:?}"
            );
            // The default1 reserved bits may be 1 (they are fixed to 1 in the non-TRUE MSRs).
            assert_eq!(allowed.allowed1 & default1, default1, "{class:?}");
            // Well-formed: what must be 1 may be 1.
            assert_eq!(allowed.allowed0 & !allowed.allowed1, 0, "{class:?}");
        }
        assert_eq!(c.tertiary_proc.allowed1, 0);
        assert_eq!(c.secondary_exit.allowed1, 0);
        assert_eq!(c.vmfunc.0, 0);
    }

    #[test]
    fn features_of_issue_5_item_1() {
        let c = MODEL.caps;
        assert!(c.basic.true_controls());
        assert_eq!(c.basic.revision(), REVISION_ID);
        assert_eq!(c.basic.region_size(), 4096);
        let ept = c.ept_vpid;
        assert!(ept.has(EptVpidCap::PAGES_2M | EptVpidCap::PAGES_1G));
        assert!(ept.has(EptVpidCap::ACCESSED_DIRTY | EptVpidCap::PAGE_WALK_4));
        for kind in [InveptType::SingleContext, InveptType::Global] {
            assert!(ept.supports_invept(kind));
        }
        for n in 0..4 {
            let kind = InvvpidType::from_u64(n).expect("INVVPID types 0-3 exist");
            assert!(ept.supports_invvpid(kind));
        }
        assert!(!ept.has(EptVpidCap::PAGE_WALK_5 | EptVpidCap::ADVANCED_EXIT_INFO));
        // Only HLT beside the active state; no VMWRITE to exit-information fields, so that
        // VM-instruction error 13 exists; no zero-length software injection.
        assert_eq!(c.misc.activity_states(), VmxMisc::ACTIVITY_HLT);
        assert!(!c.misc.vmwrite_any_field() && !c.misc.inject_zero_length());
        assert_eq!(c.misc.cr3_target_count(), 4);
        assert!(c.supports_field(VmcsField::VmxPreemptionTimerValue));
        assert!(c.supports_field(VmcsField::VmreadBitmapAddress));
        assert!(!c.supports_field(VmcsField::VirtualApicAddress));
    }

    #[test]
    fn msr_values() {
        // The non-TRUE MSRs report the default1 bits as fixed to 1 (§A.3–A.5).
        let table = [
            (
                msr::IA32_VMX_PINBASED_CTLS,
                msr::IA32_VMX_TRUE_PINBASED_CTLS,
                0x16,
                0x16,
            ),
            (
                msr::IA32_VMX_PROCBASED_CTLS,
                msr::IA32_VMX_TRUE_PROCBASED_CTLS,
                0x0401_e172,
                0x0400_6172,
            ),
            (
                msr::IA32_VMX_EXIT_CTLS,
                msr::IA32_VMX_TRUE_EXIT_CTLS,
                0x0003_6dff,
                0x0003_6dfb,
            ),
            (
                msr::IA32_VMX_ENTRY_CTLS,
                msr::IA32_VMX_TRUE_ENTRY_CTLS,
                0x11ff,
                0x11fb,
            ),
        ];
        for (plain, true_, a0, true_a0) in table {
            let plain = MODEL.read_msr(plain).expect("implemented");
            let true_ = MODEL.read_msr(true_).expect("implemented");
            assert_eq!(plain as u32, a0);
            assert_eq!(true_ as u32, true_a0);
            assert_eq!(plain >> 32, true_ >> 32, "allowed-1 settings agree");
        }
        assert_eq!(
            MODEL.read_msr(msr::IA32_VMX_BASIC),
            Some(0x00d8_1000_4e56_0001)
        );
        assert_eq!(
            MODEL.read_msr(msr::IA32_VMX_EPT_VPID_CAP),
            Some(0x0f01_0633_4141)
        );
        assert_eq!(MODEL.read_msr(msr::IA32_VMX_CR0_FIXED0), Some(0x8000_0021));
        assert_eq!(MODEL.read_msr(msr::IA32_VMX_CR4_FIXED0), Some(0x2000));
        assert_eq!(MODEL.read_msr(msr::IA32_VMX_MISC), Some(0x0004_0065));
        assert_eq!(MODEL.read_msr(msr::IA32_VMX_PROCBASED_CTLS3), None);
        assert_eq!(MODEL.read_msr(msr::IA32_VMX_EXIT_CTLS2), None);
        assert_eq!(MODEL.read_msr(msr::IA32_EFER), None);
        // Every field up to the preemption-timer value (index 0x17) exists.
        assert_eq!(MODEL.vmcs_enum().highest_index(), 0x17);
        assert_eq!(
            MODEL.read_msr(msr::IA32_VMX_VMCS_ENUM),
            Some(MODEL.vmcs_enum().0)
        );
        assert_eq!(MAXPHYADDR, 39);
    }
}
