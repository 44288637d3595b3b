//! VMX controls and the guest non-register state: named bits of the pin-based, primary,
//! secondary and tertiary processor-based VM-execution controls, the primary and secondary
//! VM-exit controls and the VM-entry controls, with each class's default1 bits; the
//! interruptibility state, the activity states and the pending-debug-exceptions field.
//!
//! - Execution controls: SDM Vol. 3C §25.6.1 ("Pin-Based VM-Execution Controls") and §25.6.2
//!   ("Processor-Based VM-Execution Controls").
//! - VM-exit controls: §25.7.1; VM-entry controls: §25.8.1.
//! - Guest non-register state: §25.4.2 ("Guest Non-Register State": activity state,
//!   interruptibility state, pending debug exceptions).
//! - Default settings of reserved controls: SDM Vol. 3D §A.2 ("Reserved Controls and Default
//!   Settings") and §A.3–§A.5.
//!
//! Section numbers are those of the 2023–2024 SDM editions (chapter 25, "Virtual Machine Control
//! Structures"); older editions number the chapter 24, newer ones 27. Control values are plain
//! integers of the width of their VMCS field (`u32`, or `u64` for the tertiary and secondary
//! VM-exit controls); each class is a module of masks with a `NAMES` table for tracing and a
//! `KNOWN` mask of the bits named here.

/// Pin-based VM-execution controls (SDM Vol. 3C §25.6.1).
pub mod pin_based {
    /// External-interrupt exiting: External interrupts cause VM exits.
    pub const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    /// NMI exiting: Non-maskable interrupts cause VM exits.
    pub const NMI_EXITING: u32 = 1 << 3;
    /// Virtual NMIs: NMIs are never blocked and the "blocking by NMI" bit tracks virtual-NMI blocking.
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    /// Activate VMX-preemption timer: The VMX-preemption timer counts down in non-root operation.
    pub const ACTIVATE_PREEMPTION_TIMER: u32 = 1 << 6;
    /// Process posted interrupts: Interrupts with the posted-interrupt notification vector are processed as posted.
    pub const PROCESS_POSTED_INTERRUPTS: u32 = 1 << 7;
    /// The default1 class (SDM Vol. 3D §A.3.1): reserved bits that the non-TRUE capability MSR
    /// reports as fixed to 1 and that a VMCS must set unless the TRUE MSR allows 0.
    pub const DEFAULT1: u32 = 1 << 1 | 1 << 2 | 1 << 4;
    /// Every named control with its SDM name, in bit order.
    pub const NAMES: &[(u32, &str)] = &[
        (EXTERNAL_INTERRUPT_EXITING, "External-interrupt exiting"),
        (NMI_EXITING, "NMI exiting"),
        (VIRTUAL_NMIS, "Virtual NMIs"),
        (ACTIVATE_PREEMPTION_TIMER, "Activate VMX-preemption timer"),
        (PROCESS_POSTED_INTERRUPTS, "Process posted interrupts"),
    ];
    /// The union of the named controls.
    pub const KNOWN: u32 = EXTERNAL_INTERRUPT_EXITING
        | NMI_EXITING
        | VIRTUAL_NMIS
        | ACTIVATE_PREEMPTION_TIMER
        | PROCESS_POSTED_INTERRUPTS;
}

