//! Layouts of the VMX capability MSRs and the pure rules that use them (SDM Vol. 3D Appendix A,
//! "VMX Capability Reporting Facility").
//!
//! - [`VmxBasic`]: IA32_VMX_BASIC (§A.1, "Basic VMX Information").
//! - [`AllowedControls`] and [`AllowedControls64`]: the allowed-0/allowed-1 settings of the
//!   VMX controls (§A.2 "Reserved Controls and Default Settings", §A.3 "VM-Execution Controls",
//!   §A.4 "VM-Exit Controls", §A.5 "VM-Entry Controls"), with [`AllowedControls::adjust`] (the
//!   procedure of §A.2 for picking a valid value) and [`AllowedControls::check`] (the VM-entry
//!   check of SDM Vol. 3C §27.2.1.1, "VM-Execution Control Fields").
//! - [`VmxMisc`]: IA32_VMX_MISC (§A.6, "Miscellaneous Data").
//! - [`FixedBits`]: IA32_VMX_CR0_FIXED0/1 and IA32_VMX_CR4_FIXED0/1 (§A.7, §A.8, "VMX-Fixed
//!   Bits in CR0/CR4").
//! - [`VmcsEnum`]: IA32_VMX_VMCS_ENUM (§A.9, "VMCS Enumeration").
//! - [`EptVpidCap`]: IA32_VMX_EPT_VPID_CAP (§A.10, "VPID and EPT Capabilities"), with the
//!   INVEPT and INVVPID types (SDM Vol. 3C §31.3, INVEPT/INVVPID).
//! - [`VmFuncCap`]: IA32_VMX_VMFUNC (§A.11, "VM Functions").
//! - [`VmxCapabilities`]: the whole set, answering which controls and VMCS fields a processor
//!   supports.
//!
//! Every type wraps the raw MSR value (`pub` field, as the hardware stores it) and offers
//! decoding methods and `with_*` builders, so the hardware model builds the values it reports
//! and the hypervisor decodes what it reads with the same code.

use crate::vmx::controls::{exit, primary_proc, secondary_proc};
use crate::vmx::fields::{Capability, VmcsField, VmwriteScope, highest_index};

/// IA32_VMX_BASIC (SDM Vol. 3D §A.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VmxBasic(pub u64);

impl VmxBasic {
    /// Bits 30:0: the VMCS revision identifier (bit 31 is always 0).
    pub const REVISION_MASK: u64 = 0x7fff_ffff;
    /// Bit 48: physical addresses of VMX structures are limited to 32 bits (always 0 on
    /// processors that support Intel 64).
    pub const ADDRESS_32BIT: u64 = 1 << 48;
    /// Bit 49: the dual-monitor treatment of SMIs and SMM is supported.
    pub const DUAL_MONITOR: u64 = 1 << 49;
    /// Bit 54: VM exits due to INS and OUTS report instruction information.
    pub const INS_OUTS_INFO: u64 = 1 << 54;
    /// Bit 55: the TRUE capability MSRs exist, and default1 controls may be 0 where they allow.
    pub const TRUE_CONTROLS: u64 = 1 << 55;
    /// Bit 56: VM entry may inject a hardware exception with or without an error code,
    /// whatever its vector.
    pub const NO_ERROR_CODE_REQUIRED: u64 = 1 << 56;

    /// The uncacheable memory type (bits 53:50 = 0).
    pub const MEMORY_TYPE_UC: u8 = 0;
    /// The write-back memory type (bits 53:50 = 6).
    pub const MEMORY_TYPE_WB: u8 = 6;

    /// A value reporting `revision` (bits 30:0), a VMCS region of `region_size` bytes (at most
    /// 4096) and `memory_type` for VMCS accesses, with no optional feature.
    pub const fn new(revision: u32, region_size: u16, memory_type: u8) -> Self {
        Self(
            (revision as u64 & Self::REVISION_MASK)
                | ((region_size as u64 & 0x1fff) << 32)
                | ((memory_type as u64 & 0xf) << 50),
        )
    }

    /// The value with the feature bits `bits` added.
    pub const fn with(self, bits: u64) -> Self {
        Self(self.0 | bits)
    }

    /// Bits 30:0: the VMCS revision identifier.
    pub const fn revision(self) -> u32 {
        (self.0 & Self::REVISION_MASK) as u32
    }

    /// Bits 44:32: the number of bytes software should allocate for a VMXON region or VMCS.
    pub const fn region_size(self) -> u16 {
        ((self.0 >> 32) & 0x1fff) as u16
    }

    /// Bit 48.
    pub const fn address_32bit(self) -> bool {
        self.0 & Self::ADDRESS_32BIT != 0
    }

    /// Bit 49.
    pub const fn dual_monitor(self) -> bool {
        self.0 & Self::DUAL_MONITOR != 0
    }

    /// Bits 53:50: the memory type the processor uses to access the VMCS and the structures it
    /// references.
    pub const fn memory_type(self) -> u8 {
        ((self.0 >> 50) & 0xf) as u8
    }

