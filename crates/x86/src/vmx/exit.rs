//! VM-exit information: basic exit reasons, the exit-reason field, exit qualifications, the
//! VM-exit instruction-information layouts and the interruption-information formats.
//!
//! - Basic exit reasons: SDM Vol. 3D Appendix C ("VMX Basic Exit Reasons", Table C-1).
//! - Exit-reason field: SDM Vol. 3C §25.9.1 ("Basic VM-Exit Information").
//! - Exit qualifications: SDM Vol. 3C §28.2.1 ("Basic VM-Exit Information", Tables 28-1 to 28-7:
//!   debug exceptions, task switch, control-register accesses, MOV DR, I/O instructions,
//!   APIC accesses, EPT violations), and "VM-Entry Failures During or After Loading Guest
//!   State" (chapter 27) for the qualification of VM-entry failures.
//! - Interruption information: §25.9.2 ("Information for VM Exits Due to Vectored Events"),
//!   §25.9.3 ("Information for VM Exits That Occur During Event Delivery") and §25.8.3
//!   ("VM-Entry Controls for Event Injection").
//! - Instruction information: §25.9.4 ("Information for VM Exits Due to Instruction Execution"),
//!   one table per instruction group ("Format of the VM-Exit Instruction-Information Field as
//!   Used for …").
//!
//! Section numbers are those of the 2023–2024 SDM editions; later editions renumber the VMX
//! chapters, so each citation also names the section. Every decoder here is total: any 32- or
//! 64-bit value decodes to something (reserved encodings are kept as values, never a panic), so
//! a hypervisor can parse whatever a guest hypervisor wrote into a VMCS.

/// A basic exit reason (bits 15:0 of the exit-reason field), SDM Vol. 3D Table C-1.
///
/// Numbers 35, 38, 42, 71, 82 and 83 are not assigned. 80–81 (user MSR instructions) and 84–85
/// (MSR instructions with an immediate operand) come from editions and extension documents of
/// 2024–2025.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum ExitReason {
    /// Exception or non-maskable interrupt (NMI).
    ExceptionOrNmi = 0,
    /// External interrupt.
    ExternalInterrupt = 1,
    /// Triple fault.
    TripleFault = 2,
    /// INIT signal.
    InitSignal = 3,
    /// Start-up IPI (SIPI).
    StartupIpi = 4,
    /// I/O system-management interrupt (SMI).
    IoSmi = 5,
    /// Other SMI.
    OtherSmi = 6,
    /// Interrupt window.
    InterruptWindow = 7,
    /// NMI window.
    NmiWindow = 8,
    /// Task switch.
    TaskSwitch = 9,
    /// CPUID.
    Cpuid = 10,
    /// GETSEC.
    Getsec = 11,
    /// HLT.
    Hlt = 12,
    /// INVD.
    Invd = 13,
    /// INVLPG.
    Invlpg = 14,
    /// RDPMC.
    Rdpmc = 15,
    /// RDTSC.
    Rdtsc = 16,
    /// RSM.
    Rsm = 17,
    /// VMCALL.
    Vmcall = 18,
    /// VMCLEAR.
    Vmclear = 19,
    /// VMLAUNCH.
    Vmlaunch = 20,
    /// VMPTRLD.
    Vmptrld = 21,
    /// VMPTRST.
    Vmptrst = 22,
    /// VMREAD.
    Vmread = 23,
    /// VMRESUME.
    Vmresume = 24,
    /// VMWRITE.
    Vmwrite = 25,
    /// VMXOFF.
    Vmxoff = 26,
    /// VMXON.
    Vmxon = 27,
    /// Control-register accesses.
    CrAccess = 28,
    /// MOV DR.
    MovDr = 29,
    /// I/O instruction.
    IoInstruction = 30,
    /// RDMSR.
    Rdmsr = 31,
    /// WRMSR.
    Wrmsr = 32,
    /// VM-entry failure due to invalid guest state.
    EntryFailureGuestState = 33,
    /// VM-entry failure due to MSR loading.
    EntryFailureMsrLoading = 34,
    /// MWAIT.
    Mwait = 36,
    /// Monitor trap flag.
    MonitorTrapFlag = 37,
    /// MONITOR.
    Monitor = 39,
    /// PAUSE.
    Pause = 40,
    /// VM-entry failure due to machine-check event.
    EntryFailureMachineCheck = 41,
    /// TPR below threshold.
    TprBelowThreshold = 43,
    /// APIC access.
    ApicAccess = 44,
    /// Virtualized EOI.
    VirtualizedEoi = 45,
    /// Access to GDTR or IDTR.
    GdtrIdtrAccess = 46,
    /// Access to LDTR or TR.
    LdtrTrAccess = 47,
    /// EPT violation.
    EptViolation = 48,
    /// EPT misconfiguration.
    EptMisconfiguration = 49,
    /// INVEPT.
    Invept = 50,
    /// RDTSCP.
    Rdtscp = 51,
    /// VMX-preemption timer expired.
    PreemptionTimer = 52,
    /// INVVPID.
    Invvpid = 53,
    /// WBINVD or WBNOINVD.
    Wbinvd = 54,
    /// XSETBV.
    Xsetbv = 55,
    /// APIC write.
    ApicWrite = 56,
    /// RDRAND.
    Rdrand = 57,
    /// INVPCID.
    Invpcid = 58,
    /// VMFUNC.
    Vmfunc = 59,
    /// ENCLS.
    Encls = 60,
    /// RDSEED.
    Rdseed = 61,
    /// Page-modification log full.
    PmlFull = 62,
    /// XSAVES.
    Xsaves = 63,
    /// XRSTORS.
    Xrstors = 64,
    /// PCONFIG.
    Pconfig = 65,
    /// SPP-related event.
    SppEvent = 66,
    /// UMWAIT.
    Umwait = 67,
    /// TPAUSE.
    Tpause = 68,
    /// LOADIWKEY.
    Loadiwkey = 69,
    /// ENCLV.
    Enclv = 70,
    /// ENQCMD PASID translation failure.
    EnqcmdPasidFailure = 72,
    /// ENQCMDS PASID translation failure.
    EnqcmdsPasidFailure = 73,
    /// Bus lock.
    BusLock = 74,
    /// Instruction timeout.
    InstructionTimeout = 75,
    /// SEAMCALL.
    Seamcall = 76,
    /// TDCALL.
    Tdcall = 77,
    /// RDMSRLIST.
    Rdmsrlist = 78,
    /// WRMSRLIST.
    Wrmsrlist = 79,
    /// URDMSR.
    Urdmsr = 80,
    /// UWRMSR.
    Uwrmsr = 81,
    /// RDMSR with immediate operand.
    RdmsrImmediate = 84,
    /// WRMSRNS with immediate operand.
    WrmsrnsImmediate = 85,
}

impl ExitReason {
    /// Every basic exit reason, in numeric order.
    pub const ALL: [ExitReason; 80] = [
        Self::ExceptionOrNmi,
        Self::ExternalInterrupt,
        Self::TripleFault,
        Self::InitSignal,
        Self::StartupIpi,
        Self::IoSmi,
        Self::OtherSmi,
        Self::InterruptWindow,
        Self::NmiWindow,
        Self::TaskSwitch,
        Self::Cpuid,
        Self::Getsec,
        Self::Hlt,
        Self::Invd,
        Self::Invlpg,
        Self::Rdpmc,
        Self::Rdtsc,
        Self::Rsm,
        Self::Vmcall,
        Self::Vmclear,
        Self::Vmlaunch,
        Self::Vmptrld,
        Self::Vmptrst,
        Self::Vmread,
        Self::Vmresume,
        Self::Vmwrite,
        Self::Vmxoff,
        Self::Vmxon,
        Self::CrAccess,
        Self::MovDr,
        Self::IoInstruction,
        Self::Rdmsr,
        Self::Wrmsr,
        Self::EntryFailureGuestState,
        Self::EntryFailureMsrLoading,
        Self::Mwait,
        Self::MonitorTrapFlag,
        Self::Monitor,
        Self::Pause,
        Self::EntryFailureMachineCheck,
        Self::TprBelowThreshold,
        Self::ApicAccess,
        Self::VirtualizedEoi,
        Self::GdtrIdtrAccess,
        Self::LdtrTrAccess,
        Self::EptViolation,
        Self::EptMisconfiguration,
        Self::Invept,
        Self::Rdtscp,
        Self::PreemptionTimer,
        Self::Invvpid,
        Self::Wbinvd,
        Self::Xsetbv,
        Self::ApicWrite,
        Self::Rdrand,
        Self::Invpcid,
        Self::Vmfunc,
        Self::Encls,
        Self::Rdseed,
        Self::PmlFull,
        Self::Xsaves,
        Self::Xrstors,
        Self::Pconfig,
        Self::SppEvent,
        Self::Umwait,
        Self::Tpause,
        Self::Loadiwkey,
        Self::Enclv,
        Self::EnqcmdPasidFailure,
        Self::EnqcmdsPasidFailure,
        Self::BusLock,
        Self::InstructionTimeout,
        Self::Seamcall,
        Self::Tdcall,
        Self::Rdmsrlist,
        Self::Wrmsrlist,
        Self::Urdmsr,
        Self::Uwrmsr,
        Self::RdmsrImmediate,
        Self::WrmsrnsImmediate,
    ];