/// Primary processor-based VM-execution controls (SDM Vol. 3C §25.6.2).
pub mod primary_proc {
    /// Interrupt-window exiting: VM exit at the start of any instruction when RFLAGS.IF = 1 and nothing blocks interrupts.
    pub const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    /// Use TSC offsetting: RDTSC, RDTSCP and RDMSR of IA32_TSC add the TSC offset.
    pub const USE_TSC_OFFSETTING: u32 = 1 << 3;
    /// HLT exiting: HLT causes a VM exit.
    pub const HLT_EXITING: u32 = 1 << 7;
    /// INVLPG exiting: INVLPG causes a VM exit.
    pub const INVLPG_EXITING: u32 = 1 << 9;
    /// MWAIT exiting: MWAIT causes a VM exit.
    pub const MWAIT_EXITING: u32 = 1 << 10;
    /// RDPMC exiting: RDPMC causes a VM exit.
    pub const RDPMC_EXITING: u32 = 1 << 11;
    /// RDTSC exiting: RDTSC and RDTSCP cause VM exits.
    pub const RDTSC_EXITING: u32 = 1 << 12;
    /// CR3-load exiting: MOV to CR3 causes a VM exit unless the value is a CR3-target value.
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    /// CR3-store exiting: MOV from CR3 causes a VM exit.
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    /// Activate tertiary controls: The tertiary processor-based controls are used.
    pub const ACTIVATE_TERTIARY_CONTROLS: u32 = 1 << 17;
    /// CR8-load exiting: MOV to CR8 causes a VM exit.
    pub const CR8_LOAD_EXITING: u32 = 1 << 19;
    /// CR8-store exiting: MOV from CR8 causes a VM exit.
    pub const CR8_STORE_EXITING: u32 = 1 << 20;
    /// Use TPR shadow: TPR virtualization and other APIC-virtualization features are enabled.
    pub const USE_TPR_SHADOW: u32 = 1 << 21;
    /// NMI-window exiting: VM exit at the start of any instruction when there is no virtual-NMI blocking.
    pub const NMI_WINDOW_EXITING: u32 = 1 << 22;
    /// MOV-DR exiting: MOV DR causes a VM exit.
    pub const MOV_DR_EXITING: u32 = 1 << 23;
    /// Unconditional I/O exiting: Every I/O instruction causes a VM exit (ignored with I/O bitmaps).
    pub const UNCONDITIONAL_IO_EXITING: u32 = 1 << 24;
    /// Use I/O bitmaps: The I/O bitmaps decide which ports cause VM exits.
    pub const USE_IO_BITMAPS: u32 = 1 << 25;
    /// Monitor trap flag: The monitor trap flag debugging feature is enabled.
    pub const MONITOR_TRAP_FLAG: u32 = 1 << 27;
    /// Use MSR bitmaps: The MSR bitmaps decide which RDMSR/WRMSR cause VM exits.
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    /// MONITOR exiting: MONITOR causes a VM exit.
    pub const MONITOR_EXITING: u32 = 1 << 29;
    /// PAUSE exiting: PAUSE causes a VM exit.
    pub const PAUSE_EXITING: u32 = 1 << 30;
    /// Activate secondary controls: The secondary processor-based controls are used.
    pub const ACTIVATE_SECONDARY_CONTROLS: u32 = 1 << 31;
    /// The default1 class (SDM Vol. 3D §A.3.2): reserved bits that the non-TRUE capability MSR
    /// reports as fixed to 1 and that a VMCS must set unless the TRUE MSR allows 0.
    pub const DEFAULT1: u32 = 1 << 1
        | 1 << 4
        | 1 << 5
        | 1 << 6
        | 1 << 8
        | 1 << 13
        | 1 << 14
        | 1 << 15
        | 1 << 16
        | 1 << 26;
    /// Every named control with its SDM name, in bit order.
    pub const NAMES: &[(u32, &str)] = &[
        (INTERRUPT_WINDOW_EXITING, "Interrupt-window exiting"),
        (USE_TSC_OFFSETTING, "Use TSC offsetting"),
        (HLT_EXITING, "HLT exiting"),
        (INVLPG_EXITING, "INVLPG exiting"),
        (MWAIT_EXITING, "MWAIT exiting"),
        (RDPMC_EXITING, "RDPMC exiting"),
        (RDTSC_EXITING, "RDTSC exiting"),
        (CR3_LOAD_EXITING, "CR3-load exiting"),
        (CR3_STORE_EXITING, "CR3-store exiting"),
        (ACTIVATE_TERTIARY_CONTROLS, "Activate tertiary controls"),
        (CR8_LOAD_EXITING, "CR8-load exiting"),
        (CR8_STORE_EXITING, "CR8-store exiting"),
        (USE_TPR_SHADOW, "Use TPR shadow"),
        (NMI_WINDOW_EXITING, "NMI-window exiting"),
        (MOV_DR_EXITING, "MOV-DR exiting"),
        (UNCONDITIONAL_IO_EXITING, "Unconditional I/O exiting"),
        (USE_IO_BITMAPS, "Use I/O bitmaps"),
        (MONITOR_TRAP_FLAG, "Monitor trap flag"),
        (USE_MSR_BITMAPS, "Use MSR bitmaps"),
        (MONITOR_EXITING, "MONITOR exiting"),
        (PAUSE_EXITING, "PAUSE exiting"),
        (ACTIVATE_SECONDARY_CONTROLS, "Activate secondary controls"),
    ];
    /// The union of the named controls.
    pub const KNOWN: u32 = INTERRUPT_WINDOW_EXITING
        | USE_TSC_OFFSETTING
        | HLT_EXITING
        | INVLPG_EXITING
        | MWAIT_EXITING
        | RDPMC_EXITING
        | RDTSC_EXITING
        | CR3_LOAD_EXITING
        | CR3_STORE_EXITING
        | ACTIVATE_TERTIARY_CONTROLS
        | CR8_LOAD_EXITING
        | CR8_STORE_EXITING
        | USE_TPR_SHADOW
        | NMI_WINDOW_EXITING
        | MOV_DR_EXITING
        | UNCONDITIONAL_IO_EXITING
        | USE_IO_BITMAPS
        | MONITOR_TRAP_FLAG
        | USE_MSR_BITMAPS
        | MONITOR_EXITING
        | PAUSE_EXITING
        | ACTIVATE_SECONDARY_CONTROLS;
}

