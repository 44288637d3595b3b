//! Model-specific register numbers and the bit layouts of the MSRs nestvisor interprets.
//!
//! Numbers and names follow SDM Vol. 4 §2.1 ("Architectural MSRs", Table 2-2); the VMX capability
//! MSRs are described in SDM Vol. 3D Appendix A, the APIC base and x2APIC MSRs in Vol. 3A §11.4.4
//! and §11.12 ("Extended XAPIC (x2APIC)", Table 11-6), the MTRRs and the PAT in Vol. 3A §12.11 and
//! §12.12 ("Memory Cache Control"), IA32_FEATURE_CONTROL in Vol. 3C §24.7 ("Enabling and Entering
//! VMX Operation"). Section numbers are those of the 2023–2024 SDM editions; later editions
//! renumber chapters, so every citation also names the section.
//!
//! MSR numbers are plain `u32` constants (the value of ECX for RDMSR/WRMSR); bit layouts are
//! modules of `u64` masks, like the register modules of [`crate::reg`].

/// IA32_TIME_STAMP_COUNTER: the TSC (RDTSC reads it).
pub const IA32_TSC: u32 = 0x10;
/// IA32_APIC_BASE: local APIC base address and mode; layout in [`apic_base`].
pub const IA32_APIC_BASE: u32 = 0x1b;
/// IA32_FEATURE_CONTROL: VMXON enable and lock; layout in [`feature_control`].
pub const IA32_FEATURE_CONTROL: u32 = 0x3a;
/// IA32_TSC_ADJUST: the adjustment that WRMSR to the TSC applies (SDM Vol. 3B §18.17.3).
pub const IA32_TSC_ADJUST: u32 = 0x3b;
/// IA32_SPEC_CTRL: speculation control (IBRS, STIBP, SSBD); layout in [`spec_ctrl`].
pub const IA32_SPEC_CTRL: u32 = 0x48;
/// IA32_PRED_CMD: prediction command (write-only; bit 0 is IBPB).
pub const IA32_PRED_CMD: u32 = 0x49;
/// IA32_MTRRCAP: MTRR capabilities (read-only); layout in [`mtrrcap`].
pub const IA32_MTRRCAP: u32 = 0xfe;
/// IA32_SYSENTER_CS: SYSENTER target code-segment selector.
pub const IA32_SYSENTER_CS: u32 = 0x174;
/// IA32_SYSENTER_ESP: SYSENTER target stack pointer.
pub const IA32_SYSENTER_ESP: u32 = 0x175;
/// IA32_SYSENTER_EIP: SYSENTER target instruction pointer.
pub const IA32_SYSENTER_EIP: u32 = 0x176;
/// IA32_MCG_CAP: machine-check global capabilities (read-only).
pub const IA32_MCG_CAP: u32 = 0x179;
/// IA32_MCG_STATUS: machine-check global status.
pub const IA32_MCG_STATUS: u32 = 0x17a;
/// IA32_MISC_ENABLE: miscellaneous processor features; layout in [`misc_enable`].
pub const IA32_MISC_ENABLE: u32 = 0x1a0;
/// IA32_DEBUGCTL: last-branch recording and branch trap control; layout in [`debugctl`].
pub const IA32_DEBUGCTL: u32 = 0x1d9;
/// IA32_MTRR_PHYSBASE0: base of variable-range MTRR 0; see [`mtrr_physbase`].
pub const IA32_MTRR_PHYSBASE0: u32 = 0x200;
/// IA32_MTRR_PHYSMASK0: mask of variable-range MTRR 0; see [`mtrr_physmask`].
pub const IA32_MTRR_PHYSMASK0: u32 = 0x201;
/// IA32_MTRR_FIX64K_00000: fixed-range MTRR for 0x00000–0x7FFFF (eight 64-KiB ranges).
pub const IA32_MTRR_FIX64K_00000: u32 = 0x250;
/// IA32_MTRR_FIX16K_80000: fixed-range MTRR for 0x80000–0x9FFFF (eight 16-KiB ranges).
pub const IA32_MTRR_FIX16K_80000: u32 = 0x258;
/// IA32_MTRR_FIX16K_A0000: fixed-range MTRR for 0xA0000–0xBFFFF (eight 16-KiB ranges).
pub const IA32_MTRR_FIX16K_A0000: u32 = 0x259;
/// IA32_MTRR_FIX4K_C0000: fixed-range MTRR for 0xC0000–0xC7FFF (eight 4-KiB ranges).
pub const IA32_MTRR_FIX4K_C0000: u32 = 0x268;
/// IA32_MTRR_FIX4K_C8000: fixed-range MTRR for 0xC8000–0xCFFFF.
pub const IA32_MTRR_FIX4K_C8000: u32 = 0x269;
/// IA32_MTRR_FIX4K_D0000: fixed-range MTRR for 0xD0000–0xD7FFF.
pub const IA32_MTRR_FIX4K_D0000: u32 = 0x26a;
/// IA32_MTRR_FIX4K_D8000: fixed-range MTRR for 0xD8000–0xDFFFF.
pub const IA32_MTRR_FIX4K_D8000: u32 = 0x26b;
/// IA32_MTRR_FIX4K_E0000: fixed-range MTRR for 0xE0000–0xE7FFF.
pub const IA32_MTRR_FIX4K_E0000: u32 = 0x26c;
/// IA32_MTRR_FIX4K_E8000: fixed-range MTRR for 0xE8000–0xEFFFF.
pub const IA32_MTRR_FIX4K_E8000: u32 = 0x26d;
/// IA32_MTRR_FIX4K_F0000: fixed-range MTRR for 0xF0000–0xF7FFF.
pub const IA32_MTRR_FIX4K_F0000: u32 = 0x26e;
/// IA32_MTRR_FIX4K_F8000: fixed-range MTRR for 0xF8000–0xFFFFF.
pub const IA32_MTRR_FIX4K_F8000: u32 = 0x26f;
/// Every fixed-range MTRR, in address order (SDM Vol. 3A §12.11.2.2, Table 12-9).
pub const MTRR_FIXED_RANGES: [u32; 11] = [
    IA32_MTRR_FIX64K_00000,
    IA32_MTRR_FIX16K_80000,
    IA32_MTRR_FIX16K_A0000,
    IA32_MTRR_FIX4K_C0000,
    IA32_MTRR_FIX4K_C8000,
    IA32_MTRR_FIX4K_D0000,
    IA32_MTRR_FIX4K_D8000,
    IA32_MTRR_FIX4K_E0000,
    IA32_MTRR_FIX4K_E8000,
    IA32_MTRR_FIX4K_F0000,
    IA32_MTRR_FIX4K_F8000,
];
/// IA32_PAT: the page-attribute table; see [`pat`].
pub const IA32_PAT: u32 = 0x277;
/// IA32_MTRR_DEF_TYPE: default memory type and MTRR enables; layout in [`mtrr_def_type`].
pub const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;
/// IA32_PERF_GLOBAL_CTRL: global enable of the performance counters.
pub const IA32_PERF_GLOBAL_CTRL: u32 = 0x38f;
/// IA32_RTIT_CTL: Intel Processor Trace control.
pub const IA32_RTIT_CTL: u32 = 0x570;
/// IA32_U_CET: user-mode CET configuration.
pub const IA32_U_CET: u32 = 0x6a0;
/// IA32_S_CET: supervisor-mode CET configuration.
pub const IA32_S_CET: u32 = 0x6a2;
/// IA32_INTERRUPT_SSP_TABLE_ADDR: linear address of the interrupt shadow-stack table.
pub const IA32_INTERRUPT_SSP_TABLE_ADDR: u32 = 0x6a8;
/// IA32_TSC_DEADLINE: local APIC timer deadline in TSC-deadline mode.
pub const IA32_TSC_DEADLINE: u32 = 0x6e0;
/// IA32_PKRS: protection keys for supervisor-mode pages.
pub const IA32_PKRS: u32 = 0x6e1;
/// IA32_BNDCFGS: supervisor MPX configuration.
pub const IA32_BNDCFGS: u32 = 0xd90;
/// IA32_XSS: supervisor state components enabled for XSAVES/XRSTORS.
pub const IA32_XSS: u32 = 0xda0;
/// IA32_LBR_CTL: architectural last-branch-record control.
pub const IA32_LBR_CTL: u32 = 0x14ce;