    /// The basic exit-reason number.
    pub const fn number(self) -> u16 {
        self as u16
    }

    /// The exit reason numbered `number`, or `None` if Appendix C assigns no reason to it.
    pub const fn from_u16(number: u16) -> Option<Self> {
        Some(match number {
            0 => Self::ExceptionOrNmi,
            1 => Self::ExternalInterrupt,
            2 => Self::TripleFault,
            3 => Self::InitSignal,
            4 => Self::StartupIpi,
            5 => Self::IoSmi,
            6 => Self::OtherSmi,
            7 => Self::InterruptWindow,
            8 => Self::NmiWindow,
            9 => Self::TaskSwitch,
            10 => Self::Cpuid,
            11 => Self::Getsec,
            12 => Self::Hlt,
            13 => Self::Invd,
            14 => Self::Invlpg,
            15 => Self::Rdpmc,
            16 => Self::Rdtsc,
            17 => Self::Rsm,
            18 => Self::Vmcall,
            19 => Self::Vmclear,
            20 => Self::Vmlaunch,
            21 => Self::Vmptrld,
            22 => Self::Vmptrst,
            23 => Self::Vmread,
            24 => Self::Vmresume,
            25 => Self::Vmwrite,
            26 => Self::Vmxoff,
            27 => Self::Vmxon,
            28 => Self::CrAccess,
            29 => Self::MovDr,
            30 => Self::IoInstruction,
            31 => Self::Rdmsr,
            32 => Self::Wrmsr,
            33 => Self::EntryFailureGuestState,
            34 => Self::EntryFailureMsrLoading,
            36 => Self::Mwait,
            37 => Self::MonitorTrapFlag,
            39 => Self::Monitor,
            40 => Self::Pause,
            41 => Self::EntryFailureMachineCheck,
            43 => Self::TprBelowThreshold,
            44 => Self::ApicAccess,
            45 => Self::VirtualizedEoi,
            46 => Self::GdtrIdtrAccess,
            47 => Self::LdtrTrAccess,
            48 => Self::EptViolation,
            49 => Self::EptMisconfiguration,
            50 => Self::Invept,
            51 => Self::Rdtscp,
            52 => Self::PreemptionTimer,
            53 => Self::Invvpid,
            54 => Self::Wbinvd,
            55 => Self::Xsetbv,
            56 => Self::ApicWrite,
            57 => Self::Rdrand,
            58 => Self::Invpcid,
            59 => Self::Vmfunc,
            60 => Self::Encls,
            61 => Self::Rdseed,
            62 => Self::PmlFull,
            63 => Self::Xsaves,
            64 => Self::Xrstors,
            65 => Self::Pconfig,
            66 => Self::SppEvent,
            67 => Self::Umwait,
            68 => Self::Tpause,
            69 => Self::Loadiwkey,
            70 => Self::Enclv,
            72 => Self::EnqcmdPasidFailure,
            73 => Self::EnqcmdsPasidFailure,
            74 => Self::BusLock,
            75 => Self::InstructionTimeout,
            76 => Self::Seamcall,
            77 => Self::Tdcall,
            78 => Self::Rdmsrlist,
            79 => Self::Wrmsrlist,
            80 => Self::Urdmsr,
            81 => Self::Uwrmsr,
            84 => Self::RdmsrImmediate,
            85 => Self::WrmsrnsImmediate,
            _ => return None,
        })
    }

    /// The SDM's name of the exit reason (Table C-1).
    pub const fn name(self) -> &'static str {
        match self {
            Self::ExceptionOrNmi => "Exception or non-maskable interrupt (NMI)",
            Self::ExternalInterrupt => "External interrupt",
            Self::TripleFault => "Triple fault",
            Self::InitSignal => "INIT signal",
            Self::StartupIpi => "Start-up IPI (SIPI)",
            Self::IoSmi => "I/O system-management interrupt (SMI)",
            Self::OtherSmi => "Other SMI",
            Self::InterruptWindow => "Interrupt window",
            Self::NmiWindow => "NMI window",
            Self::TaskSwitch => "Task switch",
            Self::Cpuid => "CPUID",
            Self::Getsec => "GETSEC",
            Self::Hlt => "HLT",
            Self::Invd => "INVD",
            Self::Invlpg => "INVLPG",
            Self::Rdpmc => "RDPMC",
            Self::Rdtsc => "RDTSC",
            Self::Rsm => "RSM",
            Self::Vmcall => "VMCALL",
            Self::Vmclear => "VMCLEAR",
            Self::Vmlaunch => "VMLAUNCH",
            Self::Vmptrld => "VMPTRLD",
            Self::Vmptrst => "VMPTRST",
            Self::Vmread => "VMREAD",
            Self::Vmresume => "VMRESUME",
            Self::Vmwrite => "VMWRITE",
            Self::Vmxoff => "VMXOFF",
            Self::Vmxon => "VMXON",
            Self::CrAccess => "Control-register accesses",
            Self::MovDr => "MOV DR",
            Self::IoInstruction => "I/O instruction",
            Self::Rdmsr => "RDMSR",
            Self::Wrmsr => "WRMSR",
            Self::EntryFailureGuestState => "VM-entry failure due to invalid guest state",
            Self::EntryFailureMsrLoading => "VM-entry failure due to MSR loading",
            Self::Mwait => "MWAIT",
            Self::MonitorTrapFlag => "Monitor trap flag",
            Self::Monitor => "MONITOR",
            Self::Pause => "PAUSE",
            Self::EntryFailureMachineCheck => "VM-entry failure due to machine-check event",
            Self::TprBelowThreshold => "TPR below threshold",
            Self::ApicAccess => "APIC access",
            Self::VirtualizedEoi => "Virtualized EOI",
            Self::GdtrIdtrAccess => "Access to GDTR or IDTR",
            Self::LdtrTrAccess => "Access to LDTR or TR",
            Self::EptViolation => "EPT violation",
            Self::EptMisconfiguration => "EPT misconfiguration",
            Self::Invept => "INVEPT",
            Self::Rdtscp => "RDTSCP",
            Self::PreemptionTimer => "VMX-preemption timer expired",
            Self::Invvpid => "INVVPID",
            Self::Wbinvd => "WBINVD or WBNOINVD",
            Self::Xsetbv => "XSETBV",
            Self::ApicWrite => "APIC write",
            Self::Rdrand => "RDRAND",
            Self::Invpcid => "INVPCID",
            Self::Vmfunc => "VMFUNC",
            Self::Encls => "ENCLS",
            Self::Rdseed => "RDSEED",
            Self::PmlFull => "Page-modification log full",
            Self::Xsaves => "XSAVES",
            Self::Xrstors => "XRSTORS",
            Self::Pconfig => "PCONFIG",
            Self::SppEvent => "SPP-related event",
            Self::Umwait => "UMWAIT",
            Self::Tpause => "TPAUSE",
            Self::Loadiwkey => "LOADIWKEY",
            Self::Enclv => "ENCLV",
            Self::EnqcmdPasidFailure => "ENQCMD PASID translation failure",
            Self::EnqcmdsPasidFailure => "ENQCMDS PASID translation failure",
            Self::BusLock => "Bus lock",
            Self::InstructionTimeout => "Instruction timeout",
            Self::Seamcall => "SEAMCALL",
            Self::Tdcall => "TDCALL",
            Self::Rdmsrlist => "RDMSRLIST",
            Self::Wrmsrlist => "WRMSRLIST",
            Self::Urdmsr => "URDMSR",
            Self::Uwrmsr => "UWRMSR",
            Self::RdmsrImmediate => "RDMSR with immediate operand",
            Self::WrmsrnsImmediate => "WRMSRNS with immediate operand",
        }
    }

    /// Whether this reason reports a VM-entry failure (reasons 33, 34 and 41), which the
    /// processor stores with bit 31 of the exit-reason field set.
    pub const fn is_entry_failure(self) -> bool {
        matches!(
            self,
            Self::EntryFailureGuestState
                | Self::EntryFailureMsrLoading
                | Self::EntryFailureMachineCheck
        )
    }
}