/// Secondary processor-based VM-execution controls (SDM Vol. 3C §25.6.2).
pub mod secondary_proc {
    /// Virtualize APIC accesses: Accesses to the APIC-access page are virtualized.
    pub const VIRTUALIZE_APIC_ACCESSES: u32 = 1 << 0;
    /// Enable EPT: Extended page tables translate guest-physical addresses.
    pub const ENABLE_EPT: u32 = 1 << 1;
    /// Descriptor-table exiting: LGDT, LIDT, LLDT, LTR, SGDT, SIDT, SLDT and STR cause VM exits.
    pub const DESCRIPTOR_TABLE_EXITING: u32 = 1 << 2;
    /// Enable RDTSCP: RDTSCP does not raise #UD.
    pub const ENABLE_RDTSCP: u32 = 1 << 3;
    /// Virtualize x2APIC mode: RDMSR/WRMSR of the x2APIC MSRs are virtualized.
    pub const VIRTUALIZE_X2APIC_MODE: u32 = 1 << 4;
    /// Enable VPID: Cached translations are tagged with the VPID.
    pub const ENABLE_VPID: u32 = 1 << 5;
    /// WBINVD exiting: WBINVD and WBNOINVD cause VM exits.
    pub const WBINVD_EXITING: u32 = 1 << 6;
    /// Unrestricted guest: The guest may run unpaged or in real mode.
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    /// APIC-register virtualization: Reads of APIC registers are satisfied from the virtual-APIC page.
    pub const APIC_REGISTER_VIRTUALIZATION: u32 = 1 << 8;
    /// Virtual-interrupt delivery: Pending virtual interrupts are evaluated and delivered.
    pub const VIRTUAL_INTERRUPT_DELIVERY: u32 = 1 << 9;
    /// PAUSE-loop exiting: A series of PAUSE executions longer than PLE_Window causes a VM exit.
    pub const PAUSE_LOOP_EXITING: u32 = 1 << 10;
    /// RDRAND exiting: RDRAND causes a VM exit.
    pub const RDRAND_EXITING: u32 = 1 << 11;
    /// Enable INVPCID: INVPCID does not raise #UD.
    pub const ENABLE_INVPCID: u32 = 1 << 12;
    /// Enable VM functions: VMFUNC is enabled.
    pub const ENABLE_VM_FUNCTIONS: u32 = 1 << 13;
    /// VMCS shadowing: VMREAD/VMWRITE in non-root operation may access a shadow VMCS.
    pub const VMCS_SHADOWING: u32 = 1 << 14;
    /// Enable ENCLS exiting: The ENCLS-exiting bitmap decides which ENCLS leaves cause VM exits.
    pub const ENABLE_ENCLS_EXITING: u32 = 1 << 15;
    /// RDSEED exiting: RDSEED causes a VM exit.
    pub const RDSEED_EXITING: u32 = 1 << 16;
    /// Enable PML: Guest-physical addresses of EPT dirty-flag updates are logged.
    pub const ENABLE_PML: u32 = 1 << 17;
    /// EPT-violation #VE: Some EPT violations raise #VE instead of a VM exit.
    pub const EPT_VIOLATION_VE: u32 = 1 << 18;
    /// Conceal VMX from PT: Intel PT suppresses the packets that would reveal non-root operation.
    pub const CONCEAL_VMX_FROM_PT: u32 = 1 << 19;
    /// Enable XSAVES/XRSTORS: XSAVES and XRSTORS do not raise #UD.
    pub const ENABLE_XSAVES_XRSTORS: u32 = 1 << 20;
    /// PASID translation: ENQCMD and ENQCMDS translate PASIDs.
    pub const PASID_TRANSLATION: u32 = 1 << 21;
    /// Mode-based execute control for EPT: EPT execute permission is split into supervisor and user.
    pub const MODE_BASED_EXECUTE_CONTROL: u32 = 1 << 22;
    /// Sub-page write permissions for EPT: EPT write permission at 128-byte granularity.
    pub const SUB_PAGE_WRITE_PERMISSIONS: u32 = 1 << 23;
    /// Intel PT uses guest physical addresses: Intel PT output addresses are guest-physical and translated by EPT.
    pub const PT_USES_GUEST_PHYSICAL: u32 = 1 << 24;
    /// Use TSC scaling: RDTSC, RDTSCP and RDMSR of IA32_TSC apply the TSC multiplier.
    pub const USE_TSC_SCALING: u32 = 1 << 25;
    /// Enable user wait and pause: TPAUSE, UMONITOR and UMWAIT do not raise #UD.
    pub const ENABLE_USER_WAIT_PAUSE: u32 = 1 << 26;
    /// Enable PCONFIG: PCONFIG does not raise #UD.
    pub const ENABLE_PCONFIG: u32 = 1 << 27;
    /// Enable ENCLV exiting: The ENCLV-exiting bitmap decides which ENCLV leaves cause VM exits.
    pub const ENABLE_ENCLV_EXITING: u32 = 1 << 28;
    /// VMM bus-lock detection: A bus lock causes a VM exit.
    pub const VMM_BUS_LOCK_DETECTION: u32 = 1 << 30;
    /// Instruction timeout: A VM exit occurs if the processor makes no progress for the instruction-timeout control's time.
    pub const INSTRUCTION_TIMEOUT: u32 = 1 << 31;
    /// This class has no default1 bits (SDM Vol. 3D §A.3.3).
    pub const DEFAULT1: u32 = 0;
    /// Every named control with its SDM name, in bit order.
    pub const NAMES: &[(u32, &str)] = &[
        (VIRTUALIZE_APIC_ACCESSES, "Virtualize APIC accesses"),
        (ENABLE_EPT, "Enable EPT"),
        (DESCRIPTOR_TABLE_EXITING, "Descriptor-table exiting"),
        (ENABLE_RDTSCP, "Enable RDTSCP"),
        (VIRTUALIZE_X2APIC_MODE, "Virtualize x2APIC mode"),
        (ENABLE_VPID, "Enable VPID"),
        (WBINVD_EXITING, "WBINVD exiting"),
        (UNRESTRICTED_GUEST, "Unrestricted guest"),
        (APIC_REGISTER_VIRTUALIZATION, "APIC-register virtualization"),
        (VIRTUAL_INTERRUPT_DELIVERY, "Virtual-interrupt delivery"),
        (PAUSE_LOOP_EXITING, "PAUSE-loop exiting"),
        (RDRAND_EXITING, "RDRAND exiting"),
        (ENABLE_INVPCID, "Enable INVPCID"),
        (ENABLE_VM_FUNCTIONS, "Enable VM functions"),
        (VMCS_SHADOWING, "VMCS shadowing"),
        (ENABLE_ENCLS_EXITING, "Enable ENCLS exiting"),
        (RDSEED_EXITING, "RDSEED exiting"),
        (ENABLE_PML, "Enable PML"),
        (EPT_VIOLATION_VE, "EPT-violation #VE"),
        (CONCEAL_VMX_FROM_PT, "Conceal VMX from PT"),
        (ENABLE_XSAVES_XRSTORS, "Enable XSAVES/XRSTORS"),
        (PASID_TRANSLATION, "PASID translation"),
        (
            MODE_BASED_EXECUTE_CONTROL,
            "Mode-based execute control for EPT",
        ),
        (
            SUB_PAGE_WRITE_PERMISSIONS,
            "Sub-page write permissions for EPT",
        ),
        (
            PT_USES_GUEST_PHYSICAL,
            "Intel PT uses guest physical addresses",
        ),
        (USE_TSC_SCALING, "Use TSC scaling"),
        (ENABLE_USER_WAIT_PAUSE, "Enable user wait and pause"),
        (ENABLE_PCONFIG, "Enable PCONFIG"),
        (ENABLE_ENCLV_EXITING, "Enable ENCLV exiting"),
        (VMM_BUS_LOCK_DETECTION, "VMM bus-lock detection"),
        (INSTRUCTION_TIMEOUT, "Instruction timeout"),
    ];
    /// The union of the named controls.
    pub const KNOWN: u32 = VIRTUALIZE_APIC_ACCESSES
        | ENABLE_EPT
        | DESCRIPTOR_TABLE_EXITING
        | ENABLE_RDTSCP
        | VIRTUALIZE_X2APIC_MODE
        | ENABLE_VPID
        | WBINVD_EXITING
        | UNRESTRICTED_GUEST
        | APIC_REGISTER_VIRTUALIZATION
        | VIRTUAL_INTERRUPT_DELIVERY
        | PAUSE_LOOP_EXITING
        | RDRAND_EXITING
        | ENABLE_INVPCID
        | ENABLE_VM_FUNCTIONS
        | VMCS_SHADOWING
        | ENABLE_ENCLS_EXITING
        | RDSEED_EXITING
        | ENABLE_PML
        | EPT_VIOLATION_VE
        | CONCEAL_VMX_FROM_PT
        | ENABLE_XSAVES_XRSTORS
        | PASID_TRANSLATION
        | MODE_BASED_EXECUTE_CONTROL
        | SUB_PAGE_WRITE_PERMISSIONS
        | PT_USES_GUEST_PHYSICAL
        | USE_TSC_SCALING
        | ENABLE_USER_WAIT_PAUSE
        | ENABLE_PCONFIG
        | ENABLE_ENCLV_EXITING
        | VMM_BUS_LOCK_DETECTION
        | INSTRUCTION_TIMEOUT;
}