/// IA32_VMX_BASIC: VMCS revision, region size, memory type (SDM Vol. 3D §A.1).
pub const IA32_VMX_BASIC: u32 = 0x480;
/// IA32_VMX_PINBASED_CTLS: allowed settings of the pin-based controls (§A.3.1).
pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
/// IA32_VMX_PROCBASED_CTLS: allowed settings of the primary processor-based controls (§A.3.2).
pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
/// IA32_VMX_EXIT_CTLS: allowed settings of the primary VM-exit controls (§A.4.1).
pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
/// IA32_VMX_ENTRY_CTLS: allowed settings of the VM-entry controls (§A.5).
pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
/// IA32_VMX_MISC: miscellaneous VMX data (§A.6).
pub const IA32_VMX_MISC: u32 = 0x485;
/// IA32_VMX_CR0_FIXED0: CR0 bits fixed to 1 in VMX operation (§A.7).
pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
/// IA32_VMX_CR0_FIXED1: CR0 bits allowed to be 1 in VMX operation (§A.7).
pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
/// IA32_VMX_CR4_FIXED0: CR4 bits fixed to 1 in VMX operation (§A.8).
pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
/// IA32_VMX_CR4_FIXED1: CR4 bits allowed to be 1 in VMX operation (§A.8).
pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
/// IA32_VMX_VMCS_ENUM: highest VMCS field index (§A.9).
pub const IA32_VMX_VMCS_ENUM: u32 = 0x48a;
/// IA32_VMX_PROCBASED_CTLS2: allowed settings of the secondary processor-based controls (§A.3.3).
pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48b;
/// IA32_VMX_EPT_VPID_CAP: EPT and VPID capabilities (§A.10).
pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48c;
/// IA32_VMX_TRUE_PINBASED_CTLS: pin-based allowed settings including default1 bits (§A.3.1).
pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48d;
/// IA32_VMX_TRUE_PROCBASED_CTLS: primary processor-based allowed settings, default1 bits
/// included (§A.3.2).
pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48e;
/// IA32_VMX_TRUE_EXIT_CTLS: VM-exit allowed settings including default1 bits (§A.4.1).
pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48f;
/// IA32_VMX_TRUE_ENTRY_CTLS: VM-entry allowed settings including default1 bits (§A.5).
pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
/// IA32_VMX_VMFUNC: allowed VM functions (§A.11).
pub const IA32_VMX_VMFUNC: u32 = 0x491;
/// IA32_VMX_PROCBASED_CTLS3: allowed-1 settings of the tertiary processor-based controls (§A.3.4).
pub const IA32_VMX_PROCBASED_CTLS3: u32 = 0x492;
/// IA32_VMX_EXIT_CTLS2: allowed-1 settings of the secondary VM-exit controls (§A.4.2).
pub const IA32_VMX_EXIT_CTLS2: u32 = 0x493;
/// The VMX capability MSRs that every VMX processor has or may have, 0x480..=0x493.
pub const IA32_VMX_CAPABILITIES: core::ops::RangeInclusive<u32> =
    IA32_VMX_BASIC..=IA32_VMX_EXIT_CTLS2;