impl core::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// The exit-reason field (SDM Vol. 3C §25.9.1): the basic reason in bits 15:0 and
/// flags above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ExitReasonField(pub u32);

impl ExitReasonField {
    /// Bits 15:0: the basic exit reason.
    pub const BASIC_MASK: u32 = 0xffff;
    /// Bit 26: a bus lock was detected while the VM exit for another reason was pending.
    pub const BUS_LOCK_DETECTED: u32 = 1 << 26;
    /// Bit 27: the VM exit was incident to enclave mode.
    pub const ENCLAVE_MODE: u32 = 1 << 27;
    /// Bit 28: a pending MTF VM exit (SMM VM exits under the dual-monitor treatment only).
    pub const PENDING_MTF: u32 = 1 << 28;
    /// Bit 29: VM exit from VMX root operation (SMM VM exits under the dual-monitor treatment).
    pub const FROM_VMX_ROOT: u32 = 1 << 29;
    /// Bit 31: VM-entry failure.
    pub const ENTRY_FAILURE: u32 = 1 << 31;

    /// The field for a VM exit with basic reason `reason` and no flags, except that the reasons
    /// that report VM-entry failures get bit 31, as the processor stores them.
    pub const fn new(reason: ExitReason) -> Self {
        let raw = reason.number() as u32;
        if reason.is_entry_failure() {
            Self(raw | Self::ENTRY_FAILURE)
        } else {
            Self(raw)
        }
    }

    /// The field with the flag bits `flags` added.
    pub const fn with(self, flags: u32) -> Self {
        Self(self.0 | flags)
    }

    /// Bits 15:0, whether or not Appendix C assigns them a meaning.
    pub const fn basic(self) -> u16 {
        (self.0 & Self::BASIC_MASK) as u16
    }

    /// The basic exit reason, or `None` for an unassigned number.
    pub const fn reason(self) -> Option<ExitReason> {
        ExitReason::from_u16(self.basic())
    }

    /// Bit 26, bus lock detected.
    pub const fn bus_lock_detected(self) -> bool {
        self.0 & Self::BUS_LOCK_DETECTED != 0
    }

    /// Bit 27, VM exit incident to enclave mode.
    pub const fn enclave_mode(self) -> bool {
        self.0 & Self::ENCLAVE_MODE != 0
    }

    /// Bit 28, pending MTF VM exit.
    pub const fn pending_mtf(self) -> bool {
        self.0 & Self::PENDING_MTF != 0
    }

    /// Bit 29, VM exit from VMX root operation.
    pub const fn from_vmx_root(self) -> bool {
        self.0 & Self::FROM_VMX_ROOT != 0
    }

    /// Bit 31, VM-entry failure.
    pub const fn entry_failure(self) -> bool {
        self.0 & Self::ENTRY_FAILURE != 0
    }
}

/// Exit qualification of a VM-entry failure due to invalid guest state (basic reason 33), SDM
/// Vol. 3C chapter 27, "VM-Entry Failures During or After Loading Guest State". Every other cause
/// leaves the qualification 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum EntryFailureQualification {
    /// No more specific cause (the usual value).
    Default = 0,
    /// A problem loading the PDPTEs.
    PdpteLoading = 2,
    /// An attempt to inject an NMI into a guest blocking events by STI.
    NmiInjectionBlockedBySti = 3,
    /// An invalid VMCS link pointer.
    InvalidVmcsLinkPointer = 4,
}

/// How a control-register access was made, bits 5:4 of its exit qualification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CrAccessType {
    /// MOV to CR.
    MovToCr = 0,
    /// MOV from CR.
    MovFromCr = 1,
    /// CLTS.
    Clts = 2,
    /// LMSW.
    Lmsw = 3,
}

/// Exit qualification for control-register accesses (SDM Vol. 3C §28.2.1, Table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct CrAccessQualification(pub u64);

impl CrAccessQualification {
    /// Bit 6: LMSW operand type, 1 = memory.
    pub const LMSW_MEMORY: u64 = 1 << 6;

    /// MOV to CR`cr` from general-purpose register `gpr` (0 = RAX … 15 = R15).
    pub const fn mov_to_cr(cr: u8, gpr: u8) -> Self {
        Self(Self::base(cr, CrAccessType::MovToCr) | ((gpr as u64 & 0xf) << 8))
    }

    /// MOV from CR`cr` to general-purpose register `gpr`.
    pub const fn mov_from_cr(cr: u8, gpr: u8) -> Self {
        Self(Self::base(cr, CrAccessType::MovFromCr) | ((gpr as u64 & 0xf) << 8))
    }

    /// CLTS (the control register is CR0).
    pub const fn clts() -> Self {
        Self(Self::base(0, CrAccessType::Clts))
    }

    /// LMSW with source data `source` (CR0 is the register), from memory or a register.
    pub const fn lmsw(source: u16, memory_operand: bool) -> Self {
        let operand = if memory_operand { Self::LMSW_MEMORY } else { 0 };
        Self(Self::base(0, CrAccessType::Lmsw) | operand | ((source as u64) << 16))
    }

    const fn base(cr: u8, access: CrAccessType) -> u64 {
        (cr as u64 & 0xf) | ((access as u64) << 4)
    }

    /// Bits 3:0: the number of the control register.
    pub const fn cr(self) -> u8 {
        (self.0 & 0xf) as u8
    }

    /// Bits 5:4: the access type.
    pub const fn access_type(self) -> CrAccessType {
        match (self.0 >> 4) & 3 {
            0 => CrAccessType::MovToCr,
            1 => CrAccessType::MovFromCr,
            2 => CrAccessType::Clts,
            _ => CrAccessType::Lmsw,
        }
    }

    /// Bit 6: whether LMSW took a memory operand.
    pub const fn lmsw_memory_operand(self) -> bool {
        self.0 & Self::LMSW_MEMORY != 0
    }

    /// Bits 11:8: the general-purpose register of MOV CR.
    pub const fn gpr(self) -> u8 {
        ((self.0 >> 8) & 0xf) as u8
    }

    /// Bits 31:16: the LMSW source data.
    pub const fn lmsw_source(self) -> u16 {
        (self.0 >> 16) as u16
    }
}

/// Exit qualification for MOV DR (SDM Vol. 3C §28.2.1, Table 28-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MovDrQualification(pub u64);

impl MovDrQualification {
    /// Bit 4: direction, 1 = MOV from DR.
    pub const FROM_DR: u64 = 1 << 4;

    /// MOV to DR`dr` from general-purpose register `gpr`.
    pub const fn mov_to_dr(dr: u8, gpr: u8) -> Self {
        Self((dr as u64 & 7) | ((gpr as u64 & 0xf) << 8))
    }

    /// MOV from DR`dr` to general-purpose register `gpr`.
    pub const fn mov_from_dr(dr: u8, gpr: u8) -> Self {
        Self(Self::mov_to_dr(dr, gpr).0 | Self::FROM_DR)
    }

    /// Bits 2:0: the number of the debug register.
    pub const fn dr(self) -> u8 {
        (self.0 & 7) as u8
    }

    /// Bit 4: whether the access reads the debug register.
    pub const fn is_read(self) -> bool {
        self.0 & Self::FROM_DR != 0
    }