/// Tertiary processor-based VM-execution controls, a 64-bit field (SDM Vol. 3C §25.6.2). Bit 5 is not named here.
pub mod tertiary_proc {
    /// LOADIWKEY exiting: LOADIWKEY causes a VM exit.
    pub const LOADIWKEY_EXITING: u64 = 1 << 0;
    /// Enable HLAT: Hypervisor-managed linear-address translation is enabled.
    pub const ENABLE_HLAT: u64 = 1 << 1;
    /// EPT paging-write control: EPT permissions may allow paging-structure writes only.
    pub const EPT_PAGING_WRITE_CONTROL: u64 = 1 << 2;
    /// Guest-paging verification: EPT verifies the guest paging structures used for a translation.
    pub const GUEST_PAGING_VERIFICATION: u64 = 1 << 3;
    /// IPI virtualization: Interprocessor interrupts sent through the ICR are virtualized.
    pub const IPI_VIRTUALIZATION: u64 = 1 << 4;
    /// Enable MSR-list instructions: RDMSRLIST and WRMSRLIST do not raise #UD.
    pub const ENABLE_MSR_LIST_INSTRUCTIONS: u64 = 1 << 6;
    /// Virtualize IA32_SPEC_CTRL: Guest accesses to IA32_SPEC_CTRL use the mask and shadow fields.
    pub const VIRTUALIZE_IA32_SPEC_CTRL: u64 = 1 << 7;
    /// This class has no default1 bits (SDM Vol. 3D §A.3.4).
    pub const DEFAULT1: u64 = 0;
    /// Every named control with its SDM name, in bit order.
    pub const NAMES: &[(u64, &str)] = &[
        (LOADIWKEY_EXITING, "LOADIWKEY exiting"),
        (ENABLE_HLAT, "Enable HLAT"),
        (EPT_PAGING_WRITE_CONTROL, "EPT paging-write control"),
        (GUEST_PAGING_VERIFICATION, "Guest-paging verification"),
        (IPI_VIRTUALIZATION, "IPI virtualization"),
        (ENABLE_MSR_LIST_INSTRUCTIONS, "Enable MSR-list instructions"),
        (VIRTUALIZE_IA32_SPEC_CTRL, "Virtualize IA32_SPEC_CTRL"),
    ];
    /// The union of the named controls.
    pub const KNOWN: u64 = LOADIWKEY_EXITING
        | ENABLE_HLAT
        | EPT_PAGING_WRITE_CONTROL
        | GUEST_PAGING_VERIFICATION
        | IPI_VIRTUALIZATION
        | ENABLE_MSR_LIST_INSTRUCTIONS
        | VIRTUALIZE_IA32_SPEC_CTRL;
}