    /// Bit 54.
    pub const fn ins_outs_info(self) -> bool {
        self.0 & Self::INS_OUTS_INFO != 0
    }

    /// Bit 55.
    pub const fn true_controls(self) -> bool {
        self.0 & Self::TRUE_CONTROLS != 0
    }

    /// Bit 56.
    pub const fn no_error_code_required(self) -> bool {
        self.0 & Self::NO_ERROR_CODE_REQUIRED != 0
    }
}

/// The bits of a control value that break an [`AllowedControls`] rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ControlViolation {
    /// Controls that are 0 but must be 1 (their allowed-0 bit is 1).
    pub must_be_one: u64,
    /// Controls that are 1 but must be 0 (their allowed-1 bit is 0).
    pub must_be_zero: u64,
}

/// The allowed settings of a 32-bit control field, as IA32_VMX_{PINBASED, PROCBASED, EXIT,
/// ENTRY}_CTLS, their TRUE forms and IA32_VMX_PROCBASED_CTLS2 report them (SDM Vol. 3D §A.3–A.5):
/// bits 31:0 of the MSR are the allowed 0-settings (a 1 means the control must be 1), bits 63:32
/// the allowed 1-settings (a 0 means the control must be 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AllowedControls {
    /// Controls fixed to 1 (MSR bits 31:0).
    pub allowed0: u32,
    /// Controls that may be 1 (MSR bits 63:32).
    pub allowed1: u32,
}

impl AllowedControls {
    /// Splits a capability MSR value.
    pub const fn from_msr(msr: u64) -> Self {
        Self {
            allowed0: msr as u32,
            allowed1: (msr >> 32) as u32,
        }
    }

    /// Chooses between a capability MSR and its TRUE form as §A.2 prescribes: the TRUE MSR when
    /// IA32_VMX_BASIC bit 55 says it exists, else the ordinary one.
    pub const fn select(basic: VmxBasic, msr: u64, true_msr: u64) -> Self {
        if basic.true_controls() {
            Self::from_msr(true_msr)
        } else {
            Self::from_msr(msr)
        }
    }

    /// The MSR value: allowed-1 settings in bits 63:32, allowed-0 settings in bits 31:0.
    pub const fn to_msr(self) -> u64 {
        ((self.allowed1 as u64) << 32) | self.allowed0 as u64
    }

    /// The value closest to `desired` that the rules allow: bits fixed to 1 are set, bits fixed
    /// to 0 are cleared, every other bit is as desired. If a bit is both fixed to 1 and not
    /// allowed to be 1 (a malformed MSR), the result keeps it 0 and [`Self::check`] rejects it.
    pub const fn adjust(self, desired: u32) -> u32 {
        (desired | self.allowed0) & self.allowed1
    }

    /// `Ok` if `value` obeys the rules, else the offending bits.
    pub const fn check(self, value: u32) -> Result<(), ControlViolation> {
        let must_be_one = (self.allowed0 & !value) as u64;
        let must_be_zero = (value & !self.allowed1) as u64;
        if must_be_one == 0 && must_be_zero == 0 {
            Ok(())
        } else {
            Err(ControlViolation {
                must_be_one,
                must_be_zero,
            })
        }
    }

    /// Whether control bit(s) `bits` may all be 1.
    pub const fn allows_one(self, bits: u32) -> bool {
        self.allowed1 & bits == bits
    }

    /// Whether control bit(s) `bits` may all be 0.
    pub const fn allows_zero(self, bits: u32) -> bool {
        self.allowed0 & bits == 0
    }
}

/// The allowed settings of a 64-bit control field whose capability MSR reports only allowed
/// 1-settings: IA32_VMX_PROCBASED_CTLS3 (tertiary controls, §A.3.4), IA32_VMX_EXIT_CTLS2
/// (secondary VM-exit controls, §A.4.2) and IA32_VMX_VMFUNC (§A.11). Every such control may be 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AllowedControls64 {
    /// Controls that may be 1 (the whole MSR).
    pub allowed1: u64,
}

impl AllowedControls64 {
    /// Wraps a capability MSR value.
    pub const fn from_msr(msr: u64) -> Self {
        Self { allowed1: msr }
    }

    /// `desired` with every control that may not be 1 cleared.
    pub const fn adjust(self, desired: u64) -> u64 {
        desired & self.allowed1
    }

    /// `Ok` if `value` sets only allowed controls, else the offending bits.
    pub const fn check(self, value: u64) -> Result<(), ControlViolation> {
        let must_be_zero = value & !self.allowed1;
        if must_be_zero == 0 {
            Ok(())
        } else {
            Err(ControlViolation {
                must_be_one: 0,
                must_be_zero,
            })
        }
    }

    /// Whether control bit(s) `bits` may all be 1.
    pub const fn allows_one(self, bits: u64) -> bool {
        self.allowed1 & bits == bits
    }
}

/// IA32_VMX_MISC (SDM Vol. 3D §A.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VmxMisc(pub u64);