    /// Bits 11:8: the general-purpose register.
    pub const fn gpr(self) -> u8 {
        ((self.0 >> 8) & 0xf) as u8
    }
}

/// Exit qualification for I/O instructions (SDM Vol. 3C §28.2.1, Table 28-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct IoQualification(pub u64);

impl IoQualification {
    /// Bit 3: direction, 1 = IN.
    pub const IN: u64 = 1 << 3;
    /// Bit 4: string instruction (INS/OUTS).
    pub const STRING: u64 = 1 << 4;
    /// Bit 5: REP prefixed.
    pub const REP: u64 = 1 << 5;
    /// Bit 6: operand encoding, 1 = immediate port number.
    pub const IMMEDIATE: u64 = 1 << 6;

    /// An access of `size` bytes (1, 2 or 4; anything else yields `None`) to `port`, IN when
    /// `is_in`, with the flag bits `flags` ([`Self::STRING`], [`Self::REP`],
    /// [`Self::IMMEDIATE`]).
    pub const fn new(size: u8, is_in: bool, port: u16, flags: u64) -> Option<Self> {
        let size_bits = match size {
            1 => 0,
            2 => 1,
            4 => 3,
            _ => return None,
        };
        let dir = if is_in { Self::IN } else { 0 };
        let flags = flags & (Self::STRING | Self::REP | Self::IMMEDIATE);
        Some(Self(size_bits | dir | flags | ((port as u64) << 16)))
    }

    /// Bits 2:0 as a size in bytes (1, 2 or 4), or `None` for the unused encodings.
    pub const fn size(self) -> Option<u8> {
        match self.0 & 7 {
            0 => Some(1),
            1 => Some(2),
            3 => Some(4),
            _ => None,
        }
    }

    /// Bit 3: IN (true) or OUT (false).
    pub const fn is_in(self) -> bool {
        self.0 & Self::IN != 0
    }

    /// Bit 4: INS or OUTS.
    pub const fn is_string(self) -> bool {
        self.0 & Self::STRING != 0
    }

    /// Bit 5: REP prefix.
    pub const fn is_rep(self) -> bool {
        self.0 & Self::REP != 0
    }

    /// Bit 6: the port came from an immediate operand rather than DX.
    pub const fn is_immediate(self) -> bool {
        self.0 & Self::IMMEDIATE != 0
    }

    /// Bits 31:16: the port number.
    pub const fn port(self) -> u16 {
        (self.0 >> 16) as u16
    }
}

/// Exit qualification for debug exceptions (SDM Vol. 3C §28.2.1, Table 28-1): the DR6-like
/// report of what caused a #DB that exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DebugQualification(pub u64);

impl DebugQualification {
    /// B3–B0 (bits 3:0): the breakpoint conditions met.
    pub const B0_B3: u64 = 0xf;
    /// BLD (bit 11): a bus lock was asserted (bus-lock detection).
    pub const BLD: u64 = 1 << 11;
    /// BD (bit 13): debug-register access detected.
    pub const BD: u64 = 1 << 13;
    /// BS (bit 14): single step.
    pub const BS: u64 = 1 << 14;
    /// RTM (bit 16): the #DB occurred inside an RTM region.
    pub const RTM: u64 = 1 << 16;

    /// Bits 3:0: which of DR0–DR3 matched.
    pub const fn breakpoints(self) -> u8 {
        (self.0 & Self::B0_B3) as u8
    }

    /// Whether every bit of `bits` is set.
    pub const fn contains(self, bits: u64) -> bool {
        self.0 & bits == bits
    }
}

/// The kind of access behind an APIC-access VM exit, bits 15:12 of its exit qualification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ApicAccessType {
    /// Linear access for a data read during instruction execution.
    LinearRead = 0,
    /// Linear access for a data write during instruction execution.
    LinearWrite = 1,
    /// Linear access for an instruction fetch.
    LinearFetch = 2,
    /// Linear access (read or write) during event delivery.
    LinearEventDelivery = 3,
    /// Guest-physical access during event delivery.
    PhysicalEventDelivery = 10,
    /// Guest-physical access for an instruction fetch or during instruction execution.
    PhysicalInstruction = 15,
}

/// Exit qualification for APIC-access VM exits (SDM Vol. 3C §28.2.1, Table 28-6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ApicAccessQualification(pub u64);

impl ApicAccessQualification {
    /// Bit 16: the access was asynchronous to instruction execution.
    pub const ASYNCHRONOUS: u64 = 1 << 16;

    /// An access of kind `kind` at `offset` within the APIC-access page (bits 11:0; undefined
    /// for guest-physical accesses, pass 0).
    pub const fn new(offset: u16, kind: ApicAccessType) -> Self {
        Self((offset as u64 & 0xfff) | ((kind as u64) << 12))
    }

    /// Bits 11:0: the offset of a linear access within the APIC page.
    pub const fn offset(self) -> u16 {
        (self.0 & 0xfff) as u16
    }

    /// Bits 15:12, or `None` for the values the SDM does not use.
    pub const fn access_type(self) -> Option<ApicAccessType> {
        Some(match (self.0 >> 12) & 0xf {
            0 => ApicAccessType::LinearRead,
            1 => ApicAccessType::LinearWrite,
            2 => ApicAccessType::LinearFetch,
            3 => ApicAccessType::LinearEventDelivery,
            10 => ApicAccessType::PhysicalEventDelivery,
            15 => ApicAccessType::PhysicalInstruction,
            _ => return None,
        })
    }
}

/// Which access an EPT violation with a valid guest-linear address was (bit 8 of the exit
/// qualification, meaningful only when bit 7 is set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EptLinearAccess {
    /// The access was to the guest-physical address that a linear address translates to.
    Translation,
    /// The access was to a guest paging-structure entry during the translation of a linear
    /// address.
    PagingStructure,
}

/// Exit qualification for EPT violations (SDM Vol. 3C §28.2.1, Table 28-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EptViolationQualification(pub u64);

impl EptViolationQualification {
    /// Bit 0: the access was a data read.
    pub const DATA_READ: u64 = 1 << 0;
    /// Bit 1: the access was a data write.
    pub const DATA_WRITE: u64 = 1 << 1;
    /// Bit 2: the access was an instruction fetch.
    pub const INSTRUCTION_FETCH: u64 = 1 << 2;
    /// Bit 3: the logical AND of bit 0 (read) of the EPT entries used: the address was readable.
    pub const READABLE: u64 = 1 << 3;
    /// Bit 4: the logical AND of bit 1 (write): the address was writable.
    pub const WRITABLE: u64 = 1 << 4;
    /// Bit 5: the logical AND of bit 2 (execute; supervisor-mode execute with mode-based
    /// execute control): the address was executable.
    pub const EXECUTABLE: u64 = 1 << 5;
    /// Bit 6: with mode-based execute control, the logical AND of bit 10 (user-mode execute);
    /// otherwise 0.
    pub const USER_EXECUTABLE: u64 = 1 << 6;
    /// Bit 7: the guest-linear-address field is valid (all EPT violations except those from
    /// loading the PDPTEs on MOV to CR).
    pub const LINEAR_ADDRESS_VALID: u64 = 1 << 7;
    /// Bit 8 (with bit 7): the access was to the translation of the linear address, not to a
    /// paging-structure entry.
    pub const TRANSLATED_ACCESS: u64 = 1 << 8;
    /// Bit 9 (with bits 7 and 8, advanced VM-exit information): the linear address is a
    /// user-mode address.
    pub const USER_MODE_LINEAR: u64 = 1 << 9;
    /// Bit 10 (with bits 7 and 8, advanced VM-exit information): the linear address is
    /// read/write in the guest paging structures.
    pub const READ_WRITE_LINEAR: u64 = 1 << 10;
    /// Bit 11 (with bits 7 and 8, advanced VM-exit information): the linear address is
    /// execute-disable in the guest paging structures.
    pub const EXECUTE_DISABLE_LINEAR: u64 = 1 << 11;
    /// Bit 12: NMI unblocking due to IRET.
    pub const NMI_UNBLOCKING: u64 = 1 << 12;
    /// Bit 13: the access was a shadow-stack access.
    pub const SHADOW_STACK: u64 = 1 << 13;
    /// Bit 14: with supervisor shadow-stack control, bit 60 (SSS) of the EPT leaf entry.
    pub const SUPERVISOR_SHADOW_STACK: u64 = 1 << 14;
    /// Bit 15: the violation came from guest-paging verification (HLAT).
    pub const GUEST_PAGING_VERIFICATION: u64 = 1 << 15;
    /// Bit 16: the access was asynchronous to instruction execution (e.g. trace output).
    pub const ASYNCHRONOUS: u64 = 1 << 16;
    /// Bits 63:17 are reserved and cleared by the processor.
    pub const RESERVED: u64 = !((1 << 17) - 1);