/// Primary VM-exit controls (SDM Vol. 3C §25.7.1).
pub mod exit {
    /// Save debug controls: DR7 and IA32_DEBUGCTL are saved on VM exit.
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    /// Host address-space size: The host runs in 64-bit mode after VM exit.
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    /// Load IA32_PERF_GLOBAL_CTRL: IA32_PERF_GLOBAL_CTRL is loaded on VM exit.
    pub const LOAD_IA32_PERF_GLOBAL_CTRL: u32 = 1 << 12;
    /// Acknowledge interrupt on exit: An external interrupt that causes a VM exit is acknowledged and its vector saved.
    pub const ACKNOWLEDGE_INTERRUPT_ON_EXIT: u32 = 1 << 15;
    /// Save IA32_PAT: IA32_PAT is saved on VM exit.
    pub const SAVE_IA32_PAT: u32 = 1 << 18;
    /// Load IA32_PAT: IA32_PAT is loaded on VM exit.
    pub const LOAD_IA32_PAT: u32 = 1 << 19;
    /// Save IA32_EFER: IA32_EFER is saved on VM exit.
    pub const SAVE_IA32_EFER: u32 = 1 << 20;
    /// Load IA32_EFER: IA32_EFER is loaded on VM exit.
    pub const LOAD_IA32_EFER: u32 = 1 << 21;
    /// Save VMX-preemption timer value: The preemption-timer value is saved on VM exit.
    pub const SAVE_PREEMPTION_TIMER: u32 = 1 << 22;
    /// Clear IA32_BNDCFGS: IA32_BNDCFGS is cleared on VM exit.
    pub const CLEAR_IA32_BNDCFGS: u32 = 1 << 23;
    /// Conceal VMX from PT: Intel PT does not report the VM exit.
    pub const CONCEAL_VMX_FROM_PT: u32 = 1 << 24;
    /// Clear IA32_RTIT_CTL: IA32_RTIT_CTL is cleared on VM exit.
    pub const CLEAR_IA32_RTIT_CTL: u32 = 1 << 25;
    /// Clear IA32_LBR_CTL: IA32_LBR_CTL is cleared on VM exit.
    pub const CLEAR_IA32_LBR_CTL: u32 = 1 << 26;
    /// Clear UINV: UINV is cleared on VM exit.
    pub const CLEAR_UINV: u32 = 1 << 27;
    /// Load CET state: CET state is loaded on VM exit.
    pub const LOAD_CET_STATE: u32 = 1 << 28;
    /// Load PKRS: IA32_PKRS is loaded on VM exit.
    pub const LOAD_PKRS: u32 = 1 << 29;
    /// Save IA32_PERF_GLOBAL_CTRL: IA32_PERF_GLOBAL_CTRL is saved on VM exit.
    pub const SAVE_IA32_PERF_GLOBAL_CTRL: u32 = 1 << 30;
    /// Activate secondary controls: The secondary VM-exit controls are used.
    pub const ACTIVATE_SECONDARY_CONTROLS: u32 = 1 << 31;
    /// The default1 class (SDM Vol. 3D §A.4.1): reserved bits that the non-TRUE capability MSR
    /// reports as fixed to 1 and that a VMCS must set unless the TRUE MSR allows 0.
    pub const DEFAULT1: u32 = 1 << 0
        | 1 << 1
        | 1 << 2
        | 1 << 3
        | 1 << 4
        | 1 << 5
        | 1 << 6
        | 1 << 7
        | 1 << 8
        | 1 << 10
        | 1 << 11
        | 1 << 13
        | 1 << 14
        | 1 << 16
        | 1 << 17;
    /// Every named control with its SDM name, in bit order.
    pub const NAMES: &[(u32, &str)] = &[
        (SAVE_DEBUG_CONTROLS, "Save debug controls"),
        (HOST_ADDRESS_SPACE_SIZE, "Host address-space size"),
        (LOAD_IA32_PERF_GLOBAL_CTRL, "Load IA32_PERF_GLOBAL_CTRL"),
        (
            ACKNOWLEDGE_INTERRUPT_ON_EXIT,
            "Acknowledge interrupt on exit",
        ),
        (SAVE_IA32_PAT, "Save IA32_PAT"),
        (LOAD_IA32_PAT, "Load IA32_PAT"),
        (SAVE_IA32_EFER, "Save IA32_EFER"),
        (LOAD_IA32_EFER, "Load IA32_EFER"),
        (SAVE_PREEMPTION_TIMER, "Save VMX-preemption timer value"),
        (CLEAR_IA32_BNDCFGS, "Clear IA32_BNDCFGS"),
        (CONCEAL_VMX_FROM_PT, "Conceal VMX from PT"),
        (CLEAR_IA32_RTIT_CTL, "Clear IA32_RTIT_CTL"),
        (CLEAR_IA32_LBR_CTL, "Clear IA32_LBR_CTL"),
        (CLEAR_UINV, "Clear UINV"),
        (LOAD_CET_STATE, "Load CET state"),
        (LOAD_PKRS, "Load PKRS"),
        (SAVE_IA32_PERF_GLOBAL_CTRL, "Save IA32_PERF_GLOBAL_CTRL"),
        (ACTIVATE_SECONDARY_CONTROLS, "Activate secondary controls"),
    ];
    /// The union of the named controls.
    pub const KNOWN: u32 = SAVE_DEBUG_CONTROLS
        | HOST_ADDRESS_SPACE_SIZE
        | LOAD_IA32_PERF_GLOBAL_CTRL
        | ACKNOWLEDGE_INTERRUPT_ON_EXIT
        | SAVE_IA32_PAT
        | LOAD_IA32_PAT
        | SAVE_IA32_EFER
        | LOAD_IA32_EFER
        | SAVE_PREEMPTION_TIMER
        | CLEAR_IA32_BNDCFGS
        | CONCEAL_VMX_FROM_PT
        | CLEAR_IA32_RTIT_CTL
        | CLEAR_IA32_LBR_CTL
        | CLEAR_UINV
        | LOAD_CET_STATE
        | LOAD_PKRS
        | SAVE_IA32_PERF_GLOBAL_CTRL
        | ACTIVATE_SECONDARY_CONTROLS;
}