impl VmxMisc {
    /// Bit 5: VM exits store IA32_EFER.LMA into the "IA-32e mode guest" VM-entry control.
    pub const STORE_LMA: u64 = 1 << 5;
    /// Bit 6: the HLT activity state is supported.
    pub const ACTIVITY_HLT: u64 = 1 << 6;
    /// Bit 7: the shutdown activity state is supported.
    pub const ACTIVITY_SHUTDOWN: u64 = 1 << 7;
    /// Bit 8: the wait-for-SIPI activity state is supported.
    pub const ACTIVITY_WAIT_FOR_SIPI: u64 = 1 << 8;
    /// Bit 14: Intel PT may be used in VMX operation.
    pub const PT_IN_VMX: u64 = 1 << 14;
    /// Bit 15: RDMSR may read IA32_SMBASE in SMM.
    pub const RDMSR_SMBASE_IN_SMM: u64 = 1 << 15;
    /// Bit 28: bit 2 of IA32_SMM_MONITOR_CTL may be set (VMXOFF unblocks SMIs).
    pub const SMM_MONITOR_CTL_BIT2: u64 = 1 << 28;
    /// Bit 29: VMWRITE may write any supported field, VM-exit information fields included.
    pub const VMWRITE_ANY_FIELD: u64 = 1 << 29;
    /// Bit 30: VM entry may inject a software interrupt or exception with instruction length 0.
    pub const INJECT_ZERO_LENGTH: u64 = 1 << 30;

    /// A value reporting a preemption timer that ticks when bit `timer_rate` of the TSC
    /// changes, `cr3_targets` CR3-target values and MSR lists of up to 512 × (`msr_list_n` + 1)
    /// entries, with no optional feature.
    pub const fn new(timer_rate: u8, cr3_targets: u16, msr_list_n: u8) -> Self {
        Self(
            (timer_rate as u64 & 0x1f)
                | ((cr3_targets as u64 & 0x1ff) << 16)
                | ((msr_list_n as u64 & 7) << 25),
        )
    }

    /// The value with the feature bits `bits` added.
    pub const fn with(self, bits: u64) -> Self {
        Self(self.0 | bits)
    }

    /// Bits 4:0: the preemption timer decrements each time this bit of the TSC changes.
    pub const fn preemption_timer_rate(self) -> u8 {
        (self.0 & 0x1f) as u8
    }

    /// Bit 5.
    pub const fn stores_lma(self) -> bool {
        self.0 & Self::STORE_LMA != 0
    }

    /// Bits 8:6 as a mask in place (see [`crate::vmx::controls::ActivityState::misc_support_bit`]).
    pub const fn activity_states(self) -> u64 {
        self.0 & (Self::ACTIVITY_HLT | Self::ACTIVITY_SHUTDOWN | Self::ACTIVITY_WAIT_FOR_SIPI)
    }

    /// Bits 24:16: the number of CR3-target values supported.
    pub const fn cr3_target_count(self) -> u16 {
        ((self.0 >> 16) & 0x1ff) as u16
    }

    /// Bits 27:25 as the recommended maximum number of entries in each MSR list, 512 × (N + 1).
    pub const fn max_msr_list_entries(self) -> u32 {
        512 * (((self.0 >> 25) & 7) as u32 + 1)
    }

    /// Bit 29.
    pub const fn vmwrite_any_field(self) -> bool {
        self.0 & Self::VMWRITE_ANY_FIELD != 0
    }

    /// Which fields VMWRITE may write on this processor, for
    /// [`crate::vmx::VmcsField::writable`].
    pub const fn vmwrite_scope(self) -> VmwriteScope {
        if self.vmwrite_any_field() {
            VmwriteScope::AnyField
        } else {
            VmwriteScope::ExceptExitInformation
        }
    }

    /// Bit 30.
    pub const fn inject_zero_length(self) -> bool {
        self.0 & Self::INJECT_ZERO_LENGTH != 0
    }

    /// Bits 63:32: the MSEG revision identifier.
    pub const fn mseg_revision(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// The bits of a control register that VMX operation fixes (SDM Vol. 3D §A.7 and §A.8): bit X
/// is fixed to 1 if it is 1 in FIXED0, fixed to 0 if it is 0 in FIXED1, and free otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FixedBits {
    /// IA32_VMX_CR0_FIXED0 or IA32_VMX_CR4_FIXED0.
    pub fixed0: u64,
    /// IA32_VMX_CR0_FIXED1 or IA32_VMX_CR4_FIXED1.
    pub fixed1: u64,
}

impl FixedBits {
    /// Pairs the two MSR values.
    pub const fn new(fixed0: u64, fixed1: u64) -> Self {
        Self { fixed0, fixed1 }
    }

    /// The same rules with `bits` made free, for the exceptions of the VM-entry checks (CR0.PE
    /// and CR0.PG with "unrestricted guest", SDM Vol. 3C §27.3.1.1).
    pub const fn without(self, bits: u64) -> Self {
        Self {
            fixed0: self.fixed0 & !bits,
            fixed1: self.fixed1 | bits,
        }
    }