    /// Whether every bit of `bits` is set.
    pub const fn contains(self, bits: u64) -> bool {
        self.0 & bits == bits
    }

    /// The qualification with `bits` added.
    pub const fn with(self, bits: u64) -> Self {
        Self(self.0 | bits)
    }

    /// Bit 0.
    pub const fn is_read(self) -> bool {
        self.contains(Self::DATA_READ)
    }

    /// Bit 1.
    pub const fn is_write(self) -> bool {
        self.contains(Self::DATA_WRITE)
    }

    /// Bit 2.
    pub const fn is_fetch(self) -> bool {
        self.contains(Self::INSTRUCTION_FETCH)
    }

    /// Bits 5:3 as (readable, writable, executable).
    pub const fn permissions(self) -> (bool, bool, bool) {
        (
            self.contains(Self::READABLE),
            self.contains(Self::WRITABLE),
            self.contains(Self::EXECUTABLE),
        )
    }

    /// Bits 8:7: `None` if the guest-linear-address field is invalid, else which access it was.
    pub const fn linear_access(self) -> Option<EptLinearAccess> {
        if !self.contains(Self::LINEAR_ADDRESS_VALID) {
            None
        } else if self.contains(Self::TRANSLATED_ACCESS) {
            Some(EptLinearAccess::Translation)
        } else {
            Some(EptLinearAccess::PagingStructure)
        }
    }

    /// Bit 12.
    pub const fn nmi_unblocking(self) -> bool {
        self.contains(Self::NMI_UNBLOCKING)
    }
}

/// The source of a task switch, bits 31:30 of its exit qualification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TaskSwitchSource {
    /// CALL instruction.
    Call = 0,
    /// IRET instruction.
    Iret = 1,
    /// JMP instruction.
    Jmp = 2,
    /// Task gate in the IDT.
    IdtTaskGate = 3,
}

/// Exit qualification for task switches (SDM Vol. 3C §28.2.1, Table 28-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TaskSwitchQualification(pub u64);

impl TaskSwitchQualification {
    /// A task switch to the TSS selected by `selector`, initiated by `source`.
    pub const fn new(selector: u16, source: TaskSwitchSource) -> Self {
        Self(selector as u64 | ((source as u64) << 30))
    }

    /// Bits 15:0: the selector of the new task's TSS.
    pub const fn selector(self) -> u16 {
        self.0 as u16
    }

    /// Bits 31:30: the source of the task switch.
    pub const fn source(self) -> TaskSwitchSource {
        match (self.0 >> 30) & 3 {
            0 => TaskSwitchSource::Call,
            1 => TaskSwitchSource::Iret,
            2 => TaskSwitchSource::Jmp,
            _ => TaskSwitchSource::IdtTaskGate,
        }
    }
}

/// The type of an event in an interruption-information field, bits 10:8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum InterruptionType {
    /// External interrupt.
    ExternalInterrupt = 0,
    /// Not used; VM entry with this type fails.
    Reserved = 1,
    /// Non-maskable interrupt.
    Nmi = 2,
    /// Hardware exception (every exception except #BP and #OF from INT3/INTO).
    HardwareException = 3,
    /// Software interrupt (INT n).
    SoftwareInterrupt = 4,
    /// Privileged software exception (INT1).
    PrivilegedSoftwareException = 5,
    /// Software exception (INT3 or INTO).
    SoftwareException = 6,
    /// Other event: on VM entry, a pending MTF VM exit (vector 0).
    OtherEvent = 7,
}

impl InterruptionType {
    /// The type encoded in bits 2:0 of `bits`.
    pub const fn from_bits(bits: u32) -> Self {
        match bits & 7 {
            0 => Self::ExternalInterrupt,
            1 => Self::Reserved,
            2 => Self::Nmi,
            3 => Self::HardwareException,
            4 => Self::SoftwareInterrupt,
            5 => Self::PrivilegedSoftwareException,
            6 => Self::SoftwareException,
            _ => Self::OtherEvent,
        }
    }

    /// Whether events of this type come from an instruction and so carry an instruction length
    /// (software interrupts and both kinds of software exception).
    pub const fn is_software(self) -> bool {
        matches!(
            self,
            Self::SoftwareInterrupt | Self::PrivilegedSoftwareException | Self::SoftwareException
        )
    }
}

/// An interruption-information field: the VM-exit interruption information (§25.9.2), the
/// IDT-vectoring information (§25.9.3) and the VM-entry interruption information (§25.8.3)
/// share this layout.
///
/// Bit 12 differs between them: in VM-exit interruption information it reports NMI unblocking
/// due to IRET; in IDT-vectoring information it is undefined; in VM-entry interruption
/// information it is reserved, and VM entry fails if any of bits 30:12 is set
/// ([`InterruptionInfo::ENTRY_RESERVED`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct InterruptionInfo(pub u32);

impl InterruptionInfo {
    /// Bit 11: an error code is delivered (entry) or was pushed (exit, IDT vectoring).
    pub const ERROR_CODE_VALID: u32 = 1 << 11;
    /// Bit 12 of the VM-exit interruption information: NMI unblocking due to IRET.
    pub const NMI_UNBLOCKING: u32 = 1 << 12;
    /// Bit 31: the field is valid.
    pub const VALID: u32 = 1 << 31;
    /// Bits 30:12, which must be zero in the VM-entry interruption-information field.
    pub const ENTRY_RESERVED: u32 = 0x7fff_f000;

    /// A valid event of type `kind` with vector `vector`, without error code.
    pub const fn new(vector: u8, kind: InterruptionType) -> Self {
        Self(vector as u32 | ((kind as u32) << 8) | Self::VALID)
    }

    /// The field with the error-code-valid bit set.
    pub const fn with_error_code(self) -> Self {
        Self(self.0 | Self::ERROR_CODE_VALID)
    }

    /// The field with bit 12 (NMI unblocking due to IRET) set.
    pub const fn with_nmi_unblocking(self) -> Self {
        Self(self.0 | Self::NMI_UNBLOCKING)
    }

    /// Bits 7:0: the vector.
    pub const fn vector(self) -> u8 {
        self.0 as u8
    }

    /// Bits 10:8: the event type.
    pub const fn kind(self) -> InterruptionType {
        InterruptionType::from_bits(self.0 >> 8)
    }

    /// Bit 11.
    pub const fn error_code_valid(self) -> bool {
        self.0 & Self::ERROR_CODE_VALID != 0
    }

    /// Bit 12 (meaningful in the VM-exit interruption information only).
    pub const fn nmi_unblocking(self) -> bool {
        self.0 & Self::NMI_UNBLOCKING != 0
    }

    /// Bit 31.
    pub const fn is_valid(self) -> bool {
        self.0 & Self::VALID != 0
    }
}

/// A segment register as numbered in instruction-information fields (and in the x86 encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SegmentRegister {
    /// ES.
    Es = 0,
    /// CS.
    Cs = 1,
    /// SS.
    Ss = 2,
    /// DS.
    Ds = 3,
    /// FS.
    Fs = 4,
    /// GS.
    Gs = 5,
}

impl SegmentRegister {
    /// The register numbered `n`, or `None` for 6 and 7.
    pub const fn from_number(n: u32) -> Option<Self> {
        Some(match n {
            0 => Self::Es,
            1 => Self::Cs,
            2 => Self::Ss,
            3 => Self::Ds,
            4 => Self::Fs,
            5 => Self::Gs,
            _ => return None,
        })
    }
}