/// Secondary VM-exit controls, a 64-bit field (SDM Vol. 3C §25.7.1).
pub mod secondary_exit {
    /// Save FRED: The guest FRED MSRs are saved on VM exit.
    pub const SAVE_FRED: u64 = 1 << 0;
    /// Load FRED: The host FRED MSRs are loaded on VM exit.
    pub const LOAD_FRED: u64 = 1 << 1;
    /// Prematurely busy shadow stack: the CET control of that name (its VM-exit reporting of a
    /// shadow stack made busy before the exit).
    pub const PREMATURELY_BUSY_SHADOW_STACK: u64 = 1 << 3;
    /// This class has no default1 bits (SDM Vol. 3D §A.4.2).
    pub const DEFAULT1: u64 = 0;
    /// Every named control with its SDM name, in bit order.
    pub const NAMES: &[(u64, &str)] = &[
        (SAVE_FRED, "Save FRED"),
        (LOAD_FRED, "Load FRED"),
        (
            PREMATURELY_BUSY_SHADOW_STACK,
            "Prematurely busy shadow stack",
        ),
    ];
    /// The union of the named controls.
    pub const KNOWN: u64 = SAVE_FRED | LOAD_FRED | PREMATURELY_BUSY_SHADOW_STACK;
}

/// VM-entry controls (SDM Vol. 3C §25.8.1).
pub mod entry {
    /// Load debug controls: DR7 and IA32_DEBUGCTL are loaded on VM entry.
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    /// IA-32e mode guest: The guest runs in IA-32e mode after VM entry.
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    /// Entry to SMM: The logical processor is in SMM after VM entry.
    pub const ENTRY_TO_SMM: u32 = 1 << 10;
    /// Deactivate dual-monitor treatment: The dual-monitor treatment of SMIs and SMM is deactivated.
    pub const DEACTIVATE_DUAL_MONITOR: u32 = 1 << 11;
    /// Load IA32_PERF_GLOBAL_CTRL: IA32_PERF_GLOBAL_CTRL is loaded on VM entry.
    pub const LOAD_IA32_PERF_GLOBAL_CTRL: u32 = 1 << 13;
    /// Load IA32_PAT: IA32_PAT is loaded on VM entry.
    pub const LOAD_IA32_PAT: u32 = 1 << 14;
    /// Load IA32_EFER: IA32_EFER is loaded on VM entry.
    pub const LOAD_IA32_EFER: u32 = 1 << 15;
    /// Load IA32_BNDCFGS: IA32_BNDCFGS is loaded on VM entry.
    pub const LOAD_IA32_BNDCFGS: u32 = 1 << 16;
    /// Conceal VMX from PT: Intel PT does not report the VM entry.
    pub const CONCEAL_VMX_FROM_PT: u32 = 1 << 17;
    /// Load IA32_RTIT_CTL: IA32_RTIT_CTL is loaded on VM entry.
    pub const LOAD_IA32_RTIT_CTL: u32 = 1 << 18;
    /// Load UINV: UINV is loaded on VM entry.
    pub const LOAD_UINV: u32 = 1 << 19;
    /// Load CET state: CET state is loaded on VM entry.
    pub const LOAD_CET_STATE: u32 = 1 << 20;
    /// Load guest IA32_LBR_CTL: IA32_LBR_CTL is loaded on VM entry.
    pub const LOAD_IA32_LBR_CTL: u32 = 1 << 21;
    /// Load PKRS: IA32_PKRS is loaded on VM entry.
    pub const LOAD_PKRS: u32 = 1 << 22;
    /// Load FRED: The guest FRED MSRs are loaded on VM entry.
    pub const LOAD_FRED: u32 = 1 << 23;
    /// The default1 class (SDM Vol. 3D §A.5): reserved bits that the non-TRUE capability MSR
    /// reports as fixed to 1 and that a VMCS must set unless the TRUE MSR allows 0.
    pub const DEFAULT1: u32 =
        1 << 0 | 1 << 1 | 1 << 2 | 1 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8 | 1 << 12;
    /// Every named control with its SDM name, in bit order.
    pub const NAMES: &[(u32, &str)] = &[
        (LOAD_DEBUG_CONTROLS, "Load debug controls"),
        (IA32E_MODE_GUEST, "IA-32e mode guest"),
        (ENTRY_TO_SMM, "Entry to SMM"),
        (DEACTIVATE_DUAL_MONITOR, "Deactivate dual-monitor treatment"),
        (LOAD_IA32_PERF_GLOBAL_CTRL, "Load IA32_PERF_GLOBAL_CTRL"),
        (LOAD_IA32_PAT, "Load IA32_PAT"),
        (LOAD_IA32_EFER, "Load IA32_EFER"),
        (LOAD_IA32_BNDCFGS, "Load IA32_BNDCFGS"),
        (CONCEAL_VMX_FROM_PT, "Conceal VMX from PT"),
        (LOAD_IA32_RTIT_CTL, "Load IA32_RTIT_CTL"),
        (LOAD_UINV, "Load UINV"),
        (LOAD_CET_STATE, "Load CET state"),
        (LOAD_IA32_LBR_CTL, "Load guest IA32_LBR_CTL"),
        (LOAD_PKRS, "Load PKRS"),
        (LOAD_FRED, "Load FRED"),
    ];
    /// The union of the named controls.
    pub const KNOWN: u32 = LOAD_DEBUG_CONTROLS
        | IA32E_MODE_GUEST
        | ENTRY_TO_SMM
        | DEACTIVATE_DUAL_MONITOR
        | LOAD_IA32_PERF_GLOBAL_CTRL
        | LOAD_IA32_PAT
        | LOAD_IA32_EFER
        | LOAD_IA32_BNDCFGS
        | CONCEAL_VMX_FROM_PT
        | LOAD_IA32_RTIT_CTL
        | LOAD_UINV
        | LOAD_CET_STATE
        | LOAD_IA32_LBR_CTL
        | LOAD_PKRS
        | LOAD_FRED;
}