/// IA32_EFER: extended feature enables (SCE, LME, LMA, NXE); bits in [`crate::reg`].
pub const IA32_EFER: u32 = 0xc000_0080;
/// IA32_STAR: SYSCALL/SYSRET segment selectors (and the legacy SYSCALL EIP).
pub const IA32_STAR: u32 = 0xc000_0081;
/// IA32_LSTAR: 64-bit-mode SYSCALL target RIP.
pub const IA32_LSTAR: u32 = 0xc000_0082;
/// IA32_CSTAR: compatibility-mode SYSCALL target (not used by Intel processors, but present).
pub const IA32_CSTAR: u32 = 0xc000_0083;
/// IA32_FMASK: RFLAGS bits cleared by SYSCALL.
pub const IA32_FMASK: u32 = 0xc000_0084;
/// IA32_FS_BASE: FS segment base in 64-bit mode.
pub const IA32_FS_BASE: u32 = 0xc000_0100;
/// IA32_GS_BASE: GS segment base in 64-bit mode.
pub const IA32_GS_BASE: u32 = 0xc000_0101;
/// IA32_KERNEL_GS_BASE: the value SWAPGS exchanges with IA32_GS_BASE.
pub const IA32_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// IA32_TSC_AUX: auxiliary TSC signature returned by RDTSCP and RDPID.
pub const IA32_TSC_AUX: u32 = 0xc000_0103;