    /// `value` with the fixed bits forced to their values.
    pub const fn adjust(self, value: u64) -> u64 {
        (value | self.fixed0) & self.fixed1
    }

    /// `Ok` if `value` has every fixed bit at its fixed value, else the offending bits.
    pub const fn check(self, value: u64) -> Result<(), ControlViolation> {
        let must_be_one = self.fixed0 & !value;
        let must_be_zero = value & !self.fixed1;
        if must_be_one == 0 && must_be_zero == 0 {
            Ok(())
        } else {
            Err(ControlViolation {
                must_be_one,
                must_be_zero,
            })
        }
    }
}

/// IA32_VMX_VMCS_ENUM (SDM Vol. 3D §A.9): bits 9:1 hold the highest index of any VMCS field
/// encoding the processor supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VmcsEnum(pub u64);

impl VmcsEnum {
    /// The value for a highest index of `index` (see [`crate::vmx::fields::highest_index`]).
    pub const fn new(index: u16) -> Self {
        Self((index as u64 & 0x1ff) << 1)
    }

    /// Bits 9:1.
    pub const fn highest_index(self) -> u16 {
        ((self.0 >> 1) & 0x1ff) as u16
    }
}

/// IA32_VMX_EPT_VPID_CAP (SDM Vol. 3D §A.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EptVpidCap(pub u64);

impl EptVpidCap {
    /// Bit 0: execute-only EPT translations.
    pub const EXECUTE_ONLY: u64 = 1 << 0;
    /// Bit 6: a page-walk length of 4.
    pub const PAGE_WALK_4: u64 = 1 << 6;
    /// Bit 7: a page-walk length of 5.
    pub const PAGE_WALK_5: u64 = 1 << 7;
    /// Bit 8: the EPT paging structures may be uncacheable.
    pub const MEMORY_TYPE_UC: u64 = 1 << 8;
    /// Bit 14: the EPT paging structures may be write-back.
    pub const MEMORY_TYPE_WB: u64 = 1 << 14;
    /// Bit 16: 2-MByte EPT pages (PDE with bit 7 set).
    pub const PAGES_2M: u64 = 1 << 16;
    /// Bit 17: 1-GByte EPT pages (PDPTE with bit 7 set).
    pub const PAGES_1G: u64 = 1 << 17;
    /// Bit 20: INVEPT is supported.
    pub const INVEPT: u64 = 1 << 20;
    /// Bit 21: accessed and dirty flags for EPT.
    pub const ACCESSED_DIRTY: u64 = 1 << 21;
    /// Bit 22: advanced VM-exit information for EPT violations.
    pub const ADVANCED_EXIT_INFO: u64 = 1 << 22;
    /// Bit 23: supervisor shadow-stack control.
    pub const SUPERVISOR_SHADOW_STACK: u64 = 1 << 23;
    /// Bit 25: single-context INVEPT.
    pub const INVEPT_SINGLE_CONTEXT: u64 = 1 << 25;
    /// Bit 26: all-context INVEPT.
    pub const INVEPT_ALL_CONTEXT: u64 = 1 << 26;
    /// Bit 32: INVVPID is supported.
    pub const INVVPID: u64 = 1 << 32;
    /// Bit 40: individual-address INVVPID.
    pub const INVVPID_INDIVIDUAL_ADDRESS: u64 = 1 << 40;
    /// Bit 41: single-context INVVPID.
    pub const INVVPID_SINGLE_CONTEXT: u64 = 1 << 41;
    /// Bit 42: all-context INVVPID.
    pub const INVVPID_ALL_CONTEXT: u64 = 1 << 42;
    /// Bit 43: single-context-retaining-globals INVVPID.
    pub const INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS: u64 = 1 << 43;

    /// Whether every capability in `bits` is reported.
    pub const fn has(self, bits: u64) -> bool {
        self.0 & bits == bits
    }

    /// The value with the capability bits `bits` added.
    pub const fn with(self, bits: u64) -> Self {
        Self(self.0 | bits)
    }

    /// The value with a maximum HLAT prefix size of `size` (bits 53:48).
    pub const fn with_max_hlat_prefix_size(self, size: u8) -> Self {
        Self((self.0 & !(0x3f << 48)) | ((size as u64 & 0x3f) << 48))
    }

    /// Bits 53:48: the maximum HLAT prefix size.
    pub const fn max_hlat_prefix_size(self) -> u8 {
        ((self.0 >> 48) & 0x3f) as u8
    }

    /// Whether INVEPT is supported with type `kind`.
    pub const fn supports_invept(self, kind: InveptType) -> bool {
        self.has(Self::INVEPT)
            && self.has(match kind {
                InveptType::SingleContext => Self::INVEPT_SINGLE_CONTEXT,
                InveptType::Global => Self::INVEPT_ALL_CONTEXT,
            })
    }