/// Guest interruptibility state (SDM Vol. 3C §25.4.2, "Format of Interruptibility State").
pub mod interruptibility {
    /// Blocking by STI.
    pub const STI: u32 = 1 << 0;
    /// Blocking by MOV SS (or POP SS).
    pub const MOV_SS: u32 = 1 << 1;
    /// Blocking by SMI.
    pub const SMI: u32 = 1 << 2;
    /// Blocking by NMI (virtual-NMI blocking when "virtual NMIs" is 1).
    pub const NMI: u32 = 1 << 3;
    /// Enclave interruption: blocking was set on an asynchronous exit from an enclave.
    pub const ENCLAVE_INTERRUPTION: u32 = 1 << 4;
    /// Bits 31:5 are reserved; VM entry fails if any is set.
    pub const RESERVED: u32 = !0x1f;
}

/// The activity state of a logical processor (SDM Vol. 3C §25.4.2, "Activity state").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ActivityState {
    /// Executing instructions normally.
    Active = 0,
    /// Halted after HLT.
    Hlt = 1,
    /// Shut down after a triple fault.
    Shutdown = 2,
    /// Waiting for a start-up IPI.
    WaitForSipi = 3,
}

impl ActivityState {
    /// The state numbered `n`, or `None` for a value the SDM does not define (VM entry fails
    /// with such a value).
    pub const fn from_u32(n: u32) -> Option<Self> {
        match n {
            0 => Some(Self::Active),
            1 => Some(Self::Hlt),
            2 => Some(Self::Shutdown),
            3 => Some(Self::WaitForSipi),
            _ => None,
        }
    }

    /// The bit that reports support for this state in IA32_VMX_MISC (bits 8:6 for HLT,
    /// shutdown and wait-for-SIPI); `None` for the active state, which is always supported.
    pub const fn misc_support_bit(self) -> Option<u64> {
        match self {
            Self::Active => None,
            Self::Hlt => Some(1 << 6),
            Self::Shutdown => Some(1 << 7),
            Self::WaitForSipi => Some(1 << 8),
        }
    }
}