/// The variable-range MTRR base MSR of range `n` (`IA32_MTRR_PHYSBASEn`), for `n` below the
/// count in [`mtrrcap::VCNT`].
pub const fn ia32_mtrr_physbase(n: u32) -> u32 {
    IA32_MTRR_PHYSBASE0 + 2 * n
}

/// The variable-range MTRR mask MSR of range `n` (`IA32_MTRR_PHYSMASKn`).
pub const fn ia32_mtrr_physmask(n: u32) -> u32 {
    IA32_MTRR_PHYSMASK0 + 2 * n
}

/// IA32_APIC_BASE bits (SDM Vol. 3A §11.4.4, Figure 11-5; §11.12.1).
pub mod apic_base {
    /// BSP flag: this processor is the bootstrap processor (read-only).
    pub const BSP: u64 = 1 << 8;
    /// EXTD: x2APIC mode enable (with [`ENABLE`]).
    pub const X2APIC_ENABLE: u64 = 1 << 10;
    /// EN: APIC global enable.
    pub const ENABLE: u64 = 1 << 11;
    /// APIC base physical address, bits 51:12 (the processor limits it to MAXPHYADDR).
    pub const BASE_MASK: u64 = 0x000f_ffff_ffff_f000;
    /// The base address after reset.
    pub const DEFAULT_BASE: u64 = 0xfee0_0000;

    /// The bits that must be zero in a value written to IA32_APIC_BASE on a processor with the
    /// given MAXPHYADDR (a WRMSR that sets one raises #GP).
    pub const fn reserved_mask(maxphyaddr: u32) -> u64 {
        let base = if maxphyaddr >= 52 {
            BASE_MASK
        } else {
            BASE_MASK & ((1u64 << maxphyaddr) - 1)
        };
        !(BSP | X2APIC_ENABLE | ENABLE | base)
    }
}

/// IA32_FEATURE_CONTROL bits (SDM Vol. 3C §24.7, Vol. 4 Table 2-2).
pub mod feature_control {
    /// Lock: once set, the MSR is read-only until reset, and VMXON requires it.
    pub const LOCK: u64 = 1 << 0;
    /// Enable VMX inside SMX operation (VMXON after `GETSEC[SENTER]`).
    pub const VMX_INSIDE_SMX: u64 = 1 << 1;
    /// Enable VMX outside SMX operation (ordinary VMXON).
    pub const VMX_OUTSIDE_SMX: u64 = 1 << 2;
    /// SENTER local function enables, bits 14:8.
    pub const SENTER_LOCAL_FUNCTIONS: u64 = 0x7f << 8;
    /// SENTER global enable.
    pub const SENTER_GLOBAL_ENABLE: u64 = 1 << 15;
    /// SGX launch-control enable.
    pub const SGX_LAUNCH_CONTROL: u64 = 1 << 17;
    /// SGX global enable.
    pub const SGX_GLOBAL_ENABLE: u64 = 1 << 18;
    /// Local machine-check exception (LMCE) enable.
    pub const LMCE: u64 = 1 << 20;
}

/// IA32_SPEC_CTRL bits (SDM Vol. 4 Table 2-2).
pub mod spec_ctrl {
    /// Indirect Branch Restricted Speculation.
    pub const IBRS: u64 = 1 << 0;
    /// Single Thread Indirect Branch Predictors.
    pub const STIBP: u64 = 1 << 1;
    /// Speculative Store Bypass Disable.
    pub const SSBD: u64 = 1 << 2;
}

/// IA32_MTRRCAP bits (SDM Vol. 3A §12.11.1, Figure 12-5).
pub mod mtrrcap {
    /// VCNT: number of variable-range MTRRs, bits 7:0.
    pub const VCNT: u64 = 0xff;
    /// FIX: the fixed-range MTRRs are supported.
    pub const FIX: u64 = 1 << 8;
    /// WC: the write-combining memory type is supported.
    pub const WC: u64 = 1 << 10;
    /// SMRR: the system-management range registers are supported.
    pub const SMRR: u64 = 1 << 11;
}