/// An address size as encoded in instruction-information fields (bits 9:7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AddressSize {
    /// 16-bit addressing.
    Bits16 = 0,
    /// 32-bit addressing.
    Bits32 = 1,
    /// 64-bit addressing.
    Bits64 = 2,
}

impl AddressSize {
    /// The size encoded as `n`, or `None` for the unused encodings.
    pub const fn from_number(n: u32) -> Option<Self> {
        match n {
            0 => Some(Self::Bits16),
            1 => Some(Self::Bits32),
            2 => Some(Self::Bits64),
            _ => None,
        }
    }
}

/// The memory-operand part that most instruction-information layouts share: scaling (bits 1:0),
/// address size (9:7), segment (17:15), index register (21:18, invalid bit 22) and base
/// register (26:23, invalid bit 27). The displacement is in the exit qualification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemoryOperand {
    /// Scale factor of the index as a shift: 0 = ×1, 1 = ×2, 2 = ×4, 3 = ×8.
    pub scaling: u8,
    /// Address size.
    pub address_size: AddressSize,
    /// Segment register.
    pub segment: SegmentRegister,
    /// Index register (0 = RAX … 15 = R15), if any.
    pub index: Option<u8>,
    /// Base register, if any.
    pub base: Option<u8>,
}

impl MemoryOperand {
    const INDEX_INVALID: u32 = 1 << 22;
    const BASE_INVALID: u32 = 1 << 27;

    /// Decodes the memory-operand bits of `info`; `None` if the address size or the segment
    /// uses an encoding the SDM leaves unused.
    pub const fn decode(info: u32) -> Option<Self> {
        let address_size = match AddressSize::from_number((info >> 7) & 7) {
            Some(size) => size,
            None => return None,
        };
        let segment = match SegmentRegister::from_number((info >> 15) & 7) {
            Some(segment) => segment,
            None => return None,
        };
        let index = if info & Self::INDEX_INVALID == 0 {
            Some(((info >> 18) & 0xf) as u8)
        } else {
            None
        };
        let base = if info & Self::BASE_INVALID == 0 {
            Some(((info >> 23) & 0xf) as u8)
        } else {
            None
        };
        Some(Self {
            scaling: (info & 3) as u8,
            address_size,
            segment,
            index,
            base,
        })
    }

    /// The memory-operand bits of an instruction-information field.
    pub const fn encode(self) -> u32 {
        let index = match self.index {
            Some(reg) => (reg as u32 & 0xf) << 18,
            None => Self::INDEX_INVALID,
        };
        let base = match self.base {
            Some(reg) => (reg as u32 & 0xf) << 23,
            None => Self::BASE_INVALID,
        };
        (self.scaling as u32 & 3)
            | ((self.address_size as u32) << 7)
            | ((self.segment as u32) << 15)
            | index
            | base
    }
}

/// An operand that is either a register or memory (bit 10 of the VMREAD/VMWRITE and LLDT/LTR
/// layouts: 1 = register).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegOrMem {
    /// General-purpose register (0 = RAX … 15 = R15), bits 6:3.
    Register(u8),
    /// Memory operand.
    Memory(MemoryOperand),
}

const REG_OPERAND: u32 = 1 << 10;

const fn decode_reg_or_mem(info: u32) -> Option<RegOrMem> {
    if info & REG_OPERAND != 0 {
        Some(RegOrMem::Register(((info >> 3) & 0xf) as u8))
    } else {
        match MemoryOperand::decode(info) {
            Some(mem) => Some(RegOrMem::Memory(mem)),
            None => None,
        }
    }
}

const fn encode_reg_or_mem(operand: RegOrMem) -> u32 {
    match operand {
        RegOrMem::Register(reg) => REG_OPERAND | ((reg as u32 & 0xf) << 3),
        RegOrMem::Memory(mem) => mem.encode(),
    }
}

/// VM-exit instruction information for VMREAD and VMWRITE (§25.9.4): the
/// register/memory operand (the VMREAD destination or VMWRITE source) and, in bits 31:28, the
/// register holding the field encoding ("Reg2").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct VmreadVmwriteInfo(pub u32);

impl VmreadVmwriteInfo {
    /// Builds the field from the data operand and the encoding register.
    pub const fn new(operand: RegOrMem, encoding_reg: u8) -> Self {
        Self(encode_reg_or_mem(operand) | ((encoding_reg as u32 & 0xf) << 28))
    }

    /// The data operand; `None` if a memory operand uses an unused encoding.
    pub const fn operand(self) -> Option<RegOrMem> {
        decode_reg_or_mem(self.0)
    }

    /// Bits 31:28: the register holding the VMCS field encoding.
    pub const fn encoding_reg(self) -> u8 {
        (self.0 >> 28) as u8
    }
}

/// VM-exit instruction information for INVEPT, INVPCID and INVVPID (§25.9.4):
/// the memory operand (the descriptor) and, in bits 31:28, the register holding the type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct InvalidationInfo(pub u32);

impl InvalidationInfo {
    /// Builds the field from the descriptor operand and the type register.
    pub const fn new(descriptor: MemoryOperand, type_reg: u8) -> Self {
        Self(descriptor.encode() | ((type_reg as u32 & 0xf) << 28))
    }

    /// The memory operand that holds the descriptor.
    pub const fn descriptor(self) -> Option<MemoryOperand> {
        MemoryOperand::decode(self.0)
    }

    /// Bits 31:28: the register holding the invalidation type.
    pub const fn type_reg(self) -> u8 {
        (self.0 >> 28) as u8
    }
}

/// VM-exit instruction information for VMCLEAR, VMPTRLD, VMPTRST, VMXON, XRSTORS and XSAVES
/// (§25.9.4): the memory operand only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MemoryOperandInfo(pub u32);

impl MemoryOperandInfo {
    /// Builds the field from the memory operand.
    pub const fn new(operand: MemoryOperand) -> Self {
        Self(operand.encode())
    }

    /// The memory operand.
    pub const fn operand(self) -> Option<MemoryOperand> {
        MemoryOperand::decode(self.0)
    }
}

/// The instruction of a descriptor-table exit, bits 29:28.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DescriptorTableInstruction {
    /// SGDT.
    Sgdt = 0,
    /// SIDT.
    Sidt = 1,
    /// LGDT.
    Lgdt = 2,
    /// LIDT.
    Lidt = 3,
}

/// VM-exit instruction information for LIDT, LGDT, SIDT and SGDT (§25.9.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DescriptorTableInfo(pub u32);

impl DescriptorTableInfo {
    /// Bit 11: operand size, 1 = 32-bit (ignored in 64-bit mode).
    pub const OPERAND_SIZE_32: u32 = 1 << 11;

    /// Builds the field.
    pub const fn new(
        instruction: DescriptorTableInstruction,
        operand: MemoryOperand,
        operand_size_32: bool,
    ) -> Self {
        let size = if operand_size_32 {
            Self::OPERAND_SIZE_32
        } else {
            0
        };
        Self(operand.encode() | size | ((instruction as u32) << 28))
    }

    /// Bits 29:28: the instruction.
    pub const fn instruction(self) -> DescriptorTableInstruction {
        match (self.0 >> 28) & 3 {
            0 => DescriptorTableInstruction::Sgdt,
            1 => DescriptorTableInstruction::Sidt,
            2 => DescriptorTableInstruction::Lgdt,
            _ => DescriptorTableInstruction::Lidt,
        }
    }

    /// Bit 11: 32-bit operand size.
    pub const fn operand_size_32(self) -> bool {
        self.0 & Self::OPERAND_SIZE_32 != 0
    }

    /// The memory operand.
    pub const fn operand(self) -> Option<MemoryOperand> {
        MemoryOperand::decode(self.0)
    }
}

/// The instruction of an LDTR/TR exit, bits 29:28.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum LdtrTrInstruction {
    /// SLDT.
    Sldt = 0,
    /// STR.
    Str = 1,
    /// LLDT.
    Lldt = 2,
    /// LTR.
    Ltr = 3,
}

/// VM-exit instruction information for LLDT, LTR, SLDT and STR (§25.9.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct LdtrTrInfo(pub u32);