/// The pending-debug-exceptions field (SDM Vol. 3C §25.4.2, "Format of Pending-Debug-Exceptions").
pub mod pending_debug {
    /// B3–B0: breakpoint conditions met (bits 3:0, one per debug register).
    pub const B0_B3: u64 = 0xf;
    /// Enabled breakpoint: at least one of B3–B0 is for an enabled breakpoint.
    pub const ENABLED_BREAKPOINT: u64 = 1 << 12;
    /// BS: a single-step trap is pending.
    pub const BS: u64 = 1 << 14;
    /// RTM: a debug exception occurred inside an RTM region.
    pub const RTM: u64 = 1 << 16;
    /// The bits that must be zero on VM entry (all but those named above).
    pub const RESERVED: u64 = !(B0_B3 | ENABLED_BREAKPOINT | BS | RTM);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No two names share a bit and KNOWN is their union; returns the named default1 bits.
    fn check_u32(names: &[(u32, &str)], known: u32, default1: u32) -> u32 {
        let mut seen = 0;
        for &(bit, name) in names {
            assert_eq!(bit.count_ones(), 1, "{name}");
            assert_eq!(seen & bit, 0, "{name}");
            seen |= bit;
        }
        assert_eq!(seen, known);
        known & default1
    }

    fn check_u64(names: &[(u64, &str)], known: u64) {
        let mut seen = 0;
        for &(bit, name) in names {
            assert_eq!(bit.count_ones(), 1, "{name}");
            assert_eq!(seen & bit, 0, "{name}");
            seen |= bit;
        }
        assert_eq!(seen, known);
    }

    #[test]
    fn classes_are_consistent() {
        // The only named controls in a default1 class are the ones §A.2 lists as such: CR3-load
        // and CR3-store exiting, and saving/loading the debug controls.
        let cr3 = primary_proc::CR3_LOAD_EXITING | primary_proc::CR3_STORE_EXITING;
        assert_eq!(
            check_u32(pin_based::NAMES, pin_based::KNOWN, pin_based::DEFAULT1),
            0
        );
        let primary = check_u32(
            primary_proc::NAMES,
            primary_proc::KNOWN,
            primary_proc::DEFAULT1,
        );
        assert_eq!(primary, cr3);
        let secondary = check_u32(
            secondary_proc::NAMES,
            secondary_proc::KNOWN,
            secondary_proc::DEFAULT1,
        );
        assert_eq!(secondary, 0);
        let exit_d1 = check_u32(exit::NAMES, exit::KNOWN, exit::DEFAULT1);
        assert_eq!(exit_d1, exit::SAVE_DEBUG_CONTROLS);
        let entry_d1 = check_u32(entry::NAMES, entry::KNOWN, entry::DEFAULT1);
        assert_eq!(entry_d1, entry::LOAD_DEBUG_CONTROLS);
        check_u64(tertiary_proc::NAMES, tertiary_proc::KNOWN);
        check_u64(secondary_exit::NAMES, secondary_exit::KNOWN);
    }

    #[test]
    fn default1_classes_match_appendix_a() {
        // The values the SDM gives in §A.3.1, §A.3.2, §A.4.1 and §A.5, and that every Intel
        // processor reports in bits 31:0 of the non-TRUE capability MSRs.
        assert_eq!(pin_based::DEFAULT1, 0x0000_0016);
        assert_eq!(primary_proc::DEFAULT1, 0x0401_e172);
        assert_eq!(exit::DEFAULT1, 0x0003_6dff);
        assert_eq!(entry::DEFAULT1, 0x0000_11ff);
    }

    #[test]
    fn well_known_bit_positions() {
        assert_eq!(primary_proc::HLT_EXITING, 0x80);
        assert_eq!(primary_proc::ACTIVATE_SECONDARY_CONTROLS, 0x8000_0000);
        assert_eq!(secondary_proc::ENABLE_EPT, 0x2);
        assert_eq!(secondary_proc::UNRESTRICTED_GUEST, 0x80);
        assert_eq!(exit::HOST_ADDRESS_SPACE_SIZE, 0x200);
        assert_eq!(entry::IA32E_MODE_GUEST, 0x200);
        assert_eq!(pin_based::ACTIVATE_PREEMPTION_TIMER, 0x40);
        // FRED controls as Linux's asm/vmx.h defines them.
        assert_eq!(secondary_exit::SAVE_FRED, 1);
        assert_eq!(secondary_exit::LOAD_FRED, 2);
        assert_eq!(entry::LOAD_FRED, 0x0080_0000);
    }

    #[test]
    fn activity_states() {
        for n in 0..4 {
            assert_eq!(ActivityState::from_u32(n).map(|s| s as u32), Some(n));
        }
        assert_eq!(ActivityState::from_u32(4), None);
        assert_eq!(ActivityState::Hlt.misc_support_bit(), Some(0x40));
        assert_eq!(ActivityState::Active.misc_support_bit(), None);
    }

    #[test]
    fn non_register_state_reserved_bits() {
        assert_eq!(interruptibility::RESERVED & interruptibility::NMI, 0);
        assert_eq!(!interruptibility::RESERVED, 0x1f);
        assert_eq!(!pending_debug::RESERVED, 0x1_500f);
    }
}