/// IA32_MTRR_DEF_TYPE bits (SDM Vol. 3A §12.11.2.1, Figure 12-6).
pub mod mtrr_def_type {
    /// Default memory type, bits 7:0.
    pub const TYPE: u64 = 0xff;
    /// FE: fixed-range MTRRs enable.
    pub const FIXED_ENABLE: u64 = 1 << 10;
    /// E: MTRR enable.
    pub const ENABLE: u64 = 1 << 11;
}

/// IA32_MTRR_PHYSBASEn bits (SDM Vol. 3A §12.11.2.3, Figure 12-7).
pub mod mtrr_physbase {
    /// Memory type of the range, bits 7:0.
    pub const TYPE: u64 = 0xff;
    /// Base address of the range, bits 51:12 (limited to MAXPHYADDR).
    pub const BASE_MASK: u64 = 0x000f_ffff_ffff_f000;
}

/// IA32_MTRR_PHYSMASKn bits (SDM Vol. 3A §12.11.2.3, Figure 12-7).
pub mod mtrr_physmask {
    /// V: the variable range is valid (enabled).
    pub const VALID: u64 = 1 << 11;
    /// Mask of the range, bits 51:12 (limited to MAXPHYADDR).
    pub const MASK: u64 = 0x000f_ffff_ffff_f000;
}

/// IA32_PAT layout (SDM Vol. 3A §12.12.2, Table 12-11): eight one-byte entries PA0..PA7, each
/// holding a memory type in its bits 2:0 (bits 7:3 reserved).
pub mod pat {
    /// The value after power-up or reset: PA0 = WB, PA1 = WT, PA2 = UC-, PA3 = UC, repeated.
    pub const POWER_ON_DEFAULT: u64 = 0x0007_0406_0007_0406;
    /// The bits of IA32_PAT that must be zero (bits 7:3 of every entry).
    pub const RESERVED: u64 = 0xf8f8_f8f8_f8f8_f8f8;

    /// The memory-type byte of entry `index` (0..=7; higher indices wrap).
    pub const fn entry(pat: u64, index: u32) -> u8 {
        (pat >> ((index & 7) * 8)) as u8
    }
}

/// IA32_MISC_ENABLE bits (SDM Vol. 4 Table 2-2).
pub mod misc_enable {
    /// Fast-strings enable.
    pub const FAST_STRINGS: u64 = 1 << 0;
    /// Automatic thermal control circuit enable.
    pub const AUTO_THERMAL_CONTROL: u64 = 1 << 3;
    /// Performance monitoring available (read-only).
    pub const PERF_MON_AVAILABLE: u64 = 1 << 7;
    /// Branch trace storage unavailable (read-only).
    pub const BTS_UNAVAILABLE: u64 = 1 << 11;
    /// Processor event-based sampling unavailable (read-only).
    pub const PEBS_UNAVAILABLE: u64 = 1 << 12;
    /// Enhanced Intel SpeedStep technology enable.
    pub const ENHANCED_SPEEDSTEP: u64 = 1 << 16;
    /// MONITOR/MWAIT enable.
    pub const MONITOR_FSM: u64 = 1 << 18;
    /// Limit CPUID maximum basic leaf to 2.
    pub const LIMIT_CPUID_MAXVAL: u64 = 1 << 22;
    /// xTPR message disable.
    pub const XTPR_MESSAGE_DISABLE: u64 = 1 << 23;
    /// XD bit disable (execute-disable unavailable when set).
    pub const XD_DISABLE: u64 = 1 << 34;
}

/// IA32_DEBUGCTL bits (SDM Vol. 3B §18.4.1, Figure 18-3).
pub mod debugctl {
    /// LBR: last-branch recording.
    pub const LBR: u64 = 1 << 0;
    /// BTF: single-step on branches (with RFLAGS.TF).
    pub const BTF: u64 = 1 << 1;
    /// BUS_LOCK_DETECT: #DB after a bus lock.
    pub const BUS_LOCK_DETECT: u64 = 1 << 2;
    /// TR: branch trace messages.
    pub const TR: u64 = 1 << 6;
    /// BTS: branch trace store.
    pub const BTS: u64 = 1 << 7;
    /// BTINT: interrupt when the BTS buffer is full.
    pub const BTINT: u64 = 1 << 8;
    /// BTS_OFF_OS: no branch trace store at CPL 0.
    pub const BTS_OFF_OS: u64 = 1 << 9;
    /// BTS_OFF_USR: no branch trace store above CPL 0.
    pub const BTS_OFF_USR: u64 = 1 << 10;
    /// FREEZE_LBRS_ON_PMI.
    pub const FREEZE_LBRS_ON_PMI: u64 = 1 << 11;
    /// FREEZE_PERFMON_ON_PMI.
    pub const FREEZE_PERFMON_ON_PMI: u64 = 1 << 12;
    /// FREEZE_WHILE_SMM.
    pub const FREEZE_WHILE_SMM: u64 = 1 << 14;
    /// RTM_DEBUG: advanced debugging of RTM regions.
    pub const RTM_DEBUG: u64 = 1 << 15;
}