impl LdtrTrInfo {
    /// Builds the field.
    pub const fn new(instruction: LdtrTrInstruction, operand: RegOrMem) -> Self {
        Self(encode_reg_or_mem(operand) | ((instruction as u32) << 28))
    }

    /// Bits 29:28: the instruction.
    pub const fn instruction(self) -> LdtrTrInstruction {
        match (self.0 >> 28) & 3 {
            0 => LdtrTrInstruction::Sldt,
            1 => LdtrTrInstruction::Str,
            2 => LdtrTrInstruction::Lldt,
            _ => LdtrTrInstruction::Ltr,
        }
    }

    /// The register or memory operand.
    pub const fn operand(self) -> Option<RegOrMem> {
        decode_reg_or_mem(self.0)
    }
}

/// An operand size as encoded in bits 12:11 of the RDRAND/RDSEED/TPAUSE/UMWAIT layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OperandSize {
    /// 16 bits.
    Bits16 = 0,
    /// 32 bits.
    Bits32 = 1,
    /// 64 bits.
    Bits64 = 2,
}

/// VM-exit instruction information for RDRAND, RDSEED, TPAUSE and UMWAIT (§25.9.4): the
/// register operand (bits 6:3) and the operand size (bits 12:11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct RegisterOperandInfo(pub u32);

impl RegisterOperandInfo {
    /// Builds the field.
    pub const fn new(reg: u8, size: OperandSize) -> Self {
        Self(((reg as u32 & 0xf) << 3) | ((size as u32) << 11))
    }

    /// Bits 6:3: the register operand (0 = RAX … 15 = R15).
    pub const fn reg(self) -> u8 {
        ((self.0 >> 3) & 0xf) as u8
    }

    /// Bits 12:11, or `None` for the unused value 3.
    pub const fn operand_size(self) -> Option<OperandSize> {
        match (self.0 >> 11) & 3 {
            0 => Some(OperandSize::Bits16),
            1 => Some(OperandSize::Bits32),
            2 => Some(OperandSize::Bits64),
            _ => None,
        }
    }
}

/// VM-exit instruction information for INS and OUTS (§25.9.4): the address size
/// and, for OUTS, the segment of the source (INS always writes through ES).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct InsOutsInfo(pub u32);

impl InsOutsInfo {
    /// Builds the field.
    pub const fn new(address_size: AddressSize, segment: SegmentRegister) -> Self {
        Self(((address_size as u32) << 7) | ((segment as u32) << 15))
    }

    /// Bits 9:7.
    pub const fn address_size(self) -> Option<AddressSize> {
        AddressSize::from_number((self.0 >> 7) & 7)
    }