    /// Whether INVVPID is supported with type `kind`.
    pub const fn supports_invvpid(self, kind: InvvpidType) -> bool {
        self.has(Self::INVVPID)
            && self.has(match kind {
                InvvpidType::IndividualAddress => Self::INVVPID_INDIVIDUAL_ADDRESS,
                InvvpidType::SingleContext => Self::INVVPID_SINGLE_CONTEXT,
                InvvpidType::AllContext => Self::INVVPID_ALL_CONTEXT,
                InvvpidType::SingleContextRetainingGlobals => {
                    Self::INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS
                }
            })
    }
}

/// The INVEPT types (SDM Vol. 3C §29.4.3.1, "Operations that Invalidate Cached Mappings", and
/// the INVEPT instruction in §31.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum InveptType {
    /// Invalidate mappings associated with the EPTP in the descriptor.
    SingleContext = 1,
    /// Invalidate mappings associated with every EPTP.
    Global = 2,
}

impl InveptType {
    /// The type in the INVEPT register operand, or `None` for a value the SDM does not define
    /// (INVEPT then fails with VM-instruction error 28).
    pub const fn from_u64(value: u64) -> Option<Self> {
        match value {
            1 => Some(Self::SingleContext),
            2 => Some(Self::Global),
            _ => None,
        }
    }
}

/// The INVVPID types (the INVVPID instruction in SDM Vol. 3C §31.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum InvvpidType {
    /// Invalidate mappings for one linear address and VPID.
    IndividualAddress = 0,
    /// Invalidate mappings for one VPID.
    SingleContext = 1,
    /// Invalidate mappings for every VPID except 0.
    AllContext = 2,
    /// Invalidate mappings for one VPID except global translations.
    SingleContextRetainingGlobals = 3,
}

impl InvvpidType {
    /// The type in the INVVPID register operand, or `None` for a value the SDM does not define.
    pub const fn from_u64(value: u64) -> Option<Self> {
        match value {
            0 => Some(Self::IndividualAddress),
            1 => Some(Self::SingleContext),
            2 => Some(Self::AllContext),
            3 => Some(Self::SingleContextRetainingGlobals),
            _ => None,
        }
    }
}

/// IA32_VMX_VMFUNC (SDM Vol. 3D §A.11): the allowed 1-settings of the VM-function controls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VmFuncCap(pub u64);

impl VmFuncCap {
    /// Bit 0: VM function 0, EPTP switching.
    pub const EPTP_SWITCHING: u64 = 1 << 0;

    /// The allowed settings of the VM-function controls field.
    pub const fn allowed(self) -> AllowedControls64 {
        AllowedControls64::from_msr(self.0)
    }
}

/// Every VMX capability MSR of one processor, as a VMM reads them or as a processor model
/// reports them, plus the non-VMX features that decide whether some VMCS fields exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VmxCapabilities {
    /// IA32_VMX_BASIC.
    pub basic: VmxBasic,
    /// IA32_VMX_PINBASED_CTLS (or its TRUE form; allowed-1 settings are the same).
    pub pin_based: AllowedControls,
    /// IA32_VMX_PROCBASED_CTLS (or its TRUE form).
    pub primary_proc: AllowedControls,
    /// IA32_VMX_PROCBASED_CTLS2.
    pub secondary_proc: AllowedControls,
    /// IA32_VMX_PROCBASED_CTLS3.
    pub tertiary_proc: AllowedControls64,
    /// IA32_VMX_EXIT_CTLS (or its TRUE form).
    pub exit: AllowedControls,
    /// IA32_VMX_EXIT_CTLS2.
    pub secondary_exit: AllowedControls64,
    /// IA32_VMX_ENTRY_CTLS (or its TRUE form).
    pub entry: AllowedControls,
    /// IA32_VMX_MISC.
    pub misc: VmxMisc,
    /// IA32_VMX_EPT_VPID_CAP.
    pub ept_vpid: EptVpidCap,
    /// IA32_VMX_VMFUNC.
    pub vmfunc: VmFuncCap,
    /// The processor supports FRED transitions.
    pub fred: bool,
    /// The processor supports SEAM.
    pub seam: bool,
}

impl VmxCapabilities {
    /// Whether the processor has `capability`. Secondary and tertiary controls, secondary
    /// VM-exit controls and VM functions count only if the control that activates their class
    /// may be 1 (SDM Vol. 3D §A.3.3, §A.3.4, §A.4.2, §A.11).
    pub const fn supports(&self, capability: Capability) -> bool {
        let secondary = self
            .primary_proc
            .allows_one(primary_proc::ACTIVATE_SECONDARY_CONTROLS);
        match capability {
            Capability::PinBased(bits) => self.pin_based.allows_one(bits),
            Capability::PrimaryProc(bits) => self.primary_proc.allows_one(bits),
            Capability::SecondaryProc(bits) => secondary && self.secondary_proc.allows_one(bits),
            Capability::TertiaryProc(bits) => {
                self.primary_proc
                    .allows_one(primary_proc::ACTIVATE_TERTIARY_CONTROLS)
                    && self.tertiary_proc.allows_one(bits)
            }
            Capability::Exit(bits) => self.exit.allows_one(bits),
            Capability::SecondaryExit(bits) => {
                self.exit.allows_one(exit::ACTIVATE_SECONDARY_CONTROLS)
                    && self.secondary_exit.allows_one(bits)
            }
            Capability::Entry(bits) => self.entry.allows_one(bits),
            Capability::VmFunction(bits) => {
                secondary
                    && self
                        .secondary_proc
                        .allows_one(secondary_proc::ENABLE_VM_FUNCTIONS)
                    && self.vmfunc.allowed().allows_one(bits)
            }
            Capability::Fred => self.fred,
            Capability::Seam => self.seam,
        }
    }