/// The x2APIC MSR range and its mapping to xAPIC MMIO offsets (SDM Vol. 3A §11.12.1.2,
/// Table 11-6).
///
/// In x2APIC mode the APIC register at xAPIC offset `off` is MSR `0x800 + off / 16`. The
/// mapping is arithmetic: whether a register exists in x2APIC mode is a separate question
/// (the DFR at offset 0xE0 does not; the ICR, two registers in xAPIC mode, is the single 64-bit
/// MSR [`x2apic::ICR`]; [`x2apic::SELF_IPI`] exists only in x2APIC mode).
pub mod x2apic {
    /// First MSR of the x2APIC range.
    pub const FIRST: u32 = 0x800;
    /// Last MSR of the x2APIC range.
    pub const LAST: u32 = 0x8ff;

    /// Local APIC ID (read-only in x2APIC mode).
    pub const ID: u32 = 0x802;
    /// Local APIC version.
    pub const VERSION: u32 = 0x803;
    /// Task-priority register.
    pub const TPR: u32 = 0x808;
    /// Processor-priority register (read-only).
    pub const PPR: u32 = 0x80a;
    /// End-of-interrupt (write-only).
    pub const EOI: u32 = 0x80b;
    /// Logical destination register (read-only in x2APIC mode).
    pub const LDR: u32 = 0x80d;
    /// Spurious-interrupt vector register.
    pub const SVR: u32 = 0x80f;
    /// In-service register, bits 31:0 (ISR1..ISR7 follow at 0x811..=0x817).
    pub const ISR0: u32 = 0x810;
    /// Trigger-mode register, bits 31:0 (TMR1..TMR7 follow at 0x819..=0x81f).
    pub const TMR0: u32 = 0x818;
    /// Interrupt-request register, bits 31:0 (IRR1..IRR7 follow at 0x821..=0x827).
    pub const IRR0: u32 = 0x820;
    /// Error-status register.
    pub const ESR: u32 = 0x828;
    /// LVT corrected machine-check interrupt register.
    pub const LVT_CMCI: u32 = 0x82f;
    /// Interrupt-command register (64 bits: the xAPIC ICR low and high in one MSR).
    pub const ICR: u32 = 0x830;
    /// LVT timer register.
    pub const LVT_TIMER: u32 = 0x832;
    /// LVT thermal-sensor register.
    pub const LVT_THERMAL: u32 = 0x833;
    /// LVT performance-monitoring register.
    pub const LVT_PMI: u32 = 0x834;
    /// LVT LINT0 register.
    pub const LVT_LINT0: u32 = 0x835;
    /// LVT LINT1 register.
    pub const LVT_LINT1: u32 = 0x836;
    /// LVT error register.
    pub const LVT_ERROR: u32 = 0x837;
    /// Timer initial-count register.
    pub const TIMER_INITIAL_COUNT: u32 = 0x838;
    /// Timer current-count register (read-only).
    pub const TIMER_CURRENT_COUNT: u32 = 0x839;
    /// Timer divide-configuration register.
    pub const TIMER_DIVIDE_CONFIG: u32 = 0x83e;
    /// Self IPI (write-only, x2APIC mode only).
    pub const SELF_IPI: u32 = 0x83f;

    /// Whether `msr` lies in the x2APIC MSR range.
    pub const fn contains(msr: u32) -> bool {
        msr >= FIRST && msr <= LAST
    }