    /// Bits 17:15 (undefined for INS).
    pub const fn segment(self) -> Option<SegmentRegister> {
        SegmentRegister::from_number((self.0 >> 15) & 7)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_reasons_round_trip_and_gaps_are_rejected() {
        let mut seen = 0;
        for n in 0..=u16::MAX {
            match ExitReason::from_u16(n) {
                Some(reason) => {
                    assert_eq!(reason.number(), n);
                    assert_eq!(ExitReason::ALL[seen], reason);
                    seen += 1;
                }
                None => assert!(matches!(n, 35 | 38 | 42 | 71 | 82 | 83 | 86..), "{n}"),
            }
        }
        assert_eq!(seen, ExitReason::ALL.len());
    }

    #[test]
    fn exit_reason_numbers_match_appendix_c() {
        let table = [
            (
                0,
                ExitReason::ExceptionOrNmi,
                "Exception or non-maskable interrupt (NMI)",
            ),
            (2, ExitReason::TripleFault, "Triple fault"),
            (10, ExitReason::Cpuid, "CPUID"),
            (18, ExitReason::Vmcall, "VMCALL"),
            (28, ExitReason::CrAccess, "Control-register accesses"),
            (30, ExitReason::IoInstruction, "I/O instruction"),
            (
                33,
                ExitReason::EntryFailureGuestState,
                "VM-entry failure due to invalid guest state",
            ),
            (37, ExitReason::MonitorTrapFlag, "Monitor trap flag"),
            (48, ExitReason::EptViolation, "EPT violation"),
            (49, ExitReason::EptMisconfiguration, "EPT misconfiguration"),
            (
                52,
                ExitReason::PreemptionTimer,
                "VMX-preemption timer expired",
            ),
            (62, ExitReason::PmlFull, "Page-modification log full"),
            (74, ExitReason::BusLock, "Bus lock"),
            (79, ExitReason::Wrmsrlist, "WRMSRLIST"),
        ];
        for (n, reason, name) in table {
            assert_eq!(ExitReason::from_u16(n), Some(reason));
            assert_eq!(reason.name(), name);
        }
    }

    #[test]
    fn exit_reason_field_flags() {
        let f = ExitReasonField::new(ExitReason::EntryFailureMsrLoading);
        assert_eq!(f.0, 0x8000_0022);
        assert!(f.entry_failure());
        assert_eq!(f.reason(), Some(ExitReason::EntryFailureMsrLoading));

        let f = ExitReasonField::new(ExitReason::Hlt).with(ExitReasonField::ENCLAVE_MODE);
        assert_eq!(f.0, 0x0800_000c);
        assert!(f.enclave_mode() && !f.entry_failure() && !f.pending_mtf());
        assert!(!f.from_vmx_root() && !f.bus_lock_detected());

        let f = ExitReasonField(0x3400_0000 | 35);
        assert!(f.bus_lock_detected() && f.pending_mtf() && f.from_vmx_root());
        assert_eq!(f.basic(), 35);
        assert_eq!(f.reason(), None);
    }

    #[test]
    fn cr_access_qualification() {
        // mov cr3, rbx
        let q = CrAccessQualification::mov_to_cr(3, 3);
        assert_eq!(q.0, 0x303);
        assert_eq!(
            (q.cr(), q.access_type(), q.gpr()),
            (3, CrAccessType::MovToCr, 3)
        );
        // mov r15, cr8
        let q = CrAccessQualification::mov_from_cr(8, 15);
        assert_eq!(q.0, 0xf18);
        assert_eq!(q.access_type(), CrAccessType::MovFromCr);
        assert_eq!(CrAccessQualification::clts().0, 0x20);
        let q = CrAccessQualification::lmsw(0xfff1, true);
        assert_eq!(q.0, 0xfff1_0070);
        assert!(q.lmsw_memory_operand());
        assert_eq!(
            (q.access_type(), q.lmsw_source()),
            (CrAccessType::Lmsw, 0xfff1)
        );
    }

    #[test]
    fn mov_dr_qualification() {
        let q = MovDrQualification::mov_from_dr(7, 1);
        assert_eq!(q.0, 0x117);
        assert!(q.is_read());
        assert_eq!((q.dr(), q.gpr()), (7, 1));
        assert!(!MovDrQualification::mov_to_dr(0, 0).is_read());
    }

    #[test]
    fn io_qualification() {
        // rep outsb with the port in DX = 0x3f8
        let q = IoQualification::new(
            1,
            false,
            0x3f8,
            IoQualification::STRING | IoQualification::REP,
        )
        .unwrap();
        assert_eq!(q.0, 0x03f8_0030);
        // in eax, 0x60
        let q = IoQualification::new(4, true, 0x60, IoQualification::IMMEDIATE).unwrap();
        assert_eq!(q.0, 0x0060_004b);
        assert_eq!((q.size(), q.is_in(), q.port()), (Some(4), true, 0x60));
        assert!(q.is_immediate() && !q.is_string() && !q.is_rep());
        assert_eq!(IoQualification::new(8, true, 0, 0), None);
        assert_eq!(IoQualification(2).size(), None);
    }

    #[test]
    fn ept_violation_qualification() {
        use EptViolationQualification as Q;
        let q =
            Q(0).with(Q::DATA_WRITE | Q::READABLE | Q::LINEAR_ADDRESS_VALID | Q::TRANSLATED_ACCESS);
        assert_eq!(q.0, 0x18a);
        assert!(q.is_write() && !q.is_read() && !q.is_fetch());
        assert_eq!(q.permissions(), (true, false, false));
        assert_eq!(q.linear_access(), Some(EptLinearAccess::Translation));
        assert_eq!(
            Q(0x81).linear_access(),
            Some(EptLinearAccess::PagingStructure)
        );
        assert_eq!(Q(0x1).linear_access(), None);
        assert!(Q(0x1000).nmi_unblocking());
        let all = Q::DATA_READ
            | Q::DATA_WRITE
            | Q::INSTRUCTION_FETCH
            | Q::READABLE
            | Q::WRITABLE
            | Q::EXECUTABLE
            | Q::USER_EXECUTABLE
            | Q::LINEAR_ADDRESS_VALID
            | Q::TRANSLATED_ACCESS
            | Q::USER_MODE_LINEAR
            | Q::READ_WRITE_LINEAR
            | Q::EXECUTE_DISABLE_LINEAR
            | Q::NMI_UNBLOCKING
            | Q::SHADOW_STACK
            | Q::SUPERVISOR_SHADOW_STACK
            | Q::GUEST_PAGING_VERIFICATION
            | Q::ASYNCHRONOUS;
        assert_eq!(all, 0x1_ffff);
        assert_eq!(all & Q::RESERVED, 0);
    }

    #[test]
    fn task_switch_qualification() {
        let q = TaskSwitchQualification::new(0x28, TaskSwitchSource::IdtTaskGate);
        assert_eq!(q.0, 0xc000_0028);
        assert_eq!(
            (q.selector(), q.source()),
            (0x28, TaskSwitchSource::IdtTaskGate)
        );
        assert_eq!(
            TaskSwitchQualification(0x4000_0010).source(),
            TaskSwitchSource::Iret
        );
    }

    #[test]
    fn interruption_info() {
        // #PF with error code, as a VM exit reports it.
        let info = InterruptionInfo::new(14, InterruptionType::HardwareException).with_error_code();
        assert_eq!(info.0, 0x8000_0b0e);
        assert_eq!(info.vector(), 14);
        assert_eq!(info.kind(), InterruptionType::HardwareException);
        assert!(info.error_code_valid() && info.is_valid() && !info.nmi_unblocking());
        // NMI with NMI unblocking due to IRET.
        let nmi = InterruptionInfo::new(2, InterruptionType::Nmi).with_nmi_unblocking();
        assert_eq!(nmi.0, 0x8000_1202);
        assert_ne!(nmi.0 & InterruptionInfo::ENTRY_RESERVED, 0);
        // INT3 and MTF injection.
        assert_eq!(
            InterruptionInfo::new(3, InterruptionType::SoftwareException).0,
            0x8000_0603
        );
        assert_eq!(
            InterruptionInfo::new(0, InterruptionType::OtherEvent).0,
            0x8000_0700
        );
        assert!(InterruptionType::SoftwareInterrupt.is_software());
        assert!(!InterruptionType::HardwareException.is_software());
        assert!(!InterruptionInfo(0x0000_0b0e).is_valid());
        for bits in 0..8 {
            assert_eq!(InterruptionType::from_bits(bits) as u32, bits);
        }
    }

    fn mem(index: Option<u8>, base: Option<u8>) -> MemoryOperand {
        MemoryOperand {
            scaling: 3,
            address_size: AddressSize::Bits64,
            segment: SegmentRegister::Ds,
            index,
            base,
        }
    }

    #[test]
    fn vmread_vmwrite_info() {
        // vmread rax, rcx: destination RAX (register operand), encoding in RCX.
        let info = VmreadVmwriteInfo::new(RegOrMem::Register(0), 1);
        assert_eq!(info.0, 0x1000_0400);
        assert_eq!(info.operand(), Some(RegOrMem::Register(0)));
        assert_eq!(info.encoding_reg(), 1);
        // vmwrite rdx, [rsi + r8*8]: memory operand, DS, 64-bit addressing.
        let m = mem(Some(8), Some(6));
        let info = VmreadVmwriteInfo::new(RegOrMem::Memory(m), 2);
        assert_eq!(
            info.0,
            0x2000_0000 | (6 << 23) | (8 << 18) | (3 << 15) | (2 << 7) | 3
        );
        assert_eq!(info.operand(), Some(RegOrMem::Memory(m)));
    }

    #[test]
    fn memory_operands_with_missing_registers() {
        let m = mem(None, None);
        let raw = m.encode();
        assert_eq!(raw & (1 << 22 | 1 << 27), 1 << 22 | 1 << 27);
        assert_eq!(MemoryOperand::decode(raw), Some(m));
        // Address size 3 and segment 6 are unused encodings.
        assert_eq!(MemoryOperand::decode(3 << 7), None);
        assert_eq!(MemoryOperand::decode(6 << 15), None);
    }

    #[test]
    fn other_instruction_info_layouts() {
        let m = mem(None, Some(7));
        let inv = InvalidationInfo::new(m, 9);
        assert_eq!((inv.descriptor(), inv.type_reg()), (Some(m), 9));
        assert_eq!(MemoryOperandInfo::new(m).operand(), Some(m));

        let dt = DescriptorTableInfo::new(DescriptorTableInstruction::Lidt, m, true);
        assert_eq!(dt.0 >> 28, 3);
        assert!(dt.operand_size_32());
        assert_eq!(dt.instruction(), DescriptorTableInstruction::Lidt);
        assert_eq!(dt.operand(), Some(m));

        let ltr = LdtrTrInfo::new(LdtrTrInstruction::Ltr, RegOrMem::Register(5));
        assert_eq!(ltr.0, 0x3000_0000 | 1 << 10 | 5 << 3);
        assert_eq!(ltr.instruction(), LdtrTrInstruction::Ltr);
        assert_eq!(ltr.operand(), Some(RegOrMem::Register(5)));

        let io = InsOutsInfo::new(AddressSize::Bits32, SegmentRegister::Fs);
        assert_eq!(io.0, 1 << 7 | 4 << 15);
        assert_eq!(io.address_size(), Some(AddressSize::Bits32));
        assert_eq!(io.segment(), Some(SegmentRegister::Fs));
    }

    #[test]
    fn debug_and_apic_access_qualifications() {
        let q = DebugQualification(DebugQualification::BS | 0b0101);
        assert_eq!(q.breakpoints(), 0b0101);
        assert!(q.contains(DebugQualification::BS) && !q.contains(DebugQualification::BD));

        let q = ApicAccessQualification::new(0x0b0, ApicAccessType::LinearWrite);
        assert_eq!(q.0, 0x10b0);
        assert_eq!(
            (q.offset(), q.access_type()),
            (0xb0, Some(ApicAccessType::LinearWrite))
        );
        let q = ApicAccessQualification::new(0, ApicAccessType::PhysicalInstruction);
        assert_eq!(q.access_type(), Some(ApicAccessType::PhysicalInstruction));
        assert_eq!(ApicAccessQualification(4 << 12).access_type(), None);
    }

    #[test]
    fn register_operand_info() {
        // rdrand r9d
        let info = RegisterOperandInfo::new(9, OperandSize::Bits32);
        assert_eq!(info.0, 9 << 3 | 1 << 11);
        assert_eq!(
            (info.reg(), info.operand_size()),
            (9, Some(OperandSize::Bits32))
        );
        assert_eq!(RegisterOperandInfo(3 << 11).operand_size(), None);
    }

    #[test]
    fn decoders_are_total() {
        let samples = [
            0u32,
            u32::MAX,
            0x5555_5555,
            0xaaaa_aaaa,
            0x8000_0000,
            0x0000_ffff,
        ];
        for raw in samples {
            let _ = ExitReasonField(raw).reason();
            let _ = InterruptionInfo(raw).kind();
            let _ = VmreadVmwriteInfo(raw).operand();
            let _ = InvalidationInfo(raw).descriptor();
            let _ = DescriptorTableInfo(raw).instruction();
            let _ = LdtrTrInfo(raw).operand();
            let _ = InsOutsInfo(raw).segment();
            let _ = RegisterOperandInfo(raw).operand_size();
            let wide = u64::from(raw) | (u64::from(raw) << 32);
            let _ = CrAccessQualification(wide).access_type();
            let _ = IoQualification(wide).size();
            let _ = TaskSwitchQualification(wide).source();
            let _ = EptViolationQualification(wide).linear_access();
            let _ = ApicAccessQualification(wide).access_type();
        }
    }
}