    /// Whether the processor supports `field`: it needs no capability, or the processor has at
    /// least one of those it lists.
    pub const fn supports_field(&self, field: VmcsField) -> bool {
        let requirements = field.requirements();
        if requirements.is_empty() {
            return true;
        }
        let mut i = 0;
        while i < requirements.len() {
            if self.supports(requirements[i]) {
                return true;
            }
            i += 1;
        }
        false
    }

    /// The value of IA32_VMX_VMCS_ENUM for this processor: the highest index among the fields
    /// it supports.
    pub const fn vmcs_enum(&self) -> VmcsEnum {
        let mut highest = 0;
        let mut i = 0;
        while i < VmcsField::ALL.len() {
            let field = VmcsField::ALL[i];
            if self.supports_field(field) {
                let index = highest_index(&[field]);
                if index > highest {
                    highest = index;
                }
            }
            i += 1;
        }
        VmcsEnum::new(highest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reg::{cr0, cr4};
    use crate::vmx::controls::{pin_based, primary_proc};

    #[test]
    fn basic_layout() {
        let basic = VmxBasic::new(0x12, 4096, VmxBasic::MEMORY_TYPE_WB)
            .with(VmxBasic::INS_OUTS_INFO | VmxBasic::TRUE_CONTROLS);
        assert_eq!(basic.0, 0x00d8_1000_0000_0012);
        assert_eq!(basic.revision(), 0x12);
        assert_eq!(basic.region_size(), 4096);
        assert_eq!(basic.memory_type(), 6);
        assert!(basic.ins_outs_info() && basic.true_controls());
        assert!(!basic.dual_monitor() && !basic.address_32bit() && !basic.no_error_code_required());
        assert_eq!(VmxBasic::new(u32::MAX, 0, 0).revision(), 0x7fff_ffff);
    }

    #[test]
    fn allowed_controls_adjust_and_check_table() {
        // A typical IA32_VMX_TRUE_PINBASED_CTLS: default1 bits 1, 2, 4 fixed; 0, 3, 5, 6, 7 free.
        let pin = AllowedControls::from_msr(0x0000_00ff_0000_0016);
        assert_eq!(pin.to_msr(), 0x0000_00ff_0000_0016);
        // (desired, adjusted)
        let table = [
            (0, 0x16),
            (pin_based::NMI_EXITING, 0x1e),
            (0xffff_ffff, 0xff),
            (1 << 8, 0x16),
        ];
        for (desired, adjusted) in table {
            assert_eq!(pin.adjust(desired), adjusted, "{desired:#x}");
            assert_eq!(pin.check(adjusted), Ok(()));
        }
        assert_eq!(
            pin.check(0x101),
            Err(ControlViolation {
                must_be_one: 0x16,
                must_be_zero: 0x100
            })
        );
        assert!(pin.allows_one(pin_based::VIRTUAL_NMIS));
        assert!(!pin.allows_zero(0x2));
        assert!(pin.allows_zero(pin_based::NMI_EXITING));
    }

    #[test]
    fn select_honours_true_controls() {
        let plain = 0xfff9_fffe_0401_e172;
        let true_ = 0xfff9_fffe_0400_6172; // CR3-load/store exiting may be 0.
        let with_true = VmxBasic(0).with(VmxBasic::TRUE_CONTROLS);
        let sel = AllowedControls::select(with_true, plain, true_);
        assert!(sel.allows_zero(primary_proc::CR3_LOAD_EXITING));
        let sel = AllowedControls::select(VmxBasic(0), plain, true_);
        assert!(!sel.allows_zero(primary_proc::CR3_LOAD_EXITING));
    }

    #[test]
    fn malformed_allowed_controls_are_caught_by_check() {
        // Bit 0 both fixed to 1 and not allowed to be 1: no value is valid.
        let bad = AllowedControls {
            allowed0: 1,
            allowed1: 0,
        };
        assert_eq!(bad.adjust(1), 0);
        assert!(bad.check(bad.adjust(1)).is_err());
    }

    #[test]
    fn allowed_controls_64() {
        let tertiary = AllowedControls64::from_msr(0b1001);
        assert_eq!(tertiary.adjust(u64::MAX), 0b1001);
        assert_eq!(tertiary.check(0b1000), Ok(()));
        assert_eq!(
            tertiary.check(0b0110),
            Err(ControlViolation {
                must_be_one: 0,
                must_be_zero: 0b0110
            })
        );
        let vmfunc = VmFuncCap(VmFuncCap::EPTP_SWITCHING).allowed();
        assert!(vmfunc.allows_one(VmFuncCap::EPTP_SWITCHING));
        assert!(!vmfunc.allows_one(1 << 1));
    }

    /// A small deterministic generator (xorshift64*), so the randomized comparisons below are
    /// reproducible without a dependency.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The rules of §A.3, applied one bit at a time.
    fn naive_adjust(allowed0: u32, allowed1: u32, desired: u32) -> u32 {
        (0..32).fold(0, |value, bit| {
            let fixed_one = allowed0 >> bit & 1 == 1;
            let may_be_one = allowed1 >> bit & 1 == 1;
            let wanted = desired >> bit & 1 == 1;
            let set = may_be_one && (fixed_one || wanted);
            value | (u32::from(set) << bit)
        })
    }

    fn naive_valid(allowed0: u32, allowed1: u32, value: u32) -> bool {
        (0..32).all(|bit| {
            let v = value >> bit & 1 == 1;
            let fixed_one = allowed0 >> bit & 1 == 1;
            let may_be_one = allowed1 >> bit & 1 == 1;
            (!fixed_one || v) && (may_be_one || !v)
        })
    }

    #[test]
    fn adjust_and_check_agree_with_a_bitwise_reference() {
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let msr = xorshift(&mut state);
            let desired = xorshift(&mut state) as u32;
            let value = xorshift(&mut state) as u32;
            let ctl = AllowedControls::from_msr(msr);
            let (a0, a1) = (ctl.allowed0, ctl.allowed1);
            assert_eq!(ctl.adjust(desired), naive_adjust(a0, a1, desired));
            assert_eq!(ctl.check(value).is_ok(), naive_valid(a0, a1, value));
            // A well-formed MSR (allowed0 within allowed1) always yields a valid adjustment.
            let sane = AllowedControls {
                allowed0: a0 & a1,
                allowed1: a1,
            };
            assert_eq!(sane.check(sane.adjust(desired)), Ok(()));
            let fixed = FixedBits::new(msr & (msr >> 7), msr);
            assert_eq!(fixed.check(fixed.adjust(msr.rotate_left(9))), Ok(()));
        }
    }

    #[test]
    fn misc_layout() {
        let misc = VmxMisc::new(5, 4, 0).with(
            VmxMisc::STORE_LMA
                | VmxMisc::ACTIVITY_HLT
                | VmxMisc::ACTIVITY_SHUTDOWN
                | VmxMisc::ACTIVITY_WAIT_FOR_SIPI
                | VmxMisc::VMWRITE_ANY_FIELD
                | VmxMisc::INJECT_ZERO_LENGTH,
        );
        assert_eq!(misc.0, 0x6004_01e5);
        assert_eq!(misc.preemption_timer_rate(), 5);
        assert!(misc.stores_lma());
        assert_eq!(misc.activity_states(), 0x1c0);
        assert_eq!(misc.cr3_target_count(), 4);
        assert_eq!(misc.max_msr_list_entries(), 512);
        assert_eq!(VmxMisc::new(0, 0, 7).max_msr_list_entries(), 4096);
        assert_eq!(misc.vmwrite_scope(), VmwriteScope::AnyField);
        assert_eq!(
            VmxMisc(0).vmwrite_scope(),
            VmwriteScope::ExceptExitInformation
        );
        assert!(misc.inject_zero_length());
        assert_eq!(VmxMisc(0xabcd_0000_0000_0000).mseg_revision(), 0xabcd_0000);
    }

    #[test]
    fn fixed_bits_check_table() {
        // Values every Intel processor reports: CR0 needs PE, NE, PG; CR4 needs VMXE.
        let cr0_fixed = FixedBits::new(0x8000_0021, 0xffff_ffff);
        let cr4_fixed = FixedBits::new(0x2000, 0x003f_ffff);
        let table = [
            (cr0_fixed, cr0::PE | cr0::NE | cr0::PG, true),
            (cr0_fixed, cr0::PE | cr0::PG, false),
            (cr0_fixed, cr0::PE | cr0::NE | cr0::PG | (1 << 32), false),
            (cr4_fixed, cr4::VMXE | cr4::PAE, true),
            (cr4_fixed, cr4::PAE, false),
            (cr4_fixed, cr4::VMXE | (1 << 22), false),
        ];
        for (fixed, value, ok) in table {
            assert_eq!(fixed.check(value).is_ok(), ok, "{value:#x}");
            assert_eq!(fixed.check(fixed.adjust(value)), Ok(()));
        }
        assert_eq!(
            cr0_fixed.check(0),
            Err(ControlViolation {
                must_be_one: 0x8000_0021,
                must_be_zero: 0
            })
        );
        // Unrestricted guest frees PE and PG.
        let unrestricted = cr0_fixed.without(cr0::PE | cr0::PG);
        assert_eq!(unrestricted.check(cr0::NE), Ok(()));
        assert!(unrestricted.check(0).is_err());
    }

    #[test]
    fn supported_fields_follow_the_controls() {
        use crate::vmx::controls::{entry, pin_based};
        let mut caps = VmxCapabilities::default();
        assert!(caps.supports_field(VmcsField::GuestRip));
        assert!(!caps.supports_field(VmcsField::EptPointer));
        assert!(!caps.supports_field(VmcsField::VmxPreemptionTimerValue));
        // Without optional features, the highest index is that of the guest IA32_SYSENTER_CS
        // (0x482a, index 0x15).
        assert_eq!(caps.vmcs_enum().highest_index(), 0x15);

        // "Enable EPT" allowed but "activate secondary controls" not: EPT fields still absent.
        caps.secondary_proc.allowed1 = secondary_proc::ENABLE_EPT;
        assert!(!caps.supports_field(VmcsField::EptPointer));
        caps.primary_proc.allowed1 = primary_proc::ACTIVATE_SECONDARY_CONTROLS;
        assert!(caps.supports_field(VmcsField::EptPointer));
        assert!(caps.supports_field(VmcsField::GuestPdpte3));
        assert!(!caps.supports_field(VmcsField::VmFunctionControls));

        // Either of two controls makes the guest IA32_EFER field exist.
        assert!(!caps.supports_field(VmcsField::GuestIa32Efer));
        caps.exit.allowed1 = exit::SAVE_IA32_EFER;
        assert!(caps.supports_field(VmcsField::GuestIa32Efer));
        assert!(!caps.supports_field(VmcsField::HostIa32Efer));

        caps.pin_based.allowed1 = pin_based::ACTIVATE_PREEMPTION_TIMER;
        assert_eq!(caps.vmcs_enum().highest_index(), 0x17);
        caps.entry.allowed1 = entry::LOAD_CET_STATE;
        assert!(caps.supports_field(VmcsField::GuestSsp));

        // EPTP switching needs VM functions enabled.
        caps.vmfunc = VmFuncCap(VmFuncCap::EPTP_SWITCHING);
        assert!(!caps.supports_field(VmcsField::EptpListAddress));
        caps.secondary_proc.allowed1 |= secondary_proc::ENABLE_VM_FUNCTIONS;
        assert!(caps.supports_field(VmcsField::EptpListAddress));

        // Everything allowed: every field but the SEAM ones exists, and the enum reports the
        // highest index of Appendix B.
        let all = VmxCapabilities {
            pin_based: AllowedControls::from_msr(u64::MAX),
            primary_proc: AllowedControls::from_msr(u64::MAX),
            secondary_proc: AllowedControls::from_msr(u64::MAX),
            tertiary_proc: AllowedControls64::from_msr(u64::MAX),
            exit: AllowedControls::from_msr(u64::MAX),
            secondary_exit: AllowedControls64::from_msr(u64::MAX),
            entry: AllowedControls::from_msr(u64::MAX),
            vmfunc: VmFuncCap(u64::MAX),
            fred: true,
            ..VmxCapabilities::default()
        };
        for &field in VmcsField::ALL {
            let seam = matches!(
                field,
                VmcsField::SharedEptPointer | VmcsField::SeamGuestKeyId
            );
            assert_eq!(all.supports_field(field), !seam, "{field:?}");
        }
        assert_eq!(
            all.vmcs_enum().highest_index(),
            highest_index(VmcsField::ALL)
        );
    }

    #[test]
    fn vmcs_enum_and_ept_vpid_cap() {
        let e = VmcsEnum::new(0x29);
        assert_eq!(e.0, 0x52);
        assert_eq!(e.highest_index(), 0x29);

        let cap = EptVpidCap(0)
            .with(
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
            )
            .with_max_hlat_prefix_size(3);
        // Bits 43:0 as many Intel processors report them, plus an HLAT prefix size of 3.
        assert_eq!(cap.0, 0x0003_0f01_0633_4141);
        assert_eq!(cap.max_hlat_prefix_size(), 3);
        for kind in [InveptType::SingleContext, InveptType::Global] {
            assert!(cap.supports_invept(kind));
            assert!(!EptVpidCap(EptVpidCap::INVEPT).supports_invept(kind));
        }
        for n in 0..4 {
            let kind = InvvpidType::from_u64(n).unwrap();
            assert_eq!(kind as u64, n);
            assert!(cap.supports_invvpid(kind));
        }
        // Type bits without the instruction bit mean nothing.
        assert!(
            !EptVpidCap(EptVpidCap::INVVPID_ALL_CONTEXT).supports_invvpid(InvvpidType::AllContext)
        );
        assert_eq!(InvvpidType::from_u64(4), None);
        assert_eq!(InveptType::from_u64(0), None);
        assert_eq!(InveptType::from_u64(3), None);
    }
}