    /// The xAPIC MMIO offset (from the APIC base) of x2APIC MSR `msr`, or `None` outside the
    /// x2APIC range.
    pub const fn msr_to_xapic_offset(msr: u32) -> Option<u32> {
        if contains(msr) {
            Some((msr - FIRST) << 4)
        } else {
            None
        }
    }

    /// The x2APIC MSR of the xAPIC register at MMIO offset `offset`, or `None` if the offset is
    /// not 16-byte aligned or lies outside the 4-KiB APIC page.
    pub const fn xapic_offset_to_msr(offset: u32) -> Option<u32> {
        if offset & 0xf == 0 && offset < 0x1000 {
            Some(FIRST + (offset >> 4))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x2apic_mapping_matches_table_11_6() {
        // (x2APIC MSR, xAPIC offset), from SDM Vol. 3A Table 11-6.
        let table = [
            (x2apic::ID, 0x20),
            (x2apic::VERSION, 0x30),
            (x2apic::TPR, 0x80),
            (x2apic::PPR, 0xa0),
            (x2apic::EOI, 0xb0),
            (x2apic::LDR, 0xd0),
            (x2apic::SVR, 0xf0),
            (x2apic::ISR0, 0x100),
            (x2apic::TMR0, 0x180),
            (x2apic::IRR0, 0x200),
            (x2apic::ESR, 0x280),
            (x2apic::LVT_CMCI, 0x2f0),
            (x2apic::ICR, 0x300),
            (x2apic::LVT_TIMER, 0x320),
            (x2apic::LVT_THERMAL, 0x330),
            (x2apic::LVT_PMI, 0x340),
            (x2apic::LVT_LINT0, 0x350),
            (x2apic::LVT_LINT1, 0x360),
            (x2apic::LVT_ERROR, 0x370),
            (x2apic::TIMER_INITIAL_COUNT, 0x380),
            (x2apic::TIMER_CURRENT_COUNT, 0x390),
            (x2apic::TIMER_DIVIDE_CONFIG, 0x3e0),
            (x2apic::SELF_IPI, 0x3f0),
        ];
        for (msr, offset) in table {
            assert_eq!(
                x2apic::msr_to_xapic_offset(msr),
                Some(offset),
                "MSR {msr:#x}"
            );
            assert_eq!(
                x2apic::xapic_offset_to_msr(offset),
                Some(msr),
                "offset {offset:#x}"
            );
        }
    }

    #[test]
    fn x2apic_mapping_round_trips_and_rejects_outside() {
        for msr in x2apic::FIRST..=x2apic::LAST {
            let offset = x2apic::msr_to_xapic_offset(msr).unwrap();
            assert_eq!(x2apic::xapic_offset_to_msr(offset), Some(msr));
        }
        assert_eq!(x2apic::msr_to_xapic_offset(0x7ff), None);
        assert_eq!(x2apic::msr_to_xapic_offset(0x900), None);
        assert_eq!(x2apic::xapic_offset_to_msr(0x304), None);
        assert_eq!(x2apic::xapic_offset_to_msr(0x1000), None);
    }

    #[test]
    fn pat_default_is_wb_wt_ucminus_uc() {
        let types: [u8; 8] = core::array::from_fn(|i| pat::entry(pat::POWER_ON_DEFAULT, i as u32));
        assert_eq!(types, [6, 4, 7, 0, 6, 4, 7, 0]);
        assert_eq!(pat::POWER_ON_DEFAULT & pat::RESERVED, 0);
    }

    #[test]
    fn mtrr_helpers_and_ranges() {
        assert_eq!(ia32_mtrr_physbase(0), 0x200);
        assert_eq!(ia32_mtrr_physmask(0), 0x201);
        assert_eq!(ia32_mtrr_physbase(9), 0x212);
        assert_eq!(ia32_mtrr_physmask(9), 0x213);
        assert!(MTRR_FIXED_RANGES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(IA32_VMX_CAPABILITIES.count(), 20);
    }

    #[test]
    fn apic_base_reserved_bits_follow_maxphyaddr() {
        assert_eq!(apic_base::reserved_mask(36), !0x0000_000f_ffff_fd00);
        assert_eq!(apic_base::reserved_mask(52), !0x000f_ffff_ffff_fd00);
        assert_eq!(apic_base::reserved_mask(36) & apic_base::DEFAULT_BASE, 0);
    }
}
